//! `shelf-push-bench`: how soon a change shows on other mounts (issue #16; `bench/push.sh`
//! runs it). Makes `--changes` changes, half through the writer mount and half directly in
//! the server's library, cycling through a write (an append), a create, a rename and a
//! removal; after each, every observer mount polls with `stat` until it sees the change, and
//! the time from the change's completion to then is recorded. Observers run side by side on
//! the same changes, so a pushed mount and a TTL-only one are measured in one run.
//!
//! shelf-push-bench --writer DIR --server DIR --observe NAME=DIR [--observe NAME=DIR]...
//!                  [--changes 1000] [--timeout-ms 5000]
//!
//! Prints, per observer, the median, p90, p99 and maximum delay over all changes and per
//! kind of change, and how many it did not see within the timeout; exits 1 if any.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The directory the changes are made in, inside each of the three views of the library.
const DIR: &str = "push-bench";
/// Files that are appended to (round robin).
const FILES: usize = 10;
/// How often an observer looks while it waits.
const POLL: Duration = Duration::from_micros(500);

struct Config {
    writer: PathBuf,
    server: PathBuf,
    observers: Vec<(String, PathBuf)>,
    changes: usize,
    timeout: Duration,
}

/// What one change leaves, as an observer checks it below its root.
#[derive(Clone)]
enum Expect {
    Size(PathBuf, u64),
    Exists(PathBuf),
    Gone(PathBuf),
    Moved { from: PathBuf, to: PathBuf },
}

impl Expect {
    fn seen(&self, root: &Path) -> bool {
        let exists = |p: &Path| fs::symlink_metadata(root.join(p)).is_ok();
        match self {
            Expect::Size(p, len) => fs::metadata(root.join(p)).is_ok_and(|m| m.len() == *len),
            Expect::Exists(p) => exists(p),
            Expect::Gone(p) => !exists(p),
            Expect::Moved { from, to } => exists(to) && !exists(from),
        }
    }
}

const KINDS: [&str; 8] = [
    "write, mount",
    "create, mount",
    "rename, mount",
    "remove, mount",
    "write, server",
    "create, server",
    "rename, server",
    "remove, server",
];

fn main() -> ExitCode {
    let cfg = match parse(std::env::args().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shelf-push-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&cfg) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(missed) => {
            eprintln!("shelf-push-bench: {missed} changes not seen within the timeout");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("shelf-push-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: &Config) -> Result<usize, String> {
    let io = |what: &str, p: &Path| {
        let p = p.display().to_string();
        let what = what.to_owned();
        move |e: std::io::Error| format!("{what} {p}: {e}")
    };
    let dir = cfg.server.join(DIR);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).map_err(io("mkdir", &dir))?;
    let mut sizes = [0u64; FILES];
    for k in 0..FILES {
        let p = dir.join(format!("f{k}"));
        fs::write(&p, b"").map_err(io("create", &p))?;
    }
    // Each observer looks at everything once, so it caches (and watches) the directory.
    std::thread::sleep(Duration::from_millis(200));
    for (_, root) in &cfg.observers {
        let d = root.join(DIR);
        let n = fs::read_dir(&d).map_err(io("list", &d))?.count();
        if n != FILES {
            return Err(format!("{} lists {n} entries, not {FILES}", d.display()));
        }
        for k in 0..FILES {
            let p = d.join(format!("f{k}"));
            fs::metadata(&p).map_err(io("stat", &p))?;
        }
    }
    std::thread::sleep(Duration::from_millis(500));

    // One thread per observer; each change is sent to all, and each answers its delay.
    let mut to_observers = Vec::new();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Option<Duration>)>();
    let mut threads = Vec::new();
    for (i, (_, root)) in cfg.observers.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<(Expect, Instant)>();
        to_observers.push(tx);
        let root = root.clone();
        let done = done_tx.clone();
        let timeout = cfg.timeout;
        threads.push(std::thread::spawn(move || {
            for (expect, t0) in rx {
                let seen = loop {
                    if expect.seen(&root) {
                        break Some(t0.elapsed());
                    }
                    if t0.elapsed() > timeout {
                        break None;
                    }
                    std::thread::sleep(POLL);
                };
                if done.send((i, seen)).is_err() {
                    return;
                }
            }
        }));
    }
    drop(done_tx);

    // delays[observer][kind]
    let mut delays = vec![vec![Vec::new(); KINDS.len()]; cfg.observers.len()];
    let mut missed = vec![0usize; cfg.observers.len()];
    let started = Instant::now();
    for i in 0..cfg.changes {
        let kind = i % KINDS.len();
        let base = if kind < 4 { &cfg.writer } else { &cfg.server };
        // A group of four makes, renames and removes one file of its own.
        let round = i / 4;
        let rel = |name: String| PathBuf::from(DIR).join(name);
        let expect = match kind % 4 {
            0 => {
                let k = round % FILES;
                let p = base.join(DIR).join(format!("f{k}"));
                let line = format!("change {i}\n");
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .map_err(io("open", &p))?;
                f.write_all(line.as_bytes()).map_err(io("append to", &p))?;
                drop(f);
                sizes[k] += line.len() as u64;
                Expect::Size(rel(format!("f{k}")), sizes[k])
            }
            1 => {
                let p = base.join(DIR).join(format!("c{round}"));
                fs::write(&p, b"new").map_err(io("create", &p))?;
                Expect::Exists(rel(format!("c{round}")))
            }
            2 => {
                let (from, to) = (format!("c{round}"), format!("r{round}"));
                let (a, b) = (base.join(DIR).join(&from), base.join(DIR).join(&to));
                fs::rename(&a, &b).map_err(io("rename", &a))?;
                Expect::Moved {
                    from: rel(from),
                    to: rel(to),
                }
            }
            _ => {
                let name = format!("r{round}");
                let p = base.join(DIR).join(&name);
                fs::remove_file(&p).map_err(io("remove", &p))?;
                Expect::Gone(rel(name))
            }
        };
        let t0 = Instant::now();
        for tx in &to_observers {
            tx.send((expect.clone(), t0))
                .map_err(|_| "an observer stopped".to_owned())?;
        }
        for _ in 0..cfg.observers.len() {
            let (o, seen) = done_rx
                .recv()
                .map_err(|_| "an observer stopped".to_owned())?;
            match seen {
                Some(d) => delays[o][kind].push(d),
                None => missed[o] += 1,
            }
        }
    }
    drop(to_observers);
    for t in threads {
        let _ = t.join();
    }
    let _ = fs::remove_dir_all(&dir);

    println!(
        "{} changes in {:.1} s ({} through the writer mount, {} on the server), \
         observers polling stat every {} µs",
        cfg.changes,
        started.elapsed().as_secs_f64(),
        cfg.changes.div_ceil(2),
        cfg.changes / 2,
        POLL.as_micros()
    );
    println!();
    println!(
        "| observer | change | n | median | p90 | p99 | max | not seen in {} ms |",
        cfg.timeout.as_millis()
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|");
    for (o, (name, _)) in cfg.observers.iter().enumerate() {
        let all: Vec<Duration> = delays[o].iter().flatten().copied().collect();
        println!("{}", row(name, "all", &all, missed[o]));
        for (k, kind) in KINDS.iter().enumerate() {
            println!("{}", row(name, kind, &delays[o][k], 0));
        }
    }
    Ok(missed.iter().sum())
}

fn row(observer: &str, kind: &str, delays: &[Duration], missed: usize) -> String {
    let mut d = delays.to_vec();
    d.sort();
    let q = |p: f64| -> String {
        if d.is_empty() {
            return "-".into();
        }
        let i = ((d.len() as f64 * p).ceil() as usize).clamp(1, d.len()) - 1;
        ms(d[i])
    };
    format!(
        "| {observer} | {kind} | {} | {} | {} | {} | {} | {missed} |",
        d.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        d.last().map_or("-".into(), |m| ms(*m))
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn parse(args: Vec<String>) -> Result<Config, String> {
    let mut writer = None;
    let mut server = None;
    let mut observers = Vec::new();
    let mut changes = 1000usize;
    let mut timeout = Duration::from_secs(5);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--writer" => writer = Some(PathBuf::from(value()?)),
            "--server" => server = Some(PathBuf::from(value()?)),
            "--observe" => {
                let v = value()?;
                let (name, dir) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--observe takes NAME=DIR, not {v:?}"))?;
                observers.push((name.to_owned(), PathBuf::from(dir)));
            }
            "--changes" => {
                changes = value()?
                    .parse()
                    .map_err(|_| "--changes: not a number".to_owned())?
            }
            "--timeout-ms" => {
                timeout = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|_| "--timeout-ms: not a number".to_owned())?,
                )
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if observers.is_empty() {
        return Err("give at least one --observe NAME=DIR".into());
    }
    Ok(Config {
        writer: writer.ok_or("--writer DIR is needed")?,
        server: server.ok_or("--server DIR is needed")?,
        observers,
        changes,
        timeout,
    })
}
