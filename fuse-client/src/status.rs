//! `shelf status`: what this machine's shelf mounts are doing.
//!
//! Each mount process answers on a Unix socket named after its mount point (under `/run/shelf`
//! for root, `$XDG_RUNTIME_DIR/shelf` or `/tmp/shelf-UID` otherwise) with `key=value` lines:
//! the server, the connection pool's state and the chunk cache's counters. `shelf status` finds
//! the mounts in `/proc/self/mountinfo`, asks each, and prints what it hears; a mount whose
//! process is gone shows as such, which is the "Transport endpoint is not connected" case.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use shelf_core::Core;
use shelf_proto::Admission;
use shelf_remote::Pool;

use crate::cli::trust::Secured;

/// Arguments of `shelf status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Show only the mount at this directory.
    pub mountpoint: Option<PathBuf>,
}

/// Where the socket of the mount at `mountpoint` lives.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    // FNV-1a: stable across processes and releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mountpoint.as_os_str().as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    runtime_dir().join(format!("{h:016x}.sock"))
}

fn runtime_dir() -> PathBuf {
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/shelf");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("shelf"),
        None => PathBuf::from(format!("/tmp/shelf-{uid}")),
    }
}

/// The status lines of a running mount.
pub fn report(core: &Core<Pool>, mountpoint: &Path, secured: &Secured) -> String {
    let pool = core.transport().state();
    let cache = core.cache_stats();
    let cfg = core.config();
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        out.push_str(k);
        out.push('=');
        out.push_str(&v);
        out.push('\n');
    };
    line("mountpoint", mountpoint.display().to_string());
    line("server", core.transport().addr().to_string());
    line("pid", std::process::id().to_string());
    line("connections", pool.connected.to_string());
    line("slots", pool.slots.to_string());
    line("in_flight", pool.in_flight.to_string());
    line("requests", pool.requests.to_string());
    line("push_requests", pool.push_requests.to_string());
    line("retries", pool.retries.to_string());
    line("reconnects", pool.reconnects.to_string());
    let xattrs = core.xattr_stats();
    line(
        "xattr_sent",
        xattrs.sent.load(Ordering::Relaxed).to_string(),
    );
    line(
        "xattr_local",
        xattrs.local.load(Ordering::Relaxed).to_string(),
    );
    match core.push_stats() {
        Some(p) => {
            line("push", "on".to_owned());
            line("push_watched", p.watched.to_string());
            line("push_waiting", p.waiting.to_string());
            line("push_refused", p.refused.to_string());
        }
        None if !cfg.push => line("push", "off".to_owned()),
        None => line("push", "unserved".to_owned()),
    }
    match core.walk_ahead_stats() {
        Some((asked, taken)) => {
            line("walk_ahead", "on".to_owned());
            line("walk_ahead_asked", asked.to_string());
            line("walk_ahead_taken", taken.to_string());
        }
        None => line("walk_ahead", "off".to_owned()),
    }
    let (held, lost) = core.lock_stats();
    line("locks_served", core.serves_locks().to_string());
    line("lock_holders", held.to_string());
    line("locks_lost", lost.to_string());
    let (received, sent) = shelf_remote::data_moved();
    line("data_received_bytes", received.to_string());
    line("data_sent_bytes", sent.to_string());
    line("cache_hits", cache.hits.to_string());
    line("cache_misses", cache.misses.to_string());
    line("cache_bytes", cache.bytes.to_string());
    line("cache_chunks", cache.chunks.to_string());
    line("cache_evictions", cache.evictions.to_string());
    line("cache_capacity", cache.capacity.to_string());
    line("chunk_size", cfg.chunk_size.to_string());
    line("attr_ttl_ms", cfg.attr_ttl.as_millis().to_string());
    line("unwatched_ttl_ms", cfg.short_ttl().as_millis().to_string());
    line("read_only", cfg.read_only.to_string());
    // The suite as negotiated on a connection open now, else as on the first one.
    let info = core.transport().tls_info();
    match (&secured.fingerprint, info) {
        (_, Some(info)) => {
            line("tls_fingerprint", info.fingerprint);
            line("tls_cipher_suite", info.cipher_suite);
        }
        (Some(fp), None) => {
            line("tls_fingerprint", fp.clone());
            line(
                "tls_cipher_suite",
                secured.cipher_suite.clone().unwrap_or_default(),
            );
        }
        (None, None) => line("tls", "none (plaintext)".into()),
    }
    line("auth_key", secured.identity.clone().unwrap_or_default());
    line("auth_token", secured.token.to_string());
    // What the server accepted, as a connection open now heard it, else as the first did:
    // the key and token above are only what this client offered.
    let admitted = core.transport().admitted().or(secured.admitted);
    line(
        "auth_admitted",
        match admitted {
            Some(Admission::Open) => "open",
            Some(Admission::Token) => "token",
            Some(Admission::Key) => "key",
            Some(Admission::ReadOnlyKey) => "read-only key",
            None => "?",
        }
        .to_owned(),
    );
    out
}

/// Serves status requests for a mount until the process ends. Failures only cost the
/// feature, never the mount.
pub fn serve(core: Arc<Core<Pool>>, mountpoint: PathBuf, secured: Secured) {
    let path = socket_path(&mountpoint);
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("shelf status will not see this mount: {e:#}");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("shelf-status".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = stream.write_all(report(&core, &mountpoint, &secured).as_bytes());
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the status thread: {e}");
    }
}

fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path.parent().context("socket path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A socket left by a mount that died is in the way; a live one answers, so keep it.
    if UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

/// Removes the socket of a mount that is going away.
pub fn remove_socket(mountpoint: &Path) {
    let _ = std::fs::remove_file(socket_path(mountpoint));
}

/// One shelf mount of this machine, from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub source: String,
    /// The mount's device number as `major:minor`, which also names its
    /// `/sys/class/bdi/` entry.
    pub device: String,
}

/// The shelf mounts in a mountinfo text (fuse.shelf, or fuse with a `shelf#` source).
pub fn shelf_mounts(mountinfo: &str) -> Vec<MountEntry> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            let (fstype, source) = (*f.get(dash + 1)?, *f.get(dash + 2)?);
            let source = unescape(source);
            let ours = fstype == "fuse.shelf" || (fstype == "fuse" && source.starts_with("shelf#"));
            let mountpoint = PathBuf::from(unescape(f.get(4)?));
            let device = f.get(2)?.to_string();
            ours.then(|| MountEntry {
                mountpoint,
                source: source.trim_start_matches("shelf#").to_string(),
                device,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Asks a mount for its status lines; `None` when its process does not answer.
fn ask(mountpoint: &Path) -> Option<Vec<(String, String)>> {
    let mut s = UnixStream::connect(socket_path(mountpoint)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(
        BufReader::new(text.as_bytes())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
    )
}

/// Runs `shelf status`.
pub fn run(args: StatusArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut mounts = shelf_mounts(&info);
    if let Some(want) = &args.mountpoint {
        let want = std::fs::canonicalize(want).unwrap_or_else(|_| want.clone());
        mounts.retain(|m| m.mountpoint == want);
        if mounts.is_empty() {
            anyhow::bail!("{} is not a shelf mount", want.display());
        }
    }
    if mounts.is_empty() {
        writeln!(out, "no shelf mounts")?;
        return Ok(());
    }
    for m in mounts {
        writeln!(out, "{}", m.mountpoint.display())?;
        writeln!(out, "  server:       {}", m.source)?;
        match ask(&m.mountpoint) {
            None => writeln!(
                out,
                "  state:        not answering (the shelf process is gone; `shelf umount {}`)",
                m.mountpoint.display()
            )?,
            Some(kv) => render(&kv, out)?,
        }
    }
    Ok(())
}

fn render(kv: &[(String, String)], out: &mut dyn Write) -> anyhow::Result<()> {
    let get = |k: &str| {
        kv.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("?")
    };
    let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
    let state = if num("connections") > 0 {
        "connected"
    } else {
        "disconnected (reconnects on next use)"
    };
    writeln!(out, "  state:        {state}, pid {}", get("pid"))?;
    writeln!(
        out,
        "  connections:  {} of {} open, {} reconnects",
        get("connections"),
        get("slots"),
        get("reconnects")
    )?;
    writeln!(
        out,
        "  requests:     {} sent{}, {} retried, {} in flight",
        get("requests"),
        // An older mount's status does not count them.
        match get("push_requests") {
            "?" => String::new(),
            n => format!(" ({n} of them by change push)"),
        },
        get("retries"),
        get("in_flight")
    )?;
    let security = match kv.iter().find(|(k, _)| k == "tls_fingerprint") {
        Some((_, fp)) => format!("TLS 1.3, {}, server key {fp}", get("tls_cipher_suite")),
        None => "plaintext: not encrypted, server not verified".to_owned(),
    };
    writeln!(out, "  security:     {security}")?;
    let key = get("auth_key");
    // What the server accepted; what was offered only from a server too old to say.
    let auth = match (get("auth_admitted"), key, get("auth_token")) {
        ("key", key, _) => format!("client key {key}"),
        ("read-only key", key, _) => format!("client key {key}, read-only"),
        ("token", _, _) => "token".to_owned(),
        ("open", _, _) => "none needed (the server admits every client)".to_owned(),
        (_, "" | "?", "true") => {
            "token offered (the server does not say what it accepted)".to_owned()
        }
        (_, "" | "?", _) => "none".to_owned(),
        (_, key, "true") => {
            format!("client key {key} and token offered (the server does not say what it accepted)")
        }
        (_, key, _) => {
            format!("client key {key} offered (the server does not say what it accepted)")
        }
    };
    writeln!(out, "  auth:         {auth}")?;
    writeln!(
        out,
        "  xattrs:       {} sent, {} answered here",
        get("xattr_sent"),
        get("xattr_local")
    )?;
    // File bytes over the wire, exact: a copy the server did, or a sparse read that skipped
    // its holes, shows here as the bytes it did not move.
    writeln!(
        out,
        "  file data:    {} bytes received, {} bytes sent",
        get("data_received_bytes"),
        get("data_sent_bytes")
    )?;
    let locks = if get("locks_served") == "true" {
        format!(
            "on the server (across mounts), {} holders now, {} told of a loss",
            get("lock_holders"),
            get("locks_lost")
        )
    } else {
        "this machine's only (the server keeps none)".to_owned()
    };
    writeln!(out, "  locks:        {locks}")?;
    let ttl = |k: &str| humantime_ms(num(k));
    let changes = match get("push") {
        "on" => format!(
            "pushed by the server: {} directories watched (TTL {}), {} waiting, {} refused \
             (TTL {})",
            get("push_watched"),
            ttl("attr_ttl_ms"),
            get("push_waiting"),
            get("push_refused"),
            ttl("unwatched_ttl_ms")
        ),
        "off" => format!("TTL only, push=off (TTL {})", ttl("unwatched_ttl_ms")),
        _ => format!(
            "TTL only, the server does not push (TTL {})",
            ttl("unwatched_ttl_ms")
        ),
    };
    writeln!(out, "  changes:      {changes}")?;
    match get("walk_ahead") {
        "on" => writeln!(
            out,
            "  walk-ahead:   {} listings asked ahead of walks, {} taken",
            get("walk_ahead_asked"),
            get("walk_ahead_taken")
        )?,
        "off" => writeln!(out, "  walk-ahead:   off")?,
        // An older mount's status says nothing of it.
        _ => {}
    }
    let (hits, misses) = (num("cache_hits"), num("cache_misses"));
    let rate = if hits + misses == 0 {
        0.0
    } else {
        100.0 * hits as f64 / (hits + misses) as f64
    };
    writeln!(
        out,
        "  cache:        {} held of {} ({} chunks), {hits} hits, {misses} misses ({rate:.1}% hits), {} evictions",
        mib(num("cache_bytes")),
        mib(num("cache_capacity")),
        get("cache_chunks"),
        get("cache_evictions")
    )?;
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// A TTL in milliseconds as a person reads it: `60s`, `1.5s`, `250ms`.
fn humantime_ms(ms: u64) -> String {
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_shelf_mounts_in_mountinfo() {
        let info =
            "36 25 0:32 / /tmp/a\\040b rw,nosuid - fuse.shelf shelf#127.0.0.1:7878 rw,user_id=0\n\
                    37 25 0:33 / /mnt/x rw - fuse shelf#h:1 rw\n\
                    38 25 0:34 / /mnt/y rw - fuse sshfs#h: rw\n\
                    39 25 8:1 / / rw - ext4 /dev/vda rw\n";
        let got = shelf_mounts(info);
        assert_eq!(
            got,
            [
                MountEntry {
                    mountpoint: "/tmp/a b".into(),
                    source: "127.0.0.1:7878".into(),
                    device: "0:32".into(),
                },
                MountEntry {
                    mountpoint: "/mnt/x".into(),
                    source: "h:1".into(),
                    device: "0:33".into(),
                },
            ]
        );
    }

    #[test]
    fn socket_paths_differ_by_mountpoint_and_are_stable() {
        let a = socket_path(Path::new("/mnt/a"));
        assert_eq!(a, socket_path(Path::new("/mnt/a")));
        assert_ne!(a, socket_path(Path::new("/mnt/b")));
    }

    #[test]
    fn renders_counters_for_people() {
        let kv: Vec<(String, String)> = [
            ("connections", "2"),
            ("slots", "4"),
            ("cache_hits", "3"),
            ("cache_misses", "1"),
            ("cache_bytes", "1048576"),
            ("cache_capacity", "268435456"),
            ("tls_fingerprint", "SHA256:abc"),
            ("tls_cipher_suite", "TLS13_AES_128_GCM_SHA256"),
            ("auth_key", "SHA256:def (/k)"),
            ("auth_token", "true"),
            ("auth_admitted", "key"),
            ("xattr_sent", "5"),
            ("xattr_local", "1000"),
            ("data_received_bytes", "4096"),
            ("data_sent_bytes", "0"),
            ("locks_served", "true"),
            ("lock_holders", "2"),
            ("locks_lost", "0"),
            ("requests", "99"),
            ("push_requests", "7"),
            ("walk_ahead", "on"),
            ("walk_ahead_asked", "40"),
            ("walk_ahead_taken", "38"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut out = Vec::new();
        render(&kv, &mut out).expect("renders");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("connected"), "{text}");
        assert!(text.contains("2 of 4 open"), "{text}");
        assert!(
            text.contains("file data:    4096 bytes received, 0 bytes sent"),
            "{text}"
        );
        assert!(text.contains("1.0 MiB held of 256.0 MiB"), "{text}");
        assert!(
            text.contains("locks:        on the server (across mounts), 2 holders now"),
            "{text}"
        );
        assert!(text.contains("75.0% hits"), "{text}");
        assert!(
            text.contains("TLS 1.3, TLS13_AES_128_GCM_SHA256, server key SHA256:abc"),
            "{text}"
        );
        assert!(
            text.contains("auth:         client key SHA256:def (/k)"),
            "{text}"
        );
        assert!(text.contains("5 sent, 1000 answered here"), "{text}");
        assert!(
            text.contains("requests:     99 sent (7 of them by change push)"),
            "{text}"
        );
        assert!(
            text.contains("walk-ahead:   40 listings asked ahead of walks, 38 taken"),
            "{text}"
        );
    }
}
