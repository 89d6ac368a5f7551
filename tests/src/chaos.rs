//! The chaos run (issue #14): two mounts and CLI clients write, rename and delete while the
//! server is killed and restarted, its connection processes are killed, connections are
//! stalled and cut, and the library's disk fills up; a checker knows every acknowledged write.
//!
//! Used by `scripts/chaos.sh` (through the `shelf-chaos` binary, an hour by default) and by the
//! `chaos` suite (a minute). What is checked:
//! - **every acknowledged byte is on the server**: a file whose last change was acknowledged
//!   (a `close` or `fsync` through a mount that returned success, a `shelf put`/`mv`/`rm` that
//!   exited 0) holds exactly that, or is gone exactly when its removal was acknowledged;
//! - **no file holds a mix of two versions**: a file whose last change failed holds its last
//!   acknowledged version, or bytes of one single failed attempt (each byte that attempt's or
//!   zero, for a write through a mount that stopped part way; a whole version for a CLI put,
//!   which is atomic), or nothing if a failed removal may have happened;
//! - **every failure is an error code, never wrong data**: reads during the run meet the same
//!   rule, and each failure is counted by its errno;
//! - **no mount hangs**: every worker reports progress; one that makes none for
//!   [`HANG_AFTER`] is a hang (the mount's own watchdog then aborts it, so the run still ends).
//!
//! Each worker owns one directory, so what its files must hold depends only on its own
//! operations, in order. Content is derived from (worker, generation) with a header naming
//! them (`loadgen::content`), so every version is told from every other.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::loadgen::{content, run_bounded};
use crate::proxy::Proxy;
use crate::{children_of, shelf_bin, signal, Mount, Rng, Server, Tmpfs};

/// A worker that has not finished an operation for this long is hung.
pub const HANG_AFTER: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub duration: Duration,
    pub workers_per_mount: usize,
    pub cli_workers: usize,
    /// Size of the library's tmpfs, which the disk-full fault fills.
    pub disk_mib: u64,
    /// Mean pause between faults.
    pub fault_every: Duration,
    pub seed: u64,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            duration: Duration::from_secs(60),
            workers_per_mount: 2,
            cli_workers: 3,
            disk_mib: 256,
            fault_every: Duration::from_secs(2),
            seed: 1,
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// Operations that succeeded, by kind.
    pub ok: BTreeMap<&'static str, u64>,
    /// Operations that failed with an error, by errno name (or the CLI's exit).
    pub errors: BTreeMap<String, u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Broken promises: wrong data, lost acknowledged writes, mixes, hangs. Must be empty.
    pub violations: Vec<String>,
    pub bytes_checked: u64,
    pub files_checked: u64,
    pub elapsed: Duration,
}

impl ChaosReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "chaos: {:.0} s, {} operations ok, {} failed with an error, {} faults injected, \
             {} files and {} bytes checked, {} violations\n",
            self.elapsed.as_secs_f64(),
            self.ok.values().sum::<u64>(),
            self.errors.values().sum::<u64>(),
            self.faults.values().sum::<u64>(),
            self.files_checked,
            self.bytes_checked,
            self.violations.len()
        );
        s += &format!("  ok:     {:?}\n", self.ok);
        s += &format!("  errors: {:?}\n", self.errors);
        s += &format!("  faults: {:?}\n", self.faults);
        for v in self.violations.iter().take(20) {
            s += &format!("  VIOLATION: {v}\n");
        }
        s
    }

    fn merge(&mut self, o: ChaosReport) {
        for (k, v) in o.ok {
            *self.ok.entry(k).or_default() += v;
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in o.faults {
            *self.faults.entry(k).or_default() += v;
        }
        self.violations.extend(o.violations);
        self.bytes_checked += o.bytes_checked;
        self.files_checked += o.files_checked;
    }
}

/// What a name in a worker's directory may hold.
#[derive(Debug, Clone, Default)]
struct Want {
    /// The last acknowledged state: `None` is "absent".
    acked: Option<(u64, usize)>,
    /// Attempts after it that failed: (generation, length, atomic). Empty when certain.
    failed: Vec<(u64, usize, bool)>,
    /// A failed removal or rename may have taken the name away.
    may_be_absent: bool,
}

impl Want {
    fn certain(state: Option<(u64, usize)>) -> Want {
        Want {
            acked: state,
            ..Want::default()
        }
    }

    /// Checks what the name holds (`None`: absent). `Err` says what is wrong.
    fn check(&self, worker: &str, got: Option<&[u8]>) -> Result<(), String> {
        let Some(bytes) = got else {
            return if self.acked.is_none() || self.may_be_absent {
                Ok(())
            } else {
                Err(format!("absent, but {:?} was acknowledged", self.acked))
            };
        };
        if let Some((g, len)) = self.acked {
            if bytes == content(worker, "v", g, len).as_slice() {
                return Ok(());
            }
        }
        for &(g, len, atomic) in &self.failed {
            let want = content(worker, "v", g, len);
            let fits = if atomic {
                bytes == want.as_slice()
            } else {
                bytes.len() <= want.len() && bytes.iter().zip(&want).all(|(b, w)| b == w || *b == 0)
            };
            if fits {
                return Ok(());
            }
        }
        Err(format!(
            "{} bytes, header {:?}: not acknowledged {:?} nor one of the failed attempts {:?}",
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(24)]),
            self.acked,
            self.failed
        ))
    }
}

fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EIO) => "EIO".into(),
        Some(libc::ENOSPC) => "ENOSPC".into(),
        Some(libc::ENOTCONN) => "ENOTCONN".into(),
        Some(libc::ESTALE) => "ESTALE".into(),
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::EINTR) => "EINTR".into(),
        Some(n) => format!("errno {n}"),
        None => format!("{e}"),
    }
}

struct Shared {
    stop: AtomicBool,
    /// Per worker: milliseconds since the start at its last finished operation.
    progress: Vec<AtomicU64>,
    started: Instant,
}

impl Shared {
    fn tick(&self, i: usize) {
        self.progress[i].store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// A worker's name, its directory on the server's side, and what each name there must hold:
/// the final check's input.
type Model = (String, PathBuf, BTreeMap<String, Want>);

/// Runs the chaos: sets up a server on a tmpfs library, a fault proxy, two mounts through it,
/// the workers and the fault injector, then checks the library. Cleans everything up.
pub fn run(cfg: &ChaosConfig) -> ChaosReport {
    let disk = Tmpfs::new(&format!("{}m", cfg.disk_mib));
    let lib = disk.path().join("lib");
    std::fs::create_dir(&lib).expect("library dir");
    let mut server = Server::start(&lib, &[] as &[&str]);
    let fp = server.fingerprint().expect("TLS").to_owned();
    let proxy = Proxy::start(server.addr());
    let via = proxy.addr().to_string();
    let watchdog = cfg.duration + Duration::from_secs(300);
    let mounts: Vec<Mount> = (0..2)
        .map(|_| {
            Mount::try_new_with_watchdog(&via, &["-o", &format!("fingerprint={fp}")], watchdog)
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let scratch = tempfile::Builder::new()
        .prefix("shelf-chaos-local-")
        .tempdir()
        .expect("scratch");
    let workers = mounts.len() * cfg.workers_per_mount + cfg.cli_workers;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        progress: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        started: Instant::now(),
    });
    let deadline = Instant::now() + cfg.duration;
    let total = Mutex::new(ChaosReport::default());
    let models: Mutex<Vec<Model>> = Mutex::new(Vec::new());

    std::thread::scope(|s| {
        let mut idx = 0;
        for (m, mount) in mounts.iter().enumerate() {
            for w in 0..cfg.workers_per_mount {
                let (i, shared, total, models) = (idx, &shared, &total, &models);
                idx += 1;
                let me = format!("m{m}w{w}");
                let dir = mount.path().join(&me);
                let server_dir = lib.join(&me);
                let seed = cfg.seed ^ ((i as u64) << 32);
                s.spawn(move || {
                    let (r, model) = mount_worker(&me, &dir, seed, deadline, shared, i);
                    total.lock().unwrap_or_else(|e| e.into_inner()).merge(r);
                    models
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((me, server_dir, model));
                });
            }
        }
        for c in 0..cfg.cli_workers {
            let (i, shared, total, models) = (idx, &shared, &total, &models);
            idx += 1;
            let me = format!("c{c}");
            let server_dir = lib.join(&me);
            let local = scratch.path().join(&me);
            let (via, fp) = (&via, &fp);
            let seed = cfg.seed ^ ((i as u64) << 32);
            s.spawn(move || {
                let (r, model) = cli_worker(&me, via, fp, &local, seed, deadline, shared, i);
                total.lock().unwrap_or_else(|e| e.into_inner()).merge(r);
                models
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((me, server_dir, model));
            });
        }
        // The fault injector and the hang watch run here, on the scope's own thread.
        let mut faults = ChaosReport::default();
        let mut rng = Rng::new(cfg.seed ^ 0xfa17);
        let mut hung = vec![false; workers];
        while Instant::now() < deadline {
            let pause = cfg
                .fault_every
                .mul_f64(0.5 + rng.below(1000) as f64 / 1000.0);
            std::thread::sleep(pause);
            let now_ms = shared.started.elapsed().as_millis() as u64;
            for (i, p) in shared.progress.iter().enumerate() {
                let last = p.load(Ordering::Relaxed);
                if !hung[i] && now_ms.saturating_sub(last) > HANG_AFTER.as_millis() as u64 {
                    hung[i] = true;
                    faults.violations.push(format!(
                        "worker {i} made no progress for {:?}: a hang",
                        HANG_AFTER
                    ));
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            let kind = match rng.below(5) {
                0 => {
                    server.restart();
                    "server killed and restarted"
                }
                1 => {
                    let kids = server.pid().map(children_of).unwrap_or_default();
                    if kids.is_empty() {
                        continue;
                    }
                    let (pid, _) = kids[rng.below(kids.len() as u64) as usize];
                    signal(pid as i32, libc::SIGKILL);
                    "connection process killed"
                }
                2 => {
                    proxy.stall();
                    std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
                    proxy.resume();
                    "connections stalled"
                }
                3 => {
                    proxy.cut_all();
                    "connections cut"
                }
                _ => {
                    fill_disk(&lib, Duration::from_millis(500 + rng.below(1500)));
                    "disk filled"
                }
            };
            *faults.faults.entry(kind).or_default() += 1;
        }
        shared.stop.store(true, Ordering::Relaxed);
        total
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(faults);
    });

    // Every worker is done; nothing is in flight. What the server holds is final.
    let mut report = total.into_inner().unwrap_or_else(|e| e.into_inner());
    for (me, dir, model) in models.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let on_disk: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        (name, std::fs::read(e.path()).unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (name, want) in &model {
            report.files_checked += 1;
            let got = on_disk.get(name).map(Vec::as_slice);
            report.bytes_checked += got.map_or(0, |b| b.len() as u64);
            if let Err(e) = want.check(&me, got) {
                report
                    .violations
                    .push(format!("at the end, {me}/{name}: {e}"));
            }
        }
        for name in on_disk.keys() {
            // Put temporaries and kept files are the server's and the mount's own names.
            if !model.contains_key(name) && !name.starts_with(".shelf-") {
                report
                    .violations
                    .push(format!("at the end, {me}/{name}: a file nobody made"));
            }
        }
    }
    report.elapsed = shared.started.elapsed();
    drop(mounts);
    drop(proxy);
    drop(server);
    report
}

/// Fills the library's disk for `hold`, then frees it.
fn fill_disk(lib: &Path, hold: Duration) {
    let path = lib.join("..").join("filler");
    if let Ok(mut f) = std::fs::File::create(&path) {
        let block = vec![0xf1u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        std::thread::sleep(hold);
    }
    let _ = std::fs::remove_file(&path);
}

/// One worker on a mount. Returns what it saw and what its directory must hold.
fn mount_worker(
    me: &str,
    dir: &Path,
    seed: u64,
    deadline: Instant,
    shared: &Shared,
    i: usize,
) -> (ChaosReport, BTreeMap<String, Want>) {
    let mut r = ChaosReport::default();
    let mut model: BTreeMap<String, Want> = BTreeMap::new();
    let mut rng = Rng::new(seed);
    let mut generation = 0u64;
    // The directory itself, tried until it exists (a fault may refuse the first tries).
    while std::fs::create_dir_all(dir).is_err() {
        if Instant::now() > deadline {
            return (r, model);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let fail = |r: &mut ChaosReport, e: &std::io::Error| {
        *r.errors.entry(errno_name(e)).or_default() += 1;
    };
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        let name = format!("f{}", rng.below(5));
        let roll = rng.below(100);
        if roll < 45 || !model.contains_key(&name) {
            generation += 1;
            let len = 1 + rng.below(512 << 10) as usize;
            let data = content(me, "v", generation, len);
            let fsync = rng.below(2) == 0;
            let wrote = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(dir.join(&name))
                .and_then(|mut f| {
                    f.write_all(&data)?;
                    if fsync {
                        f.sync_all()?;
                    }
                    // close() is where a write through the mount is acknowledged: drop would
                    // hide its error, so flush through a duplicate and close explicitly.
                    close_checked(f)
                });
            let want = model.entry(name).or_default();
            match wrote {
                Ok(()) => {
                    *want = Want::certain(Some((generation, len)));
                    *r.ok.entry("write").or_default() += 1;
                }
                Err(e) => {
                    want.failed.push((generation, len, false));
                    fail(&mut r, &e);
                }
            }
        } else if roll < 75 {
            let want = &model[&name];
            match std::fs::read(dir.join(&name)) {
                Ok(bytes) => {
                    r.bytes_checked += bytes.len() as u64;
                    if let Err(e) = want.check(me, Some(&bytes)) {
                        r.violations
                            .push(format!("read of {me}/{name} during the run: {e}"));
                    }
                    *r.ok.entry("read").or_default() += 1;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    found_absent(&mut r, want, me, &format!("read of {me}/{name}"), "read");
                }
                Err(e) => fail(&mut r, &e),
            }
        } else if roll < 90 {
            let to = format!("f{}", rng.below(5));
            if to == name {
                continue;
            }
            let from_want = model.get(&name).cloned().unwrap_or_default();
            match std::fs::rename(dir.join(&name), dir.join(&to)) {
                // Nothing to move: right when the name may be absent, a loss when it may not.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let what = format!("rename of {me}/{name}");
                    found_absent(&mut r, &from_want, me, &what, "rename of an absent name");
                }
                Ok(()) => {
                    renamed(&mut model, name, to);
                    *r.ok.entry("rename").or_default() += 1;
                }
                Err(e) => {
                    rename_unknown(&mut model, &name, &to);
                    fail(&mut r, &e);
                }
            }
        } else {
            match std::fs::remove_file(dir.join(&name)) {
                Ok(()) => {
                    model.insert(name, Want::certain(None));
                    *r.ok.entry("unlink").or_default() += 1;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let what = format!("unlink of {me}/{name}");
                    found_absent(&mut r, &model[&name], me, &what, "unlink of an absent name");
                    model.insert(name, Want::certain(None));
                }
                Err(e) => {
                    model.entry(name).or_default().may_be_absent = true;
                    fail(&mut r, &e);
                }
            }
        }
        shared.tick(i);
    }
    (r, model)
}

/// An operation found `name` absent: right when the model allows it, a loss when not.
fn found_absent(r: &mut ChaosReport, want: &Want, me: &str, what: &str, kind: &'static str) {
    if let Err(v) = want.check(me, None) {
        r.violations.push(format!("{what}: absent, but {v}"));
    }
    *r.ok.entry(kind).or_default() += 1;
}

/// An acknowledged rename: `to` holds what `from` held, `from` is gone.
fn renamed(model: &mut BTreeMap<String, Want>, from: String, to: String) {
    let moved = model.remove(&from).unwrap_or_default();
    model.insert(from, Want::certain(None));
    model.insert(to, moved);
}

/// A rename that failed may or may not have happened: either name may hold either state.
fn rename_unknown(model: &mut BTreeMap<String, Want>, from: &str, to: &str) {
    let a = model.get(from).cloned().unwrap_or_default();
    let b = model.get(to).cloned().unwrap_or_default();
    for n in [from, to] {
        model.insert(n.to_owned(), merge_uncertain(&a, &b));
    }
}

/// Either of two uncertain states, or absent.
fn merge_uncertain(a: &Want, b: &Want) -> Want {
    let mut failed = Vec::new();
    for w in [a, b] {
        if let Some((g, len)) = w.acked {
            failed.push((g, len, true));
        }
        failed.extend(w.failed.iter().copied());
    }
    Want {
        acked: None,
        failed,
        may_be_absent: true,
    }
}

/// Closes `f` and returns close's error (dropping a `File` discards it).
fn close_checked(f: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: we own `fd` (taken from the File) and close it exactly once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One CLI worker: `shelf put/get/mv/rm` processes through the proxy.
#[allow(clippy::too_many_arguments)]
fn cli_worker(
    me: &str,
    via: &str,
    fp: &str,
    local: &Path,
    seed: u64,
    deadline: Instant,
    shared: &Shared,
    i: usize,
) -> (ChaosReport, BTreeMap<String, Want>) {
    let mut r = ChaosReport::default();
    let mut model: BTreeMap<String, Want> = BTreeMap::new();
    let mut rng = Rng::new(seed);
    let mut generation = 0u64;
    std::fs::create_dir_all(local).expect("local dir");
    let shelf = |args: &[&str]| -> Result<(), String> {
        let mut cmd = std::process::Command::new(shelf_bin());
        cmd.args(["--fingerprint", fp, "--busy-wait", "10s", "-q"])
            .args(args)
            .stdin(std::process::Stdio::null());
        // A command that hangs is killed and counted as a hang, never waited on for ever.
        let out = run_bounded(cmd, HANG_AFTER)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    };
    let dir = me.to_owned();
    while shelf(&["mkdir", "-p", via, &dir]).is_err() {
        if Instant::now() > deadline {
            return (r, model);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let fail = |r: &mut ChaosReport, e: &str| {
        if e.starts_with("hung") {
            r.violations.push(format!("a shelf command of {me}: {e}"));
            return;
        }
        // The message's last words name the cause; count by a short form of it.
        let short: String = e
            .rsplit(": ")
            .next()
            .unwrap_or(e)
            .chars()
            .take(40)
            .collect();
        *r.errors.entry(format!("cli: {short}")).or_default() += 1;
    };
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        let name = format!("f{}", rng.below(4));
        let remote = format!("{dir}/{name}");
        let roll = rng.below(100);
        if roll < 45 || !model.contains_key(&name) {
            generation += 1;
            let len = 1 + rng.below(256 << 10) as usize;
            let src = local.join("up");
            std::fs::write(&src, content(me, "v", generation, len)).expect("local write");
            let res = shelf(&["put", via, &src.to_string_lossy(), &remote]);
            let want = model.entry(name).or_default();
            match res {
                Ok(()) => {
                    *want = Want::certain(Some((generation, len)));
                    *r.ok.entry("put").or_default() += 1;
                }
                Err(e) => {
                    want.failed.push((generation, len, true));
                    fail(&mut r, &e);
                }
            }
        } else if roll < 75 {
            let dst = local.join("down");
            let _ = std::fs::remove_file(&dst);
            match shelf(&["get", via, &remote, &dst.to_string_lossy()]) {
                Ok(()) => {
                    let bytes = std::fs::read(&dst).unwrap_or_default();
                    r.bytes_checked += bytes.len() as u64;
                    if let Err(e) = model[&name].check(me, Some(&bytes)) {
                        r.violations
                            .push(format!("shelf get {remote} during the run: {e}"));
                    }
                    *r.ok.entry("get").or_default() += 1;
                }
                Err(e) => fail(&mut r, &e),
            }
        } else if roll < 90 {
            let to = format!("f{}", rng.below(4));
            if to == name {
                continue;
            }
            match shelf(&["mv", via, &remote, &format!("{dir}/{to}")]) {
                Err(e) if e.contains("no such file or directory") => {
                    let what = format!("shelf mv {remote}");
                    found_absent(&mut r, &model[&name], me, &what, "mv of an absent name");
                }
                Ok(()) => {
                    renamed(&mut model, name, to);
                    *r.ok.entry("mv").or_default() += 1;
                }
                Err(e) => {
                    rename_unknown(&mut model, &name, &to);
                    fail(&mut r, &e);
                }
            }
        } else {
            match shelf(&["rm", via, &remote]) {
                Err(e) if e.contains("no such file or directory") => {
                    let what = format!("shelf rm {remote}");
                    found_absent(&mut r, &model[&name], me, &what, "rm of an absent name");
                    model.insert(name, Want::certain(None));
                }
                Ok(()) => {
                    model.insert(name, Want::certain(None));
                    *r.ok.entry("rm").or_default() += 1;
                }
                Err(e) => {
                    model.entry(name).or_default().may_be_absent = true;
                    fail(&mut r, &e);
                }
            }
        }
        shared.tick(i);
    }
    (r, model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_accepts_what_may_be_and_refuses_a_mix_or_a_loss() {
        let w = "m0w0";
        let v1 = content(w, "v", 1, 5000);
        let v2 = content(w, "v", 2, 6000);
        let certain = Want::certain(Some((1, 5000)));
        assert!(certain.check(w, Some(&v1)).is_ok());
        assert!(
            certain.check(w, Some(&v2)).is_err(),
            "an unacknowledged version"
        );
        assert!(
            certain.check(w, None).is_err(),
            "an acknowledged write lost"
        );
        assert!(
            certain.check(w, Some(&v1[..4000])).is_err(),
            "a short acknowledged file"
        );

        let mut after_failure = certain.clone();
        after_failure.failed.push((2, 6000, false));
        assert!(after_failure.check(w, Some(&v1)).is_ok());
        assert!(after_failure.check(w, Some(&v2)).is_ok());
        // A write through the mount that stopped part way: a prefix, or pieces with holes.
        assert!(after_failure.check(w, Some(&v2[..100])).is_ok());
        let mut holed = v2.clone();
        holed[..3000].fill(0);
        assert!(after_failure.check(w, Some(&holed)).is_ok());
        // A mix of the two versions is refused.
        let mut mixed = v2.clone();
        mixed[..2000].copy_from_slice(&v1[..2000]);
        assert!(after_failure.check(w, Some(&mixed)).is_err());
        assert!(
            after_failure.check(w, None).is_err(),
            "no removal was tried"
        );

        // A failed atomic put: whole versions only.
        let mut put = Want::certain(Some((1, 5000)));
        put.failed.push((2, 6000, true));
        assert!(put.check(w, Some(&v2[..100])).is_err());
        assert!(put.check(w, Some(&v2)).is_ok());

        let mut removed = certain;
        removed.may_be_absent = true;
        assert!(removed.check(w, None).is_ok());
    }
}
