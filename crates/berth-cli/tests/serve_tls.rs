//! `berth serve` over HTTPS, and its control API on a unix socket, driven as a user
//! drives them: the real binary, a certificate made for localhost, a client that trusts
//! only that certificate, a deployed app, and the real Docker Engine.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The longest any one exchange with the server may take.
const LIMIT: Duration = Duration::from_secs(60);
/// The longest a handshake may take: less than the 30 s after which the server cuts off a
/// client stalled in its own, so a handshake that had to wait for a stalled one fails.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(15);

const APP: &str = r#"
[containers.app]
class_name = "App"
build = { context = ".", command = "cp @SERVER@ server" }

[containers.app.class]
default_port = 8080
env_vars = { MESSAGE = "over tls" }

[workers.web]
bindings = { APP = "app" }
routes = [{ path = "/*", binding = "APP", instance = { from = "header", name = "x-user" } }]
"#;

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("berth-serve-tls-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

fn token(data: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--print-token", "--data"])
        .arg(data)
        .output()
        .expect("berth runs");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files; the
/// certificate's PEM text too.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("a certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let pem = made.cert.pem();
    std::fs::write(&cert, &pem).expect("cert.pem");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("key.pem");
    (cert, key, pem)
}

/// A TLS client that trusts the one certificate given, and no other.
fn client(cert_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("the certificate's PEM");
    roots.add(cert).expect("a trusted root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect(
    tls: &tokio_rustls::TlsConnector,
    addr: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to berth");
    let name = ServerName::try_from("localhost").expect("a server name");
    tokio::time::timeout(HANDSHAKE_LIMIT, tls.connect(name, tcp))
        .await
        .expect("the handshake in time")
        .expect("a handshake with a certificate the client trusts")
}

/// Reads into `buf` until it holds `needle`, or the stream ends.
async fn read_until(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>, needle: &[u8]) {
    let found = |buf: &[u8]| buf.windows(needle.len()).any(|w| w == needle);
    let reading = async {
        let mut chunk = [0u8; 16 * 1024];
        while !found(buf) {
            let n = stream.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(LIMIT, reading)
        .await
        .expect("the answer in time");
}

/// One request on its own connection (`Connection: close`); the status and the body.
async fn exchange(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), head: &str) -> (u16, String) {
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut response))
        .await
        .expect("the answer in time")
        .expect("the whole answer, closed cleanly");
    parse(&String::from_utf8_lossy(&response))
}

fn parse(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// An app deployed to a `berth serve --tls-cert --tls-key`, reached over HTTPS: a plain
/// request, a body streamed both ways, a WebSocket; a client that stalls in its handshake
/// holds up no one; a plain HTTP client gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_served_over_https_with_streams_and_websockets() {
    let app = AppDir::new("tls", APP);
    let dir = scratch("tls");
    let data = dir.join("data");
    let (cert, key, cert_pem) = certificate(&dir);
    let registry = registry();
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
        "--control",
        "127.0.0.1:0",
        "--registry",
        &registry,
        "--data",
    ];
    let mut server = Berth::start(&args, &data);
    let public = server.line_after("Public on https://");
    let control = server.line_after("Control on http://");
    let token = token(&data);
    let berth = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .env("BERTH_SERVER", format!("http://{control}"))
            .env("BERTH_TOKEN", &token)
            .stdin(Stdio::null())
            .output()
            .expect("berth runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(0), "{args:?} failed:\n{stderr}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let out = berth(&["deploy", &app.dir.display().to_string()]);
    assert!(out.contains("is active"), "{out}");
    let host = format!("web.{}.localhost", app.name);
    let tls = client(&cert_pem);

    // A client stalled in its handshake: it sends nothing for the whole test.
    let stalled = tokio::net::TcpStream::connect(&public)
        .await
        .expect("connect");

    // A plain request.
    let mut stream = connect(&tls, &public).await;
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-User: a\r\nConnection: close\r\n\r\n");
    let (status, body) = exchange(&mut stream, &head).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "Hi, I'm a container and this is my message: over tls");
    let head = format!(
        "GET /sleep/300 HTTP/1.1\r\nHost: {host}\r\nX-User: a\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = exchange(&mut connect(&tls, &public).await, &head).await;
    assert_eq!((status, body.as_str()), (200, "slept 300"));
    // The app learns that its client came over HTTPS, and from where, whatever the
    // client claims.
    let head = format!(
        "GET /headers HTTP/1.1\r\nHost: {host}\r\nX-User: a\r\nX-Forwarded-Proto: gopher\r\nX-Forwarded-For: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = exchange(&mut connect(&tls, &public).await, &head).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(body.contains("cf-connecting-ip: 127.0.0.1"), "{body}");
    assert!(
        !body.contains("gopher") && !body.contains("6.6.6.6"),
        "{body}"
    );

    // A body streamed both ways: each piece comes back before the next is sent.
    let mut stream = connect(&tls, &public).await;
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nX-User: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut received = Vec::new();
    for piece in ["first-piece", "second-piece", "third-piece"] {
        let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
        stream.write_all(chunk.as_bytes()).await.expect("send");
        stream.flush().await.expect("flush");
        read_until(&mut stream, &mut received, piece.as_bytes()).await;
        let text = String::from_utf8_lossy(&received);
        assert!(text.contains(piece), "{piece} came back: {text:?}");
    }
    // A large piece, across many TLS records.
    let large = "x".repeat(512 * 1024);
    let chunk = format!("{:x}\r\n{large}\r\n0\r\n\r\n", large.len());
    stream.write_all(chunk.as_bytes()).await.expect("send");
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut received))
        .await
        .expect("the end in time")
        .expect("the whole answer, closed cleanly");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.200}");
    assert_eq!(text.matches('x').count(), large.len(), "the large piece");

    // A WebSocket.
    let stream = connect(&tls, &public).await;
    let mut request = format!("wss://{host}/ws")
        .into_client_request()
        .expect("a request");
    request
        .headers_mut()
        .insert("x-user", http::HeaderValue::from_static("a"));
    let (mut socket, response) =
        tokio::time::timeout(LIMIT, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("the upgrade in time")
            .expect("a WebSocket over TLS");
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..50 {
        let message = Message::text(format!("message {i}"));
        socket.send(message.clone()).await.expect("send");
        let echo = tokio::time::timeout(LIMIT, socket.next())
            .await
            .expect("an echo in time")
            .expect("an answer")
            .expect("a message");
        assert_eq!(echo, message);
    }
    socket
        .send(Message::binary(vec![7u8; 70_000]))
        .await
        .expect("send binary");
    let echo = tokio::time::timeout(LIMIT, socket.next())
        .await
        .expect("an echo in time")
        .expect("an answer")
        .expect("a message");
    assert_eq!(echo.into_data().len(), 70_000);
    socket.close(None).await.expect("close");
    drop(stalled);

    // Plain HTTP on the HTTPS port gets no answer.
    let mut plain = tokio::net::TcpStream::connect(&public)
        .await
        .expect("connect");
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-User: a\r\n\r\n");
    plain.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(LIMIT, plain.read_to_end(&mut answer))
        .await
        .expect("the connection closed in time");
    assert!(
        !String::from_utf8_lossy(&answer).contains("Hi, I'm a container"),
        "no app answers in plain text"
    );

    berth(&["destroy", "--app", &app.name, "--yes"]);
    assert!(app.containers().await.is_empty(), "no container is left");
    server.signal("TERM");
    assert_eq!(
        server.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        server.stderr()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Certificates and keys that cannot serve are refused before anything listens, each
/// with the file at fault and what to do.
#[test]
fn bad_certificates_and_keys_are_refused_with_the_file_at_fault() {
    let dir = scratch("bad-tls");
    let (cert, key, _) = certificate(&dir);
    let other = dir.join("other");
    std::fs::create_dir_all(&other).expect("folder");
    let (_, other_key, _) = certificate(&other);
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("junk");
    let missing = dir.join("missing.pem");
    let data = dir.join("data");
    let serve = |cert: &Path, key: &Path| {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--data",
        ];
        let (code, stderr) = run_to_end(&args, &data, &[]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(!stderr.contains("Public on"), "{stderr}");
        stderr
    };
    let stderr = serve(&missing, &key);
    assert!(
        stderr.contains(&format!(
            "cannot read the certificate file {}",
            missing.display()
        )) && stderr.contains("--tls-cert"),
        "{stderr}"
    );
    let stderr = serve(&junk, &key);
    assert!(
        stderr.contains(&format!("{} holds no certificate", junk.display())),
        "{stderr}"
    );
    let stderr = serve(&key, &cert);
    assert!(stderr.contains("may be swapped"), "{stderr}");
    let stderr = serve(&cert, &junk);
    assert!(
        stderr.contains(&format!("{} holds no private key", junk.display())),
        "{stderr}"
    );
    let stderr = serve(&cert, &other_key);
    assert!(
        stderr.contains(&format!(
            "the key {} does not belong to the certificate {}",
            other_key.display(),
            cert.display()
        )),
        "{stderr}"
    );

    // One flag without the other.
    let cert_arg = cert.display().to_string();
    let (code, stderr) = run_to_end(&["serve", "--tls-cert", &cert_arg, "--data"], &data, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 request over a unix socket; the status and the body.
fn unix_request(socket: &Path, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    parse(&response)
}

/// `--control unix:PATH`: a socket only its user may use, where a stale one was; the
/// token still applies; a second server is refused the socket; it is gone after exit.
#[test]
fn the_control_api_listens_on_a_unix_socket_of_mode_0600() {
    let dir = scratch("unix");
    let data = dir.join("data");
    let socket = dir.join("control.sock");
    // A socket file left behind by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("a stale socket"));
    assert!(socket.exists());

    let control = format!("unix:{}", socket.display());
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--control",
        &control,
        "--data",
    ];
    let mut server = Berth::start(&args, &data);
    server.line_after("Public on http://");
    assert_eq!(
        server.line_after("Control on unix:"),
        socket.display().to_string()
    );
    let meta = std::fs::metadata(&socket).expect("the socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "mode 0600");

    let (status, body) = unix_request(&socket, "/v1/health", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\":true"), "{body}");
    assert_eq!(unix_request(&socket, "/v1/apps", None).0, 401, "no token");
    let token = token(&data);
    let (status, body) = unix_request(&socket, "/v1/apps", Some(&token));
    assert_eq!((status, body.as_str()), (200, "[]"));
    // The client commands reach it there too.
    let env = [
        ("BERTH_SERVER", control.as_str()),
        ("BERTH_TOKEN", token.as_str()),
    ];
    let (code, stderr) = run_to_end(&["destroy", "--yes", "--app", "nothing"], &dir, &env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no app called nothing is deployed here"),
        "{stderr}"
    );

    // A second server may not take the socket from the first.
    let other = dir.join("other-data");
    let (code, stderr) = run_to_end(&args, &other, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another process listens on the control socket {}",
            socket.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        unix_request(&socket, "/v1/health", None).0,
        200,
        "the first server keeps its socket"
    );

    server.signal("TERM");
    assert_eq!(
        server.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        server.stderr()
    );
    assert!(!socket.exists(), "the socket is removed on exit");

    // A file that is no socket is left alone.
    std::fs::write(&socket, "mine").expect("a plain file");
    let (code, stderr) = run_to_end(&args, &data, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&socket).expect("kept"), "mine");
    let _ = std::fs::remove_dir_all(&dir);
}
