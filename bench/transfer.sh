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
cargo build --release --bins -q
setup_disk "$((size_mib * 4 / 1024 + 2))G"
bytes=$((size_mib * 1048576))
mkdir -p "$DISK/lib" "$DISK/out"
head -c "$bytes" /dev/urandom >"$DISK/lib/big"
cp "$DISK/lib/big" "$DISK/src-big"
start_shelfd "$DISK/lib"
port=$((20000 + RANDOM % 20000))

declare -A t
for name in cp socat-get socat-put shelf-get shelf-put; do t[$name]=""; done
for _ in $(seq "$runs"); do
    rm -f "$DISK/out/big"; drop_caches
    t[cp]+=" $(seconds sh -c "cp '$DISK/lib/big' '$DISK/out/big' && sync '$DISK/out/big'")"

    rm -f "$DISK/out/big"; drop_caches
    socat -u "TCP-LISTEN:$port,reuseaddr,nodelay" "CREATE:$DISK/out/big" &
    sleep 0.2
    t[socat-get]+=" $(seconds sh -c "socat -u 'OPEN:$DISK/lib/big' 'TCP:127.0.0.1:$port,nodelay'; wait; sync '$DISK/out/big'")"
    wait

    rm -f "$DISK/out/big"; drop_caches
    t[shelf-get]+=" $(seconds sh -c "'$BIN/shelf' get '$SHELF_ADDR' big '$DISK/out/big' && sync '$DISK/out/big'")"
    cmp "$DISK/lib/big" "$DISK/out/big"

    rm -f "$DISK/lib/up"; drop_caches
    socat -u "TCP-LISTEN:$port,reuseaddr,nodelay" "CREATE:$DISK/lib/up" &
    sleep 0.2
    t[socat-put]+=" $(seconds sh -c "socat -u 'OPEN:$DISK/src-big' 'TCP:127.0.0.1:$port,nodelay'; wait; sync '$DISK/lib/up'")"
    wait

    rm -f "$DISK/lib/up"; drop_caches
    t[shelf-put]+=" $(seconds "$BIN/shelf" put "$SHELF_ADDR" "$DISK/src-big" up)"
    cmp "$DISK/src-big" "$DISK/lib/up"
done

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
