//! The library's own disk failing under the server (issue #14): an I/O error mid-write, and
//! the file system remounted read-only after an error.
//!
//! This kernel has no device-mapper (no `error` target) and no modules to load, so the faults
//! come from ext4 itself, on a loop image mounted *inside* the library (at `lib/disk`), beside
//! a healthy part of the library on the machine's own disk:
//! - **the disk vanishing**: `EXT4_IOC_SHUTDOWN` with `EXT4_GOING_FLAGS_NOLOGFLUSH`, what
//!   ext4 does when its device is gone: from then on every read, write, fsync and create on
//!   that file system fails with EIO;
//! - **remount read-only**: with `errors=remount-ro`, writing `1` to
//!   `/sys/fs/ext4/<dev>/trigger_fs_error` reports a file-system error, and ext4 remounts
//!   itself read-only; reads go on, changes fail with EROFS.
//!
//! Each test checks that the calls affected fail with an error code (never success, never a
//! hang, never wrong bytes), through the mount and through the CLI, and that the server keeps
//! serving the healthy part of the library to the same mount and to new clients.
//!
//! The image is mounted before the server starts: the server runs in a private mount
//! namespace copied at its start (`Server::start`), so a mount made later would not be there.
//! The faults act on the file system's superblock, shared by every namespace.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shelf_tests::*;

/// A journaled ext4 image, loop-mounted at a directory, unmounted and removed on drop.
struct Ext4Image {
    /// Removed after the unmount (fields drop after `drop` runs).
    _image: tempfile::NamedTempFile,
    at: PathBuf,
}

impl Ext4Image {
    fn mount_at(at: &Path, size_mib: u64) -> Ext4Image {
        let image = tempfile::Builder::new()
            .prefix("shelf-disk-")
            .suffix(".img")
            .tempfile()
            .expect("image file");
        image
            .as_file()
            .set_len(size_mib << 20)
            .expect("size the image");
        tool("mkfs.ext4")
            .args(["-q", "-F", "-O", "has_journal"])
            .arg(image.path())
            .run()
            .assert_ok();
        std::fs::create_dir_all(at).expect("mount point");
        tool("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(image.path())
            .arg(at)
            .run()
            .assert_ok();
        Ext4Image {
            _image: image,
            at: at.to_path_buf(),
        }
    }

    /// The loop device's name (`loop3`), as /sys/fs/ext4 names it.
    fn device(&self) -> String {
        let info = mount_at(&self.at).expect("the image is mounted");
        Path::new(&info.source)
            .file_name()
            .expect("a device path")
            .to_string_lossy()
            .into_owned()
    }

    /// Every later operation on the file system fails with EIO, as when its disk is gone.
    fn shut_down(&self) {
        const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
        const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;
        let dir = std::fs::File::open(&self.at).expect("open the mount point");
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: the ioctl reads one u32 from the pointer, which is valid for the call.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                EXT4_IOC_SHUTDOWN as _,
                &flags,
            )
        };
        assert_eq!(
            rc,
            0,
            "EXT4_IOC_SHUTDOWN: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Reports a file-system error; with `errors=remount-ro` ext4 goes read-only.
    fn trigger_error(&self) {
        let knob = format!("/sys/fs/ext4/{}/trigger_fs_error", self.device());
        std::fs::write(&knob, "1").unwrap_or_else(|e| panic!("{knob}: {e}"));
        // The mount's own options stay "rw"; ext4 notes the state in its super options:
        // `ro`, or on newer kernels `emergency_ro` (a flag of its own, not SB_RDONLY).
        let ro = poll(Duration::from_secs(10), || {
            let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            let line = info
                .lines()
                .rev()
                .find(|l| l.split(' ').nth(4).map(Path::new) == Some(self.at.as_path()))?;
            let (_, sup) = line.split_once(" - ")?;
            let opts = sup.split(' ').nth(2)?;
            opts.split(',')
                .any(|o| o == "ro" || o == "emergency_ro")
                .then_some(())
        });
        assert!(ro.is_some(), "ext4 did not remount read-only");
    }
}

impl Drop for Ext4Image {
    fn drop(&mut self) {
        let target = CString::new(self.at.as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path. Lazy, so a test that failed with files open
        // still leaves no mount behind; the loop device is freed when the last user goes.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A library whose `good/` is on the machine's disk and whose `disk/` is the image; a server
/// on it, and a mount of it. Drops in the reverse order: mount, server, image, library.
struct Rig {
    mount: Mount,
    server: Server,
    disk: Ext4Image,
    lib: tempfile::TempDir,
}

impl Rig {
    fn new() -> Option<Rig> {
        if !fuse_available() || !have_tool("mkfs.ext4") {
            eprintln!("skipped: needs FUSE and mkfs.ext4");
            return None;
        }
        let lib = library();
        std::fs::create_dir(lib.path().join("good")).expect("good dir");
        write(lib.path().join("good/before"), ramp(300_000));
        let disk = Ext4Image::mount_at(&lib.path().join("disk"), 64);
        write(lib.path().join("disk/before"), ramp(200_000));
        let server = Server::start(lib.path(), &[] as &[&str]);
        let mount = Mount::new(server.addr(), &["--attr-ttl", "0"]);
        Some(Rig {
            mount,
            server,
            disk,
            lib,
        })
    }

    /// The healthy part still works: through the mount (a new file written and read back)
    /// and through a new CLI client.
    #[track_caller]
    fn healthy_part_still_served(&self, tag: &str) {
        let data = random_bytes(tag.len() as u64, 123_457);
        let p = self.mount.join(format!("good/{tag}"));
        std::fs::write(&p, &data).unwrap_or_else(|e| panic!("{tag}: write good/: {e}"));
        assert_bytes_eq(
            &read(&p),
            &data,
            &format!("{tag}: good/ read back through the mount"),
        );
        assert_bytes_eq(
            &read(self.lib.path().join(format!("good/{tag}"))),
            &data,
            &format!("{tag}: good/ on the server"),
        );
        assert_bytes_eq(
            &read(self.mount.join("good/before")),
            &ramp(300_000),
            &format!("{tag}: good/before"),
        );
        let local = tempfile::tempdir().expect("scratch");
        let dst = local.path().join("got");
        shelf()
            .args(["get", &self.server.addr().to_string(), "good/before"])
            .arg(&dst)
            .run()
            .assert_ok();
        assert_bytes_eq(
            &read(&dst),
            &ramp(300_000),
            &format!("{tag}: shelf get good/before"),
        );
    }
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[track_caller]
fn assert_errno(what: &str, got: std::io::Result<impl std::fmt::Debug>, allowed: &[i32]) {
    match got {
        Ok(v) => panic!("{what} succeeded ({v:?}); the disk had failed"),
        Err(e) => assert!(
            allowed.contains(&errno_of(&e)),
            "{what}: {e} (errno {}), expected one of {allowed:?}",
            errno_of(&e)
        ),
    }
}

#[test]
fn a_disk_that_vanishes_mid_write_gives_eio_and_the_rest_is_still_served() {
    let Some(rig) = Rig::new() else { return };
    // A write under way: the first part is on the server's disk.
    let path = rig.mount.join("disk/stream");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("create on the image");
    f.write_all(&ramp(1 << 20)).expect("first MiB");
    f.sync_all().expect("fsync before the fault");

    rig.disk.shut_down();

    // The rest of the stream must not be reported written: a write may be taken into the
    // write-behind buffer, but then fsync or close says it failed.
    let more = f.write_all(&ramp(2 << 20));
    let synced = more.and_then(|()| f.sync_all());
    assert_errno("write + fsync after the disk failed", synced, &[libc::EIO]);
    drop(f);
    assert_errno(
        "reading a file on the failed disk",
        std::fs::read(rig.mount.join("disk/before")),
        &[libc::EIO],
    );
    assert_errno(
        "creating a file on the failed disk",
        std::fs::write(rig.mount.join("disk/new"), b"x"),
        &[libc::EIO],
    );
    // The CLI: a put to the failed disk fails with a message, exit code not 0.
    let local = tempfile::tempdir().expect("scratch");
    let src = local.path().join("up");
    write(&src, ramp(10_000));
    let out = shelf()
        .args(["put", &rig.server.addr().to_string()])
        .arg(&src)
        .arg("disk/up")
        .run();
    out.assert_fail();
    out.assert_stderr_contains("input/output error");

    rig.healthy_part_still_served("after-shutdown");
    assert!(
        !rig.server.log().contains("panicked"),
        "{}",
        rig.server.log()
    );
}

#[test]
fn a_disk_remounted_read_only_refuses_changes_with_erofs_and_still_reads() {
    let Some(rig) = Rig::new() else { return };
    let path = rig.mount.join("disk/open");
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("create on the image");
    f.write_all_at(b"before the error", 0).expect("write");
    f.sync_all().expect("fsync before the error");

    rig.disk.trigger_error();

    // A file open for writing: its next writes are not reported durable.
    let after = f
        .write_all_at(&ramp(64 << 10), 0)
        .and_then(|()| f.sync_all());
    assert_errno(
        "write + fsync on the read-only disk",
        after,
        &[libc::EROFS, libc::EIO],
    );
    drop(f);
    for (what, r) in [
        ("create", std::fs::write(rig.mount.join("disk/new"), b"x")),
        ("mkdir", std::fs::create_dir(rig.mount.join("disk/newdir"))),
        (
            "unlink",
            std::fs::remove_file(rig.mount.join("disk/before")),
        ),
        (
            "rename",
            std::fs::rename(rig.mount.join("disk/before"), rig.mount.join("disk/moved")),
        ),
    ] {
        assert_errno(what, r, &[libc::EROFS]);
    }
    // What was there reads back intact.
    assert_bytes_eq(
        &read(rig.mount.join("disk/before")),
        &ramp(200_000),
        "disk/before after the remount",
    );
    let out = shelf()
        .args(["mkdir", &rig.server.addr().to_string(), "disk/cli"])
        .run();
    out.assert_fail();
    out.assert_stderr_contains("read-only");

    rig.healthy_part_still_served("after-remount");
}
