#!/usr/bin/env bash
# berth on a 3-node Docker Swarm, built on this machine as the Swarm test builds it
# (crates/berth-cli/tests/swarm): the extra hop through a router that is not a name's
# home, against its home; cold starts through a router, against Swarm's own service
# create until its task runs and against the single-host runtime; the manager's cost
# with 200 and 1,000 services at 0 replicas and 100 running; recovery after a node loss
# with a 5 s and a 1 s heartbeat (it kills both workers). Prints Markdown. Release
# build; about 8 minutes once built.
#
#   bench/swarm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sh bench/setup.sh >&2
BERTH_SWARM_BENCH=1 cargo test --release -q -p berth-cli --test swarm -- --nocapture 2>&1 |
    grep -v '^running\|^test \|^$\|cluster up\|test result'
