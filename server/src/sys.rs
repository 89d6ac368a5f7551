//! The system calls `Library` needs that add a rule of ours on top of `rustix`, and the two
//! that `rustix` does not cover.
//!
//! `Library` calls the plain `*at` calls (`unlinkat`, `mkdirat`, `renameat_with`, `linkat`,
//! `symlinkat`, `readlinkat`, `fchmod`, `futimens`, `utimensat`, `fstatvfs`) from
//! `rustix::fs` directly: they are safe there and this module would only rename them. What
//! lives here is what a bare call would get wrong:
//!
//! - [`openat2`] and [`openat`] always add `O_CLOEXEC` and retry EINTR; `openat2` also retries
//!   the EAGAIN that `RESOLVE_BENEATH` returns when a concurrent rename made the lookup unsafe
//!   to finish, and passes a mode only with `O_CREAT`/`O_TMPFILE` (the kernel refuses one
//!   otherwise).
//! - [`fstatat`] asks `statx` for the birth time too ([`Stat`] says why).
//! - [`read_dir_names`], [`random_bytes`], [`readable_now`]: a loop each around one call.
//! - `unsafe` remains only for `sync_file_range` ([`start_writeback`]) and `mallopt`
//!   ([`keep_large_buffers_in_heap`]), which `rustix` does not wrap; each block says why it is
//!   sound.
//!
//! Errors are `std::io::Error` carrying the kernel's errno, so `Code::from_io` maps them.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;

/// How many times `openat2` retries the EAGAIN of a lookup raced by a rename.
const OPENAT2_RETRIES: u32 = 16;

/// `openat2(2)` with `resolve` flags, retried on EINTR and on the EAGAIN that
/// `RESOLVE_BENEATH` returns when a concurrent rename made the lookup unsafe to finish.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: OFlags,
    mode: u32,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    // `O_TMPFILE` includes the bits of `O_DIRECTORY`, so it is tested as a whole: a plain
    // directory open must not pass a mode.
    let mode = if flags.contains(OFlags::CREATE) || flags.contains(OFlags::TMPFILE) {
        Mode::from_raw_mode(mode)
    } else {
        Mode::empty()
    };
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, resolve) {
            Ok(fd) => return Ok(fd),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if attempts < OPENAT2_RETRIES => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `openat(2)` of one name in `dir`, with `O_CLOEXEC`, retried on EINTR.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
    rustix::io::retry_on_intr(|| {
        rustix::fs::openat(
            dir,
            name,
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
    })
    .map_err(io::Error::from)
}

/// What `statx` says, including the birth time where the file system records one. The birth
/// time tells a new file from an old one that had the same inode number: file systems reuse
/// freed numbers at once, and a file put with the same size and mtime would otherwise look
/// unchanged to every cache keyed by `(ino, size, mtime, ctime)`.
pub type Stat = rustix::fs::Statx;

/// What [`fstatat`] asks the kernel for.
const STATX_MASK: StatxFlags = StatxFlags::BASIC_STATS.union(StatxFlags::BTIME);

/// `statx(2)`; with `AT_SYMLINK_NOFOLLOW` an lstat, with `AT_EMPTY_PATH` and `c""` an fstat.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, flags: AtFlags) -> io::Result<Stat> {
    Ok(rustix::fs::statx(dir, name, flags, STATX_MASK)?)
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    fstatat(fd, c"", AtFlags::EMPTY_PATH)
}

/// The birth time in `st`, as seconds and nanoseconds; zero when the file system has none.
pub fn birth_time(st: &Stat) -> (i64, u32) {
    if StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::BTIME) {
        (st.stx_btime.tv_sec, st.stx_btime.tv_nsec)
    } else {
        (0, 0)
    }
}

/// The names in a directory, without `.` and `..`, in the order the file system gives them.
/// `fd` must be open for reading (not `O_PATH`); it is consumed.
pub fn read_dir_names(fd: OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::new(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
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
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf)
}

/// A C string for one name; names from `RelPath` never hold NUL, other callers get EINVAL.
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from(Errno::INVAL))
}

/// Starts writing `len` bytes from `offset` of `fd`'s dirty pages to the disk, without
/// waiting for them (`sync_file_range(SYNC_FILE_RANGE_WRITE)`; `rustix` has no wrapper).
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: sync_file_range takes no pointers; `fd` is borrowed, so it stays open for the
    // call, and a bad range is an error return, not undefined behaviour.
    let r =
        unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a read of `fd` would not block now (bytes, end of stream or an error waiting):
/// `poll` with a zero timeout reports any event. An interrupted or failed poll says no.
pub fn readable_now(fd: BorrowedFd<'_>) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0) && !fds[0].revents().is_empty()
}

/// Serves the large I/O buffers (frames, chunks: up to a few MiB) from the heap, in at most two
/// arenas, trimmed past 32 MiB free. glibc's defaults give such a buffer back when it is freed
/// (mmap, or trimming the heap top) and fault in fresh zeroed pages for the next; past its
/// growing threshold, one arena per thread keeps what was freed. Call it early, in the server's
/// connection process and in the mount.
pub fn keep_large_buffers_in_heap() {
    // SAFETY: mallopt takes integers only and sets glibc allocator parameters under glibc's own
    // locks; `rustix` has no equivalent because it is a libc call, not a system call.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn open_dir(path: &std::path::Path) -> OwnedFd {
        let root = OwnedFd::from(std::fs::File::open(path).expect("the temp dir opens"));
        openat(root.as_fd(), c".", OFlags::RDONLY | OFlags::DIRECTORY, 0).expect("reopen '.'")
    }

    #[test]
    fn read_dir_names_gives_every_name_but_dot_and_dotdot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut want: Vec<Vec<u8>> = Vec::new();
        for i in 0..300 {
            // Enough names to need more than one getdents buffer.
            let name = format!("entry-{i:03}-{}", "x".repeat(40));
            std::fs::write(dir.path().join(&name), b"").expect("create a file");
            want.push(name.into_bytes());
        }
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        want.push(b"sub".to_vec());
        std::os::unix::fs::symlink("nowhere", dir.path().join(".hidden")).expect("symlink");
        want.push(b".hidden".to_vec());
        let mut got = read_dir_names(open_dir(dir.path())).expect("the listing reads");
        got.sort();
        want.sort();
        assert_eq!(got, want, "every name once, and no '.' or '..'");

        let empty = tempfile::tempdir().expect("temp dir");
        assert!(read_dir_names(open_dir(empty.path()))
            .expect("reads")
            .is_empty());
    }

    #[test]
    fn read_dir_names_of_a_file_is_enotdir() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").expect("create");
        let file = OwnedFd::from(std::fs::File::open(&path).expect("open"));
        let err = read_dir_names(file).expect_err("a file is not a directory");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    }

    #[test]
    fn random_bytes_fill_the_whole_buffer() {
        // A byte stays zero with chance 1/256 per draw; over 8 draws of 512 bytes, every
        // position must have been non-zero at least once.
        let mut seen = [0u8; 512];
        for _ in 0..8 {
            let r = random_bytes::<512>().expect("getrandom works");
            for (s, b) in seen.iter_mut().zip(r) {
                *s |= b;
            }
        }
        assert!(
            seen.iter().all(|&b| b != 0),
            "an unfilled tail would stay zero"
        );
        assert_ne!(random_bytes::<16>().unwrap(), random_bytes::<16>().unwrap());
    }

    #[test]
    fn openat2_refuses_mode_without_create_and_escapes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = open_dir(dir.path());
        let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        // A mode given without O_CREAT is dropped, not passed on (the kernel would say EINVAL).
        openat2(
            root.as_fd(),
            c".",
            OFlags::PATH | OFlags::DIRECTORY,
            0o644,
            beneath,
        )
        .expect("a mode without O_CREAT is ignored");
        let err = openat2(root.as_fd(), c"..", OFlags::PATH, 0, beneath)
            .expect_err("'..' of the root leaves it");
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
        let fd = openat2(
            root.as_fd(),
            c"new",
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            0o600,
            beneath,
        )
        .expect("create beneath the root");
        let st = fstat(fd.as_fd()).expect("fstat");
        assert_eq!(u32::from(st.stx_mode) & 0o777, 0o600 & !current_umask());
        let flags = rustix::io::fcntl_getfd(&fd).expect("F_GETFD");
        assert!(
            flags.contains(rustix::io::FdFlags::CLOEXEC),
            "always O_CLOEXEC"
        );
    }

    #[test]
    fn fstatat_agrees_with_std_and_does_not_follow() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("f"), vec![7u8; 5000]).expect("create");
        std::fs::hard_link(dir.path().join("f"), dir.path().join("g")).expect("link");
        std::os::unix::fs::symlink("f", dir.path().join("l")).expect("symlink");
        let root = open_dir(dir.path());
        for name in ["f", "l"] {
            let c = cstr(name.as_bytes()).expect("no NUL");
            let st = fstatat(root.as_fd(), &c, AtFlags::SYMLINK_NOFOLLOW).expect("statx");
            let md = std::fs::symlink_metadata(dir.path().join(name)).expect("lstat");
            assert_eq!(st.stx_ino, md.ino(), "{name}");
            assert_eq!(u32::from(st.stx_mode), md.mode(), "{name}");
            assert_eq!(u64::from(st.stx_nlink), md.nlink(), "{name}");
            assert_eq!(st.stx_size, md.size(), "{name}");
            assert_eq!(st.stx_blocks, md.blocks(), "{name}");
            assert_eq!(u64::from(st.stx_blksize), md.blksize(), "{name}");
            assert_eq!(st.stx_mtime.tv_sec, md.mtime(), "{name}");
            assert_eq!(i64::from(st.stx_mtime.tv_nsec), md.mtime_nsec(), "{name}");
            assert_eq!(st.stx_ctime.tv_sec, md.ctime(), "{name}");
            match md.created() {
                Ok(t) => {
                    let since = t.duration_since(std::time::UNIX_EPOCH).expect("after 1970");
                    let secs = i64::try_from(since.as_secs()).expect("fits");
                    assert_eq!(birth_time(&st), (secs, since.subsec_nanos()), "{name}");
                }
                Err(_) => assert_eq!(birth_time(&st), (0, 0), "{name}: no birth time"),
            }
        }
        let c = cstr(b"f").expect("no NUL");
        let by_name = fstatat(root.as_fd(), &c, AtFlags::SYMLINK_NOFOLLOW).expect("statx");
        let fd = openat(root.as_fd(), &c, OFlags::RDONLY, 0).expect("open");
        assert_eq!(fstat(fd.as_fd()).expect("fstat").stx_ino, by_name.stx_ino);
        assert_eq!(by_name.stx_nlink, 2);
    }

    fn current_umask() -> u32 {
        let line = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Umask:"))
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).unwrap_or(0o022)
    }
}
