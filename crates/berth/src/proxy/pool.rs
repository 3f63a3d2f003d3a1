//! Keep-alive connections to one container, reused across requests.
//!
//! The pool lives as long as the container does. A connection is driven by a task on the
//! thread that opened it, so each thread prefers its own connections: on a thread-per-core
//! server no request wakes another thread. A pooled connection that the container closed
//! meanwhile is replaced transparently.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::ProxyFailure;
use crate::http::{full, Body};
use crate::runtime::Endpoint;

/// How long connecting to a container may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per container.
const MAX_IDLE: usize = 256;
/// Open connections per container past which a request waits for one to free up.
const BUSY_CONNECTIONS: usize = 64;
/// How long it waits before opening one more anyway, if no connection came back
/// meanwhile: the open ones are all held (long requests, streams), not merely busy.
const REUSE_WAIT: Duration = Duration::from_millis(2);
/// The longest a request stays in line for a connection, even while they cycle.
const MAX_REUSE_WAIT: Duration = Duration::from_millis(100);

/// Keep-alive connections to one container's ports.
pub struct Pool {
    endpoint: Endpoint,
    idle: std::sync::Mutex<Vec<Idle>>,
    /// Connections open now, idle or busy.
    open: Arc<AtomicUsize>,
    /// Signalled when a connection comes back to the pool.
    returned: tokio::sync::Notify,
    /// How many times a connection came back: a waiter that sees it move knows the
    /// connections cycle, and stays in line rather than open one more.
    returns: AtomicUsize,
}

struct Idle {
    port: u16,
    thread: std::thread::ThreadId,
    sender: SendRequest<Body>,
}

/// A connection, with the thread whose runtime drives it.
pub struct Conn {
    thread: std::thread::ThreadId,
    sender: SendRequest<Body>,
}

impl Pool {
    pub fn new(endpoint: Endpoint) -> Pool {
        Pool {
            endpoint,
            idle: std::sync::Mutex::default(),
            open: Arc::default(),
            returned: tokio::sync::Notify::new(),
            returns: AtomicUsize::new(0),
        }
    }

    /// How the container is reached.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn take(&self, port: u16) -> Option<Conn> {
        let here = std::thread::current().id();
        // On a thread-per-core server, another thread's connection would wake that
        // thread on every request: open one of our own instead.
        let strict = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|i| !i.sender.is_closed());
        let mine = idle
            .iter()
            .rposition(|i| i.port == port && i.thread == here);
        let at = match mine {
            Some(at) => at,
            None if strict => return None,
            None => idle.iter().rposition(|i| i.port == port)?,
        };
        let i = idle.swap_remove(at);
        Some(Conn {
            thread: i.thread,
            sender: i.sender,
        })
    }

    pub(super) fn give_back(&self, port: u16, conn: Conn) {
        let Conn { thread, sender } = conn;
        if sender.is_closed() {
            tracing::debug!("closed connection to port {port} not pooled");
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                port,
                thread,
                sender,
            });
            drop(idle);
            self.returns.fetch_add(1, Ordering::AcqRel);
            self.returned.notify_one();
        }
    }

    async fn connect(&self, port: u16) -> Result<Conn, ProxyFailure> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, self.endpoint.connect(port)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ProxyFailure::Connect(e.into())),
            Err(_) => {
                return Err(ProxyFailure::Connect(
                    format!("no connection within {CONNECT_TIMEOUT:?}").into(),
                ))
            }
        };
        tracing::debug!("new connection to port {port}");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyFailure::Connect(e.into()))?;
        let open = self.open.clone();
        open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("connection to port {port}: {e}");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(Conn {
            thread: std::thread::current().id(),
            sender,
        })
    }

    /// Sends `request` on a pooled connection (or a new one). A pooled connection that
    /// turns out closed before the request went out is replaced by another.
    ///
    /// Past [`BUSY_CONNECTIONS`] open connections, a request waits for one to come back,
    /// for as long as connections keep coming back within [`REUSE_WAIT`]: a stampede then
    /// reuses connections instead of opening one each, which on a small machine costs
    /// more than the wait. When none comes back within it, it opens one more.
    pub(super) async fn send(
        &self,
        port: u16,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Conn), ProxyFailure> {
        let mut request = request;
        let mut waited = false;
        let mut seen = self.returns.load(Ordering::Acquire);
        let arrived = tokio::time::Instant::now();
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(mut conn) = self.take(port) {
                if conn.sender.ready().await.is_err() {
                    continue;
                }
                match conn.sender.try_send_request(request).await {
                    Ok(response) => return Ok((response, conn)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => {
                            request = unsent;
                            continue;
                        }
                        None => return Err(ProxyFailure::Dropped(e.into_error().into())),
                    },
                }
            }
            let returns = self.returns.load(Ordering::Acquire);
            let stalled = waited && (returns == seen || arrived.elapsed() >= MAX_REUSE_WAIT);
            if stalled || self.open.load(Ordering::Acquire) < BUSY_CONNECTIONS {
                return self.send_fresh(port, request).await;
            }
            (waited, seen) = (true, returns);
            let _ = tokio::time::timeout(REUSE_WAIT, returned).await;
        }
    }

    async fn send_fresh(
        &self,
        port: u16,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Conn), ProxyFailure> {
        let mut conn = self.connect(port).await?;
        match conn.sender.send_request(request).await {
            Ok(response) => Ok((response, conn)),
            Err(e) => Err(ProxyFailure::Dropped(e.into())),
        }
    }

    /// The status `GET path` (with `Host: host`) gets on `port`, if it gets an answer.
    pub async fn status(&self, port: u16, host: &str, path: &str) -> Option<u16> {
        let uri = path.parse::<Uri>().ok()?;
        let request = Request::get(uri)
            .header(header::HOST, host)
            .body(full(Bytes::new()))
            .ok()?;
        let (response, conn) = self.send(port, request).await.ok()?;
        let status = response.status().as_u16();
        // Read the answer to the end so the connection can serve the first request.
        if response.into_body().collect().await.is_ok() {
            self.give_back(port, conn);
        }
        Some(status)
    }
}
