//! The vocabulary of file locks on the wire (`Request::Lock` and its kin): which kind of lock,
//! what it asks for, and a lock another holder has. docs/PROTOCOL.md, "Locks", says how the
//! server keeps them.

use crate::frame::DecodeError;

/// POSIX record locks (`fcntl`'s `F_SETLK` family, OFD locks included) or whole-file `flock`
/// locks. On Linux the two never conflict with each other, and the server keeps them apart the
/// same way. On the wire a `u8`: 0 POSIX, 1 flock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockFlavor {
    Posix,
    Flock,
}

/// What a lock request asks for. On the wire a `u8`: 0 read (shared), 1 write (exclusive),
/// 2 unlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// What a lock request asks of one holder: `owner`'s lock of `flavor` and `kind` on the
/// client's file `file`, over bytes `start..=end` (`u64::MAX`: to the end of the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockAsk {
    pub file: u64,
    pub owner: u64,
    pub flavor: LockFlavor,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
}

/// A lock that stands in the way of a `TestLock`'s: its kind (never `Unlock`), its byte
/// range (`end` inclusive; `u64::MAX` to the end of the file, however long it grows) and the
/// holder's process id on the server's machine (0 when the holder has none there, as for
/// another client's lock, which the server holds as an OFD lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeldLock {
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

impl LockFlavor {
    pub(crate) fn to_wire(self) -> u8 {
        match self {
            LockFlavor::Posix => 0,
            LockFlavor::Flock => 1,
        }
    }

    pub(crate) fn from_wire(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(LockFlavor::Posix),
            1 => Ok(LockFlavor::Flock),
            _ => Err(DecodeError::Invalid("lock flavor is neither 0 nor 1")),
        }
    }
}

impl LockKind {
    pub(crate) fn to_wire(self) -> u8 {
        match self {
            LockKind::Read => 0,
            LockKind::Write => 1,
            LockKind::Unlock => 2,
        }
    }

    pub(crate) fn from_wire(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(LockKind::Read),
            1 => Ok(LockKind::Write),
            2 => Ok(LockKind::Unlock),
            _ => Err(DecodeError::Invalid("lock kind is not 0, 1 or 2")),
        }
    }
}

/// Refuses a range that ends before it starts: the kernel never sends one, and a server
/// must not have to decide what it means.
pub(crate) fn check_range(start: u64, end: u64) -> Result<(), DecodeError> {
    if end < start {
        return Err(DecodeError::Invalid("lock range ends before it starts"));
    }
    Ok(())
}
