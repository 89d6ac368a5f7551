//! Core tests against a real server over a socket pair (`remote::Loopback`), without FUSE:
//! the fixture and helpers here, the tests by idea in the files below.

mod ahead;
mod dirs;
mod files;
mod hidden;
mod names;
mod push;
mod space;
mod xattr;

use std::fs;
use std::time::Duration;

use shelf_proto::{Attr, Code, FileKind, SetTime, Timestamp};
use tempfile::TempDir;

use super::*;
use shelf_testkit::Loopback;

const CHUNK: u32 = 4096;

/// Byte k of a test file is k mod 251, so a misplaced byte cannot pass.
fn ramp(len: usize, start: usize) -> Vec<u8> {
    (start..start + len).map(|k| (k % 251) as u8).collect()
}

struct Fixture {
    dir: TempDir,
    core: Core<Loopback>,
}

fn fixture_with(cfg: CoreConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let lb = Loopback::new(dir.path()).expect("loopback server starts");
    Fixture {
        core: Core::new(lb, cfg),
        dir,
    }
}

/// A core serving `dir` over a transport that counts requests and injects faults.
fn faulty_core(dir: &std::path::Path, cfg: CoreConfig) -> Core<shelf_testkit::Faulty<Loopback>> {
    let lb = Loopback::new(dir).expect("loopback server starts");
    Core::new(shelf_testkit::Faulty::new(lb), cfg)
}

/// Settings for tests of what the server pushes: the long TTL of 60 s, and `unwatched` for the
/// rest.
fn pushed_config(unwatched: Duration) -> CoreConfig {
    CoreConfig {
        chunk_size: CHUNK,
        attr_ttl: Duration::from_secs(60),
        unwatched_ttl: unwatched,
        ..CoreConfig::default()
    }
}

fn fixture() -> Fixture {
    fixture_with(CoreConfig {
        chunk_size: CHUNK,
        cache_bytes: 64 * CHUNK as u64,
        attr_ttl: Duration::ZERO,
        ..CoreConfig::default()
    })
}

fn errno_of<T: std::fmt::Debug>(r: FsResult<T>) -> Code {
    r.expect_err("the operation should fail").code()
}

impl Fixture {
    fn create(&self, name: &str) -> (Entry, Opened) {
        self.create_in(ROOT_INO, name)
    }

    /// Creates and opens `name` read-write in directory `parent`, mode 0644.
    fn create_in(&self, parent: Ino, name: &str) -> (Entry, Opened) {
        self.core
            .create(parent, name.as_bytes(), 0o100644, 0o022, libc::O_RDWR)
            .expect("create")
    }

    fn read_all(&self, fh: Fh, len: u32) -> Vec<u8> {
        self.core.read(fh, 0, len).expect("read").into()
    }
}

/// Every path in the library, sorted, relative as `./a/b`.
fn server_names(f: &Fixture) -> Vec<String> {
    fn walk(dir: &std::path::Path, rel: &str, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).expect("ls") {
            let e = e.expect("entry");
            let name = format!("{rel}/{}", e.file_name().to_string_lossy());
            if e.file_type().expect("type").is_dir() {
                walk(&e.path(), &name, out);
            }
            out.push(name);
        }
    }
    let mut out = Vec::new();
    walk(f.dir.path(), ".", &mut out);
    out.sort();
    out
}

/// A `readdir` reply that holds `room` entries (all when `None`).
#[derive(Default)]
struct Collect {
    entries: Vec<(Ino, u64, Vec<u8>, Attr)>,
    room: Option<usize>,
}

impl Collect {
    fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.2).into_owned())
            .collect()
    }
}

impl DirSink for Collect {
    fn add(&mut self, ino: Ino, offset: u64, name: &[u8], attr: &Attr) -> bool {
        if self.room.is_some_and(|r| self.entries.len() >= r) {
            return true;
        }
        self.entries.push((ino, offset, name.to_vec(), *attr));
        false
    }
}
