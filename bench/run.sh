#!/usr/bin/env bash
# shelf beside sshfs, sshfs without encryption, a FUSE passthrough and the local disk, in one
# run over loopback, with the targets of DESIGN.md ("Caching and speed") marked met or not.
#   bench/run.sh [--quick] [--out FILE.md] [--no-build]
#
# Systems, all serving the same directory on one journaled ext4 loop image:
#   local         the directory itself (the ceiling)
#   bindfs        a local FUSE passthrough (the FUSE ceiling)
#   shelf         shelfd + `shelf mount` over loopback TCP, TLS 1.3 (the default)
#   shelf-plain   the same with --insecure-plaintext on both sides (no TLS)
#   sshfs         sshfs through a private sshd on a loopback port (encrypted with
#                 aes128-gcm@openssh.com, the fastest cipher OpenSSH offers here)
#   sshfs-direct  sshfs -o directport against sftp-server under socat (no encryption)
# "Cold" figures remount every FUSE file system and drop the page cache first, so no layer
# (kernel or user space) starts with the data. Medians of --runs (3) rounds; in each round
# the systems take turns, so a noisy neighbour disturbs all of them alike.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
. scripts/lib.sh

quick=0
out=bench/results/latest.md
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1; shift ;;
        --out) out=$2; shift 2 ;;
        --no-build) BENCH_NO_BUILD=1; shift ;;
        *) echo "usage: bench/run.sh [--quick] [--out FILE.md] [--no-build]" >&2; exit 2 ;;
    esac
done

if [ "$quick" = 1 ]; then
    BIG_MIB=64 RUNS=1 FIO_SECS=2 SMALL_FILES=300 SRC_FILES=1500 IMG_SIZE=3G
    SCALE=(1000 10000) STREAM_GIB=0
else
    BIG_MIB=1024 RUNS=3 FIO_SECS=10 SMALL_FILES=2000 SRC_FILES=0 IMG_SIZE=9G
    SCALE=(1000 10000 100000) STREAM_GIB=10
fi
DIR_ENTRIES=2000
CREATE_FILES=1000
CACHE_SIZE=256M              # shelf mount's chunk cache, passed explicitly
CACHE_BYTES=$((256 << 20))
MEM_SLACK_MIB=64             # "small constant" over the cache size the mount may use
BIG_BYTES=$((BIG_MIB << 20))
SYSTEMS=(local bindfs shelf plain sshfs direct)
declare -A LABEL=([local]=local [bindfs]=bindfs [shelf]=shelf [plain]=shelf-plain [sshfs]=sshfs [direct]=sshfs-direct)
MNT=$BENCH_ROOT/mnt
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)
built=$(git describe --always --dirty 2>/dev/null || echo unknown)

say() { echo "bench: $*" >&2; }

need_packages sshfs openssh-server socat fio bindfs bc
build_bins
for b in shelf shelfd; do [ -x "$BIN/$b" ] || { say "no $BIN/$b"; exit 1; }; done

# ---------------------------------------------------------------------------------------------
# The library.

# Picks a real source tree with thousands of files that a fresh Debian + Rust machine has.
pick_source_tree() {
    local sysroot
    sysroot=$(rustc --print sysroot 2>/dev/null || true)
    if [ -n "$sysroot" ] && [ -d "$sysroot/lib/rustlib/src/rust/library" ]; then
        echo "$sysroot/lib/rustlib/src/rust/library"
    elif [ -d "$HOME/.cargo/registry/src" ] &&
        [ "$(find "$HOME/.cargo/registry/src" -type f | wc -l)" -ge 3000 ]; then
        echo "$HOME/.cargo/registry/src"
    else
        echo /usr/include
    fi
}

# Writes COUNT files of 1 to 64 KiB of random bytes under DIR, 100 to a subdirectory.
make_small_tree() {
    perl -e '
        my ($dir, $count) = @ARGV;
        open(my $r, "<", "/dev/urandom") or die; read($r, my $pool, 1 << 20) == 1 << 20 or die;
        srand(42);
        for my $i (0 .. $count - 1) {
            my $sub = sprintf("%s/d%02d", $dir, int($i / 100));
            mkdir $sub unless -d $sub;
            my $n = 1024 * (1 + int(rand(64)));
            open(my $f, ">", sprintf("%s/f%05d", $sub, $i)) or die "$!";
            print $f substr($pool, int(rand((1 << 20) - $n)), $n); close($f) or die;
        }' "$1" "$2"
}

# Makes COUNT empty files in DIR (a new directory).
make_flat_dir() {
    mkdir -p "$1"
    perl -e 'my ($d, $n) = @ARGV; for my $i (1 .. $n) {
        open(my $f, ">", sprintf("%s/entry-%07d", $d, $i)) or die "$!"; close($f) }' "$1" "$2"
}

setup_disk "$IMG_SIZE"
LIB=$DISK/lib
mkdir -p "$LIB/w" "$DISK/out"
say "making the library on $IMG ($IMG_SIZE, journaled ext4)"
head -c "$BIG_BYTES" /dev/urandom >"$LIB/big"
cp "$LIB/big" "$DISK/src-big"
make_flat_dir "$LIB/dir" "$DIR_ENTRIES"
mkdir -p "$LIB/small"
make_small_tree "$LIB/small" "$SMALL_FILES"
SRC_FROM=$(pick_source_tree)
mkdir -p "$LIB/src"
if [ "$SRC_FILES" -gt 0 ]; then
    (cd "$SRC_FROM" && find . -type f | sort | awk -v n="$SRC_FILES" 'NR <= n' | tar cf - -T - 2>/dev/null) |
        tar xf - -C "$LIB/src"
else
    cp -r "$SRC_FROM/." "$LIB/src/"
fi
SRC_COUNT=$(find "$LIB/src" -type f | wc -l)
SRC_MIB=$(du -sm "$LIB/src" | cut -f1)
SMALL_MIB=$(du -sm "$LIB/small" | cut -f1)
for n in "${SCALE[@]}"; do make_flat_dir "$LIB/scale/d$n" "$n"; done
[ "$STREAM_GIB" -gt 0 ] && truncate -s "${STREAM_GIB}G" "$LIB/stream"
sync

# ---------------------------------------------------------------------------------------------
# Servers and mounts.

start_shelfd "$LIB"
start_shelfd "$LIB" plain

SSH_DIR=$BENCH_ROOT/ssh
rm -rf "$SSH_DIR"; mkdir -p "$SSH_DIR" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/id"
cp "$SSH_DIR/id.pub" "$SSH_DIR/authorized_keys"
SSH_PORT=$(free_port)
cat >"$SSH_DIR/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSH_DIR/host_key
PidFile $SSH_DIR/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
setsid /usr/sbin/sshd -D -e -f "$SSH_DIR/sshd_config" 2>"$SSH_DIR/sshd.log" </dev/null &
SSHD_PID=$!
on_exit "kill -TERM -- -$SSHD_PID; kill -TERM $SSHD_PID"

SFTP_PORT=$(free_port)
setsid socat "TCP-LISTEN:$SFTP_PORT,bind=127.0.0.1,reuseaddr,fork,nodelay" \
    EXEC:/usr/lib/openssh/sftp-server 2>"$BENCH_ROOT/socat.log" </dev/null &
SOCAT_PID=$!
on_exit "kill -TERM -- -$SOCAT_PID; kill -TERM $SOCAT_PID"
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null &&
        (exec 3<>"/dev/tcp/127.0.0.1/$SFTP_PORT") 2>/dev/null && break
    sleep 0.05
done

SHELF_PID=
PLAIN_PID=
on_exit '[ -n "$SHELF_PID" ] && kill -TERM $SHELF_PID'
on_exit '[ -n "$PLAIN_PID" ] && kill -TERM $PLAIN_PID'
for s in bindfs shelf plain sshfs direct; do
    mkdir -p "$MNT/$s"
    on_exit "umount '$MNT/$s' || umount -l '$MNT/$s'"
done

root_of() { if [ "$1" = local ]; then echo "$LIB"; else echo "$MNT/$1"; fi; }

mount_sys() {
    local dir=$MNT/$1
    case $1 in
        local) return 0 ;;
        bindfs) bindfs "$LIB" "$dir" ;;
        shelf)
            "$BIN/shelf" mount --foreground --cache-size "$CACHE_SIZE" -o "fingerprint=$SHELF_FP" \
                "$SHELF_ADDR" "$dir" </dev/null >>"$BENCH_ROOT/shelf-mount.log" 2>&1 &
            SHELF_PID=$!
            ;;
        plain)
            "$BIN/shelf" mount --foreground --cache-size "$CACHE_SIZE" --insecure-plaintext \
                "$SHELF_PLAIN_ADDR" "$dir" </dev/null >>"$BENCH_ROOT/shelf-mount.log" 2>&1 &
            PLAIN_PID=$!
            ;;
        sshfs)
            sshfs -p "$SSH_PORT" -o "IdentityFile=$SSH_DIR/id,StrictHostKeyChecking=no" \
                -o Ciphers=aes128-gcm@openssh.com \
                -o UserKnownHostsFile=/dev/null,LogLevel=ERROR "root@127.0.0.1:$LIB" "$dir" ;;
        direct) sshfs -o "directport=$SFTP_PORT" "127.0.0.1:$LIB" "$dir" ;;
    esac
    for _ in $(seq 200); do
        mountpoint -q "$dir" && return 0
        if [ "$1" = shelf ] && ! kill -0 "$SHELF_PID" 2>/dev/null; then break; fi
        if [ "$1" = plain ] && ! kill -0 "$PLAIN_PID" 2>/dev/null; then break; fi
        sleep 0.05
    done
    say "mounting $1 failed"; tail -n 20 "$BENCH_ROOT/shelf-mount.log" >&2; exit 1
}

umount_sys() {
    local dir=$MNT/$1
    [ "$1" = local ] && return 0
    mountpoint -q "$dir" && { umount "$dir" 2>/dev/null || { sleep 0.5; umount "$dir"; }; }
    if [ "$1" = shelf ] && [ -n "$SHELF_PID" ]; then
        for _ in $(seq 100); do kill -0 "$SHELF_PID" 2>/dev/null || break; sleep 0.05; done
        kill -0 "$SHELF_PID" 2>/dev/null && { say "shelf mount did not exit"; kill "$SHELF_PID"; }
        wait "$SHELF_PID" 2>/dev/null || true
        SHELF_PID=
    fi
    if [ "$1" = plain ] && [ -n "$PLAIN_PID" ]; then
        for _ in $(seq 100); do kill -0 "$PLAIN_PID" 2>/dev/null || break; sleep 0.05; done
        kill -0 "$PLAIN_PID" 2>/dev/null && { say "shelf mount did not exit"; kill "$PLAIN_PID"; }
        wait "$PLAIN_PID" 2>/dev/null || true
        PLAIN_PID=
    fi
}

# A cold start: a fresh mount (no user-space cache) and no page cache. Only the system measured
# stays mounted: another shelf mount of the library would take change notices for its writes
# (it watches the same directories), and it and its server would compete for the CPU.
cold() {
    local o
    for o in bindfs shelf plain sshfs direct; do [ "$o" = "$1" ] || umount_sys "$o"; done
    umount_sys "$1"; mount_sys "$1"; drop_caches
}

for s in bindfs shelf plain sshfs direct; do mount_sys "$s"; done

# ---------------------------------------------------------------------------------------------
# Workloads. Each times one thing on the root given and prints seconds.

declare -A R        # "metric|system" -> space-separated samples
add() {
    [ -n "$3" ] || { say "no figure for $1 on $2"; exit 1; }
    R["$1|$2"]+=" $3"
}

w_read() { dd if="$1/big" of=/dev/null bs=1M status=none; }
w_write() { dd if=/dev/zero of="$1/w/out" bs=1M count="$BIG_MIB" conv=fsync status=none; }
w_ls() { ls -l "$1" >/dev/null; }
w_cp_out() { cp -r "$1/small" "$DISK/out/small" && sync; }
w_cp_in() { cp -r "$LIB/small" "$1" && sync; }
w_find() { find "$1/src" -ls >/dev/null; }
# Through cat: GNU tar skips reading the files when the archive is /dev/null.
w_tar() { tar cf - -C "$1/src" . | cat >/dev/null; }
w_create() { local i; for ((i = 0; i < CREATE_FILES; i++)); do : >"$1/f$i"; done; }
w_delete() { rm -r "$1"; }

fio_iops() {
    fio --name=rand --filename="$1/big" --rw=randread --bs=4k --direct=0 --ioengine=psync \
        --numjobs="$2" --time_based --runtime="$FIO_SECS" --group_reporting \
        --output-format=terse --terse-version=3 | awk -F';' '{print $8}'
}

# Peak resident memory of the shelf mount process, in KiB.
shelf_hwm() { awk '/^VmHWM/ {print $2}' "/proc/$SHELF_PID/status"; }

say "measuring: $RUNS round(s), ${BIG_MIB} MiB files, fio ${FIO_SECS} s"
for r in $(seq "$RUNS"); do
    say "round $r: sequential read and write"
    for s in "${SYSTEMS[@]}"; do
        root=$(root_of "$s")
        cold "$s"
        add read-cold "$s" "$(seconds w_read "$root")"
        add read-warm "$s" "$(seconds w_read "$root")"
        [ "$s" = shelf ] && add hwm-after-read shelf "$(shelf_hwm)"
        sync
        add write "$s" "$(seconds w_write "$root")"
        rm -f "$root/w/out"
    done
    say "round $r: metadata and small files"
    for s in "${SYSTEMS[@]}"; do
        root=$(root_of "$s")
        cold "$s"
        add ls-cold "$s" "$(seconds w_ls "$root/dir")"
        add ls-warm "$s" "$(seconds w_ls "$root/dir")"
        cold "$s"
        add cp-out "$s" "$(seconds w_cp_out "$root")"
        rm -rf "$DISK/out/small"
        mkdir "$root/w/in$r"
        add cp-in "$s" "$(seconds w_cp_in "$root/w/in$r")"
        rm -rf "$root/w/in$r"
        cold "$s"
        add find "$s" "$(seconds w_find "$root")"
        cold "$s"
        add tar "$s" "$(seconds w_tar "$root")"
        mkdir "$root/w/c$r"
        sync
        add create "$s" "$(seconds w_create "$root/w/c$r")"
        add delete "$s" "$(seconds w_delete "$root/w/c$r")"
    done
    say "round $r: random 4 KiB reads"
    for s in "${SYSTEMS[@]}"; do
        for j in 1 4; do
            cold "$s"
            add "fio$j" "$s" "$(fio_iops "$(root_of "$s")" "$j")"
        done
    done
done

say "transfer: shelf get/put beside socat"
declare -A T
for _ in $(seq "$RUNS"); do transfer_round T "$LIB" "$DISK/src-big" "$DISK/out"; done

say "scale: ls -l of ${SCALE[*]} entries, cold"
for r in $(seq "$RUNS"); do
    for n in "${SCALE[@]}"; do
        for s in local shelf direct; do
            cold "$s"
            add "scale$n" "$s" "$(seconds w_ls "$(root_of "$s")/scale/d$n")"
        done
    done
done

hwm_base="" hwm_stream="" stream_secs=""
if [ "$STREAM_GIB" -gt 0 ]; then
    say "memory: streaming $STREAM_GIB GiB through a fresh shelf mount"
    cold shelf
    hwm_base=$(shelf_hwm)
    stream_secs=$(seconds dd if="$MNT/shelf/stream" of=/dev/null bs=1M status=none)
    hwm_stream=$(shelf_hwm)
fi

for s in bindfs shelf plain sshfs direct; do umount_sys "$s"; done

say "handshake: what TLS adds to a first shelf ls and to a reconnect"
mkdir -p "$LIB/empty"
# shellcheck disable=SC2086
HS_TLS=() HS_PLAIN=()
for _ in $(seq 21); do
    HS_TLS+=("$(seconds "$BIN/shelf" $SHELF_SEC ls "$SHELF_ADDR" empty)")
    HS_PLAIN+=("$(seconds "$BIN/shelf" --insecure-plaintext ls "$SHELF_PLAIN_ADDR" empty)")
done
LS_TLS=$(median "${HS_TLS[@]}"); LS_PLAIN=$(median "${HS_PLAIN[@]}")
HS_OUT=$(env -u CARGO_TARGET_DIR cargo run --release -q -p shelf-remote --example handshake -- \
    "$SHELF_ADDR" "$SHELF_FP" "$SHELF_PLAIN_ADDR" 100 2>/dev/null || true)
hs() { echo "$HS_OUT" | sed -n "s/^$1=//p"; }

# ---------------------------------------------------------------------------------------------
# The report.

med() { local v=${R["$1|$2"]:-}; [ -n "$v" ] && median $v || echo ""; }
# shellcheck disable=SC2086
tmed() { median ${T[$1]}; }
# How many times faster shelf is than SYSTEM on METRIC (>1: shelf faster); KIND time or rate.
speed() {
    local kind=$1 a=$2 b=$3
    [ -z "$a" ] || [ -z "$b" ] && { echo ""; return; }
    if [ "$kind" = time ]; then echo "$b / $a" | bc -l; else echo "$a / $b" | bc -l; fi
}
ge() { [ -n "$1" ] && [ "$(echo "$1 >= $2" | bc -l)" = 1 ]; }
fmt_ratio() { [ -z "$1" ] && echo "-" || printf '%.2f×' "$1"; }
yes_no() { if "$@"; then echo "**met**"; else echo "not met"; fi; }

# Value shown for a metric: time in s, rate in MiB/s (from seconds), IOPS as is.
show() {
    local unit=$1 v=$2
    [ -z "$v" ] && { echo "-"; return; }
    case $unit in
        MiB/s) printf '%.0f' "$(echo "$BIG_BYTES / 1048576 / $v" | bc -l)" ;;
        IOPS) printf '%.0f' "$v" ;;
        s) printf '%.3f' "$v" ;;
    esac
}

# metric | label | unit | kind of the raw median (time or rate) | target text
ROWS=(
    "read-cold|cold sequential read, ${BIG_MIB} MiB|MiB/s|time|≥ 0.9× local and ≥ 1.5× sshfs-direct"
    "read-warm|warm re-read, ${BIG_MIB} MiB|MiB/s|time|≥ 0.8× local or ≥ 0.9× bindfs"
    "write|sequential write + fsync, ${BIG_MIB} MiB|MiB/s|time|≥ 0.85× local"
    "ls-cold|ls -l, $DIR_ENTRIES entries, cold|s|time|≥ 1× sshfs (no slower)"
    "ls-warm|ls -l, $DIR_ENTRIES entries, warm|s|time|≥ 0.5× local (within 2×)"
    "cp-out|cp -r out, $SMALL_FILES files ($SMALL_MIB MiB), cold|s|time|≥ 2× sshfs-direct"
    "cp-in|cp -r in, $SMALL_FILES files ($SMALL_MIB MiB)|s|time|≥ 2× sshfs-direct"
    "find|find -ls, $SRC_COUNT files, cold|s|time|≥ 2× sshfs-direct"
    "tar|tar c, $SRC_COUNT files ($SRC_MIB MiB), cold|s|time|≥ 2× sshfs-direct"
    "create|create $CREATE_FILES empty files|s|time|≥ 2× sshfs-direct"
    "delete|delete $CREATE_FILES files (rm -r)|s|time|≥ 2× sshfs-direct"
    "fio1|random 4 KiB reads, 1 job, cold start|IOPS|rate|-"
    "fio4|random 4 KiB reads, 4 jobs, cold start|IOPS|rate|≥ 2× sshfs-direct"
)

target_met() {
    local m=$1 vl=$2 vb=$3 vsh=$4 vd=$5 vs=$6 kind=$7
    local rl rb rs rd
    rl=$(speed "$kind" "$vs" "$vl"); rb=$(speed "$kind" "$vs" "$vb")
    rs=$(speed "$kind" "$vs" "$vsh"); rd=$(speed "$kind" "$vs" "$vd")
    case $m in
        read-cold) ge "$rl" 0.9 && ge "$rd" 1.5 ;;
        read-warm) ge "$rl" 0.8 || ge "$rb" 0.9 ;;
        write) ge "$rl" 0.85 ;;
        ls-cold) ge "$rs" 1 ;;
        ls-warm) ge "$rl" 0.5 ;;
        cp-out | cp-in | find | tar | create | delete | fio4) ge "$rd" 2 ;;
        *) return 2 ;;
    esac
}

machine() {
    echo "- Machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- Load average at start / end: $load_start / $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine disturbs the figures)"
    echo "- shelf: tree $built at start, binaries in $BIN of $(date -r "$BIN/shelf" -u +%FT%TZ), mount options: --cache-size $CACHE_SIZE, defaults otherwise"
    echo "- shelf is over TLS 1.3 unless named shelf-plain (--insecure-plaintext on both sides); sshfs uses -o Ciphers=aes128-gcm@openssh.com"
    echo "- sshfs $(sshfs --version 2>&1 | sed -n 's/^SSHFS version //p' | head -n1), OpenSSH $(ssh -V 2>&1 | sed 's/,.*//'), bindfs $(bindfs --version 2>&1 | head -n1 | awk '{print $2}'), fio $(fio --version)"
    local j="journaled ext4 on a loop image ($IMG, $IMG_SIZE)"
    if root_has_no_journal; then
        echo "- Library: $j. The root file system is ext4 *without* a journal; the image keeps its quirks (slow creates after mass deletes) out of the figures."
    else
        echo "- Library: $j, the same for every system."
    fi
    echo "- Everything over loopback. sshfs and sshfs-direct use their default caching; bindfs its defaults (single-threaded)."
    echo "- Cold = FUSE file systems remounted and page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before the figure; warm = repeated at once."
}

report() {
    echo "# shelf benchmark ($( [ "$quick" = 1 ] && echo quick || echo full ), $started)"
    echo
    machine
    echo "- Medians of $RUNS run(s); the whole run took $(( $(date +%s) - t_start )) s."
    echo "- Ratios are shelf's speed over the other's (>1: shelf faster); times are seconds."
    echo
    echo "| workload | unit | local | bindfs | shelf | sshfs | sshfs-direct | shelf/local | shelf/sshfs-direct | target (shelf's speed) | met |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|"
    local row m label unit kind target vl vb vs vsh vd met
    for row in "${ROWS[@]}"; do
        IFS='|' read -r m label unit kind target <<<"$row"
        vl=$(med "$m" local); vb=$(med "$m" bindfs); vs=$(med "$m" shelf)
        vsh=$(med "$m" sshfs); vd=$(med "$m" direct)
        met="-"
        [ "$target" != - ] && met=$(yes_no target_met "$m" "$vl" "$vb" "$vsh" "$vd" "$vs" "$kind")
        echo "| $label | $unit | $(show "$unit" "$vl") | $(show "$unit" "$vb") | $(show "$unit" "$vs") | $(show "$unit" "$vsh") | $(show "$unit" "$vd") | $(fmt_ratio "$(speed "$kind" "$vs" "$vl")") | $(fmt_ratio "$(speed "$kind" "$vs" "$vd")") | $target | $met |"
    done

    echo
    echo "## shelf over TLS beside shelf in plaintext and sshfs (aes128-gcm@openssh.com)"
    echo
    echo "Targets of issue #12: cold sequential read and write ≥ 0.85× plaintext shelf; small-file and"
    echo "metadata workloads within 10% of it (≥ 0.9×); every workload ≥ 2× sshfs."
    echo
    echo "| workload | unit | shelf-plain | shelf (TLS) | sshfs | TLS/plain | TLS/sshfs | target | met |"
    echo "|---|---|--:|--:|--:|--:|--:|---|---|"
    local vp rp rsh tgt ok
    for row in "${ROWS[@]}"; do
        IFS='|' read -r m label unit kind target <<<"$row"
        vs=$(med "$m" shelf); vp=$(med "$m" plain); vsh=$(med "$m" sshfs)
        rp=$(speed "$kind" "$vs" "$vp"); rsh=$(speed "$kind" "$vs" "$vsh")
        case $m in
            read-cold | write) tgt="≥ 0.85× plain, ≥ 2× sshfs"; ok() { ge "$rp" 0.85 && ge "$rsh" 2; } ;;
            cp-out | cp-in | find | tar | create | delete | ls-cold)
                tgt="≥ 0.9× plain, ≥ 2× sshfs"; ok() { ge "$rp" 0.9 && ge "$rsh" 2; } ;;
            *) tgt="≥ 2× sshfs"; ok() { ge "$rsh" 2; } ;;
        esac
        echo "| $label | $unit | $(show "$unit" "$vp") | $(show "$unit" "$vs") | $(show "$unit" "$vsh") | $(fmt_ratio "$rp") | $(fmt_ratio "$rsh") | $tgt | $(yes_no ok) |"
    done
    echo
    echo "What a TLS handshake adds (loopback; medians):"
    echo
    echo "- a first \`shelf ls\` of an empty directory, process start included: TLS $(printf '%.1f' "$(echo "1000 * $LS_TLS" | bc -l)") ms, plaintext $(printf '%.1f' "$(echo "1000 * $LS_PLAIN" | bc -l)") ms: +$(printf '%.1f' "$(echo "1000 * ($LS_TLS - $LS_PLAIN)" | bc -l)") ms (goal < 5 ms); 21 runs each"
    echo "- a reconnect (TCP connect, TLS handshake, shelf hello, in one process; remote/examples/handshake.rs, 100 each): TLS $(hs connect_tls_us) µs, plaintext $(hs connect_plain_us) µs: +$(hs connect_tls_extra_us) µs"
    echo "- a ping's round trip on an open connection (2000 each): TLS $(hs ping_tls_us) µs, plaintext $(hs ping_plain_us) µs"

    echo
    echo "## shelf get / put beside a plain TCP copy (socat), ${BIG_MIB} MiB, cold"
    echo
    echo "| copy | seconds | MiB/s | shelf/socat | target | met |"
    echo "|---|--:|--:|--:|---|---|"
    local name base r
    for name in cp socat-get shelf-get socat-put shelf-put; do
        vs=$(tmed "$name")
        r="-" met="-" target="-"
        case $name in shelf-get | shelf-put)
            base=$(tmed "socat-${name#shelf-}")
            r=$(speed time "$vs" "$base")
            target="≥ 0.8× socat"
            met=$(yes_no ge "$r" 0.8)
            r=$(fmt_ratio "$r") ;;
        esac
        echo "| $name | $(printf '%.3f' "$vs") | $(mbps "$BIG_BYTES" "$vs") | $r | $target | $met |"
    done

    echo
    echo "## Scale: ls -l of large directories, cold"
    echo
    echo "| entries | local s | shelf s | sshfs-direct s | shelf µs/entry | shelf vs previous size |"
    echo "|--:|--:|--:|--:|--:|---|"
    local n prev="" per growth
    for n in "${SCALE[@]}"; do
        vs=$(med "scale$n" shelf)
        per=$(echo "1000000 * $vs / $n" | bc -l)
        growth="-"
        [ -n "$prev" ] && growth=$(printf '%.1f× time for %d× entries' "$(echo "$vs / $prev" | bc -l)" "$((n / prev_n))")
        echo "| $n | $(show s "$(med "scale$n" local)") | $(show s "$vs") | $(show s "$(med "scale$n" direct)") | $(printf '%.1f' "$per") | $growth |"
        prev=$vs prev_n=$n
    done
    local last=${SCALE[-1]} first=${SCALE[0]}
    local per_first per_last
    per_first=$(echo "$(med "scale$first" shelf) / $first" | bc -l)
    per_last=$(echo "$(med "scale$last" shelf) / $last" | bc -l)
    echo
    if [ "$last" -ge 100000 ]; then
        echo "- ls -l of 100k entries < 2 s cold: $(yes_no ge 2 "$(med "scale$last" shelf)") ($(show s "$(med "scale$last" shelf)") s)"
    fi
    # Linear: the cost per entry at the largest size at most 1.5× that at the smallest (the
    # smallest carries the fixed costs, so real growth shows as a rise, not a fall).
    echo "- Linear growth (per-entry time at $last ≤ 1.5× that at $first): $(yes_no ge "$(echo "1.5 * $per_first" | bc -l)" "$per_last")"

    echo
    echo "## Memory of the shelf mount process (VmHWM, peak resident)"
    echo
    echo "- Cache size: $CACHE_SIZE; limit taken as cache + $MEM_SLACK_MIB MiB = $((CACHE_BYTES / 1048576 + MEM_SLACK_MIB)) MiB."
    echo "- After reading the ${BIG_MIB} MiB file cold and warm: $(( $(med hwm-after-read shelf) / 1024 )) MiB (median over rounds)."
    if [ -n "$hwm_stream" ]; then
        local peak=$((hwm_stream / 1024))
        echo "- Streaming a ${STREAM_GIB} GiB sparse file through a fresh mount: $((hwm_base / 1024)) MiB after mounting, $peak MiB peak after; $(printf '%.0f' "$(echo "$STREAM_GIB * 1024 / $stream_secs" | bc -l)") MiB/s."
        echo "- Within cache + small constant: $(yes_no [ "$peak" -le $((CACHE_BYTES / 1048576 + MEM_SLACK_MIB)) ])"
    else
        echo "- (The 10 GiB stream is skipped with --quick.)"
    fi
}

mkdir -p "$(dirname "$out")"
report | tee "$out"
say "written to $out"
