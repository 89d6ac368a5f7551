//! The pipelined range reader and range writer: every `Read` and `Write` the client sends goes
//! through here, whether from [`Client`](super::Client), the mount's fetch and write-behind,
//! or `shelf get` and `shelf put`.
//!
//! What is hard, and how it is handled:
//! 1. *Round trips.* A transfer larger than one request goes out as pieces with several in
//!    flight at once (a bounded window: [`WINDOW`] by default, the caller's for write-behind),
//!    so it costs about one round trip plus the bytes. Pieces are at most the negotiated
//!    `max_io`, and are handed back in the order sent whatever order the replies came in.
//! 2. *One conversion of replies.* `Data` and `Attr` replies are unpacked here, with
//!    `Reply::Error` turned into [`RemoteError::Server`] and anything else into
//!    [`RemoteError::Protocol`] (the converters of [`client`](super::client)); a `Data` longer
//!    than asked is a protocol error, since it would shift every later byte.
//! 3. *A piece lost with its connection.* Reads and writes are idempotent, so such a piece is
//!    sent once more ([`Resend::Once`]) on a connection made after the loss
//!    ([`Transport::resend`]). Not when
//!    the caller forbids it ([`Resend::Never`]): `put` writes to a temporary that belongs to
//!    the server process of the connection that was lost.
//! 4. *Versions.* Every `Data` reply carries the file's attributes. Pieces of one read that see
//!    different versions would stitch two contents together; where the caller asks
//!    ([`Versions`]), the reader fails with `ESTALE` ([`changed`]) instead.
//! 5. *Lean hot paths.* A write's buffer is moved into its request and handed back with the
//!    reply ([`Written::buf`]), so write-behind reuses it and nothing is copied for a resend
//!    (requests are sent by reference). A read's data is handed over as it came.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

use shelf_proto::{Attr, Bytes, Code, Reply, Request, Version};

use super::client::{reply_attr, reply_data};
use super::{PendingReply, RemoteError, Transport};

/// Pieces of one split read or write in flight at once, unless the caller says otherwise.
pub const WINDOW: usize = 8;

/// Whether a piece lost with its connection may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resend {
    /// Once, on a connection made after the loss (idempotent requests only).
    #[default]
    Once,
    /// Never: the loss is the caller's error.
    Never,
}

/// Waits for a started request; one lost with its connection is sent once more when `resend`
/// allows it and the request is idempotent (module docs, point 3).
pub fn await_reply<T: Transport>(
    t: &T,
    req: &Request,
    started: Result<T::Pending, RemoteError>,
    resend: Resend,
) -> Result<Reply, RemoteError> {
    match started.and_then(PendingReply::wait) {
        Err(e) if e.is_connection_lost() && resend == Resend::Once && req.is_idempotent() => {
            tracing::debug!("resending {} after: {e}", req.name());
            t.resend(req, Instant::now())?.wait()
        }
        other => other,
    }
}

/// The error of a read whose pieces saw two versions of the file (module docs, point 4).
pub fn changed() -> RemoteError {
    RemoteError::server(
        Code::Stale,
        "the file changed on the server during the read",
    )
}

/// One `Read` on its way.
pub struct ReadPiece<P> {
    req: Request,
    started: Result<P, RemoteError>,
}

impl<P: PendingReply> ReadPiece<P> {
    /// Sends the read of `len` bytes at `offset` (at most `max_io`; not split here).
    pub fn start<T: Transport<Pending = P>>(t: &T, path: &[u8], offset: u64, len: u32) -> Self {
        let req = Request::Read {
            path: path.to_vec(),
            offset,
            len,
        };
        let started = t.start(&req);
        ReadPiece { req, started }
    }

    /// False when sending failed (waiting then resends, or reports the failure).
    pub fn is_started(&self) -> bool {
        self.started.is_ok()
    }

    pub fn offset(&self) -> u64 {
        match self.req {
            Request::Read { offset, .. } => offset,
            _ => unreachable!("a read piece holds a read"),
        }
    }

    /// The length asked for.
    pub fn asked(&self) -> u32 {
        match self.req {
            Request::Read { len, .. } => len,
            _ => unreachable!("a read piece holds a read"),
        }
    }

    /// Waits for the data and the file's attributes as the server saw them while reading.
    pub fn wait<T: Transport<Pending = P>>(
        self,
        t: &T,
        resend: Resend,
    ) -> Result<Piece, RemoteError> {
        let (offset, asked) = (self.offset(), self.asked());
        let (attr, data) = reply_data(await_reply(t, &self.req, self.started, resend)?)?;
        if data.len() > asked as usize {
            return Err(RemoteError::Protocol(format!(
                "asked for {asked} bytes, got {}",
                data.len()
            )));
        }
        Ok(Piece {
            offset,
            asked,
            attr,
            data,
        })
    }
}

/// One piece of a read, as the server sent it: fewer bytes than `asked` only at end of file.
#[derive(Debug)]
pub struct Piece {
    pub offset: u64,
    pub asked: u32,
    pub attr: Attr,
    /// A view of the reply's frame (no copy was made of it).
    pub data: Bytes,
}

impl Piece {
    pub fn is_short(&self) -> bool {
        self.data.len() < self.asked as usize
    }
}

/// Which versions the pieces of one read may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// Any: the caller looks at each piece's attributes itself.
    Any,
    /// All the version of the first piece.
    AsFirst,
    /// All this version (one the caller saw before reading).
    Is(Version),
}

/// How a [`RangeReader`] cuts and sends.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Largest piece; also capped at the transport's `max_io`.
    pub piece: u32,
    /// Pieces in flight at once.
    pub window: usize,
    pub resend: Resend,
    pub versions: Versions,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            piece: u32::MAX,
            window: WINDOW,
            resend: Resend::Once,
            versions: Versions::AsFirst,
        }
    }
}

/// Reads a byte range of one file as pipelined pieces, handed out in order; see the module
/// docs. Iterating ends after the range, after a short piece (end of file), or after an error.
pub struct RangeReader<'a, T: Transport> {
    t: &'a T,
    path: &'a [u8],
    next: u64,
    end: u64,
    piece: u32,
    opts: ReadOptions,
    inflight: VecDeque<ReadPiece<T::Pending>>,
    version: Option<Version>,
    done: bool,
}

impl<'a, T: Transport> RangeReader<'a, T> {
    /// Reads `range` of `path`; nothing is sent before the first `next`.
    pub fn new(t: &'a T, path: &'a [u8], range: Range<u64>, opts: ReadOptions) -> Self {
        let version = match opts.versions {
            Versions::Is(v) => Some(v),
            Versions::Any | Versions::AsFirst => None,
        };
        RangeReader {
            t,
            path,
            next: range.start,
            end: range.end.max(range.start),
            piece: opts.piece.min(t.limits().max_io).max(1),
            opts,
            inflight: VecDeque::new(),
            version,
            done: false,
        }
    }

    fn fill(&mut self) {
        while self.inflight.len() < self.opts.window.max(1) && self.next < self.end {
            let len = (self.end - self.next).min(u64::from(self.piece)) as u32;
            let piece = ReadPiece::start(self.t, self.path, self.next, len);
            self.inflight.push_back(piece);
            self.next += u64::from(len);
        }
    }

    fn check(&mut self, piece: &Piece) -> Result<(), RemoteError> {
        let got = piece.attr.version();
        match (self.opts.versions, self.version) {
            (Versions::Any, _) => Ok(()),
            (_, Some(v)) if v != got => Err(changed()),
            (_, Some(_)) => Ok(()),
            (_, None) => {
                self.version = Some(got);
                Ok(())
            }
        }
    }
}

impl<T: Transport> Iterator for RangeReader<'_, T> {
    type Item = Result<Piece, RemoteError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.fill();
        let Some(oldest) = self.inflight.pop_front() else {
            self.done = true;
            return None;
        };
        let got = oldest
            .wait(self.t, self.opts.resend)
            .and_then(|piece| self.check(&piece).map(|()| piece));
        match &got {
            Ok(piece) if !piece.is_short() => {}
            // Past a short piece there is nothing more to read; the rest in flight is dropped.
            _ => {
                self.done = true;
                self.inflight.clear();
            }
        }
        Some(got)
    }
}

/// One `Write` on its way.
struct WritePiece<P> {
    range: Range<u64>,
    req: Request,
    started: Result<P, RemoteError>,
}

/// What became of one piece a [`RangeWriter`] sent, handed back in the order sent.
#[derive(Debug)]
pub struct Written {
    pub range: Range<u64>,
    /// The file's attributes after this write, as the server answered.
    pub result: Result<Attr, RemoteError>,
    /// The piece's buffer, emptied, for the caller to reuse.
    pub buf: Vec<u8>,
}

/// How a [`RangeWriter`] cuts and paces.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Largest piece (the negotiated `max_io`).
    pub max_io: usize,
    /// Pieces in flight at once; past it `send` waits for the oldest.
    pub window: usize,
    pub resend: Resend,
}

/// Writes pieces of one file pipelined; see the module docs.
pub struct RangeWriter<P> {
    inflight: VecDeque<WritePiece<P>>,
    /// Set when a piece was sent while another was in flight ([`RangeWriter::take_overlapped`]).
    overlapped: bool,
}

impl<P> Default for RangeWriter<P> {
    fn default() -> Self {
        RangeWriter {
            inflight: VecDeque::new(),
            overlapped: false,
        }
    }
}

impl<P: PendingReply> RangeWriter<P> {
    /// Pieces sent and not yet handed back.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether a piece in flight overlaps `range`.
    pub fn overlaps(&self, range: &Range<u64>) -> bool {
        self.inflight
            .iter()
            .any(|w| w.range.start < range.end && range.start < w.range.end)
    }

    /// Whether a piece was sent while another was in flight since the last call. The server
    /// may apply such pieces in either order, so the last reply need not describe the file.
    pub fn take_overlapped(&mut self) -> bool {
        std::mem::take(&mut self.overlapped)
    }

    /// Sends `data` at `offset` in pieces of at most `opts.max_io`, without waiting for their
    /// replies except to keep at most `opts.window` in flight; each piece waited for goes to
    /// `done`. A buffer of at most `max_io` is moved into its request whole, not copied.
    pub fn send<T: Transport<Pending = P>>(
        &mut self,
        t: &T,
        path: &[u8],
        mut offset: u64,
        data: Vec<u8>,
        opts: WriteOptions,
        done: &mut dyn FnMut(Written),
    ) {
        let mut rest = data;
        let max = opts.max_io.max(1);
        while !rest.is_empty() {
            let tail = if rest.len() > max {
                rest.split_off(max)
            } else {
                Vec::new()
            };
            let piece = std::mem::replace(&mut rest, tail);
            while self.inflight.len() >= opts.window.max(1) {
                if let Some(w) = self.wait_oldest(t, opts.resend) {
                    done(w);
                }
            }
            let range = offset..offset + piece.len() as u64;
            offset = range.end;
            let req = Request::Write {
                path: path.to_vec(),
                offset: range.start,
                // A Vec becomes Bytes (and back, below) without a copy.
                data: piece.into(),
            };
            let started = t.start(&req);
            self.overlapped |= !self.inflight.is_empty();
            self.inflight.push_back(WritePiece {
                range,
                req,
                started,
            });
        }
    }

    /// Waits for the oldest piece in flight, if any; `resend` as in [`WriteOptions`].
    pub fn wait_oldest<T: Transport<Pending = P>>(
        &mut self,
        t: &T,
        resend: Resend,
    ) -> Option<Written> {
        let WritePiece {
            range,
            req,
            started,
        } = self.inflight.pop_front()?;
        let result = await_reply(t, &req, started, resend).and_then(|r| reply_attr("write", r));
        let buf = match req {
            Request::Write { data, .. } => {
                let mut data = Vec::from(data);
                data.clear();
                data
            }
            _ => Vec::new(),
        };
        Some(Written { range, result, buf })
    }

    /// Waits for every piece in flight, oldest first.
    pub fn wait_all<T: Transport<Pending = P>>(
        &mut self,
        t: &T,
        resend: Resend,
        done: &mut dyn FnMut(Written),
    ) {
        while let Some(w) = self.wait_oldest(t, resend) {
            done(w);
        }
    }
}
