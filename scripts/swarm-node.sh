#!/usr/bin/env bash
# Builds the image of one node of the test Swarm (`cargo test --test swarm`): a container
# that runs its own dockerd and containerd. No image can be pulled, so it is assembled
# with `docker import` from this machine's own Docker Engine binaries, iptables (nft) with
# its plugins, busybox, and the shared libraries `ldd` lists for them.
#
# Prints the image's tag, berth-swarm-node:<hash of what went in>; builds it only when no
# image has that tag, so a second run costs a hash.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/apt.sh"

command -v busybox >/dev/null 2>&1 || install_packages busybox-static
for tool in dockerd containerd containerd-shim-runc-v2 runc docker-init docker-proxy xtables-nft-multi; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "$tool is missing: the Swarm nodes are made of this machine's Docker Engine (docker.io) and iptables" >&2
        exit 1
    }
done

binaries=()
for tool in dockerd containerd containerd-shim-runc-v2 runc docker-init docker-proxy xtables-nft-multi busybox; do
    binaries+=("$(readlink -f "$(command -v "$tool")")")
done
plugins=$(dirname "$(readlink -f "$(ldd "$(command -v xtables-nft-multi)" | awk '/libxtables/ {print $3}')")")/xtables
[ -d "$plugins" ] || plugins=/usr/lib/x86_64-linux-gnu/xtables
libraries=$(for b in "${binaries[@]}" "$plugins"/*.so; do ldd "$b" 2>/dev/null || true; done |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)

# The node's entry: /sys writable (dockerd makes cgroups and sets sysctls), then
# containerd and dockerd in the background, so that dockerd is not PID 1 and a test can
# kill it alone. NODE_DNS is the resolver the test runs; NODE_DOCKERD_ARGS any more flags.
entry=$(cat <<'EOF'
#!/bin/sh
mount -o remount,rw /sys
for d in /sys/fs/cgroup/*; do mount -o remount,bind,rw "$d"; done
mkdir -p /run /tmp /var/lib/docker /var/lib/containerd /node
containerd >/node/containerd.log 2>&1 &
while [ ! -S /run/containerd/containerd.sock ]; do sleep 0.05; done
DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 dockerd \
    --host unix:///node/docker.sock \
    --containerd /run/containerd/containerd.sock \
    --storage-driver overlay2 \
    --dns "$NODE_DNS" \
    $NODE_DOCKERD_ARGS >/node/dockerd.log 2>&1 &
echo $! >/node/dockerd.pid
exec sleep 2147483647
EOF
)

hash=$( (printf '%s' "$entry"; for f in "${binaries[@]}" $libraries "$plugins"/*.so; do
    printf '%s ' "$f"; stat -c '%s %Y' "$f"; done) | sha256sum | cut -c1-16)
tag="berth-swarm-node:$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

echo "building $tag from this machine's Docker Engine binaries" >&2
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,var/lib,node}
for b in "${binaries[@]}"; do
    cp "$b" "$root/usr/bin/"
done
mv "$root/usr/bin/$(basename "$(readlink -f "$(command -v busybox)")")" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf ../bin/xtables-nft-multi "$root/usr/sbin/$name"
done
for lib in $libraries; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
mkdir -p "$root$plugins"
cp "$plugins"/*.so "$root$plugins/"
printf '%s\n' "$entry" >"$root/entry.sh"
chmod 755 "$root/entry.sh"
printf 'root:x:0:0:root:/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
: >"$root/etc/hosts"

tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/entry.sh"]' \
    - "$tag" >/dev/null
echo "$tag"
