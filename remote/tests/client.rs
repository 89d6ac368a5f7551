//! Typed calls against the real server in-process (`shelf_testkit::Loopback`).

use std::time::Duration;

use shelf_proto::{Code, FileKind, SetAttrs, SetTime, Timestamp};
use shelf_remote::{Client, ConnectOptions};
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
