//! Child processes and waiting: signals to a process or its group, waiting for an exit with a
//! timeout, polling for a condition, and the process table in `/proc` (for finding zombies).
//!
//! What is hard: every child must be reaped on every path, the timeouts and failed starts
//! included, or it stays behind as a zombie that a later check counts; and the processes a
//! server forks for its connections are reached only through its process group. So every
//! way of ending a child here ends by reaping it ([`wait_or_kill`], [`kill_and_reap`],
//! [`kill_group`]). A script just written can meet ETXTBSY at exec while another test
//! thread's fork still holds it open for writing; [`spawn_retrying`] rides that out.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::fsutil::temp_dir;

/// How long a server or a mount may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A log file a child writes, in a temp directory of its own that goes on drop.
pub(crate) struct LogFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LogFile {
    /// A log named `name` in a fresh temp directory named after `prefix`; the file itself is
    /// made by whoever writes it.
    pub(crate) fn new(prefix: &str, name: &str) -> LogFile {
        let dir = temp_dir(prefix);
        LogFile {
            path: dir.path().join(name),
            _dir: dir,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// What was logged so far, for a failure message (best effort).
    pub(crate) fn read(&self) -> String {
        std::fs::read(&self.path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.path.display()))
    }
}

/// Spawns `cmd`, trying again for up to 2 s while exec fails with ETXTBSY.
///
/// A script this process has just written can meet ETXTBSY when another test thread forked
/// meanwhile: its child holds the write descriptor until it execs. The harness's race on any
/// file system, over within moments; a file the mount itself kept open for writing would
/// still fail after two seconds.
pub(crate) fn spawn_retrying(cmd: &mut Command) -> std::io::Result<Child> {
    let started = Instant::now();
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY)
                    && started.elapsed() < Duration::from_secs(2) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            spawned => return spawned,
        }
    }
}

/// Sends `sig` to a process (`pid > 0`) or a process group (`pid < 0`); errors are ignored
/// because the target may already be gone.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory effects; a stale pid at worst yields ESRCH.
    unsafe { libc::kill(pid, sig) };
}

/// Waits for `child` to exit for at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    poll_every(Duration::from_millis(10), timeout, || {
        match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(Some(status)),
            // It cannot be waited for: give up now, as if it had not exited.
            Err(_) => Some(None),
        }
    })
    .flatten()
}

/// Waits up to `timeout` for `child` to exit by itself; past it, kills and reaps it. Returns
/// how it exited, if it did by itself.
pub(crate) fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let status = wait_timeout(child, timeout);
    if status.is_none() {
        kill_and_reap(child);
    }
    status
}

/// SIGKILLs `child` and reaps it.
pub(crate) fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs the process group `child` leads (it was spawned with `process_group(0)`), which
/// reaches the processes it forked, and reaps `child`. Also right after `child` was reaped:
/// `wait` then returns the status kept by `try_wait` without a system call.
pub(crate) fn kill_group(child: &mut Child) {
    signal(-(child.id() as i32), libc::SIGKILL);
    let _ = child.wait();
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    poll_every(Duration::from_millis(50), timeout, f)
}

/// Calls `f` every `interval` until it returns `Some` or `timeout` passes; `f` runs at least
/// once, and once more after the last sleep.
pub(crate) fn poll_every<T>(
    interval: Duration,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(interval);
    }
}

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub pid: u32,
    /// `R`, `S`, ... and `Z` for a zombie.
    pub state: char,
    pub ppid: u32,
    pub pgid: u32,
}

/// Every process now in `/proc`.
pub fn processes() -> Vec<ProcStat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| proc_stat(e.file_name().to_str()?.parse().ok()?))
        .collect()
}

/// "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses; split after the last ')'.
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgid,
    })
}

/// The children of `ppid` with their state letter (`Z`: a zombie), leaving out shelfd's change
/// watcher (which lives as long as the server: the connection processes are what is counted).
pub fn children_of(ppid: u32) -> Vec<(u32, char)> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == ppid)
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                .map_or(true, |c| c.trim() != "shelfd-watch")
        })
        .map(|p| (p.pid, p.state))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn children_are_reaped_on_every_way_out() {
        let mut slow = Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("spawn sleep");
        let started = Instant::now();
        assert_eq!(wait_or_kill(&mut slow, Duration::from_millis(100)), None);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            slow.try_wait().expect("try_wait").is_some(),
            "killed at the timeout and reaped"
        );

        let mut quick = Command::new("true")
            .process_group(0)
            .spawn()
            .expect("spawn true");
        let status = wait_timeout(&mut quick, Duration::from_secs(10)).expect("true exits");
        // After the reap, killing the group still returns at once.
        kill_group(&mut quick);
        assert!(status.success());
        assert_eq!(poll(Duration::ZERO, || None::<()>), None);
        let mut calls = 0;
        let third = poll(Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(third, Some(3), "polled until it said yes");
    }
}
