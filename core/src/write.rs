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
//!    that the writer waits for the oldest, which also paces a fast writer to the wire. The
//!    buffers of answered writes come back and are reused (`SPARES` per file).
//!
//! The pipelining itself (window, splitting at `max_io`, resending a write lost with its
//! connection once, turning replies into errors) is the shared range writer,
//! `shelf_remote::ranges::RangeWriter`; this module keeps the gathering, the ordering, the
//! sticky error, the spare buffers and what `drain` can tell of the file.

use shelf_proto::{Attr, Code};

use crate::error::{FsError, FsResult};
use shelf_remote::ranges::{RangeWriter, Resend, WriteOptions, Written};
use shelf_remote::{Client, PendingReply, RemoteError, Transport};

/// The buffered and in-flight writes of one open file.
pub struct WriteBack<P> {
    /// Offset of `buf[0]` in the file.
    buf_offset: u64,
    /// Contiguous bytes not yet sent.
    buf: Vec<u8>,
    /// The writes in flight, on the shared range writer. It also notes a write sent while
    /// another was in flight since the last `drain` (`take_overlapped`): such writes may be
    /// applied by the server in either order (they travel on different connections), so the
    /// last reply need not describe the file as it ends up: a later, lower write can answer
    /// with the size it saw before a higher one landed.
    writer: RangeWriter<P>,
    acks: Acks,
}

/// What the answered writes left behind.
#[derive(Default)]
struct Acks {
    /// The first failure not yet reported to the program.
    error: Option<Code>,
    /// The file's attributes after the last write the server acknowledged.
    last_attr: Option<Attr>,
    /// Buffers of acknowledged writes, for the next ones: a megabyte whose pages are
    /// already resident, instead of one the allocator may have to fault in again.
    spare: Vec<Vec<u8>>,
}

impl Acks {
    /// Takes in one answered write, oldest first.
    fn take(&mut self, w: Written) {
        if self.spare.len() < SPARES {
            self.spare.push(w.buf);
        }
        match w.result {
            Ok(a) => self.last_attr = Some(a),
            Err(e) => self.record(e),
        }
    }

    fn record(&mut self, e: RemoteError) {
        tracing::warn!("write-behind failed: {e}");
        if self.error.is_none() {
            self.error = Some(e.code());
        }
    }
}

impl<P> Default for WriteBack<P> {
    fn default() -> Self {
        WriteBack {
            buf_offset: 0,
            buf: Vec::new(),
            writer: RangeWriter::default(),
            acks: Acks::default(),
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

/// How much to gather and how much to keep in flight.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// Send once this many bytes are buffered.
    pub send_at: usize,
    /// Largest single `Write` (the negotiated max I/O).
    pub max_io: usize,
    pub max_inflight: usize,
}

impl WriteLimits {
    /// The range writer's options: a write lost with its connection is sent again (writes
    /// are idempotent: the same bytes at the same offset).
    fn options(&self) -> WriteOptions {
        WriteOptions {
            max_io: self.max_io,
            window: self.max_inflight,
            resend: Resend::Once,
        }
    }
}

impl<P: PendingReply> WriteBack<P> {
    /// True when nothing is buffered or in flight.
    pub fn is_clean(&self) -> bool {
        self.buf.is_empty() && self.writer.in_flight() == 0
    }

    /// Takes the sticky error, if a write-behind failed since the last report.
    pub fn take_error(&mut self) -> FsResult<()> {
        match self.acks.error.take() {
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
        if self.writer.overlaps(&(offset..end)) {
            self.wait_all(client);
        }
        if self.buf.is_empty() {
            self.buf_offset = offset;
            // The buffer is handed to its request whole; start the next at its full size.
            let want = lim.send_at.max(data.len());
            if let Some(spare) = self.acks.spare.pop() {
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

    /// Starts sending the buffer in `max_io` pieces without waiting for the replies (beyond
    /// keeping `max_inflight`). The usual buffer is one piece and is moved into its request,
    /// not copied.
    fn send<T: Transport<Pending = P>>(
        &mut self,
        client: &Client<T>,
        path: &[u8],
        lim: WriteLimits,
    ) {
        let buf = std::mem::take(&mut self.buf);
        let offset = self.buf_offset;
        self.buf_offset += buf.len() as u64;
        let acks = &mut self.acks;
        let opts = lim.options();
        self.writer
            .send(client.transport(), path, offset, buf, opts, &mut |w| {
                acks.take(w)
            });
    }

    fn wait_all<T: Transport<Pending = P>>(&mut self, client: &Client<T>) {
        let acks = &mut self.acks;
        self.writer
            .wait_all(client.transport(), Resend::Once, &mut |w| acks.take(w));
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
        let overlapped = self.writer.take_overlapped();
        match self.acks.last_attr.take() {
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
