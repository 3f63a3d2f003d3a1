//! What counting costs: the warm proxy with each answer counted in the metrics (as
//! `berth dev` and `berth serve` count them) against the same router uncounted, in
//! alternating runs so that both see the same machine. The objects' own counts (cold
//! starts, sleeps, exits) happen off the warm path and are in both.

use crate::fixture::{http_get, Fixture};
use crate::table::{Cell, Table};
use crate::wrk;

/// Alternating runs of each, per connection count: the cost is a few percent at most, and
/// the machine's own drift between runs is as large, so many pairs are needed.
const ROUNDS: usize = 7;

pub async fn run(fixture: &Fixture, seconds: u64) -> anyhow::Result<()> {
    for addr in [fixture.router, fixture.counted_router] {
        let status = http_get(addr, "/").await?;
        anyhow::ensure!(status == 200, "warm-up got {status}");
    }
    println!(
        "## Metrics cost (wrk, {seconds} s per run, {ROUNDS} alternating pairs, medians; the ratio is the median of each pair's ratio, with their range)\n"
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
        // Each counted run against the uncounted run just before it.
        let mut ratios: Vec<f64> = on.iter().zip(&off).map(|(on, off)| on / off).collect();
        ratios.sort_by(f64::total_cmp);
        let (low, high) = (ratios[0], ratios[ratios.len() - 1]);
        let ratio = median(ratios);
        table.row([
            Cell::text(connections.to_string()),
            Cell::Rate(median(off)),
            Cell::Rate(median(on)),
            Cell::text(format!("{ratio:.3} ({low:.3}-{high:.3})")),
        ]);
    }
    table.print();
    Ok(())
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}
