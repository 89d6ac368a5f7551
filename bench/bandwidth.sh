#!/usr/bin/env bash
# The bandwidth half of issue #15: a cold sequential read and a write + fsync of one large
# file through shelf (TLS and plaintext) beside the local disk and bindfs (the FUSE
# ceiling), in one run, with the CPU time each mount process (and shelfd) spends per GiB.
#   bench/bandwidth.sh [--size MiB] [--runs N] [--no-build] [--base DIR]
# --base DIR adds "before": shelfd and shelf (TLS) from another build's release directory
# (e.g. a worktree of the commit before, built with its own CARGO_TARGET_DIR), measured in the
# same rounds, so a change is measured alone against the commit before it.
# Every round remounts each FUSE file system and drops the page cache before each copy; the
# systems take turns inside a round. The library is on its own journaled ext4 loop image.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_ROOT=${BENCH_ROOT:-/tmp/shelf-bw}
. bench/common.sh
. scripts/lib.sh

size_mib=1024
runs=3
while [ $# -gt 0 ]; do
    case $1 in
        --size) size_mib=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --no-build) BENCH_NO_BUILD=1; shift ;;
        --base) BASE_BIN=$(cd "$2" && pwd); shift 2 ;;
        *) echo "usage: bench/bandwidth.sh [--size MiB] [--runs N] [--no-build] [--base DIR]" >&2; exit 2 ;;
    esac
done
need_packages bindfs bc
build_bins
bytes=$((size_mib << 20))
setup_disk "$((size_mib * 3 / 1024 + 2))G"
LIB=$DISK/lib
mkdir -p "$LIB/w"
head -c "$bytes" /dev/urandom >"$LIB/big"
sync
SYSTEMS=(local bindfs shelf plain)
MOUNTED=(bindfs shelf plain)
if [ -n "${BASE_BIN:-}" ]; then
    # The older server first: start_shelfd's variables then end up naming the newer one.
    BIN_NOW=$BIN BIN=$BASE_BIN
    start_shelfd "$LIB"
    BASE_ADDR=$SHELF_ADDR BASE_FP=$SHELF_FP BIN=$BIN_NOW
    SYSTEMS+=(before) MOUNTED+=(before)
fi
start_shelfd "$LIB"
start_shelfd "$LIB" plain
MNT=$BENCH_ROOT/mnt
declare -A PID=()
for s in "${MOUNTED[@]}"; do
    mkdir -p "$MNT/$s"
    on_exit "umount '$MNT/$s' || umount -l '$MNT/$s'"
done
on_exit 'for p in "${PID[@]}"; do kill -TERM $p; done'

root_of() { if [ "$1" = local ]; then echo "$LIB"; else echo "$MNT/$1"; fi; }

mount_sys() {
    local dir=$MNT/$1
    case $1 in
        local) return 0 ;;
        bindfs) bindfs "$LIB" "$dir"; PID[$1]=$(pgrep -n -x bindfs) ;;
        shelf | plain | before)
            local sec=(-o "fingerprint=$SHELF_FP") addr=$SHELF_ADDR bin=$BIN
            [ "$1" = plain ] && sec=(--insecure-plaintext) addr=$SHELF_PLAIN_ADDR
            [ "$1" = before ] && sec=(-o "fingerprint=$BASE_FP") addr=$BASE_ADDR bin=$BASE_BIN
            "$bin/shelf" mount --foreground "${sec[@]}" "$addr" "$dir" </dev/null \
                >>"$BENCH_ROOT/mount.log" 2>&1 &
            PID[$1]=$!
            ;;
    esac
    for _ in $(seq 200); do mountpoint -q "$dir" && return 0; sleep 0.05; done
    echo "mounting $1 failed" >&2; tail -n 20 "$BENCH_ROOT/mount.log" >&2; exit 1
}

umount_sys() {
    [ "$1" = local ] && return 0
    mountpoint -q "$MNT/$1" && umount "$MNT/$1"
    local p=${PID[$1]:-}
    if [ -n "$p" ]; then
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    fi
    PID[$1]=
}

# CPU seconds (user + system, all threads) of the given processes so far.
cpu_of() {
    local tick total=0 p
    tick=$(getconf CLK_TCK)
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    done
    echo "scale=3; $total / $tick" | bc -l
}
# The shelfd processes serving a system: the connection children of its server.
server_pids() {
    case $1 in
        shelf) pgrep -f "$BIN/shelfd $LIB .*--state-dir" | tr '\n' ' ' ;;
        plain) pgrep -f "$BIN/shelfd $LIB .*--insecure-plaintext" | tr '\n' ' ' ;;
        before) pgrep -f "$BASE_BIN/shelfd $LIB" | tr '\n' ' ' ;;
    esac
}

declare -A R    # "metric|system" -> samples
add() { R["$1|$2"]+=" $3"; }

# Runs one copy on a system and records its seconds and the CPU its processes used.
measure() {
    local what=$1 s=$2 root t0 t1 c0 c1 s0 s1 servers
    root=$(root_of "$s")
    # Only the measured system is mounted: another shelf mount watching the library would
    # take change notices for this copy's writes, and its server's CPU would be counted.
    for m in "${MOUNTED[@]}"; do umount_sys "$m"; done
    mount_sys "$s"
    rm -f "$root/w/out"
    drop_caches
    servers=$(server_pids "$s")
    # shellcheck disable=SC2086
    c0=$(cpu_of ${PID[$s]:-}); s0=$(cpu_of $servers)
    t0=$(now)
    case $what in
        read) dd if="$root/big" of=/dev/null bs=1M status=none ;;
        write) dd if=/dev/zero of="$root/w/out" bs=1M count="$size_mib" conv=fsync status=none ;;
    esac
    t1=$(now)
    # shellcheck disable=SC2086
    # Connections opened during the copy count from zero.
    c1=$(cpu_of ${PID[$s]:-}); s1=$(cpu_of $(server_pids "$s"))
    local secs gib
    secs=$(echo "$t1 - $t0" | bc -l)
    gib=$(echo "scale=6; $size_mib / 1024" | bc -l)
    add "$what" "$s" "$(echo "scale=1; $size_mib / $secs" | bc -l)"
    add "$what-cpu" "$s" "$(echo "scale=3; ($c1 - $c0) / $gib" | bc -l)"
    add "$what-srv" "$s" "$(echo "scale=3; ($s1 - $s0) / $gib" | bc -l)"
    rm -f "$root/w/out"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# Round 0 warms up (the disk, the binaries, the allocators) and is not counted.
for r in $(seq 0 "$runs"); do
    echo "bench: round $r" >&2
    for what in read write; do
        for s in "${SYSTEMS[@]}"; do
            # bindfs writes 4 KiB at a time (about 30 MB/s here): no ceiling for a write.
            [ "$what/$s" = write/bindfs ] && continue
            measure "$what" "$s"
        done
    done
    [ "$r" = 0 ] && R=()
done
for s in "${MOUNTED[@]}"; do umount_sys "$s"; done

med() {
    local v=${R["$1|$2"]:-}
    # shellcheck disable=SC2086
    if [ -n "$v" ]; then median $v; else echo -; fi
}
ratio() {
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
    echo "$(echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./')×"
}

echo
echo "Bandwidth, ${size_mib} MiB, median of $runs after a warm-up round ($(date -u +%Y-%m-%dT%H:%MZ), tree $(git describe --always --dirty))"
echo "Library on its own journaled ext4 loop image; page cache dropped and FUSE remounted before"
echo "each copy; load average at the start $load_start. CPU: seconds of user + system time per"
echo "GiB of the mount process (all threads) and of shelfd's processes."
echo
b_head="" b_rule="" c_head="" c_rule=""
if [ -n "${BASE_BIN:-}" ]; then
    b_head=" before MB/s | shelf/before |" b_rule="--:|--:|"
    c_head=" before mount | shelfd (before) |" c_rule="--:|--:|"
    echo "before: the build in $BASE_BIN"
    echo
fi
echo "| copy | local MB/s | bindfs MB/s | shelf MB/s | shelf-plain MB/s | shelf/local | shelf/bindfs | plain/local |$b_head"
echo "|---|--:|--:|--:|--:|--:|--:|--:|$b_rule"
for what in read write; do
    l=$(med "$what" local); b=$(med "$what" bindfs); s=$(med "$what" shelf); p=$(med "$what" plain)
    label="cold read"; [ "$what" = write ] && label="write + fsync"
    extra=""
    [ -n "${BASE_BIN:-}" ] && { o=$(med "$what" before); extra=" $o | $(ratio "$s" "$o") |"; }
    echo "| $label | $l | $b | $s | $p | $(ratio "$s" "$l") | $(ratio "$s" "$b") | $(ratio "$p" "$l") |$extra"
done
echo
echo "| CPU s/GiB | bindfs mount | shelf mount | shelf-plain mount | shelfd (TLS) | shelfd (plain) |$c_head"
echo "|---|--:|--:|--:|--:|--:|$c_rule"
for what in read write; do
    label="cold read"; [ "$what" = write ] && label="write + fsync"
    extra=""
    [ -n "${BASE_BIN:-}" ] && extra=" $(med "$what-cpu" before) | $(med "$what-srv" before) |"
    echo "| $label | $(med "$what-cpu" bindfs) | $(med "$what-cpu" shelf) | $(med "$what-cpu" plain) | $(med "$what-srv" shelf) | $(med "$what-srv" plain) |$extra"
done
echo
echo "All samples (MB/s): "
for k in "${!R[@]}"; do echo "  $k:${R[$k]}"; done | sort
