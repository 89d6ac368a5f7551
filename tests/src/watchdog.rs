//! A broken mount fails a test instead of hanging CI: aborting a FUSE connection, and the
//! [`Watchdog`] every [`Mount`](crate::Mount) arms to do that at its deadline.
//!
//! What is hard: nothing in the test can interrupt a FUSE call the mount never answers; only
//! writing to `/sys/fs/fuse/connections/N/abort` ends it (the hung call returns ECONNABORTED,
//! later ones ENOTCONN). Containers often lack that control filesystem, so it is mounted on
//! demand, and tests running in parallel may race to mount it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::mountinfo::{mountinfo, MountInfo};

/// Aborts a FUSE connection: every pending and future request fails with ENOTCONN.
pub fn abort_connection(info: &MountInfo) -> std::io::Result<()> {
    ensure_fusectl()?;
    std::fs::write(info.connection_dir().join("abort"), b"1")
}

/// Mounts the FUSE control filesystem on /sys/fs/fuse/connections unless it is there
/// (containers often lack it); it is what makes a connection abortable.
pub fn ensure_fusectl() -> std::io::Result<()> {
    let dir = Path::new("/sys/fs/fuse/connections");
    if mountinfo()
        .iter()
        .any(|m| m.fstype == "fusectl" && m.mount_point == dir)
    {
        return Ok(());
    }
    let out = Command::new("mount")
        .args(["-t", "fusectl", "fusectl"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()?;
    // A concurrent caller may have mounted it meanwhile; only its presence matters.
    if out.status.success() || mountinfo().iter().any(|m| m.fstype == "fusectl") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "mount -t fusectl: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Seconds a mount may live before its watchdog aborts it: `$SHELF_WATCHDOG_SECS`, or 120.
pub fn watchdog_secs() -> u64 {
    std::env::var("SHELF_WATCHDOG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120)
}

/// Aborts a mount's FUSE connection if the test is still running at the deadline, so calls
/// that hang fail with ENOTCONN instead. Dropping it disarms it.
pub(crate) struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub(crate) fn arm(info: MountInfo, after: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(after) {
                eprintln!(
                    "watchdog: mount {} still in use after {after:?}; aborting its FUSE \
                     connection so hung calls fail with ENOTCONN",
                    info.mount_point.display()
                );
                if let Err(e) = abort_connection(&info) {
                    eprintln!("watchdog: abort {}: {e}", info.connection_dir().display());
                }
            }
        });
        Watchdog {
            disarm: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.disarm.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
