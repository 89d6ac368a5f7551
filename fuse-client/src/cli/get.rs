//! `shelf get ADDR REMOTE [LOCAL]`: download one file.
//!
//! What is hard, and how it is handled:
//! 1. *Speed with constant memory.* Reads of one chunk (1 MiB, or the server's `max_io` if
//!    smaller) go out [`WINDOW`] at a time through the range reader (`shelf_remote::ranges`)
//!    and are written to disk in order as they come back, so the pipe stays full and memory
//!    stays at about `WINDOW` chunks whatever the size. A piece lost with its connection is
//!    resent once.
//! 2. *No partial file.* Data goes to a hidden temporary beside LOCAL (`.NAME.shelf-get-PID`),
//!    renamed over LOCAL only when complete; any error or Ctrl-C removes it.
//! 3. *A file changing on the server.* Every `Data` reply carries the file's version; one that
//!    differs from the version at the start (the reader checks, `Versions::Is`) means the bytes
//!    mix two contents, and a piece that ends early means the file shrank. The download starts
//!    over once, then fails with "changed on the server while downloading".

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use shelf_proto::{Attr, Code, FileKind};

use super::paths::{basename, bytes, resolve, show};
use super::progress::bar;
use super::{interrupt, Remote, Ui, UsageError};
use shelf_remote::ranges::{RangeReader, ReadOptions, Resend, Versions, WINDOW};
use shelf_remote::{Client, Transport};

/// Largest read asked at once; with `WINDOW` in flight, the memory a download uses.
pub const CHUNK: u32 = 1 << 20;

/// Download a file from the library.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    shelf get 127.0.0.1:7878 docs/report.pdf             # to ./report.pdf\n  \
    shelf get 127.0.0.1:7878 docs/report.pdf /tmp/       # to /tmp/report.pdf\n  \
    shelf get 127.0.0.1:7878 docs/report.pdf - | less    # to standard output")]
pub struct GetArgs {
    /// Server address, HOST:PORT.
    pub addr: String,
    /// The file in the library, relative to its root.
    pub remote: OsString,
    /// Where to write it; `-` for standard output.
    ///
    /// By default the file's name in the current directory. An existing directory receives
    /// the file under its own name. An existing file is replaced, only once the download is
    /// complete; the file's mode and modification time are copied.
    pub local: Option<PathBuf>,
}

pub fn run<T: Remote>(c: &Client<T>, args: &GetArgs, ui: Ui, cwd: &[u8]) -> anyhow::Result<()> {
    interrupt::install();
    let remote = resolve(cwd, bytes(&args.remote))?;
    get(c, &remote, args.local.as_deref(), ui, interrupt::flag())
        .with_context(|| format!("get {}", args.remote.to_string_lossy()))
}

/// Downloads the wire path `remote` to `local` (module docs); `stop` is the Ctrl-C flag.
pub fn get<T: Transport>(
    c: &Client<T>,
    remote: &[u8],
    local: Option<&Path>,
    ui: Ui,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let name = basename(remote);
    if name.is_empty() {
        return Err(UsageError("the library root is a directory; name a file".into()).into());
    }
    let mut attr = c.stat(remote)?;
    check_kind(&attr)?;
    if local == Some(Path::new("-")) {
        let mut out = std::io::stdout().lock();
        return match download(c, remote, &attr, &mut out, ui, stop)? {
            Download::Complete => Ok(()),
            Download::Changed => bail!("changed on the server while downloading"),
        };
    }
    let name = std::ffi::OsStr::from_bytes(name);
    let dest = match local {
        None => PathBuf::from(name),
        Some(p) if p.is_dir() => p.join(name),
        Some(p) => p.to_path_buf(),
    };
    let temp = temp_beside(&dest)?;
    let guard = TempFile(Some(temp.clone()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    let mut tries = 0;
    loop {
        match download(c, remote, &attr, &mut file, ui, stop)? {
            Download::Complete => break,
            Download::Changed if tries == 0 => {
                tries += 1;
                tracing::info!("{} changed while downloading; starting over", show(remote));
                file.set_len(0)?;
                std::io::Seek::rewind(&mut file)?;
                attr = c.stat(remote)?;
                check_kind(&attr)?;
            }
            Download::Changed => bail!("changed on the server while downloading"),
        }
    }
    finish(&file, &attr)?;
    drop(file);
    std::fs::rename(&temp, &dest).with_context(|| format!("renaming to {}", dest.display()))?;
    guard.keep();
    Ok(())
}

fn check_kind(attr: &Attr) -> anyhow::Result<()> {
    match attr.kind {
        FileKind::File => Ok(()),
        FileKind::Dir => Err(anyhow!("is a directory")),
        _ => Err(anyhow!("not a regular file")),
    }
}

/// Copies the server's mode bits and mtime, as `cp -p` does for them.
fn finish(file: &File, attr: &Attr) -> anyhow::Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(attr.perm & 0o777))?;
    let mtime = if attr.mtime.secs >= 0 {
        UNIX_EPOCH + Duration::new(attr.mtime.secs as u64, attr.mtime.nanos)
    } else {
        UNIX_EPOCH
    };
    file.set_modified(mtime)?;
    Ok(())
}

/// How one pass over the file ended.
enum Download {
    Complete,
    /// A reply showed another version of the file than `attr`, or it ended early.
    Changed,
}

/// Reads the whole file (as `attr` describes it) into `out`, pipelined by the range reader.
fn download<T: Transport>(
    c: &Client<T>,
    remote: &[u8],
    attr: &Attr,
    out: &mut dyn Write,
    ui: Ui,
    stop: &AtomicBool,
) -> anyhow::Result<Download> {
    let progress = bar(attr.size, &show(basename(remote)), ui.progress);
    let opts = ReadOptions {
        piece: CHUNK,
        window: WINDOW,
        resend: Resend::Once,
        versions: Versions::Is(attr.version()),
    };
    interrupt::check(stop)?;
    for piece in RangeReader::new(c.transport(), remote, 0..attr.size, opts) {
        let piece = match piece {
            // Only the reader's version check says ESTALE: the server reads by path.
            Err(e) if e.code() == Code::Stale => None,
            other => Some(other?),
        };
        match piece {
            Some(piece) if !piece.is_short() => {
                out.write_all(&piece.data)?;
                progress.inc(piece.data.len() as u64);
                interrupt::check(stop)?;
            }
            _ => {
                progress.finish_and_clear();
                return Ok(Download::Changed);
            }
        }
    }
    out.flush()?;
    progress.finish_and_clear();
    Ok(Download::Complete)
}

/// `.NAME.shelf-get-PID` in the directory of `dest`.
fn temp_beside(dest: &Path) -> anyhow::Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| UsageError(format!("{}: not a file name", dest.display())))?;
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".shelf-get-{}", std::process::id()));
    Ok(dest.with_file_name(temp))
}

/// Removes the temporary file unless kept.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
