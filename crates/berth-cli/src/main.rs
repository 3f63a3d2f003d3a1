//! The `berth` command: a thin layer over the `berth` library.

use clap::Parser;

/// Self-hosted, on-demand containers addressed by name.
///
/// berth runs the containers of your app on the local Docker Engine: each request goes to
/// an object picked by name, which starts its container on first use, waits until it is
/// ready, proxies to it, and stops it after it has been idle.
#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about,
    long_about,
    arg_required_else_help = true
)]
struct Cli {}

fn main() {
    Cli::parse();
}
