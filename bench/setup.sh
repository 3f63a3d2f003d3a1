#!/bin/sh
# Installs what the benchmarks compare berth with: wrk (the load generator) and nginx
# (the reverse proxy baseline), from Debian's packages.
set -eu
missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v nginx >/dev/null 2>&1 || missing="$missing nginx-light"
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "installing$missing needs root: run sudo $0" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
wrk --version 2>&1 | head -1 || true
nginx -v
