//! `copy_file_range` within one mount, done by the server with its own `copy_file_range`
//! (a reflink where its file system has them): no byte of the file crosses the wire.
//!
//! What is hard:
//! 1. *Both files' write-behind* is drained first, one after the other (the lock order allows
//!    one file's writes at a time): the server must copy what the program wrote to the source,
//!    and buffered bytes of the destination must not land later over the copy.
//! 2. *The destination changes behind our caches*: its chunks are dropped and its attributes
//!    are the server's after the copy. The kernel drops its own pages of the copied range when
//!    we answer (`fuse_copy_file_range`), so the core records the new version as the kernel's,
//!    as after a write it saw.
//! 3. *Short copies*: the kernel's reply counts in 32 bits, and the server copies at most
//!    256 MiB per request so one request never holds a connection long; a short count is what
//!    `copy_file_range(2)` allows, and callers (`cp`) loop.
//!
//! Between two mounts the kernel does not ask us (EXDEV, and it copies through read and write
//! itself); an older server without the request gets EOPNOTSUPP, on which the kernel does
//! the same.

use shelf_proto::Code;
use shelf_remote::Transport;

use crate::error::FsResult;
use crate::ids::Fh;
use crate::Core;

/// The most one call copies: a FUSE reply counts in `u32`; page-aligned, so a loop of short
/// copies stays aligned.
const COPY_CALL_MAX: u64 = (u32::MAX as u64) & !0xfff;

impl<T: Transport> Core<T> {
    /// Copies up to `len` bytes from `fh_in` at `off_in` to `fh_out` at `off_out` on the
    /// server; returns how many were copied (0: `off_in` is at or past the end).
    pub fn copy_file_range(
        &self,
        fh_in: Fh,
        off_in: u64,
        fh_out: Fh,
        off_out: u64,
        len: u64,
        flags: u64,
    ) -> FsResult<u32> {
        // copy_file_range(2) defines no flags yet.
        if flags != 0 {
            return Err(Code::Invalid.into());
        }
        let (ino_in, _) = self.handle(fh_in)?;
        let (ino_out, writable) = self.handle(fh_out)?;
        if !writable {
            return Err(Code::BadHandle.into());
        }
        self.check_writable()?;
        self.drain_writes(ino_in)?;
        self.drain_writes(ino_out)?;
        let from = self.path_of(ino_in)?;
        let to = self.path_of(ino_out)?;
        let want = len.min(COPY_CALL_MAX);
        let (copied, attr) = self.client.copy_range(&from, off_in, &to, off_out, want)?;
        self.cache.invalidate_file(ino_out);
        self.inodes.set_attr(ino_out, &attr);
        self.entry_changed(ino_out);
        self.pages_are(ino_out, attr.version());
        // `copy_range` checked that the server copied no more than asked.
        u32::try_from(copied).map_err(|_| Code::Io.into())
    }
}
