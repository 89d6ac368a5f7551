//! A real `shelfd` for a test: [`Server`] starts it on port 0, reads its address from its
//! first line, can kill, stop and restart it on the same port, and on drop stops it and
//! SIGKILLs its whole process group (the connection processes) and reaps it.
//!
//! What is hard: a server must never see a mount of itself (DESIGN.md, "Server rules"), so
//! `shelfd` runs in its own private mount namespace, made before its mount exists. That
//! namespace also gets copies of the FUSE mounts of *other* tests running in parallel, and a
//! copy keeps a mount's superblock alive after the test unmounts it, so `shelf mount` would
//! never see its session end. The namespace therefore lazily drops every FUSE mount before
//! shelfd starts; all of it happens in the forked child, so the pid is shelfd's own.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::environment::shelfd_bin;
use crate::mountinfo::mountinfo;
use crate::process::{kill_group, poll_every, signal, wait_timeout, LogFile, START_TIMEOUT};

/// A running `shelfd` in a private mount namespace; stopped and reaped on drop.
pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    root: PathBuf,
    extra: Vec<OsString>,
    log: LogFile,
    /// The server key's fingerprint (`None`: `--insecure-plaintext`).
    fingerprint: Option<String>,
    /// Its own state directory (the key), kept across restarts so the key stays the same.
    state: tempfile::TempDir,
}

impl Server {
    /// Starts `shelfd ROOT --listen 127.0.0.1:0 EXTRA...` and waits for its address line.
    pub fn start<S: AsRef<OsStr>>(root: &Path, extra: &[S]) -> Server {
        let mut server = Server {
            child: None,
            addr: "127.0.0.1:0".parse().expect("placeholder address"),
            root: root.to_path_buf(),
            extra: extra.iter().map(|s| s.as_ref().to_os_string()).collect(),
            log: LogFile::new("shelfd-log-", "shelfd.log"),
            fingerprint: None,
            state: tempfile::Builder::new()
                .prefix("shelfd-state-")
                .tempdir()
                .expect("state dir"),
        };
        if let Err(e) = server.spawn("127.0.0.1:0") {
            panic!(
                "shelfd did not start: {e}\n--- shelfd log ---\n{}",
                server.log()
            );
        }
        server
    }

    /// `Server::start(root, &[])` without naming a type for the empty option list.
    pub fn plain(root: &Path) -> Server {
        Server::start::<&str>(root, &[])
    }

    /// Spawns shelfd listening on `listen`; on success `self.child` and `self.addr` are set.
    fn spawn(&mut self, listen: &str) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log.path())
            .expect("server log file");
        let mut cmd = Command::new(shelfd_bin());
        if !self.extra.iter().any(|a| a == "--state-dir") {
            cmd.arg("--state-dir").arg(self.state.path());
        }
        cmd.arg(&self.root)
            .args(["--listen", listen, "--log-level", "debug"])
            .args(&self.extra)
            .env("XDG_CONFIG_HOME", crate::tls::config_home())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group, so kill9 reaches the forked children too.
            .process_group(0);
        // What `unshare --mount --propagation private` does, plus dropping the copies of the
        // FUSE mounts that exist now (see the module docs). Done in the forked child so the
        // pid is shelfd's own.
        let fuse_mounts: Vec<std::ffi::CString> = mountinfo()
            .into_iter()
            .filter(|m| m.fstype.starts_with("fuse"))
            .filter_map(|m| std::ffi::CString::new(m.mount_point.into_os_string().into_vec()).ok())
            .collect();
        // SAFETY: the closure runs between fork and exec and makes only raw syscalls
        // (unshare, mount, umount2) on memory prepared before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let root = c"/".as_ptr();
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(
                    std::ptr::null(),
                    root,
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for m in &fuse_mounts {
                    // Best effort: a mount that went away meanwhile is fine.
                    libc::umount2(m.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW);
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run shelfd in a new mount namespace: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut second = String::new();
            let _ = reader.read_line(&mut second);
            let _ = tx.send((line, second));
            // Keep draining so a later write to stdout never meets a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let lines = rx.recv_timeout(START_TIMEOUT);
        let (line, second) = match lines {
            Ok((l, s)) => (Ok(l), s),
            Err(e) => (Err(e), String::new()),
        };
        let addr = line
            .as_deref()
            .ok()
            .and_then(|l| l.trim_end().strip_prefix("listening on "))
            .and_then(|a| a.parse::<SocketAddr>().ok());
        match addr {
            Some(addr) => {
                self.addr = addr;
                self.child = Some(child);
                self.fingerprint = second
                    .trim_end()
                    .strip_prefix("fingerprint ")
                    .map(str::to_owned);
                crate::tls::register(addr, self.fingerprint.as_deref());
                Ok(())
            }
            None => {
                kill_group(&mut child);
                Err(match line {
                    Ok(l) if l.is_empty() => "shelfd exited before its address line".into(),
                    Ok(l) => format!("unexpected first line {l:?}"),
                    Err(_) => format!("no address line within {START_TIMEOUT:?}"),
                })
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server key's fingerprint, from shelfd's second line; `None` for a plaintext server.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// The state directory holding the server's key.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// The library directory being served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pid of the `shelfd` parent (also its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server logged so far (all its runs).
    pub fn log(&self) -> String {
        self.log.read()
    }

    /// Kills the parent and every connection process at once (SIGKILL to the process group)
    /// and reaps the parent.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }

    /// Sends SIGTERM and waits up to 5 s for a clean exit, then kills the process group.
    /// Returns how the parent exited, if it did by itself.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id() as i32, libc::SIGTERM);
        let status = wait_timeout(&mut child, Duration::from_secs(5));
        // Connection processes still finishing after the parent left are not wanted either.
        kill_group(&mut child);
        status
    }

    /// Starts the server again on the same port (killing it first if it runs). Retries for
    /// up to 10 s while the port is still taken.
    pub fn restart(&mut self) {
        self.kill9();
        let listen = self.addr.to_string();
        let mut last_error = String::new();
        let restarted = poll_every(Duration::from_millis(200), Duration::from_secs(10), || {
            self.spawn(&listen).map_err(|e| last_error = e).ok()
        });
        if restarted.is_none() {
            panic!(
                "shelfd did not restart on {listen}: {last_error}\n--- log ---\n{}",
                self.log()
            )
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
