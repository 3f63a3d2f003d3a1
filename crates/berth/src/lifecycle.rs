//! The words of an object's lifecycle: the state its container is in, and why it stopped.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// The lifecycle state of an object's container, as `state()` reports and the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No container runs (never started, stopped on request, or slept after idling).
    Stopped,
    /// The container process has started; its ports are not yet known to answer.
    Running,
    /// Every required port accepted a connection (and the ping endpoint answered).
    Healthy,
    /// A stop was sent; the container has not exited yet.
    Stopping,
    /// Healthy, then idle for `sleep_after` with `sleep_mode = "pause"`: its processes
    /// are frozen, with their memory kept, until a request thaws them.
    Paused,
    /// The container exited by itself with this code.
    StoppedWithCode(i64),
}

impl State {
    /// The name used in the store, in `berth ps` and in logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Running => "running",
            State::Healthy => "healthy",
            State::Stopping => "stopping",
            State::Paused => "paused",
            State::StoppedWithCode(_) => "stopped_with_code",
        }
    }

    /// Whether a container exists in this state (so it may need cleaning up).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            State::Running | State::Healthy | State::Stopping | State::Paused
        )
    }

    pub(crate) fn from_parts(name: &str, exit_code: Option<i64>) -> Option<State> {
        Some(match name {
            "stopped" => State::Stopped,
            "running" => State::Running,
            "healthy" => State::Healthy,
            "stopping" => State::Stopping,
            "paused" => State::Paused,
            "stopped_with_code" => State::StoppedWithCode(exit_code.unwrap_or(-1)),
            _ => return None,
        })
    }

    /// The exit code of `StoppedWithCode`.
    pub fn exit_code(&self) -> Option<i64> {
        match self {
            State::StoppedWithCode(code) => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::StoppedWithCode(code) => write!(f, "stopped_with_code({code})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why a container stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The process exited by itself.
    Exited,
    /// `stop()` was called.
    Requested,
    /// It was idle for `sleep_after`.
    Slept,
    /// `destroy()` was called.
    Destroyed,
    /// It never became ready, so berth stopped it.
    StartFailed,
    /// The app shut down.
    Shutdown,
    /// A new image replaced it.
    Replaced,
}

impl StopReason {
    /// The reason as a metric label: one lowercase word.
    pub fn label(&self) -> &'static str {
        match self {
            StopReason::Exited => "exited",
            StopReason::Requested => "requested",
            StopReason::Slept => "slept",
            StopReason::Destroyed => "destroyed",
            StopReason::StartFailed => "start-failed",
            StopReason::Shutdown => "shutdown",
            StopReason::Replaced => "replaced",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Exited => "exited",
            StopReason::Requested => "stop requested",
            StopReason::Slept => "slept after idle",
            StopReason::Destroyed => "destroyed",
            StopReason::StartFailed => "start failed",
            StopReason::Shutdown => "shutdown",
            StopReason::Replaced => "replaced by a new image",
        })
    }
}

/// `d` from now, or as far as the clock goes.
pub(crate) fn after(d: Duration) -> Instant {
    Instant::now().checked_add(d).unwrap_or_else(far_future)
}

/// A moment that never comes in practice: a year from now.
pub(crate) fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(86400 * 365))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_its_stored_form() {
        for state in [
            State::Stopped,
            State::Running,
            State::Healthy,
            State::Stopping,
            State::StoppedWithCode(3),
        ] {
            assert_eq!(
                State::from_parts(state.as_str(), state.exit_code()),
                Some(state)
            );
        }
    }
}
