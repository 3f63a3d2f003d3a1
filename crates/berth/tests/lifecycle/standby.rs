//! The standby pool (`standby = N`) on paused time: spares start once the class has
//! started a container, a new name takes one with no start and learns its name from the
//! request, the pool refills, spares count against `max_instances`, follow the class's
//! version, are replaced when they exit, and are removed at shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use berth::runtime::fake::Behaviour;
use berth::runtime::Identity;
use berth::{EventKind, Signal, StartOptions, Store};
use http::StatusCode;
use tokio::time::sleep;

use crate::fixture::*;

/// Long enough for a spare to be created, started and found ready on the fake.
const FILLED: Duration = Duration::from_secs(1);

fn standby_fixture(standby: usize, max_instances: usize) -> Fixture {
    Fixture::with(
        Behaviour::default(),
        |class| {
            class.standby = standby;
            class.max_instances = max_instances;
        },
        Store::in_memory().expect("store"),
    )
}

/// A fixture whose pool has opened: the class's first start (of `primer`) opens it.
async fn opened(standby: usize, max_instances: usize, primer: &str) -> Fixture {
    let f = standby_fixture(standby, max_instances);
    sleep(FILLED).await;
    assert!(
        f.fake.running().is_empty(),
        "no spare before the class's first start"
    );
    assert_eq!(
        fetch(&f.ns.get_by_name(primer), "/").await.0,
        StatusCode::OK
    );
    sleep(FILLED).await;
    f
}

/// Stops `name`'s container and lets the pool take its slot.
async fn stop(f: &Fixture, name: &str) {
    f.ns.get_by_name(name)
        .stop(Signal::Term)
        .await
        .expect("stop");
    sleep(FILLED).await;
}

fn assigned(f: &mut Fixture) -> Vec<String> {
    f.events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Assigned { .. }))
        .map(|e| format!("{} {}", e.object, e.container_id))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_new_name_takes_a_ready_spare_and_the_pool_refills() {
    let mut f = opened(2, 5, "primer").await;
    let before = f.fake.running();
    assert_eq!(before.len(), 3, "the primer's and two spares");
    assert_eq!(f.fake.created(), 3);
    f.events();

    let object = f.ns.get_by_name("alpha");
    let (status, _, body) = fetch(&object, "/identity").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body, "started as \"\", told Some(\"alpha\")",
        "a spare starts with no name and learns it from the request"
    );
    let taken = assigned(&mut f);
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert!(
        before
            .iter()
            .any(|id| taken[0] == format!("\"alpha\" {id}")),
        "alpha runs in one of the spares: {taken:?} {before:?}"
    );
    assert_eq!(fetch(&object, "/").await.2, "ok alpha");

    sleep(FILLED).await;
    assert_eq!(
        f.fake.running().len(),
        4,
        "primer, alpha and two spares again"
    );
    assert_eq!(f.fake.created(), 4);
    assert_eq!(
        f.hooks.calls(),
        ["primer: start", "alpha: start"],
        "on_start once the spare is alpha's"
    );
}

#[tokio::test(start_paused = true)]
async fn spares_count_against_max_instances() {
    let mut f = opened(2, 2, "alpha").await;
    assert_eq!(
        f.fake.running().len(),
        2,
        "alpha and one spare: no room for two"
    );
    let (beta, gamma) = (f.ns.get_by_name("beta"), f.ns.get_by_name("gamma"));
    assert_eq!(fetch(&beta, "/").await.0, StatusCode::OK);
    sleep(FILLED).await;
    assert_eq!(f.fake.running().len(), 2, "no room for a third container");
    let (status, kind, _) = fetch(&gamma, "/").await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "max-instances")
    );
    assert_eq!(assigned(&mut f).len(), 1, "beta took the spare");

    // alpha and beta sleep: their slots go back to the pool, which refills.
    sleep(SLEEP_AFTER + FILLED).await;
    settle().await;
    assert_eq!(f.fake.running().len(), 2, "two new spares");
    assert_eq!(fetch(&gamma, "/").await.2, "ok gamma");
    assert_eq!(assigned(&mut f).len(), 1, "gamma took a new spare");
}

/// A new name that comes while a spare is being started waits for it, rather than get a
/// 503 for the slot the spare holds.
#[tokio::test(start_paused = true)]
async fn a_new_name_waits_for_a_spare_on_its_way() {
    let mut f = opened(1, 2, "alpha").await;
    assert_eq!(
        fetch(&f.ns.get_by_name("beta"), "/").await.0,
        StatusCode::OK
    );
    sleep(FILLED).await;
    assert_eq!(
        f.fake.running().len(),
        2,
        "alpha and beta: no room for a spare"
    );
    f.ns.get_by_name("alpha")
        .stop(Signal::Term)
        .await
        .expect("stop");
    settle().await;
    // alpha's slot went to a new spare, which is starting now.
    let (status, _, body) = fetch(&f.ns.get_by_name("gamma"), "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok gamma"));
    assert_eq!(
        assigned(&mut f).len(),
        2,
        "beta and gamma each took a spare"
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_with_options_of_its_own_makes_its_container_even_at_the_limit() {
    let mut f = opened(2, 2, "primer").await;
    stop(&f, "primer").await;
    let spares = f.fake.running();
    assert_eq!(spares.len(), 2, "two spares fill the class");
    f.events();
    let object = f.ns.get_by_name("alpha");
    let options = StartOptions {
        env_vars: BTreeMap::from([("MODE".to_string(), "special".to_string())]),
        ..StartOptions::default()
    };
    object
        .start_and_wait_for_ports(&[], options)
        .await
        .expect("start");
    let running = f.fake.running();
    assert_eq!(running.len(), 2, "a spare made room: {running:?}");
    assert!(
        running.iter().any(|id| !spares.contains(id)),
        "a container made for alpha, not a spare: {running:?}"
    );
    assert!(assigned(&mut f).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_new_version_replaces_the_spares() {
    let mut f = opened(2, 5, "primer").await;
    stop(&f, "primer").await;
    let old = f.fake.running();
    assert_eq!(old.len(), 2);
    let mut options = f.ns.options();
    options.env_vars.insert("RELEASE".into(), "2".into());
    f.ns.set_options(options);
    sleep(FILLED).await;
    settle().await;
    let new = f.fake.running();
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.iter().all(|id| !old.contains(id)), "{old:?} {new:?}");
    f.events();
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let taken = assigned(&mut f);
    assert!(
        new.iter().any(|id| taken == [format!("\"alpha\" {id}")]),
        "{taken:?}"
    );
}

/// Fewer spares wanted (a new `standby`), and the surplus goes.
#[tokio::test(start_paused = true)]
async fn a_lower_standby_removes_the_surplus() {
    let f = opened(3, 5, "primer").await;
    assert_eq!(f.fake.running().len(), 4);
    let mut options = f.ns.options();
    options.standby = 1;
    f.ns.set_options(options);
    sleep(FILLED).await;
    assert_eq!(f.fake.running().len(), 2, "the primer's and one spare");
    assert_eq!(f.fake.existing(), 2, "the surplus is removed");
}

#[tokio::test(start_paused = true)]
async fn a_spare_that_exits_is_removed_and_replaced() {
    let mut f = opened(1, 5, "primer").await;
    stop(&f, "primer").await;
    let first = f.fake.running();
    assert_eq!(first.len(), 1);
    f.events();
    f.fake.crash(&first[0], 3);
    // The pool backs off after a failure before it starts the next spare.
    sleep(Duration::from_secs(5)).await;
    settle().await;
    let now = f.fake.running();
    assert_eq!(now.len(), 1);
    assert_ne!(now, first);
    assert_eq!(f.fake.existing(), 1, "the exited spare was removed");
    let errors: Vec<String> = f
        .events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Error { .. }))
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("exited with code 3 before any object took it"),
        "{errors:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn spares_that_never_get_ready_are_retried_ever_more_slowly() {
    let f = Fixture::with(
        Behaviour {
            ready_after: None,
            ..Behaviour::default()
        },
        |class| {
            class.standby = 1;
            class.port_ready_timeout = Duration::from_secs(2);
        },
        Store::in_memory().expect("store"),
    );
    // The class's first start fails too, and opens the pool.
    let (status, _, _) = fetch(&f.ns.get_by_name("primer"), "/").await;
    assert_ne!(status, StatusCode::OK);
    let first = f.fake.created();
    sleep(Duration::from_secs(600)).await;
    settle().await;
    // Each try takes 2 s; the backoff doubles from 2 s up to 60 s.
    let tries = f.fake.created() - first;
    assert!((5..=16).contains(&tries), "{tries} tries in 10 minutes");
    assert!(f.fake.existing() <= 1, "failed spares are removed");
}

#[tokio::test(start_paused = true)]
async fn shutdown_removes_the_spares() {
    let f = opened(3, 5, "primer").await;
    assert_eq!(f.fake.running().len(), 4);
    let stopped = f.app.shutdown().await.expect("shutdown");
    assert_eq!(stopped, 4, "the primer's container and three spares");
    settle().await;
    assert_eq!(f.fake.existing(), 0);
}

/// A spare an earlier berth left, as the engine holds it: its own id, no name, and the
/// `standby` label. `owner` is the object the store records it for, if any.
async fn left_spare(f: &Fixture, store: &Store, owner: Option<&str>, serial: u8) -> String {
    let identity = Identity {
        object_id: f.ns.id_from_name(&format!("spare-{serial}")),
        object_name: None,
        version: f.ns.options().version(),
        standby: true,
        ..left_identity(f, "")
    };
    left_behind(f, store, identity, owner).await
}

/// A berth that restarts finds a spare an object took by the store's record, since the
/// spare's labels name no object, and re-adopts it; a spare nobody took is removed.
#[tokio::test(start_paused = true)]
async fn a_taken_spare_is_readopted_after_a_restart() {
    let store = Store::in_memory().expect("store");
    let f = Fixture::with(Behaviour::default(), |_| {}, store.clone());
    let taken = left_spare(&f, &store, Some("alpha"), 1).await;
    left_spare(&f, &store, None, 2).await;
    let recovery = f.app.recover().await.expect("recover");
    assert_eq!(
        (recovery.adopted, recovery.removed),
        (1, 1),
        "alpha's container is re-adopted; the spare nobody took is removed"
    );
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.2, "ok alpha");
    assert_eq!(f.fake.running(), [taken]);
    assert_eq!(f.fake.created(), 2, "no new container");
}
