//! Forwarding one request to a container and its answer back.
//!
//! Bodies stream both ways (nothing is buffered whole), `Host` is kept, hop-by-hop headers
//! are dropped, and WebSocket (any HTTP/1.1 upgrade) is tunnelled in both directions
//! (`tunnel`). Connections to a container are kept in a pool of its own (`pool`). The
//! request counts as in flight until its answer has been read to the end.

mod pool;
mod tunnel;

pub use pool::Pool;

use std::pin::Pin;

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};

use crate::activity::InFlight;
use crate::http::{body, full, Body, BoxError, ClientBody, TARGET_PORT_HEADER};
use pool::Conn;

/// How forwarding failed.
#[derive(Debug)]
pub enum ProxyFailure {
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

/// Whether a request asks to upgrade its connection (a WebSocket).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
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
        // The object's identity is berth's to tell, whatever a client's Connection says.
        .filter(|name| !name.as_str().starts_with("berth-object-"))
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

/// Sends `request` to `port` of the pool's container and streams the answer back. The
/// in-flight guard is held until the response body has been read to its end (or
/// dropped), so the request counts as in flight all that time.
pub async fn forward<B>(
    pool: &Arc<Pool>,
    mut request: Request<B>,
    port: u16,
    in_flight: InFlight,
) -> Result<Response<Body>, ProxyFailure>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let upgrade = is_upgrade(request.headers());
    // A client's upgrade is tunnelled; one a worker asked for itself (no client behind
    // it) comes back as the container's 101, its connection for the worker to take.
    let client_upgrade = (upgrade
        && request
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some())
    .then(|| hyper::upgrade::on(&mut request));

    let original = request.uri().clone();
    // Only the path goes on: where to connect is the pool's container, always one berth
    // created, so berth cannot be turned into an open proxy.
    *request.uri_mut() = match original.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    };
    *request.version_mut() = http::Version::HTTP_11;
    let headers = request.headers_mut();
    if !headers.contains_key(header::HOST) {
        // HTTP/1.1 needs one: a request with no authority gets the host Cloudflare's
        // library resolves a container request's relative URL against.
        let host = original
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or(HeaderValue::from_static("container"));
        headers.insert(header::HOST, host);
    }
    headers.remove(TARGET_PORT_HEADER);
    strip_hop_by_hop(headers, upgrade);

    // A request from berth's server is watched already; one a worker made is watched here.
    let (request, client_body) = match request.extensions().get::<ClientBody>().cloned() {
        Some(watch) => (request.map(body), watch),
        None => {
            let watch = ClientBody::default();
            (request.map(|b| watch.watch(b)), watch)
        }
    };
    let (mut response, sender) =
        pool.send(port, request)
            .await
            .map_err(|failure| match failure {
                ProxyFailure::Dropped(e) if client_body.failed() => ProxyFailure::ClientBody(e),
                other => other,
            })?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel::tunnel(client_upgrade, backend_upgrade, in_flight));
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, full(Bytes::new())));
        }
    }
    strip_hop_by_hop(response.headers_mut(), false);
    let pool = pool.clone();
    Ok(response.map(|incoming| {
        InFlightBody {
            inner: incoming,
            in_flight: Some(in_flight),
            connection: Some((pool, port, sender)),
        }
        .boxed()
    }))
}

/// A response body that keeps its request counted as in flight until it ends, and then
/// gives its connection back to the pool.
struct InFlightBody {
    inner: Incoming,
    in_flight: Option<InFlight>,
    connection: Option<(Arc<Pool>, u16, Conn)>,
}

impl Drop for InFlightBody {
    fn drop(&mut self) {
        // An answer with an empty body may never be polled to its end.
        if self.inner.is_end_stream() {
            if let Some((pool, port, conn)) = self.connection.take() {
                pool.give_back(port, conn);
            }
        } else if self.connection.is_some() {
            tracing::debug!("response body dropped before its end; connection dropped");
        }
    }
}

impl hyper::body::Body for InFlightBody {
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
                if let Some((pool, port, conn)) = self.connection.take() {
                    pool.give_back(port, conn);
                }
                self.in_flight = None;
            }
            Poll::Ready(Some(Err(_))) => {
                tracing::debug!("response body failed; connection dropped");
                self.connection = None;
                self.in_flight = None;
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
