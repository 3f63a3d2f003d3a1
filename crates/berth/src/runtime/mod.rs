//! The container engine, behind a trait.
//!
//! Objects only ever create, start, signal, wait for, inspect and remove containers; this
//! trait is that boundary, in engine-neutral terms. [`docker::DockerRuntime`] implements it
//! over the Docker Engine API.
//! [`fake::FakeRuntime`] (feature `test-util`) implements it in memory, to unit-test the
//! lifecycle with paused time; it never replaces the tests against a real engine.

pub mod docker;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod swarm;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::egress::Policy;
use crate::id::ObjectId;

/// Who a container belongs to, in engine-neutral terms. Each runtime renders it into its
/// engine's names and labels within that engine's limits (a Kubernetes label value holds
/// at most 63 characters, an object id is 64), and reads it back when it lists containers,
/// so that berth can find, re-adopt or clean them up after a crash of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub app: String,
    pub class: String,
    pub object_id: ObjectId,
    /// The name the object was addressed by; `None` for an object known by id only. A
    /// runtime may store it bounded and escaped: read back, it is for display only.
    pub object_name: Option<String>,
    /// The berth process (session) that started the container.
    pub session: String,
    /// The machine that session runs on, so that another berth process can tell whether
    /// the session is alive (see `lease`); empty for containers of older berth versions.
    pub host: String,
    /// The version of the class options it started with (`ContainerClass::version`), so
    /// that a later berth process re-adopts it only if the class has not changed since;
    /// empty for containers of older berth versions.
    pub version: String,
    /// A spare of the class's standby pool: started before any object needed it, so its
    /// `object_id` is its own until an object takes it, and the store then records whose
    /// it is (labels cannot change once a container exists).
    pub standby: bool,
}

/// Which containers [`Runtime::list`] returns: those of an app, narrowed down further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub app: String,
    pub session: Option<String>,
    pub object_id: Option<ObjectId>,
}

impl Selector {
    /// Every container of `app`.
    pub fn app(app: &str) -> Selector {
        Selector {
            app: app.to_string(),
            session: None,
            object_id: None,
        }
    }

    /// Only the containers of this session.
    pub fn session(mut self, session: &str) -> Selector {
        self.session = Some(session.to_string());
        self
    }

    /// Only the containers of this object.
    pub fn object(mut self, id: ObjectId) -> Selector {
        self.object_id = Some(id);
        self
    }

    /// Whether `identity` is selected.
    pub fn matches(&self, identity: &Identity) -> bool {
        identity.app == self.app
            && self.session.as_ref().is_none_or(|s| *s == identity.session)
            && self.object_id.is_none_or(|id| id == identity.object_id)
    }
}

/// Everything needed to create one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub identity: Identity,
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    /// The class's own labels (metadata), added to berth's.
    pub labels: BTreeMap<String, String>,
    /// Ports berth must be able to reach from this machine.
    pub ports: Vec<u16>,
    /// What the container may reach: an open policy puts it on an ordinary network; any
    /// other, on an internal one with no route out (and, when it filters hosts, behind
    /// the runtime's egress proxy).
    pub egress: Policy,
    /// Run an init process as PID 1 that forwards signals and reaps zombies, so that an
    /// app that installs no SIGTERM handler still stops when asked.
    pub init: bool,
    /// The class's `stop_grace`: berth enforces it on its own stops, and an engine that
    /// stops containers itself (Swarm, when a service scales to 0) must be told it at
    /// create, since a task keeps the grace it was created with.
    pub stop_grace: std::time::Duration,
    /// CPU limit in billionths of a CPU; 0 for none.
    pub nano_cpus: i64,
    /// Memory limit in bytes; 0 for none.
    pub memory_bytes: i64,
    /// The object's volumes: one per path, each made (with berth's labels) on first use
    /// and kept after the container is gone.
    pub volumes: Vec<VolumeMount>,
}

/// A volume of an object, and where the container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The engine's name of the volume: see [`VolumeMount::name_for`].
    pub name: String,
    /// The path in the container.
    pub path: String,
    /// The store id of the berth that makes it ([`crate::store::Store::owner`]).
    pub owner: String,
}

impl VolumeMount {
    /// The volume of `identity`'s object for `path`, made by the berth whose store is
    /// `owner` ([`crate::store::Store::owner`]): named after the app, the class, the
    /// owner, the object's id and the path, so that every later container of the object
    /// finds it again, and nothing else does, even when the class's list of paths changes.
    pub fn name_for(identity: &Identity, owner: &str, path: &str) -> String {
        use sha2::{Digest, Sha256};
        let part = |text: &str| -> String {
            let part: String = text
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .take(40)
                .collect();
            if part.is_empty() {
                "x".into()
            } else {
                part
            }
        };
        let path_hash: String = Sha256::digest(path.as_bytes())
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        let object: String = identity.object_id.to_string().chars().take(32).collect();
        let owner: String = owner.chars().take(8).collect();
        format!(
            "berth-{}-{}-{}-{object}-{path_hash}",
            part(&identity.app),
            part(&identity.class),
            part(&owner),
        )
    }
}

/// A volume berth made for an object, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeInfo {
    pub name: String,
    pub app: String,
    pub class: String,
    pub object_id: String,
    /// The object's name, when it had one.
    pub object_name: Option<String>,
    /// The path in the container.
    pub path: String,
    /// Bytes used, when the engine can tell.
    pub size_bytes: Option<u64>,
}

/// A container that [`Runtime::create`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The engine's id, for every further call.
    pub id: String,
    /// The name the engine shows, for people.
    pub name: String,
}

/// How berth reaches a running container's ports from this machine.
#[derive(Clone)]
pub enum Endpoint {
    /// The container's own address on a bridge network berth attached it to: every port
    /// is reachable directly, with no userland proxy in between.
    Bridge(IpAddr),
    /// Ports published on the loopback address (for engines whose bridge this machine
    /// cannot reach, such as Docker Desktop): container port → host address.
    Published(Vec<(u16, SocketAddr)>),
    /// Reached through the runtime's own means (an in-memory fake, a tunnel).
    Dialer(Arc<dyn Dial>),
    /// The container has no address (it exited before it got one).
    Unreachable,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Bridge(ip) => write!(f, "Bridge({ip})"),
            Endpoint::Published(ports) => write!(f, "Published({ports:?})"),
            Endpoint::Dialer(_) => f.write_str("Dialer"),
            Endpoint::Unreachable => f.write_str("Unreachable"),
        }
    }
}

impl Endpoint {
    /// The TCP address of a container port, for endpoints reached over TCP.
    pub fn addr(&self, port: u16) -> Option<SocketAddr> {
        match self {
            Endpoint::Bridge(ip) => Some(SocketAddr::new(*ip, port)),
            Endpoint::Published(ports) => ports
                .iter()
                .find(|(container_port, _)| *container_port == port)
                .map(|(_, addr)| *addr),
            Endpoint::Dialer(_) | Endpoint::Unreachable => None,
        }
    }

    /// Whether `port` can be reached at all (it may still refuse connections).
    pub fn reaches(&self, port: u16) -> bool {
        matches!(self, Endpoint::Dialer(_)) || self.addr(port).is_some()
    }

    /// Opens a connection to `port` of the container.
    pub async fn connect(&self, port: u16) -> io::Result<Conn> {
        match self {
            Endpoint::Dialer(dialer) => dialer.dial(port).await,
            _ => {
                let addr = self.addr(port).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        format!("port {port} is not reachable from this machine"),
                    )
                })?;
                let stream = TcpStream::connect(addr).await?;
                // Requests are small writes that should go out at once.
                let _ = stream.set_nodelay(true);
                Ok(Conn::Tcp(stream))
            }
        }
    }
}

/// A runtime's own way to open connections to a container's ports.
pub trait Dial: Send + Sync + 'static {
    fn dial(&self, port: u16) -> BoxFuture<'static, io::Result<Conn>>;
}

/// Any byte stream a connection may run over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A byte stream: TCP, or any other, boxed. A connection to a container port (TCP, or
/// whatever a [`Dial`] gives), and a client's connection to berth's server (TCP, a unix
/// socket, TLS).
pub enum Conn {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Other(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i64,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exited with code {}", self.code)?;
        if self.oom_killed {
            f.write_str(" (killed for lack of memory)")?;
        }
        Ok(())
    }
}

/// What the engine knows of one container.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// Whose container it is, if it carries berth's identity.
    pub identity: Option<Identity>,
    /// The image the container was created from, as named at creation.
    pub image: String,
    /// The engine's metadata on the container as it is (for Docker: every label).
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// Set once the container has exited.
    pub exit: Option<ExitStatus>,
    /// Set while the container runs.
    pub endpoint: Option<Endpoint>,
}

/// A POSIX signal to send to a container's main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signal {
    #[default]
    Term,
    Kill,
    Int,
    Hup,
    Quit,
    Usr1,
    Usr2,
}

impl Signal {
    const ALL: [Signal; 7] = [
        Signal::Term,
        Signal::Kill,
        Signal::Int,
        Signal::Hup,
        Signal::Quit,
        Signal::Usr1,
        Signal::Usr2,
    ];

    /// The signal `name` names (`SIGTERM`), if it is one of these.
    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Int => "SIGINT",
            Signal::Hup => "SIGHUP",
            Signal::Quit => "SIGQUIT",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
        }
    }
}

/// A failure of the container engine, with what to do about it. `engine` names the
/// engine and where it is (`the Docker Engine at unix:///var/run/docker.sock`); `hint` is
/// that engine's advice.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach {engine}: {reason}; {hint}")]
    Unreachable {
        engine: String,
        reason: String,
        hint: &'static str,
    },
    #[error("image {image:?} is not in {engine}; build it (berth dev builds the images of berth.toml) or fix the image name")]
    ImageMissing { engine: String, image: String },
    #[error("container {container} no longer exists in {engine}")]
    NotFound { engine: String, container: String },
    #[error("container {container} did not report its exit within {waited:?}; check the container engine and retry")]
    NoExit { container: String, waited: Duration },
    #[error("{engine} refused to {operation} {target}: {message}")]
    Engine {
        engine: String,
        operation: &'static str,
        target: String,
        message: String,
    },
}

impl RuntimeError {
    /// Whether the engine itself could not be reached (as opposed to refusing a request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RuntimeError::Unreachable { .. })
    }
}

/// Which of a container's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line a container wrote, with the time the engine took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub time: SystemTime,
    pub stream: Stream,
    pub line: String,
}

/// A request of a container to a host its egress policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRefusal {
    pub identity: Identity,
    pub container_id: String,
    pub host: String,
}

/// The operations berth needs from a container engine.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Creates (does not start) a container.
    async fn create(&self, spec: &ContainerSpec) -> Result<Created, RuntimeError>;
    /// Starts a created container and tells how to reach its ports.
    async fn start(&self, id: &str) -> Result<Endpoint, RuntimeError>;
    /// Sends a signal to the container's main process. Not an error if it already exited.
    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError>;
    /// Resolves when the container has exited, with how it ended.
    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError>;
    /// Removes a container, killing it if it still runs. Not an error if it is gone.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError>;
    /// The last `lines` lines the container wrote to stdout and stderr.
    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError>;
    /// Sends each line the container writes (stdout and stderr, from its start, or from
    /// `since` on) to `lines` until the container stops or the receiver is dropped.
    async fn follow_logs(
        &self,
        id: &str,
        since: Option<SystemTime>,
        lines: tokio::sync::mpsc::Sender<Output>,
    ) -> Result<(), RuntimeError>;
    /// Every container (running or not) that `selector` selects.
    async fn list(&self, selector: &Selector) -> Result<Vec<ContainerInfo>, RuntimeError>;
    /// The id and identity of each container `selector` selects that is meant to run,
    /// without asking each one's state: for a look made often, on an engine where
    /// [`Runtime::list`] costs a call per container (Swarm). A Swarm service scaled to 0
    /// (stopping) is left out; a container may have exited meanwhile.
    async fn identities(
        &self,
        selector: &Selector,
    ) -> Result<Vec<(String, Identity)>, RuntimeError> {
        Ok(self
            .list(selector)
            .await?
            .into_iter()
            .filter(|info| info.running)
            .filter_map(|info| Some((info.id, info.identity?)))
            .collect())
    }
    /// The object volumes `selector` selects among those the berth of store `owner`
    /// made (its session aside: volumes outlive sessions), with their size.
    async fn volumes(
        &self,
        selector: &Selector,
        owner: &str,
    ) -> Result<Vec<VolumeInfo>, RuntimeError>;
    /// Removes the object volumes `selector` selects among those the berth of store
    /// `owner` made; how many. One that a container still uses stays, with a warning.
    async fn remove_volumes(&self, selector: &Selector, owner: &str)
        -> Result<usize, RuntimeError>;

    /// Freezes a running container's processes (the cgroup freezer), keeping their
    /// memory: `sleep_mode = "pause"`.
    async fn pause(&self, id: &str) -> Result<(), RuntimeError>;
    /// Thaws a paused container. Not an error if it is not paused.
    async fn unpause(&self, id: &str) -> Result<(), RuntimeError>;

    /// The memory a container uses now, in bytes, if the engine tells.
    async fn memory(&self, _id: &str) -> Result<Option<u64>, RuntimeError> {
        Ok(None)
    }

    /// The requests to refused hosts that this runtime's egress proxy turns away, from
    /// now on; `None` for a runtime with no egress proxy.
    fn egress_refusals(&self) -> Option<tokio::sync::broadcast::Receiver<EgressRefusal>> {
        None
    }

    /// Sends `signal`, waits up to `grace` for the exit, then SIGKILLs.
    async fn stop(
        &self,
        id: &str,
        signal: Signal,
        grace: Duration,
    ) -> Result<ExitStatus, RuntimeError> {
        self.kill(id, signal).await?;
        match tokio::time::timeout(grace, self.wait(id)).await {
            Ok(status) => status,
            Err(_) => {
                self.kill(id, Signal::Kill).await?;
                self.wait(id).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdScheme;

    #[test]
    fn a_volume_is_named_by_its_owner_object_and_path_never_its_place_in_the_list() {
        let identity = Identity {
            app: "Shop".into(),
            class: "My Cart".into(),
            object_id: IdScheme::new("Shop/My Cart").for_name("alice"),
            object_name: Some("alice".into()),
            session: "s".into(),
            host: "h".into(),
            version: String::new(),
            standby: false,
        };
        let data = VolumeMount::name_for(&identity, "0123456789abcdef", "/data");
        assert!(data.starts_with("berth-shop-my-cart-01234567-"), "{data}");
        assert!(
            data.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{data}"
        );
        assert_eq!(
            data,
            VolumeMount::name_for(&identity, "0123456789abcdef", "/data")
        );
        assert_ne!(
            data,
            VolumeMount::name_for(&identity, "0123456789abcdef", "/cache")
        );
        assert_ne!(
            data,
            VolumeMount::name_for(&identity, "fedcba9876543210", "/data")
        );
    }
}
