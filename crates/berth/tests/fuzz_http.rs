//! Raw bytes at the router's socket: whatever a client sends, berth answers with HTTP or
//! closes, never panics, and keeps serving. No container is needed: the engine behind
//! this router is the in-memory fake, taken down, so every request that routes gets a 503.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth::router::{KeySource, PathPattern, Route, Router, Strategy, Target};
use berth::runtime::fake::FakeRuntime;
use berth::server::{serve_with, ServeOptions};
use berth::{App, Binding, ContainerClass, Env, NoHooks, Store};
use proptest::prelude::*;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static ANSWERED: AtomicUsize = AtomicUsize::new(0);
static EDITED: AtomicUsize = AtomicUsize::new(0);

/// A router on a background runtime, shared by every case.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let engine = FakeRuntime::new();
                engine.set_down(true);
                let app =
                    App::new("fuzz", engine, Store::in_memory().expect("store")).expect("app");
                let mut class = ContainerClass::new("Fuzz", "none");
                class.default_port = Some(8080);
                let mut env = Env::new();
                env.bind(
                    "APP",
                    Binding::Container(app.namespace(class, Arc::new(NoHooks))),
                );
                let route = |path: &str, target| Route {
                    path: PathPattern::parse(path).expect("pattern"),
                    binding: "APP".into(),
                    target,
                    strip_prefix: true,
                    start_only: false,
                    wake: true,
                    fallback: false,
                    keep_warm: false,
                };
                let routes = vec![
                    route("/u/:user/*", Target::From(KeySource::Path("user".into()))),
                    route("/h/*", Target::From(KeySource::Header("x-user".into()))),
                    route("/q/*", Target::From(KeySource::Query("user".into()))),
                    route("/c/*", Target::From(KeySource::Cookie("s".into()))),
                    route(
                        "/hash/*",
                        Target::Pool {
                            size: 3,
                            strategy: Strategy::Hash(KeySource::Header("x-user".into())),
                        },
                    ),
                    route(
                        "/lif/*",
                        Target::Pool {
                            size: 3,
                            strategy: Strategy::LeastInFlight,
                        },
                    ),
                    route("/fixed", Target::Fixed("container".into())),
                ];
                let router = Router::new(routes, &env).expect("router");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let options = ServeOptions {
                    header_read_timeout: Duration::from_secs(1),
                    ..ServeOptions::default()
                };
                serve_with(
                    listener,
                    Arc::new(router),
                    env,
                    std::future::pending(),
                    options,
                )
                .await;
            });
        });
        rx.recv().expect("server address")
    })
}

/// Sends `bytes` as a client would, and returns what came back. A client that closes
/// its side is taken as gone, so the connection stays open while an answer may come: the
/// client closes its side only once 100 ms passed with nothing back (an incomplete request,
/// which berth then drops), and stops reading 200 ms after the last bytes arrived.
fn exchange(bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(server()).expect("connect");
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let set = |stream: &TcpStream, ms| stream.set_read_timeout(Some(Duration::from_millis(ms)));
    set(&stream, 100).expect("timeout");
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                set(&stream, 200).expect("timeout");
            }
            Err(_) if answer.is_empty() => {
                let _ = stream.shutdown(Shutdown::Write);
                set(&stream, 5000).expect("timeout");
                let _ = stream.read_to_end(&mut answer);
                break;
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// An HTTP answer: HTTP/1.1, or HTTP/1.0 to a request an edit turned into HTTP/1.0.
fn is_http(answer: &str) -> bool {
    answer.starts_with("HTTP/1.1 ") || answer.starts_with("HTTP/1.0 ")
}

const VALID: &str = "GET /h/ping?user=a HTTP/1.1\r\nHost: x\r\nX-User: bob\r\nCookie: s=1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn random_bytes_get_http_or_a_close(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let answer = exchange(&bytes);
        prop_assert!(answer.is_empty() || is_http(&answer), "{answer:?}");
    }

    #[test]
    fn edited_requests_get_http_or_a_close(edits in proptest::collection::vec((0usize..200, any::<u8>()), 1..8)) {
        let mut bytes = VALID.as_bytes().to_vec();
        for (at, byte) in edits {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        let answer = exchange(&bytes);
        prop_assert!(answer.is_empty() || is_http(&answer), "{answer:?}");
        EDITED.fetch_add(1, Ordering::SeqCst);
        if !answer.is_empty() {
            ANSWERED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn edited_requests_are_mostly_answered_not_dropped() {
    // Run the edited cases first if this test runs alone.
    let mut runner = proptest::test_runner::TestRunner::new(config(300));
    let strategy = proptest::collection::vec((0usize..200, any::<u8>()), 1..4);
    let result = runner.run(&strategy, |edits| {
        let mut bytes = VALID.as_bytes().to_vec();
        for (at, byte) in edits {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        let answer = exchange(&bytes);
        EDITED.fetch_add(1, Ordering::SeqCst);
        if is_http(&answer) {
            ANSWERED.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    });
    assert!(result.is_ok());
    let (answered, edited) = (
        ANSWERED.load(Ordering::SeqCst),
        EDITED.load(Ordering::SeqCst),
    );
    eprintln!("edited requests: {answered} of {edited} answered with HTTP");
    assert!(answered * 2 > edited, "{answered} of {edited}");
}

#[test]
fn after_the_noise_berth_still_answers_and_never_panicked() {
    let answer = exchange(VALID.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("cannot reach the fake engine"), "{answer}");
    let answer = exchange(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = exchange(b"GET /h/x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[test]
fn too_many_or_too_large_headers_get_a_431() {
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = exchange(format!("GET /h/x HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let large = "a".repeat(70 * 1024);
    let answer =
        exchange(format!("GET /h/x HTTP/1.1\r\nHost: x\r\nX-User: {large}\r\n\r\n").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let answer = exchange(
        format!(
            "GET /fixed HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(48 * 1024)
        )
        .as_bytes(),
    );
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "48 KiB of headers pass: {answer}"
    );
}
