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
//! 5. **Numbers are the server's where they can be, and never reused** within a mount, so
//!    the FUSE generation can stay 0. fuser sends a node's number as both its node id and its
//!    `st_ino`, so a node takes its file's server inode number when no node of this mount
//!    has had that number yet: `ls -i`, `find -inum` and git's index (which compares
//!    `st_ino`, and on a mount rereads every file whose number it finds changed) see the
//!    numbers the files have on the server, and keep them across remounts. Any other node
//!    (the number was had by another node before, now gone or still there; the root's 1; past
//!    [`MAX_SERVER_NUMBERS`]) takes a number from a counter that starts above the 32-bit
//!    numbers most file systems use. Never reusing a number keeps every table the core keys
//!    by node (listings, watches, pages, locks) safe without telling them of forgotten
//!    nodes; the price is remembering each number handed out.
//!
//! **Hard links** share one node, as on a local file system: `ls -li`, `cp -a`, `tar`,
//! `rsync -H` and `find -samefile` see one `st_ino`, and attributes fetched through one name
//! (nlink after a link or unlink, size after a write) serve every name. So a non-directory node
//! has a *list* of names, and an index from server identity to node lets a lookup of a new name
//! with `nlink > 1` join the node already known for that server file instead of making another.
//! Only attached nodes are joined (a detached one may stand for a file that is gone, whose
//! server number was reused), and detached ones whose file the core keeps under a hidden name
//! ([`InodeTable::set_hidden`]): that file is still there, and open (or about to be), so a
//! name of it reached again (its other hard link) must lead to the same node, or two nodes
//! would each buffer writes and cache pages for one file. [`InodeTable::path`] answers
//! through the first name that resolves; the name the server most recently vouched for
//! (looked up, linked or renamed to) is kept first, so a name another client removed is not
//! preferred over a fresh one. Unlink, rename and exchange act on the one name they are
//! given; the node stays attached through its others. Directories cannot be hard-linked, so they never share and have at most one name;
//! and only directories (and the root) take children, so the names form a tree of directories
//! with files as leaves, and a path walk never meets a choice above the file itself.
//!
//! Names are taken as given: the server validates them, and nodes are only created after it
//! answered for the name.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use shelf_proto::{Attr, FileKind, Timestamp};

use crate::ids::Ino;
pub use crate::ids::ROOT_INO;
use crate::versions::change_order;

/// Server inode numbers handed out as node numbers, at most (module docs, point 5): a set
/// of 2^20 `u64`s, some 16 to 20 MiB by the hash set's layout (estimated, not measured).
/// Past it, new nodes take counter numbers.
pub const MAX_SERVER_NUMBERS: usize = 1 << 20;
/// Where the counter of numbers not the server's starts (module docs, point 5).
const COUNTER_START: u64 = 1 << 32;

/// Where a node's cached attributes stood when a request left ([`InodeTable::attr_stamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrStamp(u64);

/// What [`InodeTable::set_attr_since`] made of a reply's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// They are the newest known, and cached.
    Newest,
    /// The cached ones, given here, are of a later change; nothing was stored.
    Older(Attr),
    /// Which is newer cannot be told (or the node is unknown): nothing is cached now.
    Unknown,
}

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
    /// The next counter number to hand out (module docs, point 5); only ever grows.
    next_ino: Ino,
    /// Every number handed to a node so far, the root's included: none is handed out twice.
    used: HashSet<u64>,
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
    /// Counts the changes of `attr` (stored or dropped), so a reply can tell whether another
    /// was stored while it travelled ([`InodeTable::set_attr_since`]).
    attr_gen: u64,
    /// The core keeps the file under a hidden name on the server, so while detached it is
    /// still a file that exists, and new names of it join this node (module docs).
    hidden: bool,
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
            attr_gen: 0,
            hidden: false,
        }
    }

    fn store_attr(&mut self, attr: Option<Attr>) {
        self.attr = attr.map(|a| (a, Instant::now()));
        self.attr_gen += 1;
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
                next_ino: Ino(COUNTER_START),
                used: HashSet::from([ROOT_INO.0]),
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

    /// Whether the node is a directory (the root is).
    pub fn is_dir(&self, ino: Ino) -> bool {
        self.inner.read().nodes.get(&ino).is_some_and(Node::is_dir)
    }

    /// Of `dirs`, those that are `top` or lie beneath it (walking up the names known here).
    pub fn within(&self, top: Ino, dirs: impl IntoIterator<Item = Ino>) -> Vec<Ino> {
        let inner = self.inner.read();
        dirs.into_iter()
            .filter(|&d| {
                let mut at = d;
                // A tree rooted at ROOT_INO (`dir_path`); the bound guards against a bug.
                for _ in 0..=inner.nodes.len() {
                    if at == top {
                        return true;
                    }
                    match inner.nodes.get(&at).and_then(|n| n.names.first()) {
                        Some(link) => at = link.parent,
                        None => return false,
                    }
                }
                false
            })
            .collect()
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
            // What a lookup would give it now, without taking the number (none is made).
            None if inner.is_free(attr.ino) => Ino(attr.ino),
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

    /// The names of the node: each parent directory and the name in it.
    pub fn names_of(&self, ino: Ino) -> Vec<(Ino, Vec<u8>)> {
        let inner = self.inner.read();
        inner.nodes.get(&ino).map_or_else(Vec::new, |n| {
            n.names.iter().map(|l| (l.parent, l.name.clone())).collect()
        })
    }

    /// The attached children of directory `dir`, by name.
    pub fn children_of(&self, dir: Ino) -> Vec<(Vec<u8>, Ino)> {
        let inner = self.inner.read();
        inner.nodes.get(&dir).map_or_else(Vec::new, |n| {
            n.children
                .iter()
                .map(|(name, ino)| (name.clone(), *ino))
                .collect()
        })
    }

    /// Caches `attr` as fetched now, for every name of the node. Unknown inodes are ignored.
    pub fn set_attr(&self, ino: Ino, attr: &Attr) {
        if let Some(node) = self.inner.write().nodes.get_mut(&ino) {
            node.store_attr(Some(*attr));
        }
    }

    /// Where the cached attributes of `ino` stand now: taken before a request whose reply
    /// carries attributes is sent, and given to [`InodeTable::set_attr_since`] with them.
    pub fn attr_stamp(&self, ino: Ino) -> AttrStamp {
        AttrStamp(self.inner.read().nodes.get(&ino).map_or(0, |n| n.attr_gen))
    }

    /// Caches `attr`, from the reply to a request sent at `since`, unless attributes stored
    /// while it travelled may be of a later change. Replies to requests that overlap come
    /// back in any order (several connections, several server processes), so an answer
    /// to a `stat` sent before a truncate can arrive after the truncate's own: stored
    /// blindly, it would bring back the old size. With nothing stored since, `attr` is the
    /// newest; otherwise [`change_order`] orders the two, and when it cannot (the same tick,
    /// different contents; a directory; attributes dropped meanwhile) the cache forgets
    /// both, so the next use asks.
    pub fn set_attr_since(&self, ino: Ino, attr: &Attr, since: AttrStamp) -> Stored {
        let mut inner = self.inner.write();
        let Some(node) = inner.nodes.get_mut(&ino) else {
            return Stored::Unknown;
        };
        if node.attr_gen != since.0 {
            let cached = node.attr.map(|(c, _)| c);
            match cached.map(|c| (c, c.version() == attr.version(), change_order(attr, &c))) {
                // The same state, told twice.
                Some((_, true, _)) => return Stored::Newest,
                Some((c, false, Some(Ordering::Less))) => return Stored::Older(c),
                Some((_, false, Some(Ordering::Greater))) => {}
                // The same tick with other contents, a directory, or dropped meanwhile.
                _ => {
                    node.store_attr(None);
                    return Stored::Unknown;
                }
            }
        }
        node.store_attr(Some(*attr));
        Stored::Newest
    }

    /// The cached attributes if fetched less than `ttl` ago.
    pub fn cached_attr(&self, ino: Ino, ttl: Duration) -> Option<Attr> {
        let inner = self.inner.read();
        let (attr, at) = inner.nodes.get(&ino)?.attr?;
        (at.elapsed() < ttl).then_some(attr)
    }

    /// The cached attributes and when they were asked for (`fresh.rs`), however old.
    pub fn cached_attr_at(&self, ino: Ino) -> Option<(Attr, Instant)> {
        self.inner.read().nodes.get(&ino)?.attr
    }

    /// Dates the cached attributes back to `asked`, when the request that fetched them was
    /// sent, if that is earlier than when they were stored (`fresh.rs`).
    pub fn asked_at(&self, ino: Ino, asked: Instant) {
        if let Some(node) = self.inner.write().nodes.get_mut(&ino) {
            if let Some((_, at)) = &mut node.attr {
                *at = (*at).min(asked);
            }
        }
    }

    /// The directory whose watch tells the changes of the node's entry and attributes: a
    /// directory's own (its watch reports changes of itself), a file's first parent. `None`
    /// for unknown or detached non-directories.
    pub fn told_by(&self, ino: Ino) -> Option<Ino> {
        let inner = self.inner.read();
        let node = inner.nodes.get(&ino)?;
        if node.is_dir() {
            return Some(ino);
        }
        node.names.first().map(|l| l.parent)
    }

    /// The last attributes fetched, however old (e.g. the version an open file was read at).
    pub fn last_attr(&self, ino: Ino) -> Option<Attr> {
        let inner = self.inner.read();
        Some(inner.nodes.get(&ino)?.attr?.0)
    }

    /// Whether `attr` describes the server file the node was made for; `None` for the root
    /// and unknown inodes. Unlike `last_attr`, this outlives `invalidate_attr`: a node whose
    /// attributes were dropped (another client changed the file) must still not take on
    /// another file that now has its name.
    pub fn is_same_file(&self, ino: Ino, attr: &Attr) -> Option<bool> {
        let inner = self.inner.read();
        let identity = inner.nodes.get(&ino)?.identity?;
        Some(identity == Identity::of(attr))
    }

    /// Records whether the core keeps the node's file under a hidden name on the server (it
    /// lost its names while open or known to the kernel); while it does, a new name of the
    /// file joins the node even if it is detached. Unknown inodes are ignored.
    pub fn set_hidden(&self, ino: Ino, hidden: bool) {
        if let Some(node) = self.inner.write().nodes.get_mut(&ino) {
            node.hidden = hidden;
        }
    }

    /// Forgets the cached attributes, e.g. after our own write changed them.
    pub fn invalidate_attr(&self, ino: Ino) {
        if let Some(node) = self.inner.write().nodes.get_mut(&ino) {
            node.store_attr(None);
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
    /// A counter number no node has had (module docs, point 5). Remembered only while
    /// server numbers are still handed out, as only those could meet it again.
    fn allocate(&mut self) -> Ino {
        loop {
            let ino = self.next_ino;
            self.next_ino.0 += 1;
            if !self.used.contains(&ino.0) {
                if self.used.len() < MAX_SERVER_NUMBERS {
                    self.used.insert(ino.0);
                }
                return ino;
            }
        }
    }

    /// Whether a new node may take the server's number `n` (module docs, point 5).
    fn is_free(&self, n: u64) -> bool {
        n != 0 && !self.used.contains(&n) && self.used.len() < MAX_SERVER_NUMBERS
    }

    /// The number for a new node of the server's file numbered `n`: `n` if it is free.
    fn number_for(&mut self, n: u64) -> Ino {
        if self.is_free(n) {
            self.used.insert(n);
            Ino(n)
        } else {
            self.allocate()
        }
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

    /// The node a new name of the file `attr` describes should join: only for a hard-linked
    /// non-directory, and the newest such node that is attached or kept hidden.
    fn sharer(&self, attr: &Attr) -> Option<Ino> {
        if attr.kind == FileKind::Dir || attr.nlink <= 1 {
            return None;
        }
        let candidates = self.by_identity.get(&Identity::of(attr))?;
        candidates.iter().rev().copied().find(|ino| {
            self.nodes
                .get(ino)
                .is_some_and(|n| (!n.names.is_empty() || n.hidden) && n.children.is_empty())
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
            node.store_attr(Some(*attr));
        }
        Some(ino)
    }

    /// A new detached node for `identity`, indexed if it is not a directory.
    fn create(&mut self, identity: Identity) -> Ino {
        let ino = self.number_for(identity.server_ino);
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
            assert!(
                self.used.contains(&ino.0) || self.used.len() >= MAX_SERVER_NUMBERS,
                "every node's number is remembered"
            );
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
mod tests;
