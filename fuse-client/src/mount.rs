//! `shelf mount` and `shelf umount`: options, detaching, signals and unmounting.
//!
//! What is hard, and how it is handled:
//! 1. Detaching like sshfs, yet reporting failure: the process forks *before* any thread
//!    exists (forking a threaded process is unsafe); the child connects and mounts, then tells
//!    the waiting parent through a pipe. The parent exits 0 only once the mount answers
//!    (fuser's `Session::new` completes the kernel's INIT), so no caller sees a dead mount point.
//! 2. Unmounting on SIGINT/SIGTERM: the signals are blocked in every thread and taken by one
//!    thread with `sigwait`, which unmounts; the kernel then ends the session loop.
//! 3. `mount -t fuse.shelf` and fstab: mount(8) runs `mount.fuse.shelf ADDR DIR -o OPTS`;
//!    `helper_args` turns that into `shelf mount ADDR DIR -o OPTS` (the binary answers to
//!    that name through a symlink).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fuser::{MountOption, SessionACL};

use crate::fs::ShelfFs;
use shelf_core::{Core, CoreConfig};
use shelf_remote::{ConnectOptions, Pool};

/// How often a mount pings its idle connections.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(60);

/// Arguments of `shelf mount`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_long_help = "Examples:\n  shelf mount 127.0.0.1:7878 ~/library\n  \
    shelf mount --foreground --cache-size 1G server:7878 /mnt/library\n  \
    shelf mount server:7878 /mnt/library -o allow_other,read_only\n\n\
    With mount(8) or /etc/fstab (needs /sbin/mount.fuse.shelf, see the README):\n  \
    mount -t fuse.shelf 127.0.0.1:7878 /mnt/library\n  \
    127.0.0.1:7878  /mnt/library  fuse.shelf  defaults,_netdev  0  0"
)]
pub struct MountArgs {
    /// Server address, HOST:PORT.
    pub addr: String,
    /// Where to mount the library (an existing directory).
    pub mountpoint: PathBuf,
    /// Stay in the foreground instead of detaching; Ctrl-C unmounts.
    #[arg(short, long)]
    pub foreground: bool,
    /// Bytes of file data to cache in memory (e.g. 256M, 1G).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Size of the cached and fetched chunks (e.g. 1M); at most the server's max I/O.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// TCP connections to the server; each is served by its own server process.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// How long attributes and names are trusted without asking the server (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub attr_ttl: Duration,
    /// Refuse every change with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Mount options, comma-separated: allow_other, allow_root, ro, and the options above
    /// as key=value (cache_size=1G, connections=8, attr_ttl=2s, token_file=PATH).
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
}

/// Arguments of `shelf umount`.
#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// The mount point to unmount.
    pub mountpoint: PathBuf,
}

/// Everything a mount needs, checked before any work starts.
#[derive(Debug, Clone)]
struct MountPlan {
    addr: String,
    mountpoint: PathBuf,
    foreground: bool,
    connections: u32,
    token: Option<Vec<u8>>,
    core: CoreConfig,
    fuse_options: Vec<MountOption>,
    acl: SessionACL,
}

fn plan(args: MountArgs, token: Option<Vec<u8>>) -> anyhow::Result<MountPlan> {
    let mut a = args;
    let mut token = token;
    let mut acl = SessionACL::Owner;
    let mut fuse_options = Vec::new();
    for opt in std::mem::take(&mut a.options) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (opt.trim(), None),
        };
        let need = |v: Option<&'_ str>| -> anyhow::Result<String> {
            v.map(str::to_owned)
                .with_context(|| format!("mount option {key} needs a value"))
        };
        match key {
            ""
            | "rw"
            | "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "_netdev"
            | "nofail"
            | "default_permissions"
            | "relatime" => {}
            k if k.starts_with("x-") || k.starts_with("comment") => {}
            "ro" | "read_only" => a.read_only = true,
            "allow_other" => acl = SessionACL::All,
            "allow_root" => acl = SessionACL::RootAndOwner,
            "noexec" => fuse_options.push(MountOption::NoExec),
            "exec" => fuse_options.push(MountOption::Exec),
            "nosuid" => fuse_options.push(MountOption::NoSuid),
            "nodev" => fuse_options.push(MountOption::NoDev),
            "noatime" => fuse_options.push(MountOption::NoAtime),
            "cache_size" => a.cache_size = parse_size(&need(value)?).map_err(anyhow::Error::msg)?,
            "chunk_size" => a.chunk_size = parse_size(&need(value)?).map_err(anyhow::Error::msg)?,
            "connections" => a.connections = need(value)?.parse().context("connections")?,
            "attr_ttl" => a.attr_ttl = parse_duration(&need(value)?).map_err(anyhow::Error::msg)?,
            "token_file" => token = Some(read_token(Path::new(&need(value)?))?),
            other => bail!("unknown mount option {other:?} (see shelf mount --help)"),
        }
    }
    if !(4096..=(4 << 20)).contains(&a.chunk_size) || !a.chunk_size.is_power_of_two() {
        bail!(
            "chunk size must be a power of two from 4K to 4M, not {}",
            a.chunk_size
        );
    }
    if !(1..=64).contains(&a.connections) {
        bail!("connections must be from 1 to 64");
    }
    let meta = std::fs::metadata(&a.mountpoint)
        .with_context(|| format!("mount point {}", a.mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", a.mountpoint.display());
    }
    let mountpoint = std::fs::canonicalize(&a.mountpoint)?;
    fuse_options.push(MountOption::FSName(format!("shelf#{}", a.addr)));
    fuse_options.push(MountOption::Subtype("shelf".into()));
    // The kernel checks permission bits against the presented owner (the mounting user).
    fuse_options.push(MountOption::DefaultPermissions);
    fuse_options.push(if a.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Ok(MountPlan {
        addr: a.addr,
        mountpoint,
        foreground: a.foreground,
        connections: a.connections,
        token,
        core: CoreConfig {
            attr_ttl: a.attr_ttl,
            chunk_size: a.chunk_size as u32,
            cache_bytes: a.cache_size,
            uid,
            gid,
            read_only: a.read_only,
            ..CoreConfig::default()
        },
        fuse_options,
        acl,
    })
}

/// Runs `shelf mount`. Returns once the mount is up (detached) or unmounted (foreground).
pub fn run_mount(args: MountArgs, token: Option<Vec<u8>>) -> anyhow::Result<()> {
    let plan = plan(args, token)?;
    if plan.foreground {
        return serve(&plan, Ready(None));
    }
    let (read_end, write_end) = pipe()?;
    // SAFETY: no thread has been started yet in this process (argument parsing and the plan
    // above are single-threaded), so the child may run arbitrary code after fork.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory effects; failure (already a leader) is harmless.
            unsafe { libc::setsid() };
            let ready = Ready(Some(std::fs::File::from(write_end)));
            // An error has already been told to the parent, which prints it.
            let code = i32::from(serve(&plan, ready).is_err());
            std::process::exit(code)
        }
        _child => {
            drop(write_end);
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
    }
}

/// The pipe to a waiting parent (detached mode), closed as soon as it has heard the outcome,
/// which ends the parent's read.
struct Ready(Option<std::fs::File>);

impl Ready {
    fn tell(&mut self, msg: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(msg.as_bytes());
        }
    }
}

/// Connects, mounts and serves the kernel until unmounted. A waiting parent hears "ok" once the
/// mount answers (or the error); then standard streams are detached from the terminal.
fn serve(plan: &MountPlan, mut ready: Ready) -> anyhow::Result<()> {
    let detached = ready.0.is_some();
    let session = match mount(plan) {
        Ok(s) => s,
        Err(e) => {
            ready.tell(&format!("{e:#}"));
            return Err(e);
        }
    };
    ready.tell("ok");
    if detached {
        detach_stdio();
    }
    tracing::info!("mounted {} on {}", plan.addr, plan.mountpoint.display());
    let ran = session.run();
    crate::status::remove_socket(&plan.mountpoint);
    match ran {
        // After a lazy unmount the kernel may end the session with ECONNABORTED rather than
        // ENODEV once the last open file closes; with the mount gone that is a normal end.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted && !still_mounted(plan) => {
            Ok(())
        }
        other => other.context("FUSE session"),
    }
}

/// Connects the pool and mounts; the kernel's INIT is answered when this returns.
fn mount(plan: &MountPlan) -> anyhow::Result<fuser::Session<ShelfFs<Pool>>> {
    let signals = block_signals()?;
    // Chunks, frames and FUSE buffers are hundreds of KiB to a few MiB. A fixed low mmap
    // threshold (it bounded memory) mapped and faulted in every chunk afresh; from the heap,
    // same run: cold 1 GiB read 3.6-5.0 s -> 1.9-2.1 s, mount CPU 4.2-5.4 s -> 1.6-2.0 s, peak
    // memory 273 -> 285 MiB (10 GiB stream: 296 MiB) with a 256 MiB cache.
    crate::heap::keep_large_buffers_in_heap();
    let opts = ConnectOptions {
        addr: plan.addr.clone(),
        token: plan.token.clone(),
        agent: format!("shelf-mount/{}", env!("CARGO_PKG_VERSION")),
        ..ConnectOptions::default()
    };
    let pool = Pool::connect(opts, plan.connections as usize)
        .with_context(|| format!("mount {}", plan.addr))?;
    let core = Arc::new(Core::new(pool, plan.core.clone()));
    let mut config = fuser::Config::default();
    config.mount_options = plan.fuse_options.clone();
    config.acl = plan.acl;
    config.n_threads = Some((plan.connections as usize * 4).clamp(8, 32));
    config.clone_fd = true;
    let fs = ShelfFs::new(Arc::clone(&core));
    let what = || format!("mount {} on {}", plan.addr, plan.mountpoint.display());
    // SAFETY: geteuid has no side effects.
    let session = if unsafe { libc::geteuid() } == 0 {
        // fuser's own mount(2) path always says type "fuse"; mounting ourselves gives the
        // "fuse.shelf" that findmnt, df -t and the mount.fuse conventions expect.
        let fd = mount_as_root(plan).with_context(what)?;
        fuser::Session::from_fd(fs, fd, plan.acl, config).with_context(what)?
    } else {
        // fusermount3 (setuid) mounts for other users, subtype included.
        fuser::Session::new(fs, &plan.mountpoint, &config).with_context(what)?
    };
    // Well inside the server's default idle timeout (300 s).
    let keepalive = Arc::clone(&core);
    std::thread::Builder::new()
        .name("shelf-keepalive".into())
        .spawn(move || loop {
            std::thread::sleep(KEEPALIVE_EVERY);
            keepalive.transport().keepalive();
        })?;
    let notifier = session.notifier();
    let (stale_tx, stale_rx) = std::sync::mpsc::channel::<u64>();
    core.set_page_invalidator(Box::new(move |ino| {
        let _ = stale_tx.send(ino.0);
    }));
    std::thread::Builder::new()
        .name("shelf-invalidate".into())
        .spawn(move || {
            for ino in stale_rx {
                // Offset 0, length 0: every page of the inode (and its cached attributes).
                if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino), 0, 0) {
                    tracing::debug!("invalidating inode {ino}: {e}");
                }
            }
        })?;
    crate::status::serve(core, plan.mountpoint.clone());
    let mountpoint = plan.mountpoint.clone();
    std::thread::Builder::new()
        .name("shelf-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `signals` is a valid, initialised sigset; sigwait writes only to `sig`.
            if unsafe { libc::sigwait(&signals, &mut sig) } == 0 {
                tracing::info!("signal {sig}: unmounting");
                if let Err(e) = unmount(&mountpoint) {
                    tracing::warn!("unmount on signal failed: {e:#}");
                }
            }
        })?;
    Ok(session)
}

/// Mounts /dev/fuse on the mount point with mount(2), as fusermount3 does for root.
fn mount_as_root(plan: &MountPlan) -> anyhow::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .context("opening /dev/fuse (is the fuse module loaded?)")?;
    let fd = OwnedFd::from(dev);
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        libc::S_IFDIR,
        plan.core.uid,
        plan.core.gid,
    );
    if plan.acl != SessionACL::Owner {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    for opt in &plan.fuse_options {
        match opt {
            MountOption::RO => flags |= libc::MS_RDONLY,
            MountOption::NoExec => flags |= libc::MS_NOEXEC,
            MountOption::NoAtime => flags |= libc::MS_NOATIME,
            _ => {}
        }
    }
    let source = CString::new(format!("shelf#{}", plan.addr)).context("address contains NUL")?;
    let target = CString::new(plan.mountpoint.as_os_str().as_bytes()).context("NUL in path")?;
    let fstype = CString::new("fuse.shelf").expect("no NUL in literal");
    let data = CString::new(data).expect("options have no NUL");
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("mount(2)");
    }
    Ok(fd)
}

fn still_mounted(plan: &MountPlan) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").map_or(true, |info| {
        crate::status::shelf_mounts(&info)
            .iter()
            .any(|m| m.mountpoint == plan.mountpoint)
    })
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts later, and
/// returns the set for `sigwait`.
fn block_signals() -> anyhow::Result<libc::sigset_t> {
    // SAFETY: the sigset is initialised by sigemptyset before use; pthread_sigmask only
    // changes this thread's mask.
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
        Ok(set)
    }
}

fn detach_stdio() {
    let devnull = CString::new("/dev/null").expect("no NUL in literal");
    // SAFETY: plain fd syscalls on a path we own; on failure the old streams stay.
    unsafe {
        let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs `shelf umount`: a normal unmount, then a lazy one if the mount is busy or its
/// server is gone, so a mount point never stays wedged.
pub fn run_umount(args: UmountArgs) -> anyhow::Result<()> {
    unmount(&args.mountpoint)
}

fn unmount(mp: &Path) -> anyhow::Result<()> {
    let cpath = CString::new(mp.as_os_str().as_bytes()).context("mount point contains NUL")?;
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } == 0 {
        // SAFETY: cpath is a valid C string for the duration of the calls.
        if unsafe { libc::umount2(cpath.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let first = std::io::Error::last_os_error();
        if first.raw_os_error() == Some(libc::EINVAL) || first.raw_os_error() == Some(libc::ENOENT)
        {
            bail!("umount {}: not mounted", mp.display());
        }
        // SAFETY: as above.
        if unsafe { libc::umount2(cpath.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
        return Err(first).with_context(|| format!("umount {}", mp.display()));
    }
    for args in [&["-u"][..], &["-u", "-z"][..]] {
        let out = Command::new("fusermount3").args(args).arg(mp).output();
        match out {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) if args.len() == 2 => bail!(
                "umount {}: {}",
                mp.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Ok(_) => {}
            Err(e) => return Err(e).context("running fusermount3 (is fuse3 installed?)"),
        }
    }
    Ok(())
}

/// The arguments of `shelf mount` for a call as mount(8)'s helper:
/// `mount.fuse.shelf ADDR DIR [-sfnv] [-o OPTS] [-t TYPE]`.
pub fn helper_args(args: &[std::ffi::OsString]) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = vec!["shelf".into(), "mount".into()];
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                if let Some(v) = it.next() {
                    out.push("-o".into());
                    out.push(v.clone());
                }
            }
            Some("-t") | Some("-N") => {
                it.next();
            }
            Some(flag) if flag.starts_with('-') && flag.len() > 1 => {} // -s -f -n -v: sloppy, fake, no mtab, verbose
            _ => out.push(a.clone()),
        }
    }
    out
}

/// Reads a token file; the secret is its content less a trailing newline.
pub fn read_token(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut t = std::fs::read(path).with_context(|| format!("token file {}", path.display()))?;
    while t.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        t.pop();
    }
    if t.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(t)
}

/// Parses `256M`, `1G`, `4096`, `64k` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].trim().to_ascii_lowercase();
            let m = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G)")),
            };
            (&s[..i], m)
        }
    };
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

/// Parses `1s`, `500ms`, `2m`, `0`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("unknown duration unit in {s:?} (use ms, s, m)")),
    };
    if !(0.0..=86400.0).contains(&secs) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("9999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1 fortnight").is_err());
    }

    #[test]
    fn helper_args_become_a_mount_command() {
        let args: Vec<std::ffi::OsString> = [
            "mount.fuse.shelf",
            "127.0.0.1:7878",
            "/mnt/x",
            "-n",
            "-o",
            "rw,allow_other",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let got: Vec<String> = helper_args(&args)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            got,
            [
                "shelf",
                "mount",
                "127.0.0.1:7878",
                "/mnt/x",
                "-o",
                "rw,allow_other"
            ]
        );
    }

    fn args(options: &[&str]) -> MountArgs {
        MountArgs {
            addr: "127.0.0.1:1".into(),
            mountpoint: std::env::temp_dir(),
            foreground: true,
            cache_size: 256 << 20,
            chunk_size: 1 << 20,
            connections: 4,
            attr_ttl: Duration::from_secs(1),
            read_only: false,
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn options_override_flags_and_unknown_ones_fail() {
        let p = plan(
            args(&["ro", "cache_size=1G", "connections=2", "_netdev"]),
            None,
        )
        .expect("valid options");
        assert!(p.core.read_only);
        assert_eq!(p.core.cache_bytes, 1 << 30);
        assert_eq!(p.connections, 2);
        let err = plan(args(&["bogus"]), None).expect_err("unknown option");
        assert!(err.to_string().contains("bogus"));
        assert!(plan(args(&["chunk_size=3000"]), None).is_err());
    }
}
