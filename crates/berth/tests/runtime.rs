//! The Runtime contract, checked against the real Docker Engine. The checks take any
//! `&dyn Runtime`, so another engine (Podman's Docker API) can be held to the same.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use berth::runtime::{labels, ContainerSpec, Endpoint};
use berth::{DockerRuntime, Runtime, RuntimeError, Signal};

async fn spec(test: &str) -> ContainerSpec {
    ContainerSpec {
        name: format!("berth-runtime-{test}-{}", std::process::id()),
        image: common::image().await,
        env: BTreeMap::from([("MESSAGE".to_string(), "conformance".to_string())]),
        entrypoint: None,
        labels: BTreeMap::from([
            (
                labels::APP.to_string(),
                format!("t-runtime-{}", std::process::id()),
            ),
            (labels::SESSION.to_string(), test.to_string()),
        ]),
        ports: vec![8080],
        enable_internet: true,
        nano_cpus: 0,
        memory_bytes: 0,
    }
}

async fn lifecycle_contract(runtime: &dyn Runtime, spec: ContainerSpec) {
    let id = runtime.create(&spec).await.expect("create");
    let endpoint = runtime.start(&id).await.expect("start");
    let addr = endpoint.addr(8080).expect("port 8080 is reachable");
    assert!(
        matches!(endpoint, Endpoint::Bridge(_)),
        "bridge address by default"
    );

    let info = runtime.inspect(&id).await.expect("inspect");
    assert!(info.running);
    assert_eq!(info.name, spec.name);
    assert_eq!(info.labels[labels::SESSION], spec.labels[labels::SESSION]);
    assert_eq!(info.endpoint, Some(endpoint.clone()));

    let session = spec.labels[labels::SESSION].as_str();
    let listed = runtime
        .list(&[(labels::SESSION, session)])
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );

    // The server answers on the address the runtime gave.
    let answered = common::eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(answered, "the container's port opens on {addr}");
    let logs = runtime.logs(&id, 10).await.expect("logs");
    assert!(
        logs.iter().any(|l| l.contains("listening on 0.0.0.0:8080")),
        "{logs:?}"
    );

    let waiting = runtime.wait(&id);
    runtime.kill(&id, Signal::Term).await.expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the exit is reported")
        .expect("wait");
    assert_eq!((status.code, status.oom_killed), (0, false));
    runtime
        .kill(&id, Signal::Term)
        .await
        .expect("signalling an exited container is no error");

    runtime.remove(&id).await.expect("remove");
    runtime
        .remove(&id)
        .await
        .expect("removing twice is no error");
    assert!(matches!(
        runtime.inspect(&id).await,
        Err(RuntimeError::NotFound { .. })
    ));
}

async fn exit_code_contract(runtime: &dyn Runtime, mut spec: ContainerSpec) {
    spec.env.insert("PORT".into(), "bad".into());
    let id = runtime.create(&spec).await.expect("create");
    runtime.start(&id).await.expect("start");
    let status = tokio::time::timeout(Duration::from_secs(10), runtime.wait(&id))
        .await
        .expect("reported")
        .expect("wait");
    assert_eq!(status.code, 1);
    let info = runtime.inspect(&id).await.expect("inspect");
    assert!(!info.running);
    assert_eq!(info.exit.map(|e| e.code), Some(1));
    runtime.remove(&id).await.expect("remove");
}

async fn missing_image_contract(runtime: &dyn Runtime, mut spec: ContainerSpec) {
    spec.image = "berth-test/no-such-image:never".into();
    match runtime.create(&spec).await {
        Err(RuntimeError::ImageMissing { image }) => assert_eq!(image, spec.image),
        other => panic!("expected ImageMissing, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_meets_the_runtime_contract() {
    let runtime = DockerRuntime::connect()
        .await
        .expect("a running Docker Engine");
    lifecycle_contract(&runtime, spec("lifecycle").await).await;
    exit_code_contract(&runtime, spec("exit").await).await;
    missing_image_contract(&runtime, spec("missing").await).await;
}
