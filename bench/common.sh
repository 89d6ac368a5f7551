# Shared set-up for shelf's benchmarks. Sourced, not run.
#
# The library lives on its own journaled ext4 image (loop mount): the root ext4 of the test
# machines has no journal, and creating files soon after deleting many is slow there, which
# would measure the disk's quirk instead of shelf.

set -euo pipefail
BENCH_ROOT=${BENCH_ROOT:-/tmp/shelf-bench}
IMG=$BENCH_ROOT/lib.img
DISK=$BENCH_ROOT/disk          # the ext4 image, mounted
BIN=${BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release}
CLEANUP=()

# Undoes everything registered with on_exit, newest first. Runs once, on any exit: an
# interrupted run must not leave mounts or servers behind.
cleanup() {
    set +e
    trap - EXIT
    for ((i=${#CLEANUP[@]}-1; i>=0; i--)); do eval "${CLEANUP[i]}" >/dev/null 2>&1; done
    CLEANUP=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Registers a command (evaluated at exit time, so it may name variables set later).
on_exit() { CLEANUP+=("$*"); }

# Makes and mounts a journaled ext4 image of the given size (e.g. 6G).
setup_disk() {
    mkdir -p "$BENCH_ROOT" "$DISK"
    if mountpoint -q "$DISK"; then umount "$DISK"; fi
    rm -f "$IMG"
    truncate -s "$1" "$IMG"
    # Inode tables and journal initialised now, not by ext4lazyinit in the background
    # during the first measurements (it made every system's first round slower).
    mkfs.ext4 -q -F -O has_journal -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
    mount -o loop "$IMG" "$DISK"
    on_exit "umount '$DISK' || umount -l '$DISK'; rm -f '$IMG'"
    dumpe2fs -h "$IMG" 2>/dev/null | grep -q has_journal || { echo "no journal on $IMG" >&2; exit 1; }
}

# Whether the root file system is ext4 without a journal (the quirk the image avoids).
root_has_no_journal() {
    local dev
    dev=$(findmnt -no SOURCE /)
    [ "$(findmnt -no FSTYPE /)" = ext4 ] && ! dumpe2fs -h "$dev" 2>/dev/null | grep -q has_journal
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# Starts shelfd (TLS) on a directory in a private mount namespace; sets SHELF_ADDR, SHELF_FP
# (its key's fingerprint) and SHELF_SEC (the client option that pins it). With
# `start_shelfd DIR plain` it serves plaintext instead and sets SHELF_PLAIN_ADDR.
start_shelfd() {
    local kind=${2:-tls}
    local out=$BENCH_ROOT/shelfd-$kind.out extra=(--state-dir "$BENCH_ROOT/shelfd-state")
    [ "$kind" = plain ] && extra=(--insecure-plaintext)
    rm -f "$out"
    setsid unshare --mount --propagation private "$BIN/shelfd" "$1" --listen 127.0.0.1:0 \
        "${extra[@]}" >"$out" 2>"$BENCH_ROOT/shelfd-$kind.log" </dev/null &
    local pid=$!
    on_exit "kill -TERM -- -$pid; kill -TERM $pid"
    for _ in $(seq 100); do [ "$(wc -l <"$out" 2>/dev/null || echo 0)" -ge 2 ] && break; sleep 0.05; done
    local addr
    addr=$(sed -n 's/^listening on //p' "$out" | head -n1)
    [ -n "$addr" ] || { echo "shelfd did not start" >&2; cat "$BENCH_ROOT/shelfd-$kind.log" >&2; exit 1; }
    if [ "$kind" = plain ]; then
        SHELF_PLAIN_ADDR=$addr
    else
        SHELF_ADDR=$addr
        SHELF_FP=$(sed -n 's/^fingerprint //p' "$out" | head -n1)
        SHELF_SEC="--fingerprint $SHELF_FP"
    fi
}

# Builds the release binaries into $BIN (the default target dir), unless BENCH_NO_BUILD=1 says
# to measure the binaries already there.
build_bins() {
    [ "${BENCH_NO_BUILD:-0}" = 1 ] && { echo "bench: not building; using $BIN as it is" >&2; return 0; }
    env -u CARGO_TARGET_DIR cargo build --release --bins -q
}

# A loopback TCP port nobody listens on.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

now() { date +%s.%N; }

# Seconds that a command takes (wall clock, to the millisecond); fails if the command does.
seconds() {
    local t0 t1
    t0=$(now)
    "$@" >/dev/null || { echo "bench: failed: $*" >&2; return 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

mbps() { echo "scale=1; $1 / 1048576 / $2" | bc -l; }

# One round of the transfer comparison over loopback, page cache dropped before each copy:
# appends seconds to the associative array named first, under cp, socat-get, shelf-get,
# socat-put and shelf-put. LIB is the served library (holding `big`), SRC a local copy of it
# to upload, OUT a local directory for downloads. Needs SHELF_ADDR.
#   transfer_round ARRAY LIB SRC OUT
transfer_round() {
    local -n acc=$1
    local lib=$2 src=$3 out=$4 port lpid t0
    port=$(free_port)

    rm -f "$out/big"; drop_caches
    acc[cp]+=" $(seconds sh -c "cp '$lib/big' '$out/big' && sync '$out/big'")"

    # The clock stops when the receiver has written and synced everything, as for shelf.
    rm -f "$out/big"; drop_caches
    socat -u "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,nodelay" "CREATE:$out/big" & lpid=$!
    sleep 0.2
    t0=$(now)
    socat -u "OPEN:$lib/big" "TCP:127.0.0.1:$port,nodelay"
    wait "$lpid"
    sync "$out/big"
    acc[socat-get]+=" $(echo "$(now) - $t0" | bc -l)"

    rm -f "$out/big"; drop_caches
    acc[shelf-get]+=" $(seconds sh -c "'$BIN/shelf' $SHELF_SEC -q get '$SHELF_ADDR' big '$out/big' && sync '$out/big'")"
    cmp "$lib/big" "$out/big"

    rm -f "$lib/up"; drop_caches
    socat -u "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,nodelay" "CREATE:$lib/up" & lpid=$!
    sleep 0.2
    t0=$(now)
    socat -u "OPEN:$src" "TCP:127.0.0.1:$port,nodelay"
    wait "$lpid"
    sync "$lib/up"
    acc[socat-put]+=" $(echo "$(now) - $t0" | bc -l)"

    rm -f "$lib/up"; drop_caches
    # shellcheck disable=SC2086
    acc[shelf-put]+=" $(seconds "$BIN/shelf" $SHELF_SEC -q put "$SHELF_ADDR" "$src" up)"
    cmp "$src" "$lib/up"
    rm -f "$lib/up" "$out/big"
}
