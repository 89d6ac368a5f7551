//! The two line-oriented files: known servers (client side) and authorized keys (server side).
//!
//! Both are pure parsers over a file's text, so that the rules are tested here and the callers
//! only read files. `#` starts a comment line; blank lines are skipped; any other line that
//! does not parse is an error naming `file:line`, never skipped silently: a typo in an
//! authorized-keys file must not quietly lock a client out or let one in.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::key::{is_fingerprint, parse_public_key, PUBLIC_KEY_WORD};

/// The word before a key that may only read.
pub const READ_ONLY_WORD: &str = "read-only";

/// A line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LineError {
    pub file: PathBuf,
    /// Counted from 1.
    pub line: usize,
    pub why: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.why)
    }
}

/// One line of a known-servers file: `HOST:PORT SHA256:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownServer {
    pub addr: String,
    pub fingerprint: String,
    /// Counted from 1.
    pub line: usize,
}

/// One line of an authorized-keys file: `[read-only] shelf-key BASE64 [comment]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
    pub read_only: bool,
    pub comment: String,
    pub line: usize,
}

/// The lines that carry something, with their numbers.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

pub fn parse_known_servers(text: &str, file: &Path) -> Result<Vec<KnownServer>, LineError> {
    let mut out = Vec::new();
    for (line, l) in content_lines(text) {
        let bad = |why: String| LineError {
            file: file.to_owned(),
            line,
            why,
        };
        let mut words = l.split_whitespace();
        let (Some(addr), Some(fp)) = (words.next(), words.next()) else {
            return Err(bad("expected `HOST:PORT SHA256:...`".into()));
        };
        if words.next().is_some() {
            return Err(bad("expected two words, `HOST:PORT SHA256:...`".into()));
        }
        if !addr.contains(':') {
            return Err(bad(format!("`{addr}` is not HOST:PORT")));
        }
        if !is_fingerprint(fp) {
            return Err(bad(format!("`{fp}` is not a fingerprint (SHA256:...)")));
        }
        out.push(KnownServer {
            addr: addr.to_owned(),
            fingerprint: fp.to_owned(),
            line,
        });
    }
    Ok(out)
}

pub fn parse_authorized_keys(text: &str, file: &Path) -> Result<Vec<AuthorizedKey>, LineError> {
    let mut out = Vec::new();
    for (line, l) in content_lines(text) {
        let bad = |why: String| LineError {
            file: file.to_owned(),
            line,
            why,
        };
        let mut words = l.splitn(2, char::is_whitespace);
        let mut first = words.next().unwrap_or_default();
        let mut rest = words.next().unwrap_or_default().trim_start();
        let read_only = first == READ_ONLY_WORD;
        if read_only {
            let mut w = rest.splitn(2, char::is_whitespace);
            first = w.next().unwrap_or_default();
            rest = w.next().unwrap_or_default().trim_start();
        }
        if first != PUBLIC_KEY_WORD {
            return Err(bad(format!(
                "expected `[{READ_ONLY_WORD}] {PUBLIC_KEY_WORD} BASE64 [comment]`, found `{first}`"
            )));
        }
        let mut w = rest.splitn(2, char::is_whitespace);
        let b64 = w.next().unwrap_or_default();
        let comment = w.next().unwrap_or_default().trim().to_owned();
        let Some(spki) = parse_public_key(b64) else {
            return Err(bad("the key is not a base64 Ed25519 public key".into()));
        };
        out.push(AuthorizedKey {
            spki,
            read_only,
            comment,
            line,
        });
    }
    Ok(out)
}

/// The line of a known-servers file for `addr`.
pub fn known_server_line(addr: &str, fingerprint: &str) -> String {
    format!("{addr} {fingerprint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyPair;

    fn file() -> &'static Path {
        Path::new("/x/known")
    }

    #[test]
    fn no_message_repeats_its_source() {
        let e = LineError {
            file: file().to_owned(),
            line: 2,
            why: "no fingerprint".into(),
        };
        crate::assert_said_once(&e);
    }

    #[test]
    fn known_servers_skip_comments_and_blank_lines() {
        let fp = KeyPair::generate().expect("key").fingerprint();
        let text = format!("# mine\n\n  host:7878 {fp}\n[::1]:1 {fp}  \n");
        let got = parse_known_servers(&text, file()).expect("parses");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].addr, "host:7878");
        assert_eq!(got[0].fingerprint, fp);
        assert_eq!(got[0].line, 3);
        assert_eq!(got[1].addr, "[::1]:1");
        assert_eq!(got[1].line, 4);
    }

    #[test]
    fn a_bad_known_server_line_names_file_and_line() {
        let fp = KeyPair::generate().expect("key").fingerprint();
        for (text, want) in [
            (format!("h:1 {fp}\nh:2\n"), 2),
            ("\nh:1 SHA256:nope\n".to_owned(), 2),
            (format!("host {fp}\n"), 1),
            (format!("h:1 {fp} extra\n"), 1),
        ] {
            let err = parse_known_servers(&text, file()).expect_err("bad");
            assert_eq!(err.line, want, "{text:?}");
            assert!(
                err.to_string().starts_with(&format!("/x/known:{want}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn authorized_keys_read_only_and_comments() {
        let a = KeyPair::generate().expect("a");
        let b = KeyPair::generate().expect("b");
        let text = format!(
            "# team\n{}\n\n{} {}\n",
            a.public_line("alice@laptop with spaces"),
            READ_ONLY_WORD,
            b.public_line("")
        );
        let got = parse_authorized_keys(&text, file()).expect("parses");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].spki, a.spki_der());
        assert!(!got[0].read_only);
        assert_eq!(got[0].comment, "alice@laptop with spaces");
        assert_eq!(got[0].line, 2);
        assert_eq!(got[1].spki, b.spki_der());
        assert!(got[1].read_only);
        assert_eq!(got[1].line, 4);
    }

    #[test]
    fn a_bad_authorized_key_line_names_file_and_line() {
        let a = KeyPair::generate().expect("a");
        for (text, want) in [
            (format!("{}\nssh-ed25519 AAAA x\n", a.public_line("")), 2),
            ("shelf-key !!!\n".to_owned(), 1),
            ("read-only\n".to_owned(), 1),
            ("readonly shelf-key AAAA\n".to_owned(), 1),
            ("shelf-key AAAA\n".to_owned(), 1),
        ] {
            let err = parse_authorized_keys(&text, file()).expect_err("bad");
            assert_eq!(err.line, want, "{text:?}");
            assert!(
                err.to_string().starts_with(&format!("/x/known:{want}: ")),
                "{err}"
            );
        }
    }
}
