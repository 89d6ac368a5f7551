//! Thin, safe wrappers over the `*at` system calls `Library` is built from.
//!
//! Every `unsafe` block of the sandbox lives here, each with the reason it is sound; the
//! functions take `BorrowedFd` and `&CStr`, return `io::Result`, and know nothing of paths'
//! meaning. `openat2` is called through `syscall(2)` because glibc has no wrapper for it.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `openat2(2)` with `resolve` flags, retried on EINTR and on the EAGAIN that
/// `RESOLVE_BENEATH` returns when a concurrent rename made the lookup unsafe to finish.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain integers; all-zero is its documented "nothing set" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        how.mode = u64::from(mode);
    }
    how.resolve = resolve;
    let mut attempts = 0;
    loop {
        // SAFETY: `path` is NUL-terminated and `how` is a valid `open_how` whose size we pass;
        // the kernel only reads both. The fd we pass is borrowed and stays open for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            let fd = libc::c_int::try_from(ret)
                .map_err(|_| io::Error::other("openat2 returned an impossible fd"))?;
            // SAFETY: the kernel just gave us this fd and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) if attempts < 16 => attempts += 1,
            _ => return Err(err),
        }
    }
}

/// `openat(2)` of one name in `dir`.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is NUL-terminated; `dir` is open for the call.
        let ret = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        match cvt(ret) {
            // SAFETY: the kernel just gave us this fd and nothing else owns it.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What `stat` says, plus the birth time where the file system records one. The birth time
/// tells a new file from an old one that had the same inode number: file systems reuse freed
/// numbers at once, and a file put with the same size and mtime would otherwise look unchanged
/// to every cache keyed by `(ino, size, mtime, ctime)`.
#[derive(Clone, Copy)]
pub struct Stat {
    pub st: libc::stat,
    /// Seconds and nanoseconds; zero when the file system has none.
    pub btime: (i64, u32),
}

impl std::ops::Deref for Stat {
    type Target = libc::stat;
    fn deref(&self) -> &libc::stat {
        &self.st
    }
}

/// `statx(2)` as a `Stat`; with `AT_SYMLINK_NOFOLLOW` an lstat, with `AT_EMPTY_PATH` and
/// `c""` an fstat.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<Stat> {
    let mut sx = MaybeUninit::<libc::statx>::uninit();
    let mask = libc::STATX_BASIC_STATS | libc::STATX_BTIME;
    // SAFETY: `sx` is writable memory of the right type; the kernel fills it on success.
    cvt(unsafe { libc::statx(dir.as_raw_fd(), name.as_ptr(), flags, mask, sx.as_mut_ptr()) })?;
    // SAFETY: statx returned 0, so it initialised `sx`.
    let sx = unsafe { sx.assume_init() };
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_dev = libc::makedev(sx.stx_dev_major, sx.stx_dev_minor);
    st.st_ino = sx.stx_ino;
    st.st_mode = u32::from(sx.stx_mode);
    st.st_nlink = sx.stx_nlink.into();
    st.st_uid = sx.stx_uid;
    st.st_gid = sx.stx_gid;
    st.st_rdev = libc::makedev(sx.stx_rdev_major, sx.stx_rdev_minor);
    st.st_size = sx.stx_size as i64;
    st.st_blksize = sx.stx_blksize.into();
    st.st_blocks = sx.stx_blocks as i64;
    st.st_atime = sx.stx_atime.tv_sec;
    st.st_atime_nsec = sx.stx_atime.tv_nsec.into();
    st.st_mtime = sx.stx_mtime.tv_sec;
    st.st_mtime_nsec = sx.stx_mtime.tv_nsec.into();
    st.st_ctime = sx.stx_ctime.tv_sec;
    st.st_ctime_nsec = sx.stx_ctime.tv_nsec.into();
    let btime = if sx.stx_mask & libc::STATX_BTIME != 0 {
        (sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec)
    } else {
        (0, 0)
    };
    Ok(Stat { st, btime })
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    fstatat(fd, c"", libc::AT_EMPTY_PATH)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; `dir` is open for the call.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; `dir` is open for the call.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub fn renameat2(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; both fds are open for the call.
    cvt(unsafe {
        libc::renameat2(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated; `dir` is open for the call.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes; readlinkat writes at most that many.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(buf)
}

pub fn linkat(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; both fds are open for the call. Flags 0: a
    // symlink is linked as itself, never followed (which could reach outside the root).
    cvt(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on an fd that is open for the call.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

pub fn futimens(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: `times` points at two timespecs, as futimens requires.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// `utimensat(2)` on `name` in `dir`; with `AT_SYMLINK_NOFOLLOW` a symlink's own times.
pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    times: &[libc::timespec; 2],
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `times` points at two timespecs.
    cvt(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` is writable memory of the right type; filled on success.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs returned 0, so it initialised `st`.
    Ok(unsafe { st.assume_init() })
}

/// The names in a directory, without `.` and `..`, in the order the file system gives them.
/// `fd` must be open for reading (not `O_PATH`); it is consumed.
pub fn read_dir_names(fd: OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    use std::os::fd::IntoRawFd;
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` is an open directory fd we own; fdopendir takes it over on success.
    let dir = unsafe { libc::fdopendir(raw) };
    if dir.is_null() {
        let err = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        return Err(err);
    }
    struct Dir(*mut libc::DIR);
    impl Drop for Dir {
        fn drop(&mut self) {
            // SAFETY: the pointer came from a successful fdopendir and is closed once, here.
            unsafe { libc::closedir(self.0) };
        }
    }
    let dir = Dir(dir);
    let mut names = Vec::new();
    loop {
        // readdir returns NULL both at the end and on error; errno tells them apart.
        // SAFETY: errno is thread-local; writing it is how readdir(3) says to check errors.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir.0` is a valid open DIR used by this thread only.
        let ent = unsafe { libc::readdir64(dir.0) };
        if ent.is_null() {
            // SAFETY: reading thread-local errno.
            let errno = unsafe { *libc::__errno_location() };
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
            break;
        }
        // SAFETY: readdir returned a valid entry whose `d_name` is NUL-terminated and stays
        // valid until the next readdir on this DIR; we copy it out before then.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Random bytes from the kernel, for temporary file names.
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        match usize::try_from(n) {
            Ok(n) => filled += n,
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(buf)
}

/// A C string for one name; names from `RelPath` never hold NUL, other callers get EINVAL.
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Starts writing `len` bytes from `offset` of `fd`'s dirty pages to the disk, without
/// waiting for them (`sync_file_range(SYNC_FILE_RANGE_WRITE)`).
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: a plain syscall on a borrowed, open descriptor.
    let r =
        unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits up to `timeout` for `events` (`POLLIN`, `POLLOUT`) on `fd`, and returns those that
/// came (0: none yet, also when a signal cut the wait short).
pub fn poll_fd(fd: BorrowedFd<'_>, events: i16, timeout: std::time::Duration) -> io::Result<i16> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd; `fd` is borrowed for the call.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        n if n > 0 => Ok(pfd.revents),
        0 => Ok(0),
        _ => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            e => Err(e),
        },
    }
}

/// Whether a read of `fd` would not block now (bytes, end of stream or an error wait).
pub fn readable_now(fd: BorrowedFd<'_>) -> bool {
    poll_fd(fd, libc::POLLIN, std::time::Duration::ZERO).is_ok_and(|r| r != 0)
}

/// Serves the large I/O buffers (frames, chunks: up to a few MiB) from the heap, in at most two
/// arenas, trimmed past 32 MiB free. glibc's defaults give such a buffer back when it is freed
/// (mmap, or trimming the heap top) and fault in fresh zeroed pages for the next; past its
/// growing threshold, one arena per thread keeps what was freed. Call it early, in the server's
/// connection process and in the mount.
pub fn keep_large_buffers_in_heap() {
    // SAFETY: mallopt only sets allocator parameters and takes glibc's own locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
