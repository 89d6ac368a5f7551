#!/usr/bin/env bash
# One command from a fresh Debian machine (with Rust) to a mounted library:
# installs fuse3, builds shelf, starts shelfd on ./library and mounts it on ./mnt.
#   scripts/quickstart.sh [LIBRARY_DIR] [MOUNT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

library=$(realpath -m "${1:-library}")
mnt=$(realpath -m "${2:-mnt}")
port=${SHELF_PORT:-7878}

need_packages fuse3
cargo build --release --bins
bin=$PWD/target/release

# mount(8) runs /sbin/mount.fuse.shelf for `mount -t fuse.shelf` and fstab lines.
if [ "$(id -u)" -eq 0 ]; then
    ln -sf "$bin/shelf" /sbin/mount.fuse.shelf
fi

mkdir -p "$library" "$mnt"
if grep -q " $mnt fuse.shelf " /proc/self/mounts; then
    "$bin/shelf" umount "$mnt"
fi
pkill -f "shelfd $library " 2>/dev/null || true

# The server runs in a private mount namespace made before the mount exists, so it can never
# see (and wait on) its own mount through a symlink.
log=$PWD/shelfd.log
setsid unshare --mount --propagation private \
    "$bin/shelfd" "$library" --listen "127.0.0.1:$port" --state-dir "$PWD/.shelfd-state" \
    >"$log.addr" 2>"$log" </dev/null &
for _ in $(seq 50); do
    grep -q '^fingerprint ' "$log.addr" 2>/dev/null && break
    sleep 0.1
done
if ! [ -s "$log.addr" ]; then
    echo "shelf: shelfd did not start; see $log" >&2
    cat "$log" >&2
    exit 1
fi
addr=$(sed -n 's/^listening on //p' "$log.addr" | head -n1)
# The key shelfd printed: this script saw it start, so it can pin it without asking.
fingerprint=$(sed -n 's/^fingerprint //p' "$log.addr" | head -n1)

"$bin/shelf" mount -o "fingerprint=$fingerprint" "$addr" "$mnt"

cat <<MSG
shelf is running.
  library (on the server side): $library
  server:                       shelfd on $addr (log: $log)
  server key:                   $fingerprint (TLS 1.3)
  mounted at:                   $mnt

Try:   ls -l $mnt;  cp some-file $mnt/;  $bin/shelf --fingerprint $fingerprint ls $addr
Stop:  $bin/shelf umount $mnt; pkill shelfd
MSG
