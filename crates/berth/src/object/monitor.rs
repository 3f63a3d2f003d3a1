//! The monitor: one task per container, from its start to its removal.
//!
//! It runs `on_start`, puts the container to sleep when idle, sends SIGKILL when a stop
//! outlasts the grace period, and notices the exit the moment the engine reports it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio::time::sleep_until;

use super::instance::Instance;
use super::Object;
use crate::event::EventKind;
use crate::lifecycle::{after, far_future};
use crate::runtime::{ExitStatus, RuntimeError, Signal};

/// Watches one container until it exits, then hands it to `finish`.
pub(super) async fn monitor(object: Object, instance: Arc<Instance>, permit: OwnedSemaphorePermit) {
    let _tracked = object.app().monitors.enter();
    let runtime = object.app().runtime.clone();
    let container_id = instance.container_id.clone();
    let kept = object.keep_logs(&container_id);
    let exit = async {
        loop {
            match runtime.wait(&container_id).await {
                Ok(status) => return status,
                Err(RuntimeError::NotFound { .. }) => {
                    return ExitStatus {
                        code: -1,
                        oom_killed: false,
                    }
                }
                Err(e) => {
                    tracing::warn!("lost track of container {container_id}, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    tokio::pin!(exit);
    // Hooks run on tasks of their own, so that a slow or re-entrant hook never keeps the
    // monitor from noticing an exit or enforcing a deadline.
    let mut on_start: Option<JoinHandle<()>> = None;
    let mut idle_check: Option<JoinHandle<()>> = None;
    let sleep_after = object.sleep_after();
    let status = loop {
        if !object.phase().is_current(&instance) {
            // Let go: another router is the object's home and takes the container over
            // (see `Object::release`); nothing else makes a live container not current.
            break None;
        }
        let deadlines = object.phase().deadlines(
            &instance,
            &object.inner.activity,
            sleep_after,
            object.options().pause_for,
        );
        let idle_at = deadlines.idle_at.filter(|_| idle_check.is_none());
        let kill_at = deadlines.kill_at;
        tokio::select! {
            biased;
            _ = instance.healthy.notified(), if on_start.is_none() => {
                let (object, hooks) = (object.clone(), object.inner.class.hooks.clone());
                on_start = Some(tokio::spawn(async move { hooks.on_start(&object).await }));
            }
            status = &mut exit => break Some(status),
            _ = instance.wake.notified() => {}
            _ = async { if let Some(check) = idle_check.as_mut() { let _ = check.await; } }, if idle_check.is_some() => {
                idle_check = None;
            }
            _ = sleep_until(kill_at.unwrap_or_else(far_future)), if kill_at.is_some() => {
                match runtime.kill(&container_id, Signal::Kill).await {
                    Ok(()) => {
                        object.phase().set_kill_at(None);
                        object.emit(&container_id, EventKind::Killed {
                            grace: object.options().stop_grace,
                        });
                    }
                    Err(e) => {
                        tracing::warn!("could not kill container {container_id}, retrying: {e}");
                        object.phase().set_kill_at(Some(after(Duration::from_secs(1))));
                    }
                }
            }
            _ = sleep_until(idle_at.unwrap_or_else(far_future)), if idle_at.is_some() => {
                let (object, instance) = (object.clone(), instance.clone());
                idle_check = Some(tokio::spawn(async move { object.sleep_if_idle(&instance).await }));
            }
        }
    };
    if let Some(check) = idle_check {
        check.abort();
    }
    match status {
        Some(status) => {
            object
                .finish(instance, status, permit, on_start, kept)
                .await
        }
        // Its output is kept by the router that took it over.
        None => {
            if let Some(kept) = kept {
                kept.abort();
            }
        }
    }
}

impl Object {
    /// Keeps the output of `container_id` in the app's logbook, if it has one.
    fn keep_logs(&self, container_id: &str) -> Option<JoinHandle<()>> {
        let app = self.app();
        let logbook = app.logbook.get()?;
        let log = logbook.object(
            &app.name,
            self.class_name(),
            &self.id().to_string(),
            self.options().log_max,
        );
        let runtime = app.runtime.clone();
        let name = self.name().map(str::to_string);
        Some(app.spawn(crate::logbook::keep(
            runtime,
            container_id.to_string(),
            name,
            log,
        )))
    }
}
