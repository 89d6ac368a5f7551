use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Instant;

use shelf_proto::{write_frame, Attr, SetAttrs, Whence, DEFAULT_MAX_PAYLOAD};

use super::*;

/// `serve` on one end of a socket pair in a thread, a test client on the other.
struct Harness {
    client: Client,
    server: Option<JoinHandle<Result<(), ServeError>>>,
    dir: tempfile::TempDir,
}

struct Client {
    w: UnixStream,
    r: FrameReader<UnixStream>,
    scratch: Vec<u8>,
}

impl Client {
    fn send(&mut self, id: u32, req: Request) {
        write_frame(
            &mut self.w,
            &Frame::new(id, req),
            HARD_MAX_PAYLOAD,
            &mut self.scratch,
        )
        .expect("send request");
    }

    fn recv(&mut self) -> Frame<Reply> {
        self.r
            .read_frame()
            .expect("reply is well formed")
            .expect("server still connected")
    }

    fn call(&mut self, id: u32, req: Request) -> Reply {
        self.send(id, req);
        let f = self.recv();
        assert_eq!(f.id, id, "reply id");
        f.msg
    }

    /// The server closed its side: the next read is a clean end of stream.
    fn expect_closed(&mut self) {
        match self.r.read_frame::<Reply>() {
            Ok(None) => {}
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the server to close, got {other:?}"),
        }
    }
}

fn hello(token: &[u8]) -> Request {
    Request::Hello(Hello {
        token: token.to_vec(),
        features: FEATURES,
        ..Hello::new("conn-tests")
    })
}

impl Harness {
    fn start(cfg: ServeConfig) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        // Every wait in these tests ends: the client gives up after 10 s.
        ours.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("client timeout");
        let root = dir.path().to_path_buf();
        let server = std::thread::spawn(move || {
            let lib = Library::open(&root).expect("open library");
            serve(theirs, &lib, &cfg)
        });
        let client = Client {
            w: ours.try_clone().expect("clone"),
            r: FrameReader::new(ours, HARD_MAX_PAYLOAD),
            scratch: Vec::new(),
        };
        Harness {
            client,
            server: Some(server),
            dir,
        }
    }

    fn ready(cfg: ServeConfig) -> Harness {
        let mut h = Harness::start(cfg);
        match h.client.call(1, hello(b"")) {
            Reply::Hello(r) => assert_eq!(r.version, PROTOCOL_VERSION),
            other => panic!("handshake failed: {other:?}"),
        }
        h
    }

    /// Closes the client and returns how `serve` ended.
    fn finish(&mut self) -> Result<(), ServeError> {
        let _ = self.client.w.shutdown(Shutdown::Both);
        let server = self.server.take().expect("server running");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.is_finished() {
            assert!(Instant::now() < deadline, "serve did not return");
            std::thread::sleep(Duration::from_millis(10));
        }
        server.join().expect("serve did not panic")
    }

    /// Waits for `serve` to return by itself (without closing our side).
    fn wait_server(&mut self) -> Result<(), ServeError> {
        let server = self.server.take().expect("server running");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.is_finished() {
            assert!(Instant::now() < deadline, "serve did not return");
            std::thread::sleep(Duration::from_millis(10));
        }
        server.join().expect("serve did not panic")
    }
}

fn attr(reply: Reply) -> Attr {
    match reply {
        Reply::Attr(a) => a,
        other => panic!("expected Attr, got {other:?}"),
    }
}

fn error_code(reply: &Reply) -> Code {
    match reply {
        Reply::Error { code, .. } => *code,
        other => panic!("expected Error, got {other:?}"),
    }
}

/// The trailing `admitted` byte goes only to a client that announced `ADMITTED`: an older
/// client's decoder would find it malformed. (Ours reads it whenever it is there, so `None`
/// here means it was not sent.)
#[test]
fn the_hello_reply_says_how_the_client_was_admitted_only_when_asked() {
    let cfg = || ServeConfig {
        token: Some(b"s3cret".to_vec()),
        ..ServeConfig::default()
    };
    let mut h = Harness::start(cfg());
    let Reply::Hello(r) = h.client.call(1, hello(b"s3cret")) else {
        panic!("handshake failed");
    };
    assert_eq!(r.admitted, Some(Admission::Token));
    assert!(h.finish().is_ok());

    let mut h = Harness::start(cfg());
    let old = Request::Hello(Hello {
        token: b"s3cret".to_vec(),
        features: FEATURES & !features::ADMITTED,
        ..Hello::new("an older client")
    });
    let Reply::Hello(r) = h.client.call(1, old) else {
        panic!("handshake failed");
    };
    assert_eq!(r.features & features::ADMITTED, 0);
    assert_eq!(
        r.admitted, None,
        "no trailing byte for a client that did not ask"
    );
    assert!(h.finish().is_ok());
}

#[test]
fn handshake_agrees_limits_and_features() {
    let cfg = ServeConfig {
        max_io: 1 << 20,
        ..ServeConfig::default()
    };
    let mut h = Harness::start(cfg);
    let Reply::Hello(r) = h.client.call(1, hello(b"ignored without a server token")) else {
        panic!("handshake failed");
    };
    assert_eq!(r.version, PROTOCOL_VERSION);
    assert_eq!(r.max_payload, DEFAULT_MAX_PAYLOAD);
    assert_eq!(r.max_io, 1 << 20, "the smaller side wins");
    assert_eq!(
        r.features,
        features::ATOMIC_PUT
            | features::LINKS
            | features::XATTR
            | features::FALLOCATE
            | features::SEEK_HOLES
            | features::COPY_RANGE
            | features::ADMITTED
            | features::LOCKS
            | features::CHANGE_NOTIFY
            | features::CHANGE_STATE
    );
    assert_eq!(r.admitted, Some(Admission::Open), "no token, no keys: open");
    assert_eq!(h.client.call(2, Request::Ping), Reply::Pong);
    assert!(h.finish().is_ok(), "clean hang-up is Ok");
}

#[test]
fn the_reply_carries_what_negotiate_agreed() {
    let cfg = ServeConfig {
        max_payload: 1 << 20,
        max_io: 4 << 20,
        ..ServeConfig::default()
    };
    let mut h = Harness::start(cfg);
    let sent = Hello {
        // A bit no server serves yet stands for one this server does not know.
        features: features::LINKS | 1 << 40,
        ..Hello::new("conn-tests")
    };
    let Reply::Hello(r) = h.client.call(1, Request::Hello(sent.clone())) else {
        panic!("handshake failed");
    };
    // max_io is bounded by the agreed payload less the room a Data reply needs, and only the
    // features both sides know are in force.
    assert_eq!(r.max_payload, 1 << 20);
    assert_eq!(r.max_io, (1 << 20) - shelf_proto::IO_OVERHEAD);
    assert_eq!(r.features, features::LINKS);
    // The client computing from its hello and this reply arrives at the same values.
    let agreed = shelf_proto::negotiate(&sent, &r).expect("agreed limits are valid");
    assert_eq!(
        (agreed.limits.max_payload, agreed.limits.max_io),
        (r.max_payload, r.max_io)
    );
    assert_eq!(agreed.features, r.features);
    assert_eq!(h.client.call(2, Request::Ping), Reply::Pong);
    assert!(h.finish().is_ok());
}

#[test]
fn token_is_required_when_configured() {
    for (given, ok) in [
        (&b"s3cret"[..], true),
        (b"s3cre", false),
        (b"", false),
        (b"s3cret!", false),
    ] {
        let cfg = ServeConfig {
            token: Some(b"s3cret".to_vec()),
            ..ServeConfig::default()
        };
        let mut h = Harness::start(cfg);
        let reply = h.client.call(1, hello(given));
        if ok {
            assert!(matches!(reply, Reply::Hello(_)), "{reply:?}");
            assert!(h.finish().is_ok());
        } else {
            assert_eq!(
                reply,
                Reply::error(Code::Access, "bad or missing token"),
                "token {given:?}"
            );
            h.client.expect_closed();
            assert!(matches!(h.wait_server(), Err(ServeError::Refused(_))));
        }
    }
}

#[test]
fn version_mismatch_is_eproto() {
    let mut h = Harness::start(ServeConfig::default());
    let req = Request::Hello(Hello {
        min_version: PROTOCOL_VERSION + 1,
        max_version: PROTOCOL_VERSION + 5,
        ..Hello::new("future")
    });
    let reply = h.client.call(1, req);
    assert_eq!(error_code(&reply), Code::Protocol);
    h.client.expect_closed();
    assert!(matches!(h.wait_server(), Err(ServeError::Refused(_))));
}

#[test]
fn tiny_limits_are_refused() {
    let mut h = Harness::start(ServeConfig::default());
    let req = Request::Hello(Hello {
        max_payload: 100,
        max_io: 10,
        ..Hello::new("")
    });
    assert_eq!(error_code(&h.client.call(1, req)), Code::Protocol);
    h.client.expect_closed();
}

#[test]
fn first_request_must_be_hello() {
    let mut h = Harness::start(ServeConfig::default());
    let reply = h.client.call(5, Request::Stat { path: Vec::new() });
    assert_eq!(error_code(&reply), Code::Protocol);
    h.client.expect_closed();
    assert!(matches!(h.wait_server(), Err(ServeError::Refused(_))));
}

#[test]
fn second_hello_is_an_error_but_not_fatal() {
    let mut h = Harness::ready(ServeConfig::default());
    assert_eq!(error_code(&h.client.call(2, hello(b""))), Code::Protocol);
    assert_eq!(h.client.call(3, Request::Ping), Reply::Pong);
    assert!(h.finish().is_ok());
}

#[test]
fn handshake_timeout_drops_silent_clients() {
    let cfg = ServeConfig {
        handshake_timeout: Duration::from_millis(200),
        ..ServeConfig::default()
    };
    let mut h = Harness::start(cfg);
    assert!(matches!(
        h.wait_server(),
        Err(ServeError::HandshakeTimeout(_))
    ));
    h.client.expect_closed();
}

#[test]
fn idle_timeout_closes_quiet_connections() {
    let cfg = ServeConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..ServeConfig::default()
    };
    let mut h = Harness::ready(cfg);
    assert!(matches!(h.wait_server(), Err(ServeError::IdleTimeout(_))));
    h.client.expect_closed();
}

#[test]
fn pipelined_requests_each_get_one_reply() {
    let mut h = Harness::ready(ServeConfig::default());
    let big: Vec<u8> = (0..DEFAULT_MAX_IO as usize)
        .map(|k| (k % 251) as u8)
        .collect();
    std::fs::write(h.dir.path().join("big"), &big).expect("write big");
    std::fs::create_dir(h.dir.path().join("d")).expect("mkdir");
    let reqs = [
        (
            10,
            Request::Read {
                path: b"big".to_vec(),
                offset: 0,
                len: DEFAULT_MAX_IO,
            },
        ),
        (
            11,
            Request::Stat {
                path: b"big".to_vec(),
            },
        ),
        (
            12,
            Request::List {
                path: Vec::new(),
                after: Vec::new(),
                max_entries: 0,
            },
        ),
        (
            13,
            Request::Read {
                path: b"big".to_vec(),
                offset: 0,
                len: DEFAULT_MAX_IO + 1,
            },
        ),
        (
            14,
            Request::Stat {
                path: b"../etc".to_vec(),
            },
        ),
        (
            15,
            Request::Stat {
                path: b"missing".to_vec(),
            },
        ),
        (16, Request::Statfs),
        (17, Request::Ping),
    ];
    for (id, req) in reqs.iter().cloned() {
        h.client.send(id, req);
    }
    let mut replies = HashMap::new();
    for _ in 0..reqs.len() {
        let f = h.client.recv();
        assert!(
            replies.insert(f.id, f.msg).is_none(),
            "one reply per request"
        );
    }
    match &replies[&10] {
        Reply::Data { data, attr } => {
            assert!(data == &big, "read data matches");
            assert_eq!(attr.size, big.len() as u64);
        }
        other => panic!("read: {other:?}"),
    }
    assert_eq!(attr(replies[&11].clone()).size, big.len() as u64);
    match &replies[&12] {
        Reply::Listing { entries, more } => {
            let names: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
            assert_eq!(names, [&b"big"[..], b"d"]);
            assert!(!more);
        }
        other => panic!("list: {other:?}"),
    }
    assert_eq!(error_code(&replies[&13]), Code::Invalid, "len > max_io");
    assert_eq!(error_code(&replies[&14]), Code::Invalid, "'..' refused");
    assert_eq!(error_code(&replies[&15]), Code::NotFound);
    assert!(matches!(replies[&16], Reply::Statfs(_)));
    assert_eq!(replies[&17], Reply::Pong);
    assert!(h.finish().is_ok());
}

#[test]
fn pipelined_changes_apply_in_order() {
    let mut h = Harness::ready(ServeConfig::default());
    let f = b"f".to_vec();
    let reqs = [
        (
            2,
            Request::Create {
                path: f.clone(),
                perm: 0o644,
                exclusive: true,
            },
        ),
        (
            3,
            Request::Write {
                path: f.clone(),
                offset: 0,
                data: b"hello".to_vec().into(),
            },
        ),
        (
            4,
            Request::Read {
                path: f.clone(),
                offset: 0,
                len: 100,
            },
        ),
        (
            5,
            Request::Write {
                path: f.clone(),
                offset: 5,
                data: b" world".to_vec().into(),
            },
        ),
        (
            6,
            Request::SetAttr {
                path: f.clone(),
                attrs: SetAttrs {
                    size: Some(8),
                    ..SetAttrs::default()
                },
            },
        ),
        (
            7,
            Request::Read {
                path: f.clone(),
                offset: 0,
                len: 100,
            },
        ),
        (
            8,
            Request::Rename {
                from: f.clone(),
                to: b"g".to_vec(),
                flags: 0,
            },
        ),
        (
            9,
            Request::Stat {
                path: b"g".to_vec(),
            },
        ),
    ];
    for (id, req) in reqs.iter().cloned() {
        h.client.send(id, req);
    }
    let mut replies = HashMap::new();
    for _ in 0..reqs.len() {
        let f = h.client.recv();
        replies.insert(f.id, f.msg);
    }
    assert_eq!(attr(replies[&2].clone()).size, 0);
    assert_eq!(attr(replies[&3].clone()).size, 5);
    assert!(matches!(&replies[&4], Reply::Data { data, .. } if &data[..] == b"hello"));
    assert!(matches!(&replies[&7], Reply::Data { data, .. } if &data[..] == b"hello wo"));
    assert_eq!(replies[&8], Reply::Ok);
    assert_eq!(attr(replies[&9].clone()).size, 8);
    assert!(h.finish().is_ok());
}

#[test]
fn malformed_frame_gets_error_then_close() {
    let mut h = Harness::ready(ServeConfig::default());
    let mut bytes = Frame::new(9, Request::Ping)
        .to_bytes(DEFAULT_MAX_PAYLOAD)
        .expect("encodes");
    bytes[7] = 0x77; // no such kind
    h.client.w.write_all(&bytes).expect("send");
    let f = h.client.recv();
    assert_eq!(f.id, 9, "error names the request");
    assert_eq!(error_code(&f.msg), Code::Protocol);
    h.client.expect_closed();
    assert!(matches!(
        h.wait_server(),
        Err(ServeError::Malformed(DecodeError::UnknownKind(0x0077)))
    ));
}

#[test]
fn oversized_length_is_refused_before_the_payload() {
    let mut h = Harness::ready(ServeConfig::default());
    let head = *b"SHLF\x01\x00\x00\x02\x00\x00\x00\x07\x7f\xff\xff\xff";
    h.client.w.write_all(&head).expect("send header");
    let f = h.client.recv();
    assert_eq!(f.id, 7);
    assert_eq!(error_code(&f.msg), Code::Protocol);
    h.client.expect_closed();
    assert!(matches!(
        h.wait_server(),
        Err(ServeError::Malformed(DecodeError::TooLarge { .. }))
    ));
}

#[test]
fn garbage_before_hello_is_refused() {
    let mut h = Harness::start(ServeConfig::default());
    h.client
        .w
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .expect("send");
    let f = h.client.recv();
    assert_eq!(error_code(&f.msg), Code::Protocol);
    h.client.expect_closed();
}

#[test]
fn read_only_refuses_every_change() {
    let cfg = ServeConfig {
        read_only: true,
        ..ServeConfig::default()
    };
    let mut h = Harness::ready(cfg);
    std::fs::write(h.dir.path().join("f"), b"data").expect("seed");
    let changes = [
        Request::Write {
            path: b"f".to_vec(),
            offset: 0,
            data: b"x".to_vec().into(),
        },
        Request::Create {
            path: b"n".to_vec(),
            perm: 0o644,
            exclusive: false,
        },
        Request::SetAttr {
            path: b"f".to_vec(),
            attrs: SetAttrs {
                size: Some(0),
                ..SetAttrs::default()
            },
        },
        Request::Unlink {
            path: b"f".to_vec(),
        },
        Request::Mkdir {
            path: b"d".to_vec(),
            perm: 0o755,
        },
        Request::Rmdir {
            path: b"d".to_vec(),
        },
        Request::Rename {
            from: b"f".to_vec(),
            to: b"g".to_vec(),
            flags: 0,
        },
        Request::Symlink {
            path: b"l".to_vec(),
            target: b"f".to_vec(),
        },
        Request::Link {
            existing: b"f".to_vec(),
            new: b"h".to_vec(),
        },
        Request::PutBegin {
            path: b"p".to_vec(),
            perm: 0o644,
        },
        Request::PutCommit {
            temp: b".shelf-put-0000000000000000".to_vec(),
            path: b"f".to_vec(),
            mtime: None,
        },
        Request::PutAbort {
            temp: b".shelf-put-0000000000000000".to_vec(),
        },
        Request::SetXattr {
            path: b"f".to_vec(),
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
            flags: 0,
        },
        Request::RemoveXattr {
            path: b"f".to_vec(),
            name: b"user.k".to_vec(),
        },
        Request::Fallocate {
            path: b"f".to_vec(),
            mode: 0,
            offset: 0,
            len: 1 << 20,
        },
        Request::CopyRange {
            from: b"f".to_vec(),
            from_offset: 0,
            to: b"f".to_vec(),
            to_offset: 4,
            len: 4,
        },
    ];
    for (i, req) in changes.into_iter().enumerate() {
        assert!(req.is_change());
        let reply = h.client.call(10 + i as u32, req);
        assert_eq!(error_code(&reply), Code::ReadOnly);
    }
    assert!(matches!(
        h.client.call(
            50,
            Request::Read {
                path: b"f".to_vec(),
                offset: 0,
                len: 10
            }
        ),
        Reply::Data { .. }
    ));
    assert_eq!(
        h.client.call(
            51,
            Request::Seek {
                path: b"f".to_vec(),
                offset: 1,
                whence: Whence::Hole,
            }
        ),
        Reply::Offset(4),
        "finding holes only looks"
    );
    let names: Vec<_> = std::fs::read_dir(h.dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["f"]);
    assert_eq!(
        std::fs::read(h.dir.path().join("f")).expect("read"),
        b"data"
    );
    assert!(h.finish().is_ok());
}

#[test]
fn uncommitted_put_temporaries_are_removed_at_hang_up() {
    let mut h = Harness::ready(ServeConfig::default());
    let Reply::PutStarted { temp } = h.client.call(
        2,
        Request::PutBegin {
            path: b"a".to_vec(),
            perm: 0o644,
        },
    ) else {
        panic!("put-begin failed");
    };
    assert!(temp.starts_with(PUT_PREFIX));
    h.client.call(
        3,
        Request::Write {
            path: temp.clone(),
            offset: 0,
            data: b"partial".to_vec().into(),
        },
    );
    // A committed put survives the hang-up.
    let Reply::PutStarted { temp: done } = h.client.call(
        4,
        Request::PutBegin {
            path: b"b".to_vec(),
            perm: 0o644,
        },
    ) else {
        panic!("put-begin failed");
    };
    h.client.call(
        5,
        Request::Write {
            path: done.clone(),
            offset: 0,
            data: b"whole".to_vec().into(),
        },
    );
    let a = attr(h.client.call(
        6,
        Request::PutCommit {
            temp: done,
            path: b"b".to_vec(),
            mtime: None,
        },
    ));
    assert_eq!(a.size, 5);
    let dir = h.dir.path().to_path_buf();
    assert!(h.finish().is_ok());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["b"], "temporary removed, committed file kept");
}

use crate::library::PUT_PREFIX;

#[test]
fn space_and_copy_requests_are_served() {
    let mut h = Harness::ready(ServeConfig::default());
    std::fs::write(h.dir.path().join("a"), b"0123456789").expect("seed");
    std::fs::write(h.dir.path().join("b"), b"").expect("seed");
    let copied = h.client.call(
        2,
        Request::CopyRange {
            from: b"a".to_vec(),
            from_offset: 2,
            to: b"b".to_vec(),
            to_offset: 0,
            len: 100,
        },
    );
    let Reply::Copied { copied, attr: b } = copied else {
        panic!("copy failed: {copied:?}");
    };
    assert_eq!((copied, b.size), (8, 8));
    assert_eq!(
        std::fs::read(h.dir.path().join("b")).expect("read"),
        b"23456789"
    );
    let a = attr(h.client.call(
        3,
        Request::Fallocate {
            path: b"b".to_vec(),
            mode: 0,
            offset: 0,
            len: 4096,
        },
    ));
    assert_eq!(a.size, 4096);
    assert_eq!(
        error_code(&h.client.call(
            4,
            Request::Seek {
                path: b"b".to_vec(),
                offset: 4096,
                whence: Whence::Data,
            }
        )),
        Code::NoDeviceOrAddress
    );
    assert_eq!(
        error_code(&h.client.call(
            5,
            Request::Fallocate {
                path: b"b".to_vec(),
                mode: 1 << 9,
                offset: 0,
                len: 1,
            }
        )),
        Code::NotSupported
    );
    assert!(h.finish().is_ok());
}

fn lock_req(owner: u64, flavor: LockFlavor, kind: LockKind, wait: bool) -> Request {
    let wait_ms = if wait { MAX_LOCK_WAIT_MS } else { 0 };
    Request::Lock {
        path: b"l".to_vec(),
        file: 1,
        owner,
        flavor,
        kind,
        start: 0,
        end: u64::MAX,
        wait_ms,
    }
}

/// A lock that waits holds up none of the requests behind it and is answered when the holder
/// lets go; a second wait is ended by the owner's release (EINTR), a third by its time (EAGAIN).
#[test]
fn a_waiting_lock_holds_up_nothing_and_is_answered_when_granted_released_or_timed_out() {
    let mut h = Harness::ready(ServeConfig::default());
    std::fs::write(h.dir.path().join("l"), b"x").expect("file");
    let (flock, write) = (LockFlavor::Flock, LockKind::Write);
    assert_eq!(
        h.client.call(2, lock_req(1, flock, write, false)),
        Reply::Ok
    );
    let busy = h.client.call(3, lock_req(2, flock, write, false));
    assert_eq!(error_code(&busy), Code::TryAgain);
    h.client.send(4, lock_req(2, flock, write, true));
    // Behind the wait: a stat is answered, then the holder lets go.
    attr(h.client.call(
        5,
        Request::Stat {
            path: b"l".to_vec(),
        },
    ));
    assert_eq!(
        h.client
            .call(6, lock_req(1, flock, LockKind::Unlock, false)),
        Reply::Ok
    );
    let granted = h.client.recv();
    assert_eq!((granted.id, granted.msg), (4, Reply::Ok));
    // Owner 1 waits now, and releases (as its close would).
    h.client.send(7, lock_req(1, flock, write, true));
    attr(h.client.call(
        8,
        Request::Stat {
            path: b"l".to_vec(),
        },
    ));
    h.client.send(
        9,
        Request::ReleaseLocks {
            file: 1,
            owner: 1,
            flavor: flock,
        },
    );
    let mut answers = HashMap::new();
    for _ in 0..2 {
        let f = h.client.recv();
        answers.insert(f.id, f.msg);
    }
    assert_eq!(error_code(&answers[&7]), Code::Interrupted);
    assert_eq!(answers[&9], Reply::Ok);
    // A short wait runs out.
    let mut short = lock_req(3, flock, write, true);
    if let Request::Lock { wait_ms, .. } = &mut short {
        *wait_ms = 50;
    }
    assert_eq!(error_code(&h.client.call(10, short)), Code::TryAgain);
    assert!(h.finish().is_ok());
}

/// Hanging up with a lock waiting ends the wait and `serve` returns; the locks are gone.
#[test]
fn hanging_up_ends_lock_waits_and_drops_locks() {
    let mut h = Harness::ready(ServeConfig::default());
    let path = h.dir.path().join("l");
    std::fs::write(&path, b"x").expect("file");
    let (posix, write) = (LockFlavor::Posix, LockKind::Write);
    assert_eq!(
        h.client.call(2, lock_req(1, posix, write, false)),
        Reply::Ok
    );
    h.client.send(3, lock_req(2, posix, write, true));
    attr(h.client.call(
        4,
        Request::Stat {
            path: b"l".to_vec(),
        },
    ));
    assert!(h.finish().is_ok(), "serve returns with a wait pending");
    let local = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    // SAFETY: all-zero is a valid flock; it lives through the call.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    // SAFETY: as above.
    let r = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&local),
            libc::F_OFD_SETLK,
            &fl,
        )
    };
    assert_eq!(r, 0, "the connection's locks went with it");
}

/// `Changes` answered with each path's state when the handshake agreed `CHANGE_STATE`, and
/// plainly when it did not (an older client could not decode the states).
#[test]
fn changes_carry_the_state_only_when_agreed() {
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(tmp.path().join("d")).expect("dir");
    std::fs::write(tmp.path().join("d/gone"), b"x").expect("file");
    let lib = Library::open(tmp.path()).expect("library");
    let cfg = ServeConfig::default();
    let limits = Limits {
        max_payload: DEFAULT_MAX_PAYLOAD,
        max_io: DEFAULT_MAX_IO,
    };
    let with = Session::new(limits).with_features(features::CHANGE_NOTIFY | features::CHANGE_STATE);
    let without = Session::new(limits).with_features(features::CHANGE_NOTIFY);
    for s in [&with, &without] {
        let watch = Request::Watch {
            paths: vec![b"d".to_vec()],
        };
        assert_eq!(s.handle(&lib, &cfg, watch), Reply::Watched(vec![true]));
    }
    std::fs::write(tmp.path().join("d/f"), b"made").expect("create");
    std::fs::remove_file(tmp.path().join("d/gone")).expect("remove");

    let rel = |s: &str| RelPath::from_bytes(s.as_bytes()).expect("path");
    let mut states = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while states.len() < 2 && Instant::now() < deadline {
        match with.changes(&lib, 200) {
            Reply::ChangeStates { changes, lost } => {
                assert!(!lost);
                for c in changes {
                    assert_eq!(c.dir, Some(lib.stat(&rel("d")).expect("stat d")));
                    states.insert(c.path, c.state);
                }
            }
            other => panic!("not states: {other:?}"),
        }
    }
    assert_eq!(
        states.get(&b"d/f"[..]),
        Some(&EntryState::Present(lib.stat(&rel("d/f")).expect("stat f")))
    );
    assert_eq!(states.get(&b"d/gone"[..]), Some(&EntryState::Absent));

    match without.changes(&lib, 200) {
        Reply::Changes { paths, .. } => assert!(!paths.is_empty(), "told plainly"),
        other => panic!("not plain: {other:?}"),
    }
}
