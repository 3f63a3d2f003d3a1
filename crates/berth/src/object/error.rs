//! Why a start or a request failed, and what a client is told.
//!
//! Every failure has one [`ErrorKind`], and the kind alone decides the HTTP status, the
//! `berth-error` header, whether retrying may help, and whose fault it is: one table,
//! so that no two places disagree.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};

use crate::http::{error_response, Body, TARGET_PORT_HEADER};
use crate::runtime::{ExitStatus, RuntimeError};
use crate::store::StoreError;

/// Who is at fault for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request is malformed.
    Client,
    /// The app in the container misbehaved: it exited, never listened, dropped the request.
    Container,
    /// The container engine failed or could not be reached.
    Engine,
    /// berth itself: its configuration, its limits or its state store.
    Berth,
}

/// Whether a client should try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retrying the same request will fail the same way.
    No,
    /// It may succeed after this long (sent as `Retry-After`).
    After(Duration),
}

/// Every kind of failure a request through an object can meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NoPort,
    BadTargetPort,
    MaxInstances,
    EngineUnreachable,
    ImageMissing,
    EngineError,
    StartTimeout,
    ExitedWhileStarting,
    PortTimeout,
    PingTimeout,
    NotReady,
    PortUnreachable,
    Interrupted,
    ShuttingDown,
    ClassRemoved,
    StillStopping,
    StoreFailed,
    ContainerExited,
    ConnectionDropped,
    ConnectFailed,
    RequestTimeout,
    Unavailable,
    BadRequestBody,
}

impl ErrorKind {
    /// The status, the `berth-error` name, the retry advice and the side at fault.
    fn table(self) -> (StatusCode, &'static str, Retry, Side) {
        use ErrorKind::*;
        use Side::*;
        const LATER: Retry = Retry::After(Duration::from_secs(5));
        const NO: Retry = Retry::No;
        match self {
            NoPort => (StatusCode::INTERNAL_SERVER_ERROR, "no-port", NO, Berth),
            BadTargetPort => (StatusCode::BAD_REQUEST, "bad-target-port", NO, Client),
            // A slot frees only when an instance sleeps, which no one can foretell here.
            MaxInstances => (StatusCode::SERVICE_UNAVAILABLE, "max-instances", NO, Berth),
            EngineUnreachable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "engine-unreachable",
                LATER,
                Engine,
            ),
            ImageMissing => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "image-missing",
                NO,
                Engine,
            ),
            EngineError => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "engine-error",
                NO,
                Engine,
            ),
            StartTimeout => (StatusCode::GATEWAY_TIMEOUT, "start-timeout", NO, Engine),
            ExitedWhileStarting => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "exited-while-starting",
                NO,
                Container,
            ),
            PortTimeout => (StatusCode::GATEWAY_TIMEOUT, "port-timeout", NO, Container),
            PingTimeout => (StatusCode::GATEWAY_TIMEOUT, "ping-timeout", NO, Container),
            NotReady => (StatusCode::GATEWAY_TIMEOUT, "not-ready", NO, Container),
            PortUnreachable => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "port-unreachable",
                NO,
                Berth,
            ),
            Interrupted => (StatusCode::INTERNAL_SERVER_ERROR, "interrupted", NO, Berth),
            ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                LATER,
                Berth,
            ),
            ClassRemoved => (StatusCode::SERVICE_UNAVAILABLE, "class-removed", NO, Berth),
            StillStopping => (
                StatusCode::SERVICE_UNAVAILABLE,
                "still-stopping",
                LATER,
                Engine,
            ),
            StoreFailed => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-failed",
                LATER,
                Berth,
            ),
            ContainerExited => (StatusCode::BAD_GATEWAY, "container-exited", NO, Container),
            ConnectionDropped => (StatusCode::BAD_GATEWAY, "connection-dropped", NO, Container),
            ConnectFailed => (StatusCode::BAD_GATEWAY, "connect-failed", NO, Container),
            RequestTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "request-timeout",
                NO,
                Container,
            ),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                LATER,
                Container,
            ),
            BadRequestBody => (StatusCode::BAD_REQUEST, "bad-request-body", NO, Client),
        }
    }

    pub fn status(self) -> StatusCode {
        self.table().0
    }

    /// The value of the `berth-error` header.
    pub fn name(self) -> &'static str {
        self.table().1
    }

    pub fn retry(self) -> Retry {
        self.table().2
    }

    pub fn side(self) -> Side {
        self.table().3
    }
}

/// Why a container could not be started or made ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    #[error("class {class} already runs its maximum of {max} instances; a slot frees when one of them sleeps (after sleep_after idle): retry then, or raise max_instances")]
    LimitReached { class: String, max: usize },
    #[error("could not start the container for {object}: {source}")]
    Runtime {
        object: String,
        #[source]
        source: RuntimeError,
    },
    #[error("creating and starting the container for {object} took longer than {timeout:?}; check the container engine, or raise start_timeout")]
    StartTimeout { object: String, timeout: Duration },
    #[error("the container for {object} {status} while starting; its last log lines:\n{}", .logs.join("\n"))]
    ExitedWhileStarting {
        object: String,
        status: ExitStatus,
        logs: Vec<String>,
    },
    #[error("port {port} of the container for {object} did not open within {timeout:?}; check that the app listens on 0.0.0.0:{port}, or raise port_ready_timeout")]
    PortTimeout {
        object: String,
        port: u16,
        timeout: Duration,
    },
    #[error("port {port} of the container for {object} opened, but its ping endpoint {endpoint:?} gave no HTTP answer within {timeout:?}; fix ping_endpoint, turn it off, or raise port_ready_timeout")]
    ProbeTimeout {
        object: String,
        port: u16,
        endpoint: String,
        timeout: Duration,
    },
    #[error("the container for {object} never passed its ready check: GET {path} on port {port} gave {last} last, within {timeout:?}; make the app answer a status the check takes (ready.status), or raise port_ready_timeout")]
    NotReady {
        object: String,
        port: u16,
        path: String,
        /// `status 503`, or `no answer`.
        last: String,
        timeout: Duration,
    },
    #[error("port {port} of the container for {object} is not reachable from berth; list it in required_ports or default_port")]
    PortUnreachable { object: String, port: u16 },
    #[error("the container for {object} was stopped while it was starting")]
    Interrupted { object: String },
    #[error("berth is shutting down and starts no container for {object}")]
    ShuttingDown { object: String },
    #[error("a deployment removed the class of {object}, so no container starts for it")]
    ClassRemoved { object: String },
    #[error("the previous container for {object} did not exit within {waited:?} of being stopped; check the container engine and retry")]
    StillStopping { object: String, waited: Duration },
    #[error("cannot read or write the state of {object}: {source}")]
    Store {
        object: String,
        #[source]
        source: StoreError,
    },
    #[error("router {router}, the home of {object}, did not start it: {message}")]
    AtHome {
        object: String,
        router: std::net::Ipv4Addr,
        message: String,
    },
}

impl StartError {
    /// The failure as a metric's `cause`; `None` for a start that was called off (a
    /// stop, a shutdown, a removed class), which is no failure.
    pub fn cause(&self) -> Option<&'static str> {
        Some(match self {
            StartError::LimitReached { .. } => "limit-reached",
            StartError::Runtime {
                source: RuntimeError::ImageMissing { .. },
                ..
            } => "image-missing",
            StartError::Runtime { .. } => "engine",
            StartError::StartTimeout { .. } => "start-timeout",
            StartError::ExitedWhileStarting { .. } => "exited-while-starting",
            StartError::PortTimeout { .. }
            | StartError::ProbeTimeout { .. }
            | StartError::PortUnreachable { .. } => "port-never-opened",
            StartError::NotReady { .. } => "never-ready",
            StartError::StillStopping { .. } => "still-stopping",
            StartError::Store { .. } => "store",
            StartError::AtHome { .. } => "at-home",
            StartError::Interrupted { .. }
            | StartError::ShuttingDown { .. }
            | StartError::ClassRemoved { .. } => return None,
        })
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StartError::LimitReached { .. } => ErrorKind::MaxInstances,
            StartError::Runtime { source, .. } => match source {
                RuntimeError::Unreachable { .. } => ErrorKind::EngineUnreachable,
                RuntimeError::ImageMissing { .. } => ErrorKind::ImageMissing,
                _ => ErrorKind::EngineError,
            },
            StartError::StartTimeout { .. } => ErrorKind::StartTimeout,
            StartError::ExitedWhileStarting { .. } => ErrorKind::ExitedWhileStarting,
            StartError::PortTimeout { .. } => ErrorKind::PortTimeout,
            StartError::ProbeTimeout { .. } => ErrorKind::PingTimeout,
            StartError::NotReady { .. } => ErrorKind::NotReady,
            StartError::PortUnreachable { .. } => ErrorKind::PortUnreachable,
            StartError::Interrupted { .. } => ErrorKind::Interrupted,
            StartError::ShuttingDown { .. } => ErrorKind::ShuttingDown,
            StartError::ClassRemoved { .. } => ErrorKind::ClassRemoved,
            StartError::StillStopping { .. } => ErrorKind::StillStopping,
            StartError::Store { .. } => ErrorKind::StoreFailed,
            StartError::AtHome { .. } => ErrorKind::Unavailable,
        }
    }

    /// The HTTP status a request that needed this start gets.
    pub fn status(&self) -> StatusCode {
        self.kind().status()
    }
}

/// Why a request through an object got no answer from its container.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("class {class} has no port, so there is nothing to send the request to: set default_port, or give the route start_only = true to start the container without proxying (in Rust: container_fetch or switch_port)")]
    NoPort { class: String },
    #[error("header {TARGET_PORT_HEADER} must be a port number from 1 to 65535, not {value:?}")]
    BadTargetPort { value: String },
    #[error(transparent)]
    Start(Arc<StartError>),
    #[error("the container for {object} {status} while handling a request on port {port}")]
    Crashed {
        object: String,
        port: u16,
        status: ExitStatus,
    },
    #[error(
        "the container for {object} dropped the connection on port {port} mid-request: {cause}"
    )]
    Dropped {
        object: String,
        port: u16,
        cause: String,
    },
    #[error("could not reach router {router}, where {object} lives, to send it the request: {cause}; berth leaves that router out of homes for 30 s, so a retry goes to another")]
    HomeUnreachable {
        object: String,
        router: std::net::Ipv4Addr,
        cause: String,
    },
    #[error("could not connect to port {port} of the container for {object}: {cause}")]
    Connect {
        object: String,
        port: u16,
        cause: String,
    },
    #[error("the container for {object} did not answer on port {port} within {timeout:?}; answer sooner (stream the answer, or answer at once and work in the background), or raise request_timeout")]
    RequestTimeout {
        object: String,
        port: u16,
        timeout: Duration,
    },
    #[error("the container for {object} stopped three times before it could take the request (it exited, or was stopped or put to sleep meanwhile); see its logs and events, and retry")]
    Unavailable { object: String },
    #[error("the request body broke off or was malformed: {cause}")]
    BadRequestBody { cause: String },
}

impl FetchError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::NoPort { .. } => ErrorKind::NoPort,
            FetchError::BadTargetPort { .. } => ErrorKind::BadTargetPort,
            FetchError::Start(e) => e.kind(),
            FetchError::Crashed { .. } => ErrorKind::ContainerExited,
            FetchError::Dropped { .. } => ErrorKind::ConnectionDropped,
            FetchError::Connect { .. } | FetchError::HomeUnreachable { .. } => {
                ErrorKind::ConnectFailed
            }
            FetchError::RequestTimeout { .. } => ErrorKind::RequestTimeout,
            FetchError::Unavailable { .. } => ErrorKind::Unavailable,
            FetchError::BadRequestBody { .. } => ErrorKind::BadRequestBody,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().status()
    }

    /// The answer a client gets: the status, a `berth-error` header naming the kind of
    /// failure, `Retry-After` where retrying helps, and the message as text.
    pub fn into_response(self) -> Response<Body> {
        let kind = self.kind();
        let mut response = error_response(kind.status(), kind.name(), &self.to_string());
        if let Retry::After(wait) = kind.retry() {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_says_retry_soon_and_a_crash_blames_the_container() {
        let limit = FetchError::Start(Arc::new(StartError::LimitReached {
            class: "C".into(),
            max: 1,
        }));
        let response = limit.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            response.headers().get("retry-after").is_none(),
            "no false promise of a free slot"
        );
        assert_eq!(response.headers()["berth-error"], "max-instances");
        let crash = FetchError::Crashed {
            object: "C \"a\"".into(),
            port: 8080,
            status: ExitStatus {
                code: 3,
                oom_killed: false,
            },
        };
        assert_eq!(crash.kind().side(), Side::Container);
        let response = crash.into_response();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(response.headers().get("retry-after").is_none());
    }

    #[test]
    fn an_unreachable_engine_is_worth_a_retry_later() {
        let error = StartError::Runtime {
            object: "C \"a\"".into(),
            source: RuntimeError::Unreachable {
                engine: "the Docker Engine at unix:///nowhere".into(),
                reason: "gone".into(),
                hint: "start it",
            },
        };
        assert_eq!(error.kind(), ErrorKind::EngineUnreachable);
        assert_eq!(error.kind().retry(), Retry::After(Duration::from_secs(5)));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
