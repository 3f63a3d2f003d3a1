//! The `berth` command: a thin layer over the `berth` library.
#![forbid(unsafe_code)]

mod dev;
mod ps;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Self-hosted, on-demand containers addressed by name.
///
/// berth runs the containers of your app on the local Docker Engine. Each request goes
/// to an object picked by name; the object starts its container on first use, waits
/// until it is ready, proxies to it, and stops it after it has been idle.
///
/// An app is a folder with a Dockerfile and a berth.toml that names container classes
/// (port, idle timeout, environment, size) and workers (bindings and routes).
#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about,
    long_about,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the images, serve the router on localhost, and start containers on demand.
    ///
    /// Containers start the first time a request needs them and stop after sleep_after
    /// of idleness. Their logs and lifecycle events are shown here. Type r and Enter to
    /// rebuild and replace running containers. Ctrl-C stops and removes every container
    /// the session started. State lives in DIR/.berth/.
    Dev {
        /// The app's folder, holding berth.toml.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The port of the router (of the first worker; further workers take the next
        /// ports). 0 picks a free port.
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// The address the router listens on.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
    },
    /// List the app's instances: class, name, id, state and uptime.
    Ps {
        /// The app's folder, holding berth.toml.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // berth's own warnings go among the lines `berth dev` prints: plain, short, and
    // coloured only on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev { dir, port, host } => dev::run(&dir, host, port).await,
            Command::Ps { dir, json } => ps::run(&dir, json).await,
        }
    });
    // A read of stdin may still be pending on a blocking thread; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
