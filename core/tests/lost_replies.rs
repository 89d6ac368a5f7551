//! Changes of names whose reply was lost: the server may have done them. The core must find
//! out what happened before it records anything, and when it cannot, must forget what the
//! names held rather than keep leading the kernel to the file a name held before.
//!
//! Found by the chaos run (`tests/src/chaos.rs`, seed 7): a rename over a file the kernel
//! knew lost its reply after the server did it; the core kept the old name's inode at the old
//! path and the replaced file's inode at its hidden name, so a write through the kernel's
//! entry for the new name went to the hidden file, and was acknowledged and lost.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shelf_core::{Core, CoreConfig, Ino, Invalidate, ROOT_INO};
use shelf_proto::Code;
use shelf_testkit::{Fault, Faulty, Memory};
use tempfile::TempDir;

struct Fixture {
    dir: TempDir,
    core: Core<Faulty<Memory>>,
    told: Arc<Mutex<Vec<Invalidate>>>,
}

fn fixture(files: &[(&str, &[u8])]) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, bytes) in files {
        fs::write(dir.path().join(name), bytes).expect("seed file");
    }
    let memory = Memory::new(dir.path()).expect("server");
    let core = Core::new(
        Faulty::new(memory).on_hang_up(Memory::hang_up),
        CoreConfig {
            attr_ttl: Duration::ZERO,
            prefetch_threads: 1,
            ..CoreConfig::default()
        },
    );
    let told = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&told);
    core.set_invalidator(Box::new(move |what| sink.lock().push(what)));
    Fixture { dir, core, told }
}

impl Fixture {
    fn faults(&self) -> &Faulty<Memory> {
        self.core.transport()
    }

    /// What the kernel's lookup of `name` in the root gets (and holds, one reference).
    fn lookup(&self, name: &str) -> Ino {
        self.core
            .lookup(ROOT_INO, name.as_bytes())
            .unwrap_or_else(|e| panic!("lookup {name}: {e}"))
            .ino
    }

    fn read(&self, ino: Ino) -> Result<Vec<u8>, Code> {
        let o = self.core.open(ino, libc::O_RDONLY).map_err(|e| e.code())?;
        let data = self
            .core
            .read(o.fh, 0, 1 << 16)
            .map(Vec::from)
            .map_err(|e| e.code());
        self.core.release(o.fh).expect("release");
        data
    }

    /// Replaces the content through `ino` as a program's `open(O_TRUNC)`, write and close do.
    fn rewrite(&self, ino: Ino, bytes: &[u8]) {
        let o = self
            .core
            .open(ino, libc::O_WRONLY | libc::O_TRUNC)
            .expect("open for writing");
        self.core.write(o.fh, 0, bytes).expect("write");
        self.core.flush(o.fh).expect("close");
        self.core.release(o.fh).expect("release");
    }

    fn on_server(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.dir.path().join(name)).ok()
    }

    /// As an earlier hidden file leaves it, so that the fault meets the hiding itself, not
    /// the first try that finds the directory missing.
    fn hidden_dir_made_before(&self) {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(self.dir.path().join(".shelf-hidden"))
            .expect("hidden directory");
    }

    fn hidden_left(&self) -> usize {
        hidden_files(self.dir.path())
    }
}

fn hidden_files(root: &Path) -> usize {
    fs::read_dir(root.join(".shelf-hidden")).map_or(0, |d| d.count())
}

#[test]
fn a_rename_whose_reply_was_lost_after_the_server_did_it_is_done() {
    let f = fixture(&[("p", b"moved"), ("q", b"replaced")]);
    let p = f.lookup("p");
    let q = f.lookup("q");
    f.faults().fail("rename", 1, Fault::LostAfter);

    f.core
        .rename(ROOT_INO, b"p", ROOT_INO, b"q", 0)
        .expect("the server did it: the rename succeeded");

    assert_eq!(
        f.lookup("q"),
        p,
        "the new name leads to the moved file's inode"
    );
    f.rewrite(p, b"written after");
    assert_eq!(f.on_server("q").as_deref(), Some(&b"written after"[..]));
    assert_eq!(f.on_server("p"), None);
    // The replaced file stays readable for a kernel that resolved its name before, as after
    // any rename over a known file, until the kernel forgets it.
    assert_eq!(f.read(q).as_deref(), Ok(&b"replaced"[..]));
    f.core.forget(q, 1);
    assert_eq!(f.hidden_left(), 0, "the replaced file's hidden name goes");
}

#[test]
fn a_rename_lost_before_it_was_sent_fails_and_changes_nothing() {
    let f = fixture(&[("p", b"moving"), ("q", b"staying")]);
    let p = f.lookup("p");
    let q = f.lookup("q");
    f.faults().fail("rename", 1, Fault::LostBefore);

    assert!(f.core.rename(ROOT_INO, b"p", ROOT_INO, b"q", 0).is_err());

    assert_eq!(f.lookup("p"), p);
    assert_eq!(f.lookup("q"), q);
    f.rewrite(q, b"still q");
    assert_eq!(f.on_server("q").as_deref(), Some(&b"still q"[..]));
    assert_eq!(f.read(p).as_deref(), Ok(&b"moving"[..]));
}

#[test]
fn a_rename_whose_outcome_cannot_be_learned_forgets_both_names() {
    let f = fixture(&[("p", b"moved"), ("q", b"replaced")]);
    let p = f.lookup("p");
    let q = f.lookup("q");
    f.faults().fail("rename", 1, Fault::LostAfter);
    // The server is unreachable for the core's look afterwards too.
    f.faults().fail("stat", 1, Fault::LostBefore);
    f.faults().fail("stat", 2, Fault::LostBefore);
    f.told.lock().clear();

    assert!(f.core.rename(ROOT_INO, b"p", ROOT_INO, b"q", 0).is_err());

    let told = f.told.lock().clone();
    for name in ["p", "q"] {
        let entry = Invalidate::Entry {
            parent: ROOT_INO,
            name: name.as_bytes().to_vec(),
        };
        assert!(
            told.contains(&entry),
            "the kernel is told to look up {name} again: {told:?}"
        );
    }
    // Until the kernel has, its entries lead nowhere (ESTALE: it walks the path again),
    // not to the files the names held.
    assert_eq!(f.read(p), Err(Code::Stale));
    assert_eq!(f.read(q), Err(Code::Stale));
    assert_eq!(
        f.hidden_left(),
        0,
        "no hidden name is kept for the replaced file"
    );
    // Walked again, the names lead to what the server has.
    let q_now = f.lookup("q");
    assert_eq!(f.read(q_now).as_deref(), Ok(&b"moved"[..]));
    f.rewrite(q_now, b"written after");
    assert_eq!(f.on_server("q").as_deref(), Some(&b"written after"[..]));
    assert_eq!(
        f.core
            .lookup(ROOT_INO, b"p")
            .map(|e| e.ino)
            .map_err(|e| e.code()),
        Err(Code::NotFound)
    );
}

#[test]
fn an_unlink_of_an_open_file_whose_reply_was_lost_keeps_its_handles() {
    let f = fixture(&[("p", b"open and unlinked")]);
    f.hidden_dir_made_before();
    let p = f.lookup("p");
    let o = f.core.open(p, libc::O_RDWR).expect("open");
    // Unlinking an open file renames it to a hidden name; that rename's reply is lost.
    f.faults().fail("rename", 1, Fault::LostAfter);

    f.core.unlink(ROOT_INO, b"p").expect("the server did it");

    assert_eq!(f.on_server("p"), None);
    let data = f
        .core
        .read(o.fh, 0, 100)
        .expect("the open file still reads");
    assert_eq!(&data[..], b"open and unlinked");
    f.core.write(o.fh, 0, b"OPEN").expect("and writes");
    f.core.fsync(o.fh, false).expect("fsync");
    f.core.release(o.fh).expect("release");
    assert_eq!(
        f.hidden_left(),
        0,
        "the hidden name goes with the last close"
    );
}

#[test]
fn a_hidden_link_whose_reply_was_lost_is_kept_and_removed() {
    let f = fixture(&[("p", b"moved"), ("q", b"replaced")]);
    f.hidden_dir_made_before();
    f.lookup("p");
    let q = f.lookup("q");
    // The rename over a file the kernel knows first links it to a hidden name.
    f.faults().fail("link", 1, Fault::LostAfter);

    f.core
        .rename(ROOT_INO, b"p", ROOT_INO, b"q", 0)
        .expect("the link was made, so the rename goes ahead");

    assert_eq!(f.on_server("q").as_deref(), Some(&b"moved"[..]));
    assert_eq!(f.read(q).as_deref(), Ok(&b"replaced"[..]));
    f.core.forget(q, 1);
    assert_eq!(f.hidden_left(), 0, "no hidden name is left behind");
}

#[test]
fn an_unlink_whose_reply_was_lost_after_the_server_did_it_is_done() {
    let f = fixture(&[("p", b"gone")]);
    f.lookup("p");
    f.faults().fail("unlink", 1, Fault::LostAfter);

    f.core.unlink(ROOT_INO, b"p").expect("the server did it");

    assert_eq!(f.on_server("p"), None);
    assert_eq!(
        f.core
            .lookup(ROOT_INO, b"p")
            .map(|e| e.ino)
            .map_err(|e| e.code()),
        Err(Code::NotFound)
    );
}

#[test]
fn an_unlink_lost_before_it_was_sent_fails_and_the_file_stays() {
    let f = fixture(&[("p", b"stays")]);
    let p = f.lookup("p");
    f.faults().fail("unlink", 1, Fault::LostBefore);

    assert!(f.core.unlink(ROOT_INO, b"p").is_err());

    assert_eq!(f.lookup("p"), p);
    assert_eq!(f.read(p).as_deref(), Ok(&b"stays"[..]));
}

#[test]
fn an_rmdir_whose_reply_was_lost_after_the_server_did_it_is_done() {
    let f = fixture(&[]);
    fs::create_dir(f.dir.path().join("d")).expect("dir");
    f.lookup("d");
    f.faults().fail("rmdir", 1, Fault::LostAfter);

    f.core.rmdir(ROOT_INO, b"d").expect("the server did it");

    assert!(!f.dir.path().join("d").exists());
}
