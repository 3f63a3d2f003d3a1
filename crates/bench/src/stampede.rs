//! The stampede: 1,000 concurrent first requests to one cold name, from a separate process.
//! berth must start one container, not many, and answer all of them; the tail is set
//! against a single cold start, which is the least any of them can wait.

use std::time::{Duration, Instant};

use anyhow::Context;
use berth::runtime::Selector;
use berth::Runtime;

use crate::client;
use crate::fixture::{http_get, Fixture};
use crate::table::{show, Cell, Table};

/// `single` is the cold-start median, if the cold measurement ran; otherwise one cold
/// start is measured here.
pub async fn run(fixture: &Fixture, single: Option<Duration>) -> anyhow::Result<()> {
    let single = match single {
        Some(d) => d,
        None => {
            let started = Instant::now();
            http_get(fixture.router, "/s/stampede-single/").await?;
            let d = started.elapsed();
            fixture.ns.get_by_name("stampede-single").destroy().await?;
            d
        }
    };
    println!("## Stampede (1,000 concurrent first requests to one cold name, 3 runs)\n");
    let mut table = Table::new([
        "run".to_string(),
        "successes".into(),
        "containers".into(),
        "p50".into(),
        "p99".into(),
        format!("p99 / single cold start ({})", show(single)),
    ]);
    for run in 0..3 {
        let name = format!("stampede-{run}");
        let url = format!("http://{}/s/{name}/", fixture.router);
        let summary = client::load(&url, 1, 1000, 1000, false).await?;
        let containers = fixture
            .runtime
            .list(&Selector::app("bench").object(fixture.ns.id_from_name(&name)))
            .await?
            .len();
        table.row([
            Cell::text(run.to_string()),
            Cell::text(format!("{} of 1000", summary.ok)),
            Cell::text(containers.to_string()),
            Cell::Time(summary.p50),
            Cell::Time(summary.p99),
            Cell::ratio(summary.p99, single, 2),
        ]);
        fixture.ns.get_by_name(&name).destroy().await?;
    }
    table.print();
    anatomy(fixture, single).await
}

/// Where a stampede's time goes beyond the cold start: the same 1,000 concurrent first
/// requests once the container is warm, through berth and straight to the container.
/// The stampede can be no faster than a cold start followed by the burst a warm container
/// takes to serve.
async fn anatomy(fixture: &Fixture, single: Duration) -> anyhow::Result<()> {
    let name = "stampede-warm";
    let url = format!("http://{}/s/{name}/", fixture.router);
    anyhow::ensure!(
        http_get(fixture.router, &format!("/s/{name}/")).await? == 200,
        "the warm name did not answer"
    );
    let info = fixture
        .runtime
        .list(&Selector::app("bench").object(fixture.ns.id_from_name(name)))
        .await?;
    let addr = info
        .first()
        .and_then(|c| c.endpoint.as_ref())
        .and_then(|e| e.addr(8080))
        .context("the warm container's address")?;
    let direct = format!("http://{addr}/");
    println!("Where the time goes: the same burst of 1,000 concurrent first requests, to a warm container, 3 runs each, interleaved.\n");
    let mut table = Table::new([
        "burst of 1,000 to a warm container".to_string(),
        "p50".into(),
        "p99".into(),
        "single cold start + p99".into(),
    ]);
    for _ in 0..3 {
        for (label, url) in [
            ("straight to the container", &direct),
            ("through berth", &url),
        ] {
            let summary = client::load(url, 1, 1000, 1000, false).await?;
            anyhow::ensure!(summary.ok == 1000, "{label}: {} of 1000", summary.ok);
            table.row([
                Cell::text(label),
                Cell::Time(summary.p50),
                Cell::Time(summary.p99),
                Cell::Time(single + summary.p99),
            ]);
        }
    }
    fixture.ns.get_by_name(name).destroy().await?;
    table.print();
    Ok(())
}
