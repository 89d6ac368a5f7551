//! docs/PROTOCOL.md cannot drift from the code: its worked examples decode to the messages it
//! describes (and those messages encode to exactly its bytes), and its tables of kinds, error
//! numbers and limits match the crate's constants.

use std::collections::HashSet;
use std::path::PathBuf;

use shelf_proto::msg::kind;
use shelf_proto::{
    falloc_mode, features, xattr, Attr, Code, FileKind, Frame, Hello, Message, Reply, Request,
    Timestamp, DEFAULT_MAX_IO, DEFAULT_MAX_PAYLOAD, HARD_MAX_PAYLOAD, HEADER_LEN, IO_OVERHEAD,
    MIN_PAYLOAD,
};

fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bytes of the example block after `<!-- example: NAME -->`: each line's leading run of
/// two-digit hex words, up to the first word that is not one.
fn example_bytes(doc: &str, name: &str) -> Vec<u8> {
    let marker = format!("<!-- example: {name} -->");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {marker}"));
    let mut lines = doc[start..].lines().skip(1);
    assert_eq!(
        lines.next(),
        Some("```text"),
        "{name}: block follows marker"
    );
    let mut out = Vec::new();
    for line in lines.take_while(|l| *l != "```") {
        for word in line.split_whitespace() {
            if word.len() != 2 {
                break;
            }
            match u8::from_str_radix(word, 16) {
                Ok(b) => out.push(b),
                Err(_) => break,
            }
        }
    }
    out
}

/// Every table row of the doc as trimmed cells.
fn table_rows(doc: &str) -> HashSet<Vec<String>> {
    doc.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn has_row(rows: &HashSet<Vec<String>>, prefix: &[&str]) -> bool {
    rows.iter()
        .any(|r| r.len() >= prefix.len() && r.iter().zip(prefix).all(|(a, b)| a == b))
}

/// Hello, id 1: version 1 only, token "secret", default limits, ATOMIC_PUT | LINKS, agent
/// "shelf/0.1".
const HELLO_REQUEST: [u8; 59] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x00, 0x01, // magic, frame version, flags, kind Hello
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2b, // id 1, payload length 43
    0x00, 0x01, 0x00, 0x01, // min_version 1, max_version 1
    0x00, 0x00, 0x00, 0x06, // token length 6
    0x73, 0x65, 0x63, 0x72, 0x65, 0x74, // "secret"
    0x00, 0x41, 0x00, 0x00, // max_payload
    0x00, 0x40, 0x00, 0x00, // max_io
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, // features
    0x00, 0x00, 0x00, 0x09, // agent length 9
    0x73, 0x68, 0x65, 0x6c, 0x66, 0x2f, 0x30, 0x2e, 0x31, // "shelf/0.1"
];

/// Stat "docs/a.txt", id 2.
const STAT_REQUEST: [u8; 30] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x00, 0x10, // magic, frame version, flags, kind Stat
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0e, // id 2, payload length 14
    0x00, 0x00, 0x00, 0x0a, // path length 10
    0x64, 0x6f, 0x63, 0x73, 0x2f, 0x61, 0x2e, 0x74, 0x78, 0x74, // "docs/a.txt"
];

/// Error ENOENT "not found", id 2.
const STAT_ERROR_REPLY: [u8; 33] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x80, 0x02, // magic, frame version, flags, kind Error
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x11, // id 2, payload length 17
    0x00, 0x00, 0x00, 0x02, // code 2 (ENOENT)
    0x00, 0x00, 0x00, 0x09, // message length 9
    0x6e, 0x6f, 0x74, 0x20, 0x66, 0x6f, 0x75, 0x6e, 0x64, // "not found"
];

/// GetXattr "a.txt" "user.k", id 3.
const GETXATTR_REQUEST: [u8; 35] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x00,
    0x30, // magic, frame version, flags, kind GetXattr
    0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x13, // id 3, payload length 19
    0x00, 0x00, 0x00, 0x05, 0x61, 0x2e, 0x74, 0x78, 0x74, // path "a.txt"
    0x00, 0x00, 0x00, 0x06, 0x75, 0x73, 0x65, 0x72, 0x2e, 0x6b, // name "user.k"
];

/// Xattr [0, 255, 10], id 3.
const XATTR_REPLY: [u8; 23] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x80, 0x0b, // magic, frame version, flags, kind Xattr
    0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, // id 3, payload length 7
    0x00, 0x00, 0x00, 0x03, 0x00, 0xff, 0x0a, // value
];

/// SetXattr "a.txt" "user.k" = "v\0", CREATE, id 4.
const SETXATTR_REQUEST: [u8; 45] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x00,
    0x31, // magic, frame version, flags, kind SetXattr
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x1d, // id 4, payload length 29
    0x00, 0x00, 0x00, 0x05, 0x61, 0x2e, 0x74, 0x78, 0x74, // path "a.txt"
    0x00, 0x00, 0x00, 0x06, 0x75, 0x73, 0x65, 0x72, 0x2e, 0x6b, // name "user.k"
    0x00, 0x00, 0x00, 0x02, 0x76, 0x00, // value "v\0"
    0x00, 0x00, 0x00, 0x01, // flags CREATE
];

/// XattrNames ["user.a", "user.b"], id 5.
const XATTR_NAMES_REPLY: [u8; 40] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x80,
    0x0c, // magic, frame version, flags, kind XattrNames
    0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x18, // id 5, payload length 24
    0x00, 0x00, 0x00, 0x02, // count 2
    0x00, 0x00, 0x00, 0x06, 0x75, 0x73, 0x65, 0x72, 0x2e, 0x61, // "user.a"
    0x00, 0x00, 0x00, 0x06, 0x75, 0x73, 0x65, 0x72, 0x2e, 0x62, // "user.b"
];

/// Fallocate "a", id 3: punch a hole of 8 KiB at 4 KiB, keeping the size.
const FALLOCATE_REQUEST: [u8; 41] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x00,
    0x40, // magic, frame version, flags, kind Fallocate
    0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x19, // id 3, payload length 25
    0x00, 0x00, 0x00, 0x01, 0x61, // path "a"
    0x00, 0x00, 0x00, 0x03, // mode KEEP_SIZE | PUNCH_HOLE
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, // offset 4096
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, // len 8192
];

/// CopyRange "a" to "b", id 4: 1 GiB from offset 0 to offset 0.
const COPY_RANGE_REQUEST: [u8; 50] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x00,
    0x42, // magic, frame version, flags, kind CopyRange
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x22, // id 4, payload length 34
    0x00, 0x00, 0x00, 0x01, 0x61, // from "a"
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // from_offset 0
    0x00, 0x00, 0x00, 0x01, 0x62, // to "b"
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // to_offset 0
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, // len 1 GiB
];

/// Offset 65536, id 5.
const OFFSET_REPLY: [u8; 24] = [
    0x53, 0x48, 0x4c, 0x46, 0x01, 0x00, 0x80,
    0x0d, // magic, frame version, flags, kind Offset
    0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x08, // id 5, payload length 8
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // offset 65536
];

/// `bytes` decode to exactly `want`, using all of them, and `want` encodes to exactly `bytes`.
fn check_example<M: Message + std::fmt::Debug + PartialEq + Clone>(bytes: &[u8], want: Frame<M>) {
    let (got, used) = Frame::<M>::decode(bytes, DEFAULT_MAX_PAYLOAD)
        .expect("the documented frame is valid")
        .expect("the documented frame is complete");
    assert_eq!(used, bytes.len());
    assert_eq!(got, want);
    assert_eq!(
        want.to_bytes(DEFAULT_MAX_PAYLOAD).expect("encodes"),
        bytes,
        "the documented bytes are the canonical encoding"
    );
}

#[test]
fn worked_examples_decode() {
    check_example(
        &HELLO_REQUEST,
        Frame::new(
            1,
            Request::Hello(Hello {
                min_version: 1,
                max_version: 1,
                token: b"secret".to_vec(),
                max_payload: DEFAULT_MAX_PAYLOAD,
                max_io: DEFAULT_MAX_IO,
                features: features::ATOMIC_PUT | features::LINKS,
                agent: "shelf/0.1".into(),
            }),
        ),
    );
    check_example(
        &STAT_REQUEST,
        Frame::new(
            2,
            Request::Stat {
                path: b"docs/a.txt".to_vec(),
            },
        ),
    );
    check_example(
        &GETXATTR_REQUEST,
        Frame::new(
            3,
            Request::GetXattr {
                path: b"a.txt".to_vec(),
                name: b"user.k".to_vec(),
            },
        ),
    );
    check_example(&XATTR_REPLY, Frame::new(3, Reply::Xattr(vec![0, 255, 10])));
    check_example(
        &SETXATTR_REQUEST,
        Frame::new(
            4,
            Request::SetXattr {
                path: b"a.txt".to_vec(),
                name: b"user.k".to_vec(),
                value: b"v\0".to_vec(),
                flags: xattr::CREATE,
            },
        ),
    );
    check_example(
        &XATTR_NAMES_REPLY,
        Frame::new(
            5,
            Reply::XattrNames(vec![b"user.a".to_vec(), b"user.b".to_vec()]),
        ),
    );
    check_example(
        &FALLOCATE_REQUEST,
        Frame::new(
            3,
            Request::Fallocate {
                path: b"a".to_vec(),
                mode: falloc_mode::KEEP_SIZE | falloc_mode::PUNCH_HOLE,
                offset: 4096,
                len: 8192,
            },
        ),
    );
    check_example(
        &COPY_RANGE_REQUEST,
        Frame::new(
            4,
            Request::CopyRange {
                from: b"a".to_vec(),
                from_offset: 0,
                to: b"b".to_vec(),
                to_offset: 0,
                len: 1 << 30,
            },
        ),
    );
    check_example(&OFFSET_REPLY, Frame::new(5, Reply::Offset(65536)));
    check_example(
        &STAT_ERROR_REPLY,
        Frame::new(
            2,
            Reply::Error {
                code: Code::NotFound,
                message: "not found".into(),
            },
        ),
    );
}

#[test]
fn doc_shows_the_example_bytes() {
    let doc = doc();
    assert_eq!(example_bytes(&doc, "hello-request"), HELLO_REQUEST);
    assert_eq!(example_bytes(&doc, "stat-request"), STAT_REQUEST);
    assert_eq!(example_bytes(&doc, "stat-error-reply"), STAT_ERROR_REPLY);
    assert_eq!(example_bytes(&doc, "getxattr-request"), GETXATTR_REQUEST);
    assert_eq!(example_bytes(&doc, "xattr-reply"), XATTR_REPLY);
    assert_eq!(example_bytes(&doc, "setxattr-request"), SETXATTR_REQUEST);
    assert_eq!(example_bytes(&doc, "xattr-names-reply"), XATTR_NAMES_REPLY);
    assert_eq!(example_bytes(&doc, "fallocate-request"), FALLOCATE_REQUEST);
    assert_eq!(
        example_bytes(&doc, "copy-range-request"),
        COPY_RANGE_REQUEST
    );
    assert_eq!(example_bytes(&doc, "offset-reply"), OFFSET_REPLY);
    // The header box in "Frames" is the Stat request's header.
    let boxed: String = STAT_REQUEST[..HEADER_LEN]
        .iter()
        .map(|b| format!(" {b:02x} |"))
        .collect();
    assert!(doc.contains(&boxed), "header box shows {boxed}");
}

#[test]
fn kinds_table_matches() {
    let rows = table_rows(&doc());
    let kinds: &[(u16, &str, &str)] = &[
        (kind::HELLO, "Hello", "request"),
        (kind::PING, "Ping", "request"),
        (kind::STAT, "Stat", "request"),
        (kind::LIST, "List", "request"),
        (kind::READ, "Read", "request"),
        (kind::WRITE, "Write", "request"),
        (kind::CREATE, "Create", "request"),
        (kind::SET_ATTR, "SetAttr", "request"),
        (kind::UNLINK, "Unlink", "request"),
        (kind::MKDIR, "Mkdir", "request"),
        (kind::RMDIR, "Rmdir", "request"),
        (kind::RENAME, "Rename", "request"),
        (kind::SYMLINK, "Symlink", "request"),
        (kind::READLINK, "Readlink", "request"),
        (kind::LINK, "Link", "request"),
        (kind::STATFS, "Statfs", "request"),
        (kind::FSYNC, "Fsync", "request"),
        (kind::PUT_BEGIN, "PutBegin", "request"),
        (kind::PUT_COMMIT, "PutCommit", "request"),
        (kind::PUT_ABORT, "PutAbort", "request"),
        (kind::GET_XATTR, "GetXattr", "request"),
        (kind::SET_XATTR, "SetXattr", "request"),
        (kind::LIST_XATTR, "ListXattr", "request"),
        (kind::REMOVE_XATTR, "RemoveXattr", "request"),
        (kind::FALLOCATE, "Fallocate", "request"),
        (kind::SEEK, "Seek", "request"),
        (kind::COPY_RANGE, "CopyRange", "request"),
        (kind::LOCK, "Lock", "request"),
        (kind::TEST_LOCK, "TestLock", "request"),
        (kind::RELEASE_LOCKS, "ReleaseLocks", "request"),
        (kind::WATCH, "Watch", "request"),
        (kind::CHANGES, "Changes", "request"),
        (kind::R_HELLO, "Hello", "reply"),
        (kind::R_ERROR, "Error", "reply"),
        (kind::R_OK, "Ok", "reply"),
        (kind::R_PONG, "Pong", "reply"),
        (kind::R_ATTR, "Attr", "reply"),
        (kind::R_LISTING, "Listing", "reply"),
        (kind::R_DATA, "Data", "reply"),
        (kind::R_TARGET, "Target", "reply"),
        (kind::R_STATFS, "Statfs", "reply"),
        (kind::R_PUT_STARTED, "PutStarted", "reply"),
        (kind::R_XATTR, "Xattr", "reply"),
        (kind::R_XATTR_NAMES, "XattrNames", "reply"),
        (kind::R_OFFSET, "Offset", "reply"),
        (kind::R_COPIED, "Copied", "reply"),
        (kind::R_LOCK, "Lock", "reply"),
        (kind::R_WATCHED, "Watched", "reply"),
        (kind::R_CHANGES, "Changes", "reply"),
        (kind::R_CHANGE_STATES, "ChangeStates", "reply"),
    ];
    for &(k, name, dir) in kinds {
        let code = format!("`{k:#06x}`");
        assert!(
            has_row(&rows, &[&code, name, dir]),
            "PROTOCOL.md Kinds lacks | {code} | {name} | {dir} |"
        );
        // The Requests and Replies tables list the same kind and name.
        assert!(
            rows.iter()
                .filter(|r| r.first() == Some(&code) && r.get(1).map(String::as_str) == Some(name))
                .count()
                >= 2,
            "{code} {name} appears in Kinds and in Requests/Replies"
        );
    }
}

#[test]
fn features_and_fallocate_mode_tables_match() {
    let rows = table_rows(&doc());
    for (bit, name) in [
        (features::ATOMIC_PUT, "ATOMIC_PUT"),
        (features::LINKS, "LINKS"),
        (features::CHANGE_NOTIFY, "CHANGE_NOTIFY"),
        (features::FALLOCATE, "FALLOCATE"),
        (features::SEEK_HOLES, "SEEK_HOLES"),
        (features::COPY_RANGE, "COPY_RANGE"),
        (features::LOCKS, "LOCKS"),
        (features::CHANGE_STATE, "CHANGE_STATE"),
    ] {
        let shift = format!("`1 << {}`", bit.trailing_zeros());
        let name = format!("`{name}`");
        assert!(
            has_row(&rows, &[&shift, &name]),
            "PROTOCOL.md Features lacks | {shift} | {name} |"
        );
    }
    for (bit, name, linux) in [
        (falloc_mode::KEEP_SIZE, "KEEP_SIZE", "FALLOC_FL_KEEP_SIZE"),
        (
            falloc_mode::PUNCH_HOLE,
            "PUNCH_HOLE",
            "FALLOC_FL_PUNCH_HOLE",
        ),
        (
            falloc_mode::ZERO_RANGE,
            "ZERO_RANGE",
            "FALLOC_FL_ZERO_RANGE",
        ),
    ] {
        let shift = format!("`1 << {}`", bit.trailing_zeros());
        let (name, linux) = (format!("`{name}`"), format!("`{linux}`"));
        assert!(
            has_row(&rows, &[&shift, &name, &linux]),
            "PROTOCOL.md fallocate modes lack | {shift} | {name} | {linux} |"
        );
    }
}

#[test]
fn errors_table_matches() {
    let rows = table_rows(&doc());
    let names: &[(Code, &str)] = &[
        (Code::NotPermitted, "EPERM"),
        (Code::NotFound, "ENOENT"),
        (Code::Io, "EIO"),
        (Code::BadHandle, "EBADF"),
        (Code::TryAgain, "EAGAIN"),
        (Code::Access, "EACCES"),
        (Code::Busy, "EBUSY"),
        (Code::Exists, "EEXIST"),
        (Code::CrossDevice, "EXDEV"),
        (Code::NotDir, "ENOTDIR"),
        (Code::IsDir, "EISDIR"),
        (Code::Invalid, "EINVAL"),
        (Code::TooManyOpen, "EMFILE"),
        (Code::NotTty, "ENOTTY"),
        (Code::FileTooBig, "EFBIG"),
        (Code::NoSpace, "ENOSPC"),
        (Code::ReadOnly, "EROFS"),
        (Code::TooManyLinks, "EMLINK"),
        (Code::Range, "ERANGE"),
        (Code::NameTooLong, "ENAMETOOLONG"),
        (Code::NotImplemented, "ENOSYS"),
        (Code::NotEmpty, "ENOTEMPTY"),
        (Code::Loop, "ELOOP"),
        (Code::Overflow, "EOVERFLOW"),
        (Code::Protocol, "EPROTO"),
        (Code::NotSupported, "EOPNOTSUPP"),
        (Code::NotConnected, "ENOTCONN"),
        (Code::TimedOut, "ETIMEDOUT"),
        (Code::Stale, "ESTALE"),
        (Code::Quota, "EDQUOT"),
        (Code::TextBusy, "ETXTBSY"),
        (Code::Interrupted, "EINTR"),
        (Code::NoData, "ENODATA"),
        (Code::TooBig, "E2BIG"),
        (Code::NoDeviceOrAddress, "ENXIO"),
        (Code::Deadlock, "EDEADLK"),
        (Code::NoLocks, "ENOLCK"),
    ];
    assert_eq!(
        names.len(),
        Code::ALL.len(),
        "a new Code needs a row here and in PROTOCOL.md"
    );
    for &(code, name) in names {
        let number = code.to_wire().to_string();
        let errno = format!("`{name}`");
        assert!(
            has_row(&rows, &[&number, &errno]),
            "PROTOCOL.md Errors lacks | {number} | {errno} | ({code:?})"
        );
    }
}

#[test]
fn limits_and_sizes_match() {
    let doc = doc();
    let rows = table_rows(&doc);
    for (name, value) in [
        ("DEFAULT_MAX_IO", DEFAULT_MAX_IO),
        ("DEFAULT_MAX_PAYLOAD", DEFAULT_MAX_PAYLOAD),
        ("HARD_MAX_PAYLOAD", HARD_MAX_PAYLOAD),
        ("MIN_PAYLOAD", MIN_PAYLOAD),
        ("IO_OVERHEAD", IO_OVERHEAD),
    ] {
        let row = rows
            .iter()
            .find(|r| r.first().map(String::as_str) == Some(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("PROTOCOL.md Limits lacks {name}"));
        assert!(
            row[1].starts_with(&format!("{value} ")),
            "{name} is {value}, doc says {}",
            row[1]
        );
        assert!(row[1].contains(&format!("`{value:#010x}`")), "{name} hex");
    }

    let attr = Attr {
        ino: 1,
        kind: FileKind::File,
        perm: 0,
        nlink: 0,
        size: 0,
        blocks: 0,
        blksize: 0,
        atime: Timestamp::default(),
        mtime: Timestamp::default(),
        ctime: Timestamp::default(),
        btime: Timestamp::default(),
    };
    let payload = |m: Reply| {
        Frame::new(1, m)
            .to_bytes(DEFAULT_MAX_PAYLOAD)
            .expect("encodes")
            .len()
            - HEADER_LEN
    };
    let attr_len = payload(Reply::Attr(attr));
    assert!(doc.contains(&format!("### Attr ({attr_len} bytes)")));
    let statfs_len = payload(Reply::Statfs(Default::default()));
    assert!(doc.contains(&format!("### Statfs ({statfs_len} bytes)")));
}
