#!/usr/bin/env bash
# Makes sure Debian's prometheus is installed for berth's metrics tests, and prints the
# path of its binary on stdout. Each test starts its own Prometheus from it, with its own
# config, port and storage, so that nothing is shared between tests or left running
# (the package's own service, if any, is not used).
set -euo pipefail

lock_wait=600
dir="${TMPDIR:-/tmp}/berth-prometheus"

found() {
    command -v prometheus 2>/dev/null
}

if path="$(found)"; then
    echo "$path"
    exit 0
fi

mkdir -p "$dir"
exec 9>"$dir/lock"
if ! flock -w "$lock_wait" 9; then
    echo "another run of $0 held $dir/lock for over ${lock_wait}s; if none runs, remove that file and try again" >&2
    exit 1
fi
# Another run may have installed it while this one waited for the lock.
if path="$(found)"; then
    echo "$path"
    exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "installing prometheus needs root, and sudo is missing: install it as root (apt-get install prometheus), then run $0 again" >&2
        exit 1
    fi
fi
apt=(${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive)
echo "installing prometheus from Debian's packages" >&2
# --no-install-recommends: the exporters and the web assets are not needed to scrape.
if ! "${apt[@]}" apt-get install -y -qq --no-install-recommends prometheus >&2; then
    "${apt[@]}" apt-get update -qq >&2
    if ! "${apt[@]}" apt-get install -y -qq --no-install-recommends prometheus >&2; then
        echo "could not install prometheus with apt-get; install Debian's package prometheus by hand, then run $0 again" >&2
        exit 1
    fi
fi
# The package starts its service where there is an init system: berth's tests do not
# use it, and stop it so that it does not take port 9090.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    ${as_root[@]+"${as_root[@]}"} systemctl stop prometheus >&2 || true
fi
path="$(found)" || {
    echo "the package prometheus is installed, but no prometheus binary is on PATH ($PATH)" >&2
    exit 1
}
echo "$path"
