//! `sleep_mode = "pause"`: an idle container is frozen (the engine's pause) instead of
//! stopped, and the next request thaws it, with no start and no readiness wait. It stays
//! paused for at most `pause_for`, then it is stopped; at most `max_paused` containers of
//! a class are paused at once, and one more stops the longest-paused.
//!
//! Pausing and thawing hold the instance's `thaw` lock: a request that finds the
//! container paused waits for a pause in progress to end, then thaws it once.

use std::sync::Arc;
use std::time::Instant as WallInstant;

use tokio::time::Instant;

use super::instance::Instance;
use super::{FetchError, Object, StartError};
use crate::event::EventKind;
use crate::lifecycle::StopReason;
use crate::runtime::Signal;

impl Object {
    /// The idle deadline passed in pause mode: freezes the container if it is still
    /// healthy and idle. Returns whether it did.
    pub(super) async fn pause_if_idle(&self, instance: &Arc<Instance>) -> bool {
        let _thaw = instance.thaw.lock().await;
        let sleep_after = self.sleep_after();
        let paused = self
            .phase()
            .pause(instance, &self.inner.activity, sleep_after);
        if !paused {
            return false;
        }
        if let Err(e) = self.runtime().pause(&instance.container_id).await {
            // Not frozen: it goes on running, and sleeps by a stop next time.
            instance.set_paused(None);
            tracing::warn!(object = %self.describe(), "could not pause the container: {e}");
            return false;
        }
        self.persist().await;
        let (metrics, labels) = self.metrics();
        metrics.sleep(labels);
        self.emit(
            &instance.container_id,
            EventKind::Paused { idle: sleep_after },
        );
        self.keep_paused_within_limit(instance);
        let (object, hooks) = (self.clone(), self.inner.class.hooks.clone());
        tokio::spawn(async move { hooks.on_pause(&object).await });
        true
    }

    /// Thaws `instance` for a request, if it is paused. A request waits for a pause in
    /// progress to end first.
    pub(super) async fn thaw(&self, instance: &Arc<Instance>) -> Result<(), FetchError> {
        if instance.paused_since().is_none() {
            return Ok(());
        }
        let _thaw = instance.thaw.lock().await;
        if instance.paused_since().is_none() {
            return Ok(());
        }
        let began = WallInstant::now();
        self.runtime()
            .unpause(&instance.container_id)
            .await
            .map_err(|e| {
                FetchError::Start(Arc::new(StartError::Runtime {
                    object: self.describe(),
                    source: e,
                }))
            })?;
        instance.set_paused(None);
        self.forget_paused(instance);
        self.inner.activity.renew();
        instance.wake.notify_one();
        self.persist().await;
        self.emit(
            &instance.container_id,
            EventKind::Thawed {
                took: began.elapsed(),
            },
        );
        Ok(())
    }

    /// Thaws `instance` before it is signalled to stop: a frozen process cannot act on
    /// SIGTERM.
    pub(super) async fn thaw_to_stop(&self, instance: &Arc<Instance>) {
        if instance.paused_since().is_none() {
            return;
        }
        let _thaw = instance.thaw.lock().await;
        if let Err(e) = self.runtime().unpause(&instance.container_id).await {
            tracing::warn!(object = %self.describe(), "could not thaw the container to stop it: {e}");
        }
        instance.set_paused(None);
        self.forget_paused(instance);
    }

    /// Counts `instance` among the class's paused containers, and stops the
    /// longest-paused ones beyond `max_paused`.
    fn keep_paused_within_limit(&self, instance: &Arc<Instance>) {
        let max = {
            let options = self.options();
            options.max_paused.unwrap_or(options.max_instances)
        };
        let evicted: Vec<(Object, Arc<Instance>)> = {
            let mut paused = self.inner.class.lock_paused();
            paused.retain(|(_, weak, i)| weak.upgrade().is_some() && i.paused_since().is_some());
            paused.push((Instant::now(), self.downgrade(), instance.clone()));
            paused.sort_by_key(|(since, _, _)| *since);
            let over = paused.len().saturating_sub(max);
            paused
                .drain(..over)
                .filter_map(|(_, weak, i)| weak.upgrade().map(|o| (o, i)))
                .collect()
        };
        for (object, instance) in evicted {
            tokio::spawn(async move {
                object.thaw_to_stop(&instance).await;
                let _ = object
                    .begin_stop(&instance, StopReason::Slept, Signal::Term)
                    .await;
            });
        }
    }

    fn forget_paused(&self, instance: &Arc<Instance>) {
        self.inner
            .class
            .lock_paused()
            .retain(|(_, _, i)| !Arc::ptr_eq(i, instance));
    }
}
