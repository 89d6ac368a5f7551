//! Write-behind: the bytes a program writes are gathered per file and sent in large pipelined
//! `Write` requests, so a stream of small writes costs neither a round trip each nor a stall.
//!
//! What is hard, and how this module handles it:
//! 1. Durability: DESIGN.md says data has reached the server when `close()` returns. `flush`,
//!    `fsync`, `release`, a read, a `setattr` and a rename all `drain` first: every buffered byte
//!    is sent and every in-flight write has answered before they go on.
//! 2. Errors must not vanish: a failed write-behind leaves a sticky error that the next `write`,
//!    `flush` or `fsync` of the file returns (as the kernel's own writeback errors do).
//! 3. Ordering: the server serves pipelined requests concurrently, so two in-flight writes that
//!    overlap could land in either order. A write that overlaps one in flight waits for it.
//! 4. Memory: at most `max_inflight` writes of up to `max_io` bytes are in flight per file; past
//!    that the writer waits for the oldest, which also paces a fast writer to the wire.

use std::collections::VecDeque;
use std::ops::Range;

use shelf_proto::{Attr, Code, Reply, Request};

use crate::error::{FsError, FsResult};
use shelf_remote::ranges::{await_reply, Resend};
use shelf_remote::{Client, PendingReply, RemoteError, Transport};

/// The buffered and in-flight writes of one open file.
pub struct WriteBack<P> {
    /// Offset of `buf[0]` in the file.
    buf_offset: u64,
    /// Contiguous bytes not yet sent.
    buf: Vec<u8>,
    inflight: VecDeque<InFlight<P>>,
    /// The first failure not yet reported to the program.
    error: Option<Code>,
    /// The file's attributes after the last write the server acknowledged.
    last_attr: Option<Attr>,
    /// Set when a write was sent while another was still in flight since the last `drain`.
    /// Such writes may be applied by the server in either order (they travel on different
    /// connections), so the last reply need not describe the file as it ends up: a later,
    /// lower write can answer with the size it saw before a higher one landed.
    overlapped: bool,
    /// Buffers of acknowledged writes, for the next ones: a megabyte whose pages are
    /// already resident, instead of one the allocator may have to fault in again.
    spare: Vec<Vec<u8>>,
}

impl<P> Default for WriteBack<P> {
    fn default() -> Self {
        WriteBack {
            buf_offset: 0,
            buf: Vec::new(),
            inflight: VecDeque::new(),
            error: None,
            last_attr: None,
            overlapped: false,
            spare: Vec::new(),
        }
    }
}

/// Spare buffers kept per open file.
const SPARES: usize = 2;

/// What `drain` knows about the file once every write has answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Drained {
    /// Nothing was acknowledged (nothing was pending, or every write failed).
    Nothing,
    /// The writes went one at a time; the last reply is the file's state.
    Exact(Attr),
    /// Writes were in flight together; ask the server for the file's state.
    Unknown,
}

/// One `Write` on its way; the request is kept so that a write lost with its connection can
/// be sent again (writes are idempotent: the same bytes at the same offset).
struct InFlight<P> {
    range: Range<u64>,
    req: Request,
    started: Result<P, RemoteError>,
}

/// How much to gather and how much to keep in flight.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// Send once this many bytes are buffered.
    pub send_at: usize,
    /// Largest single `Write` (the negotiated max I/O).
    pub max_io: usize,
    pub max_inflight: usize,
}

impl<P: PendingReply> WriteBack<P> {
    /// True when nothing is buffered or in flight.
    pub fn is_clean(&self) -> bool {
        self.buf.is_empty() && self.inflight.is_empty()
    }

    /// Takes the sticky error, if a write-behind failed since the last report.
    pub fn take_error(&mut self) -> FsResult<()> {
        match self.error.take() {
            Some(code) => Err(FsError::Local(code)),
            None => Ok(()),
        }
    }

    /// Buffers `data` for `offset`, sending what has gathered when it is large enough or when
    /// the new bytes do not continue the buffer.
    pub fn write<T: Transport<Pending = P>>(
        &mut self,
        client: &Client<T>,
        path: &[u8],
        offset: u64,
        data: &[u8],
        lim: WriteLimits,
    ) -> FsResult<()> {
        self.take_error()?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::Local(Code::FileTooBig))?;
        if !self.buf.is_empty() && offset != self.buf_end() {
            self.send(client, path, lim);
        }
        if self
            .inflight
            .iter()
            .any(|w| w.range.start < end && offset < w.range.end)
        {
            self.wait_all(client);
        }
        if self.buf.is_empty() {
            self.buf_offset = offset;
            // The buffer is handed to its request whole; start the next at its full size.
            let want = lim.send_at.max(data.len());
            if let Some(spare) = self.spare.pop() {
                self.buf = spare;
            }
            self.buf.reserve(want);
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= lim.send_at {
            self.send(client, path, lim);
        }
        self.take_error()
    }

    fn buf_end(&self) -> u64 {
        self.buf_offset + self.buf.len() as u64
    }

    /// Starts sending the buffer in `max_io` pieces without waiting for the replies. The
    /// usual buffer is one piece and is moved into its request, not copied.
    fn send<T: Transport<Pending = P>>(
        &mut self,
        client: &Client<T>,
        path: &[u8],
        lim: WriteLimits,
    ) {
        let mut rest = std::mem::take(&mut self.buf);
        let max = lim.max_io.max(1);
        while !rest.is_empty() {
            let tail = if rest.len() > max {
                rest.split_off(max)
            } else {
                Vec::new()
            };
            let piece = std::mem::replace(&mut rest, tail);
            while self.inflight.len() >= lim.max_inflight.max(1) {
                self.wait_oldest(client);
            }
            let range = self.buf_offset..self.buf_offset + piece.len() as u64;
            self.buf_offset = range.end;
            let req = Request::Write {
                path: path.to_vec(),
                offset: range.start,
                data: piece,
            };
            let started = client.transport().start(&req);
            self.overlapped |= !self.inflight.is_empty();
            self.inflight.push_back(InFlight {
                range,
                req,
                started,
            });
        }
    }

    fn wait_oldest<T: Transport<Pending = P>>(&mut self, client: &Client<T>) {
        if let Some(w) = self.inflight.pop_front() {
            let InFlight { req, started, .. } = w;
            let reply = await_reply(client.transport(), &req, started, Resend::Once);
            if let Request::Write { mut data, .. } = req {
                if self.spare.len() < SPARES {
                    data.clear();
                    self.spare.push(data);
                }
            }
            match reply {
                Ok(Reply::Attr(a)) => self.last_attr = Some(a),
                Ok(Reply::Error { code, message }) => {
                    self.record(RemoteError::Server { code, message })
                }
                Ok(other) => self.record(RemoteError::Protocol(format!(
                    "unexpected reply to write: {other:?}"
                ))),
                Err(e) => self.record(e),
            }
        }
    }

    fn wait_all<T: Transport<Pending = P>>(&mut self, client: &Client<T>) {
        while !self.inflight.is_empty() {
            self.wait_oldest(client);
        }
    }

    fn record(&mut self, e: RemoteError) {
        tracing::warn!("write-behind failed: {e}");
        if self.error.is_none() {
            self.error = Some(e.code());
        }
    }

    /// Sends everything and waits for every reply; says what is known of the file's
    /// attributes afterwards. A failure stays (`take_error`) for the file's own next `write`,
    /// `flush` or `fsync` to report: nothing else may fail for it or swallow it.
    pub fn drain<T: Transport<Pending = P>>(
        &mut self,
        client: &Client<T>,
        path: &[u8],
        lim: WriteLimits,
    ) -> Drained {
        if !self.buf.is_empty() {
            self.send(client, path, lim);
        }
        self.wait_all(client);
        let overlapped = std::mem::take(&mut self.overlapped);
        match self.last_attr.take() {
            None => Drained::Nothing,
            Some(_) if overlapped => Drained::Unknown,
            Some(attr) => Drained::Exact(attr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf_remote::ConnectOptions;
    use shelf_server::ServeConfig;
    use shelf_testkit::Loopback;
    use shelf_testkit::LOOPBACK_ADDR;

    const LIM: WriteLimits = WriteLimits {
        send_at: 1 << 20,
        max_io: 1 << 20,
        max_inflight: 4,
    };

    /// An empty file `f` served over two connections, so that writes can overtake each other.
    fn setup() -> (tempfile::TempDir, Client<Loopback>) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("f"), b"").expect("file");
        let lb = Loopback::with(
            dir.path(),
            ServeConfig::default(),
            ConnectOptions::new(LOOPBACK_ADDR),
            2,
        )
        .expect("loopback server starts");
        (dir, Client::new(lb))
    }

    #[test]
    fn one_write_at_a_time_gives_the_exact_attributes() {
        let (_dir, c) = setup();
        let mut wb = WriteBack::default();
        wb.write(&c, b"f", 100, &[7; 50], LIM).expect("write");
        match wb.drain(&c, b"f", LIM) {
            Drained::Exact(a) => assert_eq!(a.size, 150),
            other => panic!("expected exact attributes, got {other:?}"),
        }
        wb.write(&c, b"f", 0, &[1; 10], LIM).expect("write");
        assert!(matches!(wb.drain(&c, b"f", LIM), Drained::Exact(_)));
        assert!(wb.is_clean());
    }

    /// A lower write sent while a higher one is in flight may be applied first on another
    /// connection; its reply then shows the smaller size. Such a drain must not claim to know.
    #[test]
    fn writes_in_flight_together_leave_the_attributes_unknown() {
        let (dir, c) = setup();
        let mut wb = WriteBack::default();
        wb.write(&c, b"f", 10_111, &[7; 5_498], LIM).expect("write");
        // Not contiguous: the first piece is sent and this one is buffered behind it.
        wb.write(&c, b"f", 1_310, &[9; 2_805], LIM).expect("write");
        assert_eq!(wb.drain(&c, b"f", LIM), Drained::Unknown);
        assert_eq!(
            std::fs::metadata(dir.path().join("f")).expect("stat").len(),
            15_609
        );
        // The flag is per drain: the next lone write is exact again.
        wb.write(&c, b"f", 0, &[1; 10], LIM).expect("write");
        assert!(matches!(wb.drain(&c, b"f", LIM), Drained::Exact(a) if a.size == 15_609));
    }
}
