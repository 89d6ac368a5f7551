//! The shelfd parent: bind, accept, fork one child per connection, reap, shut down cleanly.
//!
//! What is hard, and how the code is arranged for it:
//!
//! 1. **Forking safely.** Only a single-threaded process may fork and then run arbitrary code
//!    in the child, so the parent never starts a thread; [`run`] checks `/proc/self/task`
//!    before it begins. Children are free to start threads (`serve` does).
//! 2. **Signals without races.** SIGTERM, SIGINT and SIGCHLD stay blocked in the parent except
//!    inside `ppoll`, which unblocks them atomically while it waits; their handlers only bump
//!    counters. So a signal can never slip in between checking a flag and going to sleep, and
//!    no other system call of the parent is ever interrupted.
//! 3. **No zombies.** Every wake-up reaps with `waitpid(-1, WNOHANG)` until none is left.
//! 4. **Surviving overload.** Accept errors such as EMFILE back off (10 ms doubling to 1 s,
//!    waiting in `ppoll` so signals and reaping go on) and retry rather than end the server.
//!    Past `max_clients` live children a new connection waits, accepted but unserved, in a
//!    first-in first-out queue for up to `queue_wait` (default 1 s, well inside a client's
//!    3 s connect timeout); the first child to exit makes room for the oldest one. One still
//!    waiting at its deadline, or one that finds the queue full (`QUEUE_MAX`), gets one `Busy`
//!    error frame with request id 0 (written non-blocking) and is closed; clients retry with
//!    backoff. The parent never blocks on a client: a flood only lengthens the queue, which
//!    is bounded, and never slows the children serving the connections already admitted.
//! 5. **Stopping.** On the first SIGTERM or SIGINT the parent closes the listener and waits up
//!    to `shutdown_grace` (default 10 s) for its children; a second signal cuts the wait
//!    short. Children still running then get SIGTERM, which in a child shuts the reading half
//!    of its socket: in-flight requests finish, put temporaries are removed, the child exits.
//!    Any child still alive 5 s later is killed. The parent then exits 0.
//! 6. **The child never returns into the accept loop.** It runs `serve` inside
//!    `catch_unwind` and always ends with `_exit`, skipping the parent's atexit handlers and
//!    buffers it inherited.
//! 7. **What stays `unsafe`.** Reaping and killing children go through `rustix`. `fork`,
//!    `sigaction`, `sigprocmask` and its sets, `ppoll` with a signal mask, `_exit`, and the
//!    `shutdown` inside a signal handler have no safe wrapper there (`rustix` offers the first
//!    ones only as unsafe `runtime` calls, and `poll` without a mask), so they are `libc`
//!    calls, each with the reason it is sound beside it.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};
use shelf_proto::frame::MAGIC;
use shelf_proto::{Code, Frame, Reply, DEFAULT_MAX_PAYLOAD};
use shelf_secure::stream::HandshakeError;
use shelf_secure::TlsStream;

use crate::conn::{serve, ServeConfig, ServeError};
use crate::library::Library;
use crate::watch::watcher::Watcher;

/// `--max-clients`' default, from what a child costs (README, "The server": about 1.6 MB
/// and 5 threads idle, at most 10 MB streaming) against small machines' limits.
pub const DEFAULT_MAX_CLIENTS: u32 = 256;

/// Most connections waiting for room at once: each holds one descriptor of the parent's.
pub const QUEUE_MAX: usize = 256;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory to serve.
    pub root: PathBuf,
    /// `HOST:PORT` to listen on; port 0 picks a free port.
    pub listen: String,
    pub serve: ServeConfig,
    /// Live connections allowed; more wait in the queue, then get a `Busy` reply.
    pub max_clients: usize,
    /// How long a connection past `max_clients` may wait for room before it is refused
    /// (zero: refused at once).
    pub queue_wait: Duration,
    /// How long a stopping server waits for its connections to end by themselves.
    pub shutdown_grace: Duration,
    /// TLS for every connection (`None`: plaintext, `--insecure-plaintext`). Only the forked
    /// child ever runs a TLS connection; the parent holds this configuration and nothing else.
    pub tls: Option<Tls>,
}

/// The server's TLS identity.
#[derive(Debug, Clone)]
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// Its key's fingerprint, printed on the second line of stdout.
    pub fingerprint: String,
}

impl Config {
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            listen: "127.0.0.1:7878".to_owned(),
            serve: ServeConfig::default(),
            max_clients: DEFAULT_MAX_CLIENTS as usize,
            queue_wait: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Why the server could not start or keep serving. Each message says its cause itself, so the
/// cause is a plain field (`cause`, not thiserror's `source`): exposed as `source()` too, it
/// would be printed twice by `{:#}` ("No such file or directory (os error 2): No such file or
/// directory (os error 2)").
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot serve {}: {cause}", path.display())]
    Root { path: PathBuf, cause: io::Error },
    #[error(
        "cannot listen on {addr}: {cause} (is another server using it? pick one with --listen)"
    )]
    Bind { addr: String, cause: io::Error },
    #[error("shelfd forks per connection and must run single-threaded, but this process has {0} threads")]
    Threaded(usize),
    #[error("{what}: {cause}")]
    Sys {
        what: &'static str,
        cause: io::Error,
    },
}

fn sys(what: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |cause| RunError::Sys { what, cause }
}

/// Reads a token file by the one rule both sides use ([`shelf_proto::token::parse`]): its
/// content less trailing line endings. An empty token is refused.
pub fn read_token_file(path: &Path) -> io::Result<Vec<u8>> {
    shelf_proto::token::parse(std::fs::read(path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Opens the library, binds, prints `listening on ADDR` as the first line on stdout (and
/// `fingerprint SHA256:...` as the second, with TLS), and serves until SIGTERM or SIGINT.
/// Must be called from a single-threaded process.
pub fn run(cfg: &Config) -> Result<(), RunError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(RunError::Threaded(threads));
    }
    let lib = Library::open(&cfg.root).map_err(|cause| RunError::Root {
        path: cfg.root.clone(),
        cause,
    })?;
    let listener = TcpListener::bind(&cfg.listen).map_err(|cause| RunError::Bind {
        addr: cfg.listen.clone(),
        cause,
    })?;
    let addr = listener.local_addr().map_err(sys("local address"))?;
    // Before the address line: whoever reads it may signal us at once.
    parent_signals().map_err(sys("signal handlers"))?;
    {
        // Both lines in one write: a reader that takes the first line and closes the pipe
        // must not make the second one fail (stdout is line-buffered).
        let second = match &cfg.tls {
            Some(tls) => format!("fingerprint {}", tls.fingerprint),
            None => "plaintext (--insecure-plaintext): not encrypted".to_owned(),
        };
        let mut out = io::stdout().lock();
        out.write_all(format!("listening on {addr}\n{second}\n").as_bytes())
            .and_then(|()| out.flush())
            .map_err(sys("write to stdout"))?;
    }
    tracing::info!(
        %addr,
        root = %lib.root_path().display(),
        read_only = cfg.serve.read_only,
        token = cfg.serve.token.is_some(),
        tls = cfg.tls.is_some(),
        "serving"
    );
    serve_forever(listener, &lib, cfg)
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// How long one reply may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// SIGTERM and SIGINT seen by the parent.
static STOP_SIGNALS: AtomicUsize = AtomicUsize::new(0);
/// In a child: the connection's fd, whose reading half SIGTERM shuts.
static CHILD_CONN_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop(_: libc::c_int) {
    STOP_SIGNALS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_child(_: libc::c_int) {}

extern "C" fn on_child_stop(_: libc::c_int) {
    let fd = CHILD_CONN_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: shutdown(2) is async-signal-safe; a stale fd at worst gets EBADF.
        unsafe { libc::shutdown(fd, libc::SHUT_RD) };
    }
}

/// Installs `handler` for `sig`; `None` restores the default action.
fn set_handler(sig: libc::c_int, handler: Option<extern "C" fn(libc::c_int)>) -> io::Result<()> {
    let action = match handler {
        Some(f) => f as *const () as libc::sighandler_t,
        None => libc::SIG_DFL,
    };
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handlers we install
    // only touch atomics or call async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = action;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn signal_set(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn set_mask(how: libc::c_int, set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `set` is an initialised sigset; the old mask is not wanted.
    let ret = unsafe { libc::sigprocmask(how, set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const PARENT_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD];

/// Blocks the parent's signals (ppoll unblocks them) and installs their handlers.
fn parent_signals() -> io::Result<()> {
    set_mask(libc::SIG_BLOCK, &signal_set(&PARENT_SIGNALS))?;
    set_handler(libc::SIGTERM, Some(on_stop))?;
    set_handler(libc::SIGINT, Some(on_stop))?;
    set_handler(libc::SIGCHLD, Some(on_child))
}

/// Waits for the listener to be readable or a signal, at most `timeout`. True if readable.
fn wait(listener: Option<&TcpListener>, timeout: Duration) -> bool {
    let mut fds = [libc::pollfd {
        fd: listener.map_or(-1, |l| l.as_raw_fd()),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    let unblocked = signal_set(&[]);
    // SAFETY: `fds` and `ts` outlive the call; `unblocked` is an initialised empty set, which
    // ppoll installs only while it waits.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 1, &ts, &unblocked) };
    n > 0 && fds[0].revents & libc::POLLIN != 0
}

/// Accepts and forks until a stop signal, then stops as the module docs describe.
pub fn serve_forever(listener: TcpListener, lib: &Library, cfg: &Config) -> Result<(), RunError> {
    parent_signals().map_err(sys("signal handlers"))?;
    listener
        .set_nonblocking(true)
        .map_err(sys("non-blocking listener"))?;

    // The one watcher for change push (`watch.rs`), forked while we are single-threaded.
    let start_watcher = || {
        if cfg.serve.max_watches == 0 {
            return None;
        }
        match Watcher::spawn(lib, &[listener.as_raw_fd()], watcher_signals) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot start the change watcher: {e}; clients keep their TTL");
                None
            }
        }
    };
    let mut watcher = start_watcher();
    let mut watcher_started = Instant::now();
    let mut children = HashSet::new();
    let mut queue = VecDeque::new();
    let mut backoff = Duration::ZERO;
    while STOP_SIGNALS.load(Ordering::SeqCst) == 0 {
        reap(&mut children);
        let gone = REAPED_OTHER.swap(0, Ordering::SeqCst);
        if watcher.as_ref().is_some_and(|w| w.pid() == gone) {
            // Its connections were told they lost changes and keep their TTL; new ones get
            // the new watcher. At most one start a second, should it keep dying.
            tracing::warn!(pid = gone, "the change watcher exited; starting another");
            wait(
                None,
                Duration::from_secs(1).saturating_sub(watcher_started.elapsed()),
            );
            watcher = start_watcher();
            watcher_started = Instant::now();
        }
        let watcher = watcher.as_ref();
        admit(&mut queue, &mut children, &listener, watcher, lib, cfg);
        // Wake for the oldest waiting connection's deadline too.
        let timeout = queue.front().map_or(Duration::from_secs(1), |w: &Waiting| {
            (w.since + cfg.queue_wait)
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1))
        });
        if !wait(Some(&listener), timeout) {
            continue;
        }
        // Drain the accept queue, but go back to reaping and signals now and then.
        for _ in 0..64 {
            let (stream, peer) = match listener.accept() {
                Ok(conn) => conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if transient_accept_error(&e) => continue,
                Err(e) => {
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tracing::warn!("accept failed, retrying in {backoff:?}: {e}");
                    wait(None, backoff);
                    break;
                }
            };
            backoff = Duration::ZERO;
            reap(&mut children);
            if children.len() >= cfg.max_clients && queue.len() >= QUEUE_MAX {
                tracing::warn!(%peer, clients = children.len(), "busy, queue full: refusing connection");
                refuse_busy(stream, children.len());
                continue;
            }
            queue.push_back(Waiting {
                stream,
                peer,
                since: Instant::now(),
            });
            admit(&mut queue, &mut children, &listener, watcher, lib, cfg);
        }
    }
    drop(listener);
    // Connections still waiting are closed unserved; their clients retry elsewhere or later.
    drop(queue);
    stop_children(&mut children, cfg.shutdown_grace);
    if let Some(w) = &watcher {
        stop_watcher(w);
    }
    tracing::info!("stopped");
    Ok(())
}

/// A connection accepted while the server was at its cap, waiting for room.
struct Waiting {
    stream: TcpStream,
    peer: SocketAddr,
    since: Instant,
}

/// Serves waiting connections, oldest first, while there is room; refuses those past their
/// deadline (module docs, point 4).
fn admit(
    queue: &mut VecDeque<Waiting>,
    children: &mut HashSet<libc::pid_t>,
    listener: &TcpListener,
    watcher: Option<&Watcher>,
    lib: &Library,
    cfg: &Config,
) {
    while children.len() < cfg.max_clients {
        let Some(w) = queue.pop_front() else {
            return;
        };
        // The connection's socket to the watcher; the parent's copy closes below.
        let link = watcher.and_then(Watcher::connect);
        // SAFETY: the parent is single-threaded (checked in `run`), so the child is a
        // complete copy and may run any code; it never returns (`child` ends in _exit).
        match unsafe { libc::fork() } {
            -1 => {
                let e = io::Error::last_os_error();
                tracing::error!(peer = %w.peer, "fork failed: {e}");
                refuse_busy(w.stream, children.len());
                // Give exiting children a moment (their SIGCHLD ends the wait early).
                wait(None, Duration::from_millis(100));
                return;
            }
            0 => {
                let inherited = [listener.as_raw_fd()]
                    .into_iter()
                    .chain(watcher.map(Watcher::channel_fd));
                child(inherited, queue, w.stream, w.peer, link, lib, cfg)
            }
            pid => {
                tracing::info!(peer = %w.peer, pid, "connect");
                children.insert(pid);
            }
        }
    }
    let now = Instant::now();
    while let Some(w) = queue.front() {
        if now.saturating_duration_since(w.since) < cfg.queue_wait {
            break;
        }
        let w = queue.pop_front().expect("front exists");
        tracing::warn!(peer = %w.peer, clients = children.len(), "busy: refusing connection");
        refuse_busy(w.stream, children.len());
    }
}

/// Errors that concern one connection that never properly arrived.
fn transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    )
}

/// The last child reaped that was not a connection's (the change watcher), for the loop to
/// start a new one. The parent is single-threaded: an atomic only for `static`'s sake.
static REAPED_OTHER: AtomicI32 = AtomicI32::new(0);

fn reap(children: &mut HashSet<libc::pid_t>) {
    loop {
        match waitpid(None, WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                let pid = pid.as_raw_pid();
                if !children.remove(&pid) {
                    REAPED_OTHER.store(pid, Ordering::SeqCst);
                }
                if let Some(signal) = status.terminating_signal() {
                    tracing::warn!(pid, signal, "child killed by signal");
                }
            }
            // Children remain but none has exited.
            Ok(None) => return,
            Err(Errno::INTR) => {}
            // ECHILD: no children at all.
            Err(_) => {
                children.clear();
                return;
            }
        }
    }
}

fn stop_children(children: &mut HashSet<libc::pid_t>, grace: Duration) {
    reap(children);
    if children.is_empty() {
        return;
    }
    tracing::info!(
        clients = children.len(),
        "stopping: waiting up to {grace:?} for connections to end"
    );
    let signals = STOP_SIGNALS.load(Ordering::SeqCst);
    let deadline = Instant::now() + grace;
    while !children.is_empty() && STOP_SIGNALS.load(Ordering::SeqCst) == signals {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        wait(None, left.min(Duration::from_secs(1)));
        reap(children);
    }
    for sig in [Signal::TERM, Signal::KILL] {
        if children.is_empty() {
            return;
        }
        tracing::info!(
            clients = children.len(),
            signal = sig.as_raw(),
            "ending connections"
        );
        // Each `pid` is our unreaped child, so the number cannot have been reused.
        for pid in children.iter().copied().filter_map(Pid::from_raw) {
            let _ = kill_process(pid, sig);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !children.is_empty() && Instant::now() < deadline {
            wait(None, Duration::from_millis(100));
            reap(children);
        }
    }
}

/// Ends the watcher: its channel closes with the parent, but a stopping parent waits for it.
fn stop_watcher(w: &Watcher) {
    let Some(pid) = Pid::from_raw(w.pid()) else {
        return;
    };
    let _ = kill_process(pid, Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => wait(None, Duration::from_millis(50)),
        };
    }
    let _ = kill_process(pid, Signal::KILL);
}

/// Tells a client over the limit that the server is busy, without ever blocking the parent.
fn refuse_busy(stream: TcpStream, clients: usize) {
    let reply = Reply::error(
        Code::Busy,
        format!("server busy: {clients} clients connected, try again later"),
    );
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    if let Ok(bytes) = Frame::new(0, reply).to_bytes(DEFAULT_MAX_PAYLOAD) {
        let _ = (&stream).write(&bytes);
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Read what already arrived (likely a Hello), so closing does not reset the connection
    // and destroy the reply before the client reads it.
    let mut buf = [0u8; 4096];
    let _ = (&stream).read(&mut buf);
}

/// The forked child: serves its one connection and exits. Never returns.
fn child(
    inherited: impl Iterator<Item = RawFd>,
    queue: &mut VecDeque<Waiting>,
    stream: TcpStream,
    peer: SocketAddr,
    link: Option<OwnedFd>,
    lib: &Library,
    cfg: &Config,
) -> ! {
    // This process's copies of the listener, the watcher's channel and the other waiting
    // connections must go: a refused client would otherwise wait for this child to close its
    // copy too, and the watcher would outlive a parent that died.
    for fd in inherited {
        // SAFETY: the forked process's own copies of the parent's listener and channel,
        // closed once here and never used again (the child never returns into the loop).
        unsafe { libc::close(fd) };
    }
    queue.clear();
    let mut cfg = cfg.clone();
    cfg.serve.watcher = link.map(Arc::new);
    let cfg = &cfg;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        child_setup(&stream)?;
        let keep = stream.try_clone()?;
        let result = serve_child(stream, lib, cfg);
        match &result {
            Ok(()) => tracing::info!(%peer, "disconnect"),
            Err(e @ (ServeError::IdleTimeout(_) | ServeError::HandshakeTimeout(_))) => {
                tracing::info!(%peer, "disconnect: {e}")
            }
            Err(e) => tracing::warn!(%peer, "disconnect: {e}"),
        }
        linger(&keep);
        io::Result::Ok(result.is_ok())
    }));
    let code = match outcome {
        Ok(Ok(true)) => 0,
        Ok(Ok(false)) => 1,
        Ok(Err(e)) => {
            tracing::error!(%peer, "cannot serve connection: {e}");
            1
        }
        Err(_) => 101,
    };
    let _ = io::stderr().flush();
    let _ = io::stdout().flush();
    // SAFETY: ends this process without running the parent's atexit handlers or flushing
    // buffers inherited from it; everything of ours is flushed above.
    unsafe { libc::_exit(code) }
}

/// What a client's first byte says it speaks; `None`: it hung up without a word.
fn first_byte(stream: &TcpStream, timeout: Duration) -> Result<Option<u8>, ServeError> {
    stream.set_read_timeout(Some(timeout).filter(|d| !d.is_zero()))?;
    let mut b = [0u8; 1];
    let n = loop {
        match stream.peek(&mut b) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if shelf_proto::is_timeout(&e) => {
                return Err(ServeError::HandshakeTimeout(timeout))
            }
            Err(e) => return Err(e.into()),
        }
    };
    stream.set_read_timeout(None)?;
    Ok((n == 1).then_some(b[0]))
}

/// A TLS record of type handshake begins with this byte; a shelf frame with `MAGIC`.
const TLS_HANDSHAKE: u8 = 0x16;

/// Tells a client that speaks the other protocol what to change, as one shelf error frame
/// (which a TLS client recognises as not TLS and reads), then closes.
fn refuse_mismatch(stream: &TcpStream, message: &str) -> ServeError {
    let reply = Reply::error(Code::Protocol, message.to_owned());
    if let Ok(bytes) = Frame::new(0, reply).to_bytes(DEFAULT_MAX_PAYLOAD) {
        let _ = (&*stream).write_all(&bytes);
    }
    ServeError::Refused(message.to_owned())
}

/// Runs the TLS handshake (with TLS) and serves. The handshake and the hello share the one
/// handshake timeout.
fn serve_child(stream: TcpStream, lib: &Library, cfg: &Config) -> Result<(), ServeError> {
    let timeout = cfg.serve.handshake_timeout;
    let start = Instant::now();
    let first = first_byte(&stream, timeout)?;
    let Some(tls) = &cfg.tls else {
        if first == Some(TLS_HANDSHAKE) {
            return Err(refuse_mismatch(
                &stream,
                "the server speaks plaintext (shelfd --insecure-plaintext), and this client \
                 asked for TLS: connect with --insecure-plaintext (-o insecure_plaintext)",
            ));
        }
        return serve(stream, lib, &cfg.serve);
    };
    match first {
        None => return Ok(()),
        Some(TLS_HANDSHAKE) => {}
        Some(b) if b == MAGIC[0] => {
            return Err(refuse_mismatch(
                &stream,
                "this server requires TLS, and this client connected in plaintext: drop \
                 --insecure-plaintext (-o insecure_plaintext), or start shelfd with \
                 --insecure-plaintext too",
            ))
        }
        Some(_) => {}
    }
    let conn = rustls::ServerConnection::new(Arc::clone(&tls.config))
        .map_err(|e| ServeError::Io(io::Error::other(e)))?;
    let left = if timeout.is_zero() {
        Duration::from_secs(u64::from(u32::MAX))
    } else {
        timeout.saturating_sub(start.elapsed())
    };
    let tls_stream = match TlsStream::handshake(stream, conn, left) {
        Ok(s) => s,
        Err(HandshakeError::TimedOut(_)) => return Err(ServeError::HandshakeTimeout(timeout)),
        Err(e) => return Err(ServeError::Refused(format!("TLS: {e}"))),
    };
    let mut serve_cfg = cfg.serve.clone();
    serve_cfg.peer_key = tls_stream.peer_key().map(<[u8]>::to_vec);
    if !timeout.is_zero() {
        serve_cfg.handshake_timeout = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
    }
    tracing::debug!(
        suite = tls_stream.cipher_suite(),
        client_key = ?serve_cfg.peer_key.as_deref().map(shelf_secure::fingerprint),
        "TLS handshake done"
    );
    serve(tls_stream, lib, &serve_cfg)
}

/// The watcher ends at the first stop signal, as any plain process (it holds nothing to save).
fn watcher_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
        let _ = set_handler(sig, None);
    }
    let _ = set_mask(libc::SIG_UNBLOCK, &signal_set(&PARENT_SIGNALS));
}

fn child_setup(stream: &TcpStream) -> io::Result<()> {
    // A put's writes and a get's reads each carry a buffer of up to max_io: a quarter of a
    // put's server time went to faulting fresh ones in.
    crate::sys::keep_large_buffers_in_heap();
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    // A client that stops reading its replies must not pin this child forever: a reply that
    // cannot be written for this long ends the connection.
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    CHILD_CONN_FD.store(stream.as_raw_fd(), Ordering::SeqCst);
    set_handler(libc::SIGTERM, Some(on_child_stop))?;
    set_handler(libc::SIGINT, Some(on_child_stop))?;
    set_handler(libc::SIGCHLD, None)?;
    set_mask(libc::SIG_UNBLOCK, &signal_set(&PARENT_SIGNALS))
}

/// After our last reply: wait briefly for the client to close, so that closing with its
/// unread bytes still queued does not reset the connection and lose that reply.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    if stream
        .set_read_timeout(Some(Duration::from_millis(250)))
        .is_err()
    {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 16 << 10];
    while Instant::now() < deadline {
        match (&*stream).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::time::Duration;

    use super::*;
    use crate::conn::ServeError;

    /// Fails if a message in `err`'s chain contains the text of the error below it: printed
    /// as a chain (`{:#}`) that cause would be said twice.
    fn assert_said_once(err: &dyn Error) {
        let mut cur = err;
        while let Some(below) = cur.source() {
            let (text, cause) = (cur.to_string(), below.to_string());
            assert!(
                !text.contains(&cause),
                "{text:?} repeats its source {cause:?}"
            );
            cur = below;
        }
    }

    #[test]
    fn no_message_repeats_its_source() {
        let io = || io::Error::from_raw_os_error(libc::ENOENT);
        let run = [
            RunError::Root {
                path: "/nonexistent".into(),
                cause: io(),
            },
            RunError::Bind {
                addr: "127.0.0.1:1".into(),
                cause: io(),
            },
            RunError::Threaded(2),
            RunError::Sys {
                what: "fork",
                cause: io(),
            },
        ];
        for e in &run {
            // Exhaustive, so a new variant is added here too.
            match e {
                RunError::Root { .. }
                | RunError::Bind { .. }
                | RunError::Threaded(_)
                | RunError::Sys { .. } => assert_said_once(e),
            }
        }
        assert_eq!(
            format!(
                "{:#}",
                anyhow::Error::new(run.into_iter().next().expect("root"))
            ),
            "cannot serve /nonexistent: No such file or directory (os error 2)"
        );
        let serve = [
            ServeError::Io(io()),
            ServeError::UnexpectedEof,
            ServeError::Malformed(shelf_proto::frame::DecodeError::Truncated),
            ServeError::Refused("bad token".into()),
            ServeError::HandshakeTimeout(Duration::from_secs(1)),
            ServeError::IdleTimeout(Duration::from_secs(1)),
        ];
        for e in &serve {
            match e {
                ServeError::Io(_)
                | ServeError::UnexpectedEof
                | ServeError::Malformed(_)
                | ServeError::Refused(_)
                | ServeError::HandshakeTimeout(_)
                | ServeError::IdleTimeout(_) => assert_said_once(e),
            }
        }
    }
}
