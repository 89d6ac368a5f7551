//! Names the implementation keeps for itself in a library, which no person should see or
//! name through either interface (the mount or the command line).
//!
//! - `.shelf-hidden` at the library root: the mount keeps open files that lost their name
//!   there until their last close (shelf-core's `hidden.rs`);
//! - `.shelf-hidden-*` in any directory: the same, where the root is on another file system;
//! - `.shelf-put-*` in any directory: an atomic put's temporary (shelfd's `library.rs`).
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

/// Whether `name`, an entry of a directory (the library root if `in_root`), is one of ours.
pub fn is_reserved_name(in_root: bool, name: &[u8]) -> bool {
    (in_root && name == HIDDEN_DIR)
        || name.starts_with(HIDDEN_PREFIX)
        || name.starts_with(PUT_PREFIX)
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
            (b"a/.shelf-hidden-1-2", true),
            (b".shelf-hidden-9", true),
            (b".shelf-put-0123456789abcdef", true),
            (b"docs/.shelf-put-x/y", true),
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
