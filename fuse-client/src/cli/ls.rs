//! `shelf ls ADDR [PATH]`: one line per entry, like `ls -l` (format in [`super::format`]).

use std::ffi::OsString;
use std::io::Write;

use anyhow::Context;
use shelf_proto::{Code, DirEntry, FileKind};

use super::format::ls_line;
use super::paths::{basename, bytes, join, resolve, show};
use super::Remote;
use shelf_remote::Client;

/// List a directory of the library.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Output: one line per entry, sorted by name:\n  \
    MODE SIZE YYYY-MM-DD HH:MM NAME\n  \
    drwxr-xr-x     4096 2024-05-01 12:34 docs\n  \
    -rw-r--r--     1234 2024-05-01 12:35 notes.txt\n\n\
    Examples:\n  shelf ls 127.0.0.1:7878\n  shelf ls 127.0.0.1:7878 docs/2024")]
pub struct LsArgs {
    /// Server address, HOST:PORT.
    pub addr: String,
    /// Directory (or file) to list; the library root by default.
    ///
    /// Relative to the library root; a leading `/` means the same. Listing a file shows that
    /// one file's line.
    #[arg(default_value = "")]
    pub path: OsString,
}

pub fn run<T: Remote>(c: &Client<T>, args: &LsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    list(c, &resolve(b"", bytes(&args.path))?, out)
}

/// Lists `path` (a wire path) to `out`.
pub fn list<T: Remote>(c: &Client<T>, path: &[u8], out: &mut dyn Write) -> anyhow::Result<()> {
    let context = || format!("ls {}", show(path));
    // `alone`: `path` is not a directory and is listed as its own single entry.
    let (entries, alone) = match c.list(path) {
        Ok(entries) => (entries, false),
        Err(e) if e.code() == Code::NotDir => {
            let entry = DirEntry {
                name: basename(path).to_vec(),
                attr: c.stat(path).with_context(context)?,
            };
            (vec![entry], true)
        }
        Err(e) => return Err(e).with_context(context),
    };
    let width = entries
        .iter()
        .map(|e| e.attr.size.to_string().len())
        .max()
        .unwrap_or(1);
    for e in &entries {
        let target = match e.attr.kind {
            // A target that cannot be read still leaves the entry listed.
            FileKind::Symlink if alone => c.readlink(path).ok(),
            FileKind::Symlink => c.readlink(&join(path, &e.name)).ok(),
            _ => None,
        };
        writeln!(
            out,
            "{}",
            ls_line(&e.name, &e.attr, width, target.as_deref())
        )?;
    }
    out.flush()?;
    Ok(())
}
