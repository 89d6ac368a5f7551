//! [`ReadAhead`]: the read-ahead policy for one open file. It does no I/O; the core asks it
//! which chunks to prefetch after each read and fetches them in parallel.
//!
//! The policy (mountpoint's `src/prefetch.rs` is the model):
//!
//! - **Sequential** means the read starts where the previous read ended, or inside the chunk the
//!   previous read ended in (the kernel may split, repeat or slightly reorder its reads when
//!   several are in flight, so exact adjacency is too strict). The first read of a file is
//!   sequential if it starts in chunk 0.
//! - **Growth.** On a sequential read the window doubles, starting at 1 chunk, up to a ceiling
//!   of [`BASE_WINDOW_CHUNKS`] (8 MiB with 1 MiB chunks). The window counts chunks beyond the
//!   last chunk the read itself needs.
//! - **Growing with the bandwidth-delay product.** A read that still had to wait for its chunk
//!   although the window was at its ceiling ([`ReadAhead::on_late`]) means the window does
//!   not cover what the link holds in one round trip: the ceiling doubles, up to
//!   `max_window_chunks`. At most once per window: the chunks the raised ceiling asks for
//!   arrive only after the reader has passed those asked for before, and until then every
//!   read would seem late. So the window settles where data arrives before it is read, at
//!   about bandwidth times round trip, whatever the round trip; a fixed count of chunks is
//!   either too few far away or too many nearby. A reset brings the ceiling back down.
//! - **Reset.** Any other read is random access: the window drops to 0 and nothing is prefetched
//!   until reads are sequential again, so random readers don't pay for data they won't use.
//! - **No repeats.** Chunks already handed out for prefetch are not handed out again while the
//!   stream stays sequential; a reset forgets them. The caller clips the range at the file's
//!   last chunk (this type doesn't know the size) and skips chunks already cached.
//! - Empty reads change nothing.

use std::ops::Range;

use crate::cache::chunk_span;

/// The window's ceiling before any read was late (module docs), in chunks.
pub const BASE_WINDOW_CHUNKS: u64 = 8;
/// The default cap on the window, in chunks: 32 MiB with 1 MiB chunks, the bandwidth-delay
/// product of 100 MB/s at a 320 ms round trip or 1 GB/s at 32 ms. Also the bound on all
/// read-ahead in flight, taken from the cache's share of memory (`Core::new`).
pub const DEFAULT_MAX_WINDOW_CHUNKS: u64 = 32;

/// The ceiling before any read was late: the base one, or the cap if that is lower.
fn base_ceiling(max_window: u64) -> u64 {
    BASE_WINDOW_CHUNKS.min(max_window)
}

/// Read-ahead state of one open file. See the module docs for the policy.
#[derive(Debug, Clone)]
pub struct ReadAhead {
    max_window: u64,
    /// What the window may grow to now: [`BASE_WINDOW_CHUNKS`], raised by late reads.
    ceiling: u64,
    /// A late read raises the ceiling only once a read needs this chunk or a later one, the
    /// first asked for under the ceiling raised last (module docs).
    grow_from: u64,
    /// The chunk index just past the last chunk the previous read needed.
    needed_end: u64,
    /// Current window in chunks; 0 after random access.
    window: u64,
    /// Byte offset just past the previous read; `Some(0)` before the first read, so a read
    /// from the start counts as sequential.
    prev_end: Option<u64>,
    /// Chunk index just past the last chunk handed out for prefetch in this sequential run.
    prefetched_end: u64,
}

impl Default for ReadAhead {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_WINDOW_CHUNKS)
    }
}

impl ReadAhead {
    /// A fresh policy whose window grows to at most `max_window_chunks` (0 turns read-ahead off).
    pub fn new(max_window_chunks: u64) -> Self {
        ReadAhead {
            max_window: max_window_chunks,
            ceiling: base_ceiling(max_window_chunks),
            grow_from: 0,
            needed_end: 0,
            window: 0,
            prev_end: Some(0),
            prefetched_end: 0,
        }
    }

    /// The current window in chunks (for tests and `shelf status`).
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Records that the last read had to wait for chunks not yet arrived (module docs).
    pub fn on_late(&mut self) {
        if self.window == 0
            || self.window < self.ceiling
            || self.ceiling >= self.max_window
            || self.needed_end <= self.grow_from
        {
            return;
        }
        self.ceiling = self.ceiling.saturating_mul(2).min(self.max_window);
        self.grow_from = self.prefetched_end;
    }

    /// Records a read of `len` bytes at `offset` and returns the chunk indexes to prefetch beyond
    /// those the read itself needs (possibly empty).
    pub fn on_read(&mut self, offset: u64, len: u64, chunk_size: u32) -> Range<u64> {
        let needed = chunk_span(offset, len, chunk_size);
        if needed.is_empty() {
            return 0..0;
        }
        let cs = u64::from(chunk_size);
        let sequential = self.prev_end.is_some_and(|prev| {
            // `prev - 1` is the previous read's last byte; before any read, prev is 0 and the
            // first chunk is chunk 0.
            let last_chunk = prev.saturating_sub(1) / cs;
            offset == prev || offset / cs == last_chunk || offset / cs == prev / cs
        });
        let end = offset.saturating_add(len);
        self.prev_end = Some(end);
        self.needed_end = needed.end;
        if !sequential {
            self.window = 0;
            self.prefetched_end = 0;
            self.ceiling = base_ceiling(self.max_window);
            self.grow_from = 0;
            return 0..0;
        }
        self.window = match self.max_window {
            0 => 0,
            _ => self.window.saturating_mul(2).clamp(1, self.ceiling),
        };
        let start = needed.end.max(self.prefetched_end);
        let stop = needed.end.saturating_add(self.window);
        if start >= stop {
            return 0..0;
        }
        self.prefetched_end = stop;
        start..stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u32 = 1 << 20;
    const M: u64 = MIB as u64;

    #[test]
    fn sequential_whole_chunk_reads_double_the_window() {
        let mut ra = ReadAhead::new(8);
        struct Row {
            offset: u64,
            want: Range<u64>,
            window: u64,
        }
        let rows = [
            Row {
                offset: 0,
                want: 1..2,
                window: 1,
            },
            Row {
                offset: M,
                want: 2..4,
                window: 2,
            },
            Row {
                offset: 2 * M,
                want: 4..7,
                window: 4,
            },
            Row {
                offset: 3 * M,
                want: 7..12,
                window: 8,
            },
            Row {
                offset: 4 * M,
                want: 12..13,
                window: 8,
            },
            Row {
                offset: 5 * M,
                want: 13..14,
                window: 8,
            },
        ];
        for row in rows {
            assert_eq!(
                ra.on_read(row.offset, M, MIB),
                row.want,
                "read at {}",
                row.offset / M
            );
            assert_eq!(
                ra.window(),
                row.window,
                "window after read at {}",
                row.offset / M
            );
        }
    }

    #[test]
    fn small_reads_inside_a_chunk_count_as_sequential() {
        let mut ra = ReadAhead::new(8);
        let k = 128 * 1024;
        assert_eq!(ra.on_read(0, k, MIB), 1..2);
        assert_eq!(
            ra.on_read(k, k, MIB),
            2..3,
            "window 2, chunk 1 already handed out"
        );
        assert_eq!(
            ra.on_read(k, k, MIB),
            3..5,
            "a repeat in the same chunk is still sequential"
        );
        assert_eq!(ra.on_read(3 * k, k, MIB), 5..9);
        assert_eq!(ra.window(), 8);
        assert_eq!(
            ra.on_read(2 * k, k, MIB),
            0..0,
            "slightly reordered: nothing new to fetch"
        );
        assert_eq!(ra.window(), 8, "but not reset");
    }

    #[test]
    fn seek_resets_and_sequential_reads_grow_again() {
        let mut ra = ReadAhead::new(8);
        ra.on_read(0, M, MIB);
        ra.on_read(M, M, MIB);
        assert_eq!(ra.on_read(50 * M, M, MIB), 0..0, "seek forward");
        assert_eq!(ra.window(), 0);
        assert_eq!(ra.on_read(51 * M, M, MIB), 52..53, "grows from 1 again");
        assert_eq!(ra.on_read(52 * M, M, MIB), 53..55);
        assert_eq!(ra.on_read(10 * M, M, MIB), 0..0, "seek backward");
        assert_eq!(
            ra.on_read(11 * M, M, MIB),
            12..13,
            "handed-out set forgotten on reset"
        );
    }

    #[test]
    fn first_read_away_from_start_is_random() {
        let mut ra = ReadAhead::new(8);
        assert_eq!(ra.on_read(7 * M, 4096, MIB), 0..0);
        assert_eq!(ra.window(), 0);
    }

    #[test]
    fn window_is_capped() {
        let mut ra = ReadAhead::new(3);
        let mut off = 0;
        for _ in 0..10 {
            let got = ra.on_read(off, M, MIB);
            assert!(
                got.is_empty() || got.end - (off / M + 1) <= 3,
                "never beyond 3 chunks ahead: {got:?}"
            );
            off += M;
        }
        assert_eq!(ra.window(), 3);
    }

    #[test]
    fn zero_max_turns_it_off_and_empty_reads_change_nothing() {
        let mut off = ReadAhead::new(0);
        assert_eq!(off.on_read(0, M, MIB), 0..0);
        assert_eq!(off.on_read(M, M, MIB), 0..0);

        let mut ra = ReadAhead::new(8);
        ra.on_read(0, M, MIB);
        assert_eq!(ra.on_read(99 * M, 0, MIB), 0..0);
        assert_eq!(ra.window(), 1, "empty read ignored");
        assert_eq!(ra.on_read(M, M, MIB), 2..4);
        assert_eq!(ra.on_read(0, M, 0), 0..0, "zero chunk size is harmless");
    }

    #[test]
    fn unaligned_multi_chunk_read() {
        let mut ra = ReadAhead::new(8);
        // Bytes 0.5 MiB .. 2.5 MiB: first read, not in chunk 0 start but in chunk 0.
        assert_eq!(ra.on_read(M / 2, 2 * M, MIB), 3..4);
        assert_eq!(ra.on_read(M / 2 + 2 * M, M, MIB), 4..6);
    }

    /// Reads one chunk after another from `from`, each late if `late(chunk)`; returns the
    /// window after each.
    fn stream(ra: &mut ReadAhead, from: u64, n: u64, late: impl Fn(u64) -> bool) -> Vec<u64> {
        (from..from + n)
            .map(|chunk| {
                ra.on_read(chunk * M, M, MIB);
                if late(chunk) {
                    ra.on_late();
                }
                ra.window()
            })
            .collect()
    }

    #[test]
    fn late_reads_raise_the_ceiling_once_per_window_up_to_the_cap() {
        let mut ra = ReadAhead::new(32);
        // Late while the window still doubles towards the base ceiling: no extra growth.
        assert_eq!(stream(&mut ra, 0, 4, |_| true), [1, 2, 4, 8]);
        // Read 3 was late at the ceiling: 16 now. Until the reads reach what was asked for
        // before the raise (chunk 12), lateness is that of the old window and is ignored.
        assert_eq!(stream(&mut ra, 4, 8, |_| true), [16; 8]);
        // Past it, late again: 32, the cap.
        assert_eq!(stream(&mut ra, 12, 3, |_| true), [16, 32, 32]);
        assert_eq!(stream(&mut ra, 15, 40, |_| true), [32; 40]);
    }

    #[test]
    fn reads_on_time_keep_the_base_ceiling_and_a_seek_restores_it() {
        let mut ra = ReadAhead::new(64);
        assert_eq!(
            stream(&mut ra, 0, 10, |_| false),
            [1, 2, 4, 8, 8, 8, 8, 8, 8, 8]
        );
        let mut ra = ReadAhead::new(64);
        assert_eq!(*stream(&mut ra, 0, 6, |_| true).last().unwrap(), 16);
        ra.on_read(500 * M, M, MIB);
        assert_eq!(ra.window(), 0, "a seek resets");
        assert_eq!(
            stream(&mut ra, 501, 6, |_| false),
            [1, 2, 4, 8, 8, 8],
            "and the ceiling is the base one again"
        );
    }

    #[test]
    fn a_cap_below_the_base_ceiling_holds_late_or_not() {
        let mut ra = ReadAhead::new(3);
        assert_eq!(stream(&mut ra, 0, 6, |_| true), [1, 2, 3, 3, 3, 3]);
        let mut off = ReadAhead::new(0);
        assert_eq!(stream(&mut off, 0, 3, |_| true), [0, 0, 0]);
    }
}
