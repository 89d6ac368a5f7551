//! Typed calls against the real server in-process (`shelf_testkit::Loopback`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shelf_proto::{features, xattr, Code, FileKind, Reply, Request, SetAttrs, SetTime, Timestamp};
use shelf_remote::{Client, ConnectOptions, Limits, RemoteError, Transport};
use shelf_server::ServeConfig;
use shelf_testkit::Loopback;

/// Byte k is k mod 251, so a misplaced piece cannot pass.
fn ramp(len: usize) -> Vec<u8> {
    (0..len).map(|k| (k % 251) as u8).collect()
}

/// A loopback whose server splits I/O at 64 KiB, so 1 MiB transfers take many pieces.
fn small_io(dir: &std::path::Path) -> Client<Loopback> {
    let cfg = ServeConfig {
        max_io: 64 << 10,
        max_payload: (64 << 10) + (16 << 10),
        ..ServeConfig::default()
    };
    let opts = ConnectOptions {
        request_timeout: Duration::from_secs(10),
        ..ConnectOptions::new("loopback")
    };
    Client::new(Loopback::with(dir, cfg, opts, 2).expect("loopback"))
}

#[test]
fn large_reads_and_writes_are_split_and_reassembled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = small_io(dir.path());
    assert_eq!(c.limits().max_io, 64 << 10);
    let data = ramp((1 << 20) + 12345);
    c.create(b"big", 0o644, true).expect("create");
    let attr = c.write(b"big", 0, &data).expect("write");
    assert_eq!(attr.size, data.len() as u64);
    assert_eq!(
        std::fs::read(dir.path().join("big")).expect("on disk"),
        data
    );
    let (attr, back) = c.read(b"big", 0, 2 << 20).expect("read");
    assert_eq!(attr.size, data.len() as u64);
    assert!(back == data, "read back the same bytes");
    let (_, mid) = c.read(b"big", 70_000, 200_000).expect("read");
    assert!(mid == data[70_000..270_000]);
    let (_, past) = c.read(b"big", 5 << 20, 100).expect("read past end");
    assert!(past.is_empty());
}

#[test]
fn listing_follows_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = small_io(dir.path());
    // ~1500 entries of ~100 bytes each need a few 68 KiB frames.
    let mut names: Vec<String> = (0..1500)
        .map(|i| format!("file-with-a-fairly-long-name-{i:05}"))
        .collect();
    for n in &names {
        std::fs::write(dir.path().join(n), b"").expect("touch");
    }
    let entries = c.list(b"").expect("list");
    names.sort();
    let got: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8(e.name.clone()).expect("utf8"))
        .collect();
    assert_eq!(got, names);
}

#[test]
fn typed_calls_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Client::new(Loopback::new(dir.path()).expect("loopback"));
    c.ping().expect("ping");
    let d = c.mkdir(b"d", 0o750).expect("mkdir");
    assert_eq!(d.kind, FileKind::Dir);
    c.create(b"d/f", 0o600, true).expect("create");
    let err = c.create(b"d/f", 0o600, true).expect_err("exclusive");
    assert_eq!(err.code(), Code::Exists);
    c.write(b"d/f", 0, b"abc").expect("write");
    let a = c
        .set_attr(
            b"d/f",
            SetAttrs {
                size: Some(2),
                mtime: Some(SetTime::At(Timestamp::new(1_000_000, 0))),
                ..SetAttrs::default()
            },
        )
        .expect("setattr");
    assert_eq!((a.size, a.mtime.secs), (2, 1_000_000));
    c.symlink(b"d/l", b"f").expect("symlink");
    assert_eq!(c.readlink(b"d/l").expect("readlink"), b"f");
    c.link(b"d/f", b"d/g").expect("link");
    assert_eq!(c.stat(b"d/g").expect("stat").nlink, 2);
    c.rename(b"d/g", b"h", 0).expect("rename");
    c.fsync(b"h", false).expect("fsync");
    assert!(c.statfs().expect("statfs").bsize > 0);
    let err = c.rmdir(b"d").expect_err("not empty");
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    for p in [&b"d/f"[..], b"d/l", b"h"] {
        c.unlink(p).expect("unlink");
    }
    c.rmdir(b"d").expect("rmdir");
    let err = c.stat(b"d").expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.to_string(), "no such file or directory");
}

#[test]
fn atomic_put_commits_or_aborts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Client::new(Loopback::new(dir.path()).expect("loopback"));
    let temp = c.put_begin(b"p", 0o644).expect("begin");
    c.write(&temp, 0, b"new").expect("write temp");
    assert!(c.list(b"").expect("list").is_empty(), "temps are hidden");
    let a = c
        .put_commit(&temp, b"p", Some(Timestamp::new(2_000_000, 5)))
        .expect("commit");
    assert_eq!((a.size, a.mtime.secs), (3, 2_000_000));
    let temp = c.put_begin(b"p", 0o644).expect("begin");
    c.write(&temp, 0, b"discarded").expect("write temp");
    c.put_abort(&temp).expect("abort");
    assert_eq!(std::fs::read(dir.path().join("p")).expect("kept"), b"new");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
}

#[test]
fn xattr_calls_round_trip_any_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = small_io(dir.path());
    assert_ne!(c.transport().features() & features::XATTR, 0, "agreed");
    std::fs::write(dir.path().join("f"), b"").expect("seed");
    // As large as ext4 keeps beside a file without the ea_inode feature (larger: ENOSPC).
    let big = ramp(3000);
    c.set_xattr(b"f", b"user.big", &big, xattr::CREATE)
        .expect("set");
    c.set_xattr(b"f", b"user.nul", b"\0a\0", 0).expect("set");
    assert_eq!(c.get_xattr(b"f", b"user.big").expect("get"), big);
    assert_eq!(c.get_xattr(b"f", b"user.nul").expect("get"), b"\0a\0");
    let mut names = c.list_xattr(b"f").expect("list");
    names.sort();
    assert_eq!(names, [b"user.big".to_vec(), b"user.nul".to_vec()]);
    let err = c
        .set_xattr(b"f", b"user.big", b"", xattr::CREATE)
        .expect_err("exists");
    assert_eq!(err.code(), Code::Exists);
    c.remove_xattr(b"f", b"user.big").expect("remove");
    let err = c.get_xattr(b"f", b"user.big").expect_err("gone");
    assert_eq!(err.code(), Code::NoData);
    let err = c
        .set_xattr(b"f", b"trusted.k", b"", 0)
        .expect_err("refused");
    assert_eq!(err.code(), Code::NotSupported);
}

/// A server that did not agree `XATTR`: nothing is sent, every call is EOPNOTSUPP.
struct OldServer {
    inner: Loopback,
    sent: AtomicUsize,
}

impl Transport for OldServer {
    type Pending = <Loopback as Transport>::Pending;
    fn start(&self, req: &Request) -> Result<Self::Pending, RemoteError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.inner.start(req)
    }
    fn call(&self, req: Request) -> Result<Reply, RemoteError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.inner.call(req)
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn features(&self) -> u64 {
        self.inner.features() & !features::XATTR
    }
}

#[test]
fn xattr_calls_are_not_sent_to_a_server_without_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f"), b"").expect("seed");
    let c = Client::new(OldServer {
        inner: small_io(dir.path()).into_transport(),
        sent: AtomicUsize::new(0),
    });
    let codes = [
        c.get_xattr(b"f", b"user.k").map(drop),
        c.set_xattr(b"f", b"user.k", b"v", 0),
        c.list_xattr(b"f").map(drop),
        c.remove_xattr(b"f", b"user.k"),
    ]
    .map(|r| r.expect_err("refused").code());
    assert_eq!(codes, [Code::NotSupported; 4]);
    assert_eq!(c.transport().sent.load(Ordering::SeqCst), 0);
    c.stat(b"f").expect("other calls still go");
    assert_eq!(c.transport().sent.load(Ordering::SeqCst), 1);
}
