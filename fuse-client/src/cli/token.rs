//! Reading the `--token-file` (and the mount option `token_file=`).

use std::path::Path;

use anyhow::{bail, Context};

/// Reads a token file; the secret is its content less a trailing newline.
pub fn read_token(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut t = std::fs::read(path).with_context(|| format!("token file {}", path.display()))?;
    while t.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        t.pop();
    }
    if t.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(t)
}
