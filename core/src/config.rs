//! [`CoreConfig`]: the settings of one mount.

use std::time::Duration;

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
            attr_ttl: Duration::from_secs(1),
            chunk_size: 1 << 20,
            cache_bytes: 256 << 20,
            readahead_chunks: 8,
            prefetch_threads: 4,
            uid: 0,
            gid: 0,
            read_only: false,
        }
    }
}
