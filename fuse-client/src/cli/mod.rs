//! The `shelf` command line: one module per subcommand, all over [`shelf_remote`].
//!
//! Each subcommand is a function over a [`Client`] and plain arguments, so `shelf shell` calls
//! the same functions and the tests drive them against `shelf_testkit::Loopback`.
//! [`run`] owns what only the process edge knows: parsing, connecting, printing an error once
//! with its whole context chain, and exit codes: 0 success (a closed stdout included, so
//! `shelf ls | head` is quiet), 1 error, 2 bad usage, 130 after Ctrl-C.
//!
//! Layout: [`format`](mod@format) (how things are shown), [`paths`] (remote path arithmetic),
//! [`interrupt`] (Ctrl-C as a flag), [`progress`], then [`ls`], [`get`], [`put`], [`rm`],
//! [`mkdir`], [`mv`] and [`shell`]; [`generate`] makes completions and man pages; [`token`]
//! reads `--token-file` and [`units`] parses sizes and durations, for these and `shelf mount`.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use shelf_remote::{Client, ConnectOptions, Pool, Transport};

pub mod format;
pub mod generate;
pub mod get;
pub mod interrupt;
pub mod keygen;
pub mod ls;
pub mod mkdir;
pub mod mv;
pub mod paths;
pub mod progress;
pub mod put;
pub mod rm;
pub mod shell;
pub mod token;
pub mod trust;
pub mod units;

pub use interrupt::Interrupted;

/// shelf: use a remote file library from the command line, or mount it.
#[derive(Debug, Parser)]
#[command(name = "shelf", version, about, long_about = None, after_long_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  shelf ls 127.0.0.1:7878
  shelf get 127.0.0.1:7878 docs/report.pdf
  shelf put 127.0.0.1:7878 ./photo.jpg pictures/
  shelf shell 127.0.0.1:7878
  shelf mount 127.0.0.1:7878 ~/library
  shelf umount ~/library
  shelf status
  shelf --token-file ~/.config/shelf/token ls server:7878

Run `shelf help COMMAND` for a command's options and examples.
Shell completions: `shelf completions bash|zsh|fish`; man pages: `shelf man DIR`.";

/// Options for every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Read the server's shared secret from FILE.
    ///
    /// The token is the file's content less its trailing line endings; it must match the server's
    /// `--token-file`. Keep the file readable only by you (chmod 600).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Say more about what happens (repeat for more).
    ///
    /// -v logs connections and retries, -vv every request. Logs go to standard error.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print nothing but errors.
    ///
    /// Hides the progress bar of get and put and the shell's banner.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Trust only the server whose key has this fingerprint (as shelfd prints it).
    ///
    /// Needs no known-servers file; for scripts, systemd and fstab (`-o fingerprint=`).
    #[arg(long, global = true, value_name = "SHA256:...")]
    pub fingerprint: Option<String>,
    /// Prove who you are with the private key in FILE (made by `shelf keygen`).
    ///
    /// Default: ~/.config/shelf/id_shelf if it exists. Refused if group or others can read it.
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The servers trusted so far, one `HOST:PORT SHA256:...` a line.
    ///
    /// Default: $XDG_CONFIG_HOME/shelf/known_servers (~/.config/shelf/known_servers).
    #[arg(long, global = true, value_name = "FILE")]
    pub known_servers: Option<PathBuf>,
    /// Connect over plain TCP, without TLS: nothing is encrypted or verified.
    ///
    /// Only for a server started with --insecure-plaintext (benchmarks, trusted loopback).
    #[arg(long, global = true)]
    pub insecure_plaintext: bool,
    /// While the server is full (at its --max-clients), keep trying this long (e.g. 30s, 2m, 0).
    ///
    /// A command with no connection tries again with growing pauses (20 ms doubling to 1 s,
    /// with jitter) and says so once on a terminal; past this it fails with "server busy".
    /// A mount never fails a call for it while it has a connection (`-o busy_wait=`).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = units::parse_duration)]
    pub busy_wait: Duration,
}

impl Global {
    /// The security options.
    pub fn trust(&self) -> trust::Trust {
        trust::Trust {
            plaintext: self.insecure_plaintext,
            fingerprint: self.fingerprint.clone(),
            identity: self.identity.clone(),
            known_servers: self.known_servers.clone(),
            never_ask: false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Ls(ls::LsArgs),
    Get(get::GetArgs),
    Put(put::PutArgs),
    Rm(rm::RmArgs),
    Mkdir(mkdir::MkdirArgs),
    Mv(mv::MvArgs),
    Shell(shell::ShellArgs),
    /// Mount a library as a local folder.
    Mount(crate::mount::MountArgs),
    /// Unmount a library mounted with `shelf mount`.
    #[command(
        after_long_help = "Falls back to a lazy unmount when the mount is busy, and \
        works when the server is gone.\n\n\
        Examples:\n  shelf umount ~/library\n  \
        fusermount3 -u ~/library      (the same, without shelf)"
    )]
    Umount(crate::mount::UmountArgs),
    /// Show this machine's shelf mounts: server, connections, cache statistics.
    Status(crate::status::StatusArgs),
    /// Make a client key pair for servers that admit listed keys.
    Keygen(keygen::KeygenArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(hide = true)]
    Completions(generate::CompletionsArgs),
    /// Write man pages generated from these options.
    #[command(hide = true)]
    Man(generate::ManArgs),
}

/// Bad usage found after parsing (clap reports its own); exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// How a command shows its work.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// Draw progress bars (standard error is a terminal and not `--quiet`).
    pub progress: bool,
    pub quiet: bool,
}

impl Ui {
    fn new(global: &Global) -> Ui {
        Ui {
            progress: !global.quiet && std::io::stderr().is_terminal(),
            quiet: global.quiet,
        }
    }
}

/// The arguments to parse: the process's own, or, when run as mount(8)'s helper
/// `mount.fuse.shelf`, those turned into `shelf mount ...`.
pub fn effective_args(args: Vec<OsString>) -> Vec<OsString> {
    let called = args
        .first()
        .map(|a| PathBuf::from(a).file_name().map(|n| n.to_os_string()))
        .unwrap_or_default()
        .unwrap_or_default();
    let called = called.to_string_lossy();
    if called.starts_with("mount.fuse") || called.starts_with("mount.shelf") {
        crate::mount::helper_args(&args)
    } else {
        args
    }
}

/// Runs a parsed command line; returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(&cli.global);
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Prints `err` once with its context chain and picks the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    match classify(err) {
        Outcome::BrokenPipe => ExitCode::SUCCESS,
        Outcome::Interrupted => {
            eprintln!("shelf: interrupted");
            ExitCode::from(130)
        }
        Outcome::Usage => {
            eprintln!("shelf: {}", render(err));
            ExitCode::from(2)
        }
        Outcome::Failed => {
            eprintln!("shelf: {}", render(err));
            ExitCode::FAILURE
        }
    }
}

/// The context chain joined by `: `, with OS errors in the same lowercase words as remote
/// ones ("no such file or directory", not "No such file or directory (os error 2)") and
/// without a cause its predecessor already ends with (an `anyhow` context that names it).
pub fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => shelf_remote::io_text(io),
            None => cause.to_string(),
        };
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    BrokenPipe,
    Interrupted,
    Usage,
    Failed,
}

fn classify(err: &anyhow::Error) -> Outcome {
    for cause in err.chain() {
        if cause.is::<Interrupted>() {
            return Outcome::Interrupted;
        }
        if cause.is::<UsageError>() {
            return Outcome::Usage;
        }
        // Only a local stream breaks a pipe: remote errors carry no `io::Error` of the socket.
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return Outcome::BrokenPipe;
            }
        }
    }
    Outcome::Failed
}

fn init_logging(global: &Global) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,shelf_client=debug",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHELF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let ui = Ui::new(&cli.global);
    let token = match &cli.global.token_file {
        Some(path) => Some(token::read_token(path)?),
        None => None,
    };
    let trust = cli.global.trust();
    let busy_wait = cli.global.busy_wait;
    let on_busy = (!cli.global.quiet).then_some(tell_busy as fn(&str));
    let connect = |addr: &str| connect(addr, token.clone(), &trust, busy_wait, on_busy);
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Ls(a) => ls::run(&connect(&a.addr)?, &a, &mut stdout)?,
        Command::Get(a) => get::run(&connect(&a.addr)?, &a, ui, b"")?,
        Command::Put(a) => put::run(&connect(&a.addr)?, &a, ui, b"")?,
        Command::Rm(a) => rm::run(&connect(&a.addr)?, &a.paths, a.recursive, b"")?,
        Command::Mkdir(a) => mkdir::run(&connect(&a.addr)?, &a.paths, a.parents, b"")?,
        Command::Mv(a) => mv::run(&connect(&a.addr)?, &a.from, &a.to, b"")?,
        Command::Shell(a) => {
            let client = connect(&a.addr)?;
            let stdin = std::io::stdin();
            let interactive = stdin.is_terminal();
            let ok = shell::run(
                &client,
                &mut stdin.lock(),
                &mut stdout,
                &mut std::io::stderr(),
                shell::Mode { interactive, ui },
            )?;
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Mount(a) => crate::mount::run_mount(a, token, trust.clone(), busy_wait)?,
        Command::Keygen(a) => keygen::run(&a, &mut stdout)?,
        Command::Umount(a) => crate::mount::run_umount(a)?,
        Command::Status(a) => crate::status::run(a, &mut std::io::stdout().lock())?,
        Command::Completions(a) => generate::completions(a.shell, &mut stdout)?,
        Command::Man(a) => match a.dir {
            Some(dir) => {
                for path in generate::man_pages(&dir)? {
                    if !ui.quiet {
                        eprintln!("wrote {}", path.display());
                    }
                }
            }
            None => generate::man_page(&mut stdout)?,
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// One pooled connection: pipelining on it keeps a transfer's pipe full, and a replacement
/// connection carries on after a server restart.
pub fn connect(
    addr: &str,
    token: Option<Vec<u8>>,
    trust: &trust::Trust,
    busy_wait: Duration,
    on_busy: Option<fn(&str)>,
) -> anyhow::Result<Client<Pool>> {
    let opts = ConnectOptions {
        token,
        agent: format!("shelf-cli/{}", env!("CARGO_PKG_VERSION")),
        busy_wait,
        on_busy,
        ..ConnectOptions::new(addr)
    };
    let (pool, _) = trust::connect_pool(opts, 1, trust)?;
    // Every command names only what a person may see (`Client::for_people`).
    Ok(Client::for_people(pool))
}

/// Says once, on a terminal, that a command waits for a full server (`--busy-wait`).
fn tell_busy(message: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("shelf: {message}; waiting for room (--busy-wait)");
    }
}

/// The transports the subcommands run over (a trait alias).
pub trait Remote: Transport {}
impl<T: Transport> Remote for T {}

#[cfg(test)]
mod command_tests;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes() {
        let e = anyhow::Error::new(Interrupted).context("get x");
        assert_eq!(classify(&e), Outcome::Interrupted);
        let e = anyhow::Error::new(UsageError("bad".into()));
        assert_eq!(classify(&e), Outcome::Usage);
        let e =
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("ls");
        assert_eq!(classify(&e), Outcome::BrokenPipe);
        let e = anyhow::Error::new(shelf_remote::RemoteError::Disconnected("x".into()));
        assert_eq!(classify(&e), Outcome::Failed);
    }

    #[test]
    fn rendering_errors() {
        let e = anyhow::Error::new(shelf_remote::RemoteError::Unreachable {
            addr: "127.0.0.1:9".into(),
            cause: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
        });
        assert_eq!(
            render(&e),
            "cannot reach server 127.0.0.1:9: connection refused"
        );
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT))
            .context("cannot read x")
            .context("put x");
        assert_eq!(
            render(&e),
            "put x: cannot read x: no such file or directory"
        );
    }

    #[test]
    fn parses_global_options_anywhere() {
        let cli =
            Cli::try_parse_from(["shelf", "ls", "-q", "h:1", "--token-file", "t"]).expect("parses");
        assert!(cli.global.quiet);
        assert_eq!(cli.global.token_file, Some(PathBuf::from("t")));
        let err = Cli::try_parse_from(["shelf", "ls"]).expect_err("needs ADDR");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn runs_as_the_mount_helper() {
        let args = effective_args(vec!["/sbin/mount.fuse.shelf".into(), "h:1".into()]);
        assert_eq!(args[1], "mount");
    }
}
