//! Kernel glue: the `fuser::Filesystem` impl. Each method converts the kernel's arguments,
//! calls the matching `Core` method and replies; there is no logic here that a test of the
//! core could not reach. fuser dispatches from several threads (`mount/mod.rs` sets `n_threads`),
//! so a slow remote call holds up only its own thread.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use shelf_proto::{Attr, Code, FileKind, SetTime};

use crate::locks;

use shelf_core::{
    system_time, timestamp, Core, DirSink, Entry, Fh, FsError, Ino, LockRequest, Opened,
    SetAttrRequest, XattrReply,
};
use shelf_remote::Transport;

/// The filesystem the kernel talks to.
pub struct ShelfFs<T: Transport> {
    core: Arc<Core<T>>,
}

impl<T: Transport> ShelfFs<T> {
    pub fn new(core: Arc<Core<T>>) -> Self {
        ShelfFs { core }
    }

    fn fopen_flags(&self, o: &Opened) -> FopenFlags {
        let mut flags = FopenFlags::empty();
        if o.keep_cache {
            flags |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        // A read-only handle has nothing to flush; each close saves a kernel round trip (cp
        // -r and tar out of the mount close thousands). Unless the server keeps locks: a
        // close must then drop the process's locks, a read lock on a read-only file too.
        if !o.writable && !self.core.serves_locks() {
            flags |= FopenFlags::FOPEN_NOFLUSH;
        }
        flags
    }

    /// How long the kernel may keep what it is told of `ino` (`Core::kernel_ttl`).
    fn ttl(&self, ino: Ino) -> Duration {
        self.core.kernel_ttl(ino)
    }

    fn negative_ttl(&self) -> Duration {
        self.core.config().short_ttl()
    }

    fn file_attr(&self, ino: Ino, a: &Attr) -> FileAttr {
        let cfg = self.core.config();
        FileAttr {
            ino: kernel_ino(ino),
            size: a.size,
            blocks: a.blocks,
            atime: system_time(a.atime),
            mtime: system_time(a.mtime),
            ctime: system_time(a.ctime),
            crtime: system_time(a.ctime),
            kind: file_type(a.kind),
            perm: (a.perm & 0o7777) as u16,
            nlink: a.nlink,
            uid: cfg.uid,
            gid: cfg.gid,
            rdev: 0,
            blksize: if a.blksize == 0 { 4096 } else { a.blksize },
            flags: 0,
        }
    }

    fn reply_entry(&self, r: Result<Entry, FsError>, reply: ReplyEntry) {
        match r {
            Ok(e) => reply.entry(
                &self.ttl(e.ino),
                &self.file_attr(e.ino, &e.attr),
                Generation(0),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// A lookup that found nothing is answered as a negative entry (node id 0) valid for the
    /// TTL, so the kernel does not ask again for every `stat` of a missing name (compilers and
    /// git probe many). Our own creates replace the negative entry in the kernel at once.
    fn reply_lookup(&self, r: Result<Entry, FsError>, reply: ReplyEntry) {
        match r {
            // The short TTL: a change notice could not name what the kernel keeps here.
            Err(e) if e.errno() == libc::ENOENT && !self.negative_ttl().is_zero() => {
                let mut attr = self.file_attr(Ino(0), &NEGATIVE);
                attr.ino = INodeNo(0);
                reply.entry(&self.negative_ttl(), &attr, Generation(0));
            }
            r => self.reply_entry(r, reply),
        }
    }
}

/// Attributes sent with a negative entry; the kernel reads only the node id (0) and the TTL.
const NEGATIVE: Attr = Attr {
    ino: 0,
    kind: FileKind::File,
    perm: 0,
    nlink: 0,
    size: 0,
    blocks: 0,
    blksize: 0,
    atime: shelf_proto::Timestamp { secs: 0, nanos: 0 },
    mtime: shelf_proto::Timestamp { secs: 0, nanos: 0 },
    ctime: shelf_proto::Timestamp { secs: 0, nanos: 0 },
    btime: shelf_proto::Timestamp { secs: 0, nanos: 0 },
};

/// The core's inode number for the kernel's: the same number, in the core's type.
fn ino_of(ino: INodeNo) -> Ino {
    Ino(ino.0)
}

fn kernel_ino(ino: Ino) -> INodeNo {
    INodeNo(ino.0)
}

/// The core's file handle for the kernel's: the same number, in the core's type.
fn fh_of(fh: FileHandle) -> Fh {
    Fh(fh.0)
}

fn kernel_fh(fh: Fh) -> FileHandle {
    FileHandle(fh.0)
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(timestamp(t)),
    }
}

fn empty(r: Result<(), FsError>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

struct Plain<'a>(&'a mut ReplyDirectory);

impl DirSink for Plain<'_> {
    fn add(&mut self, ino: Ino, offset: u64, name: &[u8], attr: &Attr) -> bool {
        self.0.add(
            kernel_ino(ino),
            offset,
            file_type(attr.kind),
            OsStr::from_bytes(name),
        )
    }
}

struct Plus<'a, T: Transport> {
    fs: &'a ShelfFs<T>,
    reply: &'a mut ReplyDirectoryPlus,
}

impl<T: Transport> DirSink for Plus<'_, T> {
    fn add(&mut self, ino: Ino, offset: u64, name: &[u8], attr: &Attr) -> bool {
        let fa = self.fs.file_attr(ino, attr);
        self.reply.add(
            kernel_ino(ino),
            offset,
            OsStr::from_bytes(name),
            &self.fs.ttl(ino),
            &fa,
            Generation(0),
        )
    }
}

/// The most the kernel reads ahead of a reader, and so the size of its READ requests (up to
/// `max_pages`, which `max_write` sets to the same 1 MiB). INIT only lowers the kernel's
/// default of 128 KiB; `mount` raises the mount's own setting to this afterwards.
pub(crate) const KERNEL_READ_AHEAD: u32 = 1 << 20;

impl<T: Transport> Filesystem for ShelfFs<T> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each is best effort: an older kernel that lacks one still mounts.
        let wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_MAX_PAGES;
        // Locks go to the server, so they hold across mounts; an older server keeps none,
        // and the kernel then keeps them for this mount alone, as before.
        let locks = if self.core.serves_locks() {
            InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS
        } else {
            InitFlags::empty()
        };
        let _ = config.add_capabilities((wanted | locks) & config.capabilities());
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(KERNEL_READ_AHEAD);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_lookup(self.core.lookup(ino_of(parent), name.as_bytes()), reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino_of(ino), nlookup);
    }

    fn destroy(&mut self) {
        self.core.shutdown();
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.core.getattr(ino_of(ino)) {
            Ok(a) => reply.attr(&self.ttl(ino_of(ino)), &self.file_attr(ino_of(ino), &a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let req = SetAttrRequest {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
        };
        match self.core.setattr(ino_of(ino), req) {
            Ok(a) => reply.attr(&self.ttl(ino_of(ino)), &self.file_attr(ino_of(ino), &a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.core.readlink(ino_of(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            self.core
                .mknod(ino_of(parent), name.as_bytes(), mode, umask),
            reply,
        );
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            self.core
                .mkdir(ino_of(parent), name.as_bytes(), mode, umask),
            reply,
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.core.unlink(ino_of(parent), name.as_bytes()), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.core.rmdir(ino_of(parent), name.as_bytes()), reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let r = self.core.symlink(
            ino_of(parent),
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        );
        self.reply_entry(r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.core.rename(
            ino_of(parent),
            name.as_bytes(),
            ino_of(newparent),
            newname.as_bytes(),
            flags.bits(),
        );
        empty(r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            self.core
                .link(ino_of(ino), ino_of(newparent), newname.as_bytes()),
            reply,
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.core.open(ino_of(ino), flags.0) {
            Ok(o) => reply.opened(kernel_fh(o.fh), self.fopen_flags(&o)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.core.read(fh_of(fh), offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.core.write(fh_of(fh), offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Every close of a descriptor: its writes, then (after them, so the next holder sees
    /// them) the closing process's POSIX locks on the file, as `close(2)` drops them.
    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let flushed = self.core.flush(fh_of(fh));
        self.core.close_locks(ino_of(ino), lock_owner.0);
        empty(flushed, reply);
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let Some(kind) = locks::kind_of(typ) else {
            return reply.error(Errno::EINVAL);
        };
        match self.core.getlk(ino_of(ino), lock_owner.0, kind, start, end) {
            // The kernel refuses offsets past its OFFSET_MAX (EIO), "to the end" included.
            Ok(Some(held)) => reply.locked(
                held.start.min(locks::OFFSET_MAX),
                held.end.min(locks::OFFSET_MAX),
                locks::typ_of(held.kind),
                held.pid,
            ),
            Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Tried at once on this thread; a lock that must wait waits on a thread of its own
    /// (`locks::wait`), so waiting programs never hold up the mount's request threads.
    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let Some(kind) = locks::kind_of(typ) else {
            return reply.error(Errno::EINVAL);
        };
        let tid = req.pid();
        let asked = LockRequest {
            ino: ino_of(ino),
            fh: fh_of(fh),
            owner: lock_owner.0,
            flavor: locks::flavor_of(tid),
            kind,
            start,
            end,
        };
        match self.core.setlk(asked, false, &|| false) {
            Err(e) if sleep && e.code() == Code::TryAgain => {
                locks::wait(Arc::clone(&self.core), asked, tid, reply)
            }
            other => empty(other, reply),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        empty(self.core.release(fh_of(fh)), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(self.core.fsync(fh_of(fh), datasync), reply);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(
            self.core
                .fallocate(fh_of(fh), offset, length, mode)
                .map(drop),
            reply,
        );
    }

    /// The kernel asks only for SEEK_DATA and SEEK_HOLE (and only because this is here).
    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.core.lseek(fh_of(fh), offset, whence) {
            Ok(at) => reply.offset(at),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let copied = self.core.copy_file_range(
            fh_of(fh_in),
            offset_in,
            fh_of(fh_out),
            offset_out,
            len,
            flags.bits(),
        );
        match copied {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino_of(ino)) {
            Ok(fh) => reply.opened(kernel_fh(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self
            .core
            .readdir(fh_of(fh), offset, false, &mut Plain(&mut reply))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.core.readdir(
            fh_of(fh),
            offset,
            true,
            &mut Plus {
                fs: self,
                reply: &mut reply,
            },
        );
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.releasedir(fh_of(fh));
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are made by the server with *at calls as they happen; the server
        // fsyncs directories where its own atomicity needs it (put), so there is nothing
        // buffered here to flush.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.core.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        empty(self.core.access(ino_of(ino), mask.bits()), reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr(
            self.core.getxattr(ino_of(ino), name.as_bytes(), size),
            reply,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self
            .core
            .setxattr(ino_of(ino), name.as_bytes(), value, flags, position);
        empty(r, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr(self.core.listxattr(ino_of(ino), size), reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.core.removexattr(ino_of(ino), name.as_bytes()), reply);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        match self.core.ioctl(fh_of(fh), cmd) {
            Ok(data) => reply.ioctl(0, &data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .core
            .create(ino_of(parent), name.as_bytes(), mode, umask, flags)
        {
            Ok((e, o)) => reply.created(
                &self.ttl(e.ino),
                &self.file_attr(e.ino, &e.attr),
                Generation(0),
                kernel_fh(o.fh),
                self.fopen_flags(&o),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn xattr(r: Result<XattrReply, FsError>, reply: ReplyXattr) {
    match r {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(errno(&e)),
    }
}
