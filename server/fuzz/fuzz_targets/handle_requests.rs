//! The server's request handling in-process, at fuzzing speed: arbitrary bytes are read as a
//! stream of request frames, and each decoded request runs through `Session::handle` (what a
//! connection's request loop calls) against a real library directory.
//!
//! `serve_stream` fuzzes the whole connection (handshake, threads, sockets) but spends most
//! of each input starting threads and making directories. This target keeps one library in
//! a scratch directory on tmpfs (`/dev/shm`, where fsync costs nothing), resets it between
//! inputs with a few system calls, and runs no thread, so the fuzzer's time goes to the
//! request handlers and the library's path sandbox. It asserts:
//! - no request panics, and every reply encodes into a frame within the agreed limit that
//!   decodes back to the same reply (the wire could carry it);
//! - nothing appears outside the library and the sentinel beside it never changes, whatever
//!   the paths say (`..`, absolute paths, symlinks made by earlier requests).

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shelf_proto::{Frame, FrameReader, Limits, Reply, Request, DEFAULT_MAX_IO, DEFAULT_MAX_PAYLOAD};
use shelf_server::{Library, ServeConfig, Session};

const SENTINEL: &[u8] = b"outside the library; must never change\n";

struct Scratch {
    _dir: tempfile::TempDir,
    lib: PathBuf,
    sentinel: PathBuf,
    root: PathBuf,
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("shelf-fuzz-handle-")
            .tempdir_in(base)
            .expect("scratch dir");
        let lib = dir.path().join("lib");
        let sentinel = dir.path().join("sentinel");
        std::fs::write(&sentinel, SENTINEL).expect("sentinel");
        Scratch {
            root: dir.path().to_path_buf(),
            lib,
            sentinel,
            _dir: dir,
        }
    })
}

/// The library as every input starts: `file` (10 bytes) and `dir/`.
fn reset(lib: &Path) {
    if lib.exists() {
        // Permissions may have been taken away by a SetAttr: give them back first.
        make_writable(lib);
        std::fs::remove_dir_all(lib).expect("clear the library");
    }
    std::fs::create_dir(lib).expect("library dir");
    std::fs::write(lib.join("file"), b"0123456789").expect("library file");
    std::fs::create_dir(lib.join("dir")).expect("library subdir");
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    reset(&s.lib);
    let lib = Library::open(&s.lib).expect("open library");
    let cfg = ServeConfig::default();
    let limits = Limits {
        max_payload: DEFAULT_MAX_PAYLOAD,
        max_io: DEFAULT_MAX_IO,
    };
    let session = Session::new(limits);
    let mut reader = FrameReader::new(data, limits.max_payload);
    // Requests until the bytes end or stop being frames; a real connection closes there.
    while let Ok(Some(frame)) = reader.read_frame::<Request>() {
        let reply = session.handle(&lib, &cfg, frame.msg);
        let bytes = Frame::new(frame.id, reply.clone())
            .to_bytes(limits.max_payload)
            .unwrap_or_else(|e| panic!("a reply the wire cannot carry: {e}: {reply:?}"));
        match Frame::<Reply>::decode(&bytes, limits.max_payload) {
            Ok(Some((back, used))) => {
                assert_eq!(used, bytes.len());
                assert_eq!(back.msg, reply, "the reply changed on the wire");
            }
            other => panic!("a reply that does not decode: {other:?}"),
        }
    }
    session.end(&lib);
    check_outside(&s.root, &s.sentinel);
});

/// The scratch directory must hold exactly `lib` and `sentinel`, the sentinel unchanged.
fn check_outside(root: &Path, sentinel: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(root)
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
