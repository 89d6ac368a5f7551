//! A hostile peer against the real `shelfd`, and hostile operations through a real mount.
//!
//! The raw client here speaks frames over a `TcpStream` with `shelf_proto` and can also send
//! bytes that are not valid frames. Every test checks the same promises: nothing is created,
//! read or changed outside the library root; each bad request gets an errno-style `Error`
//! reply (or, for a broken frame, an EPROTO reply and a closed connection); the server never
//! panics (its log never says "panicked") and keeps serving new connections.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shelf_proto::{
    Code, Frame, FrameReader, Hello, ReadError, Reply, Request, SetAttrs, Whence, DEFAULT_MAX_IO,
    HARD_MAX_PAYLOAD,
};
use shelf_tests::*;

// ---------------------------------------------------------------------------------------------
// A raw protocol client
// ---------------------------------------------------------------------------------------------

const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Raw {
    stream: RawConn,
    reader: FrameReader<RawConn>,
    next_id: u32,
}

impl Raw {
    /// Connects, inside TLS when the server speaks it (the frames are the same).
    fn connect(addr: SocketAddr) -> Raw {
        let stream = RawConn::connect(addr, IO_TIMEOUT).expect("connect to shelfd");
        let reader = FrameReader::new(stream.try_clone().expect("clone"), HARD_MAX_PAYLOAD);
        Raw {
            stream,
            reader,
            next_id: 1,
        }
    }

    /// Connects and shakes hands without a token.
    fn ready(addr: SocketAddr) -> Raw {
        let mut c = Raw::connect(addr);
        match c.hello(b"") {
            Reply::Hello(_) => c,
            other => panic!("handshake refused: {other:?}"),
        }
    }

    fn hello(&mut self, token: &[u8]) -> Reply {
        self.call(Request::Hello(Hello {
            token: token.to_vec(),
            ..Hello::new("hostile-test")
        }))
    }

    fn send(&mut self, req: Request) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = Frame::new(id, req)
            .to_bytes(HARD_MAX_PAYLOAD)
            .expect("request encodes");
        self.stream.write_all(&bytes).expect("send request");
        id
    }

    fn recv(&mut self) -> Result<Option<Frame<Reply>>, ReadError> {
        self.reader.read_frame::<Reply>()
    }

    /// Sends one request and returns its reply, checking the id.
    #[track_caller]
    fn call(&mut self, req: Request) -> Reply {
        let what = format!("{req:.200?}");
        let id = self.send(req);
        match self.recv() {
            Ok(Some(f)) => {
                assert_eq!(f.id, id, "reply id for {what}");
                f.msg
            }
            other => panic!("no reply to {what}: {other:?}"),
        }
    }

    /// Waits for the server to close the connection (EOF or reset), at most `IO_TIMEOUT`.
    #[track_caller]
    fn expect_closed(&mut self) {
        let mut buf = [0u8; 256];
        let started = Instant::now();
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    panic!("connection still open after {:?}", started.elapsed())
                }
                Err(_) => return,
            }
        }
    }
}

fn code(reply: &Reply) -> Option<Code> {
    match reply {
        Reply::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[track_caller]
fn assert_error(reply: &Reply, allowed: &[Code], what: &str) {
    match code(reply) {
        Some(c) if allowed.contains(&c) => {}
        _ => panic!("{what}: expected an error in {allowed:?}, got {reply:.300?}"),
    }
}

/// A library inside a scratch directory that also holds `outside/secret`, which the server
/// must never touch. Returns (scratch, lib path, outside path).
struct Sandbox {
    scratch: tempfile::TempDir,
}

const SECRET: &[u8] = b"OUTSIDE-SECRET: never served, never changed\n";

impl Sandbox {
    fn new() -> Sandbox {
        let scratch = tempfile::Builder::new()
            .prefix("shelf-hostile-")
            .tempdir()
            .expect("scratch dir");
        std::fs::create_dir(scratch.path().join("lib")).expect("mkdir lib");
        std::fs::create_dir(scratch.path().join("outside")).expect("mkdir outside");
        write(scratch.path().join("outside/secret"), SECRET);
        write(scratch.path().join("lib/ok"), b"inside");
        Sandbox { scratch }
    }

    fn lib(&self) -> std::path::PathBuf {
        self.scratch.path().join("lib")
    }

    fn outside(&self) -> std::path::PathBuf {
        self.scratch.path().join("outside")
    }

    /// The outside directory holds exactly the untouched secret, and nothing else appeared
    /// beside the library.
    #[track_caller]
    fn assert_outside_untouched(&self) {
        let names = |d: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .expect("list")
                .map(|e| e.expect("entry").file_name())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&self.outside()), ["secret"], "outside changed");
        assert_eq!(names(self.scratch.path()), ["lib", "outside"]);
        assert_eq!(read(self.outside().join("secret")), SECRET);
        let meta = std::fs::metadata(self.outside().join("secret")).expect("stat secret");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    }
}

#[track_caller]
fn assert_no_panic(server: &Server) {
    let log = server.log();
    assert!(
        !log.contains("panicked"),
        "the server panicked\n--- log ---\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// Every request kind that takes a path, with `p` in each path position.
fn requests_with_path(p: &[u8]) -> Vec<Request> {
    let p = p.to_vec();
    let ok = b"ok".to_vec();
    vec![
        Request::Stat { path: p.clone() },
        Request::List {
            path: p.clone(),
            after: Vec::new(),
            max_entries: 0,
        },
        Request::Read {
            path: p.clone(),
            offset: 0,
            len: 100,
        },
        Request::Write {
            path: p.clone(),
            offset: 0,
            data: b"escaped".to_vec().into(),
        },
        Request::Create {
            path: p.clone(),
            perm: 0o644,
            exclusive: false,
        },
        Request::SetAttr {
            path: p.clone(),
            attrs: SetAttrs {
                perm: Some(0o777),
                size: Some(0),
                atime: None,
                mtime: None,
            },
        },
        Request::Unlink { path: p.clone() },
        Request::Mkdir {
            path: p.clone(),
            perm: 0o755,
        },
        Request::Rmdir { path: p.clone() },
        Request::Rename {
            from: p.clone(),
            to: b"renamed".to_vec(),
            flags: 0,
        },
        Request::Rename {
            from: ok.clone(),
            to: p.clone(),
            flags: 0,
        },
        Request::Symlink {
            path: p.clone(),
            target: b"ok".to_vec(),
        },
        Request::Readlink { path: p.clone() },
        Request::Link {
            existing: p.clone(),
            new: b"linked".to_vec(),
        },
        Request::Link {
            existing: ok.clone(),
            new: p.clone(),
        },
        Request::Fsync {
            path: p.clone(),
            data_only: false,
        },
        Request::PutBegin {
            path: p.clone(),
            perm: 0o644,
        },
        Request::PutCommit {
            temp: p.clone(),
            path: b"committed".to_vec(),
            mtime: None,
        },
        Request::PutCommit {
            temp: b".shelf-put-none".to_vec(),
            path: p.clone(),
            mtime: None,
        },
        Request::Fallocate {
            path: p.clone(),
            mode: 0,
            offset: 0,
            len: 4096,
        },
        Request::Seek {
            path: p.clone(),
            offset: 0,
            whence: Whence::Data,
        },
        Request::CopyRange {
            from: p.clone(),
            from_offset: 0,
            to: ok.clone(),
            to_offset: 0,
            len: 4096,
        },
        Request::CopyRange {
            from: ok.clone(),
            from_offset: 0,
            to: p.clone(),
            to_offset: 0,
            len: 4096,
        },
        Request::PutAbort { temp: p.clone() },
        Request::GetXattr {
            path: p.clone(),
            name: b"user.k".to_vec(),
        },
        Request::SetXattr {
            path: p.clone(),
            name: b"user.k".to_vec(),
            value: b"escaped".to_vec(),
            flags: 0,
        },
        Request::ListXattr { path: p.clone() },
        Request::RemoveXattr {
            path: p,
            name: b"user.k".to_vec(),
        },
    ]
}

#[test]
fn every_request_kind_refuses_hostile_paths_and_nothing_escapes() {
    let sb = Sandbox::new();
    let server = Server::plain(&sb.lib());
    let outside_abs = sb.outside().join("secret");
    let long_name = vec![b'n'; 256];
    let mut long_path = Vec::new();
    while long_path.len() <= 4096 {
        long_path.extend_from_slice(b"abcdefgh/");
    }
    long_path.extend_from_slice(b"x");
    let invalid: Vec<Vec<u8>> = vec![
        b"..".to_vec(),
        b"../outside/secret".to_vec(),
        b"ok/../../outside/secret".to_vec(),
        b"./ok".to_vec(),
        b"a//b".to_vec(),
        outside_abs.as_os_str().as_bytes().to_vec(),
        b"/etc/passwd".to_vec(),
        b"/".to_vec(),
        b"ok\0/../../outside".to_vec(),
        b"\0".to_vec(),
    ];
    let too_long: Vec<Vec<u8>> = vec![
        long_name.clone(),
        [b"d/", &long_name[..]].concat(),
        long_path,
    ];

    let mut c = Raw::ready(server.addr());
    let mut count = 0;
    for (paths, codes) in [
        (&invalid, &[Code::Invalid][..]),
        (&too_long, &[Code::NameTooLong][..]),
    ] {
        for p in paths {
            for req in requests_with_path(p) {
                let what = format!("{} {:?}", req.name(), String::from_utf8_lossy(p));
                let reply = c.call(req);
                assert_error(&reply, codes, &what);
                count += 1;
            }
        }
    }
    // The connection survived every refusal.
    assert_eq!(c.call(Request::Ping), Reply::Pong);
    eprintln!("{count} hostile requests refused");

    // Symlinks that point out, planted by the client itself (targets are stored as given)
    // or on the server: following them is refused, whatever the request.
    for (name, target) in [
        (&b"abs-link"[..], outside_abs.as_os_str().as_bytes()),
        (b"rel-link", b"../outside/secret"),
        (b"dir-link", b"../outside"),
    ] {
        let reply = c.call(Request::Symlink {
            path: name.to_vec(),
            target: target.to_vec(),
        });
        assert!(
            matches!(reply, Reply::Attr(_)),
            "symlink {name:?}: {reply:?}"
        );
    }
    std::os::unix::fs::symlink(sb.outside(), sb.lib().join("server-link")).expect("symlink");
    for path in [
        &b"abs-link"[..],
        b"rel-link",
        b"dir-link/secret",
        b"server-link/secret",
    ] {
        let name = String::from_utf8_lossy(path).into_owned();
        let read = c.call(Request::Read {
            path: path.to_vec(),
            offset: 0,
            len: 1000,
        });
        if let Reply::Data { data, .. } = &read {
            panic!("read through {name} returned {} bytes", data.len());
        }
        assert!(code(&read).is_some(), "read {name}: {read:?}");
        for req in [
            Request::Write {
                path: path.to_vec(),
                offset: 0,
                data: b"pwned".to_vec().into(),
            },
            Request::SetAttr {
                path: path.to_vec(),
                attrs: SetAttrs {
                    perm: Some(0o777),
                    size: Some(0),
                    atime: None,
                    mtime: None,
                },
            },
            Request::Fsync {
                path: path.to_vec(),
                data_only: true,
            },
            Request::Fallocate {
                path: path.to_vec(),
                mode: 0,
                offset: 0,
                len: 1 << 20,
            },
            Request::Seek {
                path: path.to_vec(),
                offset: 0,
                whence: Whence::Data,
            },
            // Copies out of the library through the link, and into what it points at.
            Request::CopyRange {
                from: path.to_vec(),
                from_offset: 0,
                to: b"ok".to_vec(),
                to_offset: 0,
                len: 1000,
            },
            Request::CopyRange {
                from: b"ok".to_vec(),
                from_offset: 0,
                to: path.to_vec(),
                to_offset: 0,
                len: 1000,
            },
        ] {
            let what = format!("{} {name}", req.name());
            let reply = c.call(req);
            assert!(code(&reply).is_some(), "{what}: {reply:?}");
        }
    }
    for path in [&b"dir-link/new"[..], b"server-link/new"] {
        for req in [
            Request::Create {
                path: path.to_vec(),
                perm: 0o644,
                exclusive: true,
            },
            Request::Mkdir {
                path: path.to_vec(),
                perm: 0o755,
            },
            Request::PutBegin {
                path: path.to_vec(),
                perm: 0o644,
            },
            Request::Symlink {
                path: path.to_vec(),
                target: b"x".to_vec(),
            },
            Request::Link {
                existing: b"ok".to_vec(),
                new: path.to_vec(),
            },
            Request::Rename {
                from: b"ok".to_vec(),
                to: path.to_vec(),
                flags: 0,
            },
            Request::Unlink {
                path: b"dir-link/secret".to_vec(),
            },
            Request::List {
                path: b"dir-link".to_vec(),
                after: Vec::new(),
                max_entries: 0,
            },
        ] {
            let what = format!("{} {}", req.name(), String::from_utf8_lossy(path));
            let reply = c.call(req);
            assert!(code(&reply).is_some(), "{what}: {reply:.300?}");
        }
    }
    drop(c);
    sb.assert_outside_untouched();
    assert_eq!(read(sb.lib().join("ok")), b"inside");
    assert_no_panic(&server);
}

#[test]
fn non_utf8_names_round_trip_exactly_through_create_list_and_stat() {
    let sb = Sandbox::new();
    let server = Server::plain(&sb.lib());
    let mut c = Raw::ready(server.addr());
    let dir = b"d\xff\xfe".to_vec();
    let names: Vec<Vec<u8>> = vec![
        b"caf\xe9".to_vec(),
        b"\x80\x81\x82".to_vec(),
        b"half-\xc3".to_vec(),
        b"tab\tnew\nline".to_vec(),
        b"\xed\xa0\x80surrogate".to_vec(),
        vec![0xff; 255],
    ];
    assert!(matches!(
        c.call(Request::Mkdir {
            path: dir.clone(),
            perm: 0o755
        }),
        Reply::Attr(_)
    ));
    for n in &names {
        let path = [&dir[..], b"/", n].concat();
        let r = c.call(Request::Create {
            path: path.clone(),
            perm: 0o644,
            exclusive: true,
        });
        assert!(matches!(r, Reply::Attr(_)), "create {n:?}: {r:?}");
        let r = c.call(Request::Write {
            path: path.clone(),
            offset: 0,
            data: n.clone().into(),
        });
        assert!(matches!(r, Reply::Attr(_)), "write {n:?}: {r:?}");
        match c.call(Request::Stat { path: path.clone() }) {
            Reply::Attr(a) => assert_eq!(a.size, n.len() as u64),
            other => panic!("stat {n:?}: {other:?}"),
        }
        // On the server's disk, byte for byte.
        let on_disk = sb
            .lib()
            .join(OsStr::from_bytes(&dir))
            .join(OsStr::from_bytes(n));
        assert_eq!(read(&on_disk), *n);
    }
    let listed = match c.call(Request::List {
        path: dir.clone(),
        after: Vec::new(),
        max_entries: 0,
    }) {
        Reply::Listing { entries, more } => {
            assert!(!more);
            entries.into_iter().map(|e| e.name).collect::<Vec<_>>()
        }
        other => panic!("list: {other:?}"),
    };
    let mut want = names.clone();
    want.sort();
    assert_eq!(listed, want, "listing must return the exact name bytes");
    // A rename between two non-UTF-8 names, and a read back.
    let from = [&dir[..], b"/caf\xe9"].concat();
    let to = [&dir[..], b"/\xfe\xfd"].concat();
    assert_eq!(
        c.call(Request::Rename {
            from,
            to: to.clone(),
            flags: 0
        }),
        Reply::Ok
    );
    match c.call(Request::Read {
        path: to,
        offset: 0,
        len: 100,
    }) {
        Reply::Data { data, .. } => assert_eq!(&data[..], b"caf\xe9"),
        other => panic!("read: {other:?}"),
    }
    assert_no_panic(&server);
}

// ---------------------------------------------------------------------------------------------
// Lying lengths, huge numbers
// ---------------------------------------------------------------------------------------------

/// A frame header with any kind, id and announced length.
fn header(kind: u16, id: u32, len: u32) -> Vec<u8> {
    let mut h = b"SHLF\x01\x00".to_vec();
    h.extend_from_slice(&kind.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}

fn wire_bytes(v: &[u8]) -> Vec<u8> {
    [&(v.len() as u32).to_be_bytes()[..], v].concat()
}

#[test]
fn lying_lengths_get_eproto_and_a_closed_connection() {
    let sb = Sandbox::new();
    let server = Server::plain(&sb.lib());
    const STAT: u16 = 0x0010;
    const WRITE: u16 = 0x0013;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // The path field claims 100 bytes, the payload holds 2.
        ("field longer than the payload", {
            let payload = [&100u32.to_be_bytes()[..], b"ok"].concat();
            [header(STAT, 7, payload.len() as u32), payload].concat()
        }),
        // Bytes left over after the last field.
        ("payload longer than its fields", {
            let payload = [wire_bytes(b"ok"), b"trailing junk".to_vec()].concat();
            [header(STAT, 7, payload.len() as u32), payload].concat()
        }),
        // A length field of u32::MAX inside a small payload.
        ("u32::MAX data length", {
            let payload = [
                wire_bytes(b"ok"),
                0u64.to_be_bytes().to_vec(),
                u32::MAX.to_be_bytes().to_vec(),
            ]
            .concat();
            [header(WRITE, 7, payload.len() as u32), payload].concat()
        }),
        // A header announcing 4 GiB: refused from the header alone.
        ("header length u32::MAX", header(STAT, 7, u32::MAX)),
        (
            "header length past the agreed limit",
            header(WRITE, 7, HARD_MAX_PAYLOAD + 1),
        ),
        ("unknown kind", header(0x7777, 7, 0)),
        ("reply kind sent as a request", header(0x8003, 7, 0)),
        (
            "bad magic",
            b"XXXX\x01\x00\x00\x10\x00\x00\x00\x07\x00\x00\x00\x00".to_vec(),
        ),
        ("bad frame version", {
            let mut h = header(STAT, 7, 0);
            h[4] = 9;
            h
        }),
        ("reserved flags", {
            let mut h = header(STAT, 7, 0);
            h[5] = 0x80;
            h
        }),
    ];
    for (what, bytes) in &cases {
        let mut c = Raw::ready(server.addr());
        c.stream.write_all(bytes).expect("send");
        match c.recv() {
            Ok(Some(f)) => {
                assert_eq!(code(&f.msg), Some(Code::Protocol), "{what}: {:?}", f.msg);
                assert!(f.id == 7 || f.id == 0, "{what}: reply id {}", f.id);
            }
            other => panic!("{what}: expected an EPROTO reply, got {other:?}"),
        }
        c.expect_closed();
    }
    // A frame that announces more than it sends, then the client half-closes: the server
    // sees a truncated frame and ends the connection without waiting forever.
    let mut c = Raw::ready(server.addr());
    let mut bytes = header(STAT, 9, 1000);
    bytes.extend_from_slice(&wire_bytes(b"ok"));
    c.stream.write_all(&bytes).expect("send");
    c.stream.shutdown(Shutdown::Write).expect("half-close");
    c.expect_closed();

    // The server still serves.
    let mut c = Raw::ready(server.addr());
    assert_eq!(c.call(Request::Ping), Reply::Pong);
    assert_no_panic(&server);
}

#[test]
fn huge_offsets_and_lengths_get_errors_not_crashes() {
    let sb = Sandbox::new();
    let server = Server::plain(&sb.lib());
    let mut c = Raw::ready(server.addr());
    let ok = b"ok".to_vec();
    for offset in [1u64 << 63, (1 << 63) + 1, u64::MAX - 3, u64::MAX] {
        let r = c.call(Request::Write {
            path: ok.clone(),
            offset,
            data: b"0123456789".to_vec().into(),
        });
        assert_error(
            &r,
            &[Code::Invalid, Code::FileTooBig, Code::Overflow],
            &format!("write at {offset}"),
        );
        let r = c.call(Request::Read {
            path: ok.clone(),
            offset,
            len: 10,
        });
        // Past the end of a file a read returns no bytes; an offset no file can have may
        // also be refused. Either way, nothing else.
        match &r {
            Reply::Data { data, .. } => assert!(data.is_empty(), "read at {offset}: {r:?}"),
            _ => assert_error(
                &r,
                &[Code::Invalid, Code::Overflow],
                &format!("read at {offset}"),
            ),
        }
        let r = c.call(Request::SetAttr {
            path: ok.clone(),
            attrs: SetAttrs {
                perm: None,
                size: Some(offset),
                atime: None,
                mtime: None,
            },
        });
        assert_error(
            &r,
            &[Code::Invalid, Code::FileTooBig, Code::Overflow],
            &format!("truncate to {offset}"),
        );
    }
    for len in [u32::MAX, DEFAULT_MAX_IO + 1] {
        let r = c.call(Request::Read {
            path: ok.clone(),
            offset: 0,
            len,
        });
        assert_error(&r, &[Code::Invalid], &format!("read of {len} bytes"));
    }
    let r = c.call(Request::Write {
        path: ok.clone(),
        offset: 0,
        data: vec![b'x'; DEFAULT_MAX_IO as usize + 1].into(),
    });
    assert_error(&r, &[Code::Invalid], "write over max_io");
    let r = c.call(Request::List {
        path: Vec::new(),
        after: vec![0xff; 300],
        max_entries: u32::MAX,
    });
    assert!(
        matches!(r, Reply::Listing { .. } | Reply::Error { .. }),
        "{r:?}"
    );
    // Modes with every bit: setuid/setgid/sticky/type bits never reach the disk.
    let r = c.call(Request::SetAttr {
        path: ok.clone(),
        attrs: SetAttrs {
            perm: Some(u32::MAX),
            size: None,
            atime: None,
            mtime: None,
        },
    });
    if let Reply::Attr(a) = &r {
        assert_eq!(a.perm & 0o6000, 0, "{r:?}");
    }
    let mode = std::fs::metadata(sb.lib().join("ok"))
        .expect("stat ok")
        .permissions()
        .mode();
    assert_eq!(mode & 0o6000, 0, "setuid/setgid on the server: {mode:o}");
    for perm in [0o4755, 0o2755, u32::MAX] {
        let name = format!("suid-{perm:o}").into_bytes();
        let r = c.call(Request::Create {
            path: name.clone(),
            perm,
            exclusive: true,
        });
        let p = sb.lib().join(OsStr::from_bytes(&name));
        if let Ok(m) = std::fs::metadata(&p) {
            assert_eq!(
                m.permissions().mode() & 0o6000,
                0,
                "create with {perm:o} made a setuid/setgid file ({r:?})"
            );
        }
        let r = c.call(Request::Mkdir {
            path: [&name[..], b"-dir"].concat(),
            perm,
        });
        let p = sb.lib().join(format!("suid-{perm:o}-dir"));
        if let Ok(m) = std::fs::metadata(&p) {
            assert_eq!(m.permissions().mode() & 0o6000, 0, "mkdir {perm:o}: {r:?}");
        }
    }
    assert_eq!(c.call(Request::Ping), Reply::Pong);
    assert_eq!(read(sb.lib().join("ok")), b"inside");
    sb.assert_outside_untouched();
    assert_no_panic(&server);
}

// ---------------------------------------------------------------------------------------------
// A symlink swapped in during resolution
// ---------------------------------------------------------------------------------------------

#[test]
fn a_directory_flipping_to_a_symlink_never_lets_a_request_out() {
    let sb = Sandbox::new();
    let lib = sb.lib();
    std::fs::create_dir(lib.join("d")).expect("mkdir d");
    write(lib.join("d/f"), b"inside-data");
    std::os::unix::fs::symlink(sb.outside(), lib.join("s")).expect("symlink s");
    // `secret` inside too, so a request naming d/secret is valid whichever way d points.
    write(lib.join("d/secret"), b"inside-secret");
    let server = Server::plain(&lib);

    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let flipper = {
        let stop = Arc::clone(&stop);
        let flips = Arc::clone(&flips);
        let d = std::ffi::CString::new(lib.join("d").as_os_str().as_bytes()).expect("cstr");
        let s = std::ffi::CString::new(lib.join("s").as_os_str().as_bytes()).expect("cstr");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: both are valid NUL-terminated paths; renameat2 touches no memory of ours.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        d.as_ptr(),
                        libc::AT_FDCWD,
                        s.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
                flips.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut workers = Vec::new();
    for w in 0..3u32 {
        let addr = server.addr();
        workers.push(std::thread::spawn(move || {
            let mut c = Raw::ready(addr);
            let mut n = 0u64;
            let mut refused = 0u64;
            while Instant::now() < deadline {
                let name = format!("d/new-{w}-{n}").into_bytes();
                let reqs = [
                    Request::Read {
                        path: b"d/secret".to_vec(),
                        offset: 0,
                        len: 4096,
                    },
                    Request::Write {
                        path: b"d/secret".to_vec(),
                        offset: 0,
                        data: b"inside-secret".to_vec().into(),
                    },
                    Request::Create {
                        path: name.clone(),
                        perm: 0o644,
                        exclusive: false,
                    },
                    Request::Mkdir {
                        path: [&name[..], b"-dir"].concat(),
                        perm: 0o755,
                    },
                    Request::Stat {
                        path: b"d/secret".to_vec(),
                    },
                    Request::List {
                        path: b"d".to_vec(),
                        after: Vec::new(),
                        max_entries: 0,
                    },
                    Request::SetAttr {
                        path: b"d/secret".to_vec(),
                        attrs: SetAttrs {
                            perm: Some(0o600),
                            size: None,
                            atime: None,
                            mtime: None,
                        },
                    },
                    Request::PutBegin {
                        path: b"d/put".to_vec(),
                        perm: 0o644,
                    },
                ];
                for req in reqs {
                    let what = req.name();
                    match c.call(req) {
                        Reply::Data { data, .. } => assert!(
                            !data.starts_with(b"OUTSIDE"),
                            "read returned the outside secret"
                        ),
                        Reply::Listing { entries, .. } => {
                            // Inside d there is `secret` too, but never the outside's
                            // only entry on its own.
                            let names: Vec<_> = entries.iter().map(|e| &e.name[..]).collect();
                            assert!(names.contains(&&b"f"[..]), "listed outside: {names:?}");
                        }
                        Reply::PutStarted { temp } => {
                            let r = c.call(Request::PutAbort { temp });
                            assert!(matches!(r, Reply::Ok | Reply::Error { .. }));
                        }
                        Reply::Error { .. } => refused += 1,
                        Reply::Attr(_) | Reply::Ok => {}
                        other => panic!("{what}: unexpected {other:?}"),
                    }
                }
                n += 1;
            }
            (n, refused)
        }));
    }
    let mut rounds = 0;
    let mut refused = 0;
    for w in workers {
        let (n, r) = w.join().expect("worker");
        rounds += n;
        refused += r;
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().expect("flipper");
    eprintln!(
        "{rounds} rounds of 8 requests, {refused} refused, {} flips",
        flips.load(Ordering::Relaxed)
    );
    assert!(
        flips.load(Ordering::Relaxed) > 100,
        "the flipper hardly ran"
    );
    sb.assert_outside_untouched();
    assert_no_panic(&server);
}

// ---------------------------------------------------------------------------------------------
// The token
// ---------------------------------------------------------------------------------------------

const TOKEN: &str = "tok-7f3a9c1e-never-log-me";

#[test]
fn without_the_token_nothing_but_the_handshake_works() {
    let sb = Sandbox::new();
    let token_file = sb.scratch.path().join("token");
    write(&token_file, format!("{TOKEN}\n"));
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // The token file sits beside the library, not in it: keep `outside` checks meaningful.
    let server = Server::start(
        &sb.lib(),
        &[OsStr::new("--token-file"), token_file.as_os_str()],
    );

    // Every request kind as the first frame: EPROTO, then the connection closes.
    let mut kinds = requests_with_path(b"ok");
    kinds.push(Request::Ping);
    kinds.push(Request::Statfs);
    for req in kinds {
        let what = req.name();
        let mut c = Raw::connect(server.addr());
        let r = c.call(req);
        assert_error(&r, &[Code::Protocol], &format!("{what} before hello"));
        c.expect_closed();
    }
    // A wrong, an empty and a too-long token: EACCES, closed.
    for bad in [
        &b""[..],
        b"tok",
        &[TOKEN.as_bytes(), b"x"].concat(),
        &[b'a'; 4096],
    ] {
        let mut c = Raw::connect(server.addr());
        let r = c.hello(bad);
        assert_error(&r, &[Code::Access], "a bad token");
        c.expect_closed();
    }
    // The right one works.
    let mut c = Raw::connect(server.addr());
    assert!(matches!(c.hello(TOKEN.as_bytes()), Reply::Hello(_)));
    assert_eq!(c.call(Request::Ping), Reply::Pong);
    // A second hello after the handshake is refused without leaking anything.
    let r = c.hello(TOKEN.as_bytes());
    assert_error(&r, &[Code::Protocol], "a second hello");
    drop(c);

    // The CLI with and without the token file.
    shelf()
        .arg("ls")
        .arg(server.addr().to_string())
        .timeout(Duration::from_secs(30))
        .run()
        .assert_fail();
    let out = shelf()
        .arg("--token-file")
        .arg(&token_file)
        .arg("ls")
        .arg(server.addr().to_string())
        .timeout(Duration::from_secs(30))
        .run();
    out.assert_ok();
    assert!(out.stdout_str().contains("ok"), "{out}");

    // Never logged, and never on a command line.
    let log = server.log();
    assert!(!log.contains(TOKEN), "the token is in the server log");
    assert!(
        !log.contains("tok-7f3a"),
        "part of the token is in the server log"
    );
    let pid = server.pid().expect("running");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains(TOKEN));
    for flag in ["--token", "--secret", "--password"] {
        let out = tool(shelfd_bin())
            .arg(sb.lib())
            .args(["--listen", "127.0.0.1:0", flag, TOKEN])
            .timeout(Duration::from_secs(10))
            .run();
        out.assert_fail();
        assert_eq!(out.code(), Some(2), "{out}");
    }
    let help = tool(shelfd_bin()).arg("--help").run();
    let help = help.stdout_str();
    assert!(help.contains("--token-file"));
    assert!(
        !help.replace("--token-file", "").contains("--token"),
        "shelfd should take the token only from a file:\n{help}"
    );
    assert_no_panic(&server);
}

// ---------------------------------------------------------------------------------------------
// Ownership and read-only, through a mount
// ---------------------------------------------------------------------------------------------

fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn chown_setuid_and_fifos_are_refused_through_the_mount() {
    let Some(f) = Fixture::new() else { return };
    write(f.mount.join("file"), b"mine");
    std::fs::create_dir(f.mount.join("dir")).expect("mkdir");
    let file = f.mount.join("file");
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).expect("cstr");

    // chown to another uid (and gid).
    let cf = c(&file);
    // SAFETY: cf is a valid NUL-terminated path.
    let r = unsafe { libc::chown(cf.as_ptr(), 12345, u32::MAX) };
    assert_eq!(r, -1, "chown to uid 12345 succeeded");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    // SAFETY: as above.
    let r = unsafe { libc::chown(cf.as_ptr(), u32::MAX, 12345) };
    assert_eq!(r, -1, "chgrp to gid 12345 succeeded");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    let out = tool("chown").arg("12345:12345").arg(&file).run();
    out.assert_fail()
        .assert_stderr_contains("Operation not permitted");

    // setuid / setgid bits.
    for mode in [0o4755, 0o2755, 0o6755] {
        let r = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode));
        assert_eq!(errno_of(r), Some(libc::EPERM), "chmod {mode:o}");
    }
    let out = tool("chmod").arg("u+s").arg(&file).run();
    out.assert_fail()
        .assert_stderr_contains("Operation not permitted");
    let out = tool("chmod").arg("g+s").arg(f.mount.join("dir")).run();
    out.assert_fail()
        .assert_stderr_contains("Operation not permitted");

    // FIFOs, device nodes, sockets.
    let out = tool("mkfifo").arg(f.mount.join("fifo")).run();
    out.assert_fail()
        .assert_stderr_contains("Operation not permitted");
    let out = tool("mknod").arg(f.mount.join("p2")).arg("p").run();
    out.assert_fail()
        .assert_stderr_contains("Operation not permitted");
    let out = tool("mknod")
        .arg(f.mount.join("null2"))
        .args(["c", "1", "3"])
        .run();
    out.assert_fail()
        .assert_stderr_contains("Operation not permitted");
    let sock = std::os::unix::net::UnixListener::bind(f.mount.join("sock"));
    assert!(sock.is_err(), "a socket was made on the mount");

    // Nothing of it reached the server.
    for name in ["fifo", "p2", "null2", "sock"] {
        assert!(
            std::fs::symlink_metadata(f.lib().join(name)).is_err(),
            "{name} exists on the server\n{}",
            f.logs()
        );
    }
    let meta = std::fs::metadata(f.lib().join("file")).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7000, 0);
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        // SAFETY: geteuid has no side effects.
        unsafe { libc::geteuid() }
    );
    assert_eq!(read(f.lib().join("file")), b"mine");
}

/// Opening a file for writing is not a change yet: a mount of a read-only server cannot know
/// in advance, so it may allow the open. The write and fsync after it must fail, then.
fn write_errno(opened: std::io::Result<std::fs::File>) -> Option<i32> {
    use std::io::Write as _;
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => return e.raw_os_error(),
    };
    if let Err(e) = file.write_all(b"changed") {
        return e.raw_os_error();
    }
    errno_of(file.sync_all())
}

/// Every kind of change through `mnt`, each expected to fail with EROFS.
/// The errno of setting (or removing) `user.k` on `file` in `mnt`, `None` if it worked.
fn xattr_errno(mnt: &Path, set: bool) -> Option<i32> {
    let path = std::ffi::CString::new(mnt.join("file").as_os_str().as_bytes()).expect("path");
    // SAFETY: NUL-terminated path and name; the value is 1 readable byte.
    let n = unsafe {
        if set {
            libc::setxattr(
                path.as_ptr(),
                c"user.k".as_ptr(),
                b"v".as_ptr().cast(),
                1,
                0,
            )
        } else {
            libc::removexattr(path.as_ptr(), c"user.k".as_ptr())
        }
    };
    (n != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn assert_every_change_is_erofs(mnt: &Path, what: &str) {
    use std::fs::OpenOptions;
    let erofs = Some(libc::EROFS);
    let p = |n: &str| mnt.join(n);
    let checks: Vec<(&str, Option<i32>)> = vec![
        ("create", errno_of(std::fs::File::create(p("new")))),
        (
            "open existing for write, write, fsync",
            write_errno(OpenOptions::new().write(true).open(p("file"))),
        ),
        (
            "open for append, write, fsync",
            write_errno(OpenOptions::new().append(true).open(p("file"))),
        ),
        (
            "open with O_TRUNC",
            errno_of(
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(p("file")),
            ),
        ),
        ("mkdir", errno_of(std::fs::create_dir(p("newdir")))),
        ("unlink", errno_of(std::fs::remove_file(p("file")))),
        ("rmdir", errno_of(std::fs::remove_dir(p("dir")))),
        ("rename", errno_of(std::fs::rename(p("file"), p("moved")))),
        (
            "chmod",
            errno_of(std::fs::set_permissions(
                p("file"),
                std::fs::Permissions::from_mode(0o600),
            )),
        ),
        (
            "symlink",
            errno_of(std::os::unix::fs::symlink("file", p("sl"))),
        ),
        ("link", errno_of(std::fs::hard_link(p("file"), p("hl")))),
        ("setxattr", xattr_errno(mnt, true)),
        ("removexattr", xattr_errno(mnt, false)),
    ];
    for (op, got) in checks {
        assert_eq!(got, erofs, "{what}: {op} should fail with EROFS");
    }
    for (prog, args) in [
        ("truncate", vec!["-s", "0", "file"]),
        ("touch", vec!["file"]),
        ("touch", vec!["touched"]),
    ] {
        let out = tool(prog).args(&args).current_dir(mnt).run();
        out.assert_fail()
            .assert_stderr_contains("Read-only file system");
    }
    // A FIFO is refused before anything else (EPERM, a policy of every mount), or as a change.
    let out = tool("mkfifo").arg("fifo").current_dir(mnt).run();
    let err = out.assert_fail().stderr_str();
    assert!(
        err.contains("Read-only file system") || err.contains("Operation not permitted"),
        "{out}"
    );
}

/// A program that starts another while it has a file open for writing hands the child a
/// copy of the descriptor, which the child's `exec` closes (Rust opens every file
/// `O_CLOEXEC`): FUSE gets a FLUSH of the same handle. That flush must not take the failure
/// of the write from the program's own fsync (it did, one error per file, and the fsync
/// said the refused write was durable: a flake of the test below whenever another test
/// thread spawned a tool between its write and its fsync).
#[test]
fn a_childs_close_on_exec_leaves_a_failed_write_for_the_parents_fsync() {
    use std::io::Write as _;
    if !fuse_available() {
        return;
    }
    let lib = library();
    write(lib.path().join("file"), b"keep");
    // A read-only server: the open for writing is allowed, the write-behind is refused.
    let server = Server::start(lib.path(), &["--read-only"]);
    let m = Mount::plain(server.addr());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("file"))
        .expect("open for append");
    f.write_all(b"changed").expect("buffered");
    // The child's exec closes its copy; `status` returns once it has exited, so after that
    // close (and its flush) ended.
    let status = std::process::Command::new("true")
        .status()
        .expect("run true");
    assert!(status.success());
    assert_eq!(
        errno_of(f.sync_all()),
        Some(libc::EROFS),
        "the fsync after a child's close must report the refused write"
    );
    // The fsync told this handle; its own close has nothing more to say.
    drop(f);
    assert_eq!(read(lib.path().join("file")), b"keep");
    assert_no_panic(&server);
}

#[test]
fn a_read_only_server_and_a_read_only_mount_refuse_every_change_with_erofs() {
    if !fuse_available() {
        return;
    }
    let lib = library();
    write(lib.path().join("file"), b"keep");
    std::fs::create_dir(lib.path().join("dir")).expect("mkdir");
    let before = std::fs::metadata(lib.path().join("file")).expect("stat");

    let ro_server = Server::start(lib.path(), &["--read-only"]);
    let m1 = Mount::plain(ro_server.addr());
    assert_eq!(read(m1.join("file")), b"keep");
    assert_every_change_is_erofs(m1.path(), "read-only server");

    let rw_server = Server::plain(lib.path());
    let m2 = Mount::new(rw_server.addr(), &["--read-only"]);
    assert_eq!(read(m2.join("file")), b"keep");
    assert_every_change_is_erofs(m2.path(), "--read-only mount");

    // The raw protocol against the read-only server: every change kind is EROFS.
    let mut c = Raw::ready(ro_server.addr());
    for req in requests_with_path(b"file") {
        if !req.is_change() {
            continue;
        }
        let what = req.name();
        let r = c.call(req);
        assert_error(&r, &[Code::ReadOnly], what);
    }
    drop(c);

    let after = std::fs::metadata(lib.path().join("file")).expect("stat");
    assert_eq!(read(lib.path().join("file")), b"keep");
    assert_eq!(
        std::os::unix::fs::MetadataExt::mtime_nsec(&after),
        std::os::unix::fs::MetadataExt::mtime_nsec(&before)
    );
    assert_eq!(after.permissions().mode(), before.permissions().mode());
    let mut names: Vec<_> = std::fs::read_dir(lib.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "file"]);
    assert_no_panic(&ro_server);
    assert_no_panic(&rw_server);
}
