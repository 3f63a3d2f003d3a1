//! What the engine's inspection of a container tells berth: how to reach it, and its
//! identity, state and exit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::models::ContainerInspectResponse;

use super::egress::POLICY_LABEL;
use super::{labels, DockerRuntime, Reach, DEFAULT_NETWORK, INTERNAL_NETWORK};
use crate::runtime::{ContainerInfo, Endpoint, ExitStatus};

/// How long an exit 137 that berth did not cause is asked about: the engine learns of a
/// kill by the OOM killer through an event of its own, which may come after the exit, later
/// still on a busy machine (200 ms was once too short).
const OOM_REPORT_LIMIT: Duration = Duration::from_secs(3);

impl DockerRuntime {
    /// Marks (or, once it is removed, forgets) a container berth sent SIGKILL.
    pub(super) fn killed_by_berth(&self, id: &str, killed: bool) {
        let mut set = self.killed.lock().unwrap_or_else(|e| e.into_inner());
        if killed {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
    }

    /// Whether the container that exited with 137 was killed for lack of memory.
    pub(super) async fn oom_killed(&self, id: &str) -> bool {
        let ours = self
            .killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id);
        let deadline = tokio::time::Instant::now() + OOM_REPORT_LIMIT;
        loop {
            let oom = match self.docker.inspect_container(id, None).await {
                Ok(info) => info.state.and_then(|s| s.oom_killed).unwrap_or(false),
                Err(_) => return false,
            };
            if oom || ours || tokio::time::Instant::now() >= deadline {
                return oom;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) fn endpoint(&self, info: &ContainerInspectResponse) -> Option<Endpoint> {
        let settings = info.network_settings.as_ref()?;
        match self.reach {
            Reach::Bridge => {
                let networks = settings.networks.as_ref()?;
                let ip = [DEFAULT_NETWORK, INTERNAL_NETWORK]
                    .iter()
                    .filter_map(|name| networks.get(*name))
                    .chain(networks.values())
                    .filter_map(|n| n.ip_address.as_deref())
                    .find_map(|ip| ip.parse::<IpAddr>().ok())?;
                Some(Endpoint::Bridge(ip))
            }
            Reach::Loopback => {
                let ports = settings.ports.as_ref()?;
                let published = ports
                    .iter()
                    .filter_map(|(key, bindings)| {
                        let port = key.strip_suffix("/tcp")?.parse::<u16>().ok()?;
                        let host_port = bindings
                            .as_ref()?
                            .iter()
                            .filter(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
                            .find_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())?;
                        Some((
                            port,
                            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), host_port),
                        ))
                    })
                    .collect();
                Some(Endpoint::Published(published))
            }
        }
    }

    pub(super) fn info(&self, info: ContainerInspectResponse) -> ContainerInfo {
        let state = info.state.clone().unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let endpoint = if running { self.endpoint(&info) } else { None };
        let container_labels: std::collections::BTreeMap<String, String> = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .map(|l| l.into_iter().collect())
            .unwrap_or_default();
        if running && container_labels.contains_key(POLICY_LABEL) {
            // A container from before a restart of berth still needs its way out.
            self.egress.serve();
        }
        let exited = matches!(
            state.status,
            Some(bollard::models::ContainerStateStatusEnum::EXITED)
                | Some(bollard::models::ContainerStateStatusEnum::DEAD)
        );
        ContainerInfo {
            id: info.id.unwrap_or_default(),
            name: info
                .name
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            image: info
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default(),
            identity: labels::parse(&container_labels),
            labels: container_labels,
            running,
            exit: exited.then(|| ExitStatus {
                code: state.exit_code.unwrap_or(-1),
                oom_killed: state.oom_killed.unwrap_or(false),
            }),
            endpoint,
        }
    }
}
