//! Counters of the chunk cache, readable without taking its lock (for `shelf status`).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the chunk cache's counters. Each field is read atomically on its own, so a
/// snapshot taken while other threads use the cache may mix moments; good enough for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// `get` calls that found their chunk.
    pub hits: u64,
    /// `get` calls that did not.
    pub misses: u64,
    /// Bytes of chunk data held now.
    pub bytes: u64,
    /// Chunks held now.
    pub chunks: u64,
    /// Chunks dropped to make room (not counting invalidations or replacements).
    pub evictions: u64,
    /// The byte budget.
    pub capacity: u64,
}

/// The live counters behind [`CacheStats`]. `bytes` and `chunks` are only written under the
/// cache's lock (they mirror its state); the others are bumped from anywhere.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) chunks: AtomicU64,
    pub(super) evictions: AtomicU64,
}

impl Counters {
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, capacity: u64) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            chunks: self.chunks.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            capacity,
        }
    }
}
