#!/bin/sh
# Runs berth's benchmarks: installs wrk and nginx, builds the static server that goes into
# the image, and prints the figures as Markdown. Arguments go to berth-bench, for example
#   bench/run.sh --only cold,warm --samples 30
set -eu
cd "$(dirname "$0")/.."
sh bench/setup.sh >&2
sh examples/hello/build-server.sh >&2
# A stampede holds thousands of connections at once.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p berth-bench
exec target/release/berth-bench "$@"
