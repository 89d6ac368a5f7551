//! What the kernel's lock requests need beyond the core: which call a request came from,
//! whether the waiting program got a signal, and a thread to wait on.
//!
//! fuser 0.18 passes neither the request's `FUSE_LK_FLOCK` flag nor `FUSE_INTERRUPT`, so both
//! are read from the requesting thread in `/proc` (the mount runs as root, or as the user whose
//! programs use it): the system call it is in (`flock(2)` or `fcntl(2)`), and its pending
//! signals. The thread is blocked in that call for as long as the request lasts, so what
//! `/proc` says holds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fuser::{Errno, ReplyEmpty};
use shelf_core::{Core, LockRequest};
use shelf_proto::{LockFlavor, LockKind};
use shelf_remote::Transport;

/// The kernel's largest file offset (`OFFSET_MAX`); a lock reported past it is EIO to the
/// program.
pub const OFFSET_MAX: u64 = i64::MAX as u64;

/// Lock waits in progress at once; beyond, ENOLCK (each is a thread).
pub const MAX_WAITS: usize = 256;

static WAITING: AtomicUsize = AtomicUsize::new(0);

/// The kernel's `F_RDLCK`/`F_WRLCK`/`F_UNLCK` as a lock kind.
pub fn kind_of(typ: i32) -> Option<LockKind> {
    match typ {
        libc::F_RDLCK => Some(LockKind::Read),
        libc::F_WRLCK => Some(LockKind::Write),
        libc::F_UNLCK => Some(LockKind::Unlock),
        _ => None,
    }
}

/// The kernel's lock type for a held lock.
pub fn typ_of(kind: LockKind) -> i32 {
    match kind {
        LockKind::Read => libc::F_RDLCK,
        LockKind::Write => libc::F_WRLCK,
        LockKind::Unlock => libc::F_UNLCK,
    }
}

/// flock if thread `tid` is in `flock(2)`, else POSIX (`fcntl`, OFD locks included, and
/// whatever `/proc` cannot tell).
pub fn flavor_of(tid: u32) -> LockFlavor {
    let syscall = std::fs::read_to_string(format!("/proc/{tid}/syscall")).unwrap_or_default();
    if syscall_number(&syscall) == Some(libc::SYS_flock) {
        LockFlavor::Flock
    } else {
        LockFlavor::Posix
    }
}

/// The number at the start of `/proc/<tid>/syscall` ("running" and "-1" are not calls).
fn syscall_number(text: &str) -> Option<libc::c_long> {
    text.split_whitespace().next()?.parse().ok()
}

/// Whether thread `tid` has a signal pending that it neither blocks nor ignores (a wait in
/// the kernel would end with EINTR for it), or is gone.
pub fn interrupted(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(status) => signal_pending(&status),
        Err(_) => true,
    }
}

/// From a `/proc/<tid>/status`: a pending signal (the thread's own or its process's) that is
/// neither blocked nor ignored.
fn signal_pending(status: &str) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !(field("SigBlk:") | field("SigIgn:")) != 0
}

/// Waits for the lock on a thread of its own and replies from there: granted, EINTR when the
/// program got a signal, or the error that ended it.
pub fn wait<T: Transport>(core: Arc<Core<T>>, asked: LockRequest, tid: u32, reply: ReplyEmpty) {
    if WAITING.fetch_add(1, Ordering::SeqCst) >= MAX_WAITS {
        WAITING.fetch_sub(1, Ordering::SeqCst);
        return reply.error(Errno::ENOLCK);
    }
    // The reply moves into the thread; if the thread cannot start, it comes back here.
    let (tx, rx) = std::sync::mpsc::channel::<ReplyEmpty>();
    let waiter = move || {
        let Ok(reply) = rx.recv() else { return };
        let r = core.setlk(asked, true, &|| interrupted(tid));
        WAITING.fetch_sub(1, Ordering::SeqCst);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e.errno())),
        }
    };
    let spawned = std::thread::Builder::new()
        .name("shelf-lock-wait".into())
        .spawn(waiter);
    match spawned {
        Ok(_) => {
            let _ = tx.send(reply);
        }
        Err(e) => {
            WAITING.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot start a lock wait: {e}");
            reply.error(Errno::ENOLCK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_signal_counts_unless_blocked_or_ignored() {
        let status = |pnd: &str, shd: &str, blk: &str, ign: &str| {
            format!(
                "Name:\tflock\nSigQ:\t0/1\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\n\
                 SigBlk:\t{blk}\nSigIgn:\t{ign}\nSigCgt:\t0000000000000000\n"
            )
        };
        let none = "0000000000000000";
        let sigint = "0000000000000002";
        assert!(!signal_pending(&status(none, none, none, none)));
        assert!(signal_pending(&status(none, sigint, none, none)));
        assert!(signal_pending(&status(sigint, none, none, none)));
        assert!(!signal_pending(&status(none, sigint, sigint, none)));
        assert!(!signal_pending(&status(none, sigint, none, sigint)));
    }

    #[test]
    fn the_system_call_is_the_first_number() {
        assert_eq!(syscall_number("73 0x3 0x2 0x0"), Some(73));
        assert_eq!(syscall_number("running"), None);
        assert_eq!(syscall_number(""), None);
    }

    #[test]
    fn a_thread_that_is_gone_is_interrupted() {
        assert!(interrupted(u32::MAX));
    }

    #[test]
    fn lock_types_round_trip() {
        for typ in [libc::F_RDLCK, libc::F_WRLCK, libc::F_UNLCK] {
            assert_eq!(kind_of(typ).map(typ_of), Some(typ));
        }
        assert_eq!(kind_of(99), None);
    }
}
