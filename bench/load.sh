#!/usr/bin/env bash
# The load benchmark (issue #14): many CLI clients and several mounts at once against one
# shelfd, a mixed workload with every byte checked (tests/src/loadgen.rs), for --secs.
#   bench/load.sh [--clients 256] [--mounts 4] [--secs 60] [--max-clients N] [--no-build]
#
# Prints operations per second and p50/p99 latency per kind of operation, failures and wrong
# results (both must be 0), and the server parent's resident memory and descriptors at the
# start and the end (they must be flat), and zombies: the most seen at any one sample (a
# child that just exited is a zombie until the parent's next wake-up reaps it) and those left
# at the end (must be 0). The library lives on its own journaled ext4 loop image (common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
. scripts/lib.sh

clients=256 mounts=4 secs=60 max_clients=""
while [ $# -gt 0 ]; do
    case $1 in
        --clients) clients=$2; shift 2 ;;
        --mounts) mounts=$2; shift 2 ;;
        --secs) secs=$2; shift 2 ;;
        --max-clients) max_clients=$2; shift 2 ;;
        --no-build) BENCH_NO_BUILD=1; shift ;;
        *) echo "usage: bench/load.sh [--clients N] [--mounts N] [--secs S] [--max-clients N] [--no-build]" >&2; exit 2 ;;
    esac
done
say() { echo "load: $*" >&2; }

need_packages bc
build_bins
env -u CARGO_TARGET_DIR cargo build --release -q -p shelf-tests --bin shelf-load
setup_disk 8G
LIB=$DISK/lib
mkdir -p "$LIB" "$BENCH_ROOT/scratch"
extra=()
[ -n "$max_clients" ] && extra=(--max-clients "$max_clients")
out=$BENCH_ROOT/shelfd-load.out
setsid unshare --mount --propagation private "$BIN/shelfd" "$LIB" --listen 127.0.0.1:0 \
    --state-dir "$BENCH_ROOT/shelfd-state" "${extra[@]}" \
    >"$out" 2>"$BENCH_ROOT/shelfd-load.log" </dev/null &
SHELFD=$!
on_exit "kill -TERM -- -$SHELFD; kill -TERM $SHELFD"
for _ in $(seq 100); do [ "$(wc -l <"$out")" -ge 2 ] && break; sleep 0.05; done
ADDR=$(sed -n 's/^listening on //p' "$out")
FP=$(sed -n 's/^fingerprint //p' "$out")
[ -n "$ADDR" ] || { say "shelfd did not start"; cat "$BENCH_ROOT/shelfd-load.log" >&2; exit 1; }
# The parent is the unshare'd shelfd (setsid -> unshare execs -> shelfd).
PARENT=$(pgrep -f "^$BIN/shelfd $LIB" | head -n1)

MOUNT_ARGS=()
MPIDS=()
for m in $(seq "$mounts"); do
    dir=$BENCH_ROOT/mnt$m
    mkdir -p "$dir"
    "$BIN/shelf" mount --foreground -o "fingerprint=$FP" "$ADDR" "$dir" \
        </dev/null >>"$BENCH_ROOT/mount$m.log" 2>&1 &
    MPIDS+=($!)
    on_exit "umount '$dir' 2>/dev/null || umount -l '$dir'"
    for _ in $(seq 200); do mountpoint -q "$dir" && break; sleep 0.05; done
    mountpoint -q "$dir" || { say "mount $m failed"; cat "$BENCH_ROOT/mount$m.log" >&2; exit 1; }
    MOUNT_ARGS+=(--mount "$dir")
done

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
zombies() { ps -o stat= --ppid "$1" 2>/dev/null | grep -c '^Z' || true; }
rss0=$(rss "$PARENT") fds0=$(fds "$PARENT")

say "$clients CLI clients and $mounts mounts for $secs s against $ADDR (library on a journaled ext4 image)"
( while sleep 1; do z=$(zombies "$PARENT"); echo "$z"; done ) >"$BENCH_ROOT/zombies" &
SAMPLER=$!
on_exit "kill $SAMPLER"
status=0
"$BIN/shelf-load" --addr "$ADDR" --shelf-option --fingerprint --shelf-option "$FP" \
    --clients "$clients" --secs "$secs" --workers-per-mount 4 "${MOUNT_ARGS[@]}" \
    --scratch "$BENCH_ROOT/scratch" >"$BENCH_ROOT/load.txt" 2>"$BENCH_ROOT/load.err" || status=$?
kill "$SAMPLER" 2>/dev/null || true
max_z=$(sort -n "$BENCH_ROOT/zombies" | tail -n1 || true)

for dir in $(seq "$mounts"); do umount "$BENCH_ROOT/mnt$dir" || umount -l "$BENCH_ROOT/mnt$dir"; done
wait "${MPIDS[@]}" 2>/dev/null || true
# The connection processes, not the change watcher (which lives as long as the server).
conns() { ps -o comm= --ppid "$1" 2>/dev/null | grep -vc '^shelfd-watch$' || true; }
for _ in $(seq 100); do [ "$(conns "$PARENT")" = 0 ] && break; sleep 0.1; done
left=$(conns "$PARENT")
rss1=$(rss "$PARENT") fds1=$(fds "$PARENT")

echo "## Load: $clients CLI clients + $mounts mounts, ${secs} s, $(date -u +%Y-%m-%dT%H:%MZ), $(git describe --always --dirty)"
echo "machine: $(nproc) cores, load average at the end $(cut -d' ' -f1-3 /proc/loadavg); library on a journaled ext4 loop image"
echo "server cap: ${max_clients:-default} (--max-clients)"
echo
cat "$BENCH_ROOT/load.txt"
echo
echo "busy refusals (clients that waited their turn): $(grep -c 'busy: refusing' "$BENCH_ROOT/shelfd-load.log" || true)"
echo "server parent: RSS ${rss0} KiB -> ${rss1} KiB, descriptors ${fds0} -> ${fds1}"
echo "zombies: at most ${max_z:-0} at a one-second sample; children left after the clients: $left"
if [ -s "$BENCH_ROOT/load.err" ]; then
    echo; echo "problems (first lines):"; head -n 20 "$BENCH_ROOT/load.err"
fi
exit "$status"
