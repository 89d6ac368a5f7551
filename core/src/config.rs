//! [`CoreConfig`]: the settings of one mount.

use std::time::Duration;

use crate::cache::DEFAULT_CHUNK_SIZE;
use crate::readahead::DEFAULT_MAX_WINDOW_CHUNKS;

/// How long attributes and entries stay valid unless configured otherwise.
const DEFAULT_ATTR_TTL: Duration = Duration::from_secs(1);
/// The chunk cache's bound unless configured otherwise: 256 MiB.
const DEFAULT_CACHE_BYTES: u64 = 256 << 20;
/// Read-ahead threads unless configured otherwise.
const DEFAULT_PREFETCH_THREADS: usize = 4;

/// Settings of one mount.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How long attributes and entries stay valid without asking the server.
    pub attr_ttl: Duration,
    pub chunk_size: u32,
    pub cache_bytes: u64,
    /// The read-ahead window's limit, in chunks.
    pub readahead_chunks: u32,
    pub prefetch_threads: usize,
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
            chunk_size: DEFAULT_CHUNK_SIZE,
            cache_bytes: DEFAULT_CACHE_BYTES,
            readahead_chunks: DEFAULT_MAX_WINDOW_CHUNKS as u32,
            prefetch_threads: DEFAULT_PREFETCH_THREADS,
            uid: 0,
            gid: 0,
            read_only: false,
        }
    }
}
