//! berth on a real 3-node Docker Swarm (`cargo test --test swarm`): the cluster is built
//! on this machine's Docker Engine by [`cluster`], once for all the tests of this target,
//! which run one after another on it.

mod cluster;
mod dns;

use std::time::Duration;

use cluster::{Cluster, Options, OVERLAY};

/// The cluster: its nodes form, a `dnsrr` service on the attachable overlay answers a
/// container on another node at its task address, and no DNS question leaves the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_forms_and_asks_no_outside_resolver() {
    let mut options = Options::new();
    options.heartbeat = Duration::from_secs(1);
    let cluster = Cluster::up(options).await;
    eprintln!("cluster up in {:?}", cluster.setup);
    let manager = cluster.manager();
    let nodes = cluster::run(manager.docker().args([
        "node",
        "ls",
        "--format",
        "{{.Hostname}} {{.Status}} {{.ManagerStatus}}",
    ]))
    .await;
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    assert_eq!(
        nodes.lines().filter(|l| l.contains("Leader")).count(),
        1,
        "{nodes}"
    );

    let probe = cluster::probe_image().await;
    cluster::run(manager.docker().args([
        "service",
        "create",
        "-d",
        "--name",
        "hello",
        "--network",
        OVERLAY,
        "--endpoint-mode",
        "dnsrr",
        "--restart-condition",
        "none",
        "--no-resolve-image",
        "--constraint",
        "node.role==manager",
        &probe,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/etc",
    ]))
    .await;
    let mut answer = Err(String::new());
    for _ in 0..100 {
        answer = cluster.get(1, "tasks.hello", 8080, "/hostname").await;
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        answer.is_ok(),
        "node 2 reaches the service on node 1: {answer:?}"
    );

    // A name nobody knows: the node's dockerd asks the cluster's resolver, and only it.
    let before = cluster.resolver.questions();
    let unknown = cluster
        .probe(2, "nslookup -type=a no-such-name.example.com 2>&1")
        .await;
    assert!(
        cluster.resolver.questions() > before,
        "the resolver was asked: {unknown:?}"
    );
    for node in 0..3 {
        assert_eq!(
            cluster.stray_dns_packets(node).await,
            0,
            "node {node} sent DNS elsewhere"
        );
    }
    cluster::run(manager.docker().args(["service", "rm", "hello"])).await;
}
