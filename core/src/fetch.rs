//! Fetching chunks from the server into the chunk cache, in the foreground and ahead of need.
//!
//! What is hard, and how this module handles it:
//! 1. One chunk, many askers: a read may want a chunk that read-ahead is already fetching.
//!    `Fetcher` keeps one slot per chunk in flight; later askers wait on it instead of asking
//!    the server again.
//! 2. Versions: every `Data` reply carries the file's attributes as the server saw them. A
//!    chunk is cached only under the version it was read at, and a caller that expected another
//!    version learns it (`Fetched::attr`) and starts over, so no read mixes two versions.
//! 3. Parallelism: a read spanning several chunks starts every missing chunk before waiting on
//!    any; read-ahead runs on a small pool of threads so the kernel's request is answered first.
//! 4. Starting before the first read: an `open` of a small file sends the read of its one
//!    chunk at once (`start_early`), so the server's disk read overlaps the kernel's round trip
//!    from `open` to the first `read`, which then waits on that request instead of sending its
//!    own. Nobody waits on such a request until a read claims it, so they are few and small
//!    (`EARLY_MAX` of at most `EARLY_MAX_BYTES`), and dropped when the file's last handle closes.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use shelf_proto::{Attr, Reply, Request};

use crate::cache::{ChunkCache, ChunkKey};
use crate::error::{FsError, FsResult};
use crate::ids::Ino;
use shelf_remote::{Client, Pending, RemoteError, Transport};

/// Early fetches (module docs, point 4) unclaimed at once, at most.
const EARLY_MAX: usize = 32;
/// Largest file whose chunk an `open` fetches early.
pub const EARLY_MAX_BYTES: u64 = 256 << 10;

/// A chunk's bytes. `attr` is the file's attributes as the server saw them while reading, or
/// `None` when the chunk came from the cache (stored under its key's version, so it matches).
#[derive(Clone)]
pub struct Fetched {
    pub attr: Option<Attr>,
    pub data: Arc<[u8]>,
}

type SlotResult = Option<Result<Fetched, shelf_proto::Code>>;

#[derive(Default)]
struct Slot {
    result: Mutex<SlotResult>,
    done: Condvar,
}

impl Slot {
    fn wait(&self) -> Result<Fetched, FsError> {
        let mut r = self.result.lock();
        while r.is_none() {
            self.done.wait(&mut r);
        }
        match r.as_ref() {
            Some(Ok(f)) => Ok(f.clone()),
            Some(Err(code)) => Err(FsError::Local(*code)),
            None => unreachable!("loop exits only once a result is set"),
        }
    }

    fn fill(&self, r: Result<Fetched, shelf_proto::Code>) {
        *self.result.lock() = Some(r);
        self.done.notify_all();
    }
}

/// A job for the read-ahead pool.
struct Prefetch {
    key: ChunkKey,
    path: Vec<u8>,
}

/// Fetches chunks once each, fills the cache, and runs read-ahead.
pub struct Fetcher<T: Transport> {
    client: Arc<Client<T>>,
    cache: Arc<ChunkCache>,
    inflight: Mutex<HashMap<ChunkKey, Arc<Slot>>>,
    prefetch_tx: Mutex<Option<SyncSender<Prefetch>>>,
    /// Reads sent by `start_early` that no read has claimed yet.
    early: Mutex<HashMap<ChunkKey, (Request, Pending)>>,
}

enum Want {
    Cached(Arc<[u8]>),
    Mine(
        Arc<Slot>,
        Request,
        Result<shelf_remote::Pending, RemoteError>,
    ),
    Theirs(Arc<Slot>),
}

impl<T: Transport> Fetcher<T> {
    pub fn new(client: Arc<Client<T>>, cache: Arc<ChunkCache>) -> Arc<Self> {
        Arc::new(Fetcher {
            client,
            cache,
            inflight: Mutex::new(HashMap::new()),
            prefetch_tx: Mutex::new(None),
            early: Mutex::new(HashMap::new()),
        })
    }

    /// Sends the read of `key` now, before any read asks (module docs, point 4). Does nothing
    /// if the chunk is cached or on its way, or too many early reads are unclaimed.
    pub fn start_early(&self, path: &[u8], key: ChunkKey) {
        if self.cache.contains(&key) || self.inflight.lock().contains_key(&key) {
            return;
        }
        let mut early = self.early.lock();
        if early.len() >= EARLY_MAX || early.contains_key(&key) {
            return;
        }
        let req = self.read_request(path, key);
        // A failure to send is not anyone's to report: the read will ask again.
        if let Ok(pending) = self.client.transport().start(&req) {
            early.insert(key, (req, pending));
        }
    }

    /// Drops the early reads of `file` that no read claimed (its last handle closed).
    pub fn forget_early(&self, file: Ino) {
        self.early.lock().retain(|key, _| key.file != file);
    }

    fn read_request(&self, path: &[u8], key: ChunkKey) -> Request {
        let chunk_size = self.cache.chunk_size();
        Request::Read {
            path: path.to_vec(),
            offset: key.index * chunk_size as u64,
            len: chunk_size,
        }
    }

    /// Starts `threads` read-ahead workers. They stop when the fetcher is dropped.
    pub fn start_prefetchers(self: &Arc<Self>, threads: usize) {
        let (tx, rx) = sync_channel::<Prefetch>(256);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let weak = Arc::downgrade(self);
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("shelf-readahead-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock().recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    let Some(me) = weak.upgrade() else { return };
                    // Errors here are not anyone's to report: the foreground read will retry.
                    let _ = me.chunks(&job.path, &[job.key]);
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start read-ahead thread: {e}");
            }
        }
        *self.prefetch_tx.lock() = Some(tx);
    }

    /// Asks the read-ahead pool for `key` unless it is cached or on its way. Never blocks.
    pub fn prefetch(&self, path: &[u8], key: ChunkKey) {
        if self.cache.contains(&key) || self.inflight.lock().contains_key(&key) {
            return;
        }
        if let Some(tx) = self.prefetch_tx.lock().as_ref() {
            match tx.try_send(Prefetch {
                key,
                path: path.to_vec(),
            }) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Returns the chunks for `keys` (all of one file and version), from the cache where
    /// possible. A chunk read under another version is returned as the server sent it and is
    /// not cached under `key`; the caller compares `Fetched::attr` with what it expected.
    pub fn chunks(&self, path: &[u8], keys: &[ChunkKey]) -> FsResult<Vec<Fetched>> {
        let wants: Vec<Want> = keys
            .iter()
            .map(|key| {
                if let Some(data) = self.cache.get(key) {
                    return Want::Cached(data);
                }
                let mut inflight = self.inflight.lock();
                if let Some(slot) = inflight.get(key) {
                    return Want::Theirs(Arc::clone(slot));
                }
                let slot = Arc::new(Slot::default());
                inflight.insert(*key, Arc::clone(&slot));
                drop(inflight);
                if let Some((req, pending)) = self.early.lock().remove(key) {
                    return Want::Mine(slot, req, Ok(pending));
                }
                let req = self.read_request(path, *key);
                let started = self.client.transport().start(&req);
                Want::Mine(slot, req, started)
            })
            .collect();

        let mut out = Vec::with_capacity(keys.len());
        let mut first_err = None;
        for (key, want) in keys.iter().zip(wants) {
            let got = match want {
                Want::Cached(data) => Ok(Fetched { attr: None, data }),
                Want::Theirs(slot) => slot.wait(),
                Want::Mine(slot, req, started) => {
                    // A read lost with its connection is sent again on a fresh one.
                    let r = data_reply(self.client.settle(started, || req));
                    if let Ok(f) = &r {
                        if f.attr.is_some_and(|a| a.version() == key.version) {
                            self.cache.insert(*key, Arc::clone(&f.data));
                        }
                    }
                    slot.fill(r.as_ref().map(Clone::clone).map_err(FsError::code));
                    self.inflight.lock().remove(key);
                    r
                }
            };
            match got {
                Ok(f) => out.push(f),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

fn data_reply(r: Result<Reply, RemoteError>) -> FsResult<Fetched> {
    match r? {
        Reply::Data { attr, data } => Ok(Fetched {
            attr: Some(attr),
            data: data.into(),
        }),
        Reply::Error { code, message } => Err(RemoteError::Server { code, message }.into()),
        other => Err(RemoteError::Protocol(format!("unexpected reply to read: {other:?}")).into()),
    }
}
