//! The load client: a separate process, so that its work is not counted as berth's. It
//! sends requests over HTTP/1.1 and prints one summary line for the parent to read. Both
//! sides are here: [`run`] in the client process, [`load`] and [`load_urls`] in the parent.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::sync::Barrier;

use crate::stats::Stats;

pub struct Load {
    /// `{}` is replaced by the name `n<k>`.
    pub url_template: String,
    /// Instead of the template: URLs to rotate over, one per line of this file.
    pub urls: Option<String>,
    pub names: usize,
    pub concurrency: usize,
    pub requests: usize,
    /// Reuse one connection per worker; otherwise one connection per request.
    pub keep_alive: bool,
}

/// Runs the load and prints `ok=… failed=… p50_us=… p95_us=… p99_us=… max_us=…`.
pub async fn run(load: Load) -> anyhow::Result<()> {
    let per_worker = load.requests.div_ceil(load.concurrency.max(1));
    let urls: Vec<String> = match &load.urls {
        Some(file) => std::fs::read_to_string(file)?
            .lines()
            .map(str::to_string)
            .collect(),
        None => (0..load.names.max(1))
            .map(|k| load.url_template.replace("{}", &format!("n{k}")))
            .collect(),
    };
    let urls = Arc::new(urls);
    let barrier = Arc::new(Barrier::new(load.concurrency));
    let load = Arc::new(load);
    let mut workers = Vec::new();
    for w in 0..load.concurrency {
        let (load, barrier, urls) = (load.clone(), barrier.clone(), urls.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            let mut failed = 0usize;
            let mut senders = std::collections::HashMap::new();
            barrier.wait().await;
            for i in 0..per_worker {
                let url = &urls[(w * per_worker + i) % urls.len()];
                let started = Instant::now();
                match get(url, &mut senders, load.keep_alive).await {
                    Ok(200) => latencies.push(started.elapsed()),
                    _ => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for worker in workers {
        let (latencies, f) = worker.await?;
        all.extend(latencies);
        failed += f;
    }
    let s = Stats::of(&all);
    println!(
        "ok={} failed={} p50_us={} p95_us={} p99_us={} max_us={}",
        all.len(),
        failed,
        s.median.as_micros(),
        s.p95.as_micros(),
        s.p99.as_micros(),
        s.max.as_micros()
    );
    Ok(())
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One GET, on the worker's connection to that host if it keeps connections.
async fn get(
    url: &str,
    senders: &mut std::collections::HashMap<String, Sender>,
    keep_alive: bool,
) -> anyhow::Result<u16> {
    let uri: http::Uri = url.parse()?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    if !keep_alive || !senders.contains_key(&authority) {
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        senders.insert(authority.clone(), s);
    }
    let Some(s) = senders.get_mut(&authority) else {
        anyhow::bail!("no connection");
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::new())?;
    let response = s.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

/// Parses the line [`run`] prints.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub ok: usize,
    pub failed: usize,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    pub fn parse(line: &str) -> Option<Summary> {
        let mut s = Summary::default();
        for field in line.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            let n: u64 = value.parse().ok()?;
            let us = Duration::from_micros(n);
            match key {
                "ok" => s.ok = n as usize,
                "failed" => s.failed = n as usize,
                "p50_us" => s.p50 = us,
                "p95_us" => s.p95 = us,
                "p99_us" => s.p99 = us,
                "max_us" => s.max = us,
                _ => {}
            }
        }
        Some(s)
    }
}

/// The load client over `names` names in the `url` template.
pub async fn load(
    url: &str,
    names: usize,
    concurrency: usize,
    requests: usize,
    keep_alive: bool,
) -> anyhow::Result<Summary> {
    let (names, concurrency, requests) = (
        names.to_string(),
        concurrency.to_string(),
        requests.to_string(),
    );
    let mut args = vec![
        "--url-template",
        url,
        "--names",
        &names,
        "--concurrency",
        &concurrency,
        "--requests",
        &requests,
    ];
    if keep_alive {
        args.push("--keep-alive");
    }
    run_process(&args).await
}

/// The load client over the URLs listed in `file`: one keep-alive client, 5,000 requests.
pub async fn load_urls(file: &Path) -> anyhow::Result<Summary> {
    let file = file.display().to_string();
    run_process(&[
        "--concurrency",
        "1",
        "--requests",
        "5000",
        "--keep-alive",
        "--urls",
        &file,
    ])
    .await
}

/// Runs `berth-bench client ARGS` as a separate process and reads its summary line.
async fn run_process(args: &[&str]) -> anyhow::Result<Summary> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .arg("client")
        .args(args)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout);
    Summary::parse(text.trim()).with_context(|| {
        format!(
            "the load client said: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
