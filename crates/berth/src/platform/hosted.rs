//! One app that `berth serve` hosts: its [`App`], a namespace per class, and its workers,
//! which a new release swaps out while requests keep flowing.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::app::App;
use crate::class::ContainerClass;
use crate::hosts::HostPattern;
use crate::manifest::Rollout;
use crate::namespace::Namespace;
use crate::object::NoHooks;
use crate::router::Router;
use crate::worker::{Binding, Env};

use super::release::Release;
use super::PlatformError;

/// A worker of a hosted app, ready to take requests.
pub(crate) struct HostedWorker {
    pub hosts: Vec<HostPattern>,
    pub router: Router,
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

pub(crate) struct Hosted {
    pub app: App,
    state: RwLock<State>,
}

struct State {
    release: Arc<Release>,
    /// The deployment the release came from.
    deployment: i64,
    /// Class name → namespace.
    namespaces: BTreeMap<String, Namespace>,
    workers: Vec<Arc<HostedWorker>>,
}

impl Hosted {
    /// A hosted app running `release`; its namespaces exist before it recovers the
    /// containers an earlier berth process left, so that they can be re-adopted.
    pub fn new(app: App, release: Release, deployment: i64) -> Result<Hosted, PlatformError> {
        let hosted = Hosted {
            app,
            state: RwLock::new(State {
                release: Arc::new(release.clone()),
                deployment,
                namespaces: BTreeMap::new(),
                workers: Vec::new(),
            }),
        };
        hosted.apply(release, deployment)?;
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
        self.read().namespaces.values().cloned().collect()
    }

    /// Makes the app run `release`: new classes get a namespace, changed ones their new
    /// options (new starts use them at once; the caller rolls out the running instances),
    /// removed ones are taken out of service, and the workers are swapped.
    pub fn apply(&self, release: Release, deployment: i64) -> Result<Applied, PlatformError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        let mut namespaces = BTreeMap::new();
        for released in &release.classes {
            let name = released.class.name.clone();
            let namespace = match state.namespaces.remove(&name) {
                Some(namespace) => {
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
                    namespace
                }
                None => self
                    .app
                    .namespace(released.class.clone(), Arc::new(NoHooks)),
            };
            namespaces.insert(name, namespace);
        }
        let by_id: BTreeMap<&str, &ContainerClass> = release
            .classes
            .iter()
            .map(|c| (c.id.as_str(), &c.class))
            .collect();
        let mut workers = Vec::new();
        for def in &release.workers {
            let mut env = Env::new();
            for (binding, id) in &def.bindings {
                let namespace = by_id
                    .get(id.as_str())
                    .and_then(|class| namespaces.get(&class.name));
                if let Some(namespace) = namespace {
                    env.bind(binding.clone(), Binding::Container(namespace.clone()));
                }
            }
            let router = Router::new(def.routes.clone(), &env)
                .map_err(|e| PlatformError::Invalid(e.to_string()))?;
            workers.push(Arc::new(HostedWorker {
                hosts: def.hosts.clone(),
                router,
                env,
            }));
        }
        let removed = std::mem::replace(&mut state.namespaces, namespaces);
        // From the moment the new workers serve, the removed classes start nothing more.
        for namespace in removed.values() {
            namespace.retire();
        }
        state.workers = workers;
        state.release = Arc::new(release);
        state.deployment = deployment;
        Ok(Applied {
            changed,
            removed: removed.into_values().collect(),
        })
    }
}
