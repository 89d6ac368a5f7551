//! Typed calls over any [`Transport`]: one method per request, each returning plain values.
//!
//! What is hard, and how it is handled:
//! 1. *Replies of the wrong kind.* Every reply goes through one converter per expected kind
//!    (`reply_attr`, `reply_data`, ...): `Reply::Error` becomes [`RemoteError::Server`] and any
//!    other unexpected kind [`RemoteError::Protocol`], never a panic.
//! 2. *Large reads and writes* go through the one range reader and writer
//!    ([`ranges`](super::ranges)): split at `max_io`, up to [`WINDOW`] pieces in flight, a
//!    piece lost with its connection resent once, and a read whose pieces saw two versions of
//!    the file failed with `ESTALE`.
//! 3. *Names that are ours, not the library's* (`shelf_proto::reserved`): a client made with
//!    [`Client::for_people`] (every `shelf` command's) refuses any request naming one as if
//!    it were absent, in the one place every request passes (`call`), so no command can
//!    forget; the mount's core, which keeps files under those names, uses [`Client::new`].

use shelf_proto::reserved::{is_reserved_name, is_reserved_path};
use shelf_proto::Bytes;
use std::time::Instant;

/// When each page of a listing was asked for ([`Client::list_timed`]): the index of the
/// page's first entry and the moment its request left, in order.
pub type PageTimes = Vec<(usize, Instant)>;
use std::time::Duration;

use shelf_proto::{
    features, Attr, ChangedPath, Code, DirEntry, EntryState, HeldLock, LockAsk, LockFlavor, Reply,
    Request, SetAttrs, Statfs, Timestamp, Whence, MAX_CHANGES_WAIT_MS, MAX_LOCK_WAIT_MS,
};

use super::pool::Pool;
use super::ranges::{
    RangeReader, RangeWriter, ReadOptions, ReadPiece, Resend, WriteOptions, Written,
};
use super::{Limits, RemoteError, Transport};

pub use super::ranges::WINDOW;

/// Typed calls to the server; see the module docs.
pub struct Client<T: Transport = Pool> {
    t: T,
    /// Refuse the names the implementation keeps for itself (`for_people`).
    for_people: bool,
}

impl<T: Transport> Client<T> {
    /// A client that may name anything in the library, the implementation's own names too
    /// (the mount's core).
    pub fn new(t: T) -> Self {
        Client {
            t,
            for_people: false,
        }
    }

    /// A client for what a person asks (the command line): a request naming one of the
    /// implementation's own names (`shelf_proto::reserved`) fails with ENOENT, as if the
    /// name were absent, without reaching the server. Listings leave them out too.
    pub fn for_people(t: T) -> Self {
        Client {
            t,
            for_people: true,
        }
    }

    /// Every request goes through here.
    fn call(&self, req: Request) -> Result<Reply, RemoteError> {
        if self.for_people && names_reserved(&req) {
            return Err(RemoteError::server(Code::NotFound, ""));
        }
        self.t.call(req)
    }

    pub fn transport(&self) -> &T {
        &self.t
    }

    pub fn into_transport(self) -> T {
        self.t
    }

    pub fn limits(&self) -> Limits {
        self.t.limits()
    }

    pub fn ping(&self) -> Result<(), RemoteError> {
        match self.call(Request::Ping)? {
            Reply::Pong => Ok(()),
            other => Err(refusal("ping", other)),
        }
    }

    pub fn stat(&self, path: &[u8]) -> Result<Attr, RemoteError> {
        reply_attr("stat", self.call(Request::Stat { path: path.into() })?)
    }

    /// Every entry of a directory, asking page after page while the server says there is more.
    pub fn list(&self, path: &[u8]) -> Result<Vec<DirEntry>, RemoteError> {
        self.list_timed(path, 0).map(|(all, _)| all)
    }

    /// [`Client::list`], with when each page was asked for: the index of its first entry and
    /// the moment its request left. A listing of 100,000 entries takes over a second, and
    /// each page's attributes are as old as its own request, not the first one's.
    /// `first_page`: at most this many entries in the first page (0: as many as fit).
    pub fn list_timed(
        &self,
        path: &[u8],
        first_page: u32,
    ) -> Result<(Vec<DirEntry>, PageTimes), RemoteError> {
        let mut all = Vec::new();
        let mut pages = Vec::new();
        let mut after = Vec::new();
        loop {
            pages.push((all.len(), Instant::now()));
            let reply = self.call(Request::List {
                path: path.into(),
                after: after.clone(),
                max_entries: if pages.len() == 1 { first_page } else { 0 },
            })?;
            let (entries, more) = match reply {
                Reply::Listing { entries, more } => (entries, more),
                other => return Err(refusal("list", other)),
            };
            match entries.last() {
                Some(last) if more => {
                    if last.name <= after {
                        return Err(RemoteError::Protocol("listing pages do not advance".into()));
                    }
                    after = last.name.clone();
                }
                // `more` with an empty page would ask for the same page for ever.
                None if more => {
                    return Err(RemoteError::Protocol(
                        "empty listing page marked as not the last".into(),
                    ))
                }
                _ => {}
            }
            let ours = |e: &DirEntry| self.for_people && is_reserved_name(path.is_empty(), &e.name);
            all.extend(entries.into_iter().filter(|e| !ours(e)));
            if !more {
                return Ok((all, pages));
            }
        }
    }

    /// Up to `len` bytes from `offset` (fewer only at end of file), with the file's
    /// attributes as the server saw them while reading. Pieces that saw two versions of the
    /// file fail with `ESTALE` ([`changed`](super::ranges::changed)).
    pub fn read(&self, path: &[u8], offset: u64, len: u32) -> Result<(Attr, Bytes), RemoteError> {
        if len <= self.limits().max_io.max(1) {
            let piece = ReadPiece::start(&self.t, path, offset, len).wait(&self.t, Resend::Once)?;
            return Ok((piece.attr, piece.data));
        }
        let range = offset..offset.saturating_add(u64::from(len));
        let mut out = Vec::new();
        let mut attr = None;
        for piece in RangeReader::new(&self.t, path, range, ReadOptions::default()) {
            let piece = piece?;
            attr.get_or_insert(piece.attr);
            if out.is_empty() {
                out = Vec::from(piece.data);
                out.reserve(len as usize - out.len());
            } else {
                out.extend_from_slice(&piece.data);
            }
        }
        let attr = attr.ok_or_else(|| RemoteError::Protocol("read got no reply".into()))?;
        Ok((attr, out.into()))
    }

    /// Writes all of `data` at `offset`; the attributes are those after the last piece.
    pub fn write(&self, path: &[u8], offset: u64, data: &[u8]) -> Result<Attr, RemoteError> {
        let opts = WriteOptions {
            max_io: self.limits().max_io.max(1) as usize,
            window: WINDOW,
            resend: Resend::Once,
        };
        let mut writer = RangeWriter::default();
        let mut last = None;
        let mut failed = None;
        let mut done = |w: Written| match w.result {
            Ok(a) => last = Some(a),
            Err(e) => {
                failed.get_or_insert(e);
            }
        };
        for (i, piece) in data.chunks(opts.max_io).enumerate() {
            let at = offset.saturating_add((i * opts.max_io) as u64);
            writer.send(&self.t, path, at, piece.to_vec(), opts, &mut done);
        }
        writer.wait_all(&self.t, opts.resend, &mut done);
        if let Some(e) = failed {
            return Err(e);
        }
        last.ok_or_else(|| RemoteError::Protocol("write got no reply".into()))
    }

    pub fn create(&self, path: &[u8], perm: u32, exclusive: bool) -> Result<Attr, RemoteError> {
        let req = Request::Create {
            path: path.into(),
            perm,
            exclusive,
        };
        reply_attr("create", self.call(req)?)
    }

    pub fn set_attr(&self, path: &[u8], attrs: SetAttrs) -> Result<Attr, RemoteError> {
        let req = Request::SetAttr {
            path: path.into(),
            attrs,
        };
        reply_attr("setattr", self.call(req)?)
    }

    pub fn unlink(&self, path: &[u8]) -> Result<(), RemoteError> {
        reply_ok("unlink", self.call(Request::Unlink { path: path.into() })?)
    }

    pub fn mkdir(&self, path: &[u8], perm: u32) -> Result<Attr, RemoteError> {
        let req = Request::Mkdir {
            path: path.into(),
            perm,
        };
        reply_attr("mkdir", self.call(req)?)
    }

    pub fn rmdir(&self, path: &[u8]) -> Result<(), RemoteError> {
        reply_ok("rmdir", self.call(Request::Rmdir { path: path.into() })?)
    }

    /// `flags` from `shelf_proto::rename_flags`.
    pub fn rename(&self, from: &[u8], to: &[u8], flags: u32) -> Result<(), RemoteError> {
        let req = Request::Rename {
            from: from.into(),
            to: to.into(),
            flags,
        };
        reply_ok("rename", self.call(req)?)
    }

    pub fn symlink(&self, path: &[u8], target: &[u8]) -> Result<Attr, RemoteError> {
        let req = Request::Symlink {
            path: path.into(),
            target: target.into(),
        };
        reply_attr("symlink", self.call(req)?)
    }

    pub fn readlink(&self, path: &[u8]) -> Result<Vec<u8>, RemoteError> {
        match self.call(Request::Readlink { path: path.into() })? {
            Reply::Target(t) => Ok(t),
            other => Err(refusal("readlink", other)),
        }
    }

    pub fn link(&self, existing: &[u8], new: &[u8]) -> Result<Attr, RemoteError> {
        let req = Request::Link {
            existing: existing.into(),
            new: new.into(),
        };
        reply_attr("link", self.call(req)?)
    }

    pub fn statfs(&self) -> Result<Statfs, RemoteError> {
        match self.call(Request::Statfs)? {
            Reply::Statfs(s) => Ok(s),
            other => Err(refusal("statfs", other)),
        }
    }

    pub fn fsync(&self, path: &[u8], data_only: bool) -> Result<(), RemoteError> {
        let req = Request::Fsync {
            path: path.into(),
            data_only,
        };
        reply_ok("fsync", self.call(req)?)
    }

    /// Starts an atomic upload; returns the temporary's path, to be filled with `write`.
    pub fn put_begin(&self, path: &[u8], perm: u32) -> Result<Vec<u8>, RemoteError> {
        let req = Request::PutBegin {
            path: path.into(),
            perm,
        };
        match self.call(req)? {
            Reply::PutStarted { temp } => Ok(temp),
            other => Err(refusal("put-begin", other)),
        }
    }

    pub fn put_commit(
        &self,
        temp: &[u8],
        path: &[u8],
        mtime: Option<Timestamp>,
    ) -> Result<Attr, RemoteError> {
        let req = Request::PutCommit {
            temp: temp.into(),
            path: path.into(),
            mtime,
        };
        reply_attr("put-commit", self.call(req)?)
    }

    pub fn put_abort(&self, temp: &[u8]) -> Result<(), RemoteError> {
        reply_ok(
            "put-abort",
            self.call(Request::PutAbort { temp: temp.into() })?,
        )
    }

    /// Whether the server serves the requests of feature bit `bit`.
    pub fn has(&self, bit: u64) -> bool {
        self.t.features() & bit == bit
    }

    /// `fallocate` on the server; `mode` from `shelf_proto::falloc_mode`. The attributes are
    /// those after it.
    pub fn fallocate(
        &self,
        path: &[u8],
        mode: u32,
        offset: u64,
        len: u64,
    ) -> Result<Attr, RemoteError> {
        self.require(features::FALLOCATE, "fallocate")?;
        let req = Request::Fallocate {
            path: path.into(),
            mode,
            offset,
            len,
        };
        reply_attr("fallocate", self.call(req)?)
    }

    /// The first offset at or after `offset` holding data or in a hole; ENXIO past the end.
    pub fn seek(&self, path: &[u8], offset: u64, whence: Whence) -> Result<u64, RemoteError> {
        self.require(features::SEEK_HOLES, "seek")?;
        let req = Request::Seek {
            path: path.into(),
            offset,
            whence,
        };
        match self.call(req)? {
            Reply::Offset(o) => Ok(o),
            other => Err(refusal("seek", other)),
        }
    }

    /// Copies up to `len` bytes on the server; returns how many it copied (possibly fewer, 0
    /// at the end of `from`) and `to`'s attributes afterwards.
    pub fn copy_range(
        &self,
        from: &[u8],
        from_offset: u64,
        to: &[u8],
        to_offset: u64,
        len: u64,
    ) -> Result<(u64, Attr), RemoteError> {
        self.require(features::COPY_RANGE, "copy-range")?;
        let req = Request::CopyRange {
            from: from.into(),
            from_offset,
            to: to.into(),
            to_offset,
            len,
        };
        match self.call(req)? {
            Reply::Copied { copied, attr } if copied <= len => Ok((copied, attr)),
            Reply::Copied { copied, .. } => Err(RemoteError::Protocol(format!(
                "the server copied {copied} bytes of {len} asked"
            ))),
            other => Err(refusal("copy-range", other)),
        }
    }

    /// Takes, changes or drops a lock (docs/PROTOCOL.md, "Locks"), waiting on the server up
    /// to `wait` for a conflicting lock to go (then EAGAIN). Sent on the pinned connection,
    /// where the lock lives: returns that connection's epoch ([`Transport::call_pinned`]).
    pub fn lock(&self, path: &[u8], ask: LockAsk, wait: Duration) -> Result<u64, RemoteError> {
        self.require(features::LOCKS, "lock")?;
        let wait_ms = u32::try_from(wait.as_millis())
            .unwrap_or(u32::MAX)
            .min(MAX_LOCK_WAIT_MS);
        let req = Request::Lock {
            path: path.into(),
            file: ask.file,
            owner: ask.owner,
            flavor: ask.flavor,
            kind: ask.kind,
            start: ask.start,
            end: ask.end,
            wait_ms,
        };
        match self.call_pinned(req)? {
            (Reply::Ok, epoch) => Ok(epoch),
            (other, _) => Err(refusal("lock", other)),
        }
    }

    /// The first POSIX lock of another holder in the way of `ask` (`F_GETLK`), with the
    /// pinned connection's epoch.
    pub fn test_lock(
        &self,
        path: &[u8],
        ask: LockAsk,
    ) -> Result<(Option<HeldLock>, u64), RemoteError> {
        self.require(features::LOCKS, "test-lock")?;
        let req = Request::TestLock {
            path: path.into(),
            file: ask.file,
            owner: ask.owner,
            kind: ask.kind,
            start: ask.start,
            end: ask.end,
        };
        match self.call_pinned(req)? {
            (Reply::Lock(held), epoch) => Ok((held, epoch)),
            (other, _) => Err(refusal("test-lock", other)),
        }
    }

    /// Drops every lock of `flavor` the owner holds on `file`, and ends its waits; returns
    /// the pinned connection's epoch.
    pub fn release_locks(
        &self,
        file: u64,
        owner: u64,
        flavor: LockFlavor,
    ) -> Result<u64, RemoteError> {
        self.require(features::LOCKS, "release-locks")?;
        let req = Request::ReleaseLocks {
            file,
            owner,
            flavor,
        };
        match self.call_pinned(req)? {
            (Reply::Ok, epoch) => Ok(epoch),
            (other, _) => Err(refusal("release-locks", other)),
        }
    }

    /// Watches directories on the pinned connection (docs/PROTOCOL.md, "Change notices"):
    /// for each, whether it is watched, and the connection's epoch.
    pub fn watch(&self, paths: Vec<Vec<u8>>) -> Result<(Vec<bool>, u64), RemoteError> {
        self.require(features::CHANGE_NOTIFY, "watch")?;
        let n = paths.len();
        match self.call_pinned(Request::Watch { paths })? {
            (Reply::Watched(flags), epoch) if flags.len() == n => Ok((flags, epoch)),
            (Reply::Watched(flags), _) => Err(RemoteError::Protocol(format!(
                "{} watch flags for {n} paths",
                flags.len()
            ))),
            (other, _) => Err(refusal("watch", other)),
        }
    }

    /// The paths changed in the directories watched on the pinned connection, waiting up
    /// to `wait` for one, each with what the server holds under it now if it says
    /// (`features::CHANGE_STATE`; `EntryState::Unknown` if not); whether some may have been
    /// missed; and the connection's epoch.
    pub fn changes(&self, wait: Duration) -> Result<(Vec<ChangedPath>, bool, u64), RemoteError> {
        self.require(features::CHANGE_NOTIFY, "changes")?;
        let wait_ms = u32::try_from(wait.as_millis())
            .unwrap_or(u32::MAX)
            .min(MAX_CHANGES_WAIT_MS);
        match self.call_pinned(Request::Changes { wait_ms })? {
            (Reply::ChangeStates { changes, lost }, epoch) => Ok((changes, lost, epoch)),
            (Reply::Changes { paths, lost }, epoch) => {
                let changes = paths
                    .into_iter()
                    .map(|path| ChangedPath {
                        path,
                        state: EntryState::Unknown,
                        dir: None,
                    })
                    .collect();
                Ok((changes, lost, epoch))
            }
            (other, _) => Err(refusal("changes", other)),
        }
    }

    fn call_pinned(&self, req: Request) -> Result<(Reply, u64), RemoteError> {
        if self.for_people && names_reserved(&req) {
            return Err(RemoteError::server(Code::NotFound, ""));
        }
        self.t.call_pinned(req)
    }

    /// EOPNOTSUPP, without asking, when the server lacks `bit` (an older server would close
    /// the connection over a kind it does not know).
    fn require(&self, bit: u64, what: &'static str) -> Result<(), RemoteError> {
        if self.has(bit) {
            Ok(())
        } else {
            Err(RemoteError::Unsupported(what))
        }
    }

    /// The value of extended attribute `name` of `path` itself (no buffer size: the core
    /// answers a caller's size query and ERANGE from the whole value).
    pub fn get_xattr(&self, path: &[u8], name: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.require(features::XATTR, "getxattr")?;
        let req = Request::GetXattr {
            path: path.into(),
            name: name.into(),
        };
        match self.call(req)? {
            Reply::Xattr(value) => Ok(value),
            other => Err(refusal("getxattr", other)),
        }
    }

    /// `flags` from `shelf_proto::xattr` (`CREATE`, `REPLACE`).
    pub fn set_xattr(
        &self,
        path: &[u8],
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> Result<(), RemoteError> {
        self.require(features::XATTR, "setxattr")?;
        let req = Request::SetXattr {
            path: path.into(),
            name: name.into(),
            value: value.into(),
            flags,
        };
        reply_ok("setxattr", self.call(req)?)
    }

    /// The names the server serves (`user.` ones), without NULs.
    pub fn list_xattr(&self, path: &[u8]) -> Result<Vec<Vec<u8>>, RemoteError> {
        self.require(features::XATTR, "listxattr")?;
        match self.call(Request::ListXattr { path: path.into() })? {
            Reply::XattrNames(names) => Ok(names),
            other => Err(refusal("listxattr", other)),
        }
    }

    pub fn remove_xattr(&self, path: &[u8], name: &[u8]) -> Result<(), RemoteError> {
        self.require(features::XATTR, "removexattr")?;
        let req = Request::RemoveXattr {
            path: path.into(),
            name: name.into(),
        };
        reply_ok("removexattr", self.call(req)?)
    }
}

/// The error for a reply that is not the one expected: the server's own error, or a protocol
/// error naming what came.
fn refusal(req: &'static str, reply: Reply) -> RemoteError {
    match reply {
        Reply::Error { code, message } => RemoteError::Server { code, message },
        other => RemoteError::unexpected(req, &other),
    }
}

/// Whether a request names a path that is one of the implementation's own. A put's
/// temporary is the one such name a person's client uses, as the server gave it: in
/// `PutCommit`'s `temp` and `PutAbort` (the writes that fill it go through the transport).
fn names_reserved(req: &Request) -> bool {
    // Exhaustive: a new request decides here whether its paths are checked.
    match req {
        Request::Hello(_) | Request::Ping | Request::Statfs | Request::PutAbort { .. } => false,
        Request::Stat { path }
        | Request::List { path, .. }
        | Request::Read { path, .. }
        | Request::Write { path, .. }
        | Request::Create { path, .. }
        | Request::SetAttr { path, .. }
        | Request::Unlink { path }
        | Request::Mkdir { path, .. }
        | Request::Rmdir { path }
        | Request::Symlink { path, .. }
        | Request::Readlink { path }
        | Request::Fsync { path, .. }
        | Request::PutBegin { path, .. }
        | Request::PutCommit { path, .. }
        | Request::GetXattr { path, .. }
        | Request::SetXattr { path, .. }
        | Request::ListXattr { path }
        | Request::RemoveXattr { path, .. }
        | Request::Fallocate { path, .. }
        | Request::Seek { path, .. }
        | Request::Lock { path, .. }
        | Request::TestLock { path, .. } => is_reserved_path(path),
        Request::Watch { paths } => paths.iter().any(|p| is_reserved_path(p)),
        Request::ReleaseLocks { .. } | Request::Changes { .. } => false,
        Request::Rename { from, to, .. } | Request::CopyRange { from, to, .. } => {
            is_reserved_path(from) || is_reserved_path(to)
        }
        Request::Link { existing, new } => is_reserved_path(existing) || is_reserved_path(new),
    }
}

/// Expects `Attr`.
pub fn reply_attr(req: &'static str, reply: Reply) -> Result<Attr, RemoteError> {
    match reply {
        Reply::Attr(a) => Ok(a),
        other => Err(refusal(req, other)),
    }
}

/// Expects `Ok`.
pub fn reply_ok(req: &'static str, reply: Reply) -> Result<(), RemoteError> {
    match reply {
        Reply::Ok => Ok(()),
        other => Err(refusal(req, other)),
    }
}

/// Expects `Data`.
pub fn reply_data(reply: Reply) -> Result<(Attr, Bytes), RemoteError> {
    match reply {
        Reply::Data { attr, data } => Ok((attr, data)),
        other => Err(refusal("read", other)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use shelf_proto::{features, Code, Request, Whence};

    use crate::testserver::{fake, hello_reply, quick_opts};
    use crate::{Client, Connection, CLIENT_FEATURES};

    /// A server that announces `features` and counts the requests after the hello, answering
    /// each with EIO.
    fn server_with(features: u64) -> (Client<Connection>, Arc<AtomicUsize>) {
        let (conn, seen) = connection_with(features);
        (Client::new(conn), seen)
    }

    fn connection_with(features: u64) -> (Connection, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        let (stream, _s) = fake(move |mut peer| {
            let f = peer.recv().expect("hello");
            let Request::Hello(h) = f.msg else {
                panic!("hello first")
            };
            assert_eq!(
                h.features, CLIENT_FEATURES,
                "the client announces what it uses"
            );
            let mut r = hello_reply();
            r.features = features;
            peer.send(f.id, shelf_proto::Reply::Hello(r));
            while let Some(f) = peer.recv() {
                counter.fetch_add(1, Ordering::SeqCst);
                peer.send(f.id, shelf_proto::Reply::error(Code::Io, "fake"));
            }
        });
        let conn = Connection::handshake_over(stream, &quick_opts()).expect("handshake");
        (conn, seen)
    }

    #[test]
    fn an_older_server_is_not_sent_what_it_does_not_know() {
        let (client, seen) = server_with(features::ATOMIC_PUT | features::LINKS);
        let code = |e: crate::RemoteError| e.code();
        assert_eq!(
            client.fallocate(b"f", 0, 0, 1).map_err(code).err(),
            Some(Code::NotSupported)
        );
        assert_eq!(
            client.seek(b"f", 0, Whence::Data).map_err(code).err(),
            Some(Code::NotSupported)
        );
        assert_eq!(
            client.copy_range(b"a", 0, b"b", 0, 1).map_err(code).err(),
            Some(Code::NotSupported)
        );
        let _ = client.ping();
        assert_eq!(seen.load(Ordering::SeqCst), 1, "only the ping went out");
    }

    #[test]
    fn a_server_with_the_features_is_asked() {
        let (client, seen) =
            server_with(features::FALLOCATE | features::SEEK_HOLES | features::COPY_RANGE);
        assert!(client.has(features::COPY_RANGE));
        let code = |e: crate::RemoteError| e.code();
        assert_eq!(
            client.fallocate(b"f", 0, 0, 1).map_err(code).err(),
            Some(Code::Io)
        );
        assert_eq!(
            client.seek(b"f", 0, Whence::Hole).map_err(code).err(),
            Some(Code::Io)
        );
        assert_eq!(
            client.copy_range(b"a", 0, b"b", 0, 1).map_err(code).err(),
            Some(Code::Io)
        );
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    /// A person's client names no reserved path in the space requests either: each fails
    /// with ENOENT, as if absent, and none is sent; a copy is checked at both ends.
    #[test]
    fn a_client_for_people_sends_no_space_request_naming_a_reserved_path() {
        let (conn, seen) =
            connection_with(features::FALLOCATE | features::SEEK_HOLES | features::COPY_RANGE);
        let client = Client::for_people(conn);
        let code = |e: crate::RemoteError| e.code();
        let hidden = b".shelf-hidden/1".as_slice();
        assert_eq!(
            client.fallocate(hidden, 0, 0, 1).map_err(code).err(),
            Some(Code::NotFound)
        );
        assert_eq!(
            client
                .seek(b"d/.shelf-put-0123456789abcdef", 0, Whence::Data)
                .map_err(code)
                .err(),
            Some(Code::NotFound)
        );
        assert_eq!(
            client.copy_range(hidden, 0, b"b", 0, 1).map_err(code).err(),
            Some(Code::NotFound)
        );
        assert_eq!(
            client.copy_range(b"a", 0, hidden, 0, 1).map_err(code).err(),
            Some(Code::NotFound)
        );
        assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing went out");
        assert_eq!(
            client.copy_range(b"a", 0, b"b", 0, 1).map_err(code).err(),
            Some(Code::Io),
            "other names are asked"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
