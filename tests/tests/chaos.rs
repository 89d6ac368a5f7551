//! The chaos run, short (issue #14): see `shelf_tests::chaos` for what it does and checks.
//! `scripts/chaos.sh` runs the same for an hour.

use std::time::Duration;

use shelf_tests::chaos::{run, ChaosConfig};
use shelf_tests::fuse_available;

// It found a bug once (a rename whose reply was lost left the mount writing to the replaced
// file's hidden name: `core/tests/lost_replies.rs`), about 2 in 750,000 operations under load.
#[test]
fn under_kills_stalls_cuts_and_a_full_disk_no_acknowledged_byte_is_lost_or_mixed() {
    if !fuse_available() {
        return;
    }
    let seed = std::env::var("SHELF_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let report = run(&ChaosConfig {
        duration: Duration::from_secs(40),
        seed,
        ..ChaosConfig::default()
    });
    eprint!("{}", report.summary());
    assert!(
        report.violations.is_empty(),
        "seed {seed}:\n{}",
        report.summary()
    );
    // The run proves something only if the faults happened and work went on between them.
    let faults: u64 = report.faults.values().sum();
    assert!(faults >= 5, "only {faults} faults: {:?}", report.faults);
    for kind in ["write", "read", "put", "get"] {
        assert!(
            report.ok.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} succeeded: {}",
            report.summary()
        );
    }
    assert!(report.files_checked > 0);
}
