//! A new name served from the standby pool (`standby = 1`): a request to a name never
//! seen until its answer, against the same image's `docker run` + first answer, and
//! against berth's own cold start of a new name. Each is a request through
//! `Object::fetch`, proxying included; the three are interleaved, sample by sample, and
//! the pool is full before each standby sample.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::{ContainerClass, NoHooks};

use crate::cold::docker_run;
use crate::fixture::{fetch_ok, Fixture};
use crate::stats::Stats;
use crate::table::Table;

pub async fn run(fixture: &Fixture, samples: usize) -> anyhow::Result<()> {
    let mut class = ContainerClass::new("Spare", &fixture.image);
    class.default_port = Some(8080);
    class.standby = 1;
    class.max_instances = 4;
    let spares = fixture.app.namespace(class, Arc::new(NoHooks));
    // The pool opens with the class's first start.
    fetch_ok(&spares.get_by_name("primer")).await?;

    let (mut standby, mut cold, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    // Each sample starts with the pool full, so that no refill runs beside it.
    let full = || async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while spares.standby_ready() < 1 {
            anyhow::ensure!(Instant::now() < deadline, "the pool never refilled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A refill's start is over before it counts as ready; let its events settle.
        tokio::time::sleep(Duration::from_millis(100)).await;
        anyhow::Ok(())
    };
    for i in 0..samples {
        full().await?;
        baseline.push(docker_run(fixture, 1000 + i).await?);

        full().await?;
        let object = spares.get_by_name(&format!("new-{i}"));
        let began = Instant::now();
        fetch_ok(&object).await?;
        standby.push(began.elapsed());
        object.destroy().await?;

        full().await?;
        let object = fixture.ns.get_by_name(&format!("direct-cold-{i}"));
        let began = Instant::now();
        fetch_ok(&object).await?;
        cold.push(began.elapsed());
        object.destroy().await?;
    }
    let (s, c, d) = (Stats::of(&standby), Stats::of(&cold), Stats::of(&baseline));
    println!("## A new name from the standby pool ({samples} samples each, interleaved)\n");
    Table::new(["", "median", "p95", "p99"])
        .times("docker run + first answer (baseline)", d.tail())
        .times("berth: new name, cold start", c.tail())
        .times("berth: new name, from the standby pool", s.tail())
        .ratios(
            "standby / docker run",
            s.tail().into_iter().zip(d.tail()),
            3,
        )
        .ratios(
            "standby / cold start",
            s.tail().into_iter().zip(c.tail()),
            3,
        )
        .print();
    Ok(())
}
