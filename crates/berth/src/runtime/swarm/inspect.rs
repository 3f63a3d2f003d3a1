//! What berth learns of a service: its identity, state and exit, and how to reach its task.

use std::net::IpAddr;

use bollard::models::{Service, Task, TaskState};

use super::tasks::{self, exit_of, given_up, replicas};
use super::{SwarmRuntime, HINT};
use crate::runtime::docker::labels;
use crate::runtime::{ContainerInfo, Endpoint, ExitStatus, RuntimeError};

impl SwarmRuntime {
    /// How to reach `task` on the overlay: at its own address there.
    pub(super) async fn endpoint(&self, task: &Task) -> Result<Option<Endpoint>, RuntimeError> {
        let id = task.id.clone().unwrap_or_default();
        let address = tasks::address(&self.host, &id, &self.network)
            .await
            .map_err(|e| RuntimeError::Unreachable {
                engine: self.engine(),
                reason: format!("reading task {id}: {e}"),
                hint: HINT,
            })?;
        Ok(address.map(|ip| Endpoint::Bridge(IpAddr::V4(ip))))
    }

    /// The service's info, with its task's address when the task runs.
    pub(super) async fn info_of(
        &self,
        service: &Service,
        task: Option<&Task>,
    ) -> Result<ContainerInfo, RuntimeError> {
        // A task Swarm gave up on (its node was lost) may still be reported running.
        let abandoned = task.is_some_and(|t| given_up(service, t));
        let running = task
            .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
            .filter(|_| !abandoned);
        let endpoint = match running {
            Some(task) => self.endpoint(task).await?,
            None => None,
        };
        let mut info = self.info(service, task, endpoint);
        if abandoned {
            info.running = false;
            info.endpoint = None;
            info.exit.get_or_insert(ExitStatus {
                code: -1,
                oom_killed: false,
            });
        }
        Ok(info)
    }

    fn info(
        &self,
        service: &Service,
        task: Option<&Task>,
        endpoint: Option<Endpoint>,
    ) -> ContainerInfo {
        let spec = service.spec.clone().unwrap_or_default();
        let service_labels: std::collections::BTreeMap<String, String> = spec
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let state = task.and_then(|t| t.status.as_ref()?.state);
        let running = state == Some(TaskState::RUNNING);
        ContainerInfo {
            id: service.id.clone().unwrap_or_default(),
            name: spec.name.clone().unwrap_or_default(),
            image: spec
                .task_template
                .and_then(|t| t.container_spec?.image)
                .unwrap_or_default(),
            identity: labels::parse(&service_labels),
            labels: service_labels,
            running,
            // Scaled to 0 with its ended task already deleted: stopped, how is unknown.
            exit: task.and_then(exit_of).or_else(|| {
                (task.is_none() && replicas(service) == Some(0)).then_some(ExitStatus {
                    code: -1,
                    oom_killed: false,
                })
            }),
            endpoint: endpoint.filter(|_| running),
        }
    }
}
