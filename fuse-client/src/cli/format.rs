//! How names, modes, sizes and times are shown. These formats are what scripts and the
//! end-to-end tests read, so they change only on purpose:
//!
//! - `ls` line: `MODE SIZE DATE TIME NAME`, for example
//!   `-rw-r--r--     1234 2024-05-01 12:34 notes.txt`, fields separated by spaces, SIZE right
//!   aligned to the widest size of the listing, DATE TIME the mtime in local time, and
//!   `NAME -> TARGET` for symlinks.
//! - Names are always escaped (a name from the server could hold terminal escape sequences or a
//!   newline that forges a second line): a backslash becomes `\\`, and every byte of a control
//!   character or of invalid UTF-8 becomes `\xNN`. Other UTF-8 is shown as it is.

use shelf_proto::{Attr, FileKind, Timestamp};

/// `drwxr-xr-x`-style type and permission string, with setuid/setgid/sticky as `ls` shows them.
pub fn mode_string(kind: FileKind, perm: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        FileKind::File => '-',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
    });
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, (bit, on_x, no_x)) in special.into_iter().enumerate() {
        let shift = 6 - 3 * i;
        let bits = (perm >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, perm & bit != 0) {
            (true, true) => on_x,
            (false, true) => no_x,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// A name or path from the server, made safe for a terminal (module docs).
pub fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM` in local time (the `TZ` environment variable applies).
pub fn format_time(t: Timestamp) -> String {
    let secs = t.secs as libc::time_t;
    // SAFETY: `tm` is plain data, so all zeroes is a valid value; `localtime_r` only writes it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe variant.
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return "????-??-?? ??:??".into();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

/// One `ls` line (without the newline); `target` is a symlink's target.
pub fn ls_line(name: &[u8], attr: &Attr, size_width: usize, target: Option<&[u8]>) -> String {
    let mut line = format!(
        "{} {:>w$} {} {}",
        mode_string(attr.kind, attr.perm),
        attr.size,
        format_time(attr.mtime),
        escape(name),
        w = size_width
    );
    if let Some(t) = target {
        line.push_str(" -> ");
        line.push_str(&escape(t));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings() {
        let rows = [
            (FileKind::Dir, 0o755, "drwxr-xr-x"),
            (FileKind::File, 0o644, "-rw-r--r--"),
            (FileKind::File, 0o000, "----------"),
            (FileKind::Symlink, 0o777, "lrwxrwxrwx"),
            (FileKind::File, 0o4755, "-rwsr-xr-x"),
            (FileKind::File, 0o2644, "-rw-r-Sr--"),
            (FileKind::Dir, 0o1777, "drwxrwxrwt"),
            (FileKind::Dir, 0o1770, "drwxrwx--T"),
            (FileKind::Fifo, 0o600, "prw-------"),
        ];
        for (kind, perm, want) in rows {
            assert_eq!(mode_string(kind, perm), want, "{kind:?} {perm:o}");
        }
    }

    #[test]
    fn escaping() {
        let rows: [(&[u8], &str); 6] = [
            (b"plain.txt", "plain.txt"),
            (b"new\nline", "new\\x0aline"),
            (b"\x1b[31mred", "\\x1b[31mred"),
            (b"bad\xffutf8", "bad\\xffutf8"),
            (b"back\\slash", "back\\\\slash"),
            ("caf\u{e9} \u{1F600}".as_bytes(), "caf\u{e9} \u{1F600}"),
        ];
        for (name, want) in rows {
            assert_eq!(escape(name), want);
        }
        // A C1 control character is escaped byte by byte.
        assert_eq!(escape("a\u{85}b".as_bytes()), "a\\xc2\\x85b");
    }

    #[test]
    fn ls_lines() {
        extern "C" {
            fn tzset();
        }
        std::env::set_var("TZ", "UTC");
        // SAFETY: tzset only rereads TZ; no other test depends on the local time zone.
        unsafe { tzset() };
        let attr = Attr {
            ino: 1,
            kind: FileKind::File,
            perm: 0o644,
            nlink: 1,
            size: 1234,
            blocks: 8,
            blksize: 4096,
            atime: Timestamp::default(),
            mtime: Timestamp::new(1_714_566_840, 0), // 2024-05-01 12:34 UTC
            ctime: Timestamp::default(),
            btime: Timestamp::default(),
        };
        assert_eq!(
            ls_line(b"notes.txt", &attr, 8, None),
            "-rw-r--r--     1234 2024-05-01 12:34 notes.txt"
        );
        let link = Attr {
            kind: FileKind::Symlink,
            perm: 0o777,
            size: 5,
            ..attr
        };
        assert_eq!(
            ls_line(b"l", &link, 1, Some(b"a\tb")),
            "lrwxrwxrwx 5 2024-05-01 12:34 l -> a\\x09b"
        );
    }
}
