//! Reading the `--token-file` (and the mount option `token_file=`).

use std::path::Path;

use anyhow::{bail, Context};
use shelf_proto::token::TokenError;

/// Reads a token file by the one rule the server uses too ([`shelf_proto::token::parse`]):
/// the secret is its content less trailing line endings.
pub fn read_token(path: &Path) -> anyhow::Result<Vec<u8>> {
    let content = std::fs::read(path).with_context(|| format!("token file {}", path.display()))?;
    match shelf_proto::token::parse(content) {
        Ok(token) => Ok(token),
        Err(TokenError::Empty) => bail!("token file {} is empty", path.display()),
    }
}
