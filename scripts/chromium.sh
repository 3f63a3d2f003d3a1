#!/usr/bin/env bash
# Makes sure Debian's chromium is installed for berth's dashboard test, and prints the
# path of its binary on stdout. The test runs it headless, with a profile of its own,
# against a server on 127.0.0.1 only.
set -euo pipefail

# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/apt.sh"

lock_wait=900
dir="${TMPDIR:-/tmp}/berth-chromium"

found() {
    command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null
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

# --no-install-recommends: the headless browser needs no extensions, drivers or fonts
# beyond what the package depends on.
install_packages --no-install-recommends chromium
path="$(found)" || {
    echo "the package chromium is installed, but no chromium binary is on PATH ($PATH)" >&2
    exit 1
}
echo "$path"
