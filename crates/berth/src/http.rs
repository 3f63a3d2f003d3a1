//! What every layer says over HTTP: the body type, the answers berth makes itself, and the
//! headers it reads or writes.

use std::any::Any;
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, SizeHint};

/// A boxed error, as bodies carry.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body type of berth's requests and responses: any stream of bytes.
pub type Body = BoxBody<Bytes, BoxError>;

/// The header that names what went wrong on a response berth itself made.
pub const ERROR_HEADER: &str = "berth-error";

/// The header that [`switch_port`] sets to make `fetch` use another container port.
pub const TARGET_PORT_HEADER: &str = "berth-container-target-port";

/// The header that tells a container which object a request is for: the object's name,
/// percent-encoded UTF-8 (letters, digits and `-._~` as they are). Absent for an object
/// known by id only. berth sets it on every request it forwards, replacing any the client
/// sent, so that a container started before its name was known (a standby spare) learns it.
pub const OBJECT_NAME_HEADER: &str = "berth-object-name";

/// The header with the id of the object a request is for, in hex, on every request berth
/// forwards to a container.
pub const OBJECT_ID_HEADER: &str = "berth-object-id";

/// `name` as the `berth-object-name` header carries it.
pub fn encode_object_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Boxes any body into berth's [`Body`]; a [`Body`] is returned as it is, not boxed again.
pub fn body<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(body);
    if let Some(boxed) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Body>>() {
        if let Some(boxed) = boxed.take() {
            return boxed;
        }
    }
    match slot {
        Some(body) => body.map_err(Into::into).boxed(),
        None => full(Bytes::new()),
    }
}

/// Remembers whether a client's request body broke off or was malformed, so that a failed
/// forward is put on the right side: the client's (400), not the container's (502). It
/// travels in the request's extensions from the server that watched the body.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientBody(Arc<AtomicBool>);

impl ClientBody {
    /// `body`, watched by this flag.
    pub(crate) fn watch<B>(&self, body: B) -> Body
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        Watched {
            inner: body,
            failed: self.0.clone(),
        }
        .boxed()
    }

    pub(crate) fn failed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

struct Watched<B> {
    inner: B,
    failed: Arc<AtomicBool>,
}

impl<B> hyper::body::Body for Watched<B>
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

/// The whole of `body`, up to `max` bytes; why not, otherwise.
pub(crate) async fn read_limited(mut body: Body, max: usize) -> Result<Bytes, String> {
    use http_body_util::BodyExt;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > max {
                return Err(format!("it is over {max} bytes"));
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(bytes))
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

/// Makes `fetch` send `request` to `port` of the container instead of the default port.
pub fn switch_port<B>(request: &mut Request<B>, port: u16) {
    request
        .headers_mut()
        .insert(TARGET_PORT_HEADER, HeaderValue::from(port));
}

/// An error and its causes, as one line.
pub(crate) fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `text` with every byte outside RFC 3986's unreserved set (letters, digits, `-._~`)
/// as `%XX`: a value fit for a path segment or a query parameter.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Decodes `%XX` escapes. A `+` stays a plus: it is a space only in a query string.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(byte) = text
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_and_leaves_bad_ones() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%+f"), "%+f");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }

    #[test]
    fn percent_encoding_keeps_the_unreserved_and_decodes_back() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("a b/c?d=€"), "a%20b%2Fc%3Fd%3D%E2%82%AC");
        for text in ["", "alice", "x/y z", "€ & %"] {
            assert_eq!(percent_decode(&percent_encode(text)), text);
        }
    }

    /// A body whose client broke off.
    struct Broken;

    impl hyper::body::Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(Err(std::io::Error::other("the client went away"))))
        }
    }

    #[tokio::test]
    async fn a_watched_body_stays_watched_through_body() {
        let watch = ClientBody::default();
        let passed_on = body(watch.watch(Broken));
        assert!(passed_on.collect().await.is_err());
        assert!(watch.failed(), "the flag saw the failure");
        let text = body(full("abc")).collect().await.expect("body").to_bytes();
        assert_eq!(text, "abc");
    }
}
