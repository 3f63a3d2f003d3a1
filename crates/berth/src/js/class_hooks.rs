//! A container class's own code: berth's lifecycle hooks ([`Hooks`]) call the
//! same-named methods (`onStart`, `onStop`, `onPause`, `onError`, `onActivityExpired`) of a JS
//! instance of the class, in a runtime of the worker whose entrypoint exports it.
//!
//! Each object's hooks go to one runtime of the worker (chosen by its id), which keeps
//! one instance of the class per object from its first hook to the end of `onStop`
//! (builtins/hooks.js): as on Cloudflare, fields set in `onStart` are there in `onStop`.
//! A hook runs on the CPU budget of a request, and berth waits for it at most
//! [`HOOK_WAIT`]: one that throws, loops or never settles is logged, and the lifecycle
//! goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use http::{Request, Response};
use rquickjs::{async_with, Function, Object as JsObject, Promise};
use tokio::sync::oneshot;

use super::engine::rewrite_stack;
use super::host::{thrown, Host};
use super::serve::JsWorker;
use crate::http::Body;
use crate::lifecycle::StopReason;
use crate::object::{Alarm, Expiry, Hooks, Object, ObjectError, StopParams};

/// How long berth waits for a hook's promise to settle before it goes on without it:
/// well inside the 30 s a shutdown gives hooks, even for an onStart followed by an onStop.
const HOOK_WAIT: Duration = Duration::from_secs(10);

/// How long a schedule's method may take: as long as a Cloudflare alarm handler (the
/// alarm's lease is renewed meanwhile, so no other delivery starts).
pub(super) const ALARM_WAIT: Duration = Duration::from_secs(15 * 60);

/// How long a method called on a stub may take, as a request may.
const CALL_WAIT: Duration = Duration::from_secs(100);

/// The object a request is for, when its class's own `fetch` answers it.
#[derive(Debug, Clone)]
pub(super) struct ObjectCall {
    pub class: String,
    /// The worker's binding of the class's namespace.
    pub binding: String,
    /// The object's id, in hex.
    pub id: String,
    pub name: Option<String>,
}

impl ObjectCall {
    /// `{ className, binding, id, name }`, as builtins/hooks.js takes it.
    pub(super) fn to_js<'js>(&self, ctx: &rquickjs::Ctx<'js>) -> rquickjs::Result<JsObject<'js>> {
        let object = JsObject::new(ctx.clone())?;
        object.set("className", self.class.as_str())?;
        object.set("binding", self.binding.as_str())?;
        object.set("id", self.id.as_str())?;
        object.set("name", self.name.as_deref())?;
        Ok(object)
    }
}

/// One hook call, as parts a worker's thread can take.
pub(super) struct HookCall {
    pub class: String,
    /// The worker's binding of the class's namespace, through which `ctx.storage` reaches
    /// the object.
    pub binding: String,
    /// The object's id, in hex.
    pub id: String,
    pub name: Option<String>,
    /// `onStart`, `onStop`, `onPause`, `onError` or `onActivityExpired`.
    pub hook: &'static str,
    /// The hook's argument, as JSON (`null` for none).
    pub arg: String,
    /// What the hook gave (`onActivityExpired`: "sleep" or "awake"), or why it failed.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// The hooks of a class declared in JavaScript. The worker is set once it has started
/// (namespaces, and so hooks, exist before it); hooks before that run no JavaScript.
pub struct JsHooks {
    class: String,
    /// The worker and its binding of the class. Weak: the worker's env holds the
    /// namespace, which holds these hooks.
    worker: Mutex<Option<(Weak<JsWorker>, String)>>,
    /// Whether the class has a `fetch` of its own, as the worker found when it loaded.
    own_fetch: AtomicBool,
}

impl JsHooks {
    pub fn new(class: &str) -> Arc<JsHooks> {
        Arc::new(JsHooks {
            class: class.to_string(),
            worker: Mutex::default(),
            own_fetch: AtomicBool::new(false),
        })
    }

    /// Runs the class's hooks in `worker`, whose entrypoint should export the class and
    /// which binds its namespace as `binding`.
    pub fn run_in(&self, worker: &Arc<JsWorker>, binding: &str) {
        let mut slot = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some((Arc::downgrade(worker), binding.to_string()));
        let own_fetch = worker.has_own_fetch(&self.class);
        self.own_fetch.store(own_fetch, Ordering::Relaxed);
    }

    /// The worker running the class's code, and its binding of the class.
    fn worker(&self) -> Option<(Arc<JsWorker>, String)> {
        let slot = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        let (worker, binding) = slot.as_ref()?;
        Some((worker.upgrade()?, binding.clone()))
    }

    /// Runs no more JavaScript: the class's code left the app (a deployment without it).
    pub fn detach(&self) {
        *self.worker.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Runs `hook` for `object` and waits (at most [`HOOK_WAIT`]) for what it gives;
    /// `None` when it failed, which is logged.
    async fn call(&self, object: &Object, hook: &'static str, arg: String) -> Option<String> {
        self.call_within(object, hook, arg, HOOK_WAIT).await.ok()
    }

    /// Runs `hook` for `object` and waits at most `wait` for what it gives; why it failed
    /// otherwise, which is logged.
    async fn call_within(
        &self,
        object: &Object,
        hook: &'static str,
        arg: String,
        wait: Duration,
    ) -> Result<String, String> {
        let Some((worker, binding)) = self.worker() else {
            return Err(format!(
                "class {} has no JavaScript worker to run its code (yet)",
                self.class
            ));
        };
        let (reply, answer) = oneshot::channel();
        let call = HookCall {
            class: self.class.clone(),
            binding,
            id: object.id().to_string(),
            name: object.name().map(str::to_string),
            hook,
            arg,
            reply,
        };
        let what = format!("{}.{hook}() of {}", self.class, object.describe());
        let failed = match worker.hook(call) {
            false => format!("{what} did not run: the worker's JavaScript thread has ended"),
            true => match tokio::time::timeout(wait, answer).await {
                Ok(Ok(Ok(value))) => return Ok(value),
                Ok(Ok(Err(message))) => format!("{what} failed: {message}"),
                Ok(Err(_)) => {
                    format!("{what} was cut off: the worker's JavaScript thread ended")
                }
                Err(_) => format!("{what} had not settled after {wait:?}; berth goes on without it (does it await something that never comes?)"),
            },
        };
        tracing::error!(target: "berth::js", "{failed}");
        Err(failed)
    }
}

#[async_trait]
impl Hooks for JsHooks {
    async fn on_start(&self, object: &Object) {
        self.call(object, "onStart", "null".into()).await;
    }

    async fn on_stop(&self, object: &Object, params: StopParams) {
        let arg = serde_json::json!({
            "exitCode": params.exit_code,
            "reason": reason(params.reason),
        });
        self.call(object, "onStop", arg.to_string()).await;
    }

    async fn call(&self, object: &Object, method: &str, args: String) -> Result<String, String> {
        let arg = serde_json::json!({ "method": method, "args": args });
        self.call_within(object, "call", arg.to_string(), CALL_WAIT)
            .await
    }

    async fn on_pause(&self, object: &Object) {
        self.call(object, "onPause", "null".into()).await;
    }

    async fn on_error(&self, object: &Object, error: &ObjectError) {
        let arg = serde_json::Value::String(error.to_string());
        self.call(object, "onError", arg.to_string()).await;
    }

    async fn on_activity_expired(&self, object: &Object) -> Expiry {
        match self.call(object, "onActivityExpired", "null".into()).await {
            Some(answer) if answer == "awake" => Expiry::KeepAwake,
            _ => Expiry::Sleep,
        }
    }

    /// A schedule of the class's code (`this.schedule`, see [`super::schedules`]): the
    /// method it names runs with its payload, for up to [`ALARM_WAIT`]. A method that
    /// throws is logged in JavaScript and the schedule is done, as on Cloudflare; what
    /// failed around it (no worker runs the class's code yet, its thread ended, the wait
    /// ran out) is retried as an alarm's failure is.
    async fn on_alarm(&self, object: &Object, alarm: &Alarm) -> Result<(), String> {
        let arg = super::schedules::alarm_json(alarm).to_string();
        self.call_within(object, "onAlarm", arg, ALARM_WAIT)
            .await
            .map(drop)
    }

    fn has_fetch(&self) -> bool {
        self.own_fetch.load(Ordering::Relaxed)
    }

    async fn fetch(&self, object: &Object, request: Request<Body>) -> Response<Body> {
        let Some((worker, binding)) = self.worker() else {
            return object.fetch_container(request).await;
        };
        let call = ObjectCall {
            class: self.class.clone(),
            binding,
            id: object.id().to_string(),
            name: object.name().map(str::to_string),
        };
        worker.fetch_object(request, call).await
    }
}

/// A stop's reason as Cloudflare's `onStop` names it: "exit" when the container
/// stopped by itself, "runtime_signal" when it was stopped.
fn reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::Exited | StopReason::StartFailed => "exit",
        _ => "runtime_signal",
    }
}

impl Host {
    /// Runs one hook (builtins/hooks.js) on the CPU budget of a request, and answers. A
    /// hook that berth stopped waiting for runs on to its end: JavaScript cannot be cut
    /// off mid-await. (A schedule delivered again meanwhile waits for it, see hooks.js.)
    pub(super) async fn hook(&self, call: HookCall) {
        let context = self.context.clone();
        let (class, binding, id) = (call.class, call.binding, call.id);
        let (name, hook, arg) = (call.name, call.hook, call.arg);
        let ran = self.metered(async_with!(context => |ctx| {
            let ran = async {
                let berth: JsObject = ctx.globals().get("__berth")?;
                let run: Function = berth.get("hook")?;
                let promise: Promise = run.call((class, binding, id, name, hook, arg))?;
                promise.into_future::<String>().await
            };
            ran.await.map_err(|e| thrown(&ctx, e))
        }));
        let (ran, left) = ran.await;
        let answer = ran.map_err(|(message, stack)| {
            if left.is_zero() {
                return format!("it ran JavaScript for more than {:?}, so berth stopped it (does it loop forever?)", self.limits.cpu);
            }
            format!("{message}\n{}", rewrite_stack(&self.modules, &stack))
        });
        let _ = call.reply.send(answer);
    }
}
