//! Forwarding one request to a container and its answer back.
//!
//! Bodies stream both ways (nothing is buffered whole), `Host` is kept, hop-by-hop headers
//! are dropped, and WebSocket (any HTTP/1.1 upgrade) is tunnelled in both directions, each
//! chunk renewing the object's activity. Connections to a container are kept in a pool of
//! its own and reused; a pooled connection that the container closed meanwhile is replaced
//! transparently.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{full, Body, BoxError, TARGET_PORT_HEADER};
use crate::object::Lease;

/// How long connecting to a container may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per container.
const MAX_IDLE: usize = 256;
/// Open connections per container past which a request waits briefly for one to free up.
const BUSY_CONNECTIONS: usize = 64;
/// How long it waits before opening one more anyway.
const REUSE_WAIT: Duration = Duration::from_millis(2);

/// Keep-alive connections to one container's ports, reused across requests. It lives as
/// long as the container does. A connection is driven by a task on the thread that opened
/// it, so each thread prefers its own connections: no request wakes another thread.
#[derive(Default)]
pub(crate) struct Pool {
    idle: std::sync::Mutex<Vec<Idle>>,
    /// Connections open now, idle or busy.
    open: Arc<AtomicUsize>,
    /// Signalled when a connection comes back to the pool.
    returned: tokio::sync::Notify,
}

struct Idle {
    addr: SocketAddr,
    thread: std::thread::ThreadId,
    sender: SendRequest<Body>,
}

/// A connection, with the thread whose runtime drives it.
pub(crate) struct Conn {
    thread: std::thread::ThreadId,
    sender: SendRequest<Body>,
}

impl Pool {
    fn take(&self, addr: SocketAddr) -> Option<Conn> {
        let here = std::thread::current().id();
        // On a thread-per-core server, another thread's connection would wake that
        // thread on every request: open one of our own instead.
        let strict = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|i| !i.sender.is_closed());
        let mine = idle
            .iter()
            .rposition(|i| i.addr == addr && i.thread == here);
        let at = match mine {
            Some(at) => at,
            None if strict => return None,
            None => idle.iter().rposition(|i| i.addr == addr)?,
        };
        let i = idle.swap_remove(at);
        Some(Conn {
            thread: i.thread,
            sender: i.sender,
        })
    }

    fn give_back(&self, addr: SocketAddr, conn: Conn) {
        let Conn { thread, sender } = conn;
        if sender.is_closed() {
            tracing::debug!("closed connection to {addr} not pooled");
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                addr,
                thread,
                sender,
            });
            drop(idle);
            self.returned.notify_one();
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, ProxyFailure> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ProxyFailure::Connect(e.into())),
            Err(_) => {
                return Err(ProxyFailure::Connect(
                    format!("no connection within {CONNECT_TIMEOUT:?}").into(),
                ))
            }
        };
        let _ = stream.set_nodelay(true);
        tracing::debug!("new connection to {addr}");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyFailure::Connect(e.into()))?;
        let open = self.open.clone();
        open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("connection to {addr}: {e}");
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
    /// Past [`BUSY_CONNECTIONS`] open connections, a request first waits a moment for one
    /// to come back: a stampede then reuses connections instead of opening one each.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Conn), ProxyFailure> {
        let mut request = request;
        let mut waited = false;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(mut conn) = self.take(addr) {
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
            if waited || self.open.load(Ordering::Acquire) < BUSY_CONNECTIONS {
                return self.send_fresh(addr, request).await;
            }
            waited = true;
            let _ = tokio::time::timeout(REUSE_WAIT, returned).await;
        }
    }

    async fn send_fresh(
        &self,
        addr: SocketAddr,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Conn), ProxyFailure> {
        let mut conn = self.connect(addr).await?;
        match conn.sender.send_request(request).await {
            Ok(response) => Ok((response, conn)),
            Err(e) => Err(ProxyFailure::Dropped(e.into())),
        }
    }

    /// One GET with the given `Host`; whether any HTTP answer came back.
    pub(crate) async fn probe(&self, addr: SocketAddr, host: &str, path: &str) -> bool {
        let Ok(uri) = path.parse::<Uri>() else {
            return false;
        };
        let Ok(request) = Request::get(uri)
            .header(header::HOST, host)
            .body(full(Bytes::new()))
        else {
            return false;
        };
        let Ok((response, sender)) = self.send(addr, request).await else {
            return false;
        };
        // Read the answer to the end so the connection can serve the first request.
        if response.into_body().collect().await.is_ok() {
            self.give_back(addr, sender);
        }
        true
    }
}

/// How forwarding failed.
#[derive(Debug)]
pub(crate) enum ProxyFailure {
    /// No connection could be made to the container port.
    Connect(BoxError),
    /// The container closed the connection (or failed) before answering.
    Dropped(BoxError),
    /// The client's request body broke off or was malformed.
    ClientBody(BoxError),
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, keeping `Connection: upgrade` and `Upgrade` on upgrades.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Sends `request` to `addr` and streams the answer back. The lease is held until the
/// response body has been read to its end (or dropped), so the request counts as in
/// flight all that time.
pub(crate) async fn forward<B>(
    pool: &Arc<Pool>,
    mut request: Request<B>,
    addr: SocketAddr,
    lease: Lease,
) -> Result<Response<Body>, ProxyFailure>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

    let original = request.uri().clone();
    // Only the path goes on: where to connect is `addr`, always a container berth
    // created, so berth cannot be turned into an open proxy.
    *request.uri_mut() = match original.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    };
    *request.version_mut() = http::Version::HTTP_11;
    let headers = request.headers_mut();
    if !headers.contains_key(header::HOST) {
        if let Some(authority) = original.authority() {
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(header::HOST, value);
            }
        }
    }
    headers.remove(TARGET_PORT_HEADER);
    strip_hop_by_hop(headers, upgrade);

    let client_failed = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        WatchedBody {
            inner,
            failed: client_failed.clone(),
        }
        .boxed()
    });
    let (mut response, sender) =
        pool.send(addr, request)
            .await
            .map_err(|failure| match failure {
                ProxyFailure::Dropped(e) if client_failed.load(Ordering::Acquire) => {
                    ProxyFailure::ClientBody(e)
                }
                other => other,
            })?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_upgrade, backend_upgrade, lease));
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, full(Bytes::new())));
        }
    }
    strip_hop_by_hop(response.headers_mut(), false);
    let pool = pool.clone();
    Ok(response.map(|incoming| {
        LeasedBody {
            inner: incoming,
            lease: Some(lease),
            connection: Some((pool, addr, sender)),
        }
        .boxed()
    }))
}

/// Copies bytes both ways between an upgraded client connection and the container.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    lease: Lease,
) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    // The socket is no longer a request in flight; its messages renew activity instead.
    let object = lease.object();
    drop(lease);
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut backend_read, mut backend_write) = tokio::io::split(TokioIo::new(backend));
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    object.renew_activity_timeout();
                    if backend_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = backend_write.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match backend_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    object.renew_activity_timeout();
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

/// A request body that remembers whether the client broke it, so that a failure is put
/// on the right side.
struct WatchedBody<B> {
    inner: B,
    failed: Arc<AtomicBool>,
}

impl<B> hyper::body::Body for WatchedBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = polled {
            self.failed.store(true, Ordering::Release);
        }
        polled.map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until it ends, and then
/// gives its connection back to the pool.
struct LeasedBody {
    inner: Incoming,
    lease: Option<Lease>,
    connection: Option<(Arc<Pool>, SocketAddr, Conn)>,
}

impl Drop for LeasedBody {
    fn drop(&mut self) {
        // An answer with an empty body may never be polled to its end.
        if self.inner.is_end_stream() {
            if let Some((pool, addr, sender)) = self.connection.take() {
                pool.give_back(addr, sender);
            }
        } else if self.connection.is_some() {
            tracing::debug!("response body dropped before its end; connection dropped");
        }
    }
}

impl hyper::body::Body for LeasedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                // The whole answer was read: the connection can take the next request.
                if let Some((pool, addr, sender)) = self.connection.take() {
                    pool.give_back(addr, sender);
                }
                self.lease = None;
            }
            Poll::Ready(Some(Err(_))) => {
                tracing::debug!("response body failed; connection dropped");
                self.connection = None;
                self.lease = None;
            }
            _ => {}
        }
        polled.map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_but_upgrades_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("example.test"));
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(headers[header::HOST], "example.test");

        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
    }
}
