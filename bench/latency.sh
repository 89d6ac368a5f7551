#!/usr/bin/env bash
# shelf and sshfs at real round-trip times (issue #15): both without encryption (shelf
# --insecure-plaintext; sshfs -o directport to sftp-server under socat), both through the
# same user-space delay relay (bench/delay: this kernel has no netem), at each round trip of
# --rtts (milliseconds, default "0 2 20"), in one run.
#   bench/latency.sh [--quick] [--rtts "0 2 20"] [--rate-mbs 100] [--only "ls find ..."]
#                    [--shelf-opts "--walk-ahead off"] [--no-build]
# --only runs the named workloads alone (ls find git-cold git-warm cp-out cp-in tar open cat);
# --shelf-opts passes options to `shelf mount`, for one feature on and off back to back.
#
# Each figure comes with the number of requests the client sent for it: shelf's from `shelf
# status` (its pool counts every request; change push's own Watch and Changes, sent by its
# threads while no program waits, are left out), sshfs's from sftp-server's own log (each SFTP
# request). A request is one round trip unless it was pipelined with others. "Cold" remounts
# and drops the page cache first. The relay's own cost is measured first: a 256 MiB `shelf
# get` through it at 0 ms against the same get without it. The library lives on its own
# journaled ext4 loop image (common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
. scripts/lib.sh

quick=0 rtts="0 2 20" rate=100 only="" shelf_opts=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1; shift ;;
        --rtts) rtts=$2; shift 2 ;;
        --rate-mbs) rate=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --shelf-opts) shelf_opts=$2; shift 2 ;;
        --no-build) BENCH_NO_BUILD=1; shift ;;
        *) echo "usage: bench/latency.sh [--quick] [--rtts \"0 2 20\"] [--rate-mbs N] [--only \"KEY ...\"] [--shelf-opts \"OPTS\"] [--no-build]" >&2; exit 2 ;;
    esac
done
if [ "$quick" = 1 ]; then
    LS_N=500 TREE_DIRS=20 TREE_PER=50 GIT_N=1000 SMALL_N=300 CAT_MIB=32 OPEN_N=100
else
    LS_N=2000 TREE_DIRS=100 TREE_PER=100 GIT_N=5000 SMALL_N=2000 CAT_MIB=256 OPEN_N=500
fi
say() { echo "latency: $*" >&2; }

need_packages sshfs socat bc git openssh-sftp-server
build_bins
env -u CARGO_TARGET_DIR cargo build --release -q -p shelf-delay
SFTP_SERVER=/usr/lib/openssh/sftp-server
setup_disk 4G
LIB=$DISK/lib
MNT=$BENCH_ROOT/mnt
mkdir -p "$LIB" "$MNT/shelf" "$MNT/sshfs" "$DISK/out"

say "making the library: $LS_N entries, a $((TREE_DIRS * TREE_PER))-file tree, a $GIT_N-file git repository, $SMALL_N small files, $CAT_MIB MiB"
mkdir -p "$LIB/ls" "$LIB/tree" "$LIB/small" "$LIB/repo" "$LIB/open"
for ((i = 0; i < LS_N; i++)); do : >"$LIB/ls/entry-$i"; done
for ((d = 0; d < TREE_DIRS; d++)); do
    mkdir "$LIB/tree/d$d"
    for ((i = 0; i < TREE_PER; i++)); do echo "$d $i" >"$LIB/tree/d$d/f$i"; done
done
for ((i = 0; i < SMALL_N; i++)); do head -c $((1024 + (i * 7919) % 15360)) /dev/urandom >"$LIB/small/s$i"; done
for ((i = 0; i < OPEN_N; i++)); do head -c 2048 /dev/urandom >"$LIB/open/o$i"; done
(
    cd "$LIB/repo"
    for ((d = 0; d < GIT_N / 50; d++)); do
        mkdir "src$d"
        for ((i = 0; i < 50; i++)); do echo "file $d/$i" >"src$d/f$i.c"; done
    done
    git init -q . && git add -A && git -c user.name=b -c user.email=b@b commit -qm init
    # A checkout as someone would mount it: files older than the index (none "racily
    # clean", which git rereads anywhere), the index refreshed on the server and kept, so
    # each cold run starts from it and not from the index the system before rewrote with
    # its own inode numbers.
    find . -path ./.git -prune -o -type f -exec touch -d '1 hour ago' {} +
    git status --porcelain >/dev/null
    cp .git/index "$DISK/git-index"
)
head -c $((CAT_MIB << 20)) /dev/urandom >"$LIB/big"
sync
git config --global --get-all safe.directory | grep -qx '\*' || git config --global --add safe.directory '*'

start_shelfd "$LIB" plain
SFTP_PORT=$(free_port)
SFTP_LOG=$BENCH_ROOT/sftp.log
: >"$SFTP_LOG"
# Each SFTP request is logged at DEBUG3; that log is what counts sshfs's requests.
setsid socat "TCP-LISTEN:$SFTP_PORT,bind=127.0.0.1,reuseaddr,fork,nodelay" \
    "EXEC:$SFTP_SERVER -e -l DEBUG3" 2>>"$SFTP_LOG" </dev/null &
SOCAT_PID=$!
on_exit "kill -TERM -- -$SOCAT_PID; kill -TERM $SOCAT_PID"
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$SFTP_PORT") 2>/dev/null && break; sleep 0.05; done

# A relay per system at one delay: sets SHELF_VIA and SFTP_VIA (HOST:PORT).
RELAYS=()
start_relays() {
    local one_way out
    one_way=$(echo "$1 / 2" | bc -l)
    for kind in shelf sftp; do
        out=$BENCH_ROOT/relay-$kind.out
        rm -f "$out"   # else the wait below could read the last relay's address
        local to=$SHELF_PLAIN_ADDR
        [ "$kind" = sftp ] && to=127.0.0.1:$SFTP_PORT
        setsid "$BIN/shelf-delay" --to "$to" --delay-ms "$one_way" --rate-mbs "$rate" >"$out" 2>&1 </dev/null &
        RELAYS+=($!)
        for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.02; done
        if [ "$kind" = shelf ]; then SHELF_VIA=$(head -n1 "$out"); else SFTP_VIA=$(head -n1 "$out"); fi
    done
}
stop_relays() { for p in "${RELAYS[@]}"; do kill "$p" 2>/dev/null || true; done; RELAYS=(); }
on_exit 'stop_relays'

SHELF_PID=
on_exit '[ -n "$SHELF_PID" ] && kill -TERM $SHELF_PID'
on_exit "umount '$MNT/shelf' || umount -l '$MNT/shelf'"
on_exit "umount '$MNT/sshfs' || umount -l '$MNT/sshfs'"
mount_sys() {
    local dir=$MNT/$1
    case $1 in
        shelf)
            # shellcheck disable=SC2086 # the options are words
            "$BIN/shelf" mount --foreground --insecure-plaintext $shelf_opts "$SHELF_VIA" "$dir" \
                </dev/null >>"$BENCH_ROOT/shelf-mount.log" 2>&1 &
            SHELF_PID=$! ;;
        sshfs)
            local h=${SFTP_VIA%:*} p=${SFTP_VIA##*:}
            sshfs -o "directport=$p" "$h:$LIB" "$dir" ;;
    esac
    for _ in $(seq 400); do mountpoint -q "$dir" && return 0; sleep 0.05; done
    say "mounting $1 failed"; tail -n 20 "$BENCH_ROOT/shelf-mount.log" >&2; exit 1
}
umount_sys() {
    local dir=$MNT/$1
    mountpoint -q "$dir" && { umount "$dir" 2>/dev/null || { sleep 0.5; umount "$dir"; }; }
    if [ "$1" = shelf ] && [ -n "$SHELF_PID" ]; then
        wait "$SHELF_PID" 2>/dev/null || true
        SHELF_PID=
    fi
}
cold() { umount_sys "$1"; mount_sys "$1"; drop_caches; }

# Requests the client has sent so far.
requests() {
    case $1 in
        # Less change push's own (Watch, Changes): its threads send them, no program waits.
        shelf) "$BIN/shelf" status "$MNT/shelf" |
            sed -n -e 's/^ *requests: *\([0-9]*\) sent (\([0-9]*\) of them by change push).*/\1 - \2/p' \
                -e 't' -e 's/^ *requests: *\([0-9]*\) sent.*/\1/p' | bc ;;
        sshfs) grep -cE 'request [0-9]+: [a-z]' "$SFTP_LOG" | tr -d ' ' || true ;;
    esac
}

w_ls() { ls -l "$1/ls" >/dev/null; }
w_find() { find "$1/tree" -ls >/dev/null; }
w_git() { git -C "$1/repo" status --porcelain >/dev/null; }
w_cp_out() { rm -rf "$DISK/out/small"; cp -r "$1/small" "$DISK/out/small"; }
w_cp_in() { cp -r "$LIB/small" "$1/in-$2"; }
w_tar() { tar cf - -C "$1/repo" . | cat >/dev/null; }
w_cat() { cat "$1/big" >/dev/null; }
w_open() {
    python3 - "$1/open" "$OPEN_N" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, "o%d" % i), "rb") as f:
        f.read()
EOF
}

declare -A SECS REQS
# Whether workload KEY is to be run (--only).
wanted() { [ -z "$only" ] || [[ " $only " == *" $1 "* ]]; }
# measure SYS RTT KEY COLD? COMMAND...
measure() {
    local sys=$1 rtt=$2 key=$3 how=$4
    shift 4
    wanted "$key" || return 0
    [ "$how" = cold ] && cold "$sys"
    local r0 r1 t
    r0=$(requests "$sys")
    t=$(seconds "$@")
    r1=$(requests "$sys")
    SECS["$key|$rtt|$sys"]=$t
    REQS["$key|$rtt|$sys"]=$((r1 - r0))
    say "$rtt ms $sys $key: $t s, $((r1 - r0)) requests"
}

# The relay's own cost: a 256 MiB shelf get direct and through it at 0 ms, no cap.
say "the relay's own cost at 0 ms"
rate_saved=$rate rate=0
start_relays 0
drop_caches
direct=$(seconds "$BIN/shelf" --insecure-plaintext -q get "$SHELF_PLAIN_ADDR" big "$DISK/out/big")
drop_caches
relayed=$(seconds "$BIN/shelf" --insecure-plaintext -q get "$SHELF_VIA" big "$DISK/out/big")
rm -f "$DISK/out/big"
stop_relays
rate=$rate_saved

for rtt in $rtts; do
    start_relays "$rtt"
    for sys in shelf sshfs; do
        mount_sys "$sys"
        root=$MNT/$sys
        measure "$sys" "$rtt" ls cold w_ls "$root"
        measure "$sys" "$rtt" find cold w_find "$root"
        cp "$DISK/git-index" "$LIB/repo/.git/index"
        measure "$sys" "$rtt" git-cold cold w_git "$root"
        measure "$sys" "$rtt" git-warm warm w_git "$root"
        measure "$sys" "$rtt" cp-out cold w_cp_out "$root"
        measure "$sys" "$rtt" cp-in warm w_cp_in "$root" "$rtt"
        rm -rf "$LIB/in-$rtt"
        measure "$sys" "$rtt" tar cold w_tar "$root"
        measure "$sys" "$rtt" open cold w_open "$root"
        measure "$sys" "$rtt" cat cold w_cat "$root"
        umount_sys "$sys"
    done
    stop_relays
done

echo "## Latency: shelf and sshfs through a delay relay, $(date -u +%Y-%m-%dT%H:%MZ), $(git describe --always --dirty)"
echo
echo "Both unencrypted, through bench/delay at each round trip with a ${rate} MB/s cap each way;"
echo "library on a journaled ext4 loop image; machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)."
echo "The relay's own cost at 0 ms, no cap: a ${CAT_MIB} MiB shelf get took $direct s direct, $relayed s through it."
[ -n "$shelf_opts" ] && echo "shelf mounted with: $shelf_opts"
echo "Requests: what each client sent for the workload (one round trip each unless pipelined)."
echo
printf '| workload | RTT ms | shelf s | shelf requests | sshfs s | sshfs requests | shelf speed / sshfs |\n|---|--:|--:|--:|--:|--:|--:|\n'
for key in ls find git-cold git-warm cp-out cp-in tar open cat; do
    wanted "$key" || continue
    for rtt in $rtts; do
        a=${SECS["$key|$rtt|shelf"]} b=${SECS["$key|$rtt|sshfs"]}
        ratio=$(echo "scale=2; $b / $a" | bc -l)
        extra=""
        [ "$key" = cat ] && extra=" ($(mbps $((CAT_MIB << 20)) "$a") vs $(mbps $((CAT_MIB << 20)) "$b") MiB/s)"
        printf '| %s | %s | %.3f | %s | %.3f | %s | %s×%s |\n' "$key" "$rtt" "$a" "${REQS["$key|$rtt|shelf"]}" \
            "$b" "${REQS["$key|$rtt|sshfs"]}" "$ratio" "$extra"
    done
done
