//! `shelfd ROOT`: parses arguments and calls `shelf_server::run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Serve a directory as a shelf library over TCP.
///
/// Prints `listening on HOST:PORT` as its first line on stdout and `fingerprint SHA256:...`
/// (the server key's, for clients to pin) as its second; logs go to stderr.
#[derive(Debug, Parser)]
#[command(name = "shelfd", version)]
struct Args {
    /// The directory to serve
    root: PathBuf,

    /// Address to listen on
    ///
    /// HOST:PORT; port 0 picks a free port, shown on the first line of stdout. Every
    /// connection is TLS 1.3 unless --insecure-plaintext.
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
    /// Each connection is one child process. A connection past the limit waits up to
    /// --queue-wait for a child to exit; then it gets a "server busy" error and is
    /// disconnected, and shelf clients try again with backoff (shelf --busy-wait).
    /// A child costs about 1.6 MB (PSS) and 5 threads idle, up to 10 MB while streaming:
    /// the default 256 stays within 2.5 GB and 1,280 threads at worst (README, "The server").
    /// A mount holds up to 4 connections (--connections).
    #[arg(long, value_name = "N", default_value_t = shelf_server::listen::DEFAULT_MAX_CLIENTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_clients: u32,

    /// Milliseconds a connection past --max-clients waits for room before it is refused
    ///
    /// At most 256 wait at once; more are refused at once. 0: refuse at once.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    queue_wait: u64,

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

    /// Where the server's key pair lives (created on first start, never inside the library)
    ///
    /// Default: $STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/shelfd for root,
    /// else $XDG_STATE_HOME/shelfd or ~/.local/state/shelfd.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Admit the client keys listed in FILE
    ///
    /// One key a line: `[read-only] shelf-key BASE64 [comment]`, as `shelf keygen` prints it;
    /// `#` comments and blank lines allowed. Re-read for every new connection, so a key removed
    /// is refused from the next connection on. A `read-only` key gets EROFS for every change.
    /// With --token-file too, either the key or the token admits a client.
    #[arg(long, value_name = "FILE")]
    authorized_keys: Option<PathBuf>,

    /// Serve plain TCP without TLS: no encryption, no server key (benchmarks, trusted
    /// loopback only). Clients must pass --insecure-plaintext as well.
    #[arg(long)]
    insecure_plaintext: bool,

    /// Directories one mount may watch for change push (0: push nothing)
    ///
    /// Each watch costs the kernel about 1 KiB; the watches of all mounts count against the
    /// server user's fs.inotify.max_user_watches, and each watching mount takes one of its
    /// fs.inotify.max_user_instances (128 by default). What is not watched is on the client's
    /// short TTL (1 s), and `shelf status` counts it as refused.
    #[arg(long, value_name = "N", default_value_t = shelf_server::watch::MAX_WATCHES)]
    max_watches: usize,

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
    cfg.queue_wait = Duration::from_millis(args.queue_wait);
    cfg.serve.read_only = args.read_only;
    cfg.serve.max_watches = args.max_watches;
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
    if let Some(path) = &args.authorized_keys {
        // Checked now so a typo shows at start, not as every client refused; it is read
        // again for every connection.
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read authorized keys {}", path.display()))?;
        let keys = shelf_secure::files::parse_authorized_keys(&text, path)?;
        tracing::info!(keys = keys.len(), file = %path.display(), "authorized keys");
        cfg.serve.authorized_keys = Some(std::path::absolute(path)?);
    }
    if args.insecure_plaintext {
        if args.authorized_keys.is_some() {
            anyhow::bail!("--authorized-keys needs TLS: drop --insecure-plaintext");
        }
    } else {
        let dir = match args.state_dir {
            Some(d) => d,
            None => default_state_dir()?,
        };
        cfg.tls = Some(server_identity(&dir, &cfg.root)?);
    }
    shelf_server::run(&cfg)?;
    Ok(())
}

/// The default state directory (see `--state-dir`).
fn default_state_dir() -> anyhow::Result<PathBuf> {
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("STATE_DIRECTORY") {
        // systemd may list several, separated by colons: the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return Ok(PathBuf::from(first));
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/shelfd"));
    }
    if let Some(d) = env("XDG_STATE_HOME") {
        return Ok(d.join("shelfd"));
    }
    match env("HOME") {
        Some(home) => Ok(home.join(".local/state/shelfd")),
        None => anyhow::bail!("no state directory: pass --state-dir DIR"),
    }
}

/// Loads the server key from `dir` (creating both on first start) and makes the TLS
/// configuration. Refuses a state directory inside the library, where clients could read the
/// private key.
fn server_identity(
    dir: &std::path::Path,
    root: &std::path::Path,
) -> anyhow::Result<shelf_server::Tls> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create state directory {}", dir.display()))?;
    let real_dir = dir
        .canonicalize()
        .with_context(|| format!("state directory {}", dir.display()))?;
    let real_root = root
        .canonicalize()
        .with_context(|| format!("cannot serve {}", root.display()))?;
    if real_dir.starts_with(&real_root) {
        anyhow::bail!(
            "the state directory {} is inside the library {}: clients could read the server's \
             private key; pick another with --state-dir",
            dir.display(),
            root.display()
        );
    }
    let path = real_dir.join("server_key");
    let (key, created) = shelf_secure::KeyPair::load_or_create(&path)?;
    if created {
        tracing::info!(file = %path.display(), fingerprint = %key.fingerprint(), "created the server key");
    }
    Ok(shelf_server::Tls {
        config: shelf_secure::server_config(&key)?,
        fingerprint: key.fingerprint(),
    })
}
