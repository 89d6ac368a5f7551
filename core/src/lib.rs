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
mod drain;
mod error;
mod fetch;
mod hidden;
pub mod inode;
pub mod listing;
pub mod readahead;
mod time;
mod versions;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use shelf_proto::Version;
use shelf_proto::{rename_flags, Attr, Code, DirEntry, FileKind, SetAttrs};

pub use attrs::SetAttrRequest;
pub use config::CoreConfig;
pub use error::{FsError, FsResult};
use fetch::{Fetcher, EARLY_MAX_BYTES};
use hidden::HIDDEN_DIR;
use hidden::HIDDEN_PREFIX;
pub use time::system_time;
pub use time::timestamp;
use versions::same_file;
pub use versions::PageInvalidator;
use write::{WriteBack, WriteLimits};

use crate::cache::{CacheStats, ChunkCache, ChunkKey};
use crate::inode::InodeTable;
use crate::listing::Listings;
use crate::readahead::ReadAhead;
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

/// An opened file handle and whether the kernel may keep the pages it already holds.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub fh: u64,
    pub keep_cache: bool,
    /// Opened for writing: only then does its `close()` need a `flush` (write-behind to
    /// drain and its errors to report); the kernel skips it for the others.
    pub writable: bool,
}

/// Receives directory entries for one `readdir` reply, like fuser's `ReplyDirectory[Plus]`.
pub trait DirSink {
    /// Adds one entry; `offset` is where the next `readdir` resumes. Returns true when the
    /// reply is full and the entry was NOT added.
    fn add(&mut self, ino: u64, offset: u64, name: &[u8], attr: &Attr) -> bool;
}

/// Everything an inode with open handles needs, shared by its handles.
struct OpenState {
    handles: usize,
    io: Arc<OpenIo>,
    /// The hidden path the file was moved to when it lost its name while open.
    hidden: Option<Vec<u8>>,
}

/// The parts of an open file that I/O works on, each behind its own lock so a read does not
/// wait for the table of open files.
#[derive(Default)]
struct OpenIo {
    writes: Mutex<WriteBack>,
    readahead: Mutex<ReadAhead>,
}

struct OpenFile {
    ino: u64,
    writable: bool,
}

struct OpenDir {
    ino: u64,
    attr: Attr,
    entries: Vec<DirEntry>,
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

    /// `flags` are the `open(2)` flags the kernel passes on.
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable || flags & libc::O_TRUNC != 0 {
            self.check_writable()?;
        }
        self.drain_writes(ino)?;
        let _names = self.names.read();
        // A node that lost its name before this open got the lock (a rename over it raced
        // with the kernel's path walk) is stale here, where the kernel retries the walk, not at
        // the first read, where it would not.
        let path = self.path_of(ino)?;
        // The version of the pages the kernel holds, before this open learns anything new.
        let held = self.page_versions.lock().get(&ino).copied();
        // Close-to-open consistency, as NFS keeps it: an open sees the server's file as of at
        // most one TTL ago (the lookup that precedes most opens has just asked).
        let mut attr = self.attr(ino)?;
        if attr.kind == FileKind::Dir {
            return Err(Code::IsDir.into());
        }
        if flags & libc::O_TRUNC != 0 && attr.size != 0 {
            attr = self.truncate_to_zero(&path)?;
            self.cache.invalidate_file(ino);
            self.inodes.set_attr(ino, &attr);
        }
        let opened = self.new_handle(ino, attr, writable, held);
        // A small file opened to be read is about to be read whole: ask for its one chunk
        // now (see fetch.rs), unless the kernel keeps pages it will read from instead.
        let small = EARLY_MAX_BYTES.min(self.cfg.chunk_size as u64);
        if !writable && !opened.keep_cache && (1..=small).contains(&attr.size) {
            let key = ChunkKey {
                file: ino,
                version: attr.version(),
                index: 0,
            };
            self.fetcher.start_early(&path, key);
        }
        Ok(opened)
    }

    /// `O_TRUNC` on an open or create of a file that has bytes.
    fn truncate_to_zero(&self, path: &[u8]) -> FsResult<Attr> {
        let attrs = SetAttrs {
            size: Some(0),
            ..Default::default()
        };
        Ok(self.client.set_attr(path, attrs)?)
    }

    /// `held` is the version of the pages the kernel held before the open: it keeps them only
    /// if that is the version the file has now.
    fn new_handle(&self, ino: u64, attr: Attr, writable: bool, held: Option<Version>) -> Opened {
        self.page_versions.lock().insert(ino, attr.version());
        let keep_cache = held == Some(attr.version());
        if !keep_cache {
            self.cache.invalidate_file(ino);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .entry(ino)
            .or_insert_with(|| OpenState {
                handles: 0,
                io: Arc::new(OpenIo {
                    writes: Mutex::default(),
                    readahead: Mutex::new(ReadAhead::new(self.cfg.readahead_chunks as u64)),
                }),
                // A kept name now lives as long as the handles do.
                hidden: self.kept.lock().remove(&ino),
            })
            .handles += 1;
        self.files.lock().insert(fh, OpenFile { ino, writable });
        Opened {
            fh,
            keep_cache,
            writable,
        }
    }

    fn is_open(&self, ino: u64) -> bool {
        self.open.lock().contains_key(&ino)
    }

    fn handle(&self, fh: u64) -> FsResult<(u64, bool)> {
        self.files
            .lock()
            .get(&fh)
            .map(|f| (f.ino, f.writable))
            .ok_or(FsError::Local(Code::BadHandle))
    }

    fn open_io(&self, ino: u64) -> FsResult<Arc<OpenIo>> {
        self.open
            .lock()
            .get(&ino)
            .map(|s| Arc::clone(&s.io))
            .ok_or(FsError::Local(Code::BadHandle))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> FsResult<(Entry, Opened)> {
        self.check_writable()?;
        let _names = self.names.read();
        let path = self.child_path(parent, name)?;
        let exclusive = flags & libc::O_EXCL != 0;
        let made = self.client.create(&path, mode & !umask & 0o7777, exclusive);
        let mut attr = self.adding(parent, name, made)?;
        if flags & libc::O_TRUNC != 0 && attr.size != 0 {
            attr = self.truncate_to_zero(&path)?;
        }
        self.dir_changed(parent, 0);
        let entry = self.enter(parent, name, attr)?;
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let held = self.page_versions.lock().get(&entry.ino).copied();
        Ok((entry, self.new_handle(entry.ino, attr, writable, held)))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (ino, _) = self.handle(fh)?;
        let io = self.open_io(ino)?;
        self.drain_writes(ino)?;
        let cs = self.cfg.chunk_size as u64;
        let end = offset.saturating_add(size as u64);
        let mut attr = self.attr(ino)?;
        let (ahead, random) = {
            let mut ra = io.readahead.lock();
            let ahead = ra.on_read(offset, size as u64, self.cfg.chunk_size);
            (ahead, ra.window() == 0)
        };
        if random {
            if let Some(data) = self.read_direct(ino, &attr, offset, size)? {
                return Ok(data);
            }
        }
        // A version change met mid-read restarts the read under the new version; a file that
        // keeps changing faster than we can read it is reported rather than chased forever.
        for _ in 0..4 {
            let path = self.path_of(ino)?;
            let version = attr.version();
            let stop = end.min(attr.size.max(offset));
            let keys: Vec<ChunkKey> = if stop > offset {
                (offset / cs..=(stop - 1) / cs)
                    .map(|index| ChunkKey {
                        file: ino,
                        version,
                        index,
                    })
                    .collect()
            } else {
                // Past the end as we know it: one chunk asks the server whether it grew.
                vec![ChunkKey {
                    file: ino,
                    version,
                    index: offset / cs,
                }]
            };
            let chunks = self.fetcher.chunks(&path, &keys)?;
            if let Some(new) = chunks
                .iter()
                .filter_map(|c| c.attr)
                .find(|a| a.version() != version)
            {
                if !same_file(&new, &attr) {
                    return Err(Code::Stale.into());
                }
                self.saw_version(ino, &new);
                attr = new;
                continue;
            }
            let mut out = Vec::with_capacity((stop.saturating_sub(offset)) as usize);
            for (key, chunk) in keys.iter().zip(&chunks) {
                let base = key.index * cs;
                let from = offset.max(base) - base;
                let to = (end.min(base + chunk.data.len() as u64)).saturating_sub(base);
                if from < to {
                    out.extend_from_slice(&chunk.data[from as usize..to as usize]);
                }
                if (chunk.data.len() as u64) < cs {
                    break; // end of file
                }
            }
            let last_chunk = attr.size.div_ceil(cs);
            for index in ahead.start..ahead.end.min(last_chunk) {
                self.fetcher.prefetch(
                    &path,
                    ChunkKey {
                        file: ino,
                        version,
                        index,
                    },
                );
            }
            return Ok(out);
        }
        Err(FsError::Local(Code::Stale))
    }

    /// A read that read-ahead calls random fetches just its own bytes, unless the cache holds
    /// them: fetching whole chunks for scattered 4 KiB reads would move 256 times the bytes
    /// asked for (`fio` random reads). `None`: served from chunks instead.
    fn read_direct(
        &self,
        ino: u64,
        attr: &Attr,
        offset: u64,
        size: u32,
    ) -> FsResult<Option<Vec<u8>>> {
        let cs = self.cfg.chunk_size as u64;
        let last = offset.saturating_add(u64::from(size).max(1) - 1) / cs;
        let version = attr.version();
        let cached = (offset / cs..=last).all(|index| {
            self.cache.contains(&ChunkKey {
                file: ino,
                version,
                index,
            })
        });
        if cached {
            return Ok(None);
        }
        let path = self.path_of(ino)?;
        let (now, data) = self.client.read(&path, offset, size)?;
        if !same_file(&now, attr) {
            return Err(Code::Stale.into());
        }
        // The bytes are of one version, the one `now` names, whatever we expected.
        self.saw_version(ino, &now);
        Ok(Some(data))
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (ino, writable) = self.handle(fh)?;
        if !writable {
            return Err(Code::BadHandle.into());
        }
        self.check_writable()?;
        let io = self.open_io(ino)?;
        let path = self.path_of(ino)?;
        io.writes
            .lock()
            .write(&self.client, &path, offset, data, self.write_limits)?;
        self.cache.invalidate_file(ino);
        Ok(data.len() as u32)
    }

    /// Called on every `close()` of a descriptor: the written bytes reach the server here.
    /// The `close()` of a handle: its writes reach the server and their failure, if any, is
    /// reported here. A read-only handle has nothing to report, and must not take the
    /// failure a writing handle of the same file is to report (the kernel does not even ask,
    /// `FOPEN_NOFLUSH`, unless it caches writes itself).
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let (ino, writable) = self.handle(fh)?;
        if !writable {
            return Ok(());
        }
        self.drain_writes_reporting(ino)
    }

    pub fn fsync(&self, fh: u64, data_only: bool) -> FsResult<()> {
        let (ino, _) = self.handle(fh)?;
        self.drain_writes_reporting(ino)?;
        Ok(self.client.fsync(&self.path_of(ino)?, data_only)?)
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(file) = self.files.lock().remove(&fh) else {
            return Err(Code::BadHandle.into());
        };
        let drained = self.drain_writes(file.ino);
        let last_of_hidden = |open: &mut HashMap<u64, OpenState>| match open.get_mut(&file.ino) {
            Some(state) if state.handles > 1 => {
                state.handles -= 1;
                Ok(None)
            }
            Some(state) if state.hidden.is_some() => Err(()),
            Some(_) => {
                open.remove(&file.ino);
                Ok(None)
            }
            None => Ok(None),
        };
        // Bound first: a guard in the `match` head would be held through the arms.
        let first = last_of_hidden(&mut self.open.lock());
        let hidden = match first {
            Ok(none) => none,
            // The last handle of a file that lost its name: an `open` of the same inode (the
            // kernel resolved the name before it went) may be between finding the hidden
            // name and counting its handle. The names lock orders the two: either that open
            // counts first and the file stays, or it finds no name and the kernel retries.
            Err(()) => {
                let _names = self.names.write();
                let mut open = self.open.lock();
                match last_of_hidden(&mut open) {
                    Ok(none) => none,
                    Err(()) => open.remove(&file.ino).and_then(|s| s.hidden),
                }
            }
        };
        if let Some(hidden) = hidden {
            self.remove_hidden(file.ino, &hidden);
        }
        if !self.is_open(file.ino) {
            self.fetcher.forget_early(file.ino);
        }
        drained
    }

    // ---- directories -----------------------------------------------------------------

    /// Snapshots the listing, so that offsets stay meaningful while the directory changes.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        // Listing attributes replace the kernel's; buffered writes must not make them stale.
        self.drain_all_writes();
        let path = self.path_of(ino)?;
        let attr = self.attr(ino)?;
        if attr.kind != FileKind::Dir {
            return Err(Code::NotDir.into());
        }
        let mut entries = self.client.list(&path)?;
        entries.retain(|e| {
            let hidden_dir = ino == ROOT_INO && e.name == HIDDEN_DIR;
            !(hidden_dir || e.name.starts_with(HIDDEN_PREFIX))
        });
        self.listings
            .listed(ino, entries.iter().map(|e| e.name.as_slice()));
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .insert(fh, Arc::new(OpenDir { ino, attr, entries }));
        Ok(fh)
    }

    /// Fills `sink` from `offset` on. With `plus`, each entry the sink takes counts as a
    /// kernel lookup (readdirplus), except `.` and `..`.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        sink: &mut dyn DirSink,
    ) -> FsResult<()> {
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
    fn enter_listed(&self, dir: u64, name: &[u8], listed: Attr) -> FsResult<Entry> {
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

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }
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
