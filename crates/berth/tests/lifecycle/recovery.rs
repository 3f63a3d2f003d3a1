//! Re-adopting the containers of an earlier berth process.

use std::task::Poll;
use std::time::Duration;

use berth::runtime::fake::{Behaviour, FakeRuntime};
use berth::{EventKind, Store};
use http::StatusCode;
use tokio::time::sleep;

use crate::fixture::*;

/// A container that an earlier session left running, as its store recorded it.
async fn leftover(fixture: &Fixture, store: &Store) -> String {
    let identity = left_identity(fixture, "alpha");
    left_behind(fixture, store, identity, Some("alpha")).await
}

#[tokio::test(start_paused = true)]
async fn a_healthy_leftover_is_readopted_and_serves() {
    let (fake, store) = (FakeRuntime::new(), Store::in_memory().expect("store"));
    let f = Fixture::on(fake.clone(), Behaviour::default(), |_| {}, store.clone());
    let container = leftover(&f, &store).await;
    let recovery = f.app.recover().await.expect("recover");
    assert_eq!((recovery.adopted, recovery.removed), (1, 0));
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    assert_eq!(
        fake.running(),
        [container],
        "the same container, no second one"
    );
    assert_eq!(fake.created(), 1);
}

/// A `recover` whose caller goes away just after it re-adopted a container leaves that
/// container watched: its exit is noticed, and a destroy ends it.
#[tokio::test(start_paused = true)]
async fn an_abandoned_recover_leaves_no_container_unwatched() {
    let (fake, store) = (FakeRuntime::new(), Store::in_memory().expect("store"));
    let mut f = Fixture::on(fake.clone(), Behaviour::default(), |_| {}, store.clone());
    leftover(&f, &store).await;
    let app = f.app.clone();
    let mut recovering = Box::pin(app.recover());
    let mut adopted = false;
    for _ in 0..1000 {
        if let Poll::Ready(r) = futures_util::poll!(recovering.as_mut()) {
            panic!("recover finished before the test could abandon it: {r:?}");
        }
        adopted |= f
            .events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::Adopted));
        if adopted {
            break;
        }
        sleep(Duration::from_millis(1)).await;
    }
    assert!(adopted);
    drop(recovering);
    let object = f.ns.get_by_name("alpha");
    object.destroy().await.expect("destroy");
    settle().await;
    assert!(fake.running().is_empty());
    assert_eq!(f.hooks.calls(), ["alpha: stop (destroyed)"]);
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
}

/// Two sessions of an app with the same name on one engine (two copies of an app, two
/// people running the same example): the second leaves the first's containers alone, and
/// sees it, with or without containers.
#[tokio::test(start_paused = true)]
async fn the_containers_of_a_live_session_are_left_alone() {
    let fake = FakeRuntime::new();
    let first = Fixture::on(
        fake.clone(),
        Behaviour::default(),
        |_| {},
        Store::in_memory().expect("store"),
    );
    let second = Fixture::named(
        first.app.name(),
        fake.clone(),
        Behaviour::default(),
        |_| {},
        Store::in_memory().expect("store"),
    );
    let others = second.app.other_sessions().await.expect("list");
    assert_eq!(
        others.len(),
        1,
        "the first session, before it runs anything"
    );
    assert_eq!(
        (others[0].session.as_str(), others[0].containers),
        (first.app.session(), 0)
    );
    let object = first.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let recovery = second.app.recover().await.expect("recover");
    assert_eq!((recovery.adopted, recovery.removed), (0, 0));
    assert_eq!(recovery.others.len(), 1);
    assert!(recovery.others[0].here && recovery.others[0].containers == 1);
    assert_eq!(
        fake.running().len(),
        1,
        "the first session's container still runs"
    );
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
}
