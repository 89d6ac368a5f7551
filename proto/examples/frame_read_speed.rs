//! How fast `FrameReader` takes 1 MiB `Data` replies off a byte stream, beside a plain copy
//! of the same bytes (the floor: reading a frame copies its payload once, into the buffer
//! that becomes the reply's data; the fresh buffer is zeroed first).
//!
//! `cargo run --release -p shelf-proto --example frame_read_speed`

use std::time::Instant;

use shelf_proto::{Attr, FileKind, Frame, FrameReader, Reply, Timestamp, DEFAULT_MAX_PAYLOAD};

const FRAMES: u32 = 64;
const ROUNDS: usize = 16;

fn main() {
    let attr = Attr {
        ino: 1,
        kind: FileKind::File,
        perm: 0o644,
        nlink: 1,
        size: 0,
        blocks: 0,
        blksize: 4096,
        atime: Timestamp::default(),
        mtime: Timestamp::default(),
        ctime: Timestamp::default(),
        btime: Timestamp::default(),
    };
    let mut wire = Vec::new();
    for id in 2..2 + FRAMES {
        let data = vec![7u8; 1 << 20].into();
        Frame::new(id, Reply::Data { attr, data })
            .encode(&mut wire, DEFAULT_MAX_PAYLOAD)
            .expect("encodes");
    }
    let mib = (wire.len() * ROUNDS) as f64 / (1 << 20) as f64;

    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..ROUNDS {
        for piece in wire.chunks(1 << 20) {
            buf[..piece.len()].copy_from_slice(piece);
            std::hint::black_box(&buf);
        }
    }
    let copy = mib / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut got = 0usize;
    for _ in 0..ROUNDS {
        let mut reader = FrameReader::new(&wire[..], DEFAULT_MAX_PAYLOAD);
        while let Some(frame) = reader.read_frame::<Reply>().expect("valid") {
            if let Reply::Data { data, .. } = frame.msg {
                got += data.len();
            }
        }
    }
    let frames = mib / started.elapsed().as_secs_f64();
    assert_eq!(got, ((FRAMES as usize) << 20) * ROUNDS);
    println!("plain copy:   {copy:>6.0} MiB/s");
    println!(
        "FrameReader:  {frames:>6.0} MiB/s ({:.2} copies' worth)",
        copy / frames
    );
}
