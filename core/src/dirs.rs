//! Directory handles: `opendir` snapshots a listing, `readdir` and `readdirplus` hand it out
//! from an offset, each entry carrying the next one's offset.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use shelf_proto::reserved::is_reserved_name;
use shelf_proto::{Attr, Code, DirEntry, FileKind};
use shelf_remote::client::PageTimes;
use shelf_remote::Transport;

use crate::error::{FsError, FsResult};
use crate::handles::OpenDir;
use crate::ids::{Fh, Ino};
use crate::namespace::Entry;
use crate::versions::same_file;
use crate::{Core, ROOT_INO};

/// Entries in the first page of a large directory's listing (`Core::listing`).
const FIRST_PAGE_OF_BIG_DIR: u32 = 256;

/// Receives directory entries for one `readdir` reply, like fuser's `ReplyDirectory[Plus]`.
pub trait DirSink {
    /// Adds one entry; `offset` is where the next `readdir` resumes. Returns true when the
    /// reply is full and the entry was NOT added.
    fn add(&mut self, ino: Ino, offset: u64, name: &[u8], attr: &Attr) -> bool;
}

impl<T: Transport> Core<T> {
    /// Snapshots the listing, so that offsets stay meaningful while the directory changes.
    pub fn opendir(&self, ino: Ino) -> FsResult<Fh> {
        // Listing attributes replace the kernel's; buffered writes must not make them stale.
        self.drain_all_writes();
        let path = self.path_of(ino)?;
        let attr = self.attr(ino)?;
        if attr.kind != FileKind::Dir {
            return Err(Code::NotDir.into());
        }
        self.want_watched(ino);
        self.walk_ahead_from(ino);
        let (entries, pages) = self.listing(ino, &path, false)?;
        let fh = Fh(self.next_fh.fetch_add(1, Ordering::Relaxed));
        self.dirs.lock().insert(
            fh,
            Arc::new(OpenDir {
                ino,
                attr,
                entries,
                pages,
            }),
        );
        Ok(fh)
    }

    /// Lists directory `ino` for lookups of its names (`listing.rs`, "Walks"): how many
    /// entries the server gave. Its attributes will answer lookups, so buffered writes go
    /// first, as for `opendir`.
    pub(crate) fn prime_listing(&self, ino: Ino) -> FsResult<usize> {
        self.drain_all_writes();
        let path = self.path_of(ino)?;
        self.want_watched(ino);
        let (entries, _) = self.listing(ino, &path, true)?;
        Ok(entries.len())
    }

    /// The entries of directory `ino` and when each page of them was asked for: those asked
    /// for ahead of a walk (`ahead.rs`), or kept from the last listing while the server
    /// pushes the directory's changes and none came, else a new listing.
    /// `primed`: for a walk's lookups (`Listings::listed_entries`).
    fn listing(
        &self,
        ino: Ino,
        path: &[u8],
        primed: bool,
    ) -> FsResult<(Arc<Vec<DirEntry>>, PageTimes)> {
        let rule = self.freshness_in(Some(ino));
        if !primed {
            if let Some((ahead, asked)) = self.listings.take_ahead(ino, &rule) {
                self.ahead.hit();
                return Ok((ahead, vec![(0, asked)]));
            }
        }
        if rule.since.is_some() {
            if let Some((kept, asked)) = self.listings.entries(ino, &rule) {
                return Ok((kept, vec![(0, asked)]));
            }
        }
        let (entries, pages) = self.fetch_listing(ino, path)?;
        // A kept listing is as old as its first page.
        let oldest = pages.first().map_or_else(Instant::now, |p| p.1);
        self.listings.listed_entries(ino, &entries, oldest, primed);
        Ok((entries, pages))
    }

    /// Lists directory `ino` at `path` on the server, leaving out the names reserved for
    /// shelf itself.
    pub(crate) fn fetch_listing(
        &self,
        ino: Ino,
        path: &[u8],
    ) -> FsResult<(Arc<Vec<DirEntry>>, PageTimes)> {
        // A large directory's first page is small: the watch asked for with it is then
        // likely confirmed before the rest are asked, and they get the long TTL (`fresh.rs`)
        // instead of outliving the short one while the listing goes on (100,000 entries take
        // over a second).
        let big = self
            .inodes
            .cached_attr_at(ino)
            .is_some_and(|(a, _)| a.size > crate::listing::MAX_PRIMED_DIR_BYTES);
        let first_page = if big { FIRST_PAGE_OF_BIG_DIR } else { 0 };
        let (mut entries, mut pages) = self.client.list_timed(path, first_page)?;
        // The server leaves our names out already; an older one may not. Page starts move
        // down by the names dropped before them.
        let reserved = |e: &DirEntry| is_reserved_name(ino == ROOT_INO, &e.name);
        if entries.iter().any(reserved) {
            for page in pages.iter_mut() {
                page.0 -= entries[..page.0].iter().filter(|e| reserved(e)).count();
            }
            entries.retain(|e| !reserved(e));
        }
        Ok((Arc::new(entries), pages))
    }

    /// Fills `sink` from `offset` on. With `plus`, each entry the sink takes counts as a
    /// kernel lookup (readdirplus), except `.` and `..`.
    pub fn readdir(&self, fh: Fh, offset: u64, plus: bool, sink: &mut dyn DirSink) -> FsResult<()> {
        let dir = self
            .dirs
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(FsError::Local(Code::BadHandle))?;
        let dots = [(&b"."[..], dir.ino), (&b".."[..], dir.ino)];
        let total = dots.len() + dir.entries.len();
        for i in (offset as usize)..total {
            let next = i as u64 + 1;
            if let Some((name, ino)) = dots.get(i) {
                if sink.add(*ino, next, name, &dir.attr) {
                    return Ok(());
                }
                continue;
            }
            let e = &dir.entries[i - dots.len()];
            if plus {
                let asked = dir.asked(i - dots.len());
                let entry = self.enter_listed(dir.ino, &e.name, e.attr, asked)?;
                if sink.add(entry.ino, next, &e.name, &entry.attr) {
                    self.inodes.forget(entry.ino, 1);
                    return Ok(());
                }
            } else {
                let ino = self.inodes.readdir_ino(dir.ino, &e.name, &e.attr);
                if sink.add(ino, next, &e.name, &e.attr) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// `enter` for an entry of an `opendir` snapshot asked for at `asked`. Where the table
    /// already knows another file under the name, a change made through this mount since the
    /// snapshot (a rename over it) is newer than the snapshot: the table's file is reported,
    /// not the snapshot's. So are the table's attributes of the same file when they were
    /// asked for after the snapshot (a kept listing can be older than them).
    fn enter_listed(&self, dir: Ino, name: &[u8], listed: Attr, asked: Instant) -> FsResult<Entry> {
        // Lock order (`Core`): only `inodes`, a leaf, is taken under it; `readdir` holds no
        // lock when it calls this, once per entry.
        let _names = self.names.read();
        let known = self
            .inodes
            .child(dir, name)
            .and_then(|ino| self.inodes.cached_attr_at(ino));
        let (attr, at) = match known {
            Some((attr, at)) if !same_file(&attr, &listed) || at > asked => (attr, at),
            _ => (listed, asked),
        };
        let entry = self.enter(dir, name, attr)?;
        self.inodes.asked_at(entry.ino, at);
        Ok(entry)
    }

    pub fn releasedir(&self, fh: Fh) {
        self.dirs.lock().remove(&fh);
    }
}
