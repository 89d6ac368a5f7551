//! `shelf rm ADDR PATH...`: remove files, empty directories, or with `-r` whole trees.

use std::ffi::OsString;

use anyhow::{anyhow, Context};
use shelf_proto::{Code, FileKind};

use super::paths::{bytes, join, resolve, show};
use super::{Remote, UsageError};
use shelf_remote::{Client, Transport};

/// Remove files and directories from the library.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    shelf rm 127.0.0.1:7878 old.txt\n  \
    shelf rm 127.0.0.1:7878 empty-dir\n  \
    shelf rm -r 127.0.0.1:7878 old-project")]
pub struct RmArgs {
    /// Server address, HOST:PORT.
    pub addr: String,
    /// What to remove, relative to the library root.
    #[arg(required = true)]
    pub paths: Vec<OsString>,
    /// Remove directories and everything in them.
    ///
    /// Without it, only files, symlinks and empty directories are removed.
    #[arg(short, long)]
    pub recursive: bool,
}

pub fn run<T: Remote>(
    c: &Client<T>,
    paths: &[OsString],
    recursive: bool,
    cwd: &[u8],
) -> anyhow::Result<()> {
    for p in paths {
        let path = resolve(cwd, bytes(p))?;
        remove(c, &path, recursive).with_context(|| format!("rm {}", p.to_string_lossy()))?;
    }
    Ok(())
}

/// Removes the wire path `path`.
pub fn remove<T: Transport>(c: &Client<T>, path: &[u8], recursive: bool) -> anyhow::Result<()> {
    if path.is_empty() {
        return Err(UsageError("refusing to remove the library root".into()).into());
    }
    let attr = c.stat(path)?;
    if attr.kind != FileKind::Dir {
        return Ok(c.unlink(path)?);
    }
    if recursive {
        for e in c.list(path)? {
            let child = join(path, &e.name);
            if e.attr.kind == FileKind::Dir {
                remove(c, &child, true)?;
            } else {
                c.unlink(&child).with_context(|| show(&child))?;
            }
        }
    }
    match c.rmdir(path) {
        Err(e) if e.code() == Code::NotEmpty && !recursive => Err(anyhow!(
            "directory not empty (use -r to remove it and its contents)"
        )),
        other => Ok(other?),
    }
}
