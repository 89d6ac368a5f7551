//! [`Locks`]: one connection's file locks, kept as locks on the real files so that the kernel
//! of this machine arbitrates between clients, and between clients and local programs
//! (docs/PROTOCOL.md, "Locks").
//!
//! What is hard, and how it is handled:
//!
//! 1. **Holders.** Each `(file, owner, flavor)` gets an open file description of its own, and
//!    its locks are taken on it: POSIX locks as OFD locks (`F_OFD_SETLK`), flock locks with
//!    `flock(2)`. Two owners then conflict as two processes do, one owner's ranges merge and
//!    split as one process's do, and closing the description drops them all, which is how a
//!    release, and the end of the connection, let go.
//! 2. **Waiting without holding up the connection.** A lock that must wait is taken on a
//!    thread of its own ([`Wait::run`]), blocked in `F_OFD_SETLKW` or `flock`; the reading
//!    thread goes on with other requests.
//! 3. **Ending a wait.** A blocked `fcntl` or `flock` returns only when granted or
//!    interrupted by a signal. To end one (its time is up, its owner released, the connection
//!    ends) the wait is marked and its thread sent SIGURG (handled, without `SA_RESTART`),
//!    again every few milliseconds until the thread has seen it: a signal that lands just
//!    before the thread enters the call is not lost.
//! 4. **Bounds.** At most [`MAX_HOLDERS`] holders and [`MAX_WAITS`] waits per connection;
//!    beyond, ENOLCK. Files are opened beneath the library root like every other access.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::Duration;

use shelf_proto::{Code, HeldLock, LockAsk, LockFlavor, LockKind};

use crate::library::{Error, Library, Result};
use crate::relpath::RelPath;

/// Holders (open files) one connection may keep for locks.
pub const MAX_HOLDERS: usize = 1024;
/// Lock waits one connection may have at once.
pub const MAX_WAITS: usize = 64;
/// How often a cancelled wait's thread is signalled until it has stopped.
const RESIGNAL_EVERY: Duration = Duration::from_millis(5);
/// The signal that interrupts a waiting thread; its default action is to ignore it, so one
/// that arrives after the thread is gone does nothing.
const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct HolderKey {
    file: u64,
    owner: u64,
    flavor: LockFlavor,
}

/// One connection's locks; see the module docs.
#[derive(Default)]
pub struct Locks {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    holders: HashMap<HolderKey, Arc<OwnedFd>>,
    waits: Vec<Arc<WaitState>>,
}

/// A lock that must wait, to be run on a thread of its own ([`Wait::run`]).
pub struct Wait {
    fd: Arc<OwnedFd>,
    ask: LockAsk,
    state: Arc<WaitState>,
    locks: Arc<Locks>,
}

struct WaitState {
    file: u64,
    owner: u64,
    /// Set by `cancel`; the waiting thread gives up when it sees it (EINTR).
    cancelled: AtomicBool,
    /// Set when the wait's time is up; the waiting thread gives up when it sees it (EAGAIN).
    expired: AtomicBool,
    /// Set by the waiting thread once it no longer waits.
    done: AtomicBool,
    /// The waiting thread, once it runs (for the signal).
    thread: Mutex<Option<libc::pthread_t>>,
}

impl Locks {
    /// Takes, changes or drops a lock without waiting: EAGAIN if another holder's lock is in
    /// the way.
    pub fn set(&self, lib: &Library, path: &RelPath, ask: LockAsk) -> Result<()> {
        if ask.kind == LockKind::Unlock && !self.holds(ask) {
            // Nothing of this holder's to drop; no need to open the file.
            return Ok(());
        }
        let fd = self.holder(lib, path, ask)?;
        apply(&fd, ask, false).map_err(|e| lock_error(path, e))
    }

    /// Like [`set`](Self::set), but a lock in the way makes a [`Wait`] instead of EAGAIN.
    pub fn set_or_wait(
        self: &Arc<Self>,
        lib: &Library,
        path: &RelPath,
        ask: LockAsk,
    ) -> Result<Option<Wait>> {
        match self.set(lib, path, ask) {
            Err(e) if e.code == Code::TryAgain => {}
            other => return other.map(|()| None),
        }
        let fd = self.holder(lib, path, ask)?;
        let state = Arc::new(WaitState {
            file: ask.file,
            owner: ask.owner,
            cancelled: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            done: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        {
            let mut inner = lock(&self.inner);
            if inner.waits.len() >= MAX_WAITS {
                return Err(Error::new(
                    Code::NoLocks,
                    format!("lock {path}: {MAX_WAITS} lock waits on this connection already"),
                ));
            }
            inner.waits.push(Arc::clone(&state));
        }
        Ok(Some(Wait {
            fd,
            ask,
            state,
            locks: Arc::clone(self),
        }))
    }

    /// The first lock of another holder in the way of a POSIX lock `ask` (`F_OFD_GETLK`).
    pub fn test(&self, lib: &Library, path: &RelPath, ask: LockAsk) -> Result<Option<HeldLock>> {
        let ask = LockAsk {
            flavor: LockFlavor::Posix,
            ..ask
        };
        let fd = match self.existing(ask) {
            Some(fd) => fd,
            // Asking needs an open file, not a holder: one that holds nothing conflicts with
            // every other holder, as the asking owner's own fd would.
            None => Arc::new(lib.open_for_lock(path)?),
        };
        let mut fl = flock_of(ask);
        // SAFETY: `fl` is a valid `struct flock` for the duration of the call.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if r < 0 {
            return Err(lock_error(path, std::io::Error::last_os_error()));
        }
        if i32::from(fl.l_type) == libc::F_UNLCK {
            return Ok(None);
        }
        let start = u64::try_from(fl.l_start).unwrap_or(0);
        let end = if fl.l_len == 0 {
            u64::MAX
        } else {
            start.saturating_add(u64::try_from(fl.l_len).unwrap_or(0) - 1)
        };
        Ok(Some(HeldLock {
            kind: if i32::from(fl.l_type) == libc::F_WRLCK {
                LockKind::Write
            } else {
                LockKind::Read
            },
            start,
            end,
            pid: u32::try_from(fl.l_pid).unwrap_or(0),
        }))
    }

    /// Ends the waits of `owner` on `file`: each answers EINTR.
    fn cancel(&self, file: u64, owner: u64) {
        let waits: Vec<_> = lock(&self.inner)
            .waits
            .iter()
            .filter(|w| w.file == file && w.owner == owner)
            .cloned()
            .collect();
        for w in waits {
            w.cancel();
        }
    }

    /// Drops every lock of `flavor` that `owner` holds on `file`, and ends its waits.
    pub fn release(&self, file: u64, owner: u64, flavor: LockFlavor) {
        self.cancel(file, owner);
        let key = HolderKey {
            file,
            owner,
            flavor,
        };
        // Closing the holder's file drops its locks; a wait that still runs on it keeps the
        // file open until it has stopped, and then drops what it got.
        lock(&self.inner).holders.remove(&key);
    }

    /// Ends every wait and drops every lock, as the end of the connection does.
    pub fn end(&self) {
        let waits = lock(&self.inner).waits.clone();
        for w in waits {
            w.cancel();
        }
        lock(&self.inner).holders.clear();
    }

    fn holds(&self, ask: LockAsk) -> bool {
        self.existing(ask).is_some()
    }

    fn existing(&self, ask: LockAsk) -> Option<Arc<OwnedFd>> {
        lock(&self.inner).holders.get(&key_of(ask)).cloned()
    }

    /// The holder's open file, opened now if it has none yet.
    fn holder(&self, lib: &Library, path: &RelPath, ask: LockAsk) -> Result<Arc<OwnedFd>> {
        if let Some(fd) = self.existing(ask) {
            return Ok(fd);
        }
        let fd = Arc::new(lib.open_for_lock(path)?);
        let mut inner = lock(&self.inner);
        if inner.holders.len() >= MAX_HOLDERS {
            return Err(Error::new(
                Code::NoLocks,
                format!("lock {path}: {MAX_HOLDERS} locked files on this connection already"),
            ));
        }
        // Another thread of this connection may have made it meanwhile: keep the first.
        Ok(Arc::clone(inner.holders.entry(key_of(ask)).or_insert(fd)))
    }
}

impl Wait {
    /// Waits for the lock for at most `limit`: `Ok` once granted, EAGAIN when the time is
    /// up, EINTR once cancelled.
    pub fn run(self, limit: Duration) -> Result<()> {
        install_wake_handler();
        // SAFETY: pthread_self has no preconditions.
        *lock(&self.state.thread) = Some(unsafe { libc::pthread_self() });
        let (stop_timer, timer) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let state = &self.state;
            let timer = scope.spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = timer.recv_timeout(limit) {
                    state.expired.store(true, Ordering::SeqCst);
                    state.interrupt_until_done();
                }
            });
            let result = self.block();
            self.state.done.store(true, Ordering::SeqCst);
            drop(stop_timer);
            // Joined by hand, as `request_loop` joins its threads: the thread's end, its
            // thread-local destructors included, not only its closure's.
            let _ = timer.join();
            result
        })
    }

    fn block(&self) -> Result<()> {
        let result = loop {
            if self.state.cancelled.load(Ordering::SeqCst) {
                break Err(interrupted());
            }
            if self.state.expired.load(Ordering::SeqCst) {
                break Err(Error::new(Code::TryAgain, "lock: still held by another"));
            }
            match apply(&self.fd, self.ask, true) {
                Ok(()) => break Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => break Err(Error::new(Code::from_io(&e), format!("lock: {e}"))),
            }
        };
        // Granted after all, but cancelled meanwhile: nobody will be told it holds the
        // lock, so it goes (only what this wait asked for; the holder's other locks stay).
        // One whose time ran out is granted: its reply says so.
        if result.is_ok() && self.state.cancelled.load(Ordering::SeqCst) {
            let undo = LockAsk {
                kind: LockKind::Unlock,
                ..self.ask
            };
            let _ = apply(&self.fd, undo, false);
            return Err(interrupted());
        }
        result
    }
}

/// A wait no longer waits once dropped, run or not: `cancel` waits for exactly that.
impl Drop for Wait {
    fn drop(&mut self) {
        self.state.done.store(true, Ordering::SeqCst);
        let mut inner = lock(&self.locks.inner);
        inner.waits.retain(|w| !Arc::ptr_eq(w, &self.state));
    }
}

impl WaitState {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.interrupt_until_done();
    }

    /// Signals the waiting thread until it no longer waits (module docs, point 3).
    fn interrupt_until_done(&self) {
        while !self.done.load(Ordering::SeqCst) {
            if let Some(thread) = *lock(&self.thread) {
                // SAFETY: the thread is one of ours, alive until `done` (it sets `done`
                // before it returns); a signal to it is handled by `wake`.
                unsafe { libc::pthread_kill(thread, WAKE_SIGNAL) };
            }
            std::thread::sleep(RESIGNAL_EVERY);
        }
    }
}

fn interrupted() -> Error {
    Error::new(Code::Interrupted, "lock: the wait was cancelled")
}

fn key_of(ask: LockAsk) -> HolderKey {
    HolderKey {
        file: ask.file,
        owner: ask.owner,
        flavor: ask.flavor,
    }
}

fn flock_of(ask: LockAsk) -> libc::flock {
    // SAFETY: all-zero is a valid `struct flock`.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match ask.kind {
        LockKind::Read => libc::F_RDLCK,
        LockKind::Write => libc::F_WRLCK,
        LockKind::Unlock => libc::F_UNLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // Offsets past i64::MAX cannot be locked on Linux; they are clamped, and "to the end"
    // (u64::MAX) is a length of 0.
    let start = ask.start.min(i64::MAX as u64);
    fl.l_start = start as libc::off_t;
    fl.l_len = if ask.end >= i64::MAX as u64 {
        0
    } else {
        (ask.end - start + 1) as libc::off_t
    };
    fl
}

/// Takes or drops the lock `ask` on `fd`; `wait`: block until granted (or a signal).
fn apply(fd: &OwnedFd, ask: LockAsk, wait: bool) -> std::io::Result<()> {
    let raw = fd.as_raw_fd();
    let r = match ask.flavor {
        LockFlavor::Posix => {
            let fl = flock_of(ask);
            let cmd = if wait {
                libc::F_OFD_SETLKW
            } else {
                libc::F_OFD_SETLK
            };
            // SAFETY: `fl` is a valid `struct flock` for the duration of the call.
            unsafe { libc::fcntl(raw, cmd, &fl) }
        }
        LockFlavor::Flock => {
            let op = match ask.kind {
                LockKind::Read => libc::LOCK_SH,
                LockKind::Write => libc::LOCK_EX,
                LockKind::Unlock => libc::LOCK_UN,
            };
            let op = if wait { op } else { op | libc::LOCK_NB };
            // SAFETY: plain syscall on an fd we own.
            unsafe { libc::flock(raw, op) }
        }
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // F_OFD_SETLK says EACCES or EAGAIN for a conflict, flock EWOULDBLOCK (= EAGAIN).
        if e.raw_os_error() == Some(libc::EACCES) {
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        return Err(e);
    }
    Ok(())
}

fn lock_error(path: &RelPath, e: std::io::Error) -> Error {
    let code = Code::from_io(&e);
    Error::new(code, format!("lock {path}: {}", code.text()))
}

extern "C" fn wake(_: libc::c_int) {}

/// SIGURG interrupts a blocked lock call (no `SA_RESTART`) and does nothing else.
fn install_wake_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: installs a handler that does nothing, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = wake as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(WAKE_SIGNAL, &sa, std::ptr::null_mut());
        }
    });
}

/// A poisoned lock only means another thread panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
