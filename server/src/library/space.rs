//! Space, holes and copies: `fallocate`, `lseek(SEEK_DATA / SEEK_HOLE)` and `copy_file_range`
//! on files beneath the root (docs/PROTOCOL.md, "Space, holes and copies").
//!
//! What is hard: the wire carries `u64`s where Linux takes `loff_t`, so every offset and length
//! is checked as the kernel would check it before the call (an offset above `i64::MAX` would
//! otherwise reach the kernel as a negative number and mean something else), and the answers
//! are the kernel's own. A copy is bounded per request ([`COPY_MAX`]): it runs on the
//! connection's reading thread like every change, and the client loops on short copies anyway.
//! Where the kernel cannot copy between the two files itself (two file systems mounted inside
//! the library), the server copies through a bounded buffer instead: still no byte on the wire.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use rustix::fs::{FallocateFlags, SeekFrom};
use shelf_proto::{falloc_mode, Attr, Code, Whence};

use super::{ensure_regular, fstat_attr, Error, Library, Result, LOOK, WRITE};
use crate::relpath::RelPath;
use crate::sys;

/// Most bytes one `CopyRange` copies; the client asks again for the rest.
pub const COPY_MAX: u64 = 256 << 20;
/// Buffer of the fallback copy, when the kernel cannot copy between the two files.
const FALLBACK_BUF: usize = 1 << 20;
/// Largest offset or length Linux takes (`loff_t` is signed).
const OFF_MAX: u64 = i64::MAX as u64;

impl Library {
    /// `fallocate` with `mode` from `falloc_mode`. Refuses what Linux refuses, with its codes:
    /// unknown bits EOPNOTSUPP, a bad offset or length EINVAL, an end past `i64::MAX` EFBIG
    /// (`vfs_fallocate`); the rest (PUNCH_HOLE without KEEP_SIZE, ENOSPC) is the kernel's.
    pub fn fallocate(&self, path: &RelPath, mode: u32, offset: u64, len: u64) -> Result<Attr> {
        let op = "fallocate";
        let Some(linux) = falloc_mode::to_linux(mode) else {
            return Err(Error::policy(
                Code::NotSupported,
                op,
                path,
                &format!("unknown mode bits {mode:#x}"),
            ));
        };
        if offset > OFF_MAX || len == 0 || len > OFF_MAX {
            return Err(Error::policy(
                Code::Invalid,
                op,
                path,
                "offset or length out of range",
            ));
        }
        if offset + len > OFF_MAX {
            return Err(Error::policy(
                Code::FileTooBig,
                op,
                path,
                "the range ends past the largest file size",
            ));
        }
        let fd = self.open_beneath(op, path, WRITE, 0)?;
        let st = sys::fstat(fd.as_fd()).map_err(|e| Error::io(op, path, e))?;
        ensure_regular(op, path, &st)?;
        // Our bits map onto Linux's exactly (`falloc_mode::to_linux`); the flag type is only
        // rustix's name for the same number.
        let flags = FallocateFlags::from_bits_retain(linux as u32);
        rustix::fs::fallocate(&fd, flags, offset, len).map_err(|e| Error::io(op, path, e))?;
        fstat_attr(op, path, fd.as_fd())
    }

    /// The first offset at or after `offset` holding data or in a hole (`lseek` with
    /// `SEEK_DATA` or `SEEK_HOLE`); at or past the end of the file ENXIO, as Linux says.
    pub fn seek(&self, path: &RelPath, offset: u64, whence: Whence) -> Result<u64> {
        let op = "seek";
        if offset > OFF_MAX {
            // A negative `loff_t` to the kernel, which answers ENXIO for it.
            return Err(Error::io(op, path, Code::NoDeviceOrAddress.to_io()));
        }
        let fd = self.open_beneath(op, path, LOOK, 0)?;
        let st = sys::fstat(fd.as_fd()).map_err(|e| Error::io(op, path, e))?;
        ensure_regular(op, path, &st)?;
        let pos = match whence {
            Whence::Data => SeekFrom::Data(offset),
            Whence::Hole => SeekFrom::Hole(offset),
        };
        rustix::fs::seek(&fd, pos).map_err(|e| Error::io(op, path, e))
    }

    /// Copies up to `len` bytes (at most [`COPY_MAX`]) from `from` to `to`, an existing file,
    /// with `copy_file_range` (a reflink where the file system has them). Returns how many
    /// were copied (0: `from_offset` is at or past the end of `from`) and `to`'s attributes.
    pub fn copy_range(
        &self,
        from: &RelPath,
        from_offset: u64,
        to: &RelPath,
        to_offset: u64,
        len: u64,
    ) -> Result<(u64, Attr)> {
        let op = "copy";
        if from_offset > OFF_MAX || to_offset > OFF_MAX {
            return Err(Error::policy(
                Code::Invalid,
                op,
                from,
                "offset past the largest file size",
            ));
        }
        let src = File::from(self.open_beneath(op, from, LOOK, 0)?);
        ensure_regular(
            op,
            from,
            &sys::fstat(src.as_fd()).map_err(|e| Error::io(op, from, e))?,
        )?;
        // Opened beneath the root like every write: a symlink at `to` that leads out fails.
        let dst = File::from(self.open_beneath(op, to, WRITE, 0)?);
        ensure_regular(
            op,
            to,
            &sys::fstat(dst.as_fd()).map_err(|e| Error::io(op, to, e))?,
        )?;
        let want = copy_len(len, from_offset, to_offset);
        let copied = copy(&src, from_offset, &dst, to_offset, want).map_err(|e| {
            let mut err = Error::io(op, from, e);
            err.message = format!("{op} {from} to {to}: {}", err.code.text());
            err
        })?;
        Ok((copied, fstat_attr(op, to, dst.as_fd())?))
    }
}

/// How much one request copies: at most [`COPY_MAX`], and never past the largest offset of
/// either file (Linux refuses a range that wraps, with EOVERFLOW; a shorter copy that ends in
/// range is a short copy, which is no error). Offsets are at most `OFF_MAX` here.
fn copy_len(len: u64, from_offset: u64, to_offset: u64) -> u64 {
    len.min(COPY_MAX)
        .min(OFF_MAX - from_offset)
        .min(OFF_MAX - to_offset)
}

/// Copies up to `want` bytes, looping over the kernel's short copies until the source ends.
fn copy(src: &File, mut at_in: u64, dst: &File, mut at_out: u64, want: u64) -> io::Result<u64> {
    let mut done = 0u64;
    while done < want {
        let chunk = usize::try_from(want - done).unwrap_or(usize::MAX);
        let n =
            match rustix::fs::copy_file_range(src, Some(&mut at_in), dst, Some(&mut at_out), chunk)
            {
                Ok(n) => n as u64,
                Err(e) if kernel_cannot_copy(e) && done == 0 => {
                    return copy_through_buffer(src, at_in, dst, at_out, want)
                }
                Err(e) if e == rustix::io::Errno::INTR => continue,
                // Bytes already copied are reported; the next request meets the error again.
                Err(_) if done > 0 => break,
                Err(e) => return Err(e.into()),
            };
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Whether `copy_file_range` refused these two files as a pair (different file systems, or
/// one that lacks it), rather than failing the copy.
fn kernel_cannot_copy(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    e == Errno::XDEV || e == Errno::NOSYS || e == Errno::OPNOTSUPP
}

/// The copy done with `pread` and `pwrite` through one bounded buffer.
fn copy_through_buffer(
    src: &File,
    mut at_in: u64,
    dst: &File,
    mut at_out: u64,
    want: u64,
) -> io::Result<u64> {
    let mut buf = vec![0u8; FALLBACK_BUF.min(usize::try_from(want).unwrap_or(FALLBACK_BUF))];
    let mut done = 0u64;
    while done < want {
        let room = buf
            .len()
            .min(usize::try_from(want - done).unwrap_or(buf.len()));
        let n = match src.read_at(&mut buf[..room], at_in) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all_at(&buf[..n], at_out)?;
        at_in += n as u64;
        at_out += n as u64;
        done += n as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use shelf_proto::falloc_mode::{KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE};

    fn p(s: &str) -> RelPath {
        RelPath::from_bytes(s.as_bytes()).expect("test path is valid")
    }

    fn lib() -> (tempfile::TempDir, Library) {
        let tmp = tempfile::tempdir().expect("temp dir");
        fs::create_dir(tmp.path().join("lib")).expect("mkdir lib");
        let lib = Library::open(&tmp.path().join("lib")).expect("open library");
        (tmp, lib)
    }

    fn code<T: std::fmt::Debug>(r: Result<T>) -> Code {
        r.expect_err("must fail").code
    }

    #[test]
    fn fallocate_modes_do_what_linux_does() {
        let (tmp, lib) = lib();
        let f = tmp.path().join("lib/f");
        fs::write(&f, vec![7u8; 3 << 16]).expect("write");

        let a = lib.fallocate(&p("f"), 0, 0, 4 << 16).expect("allocate");
        assert_eq!(a.size, 4 << 16, "mode 0 extends the size");
        let a = lib
            .fallocate(&p("f"), KEEP_SIZE, 0, 8 << 16)
            .expect("keep size");
        assert_eq!(a.size, 4 << 16, "KEEP_SIZE keeps it");
        assert!(
            a.blocks * 512 >= 8 << 16,
            "but allocates: {} blocks",
            a.blocks
        );

        let before = fs::metadata(&f).expect("stat").blocks();
        let a = lib
            .fallocate(&p("f"), PUNCH_HOLE | KEEP_SIZE, 1 << 16, 1 << 16)
            .expect("punch");
        assert_eq!(a.size, 4 << 16);
        assert!(a.blocks < before, "{} blocks, {before} before", a.blocks);
        let bytes = fs::read(&f).expect("read");
        assert!(bytes[..1 << 16].iter().all(|&b| b == 7));
        assert!(
            bytes[1 << 16..2 << 16].iter().all(|&b| b == 0),
            "the hole reads as zeros"
        );
        assert!(bytes[2 << 16..3 << 16].iter().all(|&b| b == 7));

        let a = lib
            .fallocate(&p("f"), ZERO_RANGE, 2 << 16, 4 << 16)
            .expect("zero range");
        assert_eq!(a.size, 6 << 16, "ZERO_RANGE without KEEP_SIZE extends");
        let bytes = fs::read(&f).expect("read");
        assert!(bytes[2 << 16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn fallocate_refuses_as_linux_does() {
        let (tmp, lib) = lib();
        fs::write(tmp.path().join("lib/f"), b"abc").expect("write");
        fs::create_dir(tmp.path().join("lib/d")).expect("mkdir");
        let f = p("f");
        assert_eq!(
            code(lib.fallocate(&f, PUNCH_HOLE, 0, 1)),
            Code::NotSupported
        );
        assert_eq!(code(lib.fallocate(&f, 1 << 3, 0, 1)), Code::NotSupported);
        assert_eq!(code(lib.fallocate(&f, 0, 0, 0)), Code::Invalid);
        assert_eq!(code(lib.fallocate(&f, 0, 1 << 63, 1)), Code::Invalid);
        assert_eq!(code(lib.fallocate(&f, 0, 1, u64::MAX)), Code::Invalid);
        assert_eq!(code(lib.fallocate(&f, 0, OFF_MAX, 1)), Code::FileTooBig);
        assert_eq!(code(lib.fallocate(&p("d"), 0, 0, 1)), Code::IsDir);
        assert_eq!(code(lib.fallocate(&p("none"), 0, 0, 1)), Code::NotFound);
        assert_eq!(fs::read(tmp.path().join("lib/f")).expect("read"), b"abc");
    }

    #[test]
    fn seek_finds_data_and_holes() {
        let (tmp, lib) = lib();
        let f = fs::File::create(tmp.path().join("lib/sparse")).expect("create");
        f.write_all_at(&[1u8; 4096], 1 << 20).expect("write");
        f.set_len(4 << 20).expect("extend");
        let s = p("sparse");
        assert_eq!(lib.seek(&s, 0, Whence::Data).expect("data"), 1 << 20);
        assert_eq!(lib.seek(&s, 0, Whence::Hole).expect("hole"), 0);
        let hole = lib.seek(&s, 1 << 20, Whence::Hole).expect("hole after");
        assert!(((1 << 20) + 4096..4 << 20).contains(&hole), "{hole}");
        assert_eq!(
            code(lib.seek(&s, (1 << 20) + 8192, Whence::Data)),
            Code::NoDeviceOrAddress,
            "no data after the last extent"
        );
        assert_eq!(
            code(lib.seek(&s, 4 << 20, Whence::Hole)),
            Code::NoDeviceOrAddress
        );
        assert_eq!(
            code(lib.seek(&s, u64::MAX, Whence::Data)),
            Code::NoDeviceOrAddress
        );
        assert_eq!(code(lib.seek(&p("none"), 0, Whence::Data)), Code::NotFound);
    }

    #[test]
    fn copy_range_copies_on_the_server() {
        let (tmp, lib) = lib();
        let data: Vec<u8> = (0..200_000u32).map(|k| (k % 251) as u8).collect();
        fs::write(tmp.path().join("lib/a"), &data).expect("write");
        fs::write(tmp.path().join("lib/b"), b"").expect("create");
        let (n, attr) = lib
            .copy_range(&p("a"), 0, &p("b"), 0, u64::MAX)
            .expect("copy");
        assert_eq!(
            n,
            data.len() as u64,
            "a copy stops at the end of the source"
        );
        assert_eq!(
            attr.size,
            data.len() as u64,
            "the destination's attributes after"
        );
        assert_eq!(fs::read(tmp.path().join("lib/b")).expect("read"), data);

        let (n, attr) = lib
            .copy_range(&p("a"), 100, &p("b"), 300_000, 50)
            .expect("copy at offsets");
        assert_eq!((n, attr.size), (50, 300_050));
        let b = fs::read(tmp.path().join("lib/b")).expect("read");
        assert_eq!(&b[300_000..], &data[100..150]);

        let (n, _) = lib
            .copy_range(&p("a"), 1 << 30, &p("b"), 0, 10)
            .expect("past the end");
        assert_eq!(n, 0, "nothing to copy past the end of the source");
        assert_eq!(
            code(lib.copy_range(&p("a"), 0, &p("a"), 10, 100)),
            Code::Invalid,
            "overlapping ranges of one file"
        );
        assert_eq!(
            code(lib.copy_range(&p("a"), 1 << 63, &p("b"), 0, 1)),
            Code::Invalid
        );
        assert_eq!(
            code(lib.copy_range(&p("a"), 0, &p("none"), 0, 1)),
            Code::NotFound
        );
    }

    #[test]
    fn copy_range_never_writes_outside_the_library() {
        let (tmp, lib) = lib();
        fs::write(tmp.path().join("lib/a"), b"payload").expect("write");
        fs::write(tmp.path().join("outside"), b"sentinel").expect("write");
        std::os::unix::fs::symlink("../outside", tmp.path().join("lib/out")).expect("symlink");
        assert_eq!(
            code(lib.copy_range(&p("a"), 0, &p("out"), 0, 7)),
            Code::Loop
        );
        assert_eq!(
            code(lib.copy_range(&p("out"), 0, &p("a"), 0, 7)),
            Code::Loop
        );
        assert_eq!(
            fs::read(tmp.path().join("outside")).expect("read"),
            b"sentinel"
        );
    }

    #[test]
    fn copy_is_bounded_per_request_and_by_the_largest_offset() {
        assert_eq!(copy_len(u64::MAX, 0, 0), COPY_MAX);
        assert_eq!(copy_len(10, 0, 0), 10);
        assert_eq!(copy_len(u64::MAX, OFF_MAX - 5, 0), 5);
        assert_eq!(copy_len(u64::MAX, 0, OFF_MAX), 0);
    }

    #[test]
    fn fallback_copy_copies_the_same_bytes() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data: Vec<u8> = (0..3_000_000u32).map(|k| (k % 251) as u8).collect();
        fs::write(tmp.path().join("a"), &data).expect("write");
        let src = File::open(tmp.path().join("a")).expect("open");
        let dst = File::create(tmp.path().join("b")).expect("create");
        let n = copy_through_buffer(&src, 10, &dst, 5, u64::MAX).expect("copy");
        assert_eq!(n, data.len() as u64 - 10);
        let b = fs::read(tmp.path().join("b")).expect("read");
        assert_eq!(&b[5..], &data[10..]);
    }
}
