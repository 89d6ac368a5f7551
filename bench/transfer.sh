#!/usr/bin/env bash
# `shelf get` and `shelf put` of a 1 GiB file over loopback, beside a plain TCP copy of the
# same file with socat and a local cp, all in one run on one journaled ext4 image.
#   bench/transfer.sh [--size MiB] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
. scripts/lib.sh

size_mib=1024
runs=3
while [ $# -gt 0 ]; do
    case $1 in
        --size) size_mib=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        *) echo "usage: bench/transfer.sh [--size MiB] [--runs N]" >&2; exit 2 ;;
    esac
done
need_packages socat bc
build_bins
setup_disk "$((size_mib * 4 / 1024 + 2))G"
bytes=$((size_mib * 1048576))
mkdir -p "$DISK/lib" "$DISK/out"
head -c "$bytes" /dev/urandom >"$DISK/lib/big"
cp "$DISK/lib/big" "$DISK/src-big"
start_shelfd "$DISK/lib"
declare -A t
for name in cp socat-get socat-put shelf-get shelf-put; do t[$name]=""; done
for _ in $(seq "$runs"); do transfer_round t "$DISK/lib" "$DISK/src-big" "$DISK/out"; done

echo
echo "Transfer of $size_mib MiB over loopback, median of $runs (library: journaled ext4 loop image, page cache dropped before each run)"
echo
printf '| %-10s | %8s | %8s | %s |\n' what seconds MiB/s "vs plain TCP (socat)"
printf '|%s|%s|%s|%s|\n' ------------ ---------- ---------- ----------------------
for name in cp socat-get shelf-get socat-put shelf-put; do
    # shellcheck disable=SC2086
    m=$(median ${t[$name]})
    case $name in
        shelf-get) base=$(median ${t[socat-get]}) ;;
        shelf-put) base=$(median ${t[socat-put]}) ;;
        *) base="" ;;
    esac
    ratio="-"
    [ -n "$base" ] && ratio="$(echo "scale=0; 100 * $base / $m" | bc -l)%"
    printf '| %-10s | %8.3f | %8s | %s |\n' "$name" "$m" "$(mbps "$bytes" "$m")" "$ratio"
done
