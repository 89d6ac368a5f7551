//! File locks through the mount: POSIX record locks (`fcntl`, OFD locks included) and
//! `flock`, kept by the server on the real files (docs/PROTOCOL.md, "Locks"), so they hold
//! across mounts and against programs on the server's machine.
//!
//! What is hard, and how it is handled:
//!
//! 1. **Waiting.** A blocking lock (`F_SETLKW`, `flock` without `LOCK_NB`) is asked of the
//!    server in steps of [`WAIT_STEP`]: between steps the core asks the mount whether the
//!    program got a signal (`interrupted`), and answers EINTR if so, as a local wait would.
//!    A step is bounded so no request outlives the connection's request timeout.
//! 2. **Letting go.** The kernel says when a holder's locks end: a POSIX owner's at each
//!    close of the file (`flush` with its lock owner), a flock or OFD lock's with its open
//!    file (`release`). The core remembers which holders took locks on which file, through
//!    which handle, and sends a release only for those, so closing a file never locked costs
//!    no round trip.
//! 3. **What a lock guards.** A program that takes a lock expects to see what the last
//!    holder wrote, and one that lets go expects the next holder to see its writes (sqlite's
//!    whole design): as NFS does, an unlock first sends the file's writes, and a granted lock
//!    drops the file's cached attributes, chunks and kernel pages (`PagesNow`, before the
//!    program is answered), so its next read asks the server. The names beside it go too
//!    (their attributes, and the kernel's entries): a lock guards more than one file's bytes,
//!    sqlite's journal beside its database is made and removed under the database's lock,
//!    and a holder that still saw the last holder's journal would take it for a hot one.
//!    At most [`MAX_SIBLINGS`] names a grant, so a lock in a huge directory stays cheap.
//! 4. **Loss.** Locks live in the server process of the pool's pinned connection
//!    ([`shelf_remote::Transport::call_pinned`]); when it dies (server restart, network cut)
//!    they are gone, and another client may take them. The core notices by the connection's
//!    epoch at the holder's next lock request, drops what it remembered, and answers that
//!    request ENOLCK, so the program learns that it lost its locks instead of carrying on as
//!    if it held them. The loss is counted for `shelf status`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use shelf_proto::{Code, HeldLock, LockAsk, LockFlavor, LockKind};
use shelf_remote::Transport;

use crate::error::FsResult;
use crate::ids::{Fh, Ino};
use crate::{Core, Invalidate};

/// How long one ask of the server waits for a conflicting lock to go; between asks the
/// program's signals are looked at.
pub const WAIT_STEP: Duration = Duration::from_millis(200);

/// Names beside a locked file forgotten at each grant (module docs, point 3).
pub const MAX_SIBLINGS: usize = 1024;

/// Which lock holders hold locks here, and since which pinned connection (module docs).
#[derive(Debug, Default)]
pub(crate) struct HeldLocks {
    holders: HashMap<Holder, Record>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Holder {
    ino: Ino,
    owner: u64,
    flavor: LockFlavor,
}

#[derive(Debug)]
struct Record {
    /// The pinned connection's epoch when the holder's first lock was taken.
    epoch: u64,
    /// The handles locks were taken through: their release ends an OFD lock's life.
    handles: HashSet<Fh>,
}

/// A lock request from the kernel.
#[derive(Debug, Clone, Copy)]
pub struct LockRequest {
    pub ino: Ino,
    pub fh: Fh,
    pub owner: u64,
    pub flavor: LockFlavor,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
}

impl<T: Transport> Core<T> {
    /// Whether the server keeps locks; without, the kernel keeps them, for this mount only.
    pub fn serves_locks(&self) -> bool {
        self.client.has(shelf_proto::features::LOCKS)
    }

    /// `F_GETLK`: the first lock of another holder in the way of `kind` over the range.
    pub fn getlk(
        &self,
        ino: Ino,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
    ) -> FsResult<Option<HeldLock>> {
        let path = self.path_of(ino)?;
        let ask = ask_of(ino, owner, LockFlavor::Posix, kind, start, end);
        let (held, _) = self.client.test_lock(&path, ask)?;
        Ok(held)
    }

    /// Takes, changes or drops a lock; with `wait`, waits for a conflicting lock to go until
    /// granted or `interrupted` says the program got a signal (EINTR).
    pub fn setlk(
        &self,
        req: LockRequest,
        wait: bool,
        interrupted: &dyn Fn() -> bool,
    ) -> FsResult<()> {
        let path = self.path_of(req.ino)?;
        if req.kind == LockKind::Unlock {
            self.drain_writes(req.ino)?;
        }
        let ask = ask_of(req.ino, req.owner, req.flavor, req.kind, req.start, req.end);
        let step = if wait && req.kind != LockKind::Unlock {
            WAIT_STEP
        } else {
            Duration::ZERO
        };
        let epoch = loop {
            match self.client.lock(&path, ask, step) {
                Ok(epoch) => break epoch,
                Err(e) if e.code() == Code::TryAgain && !step.is_zero() => {
                    if interrupted() {
                        return Err(Code::Interrupted.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.held(req, epoch)?;
        if req.kind != LockKind::Unlock {
            self.revalidate(req.ino);
        }
        Ok(())
    }

    /// Forgets what this mount holds of the file's content, and of the names beside it
    /// (module docs, point 3).
    fn revalidate(&self, ino: Ino) {
        self.inodes.invalidate_attr(ino);
        self.cache.invalidate_file(ino);
        self.pages_unknown(ino);
        self.invalidate(Invalidate::PagesNow(ino));
        for (dir, _) in self.inodes.names_of(ino) {
            self.listings.forget(dir);
            let siblings = self.inodes.children_of(dir);
            for (name, sibling) in siblings.into_iter().take(MAX_SIBLINGS) {
                if sibling != ino {
                    self.inodes.invalidate_attr(sibling);
                    self.invalidate(Invalidate::EntryNow { parent: dir, name });
                }
            }
        }
    }

    /// A close of a file by a POSIX lock owner (`flush`): its POSIX locks on the file end.
    pub fn close_locks(&self, ino: Ino, owner: u64) {
        let holder = Holder {
            ino,
            owner,
            flavor: LockFlavor::Posix,
        };
        let known = self.locks.lock().holders.remove(&holder);
        if known.is_some() {
            self.send_release(holder);
        }
    }

    /// The release of handle `fh`: the flock and OFD locks taken through it end, and any
    /// POSIX lock taken through it whose owner's close did not reach us (the kernel sends no
    /// flush when the handle was read-only and caches nothing).
    pub fn release_locks(&self, fh: Fh) {
        let gone: Vec<Holder> = {
            let mut locks = self.locks.lock();
            let gone: Vec<Holder> = locks
                .holders
                .iter()
                .filter(|(_, r)| r.handles.contains(&fh))
                .map(|(h, _)| *h)
                .collect();
            for h in &gone {
                locks.holders.remove(h);
            }
            gone
        };
        for holder in gone {
            self.send_release(holder);
        }
    }

    /// Lock holders known to hold locks now, and holders whose locks were lost with their
    /// connection so far (for `shelf status`).
    pub fn lock_stats(&self) -> (usize, u64) {
        (
            self.locks.lock().holders.len(),
            self.locks_lost.load(Ordering::Relaxed),
        )
    }

    /// Records what a granted request leaves held, or finds that the holder's earlier locks
    /// were lost (module docs, point 3).
    fn held(&self, req: LockRequest, epoch: u64) -> FsResult<()> {
        let holder = Holder {
            ino: req.ino,
            owner: req.owner,
            flavor: req.flavor,
        };
        let lost = {
            let mut locks = self.locks.lock();
            match locks.holders.get_mut(&holder) {
                Some(r) if r.epoch != epoch => {
                    locks.holders.remove(&holder);
                    true
                }
                Some(r) => {
                    if req.kind == LockKind::Unlock && req.flavor == LockFlavor::Flock {
                        locks.holders.remove(&holder);
                    } else {
                        r.handles.insert(req.fh);
                    }
                    false
                }
                None => {
                    if req.kind != LockKind::Unlock {
                        locks.holders.insert(
                            holder,
                            Record {
                                epoch,
                                handles: HashSet::from([req.fh]),
                            },
                        );
                    }
                    false
                }
            }
        };
        if lost {
            self.locks_lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "the locks of owner {:#x} on inode {} were lost with the server connection \
                 that held them; telling the program (ENOLCK)",
                req.owner,
                req.ino.0
            );
            // What this request just took on the new connection goes too: the program is
            // told it failed.
            self.send_release(holder);
            return Err(Code::NoLocks.into());
        }
        Ok(())
    }

    fn send_release(&self, h: Holder) {
        if let Err(e) = self.client.release_locks(h.ino.0, h.owner, h.flavor) {
            // The connection that held them is gone, and they with it.
            tracing::debug!("releasing the locks of owner {:#x}: {e}", h.owner);
        }
    }
}

fn ask_of(
    ino: Ino,
    owner: u64,
    flavor: LockFlavor,
    kind: LockKind,
    start: u64,
    end: u64,
) -> LockAsk {
    LockAsk {
        file: ino.0,
        owner,
        flavor,
        kind,
        start,
        end,
    }
}
