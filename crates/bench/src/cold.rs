//! Cold start: a request to a stopped name until its answer, against creating and starting
//! the same container through the Engine API and polling it every 1 ms. The two are
//! interleaved, sample by sample, so that a slow stretch of the machine hits both.

use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::Context;

use berth::{EventKind, Runtime};

use crate::fixture::{http_get, Fixture};
use crate::stats::Stats;
use crate::table::Table;

/// Prints the table and returns berth's median, which the stampede is measured against.
pub async fn run(fixture: &Fixture, samples: usize) -> anyhow::Result<Duration> {
    let mut baseline = Vec::new();
    let mut berth = Vec::new();
    let mut detection = Vec::new();
    for i in 0..samples {
        baseline.push(docker_run(fixture, i).await?);

        let name = format!("cold-{i}");
        let started = Instant::now();
        let status = http_get(fixture.router, &format!("/s/{name}/")).await?;
        berth.push(started.elapsed());
        anyhow::ensure!(status == 200, "cold request got {status}");
        if let Some(d) = detection_latency(fixture, &name).await {
            detection.push(d);
        }
        fixture.ns.get_by_name(&name).destroy().await?;
    }
    let (b, d) = (Stats::of(&berth), Stats::of(&baseline));
    let det = Stats::of(&detection);
    println!("## Cold start ({samples} samples each, interleaved)\n");
    Table::new(["", "median", "p95", "p99"])
        .times("docker run + first answer (baseline)", d.tail())
        .times("berth: request to a stopped name", b.tail())
        .ratios("berth / baseline", b.tail().into_iter().zip(d.tail()), 3)
        .times(
            format!("port open → berth healthy ({} samples)", det.n),
            det.tail(),
        )
        .print();
    Ok(b.median)
}

/// The baseline: what it takes without berth to go from an image to a container's first
/// answer, polled as often as berth could notice it.
pub async fn docker_run(fixture: &Fixture, i: usize) -> anyhow::Result<Duration> {
    let spec = fixture.baseline_spec(&format!("baseline-{i}"));
    let runtime = &fixture.runtime;
    let started = Instant::now();
    let id = runtime.create(&spec).await?.id;
    let endpoint = runtime.start(&id).await?;
    let addr = endpoint.addr(8080).context("the container's address")?;
    let deadline = started + Duration::from_secs(20);
    loop {
        if matches!(http_get(addr, "/").await, Ok(200)) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the baseline container never answered"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    runtime.remove(&id).await?;
    Ok(elapsed)
}

/// From the server's own "listening" line to berth's healthy event: how late berth's
/// readiness check notices, which the cold start alone cannot tell apart from the engine.
async fn detection_latency(fixture: &Fixture, name: &str) -> Option<Duration> {
    let object = format!("{name:?}");
    let (container, healthy_at) = {
        let t = fixture.timeline.lock().ok()?;
        t.iter().rev().find_map(|(_, wall, e)| match e.kind {
            EventKind::Healthy { .. } if e.object == object => {
                Some((e.container_id.clone(), *wall))
            }
            _ => None,
        })?
    };
    let logs = fixture.runtime.logs(&container, 20).await.ok()?;
    let at_ns: u128 = logs
        .iter()
        .find_map(|l| l.split("at_ns=").nth(1))
        .and_then(|n| n.trim().parse().ok())?;
    let listening = UNIX_EPOCH + Duration::from_nanos(u64::try_from(at_ns).ok()?);
    healthy_at.duration_since(listening).ok()
}
