//! The object: the single live owner of one id's container.
//!
//! An object serialises its own lifecycle behind one async lock, so that concurrent first
//! requests share one start and a stop never races a start. Requests to a healthy
//! container take a short, synchronous lock only to count themselves in flight; that same
//! lock is where the idle sleeper decides to stop, so a request that arrives exactly as
//! the container goes to sleep either keeps it awake or waits for it to stop and starts a
//! new one. Each running container has a monitor task that notices its exit at once,
//! records the state, removes the container, and calls `on_stop` exactly once.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use crate::class::ContainerClass;
use crate::event::{Event, EventKind};
use crate::hooks::{Expiry, Hooks, ObjectError, StopParams};
use crate::http::{error_chain, error_response, Body, BoxError, TARGET_PORT_HEADER};
use crate::id::ObjectId;
use crate::lifecycle::{State, StopReason};
use crate::proxy::{self, Pool, ProxyFailure};
use crate::readiness::{self, NotReady};
use crate::runtime::{labels, ContainerSpec, Endpoint, ExitStatus, Runtime, RuntimeError, Signal};
use crate::store::{now_ms, ObjectRecord, Storage, Store};

/// How many log lines a start failure or a crash reports.
const LOG_TAIL: usize = 20;
/// How long a failed request waits to learn whether the container exited.
const EXIT_NOTICE: Duration = Duration::from_secs(2);
/// How long `stop` waits past the grace period for the engine to report the exit.
const EXIT_REPORT: Duration = Duration::from_secs(30);

/// What the objects of one app share.
pub(crate) struct AppContext {
    pub(crate) name: String,
    pub(crate) session: String,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) store: Arc<Store>,
    pub(crate) events: tokio::sync::broadcast::Sender<Event>,
    pub(crate) monitors: Arc<Monitors>,
    /// The runtime lifecycle tasks run on, whichever thread serves the request that
    /// starts them: a server thread may go away before the containers do.
    pub(crate) handle: Option<tokio::runtime::Handle>,
}

impl AppContext {
    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.handle {
            Some(handle) => handle.spawn(task),
            None => tokio::spawn(task),
        }
    }
}

/// Counts the monitors still running, so that a shutdown can wait for the last `on_stop`.
#[derive(Default)]
pub(crate) struct Monitors {
    running: AtomicUsize,
    settled: Notify,
}

impl Monitors {
    fn enter(self: &Arc<Self>) -> MonitorGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        MonitorGuard(self.clone())
    }

    /// Waits until no monitor runs, up to `limit`; returns whether none does.
    pub(crate) async fn settled(&self, limit: Duration) -> bool {
        let deadline = after(limit);
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

struct MonitorGuard(Arc<Monitors>);

impl Drop for MonitorGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// What the objects of one class share.
pub(crate) struct Class {
    pub(crate) options: ContainerClass,
    /// The image new containers run; a rebuild replaces it.
    pub(crate) image: std::sync::RwLock<String>,
    pub(crate) namespace_key: String,
    pub(crate) app: Arc<AppContext>,
    pub(crate) hooks: Arc<dyn Hooks>,
    /// One permit per running container, so `max_instances` holds under concurrency.
    pub(crate) limit: Arc<Semaphore>,
}

/// Why a container could not be started or made ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    #[error("class {class} already runs its maximum of {max} instances; retry shortly, or raise max_instances")]
    LimitReached { class: String, max: usize },
    #[error("could not start the container for {object}: {source}")]
    Runtime {
        object: String,
        #[source]
        source: RuntimeError,
    },
    #[error("creating and starting the container for {object} took longer than {timeout:?}; check the Docker Engine, or raise start_timeout")]
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
    #[error("port {port} of the container for {object} is not reachable from berth; list it in required_ports or default_port")]
    PortUnreachable { object: String, port: u16 },
    #[error("the container for {object} was stopped while it was starting")]
    Interrupted { object: String },
    #[error("the previous container for {object} did not exit within {waited:?} of being stopped; check the Docker Engine and retry")]
    StillStopping { object: String, waited: Duration },
}

impl StartError {
    /// The HTTP status a request that needed this start gets.
    pub fn status(&self) -> StatusCode {
        match self {
            StartError::LimitReached { .. } | StartError::StillStopping { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            StartError::Runtime { source, .. } if source.is_unreachable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            StartError::StartTimeout { .. }
            | StartError::PortTimeout { .. }
            | StartError::ProbeTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            StartError::LimitReached { .. } => "max-instances",
            StartError::Runtime { source, .. } if source.is_unreachable() => "engine-unreachable",
            StartError::Runtime {
                source: RuntimeError::ImageMissing { .. },
                ..
            } => "image-missing",
            StartError::Runtime { .. } => "engine-error",
            StartError::StartTimeout { .. } => "start-timeout",
            StartError::ExitedWhileStarting { .. } => "exited-while-starting",
            StartError::PortTimeout { .. } => "port-timeout",
            StartError::ProbeTimeout { .. } => "ping-timeout",
            StartError::PortUnreachable { .. } => "port-unreachable",
            StartError::Interrupted { .. } => "interrupted",
            StartError::StillStopping { .. } => "still-stopping",
        }
    }
}

/// Why a request through an object got no answer from its container.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("class {class} has no port: set default_port, pass a port to container_fetch, or use switch_port")]
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
    #[error("could not connect to port {port} of the container for {object}: {cause}")]
    Connect {
        object: String,
        port: u16,
        cause: String,
    },
    #[error("the container for {object} stopped each time before it could take the request; see its logs")]
    Unavailable { object: String },
    #[error("the request body broke off or was malformed: {cause}")]
    BadRequestBody { cause: String },
}

impl FetchError {
    pub fn status(&self) -> StatusCode {
        match self {
            FetchError::NoPort { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            FetchError::BadTargetPort { .. } => StatusCode::BAD_REQUEST,
            FetchError::Start(e) => e.status(),
            FetchError::Crashed { .. }
            | FetchError::Dropped { .. }
            | FetchError::Connect { .. } => StatusCode::BAD_GATEWAY,
            FetchError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            FetchError::BadRequestBody { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The answer a client gets: the status, a `berth-error` header naming the kind of
    /// failure, `Retry-After` where retrying helps, and the message as text.
    pub fn into_response(self) -> Response<Body> {
        let kind = match &self {
            FetchError::NoPort { .. } => "no-port",
            FetchError::BadTargetPort { .. } => "bad-target-port",
            FetchError::Start(e) => e.kind(),
            FetchError::Crashed { .. } => "container-exited",
            FetchError::Dropped { .. } => "connection-dropped",
            FetchError::Connect { .. } => "connect-failed",
            FetchError::Unavailable { .. } => "unavailable",
            FetchError::BadRequestBody { .. } => "bad-request-body",
        };
        let status = self.status();
        let mut response = error_response(status, kind, &self.to_string());
        let retry_after = match &self {
            FetchError::Start(e) if matches!(**e, StartError::LimitReached { .. }) => Some("1"),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some("5"),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        response
    }
}

/// Per-start overrides of the class options.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Added to (and overriding) the class's `env_vars`.
    pub env_vars: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub enable_internet: Option<bool>,
}

/// A handle on one live object. Cheap to clone; clones are the same object.
#[derive(Clone)]
pub struct Object {
    inner: Arc<Inner>,
}

struct Inner {
    class: Arc<Class>,
    id: ObjectId,
    name: OnceLock<String>,
    live: Mutex<Live>,
    lifecycle: Arc<tokio::sync::Mutex<Attempts>>,
    finished_attempts: AtomicU64,
    persisting: Mutex<()>,
}

/// What requests and the sleeper share, behind a short synchronous lock.
struct Live {
    state: State,
    instance: Option<Arc<Instance>>,
    in_flight: u32,
    last_activity: Instant,
    stop: Option<PendingStop>,
    /// Readiness is being awaited: a `running` container is not idle, it is starting.
    readying: bool,
    /// A container recorded by an earlier berth process, to re-adopt or remove.
    leftover: Option<String>,
}

struct PendingStop {
    reason: StopReason,
    kill_at: Option<Instant>,
}

/// One container's life, from start to removal.
struct Instance {
    container_id: String,
    endpoint: Endpoint,
    started_at: Instant,
    started_at_ms: i64,
    /// Keep-alive connections to this container.
    pool: Arc<Pool>,
    healthy: Notify,
    became_healthy: std::sync::atomic::AtomicBool,
    wake: Notify,
    exited: tokio::sync::watch::Sender<Option<Exit>>,
}

#[derive(Clone)]
struct Exit {
    status: ExitStatus,
    reason: StopReason,
    logs: Vec<String>,
}

#[derive(Default)]
struct Attempts {
    number: u64,
    last_failure: Option<(u64, Arc<StartError>)>,
}

/// Counts one request as in flight until dropped; dropping it renews activity.
pub(crate) struct Lease {
    object: Object,
}

impl Lease {
    pub(crate) fn object(&self) -> Object {
        self.object.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut live = self.object.live();
        live.in_flight = live.in_flight.saturating_sub(1);
        live.last_activity = Instant::now();
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Object({})", self.describe())
    }
}

impl Object {
    pub(crate) fn new(class: Arc<Class>, id: ObjectId) -> Object {
        let record = class
            .app
            .store
            .load_object(&class.namespace_key, &id.to_string())
            .unwrap_or_else(|e| {
                tracing::warn!("{e}");
                None
            });
        let name = OnceLock::new();
        let (state, leftover) = match record {
            Some(record) => {
                if let Some(n) = record.name {
                    let _ = name.set(n);
                }
                let leftover = record
                    .state
                    .is_active()
                    .then_some(record.container_id)
                    .flatten();
                (record.state, leftover)
            }
            None => (State::Stopped, None),
        };
        Object {
            inner: Arc::new(Inner {
                class,
                id,
                name,
                live: Mutex::new(Live {
                    state,
                    instance: None,
                    in_flight: 0,
                    last_activity: Instant::now(),
                    stop: None,
                    readying: false,
                    leftover,
                }),
                lifecycle: Arc::new(tokio::sync::Mutex::new(Attempts::default())),
                finished_attempts: AtomicU64::new(0),
                persisting: Mutex::new(()),
            }),
        }
    }

    pub(crate) fn learn_name(&self, name: &str) {
        if self.inner.name.get().is_none() && self.inner.name.set(name.to_string()).is_ok() {
            self.persist();
        }
    }

    pub fn id(&self) -> ObjectId {
        self.inner.id
    }

    /// The name the object was addressed by, if it was addressed by name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.get().map(String::as_str)
    }

    pub fn class_name(&self) -> &str {
        &self.inner.class.options.name
    }

    /// `MyContainer "alpha"`, or `MyContainer 1a2b3c4d5e6f` for an object known by id only.
    pub fn describe(&self) -> String {
        match self.name() {
            Some(name) => format!("{} {:?}", self.class_name(), truncate(name, 80)),
            None => format!("{} {}", self.class_name(), self.inner.id.short()),
        }
    }

    fn emit(&self, container_id: &str, kind: EventKind) {
        let event = Event {
            class: self.class_name().to_string(),
            object: match self.name() {
                Some(name) => format!("{:?}", truncate(name, 80)),
                None => self.inner.id.short(),
            },
            container_id: container_id.to_string(),
            kind,
        };
        tracing::debug!("{event}");
        // Nobody listening is fine.
        let _ = self.inner.class.app.events.send(event);
    }

    /// The container's lifecycle state.
    pub fn state(&self) -> State {
        self.live().state
    }

    /// Requests in flight through this object right now.
    pub fn in_flight(&self) -> u32 {
        self.live().in_flight
    }

    /// Pushes the idle deadline `sleep_after` into the future from now.
    pub fn renew_activity_timeout(&self) {
        self.live().last_activity = Instant::now();
    }

    /// The object's private durable storage.
    pub fn storage(&self) -> Storage {
        Storage::new(
            self.inner.class.app.store.clone(),
            &self.inner.class.namespace_key,
            self.inner.id,
        )
    }

    /// Sends `request` to the container, starting it and waiting for it first if it is
    /// not healthy. The port is the request's `berth-container-target-port` header (see
    /// [`crate::switch_port`]) or the class's `default_port`. Failures become HTTP answers
    /// that state the cause.
    pub async fn fetch<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        match self.try_fetch(request).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        }
    }

    /// [`Object::fetch`], with failures as a typed error.
    pub async fn try_fetch<B>(&self, request: Request<B>) -> Result<Response<Body>, FetchError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let port = match request.headers().get(TARGET_PORT_HEADER) {
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| FetchError::BadTargetPort {
                    value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                })?,
            None => self
                .inner
                .class
                .options
                .default_port
                .ok_or_else(|| FetchError::NoPort {
                    class: self.class_name().to_string(),
                })?,
        };
        self.container_fetch(request, port).await
    }

    /// Sends `request` to `port` of the container, starting it first if needed.
    pub async fn container_fetch<B>(
        &self,
        request: Request<B>,
        port: u16,
    ) -> Result<Response<Body>, FetchError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (lease, instance) = self.lease().await?;
        let addr = instance.endpoint.addr(port).ok_or_else(|| {
            FetchError::Start(Arc::new(StartError::PortUnreachable {
                object: self.describe(),
                port,
            }))
        })?;
        match proxy::forward(&instance.pool, request, addr, lease).await {
            Ok(response) => Ok(response),
            Err(ProxyFailure::ClientBody(e)) => Err(FetchError::BadRequestBody {
                cause: error_chain(e.as_ref()),
            }),
            Err(failure) => {
                let exit = wait_for_exit(&instance, EXIT_NOTICE).await;
                let object = self.describe();
                Err(match (exit, failure) {
                    (Some(exit), _) if exit.reason == StopReason::Exited => FetchError::Crashed {
                        object,
                        port,
                        status: exit.status,
                    },
                    (_, ProxyFailure::Connect(e)) => FetchError::Connect {
                        object,
                        port,
                        cause: error_chain(e.as_ref()),
                    },
                    (_, ProxyFailure::Dropped(e) | ProxyFailure::ClientBody(e)) => {
                        FetchError::Dropped {
                            object,
                            port,
                            cause: error_chain(e.as_ref()),
                        }
                    }
                })
            }
        }
    }

    /// Starts the container if none runs, without waiting for its ports.
    pub async fn start(&self, options: StartOptions) -> Result<(), Arc<StartError>> {
        self.ensure(Readiness::Started, Some(&options)).await
    }

    /// Starts the container if none runs and waits until `ports` accept connections
    /// (the class's ports when empty).
    pub async fn start_and_wait_for_ports(
        &self,
        ports: &[u16],
        options: StartOptions,
    ) -> Result<(), Arc<StartError>> {
        let readiness = if ports.is_empty() {
            Readiness::Healthy
        } else {
            Readiness::Ports(ports.to_vec())
        };
        self.ensure(readiness, Some(&options)).await
    }

    /// Sends `signal` to the container, SIGKILLs it after the class's grace period, and
    /// returns once it has exited and been removed.
    pub async fn stop(&self, signal: Signal) -> Result<(), RuntimeError> {
        self.stop_with(StopReason::Requested, signal)
            .await
            .map(drop)
    }

    /// Kills and removes the container at once.
    pub async fn destroy(&self) -> Result<(), RuntimeError> {
        self.stop_with(StopReason::Destroyed, Signal::Kill)
            .await
            .map(drop)
    }

    /// Stops the container, if one runs; returns whether one did.
    pub(crate) async fn stop_with(
        &self,
        reason: StopReason,
        signal: Signal,
    ) -> Result<bool, RuntimeError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let Some(instance) = self.live().instance.clone() else {
            return Ok(false);
        };
        self.begin_stop(&instance, reason, signal).await?;
        let waited = self.options().stop_grace.saturating_add(EXIT_REPORT);
        match wait_for_exit(&instance, waited).await {
            Some(_) => Ok(true),
            None => Err(RuntimeError::NoExit {
                container: instance.container_id.clone(),
                waited,
            }),
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn runtime(&self) -> &dyn Runtime {
        self.inner.class.app.runtime.as_ref()
    }

    fn options(&self) -> &ContainerClass {
        &self.inner.class.options
    }

    /// Counts a request in flight on a healthy container, if there is one.
    fn try_lease(&self) -> Option<(Lease, Arc<Instance>)> {
        let mut live = self.live();
        if live.state != State::Healthy || live.stop.is_some() {
            return None;
        }
        let instance = live.instance.clone()?;
        live.in_flight += 1;
        live.last_activity = Instant::now();
        drop(live);
        Some((
            Lease {
                object: self.clone(),
            },
            instance,
        ))
    }

    async fn lease(&self) -> Result<(Lease, Arc<Instance>), FetchError> {
        // A container may die between becoming healthy and taking the request; a few
        // fresh starts are worth it, an endless loop is not.
        for _ in 0..3 {
            if let Some(lease) = self.try_lease() {
                return Ok(lease);
            }
            self.ensure(Readiness::Healthy, None)
                .await
                .map_err(FetchError::Start)?;
        }
        self.try_lease().ok_or_else(|| FetchError::Unavailable {
            object: self.describe(),
        })
    }

    /// Brings the container to `readiness`, starting it if needed. Callers that queued
    /// behind a start that failed get that start's error instead of starting again.
    async fn ensure(
        &self,
        readiness: Readiness,
        options: Option<&StartOptions>,
    ) -> Result<(), Arc<StartError>> {
        let arrived = self.inner.finished_attempts.load(Ordering::Acquire);
        let attempts = self.inner.lifecycle.clone().lock_owned().await;
        if self.reached(&readiness) {
            return Ok(());
        }
        if let Some((number, error)) = &attempts.last_failure {
            if *number > arrived {
                return Err(error.clone());
            }
        }
        // The attempt runs on its own task: a caller that gives up (a client that
        // disconnects) must not leave a half-started container behind.
        let object = self.clone();
        let options = options.cloned();
        let app = self.inner.class.app.clone();
        app.spawn(async move { object.attempt(attempts, readiness, options).await })
            .await
            .unwrap_or_else(|_| {
                Err(Arc::new(StartError::Interrupted {
                    object: self.describe(),
                }))
            })
    }

    async fn attempt(
        &self,
        mut attempts: tokio::sync::OwnedMutexGuard<Attempts>,
        readiness: Readiness,
        options: Option<StartOptions>,
    ) -> Result<(), Arc<StartError>> {
        attempts.number += 1;
        let number = attempts.number;
        let result = self
            .start_locked(&readiness, options.as_ref())
            .await
            .map_err(Arc::new);
        self.inner
            .finished_attempts
            .store(number, Ordering::Release);
        if let Err(error) = &result {
            attempts.last_failure = Some((number, error.clone()));
            self.emit(
                "",
                EventKind::Error {
                    message: error.to_string(),
                },
            );
            // A container that exited while starting was already reported by its monitor.
            if !matches!(**error, StartError::ExitedWhileStarting { .. }) {
                let object = self.clone();
                let error = ObjectError::Start((**error).clone());
                let app = self.inner.class.app.clone();
                app.spawn(async move {
                    let hooks = object.inner.class.hooks.clone();
                    hooks.on_error(&object, &error).await;
                });
            }
        }
        result
    }

    fn reached(&self, readiness: &Readiness) -> bool {
        let live = self.live();
        if live.stop.is_some() || live.instance.is_none() {
            return false;
        }
        match readiness {
            Readiness::Started => true,
            Readiness::Healthy => live.state == State::Healthy,
            Readiness::Ports(_) => false,
        }
    }

    async fn start_locked(
        &self,
        readiness: &Readiness,
        options: Option<&StartOptions>,
    ) -> Result<(), StartError> {
        // A container on its way out: let it finish first.
        let stopping = {
            let live = self.live();
            live.instance.clone().filter(|_| live.stop.is_some())
        };
        if let Some(old) = stopping {
            let waited = self.options().stop_grace.saturating_add(EXIT_REPORT);
            if wait_for_exit(&old, waited).await.is_none() {
                return Err(StartError::StillStopping {
                    object: self.describe(),
                    waited,
                });
            }
        }
        let current = self.live().instance.clone();
        let instance = match current {
            Some(instance) => instance,
            None => match self.adopt_leftover().await {
                Some(instance) => instance,
                None => self.launch(options).await?,
            },
        };
        let ports = match readiness {
            Readiness::Started => return Ok(()),
            Readiness::Healthy => None,
            Readiness::Ports(ports) => Some(ports.as_slice()),
        };
        self.await_ready(&instance, ports).await
    }

    fn spec(&self, options: Option<&StartOptions>) -> ContainerSpec {
        let class = &self.inner.class;
        let opts = &class.options;
        let mut env = opts.env_vars.clone();
        let mut entrypoint = opts.entrypoint.clone();
        let mut enable_internet = opts.enable_internet;
        if let Some(o) = options {
            env.extend(o.env_vars.clone());
            entrypoint = o.entrypoint.clone().or(entrypoint);
            enable_internet = o.enable_internet.unwrap_or(enable_internet);
        }
        let mut ports = opts.ready_ports();
        ports.extend(opts.default_port);
        ports.sort_unstable();
        ports.dedup();
        let mut container_labels = opts.labels.clone();
        for (key, value) in [
            (labels::APP, class.app.name.clone()),
            (labels::CLASS, opts.name.clone()),
            (labels::OBJECT_ID, self.inner.id.to_string()),
            (labels::OBJECT_NAME, label_value(self.name().unwrap_or(""))),
            (labels::SESSION, class.app.session.clone()),
        ] {
            container_labels.insert(key.to_string(), value);
        }
        let (nano_cpus, memory_bytes) = match opts.instance_type {
            Some(t) => (
                (t.vcpu * 1e9) as i64,
                i64::try_from(t.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX),
            ),
            None => (0, 0),
        };
        ContainerSpec {
            name: format!(
                "berth-{}-{}-{}-{}",
                docker_name_part(&class.app.name),
                docker_name_part(&opts.name),
                self.inner.id.short(),
                random_suffix()
            ),
            image: class
                .image
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            env,
            entrypoint,
            labels: container_labels,
            ports,
            enable_internet,
            nano_cpus,
            memory_bytes,
        }
    }

    /// Creates and starts a container, and hands it to a monitor task.
    async fn launch(&self, options: Option<&StartOptions>) -> Result<Arc<Instance>, StartError> {
        let class = &self.inner.class;
        let permit =
            class
                .limit
                .clone()
                .try_acquire_owned()
                .map_err(|_| StartError::LimitReached {
                    class: self.class_name().to_string(),
                    max: self.options().max_instances,
                })?;
        let spec = self.spec(options);
        let began = Instant::now();
        let start_timeout = self.options().start_timeout;
        let runtime_error = |source| StartError::Runtime {
            object: self.describe(),
            source,
        };
        let timed_out = || StartError::StartTimeout {
            object: self.describe(),
            timeout: start_timeout,
        };
        let created = timeout(start_timeout, self.runtime().create(&spec)).await;
        let container_id = match created {
            Ok(created) => created.map_err(runtime_error)?,
            Err(_) => {
                // The engine may still create it: remove it by name once it can.
                let runtime = self.inner.class.app.runtime.clone();
                let name = spec.name.clone();
                self.inner
                    .class
                    .app
                    .spawn(async move { runtime.remove(&name).await });
                return Err(timed_out());
            }
        };
        let started = timeout(
            start_timeout.saturating_sub(began.elapsed()),
            self.runtime().start(&container_id),
        )
        .await;
        let endpoint = match started {
            Ok(Ok(endpoint)) => endpoint,
            failed => {
                if let Err(e) = self.runtime().remove(&container_id).await {
                    tracing::warn!(
                        "could not remove container {container_id} after a failed start: {e}"
                    );
                }
                return Err(match failed {
                    Ok(Err(e)) => runtime_error(e),
                    _ => timed_out(),
                });
            }
        };
        self.emit(
            &container_id,
            EventKind::Started {
                container_name: spec.name.clone(),
                elapsed: began.elapsed(),
            },
        );
        Ok(self.adopt(container_id, endpoint, began, permit))
    }

    /// Makes `container_id` this object's running container and starts its monitor.
    fn adopt(
        &self,
        container_id: String,
        endpoint: Endpoint,
        started_at: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Arc<Instance> {
        let instance = Arc::new(Instance {
            container_id,
            endpoint,
            started_at,
            started_at_ms: now_ms() - started_at.elapsed().as_millis() as i64,
            pool: Arc::default(),
            healthy: Notify::new(),
            became_healthy: std::sync::atomic::AtomicBool::new(false),
            wake: Notify::new(),
            exited: tokio::sync::watch::channel(None).0,
        });
        {
            let mut live = self.live();
            live.instance = Some(instance.clone());
            live.state = State::Running;
            live.stop = None;
            live.last_activity = Instant::now();
        }
        self.persist();
        self.inner
            .class
            .app
            .spawn(monitor(self.clone(), instance.clone(), permit));
        instance
    }

    /// Takes over a container that an earlier berth process recorded for this object, if
    /// it still runs; removes it otherwise.
    async fn adopt_leftover(&self) -> Option<Arc<Instance>> {
        let container_id = self.live().leftover.take()?;
        let info = self.runtime().inspect(&container_id).await.ok();
        let id = self.inner.id.to_string();
        match info {
            Some(info)
                if info.running
                    && info.labels.get(labels::OBJECT_ID) == Some(&id)
                    && info.image
                        == *self
                            .inner
                            .class
                            .image
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                    && info.endpoint.is_some() =>
            {
                if let Ok(permit) = self.inner.class.limit.clone().try_acquire_owned() {
                    self.emit(&container_id, EventKind::Adopted);
                    let endpoint = info.endpoint.unwrap_or(Endpoint::Unreachable);
                    return Some(self.adopt(container_id, endpoint, Instant::now(), permit));
                }
                let _ = self.runtime().remove(&container_id).await;
            }
            Some(_) => {
                let _ = self.runtime().remove(&container_id).await;
            }
            None => {}
        }
        {
            let mut live = self.live();
            if live.instance.is_none() {
                live.state = State::Stopped;
            }
        }
        self.persist();
        None
    }

    /// Takes over `container_id`, left running by an earlier berth process, if the store
    /// records it as this object's container, it runs the class's current image, and it
    /// is still healthy. Returns whether it was re-adopted; if not, it is removed.
    pub(crate) async fn readopt(&self, container_id: &str) -> bool {
        let _lifecycle = self.inner.lifecycle.lock().await;
        {
            let live = self.live();
            if live.instance.is_some() || live.leftover.as_deref() != Some(container_id) {
                return false;
            }
        }
        match self.adopt_leftover().await {
            Some(instance) => self.await_ready(&instance, None).await.is_ok(),
            None => false,
        }
    }

    async fn await_ready(
        &self,
        instance: &Arc<Instance>,
        ports: Option<&[u16]>,
    ) -> Result<(), StartError> {
        self.live().readying = true;
        let result = self.readiness(instance, ports).await;
        self.live().readying = false;
        match &result {
            Ok(()) => {
                {
                    let mut live = self.live();
                    if live.stop.is_none() && live.state == State::Running {
                        live.state = State::Healthy;
                        live.last_activity = Instant::now();
                    }
                }
                self.persist();
                instance.became_healthy.store(true, Ordering::Release);
                instance.healthy.notify_one();
                instance.wake.notify_one();
                self.emit(
                    &instance.container_id,
                    EventKind::Healthy {
                        elapsed: instance.started_at.elapsed(),
                    },
                );
            }
            Err(StartError::ExitedWhileStarting { .. } | StartError::Interrupted { .. }) => {}
            Err(_) => {
                // A container that never became ready is not left running.
                let _ = self
                    .begin_stop(instance, StopReason::StartFailed, Signal::Kill)
                    .await;
                wait_for_exit(instance, EXIT_REPORT).await;
            }
        }
        result
    }

    /// Waits until the container's ports answer, or says why they will not.
    async fn readiness(
        &self,
        instance: &Arc<Instance>,
        ports: Option<&[u16]>,
    ) -> Result<(), StartError> {
        let opts = self.options();
        let ports = ports
            .map(<[u16]>::to_vec)
            .unwrap_or_else(|| opts.ready_ports());
        let mut exited = instance.exited.subscribe();
        let exit_error = |exit: Option<Exit>| match exit {
            Some(exit) if exit.reason == StopReason::Exited => StartError::ExitedWhileStarting {
                object: self.describe(),
                status: exit.status,
                logs: exit.logs,
            },
            _ => StartError::Interrupted {
                object: self.describe(),
            },
        };
        let mut addrs = Vec::with_capacity(ports.len());
        for port in &ports {
            match instance.endpoint.addr(*port) {
                Some(addr) => addrs.push((*port, addr)),
                None if instance.endpoint == Endpoint::Unreachable => {
                    // It exited before it got an address; its monitor reports how.
                    let exit = timeout(EXIT_REPORT, exited.wait_for(Option::is_some)).await;
                    let exit = match exit {
                        Ok(Ok(exit)) => exit.clone(),
                        _ => None,
                    };
                    return Err(exit_error(exit));
                }
                None => {
                    return Err(StartError::PortUnreachable {
                        object: self.describe(),
                        port: *port,
                    })
                }
            }
        }
        let probe_port = opts.default_port.or(ports.first().copied());
        let probe = match (&opts.ping_endpoint, probe_port) {
            (Some(endpoint), Some(port)) => instance
                .endpoint
                .addr(port)
                .map(|addr| (port, addr, endpoint.as_str())),
            _ => None,
        };
        let limit = opts.port_ready_timeout;
        let deadline = after(limit);
        tokio::select! {
            ready = readiness::wait_until_ready(&instance.pool, &addrs, probe, deadline) => {
                ready.map_err(|not_ready| match not_ready {
                    NotReady::Port(port) => StartError::PortTimeout {
                        object: self.describe(),
                        port,
                        timeout: limit,
                    },
                    NotReady::Probe { port, endpoint } => StartError::ProbeTimeout {
                        object: self.describe(),
                        port,
                        endpoint,
                        timeout: limit,
                    },
                })
            }
            exit = exited.wait_for(Option::is_some) => {
                Err(exit_error(exit.ok().and_then(|e| e.clone())))
            }
        }
    }

    /// Marks the container as stopping (so no new request is sent to it), signals it, and
    /// arms the SIGKILL deadline in its monitor.
    async fn begin_stop(
        &self,
        instance: &Arc<Instance>,
        reason: StopReason,
        signal: Signal,
    ) -> Result<(), RuntimeError> {
        {
            let mut live = self.live();
            if !is_current(&live, instance) {
                return Ok(());
            }
            if live.stop.is_none() {
                live.stop = Some(PendingStop {
                    reason,
                    kill_at: Some(after(self.options().stop_grace)),
                });
                live.state = State::Stopping;
            }
        }
        self.persist();
        instance.wake.notify_one();
        self.runtime().kill(&instance.container_id, signal).await
    }

    /// Called by the monitor when the idle deadline passed.
    async fn on_idle(&self, instance: &Arc<Instance>) {
        if !self.idle_now(instance) {
            return;
        }
        let hooks = self.inner.class.hooks.clone();
        if hooks.on_activity_expired(self).await == Expiry::KeepAwake {
            self.renew_activity_timeout();
            return;
        }
        // Decided under the same lock that requests take to count themselves in flight:
        // a request either got in first (and the container stays) or finds it stopping.
        {
            let mut live = self.live();
            if !(is_current(&live, instance)
                && idle(&live, self.options().sleep_after, Instant::now()))
            {
                return;
            }
            live.stop = Some(PendingStop {
                reason: StopReason::Slept,
                kill_at: Some(after(self.options().stop_grace)),
            });
            live.state = State::Stopping;
        }
        self.persist();
        self.emit(
            &instance.container_id,
            EventKind::Sleeping {
                idle: self.options().sleep_after,
            },
        );
        if let Err(e) = self
            .runtime()
            .kill(&instance.container_id, Signal::Term)
            .await
        {
            tracing::warn!(object = %self.describe(), "could not signal the container to stop: {e}");
        }
    }

    fn idle_now(&self, instance: &Arc<Instance>) -> bool {
        let live = self.live();
        is_current(&live, instance) && idle(&live, self.options().sleep_after, Instant::now())
    }

    /// When the monitor should next look at the idle deadline and the kill deadline.
    fn deadlines(&self, instance: &Arc<Instance>) -> (Option<Instant>, Option<Instant>) {
        let live = self.live();
        if !is_current(&live, instance) {
            return (None, None);
        }
        if let Some(stop) = &live.stop {
            return (None, stop.kill_at);
        }
        if !awake(&live) {
            return (None, None);
        }
        let sleep_after = self.options().sleep_after;
        let idle_at = if live.in_flight > 0 {
            // Whenever the last request ends, it renews activity: the deadline is at
            // least this far away.
            after(sleep_after)
        } else {
            live.last_activity
                .checked_add(sleep_after)
                .unwrap_or_else(far_future)
        };
        (Some(idle_at), None)
    }

    fn set_kill_at(&self, at: Option<Instant>) {
        if let Some(stop) = self.live().stop.as_mut() {
            stop.kill_at = at;
        }
    }

    /// Records the container's exit, removes it, and runs the hooks. Runs once per
    /// container, on its monitor task.
    async fn finish(
        &self,
        instance: Arc<Instance>,
        status: ExitStatus,
        permit: OwnedSemaphorePermit,
        on_start: Option<JoinHandle<()>>,
    ) {
        let reason = {
            let live = self.live();
            live.stop
                .as_ref()
                .filter(|_| is_current(&live, &instance))
                .map(|s| s.reason)
                .unwrap_or(StopReason::Exited)
        };
        let logs = if reason == StopReason::Exited {
            self.runtime()
                .logs(&instance.container_id, LOG_TAIL)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        // Reported as soon as it is known; the removal that follows is cleanup.
        self.emit(
            &instance.container_id,
            EventKind::Stopped {
                exit_code: status.code,
                reason,
                oom_killed: status.oom_killed,
                uptime: instance.started_at.elapsed(),
            },
        );
        if let Err(e) = self.runtime().remove(&instance.container_id).await {
            tracing::warn!(object = %self.describe(), "could not remove container {}: {e}", instance.container_id);
        }
        drop(permit);
        let state = if reason == StopReason::Exited {
            State::StoppedWithCode(status.code)
        } else {
            State::Stopped
        };
        {
            let mut live = self.live();
            if is_current(&live, &instance) {
                live.instance = None;
                live.stop = None;
                live.state = state;
            }
        }
        self.persist();
        let exit = Exit {
            status,
            reason,
            logs,
        };
        instance.exited.send_replace(Some(exit.clone()));
        // on_start comes before on_stop, even when it is slow.
        if let Some(on_start) = on_start {
            let _ = on_start.await;
        }
        let hooks = self.inner.class.hooks.clone();
        // Exiting by itself is an error if it failed, or if it never became ready.
        let healthy = instance.became_healthy.load(Ordering::Acquire);
        if reason == StopReason::Exited && (status.code != 0 || status.oom_killed || !healthy) {
            let error = ObjectError::Crashed {
                status,
                logs: exit.logs,
            };
            self.emit(
                &instance.container_id,
                EventKind::Error {
                    message: error.to_string(),
                },
            );
            hooks.on_error(self, &error).await;
        }
        hooks
            .on_stop(
                self,
                StopParams {
                    exit_code: status.code,
                    reason,
                },
            )
            .await;
    }

    /// Writes the current state to the store. The snapshot is taken under the persisting
    /// lock, so the last write is always the latest state.
    fn persist(&self) {
        let _persisting = self
            .inner
            .persisting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (state, container_id, started_at_ms) = {
            let live = self.live();
            let instance = live.instance.as_ref();
            (
                live.state,
                instance
                    .map(|i| i.container_id.clone())
                    .or_else(|| live.leftover.clone()),
                instance.map(|i| i.started_at_ms),
            )
        };
        let record = ObjectRecord {
            namespace: self.inner.class.namespace_key.clone(),
            id: self.inner.id.to_string(),
            name: self.name().map(str::to_string),
            state,
            container_id,
            started_at_ms,
            updated_at_ms: now_ms(),
        };
        if let Err(e) = self.inner.class.app.store.save_object(&record) {
            tracing::warn!(object = %self.describe(), "could not record the state: {e}");
        }
    }
}

/// What `ensure` brings the container to.
enum Readiness {
    Started,
    Healthy,
    Ports(Vec<u16>),
}

fn is_current(live: &Live, instance: &Arc<Instance>) -> bool {
    live.instance
        .as_ref()
        .is_some_and(|current| Arc::ptr_eq(current, instance))
}

/// Serving (or started with no wait for readiness), and nothing going on.
fn awake(live: &Live) -> bool {
    live.state == State::Healthy || (live.state == State::Running && !live.readying)
}

fn idle(live: &Live, sleep_after: Duration, now: Instant) -> bool {
    awake(live)
        && live.stop.is_none()
        && live.in_flight == 0
        && live
            .last_activity
            .checked_add(sleep_after)
            .is_some_and(|deadline| deadline <= now)
}

async fn wait_for_exit(instance: &Instance, limit: Duration) -> Option<Exit> {
    let mut exited = instance.exited.subscribe();
    let waited = timeout(limit, exited.wait_for(Option::is_some)).await;
    match waited {
        Ok(Ok(exit)) => exit.clone(),
        _ => None,
    }
}

/// Watches one container from start to removal: runs `on_start`, puts it to sleep when
/// idle, enforces the SIGKILL deadline, and notices its exit.
async fn monitor(object: Object, instance: Arc<Instance>, permit: OwnedSemaphorePermit) {
    let _tracked = object.inner.class.app.monitors.enter();
    let runtime = object.inner.class.app.runtime.clone();
    let container_id = instance.container_id.clone();
    let exit = async {
        loop {
            match runtime.wait(&container_id).await {
                Ok(status) => return status,
                Err(RuntimeError::NotFound { .. }) => {
                    return ExitStatus {
                        code: -1,
                        oom_killed: false,
                    }
                }
                Err(e) => {
                    tracing::warn!("lost track of container {container_id}, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    tokio::pin!(exit);
    // Hooks run on tasks of their own, so that a slow or re-entrant hook never keeps the
    // monitor from noticing an exit or enforcing a deadline.
    let mut on_start: Option<JoinHandle<()>> = None;
    let mut idle_check: Option<JoinHandle<()>> = None;
    let status = loop {
        let (idle_at, kill_at) = object.deadlines(&instance);
        let idle_at = idle_at.filter(|_| idle_check.is_none());
        tokio::select! {
            biased;
            _ = instance.healthy.notified(), if on_start.is_none() => {
                let (object, hooks) = (object.clone(), object.inner.class.hooks.clone());
                on_start = Some(tokio::spawn(async move { hooks.on_start(&object).await }));
            }
            status = &mut exit => break status,
            _ = instance.wake.notified() => {}
            _ = async { if let Some(check) = idle_check.as_mut() { let _ = check.await; } }, if idle_check.is_some() => {
                idle_check = None;
            }
            _ = sleep_until(kill_at.unwrap_or_else(far_future)), if kill_at.is_some() => {
                match runtime.kill(&container_id, Signal::Kill).await {
                    Ok(()) => object.set_kill_at(None),
                    Err(e) => {
                        tracing::warn!("could not kill container {container_id}, retrying: {e}");
                        object.set_kill_at(Some(after(Duration::from_secs(1))));
                    }
                }
            }
            _ = sleep_until(idle_at.unwrap_or_else(far_future)), if idle_at.is_some() => {
                let (object, instance) = (object.clone(), instance.clone());
                idle_check = Some(tokio::spawn(async move { object.on_idle(&instance).await }));
            }
        }
    };
    if let Some(check) = idle_check {
        check.abort();
    }
    object.finish(instance, status, permit, on_start).await;
}

/// `d` from now, or as far as the clock goes.
fn after(d: Duration) -> Instant {
    Instant::now().checked_add(d).unwrap_or_else(far_future)
}

fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(86400 * 365))
        .unwrap_or(now)
}

/// Object names may hold any text; labels get a printable, bounded form.
fn label_value(name: &str) -> String {
    truncate(&name.escape_default().to_string(), 256)
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max_chars).collect();
    cut.push('…');
    cut
}

/// A piece of a Docker container name: `[a-zA-Z0-9_.-]`, bounded.
fn docker_name_part(text: &str) -> String {
    let part: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if part.is_empty() {
        "x".to_string()
    } else {
        part.to_ascii_lowercase()
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 3];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_docker_names_and_labels() {
        assert_eq!(docker_name_part("My App/€"), "my-app--");
        assert_eq!(docker_name_part(""), "x");
        assert_eq!(docker_name_part(&"a".repeat(100)).len(), 40);
        assert_eq!(label_value("a\0b\nc"), "a\\u{0}b\\nc");
        assert_eq!(label_value(&"x".repeat(10_000)).chars().count(), 257);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// Object names of any text give valid Docker name parts and bounded,
            /// printable labels.
            #[test]
            fn names_of_any_text(name in "\\PC{0,300}|[\\x00-\\x1f/\\\\]{0,40}") {
                let part = docker_name_part(&name);
                prop_assert!(!part.is_empty() && part.len() <= 40);
                prop_assert!(part.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
                let label = label_value(&name);
                prop_assert!(label.chars().count() <= 257);
                prop_assert!(!label.chars().any(char::is_control));
            }
        }
    }
}
