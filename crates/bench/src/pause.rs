//! Wake from pause (`sleep_mode = "pause"`): a request to a paused name until its answer,
//! against `docker unpause` through the CLI and the first answer of the same kind of
//! container, and against berth's own wake from a stop. The three are interleaved, sample
//! by sample.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use berth::class::SleepMode;
use berth::{ContainerClass, NoHooks, Object, Runtime, State};

use crate::fixture::{fetch_ok, http_get, Fixture};
use crate::stats::Stats;
use crate::table::Table;

pub async fn run(fixture: &Fixture, samples: usize) -> anyhow::Result<()> {
    let mut class = ContainerClass::new("Pauser", &fixture.image);
    class.default_port = Some(8080);
    class.sleep_after = Duration::from_secs(1);
    class.sleep_mode = SleepMode::Pause;
    let pauser = fixture.app.namespace(class, Arc::new(NoHooks));
    let paused = pauser.get_by_name("paused");
    let stopped = fixture.sleepy.get_by_name("stopped");

    let spec = fixture.baseline_spec("baseline-pause");
    let runtime = &fixture.runtime;
    let id = runtime.create(&spec).await?.id;
    let endpoint = runtime.start(&id).await?;
    let addr = endpoint.addr(8080).context("the baseline's address")?;
    let answered = |deadline: Instant| async move {
        loop {
            if matches!(http_get(addr, "/").await, Ok(200)) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the baseline never answered");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    answered(Instant::now() + Duration::from_secs(20)).await?;

    let (mut from_pause, mut from_stop, mut unpause) = (Vec::new(), Vec::new(), Vec::new());
    let result = async {
        for _ in 0..samples {
            fetch_ok(&paused).await?;
            settle(&paused, Some(State::Paused)).await?;
            let began = Instant::now();
            fetch_ok(&paused).await?;
            from_pause.push(began.elapsed());

            fetch_ok(&stopped).await?;
            settle(&stopped, None).await?;
            let began = Instant::now();
            fetch_ok(&stopped).await?;
            from_stop.push(began.elapsed());

            docker(&["pause", &id]).await?;
            let began = Instant::now();
            docker(&["unpause", &id]).await?;
            answered(began + Duration::from_secs(20)).await?;
            unpause.push(began.elapsed());
        }
        anyhow::Ok(())
    }
    .await;
    runtime.remove(&id).await?;
    result?;
    let (p, s, u) = (
        Stats::of(&from_pause),
        Stats::of(&from_stop),
        Stats::of(&unpause),
    );
    println!("## Wake from pause ({samples} samples each, interleaved)\n");
    Table::new(["", "median", "p95", "p99"])
        .times("docker unpause (CLI) + first answer (baseline)", u.tail())
        .times("berth: request to a paused name", p.tail())
        .times("berth: request to a stopped name", s.tail())
        .ratios(
            "paused / docker unpause",
            p.tail().into_iter().zip(u.tail()),
            3,
        )
        .ratios("paused / stopped", p.tail().into_iter().zip(s.tail()), 3)
        .print();
    memory(fixture).await
}

/// How many containers the memory measurement runs.
const MEMORY_N: usize = 10;

/// The memory of N paused containers against the same N running (idle, after one
/// request each), as the engine reports each container's cgroup: a pause keeps it all.
async fn memory(fixture: &Fixture) -> anyhow::Result<()> {
    let mut class = ContainerClass::new("Memory", &fixture.image);
    class.default_port = Some(8080);
    // Long enough for all of them to start, one after another, before the first pauses.
    class.sleep_after = Duration::from_secs(10);
    class.sleep_mode = SleepMode::Pause;
    let pauser = fixture.app.namespace(class, Arc::new(NoHooks));
    let objects: Vec<Object> = (0..MEMORY_N)
        .map(|i| pauser.get_by_name(&format!("memory-{i}")))
        .collect();
    let total = |objects: &[Object]| {
        let objects = objects.to_vec();
        async move {
            let mut sum = 0u64;
            let list = fixture
                .runtime
                .list(&berth::runtime::Selector::app("bench"))
                .await?;
            for object in &objects {
                let id = list
                    .iter()
                    .find(|c| {
                        c.identity
                            .as_ref()
                            .is_some_and(|i| i.object_id == object.id())
                    })
                    .map(|c| c.id.clone())
                    .context("a container of the memory measurement")?;
                sum += fixture.runtime.memory(&id).await?.unwrap_or(0);
            }
            anyhow::Ok(sum)
        }
    };
    for object in &objects {
        fetch_ok(object).await?;
    }
    // Idle but running, before they pause.
    let running = total(&objects).await?;
    for object in &objects {
        settle(object, Some(State::Paused)).await?;
    }
    let paused = total(&objects).await?;
    for object in &objects {
        object.destroy().await?;
    }
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    println!("## Memory of {MEMORY_N} paused containers against {MEMORY_N} running\n");
    println!("| | memory (sum of the containers' cgroups) |\n|---|---|");
    println!("| {MEMORY_N} running, idle (baseline) | {} |", mib(running));
    println!("| {MEMORY_N} paused | {} |", mib(paused));
    println!(
        "| paused / running | {:.3} |\n",
        paused as f64 / running.max(1) as f64
    );
    Ok(())
}

/// Waits (at most 30 s) for `object`'s container to reach `state` (`None`: gone).
async fn settle(object: &Object, state: Option<State>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while object.container_state() != state {
        anyhow::ensure!(Instant::now() < deadline, "never {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A stop is recorded before the container is gone; let it go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

async fn docker(args: &[&str]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("docker")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("running docker")?;
    anyhow::ensure!(status.success(), "docker {} failed", args.join(" "));
    Ok(())
}
