//! The peer listener of a cluster's router: requests that other routers send to the
//! objects whose home is this one (see [`crate::peers`]). Each carries its object in
//! `berth-peer-*` headers and the cluster's token; it goes to the object's container
//! (or, for port 0, its class's own fetch) here, never on to another router.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Request, Response, StatusCode};

use super::Platform;
use crate::http::{error_response, Body};
use crate::id::ObjectId;
use crate::object::Lifecycle;
use crate::peers::{self, Peers};
use crate::worker::{Env, Worker};

/// Serves the requests other routers send here.
pub struct PeerListener {
    pub platform: Arc<Platform>,
    pub peers: Arc<Peers>,
    /// The control API, for the changes other routers relay (see `control::relay`).
    pub control: Arc<dyn Worker>,
}

#[async_trait]
impl Worker for PeerListener {
    async fn fetch(&self, mut request: Request<Body>, env: &Env) -> Response<Body> {
        if !self.peers.authentic(request.headers()) {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this is the listener for berth's other routers: a request needs the cluster's token",
            );
        }
        if request.headers().contains_key(peers::CONTROL_HEADER) {
            if !peers::is_control_change(request.method(), request.uri().path()) {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "not_a_change",
                    "routers relay changes to apps only; read the control API itself",
                );
            }
            peers::remove_peer_headers(request.headers_mut());
            request.extensions_mut().insert(peers::Relayed);
            return self.control.fetch(request, env).await;
        }
        if request.headers().contains_key(peers::SYNC_HEADER) {
            return self.deployments().await;
        }
        let header = |name: &http::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (Some(app), Some(class), Some(id), Some(port)) = (
            header(&peers::APP_HEADER),
            header(&peers::CLASS_HEADER),
            header(&peers::OBJECT_HEADER),
            header(&peers::PORT_HEADER),
        ) else {
            return bad("a request between routers names its app, class, object and port");
        };
        let name = header(&peers::NAME_HEADER).and_then(|n| percent_decode(&n));
        let lifecycle = request.headers().contains_key(peers::LIFECYCLE_HEADER);
        peers::remove_peer_headers(request.headers_mut());
        let (Ok(id), Ok(port)) = (ObjectId::parse_hex(&id), port.parse::<u16>()) else {
            return bad("the object id or the port is malformed");
        };
        let Ok(hosted) = self.platform.hosted(&app) else {
            return error_response(
                StatusCode::NOT_FOUND,
                "no_app",
                &format!("app {app:?} is not deployed on this router; deploy it again through any router, which relays it to all"),
            );
        };
        let Some(namespace) = hosted
            .namespaces()
            .into_iter()
            .find(|ns| ns.class_name() == class)
        else {
            return error_response(
                StatusCode::NOT_FOUND,
                "no_class",
                &format!("app {app:?} has no class {class:?} on this router"),
            );
        };
        let object = match name {
            Some(name) if namespace.id_from_name(&name) == id => namespace.get_by_name(&name),
            Some(_) => return bad("the object's name and id do not match"),
            None => namespace.get(id),
        };
        if lifecycle {
            let body = match crate::http::read_limited(request.into_body(), 1024 * 1024).await {
                Ok(body) => body,
                Err(e) => return bad(&format!("the request's body could not be read: {e}")),
            };
            return match serde_json::from_slice::<Lifecycle>(&body) {
                Ok(what) => object.lifecycle_here(what).await,
                Err(e) => bad(&format!("not a lifecycle request: {e}")),
            };
        }
        if port == crate::object::CLASS_PORT {
            return object.class_fetch_here(request).await;
        }
        match object.container_fetch_here(request, port).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        }
    }
}

impl PeerListener {
    /// The deployments this router's apps run, for a router that catches up.
    async fn deployments(&self) -> Response<Body> {
        match self.platform.live_deployments().await {
            Ok(live) => match serde_json::to_vec(&live) {
                Ok(json) => {
                    let mut response = Response::new(crate::http::full(json));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    response
                }
                Err(e) => error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    &e.to_string(),
                ),
            },
            Err(e) => error_response(e.status(), e.kind(), &e.to_string()),
        }
    }
}

fn bad(message: &str) -> Response<Body> {
    error_response(StatusCode::BAD_REQUEST, "bad_peer_request", message)
}

/// `%XX` escapes decoded as UTF-8 (what `encode_object_name` wrote); `None` if malformed.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_back_as_they_were_encoded() {
        for name in ["alice", "a b/ç€", "%41", ""] {
            let encoded = crate::http::encode_object_name(name);
            assert_eq!(percent_decode(&encoded).as_deref(), Some(name));
        }
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
    }
}
