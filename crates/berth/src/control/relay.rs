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

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request, Response};

use super::{read_body, Control};
use crate::api::PREFIX;
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
    pub(super) async fn everywhere(
        &self,
        peers: &Arc<Peers>,
        request: Request<Body>,
    ) -> Response<Body> {
        // No body is read for a client without the token.
        if !self.authorized(&request) {
            return self.answer(request).await;
        }
        let (parts, body) = request.into_parts();
        let bytes = match read_body(body).await {
            Ok(bytes) => bytes,
            Err(answer) => return answer.into_response(),
        };
        let mut here = Request::new(full(bytes.clone()));
        *here.method_mut() = parts.method.clone();
        *here.uri_mut() = parts.uri.clone();
        *here.headers_mut() = parts.headers.clone();
        let mut response = self.answer(here).await;
        if !response.status().is_success() || is_dry_run(&bytes) {
            return response;
        }
        let mut change = Change {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body: bytes,
        };
        // The peer key stands for the token between routers (see `Control::authorized`).
        change.headers.remove(http::header::AUTHORIZATION);
        change.headers.remove(http::header::COOKIE);
        if let Some(app) = rollback_of(change.uri.path()) {
            // Each router would pick its own deployment to return to, from its own
            // history: the others deploy the one this router returned to.
            match self.live_deploy(&app).await {
                Some(deploy) => change = deploy,
                None => tracing::warn!("app {app} was rolled back here, but what it runs now cannot be read to relay it"),
            }
        }
        let others = peers.others();
        // On a task of its own: a client that goes away must not cut the relay short once
        // the change is made here.
        let relay = tokio::spawn(relay(peers.clone(), others.clone(), change));
        let failed = relay
            .await
            .unwrap_or_else(|e| vec![format!("the relay failed: {e}")]);
        let headers = response.headers_mut();
        let made = format!(
            "{}/{}",
            (others.len() + 1).saturating_sub(failed.len()),
            others.len() + 1
        );
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

    /// A deploy of what `app` runs here now, as a change to relay.
    async fn live_deploy(&self, app: &str) -> Option<Change> {
        let live = self.platform.live_deployments().await.ok()?;
        let deployment = live.into_iter().find(|d| d.app == app)?;
        let request = crate::platform::redeploy(&deployment, deployment.source.clone());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Some(Change {
            method: http::Method::POST,
            uri: format!(
                "{PREFIX}/apps/{}/deployments",
                crate::http::encode_object_name(app)
            )
            .parse()
            .ok()?,
            headers,
            body: serde_json::to_vec(&request).ok()?.into(),
        })
    }
}

/// A change to make on the other routers.
struct Change {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

/// Sends `change` to each of `others` at once; the routers that did not make it, and why.
async fn relay(peers: Arc<Peers>, others: Vec<std::net::Ipv4Addr>, change: Change) -> Vec<String> {
    let sent = others.iter().map(|router| {
        let mut request = Request::new(full(change.body.clone()));
        *request.method_mut() = change.method.clone();
        *request.uri_mut() = change.uri.clone();
        *request.headers_mut() = change.headers.clone();
        let peers = &peers;
        async move { (*router, peers.relay(*router, request).await) }
    });
    let mut failed = Vec::new();
    for (router, answer) in futures_util::future::join_all(sent).await {
        if let Some(why) = failure(answer) {
            tracing::warn!(
                "{} {} was made here but not on router {router}: {why}",
                change.method,
                change.uri.path()
            );
            failed.push(format!("{router}: {why}"));
        }
    }
    failed
}

/// The app of a rollback's path.
fn rollback_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix(PREFIX)?.strip_prefix("/apps/")?;
    let app = rest.strip_suffix("/rollback")?;
    (!app.contains('/')).then(|| crate::http::percent_decode(app))
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
