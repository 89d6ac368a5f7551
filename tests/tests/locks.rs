//! Locks across machines (issue #16): two real mounts of one server, and the server's own
//! directory, with `flock(2)`, `fcntl(2)` record locks, the `flock` tool, and two sqlite
//! writers. Each test has its own library, server and mounts; every child process is killed
//! and reaped on the way out (`Bg`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shelf_tests::*;

/// Long enough for anything that should happen to have happened on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

macro_rules! fixture {
    () => {
        match Fixture::new() {
            Some(f) => f,
            None => return,
        }
    };
}

/// A child process killed and reaped when dropped.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// `flock(fd, op)`'s errno, 0 on success.
fn flock(f: &File, op: i32) -> i32 {
    // SAFETY: plain syscall on an open fd.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }
}

fn range(typ: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: all-zero is a valid flock.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// `fcntl(fd, cmd, fl)`'s errno, 0 on success.
fn fcntl_lock(f: &File, cmd: i32, fl: &mut libc::flock) -> i32 {
    // SAFETY: `fl` is a valid flock for the duration of the call.
    if unsafe { libc::fcntl(f.as_raw_fd(), cmd, fl as *mut libc::flock) } == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }
}

#[test]
fn flock_excludes_across_two_mounts_and_the_servers_own_programs() {
    let f = fixture!();
    let other = Mount::plain(f.server.addr());
    let a = open_rw(&f.mount.join("lockfile"));
    let b = open_rw(&other.join("lockfile"));
    let local = open_rw(&f.lib().join("lockfile"));

    assert_eq!(flock(&a, libc::LOCK_EX | libc::LOCK_NB), 0, "A takes it");
    assert_eq!(
        flock(&b, libc::LOCK_EX | libc::LOCK_NB),
        libc::EWOULDBLOCK,
        "B is refused while A holds it"
    );
    assert_eq!(
        flock(&local, libc::LOCK_SH | libc::LOCK_NB),
        libc::EWOULDBLOCK,
        "a program on the server is refused too"
    );
    // flock and record locks are unrelated, as on Linux.
    let mut fl = range(libc::F_WRLCK, 0, 0);
    assert_eq!(fcntl_lock(&b, libc::F_SETLK, &mut fl), 0);
    assert_eq!(flock(&a, libc::LOCK_UN), 0);
    assert_eq!(
        flock(&b, libc::LOCK_EX | libc::LOCK_NB),
        0,
        "B after A let go"
    );
    drop(b);
    // Closing the file lets go of the lock: soon, as the kernel sends the release after
    // `close` has returned.
    let taken = poll(PATIENCE, || {
        (flock(&local, libc::LOCK_EX | libc::LOCK_NB) == 0).then_some(())
    });
    assert!(taken.is_some(), "B's close let go of its lock");
    assert_eq!(
        flock(&a, libc::LOCK_SH | libc::LOCK_NB),
        libc::EWOULDBLOCK,
        "the server's program holds it now"
    );
    drop(local);
    // Soon rather than at once: a process this test binary is starting for another test
    // holds a copy of every descriptor (and so the lock) until it execs.
    let shared = poll(PATIENCE, || {
        (flock(&a, libc::LOCK_SH | libc::LOCK_NB) == 0).then_some(())
    });
    assert!(
        shared.is_some(),
        "A takes it once the server's program closed"
    );
}

#[test]
fn record_locks_exclude_by_range_and_getlk_reports_the_other_clients_lock() {
    let f = fixture!();
    let other = Mount::plain(f.server.addr());
    let a = open_rw(&f.mount.join("db"));
    let b = open_rw(&other.join("db"));

    let mut w = range(libc::F_WRLCK, 0, 100);
    assert_eq!(fcntl_lock(&a, libc::F_SETLK, &mut w), 0);
    let mut r = range(libc::F_RDLCK, 50, 10);
    assert_eq!(fcntl_lock(&b, libc::F_SETLK, &mut r), libc::EAGAIN);
    let mut beyond = range(libc::F_WRLCK, 100, 10);
    assert_eq!(
        fcntl_lock(&b, libc::F_SETLK, &mut beyond),
        0,
        "past A's range"
    );

    let mut probe = range(libc::F_WRLCK, 0, 0);
    assert_eq!(fcntl_lock(&b, libc::F_GETLK, &mut probe), 0);
    assert_eq!(
        i32::from(probe.l_type),
        libc::F_WRLCK,
        "A's lock is reported"
    );
    assert_eq!((probe.l_start, probe.l_len), (0, 100));
    // The owner's own lock is no conflict for it.
    let mut own = range(libc::F_WRLCK, 0, 100);
    assert_eq!(fcntl_lock(&a, libc::F_GETLK, &mut own), 0);
    assert_eq!(i32::from(own.l_type), libc::F_UNLCK);

    // A program on the server sees the clients' locks, and its own lock stops them.
    let local = open_rw(&f.lib().join("db"));
    let mut seen = range(libc::F_WRLCK, 0, 0);
    assert_eq!(fcntl_lock(&local, libc::F_OFD_GETLK, &mut seen), 0);
    assert_eq!(i32::from(seen.l_type), libc::F_WRLCK);
    let mut theirs = range(libc::F_WRLCK, 500, 1);
    assert_eq!(fcntl_lock(&local, libc::F_OFD_SETLK, &mut theirs), 0);
    let mut blocked = range(libc::F_RDLCK, 500, 1);
    assert_eq!(fcntl_lock(&a, libc::F_SETLK, &mut blocked), libc::EAGAIN);

    // Closing any descriptor of the file drops the process's record locks (POSIX).
    let again = File::open(f.mount.join("db")).expect("second descriptor");
    drop(again);
    let mut now_free = range(libc::F_RDLCK, 50, 10);
    assert_eq!(fcntl_lock(&b, libc::F_SETLK, &mut now_free), 0);
}

#[test]
fn a_blocking_record_lock_waits_and_wakes_when_the_holder_lets_go() {
    let f = fixture!();
    let other = Mount::plain(f.server.addr());
    let a = open_rw(&f.mount.join("f"));
    let mut w = range(libc::F_WRLCK, 0, 0);
    assert_eq!(fcntl_lock(&a, libc::F_SETLK, &mut w), 0);

    let path = other.join("f");
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let b = open_rw(&path);
        let mut want = range(libc::F_WRLCK, 0, 0);
        let errno = fcntl_lock(&b, libc::F_SETLKW, &mut want);
        let _ = tx.send((errno, Instant::now()));
        // Hold it until the test has looked.
        std::thread::sleep(Duration::from_millis(300));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "B waits while A holds the lock"
    );
    let released = Instant::now();
    let mut un = range(libc::F_UNLCK, 0, 0);
    assert_eq!(fcntl_lock(&a, libc::F_SETLK, &mut un), 0);
    let (errno, woke) = rx.recv_timeout(PATIENCE).expect("B woke");
    assert_eq!(errno, 0, "B got the lock");
    assert!(woke >= released);
    let mut probe = range(libc::F_WRLCK, 0, 0);
    assert_eq!(fcntl_lock(&a, libc::F_GETLK, &mut probe), 0);
    assert_eq!(i32::from(probe.l_type), libc::F_WRLCK, "B holds it now");
    waiter.join().expect("waiter");
}

#[test]
fn a_wait_ends_with_eintr_when_the_program_gets_a_signal() {
    let f = fixture!();
    require_tool("flock", "util-linux");
    let other = Mount::plain(f.server.addr());
    let a = open_rw(&f.mount.join("f"));
    assert_eq!(flock(&a, libc::LOCK_EX), 0);
    // `flock -w` waits with an alarm: SIGALRM must end the blocked call (EINTR), and the
    // tool then reports the timeout (exit 1).
    let started = Instant::now();
    let out = tool("flock")
        .args(["-x", "-w", "1"])
        .arg(other.join("f"))
        .arg("true")
        .timeout(PATIENCE)
        .run();
    assert_eq!(out.code(), Some(1), "flock timed out\n{out}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "the wait ended at its alarm: {took:?}"
    );
}

#[test]
fn a_killed_lock_holder_lets_go() {
    let f = fixture!();
    require_tool("flock", "util-linux");
    let other = Mount::plain(f.server.addr());
    let holder = Command::new("flock")
        .args(["-o", "-x"])
        .arg(f.mount.join("f"))
        .args(["sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .expect("flock holder");
    let mut holder = Bg(holder);
    let b = open_rw(&other.join("f"));
    // A probe that got the lock lets go at once, or the holder could never take it.
    let free = || match flock(&b, libc::LOCK_EX | libc::LOCK_NB) {
        0 => {
            assert_eq!(flock(&b, libc::LOCK_UN), 0);
            true
        }
        errno => {
            assert_eq!(errno, libc::EWOULDBLOCK);
            false
        }
    };
    let held = poll(PATIENCE, || (!free()).then_some(()));
    assert!(held.is_some(), "the holder took the lock");
    // SIGKILL: no chance to unlock; the close at exit must let go. (`-o`: the command,
    // `sleep`, does not hold the file; it is killed all the same, not to linger.)
    let sleepers = children_of(holder.0.id());
    signal(holder.0.id() as i32, libc::SIGKILL);
    let _ = holder.0.wait();
    for (pid, _) in sleepers {
        signal(pid as i32, libc::SIGKILL);
    }
    let got = poll(PATIENCE, || free().then_some(()));
    assert!(got.is_some(), "B gets the lock once the holder is dead");
}

/// The measurement: two sqlite writers, one per mount, each inserting 5,000 rows in
/// transactions of 5 in the default rollback-journal mode. Without locks across mounts
/// committed rows vanished; here every row must be there and the database intact.
#[test]
fn two_sqlite_writers_on_two_mounts_lose_no_row() {
    let f = fixture!();
    require_tool("sqlite3", "sqlite3");
    let other = Mount::plain(f.server.addr());
    let init = tool("sqlite3")
        .arg(f.mount.join("shared.db"))
        .stdin("create table t(writer integer, n integer);")
        .timeout(PATIENCE)
        .run();
    init.assert_ok();
    const ROWS: u32 = 5000;
    const PER_TX: u32 = 5;
    let script = |writer: u32| {
        let mut s = String::from(".timeout 60000\n");
        for tx in 0..ROWS / PER_TX {
            s.push_str("begin immediate;\n");
            for k in 0..PER_TX {
                s.push_str(&format!(
                    "insert into t values({writer}, {});\n",
                    tx * PER_TX + k
                ));
            }
            s.push_str("commit;\n");
        }
        s
    };
    let writers: Vec<_> = [(1, f.mount.join("shared.db")), (2, other.join("shared.db"))]
        .into_iter()
        .map(|(writer, db)| {
            let sql = script(writer);
            std::thread::spawn(move || {
                tool("sqlite3")
                    .arg(db)
                    .stdin(sql)
                    .timeout(Duration::from_secs(600))
                    .run()
            })
        })
        .collect();
    for w in writers {
        let out = w.join().expect("writer thread");
        out.assert_ok();
    }
    let count = tool("sqlite3")
        .arg(f.lib().join("shared.db"))
        .stdin("select writer, count(*), count(distinct n) from t group by writer;\npragma integrity_check;")
        .timeout(PATIENCE)
        .run();
    count.assert_ok();
    assert_eq!(
        count.stdout_str().trim(),
        format!("1|{ROWS}|{ROWS}\n2|{ROWS}|{ROWS}\nok"),
        "every committed row of both writers is there, and the database is intact"
    );
}

/// A server restart loses the locks (no reclaim): another client may take them, and the
/// program that held one is told at its next lock request (ENOLCK), then may lock again.
#[test]
fn a_server_restart_loses_the_locks_and_the_holder_is_told() {
    let mut f = fixture!();
    let a = open_rw(&f.mount.join("f"));
    let mut w = range(libc::F_WRLCK, 0, 0);
    assert_eq!(fcntl_lock(&a, libc::F_SETLK, &mut w), 0);
    f.server.restart();
    let local = open_rw(&f.lib().join("f"));
    let mut theirs = range(libc::F_WRLCK, 0, 0);
    assert_eq!(
        fcntl_lock(&local, libc::F_OFD_SETLK, &mut theirs),
        0,
        "the restarted server holds nothing for the mount"
    );
    drop(local);
    let mut un = range(libc::F_UNLCK, 0, 0);
    assert_eq!(
        fcntl_lock(&a, libc::F_SETLK, &mut un),
        libc::ENOLCK,
        "the holder is told its lock was lost"
    );
    let mut again = range(libc::F_WRLCK, 0, 0);
    assert_eq!(
        fcntl_lock(&a, libc::F_SETLK, &mut again),
        0,
        "and may lock again"
    );
    let status = shelf().arg("status").run();
    status.assert_ok();
    assert!(
        status.stdout_str().contains("1 told of a loss"),
        "status counts the loss\n{status}"
    );
}
