//! The object: the single live owner of one id's container.
//!
//! An object runs its starts one at a time behind an async lock, so that concurrent first
//! requests share one start. Its container's [`live::Phase`] sits behind a short
//! synchronous lock, where requests count themselves in flight and the idle sleeper
//! decides to stop. Each running container has a monitor task (`monitor`) that notices
//! its exit at once, records it, removes the container and calls `on_stop` exactly once.
//!
//! One file per verb: `fetch`, `start`, `ready`, `stop`, `monitor`.

mod alarms;
mod error;
mod fetch;
mod home;
mod hooks;
mod instance;
mod live;
mod make;
mod monitor;
mod pause;
mod ready;
mod standby;
mod start;
mod stop;

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};

use tokio::sync::Semaphore;

use crate::activity::Activity;
use crate::class::ContainerClass;
use crate::context::AppContext;
use crate::event::{Event, EventKind};
use crate::id::ObjectId;
use crate::lifecycle::{State, StopReason};
use crate::metrics::{ClassLabels, Metrics};
use crate::runtime::{Runtime, RuntimeError, Selector, Signal};
use crate::store::{now_ms, ObjectRecord, Storage, StoreError};

pub use alarms::Alarm;
pub(crate) use alarms::LEASE as ALARM_LEASE;
pub use error::{ErrorKind, FetchError, Retry, Side, StartError};
pub use fetch::CLASS_PORT;
pub use home::Lifecycle;
pub use hooks::{Expiry, Hooks, NoHooks, ObjectError, StopParams};
use live::{Goal, Phase};
pub(crate) use standby::{keep as keep_standby, Standby};
pub use start::{StartOptions, StartTimings};

/// What the objects of one class share.
pub(crate) struct Class {
    /// The options (image included) new containers start with; a rebuild or a deployment
    /// replaces them, and containers of an older version are then replaced.
    pub(crate) current: RwLock<Arc<ClassVersion>>,
    /// The class's name, which no new version changes.
    pub(crate) name: String,
    /// A deployment removed the class: no container starts for it any more.
    pub(crate) retired: std::sync::atomic::AtomicBool,
    pub(crate) namespace_key: String,
    /// The class as metrics label it.
    pub(crate) labels: ClassLabels,
    pub(crate) app: Arc<AppContext>,
    pub(crate) hooks: Arc<dyn Hooks>,
    /// Told when an alarm is added, so that the class's alarm task looks again.
    pub(crate) alarms: Arc<tokio::sync::Notify>,
    /// The class's paused containers, with since when (`sleep_mode = "pause"`).
    pub(crate) paused: PausedList,
    /// One permit per running container, so `max_instances` holds under concurrency.
    pub(crate) limit: Arc<Semaphore>,
    /// Containers started and ready for objects that do not exist yet (`standby = N`).
    pub(crate) standby: Standby,
}

/// The paused containers of a class: since when, whose, and which.
pub(crate) type PausedList =
    std::sync::Mutex<Vec<(tokio::time::Instant, WeakObject, Arc<instance::Instance>)>>;

impl Class {
    pub(crate) fn lock_paused(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(tokio::time::Instant, WeakObject, Arc<instance::Instance>)>>
    {
        self.paused.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One version of a class's options, with the digest that tells it from the others.
#[derive(Debug)]
pub(crate) struct ClassVersion {
    pub(crate) options: ContainerClass,
    pub(crate) version: String,
}

impl ClassVersion {
    pub(crate) fn new(options: ContainerClass) -> ClassVersion {
        ClassVersion {
            version: options.version(),
            options,
        }
    }
}

impl std::ops::Deref for ClassVersion {
    type Target = ContainerClass;
    fn deref(&self) -> &ContainerClass {
        &self.options
    }
}

impl Class {
    pub(crate) fn current(&self) -> Arc<ClassVersion> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn image(&self) -> String {
        self.current().image.clone()
    }

    /// Makes new containers start with `options` (whose name must stay the class's).
    /// A higher `max_instances` holds at once. A lower one takes the free slots at once
    /// and the others as running containers stop, which keep running until then.
    pub(crate) fn set_options(&self, mut options: ContainerClass) {
        options.name = self.name.clone();
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let (old, new) = (current.max_instances, options.max_instances);
        if new > old {
            self.limit.add_permits(new - old);
        } else if new < old {
            let free = self.limit.forget_permits(old - new);
            let owed = u32::try_from(old - new - free).unwrap_or(u32::MAX);
            if owed > 0 {
                let limit = self.limit.clone();
                self.app.spawn(async move {
                    if let Ok(permits) = limit.acquire_many_owned(owed).await {
                        permits.forget();
                    }
                });
            }
        }
        *current = Arc::new(ClassVersion::new(options));
        // The standby pool follows: spares of the old version go, new ones come.
        self.standby.wake.notify_one();
    }
}

/// A handle on one live object. Cheap to clone; clones are the same object.
#[derive(Clone)]
pub struct Object {
    inner: Arc<Inner>,
}

struct Inner {
    class: Arc<Class>,
    id: ObjectId,
    name: OnceLock<String>,
    phase: Mutex<Phase>,
    activity: Arc<Activity>,
    /// Held for the whole of a start (and while the store is first read).
    starts: Arc<tokio::sync::Mutex<Attempts>>,
    /// Told when a start ends, however it ended, to wake everyone who waits for it.
    start_ended: tokio::sync::Notify,
    /// The number of the last start that finished, so that callers who queued behind a
    /// failed start get its error instead of starting again.
    finished_attempts: AtomicU64,
    /// How many stops were asked for: a start under way compares it at each step, and
    /// gives up once it has changed.
    stops: AtomicU64,
    /// Writes to the store go one at a time, each with the state of its moment.
    persisting: tokio::sync::Mutex<()>,
    /// How the last start this process made went; `None` before one, and for a
    /// container adopted from an earlier process.
    last_start: Mutex<Option<StartTimings>>,
    /// Set for the objects of a `keep_warm` pool: their containers never sleep.
    kept_awake: std::sync::atomic::AtomicBool,
    /// When the object's state last changed, as the store recorded it or a lifecycle
    /// event since: Cloudflare's `getState().lastChange`.
    last_change: Mutex<std::time::SystemTime>,
    /// The `berth-object-id` and `berth-object-name` headers, made once.
    id_header: OnceLock<http::HeaderValue>,
    name_header: OnceLock<http::HeaderValue>,
}

#[derive(Default)]
struct Attempts {
    number: u64,
    last_failure: Option<(u64, Arc<StartError>)>,
}

/// A handle that does not keep its object alive: what the namespace indexes objects by,
/// so that an object nothing uses any more (no request, no start, no container) is freed.
#[derive(Clone)]
pub(crate) struct WeakObject(Weak<Inner>);

impl WeakObject {
    pub(crate) fn upgrade(&self) -> Option<Object> {
        self.0.upgrade().map(|inner| Object { inner })
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Object({})", self.describe())
    }
}

impl Object {
    /// A new object, which knows nothing until it first reads the store.
    pub(crate) fn new(class: Arc<Class>, id: ObjectId, name: Option<&str>) -> Object {
        let object = Object {
            inner: Arc::new(Inner {
                class,
                id,
                name: OnceLock::new(),
                phase: Mutex::new(Phase::Unloaded),
                activity: Activity::new(),
                starts: Arc::default(),
                start_ended: tokio::sync::Notify::new(),
                finished_attempts: AtomicU64::new(0),
                stops: AtomicU64::new(0),
                persisting: tokio::sync::Mutex::new(()),
                kept_awake: std::sync::atomic::AtomicBool::new(false),
                last_change: Mutex::new(std::time::SystemTime::now()),
                last_start: Mutex::new(None),
                id_header: OnceLock::new(),
                name_header: OnceLock::new(),
            }),
        };
        if let Some(name) = name {
            object.learn_name(name);
        }
        object
    }

    /// Remembers the name the object is addressed by; it is stored with the next state.
    pub(crate) fn learn_name(&self, name: &str) {
        if self.inner.name.get().is_none() {
            let _ = self.inner.name.set(name.to_string());
        }
    }

    pub(crate) fn downgrade(&self) -> WeakObject {
        WeakObject(Arc::downgrade(&self.inner))
    }

    pub fn id(&self) -> ObjectId {
        self.inner.id
    }

    /// The name the object was addressed by, if it was addressed by name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.get().map(String::as_str)
    }

    pub fn class_name(&self) -> &str {
        &self.inner.class.name
    }

    /// `MyContainer "alpha"`, or `MyContainer 1a2b3c4d5e6f` for an object known by id only.
    pub fn describe(&self) -> String {
        format!("{} {}", self.class_name(), self.label())
    }

    /// The object as events show it: its quoted name, or its short id.
    fn label(&self) -> String {
        match self.name() {
            Some(name) => format!("{:?}", truncate(name, 80)),
            None => self.inner.id.short(),
        }
    }

    /// The container's lifecycle state. The first call reads the store.
    pub async fn state(&self) -> Result<State, StoreError> {
        if matches!(*self.phase(), Phase::Unloaded) {
            let _starts = self.inner.starts.lock().await;
            self.load().await?;
        }
        Ok(self.phase().state())
    }

    /// When this object's state last changed: its last lifecycle event (a start, a
    /// stop, a crash…), else the store's record of it, else when it was made here.
    pub fn last_change(&self) -> std::time::SystemTime {
        *self.last_change_slot()
    }

    fn changed_at(&self, time: std::time::SystemTime) {
        *self.last_change_slot() = time;
    }

    fn last_change_slot(&self) -> MutexGuard<'_, std::time::SystemTime> {
        self.inner
            .last_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Never puts this object's containers to sleep, whatever the class's `sleep_after`:
    /// what a `keep_warm` pool asks of its objects.
    pub fn keep_awake(&self) {
        self.inner
            .kept_awake
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The idle time after which the container sleeps: the class's `sleep_after`, or
    /// never for an object kept awake.
    pub(crate) fn sleep_after(&self) -> std::time::Duration {
        if self
            .inner
            .kept_awake
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            crate::class::ContainerClass::NEVER
        } else {
            self.options().sleep_after
        }
    }

    /// The state of the container this object owns, as far as the object knows without
    /// the store; `None` when it owns none.
    pub fn container_state(&self) -> Option<State> {
        Some(self.phase().state()).filter(State::is_active)
    }

    /// Whether the object's class answers requests with a `fetch` of its own
    /// ([`Hooks::has_fetch`]), which [`Object::fetch`] goes through.
    pub fn has_class_fetch(&self) -> bool {
        self.inner.class.hooks.has_fetch()
    }

    /// Requests in flight through this object right now.
    pub fn in_flight(&self) -> u32 {
        self.inner.activity.in_flight()
    }

    /// The image the object's container runs, if it has one: after a rebuild or a
    /// deployment, until it is replaced, not the class's.
    pub fn running_image(&self) -> Option<String> {
        self.phase().instance().map(|i| i.image.clone())
    }

    /// How long the phases of the last start this process made took.
    pub fn last_start(&self) -> Option<StartTimings> {
        *self.last_start_lock()
    }

    fn keep_start_timings(&self, timings: Option<StartTimings>) {
        *self.last_start_lock() = timings;
    }

    /// The last start's container answered, `took` after the engine started it.
    fn keep_ready_time(&self, took: std::time::Duration) {
        if let Some(timings) = self.last_start_lock().as_mut() {
            timings.ready.get_or_insert(took);
        }
    }

    fn last_start_lock(&self) -> MutexGuard<'_, Option<StartTimings>> {
        self.inner
            .last_start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Pushes the idle deadline `sleep_after` into the future from now, here.
    pub fn renew_activity_timeout(&self) {
        self.inner.activity.renew();
    }

    /// The object's private durable storage.
    /// The store of the object's app.
    pub(crate) fn store(&self) -> &crate::store::Store {
        &self.inner.class.app.store
    }

    /// The name of the object's app.
    pub(crate) fn app_name(&self) -> &str {
        &self.inner.class.app.name
    }

    pub fn storage(&self) -> Storage {
        Storage::new(
            self.inner.class.app.store.clone(),
            &self.inner.class.namespace_key,
            self.inner.id,
        )
    }

    /// Starts the container if none runs, without waiting for its ports. On a cluster's
    /// router, the object's home does (see [`Lifecycle`]).
    pub async fn start(&self, options: StartOptions) -> Result<(), Arc<StartError>> {
        if let Some((peers, home)) = self.elsewhere() {
            let what = Lifecycle::start(false, &[], options);
            return self.start_at_home(&peers, home, what).await;
        }
        self.start_here(options).await
    }

    async fn start_here(&self, options: StartOptions) -> Result<(), Arc<StartError>> {
        self.ensure(Goal::Started, Some(&options)).await
    }

    /// Starts the container if none runs and waits until `ports` accept connections
    /// (the class's ports when empty). On a cluster's router, the object's home does.
    pub async fn start_and_wait_for_ports(
        &self,
        ports: &[u16],
        options: StartOptions,
    ) -> Result<(), Arc<StartError>> {
        if let Some((peers, home)) = self.elsewhere() {
            let what = Lifecycle::start(true, ports, options);
            return self.start_at_home(&peers, home, what).await;
        }
        self.start_and_wait_here(ports, options).await
    }

    async fn start_and_wait_here(
        &self,
        ports: &[u16],
        options: StartOptions,
    ) -> Result<(), Arc<StartError>> {
        let goal = if ports.is_empty() {
            Goal::Healthy
        } else {
            Goal::Ports(ports.to_vec())
        };
        self.ensure(goal, Some(&options)).await
    }

    /// Sends `signal` to the container, SIGKILLs it after the class's grace period, and
    /// returns once it has exited and been removed. A start under way ends at its next
    /// step, and what it started is stopped too. On a cluster's router, the object's home
    /// does (a SIGTERM stop, or a SIGKILL for `Signal::Kill`).
    pub async fn stop(&self, signal: Signal) -> Result<(), RuntimeError> {
        if let Some((peers, home)) = self.elsewhere() {
            let what = Lifecycle::Stop {
                kill: signal == Signal::Kill,
                signal: Some(signal.as_str().to_string()),
            };
            return self.stop_at_home(&peers, home, what).await;
        }
        self.stop_here(signal).await
    }

    async fn stop_here(&self, signal: Signal) -> Result<(), RuntimeError> {
        self.stop_with(StopReason::Requested, signal)
            .await
            .map(drop)
    }

    /// Kills and removes the container at once, and the object's volumes and kept logs
    /// with it. On a cluster's router, the object's home does.
    pub async fn destroy(&self) -> Result<(), RuntimeError> {
        if let Some((peers, home)) = self.elsewhere() {
            return self.stop_at_home(&peers, home, Lifecycle::Destroy).await;
        }
        self.destroy_here().await
    }

    async fn destroy_here(&self) -> Result<(), RuntimeError> {
        self.stop_with(StopReason::Destroyed, Signal::Kill).await?;
        // Whatever the class lists now: a volume of an earlier version goes too.
        let app = self.app();
        let selector = Selector::app(&app.name).object(self.inner.id);
        app.runtime
            .remove_volumes(&selector, app.store.owner())
            .await?;
        // A destroyed object is gone for good: so is what it wrote.
        if let Some(logbook) = app.logbook.get() {
            let id = self.inner.id.to_string();
            if let Err(e) = logbook.forget_object(&app.name, self.class_name(), &id) {
                tracing::warn!(object = %self.describe(), "{e}");
            }
        }
        Ok(())
    }

    /// Where to count what the object does, and its class's labels.
    fn metrics(&self) -> (&Metrics, &ClassLabels) {
        let class = &self.inner.class;
        (&class.app.metrics, &class.labels)
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.inner.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn app(&self) -> &Arc<AppContext> {
        &self.inner.class.app
    }

    fn runtime(&self) -> &dyn Runtime {
        self.app().runtime.as_ref()
    }

    fn options(&self) -> Arc<ClassVersion> {
        self.inner.class.current()
    }

    fn emit(&self, container_id: &str, kind: EventKind) {
        if kind.is_lifecycle() {
            self.changed_at(std::time::SystemTime::now());
        }
        self.app().emit(Event {
            class: self.class_name().to_string(),
            object: self.label(),
            container_id: container_id.to_string(),
            kind,
        });
    }

    /// Reads what the store recorded of this object, once. The caller holds `starts`.
    async fn load(&self) -> Result<(), StoreError> {
        if !matches!(*self.phase(), Phase::Unloaded) {
            return Ok(());
        }
        let record = self
            .app()
            .store
            .load_object(&self.inner.class.namespace_key, &self.inner.id.to_string())
            .await?;
        if let Some(name) = record.as_ref().and_then(|r| r.name.as_deref()) {
            self.learn_name(name);
        }
        if let Some(record) = &record {
            self.changed_at(crate::cron::from_ms(record.updated_at_ms));
        }
        self.phase().load(record.as_ref());
        Ok(())
    }

    /// Writes the current state to the store, on a task of its own, so that a caller who
    /// gives up cannot cut a write short or let a later one overtake it.
    async fn persist(&self) {
        let object = self.clone();
        let _ = self
            .app()
            .spawn(async move { object.write_state().await })
            .await;
    }

    /// Records the state without waiting for the store: each write takes the state of
    /// its own moment, so a later one never records an older state.
    fn persist_later(&self) {
        let object = self.clone();
        self.app().spawn(async move { object.write_state().await });
    }

    /// Writes go one at a time and each takes the state of its own moment, so the last
    /// write is always the latest state.
    async fn write_state(&self) {
        let _persisting = self.inner.persisting.lock().await;
        let record = {
            let phase = self.phase();
            if matches!(*phase, Phase::Unloaded) {
                return;
            }
            ObjectRecord {
                namespace: self.inner.class.namespace_key.clone(),
                id: self.inner.id.to_string(),
                name: self.name().map(str::to_string),
                state: phase.state(),
                container_id: phase.container_id().map(str::to_string),
                started_at_ms: phase.instance().map(|i| i.started_at_ms),
                updated_at_ms: now_ms(),
            }
        };
        if let Err(e) = self.app().store.save_object(record).await {
            tracing::warn!(object = %self.describe(), "could not record the state: {e}");
        }
    }
}

/// At most `max_chars` characters of `text`, with `…` if it was cut.
fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max_chars).collect();
    cut.push('…');
    cut
}
