#!/bin/sh
# Compiles the example's server (berth's small test server) as a static binary into this
# folder, where the Dockerfile copies it from. berth runs this as build.command.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
    --manifest-path "$root/Cargo.toml" -p berth-test-server \
    --target "$target" --target-dir "$root/target/static"
cp "$root/target/static/$target/release/berth-test-server" "$here/server"
