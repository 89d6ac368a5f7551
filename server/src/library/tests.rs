use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use proptest::prelude::*;
use shelf_proto::{Frame, Reply};

use super::*;
use rustix::fs::XattrFlags;
use shelf_proto::xattr;

fn p(s: &[u8]) -> RelPath {
    RelPath::from_bytes(s).expect("test path is valid")
}

/// A library in a temp dir, with a sibling `outside/` holding a sentinel the library must
/// never reach.
struct Fixture {
    tmp: tempfile::TempDir,
    lib: Library,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("temp dir");
        fs::create_dir(tmp.path().join("lib")).expect("mkdir lib");
        fs::create_dir(tmp.path().join("outside")).expect("mkdir outside");
        fs::write(tmp.path().join("outside/secret"), b"sentinel").expect("sentinel");
        fs::set_permissions(
            tmp.path().join("outside/secret"),
            fs::Permissions::from_mode(0o644),
        )
        .expect("chmod sentinel");
        let lib = Library::open(&tmp.path().join("lib")).expect("open library");
        Fixture { tmp, lib }
    }

    fn root(&self) -> std::path::PathBuf {
        self.tmp.path().join("lib")
    }

    fn outside(&self) -> std::path::PathBuf {
        self.tmp.path().join("outside")
    }

    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(self.outside())
            .expect("read outside")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["secret"], "outside dir gained or lost entries");
        let secret = self.outside().join("secret");
        assert_eq!(fs::read(&secret).expect("sentinel"), b"sentinel");
        let perm = fs::metadata(&secret).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(perm, 0o644, "sentinel mode changed");
    }
}

fn ramp(n: usize) -> Vec<u8> {
    (0..n).map(|k| (k % 251) as u8).collect()
}

#[test]
fn attr_wire_len_matches_proto() {
    let attr = Library::open(Path::new("/"))
        .expect("open /")
        .stat(&RelPath::root())
        .expect("stat /");
    let entry = DirEntry {
        name: b"abc".to_vec(),
        attr,
    };
    let one = Frame::new(
        1,
        Reply::Listing {
            entries: vec![entry],
            more: false,
        },
    )
    .to_bytes(1 << 20)
    .expect("encodes");
    // header + count + (len + name + attr) + more
    assert_eq!(one.len(), 16 + 4 + 4 + 3 + ATTR_WIRE_LEN + 1);
}

#[test]
fn create_write_read_stat() {
    let f = Fixture::new();
    let a = f.lib.create(&p(b"a.txt"), 0o640, true).expect("create");
    assert_eq!(a.kind, FileKind::File);
    assert_eq!(a.perm, 0o640, "exact perm, server umask undone");
    assert_eq!(a.size, 0);
    let data = ramp(100_000);
    let a = f.lib.write(&p(b"a.txt"), 10, &data).expect("write");
    assert_eq!(a.size, 100_010);
    let (attr, got) = f.lib.read(&p(b"a.txt"), 10, 200_000).expect("read");
    assert_eq!(got, data, "short only at end of file");
    assert_eq!(attr.size, 100_010);
    let (_, got) = f.lib.read(&p(b"a.txt"), 0, 5).expect("read head");
    assert_eq!(got, [0; 5]);
    let (_, got) = f.lib.read(&p(b"a.txt"), 1 << 40, 5).expect("read past end");
    assert!(got.is_empty());
    let st = f.lib.stat(&p(b"a.txt")).expect("stat");
    let meta = fs::metadata(f.root().join("a.txt")).expect("std stat");
    assert_eq!(st.ino, meta.ino());
    assert_eq!(st.mtime.secs, meta.mtime());
    assert_eq!(st.mtime.nanos as i64, meta.mtime_nsec());
    assert_eq!(st.blocks, meta.blocks());
    assert_eq!(
        f.lib
            .create(&p(b"a.txt"), 0o600, true)
            .expect_err("exclusive")
            .code,
        Code::Exists
    );
    let again = f
        .lib
        .create(&p(b"a.txt"), 0o600, false)
        .expect("non-exclusive");
    assert_eq!(again.size, 100_010, "existing file left as it is");
    assert_eq!(again.perm, 0o640);
    let err = f.lib.read(&p(b"nope"), 0, 1).expect_err("missing");
    assert_eq!(err.code, Code::NotFound);
    assert!(
        err.message.contains("nope"),
        "message names the path: {err}"
    );
    assert_eq!(
        f.lib
            .write(&p(b"nope"), 0, b"x")
            .expect_err("write does not create")
            .code,
        Code::NotFound
    );
}

#[test]
fn read_and_write_refuse_directories_and_fifos() {
    let f = Fixture::new();
    f.lib.mkdir(&p(b"d"), 0o755).expect("mkdir");
    assert_eq!(
        f.lib.read(&p(b"d"), 0, 1).expect_err("dir").code,
        Code::IsDir
    );
    assert_eq!(
        f.lib.write(&p(b"d"), 0, b"x").expect_err("dir").code,
        Code::IsDir
    );
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        f.root().join("fifo"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .expect("mkfifo");
    assert_eq!(
        f.lib.read(&p(b"fifo"), 0, 1).expect_err("fifo").code,
        Code::Invalid
    );
    assert_eq!(f.lib.stat(&p(b"fifo")).expect("stat").kind, FileKind::Fifo);
}

#[test]
fn set_attr_size_perm_times() {
    let f = Fixture::new();
    f.lib.create(&p(b"f"), 0o644, true).expect("create");
    f.lib.write(&p(b"f"), 0, &ramp(1000)).expect("write");
    let t = Timestamp::new(1_000_000_000, 123_456_789);
    let a = f
        .lib
        .set_attr(
            &p(b"f"),
            &SetAttrs {
                perm: Some(0o600),
                size: Some(10),
                atime: Some(SetTime::At(t)),
                mtime: Some(SetTime::At(t)),
            },
        )
        .expect("setattr");
    assert_eq!((a.size, a.perm, a.mtime, a.atime), (10, 0o600, t, t));
    let a = f
        .lib
        .set_attr(
            &p(b"f"),
            &SetAttrs {
                mtime: Some(SetTime::Now),
                ..SetAttrs::default()
            },
        )
        .expect("touch");
    assert!(a.mtime > t);
    assert_eq!(a.atime, t, "atime omitted");
    let err = f
        .lib
        .set_attr(
            &p(b"f"),
            &SetAttrs {
                perm: Some(0o4755),
                ..SetAttrs::default()
            },
        )
        .expect_err("setuid refused");
    assert_eq!(err.code, Code::NotPermitted);
    let created = f.lib.create(&p(b"g"), 0o6777, true).expect("create masks");
    assert_eq!(created.perm, 0o777);
}

#[test]
fn directories_links_and_renames() {
    let f = Fixture::new();
    let d = f.lib.mkdir(&p(b"d"), 0o750).expect("mkdir");
    assert_eq!((d.kind, d.perm), (FileKind::Dir, 0o750));
    assert_eq!(
        f.lib.mkdir(&p(b"d"), 0o750).expect_err("again").code,
        Code::Exists
    );
    for name in [&b"b"[..], b"a", b"c", b".shelf-put-0011223344556677"] {
        f.lib
            .create(&p(&[&b"d/"[..], name].concat()), 0o644, true)
            .expect("create");
    }
    let (entries, more) = f.lib.list(&p(b"d"), b"", 0, 1 << 20).expect("list");
    let names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert!(!more);
    let (entries, more) = f.lib.list(&p(b"d"), b"a", 1, 1 << 20).expect("page");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, b"b");
    assert!(more);
    let (entries, more) = f.lib.list(&p(b"d"), b"b", 1, 1 << 20).expect("page");
    assert_eq!((entries[0].name.as_slice(), more), (&b"c"[..], false));
    // A payload budget that fits exactly two entries.
    let budget = (5 + 2 * (4 + 1 + ATTR_WIRE_LEN)) as u32;
    let (entries, more) = f.lib.list(&p(b"d"), b"", 0, budget).expect("budget");
    assert_eq!((entries.len(), more), (2, true));
    assert_eq!(
        f.lib
            .list(&p(b"d/a"), b"", 0, 1 << 20)
            .expect_err("file")
            .code,
        Code::NotDir
    );

    assert_eq!(
        f.lib.rmdir(&p(b"d")).expect_err("not empty").code,
        Code::NotEmpty
    );
    f.lib.rename(&p(b"d/a"), &p(b"top"), 0).expect("rename");
    assert_eq!(
        f.lib
            .rename(&p(b"d/b"), &p(b"top"), rename_flags::NOREPLACE)
            .expect_err("noreplace")
            .code,
        Code::Exists
    );
    f.lib.write(&p(b"top"), 0, b"TOP").expect("write");
    f.lib
        .rename(&p(b"d/b"), &p(b"top"), rename_flags::EXCHANGE)
        .expect("exchange");
    assert_eq!(f.lib.read(&p(b"d/b"), 0, 10).expect("read").1, b"TOP");
    assert_eq!(
        f.lib
            .rename(&p(b"top"), &p(b"x"), 0x80)
            .expect_err("bad flags")
            .code,
        Code::Invalid
    );

    let l = f.lib.link(&p(b"top"), &p(b"hard")).expect("link");
    assert_eq!(l.nlink, 2);
    let s = f.lib.symlink(&p(b"sym"), b"d/b").expect("symlink");
    assert_eq!(s.kind, FileKind::Symlink);
    assert_eq!(f.lib.readlink(&p(b"sym")).expect("readlink"), b"d/b");
    assert_eq!(
        f.lib.stat(&p(b"sym")).expect("lstat").kind,
        FileKind::Symlink
    );
    assert_eq!(f.lib.read(&p(b"sym"), 0, 10).expect("follows").1, b"TOP");

    f.lib.unlink(&p(b"hard")).expect("unlink");
    for n in [&b"d/b"[..], b"d/c", b"d/.shelf-put-0011223344556677"] {
        f.lib.unlink(&p(n)).expect("unlink");
    }
    f.lib.rmdir(&p(b"d")).expect("rmdir");
    assert_eq!(f.lib.stat(&p(b"d")).expect_err("gone").code, Code::NotFound);
    assert_eq!(
        f.lib.unlink(&RelPath::root()).expect_err("root").code,
        Code::Busy
    );
    assert_eq!(
        f.lib.rmdir(&RelPath::root()).expect_err("root").code,
        Code::Busy
    );
    assert_eq!(
        f.lib.stat(&RelPath::root()).expect("root").kind,
        FileKind::Dir
    );
    f.lib.fsync(&p(b"top"), false).expect("fsync");
    f.lib.fsync(&RelPath::root(), true).expect("fsync dir");
    let st = f.lib.statfs().expect("statfs");
    assert!(st.bsize > 0 && st.namelen >= 255);
}

#[test]
fn non_utf8_names_round_trip() {
    let f = Fixture::new();
    let name: &[u8] = b"caf\xe9 \xff\xfe";
    f.lib.create(&p(name), 0o644, true).expect("create");
    assert!(f.root().join(std::ffi::OsStr::from_bytes(name)).exists());
    let (entries, _) = f.lib.list(&RelPath::root(), b"", 0, 1 << 20).expect("list");
    assert_eq!(entries[0].name, name);
    f.lib.symlink(&p(b"l"), b"\xff/../x").expect("symlink");
    assert_eq!(f.lib.readlink(&p(b"l")).expect("readlink"), b"\xff/../x");
}

#[test]
fn symlinks_out_of_the_library_are_refused() {
    let f = Fixture::new();
    std::os::unix::fs::symlink("/etc", f.root().join("etc")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", f.root().join("passwd")).expect("symlink");
    std::os::unix::fs::symlink("../outside/secret", f.root().join("rel")).expect("symlink");
    std::os::unix::fs::symlink("../outside", f.root().join("out")).expect("symlink");
    fs::create_dir(f.root().join("sub")).expect("mkdir");
    // A chain: each hop stays inside, the last one leaves.
    std::os::unix::fs::symlink("hop2", f.root().join("sub/hop1")).expect("symlink");
    std::os::unix::fs::symlink("../rel", f.root().join("sub/hop2")).expect("symlink");
    std::os::unix::fs::symlink("../../..", f.root().join("sub/up")).expect("symlink");

    for path in [
        &b"etc/passwd"[..],
        b"passwd",
        b"rel",
        b"sub/hop1",
        b"out/secret",
        b"sub/up/etc/passwd",
    ] {
        let err = f.lib.read(&p(path), 0, 100).expect_err("escape refused");
        assert_eq!(err.code, Code::Loop, "{err}");
        assert!(err.message.contains("escapes the library"), "{err}");
        let err = f
            .lib
            .write(&p(path), 0, b"pwned")
            .expect_err("escape refused");
        assert_eq!(err.code, Code::Loop, "{err}");
        assert!(f.lib.create(&p(path), 0o644, false).is_err());
        assert!(f
            .lib
            .set_attr(
                &p(path),
                &SetAttrs {
                    perm: Some(0o777),
                    ..SetAttrs::default()
                }
            )
            .is_err());
        assert!(f
            .lib
            .set_attr(
                &p(path),
                &SetAttrs {
                    size: Some(0),
                    ..SetAttrs::default()
                }
            )
            .is_err());
        assert!(f.lib.fsync(&p(path), false).is_err());
    }
    assert_eq!(
        f.lib
            .list(&p(b"etc"), b"", 0, 1 << 20)
            .expect_err("list")
            .code,
        Code::Loop
    );
    assert_eq!(
        f.lib
            .list(&p(b"out"), b"", 0, 1 << 20)
            .expect_err("list")
            .code,
        Code::Loop
    );
    // Changing the tree through a symlinked parent that leaves is refused too.
    assert!(f.lib.create(&p(b"out/new"), 0o644, true).is_err());
    assert!(f.lib.mkdir(&p(b"out/newdir"), 0o755).is_err());
    assert!(f.lib.unlink(&p(b"out/secret")).is_err());
    assert!(f.lib.rename(&p(b"out/secret"), &p(b"stolen"), 0).is_err());
    assert!(f.lib.link(&p(b"out/secret"), &p(b"stolen")).is_err());
    assert!(f.lib.symlink(&p(b"out/l"), b"x").is_err());
    assert!(f.lib.put_begin(&p(b"out/p"), 0o644).is_err());
    // The links themselves are still visible and removable.
    assert_eq!(
        f.lib.stat(&p(b"etc")).expect("lstat").kind,
        FileKind::Symlink
    );
    assert_eq!(f.lib.readlink(&p(b"etc")).expect("readlink"), b"/etc");
    // A hard link to a symlink links the symlink, not its target.
    let l = f.lib.link(&p(b"rel"), &p(b"rel2")).expect("link symlink");
    assert_eq!(l.kind, FileKind::Symlink);
    f.assert_outside_untouched();
}

#[test]
fn inside_symlinks_are_followed() {
    let f = Fixture::new();
    f.lib.mkdir(&p(b"a"), 0o755).expect("mkdir");
    f.lib.create(&p(b"a/f"), 0o644, true).expect("create");
    std::os::unix::fs::symlink("../a/f", f.root().join("a/self")).expect("symlink");
    std::os::unix::fs::symlink("a", f.root().join("dirlink")).expect("symlink");
    f.lib
        .write(&p(b"a/self"), 0, b"via link")
        .expect("write via link");
    assert_eq!(
        f.lib.read(&p(b"dirlink/f"), 0, 100).expect("read").1,
        b"via link"
    );
    let (entries, _) = f
        .lib
        .list(&p(b"dirlink"), b"", 0, 1 << 20)
        .expect("list via link");
    assert_eq!(entries.len(), 2);
}

#[test]
fn put_commit_and_abort() {
    let f = Fixture::new();
    f.lib.mkdir(&p(b"d"), 0o755).expect("mkdir");
    f.lib.create(&p(b"d/file"), 0o644, true).expect("create");
    f.lib.write(&p(b"d/file"), 0, b"old").expect("write");
    let temp = f.lib.put_begin(&p(b"d/file"), 0o600).expect("begin");
    let name = temp.file_name().to_vec();
    assert!(name.starts_with(PUT_PREFIX) && name.len() == PUT_PREFIX.len() + 16);
    assert!(temp.as_bytes().starts_with(b"d/"));
    let (entries, _) = f.lib.list(&p(b"d"), b"", 0, 1 << 20).expect("list");
    assert_eq!(entries.len(), 1, "temporary hidden");
    f.lib.write(&temp, 0, b"new content").expect("write temp");
    assert_eq!(f.lib.read(&p(b"d/file"), 0, 100).expect("old").1, b"old");
    let t = Timestamp::new(1_500_000_000, 5);
    let a = f
        .lib
        .put_commit(&temp, &p(b"d/file"), Some(t))
        .expect("commit");
    assert_eq!((a.size, a.mtime, a.perm), (11, t, 0o600));
    assert_eq!(
        f.lib.read(&p(b"d/file"), 0, 100).expect("new").1,
        b"new content"
    );
    assert_eq!(
        f.lib.stat(&temp).expect_err("temp gone").code,
        Code::NotFound
    );

    let temp = f.lib.put_begin(&p(b"d/other"), 0o644).expect("begin");
    f.lib.put_abort(&temp).expect("abort");
    assert_eq!(
        fs::read_dir(f.root().join("d")).expect("readdir").count(),
        1
    );

    let temp = f.lib.put_begin(&p(b"d/x"), 0o644).expect("begin");
    assert_eq!(
        f.lib
            .put_commit(&temp, &p(b"x"), None)
            .expect_err("other dir")
            .code,
        Code::Invalid
    );
    assert_eq!(
        f.lib
            .put_commit(&p(b"d/file"), &p(b"d/y"), None)
            .expect_err("not a temp")
            .code,
        Code::Invalid
    );
    assert_eq!(
        f.lib.put_abort(&p(b"d/file")).expect_err("not a temp").code,
        Code::Invalid
    );
    assert!(
        f.lib.stat(&p(b"d/file")).is_ok(),
        "abort refused to remove a normal file"
    );
}

#[test]
fn hostile_names_never_reach_the_library() {
    let long = vec![b'n'; 256];
    for bad in [&b"../x"[..], b"/etc/passwd", b"a\0b", b"a/./b", &long] {
        assert!(RelPath::from_bytes(bad).is_err());
    }
    let f = Fixture::new();
    // 255 bytes is fine; the kernel agrees.
    let name = vec![b'n'; 255];
    f.lib.create(&p(&name), 0o644, true).expect("255-byte name");
}

/// One step of a random walk over the library; indices pick paths from a small pool.
#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Write(usize),
    Read(usize),
    Truncate(usize),
    Chmod(usize),
    Mkdir(usize),
    Unlink(usize),
    Rmdir(usize),
    Rename(usize, usize),
    Link(usize, usize),
    Symlink(usize, usize),
    List(usize),
    Put(usize),
}

const COMPONENTS: &[&[u8]] = &[b"a", b"b", b"..", b".", b"link", b"out", b"up", b"abs"];
const TARGETS: &[&[u8]] = &[
    b"..",
    b"../..",
    b"../outside",
    b"../outside/secret",
    b"/etc",
    b"/",
    b"a",
    b"a/b",
    b"link/..",
    b"up/up",
    b".",
];

fn arb_path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(COMPONENTS), 0..4).prop_map(|c| c.join(&b'/'))
}

fn arb_op() -> impl Strategy<Value = Op> {
    let i = 0..16usize;
    prop_oneof![
        i.clone().prop_map(Op::Create),
        i.clone().prop_map(Op::Write),
        i.clone().prop_map(Op::Read),
        i.clone().prop_map(Op::Truncate),
        i.clone().prop_map(Op::Chmod),
        i.clone().prop_map(Op::Mkdir),
        i.clone().prop_map(Op::Unlink),
        i.clone().prop_map(Op::Rmdir),
        (i.clone(), i.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        (i.clone(), i.clone()).prop_map(|(a, b)| Op::Link(a, b)),
        (i.clone(), 0..TARGETS.len()).prop_map(|(a, b)| Op::Symlink(a, b)),
        i.clone().prop_map(Op::List),
        i.prop_map(Op::Put),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// cap-std's fuzz idea: random operations on random paths of `.`, `..`, names and
    /// symlinks either stay inside the library or fail; the sibling dir never changes.
    #[test]
    fn random_ops_stay_inside(paths in prop::collection::vec(arb_path(), 16),
                              ops in prop::collection::vec(arb_op(), 1..40)) {
        let f = Fixture::new();
        // Seed escape hatches at the top.
        std::os::unix::fs::symlink("../outside", f.root().join("out")).expect("symlink");
        std::os::unix::fs::symlink("..", f.root().join("up")).expect("symlink");
        std::os::unix::fs::symlink("/", f.root().join("abs")).expect("symlink");
        let lib = &f.lib;
        let rel = |i: usize| RelPath::from_bytes(&paths[i % paths.len()]);
        for op in ops {
            // Invalid paths are refused by RelPath; valid ones may fail in the library.
            let _ = (|| -> Option<()> {
                match op {
                    Op::Create(i) => { let _ = lib.create(&rel(i).ok()?, 0o666, false); }
                    Op::Write(i) => { let _ = lib.write(&rel(i).ok()?, 0, b"pwned"); }
                    Op::Read(i) => { let _ = lib.read(&rel(i).ok()?, 0, 64); }
                    Op::Truncate(i) => {
                        let _ = lib.set_attr(&rel(i).ok()?, &SetAttrs { size: Some(0), ..SetAttrs::default() });
                    }
                    Op::Chmod(i) => {
                        let _ = lib.set_attr(&rel(i).ok()?, &SetAttrs { perm: Some(0o777), ..SetAttrs::default() });
                    }
                    Op::Mkdir(i) => { let _ = lib.mkdir(&rel(i).ok()?, 0o755); }
                    Op::Unlink(i) => { let _ = lib.unlink(&rel(i).ok()?); }
                    Op::Rmdir(i) => { let _ = lib.rmdir(&rel(i).ok()?); }
                    Op::Rename(a, b) => { let _ = lib.rename(&rel(a).ok()?, &rel(b).ok()?, 0); }
                    Op::Link(a, b) => { let _ = lib.link(&rel(a).ok()?, &rel(b).ok()?); }
                    Op::Symlink(a, t) => { let _ = lib.symlink(&rel(a).ok()?, TARGETS[t]); }
                    Op::List(i) => { let _ = lib.list(&rel(i).ok()?, b"", 0, 1 << 20); }
                    Op::Put(i) => {
                        let path = rel(i).ok()?;
                        if let Ok(temp) = lib.put_begin(&path, 0o644) {
                            let _ = lib.write(&temp, 0, b"pwned");
                            let _ = lib.put_commit(&temp, &path, None);
                        }
                    }
                }
                Some(())
            })();
            f.assert_outside_untouched();
        }
        // Nothing escaped by being moved out either: the library's parent holds only ours.
        let mut top: Vec<_> = fs::read_dir(f.tmp.path()).expect("readdir")
            .map(|e| e.expect("entry").file_name()).collect();
        top.sort();
        prop_assert_eq!(top, ["lib", "outside"]);
    }
}

#[test]
fn a_stream_writes_back_the_window_two_behind_the_one_it_enters() {
    const W: u64 = WRITEBACK_WINDOW;
    const MIB: u64 = 1 << 20;
    // 1 MiB writes of a stream: only the write that reaches a window's start starts a
    // write-back, of the window two before that one.
    let kicked: Vec<(u64, u64)> = (0..3 * W / MIB)
        .filter_map(|k| window_behind(k * MIB, MIB).map(|from| (k * MIB, from)))
        .collect();
    assert_eq!(kicked, vec![(2 * W - MIB, 0), (3 * W - MIB, W)]);
    // The first two windows have nothing two behind them.
    assert_eq!(window_behind(W - 10, 20), None);
    // A write within one window, and an empty one on a boundary, start nothing.
    assert_eq!(window_behind(5 * W + 1, 100), None);
    assert_eq!(window_behind(5 * W, 0), None);
    // A large write spanning windows writes back two behind where it ends.
    assert_eq!(window_behind(0, 5 * W + 1), Some(3 * W));
    assert_eq!(window_behind(u64::MAX - 1, 10), None);
}

fn xattr_code<T: std::fmt::Debug>(r: Result<T>) -> Code {
    r.expect_err("the xattr call fails").code
}

#[test]
fn xattrs_set_get_list_remove_on_files_and_directories() {
    let f = Fixture::new();
    fs::write(f.root().join("f"), b"x").expect("seed");
    fs::create_dir(f.root().join("d")).expect("mkdir");
    let binary: Vec<u8> = vec![0, 255, 0, 10, 13];
    for path in [p(b"f"), p(b"d"), RelPath::root()] {
        f.lib
            .set_xattr(&path, b"user.bin", &binary, 0)
            .expect("set");
        f.lib
            .set_xattr(&path, b"user.empty", b"", xattr::CREATE)
            .expect("set empty");
        assert_eq!(f.lib.get_xattr(&path, b"user.bin").expect("get"), binary);
        assert_eq!(f.lib.get_xattr(&path, b"user.empty").expect("get"), b"");
        let mut names = f.lib.list_xattr(&path).expect("list");
        names.sort();
        assert_eq!(names, [b"user.bin".to_vec(), b"user.empty".to_vec()]);
        f.lib.remove_xattr(&path, b"user.bin").expect("remove");
        assert_eq!(
            xattr_code(f.lib.get_xattr(&path, b"user.bin")),
            Code::NoData
        );
        assert_eq!(
            xattr_code(f.lib.remove_xattr(&path, b"user.bin")),
            Code::NoData
        );
    }
    // Stored as the file's own attribute, where local tools see it.
    let on_disk = rustix::fs::getxattr(f.root().join("f"), "user.empty", &mut [0u8; 8][..]);
    assert_eq!(on_disk, Ok(0));
}

#[test]
fn xattr_flags_sizes_and_names_give_linux_codes() {
    let f = Fixture::new();
    fs::write(f.root().join("f"), b"x").expect("seed");
    let path = p(b"f");
    let lib = &f.lib;
    assert_eq!(xattr_code(lib.get_xattr(&path, b"user.none")), Code::NoData);
    lib.set_xattr(&path, b"user.k", b"1", xattr::CREATE)
        .expect("create");
    assert_eq!(
        xattr_code(lib.set_xattr(&path, b"user.k", b"2", xattr::CREATE)),
        Code::Exists
    );
    assert_eq!(
        xattr_code(lib.set_xattr(&path, b"user.n", b"2", xattr::REPLACE)),
        Code::NoData
    );
    lib.set_xattr(&path, b"user.k", b"3", xattr::REPLACE)
        .expect("replace");
    assert_eq!(lib.get_xattr(&path, b"user.k").expect("get"), b"3");
    assert_eq!(
        xattr_code(lib.set_xattr(&path, b"user.k", b"4", 4)),
        Code::Invalid
    );
    let value = ramp(xattr::VALUE_MAX + 1);
    assert_eq!(
        xattr_code(lib.set_xattr(&path, b"user.big", &value, 0)),
        Code::TooBig
    );
    let long = [b"user.".as_slice(), &[b'a'; 251]].concat();
    assert_eq!(xattr_code(lib.set_xattr(&path, &long, b"", 0)), Code::Range);
    assert_eq!(xattr_code(lib.get_xattr(&path, b"")), Code::Range);
    assert_eq!(
        xattr_code(lib.set_xattr(&path, b"user.", b"", 0)),
        Code::Invalid
    );
    // A 255-byte name is allowed.
    lib.set_xattr(&path, &long[..255], b"v", 0)
        .expect("255 bytes");
    assert_eq!(lib.get_xattr(&path, &long[..255]).expect("get"), b"v");
    assert_eq!(
        xattr_code(lib.set_xattr(&path, b"user.a\0b", b"", 0)),
        Code::Invalid
    );
    assert_eq!(
        xattr_code(lib.get_xattr(&p(b"none"), b"user.k")),
        Code::NotFound
    );
}

#[test]
fn only_user_attributes_are_served_and_listed() {
    let f = Fixture::new();
    let file = f.root().join("f");
    fs::write(&file, b"x").expect("seed");
    let path = p(b"f");
    for name in [
        &b"trusted.k"[..],
        b"security.capability",
        b"security.selinux",
        b"system.posix_acl_access",
        b"other.k",
    ] {
        assert_eq!(
            xattr_code(f.lib.set_xattr(&path, name, b"v", 0)),
            Code::NotSupported,
            "{}",
            String::from_utf8_lossy(name)
        );
        assert_eq!(xattr_code(f.lib.get_xattr(&path, name)), Code::NotSupported);
        assert_eq!(
            xattr_code(f.lib.remove_xattr(&path, name)),
            Code::NotSupported
        );
    }
    // Names the server's own system keeps (trusted.* as root, here) do not show.
    f.lib.set_xattr(&path, b"user.k", b"v", 0).expect("set");
    if rustix::fs::setxattr(&file, "trusted.shelf", b"x", XattrFlags::empty()).is_ok() {
        assert_eq!(f.lib.list_xattr(&path).expect("list"), [b"user.k".to_vec()]);
    }
    assert_eq!(f.lib.list_xattr(&path).expect("list"), [b"user.k".to_vec()]);
}

#[test]
fn symlinks_and_special_files_have_no_user_attributes() {
    let f = Fixture::new();
    fs::write(f.root().join("f"), b"x").expect("seed");
    std::os::unix::fs::symlink("f", f.root().join("l")).expect("symlink");
    std::os::unix::fs::symlink("../outside/secret", f.root().join("out")).expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        f.root().join("p"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    for name in [&b"l"[..], b"out", b"p"] {
        let path = p(name);
        assert_eq!(xattr_code(f.lib.get_xattr(&path, b"user.k")), Code::NoData);
        assert_eq!(
            xattr_code(f.lib.set_xattr(&path, b"user.k", b"v", 0)),
            Code::NotPermitted
        );
        assert_eq!(
            xattr_code(f.lib.remove_xattr(&path, b"user.k")),
            Code::NotPermitted
        );
        assert_eq!(
            f.lib.list_xattr(&path).expect("list"),
            Vec::<Vec<u8>>::new()
        );
    }
    // The link's target was not touched either.
    assert_eq!(
        f.lib.list_xattr(&p(b"f")).expect("list"),
        Vec::<Vec<u8>>::new()
    );
    f.assert_outside_untouched();
    let outside = rustix::fs::listxattr(f.outside().join("secret"), &mut [0u8; 64][..]);
    assert_eq!(outside, Ok(0));
}

/// The names the implementation keeps for itself (`shelf_proto::reserved`) are in no
/// listing: the root's `.shelf-hidden`, `.shelf-hidden-*` and put temporaries anywhere. A
/// subdirectory's `.shelf-hidden` is the library's own.
#[test]
fn listings_leave_out_the_implementations_names() {
    let f = Fixture::new();
    for dir in [&b".shelf-hidden"[..], b"d", b"d/.shelf-hidden"] {
        f.lib.mkdir(&p(dir), 0o700).expect("mkdir");
    }
    for file in [
        &b"a"[..],
        b".shelf-hidden-1f-2-3-4a",
        b".shelf-put-0011223344556677",
        b"d/.shelf-hidden-3-4-5-6",
        b"d/b",
        // A person's own files that only look like ours are listed.
        b"d/.shelf-hidden-notes",
        b"d/.shelf-put-aside",
    ] {
        f.lib.create(&p(file), 0o644, true).expect("create");
    }
    let names = |dir: &[u8]| -> Vec<Vec<u8>> {
        let (entries, more) = f.lib.list(&p(dir), b"", 0, 1 << 20).expect("list");
        assert!(!more);
        entries.into_iter().map(|e| e.name).collect()
    };
    assert_eq!(names(b""), [b"a".to_vec(), b"d".to_vec()]);
    assert_eq!(
        names(b"d"),
        [
            b".shelf-hidden".to_vec(),
            b".shelf-hidden-notes".to_vec(),
            b".shelf-put-aside".to_vec(),
            b"b".to_vec()
        ]
    );
}

/// The root's link count leaves out the mount's unlisted `.shelf-hidden`, as listings do: a
/// person sees one subdirectory, and `st_nlink` says so (2 + subdirectories, as on ext4).
#[test]
fn the_roots_link_count_leaves_out_the_hidden_directory() {
    let f = Fixture::new();
    f.lib.mkdir(&p(b"d"), 0o755).expect("mkdir d");
    let before = f.lib.stat(&RelPath::root()).expect("stat root").nlink;
    assert_eq!(before, 3, "the root and d");
    f.lib
        .mkdir(&p(b".shelf-hidden"), 0o700)
        .expect("mkdir hidden");
    assert_eq!(f.lib.stat(&RelPath::root()).expect("stat").nlink, before);
    let after_chmod = f
        .lib
        .set_attr(
            &RelPath::root(),
            &SetAttrs {
                perm: Some(0o755),
                ..SetAttrs::default()
            },
        )
        .expect("setattr root");
    assert_eq!(
        after_chmod.nlink, before,
        "setattr's reply shows it the same way"
    );
    // A subdirectory's `.shelf-hidden` is the library's own, and counts in its parent.
    f.lib
        .mkdir(&p(b"d/.shelf-hidden"), 0o755)
        .expect("mkdir d/.shelf-hidden");
    assert_eq!(f.lib.stat(&p(b"d")).expect("stat d").nlink, 3);
}
