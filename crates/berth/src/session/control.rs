//! The control socket of a `berth dev` session, `.berth/control.sock`: how another
//! command of the same user (`berth exec --wake`) asks the session to start an object.
//! Only this user can connect to it (mode 0600); it takes no token.

use std::collections::BTreeMap;

use async_trait::async_trait;
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::http::{error_response, full, percent_decode, Body};
use crate::namespace::Namespace;
use crate::object::{FetchError, StartOptions};
use crate::worker::{Env, Worker};

/// The socket's name in the app's state folder.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Answers `POST /wake/{class}/{name}`: starts that object's container, if none runs,
/// and answers once it is ready.
pub struct DevControl {
    /// By class name.
    namespaces: BTreeMap<String, Namespace>,
}

impl DevControl {
    pub(super) fn new(namespaces: &BTreeMap<String, Namespace>) -> DevControl {
        DevControl {
            namespaces: namespaces
                .values()
                .map(|ns| (ns.class_name().to_string(), ns.clone()))
                .collect(),
        }
    }
}

#[async_trait]
impl Worker for DevControl {
    async fn fetch(&self, request: Request<Body>, _env: &Env) -> Response<Body> {
        let parts: Vec<String> = request
            .uri()
            .path()
            .split('/')
            .skip(1)
            .map(percent_decode)
            .collect();
        let [wake, class, name] = parts.as_slice() else {
            return error_response(StatusCode::NOT_FOUND, "not-found", "POST /wake/CLASS/NAME");
        };
        if wake != "wake" {
            return error_response(StatusCode::NOT_FOUND, "not-found", "POST /wake/CLASS/NAME");
        }
        if request.method() != Method::POST {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "POST /wake/CLASS/NAME",
            );
        }
        let Some(namespace) = self.namespaces.get(class) else {
            let known: Vec<&str> = self.namespaces.keys().map(String::as_str).collect();
            return error_response(
                StatusCode::NOT_FOUND,
                "no-class",
                &format!(
                    "the app has no class {class}; classes: {}",
                    known.join(", ")
                ),
            );
        };
        let object = namespace.get_by_name(name);
        match object
            .start_and_wait_for_ports(&[], StartOptions::default())
            .await
        {
            Ok(()) => {
                let body = json!({ "started": object.describe() }).to_string();
                let mut response = Response::new(full(body));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(e) => FetchError::Start(e).into_response(),
        }
    }
}
