#!/usr/bin/env bash
# Runs schemathesis (the OpenAPI fuzzer) with the arguments given, installing it first,
# at the version pinned below, into a virtualenv that berth owns:
# ${BERTH_TOOLS_DIR:-$HOME/.cache/berth-tools}/schemathesis-$version.
#
# Installing is done once and is silent afterwards; a half-finished install (no marker
# file) is redone. Several runs at once install one copy between them.
#
#   scripts/schemathesis.sh run http://127.0.0.1:PORT/v1/openapi.json -H "Authorization: Bearer T"
set -euo pipefail

version=4.32.5
tools="${BERTH_TOOLS_DIR:-${HOME:-/tmp}/.cache/berth-tools}"
venv="$tools/schemathesis-$version"
marker="$venv/.installed"
lock_wait=600

if [ ! -e "$marker" ]; then
    python="${PYTHON:-python3}"
    command -v "$python" >/dev/null 2>&1 || {
        echo "$python is missing: schemathesis needs Python 3.9 or later (apt-get install python3 python3-venv), or set PYTHON to one" >&2
        exit 1
    }
    mkdir -p "$tools"
    exec 9>"$tools/schemathesis.lock"
    if ! flock -w "$lock_wait" 9; then
        echo "another run of $0 held $tools/schemathesis.lock for over ${lock_wait}s; if none runs, remove that file and try again" >&2
        exit 1
    fi
    # Another run may have installed it while this one waited for the lock.
    if [ ! -e "$marker" ]; then
        echo "installing schemathesis $version into $venv" >&2
        rm -rf "$venv"
        if ! "$python" -m venv "$venv" >&2; then
            echo "could not make a virtualenv with $python; on Debian, apt-get install python3-venv, then run $0 again" >&2
            rm -rf "$venv"
            exit 1
        fi
        if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version" >&2; then
            echo "could not install schemathesis $version from PyPI into $venv; check that PyPI can be reached, then run $0 again" >&2
            rm -rf "$venv"
            exit 1
        fi
        touch "$marker"
    fi
    exec 9>&-
fi

exec "$venv/bin/schemathesis" "$@"
