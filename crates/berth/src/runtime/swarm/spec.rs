//! How a berth container becomes a Swarm service: one replica, never restarted by Swarm
//! (berth's lifecycle decides), on berth's overlay network, reached at its task's address
//! (`endpoint_mode = dnsrr`: no virtual IP, no routing mesh).

use std::collections::HashMap;

use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, Limit, NetworkAttachmentConfig, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use crate::runtime::docker::labels;
use crate::runtime::{ContainerSpec, Identity};

/// The service name of `identity`: the same on every router, so that Swarm's managers,
/// which refuse a second service of one name, keep one live container per object and
/// version across the cluster. Within Swarm's 63 characters: `berth-`, 40 hex digits of
/// the object id (160 bits), `-`, 8 of the version's hash.
pub fn service_name(identity: &Identity) -> String {
    use sha2::{Digest, Sha256};
    let id = identity.object_id.to_string();
    let version: String = Sha256::digest(identity.version.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("berth-{}-{version}", &id[..40])
}

/// The service for `spec`, attached to `network`, with `replicas` tasks.
pub fn service_spec(spec: &ContainerSpec, network: &str, replicas: i64) -> ServiceSpec {
    let rendered: HashMap<String, String> = labels::render(&spec.identity, &spec.labels)
        .into_iter()
        .collect();
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(rendered.clone()),
        // Swarm's command replaces the image's entrypoint, as berth's entrypoint does.
        command: spec.entrypoint.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        init: Some(spec.init),
        stop_grace_period: Some(i64::try_from(spec.stop_grace.as_nanos()).unwrap_or(i64::MAX)),
        ..Default::default()
    };
    let limits = Limit {
        nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
        memory_bytes: (spec.memory_bytes > 0).then_some(spec.memory_bytes),
        pids: None,
    };
    ServiceSpec {
        name: Some(service_name(&spec.identity)),
        labels: Some(rendered),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(limits),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(network.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas),
            }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdScheme;

    fn identity(version: &str) -> Identity {
        Identity {
            app: "shop".into(),
            class: "Cart".into(),
            object_id: IdScheme::new("shop/Cart").for_name("alice"),
            object_name: Some("alice".into()),
            session: "s".into(),
            host: "h".into(),
            version: version.into(),
            standby: false,
        }
    }

    #[test]
    fn a_service_is_named_by_its_object_and_version_within_swarms_limit() {
        let name = service_name(&identity("v1"));
        assert_eq!(name.len(), 6 + 40 + 1 + 8, "{name}");
        assert!(name.len() <= 63);
        assert_eq!(
            name,
            service_name(&identity("v1")),
            "the same on every router"
        );
        assert_ne!(name, service_name(&identity("v2")));
        let mut other = identity("v1");
        other.object_id = IdScheme::new("shop/Cart").for_name("bob");
        assert_ne!(name, service_name(&other));
    }
}
