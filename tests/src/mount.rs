//! Mounts for a test: [`Mount`] runs `shelf mount ADDR DIR --foreground` as a child and
//! waits until the mount is in mountinfo; on drop it detaches the mount and reaps the child.
//! [`MountDir`] is a mount point that removes itself only when nothing is mounted on it.
//!
//! What is hard: cleanup runs while a failed assertion unwinds, and in an order that cannot
//! hurt: the mount goes before its directory (a recursive removal through a live mount would
//! delete the library), and a session that stays wedged after the unmount is killed after a
//! few seconds rather than waited on.

use std::ffi::OsStr;
use std::fmt::Display;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::environment::shelf_bin;
use crate::fsutil::temp_dir;
use crate::mountinfo::{mount_at, MountInfo};
use crate::process::{
    kill_and_reap, poll_every, signal, wait_or_kill, wait_timeout, LogFile, START_TIMEOUT,
};
use crate::watchdog::{abort_connection, watchdog_secs, Watchdog};

/// Lazily unmounts `dir` (root: umount2 MNT_DETACH; otherwise `fusermount3 -u -z`).
pub fn unmount_detach(dir: &Path) -> std::io::Result<()> {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: c is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
        return Err(std::io::Error::last_os_error());
    }
    let st = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("fusermount3 -u -z: {st}")))
    }
}

/// A directory for a mount point, removed on drop only if nothing is mounted on it (a
/// recursive removal through a live mount would delete the library).
pub struct MountDir {
    path: PathBuf,
}

impl MountDir {
    pub fn new() -> MountDir {
        let dir = temp_dir("shelf-mnt-").keep();
        MountDir {
            path: std::fs::canonicalize(&dir).expect("canonical mount dir"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for MountDir {
    fn default() -> Self {
        MountDir::new()
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        if mount_at(&self.path).is_some() {
            let _ = unmount_detach(&self.path);
        }
        if mount_at(&self.path).is_none() {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// `shelf mount ADDR DIR --foreground` running as a child; unmounted and reaped on drop.
pub struct Mount {
    child: Option<Child>,
    info: MountInfo,
    _watchdog: Watchdog,
    // These go after the unmount in `drop`: the mount point, then its log.
    dir: MountDir,
    log: LogFile,
}

impl Mount {
    /// Mounts `addr` on a fresh temp directory with `shelf mount ADDR DIR --foreground EXTRA`
    /// and waits until it shows in mountinfo. Panics with the mount's log on failure.
    pub fn new<S: AsRef<OsStr>>(addr: impl Display, extra: &[S]) -> Mount {
        Mount::try_new(addr, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `Mount::new(addr, &[])` without naming a type for the empty option list.
    pub fn plain(addr: impl Display) -> Mount {
        Mount::new::<&str>(addr, &[])
    }

    /// Like [`Mount::new`], but returns the failure (with the log) instead of panicking.
    pub fn try_new<S: AsRef<OsStr>>(addr: impl Display, extra: &[S]) -> Result<Mount, String> {
        Mount::try_new_with_watchdog(addr, extra, Duration::from_secs(watchdog_secs()))
    }

    /// Like [`Mount::try_new`], with a watchdog that aborts the mount after `watchdog`
    /// instead of [`watchdog_secs`].
    pub fn try_new_with_watchdog<S: AsRef<OsStr>>(
        addr: impl Display,
        extra: &[S],
        watchdog: Duration,
    ) -> Result<Mount, String> {
        let dir = MountDir::new();
        let log = LogFile::new("shelf-mount-log-", "mount.log");
        let logf = std::fs::File::create(log.path()).expect("mount log file");
        let mut cmd = Command::new(shelf_bin());
        cmd.arg("mount")
            .arg(addr.to_string())
            .arg(dir.path())
            .arg("--foreground")
            .args(extra)
            .env("XDG_CONFIG_HOME", crate::tls::config_home())
            .env(
                "SHELF_LOG",
                std::env::var("SHELF_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .process_group(0);
        let desc = format!("{cmd:?}");
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {desc}: {e}"))?;
        // Mounted, or exited before mounting.
        let came_up = poll_every(Duration::from_millis(20), START_TIMEOUT, || {
            if let Some(info) = mount_at(dir.path()).filter(MountInfo::is_shelf) {
                return Some(Ok(info));
            }
            match child.try_wait() {
                Ok(Some(status)) => Some(Err(status)),
                _ => None,
            }
        });
        let info = match came_up {
            Some(Ok(info)) => info,
            Some(Err(status)) => {
                return Err(format!(
                    "{desc} exited with {status} before mounting\n--- mount log ---\n{}",
                    log.read()
                ))
            }
            None => {
                kill_and_reap(&mut child);
                return Err(format!(
                    "{desc}: no mount within {START_TIMEOUT:?}\n--- mount log ---\n{}",
                    log.read()
                ));
            }
        };
        let watchdog = Watchdog::arm(info.clone(), watchdog);
        Ok(Mount {
            child: Some(child),
            info,
            _watchdog: watchdog,
            dir,
            log,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The mountinfo line seen when the mount came up.
    pub fn info(&self) -> &MountInfo {
        &self.info
    }

    /// Whether the mount is still in mountinfo.
    pub fn is_mounted(&self) -> bool {
        mount_at(self.path())
            .is_some_and(|m| m.major == self.info.major && m.minor == self.info.minor)
    }

    /// What `shelf mount` logged so far.
    pub fn log(&self) -> String {
        self.log.read()
    }

    /// The pid of `shelf mount`, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig` to `shelf mount`.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            signal(pid as i32, sig);
        }
    }

    /// Waits up to `timeout` for `shelf mount` to exit by itself and reaps it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_timeout(child, timeout)?;
        self.child = None;
        Some(status)
    }

    /// Aborts the FUSE connection now (what the watchdog does at its deadline).
    pub fn abort(&self) -> std::io::Result<()> {
        abort_connection(&self.info)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.is_mounted() {
            let _ = unmount_detach(self.dir.path());
        }
        if let Some(mut child) = self.child.take() {
            // After the unmount the session ends by itself; do not wait on a wedged one.
            wait_or_kill(&mut child, Duration::from_secs(3));
        }
    }
}
