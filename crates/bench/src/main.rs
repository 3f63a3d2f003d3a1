//! berth-bench: the product's performance promises, each measured against a baseline in
//! the same run on the same image: cold start against `docker run` plus the first answer,
//! the warm proxy against a direct connection and nginx, a stampede against a single cold
//! start, the memory of sleeping objects and running containers, and sleep accuracy.
//!
//! Run it through `bench/run.sh`, which installs wrk and nginx and builds the server.

#![forbid(unsafe_code)]

mod client;
mod cold;
mod fixture;
mod metrics;
mod names;
mod pause;
mod scale;
mod sleep;
mod stampede;
mod standby;
mod stats;
mod table;
mod warm;
mod wrk;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use fixture::Fixture;

#[derive(Parser)]
#[command(
    name = "berth-bench",
    about = "berth's benchmarks, each against a baseline measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Samples per cold-start and sleep measurement.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Containers to run at once in the scale measurement.
    #[arg(long, default_value_t = 250)]
    containers: usize,
    /// Which measurements to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cold,warm,stampede,scale,names,sleep,pause,standby"
    )]
    only: Vec<String>,
    /// The static server binary that goes into the image.
    #[arg(long, default_value = "examples/hello/server")]
    server: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// The load client, run as a separate process by the benchmarks.
    Client {
        #[arg(long, default_value = "")]
        url_template: String,
        #[arg(long)]
        urls: Option<String>,
        #[arg(long, default_value_t = 1)]
        names: usize,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        requests: usize,
        #[arg(long)]
        keep_alive: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Client {
                url_template,
                urls,
                names,
                concurrency,
                requests,
                keep_alive,
            }) => {
                client::run(client::Load {
                    url_template,
                    urls,
                    names,
                    concurrency,
                    requests,
                    keep_alive,
                })
                .await
            }
            None => measure(&cli).await,
        }
    });
    runtime.shutdown_background();
    result
}

/// Runs the measurements asked for, in a fixed order: the stampede is set against the cold
/// start's median when both run. The containers go away even when one fails.
async fn measure(cli: &Cli) -> anyhow::Result<()> {
    const KNOWN: [&str; 9] = [
        "cold", "warm", "metrics", "stampede", "scale", "names", "sleep", "pause", "standby",
    ];
    if let Some(unknown) = cli.only.iter().find(|o| !KNOWN.contains(&o.as_str())) {
        anyhow::bail!(
            "--only {unknown}: no such measurement; choose from {}",
            KNOWN.join(", ")
        );
    }
    let fixture = Fixture::new(&cli.server).await?;
    fixture.print_machine().await;
    let wants = |name: &str| cli.only.iter().any(|o| o == name);
    let result = async {
        let mut cold_median = None;
        if wants("cold") {
            cold_median = Some(cold::run(&fixture, cli.samples).await?);
        }
        if wants("warm") {
            warm::run(&fixture, cli.seconds).await?;
        }
        if wants("metrics") {
            metrics::run(&fixture, cli.seconds).await?;
        }
        if wants("stampede") {
            stampede::run(&fixture, cold_median).await?;
        }
        if wants("scale") {
            scale::run(&fixture, cli.containers).await?;
        }
        if wants("names") {
            names::run(&fixture).await?;
        }
        if wants("sleep") {
            sleep::run(&fixture, cli.samples).await?;
        }
        if wants("pause") {
            pause::run(&fixture, cli.samples).await?;
        }
        if wants("standby") {
            standby::run(&fixture, cli.samples).await?;
        }
        anyhow::Ok(())
    }
    .await;
    fixture.shutdown().await?;
    result
}
