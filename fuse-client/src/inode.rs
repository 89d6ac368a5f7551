//! [`InodeTable`]: our inode numbers, the kernel's lookup counts, and where each inode is.
//!
//! The server speaks paths, the kernel speaks inode numbers; this table translates. What is
//! hard, and how the code is arranged for it:
//!
//! 1. **Paths change under an inode.** A rename moves a whole subtree. Each node stores only its
//!    parent and its name, and [`InodeTable::path`] walks up to the root, so a rename updates one
//!    node and every descendant's path follows for free.
//! 2. **Names change under a path.** Another client may replace a file; the same name then holds a
//!    different server inode. Each node remembers the server's identity (inode number and kind)
//!    from its lookup; a lookup finding a different identity gives the name a *new* inode number
//!    and detaches the old node, so the kernel never mixes the two files' pages and attributes.
//! 3. **The kernel decides when a node may go.** Lookup, create, mkdir and each readdirplus entry
//!    (except `.` and `..`) add one lookup; `forget(ino, n)` subtracts with saturation. A node
//!    lives while it is the root, has lookups, or has live children (their paths go through it,
//!    and a batch FORGET may name a parent before its child). A FORGET for a node already gone
//!    is not an error (mountpoint's `InodeMap` and `forget` are the model).
//! 4. **Detached nodes.** Unlinking, renaming over, or replacing a name detaches the node that
//!    was there: it keeps its number until forgotten but has no path, so [`InodeTable::path`]
//!    answers `None` and the core fails operations on it (ESTALE) instead of touching whatever
//!    now has that name. No silly-rename: an open unlinked file is lost to us, as with a path
//!    protocol it must be.
//! 5. **Numbers are never reused** within a mount (a counter), so the FUSE generation can stay 0.
//!
//! Hard links: each name gets its own node even when two names reach one server inode. That
//! keeps paths unambiguous; the price is that a write through one name leaves the other name's
//! cached attributes stale until their TTL runs out (cached data is keyed by version, so it is
//! not served stale once the new attributes arrive).
//!
//! Names are taken as given: the server validates them, and nodes are only created after it
//! answered for the name.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use shelf_proto::{Attr, FileKind};

/// The root directory's inode number, fixed by FUSE; its path is the empty path.
pub const ROOT_INO: u64 = 1;

/// See the module docs. All methods take `&self` and hold the lock briefly, never across I/O.
#[derive(Debug)]
pub struct InodeTable {
    inner: RwLock<Inner>,
}

#[derive(Debug)]
struct Inner {
    nodes: HashMap<u64, Node>,
    /// The next inode number to hand out; only ever grows.
    next_ino: u64,
}

#[derive(Debug)]
struct Node {
    /// Where the node is; `None` for the root and for detached nodes.
    link: Option<Link>,
    /// The server's file behind the name when the node was made; `None` for the root.
    identity: Option<Identity>,
    /// Kernel lookup references.
    lookups: u64,
    /// Attached children by name. A child's `link` and this map always agree.
    children: HashMap<Vec<u8>, u64>,
    /// The last attributes fetched and when.
    attr: Option<(Attr, Instant)>,
}

#[derive(Debug, Clone)]
struct Link {
    parent: u64,
    name: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    server_ino: u64,
    kind: FileKind,
}

impl Identity {
    fn of(attr: &Attr) -> Self {
        Identity {
            server_ino: attr.ino,
            kind: attr.kind,
        }
    }
}

impl Node {
    fn new(link: Option<Link>, identity: Option<Identity>) -> Self {
        Node {
            link,
            identity,
            lookups: 0,
            children: HashMap::new(),
            attr: None,
        }
    }
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    /// A table holding only the root.
    pub fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT_INO, Node::new(None, None));
        InodeTable {
            inner: RwLock::new(Inner {
                nodes,
                next_ino: ROOT_INO + 1,
            }),
        }
    }

    /// The node's path relative to the library root (`b""` for the root); `None` if the inode
    /// is unknown (forgotten) or detached, itself or through an ancestor.
    pub fn path(&self, ino: u64) -> Option<Vec<u8>> {
        self.inner.read().path(ino)
    }

    /// The path of `name` inside directory `parent`; `None` as for [`path`](Self::path).
    pub fn child_path(&self, parent: u64, name: &[u8]) -> Option<Vec<u8>> {
        let mut path = self.path(parent)?;
        join(&mut path, name);
        Some(path)
    }

    /// The inode currently known under `name` in `parent`, if any.
    pub fn child(&self, parent: u64, name: &[u8]) -> Option<u64> {
        let inner = self.inner.read();
        inner.nodes.get(&parent)?.children.get(name).copied()
    }

    /// Records that the kernel learned `name` in `parent` with attributes `attr` (lookup,
    /// create, mkdir, symlink, link, readdirplus) and adds one lookup reference. Returns the
    /// inode number: the existing one if the name still holds the same server file, otherwise a
    /// new one (an old node under the name is detached). Caches `attr`. `None` if `parent` is
    /// not in the table.
    pub fn lookup(&self, parent: u64, name: &[u8], attr: &Attr) -> Option<u64> {
        let mut inner = self.inner.write();
        let ino = inner.learn(parent, name, attr)?;
        let node = inner.nodes.get_mut(&ino)?;
        node.lookups = node.lookups.saturating_add(1);
        Some(ino)
    }

    /// The inode number to report for a plain readdir entry, which takes no lookup reference:
    /// the existing node's if `name` in `parent` is known and still the same server file,
    /// otherwise a fresh number that is not tracked (a later lookup gets another one). Tracking
    /// would keep nodes the kernel never forgets.
    pub fn readdir_ino(&self, parent: u64, name: &[u8], attr: &Attr) -> u64 {
        {
            let inner = self.inner.read();
            if let Some(ino) = inner.same_child(parent, name, attr) {
                return ino;
            }
        }
        self.inner.write().allocate()
    }

    /// Subtracts `n` kernel lookups (saturating) and drops the node once nothing holds it.
    /// Unknown inodes are ignored; the root is never dropped.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut inner = self.inner.write();
        if let Some(node) = inner.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            inner.collect(&[ino]);
        }
    }

    /// Records a successful rename on the server: the node under `old_name` (if known) moves to
    /// `new_name` in `new_parent`, its descendants with it, and a node that was under the new
    /// name is detached. Returns the moved inode. If the new place can't be represented (an
    /// unknown `new_parent`, or one inside the moved directory, which the server refuses anyway)
    /// the node is detached rather than left at a wrong path.
    pub fn rename(
        &self,
        old_parent: u64,
        old_name: &[u8],
        new_parent: u64,
        new_name: &[u8],
    ) -> Option<u64> {
        let mut inner = self.inner.write();
        if old_parent == new_parent && old_name == new_name {
            return inner
                .nodes
                .get(&old_parent)?
                .children
                .get(old_name)
                .copied();
        }
        let moved = inner.unlink_name(old_parent, old_name);
        let replaced = inner.unlink_name(new_parent, new_name);
        if let Some(ino) = moved {
            inner.attach(ino, new_parent, new_name);
        }
        // The new parent too: with an unknown source it only lost the replaced child.
        let candidates = [Some(old_parent), Some(new_parent), moved, replaced];
        inner.collect(&candidates.into_iter().flatten().collect::<Vec<_>>());
        moved
    }

    /// Records a successful `RENAME_EXCHANGE`: the nodes under the two names swap places (either
    /// may be unknown).
    pub fn exchange(&self, parent_a: u64, name_a: &[u8], parent_b: u64, name_b: &[u8]) {
        let mut inner = self.inner.write();
        if parent_a == parent_b && name_a == name_b {
            return;
        }
        let a = inner.unlink_name(parent_a, name_a);
        let b = inner.unlink_name(parent_b, name_b);
        if let Some(a) = a {
            inner.attach(a, parent_b, name_b);
        }
        if let Some(b) = b {
            inner.attach(b, parent_a, name_a);
        }
        let candidates = [Some(parent_a), Some(parent_b), a, b];
        inner.collect(&candidates.into_iter().flatten().collect::<Vec<_>>());
    }

    /// Records that `name` in `parent` is gone (unlink, rmdir, or seen missing): the node there
    /// is detached and kept until forgotten. Returns it.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Option<u64> {
        let mut inner = self.inner.write();
        let ino = inner.unlink_name(parent, name)?;
        inner.collect(&[ino, parent]);
        Some(ino)
    }

    /// Caches `attr` as fetched now. Unknown inodes are ignored.
    pub fn set_attr(&self, ino: u64, attr: &Attr) {
        if let Some(node) = self.inner.write().nodes.get_mut(&ino) {
            node.attr = Some((*attr, Instant::now()));
        }
    }

    /// The cached attributes if fetched less than `ttl` ago.
    pub fn cached_attr(&self, ino: u64, ttl: Duration) -> Option<Attr> {
        let inner = self.inner.read();
        let (attr, at) = inner.nodes.get(&ino)?.attr?;
        (at.elapsed() < ttl).then_some(attr)
    }

    /// The last attributes fetched, however old (e.g. the version an open file was read at).
    pub fn last_attr(&self, ino: u64) -> Option<Attr> {
        let inner = self.inner.read();
        Some(inner.nodes.get(&ino)?.attr?.0)
    }

    /// Forgets the cached attributes, e.g. after our own write changed them.
    pub fn invalidate_attr(&self, ino: u64) {
        if let Some(node) = self.inner.write().nodes.get_mut(&ino) {
            node.attr = None;
        }
    }

    /// The kernel lookup count, or `None` if the inode is not in the table.
    pub fn lookups(&self, ino: u64) -> Option<u64> {
        Some(self.inner.read().nodes.get(&ino)?.lookups)
    }

    /// Whether the inode is in the table (attached or detached).
    pub fn contains(&self, ino: u64) -> bool {
        self.inner.read().nodes.contains_key(&ino)
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.inner.read().nodes.len()
    }

    /// Always false: the root is never dropped. (Here for clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }
}

fn join(path: &mut Vec<u8>, name: &[u8]) {
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
}

impl Inner {
    fn allocate(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    fn path(&self, ino: u64) -> Option<Vec<u8>> {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut at = ino;
        // The links form a tree rooted at ROOT_INO (attach refuses cycles); the bound is a
        // guard so a bug shows as `None` rather than a hang.
        for _ in 0..=self.nodes.len() {
            if at == ROOT_INO {
                let mut path = Vec::new();
                for name in names.iter().rev() {
                    join(&mut path, name);
                }
                return Some(path);
            }
            let link = self.nodes.get(&at)?.link.as_ref()?;
            names.push(&link.name);
            at = link.parent;
        }
        None
    }

    /// The child under `name` if it is the same server file as `attr` describes.
    fn same_child(&self, parent: u64, name: &[u8], attr: &Attr) -> Option<u64> {
        let ino = *self.nodes.get(&parent)?.children.get(name)?;
        let node = self.nodes.get(&ino)?;
        (node.identity == Some(Identity::of(attr))).then_some(ino)
    }

    /// The node for `name` in `parent` as `attr` describes it, creating it if needed, with
    /// `attr` cached. Takes no lookup reference; the caller must, or collect the node.
    fn learn(&mut self, parent: u64, name: &[u8], attr: &Attr) -> Option<u64> {
        let ino = match self.same_child(parent, name, attr) {
            Some(ino) => ino,
            None => {
                self.nodes.get(&parent)?;
                let old = self.unlink_name(parent, name);
                let ino = self.allocate();
                let link = Link {
                    parent,
                    name: name.to_vec(),
                };
                self.nodes
                    .insert(ino, Node::new(Some(link), Some(Identity::of(attr))));
                if let Some(p) = self.nodes.get_mut(&parent) {
                    p.children.insert(name.to_vec(), ino);
                }
                if let Some(old) = old {
                    self.collect(&[old]);
                }
                ino
            }
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.attr = Some((*attr, Instant::now()));
        }
        Some(ino)
    }

    /// Detaches the child under `name` in `parent` and returns it. Drops nothing: the caller
    /// collects once all links are in place, so a parent isn't dropped mid-rename.
    fn unlink_name(&mut self, parent: u64, name: &[u8]) -> Option<u64> {
        let ino = self.nodes.get_mut(&parent)?.children.remove(name)?;
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.link = None;
        }
        Some(ino)
    }

    /// Links the detached node `ino` as `name` in `parent`; leaves it detached if `parent` is
    /// unknown or is `ino` or lies below it (that would make a cycle). `name` must be free.
    fn attach(&mut self, ino: u64, parent: u64, name: &[u8]) {
        if !self.nodes.contains_key(&parent) || self.is_ancestor_or_self(ino, parent) {
            return;
        }
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.insert(name.to_vec(), ino);
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.link = Some(Link {
                parent,
                name: name.to_vec(),
            });
        }
    }

    fn is_ancestor_or_self(&self, ancestor: u64, mut ino: u64) -> bool {
        for _ in 0..=self.nodes.len() {
            if ino == ancestor {
                return true;
            }
            match self.nodes.get(&ino).and_then(|n| n.link.as_ref()) {
                Some(link) => ino = link.parent,
                None => return false,
            }
        }
        // Unreachable while the links form a tree; refusing is the safe answer.
        true
    }

    /// Drops each candidate that nothing holds any more (not the root, no lookups, no
    /// children), then its parent if that became droppable, and so on up.
    fn collect(&mut self, candidates: &[u64]) {
        for &start in candidates {
            let mut at = start;
            while let Some(node) = self.nodes.get(&at) {
                if at == ROOT_INO || node.lookups > 0 || !node.children.is_empty() {
                    break;
                }
                let link = self.nodes.remove(&at).and_then(|n| n.link);
                let Some(link) = link else {
                    break;
                };
                if let Some(parent) = self.nodes.get_mut(&link.parent) {
                    if parent.children.get(&link.name) == Some(&at) {
                        parent.children.remove(&link.name);
                    }
                }
                at = link.parent;
            }
        }
    }

    /// Panics unless the table's invariants hold (tests only).
    #[cfg(test)]
    fn check(&self) {
        use std::collections::HashSet;
        assert!(self.nodes.contains_key(&ROOT_INO), "root is never dropped");
        let mut paths = HashSet::new();
        for (&ino, node) in &self.nodes {
            assert!(ino < self.next_ino, "numbers come from the counter");
            if ino != ROOT_INO {
                assert!(
                    node.lookups > 0 || !node.children.is_empty(),
                    "inode {ino} is held by nothing but was kept"
                );
            } else {
                assert!(node.link.is_none(), "root has no parent");
            }
            if let Some(link) = &node.link {
                let parent = self
                    .nodes
                    .get(&link.parent)
                    .expect("parent of a linked node lives");
                assert_eq!(
                    parent.children.get(&link.name),
                    Some(&ino),
                    "link and children agree"
                );
            }
            for (name, child) in &node.children {
                let c = self.nodes.get(child).expect("child lives");
                let link = c.link.as_ref().expect("child is linked");
                assert_eq!(
                    (link.parent, &link.name),
                    (ino, name),
                    "children and link agree"
                );
            }
            if let Some(path) = self.path(ino) {
                assert!(paths.insert(path.clone()), "path {path:?} is unique");
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
        }
    }

    fn file(server_ino: u64) -> Attr {
        attr(server_ino, FileKind::File)
    }

    fn dir(server_ino: u64) -> Attr {
        attr(server_ino, FileKind::Dir)
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
        assert_eq!(t.path(2), None, "unknown inode");
        assert_eq!(t.child_path(2, b"a"), None);
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
        assert_eq!(t.lookup(999, b"f", &file(11)), None, "unknown parent");
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
        t.forget(12345, 3);
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
        assert_ne!(
            t.lookup(ROOT_INO, b"g", &file(12)),
            Some(g),
            "numbers never reused"
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
        t.set_attr(4242, &dir(1)); // unknown: ignored
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
            3 => (idx.clone(), 0u64..3).prop_map(|(ino, n)| Op::Forget { ino, n }),
            2 => (idx.clone(), name.clone(), idx.clone(), name.clone())
                .prop_map(|(from, old, to, new)| Op::Rename { from, old, to, new }),
            1 => (idx.clone(), name.clone(), idx.clone(), name.clone())
                .prop_map(|(a, na, b, nb)| Op::Exchange { a, na, b, nb }),
            1 => (idx, name).prop_map(|(parent, name)| Op::Unlink { parent, name }),
        ]
    }

    proptest! {
        #[test]
        fn invariants_hold_under_random_ops(ops in proptest::collection::vec(op(), 0..150)) {
            let t = InodeTable::new();
            // Model of lookup counts: what the kernel would believe it holds.
            let mut counts: HashMap<u64, u64> = HashMap::new();
            let mut highest = ROOT_INO;
            let pick = |t: &InodeTable, i: usize| -> u64 {
                let mut live: Vec<u64> = t.inner.read().nodes.keys().copied().collect();
                live.sort_unstable();
                live[i % live.len()]
            };
            for op in ops {
                match op {
                    Op::Lookup { parent, name, server, is_dir } => {
                        let p = pick(&t, parent);
                        let kind = if is_dir { FileKind::Dir } else { FileKind::File };
                        let ino = t.lookup(p, &[b'a' + name], &attr(server, kind));
                        let ino = ino.expect("live parent");
                        prop_assert!(ino <= highest + 1, "counter order");
                        highest = highest.max(ino);
                        *counts.entry(ino).or_default() += 1;
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
                for (&ino, &want) in &counts {
                    if ino != ROOT_INO {
                        let got = t.lookups(ino).unwrap_or(0);
                        prop_assert_eq!(got, want, "lookup count of {}", ino);
                    }
                }
            }
        }
    }
}
