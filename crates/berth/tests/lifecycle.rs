//! The object lifecycle on the in-memory fake runtime, with Tokio's paused time: the
//! races and failures that are hard to bring about against a real engine, each made to
//! happen at an exact moment. They take milliseconds and need no Docker. The tests against
//! the real Docker Engine (`objects.rs`, `reliability.rs`) remain the proof that berth
//! works; these prove the logic in between.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth::runtime::fake::{Behaviour, FakeRuntime};
use berth::{
    App, Body, ContainerClass, Event, EventKind, Hooks, Namespace, Object, ObjectError, Signal,
    StartError, StartOptions, State, StopParams, StopReason, Store,
};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::{sleep, Instant};

const IMAGE: &str = "fake/app:1";
const SLEEP_AFTER: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(5);

/// Records every hook call as `<object>: <what>`.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("recorder").clone()
    }

    fn push(&self, object: &Object, what: String) {
        let name = object.name().unwrap_or("?").to_string();
        self.calls
            .lock()
            .expect("recorder")
            .push(format!("{name}: {what}"));
    }
}

#[async_trait]
impl Hooks for Recorder {
    async fn on_start(&self, object: &Object) {
        self.push(object, "start".into());
    }

    async fn on_stop(&self, object: &Object, params: StopParams) {
        self.push(object, format!("stop ({})", params.reason));
    }

    async fn on_error(&self, object: &Object, _error: &ObjectError) {
        self.push(object, "error".into());
    }
}

struct Fixture {
    app: App,
    fake: Arc<FakeRuntime>,
    ns: Namespace,
    hooks: Arc<Recorder>,
    events: tokio::sync::broadcast::Receiver<Event>,
}

impl Fixture {
    fn new(behaviour: Behaviour) -> Fixture {
        Fixture::with(behaviour, |_| {}, Store::in_memory().expect("store"))
    }

    fn with(
        behaviour: Behaviour,
        adjust: impl FnOnce(&mut ContainerClass),
        store: Store,
    ) -> Fixture {
        let fake = FakeRuntime::new();
        fake.image(IMAGE, behaviour);
        let app = App::new("lifecycle", fake.clone(), store).expect("app");
        let mut class = ContainerClass::new("Fake", IMAGE);
        class.default_port = Some(8080);
        class.sleep_after = SLEEP_AFTER;
        class.stop_grace = GRACE;
        adjust(&mut class);
        let hooks = Arc::new(Recorder::default());
        let ns = app.namespace(class, hooks.clone());
        let events = app.events();
        Fixture {
            app,
            fake,
            ns,
            hooks,
            events,
        }
    }

    /// The events so far, as their one-line texts.
    fn events(&mut self) -> Vec<Event> {
        let mut seen = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            seen.push(event);
        }
        seen
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "localhost")
        .body(berth::http::full(""))
        .expect("request")
}

async fn fetch(object: &Object, path: &str) -> (StatusCode, String, String) {
    let response = object.fetch(get(path)).await;
    let status = response.status();
    let kind = response
        .headers()
        .get("berth-error")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, kind, String::from_utf8_lossy(&body).into_owned())
}

/// Lets the lifecycle's own tasks finish what they began. Paused time does not advance
/// while the store writes on the blocking pool, so each short sleep waits for those too.
async fn settle() {
    for _ in 0..10 {
        sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_first_requests_share_one_start() {
    let f = Fixture::new(Behaviour {
        create_delay: Duration::from_millis(100),
        ready_after: Some(Duration::from_millis(300)),
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    let answers = futures_util::future::join_all((0..50).map(|_| fetch(&object, "/"))).await;
    for (status, kind, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{kind}: {body}");
        assert_eq!(body, "ok alpha");
    }
    assert_eq!(f.fake.created(), 1, "one container for fifty requests");
    settle().await;
    assert_eq!(f.hooks.calls(), ["alpha: start"]);
}

#[tokio::test(start_paused = true)]
async fn waiters_all_get_the_error_of_the_start_they_waited_for() {
    let f = Fixture::new(Behaviour {
        ready_after: None,
        exit_after: Some((Duration::from_millis(500), 3)),
        logs: vec!["fatal: no config".into()],
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    let answers = futures_util::future::join_all((0..50).map(|_| fetch(&object, "/"))).await;
    for (status, kind, body) in &answers {
        assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(kind, "exited-while-starting");
        assert!(
            body.contains("exited with code 3") && body.contains("fatal: no config"),
            "{body}"
        );
    }
    assert_eq!(f.fake.created(), 1, "the waiters did not start again");
    assert_eq!(f.fake.existing(), 0, "the failed container was removed");
    settle().await;
    assert_eq!(f.hooks.calls(), ["alpha: error", "alpha: stop (exited)"]);
    assert_eq!(
        object.state().await.expect("state"),
        State::StoppedWithCode(3)
    );
}

#[tokio::test(start_paused = true)]
async fn a_port_that_never_opens_fails_every_waiter_and_leaves_nothing() {
    let f = Fixture::with(
        Behaviour {
            ready_after: None,
            ..Behaviour::default()
        },
        |class| class.port_ready_timeout = Duration::from_secs(2),
        Store::in_memory().expect("store"),
    );
    let object = f.ns.get_by_name("alpha");
    let answers = futures_util::future::join_all((0..10).map(|_| fetch(&object, "/"))).await;
    for (status, kind, body) in &answers {
        assert_eq!(*status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(kind, "port-timeout");
        assert!(body.contains("port 8080"), "{body}");
    }
    assert_eq!(f.fake.created(), 1);
    assert_eq!(f.fake.existing(), 0);
    settle().await;
    let mut calls = f.hooks.calls();
    calls.sort();
    assert_eq!(calls, ["alpha: error", "alpha: stop (start failed)"]);
}

#[tokio::test(start_paused = true)]
async fn a_request_at_the_exact_sleep_deadline_is_never_lost() {
    let f = Fixture::new(Behaviour::default());
    // Just before, at, and just after the moment the container becomes idle.
    let offsets: [i64; 5] = [-2, -1, 0, 1, 2];
    for (n, offset) in offsets.iter().enumerate() {
        let object = f.ns.get_by_name(&format!("o{n}"));
        let (status, _, _) = fetch(&object, "/").await;
        assert_eq!(status, StatusCode::OK);
        let idle_at = Instant::now() + SLEEP_AFTER;
        let at = if *offset < 0 {
            idle_at - Duration::from_millis(offset.unsigned_abs())
        } else {
            idle_at + Duration::from_millis(offset.unsigned_abs())
        };
        tokio::time::sleep_until(at).await;
        let (status, kind, body) = fetch(&object, "/").await;
        assert_eq!(status, StatusCode::OK, "offset {offset} ms: {kind}: {body}");
        assert_eq!(body, format!("ok o{n}"));
    }
    // Whatever happened at each deadline, every container sleeps in the end, and each
    // container that ran gave exactly one on_stop.
    sleep(SLEEP_AFTER * 2).await;
    settle().await;
    assert!(f.fake.running().is_empty());
    let stops = f
        .hooks
        .calls()
        .iter()
        .filter(|c| c.contains("stop"))
        .count();
    assert_eq!(stops, f.fake.created());
    assert!(f.fake.created() >= offsets.len());
}

#[tokio::test(start_paused = true)]
async fn an_exit_during_a_start_is_reported_with_its_code_and_logs() {
    let f = Fixture::new(Behaviour {
        ready_after: None,
        exit_after: Some((Duration::from_secs(1), 7)),
        logs: vec!["starting".into(), "fatal: bad config".into()],
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    let error = object
        .start_and_wait_for_ports(&[], StartOptions::default())
        .await
        .expect_err("the container exits while starting");
    match &*error {
        StartError::ExitedWhileStarting { status, logs, .. } => {
            assert_eq!(status.code, 7);
            assert_eq!(logs, &["starting", "fatal: bad config"]);
        }
        other => panic!("expected ExitedWhileStarting, got {other}"),
    }
    assert_eq!(
        object.state().await.expect("state"),
        State::StoppedWithCode(7)
    );
    assert_eq!(f.fake.existing(), 0);
    settle().await;
    assert_eq!(f.hooks.calls(), ["alpha: error", "alpha: stop (exited)"]);
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_the_ports_are_awaited_ends_the_start_at_once() {
    let f = Fixture::new(Behaviour {
        ready_after: Some(Duration::from_secs(10)),
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    let began = Instant::now();
    let start = tokio::spawn({
        let object = object.clone();
        async move {
            object
                .start_and_wait_for_ports(&[], StartOptions::default())
                .await
        }
    });
    sleep(Duration::from_secs(1)).await;
    object.stop(Signal::Term).await.expect("stop");
    assert!(
        Instant::now() < began + Duration::from_secs(10),
        "stopped before ready"
    );
    let error = start
        .await
        .expect("join")
        .expect_err("the start was stopped");
    assert!(matches!(*error, StartError::Interrupted { .. }), "{error}");
    assert_eq!(object.state().await.expect("state"), State::Stopped);
    assert_eq!(f.fake.existing(), 0);
    settle().await;
    assert_eq!(f.hooks.calls(), ["alpha: stop (stop requested)"]);
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_the_container_is_created_stops_it_once_it_exists() {
    let f = Fixture::new(Behaviour {
        create_delay: Duration::from_secs(5),
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    let start = tokio::spawn({
        let object = object.clone();
        async move {
            object
                .start_and_wait_for_ports(&[], StartOptions::default())
                .await
        }
    });
    sleep(Duration::from_secs(1)).await;
    object.stop(Signal::Term).await.expect("stop");
    let error = start
        .await
        .expect("join")
        .expect_err("the start was stopped");
    assert!(matches!(*error, StartError::Interrupted { .. }), "{error}");
    assert_eq!(f.fake.created(), 1);
    assert_eq!(
        f.fake.existing(),
        0,
        "the container created meanwhile is gone"
    );
    settle().await;
    assert_eq!(f.hooks.calls(), ["alpha: stop (stop requested)"]);
}

#[tokio::test(start_paused = true)]
async fn destroy_during_a_sleep_reports_destroyed() {
    let mut f = Fixture::new(Behaviour {
        // Slow to stop: the sleep is still under way when destroy comes.
        term_exit: Some(Duration::from_secs(4)),
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let container = f.fake.running().pop().expect("a running container");
    sleep(SLEEP_AFTER + Duration::from_secs(1)).await;
    assert_eq!(
        object.state().await.expect("state"),
        State::Stopping,
        "going to sleep"
    );
    object.destroy().await.expect("destroy");
    assert_eq!(f.fake.signals(&container), [Signal::Term, Signal::Kill]);
    settle().await;
    assert_eq!(f.hooks.calls(), ["alpha: start", "alpha: stop (destroyed)"]);
    let stopped: Vec<StopReason> = f
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Stopped { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, [StopReason::Destroyed]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_gives_up_mid_request_does_not_keep_the_container_awake() {
    let f = Fixture::new(Behaviour::default());
    let object = f.ns.get_by_name("alpha");
    let abandoned =
        tokio::time::timeout(Duration::from_secs(1), fetch(&object, "/sleep/600000")).await;
    assert!(abandoned.is_err(), "the client gave up");
    assert_eq!(
        object.in_flight(),
        0,
        "the abandoned request is no longer in flight"
    );
    sleep(SLEEP_AFTER + Duration::from_millis(1)).await;
    settle().await;
    assert!(f.fake.running().is_empty(), "it slept on time");
    assert_eq!(
        f.hooks.calls(),
        ["alpha: start", "alpha: stop (slept after idle)"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_keeps_the_container_awake_past_sleep_after() {
    let f = Fixture::new(Behaviour::default());
    let object = f.ns.get_by_name("alpha");
    let (status, _, body) = fetch(&object, "/sleep/30000").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slept 30000 ms"));
    assert_eq!(f.fake.running().len(), 1, "awake while the request ran");
    sleep(SLEEP_AFTER - Duration::from_millis(1)).await;
    assert_eq!(
        f.fake.running().len(),
        1,
        "sleep_after counts from the request's end"
    );
    sleep(Duration::from_millis(2)).await;
    settle().await;
    assert!(f.fake.running().is_empty());
}

#[tokio::test(start_paused = true)]
async fn on_stop_comes_exactly_once_for_every_kind_of_exit() {
    let f = Fixture::with(
        Behaviour::default(),
        |class| class.port_ready_timeout = Duration::from_secs(1),
        Store::in_memory().expect("store"),
    );
    let up = |name: &str| {
        let object = f.ns.get_by_name(name);
        async move {
            let (status, kind, body) = fetch(&object, "/").await;
            assert_eq!(status, StatusCode::OK, "{kind}: {body}");
            object
        }
    };
    let crashed = up("crashed").await;
    let running = f.fake.running();
    f.fake.crash(&running[0], 9);
    settle().await;
    assert_eq!(
        crashed.state().await.expect("state"),
        State::StoppedWithCode(9)
    );

    up("requested")
        .await
        .stop(Signal::Term)
        .await
        .expect("stop");
    up("destroyed").await.destroy().await.expect("destroy");
    up("slept").await;
    sleep(SLEEP_AFTER + Duration::from_secs(1)).await;
    up("replaced").await;
    assert_eq!(f.ns.stop_all(StopReason::Replaced).await, 1);
    up("shutdown").await;
    f.app.shutdown().await.expect("shutdown");

    // A start that fails: its port never opens.
    f.fake.image(
        IMAGE,
        Behaviour {
            ready_after: None,
            ..Behaviour::default()
        },
    );
    let failed = f.ns.get_by_name("failed");
    assert_eq!(fetch(&failed, "/").await.0, StatusCode::GATEWAY_TIMEOUT);
    settle().await;

    let stops: Vec<String> = f
        .hooks
        .calls()
        .into_iter()
        .filter(|c| c.contains(": stop"))
        .collect();
    let mut expected = vec![
        "crashed: stop (exited)",
        "requested: stop (stop requested)",
        "destroyed: stop (destroyed)",
        "slept: stop (slept after idle)",
        "replaced: stop (replaced by a new image)",
        "shutdown: stop (shutdown)",
        "failed: stop (start failed)",
    ];
    let mut stops_sorted = stops.clone();
    stops_sorted.sort();
    expected.sort();
    assert_eq!(stops_sorted, expected, "in order: {stops:?}");
    assert_eq!(f.fake.existing(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_container_that_ignores_sigterm_is_killed_after_the_grace_and_the_event_says_so() {
    let mut f = Fixture::new(Behaviour {
        term_exit: None,
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let container = f.fake.running().pop().expect("running");
    let began = Instant::now();
    object.stop(Signal::Term).await.expect("stop");
    assert_eq!(
        Instant::now() - began,
        GRACE,
        "SIGKILL came at the end of the grace"
    );
    assert_eq!(f.fake.signals(&container), [Signal::Term, Signal::Kill]);
    let killed: Vec<String> = f
        .events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Killed { .. }))
        .map(|e| e.to_string())
        .collect();
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert!(killed[0].contains("init = true"), "{}", killed[0]);
}

#[tokio::test(start_paused = true)]
async fn a_state_store_that_cannot_be_read_starts_nothing_and_says_why() {
    let dir = std::env::temp_dir().join(format!("berth-lifecycle-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("state.db");
    let store = Store::open(&path).expect("store");
    // Another program damages the file: the table of objects is gone.
    rusqlite_drop_objects(&path);
    let f = Fixture::with(Behaviour::default(), |_| {}, store);
    let object = f.ns.get_by_name("alpha");
    let (status, kind, body) = fetch(&object, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(kind, "store-failed");
    assert!(body.contains("state database"), "{body}");
    assert_eq!(
        f.fake.created(),
        0,
        "no container whose state could not be known"
    );
    assert!(object.state().await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Drops the `objects` table through a connection of its own, as another process would.
fn rusqlite_drop_objects(path: &std::path::Path) {
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DROP TABLE objects'); c.commit()")
        .arg(path)
        .status()
        .expect("python3 runs");
    assert!(status.success());
}
