#!/bin/sh
# Compiles the example's server (berth's small test server) as a static binary into this
# folder, where the Dockerfile copies it from: examples/hello's script does the work.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sh "$here/../hello/build-server.sh"
cp "$here/../hello/server" "$here/server"
