//! Figures on the 3-node cluster, printed as Markdown, when `BERTH_SWARM_BENCH=1`
//! (`bench/swarm.sh` builds in release mode and runs it; it asserts nothing):
//!
//! - the extra hop: wrk against the router that is a name's home, and against one that
//!   is not (which sends each request on to the home), in the same run;
//! - cold starts: a first request through a router, against the service create berth's
//!   runtime makes until its task runs, from the host (Swarm's part of the cold start);
//! - the manager's cost with many services ([`crate::cost`]);
//! - recovery after a node loss, with Swarm's default heartbeat and with a short one.

use std::time::{Duration, Instant};

use berth::Runtime;

use crate::cluster::{self, Cluster, OVERLAY};
use crate::routers::{self, Routers};

const SECONDS: u32 = 5;
const ROUNDS: usize = 3;
const COLD_SAMPLES: usize = 8;

pub async fn run(cluster: &Cluster, routers: &Routers) {
    extra_hop(cluster, routers).await;
    cold_start(cluster, routers).await;
    crate::cost::run(cluster).await;
    recovery(cluster, routers).await;
}

/// A worker's dockerd killed with Swarm's default dispatcher heartbeat (5 s), then the
/// other worker's with a 1 s heartbeat: when the node was marked down, and when a new
/// container on a live node answered. It ends the cluster's workers.
async fn recovery(cluster: &Cluster, routers: &Routers) {
    println!("\n### Recovery after a node loss (a worker's dockerd killed)\n");
    println!("| dispatcher heartbeat | node marked down after | served by a new container after |");
    println!("|---|---|---|");
    for (seconds, doomed) in [(5, 2), (1, 1)] {
        cluster.set_heartbeat(Duration::from_secs(seconds)).await;
        let heartbeat = format!("{seconds} s");
        let prefix = format!("recover-{seconds}");
        let (down, served) = crate::failover::lose(cluster, routers, 0, doomed, &prefix).await;
        let down = down.map_or("not seen".to_string(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        });
        println!("| {heartbeat} | {down} | {:.1} s |", served.as_secs_f64());
    }
}

/// wrk's requests per second and latency percentiles (p50, p99, in µs).
fn wrk(addr: &str, connections: u32) -> (f64, f64, f64) {
    let output = std::process::Command::new("wrk")
        .args([
            "-t1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{SECONDS}s"),
            "--latency",
            "-H",
            "Host: web.swarm.localhost",
            "-H",
            "x-name: hop",
            &format!("http://{addr}/ping"),
        ])
        .output()
        .expect("wrk runs (bench/setup.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .map(|v| micros(v.trim()))
            .unwrap_or(0.0)
    };
    (rate, percentile("50%"), percentile("99%"))
}

fn micros(value: &str) -> f64 {
    let (number, factor) = if let Some(v) = value.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1000.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1_000_000.0)
    } else {
        (value, 1.0)
    };
    number.parse::<f64>().unwrap_or(0.0) * factor
}

/// The time from `runtime`'s create of `spec` until its container runs, and what was
/// created.
pub async fn create_until_running(
    runtime: &impl Runtime,
    spec: &berth::runtime::ContainerSpec,
) -> (Duration, berth::runtime::Created) {
    let began = Instant::now();
    let created = runtime.create(spec).await.expect("create");
    runtime.start(&created.id).await.expect("start");
    (began.elapsed(), created)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn extra_hop(cluster: &Cluster, routers: &Routers) {
    let (status, _) = routers::get(routers, 0, "hop", "/ping")
        .await
        .expect("an answer");
    assert_eq!(status, 200);
    let holders = routers::holders(cluster, routers, "hop").await;
    let home = holders[0];
    let other = (home + 1) % 3;
    println!("\n### Extra hop (wrk, {SECONDS} s per run, {ROUNDS} rounds, medians)\n");
    println!("| connections | home req/s | other router req/s | other / home | home p50 | other p50 | added p50 | home p99 | other p99 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for connections in [1, 16, 64] {
        let (mut home_runs, mut other_runs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (h, o) = (routers.public[home].clone(), routers.public[other].clone());
            home_runs.push(
                tokio::task::spawn_blocking(move || wrk(&h, connections))
                    .await
                    .expect("wrk"),
            );
            other_runs.push(
                tokio::task::spawn_blocking(move || wrk(&o, connections))
                    .await
                    .expect("wrk"),
            );
        }
        let column = |runs: &Vec<(f64, f64, f64)>, i: usize| {
            median(runs.iter().map(|r| [r.0, r.1, r.2][i]).collect())
        };
        let (hr, h50, h99) = (
            column(&home_runs, 0),
            column(&home_runs, 1),
            column(&home_runs, 2),
        );
        let (or, o50, o99) = (
            column(&other_runs, 0),
            column(&other_runs, 1),
            column(&other_runs, 2),
        );
        println!(
            "| {connections} | {hr:.0} | {or:.0} | {:.2} | {h50:.0} µs | {o50:.0} µs | {:.0} µs | {h99:.0} µs | {o99:.0} µs |",
            or / hr,
            o50 - h50
        );
    }
}

async fn cold_start(cluster: &Cluster, routers: &Routers) {
    let host = format!("unix://{}", cluster.manager().socket.display());
    let runtime = berth::SwarmRuntime::connect_to(&host, OVERLAY)
        .await
        .expect("the manager's API");
    let single = berth::DockerRuntime::connect_to(&host)
        .await
        .expect("the manager's engine, as a single host");
    let image = cluster::app_image().await;
    let (mut through_berth, mut swarm_alone, mut single_host) =
        (Vec::new(), Vec::new(), Vec::new());
    for i in 0..COLD_SAMPLES {
        let began = Instant::now();
        let (status, _) = routers::get(routers, i % 3, &format!("cold-{i}"), "/ping")
            .await
            .expect("an answer");
        assert_eq!(status, 200);
        through_berth.push(began.elapsed());

        let spec = crate::runtime::spec("bench-cold", &format!("cold-{i}"), &image);
        let (took, created) = create_until_running(&runtime, &spec).await;
        swarm_alone.push(took);
        runtime.remove(&created.id).await.expect("remove");

        let spec = crate::runtime::spec("bench-single", &format!("cold-{i}"), &image);
        let (took, created) = create_until_running(&single, &spec).await;
        single_host.push(took);
        single.remove(&created.id).await.expect("remove");
    }
    let ms = |d: &Vec<Duration>| median(d.iter().map(|d| d.as_secs_f64() * 1000.0).collect());
    let (berth, swarm, one) = (ms(&through_berth), ms(&swarm_alone), ms(&single_host));
    println!(
        "\n### Cold start on the cluster ({COLD_SAMPLES} samples each, interleaved, medians)\n"
    );
    println!("| service create until its task runs (Swarm alone, from the host) | first request through a router, until the answer | berth / Swarm alone | single-host berth's runtime on the manager's engine, create until running | Swarm alone / single host |");
    println!("|---|---|---|---|---|");
    println!(
        "| {swarm:.0} ms | {berth:.0} ms | {:.2} | {one:.0} ms | {:.2} |",
        berth / swarm,
        swarm / one
    );
}
