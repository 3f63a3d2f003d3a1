//! A worker's QuickJS runtimes, each on a thread of its own (a lane), and which lane a
//! request or an object's hook goes to.
//!
//! A lane whose timers broke (a timer's callback was cut off for its CPU budget, which
//! ends LLRT's timer loop for good, see [`Meter`]) is replaced by a fresh one, loaded
//! from the worker's entrypoint as at start: until then requests go to the other lanes,
//! and once it is replaced nothing of the worker waits for a timer that cannot fire. The
//! old lane serves what it already holds until that is done (at most the request
//! timeout), then its thread ends; its runtime is leaked (see `host::run`). What lived
//! only in the old runtime (module state, the instances of a class's objects) starts
//! afresh, as after a restart.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::host::{self, Job};
use super::serve::Meter;
use super::ScriptError;

/// A worker's lanes.
pub(super) struct Lanes {
    slots: Vec<Arc<Slot>>,
}

/// What a worker's lanes are made from.
struct Maker {
    /// The worker's name, for its threads and its log.
    name: String,
    /// Each lane gets a meter of its own.
    setup: host::Setup,
    /// berth's runtime, where lanes are watched and replacements loaded.
    main: Handle,
}

/// One place among a worker's lanes: the lane there now.
struct Slot {
    /// Its place, for the log.
    n: usize,
    lane: Mutex<Arc<Lane>>,
    /// Lanes that replaced a broken one here.
    replaced: AtomicUsize,
}

/// How many times one place is given a fresh lane. Each replaced runtime stays in memory
/// (see `host::run`), and code whose timers break every runtime it runs in (a
/// `setInterval` at the top of a module that runs for longer than its budget) would
/// otherwise replace them without end.
const REPLACEMENTS: usize = 3;

impl Slot {
    fn lane(&self) -> Arc<Lane> {
        self.lane.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One runtime of a worker, as the worker sees it.
pub(super) struct Lane {
    calls: mpsc::UnboundedSender<Job>,
    meter: Meter,
    in_flight: Arc<AtomicUsize>,
}

/// Counts a request in flight on a lane until dropped.
pub(super) struct Flight(Arc<AtomicUsize>);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// Starts `count` lanes of worker `name` from `setup`; with the exported container
    /// classes that have a `fetch` of their own.
    pub async fn start(
        name: &str,
        setup: host::Setup,
        count: usize,
    ) -> Result<(Lanes, BTreeSet<String>), ScriptError> {
        let maker = Arc::new(Maker {
            name: name.to_string(),
            main: setup.main.clone(),
            setup,
        });
        let mut slots = Vec::new();
        let mut own_fetch = BTreeSet::new();
        for n in 0..count.max(1) {
            let (lane, classes) = Lane::start(name, maker.setup.clone()).await?;
            let slot = Arc::new(Slot {
                n,
                lane: Mutex::new(Arc::new(lane)),
                replaced: AtomicUsize::new(0),
            });
            maker.watch(&slot);
            slots.push(slot);
            own_fetch.extend(classes);
        }
        Ok((Lanes { slots }, own_fetch))
    }

    /// The lane for the next request: one whose timers work and that is not running
    /// JavaScript right now, with the fewest requests in flight.
    pub fn any(&self) -> Option<Arc<Lane>> {
        let lanes = self.slots.iter().map(|slot| slot.lane());
        lanes.min_by_key(|lane| {
            (
                lane.meter.broken(),
                lane.meter.running(),
                lane.in_flight.load(Ordering::Relaxed),
            )
        })
    }

    /// The lane of object `id`: always the same place for one object, so that its hooks
    /// and its class's `fetch` share one JS instance of the class.
    pub fn of_object(&self, id: &str) -> Option<Arc<Lane>> {
        let hash = id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        let slot = self.slots.get(hash % self.slots.len().max(1))?;
        Some(slot.lane())
    }
}

impl Maker {
    /// Replaces the lane now in `slot` once its timers break; ends when that lane goes
    /// (its worker was dropped).
    fn watch(self: &Arc<Maker>, slot: &Arc<Slot>) {
        let (maker, weak) = (self.clone(), Arc::downgrade(slot));
        let meter = slot.lane().meter.clone();
        self.main.spawn(async move {
            meter.broken_or_dropped().await;
            match weak.upgrade() {
                Some(slot) if meter.broken() => maker.replace(slot).await,
                _ => {}
            }
        });
    }

    /// Loads a new lane into `slot`, and watches it; at most [`REPLACEMENTS`] times.
    async fn replace(self: Arc<Maker>, slot: Arc<Slot>) {
        let (name, n) = (&self.name, slot.n);
        if slot.replaced.fetch_add(1, Ordering::Relaxed) >= REPLACEMENTS {
            tracing::error!(target: "berth::js", "worker {name}: runtime {n} broke its timers again, after {REPLACEMENTS} fresh starts, so berth leaves it broken and sends requests to the worker's other runtimes; find the timer whose callback runs too long (a new version of the app starts afresh)");
            return;
        }
        match Lane::start(name, self.setup.clone()).await {
            Ok((lane, _)) => {
                *slot.lane.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(lane);
                self.watch(&slot);
                tracing::warn!(target: "berth::js", "worker {name}: runtime {n}, whose timers no longer fired, was replaced by a new one (its module state starts afresh)");
            }
            Err(e) => {
                tracing::error!(target: "berth::js", "worker {name}: runtime {n}, whose timers no longer fire, could not be replaced, so its requests go to the worker's other runtimes: {e}");
            }
        }
    }
}

impl Lane {
    /// A lane of its own thread, with `setup`'s worker loaded afresh.
    async fn start(name: &str, setup: host::Setup) -> Result<(Lane, Vec<String>), ScriptError> {
        let (calls, queue) = mpsc::unbounded_channel();
        let meter = Meter::default();
        let (ready, loaded) = oneshot::channel();
        let setup = host::Setup {
            meter: meter.clone(),
            ..setup
        };
        let entrypoint = setup.entrypoint.clone();
        let engine_error = |reason: String| ScriptError::Engine {
            path: entrypoint.clone(),
            reason,
        };
        std::thread::Builder::new()
            .name(format!("js-{name}"))
            .spawn(move || host::run(setup, queue, ready))
            .map_err(|e| engine_error(format!("cannot start the worker's thread: {e}")))?;
        let own_fetch = loaded
            .await
            .map_err(|_| engine_error("the worker's thread ended while loading".into()))??;
        let lane = Lane {
            calls,
            meter,
            in_flight: Arc::default(),
        };
        Ok((lane, own_fetch))
    }

    /// Queues `job`; false if the lane's thread has ended.
    pub fn send(&self, job: Job) -> bool {
        self.calls.send(job).is_ok()
    }

    /// Counts a request in flight on the lane until the result is dropped.
    pub fn enter(&self) -> Flight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Flight(self.in_flight.clone())
    }
}

impl Drop for Lane {
    /// Ends the lane's watch (see [`Maker::watch`]).
    fn drop(&mut self) {
        self.meter.dropped();
    }
}
