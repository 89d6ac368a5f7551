//! [`Freshness`]: how long something cached may be trusted without asking the server.
//!
//! Two TTLs (docs in `CoreConfig`): the long one for what the server pushes changes of, the
//! short one for the rest. What decides is *when the data was asked for*, not when it
//! arrived: a `Stat` sent on one connection before the directory's watch was in force on
//! another may have read the file before a change that no notice will tell. So a cached value
//! gets the long TTL only if it was asked for after the watch of the directory that would
//! tell its changes was confirmed (`push.rs`), and the short one otherwise.

use std::time::{Duration, Instant};

/// The rule for one cached value's directory, taken at one moment (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// The TTL of what is not pushed.
    pub short: Duration,
    /// The TTL of what is pushed.
    pub long: Duration,
    /// When the watch that tells this value's changes was confirmed; `None`: not watched.
    pub since: Option<Instant>,
}

impl Freshness {
    /// Whether a value asked for at `asked` may still be used.
    pub fn ok(&self, asked: Instant) -> bool {
        asked.elapsed() < self.ttl(asked)
    }

    /// The TTL of a value asked for at `asked`.
    pub fn ttl(&self, asked: Instant) -> Duration {
        match self.since {
            Some(since) if asked >= since => self.long.max(self.short),
            _ => self.short,
        }
    }

    /// What the kernel may be told to keep a value asked for at `asked`: the rest of its TTL.
    pub fn kernel_ttl(&self, asked: Instant) -> Duration {
        self.ttl(asked).saturating_sub(asked.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_secs(1);
    const LONG: Duration = Duration::from_secs(600);

    fn rule(since: Option<Instant>) -> Freshness {
        Freshness {
            short: SHORT,
            long: LONG,
            since,
        }
    }

    #[test]
    fn only_what_was_asked_for_after_the_watch_gets_the_long_ttl() {
        let before = Instant::now();
        let watched = before + Duration::from_millis(5);
        let after = watched + Duration::from_millis(5);
        assert_eq!(rule(None).ttl(after), SHORT, "not watched");
        assert_eq!(
            rule(Some(watched)).ttl(before),
            SHORT,
            "asked before the watch"
        );
        assert_eq!(rule(Some(watched)).ttl(watched), LONG);
        assert_eq!(rule(Some(watched)).ttl(after), LONG);
    }

    #[test]
    fn a_value_ages_out_and_the_kernel_is_told_only_what_is_left() {
        let now = Instant::now();
        let old = now.checked_sub(Duration::from_secs(2)).expect("uptime");
        assert!(!rule(None).ok(old), "past the short TTL");
        assert!(rule(Some(old)).ok(old), "within the long TTL");
        assert!(rule(Some(old)).kernel_ttl(old) <= LONG - Duration::from_secs(2));
        assert_eq!(rule(None).kernel_ttl(old), Duration::ZERO);
        let zero = Freshness {
            short: Duration::ZERO,
            long: Duration::ZERO,
            since: Some(old),
        };
        assert!(!zero.ok(now), "a zero TTL trusts nothing");
    }
}
