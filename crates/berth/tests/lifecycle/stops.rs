//! Stops of every kind, alone and racing a start, a sleep or a shutdown.

use std::time::Duration;

use berth::runtime::fake::Behaviour;
use berth::{EventKind, Signal, StartError, StartOptions, State, StopReason, Store};
use http::StatusCode;
use tokio::time::{sleep, Instant};

use crate::fixture::*;

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
    f.app.shutdown().await.expect("shutdown");
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

/// A start that waits for the object's previous container to exit, when the app shuts
/// down: the start goes no further, and nothing runs once `shutdown` has returned.
#[tokio::test(start_paused = true)]
async fn a_shutdown_ends_a_start_that_waits_for_the_previous_container() {
    let f = Fixture::with(
        Behaviour {
            term_exit: Some(Duration::from_secs(3)),
            ..Behaviour::default()
        },
        |class| class.sleep_after = Duration::from_secs(3600),
        Store::in_memory().expect("store"),
    );
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    // The container is asked to stop; it takes 3 s to exit.
    let stopping = tokio::spawn({
        let object = object.clone();
        async move { object.stop(Signal::Term).await }
    });
    settle().await;
    // A request arrives: its start waits for the old container to exit.
    let waiting = tokio::spawn({
        let object = object.clone();
        async move { fetch(&object, "/").await }
    });
    settle().await;
    f.app.shutdown().await.expect("shutdown");
    let left_running = f.fake.running();
    let _ = stopping.await;
    let (status, kind, _) = waiting.await.expect("join");
    settle().await;
    assert!(left_running.is_empty() && f.fake.running().is_empty());
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting-down")
    );
    assert_eq!(f.fake.created(), 1, "no second container");
    assert!(
        !f.hooks.calls().iter().any(|c| c.contains("error")),
        "{:?}",
        f.hooks.calls()
    );
}

/// The same with `destroy`: once it returns, nothing runs, whatever start was under way.
#[tokio::test(start_paused = true)]
async fn destroy_ends_a_start_that_waits_for_the_previous_container() {
    let f = Fixture::new(Behaviour {
        term_exit: Some(Duration::from_secs(3)),
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let stopping = tokio::spawn({
        let object = object.clone();
        async move { object.stop(Signal::Term).await }
    });
    settle().await;
    let waiting = tokio::spawn({
        let object = object.clone();
        async move { object.start(StartOptions::default()).await }
    });
    settle().await;
    object.destroy().await.expect("destroy");
    assert!(
        f.fake.running().is_empty(),
        "nothing runs once destroy returned"
    );
    let _ = stopping.await;
    let started = waiting.await.expect("join");
    assert!(
        matches!(
            started.as_ref().map_err(|e| &**e),
            Err(StartError::Interrupted { .. })
        ),
        "{started:?}"
    );
    settle().await;
    assert!(f.fake.running().is_empty());
    assert_eq!(f.fake.created(), 1);
}

/// A stop whose caller gives up while its state is being written (a handler whose client
/// went away, a timeout) still ends the container: the signal went out, and the monitor
/// knows when to send SIGKILL.
#[tokio::test(start_paused = true)]
async fn a_stop_whose_caller_gives_up_still_ends_the_container() {
    let dir = std::env::temp_dir().join(format!("berth-lifecycle-abandon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("state.db");
    let store = Store::open(&path).expect("store");
    let f = Fixture::with(
        Behaviour {
            term_exit: None,
            ..Behaviour::default()
        },
        |class| class.sleep_after = Duration::from_secs(3600),
        store,
    );
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let container = f.fake.running().pop().expect("running");
    // Another process holds the database a moment, so the stop's write takes a while.
    let mut locker = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(0.5); c.execute('COMMIT')")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let stdout = locker.stdout.as_mut().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
    assert_eq!(line.trim(), "locked");
    for _ in 0..3 {
        let abandoned = tokio::time::timeout(Duration::ZERO, object.stop(Signal::Term)).await;
        assert!(abandoned.is_err(), "the caller gave up");
        tokio::task::yield_now().await;
    }
    let _ = locker.wait();
    sleep(GRACE + Duration::from_secs(1)).await;
    settle().await;
    let signals = f.fake.signals(&container);
    assert_eq!(signals.first(), Some(&Signal::Term), "{signals:?}");
    assert_eq!(
        signals.last(),
        Some(&Signal::Kill),
        "SIGKILL after the grace: {signals:?}"
    );
    assert!(f.fake.running().is_empty());
    assert_eq!(object.state().await.expect("state"), State::Stopped);
    assert_eq!(
        fetch(&object, "/").await.0,
        StatusCode::OK,
        "and the next request starts it"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stop that ends a start under way counts the container it stopped.
#[tokio::test(start_paused = true)]
async fn stop_all_counts_the_start_it_interrupted() {
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
    assert_eq!(f.ns.stop_all(StopReason::Replaced).await, 1);
    let _ = start.await;
    settle().await;
    assert_eq!(f.fake.created(), 1);
    assert_eq!(f.hooks.calls(), ["alpha: stop (replaced by a new image)"]);
}

/// A forced sweep (a second Ctrl-C) removes containers outright, mid-start too: that is
/// berth's own doing, and it says so, not that the container crashed.
#[tokio::test(start_paused = true)]
async fn a_forced_sweep_is_not_taken_for_a_crash() {
    let mut f = Fixture::new(Behaviour {
        ready_after: Some(Duration::from_secs(10)),
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
    assert_eq!(f.app.sweep().await.expect("sweep"), 1);
    let error = start.await.expect("join").expect_err("swept");
    assert!(matches!(*error, StartError::Interrupted { .. }), "{error}");
    settle().await;
    assert_eq!(f.hooks.calls(), ["alpha: stop (shutdown)"], "no on_error");
    let errors: Vec<String> = f
        .events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Error { .. }))
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// A start that fails gives one error event, not two.
#[tokio::test(start_paused = true)]
async fn a_failed_start_is_reported_once() {
    let mut f = Fixture::new(Behaviour {
        ready_after: None,
        exit_after: Some((Duration::from_millis(500), 3)),
        ..Behaviour::default()
    });
    let object = f.ns.get_by_name("alpha");
    assert_eq!(
        fetch(&object, "/").await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    settle().await;
    let errors = f
        .events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Error { .. }))
        .count();
    assert_eq!(errors, 1);
    assert_eq!(f.hooks.calls(), ["alpha: error", "alpha: stop (exited)"]);
}

/// A rebuild replaces a container without cutting off the requests it serves: they
/// finish, then it stops; a request that arrives meanwhile waits for the new image.
#[tokio::test(start_paused = true)]
async fn a_replacement_lets_requests_in_flight_finish_and_new_ones_wait_for_the_new_image() {
    use berth::Runtime;
    let f = Fixture::new(Behaviour::default());
    f.fake.image("fake/app:2", Behaviour::default());
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let old = f.fake.running().pop().expect("running");
    let slow = tokio::spawn({
        let object = object.clone();
        async move { fetch(&object, "/sleep/3000").await }
    });
    sleep(Duration::from_millis(100)).await;
    f.ns.set_image("fake/app:2");
    let replacing = tokio::spawn({
        let ns = f.ns.clone();
        async move { ns.replace_all(Duration::from_secs(10)).await }
    });
    sleep(Duration::from_millis(100)).await;
    let fresh = tokio::spawn({
        let object = object.clone();
        async move { fetch(&object, "/").await }
    });
    let (status, kind, body) = slow.await.expect("join");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "slept 3000 ms"),
        "{kind}"
    );
    assert_eq!(replacing.await.expect("join"), 1);
    assert_eq!(fresh.await.expect("join").0, StatusCode::OK);
    assert_eq!(f.fake.signals(&old), [Signal::Term]);
    let running = f.fake.running();
    assert_eq!(running.len(), 1);
    let info = f.fake.inspect(&running[0]).await.expect("inspect");
    assert_eq!(info.image, "fake/app:2");
    settle().await;
    assert!(f
        .hooks
        .calls()
        .contains(&"alpha: stop (replaced by a new image)".to_string()));
}

/// A deployment that changes only the options (here an environment variable) makes the
/// running container outdated, as a new image does: it is replaced, and the new one
/// carries the new version.
#[tokio::test(start_paused = true)]
async fn changed_options_replace_the_containers_of_the_older_version() {
    use berth::Runtime;
    let f = Fixture::new(Behaviour::default());
    let object = f.ns.get_by_name("alpha");
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let old = f.fake.running().pop().expect("running");
    let old_version = f.fake.inspect(&old).await.expect("inspect").identity;
    let mut options = f.ns.options();
    assert_eq!(
        f.ns.replace_all(Duration::from_secs(1)).await,
        0,
        "nothing changed yet"
    );
    options.env_vars.insert("MESSAGE".into(), "v2".into());
    f.ns.set_options(options.clone());
    assert_eq!(f.ns.replace_all(Duration::from_secs(1)).await, 1);
    assert_eq!(fetch(&object, "/").await.0, StatusCode::OK);
    let new = f.fake.running().pop().expect("running");
    assert_ne!(new, old);
    let identity = f
        .fake
        .inspect(&new)
        .await
        .expect("inspect")
        .identity
        .expect("identity");
    assert_eq!(identity.version, options.version());
    assert_ne!(Some(identity.version), old_version.map(|i| i.version));
}

/// An object's volumes stay through a stop, and go with `destroy()`.
#[tokio::test(start_paused = true)]
async fn destroy_removes_the_objects_volumes_and_a_stop_keeps_them() {
    use berth::runtime::{Runtime as _, Selector};
    let f = Fixture::with(
        Behaviour::default(),
        |class| class.volumes = vec!["/data".into(), "/cache".into()],
        Store::in_memory().expect("store"),
    );
    let alpha = f.ns.get_by_name("alpha");
    let beta = f.ns.get_by_name("beta");
    for object in [&alpha, &beta] {
        assert_eq!(fetch(object, "/").await.0, StatusCode::OK);
    }
    let app = Selector::app(f.app.name());
    let owner = f.app.store().owner().to_string();
    let volumes = f.fake.volumes(&app, &owner).await.expect("volumes");
    assert_eq!(volumes.len(), 4, "{volumes:?}");
    alpha.stop(Signal::Term).await.expect("stop");
    assert_eq!(
        f.fake.volumes(&app, &owner).await.expect("volumes").len(),
        4
    );
    alpha.destroy().await.expect("destroy");
    let left = f.fake.volumes(&app, &owner).await.expect("volumes");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left
        .iter()
        .all(|v| v.object_name.as_deref() == Some("beta")));
    // Another berth's volumes (another store) are none of this one's business.
    assert!(f
        .fake
        .volumes(&app, "someone-else")
        .await
        .expect("volumes")
        .is_empty());
}
