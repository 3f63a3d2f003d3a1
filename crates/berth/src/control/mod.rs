//! The control API of `berth serve`: HTTP and JSON under `/v1`, described by the OpenAPI
//! document at `/v1/openapi.json`. Every endpoint but `/v1/health` needs the bearer
//! token; a missing or wrong one gets a bare 401. A GET may carry it in the dashboard's
//! cookie instead (see [`dashboard`]), which the page at `/` sets.

pub mod dashboard;
mod events;
mod logs;
mod relay;
pub mod token;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use serde::Serialize;

use crate::api::{DeployRequest, ErrorBody, Info, PREFIX};
use crate::http::percent_decode;
use crate::http::{full, Body};
use crate::peers::Peers;
use crate::platform::{Platform, PlatformError};
use crate::worker::{metrics_response, Env, Worker};

pub use token::{Token, TokenError};

/// The largest request body the API reads: a deploy, with a program of up to
/// [`crate::api::MAX_PROGRAM_BYTES`].
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The OpenAPI 3 document of the API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The control API, as a worker to serve on the control listener.
pub struct Control {
    platform: Arc<Platform>,
    token: Token,
    info: Info,
    /// Turns true when the server stops: the streams it serves (events, logs) end then,
    /// so that an open dashboard does not hold up the shutdown's drain.
    closing: tokio::sync::watch::Sender<bool>,
    /// The cluster's routers, on a router of one.
    peers: Option<Arc<Peers>>,
}

impl Control {
    pub fn new(platform: Arc<Platform>, token: Token, info: Info) -> Control {
        Control {
            platform,
            token,
            info,
            closing: tokio::sync::watch::channel(false).0,
            peers: None,
        }
    }

    /// Tells in `/v1/info` which routers this one sees.
    pub fn with_peers(mut self, peers: Arc<Peers>) -> Control {
        self.peers = Some(peers);
        self
    }

    /// Ends the streams under way, and those asked for from now on, at once.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// `response` as is, or, if it streams, cut off when [`Control::close_streams`] is
    /// called.
    fn closable(&self, response: Response<Body>) -> Response<Body> {
        let streams = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t == "text/event-stream" || t == "application/x-ndjson");
        if !streams {
            return response;
        }
        let mut closing = self.closing.subscribe();
        let closed = async move {
            let _ = closing.wait_for(|closed| *closed).await;
        };
        let (parts, body) = response.into_parts();
        let frames = futures_util::StreamExt::take_until(BodyStream::new(body), closed);
        Response::from_parts(parts, StreamBody::new(frames).boxed())
    }

    async fn route(&self, request: Request<Body>) -> Result<Response<Body>, Answer> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        if let Some(page) = dashboard::page(&request) {
            return Ok(page);
        }
        // Where Prometheus looks by default; behind the token like everything else
        // (Prometheus sends it with `authorization: { credentials_file: … }`).
        if path == "/metrics" {
            if !self.authorized(&request) {
                return Err(Answer::unauthorized());
            }
            return Ok(metrics_response(self.platform.metrics(), &request));
        }
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return Err(Answer::not_found());
        };
        // Each segment decoded on its own: `%2F` is part of a name, not a separator, and a
        // client that escapes a name (as URL libraries may) reaches the same resource.
        let decoded: Vec<String> = rest.split('/').skip(1).map(percent_decode).collect();
        let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
        let allowed = allowed_methods(&parts);
        if allowed.is_empty() {
            return Err(Answer::not_found());
        }
        if parts.as_slice() == ["health"] && method == Method::GET {
            return json(StatusCode::OK, &serde_json::json!({ "ok": true }));
        }
        if parts.as_slice() == ["session"] && method == Method::DELETE {
            return Ok(dashboard::close_session(&request));
        }
        if !self.authorized(&request) {
            return Err(Answer::unauthorized());
        }
        if !allowed.contains(&method) {
            return Err(Answer::method_not_allowed(allowed));
        }
        let p = &self.platform;
        match (&method, parts.as_slice()) {
            (_, ["openapi.json"]) => Ok(typed(StatusCode::OK, "application/json", OPENAPI)),
            (_, ["info"]) => {
                let mut info = self.info.clone();
                if let Some(peers) = &self.peers {
                    info.routers = peers.routers().iter().map(|ip| ip.to_string()).collect();
                }
                json(StatusCode::OK, &info)
            }
            (_, ["session"]) => Ok(dashboard::open_session(&self.token, &request)),
            (_, ["events"]) => {
                let asked = events::Asked {
                    app: query_value(&query, "app"),
                    follow: flag(&query, "follow")?.unwrap_or(true),
                };
                Ok(events::stream(p.events(), asked))
            }
            (_, ["apps"]) => json(StatusCode::OK, &p.apps().await?),
            (&Method::GET, ["apps", app]) => json(StatusCode::OK, &p.app(app).await?),
            (_, ["apps", app]) => json(StatusCode::OK, &p.destroy(app).await?),
            (&Method::GET, ["apps", app, "deployments"]) => {
                json(StatusCode::OK, &p.deployments(app).await?)
            }
            (_, ["apps", app, "deployments"]) => {
                let app = app.to_string();
                let body: DeployRequest = read_json(request).await?;
                let answer = p.deploy(&app, body).await?;
                json(accepted_if(answer.deployment.is_some()), &answer)
            }
            (_, ["apps", app, "deployments", number]) => {
                let number = number.parse::<i64>().map_err(|_| {
                    Answer::new(
                        StatusCode::NOT_FOUND,
                        "not-found",
                        format!("{number:?} is not a deployment number"),
                    )
                })?;
                json(StatusCode::OK, &p.deployment(app, number).await?)
            }
            (_, ["apps", app, "rollback"]) => {
                let answer = p.rollback(app).await?;
                json(accepted_if(answer.deployment.is_some()), &answer)
            }
            (_, ["apps", app, "instances"]) => json(StatusCode::OK, &p.instances(app).await?),
            (_, ["apps", app, "logs"]) => {
                let asked = logs::asked(app, &query)?;
                p.app(app).await?;
                logs::answer(p.logbook(), asked).await
            }
            (_, ["apps", app, "instances", class, id, "stop"]) => {
                p.stop_instance(app, class, id, false).await?;
                json(StatusCode::OK, &serde_json::json!({ "stopped": true }))
            }
            (_, ["apps", app, "instances", class, id]) => {
                p.stop_instance(app, class, id, true).await?;
                json(StatusCode::OK, &serde_json::json!({ "destroyed": true }))
            }
            _ => Err(Answer::not_found()),
        }
    }

    /// Whether the request carries the token: in its `Authorization` header, or, for a
    /// GET only, in the dashboard's cookie. A change another router relayed carried it
    /// there; here it carries the cluster's peer key instead, which the peer listener
    /// checked, so that the token itself never crosses the overlay.
    fn authorized(&self, request: &Request<Body>) -> bool {
        if request
            .extensions()
            .get::<crate::peers::Relayed>()
            .is_some()
        {
            return true;
        }
        let authorization = request.headers().get(header::AUTHORIZATION);
        self.token.accepts(authorization.map(|v| v.as_bytes()))
            || (request.method() == Method::GET
                && dashboard::cookie_accepted(&self.token, request.headers()))
    }
}

/// The methods the endpoint at `parts` (the path after `/v1`) takes; none: no endpoint.
fn allowed_methods(parts: &[&str]) -> Vec<Method> {
    match parts {
        ["health" | "openapi.json" | "info" | "events" | "apps"] => vec![Method::GET],
        ["apps", _] => vec![Method::GET, Method::DELETE],
        ["session"] => vec![Method::POST, Method::DELETE],
        ["apps", _, "deployments"] => vec![Method::GET, Method::POST],
        ["apps", _, "deployments", _] | ["apps", _, "instances"] | ["apps", _, "logs"] => {
            vec![Method::GET]
        }
        ["apps", _, "rollback"] | ["apps", _, "instances", _, _, "stop"] => vec![Method::POST],
        ["apps", _, "instances", _, _] => vec![Method::DELETE],
        _ => Vec::new(),
    }
}

fn accepted_if(made: bool) -> StatusCode {
    if made {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    }
}

#[async_trait]
impl Worker for Control {
    async fn fetch(&self, request: Request<Body>, _env: &Env) -> Response<Body> {
        match &self.peers {
            Some(peers) if relay::is_relayed_change(&request) => {
                self.everywhere(peers, request).await
            }
            _ => self.answer(request).await,
        }
    }
}

impl Control {
    /// The answer to `request` from this router alone.
    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        match self.route(request).await {
            Ok(response) => self.closable(response),
            Err(answer) => answer.into_response(),
        }
    }
}

/// The whole of a request body, up to [`MAX_BODY`].
async fn read_body(mut body: Body) -> Result<Bytes, Answer> {
    let unreadable = |status, why: String| {
        Answer::new(
            status,
            "body-unreadable",
            format!("the request body could not be read: {why}"),
        )
    };
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| unreadable(StatusCode::BAD_REQUEST, e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > MAX_BODY {
                let why = format!("it is over {MAX_BODY} bytes");
                return Err(unreadable(StatusCode::PAYLOAD_TOO_LARGE, why));
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(bytes))
}

/// An error answer.
struct Answer {
    status: StatusCode,
    body: ErrorBody,
    /// The `Allow` header of a 405.
    allow: Option<String>,
}

impl Answer {
    fn new(status: StatusCode, kind: &str, message: String) -> Answer {
        Answer {
            status,
            body: ErrorBody {
                error: kind.to_string(),
                message,
            },
            allow: None,
        }
    }

    fn not_found() -> Answer {
        Answer::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no such endpoint; see {PREFIX}/openapi.json"),
        )
    }

    fn method_not_allowed(allowed: Vec<Method>) -> Answer {
        let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        let mut answer = Answer::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("this endpoint takes {}", list.join(", ")),
        );
        answer.allow = Some(list.join(", "));
        answer
    }

    fn unauthorized() -> Answer {
        Answer::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unauthorized".into(),
        )
    }

    fn into_response(self) -> Response<Body> {
        let mut response = typed(
            self.status,
            "application/json",
            serde_json::to_string(&self.body).unwrap_or_default(),
        );
        if let Some(allow) = self
            .allow
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<PlatformError> for Answer {
    fn from(e: PlatformError) -> Answer {
        Answer::new(e.status(), e.kind(), e.to_string())
    }
}

fn typed(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Result<Response<Body>, Answer> {
    let text = serde_json::to_string(value)
        .map_err(|e| Answer::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(typed(status, "application/json", text))
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
async fn read_json<T: serde::de::DeserializeOwned>(request: Request<Body>) -> Result<T, Answer> {
    let bytes = read_body(request.into_body()).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Answer::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            format!("the request body is not the JSON this endpoint takes: {e}"),
        )
    })
}

/// The boolean parameter `key`: `true` or `false`, as the OpenAPI document says.
fn flag(query: &str, key: &str) -> Result<Option<bool>, Answer> {
    match query_value(query, key).as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(Answer::new(
            StatusCode::BAD_REQUEST,
            "bad-query",
            format!("{key}={other:?}: give true or false"),
        )),
    }
}

/// The value of the parameter `key` in a query string, if it has one.
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        .map(|value| percent_decode(&value.replace('+', " ")))
        .filter(|v| !v.is_empty())
}
