//! Remote path arithmetic. The wire takes paths relative to the library root without `.` or
//! `..` (the server refuses them), so what people type (`/docs/../a.txt`, `docs/`, a path
//! relative to the shell's directory) is resolved here, lexically. A path that climbs above
//! the library root is refused rather than quietly clamped (`put f ../x` must not write `x`);
//! only the shell's `cd ..` stops at the root, as in `/`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::format::escape;

/// `arg` resolved against `cwd` (both as on the wire); a leading `/` starts from the root.
/// Fails when the path climbs above the library root.
pub fn resolve(cwd: &[u8], arg: &[u8]) -> anyhow::Result<Vec<u8>> {
    walk(cwd, arg, false)
        .ok_or_else(|| anyhow::anyhow!("{}: path escapes the library", escape(arg)))
}

/// Like `resolve`, but `..` at the root stays at the root (the shell's `cd`).
pub fn resolve_clamped(cwd: &[u8], arg: &[u8]) -> Vec<u8> {
    walk(cwd, arg, true).unwrap_or_default()
}

/// Resolves lexically; `None` when `..` climbs above the root and `clamp` is off.
fn walk(cwd: &[u8], arg: &[u8], clamp: bool) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    let base: &[u8] = if arg.starts_with(b"/") { b"" } else { cwd };
    for part in base.split(|b| *b == b'/').chain(arg.split(|b| *b == b'/')) {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() && !clamp {
                    return None;
                }
            }
            name => parts.push(name),
        }
    }
    Some(parts.join(&b'/'))
}

/// The last name of a wire path (empty for the root).
pub fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `dir/name` as a wire path.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// A wire path as people see it in messages: `/` for the root, escaped otherwise.
pub fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        escape(path)
    }
}

/// An argument as bytes.
pub fn bytes(arg: &OsStr) -> &[u8] {
    arg.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Current directory, path as typed, the wire path it resolves to (None: above the root).
    type Row = (&'static [u8], &'static [u8], Option<&'static [u8]>);

    #[test]
    fn resolving() {
        let rows: [Row; 11] = [
            (b"", b"a.txt", Some(b"a.txt")),
            (b"", b"/docs/a.txt", Some(b"docs/a.txt")),
            (b"docs", b"a.txt", Some(b"docs/a.txt")),
            (b"docs", b"/a.txt", Some(b"a.txt")),
            (b"docs/x", b"../y//./z/", Some(b"docs/y/z")),
            (b"docs", b"..", Some(b"")),
            (b"", b"/", Some(b"")),
            (b"a", b".", Some(b"a")),
            (b"", b"..", None),
            (b"docs", b"../../..", None),
            (b"", b"/etc/../../passwd", None),
        ];
        for (cwd, arg, want) in rows {
            let got = resolve(cwd, arg).ok();
            assert_eq!(got.as_deref(), want, "{:?} {:?}", show(cwd), show(arg));
        }
    }

    #[test]
    fn cd_stops_at_the_root() {
        assert_eq!(resolve_clamped(b"", b".."), b"");
        assert_eq!(resolve_clamped(b"docs", b"../../x"), b"x");
    }

    #[test]
    fn names() {
        assert_eq!(basename(b"a/b/c"), b"c");
        assert_eq!(basename(b"c"), b"c");
        assert_eq!(basename(b""), b"");
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"d", b"x"), b"d/x");
        assert_eq!(show(b""), "/");
    }
}
