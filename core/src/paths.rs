//! Inode to server path (crate docs, point 1): `path_of` is the only way an inode becomes a
//! path, and names are checked before they become one.

use shelf_proto::{Attr, Code, FileKind};
use shelf_remote::Transport;

use crate::error::{FsError, FsResult};
use crate::ids::Ino;
use crate::namespace::Entry;
use crate::{Core, ROOT_INO};
use shelf_proto::reserved::is_reserved_name;

/// Longest name Linux allows in one path component.
const NAME_MAX: usize = 255;

impl<T: Transport> Core<T> {
    /// The server path of an inode: its hidden name if it lost its own while open.
    ///
    /// An inode whose name was removed or replaced has no path: ESTALE, on which the kernel
    /// walks the path again (`retry_estale`), so an `open` or `stat` that raced with a rename
    /// over its name finds the new file instead of failing, as on NFS.
    ///
    /// Takes `open`, then `kept`, then `inodes`, one after the other and never two at once;
    /// a caller may hold `names` or a file's `writes`, both above all three (lock order,
    /// `Core`), but never `open` or `kept`.
    pub(crate) fn path_of(&self, ino: Ino) -> FsResult<Vec<u8>> {
        if let Some(hidden) = self.open.lock().get(&ino).and_then(|s| s.hidden.clone()) {
            return Ok(hidden);
        }
        if let Some(hidden) = self.kept.lock().get(&ino) {
            return Ok(hidden.clone());
        }
        self.inodes.path(ino).ok_or(FsError::Local(Code::Stale))
    }

    /// The path of an existing `name` in `parent`. The names the implementation keeps for
    /// itself (`shelf_proto::reserved`) are absent here as in listings: ENOENT.
    pub(crate) fn child_path(&self, parent: Ino, name: &[u8]) -> FsResult<Vec<u8>> {
        check_name(name)?;
        if is_reserved_name(parent == ROOT_INO, name) {
            return Err(Code::NotFound.into());
        }
        self.inodes
            .child_path(parent, name)
            .ok_or(FsError::Local(Code::NotFound))
    }

    /// The path of a `name` to be made in `parent` (create, mkdir, symlink, link, a rename's
    /// target). One of our reserved names is refused, EPERM: it is absent to lookups, but
    /// making it would clash with what the mount or a put keeps under it.
    pub(crate) fn new_child_path(&self, parent: Ino, name: &[u8]) -> FsResult<Vec<u8>> {
        check_name(name)?;
        if is_reserved_name(parent == ROOT_INO, name) {
            return Err(Code::NotPermitted.into());
        }
        self.child_path(parent, name)
    }

    /// Records attributes fetched from the server and resolves the name to an inode, counting
    /// one kernel lookup.
    pub(crate) fn enter(&self, parent: Ino, name: &[u8], attr: Attr) -> FsResult<Entry> {
        // The parent can vanish from the table only if the kernel forgot it mid-call.
        let ino = self
            .inodes
            .lookup(parent, name, &attr)
            .ok_or(FsError::Local(Code::Stale))?;
        Ok(Entry {
            ino,
            attr: self.shown(ino, attr),
        })
    }

    pub(crate) fn is_dir(&self, ino: Option<Ino>) -> bool {
        ino.and_then(|i| self.inodes.last_attr(i))
            .is_some_and(|a| a.kind == FileKind::Dir)
    }

    pub(crate) fn same_node(&self, parent: Ino, name: &[u8], ino: Ino) -> bool {
        self.inodes.child(parent, name) == Some(ino)
    }
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(Code::NameTooLong.into());
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Code::Invalid.into());
    }
    Ok(())
}
