//! Round trips saved where a program does many small things one after another, counted by
//! the requests the server was sent: lookups of many names in a directory the mount never
//! listed (`git status`, `make`) list it once and are answered from the listing
//! (`core/src/listing.rs`, "Walks"); an open of a small file that asks the server sends the
//! read with its stat.

use std::fs;
use std::time::Duration;

use shelf_core::{Core, CoreConfig, Ino, ROOT_INO};
use shelf_proto::Code;
use shelf_testkit::{Fault, Faulty, Memory};
use tempfile::TempDir;

struct Fixture {
    dir: TempDir,
    core: Core<Faulty<Memory>>,
}

fn fixture(unwatched_ttl: Duration) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let memory = Memory::new(dir.path()).expect("server");
    let core = Core::new(
        Faulty::new(memory),
        CoreConfig {
            unwatched_ttl,
            push: false,
            prefetch_threads: 1,
            ..CoreConfig::default()
        },
    );
    Fixture { dir, core }
}

impl Fixture {
    fn seen(&self, kind: &str) -> usize {
        self.core.transport().seen(kind)
    }

    fn files(&self, dir: &str, n: usize) {
        let d = self.dir.path().join(dir);
        fs::create_dir_all(&d).expect("mkdir on the server");
        for k in 0..n {
            fs::write(d.join(format!("f{k}")), vec![b'x'; k]).expect("file on the server");
        }
    }

    fn dir(&self, name: &str) -> Ino {
        self.core
            .lookup(ROOT_INO, name.as_bytes())
            .expect("lookup dir")
            .ino
    }
}

#[test]
fn a_walk_lists_the_directory_once_and_is_answered_from_it() {
    let f = fixture(Duration::from_secs(30));
    f.files("d", 50);
    let d = f.dir("d");
    let (stats, lists) = (f.seen("stat"), f.seen("list"));
    for k in 0..50 {
        let e = f
            .core
            .lookup(d, format!("f{k}").as_bytes())
            .expect("lookup");
        assert_eq!(e.attr.size, k as u64, "f{k}'s own attributes");
    }
    assert_eq!(
        f.seen("stat") - stats,
        1,
        "only the first name of the walk was asked for alone"
    );
    // A primed listing does not answer "absent": a name another client made a moment ago is
    // found as before walks.
    fs::write(f.dir.path().join("d/theirs"), b"new").expect("server create");
    f.core.lookup(d, b"theirs").expect("found on the server");
    assert_eq!(errno(f.core.lookup(d, b"missing")), Code::NotFound);
    assert_eq!(f.seen("list") - lists, 1, "one listing served the rest");
}

#[test]
fn one_lookup_does_not_list() {
    let f = fixture(Duration::from_secs(30));
    f.files("d", 10);
    let d = f.dir("d");
    let lists = f.seen("list");
    f.core.lookup(d, b"f3").expect("lookup");
    assert_eq!(f.seen("list"), lists, "a single stat stays a single stat");
}

/// A program making files looks up names that are not there: that is no walk, and listing
/// for it would cost a round trip and save none.
#[test]
fn lookups_of_absent_names_do_not_list() {
    let f = fixture(Duration::from_secs(30));
    f.files("d", 10);
    let d = f.dir("d");
    let lists = f.seen("list");
    for k in 0..10 {
        let name = format!("new{k}");
        assert_eq!(errno(f.core.lookup(d, name.as_bytes())), Code::NotFound);
    }
    assert_eq!(f.seen("list"), lists);
}

#[test]
fn a_walk_sees_this_mounts_changes_and_the_server_after_the_ttl() {
    let ttl = Duration::from_millis(300);
    let f = fixture(ttl);
    f.files("d", 5);
    let d = f.dir("d");
    f.core.lookup(d, b"f0").expect("f0");
    let e = f.core.lookup(d, b"f1").expect("f1, listing d");

    // This mount's own write: the listing's entries go, the next lookup asks.
    let o = f.core.open(e.ino, libc::O_WRONLY).expect("open");
    f.core.write(o.fh, 0, b"longer now").expect("write");
    f.core.flush(o.fh).expect("close");
    f.core.release(o.fh).expect("release");
    assert_eq!(f.core.lookup(d, b"f1").expect("f1").attr.size, 10);

    // Behind the mount's back: seen once the TTL has passed, as for any cached attribute.
    fs::write(f.dir.path().join("d/f2"), b"changed on the server").expect("server write");
    fs::write(f.dir.path().join("d/new"), b"new").expect("server create");
    std::thread::sleep(ttl);
    assert_eq!(f.core.lookup(d, b"f2").expect("f2").attr.size, 21);
    assert_eq!(f.core.lookup(d, b"new").expect("new").attr.size, 3);

    // Removed behind the mount's back within the TTL: the open that finds it gone is ESTALE
    // and takes the listing with it, so the kernel's lookup after the ESTALE asks the server.
    f.core.lookup(d, b"f3").expect("f3, listing d");
    let f4 = f.core.lookup(d, b"f4").expect("f4 from the listing");
    fs::remove_file(f.dir.path().join("d/f4")).expect("server unlink");
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(errno(f.core.open(f4.ino, libc::O_RDONLY)), Code::Stale);
    assert_eq!(errno(f.core.lookup(d, b"f4")), Code::NotFound);
}

#[test]
fn a_directory_too_large_to_keep_is_not_listed_again_for_lookups() {
    let f = fixture(Duration::from_secs(30));
    // More entries than one listing may keep with their attributes (64 Ki / 8).
    f.files("big", 8 * 1024 + 1);
    let d = f.dir("big");
    let lists = f.seen("list");
    for k in 0..20 {
        f.core
            .lookup(d, format!("f{k}").as_bytes())
            .expect("lookup");
    }
    assert_eq!(
        f.seen("list") - lists,
        1,
        "listed once, found too large, then asked one name at a time"
    );
}

/// The close-to-open stat of an open whose attributes are older than the lookup just before
/// goes with the small file's read, not ahead of it: refused, the open fails, and the read
/// was already sent.
#[test]
fn an_open_sends_the_small_files_read_with_its_stat() {
    let f = fixture(Duration::from_secs(30));
    fs::write(f.dir.path().join("small"), b"a small file").expect("seed");
    let e = f.core.lookup(ROOT_INO, b"small").expect("lookup");
    std::thread::sleep(Duration::from_millis(30));
    let reads = f.seen("read");
    f.core.transport().fail("stat", 1, Fault::Refuse(Code::Io));
    assert_eq!(errno(f.core.open(e.ino, libc::O_RDONLY)), Code::Io);
    assert_eq!(f.seen("read") - reads, 1, "the read left with the stat");

    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(
        &f.core.read(o.fh, 0, 4096).expect("read")[..],
        b"a small file"
    );
    f.core.release(o.fh).expect("release");
}

fn errno<T: std::fmt::Debug>(r: Result<T, shelf_core::FsError>) -> Code {
    r.expect_err("an error").code()
}
