//! `shelf mount` and `shelf umount`.
//!
//! The flow of `shelf mount`, top to bottom in this file:
//! 1. [`options`]: the arguments and `-o` options become a checked `MountPlan` (mount point is a
//!    directory, sizes in range, token read) before any work starts.
//! 2. Unless `--foreground`, trust on first use asks on the terminal
//!    (`trust::ask_before_detaching`), then [`daemon`] forks while the process still has one
//!    thread; the parent waits on a pipe and exits 0 only once the child has mounted, else
//!    prints the child's error.
//! 3. `mount`: block the unmounting signals ([`signals`]) before any thread exists, connect the
//!    pool, and mount: as root with our own mount(2) ([`kernel`], type "fuse.shelf"), else
//!    through fusermount3. fuser's session has answered the kernel's INIT when this returns.
//! 4. Start the helper threads: keepalive pings, page invalidation for files that changed on
//!    the server, the status socket (`crate::status`), and the signal thread, which unmounts.
//! 5. `serve`: tell a waiting parent "ok", let go of the terminal, and run the FUSE session
//!    until the kernel ends it (after an unmount by `shelf umount` ([`unmount`]), a signal, or
//!    `fusermount3 -u`).
//!
//! mount(8) and fstab reach the same flow through [`helper`], which rewrites
//! `mount.fuse.shelf ADDR DIR -o OPTS` into `shelf mount ADDR DIR -o OPTS`.

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::fs::ShelfFs;
use shelf_core::{Core, Invalidate};
use shelf_remote::{ConnectOptions, Pool};

mod daemon;
mod helper;
mod kernel;
mod options;
mod signals;
mod unmount;

use daemon::Ready;
use options::MountPlan;

pub use helper::helper_args;
pub use options::MountArgs;
pub use unmount::{run_umount, UmountArgs};

/// How often a mount pings its idle connections: well inside the server's default idle
/// timeout (300 s).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(60);

/// Runs `shelf mount`. Returns once the mount is up (detached) or unmounted (foreground).
/// `token` is the global `--token-file`'s. Must be called while the process has one thread.
pub fn run_mount(
    args: MountArgs,
    token: Option<Vec<u8>>,
    trust: crate::cli::trust::Trust,
    busy_wait: Duration,
) -> anyhow::Result<()> {
    let mut plan = options::plan(args, token, trust, busy_wait)?;
    if plan.foreground {
        return serve(&plan, Ready::foreground());
    }
    // On the terminal, before the fork; the child then never asks.
    crate::cli::trust::ask_before_detaching(&plan.addr, &plan.trust)?;
    plan.trust.never_ask = true;
    daemon::detach(|ready| serve(&plan, ready))
}

/// Connects, mounts and serves the kernel until unmounted. A waiting parent hears "ok" once the
/// mount answers (or the error); then standard streams are detached from the terminal.
fn serve(plan: &MountPlan, mut ready: Ready) -> anyhow::Result<()> {
    let detached = ready.is_detached();
    let session = match mount(plan) {
        Ok(s) => s,
        Err(e) => {
            ready.tell(&crate::cli::render(&e));
            return Err(e);
        }
    };
    ready.tell("ok");
    if detached {
        daemon::detach_stdio();
    }
    tracing::info!("mounted {} on {}", plan.addr, plan.mountpoint.display());
    let ran = session.run();
    crate::status::remove_socket(&plan.mountpoint);
    match ran {
        // After a lazy unmount the kernel may end the session with ECONNABORTED rather than
        // ENODEV once the last open file closes; with the mount gone that is a normal end.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted && !still_mounted(plan) => {
            Ok(())
        }
        other => other.context("FUSE session"),
    }
}

/// Connects the pool and mounts; the kernel's INIT is answered when this returns.
fn mount(plan: &MountPlan) -> anyhow::Result<fuser::Session<ShelfFs<Pool>>> {
    let signals = signals::block()?;
    // Chunks, frames and FUSE buffers are hundreds of KiB to a few MiB. A fixed low mmap
    // threshold (it bounded memory) mapped and faulted in every chunk afresh; from the heap,
    // same run: cold 1 GiB read 3.6-5.0 s -> 1.9-2.1 s, mount CPU 4.2-5.4 s -> 1.6-2.0 s, peak
    // memory 273 -> 285 MiB (10 GiB stream: 296 MiB) with a 256 MiB cache.
    crate::heap::keep_large_buffers_in_heap();
    let opts = ConnectOptions {
        addr: plan.addr.clone(),
        token: plan.token.clone(),
        agent: format!("shelf-mount/{}", env!("CARGO_PKG_VERSION")),
        busy_wait: plan.busy_wait,
        ..ConnectOptions::default()
    };
    let (pool, secured) =
        crate::cli::trust::connect_pool(opts, plan.connections as usize, &plan.trust)
            .with_context(|| format!("mount {}", plan.addr))?;
    let core = Arc::new(Core::new(pool, plan.core.clone()));
    // Every connection now, beside the first requests, not in their way (pool docs, point 2).
    let opener = Arc::clone(&core);
    std::thread::Builder::new()
        .name("shelf-connect".into())
        .spawn(move || opener.transport().open_free_slots())?;
    let mut config = fuser::Config::default();
    config.mount_options = plan.fuse_options.clone();
    config.acl = plan.acl;
    config.n_threads = Some((plan.connections as usize * 4).clamp(8, 32));
    config.clone_fd = true;
    let fs = ShelfFs::new(Arc::clone(&core));
    let what = || format!("mount {} on {}", plan.addr, plan.mountpoint.display());
    // Our own handle on /dev/fuse, for the notices fuser cannot send (`expire_entry`).
    let mut fuse_fd = None;
    let session = if rustix::process::geteuid().is_root() {
        let fd = kernel::mount_as_root(plan).with_context(what)?;
        fuse_fd = Some(fd.try_clone().with_context(what)?);
        fuser::Session::from_fd(fs, fd, plan.acl, config).with_context(what)?
    } else {
        // fusermount3 (setuid) mounts for other users, subtype included.
        fuser::Session::new(fs, &plan.mountpoint, &config).with_context(what)?
    };
    kernel::widen_read_ahead(&plan.mountpoint);
    let keepalive = Arc::clone(&core);
    std::thread::Builder::new()
        .name("shelf-keepalive".into())
        .spawn(move || loop {
            std::thread::sleep(KEEPALIVE_EVERY);
            keepalive.transport().keepalive();
        })?;
    let notifier = session.notifier();
    let now = session.notifier();
    let (stale_tx, stale_rx) = std::sync::mpsc::channel::<Invalidate>();
    core.set_invalidator(Box::new(move |what| match what {
        Invalidate::PagesNow(ino) => {
            if let Err(e) = now.inval_inode(fuser::INodeNo(ino.0), 0, 0) {
                tracing::debug!("invalidating inode {}: {e}", ino.0);
            }
        }
        Invalidate::EntryNow { parent, name } => {
            let told =
                now.inval_entry(fuser::INodeNo(parent.0), std::ffi::OsStr::from_bytes(&name));
            if let Err(e) = told {
                tracing::debug!("invalidating an entry of inode {}: {e}", parent.0);
            }
        }
        other => {
            let _ = stale_tx.send(other);
        }
    }));
    std::thread::Builder::new()
        .name("shelf-invalidate".into())
        .spawn(move || {
            for what in stale_rx {
                let told = match (&what, &fuse_fd) {
                    // Offset 0, length 0: every page of the inode (and its cached attributes).
                    (Invalidate::Pages(ino) | Invalidate::PagesNow(ino), _) => {
                        notifier.inval_inode(fuser::INodeNo(ino.0), 0, 0)
                    }
                    (Invalidate::Entry { parent, name }, Some(fd)) => {
                        kernel::expire_entry(fd.as_fd(), parent.0, name)
                    }
                    (
                        Invalidate::Entry { parent, name } | Invalidate::EntryNow { parent, name },
                        _,
                    ) => notifier
                        .inval_entry(fuser::INodeNo(parent.0), std::ffi::OsStr::from_bytes(name)),
                };
                // ENOENT: the kernel holds nothing of it, which is what we asked for.
                if let Err(e) = told {
                    tracing::debug!("invalidating {what:?}: {e}");
                }
            }
        })?;
    core.start_push()?;
    core.start_walk_ahead()?;
    crate::status::serve(core, plan.mountpoint.clone(), secured);
    signals::unmount_on_signal(signals, plan.mountpoint.clone())?;
    Ok(session)
}

/// Whether the plan's mount point is still a shelf mount (when unsure: yes).
fn still_mounted(plan: &MountPlan) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").map_or(true, |info| {
        crate::status::shelf_mounts(&info)
            .iter()
            .any(|m| m.mountpoint == plan.mountpoint)
    })
}
