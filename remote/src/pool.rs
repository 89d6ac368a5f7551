//! A pool of connections to one server, the [`Transport`] the mount and the CLI use.
//!
//! What is hard, and how it is handled:
//! 1. *Spreading load.* Each connection is its own server process (docs: one child per
//!    connection), so spreading requests spreads the server's work over its cores. A request
//!    goes to an idle live connection if there is one, else opens a new connection in a free
//!    slot, else goes to the live connection with the fewest requests in flight.
//! 2. *A dead connection is replaced on next use*, not by a background thread, so an idle mount
//!    keeps no sockets busy reconnecting to a server that is away. A mount opens all its
//!    slots once, at the start and beside its first requests ([`Pool::open_free_slots`]): a
//!    request that opens a connection waits for TCP, TLS and the hello (three or four round
//!    trips, 80 ms at a 20 ms round trip), and the mount's first ones always would, as the
//!    change-notice long poll keeps the first connection busy.
//! 3. *Failing fast while the server is down.* A refused connect fails at once. A connect that
//!    timed out (an unreachable host) would cost every call `connect_timeout`, so for one
//!    `connect_timeout` after such a failure further calls fail at once without trying.
//! 4. *Resending.* A request that certainly never left is resent whatever it is; one lost with
//!    its connection is resent once only when it is idempotent ([`Request::is_idempotent`]),
//!    and only on a connection made after the loss was seen ([`Pool::fresh`]). A loss rarely
//!    comes alone: a server restart or a network cut takes every connection, and the others
//!    show it only once someone reads their end, which a thread waiting on one may not have
//!    done yet. A resend to "any live connection" then met another dead one, and the one
//!    resend was spent (faults.rs caught it about once in ten runs).
//! 5. *A busy server is waited out, not failed.* A server at `--max-clients` answers a new
//!    connection with "busy" and closes it. A pool with no live connection (the CLI's, or a
//!    mount whose connections all died) tries again with exponential backoff and jitter
//!    ([`Patience`]) for up to `busy_wait`; what would succeed a moment later then does. A
//!    pool that still has a live connection never waits and never fails for it: the call goes
//!    to a connection it has, and for [`BUSY_HOLDOFF`] no call tries to open another, so a
//!    full server is not asked for a handshake per request.
//! 6. *Requests that belong to one connection.* A lock lives in the server process of the
//!    connection that took it, so lock requests ([`Transport::call_pinned`]) all go to slot
//!    0, the pinned connection, and are never resent. Each connection slot 0 gets has a new
//!    epoch: a caller that sees the epoch change knows its locks died with the old one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use shelf_proto::{Reply, Request};

use super::connection::{Connection, Pending};
use super::{ConnectOptions, Limits, RemoteError, TlsInfo, Transport};

/// After a busy answer while other connections live: how long no call tries to open another.
pub const BUSY_HOLDOFF: Duration = Duration::from_secs(1);
/// The first pause before trying a busy server again; it doubles up to [`MAX_BUSY_PAUSE`].
const FIRST_BUSY_PAUSE: Duration = Duration::from_millis(20);
const MAX_BUSY_PAUSE: Duration = Duration::from_secs(1);

/// Makes one new, handshaken connection.
pub type Connector = Arc<dyn Fn() -> Result<Connection, RemoteError> + Send + Sync>;

/// Counters for `shelf status` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// How many connections the pool may hold.
    pub slots: usize,
    /// How many are open and alive now.
    pub connected: usize,
    /// Requests sent and not answered yet.
    pub in_flight: usize,
    /// Connections opened to replace a dead one.
    pub reconnects: u64,
    /// Requests started (retries included).
    pub requests: u64,
    /// Of those, the ones change push sends on its own threads (`Watch`, `Changes`), in no
    /// program's way: a benchmark counts a program's round trips without them.
    pub push_requests: u64,
    /// Requests resent after their connection was lost.
    pub retries: u64,
    pub limits: Limits,
}

/// N connections to one server; see the module docs.
pub struct Pool {
    slots: Vec<Mutex<Option<Arc<Connection>>>>,
    connector: Connector,
    addr: String,
    limits: Mutex<Limits>,
    /// The features of the latest connection made (a server restarted as a newer or older
    /// version may change them).
    features: AtomicU64,
    /// After a connect timed out: until when to fail at once, and with which error.
    holdoff: Mutex<Option<(Instant, std::io::ErrorKind, String)>>,
    /// After a busy answer while other connections lived: until when to open no more.
    busy_until: Mutex<Option<Instant>>,
    patience: Patience,
    connect_timeout: Duration,
    next: AtomicUsize,
    /// The epoch of the connection in slot 0 (point 6); changed only under slot 0's lock.
    pinned_epoch: AtomicU64,
    reconnects: AtomicU64,
    requests: AtomicU64,
    push_requests: AtomicU64,
    retries: AtomicU64,
}

impl Pool {
    /// Opens the first of `n` connections to `opts.addr` now, so an unreachable server or a
    /// refused token is reported at once; the others open when load needs them.
    pub fn connect(opts: ConnectOptions, n: usize) -> Result<Pool, RemoteError> {
        let for_connector = opts.clone();
        let connector: Connector = Arc::new(move || Connection::connect(&for_connector));
        Pool::with_connector(connector, n, &opts)
    }

    /// A pool whose connections come from `connector` (the loopback and tests use this).
    /// Of `opts` it uses the address (to name the server in messages), the connect timeout
    /// and the busy wait.
    pub fn with_connector(
        connector: Connector,
        n: usize,
        opts: &ConnectOptions,
    ) -> Result<Pool, RemoteError> {
        let patience = Patience {
            wait: opts.busy_wait,
            on_busy: opts.on_busy,
        };
        let addr = opts.addr.clone();
        let connect_timeout = opts.connect_timeout;
        let first = patience.connect(&connector, &|| false)?;
        let limits = first.limits();
        let features = first.features();
        let mut slots = vec![Mutex::new(Some(Arc::new(first)))];
        slots.extend((1..n.max(1)).map(|_| Mutex::new(None)));
        Ok(Pool {
            slots,
            connector,
            addr,
            limits: Mutex::new(limits),
            features: AtomicU64::new(features),
            holdoff: Mutex::new(None),
            busy_until: Mutex::new(None),
            patience,
            connect_timeout,
            next: AtomicUsize::new(0),
            pinned_epoch: AtomicU64::new(1),
            reconnects: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            push_requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    /// Opens a connection in every free slot, all at once, and returns when each has
    /// opened or failed (a failure is left for the next request to meet). Meanwhile requests
    /// go to the connections already open: a slot being filled is skipped, never waited for.
    pub fn open_free_slots(&self) {
        std::thread::scope(|scope| {
            for i in 0..self.slots.len() {
                if self.slots[i].lock().is_none() {
                    scope.spawn(move || {
                        if let Err(e) = self.fill(i, false) {
                            tracing::debug!("opening connection {i} to {}: {e}", self.addr);
                        }
                    });
                }
            }
        });
    }

    /// A slot being filled (its connect and handshake under way) counts as not connected:
    /// `shelf status` must never wait behind a connect, which can take seconds.
    pub fn state(&self) -> PoolState {
        let mut connected = 0;
        let mut in_flight = 0;
        for c in self.open_now() {
            c.notice_hang_up();
            if c.is_alive() {
                connected += 1;
                in_flight += c.in_flight();
            }
        }
        PoolState {
            slots: self.slots.len(),
            connected,
            in_flight,
            reconnects: self.reconnects.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            push_requests: self.push_requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            limits: *self.limits.lock(),
        }
    }

    /// How an open connection is secured: the server's verified key and the cipher suite.
    /// `None` over plain TCP (or with no connection open).
    pub fn tls_info(&self) -> Option<TlsInfo> {
        self.open_now().find_map(|c| c.tls().cloned())
    }

    /// How the server let this client in, as an open connection's `Hello` reply said;
    /// `None` from a server too old to say (or with no connection open).
    pub fn admitted(&self) -> Option<shelf_proto::Admission> {
        self.open_now().find_map(|c| c.server().admitted)
    }

    /// The connections in slots not being filled now, without waiting for those that are.
    fn open_now(&self) -> impl Iterator<Item = Arc<Connection>> + '_ {
        self.slots
            .iter()
            .filter_map(|slot| slot.try_lock()?.as_ref().map(Arc::clone))
    }

    /// The server's address, as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Pings every open connection that has nothing in flight, so the server's idle timeout
    /// never closes a connection under a long-lived mount: a request sent on a connection the
    /// server had just closed would be lost, and only idempotent ones could be resent. A
    /// connection that fails the ping is dead and gets replaced on next use.
    pub fn keepalive(&self) {
        let idle: Vec<Arc<Connection>> = self
            .open_now()
            .filter(|c| c.is_alive() && c.in_flight() == 0)
            .collect();
        for c in idle {
            if let Err(e) = c.start_ref(&Request::Ping).and_then(Pending::wait) {
                tracing::debug!("keepalive to {} failed: {e}", self.addr);
            }
        }
    }

    /// Closes every connection; the next request reconnects.
    pub fn disconnect_all(&self) {
        for slot in &self.slots {
            if let Some(c) = slot.lock().take() {
                c.close();
            }
        }
    }

    /// Chooses the connection for the next request (module docs, point 1).
    fn pick(&self) -> Result<Arc<Connection>, RemoteError> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<Arc<Connection>> = None;
        let mut free = None;
        for k in 0..n {
            let i = (start + k) % n;
            // A slot locked by another thread is being filled; don't wait for it here.
            let Some(slot) = self.slots[i].try_lock() else {
                continue;
            };
            match &*slot {
                Some(c) if c.is_alive() => {
                    if c.in_flight() == 0 {
                        return Ok(Arc::clone(c));
                    }
                    if best.as_ref().is_none_or(|b| c.in_flight() < b.in_flight()) {
                        best = Some(Arc::clone(c));
                    }
                }
                _ => {
                    free.get_or_insert(i);
                }
            }
        }
        match (free, best) {
            (Some(i), best) => self.fill_or(i, best),
            (None, Some(c)) => Ok(c),
            // Every slot was being filled by other threads: wait for one of them.
            (None, None) => self.fill(start, true),
        }
    }

    /// [`Pool::fill`]s slot `i`, or gives `fallback` if that fails. With a live connection
    /// to fall back on, a busy server is not waited for.
    fn fill_or(
        &self,
        i: usize,
        fallback: Option<Arc<Connection>>,
    ) -> Result<Arc<Connection>, RemoteError> {
        match self.fill(i, fallback.is_none()) {
            Ok(c) => Ok(c),
            Err(e) => fallback.ok_or(e),
        }
    }

    /// Returns the live connection in slot `i`, opening one if needed; `patient`: wait out
    /// a busy server (module docs, point 5).
    fn fill(&self, i: usize, patient: bool) -> Result<Arc<Connection>, RemoteError> {
        let mut slot = self.slots[i].lock();
        if let Some(c) = &*slot {
            if c.is_alive() {
                return Ok(Arc::clone(c));
            }
        }
        if let Some((until, kind, text)) = &*self.holdoff.lock() {
            if Instant::now() < *until {
                return Err(RemoteError::Unreachable {
                    addr: self.addr.clone(),
                    cause: std::io::Error::new(*kind, text.clone()),
                });
            }
        }
        if !patient {
            if let Some(until) = *self.busy_until.lock() {
                if Instant::now() < until {
                    return Err(RemoteError::Busy(format!("{} is busy", self.addr)));
                }
            }
        }
        let replacing = slot.take().is_some();
        let made = if patient {
            // Another thread may meanwhile have connected (or this one was sent here only
            // because every slot was locked for a moment): then there is no need to wait.
            let made = self
                .patience
                .connect(&self.connector, &|| self.live_elsewhere(i).is_some());
            if let (Err(RemoteError::Busy(_)), Some(c)) = (&made, self.live_elsewhere(i)) {
                return Ok(c);
            }
            made
        } else {
            (self.connector)()
        };
        match made {
            Ok(c) => {
                *self.limits.lock() = c.limits();
                self.features.store(c.features(), Ordering::Relaxed);
                *self.holdoff.lock() = None;
                *self.busy_until.lock() = None;
                if replacing {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(slot = i, replacing, "connected to {}", self.addr);
                let c = Arc::new(c);
                *slot = Some(Arc::clone(&c));
                if i == 0 {
                    self.pinned_epoch.fetch_add(1, Ordering::SeqCst);
                }
                Ok(c)
            }
            Err(e) => {
                if let RemoteError::Busy(_) = &e {
                    *self.busy_until.lock() = Some(Instant::now() + BUSY_HOLDOFF);
                }
                if let RemoteError::Unreachable { cause, .. } = &e {
                    if cause.kind() == std::io::ErrorKind::TimedOut {
                        *self.holdoff.lock() = Some((
                            Instant::now() + self.connect_timeout,
                            cause.kind(),
                            super::io_text(cause),
                        ));
                    }
                }
                tracing::debug!("connecting to {} failed: {e}", self.addr);
                Err(e)
            }
        }
    }

    /// The pinned connection (point 6), opened if needed, and its epoch.
    fn pinned(&self) -> Result<(Arc<Connection>, u64), RemoteError> {
        loop {
            let c = self.fill(0, true)?;
            // The epoch of exactly this connection: both are read under the slot's lock,
            // under which `fill` sets them.
            let slot = self.slots[0].lock();
            if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &c)) {
                return Ok((c, self.pinned_epoch.load(Ordering::SeqCst)));
            }
            // Replaced meanwhile: take the new one.
        }
    }

    fn count(&self, req: &Request) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if matches!(req, Request::Watch { .. } | Request::Changes { .. }) {
            self.push_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A live connection in a slot other than `i`, if one can be had without waiting.
    fn live_elsewhere(&self, i: usize) -> Option<Arc<Connection>> {
        self.slots
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != i)
            .find_map(|(_, slot)| {
                slot.try_lock()?
                    .as_ref()
                    .filter(|c| c.is_alive())
                    .map(Arc::clone)
            })
    }

    /// Sends `req` on some connection, trying another while it certainly never left.
    fn start_ref(&self, req: &Request) -> Result<Pending, RemoteError> {
        self.count(req);
        self.start_on(self.pick()?, req)
    }

    fn start_on(&self, mut conn: Arc<Connection>, req: &Request) -> Result<Pending, RemoteError> {
        // When the server's processes were killed, every idle connection is dead without
        // knowing it yet. Each try takes in the end of stream of its connection (marking it
        // dead, so the next pick passes it by), and once every slot's has been seen a pick
        // opens a new connection: one try per slot and one more always suffice.
        for _ in 0..self.slots.len() {
            match conn.try_start(req) {
                Ok(p) => return Ok(p),
                // Not sent because the connection had just died: any request may go again.
                Err((_, false)) if !conn.is_alive() => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    conn = self.pick()?;
                }
                Err((e, _)) => return Err(e),
            }
        }
        conn.start_ref(req)
    }

    /// A connection made after `lost_at` (module docs, point 4): a live one made since,
    /// else one opened now in a dead or empty slot. Every slot that a loss before `lost_at`
    /// emptied is dead or refilled since, so the last choice (the newest live connection)
    /// is only ever taken when a new one cannot be had (the server busy or away).
    fn fresh(&self, lost_at: Instant) -> Result<Arc<Connection>, RemoteError> {
        let mut newest: Option<Arc<Connection>> = None;
        let mut free = None;
        for (i, slot) in self.slots.iter().enumerate() {
            // Waits for a slot being filled: what it is filled with is fresh.
            let slot = slot.lock();
            match &*slot {
                Some(c) if c.is_alive() => {
                    if c.made_at() > lost_at {
                        return Ok(Arc::clone(c));
                    }
                    if newest.as_ref().is_none_or(|n| c.made_at() > n.made_at()) {
                        newest = Some(Arc::clone(c));
                    }
                }
                _ => {
                    free.get_or_insert(i);
                }
            }
        }
        match (free, newest) {
            (Some(i), newest) => self.fill_or(i, newest),
            (None, Some(c)) => Ok(c),
            (None, None) => unreachable!("a pool has at least one slot"),
        }
    }
}

/// How a pool with no connection waits out a busy server (module docs, point 5).
#[derive(Debug, Clone, Copy)]
struct Patience {
    wait: Duration,
    on_busy: Option<fn(&str)>,
}

impl Patience {
    /// Connects, trying again while the server answers busy, until `wait` has passed or
    /// `needless()` says another connection has come up.
    fn connect(
        &self,
        connector: &Connector,
        needless: &dyn Fn() -> bool,
    ) -> Result<Connection, RemoteError> {
        let start = Instant::now();
        let mut pause = FIRST_BUSY_PAUSE;
        let mut told = false;
        loop {
            let message = match connector() {
                Err(RemoteError::Busy(m)) => m,
                other => return other,
            };
            let waited = start.elapsed();
            if waited >= self.wait || needless() {
                // Said whenever the client was willing to wait: a server that queues
                // connections may have used the whole wait on the first try.
                return Err(RemoteError::Busy(if self.wait.is_zero() {
                    message
                } else {
                    format!("{message} (still busy after {:.1} s)", waited.as_secs_f64())
                }));
            }
            if !told {
                told = true;
                tracing::info!("{message}; trying again for up to {:?}", self.wait);
                if let Some(tell) = self.on_busy {
                    tell(&message);
                }
            }
            std::thread::sleep(jittered(pause).min(self.wait - waited));
            pause = (pause * 2).min(MAX_BUSY_PAUSE);
        }
    }
}

/// A pause between half and all of `pause`, at random: clients refused together must not
/// come back together.
fn jittered(pause: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    // Without randomness the pause is simply the longest; still bounded, still correct.
    let r = match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(4) => u32::from_ne_bytes(bytes),
        _ => u32::MAX,
    };
    let half = pause / 2;
    half + half.mul_f64(f64::from(r) / f64::from(u32::MAX))
}

impl Transport for Pool {
    type Pending = Pending;
    fn start(&self, req: &Request) -> Result<Pending, RemoteError> {
        self.start_ref(req)
    }

    fn call(&self, req: Request) -> Result<Reply, RemoteError> {
        match self.start_ref(&req).and_then(Pending::wait) {
            Err(e) if e.is_connection_lost() && req.is_idempotent() => {
                tracing::debug!("resending {} after: {e}", req.name());
                self.resend(&req, Instant::now())?.wait()
            }
            other => other,
        }
    }

    fn resend(&self, req: &Request, lost_at: Instant) -> Result<Pending, RemoteError> {
        self.count(req);
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.start_on(self.fresh(lost_at)?, req)
    }

    fn limits(&self) -> Limits {
        *self.limits.lock()
    }

    fn features(&self) -> u64 {
        self.features.load(Ordering::Relaxed)
    }

    fn call_pinned(&self, req: Request) -> Result<(Reply, u64), RemoteError> {
        self.count(&req);
        let (conn, epoch) = self.pinned()?;
        let pending = match conn.try_start(&req) {
            Ok(p) => (p, epoch),
            // The pinned connection had died (the server hung up, restarted): nothing was
            // sent, so the request goes on its successor, whose new epoch says the loss.
            Err((_, false)) if !conn.is_alive() => {
                self.retries.fetch_add(1, Ordering::Relaxed);
                let (conn, epoch) = self.pinned()?;
                (conn.start_ref(&req)?, epoch)
            }
            Err((e, _)) => return Err(e),
        };
        Ok((pending.0.wait()?, pending.1))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::mpsc;

    use super::*;
    use crate::testserver::{fake, quick_opts, Peer};

    type Script = Box<dyn FnOnce(Peer) + Send>;

    /// A pool whose connections are the fake servers `scripts`, in order.
    fn scripted(scripts: Vec<Script>, slots: usize) -> Pool {
        let scripts = Mutex::new(VecDeque::from(scripts));
        let connector: Connector = Arc::new(move || {
            let script = scripts
                .lock()
                .pop_front()
                .expect("no more connections scripted");
            let (stream, _server) = fake(script);
            Connection::handshake_over(stream, &quick_opts())
        });
        Pool::with_connector(connector, slots, &quick_opts()).expect("pool")
    }

    #[test]
    fn a_lost_request_is_resent_on_a_connection_made_after_the_loss() {
        let (hang_up, hang_up_rx) = mpsc::channel::<()>();
        let pool = scripted(
            vec![
                // A: takes a request, then hangs up without answering it.
                Box::new(move |mut peer| {
                    peer.accept_hello();
                    let _ = peer.recv();
                    let _ = hang_up_rx.recv();
                }),
                // B: answers one request and dies with the next, unanswered: alive to look
                // at when the loss on A is seen, dead to anything sent to it.
                Box::new(|mut peer| {
                    peer.accept_hello();
                    let first = peer.recv().expect("a request");
                    peer.send(first.id, Reply::Pong);
                    let _ = peer.recv();
                }),
                // C: the connection made for the resend answers.
                Box::new(|mut peer| {
                    peer.accept_hello();
                    while let Some(frame) = peer.recv() {
                        peer.send(frame.id, Reply::Pong);
                    }
                }),
            ],
            3,
        );
        let on_a = pool.start(&Request::Ping).expect("sent on A");
        // A is busy, so this opens B.
        let on_b = pool.start(&Request::Ping).expect("sent on B");
        assert!(matches!(on_b.wait(), Ok(Reply::Pong)));
        hang_up.send(()).expect("A's script");
        let lost = on_a.wait().expect_err("A hung up");
        assert!(lost.is_connection_lost(), "{lost}");
        let lost_at = Instant::now();
        let reply = pool.resend(&Request::Ping, lost_at).and_then(Pending::wait);
        assert!(matches!(reply, Ok(Reply::Pong)), "{reply:?}");
        assert_eq!(pool.state().retries, 1);
    }

    #[test]
    fn a_request_finding_every_idle_connection_hung_up_goes_on_a_new_one() {
        let (gone, gone_rx) = mpsc::channel::<()>();
        let hang_up = |gone: mpsc::Sender<()>| -> Script {
            Box::new(move |mut peer| {
                peer.accept_hello();
                drop(peer);
                gone.send(()).expect("test");
            })
        };
        let pool = scripted(
            vec![
                hang_up(gone.clone()),
                hang_up(gone.clone()),
                hang_up(gone),
                Box::new(|mut peer| {
                    peer.accept_hello();
                    while let Some(frame) = peer.recv() {
                        peer.send(frame.id, Reply::Pong);
                    }
                }),
            ],
            3,
        );
        pool.open_free_slots();
        for _ in 0..3 {
            gone_rx.recv().expect("a server hung up");
        }
        // Not idempotent: only a send that certainly never left may be tried again.
        let req = Request::Mkdir {
            path: b"d".as_slice().into(),
            perm: 0o755,
        };
        assert!(!req.is_idempotent());
        let reply = pool.start(&req).and_then(Pending::wait);
        assert!(matches!(reply, Ok(Reply::Pong)), "{reply:?}");
        assert_eq!(pool.state().retries, 3);
    }

    #[test]
    fn status_does_not_wait_behind_a_connection_being_opened() {
        let (entered, entered_rx) = mpsc::channel::<()>();
        let (release, release_rx) = mpsc::channel::<()>();
        let pool = Arc::new(scripted(
            vec![
                // The first connection (opened with the pool) keeps one request unanswered,
                // so the next request opens the second slot.
                Box::new(|mut peer| {
                    peer.accept_hello();
                    while peer.recv().is_some() {}
                }),
                // The second: its hello has arrived, so the pool's filler is inside its
                // connect, holding the slot, until this script answers.
                Box::new(move |mut peer| {
                    let hello = peer.recv().expect("hello");
                    entered.send(()).expect("test");
                    let _ = release_rx.recv_timeout(Duration::from_secs(10));
                    peer.send(hello.id, Reply::Hello(crate::testserver::hello_reply()));
                    while let Some(frame) = peer.recv() {
                        peer.send(frame.id, Reply::Pong);
                    }
                }),
            ],
            2,
        ));
        let _busy = pool.start(&Request::Ping).expect("sent on the first");
        let filler = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || pool.start(&Request::Ping).map(|_| ()))
        };
        entered_rx.recv().expect("the connect began");
        let state = pool.state();
        let _ = (pool.tls_info(), pool.admitted());
        // Waiting for the slot would have returned only once the connect ended (answered or
        // timed out), with the slot free again.
        assert!(
            pool.slots[1].try_lock().is_none(),
            "status waited for the connect to end"
        );
        assert_eq!(
            state.connected, 1,
            "a slot being filled is not connected yet"
        );
        release.send(()).expect("script");
        filler.join().expect("filler").ok();
    }
}
