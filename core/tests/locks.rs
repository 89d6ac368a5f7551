//! Locks through the core without FUSE (`core/src/locks.rs`): two cores on one library stand
//! for two mounts; the in-memory server keeps their locks as the real one does.

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use shelf_core::{Core, CoreConfig, Ino, Invalidate, LockRequest, ROOT_INO};
use shelf_proto::{Code, HeldLock, LockFlavor, LockKind};
use shelf_testkit::Memory;
use tempfile::TempDir;

fn core(dir: &TempDir) -> Core<Arc<Memory>> {
    let memory = Arc::new(Memory::new(dir.path()).expect("server"));
    Core::new(
        memory,
        CoreConfig {
            attr_ttl: Duration::from_secs(60),
            prefetch_threads: 1,
            ..CoreConfig::default()
        },
    )
}

fn library() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("db"), b"version 1").expect("file");
    fs::write(dir.path().join("db-journal"), b"").expect("sibling");
    dir
}

struct Open {
    ino: Ino,
    fh: shelf_core::Fh,
}

fn open(c: &Core<Arc<Memory>>, name: &str) -> Open {
    let ino = c.lookup(ROOT_INO, name.as_bytes()).expect("lookup").ino;
    let fh = c.open(ino, libc::O_RDWR).expect("open").fh;
    Open { ino, fh }
}

fn req(o: &Open, owner: u64, kind: LockKind) -> LockRequest {
    LockRequest {
        ino: o.ino,
        fh: o.fh,
        owner,
        flavor: LockFlavor::Posix,
        kind,
        start: 0,
        end: 99,
    }
}

fn never() -> bool {
    false
}

#[test]
fn two_mounts_exclude_each_other_and_getlk_names_the_range() {
    let lib = library();
    let (a, b) = (core(&lib), core(&lib));
    let (fa, fb) = (open(&a, "db"), open(&b, "db"));
    a.setlk(req(&fa, 1, LockKind::Write), false, &never)
        .expect("A locks");
    let refused = b.setlk(req(&fb, 2, LockKind::Read), false, &never);
    assert_eq!(refused.map_err(|e| e.code()), Err(Code::TryAgain));
    assert_eq!(
        b.getlk(fb.ino, 2, LockKind::Read, 0, u64::MAX)
            .expect("getlk"),
        Some(HeldLock {
            kind: LockKind::Write,
            start: 0,
            end: 99,
            pid: 0
        })
    );
    // A's close (its owner's flush) lets go.
    a.close_locks(fa.ino, 1);
    b.setlk(req(&fb, 2, LockKind::Read), false, &never)
        .expect("B after A's close");
    assert_eq!(a.lock_stats().0, 0);
    assert_eq!(b.lock_stats().0, 1);
    b.release(fb.fh).expect("release");
    assert_eq!(
        b.lock_stats().0,
        0,
        "the release of its handle ends B's lock"
    );
}

#[test]
fn a_wait_ends_when_granted_or_when_the_program_is_interrupted() {
    let lib = library();
    let (a, b) = (Arc::new(core(&lib)), core(&lib));
    let (fa, fb) = (open(&a, "db"), open(&b, "db"));
    b.setlk(req(&fb, 2, LockKind::Write), false, &never)
        .expect("B locks");
    let started = Instant::now();
    let r = a.setlk(req(&fa, 1, LockKind::Write), true, &|| {
        started.elapsed() > Duration::from_millis(300)
    });
    assert_eq!(r.map_err(|e| e.code()), Err(Code::Interrupted));
    let a2 = Arc::clone(&a);
    let ino = fa.ino;
    let fh = fa.fh;
    let waiter = std::thread::spawn(move || {
        let asked = LockRequest {
            ino,
            fh,
            owner: 1,
            flavor: LockFlavor::Posix,
            kind: LockKind::Write,
            start: 0,
            end: 99,
        };
        a2.setlk(asked, true, &never)
    });
    std::thread::sleep(Duration::from_millis(300));
    b.setlk(req(&fb, 2, LockKind::Unlock), false, &never)
        .expect("B unlocks");
    waiter
        .join()
        .expect("waiter")
        .expect("A is granted once B let go");
}

#[test]
fn a_granted_lock_forgets_the_file_and_the_names_beside_it() {
    let lib = library();
    let a = core(&lib);
    let told = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&told);
    a.set_invalidator(Box::new(move |what| sink.lock().push(what)));
    // Known to the mount, as sqlite's journal is after its first transaction.
    a.lookup(ROOT_INO, b"db-journal").expect("lookup");
    let f = open(&a, "db");
    // Another client rewrites the file behind the long TTL.
    fs::write(lib.path().join("db"), b"version 2").expect("rewrite");
    told.lock().clear();
    a.setlk(req(&f, 1, LockKind::Read), false, &never)
        .expect("lock");
    let told = told.lock().clone();
    assert!(told.contains(&Invalidate::PagesNow(f.ino)), "{told:?}");
    assert!(
        told.contains(&Invalidate::EntryNow {
            parent: ROOT_INO,
            name: b"db-journal".to_vec()
        }),
        "{told:?}"
    );
    assert_eq!(
        &a.read(f.fh, 0, 100).expect("read")[..],
        b"version 2",
        "the read under the lock asks the server"
    );
}

#[test]
fn locks_lost_with_the_connection_are_told_at_the_owners_next_lock_request() {
    let lib = library();
    let memory = Arc::new(Memory::new(lib.path()).expect("server"));
    let a = Core::new(
        Arc::clone(&memory),
        CoreConfig {
            prefetch_threads: 1,
            ..CoreConfig::default()
        },
    );
    let b = core(&lib);
    let (fa, fb) = (open(&a, "db"), open(&b, "db"));
    a.setlk(req(&fa, 1, LockKind::Write), false, &never)
        .expect("A locks");
    // The server process holding A's locks goes (a restart, a cut).
    memory.hang_up();
    b.setlk(req(&fb, 2, LockKind::Write), false, &never)
        .expect("another client can take it now");
    b.setlk(req(&fb, 2, LockKind::Unlock), false, &never)
        .expect("and lets go");
    let told = a.setlk(req(&fa, 1, LockKind::Unlock), false, &never);
    assert_eq!(told.map_err(|e| e.code()), Err(Code::NoLocks), "A is told");
    assert_eq!(a.lock_stats(), (0, 1));
    a.setlk(req(&fa, 1, LockKind::Write), false, &never)
        .expect("A may lock again afterwards");
}
