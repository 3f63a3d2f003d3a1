//! Making a container of a class: what it is made of, and the engine's create and start.
//!
//! Shared by an object's own start and by the standby pool, whose containers are made
//! before any object needs them.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, Instant};

use super::error::StartError;
use super::{Class, StartOptions};
use crate::egress::Policy;
use crate::id::ObjectId;
use crate::runtime::{ContainerSpec, Created, Endpoint, Identity, VolumeMount};

/// A container the engine created and started, not yet any object's.
pub(super) struct Made {
    pub(super) created: Created,
    pub(super) version: String,
    pub(super) image: String,
    pub(super) endpoint: Endpoint,
    pub(super) began: Instant,
    pub(super) created_in: Duration,
}

/// Whose container is made: an object's, or a spare of the standby pool, which has an id
/// of its own until an object takes it.
pub(super) struct Owner<'a> {
    pub(super) object_id: ObjectId,
    pub(super) object_name: Option<&'a str>,
    pub(super) standby: bool,
}

impl Class {
    /// What a new container for `owner` is made of: the class's options, overridden by
    /// `options`.
    pub(super) fn spec(&self, owner: &Owner<'_>, options: Option<&StartOptions>) -> ContainerSpec {
        let opts = self.current();
        let mut env = opts.env_vars.clone();
        let mut entrypoint = opts.entrypoint.clone();
        let mut enable_internet = opts.enable_internet;
        if let Some(o) = options {
            env.extend(o.env_vars.clone());
            entrypoint = o.entrypoint.clone().or(entrypoint);
            enable_internet = o.enable_internet.unwrap_or(enable_internet);
        }
        let mut ports = opts.ready_ports();
        ports.extend(opts.default_port);
        ports.sort_unstable();
        ports.dedup();
        let (nano_cpus, memory_bytes) = match opts.instance_type {
            Some(t) => (
                (t.vcpu * 1e9) as i64,
                i64::try_from(t.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX),
            ),
            None => (0, 0),
        };
        let identity = Identity {
            app: self.app.name.clone(),
            class: opts.name.clone(),
            object_id: owner.object_id,
            object_name: owner.object_name.map(str::to_string),
            session: self.app.lease.id().to_string(),
            host: self.app.lease.host().to_string(),
            version: opts.version.clone(),
            standby: owner.standby,
        };
        let store_owner = self.app.store.owner();
        let volumes = opts
            .volumes
            .iter()
            .map(|path| VolumeMount {
                name: VolumeMount::name_for(&identity, store_owner, path),
                path: path.clone(),
                owner: store_owner.to_string(),
            })
            .collect();
        ContainerSpec {
            identity,
            volumes,
            image: opts.image.clone(),
            env,
            entrypoint,
            labels: opts.labels.clone(),
            ports,
            egress: Policy {
                internet: enable_internet,
                allowed: opts.allowed_hosts.clone(),
                denied: opts.denied_hosts.clone(),
            },
            init: opts.init,
            stop_grace: opts.stop_grace,
            nano_cpus,
            memory_bytes,
        }
    }

    /// The engine's create and start of `spec`, within `start_timeout`; `who` names the
    /// container in errors. A container that was created but could not be started is
    /// removed.
    pub(super) async fn make(
        self: &Arc<Self>,
        spec: ContainerSpec,
        who: &str,
    ) -> Result<Made, StartError> {
        let (version, image) = (spec.identity.version.clone(), spec.image.clone());
        let began = Instant::now();
        let start_timeout = self.current().start_timeout;
        let runtime_error = |source| StartError::Runtime {
            object: who.to_string(),
            source,
        };
        let timed_out = || StartError::StartTimeout {
            object: who.to_string(),
            timeout: start_timeout,
        };
        let runtime = self.app.runtime.clone();
        let mut create = self.app.spawn(async move { runtime.create(&spec).await });
        let created = match timeout(start_timeout, &mut create).await {
            Ok(Ok(created)) => created.map_err(runtime_error)?,
            Ok(Err(_)) => {
                return Err(StartError::Interrupted {
                    object: who.to_string(),
                })
            }
            Err(_) => {
                // The engine may still create it: remove it once it has.
                let runtime = self.app.runtime.clone();
                self.app.spawn(async move {
                    if let Ok(Ok(created)) = create.await {
                        let _ = runtime.remove(&created.id).await;
                    }
                });
                return Err(timed_out());
            }
        };
        let created_in = began.elapsed();
        let started = timeout(
            start_timeout.saturating_sub(began.elapsed()),
            self.app.runtime.start(&created.id),
        )
        .await;
        match started {
            Ok(Ok(endpoint)) => Ok(Made {
                created,
                version,
                image,
                endpoint,
                began,
                created_in,
            }),
            failed => {
                if let Err(e) = self.app.runtime.remove(&created.id).await {
                    tracing::warn!(
                        "could not remove container {} after a failed start: {e}",
                        created.id
                    );
                }
                Err(match failed {
                    Ok(Err(e)) => runtime_error(e),
                    _ => timed_out(),
                })
            }
        }
    }
}
