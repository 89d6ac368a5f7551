//! Client-side data caches: file contents in fixed-size chunks, keyed by file *and* version.
//!
//! What is hard, and how the code is arranged for it:
//!
//! 1. **Never serving stale data.** A file changed on the server gets a new
//!    [`Version`](shelf_proto::Version) (server inode, size, mtime, ctime), and the version is
//!    part of every [`ChunkKey`], so old chunks can't answer for the new content; they just age
//!    out. [`ChunkCache::invalidate_file`] drops them at once after our own writes.
//! 2. **Bounding memory in bytes, not entries.** Chunks at the end of a file are short, so an
//!    entry count says little. [`ChunkCache`] keeps a running byte total and evicts the least
//!    recently used chunks until a new one fits (`chunk_cache`).
//! 3. **Dropping one file's chunks without scanning the cache.** A side index maps each file to
//!    its keys and is updated on every insert, eviction and invalidation.
//! 4. **Sharing across FUSE worker threads.** All methods take `&self`; one short-held mutex
//!    guards the LRU and the index, and counters for `shelf status` are atomics
//!    (`stats`).
//!
//! [`chunk_span`] is the geometry both the cache's users and the read-ahead policy share.

mod chunk_cache;
mod stats;

pub use chunk_cache::{ChunkCache, ChunkKey, DEFAULT_CHUNK_SIZE};
pub use stats::CacheStats;

use std::ops::Range;

/// Indexes of the chunks holding bytes `offset .. offset + len`; empty when `len` is 0 or
/// `chunk_size` is 0.
pub fn chunk_span(offset: u64, len: u64, chunk_size: u32) -> Range<u64> {
    let cs = u64::from(chunk_size);
    if len == 0 || cs == 0 {
        return 0..0;
    }
    let end = offset.saturating_add(len);
    offset / cs..end.div_ceil(cs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_span_covers_partial_chunks() {
        struct Case {
            offset: u64,
            len: u64,
            chunk: u32,
            want: Range<u64>,
        }
        let cases = [
            Case {
                offset: 0,
                len: 0,
                chunk: 10,
                want: 0..0,
            },
            Case {
                offset: 5,
                len: 0,
                chunk: 10,
                want: 0..0,
            },
            Case {
                offset: 0,
                len: 1,
                chunk: 10,
                want: 0..1,
            },
            Case {
                offset: 0,
                len: 10,
                chunk: 10,
                want: 0..1,
            },
            Case {
                offset: 0,
                len: 11,
                chunk: 10,
                want: 0..2,
            },
            Case {
                offset: 9,
                len: 2,
                chunk: 10,
                want: 0..2,
            },
            Case {
                offset: 10,
                len: 10,
                chunk: 10,
                want: 1..2,
            },
            Case {
                offset: 25,
                len: 100,
                chunk: 10,
                want: 2..13,
            },
            Case {
                offset: 3,
                len: 4,
                chunk: 0,
                want: 0..0,
            },
            Case {
                offset: u64::MAX - 1,
                len: 10,
                chunk: 1 << 20,
                want: (u64::MAX - 1) >> 20..(u64::MAX >> 20) + 1,
            },
        ];
        for c in cases {
            assert_eq!(
                chunk_span(c.offset, c.len, c.chunk),
                c.want,
                "offset {} len {} chunk {}",
                c.offset,
                c.len,
                c.chunk
            );
        }
    }
}
