//! One container's life as its object sees it, from its start to its removal.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::{timeout, Instant};

use crate::activity::Activity;
use crate::lifecycle::StopReason;
use crate::proxy::Pool;
use crate::runtime::{Endpoint, ExitStatus};
use crate::store::now_ms;

/// A running container of an object: the only meaning of "instance" in berth.
pub(crate) struct Instance {
    pub(crate) container_id: String,
    /// The version of the class options it started with, to tell it from the class's
    /// current version after a rebuild or a deployment.
    pub(crate) version: String,
    /// The image it runs, which after a rebuild or a deployment may no longer be the
    /// class's.
    pub(crate) image: String,
    /// The requests forwarded to it, so that a replacement can let them finish first.
    pub(crate) serving: Arc<Activity>,
    pub(crate) started_at: Instant,
    /// The same moment on the wall clock, for the store and `berth ps`.
    pub(crate) started_at_ms: i64,
    /// Keep-alive connections to this container; it knows how to reach it.
    pub(crate) pool: Arc<Pool>,
    /// Tells the monitor that the container became healthy, to run `on_start`.
    pub(crate) healthy: Notify,
    pub(crate) became_healthy: AtomicBool,
    /// Set for a spare of the standby pool, which passed the class's readiness checks
    /// before an object took it: the object's first wait for it need not ask again.
    pub(crate) checked: AtomicBool,
    /// Tells the monitor to look at its deadlines again.
    pub(crate) wake: Notify,
    /// Set once, when the container has exited and its exit is recorded.
    pub(crate) exited: watch::Sender<Option<Exit>>,
    /// Since when it is paused (`sleep_mode = "pause"`); `None` while it runs.
    pub(crate) paused: std::sync::Mutex<Option<Instant>>,
    /// Held while the container is being paused or thawed, so that a request that finds
    /// it paused thaws it once, after the pause is done.
    pub(crate) thaw: tokio::sync::Mutex<()>,
}

/// How an instance ended.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    pub(crate) status: ExitStatus,
    pub(crate) reason: StopReason,
    pub(crate) logs: Vec<String>,
}

impl Instance {
    pub(crate) fn new(
        container_id: String,
        version: String,
        image: String,
        endpoint: Endpoint,
        started_at: Instant,
    ) -> Instance {
        Instance::with_pool(
            container_id,
            version,
            image,
            Arc::new(Pool::new(endpoint)),
            started_at,
        )
    }

    /// An instance that reuses `pool`: the connections the standby pool's readiness
    /// check opened to a spare, which its first requests then take.
    pub(crate) fn with_pool(
        container_id: String,
        version: String,
        image: String,
        pool: Arc<Pool>,
        started_at: Instant,
    ) -> Instance {
        Instance {
            container_id,
            version,
            image,
            serving: Activity::new(),
            started_at,
            started_at_ms: now_ms() - i64::try_from(started_at.elapsed().as_millis()).unwrap_or(0),
            pool,
            healthy: Notify::new(),
            became_healthy: AtomicBool::new(false),
            checked: AtomicBool::new(false),
            wake: Notify::new(),
            exited: watch::channel(None).0,
            paused: std::sync::Mutex::new(None),
            thaw: tokio::sync::Mutex::new(()),
        }
    }

    /// Since when it is paused, if it is.
    pub(crate) fn paused_since(&self) -> Option<Instant> {
        *self.paused.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_paused(&self, since: Option<Instant>) {
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = since;
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        self.pool.endpoint()
    }

    /// Waits up to `limit` for the exit to be recorded.
    pub(crate) async fn exit(&self, limit: Duration) -> Option<Exit> {
        let mut exited = self.exited.subscribe();
        let waited = timeout(limit, exited.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(exit)) => exit.clone(),
            _ => None,
        }
    }
}
