//! What happens to the platform's apps, as it happens: their objects' lifecycle events,
//! rollout steps and the deployments' outcomes. Sent to whoever listens, and the last
//! [`BACKLOG`] kept, so that a listener that comes later sees what just happened.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::event::Event;
use crate::store::DeploymentStatus;

/// How many of the latest events a new listener gets first.
pub const BACKLOG: usize = 256;

/// An event of one of the platform's apps.
#[derive(Debug, Clone)]
pub struct AppEvent {
    pub app: String,
    pub time: SystemTime,
    pub kind: AppEventKind,
}

#[derive(Debug, Clone)]
pub enum AppEventKind {
    /// Something happened to an object's container.
    Object(Event),
    /// A step of a deployment's rollout.
    Rollout { deployment: i64, step: String },
    /// A deployment ended its rollout: active, or failed (and the one before restored).
    Deployment {
        deployment: i64,
        status: DeploymentStatus,
        message: String,
    },
}

impl fmt::Display for AppEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            AppEventKind::Object(event) => write!(f, "{event}"),
            AppEventKind::Rollout { deployment, step } => {
                write!(f, "deployment {deployment}: {step}")
            }
            AppEventKind::Deployment {
                deployment,
                status,
                message,
            } => {
                write!(f, "deployment {deployment} is {}", status.as_str())?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

/// The platform's events, sent and kept.
pub(crate) struct Journal {
    sender: broadcast::Sender<AppEvent>,
    recent: Mutex<VecDeque<AppEvent>>,
}

impl Journal {
    pub(crate) fn new() -> Journal {
        Journal {
            sender: broadcast::channel(1024).0,
            recent: Mutex::new(VecDeque::with_capacity(BACKLOG)),
        }
    }

    pub(crate) fn record(&self, app: &str, kind: AppEventKind) {
        let event = AppEvent {
            app: app.to_string(),
            time: SystemTime::now(),
            kind,
        };
        // Kept and sent under one lock: a new listener gets each event once, either in
        // the backlog or from the channel.
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == BACKLOG {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        let _ = self.sender.send(event);
    }

    /// The latest events, oldest first, and the events from then on.
    pub(crate) fn listen(&self) -> (Vec<AppEvent>, broadcast::Receiver<AppEvent>) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        (recent.iter().cloned().collect(), self.sender.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(n: usize) -> AppEventKind {
        AppEventKind::Rollout {
            deployment: 1,
            step: n.to_string(),
        }
    }

    #[test]
    fn a_late_listener_gets_the_latest_events_then_the_new_ones_each_once() {
        let journal = Journal::new();
        for n in 0..BACKLOG + 10 {
            journal.record("shop", step(n));
        }
        let (recent, mut live) = journal.listen();
        assert_eq!(recent.len(), BACKLOG);
        assert_eq!(recent[0].to_string(), "deployment 1: 10");
        journal.record("shop", step(999));
        let next = live.try_recv().map(|e| e.to_string());
        assert_eq!(next.ok().as_deref(), Some("deployment 1: 999"));
        assert!(live.try_recv().is_err());
    }
}
