//! Where an object's container is in its life: one [`Phase`] value, and every rule about
//! what may happen next as a method on it, with no I/O, so that the rules can be read in
//! one place and tested alone.
//!
//! The object keeps its phase behind a short synchronous lock. Requests count themselves
//! in flight under that lock ([`Phase::serving`]), and the idle sleeper decides under it
//! too ([`Phase::fall_asleep`]): a request that arrives exactly at the deadline either
//! keeps the container awake or finds it stopping and waits for a new one.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::instance::Instance;
use crate::activity::Activity;
use crate::class::ContainerClass;
use crate::lifecycle::{after, State, StopReason};
use crate::runtime::ExitStatus;
use crate::store::ObjectRecord;

/// The phase of one object's container.
pub(crate) enum Phase {
    /// The store has not been read yet: nothing is known.
    Unloaded,
    /// No container runs. `exit_code` is set when the last one exited by itself.
    Stopped { exit_code: Option<i64> },
    /// An earlier berth process recorded this container in `state`; the next start
    /// re-adopts it if it still runs and serves, or removes it.
    Leftover { container_id: String, state: State },
    /// The process started; its ports are not known to answer. `readying`: a start is
    /// waiting for them, so the container is not idle, it is starting.
    Running {
        instance: Arc<Instance>,
        readying: bool,
    },
    /// Every required port answered.
    Healthy { instance: Arc<Instance> },
    /// A stop was sent; the container has not exited yet.
    Stopping {
        instance: Arc<Instance>,
        reason: StopReason,
        /// When to send SIGKILL; `None` once it was sent.
        kill_at: Option<Instant>,
    },
}

/// What a start brings the container to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Goal {
    /// Started, with no wait for its ports.
    Started,
    /// Healthy: the class's ports answer.
    Healthy,
    /// These ports answer (they are checked every time).
    Ports(Vec<u16>),
}

/// When the monitor of an instance must look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadlines {
    /// When the container becomes idle, if nothing happens meanwhile.
    pub(crate) idle_at: Option<Instant>,
    /// When it gets SIGKILL.
    pub(crate) kill_at: Option<Instant>,
}

impl Phase {
    /// The state that `state()`, the store and `berth ps` show.
    pub(crate) fn state(&self) -> State {
        match self {
            Phase::Unloaded | Phase::Stopped { exit_code: None } => State::Stopped,
            Phase::Stopped {
                exit_code: Some(code),
            } => State::StoppedWithCode(*code),
            Phase::Leftover { state, .. } => *state,
            Phase::Running { .. } => State::Running,
            Phase::Healthy { instance } if instance.paused_since().is_some() => State::Paused,
            Phase::Healthy { .. } => State::Healthy,
            Phase::Stopping { .. } => State::Stopping,
        }
    }

    /// The container this object owns now, if any.
    pub(crate) fn instance(&self) -> Option<&Arc<Instance>> {
        match self {
            Phase::Running { instance, .. }
            | Phase::Healthy { instance }
            | Phase::Stopping { instance, .. } => Some(instance),
            _ => None,
        }
    }

    pub(crate) fn is_current(&self, instance: &Arc<Instance>) -> bool {
        self.instance().is_some_and(|i| Arc::ptr_eq(i, instance))
    }

    /// The container on its way out, which a new start must wait for.
    pub(crate) fn stopping(&self) -> Option<&Arc<Instance>> {
        match self {
            Phase::Stopping { instance, .. } => Some(instance),
            _ => None,
        }
    }

    /// When a stopping container gets SIGKILL, if that is still to come.
    pub(crate) fn kill_at(&self) -> Option<Instant> {
        match self {
            Phase::Stopping { kill_at, .. } => *kill_at,
            _ => None,
        }
    }

    /// The container that takes requests now: a healthy one that is not stopping.
    pub(crate) fn serving(&self) -> Option<&Arc<Instance>> {
        match self {
            Phase::Healthy { instance } => Some(instance),
            _ => None,
        }
    }

    /// The container id the store should keep.
    pub(crate) fn container_id(&self) -> Option<&str> {
        match self {
            Phase::Leftover { container_id, .. } => Some(container_id),
            other => other.instance().map(|i| i.container_id.as_str()),
        }
    }

    pub(crate) fn reached(&self, goal: &Goal) -> bool {
        matches!(
            (self, goal),
            (Phase::Running { .. } | Phase::Healthy { .. }, Goal::Started)
                | (Phase::Healthy { .. }, Goal::Healthy)
        )
    }

    /// Serving, or started with no wait for readiness: a container that can fall asleep.
    fn awake(&self) -> bool {
        matches!(
            self,
            Phase::Healthy { .. }
                | Phase::Running {
                    readying: false,
                    ..
                }
        )
    }

    /// Takes in what the store recorded: the first thing an object learns.
    pub(crate) fn load(&mut self, record: Option<&ObjectRecord>) {
        if !matches!(self, Phase::Unloaded) {
            return;
        }
        *self = match record {
            Some(r) if r.state.is_active() && r.container_id.is_some() => Phase::Leftover {
                container_id: r.container_id.clone().unwrap_or_default(),
                state: r.state,
            },
            Some(r) => Phase::Stopped {
                exit_code: r.state.exit_code(),
            },
            None => Phase::Stopped { exit_code: None },
        };
    }

    /// The recorded container to re-adopt or remove, once; afterwards the object is
    /// stopped until it adopts one.
    pub(crate) fn take_leftover(&mut self) -> Option<String> {
        match std::mem::replace(self, Phase::Stopped { exit_code: None }) {
            Phase::Leftover { container_id, .. } => Some(container_id),
            other => {
                *self = other;
                None
            }
        }
    }

    /// A started container is now this object's.
    pub(crate) fn adopt(&mut self, instance: Arc<Instance>) {
        *self = Phase::Running {
            instance,
            readying: false,
        };
    }

    /// Marks that a start is (or is no longer) waiting for the container's ports.
    pub(crate) fn set_readying(&mut self, instance: &Arc<Instance>, waiting: bool) {
        if let Phase::Running {
            instance: current,
            readying,
        } = self
        {
            if Arc::ptr_eq(current, instance) {
                *readying = waiting;
            }
        }
    }

    /// The container's ports answered; returns whether it became healthy now (a stop
    /// that came meanwhile wins).
    pub(crate) fn become_healthy(&mut self, instance: &Arc<Instance>) -> bool {
        match self {
            Phase::Running {
                instance: current, ..
            } if Arc::ptr_eq(current, instance) => {
                *self = Phase::Healthy {
                    instance: instance.clone(),
                };
                true
            }
            _ => false,
        }
    }

    /// A stop of `instance` for `reason`; returns whether the phase changed. A stop of a
    /// container already stopping keeps its reason, except that a destroy always says so.
    pub(crate) fn begin_stop(
        &mut self,
        instance: &Arc<Instance>,
        reason: StopReason,
        kill_at: Instant,
    ) -> bool {
        if !self.is_current(instance) {
            return false;
        }
        if let Phase::Stopping {
            reason: current, ..
        } = self
        {
            let upgrade = reason == StopReason::Destroyed && *current != StopReason::Destroyed;
            if upgrade {
                *current = StopReason::Destroyed;
            }
            return upgrade;
        }
        *self = Phase::Stopping {
            instance: instance.clone(),
            reason,
            kill_at: Some(kill_at),
        };
        true
    }

    /// The idle deadline passed: puts the container to sleep if it is still this
    /// object's, awake, and idle by `activity` now. Returns whether it did.
    pub(crate) fn fall_asleep(
        &mut self,
        instance: &Arc<Instance>,
        activity: &Activity,
        sleep_after: Duration,
        stop_grace: Duration,
    ) -> bool {
        if !(self.is_current(instance)
            && self.awake()
            && activity.is_idle(sleep_after, Instant::now()))
        {
            return false;
        }
        self.begin_stop(instance, StopReason::Slept, after(stop_grace))
    }

    /// The idle deadline passed on a cluster's router that is no longer the object's
    /// home: lets go of the container, without stopping it, if it is still this object's,
    /// awake, and idle by `activity` now. Returns whether it did; the new home adopts it.
    pub(crate) fn release(
        &mut self,
        instance: &Arc<Instance>,
        activity: &Activity,
        sleep_after: Duration,
    ) -> bool {
        if !(self.is_current(instance)
            && self.awake()
            && activity.is_idle(sleep_after, Instant::now()))
        {
            return false;
        }
        *self = Phase::Stopped { exit_code: None };
        true
    }

    /// The idle deadline passed with `sleep_mode = "pause"`: marks the container paused
    /// if it is still this object's, healthy, and idle by `activity` now. Returns whether
    /// it did; the caller then freezes it.
    pub(crate) fn pause(
        &mut self,
        instance: &Arc<Instance>,
        activity: &Activity,
        sleep_after: Duration,
    ) -> bool {
        let healthy =
            matches!(self, Phase::Healthy { instance: current } if Arc::ptr_eq(current, instance));
        if !(healthy
            && instance.paused_since().is_none()
            && activity.is_idle(sleep_after, Instant::now()))
        {
            return false;
        }
        instance.set_paused(Some(Instant::now()));
        true
    }

    /// Why `instance` stopped: the stop that was asked for, or `Exited` if none was.
    pub(crate) fn stop_reason(&self, instance: &Arc<Instance>) -> StopReason {
        match self {
            Phase::Stopping {
                instance: current,
                reason,
                ..
            } if Arc::ptr_eq(current, instance) => *reason,
            _ => StopReason::Exited,
        }
    }

    /// The container exited with `status`, for `reason` (as [`Phase::stop_reason`] told
    /// when the exit was noticed): the object is stopped.
    pub(crate) fn exit(
        &mut self,
        instance: &Arc<Instance>,
        status: ExitStatus,
        reason: StopReason,
    ) {
        if self.is_current(instance) {
            *self = Phase::Stopped {
                exit_code: (reason == StopReason::Exited).then_some(status.code),
            };
        }
    }

    /// When the monitor of `instance` must look again.
    pub(crate) fn deadlines(
        &self,
        instance: &Arc<Instance>,
        activity: &Activity,
        sleep_after: Duration,
        pause_for: Duration,
    ) -> Deadlines {
        let none = Deadlines {
            idle_at: None,
            kill_at: None,
        };
        match self {
            Phase::Stopping {
                instance: current,
                kill_at,
                ..
            } if Arc::ptr_eq(current, instance) => Deadlines {
                idle_at: None,
                kill_at: *kill_at,
            },
            _ if !(self.is_current(instance) && self.awake()) => none,
            // `sleep_after = "never"`: nothing to wake up for.
            _ if sleep_after == ContainerClass::NEVER => none,
            // Paused: it is stopped after `pause_for`, unless a request thaws it first.
            _ if instance.paused_since().is_some() => Deadlines {
                idle_at: instance
                    .paused_since()
                    .and_then(|since| since.checked_add(pause_for)),
                kill_at: None,
            },
            // Whenever the last request ends, it renews the activity: the deadline is at
            // least `sleep_after` away.
            _ => Deadlines {
                idle_at: Some(
                    activity
                        .idle_at(sleep_after)
                        .unwrap_or_else(|| after(sleep_after)),
                ),
                kill_at: None,
            },
        }
    }

    /// Moves (or clears, once SIGKILL went out) the kill deadline of a stopping container.
    pub(crate) fn set_kill_at(&mut self, at: Option<Instant>) {
        if let Phase::Stopping { kill_at, .. } = self {
            *kill_at = at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Endpoint;

    fn instance() -> Arc<Instance> {
        Arc::new(Instance::new(
            "c1".into(),
            "version".into(),
            "image".into(),
            Endpoint::Unreachable,
            Instant::now(),
        ))
    }

    const EXITED: ExitStatus = ExitStatus {
        code: 3,
        oom_killed: false,
    };

    #[tokio::test(start_paused = true)]
    async fn a_started_container_goes_healthy_then_sleeps_when_idle() {
        let (i, activity) = (instance(), Activity::new());
        let mut phase = Phase::Stopped { exit_code: None };
        phase.adopt(i.clone());
        assert_eq!(phase.state(), State::Running);
        assert!(phase.reached(&Goal::Started) && !phase.reached(&Goal::Healthy));
        assert!(phase.serving().is_none(), "not serving before healthy");
        assert!(phase.become_healthy(&i));
        assert!(phase.serving().is_some());
        let sleep_after = Duration::from_secs(10);
        let grace = Duration::from_secs(1);
        assert!(
            !phase.fall_asleep(&i, &activity, sleep_after, grace),
            "not idle yet"
        );
        tokio::time::advance(sleep_after).await;
        let deadlines = phase.deadlines(&i, &activity, sleep_after, Duration::from_secs(3600));
        assert_eq!(deadlines.idle_at, Some(Instant::now()));
        assert!(phase.fall_asleep(&i, &activity, sleep_after, grace));
        assert_eq!(phase.state(), State::Stopping);
        assert!(
            phase.serving().is_none(),
            "a stopping container takes no request"
        );
        assert_eq!(phase.stop_reason(&i), StopReason::Slept);
        phase.exit(&i, EXITED, StopReason::Slept);
        assert_eq!(phase.state(), State::Stopped, "a sleep is not a crash");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_it_awake_past_the_deadline() {
        let (i, activity) = (instance(), Activity::new());
        let mut phase = Phase::Healthy {
            instance: i.clone(),
        };
        let guard = activity.enter();
        tokio::time::advance(Duration::from_secs(60)).await;
        let sleep_after = Duration::from_secs(10);
        assert!(!phase.fall_asleep(&i, &activity, sleep_after, Duration::ZERO));
        drop(guard);
        let deadlines = phase.deadlines(&i, &activity, sleep_after, Duration::from_secs(3600));
        assert_eq!(deadlines.idle_at, Some(Instant::now() + sleep_after));
    }

    #[tokio::test(start_paused = true)]
    async fn a_class_that_never_sleeps_has_no_idle_deadline() {
        let (i, activity) = (instance(), Activity::new());
        let phase = Phase::Healthy {
            instance: i.clone(),
        };
        tokio::time::advance(Duration::from_secs(86400 * 400)).await;
        let never = ContainerClass::NEVER;
        assert_eq!(
            phase
                .deadlines(&i, &activity, never, Duration::from_secs(3600))
                .idle_at,
            None
        );
        assert!(!activity.is_idle(never, Instant::now()));
    }

    #[test]
    fn a_container_being_readied_is_not_idle() {
        let i = instance();
        let mut phase = Phase::Running {
            instance: i.clone(),
            readying: false,
        };
        phase.set_readying(&i, true);
        let deadlines = phase.deadlines(
            &i,
            &Activity::new(),
            Duration::ZERO,
            Duration::from_secs(3600),
        );
        assert_eq!(deadlines.idle_at, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_destroy_overrides_a_sleep_in_progress_but_nothing_else_does() {
        let i = instance();
        let mut phase = Phase::Healthy {
            instance: i.clone(),
        };
        assert!(phase.begin_stop(&i, StopReason::Slept, after(Duration::from_secs(5))));
        assert!(!phase.begin_stop(&i, StopReason::Requested, Instant::now()));
        assert!(phase.begin_stop(&i, StopReason::Destroyed, Instant::now()));
        assert_eq!(phase.stop_reason(&i), StopReason::Destroyed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_container_let_go_is_no_longer_the_objects() {
        let (i, activity) = (instance(), Activity::new());
        let mut phase = Phase::Healthy {
            instance: i.clone(),
        };
        let sleep_after = Duration::from_secs(10);
        assert!(!phase.release(&i, &activity, sleep_after), "not idle yet");
        tokio::time::advance(sleep_after).await;
        let guard = activity.enter();
        assert!(
            !phase.release(&i, &activity, sleep_after),
            "a request in flight"
        );
        drop(guard);
        tokio::time::advance(sleep_after).await;
        assert!(phase.release(&i, &activity, sleep_after));
        assert_eq!(phase.state(), State::Stopped);
        assert!(!phase.is_current(&i));
        assert!(!phase.release(&i, &activity, sleep_after), "once");
    }

    #[test]
    fn an_exit_nobody_asked_for_keeps_its_code() {
        let i = instance();
        let mut phase = Phase::Healthy {
            instance: i.clone(),
        };
        assert_eq!(phase.stop_reason(&i), StopReason::Exited);
        phase.exit(&i, EXITED, StopReason::Exited);
        assert_eq!(phase.state(), State::StoppedWithCode(3));
    }

    #[test]
    fn an_old_instance_changes_nothing() {
        let (old, new) = (instance(), instance());
        let mut phase = Phase::Healthy {
            instance: new.clone(),
        };
        assert!(!phase.begin_stop(&old, StopReason::Requested, Instant::now()));
        assert_eq!(phase.stop_reason(&old), StopReason::Exited);
        phase.exit(&old, EXITED, StopReason::Exited);
        assert!(
            phase.is_current(&new),
            "the old container's exit leaves the new one"
        );
    }

    #[test]
    fn a_recorded_running_container_is_a_leftover_taken_once() {
        let record = ObjectRecord {
            namespace: "a/C".into(),
            id: "00".repeat(32),
            name: None,
            state: State::Healthy,
            container_id: Some("old".into()),
            started_at_ms: None,
            updated_at_ms: 0,
        };
        let mut phase = Phase::Unloaded;
        phase.load(Some(&record));
        assert_eq!(phase.state(), State::Healthy);
        assert_eq!(phase.container_id(), Some("old"));
        assert_eq!(phase.take_leftover().as_deref(), Some("old"));
        assert_eq!(phase.take_leftover(), None);
        assert_eq!(phase.state(), State::Stopped);
        let mut fresh = Phase::Unloaded;
        fresh.load(None);
        assert_eq!(fresh.state(), State::Stopped);
    }
}
