#!/usr/bin/env bash
# Makes sure Debian's prometheus is installed for berth's metrics tests, and prints the
# path of its binary on stdout. Each test starts its own Prometheus from it, with its own
# config, port and storage, so that nothing is shared between tests or left running
# (the package's own service, if any, is not used).
set -euo pipefail

# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/apt.sh"

lock_wait=600
dir="${TMPDIR:-/tmp}/berth-prometheus"

found() {
    command -v prometheus 2>/dev/null
}

if path="$(found)"; then
    echo "$path"
    exit 0
fi

hold_lock "$dir" "$lock_wait"
# Another run may have installed it while this one waited for the lock.
if path="$(found)"; then
    echo "$path"
    exit 0
fi

# --no-install-recommends: the exporters and the web assets are not needed to scrape.
install_packages --no-install-recommends prometheus
# The package starts its service where there is an init system: berth's tests do not
# use it, and stop it so that it does not take port 9090.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    as_root systemctl stop prometheus >&2 || true
fi
path="$(found)" || {
    echo "the package prometheus is installed, but no prometheus binary is on PATH ($PATH)" >&2
    exit 1
}
echo "$path"
