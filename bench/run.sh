#!/bin/sh
# Runs berth's benchmarks: installs wrk and nginx, builds the static server that goes into
# the image, and prints the figures as Markdown. Arguments go to berth-bench, for example
#   bench/run.sh --only cold,warm --samples 30
# except two shell measurements, each also last in a run of everything: `js` (a JS worker
# against the equivalent declarative route under berth dev), which bench/js.sh runs:
# `bench/run.sh --only js`; and `deploy` (berth serve and berth deploy), which
# bench/deploy.sh runs: `bench/run.sh --only deploy`; and `swarm` (berth on a 3-node
# Docker Swarm: the extra hop, cold starts), which bench/swarm.sh runs.
set -eu
cd "$(dirname "$0")/.."

# Takes `js`, `deploy` and `swarm` out of --only; without --only, everything runs, those too.
js=yes
deploy=yes
swarm=yes
others=yes
n=$#
i=0
while [ "$i" -lt "$n" ]; do
    arg=$1
    shift
    i=$((i + 1))
    case "$arg" in
        --only | --only=*)
            if [ "$arg" = --only ]; then
                [ "$i" -lt "$n" ] || { echo "--only needs a value" >&2; exit 2; }
                list=$1
                shift
                i=$((i + 1))
            else
                list=${arg#--only=}
            fi
            js=no
            deploy=no
            swarm=no
            kept=""
            for name in $(echo "$list" | tr ',' ' '); do
                case "$name" in
                    js) js=yes ;;
                    deploy) deploy=yes ;;
                    swarm) swarm=yes ;;
                    *) kept="$kept${kept:+,}$name" ;;
                esac
            done
            if [ -n "$kept" ]; then
                set -- "$@" --only "$kept"
            else
                others=no
            fi
            ;;
        *) set -- "$@" "$arg" ;;
    esac
done

if [ "$others" = yes ]; then
    sh bench/setup.sh >&2
    sh examples/hello/build-server.sh >&2
    # A stampede holds thousands of connections at once.
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    cargo build --release -q -p berth-bench
    "${CARGO_TARGET_DIR:-target}/release/berth-bench" "$@"
fi
if [ "$js" = yes ]; then
    sh bench/setup.sh >&2
    sh examples/hello/build-server.sh >&2
    cargo build --release -q -p berth-cli
    bash bench/js.sh
fi
if [ "$deploy" = yes ]; then
    sh examples/hello/build-server.sh >&2
    cargo build --release -q -p berth-cli
    bash bench/deploy.sh
fi
if [ "$swarm" = yes ]; then
    bash bench/swarm.sh
fi
