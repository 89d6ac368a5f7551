//! `FrameReader` allocates no more than the payload limit, whatever the peer announces, and
//! grows its buffer only as bytes arrive.
//!
//! A counting global allocator records, per thread, the largest single allocation; each test
//! resets it, runs the reader on its own thread's data and reads it back. Per-thread so tests
//! running in parallel do not see each other's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read};

use shelf_proto::msg::kind;
use shelf_proto::{
    DecodeError, FrameReader, ReadError, Request, DEFAULT_MAX_PAYLOAD, HARD_MAX_PAYLOAD, HEADER_LEN,
};

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown must not panic.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let _ = TOTAL.try_with(|t| t.set(t.get() + size));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the bookkeeping touches only a const-initialised
// thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same layout the caller gave us, which meets `alloc`'s requirements.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout, via the methods above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr`/`layout` came from `System` via this allocator; `new_size` is the
        // caller's and meets `realloc`'s requirements.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns the largest single allocation it made on this thread.
fn largest_alloc(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

/// Runs `f` and returns the bytes of every allocation (and reallocation) it made on this
/// thread, added up.
fn total_alloc(f: impl FnOnce()) -> usize {
    TOTAL.with(|t| t.set(0));
    f();
    TOTAL.with(|t| t.get())
}

/// A header announcing `len` bytes, then `body_len` bytes of ramp (`None`: endless).
struct Peer {
    head: [u8; HEADER_LEN],
    body_len: Option<u64>,
    pos: u64,
}

impl Peer {
    fn new(len: u32, body_len: Option<u64>) -> Self {
        let mut head = [0u8; HEADER_LEN];
        head[..4].copy_from_slice(b"SHLF");
        head[4] = 1;
        head[6..8].copy_from_slice(&kind::WRITE.to_be_bytes());
        head[8..12].copy_from_slice(&7u32.to_be_bytes());
        head[12..16].copy_from_slice(&len.to_be_bytes());
        Peer {
            head,
            body_len,
            pos: 0,
        }
    }
}

impl Read for Peer {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let end = self.body_len.map_or(u64::MAX, |b| HEADER_LEN as u64 + b);
        let mut n = 0;
        for b in out.iter_mut() {
            if self.pos >= end {
                break;
            }
            *b = match usize::try_from(self.pos) {
                Ok(i) if i < HEADER_LEN => self.head[i],
                _ => (self.pos % 251) as u8,
            };
            self.pos += 1;
            n += 1;
        }
        Ok(n)
    }
}

#[test]
fn hostile_length_allocates_nothing_large() {
    for len in [u32::MAX, HARD_MAX_PAYLOAD + 1, DEFAULT_MAX_PAYLOAD + 1] {
        let mut peer = Peer::new(len, None);
        let largest = largest_alloc(|| {
            let got = FrameReader::new(&mut peer, DEFAULT_MAX_PAYLOAD).read_frame::<Request>();
            assert!(
                matches!(
                    got,
                    Err(ReadError::Malformed {
                        id: Some(7),
                        error: DecodeError::TooLarge { .. }
                    })
                ),
                "len {len}: {got:?}"
            );
        });
        assert!(largest < 4096, "len {len}: allocated {largest} bytes");
        assert_eq!(peer.pos, HEADER_LEN as u64);
    }
}

#[test]
fn endless_peer_costs_at_most_the_limit() {
    let mut peer = Peer::new(DEFAULT_MAX_PAYLOAD, None);
    let largest = largest_alloc(|| {
        let got = FrameReader::new(&mut peer, DEFAULT_MAX_PAYLOAD).read_frame::<Request>();
        assert!(matches!(got, Err(ReadError::Malformed { .. })), "{got:?}");
    });
    assert!(
        largest <= DEFAULT_MAX_PAYLOAD as usize,
        "allocated {largest} bytes for a {DEFAULT_MAX_PAYLOAD}-byte limit"
    );
    assert_eq!(peer.pos, HEADER_LEN as u64 + u64::from(DEFAULT_MAX_PAYLOAD));
}

#[test]
fn stalled_peer_costs_what_it_sent() {
    // Announces the whole limit, sends 100 bytes, hangs up.
    let mut peer = Peer::new(DEFAULT_MAX_PAYLOAD, Some(100));
    let largest = largest_alloc(|| {
        let got = FrameReader::new(&mut peer, DEFAULT_MAX_PAYLOAD).read_frame::<Request>();
        assert!(matches!(got, Err(ReadError::UnexpectedEof)), "{got:?}");
    });
    assert!(
        largest <= 64 << 10,
        "allocated {largest} bytes for 100 bytes received"
    );
}

#[test]
fn a_large_write_is_read_once_into_the_buffer_its_data_is_a_view_of() {
    // 1 MiB of path "", offset 0 and data: the payload is a whole Write request.
    let data_len = 1usize << 20;
    let mut frame = Vec::new();
    shelf_proto::Frame::new(
        7,
        Request::Write {
            path: Vec::new(),
            offset: 0,
            data: vec![3u8; data_len].into(),
        },
    )
    .encode(&mut frame, DEFAULT_MAX_PAYLOAD)
    .expect("encodes");
    let mut got = None;
    let total = total_alloc(|| {
        got = Some(FrameReader::new(&frame[..], DEFAULT_MAX_PAYLOAD).read_frame::<Request>());
    });
    let Some(Ok(Some(f))) = got else {
        panic!("{got:?}")
    };
    let Request::Write { data, .. } = f.msg else {
        panic!("{:?}", f.msg)
    };
    assert_eq!(data.len(), data_len);
    assert!(data.iter().all(|&b| b == 3));
    // The first 64 KiB step, then the whole payload once: no second buffer for the data.
    assert!(
        total <= data_len + (64 << 10) + 4096,
        "allocated {total} bytes in all for a {data_len}-byte write"
    );
}
