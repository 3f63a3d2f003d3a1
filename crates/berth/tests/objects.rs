//! Objects against the real Docker Engine: one container per name, starts on demand,
//! readiness, sleep, crashes, limits and state that survives a restart of berth.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth::runtime::docker::labels;
use berth::{
    Hooks, NoHooks, Object, ObjectError, Signal, StartOptions, State, StopParams, StopReason,
};
use common::{eventually, request, text, TestApp};
use http::StatusCode;

/// Hooks that write down every call, in order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.events.lock().expect("events").clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.starts_with(prefix))
            .count()
    }
}

#[async_trait]
impl Hooks for Recorder {
    async fn on_start(&self, _: &Object) {
        self.events.lock().expect("events").push("start".into());
    }
    async fn on_stop(&self, _: &Object, params: StopParams) {
        self.events
            .lock()
            .expect("events")
            .push(format!("stop {} {}", params.exit_code, params.reason));
    }
    async fn on_error(&self, _: &Object, error: &ObjectError) {
        self.events
            .lock()
            .expect("events")
            .push(format!("error {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_names_get_two_containers_and_a_name_keeps_its_own() {
    let t = TestApp::new("two-names").await;
    let ns = t.app.namespace(t.class("Two").await, Arc::new(NoHooks));

    let (status, body) = text(ns.get_by_name("alpha").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = text(ns.get_by_name("beta").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = text(ns.get_by_name("alpha").fetch(request("/ping")).await).await;
    assert_eq!(status, StatusCode::OK);

    let containers = t.containers().await;
    assert_eq!(containers.len(), 2, "one container per name");
    let mut ids: Vec<_> = containers
        .iter()
        .map(|c| c.labels[labels::OBJECT_ID].clone())
        .collect();
    ids.sort();
    let mut expected = vec![
        ns.id_from_name("alpha").to_string(),
        ns.id_from_name("beta").to_string(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
    for c in &containers {
        assert_eq!(c.labels[labels::APP], t.name);
        assert_eq!(c.labels[labels::CLASS], "Two");
        assert_eq!(c.labels[labels::SESSION], t.app.session());
        assert!(["alpha", "beta"].contains(&c.labels[labels::OBJECT_NAME].as_str()));
    }

    assert_eq!(t.app.shutdown().await.expect("shutdown"), 2);
    assert!(
        t.containers().await.is_empty(),
        "shutdown removes every container"
    );
    assert_eq!(
        ns.get_by_name("alpha").state().await.expect("state"),
        State::Stopped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_requests_share_one_container() {
    let t = TestApp::new("stampede").await;
    let ns = t
        .app
        .namespace(t.class("Stampede").await, Arc::new(NoHooks));
    let requests = (0..50).map(|_| {
        let ns = ns.clone();
        tokio::spawn(async move { text(ns.get_by_name("one").fetch(request("/")).await).await })
    });
    let results = futures_util::future::join_all(requests).await;
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok((StatusCode::OK, _))))
        .count();
    assert_eq!(ok, 50, "every request succeeds: {results:?}");
    assert_eq!(t.containers().await.len(), 1, "exactly one container");
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_container_sleeps_and_the_next_request_wakes_it_with_its_env() {
    let t = TestApp::new("sleep").await;
    let mut class = t.class("Sleeper").await;
    class.sleep_after = berth::parse_duration("2s").expect("duration");
    class.env_vars.insert(
        "MESSAGE".into(),
        "I was passed in via the container class!".into(),
    );
    let hooks = Arc::new(Recorder::default());
    let ns = t.app.namespace(class, hooks.clone());
    let object = ns.get_by_name("sleepy");

    let (status, body) = text(object.fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "Hi, I'm a container and this is my message: I was passed in via the container class!"
    );
    assert_eq!(object.state().await.expect("state"), State::Healthy);

    let slept = eventually(Duration::from_secs(10), || async {
        object.state().await.expect("state") == State::Stopped
    })
    .await;
    assert!(
        slept,
        "stopped after sleep_after; state is {}",
        object.state().await.expect("state")
    );
    assert!(t.containers().await.is_empty(), "the container is removed");
    assert!(
        eventually(Duration::from_secs(2), || async {
            hooks.count("stop") == 1
        })
        .await
    );
    assert!(
        hooks
            .events()
            .contains(&"stop 0 slept after idle".to_string()),
        "{:?}",
        hooks.events()
    );

    let (status, body) = text(object.fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK, "the next request starts it again");
    assert!(
        body.ends_with("I was passed in via the container class!"),
        "{body}"
    );
    assert_eq!(t.containers().await.len(), 1);
    assert_eq!(hooks.count("error"), 0, "{:?}", hooks.events());
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_keep_a_container_awake() {
    let t = TestApp::new("awake").await;
    let mut class = t.class("Awake").await;
    class.sleep_after = Duration::from_secs(1);
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let object = ns.get_by_name("busy");
    // A request that lasts three times sleep_after.
    let (status, body) = text(object.fetch(request("/sleep/3000")).await).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slept 3000"));
    assert_eq!(
        object.state().await.expect("state"),
        State::Healthy,
        "not stopped under a request"
    );
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_by_itself_is_recorded_with_its_code() {
    let t = TestApp::new("exit").await;
    let hooks = Arc::new(Recorder::default());
    let ns = t.app.namespace(t.class("Exiter").await, hooks.clone());
    let object = ns.get_by_name("doomed");

    let (status, _) = text(object.fetch(request("/ping")).await).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = text(object.fetch(request("/exit/3")).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("exited with code 3"), "{body}");

    assert!(
        eventually(Duration::from_secs(5), || async {
            object.state().await.expect("state") == State::StoppedWithCode(3)
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            hooks.count("stop") >= 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hooks.count("stop"),
        1,
        "on_stop exactly once: {:?}",
        hooks.events()
    );
    assert_eq!(
        hooks.count("error"),
        1,
        "on_error once: {:?}",
        hooks.events()
    );
    assert_eq!(hooks.events().first().map(String::as_str), Some("start"));
    assert!(hooks.events().contains(&"stop 3 exited".to_string()));
    assert!(
        t.containers().await.is_empty(),
        "the exited container is removed"
    );

    let (status, _) = text(object.fetch(request("/ping")).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the next request gets a fresh container"
    );
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_starting_app_is_waited_for_not_failed() {
    let t = TestApp::new("slow").await;
    let mut class = t.class("Slow").await;
    class
        .env_vars
        .insert("STARTUP_DELAY_MS".into(), "1500".into());
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let object = ns.get_by_name("slowpoke");
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let object = object.clone();
            tokio::spawn(async move { text(object.fetch(request("/ping")).await).await })
        })
        .collect();
    for result in futures_util::future::join_all(waiting).await {
        let (status, body) = result.expect("task");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "pong"));
    }
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_dies_while_starting_is_reported_with_its_logs() {
    let t = TestApp::new("dies").await;
    let mut class = t.class("Dies").await;
    class.env_vars.insert("PORT".into(), "not-a-port".into());
    let hooks = Arc::new(Recorder::default());
    let ns = t.app.namespace(class, hooks.clone());
    let response = ns.get_by_name("x").fetch(request("/")).await;
    let (status, body) = text(response).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("exited with code 1 while starting"), "{body}");
    assert!(
        body.contains("invalid PORT"),
        "the log lines say why: {body}"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            hooks.count("stop 1 exited") == 1
        })
        .await
    );
    assert!(t.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_never_opens_gives_504_naming_it() {
    let t = TestApp::new("noport").await;
    let mut class = t.class("Closed").await;
    class.default_port = Some(9999);
    class.port_ready_timeout = Duration::from_secs(1);
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let (status, body) = text(ns.get_by_name("x").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.contains("port 9999"), "{body}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            t.containers().await.is_empty()
        })
        .await,
        "the container that never became ready is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_says_so() {
    let t = TestApp::new("noimage").await;
    let mut class = t.class("Ghost").await;
    class.image = "berth-test/does-not-exist:never".into();
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let (status, body) = text(ns.get_by_name("x").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("berth-test/does-not-exist:never"), "{body}");
    assert!(body.contains("is not in the Docker Engine"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_instances_turns_extra_starts_away_with_503() {
    let t = TestApp::new("limit").await;
    let mut class = t.class("Limited").await;
    class.max_instances = 1;
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let (status, _) = text(ns.get_by_name("first").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    let response = ns.get_by_name("second").fetch(request("/")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        response.headers().get("retry-after").is_none(),
        "no false promise of a slot"
    );
    let (_, body) = text(response).await;
    assert!(body.contains("maximum of 1 instances"), "{body}");
    assert!(
        body.contains("a slot frees when one of them sleeps"),
        "{body}"
    );
    assert_eq!(t.containers().await.len(), 1);

    ns.get_by_name("first")
        .stop(Signal::Term)
        .await
        .expect("stop");
    let (status, _) = text(ns.get_by_name("second").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK, "a freed slot can be used");
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_without_a_port_starts_and_runs_and_fetch_explains() {
    let t = TestApp::new("portless").await;
    let mut class = t.class("Portless").await;
    class.default_port = None;
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let object = ns.get_by_name("worker");
    object
        .start_and_wait_for_ports(&[], StartOptions::default())
        .await
        .expect("starts without any port check");
    assert_eq!(object.state().await.expect("state"), State::Healthy);
    assert_eq!(t.containers().await.len(), 1);
    let (status, body) = text(object.fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("class Portless has no port"), "{body}");
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_stop_and_destroy_report_every_state_and_one_on_stop_each() {
    let t = TestApp::new("lifecycle").await;
    let hooks = Arc::new(Recorder::default());
    let mut class = t.class("Cycle").await;
    class.required_ports = vec![8080, 9001];
    class.env_vars.insert("EXTRA_PORTS".into(), "9001".into());
    let ns = t.app.namespace(class, hooks.clone());
    let object = ns.get_by_name("cycle");
    assert_eq!(object.state().await.expect("state"), State::Stopped);

    object.start(StartOptions::default()).await.expect("start");
    assert!(matches!(
        object.state().await.expect("state"),
        State::Running | State::Healthy
    ));
    object
        .start_and_wait_for_ports(&[8080, 9001], StartOptions::default())
        .await
        .expect("ports open");
    // The request can target the extra port.
    let mut req = request("/port");
    berth::switch_port(&mut req, 9001);
    let (status, body) = text(object.fetch(req).await).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "9001"));
    assert_eq!(object.state().await.expect("state"), State::Healthy);

    object.stop(Signal::Term).await.expect("stop");
    assert_eq!(object.state().await.expect("state"), State::Stopped);
    assert!(t.containers().await.is_empty());

    let (status, _) = text(object.fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    object.destroy().await.expect("destroy");
    assert_eq!(object.state().await.expect("state"), State::Stopped);
    assert!(t.containers().await.is_empty());

    assert!(
        eventually(Duration::from_secs(2), || async {
            hooks.count("stop") == 2
        })
        .await
    );
    let stops: Vec<_> = hooks
        .events()
        .into_iter()
        .filter(|e| e.starts_with("stop"))
        .collect();
    assert_eq!(stops[0], "stop 0 stop requested");
    assert!(stops[1].ends_with("destroyed"), "{stops:?}");
    assert_eq!(hooks.count("start"), 2);
    assert_eq!(hooks.count("error"), 0, "{:?}", hooks.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_of_berth_and_the_container_is_readopted() {
    let t = TestApp::new("restart").await;
    let class = t.class("Durable").await;
    let container_id = {
        let ns = t.app.namespace(class.clone(), Arc::new(NoHooks));
        let object = ns.get_by_name("keeper");
        let (status, _) = text(object.fetch(request("/")).await).await;
        assert_eq!(status, StatusCode::OK);
        object.storage().put("visits", b"1").await.expect("storage");
        t.containers().await[0].id.clone()
    };

    // A second berth process on the same state file, as after a crash of the first.
    let again = common::open_app(&t.name, &t.dir).await;
    let ns = again.namespace(class, Arc::new(NoHooks));
    let object = ns.get_by_name("keeper");
    assert_eq!(
        object.state().await.expect("state"),
        State::Healthy,
        "the recorded state is reported"
    );
    assert_eq!(
        object.storage().get("visits").await.expect("storage"),
        Some(b"1".to_vec())
    );
    let (status, _) = text(object.fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    let containers = t.containers().await;
    assert_eq!(containers.len(), 1, "no second container");
    assert_eq!(
        containers[0].id, container_id,
        "the running container is re-adopted"
    );

    object.stop(Signal::Term).await.expect("stop");
    let record = again
        .store()
        .load_object(ns.key(), &object.id().to_string())
        .await
        .expect("load")
        .expect("recorded");
    assert_eq!(record.state, State::Stopped);
    assert_eq!(record.name.as_deref(), Some("keeper"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_request_gives_502_with_the_exit_code() {
    let t = TestApp::new("crash").await;
    let hooks = Arc::new(Recorder::default());
    let ns = t.app.namespace(t.class("Crash").await, hooks.clone());
    let object = ns.get_by_name("fragile");
    let (status, _) = text(object.fetch(request("/ping")).await).await;
    assert_eq!(status, StatusCode::OK);

    let slow = {
        let object = object.clone();
        tokio::spawn(async move { text(object.fetch(request("/sleep/5000")).await).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = object.fetch(request("/exit/7")).await;
    let (status, body) = slow.await.expect("task");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("exited with code 7"), "{body}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            hooks.count("stop") == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hooks.count("stop"), 1, "{:?}", hooks.events());
    assert_eq!(hooks.count("error"), 1, "{:?}", hooks.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_container_stays_when_on_activity_expired_says_so() {
    struct KeepAwake;
    #[async_trait]
    impl Hooks for KeepAwake {
        async fn on_activity_expired(&self, _: &Object) -> berth::Expiry {
            berth::Expiry::KeepAwake
        }
    }
    let t = TestApp::new("keepawake").await;
    let mut class = t.class("Insomniac").await;
    class.sleep_after = Duration::from_millis(500);
    let ns = t.app.namespace(class, Arc::new(KeepAwake));
    let object = ns.get_by_name("x");
    let (status, _) = text(object.fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(object.state().await.expect("state"), State::Healthy);
    t.app.shutdown().await.expect("shutdown");
    assert_eq!(object.state().await.expect("state"), State::Stopped);
    let _ = StopReason::Shutdown;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let t = TestApp::new("stubborn").await;
    let mut class = t.class("Stubborn").await;
    class.env_vars.insert("IGNORE_SIGTERM".into(), "1".into());
    class.stop_grace = Duration::from_secs(1);
    let hooks = Arc::new(Recorder::default());
    let ns = t.app.namespace(class, hooks.clone());
    let object = ns.get_by_name("mule");
    let (status, _) = text(object.fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    object.stop(Signal::Term).await.expect("stop");
    assert_eq!(object.state().await.expect("state"), State::Stopped);
    assert!(t.containers().await.is_empty());
    assert!(
        eventually(Duration::from_secs(2), || async {
            hooks.count("stop") == 1
        })
        .await
    );
    assert_eq!(
        hooks.events().last().map(String::as_str),
        Some("stop 137 stop requested"),
        "SIGKILLed"
    );
}

/// An app that installs no SIGTERM handler (busybox `httpd`, a shell-script server)
/// ignores SIGTERM as PID 1. Under the init process berth runs by default it stops when
/// asked; without it, it is killed at the end of the grace period, and an event says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_a_sigterm_handler_stops_when_asked_under_the_init_process() {
    let t = TestApp::new("no-handler").await;
    let mut events = t.app.events();
    let mut with_init = t.class("WithInit").await;
    with_init
        .env_vars
        .insert("NO_SIGNAL_HANDLERS".into(), "1".into());
    with_init.stop_grace = Duration::from_secs(30);
    let mut without_init = with_init.clone();
    without_init.name = "WithoutInit".into();
    without_init.init = false;
    without_init.stop_grace = Duration::from_secs(1);

    for (class, code) in [(with_init, 143), (without_init, 137)] {
        let name = class.name.clone();
        let hooks = Arc::new(Recorder::default());
        let ns = t.app.namespace(class, hooks.clone());
        let object = ns.get_by_name("plain");
        let (status, _) = text(object.fetch(request("/")).await).await;
        assert_eq!(status, StatusCode::OK);
        object.stop(Signal::Term).await.expect("stop");
        assert!(
            eventually(Duration::from_secs(2), || async {
                hooks.count("stop") == 1
            })
            .await
        );
        assert_eq!(
            hooks.events().last().cloned(),
            Some(format!("stop {code} stop requested")),
            "{name}: 143 is SIGTERM through the init process, 137 is SIGKILL"
        );
    }
    let mut killed = Vec::new();
    while let Ok(event) = events.try_recv() {
        if matches!(event.kind, berth::EventKind::Killed { .. }) {
            killed.push(event.class);
        }
    }
    assert_eq!(
        killed,
        ["WithoutInit"],
        "only the container without init needed SIGKILL"
    );
    assert!(t.containers().await.is_empty());
}

/// `standby = 2`: two containers start after the class's first; a new name is served by one
/// of them, which learns the name from berth's headers (never from a client's), and the
/// pool refills; the spares carry the standby label and go at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_name_is_served_by_a_standby_container_that_learns_its_name_from_headers() {
    let t = TestApp::new("standby").await;
    let mut class = t.class("Spare").await;
    class.standby = 2;
    class.max_instances = 4;
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    // The pool opens with the class's first start.
    let (status, _) = text(ns.get_by_name("primer").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    let spares = || async {
        let mut ids: Vec<String> = t
            .containers()
            .await
            .into_iter()
            .filter(|c| c.running && c.labels.get(labels::STANDBY).is_some_and(|v| v == "true"))
            .map(|c| c.id)
            .collect();
        ids.sort();
        ids
    };
    assert!(
        eventually(Duration::from_secs(60), || async {
            ns.standby_ready() == 2
        })
        .await,
        "two spares start and are ready after the class's first start"
    );
    let mut events = t.app.events();
    let before = spares().await;
    assert_eq!(before.len(), 2, "{before:?}");
    for info in t.containers().await {
        if before.contains(&info.id) {
            assert_eq!(info.identity.map(|i| i.object_name), Some(None));
        }
    }
    let name = "alpha/β";
    let mut spoofed = request("/headers");
    spoofed
        .headers_mut()
        .insert("berth-object-name", "mallory".parse().expect("header"));
    let (status, headers) = text(ns.get_by_name(name).fetch(spoofed).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.contains("berth-object-name: alpha%2F%CE%B2\n"),
        "{headers}"
    );
    assert!(!headers.contains("mallory"), "{headers}");
    let id = ns.id_from_name(name).to_string();
    assert!(
        headers.contains(&format!("berth-object-id: {id}\n")),
        "{headers}"
    );
    let assigned = loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an assigned event")
            .expect("events");
        if matches!(event.kind, berth::EventKind::Assigned { .. }) {
            break event;
        }
        assert!(
            !matches!(event.kind, berth::EventKind::Started { .. }),
            "no container was started for the request: {event}"
        );
    };
    assert!(
        before.contains(&assigned.container_id),
        "{assigned} {before:?}"
    );
    assert!(
        eventually(Duration::from_secs(60), || async {
            ns.standby_ready() == 2 && t.containers().await.len() == 4
        })
        .await,
        "the pool refills: the primer's, alpha's and two spares: {:?}",
        t.containers()
            .await
            .iter()
            .map(|c| (c.name.clone(), c.running))
            .collect::<Vec<_>>()
    );
    // `berth ps` shows the spares nobody took as such, and alpha's as alpha's.
    let rows = t.app.objects().await.expect("objects");
    let standby = rows.iter().filter(|r| r.state == "standby").count();
    assert_eq!(standby, 2, "{rows:?}");
    assert!(
        rows.iter().any(|r| r.name.as_deref() == Some(name)
            && r.state == "healthy"
            && r.container_id.as_deref() == Some(assigned.container_id.as_str())),
        "{rows:?}"
    );
    let metrics = t.app.metrics().encode().expect("metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("berth_instances{")
            && l.contains("state=\"standby\"")
            && l.ends_with(" 2")),
        "{metrics}"
    );
    // The name's container stays its own: the next request reaches the same one.
    let (_, first) = text(ns.get_by_name(name).fetch(request("/hit")).await).await;
    let (_, again) = text(ns.get_by_name(name).fetch(request("/hit")).await).await;
    assert_eq!((first.as_str(), again.as_str()), ("1", "2"));
    assert_eq!(t.app.shutdown().await.expect("shutdown"), 4);
    assert!(
        t.containers().await.is_empty(),
        "spares removed at shutdown"
    );
}
