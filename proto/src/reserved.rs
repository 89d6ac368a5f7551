//! Names the implementation keeps for itself in a library, which no person should see or
//! name through either interface (the mount or the command line).
//!
//! - `.shelf-hidden` at the library root: the mount keeps open files that lost their name
//!   there until their last close (shelf-core's `hidden.rs`);
//! - `.shelf-hidden-INO-PID-SEQ-NANOS` in any directory (hex, decimal, decimal, hex): the
//!   same, where the root is on another file system;
//! - `.shelf-put-` and 16 hex digits in any directory: an atomic put's temporary (shelfd's
//!   `library.rs`).
//!
//! Only names of exactly those shapes are ours: a person's `.shelf-hidden-notes` or
//! `.shelf-put-aside` is an ordinary file that every listing shows.
//!
//! Three places keep them out, each for everything that passes through it, so no command or
//! operation can forget: the server leaves them out of every `List` reply
//! (docs/PROTOCOL.md, "List"); the mount answers lookups and creations of them as if they
//! were absent or refused; and `shelf_remote::Client::for_people`, the client every command
//! uses, refuses any request that names one, as if it were absent.

/// The root's directory of hidden files.
pub const HIDDEN_DIR: &[u8] = b".shelf-hidden";

/// Hidden files kept in their own directory (a library spanning file systems).
pub const HIDDEN_PREFIX: &[u8] = b".shelf-hidden-";

/// An atomic put's temporaries.
pub const PUT_PREFIX: &[u8] = b".shelf-put-";

/// Hex digits in an atomic put's temporary name, after [`PUT_PREFIX`].
pub const PUT_HEX_DIGITS: usize = 16;

/// Whether `name`, an entry of a directory (the library root if `in_root`), is one of ours.
pub fn is_reserved_name(in_root: bool, name: &[u8]) -> bool {
    (in_root && name == HIDDEN_DIR)
        || name
            .strip_prefix(HIDDEN_PREFIX)
            .is_some_and(is_hidden_unique)
        || is_put_temp(name)
}

/// Whether `name` is an atomic put's temporary: [`PUT_PREFIX`] and [`PUT_HEX_DIGITS`]
/// lowercase hex digits, as shelfd makes them.
pub fn is_put_temp(name: &[u8]) -> bool {
    name.strip_prefix(PUT_PREFIX)
        .is_some_and(|rest| rest.len() == PUT_HEX_DIGITS && all(rest, is_hex))
}

/// The unique part of a hidden name as shelf-core makes it: `INO-PID-SEQ-NANOS`, in hex,
/// decimal, decimal and hex.
pub fn is_hidden_unique(rest: &[u8]) -> bool {
    let fields: Vec<&[u8]> = rest.split(|&b| b == b'-').collect();
    let digit_kinds: [fn(&u8) -> bool; 4] =
        [is_hex, u8::is_ascii_digit, u8::is_ascii_digit, is_hex];
    fields.len() == digit_kinds.len()
        && fields
            .iter()
            .zip(digit_kinds)
            .all(|(field, kind)| !field.is_empty() && all(field, kind))
}

fn is_hex(b: &u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(b)
}

fn all(bytes: &[u8], kind: impl Fn(&u8) -> bool) -> bool {
    bytes.iter().all(kind)
}

/// Whether a wire path (relative to the root, `/`-separated) goes through one of our names.
pub fn is_reserved_path(path: &[u8]) -> bool {
    path.split(|&b| b == b'/')
        .enumerate()
        .any(|(i, name)| is_reserved_name(i == 0, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_names_are_reserved() {
        let cases: &[(&[u8], bool)] = &[
            (b".shelf-hidden", true),
            (b".shelf-hidden/1-2-3", true),
            (b"a/.shelf-hidden", false),
            (b"a/.shelf-hidden-1f-2-3-4a", true),
            (b".shelf-hidden-9-1-0-ff/inside", true),
            (b".shelf-put-0123456789abcdef", true),
            (b"docs/.shelf-put-0123456789abcdef/y", true),
            // A person's files that only look like ours.
            (b"a/.shelf-hidden-1-2", false),
            (b".shelf-hidden-notes", false),
            (b".shelf-hidden-1f-2-3-4a-5", false),
            (b".shelf-hidden-1f-2x-3-4a", false),
            (b".shelf-put-x", false),
            (b".shelf-put-0123456789ABCDEF", false),
            (b".shelf-put-0123456789abcdef0", false),
            (b".shelf-hiddenx", false),
            (b".shelf-puts", false),
            (b"shelf-hidden", false),
            (b"", false),
            (b"docs/notes.txt", false),
        ];
        for (path, want) in cases {
            assert_eq!(
                is_reserved_path(path),
                *want,
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }
}
