//! Name operations and what they make stale: errors, read-only mounts, renames, links,
//! directory times and link counts, listings that answer for missing names.

use super::*;

#[test]
fn errors_map_to_the_right_errno() {
    let f = fixture();
    assert_eq!(errno_of(f.core.lookup(ROOT_INO, b"nope")), Code::NotFound);
    let d = f.core.mkdir(ROOT_INO, b"d", 0o755, 0).expect("mkdir");
    assert_eq!(d.attr.kind, FileKind::Dir);
    fs::write(f.dir.path().join("d/x"), b"").expect("seed");
    assert_eq!(errno_of(f.core.rmdir(ROOT_INO, b"d")), Code::NotEmpty);
    assert_eq!(
        errno_of(f.core.mkdir(ROOT_INO, b"d", 0o755, 0)),
        Code::Exists
    );
    assert_eq!(
        errno_of(f.core.lookup(ROOT_INO, &[b'n'; 256])),
        Code::NameTooLong
    );
    let fifo = libc::S_IFIFO | 0o644;
    assert_eq!(
        errno_of(f.core.mknod(ROOT_INO, b"p", fifo, 0)),
        Code::NotPermitted
    );
    let chown = SetAttrRequest {
        uid: Some(12345),
        ..Default::default()
    };
    assert_eq!(errno_of(f.core.setattr(d.ino, chown)), Code::NotPermitted);
    let (_, o) = f.create("c");
    let excl = f
        .core
        .create(ROOT_INO, b"c", 0o100644, 0, libc::O_RDWR | libc::O_EXCL);
    assert_eq!(errno_of(excl), Code::Exists);
    f.core.release(o.fh).expect("release");
    let noreplace = f
        .core
        .rename(ROOT_INO, b"c", ROOT_INO, b"d", libc::RENAME_NOREPLACE);
    assert_eq!(errno_of(noreplace), Code::Exists);
}

#[test]
fn read_only_mount_refuses_changes() {
    let f = fixture_with(CoreConfig {
        read_only: true,
        chunk_size: CHUNK,
        ..CoreConfig::default()
    });
    fs::write(f.dir.path().join("r"), b"ro").expect("seed");
    let e = f.core.lookup(ROOT_INO, b"r").expect("lookup");
    assert_eq!(
        errno_of(f.core.mkdir(ROOT_INO, b"d", 0o755, 0)),
        Code::ReadOnly
    );
    assert_eq!(errno_of(f.core.open(e.ino, libc::O_WRONLY)), Code::ReadOnly);
    assert_eq!(errno_of(f.core.unlink(ROOT_INO, b"r")), Code::ReadOnly);
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("reading is fine");
    assert_eq!(f.read_all(o.fh, 10), b"ro");
    f.core.release(o.fh).expect("release");
}

#[test]
fn renamed_directory_moves_its_open_descendants() {
    let f = fixture();
    let d = f.core.mkdir(ROOT_INO, b"a", 0o755, 0).expect("mkdir");
    let (e, o) = f.create_in(d.ino, "f");
    f.core.write(o.fh, 0, b"hello").expect("write");
    f.core
        .rename(ROOT_INO, b"a", ROOT_INO, b"b", 0)
        .expect("rename dir");
    f.core
        .write(o.fh, 5, b" world")
        .expect("write after rename");
    f.core.flush(o.fh).expect("flush");
    assert_eq!(
        fs::read(f.dir.path().join("b/f")).expect("moved"),
        b"hello world"
    );
    assert_eq!(f.core.getattr(e.ino).expect("getattr").size, 11);
    f.core.release(o.fh).expect("release");
}

#[test]
fn hard_and_symbolic_links() {
    let f = fixture();
    let (e, o) = f.create("orig");
    f.core.write(o.fh, 0, b"linked").expect("write");
    f.core.release(o.fh).expect("release");
    let l = f.core.link(e.ino, ROOT_INO, b"hard").expect("link");
    assert_eq!(l.attr.nlink, 2);
    assert_eq!(l.ino, e.ino, "both names are one inode");
    assert_eq!(f.core.getattr(e.ino).expect("getattr").nlink, 2);
    let s = f.core.symlink(ROOT_INO, b"soft", b"orig").expect("symlink");
    assert_eq!(s.attr.kind, FileKind::Symlink);
    assert_eq!(f.core.readlink(s.ino).expect("readlink"), b"orig");
    assert_eq!(
        fs::read(f.dir.path().join("hard")).expect("hard"),
        b"linked"
    );
}

#[test]
fn directory_times_set_before_a_change_inside_are_not_served_stale() {
    // rsync -a: set a directory's mtime, then rename a temporary into it, then stat it to
    // check the mtime; it must see the server's new mtime, not our cached copy.
    let f = fixture_with(CoreConfig {
        chunk_size: CHUNK,
        attr_ttl: Duration::from_secs(60),
        ..CoreConfig::default()
    });
    let d = f.core.mkdir(ROOT_INO, b"d", 0o755, 0).expect("mkdir");
    let (_, o) = f.create_in(d.ino, ".tmp");
    f.core.release(o.fh).expect("release");
    let old = Timestamp::new(1_262_304_000, 0);
    let set = SetAttrRequest {
        mtime: Some(SetTime::At(old)),
        ..Default::default()
    };
    assert_eq!(f.core.setattr(d.ino, set).expect("utimens").mtime, old);
    f.core
        .rename(d.ino, b".tmp", d.ino, b"f", 0)
        .expect("rename");
    let server = fs::metadata(f.dir.path().join("d")).expect("stat on server");
    let seen = f.core.getattr(d.ino).expect("getattr");
    let server_secs = std::os::unix::fs::MetadataExt::mtime(&server);
    assert!(
        (seen.mtime.secs - server_secs).abs() <= 1,
        "{seen:?} vs {server_secs}"
    );
    assert_ne!(seen.mtime, old, "the rename moved the directory's mtime");
}

#[test]
fn directory_link_counts_follow_this_mounts_changes_without_asking() {
    let f = fixture_with(CoreConfig {
        chunk_size: CHUNK,
        attr_ttl: Duration::from_secs(60),
        ..CoreConfig::default()
    });
    let server_nlink = |p: &str| {
        std::os::unix::fs::MetadataExt::nlink(&fs::metadata(f.dir.path().join(p)).expect("stat"))
            as u32
    };
    let a = f.core.mkdir(ROOT_INO, b"a", 0o755, 0).expect("mkdir");
    let b = f.core.mkdir(ROOT_INO, b"b", 0o755, 0).expect("mkdir");
    f.core.getattr(a.ino).expect("cache a");
    f.core.getattr(b.ino).expect("cache b");
    f.core.mkdir(a.ino, b"x", 0o755, 0).expect("mkdir a/x");
    f.core.mkdir(a.ino, b"y", 0o755, 0).expect("mkdir a/y");
    f.core
        .rename(a.ino, b"x", b.ino, b"x", 0)
        .expect("mv a/x b/x");
    f.core
        .rename(a.ino, b"y", b.ino, b"x", libc::RENAME_NOREPLACE)
        .expect_err("exists");
    f.core.rmdir(b.ino, b"x").expect("rmdir b/x");
    f.core.mkdir(b.ino, b"z", 0o755, 0).expect("mkdir b/z");
    f.core
        .rename(a.ino, b"y", b.ino, b"z", 0)
        .expect("mv a/y over empty b/z");
    assert_eq!(f.core.getattr(a.ino).expect("a").nlink, server_nlink("a"));
    assert_eq!(f.core.getattr(b.ino).expect("b").nlink, server_nlink("b"));
}

/// A directory listed or made within the TTL answers a lookup of a missing name itself (the
/// kernel looks up every name it is about to create); changes of this mount keep it whole,
/// and others' changes show once the TTL has passed.
#[test]
fn fresh_listings_answer_missing_names_without_asking() {
    let ttl = Duration::from_millis(300);
    let f = fixture_with(CoreConfig {
        chunk_size: CHUNK,
        cache_bytes: 64 * CHUNK as u64,
        attr_ttl: ttl,
        ..CoreConfig::default()
    });
    let d = f.core.mkdir(ROOT_INO, b"d", 0o755, 0o022).expect("mkdir");
    // Behind the mount's back: within the TTL, the mount's empty listing answers.
    fs::write(f.dir.path().join("d/theirs"), b"x").expect("write on the server");
    assert_eq!(errno_of(f.core.lookup(d.ino, b"theirs")), Code::NotFound);

    // This mount's own additions are found at once.
    let (e, o) = f.create_in(d.ino, "mine");
    f.core.release(o.fh).expect("release");
    assert_eq!(f.core.lookup(d.ino, b"mine").expect("lookup").ino, e.ino);
    f.core.symlink(d.ino, b"sym", b"mine").expect("symlink");
    f.core.lookup(d.ino, b"sym").expect("lookup symlink");
    f.core.link(e.ino, d.ino, b"hard").expect("link");
    f.core.lookup(d.ino, b"hard").expect("lookup link");
    f.core.mkdir(d.ino, b"sub", 0o755, 0o022).expect("mkdir");
    f.core.lookup(d.ino, b"sub").expect("lookup sub");
    f.core
        .rename(d.ino, b"mine", d.ino, b"moved", 0)
        .expect("rename");
    f.core.lookup(d.ino, b"moved").expect("lookup the new name");
    assert_eq!(errno_of(f.core.lookup(d.ino, b"mine")), Code::NotFound);

    // A failed change whose outcome the listing cannot know makes it ask again.
    let clash = f.core.create(
        d.ino,
        b"theirs",
        0o100644,
        0o022,
        libc::O_RDWR | libc::O_EXCL,
    );
    assert_eq!(errno_of(clash), Code::Exists);
    f.core.lookup(d.ino, b"theirs").expect("asked the server");

    // A listing is complete too; after the TTL the server is asked again.
    let fh = f.core.opendir(d.ino).expect("opendir");
    f.core.releasedir(fh);
    fs::write(f.dir.path().join("d/later"), b"x").expect("write on the server");
    assert_eq!(errno_of(f.core.lookup(d.ino, b"later")), Code::NotFound);
    std::thread::sleep(ttl);
    f.core.lookup(d.ino, b"later").expect("found after the TTL");
}

/// The names the mount keeps for itself are absent to lookups (as in listings) and cannot be
/// made; a subdirectory's `.shelf-hidden` is the library's own.
#[test]
fn the_implementations_own_names_are_absent_and_cannot_be_made() {
    let f = fixture();
    fs::create_dir(f.dir.path().join(".shelf-hidden")).expect("mkdir");
    fs::write(f.dir.path().join(".shelf-put-0011223344556677"), b"x").expect("write");
    fs::create_dir(f.dir.path().join("d")).expect("mkdir d");
    fs::write(f.dir.path().join("d/.shelf-hidden"), b"theirs").expect("write");
    let d = f.core.lookup(ROOT_INO, b"d").expect("lookup d");
    for (dir, name) in [
        (ROOT_INO, &b".shelf-hidden"[..]),
        (ROOT_INO, b".shelf-put-0011223344556677"),
        (d.ino, b".shelf-hidden-1"),
    ] {
        assert_eq!(errno_of(f.core.lookup(dir, name)), Code::NotFound);
        assert_eq!(errno_of(f.core.unlink(dir, name)), Code::NotFound);
        assert_eq!(
            errno_of(f.core.mkdir(dir, name, 0o755, 0o022)),
            Code::NotPermitted
        );
        assert_eq!(
            errno_of(f.core.create(dir, name, 0o100644, 0o022, libc::O_WRONLY)),
            Code::NotPermitted
        );
        assert_eq!(
            errno_of(f.core.symlink(dir, name, b"x")),
            Code::NotPermitted
        );
        assert_eq!(
            errno_of(f.core.rename(ROOT_INO, b"d", dir, name, 0)),
            Code::NotPermitted
        );
    }
    let theirs = f
        .core
        .lookup(d.ino, b".shelf-hidden")
        .expect("the library's own");
    assert_eq!(theirs.attr.size, 6);
    assert!(f.dir.path().join(".shelf-hidden").is_dir());
}
