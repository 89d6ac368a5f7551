//! Change notices with the server's state (`push.rs`, `apply`): this mount's own changes, told
//! back, leave what it caches alone; changes made by anyone else still make it forget. The
//! notices are the real server's, taken by hand from the pinned connection (push's threads
//! are not started, so nothing else takes them).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use shelf_proto::{ChangedPath, EntryState};
use shelf_testkit::Faulty;

use super::*;

struct PushFixture {
    dir: TempDir,
    core: Core<Faulty<Loopback>>,
    told: Arc<Mutex<Vec<Invalidate>>>,
}

fn push_fixture() -> PushFixture {
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing here is watched by push's own bookkeeping: the short TTL rules, and the test
    // must stay well within it.
    let core = faulty_core(dir.path(), pushed_config(Duration::from_secs(30)));
    let told = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&told);
    core.set_invalidator(Box::new(move |what| seen.lock().push(what)));
    PushFixture { dir, core, told }
}

impl PushFixture {
    /// Directory `d` with an empty file `name` in it, both made through the mount.
    fn dir_with_file(&self, name: &[u8]) -> (Entry, Entry) {
        let d = self.core.mkdir(ROOT_INO, b"d", 0o755, 0).expect("mkdir d");
        let (e, o) = self
            .core
            .create(d.ino, name, 0o100644, 0o022, libc::O_RDWR)
            .expect("create");
        self.core.release(o.fh).expect("release");
        (d, e)
    }

    /// Requests that ask the server about names or attributes.
    fn asked(&self) -> usize {
        let t = self.core.client.transport();
        t.seen("stat") + t.seen("list")
    }

    /// The notices of changes to every path in `want`, each with the state the server sent.
    fn notices(&self, want: &[&str]) -> Vec<ChangedPath> {
        let mut got: Vec<ChangedPath> = Vec::new();
        for _ in 0..50 {
            if want
                .iter()
                .all(|w| got.iter().any(|c| c.path == w.as_bytes()))
            {
                return got;
            }
            let (changes, lost, _) = self
                .core
                .client
                .changes(Duration::from_millis(200))
                .expect("changes");
            assert!(!lost, "no change was lost");
            got.extend(changes);
        }
        panic!("not all of {want:?} told: {got:?}");
    }

    fn apply_all(&self, changes: &[ChangedPath]) {
        self.told.lock().clear();
        for c in changes {
            self.core.apply(c);
        }
    }

    fn entries_told(&self) -> Vec<Vec<u8>> {
        self.told
            .lock()
            .iter()
            .filter_map(|w| match w {
                Invalidate::Entry { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn own_changes_told_back_are_kept_and_others_changes_are_not() {
    let f = push_fixture();
    let d = f.core.mkdir(ROOT_INO, b"d", 0o755, 0).expect("mkdir d");
    let (flags, _) = f.core.client.watch(vec![b"d".to_vec()]).expect("watch");
    assert_eq!(flags, [true]);
    f.core.watched_since_now(d.ino);
    f.core
        .getattr(d.ino)
        .expect("the directory's attributes cached");

    // This mount's own changes: a file made and written, a directory, a file made and removed.
    let (e, o) = f
        .core
        .create(d.ino, b"f", 0o100644, 0o022, libc::O_RDWR)
        .expect("create");
    f.core.write(o.fh, 0, b"0123456789").expect("write");
    f.core.flush(o.fh).expect("flush");
    f.core.release(o.fh).expect("release");
    let sub = f.core.mkdir(d.ino, b"sub", 0o755, 0).expect("mkdir sub");
    let (_, g) = f
        .core
        .create(d.ino, b"gone", 0o100644, 0o022, libc::O_RDWR)
        .expect("create gone");
    f.core.release(g.fh).expect("release gone");
    f.core.unlink(d.ino, b"gone").expect("unlink gone");

    let told = f.notices(&["d/f", "d/sub", "d/gone"]);
    assert!(
        told.iter()
            .all(|c| c.state != EntryState::Unknown && c.dir.is_some()),
        "the server says what it holds: {told:?}"
    );
    f.apply_all(&told);
    assert_eq!(f.entries_told(), Vec::<Vec<u8>>::new(), "no name forgotten");
    assert!(
        !f.told.lock().contains(&Invalidate::Pages(e.ino)),
        "the file's pages stay"
    );
    assert!(
        !f.told.lock().contains(&Invalidate::Pages(d.ino)),
        "the directory's attributes stay: they differ by this mount's own changes only"
    );
    // The kernel keeps its entries (none was told to go), and what it asks next is answered
    // here: attributes, and names the listing knows are not there.
    let before = f.asked();
    assert_eq!(f.core.getattr(e.ino).expect("getattr f").size, 10);
    f.core.getattr(d.ino).expect("getattr d");
    assert_eq!(
        f.core.getattr(sub.ino).expect("getattr sub").ino,
        sub.attr.ino
    );
    assert_eq!(errno_of(f.core.lookup(d.ino, b"gone")), Code::NotFound);
    assert_eq!(errno_of(f.core.lookup(d.ino, b"never")), Code::NotFound);
    assert_eq!(f.asked(), before, "all answered from what the mount held");
    let found = f.core.lookup(d.ino, b"f").expect("lookup f");
    assert_eq!((found.ino, found.attr.size), (e.ino, 10));

    // Someone else rewrites the file, makes a name and removes one.
    let lib = f.dir.path().join("d");
    fs::write(lib.join("f"), b"another, longer").expect("rewrite on the server");
    fs::write(lib.join("new"), b"n").expect("create on the server");
    fs::remove_dir(lib.join("sub")).expect("rmdir on the server");
    let told = f.notices(&["d/f", "d/new", "d/sub"]);
    f.apply_all(&told);
    assert!(
        f.told.lock().contains(&Invalidate::Pages(e.ino)),
        "the rewritten file's pages go"
    );
    assert!(
        f.told.lock().contains(&Invalidate::Pages(d.ino)),
        "the directory's attributes go"
    );
    let mut names = f.entries_told();
    names.sort();
    assert_eq!(
        names,
        [b"new".to_vec(), b"sub".to_vec()],
        "new and gone names"
    );
    let before = f.asked();
    assert_eq!(f.core.getattr(e.ino).expect("getattr").size, 15);
    assert!(
        f.asked() > before,
        "the rewritten file's attributes were asked for"
    );
    assert_eq!(
        f.core.lookup(d.ino, b"new").expect("lookup new").attr.size,
        1
    );
    assert_eq!(errno_of(f.core.lookup(d.ino, b"sub")), Code::NotFound);
}

/// A state older than the mount's own latest change of the name (a notice of a removal that
/// came after the name was made again) is not taken for the truth: the name is looked up.
#[test]
fn a_stale_state_is_not_taken_for_the_truth() {
    let f = push_fixture();
    let (d, e) = f.dir_with_file(b"lock");
    f.apply_all(&[ChangedPath {
        path: b"d/lock".to_vec(),
        state: EntryState::Absent,
        dir: None,
    }]);
    assert_eq!(f.entries_told(), [b"lock".to_vec()]);
    let before = f.asked();
    assert_eq!(
        f.core.lookup(d.ino, b"lock").expect("still there").ino,
        e.ino
    );
    assert!(f.asked() > before, "the server was asked");
}

/// A notice of a state the mount has seen pass (its own later write's reply came first) is
/// no reason to forget the newer one it holds.
#[test]
fn a_state_older_than_what_is_held_is_passed_over() {
    let f = push_fixture();
    let d = f.core.mkdir(ROOT_INO, b"d", 0o755, 0).expect("mkdir d");
    let (e, o) = f
        .core
        .create(d.ino, b"f", 0o100644, 0o022, libc::O_RDWR)
        .expect("create");
    let created = e.attr;
    // The ctime must move (coarse clocks).
    std::thread::sleep(Duration::from_millis(20));
    f.core.write(o.fh, 0, b"later").expect("write");
    f.core.flush(o.fh).expect("flush");
    f.core.release(o.fh).expect("release");
    let now = f.core.getattr(e.ino).expect("getattr");
    assert!(now.ctime > created.ctime, "{now:?} after {created:?}");
    f.apply_all(&[ChangedPath {
        path: b"d/f".to_vec(),
        state: EntryState::Present(created),
        dir: None,
    }]);
    assert!(!f.told.lock().contains(&Invalidate::Pages(e.ino)));
    let before = f.asked();
    assert_eq!(f.core.getattr(e.ino).expect("getattr").size, 5);
    assert_eq!(f.asked(), before, "answered from what the mount held");
    // A newer state than the one held is another's change.
    let mut newer = now;
    newer.ctime.secs += 1;
    newer.size = 9;
    f.apply_all(&[ChangedPath {
        path: b"d/f".to_vec(),
        state: EntryState::Present(newer),
        dir: None,
    }]);
    assert!(f.told.lock().contains(&Invalidate::Pages(e.ino)));
    assert_eq!(
        f.core.getattr(e.ino).expect("getattr").size,
        5,
        "asked again"
    );
    assert!(f.asked() > before);
}

#[test]
fn a_notice_without_state_forgets_as_before() {
    let f = push_fixture();
    let (d, e) = f.dir_with_file(b"f");
    f.apply_all(&[ChangedPath {
        path: b"d/f".to_vec(),
        state: EntryState::Unknown,
        dir: None,
    }]);
    assert_eq!(f.entries_told(), [b"f".to_vec()]);
    assert!(f.told.lock().contains(&Invalidate::Pages(e.ino)));
    assert!(f.told.lock().contains(&Invalidate::Pages(d.ino)));
    let before = f.asked();
    f.core.lookup(d.ino, b"never").expect_err("absent");
    assert!(
        f.asked() > before,
        "the listing was forgotten: the server is asked"
    );
}

/// A directory this mount made is watched at once, and once the server has confirmed its
/// listing, names missing from it are answered without asking for as long as the watch holds,
/// not only for the short TTL.
#[test]
fn a_directory_made_here_is_trusted_once_its_watch_and_listing_are_confirmed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let core = Arc::new(faulty_core(
        dir.path(),
        pushed_config(Duration::from_millis(200)),
    ));
    core.start_push().expect("push starts");
    let d = core.mkdir(ROOT_INO, b"d", 0o755, 0).expect("mkdir d");
    let (_, o) = core
        .create(d.ino, b"f", 0o100644, 0o022, libc::O_RDWR)
        .expect("create");
    core.release(o.fh).expect("release");
    let lists = || core.client.transport().seen("list");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lists() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        lists(),
        1,
        "the made directory was listed once, after its watch"
    );
    // Past the short TTL: only the confirmed watch can make the listing answer.
    std::thread::sleep(Duration::from_millis(300));
    let stats = || core.client.transport().seen("stat");
    let before = stats();
    assert_eq!(errno_of(core.lookup(d.ino, b"missing")), Code::NotFound);
    assert_eq!(stats(), before, "answered from the listing");
}

/// A walk's lookup lists the directory first; a server that does not answer that listing
/// fails the lookup at once, not after a second wait for the stat. A listing the server
/// refuses still leaves the stat to answer.
#[test]
fn a_walks_listing_the_server_did_not_answer_fails_the_lookup_without_a_stat() {
    let f = push_fixture();
    fs::create_dir(f.dir.path().join("d")).expect("mkdir");
    for n in ["a", "b", "c", "e"] {
        fs::write(f.dir.path().join("d").join(n), n).expect("seed");
    }
    let d = f.core.lookup(ROOT_INO, b"d").expect("lookup d");
    let t = f.core.client.transport();
    f.core.lookup(d.ino, b"a").expect("the first name: a stat");
    t.fail("list", 1, shelf_testkit::Fault::LostBefore);
    let stats = t.seen("stat");
    let err = f
        .core
        .lookup(d.ino, b"b")
        .expect_err("the listing was lost");
    assert_eq!(err.code(), Code::NotConnected, "{err:?}");
    assert_eq!(t.seen("stat"), stats, "no stat after the lost listing");

    t.fail("list", 1, shelf_testkit::Fault::Refuse(Code::Access));
    assert_eq!(
        f.core.lookup(d.ino, b"c").expect("stat answers").attr.size,
        1
    );
    assert_eq!(
        t.seen("stat"),
        stats + 1,
        "the refused listing left it to the stat"
    );
}
