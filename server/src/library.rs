//! `Library`: every file operation shelfd performs, confined beneath one root directory.
//!
//! What is hard, and how the code is arranged for it:
//!
//! 1. **Staying beneath the root.** Syntax is `RelPath`'s job; symlinks are this module's. Every
//!    lookup starts at the root's `O_PATH` fd and goes through `openat2` with
//!    `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` ([`Library::open_beneath`]), so a symlink that
//!    would lead out (an absolute target, or too many `..`) fails in the kernel, with no window
//!    between a check and a use. The kernel reports that as EXDEV; we send ELOOP, "path escapes
//!    the library" (proto's `Code::Loop` documents this use). Linux 5.6 or later is required;
//!    `Library::open` says so plainly on older kernels instead of falling back.
//! 2. **Changing the tree.** Operations that must not follow a final symlink (unlink, rmdir,
//!    rename, symlink, link, lstat, readlink, mkdir) open the *parent* beneath the root and act
//!    on the last name with an `*at` call ([`Library::parent`]); a single name with no `/` can
//!    not leave that directory. Read, write, create, set-attributes and fsync follow a final
//!    symlink, but only beneath the root, because they open the whole path with `openat2`.
//! 3. **Special files.** Opens use `O_NONBLOCK | O_NOCTTY` so a FIFO or tty in the library
//!    cannot hang or capture a worker; read and write then refuse anything but regular files.
//! 4. **Nothing dangerous is created.** Create, mkdir and put use exactly `perm & 0o777` (the
//!    client applied its umask already; the server's umask is undone with `fchmod`), and
//!    `SetAttr` asking for setuid or setgid bits is refused with EPERM. Device nodes and FIFOs
//!    cannot be created at all: no message asks for them.
//! 5. **Errors.** An `io::Error` becomes a code through `Code::from_io`, the one mapping; the
//!    few refusals that are policy (EPERM, EINVAL, EBUSY, ELOOP above) are chosen here, each
//!    with a message that names the operation and the path.
//! 6. **Extended attributes** are in [`xattr`]: `user.` only, on the file itself.
//! 7. **Atomic put.** `put_begin` makes `.shelf-put-<16 hex>` beside the target with
//!    `O_CREAT | O_EXCL`; `put_commit` fsyncs it, sets its mtime, renames it over the target
//!    and fsyncs the directory. `list` hides those names, and every other name the
//!    implementation keeps for itself (`shelf_proto::reserved`).
//! 8. **Space, holes and copies** are in [`space`]: `fallocate`, `SEEK_DATA`/`SEEK_HOLE` and
//!    `copy_file_range` on files opened beneath the root like reads and writes, with the wire's
//!    `u64`s checked as the kernel checks its `loff_t`s.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Timestamps};
use rustix::time::Timespec;

use shelf_proto::reserved::{is_reserved_name, HIDDEN_DIR};
use shelf_proto::{
    rename_flags, Attr, Code, DirEntry, FileKind, SetAttrs, SetTime, Statfs, Timestamp,
};

use crate::relpath::RelPath;
use crate::sys;

use shelf_proto::reserved::PUT_HEX_DIGITS;
pub use shelf_proto::reserved::{is_put_temp, PUT_PREFIX};

/// Encoded size of an `Attr` on the wire (checked against proto in the tests).
pub(crate) const ATTR_WIRE_LEN: usize = shelf_proto::msg::ATTR_LEN;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);
/// Flags for an fd we only fstat, fchmod, futimens or fsync.
const LOOK: OFlags = OFlags::RDONLY.union(OFlags::NONBLOCK).union(OFlags::NOCTTY);
/// Flags for an fd we write or truncate through.
const WRITE: OFlags = OFlags::WRONLY.union(OFlags::NONBLOCK).union(OFlags::NOCTTY);

/// A failed library operation: the code for programs, the message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub code: Code,
    pub message: String,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// An OS error while doing `op` on `path` (an `io::Error`, or a `rustix` errno).
    fn io(op: &str, path: &RelPath, err: impl Into<io::Error>) -> Error {
        let err = err.into();
        let code = Code::from_io(&err);
        let text = match code {
            // An errno shelf does not carry: keep the OS's own words.
            Code::Io => err.to_string(),
            _ => code.text().to_owned(),
        };
        Error::new(code, format!("{op} {path}: {text}"))
    }

    fn policy(code: Code, op: &str, path: &RelPath, why: &str) -> Error {
        Error::new(code, format!("{op} {path}: {why}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The served directory. Holds only an fd, so it is `Send + Sync` and shared by worker threads.
#[derive(Debug)]
pub struct Library {
    root: OwnedFd,
    root_path: PathBuf,
}

impl Library {
    /// Opens `root` for serving. Fails if it is not a directory or the kernel lacks `openat2`.
    pub fn open(root: &Path) -> io::Result<Library> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(root)?;
        let root_fd = OwnedFd::from(file);
        match sys::openat2(
            root_fd.as_fd(),
            c".",
            OFlags::PATH | OFlags::DIRECTORY,
            0,
            RESOLVE,
        ) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel lacks openat2(2); shelfd needs Linux 5.6 or later",
                ))
            }
            Err(e) => return Err(e),
        }
        Ok(Library {
            root: root_fd,
            root_path: root.to_path_buf(),
        })
    }

    /// The directory as it was given to `open`, for logs.
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// Opens `path` beneath the root, following symlinks only while they stay beneath it.
    fn open_beneath(&self, op: &str, path: &RelPath, flags: OFlags, mode: u32) -> Result<OwnedFd> {
        sys::openat2(self.root.as_fd(), &path.to_cstring(), flags, mode, RESOLVE)
            .map_err(|e| beneath_error(op, path, e))
    }

    /// The parent directory of `path` (opened `O_PATH`) and its last name.
    fn parent(&self, op: &str, path: &RelPath) -> Result<(OwnedFd, CString)> {
        self.parent_with(op, path, OFlags::PATH)
    }

    fn parent_with(&self, op: &str, path: &RelPath, flags: OFlags) -> Result<(OwnedFd, CString)> {
        let Some((parent, name)) = path.split_last() else {
            return Err(Error::policy(
                Code::Busy,
                op,
                path,
                "not allowed on the library root",
            ));
        };
        let fd = self.open_beneath(op, &parent, flags | OFlags::DIRECTORY, 0)?;
        let name = sys::cstr(name).map_err(|e| Error::io(op, path, e))?;
        Ok((fd, name))
    }

    /// lstat: attributes of `path` itself, not of what a final symlink points at.
    pub fn stat(&self, path: &RelPath) -> Result<Attr> {
        let st = if path.is_root() {
            sys::fstat(self.root.as_fd())
        } else {
            let (dir, name) = self.parent("stat", path)?;
            sys::fstatat(dir.as_fd(), &name, AtFlags::SYMLINK_NOFOLLOW)
        };
        st.map(|st| self.shown(path, attr_of(&st)))
            .map_err(|e| Error::io("stat", path, e))
    }

    /// `attr` of `path` as clients see it: the root's link count leaves out the mount's
    /// `.shelf-hidden` directory, which no listing shows (`shelf_proto::reserved`), so `ls -ld`
    /// and `find` count the subdirectories a person can see, as on a local disk.
    fn shown(&self, path: &RelPath, mut attr: Attr) -> Attr {
        if path.is_root() && attr.kind == FileKind::Dir {
            let hidden = sys::cstr(HIDDEN_DIR).ok().and_then(|name| {
                sys::fstatat(self.root.as_fd(), &name, AtFlags::SYMLINK_NOFOLLOW).ok()
            });
            if hidden.is_some_and(|st| attr_of(&st).kind == FileKind::Dir) {
                attr.nlink = attr.nlink.saturating_sub(1);
            }
        }
        attr
    }

    /// Entries of a directory sorted by name bytes, those after `after`, at most `max_entries`
    /// (0: no count limit) and no more than fit a `Listing` reply of `max_payload` bytes.
    /// Returns the entries and whether more remain. Entries that vanish meanwhile are skipped.
    pub fn list(
        &self,
        path: &RelPath,
        after: &[u8],
        max_entries: u32,
        max_payload: u32,
    ) -> Result<(Vec<DirEntry>, bool)> {
        let op = "list";
        let dir = self.open_beneath(op, path, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        let reading = dir.try_clone().map_err(|e| Error::io(op, path, e))?;
        let mut names = sys::read_dir_names(reading).map_err(|e| Error::io(op, path, e))?;
        // Ours, not the library's: no client lists them (`shelf_proto::reserved`).
        names.retain(|n| !is_reserved_name(path.is_root(), n) && n.as_slice() > after);
        names.sort_unstable();

        let limit = match max_entries {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        // Listing payload: u32 count, then per entry u32 length + name + attr, then a bool.
        let budget = (max_payload as usize).saturating_sub(4 + 1);
        let mut used = 0usize;
        let mut entries = Vec::new();
        for name in names {
            let cost = 4 + name.len() + ATTR_WIRE_LEN;
            if entries.len() >= limit || used + cost > budget {
                return Ok((entries, true));
            }
            let cname = sys::cstr(&name).map_err(|e| Error::io(op, path, e))?;
            match sys::fstatat(dir.as_fd(), &cname, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    used += cost;
                    entries.push(DirEntry {
                        name,
                        attr: attr_of(&st),
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(Error::io(op, path, e)),
            }
        }
        Ok((entries, false))
    }

    /// Up to `len` bytes from `offset` (fewer only at end of file), and the file's attributes
    /// taken from the same open file after reading.
    pub fn read(&self, path: &RelPath, offset: u64, len: u32) -> Result<(Attr, Vec<u8>)> {
        let op = "read";
        let file = File::from(self.open_beneath(op, path, LOOK, 0)?);
        let st = sys::fstat(file.as_fd()).map_err(|e| Error::io(op, path, e))?;
        ensure_regular(op, path, &st)?;
        let want = len as usize;
        // Size the buffer by what the file holds now, so a small file does not cost `len`.
        let hint = st.stx_size.saturating_sub(offset);
        let mut buf = Vec::with_capacity(want.min(usize::try_from(hint).unwrap_or(want)));
        while buf.len() < want {
            if buf.len() == buf.capacity() {
                // The file grew since fstat: keep reading up to `len`.
                let more = want.min(buf.len().saturating_mul(2).max(64 << 10));
                buf.reserve_exact(more - buf.len());
            }
            let at = offset.checked_add(buf.len() as u64).ok_or_else(|| {
                Error::policy(Code::Invalid, op, path, "offset past the largest file size")
            })?;
            // Into the spare capacity: zeroing the buffer first cost as much as a copy.
            match rustix::io::pread(&file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => break,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::io(op, path, e)),
            }
        }
        let st = sys::fstat(file.as_fd()).map_err(|e| Error::io(op, path, e))?;
        Ok((attr_of(&st), buf))
    }

    /// Opens the directory `path` (`O_PATH`) for a watch on it (`watch.rs`).
    pub fn open_dir_to_watch(&self, path: &RelPath) -> Result<OwnedFd> {
        self.open_beneath("watch", path, OFlags::PATH | OFlags::DIRECTORY, 0)
    }

    /// Opens `path` to hold locks on it (`locks.rs`): read-write where the server may, else
    /// read-only (enough for a read lock; a write lock on it is EBADF, as locally). Regular
    /// files and directories only.
    pub fn open_for_lock(&self, path: &RelPath) -> Result<OwnedFd> {
        let op = "lock";
        let rdwr = OFlags::RDWR.union(OFlags::NONBLOCK).union(OFlags::NOCTTY);
        let fd = match self.open_beneath(op, path, rdwr, 0) {
            Err(e) if matches!(e.code, Code::Access | Code::ReadOnly | Code::IsDir) => {
                self.open_beneath(op, path, LOOK, 0)?
            }
            other => other?,
        };
        let st = sys::fstat(fd.as_fd()).map_err(|e| Error::io(op, path, e))?;
        match FileType::from_raw_mode(st.stx_mode.into()) {
            FileType::RegularFile | FileType::Directory => Ok(fd),
            _ => Err(Error::policy(Code::Invalid, op, path, "not a regular file")),
        }
    }

    /// Writes all of `data` at `offset` into an existing regular file.
    pub fn write(&self, path: &RelPath, offset: u64, data: &[u8]) -> Result<Attr> {
        let op = "write";
        let fd = self.open_beneath(op, path, WRITE, 0)?;
        let file = File::from(fd);
        let st = sys::fstat(file.as_fd()).map_err(|e| Error::io(op, path, e))?;
        ensure_regular(op, path, &st)?;
        file.write_all_at(data, offset)
            .map_err(|e| Error::io(op, path, e))?;
        start_writeback_behind(&file, offset, data.len() as u64);
        fstat_attr(op, path, file.as_fd())
    }

    /// Creates a regular file with exactly `perm & 0o777`; an existing one is left as it is,
    /// unless `exclusive`, which makes that EEXIST. Never creates through a final symlink.
    pub fn create(&self, path: &RelPath, perm: u32, exclusive: bool) -> Result<Attr> {
        let op = "create";
        let mode = perm & 0o777;
        match self.open_beneath(op, path, LOOK | OFlags::CREATE | OFlags::EXCL, mode) {
            Ok(fd) => {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                    .map_err(|e| Error::io(op, path, e))?;
                fstat_attr(op, path, fd.as_fd())
            }
            Err(e) if e.code == Code::Exists && !exclusive => {
                let fd = self.open_beneath(op, path, LOOK, 0)?;
                let st = sys::fstat(fd.as_fd()).map_err(|e| Error::io(op, path, e))?;
                ensure_regular(op, path, &st)?;
                Ok(attr_of(&st))
            }
            Err(e) => Err(e),
        }
    }

    /// Changes size, mode and times (following a final symlink beneath the root).
    pub fn set_attr(&self, path: &RelPath, attrs: &SetAttrs) -> Result<Attr> {
        let op = "setattr";
        if let Some(perm) = attrs.perm {
            if perm & 0o6000 != 0 {
                return Err(Error::policy(
                    Code::NotPermitted,
                    op,
                    path,
                    "the server does not make setuid or setgid files",
                ));
            }
        }
        // SetAttr acts on the named file itself, like Stat (the kernel sends a symlink's own
        // inode for `touch -h`; chmod and truncate reach the target's inode, never a link).
        if !path.is_root() && self.stat(path)?.kind == FileKind::Symlink {
            return self.set_link_attr(path, attrs);
        }
        let fd = if let Some(size) = attrs.size {
            let fd = self.open_beneath(op, path, WRITE, 0)?;
            let st = sys::fstat(fd.as_fd()).map_err(|e| Error::io(op, path, e))?;
            ensure_regular(op, path, &st)?;
            let file = File::from(fd);
            file.set_len(size).map_err(|e| Error::io(op, path, e))?;
            OwnedFd::from(file)
        } else {
            self.open_beneath(op, path, LOOK, 0)?
        };
        if let Some(perm) = attrs.perm {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm & 0o7777))
                .map_err(|e| Error::io(op, path, e))?;
        }
        if attrs.atime.is_some() || attrs.mtime.is_some() {
            let times = timestamps(attrs.atime, attrs.mtime);
            rustix::fs::futimens(&fd, &times).map_err(|e| Error::io(op, path, e))?;
        }
        fstat_attr(op, path, fd.as_fd()).map(|attr| self.shown(path, attr))
    }

    /// A symlink has only times of its own to set; Linux has no mode for links and no size.
    fn set_link_attr(&self, path: &RelPath, attrs: &SetAttrs) -> Result<Attr> {
        let op = "setattr";
        if attrs.perm.is_some() {
            return Err(Error::policy(
                Code::NotSupported,
                op,
                path,
                "a symbolic link has no mode of its own",
            ));
        }
        if attrs.size.is_some() {
            return Err(Error::policy(
                Code::Invalid,
                op,
                path,
                "a symbolic link has no size to set",
            ));
        }
        if attrs.atime.is_some() || attrs.mtime.is_some() {
            let (dir, name) = self.parent(op, path)?;
            let times = timestamps(attrs.atime, attrs.mtime);
            rustix::fs::utimensat(&dir, &name, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Error::io(op, path, e))?;
        }
        self.stat(path)
    }

    pub fn unlink(&self, path: &RelPath) -> Result<()> {
        let (dir, name) = self.parent("unlink", path)?;
        rustix::fs::unlinkat(&dir, &name, AtFlags::empty())
            .map_err(|e| Error::io("unlink", path, e))
    }

    /// Makes a directory with exactly `perm & 0o1777`.
    pub fn mkdir(&self, path: &RelPath, perm: u32) -> Result<Attr> {
        let op = "mkdir";
        let mode = perm & 0o1777;
        let (dir, name) = self.parent(op, path)?;
        rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io(op, path, e))?;
        let fd = sys::openat(
            dir.as_fd(),
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            0,
        )
        .map_err(|e| Error::io(op, path, e))?;
        // Undo the server's umask and a setgid bit inherited from the parent.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| Error::io(op, path, e))?;
        fstat_attr(op, path, fd.as_fd())
    }

    pub fn rmdir(&self, path: &RelPath) -> Result<()> {
        let (dir, name) = self.parent("rmdir", path)?;
        rustix::fs::unlinkat(&dir, &name, AtFlags::REMOVEDIR)
            .map_err(|e| Error::io("rmdir", path, e))
    }

    /// Atomic rename; `flags` are proto's `rename_flags`.
    pub fn rename(&self, from: &RelPath, to: &RelPath, flags: u32) -> Result<()> {
        let op = "rename";
        let known = rename_flags::NOREPLACE | rename_flags::EXCHANGE;
        if flags & !known != 0 {
            return Err(Error::policy(
                Code::Invalid,
                op,
                from,
                &format!("unknown rename flags {flags:#x}"),
            ));
        }
        let mut os_flags = RenameFlags::empty();
        if flags & rename_flags::NOREPLACE != 0 {
            os_flags |= RenameFlags::NOREPLACE;
        }
        if flags & rename_flags::EXCHANGE != 0 {
            os_flags |= RenameFlags::EXCHANGE;
        }
        let (from_dir, from_name) = self.parent(op, from)?;
        let (to_dir, to_name) = self.parent(op, to)?;
        rustix::fs::renameat_with(&from_dir, &from_name, &to_dir, &to_name, os_flags).map_err(|e| {
            let mut err = Error::io(op, from, e);
            err.message = format!("{op} {from} to {to}: {}", err.code.text());
            err
        })
    }

    /// Makes `path` a symlink holding `target` as given. The link may point anywhere;
    /// following it is what is confined.
    pub fn symlink(&self, path: &RelPath, target: &[u8]) -> Result<Attr> {
        let op = "symlink";
        let (dir, name) = self.parent(op, path)?;
        let target = sys::cstr(target).map_err(|e| Error::io(op, path, e))?;
        rustix::fs::symlinkat(&target, &dir, &name).map_err(|e| Error::io(op, path, e))?;
        sys::fstatat(dir.as_fd(), &name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| attr_of(&st))
            .map_err(|e| Error::io(op, path, e))
    }

    pub fn readlink(&self, path: &RelPath) -> Result<Vec<u8>> {
        let op = "readlink";
        if path.is_root() {
            return Err(Error::policy(Code::Invalid, op, path, "not a symlink"));
        }
        let (dir, name) = self.parent(op, path)?;
        rustix::fs::readlinkat(&dir, &name, Vec::new())
            .map(CString::into_bytes)
            .map_err(|e| Error::io(op, path, e))
    }

    /// Hard link: `new` names what `existing` names (a symlink is linked, not followed).
    pub fn link(&self, existing: &RelPath, new: &RelPath) -> Result<Attr> {
        let op = "link";
        let (from_dir, from_name) = self.parent(op, existing)?;
        let (to_dir, to_name) = self.parent(op, new)?;
        // No AT_SYMLINK_FOLLOW: a symlink is linked as itself, never followed (which could
        // reach outside the root).
        rustix::fs::linkat(&from_dir, &from_name, &to_dir, &to_name, AtFlags::empty())
            .map_err(|e| Error::io(op, new, e))?;
        sys::fstatat(to_dir.as_fd(), &to_name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| attr_of(&st))
            .map_err(|e| Error::io(op, new, e))
    }

    pub fn statfs(&self) -> Result<Statfs> {
        let st = rustix::fs::fstatvfs(&self.root)
            .map_err(|e| Error::io("statfs", &RelPath::root(), e))?;
        Ok(Statfs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: u32::try_from(st.f_bsize).unwrap_or(u32::MAX),
            frsize: u32::try_from(st.f_frsize).unwrap_or(u32::MAX),
            namelen: u32::try_from(st.f_namemax).unwrap_or(u32::MAX),
        })
    }

    /// fsync (or fdatasync) a file or directory.
    pub fn fsync(&self, path: &RelPath, data_only: bool) -> Result<()> {
        let op = "fsync";
        let file = File::from(self.open_beneath(op, path, LOOK, 0)?);
        let done = if data_only {
            file.sync_data()
        } else {
            file.sync_all()
        };
        done.map_err(|e| Error::io(op, path, e))
    }

    /// Starts an atomic put to `path`: creates an empty hidden temporary beside it with
    /// `perm & 0o777` and returns the temporary's path.
    pub fn put_begin(&self, path: &RelPath, perm: u32) -> Result<RelPath> {
        let op = "put";
        let (dir, _) = self.parent(op, path)?;
        let Some((parent, _)) = path.split_last() else {
            return Err(Error::policy(
                Code::Busy,
                op,
                path,
                "not allowed on the library root",
            ));
        };
        let mode = perm & 0o777;
        for _ in 0..16 {
            let random = sys::random_bytes::<{ PUT_HEX_DIGITS / 2 }>()
                .map_err(|e| Error::io(op, path, e))?;
            let mut name = PUT_PREFIX.to_vec();
            for b in random {
                name.extend_from_slice(format!("{b:02x}").as_bytes());
            }
            let cname = sys::cstr(&name).map_err(|e| Error::io(op, path, e))?;
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
            match sys::openat(dir.as_fd(), &cname, flags, 0o600) {
                Ok(fd) => {
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                        .map_err(|e| Error::io(op, path, e))?;
                    return parent
                        .join(&name)
                        .map_err(|e| Error::new(e.code(), format!("{op} {path}: {e}")));
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(Error::io(op, path, e)),
            }
        }
        Err(Error::policy(
            Code::Exists,
            op,
            path,
            "could not find a free temporary name",
        ))
    }

    /// Finishes an atomic put: fsyncs `temp`, sets its mtime if given, renames it over `path`
    /// and fsyncs the directory. `temp` must be a put temporary in `path`'s directory.
    pub fn put_commit(
        &self,
        temp: &RelPath,
        path: &RelPath,
        mtime: Option<Timestamp>,
    ) -> Result<Attr> {
        let op = "put";
        let (temp_parent, temp_name) = temp
            .split_last()
            .ok_or_else(|| Error::policy(Code::Invalid, op, temp, "not a put temporary"))?;
        if !is_put_temp(temp_name) {
            return Err(Error::policy(
                Code::Invalid,
                op,
                temp,
                "not a put temporary",
            ));
        }
        match path.split_last() {
            Some((parent, _)) if parent == temp_parent => {}
            _ => {
                return Err(Error::policy(
                    Code::Invalid,
                    op,
                    path,
                    "the temporary must be in the same directory",
                ))
            }
        }
        let (dir, name) = self.parent_with(op, path, OFlags::RDONLY)?;
        let ctemp = sys::cstr(temp_name).map_err(|e| Error::io(op, temp, e))?;
        let fd = sys::openat(dir.as_fd(), &ctemp, LOOK | OFlags::NOFOLLOW, 0)
            .map_err(|e| Error::io(op, temp, e))?;
        let st = sys::fstat(fd.as_fd()).map_err(|e| Error::io(op, temp, e))?;
        ensure_regular(op, temp, &st)?;
        let file = File::from(fd);
        file.sync_all().map_err(|e| Error::io(op, temp, e))?;
        if let Some(t) = mtime {
            let times = timestamps(None, Some(SetTime::At(t)));
            rustix::fs::futimens(&file, &times).map_err(|e| Error::io(op, temp, e))?;
        }
        rustix::fs::renameat(&dir, &ctemp, &dir, &name).map_err(|e| Error::io(op, path, e))?;
        // The rename is durable only once the directory is.
        File::from(dir)
            .sync_all()
            .map_err(|e| Error::io(op, path, e))?;
        fstat_attr(op, path, file.as_fd())
    }

    /// Removes a put temporary.
    pub fn put_abort(&self, temp: &RelPath) -> Result<()> {
        if !is_put_temp(temp.file_name()) {
            return Err(Error::policy(
                Code::Invalid,
                "put-abort",
                temp,
                "not a put temporary",
            ));
        }
        let (dir, name) = self.parent("put-abort", temp)?;
        rustix::fs::unlinkat(&dir, &name, AtFlags::empty())
            .map_err(|e| Error::io("put-abort", temp, e))
    }
}

/// The error for a failed lookup beneath the root: EXDEV there means "would leave the root".
fn beneath_error(op: &str, path: &RelPath, err: io::Error) -> Error {
    if err.raw_os_error() == Some(libc::EXDEV) {
        Error::policy(Code::Loop, op, path, "path escapes the library")
    } else {
        Error::io(op, path, err)
    }
}

fn ensure_regular(op: &str, path: &RelPath, st: &sys::Stat) -> Result<()> {
    match FileType::from_raw_mode(st.stx_mode.into()) {
        FileType::RegularFile => Ok(()),
        FileType::Directory => Err(Error::io(op, path, Code::IsDir.to_io())),
        _ => Err(Error::policy(Code::Invalid, op, path, "not a regular file")),
    }
}

/// Window of a streaming write whose pages are sent to the disk once the stream has passed it.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// When a write crosses into a new `WRITEBACK_WINDOW`, starts (without waiting for) the
/// disk writes of the window before it. A large file streamed in then reaches its `fsync` with
/// most of its pages already on the disk, instead of all of them: the disk works while the
/// rest of the file is still on the wire. The kernel alone would start only at its dirty
/// threshold, gigabytes later. A failure here is not the write's: `fsync` reports I/O errors.
fn start_writeback_behind(file: &File, offset: u64, len: u64) {
    if let Some(from) = window_behind(offset, len) {
        let _ = sys::start_writeback(file.as_fd(), from, WRITEBACK_WINDOW);
    }
}

/// The window to write back after a write of `len` bytes at `offset`: when the write enters a
/// new window, the one two back. One window of slack, because pipelined writes of a stream
/// arrive a little out of order and pages still being written would go to the disk twice.
fn window_behind(offset: u64, len: u64) -> Option<u64> {
    let end = offset.saturating_add(len);
    let (first, last) = (offset / WRITEBACK_WINDOW, end / WRITEBACK_WINDOW);
    (last > first && last >= 2).then(|| (last - 2) * WRITEBACK_WINDOW)
}

fn fstat_attr(op: &str, path: &RelPath, fd: BorrowedFd<'_>) -> Result<Attr> {
    sys::fstat(fd)
        .map(|st| attr_of(&st))
        .map_err(|e| Error::io(op, path, e))
}

/// Access and modification times for `futimens`/`utimensat`: `None` leaves one as it is.
fn timestamps(atime: Option<SetTime>, mtime: Option<SetTime>) -> Timestamps {
    Timestamps {
        last_access: timespec(atime),
        last_modification: timespec(mtime),
    }
}

fn timespec(t: Option<SetTime>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(SetTime::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(SetTime::At(t)) => Timespec {
            tv_sec: t.secs,
            tv_nsec: t.nanos.into(),
        },
    }
}

fn stamp(secs: i64, nanos: i64) -> Timestamp {
    Timestamp::new(secs, u32::try_from(nanos).unwrap_or(0).min(999_999_999))
}

/// Proto attributes from a `statx`.
pub(crate) fn attr_of(st: &sys::Stat) -> Attr {
    let mode = u32::from(st.stx_mode);
    let kind = match FileType::from_raw_mode(mode) {
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        FileType::Fifo => FileKind::Fifo,
        FileType::Socket => FileKind::Socket,
        FileType::CharacterDevice => FileKind::CharDevice,
        FileType::BlockDevice => FileKind::BlockDevice,
        FileType::RegularFile | FileType::Unknown => FileKind::File,
    };
    let ts = |t: rustix::fs::StatxTimestamp| stamp(t.tv_sec, i64::from(t.tv_nsec));
    let (btime_secs, btime_nanos) = sys::birth_time(st);
    Attr {
        ino: st.stx_ino,
        kind,
        perm: mode & 0o7777,
        nlink: st.stx_nlink,
        size: st.stx_size,
        blocks: st.stx_blocks,
        blksize: st.stx_blksize,
        atime: ts(st.stx_atime),
        mtime: ts(st.stx_mtime),
        ctime: ts(st.stx_ctime),
        btime: stamp(btime_secs, i64::from(btime_nanos)),
    }
}

mod space;
pub use space::COPY_MAX;

#[cfg(test)]
mod tests;
mod xattr;
