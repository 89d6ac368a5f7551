//! Typed calls over any [`Transport`]: one method per request, each returning plain values.
//!
//! What is hard, and how it is handled:
//! 1. *Replies of the wrong kind.* Every reply goes through one converter per expected kind
//!    (`reply_attr`, `reply_data`, ...): `Reply::Error` becomes [`RemoteError::Server`] and any
//!    other unexpected kind [`RemoteError::Protocol`], never a panic.
//! 2. *Large reads and writes.* The handshake caps one `Read`/`Write` at `max_io`. Larger ones
//!    are split into pieces with up to [`WINDOW`] in flight at once, so a large transfer costs
//!    about one round trip plus the bytes, not one round trip per piece.
//! 3. *Consistency of a split read.* Each `Data` reply carries the file's attributes; pieces of
//!    one read that see different versions would stitch two contents together, so such a read
//!    fails with `ESTALE` instead.
//! 4. *Connection loss mid-pipeline.* A piece whose connection died is resent with
//!    [`Transport::call`] (reads and writes are idempotent), so the transfer carries on over a
//!    fresh connection.

use std::collections::VecDeque;

use shelf_proto::{Attr, Code, DirEntry, Reply, Request, SetAttrs, Statfs, Timestamp};

use super::pool::Pool;
use super::{Limits, PendingReply, RemoteError, Transport};

/// Pieces of one split read or write in flight at once.
pub const WINDOW: usize = 8;

/// Typed calls to the server; see the module docs.
pub struct Client<T: Transport = Pool> {
    t: T,
}

impl<T: Transport> Client<T> {
    pub fn new(t: T) -> Self {
        Client { t }
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

    /// Waits for a started request; one lost with its connection is sent again through
    /// `call` (only for idempotent requests: `again` builds it anew).
    pub fn settle(
        &self,
        started: Result<T::Pending, RemoteError>,
        again: impl FnOnce() -> Request,
    ) -> Result<Reply, RemoteError> {
        match started.and_then(PendingReply::wait) {
            Err(e) if e.is_connection_lost() => {
                let req = again();
                if req.is_idempotent() {
                    self.t.call(req)
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    pub fn ping(&self) -> Result<(), RemoteError> {
        match self.t.call(Request::Ping)? {
            Reply::Pong => Ok(()),
            other => Err(refusal("ping", other)),
        }
    }

    pub fn stat(&self, path: &[u8]) -> Result<Attr, RemoteError> {
        reply_attr("stat", self.t.call(Request::Stat { path: path.into() })?)
    }

    /// Every entry of a directory, asking page after page while the server says there is more.
    pub fn list(&self, path: &[u8]) -> Result<Vec<DirEntry>, RemoteError> {
        let mut all = Vec::new();
        let mut after = Vec::new();
        loop {
            let reply = self.t.call(Request::List {
                path: path.into(),
                after: after.clone(),
                max_entries: 0,
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
            all.extend(entries);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Up to `len` bytes from `offset` (fewer only at end of file), with the file's
    /// attributes as the server saw them while reading.
    pub fn read(&self, path: &[u8], offset: u64, len: u32) -> Result<(Attr, Vec<u8>), RemoteError> {
        let max = self.limits().max_io.max(1);
        let req = |offset: u64, len: u32| Request::Read {
            path: path.into(),
            offset,
            len,
        };
        if len <= max {
            let (attr, data) = reply_data(self.t.call(req(offset, len))?)?;
            return checked_len(attr, data, len);
        }
        let mut out = Vec::with_capacity(len as usize);
        let mut queue: VecDeque<(u64, u32, Result<T::Pending, RemoteError>)> = VecDeque::new();
        let mut next = 0u32;
        let mut first: Option<Attr> = None;
        loop {
            while queue.len() < WINDOW && next < len {
                let piece = (len - next).min(max);
                let at = offset.saturating_add(u64::from(next));
                queue.push_back((at, piece, self.t.start(&req(at, piece))));
                next += piece;
            }
            let Some((at, piece, started)) = queue.pop_front() else {
                break;
            };
            let (attr, data) = reply_data(self.settle(started, || req(at, piece))?)?;
            let (attr, data) = checked_len(attr, data, piece)?;
            match &first {
                Some(a) if a.version() != attr.version() => {
                    return Err(RemoteError::server(
                        Code::Stale,
                        "the file changed on the server during the read",
                    ))
                }
                Some(_) => {}
                None => first = Some(attr),
            }
            let short = data.len() < piece as usize;
            out.extend_from_slice(&data);
            if short {
                break;
            }
        }
        let attr = first.ok_or_else(|| RemoteError::Protocol("read got no reply".into()))?;
        Ok((attr, out))
    }

    /// Writes all of `data` at `offset`; the attributes are those after the last piece.
    pub fn write(&self, path: &[u8], offset: u64, data: &[u8]) -> Result<Attr, RemoteError> {
        let max = self.limits().max_io.max(1) as usize;
        let req = |start: usize, end: usize| Request::Write {
            path: path.into(),
            offset: offset.saturating_add(start as u64),
            data: data[start..end].to_vec(),
        };
        if data.len() <= max {
            return reply_attr("write", self.t.call(req(0, data.len()))?);
        }
        let mut queue = VecDeque::new();
        let mut next = 0;
        let mut last = None;
        loop {
            while queue.len() < WINDOW && next < data.len() {
                let end = (next + max).min(data.len());
                queue.push_back((next, end, self.t.start(&req(next, end))));
                next = end;
            }
            let Some((start, end, started)) = queue.pop_front() else {
                break;
            };
            last = Some(reply_attr(
                "write",
                self.settle(started, || req(start, end))?,
            )?);
        }
        last.ok_or_else(|| RemoteError::Protocol("write got no reply".into()))
    }

    pub fn create(&self, path: &[u8], perm: u32, exclusive: bool) -> Result<Attr, RemoteError> {
        let req = Request::Create {
            path: path.into(),
            perm,
            exclusive,
        };
        reply_attr("create", self.t.call(req)?)
    }

    pub fn set_attr(&self, path: &[u8], attrs: SetAttrs) -> Result<Attr, RemoteError> {
        let req = Request::SetAttr {
            path: path.into(),
            attrs,
        };
        reply_attr("setattr", self.t.call(req)?)
    }

    pub fn unlink(&self, path: &[u8]) -> Result<(), RemoteError> {
        reply_ok(
            "unlink",
            self.t.call(Request::Unlink { path: path.into() })?,
        )
    }

    pub fn mkdir(&self, path: &[u8], perm: u32) -> Result<Attr, RemoteError> {
        let req = Request::Mkdir {
            path: path.into(),
            perm,
        };
        reply_attr("mkdir", self.t.call(req)?)
    }

    pub fn rmdir(&self, path: &[u8]) -> Result<(), RemoteError> {
        reply_ok("rmdir", self.t.call(Request::Rmdir { path: path.into() })?)
    }

    /// `flags` from `shelf_proto::rename_flags`.
    pub fn rename(&self, from: &[u8], to: &[u8], flags: u32) -> Result<(), RemoteError> {
        let req = Request::Rename {
            from: from.into(),
            to: to.into(),
            flags,
        };
        reply_ok("rename", self.t.call(req)?)
    }

    pub fn symlink(&self, path: &[u8], target: &[u8]) -> Result<Attr, RemoteError> {
        let req = Request::Symlink {
            path: path.into(),
            target: target.into(),
        };
        reply_attr("symlink", self.t.call(req)?)
    }

    pub fn readlink(&self, path: &[u8]) -> Result<Vec<u8>, RemoteError> {
        match self.t.call(Request::Readlink { path: path.into() })? {
            Reply::Target(t) => Ok(t),
            other => Err(refusal("readlink", other)),
        }
    }

    pub fn link(&self, existing: &[u8], new: &[u8]) -> Result<Attr, RemoteError> {
        let req = Request::Link {
            existing: existing.into(),
            new: new.into(),
        };
        reply_attr("link", self.t.call(req)?)
    }

    pub fn statfs(&self) -> Result<Statfs, RemoteError> {
        match self.t.call(Request::Statfs)? {
            Reply::Statfs(s) => Ok(s),
            other => Err(refusal("statfs", other)),
        }
    }

    pub fn fsync(&self, path: &[u8], data_only: bool) -> Result<(), RemoteError> {
        let req = Request::Fsync {
            path: path.into(),
            data_only,
        };
        reply_ok("fsync", self.t.call(req)?)
    }

    /// Starts an atomic upload; returns the temporary's path, to be filled with `write`.
    pub fn put_begin(&self, path: &[u8], perm: u32) -> Result<Vec<u8>, RemoteError> {
        let req = Request::PutBegin {
            path: path.into(),
            perm,
        };
        match self.t.call(req)? {
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
        reply_attr("put-commit", self.t.call(req)?)
    }

    pub fn put_abort(&self, temp: &[u8]) -> Result<(), RemoteError> {
        reply_ok(
            "put-abort",
            self.t.call(Request::PutAbort { temp: temp.into() })?,
        )
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

/// A server that sends more than was asked would shift every later byte.
fn checked_len(attr: Attr, data: Vec<u8>, len: u32) -> Result<(Attr, Vec<u8>), RemoteError> {
    if data.len() > len as usize {
        return Err(RemoteError::Protocol(format!(
            "asked for {len} bytes, got {}",
            data.len()
        )));
    }
    Ok((attr, data))
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
pub fn reply_data(reply: Reply) -> Result<(Attr, Vec<u8>), RemoteError> {
    match reply {
        Reply::Data { attr, data } => Ok((attr, data)),
        other => Err(refusal("read", other)),
    }
}
