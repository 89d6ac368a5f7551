//! Directory handles: `opendir` snapshots a listing, `readdir` and `readdirplus` hand it out
//! from an offset, each entry carrying the next one's offset.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use shelf_proto::reserved::is_reserved_name;
use shelf_proto::{Attr, Code, FileKind};
use shelf_remote::Transport;

use crate::error::{FsError, FsResult};
use crate::handles::OpenDir;
use crate::ids::{Fh, Ino};
use crate::namespace::Entry;
use crate::versions::same_file;
use crate::{Core, ROOT_INO};

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
        let mut entries = self.client.list(&path)?;
        // The server leaves our names out already; an older one may not.
        entries.retain(|e| !is_reserved_name(ino == ROOT_INO, &e.name));
        self.listings
            .listed(ino, entries.iter().map(|e| e.name.as_slice()));
        let fh = Fh(self.next_fh.fetch_add(1, Ordering::Relaxed));
        self.dirs
            .lock()
            .insert(fh, Arc::new(OpenDir { ino, attr, entries }));
        Ok(fh)
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
                let entry = self.enter_listed(dir.ino, &e.name, e.attr)?;
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

    /// `enter` for an entry of an `opendir` snapshot. Where the table already knows another
    /// file under the name, a change made through this mount since the snapshot (a rename over
    /// it) is newer than the snapshot: the table's file is reported, not the snapshot's.
    fn enter_listed(&self, dir: Ino, name: &[u8], listed: Attr) -> FsResult<Entry> {
        // Lock order (`Core`): only `inodes`, a leaf, is taken under it; `readdir` holds no
        // lock when it calls this, once per entry.
        let _names = self.names.read();
        let known = self
            .inodes
            .child(dir, name)
            .and_then(|ino| self.inodes.last_attr(ino));
        match known {
            Some(attr) if !same_file(&attr, &listed) => self.enter(dir, name, attr),
            _ => self.enter(dir, name, listed),
        }
    }

    pub fn releasedir(&self, fh: Fh) {
        self.dirs.lock().remove(&fh);
    }
}
