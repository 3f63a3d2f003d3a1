#!/usr/bin/env bash
# berth on a 3-node Docker Swarm, built on this machine as the Swarm test builds it
# (crates/berth-cli/tests/swarm): the extra hop through a router that is not a name's
# home, against its home; and cold starts through a router, against Swarm's own service
# create until its task runs. Prints Markdown. Release build; about 3 minutes once built.
#
#   bench/swarm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sh bench/setup.sh >&2
BERTH_SWARM_BENCH=1 cargo test --release -q -p berth-cli --test swarm -- --nocapture 2>&1 |
    grep -v '^running\|^test \|^$\|cluster up\|test result'
