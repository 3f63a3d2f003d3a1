//! The `berth` command: a thin layer over the `berth` library.
#![forbid(unsafe_code)]

mod dev;
mod events;
mod exec;
mod logs;
mod ps;
mod remote;
mod serve;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Self-hosted, on-demand containers addressed by name.
///
/// berth runs the containers of your app on a Docker Engine: on your machine with
/// `berth dev`, or on a server with `berth serve`, where `berth deploy` sends it. Each
/// request goes to an object picked by name; the object starts its container on first
/// use, waits until it is ready, proxies to it, and stops it after it has been idle.
///
/// An app is a folder with a Dockerfile and a berth.toml that names container classes
/// (port, idle timeout, environment, size) and workers (bindings and routes), or else a
/// Cloudflare Containers project as written: an alchemy.run.ts, or a wrangler.jsonc
/// (wrangler.json, wrangler.toml).
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
        /// The app's folder, holding berth.toml, alchemy.run.ts or wrangler.jsonc.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The port of the router (of the first worker; further workers take the next
        /// ports). 0 picks a free port.
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// The address the router listens on.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// Serve Prometheus metrics at http://ADDR/metrics (host:port; port 0 picks a
        /// free one): requests, cold starts, instances by state, sleeps, exits.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Keep the objects' volumes (a class's `volumes`) when the session ends; by
        /// default they are removed with the containers.
        #[arg(long)]
        keep_volumes: bool,
    },
    /// Host deployed apps: a public listener that routes by Host, and a control API.
    ///
    /// Apps arrive with `berth deploy`. A request reaches the worker whose hosts match
    /// its Host header (by default <worker>.<app>.localhost). State (deployments, object
    /// states and storage) lives in a SQLite database in the data folder, beside the
    /// control API's token. A restart re-adopts the containers that still run. SIGTERM or
    /// Ctrl-C drains requests in flight, then leaves containers running for the next
    /// start (or stops them, with --stop-on-exit).
    Serve {
        /// The data folder [default: /var/lib/berth as root, else $XDG_DATA_HOME/berth]
        #[arg(long)]
        data: Option<PathBuf>,
        /// The public listener, where apps are reached by Host.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Serve HTTPS on --listen with this certificate chain (PEM, the server's
        /// certificate first). Needs --tls-key.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The control API (bearer token required): IP:PORT, or unix:PATH for a unix
        /// socket that only this user may use (mode 0600).
        #[arg(long, default_value = "127.0.0.1:7878")]
        control: berth::serve::ControlAddr,
        /// The registry (host:port) that berth deploy pushes images to.
        #[arg(long)]
        registry: Option<String>,
        /// On shutdown, stop every container instead of leaving them running.
        #[arg(long)]
        stop_on_exit: bool,
        /// Print the control API's token (made on first use) and exit.
        #[arg(long)]
        print_token: bool,
        #[command(flatten)]
        engine: serve::EngineArgs,
    },
    /// Keep the objects' storage and alarms for every router of a Swarm.
    ///
    /// Run it as a service of one replica on the routers' overlay network, constrained
    /// to one node (its data folder must not move), and give the routers
    /// --swarm-store SERVICE. It takes only calls that carry the cluster's store key,
    /// derived from the control token: give it the routers' --token-file.
    Store {
        /// The data folder [default: /var/lib/berth as root, else $XDG_DATA_HOME/berth]
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where the routers reach it.
        #[arg(long, default_value = "0.0.0.0:7880")]
        listen: SocketAddr,
        /// The control token's file, shared with the routers (a Docker secret).
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
    },
    /// Deploy the app to a berth serve: build, push what changed, roll out.
    ///
    /// Shows the plan (create, update, replace, delete or unchanged for each class and
    /// worker), builds the images as berth dev does, pushes those the server's registry
    /// lacks, and follows the rollout; exits non-zero if it fails. A deploy with no
    /// change prints "no changes" and touches nothing. An app of alchemy.run.ts (or wrangler.jsonc)
    /// sends the modules its program loads, which the server runs again with its own environment
    /// (secrets are set where berth serve runs).
    Deploy {
        /// The app's folder, holding berth.toml, alchemy.run.ts or wrangler.jsonc.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        server: remote::Server,
        /// Deploy a separate copy of the app, named <name>-<stage>, with its own
        /// objects and storage.
        #[arg(long)]
        stage: Option<String>,
        /// Show the plan and change nothing (nothing is pushed).
        #[arg(long)]
        dry_run: bool,
        /// Go ahead without asking when the plan deletes classes or workers.
        #[arg(long)]
        yes: bool,
        /// Take over an app that was deployed from another folder.
        #[arg(long)]
        adopt: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Return an app to the deployment before the one it runs.
    Rollback {
        /// The app [default: the app of berth.toml in --dir].
        app: Option<String>,
        /// The app's folder, to name the app when APP is not given.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// With --dir: the stage the app was deployed as.
        #[arg(long)]
        stage: Option<String>,
        #[command(flatten)]
        server: remote::Server,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an app from a berth serve: containers, records, storage, deployments.
    ///
    /// Images stay in the registry; the command lists them.
    Destroy {
        /// The app's folder, to name the app when --app is not given.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The app to remove [default: the app of DIR/berth.toml].
        #[arg(long)]
        app: Option<String>,
        /// With DIR: the stage the app was deployed as.
        #[arg(long)]
        stage: Option<String>,
        #[command(flatten)]
        server: remote::Server,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what an app's containers wrote, also after they stopped or crashed.
    ///
    /// Every line a container writes is kept in a file per object (DIR/.berth/logs for
    /// berth dev, the data folder for berth serve), up to the class's log_max (10 MiB by
    /// default; the oldest half goes first). Each line shows its time (UTC), class,
    /// object, container and stream. Examples: `berth logs` (the app in this folder),
    /// `berth logs alice --follow`, `berth logs --app shop --since 10m --tail 100`.
    Logs(logs::Args),
    /// Show what happens to the apps of a berth serve, as it happens.
    ///
    /// Starts, readiness, sleeps, exits with their code, errors, rollout steps and
    /// deployments' outcomes: the events berth dev prints. The latest (up to 256) come
    /// first; without --follow, the command ends there.
    Events {
        /// Only this app's events.
        #[arg(long)]
        app: Option<String>,
        /// Keep printing events as they happen.
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per event: time, app, class, object, container_id, kind,
        /// exit_code, deployment, status, text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: remote::Server,
    },
    /// Run a command in the running container of an object of a berth dev app.
    ///
    /// As `docker exec`: standard input goes to the command, with a terminal when this
    /// one is a terminal, and berth exec exits with the command's exit code. An object
    /// that sleeps has no container: --wake has the running berth dev start it first.
    /// Example: `berth exec alice --wake -- sh -c 'ls /data'`.
    Exec(exec::Args),
    /// List the app's instances: class, name, id, state and uptime.
    Ps {
        /// The app's folder, holding berth.toml, alchemy.run.ts or wrangler.jsonc.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// List the objects' volumes instead, with their size.
        #[arg(long)]
        volumes: bool,
    },
}

/// berth's own log, on standard error. As text, its warnings go among the lines `berth
/// dev` prints: plain, short, and coloured only on a terminal. With
/// `BERTH_LOG_FORMAT=json`, one JSON object per line, with its time, for log tools.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        // A JS worker's console.log is berth::js info: the developer's own lines.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,berth::js=info"));
    let format = std::env::var("BERTH_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.to_ascii_lowercase().as_str() {
        "json" => builder.json().flatten_event(true).init(),
        other => {
            builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false)
                .without_time()
                .init();
            if !matches!(other, "" | "text") {
                tracing::warn!("BERTH_LOG_FORMAT={other:?} is not known; use text or json");
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
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
            Command::Dev {
                dir,
                port,
                host,
                metrics,
                keep_volumes,
            } => dev::run(&dir, host, port, metrics, keep_volumes).await,
            Command::Ps { dir, json, volumes } => ps::run(&dir, json, volumes).await,
            Command::Exec(args) => exec::run(args).await,
            Command::Events {
                app,
                follow,
                json,
                server,
            } => events::run(app, follow, json, server).await,
            Command::Logs(args) => logs::run(args).await,
            Command::Deploy {
                dir,
                server,
                stage,
                dry_run,
                yes,
                adopt,
                json,
            } => {
                let args = remote::DeployArgs {
                    server,
                    stage,
                    dry_run,
                    yes,
                    adopt,
                    json,
                };
                remote::deploy(&dir, args).await
            }
            Command::Rollback {
                app,
                dir,
                stage,
                server,
                json,
            } => remote::rollback(app, &dir, stage, server, json).await,
            Command::Destroy {
                dir,
                app,
                stage,
                server,
                yes,
                json,
            } => remote::destroy(app, &dir, stage, server, yes, json).await,
            Command::Store {
                data,
                listen,
                token_file,
            } => serve::store(data, listen, token_file).await,
            Command::Serve {
                data,
                listen,
                tls_cert,
                tls_key,
                control,
                registry,
                stop_on_exit,
                print_token,
                engine,
            } => {
                let args = serve::Args {
                    engine,
                    data,
                    listen,
                    tls: tls_cert.zip(tls_key),
                    control,
                    registry,
                    stop_on_exit,
                    print_token,
                };
                serve::run(args).await
            }
        }
    });
    // A read of stdin may still be pending on a blocking thread; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // berth exec passes the command's own exit code on, as docker exec does.
        Err(e) if e.downcast_ref::<exec::Exited>().is_some() => {
            let code = e
                .downcast_ref::<exec::Exited>()
                .map_or(1, |exited| exited.0);
            ExitCode::from(u8::try_from(code.rem_euclid(256)).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
