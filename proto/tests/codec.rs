//! Property tests of the frame codec: every message round-trips, partial input is "need more",
//! hostile input is an error and never a panic or an allocation beyond the limit.
//!
//! Strategies cover every field of every `Request` and `Reply` variant, paths as arbitrary
//! (often non-UTF-8) bytes, and data as a ramp (byte k is k mod 251) so that a shifted or
//! dropped byte cannot compare equal.

use std::io::{self, Read};

use proptest::prelude::*;
use shelf_proto::msg::kind;
use shelf_proto::{
    write_frame, xattr, Admission, Attr, ChangedPath, Code, DecodeError, DirEntry, EntryState,
    FileKind, Frame, FrameReader, Header, HeldLock, Hello, HelloReply, LockFlavor, LockKind,
    Message, ReadError, Reply, Request, SetAttrs, SetTime, Statfs, Timestamp, Whence,
    DEFAULT_MAX_PAYLOAD, HARD_MAX_PAYLOAD, HEADER_LEN,
};

const MAX: u32 = DEFAULT_MAX_PAYLOAD;

/// `len` bytes where byte k is k mod 251 (a prime, so the pattern never lines up with
/// power-of-two boundaries).
fn ramp(len: usize) -> Vec<u8> {
    (0..len).map(|k| (k % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Strategies

fn path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Arbitrary bytes: NUL, '/', '..' and invalid UTF-8 are all the server's business.
        prop::collection::vec(any::<u8>(), 0..48),
        // Plausible relative paths.
        "[a-z0-9._-]{1,12}(/[a-z0-9._-]{1,12}){0,3}".prop_map(String::into_bytes),
        Just(Vec::new()),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0usize..2048).prop_map(ramp),
        1 => (60_000usize..70_000).prop_map(ramp),
    ]
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0u32..1_000_000_000).prop_map(|(secs, nanos)| Timestamp::new(secs, nanos))
}

fn file_kind() -> impl Strategy<Value = FileKind> {
    prop::sample::select(vec![
        FileKind::File,
        FileKind::Dir,
        FileKind::Symlink,
        FileKind::Fifo,
        FileKind::Socket,
        FileKind::CharDevice,
        FileKind::BlockDevice,
    ])
}

fn attr() -> impl Strategy<Value = Attr> {
    (
        (any::<u64>(), file_kind(), any::<u32>(), any::<u32>()),
        (any::<u64>(), any::<u64>(), any::<u32>()),
        (timestamp(), timestamp(), timestamp(), timestamp()),
    )
        .prop_map(
            |((ino, kind, perm, nlink), (size, blocks, blksize), (atime, mtime, ctime, btime))| {
                Attr {
                    ino,
                    kind,
                    perm,
                    nlink,
                    size,
                    blocks,
                    blksize,
                    atime,
                    mtime,
                    ctime,
                    btime,
                }
            },
        )
}

fn set_time() -> impl Strategy<Value = Option<SetTime>> {
    prop_oneof![
        Just(None),
        Just(Some(SetTime::Now)),
        timestamp().prop_map(|t| Some(SetTime::At(t))),
    ]
}

fn set_attrs() -> impl Strategy<Value = SetAttrs> {
    (
        any::<Option<u32>>(),
        any::<Option<u64>>(),
        set_time(),
        set_time(),
    )
        .prop_map(|(perm, size, atime, mtime)| SetAttrs {
            perm,
            size,
            atime,
            mtime,
        })
}

fn code() -> impl Strategy<Value = Code> {
    prop::sample::select(Code::ALL)
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        (
            any::<u16>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        (any::<u32>(), any::<u32>(), any::<u64>(), text()),
    )
        .prop_map(
            |((min_version, max_version, token), (max_payload, max_io, features, agent))| Hello {
                min_version,
                max_version,
                token,
                max_payload,
                max_io,
                features,
                agent,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        hello().prop_map(Request::Hello),
        Just(Request::Ping),
        path().prop_map(|path| Request::Stat { path }),
        (path(), path(), any::<u32>()).prop_map(|(path, after, max_entries)| Request::List {
            path,
            after,
            max_entries
        }),
        (path(), any::<u64>(), any::<u32>()).prop_map(|(path, offset, len)| Request::Read {
            path,
            offset,
            len
        }),
        (path(), any::<u64>(), data()).prop_map(|(path, offset, data)| Request::Write {
            path,
            offset,
            data: data.into()
        }),
        (path(), any::<u32>(), any::<bool>()).prop_map(|(path, perm, exclusive)| {
            Request::Create {
                path,
                perm,
                exclusive,
            }
        }),
        (path(), set_attrs()).prop_map(|(path, attrs)| Request::SetAttr { path, attrs }),
        path().prop_map(|path| Request::Unlink { path }),
        (path(), any::<u32>()).prop_map(|(path, perm)| Request::Mkdir { path, perm }),
        path().prop_map(|path| Request::Rmdir { path }),
        (path(), path(), any::<u32>()).prop_map(|(from, to, flags)| Request::Rename {
            from,
            to,
            flags
        }),
        (path(), path()).prop_map(|(path, target)| Request::Symlink { path, target }),
        path().prop_map(|path| Request::Readlink { path }),
        (path(), path()).prop_map(|(existing, new)| Request::Link { existing, new }),
        Just(Request::Statfs),
        (path(), any::<bool>()).prop_map(|(path, data_only)| Request::Fsync { path, data_only }),
        (path(), any::<u32>()).prop_map(|(path, perm)| Request::PutBegin { path, perm }),
        (path(), path(), prop::option::of(timestamp()))
            .prop_map(|(temp, path, mtime)| Request::PutCommit { temp, path, mtime }),
        path().prop_map(|temp| Request::PutAbort { temp }),
        (path(), xattr_name()).prop_map(|(path, name)| Request::GetXattr { path, name }),
        (path(), xattr_name(), xattr_value(), any::<u32>()).prop_map(
            |(path, name, value, flags)| Request::SetXattr {
                path,
                name,
                value,
                flags
            }
        ),
        path().prop_map(|path| Request::ListXattr { path }),
        (path(), xattr_name()).prop_map(|(path, name)| Request::RemoveXattr { path, name }),
        (path(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(path, mode, offset, len)| {
            Request::Fallocate {
                path,
                mode,
                offset,
                len,
            }
        }),
        (
            path(),
            any::<u64>(),
            prop_oneof![Just(Whence::Data), Just(Whence::Hole)]
        )
            .prop_map(|(path, offset, whence)| Request::Seek {
                path,
                offset,
                whence,
            }),
        (path(), any::<u64>(), path(), any::<u64>(), any::<u64>()).prop_map(
            |(from, from_offset, to, to_offset, len)| Request::CopyRange {
                from,
                from_offset,
                to,
                to_offset,
                len,
            }
        ),
        (
            path(),
            (any::<u64>(), any::<u64>()),
            lock_flavor(),
            lock_kind(),
            lock_range(),
            any::<u32>()
        )
            .prop_map(
                |(path, (file, owner), flavor, kind, (start, end), wait_ms)| {
                    Request::Lock {
                        path,
                        file,
                        owner,
                        flavor,
                        kind,
                        start,
                        end,
                        wait_ms,
                    }
                }
            ),
        (
            path(),
            any::<u64>(),
            any::<u64>(),
            lock_kind(),
            lock_range()
        )
            .prop_map(
                |(path, file, owner, kind, (start, end))| Request::TestLock {
                    path,
                    file,
                    owner,
                    kind,
                    start,
                    end,
                }
            ),
        (any::<u64>(), any::<u64>(), lock_flavor()).prop_map(|(file, owner, flavor)| {
            Request::ReleaseLocks {
                file,
                owner,
                flavor,
            }
        }),
        prop::collection::vec(path(), 0..10).prop_map(|paths| Request::Watch { paths }),
        any::<u32>().prop_map(|wait_ms| Request::Changes { wait_ms }),
    ]
}

fn lock_flavor() -> impl Strategy<Value = LockFlavor> {
    prop_oneof![Just(LockFlavor::Posix), Just(LockFlavor::Flock)]
}

fn lock_kind() -> impl Strategy<Value = LockKind> {
    prop_oneof![
        Just(LockKind::Read),
        Just(LockKind::Write),
        Just(LockKind::Unlock)
    ]
}

/// Ranges as the kernel sends them: `start <= end`, to the end of the file included.
fn lock_range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| (a.min(b), a.max(b))),
        any::<u64>().prop_map(|a| (a, u64::MAX)),
    ]
}

/// Any bytes up to the 255 a name may have, the limit itself included.
fn xattr_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        "user\\.[a-z0-9._-]{1,20}".prop_map(String::into_bytes),
        Just(vec![b'n'; xattr::NAME_MAX]),
    ]
}

/// Values: small ones with NULs and any bytes, and sizes around the 64 KiB limit.
fn xattr_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..300),
        1 => (xattr::VALUE_MAX - 2..=xattr::VALUE_MAX).prop_map(ramp),
    ]
}

fn statfs() -> impl Strategy<Value = Statfs> {
    (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |((blocks, bfree, bavail, files), (ffree, bsize, frsize, namelen))| Statfs {
                blocks,
                bfree,
                bavail,
                files,
                ffree,
                bsize,
                frsize,
                namelen,
            },
        )
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            text(),
            prop::option::of(prop_oneof![
                Just(Admission::Open),
                Just(Admission::Token),
                Just(Admission::Key),
                Just(Admission::ReadOnlyKey),
            ])
        )
            .prop_map(
                |(version, max_payload, max_io, features, agent, admitted)| Reply::Hello(
                    HelloReply {
                        version,
                        max_payload,
                        max_io,
                        features,
                        agent,
                        admitted,
                    }
                )
            ),
        (code(), text()).prop_map(|(code, message)| Reply::Error { code, message }),
        Just(Reply::Ok),
        Just(Reply::Pong),
        attr().prop_map(Reply::Attr),
        (
            prop::collection::vec(
                (path(), attr()).prop_map(|(name, attr)| DirEntry { name, attr }),
                0..20
            ),
            any::<bool>()
        )
            .prop_map(|(entries, more)| Reply::Listing { entries, more }),
        (attr(), data()).prop_map(|(attr, data)| Reply::Data {
            attr,
            data: data.into()
        }),
        path().prop_map(Reply::Target),
        statfs().prop_map(Reply::Statfs),
        path().prop_map(|temp| Reply::PutStarted { temp }),
        xattr_value().prop_map(Reply::Xattr),
        prop::collection::vec(xattr_name(), 0..40).prop_map(Reply::XattrNames),
        any::<u64>().prop_map(Reply::Offset),
        (any::<u64>(), attr()).prop_map(|(copied, attr)| Reply::Copied { copied, attr }),
        prop::option::of(
            (
                prop_oneof![Just(LockKind::Read), Just(LockKind::Write)],
                lock_range(),
                any::<u32>()
            )
                .prop_map(|(kind, (start, end), pid)| HeldLock {
                    kind,
                    start,
                    end,
                    pid
                })
        )
        .prop_map(Reply::Lock),
        prop::collection::vec(any::<bool>(), 0..20).prop_map(Reply::Watched),
        (prop::collection::vec(path(), 0..20), any::<bool>())
            .prop_map(|(paths, lost)| Reply::Changes { paths, lost }),
        (prop::collection::vec(changed_path(), 0..20), any::<bool>())
            .prop_map(|(changes, lost)| Reply::ChangeStates { changes, lost }),
    ]
}

fn changed_path() -> impl Strategy<Value = ChangedPath> {
    let state = prop_oneof![
        Just(EntryState::Unknown),
        Just(EntryState::Absent),
        attr().prop_map(EntryState::Present),
    ];
    (path(), state, prop::option::of(attr())).prop_map(|(path, state, dir)| ChangedPath {
        path,
        state,
        dir,
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Hands out at most `chunk` bytes per `read`, so frames arrive split at arbitrary points.
struct Trickle<'a> {
    buf: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(out.len()).min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = &self.buf[n..];
        Ok(n)
    }
}

/// A hostile peer: a fixed header, then an endless ramp. Counts what the reader took.
struct Hostile {
    head: [u8; HEADER_LEN],
    pos: u64,
}

impl Read for Hostile {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        for b in out.iter_mut() {
            *b = match usize::try_from(self.pos) {
                Ok(i) if i < HEADER_LEN => self.head[i],
                _ => (self.pos % 251) as u8,
            };
            self.pos += 1;
        }
        Ok(out.len())
    }
}

fn header(kind: u16, id: u32, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(b"SHLF");
    h[4] = 1;
    h[6..8].copy_from_slice(&kind.to_be_bytes());
    h[8..12].copy_from_slice(&id.to_be_bytes());
    h[12..16].copy_from_slice(&len.to_be_bytes());
    h
}

fn encode<M: Message>(id: u32, msg: M) -> Vec<u8> {
    Frame::new(id, msg)
        .to_bytes(MAX)
        .expect("generated messages fit the default limit")
}

/// Checks the decode invariant on any bytes: no panic, and whatever decodes re-encodes to a
/// frame that decodes to the same message with the same length.
fn decode_is_exact<M: Message + std::fmt::Debug + PartialEq>(bytes: &[u8]) {
    if let Ok(Some((frame, used))) = Frame::<M>::decode(bytes, MAX) {
        assert!((HEADER_LEN..=bytes.len()).contains(&used));
        let again = frame.to_bytes(MAX).expect("a decoded frame re-encodes");
        assert_eq!(again.len(), used);
        let (frame2, used2) = Frame::<M>::decode(&again, MAX)
            .expect("re-encoded frame is valid")
            .expect("re-encoded frame is complete");
        assert_eq!(frame2, frame);
        assert_eq!(used2, used);
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trips(id in any::<u32>(), req in request()) {
        let bytes = encode(id, req.clone());
        prop_assert_eq!(bytes.len(), HEADER_LEN + header_len(&bytes));
        let (frame, used) = Frame::<Request>::decode(&bytes, MAX)
            .expect("valid").expect("complete");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(frame, Frame::new(id, req));
    }

    #[test]
    fn reply_round_trips(id in any::<u32>(), reply in reply()) {
        let bytes = encode(id, reply.clone());
        let (frame, used) = Frame::<Reply>::decode(&bytes, MAX)
            .expect("valid").expect("complete");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(frame, Frame::new(id, reply));
    }

    /// Back-to-back frames: each decode consumes exactly its own frame.
    #[test]
    fn concatenated_frames_decode_one_by_one(reqs in prop::collection::vec(request(), 1..6)) {
        let mut buf = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            Frame::new(i as u32, r.clone()).encode(&mut buf, MAX).expect("encodes");
        }
        let mut rest = &buf[..];
        for (i, r) in reqs.iter().enumerate() {
            let (f, used) = Frame::<Request>::decode(rest, MAX).expect("valid").expect("complete");
            prop_assert_eq!(f.id, i as u32);
            prop_assert_eq!(&f.msg, r);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
    }

    /// `write_frame` then `FrameReader`, over a stream that splits the bytes anywhere.
    #[test]
    fn stream_round_trips(
        reqs in prop::collection::vec((any::<u32>(), request()), 0..6),
        replies in prop::collection::vec((any::<u32>(), reply()), 0..6),
        chunk in 1usize..300,
    ) {
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        for (id, r) in &reqs {
            write_frame(&mut wire, &Frame::new(*id, r.clone()), MAX, &mut scratch).expect("writes");
        }
        let mut reader = FrameReader::new(Trickle { buf: &wire, chunk }, MAX);
        for (id, r) in &reqs {
            let f: Frame<Request> = reader.read_frame().expect("valid").expect("present");
            prop_assert_eq!((f.id, &f.msg), (*id, r));
        }
        prop_assert!(reader.read_frame::<Request>().expect("clean EOF").is_none());

        wire.clear();
        for (id, r) in &replies {
            write_frame(&mut wire, &Frame::new(*id, r.clone()), MAX, &mut scratch).expect("writes");
        }
        let mut reader = FrameReader::new(Trickle { buf: &wire, chunk }, MAX);
        for (id, r) in &replies {
            let f: Frame<Reply> = reader.read_frame().expect("valid").expect("present");
            prop_assert_eq!((f.id, &f.msg), (*id, r));
        }
        prop_assert!(reader.read_frame::<Reply>().expect("clean EOF").is_none());
    }

    /// Every strict prefix is "need more", never an error; on a stream it is a clean EOF only
    /// when empty.
    #[test]
    fn strict_prefixes_need_more(id in any::<u32>(), req in request(), reply in reply()) {
        for bytes in [encode(id, req), encode(id, reply)] {
            for cut in 0..bytes.len() {
                prop_assert_eq!(Frame::<Request>::decode(&bytes[..cut], MAX), Ok(None));
                prop_assert_eq!(Frame::<Reply>::decode(&bytes[..cut], MAX), Ok(None));
            }
            // The stream reader on a few cuts (every cut would be quadratic in large data).
            for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
                if cut >= bytes.len() {
                    continue;
                }
                let got = FrameReader::new(&bytes[..cut], MAX).read_frame::<Reply>();
                if cut == 0 {
                    prop_assert!(matches!(got, Ok(None)));
                } else {
                    prop_assert!(matches!(got, Err(ReadError::UnexpectedEof)), "cut {}: {:?}", cut, got);
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_is_exact::<Request>(&bytes);
        decode_is_exact::<Reply>(&bytes);
        let _ = FrameReader::new(&bytes[..], MAX).read_frame::<Request>();
        let _ = FrameReader::new(&bytes[..], MAX).read_frame::<Reply>();
    }

    /// Random payloads behind a well-formed header of a known kind reach the message decoders,
    /// which random bytes alone almost never do.
    #[test]
    fn random_payloads_of_known_kinds_never_panic(
        k in prop::sample::select(ALL_KINDS),
        id in any::<u32>(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = header(k, id, payload.len() as u32).to_vec();
        bytes.extend_from_slice(&payload);
        decode_is_exact::<Request>(&bytes);
        decode_is_exact::<Reply>(&bytes);
        if let Err(ReadError::Malformed { id: got, .. }) =
            FrameReader::new(&bytes[..], MAX).read_frame::<Request>()
        {
            prop_assert_eq!(got, Some(id), "an error reply can name the request");
        }
    }

    /// Changing one byte of a valid frame gives a valid frame, "need more" or an error.
    #[test]
    fn flipped_byte_never_panics(
        id in any::<u32>(),
        req in request(),
        reply in reply(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        for mut bytes in [encode(id, req), encode(id, reply)] {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
            decode_is_exact::<Request>(&bytes);
            decode_is_exact::<Reply>(&bytes);
        }
    }

    /// A length over the limit is refused from the 16 header bytes alone.
    #[test]
    fn oversize_refused_from_header(
        max in 0u32..=HARD_MAX_PAYLOAD,
        over in 1u32..=u32::MAX,
        k in prop::sample::select(ALL_KINDS),
        id in any::<u32>(),
    ) {
        let len = max.saturating_add(over);
        prop_assume!(len > max);
        let head = header(k, id, len);
        prop_assert_eq!(
            Frame::<Request>::decode(&head, max),
            Err(DecodeError::TooLarge { len, max })
        );
        prop_assert_eq!(
            Frame::<Reply>::decode(&head, max),
            Err(DecodeError::TooLarge { len, max })
        );
        let mut peer = Hostile { head, pos: 0 };
        let mut reader = FrameReader::new(&mut peer, max);
        match reader.read_frame::<Request>() {
            Err(ReadError::Malformed { id: Some(got), error: DecodeError::TooLarge { .. } }) => {
                prop_assert_eq!(got, id)
            }
            other => prop_assert!(false, "expected TooLarge, got {:?}", other),
        }
        prop_assert_eq!(peer.pos, HEADER_LEN as u64, "no payload byte was read");
    }
}

/// Every kind number the crate knows, requests and replies.
const ALL_KINDS: &[u16] = &[
    kind::HELLO,
    kind::PING,
    kind::STAT,
    kind::LIST,
    kind::READ,
    kind::WRITE,
    kind::CREATE,
    kind::SET_ATTR,
    kind::UNLINK,
    kind::MKDIR,
    kind::RMDIR,
    kind::RENAME,
    kind::SYMLINK,
    kind::READLINK,
    kind::LINK,
    kind::STATFS,
    kind::FSYNC,
    kind::PUT_BEGIN,
    kind::PUT_COMMIT,
    kind::PUT_ABORT,
    kind::GET_XATTR,
    kind::SET_XATTR,
    kind::LIST_XATTR,
    kind::REMOVE_XATTR,
    kind::FALLOCATE,
    kind::SEEK,
    kind::COPY_RANGE,
    kind::R_HELLO,
    kind::R_ERROR,
    kind::R_OK,
    kind::R_PONG,
    kind::R_ATTR,
    kind::R_LISTING,
    kind::R_DATA,
    kind::R_TARGET,
    kind::R_STATFS,
    kind::R_PUT_STARTED,
    kind::R_XATTR,
    kind::R_XATTR_NAMES,
    kind::R_OFFSET,
    kind::R_COPIED,
];

fn header_len(frame: &[u8]) -> usize {
    let head = frame.first_chunk::<HEADER_LEN>().expect("a whole header");
    Header::parse(head, u32::MAX).expect("valid header").len as usize
}

// ---------------------------------------------------------------------------------------------
// Fixed cases

/// A peer announcing the whole limit and then streaming forever: the reader takes exactly
/// one payload's worth, answers with an error, and stops.
#[test]
fn endless_peer_at_the_limit_is_read_once_then_refused() {
    let max = 100_000;
    let mut peer = Hostile {
        head: header(kind::WRITE, 5, max),
        pos: 0,
    };
    let mut reader = FrameReader::new(&mut peer, max);
    match reader.read_frame::<Request>() {
        Err(ReadError::Malformed { id: Some(5), .. }) => {}
        other => panic!("expected a malformed-frame error, got {other:?}"),
    }
    assert_eq!(peer.pos, HEADER_LEN as u64 + u64::from(max));
}

/// A limit set above the hard maximum is clamped to it, on decode and on encode.
#[test]
fn hard_max_applies_whatever_the_limit() {
    let len = HARD_MAX_PAYLOAD + 1;
    let head = header(kind::WRITE, 1, len);
    assert_eq!(
        Frame::<Request>::decode(&head, u32::MAX),
        Err(DecodeError::TooLarge {
            len,
            max: HARD_MAX_PAYLOAD
        })
    );
    let mut peer = Hostile { head, pos: 0 };
    let mut reader = FrameReader::new(&mut peer, MAX);
    reader.set_max_payload(u32::MAX);
    assert!(matches!(
        reader.read_frame::<Request>(),
        Err(ReadError::Malformed {
            error: DecodeError::TooLarge { .. },
            ..
        })
    ));
    assert_eq!(peer.pos, HEADER_LEN as u64);

    // Exactly HARD_MAX_PAYLOAD of payload: 4 (path len) + 8 (offset) + 4 (data len) + data.
    let fits = Request::Write {
        path: Vec::new(),
        offset: 0,
        data: ramp(HARD_MAX_PAYLOAD as usize - 16).into(),
    };
    let bytes = Frame::new(1, fits.clone())
        .to_bytes(u32::MAX)
        .expect("exactly the hard max fits");
    assert_eq!(header_len(&bytes), HARD_MAX_PAYLOAD as usize);
    let (f, _) = Frame::<Request>::decode(&bytes, u32::MAX)
        .expect("valid")
        .expect("complete");
    assert_eq!(f.msg, fits);
    let over = Request::Write {
        path: vec![b'x'],
        offset: 0,
        data: ramp(HARD_MAX_PAYLOAD as usize - 16).into(),
    };
    assert_eq!(
        Frame::new(1, over).to_bytes(u32::MAX),
        Err(shelf_proto::EncodeError {
            len: HARD_MAX_PAYLOAD as usize + 1,
            max: HARD_MAX_PAYLOAD
        })
    );
}

/// The largest default I/O fits the default payload together with a long path and an `Attr`.
#[test]
fn default_max_io_fits_default_payload() {
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
    let data = bytes::Bytes::from(ramp(shelf_proto::DEFAULT_MAX_IO as usize));
    let write = Request::Write {
        path: vec![b'p'; 4096],
        offset: u64::MAX,
        data: data.clone(),
    };
    let bytes = encode(3, write.clone());
    let (f, _) = Frame::<Request>::decode(&bytes, MAX)
        .expect("valid")
        .expect("complete");
    assert_eq!(f.msg, write);
    let (f, _) = Frame::<Reply>::decode(&encode(3, Reply::Data { attr, data }), MAX)
        .expect("valid")
        .expect("complete");
    assert!(
        matches!(f.msg, Reply::Data { data, .. } if data == ramp(shelf_proto::DEFAULT_MAX_IO as usize))
    );
}

/// Unknown error numbers read as EIO, and re-encode as EIO.
#[test]
fn unknown_error_number_reads_as_eio() {
    let mut bytes = encode(
        9,
        Reply::Error {
            code: Code::NotFound,
            message: "gone".into(),
        },
    );
    bytes[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&4000u32.to_be_bytes());
    let (f, _) = Frame::<Reply>::decode(&bytes, MAX)
        .expect("valid")
        .expect("complete");
    assert_eq!(
        f.msg,
        Reply::Error {
            code: Code::Io,
            message: "gone".into()
        }
    );
}

/// Every code travels as its Linux errno number.
#[test]
fn every_code_travels_as_its_errno() {
    for &code in Code::ALL {
        let bytes = encode(
            1,
            Reply::Error {
                code,
                message: String::new(),
            },
        );
        assert_eq!(
            bytes[HEADER_LEN..HEADER_LEN + 4],
            (code.errno() as u32).to_be_bytes(),
            "{code:?}"
        );
    }
}
