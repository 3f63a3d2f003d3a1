//! What the objects of one app share: its name and session, the engine, the store, the
//! event channel, and the count of container monitors still running.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::event::Event;
use crate::lease::Lease;
use crate::lifecycle::after;
use crate::logbook::Logbook;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::store::Store;

/// What the objects of one app share.
pub(crate) struct AppContext {
    pub(crate) name: String,
    /// This process's session, alive while the app is.
    pub(crate) lease: Lease,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) store: Store,
    pub(crate) events: tokio::sync::broadcast::Sender<Event>,
    pub(crate) monitors: Arc<Monitors>,
    /// Set when the app shuts down: no new container starts from then on.
    pub(crate) closing: AtomicBool,
    /// The runtime lifecycle tasks run on, whichever thread serves the request that
    /// starts them: a server thread may go away before the containers do.
    pub(crate) handle: Option<tokio::runtime::Handle>,
    /// Where the objects count what they do.
    pub(crate) metrics: Arc<Metrics>,
    /// Where the containers' output is kept, once the app is told (`App::keep_logs`).
    pub(crate) logbook: std::sync::OnceLock<Logbook>,
    /// Where alarms read the time (`App::use_clock`); the machine's clock by default.
    pub(crate) clock: std::sync::OnceLock<crate::cron::Clock>,
    /// The cluster's routers, when this berth is one of them (`App::use_peers`).
    pub(crate) peers: std::sync::OnceLock<Arc<crate::peers::Peers>>,
}

impl AppContext {
    pub(crate) fn clock(&self) -> crate::cron::Clock {
        self.clock
            .get()
            .copied()
            .unwrap_or(crate::cron::Clock::System)
    }

    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.handle {
            Some(handle) => handle.spawn(task),
            None => tokio::spawn(task),
        }
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Sends `event` to whoever listens; nobody listening is fine.
    pub(crate) fn emit(&self, event: Event) {
        tracing::debug!("{event}");
        let _ = self.events.send(event);
    }
}

/// Counts the monitors still running, so that a shutdown can wait for the last `on_stop`.
#[derive(Default)]
pub(crate) struct Monitors {
    running: AtomicUsize,
    settled: Notify,
}

impl Monitors {
    pub(crate) fn enter(self: &Arc<Self>) -> MonitorGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        MonitorGuard(self.clone())
    }

    /// Waits until no monitor runs, up to `limit`; returns whether none does.
    pub(crate) async fn settled(&self, limit: Duration) -> bool {
        let deadline = after(limit);
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// One running monitor; dropping it counts the monitor out.
pub(crate) struct MonitorGuard(Arc<Monitors>);

impl Drop for MonitorGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}
