//! Stopping an object's container: on request, when it is idle, and once it has exited.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::fetch::HandOver;
use super::hooks::{Expiry, ObjectError, StopParams};
use super::instance::{Exit, Instance};
use super::live::Phase;
use super::start::EXIT_REPORT;
use super::Object;

/// How long an exited container's last lines may take to come.
const LAST_LINES: Duration = Duration::from_secs(5);
use crate::class::SleepMode;
use crate::event::EventKind;
use crate::lifecycle::{after, StopReason};
use crate::runtime::{ExitStatus, RuntimeError, Signal};

/// How many log lines a start failure or a crash reports.
const LOG_TAIL: usize = 20;

impl Object {
    /// Stops the container, if one runs, and the one a start under way brings up;
    /// returns whether it stopped any.
    pub(crate) async fn stop_with(
        &self,
        reason: StopReason,
        signal: Signal,
    ) -> Result<bool, RuntimeError> {
        // A start under way sees this at its next step and goes no further.
        self.inner.stops.fetch_add(1, Ordering::AcqRel);
        let running = self.phase().instance().cloned();
        if let Some(instance) = &running {
            self.begin_stop(instance, reason, signal).await?;
        }
        // Wait for that start to let go; then stop what it started, if anything.
        let _starts = self.inner.starts.lock().await;
        let current = self.phase().instance().cloned();
        let Some(instance) = current else {
            return Ok(running.is_some());
        };
        if !running.is_some_and(|r| Arc::ptr_eq(&r, &instance)) {
            self.begin_stop(&instance, reason, signal).await?;
        }
        let waited = self.options().stop_grace.saturating_add(EXIT_REPORT);
        match instance.exit(waited).await {
            Some(_) => Ok(true),
            None => Err(RuntimeError::NoExit {
                container: instance.container_id.clone(),
                waited,
            }),
        }
    }

    /// Whether the object's container runs an older version of the class.
    pub fn runs_outdated(&self) -> bool {
        self.phase()
            .instance()
            .is_some_and(|i| i.version != self.inner.class.current().version)
    }

    /// Replaces a container that runs an older version of the class (after a rebuild or
    /// a deployment): no new request goes to it, the requests it serves may finish for up
    /// to `drain`, then it is stopped. Requests that arrive meanwhile wait for a container
    /// of the new version. A start under way that brings up the old version is replaced
    /// too; one of the new version is left alone. Returns whether it replaced a container.
    pub async fn replace(&self, drain: Duration) -> Result<bool, RuntimeError> {
        let outdated = |phase: &Phase| {
            phase
                .instance()
                .filter(|i| i.version != self.inner.class.current().version)
                .cloned()
        };
        let mut replaced = None;
        let running = outdated(&self.phase());
        if let Some(instance) = running {
            self.stop_draining(&instance, drain).await?;
            replaced = Some(instance);
        }
        let _starts = self.inner.starts.lock().await;
        let started = outdated(&self.phase());
        if let Some(instance) = started {
            if !replaced.as_ref().is_some_and(|r| Arc::ptr_eq(r, &instance)) {
                self.stop_draining(&instance, drain).await?;
            }
            replaced = Some(instance);
        }
        let Some(instance) = replaced else {
            return Ok(false);
        };
        let waited = self.options().stop_grace.saturating_add(EXIT_REPORT);
        match instance.exit(waited).await {
            Some(_) => Ok(true),
            None => Err(RuntimeError::NoExit {
                container: instance.container_id.clone(),
                waited,
            }),
        }
    }

    /// Takes `instance` out of service, lets its requests finish for up to `drain`, then
    /// sends SIGTERM (and SIGKILL after the grace period).
    async fn stop_draining(
        &self,
        instance: &Arc<Instance>,
        drain: Duration,
    ) -> Result<(), RuntimeError> {
        let kill_at = after(drain.saturating_add(self.options().stop_grace));
        let changed = self
            .phase()
            .begin_stop(instance, StopReason::Replaced, kill_at);
        if !changed {
            return Ok(());
        }
        instance.wake.notify_one();
        self.thaw_to_stop(instance).await;
        self.persist().await;
        let _ = tokio::time::timeout(drain, instance.serving.drained()).await;
        self.phase()
            .set_kill_at(Some(after(self.options().stop_grace)));
        instance.wake.notify_one();
        self.runtime()
            .kill(&instance.container_id, Signal::Term)
            .await
    }

    /// Marks the container as stopping (so no new request is sent to it), signals it, and
    /// arms the SIGKILL deadline in its monitor.
    pub(super) async fn begin_stop(
        &self,
        instance: &Arc<Instance>,
        reason: StopReason,
        signal: Signal,
    ) -> Result<(), RuntimeError> {
        let kill_at = after(self.options().stop_grace);
        let changed = self.phase().begin_stop(instance, reason, kill_at);
        if !self.phase().is_current(instance) {
            return Ok(());
        }
        // The monitor learns the SIGKILL deadline first: if this caller gives up below,
        // the container still ends.
        if changed {
            instance.wake.notify_one();
        }
        self.thaw_to_stop(instance).await;
        let signalled = self.runtime().kill(&instance.container_id, signal).await;
        if changed {
            self.persist().await;
        }
        signalled
    }

    /// Lets go of `instance` without stopping it, for the object's new home to adopt;
    /// its monitor then ends.
    async fn release(&self, instance: &Arc<Instance>) {
        let released = self
            .phase()
            .release(instance, &self.inner.activity, self.sleep_after());
        if !released {
            return;
        }
        tracing::info!(object = %self.describe(), "another router is this object's home now: it takes container {} over", instance.container_id);
        instance.wake.notify_one();
        self.persist().await;
    }

    /// Called by the monitor when the idle deadline passed: asks the hooks, then puts the
    /// container to sleep if it is still idle.
    pub(super) async fn sleep_if_idle(&self, instance: &Arc<Instance>) {
        let sleep_after = self.sleep_after();
        let idle = {
            let phase = self.phase();
            phase.is_current(instance)
                && phase
                    .deadlines(
                        instance,
                        &self.inner.activity,
                        sleep_after,
                        self.options().pause_for,
                    )
                    .idle_at
                    <= Some(tokio::time::Instant::now())
        };
        if !idle {
            return;
        }
        if let Some((peers, home)) = self.elsewhere() {
            // Another router became its home (the routers changed) and runs its
            // lifecycle now. It is asked to take the container over; once it has, this
            // router lets go of it. One it refuses (it runs another version, or not the
            // app) is idle and nobody's: it sleeps here. A home that does not answer is
            // asked again at the next deadline (and takes it over by itself meanwhile, see
            // `namespace::homes`).
            match self.hand_over(&peers, home, instance).await {
                HandOver::Taken => {
                    self.release(instance).await;
                    return;
                }
                HandOver::Unanswered => {
                    self.renew_activity_timeout();
                    return;
                }
                HandOver::Refused => {}
            }
        }
        let paused = instance.paused_since().is_some();
        if !paused {
            let hooks = self.inner.class.hooks.clone();
            if hooks.on_activity_expired(self).await == Expiry::KeepAwake {
                self.renew_activity_timeout();
                return;
            }
            if self.options().sleep_mode == SleepMode::Pause && self.pause_if_idle(instance).await {
                return;
            }
        }
        // Paused for `pause_for`, or a class that stops to sleep.
        let _thaw = instance.thaw.lock().await;
        let slept = self.phase().fall_asleep(
            instance,
            &self.inner.activity,
            sleep_after,
            self.options().stop_grace,
        );
        if !slept {
            return;
        }
        drop(_thaw);
        self.thaw_to_stop(instance).await;
        self.persist().await;
        let (metrics, labels) = self.metrics();
        if !paused {
            metrics.sleep(labels);
        }
        self.emit(
            &instance.container_id,
            EventKind::Sleeping { idle: sleep_after },
        );
        if let Err(e) = self
            .runtime()
            .kill(&instance.container_id, Signal::Term)
            .await
        {
            tracing::warn!(object = %self.describe(), "could not signal the container to stop: {e}");
        }
    }

    /// Records the container's exit, removes it, and runs the hooks. Runs once per
    /// container, on its monitor task.
    pub(super) async fn finish(
        &self,
        instance: Arc<Instance>,
        status: ExitStatus,
        permit: OwnedSemaphorePermit,
        on_start: Option<JoinHandle<()>>,
        kept: Option<JoinHandle<()>>,
    ) {
        let reason = match self.phase().stop_reason(&instance) {
            // While the app shuts down (a forced sweep removes containers outright), an exit
            // nobody asked this object for is berth's own doing, not a crash.
            StopReason::Exited if self.app().closing() => StopReason::Shutdown,
            reason => reason,
        };
        // The output ends with the container: its last lines reach the log book, and the
        // error's tail, before its removal. Both at once, and bounded: an engine may wait
        // on a node it cannot reach (a Swarm task on a cut-off node) for as long as the
        // partition lasts, and the object with it.
        let id = &instance.container_id;
        let keep = async {
            if let Some(mut kept) = kept {
                if tokio::time::timeout(LAST_LINES, &mut kept).await.is_err() {
                    // Not left following a node it cannot reach, to write an old copy's
                    // output beside a new one's once the node is back.
                    kept.abort();
                    tracing::warn!("the last output of container {id} may not be kept");
                }
            }
        };
        let tail = async {
            if reason != StopReason::Exited {
                return Vec::new();
            }
            let tail = self.runtime().logs(id, LOG_TAIL);
            match tokio::time::timeout(LAST_LINES, tail).await {
                Ok(lines) => lines.unwrap_or_default(),
                Err(_) => {
                    tracing::warn!(object = %self.describe(), "the last lines of container {id} did not come within {LAST_LINES:?}");
                    Vec::new()
                }
            }
        };
        let ((), logs) = tokio::join!(keep, tail);
        // Reported as soon as it is known; the removal that follows is cleanup.
        let (metrics, labels) = self.metrics();
        metrics.exit(labels, reason.label());
        self.emit(
            &instance.container_id,
            EventKind::Stopped {
                exit_code: status.code,
                reason,
                oom_killed: status.oom_killed,
                uptime: instance.started_at.elapsed(),
            },
        );
        if let Err(e) = self.runtime().remove(&instance.container_id).await {
            tracing::warn!(object = %self.describe(), "could not remove container {}: {e}", instance.container_id);
        }
        drop(permit);
        self.phase().exit(&instance, status, reason);
        self.persist().await;
        let exit = Exit {
            status,
            reason,
            logs,
        };
        instance.exited.send_replace(Some(exit.clone()));
        // on_start comes before on_stop, even when it is slow.
        if let Some(on_start) = on_start {
            let _ = on_start.await;
        }
        let hooks = self.inner.class.hooks.clone();
        // Exiting by itself is an error if it failed, or if it never became ready.
        let healthy = instance.became_healthy.load(Ordering::Acquire);
        if reason == StopReason::Exited && (status.code != 0 || status.oom_killed || !healthy) {
            let error = ObjectError::Crashed {
                status,
                logs: exit.logs,
            };
            self.emit(
                &instance.container_id,
                EventKind::Error {
                    message: error.to_string(),
                },
            );
            hooks.on_error(self, &error).await;
        }
        hooks
            .on_stop(
                self,
                StopParams {
                    exit_code: status.code,
                    reason,
                },
            )
            .await;
    }
}
