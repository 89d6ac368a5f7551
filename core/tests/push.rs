//! Change push through the core without FUSE (`core/src/push.rs`, `fresh.rs`): a core with
//! its push threads against the in-memory server, the library changed on disk beside it as
//! another client or a program on the server would.

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shelf_core::{Core, CoreConfig, DirSink, Ino, ROOT_INO};
use shelf_proto::Attr;
use shelf_testkit::{Faulty, Memory};
use tempfile::TempDir;

type TestCore = Arc<Core<Faulty<Memory>>>;

const SHORT: Duration = Duration::from_millis(300);

fn core(dir: &TempDir) -> TestCore {
    let server = Faulty::new(Memory::new(dir.path()).expect("server"));
    let c = Arc::new(Core::new(
        server,
        CoreConfig {
            attr_ttl: Duration::from_secs(600),
            unwatched_ttl: SHORT,
            prefetch_threads: 1,
            ..CoreConfig::default()
        },
    ));
    c.start_push().expect("push threads");
    c
}

struct Names(Vec<(Vec<u8>, Attr)>);

impl DirSink for Names {
    fn add(&mut self, _ino: Ino, _offset: u64, name: &[u8], attr: &Attr) -> bool {
        if name != b"." && name != b".." {
            self.0.push((name.to_vec(), *attr));
        }
        false
    }
}

/// The directory's entries as `readdir` (plain) gives them, with their sizes.
fn ls(c: &TestCore, dir: Ino) -> Vec<(String, u64)> {
    let fh = c.opendir(dir).expect("opendir");
    let mut names = Names(Vec::new());
    c.readdir(fh, 0, false, &mut names).expect("readdir");
    c.releasedir(fh);
    let mut v: Vec<_> = names
        .0
        .into_iter()
        .map(|(n, a)| (String::from_utf8_lossy(&n).into_owned(), a.size))
        .collect();
    v.sort();
    v
}

fn lists(c: &TestCore) -> usize {
    c.transport().seen("list")
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "not in time: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn watched(c: &TestCore) -> usize {
    c.push_stats().expect("push is on").watched
}

fn entry(name: &str, size: u64) -> (String, u64) {
    (name.to_owned(), size)
}

#[test]
fn a_watched_directory_is_listed_once_until_it_changes() {
    let lib = tempfile::tempdir().expect("library");
    fs::create_dir(lib.path().join("d")).expect("dir");
    fs::write(lib.path().join("d/a"), b"1").expect("file");
    let c = core(&lib);
    let d = c.lookup(ROOT_INO, b"d").expect("lookup").ino;
    assert_eq!(ls(&c, d), [entry("a", 1)]);
    until("the root and d watched", || watched(&c) >= 2);
    // The first listing was asked for before the watch: it lives by the short TTL only.
    std::thread::sleep(SHORT + Duration::from_millis(50));
    let before = lists(&c);
    assert_eq!(ls(&c, d), [entry("a", 1)]);
    assert_eq!(
        lists(&c),
        before + 1,
        "listed again: the old listing was not pushed"
    );
    std::thread::sleep(SHORT + Duration::from_millis(50));
    assert_eq!(ls(&c, d), [entry("a", 1)]);
    assert_eq!(
        lists(&c),
        before + 1,
        "past the short TTL, and kept: nothing changed"
    );

    // Another client's change is pushed: the kept listing goes.
    fs::write(lib.path().join("d/b"), b"22").expect("made beside the mount");
    until("b listed", || ls(&c, d).contains(&entry("b", 2)));

    // A change of this mount's own drops the kept entries too, before any notice.
    std::thread::sleep(SHORT + Duration::from_millis(50));
    let (e, o) = c
        .create(d, b"own", 0o644, 0, libc::O_WRONLY)
        .expect("create");
    c.write(o.fh, 0, b"333").expect("write");
    c.flush(o.fh).expect("flush");
    c.release(o.fh).expect("release");
    assert!(ls(&c, d).contains(&entry("own", 3)), "own file at its size");
    let a = c.lookup(d, b"a").expect("lookup a").ino;
    let o = c.open(a, libc::O_WRONLY).expect("open a");
    c.write(o.fh, 0, b"4444").expect("write a");
    c.flush(o.fh).expect("flush a");
    c.release(o.fh).expect("release a");
    assert!(
        ls(&c, d).contains(&entry("a", 4)),
        "own write shows in the next listing"
    );
    let _ = e;
}

#[test]
fn attributes_asked_for_before_the_watch_keep_the_short_ttl() {
    let lib = tempfile::tempdir().expect("library");
    fs::write(lib.path().join("f"), b"1").expect("file");
    let c = core(&lib);
    let f = c.lookup(ROOT_INO, b"f").expect("lookup").ino;
    until("the root watched", || watched(&c) >= 1);
    let before = c.transport().seen("stat");
    assert_eq!(c.getattr(f).expect("getattr").size, 1);
    std::thread::sleep(SHORT + Duration::from_millis(50));
    assert_eq!(c.getattr(f).expect("getattr").size, 1);
    let asked = c.transport().seen("stat");
    assert!(
        asked > before,
        "an attribute from before the watch expires by the short TTL"
    );
    std::thread::sleep(SHORT + Duration::from_millis(50));
    assert_eq!(c.getattr(f).expect("getattr").size, 1);
    assert_eq!(
        c.transport().seen("stat"),
        asked,
        "one asked for after the watch lives by the long TTL"
    );
    fs::write(lib.path().join("f"), b"4444").expect("rewritten beside the mount");
    until("the new size", || c.getattr(f).is_ok_and(|a| a.size == 4));
    assert!(
        c.kernel_ttl(f) > Duration::from_secs(60),
        "pushed: the long TTL"
    );
}

#[test]
fn a_lost_connection_puts_everything_on_the_short_ttl_until_watched_again() {
    let lib = tempfile::tempdir().expect("library");
    fs::create_dir(lib.path().join("d")).expect("dir");
    let c = core(&lib);
    let d = c.lookup(ROOT_INO, b"d").expect("lookup").ino;
    ls(&c, d);
    until("watched", || watched(&c) >= 2);
    // Listed after the watch was confirmed: kept for the long TTL.
    std::thread::sleep(SHORT + Duration::from_millis(50));
    ls(&c, d);
    let before = lists(&c);
    ls(&c, d);
    assert_eq!(lists(&c), before, "kept while watched");
    c.transport().inner().hang_up();
    // Whether the loss is seen as a failed wait or as a new connection, and however fast the
    // watches come back, what was kept under the old ones is not trusted any more. (Waiting
    // for the moment nothing is watched raced with a quick re-watch.)
    until("listed again once the connection went", || {
        ls(&c, d);
        lists(&c) > before
    });
    // Watched again on the new connection, and its changes pushed again.
    until("watched again", || watched(&c) >= 2);
    std::thread::sleep(SHORT + Duration::from_millis(50));
    ls(&c, d);
    fs::write(lib.path().join("d/x"), b"x").expect("made beside the mount");
    until("x listed after the reconnection", || {
        ls(&c, d).contains(&entry("x", 1))
    });
}
