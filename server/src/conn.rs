//! `serve`: one client connection, from handshake to hang-up. Knows nothing of processes.
//!
//! What is hard, and how the code is arranged for it:
//!
//! 1. **Pipelining without head-of-line blocking.** The calling thread reads and decodes frames
//!    and hands requests that only look (stat, list, read, seek, readlink, statfs, fsync,
//!    ping) to a small pool of worker threads, so a slow read does not hold up a stat behind
//!    it. A look
//!    that came alone, with nothing in flight and nothing behind it, is answered on the
//!    reading thread instead: waking a worker would cost more than it could overlap.
//! 2. **Order where it matters.** A request that changes the library (`Request::is_change`)
//!    waits until every earlier request has finished and runs on the reading thread before the
//!    next frame is read. So a client may pipeline create-then-write, or a put's writes and its
//!    commit, and see them take effect in the order it sent them; reads see earlier changes.
//! 3. **Whole replies.** Replies are encoded outside any lock and written with one `write_all`
//!    under the writer's mutex, so frames from different threads never interleave.
//! 4. **Every request gets exactly one reply.** Handlers return `Reply`; failures are `Error`
//!    replies; a panic in a handler is caught and answered with EIO.
//! 5. **Hostile peers.** Hello must come first (EPROTO otherwise), within the handshake timeout;
//!    the token is compared in constant time; a malformed or oversized frame gets an EPROTO
//!    reply carrying the header's request id, then `serve` returns `Err` and the connection
//!    closes. The idle timeout counts only time with no request in flight.
//! 6. **No litter.** Put temporaries made on this connection and not committed or aborted are
//!    removed when `serve` returns.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use shelf_proto::{
    features, is_timeout, negotiate, write_parts, Admission, Attr, ChangedPath, Code, DecodeError,
    EntryState, Frame, FrameReader, Hello, HelloReply, Limits, LockAsk, LockFlavor, LockKind,
    ReadError, Reply, Request, DEFAULT_MAX_IO, DEFAULT_MAX_PAYLOAD, HARD_MAX_PAYLOAD,
    MAX_CHANGES_WAIT_MS, MAX_LOCK_WAIT_MS, PROTOCOL_VERSION,
};
use shelf_secure::files::parse_authorized_keys;
use shelf_secure::{fingerprint, TlsStream};
use subtle::ConstantTimeEq;

use crate::library::{Error, Library};
use crate::locks::{Locks, Wait};
use crate::relpath::RelPath;
use crate::sys::readable_now;
use crate::watch::Watches;

/// Largest payload accepted before the handshake: a `Hello` is a token and a short name.
const HELLO_MAX_PAYLOAD: u32 = 64 << 10;
/// Features this server serves.
pub const FEATURES: u64 = features::ATOMIC_PUT
    | features::LINKS
    | features::XATTR
    | features::FALLOCATE
    | features::SEEK_HOLES
    | features::COPY_RANGE
    | features::ADMITTED
    | features::LOCKS
    | features::CHANGE_NOTIFY
    | features::CHANGE_STATE;

/// The server's end of one client's connection: a byte stream `serve` can split between a
/// reading and a writing thread, shut down, and time out. (The client's own socket trait is
/// `shelf_remote::Stream`, a different thing.)
pub trait Peer: Read + Write + AsFd + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Whether a read would not block now. A TLS stream also counts the plaintext it has
    /// decrypted and holds, which `poll` on the socket cannot see.
    fn readable_now(&self) -> bool {
        readable_now(self.as_fd())
    }
}

impl Peer for TlsStream {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(self.clone())
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TlsStream::shutdown(self, how)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TlsStream::set_read_timeout(self, timeout);
        Ok(())
    }
    fn readable_now(&self) -> bool {
        TlsStream::readable_now(self)
    }
}

impl Peer for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl Peer for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        UnixStream::shutdown(self, how)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

/// How one connection is served.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The shared secret a client must present; `None`: no token is required.
    pub token: Option<Vec<u8>>,
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// Largest frame payload this server accepts and sends (capped at `HARD_MAX_PAYLOAD`).
    pub max_payload: u32,
    /// Largest `Read`/`Write` data length this server serves.
    pub max_io: u32,
    /// Close a connection with no request in flight for this long; `None` or zero: never.
    pub idle_timeout: Option<Duration>,
    /// Close a connection that has not completed `Hello` within this time (zero: never).
    pub handshake_timeout: Duration,
    /// Worker threads for the requests of one connection.
    pub workers: usize,
    /// The file of client keys admitted (`shelfd --authorized-keys`), read afresh for every
    /// connection so that a key removed from it is refused from the next connection on.
    pub authorized_keys: Option<PathBuf>,
    /// The key this connection's client proved it holds in the TLS handshake (its
    /// SubjectPublicKeyInfo DER); set per connection.
    pub peer_key: Option<Vec<u8>>,
    /// Directories one connection may watch for change push (`watch.rs`); 0: none.
    pub max_watches: usize,
    /// This connection's socket to the server's watcher (`watch/watcher.rs`); `None`: the
    /// connection watches on an inotify instance of its own (an in-process server).
    pub watcher: Option<Arc<OwnedFd>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            token: None,
            read_only: false,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_io: DEFAULT_MAX_IO,
            idle_timeout: Some(Duration::from_secs(300)),
            handshake_timeout: Duration::from_secs(10),
            workers: 4,
            authorized_keys: None,
            peer_key: None,
            max_watches: crate::watch::MAX_WATCHES,
            watcher: None,
        }
    }
}

/// Why a connection ended other than by the client hanging up between frames. Each message
/// says its cause itself, so none is exposed again as `source()` (printed as a chain it would
/// be said twice).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("connection error: {0}")]
    Io(io::Error),
    #[error("client closed the connection in the middle of a frame")]
    UnexpectedEof,
    #[error("malformed frame from client: {0}")]
    Malformed(DecodeError),
    #[error("handshake refused: {0}")]
    Refused(String),
    #[error("no hello within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("idle for {0:?}")]
    IdleTimeout(Duration),
}

impl From<io::Error> for ServeError {
    fn from(e: io::Error) -> Self {
        ServeError::Io(e)
    }
}

/// Serves one client until it hangs up. Generic, so tests run it over `UnixStream::pair()`;
/// never forks, exits or touches signals. `Ok(())` when the client closed between frames.
pub fn serve<S: Peer>(stream: S, lib: &Library, cfg: &ServeConfig) -> Result<(), ServeError> {
    let writer = stream.try_clone()?;
    let conn = Conn {
        lib,
        cfg,
        writer: Mutex::new(writer),
        session: Session::new(Limits {
            max_payload: cfg.max_payload.min(HARD_MAX_PAYLOAD),
            max_io: 0,
        })
        .with_watcher(cfg.watcher.as_ref().and_then(|fd| fd.try_clone().ok())),
        broken: AtomicBool::new(false),
    };
    let in_flight = InFlight::default();
    // A zero duration means "no timeout" to us but is an error to set_read_timeout.
    stream.set_read_timeout(Some(cfg.handshake_timeout).filter(|d| !d.is_zero()))?;
    let idle = IdleRead {
        inner: stream,
        in_flight: &in_flight,
    };
    let mut reader = FrameReader::new(idle, HELLO_MAX_PAYLOAD);
    let result = match handshake(&mut reader, &conn) {
        Ok(Some(limits)) => {
            reader.set_max_payload(limits.max_payload);
            let idle = cfg.idle_timeout.filter(|d| !d.is_zero());
            reader.get_ref().inner.set_read_timeout(idle)?;
            request_loop(&mut reader, &conn, &in_flight)
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    conn.session.end(lib);
    // Our FIN now, even if a caller still holds a clone of the stream.
    let _ = lock(&conn.writer).shutdown(Shutdown::Write);
    result
}

fn handshake<R: Read>(
    reader: &mut FrameReader<R>,
    conn: &Conn<'_, impl Peer>,
) -> Result<Option<Limits>, ServeError> {
    let cfg = conn.cfg;
    let frame = match reader.read_frame::<Request>() {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(e) => {
            return Err(read_failure(
                e,
                conn,
                ServeError::HandshakeTimeout(cfg.handshake_timeout),
            ))
        }
    };
    let refuse = |code: Code, message: String| {
        conn.send(frame.id, Reply::error(code, message.clone()));
        Err(ServeError::Refused(message))
    };
    let Request::Hello(hello) = frame.msg else {
        return refuse(
            Code::Protocol,
            format!("the first request must be hello, not {}", frame.msg.name()),
        );
    };
    let Hello {
        min_version,
        max_version,
        ref token,
        ref agent,
        ..
    } = hello;
    if !(min_version..=max_version).contains(&PROTOCOL_VERSION) {
        return refuse(
            Code::Protocol,
            format!(
                "client speaks protocol versions {min_version} to {max_version}; \
                 this server speaks {PROTOCOL_VERSION}"
            ),
        );
    }
    let admitted = match admit(cfg, token) {
        Ok(a) => a,
        Err(why) => {
            tracing::warn!(agent = %agent, "refused: {why}");
            return refuse(Code::Access, why);
        }
    };
    if admitted == Admitted::ReadOnlyKey {
        conn.session.read_only.store(true, Ordering::Relaxed);
    }
    let ours = HelloReply {
        version: PROTOCOL_VERSION,
        max_payload: cfg.max_payload,
        max_io: cfg.max_io,
        features: FEATURES,
        agent: concat!("shelfd/", env!("CARGO_PKG_VERSION")).to_owned(),
        admitted: None,
    };
    let agreed = match negotiate(&hello, &ours) {
        Ok(n) => n,
        Err(e) => return refuse(Code::Protocol, e.to_string()),
    };
    let Limits {
        max_payload,
        max_io,
    } = agreed.limits;
    conn.session
        .max_payload
        .store(max_payload, Ordering::Relaxed);
    conn.session.max_io.store(max_io, Ordering::Relaxed);
    conn.session
        .features
        .store(agreed.features, Ordering::Relaxed);
    // The agreed values, not our own: the client's `negotiate` over them agrees with ours.
    let mut reply = ours.agreed(&agreed);
    // Only a client that asked can decode the trailing field.
    if agreed.features & features::ADMITTED != 0 {
        reply.admitted = Some(match admitted {
            Admitted::Open => Admission::Open,
            Admitted::Token => Admission::Token,
            Admitted::Key => Admission::Key,
            Admitted::ReadOnlyKey => Admission::ReadOnlyKey,
        });
    }
    conn.send(frame.id, Reply::Hello(reply));
    tracing::info!(agent = %agent, max_payload, max_io, "handshake done");
    Ok(Some(agreed.limits))
}

/// How a client was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admitted {
    /// Neither a token nor an authorized-keys file is required.
    Open,
    Token,
    Key,
    ReadOnlyKey,
}

/// Decides whether the client may in: by its key (listed in the authorized-keys file, read
/// now) or by the token. With neither configured, everyone may. The message of a refusal
/// names the key, never anything secret.
fn admit(cfg: &ServeConfig, token: &[u8]) -> Result<Admitted, String> {
    let token_ok = cfg
        .token
        .as_ref()
        .map(|want| bool::from(token.ct_eq(want.as_slice())));
    let Some(path) = &cfg.authorized_keys else {
        return match token_ok {
            None => Ok(Admitted::Open),
            Some(true) => Ok(Admitted::Token),
            Some(false) => Err("bad or missing token".to_owned()),
        };
    };
    if let Some(key) = &cfg.peer_key {
        let listed = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| parse_authorized_keys(&text, path).map_err(|e| e.to_string()));
        match listed {
            Ok(keys) => {
                if let Some(k) = keys.iter().find(|k| k.spki == *key) {
                    return Ok(if k.read_only {
                        Admitted::ReadOnlyKey
                    } else {
                        Admitted::Key
                    });
                }
            }
            // The file is the server's own: say so in its log, and to the client only that
            // its key was not found.
            Err(e) => tracing::error!("authorized keys: {e}"),
        }
    }
    if token_ok == Some(true) {
        return Ok(Admitted::Token);
    }
    Err(match &cfg.peer_key {
        Some(key) => format!(
            "the client key {} is not authorized on this server",
            fingerprint(key)
        ),
        None if cfg.token.is_some() => {
            "bad or missing token, and no client key (make one with `shelf keygen`)".to_owned()
        }
        None => "this server admits only listed client keys; make one with `shelf keygen` \
                 and have its line added to the server's authorized keys"
            .to_owned(),
    })
}

fn request_loop<S: Peer>(
    reader: &mut FrameReader<IdleRead<'_, S>>,
    conn: &Conn<'_, S>,
    in_flight: &InFlight,
) -> Result<(), ServeError> {
    let workers = conn.cfg.workers.max(1);
    let (tx, rx) = mpsc::sync_channel::<Frame<Request>>(workers);
    let rx = Mutex::new(rx);
    std::thread::scope(|scope| {
        // Threads of lock waits, joined with the workers (below).
        let mut lock_waits: Vec<std::thread::ScopedJoinHandle<'_, ()>> = Vec::new();
        let pool: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| loop {
                    let job = lock(&rx).recv();
                    let Ok(frame) = job else { break };
                    conn.answer(frame);
                    in_flight.finish();
                })
            })
            .collect();
        let idle = ServeError::IdleTimeout(conn.cfg.idle_timeout.unwrap_or_default());
        let result = loop {
            let frame = match reader.read_frame::<Request>() {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e) => break Err(read_failure(e, conn, idle)),
            };
            if conn.broken.load(Ordering::Relaxed) {
                break Err(ServeError::Io(io::ErrorKind::BrokenPipe.into()));
            }
            if let Request::Changes {
                wait_ms: wait @ 1..,
            } = frame.msg
            {
                // A wait for changes: on a thread of its own, as a lock's.
                let id = frame.id;
                let spawned = std::thread::Builder::new()
                    .name("shelfd-changes".into())
                    .spawn_scoped(scope, move || {
                        conn.send(id, conn.session.changes(conn.lib, wait))
                    });
                match spawned {
                    Ok(t) => lock_waits.push(t),
                    Err(e) => conn.send(
                        id,
                        Reply::error(Code::TryAgain, format!("changes: cannot wait: {e}")),
                    ),
                }
            } else if matches!(frame.msg, Request::Lock { wait_ms: 1.., .. }) {
                if let Some(waiting) = conn.lock_or_wait(frame, scope) {
                    // Those that ended are joined now, so the list stays short.
                    let (done, running) = std::mem::take(&mut lock_waits)
                        .into_iter()
                        .partition::<Vec<_>, _>(|w| w.is_finished());
                    lock_waits = running;
                    lock_waits.push(waiting);
                    for w in done {
                        let _ = w.join();
                    }
                }
            } else if frame.msg.is_change() {
                in_flight.wait_idle();
                conn.answer(frame);
            } else if !in_flight.busy()
                && (is_quick_look(&frame.msg) || !reader.get_ref().inner.readable_now())
            {
                // Nothing to overlap with: answering here saves waking a worker, which on a
                // small VM costs about as much as a stat or a read of cached data. A look that
                // may wait for the disk runs here only when no request has arrived behind it,
                // so pipelined reads still go to the disk together; one that arrives during it
                // waits at most that one look.
                conn.answer(frame);
            } else {
                in_flight.start();
                if let Err(mpsc::SendError(frame)) = tx.send(frame) {
                    // Only if every worker died; answer here rather than drop the request.
                    conn.answer(frame);
                    in_flight.finish();
                }
            }
        };
        drop(tx);
        // Waiting locks run on threads of this scope: ended here, joined below.
        conn.session.end_locks();
        // Joined by hand: the scope's own join returns once each closure has returned, while
        // the thread may still be running its thread-local destructors (std's channel context
        // among them) and exiting (rust-lang/rust#116179, documented by #149482). An explicit
        // join waits for the thread's end, so nothing `serve` started outlives it.
        let mut panicked = None;
        for worker in pool.into_iter().chain(lock_waits) {
            if let Err(payload) = worker.join() {
                panicked.get_or_insert(payload);
            }
        }
        // As the scope would have: a worker that panicked outside `answer`'s catch is a bug.
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
        result
    })
}

/// Looks that touch only metadata: answered on the reading thread whenever nothing else is
/// in flight. Reads and listings, which may wait for the disk, are answered there only when
/// they also came alone (see `request_loop`).
fn is_quick_look(req: &Request) -> bool {
    matches!(
        req,
        Request::Ping | Request::Stat { .. } | Request::Readlink { .. } | Request::Statfs
    )
}

/// Turns a read failure into the end of the connection, replying first when the frame was
/// malformed. `timeout` is what a read timeout means at this point.
fn read_failure<S: Peer>(e: ReadError, conn: &Conn<'_, S>, timeout: ServeError) -> ServeError {
    match e {
        ReadError::Malformed { id, error } => {
            conn.send(
                id.unwrap_or(0),
                Reply::error(Code::Protocol, format!("malformed frame: {error}")),
            );
            ServeError::Malformed(error)
        }
        ReadError::UnexpectedEof => ServeError::UnexpectedEof,
        ReadError::Io(e) if is_timeout(&e) => timeout,
        ReadError::Io(e) => ServeError::Io(e),
    }
}

/// State shared by the reading thread and the workers of one connection.
struct Conn<'a, S> {
    lib: &'a Library,
    cfg: &'a ServeConfig,
    writer: Mutex<S>,
    session: Session,
    /// A reply could not be written: the client is gone, stop reading its requests.
    broken: AtomicBool,
}

impl<S: Peer> Conn<'_, S> {
    /// Runs one request and writes its one reply.
    fn answer(&self, frame: Frame<Request>) {
        let name = frame.msg.name();
        let reply =
            catch_unwind(AssertUnwindSafe(|| self.handle(frame.msg))).unwrap_or_else(|_| {
                tracing::error!(op = name, "request handler panicked");
                Reply::error(Code::Io, format!("{name}: internal server error"))
            });
        if let Reply::Error { code, message } = &reply {
            tracing::debug!(id = frame.id, op = name, ?code, %message, "request failed");
        }
        self.send(frame.id, reply);
    }

    fn handle(&self, req: Request) -> Reply {
        self.session.handle(self.lib, self.cfg, req)
    }

    /// A `Lock` that may wait: taken at once if it can be, else waited for on a thread of
    /// the connection's scope, which replies when the lock is granted or the wait cancelled,
    /// so the requests behind it go on meanwhile.
    /// Returns the waiting thread, for the caller to join.
    fn lock_or_wait<'scope>(
        &'scope self,
        frame: Frame<Request>,
        scope: &'scope std::thread::Scope<'scope, '_>,
    ) -> Option<std::thread::ScopedJoinHandle<'scope, ()>> {
        let id = frame.id;
        let limit = lock_wait(&frame.msg);
        let wait = match self.session.lock_or_wait(self.lib, &frame.msg) {
            Ok(Some(wait)) => wait,
            Ok(None) => {
                self.send(id, Reply::Ok);
                return None;
            }
            Err(e) => {
                self.send(id, error_reply(e));
                return None;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("shelfd-lock-wait".into())
            .spawn_scoped(scope, move || {
                let reply = wait.run(limit).map_or_else(error_reply, |()| Reply::Ok);
                self.send(id, reply);
            });
        match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                // The wait was dropped with the closure: nothing waits any more.
                self.send(
                    id,
                    Reply::error(Code::NoLocks, format!("lock: cannot wait: {e}")),
                );
                None
            }
        }
    }

    /// Encodes outside the lock, then writes the whole frame at once. A reply that will not
    /// encode (larger than the agreed payload) becomes an EIO reply instead.
    fn send(&self, id: u32, reply: Reply) {
        let max = self.session.max_payload.load(Ordering::Relaxed);
        let frame = Frame::new(id, reply);
        // Encoded outside the writer's lock. The head is small: a read's data is written from
        // its own buffer, not copied into the frame.
        let mut head = Vec::with_capacity(256);
        let tail = match frame.encode_split(&mut head, max) {
            Ok(tail) => tail,
            Err(e) => {
                tracing::error!(id, "reply does not fit: {e}");
                head.clear();
                let fallback =
                    Frame::new(id, Reply::error(Code::Io, format!("reply too large: {e}")));
                if fallback.encode(&mut head, max).is_err() {
                    return;
                }
                &[]
            }
        };
        let mut w = lock(&self.writer);
        let sent = write_parts(&mut *w, &head, tail);
        if let Err(e) = sent.and_then(|()| w.flush()) {
            if !self.broken.swap(true, Ordering::Relaxed) {
                tracing::debug!("cannot write reply: {e}");
            }
        }
    }
}

/// One connection's request handling without its stream: the limits agreed in the handshake
/// and the put temporaries made on it. [`serve`] runs one per connection; an in-process test
/// transport runs one per connection it plays, and [`Session::end`] when that one hangs up.
pub struct Session {
    /// Agreed in the handshake; before it, the server's own limit.
    max_payload: AtomicU32,
    max_io: AtomicU32,
    /// The features agreed in the handshake (those that change what a reply looks like).
    features: AtomicU64,
    /// Put temporaries made on this connection and not yet committed or aborted.
    temps: Mutex<HashSet<RelPath>>,
    /// The client came in with a read-only key: every change is refused as with
    /// `--read-only`.
    read_only: AtomicBool,
    /// The locks taken on this connection (`locks.rs`); they go with it.
    locks: Arc<Locks>,
    /// The directories this connection watches for its client (`watch.rs`).
    watches: Watches,
}

impl Session {
    /// A session as after a handshake that agreed `limits`.
    pub fn new(limits: Limits) -> Session {
        Session {
            max_payload: AtomicU32::new(limits.max_payload),
            max_io: AtomicU32::new(limits.max_io),
            features: AtomicU64::new(0),
            temps: Mutex::new(HashSet::new()),
            read_only: AtomicBool::new(false),
            locks: Arc::new(Locks::default()),
            watches: Watches::default(),
        }
    }

    /// The session as after a handshake that also agreed `features`.
    pub fn with_features(self, features: u64) -> Session {
        self.features.store(features, Ordering::Relaxed);
        self
    }

    /// The session asks the server's watcher over `socket` (`watch.rs`), if given.
    pub fn with_watcher(mut self, socket: Option<OwnedFd>) -> Session {
        if let Some(socket) = socket {
            self.watches = Watches::linked(socket);
        }
        self
    }

    /// Runs one request against `lib` and returns its one reply (errors become
    /// `Reply::Error`), as the connection's request loop does. A `Lock` that would have to
    /// wait is answered EAGAIN here: waiting is the connection's, which runs it on a thread
    /// ([`Session::lock_or_wait`]).
    pub fn handle(&self, lib: &Library, cfg: &ServeConfig, req: Request) -> Reply {
        if req.is_change() && (cfg.read_only || self.read_only.load(Ordering::Relaxed)) {
            return Reply::error(
                Code::ReadOnly,
                format!("{}: the library is served read-only", req.name()),
            );
        }
        self.dispatch(lib, cfg, req)
            .unwrap_or_else(|e| Reply::Error {
                code: e.code,
                message: e.message,
            })
    }

    fn dispatch(&self, lib: &Library, cfg: &ServeConfig, req: Request) -> Result<Reply, Error> {
        let max_io = self.max_io.load(Ordering::Relaxed);
        Ok(match req {
            Request::Hello(_) => {
                return Err(Error::new(
                    Code::Protocol,
                    "hello: the handshake is already done",
                ))
            }
            Request::Ping => Reply::Pong,
            Request::Stat { path } => Reply::Attr(lib.stat(&rel(path)?)?),
            Request::List {
                path,
                after,
                max_entries,
            } => {
                let max_payload = self.max_payload.load(Ordering::Relaxed);
                let (entries, more) = lib.list(&rel(path)?, &after, max_entries, max_payload)?;
                Reply::Listing { entries, more }
            }
            Request::Read { path, offset, len } => {
                if len > max_io {
                    return Err(too_big("read", len as usize, max_io));
                }
                let (attr, data) = lib.read(&rel(path)?, offset, len)?;
                Reply::Data {
                    attr,
                    data: data.into(),
                }
            }
            Request::Write { path, offset, data } => {
                if data.len() > max_io as usize {
                    return Err(too_big("write", data.len(), max_io));
                }
                Reply::Attr(lib.write(&rel(path)?, offset, &data)?)
            }
            Request::Create {
                path,
                perm,
                exclusive,
            } => Reply::Attr(lib.create(&rel(path)?, perm, exclusive)?),
            Request::SetAttr { path, attrs } => Reply::Attr(lib.set_attr(&rel(path)?, &attrs)?),
            Request::Unlink { path } => ok(lib.unlink(&rel(path)?)?),
            Request::Mkdir { path, perm } => Reply::Attr(lib.mkdir(&rel(path)?, perm)?),
            Request::Rmdir { path } => ok(lib.rmdir(&rel(path)?)?),
            Request::Rename { from, to, flags } => ok(lib.rename(&rel(from)?, &rel(to)?, flags)?),
            Request::Symlink { path, target } => Reply::Attr(lib.symlink(&rel(path)?, &target)?),
            Request::Readlink { path } => Reply::Target(lib.readlink(&rel(path)?)?),
            Request::Link { existing, new } => Reply::Attr(lib.link(&rel(existing)?, &rel(new)?)?),
            Request::Statfs => Reply::Statfs(lib.statfs()?),
            Request::Fsync { path, data_only } => ok(lib.fsync(&rel(path)?, data_only)?),
            Request::PutBegin { path, perm } => {
                let temp = lib.put_begin(&rel(path)?, perm)?;
                lock(&self.temps).insert(temp.clone());
                Reply::PutStarted {
                    temp: temp.into_bytes(),
                }
            }
            Request::GetXattr { path, name } => Reply::Xattr(lib.get_xattr(&rel(path)?, &name)?),
            Request::SetXattr {
                path,
                name,
                value,
                flags,
            } => ok(lib.set_xattr(&rel(path)?, &name, &value, flags)?),
            Request::ListXattr { path } => Reply::XattrNames(lib.list_xattr(&rel(path)?)?),
            Request::RemoveXattr { path, name } => ok(lib.remove_xattr(&rel(path)?, &name)?),
            Request::PutCommit { temp, path, mtime } => {
                let temp = rel(temp)?;
                let attr = lib.put_commit(&temp, &rel(path)?, mtime)?;
                lock(&self.temps).remove(&temp);
                Reply::Attr(attr)
            }
            Request::PutAbort { temp } => {
                let temp = rel(temp)?;
                lib.put_abort(&temp)?;
                lock(&self.temps).remove(&temp);
                Reply::Ok
            }
            Request::Fallocate {
                path,
                mode,
                offset,
                len,
            } => Reply::Attr(lib.fallocate(&rel(path)?, mode, offset, len)?),
            Request::Seek {
                path,
                offset,
                whence,
            } => Reply::Offset(lib.seek(&rel(path)?, offset, whence)?),
            mut req @ Request::Lock { .. } => {
                // In-process: no thread to wait on (see `handle`), so a wait is EAGAIN.
                if let Request::Lock { wait_ms, .. } = &mut req {
                    *wait_ms = 0;
                }
                match self.lock_or_wait(lib, &req)? {
                    None => Reply::Ok,
                    // Not reached: a lock that may not wait never makes a wait.
                    Some(_) => Reply::error(Code::TryAgain, "lock: it would have to wait"),
                }
            }
            Request::Watch { paths } => {
                let paths = paths.into_iter().map(rel).collect::<Result<Vec<_>, _>>()?;
                Reply::Watched(self.watches.watch(lib, &paths, cfg.max_watches))
            }
            // In-process: no thread to wait on, so only what is there now.
            Request::Changes { .. } => self.changes(lib, 0),
            Request::TestLock {
                path,
                file,
                owner,
                kind,
                start,
                end,
            } => {
                let ask = LockAsk {
                    file,
                    owner,
                    flavor: LockFlavor::Posix,
                    kind,
                    start,
                    end,
                };
                Reply::Lock(self.locks.test(lib, &rel(path)?, ask)?)
            }
            Request::ReleaseLocks {
                file,
                owner,
                flavor,
            } => {
                self.locks.release(file, owner, flavor);
                Reply::Ok
            }
            Request::CopyRange {
                from,
                from_offset,
                to,
                to_offset,
                len,
            } => {
                let (copied, attr) =
                    lib.copy_range(&rel(from)?, from_offset, &rel(to)?, to_offset, len)?;
                Reply::Copied { copied, attr }
            }
        })
    }

    /// Ends the session as a hang-up does: the put temporaries it made and did not commit or
    /// abort are removed.
    /// Takes the lock a `Lock` request asks for, or, if it must wait, hands back the wait to
    /// be run on a thread of its own for the request's `wait_ms` ([`lock_wait`]), whose
    /// result is the request's reply.
    pub fn lock_or_wait(&self, lib: &Library, req: &Request) -> Result<Option<Wait>, Error> {
        let Request::Lock {
            path,
            file,
            owner,
            flavor,
            kind,
            start,
            end,
            wait_ms,
        } = req
        else {
            return Err(Error::new(Code::Invalid, "lock: not a lock request"));
        };
        let ask = LockAsk {
            file: *file,
            owner: *owner,
            flavor: *flavor,
            kind: *kind,
            start: *start,
            end: *end,
        };
        let path = rel(path.clone())?;
        if *wait_ms > 0 && *kind != LockKind::Unlock {
            self.locks.set_or_wait(lib, &path, ask)
        } else {
            self.locks.set(lib, &path, ask).map(|()| None)
        }
    }

    /// Ends the connection's lock waits (their requests are answered EINTR) and drops its
    /// locks, as the end of the connection does.
    pub fn end_locks(&self) {
        self.locks.end();
        self.watches.end();
    }

    /// The changes a `Changes` asks for, waiting as long as it says (at most
    /// `MAX_CHANGES_WAIT_MS`); the connection runs it on a thread of its own. With
    /// `CHANGE_STATE`, each with what `lib` holds under it now (docs/PROTOCOL.md).
    pub fn changes(&self, lib: &Library, wait_ms: u32) -> Reply {
        let wait = Duration::from_millis(u64::from(wait_ms.min(MAX_CHANGES_WAIT_MS)));
        let (paths, lost) = self.watches.changes(wait);
        if self.features.load(Ordering::Relaxed) & features::CHANGE_STATE == 0 {
            return Reply::Changes { paths, lost };
        }
        if !paths.is_empty() && !wait.is_zero() {
            // The process that made the change sends its reply right after it; a notice that
            // overtook that reply would find the client's cache not yet agreeing, and make it
            // forget what the reply is about to tell it.
            std::thread::sleep(CHANGE_SETTLE);
        }
        let mut dirs: HashMap<Vec<u8>, Option<Attr>> = HashMap::new();
        let changes = paths
            .into_iter()
            .map(|path| change_state(lib, path, &mut dirs))
            .collect();
        Reply::ChangeStates { changes, lost }
    }

    pub fn end(&self, lib: &Library) {
        self.end_locks();
        let temps = std::mem::take(&mut *lock(&self.temps));
        for temp in temps {
            match lib.put_abort(&temp) {
                Ok(()) => tracing::info!(temp = %temp, "removed uncommitted put temporary"),
                Err(e) => tracing::debug!("leftover put temporary: {e}"),
            }
        }
    }
}

/// How long a waiting `Changes` that found a change waits before it looks at the paths
/// (`Session::changes`).
const CHANGE_SETTLE: Duration = Duration::from_millis(2);

/// `path` with the state of it and of its directory (`dirs` keeps those looked at already).
fn change_state(
    lib: &Library,
    path: Vec<u8>,
    dirs: &mut HashMap<Vec<u8>, Option<Attr>>,
) -> ChangedPath {
    let Ok(rel) = RelPath::new(path.clone()) else {
        return ChangedPath {
            path,
            state: EntryState::Unknown,
            dir: None,
        };
    };
    let state = match lib.stat(&rel) {
        Ok(attr) => EntryState::Present(attr),
        Err(e) if e.code == Code::NotFound => EntryState::Absent,
        Err(_) => EntryState::Unknown,
    };
    let dir = rel.split_last().and_then(|(parent, _)| {
        *dirs
            .entry(parent.as_bytes().to_vec())
            .or_insert_with(|| lib.stat(&parent).ok())
    });
    ChangedPath { path, state, dir }
}

fn rel(path: Vec<u8>) -> Result<RelPath, Error> {
    RelPath::new(path).map_err(|e| Error::new(e.code(), e.to_string()))
}

/// How long a `Lock` may wait on the server: what it asks, at most `MAX_LOCK_WAIT_MS`.
pub fn lock_wait(req: &Request) -> Duration {
    match req {
        Request::Lock { wait_ms, .. } => {
            Duration::from_millis(u64::from((*wait_ms).min(MAX_LOCK_WAIT_MS)))
        }
        _ => Duration::ZERO,
    }
}

fn error_reply(e: Error) -> Reply {
    Reply::Error {
        code: e.code,
        message: e.message,
    }
}

fn ok((): ()) -> Reply {
    Reply::Ok
}

fn too_big(op: &str, len: usize, max: u32) -> Error {
    Error::new(
        Code::Invalid,
        format!("{op} of {len} bytes exceeds the agreed limit of {max}"),
    )
}

/// A poisoned lock only means another thread panicked while holding it; the data (a stream,
/// a set of names, a receiver) is still usable, and one reply per request still matters.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Requests handed to workers and not yet answered.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn start(&self) {
        *lock(&self.count) += 1;
    }

    fn finish(&self) {
        let mut n = lock(&self.count);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.idle.notify_all();
        }
    }

    fn busy(&self) -> bool {
        *lock(&self.count) > 0
    }

    fn wait_idle(&self) {
        let mut n = lock(&self.count);
        while *n > 0 {
            n = self.idle.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The reading half: a read timeout counts as idleness only while no request is in flight,
/// so a client waiting on a slow reply is not cut off.
struct IdleRead<'a, S> {
    inner: S,
    in_flight: &'a InFlight,
}

impl<S: Read> Read for IdleRead<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(e) if is_timeout(&e) && self.in_flight.busy() => continue,
                other => return other,
            }
        }
    }
}

impl<S: AsFd> AsFd for IdleRead<'_, S> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

#[cfg(test)]
mod tests;
