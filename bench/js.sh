#!/usr/bin/env bash
# A JS worker against the equivalent declarative route, measured in the same run, on the
# same FROM-scratch image (the static test server), under `berth dev`:
#   A. berth.toml, one route  { path = "/*", binding = "MY_CONTAINER", instance = "container" };
#   B. alchemy.run.ts, a worker whose fetch is
#      `return getContainer(env.MY_CONTAINER, "container").fetch(request)`;
#   C. the floor of any JS worker: the same app, whose fetch answers the container's
#      words itself (`new Response(...)`), without reaching any container.
# Both containers are warmed first. Then wrk (keep-alive, SECONDS per run) at 1, 16 and
# 64 connections against the container directly (its bridge address), A and B,
# interleaved, REPEATS times. It prints the figures as Markdown: medians over the repeats,
# with berth's own CPU time per request (each `berth dev` is a process of its own), which
# varies less than throughput on a machine shared with wrk and the containers.
#
#   bench/js.sh [REPEATS] [SECONDS]        # default 3 and 5
#   BERTH=path/to/berth bench/js.sh        # another build of berth, to compare two
#
# Builds ${CARGO_TARGET_DIR:-target}/release/berth and the static server when missing. It
# leaves no container, image or folder behind: both berth dev get SIGINT (as Ctrl-C) and
# are waited for, then whatever is left of the two apps is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
repeats=${1:-3}
seconds=${2:-5}
case "$repeats" in '' | *[!0-9]* | 0) echo "usage: $0 [REPEATS] [SECONDS]" >&2; exit 2 ;; esac
case "$seconds" in '' | *[!0-9]* | 0) echo "usage: $0 [REPEATS] [SECONDS]" >&2; exit 2 ;; esac

berth=${BERTH:-"${CARGO_TARGET_DIR:-$root/target}/release/berth"}
if [ ! -x "$berth" ] && [ -z "${BERTH:-}" ]; then
    cargo build --release -q -p berth-cli
fi
server_bin="$root/examples/hello/server"
[ -x "$server_bin" ] || sh examples/hello/build-server.sh >&2
command -v wrk >/dev/null || { echo "wrk is missing: run bench/setup.sh" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-js.XXXXXX")
# The apps' names: A's from its berth.toml, B's from its folder (alchemy.run.ts names none).
app_a="bench-js-route-$$"
app_b="bench-js-worker-$$"
app_c="bench-js-floor-$$"
dir_a="$tmp/$app_a"
dir_b="$tmp/$app_b"
dir_c="$tmp/$app_c"
pid_a=""
pid_b=""
pid_c=""

log() { echo "$(date +%T) $*" >&2; }

# SIGINT (as Ctrl-C) to a berth dev; waits (at most 30 s) until it has exited, then
# SIGTERM, then SIGKILL.
stop_dev() { # PID
    local pid=$1 sig deadline
    [ -n "$pid" ] || return 0
    for sig in INT TERM KILL; do
        kill -0 "$pid" 2>/dev/null || break
        kill -"$sig" "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.05
        done
        kill -0 "$pid" 2>/dev/null && echo "berth dev ($pid) still runs 30 s after SIG$sig" >&2
    done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local code=$?
    set +e
    stop_dev "$pid_a"
    stop_dev "$pid_b"
    stop_dev "$pid_c"
    local app
    for app in "$app_a" "$app_b" "$app_c"; do
        docker ps -aq --filter "label=berth.app=$app" | xargs -r docker rm -f >/dev/null
        # By tag, keeping parent layers: other builds may share them.
        docker images --format '{{.Repository}}:{{.Tag}}' --filter "reference=berth-dev/$app-*" |
            xargs -r docker rmi --no-prune >/dev/null 2>&1
    done
    if [ "$code" -ne 0 ]; then
        for f in "$tmp"/*.log; do
            [ -s "$f" ] || continue
            echo "$f ends with:" >&2
            tail -n 20 "$f" >&2
        done
    fi
    rm -rf "$tmp"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The same image for both: the static server, copied in beforehand (no build.command).
for d in "$dir_a" "$dir_b" "$dir_c"; do
    mkdir -p "$d"
    cp "$server_bin" "$d/server"
    printf 'FROM scratch\nCOPY server /server\nEXPOSE 8080\nENTRYPOINT ["/server"]\n' >"$d/Dockerfile"
done
cat >"$dir_a/berth.toml" <<EOF
name = "$app_a"

[containers.my-container]
class_name = "MyContainer"
build = { context = "." }

[containers.my-container.class]
default_port = 8080
sleep_after = "10m"

[workers.my-worker]
bindings = { MY_CONTAINER = "my-container" }
routes = [{ path = "/*", binding = "MY_CONTAINER", instance = "container" }]
EOF
mkdir -p "$dir_b/src"
cat >"$dir_b/alchemy.run.ts" <<'EOF'
import { Container, Worker } from "alchemy/cloudflare";
import type { MyContainer } from "./src/container.ts";

const container = await Container<MyContainer>("my-container", {
  className: "MyContainer",
});

export const worker = await Worker("my-worker", {
  name: "my-worker",
  entrypoint: "./src/worker.ts",
  bindings: {
    MY_CONTAINER: container,
  },
});
EOF
cat >"$dir_b/src/container.ts" <<'EOF'
import { Container } from "@cloudflare/containers";

export class MyContainer extends Container {
  defaultPort = 8080;
  sleepAfter = "10m";
}
EOF
cat >"$dir_b/src/worker.ts" <<'EOF'
import { getContainer } from "@cloudflare/containers";

export { MyContainer } from "./container.ts";

export default {
  async fetch(request: Request, env: any): Promise<Response> {
    return getContainer(env.MY_CONTAINER, "container").fetch(request);
  },
};
EOF
mkdir -p "$dir_c/src"
cp "$dir_b/alchemy.run.ts" "$dir_c/"
cp "$dir_b/src/container.ts" "$dir_c/src/"
cat >"$dir_c/src/worker.ts" <<'EOF'
export { MyContainer } from "./container.ts";

export default {
  async fetch(request: Request, env: any): Promise<Response> {
    return new Response("Hi, I'm a container and this is my message: ", {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  },
};
EOF

# Starts berth dev on DIR; prints its address once it says "Ready on" (at most 300 s:
# the first build of the image may take that long on a cold cache).
start_dev() { # DIR NAME -> sets dev_pid, dev_addr
    local out="$tmp/$2.out"
    : >"$out"
    "$berth" dev "$1" --port 0 >"$out" 2>"$tmp/$2.log" </dev/null &
    dev_pid=$!
    local deadline=$((SECONDS + 300))
    until grep -q '^Ready on http://' "$out"; do
        if ! kill -0 "$dev_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            echo "berth dev $1 did not get ready" >&2
            exit 1
        fi
        sleep 0.05
    done
    dev_addr=$(sed -n 's/^Ready on http:\/\/\([^ ]*\).*/\1/p' "$out" | head -1)
}

start_dev "$dir_a" route
pid_a=$dev_pid
addr_a=$dev_addr
start_dev "$dir_b" worker
pid_b=$dev_pid
addr_b=$dev_addr
start_dev "$dir_c" floor
pid_c=$dev_pid
addr_c=$dev_addr

# Warm both: the first request starts each app's container.
for addr in "$addr_a" "$addr_b"; do
    code=$(curl -s -o /dev/null --max-time 60 -w '%{http_code}' "http://$addr/" || true)
    [ "$code" = 200 ] || { echo "warm-up of $addr answered $code" >&2; exit 1; }
done
ids_a=$(docker ps -q --filter "label=berth.app=$app_a")
ids_b=$(docker ps -q --filter "label=berth.app=$app_b")
[ "$(echo "$ids_a" | wc -w)" -eq 1 ] && [ "$(echo "$ids_b" | wc -w)" -eq 1 ] ||
    { echo "expected one container per app, got '$ids_a' and '$ids_b'" >&2; exit 1; }
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$ids_a")
direct="$ip:8080"
code=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "http://$direct/" || true)
[ "$code" = 200 ] || { echo "the container at $direct answered $code" >&2; exit 1; }
body_a=$(curl -s --max-time 5 "http://$addr_a/")
body_b=$(curl -s --max-time 5 "http://$addr_b/")
body_c=$(curl -s --max-time 5 "http://$addr_c/")
[ "$body_a" = "$body_b" ] || { echo "A and B answer differently: '$body_a' / '$body_b'" >&2; exit 1; }
[ "$body_a" = "$body_c" ] || { echo "A and C answer differently: '$body_a' / '$body_c'" >&2; exit 1; }
log "route (A) on $addr_a, worker (B) on $addr_b, floor (C) on $addr_c, A's container at $direct; wrk ${seconds} s per run"

# The CPU time berth process PID has used, in clock ticks (user and system); 0 for none.
ticks() { # PID
    if [ -z "$1" ]; then echo 0; return; fi
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)

# One wrk run; appends "REQ_PER_SEC P50_US P99_US CPU_US_PER_REQUEST" to
# $tmp/TARGET-CONNECTIONS (the CPU time of berth process PID, 0 without one).
measure() { # TARGET ADDR CONNECTIONS [PID]
    local threads=$3 out before after
    [ "$threads" -gt 2 ] && threads=2
    before=$(ticks "${4:-}")
    out=$(wrk -t"$threads" -c"$3" -d"${seconds}s" --latency "http://$2/")
    after=$(ticks "${4:-}")
    if echo "$out" | grep -q -e 'Socket errors' -e 'Non-2xx'; then
        echo "wrk against $1 at $3 connections saw errors:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$out" | awk -v ticks="$((after - before))" -v hz="$hz" '
        function us(v) {
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return v * 1000
            if (v ~ /s$/) return v * 1000000
            return -1
        }
        $1 == "50%" { p50 = us($2) }
        $1 == "99%" { p99 = us($2) }
        $1 == "Requests/sec:" { rps = $2 }
        $2 == "requests" && $3 == "in" { n = $1 }
        END {
            if (rps == "" || p50 < 0 || p99 < 0 || n + 0 == 0) exit 1
            printf "%s %.1f %.1f %.1f\n", rps, p50, p99, ticks * 1000000 / hz / n
        }
    ' >>"$tmp/$1-$3" || { echo "unexpected wrk output:" >&2; echo "$out" >&2; exit 1; }
    log "round $round, $3 connections, $1: $(tail -1 "$tmp/$1-$3")"
}

for round in $(seq 1 "$repeats"); do
    for c in 1 16 64; do
        measure direct "$direct" "$c"
        measure route "$addr_a" "$c" "$pid_a"
        measure worker "$addr_b" "$c" "$pid_b"
        measure floor "$addr_c" "$c" "$pid_c"
    done
done

# Median of column N of FILE.
median() { # FILE N
    awk -v n="$2" '{ print $n }' "$1" | sort -g | awk '{ v[NR] = $1 } END {
        printf "%.1f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() { # FILE N -> min-max
    awk -v n="$2" '{ print $n }' "$1" | sort -g | awk '{ v[NR] = $1 } END { printf "%.0f-%.0f", v[1], v[NR] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a - b }'; }
int() { awk -v a="$1" 'BEGIN { printf "%.0f", a }'; }

echo
echo "$repeats rounds of wrk, ${seconds} s per run, interleaved direct / route / worker / floor; medians (min-max); $(nproc) cores, Docker Engine $(docker version --format '{{.Server.Version}}'), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| connections | direct req/s | route (A) req/s | worker (B) req/s | JS floor (C) req/s | worker / route | floor / route | route / direct | worker / direct |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in 1 16 64; do
    d=$(median "$tmp/direct-$c" 1)
    a=$(median "$tmp/route-$c" 1)
    b=$(median "$tmp/worker-$c" 1)
    f=$(median "$tmp/floor-$c" 1)
    echo "| $c | $(int "$d") ($(range "$tmp/direct-$c" 1)) | $(int "$a") ($(range "$tmp/route-$c" 1)) | $(int "$b") ($(range "$tmp/worker-$c" 1)) | $(int "$f") ($(range "$tmp/floor-$c" 1)) | $(ratio "$b" "$a") | $(ratio "$f" "$a") | $(ratio "$a" "$d") | $(ratio "$b" "$d") |"
done
echo
echo "Latency at 1 connection (wrk's percentiles, median of the rounds):"
echo
echo "| | p50 | p99 | added p50 over direct | added p99 over direct | added p50 over route | added p99 over route |"
echo "|---|---|---|---|---|---|---|"
d50=$(median "$tmp/direct-1" 2)
d99=$(median "$tmp/direct-1" 3)
a50=$(median "$tmp/route-1" 2)
a99=$(median "$tmp/route-1" 3)
for t in direct route worker floor; do
    p50=$(median "$tmp/$t-1" 2)
    p99=$(median "$tmp/$t-1" 3)
    if [ "$t" = direct ]; then over_a="-"; over_a99="-"; else
        over_a="$(minus "$p50" "$a50") µs"; over_a99="$(minus "$p99" "$a99") µs"; fi
    [ "$t" = route ] && { over_a="0 µs"; over_a99="0 µs"; }
    echo "| $t | $(int "$p50") µs | $(int "$p99") µs | $(minus "$p50" "$d50") µs | $(minus "$p99" "$d99") µs | $over_a | $over_a99 |"
done
echo
echo "berth's CPU time per request (user and system, from /proc/PID/stat over each run; median of the rounds):"
echo
echo "| connections | route (A) | worker (B) | JS floor (C) | worker / route | floor / route |"
echo "|---|---|---|---|---|---|"
for c in 1 16 64; do
    a=$(median "$tmp/route-$c" 4)
    b=$(median "$tmp/worker-$c" 4)
    f=$(median "$tmp/floor-$c" 4)
    echo "| $c | $(int "$a") µs | $(int "$b") µs | $(int "$f") µs | $(ratio "$b" "$a") | $(ratio "$f" "$a") |"
done
