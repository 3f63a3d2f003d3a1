//! Activity and sleep: requests in flight, abandoned requests, the idle deadline.

use std::time::Duration;

use berth::runtime::fake::Behaviour;
use http::StatusCode;
use tokio::time::{sleep, Instant};

use crate::fixture::*;

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
async fn a_request_the_container_never_answers_ends_at_request_timeout() {
    let f = Fixture::with(
        berth::runtime::fake::Behaviour::default(),
        |class| class.request_timeout = Duration::from_secs(30),
        berth::Store::in_memory().expect("store"),
    );
    let object = f.ns.get_by_name("alpha");
    let began = Instant::now();
    let (status, kind, body) = fetch(&object, "/hang").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(kind, "request-timeout");
    assert!(
        body.contains("did not answer on port 8080 within 30s"),
        "{body}"
    );
    assert!(Instant::now() - began < Duration::from_secs(31));
    assert_eq!(object.in_flight(), 0);
    sleep(SLEEP_AFTER + Duration::from_millis(1)).await;
    settle().await;
    assert!(f.fake.running().is_empty(), "it slept on time");
}

/// A request that waits for its container's start counts as in flight from the moment it
/// arrives: however long the start takes to be recorded (a state file that another
/// process holds), the new container does not fall asleep before it takes the request.
/// Real time, so that the sleep deadline passes while the store waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_does_not_sleep_before_the_request_that_started_it() {
    let dir =
        std::env::temp_dir().join(format!("berth-lifecycle-slow-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("state.db");
    let store = berth::Store::open(&path).expect("store");
    let f = Fixture::with(
        berth::runtime::fake::Behaviour::default(),
        |class| class.sleep_after = Duration::from_millis(50),
        store,
    );
    let object = f.ns.get_by_name("alpha");
    // The state file is held for 500 ms while the start records its progress.
    let mut locker = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); time.sleep(0.5); c.execute('COMMIT')")
        .arg(&path)
        .spawn()
        .expect("python3");
    let (status, kind, body) = fetch(&object, "/").await;
    let _ = locker.wait();
    assert_eq!(status, StatusCode::OK, "{kind}: {body}");
    assert_eq!(
        f.fake.created(),
        1,
        "the request was served by the container it started"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sleep_after = "never"`: a started container keeps running, however long it is idle.
#[tokio::test(start_paused = true)]
async fn a_class_that_never_sleeps_keeps_its_container_running() {
    let f = Fixture::with(
        Behaviour::default(),
        |class| class.sleep_after = berth::ContainerClass::NEVER,
        berth::Store::in_memory().expect("store"),
    );
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    sleep(Duration::from_secs(86400 * 400)).await;
    settle().await;
    assert_eq!(
        f.fake.running().len(),
        1,
        "still running after 400 idle days"
    );
    assert_eq!(f.hooks.calls(), ["alpha: start"]);
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    assert_eq!(f.fake.created(), 1, "the same container serves");
}
