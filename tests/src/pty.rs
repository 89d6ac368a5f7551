//! Running a command on a pseudo-terminal: [`OnTerminal`] gives it a fresh pty as standard
//! input, output and error, so that it behaves as it does for a person (prompts, notices,
//! progress bars), and keeps what the terminal showed.
//!
//! What is hard: the command's output must be read while it runs (a full pty blocks it), and
//! its end is seen on the master side as EIO once every copy of the slave is closed, not as
//! end of file. The master is non-blocking and read in short polls; every wait has a deadline;
//! the command is killed and reaped on drop, also while a failed assertion unwinds.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A command running on a pty of its own; killed and reaped when dropped.
pub struct OnTerminal {
    master: File,
    child: Option<Child>,
    /// Everything the terminal has shown so far.
    seen: Vec<u8>,
    /// The slave side was closed by the command (it exited, or closed its descriptors).
    hung_up: bool,
}

impl OnTerminal {
    /// Starts `cmd` with one new pty as its stdin, stdout and stderr.
    pub fn spawn(mut cmd: Command) -> OnTerminal {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty writes two fds into the provided ints; the name and settings
        // pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just returned by openpty and are owned by nobody else.
        let (master, slave) =
            unsafe { (File::from(OwnedFd::from_raw_fd(m)), OwnedFd::from_raw_fd(s)) };
        // SAFETY: fcntl on our own open fd; only its status flags change.
        let rc = unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        assert_eq!(rc, 0, "O_NONBLOCK: {}", std::io::Error::last_os_error());
        let child = cmd
            .stdin(Stdio::from(slave.try_clone().expect("dup pty")))
            .stdout(Stdio::from(slave.try_clone().expect("dup pty")))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?} on a pty: {e}"));
        // `cmd` still holds the slave's copies in its Stdio; drop them, so that the command's
        // exit closes the last one.
        drop(cmd);
        OnTerminal {
            master,
            child: Some(child),
            seen: Vec::new(),
            hung_up: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the terminal has shown so far, with the pty's carriage returns removed.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.seen).replace('\r', "")
    }

    /// Types `text` on the terminal.
    pub fn type_in(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .expect("write to the pty");
    }

    /// Reads what is there now; `false` once the command has closed its side.
    fn read_available(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        while !self.hung_up {
            match self.master.read(&mut buf) {
                Ok(0) => self.hung_up = true,
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO: every copy of the slave is closed and nothing is left to read.
                Err(_) => self.hung_up = true,
            }
        }
        !self.hung_up
    }

    /// Reads until the screen contains `text` (`true`), or the command closes its side or
    /// `timeout` passes first (`false`).
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let open = self.read_available();
            if self.screen().contains(text) {
                return true;
            }
            if !open || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the command to end, reading the terminal meanwhile; returns what it showed
    /// and how the command ended (`None`: still running at `timeout`, then killed).
    pub fn finish(mut self, timeout: Duration) -> (String, Option<ExitStatus>) {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("finished once");
        let status = loop {
            self.read_available();
            if let Some(status) = child.try_wait().expect("wait for the command") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // What it wrote just before its end is still in the pty.
        self.read_available();
        (self.screen(), status)
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
