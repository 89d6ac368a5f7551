//! [`Watches`]: the directories one connection watches for its client, and the names changed
//! in them since it last asked (docs/PROTOCOL.md, "Change notices").
//!
//! What is hard, and how it is handled:
//!
//! 1. **Whose changes.** inotify sees every change to a watched directory, whoever makes it:
//!    another client's connection process, a program on this machine. (Not changes made on
//!    another machine beneath a network file system: there the TTL still rules.)
//! 2. **One watcher for the server.** inotify instances are few (128 per user by default) and
//!    watches cost unswappable kernel memory, so shelfd forks one watcher process at start
//!    (`watcher.rs`) that holds the one instance and every watch; a connection process asks
//!    it over a socket pair the parent made for it, and a directory watched by ten mounts is
//!    one watch. The parent only hands each new connection's end over, and stays
//!    single-threaded. A server run in-process (tests, the fuzz harness) has no watcher: each
//!    connection then watches on an instance of its own, with the same code.
//! 3. **Only inside the library.** A directory is opened beneath the root like every other
//!    access, and watched through that descriptor (`/proc/self/fd/N`), so a symlink cannot
//!    make the server watch, and tell the names of, a directory outside.
//! 4. **Bounded.** At most `max_watches` directories per connection ([`MAX_WATCHES`] unless
//!    `shelfd --max-watches`) and what the kernel allows in all; at most [`MAX_PENDING`]
//!    changed names kept between asks, past which the client is told it lost some (so is it
//!    when the kernel's queue overflowed, or its watcher went). A `Watch` that cannot be
//!    served is answered false, and the client keeps its short TTL there.
//! 5. **Waiting.** `Changes` waits in slices (or on a condition variable the watcher's
//!    messages signal), so the end of the connection ([`Watches::end`]) stops a wait soon.

mod link;
pub mod watcher;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

use crate::library::Library;
use crate::relpath::RelPath;

pub use link::Link;

/// Directories one connection may watch unless configured otherwise (`shelfd
/// --max-watches`): a watch costs the kernel about 1 KiB, unswappable, and the watcher the
/// path twice, so 8,192 stay within about 10 MiB per mount.
pub const MAX_WATCHES: usize = 8192;
/// Changed names kept between two `Changes`; past it, the client is told it lost some.
pub const MAX_PENDING: usize = 16384;
/// Changed names in one `Changes` reply; the rest wait for the next.
pub const MAX_BATCH: usize = 512;
/// How often a waiting `Changes` looks whether the connection is ending.
const SLICE: Duration = Duration::from_millis(100);

/// What a change to an entry is, to inotify.
const EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::EXCL_UNLINK);

/// Who asked for a watch: a connection, by the watcher's number for it (0 in-process).
pub(crate) type Sub = usize;

/// One inotify instance and the directories watched on it, each with who asked.
pub(crate) struct Instance {
    fd: OwnedFd,
    dirs: HashMap<i32, Dir>,
    by_path: HashMap<Vec<u8>, i32>,
}

struct Dir {
    /// The directory's path (`b""` for the root), as last asked for.
    path: Vec<u8>,
    subs: HashSet<Sub>,
}

/// What [`Instance::take_in`] found.
pub(crate) enum Event {
    /// `path` changed, for these subscribers.
    Changed { path: Vec<u8>, subs: Vec<Sub> },
    /// The kernel's queue overflowed: every subscriber may have missed changes.
    Overflow,
}

impl Instance {
    pub(crate) fn new() -> rustix::io::Result<Instance> {
        Ok(Instance {
            fd: inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?,
            dirs: HashMap::new(),
            by_path: HashMap::new(),
        })
    }

    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Watches `path` for `sub`; the watch descriptor, or `None` if it cannot be watched.
    pub(crate) fn add(&mut self, lib: &Library, path: &RelPath, sub: Sub) -> Option<i32> {
        let key = path.as_bytes().to_vec();
        if let Some(&wd) = self.by_path.get(&key) {
            self.dirs.get_mut(&wd)?.subs.insert(sub);
            return Some(wd);
        }
        let dir = lib.open_dir_to_watch(path).ok()?;
        let through = format!("/proc/self/fd/{}", dir.as_raw_fd());
        match inotify::add_watch(&self.fd, through.as_str(), EVENTS) {
            Ok(wd) => {
                // A directory reached by two paths (a bind mount) has one descriptor: the
                // latest path names it.
                let entry = self.dirs.entry(wd).or_insert_with(|| Dir {
                    path: key.clone(),
                    subs: HashSet::new(),
                });
                if entry.path != key {
                    let old = std::mem::replace(&mut entry.path, key.clone());
                    self.by_path.remove(&old);
                }
                entry.subs.insert(sub);
                self.by_path.insert(key, wd);
                Some(wd)
            }
            Err(Errno::NOSPC) => {
                tracing::info!("the kernel's inotify watch limit is reached");
                None
            }
            Err(_) => None,
        }
    }

    /// `sub` no longer watches the directories `wds`; those nobody watches now are dropped.
    pub(crate) fn drop_sub(&mut self, sub: Sub, wds: impl IntoIterator<Item = i32>) {
        for wd in wds {
            let Some(dir) = self.dirs.get_mut(&wd) else {
                continue;
            };
            dir.subs.remove(&sub);
            if dir.subs.is_empty() {
                let dir = self.dirs.remove(&wd).expect("present");
                self.by_path.remove(&dir.path);
                let _ = inotify::remove_watch(&self.fd, wd);
            }
        }
    }

    /// Directories watched now, by anyone.
    pub(crate) fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Reads the events that arrived. A directory that went or moved is told as its own path
    /// and is watched no more (`gone` gets its descriptor and who watched it).
    pub(crate) fn take_in(&mut self, out: &mut Vec<Event>, gone: &mut Vec<(i32, Vec<Sub>)>) {
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let mut reader = inotify::Reader::new(self.fd.as_fd(), &mut buf);
        loop {
            let event = match reader.next() {
                Ok(e) => e,
                Err(Errno::INTR) => continue,
                Err(_) => break,
            };
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                out.push(Event::Overflow);
                continue;
            }
            let wd = event.wd();
            let Some(dir) = self.dirs.get(&wd) else {
                continue;
            };
            let subs: Vec<Sub> = dir.subs.iter().copied().collect();
            if flags.intersects(ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF)
            {
                // Gone or moved: its path no longer names it.
                let dir = self.dirs.remove(&wd).expect("present");
                self.by_path.remove(&dir.path);
                if !flags.contains(ReadFlags::IGNORED) {
                    let _ = inotify::remove_watch(&self.fd, wd);
                }
                gone.push((wd, subs.clone()));
                out.push(Event::Changed {
                    path: dir.path,
                    subs,
                });
                continue;
            }
            let path = match event.file_name() {
                Some(name) if !name.to_bytes().is_empty() => {
                    let mut p = dir.path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name.to_bytes());
                    p
                }
                _ => dir.path.clone(),
            };
            out.push(Event::Changed { path, subs });
        }
    }
}

/// Changed names waiting for the client's next `Changes`.
#[derive(Default)]
pub(crate) struct Pending {
    paths: BTreeSet<Vec<u8>>,
    lost: bool,
}

impl Pending {
    pub(crate) fn push(&mut self, path: Vec<u8>) {
        if self.paths.len() >= MAX_PENDING {
            self.lost = true;
        } else {
            self.paths.insert(path);
        }
    }

    pub(crate) fn lose(&mut self) {
        self.lost = true;
    }

    /// What a `Changes` answers now, if anything.
    pub(crate) fn batch(&mut self) -> Option<(Vec<Vec<u8>>, bool)> {
        if self.paths.is_empty() && !self.lost {
            return None;
        }
        let mut paths = Vec::new();
        while paths.len() < MAX_BATCH {
            let Some(p) = self.paths.pop_first() else {
                break;
            };
            paths.push(p);
        }
        Some((paths, std::mem::take(&mut self.lost)))
    }
}

/// One connection's watches; see the module docs.
#[derive(Default)]
pub struct Watches {
    /// The server's watcher, if it has one (module docs, point 2).
    link: Option<Link>,
    /// Without a watcher: this connection's own instance, made at its first `Watch`.
    own: Mutex<Option<Arc<Own>>>,
    /// The own instance could not be made: every `Watch` is false.
    unavailable: AtomicBool,
    ending: AtomicBool,
}

struct Own {
    instance: Mutex<Instance>,
    pending: Mutex<Pending>,
}

impl Watches {
    /// Watches that ask the server's watcher over `socket` (module docs, point 2).
    pub fn linked(socket: OwnedFd) -> Watches {
        Watches {
            link: Some(Link::new(socket)),
            ..Watches::default()
        }
    }

    /// Watches each directory, up to `limit` in all; for each, whether it is watched now.
    pub fn watch(&self, lib: &Library, paths: &[RelPath], limit: usize) -> Vec<bool> {
        if limit == 0 || self.ending.load(Ordering::SeqCst) {
            return vec![false; paths.len()];
        }
        if let Some(link) = &self.link {
            return link.watch(paths, limit);
        }
        let Some(own) = self.own() else {
            return vec![false; paths.len()];
        };
        let mut instance = lock(&own.instance);
        paths
            .iter()
            .map(|path| {
                let known = instance.by_path.contains_key(path.as_bytes());
                (known || instance.len() < limit) && instance.add(lib, path, 0).is_some()
            })
            .collect()
    }

    /// How many directories this connection watches now.
    pub fn count(&self) -> usize {
        if let Some(link) = &self.link {
            return link.count();
        }
        lock(&self.own)
            .as_ref()
            .map_or(0, |o| lock(&o.instance).len())
    }

    /// The names changed since the last call, waiting up to `wait` for one; and whether
    /// some may have been missed. Nothing is watched: none, at once.
    pub fn changes(&self, wait: Duration) -> (Vec<Vec<u8>>, bool) {
        if let Some(link) = &self.link {
            return link.changes(wait, &self.ending);
        }
        let Some(own) = lock(&self.own).clone() else {
            return (Vec::new(), false);
        };
        let deadline = Instant::now() + wait;
        loop {
            own.take_in();
            if let Some(batch) = lock(&own.pending).batch() {
                return batch;
            }
            let now = Instant::now();
            if now >= deadline || self.ending.load(Ordering::SeqCst) {
                return (Vec::new(), false);
            }
            let instance = lock(&own.instance);
            let fd = instance.fd.as_raw_fd();
            drop(instance);
            poll_in(fd, (deadline - now).min(SLICE));
        }
    }

    /// Ends waits (soon) and drops the watches, as the connection ends.
    pub fn end(&self) {
        self.ending.store(true, Ordering::SeqCst);
        if let Some(link) = &self.link {
            link.end();
        }
        lock(&self.own).take();
    }

    fn own(&self) -> Option<Arc<Own>> {
        if self.unavailable.load(Ordering::Relaxed) {
            return None;
        }
        let mut own = lock(&self.own);
        if let Some(o) = &*own {
            return Some(Arc::clone(o));
        }
        match Instance::new() {
            Ok(instance) => {
                let o = Arc::new(Own {
                    instance: Mutex::new(instance),
                    pending: Mutex::default(),
                });
                *own = Some(Arc::clone(&o));
                Some(o)
            }
            Err(e) => {
                tracing::warn!("cannot watch for changes (inotify): {e}; clients keep their TTL");
                self.unavailable.store(true, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Own {
    fn take_in(&self) {
        let mut events = Vec::new();
        let mut gone = Vec::new();
        lock(&self.instance).take_in(&mut events, &mut gone);
        let mut pending = lock(&self.pending);
        for e in events {
            match e {
                Event::Changed { path, .. } => pending.push(path),
                Event::Overflow => pending.lose(),
            }
        }
    }
}

/// Waits up to `timeout` for `fd` to be readable.
pub(crate) fn poll_in(fd: i32, timeout: Duration) {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
}

/// A poisoned lock here means a panic in code that keeps these maps consistent at every step;
/// going on with the data is right.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
