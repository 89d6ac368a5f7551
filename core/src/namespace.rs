//! Operations on names: `lookup` and `forget`, and the changes that add, remove or move a
//! name (`mknod`, `mkdir`, `symlink`, `link`, `unlink`, `rmdir`, `rename`), with what each
//! change makes stale in the attributes and listings this mount holds.

use std::time::Instant;

use shelf_proto::{rename_flags, Attr, Code};
use shelf_remote::{RemoteError, Transport};

use crate::attrs::create_perm;
use crate::error::{FsError, FsResult};
use crate::ids::Ino;
use crate::time::timestamp;
use crate::versions::same_file;
use crate::{Core, Invalidate};

/// What a change whose reply never came did on the server, as far as a look afterwards tells.
pub(crate) enum Outcome {
    Done,
    NotDone,
    /// The server could not be asked, or the names hold neither what it would have left
    /// nor what was there before (another client acted meanwhile).
    Unknown,
}

/// A name resolved to an inode, with its attributes.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub ino: Ino,
    pub attr: Attr,
}

impl<T: Transport> Core<T> {
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> FsResult<Entry> {
        if let Some(ino) = self.inodes.child(parent, name) {
            self.drain_writes(ino)?;
        }
        let rule = self.freshness_in(Some(parent));
        let dir_size = self.inodes.last_attr(parent).map(|a| a.size);
        if self.listings.worth_listing(parent, dir_size, &rule) {
            // One of many names of a directory never listed: list it, and answer this name
            // and the next ones from it (`listing.rs`, "Walks").
            let listed = self.prime_listing(parent);
            self.listings
                .walk_listed(parent, listed.as_ref().ok().copied());
            // A server that did not answer the listing will not answer the stat either: one
            // wait for the caller, not two (a refusal, say of a directory it may not read,
            // still leaves the stat to try).
            match listed {
                Err(FsError::Remote(e)) if !matches!(e, RemoteError::Server { .. }) => {
                    return Err(e.into())
                }
                _ => {}
            }
        }
        // Held from the question to the answer's record: a rename over the name in between
        // would otherwise have us file the old file under it. Lock order (`Core`): only leaves
        // (`inodes`, `listings`) are taken under it; the drain above is done.
        let _names = self.names.read();
        let path = self.child_path(parent, name)?;
        if self.listings.absent(parent, name, &rule) {
            return Err(Code::NotFound.into());
        }
        if let Some((listed, listed_at)) = self.listings.entry(parent, name, &rule) {
            // Kept entries go at this mount's every change in the directory (`listing.rs`),
            // so only attributes asked for after the listing can be newer.
            let known = self
                .inodes
                .child(parent, name)
                .and_then(|ino| self.inodes.cached_attr_at(ino));
            let (attr, at) = match known {
                Some((attr, at)) if at > listed_at => (attr, at),
                _ => (listed, listed_at),
            };
            let entry = self.enter(parent, name, attr)?;
            self.inodes.asked_at(entry.ino, at);
            return Ok(entry);
        }
        self.want_watched(parent);
        let asked = Instant::now();
        let attr = self.client.stat(&path)?;
        // Only names found count towards a walk: a program making files looks up names that
        // are not there, and listing for it would not save a round trip.
        self.listings.asked_one(parent);
        let entry = self.enter(parent, name, attr)?;
        self.inodes.asked_at(entry.ino, asked);
        Ok(entry)
    }

    pub fn forget(&self, ino: Ino, nlookup: u64) {
        if self.inodes.forget(ino, nlookup) == 0 {
            let gone = self.kept.lock().remove(&ino);
            if let Some(hidden) = gone {
                self.remove_hidden(ino, &hidden);
            }
        }
    }

    /// Only regular files can be made: the server never creates device nodes or FIFOs
    /// (DESIGN.md, "Ownership").
    pub fn mknod(&self, parent: Ino, name: &[u8], mode: u32, umask: u32) -> FsResult<Entry> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(Code::NotPermitted.into());
        }
        self.check_writable()?;
        let path = self.new_child_path(parent, name)?;
        let made = self.client.create(&path, create_perm(mode, umask), true);
        let attr = self.adding(parent, name, made)?;
        self.dir_changed(parent, name, 0);
        self.enter(parent, name, attr)
    }

    pub fn mkdir(&self, parent: Ino, name: &[u8], mode: u32, umask: u32) -> FsResult<Entry> {
        self.check_writable()?;
        let path = self.new_child_path(parent, name)?;
        let made = self.client.mkdir(&path, create_perm(mode, umask));
        let attr = self.adding(parent, name, made)?;
        self.dir_changed(parent, name, 1);
        let entry = self.enter(parent, name, attr)?;
        self.listings.made(entry.ino);
        self.made_here(entry.ino);
        Ok(entry)
    }

    pub fn unlink(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        // Lock order (`Core`): under `names`, `hide` drains (`writes`, then `open`, `kept`)
        // and takes `open`, then `kept`: all below it.
        let _names = self.names.write();
        let path = self.child_path(parent, name)?;
        let known = self.inodes.child(parent, name);
        match known.filter(|ino| self.is_open(*ino)) {
            // `hide` settles a lost reply itself.
            Some(ino) => self.hide(ino, &path, false)?,
            None => {
                let removed = self.client.unlink(&path);
                self.settle_removal(removed, known, parent, name, &path)?;
            }
        }
        self.listings.removed(parent, name);
        let gone = self.inodes.unlink(parent, name);
        self.dir_changed(parent, name, 0);
        self.changed(&[gone]);
        Ok(())
    }

    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        let removed = self.client.rmdir(&path);
        let known = self.inodes.child(parent, name);
        self.settle_removal(removed, known, parent, name, &path)?;
        self.listings.removed(parent, name);
        if let Some(gone) = self.inodes.unlink(parent, name) {
            self.listings.forget(gone);
        }
        self.dir_changed(parent, name, -1);
        Ok(())
    }

    pub fn symlink(&self, parent: Ino, name: &[u8], target: &[u8]) -> FsResult<Entry> {
        self.check_writable()?;
        let path = self.new_child_path(parent, name)?;
        let made = self.client.symlink(&path, target);
        let attr = self.adding(parent, name, made)?;
        self.dir_changed(parent, name, 0);
        self.enter(parent, name, attr)
    }

    /// `flags` are the kernel's `RENAME_*` bits.
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        let from = self.child_path(parent, name)?;
        let to = self.new_child_path(new_parent, new_name)?;
        let mut wire_flags = 0;
        if flags & libc::RENAME_NOREPLACE != 0 {
            wire_flags |= rename_flags::NOREPLACE;
        }
        if flags & libc::RENAME_EXCHANGE != 0 {
            wire_flags |= rename_flags::EXCHANGE;
        }
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(Code::Invalid.into());
        }
        // Writes in flight name the old path; they must land before the name changes.
        self.drain_all_writes();
        // Lock order (`Core`): as in `unlink`, `hide` takes only locks below `names`.
        let _names = self.names.write();
        if wire_flags & rename_flags::EXCHANGE == 0 {
            if let Some(victim) = self.inodes.child(new_parent, new_name) {
                let known = self.is_open(victim) || self.is_file_kernel_knows(victim);
                if known && !self.same_node(parent, name, victim) {
                    // Keep the replaced file reachable for its open handles, and for an open
                    // of it the kernel may be about to send; a hard link keeps the target
                    // name in place, so the rename stays atomic.
                    self.hide(victim, &to, true)?;
                }
            }
        }
        let moving = self.inodes.child(parent, name);
        if let Err(e) = self.client.rename(&from, &to, wire_flags) {
            self.listings.forget(parent);
            self.listings.forget(new_parent);
            let e = FsError::from(e);
            match self.outcome(&e, moving, &to, &from) {
                // The reply was lost, not the rename: record it as done, and say so.
                Outcome::Done => {}
                Outcome::NotDone => return Err(e),
                Outcome::Unknown => {
                    self.lose_track(&[(parent, name), (new_parent, new_name)]);
                    return Err(e);
                }
            }
        }
        if wire_flags & rename_flags::EXCHANGE == 0 {
            self.listings.removed(parent, name);
        }
        self.listings.added(new_parent, new_name);
        let victim = self.inodes.child(new_parent, new_name);
        let moved_dir = self.is_dir(self.inodes.child(parent, name));
        let victim_dir = self.is_dir(victim);
        let moved = if wire_flags & rename_flags::EXCHANGE != 0 {
            self.inodes.exchange(parent, name, new_parent, new_name);
            self.changed(&[Some(parent), Some(new_parent)]);
            self.inodes.child(parent, name)
        } else {
            self.inodes.rename(parent, name, new_parent, new_name);
            let across = i64::from(moved_dir && parent != new_parent);
            self.dir_changed(parent, name, -across);
            if new_parent != parent {
                self.dir_changed(new_parent, new_name, across - i64::from(victim_dir));
            } else if victim_dir {
                self.dir_changed(parent, new_name, -1);
            } else {
                self.changed_here(parent, new_name);
            }
            self.inodes.child(new_parent, new_name)
        };
        self.changed(&[moved, victim]);
        // A moved directory's watches on the server name it by its old path (`push.rs`).
        for d in [moved, victim].into_iter().flatten() {
            if self.inodes.is_dir(d) {
                self.unwatch_within(d);
            }
        }
        Ok(())
    }

    pub fn link(&self, ino: Ino, new_parent: Ino, new_name: &[u8]) -> FsResult<Entry> {
        self.check_writable()?;
        self.drain_writes(ino)?;
        let existing = self.path_of(ino)?;
        let new = self.new_child_path(new_parent, new_name)?;
        let made = self.client.link(&existing, &new);
        let attr = self.adding(new_parent, new_name, made)?;
        // The old name's attributes (nlink, ctime) changed too.
        self.inodes.set_attr(ino, &attr);
        self.entry_changed(ino);
        self.dir_changed(new_parent, new_name, 0);
        self.enter(new_parent, new_name, attr)
    }

    /// What a change that failed with `e` did: if the server may have done it although no
    /// reply came (`outcome_unknown`), it is asked whether `done` now holds the file `ino`
    /// (it was done) or else `before` still does (it was not). Any other failure was not done.
    pub(crate) fn outcome(
        &self,
        e: &FsError,
        ino: Option<Ino>,
        done: &[u8],
        before: &[u8],
    ) -> Outcome {
        if !e.outcome_unknown() {
            return Outcome::NotDone;
        }
        let Some(ino) = ino else {
            return Outcome::Unknown;
        };
        if self.holds(done, ino) {
            Outcome::Done
        } else if self.holds(before, ino) {
            Outcome::NotDone
        } else {
            Outcome::Unknown
        }
    }

    /// Settles a removal of `name` in `dir` (`path`, the inode `ino` if known) that may have
    /// failed: `Ok` if it was done, lost reply or not; the error if not; and if that cannot
    /// be told, the error after the name is forgotten (`lose_track`).
    fn settle_removal(
        &self,
        removed: Result<(), shelf_remote::RemoteError>,
        ino: Option<Ino>,
        dir: Ino,
        name: &[u8],
        path: &[u8],
    ) -> FsResult<()> {
        let Err(e) = removed else {
            return Ok(());
        };
        let e = FsError::from(e);
        if !e.outcome_unknown() {
            return Err(e);
        }
        match self.client.stat(path) {
            Err(gone) if gone.code() == Code::NotFound => Ok(()),
            Ok(now) if ino.is_some_and(|ino| self.is_as_seen(ino, &now)) => Err(e),
            _ => {
                self.lose_track(&[(dir, name)]);
                Err(e)
            }
        }
    }

    /// Whether the server's `path` is the file the inode was when last seen.
    pub(crate) fn holds(&self, path: &[u8], ino: Ino) -> bool {
        self.client
            .stat(path)
            .is_ok_and(|now| self.is_as_seen(ino, &now))
    }

    /// Whether `now` describes the file the inode was when last seen.
    fn is_as_seen(&self, ino: Ino, now: &Attr) -> bool {
        self.inodes
            .last_attr(ino)
            .is_some_and(|known| same_file(now, &known))
    }

    /// After a change of names whose outcome is unknown: what each of `names` holds on the
    /// server is no longer known, so it goes from the table and the kernel is told to look it
    /// up again. A kernel entry kept in the meantime leads to a node without a path (ESTALE,
    /// and the kernel walks again), never to the file the name held before: a write through
    /// it would land where the program no longer looks. The hidden name kept for a file the
    /// kernel knew but had not open (renamed over, `hide`) goes with it for the same reason.
    pub(crate) fn lose_track(&self, names: &[(Ino, &[u8])]) {
        for &(dir, name) in names {
            self.listings.forget(dir);
            if let Some(ino) = self.inodes.unlink(dir, name) {
                let kept = self.kept.lock().remove(&ino);
                if let Some(hidden) = kept {
                    self.remove_hidden(ino, &hidden);
                }
                self.changed(&[Some(ino)]);
            }
            self.changed(&[Some(dir)]);
            self.invalidate(Invalidate::Entry {
                parent: dir,
                name: name.to_vec(),
            });
        }
    }

    /// Drops cached attributes an entry change made stale: a directory's mtime, ctime and
    /// link count change with its entries, a file's ctime and nlink with its names. The kernel
    /// asks again after such a change, and must not get our old copy (rsync compares the
    /// directory mtimes it set with what `stat` says).
    pub(crate) fn changed(&self, inos: &[Option<Ino>]) {
        for ino in inos.iter().flatten() {
            self.inodes.invalidate_attr(*ino);
            self.entry_changed(*ino);
        }
    }

    /// A directory whose entry `name` this mount just changed (`subdirs` more or fewer
    /// subdirectories). The kernel asks for its attributes again before the next create or
    /// unlink in it (`default_permissions` checks the directory), so instead of forgetting
    /// them, which costs a round trip per file, they are brought up to date here: mtime and
    /// ctime move to now, nlink by the subdirectories. The server's exact times replace these
    /// after the TTL; meanwhile a time set earlier (rsync's) no longer shows as current.
    pub(crate) fn dir_changed(&self, dir: Ino, name: &[u8], subdirs: i64) {
        self.entry_changed(dir);
        self.changed_here(dir, name);
        let Some(mut a) = self.fresh_attr(dir, self.cfg.attr_ttl) else {
            return self.inodes.invalidate_attr(dir);
        };
        let now = timestamp(std::time::SystemTime::now());
        a.mtime = now.max(a.mtime);
        a.ctime = now.max(a.ctime);
        a.nlink = u32::try_from((i64::from(a.nlink) + subdirs).max(1)).unwrap_or(u32::MAX);
        self.inodes.set_attr(dir, &a);
    }

    /// Records a change that adds `name` to `dir` in the listings, or, when it failed (maybe
    /// after the server acted, as with a timeout), that `dir`'s names are no longer known.
    pub(crate) fn adding<R, E>(&self, dir: Ino, name: &[u8], result: Result<R, E>) -> Result<R, E> {
        match &result {
            Ok(_) => self.listings.added(dir, name),
            Err(_) => self.listings.forget(dir),
        }
        result
    }
}
