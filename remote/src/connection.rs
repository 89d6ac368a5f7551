//! One connection to the server: a stream, a writer, and a reader that is whichever waiting
//! thread got there first.
//!
//! What is hard, and how it is handled:
//! 1. *Replies in any order.* Each request gets a fresh id and a slot registered under that id
//!    before its frame is written; whoever reads a reply puts it in the slot of its id and
//!    wakes the slot's waiter. Ids are never 0 (reserved for messages the server sends unasked,
//!    docs/PROTOCOL.md) and never 1 after the handshake.
//! 2. *Who reads* (leader/follower). There is no reader thread: a thread waiting for a reply
//!    takes the reading half if no one holds it and reads until its own reply comes, handing
//!    the replies of others to their slots; the others sleep until woken. Reading its own reply
//!    saves the hand-over from a reader thread to the waiter, one cross-CPU wake-up of some
//!    30 us per request on a small VM. A leader that got its reply wakes one waiter still
//!    waiting, which leads next.
//! 3. *A server that hung up while nothing was being read* (idle timeout, restart). Before a
//!    request goes out and while no one reads, whatever already arrived is taken in: an end of
//!    stream marks the connection dead *before* the request is written, so even a request that
//!    is not idempotent can go on a fresh connection (the pool resends what certainly never
//!    left). Replies to requests nobody waits for yet are taken in too.
//! 4. *Frames must not interleave, and a sender must not wait on the server while the server
//!    waits on it.* The writer sits behind a mutex and each frame goes out whole before the
//!    next. Sends do not block: while the socket takes no more, the sender takes in what
//!    arrived if no one else reads, because a server busy sending a reply that no one waits
//!    for yet reads nothing more until it is taken. Sends are bounded by the request timeout,
//!    and a failed send poisons the stream (half a frame may be on the wire), so it kills the
//!    connection.
//! 5. *Nobody waits for a dead connection.* The slots and the "dead" flag share one lock: the
//!    reader, on end of stream or a malformed frame, marks the connection dead and wakes every
//!    waiter, and a request that registers afterwards sees the flag instead of waiting for a
//!    reply that cannot come.
//! 6. *A server that stops answering.* Reads are bounded by the request timeout, and a waiter
//!    sleeps at most that long: past it the connection is given up (a server that misses one
//!    reply is presumed wedged), and the [`Pool`](super::Pool) replaces it on next use. Other
//!    waiters on it fail at once with `Disconnected`, which callers may retry.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use shelf_proto::frame::UNSOLICITED_ID;
use shelf_proto::msg::Message;
use shelf_proto::wire::{Reader, Writer};
use shelf_proto::{
    features, negotiate, Code, DecodeError, Frame, FrameReader, Hello, HelloReply, ReadError,
    Reply, Request, DEFAULT_MAX_PAYLOAD, PROTOCOL_VERSION,
};

use shelf_secure::stream::HandshakeError;
use shelf_secure::{fingerprint, PinError, ServerPin, TlsStream};

use super::stream::Stream;
use super::{
    io_text, ConnectOptions, Limits, PendingReply, RemoteError, TlsInfo, TlsOptions, Transport,
};
use crate::sys::Events;

/// File bytes this process received in `Data` replies and sent in `Write` requests, over
/// every connection it made: what `shelf status` shows as the data moved over the wire, so a
/// test can tell a copy done by the server (or a sparse read that skipped its holes) from one
/// that moved the bytes. Relaxed counters: read for reports, never for decisions.
static DATA_RECEIVED: AtomicU64 = AtomicU64::new(0);
static DATA_SENT: AtomicU64 = AtomicU64::new(0);

/// File bytes received in `Data` replies and sent in `Write` requests by this process so far.
pub fn data_moved() -> (u64, u64) {
    (
        DATA_RECEIVED.load(Ordering::Relaxed),
        DATA_SENT.load(Ordering::Relaxed),
    )
}

/// The feature bits this client announces: everything it knows how to use. What is in force
/// on a connection is the part the server announced too ([`Connection::features`]).
pub const CLIENT_FEATURES: u64 = features::ATOMIC_PUT
    | features::LINKS
    | features::XATTR
    | features::FALLOCATE
    | features::SEEK_HOLES
    | features::COPY_RANGE
    | features::ADMITTED
    | features::LOCKS
    | features::CHANGE_NOTIFY
    | features::CHANGE_STATE;

/// The id of the `Hello` request; ids of later requests start after it.
const HELLO_ID: u32 = 1;
/// Longest a waiter sleeps before looking whether it should read (see `Pending::wait`): a
/// safety net under the wake-ups. Off in unit tests, where a missed wake-up must show.
#[cfg(not(test))]
const RECHECK: Duration = Duration::from_millis(50);
#[cfg(test)]
const RECHECK: Duration = Duration::MAX;

/// Why a connection ended; turned into one error per waiter.
#[derive(Debug, Clone)]
enum Death {
    Closed(String),
    Protocol(String),
    /// No byte came within the request timeout while a reply was awaited.
    Silent(Duration),
}

impl Death {
    fn to_error(&self) -> RemoteError {
        match self {
            Death::Closed(why) => RemoteError::Disconnected(why.clone()),
            Death::Protocol(why) => RemoteError::Protocol(why.clone()),
            Death::Silent(after) => {
                RemoteError::Disconnected(format!("the server did not answer within {after:?}"))
            }
        }
    }
}

/// One request awaiting its reply.
#[derive(Default)]
struct Slot {
    reply: Option<Reply>,
    /// The thread in [`Pending::wait`], once there: woken when the reply comes, when the
    /// connection dies, or to lead.
    waiter: Option<Thread>,
}

#[derive(Default)]
struct Waiters {
    slots: HashMap<u32, Slot>,
    /// Set once, when the connection ends; no slot is added after.
    dead: Option<Death>,
}

/// The reading half; holding its lock is being the leader (module docs, point 2).
struct Inbox {
    reader: FrameReader<Box<dyn Stream>>,
    /// The last unasked error, which usually says why the server is about to hang up.
    notice: Option<String>,
    /// The bound on each read: the request timeout.
    timeout: Duration,
}

/// State shared by the connection and its pending requests.
struct Shared {
    waiters: Mutex<Waiters>,
    inbox: Mutex<Inbox>,
    in_flight: AtomicUsize,
    /// A handle used only to shut the socket down, which wakes a blocked reader.
    killer: Mutex<Box<dyn Stream>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Marks the connection dead (the first cause wins) and wakes every waiter.
    fn die(&self, death: Death) {
        let waiting: Vec<Thread> = {
            let mut w = self.waiters.lock();
            w.dead.get_or_insert(death);
            w.slots.values().filter_map(|s| s.waiter.clone()).collect()
        };
        for t in waiting {
            t.unpark();
        }
    }

    /// Gives the connection up: fails the waiters and shuts the socket down.
    fn kill(&self, death: Death) {
        self.die(death);
        self.killer.lock().shutdown_both();
    }

    fn is_dead(&self) -> bool {
        self.waiters.lock().dead.is_some()
    }

    /// Puts a reply in its slot and wakes the slot's waiter; a reply whose request was given
    /// up (its `Pending` dropped) is dropped.
    fn deliver(&self, id: u32, reply: Reply) {
        let waiter = match self.waiters.lock().slots.get_mut(&id) {
            Some(slot) => {
                slot.reply = Some(reply);
                slot.waiter.clone()
            }
            None => {
                tracing::debug!(id, "reply for no waiting request");
                None
            }
        };
        if let Some(t) = waiter {
            t.unpark();
        }
    }

    /// Reads one frame: returns it if its id is `mine`, else routes it and returns `None`.
    fn read_one(&self, inbox: &mut Inbox, mine: Option<u32>) -> Result<Option<Reply>, Death> {
        let frame = match inbox.reader.read_frame::<Reply>() {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(Death::Closed(
                    inbox
                        .notice
                        .take()
                        .unwrap_or_else(|| "the server closed the connection".into()),
                ))
            }
            Err(ReadError::UnexpectedEof) => {
                return Err(Death::Closed(
                    "the server closed the connection mid-frame".into(),
                ))
            }
            Err(e) if e.is_timeout() => return Err(Death::Silent(inbox.timeout)),
            Err(ReadError::Io(e)) => {
                return Err(Death::Closed(
                    inbox.notice.take().unwrap_or_else(|| io_text(&e)),
                ))
            }
            Err(ReadError::Malformed { error, .. }) => {
                return Err(Death::Protocol(format!("malformed reply: {error}")))
            }
        };
        if let Reply::Data { data, .. } = &frame.msg {
            DATA_RECEIVED.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        match frame.id {
            UNSOLICITED_ID => match frame.msg {
                Reply::Error { code, message } => {
                    tracing::warn!(%code, %message, "message from the server");
                    inbox.notice = Some(message);
                }
                other => tracing::debug!(?other, "ignoring an unasked message"),
            },
            id if Some(id) == mine => return Ok(Some(frame.msg)),
            id => self.deliver(id, frame.msg),
        }
        Ok(None)
    }

    /// Wakes one waiter still without its reply, to lead now that the inbox is free. A
    /// leader leaving clears its own slot's waiter first, so it is never the one picked.
    fn pass_the_lead(&self) {
        let next = self
            .waiters
            .lock()
            .slots
            .values()
            .find(|s| s.reply.is_none() && s.waiter.is_some())
            .and_then(|s| s.waiter.clone());
        if let Some(t) = next {
            t.unpark();
        }
    }

    /// While no one reads, takes in whatever already arrived (module docs, point 3). False
    /// when another thread is reading (it will see whatever comes).
    fn take_in_arrived(&self) -> bool {
        let Some(mut inbox) = self.inbox.try_lock() else {
            return false;
        };
        let mut death = None;
        while death.is_none() && inbox.reader.get_ref().readable_now() {
            death = self.read_one(&mut inbox, None).err();
        }
        drop(inbox);
        match death {
            Some(death) => {
                tracing::debug!(?death, "connection ended");
                self.kill(death);
            }
            // A waiter that found the inbox taken while we looked may be asleep.
            None => self.pass_the_lead(),
        }
        true
    }
}

/// One connection to a server, safe to share between threads; see the module docs.
pub struct Connection {
    shared: Arc<Shared>,
    writer: Mutex<Outbox>,
    next_id: AtomicU32,
    limits: Limits,
    /// The feature bits both sides announced.
    features: u64,
    server: HelloReply,
    request_timeout: Duration,
    tls: Option<TlsInfo>,
    /// When the handshake finished: a resend after a loss goes only to a connection made
    /// after it ([`super::Pool`], point 4).
    made_at: Instant,
}

struct Outbox {
    stream: Box<dyn Stream>,
    scratch: Vec<u8>,
}

/// A request on its way; [`Pending::wait`] returns its reply.
#[derive(Debug)]
pub struct Pending {
    id: u32,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl Pending {
    /// Waits for the reply, at most the request timeout, reading for every waiter of the
    /// connection if no one else is (module docs, point 2). A timeout gives the whole
    /// connection up (point 6).
    pub fn wait(self) -> Result<Reply, RemoteError> {
        let shared = &*self.shared;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(outcome) = self.settled(true) {
                return outcome;
            }
            if let Some(mut inbox) = shared.inbox.try_lock() {
                let outcome = self.lead(&mut inbox, deadline);
                // Before letting go of the inbox: from then on, whoever passes the lead must
                // not pick this thread, which is leaving.
                if let Some(slot) = shared.waiters.lock().slots.get_mut(&self.id) {
                    slot.waiter = None;
                }
                drop(inbox);
                shared.pass_the_lead();
                return outcome;
            }
            let now = Instant::now();
            if now >= deadline {
                shared.kill(Death::Silent(self.timeout));
                return Err(RemoteError::TimedOut(self.timeout));
            }
            // Woken to lead or with the reply; the cap looks again now and then all the same,
            // so a missed wake-up costs a moment, not the whole timeout.
            std::thread::park_timeout((deadline - now).min(RECHECK));
        }
    }

    /// The reply or the connection's death, if either came; else, with `register`, notes
    /// this thread as the one to wake.
    fn settled(&self, register: bool) -> Option<Result<Reply, RemoteError>> {
        let mut w = self.shared.waiters.lock();
        let Waiters { slots, dead } = &mut *w;
        // Only `drop` removes the slot, so it is there; a missing one is answered, not awaited.
        let Some(slot) = slots.get_mut(&self.id) else {
            return Some(Err(RemoteError::Disconnected(
                "the request was forgotten".into(),
            )));
        };
        if let Some(reply) = slot.reply.take() {
            // Leaving: whoever passes the lead must not pick this thread.
            slot.waiter = None;
            return Some(Ok(reply));
        }
        if let Some(death) = dead {
            return Some(Err(death.to_error()));
        }
        if register && slot.waiter.is_none() {
            slot.waiter = Some(std::thread::current());
        }
        None
    }

    /// Reads for everyone until this request's reply comes, or its deadline passes (the
    /// socket's read timeout catches a silent server; this, one that answers all but us).
    fn lead(&self, inbox: &mut Inbox, deadline: Instant) -> Result<Reply, RemoteError> {
        // The last leader may have delivered the reply between our look and taking the lead.
        if let Some(outcome) = self.settled(false) {
            return outcome;
        }
        loop {
            match self.shared.read_one(inbox, Some(self.id)) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) if Instant::now() >= deadline => {
                    self.shared.kill(Death::Silent(self.timeout));
                    return Err(RemoteError::TimedOut(self.timeout));
                }
                Ok(None) => {}
                Err(death) => {
                    tracing::debug!(?death, "connection ended");
                    let timed_out = matches!(death, Death::Silent(_));
                    self.shared.kill(death);
                    // The first cause wins: another thread's kill (its timeout, `close`) says
                    // why better than the read error that its shutdown caused here.
                    let first = self.shared.waiters.lock().dead.clone();
                    return Err(match first {
                        Some(Death::Silent(after)) if timed_out => RemoteError::TimedOut(after),
                        Some(first) => first.to_error(),
                        None => RemoteError::Disconnected("the connection ended".into()),
                    });
                }
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A reply that comes after its waiter left is dropped by the reader.
        self.shared.waiters.lock().slots.remove(&self.id);
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connection {
    /// Connects over TCP (bounded by `connect_timeout` per address), runs the TLS handshake
    /// unless `opts.tls` is `None`, and shakes hands.
    pub fn connect(opts: &ConnectOptions) -> Result<Connection, RemoteError> {
        let unreachable = |cause| RemoteError::Unreachable {
            addr: opts.addr.clone(),
            cause,
        };
        let addrs = opts.addr.to_socket_addrs().map_err(unreachable)?;
        let mut last = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolves to nothing",
        );
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, opts.connect_timeout) {
                Ok(stream) => {
                    // Requests are small frames that must not wait for Nagle's timer.
                    stream.set_nodelay(true).map_err(unreachable)?;
                    let Some(tls) = &opts.tls else {
                        return Connection::handshake_over(stream, opts);
                    };
                    let (stream, info) = tls_handshake(stream, tls, opts)?;
                    let mut conn = Connection::handshake_over(stream, opts)?;
                    conn.tls = Some(info);
                    return Ok(conn);
                }
                Err(e) => last = e,
            }
        }
        Err(unreachable(last))
    }

    /// Shakes hands over an already open stream.
    pub fn handshake_over<S: Stream>(
        stream: S,
        opts: &ConnectOptions,
    ) -> Result<Connection, RemoteError> {
        let mut stream: Box<dyn Stream> = Box::new(stream);
        let setup = |e: std::io::Error| RemoteError::Disconnected(io_text(&e));
        stream
            .set_read_deadline(Some(opts.connect_timeout))
            .map_err(setup)?;
        stream
            .set_write_deadline(Some(opts.connect_timeout))
            .map_err(setup)?;
        let hello = Hello {
            token: opts.token.clone().unwrap_or_default(),
            features: CLIENT_FEATURES,
            ..Hello::new(opts.agent.clone())
        };
        let bytes = Frame::new(HELLO_ID, Request::Hello(hello.clone()))
            .to_bytes(DEFAULT_MAX_PAYLOAD)
            .map_err(|e| RemoteError::Protocol(e.to_string()))?;
        // A busy server may have written its refusal and closed before reading our hello, so
        // a failed write still reads what came back before reporting the write error.
        let write_err = stream.write_all(&bytes).err();
        let mut reader = FrameReader::new(
            stream.try_clone_stream().map_err(setup)?,
            DEFAULT_MAX_PAYLOAD,
        );
        let server = read_hello(&mut reader, opts.connect_timeout, write_err)?;
        if server.version != PROTOCOL_VERSION {
            return Err(RemoteError::Protocol(format!(
                "the server chose protocol version {}, this client speaks {PROTOCOL_VERSION}",
                server.version
            )));
        }
        let agreed = negotiate(&hello, &server)
            .map_err(|e| RemoteError::Protocol(format!("the server's limits: {e}")))?;
        let limits = agreed.limits;
        stream.set_read_deadline(None).map_err(setup)?;
        stream
            .set_write_deadline(Some(opts.request_timeout))
            .map_err(setup)?;
        // Read deadlines are per socket, so this bounds the writer's clone too (it never reads).
        reader
            .get_ref()
            .set_read_deadline(Some(opts.request_timeout))
            .map_err(setup)?;
        let shared = Arc::new(Shared {
            waiters: Mutex::new(Waiters::default()),
            inbox: Mutex::new(Inbox {
                reader,
                notice: None,
                timeout: opts.request_timeout,
            }),
            in_flight: AtomicUsize::new(0),
            killer: Mutex::new(stream.try_clone_stream().map_err(setup)?),
        });
        Ok(Connection {
            shared,
            writer: Mutex::new(Outbox {
                stream,
                scratch: Vec::new(),
            }),
            next_id: AtomicU32::new(HELLO_ID + 1),
            limits,
            features: agreed.features,
            server,
            request_timeout: opts.request_timeout,
            tls: None,
            made_at: Instant::now(),
        })
    }

    /// Sends `req` without waiting for its reply.
    pub fn start_ref(&self, req: &Request) -> Result<Pending, RemoteError> {
        self.try_start(req).map_err(|(err, _)| err)
    }

    /// Like [`Connection::start_ref`], but on failure also tells whether any byte of the
    /// request may have reached the server (`true`) or certainly none did (`false`), so that a
    /// pool can resend even a non-idempotent request that never left.
    pub(crate) fn try_start(&self, req: &Request) -> Result<Pending, (RemoteError, bool)> {
        let _ = self.shared.take_in_arrived();
        let id = {
            let mut w = self.shared.waiters.lock();
            if let Some(death) = &w.dead {
                return Err((death.to_error(), false));
            }
            let mut id = self.next_id.fetch_add(1, Ordering::Relaxed);
            // After 2^32 requests the counter wraps; skip the reserved ids and any in use.
            while id <= HELLO_ID || w.slots.contains_key(&id) {
                id = self.next_id.fetch_add(1, Ordering::Relaxed);
            }
            w.slots.insert(id, Slot::default());
            id
        };
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        // From here on, dropping `pending` unregisters the request.
        let pending = Pending {
            id,
            shared: Arc::clone(&self.shared),
            timeout: self.request_timeout,
        };
        let mut writer = self.writer.lock();
        let Outbox { stream, scratch } = &mut *writer;
        scratch.clear();
        let max = self.limits.max_payload;
        // A write's data goes out from its own buffer after the frame's head, not copied into
        // the frame (cloning the request clones a reference to the data, not the bytes).
        let write = matches!(req, Request::Write { .. }).then(|| Frame::new(id, req.clone()));
        let encoded = match &write {
            Some(frame) => frame.encode_split(scratch, max),
            None => Frame::new(id, ByRef(req))
                .encode(scratch, max)
                .map(|()| &[][..]),
        };
        let tail = encoded.map_err(|e| {
            let err = RemoteError::Protocol(format!("{} request: {e}", req.name()));
            (err, false)
        })?;
        // The scratch buffer keeps its size (at most one frame, max_payload): freeing it
        // after each large write could have the next one faulted in afresh.
        let sent = self.send_frame(&**stream, [scratch, tail]);
        if let Err(e) = sent {
            drop(writer);
            let why = format!("sending a request failed: {}", io_text(&e));
            self.shared.kill(Death::Closed(why.clone()));
            return Err((RemoteError::Disconnected(why), true));
        }
        if let Request::Write { data, .. } = req {
            DATA_SENT.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Ok(pending)
    }

    /// Writes a whole frame, given as its head and its tail. While the socket takes no more, reads what arrived if no one
    /// else is (module docs, point 4): the server may be blocked sending a reply nobody waits
    /// for yet, and would read no more of this frame until that reply is taken in.
    fn send_frame(&self, stream: &dyn Stream, parts: [&[u8]; 2]) -> std::io::Result<()> {
        use std::io::ErrorKind;
        let deadline = Instant::now() + self.request_timeout;
        let [mut bytes, mut tail] = parts;
        loop {
            if bytes.is_empty() && !tail.is_empty() {
                bytes = std::mem::take(&mut tail);
            }
            // Once the frame is taken, a TLS stream may still hold records to send.
            let step = if bytes.is_empty() {
                match stream.flush_now() {
                    Ok(true) => return Ok(()),
                    Ok(false) => Err(ErrorKind::WouldBlock.into()),
                    Err(e) => Err(e),
                }
            } else {
                stream.send_now(bytes)
            };
            match step {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ErrorKind::TimedOut.into());
                    }
                    // Whoever else is reading frees the socket for us; then only wait for
                    // room, but look again soon in case they stop.
                    let (events, wait) = if self.shared.take_in_arrived() {
                        (Events::OUT | Events::IN, left)
                    } else {
                        (Events::OUT, left.min(Duration::from_millis(10)))
                    };
                    crate::sys::poll_fd(stream.fd(), events, wait)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The limits negotiated in the handshake.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The feature bits agreed in the handshake.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// What the server announced in its `Hello` reply.
    pub fn server(&self) -> &HelloReply {
        &self.server
    }

    /// The verified server key and the cipher suite; `None` over plain TCP.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// Takes in what arrived while no one was reading, so that a server's hang-up on an idle
    /// connection shows in [`Connection::is_alive`] (a request does this itself first).
    pub fn notice_hang_up(&self) {
        let _ = self.shared.take_in_arrived();
    }

    /// When the handshake finished.
    pub fn made_at(&self) -> Instant {
        self.made_at
    }

    /// False once the end of the stream was seen or the connection was given up.
    pub fn is_alive(&self) -> bool {
        !self.shared.is_dead()
    }

    /// Requests sent whose replies have not been collected yet.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Gives the connection up; every waiter fails at once.
    pub fn close(&self) {
        self.shared.kill(Death::Closed(
            "the connection was closed by the client".into(),
        ));
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

impl PendingReply for Pending {
    fn wait(self) -> Result<Reply, RemoteError> {
        Pending::wait(self)
    }
}

impl Transport for Connection {
    type Pending = Pending;
    fn start(&self, req: &Request) -> Result<Pending, RemoteError> {
        self.start_ref(req)
    }

    /// One connection cannot reconnect, so nothing is retried here; see [`super::Pool`].
    fn call(&self, req: Request) -> Result<Reply, RemoteError> {
        self.start_ref(&req)?.wait()
    }

    fn limits(&self) -> Limits {
        self.limits
    }
    fn features(&self) -> u64 {
        self.features
    }
}

/// Encodes a borrowed request, so a retry can resend it without a copy of its data.
struct ByRef<'a>(&'a Request);

impl Message for ByRef<'_> {
    fn kind(&self) -> u16 {
        self.0.kind()
    }
    fn encode_body(&self, w: &mut Writer<'_>) {
        self.0.encode_body(w)
    }
    /// Never called: this type only encodes.
    fn decode_body(kind: u16, _: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Err(DecodeError::UnknownKind(kind))
    }
}

/// Reads until the reply to `Hello`, or the server's unasked refusal.
fn read_hello(
    reader: &mut FrameReader<Box<dyn Stream>>,
    timeout: Duration,
    write_err: Option<std::io::Error>,
) -> Result<HelloReply, RemoteError> {
    let lost = |write_err: Option<std::io::Error>, why: String| match write_err {
        Some(e) => RemoteError::Disconnected(format!("sending hello failed: {}", io_text(&e))),
        None => RemoteError::Disconnected(why),
    };
    loop {
        let frame = match reader.read_frame::<Reply>() {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(ReadError::UnexpectedEof) => {
                return Err(lost(
                    write_err,
                    "the server closed the connection during the handshake".into(),
                ))
            }
            Err(e) if e.is_timeout() => {
                return Err(match write_err {
                    Some(_) => lost(write_err, String::new()),
                    None => RemoteError::TimedOut(timeout),
                })
            }
            Err(ReadError::Io(e)) => return Err(lost(write_err, io_text(&e))),
            Err(ReadError::Malformed { error, .. }) => {
                return Err(RemoteError::Protocol(format!(
                    "not a shelf server, or an incompatible one: {error}"
                )))
            }
        };
        match (frame.id, frame.msg) {
            (HELLO_ID, Reply::Hello(h)) => return Ok(h),
            (HELLO_ID | UNSOLICITED_ID, Reply::Error { code, message }) => {
                return Err(handshake_error(code, message))
            }
            (UNSOLICITED_ID, other) => {
                tracing::debug!(?other, "ignoring an unasked message during the handshake");
            }
            (id, other) => {
                return Err(RemoteError::Protocol(format!(
                    "the server answered request {id} during the handshake: {other:?}"
                )))
            }
        }
    }
}

/// Runs the TLS handshake over a fresh TCP stream, verifying the server by its pinned key.
/// Nothing of ours is sent before that check passed: the hello goes out after.
fn tls_handshake(
    stream: TcpStream,
    tls: &TlsOptions,
    opts: &ConnectOptions,
) -> Result<(TlsStream, TlsInfo), RemoteError> {
    let pin = ServerPin::new(tls.fingerprint.clone());
    let config = shelf_secure::client_config(Arc::clone(&pin), tls.identity.as_ref())
        .map_err(|e| RemoteError::Protocol(e.to_string()))?;
    let conn = rustls::ClientConnection::new(config, shelf_secure::tls::server_name())
        .map_err(|e| RemoteError::Protocol(format!("TLS: {e}")))?;
    let err = match TlsStream::handshake(stream, conn, opts.connect_timeout) {
        Ok(s) => {
            let info = TlsInfo {
                fingerprint: s.peer_key().map(fingerprint).unwrap_or_default(),
                cipher_suite: s.cipher_suite().to_owned(),
            };
            return Ok((s, info));
        }
        Err(e) => e,
    };
    // The verifier's finding says more than the alert it caused.
    match pin.outcome() {
        Some(Err(PinError::Unknown { seen })) => {
            return Err(RemoteError::UnknownServer {
                addr: opts.addr.clone(),
                fingerprint: seen,
            })
        }
        Some(Err(PinError::Mismatch { want, seen })) => {
            return Err(RemoteError::ServerKeyChanged {
                addr: opts.addr.clone(),
                want,
                seen,
            })
        }
        Some(Ok(_)) | None => {}
    }
    Err(match err {
        HandshakeError::TimedOut(after) => RemoteError::TimedOut(after),
        HandshakeError::Closed => RemoteError::Disconnected(
            "the server closed the connection during the TLS handshake (is it an older \
             shelfd that speaks plaintext? then pass --insecure-plaintext)"
                .into(),
        ),
        HandshakeError::Io(e) => RemoteError::Disconnected(io_text(&e)),
        HandshakeError::Tls(e) => {
            RemoteError::Protocol(format!("TLS handshake with the server failed: {e}"))
        }
        // A plaintext shelfd answers a TLS hello with one error frame (so does a busy one).
        HandshakeError::NotTls(bytes) => {
            match Frame::<Reply>::decode(&bytes, DEFAULT_MAX_PAYLOAD) {
                Ok(Some((frame, _))) => match frame.msg {
                    Reply::Error { code, message } => handshake_error(code, message),
                    other => RemoteError::Protocol(format!(
                    "the server speaks plaintext (answered {other:?}): pass --insecure-plaintext \
                     to connect without TLS"
                )),
                },
                Ok(None) | Err(_) => RemoteError::Protocol(
                    "the server does not speak TLS: if it is shelfd --insecure-plaintext, pass \
                 --insecure-plaintext too"
                        .into(),
                ),
            }
        }
    })
}

fn handshake_error(code: Code, message: String) -> RemoteError {
    match code {
        Code::Busy => RemoteError::Busy(message),
        Code::Access => RemoteError::Auth(if message.is_empty() {
            "the server refused the token".into()
        } else {
            message
        }),
        Code::Protocol => RemoteError::Protocol(message),
        other => RemoteError::Server {
            code: other,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use shelf_proto::{Attr, FileKind, Timestamp};

    use super::*;
    use crate::testserver::{fake, hello_reply, quick_opts};

    fn attr(ino: u64) -> Attr {
        Attr {
            ino,
            kind: FileKind::File,
            perm: 0o644,
            nlink: 1,
            size: 0,
            blocks: 0,
            blksize: 4096,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            btime: Timestamp::default(),
        }
    }

    fn stat(n: u64) -> Request {
        Request::Stat {
            path: n.to_string().into_bytes(),
        }
    }

    /// The fake server answers a batch of stats in reverse order, each with `ino` = the path.
    fn reverse_server(batch: usize) -> impl FnOnce(crate::testserver::Peer) + Send {
        move |mut peer| {
            peer.accept_hello();
            let mut got = Vec::new();
            while let Some(f) = peer.recv() {
                got.push(f);
                if got.len() == batch {
                    for f in got.drain(..).rev() {
                        let Request::Stat { path } = f.msg else {
                            panic!("expected stat")
                        };
                        let n: u64 = String::from_utf8(path).unwrap().parse().unwrap();
                        peer.send(f.id, Reply::Attr(attr(n)));
                    }
                }
            }
        }
    }

    #[test]
    fn pipelined_replies_out_of_order_reach_their_waiters() {
        let (stream, server) = fake(reverse_server(64));
        let conn = Connection::handshake_over(stream, &quick_opts()).expect("handshake");
        let pending: Vec<_> = (0..64)
            .map(|n| conn.start_ref(&stat(n)).expect("sent"))
            .collect();
        assert_eq!(conn.in_flight(), 64);
        for (n, p) in pending.into_iter().enumerate() {
            match p.wait().expect("reply") {
                Reply::Attr(a) => assert_eq!(a.ino, n as u64, "reply routed by id"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(conn.in_flight(), 0);
        drop(conn);
        server.join().expect("server ends when the client hangs up");
    }

    /// Many threads share one connection, and every waiter either reads for the others or is
    /// woken: a lost wake-up shows as a timeout (500 ms).
    #[test]
    fn many_threads_take_turns_reading_for_each_other() {
        const THREADS: u64 = 16;
        let (stream, _server) = fake(reverse_server(THREADS as usize));
        let conn = Arc::new(Connection::handshake_over(stream, &quick_opts()).expect("hs"));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let conn = Arc::clone(&conn);
                std::thread::spawn(move || {
                    for round in 0..200u64 {
                        let n = t * 1000 + round;
                        // Each thread waits for its reply, so every batch holds one request
                        // per thread and the server reverses them.
                        match conn.call(stat(n)).expect("reply") {
                            Reply::Attr(a) => assert_eq!(a.ino, n),
                            other => panic!("{other:?}"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread ok");
        }
        assert_eq!(conn.in_flight(), 0);
    }

    /// A reply nobody waits for yet can fill the socket while the server, busy sending it,
    /// reads nothing more. A large request sent then must take that reply in as it goes, or
    /// the two ends would wait on each other until the write timed out.
    #[test]
    fn a_large_request_goes_out_past_a_large_reply_nobody_reads_yet() {
        let (stream, _server) = fake(|mut peer| {
            peer.accept_hello();
            let read = peer.recv().expect("the read");
            // Blocks until the client has taken most of it in; reads nothing meanwhile.
            peer.send(
                read.id,
                Reply::Data {
                    attr: attr(1),
                    data: vec![5; 4 << 20].into(),
                },
            );
            while let Some(f) = peer.recv() {
                peer.send(f.id, Reply::Attr(attr(2)));
            }
        });
        let conn = Connection::handshake_over(stream, &quick_opts()).expect("handshake");
        let read = Request::Read {
            path: b"f".to_vec(),
            offset: 0,
            len: 4 << 20,
        };
        let unread = conn.start_ref(&read).expect("sent");
        let write = Request::Write {
            path: b"f".to_vec(),
            offset: 0,
            data: vec![9; 4 << 20].into(),
        };
        let written = conn.start_ref(&write).expect("the write goes out");
        assert!(matches!(written.wait(), Ok(Reply::Attr(a)) if a.ino == 2));
        match unread.wait() {
            Ok(Reply::Data { data, .. }) => assert_eq!(data.len(), 4 << 20),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hang_up_while_idle_is_seen_before_the_next_request_goes_out() {
        let (stream, server) = fake(|mut peer| {
            peer.accept_hello();
            // Dropping the peer closes the stream while the client reads nothing.
        });
        let conn = Connection::handshake_over(stream, &quick_opts()).expect("handshake");
        server.join().expect("server hung up");
        let mkdir = Request::Mkdir {
            path: b"d".to_vec(),
            perm: 0o755,
        };
        match conn.try_start(&mkdir) {
            // `false`: certainly not sent, so even a mkdir may go again on a fresh connection.
            Err((RemoteError::Disconnected(why), false)) => {
                assert!(why.contains("closed"), "{why}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(!conn.is_alive());
    }

    #[test]
    fn hang_up_fails_every_waiter_at_once() {
        let (stream, _server) = fake(|mut peer| {
            peer.accept_hello();
            for _ in 0..3 {
                peer.recv();
            }
            // Dropping the peer closes the stream with three requests unanswered.
        });
        let opts = ConnectOptions {
            request_timeout: Duration::from_secs(10),
            ..quick_opts()
        };
        let conn = Connection::handshake_over(stream, &opts).expect("handshake");
        let started = Instant::now();
        let pending: Vec<_> = (0..3).map(|n| conn.start_ref(&stat(n)).unwrap()).collect();
        for p in pending {
            let err = p.wait().expect_err("no reply can come");
            assert!(matches!(err, RemoteError::Disconnected(_)), "{err:?}");
            assert_eq!(err.errno(), libc::ENOTCONN);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "failed promptly"
        );
        assert!(!conn.is_alive());
        let err = conn
            .start_ref(&stat(9))
            .expect_err("dead connection refuses");
        assert!(matches!(err, RemoteError::Disconnected(_)), "{err:?}");
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let (stream, _server) = fake(|mut peer| {
            peer.accept_hello();
            while peer.recv().is_some() {}
        });
        let conn = Connection::handshake_over(stream, &quick_opts()).expect("handshake");
        let started = Instant::now();
        let first = conn.start_ref(&stat(1)).expect("sent");
        let second = conn.start_ref(&stat(2)).expect("sent");
        let err = first.wait().expect_err("never answered");
        assert!(matches!(err, RemoteError::TimedOut(_)), "{err:?}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(450), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // The connection was given up, so the other waiter fails at once.
        let err = second.wait().expect_err("given up");
        assert!(matches!(err, RemoteError::Disconnected(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!conn.is_alive());
    }

    /// A server that answers everyone but one: that one times out, whether it was reading
    /// for the others or asleep.
    #[test]
    fn a_request_never_answered_times_out_among_answered_ones() {
        let (stream, _server) = fake(|mut peer| {
            peer.accept_hello();
            let _ignored = peer.recv().expect("the request never answered");
            while let Some(f) = peer.recv() {
                peer.send(f.id, Reply::Attr(attr(7)));
            }
        });
        let conn = Arc::new(Connection::handshake_over(stream, &quick_opts()).expect("hs"));
        let lost = conn.start_ref(&stat(1)).expect("sent");
        let busy = {
            let conn = Arc::clone(&conn);
            std::thread::spawn(move || {
                // Keeps replies coming until the connection is given up.
                while conn.call(stat(2)).is_ok() {}
            })
        };
        let started = Instant::now();
        let err = lost.wait().expect_err("never answered");
        assert!(matches!(err, RemoteError::TimedOut(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        busy.join()
            .expect("the other caller ends with the connection");
        assert!(!conn.is_alive());
    }

    #[test]
    fn handshake_refusals_are_typed() {
        let busy = "server busy: 8 clients connected, try again later";
        let (stream, _s) = fake(move |mut peer| {
            peer.send(0, Reply::error(Code::Busy, busy));
        });
        match Connection::handshake_over(stream, &quick_opts()) {
            Err(RemoteError::Busy(m)) => assert_eq!(m, busy),
            other => panic!("{:?}", other.err()),
        }

        let (stream, _s) = fake(|mut peer| {
            let f = peer.recv().expect("hello");
            peer.send(f.id, Reply::error(Code::Access, "bad token"));
        });
        let err = Connection::handshake_over(stream, &quick_opts())
            .err()
            .expect("refused");
        assert!(matches!(err, RemoteError::Auth(_)), "{err:?}");
        assert_eq!(err.errno(), libc::EACCES);

        let (stream, _s) = fake(|mut peer| {
            let f = peer.recv().expect("hello");
            let mut h = hello_reply();
            h.version = 99;
            peer.send(f.id, Reply::Hello(h));
        });
        let err = Connection::handshake_over(stream, &quick_opts())
            .err()
            .expect("refused");
        assert!(matches!(err, RemoteError::Protocol(_)), "{err:?}");
    }

    #[test]
    fn handshake_is_bounded_by_the_connect_timeout() {
        let (stream, _s) = fake(|mut peer| while peer.recv().is_some() {});
        let started = Instant::now();
        let err = Connection::handshake_over(stream, &quick_opts())
            .err()
            .expect("no hello");
        assert!(matches!(err, RemoteError::TimedOut(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn the_hello_carries_token_and_limits_are_the_smaller() {
        let (stream, _s) = fake(|mut peer| {
            let f = peer.recv().expect("hello");
            let Request::Hello(h) = f.msg else {
                panic!("hello first")
            };
            assert_eq!(h.token, b"sesame");
            assert_eq!(f.id, HELLO_ID);
            let mut r = hello_reply();
            r.max_io = 65536;
            peer.send(f.id, Reply::Hello(r));
            while peer.recv().is_some() {}
        });
        let opts = ConnectOptions {
            token: Some(b"sesame".to_vec()),
            ..quick_opts()
        };
        let conn = Connection::handshake_over(stream, &opts).expect("handshake");
        assert_eq!(conn.limits().max_io, 65536);
        assert_eq!(conn.limits().max_payload, DEFAULT_MAX_PAYLOAD);
    }

    #[test]
    fn unsolicited_messages_are_ignored_and_explain_a_hang_up() {
        let (stream, _s) = fake(|mut peer| {
            peer.accept_hello();
            let f = peer.recv().expect("request");
            peer.send(0, Reply::Pong);
            peer.send(f.id, Reply::Pong);
            let g = peer.recv().expect("request");
            let _ = g;
            peer.send(0, Reply::error(Code::TimedOut, "idle for 300 s, closing"));
        });
        let conn = Connection::handshake_over(stream, &quick_opts()).expect("handshake");
        assert_eq!(conn.call(Request::Ping).expect("pong"), Reply::Pong);
        let err = conn.call(Request::Ping).expect_err("closed");
        assert!(err.to_string().contains("idle for 300 s"), "{err}");
    }

    #[test]
    fn connect_to_a_closed_port_is_unreachable_at_once() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let opts = ConnectOptions::new(format!("127.0.0.1:{port}"));
        let started = Instant::now();
        let err = Connection::connect(&opts).err().expect("refused");
        assert_eq!(
            err.to_string(),
            format!("cannot reach server 127.0.0.1:{port}: connection refused")
        );
        assert_eq!(err.errno(), libc::ENOTCONN);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn connect_over_tcp_reports_busy() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let bytes = Frame::new(0, Reply::error(Code::Busy, "server busy"))
                .to_bytes(DEFAULT_MAX_PAYLOAD)
                .expect("encodes");
            s.write_all(&bytes).expect("write");
            // Read the hello before closing, so the close is a clean FIN, not a reset.
            let mut buf = [0u8; 256];
            let _ = std::io::Read::read(&mut s, &mut buf);
        });
        let err = Connection::connect(&ConnectOptions::new(addr.to_string()))
            .err()
            .expect("busy");
        assert!(
            matches!(err, RemoteError::Busy(ref m) if m == "server busy"),
            "{err:?}"
        );
        server.join().expect("server thread");
    }
}
