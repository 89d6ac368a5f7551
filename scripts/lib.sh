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

# What the build and the tests need on a fresh Debian machine with Rust.
TEST_PACKAGES=(fuse3 rsync socat util-linux bsdutils procps psmisc sqlite3 git xxd bc
    libglib2.0-bin pcmanfm xvfb xdotool imagemagick attr tar)
