//! An object's alarms (`Object::schedule`) on paused time: delivered when due, retried
//! with backoff, kept in the store across a restart, listed and deleted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use berth::cron::Clock;
use berth::runtime::fake::{Behaviour, FakeRuntime};
use berth::{Alarm, App, ContainerClass, Hooks, Object, Store};

use crate::fixture::IMAGE;

/// Writes down each alarm it gets, with the time on the app's clock; fails the first
/// `failures` of them.
struct Alarms {
    clock: Clock,
    /// How long each delivery takes.
    delay: Mutex<Duration>,
    failures: Mutex<usize>,
    seen: Mutex<Vec<(String, String, Duration)>>,
}

#[async_trait]
impl Hooks for Alarms {
    async fn on_alarm(&self, object: &Object, alarm: &Alarm) -> Result<(), String> {
        let delay = *self.delay.lock().expect("delay");
        tokio::time::sleep(delay).await;
        let since = self
            .clock
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let name = object.name().unwrap_or("?").to_string();
        self.seen
            .lock()
            .expect("seen")
            .push((name, alarm.payload.clone(), since));
        let mut failures = self.failures.lock().expect("failures");
        if *failures > 0 {
            *failures -= 1;
            return Err("the report server is down".into());
        }
        Ok(())
    }
}

fn app(
    name: &str,
    store: Store,
    clock: Clock,
    failures: usize,
) -> (App, Arc<Alarms>, berth::Namespace) {
    let fake = FakeRuntime::new();
    fake.image(IMAGE, Behaviour::default());
    let app = App::new(name, fake, store).expect("app");
    app.use_clock(clock);
    let hooks = Arc::new(Alarms {
        clock,
        delay: Mutex::new(Duration::ZERO),
        failures: Mutex::new(failures),
        seen: Mutex::default(),
    });
    let ns = app.namespace(ContainerClass::new("Reporter", IMAGE), hooks.clone());
    (app, hooks, ns)
}

fn seen(hooks: &Alarms, start: SystemTime) -> Vec<(String, String, u64)> {
    let start = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    hooks
        .seen
        .lock()
        .expect("seen")
        .iter()
        .map(|(name, payload, at)| (name.clone(), payload.clone(), (*at - start).as_secs()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_alarm_is_delivered_when_due_and_then_forgotten() {
    let clock = Clock::tokio();
    let start = clock.now();
    let (_app, hooks, ns) = app("alarms-due", Store::in_memory().expect("store"), clock, 0);
    let alice = ns.get_by_name("alice");
    let later = alice
        .schedule(start + Duration::from_secs(30), "later")
        .await
        .expect("schedule");
    let sooner = alice
        .schedule(start + Duration::from_secs(10), "sooner")
        .await
        .expect("schedule");
    let listed: Vec<String> = alice
        .list_schedules()
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.payload)
        .collect();
    assert_eq!(listed, ["sooner", "later"], "soonest first");
    assert_eq!((later.payload.as_str(), later.attempts), ("later", 0));

    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(seen(&hooks, start).is_empty(), "not before it is due");
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(
        seen(&hooks, start),
        [
            ("alice".to_string(), "sooner".to_string(), 10),
            ("alice".to_string(), "later".to_string(), 30)
        ]
    );
    assert!(
        alice.list_schedules().await.expect("list").is_empty(),
        "delivered alarms are gone"
    );
    assert!(!alice.delete_schedule(&sooner.id).await.expect("delete"));
}

#[tokio::test(start_paused = true)]
async fn a_deleted_alarm_never_comes_and_a_failing_one_is_retried_with_backoff() {
    let clock = Clock::tokio();
    let start = clock.now();
    let (_app, hooks, ns) = app("alarms-retry", Store::in_memory().expect("store"), clock, 2);
    let bob = ns.get_by_name("bob");
    let dropped = bob
        .schedule(start + Duration::from_secs(5), "dropped")
        .await
        .expect("schedule");
    assert!(bob.delete_schedule(&dropped.id).await.expect("delete"));
    bob.schedule(start + Duration::from_secs(10), "report")
        .await
        .expect("schedule");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let times: Vec<(String, u64)> = seen(&hooks, start)
        .into_iter()
        .map(|(_, p, t)| (p, t))
        .collect();
    assert_eq!(
        times,
        [
            ("report".to_string(), 10),
            ("report".to_string(), 11),
            ("report".to_string(), 13)
        ],
        "failed twice: again after 1 s, then after 2 s"
    );
    assert!(bob.list_schedules().await.expect("list").is_empty());
}

#[tokio::test(start_paused = true)]
async fn alarms_are_kept_across_a_restart_and_one_due_meanwhile_comes_at_once() {
    let dir = std::env::temp_dir().join(format!("berth-alarms-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("state.db");
    let _ = std::fs::remove_file(&path);
    let clock = Clock::tokio();
    let start = clock.now();
    {
        let (app, _, ns) = app(
            "alarms-restart",
            Store::open(&path).expect("store"),
            clock,
            0,
        );
        ns.get_by_name("carol")
            .schedule(start + Duration::from_secs(20), "kept")
            .await
            .expect("schedule");
        drop(ns);
        app.shutdown().await.expect("shutdown");
    }
    // Berth is down past the alarm's time.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let (_app, hooks, _ns) = app(
        "alarms-restart",
        Store::open(&path).expect("store"),
        clock,
        0,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        seen(&hooks, start),
        [("carol".to_string(), "kept".to_string(), 40)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn an_alarm_that_keeps_failing_is_given_up_after_six_retries_with_an_error_event() {
    let clock = Clock::tokio();
    let start = clock.now();
    let (app, hooks, ns) = app(
        "alarms-give-up",
        Store::in_memory().expect("store"),
        clock,
        usize::MAX,
    );
    let mut events = app.events();
    let dave = ns.get_by_name("dave");
    dave.schedule(start, "doomed").await.expect("schedule");
    tokio::time::sleep(Duration::from_secs(600)).await;
    let times: Vec<u64> = seen(&hooks, start).into_iter().map(|(_, _, t)| t).collect();
    assert_eq!(
        times,
        [0, 1, 3, 7, 15, 31, 63],
        "the first try and six retries"
    );
    assert!(
        dave.list_schedules().await.expect("list").is_empty(),
        "then it is gone"
    );
    let mut errors = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let berth::EventKind::Error { message } = event.kind {
            errors.push(message);
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("failed 7 times and is given up: the report server is down"),
        "{errors:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_alarm_deleted_while_its_delivery_fails_is_not_brought_back() {
    let clock = Clock::tokio();
    let start = clock.now();
    let (_app, hooks, ns) = app(
        "alarms-delete-late",
        Store::in_memory().expect("store"),
        clock,
        1,
    );
    *hooks.delay.lock().expect("delay") = Duration::from_secs(2);
    let erin = ns.get_by_name("erin");
    let alarm = erin.schedule(start, "once").await.expect("schedule");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        erin.delete_schedule(&alarm.id).await.expect("delete"),
        "deleted mid-delivery"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        seen(&hooks, start).len(),
        1,
        "the failed delivery is not retried"
    );
    assert!(erin.list_schedules().await.expect("list").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slow_delivery_keeps_its_alarm_from_being_delivered_twice() {
    let clock = Clock::tokio();
    let start = clock.now();
    let (_app, hooks, ns) = app("alarms-slow", Store::in_memory().expect("store"), clock, 0);
    *hooks.delay.lock().expect("delay") = Duration::from_secs(7 * 60);
    ns.get_by_name("frank")
        .schedule(start, "slow")
        .await
        .expect("schedule");
    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    assert_eq!(
        seen(&hooks, start).len(),
        1,
        "one delivery, however long it takes"
    );
}
