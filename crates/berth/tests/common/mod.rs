//! Shared test harness: the test image, apps that clean up after themselves, a local
//! server in front of objects, and a small HTTP client. Everything runs against the real
//! Docker Engine.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use berth::runtime::Selector;
use berth::{App, Body, ContainerClass, DockerRuntime, Runtime, Store};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;

/// The static test server, built once per run into its own target folder.
fn test_server_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let target_dir = root.join("target/static");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "berth-test-server",
            "--target",
            &target,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .expect("cargo can run");
    assert!(status.success(), "building the static test server failed");
    target_dir.join(&target).join("release/berth-test-server")
}

static IMAGE: OnceCell<String> = OnceCell::const_new();

/// The tag of the `FROM scratch` test image, built (or found) once per test binary.
pub async fn image() -> String {
    IMAGE
        .get_or_init(|| async {
            let binary = tokio::task::spawn_blocking(test_server_binary)
                .await
                .expect("build thread");
            let bytes = std::fs::read(&binary).expect("test server binary");
            let digest = {
                use sha2::{Digest, Sha256};
                let hash = Sha256::digest(&bytes);
                hash.iter()
                    .take(6)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            };
            let tag = format!("berth-test-server:{digest}");
            let runtime = DockerRuntime::connect().await.expect("Docker Engine");
            let docker = runtime.docker();
            if docker.inspect_image(&tag).await.is_ok() {
                return tag;
            }
            let dockerfile = "FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n";
            let mut archive = tar::Builder::new(Vec::new());
            for (name, data, mode) in [
                ("Dockerfile", dockerfile.as_bytes(), 0o644),
                ("server", bytes.as_slice(), 0o755),
            ] {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_mode(mode);
                header.set_cksum();
                archive.append_data(&mut header, name, data).expect("tar");
            }
            let context = archive.into_inner().expect("tar");
            let options = bollard::query_parameters::BuildImageOptionsBuilder::new()
                .t(&tag)
                .rm(true)
                .build();
            let mut stream =
                docker.build_image(options, None, Some(bollard::body_full(context.into())));
            use futures_util::StreamExt;
            while let Some(step) = stream.next().await {
                let step = step.expect("image build");
                if let Some(error) = step.error_detail {
                    panic!("image build failed: {error:?}");
                }
            }
            tag
        })
        .await
        .clone()
}

/// An app with a unique name whose containers are all removed when it is dropped, even
/// when the test fails.
pub struct TestApp {
    pub app: App,
    pub name: String,
    pub dir: PathBuf,
}

impl TestApp {
    pub async fn new(test: &str) -> TestApp {
        let name = format!("t-{test}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("berth-tests/{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state dir");
        let app = open_app(&name, &dir).await;
        TestApp { app, name, dir }
    }

    /// A class of the test image with port 8080.
    pub async fn class(&self, name: &str) -> ContainerClass {
        let mut class = ContainerClass::new(name, image().await);
        class.default_port = Some(8080);
        class
    }

    /// The app's containers, running or not, as the engine lists them.
    pub async fn containers(&self) -> Vec<berth::runtime::ContainerInfo> {
        self.app
            .runtime()
            .list(&Selector::app(&self.name))
            .await
            .expect("list containers")
    }
}

pub async fn open_app(name: &str, dir: &std::path::Path) -> App {
    let runtime = DockerRuntime::connect()
        .await
        .expect("a running Docker Engine");
    let store = Store::open(dir.join("state.db")).expect("state store");
    App::new(name, Arc::new(runtime), store).expect("app")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let name = self.name.clone();
        let removed = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let runtime = DockerRuntime::connect().await.expect("Docker Engine");
                let left = runtime.list(&Selector::app(&name)).await.expect("list");
                for info in &left {
                    runtime.remove(&info.id).await.expect("remove");
                }
                left.len()
            })
        })
        .join();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Ok(n) = removed {
            if n > 0 && !std::thread::panicking() {
                eprintln!("cleanup removed {n} container(s) of {}", self.name);
            }
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) on 127.0.0.1, answering each request with `handler`.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A GET through a fresh connection; returns status, headers and body text.
pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    send(
        addr,
        Request::get(path)
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await
}

pub async fn send(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut request = request;
    if !request.headers().contains_key(http::header::HOST) {
        request
            .headers_mut()
            .insert(http::header::HOST, "localhost".parse().expect("host"));
    }
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// A request for `Object::fetch` with an empty body.
pub fn request(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// Reads a response body to text.
pub async fn text(response: Response<Body>) -> (StatusCode, String) {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
