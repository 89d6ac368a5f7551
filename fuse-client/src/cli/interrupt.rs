//! Ctrl-C as a flag that copy loops poll, so an interrupted `get` or `put` can clean up (remove
//! its partial file, abort the upload) before the process exits with 130.
//!
//! The handler only stores to an atomic, which is async-signal-safe. It is installed with
//! `SA_RESTART`, so blocking reads and writes continue and the loops see the flag between
//! pieces (each piece waits at most the request timeout).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// The user pressed Ctrl-C; exits 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Takes SIGINT over from the default (which kills the process at once).
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; we set the handler, flags and an empty mask
        // before passing it, and the handler is async-signal-safe (one atomic store).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut()) != 0 {
                tracing::warn!("could not install the Ctrl-C handler");
            }
        }
    });
}

/// The flag Ctrl-C sets. Copy loops take a flag as a parameter, so tests pass their own
/// instead of racing on this process-wide one.
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

/// `Err(Interrupted)` once `flag` is set.
pub fn check(flag: &AtomicBool) -> Result<(), Interrupted> {
    if flag.load(Ordering::SeqCst) {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Forgets an earlier Ctrl-C (the shell does this before each command).
pub fn reset() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}
