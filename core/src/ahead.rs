//! Walk-ahead: when a program enters one subdirectory of a directory it listed, the listings
//! of the subdirectories after it are asked for at once, several in flight, so that a walk
//! (`find`, `du`, `tar c`, `cp -r`, `rsync`, `git status`) waits about one round trip per
//! level of the tree instead of one per directory. At a 20 ms round trip a tree of 100
//! directories is two seconds of waiting one at a time.
//!
//! How it stays cheap and right:
//! - Only after a sign of a walk: an `opendir` of a directory whose parent's listing (with
//!   entries) is kept, so the names and sizes of the siblings are known without asking. The
//!   window of directories asked ahead starts small and doubles while walks take what was
//!   asked ([`MIN_WINDOW`] to [`MAX_WINDOW`]); directories larger than [`MAX_DIR_BYTES`]
//!   are never asked ahead (their listing may not be kept, and costs the server a stat per
//!   entry).
//! - A listing asked ahead is kept in `Listings` marked as such, and the `opendir` it was
//!   asked for takes it once (`Listings::take_ahead`), as fresh as its TTL allows. Every
//!   change this mount makes in the directory, or hears of, drops it as it drops any kept
//!   listing, and one asked before such a change is never kept (`listing.rs`).
//! - An `opendir` of a directory whose listing is on its way waits for it rather than ask
//!   twice; one whose listing is only queued takes the job and lists it itself.
//! - Bounded: a queue of [`QUEUE`] jobs and `CoreConfig::walk_ahead` threads; a full queue
//!   drops the job (the walk will list the directory itself).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use shelf_remote::Transport;

use crate::ids::{Ino, ROOT_INO};
use crate::Core;

/// Directories asked ahead at the start of a walk.
pub const MIN_WINDOW: usize = 4;
/// Directories asked ahead at most, per step of a walk.
pub const MAX_WINDOW: usize = 32;
/// Directories larger than this (`st_size`; on ext4 about 2,000 entries of short names) are
/// not asked ahead.
pub const MAX_DIR_BYTES: u64 = 64 * 1024;
/// Jobs waiting for a thread at most.
const QUEUE: usize = 256;
/// A walk that took nothing asked ahead for this long starts again at [`MIN_WINDOW`].
const IDLE: Duration = Duration::from_secs(5);
/// How long an `opendir` waits for a listing on its way before it lists by itself (the
/// request has its own timeout; this only guards against a lost wake-up).
const WAIT: Duration = Duration::from_secs(30);

/// See the module docs.
pub(crate) struct WalkAhead {
    queue: Mutex<Option<SyncSender<Ino>>>,
    jobs: Mutex<HashMap<Ino, Job>>,
    done: Condvar,
    window: Mutex<Window>,
    /// Listings queued so far, and those an `opendir` took (`shelf status`).
    asked: AtomicU64,
    taken: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Job {
    Queued,
    Running,
}

struct Window {
    size: usize,
    last_hit: Option<Instant>,
}

impl Default for WalkAhead {
    fn default() -> Self {
        WalkAhead {
            queue: Mutex::new(None),
            jobs: Mutex::new(HashMap::new()),
            done: Condvar::new(),
            window: Mutex::new(Window {
                size: MIN_WINDOW,
                last_hit: None,
            }),
            asked: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }
}

impl WalkAhead {
    /// The window for the next step: [`MIN_WINDOW`] after a pause.
    fn window(&self) -> usize {
        let mut w = self.window.lock();
        if w.last_hit.is_none_or(|at| at.elapsed() >= IDLE) {
            w.size = MIN_WINDOW;
        }
        w.size
    }

    /// An `opendir` took a listing asked ahead: the walk may be asked further ahead.
    pub(crate) fn hit(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
        let mut w = self.window.lock();
        w.size = (w.size * 2).min(MAX_WINDOW);
        w.last_hit = Some(Instant::now());
    }

    /// Queues `dir` unless it is queued or on its way already. Never blocks.
    fn ask(&self, dir: Ino) {
        let queue = self.queue.lock();
        let Some(tx) = queue.as_ref() else {
            return;
        };
        let mut jobs = self.jobs.lock();
        if jobs.contains_key(&dir) {
            return;
        }
        match tx.try_send(dir) {
            Ok(()) => {
                jobs.insert(dir, Job::Queued);
                self.asked.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }

    /// For a worker: whether `dir` is still wanted (an `opendir` may have taken it), and if
    /// so marks it running.
    fn start(&self, dir: Ino) -> bool {
        let mut jobs = self.jobs.lock();
        match jobs.get_mut(&dir) {
            Some(job @ Job::Queued) => {
                *job = Job::Running;
                true
            }
            _ => false,
        }
    }

    fn finish(&self, dir: Ino) {
        self.jobs.lock().remove(&dir);
        self.done.notify_all();
    }

    /// For an `opendir` of `dir`: takes a queued job, or waits for a running one.
    fn settle(&self, dir: Ino) {
        let deadline = Instant::now() + WAIT;
        let mut jobs = self.jobs.lock();
        loop {
            match jobs.get(&dir) {
                None => return,
                Some(Job::Queued) => {
                    jobs.remove(&dir);
                    return;
                }
                Some(Job::Running) => {
                    if self.done.wait_until(&mut jobs, deadline).timed_out() {
                        return;
                    }
                }
            }
        }
    }

    /// Listings asked ahead that have not answered yet.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.jobs.lock().len()
    }
}

/// Marks a job finished even if listing it panicked, so no `opendir` waits for it.
struct Finish<'a>(&'a WalkAhead, Ino);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.finish(self.1);
    }
}

impl<T: Transport> Core<T> {
    /// Starts the walk-ahead threads (`CoreConfig::walk_ahead`; none: walk-ahead is off).
    /// They stop when the core is dropped.
    pub fn start_walk_ahead(self: &Arc<Self>) -> std::io::Result<()> {
        let threads = self.cfg.walk_ahead;
        if threads == 0 || self.cfg.attr_ttl.is_zero() {
            return Ok(());
        }
        let (tx, rx) = sync_channel::<Ino>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let weak = Arc::downgrade(self);
            let rx: Arc<Mutex<Receiver<Ino>>> = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("shelf-ahead-{i}"))
                .spawn(move || loop {
                    let Ok(dir) = rx.lock().recv() else { return };
                    let Some(core) = weak.upgrade() else { return };
                    if core.ahead.start(dir) {
                        let _finish = Finish(&core.ahead, dir);
                        core.list_ahead(dir);
                    }
                })?;
        }
        *self.ahead.queue.lock() = Some(tx);
        Ok(())
    }

    /// What an `opendir` of `dir` does first: waits for its listing if it is on its way, and
    /// asks for the next subdirectories of its parent (module docs).
    pub(crate) fn walk_ahead_from(&self, dir: Ino) {
        if dir == ROOT_INO || self.ahead.queue.lock().is_none() {
            return;
        }
        self.ahead.settle(dir);
        let Some((parent, name)) = self.inodes.names_of(dir).into_iter().next() else {
            return;
        };
        let rule = self.freshness_in(Some(parent));
        let window = self.ahead.window();
        let next = self
            .listings
            .dirs_after(parent, &name, &rule, window, MAX_DIR_BYTES);
        for name in next {
            let Some(sub) = self.inodes.child(parent, &name) else {
                continue;
            };
            if self
                .listings
                .entries(sub, &self.freshness_in(Some(sub)))
                .is_none()
            {
                self.ahead.ask(sub);
            }
        }
    }

    /// Listings asked ahead of walks so far and how many of them a walk took, for `shelf
    /// status`; `None` when walk-ahead is off.
    pub fn walk_ahead_stats(&self) -> Option<(u64, u64)> {
        self.ahead.queue.lock().as_ref()?;
        let a = &self.ahead;
        Some((
            a.asked.load(Ordering::Relaxed),
            a.taken.load(Ordering::Relaxed),
        ))
    }

    /// A worker's job: lists `dir` and keeps the listing for its `opendir`. Errors are no
    /// one's to report: the `opendir` lists by itself.
    fn list_ahead(&self, dir: Ino) {
        let Ok(path) = self.path_of(dir) else {
            return;
        };
        self.want_watched(dir);
        match self.fetch_listing(dir, &path) {
            Ok((entries, pages)) => {
                let asked = pages.first().map_or_else(Instant::now, |p| p.1);
                self.listings.listed_ahead(dir, &entries, asked);
            }
            Err(e) => tracing::debug!("listing {} ahead: {e}", String::from_utf8_lossy(&path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_with_hits_and_starts_small_again_after_a_pause() {
        let w = WalkAhead::default();
        assert_eq!(w.window(), MIN_WINDOW);
        w.hit();
        assert_eq!(w.window(), MIN_WINDOW * 2);
        for _ in 0..10 {
            w.hit();
        }
        assert_eq!(w.window(), MAX_WINDOW);
        w.window.lock().last_hit = Instant::now().checked_sub(IDLE);
        assert_eq!(w.window(), MIN_WINDOW);
    }

    #[test]
    fn a_queued_job_is_taken_by_its_opendir_and_a_running_one_is_waited_for() {
        let w = Arc::new(WalkAhead::default());
        let (tx, _rx) = sync_channel(QUEUE);
        *w.queue.lock() = Some(tx);
        w.ask(Ino(5));
        w.ask(Ino(5));
        assert_eq!(w.pending(), 1, "asked once");
        w.settle(Ino(5));
        assert_eq!(w.pending(), 0, "taken by the opendir");
        assert!(!w.start(Ino(5)), "the worker then skips it");

        w.ask(Ino(6));
        assert!(w.start(Ino(6)));
        let worker = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                w.finish(Ino(6));
            })
        };
        let t = Instant::now();
        w.settle(Ino(6));
        assert!(t.elapsed() >= Duration::from_millis(40), "waited");
        assert_eq!(w.pending(), 0);
        worker.join().expect("worker");
    }

    #[test]
    fn a_full_queue_drops_the_job() {
        let w = WalkAhead::default();
        let (tx, _rx) = sync_channel(1);
        *w.queue.lock() = Some(tx);
        w.ask(Ino(1));
        w.ask(Ino(2));
        assert_eq!(w.pending(), 1);
        w.settle(Ino(2));
    }
}
