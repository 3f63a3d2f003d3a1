//! Starts: shared, failed, and refused.

use std::time::Duration;

use berth::runtime::fake::Behaviour;
use berth::{Signal, StartError, StartOptions, State, Store};
use http::StatusCode;

use crate::fixture::*;

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

#[tokio::test(start_paused = true)]
async fn a_container_that_exits_before_it_has_an_address_is_reported_with_its_code() {
    let f = Fixture::new(Behaviour {
        exit_after: Some((Duration::ZERO, 2)),
        logs: vec!["no such file: /etc/app.conf".into()],
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    let (status, kind, body) = fetch(&object, "/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(kind, "exited-while-starting");
    assert!(
        body.contains("exited with code 2") && body.contains("/etc/app.conf"),
        "{body}"
    );
    assert_eq!(
        object.state().await.expect("state"),
        State::StoppedWithCode(2)
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_for_one_more_port_that_never_opens_leaves_a_healthy_container_serving() {
    let f = Fixture::with(
        Behaviour::default(),
        |class| class.port_ready_timeout = Duration::from_secs(1),
        Store::in_memory().expect("store"),
    );
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let error = object
        .start_and_wait_for_ports(&[9999], StartOptions::default())
        .await
        .expect_err("port 9999 never opens");
    assert!(
        matches!(*error, StartError::PortTimeout { port: 9999, .. }),
        "{error}"
    );
    assert_eq!(object.state().await.expect("state"), State::Healthy);
    assert_eq!(
        fetch(&object, "/").await.0,
        StatusCode::OK,
        "it still serves"
    );
    assert_eq!(f.fake.created(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_container_starts_once_the_app_shuts_down() {
    let f = Fixture::new(Behaviour::default());
    f.app.shutdown().await.expect("shutdown");
    let (status, kind, body) = fetch(&f.ns.get_by_name("late"), "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(kind, "shutting-down");
    assert_eq!(f.fake.created(), 0);
}

/// Names a client makes up, refused because the class is full, leave nothing behind: no
/// object in memory, no row in the store.
#[tokio::test(start_paused = true)]
async fn refused_names_leave_nothing_behind() {
    let f = Fixture::with(
        Behaviour::default(),
        |class| class.max_instances = 1,
        Store::in_memory().expect("store"),
    );
    assert_eq!(
        fetch(&f.ns.get_by_name("holder"), "/").await.0,
        StatusCode::OK
    );
    for i in 0..500 {
        let (status, kind, _) = fetch(&f.ns.get_by_name(&format!("visitor-{i}")), "/").await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "max-instances")
        );
    }
    settle().await;
    let live: Vec<_> =
        f.ns.objects()
            .iter()
            .map(|o| o.name().map(str::to_string))
            .collect();
    assert_eq!(
        live,
        [Some("holder".to_string())],
        "only the running object lives"
    );
    let rows = f.app.store().objects().await.expect("rows");
    assert_eq!(rows.len(), 1, "only the object that ran is recorded");
}

/// A deployment that lowers `max_instances` below what runs: the running containers go
/// on, and no new one starts until enough of them stopped to honour the new limit.
#[tokio::test(start_paused = true)]
async fn a_lower_max_instances_holds_once_enough_containers_stopped() {
    let f = Fixture::with(
        Behaviour::default(),
        |class| class.max_instances = 3,
        Store::in_memory().expect("store"),
    );
    for name in ["a", "b", "c"] {
        assert_eq!(fetch(&f.ns.get_by_name(name), "/").await.0, StatusCode::OK);
    }
    let mut options = f.ns.options();
    options.max_instances = 1;
    f.ns.set_options(options);
    assert_eq!(f.fake.running().len(), 3, "what runs goes on");
    f.ns.get_by_name("a")
        .stop(Signal::Term)
        .await
        .expect("stop");
    let (status, kind, _) = fetch(&f.ns.get_by_name("d"), "/").await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "max-instances"),
        "two still run"
    );
    for name in ["b", "c"] {
        f.ns.get_by_name(name)
            .stop(Signal::Term)
            .await
            .expect("stop");
    }
    settle().await;
    assert_eq!(fetch(&f.ns.get_by_name("d"), "/").await.0, StatusCode::OK);
    let (status, kind, _) = fetch(&f.ns.get_by_name("e"), "/").await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "max-instances"),
        "one at most"
    );
}
