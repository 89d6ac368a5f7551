//! `RelPath`: a path from the wire, checked once, so `Library` never sees an unchecked one.
//!
//! What is hard: paths are raw bytes (Linux names need not be UTF-8) and every one of them comes
//! from a peer we do not trust. The rules, applied in [`RelPath::new`]:
//!
//! 1. `/`-separated components relative to the library root; the empty path is the root itself.
//! 2. Refused with EINVAL: a leading `/` (absolute), a NUL byte, an empty component (`a//b`),
//!    and the components `.` and `..`. `..` is refused even where it would stay inside the root:
//!    the check is then purely syntactic and cannot be fooled by symlinks. `.` is refused rather
//!    than skipped so that `unlink("a/.")` cannot quietly mean `unlink("a")`.
//! 3. One trailing `/` is accepted and dropped (`docs/` names `docs`), because people type it.
//! 4. Refused with ENAMETOOLONG: a component over 255 bytes or a path over 4096 bytes
//!    (`NAME_MAX` and `PATH_MAX` on Linux).
//!
//! Symlinks are not a syntactic matter: `Library` resolves every path beneath its root with
//! `openat2(RESOLVE_BENEATH)`, which refuses the ones that would leave it.

use std::ffi::CString;
use std::fmt;

use shelf_proto::Code;

/// Longest name of one component (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Longest whole path (Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// Why a wire path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("absolute paths are not allowed: {0}")]
    Absolute(Escaped),
    #[error("path contains a NUL byte: {0}")]
    Nul(Escaped),
    #[error("path has an empty component: {0}")]
    EmptyComponent(Escaped),
    #[error("'.' and '..' components are not allowed: {0}")]
    DotComponent(Escaped),
    #[error("a name in the path is longer than {NAME_MAX} bytes: {0}")]
    NameTooLong(Escaped),
    #[error("path is longer than {PATH_MAX} bytes")]
    PathTooLong,
}

impl PathError {
    /// The code sent to the client.
    pub fn code(&self) -> Code {
        match self {
            PathError::Absolute(_)
            | PathError::Nul(_)
            | PathError::EmptyComponent(_)
            | PathError::DotComponent(_) => Code::Invalid,
            PathError::NameTooLong(_) | PathError::PathTooLong => Code::NameTooLong,
        }
    }
}

/// A checked path relative to the library root.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// The library root itself.
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// Checks a path from the wire (rules in the module docs).
    pub fn new(mut bytes: Vec<u8>) -> Result<RelPath, PathError> {
        if bytes.len() > PATH_MAX {
            return Err(PathError::PathTooLong);
        }
        if bytes.first() == Some(&b'/') {
            return Err(PathError::Absolute(Escaped::new(&bytes)));
        }
        if bytes.contains(&0) {
            return Err(PathError::Nul(Escaped::new(&bytes)));
        }
        if bytes.last() == Some(&b'/') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Ok(RelPath::root());
        }
        for comp in bytes.split(|&b| b == b'/') {
            match comp {
                b"" => return Err(PathError::EmptyComponent(Escaped::new(&bytes))),
                b"." | b".." => return Err(PathError::DotComponent(Escaped::new(&bytes))),
                _ if comp.len() > NAME_MAX => {
                    return Err(PathError::NameTooLong(Escaped::new(comp)))
                }
                _ => {}
            }
        }
        Ok(RelPath(bytes))
    }

    /// Checks a path given as a byte slice.
    pub fn from_bytes(bytes: &[u8]) -> Result<RelPath, PathError> {
        RelPath::new(bytes.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent directory and the last name; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &[u8])> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (RelPath(self.0[..i].to_vec()), &self.0[i + 1..]),
            None => (RelPath::root(), &self.0[..]),
        })
    }

    /// The last name; empty for the root.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// This path with one more name. The name must be a valid component.
    pub fn join(&self, name: &[u8]) -> Result<RelPath, PathError> {
        if name.contains(&b'/') || name.is_empty() {
            return Err(PathError::EmptyComponent(Escaped::new(name)));
        }
        let mut v = self.0.clone();
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath::new(v)
    }

    /// The path for `openat2` relative to the root's fd: `.` for the root itself.
    pub(crate) fn to_cstring(&self) -> CString {
        if self.is_root() {
            return c".".to_owned();
        }
        // `new` refused NUL bytes, so this cannot fail; fall back to the root rather than panic.
        CString::new(self.0.clone()).unwrap_or_else(|_| c".".to_owned())
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            fmt::Display::fmt(&Escaped::new(&self.0), f)
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath(\"{self}\")")
    }
}

/// Bytes shown to people: valid UTF-8 as it is, other bytes as `\xNN`. For messages and logs
/// only; the bytes themselves always travel unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct Escaped(String);

impl Escaped {
    pub fn new(bytes: &[u8]) -> Escaped {
        let mut s = String::with_capacity(bytes.len());
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    s.extend(c.escape_default());
                } else {
                    s.push(c);
                }
            }
            for b in chunk.invalid() {
                s.push_str(&format!("\\x{b:02x}"));
            }
        }
        Escaped(s)
    }
}

impl fmt::Display for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_paths() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a", b"a"),
            (b"a/b/c", b"a/b/c"),
            (b"docs/", b"docs"),
            (b"...", b"..."),
            (b".hidden/..x", b".hidden/..x"),
            (b"caf\xe9", b"caf\xe9"),
        ];
        for &(input, want) in cases {
            let p = RelPath::from_bytes(input).expect("valid path");
            assert_eq!(p.as_bytes(), want, "input {:?}", Escaped::new(input));
        }
    }

    #[test]
    fn hostile_paths() {
        let long_name = vec![b'x'; NAME_MAX + 1];
        let mut long_path = Vec::new();
        while long_path.len() <= PATH_MAX {
            long_path.extend_from_slice(b"abcdefgh/");
        }
        let cases: &[(&[u8], Code)] = &[
            (b"/etc/passwd", Code::Invalid),
            (b"//etc", Code::Invalid),
            (b"/", Code::Invalid),
            (b"..", Code::Invalid),
            (b"../x", Code::Invalid),
            (b"a/../../x", Code::Invalid),
            (b"a/..", Code::Invalid),
            (b".", Code::Invalid),
            (b"./a", Code::Invalid),
            (b"a/./b", Code::Invalid),
            (b"a//b", Code::Invalid),
            (b"a//", Code::Invalid),
            (b"a\0b", Code::Invalid),
            (b"\0", Code::Invalid),
            (&long_name, Code::NameTooLong),
            (&long_path, Code::NameTooLong),
        ];
        for &(input, code) in cases {
            let err = RelPath::from_bytes(input).expect_err("hostile path is refused");
            assert_eq!(err.code(), code, "input {:?}: {err}", Escaped::new(input));
        }
        let max_name = vec![b'y'; NAME_MAX];
        assert!(
            RelPath::from_bytes(&max_name).is_ok(),
            "255 bytes is allowed"
        );
    }

    #[test]
    fn split_and_join() {
        let p = RelPath::from_bytes(b"a/b/c").expect("valid");
        let (parent, name) = p.split_last().expect("not root");
        assert_eq!(parent.as_bytes(), b"a/b");
        assert_eq!(name, b"c");
        assert_eq!(parent.join(b"c").expect("valid"), p);
        let top = RelPath::from_bytes(b"top").expect("valid");
        let (parent, name) = top.split_last().expect("not root");
        assert!(parent.is_root());
        assert_eq!(name, b"top");
        assert!(RelPath::root().split_last().is_none());
        assert!(RelPath::root().join(b"..").is_err());
        assert!(RelPath::root().join(b"a/b").is_err());
    }

    #[test]
    fn display_escapes_non_utf8_only_for_people() {
        let p = RelPath::from_bytes(b"caf\xe9/\x1b[31m").expect("valid");
        assert_eq!(p.to_string(), "caf\\xe9/\\u{1b}[31m");
        assert_eq!(p.as_bytes(), b"caf\xe9/\x1b[31m");
        assert_eq!(RelPath::root().to_string(), ".");
    }
}
