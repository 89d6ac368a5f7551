//! `shelf`: parses the command line and hands it to `shelf_client::cli::run`.

use std::process::ExitCode;

use clap::Parser;
use shelf_client::cli::{effective_args, run, Cli};

fn main() -> ExitCode {
    run(Cli::parse_from(effective_args(
        std::env::args_os().collect(),
    )))
}
