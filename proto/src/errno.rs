//! Error codes carried on the wire, and the one mapping between them and errno values.
//!
//! Wire numbers are the Linux errno numbers (docs/PROTOCOL.md, "Errors"), so a client in any
//! language can read them off `errno.h`. Both directions live here side by side: the server
//! turns an `io::Error` into a `Code`, the client turns a `Code` into the errno it returns to
//! the kernel. Nothing else in shelf picks an errno.

use std::fmt;
use std::io;

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $errno:ident, $text:literal; )*) => {
        /// An errno-style error code carried in an `Error` reply.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[$doc])* $name, )*
        }

        impl Code {
            /// Every code, for tests and documentation.
            pub const ALL: &'static [Code] = &[$(Code::$name),*];

            /// The errno value this code stands for on Linux; also its wire number.
            pub fn errno(self) -> i32 {
                match self { $( Code::$name => libc::$errno, )* }
            }

            /// The code for an errno value; errnos shelf does not carry become `Io`
            /// (the same fallback as fuser's `Errno::from_i32`).
            pub fn from_errno(errno: i32) -> Code {
                $( if errno == libc::$errno { return Code::$name; } )*
                Code::Io
            }

            /// A short description for people; the code itself is for programs.
            pub fn text(self) -> &'static str {
                match self { $( Code::$name => $text, )* }
            }
        }
    };
}

codes! {
    /// EPERM: not allowed (chown to another user, setuid bits, device nodes).
    NotPermitted = EPERM, "operation not permitted";
    /// ENOENT
    NotFound = ENOENT, "no such file or directory";
    /// EIO: the catch-all for failures with no better code.
    Io = EIO, "input/output error";
    /// EBADF
    BadHandle = EBADF, "bad file handle";
    /// EAGAIN
    TryAgain = EAGAIN, "resource temporarily unavailable";
    /// EACCES: permission denied, also a wrong or missing token.
    Access = EACCES, "permission denied";
    /// EBUSY: also "server busy" when the server is at `--max-clients`.
    Busy = EBUSY, "resource busy";
    /// EEXIST
    Exists = EEXIST, "file exists";
    /// EXDEV
    CrossDevice = EXDEV, "cross-device link";
    /// ENOTDIR
    NotDir = ENOTDIR, "not a directory";
    /// EISDIR
    IsDir = EISDIR, "is a directory";
    /// EINVAL
    Invalid = EINVAL, "invalid argument";
    /// EMFILE
    TooManyOpen = EMFILE, "too many open files";
    /// ENOTTY: an ioctl the mount does not know (every one; used by clients, not sent by the
    /// server).
    NotTty = ENOTTY, "inappropriate ioctl for device";
    /// EFBIG
    FileTooBig = EFBIG, "file too large";
    /// ENOSPC
    NoSpace = ENOSPC, "no space left on device";
    /// EROFS: every change on a `--read-only` server.
    ReadOnly = EROFS, "read-only file system";
    /// EMLINK
    TooManyLinks = EMLINK, "too many links";
    /// ERANGE
    Range = ERANGE, "result out of range";
    /// ENAMETOOLONG: a name over 255 bytes or a path over 4096.
    NameTooLong = ENAMETOOLONG, "file name too long";
    /// ENOSYS
    NotImplemented = ENOSYS, "function not implemented";
    /// ENOTEMPTY
    NotEmpty = ENOTEMPTY, "directory not empty";
    /// ELOOP: also a path that would leave the library through a symlink.
    Loop = ELOOP, "too many levels of symbolic links";
    /// EOVERFLOW
    Overflow = EOVERFLOW, "value too large";
    /// EPROTO: the peer broke the protocol.
    Protocol = EPROTO, "protocol error";
    /// EOPNOTSUPP
    NotSupported = EOPNOTSUPP, "operation not supported";
    /// ENOTCONN: no connection to the server.
    NotConnected = ENOTCONN, "not connected to the server";
    /// ETIMEDOUT
    TimedOut = ETIMEDOUT, "timed out";
    /// ESTALE: the file changed on the server under an open handle.
    Stale = ESTALE, "stale file handle";
    /// EDQUOT
    Quota = EDQUOT, "disk quota exceeded";
    /// ETXTBSY
    TextBusy = ETXTBSY, "text file busy";
    /// EINTR
    Interrupted = EINTR, "interrupted";
    /// ENODATA: no extended attribute of that name (also ENOATTR, the same number on Linux).
    NoData = ENODATA, "no data available";
    /// E2BIG: an extended attribute value or list over 64 KiB.
    TooBig = E2BIG, "argument list too long";
    /// ENXIO: a `Seek` for data or a hole at or past the end of the file.
    NoDeviceOrAddress = ENXIO, "no such device or address";
    /// EDEADLK: a lock wait that would deadlock.
    Deadlock = EDEADLK, "resource deadlock avoided";
    /// ENOLCK: no room for another lock; also a lock lost with the server process that held
    /// it (docs/PROTOCOL.md, "Locks").
    NoLocks = ENOLCK, "no locks available";
}

impl Code {
    /// The code for an I/O error from the operating system; errors without an OS code
    /// (a short read, invalid data) are `Io`.
    pub fn from_io(err: &io::Error) -> Code {
        match err.raw_os_error() {
            Some(errno) => Code::from_errno(errno),
            None => match err.kind() {
                io::ErrorKind::NotFound => Code::NotFound,
                io::ErrorKind::PermissionDenied => Code::Access,
                io::ErrorKind::AlreadyExists => Code::Exists,
                io::ErrorKind::InvalidInput => Code::Invalid,
                io::ErrorKind::TimedOut => Code::TimedOut,
                _ => Code::Io,
            },
        }
    }

    /// The wire number (docs/PROTOCOL.md, "Errors").
    pub fn to_wire(self) -> u32 {
        self.errno() as u32
    }

    /// Unknown wire numbers become `Io`, so a newer server's codes still read as errors.
    pub fn from_wire(n: u32) -> Code {
        i32::try_from(n).map(Code::from_errno).unwrap_or(Code::Io)
    }

    /// An `io::Error` carrying this code's errno, for code that speaks `std::io`.
    pub fn to_io(self) -> io::Error {
        io::Error::from_raw_os_error(self.errno())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_errno_and_wire() {
        for &code in Code::ALL {
            assert_eq!(Code::from_errno(code.errno()), code, "{code:?}");
            assert_eq!(Code::from_wire(code.to_wire()), code, "{code:?}");
            assert_eq!(Code::from_io(&code.to_io()), code, "{code:?}");
        }
    }

    #[test]
    fn errnos_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for &code in Code::ALL {
            assert!(seen.insert(code.errno()), "{code:?} shares an errno");
        }
    }

    #[test]
    fn unknown_numbers_are_io() {
        assert_eq!(Code::from_wire(0xdead_beef), Code::Io);
        assert_eq!(Code::from_wire(4000), Code::Io);
        assert_eq!(Code::from_errno(libc::ECHILD), Code::Io);
    }

    #[test]
    fn well_known_values() {
        assert_eq!(Code::NotFound.to_wire(), 2);
        assert_eq!(Code::NotEmpty.errno(), libc::ENOTEMPTY);
        assert_eq!(
            Code::from_io(&io::Error::from(io::ErrorKind::NotFound)),
            Code::NotFound
        );
    }
}
