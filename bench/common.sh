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

cleanup() {
    set +e
    for ((i=${#CLEANUP[@]}-1; i>=0; i--)); do eval "${CLEANUP[i]}" >/dev/null 2>&1; done
}
trap cleanup EXIT INT TERM

on_exit() { CLEANUP+=("$*"); }

# Makes and mounts a journaled ext4 image of the given size (e.g. 6G).
setup_disk() {
    mkdir -p "$BENCH_ROOT" "$DISK"
    if mountpoint -q "$DISK"; then umount "$DISK"; fi
    rm -f "$IMG"
    truncate -s "$1" "$IMG"
    mkfs.ext4 -q -F -O has_journal "$IMG"
    mount -o loop "$IMG" "$DISK"
    on_exit "umount -l '$DISK'; rm -f '$IMG'"
    dumpe2fs -h "$IMG" 2>/dev/null | grep -q has_journal || { echo "no journal on $IMG" >&2; exit 1; }
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# Starts shelfd on a directory in a private mount namespace; sets SHELF_ADDR.
start_shelfd() {
    local out=$BENCH_ROOT/shelfd.out
    setsid unshare --mount --propagation private "$BIN/shelfd" "$1" --listen 127.0.0.1:0 \
        >"$out" 2>"$BENCH_ROOT/shelfd.log" </dev/null &
    local pid=$!
    on_exit "kill -TERM -- -$pid; kill -TERM $pid"
    for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
    SHELF_ADDR=$(sed -n 's/^listening on //p' "$out" | head -n1)
    [ -n "$SHELF_ADDR" ] || { echo "shelfd did not start" >&2; cat "$BENCH_ROOT/shelfd.log" >&2; exit 1; }
}

# Seconds that a command takes (wall clock, to the millisecond).
seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

mbps() { echo "scale=1; $1 / 1048576 / $2" | bc -l; }
