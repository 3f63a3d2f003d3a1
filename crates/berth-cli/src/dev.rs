//! `berth dev`: serve the app until Ctrl-C, then leave nothing running.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use berth::manifest::Manifest;
use berth::runtime::Selector;
use berth::server::ServeOptions;
use berth::session::{self, Session};
use berth::{DockerRuntime, Runtime};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How long requests in flight may take to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

pub async fn run(
    dir: &Path,
    host: IpAddr,
    port: u16,
    metrics: Option<SocketAddr>,
    keep_volumes: bool,
) -> anyhow::Result<()> {
    // Caught from the start: a Ctrl-C or SIGTERM that comes while the session opens (as
    // soon as "Ready" is printed, say) stops it as gracefully as a later one, instead of
    // killing the process with its containers left behind.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let manifest = Manifest::load(dir)?;
    let engine = Arc::new(DockerRuntime::connect().await?);
    let mut progress = |line: &str| eprintln!("{} {line}", clock());
    let opening = Session::open(manifest, engine.clone(), engine.clone(), &mut progress);
    // Stopped while it builds or recovers: as a kill would, with nothing served yet.
    let session = tokio::select! {
        opened = opening => opened?,
        _ = interrupt.recv() => anyhow::bail!("interrupted before the session was ready"),
        _ = terminate.recv() => anyhow::bail!("terminated before the session was ready"),
    };
    let session = Arc::new(session);
    show_events(&session);

    let listening = match session.listen(host, port) {
        Ok(listening) => listening,
        Err(e) => {
            session.shutdown().await.ok();
            return Err(e.into());
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_served = match metrics {
        Some(addr) => match serve_metrics(&session, addr, stop_rx.clone()) {
            Ok(served) => Some(served),
            Err(e) => {
                session.shutdown().await.ok();
                return Err(e);
            }
        },
        None => None,
    };
    for l in &listening {
        match listening.len() {
            1 => println!("Ready on http://{}", l.addr),
            _ => println!("Ready on http://{} (worker {})", l.addr, l.worker),
        }
    }
    if listening.is_empty() {
        eprintln!("{} berth.toml has no workers, so nothing is served; add [workers.NAME] with bindings and routes", clock());
    }
    let options = ServeOptions {
        drain: DRAIN,
        // A thread per core, each serving its own connections end to end.
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        ..ServeOptions::default()
    };
    let serving = tokio::spawn(session::serve(listening, stop_rx.clone(), options));
    // berth exec --wake asks the session to start an object through .berth/control.sock.
    let control = match session.control() {
        Ok((listener, worker, file)) => {
            let mut stop = stop_rx;
            let shutdown = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            let env = berth::worker::Env::new();
            let served = berth::server::serve(listener, worker, env, shutdown, DRAIN);
            Some((tokio::spawn(served), file))
        }
        Err(e) => {
            eprintln!("{} berth exec --wake will not work: {e}", clock());
            None
        }
    };
    eprintln!("{} type r and Enter to rebuild; Ctrl-C to stop", clock());

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim() == "r" => {
                    let mut progress = |line: &str| eprintln!("{} {line}", clock());
                    match session.rebuild(&mut progress).await {
                        Ok(0) => eprintln!("{} rebuilt; no running container needed replacing", clock()),
                        Ok(n) => eprintln!("{} rebuilt; replaced {n} running container(s)", clock()),
                        Err(e) => eprintln!("{} rebuild failed: {e}", clock()),
                    }
                }
                Ok(Some(_)) => {}
                _ => stdin_open = false,
            },
        }
    }

    eprintln!(
        "{} shutting down: finishing requests in flight, then stopping containers",
        clock()
    );
    // A second Ctrl-C removes everything at once.
    let forced = session.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        eprintln!("{} forced: removing containers now", clock());
        if let Err(e) = forced.app.sweep().await {
            eprintln!("{} could not remove every container: {e}", clock());
        }
        std::process::exit(130);
    });
    let _ = stop_tx.send(true);
    let _ = serving.await;
    if let Some((served, file)) = control {
        let _ = served.await;
        drop(file);
    }
    if let Some(metrics) = metrics_served {
        let _ = metrics.await;
    }
    let stopped = session
        .shutdown()
        .await
        .context("stopping the containers")?;
    // What the objects kept on their volumes goes with the session, unless asked to stay.
    let volumes = if keep_volumes {
        0
    } else {
        let app = Selector::app(session.app.name());
        engine
            .remove_volumes(&app, session.app.store().owner())
            .await
            .context("removing the objects' volumes")?
    };
    match volumes {
        0 => eprintln!(
            "{} stopped and removed {stopped} container(s); bye",
            clock()
        ),
        n => eprintln!(
            "{} stopped and removed {stopped} container(s) and {n} volume(s); bye",
            clock()
        ),
    }
    Ok(())
}

/// Prints each lifecycle event as one line, and each container's logs prefixed with its
/// class and object name.
fn show_events(session: &Arc<Session>) {
    let mut events = session.app.events();
    let mut logs = session.app.logs();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => eprintln!("{} {event}", clock()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("{} ({n} events not shown)", clock());
                }
                Err(_) => return,
            }
        }
    });
    tokio::spawn(async move {
        while let Some(log) = logs.recv().await {
            eprintln!("{} {} {} | {}", clock(), log.class, log.object, log.line);
        }
    });
}

/// `HH:MM:SS` in UTC.
pub fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// Serves the session's metrics on `addr` until `stop` turns true, and says where.
fn serve_metrics(
    session: &Arc<Session>,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = berth::server::bind(addr)
        .with_context(|| format!("cannot listen for metrics on {addr} (--metrics)"))?;
    let bound = listener
        .local_addr()
        .context("the metrics listener's address")?;
    println!("Metrics on http://{bound}/metrics");
    let worker = Arc::new(berth::worker::metrics_worker(session.metrics().clone()));
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let env = berth::worker::Env::new();
    Ok(tokio::spawn(berth::server::serve(
        listener, worker, env, shutdown, DRAIN,
    )))
}
