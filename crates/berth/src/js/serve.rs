//! A JS worker served: its entrypoint's `fetch` answers requests.
//!
//! A worker has a few QuickJS runtimes ([`WorkerLimits::runtimes`]), each on a thread of
//! its own with a single-threaded Tokio runtime: QuickJS is single-threaded, and its
//! values cannot leave the thread. Requests reach a runtime through its queue; each
//! becomes a task there, so while one awaits its container (the container work runs on
//! berth's own runtime, see [`super::bindings`]), the others run. JavaScript runs one task
//! at a time per runtime, so a request goes to a runtime that is not running JavaScript
//! right now, the one with the fewest requests in flight: a fetch that loops holds up
//! its own runtime until it is cut off, not the worker. As on Cloudflare, module state
//! is per runtime, not shared by all requests.
//!
//! Budget: each request may run JavaScript for [`WorkerLimits::cpu`] in all (QuickJS's
//! interrupt handler stops it, and the request answers 500 while the others go on), and
//! the runtime's heap is capped at [`WorkerLimits::memory_bytes`]. A request that has
//! no response within [`WorkerLimits::request_timeout`] (waiting included: a promise that
//! never settles) answers 504 and its task is dropped, as it is when its client goes away.
//!
//! Bodies are not read here: the request's body goes to JavaScript as a handle, and a
//! container's body comes back as one, so one that JavaScript passes on unread flows from
//! the client to the container, or from the container to the client, as it comes, in
//! bounded memory (see [`super::bodies`]). Only what has arrived of a small one with its
//! head is taken ahead (see `bindings::reply`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body as _;
use tokio::sync::oneshot;

use super::class_hooks::{HookCall, ObjectCall};
use super::host::{self, Call, Job, Reply};
use super::lanes::{Lane, Lanes};
use super::sockets::Answered;
use super::upgrade::{Upgrades, TOKEN_HEADER};
use super::ScriptError;
use crate::http::{error_response, Body};
use crate::manifest::WorkerScript;
use crate::worker::{Env, Worker};

/// How a worker runs: how much JavaScript it may run, and what its failures show.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLimits {
    /// JavaScript running time per request (time spent waiting does not count).
    pub cpu: Duration,
    /// Memory of each JavaScript heap.
    pub memory_bytes: usize,
    /// JavaScript runtimes (threads) per worker, each with the module loaded afresh.
    pub runtimes: usize,
    /// How long a request may take until the worker's response (its headers) is ready,
    /// waiting included: a fetch whose promise never settles would otherwise hold its
    /// client forever. Past it the client gets 504 and the request's task is dropped.
    pub request_timeout: Duration,
    /// Whether a failed request's 500 carries the error and its stack, for the developer
    /// (`berth dev`), or only says that the worker failed (`berth serve`, where the
    /// stack is for the log: it shows the code's insides to any client).
    pub errors: ErrorDetail,
}

/// What a failed request's answer shows (see [`WorkerLimits::errors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDetail {
    Shown,
    Logged,
}

impl Default for WorkerLimits {
    /// 5 s and 128 MiB: a request that runs JavaScript for 5 s is stuck, not busy; two
    /// runtimes, so that one stuck request does not hold up the others; 100 s for the
    /// whole request, as a container class's `request_timeout` (and Cloudflare's).
    fn default() -> WorkerLimits {
        WorkerLimits {
            cpu: Duration::from_secs(5),
            memory_bytes: 128 << 20,
            runtimes: 2,
            request_timeout: Duration::from_secs(100),
            errors: ErrorDetail::Shown,
        }
    }
}

/// A worker whose `fetch` is JavaScript. Dropping it ends its threads (their runtimes
/// are leaked, see `host::run`).
pub struct JsWorker {
    name: String,
    lanes: Lanes,
    upgrades: Upgrades,
    request_timeout: Duration,
    errors: ErrorDetail,
    /// The exported container classes with a `fetch` of their own.
    own_fetch: BTreeSet<String>,
}

impl JsWorker {
    /// Starts worker `name`: loads `script.entrypoint` (and what it imports) in a new
    /// runtime, with `env`'s bindings and `script.vars` as its `env`. Fails as loading
    /// the module fails (syntax, imports, a throw, no `fetch`).
    pub async fn start(
        name: &str,
        script: &WorkerScript,
        env: Env,
        limits: WorkerLimits,
    ) -> Result<JsWorker, ScriptError> {
        let upgrades = Upgrades::default();
        let setup = host::Setup {
            entrypoint: script.entrypoint.clone(),
            vars: script.vars.clone(),
            json_vars: script.json_vars.clone(),
            crons: !script.crons.is_empty(),
            env,
            limits,
            main: tokio::runtime::Handle::current(),
            meter: Meter::default(),
            upgrades: upgrades.clone(),
        };
        let (lanes, own_fetch) = Lanes::start(name, setup, limits.runtimes).await?;
        Ok(JsWorker {
            name: name.to_string(),
            lanes,
            upgrades,
            request_timeout: limits.request_timeout,
            errors: limits.errors,
            own_fetch,
        })
    }

    /// Runs the worker's `scheduled` handler for a tick of `cron` due at `at`, waiting
    /// at most 15 minutes (Cloudflare's limit for a cron trigger); why it failed
    /// otherwise.
    pub(super) async fn scheduled(
        &self,
        cron: &crate::cron::Cron,
        at: std::time::SystemTime,
    ) -> Result<(), String> {
        let Some(lane) = self.lanes.any() else {
            return Err(format!("worker {} has no JavaScript runtime", self.name));
        };
        let (reply, answer) = oneshot::channel();
        let tick = host::Tick {
            cron: cron.to_string(),
            time_ms: crate::cron::to_ms(at),
            reply,
        };
        let _flight = lane.enter();
        if !lane.send(Job::Scheduled(tick)) {
            return Err(format!(
                "worker {}: its JavaScript thread has ended",
                self.name
            ));
        }
        let wait = super::class_hooks::ALARM_WAIT;
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(ran)) => {
                ran.map_err(|e| format!("worker {}'s scheduled handler failed: {e}", self.name))
            }
            Ok(Err(_)) => Err(format!(
                "worker {}: its JavaScript thread ended during the tick",
                self.name
            )),
            Err(_) => Err(format!(
                "worker {}'s scheduled handler had not settled after {wait:?}",
                self.name
            )),
        }
    }

    /// Whether the worker exports container class `class` with a `fetch` of its own.
    pub(super) fn has_own_fetch(&self, class: &str) -> bool {
        self.own_fetch.contains(class)
    }
}

impl JsWorker {
    /// Queues a hook on the lane of its object. False if the lane's thread has ended.
    pub(super) fn hook(&self, call: HookCall) -> bool {
        match self.lanes.of_object(&call.id) {
            Some(lane) => lane.send(Job::Hook(call)),
            None => false,
        }
    }

    /// Answers `request` with the own `fetch` of the class of `object`, on the object's
    /// lane.
    pub(super) async fn fetch_object(
        &self,
        request: Request<Body>,
        object: ObjectCall,
    ) -> Response<Body> {
        self.dispatch(request, Some(object)).await
    }
}

#[async_trait]
impl Worker for JsWorker {
    async fn fetch(&self, request: Request<Body>, _env: &Env) -> Response<Body> {
        self.dispatch(request, None).await
    }
}

impl JsWorker {
    /// Runs `request` through the worker's `fetch`, or through the own `fetch` of the
    /// class of `object`.
    async fn dispatch(&self, request: Request<Body>, object: Option<ObjectCall>) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        let token = crate::proxy::is_upgrade(&parts.headers).then(|| {
            self.upgrades
                .park_request(std::mem::take(&mut parts.extensions))
        });
        // The body stays here, unread, until JavaScript reads it or sends it on.
        let has_body = !matches!(parts.method, Method::GET | Method::HEAD) && !body.is_end_stream();
        let body = has_body.then_some(body);
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("http://{host}{path}");
        let key = parts.headers.get(http::header::SEC_WEBSOCKET_KEY).cloned();
        let mut headers = std::mem::take(&mut parts.headers);
        // Only berth sets it: a client's would name another client's parked upgrade.
        headers.remove(TOKEN_HEADER);
        if let Some(token) = token {
            headers.insert(TOKEN_HEADER, http::HeaderValue::from(token));
        }
        let (reply, answer) = oneshot::channel();
        let lane = match &object {
            Some(object) => self.lanes.of_object(&object.id),
            None => self.lanes.any(),
        };
        // Held while the answer is awaited; dropped with this future, it tells the
        // request's task that nobody waits any more.
        let (_waiting, abandoned) = oneshot::channel::<()>();
        let call = Call {
            method: parts.method.to_string(),
            url,
            headers,
            body,
            object,
            reply,
            abandoned,
        };
        let answered = self.call(lane, call, answer).await;
        let pair = answered.extensions().get::<Answered>().is_some();
        let Some(token) = token else {
            if pair {
                let message = "its fetch answered a WebSocket (a WebSocketPair's end) to a request that asked for none; answer with it only a request whose Upgrade is websocket";
                return failure(&self.name, self.errors, message);
            }
            return answered;
        };
        if pair {
            let client = self.upgrades.take_request(token).unwrap_or_default();
            self.upgrades.forget(token);
            return super::sockets::answer(answered, client, key.as_ref()).unwrap_or_else(|| {
                let message = "its fetch answered a WebSocket to a request without Sec-WebSocket-Key, or answered with the same WebSocketPair twice";
                failure(&self.name, self.errors, message)
            });
        }
        // The worker passed the container's 101 on: answer with it, so the proxy tunnels.
        let upgraded = answered.status() == StatusCode::SWITCHING_PROTOCOLS
            && answered
                .headers()
                .get(TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                == Some(token.to_string().as_str());
        let parked = upgraded
            .then(|| self.upgrades.take_response(token))
            .flatten();
        self.upgrades.forget(token);
        parked.unwrap_or(answered)
    }

    /// Queues `call` on `lane` and waits for its answer.
    async fn call(
        &self,
        lane: Option<Arc<Lane>>,
        call: Call,
        answer: oneshot::Receiver<Result<Reply, String>>,
    ) -> Response<Body> {
        let Some(lane) = lane else {
            return failure(&self.name, self.errors, "it has no JavaScript runtime");
        };
        let _flight = lane.enter();
        if !lane.send(Job::Fetch(call)) {
            return failure(&self.name, self.errors, "its JavaScript thread has ended");
        }
        // Past the timeout, or when the client goes away, `dispatch` ends, and with it
        // the sender whose end drops the request's task on its thread (`abandoned`).
        let Ok(answered) = tokio::time::timeout(self.request_timeout, answer).await else {
            let message = format!(
                "worker {} did not answer within {:?}; answer sooner (stream the answer, or answer at once and work in the background), or make sure every promise its fetch awaits settles",
                self.name, self.request_timeout
            );
            tracing::warn!(target: "berth::js", "{message}");
            return error_response(StatusCode::GATEWAY_TIMEOUT, "request-timeout", &message);
        };
        match answered {
            Ok(Ok(reply)) => match StatusCode::from_u16(reply.status) {
                Ok(status) => response(status, reply),
                Err(_) => {
                    let message = format!(
                        "its fetch answered status {}, which is no HTTP status (100 to 999)",
                        reply.status
                    );
                    failure(&self.name, self.errors, &message)
                }
            },
            Ok(Err(message)) => failure(&self.name, self.errors, &message),
            Err(_) => failure(
                &self.name,
                self.errors,
                "its JavaScript thread ended during the request",
            ),
        }
    }
}

/// The worker's answer as a response; headers HTTP cannot carry are left out. The Rust
/// side of a `WebSocketPair` it answered with goes along, for `dispatch`.
fn response(status: StatusCode, reply: Reply) -> Response<Body> {
    let mut response = Response::new(reply.body);
    *response.status_mut() = status;
    *response.headers_mut() = reply.headers;
    if let Some(peer) = reply.socket {
        response.extensions_mut().insert(Answered::new(peer));
    }
    response
}

/// A 500 that says what failed in the worker (in `berth dev`, the stack is for the
/// developer).
fn failure(worker: &str, errors: ErrorDetail, message: &str) -> Response<Body> {
    tracing::error!(target: "berth::js", "worker {worker}: {message}");
    let text = match errors {
        ErrorDetail::Shown => format!("worker {worker} failed: {message}"),
        ErrorDetail::Logged => format!("worker {worker} failed; the server's log says why"),
    };
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "worker-exception", &text)
}

/// The deadline the interrupt handler checks while a task runs JavaScript, and whether
/// the runtime's timers are broken.
#[derive(Clone, Default)]
pub(super) struct Meter {
    deadline: Arc<Mutex<Option<Instant>>>,
    /// Set when a timer's callback was cut off: LLRT's timer loop ends on any error and
    /// never restarts, so no timer of the runtime fires again, and the worker sends new
    /// requests to its other runtimes.
    broken: Arc<AtomicBool>,
    /// Told when the timers break, or the lane goes.
    changed: Arc<tokio::sync::Notify>,
}

impl Meter {
    fn deadline(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether JavaScript runs right now.
    pub fn running(&self) -> bool {
        self.deadline().is_some()
    }

    /// Whether the JavaScript running now is past its deadline.
    pub fn over(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    pub fn break_timers(&self) {
        self.broken.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// The lane this meter is for is gone.
    pub fn dropped(&self) {
        self.changed.notify_one();
    }

    /// Waits until the timers break or the lane goes.
    pub async fn broken_or_dropped(&self) {
        self.changed.notified().await
    }

    pub fn broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Runs one poll of a task that has `left` to run.
    pub fn run<T>(&self, left: &mut Duration, poll: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        *self.deadline() = Some(start + *left);
        let result = poll();
        *self.deadline() = None;
        *left = left.saturating_sub(start.elapsed());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(response: Response<Body>) -> String {
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        String::from_utf8_lossy(&body.unwrap_or_default()).into_owned()
    }

    #[tokio::test]
    async fn a_failure_shows_its_stack_in_dev_and_only_logs_it_on_a_server() {
        let message = "Error: no key\n    at fetch (src/worker.ts:3:11)";
        let shown = failure("w", ErrorDetail::Shown, message);
        assert_eq!(shown.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(text(shown).await.contains("src/worker.ts:3:11"));
        let logged = failure("w", ErrorDetail::Logged, message);
        assert_eq!(logged.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = text(logged).await;
        assert!(
            !body.contains("worker.ts") && !body.contains("no key"),
            "{body}"
        );
        assert!(body.contains("worker w failed"), "{body}");
    }
}
