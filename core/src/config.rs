//! [`CoreConfig`]: the settings of one mount.

use std::time::Duration;

use crate::cache::DEFAULT_CHUNK_SIZE;
use crate::readahead::DEFAULT_MAX_WINDOW_CHUNKS;

/// How long attributes, names and listings the server pushes changes of stay valid unless
/// configured otherwise. A notice arrives within milliseconds (README, "Change push"); this
/// bounds only what a lost notice could leave stale.
pub const DEFAULT_ATTR_TTL: Duration = Duration::from_secs(60);
/// How long what the server does not push changes of stays valid: directories it would not
/// watch, a server without push, the moments before a watch is confirmed.
pub const DEFAULT_UNWATCHED_TTL: Duration = Duration::from_secs(1);
/// The chunk cache's bound unless configured otherwise: 256 MiB.
const DEFAULT_CACHE_BYTES: u64 = 256 << 20;
/// Read-ahead threads unless configured otherwise.
const DEFAULT_PREFETCH_THREADS: usize = 4;
/// Walk-ahead threads unless configured otherwise: listings in flight at once (`ahead.rs`).
pub const DEFAULT_WALK_AHEAD_THREADS: usize = 16;

/// Settings of one mount.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How long attributes, names and listings stay valid without asking the server when the
    /// server pushes their changes (`fresh.rs`).
    pub attr_ttl: Duration,
    /// The same for what it does not push changes of; never longer than `attr_ttl`.
    pub unwatched_ttl: Duration,
    /// Ask the server to push changes (when it can).
    pub push: bool,
    pub chunk_size: u32,
    pub cache_bytes: u64,
    /// The read-ahead window's limit, in chunks.
    pub readahead_chunks: u32,
    pub prefetch_threads: usize,
    /// Threads that list the next subdirectories of a walk (`ahead.rs`); 0: none are.
    pub walk_ahead: usize,
    /// Owner shown for every file: the mounting user (DESIGN.md, "Ownership").
    pub uid: u32,
    pub gid: u32,
    /// Refuse every change locally with EROFS.
    pub read_only: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            attr_ttl: DEFAULT_ATTR_TTL,
            unwatched_ttl: DEFAULT_UNWATCHED_TTL,
            push: true,
            chunk_size: DEFAULT_CHUNK_SIZE,
            cache_bytes: DEFAULT_CACHE_BYTES,
            readahead_chunks: DEFAULT_MAX_WINDOW_CHUNKS as u32,
            prefetch_threads: DEFAULT_PREFETCH_THREADS,
            walk_ahead: DEFAULT_WALK_AHEAD_THREADS,
            uid: 0,
            gid: 0,
            read_only: false,
        }
    }
}

impl CoreConfig {
    /// The read-ahead window's limit in chunks: `readahead_chunks`, but at most a quarter of
    /// the chunk cache, so a window's chunks are not evicted before they are read.
    pub fn readahead_window(&self) -> u64 {
        let cache_chunks = self.cache_bytes / u64::from(self.chunk_size.max(1));
        u64::from(self.readahead_chunks).min(cache_chunks / 4)
    }

    /// The TTL of what is not pushed: `unwatched_ttl`, but never more than `attr_ttl` (a zero
    /// `attr_ttl` caches nothing).
    pub fn short_ttl(&self) -> Duration {
        self.unwatched_ttl.min(self.attr_ttl)
    }
}
