use std::fs;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// Long enough that a wait that should have ended has, on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

struct Fixture {
    tmp: tempfile::TempDir,
    lib: Library,
    locks: Arc<Locks>,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("temp dir");
    fs::write(tmp.path().join("f"), b"locked file").expect("file");
    fs::create_dir(tmp.path().join("d")).expect("dir");
    let lib = Library::open(tmp.path()).expect("library");
    Fixture {
        tmp,
        lib,
        locks: Arc::new(Locks::default()),
    }
}

fn f() -> RelPath {
    RelPath::from_bytes(b"f").expect("path")
}

fn ask(owner: u64, flavor: LockFlavor, kind: LockKind, start: u64, end: u64) -> LockAsk {
    LockAsk {
        file: 7,
        owner,
        flavor,
        kind,
        start,
        end,
    }
}

fn posix(owner: u64, kind: LockKind, start: u64, end: u64) -> LockAsk {
    ask(owner, LockFlavor::Posix, kind, start, end)
}

fn whole(owner: u64, flavor: LockFlavor, kind: LockKind) -> LockAsk {
    ask(owner, flavor, kind, 0, u64::MAX)
}

impl Fixture {
    fn set(&self, a: LockAsk) -> Result<()> {
        self.locks.set(&self.lib, &f(), a)
    }

    fn code(&self, a: LockAsk) -> Option<Code> {
        self.set(a).err().map(|e| e.code)
    }

    /// Starts a wait for `a` on a thread; its result arrives on the channel.
    fn wait(&self, a: LockAsk) -> mpsc::Receiver<Result<()>> {
        let wait = self
            .locks
            .set_or_wait(&self.lib, &f(), a)
            .expect("lock or wait")
            .expect("it has to wait");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(wait.run(PATIENCE));
        });
        rx
    }
}

#[test]
fn two_owners_exclude_each_other_and_one_owner_does_not_conflict_with_itself() {
    let fx = fixture();
    fx.set(posix(1, LockKind::Write, 0, 99))
        .expect("first lock");
    assert_eq!(
        fx.code(posix(2, LockKind::Read, 50, 50)),
        Some(Code::TryAgain)
    );
    // Beyond the range is free.
    fx.set(posix(2, LockKind::Write, 100, 200))
        .expect("the next bytes");
    // The owner itself may change its lock: down to read, then share it.
    fx.set(posix(1, LockKind::Read, 0, 99)).expect("downgrade");
    fx.set(posix(2, LockKind::Read, 0, 99)).expect("shared now");
    assert_eq!(
        fx.code(posix(1, LockKind::Write, 0, 99)),
        Some(Code::TryAgain)
    );
    fx.set(posix(2, LockKind::Unlock, 0, u64::MAX))
        .expect("unlock");
    fx.set(posix(1, LockKind::Write, 0, 99))
        .expect("upgrade once alone");
}

#[test]
fn flock_locks_exclude_each_other_but_not_posix_locks() {
    let fx = fixture();
    fx.set(whole(1, LockFlavor::Flock, LockKind::Write))
        .expect("flock");
    assert_eq!(
        fx.code(whole(2, LockFlavor::Flock, LockKind::Read)),
        Some(Code::TryAgain)
    );
    // As on Linux, flock and POSIX locks never meet.
    fx.set(whole(2, LockFlavor::Posix, LockKind::Write))
        .expect("a POSIX lock beside a flock");
    fx.locks.release(7, 1, LockFlavor::Flock);
    fx.set(whole(2, LockFlavor::Flock, LockKind::Write))
        .expect("free after release");
}

#[test]
fn a_directory_can_be_flocked() {
    let fx = fixture();
    let d = RelPath::from_bytes(b"d").expect("path");
    fx.locks
        .set(&fx.lib, &d, whole(1, LockFlavor::Flock, LockKind::Write))
        .expect("flock a directory");
}

#[test]
fn locks_conflict_with_a_local_programs_lock_on_the_real_file() {
    let fx = fixture();
    let local = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.tmp.path().join("f"))
        .expect("open");
    // A traditional POSIX lock of this process, as a program on the server would take.
    // SAFETY: all-zero is a valid flock; the struct lives through the call.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 10;
    fl.l_len = 10;
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::fcntl(local.as_raw_fd(), libc::F_SETLK, &fl) },
        0
    );
    assert_eq!(
        fx.code(posix(1, LockKind::Read, 15, 15)),
        Some(Code::TryAgain)
    );
    let held = fx
        .locks
        .test(&fx.lib, &f(), posix(1, LockKind::Write, 0, u64::MAX))
        .expect("test");
    assert_eq!(
        held,
        Some(HeldLock {
            kind: LockKind::Write,
            start: 10,
            end: 19,
            pid: std::process::id(),
        })
    );
    drop(local);
    fx.set(posix(1, LockKind::Read, 15, 15))
        .expect("free once the program closed it");
}

#[test]
fn test_reports_another_clients_lock_and_not_the_owners_own() {
    let fx = fixture();
    fx.set(posix(1, LockKind::Read, 5, u64::MAX)).expect("lock");
    let t = |owner, kind| {
        fx.locks
            .test(&fx.lib, &f(), posix(owner, kind, 0, 100))
            .expect("test")
    };
    assert_eq!(
        t(2, LockKind::Write),
        Some(HeldLock {
            kind: LockKind::Read,
            start: 5,
            end: u64::MAX,
            pid: 0,
        })
    );
    assert_eq!(t(2, LockKind::Read), None, "read locks share");
    assert_eq!(
        t(1, LockKind::Write),
        None,
        "the owner's own lock is no conflict"
    );
}

#[test]
fn a_wait_is_granted_when_the_holder_lets_go() {
    let fx = fixture();
    fx.set(whole(1, LockFlavor::Posix, LockKind::Write))
        .expect("hold");
    let waiting = fx.wait(whole(2, LockFlavor::Posix, LockKind::Write));
    assert!(
        waiting.recv_timeout(Duration::from_millis(200)).is_err(),
        "still waiting while held"
    );
    fx.set(whole(1, LockFlavor::Posix, LockKind::Unlock))
        .expect("unlock");
    waiting
        .recv_timeout(PATIENCE)
        .expect("woken")
        .expect("granted");
    assert_eq!(
        fx.code(whole(1, LockFlavor::Posix, LockKind::Read)),
        Some(Code::TryAgain),
        "the waiter holds it now"
    );
}

#[test]
fn a_cancelled_wait_answers_eintr_and_holds_nothing() {
    let fx = fixture();
    fx.set(whole(1, LockFlavor::Flock, LockKind::Write))
        .expect("hold");
    let waiting = fx.wait(whole(2, LockFlavor::Flock, LockKind::Write));
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    fx.locks.cancel(7, 2);
    let got = waiting.recv_timeout(PATIENCE).expect("ended");
    assert_eq!(got.map_err(|e| e.code), Err(Code::Interrupted));
    assert!(started.elapsed() < PATIENCE);
    fx.locks.release(7, 1, LockFlavor::Flock);
    fx.set(whole(3, LockFlavor::Flock, LockKind::Write))
        .expect("the cancelled waiter holds nothing");
}

#[test]
fn a_cancel_before_the_wait_runs_is_not_lost() {
    let fx = fixture();
    fx.set(whole(1, LockFlavor::Posix, LockKind::Write))
        .expect("hold");
    let wait = fx
        .locks
        .set_or_wait(&fx.lib, &f(), whole(2, LockFlavor::Posix, LockKind::Write))
        .expect("lock or wait")
        .expect("it has to wait");
    let locks = Arc::clone(&fx.locks);
    let canceller = std::thread::spawn(move || locks.cancel(7, 2));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        wait.run(PATIENCE).map_err(|e| e.code),
        Err(Code::Interrupted)
    );
    canceller
        .join()
        .expect("cancel returns once the wait has ended");
}

#[test]
fn the_end_of_the_connection_ends_waits_and_drops_locks() {
    let fx = fixture();
    fx.set(posix(1, LockKind::Write, 0, 0)).expect("hold");
    let waiting = fx.wait(posix(2, LockKind::Write, 0, 0));
    fx.locks.end();
    assert_eq!(
        waiting
            .recv_timeout(PATIENCE)
            .expect("ended")
            .map_err(|e| e.code),
        Err(Code::Interrupted)
    );
    let other = Locks::default();
    other
        .set(&fx.lib, &f(), posix(3, LockKind::Write, 0, 0))
        .expect("nothing is held any more");
}

#[test]
fn an_unlock_of_nothing_needs_no_file() {
    let fx = fixture();
    let gone = RelPath::from_bytes(b"missing").expect("path");
    fx.locks
        .set(
            &fx.lib,
            &gone,
            whole(1, LockFlavor::Posix, LockKind::Unlock),
        )
        .expect("nothing to unlock is fine");
    assert_eq!(
        fx.locks
            .set(&fx.lib, &gone, whole(1, LockFlavor::Posix, LockKind::Write))
            .map_err(|e| e.code),
        Err(Code::NotFound)
    );
}

#[test]
fn holders_are_bounded() {
    let fx = fixture();
    for owner in 0..MAX_HOLDERS as u64 {
        fx.set(posix(owner, LockKind::Read, 0, 0)).expect("lock");
    }
    assert_eq!(
        fx.code(posix(u64::MAX, LockKind::Read, 0, 0)),
        Some(Code::NoLocks)
    );
}

#[test]
fn a_wait_whose_time_is_up_answers_eagain_and_holds_nothing() {
    let fx = fixture();
    fx.set(whole(1, LockFlavor::Posix, LockKind::Write))
        .expect("hold");
    let wait = fx
        .locks
        .set_or_wait(&fx.lib, &f(), whole(2, LockFlavor::Posix, LockKind::Read))
        .expect("lock or wait")
        .expect("it has to wait");
    let started = Instant::now();
    let got = wait.run(Duration::from_millis(100));
    assert_eq!(got.map_err(|e| e.code), Err(Code::TryAgain));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "waited its time: {took:?}"
    );
    fx.set(whole(1, LockFlavor::Posix, LockKind::Unlock))
        .expect("unlock");
    fx.set(whole(3, LockFlavor::Posix, LockKind::Write))
        .expect("the expired waiter holds nothing");
}
