//! A worker node lost: its `dockerd` is killed, the managers mark it down, and the
//! objects whose tasks ran there are served again from the other nodes.

use std::time::{Duration, Instant};

use crate::cluster::{self, Cluster};
use crate::routers::{self, Routers, SERVICE};

/// The service of object `name` of the test app: its name, the node its running task is
/// on, and the router (container id prefix) that made it. A service removed between the
/// listing and its inspection (a dead one that a router replaces) is passed over.
async fn placed(cluster: &Cluster, name: &str) -> Option<(String, String, String)> {
    for service in routers::services(cluster).await {
        let Some(labels) = cluster::try_run(cluster.manager().docker().args([
            "service",
            "inspect",
            &service,
            "--format",
            "{{index .Spec.Labels \"berth.object-name\"}} {{index .Spec.Labels \"berth.host\"}}",
        ]))
        .await
        else {
            continue;
        };
        let Some(router) = labels.strip_prefix(&format!("{name} ")) else {
            continue;
        };
        let Some(node) = cluster::try_run(cluster.manager().docker().args([
            "service",
            "ps",
            &service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}",
        ]))
        .await
        else {
            continue;
        };
        return Some((service, node, router.to_string()));
    }
    None
}

/// The node (index) whose engine runs router container `router`, if it runs.
async fn router_node(cluster: &Cluster, router: &str) -> Option<usize> {
    for (i, node) in cluster.nodes.iter().enumerate() {
        let ids = cluster::run(node.docker().args([
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("name={SERVICE}"),
        ]))
        .await;
        if ids.lines().any(|id| id.starts_with(router)) {
            return Some(i);
        }
    }
    None
}

/// Kills the `dockerd` of a worker node whose tasks serve an object homed on a router
/// that lives on another node: that object is served again, by a new container on another
/// node, once the managers have marked the node down. Prints both times.
pub async fn a_lost_nodes_objects_are_served_from_the_others(cluster: &Cluster, routers: &Routers) {
    // A router that still answers, on some node: the requests go through it.
    let via = *routers::answering(routers)
        .await
        .first()
        .expect("a router still answers");
    let doomed = if via == 2 { 1 } else { 2 };
    let (marked_down, served) = lose(cluster, routers, via, doomed, "lost").await;
    eprintln!(
        "node n{} lost: marked down after {marked_down:?}, served again by a new container after {served:?}",
        doomed + 1
    );
}

/// Kills node `doomed`'s dockerd while an object whose task runs there (homed on another
/// node, named after `prefix`) is asked for through router `via`, until a new container
/// on another node answers. How long after the kill the managers marked the node down,
/// and the object was served again.
pub async fn lose(
    cluster: &Cluster,
    routers: &Routers,
    via: usize,
    doomed: usize,
    prefix: &str,
) -> (Option<Duration>, Duration) {
    let doomed_host = format!("n{}", doomed + 1);
    let name = an_object_on(cluster, routers, via, doomed, prefix).await;
    let before = routers::hostname(routers, via, &name).await;

    let began = Instant::now();
    cluster::run(tokio::process::Command::new("docker").args([
        "exec",
        &cluster.nodes[doomed].name,
        "sh",
        "-c",
        "kill -9 $(cat /node/dockerd.pid)",
    ]))
    .await;
    let mut marked_down = None;
    let mut served = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (marked_down.is_none() || served.is_none()) && Instant::now() < deadline {
        if marked_down.is_none() {
            let status = cluster::run(cluster.manager().docker().args([
                "node",
                "inspect",
                &doomed_host,
                "--format",
                "{{.Status.State}}",
            ]))
            .await;
            if status == "down" {
                marked_down = Some(began.elapsed());
            }
        }
        if served.is_none() {
            if let Ok((200, env)) = routers::get(routers, via, &name, "/env").await {
                let env: serde_json::Value = serde_json::from_str(&env).unwrap_or_default();
                if env["HOSTNAME"].as_str().is_some_and(|h| h != before) {
                    served = Some(began.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.unwrap_or_else(|| panic!("{name} was not served again within 120 s"));
    // The new task is listed once the managers have placed it: a node lost a moment ago
    // may still be named for the old one.
    let node = cluster::eventually(|| async {
        match placed(cluster, &name).await {
            Some((_, node, _)) if node != doomed_host && !node.is_empty() => Ok(node),
            other => Err(format!("{name} is placed at {other:?}")),
        }
    })
    .await;
    assert!(node.is_ok(), "the new task runs on a live node: {node:?}");
    (marked_down, served)
}

/// The name of an object, made by requests through router `via`, whose task runs on node
/// `node` and whose home router runs on another node. Its name starts with `prefix`.
pub async fn an_object_on(
    cluster: &Cluster,
    routers: &Routers,
    via: usize,
    node: usize,
    prefix: &str,
) -> String {
    let node_host = format!("n{}", node + 1);
    let mut chosen = None;
    for batch in 0..8 {
        let names: Vec<String> = (0..6).map(|i| format!("{prefix}-{batch}-{i}")).collect();
        let mut gets = Vec::new();
        for name in &names {
            let addr = routers.public[via].clone();
            let name = name.clone();
            gets.push(tokio::spawn(async move {
                routers::request(
                    &addr,
                    "GET",
                    "/env",
                    &[("Host", "web.swarm.localhost"), ("x-name", &name)],
                    "",
                )
                .await
            }));
        }
        // A node that rejoined a moment ago (after the partition scenario) may not yet
        // reach the overlay: a task placed there can fail to answer. Such names are
        // passed over, and said.
        let mut answered = Vec::new();
        for (name, get) in names.iter().zip(gets) {
            match get.await.expect("task") {
                Ok((200, _)) => answered.push(name),
                other => eprintln!("{name} was not served, passed over: {other:?}"),
            }
        }
        for name in answered {
            let Some((_, host, router)) = placed(cluster, name).await else {
                continue;
            };
            let home = router_node(cluster, &router).await;
            if host == node_host && home.is_some_and(|h| h != node) {
                chosen = Some(name.clone());
                break;
            }
        }
        if chosen.is_some() {
            break;
        }
    }
    chosen.expect("an object on the node, homed on another")
}
