//! What every layer says over HTTP: the body type, the answers berth makes itself, and the
//! headers it reads or writes.

use std::error::Error as StdError;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// A boxed error, as bodies carry.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body type of berth's requests and responses: any stream of bytes.
pub type Body = BoxBody<Bytes, BoxError>;

/// The header that names what went wrong on a response berth itself made.
pub const ERROR_HEADER: &str = "berth-error";

/// The header that [`switch_port`] sets to make `fetch` use another container port.
pub const TARGET_PORT_HEADER: &str = "berth-container-target-port";

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
