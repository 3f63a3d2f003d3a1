//! `berth serve`: host apps until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth::serve::{self, ClusterConfig, ControlAddr, DataDir, ServeConfig};
use berth::tls::Tls;
use berth::{DockerRuntime, SwarmRuntime};
use tokio::signal::unix::{signal, SignalKind};

use crate::dev::clock;

pub struct Args {
    pub engine: EngineArgs,
    pub data: Option<PathBuf>,
    pub listen: SocketAddr,
    /// The certificate and key files for HTTPS on `listen`.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub control: ControlAddr,
    pub registry: Option<String>,
    pub stop_on_exit: bool,
    pub print_token: bool,
}

/// Which engine runs the containers, and the cluster's settings on Swarm.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// The container engine: `docker` (one host, the default), or `swarm`: DOCKER_HOST
    /// is a Swarm manager, each object is a service placed by the managers, and this
    /// server is one of the routers (run it as a global service on --swarm-network).
    #[arg(long, value_enum, default_value = "docker")]
    pub engine: Engine,
    /// On Swarm: the attachable overlay network of the services and the routers (made
    /// if missing).
    #[arg(long, default_value = berth::runtime::swarm::DEFAULT_NETWORK, value_name = "NETWORK")]
    pub swarm_network: String,
    /// On Swarm: the routers' service, whose tasks.<service> DNS name lists them.
    #[arg(long, default_value = "berth-router", value_name = "SERVICE")]
    pub swarm_routers: String,
    /// On Swarm: where the other routers send requests for the objects whose home is
    /// this router (the same port on every router; it takes only the cluster's token).
    #[arg(long, default_value = "0.0.0.0:7879", value_name = "ADDR")]
    pub peer_listen: SocketAddr,
    /// Read the control token from this file (a Docker secret, shared by every router
    /// of a cluster) instead of the data folder's.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// On Swarm: the service of the cluster's store (`berth store`, SERVICE or
    /// SERVICE:PORT, default port 7880), which keeps the objects' storage and alarms for
    /// every router. Without it, each router keeps those of the objects homed on it.
    #[arg(long, value_name = "SERVICE")]
    pub swarm_store: Option<String>,
}

/// `SERVICE` or `SERVICE:PORT`.
fn store_address(text: &str) -> anyhow::Result<(String, u16)> {
    let (service, port) = match text.rsplit_once(':') {
        Some((service, port)) => (
            service,
            port.parse::<u16>()
                .map_err(|_| anyhow::anyhow!("--swarm-store {text:?}: {port:?} is not a port"))?,
        ),
        None => (text, berth::cluster_store::DEFAULT_PORT),
    };
    anyhow::ensure!(
        !service.is_empty(),
        "--swarm-store {text:?} names no service"
    );
    Ok((service.to_string(), port))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Docker,
    Swarm,
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
    let mut data = tokio::task::spawn_blocking(move || DataDir::open(&path)).await??;
    if let Some(file) = &args.engine.token_file {
        data.token = berth::control::Token::load(file)?;
    }
    let images = Arc::new(DockerRuntime::connect().await?);
    let platform = images.platform().await?;
    let (runtime, cluster): (Arc<dyn berth::Runtime>, _) = match args.engine.engine {
        Engine::Docker if args.engine.swarm_store.is_some() => {
            anyhow::bail!("--swarm-store is for a cluster's routers: add --engine swarm, or leave it out (one host keeps the objects' storage in its data folder)")
        }
        Engine::Docker => (images.clone(), None),
        Engine::Swarm => {
            let host = std::env::var("DOCKER_HOST")
                .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
            let swarm = SwarmRuntime::connect_to(&host, &args.engine.swarm_network).await?;
            let cluster = ClusterConfig {
                routers: args.engine.swarm_routers.clone(),
                peer_listen: args.engine.peer_listen,
                store: args
                    .engine
                    .swarm_store
                    .as_deref()
                    .map(store_address)
                    .transpose()?,
            };
            (Arc::new(swarm), Some(cluster))
        }
    };
    let https = tls.is_some();
    let config = ServeConfig {
        listen: args.listen,
        control: args.control,
        tls,
        registry: args.registry,
        stop_on_exit: args.stop_on_exit,
        drain: Duration::from_secs(10),
        cluster,
    };
    let bound = serve::start(&data, runtime, images, platform, config).await?;
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

/// `berth store`: the cluster's store, until SIGTERM or Ctrl-C.
pub async fn store(
    data: Option<PathBuf>,
    listen: SocketAddr,
    token_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let path = data.unwrap_or_else(serve::default_data_dir);
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut data = tokio::task::spawn_blocking(move || DataDir::open(&path)).await??;
    if let Some(file) = &token_file {
        data.token = berth::control::Token::load(file)?;
    }
    let listener = berth::server::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    eprintln!("{} data in {}", clock(), data.path.display());
    println!("Store on {local}");
    let worker = Arc::new(berth::cluster_store::StoreListener {
        store: data.store.clone(),
        key: data.token.store_key(),
    });
    berth::server::serve_with(
        listener,
        worker,
        berth::worker::Env::new(),
        async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        },
        berth::server::ServeOptions::default(),
    )
    .await;
    eprintln!("{} bye", clock());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_named_with_or_without_its_port() {
        assert_eq!(store_address("s").ok(), Some(("s".into(), 7880)));
        assert_eq!(store_address("s:81").ok(), Some(("s".into(), 81)));
        assert!(store_address("s:x").is_err());
        assert!(store_address(":81").is_err());
    }
}
