//! The inode table's tests: its invariants (`Inner::check`) after each scripted and random
//! sequence of operations.

use super::*;
use proptest::prelude::*;
use shelf_proto::Timestamp;

fn attr(server_ino: u64, kind: FileKind) -> Attr {
    Attr {
        ino: server_ino,
        kind,
        perm: 0o644,
        nlink: 1,
        size: server_ino * 10,
        blocks: 0,
        blksize: 4096,
        atime: Timestamp::new(1, 0),
        mtime: Timestamp::new(2, 0),
        ctime: Timestamp::new(3, 0),
        btime: Timestamp::default(),
    }
}

fn file(server_ino: u64) -> Attr {
    attr(server_ino, FileKind::File)
}

fn dir(server_ino: u64) -> Attr {
    attr(server_ino, FileKind::Dir)
}

/// A file with two names on the server.
fn linked(server_ino: u64) -> Attr {
    Attr {
        nlink: 2,
        ..file(server_ino)
    }
}

impl InodeTable {
    fn check(&self) {
        self.inner.read().check();
    }
}

#[test]
fn root_is_the_empty_path() {
    let t = InodeTable::new();
    assert_eq!(t.path(ROOT_INO), Some(Vec::new()));
    assert_eq!(t.child_path(ROOT_INO, b"a"), Some(b"a".to_vec()));
    assert_eq!(t.path(Ino(2)), None, "unknown inode");
    assert_eq!(t.child_path(Ino(2), b"a"), None);
}

#[test]
fn lookup_counts_and_reuses_the_inode() {
    let t = InodeTable::new();
    let d = t.lookup(ROOT_INO, b"d", &dir(10)).expect("root is known");
    let f = t.lookup(d, b"f", &file(11)).expect("d is known");
    assert_eq!(
        t.lookup(d, b"f", &file(11)),
        Some(f),
        "same name, same server file"
    );
    assert_eq!(t.lookups(f), Some(2));
    assert_eq!(t.path(f), Some(b"d/f".to_vec()));
    assert_eq!(t.child_path(f, b"x"), Some(b"d/f/x".to_vec()));
    assert_eq!(t.child(d, b"f"), Some(f));
    assert_eq!(t.lookup(Ino(999), b"f", &file(11)), None, "unknown parent");
    t.check();
}

#[test]
fn forget_to_zero_drops_and_cascades() {
    let t = InodeTable::new();
    let d = t.lookup(ROOT_INO, b"d", &dir(10)).expect("root is known");
    let f = t.lookup(d, b"f", &file(11)).expect("d is known");
    t.lookup(d, b"f", &file(11));
    t.forget(d, 1);
    assert!(t.contains(d), "kept alive by its child");
    assert_eq!(
        t.path(f),
        Some(b"d/f".to_vec()),
        "child's path still resolves"
    );
    t.forget(f, 1);
    assert_eq!(t.lookups(f), Some(1));
    t.forget(f, 5);
    assert!(!t.contains(f), "saturated to zero and dropped");
    assert!(!t.contains(d), "parent dropped with its last child");
    assert_eq!(t.len(), 1);
    t.check();
}

#[test]
fn forget_unknown_is_fine_and_root_stays() {
    let t = InodeTable::new();
    t.forget(Ino(12345), 3);
    t.forget(ROOT_INO, u64::MAX);
    assert!(t.contains(ROOT_INO));
    assert_eq!(t.path(ROOT_INO), Some(Vec::new()));
    t.check();
}

#[test]
fn replaced_on_server_gets_a_new_inode() {
    let t = InodeTable::new();
    let old = t.lookup(ROOT_INO, b"f", &file(11)).expect("root is known");
    let new = t.lookup(ROOT_INO, b"f", &file(12)).expect("root is known");
    assert_ne!(old, new);
    assert!(new > old, "numbers are not reused");
    assert_eq!(t.path(new), Some(b"f".to_vec()));
    assert_eq!(t.path(old), None, "old node detached from the name");
    assert!(t.contains(old), "kept until the kernel forgets it");
    let as_dir = t.lookup(ROOT_INO, b"f", &dir(12)).expect("root is known");
    assert_ne!(as_dir, new, "same server number, other kind: another file");
    t.forget(old, 1);
    assert!(!t.contains(old));
    t.check();
}

#[test]
fn rename_moves_descendants_and_detaches_target() {
    let t = InodeTable::new();
    let a = t.lookup(ROOT_INO, b"a", &dir(10)).expect("root");
    let b = t.lookup(a, b"b", &dir(11)).expect("a");
    let c = t.lookup(b, b"c", &file(12)).expect("b");
    let z = t.lookup(ROOT_INO, b"z", &dir(13)).expect("root");
    let victim = t.lookup(z, b"a2", &file(14)).expect("z");
    assert_eq!(t.rename(ROOT_INO, b"a", z, b"a2"), Some(a));
    assert_eq!(t.path(a), Some(b"z/a2".to_vec()));
    assert_eq!(t.path(b), Some(b"z/a2/b".to_vec()));
    assert_eq!(t.path(c), Some(b"z/a2/b/c".to_vec()));
    assert_eq!(t.path(victim), None, "renamed over");
    assert_eq!(t.child(ROOT_INO, b"a"), None);
    assert_eq!(t.child(z, b"a2"), Some(a));
    t.check();
}

#[test]
fn rename_of_unknown_source_still_detaches_target() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"f", &file(11)).expect("root");
    assert_eq!(t.rename(ROOT_INO, b"unknown", ROOT_INO, b"f"), None);
    assert_eq!(t.path(f), None);
    t.check();
}

/// Found by the property test: the new parent lost its only child and nothing else held it.
#[test]
fn rename_of_unknown_source_collects_the_emptied_parent() {
    let t = InodeTable::new();
    let d = t.lookup(ROOT_INO, b"d", &dir(10)).expect("root");
    let f = t.lookup(d, b"f", &file(11)).expect("d");
    t.forget(d, 1);
    t.forget(f, 1);
    let g = t.lookup(d, b"g", &file(12));
    assert_eq!(g, None, "d was dropped with its last child");
    let d = t.lookup(ROOT_INO, b"d", &dir(10)).expect("root");
    let f = t.lookup(d, b"f", &file(11)).expect("d");
    t.forget(d, 1);
    t.rename(ROOT_INO, b"unknown", d, b"f");
    assert!(t.contains(f), "detached but still looked up");
    assert!(!t.contains(d), "held by nothing once f left");
    t.check();
}

#[test]
fn rename_into_own_subtree_detaches_instead_of_looping() {
    let t = InodeTable::new();
    let a = t.lookup(ROOT_INO, b"a", &dir(10)).expect("root");
    let b = t.lookup(a, b"b", &dir(11)).expect("a");
    assert_eq!(t.rename(ROOT_INO, b"a", b, b"a"), Some(a));
    assert_eq!(t.path(a), None);
    assert_eq!(t.path(b), None, "below a detached node");
    t.check();
}

#[test]
fn rename_onto_itself_is_a_no_op() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"f", &file(11)).expect("root");
    assert_eq!(t.rename(ROOT_INO, b"f", ROOT_INO, b"f"), Some(f));
    assert_eq!(t.path(f), Some(b"f".to_vec()));
    t.check();
}

#[test]
fn rename_does_not_drop_a_parent_it_empties_and_refills() {
    let t = InodeTable::new();
    let d = t.lookup(ROOT_INO, b"d", &dir(10)).expect("root");
    let f = t.lookup(d, b"f", &file(11)).expect("d");
    t.forget(d, 1); // held only by f now
    assert_eq!(t.rename(d, b"f", d, b"g"), Some(f));
    assert_eq!(t.path(f), Some(b"d/g".to_vec()));
    t.check();
}

#[test]
fn exchange_swaps_places() {
    let t = InodeTable::new();
    let a = t.lookup(ROOT_INO, b"a", &dir(10)).expect("root");
    let x = t.lookup(a, b"x", &file(11)).expect("a");
    let b = t.lookup(ROOT_INO, b"b", &file(12)).expect("root");
    t.exchange(ROOT_INO, b"a", ROOT_INO, b"b");
    assert_eq!(t.path(a), Some(b"b".to_vec()));
    assert_eq!(t.path(x), Some(b"b/x".to_vec()));
    assert_eq!(t.path(b), Some(b"a".to_vec()));
    t.check();
}

#[test]
fn unlink_detaches_until_forgotten() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"f", &file(11)).expect("root");
    assert_eq!(t.unlink(ROOT_INO, b"f"), Some(f));
    assert_eq!(t.path(f), None);
    assert_eq!(t.child_path(f, b"x"), None);
    assert_eq!(t.unlink(ROOT_INO, b"f"), None, "already gone");
    let again = t.lookup(ROOT_INO, b"f", &file(11)).expect("root");
    assert_ne!(again, f, "a detached node is not found by name again");
    t.forget(f, 1);
    assert!(!t.contains(f));
    t.check();
}

#[test]
fn readdir_ino_takes_no_reference() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"f", &file(11)).expect("root");
    assert_eq!(t.readdir_ino(ROOT_INO, b"f", &file(11)), f);
    assert_eq!(t.lookups(f), Some(1));
    let g = t.readdir_ino(ROOT_INO, b"g", &file(12));
    assert!(!t.contains(g), "untracked");
    assert_eq!(g, Ino(12), "the server's number, free");
    assert_eq!(
        t.lookup(ROOT_INO, b"g", &file(12)),
        Some(g),
        "what the lookup then gives"
    );
    assert_ne!(t.readdir_ino(ROOT_INO, b"f", &file(99)), f, "replaced file");
    t.check();
}

#[test]
fn attr_cache_honours_ttl() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"f", &file(11)).expect("root");
    assert_eq!(
        t.cached_attr(f, Duration::from_secs(60)),
        Some(file(11)),
        "lookup caches"
    );
    assert_eq!(t.cached_attr(f, Duration::ZERO), None, "expired");
    assert_eq!(t.last_attr(f), Some(file(11)));
    let mut changed = file(11);
    changed.size = 77;
    t.set_attr(f, &changed);
    assert_eq!(
        t.cached_attr(f, Duration::from_secs(60)).map(|a| a.size),
        Some(77)
    );
    t.invalidate_attr(f);
    assert_eq!(t.cached_attr(f, Duration::from_secs(60)), None);
    assert_eq!(t.last_attr(f), None);
    t.set_attr(ROOT_INO, &dir(1));
    assert_eq!(t.last_attr(ROOT_INO), Some(dir(1)));
    t.set_attr(Ino(4242), &dir(1)); // unknown: ignored
}

/// `file(11)` as changed at ctime `secs` to `size` bytes.
fn changed_at(secs: i64, size: u64) -> Attr {
    Attr {
        size,
        ctime: Timestamp::new(secs, 0),
        ..file(11)
    }
}

/// A reply of `reply` to a request that left before `meanwhile` was stored.
fn overlapping(t: &InodeTable, f: Ino, meanwhile: Option<Attr>, reply: Attr) -> Stored {
    let left = t.attr_stamp(f);
    match meanwhile {
        Some(a) => t.set_attr(f, &a),
        None => t.invalidate_attr(f),
    }
    t.set_attr_since(f, &reply, left)
}

#[test]
fn a_reply_that_travelled_while_another_was_stored_does_not_bring_back_an_older_state() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"f", &changed_at(3, 100)).expect("root");
    let cached = |t: &InodeTable| t.last_attr(f);

    // Nothing stored while it travelled: the reply is the newest, whatever its ctime.
    let stamp = t.attr_stamp(f);
    assert_eq!(
        t.set_attr_since(f, &changed_at(2, 50), stamp),
        Stored::Newest
    );
    assert_eq!(cached(&t), Some(changed_at(2, 50)));

    // A stat leaves; a truncate's reply is stored; then the stat's reply comes, of before.
    let got = overlapping(&t, f, Some(changed_at(5, 10)), changed_at(4, 100));
    assert_eq!(got, Stored::Older(changed_at(5, 10)));
    assert_eq!(
        cached(&t),
        Some(changed_at(5, 10)),
        "the truncate's size stays"
    );

    // The same state told twice is no conflict.
    let got = overlapping(&t, f, Some(changed_at(6, 20)), changed_at(6, 20));
    assert_eq!(got, Stored::Newest);
    assert_eq!(cached(&t), Some(changed_at(6, 20)));

    // A later ctime is a later change, even though another was stored meanwhile.
    let got = overlapping(&t, f, Some(changed_at(7, 30)), changed_at(8, 40));
    assert_eq!(got, Stored::Newest);
    assert_eq!(cached(&t), Some(changed_at(8, 40)));

    // The same tick, other contents: which came last is unknown, so neither is kept.
    let got = overlapping(&t, f, Some(changed_at(9, 1)), changed_at(9, 2));
    assert_eq!(got, Stored::Unknown);
    assert_eq!(cached(&t), None);

    // Dropped while it travelled (another client's change was told): not stored either.
    let got = overlapping(&t, f, None, changed_at(10, 3));
    assert_eq!(got, Stored::Unknown);
    assert_eq!(cached(&t), None);

    assert_eq!(
        t.set_attr_since(Ino(4242), &changed_at(1, 1), stamp),
        Stored::Unknown,
        "unknown inode"
    );
    t.check();
}

#[test]
fn hard_links_share_one_node() {
    let t = InodeTable::new();
    let a = t.lookup(ROOT_INO, b"a", &file(11)).expect("root");
    let d = t.lookup(ROOT_INO, b"d", &dir(10)).expect("root");
    // As after `link a d/b`: the server now says nlink 2.
    let b = t.lookup(d, b"b", &linked(11)).expect("d");
    assert_eq!(b, a, "both names are one inode");
    assert_eq!(t.lookups(a), Some(2), "each name's lookup counts");
    assert_eq!(t.child(ROOT_INO, b"a"), Some(a));
    assert_eq!(t.child(d, b"b"), Some(a));
    assert_eq!(t.path(a), Some(b"d/b".to_vec()), "the latest name first");
    assert_eq!(t.lookup(ROOT_INO, b"a", &linked(11)), Some(a));
    assert_eq!(
        t.path(a),
        Some(b"a".to_vec()),
        "looked up again: first again"
    );
    assert_eq!(
        t.cached_attr(a, Duration::from_secs(60)).map(|x| x.nlink),
        Some(2),
        "the old name sees the new link count at once"
    );
    assert_eq!(t.readdir_ino(d, b"b", &linked(11)), a);
    t.check();
}

#[test]
fn directories_and_single_links_never_share() {
    let t = InodeTable::new();
    let x = t.lookup(
        ROOT_INO,
        b"x",
        &Attr {
            nlink: 2,
            ..dir(10)
        },
    );
    let y = t.lookup(
        ROOT_INO,
        b"y",
        &Attr {
            nlink: 2,
            ..dir(10)
        },
    );
    assert_ne!(x, y, "a directory cannot be hard-linked");
    let f = t.lookup(ROOT_INO, b"f", &file(11));
    let g = t.lookup(ROOT_INO, b"g", &file(11));
    assert_ne!(f, g, "nlink 1: the other name is stale, not a link");
    let s = t.lookup(
        ROOT_INO,
        b"s",
        &Attr {
            nlink: 2,
            ..attr(11, FileKind::Symlink)
        },
    );
    assert_ne!(s, f, "same server number, other kind");
    t.check();
}

#[test]
fn unlinking_one_link_keeps_the_other() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"a", &linked(11)).expect("root");
    assert_eq!(t.lookup(ROOT_INO, b"b", &linked(11)), Some(f));
    assert_eq!(t.unlink(ROOT_INO, b"b"), Some(f));
    assert_eq!(t.path(f), Some(b"a".to_vec()), "still attached through a");
    assert_eq!(t.child(ROOT_INO, b"b"), None);
    assert_eq!(t.unlink(ROOT_INO, b"a"), Some(f));
    assert_eq!(t.path(f), None, "no names left: detached");
    assert!(t.contains(f), "kept until forgotten");
    let again = t.lookup(ROOT_INO, b"c", &linked(11)).expect("root");
    assert_ne!(again, f, "a detached node is not joined");
    t.forget(f, 2);
    assert!(!t.contains(f));
    t.check();
}

#[test]
fn a_detached_node_kept_hidden_is_joined_by_another_link() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"b", &linked(11)).expect("root");
    t.set_hidden(f, true);
    assert_eq!(t.unlink(ROOT_INO, b"b"), Some(f));
    assert_eq!(t.path(f), None, "detached");
    let a = t.lookup(ROOT_INO, b"a", &linked(11)).expect("root");
    assert_eq!(
        a, f,
        "the file is still there: its other name is the same node"
    );
    assert_eq!(t.path(f), Some(b"a".to_vec()));
    assert_eq!(t.lookups(f), Some(2));
    t.check();
    // Once the hidden name is gone, a detached node is not joined again.
    t.set_hidden(f, false);
    t.unlink(ROOT_INO, b"a");
    let c = t.lookup(ROOT_INO, b"c", &linked(11)).expect("root");
    assert_ne!(c, f);
    t.check();
}

#[test]
fn a_replaced_link_leaves_the_other() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"a", &linked(11)).expect("root");
    t.lookup(ROOT_INO, b"b", &linked(11));
    let g = t.lookup(ROOT_INO, b"b", &file(12)).expect("root");
    assert_ne!(g, f);
    assert_eq!(t.path(f), Some(b"a".to_vec()));
    assert_eq!(t.path(g), Some(b"b".to_vec()));
    t.check();
}

#[test]
fn rename_and_exchange_move_only_the_named_link() {
    let t = InodeTable::new();
    let d = t.lookup(ROOT_INO, b"d", &dir(10)).expect("root");
    let f = t.lookup(ROOT_INO, b"a", &linked(11)).expect("root");
    t.lookup(ROOT_INO, b"b", &linked(11));
    assert_eq!(t.rename(ROOT_INO, b"b", d, b"c"), Some(f));
    assert_eq!(t.child(ROOT_INO, b"b"), None);
    assert_eq!(t.child(d, b"c"), Some(f));
    assert_eq!(t.child(ROOT_INO, b"a"), Some(f), "the other link stays");
    assert_eq!(t.path(f), Some(b"d/c".to_vec()), "the renamed name first");
    // rename(2) between two links of one file does nothing.
    assert_eq!(t.rename(ROOT_INO, b"a", d, b"c"), Some(f));
    assert_eq!(t.child(ROOT_INO, b"a"), Some(f));
    assert_eq!(t.child(d, b"c"), Some(f));
    t.exchange(ROOT_INO, b"a", d, b"c");
    assert_eq!(t.child(ROOT_INO, b"a"), Some(f), "exchange with itself");
    let g = t.lookup(ROOT_INO, b"g", &file(12)).expect("root");
    t.exchange(ROOT_INO, b"a", ROOT_INO, b"g");
    assert_eq!(t.child(ROOT_INO, b"a"), Some(g));
    assert_eq!(t.child(ROOT_INO, b"g"), Some(f));
    assert_eq!(t.child(d, b"c"), Some(f), "not part of the exchange");
    // Renaming one link over an unrelated file takes only that name from it.
    t.lookup(ROOT_INO, b"h", &linked(12));
    assert_eq!(t.rename(d, b"c", ROOT_INO, b"h"), Some(f));
    assert_eq!(t.path(g), Some(b"a".to_vec()));
    assert_eq!(t.child(ROOT_INO, b"h"), Some(f));
    t.check();
}

#[test]
fn a_shared_node_goes_only_at_zero_lookups() {
    let t = InodeTable::new();
    let d = t.lookup(ROOT_INO, b"d", &dir(10)).expect("root");
    let f = t.lookup(ROOT_INO, b"a", &linked(11)).expect("root");
    assert_eq!(t.lookup(d, b"b", &linked(11)), Some(f));
    t.forget(d, 1); // d is held only by its child now
    t.forget(f, 1);
    assert_eq!(t.lookups(f), Some(1));
    assert_eq!(t.child(d, b"b"), Some(f), "both names stay");
    assert_eq!(t.child(ROOT_INO, b"a"), Some(f));
    t.forget(f, 1);
    assert!(!t.contains(f), "dropped at zero");
    assert_eq!(t.child(ROOT_INO, b"a"), None, "with every name");
    assert!(!t.contains(d), "the emptied parent goes too");
    assert_eq!(t.len(), 1);
    t.check();
}

#[test]
fn readdir_ino_joins_a_known_link_without_a_reference() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"a", &linked(11)).expect("root");
    let old = t.lookup(ROOT_INO, b"b", &file(12)).expect("root");
    assert_eq!(t.readdir_ino(ROOT_INO, b"b", &linked(11)), f);
    assert_eq!(t.lookups(f), Some(1), "no reference taken");
    assert_eq!(t.child(ROOT_INO, b"b"), Some(f));
    assert_eq!(t.path(old), None, "the name's old file lost it");
    t.check();
}

#[test]
fn only_directories_take_children() {
    let t = InodeTable::new();
    let f = t.lookup(ROOT_INO, b"f", &linked(11)).expect("root");
    assert_eq!(t.lookup(f, b"x", &file(12)), None);
    let d = t.lookup(ROOT_INO, b"d", &dir(10)).expect("root");
    t.lookup(d, b"x", &file(12));
    assert_eq!(t.rename(d, b"x", f, b"x").map(|x| t.path(x)), Some(None));
    t.check();
}

#[derive(Debug, Clone)]
enum Op {
    /// Parent and target are picked among live inodes by index, wrapping.
    Lookup {
        parent: usize,
        name: u8,
        server: u64,
        is_dir: bool,
    },
    Readdir {
        parent: usize,
        name: u8,
        server: u64,
        is_dir: bool,
    },
    Forget {
        ino: usize,
        n: u64,
    },
    Rename {
        from: usize,
        old: u8,
        to: usize,
        new: u8,
    },
    Exchange {
        a: usize,
        na: u8,
        b: usize,
        nb: u8,
    },
    Unlink {
        parent: usize,
        name: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let idx = 0usize..64;
    let name = 0u8..4;
    prop_oneof![
        4 => (idx.clone(), name.clone(), 0u64..6, any::<bool>())
            .prop_map(|(parent, name, server, is_dir)| Op::Lookup { parent, name, server, is_dir }),
        1 => (idx.clone(), name.clone(), 0u64..6, any::<bool>())
            .prop_map(|(parent, name, server, is_dir)| Op::Readdir { parent, name, server, is_dir }),
        3 => (idx.clone(), 0u64..3).prop_map(|(ino, n)| Op::Forget { ino, n }),
        2 => (idx.clone(), name.clone(), idx.clone(), name.clone())
            .prop_map(|(from, old, to, new)| Op::Rename { from, old, to, new }),
        1 => (idx.clone(), name.clone(), idx.clone(), name.clone())
            .prop_map(|(a, na, b, nb)| Op::Exchange { a, na, b, nb }),
        1 => (idx, name).prop_map(|(parent, name)| Op::Unlink { parent, name }),
    ]
}

/// In the property test, files with server numbers from 3 up have two names on the server.
fn is_linked(server: u64) -> bool {
    server >= 3
}

fn server_attr(server: u64, is_dir: bool) -> Attr {
    let kind = if is_dir {
        FileKind::Dir
    } else {
        FileKind::File
    };
    Attr {
        nlink: if is_dir || is_linked(server) { 2 } else { 1 },
        ..attr(server, kind)
    }
}

proptest! {
    #[test]
    fn invariants_hold_under_random_ops(ops in proptest::collection::vec(op(), 0..150)) {
        let t = InodeTable::new();
        // Model of lookup counts: what the kernel would believe it holds.
        let mut counts: HashMap<Ino, u64> = HashMap::new();
        // Every number a node has had: a new node never takes one of them (point 5).
        let mut ever: HashSet<Ino> = HashSet::from([ROOT_INO]);
        let pick = |t: &InodeTable, i: usize| -> Ino {
            let mut live: Vec<Ino> = t.inner.read().nodes.keys().copied().collect();
            live.sort_unstable();
            live[i % live.len()]
        };
        for op in ops {
            match op {
                Op::Lookup { parent, name, server, is_dir } => {
                    let p = pick(&t, parent);
                    let takes_children = t.inner.read().nodes.get(&p).is_some_and(Node::is_dir);
                    let before: HashSet<Ino> = t.inner.read().nodes.keys().copied().collect();
                    let attr = server_attr(server, is_dir);
                    let ino = t.lookup(p, &[b'a' + name], &attr);
                    prop_assert_eq!(ino.is_some(), takes_children, "only directories are parents");
                    if let Some(ino) = ino {
                        if !before.contains(&ino) {
                            prop_assert!(ever.insert(ino), "number {} handed out twice", ino.0);
                            prop_assert!(
                                ino.0 == attr.ino || ino.0 >= 1 << 32,
                                "the server's number or the counter's"
                            );
                        }
                        *counts.entry(ino).or_default() += 1;
                    }
                }
                Op::Readdir { parent, name, server, is_dir } => {
                    let p = pick(&t, parent);
                    let ino = t.readdir_ino(p, &[b'a' + name], &server_attr(server, is_dir));
                    prop_assert!(
                        t.contains(ino) || !ever.contains(&ino),
                        "an untracked number is no old node's"
                    );
                }
                Op::Forget { ino, n } => {
                    let ino = pick(&t, ino);
                    t.forget(ino, n);
                    let c = counts.entry(ino).or_default();
                    *c = c.saturating_sub(n);
                }
                Op::Rename { from, old, to, new } => {
                    let (from, to) = (pick(&t, from), pick(&t, to));
                    t.rename(from, &[b'a' + old], to, &[b'a' + new]);
                }
                Op::Exchange { a, na, b, nb } => {
                    let (a, b) = (pick(&t, a), pick(&t, b));
                    t.exchange(a, &[b'a' + na], b, &[b'a' + nb]);
                }
                Op::Unlink { parent, name } => {
                    t.unlink(pick(&t, parent), &[b'a' + name]);
                }
            }
            t.check();
            // One attached node per hard-linked server file, so its names agree.
            let inner = t.inner.read();
            let mut attached: HashMap<Identity, Ino> = HashMap::new();
            for (&ino, node) in &inner.nodes {
                let Some(id) = node.identity else { continue };
                if id.kind == FileKind::Dir || !is_linked(id.server_ino) || node.names.is_empty() {
                    continue;
                }
                if let Some(other) = attached.insert(id, ino) {
                    prop_assert!(false, "{:?} has nodes {} and {}", id, ino, other);
                }
            }
            drop(inner);
            for (&ino, &want) in &counts {
                if ino != ROOT_INO {
                    let got = t.lookups(ino).unwrap_or(0);
                    prop_assert_eq!(got, want, "lookup count of {}", ino);
                }
            }
        }
    }
}
