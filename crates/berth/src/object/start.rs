//! Starting an object's container: one start at a time, shared by everyone who waits.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::error::StartError;
use super::hooks::ObjectError;
use super::instance::Instance;
use super::live::{Goal, Phase};
use super::make::Owner;
use super::standby::Spare;
use super::{monitor, Attempts, Object};
use crate::event::EventKind;
use crate::lifecycle::after;
use crate::runtime::ContainerInfo;

/// Per-start overrides of the class options.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Added to (and overriding) the class's `env_vars`.
    pub env_vars: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub enable_internet: Option<bool>,
}

impl StartOptions {
    /// Whether they override nothing: such a start may take a standby spare.
    pub fn is_empty(&self) -> bool {
        self.env_vars.is_empty() && self.entrypoint.is_none() && self.enable_internet.is_none()
    }
}

impl Object {
    /// `options` without what the class sets already: a start from a class's own code
    /// passes the instance's fields whole, and one that changes none of them may still
    /// take a standby spare.
    pub fn beyond_class(&self, mut options: StartOptions) -> StartOptions {
        let class = self.options();
        options
            .env_vars
            .retain(|key, value| class.env_vars.get(key) != Some(value));
        if options.entrypoint == class.entrypoint {
            options.entrypoint = None;
        }
        if options.enable_internet == Some(class.enable_internet) {
            options.enable_internet = None;
        }
        options
    }
}

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

/// Whether a start may take a spare of the class's standby pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spares {
    MayTake,
    Never,
}

impl Object {
    /// Brings the container to `goal`, starting it if needed. Callers that queued behind
    /// a start that failed get that start's error instead of starting again.
    pub(super) async fn ensure(
        &self,
        goal: Goal,
        options: Option<&StartOptions>,
    ) -> Result<(), Arc<StartError>> {
        self.ensure_with(goal, options, Spares::MayTake).await
    }

    /// Takes over the running container of the class's current version that another
    /// router held, now that this one is the object's home (see `namespace::homes`): the
    /// start adopts it, as it adopts any it meets. It never takes a standby spare, which
    /// would run beside the container it is meant to take over.
    pub(crate) async fn take_over(&self) -> Result<(), Arc<StartError>> {
        self.ensure_with(Goal::Healthy, None, Spares::Never).await
    }

    /// [`Object::take_over`], if the class's current version here is `version`;
    /// `Ok(false)` otherwise.
    pub async fn take_over_at(&self, version: &str) -> Result<bool, Arc<StartError>> {
        if self.inner.class.current().version != version {
            return Ok(false);
        }
        self.take_over().await.map(|()| true)
    }

    async fn ensure_with(
        &self,
        goal: Goal,
        options: Option<&StartOptions>,
        spares: Spares,
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
        // Callers that queue behind a start are woken all at once when it ends, not one
        // after another through the lock: a stampede of a thousand first requests then
        // goes on together. Only those the start did not satisfy take the lock.
        let attempts = loop {
            let ended = self.inner.start_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.phase().reached(&goal) {
                return Ok(());
            }
            tokio::select! {
                biased;
                attempts = self.inner.starts.clone().lock_owned() => break attempts,
                () = &mut ended => {}
            }
        };
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
            .spawn(async move { object.attempt(attempts, goal, options, spares, stops).await })
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
        spares: Spares,
        stops: u64,
    ) -> Result<(), Arc<StartError>> {
        attempts.number += 1;
        let number = attempts.number;
        let result = self
            .start_locked(&goal, options.as_ref(), spares, stops)
            .await
            .map_err(Arc::new);
        self.inner
            .finished_attempts
            .store(number, Ordering::Release);
        if let Err(error) = &result {
            attempts.last_failure = Some((number, error.clone()));
        }
        self.inner.start_ended.notify_waiters();
        if let Err(error) = &result {
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
        spares: Spares,
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
                    self.launch(options, spares).await?
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

    /// Takes a spare of the standby pool, or creates and starts a container, and hands it
    /// to a monitor task.
    async fn launch(
        &self,
        options: Option<&StartOptions>,
        spares: Spares,
    ) -> Result<Arc<Instance>, StartError> {
        let class = &self.inner.class;
        class.standby.open();
        let current = self.options();
        // A start with options of its own needs a container made for it; so does an
        // object with volumes, which a spare was not made with.
        let may_take = spares == Spares::MayTake
            && options.is_none_or(StartOptions::is_empty)
            && current.volumes.is_empty();
        if may_take {
            if let Some(spare) = class.standby.take(class, &current.version) {
                return Ok(self.assign(spare));
            }
        }
        let limit_reached = || StartError::LimitReached {
            class: self.class_name().to_string(),
            max: current.max_instances,
        };
        let permit = match class.limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => match class.standby.evict(class).await {
                Some(permit) => permit,
                // A spare on its way (being started, or one of an old version being
                // removed) is worth waiting for, rather than a 503.
                None => match class
                    .standby
                    .wait(class, &current.version, after(current.start_timeout))
                    .await
                {
                    Some(Ok(spare)) if may_take => return Ok(self.assign(spare)),
                    Some(Ok(spare)) => class.standby.surrender(class, spare).await,
                    Some(Err(permit)) => permit,
                    None => return Err(limit_reached()),
                },
            },
        };
        let owner = Owner {
            object_id: self.inner.id,
            object_name: self.name(),
            standby: false,
        };
        let spec = class.spec(&owner, options);
        let made = class.make(spec, &self.describe()).await?;
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
        let instance = Instance::new(
            made.created.id,
            made.version,
            made.image,
            made.endpoint,
            made.began,
        );
        Ok(self.adopt(instance, permit).await)
    }

    /// Makes a spare of the standby pool this object's container, and starts its monitor.
    fn assign(&self, spare: Spare) -> Arc<Instance> {
        let took = Instant::now();
        // The spare's own start, which no request waited for.
        self.keep_start_timings(Some(spare.timings));
        let (container_id, container_name) =
            (spare.container_id.clone(), spare.container_name.clone());
        let (instance, permit) = spare.into_instance(took);
        let instance = Arc::new(instance);
        self.phase().adopt(instance.clone());
        self.inner.activity.renew();
        self.app()
            .spawn(monitor::monitor(self.clone(), instance.clone(), permit));
        // The request need not wait for the store: should berth die before the record
        // is written, the spare is removed at the next start, as any unassigned one.
        self.persist_later();
        self.emit(
            &container_id,
            EventKind::Assigned {
                container_name,
                elapsed: took.elapsed(),
            },
        );
        instance
    }

    /// Makes `instance` this object's running container and starts its monitor, before
    /// anything else that could be cut short: a container never runs unwatched.
    async fn adopt(&self, instance: Instance, permit: OwnedSemaphorePermit) -> Arc<Instance> {
        let instance = Arc::new(instance);
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
                        // A spare's labels name no object; the store said it is this one's.
                        .is_some_and(|i| i.object_id == self.inner.id || i.standby)
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
                        let instance = Instance::new(
                            container_id,
                            current.version.clone(),
                            current.image.clone(),
                            endpoint,
                            Instant::now(),
                        );
                        return Some(self.adopt(instance, permit).await);
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
