//! Reading and writing: chunks, versions, write-behind and its errors, truncation, reconnects.

use super::*;

#[test]
fn write_then_read_across_chunks_and_on_server_after_flush() {
    let f = fixture();
    let (e, o) = f.create("a.bin");
    assert_eq!(e.attr.kind, FileKind::File);
    assert_eq!(e.attr.perm, 0o644);
    let data = ramp(3 * CHUNK as usize + 100, 0);
    for (i, piece) in data.chunks(1000).enumerate() {
        let n = f.core.write(o.fh, (i * 1000) as u64, piece).expect("write");
        assert_eq!(n as usize, piece.len());
    }
    // Our own writes are visible to our reads before any flush.
    assert_eq!(f.read_all(o.fh, data.len() as u32 + 50), data);
    assert_eq!(
        f.core.getattr(e.ino).expect("getattr").size,
        data.len() as u64
    );
    f.core.flush(o.fh).expect("flush");
    assert_eq!(
        fs::read(f.dir.path().join("a.bin")).expect("on server"),
        data
    );
    // An unaligned read in the middle.
    assert_eq!(
        f.core.read(o.fh, 4000, 5000).expect("read"),
        &data[4000..9000]
    );
    f.core.release(o.fh).expect("release");
}

#[test]
fn change_on_server_is_seen_and_never_mixed() {
    let f = fixture();
    let path = f.dir.path().join("f");
    fs::write(&path, ramp(2 * CHUNK as usize, 0)).expect("seed");
    let e = f.core.lookup(ROOT_INO, b"f").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    // Cache chunk 0 of the old version only.
    assert_eq!(f.core.read(o.fh, 0, 10).expect("read"), ramp(10, 0));
    let new = ramp(2 * CHUNK as usize, 7);
    fs::write(&path, &new).expect("replace content in place");
    // Same inode, new content: with a zero TTL the next read must be all new.
    let got = f.core.read(o.fh, 0, 2 * CHUNK).expect("read");
    assert_eq!(got, new, "a read never mixes two versions");
    f.core.release(o.fh).expect("release");
}

#[test]
fn file_replaced_by_another_inode_is_stale_for_open_handle() {
    let f = fixture();
    fs::write(f.dir.path().join("g"), b"old").expect("seed");
    let e = f.core.lookup(ROOT_INO, b"g").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    fs::write(f.dir.path().join("g.new"), b"brand new").expect("new");
    fs::rename(f.dir.path().join("g.new"), f.dir.path().join("g")).expect("replace");
    assert_eq!(errno_of(f.core.read(o.fh, 0, 100)), Code::Stale);
    // A fresh lookup finds the new file under a new inode.
    let e2 = f.core.lookup(ROOT_INO, b"g").expect("lookup again");
    assert_ne!(e2.ino, e.ino);
    f.core.release(o.fh).expect("release");
}

#[test]
fn file_replaced_after_its_attributes_were_dropped_is_still_stale() {
    // A change notice (push.rs) or a lock's revalidation drops a node's attributes; the node
    // must still refuse to become whatever file has its name now, or an open descriptor would
    // read on in another file (a blend of two versions).
    let f = fixture_with(CoreConfig {
        chunk_size: CHUNK,
        attr_ttl: Duration::from_secs(60),
        ..CoreConfig::default()
    });
    fs::write(f.dir.path().join("g"), ramp(3 * CHUNK as usize, 0)).expect("seed");
    let e = f.core.lookup(ROOT_INO, b"g").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(
        f.core.read(o.fh, 0, CHUNK).expect("read"),
        ramp(CHUNK as usize, 0)
    );
    fs::write(f.dir.path().join("g.new"), ramp(3 * CHUNK as usize, 9)).expect("new");
    fs::rename(f.dir.path().join("g.new"), f.dir.path().join("g")).expect("replace");
    f.core.inodes.invalidate_attr(e.ino);
    assert_eq!(
        errno_of(f.core.read(o.fh, CHUNK as u64, CHUNK)),
        Code::Stale
    );
    assert_eq!(errno_of(f.core.getattr(e.ino)), Code::Stale);
    f.core.release(o.fh).expect("release");
}

#[test]
fn times_set_while_writes_are_buffered_survive_flush() {
    let f = fixture();
    let (e, o) = f.create("t");
    f.core.write(o.fh, 0, &ramp(100, 0)).expect("write");
    let when = Timestamp::new(1_000_000_000, 123_456_789);
    let req = SetAttrRequest {
        mtime: Some(SetTime::At(when)),
        atime: Some(SetTime::At(when)),
        ..Default::default()
    };
    let a = f.core.setattr(e.ino, req).expect("setattr");
    assert_eq!(a.mtime, when);
    f.core.flush(o.fh).expect("flush");
    f.core.release(o.fh).expect("release");
    let after = f.core.getattr(e.ino).expect("getattr");
    assert_eq!(after.mtime, when, "mtime survives the later flush");
    assert_eq!(after.size, 100);
}

#[test]
fn truncate_and_o_trunc() {
    let f = fixture();
    fs::write(f.dir.path().join("z"), ramp(10_000, 0)).expect("seed");
    let e = f.core.lookup(ROOT_INO, b"z").expect("lookup");
    let a = f.core.setattr(
        e.ino,
        SetAttrRequest {
            size: Some(5),
            ..Default::default()
        },
    );
    assert_eq!(a.expect("truncate").size, 5);
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(f.read_all(o.fh, 100), ramp(5, 0));
    f.core.release(o.fh).expect("release");
    let o = f
        .core
        .open(e.ino, libc::O_WRONLY | libc::O_TRUNC)
        .expect("open trunc");
    f.core.release(o.fh).expect("release");
    assert_eq!(fs::metadata(f.dir.path().join("z")).expect("stat").len(), 0);
}

#[test]
fn reads_survive_a_server_restart() {
    let f = fixture();
    fs::write(f.dir.path().join("s"), ramp(3 * CHUNK as usize, 0)).expect("seed");
    let e = f.core.lookup(ROOT_INO, b"s").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDWR).expect("open");
    f.core.transport().hang_up();
    assert_eq!(
        f.core.read(o.fh, 0, 3 * CHUNK).expect("read after hang-up"),
        ramp(3 * CHUNK as usize, 0)
    );
    f.core.write(o.fh, 0, b"xyz").expect("write");
    f.core.transport().hang_up();
    f.core
        .flush(o.fh)
        .expect("flush after hang-up retries the idempotent write");
    assert_eq!(
        &fs::read(f.dir.path().join("s")).expect("server")[..3],
        b"xyz"
    );
    f.core.release(o.fh).expect("release");
}

#[test]
fn server_down_is_an_error_not_a_hang() {
    let f = fixture();
    fs::write(f.dir.path().join("s"), b"x").expect("seed");
    let e = f.core.lookup(ROOT_INO, b"s").expect("lookup");
    f.core.transport().set_down(true);
    f.core.transport().hang_up();
    let code = errno_of(f.core.getattr(e.ino));
    assert_eq!(code, Code::NotConnected);
    f.core.transport().set_down(false);
    assert_eq!(f.core.getattr(e.ino).expect("back").size, 1);
}

#[test]
fn a_failed_write_behind_is_reported_by_flush_not_by_others() {
    let f = fixture();
    let (e, o) = f.create("w");
    let (_, other) = f.create("other");
    let reader = f.core.open(e.ino, libc::O_RDONLY).expect("open to read");
    assert!(!reader.writable && o.writable);
    f.core.write(o.fh, 0, b"doomed").expect("buffered");
    // The file goes away on the server: the buffered write cannot land.
    fs::remove_file(f.dir.path().join("w")).expect("rm on server");
    fs::create_dir(f.dir.path().join("w")).expect("a directory takes its name");
    let dh = f
        .core
        .opendir(ROOT_INO)
        .expect("a listing does not fail for it");
    f.core.releasedir(dh);
    f.core.getattr(e.ino).ok();
    f.core
        .flush(other.fh)
        .expect("another file's flush does not fail for it");
    f.core
        .flush(reader.fh)
        .expect("a read-only handle of the same file neither fails for it nor takes it");
    f.core.release(reader.fh).ok();
    assert!(
        f.core.flush(o.fh).is_err(),
        "the file's own flush reports the failure"
    );
    f.core.release(o.fh).ok();
    f.core.release(other.fh).expect("release");
}

#[test]
fn a_version_change_seen_by_the_core_drops_the_kernels_pages() {
    let f = fixture();
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&dropped);
    f.core
        .set_invalidator(Box::new(move |what| seen.lock().push(what)));
    let path = f.dir.path().join("p");
    fs::write(&path, ramp(2 * CHUNK as usize, 0)).expect("seed");
    let e = f.core.lookup(ROOT_INO, b"p").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(f.read_all(o.fh, 10), ramp(10, 0));
    assert!(dropped.lock().is_empty(), "nothing changed yet");
    // Same file, same size, new bytes: the kernel may hold pages of the old ones.
    fs::write(&path, ramp(2 * CHUNK as usize, 3)).expect("rewrite in place");
    assert_eq!(f.read_all(o.fh, 2 * CHUNK), ramp(2 * CHUNK as usize, 3));
    assert_eq!(
        *dropped.lock(),
        [Invalidate::Pages(e.ino)],
        "the kernel is told to drop the old pages"
    );
    f.core.release(o.fh).expect("release");
    // An open that finds the change itself does not keep the kernel's pages either.
    fs::write(&path, ramp(2 * CHUNK as usize, 5)).expect("rewrite again");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert!(!o.keep_cache);
    f.core.release(o.fh).expect("release");
}

#[test]
fn random_reads_fetch_only_their_bytes() {
    let f = fixture();
    let data = ramp(8 * CHUNK as usize, 0);
    fs::write(f.dir.path().join("r"), &data).expect("seed");
    let e = f.core.lookup(ROOT_INO, b"r").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    for &off in &[
        5 * CHUNK as u64 + 100,
        2 * CHUNK as u64 + 7,
        7 * CHUNK as u64,
    ] {
        let got = f.core.read(o.fh, off, 512).expect("random read");
        assert_eq!(got, &data[off as usize..off as usize + 512]);
    }
    assert_eq!(
        f.core.cache_stats().chunks,
        0,
        "scattered reads fetched no whole chunks"
    );
    // Reads that follow each other are sequential again: chunks (and read-ahead) again.
    assert_eq!(f.core.read(o.fh, 0, 4096).expect("read"), &data[..4096]);
    assert_eq!(
        f.core.read(o.fh, 4096, 4096).expect("read"),
        &data[4096..8192]
    );
    assert!(f.core.cache_stats().chunks >= 1);
    f.core.release(o.fh).expect("release");
}

/// An open of a small file sends the read of its one chunk at once; the first read waits on
/// that request instead of sending its own, and a file closed unread leaves nothing in flight.
#[test]
fn opening_a_small_file_starts_its_read() {
    let f = fixture_with(CoreConfig {
        chunk_size: CHUNK,
        attr_ttl: Duration::from_secs(60),
        ..CoreConfig::default()
    });
    let data = ramp(3000, 0);
    fs::write(f.dir.path().join("small"), &data).expect("seed");
    fs::write(f.dir.path().join("unread"), &data).expect("seed");
    fs::write(f.dir.path().join("large"), ramp(2 * CHUNK as usize, 0)).expect("seed");
    let state = || f.core.transport().pool().state();

    let e = f.core.lookup(ROOT_INO, b"small").expect("lookup");
    let before = state().requests;
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(state().requests - before, 1, "the open sent the read");
    assert_eq!(f.read_all(o.fh, 8192), data);
    assert_eq!(state().requests - before, 1, "the read used it");
    f.core.release(o.fh).expect("release");

    let e = f.core.lookup(ROOT_INO, b"unread").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(state().in_flight, 1);
    f.core.release(o.fh).expect("release");
    assert_eq!(state().in_flight, 0, "closing dropped the unclaimed read");

    // Files of more than one chunk, and files opened for writing, are not fetched at open.
    for (name, flags) in [("large", libc::O_RDONLY), ("small", libc::O_RDWR)] {
        let e = f.core.lookup(ROOT_INO, name.as_bytes()).expect("lookup");
        let before = state().requests;
        let o = f.core.open(e.ino, flags).expect("open");
        assert_eq!(state().requests - before, 0, "{name} {flags:#o}");
        f.core.release(o.fh).expect("release");
    }
}

/// An open whose attributes are too old to skip the close-to-open stat sends the small file's
/// read with it (one round trip for both), by the version known; a file changed meanwhile is
/// read at its new version, never the old one.
#[test]
fn an_open_that_asks_the_server_sends_the_read_with_the_stat() {
    let f = fixture_with(CoreConfig {
        chunk_size: CHUNK,
        attr_ttl: Duration::from_secs(60),
        ..CoreConfig::default()
    });
    let old = ramp(3000, 0);
    let new = ramp(2000, 7);
    fs::write(f.dir.path().join("small"), &old).expect("seed");
    let state = || f.core.transport().pool().state();

    let e = f.core.lookup(ROOT_INO, b"small").expect("lookup");
    std::thread::sleep(Duration::from_millis(30));
    let before = state().requests;
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(state().requests - before, 2, "the read and the stat");
    assert_eq!(f.read_all(o.fh, 8192), old);
    assert_eq!(state().requests - before, 2, "the read used the early one");
    f.core.release(o.fh).expect("release");

    // Changed on the server since: the early read by the old version is not used.
    std::thread::sleep(Duration::from_millis(30));
    fs::write(f.dir.path().join("small"), &new).expect("rewrite on the server");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(f.read_all(o.fh, 8192), new);
    f.core.release(o.fh).expect("release");
    assert_eq!(state().in_flight, 0, "closing dropped the unclaimed read");
}

/// `O_CREAT` without `O_EXCL` of a name another client made after the kernel last looked
/// (so the kernel asks to create it) opens the file and changes nothing: not the file, and
/// not its directory's times, which a create moves in our cache (open(2); ext4 agrees).
#[test]
fn o_creat_of_an_existing_file_changes_nothing() {
    let f = fixture_with(CoreConfig {
        chunk_size: CHUNK,
        attr_ttl: Duration::from_secs(60),
        ..CoreConfig::default()
    });
    let d = f.core.mkdir(ROOT_INO, b"d", 0o755, 0o022).expect("mkdir");
    let old = Timestamp::new(1_262_304_000, 0);
    let set = SetAttrRequest {
        mtime: Some(SetTime::At(old)),
        ..SetAttrRequest::default()
    };
    f.core.setattr(d.ino, set).expect("utimens dir");
    fs::write(f.dir.path().join("d/x"), b"kept").expect("another client's file");
    let before = fs::metadata(f.dir.path().join("d/x")).expect("stat");
    for flags in [libc::O_WRONLY, libc::O_RDWR | libc::O_APPEND] {
        let (e, o) = f
            .core
            .create(d.ino, b"x", 0o100600, 0o022, flags)
            .expect("O_CREAT of an existing file");
        f.core.flush(o.fh).expect("flush");
        f.core.release(o.fh).expect("release");
        assert_eq!(e.attr.size, 4);
        assert_eq!(f.core.getattr(d.ino).expect("stat dir").mtime, old);
        let after = fs::metadata(f.dir.path().join("d/x")).expect("stat");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (after.mtime_nsec(), after.ctime_nsec(), after.mode()),
            (before.mtime_nsec(), before.ctime_nsec(), before.mode())
        );
    }
    let excl = f
        .core
        .create(d.ino, b"x", 0o100600, 0o022, libc::O_WRONLY | libc::O_EXCL);
    assert_eq!(errno_of(excl), Code::Exists);
}

/// Every ioctl is answered ENOTTY, as a local file system answers one it does not know
/// (`isatty()` of a file); an unknown handle is EBADF.
#[test]
fn ioctls_are_not_a_terminals() {
    let f = fixture();
    let (_, o) = f.create("f");
    const TCGETS: u32 = 0x5401;
    const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
    for cmd in [TCGETS, FS_IOC_GETFLAGS] {
        assert_eq!(errno_of(f.core.ioctl(o.fh, cmd)), Code::NotTty);
    }
    f.core.release(o.fh).expect("release");
    assert_eq!(errno_of(f.core.ioctl(o.fh, TCGETS)), Code::BadHandle);
}
