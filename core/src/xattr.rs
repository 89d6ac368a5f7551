//! Extended attributes: `getxattr`, `setxattr`, `listxattr`, `removexattr`, on the server
//! file's own `user.` attributes.
//!
//! What is hard, and how it is handled:
//! 1. **The kernel's two-call protocol.** A caller asks with size 0 for the length, then again
//!    with a buffer; a buffer too small is ERANGE. The server always sends the whole value (at
//!    most 64 KiB), and [`XattrReply::fit`] answers both calls from it.
//! 2. **`security.capability` around every write.** Before each write (and truncate) the
//!    kernel asks whether the file carries capabilities to drop (`file_remove_privs`); FUSE
//!    never marks an inode as having none (no `SB_NOSEC`), so it asks every time. The server
//!    stores `user.` names only (docs/PROTOCOL.md, "Extended attributes"), so every other
//!    name is answered here with the server's own answer, EOPNOTSUPP, without a round trip:
//!    a write loop costs no xattr request at all ([`XattrStats`] counts both kinds of answer).
//! 3. **Names Linux refuses** (empty, over 255 bytes: ERANGE) are refused here as the kernel
//!    does before any file system sees them, so a bad name never reaches the wire.
//! 4. **Open files without a name** are reached under their hidden name, as every operation
//!    reaches them (`path_of`).

use std::sync::atomic::{AtomicU64, Ordering};

use shelf_proto::{xattr, Code};
use shelf_remote::Transport;

use crate::error::FsResult;
use crate::ids::Ino;
use crate::Core;

/// What a `getxattr` or `listxattr` answers the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    /// The caller asked with size 0: the length of the value or list.
    Size(u32),
    /// The bytes, which fit the caller's buffer.
    Data(Vec<u8>),
}

impl XattrReply {
    /// The answer to a caller with a buffer of `size` bytes (0: asking for the length).
    fn fit(bytes: Vec<u8>, size: u32) -> FsResult<XattrReply> {
        let len = u32::try_from(bytes.len()).map_err(|_| Code::TooBig)?;
        match size {
            0 => Ok(XattrReply::Size(len)),
            _ if len > size => Err(Code::Range.into()),
            _ => Ok(XattrReply::Data(bytes)),
        }
    }
}

/// How extended attribute requests were answered, for `shelf status` and the tests.
#[derive(Debug, Default)]
pub struct XattrStats {
    /// Sent to the server.
    pub sent: AtomicU64,
    /// Answered here, without a round trip (a namespace the server does not store).
    pub local: AtomicU64,
}

/// Linux's `XATTR_CREATE` and `XATTR_REPLACE`, as the kernel passes them.
const OS_FLAGS: i32 = libc::XATTR_CREATE | libc::XATTR_REPLACE;

impl<T: Transport> Core<T> {
    pub fn getxattr(&self, ino: Ino, name: &[u8], size: u32) -> FsResult<XattrReply> {
        self.stored_name(name)?;
        let path = self.path_of(ino)?;
        self.count_sent();
        let value = self.client.get_xattr(&path, name)?;
        XattrReply::fit(value, size)
    }

    /// `flags` as the kernel passes them (`XATTR_CREATE`, `XATTR_REPLACE`); `position` is
    /// macOS's resource-fork offset, never non-zero on Linux.
    pub fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        flags: i32,
        position: u32,
    ) -> FsResult<()> {
        if flags & !OS_FLAGS != 0 || position != 0 {
            return Err(Code::Invalid.into());
        }
        if value.len() > xattr::VALUE_MAX {
            return Err(Code::TooBig.into());
        }
        self.check_writable()?;
        self.stored_name(name)?;
        let mut wire = 0;
        if flags & libc::XATTR_CREATE != 0 {
            wire |= xattr::CREATE;
        }
        if flags & libc::XATTR_REPLACE != 0 {
            wire |= xattr::REPLACE;
        }
        let path = self.path_of(ino)?;
        self.count_sent();
        let done = self.client.set_xattr(&path, name, value, wire);
        // The server's ctime moved (or may have, if the reply was lost).
        self.inodes.invalidate_attr(ino);
        self.entry_changed(ino);
        Ok(done?)
    }

    /// The `user.` names, each followed by a NUL, as `listxattr(2)` returns them.
    pub fn listxattr(&self, ino: Ino, size: u32) -> FsResult<XattrReply> {
        let path = self.path_of(ino)?;
        self.count_sent();
        let names = self.client.list_xattr(&path)?;
        let len = xattr::list_len(&names);
        if len > xattr::LIST_MAX {
            return Err(Code::TooBig.into());
        }
        let mut list = Vec::with_capacity(len);
        for n in names {
            list.extend_from_slice(&n);
            list.push(0);
        }
        XattrReply::fit(list, size)
    }

    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        self.stored_name(name)?;
        let path = self.path_of(ino)?;
        self.count_sent();
        let done = self.client.remove_xattr(&path, name);
        self.inodes.invalidate_attr(ino);
        self.entry_changed(ino);
        Ok(done?)
    }

    pub fn xattr_stats(&self) -> &XattrStats {
        &self.xattr_stats
    }

    /// Refuses, without a round trip, a name Linux refuses or the server does not store
    /// (module docs, 2 and 3).
    fn stored_name(&self, name: &[u8]) -> FsResult<()> {
        if name.is_empty() || name.len() > xattr::NAME_MAX {
            return Err(Code::Range.into());
        }
        if !name.starts_with(b"user.") {
            self.xattr_stats.local.fetch_add(1, Ordering::Relaxed);
            return Err(Code::NotSupported.into());
        }
        Ok(())
    }

    fn count_sent(&self) {
        self.xattr_stats.sent.fetch_add(1, Ordering::Relaxed);
    }
}
