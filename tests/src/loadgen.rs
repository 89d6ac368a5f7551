//! A mixed workload that checks every byte: CLI clients and mounts at once against one server.
//!
//! Used by `bench/load.sh` (through the `shelf-load` binary, for figures) and by the load
//! suite (a few seconds, for correctness only). Each worker owns its own directory on the
//! server, so it knows exactly what every file it made must hold and which names its
//! directory must list; any difference is a *wrong* result, counted apart from operations that
//! failed with an error:
//!
//! - a **CLI client** runs `shelf put/get/ls/mv/rm` processes in a loop (one process per
//!   operation, as a script would);
//! - a **mount worker** writes whole files, overwrites ranges in place, reads ranges back,
//!   renames, unlinks and lists, through a mount's directory.
//!
//! File content is derived from (worker, name, generation) and starts with a header naming
//! them, so a stale file, another worker's file or a mix of two versions cannot pass for the
//! expected one.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{shelf_bin, Rng};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server, as `shelf` takes it.
    pub addr: String,
    /// Options given to every `shelf` command before the subcommand (e.g. `--fingerprint`).
    pub cli_options: Vec<String>,
    /// How many CLI clients run at once.
    pub clients: usize,
    /// Mounted directories of the same server; each gets `workers_per_mount` workers.
    pub mounts: Vec<PathBuf>,
    pub workers_per_mount: usize,
    /// How long to keep starting operations.
    pub duration: Duration,
    /// Where CLI clients keep their local files.
    pub scratch: PathBuf,
    /// A name no other run uses, so runs against one library never meet.
    pub run_id: String,
    /// How long one `shelf` command may take before it counts as hung (and is killed).
    pub command_timeout: Duration,
}

/// What happened, per kind of operation.
#[derive(Debug, Default)]
pub struct Report {
    pub kinds: BTreeMap<&'static str, KindStats>,
    /// Failures and wrong results, with what was seen (at most the first 50 kept).
    pub problems: Vec<String>,
    pub failed: u64,
    pub wrong: u64,
    /// File bytes compared against what they must be.
    pub bytes_checked: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct KindStats {
    pub latencies: Vec<Duration>,
    pub failed: u64,
    pub wrong: u64,
}

impl KindStats {
    /// The `q`-quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.latencies.clone();
        v.sort();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i]
    }
}

impl Report {
    /// The figures, one line per kind: count, rate, p50 and p99 latency, failures.
    pub fn table(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut out = format!(
            "{:<10} {:>8} {:>9} {:>10} {:>10} {:>7} {:>6}\n",
            "operation", "count", "ops/s", "p50 ms", "p99 ms", "failed", "wrong"
        );
        for (kind, s) in &self.kinds {
            out += &format!(
                "{:<10} {:>8} {:>9.1} {:>10.2} {:>10.2} {:>7} {:>6}\n",
                kind,
                s.latencies.len(),
                s.latencies.len() as f64 / secs,
                s.quantile(0.5).as_secs_f64() * 1e3,
                s.quantile(0.99).as_secs_f64() * 1e3,
                s.failed,
                s.wrong
            );
        }
        let total: usize = self.kinds.values().map(|s| s.latencies.len()).sum();
        out += &format!(
            "total: {total} operations in {:.1} s ({:.1}/s), {} failed, {} wrong, {} bytes checked\n",
            secs,
            total as f64 / secs,
            self.failed,
            self.wrong,
            self.bytes_checked
        );
        out
    }

    fn merge(&mut self, other: Report) {
        for (k, s) in other.kinds {
            let mine = self.kinds.entry(k).or_default();
            mine.latencies.extend(s.latencies);
            mine.failed += s.failed;
            mine.wrong += s.wrong;
        }
        self.failed += other.failed;
        self.wrong += other.wrong;
        self.bytes_checked += other.bytes_checked;
        for p in other.problems {
            if self.problems.len() < 50 {
                self.problems.push(p);
            }
        }
    }

    fn ok(&mut self, kind: &'static str, took: Duration) {
        self.kinds.entry(kind).or_default().latencies.push(took);
    }

    fn failed(&mut self, kind: &'static str, what: String) {
        self.kinds.entry(kind).or_default().failed += 1;
        self.failed += 1;
        self.note(format!("{kind} failed: {what}"));
    }

    fn wrong(&mut self, kind: &'static str, what: String) {
        self.kinds.entry(kind).or_default().wrong += 1;
        self.wrong += 1;
        self.note(format!("{kind} WRONG: {what}"));
    }

    fn note(&mut self, p: String) {
        if self.problems.len() < 50 {
            self.problems.push(p);
        }
    }
}

/// The bytes file `name` of `worker` holds at `generation`: a header naming all three, then
/// bytes from a generator seeded by them.
pub fn content(worker: &str, name: &str, generation: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{worker}/{name}@{generation}\n").into_bytes();
    let seed = fnv(worker.as_bytes()) ^ fnv(name.as_bytes()).rotate_left(17) ^ generation;
    let mut rng = Rng::new(seed);
    let rest = len.saturating_sub(v.len());
    v.extend(rng.bytes(rest));
    v.truncate(len);
    v
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs the workload until `cfg.duration` has passed and every worker has finished its
/// last operation.
pub fn run(cfg: &LoadConfig) -> Report {
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let total = Mutex::new(Report::default());
    std::thread::scope(|s| {
        for i in 0..cfg.clients {
            let total = &total;
            s.spawn(move || {
                let r = cli_worker(cfg, i, deadline);
                total.lock().unwrap_or_else(|e| e.into_inner()).merge(r);
            });
        }
        for (m, dir) in cfg.mounts.iter().enumerate() {
            for w in 0..cfg.workers_per_mount {
                let total = &total;
                s.spawn(move || {
                    let r = mount_worker(cfg, dir, m, w, deadline);
                    total.lock().unwrap_or_else(|e| e.into_inner()).merge(r);
                });
            }
        }
    });
    let mut report = total.into_inner().unwrap_or_else(|e| e.into_inner());
    report.elapsed = started.elapsed();
    report
}

/// What a CLI client's file on the server must hold: the name and generation it was put
/// with (a rename keeps the bytes), and its length.
#[derive(Debug, Clone)]
struct Put {
    origin: String,
    generation: u64,
    len: usize,
}

/// One CLI client: `shelf` commands on its own directory `load-RUN/cI` of the server.
fn cli_worker(cfg: &LoadConfig, i: usize, deadline: Instant) -> Report {
    let mut r = Report::default();
    let me = format!("c{i}");
    let dir = format!("load-{}/{me}", cfg.run_id);
    let local = cfg.scratch.join(format!("{}-{me}", cfg.run_id));
    if let Err(e) = std::fs::create_dir_all(&local) {
        r.failed("setup", format!("{}: {e}", local.display()));
        return r;
    }
    let mut rng = Rng::new(0x5eed ^ i as u64);
    let mut files: BTreeMap<String, Put> = BTreeMap::new();
    let mut generation = 0u64;
    let shelf = |args: &[&str]| -> Result<std::process::Output, String> {
        let mut cmd = std::process::Command::new(shelf_bin());
        cmd.args(&cfg.cli_options).arg("-q").args(args);
        cmd.stdin(std::process::Stdio::null());
        let out = run_bounded(cmd, cfg.command_timeout)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "shelf {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let t = Instant::now();
    match shelf(&["mkdir", "-p", &cfg.addr, &dir]) {
        Ok(_) => r.ok("mkdir", t.elapsed()),
        Err(e) => {
            r.failed("mkdir", e);
            return r;
        }
    }
    while Instant::now() < deadline {
        let roll = rng.below(100);
        let picked = pick(&mut rng, &files);
        let t = Instant::now();
        match (roll, picked) {
            (0..35, _) | (_, None) => {
                generation += 1;
                let name = format!("f{}", rng.below(8));
                let len = 1 + rng.below(100_000) as usize;
                let data = content(&me, &name, generation, len);
                let src = local.join("up");
                if let Err(e) = std::fs::write(&src, &data) {
                    r.failed("put", format!("local write: {e}"));
                    continue;
                }
                let remote = format!("{dir}/{name}");
                match shelf(&["put", &cfg.addr, &src.to_string_lossy(), &remote]) {
                    Ok(_) => {
                        r.ok("put", t.elapsed());
                        let origin = name.clone();
                        files.insert(
                            name,
                            Put {
                                origin,
                                generation,
                                len,
                            },
                        );
                    }
                    // Whether the old or the new file is there now is not known: forget it.
                    Err(e) => {
                        r.failed("put", e);
                        files.remove(&name);
                    }
                }
            }
            (35..65, Some(name)) => {
                let want = &files[&name];
                let dst = local.join("down");
                let _ = std::fs::remove_file(&dst);
                let remote = format!("{dir}/{name}");
                match shelf(&["get", &cfg.addr, &remote, &dst.to_string_lossy()]) {
                    Ok(_) => {
                        r.ok("get", t.elapsed());
                        match std::fs::read(&dst) {
                            Ok(got) => {
                                r.bytes_checked += got.len() as u64;
                                if got != content(&me, &want.origin, want.generation, want.len) {
                                    r.wrong(
                                        "get",
                                        format!("{remote}: {} bytes, not {want:?}", got.len()),
                                    );
                                }
                            }
                            Err(e) => r.failed("get", format!("reading the download: {e}")),
                        }
                    }
                    Err(e) => r.failed("get", e),
                }
            }
            (65..80, _) => match shelf(&["ls", &cfg.addr, &dir]) {
                Ok(out) => {
                    r.ok("ls", t.elapsed());
                    let mut seen: Vec<String> = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
                        .collect();
                    seen.sort();
                    let want: Vec<&String> = files.keys().collect();
                    if seen.iter().collect::<Vec<_>>() != want {
                        r.wrong("ls", format!("{dir}: listed {seen:?}, made {want:?}"));
                    }
                }
                Err(e) => r.failed("ls", e),
            },
            (80..90, Some(from)) => {
                let to = format!("f{}", rng.below(8));
                if to == from {
                    continue;
                }
                let (a, b) = (format!("{dir}/{from}"), format!("{dir}/{to}"));
                match shelf(&["mv", &cfg.addr, &a, &b]) {
                    Ok(_) => {
                        r.ok("mv", t.elapsed());
                        let moved = files.remove(&from).expect("picked");
                        files.insert(to, moved);
                    }
                    Err(e) => {
                        r.failed("mv", e);
                        files.remove(&from);
                        files.remove(&to);
                    }
                }
            }
            (_, Some(name)) => match shelf(&["rm", &cfg.addr, &format!("{dir}/{name}")]) {
                Ok(_) => {
                    r.ok("rm", t.elapsed());
                    files.remove(&name);
                }
                Err(e) => {
                    r.failed("rm", e);
                    files.remove(&name);
                }
            },
        }
    }
    let _ = std::fs::remove_dir_all(&local);
    r
}

/// A name of `files` at random.
fn pick<V>(rng: &mut Rng, files: &BTreeMap<String, V>) -> Option<String> {
    let n = files.len() as u64;
    if n == 0 {
        return None;
    }
    files.keys().nth(rng.below(n) as usize).cloned()
}

/// One worker on a mount: whole-file writes, in-place range writes, range and whole reads,
/// renames, unlinks and listings in its own directory, each checked against the bytes it
/// must hold (kept here in memory).
fn mount_worker(cfg: &LoadConfig, mount: &Path, m: usize, w: usize, deadline: Instant) -> Report {
    let mut r = Report::default();
    let me = format!("m{m}w{w}");
    let dir = mount.join(format!("load-{}", cfg.run_id)).join(&me);
    let t = Instant::now();
    match std::fs::create_dir_all(&dir) {
        Ok(()) => r.ok("mkdir", t.elapsed()),
        Err(e) => {
            r.failed("mkdir", format!("{}: {e}", dir.display()));
            return r;
        }
    }
    let mut rng = Rng::new(0xfeed ^ ((m as u64) << 20) ^ w as u64);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut generation = 0u64;
    while Instant::now() < deadline {
        let roll = rng.below(100);
        let picked = pick(&mut rng, &files);
        let t = Instant::now();
        match (roll, picked) {
            (0..30, _) | (_, None) => {
                generation += 1;
                let name = format!("f{}", rng.below(6));
                let len = 1 + rng.below(1 << 20) as usize;
                let data = content(&me, &name, generation, len);
                match std::fs::write(dir.join(&name), &data) {
                    Ok(()) => {
                        r.ok("write", t.elapsed());
                        files.insert(name, data);
                    }
                    Err(e) => {
                        r.failed("write", format!("{name}: {e}"));
                        files.remove(&name);
                    }
                }
            }
            (30..45, Some(name)) => {
                let want = files.get_mut(&name).expect("picked");
                let off = rng.below(want.len() as u64 + 1) as usize;
                let patch_len = 1 + rng.below(128 << 10) as usize;
                let patch = rng.bytes(patch_len);
                let wrote = OpenOptions::new()
                    .write(true)
                    .open(dir.join(&name))
                    .and_then(|f| {
                        f.write_all_at(&patch, off as u64)
                            .and_then(|()| f.sync_data())
                    });
                match wrote {
                    Ok(()) => {
                        r.ok("pwrite", t.elapsed());
                        if want.len() < off + patch.len() {
                            want.resize(off + patch.len(), 0);
                        }
                        want[off..off + patch.len()].copy_from_slice(&patch);
                    }
                    Err(e) => {
                        r.failed("pwrite", format!("{name}: {e}"));
                        files.remove(&name);
                    }
                }
            }
            (45..70, Some(name)) => {
                let want = &files[&name];
                let off = rng.below(want.len() as u64) as usize;
                let len = (1 + rng.below(256 << 10) as usize).min(want.len() - off);
                let mut buf = vec![0u8; len];
                let read = std::fs::File::open(dir.join(&name))
                    .and_then(|f| f.read_exact_at(&mut buf, off as u64));
                match read {
                    Ok(()) => {
                        r.ok("pread", t.elapsed());
                        r.bytes_checked += len as u64;
                        if buf != want[off..off + len] {
                            r.wrong("pread", format!("{}/{name} [{off}, +{len})", dir.display()));
                        }
                    }
                    Err(e) => r.failed("pread", format!("{name}: {e}")),
                }
            }
            (70..82, Some(name)) => match std::fs::read(dir.join(&name)) {
                Ok(got) => {
                    r.ok("read", t.elapsed());
                    r.bytes_checked += got.len() as u64;
                    if got != files[&name] {
                        r.wrong(
                            "read",
                            format!("{}/{name}: {} bytes", dir.display(), got.len()),
                        );
                    }
                }
                Err(e) => r.failed("read", format!("{name}: {e}")),
            },
            (82..88, Some(from)) => {
                let to = format!("f{}", rng.below(6));
                if to == from {
                    continue;
                }
                match std::fs::rename(dir.join(&from), dir.join(&to)) {
                    Ok(()) => {
                        r.ok("rename", t.elapsed());
                        let moved = files.remove(&from).expect("picked");
                        files.insert(to, moved);
                    }
                    Err(e) => {
                        r.failed("rename", format!("{from} -> {to}: {e}"));
                        files.remove(&from);
                        files.remove(&to);
                    }
                }
            }
            (88..94, Some(name)) => match std::fs::remove_file(dir.join(&name)) {
                Ok(()) => {
                    r.ok("unlink", t.elapsed());
                    files.remove(&name);
                }
                Err(e) => {
                    r.failed("unlink", format!("{name}: {e}"));
                    files.remove(&name);
                }
            },
            (_, Some(_)) => match std::fs::read_dir(&dir).and_then(|d| {
                d.map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<Vec<_>, _>>()
            }) {
                Ok(names) => {
                    r.ok("readdir", t.elapsed());
                    let mut seen: Vec<String> = names
                        .iter()
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect();
                    seen.sort();
                    let want: Vec<&String> = files.keys().collect();
                    if seen.iter().collect::<Vec<_>>() != want {
                        r.wrong(
                            "readdir",
                            format!("{}: {seen:?}, made {want:?}", dir.display()),
                        );
                    }
                }
                Err(e) => r.failed("readdir", e.to_string()),
            },
        }
    }
    r
}

/// Runs `cmd`, killing it past `timeout` (a hung command is a failure, never a hung run).
pub(crate) fn run_bounded(
    mut cmd: std::process::Command,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    use std::process::Stdio;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let started = Instant::now();
    // Output is small (a listing of a few names), so reading after exit cannot block it.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("hung: killed after {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_tells_every_worker_name_and_generation_apart() {
        let a = content("c1", "f1", 7, 5000);
        assert_eq!(a.len(), 5000);
        assert!(a.starts_with(b"c1/f1@7\n"));
        assert_eq!(a, content("c1", "f1", 7, 5000), "deterministic");
        for other in [
            content("c2", "f1", 7, 5000),
            content("c1", "f2", 7, 5000),
            content("c1", "f1", 8, 5000),
        ] {
            assert_ne!(a, other);
            // Not only the header: the bodies differ too, so a mix of two shows.
            assert_ne!(a[100..], other[100..]);
        }
        assert_eq!(content("c1", "f1", 7, 3).len(), 3);
    }

    #[test]
    fn quantiles_come_from_the_sorted_latencies() {
        let s = KindStats {
            latencies: (1..=100).rev().map(Duration::from_millis).collect(),
            ..Default::default()
        };
        assert_eq!(s.quantile(0.5), Duration::from_millis(51));
        assert_eq!(s.quantile(0.99), Duration::from_millis(99));
        assert_eq!(KindStats::default().quantile(0.5), Duration::ZERO);
    }
}
