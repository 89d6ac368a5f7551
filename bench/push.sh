#!/usr/bin/env bash
# Change push (issue #16), against one shelfd (TLS, loopback) serving a library on its own
# journaled ext4 loop image (common.sh), in one run:
#   1. How soon a change shows on another mount: --changes changes (half through a writer
#      mount, half directly in the library), each watched for with `stat` by a mount with
#      push (the default) and, side by side, by one with push=off (the 1 s TTL: the baseline).
#   2. Warm `find -ls` and `ls -lR` of a tree, each run 2 s after the one before (past the
#      1 s TTL), on mounts with the default TTLs (60 s where pushed), with --attr-ttl 1s, and
#      with push=off.
#   3. What push costs a mount's own work (its own changes come back as notices): writing a
#      file and unpacking small files, push on beside push=off.
#   bench/push.sh [--changes 1000] [--dirs 100] [--files-per-dir 50] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
. scripts/lib.sh

changes=1000 dirs=100 per_dir=50 runs=3 write_mib=512 small=2000
while [ $# -gt 0 ]; do
    case $1 in
        --changes) changes=$2; shift 2 ;;
        --dirs) dirs=$2; shift 2 ;;
        --files-per-dir) per_dir=$2; shift 2 ;;
        --no-build) BENCH_NO_BUILD=1; shift ;;
        *) echo "usage: bench/push.sh [--changes N] [--dirs N] [--files-per-dir N] [--no-build]" >&2; exit 2 ;;
    esac
done
say() { echo "push: $*" >&2; }

need_packages fuse3 bc
build_bins
env -u CARGO_TARGET_DIR cargo build --release -q -p shelf-tests --bin shelf-push-bench
setup_disk 4G
LIB=$DISK/lib
mkdir -p "$LIB"
start_shelfd "$LIB"

# mount NAME [shelf mount options...]: mounts the library at $BENCH_ROOT/m-NAME.
mount_as() {
    local name=$1 dir=$BENCH_ROOT/m-$1
    shift
    mkdir -p "$dir"
    "$BIN/shelf" mount --foreground -o "fingerprint=$SHELF_FP" "$@" "$SHELF_ADDR" "$dir" \
        </dev/null >>"$BENCH_ROOT/mount-$name.log" 2>&1 &
    on_exit "umount '$dir' 2>/dev/null || umount -l '$dir'"
    for _ in $(seq 200); do mountpoint -q "$dir" && break; sleep 0.05; done
    mountpoint -q "$dir" || { say "mount $name failed"; cat "$BENCH_ROOT/mount-$name.log" >&2; exit 1; }
}
mount_as writer
mount_as pushed
mount_as ttl1s --attr-ttl 1s
mount_as pushoff --push off

echo "## Change push: $(date -u +%Y-%m-%dT%H:%MZ), $(git describe --always --dirty)"
echo "machine: $(nproc) cores, load average at the start $(cut -d' ' -f1-3 /proc/loadavg);"
echo "library on a journaled ext4 loop image; shelfd over TLS on loopback; each mount its own process."
echo "mounts: \`pushed\` (the defaults: push, 60 s TTL where pushed, 1 s elsewhere),"
echo "\`ttl1s\` (push, \`--attr-ttl 1s\`), \`pushoff\` (\`--push off\`: the 1 s TTL only, the baseline)."
echo
echo "### 1. Delay until another mount sees a change (baseline: pushoff, same changes, same run)"
echo
"$BIN/shelf-push-bench" --writer "$BENCH_ROOT/m-writer" --server "$LIB" \
    --observe "pushed=$BENCH_ROOT/m-pushed" --observe "pushoff=$BENCH_ROOT/m-pushoff" \
    --changes "$changes"
echo

say "making a tree of $dirs directories x $per_dir files"
tree=$LIB/tree
mkdir -p "$tree"
for d in $(seq "$dirs"); do
    mkdir -p "$tree/d$d"
    for f in $(seq "$per_dir"); do : >"$tree/d$d/f$f"; done
done
echo "### 2. Warm metadata walks: $dirs directories, $((dirs * per_dir)) files, median of $runs, each 2 s after the last"
echo
echo "| walk | pushed (default TTLs) | ttl1s (push, 1 s TTL) | pushoff (1 s TTL, baseline) |"
echo "|---|--:|--:|--:|"
for walk in "find -ls" "ls -lR"; do
    declare -A t=()
    for m in pushed ttl1s pushoff; do
        dir=$BENCH_ROOT/m-$m/tree
        # shellcheck disable=SC2086
        (cd "$dir" && $walk >/dev/null)     # cold, to warm the caches
        vals=()
        for _ in $(seq "$runs"); do
            sleep 2
            # shellcheck disable=SC2086
            vals+=("$(seconds sh -c "cd '$dir' && $walk")")
        done
        t[$m]=$(median "${vals[@]}")
    done
    printf '| `%s` | %.3f s (%.1fx) | %.3f s (%.1fx) | %.3f s |\n' "$walk" \
        "${t[pushed]}" "$(echo "${t[pushoff]} / ${t[pushed]}" | bc -l)" \
        "${t[ttl1s]}" "$(echo "${t[pushoff]} / ${t[ttl1s]}" | bc -l)" "${t[pushoff]}"
done
echo

echo "### 3. What push costs a mount's own changes (median of $runs; baseline: pushoff, same run)"
echo
src=$BENCH_ROOT/src
mkdir -p "$src/small"
head -c $((write_mib << 20)) /dev/urandom >"$src/big"
for f in $(seq "$small"); do head -c 2048 /dev/urandom >"$src/small/s$f"; done
tar -C "$src" -cf "$src/small.tar" small
echo "| work | pushed | pushoff (baseline) | pushed / pushoff |"
echo "|---|--:|--:|--:|"
declare -A w=() x=()
for m in pushed pushoff; do
    a=() b=()
    for _ in $(seq "$runs"); do
        dst=$BENCH_ROOT/m-$m
        rm -f "$dst/big"
        a+=("$(seconds sh -c "cp '$src/big' '$dst/big' && sync '$dst/big'")")
        rm -rf "$dst/small"
        b+=("$(seconds tar -C "$dst" -xf "$src/small.tar")")
    done
    rm -rf "$BENCH_ROOT/m-$m/small" "$BENCH_ROOT/m-$m/big"
    w[$m]=$(median "${a[@]}")
    x[$m]=$(median "${b[@]}")
done
printf '| write %d MiB + fsync | %.0f MB/s | %.0f MB/s | %.2f |\n' "$write_mib" \
    "$(echo "$write_mib * 1.048576 / ${w[pushed]}" | bc -l)" \
    "$(echo "$write_mib * 1.048576 / ${w[pushoff]}" | bc -l)" \
    "$(echo "${w[pushoff]} / ${w[pushed]}" | bc -l)"
printf '| tar x %d files of 2 KiB | %.2f s | %.2f s | %.2f |\n' "$small" \
    "${x[pushed]}" "${x[pushoff]}" "$(echo "${x[pushed]} / ${x[pushoff]}" | bc -l)"
echo
echo "(the first column's ratio is throughput, pushed over pushoff; the second's is time.)"
echo
echo "status of the pushed mount at the end:"
"$BIN/shelf" status "$BENCH_ROOT/m-pushed" | sed 's/^/    /'
