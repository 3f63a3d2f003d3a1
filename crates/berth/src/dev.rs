//! A development session: what `berth dev` does, from a folder with a `berth.toml` to
//! workers ready to serve, and back to nothing left running.
//!
//! The app's state lives in `<dir>/.berth/` (ignored by git), locked so that two sessions
//! of one app cannot remove each other's containers.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::App;
use crate::build::{self, BuildError, Builder};
use crate::lifecycle::StopReason;
use crate::manifest::{ImageSource, Manifest, ManifestError};
use crate::namespace::Namespace;
use crate::object::NoHooks;
use crate::router::{Router, RouterError};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::RuntimeError;
use crate::store::{Store, StoreError};
use crate::worker::{Binding, Env, Worker};

/// The folder, inside the app's folder, that holds berth's state.
pub const STATE_DIR: &str = ".berth";

/// Why a session could not start or rebuild.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Engine(#[from] RuntimeError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    State(#[from] StoreError),
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error(transparent)]
    Random(#[from] crate::id::RandomError),
    #[error("cannot use {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("another berth session is running for {dir}; stop it first (its lock is {lock})")]
    Busy { dir: PathBuf, lock: PathBuf },
    #[error("image {image:?} of container {container} is not in the Docker Engine, and berth dev never pulls; pull or build it, or give the container a build")]
    PrebuiltMissing { container: String, image: String },
}

/// A worker ready to serve.
pub struct WorkerHandle {
    pub name: String,
    pub worker: Arc<dyn Worker>,
    pub env: Env,
}

/// A running development session.
pub struct Session {
    pub manifest: Manifest,
    pub app: App,
    runtime: Arc<DockerRuntime>,
    /// Container resource id → its namespace.
    namespaces: BTreeMap<String, Namespace>,
    workers: Vec<WorkerHandle>,
    _lock: File,
}

impl Session {
    /// Loads `dir/berth.toml`, takes the app's lock, builds the images, re-adopts or
    /// removes containers left by an earlier session that was killed, and prepares the
    /// workers. Progress
    /// lines go to `progress`.
    pub async fn open(
        dir: &Path,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Session, DevError> {
        let manifest = Manifest::load(dir)?;
        let state_dir = dir.join(STATE_DIR);
        let io = |path: &Path, e: std::io::Error| DevError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&state_dir).map_err(|e| io(&state_dir, e))?;
        let gitignore = state_dir.join(".gitignore");
        if !gitignore.exists() {
            std::fs::write(&gitignore, "# berth's local state\n*\n")
                .map_err(|e| io(&gitignore, e))?;
        }
        let lock_path = state_dir.join("lock");
        let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(DevError::Busy {
                dir: dir.to_path_buf(),
                lock: lock_path,
            });
        }

        let runtime = Arc::new(DockerRuntime::connect().await?);
        let store = Store::open(state_dir.join("state.db"))?;
        let app = App::new(&manifest.name, runtime.clone(), store)?;
        let mut namespaces = BTreeMap::new();
        for def in &manifest.containers {
            let image = image_of(&runtime, &manifest, &def.id, &def.image, progress).await?;
            let mut class = def.class.clone();
            class.image = image;
            namespaces.insert(def.id.clone(), app.namespace(class, Arc::new(NoHooks)));
        }
        let recovery = app.recover().await?;
        if recovery.adopted > 0 {
            progress(&format!(
                "re-adopted {} running container(s) of an earlier session of {}",
                recovery.adopted, manifest.name
            ));
        }
        if recovery.removed > 0 {
            progress(&format!(
                "removed {} container(s) left behind by an earlier session of {}",
                recovery.removed, manifest.name
            ));
        }
        let mut workers = Vec::new();
        for def in &manifest.workers {
            let mut env = Env::new();
            for (binding, container) in &def.bindings {
                if let Some(ns) = namespaces.get(container) {
                    env.bind(binding.clone(), Binding::Container(ns.clone()));
                }
            }
            let router = Router::new(def.routes.clone(), &env)?;
            workers.push(WorkerHandle {
                name: def.name.clone(),
                worker: Arc::new(router),
                env,
            });
        }
        Ok(Session {
            manifest,
            app,
            runtime,
            namespaces,
            workers,
            _lock: lock,
        })
    }

    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    pub fn runtime(&self) -> &Arc<DockerRuntime> {
        &self.runtime
    }

    /// Rebuilds every image; where one changed, new containers use it and running ones
    /// are replaced (stopped, to be started again by the next request). Returns how many
    /// containers were replaced.
    pub async fn rebuild(
        &self,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<usize, DevError> {
        let mut replaced = 0;
        for def in &self.manifest.containers {
            let Some(namespace) = self.namespaces.get(&def.id) else {
                continue;
            };
            let image =
                image_of(&self.runtime, &self.manifest, &def.id, &def.image, progress).await?;
            if image != namespace.image() {
                namespace.set_image(&image);
                replaced += namespace.stop_all(StopReason::Replaced).await;
            }
        }
        Ok(replaced)
    }

    /// Stops and removes every container of the session.
    pub async fn shutdown(&self) -> Result<usize, RuntimeError> {
        self.app.shutdown().await
    }
}

async fn image_of(
    runtime: &DockerRuntime,
    manifest: &Manifest,
    container: &str,
    source: &ImageSource,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, DevError> {
    match source {
        ImageSource::Build(spec) => {
            let mut prefixed = |line: &str| progress(&format!("[build {container}] {line}"));
            Ok(build::build(runtime, spec, &manifest.dir, &mut prefixed)
                .await?
                .image)
        }
        ImageSource::Prebuilt(image) => {
            // An engine that cannot answer counts as not having the image.
            if !matches!(runtime.has_image(image).await, Ok(true)) {
                return Err(DevError::PrebuiltMissing {
                    container: container.to_string(),
                    image: image.clone(),
                });
            }
            Ok(image.clone())
        }
    }
}
