//! `shelf-chaos`: the chaos run (`scripts/chaos.sh` runs it; see `shelf_tests::chaos`).
//! Exits 1 if any promise was broken.
//!
//! shelf-chaos [--secs S] [--seed N] [--fault-every-ms MS]

use std::process::ExitCode;
use std::time::Duration;

use shelf_tests::chaos::{run, ChaosConfig};

fn main() -> ExitCode {
    let mut cfg = ChaosConfig {
        duration: Duration::from_secs(3600),
        ..ChaosConfig::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let Some(v) = args.next().and_then(|v| v.parse::<u64>().ok()) else {
            eprintln!(
                "shelf-chaos: {a} needs a number (usage: --secs S --seed N --fault-every-ms MS)"
            );
            return ExitCode::from(2);
        };
        match a.as_str() {
            "--secs" => cfg.duration = Duration::from_secs(v),
            "--seed" => cfg.seed = v,
            "--fault-every-ms" => cfg.fault_every = Duration::from_millis(v),
            other => {
                eprintln!("shelf-chaos: unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let report = run(&cfg);
    print!("{}", report.summary());
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
