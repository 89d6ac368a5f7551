#!/usr/bin/env bash
# A 1 GiB copy inside a mount, four ways, in one run on one journaled ext4 loop image:
#   shelf-server  cp inside the shelf mount: copy_file_range, done by shelfd (no data on the wire)
#   shelf-client  dd bs=1M inside the shelf mount: read and write through the client (what cp
#                 did before server-side copies)
#   sshfs-direct  cp inside sshfs -o directport, against sftp-server under socat (no encryption)
#   local         cp on the server's disk itself: the baseline
# Each copy ends when the destination is on the disk (the server side's file fsynced); page
# caches are dropped before each; medians of N runs (default 3).
#   bench/copy.sh [--size MiB] [--runs N]
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
        *) echo "usage: bench/copy.sh [--size MiB] [--runs N]" >&2; exit 2 ;;
    esac
done
say() { echo "bench: $*" >&2; }

need_packages sshfs openssh-sftp-server socat bc
build_bins
for b in shelf shelfd; do [ -x "$BIN/$b" ] || { say "no $BIN/$b"; exit 1; }; done
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# Room for the source and one copy at a time, with slack for the journal.
setup_disk "$((size_mib * 3 / 1024 + 2))G"
LIB=$DISK/lib
mkdir -p "$LIB"
bytes=$((size_mib * 1048576))
say "making a $size_mib MiB file on $IMG (journaled ext4)"
head -c "$bytes" /dev/urandom >"$LIB/big"
sync

start_shelfd "$LIB"
MNT=$BENCH_ROOT/mnt
mkdir -p "$MNT/shelf" "$MNT/sshfs"
"$BIN/shelf" mount --foreground -o "fingerprint=$SHELF_FP" "$SHELF_ADDR" "$MNT/shelf" </dev/null \
    >>"$BENCH_ROOT/shelf-mount.log" 2>&1 &
SHELF_PID=$!
on_exit "umount '$MNT/shelf' || umount -l '$MNT/shelf'; kill -TERM $SHELF_PID"

SFTP_PORT=$(free_port)
setsid socat "TCP-LISTEN:$SFTP_PORT,bind=127.0.0.1,reuseaddr,fork,nodelay" \
    EXEC:/usr/lib/openssh/sftp-server 2>"$BENCH_ROOT/socat.log" </dev/null &
SOCAT_PID=$!
on_exit "kill -TERM -- -$SOCAT_PID; kill -TERM $SOCAT_PID"
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$SFTP_PORT") 2>/dev/null && break; sleep 0.05; done
sshfs -o "directport=$SFTP_PORT" "127.0.0.1:$LIB" "$MNT/sshfs"
on_exit "umount '$MNT/sshfs' || umount -l '$MNT/sshfs'"
for _ in $(seq 200); do mountpoint -q "$MNT/shelf" && break; sleep 0.05; done
mountpoint -q "$MNT/shelf" || { say "the shelf mount did not come up"; exit 1; }

# The shelf mount's own count of file bytes over the wire (`shelf status`).
moved() { "$BIN/shelf" status "$MNT/shelf" | sed -n 's/^ *file data: *\([0-9]*\) bytes received, \([0-9]*\) bytes sent/\1 \2/p'; }

WAYS=(shelf-server shelf-client sshfs-direct local)
declare -A cmd=(
    [shelf-server]="cp '$MNT/shelf/big' '$MNT/shelf/copy'"
    [shelf-client]="dd if='$MNT/shelf/big' of='$MNT/shelf/copy' bs=1M status=none"
    [sshfs-direct]="cp '$MNT/sshfs/big' '$MNT/sshfs/copy'"
    [local]="cp '$LIB/big' '$LIB/copy'"
)
# Each way removes the old copy through its own view, so no mount holds a stale name for it.
declare -A where=([shelf-server]=$MNT/shelf [shelf-client]=$MNT/shelf [sshfs-direct]=$MNT/sshfs [local]=$LIB)
declare -A t wire
for w in "${WAYS[@]}"; do t[$w]=""; done
for r in $(seq "$runs"); do
    for w in "${WAYS[@]}"; do
        rm -f "${where[$w]}/copy"; drop_caches
        before=$(moved)
        # The clock stops when the copy is on the server's disk, whoever wrote it.
        t[$w]+=" $(seconds sh -c "${cmd[$w]} && sync '$LIB/copy'")"
        after=$(moved)
        read -r rx0 tx0 <<<"$before"; read -r rx1 tx1 <<<"$after"
        wire[$w]=$(( (rx1 - rx0 + tx1 - tx0) / 1048576 ))
        if [ "$r" = 1 ]; then cmp "$LIB/big" "$LIB/copy" || { say "$w: the copy differs"; exit 1; }; fi
        say "run $r: $w done"
    done
done
rm -f "$MNT/shelf/copy"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# shellcheck disable=SC2086
base=$(median ${t[local]})
base2=$(printf '%.2f' "$base")
echo
echo "Copy of $size_mib MiB inside one mount, median of $runs (library: journaled ext4 loop image;"
echo "page cache dropped before each; each copy ends with the destination fsynced on the server)."
echo "Load average at start $load_start, at end $load_end; $(nproc) cores."
echo
printf '| %-13s | %8s | %8s | %-34s | %s |\n' way seconds MiB/s "time ÷ local cp's" "MiB through the shelf client (last run)"
printf '|%s|%s|%s|%s|%s|\n' --------------- ---------- ---------- ------------------------------------ -----------------------------------------
for w in "${WAYS[@]}"; do
    # shellcheck disable=SC2086
    m=$(median ${t[$w]})
    ratio=$(printf '%.2f' "$(echo "$m / $base" | bc -l)")
    case $w in shelf-*) through=${wire[$w]} ;; *) through="-" ;; esac
    printf '| %-13s | %8.2f | %8s | %-34s | %s |\n' "$w" "$m" "$(mbps "$bytes" "$m")" \
        "${ratio}× (local: ${base2} s, $(mbps "$bytes" "$base") MiB/s)" "$through"
done
