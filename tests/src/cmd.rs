//! Running commands: [`Cmd`] builds one with a timeout, [`Output`] keeps what it did, and its
//! `Display` (what every failed assertion on it prints) shows the command, its status,
//! stdout and stderr.
//!
//! What is hard: output goes through files, not pipes, so a chatty command never blocks on a
//! full pipe and one that leaves a child behind cannot keep the test waiting for EOF; a command
//! past its timeout is killed, reaped and reported as killed, never waited on forever.

use std::ffi::OsStr;
use std::fmt::Display;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::environment::shelf_bin;
use crate::process::{spawn_retrying, wait_or_kill};

/// Default timeout of a command run with [`run`] or [`Cmd`].
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// A command with a timeout whose output is kept for failure messages.
pub struct Cmd {
    cmd: Command,
    desc: String,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
}

/// What a [`Cmd`] did. `status` is `None` when it was killed at its timeout.
#[derive(Debug)]
pub struct Output {
    pub desc: String,
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let program = program.as_ref();
        Cmd {
            cmd: {
                let mut c = Command::new(program);
                // The tests' own config directory: their known servers, never the user's.
                c.env("XDG_CONFIG_HOME", crate::tls::config_home());
                c
            },
            desc: program.to_string_lossy().into_owned(),
            timeout: CMD_TIMEOUT,
            stdin: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        let a = a.as_ref();
        self.desc.push(' ');
        self.desc.push_str(&shell_quote(a));
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.desc = format!("(cd {} && {})", dir.as_ref().display(), self.desc);
        self.cmd.current_dir(dir);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(key, value);
        self
    }

    /// Feeds these bytes on standard input (stdin is /dev/null otherwise).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    /// Runs the command to its end or its timeout. Output goes through files, not pipes, so a
    /// chatty command never blocks on a full pipe and a detaching one cannot hold it open.
    pub fn run(mut self) -> Output {
        let tmp = tempfile::tempdir().expect("temp dir for command output");
        let out_path = tmp.path().join("stdout");
        let err_path = tmp.path().join("stderr");
        let stdin = match &self.stdin {
            Some(bytes) => {
                let p = tmp.path().join("stdin");
                std::fs::write(&p, bytes).expect("write stdin file");
                Stdio::from(std::fs::File::open(&p).expect("open stdin file"))
            }
            None => Stdio::null(),
        };
        let started = Instant::now();
        self.cmd
            .stdin(stdin)
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"));
        let mut child = spawn_retrying(&mut self.cmd)
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", self.desc));
        let status = wait_or_kill(&mut child, self.timeout);
        Output {
            desc: self.desc,
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
            elapsed: started.elapsed(),
        }
    }
}

/// A command with the C locale and UTC, so messages and times compare as text.
pub fn tool(program: impl AsRef<OsStr>) -> Cmd {
    Cmd::new(program).env("LC_ALL", "C").env("TZ", "UTC")
}

/// The `shelf` binary as a [`Cmd`] (C locale), e.g. `shelf().args(["ls", addr]).run()`.
pub fn shelf() -> Cmd {
    tool(shelf_bin())
}

/// Runs `program args...` with the default timeout.
pub fn run<I, S>(program: impl AsRef<OsStr>, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Cmd::new(program).args(args).run()
}

/// Runs `sh -c script` with the default timeout.
pub fn sh(script: &str) -> Output {
    Cmd::new("sh").arg("-c").arg(script).run()
}

impl Output {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Fails the test, showing the command and its output, unless it exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Output {
        assert!(self.success(), "command failed\n{self}");
        self
    }

    /// Fails the test unless the command ran to its end and exited non-zero.
    #[track_caller]
    pub fn assert_fail(&self) -> &Output {
        assert!(
            self.status.is_some() && !self.success(),
            "command should have failed\n{self}"
        );
        self
    }

    /// Fails the test unless standard error contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Output {
        assert!(
            self.stderr_str().contains(needle),
            "stderr should contain {needle:?}\n{self}"
        );
        self
    }
}

impl Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.status {
            None => format!("killed after its timeout ({:.1?})", self.elapsed),
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => format!("{s}"),
            },
        };
        writeln!(f, "command: {}", self.desc)?;
        writeln!(f, "status:  {status} after {:.1?}", self.elapsed)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout_str().trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr_str().trim_end())
    }
}

fn shell_quote(s: &OsStr) -> String {
    let text = s.to_string_lossy();
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=+,@%".contains(&b))
    {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_report_status_output_and_timeouts() {
        let out = sh("echo out; echo err >&2; exit 3");
        assert_eq!(out.code(), Some(3));
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr_str(), "err\n");
        out.assert_fail();
        let slow = Cmd::new("sleep")
            .arg("10")
            .timeout(Duration::from_millis(200))
            .run();
        assert!(slow.status.is_none(), "{slow}");
        assert!(slow.elapsed < Duration::from_secs(5));
        let fed = Cmd::new("cat").stdin("fed").run();
        assert_eq!(fed.assert_ok().stdout, b"fed");
    }
}
