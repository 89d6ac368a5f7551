//! Extended attributes of files beneath the root, stored as the server file's own xattrs.
//!
//! What is hard, and how it is handled:
//!
//! 1. **A descriptor, not a path.** The xattr calls here take an fd (`f*xattr`), opened the way
//!    every lookup is: the parent beneath the root, then the last name with `O_NOFOLLOW`, so no
//!    path is resolved from `/` and a final symlink is never followed. `O_PATH` descriptors are
//!    refused by `fgetxattr` (EBADF), so the file is opened `O_RDONLY | O_NONBLOCK | O_NOCTTY`;
//!    to keep that open from touching a FIFO or a device, the file's kind is looked at first
//!    (`fstatat`, no follow) and again on the open fd, and only regular files and directories
//!    are opened at all. That loses nothing: Linux keeps `user.` attributes on those two kinds
//!    only, and answers ENODATA to a get and EPERM to a set or remove on any other
//!    (`xattr_permission` in fs/xattr.c), which is what this module answers for them.
//! 2. **Which namespaces.** Only `user.` is stored (see [`served`] for why the others are
//!    refused with EOPNOTSUPP). `list_xattr` shows `user.` names only, so nothing the server's
//!    own system keeps on a file (`security.selinux`, `trusted.*` when shelfd runs as root)
//!    shows through.
//! 3. **Linux's error codes.** A name that is empty or over 255 bytes is ERANGE (what the
//!    kernel answers before any file system sees it); the rest (ENODATA, EEXIST for `CREATE`,
//!    ENODATA for `REPLACE`, ENOSPC, EACCES) come from the server's own call, unchanged.
//!
//! Permission is the server's: the file is opened for reading, so a server not running as
//! root cannot set an attribute on a file it may write but not read (EACCES).

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, OFlags, XattrFlags};
use shelf_proto::{xattr, Code};

use super::{Error, Library, Result, LOOK};
use crate::relpath::RelPath;
use crate::sys;

/// The namespace the server stores. The others are refused with EOPNOTSUPP, the answer of a
/// file system that does not keep that namespace (copying tools skip such names quietly):
/// - `trusted.` needs CAP_SYS_ADMIN on the server, and its attributes are for the server's
///   administrator and daemons to rely on; a client must not be able to plant them.
/// - `security.` holds what the server's kernel enforces: `security.capability` would make a
///   program in the library privileged when run on the server, `security.selinux` relabel it.
/// - `system.posix_acl_*` name users and groups by the server's numbers, which mean nothing to
///   a client (and the mount does not check ACLs).
pub fn served(name: &[u8]) -> bool {
    name.starts_with(b"user.")
}

impl Library {
    /// The value of extended attribute `name` of `path` itself.
    pub fn get_xattr(&self, path: &RelPath, name: &[u8]) -> Result<Vec<u8>> {
        let op = "getxattr";
        let cname = checked_name(op, path, name)?;
        let Some(fd) = self.xattr_file(op, path)? else {
            return Err(Error::policy(
                Code::NoData,
                op,
                path,
                "a symlink or special file has no user attributes",
            ));
        };
        // Linux never returns more than `VALUE_MAX` bytes (E2BIG beyond), so this always fits.
        let mut buf = vec![0u8; xattr::VALUE_MAX];
        let n =
            rustix::fs::fgetxattr(&fd, &cname, &mut buf[..]).map_err(|e| Error::io(op, path, e))?;
        buf.truncate(n);
        buf.shrink_to_fit();
        Ok(buf)
    }

    /// Sets extended attribute `name` of `path` itself; `flags` are proto's `xattr` bits.
    pub fn set_xattr(&self, path: &RelPath, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        let op = "setxattr";
        let known = xattr::CREATE | xattr::REPLACE;
        if flags & !known != 0 {
            return Err(Error::policy(
                Code::Invalid,
                op,
                path,
                &format!("unknown setxattr flags {flags:#x}"),
            ));
        }
        let cname = checked_name(op, path, name)?;
        if value.len() > xattr::VALUE_MAX {
            return Err(Error::policy(
                Code::TooBig,
                op,
                path,
                "a value is at most 64 KiB",
            ));
        }
        let mut os_flags = XattrFlags::empty();
        if flags & xattr::CREATE != 0 {
            os_flags |= XattrFlags::CREATE;
        }
        if flags & xattr::REPLACE != 0 {
            os_flags |= XattrFlags::REPLACE;
        }
        let fd = self
            .xattr_file(op, path)?
            .ok_or_else(|| no_user_attrs(op, path))?;
        rustix::fs::fsetxattr(&fd, &cname, value, os_flags).map_err(|e| Error::io(op, path, e))
    }

    /// The `user.` attribute names of `path` itself.
    pub fn list_xattr(&self, path: &RelPath) -> Result<Vec<Vec<u8>>> {
        let op = "listxattr";
        let Some(fd) = self.xattr_file(op, path)? else {
            return Ok(Vec::new());
        };
        // Linux lists at most `LIST_MAX` bytes (E2BIG beyond), so this always fits.
        let mut buf = vec![0u8; xattr::LIST_MAX];
        let n = rustix::fs::flistxattr(&fd, &mut buf[..]).map_err(|e| Error::io(op, path, e))?;
        Ok(buf[..n]
            .split(|&b| b == 0)
            .filter(|name| served(name))
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Removes extended attribute `name` of `path` itself.
    pub fn remove_xattr(&self, path: &RelPath, name: &[u8]) -> Result<()> {
        let op = "removexattr";
        let cname = checked_name(op, path, name)?;
        let fd = self
            .xattr_file(op, path)?
            .ok_or_else(|| no_user_attrs(op, path))?;
        rustix::fs::fremovexattr(&fd, &cname).map_err(|e| Error::io(op, path, e))
    }

    /// `path` itself opened for the `f*xattr` calls when it is a regular file or directory;
    /// `None` for a symlink or special file, which is never opened (module docs, 1).
    fn xattr_file(&self, op: &str, path: &RelPath) -> Result<Option<OwnedFd>> {
        let fd = if path.is_root() {
            self.open_beneath(op, path, LOOK | OFlags::DIRECTORY, 0)?
        } else {
            let (dir, name) = self.parent(op, path)?;
            let st = sys::fstatat(dir.as_fd(), &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Error::io(op, path, e))?;
            if !has_user_attrs(&st) {
                return Ok(None);
            }
            sys::openat(dir.as_fd(), &name, LOOK | OFlags::NOFOLLOW, 0)
                .map_err(|e| Error::io(op, path, e))?
        };
        // The name may have been given to another file between the look and the open.
        let st = sys::fstat(fd.as_fd()).map_err(|e| Error::io(op, path, e))?;
        Ok(has_user_attrs(&st).then_some(fd))
    }
}

/// Whether Linux keeps `user.` attributes on a file of this kind.
fn has_user_attrs(st: &sys::Stat) -> bool {
    matches!(
        FileType::from_raw_mode(st.stx_mode.into()),
        FileType::RegularFile | FileType::Directory
    )
}

fn no_user_attrs(op: &str, path: &RelPath) -> Error {
    Error::policy(
        Code::NotPermitted,
        op,
        path,
        "a symlink or special file cannot have user attributes",
    )
}

/// The name as a C string, if Linux would take it and the server serves its namespace.
fn checked_name(op: &str, path: &RelPath, name: &[u8]) -> Result<std::ffi::CString> {
    if name.is_empty() || name.len() > xattr::NAME_MAX {
        return Err(Error::policy(
            Code::Range,
            op,
            path,
            "an attribute name has 1 to 255 bytes",
        ));
    }
    if !served(name) {
        return Err(Error::policy(
            Code::NotSupported,
            op,
            path,
            "only user. attributes are stored",
        ));
    }
    sys::cstr(name).map_err(|e| Error::io(op, path, e))
}
