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

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::ids::Ino;

/// Listings longer than this are not kept (memory; such directories are rarely created in).
pub const MAX_NAMES: usize = 16 * 1024;
/// Directories kept at most.
pub const MAX_DIRS: usize = 256;

/// See the module docs.
pub struct Listings {
    ttl: Duration,
    dirs: Mutex<HashMap<Ino, Listing>>,
}

struct Listing {
    at: Instant,
    names: HashSet<Vec<u8>>,
}

impl Listings {
    /// A zero `ttl` keeps nothing: every lookup asks the server.
    pub fn new(ttl: Duration) -> Self {
        Listings {
            ttl,
            dirs: Mutex::new(HashMap::new()),
        }
    }

    /// Records the complete listing of `dir`, as the server gave it just now.
    pub fn listed<'a>(&self, dir: Ino, names: impl IntoIterator<Item = &'a [u8]>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut set = HashSet::new();
        for name in names {
            if set.len() == MAX_NAMES {
                self.forget(dir);
                return;
            }
            set.insert(name.to_vec());
        }
        self.keep(dir, set);
    }

    /// `dir` was just made by this mount: it is empty.
    pub fn made(&self, dir: Ino) {
        if !self.ttl.is_zero() {
            self.keep(dir, HashSet::new());
        }
    }

    fn keep(&self, dir: Ino, names: HashSet<Vec<u8>>) {
        let mut dirs = self.dirs.lock();
        if dirs.len() >= MAX_DIRS && !dirs.contains_key(&dir) {
            let ttl = self.ttl;
            dirs.retain(|_, l| l.at.elapsed() < ttl);
            if dirs.len() >= MAX_DIRS {
                let oldest = dirs.iter().min_by_key(|(_, l)| l.at).map(|(d, _)| *d);
                if let Some(d) = oldest {
                    dirs.remove(&d);
                }
            }
        }
        dirs.insert(
            dir,
            Listing {
                at: Instant::now(),
                names,
            },
        );
    }

    /// This mount added `name` to `dir` (create, mkdir, symlink, link, rename's target).
    pub fn added(&self, dir: Ino, name: &[u8]) {
        let mut dirs = self.dirs.lock();
        let Some(l) = dirs.get_mut(&dir) else { return };
        if l.names.len() >= MAX_NAMES {
            dirs.remove(&dir);
        } else {
            l.names.insert(name.to_vec());
        }
    }

    /// This mount removed `name` from `dir`.
    pub fn removed(&self, dir: Ino, name: &[u8]) {
        if let Some(l) = self.dirs.lock().get_mut(&dir) {
            l.names.remove(name);
        }
    }

    /// What `dir` holds is no longer known (a change that may or may not have happened, or
    /// the directory is gone).
    pub fn forget(&self, dir: Ino) {
        self.dirs.lock().remove(&dir);
    }

    /// True when a fresh listing of `dir` says `name` is not there.
    pub fn absent(&self, dir: Ino, name: &[u8]) -> bool {
        let mut dirs = self.dirs.lock();
        match dirs.get(&dir) {
            Some(l) if l.at.elapsed() < self.ttl => !l.names.contains(name),
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

    #[test]
    fn a_fresh_listing_answers_absent_names_and_follows_own_changes() {
        let l = Listings::new(TTL);
        assert!(!l.absent(Ino(1), b"a"), "nothing known: ask the server");
        l.listed(Ino(1), [&b"a"[..], b"b"]);
        assert!(!l.absent(Ino(1), b"a"));
        assert!(l.absent(Ino(1), b"c"));
        l.added(Ino(1), b"c");
        assert!(!l.absent(Ino(1), b"c"));
        l.removed(Ino(1), b"a");
        assert!(l.absent(Ino(1), b"a"));
        l.forget(Ino(1));
        assert!(!l.absent(Ino(1), b"zzz"), "forgotten: ask the server");
    }

    #[test]
    fn a_made_directory_is_empty_and_others_are_unknown() {
        let l = Listings::new(TTL);
        l.made(Ino(7));
        assert!(l.absent(Ino(7), b"x"));
        assert!(!l.absent(Ino(8), b"x"));
        l.added(Ino(8), b"x");
        assert!(
            !l.absent(Ino(8), b"y"),
            "adding to an unknown directory knows nothing"
        );
    }

    #[test]
    fn listings_expire_and_a_zero_ttl_keeps_none() {
        let l = Listings::new(Duration::from_millis(20));
        l.made(Ino(1));
        assert!(l.absent(Ino(1), b"x"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!l.absent(Ino(1), b"x"), "expired: ask the server");

        let off = Listings::new(Duration::ZERO);
        off.made(Ino(1));
        off.listed(Ino(2), [&b"a"[..]]);
        assert!(!off.absent(Ino(1), b"x"));
        assert!(!off.absent(Ino(2), b"x"));
    }

    #[test]
    fn memory_is_bounded() {
        let l = Listings::new(TTL);
        let many: Vec<Vec<u8>> = (0..=MAX_NAMES)
            .map(|i| i.to_string().into_bytes())
            .collect();
        l.listed(Ino(1), many.iter().map(|n| n.as_slice()));
        assert!(!l.absent(Ino(1), b"x"), "too long a listing is not kept");

        l.listed(Ino(2), many[..MAX_NAMES].iter().map(|n| n.as_slice()));
        assert!(l.absent(Ino(2), b"x"));
        l.added(Ino(2), b"one more");
        assert!(!l.absent(Ino(2), b"x"), "grown past the bound: dropped");

        for d in 0..(MAX_DIRS as u64 + 10) {
            l.made(Ino(100 + d));
        }
        assert!(l.dirs.lock().len() <= MAX_DIRS);
        assert!(
            l.absent(Ino(100 + MAX_DIRS as u64 + 9), b"x"),
            "the newest is kept"
        );
    }
}
