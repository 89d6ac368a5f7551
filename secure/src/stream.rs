//! [`TlsStream`]: one TLS connection over one TCP socket, shared by a reading and a writing
//! thread (clones are handles to the same connection).
//!
//! What is hard, and how it is arranged:
//! 1. **One state machine, two directions.** rustls keeps both directions in one
//!    `Connection`, but a blocked read must never hold up a write or the reverse (each side may
//!    be writing a large frame while the other waits for it to read). So no system call that
//!    can block is made while the state's mutex is held: a reader takes in bytes with a
//!    non-blocking `recv` under the lock, and when there are none it waits in `poll` *outside*
//!    it; a writer encrypts and sends what the socket takes now under the lock, and waits for
//!    room in `poll` outside it.
//! 2. **Records in the order they were made.** TLS records carry sequence numbers, so they
//!    must reach the socket in the order rustls produced them. They stay in rustls's queue
//!    until the socket takes them, sent straight from it (no copy into a queue of ours) with
//!    a `sendmsg` that never waits, under the state's lock; only a holder of the `out` mutex
//!    sends, so whoever sends next sends what is left first. Waiting for room happens with
//!    the state's lock released. The reader never sends (the few records it may cause, such
//!    as a key update's answer, leave with the next write).
//! 3. **No waiter sleeps on a reply that is already here.** A record may decrypt to more
//!    than one frame; the rest stays inside rustls, where `poll` cannot see it.
//!    [`TlsStream::readable_now`] counts that plaintext, and [`Read::read`] drains it before it
//!    ever polls the socket.
//! 4. **Timeouts as on a socket.** The read timeout is kept here and bounds each `poll`, so
//!    a silent peer reads as `WouldBlock` exactly as `SO_RCVTIMEO` would; the handshake has
//!    one deadline for all of it, so a peer that trickles bytes cannot stretch it. Shutting
//!    the socket down wakes a reader in `poll`, as it wakes one in `recv`.
//! 5. **An end of stream without `close_notify`** reads as an ordinary end: the frames above
//!    detect a frame cut short, and a hang-up between frames is how a shelf connection ends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{RecvFlags, SendFlags};

/// Plaintext encrypted per turn under the state lock: large enough for few system calls,
/// small enough that a reader waiting for the lock is not held up long.
const CHUNK: usize = 256 << 10;

/// Why a TLS handshake failed. Each message says its cause itself, so none is exposed again
/// as `source()` (printed as a chain, `{:#}`, it would be said twice).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(io::Error),
    #[error("no TLS handshake within {0:?}")]
    TimedOut(Duration),
    #[error("the peer closed the connection during the TLS handshake")]
    Closed,
    #[error("TLS handshake failed: {0}")]
    Tls(rustls::Error),
    /// The peer's first bytes cannot begin a TLS record: it speaks something else. The bytes
    /// read so far are kept so the caller can say what (a shelf frame, say).
    #[error("the peer does not speak TLS")]
    NotTls(Vec<u8>),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

/// One TLS connection; see the module docs.
#[derive(Clone)]
pub struct TlsStream {
    inner: Arc<Inner>,
}

struct Inner {
    sock: TcpStream,
    state: Mutex<State>,
    out: Mutex<Out>,
    read_timeout: Mutex<Option<Duration>>,
    suite: String,
    peer_key: Option<Vec<u8>>,
}

struct State {
    conn: rustls::Connection,
    eof: bool,
    /// Ciphertext taken from the socket and not yet handed to rustls: `rbuf[rpos..rlen]`.
    /// rustls's own `read_tls` takes at most a few KiB per system call; one large `recv`
    /// here and memory copies into rustls make a bulk transfer take a fraction of the calls.
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
}

/// The most ciphertext taken from the socket at once.
const RBUF: usize = 128 << 10;

/// The right to send (module docs, point 2): the records themselves wait in rustls.
struct Out;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// Waits up to `timeout` (`None`: for ever) for `events`; true if they came.
fn wait(fd: BorrowedFd<'_>, events: PollFlags, timeout: Option<Duration>) -> io::Result<bool> {
    let ts = timeout.map(|t| Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    match rustix::event::poll(&mut fds, ts.as_ref()) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        // A signal: the caller loops and looks again.
        Err(rustix::io::Errno::INTR) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The socket read without waiting, for rustls's `read_tls`.
struct NonBlocking<'a>(&'a TcpStream);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, _) = rustix::net::recv(self.0, buf, RecvFlags::DONTWAIT)?;
        Ok(n)
    }
}

/// Sends what the socket takes now; never SIGPIPE.
fn send_now(sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(
        sock,
        buf,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?)
}

/// The socket written without waiting, for rustls's `write_tls`: its records go out in one
/// `sendmsg` from its own buffers.
struct SendNow<'a>(&'a TcpStream);

impl Write for SendNow<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_now(self.0, buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let sent = rustix::net::sendmsg(
            self.0,
            bufs,
            &mut rustix::net::SendAncillaryBuffer::default(),
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        )?;
        Ok(sent)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends what the socket takes now of the records `conn` has made; true when none is left.
fn push_records(conn: &mut rustls::Connection, sock: &TcpStream) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(&mut SendNow(sock)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Calls `push` until it says all is sent, waiting for room on `sock` between calls (with
/// no lock held: `push` takes what it needs itself); bounded by the socket's write timeout.
fn until_sent(sock: &TcpStream, mut push: impl FnMut() -> io::Result<bool>) -> io::Result<()> {
    let deadline = sock.write_timeout()?.map(|t| Instant::now() + t);
    while !push()? {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        wait(sock.as_fd(), PollFlags::OUT, left)?;
    }
    Ok(())
}

impl TlsStream {
    /// Runs the handshake of `conn` over `sock` to the end, all of it within `timeout`. The
    /// socket may be blocking or not; it is only ever used without waiting in a system call.
    pub fn handshake(
        sock: TcpStream,
        conn: impl Into<rustls::Connection>,
        timeout: Duration,
    ) -> Result<TlsStream, HandshakeError> {
        let mut conn = conn.into();
        conn.set_buffer_limit(None);
        let deadline = Instant::now() + timeout;
        let mut first = true;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            until_sent(&sock, || push_records(&mut conn, &sock))?;
            if !conn.is_handshaking() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HandshakeError::TimedOut(timeout));
            }
            if !wait(sock.as_fd(), PollFlags::IN, Some(left))? {
                return Err(HandshakeError::TimedOut(timeout));
            }
            let n = match NonBlocking(&sock).read(&mut buf) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            // Content types 20 to 24 begin every TLS record; anything else is another
            // protocol, said before rustls turns it into an opaque decoding error.
            if first && !(20..=24).contains(&buf[0]) {
                return Err(HandshakeError::NotTls(buf[..n].to_vec()));
            }
            first = false;
            let mut fed = &buf[..n];
            while !fed.is_empty() {
                conn.read_tls(&mut fed)?;
                if let Err(e) = conn.process_new_packets() {
                    // Tell the peer why (the alert rustls queued, as far as the socket takes
                    // it now), then give up.
                    let _ = push_records(&mut conn, &sock);
                    return Err(HandshakeError::Tls(e));
                }
            }
        }
        let suite = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let peer_key = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        Ok(TlsStream {
            inner: Arc::new(Inner {
                sock,
                state: Mutex::new(State {
                    conn,
                    eof: false,
                    rbuf: vec![0u8; RBUF].into_boxed_slice(),
                    rpos: 0,
                    rlen: 0,
                }),
                out: Mutex::new(Out),
                read_timeout: Mutex::new(None),
                suite,
                peer_key,
            }),
        })
    }

    /// The negotiated cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub fn cipher_suite(&self) -> &str {
        &self.inner.suite
    }

    /// The peer's public key (SubjectPublicKeyInfo DER), if it showed one.
    pub fn peer_key(&self) -> Option<&[u8]> {
        self.inner.peer_key.as_deref()
    }

    pub fn socket(&self) -> &TcpStream {
        &self.inner.sock
    }

    /// Bounds each wait of a read; `None` waits for ever.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        *lock(&self.inner.read_timeout) = timeout;
    }

    /// Whether a read would not wait now: plaintext already decrypted, or bytes, the end or
    /// an error on the socket (module docs, point 3).
    pub fn readable_now(&self) -> bool {
        {
            let mut st = lock(&self.inner.state);
            if st.eof || st.rpos < st.rlen {
                return true;
            }
            match st.conn.process_new_packets() {
                Ok(io) if io.plaintext_bytes_to_read() > 0 || io.peer_has_closed() => return true,
                Ok(_) => {}
                Err(_) => return true,
            }
        }
        wait(self.inner.sock.as_fd(), PollFlags::IN, Some(Duration::ZERO)).unwrap_or(true)
    }

    /// Takes plaintext into `buf` without waiting: `None` when nothing is there yet.
    fn read_ready(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let mut st = lock(&self.inner.state);
        loop {
            match st.conn.reader().read(buf) {
                Ok(n) => return Some(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: an ordinary end (module docs).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Some(Ok(0)),
                Err(e) => return Some(Err(e)),
            }
            if st.rpos < st.rlen {
                let st = &mut *st;
                let mut pending = &st.rbuf[st.rpos..st.rlen];
                match st.conn.read_tls(&mut pending) {
                    Ok(n) => st.rpos += n,
                    Err(e) => return Some(Err(e)),
                }
                if let Err(e) = st.conn.process_new_packets() {
                    return Some(Err(tls_error(e)));
                }
                continue;
            }
            if st.eof {
                return Some(Ok(0));
            }
            let st = &mut *st;
            match NonBlocking(&self.inner.sock).read(&mut st.rbuf) {
                Ok(0) => {
                    st.eof = true;
                    // rustls learns of the end too, so its reader reports it.
                    let _ = st.conn.read_tls(&mut &[][..]);
                }
                Ok(n) => {
                    st.rpos = 0;
                    st.rlen = n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn read_plain(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let timeout = *lock(&self.inner.read_timeout);
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(r) = self.read_ready(buf) {
                return r;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero())
                || !wait(self.inner.sock.as_fd(), PollFlags::IN, left)?
            {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    /// Encrypts `plain` into rustls's queue. Called with `out` held (module docs, point 2).
    fn seal(&self, _out: &Out, plain: &[u8]) -> io::Result<()> {
        lock(&self.inner.state).conn.writer().write_all(plain)
    }

    /// Sends what the socket takes now of records already made; true when none is left.
    fn push(&self, _out: &Out) -> io::Result<bool> {
        push_records(&mut lock(&self.inner.state).conn, &self.inner.sock)
    }

    /// Sends every record already made, waiting for room with the state unlocked; bounded by
    /// the socket's write timeout.
    fn drain(&self, out: &Out) -> io::Result<()> {
        until_sent(&self.inner.sock, || self.push(out))
    }

    /// Writes all of `buf`, waiting for room (bounded by the socket's write timeout).
    fn write_plain(&self, buf: &[u8]) -> io::Result<()> {
        let out = lock(&self.inner.out);
        self.drain(&out)?;
        for chunk in buf.chunks(CHUNK) {
            self.seal(&out, chunk)?;
            self.drain(&out)?;
        }
        Ok(())
    }

    /// Takes up to one chunk of `buf` without waiting and returns how much it took; the
    /// records made go out as far as the socket takes them now, the rest with the next
    /// call or [`TlsStream::flush_now`]. `WouldBlock` while earlier records still wait.
    pub fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        let out = lock(&self.inner.out);
        if !self.push(&out)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let take = buf.len().min(CHUNK);
        self.seal(&out, &buf[..take])?;
        self.push(&out)?;
        Ok(take)
    }

    /// Sends records still waiting, without waiting; true when all are out.
    pub fn flush_now(&self) -> io::Result<bool> {
        let out = lock(&self.inner.out);
        self.push(&out)
    }

    /// Shuts the socket down. Shutting the writing half sends `close_notify` first (best
    /// effort, without waiting).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            if let Ok(out) = self.inner.out.try_lock() {
                lock(&self.inner.state).conn.send_close_notify();
                let _ = self.push(&out);
            }
        }
        self.inner.sock.shutdown(how)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_plain(buf)
    }
}

impl Read for &TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_plain(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_plain(buf)?;
        Ok(buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_plain(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for TlsStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.sock.as_fd()
    }
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("suite", &self.inner.suite)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
