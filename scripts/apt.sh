# Sourced by berth's scripts that install (and start) what the tests need.

# Holds an exclusive lock on DIR/lock for the rest of the script, waiting up to SECONDS
# for another run (which may be installing) to let go: runs at once do the work once.
hold_lock() {
    local dir=$1 seconds=$2
    mkdir -p "$dir"
    exec 9>"$dir/lock"
    if ! flock -w "$seconds" 9; then
        echo "another run of $0 held $dir/lock for over ${seconds}s; if none runs, remove that file and try again" >&2
        exit 1
    fi
}

# Runs its arguments as root: as they are when root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "$1 needs root, and sudo is missing: run $0 as root" >&2
        exit 1
    fi
}

# Installs Debian's packages: ARGS go to `apt-get install` as given (options included).
# `apt-get update` runs only when the install fails without it.
install_packages() {
    echo "installing $* from Debian's packages" >&2
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2; then
            echo "could not install $* with apt-get; install Debian's packages by hand (apt-get install $*), then run $0 again" >&2
            exit 1
        fi
    fi
}
