//! `shelf umount`, also used when a mount is told to stop by a signal.
//!
//! A mount point must never stay wedged: a normal unmount first, then a lazy one (the kernel
//! detaches it now and finishes when the last open file closes) if the mount is busy or its
//! server is gone. Root calls umount2(2) itself; anyone else goes through the setuid
//! `fusermount3`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use rustix::io::Errno;
use rustix::mount::UnmountFlags;

/// Arguments of `shelf umount`.
#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// The mount point to unmount.
    pub mountpoint: PathBuf,
}

/// Runs `shelf umount`: a normal unmount, then a lazy one if the mount is busy or its
/// server is gone, so a mount point never stays wedged.
pub fn run_umount(args: UmountArgs) -> anyhow::Result<()> {
    unmount(&args.mountpoint)
}

pub(super) fn unmount(mp: &Path) -> anyhow::Result<()> {
    if rustix::process::geteuid().is_root() {
        return unmount_as_root(mp);
    }
    for args in [&["-u"][..], &["-u", "-z"][..]] {
        let out = Command::new("fusermount3").args(args).arg(mp).output();
        match out {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) if args.len() == 2 => bail!(
                "umount {}: {}",
                mp.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Ok(_) => {}
            Err(e) => return Err(e).context("running fusermount3 (is fuse3 installed?)"),
        }
    }
    Ok(())
}

fn unmount_as_root(mp: &Path) -> anyhow::Result<()> {
    let first = match rustix::mount::unmount(mp, UnmountFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    // EINVAL: not a mount point; ENOENT: no such path (umount2(2)).
    if first == Errno::INVAL || first == Errno::NOENT {
        bail!("umount {}: not mounted", mp.display());
    }
    if rustix::mount::unmount(mp, UnmountFlags::DETACH).is_ok() {
        return Ok(());
    }
    Err(std::io::Error::from(first)).with_context(|| format!("umount {}", mp.display()))
}
