//! Walk-ahead (`ahead.rs`): a walk's next subdirectories are listed ahead of it, each once,
//! and what a listing asked ahead shows is never older than this mount's own changes.

use std::sync::Arc;
use std::time::Instant;

use shelf_testkit::Faulty;

use super::*;

const DIRS: usize = 12;

/// `top/d0..d11`, each with `f0..f2`, made on the server; a core with walk-ahead running.
fn walk_fixture(walk_ahead: usize) -> (TempDir, Arc<Core<Faulty<Loopback>>>) {
    let dir = tempfile::tempdir().expect("temp dir");
    for d in 0..DIRS {
        let sub = dir.path().join(format!("top/d{d}"));
        fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..3 {
            fs::write(sub.join(format!("f{f}")), format!("{d}/{f}")).expect("seed");
        }
    }
    let cfg = CoreConfig {
        walk_ahead,
        ..pushed_config(Duration::from_secs(30))
    };
    let core = Arc::new(faulty_core(dir.path(), cfg));
    core.start_walk_ahead().expect("walk-ahead starts");
    (dir, core)
}

/// `opendir` + readdirplus of everything + `releasedir`, as `find` does.
fn read_dir<T: Transport>(core: &Core<T>, ino: Ino) -> Collect {
    let dh = core.opendir(ino).expect("opendir");
    let mut all = Collect::default();
    core.readdir(dh, 0, true, &mut all).expect("readdir");
    core.releasedir(dh);
    all
}

fn settle<T: Transport>(core: &Core<T>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while core.ahead.pending() > 0 {
        assert!(Instant::now() < deadline, "walk-ahead never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Walks `top` as `find` does, checking each directory's names; returns the `List`
/// requests the walk sent.
fn walk<T: Transport>(core: &Core<T>, lists: impl Fn() -> usize, pause: bool) -> usize {
    let before = lists();
    let top = core.lookup(ROOT_INO, b"top").expect("lookup top");
    let listed = read_dir(core, top.ino);
    let mut subs: Vec<(Ino, Vec<u8>)> = listed.entries[2..]
        .iter()
        .map(|e| (e.0, e.2.clone()))
        .collect();
    assert_eq!(subs.len(), DIRS);
    subs.sort_by_key(|s| s.1.clone());
    for (ino, name) in subs {
        let got = read_dir(core, ino).names();
        assert_eq!(
            got,
            [".", "..", "f0", "f1", "f2"],
            "{}",
            String::from_utf8_lossy(&name)
        );
        if pause {
            settle(core);
        }
    }
    settle(core);
    lists() - before
}

#[test]
fn a_walk_lists_each_directory_once_whether_ahead_of_it_or_not() {
    let (_dir, core) = walk_fixture(4);
    let lists = || core.client.transport().seen("list");
    // With pauses every listing asked ahead has answered before its opendir; without, some
    // opendirs meet theirs on the way (waited for) or still queued (taken over).
    assert_eq!(walk(&core, lists, true), 1 + DIRS, "paused walk");
    let (asked, taken) = core.walk_ahead_stats().expect("on");
    assert_eq!(
        (asked, taken),
        (DIRS as u64 - 1, DIRS as u64 - 1),
        "every directory after the first was listed ahead and taken"
    );
    let (_dir, core) = walk_fixture(4);
    let lists = || core.client.transport().seen("list");
    assert_eq!(walk(&core, lists, false), 1 + DIRS, "walk at full speed");
}

#[test]
fn without_walk_ahead_each_opendir_lists_by_itself() {
    let (_dir, core) = walk_fixture(0);
    let lists = || core.client.transport().seen("list");
    assert_eq!(walk(&core, lists, true), 1 + DIRS);
    assert_eq!(core.walk_ahead_stats(), None, "off");
}

/// A listing asked ahead that the mount's own change overtook is not handed out: the
/// `opendir` shows the change.
#[test]
fn a_listing_asked_ahead_never_hides_the_mounts_own_changes() {
    let (_dir, core) = walk_fixture(4);
    let top = core.lookup(ROOT_INO, b"top").expect("lookup top");
    let listed = read_dir(&core, top.ino);
    let ino_of = |name: &str| {
        listed
            .entries
            .iter()
            .find(|e| e.2 == name.as_bytes())
            .map(|e| e.0)
            .expect("listed")
    };
    let _ = read_dir(&core, ino_of("d0"));
    settle(&core);
    // d1 and the next ones were listed ahead; now this mount adds to d1 and removes from d2.
    let d1 = ino_of("d1");
    let (_, o) = core
        .create(d1, b"new", 0o100644, 0o022, libc::O_RDWR)
        .expect("create");
    core.write(o.fh, 0, b"written after the listing")
        .expect("write");
    core.release(o.fh).expect("release");
    let d2 = ino_of("d2");
    core.unlink(d2, b"f1").expect("unlink");
    let got = read_dir(&core, d1);
    assert_eq!(got.names(), [".", "..", "f0", "f1", "f2", "new"]);
    let new = got.entries.iter().find(|e| e.2 == b"new").expect("new");
    assert_eq!(new.3.size, 25, "the size after the write");
    assert_eq!(read_dir(&core, d2).names(), [".", "..", "f0", "f2"]);
}
