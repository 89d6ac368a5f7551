//! Whom a connection trusts and who it says it is: the server's pinned key (from
//! `--fingerprint`, or the known-servers file), the client's own key (`--identity`), and
//! trust on first use on a terminal.
//!
//! What is hard: an unknown or changed server key must never be accepted silently. An
//! unknown one is shown and asked about only when a person is there to answer (standard input
//! and standard error both terminals); otherwise the refusal says exactly which option to
//! pass. A changed one is always a hard error naming the known-servers file and line, as ssh
//! does. Nothing is sent to a server before its key passed (shelf-remote's TLS handshake fails
//! before the hello goes out), and the first, refused connection of trust on first use sends
//! nothing either.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use shelf_proto::Admission;
use shelf_remote::{ConnectOptions, Connection, KeyPair, Pool, RemoteError, TlsOptions};
use shelf_secure::files::{known_server_line, parse_known_servers, KnownServer};
use shelf_secure::key::is_fingerprint;

/// The security options of one command line or mount.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Plain TCP (`--insecure-plaintext`).
    pub plaintext: bool,
    /// The pinned fingerprint (`--fingerprint`, `-o fingerprint=`).
    pub fingerprint: Option<String>,
    /// The client's key file (`--identity`, `-o identity=`); default `id_shelf` in the config
    /// directory when it exists.
    pub identity: Option<PathBuf>,
    /// The known-servers file (`--known-servers`); default `known_servers` in the config
    /// directory.
    pub known_servers: Option<PathBuf>,
    /// Never ask on a terminal: a detached mount's child, whose parent asked before the fork
    /// ([`ask_before_detaching`]).
    pub never_ask: bool,
}

/// shelf's directory under the user's config directory: `$XDG_CONFIG_HOME/shelf`, else
/// `~/.config/shelf`.
pub fn config_dir() -> Option<PathBuf> {
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_CONFIG_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("shelf"))
}

/// The default identity file, `id_shelf` in [`config_dir`].
pub fn default_identity() -> Option<PathBuf> {
    config_dir().map(|d| d.join("id_shelf"))
}

impl Trust {
    fn known_servers_file(&self) -> Option<PathBuf> {
        self.known_servers
            .clone()
            .or_else(|| config_dir().map(|d| d.join("known_servers")))
    }

    /// The client key to offer: the one named, else the default file if it exists.
    fn identity_key(&self) -> anyhow::Result<Option<(KeyPair, PathBuf)>> {
        let path = match &self.identity {
            Some(p) => p.clone(),
            None => match default_identity().filter(|p| p.exists()) {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let key = KeyPair::load(&path)?;
        Ok(Some((key, path)))
    }
}

/// Where the pinned key came from: what to tell a person to fix when it does not match.
enum PinSource {
    Option,
    File { file: PathBuf, line: usize },
    Nowhere,
}

/// How a connection was secured and authenticated, for `shelf status`.
#[derive(Debug, Clone, Default)]
pub struct Secured {
    /// The verified server key, `None` over plain TCP.
    pub fingerprint: Option<String>,
    pub cipher_suite: Option<String>,
    /// The client key offered (its fingerprint and file).
    pub identity: Option<String>,
    /// A token was offered.
    pub token: bool,
    /// What the server said let the client in (`None`: a server too old to say).
    pub admitted: Option<Admission>,
}

/// Opens a pool to `opts.addr` as `trust` says: TLS with the server's key pinned (asking a
/// person on first use), or plain TCP.
pub fn connect_pool(
    mut opts: ConnectOptions,
    n: usize,
    trust: &Trust,
) -> anyhow::Result<(Pool, Secured)> {
    let mut secured = Secured {
        token: opts.token.is_some(),
        ..Secured::default()
    };
    if trust.plaintext {
        opts.tls = None;
        return Ok((Pool::connect(opts, n)?, secured));
    }
    if let Some(fp) = &trust.fingerprint {
        if !is_fingerprint(fp) {
            bail!("--fingerprint {fp:?} is not a fingerprint: it looks like SHA256: and 43 characters, as shelfd prints it");
        }
    }
    let identity = trust.identity_key()?;
    if let Some((key, path)) = &identity {
        secured.identity = Some(format!("{} ({})", key.fingerprint(), path.display()));
    }
    let known_file = trust.known_servers_file();
    let (pin, source) = match (&trust.fingerprint, &known_file) {
        (Some(fp), _) => (Some(fp.clone()), PinSource::Option),
        (None, Some(file)) => match known_entry(file, &opts.addr)? {
            Some(k) => (
                Some(k.fingerprint),
                PinSource::File {
                    file: file.clone(),
                    line: k.line,
                },
            ),
            None => (None, PinSource::Nowhere),
        },
        (None, None) => (None, PinSource::Nowhere),
    };
    opts.tls = Some(TlsOptions {
        fingerprint: pin,
        identity: identity.map(|(k, _)| k),
    });
    let addr = opts.addr.clone();
    let pool = match Pool::connect(opts.clone(), n) {
        Ok(pool) => pool,
        Err(RemoteError::UnknownServer { fingerprint, .. }) => {
            let Some(file) = known_file else {
                bail!(unknown_text(&addr, &fingerprint, None));
            };
            if trust.never_ask || !ask_to_trust(&addr, &fingerprint, &file)? {
                bail!(unknown_text(&addr, &fingerprint, Some(&file)));
            }
            record(&file, &addr, &fingerprint)?;
            if let Some(tls) = &mut opts.tls {
                tls.fingerprint = Some(fingerprint);
            }
            Pool::connect(opts, n)?
        }
        Err(e @ RemoteError::ServerKeyChanged { .. }) => {
            let RemoteError::ServerKeyChanged { want, seen, .. } = &e else {
                return Err(e.into());
            };
            match source {
                PinSource::File { file, line } => bail!(
                    "the key of server {addr} has CHANGED: it presented {seen}, but {}:{line} \
                     says {want}. Someone may be intercepting the connection (a man in the \
                     middle), or the server's key was replaced. Nothing was sent to it. If you \
                     know the key was replaced, delete line {line} of {} and connect again to \
                     be asked about the new key.",
                    file.display(),
                    file.display()
                ),
                PinSource::Option | PinSource::Nowhere => bail!(
                    "{e}. Nothing was sent to it. Check the fingerprint given with \
                     --fingerprint (-o fingerprint=) against the one shelfd printed."
                ),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(info) = pool.tls_info() {
        secured.fingerprint = Some(info.fingerprint);
        secured.cipher_suite = Some(info.cipher_suite);
    }
    secured.admitted = pool.admitted();
    Ok((pool, secured))
}

/// Trust on first use for a mount that detaches, asked in the process the person started,
/// before it forks. The child starts a new session, so the terminal is no longer its own: a
/// question from there would race the shell for the person's input, and a ^C would stop the
/// waiting parent, not the child. So when the server's key is pinned nowhere and a person is
/// there, one connection (no thread: the fork must come later) learns the key, the person is
/// asked, and a yes is recorded in the known-servers file, where the child then finds it; a
/// no is the refusal. Without a terminal nothing is asked and the child's refusal says what
/// to pass. Anything else about the server (unreachable, a changed key) is left for the
/// child's connection to report. Nothing is sent to an unknown server.
pub fn ask_before_detaching(addr: &str, trust: &Trust) -> anyhow::Result<()> {
    if trust.plaintext || trust.fingerprint.is_some() || !has_terminal() {
        return Ok(());
    }
    let Some(file) = trust.known_servers_file() else {
        return Ok(());
    };
    if known_entry(&file, addr)?.is_some() {
        return Ok(());
    }
    let opts = ConnectOptions {
        tls: Some(TlsOptions {
            fingerprint: None,
            identity: None,
        }),
        ..ConnectOptions::new(addr)
    };
    match Connection::connect(&opts) {
        Err(RemoteError::UnknownServer { fingerprint, .. }) => {
            if !ask_to_trust(addr, &fingerprint, &file)? {
                bail!(unknown_text(addr, &fingerprint, Some(&file)));
            }
            record(&file, addr, &fingerprint)
        }
        _ => Ok(()),
    }
}

/// A person to ask: standard input and standard error both terminals.
fn has_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// What to do about an unknown server, for a refusal without a terminal.
fn unknown_text(addr: &str, fingerprint: &str, file: Option<&Path>) -> String {
    let mut text = format!(
        "the server {addr} is not known, and there is no terminal to ask whether to trust \
         it. Its key's fingerprint is {fingerprint}. If shelfd printed that same fingerprint \
         when it started, pass --fingerprint {fingerprint} (for shelf mount and fstab: -o \
         fingerprint={fingerprint})"
    );
    if let Some(file) = file {
        text.push_str(&format!(
            ", or add the line `{}` to {}",
            known_server_line(addr, fingerprint),
            file.display()
        ));
    }
    text.push_str(". Nothing was sent to it.");
    text
}

fn known_entry(file: &Path, addr: &str) -> anyhow::Result<Option<KnownServer>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("known servers {}", file.display())),
    };
    let known = parse_known_servers(&text, file)?;
    Ok(known.into_iter().find(|k| k.addr == addr))
}

/// Shows the key and asks, when a person is there to answer; false otherwise or on no.
fn ask_to_trust(addr: &str, fingerprint: &str, file: &Path) -> anyhow::Result<bool> {
    if !has_terminal() {
        return Ok(false);
    }
    let stdin = std::io::stdin();
    let mut err = std::io::stderr().lock();
    write!(
        err,
        "The server {addr} is not known yet.\n\
         Its key's fingerprint is {fingerprint}.\n\
         Compare it with the fingerprint shelfd printed when it started (its second line).\n\
         Trust this server and remember it in {}? [y/N] ",
        file.display()
    )?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// Appends `addr fingerprint` to the known-servers file, creating it (and its directory).
fn record(file: &Path, addr: &str, fingerprint: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let what = || format!("cannot record the server in {}", file.display());
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(what)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .with_context(what)?;
    writeln!(f, "{}", known_server_line(addr, fingerprint)).with_context(what)?;
    eprintln!("Recorded {addr} in {}.", file.display());
    Ok(())
}
