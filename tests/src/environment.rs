//! What the tests need from the machine: the `shelf` and `shelfd` binaries, programs on
//! `PATH`, and a usable FUSE.
//!
//! What is hard: the tests crate cannot use `CARGO_BIN_EXE_*` of other packages, so the
//! binaries are found beside the test executable (`target/<profile>/`), as ripgrep's
//! `tests/util.rs` does, or in `$SHELF_BIN_DIR`; build them first with `cargo build --bins`.
//! A machine that cannot run the FUSE tests fails them, naming what is missing, unless
//! `SHELF_SKIP_FUSE=1` says to skip: no test passes silently for want of the means to run it.

use std::path::{Path, PathBuf};

/// The directory holding `shelf` and `shelfd`: `$SHELF_BIN_DIR`, else the target directory of
/// the running test executable (`target/debug/deps/t-hash` -> `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHELF_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let mut dir = exe
        .parent()
        .expect("test executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --bins` first (with the same CARGO_TARGET_DIR and \
         profile as the tests), or point SHELF_BIN_DIR at the directory holding it",
        path.display()
    );
    path
}

/// The `shelfd` binary.
pub fn shelfd_bin() -> PathBuf {
    binary("shelfd")
}

/// The `shelf` binary.
pub fn shelf_bin() -> PathBuf {
    binary("shelf")
}

/// Whether a program is on `PATH`.
pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Fails the test unless `name` is on `PATH`, naming the Debian package that provides it.
pub fn require_tool(name: &str, package: &str) {
    assert!(
        have_tool(name),
        "`{name}` is not installed; this test needs it (Debian package `{package}`, see \
         TEST_PACKAGES in scripts/lib.sh)"
    );
}

/// Whether the FUSE tests should run. Fails the test when FUSE is unusable (no `/dev/fuse`,
/// no `fusermount3`), unless `SHELF_SKIP_FUSE=1`, in which case it returns false and the
/// test returns early. Tests must not pass silently on a machine that cannot run them.
pub fn fuse_available() -> bool {
    let skip = std::env::var_os("SHELF_SKIP_FUSE").is_some_and(|v| v == "1");
    let problem = if !Path::new("/dev/fuse").exists() {
        Some(
            "/dev/fuse is missing (load the fuse module, or give the container --device /dev/fuse)",
        )
    } else if !have_tool("fusermount3") {
        Some("fusermount3 is not installed (Debian package `fuse3`)")
    } else {
        None
    };
    match problem {
        None => true,
        Some(why) if skip => {
            eprintln!("SHELF_SKIP_FUSE=1: skipping a FUSE test: {why}");
            false
        }
        Some(why) => panic!("cannot run the FUSE tests: {why}; set SHELF_SKIP_FUSE=1 to skip them"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_looked_up_beside_the_test_executable() {
        let dir = bin_dir();
        assert!(!dir.ends_with("deps"), "{}", dir.display());
    }
}
