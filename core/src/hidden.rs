//! Files kept under a hidden name after losing their own while the kernel may still use them
//! (crate docs, point 2): open files that are unlinked or renamed over, and files renamed over
//! while the kernel holds a lookup of them.

use std::sync::atomic::Ordering;

use shelf_proto::{rename_flags, Attr, Code, FileKind};
use shelf_remote::Transport;

use crate::error::{FsError, FsResult};
use crate::ids::Ino;
use crate::namespace::Outcome;
use crate::Core;

/// Where open files that lost their name are kept until closed: a directory at the library
/// root; and the names of such files kept in their own directory (a library spanning file
/// systems). Both are reserved names (`shelf_proto::reserved`): never listed, looked up or
/// made through the mount.
pub(crate) use shelf_proto::reserved::{HIDDEN_DIR, HIDDEN_PREFIX};

/// The hidden directory is the mounting user's alone.
const HIDDEN_DIR_MODE: u32 = 0o700;

impl<T: Transport> Core<T> {
    /// Removes the hidden names still kept, as the mount ends (the kernel sends no forgets
    /// then).
    pub fn shutdown(&self) {
        let kept: Vec<_> = self.kept.lock().drain().collect();
        for (ino, hidden) in kept {
            self.remove_hidden(ino, &hidden);
        }
    }

    /// Removes every hidden name of `ino` (one per name it lost).
    pub(crate) fn remove_hidden(&self, ino: Ino, hidden: &[Vec<u8>]) {
        self.cache.invalidate_file(ino);
        self.inodes.set_hidden(ino, false);
        for name in hidden {
            if let Err(e) = self.client.unlink(name) {
                tracing::warn!(
                    "cannot remove hidden file {}: {e}",
                    String::from_utf8_lossy(name)
                );
            }
        }
    }

    /// Whether `ino` has a hidden name on the server (open and unlinked or renamed over, or
    /// kept for the kernel): at most one, `hide` makes no second.
    pub(crate) fn is_hidden(&self, ino: Ino) -> bool {
        // Lock order (`Core`): `open`, then `kept`, one after the other.
        let open = self
            .open
            .lock()
            .get(&ino)
            .is_some_and(|s| !s.hidden.is_empty());
        open || self.kept.lock().contains_key(&ino)
    }

    /// `attr` as a program may see it: the hidden name is ours, not the program's, so it is
    /// not counted in the link count. An unlinked open file shows 0 links, as on a local
    /// file system, and the names left of a hard-linked file renamed over show how many they
    /// are. Every attribute handed to the kernel passes through here (`enter`, `getattr`,
    /// `setattr`).
    pub(crate) fn shown(&self, ino: Ino, mut attr: Attr) -> Attr {
        if self.is_hidden(ino) {
            attr.nlink = attr.nlink.saturating_sub(1);
        }
        attr
    }

    /// A regular file the kernel holds a lookup of (it may open it without asking again).
    pub(crate) fn is_file_kernel_knows(&self, ino: Ino) -> bool {
        self.inodes.lookups(ino).unwrap_or(0) > 0
            && self
                .inodes
                .last_attr(ino)
                .is_some_and(|a| a.kind == FileKind::File)
    }

    /// Gives an open file that is losing its name (`path`) a hidden one on the server, by
    /// rename (`unlink`) or by hard link (the name is about to be renamed over). A file that
    /// loses several names keeps the one hidden name it got first (below); the tables hold a
    /// list of hidden names all the same, every one removed at the last close or the kernel's
    /// forget, so no name can be left on the server for ever whatever path added it.
    pub(crate) fn hide(&self, ino: Ino, path: &[u8], by_link: bool) -> FsResult<()> {
        self.drain_writes(ino)?;
        // A file already hidden (one hard link of it lost its name before) stays reachable
        // through that name: a second would be lost when the first replaced it in `open` or
        // `kept`, and would count in the link count shown (`shown` takes off one).
        if self.is_hidden(ino) {
            if !by_link {
                self.client.unlink(path)?;
            }
            return Ok(());
        }
        // One directory at the root holds them, so the file's own directory can still be
        // removed or renamed while it is open (NFS's `.nfs*` files block both). A library that
        // spans file systems cannot rename across them: then the file stays in its directory.
        let seq = self.hidden_seq.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let unique = format!("{:x}-{}-{seq}-{nanos:x}", ino.0, std::process::id());
        let mut hidden = [HIDDEN_DIR, b"/", unique.as_bytes()].concat();
        let first = self.hide_as(ino, path, &hidden, by_link);
        let moved = match first {
            Err(e) if e.code() == Code::NotFound && self.make_hidden_dir() => {
                self.hide_as(ino, path, &hidden, by_link)
            }
            Err(e) if e.code() == Code::CrossDevice => {
                let dir = path
                    .iter()
                    .rposition(|&b| b == b'/')
                    .map_or(&b""[..], |i| &path[..=i]);
                hidden = [dir, HIDDEN_PREFIX, unique.as_bytes()].concat();
                self.hide_as(ino, path, &hidden, by_link)
            }
            other => other,
        };
        moved?;
        // Lock order (`Core`): the `open` guard lives through the match, so its arms take
        // only what lies below it: `inodes` (a leaf) and `kept`. The callers (unlink, rename)
        // hold `names`, above both; the drain above let go of this file's `writes`.
        let orphan = match self.open.lock().get_mut(&ino) {
            Some(state) => {
                state.hidden.push(hidden);
                self.inodes.set_hidden(ino, true);
                None
            }
            None if self.is_file_kernel_knows(ino) => {
                self.kept.lock().entry(ino).or_default().push(hidden);
                self.inodes.set_hidden(ino, true);
                None
            }
            // The last handle closed while the name was being hidden, and the kernel has
            // forgotten the file: nothing will release the hidden name, so it goes now.
            None => Some(hidden),
        };
        if let Some(hidden) = orphan {
            self.client.unlink(&hidden)?;
        }
        Ok(())
    }

    /// Gives the file at `path` (the inode `ino`) the name `hidden`. A reply lost on the way
    /// is not a failure if the hidden name now holds the file: else an unlinked open file
    /// would be left without any name we know, and its handles without a file.
    fn hide_as(&self, ino: Ino, path: &[u8], hidden: &[u8], by_link: bool) -> FsResult<()> {
        let sent = if by_link {
            self.client.link(path, hidden).map(drop)
        } else {
            self.client.rename(path, hidden, rename_flags::NOREPLACE)
        };
        let Err(e) = sent else {
            return Ok(());
        };
        let e = FsError::from(e);
        match self.outcome(&e, Some(ino), hidden, path) {
            Outcome::Done => Ok(()),
            Outcome::NotDone | Outcome::Unknown => Err(e),
        }
    }

    /// Makes the root's hidden directory; true if it exists afterwards.
    fn make_hidden_dir(&self) -> bool {
        match self.client.mkdir(HIDDEN_DIR, HIDDEN_DIR_MODE) {
            Ok(_) => true,
            Err(e) => e.code() == Code::Exists,
        }
    }
}
