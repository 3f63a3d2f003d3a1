#!/usr/bin/env bash
# berth serve and berth deploy against what the same work costs with docker alone, each
# measured in the same run, on the same FROM-scratch image (the static test server):
#   1. a deploy with no change, against docker build (all cached) + docker push of the
#      tag the registry has already;
#   2. a deploy that changes one environment variable of a class with 10 running
#      instances, until it is active, against docker build + docker push + 10 docker run;
#   3. a restart of berth serve (SIGTERM, then a new process on the same data folder)
#      while a client sends requests, against the time the process restart takes.
# It prints the figures as Markdown.
#
#   bench/deploy.sh [REPEATS]       # default 5
#   BENCH_DEPLOY_KEEP_LOGS=DIR      # copies the logs of berth serve and berth deploy to DIR
#
# Builds ${CARGO_TARGET_DIR:-target}/release/berth and the static server when missing,
# starts the local registry (scripts/registry.sh), and runs its own berth serve on free
# loopback ports with a temporary data folder. It leaves no container and no data folder
# behind (berth destroy --yes, then SIGTERM to the server); the images stay in the
# registry.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
repeats=${1:-5}
case "$repeats" in '' | *[!0-9]* | 0) echo "usage: $0 [REPEATS]" >&2; exit 2 ;; esac

berth="${CARGO_TARGET_DIR:-$root/target}/release/berth"
if [ ! -x "$berth" ]; then
    cargo build --release -q -p berth-cli
fi
server_bin="$root/examples/hello/server"
[ -x "$server_bin" ] || sh examples/hello/build-server.sh >&2
registry=$(bash scripts/registry.sh)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-deploy.XXXXXX")
data="$tmp/data"
appdir="$tmp/app"
app="bench-deploy-$$"
host="web.$app.localhost"
serve_pid=""
public=""
control=""
client_pid=""

log() { echo "$(date +%T) $*" >&2; }

# Seconds since the epoch, to the microsecond, without a fork.
now() { echo "$EPOCHREALTIME"; }
# Milliseconds between two `now` readings.
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f\n", (b - a) * 1000 }'; }

# Starts berth serve on the public and control addresses given (127.0.0.1:0 at first) and
# waits (at most 60 s) until it prints where it listens. Each line of its stdout is
# written to $tmp/serve-N.out after the time it was printed.
serves=0
start_serve() {
    serves=$((serves + 1))
    local out="$tmp/serve-$serves.out"
    : >"$out"
    "$berth" serve --data "$data" --listen "$1" --control "$2" --registry "$registry" \
        > >(while IFS= read -r line; do echo "$EPOCHREALTIME $line"; done >"$out") \
        2>>"$tmp/serve.log" </dev/null &
    serve_pid=$!
    local deadline=$((SECONDS + 60))
    until grep -q ' Control on http://' "$out"; do
        if ! kill -0 "$serve_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            echo "berth serve did not start; its log ends with:" >&2
            tail -n 20 "$tmp/serve.log" >&2
            exit 1
        fi
        sleep 0.005
    done
    public=$(sed -n 's/^[0-9.]* Public on http:\/\///p' "$out")
    control=$(sed -n 's/^[0-9.]* Control on http:\/\///p' "$out")
    public_at=$(sed -n 's/^\([0-9.]*\) Public on .*/\1/p' "$out")
}

# SIGTERM to berth serve; waits (at most 30 s) until it has exited.
stop_serve() {
    [ -n "$serve_pid" ] || return 0
    kill -TERM "$serve_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$serve_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.005
    done
    if kill -0 "$serve_pid" 2>/dev/null; then
        echo "berth serve did not exit within 30 s of SIGTERM" >&2
        kill -KILL "$serve_pid" 2>/dev/null || true
    fi
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=""
}

cleanup() {
    local code=$?
    set +e
    [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        BERTH_SERVER="http://$control" "$berth" destroy --app "$app" --yes >/dev/null 2>>"$tmp/serve.log" ||
            echo "berth destroy failed; see the log" >&2
    fi
    stop_serve
    docker ps -aq --filter "label=bench.deploy=$app" | xargs -r docker rm -f >/dev/null
    docker ps -aq --filter "label=berth.app=$app" | xargs -r docker rm -f >/dev/null
    docker images -q --filter "reference=berth-dev/$app-*" | xargs -r docker rmi -f >/dev/null 2>&1
    docker images -q --filter "reference=*/$app-*" | xargs -r docker rmi -f >/dev/null 2>&1
    if [ "$code" -ne 0 ]; then
        for f in deploy.log serve.log; do
            [ -s "$tmp/$f" ] || continue
            echo "$f ends with:" >&2
            tail -n 20 "$tmp/$f" >&2
        done
    fi
    [ -n "${BENCH_DEPLOY_KEEP_LOGS:-}" ] && cp "$tmp"/*.log "$BENCH_DEPLOY_KEEP_LOGS"/ 2>/dev/null
    rm -rf "$tmp"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The app: a FROM-scratch image with the prebuilt server copied in by build.command (so no
# compiler runs while timing), one class whose instances are named by the x-user header.
mkdir -p "$appdir"
printf 'FROM scratch\nCOPY server /server\nENTRYPOINT ["/server"]\n' >"$appdir/Dockerfile"
printf '*\n!Dockerfile\n!server\n' >"$appdir/.dockerignore"
manifest() { # MESSAGE
    cat >"$appdir/berth.toml" <<EOF
name = "$app"

[containers.app]
class_name = "App"
build = { context = ".", command = "cp $server_bin server" }
rollout = { steps = [10, 100], grace = "1s" }
max_instances = 20

[containers.app.class]
default_port = 8080
env_vars = { MESSAGE = "$1" }

[workers.web]
bindings = { APP = "app" }
routes = [{ path = "/*", binding = "APP", instance = { from = "header", name = "x-user" } }]
EOF
}

deploy() { # -> stdout of berth deploy, which must succeed
    BERTH_SERVER="http://$control" "$berth" deploy "$appdir" --yes 2>>"$tmp/deploy.log" </dev/null
}

get() { # USER -> status and body, one line
    curl -s --max-time 5 -H "Host: $host" -H "x-user: $1" -w ' %{http_code}' "http://$public/" || true
}

running() { # -> ids of the app's running containers, sorted, one a line
    docker ps -q --no-trunc --filter "label=berth.app=$app" | sort
}

# Starts the 10 instances u0 … u9 (each answers with MESSAGE), checking the answer.
wake_ten() { # MESSAGE
    local u answer
    for u in 0 1 2 3 4 5 6 7 8 9; do
        answer=$(get "u$u")
        if [ "$answer" != "Hi, I'm a container and this is my message: $1 200" ]; then
            echo "u$u answered '$answer', not the message $1" >&2
            exit 1
        fi
    done
    local n
    n=$(running | wc -l)
    [ "$n" -eq 10 ] || { echo "$n containers run, not 10" >&2; exit 1; }
}

# Median, min and max of the numbers on stdin, as "median min max".
stats() {
    sort -n | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.0f %.0f %.0f\n", m, v[1], v[NR] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

BERTH_TOKEN=$("$berth" serve --print-token --data "$data")
export BERTH_TOKEN
start_serve 127.0.0.1:0 127.0.0.1:0
log "berth serve on $public (control $control), registry $registry, app $app in $appdir"

version=1
manifest "v$version"
out=$(deploy)
case "$out" in *"is active"*) ;; *) echo "first deploy: $out" >&2; exit 1 ;; esac
image=$(docker images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$registry/$app-app:*" | head -1)
[ -n "$image" ] || { echo "no image $registry/$app-app:* after the first deploy" >&2; exit 1; }
# The baseline's image: the same context built by docker itself, under a repository of its
# own (berth labels its images with a content hash, so docker's build is another image, and
# pushing it under berth's tag would change what berth finds in the registry).
base="$registry/$app-baseline:1"
docker build -q -t "$base" "$appdir" >/dev/null 2>&1
docker push -q "$base" >/dev/null
log "deployed $image; baseline image $base"

# 1. No change: berth deploy, against docker build + docker push of the same tag.
: >"$tmp/nochange.berth"
: >"$tmp/nochange.docker"
for i in $(seq 1 "$repeats"); do
    t0=$(now)
    out=$(deploy)
    t1=$(now)
    [ "$out" = "no changes" ] || { echo "an unchanged deploy said: $out" >&2; exit 1; }
    ms "$t0" "$t1" >>"$tmp/nochange.berth"
    t0=$(now)
    docker build -q -t "$base" "$appdir" >/dev/null 2>&1
    docker push -q "$base" >/dev/null
    t1=$(now)
    ms "$t0" "$t1" >>"$tmp/nochange.docker"
    log "no change $i: berth $(tail -1 "$tmp/nochange.berth") ms, docker $(tail -1 "$tmp/nochange.docker") ms"
done

# 2. One env var of a class with 10 running instances: berth deploy until active, against
# docker build + docker push + 10 docker run -d (removed afterwards, outside the timing).
: >"$tmp/change.berth"
: >"$tmp/change.docker"
for i in $(seq 1 "$repeats"); do
    wake_ten "v$version"
    before=$(running)
    version=$((version + 1))
    manifest "v$version"
    t0=$(now)
    out=$(deploy)
    t1=$(now)
    case "$out" in *"is active"*) ;; *) echo "deploy of v$version: $out" >&2; exit 1 ;; esac
    ms "$t0" "$t1" >>"$tmp/change.berth"
    left=$(comm -12 <(echo "$before") <(running) | wc -l)
    [ "$left" -eq 0 ] || { echo "$left of the old containers still run after the deploy" >&2; exit 1; }
    answer=$(get u0)
    [ "$answer" = "Hi, I'm a container and this is my message: v$version 200" ] ||
        { echo "after the deploy of v$version, u0 answered '$answer'" >&2; exit 1; }

    t0=$(now)
    docker build -q -t "$base" "$appdir" >/dev/null 2>&1
    docker push -q "$base" >/dev/null
    for u in 0 1 2 3 4 5 6 7 8 9; do
        docker run -d --label "bench.deploy=$app" -e "MESSAGE=v$version" "$base" >/dev/null
    done
    t1=$(now)
    ms "$t0" "$t1" >>"$tmp/change.docker"
    docker ps -aq --filter "label=bench.deploy=$app" | xargs -r docker rm -f >/dev/null
    log "change $i: berth $(tail -1 "$tmp/change.berth") ms, docker $(tail -1 "$tmp/change.docker") ms"
done

# 3. A restart while a client sends a request every 10 ms (at most 3,000 requests, 30 s).
wake_ten "v$version"
: >"$tmp/restart.down"
: >"$tmp/restart.proc"
: >"$tmp/restart.slow"
for i in $(seq 1 "$repeats"); do
    before=$(running)
    reqlog="$tmp/requests-$i"
    : >"$reqlog"
    (
        deadline=$((SECONDS + 30))
        for _ in $(seq 1 3000); do
            [ "$SECONDS" -lt "$deadline" ] || break
            [ -e "$tmp/stop-client" ] && break
            a=$EPOCHREALTIME
            code=$(curl -s -o /dev/null --max-time 5 -H "Host: $host" -H "x-user: u0" \
                -w '%{http_code}' "http://$public/" 2>/dev/null) || code=000
            echo "$a $EPOCHREALTIME $code" >>"$reqlog"
            sleep 0.01
        done
    ) &
    client_pid=$!
    sleep 1
    old_public=$public
    old_control=$control
    term_at=$(now)
    stop_serve
    exited_at=$(now)
    start_serve "$old_public" "$old_control"
    [ "$public" = "$old_public" ] || { echo "the public address changed: $public" >&2; exit 1; }
    sleep 1
    touch "$tmp/stop-client"
    wait "$client_pid"
    client_pid=""
    rm -f "$tmp/stop-client"
    after=$(running)
    [ "$before" = "$after" ] || { echo "the containers changed over the restart" >&2; exit 1; }
    # The longest stretch of failures: from the start of its first failed request to the
    # start of the next request that succeeded.
    read -r down failed total slow codes < <(awk '
        { n++ }
        $3 != "200" { failed++; if (start == "") start = $1; if (!seen[$3]++) codes = codes (codes ? "," : "") $3 }
        $3 == "200" { if (start != "") { d = $1 - start; if (d > max) max = d; start = "" }
                      if ($2 - $1 > slow) slow = $2 - $1 }
        END { if (start != "") { print "unrecovered"; exit }
              printf "%.0f %d %d %.0f %s\n", max * 1000, failed, n, slow * 1000, codes }' "$reqlog")
    [ "$down" != unrecovered ] || { echo "requests still failed after the restart" >&2; exit 1; }
    echo "$down" >>"$tmp/restart.down"
    echo "$slow" >>"$tmp/restart.slow"
    ms "$term_at" "$public_at" >>"$tmp/restart.proc"
    log "restart $i: failures for $down ms ($failed of $total requests failed, with status $codes (000: no connection); slowest success $slow ms);" \
        "SIGTERM to exit $(ms "$term_at" "$exited_at") ms, SIGTERM to 'Public on' $(tail -1 "$tmp/restart.proc") ms;" \
        "$(echo "$after" | wc -l) containers, the same ids"
done

read -r nb_med nb_min nb_max < <(stats <"$tmp/nochange.berth")
read -r nd_med nd_min nd_max < <(stats <"$tmp/nochange.docker")
read -r cb_med cb_min cb_max < <(stats <"$tmp/change.berth")
read -r cd_med cd_min cd_max < <(stats <"$tmp/change.docker")
read -r rd_med rd_min rd_max < <(stats <"$tmp/restart.down")
read -r rp_med rp_min rp_max < <(stats <"$tmp/restart.proc")
read -r rs_med rs_min rs_max < <(stats <"$tmp/restart.slow")
echo
echo "$repeats repetitions each; $(nproc) cores, Docker Engine $(docker version --format '{{.Server.Version}}'), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| | baseline median (min-max) | berth median (min-max) | berth / baseline |"
echo "|---|---|---|---|"
echo "| deploy with no change; baseline docker build (cached) + docker push (pushed) | $nd_med ms ($nd_min-$nd_max) | $nb_med ms ($nb_min-$nb_max) | $(ratio "$nb_med" "$nd_med") |"
echo "| one env var, 10 running instances, until active; baseline docker build + push + 10 docker run -d | $cd_med ms ($cd_min-$cd_max) | $cb_med ms ($cb_min-$cb_max) | $(ratio "$cb_med" "$cd_med") |"
echo "| restart: longest stretch of failed requests; baseline SIGTERM to 'Public on' of the new process | $rp_med ms ($rp_min-$rp_max) | $rd_med ms ($rd_min-$rd_max) | $(ratio "$rd_med" "$rp_med") |"
echo
echo "Slowest successful request during a restart: $rs_med ms median ($rs_min-$rs_max)."
