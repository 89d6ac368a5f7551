//! Attributes: `getattr`, `setattr`, `access`, `readlink`, `statfs`, and the cached-or-fetched
//! attributes every other operation starts from.

use std::time::{Duration, Instant};

use shelf_proto::{Attr, Code, SetAttrs, SetTime, Statfs};
use shelf_remote::Transport;

use crate::error::{FsError, FsResult};
use crate::ids::Ino;
use crate::{Core, ROOT_INO};

/// The permission bits of a mode (with setuid, setgid and sticky); the rest is the file type.
const PERM_BITS: u32 = 0o7777;

/// The permission bits a file or directory is made with: `mode` less the `umask`.
pub(crate) fn create_perm(mode: u32, umask: u32) -> u32 {
    mode & !umask & PERM_BITS
}

/// The attribute changes of a `setattr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttrRequest {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl<T: Transport> Core<T> {
    /// Asks the server for an inode's attributes. A different file behind the same name
    /// (replaced on the server) makes this inode stale.
    fn refresh(&self, ino: Ino) -> FsResult<Attr> {
        let path = self.path_of(ino)?;
        let since = self.inodes.attr_stamp(ino);
        let asked = Instant::now();
        let attr = match self.client.stat(&path) {
            Ok(attr) => attr,
            Err(e) => {
                let e = FsError::from(e);
                if e.code() == Code::NotFound {
                    self.listings_wrong_about(ino);
                }
                return Err(e);
            }
        };
        if ino != ROOT_INO && self.inodes.is_same_file(ino, &attr) == Some(false) {
            self.listings_wrong_about(ino);
            return Err(Code::Stale.into());
        }
        let newest = self.saw_version_since(ino, &attr, since);
        if newest == attr {
            self.inodes.asked_at(ino, asked);
        }
        Ok(newest)
    }

    /// The server no longer holds `ino` under its names: the listings that say it does (and
    /// would answer the kernel's next lookup, after the ESTALE an open returns) go.
    fn listings_wrong_about(&self, ino: Ino) {
        for (dir, _) in self.inodes.names_of(ino) {
            self.listings.forget(dir);
        }
    }

    pub(crate) fn attr(&self, ino: Ino) -> FsResult<Attr> {
        self.attr_within(ino, self.cfg.attr_ttl)
    }

    /// The attributes, asked of the server unless fetched less than `max_age` ago.
    pub(crate) fn attr_within(&self, ino: Ino, max_age: std::time::Duration) -> FsResult<Attr> {
        self.drain_writes(ino)?;
        match self.fresh_attr(ino, max_age) {
            Some(a) => Ok(a),
            None => self.refresh(ino),
        }
    }

    /// The cached attributes if asked for less than `max_age` ago and still fresh by the
    /// rule of their directory (`fresh.rs`).
    pub(crate) fn fresh_attr(&self, ino: Ino, max_age: Duration) -> Option<Attr> {
        let (attr, asked) = self.inodes.cached_attr_at(ino)?;
        (asked.elapsed() < max_age && self.freshness(ino).ok(asked)).then_some(attr)
    }

    /// How long the kernel may keep what it is told of `ino` now: what is left of its cached
    /// attributes' TTL, and for a directory also of the TTL of its name in its parent.
    pub fn kernel_ttl(&self, ino: Ino) -> Duration {
        let Some((_, asked)) = self.inodes.cached_attr_at(ino) else {
            return Duration::ZERO;
        };
        let own = self.freshness(ino).kernel_ttl(asked);
        match self.inodes.names_of(ino).first() {
            Some(&(parent, _)) if self.inodes.is_dir(ino) => {
                own.min(self.freshness_in(Some(parent)).kernel_ttl(asked))
            }
            _ => own,
        }
    }

    pub fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        Ok(self.shown(ino, self.attr(ino)?))
    }

    pub fn setattr(&self, ino: Ino, req: SetAttrRequest) -> FsResult<Attr> {
        // Ownership is presented, not stored: every file is the mounting user's, so only a
        // chown to that user (a no-op) is allowed (DESIGN.md, "Ownership").
        if req.uid.is_some_and(|u| u != self.cfg.uid) || req.gid.is_some_and(|g| g != self.cfg.gid)
        {
            return Err(Code::NotPermitted.into());
        }
        let attrs = SetAttrs {
            perm: req.mode.map(|m| m & PERM_BITS),
            size: req.size,
            atime: req.atime,
            mtime: req.mtime,
        };
        if attrs == SetAttrs::default() {
            return self.getattr(ino);
        }
        self.check_writable()?;
        // Buffered writes go first: otherwise they would land after a truncate, or move the
        // mtime that `touch -d` or `cp -p` just set.
        self.drain_writes(ino)?;
        let path = self.path_of(ino)?;
        let attr = self.client.set_attr(&path, attrs)?;
        self.entry_changed(ino);
        if attrs.size.is_some() {
            self.cache.invalidate_file(ino);
        }
        self.inodes.set_attr(ino, &attr);
        if attrs.size.is_some() || attrs.mtime.is_some() {
            self.pages_are(ino, attr.version());
        }
        Ok(self.shown(ino, attr))
    }

    pub fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        Ok(self.client.readlink(&self.path_of(ino)?)?)
    }

    pub fn statfs(&self) -> FsResult<Statfs> {
        Ok(self.client.statfs()?)
    }

    /// Permission bits are checked by the kernel (`default_permissions`); this answers
    /// existence and the read-only case.
    pub fn access(&self, ino: Ino, mask: i32) -> FsResult<()> {
        self.attr(ino)?;
        if mask & libc::W_OK != 0 && self.cfg.read_only {
            return Err(Code::ReadOnly.into());
        }
        Ok(())
    }
}
