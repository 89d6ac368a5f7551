//! Whole-directory knowledge: for a directory this mount listed or made within the TTL, the
//! full set of its names, kept up to date with this mount's own changes.
//!
//! Why: the kernel looks a name up before every `open(O_CREAT)`, `mkdir` and `symlink`, so
//! creating a file costs two round trips, the first one only to hear "no such file". A fresh
//! complete listing answers that at once. It is as fresh as the kernel's own negative dentries
//! (which the same TTL bounds): another client's new file shows within one TTL.
//!
//! What keeps it right:
//! - Only names that exist matter: a name this set lacks is answered "absent" without asking.
//!   So every change of this mount that *adds* a name must call [`Listings::added`], and one
//!   whose outcome is unknown (an error, maybe after the server acted) must call
//!   [`Listings::forget`] instead. A name missing from the server but still in the set merely
//!   costs a round trip.
//! - Bounded: a listing longer than [`MAX_NAMES`] is not kept, and at most [`MAX_DIRS`]
//!   directories are, the stale ones dropped first.
//!
//! A listing may also keep its entries with their attributes, so that an `opendir` of a
//! directory whose changes the server pushes need not ask again (warm `find`, `ls -lR`), and a
//! lookup of a name in it is answered without a round trip. Those go at the first change of
//! this mount's own in the directory (the names are kept up to date, the entries are not), and
//! are bounded by [`MAX_KEPT_ENTRIES`] in all.
//!
//! Walks prime listings: a program that stats many names of a directory it never listed
//! (`git status`, `make`, `tar c`) would pay one round trip per name, which at a 20 ms round
//! trip is the whole cost. From the [`PRIME_AFTER`]th lookup that had to ask the server and
//! found its name, in a directory without a fresh listing, the lookup lists the directory
//! instead ([`Listings::worth_listing`]) and the rest are answered from it. Directories too
//! large to keep whole are not listed again for lookups for a while ([`BIG_FOR`]).
//!
//! A listing asked for before this mount's latest change in the directory is not kept: it
//! may lack a name just made here, or show a file's attributes from before a write that was
//! drained meanwhile, and nothing would correct it for a TTL ([`Listings::keep`]).
//!
//! Listings asked for ahead of a walk (`ahead.rs`) wait here, marked, until the `opendir`
//! they were asked for takes them ([`Listings::take_ahead`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use shelf_proto::{DirEntry, FileKind};

use crate::fresh::Freshness;
use crate::ids::Ino;

/// Listings longer than this are not kept (memory; such directories are rarely created in).
pub const MAX_NAMES: usize = 16 * 1024;
/// Directories kept at most.
pub const MAX_DIRS: usize = 256;
/// Entries with attributes kept at most, over all listings (about 200 bytes each).
pub const MAX_KEPT_ENTRIES: usize = 64 * 1024;
/// A listing with more entries than this keeps its names only.
const MAX_ENTRIES_PER_DIR: usize = MAX_KEPT_ENTRIES / 8;
/// The lookup that lists its directory: the first asked-for name may be the only one a
/// program wants (a `stat` of one path), the second is the sign of a walk.
pub const PRIME_AFTER: u32 = 2;
/// Lookups asking the server count towards a walk only within this long of the first.
const WALK_WINDOW: Duration = Duration::from_secs(1);
/// A directory whose listing was too large to keep whole is not listed for lookups again for
/// this long (listing it costs the server a stat per entry).
pub const BIG_FOR: Duration = Duration::from_secs(60);
/// A directory larger than this (its `st_size`: on ext4 about 8,000 entries of short names)
/// is not listed for lookups: the listing would likely be too large to keep.
pub const MAX_PRIMED_DIR_BYTES: u64 = 256 * 1024;
/// Directories whose walks are counted at most (a few bytes each).
const MAX_WALKS: usize = 1024;
/// Directories whose latest own change is remembered at most (`Dirs::touched`).
const MAX_TOUCHED: usize = 4096;
/// Entries [`Listings::dirs_after`] looks at, at most, for one walk step.
const MAX_SCAN: usize = 4096;

/// See the module docs.
pub struct Listings {
    ttl: Duration,
    dirs: Mutex<Dirs>,
}

#[derive(Default)]
struct Dirs {
    by_dir: HashMap<Ino, Listing>,
    /// Entries kept in all `Listing::entries`.
    kept_entries: usize,
    /// Directories without a fresh listing in which lookups asked the server.
    walks: HashMap<Ino, Walk>,
    /// When this mount last changed each directory's names or entries (or learned they
    /// changed): a listing asked for before then is not kept.
    touched: HashMap<Ino, Instant>,
    /// When `touched` was last cleared (its bound): a listing asked for before then is not
    /// kept either, since a change it missed may have been forgotten.
    touched_since: Option<Instant>,
}

struct Listing {
    at: Instant,
    /// Listed for lookups (a walk), not by a program: its names answer lookups but never
    /// "absent" (below).
    primed: bool,
    /// Each name, with its index in `entries` while they are kept (`NO_ENTRY` otherwise).
    names: HashMap<Vec<u8>, u32>,
    entries: Option<Arc<Vec<DirEntry>>>,
    /// Asked for ahead of a walk and not yet taken by an `opendir` (`ahead.rs`).
    ahead: bool,
}

const NO_ENTRY: u32 = u32::MAX;

/// Lookups that asked the server in one directory.
#[derive(Clone, Copy)]
struct Walk {
    first: Instant,
    asked: u32,
    /// Set while a lookup lists the directory (the others ask as before, not twice), and
    /// when the listing was too large to keep (then until `BIG_FOR` has passed).
    listing: bool,
    big_since: Option<Instant>,
}

impl Dirs {
    fn insert(&mut self, dir: Ino, listing: Listing) {
        self.kept_entries += listing.entries.as_ref().map_or(0, |e| e.len());
        if let Some(old) = self.by_dir.insert(dir, listing) {
            self.kept_entries -= old.entries.map_or(0, |e| e.len());
        }
    }

    fn remove(&mut self, dir: &Ino) {
        if let Some(old) = self.by_dir.remove(dir) {
            self.kept_entries -= old.entries.map_or(0, |e| e.len());
        }
    }

    /// Notes a change of `dir` made or learned now.
    fn touch(&mut self, dir: Ino) {
        if self.touched.len() >= MAX_TOUCHED && !self.touched.contains_key(&dir) {
            self.touched.clear();
            self.touched_since = Some(Instant::now());
        }
        self.touched.insert(dir, Instant::now());
    }

    /// Whether `dir` may have changed here since `asked`.
    fn touched_after(&self, dir: Ino, asked: Instant) -> bool {
        self.touched_since.is_some_and(|t| t > asked)
            || self.touched.get(&dir).is_some_and(|t| *t >= asked)
    }

    fn drop_entries(&mut self, dir: &Ino) {
        if let Some(l) = self.by_dir.get_mut(dir) {
            self.kept_entries -= l.entries.take().map_or(0, |e| e.len());
        }
    }

    /// Makes room for `n` more kept entries, dropping those of the oldest listings.
    fn room_for(&mut self, n: usize) {
        while self.kept_entries + n > MAX_KEPT_ENTRIES {
            let oldest = self
                .by_dir
                .iter()
                .filter(|(_, l)| l.entries.is_some())
                .min_by_key(|(_, l)| l.at)
                .map(|(d, _)| *d);
            match oldest {
                Some(d) => self.drop_entries(&d),
                None => return,
            }
        }
    }
}

impl Listings {
    /// A zero `ttl` keeps nothing: every lookup asks the server.
    pub fn new(ttl: Duration) -> Self {
        Listings {
            ttl,
            dirs: Mutex::new(Dirs::default()),
        }
    }

    /// Records the complete listing of `dir`, as the server gave it to a request sent at
    /// `asked` (its age counts from then: `fresh.rs`).
    pub fn listed<'a>(&self, dir: Ino, names: impl IntoIterator<Item = &'a [u8]>, asked: Instant) {
        self.keep_listing(dir, names, None, asked, false);
    }

    /// The same, keeping the entries too, for [`entries`](Self::entries). `primed`: listed
    /// for a walk's lookups, not by a program; such a listing does not answer "absent".
    /// Why: before walks, a lookup of a name in a directory no program had just listed always
    /// asked the server, so a file another client made a moment ago was found at once; a
    /// walk should make finding names cheaper, not that slower.
    pub fn listed_entries(
        &self,
        dir: Ino,
        entries: &Arc<Vec<DirEntry>>,
        asked: Instant,
        primed: bool,
    ) {
        let names = entries.iter().map(|e| e.name.as_slice());
        self.keep_listing(dir, names, Some(Arc::clone(entries)), asked, primed);
    }

    /// Keeps `entries` of `dir`, asked for ahead of a walk, for [`take_ahead`](Self::take_ahead).
    /// Until then it answers lookups like a walk's listing (`primed`).
    pub(crate) fn listed_ahead(&self, dir: Ino, entries: &Arc<Vec<DirEntry>>, asked: Instant) {
        self.listed_entries(dir, entries, asked, true);
        let mut dirs = self.dirs.lock();
        if let Some(l) = dirs.by_dir.get_mut(&dir) {
            if l.at == asked && l.entries.is_some() {
                l.ahead = true;
            }
        }
    }

    /// The entries of `dir` asked for ahead of a walk, if still fresh by `rule`: once. From
    /// then on they are the listing a program read.
    pub(crate) fn take_ahead(
        &self,
        dir: Ino,
        rule: &Freshness,
    ) -> Option<(Arc<Vec<DirEntry>>, Instant)> {
        let mut dirs = self.dirs.lock();
        let l = dirs.by_dir.get_mut(&dir).filter(|l| l.ahead)?;
        l.ahead = false;
        if l.at.elapsed() >= self.ttl || !rule.ok(l.at) {
            return None;
        }
        l.primed = false;
        Some((Arc::clone(l.entries.as_ref()?), l.at))
    }

    /// The names of up to `max` subdirectories of `parent` that come after `name` in its
    /// kept entries (fresh by `rule`), then those before it: where a walk that entered `name`
    /// goes next. Only those of at most `max_bytes` (`st_size`); none if `parent`'s entries
    /// are not kept.
    pub(crate) fn dirs_after(
        &self,
        parent: Ino,
        name: &[u8],
        rule: &Freshness,
        max: usize,
        max_bytes: u64,
    ) -> Vec<Vec<u8>> {
        let dirs = self.dirs.lock();
        let Some(l) = dirs.by_dir.get(&parent) else {
            return Vec::new();
        };
        let (Some(entries), Some(&at)) = (&l.entries, l.names.get(name)) else {
            return Vec::new();
        };
        if l.at.elapsed() >= self.ttl || !rule.ok(l.at) {
            return Vec::new();
        }
        let (before, after) = entries.split_at((at as usize + 1).min(entries.len()));
        after
            .iter()
            .chain(before.iter())
            .take(MAX_SCAN)
            .filter(|e| e.name != name && e.attr.kind == FileKind::Dir)
            .filter(|e| e.attr.size <= max_bytes)
            .take(max)
            .map(|e| e.name.clone())
            .collect()
    }

    fn keep_listing<'a>(
        &self,
        dir: Ino,
        names: impl IntoIterator<Item = &'a [u8]>,
        entries: Option<Arc<Vec<DirEntry>>>,
        asked: Instant,
        primed: bool,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        // A listing too long to keep whole keeps its names only.
        let entries = entries.filter(|e| e.len() <= MAX_ENTRIES_PER_DIR);
        let mut set = HashMap::new();
        for (k, name) in names.into_iter().enumerate() {
            if set.len() == MAX_NAMES {
                self.dirs.lock().remove(&dir);
                return;
            }
            let index = match &entries {
                Some(_) => u32::try_from(k).unwrap_or(NO_ENTRY),
                None => NO_ENTRY,
            };
            set.insert(name.to_vec(), index);
        }
        self.keep(dir, set, entries, asked, primed);
    }

    /// The kept entries of `dir` and when they were asked for, if still fresh by `rule`.
    pub(crate) fn entries(
        &self,
        dir: Ino,
        rule: &Freshness,
    ) -> Option<(Arc<Vec<DirEntry>>, Instant)> {
        let dirs = self.dirs.lock();
        let l = dirs.by_dir.get(&dir)?;
        let fresh = l.at.elapsed() < self.ttl && rule.ok(l.at);
        Some((Arc::clone(l.entries.as_ref()?), l.at)).filter(|_| fresh)
    }

    /// The attributes of `name` in `dir` from kept entries still fresh by `rule`, and when
    /// they were asked for.
    pub(crate) fn entry(
        &self,
        dir: Ino,
        name: &[u8],
        rule: &Freshness,
    ) -> Option<(shelf_proto::Attr, Instant)> {
        let dirs = self.dirs.lock();
        let l = dirs.by_dir.get(&dir)?;
        if l.at.elapsed() >= self.ttl || !rule.ok(l.at) {
            return None;
        }
        let index = *l.names.get(name)?;
        let e = l.entries.as_ref()?.get(usize::try_from(index).ok()?)?;
        Some((e.attr, l.at))
    }

    /// Whether a lookup in `dir`, which holds `dir_size` bytes by its last known attributes,
    /// should list the directory rather than ask for its one name (module docs, "Walks"). True
    /// at most once until the caller tells [`walk_listed`](Self::walk_listed) how its
    /// listing went.
    pub(crate) fn worth_listing(&self, dir: Ino, dir_size: Option<u64>, rule: &Freshness) -> bool {
        if self.ttl.is_zero() || dir_size.is_some_and(|s| s > MAX_PRIMED_DIR_BYTES) {
            return false;
        }
        let mut dirs = self.dirs.lock();
        if dirs
            .by_dir
            .get(&dir)
            .is_some_and(|l| l.at.elapsed() < self.ttl && rule.ok(l.at))
        {
            return false;
        }
        let Some(w) = dirs.walks.get_mut(&dir) else {
            return false;
        };
        if w.listing || w.big_since.is_some_and(|at| at.elapsed() < BIG_FOR) {
            return false;
        }
        if w.first.elapsed() >= WALK_WINDOW || w.asked + 1 < PRIME_AFTER {
            return false;
        }
        w.listing = true;
        true
    }

    /// A lookup in `dir` asked the server for one name, and found it.
    pub(crate) fn asked_one(&self, dir: Ino) {
        if self.ttl.is_zero() {
            return;
        }
        let mut dirs = self.dirs.lock();
        if dirs.walks.len() >= MAX_WALKS && !dirs.walks.contains_key(&dir) {
            let big = |w: &Walk| w.big_since.is_some_and(|at| at.elapsed() < BIG_FOR);
            dirs.walks.retain(|_, w| w.listing || big(w));
            if dirs.walks.len() >= MAX_WALKS {
                return;
            }
        }
        let now = Instant::now();
        let w = dirs.walks.entry(dir).or_insert(Walk {
            first: now,
            asked: 0,
            listing: false,
            big_since: None,
        });
        if w.first.elapsed() >= WALK_WINDOW {
            w.first = now;
            w.asked = 0;
        }
        w.asked = w.asked.saturating_add(1);
    }

    /// The listing a lookup started after [`worth_listing`](Self::worth_listing) ended: it
    /// failed (`None`), or the server listed `Some(n)` entries. The walk ends when they could
    /// be kept whole; a directory too large to is not listed for lookups for [`BIG_FOR`].
    pub(crate) fn walk_listed(&self, dir: Ino, listed: Option<usize>) {
        let mut dirs = self.dirs.lock();
        let Some(w) = dirs.walks.get_mut(&dir) else {
            return;
        };
        w.listing = false;
        match listed {
            Some(n) if n <= MAX_ENTRIES_PER_DIR.min(MAX_NAMES) => {
                dirs.walks.remove(&dir);
            }
            Some(_) => w.big_since = Some(Instant::now()),
            None => {}
        }
    }

    /// `dir` was just made by this mount: it is empty.
    pub fn made(&self, dir: Ino) {
        if !self.ttl.is_zero() {
            self.keep(dir, HashMap::new(), None, Instant::now(), false);
        }
    }

    fn keep(
        &self,
        dir: Ino,
        names: HashMap<Vec<u8>, u32>,
        entries: Option<Arc<Vec<DirEntry>>>,
        at: Instant,
        primed: bool,
    ) {
        let mut dirs = self.dirs.lock();
        if dirs.touched_after(dir, at) {
            // Older than a change made here: what it lacks would stand for a TTL.
            dirs.remove(&dir);
            return;
        }
        if dirs.by_dir.len() >= MAX_DIRS && !dirs.by_dir.contains_key(&dir) {
            let ttl = self.ttl;
            let stale: Vec<Ino> = dirs
                .by_dir
                .iter()
                .filter(|(_, l)| l.at.elapsed() >= ttl)
                .map(|(d, _)| *d)
                .collect();
            for d in stale {
                dirs.remove(&d);
            }
            if dirs.by_dir.len() >= MAX_DIRS {
                let oldest = dirs
                    .by_dir
                    .iter()
                    .min_by_key(|(_, l)| l.at)
                    .map(|(d, _)| *d);
                if let Some(d) = oldest {
                    dirs.remove(&d);
                }
            }
        }
        dirs.remove(&dir);
        if let Some(e) = &entries {
            dirs.room_for(e.len());
        }
        dirs.insert(
            dir,
            Listing {
                at,
                primed,
                names,
                entries,
                ahead: false,
            },
        );
    }

    /// This mount added `name` to `dir` (create, mkdir, symlink, link, rename's target).
    pub fn added(&self, dir: Ino, name: &[u8]) {
        let mut dirs = self.dirs.lock();
        dirs.touch(dir);
        dirs.drop_entries(&dir);
        let Some(l) = dirs.by_dir.get_mut(&dir) else {
            return;
        };
        if l.names.len() >= MAX_NAMES {
            dirs.remove(&dir);
        } else {
            l.names.insert(name.to_vec(), NO_ENTRY);
        }
    }

    /// This mount removed `name` from `dir`.
    pub fn removed(&self, dir: Ino, name: &[u8]) {
        let mut dirs = self.dirs.lock();
        dirs.touch(dir);
        dirs.drop_entries(&dir);
        if let Some(l) = dirs.by_dir.get_mut(&dir) {
            l.names.remove(name);
        }
    }

    /// Whether a kept listing of `dir` has `name`; `None` if none is kept.
    pub fn lists(&self, dir: Ino, name: &[u8]) -> Option<bool> {
        let dirs = self.dirs.lock();
        dirs.by_dir.get(&dir).map(|l| l.names.contains_key(name))
    }

    /// The server listed `names` for `dir` at `asked`: a kept listing that has these names,
    /// but for names `ours` says this mount changed itself (while the listing was on its
    /// way), counts from then; one that differs otherwise is forgotten (another's change).
    pub fn confirm<'a>(
        &self,
        dir: Ino,
        names: impl IntoIterator<Item = &'a [u8]>,
        asked: Instant,
        ours: impl Fn(&[u8]) -> bool,
    ) {
        let mut dirs = self.dirs.lock();
        let Some(l) = dirs.by_dir.get_mut(&dir) else {
            return;
        };
        let server: std::collections::HashSet<&[u8]> = names.into_iter().collect();
        let same = server.iter().all(|n| l.names.contains_key(*n) || ours(n))
            && l.names
                .keys()
                .all(|n| server.contains(n.as_slice()) || ours(n));
        if !same {
            dirs.remove(&dir);
        } else if asked > l.at {
            l.at = asked;
        }
    }

    /// What `dir` holds is no longer known (a change that may or may not have happened, or
    /// the directory is gone).
    pub fn forget(&self, dir: Ino) {
        let mut dirs = self.dirs.lock();
        dirs.touch(dir);
        dirs.remove(&dir);
    }

    /// This mount changed an entry of `dir` without adding or removing a name (a write, a
    /// chmod): the names stand, the kept entries' attributes do not.
    pub fn entry_changed(&self, dir: Ino) {
        let mut dirs = self.dirs.lock();
        dirs.touch(dir);
        dirs.drop_entries(&dir);
    }

    /// True when a listing of `dir` that is still fresh by `rule`, and not one primed for a
    /// walk, says `name` is not there.
    pub(crate) fn absent(&self, dir: Ino, name: &[u8], rule: &Freshness) -> bool {
        let mut dirs = self.dirs.lock();
        match dirs.by_dir.get(&dir) {
            Some(l) if l.at.elapsed() < self.ttl && rule.ok(l.at) => {
                !l.primed && !l.names.contains_key(name)
            }
            Some(_) => {
                dirs.remove(&dir);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);
    /// A rule that trusts a listing as long as the table keeps it.
    const ALWAYS: Freshness = Freshness {
        short: TTL,
        long: TTL,
        since: None,
    };

    #[test]
    fn a_listing_confirmed_by_the_server_counts_from_then_and_one_that_differs_goes() {
        let l = Listings::new(TTL);
        let made = Instant::now();
        l.made(Ino(7));
        l.added(Ino(7), b"a");
        let later = made + Duration::from_millis(5);
        let none = |_: &[u8]| false;
        l.confirm(Ino(7), [&b"a"[..]], later, none);
        assert_eq!(l.dirs.lock().by_dir[&Ino(7)].at, later);
        // A name made here after the server listed, and one removed here after it did.
        l.added(Ino(7), b"new");
        let ours = |n: &[u8]| n == b"new" || n == b"old";
        l.confirm(Ino(7), [&b"a"[..], &b"old"[..]], later, ours);
        assert_eq!(
            l.dirs.lock().by_dir[&Ino(7)].at,
            later,
            "differs by its own only"
        );
        l.confirm(Ino(7), [&b"a"[..], &b"new"[..], &b"b"[..]], later, ours);
        assert!(
            !l.dirs.lock().by_dir.contains_key(&Ino(7)),
            "another's name"
        );
        l.made(Ino(8));
        l.added(Ino(8), b"a");
        l.confirm(Ino(8), [], later, none);
        assert!(
            !l.dirs.lock().by_dir.contains_key(&Ino(8)),
            "a name the server lacks"
        );
    }

    #[test]
    fn a_fresh_listing_answers_absent_names_and_follows_own_changes() {
        let l = Listings::new(TTL);
        assert!(
            !l.absent(Ino(1), b"a", &ALWAYS),
            "nothing known: ask the server"
        );
        l.listed(Ino(1), [&b"a"[..], b"b"], Instant::now());
        assert!(!l.absent(Ino(1), b"a", &ALWAYS));
        assert!(l.absent(Ino(1), b"c", &ALWAYS));
        l.added(Ino(1), b"c");
        assert!(!l.absent(Ino(1), b"c", &ALWAYS));
        l.removed(Ino(1), b"a");
        assert!(l.absent(Ino(1), b"a", &ALWAYS));
        l.forget(Ino(1));
        assert!(
            !l.absent(Ino(1), b"zzz", &ALWAYS),
            "forgotten: ask the server"
        );
    }

    #[test]
    fn a_listing_asked_before_an_own_change_is_not_kept() {
        let l = Listings::new(TTL);
        let asked = Instant::now();
        l.added(Ino(1), b"new");
        l.listed(Ino(1), [&b"old"[..]], asked);
        assert!(
            !l.absent(Ino(1), b"new", &ALWAYS),
            "the listing lacks the name made meanwhile: not kept"
        );
        let asked = Instant::now();
        l.entry_changed(Ino(2));
        let entries = Arc::new(vec![]);
        l.listed_entries(Ino(2), &entries, asked, false);
        assert!(l.entries(Ino(2), &ALWAYS).is_none(), "nor its entries");
        l.listed_entries(Ino(2), &entries, Instant::now(), false);
        assert!(l.entries(Ino(2), &ALWAYS).is_some(), "asked after: kept");
    }

    #[test]
    fn a_listing_asked_ahead_is_taken_once_unless_an_own_change_overtook_it() {
        let l = Listings::new(TTL);
        let asked = Instant::now();
        l.entry_changed(Ino(2));
        let entries = Arc::new(vec![]);
        l.listed_ahead(Ino(2), &entries, asked);
        assert!(l.take_ahead(Ino(2), &ALWAYS).is_none(), "overtaken");
        l.listed_ahead(Ino(2), &entries, Instant::now());
        assert!(l.take_ahead(Ino(2), &ALWAYS).is_some(), "asked after: kept");
        assert!(l.take_ahead(Ino(2), &ALWAYS).is_none(), "and taken once");
        assert!(
            l.entries(Ino(2), &ALWAYS).is_some(),
            "then kept as a program's listing"
        );
        assert!(
            l.absent(Ino(2), b"x", &ALWAYS),
            "which answers absent names"
        );
    }

    #[test]
    fn a_walk_goes_to_the_subdirectories_after_the_one_it_entered() {
        let l = Listings::new(TTL);
        let attr = |kind, size| shelf_proto::Attr {
            ino: 9,
            kind,
            perm: 0o755,
            nlink: 1,
            size,
            blocks: 0,
            blksize: 4096,
            atime: Default::default(),
            mtime: Default::default(),
            ctime: Default::default(),
            btime: Default::default(),
        };
        let entry = |name: &str, kind, size| DirEntry {
            name: name.as_bytes().to_vec(),
            attr: attr(kind, size),
        };
        let entries = Arc::new(vec![
            entry("a", FileKind::Dir, 4096),
            entry("b", FileKind::File, 10),
            entry("c", FileKind::Dir, 1 << 20),
            entry("d", FileKind::Dir, 4096),
            entry("e", FileKind::Dir, 4096),
        ]);
        l.listed_entries(Ino(1), &entries, Instant::now(), false);
        let after = |name: &[u8], max| l.dirs_after(Ino(1), name, &ALWAYS, max, 64 * 1024);
        assert_eq!(
            after(b"a", 9),
            [b"d".to_vec(), b"e".to_vec()],
            "small dirs only"
        );
        assert_eq!(after(b"d", 9), [b"e".to_vec(), b"a".to_vec()], "then round");
        assert_eq!(after(b"d", 1), [b"e".to_vec()], "at most max");
        assert!(after(b"zz", 9).is_empty(), "a name not listed");
        assert!(l.dirs_after(Ino(2), b"a", &ALWAYS, 9, 1 << 30).is_empty());
    }

    #[test]
    fn a_made_directory_is_empty_and_others_are_unknown() {
        let l = Listings::new(TTL);
        l.made(Ino(7));
        assert!(l.absent(Ino(7), b"x", &ALWAYS));
        assert!(!l.absent(Ino(8), b"x", &ALWAYS));
        l.added(Ino(8), b"x");
        assert!(
            !l.absent(Ino(8), b"y", &ALWAYS),
            "adding to an unknown directory knows nothing"
        );
    }

    #[test]
    fn listings_expire_and_a_zero_ttl_keeps_none() {
        let l = Listings::new(Duration::from_millis(20));
        l.made(Ino(1));
        assert!(l.absent(Ino(1), b"x", &ALWAYS));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!l.absent(Ino(1), b"x", &ALWAYS), "expired: ask the server");

        // Within the table's TTL but past the rule's: the rule decides.
        let short = Freshness {
            short: Duration::from_millis(10),
            long: TTL,
            since: None,
        };
        let asked = Instant::now();
        let l = Listings::new(TTL);
        l.listed(Ino(3), [&b"a"[..]], asked);
        assert!(l.absent(Ino(3), b"x", &short));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!l.absent(Ino(3), b"x", &short), "unwatched: the short TTL");
        l.listed(Ino(3), [&b"a"[..]], asked);
        let watched_before = Freshness {
            since: Some(asked),
            ..short
        };
        assert!(
            l.absent(Ino(3), b"x", &watched_before),
            "watched: the long TTL"
        );

        let off = Listings::new(Duration::ZERO);
        off.made(Ino(1));
        off.listed(Ino(2), [&b"a"[..]], Instant::now());
        assert!(!off.absent(Ino(1), b"x", &ALWAYS));
        assert!(!off.absent(Ino(2), b"x", &ALWAYS));
    }

    #[test]
    fn memory_is_bounded() {
        let l = Listings::new(TTL);
        let many: Vec<Vec<u8>> = (0..=MAX_NAMES)
            .map(|i| i.to_string().into_bytes())
            .collect();
        l.listed(Ino(1), many.iter().map(|n| n.as_slice()), Instant::now());
        assert!(
            !l.absent(Ino(1), b"x", &ALWAYS),
            "too long a listing is not kept"
        );

        l.listed(
            Ino(2),
            many[..MAX_NAMES].iter().map(|n| n.as_slice()),
            Instant::now(),
        );
        assert!(l.absent(Ino(2), b"x", &ALWAYS));
        l.added(Ino(2), b"one more");
        assert!(
            !l.absent(Ino(2), b"x", &ALWAYS),
            "grown past the bound: dropped"
        );

        for d in 0..(MAX_DIRS as u64 + 10) {
            l.made(Ino(100 + d));
        }
        assert!(l.dirs.lock().by_dir.len() <= MAX_DIRS);
        assert!(
            l.absent(Ino(100 + MAX_DIRS as u64 + 9), b"x", &ALWAYS),
            "the newest is kept"
        );
    }
}
