//! Hooks: the points where a class's own code runs in an object's lifecycle.
//!
//! Hooks run after the state change they report has been recorded, and never while the
//! object holds a lock, so they may call the object's methods (stop, start, state) without
//! deadlock. `on_stop` runs on the container's monitor task once it has been removed;
//! `on_start`, `on_activity_expired` and a failed start's `on_error` run on tasks of their
//! own, so that a slow hook never holds up the lifecycle. Each container's exit gives
//! exactly one `on_stop`.

use async_trait::async_trait;

use http::{Request, Response};

use super::{Alarm, Object, StartError};
use crate::http::Body;
use crate::lifecycle::StopReason;
use crate::runtime::ExitStatus;

/// What `on_stop` learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopParams {
    pub exit_code: i64,
    pub reason: StopReason,
}

/// An error reported to `on_error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObjectError {
    /// The container exited by itself with a non-zero code (or was killed for memory).
    #[error("container {status}; last log lines:\n{}", .logs.join("\n"))]
    Crashed {
        status: ExitStatus,
        logs: Vec<String>,
    },
    /// A start failed.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// What to do when the activity timeout expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Stop the container (SIGTERM, then SIGKILL after the grace period).
    Sleep,
    /// Keep it running for another `sleep_after`.
    KeepAwake,
}

/// A class's lifecycle hooks. Every method has a default, so implement only what you need.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// The container is healthy.
    async fn on_start(&self, _object: &Object) {}

    /// The container has stopped, for whatever reason. Called once per container.
    async fn on_stop(&self, _object: &Object, _params: StopParams) {}

    /// The container crashed, or a start failed.
    async fn on_error(&self, _object: &Object, _error: &ObjectError) {}

    /// The container was paused (`sleep_mode = "pause"`); `on_stop` comes only when it
    /// stops.
    async fn on_pause(&self, _object: &Object) {}

    /// `sleep_after` has passed with no request in flight. The default sleeps.
    async fn on_activity_expired(&self, _object: &Object) -> Expiry {
        Expiry::Sleep
    }

    /// An alarm of the object ([`Object::schedule`]) is due. An `Err` is retried, after
    /// 1 s, then twice as long each time, six times at most, as Cloudflare retries alarms.
    async fn on_alarm(&self, _object: &Object, _alarm: &Alarm) -> Result<(), String> {
        Ok(())
    }

    /// Whether the class answers requests with a `fetch` of its own ([`Hooks::fetch`]).
    /// Asked on every request, so it must be cheap.
    fn has_fetch(&self) -> bool {
        false
    }

    /// The class's own `fetch`, which [`Object::fetch`] calls instead of sending the
    /// request to the container, when [`Hooks::has_fetch`]: as on Cloudflare, a request
    /// for an object reaches its class first, which reaches the container itself (through
    /// [`Object::fetch_container`]) or answers on its own.
    async fn fetch(&self, object: &Object, request: Request<Body>) -> Response<Body> {
        object.fetch_container(request).await
    }

    /// A method of the class called on a stub (Cloudflare's RPC on Durable Objects):
    /// `args` and the answer are JSON; `Err` says why it failed.
    async fn call(&self, object: &Object, method: &str, _args: String) -> Result<String, String> {
        Err(format!(
            "{} has no method {method}: only a class of JavaScript code has methods to call",
            object.describe()
        ))
    }
}

/// Hooks that do nothing but the defaults.
pub struct NoHooks;

impl Hooks for NoHooks {}

impl Object {
    /// Calls `method` of the object's class with `args` (JSON), as a stub's RPC does on
    /// Cloudflare; its answer as JSON, or "" for none. On a cluster's router, in the
    /// object's one instance of the class, on its home.
    pub async fn call(&self, method: &str, args: String) -> Result<String, String> {
        if let Some((peers, home)) = self.elsewhere() {
            let what = super::home::Lifecycle::Call {
                method: method.to_string(),
                args,
            };
            return match self.at_home(&peers, home, &what).await {
                Ok((status, answer)) if status.is_success() => Ok(answer),
                Ok((_, message)) => Err(message),
                Err(e) => Err(format!(
                    "{}'s home, router {home}, did not answer: {e}",
                    self.describe()
                )),
            };
        }
        self.call_here(method, args).await
    }

    pub(super) async fn call_here(&self, method: &str, args: String) -> Result<String, String> {
        self.inner.class.hooks.call(self, method, args).await
    }
}
