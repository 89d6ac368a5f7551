//! Space and holes: `fallocate`, and `lseek` with `SEEK_DATA` / `SEEK_HOLE`, both done by the
//! server on its own file.
//!
//! What is hard: the bytes of a file live in three places besides the server, and each must
//! agree with it afterwards.
//! 1. *Write-behind* is drained first: buffered bytes sent after a punched hole would fill it
//!    again, and a seek must see data just written as data.
//! 2. *Our chunks* of the file are dropped after a change (a punch or zero range changes bytes;
//!    the new mtime makes a new version anyway, this does not wait for it).
//! 3. *The kernel's pages* of the range: for a punch and a zero range the kernel drops them
//!    itself once we answer (`fuse_file_fallocate` truncates the page cache over the range), so
//!    the core only records that the pages it holds are of the new version, as `setattr` does
//!    for a truncate. The attributes cached for the inode are the server's after the call.
//!
//! An older server without the requests: `fallocate` is EOPNOTSUPP (glibc's `posix_fallocate`
//! then writes zeros itself), and `lseek` answers as the kernel would without us, the whole
//! file being data, so `cp` and `tar` still work, reading the zeros.

use shelf_proto::{falloc_mode, features, Attr, Code, Whence};
use shelf_remote::Transport;

use crate::error::FsResult;
use crate::ids::Fh;
use crate::Core;

impl<T: Transport> Core<T> {
    /// `fallocate(2)` through an open handle; `mode` is Linux's (`FALLOC_FL_*`). Returns the
    /// attributes afterwards, as a program sees them (`Core::shown`).
    pub fn fallocate(&self, fh: Fh, offset: u64, len: u64, mode: i32) -> FsResult<Attr> {
        let (ino, writable) = self.handle(fh)?;
        if !writable {
            return Err(Code::BadHandle.into());
        }
        self.check_writable()?;
        let Some(mode) = falloc_mode::from_linux(mode) else {
            return Err(Code::NotSupported.into());
        };
        if !self.client.has(features::FALLOCATE) {
            return Err(Code::NotSupported.into());
        }
        self.drain_writes(ino)?;
        let path = self.path_of(ino)?;
        let attr = self.client.fallocate(&path, mode, offset, len)?;
        self.cache.invalidate_file(ino);
        self.inodes.set_attr(ino, &attr);
        self.entry_changed(ino);
        // The kernel dropped its pages of a punched or zeroed range (module docs, point 3).
        self.pages_are(ino, attr.version());
        // As every attribute handed out: the hidden name of an unlinked open file is ours.
        Ok(self.shown(ino, attr))
    }

    /// `lseek(2)` through an open handle for `SEEK_DATA` or `SEEK_HOLE`, the only `whence`
    /// values the kernel asks a file system about. Past the end of the file ENXIO, as Linux.
    pub fn lseek(&self, fh: Fh, offset: i64, whence: i32) -> FsResult<i64> {
        let (ino, _) = self.handle(fh)?;
        let whence = match whence {
            libc::SEEK_DATA => Whence::Data,
            libc::SEEK_HOLE => Whence::Hole,
            _ => return Err(Code::Invalid.into()),
        };
        // A negative offset reaches no byte of the file.
        let Ok(offset) = u64::try_from(offset) else {
            return Err(Code::NoDeviceOrAddress.into());
        };
        self.drain_writes(ino)?;
        if !self.client.has(features::SEEK_HOLES) {
            let size = self.attr(ino)?.size;
            return whole_file_is_data(offset, size, whence);
        }
        let path = self.path_of(ino)?;
        let found = self.client.seek(&path, offset, whence)?;
        i64::try_from(found).map_err(|_| Code::Overflow.into())
    }
}

/// The answer for a file with no holes but the one at its end: what the kernel's generic
/// `lseek` gives.
fn whole_file_is_data(offset: u64, size: u64, whence: Whence) -> FsResult<i64> {
    if offset >= size {
        return Err(Code::NoDeviceOrAddress.into());
    }
    let at = match whence {
        Whence::Data => offset,
        Whence::Hole => size,
    };
    i64::try_from(at).map_err(|_| Code::Overflow.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_server_the_whole_file_is_data() {
        assert_eq!(whole_file_is_data(0, 10, Whence::Data).ok(), Some(0));
        assert_eq!(whole_file_is_data(3, 10, Whence::Data).ok(), Some(3));
        assert_eq!(whole_file_is_data(3, 10, Whence::Hole).ok(), Some(10));
        for whence in [Whence::Data, Whence::Hole] {
            let past = whole_file_is_data(10, 10, whence).map_err(|e| e.code());
            assert_eq!(past.err(), Some(Code::NoDeviceOrAddress));
        }
    }
}
