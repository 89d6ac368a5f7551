//! `shelfd ROOT`: parses arguments and calls `shelf_server::run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Serve a directory as a shelf library over TCP.
///
/// Prints `listening on HOST:PORT` as its first line on stdout; logs go to stderr.
#[derive(Debug, Parser)]
#[command(name = "shelfd", version)]
struct Args {
    /// The directory to serve
    root: PathBuf,

    /// Address to listen on
    ///
    /// HOST:PORT; port 0 picks a free port, shown on the first line of stdout. Listens on
    /// loopback only unless told otherwise: the protocol is not encrypted.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7878")]
    listen: String,

    /// Refuse every change with EROFS
    #[arg(long)]
    read_only: bool,

    /// Require the shared secret held in FILE
    ///
    /// The token is the file's content without its trailing line endings. Clients must present
    /// it in their handshake; it is compared in constant time and never logged.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Most connections served at once
    ///
    /// Each connection is one child process. Clients past the limit get a "server busy"
    /// error and are disconnected.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_clients: u32,

    /// Close connections idle this long (0: never)
    ///
    /// A connection is idle while it has no request in flight. Clients reconnect by
    /// themselves; the protocol holds no server-side state between requests.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    idle_timeout: u64,

    /// Seconds a stopping server waits for connections to end by themselves
    ///
    /// On SIGTERM or SIGINT shelfd stops accepting at once. Connections still open after this
    /// long are ended: their requests in flight finish and their unfinished uploads are
    /// removed. A second signal ends them without waiting.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    shutdown_grace: u64,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_filter)]
    log_level: EnvFilter,
}

fn parse_filter(s: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(args.log_level.clone())
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shelfd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = shelf_server::Config::new(args.root);
    cfg.listen = args.listen;
    cfg.max_clients = args.max_clients as usize;
    cfg.serve.read_only = args.read_only;
    cfg.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    cfg.serve.idle_timeout = match args.idle_timeout {
        0 => None,
        secs => Some(Duration::from_secs(secs)),
    };
    if let Some(path) = &args.token_file {
        let token = shelf_server::read_token_file(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?;
        cfg.serve.token = Some(token);
    }
    shelf_server::run(&cfg)?;
    Ok(())
}
