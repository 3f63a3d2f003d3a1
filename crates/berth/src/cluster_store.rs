//! The cluster's store: `berth store`, one process that keeps the objects' storage and
//! alarms for every router of a Swarm (see [`crate::store::shared`]), and the routers'
//! client of it. The routers reach it on the overlay at `tasks.<service>`, with the
//! cluster's store key (derived from the control token); its data folder must stay on one node (constrain its service to
//! that node), or it starts empty elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::activity::InFlight;
use crate::http::{error_response, full, Body};
use crate::peers::TOKEN_HEADER;
use crate::proxy::{self, Pool, ProxyFailure};
use crate::runtime::swarm::dns;
use crate::runtime::Endpoint;
use crate::store::shared::{Call, Remote};
use crate::store::{Store, StoreError};
use crate::worker::{Env, Worker};

/// The path of the store's one endpoint.
pub const PATH: &str = "/v1/store";
/// The port `berth store` listens on by default.
pub const DEFAULT_PORT: u16 = 7880;
/// The largest call the store reads: a value of an object's storage, in hex.
const MAX_CALL: usize = 64 * 1024 * 1024;
/// How long a call may take.
const CALL_LIMIT: Duration = Duration::from_secs(15);

/// Serves a store's shared calls to the routers that carry the store key
/// (`Token::store_key` in `control`).
pub struct StoreListener {
    pub store: Store,
    /// The cluster's store key, never logged.
    pub key: String,
}

#[async_trait]
impl Worker for StoreListener {
    async fn fetch(&self, request: Request<Body>, _env: &Env) -> Response<Body> {
        let authentic = request
            .headers()
            .get(TOKEN_HEADER)
            .is_some_and(|v| crate::peers::same(self.key.as_bytes(), v.as_bytes()));
        if !authentic {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this is the cluster's store: a call needs the cluster's store key",
            );
        }
        if request.method() != Method::POST || request.uri().path() != PATH {
            return error_response(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!("the store answers POST {PATH} only"),
            );
        }
        let bytes = match crate::http::read_limited(request.into_body(), MAX_CALL).await {
            Ok(bytes) => bytes,
            Err(why) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "body-unreadable",
                    &format!("the call could not be read: {why}"),
                )
            }
        };
        let call: Call = match serde_json::from_slice(&bytes) {
            Ok(call) => call,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad-json",
                    &format!("not a store call: {e}"),
                )
            }
        };
        match self.store.answer(call).await {
            Ok(value) => {
                let mut response = Response::new(full(value.to_string()));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(e) => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-failed",
                &e.to_string(),
            ),
        }
    }
}

/// A router's way to the cluster's store.
pub struct StoreClient {
    /// The store's service: `tasks.<service>` names its task on the overlay.
    service: String,
    port: u16,
    dns: SocketAddr,
    key: String,
    /// The store's task, and when it was found; found again after a connection to it
    /// failed, or after [`FOUND_FOR`], so that an address a new task took is left soon.
    found: Mutex<Option<(std::time::Instant, Arc<Pool>)>>,
}

/// How long the store's address is used before it is looked up again.
const FOUND_FOR: Duration = Duration::from_secs(30);

impl StoreClient {
    /// The client of the store of service `service`, listening on `port`.
    pub fn new(service: &str, port: u16, key: String) -> StoreClient {
        StoreClient {
            service: service.to_string(),
            port,
            dns: dns::EMBEDDED_DNS,
            key,
            found: Mutex::new(None),
        }
    }

    async fn pool(&self) -> Result<Arc<Pool>, StoreError> {
        if let Some((at, pool)) = &*self.found.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < FOUND_FOR {
                return Ok(pool.clone());
            }
        }
        let name = format!("tasks.{}", self.service);
        let addresses = dns::lookup_a(self.dns, &name)
            .await
            .map_err(|e| StoreError::Shared {
                reason: format!("cannot find {name} in the overlay's DNS: {e}"),
            })?;
        let Some(ip) = addresses.first().copied() else {
            return Err(StoreError::Shared {
                reason: format!("the overlay's DNS knows no {name}; is --swarm-store the store's service name, and does it run?"),
            });
        };
        let pool = Arc::new(Pool::new(Endpoint::Bridge(IpAddr::V4(ip))));
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), pool.clone()));
        Ok(pool)
    }

    fn forget(&self) {
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn send(&self, body: Bytes) -> Result<Result<serde_json::Value, String>, ProxyFailure> {
        let pool = match self.pool().await {
            Ok(pool) => pool,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mut request = Request::new(full(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = http::Uri::from_static(PATH);
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(key) = HeaderValue::from_str(&self.key) {
            headers.insert(TOKEN_HEADER, key);
        }
        let response = proxy::forward(&pool, request, self.port, InFlight::untracked()).await?;
        let status = response.status();
        let bytes = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return Ok(Err(format!("its answer broke off: {e}"))),
        };
        if !status.is_success() {
            let message = serde_json::from_slice::<crate::api::ErrorBody>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Ok(Err(format!("{status}: {message}")));
        }
        Ok(serde_json::from_slice(&bytes)
            .map_err(|e| format!("an answer berth does not understand: {e}")))
    }
}

#[async_trait]
impl Remote for StoreClient {
    async fn call(&self, call: &Call) -> Result<serde_json::Value, StoreError> {
        let body = Bytes::from(serde_json::to_vec(call).map_err(|e| StoreError::Shared {
            reason: e.to_string(),
        })?);
        // Twice: a store that moved (a new task) is found again after a failed connection,
        // and a read is sent again on a connection the store had closed.
        for attempt in 0..2 {
            let sent = tokio::time::timeout(CALL_LIMIT, self.send(body.clone())).await;
            let failure = match sent {
                Ok(Ok(answer)) => return answer.map_err(|reason| StoreError::Shared { reason }),
                Ok(Err(ProxyFailure::Connect(e))) if attempt == 0 => {
                    self.forget();
                    tracing::info!(
                        "the cluster's store did not take a connection ({e}); looking for it again"
                    );
                    continue;
                }
                Ok(Err(ProxyFailure::Dropped(_))) if attempt == 0 && call.only_reads() => continue,
                Ok(Err(
                    ProxyFailure::Connect(e)
                    | ProxyFailure::Dropped(e)
                    | ProxyFailure::ClientBody(e),
                )) => crate::http::error_chain(e.as_ref()),
                Err(_) => format!("no answer within {CALL_LIMIT:?}"),
            };
            self.forget();
            return Err(StoreError::Shared { reason: failure });
        }
        Err(StoreError::Shared {
            reason: "it could not be reached".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ask(
        listener: &StoreListener,
        key: &str,
        path: &str,
        call: &str,
    ) -> (StatusCode, String) {
        let mut request = Request::new(full(call.to_string()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = path.parse().expect("uri");
        request
            .headers_mut()
            .insert(TOKEN_HEADER, HeaderValue::from_str(key).expect("key"));
        let response = listener.fetch(request, &Env::new()).await;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_store_answers_calls_with_the_key_only() {
        let listener = StoreListener {
            store: Store::in_memory().expect("store"),
            key: "k".repeat(64),
        };
        let key = "k".repeat(64);
        let put = r#"{"op":"put","namespace":"a/C","id":"00","key":"x","value":"ff01"}"#;
        assert_eq!(
            ask(&listener, "wrong", PATH, put).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ask(&listener, &key, "/v1/other", put).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ask(&listener, &key, PATH, "{").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ask(&listener, &key, PATH, put).await,
            (StatusCode::OK, "null".into())
        );
        let get = r#"{"op":"get","namespace":"a/C","id":"00","key":"x"}"#;
        assert_eq!(
            ask(&listener, &key, PATH, get).await,
            (StatusCode::OK, "\"ff01\"".into())
        );
        let bad = r#"{"op":"put","namespace":"a/C","id":"00","key":"x","value":"zz"}"#;
        assert_eq!(
            ask(&listener, &key, PATH, bad).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
