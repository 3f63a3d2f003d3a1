//! The standby pool (`standby = N`): containers of a class started and ready before any
//! name needs them, so that the first request for a new name is served without a start.
//!
//! A spare is made with an id of its own and the `berth.standby` label, since its object
//! is not known yet and labels cannot change once a container exists. When an object
//! takes it, the store records whose it is, which is how a restarted berth finds it
//! again; requests tell the container which object they are for in headers (see
//! `fetch`). Each spare holds a permit of the class's `max_instances` from the moment its
//! start begins, and hands it to the object that takes it.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
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
use crate::proxy::Pool;
use crate::readiness;

/// The longest the pool's keeper sleeps at once, when nothing wakes it.
const NAP: Duration = Duration::from_secs(60);

/// The longest wait before trying again after spares failed to start one after another.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A class's spares, and what its keeper needs to know to keep them.
#[derive(Default)]
pub(crate) struct Standby {
    spares: Mutex<Vec<Spare>>,
    /// Spares being started right now.
    filling: AtomicUsize,
    /// Spares that failed to start, or exited, since the last one that became ready.
    failures: AtomicU32,
    /// Wakes the keeper: a spare was taken, became ready or exited, or the class changed.
    pub(crate) wake: Arc<Notify>,
    /// Numbers the spares this process makes, for their ids.
    serial: AtomicU64,
}

/// A container started and ready, waiting for an object.
pub(super) struct Spare {
    pub(super) container_id: String,
    pub(super) container_name: String,
    pub(super) version: String,
    pub(super) image: String,
    /// Holds the connections the readiness check opened, for the first requests.
    pub(super) pool: Arc<Pool>,
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
    fn lock(&self) -> MutexGuard<'_, Vec<Spare>> {
        self.spares.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many spares are ready now.
    pub(crate) fn ready(&self) -> usize {
        self.lock().len()
    }

    /// A ready spare of `version`, if there is one; spares of other versions found on the
    /// way are removed.
    pub(super) fn take(&self, class: &Arc<Class>, version: &str) -> Option<Spare> {
        let (taken, stale) = {
            let mut spares = self.lock();
            let stale: Vec<Spare> = extract(&mut spares, |s| s.version != version);
            // The one that waited longest: it is the likeliest to have a warm cache.
            let taken = (!spares.is_empty()).then(|| spares.remove(0));
            (taken, stale)
        };
        for spare in stale {
            class.discard(spare);
        }
        self.wake.notify_one();
        taken
    }

    /// Gives up a spare for the permit it holds, once its container is removed: for a
    /// start that cannot use a spare (one with options of its own) when the class is at
    /// `max_instances`.
    pub(super) async fn evict(&self, class: &Arc<Class>) -> Option<OwnedSemaphorePermit> {
        let spare = {
            let mut spares = self.lock();
            spares.pop()?
        };
        spare.stop_watching();
        if let Err(e) = class.app.runtime.remove(&spare.container_id).await {
            tracing::warn!(
                "could not remove standby container {}: {e}",
                spare.container_id
            );
        }
        self.wake.notify_one();
        Some(spare.permit)
    }

    /// Removes every spare; returns how many there were.
    pub(crate) async fn drain(&self, class: &Arc<Class>) -> usize {
        let spares: Vec<Spare> = std::mem::take(&mut *self.lock());
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

/// Keeps the class's pool full for as long as the class is in service: until the app
/// closes or the class is retired, when it removes the spares and ends.
pub(crate) async fn keep(class: Weak<Class>, wake: Arc<Notify>) {
    loop {
        let Some(class) = class.upgrade() else {
            return;
        };
        if class.app.closing() || class.retired.load(Ordering::Acquire) {
            class.standby.drain(&class).await;
            return;
        }
        let current = class.current();
        let stale = extract(&mut class.standby.lock(), |s| s.version != current.version);
        for spare in stale {
            class.discard(spare);
        }
        let standby = &class.standby;
        let have = standby.ready() + standby.filling.load(Ordering::Acquire);
        if have >= current.standby {
            let _ = tokio::time::timeout(NAP, wake.notified()).await;
            continue;
        }
        // Spares that keep failing are tried again ever more slowly: 2 s, 4 s … 60 s.
        let failures = standby.failures.load(Ordering::Acquire);
        if failures > 0 {
            tokio::time::sleep(Duration::from_secs(1 << failures.min(6)).min(MAX_BACKOFF)).await;
        }
        // A permit of `max_instances`, unless something changes first.
        let permit = tokio::select! {
            permit = class.limit.clone().acquire_owned() => permit.ok(),
            _ = wake.notified() => None,
        };
        if let Some(permit) = permit {
            standby.filling.fetch_add(1, Ordering::AcqRel);
            let filler = class.clone();
            class.app.spawn(async move { filler.fill(permit).await });
        }
    }
}

impl Class {
    /// Starts one spare, waits until it is ready, and puts it in the pool.
    async fn fill(self: Arc<Self>, permit: OwnedSemaphorePermit) {
        let _tracked = self.app.monitors.enter();
        let made = self.make_spare(permit).await;
        self.standby.filling.fetch_sub(1, Ordering::AcqRel);
        match made {
            Ok(spare) => {
                self.standby.failures.store(0, Ordering::Release);
                let current = self.current().version.clone();
                let in_service = !self.app.closing() && !self.retired.load(Ordering::Acquire);
                if in_service && spare.version == current {
                    // Watched from the moment it is in the pool: an exit before then is
                    // still seen, since the engine reports a past exit at once.
                    let mut spares = self.standby.lock();
                    let watching = watch(Arc::downgrade(&self), spare.container_id.clone());
                    let mut spare = spare;
                    spare.watch = Some(self.app.spawn(watching).abort_handle());
                    spares.push(spare);
                } else {
                    self.remove_spare(spare).await;
                }
            }
            Err(error) => {
                self.standby.failures.fetch_add(1, Ordering::AcqRel);
                if !matches!(error, StartError::ShuttingDown { .. }) {
                    self.emit_standby(
                        "",
                        EventKind::Error {
                            message: error.to_string(),
                        },
                    );
                }
            }
        }
        self.standby.wake.notify_one();
    }

    /// Makes a spare and waits until it is ready: a container that never is, is removed.
    async fn make_spare(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Spare, StartError> {
        let who = format!("{} standby container", self.name);
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
        let pool = Arc::new(Pool::new(made.endpoint));
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

    /// Removes a spare on a task of its own; its permit is given back once it is gone.
    fn discard(self: &Arc<Self>, spare: Spare) {
        let class = self.clone();
        self.app
            .spawn(async move { class.remove_spare(spare).await });
    }

    async fn remove_spare(&self, spare: Spare) {
        spare.stop_watching();
        if let Err(e) = self.app.runtime.remove(&spare.container_id).await {
            tracing::warn!(
                "could not remove standby container {}: {e}",
                spare.container_id
            );
        }
        drop(spare.permit);
        self.standby.wake.notify_one();
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
    let gone = extract(&mut class.standby.lock(), |s| {
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
        class.standby.failures.fetch_add(1, Ordering::AcqRel);
        // This task is the spare's watch: it must not abort itself before removing it.
        if let Err(e) = class.app.runtime.remove(&spare.container_id).await {
            tracing::warn!(
                "could not remove standby container {}: {e}",
                spare.container_id
            );
        }
        drop(spare.permit);
        class.standby.wake.notify_one();
    }
}
