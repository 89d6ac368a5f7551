//! `shelf put ADDR LOCAL [REMOTE]`: upload one file, atomically.
//!
//! What is hard, and how it is handled:
//! 1. *Atomic replacement.* `PutBegin` makes a hidden temporary beside REMOTE on the server,
//!    `Write`s fill it, `PutCommit` fsyncs it, sets the local file's mtime and renames it into
//!    place (docs/PROTOCOL.md, "Atomic put"). Readers see the old file or the new one, never
//!    a mix, and listings never show the temporary.
//! 2. *Failure and Ctrl-C.* Any error after `PutBegin` sends `PutAbort`; if even that cannot
//!    reach the server, the server removes the temporary when the connection ends.
//! 3. *Speed with constant memory.* Like `get`: chunks of 1 MiB (at most the server's
//!    `max_io`), [`WINDOW`] writes in flight through the range writer
//!    (`shelf_remote::ranges`), each chunk read from disk just before it is sent, and moved
//!    into its request. Writes are not resent after a lost connection (`Resend::Never`): the temporary belongs to the server
//!    process of that connection and is gone with it, so the upload fails and can be rerun.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{anyhow, Context};
use shelf_proto::{FileKind, Timestamp};

use super::get::CHUNK;
use super::paths::{bytes, join, resolve, show};
use super::progress::bar;
use super::{interrupt, Remote, Ui, UsageError};
use shelf_remote::ranges::{RangeWriter, Resend, WriteOptions, Written, WINDOW};
use shelf_remote::{Client, RemoteError, Transport};

/// Upload a file to the library, replacing any file of that name atomically.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    shelf put 127.0.0.1:7878 ./photo.jpg                 # to photo.jpg at the root\n  \
    shelf put 127.0.0.1:7878 ./photo.jpg pictures/       # into an existing directory\n  \
    tar c dir | shelf put 127.0.0.1:7878 - backup.tar    # from standard input")]
pub struct PutArgs {
    /// Server address, HOST:PORT.
    pub addr: String,
    /// The local file to upload; `-` for standard input (then REMOTE is required).
    pub local: PathBuf,
    /// Where in the library to put it.
    ///
    /// By default LOCAL's name at the library root. An existing directory receives the file
    /// under LOCAL's name. An existing file is replaced atomically: readers see the old or the
    /// new content, never part of the upload.
    pub remote: Option<OsString>,
}

pub fn run<T: Remote>(c: &Client<T>, args: &PutArgs, ui: Ui, cwd: &[u8]) -> anyhow::Result<()> {
    interrupt::install();
    let remote = args
        .remote
        .as_deref()
        .map(|r| resolve(cwd, bytes(r)))
        .transpose()?;
    let shown = match &args.remote {
        Some(r) => r.to_string_lossy().into_owned(),
        None => args.local.display().to_string(),
    };
    put(
        c,
        &args.local,
        remote.as_deref(),
        cwd,
        ui,
        interrupt::flag(),
    )
    .with_context(|| format!("put {shown}"))
}

/// Uploads `local` to the wire path `remote` (default: LOCAL's name in `cwd`).
pub fn put<T: Transport>(
    c: &Client<T>,
    local: &Path,
    remote: Option<&[u8]>,
    cwd: &[u8],
    ui: Ui,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let from_stdin = local == Path::new("-");
    let name = local.file_name().map(|n| n.as_bytes().to_vec());
    let target = match (remote, &name) {
        (Some(r), _) => r.to_vec(),
        (None, Some(n)) if !from_stdin => join(cwd, n),
        _ => {
            return Err(UsageError(format!(
                "name where to put {} in the library",
                local.display()
            ))
            .into())
        }
    };
    // An existing directory receives the file under its local name, as with cp.
    let target = match (c.stat(&target), &name) {
        (Ok(a), Some(n)) if a.kind == FileKind::Dir && !from_stdin => join(&target, n),
        (Ok(a), _) if a.kind == FileKind::Dir => return Err(anyhow!("is a directory")),
        _ => target,
    };
    let (mut input, size, perm, mtime): (Box<dyn Read>, u64, u32, Option<Timestamp>) = if from_stdin
    {
        (Box::new(std::io::stdin().lock()), 0, 0o644, None)
    } else {
        let file = File::open(local).with_context(|| format!("cannot read {}", local.display()))?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(anyhow!("{}: is a directory", local.display()));
        }
        let mtime = Timestamp::new(meta.mtime(), meta.mtime_nsec().clamp(0, 999_999_999) as u32);
        (Box::new(file), meta.len(), meta.mode() & 0o777, Some(mtime))
    };
    let temp = c.put_begin(&target, perm)?;
    let sent = upload(c, &temp, &mut *input, size, &show(&target), ui, stop)
        .and_then(|()| Ok(c.put_commit(&temp, &target, mtime)?));
    if let Err(e) = sent {
        if let Err(abort) = c.put_abort(&temp) {
            tracing::debug!("put-abort {}: {abort}", show(&temp));
        }
        return Err(e);
    }
    Ok(())
}

/// Streams `input` into the server's temporary `temp` through the range writer, which never
/// resends here (module docs, point 3).
fn upload<T: Transport>(
    c: &Client<T>,
    temp: &[u8],
    input: &mut dyn Read,
    size: u64,
    label: &str,
    ui: Ui,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let opts = WriteOptions {
        max_io: c.limits().max_io.clamp(1, CHUNK) as usize,
        window: WINDOW,
        resend: Resend::Never,
    };
    let progress = bar(size, label, ui.progress);
    let mut writer = RangeWriter::default();
    let mut failed: Option<RemoteError> = None;
    let note = |failed: &mut Option<RemoteError>, w: Written| match w.result {
        Ok(_) => progress.inc(w.range.end - w.range.start),
        Err(e) => {
            failed.get_or_insert(e);
        }
    };
    let mut offset = 0u64;
    loop {
        interrupt::check(stop)?;
        let data = read_chunk(input, opts.max_io)?;
        let eof = data.len() < opts.max_io;
        let len = data.len() as u64;
        if len > 0 {
            let mut done = |w| note(&mut failed, w);
            writer.send(c.transport(), temp, offset, data, opts, &mut done);
            offset += len;
        }
        if failed.is_some() || eof {
            break;
        }
    }
    writer.wait_all(c.transport(), opts.resend, &mut |w| note(&mut failed, w));
    if let Some(e) = failed {
        return Err(e.into());
    }
    progress.finish_and_clear();
    Ok(())
}

/// Up to `len` bytes; fewer only at end of input.
fn read_chunk(input: &mut dyn Read, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    input.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}
