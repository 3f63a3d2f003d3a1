//! What every measurement runs against: one image, one berth app with its namespaces, and
//! berth's router in front, built once per run so that each figure and its baseline share
//! the same image, the same Engine and the same process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use berth::build::BuildSpec;
use berth::router::{KeySource, PathPattern, Route, Router, Target};
use berth::runtime::{ContainerSpec, Identity};
use berth::server::{serve_with, ServeOptions};
use berth::{App, Binding, ContainerClass, DockerRuntime, Env, Event, Namespace, NoHooks, Store};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// berth's events with the moment they arrived: the monotonic one to set against the
/// benchmark's own deadlines, the wall-clock one to set against the server's logs.
pub type Timeline = Arc<Mutex<Vec<(Instant, SystemTime, Event)>>>;

pub struct Fixture {
    pub runtime: Arc<DockerRuntime>,
    pub app: App,
    pub image: String,
    /// Where the router sends requests: `/s/NAME/` to that name, anything else to `warm`.
    pub ns: Namespace,
    /// A class that sleeps after 1 s, for the sleep measurement alone.
    pub sleepy: Namespace,
    pub router: SocketAddr,
    /// The same router, its answers counted in the app's metrics (`berth_requests_total`
    /// and the latency histogram), as `berth dev` and `berth serve` count them.
    pub counted_router: SocketAddr,
    pub timeline: Timeline,
    /// Scratch space for the image, berth's state and nginx; removed at the end.
    pub dir: PathBuf,
}

impl Fixture {
    pub async fn new(server: &Path) -> anyhow::Result<Fixture> {
        let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("image"))?;
        std::fs::copy(server, dir.join("image/server")).with_context(|| {
            format!(
                "copying {} (run bench/run.sh, which builds it)",
                server.display()
            )
        })?;
        std::fs::write(
            dir.join("image/Dockerfile"),
            "FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n",
        )?;
        let runtime = Arc::new(DockerRuntime::connect().await?);
        let spec = BuildSpec {
            name: "server".into(),
            tag: None,
            context: dir.join("image"),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::new(),
            target: None,
            command: None,
        };
        let manifest = dir.join("berth.toml");
        let origin = berth::build::Origin {
            app: "bench",
            manifest: &manifest,
        };
        let image = berth::build::build(runtime.as_ref(), &spec, origin, &mut |_| {})
            .await?
            .image;
        let app = App::new("bench", runtime.clone(), Store::open(dir.join("state.db"))?)?;
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
        let router = serve_router(&ns, None).await?;
        let counted_router = serve_router(&ns, Some(app.metrics().clone())).await?;
        Ok(Fixture {
            counted_router,
            runtime,
            app,
            image,
            ns,
            sleepy,
            router,
            timeline,
            dir,
        })
    }

    /// A container of the benchmark's image made straight through the engine, for the
    /// baselines: the same image, environment and init process as berth's containers.
    pub fn baseline_spec(&self, name: &str) -> ContainerSpec {
        ContainerSpec {
            identity: Identity {
                app: "bench".into(),
                class: "Baseline".into(),
                object_id: self.ns.id_from_name(name),
                object_name: Some(name.into()),
                session: format!("baseline-{}", std::process::id()),
                host: String::new(),
                version: String::new(),
                standby: false,
            },
            image: self.image.clone(),
            env: BTreeMap::from([("WORKERS".to_string(), "2".to_string())]),
            entrypoint: None,
            labels: BTreeMap::new(),
            ports: vec![8080],
            egress: berth::egress::Policy::open(),
            init: true,
            stop_grace: std::time::Duration::from_secs(10),
            nano_cpus: 0,
            memory_bytes: 0,
            volumes: Vec::new(),
        }
    }

    /// The figures mean little without the machine they came from.
    pub async fn print_machine(&self) {
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

    /// Removes every container the run started and the scratch directory, even after a
    /// measurement failed, so that a failed run does not slow down the next one.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let stopped = self.app.shutdown().await?;
        eprintln!("removed {stopped} container(s)");
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// berth's router, served as `berth dev` serves it (one thread per core unless
/// `BERTH_SERVE_THREADS` says otherwise), so that the proxy measured is the one users run.
async fn serve_router(
    ns: &Namespace,
    counted: Option<Arc<berth::metrics::Metrics>>,
) -> anyhow::Result<SocketAddr> {
    let mut env = Env::new();
    env.bind("APP", Binding::Container(ns.clone()));
    let routes = vec![
        Route {
            path: PathPattern::parse("/s/:name/*").map_err(anyhow::Error::msg)?,
            binding: "APP".into(),
            target: Target::From(KeySource::Path("name".into())),
            strip_prefix: true,
            start_only: false,
            wake: true,
            fallback: false,
            keep_warm: false,
        },
        Route {
            path: PathPattern::parse("/*").map_err(anyhow::Error::msg)?,
            binding: "APP".into(),
            target: Target::Fixed("warm".into()),
            strip_prefix: false,
            start_only: false,
            wake: true,
            fallback: false,
            keep_warm: false,
        },
    ];
    let router: Arc<dyn berth::Worker> = Arc::new(Router::new(routes, &env)?);
    let router: Arc<dyn berth::Worker> = match counted {
        Some(metrics) => Arc::new(berth::worker::Counted::new(router, "bench", "web", metrics)),
        None => router,
    };
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
        router,
        env,
        std::future::pending(),
        options,
    ));
    Ok(addr)
}

/// A GET of `/` through `object` (starting or thawing its container), read to the end;
/// an error unless it answers 200.
pub async fn fetch_ok(object: &berth::Object) -> anyhow::Result<()> {
    let response = object
        .fetch(http::Request::get("/").body(Empty::<Bytes>::new())?)
        .await;
    anyhow::ensure!(response.status() == 200, "got {}", response.status());
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// One GET on a fresh connection; the status. A fresh connection each time, so that a
/// cold start or a readiness poll is never helped by an earlier one.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
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

/// A GET of `path` for an object's `fetch`, as the router would hand it on.
pub fn request(path: &str) -> http::Request<berth::Body> {
    let mut request = http::Request::new(berth::http::full(""));
    *request.uri_mut() = path.parse().unwrap_or_default();
    request.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_static("localhost"),
    );
    request
}
