//! `berth deploy` to the cluster's routers, and the rollout that follows across nodes.

use std::process::Stdio;

use crate::cluster::{self, Cluster};
use crate::routers::{self, Routers};

/// A new version of the app, deployed with `berth deploy` to one router: the running
/// object is replaced by a container of the new version (a service of a new name), which
/// answers through every router, and the old version's service is gone.
pub async fn a_deploy_rolls_out_across_the_nodes(cluster: &Cluster, routers: &Routers) {
    let name = "rolled";
    let (status, before) = routers::get(routers, 0, name, "/")
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{before}");
    assert!(!before.contains("second version"), "{before}");
    let old_services = routers::services(cluster).await;

    let dir = std::env::temp_dir().join(format!("berth-swarm-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("app folder");
    let image = cluster::app_image().await;
    std::fs::write(
        dir.join("berth.toml"),
        routers::manifest_with(&image, "second version"),
    )
    .expect("manifest");
    // To one router: it relays the deploy to the others.
    let node = &cluster.nodes[1];
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        // The first deployment came from the control API, not this folder.
        .args(["deploy", "--adopt"])
        .arg(&dir)
        .env("BERTH_SERVER", format!("http://{}:7878", node.ip))
        .env("BERTH_TOKEN", &routers.token)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("berth runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "deploy to {} failed:\n{stderr}",
        node.name
    );
    assert!(
        !stderr.contains("not every router"),
        "every router made it: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("deployment 2 of swarm is active"),
        "the rollout ended: {stdout}\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Every router made it: each runs its own deployment 2, from that folder.
    for router in 0..3 {
        let app = routers::app_of(cluster, routers, router).await;
        assert_eq!(app["deployment"]["number"], 2, "router {router}: {app}");
        assert!(
            app["deployment"]["source"]
                .as_str()
                .is_some_and(|s| s.contains("berth-swarm-deploy")),
            "router {router}: {app}"
        );
    }

    for router in 0..3 {
        let answer = cluster::eventually(|| async {
            match routers::get(routers, router, name, "/").await {
                Ok((200, body)) if body.contains("second version") => Ok(body),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert!(
            answer.is_ok(),
            "router {router} serves the new version: {answer:?}"
        );
    }
    let now = routers::services(cluster).await;
    let replaced: Vec<&String> = old_services.iter().filter(|s| now.contains(s)).collect();
    let mine: Vec<String> = {
        let mut mine = Vec::new();
        for service in &now {
            let label = cluster::run(cluster.manager().docker().args([
                "service",
                "inspect",
                service,
                "--format",
                "{{index .Spec.Labels \"berth.object-name\"}}",
            ]))
            .await;
            if label == name {
                mine.push(service.clone());
            }
        }
        mine
    };
    assert_eq!(mine.len(), 1, "one service for {name}: {mine:?}");
    assert!(
        !old_services.contains(&mine[0]),
        "its service is of the new version (a new name): {mine:?}, before {old_services:?}; kept {replaced:?}"
    );
}
