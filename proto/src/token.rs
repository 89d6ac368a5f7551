//! The shared-secret token: one rule for what a token file holds, used by the server
//! (`shelfd --token-file`) and the client (`shelf --token-file`, `-o token_file=`), so a file
//! both are given always matches itself (docs/PROTOCOL.md, "Handshake").
//!
//! The token is the file's bytes less the line endings an editor leaves at its end: every
//! trailing `\n` and `\r\n`. Anything else, trailing spaces or a lone `\r` included, is part of
//! the secret. A file with nothing else is refused rather than read as "no token". This crate
//! knows no files: each side reads the file and calls [`parse`].

/// Why a token file's content is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing but line endings (or nothing at all).
    #[error("the token file is empty")]
    Empty,
}

/// The token in a token file's content (see the module doc for the rule).
pub fn parse(mut content: Vec<u8>) -> Result<Vec<u8>, TokenError> {
    while content.last() == Some(&b'\n') {
        content.pop();
        if content.last() == Some(&b'\r') {
            content.pop();
        }
    }
    if content.is_empty() {
        return Err(TokenError::Empty);
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_line_endings_are_not_part_of_the_token() {
        for (content, token) in [
            (&b"s3cret"[..], &b"s3cret"[..]),
            (b"s3cret\n", b"s3cret"),
            (b"s3cret\r\n", b"s3cret"),
            (b"s3cret\n\n", b"s3cret"),
            (b"s3cret\r\n\r\n", b"s3cret"),
            (b"s3cret\n\r\n\n", b"s3cret"),
            // Only line endings at the end go; the rest is the secret, byte for byte.
            (b"s3cret \n", b"s3cret "),
            (b"s3cret\r", b"s3cret\r"),
            (b"s3\ncret\n", b"s3\ncret"),
            (b"\ns3cret", b"\ns3cret"),
        ] {
            assert_eq!(
                parse(content.to_vec()).as_deref(),
                Ok(token),
                "content {content:?}"
            );
        }
    }

    #[test]
    fn a_token_of_line_endings_only_is_refused() {
        for content in [&b""[..], b"\n", b"\r\n", b"\n\n", b"\r\n\r\n"] {
            assert_eq!(
                parse(content.to_vec()),
                Err(TokenError::Empty),
                "content {content:?}"
            );
        }
        assert_eq!(TokenError::Empty.to_string(), "the token file is empty");
    }
}
