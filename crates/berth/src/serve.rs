//! What `berth serve` runs: the data folder (one server per folder), the platform with
//! every app, the public listener that routes by `Host`, and the control API.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::Info;
use crate::build::Builder;
use crate::control::{Control, Token, TokenError};
use crate::platform::{Platform, PlatformError};
use crate::runtime::Runtime;
use crate::server::{self, ServeOptions};
use crate::store::{Store, StoreError};
use crate::worker::{Env, Worker};

/// Why `berth serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot use the data folder {path}: {reason}; pick another with --data, or fix its permissions")]
    Data { path: PathBuf, reason: String },
    #[error("another berth serve uses the data folder {path}; stop it first, or give this one another --data")]
    Busy { path: PathBuf },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("cannot listen on {addr} ({what}): {reason}; pick another address")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        reason: String,
    },
}

/// The folder `berth serve` keeps its state in: `/var/lib/berth` for root, otherwise
/// `$XDG_DATA_HOME/berth` (or `~/.local/share/berth`).
pub fn default_data_dir() -> PathBuf {
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
    if root {
        return PathBuf::from("/var/lib/berth");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("berth"),
        _ => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".local/share/berth"))
            .unwrap_or_else(|| PathBuf::from(".berth-serve")),
    }
}

/// The data folder, held: its lock, its database and its token.
pub struct DataDir {
    pub path: PathBuf,
    pub store: Store,
    pub token: Token,
    _lock: File,
}

impl DataDir {
    /// Opens (creating, mode 0700) `path`, and takes its lock. It blocks: call it before
    /// serving, or on a blocking thread.
    pub fn open(path: &Path) -> Result<DataDir, ServeError> {
        let data = |e: std::io::Error| ServeError::Data {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(data)?;
        let lock = File::create(path.join("lock")).map_err(data)?;
        if lock.try_lock().is_err() {
            return Err(ServeError::Busy {
                path: path.to_path_buf(),
            });
        }
        let token = Token::load_or_create(path)?;
        let store = Store::open(path.join("state.db"))?;
        Ok(DataDir {
            path: path.to_path_buf(),
            store,
            token,
            _lock: lock,
        })
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The public listener, where apps are reached by `Host`.
    pub listen: SocketAddr,
    /// The control API's listener.
    pub control: SocketAddr,
    /// The registry `berth deploy` pushes to, as `host:port`.
    pub registry: Option<String>,
    /// On shutdown, stop every container instead of leaving them for the next start.
    pub stop_on_exit: bool,
    /// How long requests in flight may take to finish on shutdown.
    pub drain: Duration,
}

/// Both listeners, bound, and the platform they serve.
pub struct Bound {
    pub platform: Arc<Platform>,
    pub public: SocketAddr,
    pub control: SocketAddr,
    public_listener: tokio::net::TcpListener,
    control_listener: tokio::net::TcpListener,
    control_worker: Arc<Control>,
    config: ServeConfig,
}

/// Restores every app, then binds both listeners.
pub async fn start(
    data: &DataDir,
    runtime: Arc<dyn Runtime>,
    images: Arc<dyn Builder>,
    platform_name: String,
    config: ServeConfig,
) -> Result<Bound, ServeError> {
    let platform = Platform::start(runtime, images, data.store.clone()).await?;
    let bind = |addr: SocketAddr, what: &'static str| {
        let listener = server::bind(addr).map_err(|e| ServeError::Listen {
            addr,
            what,
            reason: e.to_string(),
        })?;
        let local = listener.local_addr().map_err(|e| ServeError::Listen {
            addr,
            what,
            reason: e.to_string(),
        })?;
        Ok::<_, ServeError>((listener, local))
    };
    let (public_listener, public) = bind(config.listen, "public listener")?;
    let (control_listener, control) = bind(config.control, "control API")?;
    let info = Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        registry: config.registry.clone(),
        platform: platform_name,
    };
    let control_worker = Arc::new(Control::new(platform.clone(), data.token.clone(), info));
    Ok(Bound {
        platform,
        public,
        control,
        public_listener,
        control_listener,
        control_worker,
        config,
    })
}

impl Bound {
    /// Serves until `shutdown` resolves; then drains requests in flight and stops the
    /// containers, or leaves them running for the next start (see
    /// [`ServeConfig::stop_on_exit`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let options = ServeOptions {
            drain: self.config.drain,
            ..ServeOptions::default()
        };
        let public = tokio::spawn(server::serve_with(
            self.public_listener,
            self.platform.clone() as Arc<dyn Worker>,
            Env::new(),
            stopped(stop_rx.clone()),
            options.clone(),
        ));
        let control = tokio::spawn(server::serve_with(
            self.control_listener,
            self.control_worker as Arc<dyn Worker>,
            Env::new(),
            stopped(stop_rx),
            options,
        ));
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = public.await;
        let _ = control.await;
        self.platform.shutdown(self.config.stop_on_exit).await;
    }
}
