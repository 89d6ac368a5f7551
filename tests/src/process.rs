//! Child processes and waiting: signals to a process or its group, waiting for an exit with a
//! timeout, polling for a condition, and the process table in `/proc` (for finding zombies).
//!
//! What is hard: every child must be reaped on every path, the timeouts and failed starts
//! included, or it stays behind as a zombie that a later check counts; and the processes a
//! server forks for its connections are reached only through its process group.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long a server or a mount may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a log file for a failure message (best effort).
pub(crate) fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

/// Sends `sig` to a process (`pid > 0`) or a process group (`pid < 0`); errors are ignored
/// because the target may already be gone.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory effects; a stale pid at worst yields ESRCH.
    unsafe { libc::kill(pid, sig) };
}

/// Waits for `child` to exit for at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
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

/// The children of `ppid` with their state letter (`Z`: a zombie).
pub fn children_of(ppid: u32) -> Vec<(u32, char)> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == ppid)
        .map(|p| (p.pid, p.state))
        .collect()
}
