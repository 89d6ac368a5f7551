//! Newtypes for the two numbers the kernel and the core pass back and forth, so neither can be
//! given where the other is meant (fuser has `INodeNo` and `FileHandle` for the same reason;
//! `fs.rs` converts at the edge).

use std::fmt;

/// One of our inode numbers, as the kernel knows it: handed out by [`InodeTable`], never
/// reused within a mount. Not the server's inode number (`Attr::ino`), which is only compared.
///
/// [`InodeTable`]: crate::inode::InodeTable
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

/// The root directory's inode number, fixed by FUSE; its path is the empty path.
pub const ROOT_INO: Ino = Ino(1);

/// A handle of an open file or directory, as `open`, `create` and `opendir` return it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fh(pub u64);

impl fmt::Display for Ino {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Fh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
