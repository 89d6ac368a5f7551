//! The arguments of `shelf mount` and its `-o` options, turned into a checked [`MountPlan`]
//! before any work starts (STYLE.md section 5, "a checked config").
//!
//! `-o` takes what mount(8) and fstab pass (`defaults`, `_netdev`, `x-*`, ... are accepted and
//! ignored), the FUSE flags we honour, and every long option as `key=value`; an `-o` value
//! overrides the flag of the same name. Unknown options are refused, so a typo in fstab fails
//! the mount instead of being silently dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use fuser::{MountOption, SessionACL};

use crate::cli::token::read_token;
use crate::cli::trust::Trust;
use crate::cli::units::{parse_duration, parse_size};
use shelf_core::{CoreConfig, DEFAULT_ATTR_TTL, DEFAULT_UNWATCHED_TTL, DEFAULT_WALK_AHEAD_THREADS};

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
    /// Bytes of file data to hold in memory, cached or read ahead and on its way (e.g. 256M, 1G).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Size of the cached and fetched chunks (e.g. 1M); at most the server's max I/O.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// TCP connections to the server; each is served by its own server process.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// How long attributes and names are trusted without asking the server (e.g. 1s, 500ms).
    /// Without it: 60s for what the server pushes changes of, 1s for the rest. Give it for a
    /// library that changes behind the server's back (a network file system beneath it).
    #[arg(long, value_parser = parse_duration)]
    pub attr_ttl: Option<Duration>,
    /// Whether to ask the server to push changes (on, off).
    #[arg(long, default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub push: bool,
    /// Whether a walk (find, du, tar, cp -r) lists the next subdirectories ahead of itself,
    /// several at once (on, off): far fewer waits at a long round trip, for a few listings
    /// a walk that stops early never reads.
    #[arg(long, default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub walk_ahead: bool,
    /// Refuse every change with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Mount options, comma-separated: allow_other, allow_root, ro, and the options above
    /// as key=value (cache_size=1G, connections=8, attr_ttl=2s, push=off, walk_ahead=off,
    /// busy_wait=1m, token_file=PATH), and the
    /// security options fingerprint=SHA256:..., identity=FILE, known_servers=FILE,
    /// insecure_plaintext.
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
}

/// Everything a mount needs, checked before any work starts.
#[derive(Debug, Clone)]
pub(super) struct MountPlan {
    pub addr: String,
    /// Canonical, and checked to be a directory.
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub connections: u32,
    pub token: Option<Vec<u8>>,
    /// How long a pool with no connection waits out a busy server (`--busy-wait`).
    pub busy_wait: Duration,
    /// How the server is verified and the client known (global options, then `-o`).
    pub trust: Trust,
    /// Includes the mounting user's uid and gid, which the files are presented as owned by.
    pub core: CoreConfig,
    /// For fuser, and read back by `kernel::mount_as_root` for the mount(2) flags.
    pub fuse_options: Vec<MountOption>,
    pub acl: SessionACL,
}

/// Checks the arguments and folds the `-o` options in. `token` is the global `--token-file`'s;
/// a `token_file=` option replaces it.
pub(super) fn plan(
    args: MountArgs,
    token: Option<Vec<u8>>,
    trust: Trust,
    busy_wait: Duration,
) -> anyhow::Result<MountPlan> {
    let mut busy_wait = busy_wait;
    let mut a = args;
    let mut token = token;
    let mut trust = trust;
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
            "attr_ttl" => {
                a.attr_ttl = Some(parse_duration(&need(value)?).map_err(anyhow::Error::msg)?)
            }
            "push" => a.push = parse_switch(&need(value)?).map_err(anyhow::Error::msg)?,
            "walk_ahead" => {
                a.walk_ahead = parse_switch(&need(value)?).map_err(anyhow::Error::msg)?
            }
            "busy_wait" => busy_wait = parse_duration(&need(value)?).map_err(anyhow::Error::msg)?,
            "token_file" => token = Some(read_token(Path::new(&need(value)?))?),
            "fingerprint" => trust.fingerprint = Some(need(value)?),
            "identity" => trust.identity = Some(PathBuf::from(need(value)?)),
            "known_servers" => trust.known_servers = Some(PathBuf::from(need(value)?)),
            "insecure_plaintext" => trust.plaintext = true,
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
    Ok(MountPlan {
        addr: a.addr,
        mountpoint,
        foreground: a.foreground,
        connections: a.connections,
        token,
        busy_wait,
        trust,
        core: CoreConfig {
            attr_ttl: a.attr_ttl.unwrap_or(DEFAULT_ATTR_TTL),
            unwatched_ttl: a.attr_ttl.unwrap_or(DEFAULT_UNWATCHED_TTL),
            push: a.push,
            walk_ahead: if a.walk_ahead {
                DEFAULT_WALK_AHEAD_THREADS
            } else {
                0
            },
            chunk_size: a.chunk_size as u32,
            cache_bytes: a.cache_size,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            read_only: a.read_only,
            ..CoreConfig::default()
        },
        fuse_options,
        acl,
    })
}

/// `on`/`off` (and the usual synonyms) for a switch option.
fn parse_switch(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(options: &[&str]) -> MountArgs {
        MountArgs {
            addr: "127.0.0.1:1".into(),
            mountpoint: std::env::temp_dir(),
            foreground: true,
            cache_size: 256 << 20,
            chunk_size: 1 << 20,
            connections: 4,
            attr_ttl: None,
            push: true,
            walk_ahead: true,
            read_only: false,
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn options_override_flags_and_unknown_ones_fail() {
        let wait = Duration::from_secs(30);
        let p = plan(
            args(&[
                "ro",
                "cache_size=1G",
                "connections=2",
                "_netdev",
                "busy_wait=2m",
            ]),
            None,
            Trust::default(),
            wait,
        )
        .expect("valid options");
        assert!(p.core.read_only);
        assert_eq!(p.core.cache_bytes, 1 << 30);
        assert_eq!(p.connections, 2);
        assert_eq!(p.busy_wait, Duration::from_secs(120));
        let p = plan(args(&[]), None, Trust::default(), wait).expect("no options");
        assert_eq!(p.busy_wait, wait, "the global --busy-wait stands");
        assert_eq!(p.core.walk_ahead, DEFAULT_WALK_AHEAD_THREADS);
        let p = plan(args(&["walk_ahead=off"]), None, Trust::default(), wait).expect("off");
        assert_eq!(p.core.walk_ahead, 0, "walk_ahead=off");
        let err = plan(args(&["bogus"]), None, Trust::default(), wait).expect_err("unknown option");
        assert!(err.to_string().contains("bogus"));
        assert!(plan(args(&["chunk_size=3000"]), None, Trust::default(), wait).is_err());
        assert!(plan(args(&["busy_wait=soon"]), None, Trust::default(), wait).is_err());
    }
}
