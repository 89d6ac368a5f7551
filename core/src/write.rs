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

    mod faults {
        //! Write-behind over the in-memory server with faults on cue (`shelf_testkit::Faulty`).

        use super::super::*;
        use shelf_remote::Transport;
        use shelf_server::ServeConfig;
        use shelf_testkit::{Fault, Faulty, Memory};

        const PIECE: usize = 4096;
        /// One 4 KiB write per buffer, eight in flight.
        const LIM: WriteLimits = WriteLimits {
            send_at: PIECE,
            max_io: PIECE,
            max_inflight: 8,
        };

        type Pending = <Faulty<Memory> as Transport>::Pending;

        fn setup() -> (tempfile::TempDir, Client<Faulty<Memory>>) {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("f"), b"").expect("file");
            let cfg = ServeConfig {
                max_io: PIECE as u32,
                ..ServeConfig::default()
            };
            let m = Memory::with(dir.path(), cfg).expect("memory server");
            (dir, Client::new(Faulty::new(m).on_hang_up(Memory::hang_up)))
        }

        fn ramp(len: usize) -> Vec<u8> {
            (0..len).map(|k| (k % 251) as u8).collect()
        }

        /// Writes `data` as the kernel would, one piece per call.
        fn write_all(wb: &mut WriteBack<Pending>, c: &Client<Faulty<Memory>>, data: &[u8]) {
            for (i, piece) in data.chunks(PIECE).enumerate() {
                wb.write(c, b"f", (i * PIECE) as u64, piece, LIM)
                    .expect("buffered");
            }
        }

        #[test]
        fn the_third_of_eight_lost_with_its_connection_is_resent() {
            let (dir, c) = setup();
            let data = ramp(8 * PIECE);
            c.transport().fail("write", 3, Fault::LostAfter);
            let mut wb = WriteBack::default();
            write_all(&mut wb, &c, &data);
            assert_eq!(wb.drain(&c, b"f", LIM), Drained::Unknown);
            wb.take_error()
                .expect("no error: the lost writes were resent");
            assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), data);
            // The three in flight on the lost connection went again.
            assert_eq!(c.transport().seen("write"), 11);
            assert!(wb.is_clean());
        }

        #[test]
        fn a_failure_is_sticky_until_the_next_write_or_flush_reports_it() {
            let (_dir, c) = setup();
            c.transport().fail("write", 2, Fault::Refuse(Code::NoSpace));
            let mut wb = WriteBack::default();
            write_all(&mut wb, &c, &ramp(4 * PIECE));
            // Every write answered; what drain tells of the file says nothing of the error.
            assert_ne!(wb.drain(&c, b"f", LIM), Drained::Nothing);
            assert!(wb.is_clean());
            // The next write of the file reports it, once.
            let err = wb
                .write(&c, b"f", 0, b"x", LIM)
                .expect_err("the failure is reported");
            assert_eq!(err.code(), Code::NoSpace);
            wb.write(&c, b"f", 0, b"x", LIM).expect("reported once");
            // A flush (drain, then take_error) reports one too.
            c.transport().fail("write", 1, Fault::Refuse(Code::Io));
            wb.drain(&c, b"f", LIM);
            assert_eq!(wb.take_error().map_err(|e| e.code()), Err(Code::Io));
            wb.take_error().expect("taken");
        }

        #[test]
        fn an_overlapping_write_waits_for_the_one_in_flight() {
            let (dir, c) = setup();
            c.transport().fail(
                "write",
                1,
                Fault::Delay(std::time::Duration::from_millis(30)),
            );
            let mut wb = WriteBack::default();
            wb.write(&c, b"f", 0, &[1; PIECE], LIM).expect("sent");
            // Overlaps the delayed write: sent only after it answered, so it lands last.
            wb.write(&c, b"f", 100, &[2; PIECE], LIM).expect("sent");
            assert_eq!(
                wb.drain(&c, b"f", LIM),
                Drained::Exact(c.stat(b"f").expect("stat"))
            );
            let got = std::fs::read(dir.path().join("f")).expect("read");
            assert_eq!(&got[..100], &[1; 100][..]);
            assert!(got[100..].iter().all(|&b| b == 2));
        }

        /// Through the whole core: the failure of a buffered write is the next flush's.
        #[test]
        fn the_core_reports_a_failed_write_behind_at_the_next_flush() {
            let (dir, c) = setup();
            let core = crate::Core::new(c.into_transport(), crate::CoreConfig::default());
            let (_, o) = core
                .create(crate::ROOT_INO, b"g", 0o100644, 0o022, libc::O_RDWR)
                .expect("create");
            core.write(o.fh, 0, b"doomed").expect("buffered");
            core.client
                .transport()
                .fail("write", 1, Fault::Refuse(Code::NoSpace));
            let err = core.flush(o.fh).expect_err("the flush reports it");
            assert_eq!(err.code(), Code::NoSpace);
            core.flush(o.fh).expect("reported once");
            core.write(o.fh, 0, b"again").expect("buffered");
            core.flush(o.fh).expect("lands");
            core.release(o.fh).expect("release");
            assert_eq!(std::fs::read(dir.path().join("g")).expect("read"), b"again");
        }
    }
}
