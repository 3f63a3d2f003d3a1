//! What `berth serve` runs: the data folder (one server per folder), the platform with
//! every app, the public listener that routes by `Host` (over HTTPS when given a
//! certificate), and the control API (on TCP, or on a unix socket of mode 0600).

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::Info;
use crate::build::Builder;
use crate::control::{Control, Token, TokenError};
use crate::peers::Peers;
use crate::platform::peer::PeerListener;
use crate::platform::{Platform, PlatformError};
use crate::runtime::Runtime;
use crate::server::{self, ServeOptions};
use crate::store::{Store, StoreError};
use crate::tls::Tls;
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
    #[error("cannot make the control socket {path}: {reason}; check that its folder exists and is writable, or pick another path with --control unix:PATH")]
    Socket { path: PathBuf, reason: String },
    #[error("another process listens on the control socket {path}; stop it (another berth serve?), or pick another path with --control unix:PATH")]
    SocketInUse { path: PathBuf },
    #[error("{path} exists and is not a socket; berth replaces only a stale socket: remove the file yourself, or pick another path with --control unix:PATH")]
    NotASocket { path: PathBuf },
}

/// Where the control API listens: a TCP address, or a unix socket (`unix:PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A `--control` value that is neither `HOST:PORT` nor `unix:PATH`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a control address: give IP:PORT (such as 127.0.0.1:7878) or unix:PATH (such as unix:/run/berth/control.sock)")]
pub struct ControlAddrError(String);

impl std::str::FromStr for ControlAddr {
    type Err = ControlAddrError;

    fn from_str(text: &str) -> Result<ControlAddr, ControlAddrError> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ControlAddrError(text.to_string()));
            }
            return Ok(ControlAddr::Unix(PathBuf::from(path)));
        }
        text.parse()
            .map(ControlAddr::Tcp)
            .map_err(|_| ControlAddrError(text.to_string()))
    }
}

impl std::fmt::Display for ControlAddr {
    /// `http://IP:PORT` or `unix:PATH`: what a client is given.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Tcp(addr) => write!(f, "http://{addr}"),
            ControlAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
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
        create_private(path).map_err(data)?;
        let lock = File::create(path.join("lock")).map_err(data)?;
        if lock.try_lock().is_err() {
            return Err(ServeError::Busy {
                path: path.to_path_buf(),
            });
        }
        let token = Token::load_or_create(path)?;
        let store = Store::open(path.join("state.db"))?;
        // Manifests (with their environment) and objects' storage are in the database.
        for file in ["state.db", "state.db-wal", "state.db-shm"] {
            let file = path.join(file);
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(data)?;
            }
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            store,
            token,
            _lock: lock,
        })
    }
}

/// Creates `path` if needed and makes it its owner's only (0700), whatever it was: it
/// holds the token and the database.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The public listener, where apps are reached by `Host`.
    pub listen: SocketAddr,
    /// The control API's listener.
    pub control: ControlAddr,
    /// Serve the public listener over HTTPS with this certificate and key.
    pub tls: Option<Tls>,
    /// The registry `berth deploy` pushes to, as `host:port`.
    pub registry: Option<String>,
    /// On shutdown, stop every container instead of leaving them for the next start.
    pub stop_on_exit: bool,
    /// How long requests in flight may take to finish on shutdown.
    pub drain: Duration,
    /// Serve as one of a cluster's routers (`--engine swarm`).
    pub cluster: Option<ClusterConfig>,
}

/// One router of a cluster: where the others are found, and where they send the
/// requests for objects whose home is this one (see [`crate::peers`]).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The routers' service, whose `tasks.<service>` DNS name lists them.
    pub routers: String,
    /// The peer listener, on the same port on every router.
    pub peer_listen: SocketAddr,
    /// The service of the cluster's store (`berth store`), with its port, where the
    /// objects' storage and alarms live; `None`: in this router's data folder.
    pub store: Option<(String, u16)>,
}

/// Both listeners, bound, and the platform they serve.
pub struct Bound {
    pub platform: Arc<Platform>,
    pub public: SocketAddr,
    /// Where the control API listens (with the port picked, for port 0).
    pub control: ControlAddr,
    public_listener: tokio::net::TcpListener,
    control_listener: server::Listener,
    /// The control socket's file, removed when serving ends.
    socket_file: Option<SocketFile>,
    control_worker: Arc<Control>,
    /// The listener for the other routers' requests, on a cluster.
    peer: Option<(tokio::net::TcpListener, Arc<PeerListener>)>,
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
    if let Some((service, port)) = config.cluster.as_ref().and_then(|c| c.store.clone()) {
        let client = crate::cluster_store::StoreClient::new(&service, port, data.token.store_key());
        data.store.share_through(Arc::new(client));
    }
    let peers = match &config.cluster {
        Some(cluster) => Some(
            Peers::start(
                &cluster.routers,
                cluster.peer_listen.port(),
                data.token.peer_key(),
            )
            .await,
        ),
        None => None,
    };
    let platform = Platform::start_with_peers(
        runtime,
        images,
        data.store.clone(),
        data.path.clone(),
        peers.clone(),
    )
    .await?;
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
    let (control_listener, control, socket_file) = match &config.control {
        ControlAddr::Tcp(addr) => {
            let (listener, local) = bind(*addr, "control API")?;
            (listener.into(), ControlAddr::Tcp(local), None)
        }
        ControlAddr::Unix(path) => {
            let (listener, file) = bind_socket(path)?;
            (listener.into(), ControlAddr::Unix(path.clone()), Some(file))
        }
    };
    let info = Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        registry: config.registry.clone(),
        platform: platform_name,
        routers: Vec::new(),
    };
    let mut control_worker = Control::new(platform.clone(), data.token.clone(), info);
    if let Some(peers) = &peers {
        control_worker = control_worker.with_peers(peers.clone());
    }
    let control_worker = Arc::new(control_worker);
    let peer = match (&config.cluster, peers) {
        (Some(cluster), Some(peers)) => {
            let (listener, _) = bind(cluster.peer_listen, "peer listener")?;
            let worker = Arc::new(PeerListener {
                platform: platform.clone(),
                peers: peers.clone(),
                control: control_worker.clone(),
            });
            let platform = platform.clone();
            tokio::spawn(async move { platform.catch_up(&peers).await });
            Some((listener, worker))
        }
        _ => None,
    };
    Ok(Bound {
        platform,
        public,
        control,
        public_listener,
        control_listener,
        socket_file,
        control_worker,
        peer,
        config,
    })
}

/// A unix socket berth made, removed when dropped, unless another has taken its place.
pub struct SocketFile {
    path: PathBuf,
    inode: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listens on a unix socket at `path` that only this user may connect to (mode 0600).
/// A socket file left by a process that is gone is replaced; one that a process still
/// listens on, or a file that is no socket, is left alone and refused.
pub fn bind_socket(path: &Path) -> Result<(tokio::net::UnixListener, SocketFile), ServeError> {
    let failed = |e: std::io::Error| ServeError::Socket {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServeError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(ServeError::SocketInUse {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!("removing the stale control socket {}", path.display());
                std::fs::remove_file(path).map_err(failed)?;
            }
            Err(e) => return Err(failed(e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    // Made under a name of its own, closed to others, then moved into place: at its path
    // the socket is never open to other users, not even for a moment.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| failed(std::io::Error::other("the path names no file")))?;
    let staging = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = tokio::net::UnixListener::bind(&staging).map_err(failed)?;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(failed(e));
    }
    let meta = std::fs::symlink_metadata(path).map_err(failed)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        inode: (meta.dev(), meta.ino()),
    };
    Ok((listener, file))
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
        let public_options = ServeOptions {
            tls: self.config.tls.clone(),
            ..options.clone()
        };
        let public = tokio::spawn(server::serve_with(
            self.public_listener,
            self.platform.clone() as Arc<dyn Worker>,
            Env::new(),
            stopped(stop_rx.clone()),
            public_options,
        ));
        let control_worker = self.control_worker.clone();
        let control = tokio::spawn(server::serve_with(
            self.control_listener,
            self.control_worker as Arc<dyn Worker>,
            Env::new(),
            stopped(stop_rx.clone()),
            options.clone(),
        ));
        let peer = self.peer.map(|(listener, worker)| {
            tokio::spawn(server::serve_with(
                listener,
                worker as Arc<dyn Worker>,
                Env::new(),
                stopped(stop_rx),
                options,
            ))
        });
        shutdown.await;
        // An event stream (an open dashboard) is no request to wait for.
        control_worker.close_streams();
        let _ = stop_tx.send(true);
        let _ = public.await;
        let _ = control.await;
        if let Some(peer) = peer {
            let _ = peer.await;
        }
        drop(self.socket_file);
        self.platform.shutdown(self.config.stop_on_exit).await;
    }
}
