#!/usr/bin/env bash
# Profiles shelf on one workload: `perf record -g` on the mount process and the shelfd
# processes serving it, plus a count of the requests each operation costs (from -vv logs).
#   bench/profile.sh [create|tar|cp-in|read|write|rand] [--no-build]
# SHELF_MOUNT_ARGS adds arguments to `shelf mount` (e.g. "--chunk-size 64K"); PERF_CALLGRAPH
# replaces perf's -g (e.g. "--call-graph dwarf", for call chains through Rust code).
# Writes perf data and reports to $BENCH_ROOT (default /tmp/shelf-prof).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_ROOT=${BENCH_ROOT:-/tmp/shelf-prof}
. bench/common.sh
. scripts/lib.sh

what=create
while [ $# -gt 0 ]; do
    case $1 in
        --no-build) BENCH_NO_BUILD=1; shift ;;
        create | tar | cp-in | read | write | rand) what=$1; shift ;;
        *) echo "usage: bench/profile.sh [create|tar|cp-in|read|write|rand] [--no-build]" >&2; exit 2 ;;
    esac
done
need_packages linux-perf strace fio bc
build_bins

setup_disk 3G
LIB=$DISK/lib
mkdir -p "$LIB/w" "$LIB/src"
head -c $((1024 << 20)) /dev/urandom >"$LIB/big"
src=$HOME/.cargo/registry/src
[ -d "$src" ] || src=/usr/include
(cd "$src" && find . -type f | sort | awk 'NR <= 3000' | tar cf - -T - 2>/dev/null) | tar xf - -C "$LIB/src"
start_shelfd "$LIB"
MNT=$BENCH_ROOT/mnt
mkdir -p "$MNT"
on_exit "umount '$MNT' || umount -l '$MNT'"
# shellcheck disable=SC2086
"$BIN/shelf" mount --foreground -o "fingerprint=$SHELF_FP" ${SHELF_MOUNT_ARGS:-} "$SHELF_ADDR" "$MNT" </dev/null >"$BENCH_ROOT/mount.log" 2>&1 &
MPID=$!
on_exit "kill $MPID"
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.05; done
mountpoint -q "$MNT" || { echo "mount failed" >&2; cat "$BENCH_ROOT/mount.log" >&2; exit 1; }

run() {
    case $what in
        create) mkdir "$MNT/w/c"; for i in $(seq 1000); do : >"$MNT/w/c/f$i"; done; rm -r "$MNT/w/c" ;;
        tar) tar cf - -C "$MNT/src" . | cat >/dev/null ;;
        cp-in) cp -r "$LIB/src" "$MNT/w/in" && sync; rm -rf "$MNT/w/in" ;;
        read) dd if="$MNT/big" of=/dev/null bs=1M status=none ;;
        rand) fio --name=rand --filename="$MNT/big" --rw=randread --bs=4k --direct=0 --ioengine=psync \
            --numjobs=4 --time_based --runtime=10 --group_reporting --output-format=terse \
            --terse-version=3 | awk -F';' '{print "fio 4 jobs: " $8 " IOPS"}' >&2 ;;
        write) dd if=/dev/zero of="$MNT/w/out" bs=1M count=256 conv=fsync status=none; rm "$MNT/w/out" ;;
    esac
}

# Requests per operation: one round of the workload under strace, counting the kernel's FUSE
# requests by opcode (bytes 4..8 of each read from /dev/fuse) and the writes to the sockets
# (about one remote request each).
drop_caches
strace -f -qq -y -xx -s 8 -e trace=read,write,writev,sendto,sendmsg -p "$MPID" \
    -o "$BENCH_ROOT/strace.txt" &
STRACE=$!
sleep 1
t=$(seconds run)
sleep 0.5; kill -INT "$STRACE"; wait "$STRACE" || true
echo "== $what: $t s under strace; FUSE requests by opcode, then socket writes:"
perl -ne '
    BEGIN { %op = (1,"LOOKUP",2,"FORGET",3,"GETATTR",4,"SETATTR",8,"MKNOD",9,"MKDIR",10,"UNLINK",
        11,"RMDIR",14,"OPEN",15,"READ",16,"WRITE",17,"STATFS",18,"RELEASE",20,"FSYNC",
        21,"SETXATTR",22,"GETXATTR",23,"LISTXATTR",25,"FLUSH",27,"OPENDIR",28,"READDIR",
        29,"RELEASEDIR",34,"ACCESS",35,"CREATE",42,"BATCH_FORGET",44,"READDIRPLUS",45,"RENAME2") }
    my ($pid) = /^(\d+) /;
    if (/ (read|write|writev|sendto|sendmsg)\(\d+<((?:\\x[0-9a-f]{2})+)>/) {
        my ($call, $path) = ($1, $2);
        $path =~ s/\\x([0-9a-f]{2})/chr hex $1/ge;
        $fuse{$pid} = $path eq "/dev/fuse" && $call eq "read";
        $n{"socket writes (about one request each)"}++ if $path =~ /^(socket|TCP)/ && $call ne "read";
    }
    if ($fuse{$pid} && /(?:>, |resumed>)"((?:\\x[0-9a-f]{2}){8})"/) {
        my @b = map { hex } ($1 =~ /\\x([0-9a-f]{2})/g);
        my $code = $b[4] | $b[5] << 8 | $b[6] << 16 | $b[7] << 24;
        $n{"fuse " . ($op{$code} // "op$code")}++;
        $fuse{$pid} = 0;
    }
    END { printf "%8d  %s\n", $n{$_}, $_ for sort { $n{$b} <=> $n{$a} } keys %n }
' "$BENCH_ROOT/strace.txt"

pids=$MPID,$(pgrep -d, -f "$BIN/shelfd $LIB" || true)
drop_caches
perf record -q -e cpu-clock ${PERF_CALLGRAPH:--g} -p "${pids%,}" -o "$BENCH_ROOT/perf.data" 2>/dev/null &
PERF=$!
sleep 0.5
t=$(seconds run)
kill -INT "$PERF"; wait "$PERF" || true
echo "== $what under perf: $t s"
perf report -i "$BENCH_ROOT/perf.data" --stdio --no-children --sort comm,dso -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | grep '%' | head -n 12
perf report -i "$BENCH_ROOT/perf.data" --stdio --no-children --sort comm,sym -g none 2>/dev/null |
    grep -v '^#' | grep '%' | head -n 30 >"$BENCH_ROOT/perf-top.txt"
perf report -i "$BENCH_ROOT/perf.data" --stdio --children --sort sym -g caller,0.5,callee \
    --percent-limit 3 2>/dev/null >"$BENCH_ROOT/perf-callers.txt" || true
echo "== top symbols ($BENCH_ROOT/perf-top.txt; call graphs in perf-callers.txt):"
cat "$BENCH_ROOT/perf-top.txt"
