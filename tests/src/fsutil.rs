//! Files in a test: a varied tree to copy, the shelf temporaries left in a library,
//! whole-file reads and writes that name the path when they fail, and a byte comparison that
//! reports the first difference instead of dumping megabytes.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::data::{ramp, random_bytes};

/// Builds a varied tree under `dir`: nested directories, empty files and directories, a
/// 3 MiB file (several chunks), ramp and random files, names with spaces and names that are
/// not UTF-8. Returns the relative paths of the files created.
pub fn make_tree(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut put = |rel: PathBuf, data: &[u8]| {
        let p = dir.join(&rel);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir -p");
        std::fs::write(&p, data).expect("write tree file");
        files.push(rel);
    };
    put("empty".into(), b"");
    put("small.txt".into(), b"hello, shelf\n");
    put("big.bin".into(), &random_bytes(3, 3 << 20));
    put("ramp.bin".into(), &ramp(1_000_003));
    put("with space/a file.txt".into(), b"spaces\n");
    put("a/b/c/deep.txt".into(), b"deep\n");
    put("a/b/empty-in-b".into(), b"");
    put("a/mid.bin".into(), &random_bytes(7, 70_000));
    let latin1 = PathBuf::from(OsStr::from_bytes(b"caf\xe9"));
    put(
        latin1.join(OsStr::from_bytes(b"na\xefve-\xff.bin")),
        &random_bytes(9, 4097),
    );
    put(
        PathBuf::from("unicode-\u{00e9}\u{4e2d}.txt"),
        b"utf-8 name\n",
    );
    std::fs::create_dir_all(dir.join("empty-dir")).expect("mkdir empty dir");
    std::fs::create_dir_all(dir.join("a/empty-nested")).expect("mkdir empty nested");
    files
}

/// Every shelf temporary or hidden file left in a library: names starting `.shelf-` anywhere
/// (put temporaries, hidden names kept in a file's own directory), and whatever the root's
/// `.shelf-hidden` directory still holds. That directory itself may stay; it is the mount's
/// place for open files that lost their name and is empty once they are closed.
pub fn shelf_leftovers(lib: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![lib.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let hidden_dir = dir == lib && name.as_bytes() == b".shelf-hidden";
            if name.as_bytes().starts_with(b".shelf-") && !hidden_dir {
                found.push(e.path());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    found.sort();
    found
}

/// A fresh temp directory whose name starts with `prefix`, removed when dropped.
#[track_caller]
pub(crate) fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot make a temp directory {prefix}*: {e}"))
}

/// Reads a whole file, failing the test with the path on error.
#[track_caller]
pub fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Writes a whole file, failing the test with the path on error.
#[track_caller]
pub fn write(path: impl AsRef<Path>, data: impl AsRef<[u8]>) {
    let path = path.as_ref();
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()))
}

/// Asserts two byte strings are equal, reporting the first differing offset and the lengths
/// instead of dumping megabytes.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: contents differ: got {} bytes, want {} bytes, first difference at {}",
        got.len(),
        want.len(),
        first.map_or("the end of the shorter".to_string(), |o| format!(
            "offset {o}"
        ))
    );
}

/// Reads a file fully through any reader (for files held open).
pub fn read_all(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

/// A size-limited tmpfs on a fresh temp directory (needs root), unmounted lazily on drop, so
/// a test that failed with files open still leaves no mount behind. Mount it before starting
/// a server that should see it: servers run in a private mount namespace copied at start.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `size` as mount(8) takes it: `8m`, `256m`.
    pub fn new(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("shelf-tmpfs-")
            .tempdir()
            .expect("tmpfs mount point");
        let target = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes())
            .expect("path without NUL");
        let data = std::ffi::CString::new(format!("size={size},mode=0755")).expect("options");
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount -t tmpfs on {} (needs root): {}",
            dir.path().display(),
            std::io::Error::last_os_error()
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.dir.path().as_os_str().as_encoded_bytes()) {
            // SAFETY: `target` is a valid NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
