//! berth-bench: the product's performance promises, each measured against a baseline in
//! the same run on the same image: cold start against `docker run` plus the first answer,
//! the warm proxy against a direct connection and nginx, a stampede against a single cold
//! start, the memory of sleeping objects and running containers, and sleep accuracy.
//!
//! Run it through `bench/run.sh`, which installs wrk and nginx and builds the server.

mod client;
mod stats;
mod wrk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use berth::build::BuildSpec;
use berth::router::{Env, KeySource, PathPattern, Route, Router, Target};
use berth::runtime::{labels, ContainerSpec};
use berth::server::{serve_with, ServeOptions};
use berth::{
    App, ContainerClass, DockerRuntime, Event, EventKind, Namespace, NoHooks, Runtime, StopReason,
    Store,
};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use stats::{show, Stats};

#[derive(Parser)]
#[command(
    name = "berth-bench",
    about = "berth's benchmarks, each against a baseline measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Samples per cold-start and sleep measurement.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Containers to run at once in the scale measurement.
    #[arg(long, default_value_t = 250)]
    containers: usize,
    /// Which measurements to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cold,warm,stampede,scale,sleep"
    )]
    only: Vec<String>,
    /// The static server binary that goes into the image.
    #[arg(long, default_value = "examples/hello/server")]
    server: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// The load client, run as a separate process by the benchmarks.
    Client {
        #[arg(long, default_value = "")]
        url_template: String,
        #[arg(long)]
        urls: Option<String>,
        #[arg(long, default_value_t = 1)]
        names: usize,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        requests: usize,
        #[arg(long)]
        keep_alive: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Client {
                url_template,
                urls,
                names,
                concurrency,
                requests,
                keep_alive,
            }) => {
                client::run(client::Load {
                    url_template,
                    urls,
                    names,
                    concurrency,
                    requests,
                    keep_alive,
                })
                .await
            }
            None => Bench::new(&cli).await?.run(&cli).await,
        }
    });
    runtime.shutdown_background();
    result
}

/// Events with the moment they arrived.
type Timeline = Arc<Mutex<Vec<(Instant, SystemTime, Event)>>>;

struct Bench {
    runtime: Arc<DockerRuntime>,
    app: App,
    image: String,
    ns: Namespace,
    sleepy: Namespace,
    router: SocketAddr,
    timeline: Timeline,
    dir: PathBuf,
    cold_median: Option<Duration>,
}

impl Bench {
    async fn new(cli: &Cli) -> anyhow::Result<Bench> {
        let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("image"))?;
        std::fs::copy(&cli.server, dir.join("image/server")).with_context(|| {
            format!(
                "copying {} (run bench/run.sh, which builds it)",
                cli.server.display()
            )
        })?;
        std::fs::write(
            dir.join("image/Dockerfile"),
            "FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n",
        )?;
        let runtime = Arc::new(DockerRuntime::connect().await?);
        let spec = BuildSpec {
            name: "berth-bench".into(),
            tag: None,
            context: dir.join("image"),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::new(),
            target: None,
            command: None,
        };
        let image = berth::build::build(runtime.as_ref(), &spec, &dir, &mut |_| {})
            .await?
            .image;
        let app = App::new("bench", runtime.clone(), Store::open(dir.join("state.db"))?);
        let timeline: Timeline = Arc::default();
        let mut events = app.events();
        let sink = timeline.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let Ok(mut t) = sink.lock() {
                    t.push((Instant::now(), SystemTime::now(), event));
                }
            }
        });
        let mut class = ContainerClass::new("Bench", &image);
        class.default_port = Some(8080);
        class.max_instances = 4000;
        class.env_vars.insert("WORKERS".into(), "2".into());
        let ns = app.namespace(class, Arc::new(NoHooks));
        let mut sleeper = ContainerClass::new("Sleeper", &image);
        sleeper.default_port = Some(8080);
        sleeper.sleep_after = Duration::from_secs(1);
        let sleepy = app.namespace(sleeper, Arc::new(NoHooks));

        let mut env = Env::new();
        env.bind("APP", ns.clone());
        let routes = vec![
            Route {
                path: PathPattern::parse("/s/:name/*").map_err(anyhow::Error::msg)?,
                binding: "APP".into(),
                target: Target::From(KeySource::Path("name".into())),
                strip_prefix: true,
            },
            Route {
                path: PathPattern::parse("/*").map_err(anyhow::Error::msg)?,
                binding: "APP".into(),
                target: Target::Fixed("warm".into()),
                strip_prefix: false,
            },
        ];
        let router = Router::new(routes, &env)?;
        let listener = berth::server::bind("127.0.0.1:0".parse()?)?;
        let addr = listener.local_addr()?;
        let threads = std::env::var("BERTH_SERVE_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
        let options = ServeOptions {
            threads,
            ..ServeOptions::default()
        };
        tokio::spawn(serve_with(
            listener,
            Arc::new(router),
            env,
            std::future::pending(),
            options,
        ));
        Ok(Bench {
            runtime,
            app,
            image,
            ns,
            sleepy,
            router: addr,
            timeline,
            dir,
            cold_median: None,
        })
    }

    async fn run(mut self, cli: &Cli) -> anyhow::Result<()> {
        self.machine().await;
        let wants = |name: &str| cli.only.iter().any(|o| o == name);
        let result = async {
            if wants("cold") {
                self.cold(cli.samples).await?;
            }
            if wants("warm") {
                self.warm(cli.seconds).await?;
            }
            if wants("stampede") {
                self.stampede().await?;
            }
            if wants("scale") {
                self.scale(cli.containers).await?;
            }
            if wants("sleep") {
                self.sleep(cli.samples).await?;
            }
            anyhow::Ok(())
        }
        .await;
        let stopped = self.app.shutdown().await?;
        eprintln!("removed {stopped} container(s)");
        let _ = std::fs::remove_dir_all(&self.dir);
        result
    }

    async fn machine(&self) {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
            })
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| format!("{:.1} GiB", kb as f64 / 1048576.0))
            .unwrap_or_default();
        let docker = self
            .runtime
            .docker()
            .version()
            .await
            .ok()
            .and_then(|v| v.version)
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        println!("# berth-bench\n");
        println!(
            "Machine: {cores} cores, {memory}, Docker Engine {docker}, Linux {}, image {}\n",
            kernel.trim(),
            self.image
        );
    }

    /// Cold start: a request to a stopped name until its answer, against creating and
    /// starting the same container through the Engine API and polling it every 1 ms.
    async fn cold(&mut self, samples: usize) -> anyhow::Result<()> {
        let mut baseline = Vec::new();
        let mut berth = Vec::new();
        let mut detection = Vec::new();
        for i in 0..samples {
            baseline.push(self.docker_run(i).await?);

            let name = format!("cold-{i}");
            let started = Instant::now();
            let status = http_get(self.router, &format!("/s/{name}/")).await?;
            berth.push(started.elapsed());
            anyhow::ensure!(status == 200, "cold request got {status}");
            if let Some(d) = self.detection_latency(&name).await {
                detection.push(d);
            }
            self.ns.get_by_name(&name).destroy().await?;
        }
        let (b, d) = (Stats::of(&berth), Stats::of(&baseline));
        self.cold_median = Some(b.median);
        let det = Stats::of(&detection);
        println!("## Cold start ({samples} samples each, interleaved)\n");
        println!("| | median | p95 | p99 |\n|---|---|---|---|");
        println!(
            "| docker run + first answer (baseline) | {} | {} | {} |",
            show(d.median),
            show(d.p95),
            show(d.p99)
        );
        println!(
            "| berth: request to a stopped name | {} | {} | {} |",
            show(b.median),
            show(b.p95),
            show(b.p99)
        );
        println!(
            "| berth / baseline | {:.3} | {:.3} | {:.3} |",
            ratio(b.median, d.median),
            ratio(b.p95, d.p95),
            ratio(b.p99, d.p99)
        );
        println!(
            "| port open → berth healthy ({} samples) | {} | {} | {} |\n",
            det.n,
            show(det.median),
            show(det.p95),
            show(det.p99)
        );
        Ok(())
    }

    /// The baseline: create and start via the Engine API, poll HTTP every 1 ms.
    async fn docker_run(&self, i: usize) -> anyhow::Result<Duration> {
        let spec = ContainerSpec {
            name: format!("berth-bench-baseline-{}-{i}", std::process::id()),
            image: self.image.clone(),
            env: BTreeMap::from([("WORKERS".to_string(), "2".to_string())]),
            labels: BTreeMap::from([(labels::APP.to_string(), "bench".to_string())]),
            ports: vec![8080],
            enable_internet: true,
            ..ContainerSpec::default()
        };
        let started = Instant::now();
        let id = self.runtime.create(&spec).await?;
        let endpoint = self.runtime.start(&id).await?;
        let addr = endpoint.addr(8080).context("the container's address")?;
        let deadline = started + Duration::from_secs(20);
        loop {
            if matches!(http_get(addr, "/").await, Ok(200)) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the baseline container never answered"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        self.runtime.remove(&id).await?;
        Ok(elapsed)
    }

    /// From the server's own "listening" line to berth's healthy event.
    async fn detection_latency(&self, name: &str) -> Option<Duration> {
        let object = format!("{name:?}");
        let (container, healthy_at) = {
            let t = self.timeline.lock().ok()?;
            t.iter().rev().find_map(|(_, wall, e)| match e.kind {
                EventKind::Healthy { .. } if e.object == object => {
                    Some((e.container_id.clone(), *wall))
                }
                _ => None,
            })?
        };
        let logs = self.runtime.logs(&container, 20).await.ok()?;
        let at_ns: u128 = logs
            .iter()
            .find_map(|l| l.split("at_ns=").nth(1))
            .and_then(|n| n.trim().parse().ok())?;
        let listening = UNIX_EPOCH + Duration::from_nanos(u64::try_from(at_ns).ok()?);
        healthy_at.duration_since(listening).ok()
    }

    /// Keep-alive load at 1, 16 and 64 connections: direct, berth, nginx (1 and 2 workers).
    async fn warm(&self, seconds: u64) -> anyhow::Result<()> {
        let status = http_get(self.router, "/").await?;
        anyhow::ensure!(status == 200, "warm-up got {status}");
        let direct = self.container_addr("warm").await?;
        let nginx1 = wrk::Nginx::start(&self.dir.join("nginx1"), 1, free_port()?, direct)?;
        let n1 = nginx_addr(&self.dir.join("nginx1"))?;
        let nginx2 = wrk::Nginx::start(&self.dir.join("nginx2"), 2, free_port()?, direct)?;
        let n2 = nginx_addr(&self.dir.join("nginx2"))?;
        println!("## Warm proxy (wrk, {seconds} s per run, keep-alive)\n");
        println!("| connections | direct req/s | berth req/s | nginx 1w req/s | nginx 2w req/s | berth / best nginx | berth / direct |");
        println!("|---|---|---|---|---|---|---|");
        let mut one = None;
        for connections in [1, 16, 64] {
            let targets = [direct, self.router, n1, n2];
            let mut runs = Vec::new();
            for target in targets {
                let run =
                    tokio::task::spawn_blocking(move || wrk::load(target, connections, seconds))
                        .await??;
                runs.push(run);
            }
            let best_nginx = runs[2].requests_per_sec.max(runs[3].requests_per_sec);
            println!(
                "| {connections} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
                runs[0].requests_per_sec,
                runs[1].requests_per_sec,
                runs[2].requests_per_sec,
                runs[3].requests_per_sec,
                runs[1].requests_per_sec / best_nginx,
                runs[1].requests_per_sec / runs[0].requests_per_sec
            );
            if connections == 1 {
                one = Some(runs);
            }
        }
        if let Some(runs) = one {
            let added = |r: &wrk::Run| {
                (
                    r.p50.as_micros() as i128 - runs[0].p50.as_micros() as i128,
                    r.p99.as_micros() as i128 - runs[0].p99.as_micros() as i128,
                )
            };
            println!("\nLatency at 1 connection (wrk's percentiles):\n");
            println!("| | p50 | p99 | added p50 | added p99 |\n|---|---|---|---|---|");
            for (label, run) in [
                ("direct", &runs[0]),
                ("berth", &runs[1]),
                ("nginx 1 worker", &runs[2]),
                ("nginx 2 workers", &runs[3]),
            ] {
                let (a50, a99) = added(run);
                println!(
                    "| {label} | {} | {} | {a50} µs | {a99} µs |",
                    show(run.p50),
                    show(run.p99)
                );
            }
            println!();
        }
        drop((nginx1, nginx2));
        Ok(())
    }

    async fn container_addr(&self, name: &str) -> anyhow::Result<SocketAddr> {
        let found = self
            .runtime
            .list(&[(labels::APP, "bench"), (labels::OBJECT_NAME, name)])
            .await?;
        found
            .iter()
            .find_map(|c| c.endpoint.as_ref().and_then(|e| e.addr(8080)))
            .context("the container's bridge address")
    }

    /// 1,000 concurrent first requests to one cold name, from a separate process.
    async fn stampede(&mut self) -> anyhow::Result<()> {
        let single = match self.cold_median {
            Some(d) => d,
            None => {
                let started = Instant::now();
                http_get(self.router, "/s/stampede-single/").await?;
                let d = started.elapsed();
                self.ns.get_by_name("stampede-single").destroy().await?;
                d
            }
        };
        println!("## Stampede (1,000 concurrent first requests to one cold name, 3 runs)\n");
        println!(
            "| run | successes | containers | p50 | p99 | p99 / single cold start ({}) |",
            show(single)
        );
        println!("|---|---|---|---|---|---|");
        for run in 0..3 {
            let name = format!("stampede-{run}");
            let url = format!("http://{}/s/{name}/", self.router);
            let summary = self.load(&url, 1, 1000, 1000, false).await?;
            let containers = self
                .runtime
                .list(&[(labels::APP, "bench"), (labels::OBJECT_NAME, name.as_str())])
                .await?
                .len();
            println!(
                "| {run} | {} of 1000 | {containers} | {} | {} | {:.2} |",
                summary.ok,
                show(summary.p50),
                show(summary.p99),
                ratio(summary.p99, single)
            );
            self.ns.get_by_name(&name).destroy().await?;
        }
        println!();
        Ok(())
    }

    /// The load client over the URLs listed in `file`: one keep-alive client, 5,000 requests.
    async fn load_urls(&self, file: &Path) -> anyhow::Result<client::Summary> {
        let file = file.display().to_string();
        run_client(&[
            "--concurrency",
            "1",
            "--requests",
            "5000",
            "--keep-alive",
            "--urls",
            &file,
        ])
        .await
    }

    /// The load client over `names` names in the `url` template.
    async fn load(
        &self,
        url: &str,
        names: usize,
        concurrency: usize,
        requests: usize,
        keep_alive: bool,
    ) -> anyhow::Result<client::Summary> {
        let (names, concurrency, requests) = (
            names.to_string(),
            concurrency.to_string(),
            requests.to_string(),
        );
        let mut args = vec![
            "--url-template",
            url,
            "--names",
            &names,
            "--concurrency",
            &concurrency,
            "--requests",
            &requests,
        ];
        if keep_alive {
            args.push("--keep-alive");
        }
        run_client(&args).await
    }

    /// Sleeping objects' memory; then many running containers: memory, CPU and the
    /// per-request overhead at that count.
    async fn scale(&self, containers: usize) -> anyhow::Result<()> {
        println!("## Scale\n");
        let before = rss_kib();
        let started = Instant::now();
        let sleepers: Vec<_> = (0..10_000)
            .map(|i| self.ns.get_by_name(&format!("sleeper-{i}")))
            .collect();
        let elapsed = started.elapsed();
        let per_object = (rss_kib().saturating_sub(before)) as f64 * 1024.0 / sleepers.len() as f64;
        println!(
            "- 10,000 sleeping objects: {:.0} bytes of berth's memory each (RSS delta; each also recorded in SQLite), addressed in {}\n",
            per_object,
            show(elapsed)
        );
        drop(sleepers);

        let (rss0, cpu0) = (rss_kib(), cpu_ticks());
        let started = Instant::now();
        let results: Vec<_> = futures_util::stream::iter(0..containers)
            .map(|k| {
                let object = self.ns.get_by_name(&format!("n{k}"));
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
        let berth = self
            .load(
                &format!("http://{}/s/{{}}/", self.router),
                running,
                1,
                5000,
                true,
            )
            .await?;
        // The baseline rotates over the same containers, straight to their addresses.
        let found = self.runtime.list(&[(labels::APP, "bench")]).await?;
        let direct: Vec<String> = found
            .iter()
            .filter_map(|c| c.endpoint.as_ref().and_then(|e| e.addr(8080)))
            .map(|addr| format!("http://{addr}/"))
            .collect();
        let urls = self.dir.join("direct-urls.txt");
        std::fs::write(&urls, direct.join("\n"))?;
        let base = self.load_urls(&urls).await?;
        println!("Per-request overhead with {running} running (one client, 5,000 requests, each to the next container; to berth over one keep-alive connection, direct over a keep-alive connection per container):\n");
        println!("| | p50 | p95 | p99 |\n|---|---|---|---|");
        println!(
            "| direct, rotating over the {} containers | {} | {} | {} |",
            direct.len(),
            show(base.p50),
            show(base.p95),
            show(base.p99)
        );
        println!(
            "| berth, rotating over {running} names | {} | {} | {} |",
            show(berth.p50),
            show(berth.p95),
            show(berth.p99)
        );
        println!(
            "| added by berth | {} µs | {} µs | {} µs |\n",
            berth.p50.as_micros() as i128 - base.p50.as_micros() as i128,
            berth.p95.as_micros() as i128 - base.p95.as_micros() as i128,
            berth.p99.as_micros() as i128 - base.p99.as_micros() as i128
        );
        let stopped = self.ns.stop_all(StopReason::Requested).await;
        eprintln!("stopped {stopped} containers");
        Ok(())
    }

    /// From the end of sleep_after to the sleep decision and to the container gone.
    async fn sleep(&self, samples: usize) -> anyhow::Result<()> {
        const PARALLEL: usize = 4;
        let sleep_after = Duration::from_secs(1);
        let mut decided = Vec::new();
        let mut gone = Vec::new();
        for round in 0..samples.div_ceil(PARALLEL) {
            let mut waits = Vec::new();
            for k in 0..PARALLEL {
                let object = self.sleepy.get_by_name(&format!("sleep-{round}-{k}"));
                let response = object
                    .fetch(http::Request::get("/").body(Empty::<Bytes>::new())?)
                    .await;
                anyhow::ensure!(response.status() == 200, "got {}", response.status());
                response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let deadline = Instant::now() + sleep_after;
                waits.push((format!("{:?}", format!("sleep-{round}-{k}")), deadline));
            }
            tokio::time::sleep(sleep_after + Duration::from_secs(2)).await;
            let t = self
                .timeline
                .lock()
                .map_err(|_| anyhow::anyhow!("timeline"))?;
            for (object, deadline) in waits {
                let at = |kind: fn(&EventKind) -> bool| {
                    t.iter()
                        .find(|(_, _, e)| e.object == object && kind(&e.kind))
                        .map(|(i, _, _)| *i)
                };
                if let Some(i) = at(|k| matches!(k, EventKind::Sleeping { .. })) {
                    decided.push(i.saturating_duration_since(deadline));
                }
                if let Some(i) = at(|k| matches!(k, EventKind::Stopped { .. })) {
                    gone.push(i.saturating_duration_since(deadline));
                }
            }
        }
        // The engine's own part: SIGTERM to a container until its exit is reported.
        let mut engine = Vec::new();
        for i in 0..samples.min(10) {
            let spec = ContainerSpec {
                name: format!("berth-bench-stop-{}-{i}", std::process::id()),
                image: self.image.clone(),
                labels: BTreeMap::from([(labels::APP.to_string(), "bench".to_string())]),
                ports: vec![8080],
                enable_internet: true,
                ..ContainerSpec::default()
            };
            let id = self.runtime.create(&spec).await?;
            let endpoint = self.runtime.start(&id).await?;
            let addr = endpoint.addr(8080).context("the container's address")?;
            while !matches!(http_get(addr, "/").await, Ok(200)) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let waiting = self.runtime.wait(&id);
            let started = Instant::now();
            self.runtime.kill(&id, berth::Signal::Term).await?;
            waiting.await?;
            engine.push(started.elapsed());
            self.runtime.remove(&id).await?;
        }
        let (d, g, e) = (Stats::of(&decided), Stats::of(&gone), Stats::of(&engine));
        println!("## Sleep accuracy (sleep_after = 1 s, {} samples)\n", d.n);
        println!(
            "| lateness after sleep_after | median | p95 | p99 | max |\n|---|---|---|---|---|"
        );
        println!(
            "| sleep decided, SIGTERM sent | {} | {} | {} | {} |",
            show(d.median),
            show(d.p95),
            show(d.p99),
            show(d.max)
        );
        println!(
            "| container exited (berth's stop event) | {} | {} | {} | {} |",
            show(g.median),
            show(g.p95),
            show(g.p99),
            show(g.max)
        );
        println!(
            "| baseline: SIGTERM to exit reported, straight through the Engine API ({} samples) | {} | {} | {} | {} |\n",
            e.n,
            show(e.median),
            show(e.p95),
            show(e.p99),
            show(e.max)
        );
        Ok(())
    }
}

/// Runs `berth-bench client ARGS` as a separate process and reads its summary line.
async fn run_client(args: &[&str]) -> anyhow::Result<client::Summary> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .arg("client")
        .args(args)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout);
    client::Summary::parse(text.trim()).with_context(|| {
        format!(
            "the load client said: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// One GET on a fresh connection; the status.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, "bench")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn nginx_addr(dir: &Path) -> anyhow::Result<SocketAddr> {
    let conf = std::fs::read_to_string(dir.join("nginx.conf"))?;
    conf.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("listen ")?
                .trim_end_matches(';')
                .parse()
                .ok()
        })
        .context("nginx's address")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of this process, in clock ticks (10 ms).
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
