//! The end-to-end harness: a real `shelfd`, the real `shelf` binary, real FUSE mounts.
//!
//! Everything a test starts belongs to a guard whose `Drop` cleans up, also while a failed
//! assertion unwinds: [`Server`] stops (SIGTERM, then SIGKILL of its whole process group) and
//! reaps its process, [`Mount`] detaches the mount and reaps `shelf mount`, [`run`] kills a
//! command that outlives its timeout. Failures print the command, its output and the logs.
//!
//! What is hard, and how it is handled:
//! 1. A server must never see a mount of itself (DESIGN.md, "Server rules"): `shelfd` runs in
//!    its own private mount namespace, made before its mount exists. That namespace also gets
//!    copies of the FUSE mounts of *other* tests running in parallel, and a copy keeps a
//!    mount's superblock alive after the test unmounts it, so `shelf mount` would never see its
//!    session end. The namespace therefore lazily drops every FUSE mount before shelfd starts.
//! 2. A broken mount must fail a test, not hang CI: every [`Mount`] has a watchdog that, past
//!    its deadline, aborts the FUSE connection (`/sys/fs/fuse/connections/N/abort`), so a
//!    hung call returns ECONNABORTED and later ones ENOTCONN. Commands run through [`Cmd`]
//!    with a timeout.
//! 3. Binaries: the tests crate cannot use `CARGO_BIN_EXE_*` of other packages, so binaries are
//!    found beside the test executable (`target/<profile>/`), as ripgrep's `tests/util.rs` does,
//!    or in `$SHELF_BIN_DIR`; build them first with `cargo build --bins`.

pub mod proxy;

use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server or a mount may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Default timeout of a command run with [`run`] or [`Cmd`].
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Binaries and the environment
// ---------------------------------------------------------------------------------------------

/// The directory holding `shelf` and `shelfd`: `$SHELF_BIN_DIR`, else the target directory of
/// the running test executable (`target/debug/deps/t-hash` -> `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHELF_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let mut dir = exe
        .parent()
        .expect("test executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --bins` first (with the same CARGO_TARGET_DIR and \
         profile as the tests), or point SHELF_BIN_DIR at the directory holding it",
        path.display()
    );
    path
}

/// The `shelfd` binary.
pub fn shelfd_bin() -> PathBuf {
    binary("shelfd")
}

/// The `shelf` binary.
pub fn shelf_bin() -> PathBuf {
    binary("shelf")
}

/// Whether a program is on `PATH`.
pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Fails the test unless `name` is on `PATH`, naming the Debian package that provides it.
pub fn require_tool(name: &str, package: &str) {
    assert!(
        have_tool(name),
        "`{name}` is not installed; this test needs it (Debian package `{package}`, see \
         TEST_PACKAGES in scripts/lib.sh)"
    );
}

/// Whether the FUSE tests should run. Fails the test when FUSE is unusable (no `/dev/fuse`,
/// no `fusermount3`), unless `SHELF_SKIP_FUSE=1`, in which case it returns false and the
/// test returns early. Tests must not pass silently on a machine that cannot run them.
pub fn fuse_available() -> bool {
    let skip = std::env::var_os("SHELF_SKIP_FUSE").is_some_and(|v| v == "1");
    let problem = if !Path::new("/dev/fuse").exists() {
        Some(
            "/dev/fuse is missing (load the fuse module, or give the container --device /dev/fuse)",
        )
    } else if !have_tool("fusermount3") {
        Some("fusermount3 is not installed (Debian package `fuse3`)")
    } else {
        None
    };
    match problem {
        None => true,
        Some(why) if skip => {
            eprintln!("SHELF_SKIP_FUSE=1: skipping a FUSE test: {why}");
            false
        }
        Some(why) => panic!("cannot run the FUSE tests: {why}; set SHELF_SKIP_FUSE=1 to skip them"),
    }
}

/// Reads a log file for a failure message (best effort).
fn read_log(path: &Path) -> String {
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

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

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
            cmd: Command::new(program),
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
        let mut child = loop {
            match self.cmd.spawn() {
                // A script this process has just written can meet ETXTBSY when another test
                // thread forked meanwhile: its child holds the write descriptor until it
                // execs. The harness's race on any file system, over within moments; a file
                // the mount itself kept open for writing would still fail after two seconds.
                Err(e)
                    if e.raw_os_error() == Some(libc::ETXTBSY)
                        && started.elapsed() < Duration::from_secs(2) =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                spawned => {
                    break spawned.unwrap_or_else(|e| panic!("cannot run `{}`: {e}", self.desc))
                }
            }
        };
        let status = wait_timeout(&mut child, self.timeout);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A running `shelfd` in a private mount namespace; stopped and reaped on drop.
pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    root: PathBuf,
    extra: Vec<OsString>,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Server {
    /// Starts `shelfd ROOT --listen 127.0.0.1:0 EXTRA...` and waits for its address line.
    pub fn start<S: AsRef<OsStr>>(root: &Path, extra: &[S]) -> Server {
        let logdir = tempfile::Builder::new()
            .prefix("shelfd-log-")
            .tempdir()
            .expect("temp dir for the server log");
        let mut server = Server {
            child: None,
            addr: "127.0.0.1:0".parse().expect("placeholder address"),
            root: root.to_path_buf(),
            extra: extra.iter().map(|s| s.as_ref().to_os_string()).collect(),
            log: logdir.path().join("shelfd.log"),
            _logdir: logdir,
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
            .open(&self.log)
            .expect("server log file");
        let mut cmd = Command::new(shelfd_bin());
        cmd.arg(&self.root)
            .args(["--listen", listen, "--log-level", "debug"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group, so kill9 reaches the forked children too.
            .process_group(0);
        // What `unshare --mount --propagation private` does, plus dropping the copies of the
        // FUSE mounts that exist now (module docs, point 1). Done in the forked child so the
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
            let _ = tx.send(line);
            // Keep draining so a later write to stdout never meets a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx.recv_timeout(START_TIMEOUT);
        let addr = line
            .as_deref()
            .ok()
            .and_then(|l| l.trim_end().strip_prefix("listening on "))
            .and_then(|a| a.parse::<SocketAddr>().ok());
        match addr {
            Some(addr) => {
                self.addr = addr;
                self.child = Some(child);
                Ok(())
            }
            None => {
                signal(-(child.id() as i32), libc::SIGKILL);
                let _ = child.wait();
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
        read_log(&self.log)
    }

    /// Kills the parent and every connection process at once (SIGKILL to the process group)
    /// and reaps the parent.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(-(child.id() as i32), libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to 5 s for a clean exit, then kills the process group.
    /// Returns how the parent exited, if it did by itself.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pgid = -(child.id() as i32);
        signal(child.id() as i32, libc::SIGTERM);
        let status = wait_timeout(&mut child, Duration::from_secs(5));
        // Connection processes still finishing after the parent left are not wanted either.
        signal(pgid, libc::SIGKILL);
        if status.is_none() {
            let _ = child.wait();
        }
        status
    }

    /// Starts the server again on the same port (killing it first if it runs). Retries for
    /// up to 10 s while the port is still taken.
    pub fn restart(&mut self) {
        self.kill9();
        let listen = self.addr.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(&listen) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!(
                        "shelfd did not restart on {listen}: {e}\n--- log ---\n{}",
                        self.log()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub major: u32,
    pub minor: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

impl MountInfo {
    /// A shelf mount: `fuse.shelf`, or plain `fuse` with a `shelf#ADDR` source (what a mount
    /// made with mount(2) directly, without fusermount3, looks like).
    pub fn is_shelf(&self) -> bool {
        self.fstype == "fuse.shelf" || (self.fstype == "fuse" && self.source.starts_with("shelf"))
    }

    /// The FUSE connection's control directory, named after the device number.
    pub fn connection_dir(&self) -> PathBuf {
        let dev = (self.major << 20) | self.minor;
        PathBuf::from(format!("/sys/fs/fuse/connections/{dev}"))
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Every mount of this process's namespace.
pub fn mountinfo() -> Vec<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (major, minor) = l.get(2)?.split_once(':')?;
            Some(MountInfo {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mount_point: PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(l.get(4)?))),
                fstype: r.first()?.to_string(),
                source: String::from_utf8_lossy(&unescape_mountinfo(r.get(1)?)).into_owned(),
                options: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// The topmost mount at `dir` (canonical path), if any.
pub fn mount_at(dir: &Path) -> Option<MountInfo> {
    mountinfo().into_iter().rev().find(|m| m.mount_point == dir)
}

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
struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn arm(info: MountInfo, after: Duration) -> Watchdog {
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

/// A directory for a mount point, removed on drop only if nothing is mounted on it (a
/// recursive removal through a live mount would delete the library).
pub struct MountDir {
    path: PathBuf,
}

impl MountDir {
    pub fn new() -> MountDir {
        let dir = tempfile::Builder::new()
            .prefix("shelf-mnt-")
            .tempdir()
            .expect("temp mount dir")
            .keep();
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
    log: PathBuf,
    _watchdog: Watchdog,
    // Last: removed after the unmount in `drop`.
    dir: MountDir,
    _logdir: tempfile::TempDir,
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
        let logdir = tempfile::Builder::new()
            .prefix("shelf-mount-log-")
            .tempdir()
            .expect("temp dir for the mount log");
        let log = logdir.path().join("mount.log");
        let logf = std::fs::File::create(&log).expect("mount log file");
        let mut cmd = Command::new(shelf_bin());
        cmd.arg("mount")
            .arg(addr.to_string())
            .arg(dir.path())
            .arg("--foreground")
            .args(extra)
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
        let deadline = Instant::now() + START_TIMEOUT;
        let info = loop {
            if let Some(info) = mount_at(dir.path()).filter(MountInfo::is_shelf) {
                break info;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{desc} exited with {status} before mounting\n--- mount log ---\n{}",
                    read_log(&log)
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{desc}: no mount within {START_TIMEOUT:?}\n--- mount log ---\n{}",
                    read_log(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let watchdog = Watchdog::arm(info.clone(), watchdog);
        Ok(Mount {
            child: Some(child),
            info,
            log,
            _watchdog: watchdog,
            dir,
            _logdir: logdir,
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
        read_log(&self.log)
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
            if wait_timeout(&mut child, Duration::from_secs(3)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A library with its server and a mount
// ---------------------------------------------------------------------------------------------

/// A fresh temp library, a server for it, and one mount of it. Fields drop in order: the
/// mount first, then the server, then the library.
pub struct Fixture {
    pub mount: Mount,
    pub server: Server,
    pub lib: tempfile::TempDir,
}

impl Fixture {
    /// A fixture with default options, or `None` when FUSE tests are skipped
    /// (see [`fuse_available`]).
    pub fn new() -> Option<Fixture> {
        Fixture::with_args::<&str>(&[], &[])
    }

    /// A fixture whose server and mount get extra arguments.
    pub fn with_args<S: AsRef<OsStr>>(server_args: &[S], mount_args: &[S]) -> Option<Fixture> {
        if !fuse_available() {
            return None;
        }
        let lib = library();
        let server = Server::start(lib.path(), server_args);
        let mount = Mount::new(server.addr(), mount_args);
        Some(Fixture { mount, server, lib })
    }

    /// The library directory as the server sees it.
    pub fn lib(&self) -> &Path {
        self.lib.path()
    }

    /// The mount point.
    pub fn mnt(&self) -> &Path {
        self.mount.path()
    }

    /// Both logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- shelfd log ---\n{}\n--- mount log ---\n{}",
            self.server.log(),
            self.mount.log()
        )
    }
}

/// A fresh, empty temp directory to serve (canonical path).
pub fn library() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shelf-lib-")
        .tempdir()
        .expect("temp library")
}

// ---------------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------------

/// `len` bytes where byte k is k mod 251: a misplaced or shifted byte never matches.
pub fn ramp(len: usize) -> Vec<u8> {
    (0..len).map(|k| (k % 251) as u8).collect()
}

/// A small, seeded xorshift64* generator: reproducible test data without extra crates.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Builds a varied tree under `dir`: nested directories, empty files and directories, a
/// 3 MiB file (several chunks), ramp and random files, names with spaces and names that are
/// not UTF-8. Returns the relative paths of the files created.
pub fn make_tree(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut put = |rel: PathBuf, data: &[u8]| {
        let p = dir.join(&rel);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir -p");
        std::fs::write(&p, data).expect("write tree file");
        files.push(rel);
    };
    put("empty".into(), b"");
    put("small.txt".into(), b"hello, shelf\n");
    put("big.bin".into(), &random_bytes(3, 3 << 20));
    put("ramp.bin".into(), &ramp(1_000_003));
    put("with space/a file.txt".into(), b"spaces\n");
    put("a/b/c/deep.txt".into(), b"deep\n");
    put("a/b/empty-in-b".into(), b"");
    put("a/mid.bin".into(), &random_bytes(7, 70_000));
    let latin1 = PathBuf::from(OsStr::from_bytes(b"caf\xe9"));
    put(
        latin1.join(OsStr::from_bytes(b"na\xefve-\xff.bin")),
        &random_bytes(9, 4097),
    );
    put(
        PathBuf::from("unicode-\u{00e9}\u{4e2d}.txt"),
        b"utf-8 name\n",
    );
    std::fs::create_dir_all(dir.join("empty-dir")).expect("mkdir empty dir");
    std::fs::create_dir_all(dir.join("a/empty-nested")).expect("mkdir empty nested");
    files
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

/// Every shelf temporary or hidden file left in a library: names starting `.shelf-` anywhere
/// (put temporaries, hidden names kept in a file's own directory), and whatever the root's
/// `.shelf-hidden` directory still holds. That directory itself may stay; it is the mount's
/// place for open files that lost their name and is empty once they are closed.
pub fn shelf_leftovers(lib: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![lib.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let hidden_dir = dir == lib && name.as_bytes() == b".shelf-hidden";
            if name.as_bytes().starts_with(b".shelf-") && !hidden_dir {
                found.push(e.path());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    found.sort();
    found
}

/// Reads a whole file, failing the test with the path on error.
#[track_caller]
pub fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Writes a whole file, failing the test with the path on error.
#[track_caller]
pub fn write(path: impl AsRef<Path>, data: impl AsRef<[u8]>) {
    let path = path.as_ref();
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()))
}

/// Asserts two byte strings are equal, reporting the first differing offset and the lengths
/// instead of dumping megabytes.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: contents differ: got {} bytes, want {} bytes, first difference at {}",
        got.len(),
        want.len(),
        first.map_or("the end of the shorter".to_string(), |o| format!(
            "offset {o}"
        ))
    );
}

/// Reads a file fully through any reader (for files held open).
pub fn read_all(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_and_random_are_reproducible() {
        let r = ramp(600);
        assert_eq!(
            (r[0], r[250], r[251], r[599]),
            (0, 250, 0, (599 % 251) as u8)
        );
        assert_eq!(random_bytes(1, 100), random_bytes(1, 100));
        assert_ne!(random_bytes(1, 100), random_bytes(2, 100));
        let mut rng = Rng::new(5);
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), b"/tmp/a b");
        assert_eq!(
            unescape_mountinfo(r"shelf\043127.0.0.1:1"),
            b"shelf#127.0.0.1:1"
        );
        assert_eq!(unescape_mountinfo(r"x\0"), b"x\\0");
    }

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

    #[test]
    fn binaries_are_looked_up_beside_the_test_executable() {
        let dir = bin_dir();
        assert!(!dir.ends_with("deps"), "{}", dir.display());
    }
}
