//! The Runtime contract. The checks take any `&dyn Runtime`: the real Docker Engine is
//! held to all of them (and another engine that speaks its API could be), and the
//! in-memory fake that drives the lifecycle tests is held to the engine-neutral part, so
//! that it cannot drift from what a real engine does.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use berth::runtime::docker::labels;
use berth::runtime::fake::{Behaviour, FakeRuntime};
use berth::runtime::{ContainerSpec, Endpoint, Identity, Selector};
use berth::{DockerRuntime, ObjectId, Runtime, RuntimeError, Signal};

fn identity(test: &str, object: &str) -> Identity {
    Identity {
        app: format!("t-runtime-{}", std::process::id()),
        class: "Contract".into(),
        object_id: ObjectId::parse_hex(&format!("{:0>64}", hex(object))).expect("an id"),
        object_name: Some(object.to_string()),
        session: test.to_string(),
        host: "contract-host".into(),
        version: String::new(),
        standby: false,
    }
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn spec(image: &str, test: &str, object: &str) -> ContainerSpec {
    ContainerSpec {
        identity: identity(test, object),
        image: image.to_string(),
        env: BTreeMap::from([("MESSAGE".to_string(), "conformance".to_string())]),
        entrypoint: None,
        labels: BTreeMap::from([("team".to_string(), "web".to_string())]),
        ports: vec![8080],
        egress: berth::egress::Policy::open(),
        init: true,
        stop_grace: std::time::Duration::from_secs(10),
        nano_cpus: 0,
        memory_bytes: 0,
        volumes: Vec::new(),
    }
}

/// What every engine must do, whatever it is.
async fn neutral_contract(runtime: &dyn Runtime, image: &str) {
    let spec = spec(image, "neutral", "alpha");
    let created = runtime.create(&spec).await.expect("create");
    let endpoint = runtime.start(&created.id).await.expect("start");
    assert!(endpoint.reaches(8080), "{endpoint:?}");

    let info = runtime.inspect(&created.id).await.expect("inspect");
    assert!(info.running);
    assert_eq!(info.name, created.name);
    assert_eq!(
        info.identity.as_ref(),
        Some(&spec.identity),
        "identity reads back"
    );
    assert_eq!(info.image, spec.image);

    let mine = Selector::app(&spec.identity.app).session("neutral");
    let listed = runtime.list(&mine).await.expect("list");
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![created.id.as_str()]
    );
    let other = Selector::app(&spec.identity.app).session("someone-else");
    assert!(runtime.list(&other).await.expect("list").is_empty());
    let by_object = Selector::app(&spec.identity.app).object(spec.identity.object_id);
    assert_eq!(runtime.list(&by_object).await.expect("list").len(), 1);

    // The port answers, through whatever the endpoint is.
    let answered = common::eventually(Duration::from_secs(5), || {
        let endpoint = endpoint.clone();
        async move { endpoint.connect(8080).await.is_ok() }
    })
    .await;
    assert!(answered, "the container's port opens");

    let waiting = runtime.wait(&created.id);
    runtime
        .kill(&created.id, Signal::Term)
        .await
        .expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the exit is reported")
        .expect("wait");
    assert_eq!((status.code, status.oom_killed), (0, false));
    runtime
        .kill(&created.id, Signal::Term)
        .await
        .expect("signalling an exited container is no error");

    runtime.remove(&created.id).await.expect("remove");
    runtime
        .remove(&created.id)
        .await
        .expect("removing twice is no error");
    assert!(matches!(
        runtime.inspect(&created.id).await,
        Err(RuntimeError::NotFound { .. })
    ));

    let mut missing = spec.clone();
    missing.image = "berth-test/no-such-image:never".into();
    match runtime.create(&missing).await {
        Err(RuntimeError::ImageMissing { image, .. }) => assert_eq!(image, missing.image),
        other => panic!("expected ImageMissing, got {other:?}"),
    }
}

/// What the Docker Engine does beyond that: bridge addresses, labels, logs, exit codes.
async fn docker_contract(runtime: &DockerRuntime, image: &str) {
    let spec = spec(image, "docker", "beta");
    let created = runtime.create(&spec).await.expect("create");
    let endpoint = runtime.start(&created.id).await.expect("start");
    assert!(
        matches!(endpoint, Endpoint::Bridge(_)),
        "bridge address by default"
    );
    let info = runtime.inspect(&created.id).await.expect("inspect");
    assert_eq!(info.labels[labels::SESSION], "docker");
    assert_eq!(info.labels[labels::OBJECT_NAME], "beta");
    assert_eq!(info.labels["team"], "web", "the class's own labels");
    assert!(
        created.name.starts_with("berth-t-runtime-"),
        "{}",
        created.name
    );
    let addr = endpoint.addr(8080).expect("port 8080 is reachable");
    let answered = common::eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(answered, "the container's port opens on {addr}");
    let logs = runtime.logs(&created.id, 10).await.expect("logs");
    assert!(
        logs.iter().any(|l| l.contains("listening on 0.0.0.0:8080")),
        "{logs:?}"
    );
    runtime.remove(&created.id).await.expect("remove");

    let mut failing = spec.clone();
    failing.env.insert("PORT".into(), "bad".into());
    let created = runtime.create(&failing).await.expect("create");
    runtime.start(&created.id).await.expect("start");
    let status = tokio::time::timeout(Duration::from_secs(10), runtime.wait(&created.id))
        .await
        .expect("reported")
        .expect("wait");
    assert_eq!(status.code, 1);
    let info = runtime.inspect(&created.id).await.expect("inspect");
    assert!(!info.running);
    assert_eq!(info.exit.map(|e| e.code), Some(1));
    runtime.remove(&created.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_meets_the_runtime_contract() {
    let runtime = DockerRuntime::connect()
        .await
        .expect("a running Docker Engine");
    let image = common::image().await;
    neutral_contract(&runtime, &image).await;
    docker_contract(&runtime, &image).await;
}

#[tokio::test]
async fn the_fake_meets_the_engine_neutral_contract() {
    let fake = FakeRuntime::new();
    fake.image("fake/app:1", Behaviour::default());
    neutral_contract(fake.as_ref(), "fake/app:1").await;
}
