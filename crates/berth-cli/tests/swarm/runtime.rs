//! berth's Swarm runtime against the real cluster: objects as services, placed by the
//! managers, one per object and version cluster-wide. The test process is on the host,
//! off the overlay, so what a task answers is asked from a keeper on a node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth::egress::Policy;
use berth::runtime::{ContainerSpec, Identity, Selector, Signal};
use berth::{ObjectId, Runtime, SwarmRuntime};

use crate::cluster::{self, Cluster, OVERLAY};

async fn runtime(cluster: &Cluster) -> SwarmRuntime {
    let host = format!("unix://{}", cluster.manager().socket.display());
    SwarmRuntime::connect_to(&host, OVERLAY)
        .await
        .expect("the manager's API")
}

pub fn spec(app: &str, name: &str, image: &str) -> ContainerSpec {
    use sha2::{Digest, Sha256};
    let hex: String = Sha256::digest(format!("{app}/Echo/{name}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ContainerSpec {
        identity: Identity {
            app: app.into(),
            class: "Echo".into(),
            object_id: ObjectId::parse_hex(&hex).expect("an id"),
            object_name: Some(name.into()),
            session: format!("s{}", std::process::id()),
            host: "swarm-test".into(),
            version: "v1".into(),
            standby: false,
        },
        image: image.into(),
        env: BTreeMap::from([("OBJECT_NAME".to_string(), name.to_string())]),
        entrypoint: None,
        labels: BTreeMap::new(),
        ports: vec![8080],
        egress: Policy::open(),
        init: true,
        stop_grace: std::time::Duration::from_secs(10),
        nano_cpus: 0,
        memory_bytes: 0,
        volumes: Vec::new(),
    }
}

/// Node hostnames by the services' tasks, from the manager's task list.
async fn placements(cluster: &Cluster, app: &str) -> BTreeMap<String, String> {
    let services = cluster::run(cluster.manager().docker().args([
        "service",
        "ls",
        "--filter",
        &format!("label=berth.app={app}"),
        "--format",
        "{{.Name}}",
    ]))
    .await;
    let mut placed = BTreeMap::new();
    for service in services.lines() {
        let node = cluster::run(cluster.manager().docker().args([
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}",
        ]))
        .await;
        placed.insert(service.to_string(), node);
    }
    placed
}

/// 30 names: 30 services, spread by the managers over all three nodes, each answering
/// with its own identity at its task's address.
pub async fn objects_spread_over_the_nodes_each_with_its_own_identity(cluster: &Cluster) {
    let runtime = Arc::new(runtime(cluster).await);
    let image = crate::cluster::app_image().await;
    let names: Vec<String> = (0..30).map(|i| format!("spread-{i}")).collect();
    let mut starts = Vec::new();
    for name in &names {
        let (runtime, spec) = (runtime.clone(), spec("spread", name, &image));
        starts.push(tokio::spawn(async move {
            let created = runtime.create(&spec).await.expect("create");
            runtime.start(&created.id).await.expect("start");
            created
        }));
    }
    let mut created = Vec::new();
    for start in starts {
        created.push(start.await.expect("task"));
    }
    let placed = placements(cluster, "spread").await;
    assert_eq!(placed.len(), 30, "{placed:?}");
    let nodes: BTreeSet<&String> = placed.values().collect();
    assert_eq!(nodes.len(), 3, "every node runs some: {placed:?}");
    for (i, (name, service)) in names.iter().zip(&created).enumerate() {
        // At the address the runtime gives, as berth's router would connect.
        let info = runtime.inspect(&service.id).await.expect("inspect");
        let address = info
            .endpoint
            .as_ref()
            .and_then(|e| e.addr(8080))
            .unwrap_or_else(|| panic!("{name} has an address on the overlay: {info:?}"));
        let host = address.ip().to_string();
        let env = cluster::eventually(|| cluster.get(i % 3, &host, 8080, "/env"))
            .await
            .unwrap_or_else(|e| panic!("{name} answers from node {}: {e}", i % 3 + 1));
        assert!(
            env.contains(&format!("\"OBJECT_NAME\":\"{name}\"")),
            "{name} answers as itself: {env}"
        );
    }
    let listed = runtime.list(&Selector::app("spread")).await.expect("list");
    assert_eq!(listed.iter().filter(|c| c.running).count(), 30);
    assert!(listed.iter().all(|c| c.identity.as_ref().is_some_and(|i| i
        .object_name
        .as_deref()
        .is_some_and(|n| n.starts_with("spread-")))));
    for service in &created {
        runtime.remove(&service.id).await.expect("remove");
    }
    assert!(runtime
        .list(&Selector::app("spread"))
        .await
        .expect("list")
        .is_empty());
}

/// 200 creates of one object at once: the managers keep one service, every create
/// answers with it, and one task runs cluster-wide.
pub async fn concurrent_creates_of_one_object_make_one_service(cluster: &Cluster) {
    let runtime = Arc::new(runtime(cluster).await);
    let spec = spec("stampede", "one", &crate::cluster::app_image().await);
    let mut creates = Vec::new();
    for _ in 0..200 {
        let (runtime, spec) = (runtime.clone(), spec.clone());
        creates.push(tokio::spawn(async move { runtime.create(&spec).await }));
    }
    let mut ids = BTreeSet::new();
    for create in creates {
        let created = create.await.expect("task").expect("every create succeeds");
        ids.insert(created.id);
    }
    assert_eq!(ids.len(), 1, "one service: {ids:?}");
    let id = ids.into_iter().next().expect("one id");
    runtime.start(&id).await.expect("start");
    let placed = placements(cluster, "stampede").await;
    assert_eq!(placed.len(), 1, "{placed:?}");
    assert_eq!(
        placed.values().next().map(|n| n.lines().count()),
        Some(1),
        "one running task"
    );
    // A service of the same name but another object is not adopted.
    let mut other = spec.clone();
    other.identity.class = "Other".into();
    let service = berth::runtime::swarm::service_name(&other.identity);
    assert_eq!(service, berth::runtime::swarm::service_name(&spec.identity));
    let refused = runtime
        .create(&other)
        .await
        .expect_err("another object's service is not adopted");
    assert!(
        refused.to_string().contains("docker service rm"),
        "{refused}"
    );
    runtime.remove(&id).await.expect("remove");
}

/// A stop (SIGTERM) ends the task, whose grace is the class's (Swarm's own SIGKILL comes
/// after it); `wait` reports it, and a removal leaves no service. A kill leaves no
/// container running anywhere.
pub async fn a_stop_ends_the_task_and_a_removal_leaves_nothing(cluster: &Cluster) {
    let runtime = runtime(cluster).await;
    let image = crate::cluster::app_image().await;
    let mut one = spec("stop", "one", &image);
    one.stop_grace = std::time::Duration::from_secs(30);
    let created = runtime.create(&one).await.expect("create");
    runtime.start(&created.id).await.expect("start");
    assert!(runtime.inspect(&created.id).await.expect("inspect").running);
    // The task's own spec: Swarm stops a task with the grace it was created with.
    let task =
        cluster::run(
            cluster
                .manager()
                .docker()
                .args(["service", "ps", "-q", &created.name]),
        )
        .await;
    let grace = cluster::run(cluster.manager().docker().args([
        "inspect",
        task.lines().next().unwrap_or_default(),
        "--format",
        "{{.Spec.ContainerSpec.StopGracePeriod}}",
    ]))
    .await;
    assert_eq!(grace, "30s", "the task carries the class's grace");
    runtime.kill(&created.id, Signal::Term).await.expect("stop");
    let exit = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        runtime.wait(&created.id),
    )
    .await
    .expect("the task ends")
    .expect("wait");
    let info = runtime.inspect(&created.id).await.expect("inspect");
    assert!(!info.running);
    // The test server exits 0 on SIGTERM; Swarm may delete the ended task at any moment,
    // and then its code is unknown (-1).
    assert!([0, -1].contains(&exit.code), "{exit:?}");
    assert!(
        info.exit.is_some_and(|e| [0, -1].contains(&e.code)),
        "{info:?}"
    );
    assert!(
        runtime.kill(&created.id, Signal::Hup).await.is_err(),
        "Swarm cannot send SIGHUP, and says so"
    );
    assert!(runtime.pause(&created.id).await.is_err());
    runtime.remove(&created.id).await.expect("remove");
    runtime
        .remove(&created.id)
        .await
        .expect("a second removal is not an error");
    let left = cluster::run(cluster.manager().docker().args(["service", "ls", "-q"])).await;
    assert_eq!(left, "", "no service left");

    // A kill frees the service's name only once its task is gone from every node, so
    // that a new service of that name never runs beside it.
    let killed = runtime
        .create(&spec("stop", "killed", &image))
        .await
        .expect("create");
    runtime.start(&killed.id).await.expect("start");
    runtime.kill(&killed.id, Signal::Kill).await.expect("kill");
    let filter = format!("label=com.docker.swarm.service.name={}", killed.name);
    for node in &cluster.nodes {
        let running = cluster::run(node.docker().args(["ps", "-q", "--filter", &filter])).await;
        assert_eq!(
            running, "",
            "no container of the killed object on {}",
            node.name
        );
    }
    let left = cluster::run(cluster.manager().docker().args(["service", "ls", "-q"])).await;
    assert_eq!(left, "", "the killed object's service is removed");
}
