//! Feeds arbitrary bytes to `shelf_server::serve` as the client side of a connection.
//!
//! Each input runs against a fresh library directory inside a scratch directory that also
//! holds a sentinel file *outside* the library. The target asserts:
//!
//! - `serve` never panics (it returns `Ok` or a typed `ServeError`);
//! - every byte the server sends back is a sequence of whole, valid reply frames (a reply is
//!   decodable with the largest payload limit any peer may agree on), with nothing left over;
//! - nothing appears outside the library: the scratch directory holds exactly the library and
//!   the sentinel afterwards, and the sentinel is unchanged.
//!
//! Input layout: when the first byte is even, a valid `Hello` is sent before the rest of the
//! input, so the fuzzer spends its time past the handshake; when odd, the rest goes raw (the
//! handshake itself is fuzzed). The server side runs over `UnixStream::pair()`; the input is
//! written from a thread and the replies are read by another, so neither side can block the
//! other on a full socket buffer.

#![no_main]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use shelf_proto::{Frame, Hello, Reply, Request, HARD_MAX_PAYLOAD, PROTOCOL_VERSION};
use shelf_server::{serve, Library, ServeConfig};

const SENTINEL: &[u8] = b"outside the library; must never change\n";

fn hello_frame() -> Vec<u8> {
    let hello = Request::Hello(Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        token: Vec::new(),
        max_payload: 1 << 20,
        max_io: 256 << 10,
        features: u64::MAX,
        agent: "fuzz".into(),
    });
    Frame::new(1, hello)
        .to_bytes(HARD_MAX_PAYLOAD)
        .expect("a hello encodes")
}

fuzz_target!(|data: &[u8]| {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: setting SIGPIPE to ignored has no memory effects; a write to a closed
        // socket must be an EPIPE error here, not the end of the fuzzer.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    });
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(rest.len() + 64);
    if mode & 1 == 0 {
        input.extend_from_slice(&hello_frame());
    }
    input.extend_from_slice(rest);

    let scratch = tempfile::Builder::new()
        .prefix("shelf-fuzz-")
        .tempdir()
        .expect("scratch dir");
    let lib_dir = scratch.path().join("lib");
    std::fs::create_dir(&lib_dir).expect("library dir");
    std::fs::write(lib_dir.join("file"), b"0123456789").expect("library file");
    std::fs::create_dir(lib_dir.join("dir")).expect("library subdir");
    let sentinel = scratch.path().join("sentinel");
    std::fs::write(&sentinel, SENTINEL).expect("sentinel");
    let lib = Library::open(&lib_dir).expect("open library");

    let cfg = ServeConfig {
        workers: 2,
        ..ServeConfig::default()
    };
    let (server_side, client_side) = UnixStream::pair().expect("socket pair");
    let mut client_writer = client_side.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        // The server may stop reading (malformed frame): then this write fails, as it should.
        let _ = client_writer.write_all(&input);
        let _ = client_writer.shutdown(Shutdown::Write);
    });
    let mut client_reader = client_side;
    let reader = std::thread::spawn(move || {
        let mut replies = Vec::new();
        let _ = client_reader.read_to_end(&mut replies);
        replies
    });
    let _ = serve(server_side, &lib, &cfg);
    writer.join().expect("writer thread");
    let replies = reader.join().expect("reader thread");

    let mut rest = &replies[..];
    while !rest.is_empty() {
        match Frame::<Reply>::decode(rest, HARD_MAX_PAYLOAD) {
            Ok(Some((_, used))) => rest = &rest[used..],
            Ok(None) => panic!("the server sent a partial frame: {} bytes left", rest.len()),
            Err(e) => panic!("the server sent an invalid frame: {e}"),
        }
    }

    check_outside(scratch.path(), &sentinel);
});

/// The scratch directory must hold exactly `lib` and `sentinel`, the sentinel unchanged.
fn check_outside(scratch: &Path, sentinel: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(scratch)
        .expect("list scratch dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["lib", "sentinel"], "something appeared beside the library");
    assert_eq!(
        std::fs::read(sentinel).expect("read sentinel"),
        SENTINEL,
        "the sentinel outside the library changed"
    );
}
