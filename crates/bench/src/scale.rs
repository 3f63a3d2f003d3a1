//! Scale: what a sleeping object costs berth, what many running containers cost it in
//! memory and CPU, and what a request costs when each goes to a different one of them,
//! where no connection or cache line is warm.

use std::time::{Duration, Instant};

use berth::runtime::Selector;
use berth::{Runtime, StopReason};
use futures_util::StreamExt;

use crate::client;
use crate::fixture::Fixture;
use crate::table::{show, Table};

pub async fn run(fixture: &Fixture, containers: usize) -> anyhow::Result<()> {
    println!("## Scale\n");
    sleeping(fixture);
    let running = running(fixture, containers).await;
    overhead(fixture, running).await?;
    let stopped = fixture.ns.stop_all(StopReason::Requested).await;
    eprintln!("stopped {stopped} containers");
    Ok(())
}

/// 10,000 objects that were addressed but never started: berth's memory per object.
fn sleeping(fixture: &Fixture) {
    let before = rss_kib();
    let started = Instant::now();
    let sleepers: Vec<_> = (0..10_000)
        .map(|i| fixture.ns.get_by_name(&format!("sleeper-{i}")))
        .collect();
    let elapsed = started.elapsed();
    let per_object = (rss_kib().saturating_sub(before)) as f64 * 1024.0 / sleepers.len() as f64;
    println!(
        "- 10,000 sleeping objects: {:.0} bytes of berth's memory each (RSS delta; nothing is written to SQLite until an object starts), addressed in {}\n",
        per_object,
        show(elapsed)
    );
}

/// Starts `containers` containers, 8 at a time, and reports berth's memory and CPU for
/// them, starting and idle; returns how many run.
async fn running(fixture: &Fixture, containers: usize) -> usize {
    let (rss0, cpu0) = (rss_kib(), cpu_ticks());
    let started = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(0..containers)
        .map(|k| {
            let object = fixture.ns.get_by_name(&format!("n{k}"));
            async move {
                object
                    .start_and_wait_for_ports(&[], berth::StartOptions::default())
                    .await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let running = results.iter().filter(|r| r.is_ok()).count();
    let start_time = started.elapsed();
    let (rss1, cpu1) = (rss_kib(), cpu_ticks());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu2 = cpu_ticks();
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .take(3)
        .collect();
    println!(
        "- {running} of {containers} containers running at once (started 8 at a time in {}){}",
        show(start_time),
        if failures.is_empty() {
            String::new()
        } else {
            format!("; failures: {failures:?}")
        }
    );
    println!(
        "- berth's memory: {:.1} KiB per running instance (RSS {} → {} MiB)",
        (rss1.saturating_sub(rss0)) as f64 / running.max(1) as f64,
        rss0 / 1024,
        rss1 / 1024
    );
    println!(
        "- berth's CPU: {:.1} ms per instance to start it; {:.3} ms per instance per second while idle\n",
        (cpu1 - cpu0) as f64 * 10.0 / running.max(1) as f64,
        (cpu2 - cpu1) as f64 * 10.0 / 10.0 / running.max(1) as f64
    );
    running
}

/// One client rotating over the running containers, through berth and straight to them.
async fn overhead(fixture: &Fixture, running: usize) -> anyhow::Result<()> {
    let url = format!("http://{}/s/{{}}/", fixture.router);
    let berth = client::load(&url, running, 1, 5000, true).await?;
    // The baseline rotates over the same containers, straight to their addresses.
    let found = fixture.runtime.list(&Selector::app("bench")).await?;
    let direct: Vec<String> = found
        .iter()
        .filter_map(|c| c.endpoint.as_ref().and_then(|e| e.addr(8080)))
        .map(|addr| format!("http://{addr}/"))
        .collect();
    let urls = fixture.dir.join("direct-urls.txt");
    std::fs::write(&urls, direct.join("\n"))?;
    let base = client::load_urls(&urls).await?;
    println!("Per-request overhead with {running} running (one client, 5,000 requests, each to the next container; to berth over one keep-alive connection, direct over a keep-alive connection per container):\n");
    let tail = |s: &client::Summary| [s.p50, s.p95, s.p99];
    Table::new(["", "p50", "p95", "p99"])
        .times(
            format!("direct, rotating over the {} containers", direct.len()),
            tail(&base),
        )
        .times(
            format!("berth, rotating over {running} names"),
            tail(&berth),
        )
        .added("added by berth", tail(&berth).into_iter().zip(tail(&base)))
        .print();
    Ok(())
}

/// Resident memory in KiB. berth runs inside this process, so what it grows by is berth's.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time in clock ticks (10 ms); as with memory, this process is berth.
fn cpu_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}
