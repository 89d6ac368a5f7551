//! Which version of a file the kernel's page cache and ours hold (crate docs, points 4 and 5):
//! a newer version seen on the server drops both, and an `open` tells the kernel whether it
//! may keep its pages (`Opened::keep_cache`).

use shelf_proto::{Attr, FileKind, Version};
use shelf_remote::Transport;

use crate::ids::Ino;
use crate::inode::{AttrStamp, Stored};
use crate::Core;

/// What the core asks the kernel to forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidate {
    /// Every cached page of the inode, and its cached attributes.
    Pages(Ino),
    /// The same, done before the hook returns: asked only from requests that hold no page
    /// of the file (a lock's), for which the kernel must have dropped them before it answers
    /// the program.
    PagesNow(Ino),
    /// The kernel's entry for `name` in directory `parent`, so its next use looks it up.
    Entry { parent: Ino, name: Vec<u8> },
    /// The same, done before the hook returns (as `PagesNow`).
    EntryNow { parent: Ino, name: Vec<u8> },
}

/// Tells the kernel what to forget ([`Invalidate`]). It must not block on the kernel from a
/// request's own thread (the kernel may hold a page lock, or a directory's lock, until that
/// request answers): the mount hands each to a thread of its own.
pub type Invalidator = Box<dyn Fn(Invalidate) + Send + Sync>;

impl<T: Transport> Core<T> {
    /// Installs the hook that tells the kernel to drop pages of a file whose content changed
    /// on the server, and entries whose name may now hold another file; without one (tests)
    /// only the core's own caches are dropped.
    pub fn set_invalidator(&self, f: Invalidator) {
        let _ = self.invalidator.set(f);
    }

    /// Passes `what` to the mount's invalidator, if there is one.
    pub(crate) fn invalidate(&self, what: Invalidate) {
        if let Some(invalidate) = self.invalidator.get() {
            invalidate(what);
        }
    }

    /// The version of the pages the kernel may hold of `ino`, if it may hold any.
    pub(crate) fn held_pages(&self, ino: Ino) -> Option<Version> {
        self.page_versions.lock().get(&ino).copied().flatten()
    }

    /// Records that the kernel may hold pages of `ino` of a version we cannot name (another
    /// client changed the file, or may have): the next open drops them, and so does the
    /// next read that learns the file's version. The entry must stay: without it a read
    /// meeting a new version would think the kernel holds no pages and keep the old ones
    /// beside new bytes.
    pub(crate) fn pages_unknown(&self, ino: Ino) {
        if let Some(held) = self.page_versions.lock().get_mut(&ino) {
            *held = None;
        }
    }

    /// Records that the kernel's pages of `ino` are of version `v` from now on: after a change
    /// of our own (drained writes, a truncate, times set) that the kernel saw happen.
    pub(crate) fn pages_are(&self, ino: Ino, v: Version) {
        self.page_versions.lock().insert(ino, Some(v));
    }

    /// Whether an open may keep the kernel's pages of `ino` (`Opened::keep_cache`): only if
    /// `held`, the version they were of before the open, is `now`, the file's version. If not,
    /// our chunks go too. Either way the kernel's pages are of `now` from here on.
    pub(crate) fn keep_pages(&self, ino: Ino, held: Option<Version>, now: Version) -> bool {
        self.pages_are(ino, now);
        let keep = held == Some(now);
        if !keep {
            self.cache.invalidate_file(ino);
        }
        keep
    }

    /// This mount changed the attributes of `ino` (or learned they changed): the entries
    /// kept with the listings of its directories show the old ones (`listing.rs`).
    pub(crate) fn entry_changed(&self, ino: Ino) {
        for (dir, _) in self.inodes.names_of(ino) {
            self.listings.entry_changed(dir);
        }
    }

    /// Records that the server now has `attr` for `ino`. Pages the kernel holds of another
    /// version must go, or a read could mix them with new bytes from us (AUTO_INVAL_DATA only
    /// notices changes of size or mtime, and an upload may keep both).
    pub(crate) fn saw_version(&self, ino: Ino, attr: &Attr) {
        self.inodes.set_attr(ino, attr);
        self.pages_of_version(ino, attr);
    }

    /// [`Core::saw_version`] for the reply to a request sent at `since`, which attributes
    /// stored meanwhile may be newer than ([`InodeTable::set_attr_since`]). Returns the
    /// attributes to go on with: `attr`, or the cached ones when they are of a later change.
    ///
    /// [`InodeTable::set_attr_since`]: crate::inode::InodeTable::set_attr_since
    pub(crate) fn saw_version_since(&self, ino: Ino, attr: &Attr, since: AttrStamp) -> Attr {
        match self.inodes.set_attr_since(ino, attr, since) {
            Stored::Newest => {
                self.pages_of_version(ino, attr);
                *attr
            }
            Stored::Older(cached) => cached,
            Stored::Unknown => *attr,
        }
    }

    /// The kernel's pages and our chunks of `ino` go unless they are of `attr`'s version.
    fn pages_of_version(&self, ino: Ino, attr: &Attr) {
        let v = attr.version();
        // `page_versions` is a leaf (lock order, `Core`): the guard lives through the match,
        // whose arms take nothing; the cache and the kernel are told after it is let go.
        let stale = match self.page_versions.lock().get_mut(&ino) {
            Some(held) if *held != Some(v) => {
                *held = Some(v);
                true
            }
            _ => false,
        };
        if stale {
            self.entry_changed(ino);
            self.cache.invalidate_file(ino);
            self.invalidate(Invalidate::Pages(ino));
        }
    }
}

/// Which of two attributes of one file tells of the later change, by the server's ctime,
/// which only moves forward. `None` for directories, whose cached times may be this mount's
/// estimate (`dir_changed`), and for attributes of different kinds.
pub(crate) fn change_order(a: &Attr, b: &Attr) -> Option<std::cmp::Ordering> {
    (a.kind == b.kind && a.kind != FileKind::Dir).then(|| a.ctime.cmp(&b.ctime))
}

/// Whether two attributes describe the same file on the server (not the same content): the
/// inode number alone is not enough, file systems reuse it at once.
pub(crate) fn same_file(a: &Attr, b: &Attr) -> bool {
    a.ino == b.ino && a.btime == b.btime && a.kind == b.kind
}
