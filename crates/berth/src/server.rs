//! Serving a worker over HTTP/1.1 on a local socket.
//!
//! One task per connection, upgrades allowed (WebSockets pass through), a bound on header
//! read time so slow clients cannot hold connections forever, and a graceful shutdown:
//! stop accepting, let requests in flight finish up to a deadline, then return.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::router::{Env, Worker};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `worker` on `listener` until `shutdown` resolves, then waits up to `drain` for
/// requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    worker: Arc<dyn Worker>,
    env: Env,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    // Each connection holds a sender; when all are dropped, every connection has ended.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
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
        let _ = stream.set_nodelay(true);
        let worker = worker.clone();
        let env = env.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let worker = worker.clone();
            let env = env.clone();
            async move { Ok::<_, Infallible>(worker.fetch(forwarded(request, remote), &env).await) }
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
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
                tracing::debug!("connection from {remote}: {e}");
            }
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    if tokio::time::timeout(drain, done_rx.recv()).await.is_err() {
        tracing::warn!("requests still in flight after {drain:?}; closing them");
    }
}

/// Records the client's address for the container, as proxies do.
fn forwarded(mut request: Request<Incoming>, remote: SocketAddr) -> Request<Incoming> {
    if let Ok(value) = HeaderValue::from_str(&remote.ip().to_string()) {
        request.headers_mut().append("x-forwarded-for", value);
    }
    request
}
