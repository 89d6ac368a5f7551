//! Write-behind: the bytes a program writes are gathered per file and sent in large pipelined
//! `Write` requests, so a stream of small writes costs neither a round trip each nor a stall.
//!
//! What is hard, and how this module handles it:
//! 1. Durability: DESIGN.md says data has reached the server when `close()` returns. `flush`,
//!    `fsync`, `release`, a read, a `setattr` and a rename all `drain` first: every buffered byte
//!    is sent and every in-flight write has answered before they go on.
//! 2. Errors must not vanish, and must reach the right caller: a failed write-behind is
//!    recorded in the file's error sequence ([`Errors`], Linux's `errseq_t`; vfs.rst, "Handling
//!    errors during writeback"), and every open handle has its own cursor into it. `fsync` and
//!    `write` of a handle report a failure that handle has not seen and move only its cursor;
//!    `flush` reports one too but moves nothing (why: [`Errors`]); a handle opened after the
//!    failure does not see it; the sequence goes with the last handle of the file.
//! 3. Ordering: the server serves pipelined requests concurrently, so two in-flight writes that
//!    overlap could land in either order. A write that overlaps one in flight waits for it.
//! 4. Memory: at most `max_inflight` writes of up to `max_io` bytes are in flight per file; past
//!    that the writer waits for the oldest, which also paces a fast writer to the wire. The
//!    buffers of answered writes come back and are reused (`SPARES` per file).
//!
//! The pipelining itself (window, splitting at `max_io`, resending a write lost with its
//! connection once, turning replies into errors) is the shared range writer,
//! `shelf_remote::ranges::RangeWriter`; this module keeps the gathering, the ordering, the
//! error sequence, the spare buffers and what `drain` can tell of the file.

use std::collections::HashMap;

use shelf_proto::{Attr, Code};

use crate::error::{FsError, FsResult};
use crate::ids::Fh;
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

/// The write-behind failures of one open file and how far each of its handles has seen
/// them: Linux's `errseq_t` (a counter and the latest error) with `file::f_wb_err` (a cursor
/// per open file), so one caller taking a failure cannot hide it from another.
///
/// What each report moves, and why:
/// - `fsync` and `write` ([`check_and_advance`](Self::check_and_advance)) report a failure
///   recorded since the handle's cursor and move that handle's cursor to now: its program
///   has been told, as `fsync(2)` tells each open file description once.
/// - `flush`, the `close()` of a descriptor ([`check`](Self::check)), reports the same but
///   moves no cursor, not even its own. A FUSE handle is an open file description, which
///   `dup(2)`, `fork(2)` and descriptor passing share: the kernel sends a FLUSH for the close
///   of each descriptor and does not say whether others remain. So a child that forked while
///   the file was open, closing its copy at `exec`, flushes the handle the parent is about
///   to `fsync`; if that flush moved the cursor the parent's `fsync` would report a lost
///   write as durable. The price: each close of a descriptor of the handle reports the
///   failure again until an `fsync` or `write` of the handle has told it, which is more
///   telling than needed but never less. (NFS too reports write errors at close.)
///
/// A handle opened after a failure starts at the current count and does not see it; the
/// whole record goes with the file's last handle (`OpenState`). The code kept is the latest
/// failure's, as `errseq_t` keeps it.
#[derive(Default)]
struct Errors {
    /// Failures recorded so far.
    count: u64,
    /// The latest failure.
    latest: Option<Code>,
    /// Per open handle, `count` when it was opened or last told by `fsync` or `write`.
    /// A handle missing here (never registered) has seen nothing: it is told everything.
    seen: HashMap<Fh, u64>,
}

impl Errors {
    fn record(&mut self, code: Code) {
        self.count += 1;
        self.latest = Some(code);
    }

    fn unseen(&self, fh: Fh) -> Option<Code> {
        let seen = self.seen.get(&fh).copied().unwrap_or(0);
        if seen < self.count {
            self.latest
        } else {
            None
        }
    }

    fn check(&self, fh: Fh) -> FsResult<()> {
        match self.unseen(fh) {
            Some(code) => Err(FsError::Local(code)),
            None => Ok(()),
        }
    }

    fn check_and_advance(&mut self, fh: Fh) -> FsResult<()> {
        let told = self.check(fh);
        self.seen.insert(fh, self.count);
        told
    }
}

/// What the answered writes left behind.
#[derive(Default)]
struct Acks {
    errors: Errors,
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
        self.errors.record(e.code());
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

    /// Gives a new handle of the file its cursor: it sees failures from now on ([`Errors`]).
    pub(crate) fn opened(&mut self, fh: Fh) {
        let count = self.acks.errors.count;
        self.acks.errors.seen.insert(fh, count);
    }

    /// Forgets a released handle's cursor.
    pub(crate) fn closed(&mut self, fh: Fh) {
        self.acks.errors.seen.remove(&fh);
    }

    /// For `fsync` (and `write`): a write-behind failure `fh` has not seen, after which it
    /// has seen it; other handles still will.
    pub(crate) fn check_and_advance(&mut self, fh: Fh) -> FsResult<()> {
        self.acks.errors.check_and_advance(fh)
    }

    /// For `flush`: a write-behind failure `fh` has not seen, which it and every other
    /// handle will still be told ([`Errors`] says why).
    pub(crate) fn check(&self, fh: Fh) -> FsResult<()> {
        self.acks.errors.check(fh)
    }

    /// Buffers `data` for `offset` (a write through handle `fh`), sending what has gathered
    /// when it is large enough or when the new bytes do not continue the buffer. Reports, as
    /// `check_and_advance`, a failure `fh` has not seen, before and after.
    pub fn write<T: Transport<Pending = P>>(
        &mut self,
        client: &Client<T>,
        fh: Fh,
        path: &[u8],
        offset: u64,
        data: &[u8],
        lim: WriteLimits,
    ) -> FsResult<()> {
        self.check_and_advance(fh)?;
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
        self.check_and_advance(fh)
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
    /// attributes afterwards. A failure stays in the error sequence for each handle's own
    /// `write`, `flush` or `fsync` to report: nothing else may fail for it or swallow it.
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

    /// The handle the writes go through.
    const FH: Fh = Fh(1);

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
        wb.write(&c, FH, b"f", 100, &[7; 50], LIM).expect("write");
        match wb.drain(&c, b"f", LIM) {
            Drained::Exact(a) => assert_eq!(a.size, 150),
            other => panic!("expected exact attributes, got {other:?}"),
        }
        wb.write(&c, FH, b"f", 0, &[1; 10], LIM).expect("write");
        assert!(matches!(wb.drain(&c, b"f", LIM), Drained::Exact(_)));
        assert!(wb.is_clean());
    }

    /// A lower write sent while a higher one is in flight may be applied first on another
    /// connection; its reply then shows the smaller size. Such a drain must not claim to know.
    #[test]
    fn writes_in_flight_together_leave_the_attributes_unknown() {
        let (dir, c) = setup();
        let mut wb = WriteBack::default();
        wb.write(&c, FH, b"f", 10_111, &[7; 5_498], LIM)
            .expect("write");
        // Not contiguous: the first piece is sent and this one is buffered behind it.
        wb.write(&c, FH, b"f", 1_310, &[9; 2_805], LIM)
            .expect("write");
        assert_eq!(wb.drain(&c, b"f", LIM), Drained::Unknown);
        assert_eq!(
            std::fs::metadata(dir.path().join("f")).expect("stat").len(),
            15_609
        );
        // The flag is per drain: the next lone write is exact again.
        wb.write(&c, FH, b"f", 0, &[1; 10], LIM).expect("write");
        assert!(matches!(wb.drain(&c, b"f", LIM), Drained::Exact(a) if a.size == 15_609));
    }

    mod faults {
        //! Write-behind over the in-memory server with faults on cue (`shelf_testkit::Faulty`).

        use super::super::*;
        use super::FH;
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
                wb.write(c, FH, b"f", (i * PIECE) as u64, piece, LIM)
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
            wb.check_and_advance(FH)
                .expect("no error: the lost writes were resent");
            assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), data);
            // The three in flight on the lost connection went again.
            assert_eq!(c.transport().seen("write"), 11);
            assert!(wb.is_clean());
        }

        #[test]
        fn a_failure_is_kept_until_the_handles_next_write_or_fsync_reports_it() {
            let (_dir, c) = setup();
            c.transport().fail("write", 2, Fault::Refuse(Code::NoSpace));
            let mut wb = WriteBack::default();
            wb.opened(FH);
            write_all(&mut wb, &c, &ramp(4 * PIECE));
            // Every write answered; what drain tells of the file says nothing of the error.
            assert_ne!(wb.drain(&c, b"f", LIM), Drained::Nothing);
            assert!(wb.is_clean());
            // The next write of the handle reports it, once.
            let err = wb
                .write(&c, FH, b"f", 0, b"x", LIM)
                .expect_err("the failure is reported");
            assert_eq!(err.code(), Code::NoSpace);
            wb.write(&c, FH, b"f", 0, b"x", LIM).expect("reported once");
            // A flush (drain, then check) reports one too, and keeps it for the fsync.
            c.transport().fail("write", 1, Fault::Refuse(Code::Io));
            wb.drain(&c, b"f", LIM);
            assert_eq!(wb.check(FH).map_err(|e| e.code()), Err(Code::Io));
            assert_eq!(wb.check(FH).map_err(|e| e.code()), Err(Code::Io));
            assert_eq!(
                wb.check_and_advance(FH).map_err(|e| e.code()),
                Err(Code::Io)
            );
            wb.check_and_advance(FH).expect("told");
            wb.check(FH).expect("told");
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
            wb.write(&c, FH, b"f", 0, &[1; PIECE], LIM).expect("sent");
            // Overlaps the delayed write: sent only after it answered, so it lands last.
            wb.write(&c, FH, b"f", 100, &[2; PIECE], LIM).expect("sent");
            assert_eq!(
                wb.drain(&c, b"f", LIM),
                Drained::Exact(c.stat(b"f").expect("stat"))
            );
            let got = std::fs::read(dir.path().join("f")).expect("read");
            assert_eq!(&got[..100], &[1; 100][..]);
            assert!(got[100..].iter().all(|&b| b == 2));
        }

        /// Through the whole core: the failure of a buffered write is the next flush's, and
        /// every flush's of that handle until its fsync has told it.
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
            // The close of another descriptor of the handle (a dup, a forked child's).
            let err = core.flush(o.fh).expect_err("a flush takes nothing");
            assert_eq!(err.code(), Code::NoSpace);
            let err = core.fsync(o.fh, false).expect_err("the fsync reports it");
            assert_eq!(err.code(), Code::NoSpace);
            core.flush(o.fh).expect("told by the fsync");
            core.fsync(o.fh, false).expect("told once");
            core.write(o.fh, 0, b"again").expect("buffered");
            core.flush(o.fh).expect("lands");
            core.release(o.fh).expect("release");
            assert_eq!(std::fs::read(dir.path().join("g")).expect("read"), b"again");
        }

        /// The bug errseq fixes: a flush of one handle (a child's close after a fork, another
        /// open of the file) took the failure, and the other handle's fsync said the lost
        /// write was durable.
        #[test]
        fn a_flush_of_one_handle_leaves_the_failure_for_the_fsync_of_another() {
            let (_dir, c) = setup();
            let core = crate::Core::new(c.into_transport(), crate::CoreConfig::default());
            let (e, a) = core
                .create(crate::ROOT_INO, b"g", 0o100644, 0o022, libc::O_RDWR)
                .expect("create");
            let b = core.open(e.ino, libc::O_WRONLY).expect("open");
            core.write(a.fh, 0, b"doomed").expect("buffered");
            core.client
                .transport()
                .fail("write", 1, Fault::Refuse(Code::NoSpace));
            let err = core.flush(a.fh).expect_err("the flush reports it");
            assert_eq!(err.code(), Code::NoSpace);
            let err = core
                .fsync(b.fh, false)
                .expect_err("the other handle is told");
            assert_eq!(err.code(), Code::NoSpace);
            core.fsync(b.fh, false).expect("told once");
            // Telling one handle tells no other.
            let err = core.fsync(a.fh, false).expect_err("its own fsync is told");
            assert_eq!(err.code(), Code::NoSpace);
            core.fsync(a.fh, false).expect("told once");
            // A handle opened after the failure does not see it.
            let c2 = core.open(e.ino, libc::O_RDWR).expect("open");
            core.fsync(c2.fh, false).expect("opened after the failure");
            for o in [a, b, c2] {
                core.flush(o.fh).expect("flush");
                core.release(o.fh).expect("release");
            }
        }

        /// The error sequence dies with the file's last handle: an open after it starts clean,
        /// and while one handle stays, the failure stays for it.
        #[test]
        fn the_failure_goes_with_the_last_handle() {
            let (_dir, c) = setup();
            let core = crate::Core::new(c.into_transport(), crate::CoreConfig::default());
            let (e, a) = core
                .create(crate::ROOT_INO, b"g", 0o100644, 0o022, libc::O_RDWR)
                .expect("create");
            let b = core.open(e.ino, libc::O_RDONLY).expect("open");
            core.write(a.fh, 0, b"doomed").expect("buffered");
            core.client
                .transport()
                .fail("write", 1, Fault::Refuse(Code::Io));
            core.flush(a.fh).expect_err("reported");
            core.release(a.fh).expect("release");
            // A read-only handle's fsync is told too, as fsync(2) on any descriptor is.
            let err = core
                .fsync(b.fh, false)
                .expect_err("the handle left is told");
            assert_eq!(err.code(), Code::Io);
            core.release(b.fh).expect("release");
            let d = core.open(e.ino, libc::O_RDWR).expect("open");
            core.fsync(d.fh, false).expect("a new open starts clean");
            core.release(d.fh).expect("release");
        }
    }

    /// The error sequence alone: counts, cursors, and who moves them.
    #[test]
    fn each_handle_has_its_own_cursor() {
        let (a, b, c) = (Fh(1), Fh(2), Fh(3));
        let mut errs = Errors::default();
        errs.seen.insert(a, 0);
        errs.seen.insert(b, 0);
        errs.record(Code::NoSpace);
        errs.seen.insert(c, errs.count);
        assert!(errs.check(a).is_err());
        assert!(errs.check(a).is_err(), "check moves nothing");
        assert!(errs.check_and_advance(a).is_err());
        assert!(errs.check_and_advance(a).is_ok(), "a was told");
        assert!(errs.check(b).is_err(), "b was not");
        assert!(errs.check(c).is_ok(), "c opened after the failure");
        errs.record(Code::Io);
        let codes: Vec<_> = [a, b, c]
            .iter()
            .map(|&h| errs.check_and_advance(h).map_err(|e| e.code()))
            .collect();
        assert_eq!(
            codes,
            vec![Err(Code::Io); 3],
            "the latest failure, for each"
        );
        assert!(
            errs.check(Fh(9)).is_err(),
            "an unknown handle is told everything"
        );
    }
}
