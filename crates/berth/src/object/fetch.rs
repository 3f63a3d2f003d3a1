//! Sending a request through an object to its container, starting it first if needed.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;

use super::error::{FetchError, StartError};
use super::instance::Instance;
use super::live::Goal;
use super::{Lifecycle, Object};
use crate::activity::InFlight;
use crate::http::{
    encode_object_name, error_chain, Body, BoxError, OBJECT_ID_HEADER, OBJECT_NAME_HEADER,
    TARGET_PORT_HEADER,
};
use crate::lifecycle::StopReason;
use crate::peers::{Addressed, Home, Peers};
use crate::proxy::{self, ProxyFailure};

/// How long a failed request waits to learn whether the container exited.
const EXIT_NOTICE: Duration = Duration::from_secs(2);

/// What a request sent to the home router may take beyond the class's `request_timeout`:
/// the home may have to start the container first.
const START_ALLOWANCE: Duration = Duration::from_secs(300);

/// Fresh starts a request may wait for, when a container stops before it takes the
/// request: a few are worth it, an endless loop is not.
const STARTS_PER_REQUEST: usize = 3;

/// The port a request between routers names when it is for the class's own fetch, not
/// for a container port (which is never 0).
pub const CLASS_PORT: u16 = 0;

/// How a hand-over of a container to the object's new home went.
pub(super) enum HandOver {
    /// It holds the container now.
    Taken,
    /// It will not: it runs another version of the class, or not the app, or its
    /// take-over failed.
    Refused,
    /// It did not answer.
    Unanswered,
}

impl Object {
    /// Sends `request` to the container, starting it and waiting for it first if it is
    /// not healthy. The port is the request's `berth-container-target-port` header (see
    /// [`crate::switch_port`]) or the class's `default_port`. Failures become HTTP answers
    /// that state the cause.
    ///
    /// A class with a `fetch` of its own ([`Hooks::fetch`](super::Hooks::fetch)) gets the
    /// request instead, and reaches the container itself.
    pub async fn fetch<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let hooks = &self.inner.class.hooks;
        if hooks.has_fetch() {
            // On a cluster, the class's own fetch runs on the object's home, where its one
            // instance of the class lives (port 0 tells the home's peer listener so).
            if let Some((peers, home)) = self.elsewhere() {
                return match self.send_home(&peers, home, request, CLASS_PORT).await {
                    Ok(response) => response,
                    Err(e) => e.into_response(),
                };
            }
            let request = request.map(|body| body.map_err(Into::into).boxed());
            return hooks.fetch(self, request).await;
        }
        self.fetch_container(request).await
    }

    /// [`Object::fetch`] on this router, whichever is the home: for a request another
    /// router sent here for the class's own fetch.
    pub async fn class_fetch_here(&self, request: Request<Body>) -> Response<Body> {
        let hooks = &self.inner.class.hooks;
        if hooks.has_fetch() {
            return hooks.fetch(self, request).await;
        }
        self.fetch_container(request).await
    }

    /// Sends `request` to the container as [`Object::fetch`] does, but never through the
    /// class's own `fetch`: what that `fetch` calls to reach the container.
    pub async fn fetch_container<B>(&self, request: Request<B>) -> Response<Body>
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
        let port = self.port_of(&request)?;
        self.container_fetch(request, port).await
    }

    /// [`Object::try_fetch`] if the container serves right now; the request back if it
    /// does not. It never starts the container, so the tasks that watch a container's life
    /// never run on the caller's runtime: for a caller whose runtime may end before the
    /// container does (a JS worker's thread, see `js::bindings`), which sends the request
    /// from berth's own runtime when it gets it back.
    pub async fn fetch_if_serving<B>(
        &self,
        request: Request<B>,
    ) -> Result<Result<Response<Body>, FetchError>, Request<B>>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some((peers, home)) = self.elsewhere() {
            let port = match self.port_of(&request) {
                Ok(port) => port,
                Err(e) => return Ok(Err(e)),
            };
            // Sent only if it serves there: the home's peer listener would wake it.
            return match self.at_home(&peers, home, &Lifecycle::Serving).await {
                Ok((status, serving)) if status.is_success() && serving == "true" => {
                    Ok(self.send_home(&peers, home, request, port).await)
                }
                Ok(_) => Err(request),
                Err(cause) => Ok(Err(FetchError::HomeUnreachable {
                    object: self.describe(),
                    router: home,
                    cause,
                })),
            };
        }
        // Counted first, as in `lease`, so that the container cannot fall asleep between.
        let in_flight = self.inner.activity.enter();
        let Some(instance) = self.phase().serving().cloned() else {
            return Err(request);
        };
        let in_flight = in_flight.and(instance.serving.enter());
        let port = match self.port_of(&request) {
            Ok(port) => port,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.forward(request, port, in_flight, instance).await)
    }

    /// The port a request goes to: its `berth-container-target-port` header, or the
    /// class's `default_port`.
    fn port_of<B>(&self, request: &Request<B>) -> Result<u16, FetchError> {
        match request.headers().get(TARGET_PORT_HEADER) {
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| FetchError::BadTargetPort {
                    value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                }),
            None => self
                .options()
                .default_port
                .ok_or_else(|| FetchError::NoPort {
                    class: self.class_name().to_string(),
                }),
        }
    }

    /// Sends `request` to `port` of the container, starting it first if needed; on a
    /// cluster's router, to the object's home router if that is another one.
    pub async fn container_fetch<B>(
        &self,
        request: Request<B>,
        port: u16,
    ) -> Result<Response<Body>, FetchError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some((peers, home)) = self.elsewhere() {
            return self.send_home(&peers, home, request, port).await;
        }
        self.container_fetch_here(request, port).await
    }

    /// [`Object::container_fetch`] on this router, whichever is the home: for a request
    /// another router sent here, so that two routers whose lists differ for a moment
    /// cannot send a request back and forth.
    pub async fn container_fetch_here<B>(
        &self,
        request: Request<B>,
        port: u16,
    ) -> Result<Response<Body>, FetchError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (in_flight, instance) = self.lease().await?;
        self.forward(request, port, in_flight, instance).await
    }

    /// Whether this router runs the object's lifecycle: always, but on a cluster's
    /// router whose peers make another one the object's home (see [`crate::peers`]).
    pub fn is_home(&self) -> bool {
        self.elsewhere().is_none()
    }

    /// Whether `container_id` is this object's container on this router.
    pub(crate) fn holds(&self, container_id: &str) -> bool {
        self.phase().container_id() == Some(container_id)
    }

    /// The router this object lives on, if it is not this one.
    pub(super) fn elsewhere(&self) -> Option<(Arc<Peers>, Ipv4Addr)> {
        let peers = self.inner.class.app.peers.get()?;
        match peers.home(&self.inner.id) {
            Home::Here => None,
            Home::Router(home) => Some((peers.clone(), home)),
        }
    }

    /// Asks router `home` to take `instance` over.
    pub(super) async fn hand_over(
        &self,
        peers: &Peers,
        home: Ipv4Addr,
        instance: &Instance,
    ) -> HandOver {
        let what = Lifecycle::TakeOver {
            version: instance.version.clone(),
        };
        match self.at_home(peers, home, &what).await {
            Ok((status, _)) if status.is_success() => HandOver::Taken,
            // It answered but will not, or could not, take it: idle, it sleeps here.
            Ok((status, message)) => {
                tracing::info!(object = %self.describe(), "router {home}, its home now, did not take container {} over: {status} {message}", instance.container_id);
                HandOver::Refused
            }
            Err(e) => {
                tracing::info!(object = %self.describe(), "router {home}, its home now, did not answer for container {}: {e}", instance.container_id);
                HandOver::Unanswered
            }
        }
    }

    /// Sends `request` for `port` to router `home`, which runs this object's lifecycle.
    async fn send_home<B>(
        &self,
        peers: &Peers,
        home: Ipv4Addr,
        request: Request<B>,
        port: u16,
    ) -> Result<Response<Body>, FetchError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let object = Addressed {
            app: &self.inner.class.app.name,
            class: self.class_name(),
            id: self.inner.id,
            name: self.name(),
            port,
        };
        // The home's own limit (its start and its container's answer) comes first; this
        // one is for a home that stopped answering.
        let timeout = self.options().request_timeout + START_ALLOWANCE;
        let in_flight = self.inner.activity.enter();
        let sent = tokio::time::timeout(timeout, peers.send(home, object, request, in_flight));
        let unreachable = |cause: String| FetchError::HomeUnreachable {
            object: self.describe(),
            router: home,
            cause,
        };
        match sent.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(ProxyFailure::ClientBody(e))) => Err(FetchError::BadRequestBody {
                cause: error_chain(e.as_ref()),
            }),
            Ok(Err(ProxyFailure::Connect(e))) => {
                // Homes leave it out for a while: the next request goes to another.
                peers.mark_down(home);
                Err(unreachable(error_chain(e.as_ref())))
            }
            Ok(Err(ProxyFailure::Dropped(e))) => Err(unreachable(error_chain(e.as_ref()))),
            Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
        }
    }

    /// Sends `request` to `port` of `instance`, leased by the request.
    async fn forward<B>(
        &self,
        mut request: Request<B>,
        port: u16,
        in_flight: InFlight,
        instance: Arc<Instance>,
    ) -> Result<Response<Body>, FetchError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        self.thaw(&instance).await?;
        self.tell_identity(request.headers_mut());
        if !instance.endpoint().reaches(port) {
            return Err(FetchError::Start(Arc::new(StartError::PortUnreachable {
                object: self.describe(),
                port,
            })));
        }
        let timeout = self.options().request_timeout;
        // A container that exits takes its connections with it, but one whose node was
        // cut off (a cluster) leaves them hanging: its exit ends the wait too.
        let forwarded = tokio::select! {
            forwarded = tokio::time::timeout(
                timeout,
                proxy::forward(&instance.pool, request, port, in_flight),
            ) => forwarded,
            Some(exit) = instance.exit(timeout) => {
                let object = self.describe();
                return Err(if exit.reason == StopReason::Exited {
                    FetchError::Crashed { object, port, status: exit.status }
                } else {
                    FetchError::Dropped {
                        object,
                        port,
                        cause: format!("the container stopped ({}) while the request waited for its answer", exit.reason),
                    }
                });
            }
        };
        let Ok(forwarded) = forwarded else {
            return Err(FetchError::RequestTimeout {
                object: self.describe(),
                port,
                timeout,
            });
        };
        match forwarded {
            Ok(response) => Ok(response),
            Err(ProxyFailure::ClientBody(e)) => Err(FetchError::BadRequestBody {
                cause: error_chain(e.as_ref()),
            }),
            Err(failure) => {
                let exit = instance.exit(EXIT_NOTICE).await;
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

    /// Puts the object's name and id in the headers, in place of any the client sent.
    fn tell_identity(&self, headers: &mut http::HeaderMap) {
        let id = self.inner.id_header.get_or_init(|| {
            HeaderValue::from_str(&self.inner.id.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        });
        headers.insert(OBJECT_ID_HEADER, id.clone());
        let name = self.name().map(|name| {
            self.inner.name_header.get_or_init(|| {
                HeaderValue::from_str(&encode_object_name(name))
                    .unwrap_or_else(|_| HeaderValue::from_static(""))
            })
        });
        match name {
            Some(name) => headers.insert(OBJECT_NAME_HEADER, name.clone()),
            None => headers.remove(OBJECT_NAME_HEADER),
        };
    }

    /// A healthy container and the request counted in flight on it, starting one if
    /// needed. The request counts from the moment it arrives, so that the container it
    /// waits for cannot fall asleep before it takes the request, however long the start
    /// takes to be recorded. A container that stops between becoming healthy and taking
    /// the request (it crashed, or was stopped) is started afresh.
    async fn lease(&self) -> Result<(InFlight, Arc<Instance>), FetchError> {
        let in_flight = self.inner.activity.enter();
        for _ in 0..STARTS_PER_REQUEST {
            if let Some(instance) = self.phase().serving().cloned() {
                return Ok((in_flight.and(instance.serving.enter()), instance));
            }
            match self.ensure(Goal::Healthy, None).await {
                Ok(()) => {}
                Err(e) if matches!(*e, StartError::Interrupted { .. }) => {}
                Err(e) => return Err(FetchError::Start(e)),
            }
        }
        let serving = self.phase().serving().cloned();
        serving
            .map(|instance| (in_flight.and(instance.serving.enter()), instance))
            .ok_or_else(|| FetchError::Unavailable {
                object: self.describe(),
            })
    }
}
