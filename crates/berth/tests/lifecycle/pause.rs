//! `sleep_mode = "pause"` on paused time: an idle container is frozen instead of stopped,
//! a request thaws it with no new container, `pause_for` stops it, and `max_paused`
//! stops the longest-paused.

use std::time::Duration;

use berth::class::SleepMode;
use berth::runtime::fake::Behaviour;
use berth::{EventKind, State, Store};
use http::StatusCode;
use tokio::time::sleep;

use crate::fixture::*;

const PAUSE_FOR: Duration = Duration::from_secs(60);

fn paused_fixture(max_paused: Option<usize>) -> Fixture {
    Fixture::with(
        Behaviour::default(),
        |class| {
            class.sleep_mode = SleepMode::Pause;
            class.pause_for = PAUSE_FOR;
            class.max_paused = max_paused;
        },
        Store::in_memory().expect("store"),
    )
}

#[tokio::test(start_paused = true)]
async fn an_idle_container_is_paused_and_a_request_thaws_the_same_one() {
    let mut f = paused_fixture(None);
    let object = f.ns.get_by_name("alpha");
    let (status, _, _) = fetch(&object, "/").await;
    assert_eq!(status, StatusCode::OK);
    let id = f.fake.running()[0].clone();

    sleep(SLEEP_AFTER + Duration::from_millis(10)).await;
    settle().await;
    assert!(f.fake.is_paused(&id), "frozen, not stopped");
    assert_eq!(
        f.fake.running(),
        vec![id.clone()],
        "the container still exists"
    );
    assert_eq!(object.container_state(), Some(State::Paused));
    assert!(f.fake.signals(&id).is_empty(), "no stop signal for a pause");

    let (status, _, body) = fetch(&object, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok alpha"));
    assert!(!f.fake.is_paused(&id), "thawed");
    assert_eq!(f.fake.created(), 1, "no new container");
    assert_eq!(object.container_state(), Some(State::Healthy));
    let kinds: Vec<String> = f
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Paused { .. } => Some("paused".to_string()),
            EventKind::Thawed { .. } => Some("thawed".to_string()),
            EventKind::Stopped { .. } => Some("stopped".to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["paused", "thawed"]);
    assert!(
        !f.hooks.calls().iter().any(|c| c.contains("stop")),
        "on_stop is not called for a pause"
    );
}

#[tokio::test(start_paused = true)]
async fn a_container_paused_for_pause_for_is_stopped() {
    let f = paused_fixture(None);
    let object = f.ns.get_by_name("beta");
    fetch(&object, "/").await;
    let id = f.fake.running()[0].clone();
    sleep(SLEEP_AFTER + Duration::from_millis(10)).await;
    settle().await;
    assert!(f.fake.is_paused(&id));
    sleep(PAUSE_FOR - Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(
        f.fake.running(),
        vec![id.clone()],
        "still paused just before pause_for"
    );
    sleep(Duration::from_secs(2) + GRACE).await;
    settle().await;
    assert!(f.fake.running().is_empty(), "stopped after pause_for");
    assert_eq!(object.container_state(), None, "it owns no container");
    assert_eq!(
        f.hooks.calls(),
        ["beta: start", "beta: stop (slept after idle)"]
    );
}

#[tokio::test(start_paused = true)]
async fn one_pause_beyond_max_paused_stops_the_longest_paused() {
    let f = paused_fixture(Some(1));
    let first = f.ns.get_by_name("first");
    fetch(&first, "/").await;
    sleep(Duration::from_secs(1)).await;
    let second = f.ns.get_by_name("second");
    fetch(&second, "/").await;
    sleep(SLEEP_AFTER + Duration::from_millis(10)).await;
    settle().await;
    sleep(GRACE).await;
    settle().await;
    assert_eq!(first.container_state(), None, "the longest-paused went");
    assert_eq!(second.container_state(), Some(State::Paused));
    assert_eq!(f.fake.running().len(), 1);
}
