//! Space, holes and server-side copies through a real mount, each compared with the same calls
//! on a local ext4 directory: `fallocate(1)` with its modes and `posix_fallocate` (and ENOSPC on
//! a full disk), `SEEK_DATA`/`SEEK_HOLE` probes, `cp` and `tar -S` of a 4 GiB sparse file that
//! must stay sparse and must not move its holes over the wire, and `cp` inside the mount, which
//! must copy on the server (`copy_file_range`) and move no file data at all.
//!
//! The bytes over the wire are the mount's own count (`shelf status`, "file data"), so a test
//! tells a copy the server did from one that went through the client without timing anything.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
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

/// A local directory on the same kind of disk as the library (ext4 here): what Linux does.
fn local_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shelf-local-")
        .tempdir_in(std::env::temp_dir())
        .expect("local temp dir")
}

/// File bytes the mount has received and sent so far, from `shelf status`.
fn data_moved(mnt: &Path) -> (u64, u64) {
    let out = shelf().arg("status").arg(mnt).run();
    out.assert_ok();
    let text = out.stdout_str();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("file data:"))
        .unwrap_or_else(|| panic!("no file data line in:\n{text}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    (nums[0], nums[1])
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// What `lseek` answers: the offset, or the errno.
type Seeked = Result<i64, i32>;

/// `lseek(fd, offset, whence)`.
fn seek(f: &File, offset: i64, whence: i32) -> Seeked {
    // SAFETY: a plain syscall on an fd we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// `posix_fallocate(fd, offset, len)`: 0 or the errno (it returns the error, errno is unset).
fn posix_fallocate(f: &File, offset: i64, len: i64) -> i32 {
    // SAFETY: a plain call on an fd we own.
    unsafe { libc::posix_fallocate(f.as_raw_fd(), offset, len) }
}

/// `fallocate(fd, mode, offset, len)`: Ok or the errno.
fn fallocate(f: &File, mode: i32, offset: i64, len: i64) -> Result<(), i32> {
    // SAFETY: a plain syscall on an fd we own.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, len) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Every (data start, hole start) pair of a file, found with SEEK_DATA and SEEK_HOLE, then what
/// a seek past the end answers: the map `cp` and `tar -S` work from.
fn extent_map(path: &Path) -> (Vec<(i64, i64)>, Seeked, Seeked) {
    let f = File::open(path).expect("open");
    let size = f.metadata().expect("stat").len() as i64;
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(data) = seek(&f, at, libc::SEEK_DATA) {
        let hole = seek(&f, data, libc::SEEK_HOLE).expect("a hole after data");
        out.push((data, hole));
        at = hole;
        if at >= size {
            break;
        }
    }
    (
        out,
        seek(&f, size, libc::SEEK_DATA),
        seek(&f, size + 1, libc::SEEK_HOLE),
    )
}

fn fallocate_cli(file: &Path, args: &[&str]) -> Output {
    tool("fallocate").args(args).arg(file).run()
}

fn size_and_blocks(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).expect("stat");
    (m.len(), m.blocks())
}

#[test]
fn fallocate_modes_match_local_ext4() {
    require_tool("fallocate", "util-linux");
    let f = fixture!();
    let local = local_dir();
    let steps: &[&[&str]] = &[
        &["-l", "1MiB"],
        &["-n", "-o", "1MiB", "-l", "1MiB"],
        &["-p", "-o", "4096", "-l", "8192"],
        &["-z", "-o", "512KiB", "-l", "3MiB"],
        &["-p", "-o", "0", "-l", "64KiB"],
        &["-x", "-o", "5MiB", "-l", "1MiB"],
    ];
    let on_mount = f.mnt().join("fa");
    let on_local = local.path().join("fa");
    for dir in [f.mnt(), local.path()] {
        write(dir.join("fa"), random_bytes(7, 200_000));
    }
    for step in steps {
        let got = fallocate_cli(&on_mount, step);
        let want = fallocate_cli(&on_local, step);
        assert_eq!(
            got.success(),
            want.success(),
            "fallocate {step:?}: {got:?} vs {want:?}"
        );
        let ((size, blocks), (want_size, want_blocks)) =
            (size_and_blocks(&on_mount), size_and_blocks(&on_local));
        assert_eq!(
            size,
            want_size,
            "size after fallocate {step:?}\n{}",
            f.logs()
        );
        assert_eq!(
            extent_map(&on_mount),
            extent_map(&on_local),
            "data and holes after fallocate {step:?}"
        );
        // ext4 counts its extent tree's own blocks in st_blocks too, and whether a split
        // range needs one more depends on when delayed allocation placed the first write:
        // two runs on the same local disk differ by one 4 KiB block (8 sectors) either way.
        assert!(
            blocks.abs_diff(want_blocks) <= 8,
            "blocks after fallocate {step:?}: {blocks} on the mount, {want_blocks} on ext4"
        );
        assert_bytes_eq(
            &read(&on_mount),
            &read(&on_local),
            &format!("after {step:?}"),
        );
    }
    assert_bytes_eq(&read(f.lib().join("fa")), &read(&on_local), "on the server");
    // Collapsing and inserting ranges are refused, with the reason in the README.
    let collapse = fallocate_cli(&on_mount, &["-c", "-o", "0", "-l", "4096"]);
    collapse.assert_fail();
    assert!(
        collapse.stderr_str().contains("not supported"),
        "{collapse:?}"
    );
}

#[test]
fn posix_fallocate_and_errors_match_local_ext4() {
    let f = fixture!();
    let local = local_dir();
    for dir in [f.mnt(), local.path()] {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("p"))
            .expect("create");
        assert_eq!(posix_fallocate(&file, 0, 5 << 20), 0, "{}", dir.display());
        assert_eq!(file.metadata().expect("stat").len(), 5 << 20);
        assert_eq!(posix_fallocate(&file, -1, 5), libc::EINVAL);
        assert_eq!(posix_fallocate(&file, 0, 0), libc::EINVAL);
        assert_eq!(posix_fallocate(&file, i64::MAX - 10, 100), libc::EFBIG);
        assert_eq!(
            fallocate(&file, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096),
            Err(libc::EOPNOTSUPP),
            "a punch needs KEEP_SIZE"
        );
        let ro = File::open(dir.join("p")).expect("open read-only");
        assert_eq!(fallocate(&ro, 0, 0, 4096), Err(libc::EBADF));
    }
}

#[test]
fn a_punch_under_unflushed_writes_and_cached_pages_reads_as_zeros() {
    let f = fixture!();
    let local = local_dir();
    let mut results = Vec::new();
    for dir in [f.mnt(), local.path()] {
        let path = dir.join("w");
        write(&path, random_bytes(3, 1 << 20));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        // Cached pages of the whole file, then bytes not yet flushed in the middle.
        let mut before = vec![0u8; 1 << 20];
        file.read_exact_at(&mut before, 0).expect("read");
        file.write_all_at(b"written, not yet closed", 300_000)
            .expect("write");
        let keep = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        fallocate(&file, keep, 262_144, 131_072).expect("punch");
        let zero = libc::FALLOC_FL_ZERO_RANGE;
        fallocate(&file, zero, 600_000, 1000).expect("zero range");
        let mut after = vec![0u8; 1 << 20];
        file.read_exact_at(&mut after, 0).expect("read after");
        drop(file);
        results.push((after, read(&path)));
    }
    let (mount_read, mount_closed) = &results[0];
    let (local_read, _) = &results[1];
    assert_bytes_eq(mount_read, local_read, "read through the open descriptor");
    assert_bytes_eq(mount_closed, local_read, "after close");
    assert_bytes_eq(&read(f.lib().join("w")), local_read, "on the server");
    assert!(mount_read[262_144..393_216].iter().all(|&b| b == 0));
}

#[test]
fn posix_fallocate_into_a_full_disk_is_enospc() {
    if !fuse_available() {
        return;
    }
    // Field order: the mount drops first, then the server, then the tmpfs.
    let tmpfs = Tmpfs::new("8m");
    let server = Server::plain(&tmpfs.dir);
    let mount = Mount::plain(server.addr());
    let file = File::create(mount.join("big")).expect("create");
    assert_eq!(posix_fallocate(&file, 0, 64 << 20), libc::ENOSPC);
    assert_eq!(
        fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, 0, 64 << 20),
        Err(libc::ENOSPC)
    );
    drop(file);
    // The disk still works for what fits.
    write(mount.join("small"), b"fits");
    assert_eq!(read(tmpfs.dir.join("small")), b"fits");
    drop(mount);
    drop(server);
}

/// A 4 GiB file with two small data extents, made on the server's side.
fn make_sparse(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let f = File::create(path).expect("create sparse");
    let extents = vec![
        (1 << 20, random_bytes(1, 10_000)),
        (3_000_000_000, random_bytes(2, 5_000)),
    ];
    for (at, data) in &extents {
        f.write_all_at(data, *at).expect("write extent");
    }
    f.set_len(4 << 30).expect("extend");
    extents
}

/// The file is 4 GiB, holds the extents, and is sparse on disk.
fn assert_sparse_copy(path: &Path, extents: &[(u64, Vec<u8>)], what: &str) {
    let f = File::open(path).expect("open copy");
    let m = f.metadata().expect("stat");
    assert_eq!(m.len(), 4 << 30, "{what}: size");
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{what}: {} KiB on disk, not sparse",
        m.blocks() / 2
    );
    for (at, data) in extents {
        let mut got = vec![0u8; data.len()];
        f.read_exact_at(&mut got, *at).expect("read extent");
        assert!(got == *data, "{what}: the extent at {at}");
    }
    let du = tool("du").args(["-k"]).arg(path).run();
    du.assert_ok();
    let kib: u64 = du
        .stdout_str()
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .expect("du prints KiB");
    assert!(kib < 1024, "{what}: du says {kib} KiB");
}

#[test]
fn seek_data_and_hole_match_local_ext4() {
    let f = fixture!();
    let local = local_dir();
    make_sparse(&f.lib().join("s"));
    make_sparse(&local.path().join("s"));
    let got = extent_map(&f.mnt().join("s"));
    let want = extent_map(&local.path().join("s"));
    assert_eq!(
        got, want,
        "SEEK_DATA/SEEK_HOLE through the mount and on ext4"
    );
    assert_eq!(got.1, Err(libc::ENXIO), "no data at the end");
    assert_eq!(got.2, Err(libc::ENXIO), "past the end");
    // Data written and not yet flushed counts as data.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.mnt().join("s"))
        .expect("open");
    file.write_all_at(b"new", 2 << 30).expect("write");
    assert_eq!(seek(&file, 1 << 30, libc::SEEK_DATA), Ok(2 << 30));
    assert_eq!(seek(&file, -1, libc::SEEK_DATA), Err(libc::ENXIO));
}

#[test]
fn cp_and_tar_keep_a_sparse_file_sparse_and_skip_its_holes() {
    let f = fixture!();
    let out = local_dir();
    let extents = make_sparse(&f.lib().join("sparse"));
    let data_len: u64 = extents.iter().map(|(_, d)| d.len() as u64).sum();
    // What moves is the extents' chunks at most, never the 4 GiB of holes.
    let bound = 16 << 20;

    let (rx0, _) = data_moved(f.mnt());
    tool("cp")
        .arg(f.mnt().join("sparse"))
        .arg(out.path().join("out"))
        .run()
        .assert_ok();
    let (rx1, _) = data_moved(f.mnt());
    assert!(
        (data_len..bound).contains(&(rx1 - rx0)),
        "cp out of the mount received {} bytes",
        rx1 - rx0
    );
    assert_sparse_copy(&out.path().join("out"), &extents, "cp out of the mount");

    tool("tar")
        .args(["-S", "-cf"])
        .arg(out.path().join("s.tar"))
        .arg("-C")
        .arg(f.mnt())
        .arg("sparse")
        .run()
        .assert_ok();
    let (rx2, _) = data_moved(f.mnt());
    assert!(rx2 - rx1 < bound, "tar -S received {} bytes", rx2 - rx1);
    let tar_size = std::fs::metadata(out.path().join("s.tar"))
        .expect("tar")
        .len();
    assert!(tar_size < 1 << 20, "the archive is {tar_size} bytes");
    let x = out.path().join("x");
    std::fs::create_dir(&x).expect("mkdir");
    tool("tar")
        .args(["-xSf"])
        .arg(out.path().join("s.tar"))
        .arg("-C")
        .arg(&x)
        .run()
        .assert_ok();
    assert_sparse_copy(&x.join("sparse"), &extents, "tar -S of the mount");

    let (_, tx0) = data_moved(f.mnt());
    tool("cp")
        .arg(out.path().join("out"))
        .arg(f.mnt().join("back"))
        .run()
        .assert_ok();
    let (_, tx1) = data_moved(f.mnt());
    assert!(
        tx1 - tx0 < bound,
        "cp into the mount sent {} bytes",
        tx1 - tx0
    );
    assert_sparse_copy(&f.lib().join("back"), &extents, "cp into the mount");
}

#[test]
fn cp_inside_the_mount_copies_on_the_server() {
    require_tool("strace", "strace");
    let f = fixture!();
    let data = random_bytes(11, 64 << 20);
    std::fs::write(f.lib().join("big.iso"), &data).expect("seed");
    // A destination whose old bytes the mount has cached: they must not be served after.
    write(f.mnt().join("copy.iso"), random_bytes(12, 1 << 20));
    let _ = read(f.mnt().join("copy.iso"));

    let before = data_moved(f.mnt());
    let traced = tool("strace")
        .args(["-f", "-e", "trace=copy_file_range", "cp"])
        .arg(f.mnt().join("big.iso"))
        .arg(f.mnt().join("copy.iso"))
        .run();
    traced.assert_ok();
    let after = data_moved(f.mnt());
    let calls = traced.stderr_str();
    assert!(
        calls
            .lines()
            .any(|l| l.contains("copy_file_range(") && l.contains(&format!("= {}", 64 << 20))),
        "cp copied with copy_file_range through the mount:\n{calls}"
    );
    assert!(
        after.0 - before.0 < 64 << 10 && after.1 - before.1 < 64 << 10,
        "no file data moved: {before:?} then {after:?}"
    );
    assert!(
        read(f.mnt().join("copy.iso")) == data,
        "the copy, read through the mount"
    );
    assert!(
        read(f.lib().join("copy.iso")) == data,
        "the copy on the server"
    );
}

#[test]
fn copy_between_two_mounts_goes_through_the_kernel() {
    let f = fixture!();
    let other = Mount::plain(f.server.addr());
    let data = random_bytes(5, 3 << 20);
    write(f.mnt().join("a"), &data);
    let src = File::open(f.mnt().join("a")).expect("open");
    let dst = File::create(other.join("b")).expect("create");
    let mut off_in: i64 = 0;
    let mut off_out: i64 = 0;
    // SAFETY: a plain syscall on fds we own, with pointers to live locals.
    let r = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            data.len(),
            0,
        )
    };
    // Two mounts are two file systems to the kernel: it refuses (EXDEV) or copies through
    // read and write itself, never asking us to copy across.
    if r < 0 {
        assert_eq!(errno(), libc::EXDEV);
    } else {
        drop(dst);
        assert!(read(other.join("b"))[..r as usize] == data[..r as usize]);
    }
    tool("cp")
        .arg(f.mnt().join("a"))
        .arg(other.join("c"))
        .run()
        .assert_ok();
    assert!(read(f.lib().join("c")) == data);
}

#[test]
fn a_read_only_server_refuses_fallocate_and_copy() {
    let Some(f) = Fixture::with_args(&["--read-only"], &[]) else {
        return;
    };
    std::fs::write(f.lib().join("f"), b"data").expect("seed");
    let path = CString::new(f.mnt().join("f").as_os_str().as_bytes()).expect("path");
    // SAFETY: a plain open of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        assert_eq!(errno(), libc::EROFS);
    } else {
        // SAFETY: fd was just opened and is owned here.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        assert_eq!(posix_fallocate(&file, 0, 1 << 20), libc::EROFS);
    }
    let cp = tool("cp")
        .arg(f.mnt().join("f"))
        .arg(f.mnt().join("g"))
        .run();
    cp.assert_fail();
    assert_eq!(read(f.lib().join("f")), b"data");
    assert!(!f.lib().join("g").exists());
}

/// A small tmpfs mounted on a temp directory; unmounted (lazily) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("shelf-tmpfs-")
            .tempdir()
            .expect("temp dir")
            .keep();
        tool("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .timeout(Duration::from_secs(20))
            .run()
            .assert_ok();
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.dir.as_os_str().as_bytes()) {
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
