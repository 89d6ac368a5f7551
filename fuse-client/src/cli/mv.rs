//! `shelf mv ADDR FROM TO`: rename or move within the library, atomically (one `Rename`).

use std::ffi::OsString;

use anyhow::Context;
use shelf_proto::FileKind;

use super::paths::{basename, bytes, join, resolve};
use super::Remote;
use shelf_remote::{Client, Transport};

/// Rename or move a file or directory within the library.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    shelf mv 127.0.0.1:7878 draft.txt final.txt\n  \
    shelf mv 127.0.0.1:7878 final.txt archive/     # into an existing directory")]
pub struct MvArgs {
    /// Server address, HOST:PORT.
    pub addr: String,
    /// What to move, relative to the library root.
    pub from: OsString,
    /// The new name; an existing directory receives FROM under its own name.
    ///
    /// An existing file at TO is replaced atomically.
    pub to: OsString,
}

pub fn run<T: Remote>(
    c: &Client<T>,
    from: &OsString,
    to: &OsString,
    cwd: &[u8],
) -> anyhow::Result<()> {
    let (src, dst) = (resolve(cwd, bytes(from))?, resolve(cwd, bytes(to))?);
    rename(c, &src, &dst)
        .with_context(|| format!("mv {} {}", from.to_string_lossy(), to.to_string_lossy()))
}

/// Renames wire path `from` to `to`, or into `to` when it is a directory.
pub fn rename<T: Transport>(c: &Client<T>, from: &[u8], to: &[u8]) -> anyhow::Result<()> {
    let to = match c.stat(to) {
        Ok(a) if a.kind == FileKind::Dir && to != from => join(to, basename(from)),
        _ => to.to_vec(),
    };
    Ok(c.rename(from, &to, 0)?)
}
