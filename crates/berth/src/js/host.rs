//! The thread of one JS worker: its QuickJS runtime with the Web APIs (the LLRT modules),
//! berth's built-in modules and bindings, the loaded entrypoint, and the loop that turns
//! each queued request, or hook of a container class (see [`super::class_hooks`]), into a
//! task (see [`super::serve`] for why).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use rquickjs::prelude::Opt;
use rquickjs::{async_with, AsyncContext, AsyncRuntime, Ctx, Function, Module, Object, Value};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::bodies::{Pipes, RustBody};
use super::engine::{place, rewrite_stack};
use super::modules::Shared;
use super::serve::{Meter, WorkerLimits};
use super::turns::{Driver, Metered, Turns};
use super::upgrade::Upgrades;
use super::{bindings, builtins, messages, ScriptError, SourcePlace};
use crate::http::Body;
use crate::worker::Env;

/// What a thread needs to set up the worker.
#[derive(Clone)]
pub(super) struct Setup {
    pub entrypoint: PathBuf,
    pub vars: BTreeMap<String, String>,
    /// Those of `vars` that `env` holds parsed, as JSON.
    pub json_vars: std::collections::BTreeSet<String>,
    /// Whether the worker has cron triggers: then its module must export `scheduled`.
    pub crons: bool,
    pub env: Env,
    pub limits: WorkerLimits,
    /// berth's runtime, where container work runs.
    pub main: Handle,
    /// Shared with the worker, which sees from it whether JavaScript runs right now.
    pub meter: Meter,
    pub upgrades: Upgrades,
}

/// One request, as parts JavaScript can take; its body stays in Rust (see
/// [`super::bodies`]), `None` when it has none.
pub(super) struct Call {
    pub method: String,
    pub url: String,
    pub headers: http::HeaderMap,
    pub body: Option<Body>,
    /// The object whose class's own `fetch` answers, instead of the worker's.
    pub object: Option<super::class_hooks::ObjectCall>,
    pub reply: oneshot::Sender<Result<Reply, String>>,
    /// Ends (its sender is dropped) when nobody waits for the answer any more.
    pub abandoned: oneshot::Receiver<()>,
}

/// What a worker's thread is asked to run: a request, a hook of a container class, or a
/// tick of a cron trigger.
pub(super) enum Job {
    Fetch(Call),
    Hook(super::class_hooks::HookCall),
    Scheduled(Tick),
}

/// A tick of a worker's cron trigger, for its `scheduled` handler.
pub(super) struct Tick {
    pub cron: String,
    /// When it was due, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// The worker's response, as parts; its body is a container's passed on as it comes, or
/// the bytes JavaScript made.
pub(super) struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Body,
    /// The Rust side of the `WebSocketPair` whose client end the worker answered with.
    pub socket: Option<super::sockets::Peer>,
}

pub(super) struct Host {
    runtime: AsyncRuntime,
    pub(super) context: AsyncContext,
    pub(super) modules: Shared,
    meter: Meter,
    pub(super) limits: WorkerLimits,
    entrypoint: PathBuf,
    /// The exported container classes that have a `fetch` of their own.
    own_fetch: Vec<String>,
    /// The bodies its JavaScript is writing.
    pipes: Pipes,
    /// Its WebSockets, closed when it ends.
    sockets: super::sockets::Sockets,
}

/// The thread's body: sets the worker up, says so on `ready`, then serves `queue` until
/// the worker is dropped.
pub(super) fn run(
    setup: Setup,
    mut queue: mpsc::UnboundedReceiver<Job>,
    ready: oneshot::Sender<Result<Vec<String>, ScriptError>>,
) {
    let tokio = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(tokio) => tokio,
        Err(e) => {
            let _ = ready.send(Err(ScriptError::Engine {
                path: setup.entrypoint.clone(),
                reason: format!("cannot start the worker's event loop: {e}"),
            }));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&tokio, async move {
        let host = match Host::new(setup).await {
            Ok(host) => Rc::new(host),
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let _ = ready.send(Ok(host.own_fetch.clone()));
        // What runs outside a request's task (a timer's callback) gets the CPU budget of
        // a request at each turn.
        let cpu = host.limits.cpu;
        let meter = host.meter.clone();
        let driver = Driver::default();
        tokio::task::spawn_local(Turns {
            meter,
            cpu,
            task: Box::pin(host.runtime.drive()),
            driver: driver.clone(),
        });
        // QuickJS aborts the process when a runtime is freed while values are still held
        // (a request cut off mid-await holds some), so the runtime lives as long as berth.
        std::mem::forget(host.clone());
        // One per job still running: a lane that was replaced (see `super::lanes`) ends
        // once its jobs are done, not in their middle.
        let running = Rc::new(());
        while let Some(job) = queue.recv().await {
            let (host, driver, running) = (host.clone(), driver.clone(), running.clone());
            tokio::task::spawn_local(async move {
                let _running = running;
                match job {
                    Job::Fetch(call) => {
                        let parts = (call.method, call.url, call.headers, call.body);
                        let mut abandoned = call.abandoned;
                        // Nobody waits for the answer any more (the request timed out, or
                        // its client went away): the task is dropped where it stands.
                        // Not `reply.closed()`: the waker that leaves with the sender would
                        // wake this thread once more, for nothing, when the answer is taken.
                        tokio::select! {
                            served = host.serve(parts, call.object) => {
                                // Gone before the answer is, so that the waiting side's
                                // end wakes nobody here.
                                drop(abandoned);
                                let _ = call.reply.send(served);
                            }
                            _ = &mut abandoned => {}
                        }
                    }
                    Job::Hook(call) => host.hook(call).await,
                    // Run to its end even when nobody waits any more (a new version of
                    // the app replaced the trigger): a handler is not cut off mid-way.
                    Job::Scheduled(tick) => {
                        let ran = host.scheduled(tick.cron, tick.time_ms).await;
                        let _ = tick.reply.send(ran);
                    }
                }
                driver.wake();
            });
        }
        // As long as a request, or a schedule's method, may take.
        let longest = host.limits.request_timeout.max(super::class_hooks::ALARM_WAIT);
        let deadline = tokio::time::Instant::now() + longest;
        let busy = || Rc::strong_count(&running) > 1 || host.pipes.open() > 0;
        while busy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        host.pipes.end_all("the worker's runtime ended before the stream did (a new version of the app, or a replaced runtime, past its wait)");
        host.sockets.end_all();
    });
}

impl Host {
    async fn new(setup: Setup) -> Result<Host, ScriptError> {
        let engine_error = |e: rquickjs::Error| ScriptError::Engine {
            path: setup.entrypoint.clone(),
            reason: e.to_string(),
        };
        let runtime = AsyncRuntime::new().map_err(engine_error)?;
        runtime.set_memory_limit(setup.limits.memory_bytes).await;
        let meter = setup.meter;
        let over = meter.clone();
        runtime
            .set_interrupt_handler(Some(Box::new(move || over.over())))
            .await;
        runtime
            .set_host_promise_rejection_tracker(Some(Box::new(rejected)))
            .await;
        let modules = Shared::default();
        runtime
            .set_loader(modules.resolver(), modules.loader())
            .await;
        let context = AsyncContext::full(&runtime).await.map_err(engine_error)?;
        let mut host = Host {
            runtime,
            context,
            modules,
            meter,
            limits: setup.limits,
            entrypoint: setup.entrypoint,
            own_fetch: Vec::new(),
            pipes: Pipes::default(),
            sockets: super::sockets::Sockets::default(),
        };
        let (env, main, vars, upgrades) = (setup.env, setup.main, setup.vars, setup.upgrades);
        let crons = setup.crons;
        let json_vars = setup.json_vars;
        let bindings: Vec<String> = env.names().map(str::to_string).collect();
        let pipes = host.pipes.clone();
        let sockets = host.sockets.clone();
        let own_vars = vars.clone();
        let installed = async_with!(host.context => |ctx| {
            install(&ctx, (&env, &own_vars), &main, (&upgrades, &pipes, &sockets)).map_err(|e| thrown(&ctx, e))
        })
        .await;
        installed.map_err(|(message, _)| ScriptError::Engine {
            path: host.entrypoint.clone(),
            reason: message,
        })?;
        let path = host.entrypoint.to_string_lossy().into_owned();
        let context = host.context.clone();
        let loaded = host.metered(async_with!(context => |ctx| {
            let started = async {
                let namespace: Object = Module::import(&ctx, path.as_bytes())?.into_future().await?;
                let berth: Object = ctx.globals().get("__berth")?;
                let start: Function = berth.get("startWorker")?;
                let json: Vec<String> = json_vars.into_iter().collect();
                start.call::<_, Vec<String>>((namespace, path.as_str(), bindings, vars, crons, json))
            };
            started.await.map_err(|e| thrown(&ctx, e))
        }));
        let (loaded, left) = loaded.await;
        host.own_fetch = loaded.map_err(|failure| host.load_error(failure, left))?;
        Ok(host)
    }

    /// Why the entrypoint could not be loaded.
    fn load_error(&self, (message, stack): (String, String), left: Duration) -> ScriptError {
        if let Some(failure) = self.modules.take_failure() {
            return failure;
        }
        if left.is_zero() {
            return ScriptError::TimedOut {
                path: self.entrypoint.clone(),
                limit: self.limits.cpu,
            };
        }
        let at =
            place(&self.modules, &stack).unwrap_or_else(|| SourcePlace::file(&self.entrypoint));
        let message = super::packages::explain_commonjs(message, &at.path);
        ScriptError::Thrown { at, message }
    }

    /// Runs one request through the worker's fetch, or through the own `fetch` of the
    /// class of `object`.
    async fn serve(
        &self,
        (method, url, headers, body): (String, String, http::HeaderMap, Option<Body>),
        object: Option<super::class_hooks::ObjectCall>,
    ) -> Result<Reply, String> {
        let context = self.context.clone();
        let served = self.metered(async_with!(context => |ctx| {
            let served = async {
                let berth: Object = ctx.globals().get("__berth")?;
                let serve: Function = berth.get("serve")?;
                let request = messages::request(&ctx, &method, &url, &headers)?;
                let body = body.map(|body| RustBody::handle(&ctx, body)).transpose()?;
                let object = match object {
                    Some(object) => Some(object.to_js(&ctx)?),
                    None => None,
                };
                let promise: rquickjs::Promise = serve.call((request, body, object))?;
                let answer: Object = promise.into_future().await?;
                let peer: Option<rquickjs::Class<super::sockets::PeerHandle>> = answer.get("peer")?;
                let socket = match peer {
                    Some(peer) => Some(peer.borrow_mut().take().ok_or_else(|| {
                        rquickjs::Exception::throw_type(&ctx, "this WebSocketPair's client end was answered with already; make a new WebSocketPair for each WebSocket")
                    })?),
                    None => None,
                };
                Ok(Reply {
                    status: answer.get("status")?,
                    headers: messages::headers(&ctx, answer.get("headers")?)?,
                    body: bindings::outgoing(&ctx, answer.get("body")?)?,
                    socket,
                })
            };
            served.await.map_err(|e| thrown(&ctx, e))
        }));
        let (served, left) = served.await;
        // Promise jobs the response left behind (a `waitUntil`) run now, on the budget
        // of the next request.
        served.map_err(|(message, stack)| {
            if left.is_zero() {
                return format!("its fetch ran JavaScript for more than {:?}, so berth stopped it (does it loop forever?)", self.limits.cpu);
            }
            if message.contains("out of memory") {
                return format!("its fetch ran out of the worker's {} MiB of memory", self.limits.memory_bytes >> 20);
            }
            format!("{message}\n{}", rewrite_stack(&self.modules, &stack))
        })
    }

    /// Runs the worker's `scheduled` handler for a tick of `cron` due at `time_ms`.
    async fn scheduled(&self, cron: String, time_ms: i64) -> Result<(), String> {
        let context = self.context.clone();
        let ran = self.metered(async_with!(context => |ctx| {
            let ran = async {
                let berth: Object = ctx.globals().get("__berth")?;
                let scheduled: Function = berth.get("scheduled")?;
                let promise: rquickjs::Promise = scheduled.call((cron, time_ms as f64))?;
                promise.into_future::<()>().await
            };
            ran.await.map_err(|e| thrown(&ctx, e))
        }));
        let (ran, left) = ran.await;
        ran.map_err(|(message, stack)| {
            if left.is_zero() {
                return format!("its scheduled handler ran JavaScript for more than {:?}, so berth stopped it (does it loop forever?)", self.limits.cpu);
            }
            format!("{message}\n{}", rewrite_stack(&self.modules, &stack))
        })
    }

    /// `task`, with the JavaScript it runs counted against one request's CPU budget;
    /// gives the budget left with its result.
    pub(super) fn metered<F: Future>(&self, task: F) -> Metered<'_, F> {
        Metered {
            meter: &self.meter,
            left: self.limits.cpu,
            task: Box::pin(task),
        }
    }
}

/// Installs the globals of a worker: console and `__berth` (the prelude), the Web APIs,
/// the bindings, and the glue that serves requests.
fn install(
    ctx: &Ctx<'_>,
    (env, vars): (&Env, &BTreeMap<String, String>),
    main: &Handle,
    glue: (&Upgrades, &Pipes, &super::sockets::Sockets),
) -> rquickjs::Result<()> {
    let own = vars.iter().map(|(k, v)| (k.clone(), v.clone()));
    builtins::install(ctx, own)?;
    llrt_abort::init(ctx)?;
    llrt_buffer::init(ctx)?;
    llrt_url::init(ctx)?;
    llrt_util::init(ctx)?;
    llrt_stream_web::init(ctx)?;
    llrt_timers::init(ctx)?;
    llrt_fetch::init(ctx)?;
    llrt_crypto::init(ctx)?;
    llrt_events::init(ctx)?;
    install_structured_clone(ctx)?;
    bindings::install(ctx, env, main, glue)?;
    // Named, so that the glue's frames in a stack read as berth's, not the app's.
    let mut options = rquickjs::context::EvalOptions::default();
    options.filename = Some("berth:streams".into());
    ctx.eval_with_options::<(), _>(include_str!("builtins/streams.js"), options)?;
    let mut options = rquickjs::context::EvalOptions::default();
    options.filename = Some("berth:serve".into());
    ctx.eval_with_options::<(), _>(include_str!("builtins/serve.js"), options)?;
    let mut options = rquickjs::context::EvalOptions::default();
    options.filename = Some("berth:hooks".into());
    ctx.eval_with_options::<(), _>(include_str!("builtins/hooks.js"), options)
}

/// QuickJS's rejection tracker: tells serve.js (`__berth.rejected`) of a promise rejected
/// with no handler, or of a handler that came later; serve.js logs those left unhandled.
fn rejected<'js>(ctx: Ctx<'js>, promise: Value<'js>, reason: Value<'js>, handled: bool) {
    let tell = || {
        let berth: Object = ctx.globals().get("__berth")?;
        match berth.get::<_, Option<Function>>("rejected")? {
            Some(rejected) => rejected.call::<_, ()>((promise, reason, handled)),
            // While serve.js itself loads.
            None => Ok(()),
        }
    };
    if let Err(rquickjs::Error::Exception) = tell() {
        // Out of budget or memory as it ran: the rejection goes unlogged.
        let _ = ctx.catch();
    }
}

/// `structuredClone(value, options)`, as LLRT's utilities implement it.
fn install_structured_clone<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    // `structuredClone(value, undefined)` is `structuredClone(value)`.
    let clone = |ctx: Ctx<'js>, value: Value<'js>, options: Opt<Value<'js>>| {
        let options = options.0.and_then(|o| o.into_object());
        llrt_utils::clone::structured_clone(&ctx, value, Opt(options))
    };
    ctx.globals()
        .set("structuredClone", Function::new(ctx.clone(), clone)?)
}

/// A failure inside JavaScript as (message, stack), which can leave the runtime.
pub(super) fn thrown(ctx: &Ctx<'_>, error: rquickjs::Error) -> (String, String) {
    if !matches!(error, rquickjs::Error::Exception) {
        return (error.to_string(), String::new());
    }
    let value = ctx.catch();
    let Some(object) = value.as_object() else {
        let text = value
            .as_string()
            .and_then(|s| s.to_string().ok())
            .unwrap_or_else(|| value.type_name().to_string());
        return (format!("uncaught {text}"), String::new());
    };
    let text = |key: &str| object.get::<_, Option<String>>(key).ok().flatten();
    let message = match (text("name"), text("message")) {
        (Some(name), Some(message)) => format!("{name}: {message}"),
        (None, Some(message)) => message,
        _ => "an object that is not an Error was thrown".to_string(),
    };
    (message, text("stack").unwrap_or_default())
}
