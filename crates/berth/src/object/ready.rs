//! Waiting until a started container serves, or learning why it will not.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::error::StartError;
use super::instance::{Exit, Instance};
use super::start::EXIT_REPORT;
use super::Object;
use crate::class::ContainerClass;
use crate::event::EventKind;
use crate::lifecycle::{after, StopReason};
use crate::readiness::{self, NotReady, Probe};
use crate::runtime::{Endpoint, Signal};
use tokio::time::Instant;

impl Object {
    /// Waits until `ports` (the class's ports when `None`) answer. A container that never
    /// becomes ready is not left running; a healthy one that does not open one more port
    /// keeps serving.
    pub(super) async fn await_ready(
        &self,
        instance: &Arc<Instance>,
        ports: Option<&[u16]>,
    ) -> Result<(), StartError> {
        self.phase().set_readying(instance, true);
        let waited = Instant::now();
        let result = self.readiness(instance, ports).await;
        self.phase().set_readying(instance, false);
        match &result {
            Ok(()) => {
                // A spare's request need not wait for the store: the record follows.
                let spare = instance.checked.swap(false, Ordering::AcqRel);
                if self.phase().become_healthy(instance) {
                    self.inner.activity.renew();
                    if spare {
                        self.persist_later();
                    } else {
                        self.persist().await;
                    }
                    instance.became_healthy.store(true, Ordering::Release);
                    instance.healthy.notify_one();
                    let (metrics, labels) = self.metrics();
                    metrics.ready(labels, waited.elapsed());
                    self.keep_ready_time(waited.elapsed());
                    self.emit(
                        &instance.container_id,
                        EventKind::Healthy {
                            elapsed: instance.started_at.elapsed(),
                        },
                    );
                }
                instance.wake.notify_one();
            }
            Err(StartError::ExitedWhileStarting { .. } | StartError::Interrupted { .. }) => {}
            // A healthy container that did not open one more port still serves.
            Err(_)
                if self
                    .phase()
                    .serving()
                    .is_some_and(|i| Arc::ptr_eq(i, instance)) => {}
            Err(_) => {
                let _ = self
                    .begin_stop(instance, StopReason::StartFailed, Signal::Kill)
                    .await;
                instance.exit(EXIT_REPORT).await;
            }
        }
        result
    }

    /// Waits until the container's ports answer, or says why they will not.
    async fn readiness(
        &self,
        instance: &Arc<Instance>,
        ports: Option<&[u16]>,
    ) -> Result<(), StartError> {
        // A spare of the standby pool passed the class's checks just before it was taken.
        if ports.is_none() && instance.checked.load(Ordering::Acquire) {
            return Ok(());
        }
        let opts = self.options();
        let ports = ports
            .map(<[u16]>::to_vec)
            .unwrap_or_else(|| opts.ready_ports());
        let mut exited = instance.exited.subscribe();
        let exit_error = |exit: Option<Exit>| match exit {
            Some(exit) if exit.reason == StopReason::Exited => StartError::ExitedWhileStarting {
                object: self.describe(),
                status: exit.status,
                logs: exit.logs,
            },
            _ => StartError::Interrupted {
                object: self.describe(),
            },
        };
        for port in &ports {
            if instance.endpoint().reaches(*port) {
                continue;
            }
            if matches!(instance.endpoint(), Endpoint::Unreachable) {
                // It exited before it got an address; its monitor reports how.
                return Err(exit_error(instance.exit(EXIT_REPORT).await));
            }
            return Err(StartError::PortUnreachable {
                object: self.describe(),
                port: *port,
            });
        }
        let probe = probe(&opts, instance.endpoint(), &ports);
        let limit = opts.port_ready_timeout;
        let deadline = after(limit);
        tokio::select! {
            ready = readiness::wait_until_ready(&instance.pool, &ports, probe, deadline) => {
                ready.map_err(|why| not_ready(self.describe(), why, limit))
            }
            exit = exited.wait_for(Option::is_some) => {
                Err(exit_error(exit.ok().and_then(|e| e.clone())))
            }
        }
    }
}

/// What must answer over HTTP, once `ports` open, for a container of the class `opts` to
/// be ready: its `ready` check, or its ping endpoint, on its default port.
pub(super) fn probe<'a>(
    opts: &'a ContainerClass,
    endpoint: &Endpoint,
    ports: &[u16],
) -> Option<Probe<'a>> {
    let port = opts.default_port.or(ports.first().copied())?;
    if !endpoint.reaches(port) {
        return None;
    }
    match (&opts.ready, &opts.ping_endpoint) {
        (Some(check), _) => Some(Probe::Ready { port, check }),
        (None, Some(endpoint)) => Some(Probe::Ping { port, endpoint }),
        _ => None,
    }
}

/// The error of a container that was not ready within `limit`.
pub(super) fn not_ready(object: String, why: NotReady, limit: Duration) -> StartError {
    match why {
        NotReady::Port(port) => StartError::PortTimeout {
            object,
            port,
            timeout: limit,
        },
        NotReady::Probe { port, endpoint } => StartError::ProbeTimeout {
            object,
            port,
            endpoint,
            timeout: limit,
        },
        NotReady::Check { port, path, last } => StartError::NotReady {
            object,
            port,
            path,
            last: last.map_or_else(|| "no answer".to_string(), |s| format!("status {s}")),
            timeout: limit,
        },
    }
}
