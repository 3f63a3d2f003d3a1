//! `berth-test-server`: a tiny HTTP/1.1 + WebSocket server baked into berth's
//! `FROM scratch` test images.
//!
//! It runs as PID 1 inside a container, so it handles SIGTERM and SIGINT
//! itself and exits 0 on them. Its endpoints let integration tests observe
//! what the proxy in front of it did (headers, port, streaming bodies,
//! WebSocket upgrades) and make the container misbehave on demand
//! (slow start, slow answers, exit with a given code).
//!
//! `server echo-stdin CODE` runs once instead of serving: it writes its standard input
//! back, and exits with CODE (for the tests of `berth exec`).
//!
//! Configuration (environment variables):
//! - `PORT`: main port (default 8080), bound on 0.0.0.0.
//! - `EXTRA_PORTS`: comma separated list of additional ports, same handler.
//! - `STARTUP_DELAY_MS`: milliseconds to sleep before listening (default 0).
//! - `IGNORE_SIGTERM=1`: ignore SIGTERM, as an app that does not stop when asked.
//! - `NO_SIGNAL_HANDLERS=1`: install no signal handler at all, as busybox `httpd` or a
//!   shell-script server: as PID 1 such an app never sees SIGTERM; under an init process
//!   SIGTERM's default action ends it.
//! - `WORKERS`: server threads (default 1).
//! - `MESSAGE`: text appended to the `/` greeting.
//!
//! Endpoints: `/`, `/env`, `/ping`, `/exit/<code>`, `/sleep/<ms>`, `/alloc/<MiB>`, `/routes`,
//! `/connect/<ip:port>`, `/echo`, `/count`, `/drip`, `/say/<words>` (a line on stdout),
//! `/warming/<ms>` (503 until the process has run that long, then 200),
//! `/file/write/<name>/<text>` and `/file/read/<name>` (a file in `/data`),
//! `/hit` (counts) and `/hits` (tells the count), `/headers`, `/port`, `/ws`; anything else
//! is a 404.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Body = BoxBody<Bytes, hyper::Error>;

const GREETING: &str = "Hi, I'm a container and this is my message: ";

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("berth-test-server: {msg}");
    std::process::exit(1);
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|e| fail(format_args!("invalid {name}={v:?}: {e}"))),
        _ => default,
    }
}

fn ports() -> Vec<u16> {
    let mut ports = vec![env_parse("PORT", 8080u16)];
    if let Ok(extra) = std::env::var("EXTRA_PORTS") {
        for p in extra.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let port: u16 = p
                .parse()
                .unwrap_or_else(|e| fail(format_args!("invalid port {p:?} in EXTRA_PORTS: {e}")));
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    ports
}

/// One thread by default, as a small container; `WORKERS=N` gives benchmarks more.
/// When the process started, for `/warming/<ms>`.
static STARTED: OnceLock<Instant> = OnceLock::new();

fn main() {
    STARTED.get_or_init(Instant::now);
    // `server echo-stdin CODE`: what `berth exec` runs in the tests: standard input back
    // on standard output, a word on standard error, and the exit code asked for.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("echo-stdin") {
        let code = args.get(2).and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
        let mut input = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut input);
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &input);
        eprintln!("echo-stdin: {} bytes, exiting {code}", input.len());
        std::process::exit(code);
    }
    let workers = env_parse("WORKERS", 1usize);
    let runtime = if workers > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(serve_until_signalled()),
        Err(e) => fail(format_args!("cannot start the runtime: {e}")),
    }
}

async fn serve_until_signalled() {
    if std::env::var("NO_SIGNAL_HANDLERS").is_ok_and(|v| v == "1") {
        run().await;
        std::process::exit(0);
    }
    // Install the handlers first so that signals are honoured even during
    // the startup delay.
    let mut sigterm =
        signal(SignalKind::terminate()).unwrap_or_else(|e| fail(format_args!("SIGTERM: {e}")));
    let mut sigint =
        signal(SignalKind::interrupt()).unwrap_or_else(|e| fail(format_args!("SIGINT: {e}")));

    // IGNORE_SIGTERM=1 plays an app that does not stop when asked.
    let ignore_term = std::env::var("IGNORE_SIGTERM").is_ok_and(|v| v == "1");
    let server = run();
    tokio::pin!(server);
    loop {
        tokio::select! {
            _ = sigterm.recv() => {
                if !ignore_term {
                    break;
                }
                eprintln!("berth-test-server: ignoring SIGTERM");
            }
            _ = sigint.recv() => break,
            _ = &mut server => break,
        }
    }
    std::process::exit(0);
}

async fn run() {
    let ports = ports();
    let delay = env_parse("STARTUP_DELAY_MS", 0u64);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    let mut listeners = Vec::with_capacity(ports.len());
    for port in ports {
        let addr = format!("0.0.0.0:{port}");
        // A deep accept queue, so that bursts of connections are not dropped.
        let bound = tokio::net::TcpSocket::new_v4().and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(std::net::SocketAddr::from(([0, 0, 0, 0], port)))?;
            socket.listen(4096)
        });
        match bound {
            Ok(l) => listeners.push((port, l)),
            Err(e) => fail(format_args!("cannot bind {addr}: {e}")),
        }
        // The wall-clock time lets a benchmark see how soon berth noticed the port open.
        let at_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        eprintln!("berth-test-server: listening on {addr} at_ns={at_ns}");
    }

    let tasks: Vec<_> = listeners
        .into_iter()
        .map(|(port, listener)| tokio::spawn(accept_loop(port, listener)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

async fn accept_loop(port: u16, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // E.g. EMFILE: back off a little instead of spinning.
                eprintln!("berth-test-server: accept on port {port}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, port));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

async fn handle(req: Request<Incoming>, port: u16) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let res = match path.as_str() {
        "/" => {
            let msg = std::env::var("MESSAGE").unwrap_or_default();
            text(StatusCode::OK, format!("{GREETING}{msg}"))
        }
        "/env" => respond(StatusCode::OK, "application/json", env_json()),
        "/ping" => text(StatusCode::OK, "pong"),
        "/hit" => text(
            StatusCode::OK,
            (hits().fetch_add(1, Ordering::SeqCst) + 1).to_string(),
        ),
        "/hits" => text(StatusCode::OK, hits().load(Ordering::SeqCst).to_string()),
        "/port" => text(StatusCode::OK, port.to_string()),
        "/headers" => {
            let mut out = String::new();
            for (name, value) in req.headers() {
                let _ = writeln!(
                    out,
                    "{}: {}",
                    name,
                    String::from_utf8_lossy(value.as_bytes())
                );
            }
            text(StatusCode::OK, out)
        }
        // Stream the request body straight back: hyper pulls request frames
        // only as fast as the response side consumes them.
        "/echo" => {
            let mut res = Response::new(req.into_body().boxed());
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            res
        }
        // Read the request body to its end and answer how many bytes it held, so that a
        // test can send more than it would want anyone to hold in memory.
        "/count" => {
            let mut body = req.into_body();
            let mut bytes: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => {
                        let message = format!("the body broke off after {bytes} bytes: {e}");
                        return Ok(text(StatusCode::BAD_REQUEST, message));
                    }
                }
            }
            text(StatusCode::OK, bytes.to_string())
        }
        // One line at once, the next only after 60 s: whoever gets the first line early
        // got it as it was produced, not once the answer was complete.
        "/drip" => {
            let lines = futures_util::stream::iter([0u64, 60]).then(|wait| async move {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                let line = if wait == 0 {
                    "first line\n"
                } else {
                    "last line\n"
                };
                Ok::<_, hyper::Error>(hyper::body::Frame::data(Bytes::from(line)))
            });
            let mut res = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(lines)));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            res
        }
        "/ws" => websocket(req),
        p => {
            if let Some(rest) = p.strip_prefix("/file/") {
                // `/file/write/NAME/TEXT` and `/file/read/NAME`, in /data: what a
                // volume keeps, for the tests of volumes.
                let dir = std::path::Path::new("/data");
                match rest.split_once('/') {
                    Some(("write", what)) => match what.split_once('/') {
                        Some((name, words)) => match std::fs::write(dir.join(name), words) {
                            Ok(()) => text(StatusCode::OK, "written"),
                            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                        },
                        None => text(StatusCode::BAD_REQUEST, "give /file/write/NAME/TEXT"),
                    },
                    Some(("read", name)) => match std::fs::read_to_string(dir.join(name)) {
                        Ok(words) => text(StatusCode::OK, words),
                        Err(e) => text(StatusCode::NOT_FOUND, e.to_string()),
                    },
                    _ => text(
                        StatusCode::BAD_REQUEST,
                        "give /file/write/NAME/TEXT or /file/read/NAME",
                    ),
                }
            } else if let Some(ms) = p.strip_prefix("/warming/") {
                // 503 until the process has run `ms` milliseconds, then 200: an app
                // that warms up, for the tests of HTTP readiness.
                match ms.parse::<u64>() {
                    Ok(ms)
                        if STARTED.get_or_init(Instant::now).elapsed()
                            >= Duration::from_millis(ms) =>
                    {
                        text(StatusCode::OK, "warm")
                    }
                    Ok(_) => text(StatusCode::SERVICE_UNAVAILABLE, "warming up"),
                    Err(_) => text(StatusCode::BAD_REQUEST, format!("bad duration: {ms}")),
                }
            } else if let Some(words) = p.strip_prefix("/say/") {
                // A line on standard output, for the tests of kept logs.
                println!("{words}");
                text(StatusCode::OK, "said")
            } else if let Some(code) = p.strip_prefix("/exit/") {
                match code.parse::<i32>() {
                    // Exit without answering: the client sees the
                    // connection drop.
                    Ok(code) => {
                        eprintln!("berth-test-server: exiting with code {code}");
                        std::process::exit(code)
                    }
                    Err(_) => text(StatusCode::BAD_REQUEST, format!("bad exit code: {code}")),
                }
            } else if let Some(ms) = p.strip_prefix("/sleep/") {
                match ms.parse::<u64>() {
                    Ok(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        text(StatusCode::OK, format!("slept {ms}"))
                    }
                    Err(_) => text(StatusCode::BAD_REQUEST, format!("bad duration: {ms}")),
                }
            } else if let Some(target) = p.strip_prefix("/connect/") {
                // Whether this container can open a TCP connection to `target`.
                match target.parse::<std::net::SocketAddr>() {
                    Ok(addr) => {
                        let attempt = tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::net::TcpStream::connect(addr),
                        )
                        .await;
                        match attempt {
                            Ok(Ok(_)) => text(StatusCode::OK, "connected".to_string()),
                            Ok(Err(e)) => text(StatusCode::OK, format!("failed: {e}")),
                            Err(_) => text(StatusCode::OK, "failed: timed out".to_string()),
                        }
                    }
                    Err(_) => text(StatusCode::BAD_REQUEST, format!("bad address: {target}")),
                }
            } else if let Some(rest) = p.strip_prefix("/proxied/") {
                // GET http://<host:port>/<path> through the proxy of $HTTP_PROXY.
                text(StatusCode::OK, through_proxy(rest, false).await)
            } else if let Some(rest) = p.strip_prefix("/tunnel/") {
                // CONNECT <host:port> through the proxy of $HTTPS_PROXY, then GET /<path>.
                text(StatusCode::OK, through_proxy(rest, true).await)
            } else if p == "/routes" {
                // The kernel's IPv4 routing table, to show whether a route out exists.
                match std::fs::read_to_string("/proc/net/route") {
                    Ok(table) => text(StatusCode::OK, table),
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("no routing table: {e}"),
                    ),
                }
            } else if let Some(mib) = p.strip_prefix("/alloc/") {
                match mib.parse::<usize>() {
                    Ok(mib) => {
                        // Touch every page so the memory is really used, and keep it.
                        let block = vec![1u8; mib.saturating_mul(1 << 20)];
                        let kept = Box::leak(block.into_boxed_slice());
                        text(
                            StatusCode::OK,
                            format!("allocated {} MiB", kept.len() >> 20),
                        )
                    }
                    Err(_) => text(StatusCode::BAD_REQUEST, format!("bad size: {mib}")),
                }
            } else if std::env::var_os("GREET_EVERY_PATH").is_some() {
                // As a Go server whose ServeMux handles "/": every path gets the greeting.
                let msg = std::env::var("MESSAGE").unwrap_or_default();
                text(StatusCode::OK, format!("{GREETING}{msg}"))
            } else {
                text(StatusCode::NOT_FOUND, format!("not found: {p}"))
            }
        }
    };
    Ok(res)
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    if !header_has_token(&req, header::UPGRADE, "websocket") {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade request",
        );
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key");
    };

    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("berth-test-server: websocket upgrade failed: {e}");
                return;
            }
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // Ping is answered and Close is echoed by tungstenite itself; the
        // stream ends once the closing handshake has been flushed.
        while let Some(msg) = ws.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(_) => break,
            };
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => {
                    // Make sure the queued Close reply goes out.
                    let _ = ws.flush().await;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    });

    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// The process environment as a JSON object, keys sorted.
fn env_json() -> String {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    vars.sort();
    let mut out = String::from("{");
    for (i, (k, v)) in vars.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, k);
        out.push(':');
        json_string(&mut out, v);
    }
    out.push('}');
    out
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Asks the proxy named by the environment for `target` (`host:port/path`), as a plain
/// request or through a `CONNECT` tunnel, and tells what came back: `status N: body` or
/// `failed: why`.
async fn through_proxy(target: &str, tunnel: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (authority, path) = match target.split_once('/') {
        Some((a, p)) => (a, format!("/{p}")),
        None => (target, "/".to_string()),
    };
    let variable = if tunnel { "HTTPS_PROXY" } else { "HTTP_PROXY" };
    let Ok(proxy) = std::env::var(variable) else {
        return format!("failed: no {variable}");
    };
    let proxy = proxy
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&proxy).await?;
        if tunnel {
            let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            stream.write_all(connect.as_bytes()).await?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await? == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            if !head.starts_with("HTTP/1.1 200") {
                // A refusal keeps the connection open: its head says enough.
                return Ok::<String, std::io::Error>(head.trim_end().to_string());
            }
            let get =
                format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
            stream.write_all(get.as_bytes()).await?;
        } else {
            let get = format!(
                "GET http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(get.as_bytes()).await?;
        }
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(answer)) => {
            let status = answer.split(' ').nth(1).unwrap_or("?").to_string();
            let body = answer
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string();
            format!("status {status}: {body}")
        }
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => "failed: timed out".to_string(),
    }
}

/// Requests to `/hit` so far, which `/hits` tells.
fn hits() -> &'static std::sync::atomic::AtomicU64 {
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    &HITS
}
