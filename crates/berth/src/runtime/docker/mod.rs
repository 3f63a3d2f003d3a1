//! The Docker Engine API, through `bollard`. (Podman's Docker-compatible API may work
//! through the same code; it is not tested.)
//!
//! Containers are reached on their bridge address by default: a published port goes
//! through Docker's userland proxy, which costs more than half the throughput. Engines
//! whose bridge this machine cannot reach (Docker Desktop) use [`Reach::Loopback`]: ports
//! are published on 127.0.0.1 only, never on another address.

mod egress;
mod exec;
mod inspect;
pub mod labels;
mod volumes;

pub use egress::EGRESS_PORT;
pub use exec::ExecOptions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::{
    ContainerInfo, ContainerSpec, Created, EgressRefusal, Endpoint, ExitStatus, Output, Runtime,
    RuntimeError, Selector, Signal, Stream, VolumeInfo,
};
use egress::{EgressProxy, POLICY_LABEL};

/// The network for containers with `enable_internet = false`: internal, so it has no route
/// out, while this machine can still reach the containers on it.
pub const INTERNAL_NETWORK: &str = "berth-internal";
const DEFAULT_NETWORK: &str = "bridge";

/// How berth reaches container ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// The container's address on its bridge network (Linux engines).
    #[default]
    Bridge,
    /// Ports published on 127.0.0.1 (engines in a VM, such as Docker Desktop).
    Loopback,
}

/// A [`Runtime`] over the Docker Engine API.
pub struct DockerRuntime {
    docker: Docker,
    host: String,
    reach: Reach,
    internal_network: OnceCell<()>,
    egress: Arc<EgressProxy>,
    /// Numbers the containers this process creates, so that their names never clash.
    serial: AtomicU64,
    /// The containers berth itself sent SIGKILL: their exit 137 is not asked about at
    /// length, as it would be for a kill by the kernel's OOM killer.
    killed: std::sync::Mutex<std::collections::HashSet<String>>,
}

const HINT: &str = "start Docker or point DOCKER_HOST at a running engine";

impl DockerRuntime {
    /// Connects to the engine named by `DOCKER_HOST` (default: the local socket) and
    /// agrees on an API version with it.
    pub async fn connect() -> Result<DockerRuntime, RuntimeError> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        DockerRuntime::connect_to(&host).await
    }

    /// Connects to the engine at `host` (`unix:///path`, `tcp://host:port`).
    pub async fn connect_to(host: &str) -> Result<DockerRuntime, RuntimeError> {
        let unreachable = |e: BollardError| RuntimeError::Unreachable {
            engine: format!("the Docker Engine at {host}"),
            reason: e.to_string(),
            hint: HINT,
        };
        let docker = Docker::connect_with_host(host).map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(DockerRuntime {
            egress: EgressProxy::new(docker.clone()),
            docker,
            host: host.to_string(),
            reach: Reach::default(),
            internal_network: OnceCell::new(),
            serial: AtomicU64::new(0),
            killed: Default::default(),
        })
    }

    /// Chooses how container ports are reached.
    pub fn with_reach(mut self, reach: Reach) -> DockerRuntime {
        self.reach = reach;
        self
    }

    /// The engine's platform as `os/arch` (`linux/amd64`), which images it runs are
    /// built for.
    pub async fn platform(&self) -> Result<String, RuntimeError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| RuntimeError::Unreachable {
                engine: self.engine(),
                reason: e.to_string(),
                hint: HINT,
            })?;
        Ok(format!(
            "{}/{}",
            version.os.unwrap_or_else(|| "linux".into()),
            version.arch.unwrap_or_else(|| "amd64".into())
        ))
    }

    /// The underlying client, for what neither `Runtime` nor `Builder` covers.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn engine(&self) -> String {
        format!("the Docker Engine at {}", self.host)
    }

    fn error(&self, operation: &'static str, target: &str, e: BollardError) -> RuntimeError {
        let engine = self.engine();
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => {
                if operation == "create a container from image" {
                    RuntimeError::ImageMissing {
                        engine,
                        image: target.to_string(),
                    }
                } else if message.contains("network") {
                    RuntimeError::Engine {
                        engine,
                        operation,
                        target: target.to_string(),
                        message,
                    }
                } else {
                    RuntimeError::NotFound {
                        engine,
                        container: target.to_string(),
                    }
                }
            }
            BollardError::DockerResponseServerError { message, .. } => RuntimeError::Engine {
                engine,
                operation,
                target: target.to_string(),
                message,
            },
            BollardError::JsonDataError { .. }
            | BollardError::JsonSerdeError { .. }
            | BollardError::APIVersionParseError {} => RuntimeError::Engine {
                engine,
                operation,
                target: target.to_string(),
                message: e.to_string(),
            },
            other => RuntimeError::Unreachable {
                engine,
                reason: other.to_string(),
                hint: HINT,
            },
        }
    }

    async fn ensure_internal_network(&self) -> Result<(), RuntimeError> {
        self.internal_network
            .get_or_try_init(|| async {
                if self
                    .docker
                    .inspect_network(INTERNAL_NETWORK, None)
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                let request = NetworkCreateRequest {
                    name: INTERNAL_NETWORK.to_string(),
                    driver: Some("bridge".to_string()),
                    internal: Some(true),
                    labels: Some(HashMap::from([(
                        "berth.network".to_string(),
                        "internal".to_string(),
                    )])),
                    ..Default::default()
                };
                match self.docker.create_network(request).await {
                    Ok(_) => Ok(()),
                    // Another berth process created it meanwhile.
                    Err(BollardError::DockerResponseServerError {
                        status_code: 409, ..
                    }) => Ok(()),
                    Err(e) => Err(self.error("create network", INTERNAL_NETWORK, e)),
                }
            })
            .await
            .copied()
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn create(&self, spec: &ContainerSpec) -> Result<Created, RuntimeError> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let name = labels::container_name(&spec.identity, serial);
        let network = if spec.egress.is_open() {
            DEFAULT_NETWORK
        } else {
            self.ensure_internal_network().await?;
            INTERNAL_NETWORK
        };
        let mut env: Vec<String> = Vec::new();
        let mut container_labels = labels::render(&spec.identity, &spec.labels);
        // Only berth says what a container may reach, never a label of the class.
        container_labels.remove(POLICY_LABEL);
        if spec.egress.filters() {
            for (key, value) in self.egress.environment().await? {
                env.push(format!("{key}={value}"));
            }
            let policy = serde_json::to_string(&spec.egress).unwrap_or_default();
            container_labels.insert(POLICY_LABEL.to_string(), policy);
        }
        // The class's own variables come last, so that they win.
        env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mounts = self.volume_mounts(spec).await?;
        let port_keys: Vec<String> = spec.ports.iter().map(|p| format!("{p}/tcp")).collect();
        let port_bindings = (self.reach == Reach::Loopback).then(|| {
            port_keys
                .iter()
                .map(|key| {
                    let binding = PortBinding {
                        host_ip: Some("127.0.0.1".to_string()),
                        host_port: Some(String::new()),
                    };
                    (key.clone(), Some(vec![binding]))
                })
                .collect()
        });
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(env),
            entrypoint: spec.entrypoint.clone(),
            labels: Some(container_labels.into_iter().collect()),
            exposed_ports: Some(port_keys),
            host_config: Some(HostConfig {
                network_mode: Some(network.to_string()),
                port_bindings,
                init: Some(spec.init),
                nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
                memory: (spec.memory_bytes > 0).then_some(spec.memory_bytes),
                // No swap beyond the memory limit, so the limit means what it says.
                memory_swap: (spec.memory_bytes > 0).then_some(spec.memory_bytes),
                mounts: (!mounts.is_empty()).then_some(mounts),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_string(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.error("create a container from image", &spec.image, e))?;
        Ok(Created {
            id: created.id,
            name,
        })
    }

    async fn start(&self, id: &str) -> Result<Endpoint, RuntimeError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| self.error("start container", id, e))?;
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.error("inspect container", id, e))?;
        // A container that exits at once has no address; its exit is reported by `wait`.
        Ok(self.endpoint(&info).unwrap_or(Endpoint::Unreachable))
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        if signal == Signal::Kill {
            self.killed_by_berth(id, true);
        }
        let options = KillContainerOptionsBuilder::new()
            .signal(signal.as_str())
            .build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 409: not running, so there is nothing to signal.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(self.error("signal container", id, e)),
        }
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        loop {
            let mut stream = self.docker.wait_container(id, None);
            let code = match stream.next().await {
                Some(Ok(response)) => response.status_code,
                Some(Err(BollardError::DockerContainerWaitError { code, .. })) => code,
                // The engine's request timeout, not the container: wait again.
                Some(Err(BollardError::RequestTimeoutError)) => continue,
                Some(Err(e)) => return Err(self.error("wait for container", id, e)),
                None => {
                    return Err(RuntimeError::Unreachable {
                        engine: self.engine(),
                        reason: format!("the wait for container {id} ended without an answer"),
                        hint: HINT,
                    })
                }
            };
            let oom_killed = code == 137 && self.oom_killed(id).await;
            return Ok(ExitStatus { code, oom_killed });
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.killed_by_berth(id, false);
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // 409: removal already in progress.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(self.error("remove container", id, e)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.error("inspect container", id, e))?;
        Ok(self.info(info))
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let stream = self.docker.logs(id, Some(tail_options(lines)));
        collect_lines(stream)
            .await
            .map_err(|e| self.error("read the logs of container", id, e))
    }

    async fn follow_logs(
        &self,
        id: &str,
        since: Option<SystemTime>,
        lines: tokio::sync::mpsc::Sender<Output>,
    ) -> Result<(), RuntimeError> {
        let stream = self.docker.logs(id, Some(follow_options(since)));
        forward_lines(stream, since, lines)
            .await
            .map_err(|e| self.error("follow the logs of container", id, e))?;
        Ok(())
    }

    async fn volumes(
        &self,
        selector: &Selector,
        owner: &str,
    ) -> Result<Vec<VolumeInfo>, RuntimeError> {
        self.list_volumes(selector, owner, true).await
    }

    async fn remove_volumes(
        &self,
        selector: &Selector,
        owner: &str,
    ) -> Result<usize, RuntimeError> {
        self.remove_selected_volumes(selector, owner).await
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.pause_container(id).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.error("pause container", id, e)),
        }
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.unpause_container(id).await {
            Ok(()) => Ok(()),
            // 409: not paused (or not running), so there is nothing to thaw.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(self.error("unpause container", id, e)),
        }
    }

    async fn memory(&self, id: &str) -> Result<Option<u64>, RuntimeError> {
        let options = bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stats = self.docker.stats(id, Some(options));
        match stats.next().await {
            Some(Ok(sample)) => Ok(sample.memory_stats.and_then(|m| m.usage)),
            Some(Err(e)) => Err(self.error("read the stats of container", id, e)),
            None => Ok(None),
        }
    }

    fn egress_refusals(&self) -> Option<tokio::sync::broadcast::Receiver<EgressRefusal>> {
        Some(self.egress.refusals())
    }

    async fn list(&self, selector: &Selector) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([("label", labels::filters(selector))]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error("list containers", "with berth labels", e))?;
        let mut found = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            match self.inspect(&id).await {
                Ok(info) => found.push(info),
                // Removed between the list and the inspect.
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }
}

/// The last `lines` lines of stdout and stderr.
pub(crate) fn tail_options(lines: usize) -> bollard::query_parameters::LogsOptions {
    LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build()
}

/// Stdout and stderr, timestamped, followed, from `since` on. The engine takes whole
/// seconds: [`forward_lines`] drops the lines of that second up to `since`.
pub(crate) fn follow_options(since: Option<SystemTime>) -> bollard::query_parameters::LogsOptions {
    let mut options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .follow(true);
    if let Some(since) = since {
        let secs = since
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        options = options.since(i32::try_from(secs).unwrap_or(i32::MAX));
    }
    options.build()
}

/// The lines of an engine log stream, read to its end.
pub(crate) async fn collect_lines(
    mut stream: impl futures_util::Stream<Item = Result<LogOutput, BollardError>> + Unpin,
) -> Result<Vec<String>, BollardError> {
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(chunk?.as_ref()));
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// Sends the lines of an engine log stream (`timestamps=1`) after `since` to `lines`,
/// until the stream ends or the receiver is dropped.
pub(crate) async fn forward_lines(
    mut stream: impl futures_util::Stream<Item = Result<LogOutput, BollardError>> + Unpin,
    since: Option<SystemTime>,
    lines: tokio::sync::mpsc::Sender<Output>,
) -> Result<(), BollardError> {
    let mut partial = [String::new(), String::new()];
    while let Some(chunk) = stream.next().await {
        let (which, text) = match chunk? {
            LogOutput::StdErr { message } => (Stream::Stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (Stream::Stdout, message)
            }
            LogOutput::StdIn { .. } => continue,
        };
        let buffer = &mut partial[usize::from(which == Stream::Stderr)];
        buffer.push_str(&String::from_utf8_lossy(&text));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let output = stamped(which, line.trim_end_matches(['\n', '\r']));
            if since.is_some_and(|since| output.time <= since) {
                continue;
            }
            if lines.send(output).await.is_err() {
                return Ok(());
            }
        }
    }
    for (which, rest) in [(Stream::Stdout, &partial[0]), (Stream::Stderr, &partial[1])] {
        if !rest.is_empty() {
            let _ = lines.send(stamped(which, rest)).await;
        }
    }
    Ok(())
}

/// A line of the engine's log with `timestamps=1`: its time, a space, the text. A line
/// whose time cannot be read keeps it all as text, timed now.
fn stamped(stream: Stream, line: &str) -> Output {
    let (time, text) = match line.split_once(' ') {
        Some((stamp, text)) => match crate::timestamp::parse(stamp) {
            Some(time) => (time, text),
            None => (SystemTime::now(), line),
        },
        None => match crate::timestamp::parse(line) {
            Some(time) => (time, ""),
            None => (SystemTime::now(), line),
        },
    };
    Output {
        time,
        stream,
        line: text.to_string(),
    }
}
