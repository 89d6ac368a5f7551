//! [`InodeTable`]: our inode numbers, the kernel's lookup counts, and where each inode is.
//!
//! The server speaks paths, the kernel speaks inode numbers; this table translates. What is
//! hard, and how the code is arranged for it:
//!
//! 1. **Paths change under an inode.** A rename moves a whole subtree. Each node stores only
//!    its names, each a parent and a name, and [`InodeTable::path`] walks up to the root, so a
//!    rename updates one node and every descendant's path follows for free.
//! 2. **Names change under a path.** Another client may replace a file; the same name then holds a
//!    different server inode. Each node remembers the server's identity (inode number and kind)
//!    from its lookup; a lookup finding a different identity gives the name a *new* inode number
//!    and takes the name from the old node, so the kernel never mixes the two files' pages and
//!    attributes.
//! 3. **The kernel decides when a node may go.** Lookup, create, mkdir and each readdirplus entry
//!    (except `.` and `..`) add one lookup; `forget(ino, n)` subtracts with saturation. A node
//!    lives while it is the root, has lookups, or has live children (their paths go through it,
//!    and a batch FORGET may name a parent before its child). A FORGET for a node already gone
//!    is not an error (mountpoint's `InodeMap` and `forget` are the model).
//! 4. **Detached nodes.** Unlinking, renaming over, or replacing a node's last name detaches
//!    it: it keeps its number until forgotten but has no path, so [`InodeTable::path`] answers
//!    `None` and the core fails operations on it (ESTALE) instead of touching whatever now has
//!    that name. No silly-rename here: the core hides open files itself.
//! 5. **Numbers are never reused** within a mount (a counter), so the FUSE generation can stay 0.
//!
//! **Hard links** share one node, as on a local file system: `ls -li`, `cp -a`, `tar`,
//! `rsync -H` and `find -samefile` see one `st_ino`, and attributes fetched through one name
//! (nlink after a link or unlink, size after a write) serve every name. So a non-directory node
//! has a *list* of names, and an index from server identity to node lets a lookup of a new name
//! with `nlink > 1` join the node already known for that server file instead of making another.
//! Only attached nodes are joined (a detached one may stand for a file that is gone, whose
//! server number was reused). [`InodeTable::path`] answers through the first name that
//! resolves; the name the server most recently vouched for (looked up, linked or renamed to)
//! is kept first, so a name another client removed is not preferred over a fresh one. Unlink,
//! rename and exchange act on the one name they are given; the node stays attached through its
//! others. Directories cannot be hard-linked, so they never share and have at most one name;
//! and only directories (and the root) take children, so the names form a tree of directories
//! with files as leaves, and a path walk never meets a choice above the file itself.
//!
//! Names are taken as given: the server validates them, and nodes are only created after it
//! answered for the name.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use shelf_proto::{Attr, FileKind, Timestamp};

use crate::ids::Ino;
pub use crate::ids::ROOT_INO;

/// See the module docs. All methods take `&self` and hold the lock briefly, never across I/O.
#[derive(Debug)]
pub struct InodeTable {
    inner: RwLock<Inner>,
}

#[derive(Debug)]
struct Inner {
    nodes: HashMap<Ino, Node>,
    /// Every non-directory node by its server identity, oldest first. Usually one node per
    /// identity; more when a name was looked up with `nlink == 1` or after the known node was
    /// detached. A new hard link joins the newest attached one.
    by_identity: HashMap<Identity, Vec<Ino>>,
    /// The next inode number to hand out; only ever grows.
    next_ino: Ino,
}

#[derive(Debug)]
struct Node {
    /// Where the node is, most recently confirmed first; empty for the root and for detached
    /// nodes. At most one for a directory. Each agrees with its parent's `children`.
    names: Vec<Link>,
    /// The server's file behind the name when the node was made; `None` for the root.
    identity: Option<Identity>,
    /// Kernel lookup references.
    lookups: u64,
    /// Attached children by name (directories only). A child's `names` and this map agree.
    children: HashMap<Vec<u8>, Ino>,
    /// The last attributes fetched and when.
    attr: Option<(Attr, Instant)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Link {
    parent: Ino,
    name: Vec<u8>,
}

impl Link {
    fn is(&self, parent: Ino, name: &[u8]) -> bool {
        self.parent == parent && self.name == name
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Identity {
    server_ino: u64,
    /// File systems reuse a freed inode number at once; the birth time tells the new file
    /// from the old one (zero on both where the server has none).
    btime: Timestamp,
    kind: FileKind,
}

impl Identity {
    fn of(attr: &Attr) -> Self {
        Identity {
            server_ino: attr.ino,
            btime: attr.btime,
            kind: attr.kind,
        }
    }
}

impl Node {
    fn new(identity: Option<Identity>) -> Self {
        Node {
            names: Vec::new(),
            identity,
            lookups: 0,
            children: HashMap::new(),
            attr: None,
        }
    }

    /// The root and directories; nothing else takes children.
    fn is_dir(&self) -> bool {
        self.identity.is_none_or(|id| id.kind == FileKind::Dir)
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
        nodes.insert(ROOT_INO, Node::new(None));
        InodeTable {
            inner: RwLock::new(Inner {
                nodes,
                by_identity: HashMap::new(),
                next_ino: Ino(ROOT_INO.0 + 1),
            }),
        }
    }

    /// The node's path relative to the library root (`b""` for the root), through its first
    /// name that resolves; `None` if the inode is unknown (forgotten) or detached, itself or
    /// through an ancestor.
    pub fn path(&self, ino: Ino) -> Option<Vec<u8>> {
        self.inner.read().path(ino)
    }

    /// The path of `name` inside directory `parent`; `None` as for [`path`](Self::path).
    pub fn child_path(&self, parent: Ino, name: &[u8]) -> Option<Vec<u8>> {
        let mut path = self.path(parent)?;
        join(&mut path, name);
        Some(path)
    }

    /// The inode currently known under `name` in `parent`, if any.
    pub fn child(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        let inner = self.inner.read();
        inner.nodes.get(&parent)?.children.get(name).copied()
    }

    /// Records that the kernel learned `name` in `parent` with attributes `attr` (lookup,
    /// create, mkdir, symlink, link, readdirplus) and adds one lookup reference. Returns the
    /// inode number: the existing one if the name still holds the same server file; else, for
    /// a non-directory with `nlink > 1`, that of an attached node for the same server file
    /// (the name becomes another of its names); otherwise a new one. A node that held the name
    /// for another file loses it. Caches `attr` for the node, so for every name of it. `None`
    /// if `parent` is not in the table or is not a directory.
    pub fn lookup(&self, parent: Ino, name: &[u8], attr: &Attr) -> Option<Ino> {
        let mut inner = self.inner.write();
        let ino = inner.learn(parent, name, attr)?;
        let node = inner.nodes.get_mut(&ino)?;
        node.lookups = node.lookups.saturating_add(1);
        Some(ino)
    }

    /// The inode number to report for a plain readdir entry, which takes no lookup reference:
    /// the existing node's if `name` in `parent` is known and still the same server file, or
    /// that of a hard link's attached node (which then gains the name, as in
    /// [`lookup`](Self::lookup)); otherwise a fresh number that is not tracked (a later lookup
    /// gets another one). Tracking would keep nodes the kernel never forgets.
    pub fn readdir_ino(&self, parent: Ino, name: &[u8], attr: &Attr) -> Ino {
        {
            let inner = self.inner.read();
            if let Some(ino) = inner.same_child(parent, name, attr) {
                return ino;
            }
        }
        let mut inner = self.inner.write();
        // Asked again: the table may have changed between the two locks.
        if let Some(ino) = inner.same_child(parent, name, attr) {
            return ino;
        }
        let is_dir = inner.nodes.get(&parent).is_some_and(Node::is_dir);
        match inner.sharer(attr).filter(|_| is_dir) {
            Some(ino) => {
                let old = inner.unlink_name(parent, name);
                inner.add_name(ino, parent, name);
                if let Some(old) = old {
                    inner.collect(&[old]);
                }
                ino
            }
            None => inner.allocate(),
        }
    }

    /// Subtracts `n` kernel lookups (saturating) and drops the node once nothing holds it.
    /// Unknown inodes are ignored; the root is never dropped.
    /// Returns the lookups the kernel still holds (0 for an unknown inode).
    pub fn forget(&self, ino: Ino, n: u64) -> u64 {
        let mut inner = self.inner.write();
        let Some(node) = inner.nodes.get_mut(&ino) else {
            return 0;
        };
        node.lookups = node.lookups.saturating_sub(n);
        let left = node.lookups;
        inner.collect(&[ino]);
        left
    }

    /// Records a successful rename on the server: the name `old_name` (if known) moves to
    /// `new_name` in `new_parent`, a directory's descendants with it, and the node that was
    /// under the new name loses that name. Only the named link moves; other names of the node
    /// stay. Returns the moved inode. Two names of one node are left alone, as the server's
    /// `rename(2)` does nothing for two links to one file. If the new place can't be
    /// represented (an unknown or non-directory `new_parent`, or one inside the moved
    /// directory, which the server refuses anyway) the name is dropped rather than left at a
    /// wrong path.
    pub fn rename(
        &self,
        old_parent: Ino,
        old_name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
    ) -> Option<Ino> {
        let mut inner = self.inner.write();
        let moving = inner.child(old_parent, old_name);
        let target = inner.child(new_parent, new_name);
        if (old_parent == new_parent && old_name == new_name)
            || (moving.is_some() && moving == target)
        {
            return moving;
        }
        let moved = inner.unlink_name(old_parent, old_name);
        let replaced = inner.unlink_name(new_parent, new_name);
        if let Some(ino) = moved {
            inner.add_name(ino, new_parent, new_name);
        }
        // The new parent too: with an unknown source it only lost the replaced child.
        let candidates = [Some(old_parent), Some(new_parent), moved, replaced];
        inner.collect(&candidates.into_iter().flatten().collect::<Vec<_>>());
        moved
    }

    /// Records a successful `RENAME_EXCHANGE`: the nodes under the two names swap those names
    /// (either may be unknown); other names of the nodes stay. Two names of one node are left
    /// alone, as the server does.
    pub fn exchange(&self, parent_a: Ino, name_a: &[u8], parent_b: Ino, name_b: &[u8]) {
        let mut inner = self.inner.write();
        let a = inner.child(parent_a, name_a);
        let b = inner.child(parent_b, name_b);
        if (parent_a == parent_b && name_a == name_b) || (a.is_some() && a == b) {
            return;
        }
        let a = inner.unlink_name(parent_a, name_a);
        let b = inner.unlink_name(parent_b, name_b);
        if let Some(a) = a {
            inner.add_name(a, parent_b, name_b);
        }
        if let Some(b) = b {
            inner.add_name(b, parent_a, name_a);
        }
        let candidates = [Some(parent_a), Some(parent_b), a, b];
        inner.collect(&candidates.into_iter().flatten().collect::<Vec<_>>());
    }

    /// Records that `name` in `parent` is gone (unlink, rmdir, or seen missing): the node
    /// there loses that name, stays attached through any other, and is kept until forgotten.
    /// Returns it.
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        let mut inner = self.inner.write();
        let ino = inner.unlink_name(parent, name)?;
        inner.collect(&[ino, parent]);
        Some(ino)
    }

    /// Caches `attr` as fetched now, for every name of the node. Unknown inodes are ignored.
    pub fn set_attr(&self, ino: Ino, attr: &Attr) {
        if let Some(node) = self.inner.write().nodes.get_mut(&ino) {
            node.attr = Some((*attr, Instant::now()));
        }
    }

    /// The cached attributes if fetched less than `ttl` ago.
    pub fn cached_attr(&self, ino: Ino, ttl: Duration) -> Option<Attr> {
        let inner = self.inner.read();
        let (attr, at) = inner.nodes.get(&ino)?.attr?;
        (at.elapsed() < ttl).then_some(attr)
    }

    /// The last attributes fetched, however old (e.g. the version an open file was read at).
    pub fn last_attr(&self, ino: Ino) -> Option<Attr> {
        let inner = self.inner.read();
        Some(inner.nodes.get(&ino)?.attr?.0)
    }

    /// Forgets the cached attributes, e.g. after our own write changed them.
    pub fn invalidate_attr(&self, ino: Ino) {
        if let Some(node) = self.inner.write().nodes.get_mut(&ino) {
            node.attr = None;
        }
    }

    /// The kernel lookup count, or `None` if the inode is not in the table.
    pub fn lookups(&self, ino: Ino) -> Option<u64> {
        Some(self.inner.read().nodes.get(&ino)?.lookups)
    }

    /// Whether the inode is in the table (attached or detached).
    pub fn contains(&self, ino: Ino) -> bool {
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
    fn allocate(&mut self) -> Ino {
        let ino = self.next_ino;
        self.next_ino.0 += 1;
        ino
    }

    fn child(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        self.nodes.get(&parent)?.children.get(name).copied()
    }

    fn path(&self, ino: Ino) -> Option<Vec<u8>> {
        if ino == ROOT_INO {
            return Some(Vec::new());
        }
        let node = self.nodes.get(&ino)?;
        node.names.iter().find_map(|link| {
            let mut path = self.dir_path(link.parent)?;
            join(&mut path, &link.name);
            Some(path)
        })
    }

    /// The path of a directory, which has at most one name, so this is a plain walk up.
    fn dir_path(&self, dir: Ino) -> Option<Vec<u8>> {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut at = dir;
        // The directories form a tree rooted at ROOT_INO (add_name refuses cycles); the bound
        // is a guard so a bug shows as `None` rather than a hang.
        for _ in 0..=self.nodes.len() {
            if at == ROOT_INO {
                let mut path = Vec::new();
                for name in names.iter().rev() {
                    join(&mut path, name);
                }
                return Some(path);
            }
            let link = self.nodes.get(&at)?.names.first()?;
            names.push(&link.name);
            at = link.parent;
        }
        None
    }

    /// The child under `name` if it is the same server file as `attr` describes.
    fn same_child(&self, parent: Ino, name: &[u8], attr: &Attr) -> Option<Ino> {
        let ino = self.child(parent, name)?;
        let node = self.nodes.get(&ino)?;
        (node.identity == Some(Identity::of(attr))).then_some(ino)
    }

    /// The attached node a new name of the file `attr` describes should join: only for a
    /// hard-linked non-directory, and the newest such node.
    fn sharer(&self, attr: &Attr) -> Option<Ino> {
        if attr.kind == FileKind::Dir || attr.nlink <= 1 {
            return None;
        }
        let candidates = self.by_identity.get(&Identity::of(attr))?;
        candidates.iter().rev().copied().find(|ino| {
            self.nodes
                .get(ino)
                .is_some_and(|n| !n.names.is_empty() && n.children.is_empty())
        })
    }

    /// The node for `name` in `parent` as `attr` describes it, creating it if needed, with
    /// `attr` cached. Takes no lookup reference; the caller must, or collect the node.
    fn learn(&mut self, parent: Ino, name: &[u8], attr: &Attr) -> Option<Ino> {
        if !self.nodes.get(&parent)?.is_dir() {
            return None;
        }
        let ino = match self.same_child(parent, name, attr) {
            Some(ino) => {
                // The server just vouched for this name: prefer it for the node's path.
                if let Some(node) = self.nodes.get_mut(&ino) {
                    if let Some(i) = node.names.iter().position(|l| l.is(parent, name)) {
                        node.names[..=i].rotate_right(1);
                    }
                }
                ino
            }
            None => {
                let old = self.unlink_name(parent, name);
                let ino = match self.sharer(attr) {
                    Some(ino) => ino,
                    None => self.create(Identity::of(attr)),
                };
                self.add_name(ino, parent, name);
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

    /// A new detached node for `identity`, indexed if it is not a directory.
    fn create(&mut self, identity: Identity) -> Ino {
        let ino = self.allocate();
        self.nodes.insert(ino, Node::new(Some(identity)));
        if identity.kind != FileKind::Dir {
            self.by_identity.entry(identity).or_default().push(ino);
        }
        ino
    }

    /// Takes `name` in `parent` from the node under it and returns that node, which may be
    /// left detached. Drops nothing: the caller collects once all links are in place, so a
    /// parent isn't dropped mid-rename.
    fn unlink_name(&mut self, parent: Ino, name: &[u8]) -> Option<Ino> {
        let ino = self.nodes.get_mut(&parent)?.children.remove(name)?;
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.names.retain(|l| !l.is(parent, name));
        }
        Some(ino)
    }

    /// Gives `ino` the name `name` in `parent`, first among its names. Does nothing if
    /// `parent` is unknown or not a directory, or is `ino` or lies below it (that would make a
    /// cycle), or if `ino` is a directory that already has a name (directories have one).
    /// `name` must be free.
    fn add_name(&mut self, ino: Ino, parent: Ino, name: &[u8]) {
        if !self.nodes.get(&parent).is_some_and(Node::is_dir)
            || self.is_ancestor_or_self(ino, parent)
        {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        if node.is_dir() && !node.names.is_empty() {
            return;
        }
        node.names.insert(
            0,
            Link {
                parent,
                name: name.to_vec(),
            },
        );
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.insert(name.to_vec(), ino);
        }
    }

    /// Whether `ino` is `ancestor` or below it. Only directories have children, and they have
    /// one name, so this is a walk up.
    fn is_ancestor_or_self(&self, ancestor: Ino, mut ino: Ino) -> bool {
        for _ in 0..=self.nodes.len() {
            if ino == ancestor {
                return true;
            }
            match self.nodes.get(&ino).and_then(|n| n.names.first()) {
                Some(link) => ino = link.parent,
                None => return false,
            }
        }
        // Unreachable while the directories form a tree; refusing is the safe answer.
        true
    }

    /// Drops each candidate that nothing holds any more (not the root, no lookups, no
    /// children), then the parents of its names if they became droppable, and so on up.
    fn collect(&mut self, candidates: &[Ino]) {
        let mut todo = candidates.to_vec();
        while let Some(at) = todo.pop() {
            let Some(node) = self.nodes.get(&at) else {
                continue;
            };
            if at == ROOT_INO || node.lookups > 0 || !node.children.is_empty() {
                continue;
            }
            let Some(node) = self.nodes.remove(&at) else {
                continue;
            };
            if let Some(id) = node.identity {
                if let Some(inos) = self.by_identity.get_mut(&id) {
                    inos.retain(|&i| i != at);
                    if inos.is_empty() {
                        self.by_identity.remove(&id);
                    }
                }
            }
            for link in node.names {
                if let Some(parent) = self.nodes.get_mut(&link.parent) {
                    if parent.children.get(&link.name) == Some(&at) {
                        parent.children.remove(&link.name);
                    }
                }
                todo.push(link.parent);
            }
        }
    }

    /// Panics unless the table's invariants hold (tests only).
    #[cfg(test)]
    fn check(&self) {
        use std::collections::HashSet;
        assert!(self.nodes.contains_key(&ROOT_INO), "root is never dropped");
        let mut paths = HashSet::new();
        let mut indexed = 0usize;
        let mut non_dirs = 0usize;
        for (id, inos) in &self.by_identity {
            assert!(!inos.is_empty(), "no empty index entries");
            assert_ne!(id.kind, FileKind::Dir, "directories are not indexed");
            for ino in inos {
                let node = self.nodes.get(ino).expect("indexed node lives");
                assert_eq!(node.identity, Some(*id), "index and identity agree");
            }
            let unique: HashSet<_> = inos.iter().collect();
            assert_eq!(unique.len(), inos.len(), "indexed once");
            indexed += inos.len();
        }
        for (&ino, node) in &self.nodes {
            assert!(ino < self.next_ino, "numbers come from the counter");
            if ino != ROOT_INO {
                assert!(
                    node.lookups > 0 || !node.children.is_empty(),
                    "inode {ino} is held by nothing but was kept"
                );
            } else {
                assert!(node.names.is_empty(), "root has no parent");
            }
            if node.is_dir() {
                assert!(node.names.len() <= 1, "a directory has one name");
            } else {
                assert!(node.children.is_empty(), "only directories have children");
                non_dirs += 1;
            }
            let unique: HashSet<_> = node.names.iter().collect();
            assert_eq!(unique.len(), node.names.len(), "names of {ino} are unique");
            for link in &node.names {
                let parent = self
                    .nodes
                    .get(&link.parent)
                    .expect("parent of a linked node lives");
                assert!(parent.is_dir(), "parents are directories");
                assert_eq!(
                    parent.children.get(&link.name),
                    Some(&ino),
                    "name and children agree"
                );
                if let Some(mut path) = self.dir_path(link.parent) {
                    join(&mut path, &link.name);
                    assert!(paths.insert(path.clone()), "path {path:?} is unique");
                }
            }
            for (name, child) in &node.children {
                let c = self.nodes.get(child).expect("child lives");
                assert!(
                    c.names.iter().any(|l| l.is(ino, name)),
                    "children and names agree"
                );
            }
            let first = node.names.iter().find_map(|l| {
                let mut p = self.dir_path(l.parent)?;
                join(&mut p, &l.name);
                Some(p)
            });
            if ino != ROOT_INO {
                assert_eq!(
                    self.path(ino),
                    first,
                    "path is the first name's that resolves"
                );
            }
        }
        assert_eq!(
            indexed, non_dirs,
            "every non-directory node is indexed, once"
        );
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
        t.set_attr(Ino(4242), &dir(1)); // unknown: ignored
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
            let mut highest = ROOT_INO;
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
                        let ino = t.lookup(p, &[b'a' + name], &server_attr(server, is_dir));
                        prop_assert_eq!(ino.is_some(), takes_children, "only directories are parents");
                        if let Some(ino) = ino {
                            prop_assert!(ino.0 <= highest.0 + 1, "counter order");
                            highest = highest.max(ino);
                            *counts.entry(ino).or_default() += 1;
                        }
                    }
                    Op::Readdir { parent, name, server, is_dir } => {
                        let p = pick(&t, parent);
                        let ino = t.readdir_ino(p, &[b'a' + name], &server_attr(server, is_dir));
                        prop_assert!(ino.0 <= highest.0 + 1, "counter order");
                        highest = highest.max(ino);
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
}
