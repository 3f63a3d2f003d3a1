//! What many services cost the manager, for the benchmark: its dockerd's memory and CPU,
//! the time to create services, and a cold start, at 0, 200 and 1,000 services scaled to
//! 0 (what sleeping objects would cost if a sleep kept their service), and with 100
//! running services. Prints Markdown; asserts nothing.

use std::time::{Duration, Instant};

use berth::Runtime;

use crate::bench::median;
use crate::cluster::{self, Cluster, OVERLAY};

/// Creates at once, each a `docker service create` of its own.
const PARALLEL: usize = 4;
/// How long the manager's idle CPU is read over.
const IDLE: Duration = Duration::from_secs(10);
/// Cold starts per step; the median is printed.
const COLD: usize = 3;

/// The manager's dockerd: resident memory (MiB) and CPU time used so far (s).
async fn manager_usage(cluster: &Cluster) -> (f64, f64) {
    let text = cluster::run(tokio::process::Command::new("docker").args([
        "exec",
        &cluster.manager().name,
        "sh",
        "-c",
        "p=$(cat /node/dockerd.pid); grep VmRSS /proc/$p/status; cat /proc/$p/stat",
    ]))
    .await;
    let rss_kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    // utime and stime, in clock ticks (100 a second), after the command's name.
    let ticks: f64 = text
        .lines()
        .last()
        .and_then(|stat| stat.rsplit_once(')'))
        .map(|(_, rest)| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            [11, 12]
                .iter()
                .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    (rss_kib / 1024.0, ticks / 100.0)
}

/// The manager's CPU use at rest, in % of one core, over [`IDLE`].
async fn idle_cpu(cluster: &Cluster) -> f64 {
    let (_, before) = manager_usage(cluster).await;
    tokio::time::sleep(IDLE).await;
    let (_, after) = manager_usage(cluster).await;
    (after - before) / IDLE.as_secs_f64() * 100.0
}

/// Creates services `prefix-from` .. `prefix-to` with `replicas` tasks each, [`PARALLEL`]
/// at a time; how long it took.
async fn create(
    cluster: &Cluster,
    image: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
    replicas: u32,
) -> Duration {
    let began = Instant::now();
    let names: Vec<String> = range.map(|i| format!("{prefix}-{i}")).collect();
    for chunk in names.chunks(PARALLEL) {
        let mut creates = Vec::new();
        for name in chunk {
            let mut command = cluster.manager().docker();
            command.args([
                "service",
                "create",
                "-d",
                "--quiet",
                "--name",
                name,
                "--replicas",
                &replicas.to_string(),
                "--restart-condition",
                "none",
                "--endpoint-mode",
                "dnsrr",
                "--network",
                OVERLAY,
                "--no-resolve-image",
                image,
            ]);
            creates.push(async move { cluster::run(&mut command).await });
        }
        futures_util::future::join_all(creates).await;
    }
    began.elapsed()
}

/// Removes every service whose name starts with `prefix`.
async fn remove_all(cluster: &Cluster, prefix: &str) {
    let names = cluster::run(cluster.manager().docker().args([
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("name={prefix}-"),
    ]))
    .await;
    let names: Vec<&str> = names.split_whitespace().collect();
    for chunk in names.chunks(100) {
        let mut command = cluster.manager().docker();
        command.args(["service", "rm"]).args(chunk);
        cluster::run(&mut command).await;
    }
}

/// Running tasks of services whose name starts with `prefix`.
async fn running(cluster: &Cluster, prefix: &str) -> usize {
    let list = cluster::run(cluster.manager().docker().args([
        "service",
        "ls",
        "--filter",
        &format!("name={prefix}-"),
        "--format",
        "{{.Replicas}}",
    ]))
    .await;
    list.lines()
        .filter(|r| r.split('/').next() == Some("1"))
        .count()
}

/// Median cold start through berth's runtime (service create until its task runs), and
/// the median wake of a service scaled to 0 (scaled to 1 until its task runs).
async fn cold_and_wake(
    cluster: &Cluster,
    runtime: &berth::SwarmRuntime,
    image: &str,
    step: &str,
) -> (f64, f64) {
    let (mut cold, mut wake) = (Vec::new(), Vec::new());
    for i in 0..COLD {
        let spec = crate::runtime::spec("bench-cost", &format!("{step}-{i}"), image);
        let (took, created) = crate::bench::create_until_running(runtime, &spec).await;
        cold.push(took.as_secs_f64() * 1000.0);
        runtime
            .kill(&created.id, berth::Signal::Term)
            .await
            .expect("scale to 0");
        runtime.wait(&created.id).await.expect("its end");
        let began = Instant::now();
        cluster::run(cluster.manager().docker().args([
            "service",
            "scale",
            "-d",
            &format!("{}=1", created.name),
        ]))
        .await;
        // Until the new task runs: the old one, ended, may still be the one listed.
        while matches!(
            runtime.start(&created.id).await.expect("woken"),
            berth::runtime::Endpoint::Unreachable
        ) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wake.push(began.elapsed().as_secs_f64() * 1000.0);
        runtime.remove(&created.id).await.expect("remove");
    }
    (median(cold), median(wake))
}

pub async fn run(cluster: &Cluster) {
    let host = format!("unix://{}", cluster.manager().socket.display());
    let runtime = berth::SwarmRuntime::connect_to(&host, OVERLAY)
        .await
        .expect("the manager's API");
    let image = cluster::app_image().await;
    println!("\n### The manager's cost (services scaled to 0, then 100 running)\n");
    println!("| services | created in | per create | manager RSS | manager CPU at rest | cold start (create until running) | wake from 0 replicas |");
    println!("|---|---|---|---|---|---|---|");
    let mut made = 0;
    for target in [0, 200, 1000] {
        let took = create(cluster, &image, "idle", made..target, 0).await;
        let per = if target > made {
            format!(
                "{:.0} ms",
                took.as_secs_f64() * 1000.0 / (target - made) as f64
            )
        } else {
            "-".into()
        };
        made = target;
        let cpu = idle_cpu(cluster).await;
        let (rss, _) = manager_usage(cluster).await;
        let (cold, wake) = cold_and_wake(cluster, &runtime, &image, &format!("at-{target}")).await;
        println!(
            "| {target} at 0 replicas | {:.1} s | {per} | {rss:.0} MiB | {cpu:.1} % | {cold:.0} ms | {wake:.0} ms |",
            took.as_secs_f64()
        );
    }
    remove_all(cluster, "idle").await;

    let began = Instant::now();
    create(cluster, &image, "busy", 0..100, 1).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while running(cluster, "busy").await < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_running = began.elapsed();
    let cpu = idle_cpu(cluster).await;
    let (rss, _) = manager_usage(cluster).await;
    let (cold, wake) = cold_and_wake(cluster, &runtime, &image, "busy").await;
    println!(
        "| 100 running ({} of 100) | {:.1} s, until all ran | {:.0} ms | {rss:.0} MiB | {cpu:.1} % | {cold:.0} ms | {wake:.0} ms |",
        running(cluster, "busy").await,
        all_running.as_secs_f64(),
        all_running.as_secs_f64() * 1000.0 / 100.0,
    );
    remove_all(cluster, "busy").await;
}
