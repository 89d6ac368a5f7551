//! Files that lose their name while the kernel may still use them (`hidden.rs`).

use super::*;

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

/// The hidden name is ours: a program's `fstat` of an unlinked open file sees no link left,
/// as on a local file system (ext4 answers 0), though the server's file has one.
#[test]
fn an_unlinked_open_file_shows_no_links() {
    let f = fixture();
    let (e, o) = f.create("tmp");
    assert_eq!(f.core.getattr(e.ino).expect("stat").nlink, 1);
    f.core.unlink(ROOT_INO, b"tmp").expect("unlink");
    assert_eq!(f.core.getattr(e.ino).expect("fstat").nlink, 0);
    let set = SetAttrRequest {
        mode: Some(0o600),
        ..SetAttrRequest::default()
    };
    assert_eq!(f.core.setattr(e.ino, set).expect("fchmod").nlink, 0);
    f.core.release(o.fh).expect("release");
    f.core.forget(e.ino, 1);
}

#[test]
fn a_file_renamed_over_while_open_shows_no_links() {
    let f = fixture();
    fs::write(f.dir.path().join("doc"), b"version one").expect("seed");
    let e = f.core.lookup(ROOT_INO, b"doc").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    let new = f.save_by_rename(b"version two");
    assert_eq!(new, e.ino, "save_by_rename returns the replaced inode");
    assert_eq!(f.core.getattr(e.ino).expect("fstat old").nlink, 0);
    let now = f.core.lookup(ROOT_INO, b"doc").expect("lookup new");
    assert_eq!(now.attr.nlink, 1);
    f.core.release(o.fh).expect("release");
}

/// A file with three names, one renamed over while the kernel knows the file: the two left
/// show 2 links, whatever the core keeps hidden for the kernel meanwhile; and a second name
/// renamed over adds no second hidden name.
#[test]
fn hard_links_left_after_a_rename_over_one_show_their_count() {
    let f = fixture();
    let (e, o) = f.create("h1");
    f.core.link(e.ino, ROOT_INO, b"h2").expect("link h2");
    f.core.link(e.ino, ROOT_INO, b"h3").expect("link h3");
    f.core.release(o.fh).expect("release");
    assert_eq!(f.core.getattr(e.ino).expect("stat").nlink, 3);
    for (name, left) in [("h2", 2), ("h3", 1)] {
        let (other, oo) = f.create("other");
        f.core.release(oo.fh).expect("release other");
        f.core
            .rename(ROOT_INO, b"other", ROOT_INO, name.as_bytes(), 0)
            .expect("rename over a link");
        let h1 = f.core.lookup(ROOT_INO, b"h1").expect("lookup h1");
        assert_eq!(h1.ino, e.ino);
        assert_eq!(h1.attr.nlink, left, "after renaming over {name}");
        assert_eq!(f.core.getattr(e.ino).expect("stat").nlink, left);
        let over = f
            .core
            .lookup(ROOT_INO, name.as_bytes())
            .expect("lookup new");
        assert_eq!((over.ino, over.attr.nlink), (other.ino, 1));
    }
    let hidden = server_names(&f)
        .into_iter()
        .filter(|n| n.starts_with("./.shelf-hidden/"))
        .count();
    assert_eq!(hidden, 1, "one hidden name at most: {:?}", server_names(&f));
}
