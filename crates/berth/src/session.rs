//! A development session: what `berth dev` does, from a folder with a `berth.toml` to
//! workers serving on local ports, and back to nothing left running.
//!
//! The engine and the image builder are handed in, so that a session runs on whatever
//! engine the caller connected to. The app's state lives in `<dir>/.berth/` (ignored by
//! git), locked so that two sessions of one app cannot remove each other's containers.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

mod control;

pub use control::{DevControl, CONTROL_SOCKET};

use crate::app::App;
use crate::app::OtherSession;
use crate::build::{self, BuildError, Builder};
use crate::js::{self, BoundClass, JsHooks, WorkerLimits, WorkersError};
use crate::lease::LeaseError;
use crate::logbook::Logbook;
use crate::manifest::{ContainerDef, ImageSource, Manifest, Place, FILE_NAME};
use crate::metrics::Metrics;
use crate::namespace::Namespace;
use crate::runtime::{Runtime, RuntimeError};
use crate::server::{self, ServeOptions};
use crate::store::{Store, StoreError};
use crate::worker::{Counted, Env, Worker};

/// How long a rebuild lets requests in flight finish on the containers it replaces.
const REPLACE_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The folder, inside the app's folder, that holds berth's state.
pub const STATE_DIR: &str = ".berth";

/// Where a dev session of the app in `dir` keeps its containers' output.
pub fn logs_dir(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR).join("logs")
}

/// Why a session could not start, serve or rebuild.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Engine(#[from] RuntimeError),
    /// A build failed; `place` is where the manifest asks for it.
    #[error("{place}: {error}")]
    Build {
        place: Box<Place>,
        error: Box<BuildError>,
    },
    #[error(transparent)]
    State(#[from] StoreError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("another berth session of app {app} is running: {}; stop it first, or give this copy of the app another name in berth.toml{}", .others.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), remote_hint(.others))]
    AnotherSession {
        app: String,
        others: Vec<OtherSession>,
    },
    #[error("cannot use {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("another berth session is running for {dir}; stop it first (its lock is {lock})")]
    Busy { dir: PathBuf, lock: PathBuf },
    #[error("{place}: image {image:?} is not in the container engine, and berth dev never pulls; pull or build it, or give the container a build")]
    PrebuiltMissing { place: Box<Place>, image: String },
    #[error("cannot listen on {addr}: {reason}; pick another port with --port")]
    Listen { addr: SocketAddr, reason: String },
    /// A worker could not be made (a JS worker's entrypoint could not be loaded).
    #[error(transparent)]
    Workers(#[from] WorkersError),
    #[error("{workers} workers need {workers} ports from {port} on, and the last would be past 65535; pick a lower --port, or 0 for free ports")]
    NoPortLeft { port: u16, workers: usize },
}

/// A worker ready to serve.
pub struct WorkerHandle {
    pub name: String,
    pub worker: Arc<dyn Worker>,
    pub env: Env,
}

/// A worker's listening socket, bound and not yet serving.
pub struct Listening {
    /// The worker's name.
    pub worker: String,
    pub addr: SocketAddr,
    listener: TcpListener,
    handler: Arc<dyn Worker>,
    env: Env,
}

/// A running development session.
pub struct Session {
    pub manifest: Manifest,
    pub app: App,
    builder: Arc<dyn Builder>,
    /// Container resource id → its namespace.
    namespaces: BTreeMap<String, Namespace>,
    workers: Vec<WorkerHandle>,
    /// The workers' cron schedules, which run as long as the session.
    _schedules: crate::router::Running,
    _lock: File,
}

impl Session {
    /// Takes the app's lock, builds the images with `builder`, re-adopts or removes
    /// containers left on `runtime` by an earlier session that was killed, and prepares
    /// the workers. Progress lines go to `progress`.
    pub async fn open(
        manifest: Manifest,
        runtime: Arc<dyn Runtime>,
        builder: Arc<dyn Builder>,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Session, SessionError> {
        let dir = manifest.dir.clone();
        let (lock, store) = tokio::task::spawn_blocking(move || claim_state(&dir))
            .await
            .map_err(|e| SessionError::Io {
                path: manifest.dir.join(STATE_DIR),
                reason: e.to_string(),
            })??;
        let app = App::new(&manifest.name, runtime, store)?;
        app.keep_logs(Logbook::new(logs_dir(&manifest.dir)));
        let others = app.other_sessions().await?;
        if !others.is_empty() {
            return Err(SessionError::AnotherSession {
                app: manifest.name.clone(),
                others,
            });
        }
        let mut namespaces = BTreeMap::new();
        let mut classes = BTreeMap::new();
        for def in &manifest.containers {
            let image = image_of(builder.as_ref(), &manifest, def, progress).await?;
            let mut class = def.class.clone();
            class.image = image;
            let hooks = JsHooks::new(&class.name);
            let namespace = app.namespace(class, hooks.clone());
            namespaces.insert(def.id.clone(), namespace.clone());
            let exported_by = def.exported_by.clone();
            classes.insert(
                def.id.clone(),
                BoundClass {
                    namespace,
                    hooks,
                    exported_by,
                },
            );
        }
        let recovery = app.recover().await?;
        if !recovery.others.is_empty() {
            return Err(SessionError::AnotherSession {
                app: manifest.name.clone(),
                others: recovery.others,
            });
        }
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
        let started =
            js::start_workers(&manifest.workers, &classes, WorkerLimits::default()).await?;
        started.attach_hooks();
        let schedules = started.start_schedules();
        let metrics = app.metrics().clone();
        let workers = started
            .workers
            .into_iter()
            .map(|w| WorkerHandle {
                worker: Arc::new(Counted::new(w.worker, app.name(), &w.name, metrics.clone())),
                name: w.name,
                env: w.env,
            })
            .collect();
        Ok(Session {
            manifest,
            app,
            builder,
            namespaces,
            workers,
            _schedules: schedules,
            _lock: lock,
        })
    }

    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// Where another command of this user can ask the session to start an object (see
    /// [`DevControl`]): the socket, to serve with [`crate::server::serve_with`], the
    /// worker, and the socket's file, removed when dropped.
    pub fn control(
        &self,
    ) -> Result<
        (
            tokio::net::UnixListener,
            Arc<DevControl>,
            crate::serve::SocketFile,
        ),
        SessionError,
    > {
        let path = self.manifest.dir.join(STATE_DIR).join(CONTROL_SOCKET);
        let (listener, file) = crate::serve::bind_socket(&path).map_err(|e| SessionError::Io {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok((listener, Arc::new(DevControl::new(&self.namespaces)), file))
    }

    /// What the session's objects and workers count.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.app.metrics()
    }

    /// Binds one socket per worker on `host`: the first on `port`, each further worker
    /// on the next port (0: free ports).
    pub fn listen(&self, host: IpAddr, port: u16) -> Result<Vec<Listening>, SessionError> {
        let mut listening = Vec::new();
        for (i, handle) in self.workers.iter().enumerate() {
            let port = match port {
                0 => 0,
                p => u16::try_from(i).ok().and_then(|i| p.checked_add(i)).ok_or(
                    SessionError::NoPortLeft {
                        port: p,
                        workers: self.workers.len(),
                    },
                )?,
            };
            let addr = SocketAddr::new(host, port);
            let listen_error = |e: std::io::Error| SessionError::Listen {
                addr,
                reason: e.to_string(),
            };
            let listener = server::bind(addr).map_err(listen_error)?;
            let addr = listener.local_addr().map_err(listen_error)?;
            listening.push(Listening {
                worker: handle.name.clone(),
                addr,
                listener,
                handler: handle.worker.clone(),
                env: handle.env.clone(),
            });
        }
        Ok(listening)
    }

    /// Rebuilds every image; where one changed, new containers use it and running ones
    /// are replaced (stopped, to be started again by the next request). Returns how many
    /// containers were replaced.
    pub async fn rebuild(
        &self,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<usize, SessionError> {
        let mut replaced = 0;
        for def in &self.manifest.containers {
            let Some(namespace) = self.namespaces.get(&def.id) else {
                continue;
            };
            let image = image_of(self.builder.as_ref(), &self.manifest, def, progress).await?;
            if image != namespace.image() {
                namespace.set_image(&image);
                replaced += namespace.replace_all(REPLACE_DRAIN).await;
            }
        }
        Ok(replaced)
    }

    /// Stops and removes every container of the session.
    pub async fn shutdown(&self) -> Result<usize, RuntimeError> {
        self.app.shutdown().await
    }
}

/// How to clear a session on another machine that has in fact ended.
fn remote_hint(others: &[OtherSession]) -> String {
    match others.iter().find(|o| !o.here) {
        Some(other) => format!(
            "; if the session on another machine has ended, remove its containers: docker rm -f $(docker ps -aq --filter label=berth.session={})",
            other.session
        ),
        None => String::new(),
    }
}

/// Serves every bound worker until `stop` turns true, then lets requests in flight
/// finish for up to `options.drain` while new ones get a 503.
pub async fn serve(listening: Vec<Listening>, stop: watch::Receiver<bool>, options: ServeOptions) {
    let servers = listening.into_iter().map(|l| {
        let mut stop = stop.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        server::serve_with(l.listener, l.handler, l.env, shutdown, options.clone())
    });
    futures_util::future::join_all(servers).await;
}

/// Creates `<dir>/.berth` (ignored by git), takes its lock and opens its store. Blocks.
fn claim_state(dir: &Path) -> Result<(File, Store), SessionError> {
    let state_dir = dir.join(STATE_DIR);
    let io = |path: &Path, e: std::io::Error| SessionError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&state_dir).map_err(|e| io(&state_dir, e))?;
    let gitignore = state_dir.join(".gitignore");
    if !gitignore.exists() {
        std::fs::write(&gitignore, "# berth's local state\n*\n").map_err(|e| io(&gitignore, e))?;
    }
    let lock_path = state_dir.join("lock");
    let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
    if lock.try_lock().is_err() {
        return Err(SessionError::Busy {
            dir: dir.to_path_buf(),
            lock: lock_path,
        });
    }
    let store = Store::open(state_dir.join("state.db"))?;
    Ok((lock, store))
}

async fn image_of(
    builder: &dyn Builder,
    manifest: &Manifest,
    def: &ContainerDef,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, SessionError> {
    match &def.image {
        ImageSource::Build(spec) => {
            let mut prefixed = |line: &str| progress(&format!("[build {}] {line}", def.id));
            let manifest_file = manifest.dir.join(FILE_NAME);
            let origin = build::Origin {
                app: &manifest.name,
                manifest: &manifest_file,
            };
            build::build(builder, spec, origin, &mut prefixed)
                .await
                .map(|built| built.image)
                .map_err(|error| SessionError::Build {
                    place: Box::new(def.image_place.clone()),
                    error: Box::new(error),
                })
        }
        ImageSource::Prebuilt(image) => {
            // An engine that cannot answer counts as not having the image.
            if !matches!(builder.has_image(image).await, Ok(true)) {
                return Err(SessionError::PrebuiltMissing {
                    place: Box::new(def.image_place.clone()),
                    image: image.clone(),
                });
            }
            Ok(image.clone())
        }
    }
}
