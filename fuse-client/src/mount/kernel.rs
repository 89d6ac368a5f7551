//! Mounting as root with mount(2), as fusermount3 does for root.
//!
//! fuser's own mount(2) path always says type "fuse"; mounting ourselves gives the
//! "fuse.shelf" that findmnt, `df -t` and the mount.fuse conventions expect. The mount data
//! is the FUSE kernel module's (Documentation/filesystems/fuse.rst, "Mount options"): the
//! /dev/fuse descriptor, the root's mode and the owner the kernel checks permissions for.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use anyhow::Context;
use fuser::{MountOption, SessionACL};
use rustix::mount::MountFlags;

use super::options::MountPlan;

/// Opens /dev/fuse and mounts it on the plan's mount point; returns the descriptor the FUSE
/// session serves.
pub(super) fn mount_as_root(plan: &MountPlan) -> anyhow::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .context("opening /dev/fuse (is the fuse module loaded?)")?;
    let fd = OwnedFd::from(dev);
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
        fd.as_raw_fd(),
        libc::S_IFDIR,
        plan.core.uid,
        plan.core.gid,
    );
    if plan.acl != SessionACL::Owner {
        data.push_str(",allow_other");
    }
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
    for opt in &plan.fuse_options {
        match opt {
            MountOption::RO => flags |= MountFlags::RDONLY,
            MountOption::NoExec => flags |= MountFlags::NOEXEC,
            MountOption::NoAtime => flags |= MountFlags::NOATIME,
            _ => {}
        }
    }
    let source = CString::new(format!("shelf#{}", plan.addr)).context("address contains NUL")?;
    let target = CString::new(plan.mountpoint.as_os_str().as_bytes()).context("NUL in path")?;
    let data = CString::new(data).expect("options have no NUL");
    rustix::mount::mount(
        source.as_c_str(),
        target.as_c_str(),
        c"fuse.shelf",
        flags,
        data.as_c_str(),
    )
    .map_err(std::io::Error::from)
    .context("mount(2)")?;
    Ok(fd)
}

/// Tells the kernel that its entry for `name` in `parent` has expired (FUSE_NOTIFY_INVAL_ENTRY
/// with FUSE_EXPIRE_ONLY, Linux 6.2): the next use looks the name up again, and the entry goes
/// only if the lookup finds another file. fuser's `inval_entry` sends no flag, and the kernel
/// then unhashes the entry at once (`d_invalidate`): a program whose working directory it is
/// gets ENOENT from getcwd(3) although nothing changed (a pushed notice of our own `mkdir`
/// made `git init` in the new directory fail). An older kernel ignores the flag and
/// invalidates as before.
pub(super) fn expire_entry(
    fuse: std::os::fd::BorrowedFd<'_>,
    parent: u64,
    name: &[u8],
) -> std::io::Result<()> {
    const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;
    const FUSE_EXPIRE_ONLY: u32 = 1;
    let namelen = u32::try_from(name.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // fuse_out_header (len, error = the notice's code, unique = 0), then
    // fuse_notify_inval_entry_out (parent, namelen, flags), then the name and a NUL.
    let len = 16 + 16 + name.len() + 1;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&FUSE_NOTIFY_INVAL_ENTRY.to_ne_bytes());
    msg.extend_from_slice(&0u64.to_ne_bytes());
    msg.extend_from_slice(&parent.to_ne_bytes());
    msg.extend_from_slice(&namelen.to_ne_bytes());
    msg.extend_from_slice(&FUSE_EXPIRE_ONLY.to_ne_bytes());
    msg.extend_from_slice(name);
    msg.push(0);
    let n = rustix::io::write(fuse, &msg)?;
    if n != len {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    Ok(())
}

/// Lets the kernel read ahead `KERNEL_READ_AHEAD` on this mount rather than its default
/// 128 KiB, so a sequential reader's READ requests come 1 MiB at a time: an eighth of the
/// requests, context switches and replies. Cold 1 GiB read, plaintext, same run: 2.60 s at
/// 128 KiB, 1.31 s at 1 MiB; the mount's CPU 1.88 -> 1.13 s. The setting lives in the mount's
/// backing device (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`), which only root may write;
/// anyone else keeps the default, and the mount works as before.
pub(super) fn widen_read_ahead(mountpoint: &std::path::Path) {
    let kib = crate::fs::KERNEL_READ_AHEAD / 1024;
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    // The newest mount on the point is ours (mountinfo lists them in mount order).
    let Some(ours) = crate::status::shelf_mounts(&info)
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == mountpoint)
    else {
        tracing::debug!("read-ahead: {} not in mountinfo", mountpoint.display());
        return;
    };
    let knob = format!("/sys/class/bdi/{}/read_ahead_kb", ours.device);
    match std::fs::write(&knob, format!("{kib}\n")) {
        Ok(()) => tracing::debug!("read-ahead: {kib} KiB ({knob})"),
        Err(e) => tracing::debug!("read-ahead stays the kernel's: {knob}: {e}"),
    }
}
