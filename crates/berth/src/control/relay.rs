//! On a cluster, a change made through any router's control API (a deploy, a rollback,
//! a destroy, a stop) is made on every router: each keeps its own store, so without this
//! an app would have to be deployed to each. The router that takes the change makes it,
//! then, if it succeeded, sends the same request to every other router's peer listener
//! (see [`crate::peers`]), where it is made and relayed no further. Its answer is its own,
//! with two headers that tell how the others fared:
//!
//! - `berth-routers: OK/ALL`, the routers that made the change, this one included;
//! - `berth-routers-failed: ROUTER: WHY; …`, when some did not (they are also logged).
//!
//! A router that was down meanwhile catches up when it starts (see `platform::catch_up`).

use http::{HeaderName, HeaderValue, Request, Response};

use super::{read_body, Control};
use crate::http::{full, Body};
use crate::peers::{is_control_change, Peers, Relayed};

/// How many of the routers made the change: `OK/ALL`.
pub const ROUTERS_HEADER: HeaderName = HeaderName::from_static("berth-routers");
/// The routers that did not, and why.
pub const FAILED_HEADER: HeaderName = HeaderName::from_static("berth-routers-failed");

/// Whether `request` changes an app, and came from a client rather than another router.
pub(super) fn is_relayed_change(request: &Request<Body>) -> bool {
    is_control_change(request.method(), request.uri().path())
        && request.extensions().get::<Relayed>().is_none()
}

impl Control {
    /// Makes the change here, then on every other router.
    pub(super) async fn everywhere(&self, peers: &Peers, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = match read_body(body).await {
            Ok(bytes) => bytes,
            Err(answer) => return answer.into_response(),
        };
        let copy = || {
            let mut request = Request::new(full(bytes.clone()));
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.headers_mut() = parts.headers.clone();
            request
        };
        let mut response = self.answer(copy()).await;
        if !response.status().is_success() || is_dry_run(&bytes) {
            return response;
        }
        let others = peers.others();
        let sent = others.iter().map(|router| async {
            let mut request = copy();
            // The peer key stands for the token between routers (see `Control::authorized`).
            request.headers_mut().remove(http::header::AUTHORIZATION);
            request.headers_mut().remove(http::header::COOKIE);
            let answer = peers.relay(*router, request).await;
            (*router, answer)
        });
        let mut failed = Vec::new();
        for (router, answer) in futures_util::future::join_all(sent).await {
            if let Some(why) = failure(answer) {
                tracing::warn!(
                    "{} {} was made here but not on router {router}: {why}",
                    parts.method,
                    parts.uri.path()
                );
                failed.push(format!("{router}: {why}"));
            }
        }
        let headers = response.headers_mut();
        let made = format!("{}/{}", others.len() + 1 - failed.len(), others.len() + 1);
        if let Ok(value) = HeaderValue::from_str(&made) {
            headers.insert(ROUTERS_HEADER, value);
        }
        if !failed.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&printable(&failed.join("; "))) {
                headers.insert(FAILED_HEADER, value);
            }
        }
        response
    }
}

/// Why a relayed request failed, if it did.
fn failure(answer: Result<(http::StatusCode, bytes::Bytes), String>) -> Option<String> {
    match answer {
        Ok((status, _)) if status.is_success() => None,
        Ok((status, body)) => {
            let message = serde_json::from_slice::<crate::api::ErrorBody>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            Some(format!("{status}: {message}"))
        }
        Err(why) => Some(why),
    }
}

/// A deploy that only asks for the plan changes nothing: there is nothing to relay.
fn is_dry_run(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("dry_run").and_then(|d| d.as_bool()) == Some(true))
}

/// `text` with what a header cannot carry replaced, cut to a readable length.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(2000)
        .collect()
}
