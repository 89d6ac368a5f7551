//! Core tests against a real server over a socket pair (`remote::Loopback`), without FUSE.

use std::fs;
use std::time::Duration;

use shelf_proto::{Attr, Code, FileKind, SetTime, Timestamp};
use tempfile::TempDir;

use super::*;
use shelf_testkit::Loopback;

const CHUNK: u32 = 4096;

/// Byte k of a test file is k mod 251, so a misplaced byte cannot pass.
fn ramp(len: usize, start: usize) -> Vec<u8> {
    (start..start + len).map(|k| (k % 251) as u8).collect()
}

struct Fixture {
    dir: TempDir,
    core: Core<Loopback>,
}

fn fixture_with(cfg: CoreConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let lb = Loopback::new(dir.path()).expect("loopback server starts");
    Fixture {
        core: Core::new(lb, cfg),
        dir,
    }
}

fn fixture() -> Fixture {
    fixture_with(CoreConfig {
        chunk_size: CHUNK,
        cache_bytes: 64 * CHUNK as u64,
        attr_ttl: Duration::ZERO,
        ..CoreConfig::default()
    })
}

fn errno_of<T: std::fmt::Debug>(r: FsResult<T>) -> Code {
    r.expect_err("the operation should fail").code()
}

impl Fixture {
    fn create(&self, name: &str) -> (Entry, Opened) {
        self.create_in(ROOT_INO, name)
    }

    /// Creates and opens `name` read-write in directory `parent`, mode 0644.
    fn create_in(&self, parent: Ino, name: &str) -> (Entry, Opened) {
        self.core
            .create(parent, name.as_bytes(), 0o100644, 0o022, libc::O_RDWR)
            .expect("create")
    }

    fn read_all(&self, fh: Fh, len: u32) -> Vec<u8> {
        self.core.read(fh, 0, len).expect("read")
    }
}

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
fn unlinked_open_file_stays_readable_and_hidden_then_goes() {
    let f = fixture();
    let (e, o) = f.create("tmp");
    f.core.write(o.fh, 0, b"still here").expect("write");
    f.core.unlink(ROOT_INO, b"tmp").expect("unlink");
    assert_eq!(errno_of(f.core.lookup(ROOT_INO, b"tmp")), Code::NotFound);
    assert_eq!(f.read_all(o.fh, 100), b"still here");
    f.core.write(o.fh, 10, b"!").expect("write after unlink");
    assert_eq!(f.read_all(o.fh, 100), b"still here!");
    let dh = f.core.opendir(ROOT_INO).expect("opendir");
    let mut sink = Collect::default();
    f.core.readdir(dh, 0, false, &mut sink).expect("readdir");
    assert_eq!(sink.names(), [".", ".."], "hidden name is not listed");
    f.core.releasedir(dh);
    f.core.release(o.fh).expect("release");
    assert_eq!(server_names(&f), ["./.shelf-hidden"], "hidden file removed");
    f.core.forget(e.ino, 1);
}

impl Fixture {
    /// An editor's save: `doc.tmp` (written on the server) is renamed over `doc`, both
    /// looked up first as the kernel does. Returns the inode `doc` had.
    fn save_by_rename(&self, content: &[u8]) -> Ino {
        fs::write(self.dir.path().join("doc.tmp"), content).expect("seed tmp");
        let old = self.core.lookup(ROOT_INO, b"doc").expect("lookup");
        self.core.lookup(ROOT_INO, b"doc.tmp").expect("lookup tmp");
        self.core
            .rename(ROOT_INO, b"doc.tmp", ROOT_INO, b"doc", 0)
            .expect("rename over");
        assert_eq!(fs::read(self.dir.path().join("doc")).expect("new"), content);
        old.ino
    }
}

#[test]
fn rename_over_open_file_keeps_old_content_for_its_handle() {
    let f = fixture();
    fs::write(f.dir.path().join("doc"), b"version one").expect("seed");
    let e = f.core.lookup(ROOT_INO, b"doc").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    f.save_by_rename(b"version two");
    assert_eq!(f.read_all(o.fh, 100), b"version one");
    f.core.release(o.fh).expect("release");
    assert_eq!(server_names(&f), ["./.shelf-hidden", "./doc"]);
}

/// A program that resolved the name just before an editor's save-by-rename opens the old
/// file, as on a local disk: the kernel still holds the inode and opens it without asking
/// again, and ESTALE (retried once by the kernel) would fail under a burst of saves.
#[test]
fn a_file_renamed_over_stays_openable_until_the_kernel_forgets_it() {
    let f = fixture();
    fs::write(f.dir.path().join("doc"), b"version one").expect("seed");
    let old = f.save_by_rename(b"version two");
    let o = f
        .core
        .open(old, libc::O_RDONLY)
        .expect("open the replaced file");
    assert_eq!(f.read_all(o.fh, 100), b"version one");
    f.core.release(o.fh).expect("release");
    assert_eq!(server_names(&f), ["./.shelf-hidden", "./doc"]);

    // Not opened again: the kernel's forget removes the kept name. It was looked up twice
    // (as doc.tmp, then as doc): kept until both are forgotten.
    let second = f.save_by_rename(b"version three");
    assert_eq!(server_names(&f).len(), 3, "kept: {:?}", server_names(&f));
    f.core.forget(second, 1);
    assert_eq!(server_names(&f).len(), 3);
    f.core.forget(second, 1);
    assert_eq!(server_names(&f), ["./.shelf-hidden", "./doc"]);

    // And at the end of the mount nothing kept is left.
    f.save_by_rename(b"version four");
    f.core.shutdown();
    assert_eq!(server_names(&f), ["./.shelf-hidden", "./doc"]);
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

#[derive(Default)]
struct Collect {
    entries: Vec<(Ino, u64, Vec<u8>, Attr)>,
    room: Option<usize>,
}

impl Collect {
    fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.2).into_owned())
            .collect()
    }
}

impl DirSink for Collect {
    fn add(&mut self, ino: Ino, offset: u64, name: &[u8], attr: &Attr) -> bool {
        if self.room.is_some_and(|r| self.entries.len() >= r) {
            return true;
        }
        self.entries.push((ino, offset, name.to_vec(), *attr));
        false
    }
}

#[test]
fn readdirplus_counts_only_accepted_entries_and_resumes() {
    let f = fixture();
    for i in 0..10 {
        fs::write(f.dir.path().join(format!("e{i}")), vec![0; i]).expect("seed");
    }
    let dh = f.core.opendir(ROOT_INO).expect("opendir");
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let mut page = Collect {
            room: Some(4),
            ..Default::default()
        };
        f.core
            .readdir(dh, offset, true, &mut page)
            .expect("readdir");
        let Some(last) = page.entries.last() else {
            break;
        };
        offset = last.1;
        all.extend(page.entries);
    }
    f.core.releasedir(dh);
    let names: Vec<String> = all
        .iter()
        .map(|e| String::from_utf8_lossy(&e.2).into_owned())
        .collect();
    let mut want = vec![".".to_string(), "..".to_string()];
    want.extend((0..10).map(|i| format!("e{i}")));
    assert_eq!(names, want);
    for (ino, _, name, attr) in &all[2..] {
        assert_eq!(
            f.core.inodes.lookups(*ino),
            Some(1),
            "{:?} looked up once",
            name
        );
        let i: usize = String::from_utf8_lossy(&name[1..]).parse().expect("index");
        assert_eq!(attr.size, i as u64, "attributes come with the listing");
    }
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

/// Every path in the library, sorted, relative as `./a/b`.
fn server_names(f: &Fixture) -> Vec<String> {
    fn walk(dir: &std::path::Path, rel: &str, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).expect("ls") {
            let e = e.expect("entry");
            let name = format!("{rel}/{}", e.file_name().to_string_lossy());
            if e.file_type().expect("type").is_dir() {
                walk(&e.path(), &name, out);
            }
            out.push(name);
        }
    }
    let mut out = Vec::new();
    walk(f.dir.path(), ".", &mut out);
    out.sort();
    out
}

#[test]
fn directory_of_an_unlinked_open_file_can_be_removed_and_renamed() {
    let f = fixture();
    let a = f.core.mkdir(ROOT_INO, b"a", 0o755, 0).expect("mkdir a");
    let (_, o) = f.create_in(a.ino, "d");
    f.core.write(o.fh, 0, b"kept").expect("write");
    f.core.unlink(a.ino, b"d").expect("unlink");
    f.core
        .rmdir(ROOT_INO, b"a")
        .expect("rmdir works: the open file is not in it");
    assert_eq!(f.read_all(o.fh, 10), b"kept");
    f.core.release(o.fh).expect("release");

    let b = f.core.mkdir(ROOT_INO, b"b", 0o755, 0).expect("mkdir b");
    let (_, o) = f.create_in(b.ino, "c");
    f.core.unlink(b.ino, b"c").expect("unlink");
    f.core
        .rename(ROOT_INO, b"b", ROOT_INO, b"c", 0)
        .expect("rename the directory");
    f.core
        .write(o.fh, 0, b"still")
        .expect("write after the directory moved");
    f.core.flush(o.fh).expect("flush");
    assert_eq!(f.read_all(o.fh, 10), b"still");
    f.core.release(o.fh).expect("release");
    assert_eq!(
        server_names(&f),
        ["./.shelf-hidden", "./c"],
        "nothing left behind"
    );
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
        .set_page_invalidator(Box::new(move |ino| seen.lock().push(ino)));
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
        [e.ino],
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
