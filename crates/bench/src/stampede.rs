//! The stampede: 1,000 concurrent first requests to one cold name, from a separate process.
//! berth must start one container, not many, and answer all of them; the tail is set
//! against a single cold start, which is the least any of them can wait.

use std::time::{Duration, Instant};

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
    Ok(())
}
