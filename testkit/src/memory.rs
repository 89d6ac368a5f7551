//! `Memory`: the real server's request handling called in this process, with no socket.
//!
//! Each request goes straight to [`shelf_server::Session::handle`] over a [`Library`], the code
//! a server connection runs for every request after its handshake; only the frames and the
//! stream are left out. Tests of the client, the core and the CLI get the real library's
//! answers without threads, sockets or timeouts, and the same transport wrapped in
//! `Faulty` fails on cue.
//!
//! What is hard, and how it is handled:
//! 1. *Per-connection state.* A server connection owns the put temporaries made on it and
//!    removes them when it ends. Memory plays one connection at a time; [`Memory::hang_up`]
//!    ends it as a server hang-up does (its temporaries are removed, `Session::end`) and the
//!    next request starts a new one, as the pool's reconnect does. [`Memory::connections`]
//!    counts them.
//! 2. *Replies lost with their connection.* A request is carried out when it is started; its
//!    reply is held by the pending value. A hang-up between the two loses the reply: waiting
//!    then fails with `Disconnected`, as on a real connection whose server did the work and
//!    died before answering. `call` resends an idempotent request once after that, as
//!    [`shelf_remote::Pool`] does.
//! 3. *Limits.* The limits and features are what a handshake with the default client would
//!    agree with `cfg` (the smaller of both sides, less the frame overhead for `max_io`; the
//!    features both announce).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use shelf_proto::{negotiate, Hello, HelloReply, Reply, Request, PROTOCOL_VERSION};
use shelf_server::{Library, ServeConfig, Session};

use shelf_remote::{Limits, PendingReply, RemoteError, Transport, CLIENT_FEATURES};

/// The real server's request handling as a transport; see the module docs.
pub struct Memory {
    lib: Library,
    cfg: ServeConfig,
    limits: Limits,
    /// What the same handshake would agree.
    features: u64,
    /// The connection being played, and its number (from 1).
    current: Mutex<(Arc<Session>, u64)>,
    /// The number of the connection being played, for pending replies to compare with.
    generation: Arc<AtomicU64>,
}

/// A request [`Memory`] has carried out; its reply is lost if the connection hangs up first.
pub struct MemoryPending {
    reply: Reply,
    generation: u64,
    current: Arc<AtomicU64>,
}

impl PendingReply for MemoryPending {
    fn wait(self) -> Result<Reply, RemoteError> {
        if self.current.load(Ordering::SeqCst) != self.generation {
            return Err(RemoteError::Disconnected(
                "the connection was hung up before the reply was read".into(),
            ));
        }
        Ok(self.reply)
    }
}

impl Memory {
    /// Serves `root` with the default configuration.
    pub fn new(root: &Path) -> Result<Memory, RemoteError> {
        Memory::with(root, ServeConfig::default())
    }

    /// Serves `root` with `cfg` (read-only, limits).
    pub fn with(root: &Path, cfg: ServeConfig) -> Result<Memory, RemoteError> {
        let lib = Library::open(root).map_err(|cause| RemoteError::Unreachable {
            addr: root.display().to_string(),
            cause,
        })?;
        // What a handshake between a default client and this server would agree.
        let server = HelloReply {
            version: PROTOCOL_VERSION,
            max_payload: cfg.max_payload,
            max_io: cfg.max_io,
            features: shelf_server::conn::FEATURES,
            agent: String::new(),
            admitted: None,
        };
        let hello = Hello {
            features: CLIENT_FEATURES,
            ..Hello::new("memory")
        };
        let agreed =
            negotiate(&hello, &server).map_err(|e| RemoteError::Protocol(e.to_string()))?;
        let limits = agreed.limits;
        let session = Session::new(limits).with_features(agreed.features);
        Ok(Memory {
            lib,
            cfg,
            limits,
            features: agreed.features,
            current: Mutex::new((Arc::new(session), 1)),
            generation: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Ends the connection being played, as a server hang-up does: its put temporaries are
    /// removed and replies not yet waited for are lost. The next request opens a new one.
    pub fn hang_up(&self) {
        let mut current = self.current.lock();
        current.0.end(&self.lib);
        current.0 = Arc::new(Session::new(self.limits).with_features(self.features));
        current.1 += 1;
        self.generation.store(current.1, Ordering::SeqCst);
    }

    /// Connections played so far: 1 plus the hang-ups.
    pub fn connections(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Carries `req` out on the current connection.
    fn run(&self, req: Request) -> MemoryPending {
        let (session, generation) = {
            let current = self.current.lock();
            (Arc::clone(&current.0), current.1)
        };
        MemoryPending {
            reply: session.handle(&self.lib, &self.cfg, req),
            generation,
            current: Arc::clone(&self.generation),
        }
    }
}

impl Drop for Memory {
    /// The last connection ends with the transport, as a server's does when the client exits.
    fn drop(&mut self) {
        self.current.lock().0.end(&self.lib);
    }
}

impl Transport for Memory {
    type Pending = MemoryPending;

    /// The request is carried out now; its reply waits in the pending value. The one copy of a
    /// `Write`'s data here stands for its trip over the wire.
    fn start(&self, req: &Request) -> Result<MemoryPending, RemoteError> {
        Ok(self.run(req.clone()))
    }

    fn call(&self, req: Request) -> Result<Reply, RemoteError> {
        let again = req.is_idempotent().then(|| req.clone());
        match self.run(req).wait() {
            Err(e) if e.is_connection_lost() => match again {
                Some(req) => self.run(req).wait(),
                None => Err(e),
            },
            other => other,
        }
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    /// The one connection played is the pinned one; its number is the epoch.
    fn call_pinned(&self, req: Request) -> Result<(Reply, u64), RemoteError> {
        let pending = self.run(req);
        let epoch = pending.generation;
        Ok((pending.wait()?, epoch))
    }

    fn features(&self) -> u64 {
        self.features
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf_proto::Code;

    fn lib() -> (tempfile::TempDir, Memory) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("f"), b"hello").expect("file");
        let m = Memory::new(dir.path()).expect("memory transport");
        (dir, m)
    }

    #[test]
    fn requests_reach_the_real_library() {
        let (dir, m) = lib();
        match m.call(Request::Stat {
            path: b"f".to_vec(),
        }) {
            Ok(Reply::Attr(a)) => assert_eq!(a.size, 5),
            other => panic!("expected attributes, got {other:?}"),
        }
        let write = Request::Write {
            path: b"f".to_vec(),
            offset: 5,
            data: b" world".to_vec().into(),
        };
        let pending = m.start(&write).expect("started");
        assert!(matches!(pending.wait(), Ok(Reply::Attr(a)) if a.size == 11));
        assert_eq!(
            std::fs::read(dir.path().join("f")).expect("read"),
            b"hello world"
        );
        match m.call(Request::Stat {
            path: b"../x".to_vec(),
        }) {
            Ok(Reply::Error { code, .. }) => assert_eq!(code, Code::Invalid),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn limits_are_what_a_handshake_would_agree() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = ServeConfig {
            max_io: 4096,
            ..ServeConfig::default()
        };
        let m = Memory::with(dir.path(), cfg).expect("memory transport");
        assert_eq!(m.limits().max_io, 4096);
        let big = Request::Read {
            path: b"f".to_vec(),
            offset: 0,
            len: 4097,
        };
        assert!(matches!(
            m.call(big),
            Ok(Reply::Error {
                code: Code::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn a_hang_up_loses_waiting_replies_and_the_connections_temporaries() {
        let (dir, m) = lib();
        let temp = match m.call(Request::PutBegin {
            path: b"new".to_vec(),
            perm: 0o644,
        }) {
            Ok(Reply::PutStarted { temp }) => temp,
            other => panic!("expected a temporary, got {other:?}"),
        };
        let waiting = m.start(&Request::Ping).expect("started");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2);
        m.hang_up();
        assert_eq!(m.connections(), 2);
        assert!(waiting.wait().expect_err("lost").is_connection_lost());
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "the hung-up connection's temporary is gone"
        );
        // The next request is on a new connection, which never made that temporary.
        let commit = Request::PutCommit {
            temp,
            path: b"new".to_vec(),
            mtime: None,
        };
        assert!(matches!(m.call(commit), Ok(Reply::Error { .. })));
        assert!(matches!(m.call(Request::Ping), Ok(Reply::Pong)));
    }
}
