//! The proxy against the real Docker Engine: streaming bodies, WebSockets, headers, and
//! the ways berth can reach a container.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth::runtime::docker::INTERNAL_NETWORK;
use berth::{DockerRuntime, NoHooks, Reach, State, Store};
use bytes::Bytes;
use common::{request, serve, text, TestApp};
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;

/// Serves one object of `ns` on 127.0.0.1.
async fn front(ns: &berth::Namespace, name: &'static str) -> std::net::SocketAddr {
    let ns = ns.clone();
    serve(move |req| {
        let object = ns.get_by_name(name);
        async move { object.fetch(req).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_a_thousand_messages_both_ways() {
    let t = TestApp::new("ws").await;
    let ns = t.app.namespace(t.class("Sockets").await, Arc::new(NoHooks));
    let addr = front(&ns, "chat").await;

    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut socket, response) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .expect("upgrade through berth");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..1000 {
        let message = format!("message {i}");
        socket
            .send(Message::text(message.clone()))
            .await
            .expect("send");
        let echo = socket.next().await.expect("an answer").expect("a message");
        assert_eq!(echo, Message::text(message));
    }
    socket
        .send(Message::binary(vec![7u8; 70_000]))
        .await
        .expect("send binary");
    let echo = socket.next().await.expect("an answer").expect("a message");
    assert_eq!(echo.into_data().len(), 70_000);
    socket.close(None).await.expect("close");
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_keeps_a_container_awake_until_it_closes() {
    let t = TestApp::new("ws-awake").await;
    let mut class = t.class("Chatty").await;
    class.sleep_after = Duration::from_secs(1);
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let addr = front(&ns, "room").await;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .expect("upgrade");
    // Three times sleep_after, a message every 250 ms.
    for i in 0..12 {
        socket
            .send(Message::text(format!("{i}")))
            .await
            .expect("send");
        assert_eq!(
            socket.next().await.expect("answer").expect("message"),
            Message::text(format!("{i}"))
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let object = ns.get_by_name("room");
    assert_eq!(
        object.state().await.expect("state"),
        State::Healthy,
        "messages renewed the activity"
    );
    // Silence on an open socket: it is a request in flight, as in Cloudflare's library,
    // so the container stays awake.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        object.state().await.expect("state"),
        State::Healthy,
        "an open socket holds off sleep"
    );
    // Closed: the container goes to sleep.
    socket.close(None).await.expect("close");
    drop(socket);
    let slept = common::eventually(Duration::from_secs(10), || async {
        object.state().await.expect("state") == State::Stopped
    })
    .await;
    assert!(slept, "state is {}", object.state().await.expect("state"));
}

fn peak_memory_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_upload_streams_through_with_bounded_memory() {
    const CHUNK: usize = 256 * 1024;
    const TOTAL: u64 = 1 << 30;
    let t = TestApp::new("upload").await;
    let ns = t.app.namespace(t.class("Uploads").await, Arc::new(NoHooks));
    let addr = front(&ns, "sink").await;

    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let chunks = futures_util::stream::iter(
        (0..TOTAL / CHUNK as u64).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    let body = StreamBody::new(chunks);
    let request = Request::post("/echo")
        .header("host", "localhost")
        .body(body)
        .expect("request");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, TOTAL, "every byte came back");
    let peak = peak_memory_kib();
    assert!(
        peak < 400 * 1024,
        "memory stayed bounded: peak {peak} KiB for a 1 GiB body"
    );
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_header_is_kept_and_hop_by_hop_headers_are_not_forwarded() {
    let t = TestApp::new("host").await;
    let ns = t.app.namespace(t.class("Hosts").await, Arc::new(NoHooks));
    let addr = front(&ns, "h").await;
    let req = Request::get("/headers")
        .header("host", "example.test:8787")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _, body) = common::send(addr, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("host: example.test:8787"), "{body}");
    assert!(body.contains("x-kept: yes"), "{body}");
    assert!(!body.contains("x-hop"), "{body}");
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_are_bound_to_loopback_only() {
    let t = TestApp::new("loopback").await;
    let runtime = DockerRuntime::connect()
        .await
        .expect("engine")
        .with_reach(Reach::Loopback);
    let app = berth::App::new(
        &t.name,
        Arc::new(runtime),
        Store::in_memory().expect("store"),
    )
    .expect("app");
    let ns = app.namespace(t.class("Published").await, Arc::new(NoHooks));
    let (status, body) = text(ns.get_by_name("p").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let docker = DockerRuntime::connect().await.expect("engine");
    let containers = t.containers().await;
    assert_eq!(containers.len(), 1);
    let info = docker
        .docker()
        .inspect_container(&containers[0].id, None)
        .await
        .expect("inspect");
    let bindings = info
        .host_config
        .and_then(|h| h.port_bindings)
        .expect("published ports");
    assert!(!bindings.is_empty());
    for binding in bindings.values().flatten().flatten() {
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    }
    app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_internet_a_container_is_on_an_internal_network_and_still_served() {
    let t = TestApp::new("offline").await;
    let mut class = t.class("Offline").await;
    class.enable_internet = false;
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let (status, body) = text(ns.get_by_name("o").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let docker = DockerRuntime::connect().await.expect("engine");
    let network = docker
        .docker()
        .inspect_network(INTERNAL_NETWORK, None)
        .await
        .expect("network");
    assert_eq!(network.internal, Some(true));
    let containers = t.containers().await;
    let info = docker
        .docker()
        .inspect_container(&containers[0].id, None)
        .await
        .expect("inspect");
    let networks = info
        .network_settings
        .and_then(|n| n.networks)
        .expect("networks");
    assert_eq!(networks.keys().collect::<Vec<_>>(), vec![INTERNAL_NETWORK]);
    t.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_type_sets_cpu_and_memory_limits() {
    let t = TestApp::new("sized").await;
    let mut class = t.class("Sized").await;
    class.instance_type = Some(berth::InstanceType::named("basic").expect("basic"));
    let ns = t.app.namespace(class, Arc::new(NoHooks));
    let (status, _) = text(ns.get_by_name("s").fetch(request("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    let docker = DockerRuntime::connect().await.expect("engine");
    let containers = t.containers().await;
    let host = docker
        .docker()
        .inspect_container(&containers[0].id, None)
        .await
        .expect("inspect")
        .host_config
        .expect("host config");
    assert_eq!(host.nano_cpus, Some(250_000_000));
    assert_eq!(host.memory, Some(1024 * 1024 * 1024));
    t.app.shutdown().await.expect("shutdown");
}
