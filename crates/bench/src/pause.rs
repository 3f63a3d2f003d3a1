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
    let tail = |s: &Stats| [s.median, s.p95, s.p99];
    println!("## Wake from pause ({samples} samples each, interleaved)\n");
    Table::new(["", "median", "p95", "p99"])
        .times("docker unpause (CLI) + first answer (baseline)", tail(&u))
        .times("berth: request to a paused name", tail(&p))
        .times("berth: request to a stopped name", tail(&s))
        .ratios(
            "paused / docker unpause",
            tail(&p).into_iter().zip(tail(&u)),
            3,
        )
        .ratios("paused / stopped", tail(&p).into_iter().zip(tail(&s)), 3)
        .print();
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
