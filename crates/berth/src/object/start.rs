//! Starting an object's container: one start at a time, shared by everyone who waits.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};
use tokio::time::{timeout, Instant};

use super::error::StartError;
use super::hooks::ObjectError;
use super::instance::Instance;
use super::live::{Goal, Phase};
use super::{monitor, Attempts, Object, StartOptions};
use crate::egress::Policy;
use crate::event::EventKind;
use crate::runtime::{ContainerInfo, ContainerSpec, Created, Endpoint, Identity, VolumeMount};

/// How long a new start waits for the object's previous container to exit.
pub(super) const EXIT_REPORT: Duration = Duration::from_secs(30);

/// How long the phases of a container's start took, as the object last measured them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartTimings {
    /// The engine's create.
    pub create: Duration,
    /// The engine's start, after the create.
    pub start: Duration,
    /// From the engine's start until the container's ports answered; `None` until they
    /// did, or if the start did not wait for them.
    pub ready: Option<Duration>,
}

/// A container the engine created and started, not yet the object's.
struct Made {
    created: Created,
    version: String,
    image: String,
    endpoint: Endpoint,
    began: Instant,
    created_in: Duration,
}

/// What a container the object adopts runs.
struct Running {
    version: String,
    image: String,
}

impl Object {
    /// Brings the container to `goal`, starting it if needed. Callers that queued behind
    /// a start that failed get that start's error instead of starting again.
    pub(super) async fn ensure(
        &self,
        goal: Goal,
        options: Option<&StartOptions>,
    ) -> Result<(), Arc<StartError>> {
        if self.app().closing() {
            return Err(Arc::new(self.shutting_down()));
        }
        if self.inner.class.retired.load(Ordering::Acquire) {
            return Err(Arc::new(StartError::ClassRemoved {
                object: self.describe(),
            }));
        }
        // A stop asked for from now on ends this start, even while it waits its turn.
        let stops = self.inner.stops.load(Ordering::Acquire);
        let arrived = self.inner.finished_attempts.load(Ordering::Acquire);
        let attempts = self.inner.starts.clone().lock_owned().await;
        if self.phase().reached(&goal) {
            return Ok(());
        }
        if let Some((number, error)) = &attempts.last_failure {
            if *number > arrived {
                return Err(error.clone());
            }
        }
        // The attempt runs on its own task: a caller that gives up (a client that
        // disconnects) must not leave a half-started container behind.
        let object = self.clone();
        let options = options.cloned();
        self.app()
            .spawn(async move { object.attempt(attempts, goal, options, stops).await })
            .await
            .unwrap_or_else(|_| {
                Err(Arc::new(StartError::Interrupted {
                    object: self.describe(),
                }))
            })
    }

    async fn attempt(
        &self,
        mut attempts: OwnedMutexGuard<Attempts>,
        goal: Goal,
        options: Option<StartOptions>,
        stops: u64,
    ) -> Result<(), Arc<StartError>> {
        attempts.number += 1;
        let number = attempts.number;
        let result = self
            .start_locked(&goal, options.as_ref(), stops)
            .await
            .map_err(Arc::new);
        self.inner
            .finished_attempts
            .store(number, Ordering::Release);
        if let Err(error) = &result {
            attempts.last_failure = Some((number, error.clone()));
            if let Some(cause) = error.cause() {
                let (metrics, labels) = self.metrics();
                metrics.failed_start(labels, cause);
            }
            // A container that exited while starting was already reported by its monitor;
            // a start interrupted by a stop or a shutdown is no error of the container's.
            if !matches!(
                **error,
                StartError::ExitedWhileStarting { .. }
                    | StartError::Interrupted { .. }
                    | StartError::ShuttingDown { .. }
                    | StartError::ClassRemoved { .. }
            ) {
                self.emit(
                    "",
                    EventKind::Error {
                        message: error.to_string(),
                    },
                );
                let object = self.clone();
                let error = ObjectError::Start((**error).clone());
                self.app().spawn(async move {
                    let hooks = object.inner.class.hooks.clone();
                    hooks.on_error(&object, &error).await;
                });
            }
        }
        result
    }

    async fn start_locked(
        &self,
        goal: &Goal,
        options: Option<&StartOptions>,
        stops: u64,
    ) -> Result<(), StartError> {
        self.go_on(stops)?;
        self.load().await.map_err(|source| StartError::Store {
            object: self.describe(),
            source,
        })?;
        self.go_on(stops)?;
        // A container on its way out: let it finish first.
        let stopping = {
            let phase = self.phase();
            phase.stopping().cloned().map(|old| (old, phase.kill_at()))
        };
        if let Some((old, kill_at)) = stopping {
            // Until its SIGKILL (after a rollout's grace, it may be far off), and then
            // until the engine reports the exit.
            let until_kill = kill_at.map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(Instant::now())
            });
            let waited = until_kill
                .max(self.options().stop_grace)
                .saturating_add(EXIT_REPORT);
            if old.exit(waited).await.is_none() {
                return Err(StartError::StillStopping {
                    object: self.describe(),
                    waited,
                });
            }
            self.go_on(stops)?;
        }
        let current = self.phase().instance().cloned();
        let instance = match current {
            Some(instance) => instance,
            None => match self.adopt_leftover().await {
                Some(instance) => instance,
                None => {
                    self.go_on(stops)?;
                    self.launch(options).await?
                }
            },
        };
        // The stop that came meanwhile stops this container once the start lets go.
        self.go_on(stops)?;
        let ports = match goal {
            Goal::Started => return Ok(()),
            Goal::Healthy => None,
            Goal::Ports(ports) => Some(ports.as_slice()),
        };
        self.await_ready(&instance, ports).await
    }

    /// What a new container of this object is made of: the class's options, overridden
    /// by `options`.
    fn spec(&self, options: Option<&StartOptions>) -> ContainerSpec {
        let class = &self.inner.class;
        let opts = class.current();
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
            app: class.app.name.clone(),
            class: opts.name.clone(),
            object_id: self.inner.id,
            object_name: self.name().map(str::to_string),
            session: class.app.lease.id().to_string(),
            host: class.app.lease.host().to_string(),
            version: opts.version.clone(),
        };
        let owner = class.app.store.owner();
        let volumes = opts
            .volumes
            .iter()
            .map(|path| VolumeMount {
                name: VolumeMount::name_for(&identity, owner, path),
                path: path.clone(),
                owner: owner.to_string(),
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
            nano_cpus,
            memory_bytes,
        }
    }

    /// Creates and starts a container, and hands it to a monitor task.
    async fn launch(&self, options: Option<&StartOptions>) -> Result<Arc<Instance>, StartError> {
        let class = &self.inner.class;
        let permit =
            class
                .limit
                .clone()
                .try_acquire_owned()
                .map_err(|_| StartError::LimitReached {
                    class: self.class_name().to_string(),
                    max: self.options().max_instances,
                })?;
        let made = self.create_and_start(options).await?;
        let (metrics, labels) = self.metrics();
        let started_in = made.began.elapsed().saturating_sub(made.created_in);
        metrics.cold_start(labels, made.created_in, started_in);
        self.keep_start_timings(Some(StartTimings {
            create: made.created_in,
            start: started_in,
            ready: None,
        }));
        self.emit(
            &made.created.id,
            EventKind::Started {
                container_name: made.created.name,
                elapsed: made.began.elapsed(),
            },
        );
        let running = Running {
            version: made.version,
            image: made.image,
        };
        Ok(self
            .adopt(made.created.id, running, made.endpoint, made.began, permit)
            .await)
    }

    /// The engine's create and start, within `start_timeout`. A container that was
    /// created but could not be started is removed.
    async fn create_and_start(&self, options: Option<&StartOptions>) -> Result<Made, StartError> {
        let spec = self.spec(options);
        let (version, image) = (spec.identity.version.clone(), spec.image.clone());
        let began = Instant::now();
        let start_timeout = self.options().start_timeout;
        let runtime_error = |source| StartError::Runtime {
            object: self.describe(),
            source,
        };
        let timed_out = || StartError::StartTimeout {
            object: self.describe(),
            timeout: start_timeout,
        };
        let runtime = self.app().runtime.clone();
        let mut create = self.app().spawn(async move { runtime.create(&spec).await });
        let created = match timeout(start_timeout, &mut create).await {
            Ok(Ok(created)) => created.map_err(runtime_error)?,
            Ok(Err(_)) => {
                return Err(StartError::Interrupted {
                    object: self.describe(),
                })
            }
            Err(_) => {
                // The engine may still create it: remove it once it has.
                let runtime = self.app().runtime.clone();
                self.app().spawn(async move {
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
            self.runtime().start(&created.id),
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
                if let Err(e) = self.runtime().remove(&created.id).await {
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

    /// Makes `container_id` this object's running container and starts its monitor,
    /// before anything else that could be cut short: a container never runs unwatched.
    async fn adopt(
        &self,
        container_id: String,
        running: Running,
        endpoint: Endpoint,
        started_at: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Arc<Instance> {
        let instance = Arc::new(Instance::new(
            container_id,
            running.version,
            running.image,
            endpoint,
            started_at,
        ));
        self.phase().adopt(instance.clone());
        self.inner.activity.renew();
        self.app()
            .spawn(monitor::monitor(self.clone(), instance.clone(), permit));
        self.persist().await;
        instance
    }

    /// Whether the start that began when `stops` stops had been asked for may go on.
    fn go_on(&self, stops: u64) -> Result<(), StartError> {
        if self.app().closing() {
            return Err(self.shutting_down());
        }
        if self.inner.class.retired.load(Ordering::Acquire) {
            return Err(StartError::ClassRemoved {
                object: self.describe(),
            });
        }
        if self.inner.stops.load(Ordering::Acquire) != stops {
            return Err(StartError::Interrupted {
                object: self.describe(),
            });
        }
        Ok(())
    }

    fn shutting_down(&self) -> StartError {
        StartError::ShuttingDown {
            object: self.describe(),
        }
    }

    /// Takes over a container that an earlier berth process recorded for this object, if
    /// it still runs the class's current version; removes it otherwise. A container of a
    /// berth that did not record versions is judged by its image.
    async fn adopt_leftover(&self) -> Option<Arc<Instance>> {
        let container_id = self.phase().take_leftover()?;
        // A container paused by an earlier berth process is thawed, then judged as any.
        let _ = self.runtime().unpause(&container_id).await;
        let info = self.runtime().inspect(&container_id).await.ok();
        match info {
            Some(info)
                if info.running
                    && info
                        .identity
                        .as_ref()
                        .is_some_and(|i| i.object_id == self.inner.id)
                    && self.is_current(&info) =>
            {
                match (
                    info.endpoint,
                    self.inner.class.limit.clone().try_acquire_owned(),
                ) {
                    (Some(endpoint), Ok(permit)) => {
                        self.emit(&container_id, EventKind::Adopted);
                        // Its start was another process's, and was not measured here.
                        self.keep_start_timings(None);
                        let current = self.inner.class.current();
                        let running = Running {
                            version: current.version.clone(),
                            image: current.image.clone(),
                        };
                        let instance =
                            self.adopt(container_id, running, endpoint, Instant::now(), permit);
                        return Some(instance.await);
                    }
                    _ => {
                        let _ = self.runtime().remove(&container_id).await;
                    }
                }
            }
            Some(_) => {
                let _ = self.runtime().remove(&container_id).await;
            }
            None => {}
        }
        self.persist().await;
        None
    }

    /// Takes over `container_id`, left running by an earlier berth process, if the store
    /// records it as this object's container, it runs the class's current image, and it
    /// is still healthy. Returns whether it was re-adopted; if not, it is removed.
    pub(crate) async fn readopt(&self, container_id: &str) -> bool {
        let _starts = self.inner.starts.lock().await;
        if self.load().await.is_err() {
            return false;
        }
        let recorded = matches!(
            &*self.phase(),
            Phase::Leftover { container_id: c, .. } if c == container_id
        );
        if !recorded {
            return false;
        }
        match self.adopt_leftover().await {
            Some(instance) => self.await_ready(&instance, None).await.is_ok(),
            None => false,
        }
    }

    /// Whether a container found in the engine runs the class's current version.
    fn is_current(&self, info: &ContainerInfo) -> bool {
        let current = self.inner.class.current();
        match info.identity.as_ref().map(|i| i.version.as_str()) {
            Some("") | None => info.image == current.image,
            Some(version) => version == current.version,
        }
    }
}
