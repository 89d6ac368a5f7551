//! The seed corpus of the `decode_frame` fuzz target (proto/fuzz/corpus/decode_frame/seed-*):
//! one valid frame of each interesting shape, so the fuzzer starts past the header checks.
//!
//! The test fails when a seed file is missing or stale; `SHELF_WRITE_SEEDS=1 cargo test -p
//! shelf-proto --test fuzz_seeds` rewrites them.

use std::path::PathBuf;

use shelf_proto::{
    Attr, Code, DirEntry, FileKind, Frame, Hello, HelloReply, Message, Reply, Request, SetAttrs,
    SetTime, Timestamp, DEFAULT_MAX_PAYLOAD, PROTOCOL_VERSION,
};

fn ramp(len: usize) -> Vec<u8> {
    (0..len).map(|k| (k % 251) as u8).collect()
}

fn attr(kind: FileKind) -> Attr {
    Attr {
        ino: 0x0102_0304_0506,
        kind,
        perm: 0o644,
        nlink: 1,
        size: 300,
        blocks: 8,
        blksize: 4096,
        atime: Timestamp::new(1_700_000_000, 1),
        mtime: Timestamp::new(-1, 999_999_999),
        ctime: Timestamp::new(1_700_000_002, 0),
        btime: Timestamp::default(),
    }
}

fn frame<M: Message>(id: u32, msg: M) -> Vec<u8> {
    Frame::new(id, msg)
        .to_bytes(DEFAULT_MAX_PAYLOAD)
        .expect("seed frames are small")
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "seed-hello",
            frame(
                1,
                Request::Hello(Hello {
                    min_version: 1,
                    max_version: PROTOCOL_VERSION,
                    token: b"secret".to_vec(),
                    max_payload: DEFAULT_MAX_PAYLOAD,
                    max_io: 1 << 20,
                    features: 3,
                    agent: "seed".into(),
                }),
            ),
        ),
        (
            "seed-stat",
            frame(
                2,
                Request::Stat {
                    path: b"docs/a.txt".to_vec(),
                },
            ),
        ),
        (
            "seed-write",
            frame(
                3,
                Request::Write {
                    path: b"d/\xff".to_vec(),
                    offset: 4096,
                    data: ramp(300).into(),
                },
            ),
        ),
        (
            "seed-setattr",
            frame(
                4,
                Request::SetAttr {
                    path: b"f".to_vec(),
                    attrs: SetAttrs {
                        perm: Some(0o600),
                        size: None,
                        atime: Some(SetTime::Now),
                        mtime: Some(SetTime::At(Timestamp::new(5, 6))),
                    },
                },
            ),
        ),
        (
            "seed-putcommit",
            frame(
                5,
                Request::PutCommit {
                    temp: b".shelf-put-abc".to_vec(),
                    path: b"f".to_vec(),
                    mtime: Some(Timestamp::new(7, 8)),
                },
            ),
        ),
        (
            "seed-r-hello",
            frame(
                1,
                Reply::Hello(HelloReply {
                    version: 1,
                    max_payload: DEFAULT_MAX_PAYLOAD,
                    max_io: 1 << 20,
                    features: 1,
                    agent: "shelfd".into(),
                    admitted: None,
                }),
            ),
        ),
        (
            "seed-r-busy",
            frame(
                0,
                Reply::Error {
                    code: Code::Busy,
                    message: "server busy".into(),
                },
            ),
        ),
        (
            "seed-r-listing",
            frame(
                6,
                Reply::Listing {
                    entries: vec![
                        DirEntry {
                            name: b"a".to_vec(),
                            attr: attr(FileKind::File),
                        },
                        DirEntry {
                            name: b"b".to_vec(),
                            attr: attr(FileKind::Dir),
                        },
                    ],
                    more: true,
                },
            ),
        ),
        (
            "seed-r-data",
            frame(
                7,
                Reply::Data {
                    attr: attr(FileKind::File),
                    data: ramp(300).into(),
                },
            ),
        ),
        (
            "seed-setxattr",
            frame(
                8,
                Request::SetXattr {
                    path: b"f".to_vec(),
                    name: b"user.k".to_vec(),
                    value: b"\0\xff".to_vec(),
                    flags: 1,
                },
            ),
        ),
        (
            "seed-r-xattr-names",
            frame(
                9,
                Reply::XattrNames(vec![b"user.a".to_vec(), b"user.b".to_vec()]),
            ),
        ),
    ]
}

#[test]
fn seed_corpus_is_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_frame");
    let write = std::env::var_os("SHELF_WRITE_SEEDS").is_some();
    for (name, bytes) in seeds() {
        let path = dir.join(format!("{name}.bin"));
        if write {
            std::fs::create_dir_all(&dir).expect("corpus directory can be made");
            std::fs::write(&path, &bytes).expect("seed can be written");
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run SHELF_WRITE_SEEDS=1 cargo test --test fuzz_seeds",
                path.display()
            )
        });
        assert_eq!(on_disk, bytes, "{} is stale", path.display());
    }
}
