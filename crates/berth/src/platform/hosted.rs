//! One app that `berth serve` hosts: its [`App`], a namespace per class, and its workers,
//! (routers, or JS workers), which a new release swaps out while requests keep flowing.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::app::App;
use crate::hosts::HostPattern;
use crate::js::{start_workers, BoundClass, ErrorDetail, JsHooks, Started, WorkerLimits};
use crate::manifest::Rollout;
use crate::namespace::Namespace;
use crate::worker::{Counted, Env, Worker};

use super::release::Release;
use super::PlatformError;

/// A worker of a hosted app, ready to take requests.
pub(crate) struct HostedWorker {
    pub hosts: Vec<HostPattern>,
    pub worker: Arc<dyn Worker>,
    pub env: Env,
}

/// A class whose options a release changed: its running instances are to be rolled out.
pub(crate) struct Changed {
    pub namespace: Namespace,
    pub rollout: Rollout,
}

/// What applying a release did.
pub(crate) struct Applied {
    pub changed: Vec<Changed>,
    /// Classes the release no longer has: their containers are to be stopped.
    pub removed: Vec<Namespace>,
}

/// A class served: its namespace, and the hooks that run its code if it has any. The
/// hooks are the namespace's for its whole life, and each release points them at its
/// own worker.
#[derive(Clone)]
struct Served {
    namespace: Namespace,
    hooks: Arc<JsHooks>,
}

/// A release made ready to apply: its classes' namespaces (new ones made, not yet
/// serving) and its workers started. Starting a JS worker runs its module, which takes a
/// while and may fail; staging does it before the release replaces anything.
pub(crate) struct Staged {
    release: Release,
    /// Class name → the class.
    classes: BTreeMap<String, Served>,
    /// The namespaces made for this release.
    fresh: Vec<Namespace>,
    started: Started,
    workers: Vec<Arc<HostedWorker>>,
}

impl Staged {
    pub fn release(&self) -> &Release {
        &self.release
    }
}

pub(crate) struct Hosted {
    pub app: App,
    state: RwLock<State>,
}

struct State {
    release: Arc<Release>,
    /// The deployment the release came from.
    deployment: i64,
    /// Class name → the class.
    classes: BTreeMap<String, Served>,
    workers: Vec<Arc<HostedWorker>>,
    /// The cron schedules of the applied release's workers; replaced with them.
    schedules: crate::router::Running,
}

impl Hosted {
    /// A hosted app running `release`; its namespaces exist before it recovers the
    /// containers an earlier berth process left, so that they can be re-adopted.
    pub async fn new(app: App, release: Release, deployment: i64) -> Result<Hosted, PlatformError> {
        let hosted = Hosted {
            app,
            state: RwLock::new(State {
                release: Arc::new(release.clone()),
                deployment,
                classes: BTreeMap::new(),
                workers: Vec::new(),
                schedules: crate::router::Running::default(),
            }),
        };
        let staged = hosted.stage(release).await?;
        hosted.apply(staged, deployment);
        Ok(hosted)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn release(&self) -> Arc<Release> {
        self.read().release.clone()
    }

    pub fn deployment(&self) -> i64 {
        self.read().deployment
    }

    pub fn workers(&self) -> Vec<Arc<HostedWorker>> {
        self.read().workers.clone()
    }

    pub fn namespaces(&self) -> Vec<Namespace> {
        self.read()
            .classes
            .values()
            .map(|c| c.namespace.clone())
            .collect()
    }

    /// Makes ready what `release` runs: the classes it keeps keep their namespaces, new
    /// ones get one (serving nothing until applied), and its workers are started.
    pub async fn stage(&self, release: Release) -> Result<Staged, PlatformError> {
        let mut classes = BTreeMap::new();
        let mut fresh = Vec::new();
        {
            let state = self.read();
            for released in &release.classes {
                let name = released.class.name.clone();
                let served = match state.classes.get(&name) {
                    Some(served) => served.clone(),
                    None => {
                        let hooks = JsHooks::new(&name);
                        let namespace = self.app.namespace(released.class.clone(), hooks.clone());
                        fresh.push(namespace.clone());
                        Served { namespace, hooks }
                    }
                };
                classes.insert(name, served);
            }
        }
        let bound: BTreeMap<String, BoundClass> = release
            .classes
            .iter()
            .filter_map(|c| {
                let served = classes.get(&c.class.name)?;
                Some((
                    c.id.clone(),
                    BoundClass {
                        namespace: served.namespace.clone(),
                        hooks: served.hooks.clone(),
                        exported_by: c.exported_by.clone(),
                    },
                ))
            })
            .collect();
        // A server's clients are not the app's developers: a failed request's 500 says
        // that the worker failed, and the error with its stack goes to the log.
        let limits = WorkerLimits {
            errors: ErrorDetail::Logged,
            ..WorkerLimits::default()
        };
        let started = match start_workers(&release.workers, &bound, limits).await {
            Ok(started) => started,
            Err(e) => {
                self.forget(&fresh);
                return Err(PlatformError::Invalid(format!(
                    "a worker cannot start: {e}; fix it and deploy again"
                )));
            }
        };
        let workers = release
            .workers
            .iter()
            .zip(&started.workers)
            .map(|(def, started)| {
                let (app, metrics) = (self.app.name(), self.app.metrics().clone());
                let counted = Counted::new(started.worker.clone(), app, &def.name, metrics);
                Arc::new(HostedWorker {
                    hosts: def.hosts.clone(),
                    worker: Arc::new(counted),
                    env: started.env.clone(),
                })
            })
            .collect();
        Ok(Staged {
            release,
            classes,
            fresh,
            started,
            workers,
        })
    }

    /// Drops a staged release that will not be applied: the namespaces made for it go.
    pub fn discard(&self, staged: Staged) {
        self.forget(&staged.fresh);
    }

    fn forget(&self, namespaces: &[Namespace]) {
        for namespace in namespaces {
            namespace.retire();
            self.app.forget_namespace(namespace);
        }
    }

    /// Makes the app run a staged release: changed classes get their new options (new
    /// starts use them at once; the caller rolls out the running instances), removed
    /// ones are taken out of service, the hooks of each class go to the new workers, and
    /// the workers are swapped.
    pub fn apply(&self, staged: Staged, deployment: i64) -> Applied {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        for released in &staged.release.classes {
            let Some(served) = state.classes.get(&released.class.name) else {
                continue;
            };
            let namespace = &served.namespace;
            let old = namespace.options();
            // Options of berth's own conduct (timeouts, limits) take effect for new
            // starts and running containers alike; only a new version rolls out.
            if format!("{old:?}") != format!("{:?}", released.class) {
                namespace.set_options(released.class.clone());
            }
            if old.version() != released.class.version() {
                changed.push(Changed {
                    namespace: namespace.clone(),
                    rollout: released.rollout.clone(),
                });
            }
        }
        for served in staged.classes.values() {
            if !staged.started.hooks_attached(&served.hooks) {
                served.hooks.detach();
            }
        }
        staged.started.attach_hooks();
        let mut removed = std::mem::replace(&mut state.classes, staged.classes);
        removed.retain(|name, _| !state.classes.contains_key(name));
        // From the moment the new workers serve, the removed classes start nothing more.
        for served in removed.values() {
            served.namespace.retire();
            served.hooks.detach();
        }
        state.workers = staged.workers;
        // The old release's schedules stop here, and the new one's start.
        state.schedules = staged.started.start_schedules();
        state.release = Arc::new(staged.release);
        state.deployment = deployment;
        Applied {
            changed,
            removed: removed.into_values().map(|c| c.namespace).collect(),
        }
    }
}
