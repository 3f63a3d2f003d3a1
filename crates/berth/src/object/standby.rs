//! The standby pool (`standby = N`): containers of a class started and ready before any
//! name needs them, so that the first request for a new name is served without a start.
//!
//! A spare is made with an id of its own and the `berth.standby` label, since its object
//! is not known yet and labels cannot change once a container exists. When an object
//! takes it, the store records whose it is, which is how a restarted berth finds it
//! again; requests tell the container which object they are for in headers (see
//! `fetch`). Each spare holds a permit of the class's `max_instances` from the moment its
//! start begins, and hands it to the object that takes it. The pool fills from the
//! class's first start on, so that a berth that just started (or a release that is only
//! staged) makes no container nobody asked for, and re-adopts its objects' containers
//! before spares take their slots.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::error::StartError;
use super::instance::Instance;
use super::make::Owner;
use super::ready::{not_ready, probe};
use super::start::StartTimings;
use super::Class;
use crate::event::{Event, EventKind};
use crate::id::IdScheme;
use crate::lifecycle::after;
use crate::proxy::Pool as Connections;
use crate::readiness;

/// The longest the pool's keeper sleeps at once, when nothing wakes it.
const NAP: Duration = Duration::from_secs(60);

/// The longest wait before trying again after spares failed to start one after another.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A class's spares, and what its keeper needs to know to keep them.
#[derive(Default)]
pub(crate) struct Standby {
    pool: Mutex<Pool>,
    /// Set by the class's first start: the pool fills from then on.
    opened: AtomicBool,
    /// Spares that failed to start, or exited, since the last one that became ready.
    failures: AtomicU32,
    /// When the last of them failed.
    failed_at: Mutex<Option<Instant>>,
    /// Wakes the keeper: a spare was taken, became ready or exited, or the class changed.
    pub(crate) wake: Arc<Notify>,
    /// Told when a spare is put in the pool or one removed is gone, for a start that
    /// waits for a spare or a slot.
    changed: Notify,
    /// Numbers the spares this process makes, for their ids.
    serial: AtomicU64,
}

/// The spares, and what changes with them, under one lock.
#[derive(Default)]
struct Pool {
    spares: Vec<Spare>,
    /// Spares being started right now.
    filling: usize,
    /// Spares being removed right now, whose permits come back once they are gone.
    removing: usize,
    /// Drained for good (a shutdown, a retirement): nothing is put in it any more.
    closed: bool,
}

/// A container started and ready, waiting for an object.
pub(super) struct Spare {
    pub(super) container_id: String,
    pub(super) container_name: String,
    pub(super) version: String,
    pub(super) image: String,
    /// Holds the connections the readiness check opened, for the first requests.
    pub(super) pool: Arc<Connections>,
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) timings: StartTimings,
    /// The task that notices the spare's exit while it waits in the pool.
    watch: Option<AbortHandle>,
}

impl Spare {
    fn stop_watching(&self) {
        if let Some(watch) = &self.watch {
            watch.abort();
        }
    }

    /// An instance of the spare, for the object that takes it, `now`.
    pub(super) fn into_instance(self, now: Instant) -> (Instance, OwnedSemaphorePermit) {
        self.stop_watching();
        let instance =
            Instance::with_pool(self.container_id, self.version, self.image, self.pool, now);
        instance.checked.store(true, Ordering::Release);
        (instance, self.permit)
    }
}

impl Standby {
    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many spares are ready now.
    pub(crate) fn ready(&self) -> usize {
        self.lock().spares.len()
    }

    /// Lets the pool fill, from the class's first start on.
    pub(super) fn open(&self) {
        if !self.opened.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    fn note_failure(&self) {
        self.failures.fetch_add(1, Ordering::AcqRel);
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn last_failure(&self) -> Option<Instant> {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready spare of `version`, if there is one; spares of other versions found on the
    /// way are removed.
    pub(super) fn take(&self, class: &Arc<Class>, version: &str) -> Option<Spare> {
        let (taken, stale) = {
            let mut pool = self.lock();
            let stale: Vec<Spare> = extract(&mut pool.spares, |s| s.version != version);
            pool.removing += stale.len();
            // The one that waited longest: it is the likeliest to have a warm cache.
            let taken = (!pool.spares.is_empty()).then(|| pool.spares.remove(0));
            (taken, stale)
        };
        for spare in stale {
            class.discard(spare);
        }
        self.wake.notify_one();
        taken
    }

    /// For a start that found neither a spare nor a free slot: a spare of `version` or a
    /// slot, as soon as a spare being started is ready or one being removed is gone, up
    /// to `deadline`. `None` when none is on its way.
    pub(super) async fn wait(
        &self,
        class: &Arc<Class>,
        version: &str,
        deadline: Instant,
    ) -> Option<Result<Spare, OwnedSemaphorePermit>> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(spare) = self.take(class, version) {
                return Some(Ok(spare));
            }
            if let Ok(permit) = class.limit.clone().try_acquire_owned() {
                return Some(Err(permit));
            }
            let on_its_way = {
                let pool = self.lock();
                pool.filling > 0 || pool.removing > 0
            };
            if !on_its_way || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Gives up a spare for the permit it holds, once its container is removed: for a
    /// start that cannot use a spare (one with options of its own) when the class is at
    /// `max_instances`.
    pub(super) async fn evict(&self, class: &Arc<Class>) -> Option<OwnedSemaphorePermit> {
        let spare = self.lock().spares.pop()?;
        Some(self.surrender(class, spare).await)
    }

    /// Removes a spare taken out of the pool and gives its permit.
    pub(super) async fn surrender(&self, class: &Class, spare: Spare) -> OwnedSemaphorePermit {
        spare.stop_watching();
        if let Err(e) = class.app.runtime.remove(&spare.container_id).await {
            tracing::warn!(
                "could not remove standby container {}: {e}",
                spare.container_id
            );
        }
        self.wake.notify_one();
        spare.permit
    }

    /// Removes every spare; once the class is out of service, none is put in any more.
    /// Returns how many there were.
    pub(crate) async fn drain(&self, class: &Arc<Class>) -> usize {
        let spares: Vec<Spare> = {
            let mut pool = self.lock();
            if !class.in_service() {
                pool.closed = true;
            }
            std::mem::take(&mut pool.spares)
        };
        let count = spares.len();
        let removals = spares.into_iter().map(|spare| class.remove_spare(spare));
        futures_util::future::join_all(removals).await;
        count
    }
}

/// Takes out of `spares` those that `pick` picks.
fn extract(spares: &mut Vec<Spare>, pick: impl Fn(&Spare) -> bool) -> Vec<Spare> {
    let mut picked = Vec::new();
    let mut i = 0;
    while i < spares.len() {
        if pick(&spares[i]) {
            picked.push(spares.remove(i));
        } else {
            i += 1;
        }
    }
    picked
}

/// What the keeper does next.
enum Step {
    /// Wait until woken, or a while.
    Nap,
    /// Wait this long (unless woken) before trying again.
    Backoff(Duration),
    /// Start one more spare, once a slot is free.
    Fill,
    /// The class is out of service.
    End,
}

/// Keeps the class's pool at `standby` for as long as the class is in service: until
/// the app closes or the class is retired, when it removes the spares and ends. It holds
/// the class only while it decides, never while it waits.
pub(crate) async fn keep(class: Weak<Class>, wake: Arc<Notify>) {
    loop {
        let (step, limit) = {
            let Some(class) = class.upgrade() else {
                return;
            };
            (class.next_step().await, class.limit.clone())
        };
        match step {
            Step::End => return,
            Step::Nap => {
                let _ = tokio::time::timeout(NAP, wake.notified()).await;
            }
            Step::Backoff(pause) => {
                let _ = tokio::time::timeout(pause, wake.notified()).await;
            }
            Step::Fill => {
                let permit = tokio::select! {
                    biased;
                    () = wake.notified() => None,
                    permit = limit.acquire_owned() => permit.ok(),
                };
                let (Some(permit), Some(class)) = (permit, class.upgrade()) else {
                    continue;
                };
                // Decided before the wait: a class that changed meanwhile decides again.
                if !matches!(class.next_step().await, Step::Fill) {
                    continue;
                }
                class.standby.lock().filling += 1;
                let filler = class.clone();
                class.app.spawn(async move { filler.fill(permit).await });
            }
        }
    }
}

impl Class {
    pub(super) fn in_service(&self) -> bool {
        !self.app.closing() && !self.retired.load(Ordering::Acquire)
    }

    /// Looks at the pool: removes spares of an old version and those beyond `standby`,
    /// and says what the keeper does next.
    async fn next_step(self: &Arc<Self>) -> Step {
        if !self.in_service() {
            self.standby.drain(self).await;
            return Step::End;
        }
        let current = self.current();
        let opened = self.standby.opened.load(Ordering::Acquire);
        // A volume belongs to one object: such a class keeps no spares, whatever it says
        // (manifests refuse it; this is for classes made in code).
        let want = if opened && current.volumes.is_empty() {
            current.standby.min(current.max_instances)
        } else {
            0
        };
        let (surplus, have) = {
            let mut pool = self.standby.lock();
            let mut surplus = extract(&mut pool.spares, |s| s.version != current.version);
            let keep = want.saturating_sub(pool.filling);
            while pool.spares.len() > keep {
                surplus.extend(pool.spares.pop());
            }
            pool.removing += surplus.len();
            (surplus, pool.spares.len() + pool.filling)
        };
        for spare in surplus {
            self.discard(spare);
        }
        if have >= want {
            return Step::Nap;
        }
        // Spares that keep failing are tried again ever more slowly: 2 s, 4 s … 60 s.
        let failures = self.standby.failures.load(Ordering::Acquire);
        let pause = Duration::from_secs(1 << failures.min(6)).min(MAX_BACKOFF);
        match self.standby.last_failure() {
            Some(at) if failures > 0 && at.elapsed() < pause => Step::Backoff(pause - at.elapsed()),
            _ => Step::Fill,
        }
    }

    /// Starts one spare, waits until it is ready, and puts it in the pool.
    async fn fill(self: Arc<Self>, permit: OwnedSemaphorePermit) {
        let _tracked = self.app.monitors.enter();
        let made = self.make_spare(permit).await;
        match made {
            Ok(spare) => {
                self.standby.failures.store(0, Ordering::Release);
                let unwanted = self.put(spare);
                if let Some(spare) = unwanted {
                    self.remove_spare(spare).await;
                }
            }
            Err(error) => {
                self.standby.lock().filling -= 1;
                self.standby.note_failure();
                // A spare cut short by a shutdown or a retirement failed for no fault of its own.
                if self.in_service() {
                    self.emit_standby(
                        "",
                        EventKind::Error {
                            message: error.to_string(),
                        },
                    );
                }
            }
        }
        self.standby.changed.notify_waiters();
        self.standby.wake.notify_one();
    }

    /// Puts a ready spare in the pool, if the pool still wants it; gives it back if not.
    /// Judged under the lock a drain takes, so that none is put in after it.
    fn put(self: &Arc<Self>, spare: Spare) -> Option<Spare> {
        let current = self.current();
        let mut pool = self.standby.lock();
        pool.filling -= 1;
        let wanted = !pool.closed
            && self.in_service()
            && spare.version == current.version
            && current.volumes.is_empty();
        if !wanted {
            return Some(spare);
        }
        // Watched from the moment it is in the pool: an exit before then is still seen,
        // since the engine reports a past exit at once.
        let watching = watch(Arc::downgrade(self), spare.container_id.clone());
        let mut spare = spare;
        spare.watch = Some(self.app.spawn(watching).abort_handle());
        pool.spares.push(spare);
        None
    }

    /// Makes a spare and waits until it is ready: a container that never is, is removed.
    /// A shutdown or a retirement ends the wait, so that it never holds up a shutdown.
    async fn make_spare(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Spare, StartError> {
        let who = format!("{} standby container", self.name);
        if !self.in_service() {
            return Err(StartError::ShuttingDown { object: who });
        }
        // An id no name gives: only the containers' labels and names ever show it.
        let serial = self.standby.serial.fetch_add(1, Ordering::AcqRel);
        let session = self.app.lease.id();
        let id =
            IdScheme::new(&self.namespace_key).for_name(&format!("\0standby-{session}-{serial}"));
        let owner = Owner {
            object_id: id,
            object_name: None,
            standby: true,
        };
        let spec = self.spec(&owner, None);
        let made = self.make(spec, &who).await?;
        let container_id = made.created.id.clone();
        let started_in = made.began.elapsed().saturating_sub(made.created_in);
        let pool = Arc::new(Connections::new(made.endpoint));
        let waited = Instant::now();
        let opts = self.current();
        let ports = opts.ready_ports();
        let ready = readiness::wait_until_ready(
            &pool,
            &ports,
            probe(&opts, pool.endpoint(), &ports),
            after(opts.port_ready_timeout),
        );
        let runtime = self.app.runtime.clone();
        let outcome = tokio::select! {
            ready = ready => ready.map_err(|why| not_ready(who.clone(), why, opts.port_ready_timeout)),
            () = self.out_of_service() => Err(StartError::ShuttingDown { object: who.clone() }),
            status = runtime.wait(&container_id) => Err(match status {
                Ok(status) => StartError::ExitedWhileStarting {
                    object: who.clone(),
                    status,
                    logs: Vec::new(),
                },
                Err(source) => StartError::Runtime { object: who.clone(), source },
            }),
        };
        if let Err(error) = outcome {
            if let Err(e) = self.app.runtime.remove(&container_id).await {
                tracing::warn!("could not remove standby container {container_id}: {e}");
            }
            return Err(error);
        }
        self.emit_standby(
            &container_id,
            EventKind::Standby {
                container_name: made.created.name.clone(),
                elapsed: made.began.elapsed(),
            },
        );
        Ok(Spare {
            container_id,
            container_name: made.created.name,
            version: made.version,
            image: made.image,
            pool,
            permit,
            timings: StartTimings {
                create: made.created_in,
                start: started_in,
                ready: Some(waited.elapsed()),
            },
            watch: None,
        })
    }

    /// Returns once the class is out of service.
    async fn out_of_service(&self) {
        while self.in_service() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes a spare on a task of its own (counted in `removing` by the caller); its
    /// permit is given back once it is gone.
    fn discard(self: &Arc<Self>, spare: Spare) {
        let class = self.clone();
        self.app.spawn(async move {
            class.remove_spare(spare).await;
            class.standby.lock().removing -= 1;
            class.standby.changed.notify_waiters();
        });
    }

    /// Removes a spare and gives its permit back, then tells whoever waits for a slot.
    async fn remove_spare(&self, spare: Spare) {
        drop(self.standby.surrender(self, spare).await);
        self.standby.changed.notify_waiters();
    }

    /// Events of the pool, which belongs to no object.
    fn emit_standby(&self, container_id: &str, kind: EventKind) {
        self.app.emit(Event {
            class: self.name.clone(),
            object: "standby".to_string(),
            container_id: container_id.to_string(),
            kind,
        });
    }
}

/// Waits for a spare's exit while it is in the pool, and then takes it out and removes it.
async fn watch(class: Weak<Class>, container_id: String) {
    let Some(runtime) = class.upgrade().map(|c| c.app.runtime.clone()) else {
        return;
    };
    let status = runtime.wait(&container_id).await;
    let Some(class) = class.upgrade() else {
        return;
    };
    let gone = extract(&mut class.standby.lock().spares, |s| {
        s.container_id == container_id
    });
    for spare in gone {
        let code = status.as_ref().map_or(-1, |s| s.code);
        class.emit_standby(
            &spare.container_id,
            EventKind::Error {
                message: format!(
                    "{} standby container {} exited with code {code} before any object took it",
                    class.name, spare.container_name
                ),
            },
        );
        class.standby.note_failure();
        // This task is the spare's watch: it must not abort itself before removing it.
        let mut spare = spare;
        spare.watch = None;
        class.remove_spare(spare).await;
    }
}

/// A class dropped without a shutdown or a retirement (an app given up on an error path)
/// still removes its spares, which no one else knows of.
impl Drop for Class {
    fn drop(&mut self) {
        let spares = std::mem::take(&mut self.standby.lock().spares);
        if spares.is_empty() {
            return;
        }
        let runtime = self.app.runtime.clone();
        let ids: Vec<String> = spares
            .iter()
            .map(|spare| {
                spare.stop_watching();
                spare.container_id.clone()
            })
            .collect();
        let removal = async move {
            for id in ids {
                if let Err(e) = runtime.remove(&id).await {
                    tracing::warn!("could not remove standby container {id}: {e}");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(removal);
            }
            Err(_) => tracing::warn!(
                "{} standby container(s) of {} are left running: no runtime to remove them on",
                spares.len(),
                self.name
            ),
        }
    }
}
