//! `shelf mkdir ADDR PATH...`: make directories, with `-p` their parents too.

use std::ffi::OsString;

use anyhow::Context;
use shelf_proto::{Code, FileKind};

use super::paths::{bytes, resolve};
use super::Remote;
use shelf_remote::{Client, Transport};

/// Mode of new directories; the server applies its own umask.
const DIR_MODE: u32 = 0o755;

/// Make directories in the library.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    shelf mkdir 127.0.0.1:7878 photos\n  \
    shelf mkdir -p 127.0.0.1:7878 photos/2024/may")]
pub struct MkdirArgs {
    /// Server address, HOST:PORT.
    pub addr: String,
    /// Directories to make, relative to the library root.
    #[arg(required = true)]
    pub paths: Vec<OsString>,
    /// Make missing parents too, and accept directories that exist.
    #[arg(short, long)]
    pub parents: bool,
}

pub fn run<T: Remote>(
    c: &Client<T>,
    paths: &[OsString],
    parents: bool,
    cwd: &[u8],
) -> anyhow::Result<()> {
    for p in paths {
        let path = resolve(cwd, bytes(p))?;
        make(c, &path, parents).with_context(|| format!("mkdir {}", p.to_string_lossy()))?;
    }
    Ok(())
}

/// Makes the wire path `path`.
pub fn make<T: Transport>(c: &Client<T>, path: &[u8], parents: bool) -> anyhow::Result<()> {
    if !parents {
        c.mkdir(path, DIR_MODE)?;
        return Ok(());
    }
    let mut end = 0;
    while end < path.len() {
        end = path[end..]
            .iter()
            .position(|b| *b == b'/')
            .map_or(path.len(), |i| end + i);
        let prefix = &path[..end];
        end += 1;
        match c.mkdir(prefix, DIR_MODE) {
            Ok(_) => {}
            Err(e) if e.code() == Code::Exists => {
                if c.stat(prefix)?.kind != FileKind::Dir {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
