//! POSIX details through a real mount, each compared with the same calls on a local
//! directory (the temp directory, ext4 on CI): link counts of files that lost names, what
//! `O_CREAT` of an existing file changes, and the names the implementation keeps for itself.
//!
//! Each test runs one probe on both and requires the same answer, so what is right is what
//! the local file system does, not what this file expects.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use shelf_tests::*;

macro_rules! fixture {
    () => {
        match Fixture::new() {
            Some(f) => f,
            None => return,
        }
    };
}

/// Runs `probe` in a fresh local directory and in a fresh directory of the mount, and
/// requires the same answer from both.
#[track_caller]
fn same_as_local<R: PartialEq + std::fmt::Debug>(f: &Fixture, probe: impl Fn(&Path) -> R) -> R {
    let local = tempfile::tempdir().expect("local temp dir");
    let want = probe(local.path());
    let dir = f.mnt().join("probe");
    fs::create_dir(&dir).expect("mkdir in the mount");
    let got = probe(&dir);
    assert_eq!(
        got,
        want,
        "the mount differs from the local file system\n{}",
        f.logs()
    );
    got
}

/// `fstat` of an unlinked file still open: no link left (ext4 says 0). The hidden name that
/// keeps the file alive on the server is not the program's.
#[test]
fn an_unlinked_open_file_has_no_links() {
    let f = fixture!();
    let nlinks = same_as_local(&f, |dir| {
        let p = dir.join("tmp");
        fs::write(&p, b"data").expect("write");
        let file = File::open(&p).expect("open");
        let before = file.metadata().expect("fstat").nlink();
        fs::remove_file(&p).expect("unlink");
        let after = file.metadata().expect("fstat after unlink").nlink();
        (before, after)
    });
    assert_eq!(nlinks, (1, 0));
}

/// A file renamed over while open (an editor's save): the old one, still open, has no link
/// left; the new one has one.
#[test]
fn a_file_renamed_over_while_open_has_no_links() {
    let f = fixture!();
    let nlinks = same_as_local(&f, |dir| {
        fs::write(dir.join("doc"), b"one").expect("write doc");
        fs::write(dir.join("doc.tmp"), b"two").expect("write doc.tmp");
        let old = File::open(dir.join("doc")).expect("open doc");
        fs::rename(dir.join("doc.tmp"), dir.join("doc")).expect("rename over");
        let old_links = old.metadata().expect("fstat old").nlink();
        let new_links = fs::metadata(dir.join("doc")).expect("stat new").nlink();
        (old_links, new_links)
    });
    assert_eq!(nlinks, (0, 1));
}

/// A file with three names, one of them renamed over, then another removed: the names left
/// count themselves, through `stat` and through an open descriptor.
#[test]
fn hard_links_left_after_a_rename_over_one_count_right() {
    let f = fixture!();
    let counts = same_as_local(&f, |dir| {
        let name = |n: &str| dir.join(n);
        fs::write(name("h1"), b"shared").expect("write h1");
        fs::hard_link(name("h1"), name("h2")).expect("link h2");
        fs::hard_link(name("h1"), name("h3")).expect("link h3");
        fs::write(name("other"), b"other").expect("write other");
        let open = File::open(name("h1")).expect("open h1");
        let stat_all = || ["h1", "h2", "h3"].map(|n| fs::metadata(name(n)).expect("stat").nlink());
        let first = stat_all();
        fs::rename(name("other"), name("h2")).expect("rename over h2");
        let second = (stat_all(), open.metadata().expect("fstat").nlink());
        fs::remove_file(name("h3")).expect("unlink h3");
        let third = (
            fs::metadata(name("h1")).expect("stat h1").nlink(),
            open.metadata().expect("fstat").nlink(),
        );
        (first, second, third)
    });
    assert_eq!(counts, ([3, 3, 3], ([2, 1, 2], 2), (1, 1)));
}

/// `open(O_CREAT)` without `O_TRUNC` of a file that exists only opens it: its times (to the
/// nanosecond) and size stay, and so do its directory's. Asked twice: once with the name
/// known to the kernel, once for a name made behind the mount's back, whose open the kernel
/// sends as a create.
#[test]
fn o_creat_of_an_existing_file_changes_nothing() {
    let f = fixture!();
    let times = |p: &Path| {
        let m = fs::metadata(p).expect("stat");
        (
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.len(),
        )
    };
    let open_creat = |p: &Path| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(p)
            .expect("open O_CREAT|O_WRONLY");
        drop(file);
    };
    same_as_local(&f, |dir| {
        let p = dir.join("x");
        fs::write(&p, b"kept").expect("write");
        std::thread::sleep(Duration::from_millis(20));
        let before = (times(&p), times(dir));
        open_creat(&p);
        let after = (times(&p), times(dir));
        assert_eq!(after, before, "in {}", dir.display());
        after.0 .4
    });

    // The mount has listed `d` (so it knows `y` is absent) when another client makes `y`.
    let d = f.lib().join("d");
    fs::create_dir(&d).expect("mkdir d in the library");
    fs::read_dir(f.mnt().join("d"))
        .expect("list d")
        .for_each(drop);
    let y = d.join("y");
    fs::write(&y, b"theirs").expect("another client's file");
    let dir_before = times(&f.mnt().join("d"));
    let file_before = times(&y);
    open_creat(&f.mnt().join("d/y"));
    assert_eq!(times(&y), file_before, "{}", f.logs());
    // The directory shows what it showed, or, its cached attributes expired, the server's
    // own times: never a change the open did not make.
    let dir_after = times(&f.mnt().join("d"));
    assert!(
        dir_after == dir_before || dir_after == times(&d),
        "directory times moved: {dir_before:?} -> {dir_after:?} (server {:?})\n{}",
        times(&d),
        f.logs()
    );
    assert_eq!(read(f.mnt().join("d/y")), b"theirs");
}

/// What the mount keeps for itself (the root's `.shelf-hidden`, which an unlinked open file
/// makes) is in no listing, is absent to lookups, and cannot be made or renamed to: EPERM.
#[test]
fn the_mounts_own_names_are_absent_through_the_mount() {
    let f = fixture!();
    let p = f.mnt().join("tmp");
    fs::write(&p, b"data").expect("write");
    let open = File::open(&p).expect("open");
    fs::remove_file(&p).expect("unlink while open");
    assert!(
        f.lib().join(".shelf-hidden").is_dir(),
        "the open file is kept"
    );
    fs::write(f.lib().join(".shelf-put-0123456789abcdef"), b"x").expect("a put's temporary");
    let names: Vec<_> = fs::read_dir(f.mnt())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(names.is_empty(), "listed: {names:?}");
    for name in [".shelf-hidden", ".shelf-put-0123456789abcdef"] {
        let err = fs::symlink_metadata(f.mnt().join(name)).expect_err("stat of ours");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "stat {name}");
    }
    let err = fs::read_dir(f.mnt().join(".shelf-hidden")).expect_err("ls of ours");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let err = fs::create_dir(f.mnt().join(".shelf-hidden")).expect_err("mkdir of ours");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    fs::write(f.mnt().join("mine"), b"mine").expect("write");
    let err = fs::rename(f.mnt().join("mine"), f.mnt().join(".shelf-hidden-1"))
        .expect_err("rename to ours");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    drop(open);
    assert_eq!(read(f.mnt().join("mine")), b"mine");
}

/// `isatty()` of a file (every Python `open()` asks) and `lsattr`'s `FS_IOC_GETFLAGS`: no ioctl
/// reaches the server; each is ENOTTY, what a file system answers an ioctl it does not know,
/// and the mount's log stays quiet (fuser's default warns on every one).
#[test]
fn ioctls_are_answered_not_a_terminal_quietly() {
    use std::os::fd::AsRawFd;
    let f = fixture!();
    let tty = same_as_local(&f, |dir| {
        let p = dir.join("f");
        fs::write(&p, b"data").expect("write");
        let file = File::open(&p).expect("open");
        // SAFETY: isatty only reads the descriptor, which `file` keeps open.
        let is = unsafe { libc::isatty(file.as_raw_fd()) };
        (is, std::io::Error::last_os_error().raw_os_error())
    });
    assert_eq!(tty, (0, Some(libc::ENOTTY)));
    let file = File::open(f.mnt().join("probe/f")).expect("open");
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`, which outlives the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), 0x8008_6601, &mut flags) };
    let err = std::io::Error::last_os_error().raw_os_error();
    assert_eq!((r, err), (-1, Some(libc::ENOTTY)));
    drop(file);
    assert!(!f.mount.log().contains("ioctl"), "{}", f.logs());
}

/// A few everyday calls and tools the other suites do not run, each on a local directory and
/// on the mount with the same outcome: `sed -i` and `install` (an editor's save and a build's
/// copy), `RENAME_EXCHANGE`, `fsync` of a directory, and `flock` (kept by this kernel).
#[test]
fn everyday_calls_behave_as_on_a_local_disk() {
    use std::os::fd::AsRawFd;
    let f = fixture!();
    let source = tempfile::tempdir().expect("source dir");
    let installed = source.path().join("tool");
    fs::write(&installed, b"#!/bin/sh\n").expect("write");
    same_as_local(&f, |dir| {
        fs::write(dir.join("s.txt"), b"abc\n").expect("write");
        tool("sed")
            .args(["-i", "s/a/b/"])
            .arg(dir.join("s.txt"))
            .run()
            .assert_ok();
        tool("install")
            .args(["-m", "755"])
            .arg(&installed)
            .arg(dir.join("tool"))
            .run()
            .assert_ok();
        fs::write(dir.join("x"), b"x").expect("write");
        fs::write(dir.join("y"), b"y").expect("write");
        let path = |n: &str| {
            std::ffi::CString::new(dir.join(n).as_os_str().as_encoded_bytes()).expect("no NUL")
        };
        let (x, y) = (path("x"), path("y"));
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        let swapped = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                x.as_ptr(),
                libc::AT_FDCWD,
                y.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        File::open(dir)
            .expect("open dir")
            .sync_all()
            .expect("fsync dir");
        let file = File::open(dir.join("x")).expect("open");
        // SAFETY: flock only acts on the descriptor, which `file` keeps open.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let mode = fs::metadata(dir.join("tool")).expect("stat").mode() & 0o7777;
        (
            read(dir.join("s.txt")),
            read(dir.join("tool")),
            mode,
            swapped,
            read(dir.join("x")),
            read(dir.join("y")),
            locked,
        )
    });
}

/// What the mount refuses, with the answers the README's table gives.
#[test]
fn refusals_are_the_documented_ones() {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fixture!();
    let err = tool("mkfifo").arg(f.mnt().join("fifo")).run();
    assert!(!err.success(), "mkfifo must be refused\n{err}");
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("no NUL");
    let fifo = c(&f.mnt().join("fifo"));
    // SAFETY: a NUL-terminated path that outlives the call.
    let r = unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
    assert_eq!((r, errno()), (-1, libc::EPERM));
    let tmp = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(f.mnt())
        .expect_err("O_TMPFILE");
    assert_eq!(tmp.raw_os_error(), Some(libc::EOPNOTSUPP));
    fs::write(f.mnt().join("a"), b"a").expect("write");
    let (a, b) = (c(&f.mnt().join("a")), c(&f.mnt().join("b")));
    // SAFETY: NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_WHITEOUT,
        )
    };
    assert_eq!((r, errno()), (-1, libc::EINVAL));
    assert_eq!(read(f.mnt().join("a")), b"a");
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
