//! `berth serve`: host apps until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth::serve::{self, ControlAddr, DataDir, ServeConfig};
use berth::tls::Tls;
use berth::DockerRuntime;
use tokio::signal::unix::{signal, SignalKind};

use crate::dev::clock;

pub struct Args {
    pub data: Option<PathBuf>,
    pub listen: SocketAddr,
    /// The certificate and key files for HTTPS on `listen`.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub control: ControlAddr,
    pub registry: Option<String>,
    pub stop_on_exit: bool,
    pub print_token: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let path = args.data.unwrap_or_else(serve::default_data_dir);
    if args.print_token {
        serve::create_private(&path)
            .with_context(|| format!("creating the data folder {}", path.display()))?;
        let token = berth::control::Token::load_or_create(&path)
            .with_context(|| format!("reading the token of {}", path.display()))?;
        println!("{}", token.reveal());
        return Ok(());
    }
    // A certificate that cannot serve is found out before anything starts.
    let tls = match args.tls {
        Some((cert, key)) => Some(Tls::load(&cert, &key)?),
        None => None,
    };
    // Caught from the start, so that a signal as soon as the addresses are printed
    // stops the server gracefully instead of killing it.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let data = tokio::task::spawn_blocking(move || DataDir::open(&path)).await??;
    let engine = Arc::new(DockerRuntime::connect().await?);
    let platform = engine.platform().await?;
    let https = tls.is_some();
    let config = ServeConfig {
        listen: args.listen,
        control: args.control,
        tls,
        registry: args.registry,
        stop_on_exit: args.stop_on_exit,
        drain: Duration::from_secs(10),
    };
    let bound = serve::start(&data, engine.clone(), engine, platform, config).await?;
    let apps = bound.platform.apps().await?;
    eprintln!(
        "{} data in {}; {} app(s) restored",
        clock(),
        data.path.display(),
        apps.len()
    );
    let scheme = if https { "https" } else { "http" };
    println!("Public on {scheme}://{}", bound.public);
    println!("Control on {}", bound.control);
    if let ControlAddr::Tcp(addr) = &bound.control {
        println!("Dashboard on http://{addr}/");
    }
    let (_, mut events) = bound.platform.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => eprintln!("{} {} {e}", clock(), e.app),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("{} ({n} events not shown)", clock());
                }
                Err(_) => return,
            }
        }
    });
    let stop_on_exit = args.stop_on_exit;
    bound
        .serve(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            eprintln!(
                "{} shutting down: finishing requests in flight, then {}",
                clock(),
                if stop_on_exit {
                    "stopping every container"
                } else {
                    "leaving containers running for the next start"
                }
            );
        })
        .await;
    eprintln!("{} bye", clock());
    Ok(())
}
