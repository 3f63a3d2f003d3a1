//! Names that come and go: what berth keeps of client-chosen names once their requests have
//! ended, whether they were refused because the class was full or served once and then
//! slept. An object lives while something uses it; its state is kept in the store only once
//! it ran.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::runtime::fake::{Behaviour, FakeRuntime};
use berth::{App, ContainerClass, NoHooks, Store};
use http::StatusCode;

use crate::fixture::Fixture;
use crate::scale::rss_kib;
use crate::table::{Cell, Table};

const NAMES: usize = 100_000;
/// Names served at once, on the fake engine.
const BATCH: usize = 2_000;
/// Names after which the allocator has grown to what batches of `BATCH` need.
const WARM_UP: usize = 10_000;

pub async fn run(fixture: &Fixture) -> anyhow::Result<()> {
    println!("## Names that come and go ({NAMES} distinct names each)\n");
    let baseline = rss_kib();
    let refused = refused(fixture).await?;
    let after_refused = rss_kib();
    let ran = ran_once(fixture).await?;
    let after_ran = rss_kib();
    let per_name_over = |from: u64, to: u64, names: usize| {
        Cell::text(format!(
            "{:.0} bytes",
            to.saturating_sub(from) as f64 * 1024.0 / names as f64
        ))
    };
    let per_name = |from: u64, to: u64| per_name_over(from, to, NAMES);
    let mib = |kib: u64| Cell::text(format!("{:.1} MiB", kib as f64 / 1024.0));
    Table::new([
        "",
        "berth's memory (RSS)",
        "added per name",
        "objects still live",
        "rows in the store",
    ])
    .row([
        Cell::text("before (baseline)"),
        mib(baseline),
        Cell::text("-"),
        Cell::text("-"),
        Cell::text("-"),
    ])
    .row([
        Cell::text(format!(
            "after {NAMES} names refused (class full), Docker Engine"
        )),
        mib(after_refused),
        per_name(baseline, after_refused),
        Cell::text(refused.live.to_string()),
        Cell::text(refused.rows.to_string()),
    ])
    .row([
        Cell::text(format!(
            "after {WARM_UP} names that ran once and slept, {BATCH} at a time, in-memory engine"
        )),
        mib(ran.after_warm_up),
        Cell::text("-"),
        Cell::text("0"),
        Cell::text(WARM_UP.to_string()),
    ])
    .row([
        Cell::text(format!("after all {NAMES} names that ran once and slept")),
        mib(after_ran),
        per_name_over(ran.after_warm_up, after_ran, NAMES - WARM_UP),
        Cell::text(ran.live.to_string()),
        Cell::text(ran.rows.to_string()),
    ])
    .print();
    println!(
        "{BATCH} objects running at once take memory that the allocator keeps for the next \
         batches; \"added per name\" on the last row is over the {} names after the first \
         {WARM_UP}, and includes SQLite's cache of the growing state file.\n",
        NAMES - WARM_UP
    );
    println!(
        "Refusing took {:.1} s ({:.0} µs a name).\n",
        refused.took.as_secs_f64(),
        refused.took.as_secs_f64() * 1e6 / NAMES as f64
    );
    Ok(())
}

struct Refused {
    live: usize,
    rows: usize,
    took: Duration,
}

/// A class whose one slot is taken, asked for `NAMES` other names, each refused with 503.
/// An app of its own, so that the benchmark's record of events does not count.
async fn refused(fixture: &Fixture) -> anyhow::Result<Refused> {
    let store = Store::open(fixture.dir.join("refused.db"))?;
    let app = App::new("bench-names", fixture.runtime.clone(), store)?;
    let mut class = ContainerClass::new("Full", &fixture.image);
    class.default_port = Some(8080);
    class.max_instances = 1;
    let ns = app.namespace(class, Arc::new(NoHooks));
    let holder = ns.get_by_name("holder");
    let status = holder.fetch(crate::fixture::request("/")).await.status();
    anyhow::ensure!(status == StatusCode::OK, "the holder answered {status}");
    let began = Instant::now();
    for i in 0..NAMES {
        let status = ns
            .get_by_name(&format!("refused-{i}"))
            .fetch(crate::fixture::request("/"))
            .await
            .status();
        anyhow::ensure!(
            status == StatusCode::SERVICE_UNAVAILABLE,
            "name {i} got {status}"
        );
    }
    let took = began.elapsed();
    let live = ns.objects().len();
    let rows = app.store().objects().await?.len();
    drop(holder);
    app.shutdown().await?;
    Ok(Refused { live, rows, took })
}

struct RanOnce {
    after_warm_up: u64,
    live: usize,
    rows: usize,
}

/// `NAMES` names on the in-memory engine (the Docker Engine would take hours to start as
/// many containers), each started, served once, and put to sleep, `BATCH` at a time. Its
/// containers cost the fake engine nothing once removed, so what remains is berth's.
async fn ran_once(fixture: &Fixture) -> anyhow::Result<RanOnce> {
    let engine = FakeRuntime::new();
    engine.image(
        "fake/app:1",
        Behaviour {
            create_delay: Duration::ZERO,
            start_delay: Duration::ZERO,
            ready_after: Some(Duration::ZERO),
            ..Behaviour::default()
        },
    );
    let store = Store::open(fixture.dir.join("names.db"))?;
    let app = App::new("names", engine.clone(), store)?;
    let mut class = ContainerClass::new("Once", "fake/app:1");
    class.default_port = Some(8080);
    class.max_instances = BATCH;
    class.sleep_after = Duration::from_millis(200);
    class.ping_endpoint = None;
    let ns = app.namespace(class, Arc::new(NoHooks));
    let mut after_warm_up = 0;
    for batch in 0..NAMES / BATCH {
        let answers = futures_util::future::join_all((0..BATCH).map(|i| {
            let object = ns.get_by_name(&format!("once-{}", batch * BATCH + i));
            async move { object.try_fetch(crate::fixture::request("/")).await }
        }))
        .await;
        if let Some(Err(e)) = answers.iter().find(|a| a.is_err()) {
            anyhow::bail!("batch {batch}: a request failed: {e}");
        }
        // The answers end here, and with them their requests.
        drop(answers);
        // Let the batch sleep before the next one starts, so the slots free up.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !engine.running().is_empty() || !ns.objects().is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "batch {batch} did not sleep");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        engine.forget_history();
        if (batch + 1) * BATCH == WARM_UP {
            after_warm_up = rss_kib();
        }
    }
    Ok(RanOnce {
        after_warm_up,
        live: ns.objects().len(),
        rows: app.store().objects().await?.len(),
    })
}
