//! Forwarding one request to a container and its answer back.
//!
//! Bodies stream both ways (nothing is buffered whole), `Host` is kept, hop-by-hop headers
//! are dropped, and WebSocket (any HTTP/1.1 upgrade) is tunnelled in both directions, each
//! chunk renewing the object's activity. Connections to containers are pooled and reused.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::namespace::TARGET_PORT_HEADER;
use crate::object::Lease;

/// A boxed error, as bodies carry.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body type of berth's requests and responses: any stream of bytes.
pub type Body = BoxBody<Bytes, BoxError>;

/// The pooled HTTP/1.1 client that talks to containers.
pub(crate) type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

/// The header that names what went wrong on a response berth itself made.
pub const ERROR_HEADER: &str = "berth-error";

pub(crate) fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Boxes any body into berth's [`Body`].
pub fn body<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A body of fixed bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    body(Full::new(bytes.into()))
}

/// A plain-text response that berth makes itself, saying what went wrong.
pub fn error_response(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(kind) {
        headers.insert(ERROR_HEADER, value);
    }
    response
}

/// How forwarding failed.
#[derive(Debug)]
pub(crate) enum ProxyFailure {
    /// No connection could be made to the container port.
    Connect(hyper_util::client::legacy::Error),
    /// The container closed the connection (or failed) before answering.
    Dropped(hyper_util::client::legacy::Error),
    /// The client's request body broke off or was malformed.
    ClientBody(hyper_util::client::legacy::Error),
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
pub(crate) async fn forward(
    client: &Client,
    mut request: Request<Body>,
    addr: SocketAddr,
    lease: Lease,
) -> Result<Response<Body>, ProxyFailure> {
    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

    let original = request.uri().clone();
    let path = original.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    // `addr` is always a container berth created: the URI the client sent is never used
    // to pick where to connect, so berth cannot be turned into an open proxy.
    let uri: Uri = match format!("http://{addr}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => Uri::from_static("/"),
    };
    *request.uri_mut() = uri;
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
    let mut response = client.request(request).await.map_err(|e| {
        if e.is_connect() {
            ProxyFailure::Connect(e)
        } else if client_failed.load(Ordering::Acquire) {
            ProxyFailure::ClientBody(e)
        } else {
            ProxyFailure::Dropped(e)
        }
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
    Ok(response.map(|incoming| {
        LeasedBody {
            inner: body(incoming),
            lease: Some(lease),
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
struct WatchedBody {
    inner: Body,
    failed: Arc<AtomicBool>,
}

impl hyper::body::Body for WatchedBody {
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
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until it ends.
struct LeasedBody {
    inner: Body,
    lease: Option<Lease>,
}

impl hyper::body::Body for LeasedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = polled {
            self.lease = None;
        }
        polled
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
