//! The kernel's mount table as this process sees it (`/proc/self/mountinfo`): one
//! [`MountInfo`] a line, the mount at a directory, and where a mount's FUSE connection is
//! controlled.
//!
//! What is hard: fields are octal-escaped (`\040` for a space) and mount points need not be
//! UTF-8; a shelf mount made with mount(2) directly, without fusermount3, shows as plain
//! `fuse` with a `shelf#ADDR` source rather than as `fuse.shelf`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub major: u32,
    pub minor: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

impl MountInfo {
    /// A shelf mount: `fuse.shelf`, or plain `fuse` with a `shelf#ADDR` source (what a mount
    /// made with mount(2) directly, without fusermount3, looks like).
    pub fn is_shelf(&self) -> bool {
        self.fstype == "fuse.shelf" || (self.fstype == "fuse" && self.source.starts_with("shelf"))
    }

    /// The FUSE connection's control directory, named after the device number.
    pub fn connection_dir(&self) -> PathBuf {
        let dev = (self.major << 20) | self.minor;
        PathBuf::from(format!("/sys/fs/fuse/connections/{dev}"))
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Every mount of this process's namespace.
pub fn mountinfo() -> Vec<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (major, minor) = l.get(2)?.split_once(':')?;
            Some(MountInfo {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mount_point: PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(l.get(4)?))),
                fstype: r.first()?.to_string(),
                source: String::from_utf8_lossy(&unescape_mountinfo(r.get(1)?)).into_owned(),
                options: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// The topmost mount at `dir` (canonical path), if any.
pub fn mount_at(dir: &Path) -> Option<MountInfo> {
    mountinfo().into_iter().rev().find(|m| m.mount_point == dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), b"/tmp/a b");
        assert_eq!(
            unescape_mountinfo(r"shelf\043127.0.0.1:1"),
            b"shelf#127.0.0.1:1"
        );
        assert_eq!(unescape_mountinfo(r"x\0"), b"x\\0");
    }
}
