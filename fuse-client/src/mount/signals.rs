//! Unmounting on SIGINT, SIGTERM and SIGHUP.
//!
//! A signal handler may do almost nothing safely, so there is none: [`block`] blocks the
//! signals in the calling thread before any other thread exists (every later thread inherits
//! the mask, so no thread is ever interrupted), and [`unmount_on_signal`] starts the one thread
//! that takes them with sigwait(3) and unmounts. The kernel then ends the FUSE session loop,
//! and `shelf mount` returns normally.
//!
//! rustix offers no safe signal-mask calls (only `rustix::runtime`, for programs without a
//! libc), so the two calls here go to libc, each with its reason.

use std::path::PathBuf;

use anyhow::Context;

/// The signals that unmount, blocked in every thread (see the module doc).
pub(super) struct Blocked(libc::sigset_t);

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts later.
/// Call before starting any thread.
pub(super) fn block() -> anyhow::Result<Blocked> {
    // SAFETY: the sigset is initialised by sigemptyset before use; pthread_sigmask only
    // changes this thread's mask and reads `set`, which outlives the call.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc)).context("blocking signals");
        }
        Ok(Blocked(set))
    }
}

/// Starts the thread that waits for one of the blocked signals and unmounts `mountpoint`.
pub(super) fn unmount_on_signal(signals: Blocked, mountpoint: PathBuf) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("shelf-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `signals.0` is a valid, initialised sigset; sigwait writes only to `sig`.
            if unsafe { libc::sigwait(&signals.0, &mut sig) } == 0 {
                tracing::info!("signal {sig}: unmounting");
                if let Err(e) = super::unmount::unmount(&mountpoint) {
                    tracing::warn!("unmount on signal failed: {e:#}");
                }
            }
        })?;
    Ok(())
}
