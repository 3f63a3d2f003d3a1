//! The warm proxy: keep-alive load from wrk at 1, 16 and 64 connections, straight to the
//! container, through berth, and through nginx with 1 and 2 workers. nginx is the bar a
//! reverse proxy is held to; the direct figure is what no proxy can beat.

use std::net::SocketAddr;

use anyhow::Context;
use berth::runtime::Selector;
use berth::Runtime;

use crate::fixture::{http_get, Fixture};
use crate::table::{Cell, Table};
use crate::wrk;

pub async fn run(fixture: &Fixture, seconds: u64) -> anyhow::Result<()> {
    let status = http_get(fixture.router, "/").await?;
    anyhow::ensure!(status == 200, "warm-up got {status}");
    let direct = container_addr(fixture, "warm").await?;
    let dir = &fixture.dir;
    let n1 = free_port()?;
    let nginx1 = wrk::Nginx::start(&dir.join("nginx1"), 1, n1, direct)?;
    let n2 = free_port()?;
    let nginx2 = wrk::Nginx::start(&dir.join("nginx2"), 2, n2, direct)?;
    println!("## Warm proxy (wrk, {seconds} s per run, keep-alive)\n");
    let mut throughput = Table::new([
        "connections",
        "direct req/s",
        "berth req/s",
        "nginx 1w req/s",
        "nginx 2w req/s",
        "berth / best nginx",
        "berth / direct",
    ]);
    let mut one = None;
    for connections in [1, 16, 64] {
        let targets = [direct, fixture.router, n1, n2];
        let mut runs = Vec::new();
        for target in targets {
            let run = tokio::task::spawn_blocking(move || wrk::load(target, connections, seconds))
                .await??;
            runs.push(run);
        }
        let rate = |i: usize| runs[i].requests_per_sec;
        let best_nginx = rate(2).max(rate(3));
        throughput.row([
            Cell::text(connections.to_string()),
            Cell::Rate(rate(0)),
            Cell::Rate(rate(1)),
            Cell::Rate(rate(2)),
            Cell::Rate(rate(3)),
            Cell::Ratio(rate(1) / best_nginx, 2),
            Cell::Ratio(rate(1) / rate(0), 2),
        ]);
        if connections == 1 {
            one = Some(runs);
        }
    }
    throughput.print();
    if let Some(runs) = one {
        println!("Latency at 1 connection (wrk's percentiles):\n");
        let mut latency = Table::new(["", "p50", "p99", "added p50", "added p99"]);
        for (label, run) in [
            ("direct", &runs[0]),
            ("berth", &runs[1]),
            ("nginx 1 worker", &runs[2]),
            ("nginx 2 workers", &runs[3]),
        ] {
            latency.row([
                Cell::text(label),
                Cell::Time(run.p50),
                Cell::Time(run.p99),
                Cell::Added {
                    value: run.p50,
                    baseline: runs[0].p50,
                },
                Cell::Added {
                    value: run.p99,
                    baseline: runs[0].p99,
                },
            ]);
        }
        latency.print();
    }
    drop((nginx1, nginx2));
    Ok(())
}

/// The container behind the `warm` name, reached without berth: the direct baseline and
/// nginx's upstream.
async fn container_addr(fixture: &Fixture, name: &str) -> anyhow::Result<SocketAddr> {
    let found = fixture
        .runtime
        .list(&Selector::app("bench").object(fixture.ns.id_from_name(name)))
        .await?;
    found
        .iter()
        .find_map(|c| c.endpoint.as_ref().and_then(|e| e.addr(8080)))
        .context("the container's bridge address")
}

/// A port the kernel considers free. It is released at once, so the next one is picked only
/// after nginx has taken this one.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}
