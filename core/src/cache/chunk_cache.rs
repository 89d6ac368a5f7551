//! [`ChunkCache`]: an LRU of file chunks bounded in bytes, with a per-file index.
//!
//! The `lru` crate orders entries; it is created unbounded and the byte budget is enforced here,
//! because its own bound counts entries. Beside it, `by_file` lists each file's keys so that
//! [`ChunkCache::invalidate_file`] touches only that file's chunks. Every path that removes an
//! entry from the LRU (replacement, eviction, invalidation) goes through `Inner::remove_entry`,
//! which also fixes the index and the byte total, so the three can't drift apart.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use lru::LruCache;
use parking_lot::Mutex;
use shelf_proto::{Bytes, Version};

use crate::ids::Ino;

use super::stats::{CacheStats, Counters};

/// The chunk size used unless configured otherwise: 1 MiB, the kernel's largest FUSE read here.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// Names one chunk of one content of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    /// Our inode number for the file (not the server's, which the version carries).
    pub file: Ino,
    /// The content the bytes belong to; a chunk is never served for another version.
    pub version: Version,
    /// Chunk number: the chunk holds bytes `index * chunk_size ..` of the file.
    pub index: u64,
}

/// A thread-safe LRU cache of file chunks bounded in bytes. See the module docs.
#[derive(Debug)]
pub struct ChunkCache {
    inner: Mutex<Inner>,
    counters: Counters,
    capacity: u64,
    chunk_size: u32,
}

#[derive(Debug)]
struct Inner {
    lru: LruCache<ChunkKey, Bytes>,
    /// Every key in `lru`, grouped by `ChunkKey::file`; no empty sets are kept.
    by_file: HashMap<Ino, HashSet<ChunkKey>>,
    /// Sum of the lengths of the chunks in `lru`.
    bytes: u64,
}

impl ChunkCache {
    /// A cache holding at most `capacity_bytes` of chunk data in chunks of `chunk_size` bytes
    /// (a `chunk_size` of 0 is taken as 1). A capacity of 0 caches nothing.
    pub fn new(capacity_bytes: u64, chunk_size: u32) -> Self {
        ChunkCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                by_file: HashMap::new(),
                bytes: 0,
            }),
            counters: Counters::default(),
            capacity: capacity_bytes,
            chunk_size: chunk_size.max(1),
        }
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The chunk's bytes (a cheap clone; shorter than `chunk_size` at the end of a file), and
    /// marks it most recently used.
    pub fn get(&self, key: &ChunkKey) -> Option<Bytes> {
        let found = self.inner.lock().lru.get(key).cloned();
        let counter = match found {
            Some(_) => &self.counters.hits,
            None => &self.counters.misses,
        };
        Counters::bump(counter);
        found
    }

    /// Whether the chunk is held, without counting a hit or changing its recency: for
    /// read-ahead deciding what to fetch.
    pub fn contains(&self, key: &ChunkKey) -> bool {
        self.inner.lock().lru.contains(key)
    }

    /// Stores a chunk, evicting least recently used chunks until the total fits the budget.
    /// Returns whether it was stored. Not stored, and any older bytes under the same key
    /// dropped: an empty chunk (nothing worth saving; the version's size answers reads past the
    /// end), a chunk longer than `chunk_size` (a caller bug), and a chunk larger than the
    /// whole budget.
    pub fn insert(&self, key: ChunkKey, data: impl Into<Bytes>) -> bool {
        let data: Bytes = data.into();
        let len = data.len() as u64;
        let mut inner = self.inner.lock();
        // Replacing is not an eviction; doing it first also means the new bytes never sit
        // next to a stale copy.
        inner.remove_entry(&key);
        let fits = len > 0 && len <= u64::from(self.chunk_size) && len <= self.capacity;
        if fits {
            while inner.bytes + len > self.capacity {
                let Some(old) = inner.lru.peek_lru().map(|(k, _)| *k) else {
                    break;
                };
                inner.remove_entry(&old);
                Counters::bump(&self.counters.evictions);
            }
            inner.bytes += len;
            inner.by_file.entry(key.file).or_default().insert(key);
            inner.lru.put(key, data);
        }
        self.publish(&inner);
        fits
    }

    /// Drops every chunk of `file`, whatever its version: after our own writes to it, or when
    /// it was replaced or removed. Returns how many chunks were dropped.
    pub fn invalidate_file(&self, file: Ino) -> usize {
        let mut inner = self.inner.lock();
        let keys = inner.by_file.remove(&file).unwrap_or_default();
        for key in &keys {
            inner.remove_entry(key);
        }
        self.publish(&inner);
        keys.len()
    }

    /// Drops the chunks of `file` that belong to any version but `keep`: when a new version is
    /// seen, the old one's chunks are dead weight. Returns how many chunks were dropped.
    pub fn invalidate_other_versions(&self, file: Ino, keep: Version) -> usize {
        let mut inner = self.inner.lock();
        let stale: Vec<ChunkKey> = match inner.by_file.get(&file) {
            Some(keys) => keys.iter().filter(|k| k.version != keep).copied().collect(),
            None => Vec::new(),
        };
        for key in &stale {
            inner.remove_entry(key);
        }
        self.publish(&inner);
        stale.len()
    }

    /// Drops everything (the counters of hits, misses and evictions stay).
    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.lru.clear();
        inner.by_file.clear();
        inner.bytes = 0;
        self.publish(&inner);
    }

    pub fn stats(&self) -> CacheStats {
        self.counters.snapshot(self.capacity)
    }

    /// Mirrors the locked state into the lock-free counters; called with the lock held so
    /// concurrent publishers can't store older figures over newer ones.
    fn publish(&self, inner: &Inner) {
        self.counters.bytes.store(inner.bytes, Ordering::Relaxed);
        self.counters
            .chunks
            .store(inner.lru.len() as u64, Ordering::Relaxed);
    }
}

impl Inner {
    /// Removes one entry from the LRU, the index and the byte total; absent keys are ignored.
    fn remove_entry(&mut self, key: &ChunkKey) {
        let Some(data) = self.lru.pop(key) else {
            return;
        };
        self.bytes -= data.len() as u64;
        if let Some(keys) = self.by_file.get_mut(&key.file) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_file.remove(&key.file);
            }
        }
    }

    #[cfg(test)]
    fn check_consistent(&self) {
        let sum: u64 = self.lru.iter().map(|(_, v)| v.len() as u64).sum();
        assert_eq!(sum, self.bytes, "byte total matches the chunks held");
        let indexed: usize = self.by_file.values().map(HashSet::len).sum();
        assert_eq!(
            indexed,
            self.lru.len(),
            "index lists exactly the chunks held"
        );
        for (file, keys) in &self.by_file {
            assert!(!keys.is_empty(), "no empty index sets");
            for key in keys {
                assert_eq!(key.file, *file, "indexed under its own file");
                assert!(self.lru.contains(key), "indexed key is held");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shelf_proto::Timestamp;

    fn version(n: u64) -> Version {
        Version {
            ino: 100 + n,
            size: 1000 * n,
            mtime: Timestamp::new(n as i64, 0),
            ctime: Timestamp::new(n as i64, 1),
            btime: Timestamp::default(),
        }
    }

    fn key(file: u64, v: u64, index: u64) -> ChunkKey {
        ChunkKey {
            file: Ino(file),
            version: version(v),
            index,
        }
    }

    /// Bytes `start .. start + len` of the ramp (byte k is k mod 251), so a chunk carries its
    /// position and a misplaced byte can't pass.
    fn ramp(start: u64, len: usize) -> Vec<u8> {
        (start..start + len as u64)
            .map(|k| (k % 251) as u8)
            .collect()
    }

    impl ChunkCache {
        fn check(&self) {
            let inner = self.inner.lock();
            inner.check_consistent();
            assert!(inner.bytes <= self.capacity, "within the byte budget");
            let stats = self.stats();
            assert_eq!(stats.bytes, inner.bytes, "published bytes");
            assert_eq!(stats.chunks, inner.lru.len() as u64, "published chunks");
        }
    }

    #[test]
    fn get_returns_what_was_inserted_and_counts() {
        let cache = ChunkCache::new(100, 10);
        assert!(cache.insert(key(1, 1, 0), ramp(0, 10)));
        assert!(
            cache.insert(key(1, 1, 1), ramp(10, 3)),
            "short chunk at EOF"
        );
        assert_eq!(
            &*cache.get(&key(1, 1, 0)).expect("just inserted"),
            &ramp(0, 10)[..]
        );
        assert_eq!(
            &*cache.get(&key(1, 1, 1)).expect("just inserted"),
            &ramp(10, 3)[..]
        );
        assert!(cache.get(&key(1, 1, 2)).is_none());
        let s = cache.stats();
        assert_eq!(
            (s.hits, s.misses, s.bytes, s.chunks, s.evictions, s.capacity),
            (2, 1, 13, 2, 0, 100)
        );
        cache.check();
    }

    #[test]
    fn other_version_is_a_miss() {
        let cache = ChunkCache::new(100, 10);
        cache.insert(key(1, 1, 0), ramp(0, 10));
        assert!(
            cache.get(&key(1, 2, 0)).is_none(),
            "version is part of the key"
        );
        assert!(
            cache.get(&key(2, 1, 0)).is_none(),
            "file is part of the key"
        );
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let cache = ChunkCache::new(25, 10);
        cache.insert(key(1, 1, 0), ramp(0, 10));
        cache.insert(key(1, 1, 1), ramp(10, 10));
        assert!(
            cache.get(&key(1, 1, 0)).is_some(),
            "touch chunk 0 so chunk 1 is the LRU"
        );
        cache.insert(key(1, 1, 2), ramp(20, 10));
        assert!(cache.contains(&key(1, 1, 0)));
        assert!(!cache.contains(&key(1, 1, 1)), "LRU chunk evicted");
        assert!(cache.contains(&key(1, 1, 2)));
        // Two short chunks fit where one full one was.
        cache.insert(key(2, 1, 0), ramp(0, 2));
        cache.insert(key(2, 1, 1), ramp(0, 3));
        assert_eq!(cache.stats().bytes, 25);
        assert_eq!(cache.stats().evictions, 1);
        cache.check();
    }

    #[test]
    fn refuses_chunks_that_cannot_fit() {
        let cache = ChunkCache::new(15, 20);
        cache.insert(key(1, 1, 0), ramp(0, 10));
        assert!(
            !cache.insert(key(1, 1, 1), ramp(0, 16)),
            "larger than the whole budget"
        );
        assert!(
            cache.contains(&key(1, 1, 0)),
            "nothing evicted for a refused chunk"
        );
        assert!(!cache.insert(key(1, 1, 2), Vec::new()), "empty chunk");

        let small = ChunkCache::new(100, 4);
        assert!(
            !small.insert(key(1, 1, 0), ramp(0, 5)),
            "longer than chunk_size"
        );

        let none = ChunkCache::new(0, 4);
        assert!(
            !none.insert(key(1, 1, 0), ramp(0, 4)),
            "zero budget caches nothing"
        );
        cache.check();
        small.check();
        none.check();
    }

    #[test]
    fn refused_replacement_drops_old_bytes() {
        let cache = ChunkCache::new(15, 20);
        cache.insert(key(1, 1, 0), ramp(0, 10));
        assert!(!cache.insert(key(1, 1, 0), ramp(0, 16)));
        assert!(
            cache.get(&key(1, 1, 0)).is_none(),
            "old bytes must not outlive a newer insert"
        );
        cache.check();
    }

    #[test]
    fn replacing_a_key_keeps_bytes_exact() {
        let cache = ChunkCache::new(20, 10);
        cache.insert(key(1, 1, 0), ramp(0, 10));
        cache.insert(key(1, 1, 0), ramp(5, 4));
        assert_eq!(
            &*cache.get(&key(1, 1, 0)).expect("replaced"),
            &ramp(5, 4)[..]
        );
        assert_eq!(cache.stats().bytes, 4);
        assert_eq!(cache.stats().evictions, 0, "replacement is not eviction");
        cache.check();
    }

    #[test]
    fn invalidate_file_drops_all_versions_of_that_file_only() {
        let cache = ChunkCache::new(1000, 10);
        for v in 1..=2 {
            for i in 0..3 {
                cache.insert(key(1, v, i), ramp(i * 10, 10));
                cache.insert(key(2, v, i), ramp(i * 10, 10));
            }
        }
        assert_eq!(cache.invalidate_file(Ino(1)), 6);
        assert_eq!(cache.invalidate_file(Ino(1)), 0, "second time is a no-op");
        assert_eq!(cache.invalidate_file(Ino(99)), 0, "unknown file is a no-op");
        assert_eq!(cache.stats().chunks, 6);
        assert!(cache.contains(&key(2, 1, 0)));
        assert!(!cache.contains(&key(1, 2, 0)));
        cache.check();
    }

    #[test]
    fn invalidate_other_versions_keeps_one() {
        let cache = ChunkCache::new(1000, 10);
        for v in 1..=3 {
            cache.insert(key(1, v, 0), ramp(0, 10));
        }
        cache.insert(key(2, 1, 0), ramp(0, 10));
        assert_eq!(cache.invalidate_other_versions(Ino(1), version(2)), 2);
        assert!(cache.contains(&key(1, 2, 0)));
        assert!(!cache.contains(&key(1, 1, 0)));
        assert!(cache.contains(&key(2, 1, 0)), "other files untouched");
        cache.check();
    }

    #[test]
    fn eviction_keeps_index_consistent() {
        let cache = ChunkCache::new(30, 10);
        for i in 0..10 {
            cache.insert(key(i % 3, 1, i), ramp(i, 10));
            cache.check();
        }
        assert_eq!(cache.stats().evictions, 7);
        // Evicted keys are gone from the index, so invalidating counts only live ones.
        let live = (0..3).map(|f| cache.invalidate_file(Ino(f))).sum::<usize>();
        assert_eq!(live, 3);
        cache.check();
    }

    #[test]
    fn clear_empties() {
        let cache = ChunkCache::new(30, 10);
        cache.insert(key(1, 1, 0), ramp(0, 10));
        cache.clear();
        assert_eq!(cache.stats().bytes, 0);
        assert!(!cache.contains(&key(1, 1, 0)));
        cache.check();
    }

    #[test]
    fn shared_between_threads() {
        use std::sync::Arc;
        let cache = Arc::new(ChunkCache::new(64, 8));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    for i in 0..200u64 {
                        let k = key(t, 1, i % 13);
                        cache.insert(k, ramp(t * 1000 + i % 13, 8));
                        if let Some(got) = cache.get(&k) {
                            assert_eq!(&*got, &ramp(t * 1000 + i % 13, 8)[..]);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("worker thread panicked");
        }
        cache.check();
    }

    /// Knobs of the model test, with explicit ranges.
    #[derive(Debug, Clone)]
    struct Knobs {
        capacity: u64,
        chunk_size: u32,
    }

    fn knobs() -> impl Strategy<Value = Knobs> {
        (0u64..200, 1u32..64).prop_map(|(capacity, chunk_size)| Knobs {
            capacity,
            chunk_size,
        })
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert `len` ramp bytes starting at `start` (len may exceed the chunk size).
        Insert {
            file: u64,
            v: u64,
            index: u64,
            start: u64,
            len: usize,
        },
        Get {
            file: u64,
            v: u64,
            index: u64,
        },
        InvalidateFile {
            file: u64,
        },
        InvalidateOthers {
            file: u64,
            keep: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..3, 0u64..2, 0u64..6, 0u64..1000, 0usize..80)
                .prop_map(|(file, v, index, start, len)| Op::Insert { file, v, index, start, len }),
            4 => (0u64..3, 0u64..2, 0u64..6).prop_map(|(file, v, index)| Op::Get { file, v, index }),
            1 => (0u64..3).prop_map(|file| Op::InvalidateFile { file }),
            1 => (0u64..3, 0u64..2).prop_map(|(file, keep)| Op::InvalidateOthers { file, keep }),
        ]
    }

    proptest! {
        #[test]
        fn matches_hashmap_model(knobs in knobs(), ops in proptest::collection::vec(op(), 0..200)) {
            let cache = ChunkCache::new(knobs.capacity, knobs.chunk_size);
            // The model: the latest bytes inserted under each key, never evicted.
            let mut model: HashMap<ChunkKey, Vec<u8>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert { file, v, index, start, len } => {
                        let k = key(file, v, index);
                        let data = ramp(start, len);
                        let fitting = len > 0
                            && len as u64 <= u64::from(knobs.chunk_size)
                            && len as u64 <= knobs.capacity;
                        let stored = cache.insert(k, data.clone());
                        prop_assert_eq!(stored, fitting);
                        if fitting {
                            prop_assert!(cache.contains(&k), "latest fitting insert present");
                        }
                        model.insert(k, data);
                    }
                    Op::Get { file, v, index } => {
                        let k = key(file, v, index);
                        if let Some(got) = cache.get(&k) {
                            let want = model.get(&k);
                            prop_assert_eq!(Some(&got.to_vec()), want, "hit returns the model's bytes");
                        }
                    }
                    Op::InvalidateFile { file } => {
                        cache.invalidate_file(Ino(file));
                        model.retain(|k, _| k.file != Ino(file));
                    }
                    Op::InvalidateOthers { file, keep } => {
                        cache.invalidate_other_versions(Ino(file), version(keep));
                        model.retain(|k, _| k.file != Ino(file) || k.version == version(keep));
                    }
                }
                cache.check();
                let inner = cache.inner.lock();
                for (k, v) in inner.lru.iter() {
                    prop_assert_eq!(model.get(k).map(Vec::as_slice), Some(&v[..]), "cache ⊆ model");
                }
            }
        }
    }
}
