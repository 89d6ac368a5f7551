//! `Loopback`: a real shelf server running in this process, reached over Unix socket pairs.
//!
//! Each connection the pool opens is a `UnixStream::pair()` whose far end is served by
//! `shelf_server::serve` on its own thread, against a directory given at start. Everything
//! above the stream is the production code (handshake, pipelining, pool, reconnect), so unit
//! tests of the client, the FUSE core and the CLI run against a real library without ports,
//! processes or a mount. Two controls play the faults a network would: [`Loopback::hang_up`]
//! (the server drops every connection, as a restart does) and [`Loopback::set_down`] (new
//! connections are refused, as while the server is away); [`Loopback::refuse_busy`] answers
//! the next connections "busy", as a server at `--max-clients` does.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use shelf_proto::Request;
use shelf_server::{Library, ServeConfig};

use shelf_remote::pool::{Connector, Pool};
use shelf_remote::{ConnectOptions, Connection, Limits, Pending, RemoteError, Transport};

/// The address loopback errors name.
pub const LOOPBACK_ADDR: &str = "loopback";

struct Control {
    lib: Library,
    cfg: ServeConfig,
    down: AtomicBool,
    /// How many more connections to refuse as busy.
    busy: AtomicUsize,
    /// Connections refused as busy so far.
    refused_busy: AtomicUsize,
    /// The server ends of the connections, to hang them up.
    served: Mutex<Vec<UnixStream>>,
}

/// A [`Pool`] whose connections are served in-process; see the module docs.
pub struct Loopback {
    pool: Pool,
    control: Arc<Control>,
}

impl Loopback {
    /// Serves `root` with the default configuration over one connection.
    pub fn new(root: &Path) -> Result<Loopback, RemoteError> {
        Loopback::with(
            root,
            ServeConfig::default(),
            ConnectOptions::new(LOOPBACK_ADDR),
            1,
        )
    }

    /// Serves `root` with `cfg`; the client side uses `opts` (token, timeouts) and a pool of
    /// `connections`.
    pub fn with(
        root: &Path,
        cfg: ServeConfig,
        opts: ConnectOptions,
        connections: usize,
    ) -> Result<Loopback, RemoteError> {
        let lib = Library::open(root).map_err(|cause| RemoteError::Unreachable {
            addr: root.display().to_string(),
            cause,
        })?;
        let control = Arc::new(Control {
            lib,
            cfg,
            down: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            refused_busy: AtomicUsize::new(0),
            served: Mutex::new(Vec::new()),
        });
        let for_pool = Arc::clone(&control);
        // The pool names the server "loopback" in its messages; the handshake sees `opts`.
        let for_pool_opts = ConnectOptions {
            addr: LOOPBACK_ADDR.into(),
            ..opts.clone()
        };
        let connector: Connector = Arc::new(move || open(&for_pool, &opts));
        let pool = Pool::with_connector(connector, connections, &for_pool_opts)?;
        Ok(Loopback { pool, control })
    }

    /// The server drops every open connection, as a server restart does.
    pub fn hang_up(&self) {
        for s in self.control.served.lock().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// While `down`, new connections are refused (ECONNREFUSED), as while a server is away.
    pub fn set_down(&self, down: bool) {
        self.control.down.store(down, Ordering::SeqCst);
    }

    /// The next `n` connections are refused with the server's "busy" answer.
    pub fn refuse_busy(&self, n: usize) {
        self.control.busy.store(n, Ordering::SeqCst);
    }

    /// How many connections were refused as busy so far.
    pub fn refused_busy(&self) -> usize {
        self.control.refused_busy.load(Ordering::SeqCst)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// Opens one served connection and shakes hands over it.
fn open(control: &Arc<Control>, opts: &ConnectOptions) -> Result<Connection, RemoteError> {
    let unreachable = |cause| RemoteError::Unreachable {
        addr: LOOPBACK_ADDR.into(),
        cause,
    };
    if control.down.load(Ordering::SeqCst) {
        return Err(unreachable(io::Error::from_raw_os_error(
            libc::ECONNREFUSED,
        )));
    }
    let busy = control
        .busy
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if busy.is_ok() {
        control.refused_busy.fetch_add(1, Ordering::SeqCst);
        return Err(RemoteError::Busy(
            "server busy: loopback is full, try again later".into(),
        ));
    }
    let (near, far) = UnixStream::pair().map_err(unreachable)?;
    {
        let mut served = control.served.lock();
        served.push(far.try_clone().map_err(unreachable)?);
    }
    let for_thread = Arc::clone(control);
    std::thread::Builder::new()
        .name("shelf-loopback".into())
        .spawn(move || {
            if let Err(e) = shelf_server::serve(far, &for_thread.lib, &for_thread.cfg) {
                tracing::debug!("loopback server ended: {e}");
            }
        })
        .map_err(unreachable)?;
    Connection::handshake_over(near, opts)
}

impl Transport for Loopback {
    type Pending = Pending;
    fn start(&self, req: &Request) -> Result<Pending, RemoteError> {
        self.pool.start(req)
    }
    fn call(&self, req: Request) -> Result<shelf_proto::Reply, RemoteError> {
        self.pool.call(req)
    }
    fn resend(&self, req: &Request, lost_at: std::time::Instant) -> Result<Pending, RemoteError> {
        self.pool.resend(req, lost_at)
    }
    fn limits(&self) -> Limits {
        self.pool.limits()
    }
    fn features(&self) -> u64 {
        self.pool.features()
    }
    fn call_pinned(&self, req: Request) -> Result<(shelf_proto::Reply, u64), RemoteError> {
        self.pool.call_pinned(req)
    }
}
