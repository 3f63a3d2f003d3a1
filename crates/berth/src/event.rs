//! Lifecycle events: one for each thing that happens to an object's container, so that a
//! command line, a log or a UI can show them as they happen.

use std::fmt;
use std::time::Duration;

use crate::lifecycle::StopReason;

/// Something that happened to an object's container.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The class name.
    pub class: String,
    /// The object's name, or its short id when it has none.
    pub object: String,
    /// The engine's id of the container concerned.
    pub container_id: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A container was created and started.
    Started {
        container_name: String,
        elapsed: Duration,
    },
    /// A spare of the class's standby pool was started and is ready, for no object yet.
    Standby {
        container_name: String,
        elapsed: Duration,
    },
    /// An object took a ready spare of the standby pool instead of starting a container.
    Assigned {
        container_name: String,
        elapsed: Duration,
    },
    /// A container that an earlier berth process started was taken over.
    Adopted,
    /// The container's ports answered.
    Healthy { elapsed: Duration },
    /// It was idle for `sleep_after` and is being stopped.
    Sleeping { idle: Duration },
    /// It was idle for `sleep_after` and is paused (`sleep_mode = "pause"`).
    Paused { idle: Duration },
    /// A request thawed it from its pause, which took `took`.
    Thawed { took: Duration },
    /// It did not exit within `grace` of being asked to stop, so it got SIGKILL.
    Killed { grace: Duration },
    /// The container exited (its removal follows).
    Stopped {
        exit_code: i64,
        reason: StopReason,
        oom_killed: bool,
        uptime: Duration,
    },
    /// A start failed, or the container crashed.
    Error { message: String },
    /// The container asked berth's egress proxy for a host its class's `allowed_hosts`
    /// or `denied_hosts` refuse, and got a 403.
    EgressDenied { host: String },
}

impl EventKind {
    /// Whether it changes the object's state (a start, a stop, a pause…), rather than
    /// reporting a failure or a refusal (a crash changes it by the `Stopped` that follows).
    pub fn is_lifecycle(&self) -> bool {
        !matches!(
            self,
            EventKind::Error { .. } | EventKind::EgressDenied { .. }
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.class, self.object)?;
        match &self.kind {
            EventKind::Started {
                container_name,
                elapsed,
            } => {
                write!(f, "started {container_name} in {} ms", elapsed.as_millis())
            }
            EventKind::Standby {
                container_name,
                elapsed,
            } => write!(
                f,
                "started standby container {container_name}, ready in {} ms",
                elapsed.as_millis()
            ),
            EventKind::Assigned {
                container_name,
                elapsed,
            } => write!(
                f,
                "took standby container {container_name} in {} µs",
                elapsed.as_micros()
            ),
            EventKind::Adopted => write!(
                f,
                "re-adopted running container {}",
                short(&self.container_id)
            ),
            EventKind::Healthy { elapsed } => write!(f, "healthy after {} ms", elapsed.as_millis()),
            EventKind::Sleeping { idle } => write!(f, "sleeping after {} idle", human(*idle)),
            EventKind::Paused { idle } => write!(f, "paused after {} idle", human(*idle)),
            EventKind::Thawed { took } => write!(f, "thawed in {} ms", took.as_millis()),
            EventKind::Killed { grace } => write!(
                f,
                "did not exit within {} of SIGTERM, so it was killed (SIGKILL); \
                 handle SIGTERM in the app, or keep init = true so that an init process does",
                human(*grace)
            ),
            EventKind::Stopped {
                exit_code,
                reason,
                oom_killed,
                uptime,
            } => {
                write!(f, "stopped ({reason}, exit code {exit_code}")?;
                if *oom_killed {
                    f.write_str(", killed for lack of memory")?;
                }
                write!(f, ") after {}", human(*uptime))
            }
            EventKind::Error { message } => write!(f, "error: {message}"),
            EventKind::EgressDenied { host } => write!(
                f,
                "refused a request to {host}: allowed_hosts/denied_hosts do not let it through"
            ),
        }
    }
}

/// The first 12 characters of an engine's container id, whatever the id is made of.
fn short(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// `850 ms`, `12.3 s`, `3m`, `1h30m`.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if secs < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 3600 {
        match secs % 60 {
            0 => format!("{}m", secs / 60),
            s => format!("{}m{s}s", secs / 60),
        }
    } else {
        match (secs % 3600) / 60 {
            0 => format!("{}h", secs / 3600),
            m => format!("{}h{m}m", secs / 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_one_line() {
        let event = Event {
            class: "MyContainer".into(),
            object: "\"container\"".into(),
            container_id: "abcdef0123456789".into(),
            kind: EventKind::Stopped {
                exit_code: 0,
                reason: StopReason::Slept,
                oom_killed: false,
                uptime: Duration::from_secs(200),
            },
        };
        assert_eq!(
            event.to_string(),
            "MyContainer \"container\": stopped (slept after idle, exit code 0) after 3m20s"
        );
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(short("abcdef0123456789"), "abcdef012345");
        assert_eq!(
            short("éééééééééééééé"),
            "éééééééééééé",
            "ids are cut by character"
        );
        assert_eq!(short("abc"), "abc");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
    }
}
