//! shelf-core, the filesystem core: every FUSE operation as a plain method over a remote
//! library, with the inode table, listings, chunk cache, read-ahead and write-behind.
//!
//! The `shelf` binary's `fs.rs` translates kernel requests into calls on `Core` and nothing
//! more, so everything here is tested without a mount, against `shelf_testkit::Loopback` (a
//! real server over a socket pair). `Core` is generic over the transport for that reason.
//!
//! What is hard, and where it is handled:
//! 1. The protocol is path-based, the kernel is inode-based: `InodeTable` maps one to the
//!    other and follows renames; `path_of` (`paths.rs`) is the only way an inode becomes a
//!    path.
//! 2. POSIX lets a program keep using a file after it is unlinked or renamed over. Like NFS,
//!    an open file that loses its name is first renamed (or linked) to a hidden name in the
//!    root's `.shelf-hidden` directory (left out of listings) and removed when its last handle
//!    closes; its old directory can still be removed or renamed meanwhile. A file renamed over
//!    while the kernel still knows it is kept the same way until the kernel forgets it, so an
//!    open that resolved the name just before the rename opens the old file, not ESTALE
//!    (`hidden.rs`; the `names` lock orders it against opens).
//! 3. Written bytes must reach the server by `close()` and never silently vanish: see
//!    `write.rs`. Anything that looks at a file's size or bytes drains its writes first
//!    (`drain.rs`).
//! 4. Caches must never mix versions: chunks are keyed by version (`fetch.rs`); a read that
//!    meets a new version starts over, and a file replaced by another inode is `ESTALE`.
//! 5. The kernel keeps its page cache across opens only while the version it cached is the
//!    version on the server (`Opened::keep_cache`, close-to-open consistency as in NFS;
//!    `versions.rs`).
//! 6. A lookup of a name that is not there costs a round trip unless a fresh listing of the
//!    directory says so (`listing.rs`); every change that adds a name records it there.
//! 7. Operations run on many threads at once over eight locks of `Core`'s own and those of
//!    the parts below it: the order in which they may be held is written at [`Core`], and
//!    each place that holds two says why it keeps it.
//!
//! Where each part of `Core` lives: the struct and its constructor here; the operations by
//! FUSE operation in `namespace.rs` (lookup, forget and the changes of names), `attrs.rs`,
//! `files.rs`, `dirs.rs` and `xattr.rs`, with `space.rs` (fallocate, holes) and `copy.rs`
//! (server-side copies); the ideas they share in `paths.rs`, `hidden.rs`, `drain.rs`,
//! `versions.rs` and `handles.rs`. Below `Core`: `inode.rs`, `listing.rs`, `cache/`,
//! `fetch.rs`, `readahead.rs`, `write.rs`; beside it, `ahead.rs` (listings asked ahead of a
//! walk).

mod ahead;
mod attrs;
pub mod cache;
mod config;
mod copy;
mod dirs;
mod drain;
mod error;
mod fetch;
mod files;
mod fresh;
mod handles;
mod hidden;
mod ids;
pub mod inode;
pub mod listing;
mod locks;
mod namespace;
mod paths;
mod push;
pub mod readahead;
mod space;
mod time;
mod versions;
mod write;
mod xattr;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use shelf_proto::{Code, Version};
use shelf_remote::{Client, Transport};

pub use attrs::SetAttrRequest;
pub use config::{CoreConfig, DEFAULT_ATTR_TTL, DEFAULT_UNWATCHED_TTL, DEFAULT_WALK_AHEAD_THREADS};
pub use dirs::DirSink;
pub use error::{FsError, FsResult};
pub use handles::Opened;
pub use ids::{Fh, Ino, ROOT_INO};
pub use locks::{LockRequest, WAIT_STEP};
pub use namespace::Entry;
pub use push::PushStats;
pub use time::{system_time, timestamp};
pub use versions::{Invalidate, Invalidator};
pub use xattr::{XattrReply, XattrStats};

use crate::cache::{CacheStats, ChunkCache};
use crate::fetch::Fetcher;
use crate::handles::{OpenDir, OpenFile, OpenState};
use crate::inode::InodeTable;
use crate::listing::Listings;
use crate::write::WriteLimits;

/// The smallest `max_io` write-behind works with, whatever the server announces.
const MIN_MAX_IO: u32 = 4096;
/// Writes of one file in flight at once (write-behind's window, `write.rs`).
const WRITES_IN_FLIGHT: usize = 8;

/// The filesystem core of one mount: every FUSE operation as a method (see the crate docs for
/// which file holds which).
///
/// # Lock order
///
/// A thread may take a lock while it holds only locks above it in this list, never one below
/// or level with it; that rules out a cycle, so no deadlock. Each place that holds two says
/// why it stays in order.
///
/// 1. `names`, shared or exclusive, never taken twice by one thread (parking_lot's `RwLock`
///    would deadlock on a recursive read once a writer waits). Held across server calls:
///    ordering an open against an unlink or rename is its purpose.
/// 2. One file's `OpenIo::writes`, never two files' at once (`drain_all_writes` drains one
///    after the other). Held across the server calls that drain it.
/// 3. `open`.
/// 4. `kept`.
/// 5. Leaves, held only for a map operation and taking nothing else: `files`, `dirs`,
///    `page_versions`, `OpenIo::readahead`, `locks`, and the locks inside `inodes`, `listings`, `cache`
///    and `fetcher`, whose methods never call back into `Core`. `ahead` holds its queue's
///    lock while it takes its jobs' lock and nothing else; an `opendir` waits on its jobs
///    holding none of the others.
///
/// The `invalidator` only queues (the mount's thread tells the kernel), so calling it
/// under `names` cannot wait on the kernel, which may be waiting on one of our replies.
pub struct Core<T: Transport> {
    /// Typed calls to the server over the transport; shared with `fetcher`.
    client: Arc<Client<T>>,
    /// Our inode numbers, the kernel's lookup counts, and each inode's names (`inode.rs`).
    inodes: InodeTable,
    /// Whole listings, to answer a lookup of a name that is not there without asking.
    listings: Listings,
    /// File chunks keyed by inode, version and index, bounded in bytes (`cache/`).
    cache: Arc<ChunkCache>,
    /// Fetches chunks into `cache` once each, in the foreground and ahead (`fetch.rs`).
    fetcher: Arc<Fetcher<T>>,
    /// Inodes with open handles: their handle count, write-behind, read-ahead and hidden
    /// name (`handles.rs`).
    open: Mutex<HashMap<Ino, OpenState<T::Pending>>>,
    /// Open file handles: the inode each is of and whether it may write.
    files: Mutex<HashMap<Fh, OpenFile>>,
    /// Open directory handles, each with the listing snapshotted at `opendir`.
    dirs: Mutex<HashMap<Fh, Arc<OpenDir>>>,
    /// The version of each file whose pages the kernel may hold (`Opened::keep_cache`);
    /// `None` where they may be of a version not known (`versions.rs`, `pages_unknown`).
    page_versions: Mutex<HashMap<Ino, Option<Version>>>,
    /// The next file or directory handle; handles are never reused within a mount.
    next_fh: AtomicU64,
    /// Makes each hidden name unique within this process (`hidden.rs`).
    hidden_seq: AtomicU64,
    /// Hidden names of files renamed over while the kernel still knew them but had them not
    /// open: a program that resolved the name just before the rename opens the old file, as
    /// on a local disk, instead of failing with ESTALE. Every name such a file lost is kept,
    /// oldest first; all are removed when the kernel forgets the inode (or the open that took
    /// them over closes).
    kept: Mutex<HashMap<Ino, Vec<Vec<u8>>>>,
    /// Opens hold it shared, unlink and rename exclusively: a name is never removed between an
    /// open's check of the inode and the registration of its handle, so an open file always
    /// gets hidden, and an open that comes later sees ESTALE and the kernel looks again.
    names: RwLock<()>,
    /// Tells the kernel to drop an inode's pages or a name's entry (fuser's `Notifier`, from
    /// the mount).
    invalidator: OnceLock<Invalidator>,
    /// When write-behind sends and how much it keeps in flight, from the chunk size and the
    /// server's announced `max_io`.
    write_limits: WriteLimits,
    /// Which lock holders hold locks through this mount (`locks.rs`). A leaf.
    locks: Mutex<locks::HeldLocks>,
    /// Lock holders told that their locks were lost with the server connection.
    locks_lost: AtomicU64,
    /// What this mount watches for change push (`push.rs`).
    push: push::Push,
    /// Listings asked for ahead of a walk (`ahead.rs`).
    ahead: ahead::WalkAhead,
    /// Directories the server would not watch (its budget), for `shelf status`.
    push_refused: AtomicU64,
    /// How extended attribute requests were answered (`xattr.rs`).
    xattr_stats: XattrStats,
    cfg: CoreConfig,
}

impl<T: Transport> Core<T> {
    pub fn new(transport: T, cfg: CoreConfig) -> Self {
        let client = Arc::new(Client::new(transport));
        // Read-ahead in flight counts against the cache's bound: the mount holds at most
        // `cache_bytes` of file data, cached or on its way (`fetch.rs`, point 3).
        let in_flight = cfg.readahead_window();
        let cached = cfg.cache_bytes - in_flight * u64::from(cfg.chunk_size);
        let cache = Arc::new(ChunkCache::new(cached, cfg.chunk_size));
        let fetcher = Fetcher::new(Arc::clone(&client), Arc::clone(&cache), in_flight as usize);
        fetcher.start_prefetchers(cfg.prefetch_threads);
        let max_io = client.limits().max_io.max(MIN_MAX_IO) as usize;
        Core {
            client,
            write_limits: WriteLimits {
                send_at: (cfg.chunk_size as usize).min(max_io),
                max_io,
                max_inflight: WRITES_IN_FLIGHT,
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
            invalidator: OnceLock::new(),
            locks: Mutex::new(locks::HeldLocks::default()),
            locks_lost: AtomicU64::new(0),
            push: push::Push::default(),
            ahead: ahead::WalkAhead::default(),
            push_refused: AtomicU64::new(0),
            xattr_stats: XattrStats::default(),
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

    /// EROFS on a read-only mount, before any change is sent.
    fn check_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Err(Code::ReadOnly.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
