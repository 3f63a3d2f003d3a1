//! berth on a real 3-node Docker Swarm (`cargo test --test swarm`). The cluster is built
//! on this machine's Docker Engine by [`cluster`] once, and the scenarios run one after
//! another on it: a cluster takes 5-10 s to build, and three at once would crowd 2 cores.

#[path = "../common/mod.rs"]
mod common;

mod bench;
mod cluster;
mod cost;
mod deploys;
mod dns;
mod failover;
mod partition;
mod routers;
mod runtime;
mod storage;

use std::time::Duration;

use cluster::{Cluster, Options, OVERLAY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm() {
    // Swarm's default heartbeat (5 s) until the failure scenarios: with 1 s, a node of a
    // loaded machine may miss one and be taken for dead, its tasks shut down.
    let mut options = Options::new();
    options.images.push(cluster::app_image().await);
    let cluster = Cluster::up(options).await;
    eprintln!("cluster up in {:?}", cluster.setup);
    the_cluster_forms_and_asks_no_outside_resolver(&cluster).await;
    runtime::objects_spread_over_the_nodes_each_with_its_own_identity(&cluster).await;
    runtime::concurrent_creates_of_one_object_make_one_service(&cluster).await;
    runtime::a_stop_ends_the_task_and_a_removal_leaves_nothing(&cluster).await;
    let routers = routers::Routers::start(&cluster).await;
    if std::env::var_os("BERTH_SWARM_BENCH").is_some() {
        bench::run(&cluster, &routers).await;
        return;
    }
    routers::first_requests_through_every_router_make_one_service(&cluster, &routers).await;
    routers::any_router_serves_a_name_that_sleeps_and_wakes(&cluster, &routers).await;
    routers::starts_and_peeks_go_home(&cluster, &routers).await;
    deploys::a_deploy_rolls_out_across_the_nodes(&cluster, &routers).await;
    routers::a_killed_routers_objects_are_adopted_without_restart(&cluster, &routers).await;
    let counted =
        storage::an_objects_storage_is_one_whichever_router_runs_it(&cluster, &routers).await;
    routers::replaced_routers_catch_up_from_the_others(&cluster, &routers).await;
    storage::an_objects_storage_outlives_every_router(&cluster, &routers, counted).await;
    cluster.set_heartbeat(Duration::from_secs(1)).await;
    partition::a_cut_off_node_runs_its_copy_until_it_heals(&cluster, &routers).await;
    failover::a_lost_nodes_objects_are_served_from_the_others(&cluster, &routers).await;
}

/// The cluster: its nodes form, a `dnsrr` service on the attachable overlay answers a
/// container on another node at its task address, and no DNS question leaves the machine.
async fn the_cluster_forms_and_asks_no_outside_resolver(cluster: &Cluster) {
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
    let answer = cluster::eventually(|| cluster.get(1, "tasks.hello", 8080, "/hostname")).await;
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
