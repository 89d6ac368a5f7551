//! shelf-core, the filesystem core: every FUSE operation as a plain method over a remote
//! library, with the inode table, listings, chunk cache, read-ahead and write-behind.
//!
//! The `shelf` binary's `fs.rs` translates kernel requests into calls on `Core` and nothing more, so everything
//! here is tested without a mount, against `shelf_testkit::Loopback` (a real server over a
//! socket pair). `Core` is generic over the transport for that reason.
//!
//! What is hard, and where it is handled:
//! 1. The protocol is path-based, the kernel is inode-based: `InodeTable` maps one to the
//!    other and follows renames; `path_of` is the only way an inode becomes a path.
//! 2. POSIX lets a program keep using a file after it is unlinked or renamed over. Like NFS,
//!    an open file that loses its name is first renamed (or linked) to a hidden name in the
//!    root's `.shelf-hidden` directory (left out of listings) and removed when its last handle
//!    closes; its old directory can still be removed or renamed meanwhile. A file renamed over
//!    while the kernel still knows it is kept the same way until the kernel forgets it, so an
//!    open that resolved the name just before the rename opens the old file, not ESTALE.
//! 3. Written bytes must reach the server by `close()` and never silently vanish: see
//!    `write.rs`. Anything that looks at a file's size or bytes drains its writes first.
//! 4. Caches must never mix versions: chunks are keyed by version (`fetch.rs`); a read that
//!    meets a new version starts over, and a file replaced by another inode is `ESTALE`.
//! 5. The kernel keeps its page cache across opens only while the version it cached is the
//!    version on the server (`Opened::keep_cache`, close-to-open consistency as in NFS).
//! 6. A lookup of a name that is not there costs a round trip unless a fresh listing of the
//!    directory says so (`listing.rs`); every change that adds a name records it there.

mod attrs;
pub mod cache;
mod config;
mod dirs;
mod drain;
mod error;
mod fetch;
mod files;
mod handles;
mod hidden;
pub mod inode;
pub mod listing;
pub mod readahead;
mod time;
mod versions;
mod write;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use shelf_proto::Version;
use shelf_proto::{rename_flags, Attr, Code, FileKind};

pub use attrs::SetAttrRequest;
pub use config::CoreConfig;
pub use dirs::DirSink;
pub use error::{FsError, FsResult};
use fetch::Fetcher;
use handles::OpenDir;
use handles::OpenFile;
use handles::OpenState;
pub use handles::Opened;
pub use time::system_time;
pub use time::timestamp;
pub use versions::PageInvalidator;
use write::WriteLimits;

use crate::cache::{CacheStats, ChunkCache};
use crate::inode::InodeTable;
use crate::listing::Listings;
use shelf_remote::{Client, Transport};

/// The root directory's inode number, fixed by FUSE.
pub const ROOT_INO: u64 = 1;

/// Longest name Linux allows in one path component.
const NAME_MAX: usize = 255;

/// A name resolved to an inode, with its attributes.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub ino: u64,
    pub attr: Attr,
}

pub struct Core<T: Transport> {
    client: Arc<Client<T>>,
    inodes: InodeTable,
    /// Whole listings, to answer a lookup of a name that is not there without asking.
    listings: Listings,
    cache: Arc<ChunkCache>,
    fetcher: Arc<Fetcher<T>>,
    open: Mutex<HashMap<u64, OpenState>>,
    files: Mutex<HashMap<u64, OpenFile>>,
    dirs: Mutex<HashMap<u64, Arc<OpenDir>>>,
    /// The version of each file whose pages the kernel may hold (`Opened::keep_cache`).
    page_versions: Mutex<HashMap<u64, Version>>,
    next_fh: AtomicU64,
    hidden_seq: AtomicU64,
    /// Hidden names of files renamed over while the kernel still knew them but had them not
    /// open: a program that resolved the name just before the rename opens the old file, as
    /// on a local disk, instead of failing with ESTALE. Removed when the kernel forgets the
    /// inode (or the open that took it over closes).
    kept: Mutex<HashMap<u64, Vec<u8>>>,
    /// Opens hold it shared, unlink and rename exclusively: a name is never removed between an
    /// open's check of the inode and the registration of its handle, so an open file always
    /// gets hidden, and an open that comes later sees ESTALE and the kernel looks again.
    names: RwLock<()>,
    /// Tells the kernel to drop an inode's pages (fuser's `Notifier`, from the mount).
    page_invalidator: OnceLock<PageInvalidator>,
    write_limits: WriteLimits,
    cfg: CoreConfig,
}

impl<T: Transport> Core<T> {
    pub fn new(transport: T, cfg: CoreConfig) -> Self {
        let client = Arc::new(Client::new(transport));
        let cache = Arc::new(ChunkCache::new(cfg.cache_bytes, cfg.chunk_size));
        let fetcher = Fetcher::new(Arc::clone(&client), Arc::clone(&cache));
        fetcher.start_prefetchers(cfg.prefetch_threads);
        let max_io = client.limits().max_io.max(4096) as usize;
        Core {
            client,
            write_limits: WriteLimits {
                send_at: (cfg.chunk_size as usize).min(max_io),
                max_io,
                max_inflight: 8,
            },
            inodes: InodeTable::new(),
            listings: Listings::new(cfg.attr_ttl),
            cache,
            fetcher,
            open: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            page_versions: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            hidden_seq: AtomicU64::new(0),
            kept: Mutex::new(HashMap::new()),
            names: RwLock::new(()),
            page_invalidator: OnceLock::new(),
            cfg,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    pub fn transport(&self) -> &T {
        self.client.transport()
    }

    // ---- names and paths -------------------------------------------------------------

    /// The server path of an inode: its hidden name if it lost its own while open.
    ///
    /// An inode whose name was removed or replaced has no path: ESTALE, on which the kernel
    /// walks the path again (`retry_estale`), so an `open` or `stat` that raced with a rename
    /// over its name finds the new file instead of failing, as on NFS.
    fn path_of(&self, ino: u64) -> FsResult<Vec<u8>> {
        if let Some(hidden) = self.open.lock().get(&ino).and_then(|s| s.hidden.clone()) {
            return Ok(hidden);
        }
        if let Some(hidden) = self.kept.lock().get(&ino) {
            return Ok(hidden.clone());
        }
        self.inodes.path(ino).ok_or(FsError::Local(Code::Stale))
    }

    fn child_path(&self, parent: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        check_name(name)?;
        self.inodes
            .child_path(parent, name)
            .ok_or(FsError::Local(Code::NotFound))
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Err(Code::ReadOnly.into());
        }
        Ok(())
    }

    /// Records attributes fetched from the server and resolves the name to an inode, counting
    /// one kernel lookup.
    fn enter(&self, parent: u64, name: &[u8], attr: Attr) -> FsResult<Entry> {
        // The parent can vanish from the table only if the kernel forgot it mid-call.
        let ino = self
            .inodes
            .lookup(parent, name, &attr)
            .ok_or(FsError::Local(Code::Stale))?;
        Ok(Entry { ino, attr })
    }

    /// Drops cached attributes an entry change made stale: a directory's mtime, ctime and
    /// link count change with its entries, a file's ctime and nlink with its names. The kernel
    /// asks again after such a change, and must not get our old copy (rsync compares the
    /// directory mtimes it set with what `stat` says).
    fn changed(&self, inos: &[Option<u64>]) {
        for ino in inos.iter().flatten() {
            self.inodes.invalidate_attr(*ino);
        }
    }

    /// A directory whose entries this mount just changed (`subdirs` more or fewer
    /// subdirectories). The kernel asks for its attributes again before the next create or
    /// unlink in it (`default_permissions` checks the directory), so instead of forgetting
    /// them, which costs a round trip per file, they are brought up to date here: mtime and
    /// ctime move to now, nlink by the subdirectories. The server's exact times replace these
    /// after the TTL; meanwhile a time set earlier (rsync's) no longer shows as current.
    fn dir_changed(&self, dir: u64, subdirs: i64) {
        let Some(mut a) = self.inodes.cached_attr(dir, self.cfg.attr_ttl) else {
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
    fn adding<R, E>(&self, dir: u64, name: &[u8], result: Result<R, E>) -> Result<R, E> {
        match &result {
            Ok(_) => self.listings.added(dir, name),
            Err(_) => self.listings.forget(dir),
        }
        result
    }

    fn is_dir(&self, ino: Option<u64>) -> bool {
        ino.and_then(|i| self.inodes.last_attr(i))
            .is_some_and(|a| a.kind == FileKind::Dir)
    }

    // ---- attributes ------------------------------------------------------------------

    // ---- FUSE operations -------------------------------------------------------------

    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Entry> {
        if let Some(ino) = self.inodes.child(parent, name) {
            self.drain_writes(ino)?;
        }
        // Held from the question to the answer's record: a rename over the name in between
        // would otherwise have us file the old file under it.
        let _names = self.names.read();
        let path = self.child_path(parent, name)?;
        if self.listings.absent(parent, name) {
            return Err(Code::NotFound.into());
        }
        let attr = self.client.stat(&path)?;
        self.enter(parent, name, attr)
    }

    pub fn forget(&self, ino: u64, nlookup: u64) {
        if self.inodes.forget(ino, nlookup) == 0 {
            let gone = self.kept.lock().remove(&ino);
            if let Some(hidden) = gone {
                self.remove_hidden(ino, &hidden);
            }
        }
    }

    /// Only regular files can be made: the server never creates device nodes or FIFOs
    /// (DESIGN.md, "Ownership").
    pub fn mknod(&self, parent: u64, name: &[u8], mode: u32, umask: u32) -> FsResult<Entry> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(Code::NotPermitted.into());
        }
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        let made = self.client.create(&path, mode & !umask & 0o7777, true);
        let attr = self.adding(parent, name, made)?;
        self.dir_changed(parent, 0);
        self.enter(parent, name, attr)
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, umask: u32) -> FsResult<Entry> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        let made = self.client.mkdir(&path, mode & !umask & 0o7777);
        let attr = self.adding(parent, name, made)?;
        self.dir_changed(parent, 1);
        let entry = self.enter(parent, name, attr)?;
        self.listings.made(entry.ino);
        Ok(entry)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        let _names = self.names.write();
        let path = self.child_path(parent, name)?;
        match self
            .inodes
            .child(parent, name)
            .filter(|ino| self.is_open(*ino))
        {
            Some(ino) => self.hide(ino, &path, false)?,
            None => self.client.unlink(&path)?,
        }
        self.listings.removed(parent, name);
        let gone = self.inodes.unlink(parent, name);
        self.dir_changed(parent, 0);
        self.changed(&[gone]);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        self.client.rmdir(&path)?;
        self.listings.removed(parent, name);
        if let Some(gone) = self.inodes.unlink(parent, name) {
            self.listings.forget(gone);
        }
        self.dir_changed(parent, -1);
        Ok(())
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> FsResult<Entry> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        let made = self.client.symlink(&path, target);
        let attr = self.adding(parent, name, made)?;
        self.dir_changed(parent, 0);
        self.enter(parent, name, attr)
    }

    /// `flags` are the kernel's `RENAME_*` bits.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
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
        if let Err(e) = self.client.rename(&from, &to, wire_flags) {
            self.listings.forget(parent);
            self.listings.forget(new_parent);
            return Err(e.into());
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
            self.dir_changed(parent, -across);
            if new_parent != parent {
                self.dir_changed(new_parent, across - i64::from(victim_dir));
            } else if victim_dir {
                self.dir_changed(parent, -1);
            }
            self.inodes.child(new_parent, new_name)
        };
        self.changed(&[moved, victim]);
        Ok(())
    }

    fn same_node(&self, parent: u64, name: &[u8], ino: u64) -> bool {
        self.inodes.child(parent, name) == Some(ino)
    }

    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> FsResult<Entry> {
        self.check_writable()?;
        self.drain_writes(ino)?;
        let existing = self.path_of(ino)?;
        let new = self.child_path(new_parent, new_name)?;
        let made = self.client.link(&existing, &new);
        let attr = self.adding(new_parent, new_name, made)?;
        // The old name's attributes (nlink, ctime) changed too.
        self.inodes.set_attr(ino, &attr);
        self.dir_changed(new_parent, 0);
        self.enter(new_parent, new_name, attr)
    }

    // ---- files -----------------------------------------------------------------------

    // ---- directories -----------------------------------------------------------------
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(Code::NameTooLong.into());
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Code::Invalid.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
