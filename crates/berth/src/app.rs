//! An app: the objects of every class, one state store, one engine, one session.
//!
//! The session id labels every container this process starts, so that shutdown removes
//! exactly those. A later run removes or re-adopts the containers of sessions that are
//! provably dead (see `lease`), and leaves those of live sessions alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use crate::class::ContainerClass;
use crate::context::AppContext;
use crate::event::{Event, EventKind};
use crate::lease::{self, Lease, LeaseError, Liveness};
use crate::lifecycle::{State, StopReason};
use crate::logbook::Logbook;
use crate::metrics::{Census, ClassLabels, Metrics};
use crate::namespace::Namespace;
use crate::object::{Class, ClassVersion, Hooks};
use crate::runtime::{ContainerInfo, Runtime, RuntimeError, Selector};
use crate::store::{now_ms, Store, StoreError};

/// How long a shutdown waits for the hooks of stopped containers.
const HOOKS_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(30);

/// What [`App::recover`] did with containers left by earlier sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Still healthy, and now this session's.
    pub adopted: usize,
    /// Exited, unknown, stale, or on an old image: removed.
    pub removed: usize,
    /// Containers of other sessions that may still be alive, left alone.
    pub others: Vec<OtherSession>,
}

/// Another session of the same app that may be alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherSession {
    pub session: String,
    /// `true`: it runs on this machine; `false`: on another, which cannot be asked.
    pub here: bool,
    /// Its containers on this engine.
    pub containers: usize,
}

impl std::fmt::Display for OtherSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "session {} on {} ({} container(s))",
            self.session,
            if self.here {
                "this machine"
            } else {
                "another machine"
            },
            self.containers
        )
    }
}

/// A berth app. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct App {
    context: Arc<AppContext>,
    namespaces: Arc<Mutex<Vec<Namespace>>>,
    /// What the metrics ask at a scrape, for as long as the app lives.
    _census: Arc<dyn Census>,
}

/// The app's live objects, for the metrics (see [`Census`]).
struct Objects(Arc<Mutex<Vec<Namespace>>>);

impl Census for Objects {
    fn count(&self, count: &mut dyn FnMut(&ClassLabels, Option<&'static str>, u32)) {
        let namespaces = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for namespace in namespaces {
            let labels = namespace.labels();
            for object in namespace.objects() {
                let state = object.container_state().map(|s| s.as_str());
                count(labels, state, object.in_flight());
            }
            // The spares of its standby pool, ready for objects that do not exist yet.
            for _ in 0..namespace.standby_ready() {
                count(labels, Some("standby"), 0);
            }
        }
    }
}

impl App {
    /// An app called `name`, running containers on `runtime` and keeping state in `store`.
    /// Created inside a Tokio runtime, it runs its lifecycle tasks there. It takes a lease
    /// that tells other berth processes that its session is alive; that fails only if the
    /// operating system cannot give a random session id or the lease's folder is not
    /// writable.
    pub fn new(name: &str, runtime: Arc<dyn Runtime>, store: Store) -> Result<App, LeaseError> {
        App::with_metrics(name, runtime, store, Arc::default())
    }

    /// [`App::new`], counting into `metrics`, which a process's apps share.
    pub fn with_metrics(
        name: &str,
        runtime: Arc<dyn Runtime>,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<App, LeaseError> {
        let namespaces = Arc::new(Mutex::new(Vec::new()));
        let census: Arc<dyn Census> = Arc::new(Objects(Arc::clone(&namespaces)));
        metrics.watch(Arc::downgrade(&census));
        let context = Arc::new(AppContext {
            name: name.to_string(),
            lease: Lease::take(name)?,
            runtime,
            store,
            events: tokio::sync::broadcast::channel(1024).0,
            monitors: Arc::default(),
            closing: AtomicBool::new(false),
            handle: tokio::runtime::Handle::try_current().ok(),
            metrics,
            logbook: std::sync::OnceLock::new(),
            clock: std::sync::OnceLock::new(),
            peers: std::sync::OnceLock::new(),
        });
        report_refusals(&context);
        Ok(App {
            _census: census,
            context,
            namespaces,
        })
    }

    pub fn name(&self) -> &str {
        &self.context.name
    }

    /// Keeps what the app's containers write in `logbook`, from the next container
    /// started or re-adopted on; the first logbook given stays.
    pub fn keep_logs(&self, logbook: Logbook) {
        let _ = self.context.logbook.set(logbook);
    }

    /// Where the app's objects count what they do.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.context.metrics
    }

    /// The id of this process's session, which every container it starts carries.
    pub fn session(&self) -> &str {
        self.context.lease.id()
    }

    /// The other sessions of this app that may be alive: those on this machine whose
    /// process runs (with containers or not yet), and those on other machines that have
    /// containers on this engine.
    pub async fn other_sessions(&self) -> Result<Vec<OtherSession>, RuntimeError> {
        let mut others: Vec<OtherSession> = lease::live_sessions(self.name(), self.session())
            .into_iter()
            .map(|session| OtherSession {
                session,
                here: true,
                containers: 0,
            })
            .collect();
        let found = self
            .context
            .runtime
            .list(&Selector::app(self.name()))
            .await?;
        for info in &found {
            self.count_other(&mut others, info);
        }
        Ok(others)
    }

    /// Adds `info` to `others` if it belongs to another session that may be alive;
    /// returns whether it did.
    fn count_other(&self, others: &mut Vec<OtherSession>, info: &ContainerInfo) -> bool {
        let Some(identity) = &info.identity else {
            return false;
        };
        if identity.session == self.session() {
            return false;
        }
        let alive = lease::liveness(self.name(), &identity.session, &identity.host);
        if alive == Liveness::Dead {
            return false;
        }
        match others.iter_mut().find(|o| o.session == identity.session) {
            Some(other) => other.containers += 1,
            None => others.push(OtherSession {
                session: identity.session.clone(),
                here: alive == Liveness::Alive,
                containers: 1,
            }),
        }
        true
    }

    pub fn store(&self) -> &Store {
        &self.context.store
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.context.runtime
    }

    /// Lifecycle events of every object of the app, from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.context.events.subscribe()
    }

    /// The namespace of `class`, whose objects run its containers and call `hooks`.
    pub fn namespace(&self, class: ContainerClass, hooks: Arc<dyn Hooks>) -> Namespace {
        let namespace = Namespace::new(Arc::new(Class {
            namespace_key: format!("{}/{}", self.context.name, class.name),
            labels: ClassLabels {
                app: self.context.name.clone(),
                class: class.name.clone(),
            },
            limit: Arc::new(Semaphore::new(class.max_instances)),
            name: class.name.clone(),
            retired: AtomicBool::new(false),
            current: RwLock::new(Arc::new(ClassVersion::new(class))),
            app: self.context.clone(),
            hooks,
            alarms: Arc::default(),
            paused: Default::default(),
            standby: Default::default(),
        }));
        namespace.watch_alarms();
        namespace.keep_standby();
        namespace.keep_homes();
        self.lock().push(namespace.clone());
        namespace
    }

    /// Makes the app's alarms read the time from `clock`, instead of the machine's:
    /// [`Clock::tokio`](crate::cron::Clock::tokio) for tests with paused time. Call it
    /// before the first namespace; a later call changes nothing.
    pub fn use_clock(&self, clock: crate::cron::Clock) {
        let _ = self.context.clock.set(clock);
    }

    /// Makes the app one of a cluster's routers: each object's lifecycle runs on its home
    /// router, and a request for an object homed elsewhere is sent there (see
    /// [`crate::peers`]). Call it before the first request; a later call changes nothing.
    pub fn use_peers(&self, peers: std::sync::Arc<crate::peers::Peers>) {
        let _ = self.context.peers.set(peers);
    }

    /// Forgets `namespace` (a class a deployment removed), so that recovery and shutdown
    /// no longer visit it and a class of the same name can come back later.
    pub fn forget_namespace(&self, namespace: &Namespace) {
        self.lock().retain(|ns| !ns.same(namespace));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Namespace>> {
        self.namespaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every container this session started (SIGTERM, then SIGKILL after each
    /// class's grace period), waits for their `on_stop` hooks, then removes anything still
    /// labelled with this session. From its first moment no new container starts: a
    /// request that needs one gets a 503. Returns how many containers were stopped or
    /// removed.
    pub async fn shutdown(&self) -> Result<usize, RuntimeError> {
        self.context.closing.store(true, Ordering::SeqCst);
        let namespaces = self.lock().clone();
        let mut stopped = 0;
        for namespace in namespaces {
            stopped += namespace.stop_all(StopReason::Shutdown).await;
        }
        if !self.context.monitors.settled(HOOKS_AT_SHUTDOWN).await {
            tracing::warn!("some on_stop hooks were still running after {HOOKS_AT_SHUTDOWN:?}");
        }
        Ok(stopped + self.sweep().await?)
    }

    /// Lets go of the app and leaves its containers running, for the next berth process
    /// to re-adopt (`berth serve` restarting for an upgrade). From this moment no new
    /// container starts.
    pub fn detach(&self) {
        self.context.closing.store(true, Ordering::SeqCst);
    }

    /// Removes every container of this session at once, with no stop signal and no
    /// hooks: for a second Ctrl-C, when waiting is no longer wanted. Returns how many.
    pub async fn sweep(&self) -> Result<usize, RuntimeError> {
        self.context.closing.store(true, Ordering::SeqCst);
        let selector = Selector::app(self.name()).session(self.session());
        let found = self.context.runtime.list(&selector).await?;
        for info in &found {
            self.context.runtime.remove(&info.id).await?;
        }
        Ok(found.len())
    }

    /// Deals with the containers of this app left by sessions that have ended (a berth that
    /// was killed): a running one that its object still records, on the class's current
    /// image, that is still healthy, is re-adopted; every other one is removed. Containers
    /// of sessions that may still be alive are left alone and reported. Call it after
    /// creating the app's namespaces.
    pub async fn recover(&self) -> Result<Recovery, RuntimeError> {
        let found = self
            .context
            .runtime
            .list(&Selector::app(self.name()))
            .await?;
        let namespaces = self.lock().clone();
        let mut recovery = Recovery::default();
        for info in found {
            let identity = info.identity.as_ref();
            if identity.is_some_and(|i| i.session == self.session()) {
                continue;
            }
            if self.count_other(&mut recovery.others, &info) {
                continue;
            }
            // A spare of a standby pool is known by its container: its labels name no object.
            let owner = match identity {
                Some(i) if i.standby => self
                    .context
                    .store
                    .object_with_container(&info.id)
                    .await
                    .ok()
                    .flatten()
                    .map(|record| (record.namespace, record.id)),
                Some(i) => Some((
                    format!("{}/{}", self.name(), i.class),
                    i.object_id.to_string(),
                )),
                None => None,
            };
            let object = owner.and_then(|(key, id)| {
                let ns = namespaces.iter().find(|ns| ns.key() == key)?;
                Some(ns.get(ns.id_from_string(&id).ok()?))
            });
            let adopted = match object {
                Some(object) if info.running => object.readopt(&info.id).await,
                _ => false,
            };
            if adopted {
                recovery.adopted += 1;
                continue;
            }
            self.context.runtime.remove(&info.id).await?;
            if let Err(e) = self.context.store.forget_container(&info.id).await {
                tracing::warn!("{e}");
            }
            recovery.removed += 1;
        }
        Ok(recovery)
    }

    /// Every object the app has recorded, with its state checked against the engine.
    pub async fn objects(&self) -> Result<Vec<ObjectStatus>, StoreError> {
        list_objects(
            &self.context.store,
            Some(self.name()),
            Some(self.context.runtime.as_ref()),
        )
        .await
    }

    /// Each line the app's containers write, from the moment they start (or are
    /// re-adopted) until they stop, for as long as the receiver is kept.
    pub fn logs(&self) -> mpsc::Receiver<LogLine> {
        let (lines, receiver) = mpsc::channel(1024);
        let mut events = self.events();
        let runtime = self.context.runtime.clone();
        self.context.spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                if !matches!(
                    event.kind,
                    EventKind::Started { .. } | EventKind::Assigned { .. } | EventKind::Adopted
                ) {
                    continue;
                }
                if lines.is_closed() {
                    return;
                }
                let (runtime, lines) = (runtime.clone(), lines.clone());
                tokio::spawn(async move {
                    let (tx, mut rx) = mpsc::channel(256);
                    let id = event.container_id.clone();
                    // A container re-adopted shows what it writes from now on.
                    let since =
                        matches!(event.kind, EventKind::Adopted).then(std::time::SystemTime::now);
                    let follow =
                        tokio::spawn(async move { runtime.follow_logs(&id, since, tx).await });
                    while let Some(output) = rx.recv().await {
                        let line = LogLine {
                            class: event.class.clone(),
                            object: event.object.clone(),
                            line: output.line,
                        };
                        if lines.send(line).await.is_err() {
                            break;
                        }
                    }
                    follow.abort();
                });
            }
        });
        receiver
    }
}

/// One line a container wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub class: String,
    /// The object's quoted name, or its short id.
    pub object: String,
    pub line: String,
}

/// What `berth ps` shows of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectStatus {
    pub app: String,
    pub class: String,
    pub name: Option<String>,
    pub id: String,
    pub state: String,
    pub exit_code: Option<i64>,
    pub uptime_seconds: Option<u64>,
    pub container_id: Option<String>,
    /// The memory a paused container keeps, in bytes (`sleep_mode = "pause"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// Every object recorded in `store` (of `app` only, if given), and, with a `runtime` to
/// ask, the spares of standby pools as rows in state `standby`. A record of a running
/// container is only as good as the engine's word for it: with a `runtime`, containers
/// that no longer run are shown stopped. Records of several apps (an app renamed over the same state) are each
/// checked against their own app's containers.
pub async fn list_objects(
    store: &Store,
    app: Option<&str>,
    runtime: Option<&dyn Runtime>,
) -> Result<Vec<ObjectStatus>, StoreError> {
    let records = store.objects_of(app).await?;
    let mut running = std::collections::HashMap::new();
    let mut spares = Vec::new();
    if let Some(runtime) = runtime {
        let mut apps: Vec<String> = records
            .iter()
            .map(|r| app_of(&r.namespace).to_string())
            .chain(app.map(str::to_string))
            .collect();
        apps.sort();
        apps.dedup();
        let recorded: std::collections::HashSet<&str> = records
            .iter()
            .filter_map(|r| r.container_id.as_deref())
            .collect();
        for app in apps {
            let found = runtime.list(&Selector::app(&app)).await.ok();
            // Spares of a standby pool that no object took: no record names them.
            for c in found.iter().flatten() {
                if let Some(i) = c.identity.as_ref().filter(|i| i.standby && c.running) {
                    if !recorded.contains(c.id.as_str()) {
                        spares.push(ObjectStatus {
                            app: app.clone(),
                            class: i.class.clone(),
                            name: None,
                            id: i.object_id.to_string(),
                            state: "standby".to_string(),
                            exit_code: None,
                            uptime_seconds: None,
                            container_id: Some(c.id.clone()),
                            memory_bytes: None,
                        });
                    }
                }
            }
            let ids: Option<std::collections::HashSet<String>> = found.map(|found| {
                found
                    .into_iter()
                    .filter(|c| c.running)
                    .map(|c| c.id)
                    .collect()
            });
            running.insert(app, ids);
        }
    }
    let now = now_ms();
    let mut rows: Vec<ObjectStatus> = records
        .into_iter()
        .map(|r| {
            let app = app_of(&r.namespace);
            let gone = r.state.is_active()
                && running
                    .get(app)
                    .and_then(Option::as_ref)
                    .is_some_and(|ids| !r.container_id.as_ref().is_some_and(|id| ids.contains(id)));
            let state = if gone { State::Stopped } else { r.state };
            ObjectStatus {
                app: app.to_string(),
                class: r
                    .namespace
                    .split_once('/')
                    .map(|(_, c)| c.to_string())
                    .unwrap_or_else(|| r.namespace.clone()),
                name: r.name,
                id: r.id,
                state: state.as_str().to_string(),
                exit_code: state.exit_code(),
                uptime_seconds: state
                    .is_active()
                    .then_some(r.started_at_ms)
                    .flatten()
                    .map(|t| u64::try_from((now - t) / 1000).unwrap_or(0)),
                container_id: r.container_id.filter(|_| state.is_active()),
                memory_bytes: None,
            }
        })
        .collect();
    rows.extend(spares);
    // A paused container's memory stays allocated: show how much.
    if let Some(runtime) = runtime {
        for row in rows
            .iter_mut()
            .filter(|r| r.state == State::Paused.as_str())
        {
            if let Some(id) = &row.container_id {
                row.memory_bytes = runtime.memory(id).await.ok().flatten();
            }
        }
    }
    Ok(rows)
}

/// The app of a namespace key `"<app>/<class>"`: app names hold no `/`.
fn app_of(namespace: &str) -> &str {
    namespace.split_once('/').map_or(namespace, |(app, _)| app)
}

/// Turns the runtime's refusals of the app's containers' egress into events and counts,
/// for as long as the app lives.
fn report_refusals(context: &Arc<AppContext>) {
    let (Some(mut refusals), Some(handle)) =
        (context.runtime.egress_refusals(), context.handle.as_ref())
    else {
        return;
    };
    let app = Arc::downgrade(context);
    handle.spawn(async move {
        loop {
            let refusal = match refusals.recv().await {
                Ok(refusal) => refusal,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(context) = app.upgrade() else { return };
            let identity = refusal.identity;
            if identity.app != context.name {
                continue;
            }
            context.metrics.egress_denied(&ClassLabels {
                app: identity.app.clone(),
                class: identity.class.clone(),
            });
            context.emit(Event {
                object: identity
                    .object_name
                    .unwrap_or_else(|| identity.object_id.short()),
                class: identity.class,
                container_id: refusal.container_id,
                kind: EventKind::EgressDenied { host: refusal.host },
            });
        }
    });
}
