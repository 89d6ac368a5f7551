# Shared helpers for shelf's scripts. Sourced, not run.

# Installs the Debian packages named, if any is missing; runs apt-get update once first.
need_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "shelf: missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
        return 1
    fi
    echo "shelf: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Installs a program published as a crate (version pinned, its own lock file) under the target
# directory's tools/, unless that version is there already; prints the binary's path.
#   need_cargo_tool CRATE VERSION [BINARY]
need_cargo_tool() {
    local crate=$1 version=$2 bin=${3:-$1}
    local root=${CARGO_TARGET_DIR:-$PWD/target}/tools
    if ! "$root/bin/$bin" --version 2>/dev/null | grep -q " $version\$"; then
        echo "shelf: installing $crate $version (cargo install) under $root" >&2
        cargo install --quiet --locked --force --root "$root" "$crate" --version "$version" >&2
    fi
    echo "$root/bin/$bin"
}

# What the build and the tests need on a fresh Debian machine with Rust.
TEST_PACKAGES=(fuse3 rsync socat util-linux bsdutils procps psmisc sqlite3 git xxd bc strace
    libglib2.0-bin pcmanfm xvfb xdotool imagemagick attr tar)
