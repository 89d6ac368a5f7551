#!/usr/bin/env bash
# The chaos run (issue #14): two mounts and CLI clients write, rename and delete while the
# server is killed and restarted, connection processes are killed, connections are stalled
# and cut, and the library's disk fills; at the end every acknowledged byte must be on the
# server and no file may hold a mix of two versions (tests/src/chaos.rs says exactly what is
# checked). An hour by default; tests/tests/chaos.rs runs 40 s of it in the suite.
#   scripts/chaos.sh [--secs 3600] [--seed N] [--fault-every-ms 2000]
# Needs root (it mounts a tmpfs and FUSE). Exits 1 if any promise was broken.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_packages fuse3
env -u CARGO_TARGET_DIR cargo build --release -q --bins
env -u CARGO_TARGET_DIR cargo build --release -q -p shelf-tests --bin shelf-chaos
# The release shelf and shelfd, found next to the chaos binary.
exec target/release/shelf-chaos "$@"
