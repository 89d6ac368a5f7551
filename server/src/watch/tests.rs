use std::fs;
use std::os::fd::OwnedFd;

use super::*;

fn p(s: &str) -> RelPath {
    RelPath::from_bytes(s.as_bytes()).expect("path")
}

fn setup() -> (tempfile::TempDir, Library, Watches) {
    let tmp = tempfile::tempdir().expect("temp dir");
    fs::create_dir(tmp.path().join("d")).expect("dir");
    fs::write(tmp.path().join("d/f"), b"x").expect("file");
    let lib = Library::open(tmp.path()).expect("library");
    (tmp, lib, Watches::default())
}

/// Everything told within a few seconds, however the changes split over replies.
fn told(w: &Watches) -> (BTreeSet<Vec<u8>>, bool) {
    let mut all = BTreeSet::new();
    let mut lost = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let (paths, l) = w.changes(Duration::from_millis(200));
        lost |= l;
        if paths.is_empty() && !all.is_empty() {
            break;
        }
        all.extend(paths);
    }
    (all, lost)
}

fn set(paths: &[&str]) -> BTreeSet<Vec<u8>> {
    paths.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn changes_by_anyone_in_watched_directories_are_told_by_path() {
    let (tmp, lib, w) = setup();
    assert_eq!(
        w.watch(&lib, &[p(""), p("d"), p("d/f")], MAX_WATCHES),
        [true, true, false]
    );
    fs::write(tmp.path().join("d/f"), b"rewritten").expect("write");
    fs::write(tmp.path().join("top"), b"new").expect("create");
    fs::rename(tmp.path().join("d/f"), tmp.path().join("d/g")).expect("rename");
    let (paths, lost) = told(&w);
    assert!(!lost);
    assert_eq!(paths, set(&["d/f", "d/g", "top"]));
    // Nothing more: a wait with nothing to tell ends at its time with nothing.
    let started = Instant::now();
    assert_eq!(w.changes(Duration::from_millis(100)), (Vec::new(), false));
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[test]
fn a_watched_directory_that_goes_is_told_as_itself() {
    let (tmp, lib, w) = setup();
    assert_eq!(w.watch(&lib, &[p(""), p("d")], MAX_WATCHES), [true, true]);
    fs::remove_file(tmp.path().join("d/f")).expect("rm");
    fs::remove_dir(tmp.path().join("d")).expect("rmdir");
    let (paths, _) = told(&w);
    assert!(paths.contains(b"d".as_slice()), "{paths:?}");
    assert!(paths.contains(b"d/f".as_slice()), "{paths:?}");
}

#[test]
fn a_symlink_out_of_the_library_is_not_watched() {
    let (tmp, lib, w) = setup();
    let outside = tempfile::tempdir().expect("outside");
    std::os::unix::fs::symlink(outside.path(), tmp.path().join("out")).expect("symlink");
    assert_eq!(w.watch(&lib, &[p("out")], MAX_WATCHES), [false]);
    fs::write(outside.path().join("secret"), b"x").expect("outside write");
    assert_eq!(w.changes(Duration::from_millis(100)), (Vec::new(), false));
}

#[test]
fn the_end_of_the_connection_ends_a_wait() {
    let (_tmp, lib, w) = setup();
    let w = Arc::new(w);
    assert_eq!(w.watch(&lib, &[p("d")], MAX_WATCHES), [true]);
    let waiting = Arc::clone(&w);
    let started = Instant::now();
    let t = std::thread::spawn(move || waiting.changes(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(50));
    w.end();
    assert_eq!(t.join().expect("waiter"), (Vec::new(), false));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        w.watch(&lib, &[p("d")], MAX_WATCHES),
        [false],
        "nothing is watched after the end"
    );
}

#[test]
fn the_budget_bounds_the_watches_and_zero_watches_none() {
    let (tmp, lib, w) = setup();
    for d in ["e", "g"] {
        fs::create_dir(tmp.path().join(d)).expect("dir");
    }
    assert_eq!(
        w.watch(&lib, &[p(""), p("d"), p("e"), p("g")], 2),
        [true, true, false, false]
    );
    assert_eq!(w.count(), 2);
    assert_eq!(
        w.watch(&lib, &[p("d")], 2),
        [true],
        "a directory watched already is no new watch"
    );
    let none = Watches::default();
    assert_eq!(none.watch(&lib, &[p("d")], 0), [false]);
    assert_eq!(none.count(), 0);
}

/// A watcher on a thread and `n` connections linked to it, over one library; and a count of
/// the watches the watcher holds.
#[allow(clippy::type_complexity)]
fn linked(
    n: usize,
) -> (
    tempfile::TempDir,
    Library,
    Vec<Watches>,
    OwnedFd,
    impl Fn() -> usize,
    std::thread::JoinHandle<()>,
) {
    let tmp = tempfile::tempdir().expect("temp dir");
    fs::create_dir(tmp.path().join("d")).expect("dir");
    fs::create_dir(tmp.path().join("e")).expect("dir");
    let lib = Library::open(tmp.path()).expect("library");
    let (channel, fd, thread) = watcher::on_thread(Library::open(tmp.path()).expect("library"));
    let conns = (0..n)
        .map(|_| Watches::linked(watcher::connect_to(&channel)))
        .collect();
    let watches = move || {
        fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .unwrap_or_default()
            .matches("inotify wd:")
            .count()
    };
    (tmp, lib, conns, channel, watches, thread)
}

#[test]
fn one_watcher_serves_every_connection_and_a_directory_is_watched_once() {
    let (tmp, lib, conns, channel, watches, thread) = linked(2);
    assert_eq!(conns[0].watch(&lib, &[p("d"), p("e")], 8), [true, true]);
    assert_eq!(conns[1].watch(&lib, &[p("d")], 8), [true]);
    assert_eq!(watches(), 2, "d watched once for both");
    fs::write(tmp.path().join("d/new"), b"x").expect("create");
    fs::write(tmp.path().join("e/other"), b"x").expect("create");
    assert_eq!(told(&conns[0]).0, set(&["d/new", "e/other"]));
    assert_eq!(told(&conns[1]).0, set(&["d/new"]), "only what it watches");
    // The first connection ends: e goes, d stays for the second.
    conns[0].end();
    let deadline = Instant::now() + Duration::from_secs(5);
    while watches() != 1 {
        assert!(Instant::now() < deadline, "e's watch was not dropped");
        std::thread::sleep(Duration::from_millis(10));
    }
    fs::write(tmp.path().join("d/later"), b"x").expect("create");
    assert_eq!(told(&conns[1]).0, set(&["d/later"]));
    // Past its budget a connection is refused; the watcher's end ends the rest.
    assert_eq!(conns[1].watch(&lib, &[p("e")], 1), [false]);
    drop(channel);
    thread.join().expect("the watcher ends with its channel");
    let (_, lost) = told(&conns[1]);
    assert!(
        lost,
        "a connection whose watcher went is told it lost changes"
    );
    assert_eq!(conns[1].watch(&lib, &[p("e")], 8), [false]);
    conns[1].end();
}

#[test]
fn a_burst_of_changes_is_told_whole_with_no_change_after_it_to_wake_the_watcher() {
    // The watcher leaves its instance unread for a moment after it sends (`NOTICE_HOLD`): the
    // changes of a burst that fall in that moment, the last one above all, must still go out
    // when it ends, though nothing happens after them.
    let (tmp, lib, conns, channel, _, thread) = linked(1);
    assert_eq!(conns[0].watch(&lib, &[p("d")], 8), [true]);
    let names: Vec<String> = (0..200).map(|i| format!("d/f{i}")).collect();
    for n in &names {
        fs::write(tmp.path().join(n), b"x").expect("create");
    }
    let (paths, lost) = told(&conns[0]);
    assert!(!lost);
    let want: BTreeSet<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
    assert_eq!(paths, want);
    conns[0].end();
    drop(channel);
    thread.join().expect("the watcher ends with its channel");
}
