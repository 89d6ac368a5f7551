//! Detaching like sshfs, yet reporting failure.
//!
//! [`detach`] forks *before* any thread exists (after fork only the calling thread survives,
//! so forking a threaded process can leave locks held forever). The child starts a new session,
//! connects and mounts, and tells the waiting parent the outcome through a pipe ([`Ready`]):
//! "ok", or the error's text. The parent prints that error, or exits 0 only once the mount
//! answers, so no caller sees a dead mount point. Once mounted, the child points its standard
//! streams at /dev/null ([`detach_stdio`]) so it holds no terminal.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use anyhow::{bail, Context};
use rustix::pipe::PipeFlags;

/// The pipe to a waiting parent (detached mode), closed as soon as it has heard the outcome,
/// which ends the parent's read. In the foreground there is nobody to tell.
pub(super) struct Ready(Option<std::fs::File>);

impl Ready {
    /// Nobody is waiting: `shelf mount --foreground`.
    pub(super) fn foreground() -> Ready {
        Ready(None)
    }

    /// Whether a parent is waiting, i.e. this process was detached.
    pub(super) fn is_detached(&self) -> bool {
        self.0.is_some()
    }

    /// Tells the parent `msg` ("ok" or an error's text) and closes the pipe; later calls do
    /// nothing.
    pub(super) fn tell(&mut self, msg: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(msg.as_bytes());
        }
    }
}

/// Runs `work` in a detached child and waits for it to tell the outcome through its
/// [`Ready`]. Returns in the parent only: `Ok` once the child said "ok", else its error. The
/// child exits when `work` returns (status 1 on error, whose text the parent already has).
///
/// Must be called while the process has a single thread.
pub(super) fn detach(work: impl FnOnce(Ready) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let (read_end, write_end) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)
        .map_err(std::io::Error::from)
        .context("pipe")?;
    // SAFETY: no thread has been started yet in this process (argument parsing and the plan
    // are single-threaded; see the callers), so the child may run arbitrary code after fork.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            drop(read_end);
            // Failure (already a group leader) is harmless: we only want no controlling tty.
            let _ = rustix::process::setsid();
            let ready = Ready(Some(std::fs::File::from(write_end)));
            // An error has already been told to the parent, which prints it.
            let code = i32::from(work(ready).is_err());
            std::process::exit(code)
        }
        _child => {
            drop(write_end);
            wait_for_child(read_end)
        }
    }
}

/// The parent's side: reads until the child closes the pipe.
fn wait_for_child(read_end: OwnedFd) -> anyhow::Result<()> {
    let mut msg = String::new();
    std::fs::File::from(read_end)
        .read_to_string(&mut msg)
        .context("waiting for mount")?;
    match msg.strip_prefix("ok") {
        Some(_) => Ok(()),
        None if msg.is_empty() => bail!("the mount process died before mounting"),
        None => Err(anyhow::Error::msg(msg)),
    }
}

/// Points standard input, output and error at /dev/null. On failure the old streams stay.
pub(super) fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    let null = OwnedFd::from(null);
    let _ = rustix::stdio::dup2_stdin(&null);
    let _ = rustix::stdio::dup2_stdout(&null);
    let _ = rustix::stdio::dup2_stderr(&null);
    if null.as_raw_fd() <= 2 {
        // It landed on a closed standard stream and now *is* that stream: keep it open, and
        // inheritable like the others (dup2 onto itself left its close-on-exec flag).
        let _ = rustix::io::fcntl_setfd(&null, rustix::io::FdFlags::empty());
        let _ = null.into_raw_fd();
    }
}
