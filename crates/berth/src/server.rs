//! Serving a worker over HTTP/1.1 on a local socket.
//!
//! One task per connection, upgrades allowed (WebSockets pass through), a bound on header
//! read time so slow clients cannot hold connections forever, a bound on connections,
//! and a graceful shutdown: requests in flight finish up to a deadline while new ones get
//! a 503, then the server returns. The socket is TCP or a unix socket; with
//! [`ServeOptions::tls`], each connection's TLS handshake runs in its own task, within the
//! header read timeout, so a slow or broken one cannot hold up the others.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use crate::http::{error_response, Body, ClientBody, TARGET_PORT_HEADER};
use crate::runtime::Conn;
use crate::tls::Tls;
use crate::worker::{Env, Worker};

/// How a server treats its clients.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long requests in flight may take to finish once shutdown starts; meanwhile new
    /// requests get a 503.
    pub drain: Duration,
    /// How long a client may take to send its request headers (slow clients are cut off).
    pub header_read_timeout: Duration,
    /// The most bytes a request's head (request line and headers) may hold; a larger one
    /// gets a 431. At least 8 KiB.
    pub max_header_bytes: usize,
    /// Connections served at once (per thread); further clients wait to be accepted.
    pub max_connections: usize,
    /// Server threads, each with a runtime of its own. 1 (the default): serve on the
    /// caller's runtime.
    pub threads: usize,
    /// Serve HTTPS: every connection starts with a TLS handshake, which must finish
    /// within `header_read_timeout`. None (the default): plain HTTP.
    pub tls: Option<Tls>,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            drain: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_connections: 16_384,
            threads: 1,
            tls: None,
        }
    }
}

/// How many connections may wait to be accepted: enough for a stampede of a thousand
/// clients connecting at once (the kernel caps it at `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 4096;

/// A listening socket for [`serve`], with a backlog deep enough for bursts of clients.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// A listening socket to serve on: TCP, or a unix socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Listener {
        Listener::Tcp(listener)
    }
}

impl From<UnixListener> for Listener {
    fn from(listener: UnixListener) -> Listener {
        Listener::Unix(listener)
    }
}

/// A listening socket on its way to another thread's runtime.
enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    /// The next client, and its address when it has one (a unix socket's clients do not).
    async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, remote) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Conn::Tcp(stream), Some(remote)))
            }
            Listener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Conn::Other(Box::new(stream)), None))
            }
        }
    }

    fn into_std(self) -> io::Result<StdListener> {
        Ok(match self {
            Listener::Tcp(l) => StdListener::Tcp(l.into_std()?),
            Listener::Unix(l) => StdListener::Unix(l.into_std()?),
        })
    }
}

impl StdListener {
    fn try_clone(&self) -> io::Result<StdListener> {
        Ok(match self {
            StdListener::Tcp(l) => StdListener::Tcp(l.try_clone()?),
            StdListener::Unix(l) => StdListener::Unix(l.try_clone()?),
        })
    }

    /// Back to Tokio, on the runtime of the calling thread.
    fn into_tokio(self) -> io::Result<Listener> {
        Ok(match self {
            StdListener::Tcp(l) => Listener::Tcp(TcpListener::from_std(l)?),
            StdListener::Unix(l) => Listener::Unix(UnixListener::from_std(l)?),
        })
    }
}

/// One client's connection, whatever it came through: the same code serves them all. A
/// TCP connection stays unboxed (the common case); a unix or TLS one is boxed.
type Stream = Conn;

/// The connection as the server speaks HTTP on it: after a TLS handshake when `tls` is
/// given, bounded by `limit`.
async fn secure(stream: Stream, tls: Option<&Tls>, limit: Duration) -> io::Result<Stream> {
    let Some(tls) = tls else {
        return Ok(stream);
    };
    match tokio::time::timeout(limit, tls.accept(stream)).await {
        Ok(Ok(stream)) => Ok(Conn::Other(Box::new(stream))),
        Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("TLS handshake: {e}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake not done within {limit:?}"),
        )),
    }
}

/// Serves `worker` on `listener` until `shutdown` resolves, then drains for up to `drain`.
pub async fn serve(
    listener: impl Into<Listener>,
    worker: Arc<dyn Worker>,
    env: Env,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let options = ServeOptions {
        drain,
        ..ServeOptions::default()
    };
    serve_with(listener, worker, env, shutdown, options).await
}

/// [`serve`], with every option.
pub async fn serve_with(
    listener: impl Into<Listener>,
    worker: Arc<dyn Worker>,
    env: Env,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) {
    let listener = listener.into();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    if options.threads <= 1 {
        let serving = serve_here(listener, worker, env, stopped, options);
        tokio::join!(serving, shutdown);
        return;
    }
    // Thread per core: each thread accepts on the same socket and serves its connections
    // (and their connections to containers) itself, so no request wakes another thread.
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot share the listening socket: {e}");
            return;
        }
    };
    let mut threads = Vec::new();
    for n in 0..options.threads {
        let (worker, env, stopped, options) = (
            worker.clone(),
            env.clone(),
            stopped.clone(),
            options.clone(),
        );
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let listener = match listener.try_clone() {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!("cannot share the listening socket: {e}");
                break;
            }
        };
        let spawned = std::thread::Builder::new()
            .name(format!("berth-serve-{n}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(async move {
                        match listener.into_tokio() {
                            Ok(listener) => {
                                serve_here(listener, worker, env, stopped, options).await
                            }
                            Err(e) => tracing::error!("cannot listen on the server thread: {e}"),
                        }
                    }),
                    Err(e) => tracing::error!("cannot start a server thread: {e}"),
                }
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => threads.push(finished),
            Err(e) => tracing::error!("cannot start a server thread: {e}"),
        }
    }
    let all_done = futures_util::future::join_all(threads);
    tokio::join!(all_done, shutdown);
}

/// One accept loop on the current runtime, until `stopped` turns true; then the drain.
async fn serve_here(
    listener: Listener,
    worker: Arc<dyn Worker>,
    env: Env,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    options: ServeOptions,
) {
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    // Each connection holds a sender; when all are dropped, every connection has ended.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let draining = Arc::new(AtomicBool::new(false));
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // A client that closes its connection has gone away, as nginx and most proxies
        // take it: the request is dropped, and with it the container's answer and the
        // request's count in flight, so an abandoned request cannot keep a container awake.
        // (A client that half-closes after sending is taken as gone too.)
        .half_close(false)
        // More than 100 header fields get a 431 as well (hyper's default).
        .max_header_size(options.max_header_bytes.max(8192))
        .keep_alive(true);
    let http = Arc::new(http);
    let tls = options.tls.clone();
    let handshake_limit = options.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let worker = worker.clone();
        let env = env.clone();
        let draining = draining.clone();
        // The client's address, as the header carries it, made once per connection.
        let client = remote.and_then(|r| HeaderValue::from_str(&r.ip().to_string()).ok());
        let scheme = HeaderValue::from_static(if tls.is_some() { "https" } else { "http" });
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let worker = worker.clone();
            let env = env.clone();
            let (client, scheme) = (client.clone(), scheme.clone());
            let draining = draining.load(Ordering::Acquire);
            async move {
                if draining {
                    return Ok::<_, Infallible>(shutting_down());
                }
                Ok(worker
                    .fetch(forwarded(request, &client, scheme), &env)
                    .await)
            }
        });
        let mut stop = stop_rx.clone();
        let done = done_tx.clone();
        let (http, tls) = (http.clone(), tls.clone());
        tokio::spawn(async move {
            let peer = remote.map_or_else(|| "a local client".to_string(), |r| r.to_string());
            // The handshake runs here, not in the accept loop: a client that stalls in it
            // holds up no one else, and is cut off after the header read timeout.
            let secured = tokio::select! {
                secured = secure(stream, tls.as_ref(), handshake_limit) => secured,
                _ = stop.wait_for(|s| *s) => return,
            };
            let stream = match secured {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!("connection from {peer}: {e}");
                    return;
                }
            };
            let connection = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = async move { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection from {peer}: {e}");
            }
            drop((done, slot));
        });
    }
    draining.store(true, Ordering::Release);
    let _ = stop_tx.send(true);
    drop(done_tx);
    // While requests in flight finish, newcomers learn that berth is going away.
    let deadline = tokio::time::sleep(options.drain);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = done_rx.recv() => break,
            () = &mut deadline => {
                tracing::warn!("requests still in flight after {:?}; closing them", options.drain);
                break;
            }
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let (http, tls) = (http.clone(), tls.clone());
                    tokio::spawn(async move {
                        let answer = async move {
                            let limit = Duration::from_secs(5);
                            let Ok(stream) = secure(stream, tls.as_ref(), limit).await else {
                                return;
                            };
                            let service =
                                hyper::service::service_fn(|_: Request<Incoming>| async {
                                    Ok::<_, Infallible>(shutting_down())
                                });
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
                    });
                }
            }
        }
    }
}

fn shutting_down() -> Response<Body> {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting-down",
        "berth is shutting down and takes no new requests",
    );
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Records the client's address (`x-forwarded-for`, and Cloudflare's `cf-connecting-ip`)
/// and the scheme it used for the container, as proxies do (berth is the edge: a
/// client's own `x-forwarded-proto` is replaced), and drops the
/// header that picks a container port: only the worker's own code may set it
/// (`switch_port`).
fn forwarded(
    request: Request<Incoming>,
    remote: &Option<HeaderValue>,
    scheme: HeaderValue,
) -> Request<Body> {
    let client_body = ClientBody::default();
    let mut request = request.map(|b| client_body.watch(b));
    request.extensions_mut().insert(client_body);
    let headers = request.headers_mut();
    headers.remove(TARGET_PORT_HEADER);
    headers.insert("x-forwarded-proto", scheme);
    // berth is the edge: what a client claims in these headers is not kept.
    // `cf-connecting-ip` too, which code written for Cloudflare reads the client from.
    headers.remove("x-forwarded-for");
    headers.remove("cf-connecting-ip");
    if let Some(value) = remote {
        headers.insert("x-forwarded-for", value.clone());
        headers.insert("cf-connecting-ip", value.clone());
    }
    request
}
