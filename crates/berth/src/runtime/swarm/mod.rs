//! Docker Swarm: each berth container is a service of one replica (see [`spec`]), created
//! through a manager's API. Swarm's managers place it on a node and refuse a second
//! service of the same name, which is what keeps one live container per object across
//! the cluster: a create that conflicts adopts the service that is there.
//!
//! berth must run on the overlay network itself to reach a task: it connects to the
//! task's own address there, from the manager's task list. A task never moves (Swarm
//! restarts nothing of berth's): when its node is lost, Swarm gives up on it, berth sees
//! the container as gone, and the next request creates the service again, on a live node.
//! The overlay's DNS would not do: a lost node's task stays listed under
//! `tasks.<service>` for minutes, beside the task that replaces it. ([`dns`] lists the
//! routers, see `crate::peers`.)
//!
//! Swarm cannot signal a task, pause it, or give it a volume of berth's: a stop scales
//! the service to 0 (Swarm sends SIGTERM, then SIGKILL after the class's grace, which
//! the service carries from its create), a kill scales to 0 and removes the service once
//! its task ended; a pause fails with an error that says so (the object then sleeps by a
//! stop), and classes with `volumes` or an egress policy are refused at create.

pub mod dns;
mod inspect;
mod spec;
mod tasks;

pub use spec::service_name;

use tasks::{exit_of, given_up, replicas, stop_grace};

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use bollard::models::{NetworkCreateRequest, Service, Task, TaskState};
use bollard::query_parameters::{
    ListServicesOptionsBuilder, ListTasksOptionsBuilder, UpdateServiceOptionsBuilder,
};
use bollard::Docker;
use tokio::sync::OnceCell;

use super::docker::{collect_lines, follow_options, forward_lines, labels, tail_options};
use super::{
    ContainerInfo, ContainerSpec, Created, Endpoint, ExitStatus, Identity, Output, Runtime,
    RuntimeError, Selector, Signal, VolumeInfo,
};

/// The attachable overlay network that berth's services and routers share by default.
pub const DEFAULT_NETWORK: &str = "berth";

const HINT: &str = "point DOCKER_HOST at a Swarm manager's API";
/// How often a task's state is read while berth waits for it to run.
const POLL: Duration = Duration::from_millis(100);
/// How often a running task's state is read to learn of its end: every live container
/// of every router asks the manager this often.
const WATCH: Duration = Duration::from_secs(1);
/// How long a service that asks for a replica may have no task at all before its
/// container is taken as ended (see `wait`).
const TASKLESS_LIMIT: Duration = Duration::from_secs(60);
/// How long a service may take to get a running task: the image may still be loading.
const START_LIMIT: Duration = Duration::from_secs(300);
/// How long a kill waits past a task's grace for the managers to report its end.
const REPORT_LIMIT: Duration = Duration::from_secs(10);

/// A [`Runtime`] over a Docker Swarm manager's API.
pub struct SwarmRuntime {
    docker: Docker,
    host: String,
    network: String,
    network_ready: OnceCell<()>,
}

impl SwarmRuntime {
    /// Connects to the manager at `host` (`unix:///path`, `tcp://host:port`); services
    /// join overlay network `network`, made attachable if it does not exist.
    pub async fn connect_to(host: &str, network: &str) -> Result<SwarmRuntime, RuntimeError> {
        let unreachable = |e: BollardError| RuntimeError::Unreachable {
            engine: format!("the Swarm manager at {host}"),
            reason: e.to_string(),
            hint: HINT,
        };
        let docker = Docker::connect_with_host(host).map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        let info = docker.info().await.map_err(unreachable)?;
        let manager = info
            .swarm
            .as_ref()
            .and_then(|s| s.control_available)
            .unwrap_or(false);
        if !manager {
            return Err(RuntimeError::Unreachable {
                engine: format!("the Docker Engine at {host}"),
                reason: "it is not a Swarm manager".into(),
                hint: "run `docker swarm init` there, or point at a manager node",
            });
        }
        Ok(SwarmRuntime {
            docker,
            host: host.to_string(),
            network: network.to_string(),
            network_ready: OnceCell::new(),
        })
    }

    /// The underlying client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn engine(&self) -> String {
        format!("the Swarm manager at {}", self.host)
    }

    fn error(&self, operation: &'static str, target: &str, e: BollardError) -> RuntimeError {
        let engine = self.engine();
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => RuntimeError::NotFound {
                engine,
                container: target.to_string(),
            },
            BollardError::DockerResponseServerError { message, .. } => RuntimeError::Engine {
                engine,
                operation,
                target: target.to_string(),
                message,
            },
            other => RuntimeError::Unreachable {
                engine,
                reason: other.to_string(),
                hint: HINT,
            },
        }
    }

    fn refuse(&self, target: &str, message: &str) -> RuntimeError {
        RuntimeError::Engine {
            engine: self.engine(),
            operation: "create a service for",
            target: target.to_string(),
            message: message.to_string(),
        }
    }

    async fn ensure_network(&self) -> Result<(), RuntimeError> {
        self.network_ready
            .get_or_try_init(|| async {
                if self
                    .docker
                    .inspect_network(&self.network, None)
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                let request = NetworkCreateRequest {
                    name: self.network.clone(),
                    driver: Some("overlay".into()),
                    attachable: Some(true),
                    labels: Some(HashMap::from([(
                        "berth.network".to_string(),
                        "overlay".to_string(),
                    )])),
                    ..Default::default()
                };
                match self.docker.create_network(request).await {
                    Ok(_) => Ok(()),
                    Err(BollardError::DockerResponseServerError {
                        status_code: 409, ..
                    }) => Ok(()),
                    Err(e) => Err(self.error("create overlay network", &self.network, e)),
                }
            })
            .await
            .copied()
    }

    async fn service(&self, id: &str) -> Result<Service, RuntimeError> {
        self.docker
            .inspect_service(id, None)
            .await
            .map_err(|e| self.error("inspect service", id, e))
    }

    /// The service's task that counts: the one Swarm wants running, else the newest.
    async fn task(&self, id: &str) -> Result<Option<Task>, RuntimeError> {
        let filters = HashMap::from([("service", vec![id.to_string()])]);
        let options = ListTasksOptionsBuilder::new().filters(&filters).build();
        let tasks = self
            .docker
            .list_tasks(Some(options))
            .await
            .map_err(|e| self.error("list the tasks of service", id, e))?;
        let wanted = tasks
            .iter()
            .find(|t| t.desired_state == Some(TaskState::RUNNING))
            .cloned();
        Ok(wanted.or_else(|| {
            tasks
                .into_iter()
                .max_by_key(|t| t.version.clone().and_then(|v| v.index))
        }))
    }

    /// Whether Swarm gave up on the service's `task` while the service still asks for a
    /// replica: its node went down, and a service that is never restarted gets no new
    /// task. Its container may still run on that node, cut off, until the node rejoins.
    async fn abandoned(&self, id: &str, task: &Task) -> Result<bool, RuntimeError> {
        if task.desired_state == Some(TaskState::RUNNING) || task.desired_state.is_none() {
            return Ok(false);
        }
        match self.service(id).await {
            Ok(service) => Ok(given_up(&service, task)),
            Err(RuntimeError::NotFound { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Scales the service to `replicas`, retrying twice when another update came first.
    async fn scale(&self, id: &str, replicas: i64) -> Result<(), RuntimeError> {
        for attempt in 0..3 {
            let service = match self.service(id).await {
                Err(RuntimeError::NotFound { .. }) => return Ok(()),
                other => other?,
            };
            let version = service.version.and_then(|v| v.index).unwrap_or(0);
            let mut spec = service.spec.unwrap_or_default();
            if let Some(mode) = spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
                mode.replicas = Some(replicas);
            }
            let options = UpdateServiceOptionsBuilder::new()
                .version(i32::try_from(version).unwrap_or(i32::MAX))
                .build();
            match self.docker.update_service(id, spec, options, None).await {
                Ok(_) => return Ok(()),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(()),
                Err(BollardError::DockerResponseServerError { message, .. })
                    if attempt < 2 && message.contains("out of sequence") => {}
                Err(e) => return Err(self.error("scale service", id, e)),
            }
        }
        Ok(())
    }
}

impl SwarmRuntime {
    /// The services `selector` selects, by berth's labels.
    async fn services(&self, selector: &Selector) -> Result<Vec<Service>, RuntimeError> {
        let filters = HashMap::from([("label", labels::filters(selector))]);
        let options = ListServicesOptionsBuilder::new().filters(&filters).build();
        self.docker
            .list_services(Some(options))
            .await
            .map_err(|e| self.error("list services", "with berth labels", e))
    }
}

#[async_trait]
impl Runtime for SwarmRuntime {
    async fn create(&self, spec: &ContainerSpec) -> Result<Created, RuntimeError> {
        if !spec.volumes.is_empty() {
            return Err(self.refuse(&spec.image, "volumes are not available on Swarm yet: remove `volumes` from the class, or run it on a single host"));
        }
        if !spec.egress.is_open() {
            return Err(self.refuse(&spec.image, "egress control (enable_internet = false, allowed_hosts, denied_hosts) is not available on Swarm yet: remove it from the class, or run it on a single host"));
        }
        self.ensure_network().await?;
        let name = service_name(&spec.identity);
        let service = spec::service_spec(spec, &self.network, 1);
        match self.docker.create_service(service, None).await {
            Ok(created) => Ok(Created {
                id: created.id.unwrap_or_else(|| name.clone()),
                name,
            }),
            // Another router created it first: the same object and version is adopted.
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) => {
                let there = self.service(&name).await?;
                let labels: std::collections::BTreeMap<String, String> = there
                    .spec
                    .as_ref()
                    .and_then(|s| s.labels.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let same = labels::parse(&labels).is_some_and(|found| {
                    found.app == spec.identity.app
                        && found.class == spec.identity.class
                        && found.object_id == spec.identity.object_id
                        && found.version == spec.identity.version
                });
                if !same {
                    return Err(self.refuse(&name, &format!("a service of that name that berth did not make for this object is in the way ({message}); remove it with `docker service rm {name}`")));
                }
                let id = there.id.clone().unwrap_or_else(|| name.clone());
                let dead = match self.task(&id).await? {
                    Some(task) => exit_of(&task).is_some() || self.abandoned(&id, &task).await?,
                    // Scaled to 0 by a home that went away before removing it.
                    None => replicas(&there) == Some(0),
                };
                if dead {
                    // It will never run again (its node was lost, or it ended while no
                    // router watched): made again, placed on a live node. Another router
                    // may do the same at once: then its service is the one.
                    self.remove(&id).await?;
                    let service = spec::service_spec(spec, &self.network, 1);
                    return match self.docker.create_service(service, None).await {
                        Ok(created) => Ok(Created {
                            id: created.id.unwrap_or_else(|| name.clone()),
                            name,
                        }),
                        Err(BollardError::DockerResponseServerError {
                            status_code: 409, ..
                        }) => {
                            let there = self.service(&name).await?;
                            Ok(Created {
                                id: there.id.unwrap_or_else(|| name.clone()),
                                name,
                            })
                        }
                        Err(e) => Err(self.error("create a service from image", &spec.image, e)),
                    };
                }
                Ok(Created { id, name })
            }
            Err(e) => Err(self.error("create a service from image", &spec.image, e)),
        }
    }

    async fn start(&self, id: &str) -> Result<Endpoint, RuntimeError> {
        let service = self.service(id).await?;
        let began = Instant::now();
        loop {
            if let Some(task) = self.task(id).await? {
                let status = task.status.clone().unwrap_or_default();
                if status.state == Some(TaskState::RUNNING) {
                    if let Some(endpoint) = self.endpoint(&task).await? {
                        return Ok(endpoint);
                    }
                }
                if status.state == Some(TaskState::REJECTED) {
                    let message = status.err.unwrap_or_default();
                    if message.contains("No such image") {
                        return Err(RuntimeError::ImageMissing {
                            engine: format!("the Swarm node that {id} was placed on"),
                            image: service
                                .spec
                                .and_then(|s| s.task_template?.container_spec?.image)
                                .unwrap_or_default(),
                        });
                    }
                    return Err(self.error(
                        "start a task of service",
                        id,
                        BollardError::DockerResponseServerError {
                            status_code: 500,
                            message,
                        },
                    ));
                }
                if exit_of(&task).is_some() {
                    // Exited at once: `wait` reports how.
                    return Ok(Endpoint::Unreachable);
                }
            }
            if began.elapsed() > START_LIMIT {
                return Err(RuntimeError::Engine {
                    engine: self.engine(),
                    operation: "start a task of service",
                    target: id.to_string(),
                    message: format!(
                        "no task ran within {START_LIMIT:?}; `docker service ps {id}` tells why"
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        match signal {
            Signal::Term => self.scale(id, 0).await,
            Signal::Kill => {
                // Removing the service at once would free its name while its task may
                // still run: a new service of that name could then run beside it. Swarm
                // cannot SIGKILL a task: it is stopped with the grace it was created
                // with, and the service removed once it ended, or after the grace and a
                // while more (its node may be lost, and never answer).
                let grace = match self.service(id).await {
                    Ok(service) => stop_grace(&service),
                    Err(RuntimeError::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
                self.scale(id, 0).await?;
                let _ended = tokio::time::timeout(grace + REPORT_LIMIT, self.wait(id)).await;
                self.remove(id).await
            }
            other => Err(RuntimeError::Engine {
                engine: self.engine(),
                operation: "signal service",
                target: id.to_string(),
                message: format!("Swarm cannot send {} to a task; only a stop (SIGTERM, then SIGKILL) is possible", other.as_str()),
            }),
        }
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        // Since when the service has had no task while it asks for one.
        let mut taskless: Option<std::time::Instant> = None;
        loop {
            let task = self.task(id).await;
            if !matches!(task, Ok(None)) {
                taskless = None;
            }
            match task {
                Ok(Some(task)) => {
                    if let Some(exit) = exit_of(&task) {
                        return Ok(exit);
                    }
                    if self.abandoned(id, &task).await? {
                        return Ok(ExitStatus {
                            code: -1,
                            oom_killed: false,
                        });
                    }
                }
                Ok(None) => {
                    // No task: the service was removed (a kill), or scaled to 0 (a stop)
                    // and Swarm already deleted its ended task, whose exit is then
                    // unknown (-1); or its task is not scheduled yet.
                    match self.service(id).await {
                        Err(RuntimeError::NotFound { .. }) => {
                            return Ok(ExitStatus {
                                code: 137,
                                oom_killed: false,
                            })
                        }
                        Ok(service) if replicas(&service) == Some(0) => {
                            return Ok(ExitStatus {
                                code: -1,
                                oom_killed: false,
                            })
                        }
                        // A task is made within moments of the service: one that has had
                        // none for this long lost it (Swarm reaped it), so the container
                        // is taken as gone, with its exit unknown.
                        Ok(_)
                            if taskless
                                .get_or_insert_with(std::time::Instant::now)
                                .elapsed()
                                >= TASKLESS_LIMIT =>
                        {
                            tracing::warn!("service {id} has had no task for {TASKLESS_LIMIT:?}; its container is taken as ended");
                            return Ok(ExitStatus {
                                code: -1,
                                oom_killed: false,
                            });
                        }
                        _ => {}
                    }
                }
                Err(RuntimeError::NotFound { .. }) => {
                    return Ok(ExitStatus {
                        code: 137,
                        oom_killed: false,
                    })
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(WATCH).await;
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.delete_service(id).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.error("remove service", id, e)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let service = self.service(id).await?;
        let task = self.task(id).await?;
        self.info_of(&service, task.as_ref()).await
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let stream = Box::pin(self.docker.service_logs(id, Some(tail_options(lines))));
        collect_lines(stream)
            .await
            .map_err(|e| self.error("read the logs of service", id, e))
    }

    async fn follow_logs(
        &self,
        id: &str,
        since: Option<SystemTime>,
        lines: tokio::sync::mpsc::Sender<Output>,
    ) -> Result<(), RuntimeError> {
        let stream = Box::pin(self.docker.service_logs(id, Some(follow_options(since))));
        forward_lines(stream, since, lines)
            .await
            .map_err(|e| self.error("follow the logs of service", id, e))
    }

    async fn list(&self, selector: &Selector) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let services = self.services(selector).await?;
        let mut found = Vec::with_capacity(services.len());
        for service in services {
            let Some(id) = service.id.clone() else {
                continue;
            };
            match self.task(&id).await {
                Ok(task) => found.push(self.info_of(&service, task.as_ref()).await?),
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    async fn identities(
        &self,
        selector: &Selector,
    ) -> Result<Vec<(String, Identity)>, RuntimeError> {
        let services = self.services(selector).await?;
        Ok(services
            .iter()
            .filter(|service| replicas(service) != Some(0))
            .filter_map(|service| {
                let labels: std::collections::BTreeMap<String, String> =
                    service.spec.as_ref()?.labels.clone()?.into_iter().collect();
                Some((service.id.clone()?, labels::parse(&labels)?))
            })
            .collect())
    }

    async fn volumes(
        &self,
        _selector: &Selector,
        _owner: &str,
    ) -> Result<Vec<VolumeInfo>, RuntimeError> {
        Ok(Vec::new())
    }

    async fn remove_volumes(
        &self,
        _selector: &Selector,
        _owner: &str,
    ) -> Result<usize, RuntimeError> {
        Ok(0)
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Engine {
            engine: self.engine(),
            operation: "pause service",
            target: id.to_string(),
            message: "Swarm cannot pause a task: use sleep_mode = \"stop\" on Swarm".into(),
        })
    }

    async fn unpause(&self, _id: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
}
