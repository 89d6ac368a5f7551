#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what is missing,
# checks formatting and lints, builds, and runs every test (unit, property, end-to-end with
# real mounts). `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_packages "${TEST_PACKAGES[@]}"
# fsx (the file system exerciser, Rust port) checks a file's bytes and size through every kind
# of change; programs.rs runs it on a mount.
SHELF_FSX=$(need_cargo_tool fsx 0.3.2)
export SHELF_FSX
[ -e /dev/fuse ] || { echo "shelf: /dev/fuse is missing; the mount tests need FUSE" >&2; exit 1; }

cargo fmt --all -- --check
# The shipped client holds no server code (the in-process server is the dev-only testkit).
if cargo tree -p shelf-client -e normal --prefix none | grep -q '^shelf-\(server\|testkit\) '; then
    echo "shelf: shelf-client depends on server code outside its dev-dependencies" >&2; exit 1
fi
cargo clippy --workspace --all-targets -- -D warnings
# Broken intra-doc links are how module docs drift from the code they describe.
RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
    cargo doc --no-deps --workspace --document-private-items --quiet
# The end-to-end tests run the real binaries, which cargo test does not build for them.
cargo build --workspace --bins
cargo test --workspace -- --test-threads="${SHELF_TEST_THREADS:-4}"
