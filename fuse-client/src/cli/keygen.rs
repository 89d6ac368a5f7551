//! `shelf keygen`: makes the client's key pair.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use shelf_remote::KeyPair;

/// Make a client key pair, for servers that admit listed keys (shelfd --authorized-keys).
#[derive(Debug, Args)]
#[command(
    after_long_help = "Writes FILE (the private key, mode 0600) and FILE.pub (the \
    public key line). Add the printed line to the server's authorized-keys file; prefix it \
    with `read-only ` to allow reading only.\n\nExamples:\n  shelf keygen\n  \
    shelf keygen -f ~/.config/shelf/id_backup"
)]
pub struct KeygenArgs {
    /// The private key file [default: ~/.config/shelf/id_shelf, which shelf uses by itself]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The comment at the end of the public key line [default: user@host]
    // The doc comment is the help text, shown as written: the brackets are clap's way of
    // showing a default, not a link (rustdoc would read `default: user@host` as one).
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(short = 'C', long, value_name = "TEXT")]
    pub comment: Option<String>,
}

pub fn run(args: &KeygenArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let file = match &args.file {
        Some(f) => f.clone(),
        None => super::trust::default_identity().context("no config directory: pass -f FILE")?,
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let comment = args.comment.clone().unwrap_or_else(user_at_host);
    let key = KeyPair::generate()?;
    let mut public = file.clone().into_os_string();
    public.push(".pub");
    let public = PathBuf::from(public);
    key.save(&file)?;
    let line = key.public_line(&comment);
    shelf_secure::key::write_new(&public, format!("{line}\n").as_bytes(), 0o644)?;
    writeln!(
        out,
        "Wrote the private key to {} and the public key to {}.",
        file.display(),
        public.display()
    )?;
    writeln!(out, "Fingerprint: {}", key.fingerprint())?;
    writeln!(
        out,
        "Add this line to the server's authorized-keys file (shelfd --authorized-keys):"
    )?;
    writeln!(out, "{line}")?;
    Ok(())
}

fn user_at_host() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| rustix::process::getuid().as_raw().to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{user}@{host}")
}
