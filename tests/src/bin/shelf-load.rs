//! `shelf-load`: the load benchmark's workload (`bench/load.sh` runs it; see
//! `shelf_tests::loadgen`). Prints operations per second and p50/p99 latency per kind of
//! operation, and exits 1 if any operation failed or gave a wrong result.
//!
//! shelf-load --addr HOST:PORT [--mount DIR]... [--clients N] [--workers-per-mount N]
//!            [--secs S] [--scratch DIR] [--shelf-option OPT]... [--timeout S]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use shelf_tests::loadgen::{run, LoadConfig};

fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect()) {
        Ok(cfg) => {
            let report = run(&cfg);
            print!("{}", report.table());
            for p in &report.problems {
                eprintln!("shelf-load: {p}");
            }
            if report.failed + report.wrong == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("shelf-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse(args: Vec<String>) -> Result<LoadConfig, String> {
    let mut cfg = LoadConfig {
        addr: String::new(),
        cli_options: Vec::new(),
        clients: 256,
        mounts: Vec::new(),
        workers_per_mount: 4,
        duration: Duration::from_secs(60),
        scratch: std::env::temp_dir(),
        run_id: format!("{}", std::process::id()),
        command_timeout: Duration::from_secs(120),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{a}: not a number: {v:?}"))
        };
        match a.as_str() {
            "--addr" => cfg.addr = value()?,
            "--mount" => cfg.mounts.push(PathBuf::from(value()?)),
            "--clients" => cfg.clients = number(value()?)? as usize,
            "--workers-per-mount" => cfg.workers_per_mount = number(value()?)? as usize,
            "--secs" => cfg.duration = Duration::from_secs(number(value()?)?),
            "--timeout" => cfg.command_timeout = Duration::from_secs(number(value()?)?),
            "--scratch" => cfg.scratch = PathBuf::from(value()?),
            "--shelf-option" => cfg.cli_options.push(value()?),
            other => return Err(format!("unknown argument {other:?} (see the source's doc)")),
        }
    }
    if cfg.addr.is_empty() {
        return Err("--addr HOST:PORT is required".into());
    }
    Ok(cfg)
}
