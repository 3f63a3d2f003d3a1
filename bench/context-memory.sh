#!/bin/sh
# Peak memory of `berth dev` while it hashes and sends a large build context, against the
# same with a one-file context, measured in the same run. The Dockerfile fails at its
# first step, after the engine has received the whole context, so nothing is kept.
#
#   bench/context-memory.sh [BERTH] [MiB]     # defaults: target/release/berth, 300
set -eu
berth=${1:-target/release/berth}
mib=${2:-300}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

peak_kib() { # app folder -> peak resident set of berth dev, in KiB
    /usr/bin/time -v "$berth" dev --port 0 "$1" </dev/null 2>"$dir/log" >/dev/null || true
    grep -q 'COPY missing' "$dir/log" || { cat "$dir/log" >&2; exit 1; }
    sed -n 's/.*Maximum resident set size (kbytes): //p' "$dir/log"
}
app() { # folder, app name
    mkdir -p "$1"
    printf 'FROM scratch\nCOPY missing /x\n' >"$1/Dockerfile"
    printf 'name = "%s"\n\n[containers.app]\n' "$2" >"$1/berth.toml"
}

app "$dir/small" context-memory-small
app "$dir/large" context-memory-large
head -c "${mib}M" /dev/urandom >"$dir/large/data"
small=$(peak_kib "$dir/small")
large=$(peak_kib "$dir/large")
context_kib=$((mib * 1024))
echo "| context | peak RSS | (peak RSS - baseline) / context size |"
echo "|---|---|---|"
echo "| 1 file, 30 bytes (baseline) | $((small / 1024)) MiB | |"
awk -v s="$small" -v l="$large" -v c="$context_kib" -v m="$mib" \
    'BEGIN { printf "| %d MiB file | %d MiB | %.3f |\n", m, l / 1024, (l - s) / c }'
