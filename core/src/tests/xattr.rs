//! Extended attributes through the core (`xattr.rs`), against the real server.

use shelf_proto::xattr as xattr_limits;

use super::*;

/// Requests the core's pool has sent so far.
fn sent(f: &Fixture) -> u64 {
    f.core.transport().pool().state().requests
}

fn data(r: FsResult<XattrReply>) -> Vec<u8> {
    match r.expect("xattr call") {
        XattrReply::Data(d) => d,
        other => panic!("expected data, got {other:?}"),
    }
}

#[test]
fn values_round_trip_with_the_size_query_and_erange() {
    let f = fixture();
    let (e, o) = f.create("f");
    let value = b"\0binary\xff\0".to_vec();
    f.core
        .setxattr(e.ino, b"user.v", &value, 0, 0)
        .expect("set");
    let len = value.len() as u32;
    assert_eq!(
        f.core.getxattr(e.ino, b"user.v", 0).expect("size query"),
        XattrReply::Size(len)
    );
    assert_eq!(
        errno_of(f.core.getxattr(e.ino, b"user.v", len - 1)),
        Code::Range
    );
    assert_eq!(data(f.core.getxattr(e.ino, b"user.v", len)), value);
    assert_eq!(data(f.core.getxattr(e.ino, b"user.v", 65536)), value);
    // On the server, as the file's own attribute.
    let on_disk = rustix::fs::getxattr(f.dir.path().join("f"), "user.v", &mut [0u8; 64][..]);
    assert_eq!(on_disk, Ok(value.len()));

    f.core
        .setxattr(e.ino, b"user.w", b"", 0, 0)
        .expect("set empty");
    // "user.v\0user.w\0": 14 bytes, in the server's order.
    assert_eq!(
        f.core.listxattr(e.ino, 0).expect("size"),
        XattrReply::Size(14)
    );
    assert_eq!(errno_of(f.core.listxattr(e.ino, 13)), Code::Range);
    let mut names: Vec<_> = data(f.core.listxattr(e.ino, 14))
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    names.sort();
    assert_eq!(names, [b"user.v".to_vec(), b"user.w".to_vec()]);

    f.core.removexattr(e.ino, b"user.v").expect("remove");
    assert_eq!(errno_of(f.core.getxattr(e.ino, b"user.v", 0)), Code::NoData);
    assert_eq!(errno_of(f.core.removexattr(e.ino, b"user.v")), Code::NoData);
    f.core.release(o.fh).expect("release");
}

#[test]
fn create_and_replace_flags_and_bad_arguments() {
    let f = fixture();
    let (e, _o) = f.create("f");
    let (ino, core) = (e.ino, &f.core);
    core.setxattr(ino, b"user.k", b"1", libc::XATTR_CREATE, 0)
        .expect("create");
    let again = core.setxattr(ino, b"user.k", b"2", libc::XATTR_CREATE, 0);
    assert_eq!(errno_of(again), Code::Exists);
    let missing = core.setxattr(ino, b"user.n", b"2", libc::XATTR_REPLACE, 0);
    assert_eq!(errno_of(missing), Code::NoData);
    core.setxattr(ino, b"user.k", b"3", libc::XATTR_REPLACE, 0)
        .expect("replace");
    assert_eq!(data(core.getxattr(ino, b"user.k", 10)), b"3");
    assert_eq!(
        errno_of(core.setxattr(ino, b"user.k", b"", 4, 0)),
        Code::Invalid
    );
    assert_eq!(
        errno_of(core.setxattr(ino, b"user.k", b"", 0, 1)),
        Code::Invalid
    );
    let big = vec![7; xattr_limits::VALUE_MAX + 1];
    assert_eq!(
        errno_of(core.setxattr(ino, b"user.k", &big, 0, 0)),
        Code::TooBig
    );
    let long = [b"user.".as_slice(), &[b'a'; 251]].concat();
    assert_eq!(errno_of(core.setxattr(ino, &long, b"", 0, 0)), Code::Range);
    assert_eq!(errno_of(core.getxattr(ino, b"", 0)), Code::Range);
}

#[test]
fn names_the_server_does_not_store_are_answered_without_a_round_trip() {
    let f = fixture();
    let (e, o) = f.create("f");
    let before = sent(&f);
    let stats_sent = f
        .core
        .xattr_stats()
        .sent
        .load(std::sync::atomic::Ordering::Relaxed);
    for name in [
        &b"security.capability"[..],
        b"security.selinux",
        b"trusted.k",
        b"system.posix_acl_access",
    ] {
        assert_eq!(
            errno_of(f.core.getxattr(e.ino, name, 0)),
            Code::NotSupported
        );
        let set = f.core.setxattr(e.ino, name, b"v", 0, 0);
        assert_eq!(errno_of(set), Code::NotSupported);
        assert_eq!(
            errno_of(f.core.removexattr(e.ino, name)),
            Code::NotSupported
        );
    }
    assert_eq!(sent(&f), before, "no request went to the server");
    let stats = f.core.xattr_stats();
    assert_eq!(stats.local.load(std::sync::atomic::Ordering::Relaxed), 12);
    assert_eq!(
        stats.sent.load(std::sync::atomic::Ordering::Relaxed),
        stats_sent
    );
    // The local answer is the server's own.
    let server = f.core.client.get_xattr(b"f", b"security.capability");
    assert_eq!(server.expect_err("refused").code(), Code::NotSupported);
    f.core.release(o.fh).expect("release");
}

#[test]
fn an_unlinked_open_file_keeps_its_attributes_under_its_hidden_name() {
    let f = fixture();
    let (e, o) = f.create("tmp");
    f.core
        .setxattr(e.ino, b"user.k", b"kept", 0, 0)
        .expect("set");
    f.core.unlink(ROOT_INO, b"tmp").expect("unlink");
    assert_eq!(data(f.core.getxattr(e.ino, b"user.k", 64)), b"kept");
    f.core
        .setxattr(e.ino, b"user.late", b"x", libc::XATTR_CREATE, 0)
        .expect("set after unlink");
    assert_eq!(
        f.core.listxattr(e.ino, 0).expect("list"),
        XattrReply::Size(17)
    );
    f.core.release(o.fh).expect("release");
    assert_eq!(server_names(&f), ["./.shelf-hidden"], "hidden file removed");
}

#[test]
fn a_read_only_mount_refuses_changes_but_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("r"), b"").expect("seed");
    rustix::fs::setxattr(
        dir.path().join("r"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("seed xattr");
    let core = Core::new(
        Loopback::new(dir.path()).expect("loopback"),
        CoreConfig {
            read_only: true,
            ..CoreConfig::default()
        },
    );
    let e = core.lookup(ROOT_INO, b"r").expect("lookup");
    assert_eq!(data(core.getxattr(e.ino, b"user.k", 8)), b"v");
    assert_eq!(
        errno_of(core.setxattr(e.ino, b"user.k", b"w", 0, 0)),
        Code::ReadOnly
    );
    assert_eq!(errno_of(core.removexattr(e.ino, b"user.k")), Code::ReadOnly);
}
