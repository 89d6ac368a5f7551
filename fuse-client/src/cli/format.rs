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
    format_time_in(t, local_offset(t.secs))
}

/// [`format_time_at`], or `????-??-?? ??:??` when the offset is unknown.
fn format_time_in(t: Timestamp, offset: Option<i64>) -> String {
    offset.map_or_else(|| UNKNOWN_TIME.into(), |offset| format_time_at(t, offset))
}

/// What a time that cannot be shown in local time prints as.
const UNKNOWN_TIME: &str = "????-??-?? ??:??";
const SECS_PER_DAY: i64 = 86_400;

/// `YYYY-MM-DD HH:MM` of `t` shown `offset` seconds east of UTC; pure, so tests pass any
/// offset. Years that `localtime` could not represent (outside `i32` counting from 1900)
/// print as `????-??-?? ??:??`, as [`format_time`] always did.
pub fn format_time_at(t: Timestamp, offset: i64) -> String {
    let Some(local) = t.secs.checked_add(offset) else {
        return UNKNOWN_TIME.into();
    };
    let (year, month, day) = civil_from_days(local.div_euclid(SECS_PER_DAY));
    if i32::try_from(year - 1900).is_err() {
        return UNKNOWN_TIME.into();
    }
    let of_day = local.rem_euclid(SECS_PER_DAY);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60
    )
}

/// How far local wall-clock time is ahead of UTC at `secs` (seconds since the epoch), from
/// the C library's `localtime_r`, which reads `TZ` and `/etc/localtime` as every other
/// program here does. The offset is taken from the broken-down time itself, not `tm_gmtoff`,
/// so zones that count leap seconds (`right/...`) still show what `localtime` shows. `None`
/// where `localtime_r` fails (a year that does not fit its `int`).
fn local_offset(secs: i64) -> Option<i64> {
    let time: libc::time_t = secs;
    // SAFETY: `libc::tm` is integers and a `tm_zone` pointer that may be null, so all zeroes
    // is a valid value; `localtime_r` is the reentrant variant and writes only `tm` (its
    // `tm_zone` then points at the C library's static zone names, which are never read here).
    // It reads `TZ` with getenv: nothing in shelf sets the environment while threads run.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return None;
        }
        tm
    };
    let days = days_from_civil(
        i64::from(tm.tm_year) + 1900,
        i64::from(tm.tm_mon) + 1,
        i64::from(tm.tm_mday),
    );
    let of_day = i64::from(tm.tm_hour) * 3600 + i64::from(tm.tm_min) * 60 + i64::from(tm.tm_sec);
    (days * SECS_PER_DAY + of_day).checked_sub(secs)
}

/// The proleptic Gregorian `(year, month, day)` of a count of days since 1970-01-01
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of the 400-year era, 0..=146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`] (same source, `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12; // March is 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One `ls` line (without the newline); `target` is a symlink's target. The time is local.
pub fn ls_line(name: &[u8], attr: &Attr, size_width: usize, target: Option<&[u8]>) -> String {
    let offset = local_offset(attr.mtime.secs);
    ls_line_in(name, attr, size_width, target, offset)
}

/// [`ls_line`] with the mtime shown `offset` seconds east of UTC (`None`: unknown).
fn ls_line_in(
    name: &[u8],
    attr: &Attr,
    size_width: usize,
    target: Option<&[u8]>,
    offset: Option<i64>,
) -> String {
    let mut line = format!(
        "{} {:>w$} {} {}",
        mode_string(attr.kind, attr.perm),
        attr.size,
        format_time_in(attr.mtime, offset),
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
            ls_line_in(b"notes.txt", &attr, 8, None, Some(0)),
            "-rw-r--r--     1234 2024-05-01 12:34 notes.txt"
        );
        assert_eq!(
            ls_line_in(b"notes.txt", &attr, 8, None, Some(-3600)),
            "-rw-r--r--     1234 2024-05-01 11:34 notes.txt"
        );
        assert_eq!(
            ls_line_in(b"notes.txt", &attr, 4, None, None),
            "-rw-r--r-- 1234 ????-??-?? ??:?? notes.txt"
        );
        // `ls_line` is the same line at the local offset.
        assert_eq!(
            ls_line(b"notes.txt", &attr, 8, None),
            ls_line_in(b"notes.txt", &attr, 8, None, local_offset(attr.mtime.secs))
        );
        let link = Attr {
            kind: FileKind::Symlink,
            perm: 0o777,
            size: 5,
            ..attr
        };
        assert_eq!(
            ls_line_in(b"l", &link, 1, Some(b"a\tb"), Some(0)),
            "lrwxrwxrwx 5 2024-05-01 12:34 l -> a\\x09b"
        );
    }

    #[test]
    fn times_at_fixed_offsets() {
        let t = |secs| Timestamp::new(secs, 0);
        let rows = [
            // (seconds since the epoch, offset east of UTC, shown)
            (1_714_566_840, 0, "2024-05-01 12:34"),
            (1_714_566_840, 2 * 3600, "2024-05-01 14:34"),
            (1_714_566_840, -(12 * 3600 + 35 * 60), "2024-04-30 23:59"),
            (1_714_566_840, 5 * 3600 + 45 * 60, "2024-05-01 18:19"), // Nepal
            (0, 0, "1970-01-01 00:00"),
            (-1, 0, "1969-12-31 23:59"),
            (-1, 1, "1970-01-01 00:00"),
            (951_782_400, 0, "2000-02-29 00:00"), // a leap day of a century leap year
            (4_107_542_399, 0, "2100-02-28 23:59"), // 2100 is not a leap year
            (4_107_542_400, 0, "2100-03-01 00:00"),
            (253_402_300_799, 0, "9999-12-31 23:59"),
            (253_402_300_800, 0, "10000-01-01 00:00"),
            (-62_167_219_200, 0, "0000-01-01 00:00"),
            (-62_167_219_201, 0, "-001-12-31 23:59"),
        ];
        for (secs, offset, want) in rows {
            assert_eq!(
                format_time_at(t(secs), offset),
                want,
                "{secs} at {offset:+}"
            );
        }
        // Nanoseconds never round a minute up.
        assert_eq!(
            format_time_at(Timestamp::new(59, 999_999_999), 0),
            "1970-01-01 00:00"
        );
        // What localtime cannot represent prints as unknown, and nothing overflows.
        assert_eq!(format_time_at(t(i64::MAX), 0), UNKNOWN_TIME);
        assert_eq!(format_time_at(t(i64::MAX), 1), UNKNOWN_TIME);
        assert_eq!(format_time_at(t(i64::MIN), -1), UNKNOWN_TIME);
        assert_eq!(format_time(t(i64::MAX)), UNKNOWN_TIME);
    }

    #[test]
    fn civil_days_round_trip() {
        for days in (-1_000_000..1_000_000)
            .step_by(997)
            .chain([-1, 0, 1, 11_016, 19_844])
        {
            let (y, m, d) = civil_from_days(days);
            assert!(
                (1..=12).contains(&m) && (1..=31).contains(&d),
                "{days}: {y}-{m}-{d}"
            );
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(19_844), (2024, 5, 1));
    }

    #[test]
    fn local_time_is_utc_plus_the_local_offset() {
        // Whatever zone this process runs in (nothing here changes it), the local offset is
        // whole minutes or at most a leap-second count away, and formatting with it is
        // `format_time`.
        for secs in [
            0,
            1_714_566_840,
            1_700_000_000,
            -86_400 * 365 * 30,
            4_000_000_000,
        ] {
            let offset = local_offset(secs).expect("localtime works for ordinary years");
            assert!(offset.abs() <= 26 * 3600, "{secs}: offset {offset}");
            let t = Timestamp::new(secs, 0);
            assert_eq!(format_time(t), format_time_at(t, offset));
        }
    }
}
