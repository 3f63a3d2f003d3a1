#!/usr/bin/env bash
# Starts a local OCI registry (Debian's docker-registry, Distribution 2.8) for berth's
# tests and CI on 127.0.0.1:${BERTH_TEST_REGISTRY_PORT:-5000}, installing the package
# when the binary is missing, and prints its address (host:port) on stdout.
#
# Its config, storage, log and pid file live in ${TMPDIR:-/tmp}/berth-registry/; neither
# the package's service nor /etc is used. A registry that already answers is left as it
# is, and runs from several processes at once start one registry between them. The
# Docker Engine pushes to 127.0.0.0/8 over plain HTTP without further configuration.
set -euo pipefail

port="${BERTH_TEST_REGISTRY_PORT:-5000}"
case "$port" in
    '' | *[!0-9]*)
        echo "BERTH_TEST_REGISTRY_PORT must be a port number, not '$port'" >&2
        exit 2
        ;;
esac
addr="127.0.0.1:$port"
dir="${TMPDIR:-/tmp}/berth-registry"
config="$dir/config-$port.yml"
storage="$dir/storage"
log="$dir/registry-$port.log"
pidfile="$dir/registry-$port.pid"
# Seconds to wait for another run of this script (which may be installing), and for
# the registry to answer.
lock_wait=300
start_wait=20

# Whether a registry answers GET /v2/ with 200.
answers() {
    curl -fsS -o /dev/null --max-time 2 "http://$addr/v2/" 2>/dev/null
}

# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/apt.sh"

# Whether the pid in the pid file is a registry this script started.
ours_running() {
    local pid
    [ -s "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "docker-registry serve $config"
}

if command -v curl >/dev/null 2>&1 && answers; then
    echo "$addr"
    exit 0
fi

hold_lock "$dir" "$lock_wait"

# Another run may have started it while this one waited for the lock.
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if [ ${#missing[@]} -gt 0 ]; then
    install_packages "${missing[@]}"
fi
command -v docker-registry >/dev/null 2>&1 || {
    echo "the package docker-registry is installed, but no docker-registry binary is on PATH ($PATH)" >&2
    exit 1
}
if answers; then
    echo "$addr"
    exit 0
fi

# One of ours that does not answer is stuck: it makes way for a new one.
if ours_running; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 20); do
        ours_running || break
        sleep 0.1
    done
fi

mkdir -p "$storage"
cat >"$config" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
http:
  addr: $addr
EOF

# Detached from this script: its own session, no terminal, and none of this script's
# file descriptors (a caller reading stdout would otherwise wait for the registry to end,
# and the lock would stay held).
: >"$log"
setsid nohup docker-registry serve "$config" </dev/null >>"$log" 2>&1 9>&- &
pid=$!
echo "$pid" >"$pidfile"

deadline=$((SECONDS + start_wait))
tries=0
until answers; do
    tries=$((tries + 1))
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "the registry on $addr exited at start; its log ($log) ends with:" >&2
        tail -n 20 "$log" >&2
        echo "if the port is taken, set BERTH_TEST_REGISTRY_PORT to a free one" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ] || [ "$tries" -ge $((start_wait * 10)) ]; then
        echo "the registry on $addr did not answer GET /v2/ within ${start_wait}s; its log ($log) ends with:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    sleep 0.1
done
echo "registry on $addr (pid $pid, storage $storage, log $log)" >&2
echo "$addr"
