//! Faults, races, limits, bad input and isolation, each against the real Docker Engine.
//! RELIABILITY.md says what each test injects and how often.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth::router::{CronSchedule, PathPattern, Route, Router, Target};
use berth::runtime::docker::labels;
use berth::runtime::Selector;
use berth::server::{serve_with, ServeOptions};
use berth::{Binding, Env};
use berth::{
    DockerRuntime, Hooks, NoHooks, Object, ObjectError, Runtime, State, StopParams, Store,
};
use common::{request, text, TestApp};
use http::StatusCode;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::AbortHandle;

/// A socket that relays to the machine's Docker Engine and can be cut and restored, so a
/// test can take the engine away from berth without touching the real daemon.
struct EngineLink {
    path: PathBuf,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl EngineLink {
    fn new(test: &str) -> EngineLink {
        let path =
            std::env::temp_dir().join(format!("berth-engine-{test}-{}.sock", std::process::id()));
        let link = EngineLink {
            path,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        link.restore();
        link
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn restore(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind the engine link");
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let relay = tokio::spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                tasks.lock().expect("tasks").push(relay.abort_handle());
            }
        });
        self.tasks
            .lock()
            .expect("tasks")
            .push(accept.abort_handle());
    }

    /// Closes the socket and every connection through it.
    fn cut(&self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EngineLink {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_engine_gives_503_and_berth_recovers_when_it_returns() {
    let t = TestApp::new("engine-loss").await;
    let link = EngineLink::new("loss");
    let runtime = DockerRuntime::connect_to(&link.host())
        .await
        .expect("through the link");
    let app = berth::App::new(
        &t.name,
        Arc::new(runtime),
        Store::in_memory().expect("store"),
    )
    .expect("app");
    let ns = app.namespace(t.class("Fragile").await, Arc::new(NoHooks));

    let (status, _) = text(ns.get_by_name("warm").fetch(request("/ping")).await).await;
    assert_eq!(status, StatusCode::OK);

    link.cut();
    let response = ns.get_by_name("cold").fetch(request("/ping")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let (_, body) = text(response).await;
    assert!(
        body.contains("cannot reach the Docker Engine at unix://"),
        "{body}"
    );
    let (status, _) = text(ns.get_by_name("warm").fetch(request("/ping")).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a running container still serves without the engine"
    );

    link.restore();
    let (status, _) = text(ns.get_by_name("cold").fetch(request("/ping")).await).await;
    assert_eq!(status, StatusCode::OK, "berth recovers without a restart");
    // The warm container's monitor lost its watch on the engine and picked it up again.
    let warm = ns.get_by_name("warm");
    let _ = warm.fetch(request("/exit/4")).await;
    let noticed = common::eventually(Duration::from_secs(10), || async {
        warm.state().await.expect("state") == State::StoppedWithCode(4)
    })
    .await;
    assert!(
        noticed,
        "the exit is still noticed; state is {}",
        warm.state().await.expect("state")
    );
    app.shutdown().await.expect("shutdown");
    assert!(t.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_at_the_sleep_boundary_are_never_lost() {
    const OBJECTS: usize = 10;
    const ROUNDS: usize = 100;
    let t = TestApp::new("boundary").await;
    let mut class = t.class("Boundary").await;
    class.sleep_after = Duration::from_millis(200);
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let kept = Arc::new(AtomicUsize::new(0));
    let restarted = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let loops = (0..OBJECTS).map(|k| {
        let object = ns.get_by_name(&format!("edge-{k}"));
        let (kept, restarted, failures) = (kept.clone(), restarted.clone(), failures.clone());
        tokio::spawn(async move {
            let mut last_host = String::new();
            for round in 0..ROUNDS {
                // Sweep the gap across the idle deadline: 190 ms to 210 ms.
                let gap = 190 + ((round * 7 + k) % 21) as u64;
                tokio::time::sleep(Duration::from_millis(gap)).await;
                let (status, body) = text(object.fetch(request("/env")).await).await;
                if status != StatusCode::OK {
                    failures
                        .lock()
                        .expect("failures")
                        .push(format!("{k}/{round}: {status} {body}"));
                    continue;
                }
                let host = body
                    .split("\"HOSTNAME\":\"")
                    .nth(1)
                    .unwrap_or("")
                    .chars()
                    .take(12)
                    .collect::<String>();
                if round > 0 {
                    if host == last_host { &kept } else { &restarted }
                        .fetch_add(1, Ordering::Relaxed);
                }
                last_host = host;
            }
        })
    });
    for result in futures_util::future::join_all(loops).await {
        result.expect("loop");
    }
    let failures = failures.lock().expect("failures").clone();
    let (kept, restarted) = (
        kept.load(Ordering::Relaxed),
        restarted.load(Ordering::Relaxed),
    );
    eprintln!(
        "sleep boundary: {} requests, {kept} kept awake, {restarted} after a restart, {} lost",
        OBJECTS * ROUNDS,
        failures.len()
    );
    assert!(failures.is_empty(), "lost requests: {failures:?}");
    assert!(
        kept > 0 && restarted > 0,
        "both sides of the boundary were hit: {kept} kept, {restarted} restarted"
    );
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_instances_is_never_exceeded_under_a_storm() {
    const LIMIT: usize = 4;
    let t = TestApp::new("storm").await;
    let mut class = t.class("Storm").await;
    class.max_instances = LIMIT;
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, name) = (peak.clone(), sampling.clone(), t.name.clone());
        tokio::spawn(async move {
            let runtime = DockerRuntime::connect().await.expect("engine");
            while sampling.load(Ordering::Relaxed) {
                let running = runtime
                    .list(&Selector::app(&name))
                    .await
                    .map(|c| c.iter().filter(|c| c.running).count())
                    .unwrap_or(0);
                peak.fetch_max(running, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let storm = (0..24).map(|k| {
        let object = ns.get_by_name(&format!("n{k}"));
        tokio::spawn(async move {
            let response = object.fetch(request("/sleep/300")).await;
            let retry = response.headers().get("retry-after").is_some();
            let (status, body) = text(response).await;
            (status, retry, body)
        })
    });
    let results: Vec<_> = futures_util::future::join_all(storm)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let ok = results
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .count();
    let refused: Vec<_> = results
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(ok, LIMIT, "{results:?}");
    assert_eq!(refused.len(), 24 - LIMIT);
    assert!(refused
        .iter()
        .all(|(_, retry, body)| !*retry && body.contains("maximum of 4 instances")));
    assert!(
        peak.load(Ordering::Relaxed) <= LIMIT,
        "peak {} running",
        peak.load(Ordering::Relaxed)
    );
    assert_eq!(t.containers().await.len(), LIMIT);
    t.app.shutdown().await.expect("shutdown");
}

#[derive(Default)]
struct Errors(Mutex<Vec<String>>);

#[async_trait]
impl Hooks for Errors {
    async fn on_error(&self, _: &Object, error: &ObjectError) {
        self.0.lock().expect("errors").push(error.to_string());
    }
    async fn on_stop(&self, _: &Object, params: StopParams) {
        self.0
            .lock()
            .expect("errors")
            .push(format!("stop {}", params.exit_code));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_memory_is_reported_as_such() {
    let t = TestApp::new("oom").await;
    let mut class = t.class("Hungry").await;
    class.instance_type = Some(berth::InstanceType {
        vcpu: 0.5,
        memory_mib: 32,
    });
    let hooks = Arc::new(Errors::default());
    let ns = t.app.namespace(class, hooks.clone());
    let object = ns.get_by_name("glutton");
    let (status, body) = text(object.fetch(request("/alloc/128")).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("killed for lack of memory"), "{body}");
    let reported = common::eventually(Duration::from_secs(5), || async {
        hooks
            .0
            .lock()
            .expect("errors")
            .iter()
            .any(|e| e.contains("killed for lack of memory"))
    })
    .await;
    assert!(
        reported,
        "on_error says so: {:?}",
        hooks.0.lock().expect("errors")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_internet_a_container_cannot_leave_its_network() {
    let t = TestApp::new("noroute").await;
    let open = t.app.namespace(t.class("Open").await, Arc::new(NoHooks));
    let mut closed = t.class("Closed").await;
    closed.enable_internet = false;
    let closed = t.app.namespace(closed, Arc::new(NoHooks));

    // A target outside the internal network: a container of this test, on the bridge.
    let (status, _) = text(open.get_by_name("target").fetch(request("/ping")).await).await;
    assert_eq!(status, StatusCode::OK);
    let target = t
        .containers()
        .await
        .into_iter()
        .find_map(|c| c.endpoint.and_then(|e| e.addr(8080)))
        .expect("the target's bridge address");
    let path = format!("/connect/{target}");

    let (status, answer) = text(open.get_by_name("o").fetch(request(&path)).await).await;
    assert_eq!(
        (status, answer.as_str()),
        (StatusCode::OK, "connected"),
        "a normal container gets out"
    );
    let (status, answer) = text(closed.get_by_name("c").fetch(request(&path)).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "berth still reaches the closed container"
    );
    assert!(
        answer.starts_with("failed"),
        "without internet nothing outside its network is reached: {answer}"
    );
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_are_reached_through_berths_proxy_and_nothing_else_is() {
    let t = TestApp::new("egress").await;
    let mut events = t.app.events();
    // The "outside": two containers of this test on the bridge, which the filtered
    // container can reach only through berth's egress proxy.
    let outside = t.app.namespace(t.class("Outside").await, Arc::new(NoHooks));
    for name in ["allowed", "denied"] {
        let (status, _) = text(outside.get_by_name(name).fetch(request("/ping")).await).await;
        assert_eq!(status, StatusCode::OK);
    }
    let address = |name: &'static str| {
        let t = &t;
        async move {
            t.containers()
                .await
                .into_iter()
                .find(|c| c.identity.as_ref().and_then(|i| i.object_name.as_deref()) == Some(name))
                .and_then(|c| c.endpoint.and_then(|e| e.addr(8080)))
                .expect("an outside container's address")
        }
    };
    let (allowed, denied) = (address("allowed").await, address("denied").await);
    let octets: Vec<String> = allowed
        .ip()
        .to_string()
        .split('.')
        .map(str::to_string)
        .collect();
    let mut class = t.class("Filtered").await;
    class.enable_internet = false;
    class.allowed_hosts = vec![format!("{}.{}.*", octets[0], octets[1])];
    class.denied_hosts = vec![denied.ip().to_string()];
    let filtered = t.app.namespace(class, Arc::new(NoHooks));
    let inside = filtered.get_by_name("inside");
    let ask = |path: String| {
        let inside = inside.clone();
        async move { text(inside.fetch(request(&path)).await).await.1 }
    };

    assert_eq!(
        ask(format!("/proxied/{allowed}/ping")).await,
        "status 200: pong",
        "HTTP to an allowed host"
    );
    assert_eq!(
        ask(format!("/tunnel/{allowed}/ping")).await,
        "status 200: pong",
        "CONNECT to an allowed host"
    );
    let refused = ask(format!("/proxied/{denied}/ping")).await;
    assert!(
        refused.starts_with("status 403") && refused.contains("not among the hosts"),
        "a denied host, though the allow-list covers it: {refused}"
    );
    let refused = ask(format!("/tunnel/{denied}/ping")).await;
    assert!(
        refused.starts_with("status 403"),
        "CONNECT to a denied host: {refused}"
    );
    let refused = ask("/proxied/example.invalid:80/".to_string()).await;
    assert!(
        refused.starts_with("status 403"),
        "a host off the allow-list: {refused}"
    );
    // The bridge's gateway is this machine: allowed by the pattern, refused all the same.
    let gateway = format!("{}.{}.0.1:8080", octets[0], octets[1]);
    let refused = ask(format!("/proxied/{gateway}/")).await;
    assert!(
        refused.starts_with("status 403") && refused.contains("an address of this machine"),
        "this machine's own address: {refused}"
    );
    let direct = ask(format!("/connect/{allowed}")).await;
    assert!(
        direct.starts_with("failed"),
        "a connection that bypasses the proxy goes nowhere: {direct}"
    );

    // Each refusal is an event of the object that asked, counted before it is sent.
    let refusals = tokio::time::timeout(Duration::from_secs(5), async {
        let mut refusals = Vec::new();
        while refusals.len() < 3 {
            match events.recv().await {
                Ok(e) => {
                    if let berth::EventKind::EgressDenied { host } = &e.kind {
                        refusals.push((e.class.clone(), e.object.clone(), host.clone()));
                    }
                }
                Err(e) => panic!("events ended: {e}"),
            }
        }
        refusals
    })
    .await
    .expect("an event for each refusal");
    let (class, object) = ("Filtered".to_string(), "inside".to_string());
    assert_eq!(
        refusals,
        vec![
            (class.clone(), object.clone(), denied.ip().to_string()),
            (class.clone(), object.clone(), denied.ip().to_string()),
            (class, object, "example.invalid".to_string()),
        ]
    );
    let metrics = t.app.metrics().encode().expect("metrics");
    assert!(
        metrics.contains(&format!(
            "berth_egress_denied_total{{app=\"{}\",class=\"Filtered\"}} 3",
            t.name
        )),
        "three refusals counted: {metrics}"
    );
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_missed_while_berth_was_down_wakes_its_object_once_at_the_start() {
    let t = TestApp::new("cron").await;
    let ns = t
        .app
        .namespace(t.class("Reporter").await, Arc::new(NoHooks));
    let mut env = Env::new();
    env.bind("APP", Binding::Container(ns.clone()));
    let schedule = CronSchedule {
        cron: "* * * * *".parse().expect("cron"),
        path: "/hit".into(),
        instance: Some("reporter".into()),
    };
    // Its last run was ten minutes ago: berth was down for nine ticks since.
    let ten_ago = berth::store::now_ms() - 600_000;
    let last = t
        .app
        .store()
        .cron_started(&schedule.key(&t.name, "w"), ten_ago)
        .await
        .expect("seed");
    assert_eq!(last, ten_ago);
    let began = std::time::SystemTime::now();
    let route = Route::new(
        PathPattern::parse("/*").expect("pattern"),
        "APP",
        Target::Fixed("container".into()),
    );
    let router = Router::new(vec![route], &env).expect("router");
    let planned = router.plan_schedules("w", &[schedule]).expect("schedules");
    let running = berth::router::Planned::start(&planned, berth::cron::Clock::System);
    let reporter = ns.get_by_name("reporter");
    let woke = common::eventually(Duration::from_secs(30), || {
        let reporter = reporter.clone();
        async move { reporter.container_state() == Some(berth::State::Healthy) }
    })
    .await;
    assert!(woke, "the schedule started the sleeping object's container");
    let hits = common::eventually(Duration::from_secs(10), || {
        let reporter = reporter.clone();
        async move { text(reporter.fetch(request("/hits")).await).await.1 != "0" }
    })
    .await;
    assert!(hits, "the scheduled request arrived");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, hits) = text(reporter.fetch(request("/hits")).await).await;
    // A minute mark passed during the test adds its own tick.
    let minute = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("epoch")
            .as_secs()
            / 60
    };
    let marks = minute(std::time::SystemTime::now()) - minute(began);
    assert_eq!(
        hits,
        (1 + marks).to_string(),
        "the nine missed ticks ran once, not nine times"
    );
    drop((running, router));
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_container_in_pause_mode_is_frozen_and_a_request_thaws_it_with_its_memory() {
    let t = TestApp::new("pause").await;
    let mut class = t.class("Paused").await;
    class.sleep_mode = berth::class::SleepMode::Pause;
    class.sleep_after = Duration::from_secs(1);
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let object = ns.get_by_name("frozen");
    let (status, hits) = text(object.fetch(request("/hit")).await).await;
    assert_eq!((status, hits.as_str()), (StatusCode::OK, "1"));
    let paused = common::eventually(Duration::from_secs(15), || {
        let object = object.clone();
        async move { object.container_state() == Some(berth::State::Paused) }
    })
    .await;
    assert!(paused, "paused after sleep_after");
    let containers = t.containers().await;
    assert_eq!(containers.len(), 1);
    let engine_says = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Paused}}", &containers[0].id])
        .output()
        .expect("docker inspect");
    assert_eq!(
        String::from_utf8_lossy(&engine_says.stdout).trim(),
        "true",
        "the engine froze it"
    );
    // berth ps shows it paused, with the memory it keeps.
    let rows =
        berth::app::list_objects(t.app.store(), Some(&t.name), Some(t.app.runtime().as_ref()))
            .await
            .expect("objects");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "paused");
    assert!(
        rows[0].memory_bytes.is_some_and(|b| b > 0),
        "{:?}",
        rows[0].memory_bytes
    );

    // The same process answers, with what it counted before the pause.
    let (status, hits) = text(object.fetch(request("/hit")).await).await;
    assert_eq!((status, hits.as_str()), (StatusCode::OK, "2"));
    assert_eq!(object.container_state(), Some(berth::State::Healthy));
    assert_eq!(t.containers().await.len(), 1, "no new container");
    t.app.shutdown().await.expect("shutdown");
    assert!(
        t.containers().await.is_empty(),
        "a paused container is stopped by the shutdown"
    );
}

/// A router with one catch-all route to the singleton, served on 127.0.0.1.
async fn front(
    t: &TestApp,
    options: ServeOptions,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut class = t.class("Front").await;
    class.env_vars.insert("EXTRA_PORTS".into(), "9001".into());
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let mut env = Env::new();
    env.bind("APP", Binding::Container(ns));
    let routes = vec![Route {
        path: PathPattern::parse("/*").expect("pattern"),
        binding: "APP".into(),
        target: Target::Fixed("container".into()),
        strip_prefix: false,
        start_only: false,
        wake: true,
        fallback: false,
        keep_warm: false,
    }];
    let router = Router::new(routes, &env).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        Arc::new(router),
        env,
        async {
            let _ = stopped.await;
        },
        options,
    ));
    (addr, stop, server)
}

/// Sends raw bytes and returns what came back before the server closed or 5 s passed.
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(bytes).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_is_no_open_proxy_and_malformed_http_gets_clear_errors() {
    let t = TestApp::new("badhttp").await;
    let options = ServeOptions {
        header_read_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    };
    let (addr, stop, server) = front(&t, options).await;
    let answer = tokio::task::spawn_blocking(move || {
        let mut answers = Vec::new();
        // Absolute-form and a foreign Host still reach only berth's own container.
        answers.push(raw(addr, b"GET http://example.com/ping HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"));
        answers.push(raw(addr, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"));
        let big = format!("GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
        answers.push(raw(addr, big.as_bytes()));
        answers.push(raw(addr, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n"));
        // A slow client that never finishes its headers.
        let started = std::time::Instant::now();
        answers.push(raw(addr, b"GET /ping HTTP/1.1\r\nHost: x\r\n"));
        answers.push(format!("{}", started.elapsed().as_millis()));
        answers.push(raw(addr, b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        answers
    })
    .await
    .expect("client");
    assert!(answer[0].starts_with("HTTP/1.1 200"), "{}", answer[0]);
    assert!(
        answer[0].ends_with("pong"),
        "answered by the container: {}",
        answer[0]
    );
    assert!(
        answer[1].starts_with("HTTP/1.1 404"),
        "CONNECT tunnels nothing: {}",
        answer[1]
    );
    assert!(
        answer[2].starts_with("HTTP/1.1 431"),
        "oversized headers: {}",
        answer[2]
    );
    assert!(
        answer[3].starts_with("HTTP/1.1 400"),
        "a malformed body is the client's fault: {}",
        answer[3]
    );
    assert!(
        answer[3].contains("the request body broke off or was malformed"),
        "{}",
        answer[3]
    );
    let waited: u128 = answer[5].parse().expect("millis");
    assert!(waited < 5_000, "a slow client is cut off: {}", answer[4]);
    assert!(
        answer[6].starts_with("HTTP/1.1 200"),
        "still serving: {}",
        answer[6]
    );
    let _ = stop.send(());
    server.await.expect("server");
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_turns_new_ones_away_then_removes_containers() {
    let t = TestApp::new("drain").await;
    let options = ServeOptions {
        drain: Duration::from_secs(10),
        ..ServeOptions::default()
    };
    let (addr, stop, server) = front(&t, options).await;
    assert_eq!(common::get(addr, "/ping").await.0, StatusCode::OK);
    let in_flight = tokio::spawn(async move { common::get(addr, "/sleep/1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, headers, body) = common::get(addr, "/ping").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["berth-error"], "shutting-down");
    let (status, _, body) = in_flight.await.expect("request");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "slept 1500"),
        "the request in flight finished"
    );
    server.await.expect("server");
    assert_eq!(t.app.shutdown().await.expect("shutdown"), 1);
    assert!(t.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_names_of_any_bytes_map_to_valid_containers() {
    let t = TestApp::new("names").await;
    let ns = t.app.namespace(t.class("Names").await, Arc::new(NoHooks));
    let long = "n".repeat(10 * 1024);
    let names = [
        "a/b/../c",
        "nul\0byte",
        long.as_str(),
        "日本語 🚢 \"quoted\"\n",
        " ",
        "--help",
    ];
    for name in names {
        let (status, body) = text(ns.get_by_name(name).fetch(request("/ping")).await).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "pong"),
            "name {name:?}"
        );
    }
    let containers = t.containers().await;
    assert_eq!(containers.len(), names.len());
    for c in &containers {
        assert!(
            c.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch)),
            "{}",
            c.name
        );
        assert!(c.labels[labels::OBJECT_NAME].len() <= 1100, "bounded label");
        assert!(!c.labels[labels::OBJECT_NAME].contains('\0'));
    }
    let ids: std::collections::HashSet<_> = containers
        .iter()
        .map(|c| c.labels[labels::OBJECT_ID].clone())
        .collect();
    assert_eq!(ids.len(), names.len(), "each name its own object");
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_mid_start_leaves_nothing_stuck() {
    let t = TestApp::new("giveup").await;
    let mut class = t.class("Abandoned").await;
    class
        .env_vars
        .insert("STARTUP_DELAY_MS".into(), "800".into());
    class.sleep_after = Duration::from_secs(1);
    class.max_instances = 1;
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let object = ns.get_by_name("left");
    // The client disconnects while the container is still starting.
    let gave_up =
        tokio::time::timeout(Duration::from_millis(200), object.fetch(request("/ping"))).await;
    assert!(gave_up.is_err());
    let healthy = common::eventually(Duration::from_secs(10), || async {
        object.state().await.expect("state") == State::Healthy
    })
    .await;
    assert!(
        healthy,
        "the start went on; state is {}",
        object.state().await.expect("state")
    );
    let slept = common::eventually(Duration::from_secs(10), || async {
        object.state().await.expect("state") == State::Stopped
    })
    .await;
    assert!(
        slept,
        "then it slept; state is {}",
        object.state().await.expect("state")
    );
    let (status, body) = text(ns.get_by_name("next").fetch(request("/ping")).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "its max_instances slot was given back: {body}"
    );
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_started_without_requests_still_sleeps() {
    let t = TestApp::new("startonly").await;
    let mut class = t.class("Idle").await;
    class.sleep_after = Duration::from_secs(1);
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let object = ns.get_by_name("idle");
    object
        .start(berth::StartOptions::default())
        .await
        .expect("start");
    let slept = common::eventually(Duration::from_secs(10), || async {
        object.state().await.expect("state") == State::Stopped
    })
    .await;
    assert!(slept, "state is {}", object.state().await.expect("state"));
    assert!(t.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_pick_a_container_port() {
    let t = TestApp::new("portpick").await;
    let (addr, stop, server) = front(&t, ServeOptions::default()).await;
    let request = http::Request::get("/port")
        .header(berth::TARGET_PORT_HEADER, "9001")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let (status, _, body) = common::send(addr, request).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "8080"),
        "the header from outside is ignored"
    );
    let _ = stop.send(());
    server.await.expect("server");
    t.app.shutdown().await.expect("shutdown");
}

/// A shutdown while a request's start waits for the object's previous container to exit:
/// the start goes no further, the request gets a 503, and nothing runs afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_a_start_leaves_nothing_running() {
    let t = TestApp::new("shutdown-start").await;
    let mut class = t.class("Slow").await;
    class.env_vars.insert("IGNORE_SIGTERM".into(), "1".into());
    class.stop_grace = Duration::from_secs(3);
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let object = ns.get_by_name("alpha");
    let (status, _) = text(object.fetch(request("/ping")).await).await;
    assert_eq!(status, StatusCode::OK);
    let stopping = tokio::spawn({
        let object = object.clone();
        async move { object.stop(berth::Signal::Term).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = tokio::spawn({
        let object = object.clone();
        async move { text(object.fetch(request("/ping")).await).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.app.shutdown().await.expect("shutdown");
    let running_after = |containers: Vec<berth::runtime::ContainerInfo>| {
        containers.into_iter().filter(|c| c.running).count()
    };
    assert_eq!(
        running_after(t.containers().await),
        0,
        "right after shutdown"
    );
    let _ = stopping.await;
    let (status, body) = waiting.await.expect("join");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(running_after(t.containers().await), 0, "and later");
}

/// A client that hangs up while its request waits for the container's answer (as
/// `curl --max-time 1` does): berth drops the request, it no longer counts as in flight,
/// and the container goes to sleep on time instead of staying up until it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_does_not_keep_its_container_awake() {
    use tokio::io::AsyncWriteExt;
    let t = TestApp::new("hang-up").await;
    let mut class = t.class("Abandoned").await;
    class.sleep_after = Duration::from_secs(1);
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let object = ns.get_by_name("container");
    let mut env = Env::new();
    env.bind("APP", Binding::Container(ns));
    let routes = vec![Route {
        path: PathPattern::parse("/*").expect("pattern"),
        binding: "APP".into(),
        target: Target::Fixed("container".into()),
        strip_prefix: false,
        start_only: false,
        wake: true,
        fallback: false,
        keep_warm: false,
    }];
    let router = Router::new(routes, &env).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        Arc::new(router),
        env,
        async {
            let _ = stopped.await;
        },
        ServeOptions::default(),
    ));
    let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(b"GET /sleep/60000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let waiting = common::eventually(Duration::from_secs(10), || async {
        object.in_flight() == 1
    })
    .await;
    assert!(waiting, "the request reached the container");
    drop(client);
    let dropped =
        common::eventually(Duration::from_secs(5), || async { object.in_flight() == 0 }).await;
    assert!(
        dropped,
        "the abandoned request no longer counts as in flight"
    );
    let slept = common::eventually(Duration::from_secs(10), || async {
        object.state().await.expect("state") == State::Stopped
    })
    .await;
    assert!(
        slept,
        "the container slept; it is {}",
        object.state().await.expect("state")
    );
    let _ = stop.send(());
    let _ = server.await;
    t.app.shutdown().await.expect("shutdown");
}
