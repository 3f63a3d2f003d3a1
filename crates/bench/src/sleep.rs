//! Sleep accuracy: how late, after `sleep_after`, berth decides to sleep an idle container
//! and the container is gone. The baseline is the engine's own stop latency, since most of
//! the time between the decision and the exit is the engine's, not berth's.

use std::time::{Duration, Instant};

use anyhow::Context;

use berth::{EventKind, Runtime};

use crate::fixture::{fetch_ok, http_get, Fixture};
use crate::stats::Stats;
use crate::table::Table;

/// Containers put to sleep at once, so that the rounds of waiting add up to less.
const PARALLEL: usize = 4;

pub async fn run(fixture: &Fixture, samples: usize) -> anyhow::Result<()> {
    let sleep_after = Duration::from_secs(1);
    let mut decided = Vec::new();
    let mut gone = Vec::new();
    for round in 0..samples.div_ceil(PARALLEL) {
        let mut waits = Vec::new();
        for k in 0..PARALLEL {
            let object = fixture.sleepy.get_by_name(&format!("sleep-{round}-{k}"));
            fetch_ok(&object).await?;
            let deadline = Instant::now() + sleep_after;
            waits.push((format!("{:?}", format!("sleep-{round}-{k}")), deadline));
        }
        tokio::time::sleep(sleep_after + Duration::from_secs(2)).await;
        let t = fixture
            .timeline
            .lock()
            .map_err(|_| anyhow::anyhow!("timeline"))?;
        for (object, deadline) in waits {
            let at = |kind: fn(&EventKind) -> bool| {
                t.iter()
                    .find(|(_, _, e)| e.object == object && kind(&e.kind))
                    .map(|(i, _, _)| *i)
            };
            if let Some(i) = at(|k| matches!(k, EventKind::Sleeping { .. })) {
                decided.push(i.saturating_duration_since(deadline));
            }
            if let Some(i) = at(|k| matches!(k, EventKind::Stopped { .. })) {
                gone.push(i.saturating_duration_since(deadline));
            }
        }
    }
    let engine = engine_stops(fixture, samples.min(10)).await?;
    let (d, g, e) = (Stats::of(&decided), Stats::of(&gone), Stats::of(&engine));
    let all = |s: &Stats| [s.median, s.p95, s.p99, s.max];
    println!("## Sleep accuracy (sleep_after = 1 s, {} samples)\n", d.n);
    Table::new(["lateness after sleep_after", "median", "p95", "p99", "max"])
        .times("sleep decided, SIGTERM sent", all(&d))
        .times("container exited (berth's stop event)", all(&g))
        .times(
            format!(
                "baseline: SIGTERM to exit reported, straight through the Engine API ({} samples)",
                e.n
            ),
            all(&e),
        )
        .print();
    Ok(())
}

/// The engine's own part: SIGTERM to a running container until its exit is reported,
/// straight through the Engine API.
async fn engine_stops(fixture: &Fixture, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let runtime = &fixture.runtime;
    let mut engine = Vec::new();
    for i in 0..samples {
        let mut spec = fixture.baseline_spec(&format!("stop-{i}"));
        // As the sleeping class runs it: one server thread.
        spec.env.clear();
        let id = runtime.create(&spec).await?.id;
        let endpoint = runtime.start(&id).await?;
        let addr = endpoint.addr(8080).context("the container's address")?;
        while !matches!(http_get(addr, "/").await, Ok(200)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let waiting = runtime.wait(&id);
        let started = Instant::now();
        runtime.kill(&id, berth::Signal::Term).await?;
        waiting.await?;
        engine.push(started.elapsed());
        runtime.remove(&id).await?;
    }
    Ok(engine)
}
