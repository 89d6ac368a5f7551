//! Change push (docs/PROTOCOL.md, "Change notices"): the server tells which names changed in
//! the directories this mount caches, and the mount forgets what it held of them at once
//! instead of when its TTL runs out; what is watched is trusted for the long TTL
//! (`fresh.rs`).
//!
//! What is hard, and how it is handled:
//!
//! 1. **Never in a request's way.** A directory the core lists or looks up in is handed to a
//!    thread of its own (`shelf-watch`), which asks the server to watch it; another
//!    (`shelf-changes`) keeps one `Changes` outstanding on the pinned connection and applies
//!    what comes. No FUSE request waits for either.
//! 2. **Only what a watch covers is trusted long.** A directory counts as watched from the
//!    moment its `Watched` reply arrives, and only values asked for after that get the long
//!    TTL (`Freshness`); a change made between a listing and the watch that follows it is
//!    bounded by the short TTL, as without push. A directory this mount made is watched at
//!    once and listed after its watch is confirmed; its listing is trusted from then if the
//!    server agrees with it, but for names this mount changed itself meanwhile (another
//!    client's change of such a name within that first round trip would go unseen until
//!    the name is next changed or the TTL ends).
//! 3. **What a changed name makes stale: only what disagrees.** The server tells, with each
//!    path, what it holds under it and the directory's attributes, as of after the change
//!    (`features::CHANGE_STATE`). Most notices are of this mount's own changes, whose replies
//!    already brought it up to date: forgetting then would cost a round trip per file (a
//!    lookup, a listing) in `cp -r`, `tar x`, `rm -r`. So `apply` compares: the name's file
//!    (same server file, same version, or an older state than the one held: the server's
//!    ctime only moves forward) and the directory's version, which after this mount's own
//!    changes is its estimate (`dir_changed`) and never equal: a name this mount changed
//!    itself ([`Push::own`]) that agrees explains the difference. What agrees stays; on
//!    anything else the directory's listing, the kernel's entry for the name and the node's
//!    attributes, chunks and pages go, as without a state (an older server). A state is only
//!    ever used to confirm, never to fill in: it may be older than this mount's own latest
//!    change of the name (git's `config.lock`, made, removed and made again, each faster than
//!    a notice).
//! 4. **Missed changes.** When the server says it lost some, or the pinned connection failed
//!    or changed (its watches went with the old one), nothing is watched from that moment,
//!    everything that was is treated as changed and watched again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use shelf_proto::{features, Attr, ChangedPath, EntryState};
use shelf_remote::Transport;

use crate::fresh::Freshness;
use crate::ids::Ino;
use crate::versions::change_order;
use crate::{Core, Invalidate, ROOT_INO};

/// How long one `Changes` waits on the server for a change.
const CHANGES_WAIT: Duration = Duration::from_secs(5);
/// After a failed `Changes` or `Watch` (the server away): the pause before asking again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Directories sent in one `Watch`.
const WATCH_BATCH: usize = 256;
/// Directories made here waiting for their watch kept at most ([`Push::made`]).
const MAX_MADE: usize = 4096;
/// Names of this mount's own changes kept ([`Push::own`]); past it they are all dropped,
/// which costs nothing but some round trips.
const MAX_OWN_NAMES: usize = 64 * 1024;

/// How change push stands ([`Core::push_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// Directories whose watch is confirmed: their changes are pushed.
    pub watched: usize,
    /// Directories asked to be watched and not (yet, or again after a reconnection)
    /// confirmed: on the short TTL meanwhile.
    pub waiting: usize,
    /// Directories the server would not watch (its budget), counted since the mount: on the
    /// short TTL.
    pub refused: u64,
}

/// What this mount watches (module docs).
#[derive(Default)]
pub(crate) struct Push {
    /// Directories asked to be watched (sent, or queued to be), each with when its watch was
    /// confirmed (`None`: not yet).
    watched: Mutex<HashMap<Ino, Option<Instant>>>,
    /// The subscriber thread's queue; `None` until `start_push`.
    queue: Mutex<Option<Sender<Ino>>>,
    /// Directories this mount made whose watch is not yet confirmed (at most
    /// [`MAX_MADE`]): their listing, known since they were made, is confirmed by the server
    /// once their watch is, and then trusted as long as the watch.
    made: Mutex<HashSet<Ino>>,
    /// Names in watched directories that this mount itself made, removed or renamed
    /// (module docs, point 3), and how many in all.
    own: Mutex<OwnNames>,
}

#[derive(Default)]
struct OwnNames {
    by_dir: HashMap<Ino, HashSet<Vec<u8>>>,
    count: usize,
}

impl<T: Transport> Core<T> {
    /// Starts the two threads of change push, if the server serves it (module docs).
    pub fn start_push(self: &Arc<Self>) -> std::io::Result<()> {
        if !self.cfg.push || !self.client.has(features::CHANGE_NOTIFY) {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel();
        *self.push.queue.lock() = Some(tx);
        let core = Arc::clone(self);
        std::thread::Builder::new()
            .name("shelf-watch".into())
            .spawn(move || core.subscribe(rx))?;
        let core = Arc::clone(self);
        std::thread::Builder::new()
            .name("shelf-changes".into())
            .spawn(move || core.take_changes())?;
        self.want_watched(ROOT_INO);
        Ok(())
    }

    /// How change push stands, for `shelf status`; `None` when the mount does not ask for it
    /// (`push=off`) or the server does not serve it.
    pub fn push_stats(&self) -> Option<PushStats> {
        self.push.queue.lock().as_ref()?;
        let watched = self.push.watched.lock();
        let confirmed = watched.values().filter(|s| s.is_some()).count();
        Some(PushStats {
            watched: confirmed,
            waiting: watched.len() - confirmed,
            refused: self.push_refused.load(Ordering::Relaxed),
        })
    }

    /// Asks for `dir` to be watched, once (module docs, point 1).
    pub(crate) fn want_watched(&self, dir: Ino) {
        let queue = self.push.queue.lock();
        let Some(tx) = queue.as_ref() else {
            return;
        };
        let mut watched = self.push.watched.lock();
        if let std::collections::hash_map::Entry::Vacant(e) = watched.entry(dir) {
            e.insert(None);
            let _ = tx.send(dir);
        }
    }

    /// This mount made directory `dir`: it is watched at once, so that a copy into it (`cp
    /// -r`, `tar x`) is answered from its listing for as long as the watch holds, not only
    /// for the short TTL (module docs, point 2: that listing is confirmed by the server after
    /// the watch).
    pub(crate) fn made_here(&self, dir: Ino) {
        if self.push.queue.lock().is_none() {
            return;
        }
        {
            let mut made = self.push.made.lock();
            if made.len() < MAX_MADE {
                made.insert(dir);
            }
        }
        self.want_watched(dir);
    }

    /// Lists each directory made here whose watch was just confirmed, so that its listing
    /// counts from after the watch if the server agrees with it.
    fn confirm_made(&self, dirs: Vec<Ino>) {
        for dir in dirs {
            let Some(path) = self.inodes.path(dir) else {
                continue;
            };
            let asked = Instant::now();
            match self.client.list(&path) {
                Ok(entries) => {
                    let names = entries.iter().map(|e| e.name.as_slice());
                    // Names this mount changed meanwhile may differ either way; any other
                    // difference is another's change, and the listing goes.
                    let ours = |name: &[u8]| self.changed_here_before(dir, name);
                    self.listings.confirm(dir, names, asked, ours);
                }
                Err(e) => tracing::debug!("listing a directory made here: {e}"),
            }
        }
    }

    /// This mount changed entry `name` of `dir` (made, removed, renamed from or to it).
    pub(crate) fn changed_here(&self, dir: Ino, name: &[u8]) {
        if !self.push.watched.lock().contains_key(&dir) {
            return;
        }
        let mut own = self.push.own.lock();
        if own.count >= MAX_OWN_NAMES {
            *own = OwnNames::default();
        }
        if own.by_dir.entry(dir).or_default().insert(name.to_vec()) {
            own.count += 1;
        }
    }

    /// Counts `dir` as watched, as a confirmed `Watch` would (tests that take notices by hand).
    #[cfg(test)]
    pub(crate) fn watched_since_now(&self, dir: Ino) {
        self.push.watched.lock().insert(dir, Some(Instant::now()));
    }

    /// Whether this mount itself changed entry `name` of `dir` since it was last watched.
    fn changed_here_before(&self, dir: Ino, name: &[u8]) -> bool {
        let own = self.push.own.lock();
        own.by_dir.get(&dir).is_some_and(|n| n.contains(name))
    }

    fn subscribe(&self, rx: Receiver<Ino>) {
        while let Ok(first) = rx.recv() {
            let mut dirs = vec![first];
            while dirs.len() < WATCH_BATCH {
                match rx.try_recv() {
                    Ok(d) => dirs.push(d),
                    Err(_) => break,
                }
            }
            let known: Vec<(Ino, Vec<u8>)> = dirs
                .into_iter()
                .filter_map(|d| Some((d, self.inodes.path(d)?)))
                .collect();
            let paths = known.iter().map(|(_, p)| p.clone()).collect();
            match self.client.watch(paths) {
                Ok((flags, _)) => {
                    let now = Instant::now();
                    let mut watched = self.push.watched.lock();
                    let mut made = self.push.made.lock();
                    let mut confirm = Vec::new();
                    for ((dir, _), ok) in known.iter().zip(flags) {
                        let was_made = made.remove(dir);
                        if !ok {
                            // Not watched: the short TTL rules; asked again if listed again.
                            watched.remove(dir);
                            self.push_refused.fetch_add(1, Ordering::Relaxed);
                        } else if let Some(since) = watched.get_mut(dir) {
                            // Still wanted (no notice or reconnection dropped it meanwhile).
                            *since = Some(now);
                            if was_made {
                                confirm.push(*dir);
                            }
                        }
                    }
                    drop((made, watched));
                    self.confirm_made(confirm);
                }
                Err(e) => {
                    tracing::debug!("watch: {e}");
                    let mut watched = self.push.watched.lock();
                    for (dir, _) in &known {
                        watched.remove(dir);
                    }
                    drop(watched);
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    }

    fn take_changes(&self) {
        let mut epoch = None;
        let mut failed = false;
        loop {
            match self.client.changes(CHANGES_WAIT) {
                Ok((paths, lost, now)) => {
                    let reconnected = epoch.is_some_and(|e| e != now);
                    epoch = Some(now);
                    for change in &paths {
                        self.apply(change);
                    }
                    if lost || reconnected || std::mem::take(&mut failed) {
                        self.changed_everything();
                    }
                }
                Err(e) => {
                    // The watches may have gone with the connection: from now on nothing is
                    // trusted for long until it is watched again (module docs, point 4).
                    tracing::debug!("changes: {e}");
                    self.unwatch_all();
                    failed = true;
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    }

    /// Every watched directory as not watched (yet), until its watch is confirmed again.
    fn unwatch_all(&self) {
        for since in self.push.watched.lock().values_mut() {
            *since = None;
        }
    }

    /// The rule for values whose changes `dir`'s watch would tell (`fresh.rs`).
    pub(crate) fn freshness_in(&self, dir: Option<Ino>) -> Freshness {
        let since = dir.and_then(|d| self.push.watched.lock().get(&d).copied().flatten());
        Freshness {
            short: self.cfg.short_ttl(),
            long: self.cfg.attr_ttl,
            since,
        }
    }

    /// The rule for the cached attributes of `ino`.
    pub(crate) fn freshness(&self, ino: Ino) -> Freshness {
        self.freshness_in(self.inodes.told_by(ino))
    }

    /// Forgets what a change made stale (module docs, point 3): only what disagrees with
    /// the state the server sent with it, if it sent one.
    pub(crate) fn apply(&self, change: &ChangedPath) {
        let path = &change.path[..];
        if path.is_empty() {
            return self.changed_dir(ROOT_INO);
        }
        let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let Some(dir) = self.resolve(parent) else {
            return;
        };
        let child = self.inodes.child(dir, name);
        // A state may be older than this mount's latest change of the name (the notice was
        // made before it, and came after its reply), so it is only ever used to confirm what
        // is held here, never to replace it: whatever disagrees is forgotten, as without a
        // state.
        let agrees = match (&change.state, child) {
            (EntryState::Absent, None) => self.listings.lists(dir, name) != Some(true),
            (EntryState::Present(attr), Some(ino)) => {
                self.inodes.is_same_file(ino, attr) == Some(true)
                    && self.listings.lists(dir, name) != Some(false)
            }
            _ => false,
        };
        // The directory's times and size after this mount's own change are its estimate
        // (`dir_changed`), which the server's never equal: when the name is one it changed
        // itself and agrees, the difference is its own doing.
        let dir_agrees = change.dir.is_some_and(|d| self.holds_version(dir, &d))
            || (agrees && self.changed_here_before(dir, name));
        if !dir_agrees {
            self.inodes.invalidate_attr(dir);
            self.invalidate(Invalidate::Pages(dir));
        }
        if !agrees {
            self.listings.forget(dir);
            self.invalidate(Invalidate::Entry {
                parent: dir,
                name: name.to_vec(),
            });
            if let Some(ino) = child {
                self.content_changed(ino);
                if self.inodes.is_dir(ino) {
                    self.unwatch_within(ino);
                }
            }
            return;
        }
        if let (EntryState::Present(attr), Some(ino)) = (&change.state, child) {
            // The same file under the name: its entry stands.
            if self.holds_version(ino, attr) {
                // What this mount holds is what the server holds (its own change, whose reply
                // came first); only pages of another version go.
                self.saw_version(ino, attr);
            } else if self.holds_newer(ino, attr) {
                // Told of a state this mount has seen pass (its own later write's reply came
                // first): nothing to forget.
            } else {
                self.listings.entry_changed(dir);
                self.content_changed(ino);
            }
        }
    }

    /// Whether the attributes cached for `ino`, fresh or not, are of `attr`'s version.
    fn holds_version(&self, ino: Ino, attr: &Attr) -> bool {
        self.inodes
            .last_attr(ino)
            .is_some_and(|a| a.kind == attr.kind && a.version() == attr.version())
    }

    /// Whether the attributes cached for `ino` are of a later change than `attr`
    /// ([`change_order`]).
    fn holds_newer(&self, ino: Ino, attr: &Attr) -> bool {
        self.inodes
            .last_attr(ino)
            .is_some_and(|a| change_order(&a, attr) == Some(std::cmp::Ordering::Greater))
    }

    /// The file behind `ino` may hold other content or attributes than cached.
    fn content_changed(&self, ino: Ino) {
        self.inodes.invalidate_attr(ino);
        self.cache.invalidate_file(ino);
        self.pages_unknown(ino);
        self.invalidate(Invalidate::Pages(ino));
    }

    /// A directory that went or moved, or whose entry changed: it and every watched directory
    /// beneath it are watched no more, as far as this mount knows. The server's watches of
    /// the ones beneath still name them by their old paths, so a notice from them may never
    /// find them here; they are watched again under their new paths when next used.
    pub(crate) fn unwatch_within(&self, dir: Ino) {
        let watched: Vec<Ino> = self.push.watched.lock().keys().copied().collect();
        if watched.is_empty() {
            return;
        }
        let gone = self.inodes.within(dir, watched);
        let mut watched = self.push.watched.lock();
        let mut own = self.push.own.lock();
        for d in gone {
            watched.remove(&d);
            if let Some(names) = own.by_dir.remove(&d) {
                own.count -= names.len();
            }
        }
    }

    fn changed_dir(&self, dir: Ino) {
        self.listings.forget(dir);
        self.inodes.invalidate_attr(dir);
        self.invalidate(Invalidate::Pages(dir));
    }

    /// Every watched directory as if all its names changed, and watched again.
    fn changed_everything(&self) {
        let dirs: Vec<Ino> = self.push.watched.lock().drain().map(|(d, _)| d).collect();
        *self.push.own.lock() = OwnNames::default();
        for dir in dirs {
            self.changed_dir(dir);
            for (name, child) in self.inodes.children_of(dir) {
                self.inodes.invalidate_attr(child);
                self.cache.invalidate_file(child);
                self.invalidate(Invalidate::Entry { parent: dir, name });
            }
            self.want_watched(dir);
        }
    }

    /// The node of a directory path known here, walking down from the root.
    fn resolve(&self, path: &[u8]) -> Option<Ino> {
        let mut at = ROOT_INO;
        if path.is_empty() {
            return Some(at);
        }
        for name in path.split(|&b| b == b'/') {
            at = self.inodes.child(at, name)?;
        }
        Some(at)
    }
}
