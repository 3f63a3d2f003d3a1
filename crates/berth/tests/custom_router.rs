//! The custom-router example serves real requests through real containers.

mod common;

#[path = "../examples/custom_router.rs"]
#[allow(dead_code)]
mod example;

use std::sync::Arc;
use std::time::Duration;

use berth::runtime::docker::labels;
use berth::worker::worker_fn;
use berth::NoHooks;
use berth::{Binding, Env};
use common::{get, TestApp};
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_router_uses_get_container_get_random_and_switch_port() {
    let t = TestApp::new("custom-router").await;
    let namespace = t.app.namespace(
        example::my_container(&common::image().await),
        Arc::new(NoHooks),
    );
    let mut env = Env::new();
    env.bind("MY_CONTAINER", Binding::Container(namespace.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(berth::server::serve(
        listener,
        Arc::new(worker_fn(example::fetch)),
        env,
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(5),
    ));

    let (status, _, body) = get(addr, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "Hi, I'm a container and this is my message: I was passed in via the container class!"
    );
    let (status, _, body) = get(addr, "/admin/port").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "9000"),
        "switch_port sent it to 9000"
    );
    for _ in 0..12 {
        let (status, _, body) = get(addr, "/lb/ping").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "pong"));
    }
    let names: Vec<String> = t
        .containers()
        .await
        .into_iter()
        .map(|c| c.labels[labels::OBJECT_NAME].clone())
        .collect();
    assert!(names.contains(&"container".to_string()), "{names:?}");
    assert!(
        names.iter().filter(|n| n.starts_with("instance-")).count() >= 2,
        "random spreads over the pool: {names:?}"
    );
    assert!(names
        .iter()
        .all(|n| n == "container"
            || ["instance-0", "instance-1", "instance-2"].contains(&n.as_str())));

    let _ = stop_tx.send(());
    server.await.expect("server");
    t.app.shutdown().await.expect("shutdown");
    assert!(t.containers().await.is_empty());
}
