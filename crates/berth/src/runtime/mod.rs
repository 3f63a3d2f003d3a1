//! The container engine, behind a trait.
//!
//! Objects only ever create, start, signal, wait for, inspect and remove containers; this
//! trait is that boundary. [`docker::DockerRuntime`] implements it over the Docker Engine
//! API (Podman's compatible API works through the same code). A fake can implement it to
//! unit-test lifecycle logic, never to replace the tests against a real engine.

pub mod docker;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;

/// Labels berth puts on every container it creates, so that it can find, re-adopt or clean
/// them up after a crash of its own.
pub mod labels {
    pub const APP: &str = "berth.app";
    pub const CLASS: &str = "berth.class";
    pub const OBJECT_ID: &str = "berth.object-id";
    pub const OBJECT_NAME: &str = "berth.object-name";
    pub const SESSION: &str = "berth.session";
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// The container name; must be unique in the engine.
    pub name: String,
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    /// Ports berth must be able to reach from this machine.
    pub ports: Vec<u16>,
    /// `false`: attach only to an internal network with no route out.
    pub enable_internet: bool,
    /// CPU limit in billionths of a CPU; 0 for none.
    pub nano_cpus: i64,
    /// Memory limit in bytes; 0 for none.
    pub memory_bytes: i64,
}

/// How berth reaches a running container's ports from this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The container's own address on a bridge network berth attached it to: every port
    /// is reachable directly, with no userland proxy in between.
    Bridge(IpAddr),
    /// Ports published on the loopback address (for engines whose bridge this machine
    /// cannot reach, such as Docker Desktop): container port → host address.
    Published(Vec<(u16, SocketAddr)>),
    /// The container has no address (it exited before it got one).
    Unreachable,
}

impl Endpoint {
    /// The address to connect to for a container port, if it is reachable.
    pub fn addr(&self, port: u16) -> Option<SocketAddr> {
        match self {
            Endpoint::Bridge(ip) => Some(SocketAddr::new(*ip, port)),
            Endpoint::Published(ports) => ports
                .iter()
                .find(|(container_port, _)| *container_port == port)
                .map(|(_, addr)| *addr),
            Endpoint::Unreachable => None,
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
    /// The image the container was created from, as named at creation.
    pub image: String,
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

/// A failure of the container engine, with what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the Docker Engine at {host}: {reason}; start Docker or point DOCKER_HOST at a running engine")]
    Unreachable { host: String, reason: String },
    #[error("image {image:?} is not in the Docker Engine; build it (berth dev builds the images of berth.toml) or fix the image name")]
    ImageMissing { image: String },
    #[error("container {container} no longer exists in the Docker Engine")]
    NotFound { container: String },
    #[error("container {container} did not report its exit within {waited:?}; check the Docker Engine (docker ps -a) and retry")]
    NoExit { container: String, waited: Duration },
    #[error("the Docker Engine refused to {operation} {target}: {message}")]
    Engine {
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

/// The operations berth needs from a container engine.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Creates (does not start) a container and returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
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
    /// Sends each line the container writes (stdout and stderr, from its start) to
    /// `lines` until the container stops or the receiver is dropped.
    async fn follow_logs(
        &self,
        id: &str,
        lines: tokio::sync::mpsc::Sender<String>,
    ) -> Result<(), RuntimeError>;
    /// Every container (running or not) that carries all of these labels.
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError>;

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
