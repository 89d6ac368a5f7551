//! The range reader and writer over the in-memory server, with faults injected on cue
//! (`shelf_testkit::{Memory, Faulty}`): no sockets, no timing.

use shelf_proto::Code;
use shelf_remote::ranges::{
    RangeReader, RangeWriter, ReadOptions, Resend, Versions, WriteOptions, Written,
};
use shelf_remote::Client;
use shelf_server::ServeConfig;
use shelf_testkit::{Fault, Faulty, Memory};

/// Byte k is k mod 251, so a misplaced piece cannot pass.
fn ramp(len: usize) -> Vec<u8> {
    (0..len).map(|k| (k % 251) as u8).collect()
}

const PIECE: usize = 4096;

/// A library whose server splits I/O at 4 KiB, behind a fault injector that hangs the
/// in-memory connection up whenever it loses a request (so every reply then in flight is lost
/// with it, as on a real connection).
fn setup() -> (tempfile::TempDir, Client<Faulty<Memory>>) {
    let (dir, m) = memory();
    (dir, Client::new(Faulty::new(m).on_hang_up(Memory::hang_up)))
}

/// The same with a loss that takes only the chosen request, not the others in flight.
fn setup_one_lost() -> (tempfile::TempDir, Client<Faulty<Memory>>) {
    let (dir, m) = memory();
    (dir, Client::new(Faulty::new(m)))
}

fn memory() -> (tempfile::TempDir, Memory) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ServeConfig {
        max_io: PIECE as u32,
        ..ServeConfig::default()
    };
    let m = Memory::with(dir.path(), cfg).expect("memory server");
    (dir, m)
}

/// Lost alone, the third piece is sent once more; lost with its connection, so are the two
/// sent before it whose replies had not been read, and every piece lands.
#[test]
fn the_third_of_eight_writes_lost_with_its_connection_is_resent() {
    for (fault, whole_connection, sent, connections) in [
        (Fault::LostBefore, false, 9, 1),
        (Fault::LostAfter, false, 9, 1),
        (Fault::LostBefore, true, 11, 2),
        (Fault::LostAfter, true, 11, 2),
    ] {
        let (dir, c) = if whole_connection {
            setup()
        } else {
            setup_one_lost()
        };
        c.create(b"f", 0o644, true).expect("create");
        let data = ramp(8 * PIECE);
        c.transport().fail("write", 3, fault.clone());
        let attr = c.write(b"f", 0, &data).expect("the lost pieces are resent");
        assert_eq!(attr.size, data.len() as u64);
        assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), data);
        assert_eq!(c.transport().fired(), [("write", fault.clone())]);
        assert_eq!(c.transport().seen("write"), sent, "{fault:?}");
        assert_eq!(c.transport().inner().connections(), connections);
    }
}

#[test]
fn with_resending_forbidden_a_lost_write_is_the_callers_error() {
    let (dir, c) = setup();
    c.create(b"f", 0o644, true).expect("create");
    let t = c.transport();
    t.fail("write", 3, Fault::LostAfter);
    let opts = WriteOptions {
        max_io: PIECE,
        window: 8,
        resend: Resend::Never,
    };
    let mut w = RangeWriter::default();
    let mut results = Vec::new();
    for i in 0..8u64 {
        w.send(t, b"f", i * PIECE as u64, vec![1; PIECE], opts, &mut |d| {
            results.push(d)
        });
    }
    assert_eq!(w.in_flight(), 8, "a window of eight waits for none");
    w.wait_all(t, Resend::Never, &mut |d| results.push(d));
    let outcome: Vec<bool> = results.iter().map(|d: &Written| d.result.is_ok()).collect();
    // The two before it were in flight on the connection that was lost.
    assert_eq!(outcome, [false, false, false, true, true, true, true, true]);
    for d in &results[..3] {
        let err = d.result.as_ref().expect_err("lost");
        assert!(err.is_connection_lost(), "{err}");
    }
    assert_eq!(results[2].range, 2 * PIECE as u64..3 * PIECE as u64);
    assert_eq!(t.seen("write"), 8, "nothing was resent");
    // Buffers come back for reuse, emptied, in the order sent.
    assert!(results
        .iter()
        .all(|d| d.buf.is_empty() && d.buf.capacity() >= PIECE));
    assert!(w.take_overlapped());
    assert!(!w.take_overlapped(), "the flag is per call");
    drop(dir);
}

#[test]
fn a_refused_write_piece_fails_the_whole_write() {
    let (_dir, c) = setup();
    c.create(b"f", 0o644, true).expect("create");
    c.transport().fail("write", 2, Fault::Refuse(Code::NoSpace));
    let err = c.write(b"f", 0, &ramp(4 * PIECE)).expect_err("refused");
    assert_eq!(err.code(), Code::NoSpace);
}

#[test]
fn a_lost_read_piece_is_resent_and_the_read_is_whole() {
    let (dir, c) = setup();
    let data = ramp(10 * PIECE + 17);
    std::fs::write(dir.path().join("f"), &data).expect("write");
    c.transport().fail("read", 3, Fault::LostAfter);
    let (attr, got) = c.read(b"f", 0, data.len() as u32).expect("read");
    assert_eq!(attr.size, data.len() as u64);
    assert_eq!(got, data);
    assert_eq!(
        c.transport().seen("read"),
        14,
        "eleven pieces; the three in flight on the lost connection resent"
    );
}

#[test]
fn a_piece_that_sees_another_version_gives_estale() {
    let (dir, c) = setup();
    let path = dir.path().join("f");
    std::fs::write(&path, ramp(4 * PIECE)).expect("write");
    let opts = ReadOptions {
        window: 1,
        ..ReadOptions::default()
    };
    let mut reader = RangeReader::new(c.transport(), b"f", 0..4 * PIECE as u64, opts);
    let first = reader.next().expect("a piece").expect("read");
    assert_eq!(first.data, ramp(PIECE));
    // Changed between two pieces: a new file takes the name.
    std::fs::write(dir.path().join("g"), ramp(8 * PIECE)).expect("write");
    std::fs::rename(dir.path().join("g"), &path).expect("rename");
    let err = reader.next().expect("a piece").expect_err("two versions");
    assert_eq!(err.code(), Code::Stale);
    assert!(reader.next().is_none(), "nothing after an error");

    // The version the caller saw before is checked from the first piece on.
    let before = c.stat(b"f").expect("stat").version();
    std::fs::write(dir.path().join("g"), ramp(8 * PIECE)).expect("write");
    std::fs::rename(dir.path().join("g"), &path).expect("rename");
    let opts = ReadOptions {
        versions: Versions::Is(before),
        ..ReadOptions::default()
    };
    let mut reader = RangeReader::new(c.transport(), b"f", 0..4 * PIECE as u64, opts);
    let err = reader.next().expect("a piece").expect_err("changed");
    assert_eq!(err.code(), Code::Stale);
}

#[test]
fn pieces_come_in_order_and_stop_after_a_short_one() {
    let (dir, c) = setup();
    let data = ramp(5 * PIECE + 100);
    std::fs::write(dir.path().join("f"), &data).expect("write");
    c.transport().fail(
        "read",
        1,
        Fault::Delay(std::time::Duration::from_millis(30)),
    );
    let opts = ReadOptions {
        versions: Versions::Any,
        ..ReadOptions::default()
    };
    let pieces: Vec<_> = RangeReader::new(c.transport(), b"f", 0..100 * PIECE as u64, opts)
        .map(|p| p.expect("piece"))
        .collect();
    let offsets: Vec<u64> = pieces.iter().map(|p| p.offset).collect();
    assert_eq!(
        offsets,
        (0..6).map(|i| i * PIECE as u64).collect::<Vec<_>>()
    );
    assert!(pieces[5].is_short());
    let joined: Vec<u8> = pieces.into_iter().flat_map(|p| p.data).collect();
    assert_eq!(joined, data);
    assert_eq!(
        c.transport().seen("read"),
        13,
        "the window stays full until the short piece is seen"
    );
}
