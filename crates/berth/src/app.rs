//! An app: the objects of every class, one state file, one engine, one session.
//!
//! The session id labels every container this process starts, so that shutdown removes
//! exactly those, and a later run can tell containers of a dead session from its own.

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::class::ContainerClass;
use crate::event::Event;
use crate::hooks::Hooks;
use crate::lifecycle::StopReason;
use crate::namespace::Namespace;
use crate::object::{AppContext, Class};
use crate::runtime::{labels, Runtime, RuntimeError};
use crate::store::Store;

/// How long a shutdown waits for the hooks of stopped containers.
const HOOKS_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(30);

/// What [`App::recover`] did with containers left by earlier sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Still healthy, and now this session's.
    pub adopted: usize,
    /// Exited, unknown, stale, or on an old image: removed.
    pub removed: usize,
}

/// A berth app. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct App {
    context: Arc<AppContext>,
    namespaces: Arc<Mutex<Vec<Namespace>>>,
}

impl App {
    /// An app called `name`, running containers on `runtime` and keeping state in `store`.
    /// Created inside a Tokio runtime, it runs its lifecycle tasks there.
    pub fn new(name: &str, runtime: Arc<dyn Runtime>, store: Store) -> App {
        let mut session = [0u8; 8];
        let _ = getrandom::fill(&mut session);
        App {
            context: Arc::new(AppContext {
                name: name.to_string(),
                session: session.iter().map(|b| format!("{b:02x}")).collect(),
                runtime,
                store: Arc::new(store),
                events: tokio::sync::broadcast::channel(1024).0,
                monitors: Arc::default(),
                handle: tokio::runtime::Handle::try_current().ok(),
            }),
            namespaces: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn name(&self) -> &str {
        &self.context.name
    }

    /// The id of this process's session, on the `berth.session` label of its containers.
    pub fn session(&self) -> &str {
        &self.context.session
    }

    pub fn store(&self) -> &Store {
        &self.context.store
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.context.runtime
    }

    /// Lifecycle events of every object of the app, from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.context.events.subscribe()
    }

    /// The namespace of `class`, whose objects run its containers and call `hooks`.
    pub fn namespace(&self, class: ContainerClass, hooks: Arc<dyn Hooks>) -> Namespace {
        let namespace = Namespace::new(Arc::new(Class {
            namespace_key: format!("{}/{}", self.context.name, class.name),
            limit: Arc::new(Semaphore::new(class.max_instances)),
            image: std::sync::RwLock::new(class.image.clone()),
            options: class,
            app: self.context.clone(),
            hooks,
        }));
        self.lock().push(namespace.clone());
        namespace
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Namespace>> {
        self.namespaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every container this session started (SIGTERM, then SIGKILL after each
    /// class's grace period), waits for their `on_stop` hooks, then removes anything still
    /// labelled with this session. Returns how many containers were stopped or removed.
    pub async fn shutdown(&self) -> Result<usize, RuntimeError> {
        let namespaces = self.lock().clone();
        let mut stopped = 0;
        for namespace in namespaces {
            stopped += namespace.stop_all(StopReason::Shutdown).await;
        }
        if !self.context.monitors.settled(HOOKS_AT_SHUTDOWN).await {
            tracing::warn!("some on_stop hooks were still running after {HOOKS_AT_SHUTDOWN:?}");
        }
        let swept = self
            .remove_containers(&[
                (labels::APP, self.name()),
                (labels::SESSION, self.session()),
            ])
            .await?;
        Ok(stopped + swept)
    }

    /// Deals with the containers of this app left by other sessions (a berth that was
    /// killed): a running one that its object still records, on the class's current
    /// image, that is still healthy, is re-adopted; every other one is removed. Call it
    /// after creating the app's namespaces.
    pub async fn recover(&self) -> Result<Recovery, RuntimeError> {
        let found = self
            .context
            .runtime
            .list(&[(labels::APP, self.name())])
            .await?;
        let namespaces = self.lock().clone();
        let mut recovery = Recovery::default();
        for info in found {
            if info.labels.get(labels::SESSION).map(String::as_str) == Some(self.session()) {
                continue;
            }
            let class = info
                .labels
                .get(labels::CLASS)
                .map(String::as_str)
                .unwrap_or("");
            let object = namespaces
                .iter()
                .find(|ns| ns.class_name() == class)
                .and_then(|ns| {
                    let id = info.labels.get(labels::OBJECT_ID)?;
                    ns.id_from_string(id).ok().map(|id| ns.get(id))
                });
            let adopted = match object {
                Some(object) if info.running => object.readopt(&info.id).await,
                _ => false,
            };
            if adopted {
                recovery.adopted += 1;
                continue;
            }
            self.context.runtime.remove(&info.id).await?;
            if let Err(e) = self.context.store.forget_container(&info.id) {
                tracing::warn!("{e}");
            }
            recovery.removed += 1;
        }
        Ok(recovery)
    }

    async fn remove_containers(&self, with: &[(&str, &str)]) -> Result<usize, RuntimeError> {
        let found = self.context.runtime.list(with).await?;
        for info in &found {
            self.context.runtime.remove(&info.id).await?;
        }
        Ok(found.len())
    }
}
