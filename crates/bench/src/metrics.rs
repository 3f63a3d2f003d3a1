//! What counting costs: the warm proxy with each answer counted in the metrics (as
//! `berth dev` and `berth serve` count them) against the same router uncounted, in
//! alternating runs so that both see the same machine. The objects' own counts (cold
//! starts, sleeps, exits) happen off the warm path and are in both.

use crate::fixture::{http_get, Fixture};
use crate::table::{Cell, Table};
use crate::wrk;

/// Alternating runs of each, per connection count.
const ROUNDS: usize = 3;

pub async fn run(fixture: &Fixture, seconds: u64) -> anyhow::Result<()> {
    for addr in [fixture.router, fixture.counted_router] {
        let status = http_get(addr, "/").await?;
        anyhow::ensure!(status == 200, "warm-up got {status}");
    }
    println!(
        "## Metrics cost (wrk, {seconds} s per run, {ROUNDS} alternating runs each, medians)\n"
    );
    let mut table = Table::new([
        "connections",
        "uncounted req/s",
        "counted req/s",
        "counted / uncounted",
    ]);
    for connections in [1, 16, 64] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for (target, rates) in [
                (fixture.router, &mut off),
                (fixture.counted_router, &mut on),
            ] {
                let run =
                    tokio::task::spawn_blocking(move || wrk::load(target, connections, seconds))
                        .await??;
                rates.push(run.requests_per_sec);
            }
        }
        let (off, on) = (median(off), median(on));
        table.row([
            Cell::text(connections.to_string()),
            Cell::Rate(off),
            Cell::Rate(on),
            Cell::Ratio(on / off, 3),
        ]);
    }
    table.print();
    Ok(())
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}
