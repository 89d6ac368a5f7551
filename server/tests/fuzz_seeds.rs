//! Seeds of the server's fuzz targets for the requests newer than their first corpora: locks
//! (`Lock`, `TestLock`, `ReleaseLocks`) and change notices (`Watch`, `Changes`). Without them
//! the fuzzers reach these handlers only by mutating other frames into them.
//!
//! `serve_stream` seeds start with the mode byte (0: the harness sends a `Hello` first);
//! `handle_requests` seeds are the bare frames. The test fails when a seed file is missing or
//! stale; `SHELF_WRITE_SEEDS=1 cargo test -p shelf-server --test fuzz_seeds` rewrites them.

use std::path::PathBuf;

use shelf_proto::{Frame, LockFlavor, LockKind, Request, DEFAULT_MAX_PAYLOAD};

fn frames(requests: Vec<Request>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, req) in requests.into_iter().enumerate() {
        let id = u32::try_from(k).expect("few frames") + 2;
        let bytes = Frame::new(id, req)
            .to_bytes(DEFAULT_MAX_PAYLOAD)
            .expect("seed frames are small");
        out.extend_from_slice(&bytes);
    }
    out
}

fn lock(
    owner: u64,
    flavor: LockFlavor,
    kind: LockKind,
    range: (u64, u64),
    wait_ms: u32,
) -> Request {
    Request::Lock {
        path: b"file".to_vec(),
        file: 7,
        owner,
        flavor,
        kind,
        start: range.0,
        end: range.1,
        wait_ms,
    }
}

/// Two owners taking, testing, splitting and dropping locks of both flavors on one file.
fn locks() -> Vec<u8> {
    frames(vec![
        lock(1, LockFlavor::Posix, LockKind::Write, (0, 99), 0),
        lock(2, LockFlavor::Posix, LockKind::Read, (50, u64::MAX), 0),
        Request::TestLock {
            path: b"file".to_vec(),
            file: 7,
            owner: 2,
            kind: LockKind::Write,
            start: 0,
            end: 10,
        },
        lock(1, LockFlavor::Posix, LockKind::Unlock, (20, 30), 0),
        lock(3, LockFlavor::Flock, LockKind::Write, (0, u64::MAX), 0),
        // A short wait on a held lock: the server's waiting path, ended by its timeout.
        lock(4, LockFlavor::Flock, LockKind::Read, (0, u64::MAX), 5),
        Request::ReleaseLocks {
            file: 7,
            owner: 1,
            flavor: LockFlavor::Posix,
        },
        Request::ReleaseLocks {
            file: 7,
            owner: 3,
            flavor: LockFlavor::Flock,
        },
    ])
}

/// Watching directories (one of them outside the library), changing one, and asking for the
/// changes with and without a wait.
fn watch() -> Vec<u8> {
    frames(vec![
        Request::Watch {
            paths: vec![b"".to_vec(), b"dir".to_vec(), b"../x".to_vec()],
        },
        Request::Mkdir {
            path: b"dir/new".to_vec(),
            perm: 0o755,
        },
        Request::Changes { wait_ms: 0 },
        Request::Changes { wait_ms: 5 },
    ])
}

#[test]
fn seed_corpora_are_current() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var_os("SHELF_WRITE_SEEDS").is_some();
    for (name, bytes) in [("seed-locks", locks()), ("seed-watch", watch())] {
        let with_mode = [&[0u8][..], &bytes].concat();
        for (target, content) in [("serve_stream", with_mode), ("handle_requests", bytes)] {
            let path = fuzz.join(target).join(format!("{name}.bin"));
            if write {
                std::fs::write(&path, &content).expect("seed can be written");
            }
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run SHELF_WRITE_SEEDS=1 cargo test -p shelf-server --test fuzz_seeds",
                    path.display()
                )
            });
            assert_eq!(on_disk, content, "{} is stale", path.display());
        }
    }
}
