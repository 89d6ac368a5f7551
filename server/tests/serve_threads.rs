//! `serve` ends every thread it starts before it returns, thread-local destructors included.
//! The serve_stream fuzzer's LeakSanitizer reported as leaked what a worker thread still held
//! while exiting after `serve` had returned (std's channel context, freed by a thread-local
//! destructor); a caller may count on `serve` leaving nothing running behind it.
//!
//! The test makes the same observation as LeakSanitizer: a global allocator counts the bytes
//! live in the process, and after `serve` returns they must be what they were before. (Counting
//! `/proc/self/task` instead is racy even for a joined thread: the kernel lists a thread for a
//! moment after `pthread_join` has returned.) This is its own test binary, with one test, so
//! that no other test allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use shelf_proto::{write_frame, Frame, FrameReader, Hello, Reply, Request, HARD_MAX_PAYLOAD};
use shelf_server::{serve, Library, ServeConfig};

/// The system allocator, counting the bytes live in the whole process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to `System` unchanged; only a counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `layout` is passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this `layout`, as the caller promises.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A hello, then reads and listings pipelined behind it (so some go to the workers), then the
/// client's end of stream.
fn session_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let hello = Request::Hello(Hello::new("serve-threads"));
    write_frame(
        &mut out,
        &Frame::new(1, hello),
        HARD_MAX_PAYLOAD,
        &mut scratch,
    )
    .expect("hello");
    for id in 2..10 {
        let req = if id % 2 == 0 {
            Request::Read {
                path: b"file".to_vec(),
                offset: 0,
                len: 10,
            }
        } else {
            Request::List {
                path: Vec::new(),
                after: Vec::new(),
                max_entries: 16,
            }
        };
        write_frame(
            &mut out,
            &Frame::new(id, req),
            HARD_MAX_PAYLOAD,
            &mut scratch,
        )
        .expect("request");
    }
    out
}

/// One session over a socket pair, served on this thread. Returns the bytes that stayed
/// allocated across `serve` (live after it returned minus live before it started).
fn one_session(lib: &Library, cfg: &ServeConfig, input: &[u8]) -> isize {
    let (server_side, mut client) = UnixStream::pair().expect("socket pair");
    // The whole session fits in the socket's buffer, and so do the replies: no thread of ours
    // is needed to feed or drain it.
    client.write_all(input).expect("send the session");
    client.shutdown(Shutdown::Write).expect("end of stream");
    let before = live();
    serve(server_side, lib, cfg).expect("serve ends cleanly at end of stream");
    let kept = live() - before;
    let mut replies = FrameReader::new(client, HARD_MAX_PAYLOAD);
    let first = replies.read_frame::<Reply>().expect("a reply");
    assert!(
        matches!(
            first,
            Some(Frame {
                msg: Reply::Hello(_),
                ..
            })
        ),
        "the handshake succeeded: {first:?}"
    );
    kept
}

#[test]
fn serve_returns_only_after_its_worker_threads_have_exited() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("file"), b"0123456789").expect("library file");
    let lib = Library::open(dir.path()).expect("open library");
    let cfg = ServeConfig {
        workers: 8,
        ..ServeConfig::default()
    };
    let input = session_bytes();
    // What this thread keeps for good once made: its own channel context (made the first
    // time it blocks on a channel, as `serve` may when its workers are busy) and whatever
    // `serve` initialises once per process.
    let (_tx, rx) = mpsc::sync_channel::<()>(1);
    let _ = rx.recv_timeout(Duration::from_millis(1));
    for _ in 0..5 {
        one_session(&lib, &cfg, &input);
    }
    // A worker that is still exiting frees its context a few microseconds later, so one
    // round may miss it; many rounds do not.
    for round in 0..200 {
        let kept = one_session(&lib, &cfg, &input);
        assert_eq!(
            kept, 0,
            "round {round}: live bytes changed by {kept} across serve (a thread that serve \
             started was still exiting when it returned, this round or the one before)"
        );
    }
}
