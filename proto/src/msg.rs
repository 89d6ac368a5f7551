//! Typed messages: one enum per direction, one `match` on the kind each way.
//!
//! Layouts are described field by field in docs/PROTOCOL.md ("Messages"); the order of fields
//! in `encode_*` and `decode_*` below is that layout. Paths are raw bytes (Linux names are
//! bytes, not text), relative to the library root, `/`-separated, the empty path meaning the
//! root itself. The server validates them; the codec only carries them.

use bytes::Bytes;

use crate::errno::Code;
use crate::frame::DecodeError;
use crate::lock::{check_range, HeldLock, LockFlavor, LockKind};
use crate::wire::{Reader, Writer};

/// A path relative to the library root, as raw bytes.
pub type WirePath = Vec<u8>;

/// Protocol versions this crate speaks (`Hello.min_version ..= Hello.max_version`).
pub const PROTOCOL_VERSION: u16 = 1;

/// Feature bits announced in the handshake (`Hello.features`, `HelloReply.features`).
pub mod features {
    /// `PutBegin`/`PutCommit`/`PutAbort` are served.
    pub const ATOMIC_PUT: u64 = 1 << 0;
    /// Hard links and symlinks are served.
    pub const LINKS: u64 = 1 << 1;
    /// `Watch` and `Changes` are served: the server says which names changed.
    pub const CHANGE_NOTIFY: u64 = 1 << 2;
    /// `GetXattr`, `SetXattr`, `ListXattr` and `RemoveXattr` are served.
    pub const XATTR: u64 = 1 << 3;
    /// `Fallocate` is served.
    pub const FALLOCATE: u64 = 1 << 4;
    /// `Seek` (SEEK_DATA and SEEK_HOLE) is served.
    pub const SEEK_HOLES: u64 = 1 << 5;
    /// `CopyRange` (a copy done by the server) is served.
    pub const COPY_RANGE: u64 = 1 << 6;
    /// The `Hello` reply ends with `admitted`: how the server let the client in (which of
    /// its key and its token counted). Sent only to a client that announced this bit, since
    /// an older client's decoder refuses bytes after `agent`.
    pub const ADMITTED: u64 = 1 << 7;
    /// `Lock`, `TestLock` and `ReleaseLocks` are served.
    pub const LOCKS: u64 = 1 << 8;
    /// A `Changes` is answered `ChangeStates`: each changed path with what the server holds
    /// under it now, so a client whose cache already agrees keeps it (its own changes). Sent
    /// only to a client that announced this bit.
    pub const CHANGE_STATE: u64 = 1 << 9;
}

/// How the server let a client in: the trailing `admitted` byte of the `Hello` reply
/// (`features::ADMITTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The server asks for neither a key nor a token.
    Open,
    /// By the shared token.
    Token,
    /// By the client key the TLS handshake proved, listed in the authorized keys.
    Key,
    /// By such a key, listed read-only: every change is refused (EROFS).
    ReadOnlyKey,
}

impl Admission {
    pub fn to_wire(self) -> u8 {
        match self {
            Admission::Open => 0,
            Admission::Token => 1,
            Admission::Key => 2,
            Admission::ReadOnlyKey => 3,
        }
    }

    pub fn from_wire(v: u8) -> Result<Admission, DecodeError> {
        Ok(match v {
            0 => Admission::Open,
            1 => Admission::Token,
            2 => Admission::Key,
            3 => Admission::ReadOnlyKey,
            _ => return Err(DecodeError::Invalid("unknown admission")),
        })
    }
}

/// Extended attributes: the `SetXattr.flags` bits and the sizes the codec enforces.
pub mod xattr {
    /// Fail with EEXIST if the attribute exists (Linux `XATTR_CREATE`, the same number).
    pub const CREATE: u32 = 1 << 0;
    /// Fail with ENODATA if the attribute does not exist (Linux `XATTR_REPLACE`).
    pub const REPLACE: u32 = 1 << 1;
    /// Longest name in bytes, namespace prefix included (Linux `XATTR_NAME_MAX`).
    pub const NAME_MAX: usize = 255;
    /// Largest value in bytes (Linux `XATTR_SIZE_MAX`).
    pub const VALUE_MAX: usize = 65536;
    /// Largest list of names, each followed by a NUL, in bytes (Linux `XATTR_LIST_MAX`).
    pub const LIST_MAX: usize = 65536;

    /// The size of `names` as `listxattr(2)` returns them: each name and its NUL.
    pub fn list_len(names: &[Vec<u8>]) -> usize {
        names.iter().map(|n| n.len() + 1).sum()
    }
}

/// `Fallocate.mode` bits (our own numbering; see docs/PROTOCOL.md), and the one mapping
/// between them and Linux's `FALLOC_FL_*` flags. Mode 0 allocates and extends the size.
pub mod falloc_mode {
    /// Allocate without changing the size (`FALLOC_FL_KEEP_SIZE`).
    pub const KEEP_SIZE: u32 = 1 << 0;
    /// Deallocate the range, which then reads as zeros (`FALLOC_FL_PUNCH_HOLE`); Linux
    /// requires `KEEP_SIZE` with it.
    pub const PUNCH_HOLE: u32 = 1 << 1;
    /// Make the range read as zeros, allocated (`FALLOC_FL_ZERO_RANGE`).
    pub const ZERO_RANGE: u32 = 1 << 2;
    /// Every bit this protocol carries.
    pub const ALL: u32 = KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE;

    const PAIRS: [(u32, i32); 3] = [
        (KEEP_SIZE, libc::FALLOC_FL_KEEP_SIZE),
        (PUNCH_HOLE, libc::FALLOC_FL_PUNCH_HOLE),
        (ZERO_RANGE, libc::FALLOC_FL_ZERO_RANGE),
    ];

    /// Our bits for Linux's `mode`, or `None` if it holds a flag we do not carry
    /// (`FALLOC_FL_COLLAPSE_RANGE`, `INSERT_RANGE`, `UNSHARE_RANGE`: EOPNOTSUPP).
    pub fn from_linux(mode: i32) -> Option<u32> {
        let mut left = mode;
        let mut ours = 0;
        for (bit, linux) in PAIRS {
            if mode & linux != 0 {
                ours |= bit;
                left &= !linux;
            }
        }
        (left == 0).then_some(ours)
    }

    /// Linux's `mode` for our bits, or `None` if `mode` holds a bit this protocol lacks.
    pub fn to_linux(mode: u32) -> Option<i32> {
        if mode & !ALL != 0 {
            return None;
        }
        Some(
            PAIRS
                .iter()
                .filter(|(bit, _)| mode & bit != 0)
                .fold(0, |acc, (_, linux)| acc | linux),
        )
    }
}

/// What a `Seek` looks for from its offset (`lseek`'s `SEEK_DATA` and `SEEK_HOLE`; the other
/// `whence` values need no server). On the wire a `u8`: 0 data, 1 hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Whence {
    /// The first byte at or after the offset that holds data (`SEEK_DATA`).
    Data,
    /// The first byte at or after the offset in a hole; the end of the file counts as one
    /// (`SEEK_HOLE`).
    Hole,
}

impl Whence {
    fn to_wire(self) -> u8 {
        match self {
            Whence::Data => 0,
            Whence::Hole => 1,
        }
    }

    fn from_wire(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(Whence::Data),
            1 => Ok(Whence::Hole),
            _ => Err(DecodeError::Invalid("seek whence is neither 0 nor 1")),
        }
    }
}

/// The longest a `Lock` waits on the server before it answers EAGAIN: a client wanting longer
/// asks again, and sees to its program's signals in between.
pub const MAX_LOCK_WAIT_MS: u32 = 5000;

/// The longest a `Changes` waits for a change before it answers with none.
pub const MAX_CHANGES_WAIT_MS: u32 = 5000;

/// `Rename.flags` bits (our own numbering; see docs/PROTOCOL.md).
pub mod rename_flags {
    /// Fail with EEXIST if the target exists (`RENAME_NOREPLACE`).
    pub const NOREPLACE: u32 = 1 << 0;
    /// Swap source and target atomically (`RENAME_EXCHANGE`).
    pub const EXCHANGE: u32 = 1 << 1;
}

/// Seconds and nanoseconds since the Unix epoch; `nanos` is below 10^9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn new(secs: i64, nanos: u32) -> Self {
        Timestamp { secs, nanos }
    }
}

/// The type of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    fn to_wire(self) -> u8 {
        match self {
            FileKind::File => 1,
            FileKind::Dir => 2,
            FileKind::Symlink => 3,
            FileKind::Fifo => 4,
            FileKind::Socket => 5,
            FileKind::CharDevice => 6,
            FileKind::BlockDevice => 7,
        }
    }

    fn from_wire(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => FileKind::File,
            2 => FileKind::Dir,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::Socket,
            6 => FileKind::CharDevice,
            7 => FileKind::BlockDevice,
            _ => return Err(DecodeError::Invalid("unknown file kind")),
        })
    }
}

/// What `stat` tells about a file on the server (never following a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attr {
    /// The server's inode number; with the device, stable while the file exists.
    pub ino: u64,
    pub kind: FileKind,
    /// Permission bits, `mode & 0o7777`.
    pub perm: u32,
    pub nlink: u32,
    pub size: u64,
    /// Allocated size in 512-byte units (sparse files have fewer than `size / 512`).
    pub blocks: u64,
    pub blksize: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Birth time, zero where the server's file system records none. With `ino` it tells a new
    /// file from an old one that had the same inode number.
    pub btime: Timestamp,
}

/// Identifies one content of one file: caches key data by it, so a file changed on the
/// server (new size, mtime or ctime, or a new file behind the same name, even one that reuses
/// the old inode number: its birth time differs) gets a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub ino: u64,
    pub btime: Timestamp,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

impl Attr {
    pub fn version(&self) -> Version {
        Version {
            ino: self.ino,
            btime: self.btime,
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
        }
    }
}

/// What the server holds under a changed path when it tells of the change
/// ([`Reply::ChangeStates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// It could not tell (the path could not be looked at): the client assumes anything.
    Unknown,
    /// No such name.
    Absent,
    /// These attributes (of the name itself, not of what a symlink points at).
    Present(Attr),
}

/// One changed path of a [`Reply::ChangeStates`], with the state of it and of its directory
/// as the server saw them after the change, when it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedPath {
    pub path: WirePath,
    pub state: EntryState,
    /// The attributes of the directory holding the path; `None` if unknown (or the path is
    /// the root).
    pub dir: Option<Attr>,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub attr: Attr,
}

/// A time to set: the server's clock now, or a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Timestamp),
}

/// Which attributes a `SetAttr` changes; `None` leaves one alone. A size is a truncate
/// (or an extension with zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttrs {
    pub perm: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

/// The file system's capacity, as `statvfs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub frsize: u32,
    pub namelen: u32,
}

/// The client's opening message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    /// The shared secret, empty when the client has none.
    pub token: Vec<u8>,
    /// Largest frame payload the client accepts.
    pub max_payload: u32,
    /// Largest `Read`/`Write` data length the client will use.
    pub max_io: u32,
    pub features: u64,
    /// Free text naming the client, for logs.
    pub agent: String,
}

impl Hello {
    /// This protocol version only, no token, the default limits, no features: what a client
    /// sends unless it says otherwise (`Hello { token, ..Hello::new(agent) }`).
    pub fn new(agent: impl Into<String>) -> Hello {
        Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            token: Vec::new(),
            max_payload: crate::frame::DEFAULT_MAX_PAYLOAD,
            max_io: crate::frame::DEFAULT_MAX_IO,
            features: 0,
            agent: agent.into(),
        }
    }
}

/// The server's answer to `Hello`: the chosen version and the server's own limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    pub version: u16,
    pub max_payload: u32,
    pub max_io: u32,
    pub features: u64,
    pub agent: String,
    /// How the client was let in; on the wire only when `features` has
    /// `features::ADMITTED` (`None`: an older server, which did not say).
    pub admitted: Option<Admission>,
}

/// Messages from client to server. Each gets exactly one reply with the same request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Must be the first request on a connection. Reply: `Hello` or `Error`.
    Hello(Hello),
    /// Reply: `Pong`.
    Ping,
    /// lstat. Reply: `Attr`.
    Stat { path: WirePath },
    /// Entries of a directory sorted by name bytes, those after `after` (empty: from the start),
    /// at most `max_entries` (0: as many as fit in one frame). Reply: `Listing`.
    List {
        path: WirePath,
        after: Vec<u8>,
        max_entries: u32,
    },
    /// Up to `len` bytes from `offset`; fewer only at end of file. Reply: `Data`.
    Read {
        path: WirePath,
        offset: u64,
        len: u32,
    },
    /// Writes all of `data` at `offset`. Reply: `Attr` (after the write).
    Write {
        path: WirePath,
        offset: u64,
        data: Bytes,
    },
    /// Creates a regular file (`O_CREAT`, plus `O_EXCL` when `exclusive`); an existing file is
    /// left as it is unless `exclusive`. Reply: `Attr`.
    Create {
        path: WirePath,
        perm: u32,
        exclusive: bool,
    },
    /// Changes mode, size and times. Reply: `Attr`.
    SetAttr { path: WirePath, attrs: SetAttrs },
    /// Reply: `Ok`.
    Unlink { path: WirePath },
    /// Reply: `Attr`.
    Mkdir { path: WirePath, perm: u32 },
    /// Reply: `Ok`.
    Rmdir { path: WirePath },
    /// Atomic rename; `flags` from `rename_flags`. Reply: `Ok`.
    Rename {
        from: WirePath,
        to: WirePath,
        flags: u32,
    },
    /// Creates `path` as a symlink holding `target` (stored as given). Reply: `Attr`.
    Symlink { path: WirePath, target: Vec<u8> },
    /// Reply: `Target`.
    Readlink { path: WirePath },
    /// Hard link: `new` names the file `existing` names. Reply: `Attr`.
    Link { existing: WirePath, new: WirePath },
    /// Reply: `Statfs`.
    Statfs,
    /// fsync (or fdatasync when `data_only`) the file on the server. Reply: `Ok`.
    Fsync { path: WirePath, data_only: bool },
    /// Starts an atomic upload to `path`: the server makes a hidden temporary file beside it.
    /// Reply: `PutStarted` with the temporary's path, to be filled with `Write`.
    PutBegin { path: WirePath, perm: u32 },
    /// fsyncs the temporary, sets its mtime if given, and renames it over `path`. Reply: `Attr`.
    PutCommit {
        temp: WirePath,
        path: WirePath,
        mtime: Option<Timestamp>,
    },
    /// Removes the temporary. Reply: `Ok`.
    PutAbort { temp: WirePath },
    /// The value of extended attribute `name` of `path` (a final symlink not followed).
    /// Reply: `Xattr`. No size is sent: a value is at most `xattr::VALUE_MAX` bytes, so the
    /// whole of it always fits a reply, and `ERANGE` for a small buffer is the client's to say.
    GetXattr { path: WirePath, name: Vec<u8> },
    /// Sets extended attribute `name` to `value`; `flags` from `xattr`. Reply: `Ok`.
    SetXattr {
        path: WirePath,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: u32,
    },
    /// The names of the extended attributes of `path` the server serves. Reply: `XattrNames`.
    ListXattr { path: WirePath },
    /// Reply: `Ok`.
    RemoveXattr { path: WirePath, name: Vec<u8> },
    /// `fallocate` on the file (following a final symlink beneath the root); `mode` from
    /// `falloc_mode`. Reply: `Attr` (after).
    Fallocate {
        path: WirePath,
        mode: u32,
        offset: u64,
        len: u64,
    },
    /// `lseek(offset, SEEK_DATA or SEEK_HOLE)` on the file. Reply: `Offset`.
    Seek {
        path: WirePath,
        offset: u64,
        whence: Whence,
    },
    /// Copies up to `len` bytes from `from` at `from_offset` to `to` at `to_offset` with the
    /// server's own `copy_file_range`. Reply: `Copied` (fewer bytes than asked is no error;
    /// none means the end of `from`).
    CopyRange {
        from: WirePath,
        from_offset: u64,
        to: WirePath,
        to_offset: u64,
        len: u64,
    },
    /// Takes, changes or drops a lock of `owner` over bytes `start..=end` of the file at `path`
    /// (docs/PROTOCOL.md, "Locks"). `file` is the client's own number for the file: later
    /// requests about the lock name it, not the path, which may have changed meanwhile.
    /// A flock lock covers the whole file whatever the range. Reply: `Ok`; `TryAgain` when
    /// another holder's lock is in the way. With `wait_ms` the server first waits that long
    /// (at most `MAX_LOCK_WAIT_MS`) for it to go, the connection's other requests going on
    /// meanwhile; a wait ended by a `ReleaseLocks` of the owner is `Interrupted`.
    Lock {
        path: WirePath,
        file: u64,
        owner: u64,
        flavor: LockFlavor,
        kind: LockKind,
        start: u64,
        end: u64,
        wait_ms: u32,
    },
    /// The first lock of another holder that would stand in the way of a POSIX lock of `kind`
    /// over `start..=end` (`F_GETLK`). Reply: `Lock`.
    TestLock {
        path: WirePath,
        file: u64,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
    },
    /// Drops every lock of `flavor` that `owner` holds on `file` and ends its waits, as a
    /// close does. Reply: `Ok`, also when it held none.
    ReleaseLocks {
        file: u64,
        owner: u64,
        flavor: LockFlavor,
    },
    /// Asks to be told of changes to the entries of these directories (docs/PROTOCOL.md,
    /// "Change notices"), on this connection. Reply: `Watched`, one flag per path.
    Watch { paths: Vec<WirePath> },
    /// The names changed since the last `Changes` in the directories watched on this
    /// connection, waiting up to `wait_ms` (at most `MAX_CHANGES_WAIT_MS`) for one. Reply:
    /// `Changes`.
    Changes { wait_ms: u32 },
}

/// Messages from server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Hello(HelloReply),
    /// The request failed; `code` is for programs, `message` for people.
    Error {
        code: Code,
        message: String,
    },
    Ok,
    Pong,
    Attr(Attr),
    /// `more` is true when entries after the last one remain; ask again with its name as `after`.
    Listing {
        entries: Vec<DirEntry>,
        more: bool,
    },
    /// The bytes read and the file's attributes as the server saw them while reading.
    Data {
        attr: Attr,
        data: Bytes,
    },
    Target(Vec<u8>),
    Statfs(Statfs),
    PutStarted {
        temp: WirePath,
    },
    /// An extended attribute's value, any bytes.
    Xattr(Vec<u8>),
    /// Extended attribute names, without their NULs.
    XattrNames(Vec<Vec<u8>>),
    /// The offset a `Seek` found.
    Offset(u64),
    /// What a `TestLock` found in the way, if anything.
    Lock(Option<HeldLock>),
    /// For each path of a `Watch`, whether it is watched now (false: not a directory, gone,
    /// or past the server's budget of watches; the client then relies on its TTL there).
    Watched(Vec<bool>),
    /// Paths whose entry changed (made, removed, renamed from or to, written, attributes
    /// changed; a watched directory's own path when it went or moved); `lost` when the server
    /// may have missed some, so the client should forget everything it caches.
    Changes {
        paths: Vec<WirePath>,
        lost: bool,
    },
    /// `Changes` with what each path holds now (`features::CHANGE_STATE`).
    ChangeStates {
        changes: Vec<ChangedPath>,
        lost: bool,
    },
    /// How many bytes a `CopyRange` copied, and the destination's attributes after it.
    Copied {
        copied: u64,
        attr: Attr,
    },
}

impl Reply {
    pub fn error(code: Code, message: impl Into<String>) -> Reply {
        Reply::Error {
            code,
            message: message.into(),
        }
    }
}

/// Encoded size of an `Attr`, the smallest a `DirEntry` can be (bar its name).
pub const ATTR_LEN: usize = 8 + 1 + 4 + 4 + 8 + 8 + 4 + 4 * 12;

/// Wire kinds. Requests are below 0x8000, replies at or above it (docs/PROTOCOL.md, "Kinds").
pub mod kind {
    pub const HELLO: u16 = 0x0001;
    pub const PING: u16 = 0x0002;
    pub const STAT: u16 = 0x0010;
    pub const LIST: u16 = 0x0011;
    pub const READ: u16 = 0x0012;
    pub const WRITE: u16 = 0x0013;
    pub const CREATE: u16 = 0x0014;
    pub const SET_ATTR: u16 = 0x0015;
    pub const UNLINK: u16 = 0x0016;
    pub const MKDIR: u16 = 0x0017;
    pub const RMDIR: u16 = 0x0018;
    pub const RENAME: u16 = 0x0019;
    pub const SYMLINK: u16 = 0x001a;
    pub const READLINK: u16 = 0x001b;
    pub const LINK: u16 = 0x001c;
    pub const STATFS: u16 = 0x001d;
    pub const FSYNC: u16 = 0x001e;
    pub const PUT_BEGIN: u16 = 0x0020;
    pub const PUT_COMMIT: u16 = 0x0021;
    pub const PUT_ABORT: u16 = 0x0022;
    pub const GET_XATTR: u16 = 0x0030;
    pub const SET_XATTR: u16 = 0x0031;
    pub const LIST_XATTR: u16 = 0x0032;
    pub const REMOVE_XATTR: u16 = 0x0033;
    pub const FALLOCATE: u16 = 0x0040;
    pub const SEEK: u16 = 0x0041;
    pub const COPY_RANGE: u16 = 0x0042;
    pub const LOCK: u16 = 0x0050;
    pub const TEST_LOCK: u16 = 0x0051;
    pub const RELEASE_LOCKS: u16 = 0x0052;
    pub const WATCH: u16 = 0x0060;
    pub const CHANGES: u16 = 0x0061;

    pub const R_HELLO: u16 = 0x8001;
    pub const R_ERROR: u16 = 0x8002;
    pub const R_OK: u16 = 0x8003;
    pub const R_PONG: u16 = 0x8004;
    pub const R_ATTR: u16 = 0x8005;
    pub const R_LISTING: u16 = 0x8006;
    pub const R_DATA: u16 = 0x8007;
    pub const R_TARGET: u16 = 0x8008;
    pub const R_STATFS: u16 = 0x8009;
    pub const R_PUT_STARTED: u16 = 0x800a;
    pub const R_XATTR: u16 = 0x800b;
    pub const R_XATTR_NAMES: u16 = 0x800c;
    pub const R_OFFSET: u16 = 0x800d;
    pub const R_COPIED: u16 = 0x800e;
    pub const R_LOCK: u16 = 0x800f;
    pub const R_WATCHED: u16 = 0x8010;
    pub const R_CHANGES: u16 = 0x8011;
    pub const R_CHANGE_STATES: u16 = 0x8012;
}

/// A message that can travel in a frame.
pub trait Message: Sized {
    fn kind(&self) -> u16;
    fn encode_body(&self, w: &mut Writer<'_>);
    fn decode_body(kind: u16, r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

impl Request {
    /// Whether sending this request twice has the same effect as sending it once, so a
    /// client may resend it after a lost connection without asking the user.
    pub fn is_idempotent(&self) -> bool {
        match self {
            Request::Hello(_)
            | Request::Ping
            | Request::Stat { .. }
            | Request::List { .. }
            | Request::Read { .. }
            | Request::Write { .. }
            | Request::SetAttr { .. }
            | Request::Readlink { .. }
            | Request::Statfs
            | Request::Fsync { .. }
            | Request::GetXattr { .. }
            | Request::ListXattr { .. }
            // Allocating, punching or zeroing a range twice leaves what once does.
            | Request::Fallocate { .. }
            | Request::Seek { .. }
            // The same bytes copied again to the same place (the kernel refuses overlapping
            // ranges of one file).
            | Request::CopyRange { .. }
            | Request::TestLock { .. }
            | Request::ReleaseLocks { .. }
            | Request::Watch { .. } => true,
            Request::Create { exclusive, .. } => !exclusive,
            // Setting the same value twice is setting it once, but a second create fails.
            Request::SetXattr { flags, .. } => flags & xattr::CREATE == 0,
            Request::Unlink { .. }
            | Request::Mkdir { .. }
            | Request::Rmdir { .. }
            | Request::Rename { .. }
            | Request::Symlink { .. }
            | Request::Link { .. }
            | Request::PutBegin { .. }
            | Request::PutCommit { .. }
            | Request::PutAbort { .. }
            | Request::RemoveXattr { .. }
            // A lock lives in the server process of one connection: on a fresh one it would
            // be another lock (`Transport::call_pinned` never resends).
            | Request::Lock { .. }
            // Changes are taken as they are told: on a fresh connection they would be lost.
            | Request::Changes { .. } => false,
        }
    }

    /// Whether the request changes the library (refused with EROFS by a read-only server).
    pub fn is_change(&self) -> bool {
        match self {
            Request::Hello(_)
            | Request::Ping
            | Request::Stat { .. }
            | Request::List { .. }
            | Request::Read { .. }
            | Request::Readlink { .. }
            | Request::Statfs
            | Request::Fsync { .. }
            | Request::GetXattr { .. }
            | Request::ListXattr { .. }
            | Request::Seek { .. }
            // Locks change no file; a read-only library may be locked, as a local one may.
            | Request::Lock { .. }
            | Request::TestLock { .. }
            | Request::ReleaseLocks { .. }
            | Request::Watch { .. }
            | Request::Changes { .. } => false,
            Request::Fallocate { .. } | Request::CopyRange { .. } => true,
            Request::Write { .. }
            | Request::Create { .. }
            | Request::SetAttr { .. }
            | Request::Unlink { .. }
            | Request::Mkdir { .. }
            | Request::Rmdir { .. }
            | Request::Rename { .. }
            | Request::Symlink { .. }
            | Request::Link { .. }
            | Request::PutBegin { .. }
            | Request::PutCommit { .. }
            | Request::PutAbort { .. }
            | Request::SetXattr { .. }
            | Request::RemoveXattr { .. } => true,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello(_) => "hello",
            Request::Ping => "ping",
            Request::Stat { .. } => "stat",
            Request::List { .. } => "list",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::Create { .. } => "create",
            Request::SetAttr { .. } => "setattr",
            Request::Unlink { .. } => "unlink",
            Request::Mkdir { .. } => "mkdir",
            Request::Rmdir { .. } => "rmdir",
            Request::Rename { .. } => "rename",
            Request::Symlink { .. } => "symlink",
            Request::Readlink { .. } => "readlink",
            Request::Link { .. } => "link",
            Request::Statfs => "statfs",
            Request::Fsync { .. } => "fsync",
            Request::PutBegin { .. } => "put-begin",
            Request::PutCommit { .. } => "put-commit",
            Request::PutAbort { .. } => "put-abort",
            Request::GetXattr { .. } => "getxattr",
            Request::SetXattr { .. } => "setxattr",
            Request::ListXattr { .. } => "listxattr",
            Request::RemoveXattr { .. } => "removexattr",
            Request::Fallocate { .. } => "fallocate",
            Request::Seek { .. } => "seek",
            Request::CopyRange { .. } => "copy-range",
            Request::Lock { .. } => "lock",
            Request::TestLock { .. } => "test-lock",
            Request::ReleaseLocks { .. } => "release-locks",
            Request::Watch { .. } => "watch",
            Request::Changes { .. } => "changes",
        }
    }
}

impl Message for Request {
    fn kind(&self) -> u16 {
        match self {
            Request::Hello(_) => kind::HELLO,
            Request::Ping => kind::PING,
            Request::Stat { .. } => kind::STAT,
            Request::List { .. } => kind::LIST,
            Request::Read { .. } => kind::READ,
            Request::Write { .. } => kind::WRITE,
            Request::Create { .. } => kind::CREATE,
            Request::SetAttr { .. } => kind::SET_ATTR,
            Request::Unlink { .. } => kind::UNLINK,
            Request::Mkdir { .. } => kind::MKDIR,
            Request::Rmdir { .. } => kind::RMDIR,
            Request::Rename { .. } => kind::RENAME,
            Request::Symlink { .. } => kind::SYMLINK,
            Request::Readlink { .. } => kind::READLINK,
            Request::Link { .. } => kind::LINK,
            Request::Statfs => kind::STATFS,
            Request::Fsync { .. } => kind::FSYNC,
            Request::PutBegin { .. } => kind::PUT_BEGIN,
            Request::PutCommit { .. } => kind::PUT_COMMIT,
            Request::PutAbort { .. } => kind::PUT_ABORT,
            Request::GetXattr { .. } => kind::GET_XATTR,
            Request::SetXattr { .. } => kind::SET_XATTR,
            Request::ListXattr { .. } => kind::LIST_XATTR,
            Request::RemoveXattr { .. } => kind::REMOVE_XATTR,
            Request::Fallocate { .. } => kind::FALLOCATE,
            Request::Seek { .. } => kind::SEEK,
            Request::CopyRange { .. } => kind::COPY_RANGE,
            Request::Lock { .. } => kind::LOCK,
            Request::TestLock { .. } => kind::TEST_LOCK,
            Request::ReleaseLocks { .. } => kind::RELEASE_LOCKS,
            Request::Watch { .. } => kind::WATCH,
            Request::Changes { .. } => kind::CHANGES,
        }
    }

    fn encode_body(&self, w: &mut Writer<'_>) {
        match self {
            Request::Hello(h) => {
                w.u16(h.min_version);
                w.u16(h.max_version);
                w.bytes(&h.token);
                w.u32(h.max_payload);
                w.u32(h.max_io);
                w.u64(h.features);
                w.string(&h.agent);
            }
            Request::Ping | Request::Statfs => {}
            Request::Stat { path }
            | Request::Unlink { path }
            | Request::Rmdir { path }
            | Request::Readlink { path }
            | Request::ListXattr { path } => w.bytes(path),
            Request::GetXattr { path, name } | Request::RemoveXattr { path, name } => {
                w.bytes(path);
                w.bytes(name);
            }
            Request::SetXattr {
                path,
                name,
                value,
                flags,
            } => {
                w.bytes(path);
                w.bytes(name);
                w.bytes(value);
                w.u32(*flags);
            }
            Request::List {
                path,
                after,
                max_entries,
            } => {
                w.bytes(path);
                w.bytes(after);
                w.u32(*max_entries);
            }
            Request::Read { path, offset, len } => {
                w.bytes(path);
                w.u64(*offset);
                w.u32(*len);
            }
            Request::Write { path, offset, data } => {
                w.bytes(path);
                w.u64(*offset);
                w.bytes(data);
            }
            Request::Create {
                path,
                perm,
                exclusive,
            } => {
                w.bytes(path);
                w.u32(*perm);
                w.bool(*exclusive);
            }
            Request::SetAttr { path, attrs } => {
                w.bytes(path);
                put_opt_u32(w, attrs.perm);
                put_opt_u64(w, attrs.size);
                put_set_time(w, attrs.atime);
                put_set_time(w, attrs.mtime);
            }
            Request::Mkdir { path, perm } | Request::PutBegin { path, perm } => {
                w.bytes(path);
                w.u32(*perm);
            }
            Request::Rename { from, to, flags } => {
                w.bytes(from);
                w.bytes(to);
                w.u32(*flags);
            }
            Request::Symlink { path, target } => {
                w.bytes(path);
                w.bytes(target);
            }
            Request::Link { existing, new } => {
                w.bytes(existing);
                w.bytes(new);
            }
            Request::Fsync { path, data_only } => {
                w.bytes(path);
                w.bool(*data_only);
            }
            Request::PutCommit { temp, path, mtime } => {
                w.bytes(temp);
                w.bytes(path);
                match mtime {
                    None => w.u8(0),
                    Some(t) => {
                        w.u8(1);
                        put_time(w, *t);
                    }
                }
            }
            Request::PutAbort { temp } => w.bytes(temp),
            Request::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                w.bytes(path);
                w.u32(*mode);
                w.u64(*offset);
                w.u64(*len);
            }
            Request::Seek {
                path,
                offset,
                whence,
            } => {
                w.bytes(path);
                w.u64(*offset);
                w.u8(whence.to_wire());
            }
            Request::CopyRange {
                from,
                from_offset,
                to,
                to_offset,
                len,
            } => {
                w.bytes(from);
                w.u64(*from_offset);
                w.bytes(to);
                w.u64(*to_offset);
                w.u64(*len);
            }
            Request::Lock {
                path,
                file,
                owner,
                flavor,
                kind,
                start,
                end,
                wait_ms,
            } => {
                w.bytes(path);
                w.u64(*file);
                w.u64(*owner);
                w.u8(flavor.to_wire());
                w.u8(kind.to_wire());
                w.u64(*start);
                w.u64(*end);
                w.u32(*wait_ms);
            }
            Request::TestLock {
                path,
                file,
                owner,
                kind,
                start,
                end,
            } => {
                w.bytes(path);
                w.u64(*file);
                w.u64(*owner);
                w.u8(kind.to_wire());
                w.u64(*start);
                w.u64(*end);
            }
            Request::ReleaseLocks {
                file,
                owner,
                flavor,
            } => {
                w.u64(*file);
                w.u64(*owner);
                w.u8(flavor.to_wire());
            }
            Request::Watch { paths } => {
                w.count(paths.len());
                for p in paths {
                    w.bytes(p);
                }
            }
            Request::Changes { wait_ms } => w.u32(*wait_ms),
        }
    }

    fn decode_body(k: u16, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match k {
            kind::HELLO => Request::Hello(Hello {
                min_version: r.u16()?,
                max_version: r.u16()?,
                token: r.bytes()?,
                max_payload: r.u32()?,
                max_io: r.u32()?,
                features: r.u64()?,
                agent: r.string()?,
            }),
            kind::PING => Request::Ping,
            kind::STAT => Request::Stat { path: r.bytes()? },
            kind::LIST => Request::List {
                path: r.bytes()?,
                after: r.bytes()?,
                max_entries: r.u32()?,
            },
            kind::READ => Request::Read {
                path: r.bytes()?,
                offset: r.u64()?,
                len: r.u32()?,
            },
            kind::WRITE => Request::Write {
                path: r.bytes()?,
                offset: r.u64()?,
                data: r.blob()?,
            },
            kind::CREATE => Request::Create {
                path: r.bytes()?,
                perm: r.u32()?,
                exclusive: r.bool()?,
            },
            kind::SET_ATTR => Request::SetAttr {
                path: r.bytes()?,
                attrs: SetAttrs {
                    perm: get_opt_u32(r)?,
                    size: get_opt_u64(r)?,
                    atime: get_set_time(r)?,
                    mtime: get_set_time(r)?,
                },
            },
            kind::UNLINK => Request::Unlink { path: r.bytes()? },
            kind::MKDIR => Request::Mkdir {
                path: r.bytes()?,
                perm: r.u32()?,
            },
            kind::RMDIR => Request::Rmdir { path: r.bytes()? },
            kind::RENAME => Request::Rename {
                from: r.bytes()?,
                to: r.bytes()?,
                flags: r.u32()?,
            },
            kind::SYMLINK => Request::Symlink {
                path: r.bytes()?,
                target: r.bytes()?,
            },
            kind::READLINK => Request::Readlink { path: r.bytes()? },
            kind::LINK => Request::Link {
                existing: r.bytes()?,
                new: r.bytes()?,
            },
            kind::STATFS => Request::Statfs,
            kind::FSYNC => Request::Fsync {
                path: r.bytes()?,
                data_only: r.bool()?,
            },
            kind::PUT_BEGIN => Request::PutBegin {
                path: r.bytes()?,
                perm: r.u32()?,
            },
            kind::PUT_COMMIT => Request::PutCommit {
                temp: r.bytes()?,
                path: r.bytes()?,
                mtime: match r.u8()? {
                    0 => None,
                    1 => Some(get_time(r)?),
                    _ => return Err(DecodeError::Invalid("option tag is neither 0 nor 1")),
                },
            },
            kind::PUT_ABORT => Request::PutAbort { temp: r.bytes()? },
            kind::GET_XATTR => Request::GetXattr {
                path: r.bytes()?,
                name: get_xattr_name(r)?,
            },
            kind::SET_XATTR => Request::SetXattr {
                path: r.bytes()?,
                name: get_xattr_name(r)?,
                value: get_xattr_value(r)?,
                flags: r.u32()?,
            },
            kind::LIST_XATTR => Request::ListXattr { path: r.bytes()? },
            kind::REMOVE_XATTR => Request::RemoveXattr {
                path: r.bytes()?,
                name: get_xattr_name(r)?,
            },
            kind::FALLOCATE => Request::Fallocate {
                path: r.bytes()?,
                mode: r.u32()?,
                offset: r.u64()?,
                len: r.u64()?,
            },
            kind::SEEK => Request::Seek {
                path: r.bytes()?,
                offset: r.u64()?,
                whence: Whence::from_wire(r.u8()?)?,
            },
            kind::COPY_RANGE => Request::CopyRange {
                from: r.bytes()?,
                from_offset: r.u64()?,
                to: r.bytes()?,
                to_offset: r.u64()?,
                len: r.u64()?,
            },
            kind::LOCK => {
                let lock = Request::Lock {
                    path: r.bytes()?,
                    file: r.u64()?,
                    owner: r.u64()?,
                    flavor: LockFlavor::from_wire(r.u8()?)?,
                    kind: LockKind::from_wire(r.u8()?)?,
                    start: r.u64()?,
                    end: r.u64()?,
                    wait_ms: r.u32()?,
                };
                if let Request::Lock { start, end, .. } = lock {
                    check_range(start, end)?;
                }
                lock
            }
            kind::TEST_LOCK => {
                let test = Request::TestLock {
                    path: r.bytes()?,
                    file: r.u64()?,
                    owner: r.u64()?,
                    kind: LockKind::from_wire(r.u8()?)?,
                    start: r.u64()?,
                    end: r.u64()?,
                };
                if let Request::TestLock { start, end, .. } = test {
                    check_range(start, end)?;
                }
                test
            }
            kind::RELEASE_LOCKS => Request::ReleaseLocks {
                file: r.u64()?,
                owner: r.u64()?,
                flavor: LockFlavor::from_wire(r.u8()?)?,
            },
            kind::WATCH => Request::Watch {
                paths: get_paths(r)?,
            },
            kind::CHANGES => Request::Changes { wait_ms: r.u32()? },
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

impl Message for Reply {
    fn kind(&self) -> u16 {
        match self {
            Reply::Hello(_) => kind::R_HELLO,
            Reply::Error { .. } => kind::R_ERROR,
            Reply::Ok => kind::R_OK,
            Reply::Pong => kind::R_PONG,
            Reply::Attr(_) => kind::R_ATTR,
            Reply::Listing { .. } => kind::R_LISTING,
            Reply::Data { .. } => kind::R_DATA,
            Reply::Target(_) => kind::R_TARGET,
            Reply::Statfs(_) => kind::R_STATFS,
            Reply::PutStarted { .. } => kind::R_PUT_STARTED,
            Reply::Xattr(_) => kind::R_XATTR,
            Reply::XattrNames(_) => kind::R_XATTR_NAMES,
            Reply::Offset(_) => kind::R_OFFSET,
            Reply::Lock(_) => kind::R_LOCK,
            Reply::Watched(_) => kind::R_WATCHED,
            Reply::Changes { .. } => kind::R_CHANGES,
            Reply::ChangeStates { .. } => kind::R_CHANGE_STATES,
            Reply::Copied { .. } => kind::R_COPIED,
        }
    }

    fn encode_body(&self, w: &mut Writer<'_>) {
        match self {
            Reply::Hello(h) => {
                w.u16(h.version);
                w.u32(h.max_payload);
                w.u32(h.max_io);
                w.u64(h.features);
                w.string(&h.agent);
                if let Some(a) = h.admitted {
                    w.u8(a.to_wire());
                }
            }
            Reply::Error { code, message } => {
                w.u32(code.to_wire());
                w.string(message);
            }
            Reply::Ok | Reply::Pong => {}
            Reply::Attr(a) => put_attr(w, a),
            Reply::Listing { entries, more } => {
                w.count(entries.len());
                for e in entries {
                    w.bytes(&e.name);
                    put_attr(w, &e.attr);
                }
                w.bool(*more);
            }
            Reply::Data { attr, data } => {
                put_attr(w, attr);
                w.bytes(data);
            }
            Reply::Target(t) => w.bytes(t),
            Reply::Statfs(s) => {
                w.u64(s.blocks);
                w.u64(s.bfree);
                w.u64(s.bavail);
                w.u64(s.files);
                w.u64(s.ffree);
                w.u32(s.bsize);
                w.u32(s.frsize);
                w.u32(s.namelen);
            }
            Reply::PutStarted { temp } => w.bytes(temp),
            Reply::Xattr(value) => w.bytes(value),
            Reply::XattrNames(names) => {
                w.count(names.len());
                for n in names {
                    w.bytes(n);
                }
            }
            Reply::Offset(offset) => w.u64(*offset),
            Reply::Watched(flags) => {
                w.count(flags.len());
                for f in flags {
                    w.bool(*f);
                }
            }
            Reply::Changes { paths, lost } => {
                w.count(paths.len());
                for p in paths {
                    w.bytes(p);
                }
                w.bool(*lost);
            }
            Reply::ChangeStates { changes, lost } => {
                w.count(changes.len());
                for c in changes {
                    w.bytes(&c.path);
                    match &c.state {
                        EntryState::Unknown => w.u8(0),
                        EntryState::Absent => w.u8(1),
                        EntryState::Present(a) => {
                            w.u8(2);
                            put_attr(w, a);
                        }
                    }
                    w.bool(c.dir.is_some());
                    if let Some(a) = &c.dir {
                        put_attr(w, a);
                    }
                }
                w.bool(*lost);
            }
            Reply::Lock(held) => {
                w.bool(held.is_some());
                if let Some(h) = held {
                    w.u8(h.kind.to_wire());
                    w.u64(h.start);
                    w.u64(h.end);
                    w.u32(h.pid);
                }
            }
            Reply::Copied { copied, attr } => {
                w.u64(*copied);
                put_attr(w, attr);
            }
        }
    }

    fn decode_body(k: u16, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match k {
            kind::R_HELLO => Reply::Hello(HelloReply {
                version: r.u16()?,
                max_payload: r.u32()?,
                max_io: r.u32()?,
                features: r.u64()?,
                agent: r.string()?,
                // A trailing field: present only after `features::ADMITTED` was agreed.
                admitted: match r.remaining() {
                    0 => None,
                    _ => Some(Admission::from_wire(r.u8()?)?),
                },
            }),
            kind::R_ERROR => Reply::Error {
                code: Code::from_wire(r.u32()?),
                message: r.string()?,
            },
            kind::R_OK => Reply::Ok,
            kind::R_PONG => Reply::Pong,
            kind::R_ATTR => Reply::Attr(get_attr(r)?),
            kind::R_LISTING => {
                let n = r.count(4 + ATTR_LEN)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(DirEntry {
                        name: r.bytes()?,
                        attr: get_attr(r)?,
                    });
                }
                Reply::Listing {
                    entries,
                    more: r.bool()?,
                }
            }
            kind::R_DATA => Reply::Data {
                attr: get_attr(r)?,
                data: r.blob()?,
            },
            kind::R_TARGET => Reply::Target(r.bytes()?),
            kind::R_STATFS => Reply::Statfs(Statfs {
                blocks: r.u64()?,
                bfree: r.u64()?,
                bavail: r.u64()?,
                files: r.u64()?,
                ffree: r.u64()?,
                bsize: r.u32()?,
                frsize: r.u32()?,
                namelen: r.u32()?,
            }),
            kind::R_PUT_STARTED => Reply::PutStarted { temp: r.bytes()? },
            kind::R_XATTR => Reply::Xattr(get_xattr_value(r)?),
            kind::R_XATTR_NAMES => {
                // Each name is at least its 4-byte length, so the count is bounded by what
                // remains before anything is reserved.
                let n = r.count(4)?;
                let mut names = Vec::with_capacity(n);
                let mut listed = 0usize;
                for _ in 0..n {
                    let name = get_xattr_name(r)?;
                    listed += name.len() + 1;
                    if listed > xattr::LIST_MAX {
                        return Err(DecodeError::Invalid("xattr names over 64 KiB"));
                    }
                    names.push(name);
                }
                Reply::XattrNames(names)
            }
            kind::R_OFFSET => Reply::Offset(r.u64()?),
            kind::R_WATCHED => {
                let n = r.count(1)?;
                let mut flags = Vec::with_capacity(n);
                for _ in 0..n {
                    flags.push(r.bool()?);
                }
                Reply::Watched(flags)
            }
            kind::R_CHANGES => Reply::Changes {
                paths: get_paths(r)?,
                lost: r.bool()?,
            },
            kind::R_CHANGE_STATES => {
                // Each change is at least its path's length, a state and a flag.
                let n = r.count(6)?;
                let mut changes = Vec::with_capacity(n);
                for _ in 0..n {
                    let path = r.bytes()?;
                    let state = match r.u8()? {
                        0 => EntryState::Unknown,
                        1 => EntryState::Absent,
                        2 => EntryState::Present(get_attr(r)?),
                        _ => return Err(DecodeError::Invalid("entry state not 0, 1 or 2")),
                    };
                    let dir = if r.bool()? { Some(get_attr(r)?) } else { None };
                    changes.push(ChangedPath { path, state, dir });
                }
                Reply::ChangeStates {
                    changes,
                    lost: r.bool()?,
                }
            }
            kind::R_LOCK => Reply::Lock(if r.bool()? {
                let held = HeldLock {
                    kind: LockKind::from_wire(r.u8()?)?,
                    start: r.u64()?,
                    end: r.u64()?,
                    pid: r.u32()?,
                };
                check_range(held.start, held.end)?;
                if held.kind == LockKind::Unlock {
                    return Err(DecodeError::Invalid("a held lock is not an unlock"));
                }
                Some(held)
            } else {
                None
            }),
            kind::R_COPIED => Reply::Copied {
                copied: r.u64()?,
                attr: get_attr(r)?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

/// An extended attribute name: at most `xattr::NAME_MAX` bytes, as Linux allows.
/// A count, then that many paths; each at least its 4-byte length, so the count is bounded by
/// what remains before anything is reserved.
fn get_paths(r: &mut Reader<'_>) -> Result<Vec<WirePath>, DecodeError> {
    let n = r.count(4)?;
    let mut paths = Vec::with_capacity(n);
    for _ in 0..n {
        paths.push(r.bytes()?);
    }
    Ok(paths)
}

fn get_xattr_name(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let name = r.bytes()?;
    if name.len() > xattr::NAME_MAX {
        return Err(DecodeError::Invalid("xattr name over 255 bytes"));
    }
    Ok(name)
}

/// An extended attribute value: at most `xattr::VALUE_MAX` bytes, as Linux allows.
fn get_xattr_value(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let value = r.bytes()?;
    if value.len() > xattr::VALUE_MAX {
        return Err(DecodeError::Invalid("xattr value over 64 KiB"));
    }
    Ok(value)
}

fn put_time(w: &mut Writer<'_>, t: Timestamp) {
    w.i64(t.secs);
    w.u32(t.nanos);
}

fn get_time(r: &mut Reader<'_>) -> Result<Timestamp, DecodeError> {
    let secs = r.i64()?;
    let nanos = r.u32()?;
    if nanos >= 1_000_000_000 {
        return Err(DecodeError::Invalid("nanoseconds not below 10^9"));
    }
    Ok(Timestamp { secs, nanos })
}

fn put_attr(w: &mut Writer<'_>, a: &Attr) {
    w.u64(a.ino);
    w.u8(a.kind.to_wire());
    w.u32(a.perm);
    w.u32(a.nlink);
    w.u64(a.size);
    w.u64(a.blocks);
    w.u32(a.blksize);
    put_time(w, a.atime);
    put_time(w, a.mtime);
    put_time(w, a.ctime);
    put_time(w, a.btime);
}

fn get_attr(r: &mut Reader<'_>) -> Result<Attr, DecodeError> {
    Ok(Attr {
        ino: r.u64()?,
        kind: FileKind::from_wire(r.u8()?)?,
        perm: r.u32()?,
        nlink: r.u32()?,
        size: r.u64()?,
        blocks: r.u64()?,
        blksize: r.u32()?,
        atime: get_time(r)?,
        mtime: get_time(r)?,
        ctime: get_time(r)?,
        btime: get_time(r)?,
    })
}

fn put_opt_u32(w: &mut Writer<'_>, v: Option<u32>) {
    match v {
        None => w.u8(0),
        Some(v) => {
            w.u8(1);
            w.u32(v);
        }
    }
}

fn put_opt_u64(w: &mut Writer<'_>, v: Option<u64>) {
    match v {
        None => w.u8(0),
        Some(v) => {
            w.u8(1);
            w.u64(v);
        }
    }
}

fn get_opt_u32(r: &mut Reader<'_>) -> Result<Option<u32>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u32()?)),
        _ => Err(DecodeError::Invalid("option tag is neither 0 nor 1")),
    }
}

fn get_opt_u64(r: &mut Reader<'_>) -> Result<Option<u64>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u64()?)),
        _ => Err(DecodeError::Invalid("option tag is neither 0 nor 1")),
    }
}

fn put_set_time(w: &mut Writer<'_>, v: Option<SetTime>) {
    match v {
        None => w.u8(0),
        Some(SetTime::Now) => w.u8(1),
        Some(SetTime::At(t)) => {
            w.u8(2);
            put_time(w, t);
        }
    }
}

fn get_set_time(r: &mut Reader<'_>) -> Result<Option<SetTime>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(SetTime::Now)),
        2 => Ok(Some(SetTime::At(get_time(r)?))),
        _ => Err(DecodeError::Invalid("time tag is not 0, 1 or 2")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falloc_modes_map_to_linux_and_back() {
        use falloc_mode::*;
        for ours in 0..=ALL {
            let linux = to_linux(ours).expect("our bits map");
            assert_eq!(from_linux(linux), Some(ours), "{ours:#x}");
        }
        assert_eq!(
            to_linux(PUNCH_HOLE | KEEP_SIZE),
            Some(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
        );
        assert_eq!(to_linux(ZERO_RANGE), Some(libc::FALLOC_FL_ZERO_RANGE));
        assert_eq!(to_linux(1 << 3), None);
        assert_eq!(from_linux(libc::FALLOC_FL_COLLAPSE_RANGE), None);
        assert_eq!(
            from_linux(libc::FALLOC_FL_INSERT_RANGE | libc::FALLOC_FL_KEEP_SIZE),
            None
        );
    }

    #[test]
    fn fallocate_and_seek_bytes() {
        let req = Request::Fallocate {
            path: b"f".to_vec(),
            mode: falloc_mode::PUNCH_HOLE | falloc_mode::KEEP_SIZE,
            offset: 0x1000,
            len: 0x2000,
        };
        #[rustfmt::skip]
        let want: &[u8] = &[
            0, 0, 0, 1, b'f',                 // path
            0, 0, 0, 3,                       // mode: KEEP_SIZE | PUNCH_HOLE
            0, 0, 0, 0, 0, 0, 0x10, 0,        // offset
            0, 0, 0, 0, 0, 0, 0x20, 0,        // len
        ];
        let mut got = Vec::new();
        req.encode_body(&mut Writer::new(&mut got));
        assert_eq!(got, want);
        assert_eq!(decode::<Request>(kind::FALLOCATE, want), Ok(req));

        let seek = Request::Seek {
            path: Vec::new(),
            offset: 7,
            whence: Whence::Hole,
        };
        let want: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 1];
        let mut got = Vec::new();
        seek.encode_body(&mut Writer::new(&mut got));
        assert_eq!(got, want);
        assert_eq!(decode::<Request>(kind::SEEK, want), Ok(seek));
    }

    /// `admitted` trails the Hello reply: absent (an older server) is `None`, present is one
    /// byte, an unknown value or a second byte is malformed.
    #[test]
    fn the_hello_replys_trailing_admitted_byte() {
        let mut reply = HelloReply {
            version: 1,
            max_payload: 1 << 16,
            max_io: 1 << 12,
            features: features::ADMITTED,
            agent: "s".into(),
            admitted: None,
        };
        let mut old = Vec::new();
        Reply::Hello(reply.clone()).encode_body(&mut Writer::new(&mut old));
        assert_eq!(
            decode::<Reply>(kind::R_HELLO, &old),
            Ok(Reply::Hello(reply.clone()))
        );
        reply.admitted = Some(Admission::ReadOnlyKey);
        let mut new = Vec::new();
        Reply::Hello(reply.clone()).encode_body(&mut Writer::new(&mut new));
        assert_eq!(new.len(), old.len() + 1);
        assert_eq!(new.last(), Some(&3));
        assert_eq!(
            decode::<Reply>(kind::R_HELLO, &new),
            Ok(Reply::Hello(reply))
        );
        let bad = [old.as_slice(), &[4]].concat();
        assert!(decode::<Reply>(kind::R_HELLO, &bad).is_err());
        let long = [new.as_slice(), &[0]].concat();
        assert!(decode::<Reply>(kind::R_HELLO, &long).is_err());
    }

    #[test]
    fn attr_len_matches_encoding() {
        let a = Attr {
            ino: 1,
            kind: FileKind::File,
            perm: 0o644,
            nlink: 1,
            size: 0,
            blocks: 0,
            blksize: 4096,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            btime: Timestamp::default(),
        };
        let mut v = Vec::new();
        put_attr(&mut Writer::new(&mut v), &a);
        assert_eq!(v.len(), ATTR_LEN);
    }

    fn decode<M: Message>(k: u16, payload: &[u8]) -> Result<M, DecodeError> {
        let mut r = Reader::new(payload);
        let m = M::decode_body(k, &mut r)?;
        r.finish()?;
        Ok(m)
    }

    #[test]
    fn set_attr_bytes() {
        let req = Request::SetAttr {
            path: b"f".to_vec(),
            attrs: SetAttrs {
                perm: Some(0o644),
                size: None,
                atime: Some(SetTime::Now),
                mtime: Some(SetTime::At(Timestamp::new(5, 6))),
            },
        };
        #[rustfmt::skip]
        let want: &[u8] = &[
            0, 0, 0, 1, b'f',                               // path
            1, 0, 0, 0x01, 0xa4,                            // perm: Some(0o644)
            0,                                              // size: None
            1,                                              // atime: Now
            2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 6,          // mtime: At(5 s, 6 ns)
        ];
        let mut got = Vec::new();
        req.encode_body(&mut Writer::new(&mut got));
        assert_eq!(got, want);
        assert_eq!(decode::<Request>(kind::SET_ATTR, want), Ok(req));
    }

    #[test]
    fn malformed_request_payloads() {
        const NANOS_1E9: [u8; 4] = 1_000_000_000u32.to_be_bytes();
        // Path "", then a name of 256 bytes.
        let mut long_name = vec![0, 0, 0, 0, 0, 0, 1, 0];
        long_name.extend([b'a'; 256]);
        // Path "", name "user.a", then a value one byte over the limit.
        let mut big_value = vec![0, 0, 0, 0, 0, 0, 0, 6];
        big_value.extend(b"user.a");
        big_value.extend(((xattr::VALUE_MAX + 1) as u32).to_be_bytes());
        big_value.extend(vec![0; xattr::VALUE_MAX + 1]);
        big_value.extend([0, 0, 0, 0]);
        #[rustfmt::skip]
        let cases: &[(&str, u16, &[u8], DecodeError)] = &[
            ("ping with a trailing byte", kind::PING, &[0],
                DecodeError::TrailingBytes(1)),
            ("path length past the end", kind::STAT, &[0, 0, 0, 5, b'a', b'b'],
                DecodeError::Truncated),
            ("create: exclusive is 2", kind::CREATE, &[0, 0, 0, 0, 0, 0, 0, 0, 2],
                DecodeError::Invalid("boolean is neither 0 nor 1")),
            ("setattr: perm tag 2", kind::SET_ATTR, &[0, 0, 0, 0, 2],
                DecodeError::Invalid("option tag is neither 0 nor 1")),
            ("setattr: atime tag 3", kind::SET_ATTR, &[0, 0, 0, 0, 0, 0, 3],
                DecodeError::Invalid("time tag is not 0, 1 or 2")),
            ("setattr: mtime nanos 10^9", kind::SET_ATTR,
                &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0,
                  NANOS_1E9[0], NANOS_1E9[1], NANOS_1E9[2], NANOS_1E9[3]],
                DecodeError::Invalid("nanoseconds not below 10^9")),
            ("putcommit: mtime tag 2", kind::PUT_COMMIT, &[0, 0, 0, 0, 0, 0, 0, 0, 2],
                DecodeError::Invalid("option tag is neither 0 nor 1")),
            ("hello: agent not UTF-8", kind::HELLO,
                &[0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff],
                DecodeError::Invalid("text is not UTF-8")),
            ("a reply kind", kind::R_OK, &[],
                DecodeError::UnknownKind(kind::R_OK)),
            ("getxattr: name of 256 bytes", kind::GET_XATTR, &long_name,
                DecodeError::Invalid("xattr name over 255 bytes")),
            ("setxattr: value of 64 KiB + 1", kind::SET_XATTR, &big_value,
                DecodeError::Invalid("xattr value over 64 KiB")),
            ("seek: whence 2", kind::SEEK, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                DecodeError::Invalid("seek whence is neither 0 nor 1")),
            ("fallocate: len cut short", kind::FALLOCATE,
                &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                DecodeError::Truncated),
        ];
        for (what, k, payload, want) in cases {
            assert_eq!(
                decode::<Request>(*k, payload).err().as_ref(),
                Some(want),
                "{what}"
            );
        }
    }

    #[test]
    fn malformed_reply_payloads() {
        let mut attr_kind_0 = vec![0u8; ATTR_LEN];
        attr_kind_0[8] = 0; // the kind byte follows the 8-byte inode number
        let mut big_value = ((xattr::VALUE_MAX + 1) as u32).to_be_bytes().to_vec();
        big_value.extend(vec![0; xattr::VALUE_MAX + 1]);
        let mut long_name = vec![0, 0, 0, 1, 0, 0, 1, 0];
        long_name.extend([b'a'; 256]);
        // 258 names of 254 bytes, 255 each with its NUL: 65790 bytes, over 64 KiB.
        let mut many_names = 258u32.to_be_bytes().to_vec();
        for _ in 0..258 {
            many_names.extend(254u32.to_be_bytes());
            many_names.extend([b'n'; 254]);
        }
        #[rustfmt::skip]
        let cases: &[(&str, u16, &[u8], DecodeError)] = &[
            ("attr: file kind 0", kind::R_ATTR, &attr_kind_0,
                DecodeError::Invalid("unknown file kind")),
            ("listing: count beyond the payload", kind::R_LISTING, &[0, 0, 0, 1, 0],
                DecodeError::Truncated),
            ("listing: more is 7", kind::R_LISTING, &[0, 0, 0, 0, 7],
                DecodeError::Invalid("boolean is neither 0 nor 1")),
            ("error: message length past the end", kind::R_ERROR, &[0, 0, 0, 2, 0, 0, 0, 1],
                DecodeError::Truncated),
            ("xattr: value of 64 KiB + 1", kind::R_XATTR, &big_value,
                DecodeError::Invalid("xattr value over 64 KiB")),
            ("xattr names: a name of 256 bytes", kind::R_XATTR_NAMES, &long_name,
                DecodeError::Invalid("xattr name over 255 bytes")),
            ("xattr names: over 64 KiB in all", kind::R_XATTR_NAMES, &many_names,
                DecodeError::Invalid("xattr names over 64 KiB")),
            ("xattr names: count beyond the payload", kind::R_XATTR_NAMES, &[0, 0, 0, 2, 0, 0, 0, 0],
                DecodeError::Truncated),
            ("a request kind", kind::PING, &[],
                DecodeError::UnknownKind(kind::PING)),
        ];
        for (what, k, payload, want) in cases {
            assert_eq!(
                decode::<Reply>(*k, payload).err().as_ref(),
                Some(want),
                "{what}"
            );
        }
    }

    #[test]
    fn xattr_names_at_the_limit_decode() {
        // 256 names of 255 bytes and their NULs are exactly 64 KiB: the largest list allowed.
        let names = vec![vec![b'n'; 255]; 256];
        assert_eq!(xattr::list_len(&names), xattr::LIST_MAX);
        let reply = Reply::XattrNames(names);
        let mut bytes = Vec::new();
        reply.encode_body(&mut Writer::new(&mut bytes));
        assert_eq!(decode::<Reply>(kind::R_XATTR_NAMES, &bytes), Ok(reply));
    }

    #[test]
    fn set_xattr_with_create_is_not_resent() {
        let set = |flags| Request::SetXattr {
            path: b"f".to_vec(),
            name: b"user.a".to_vec(),
            value: vec![0],
            flags,
        };
        assert!(set(0).is_idempotent());
        assert!(set(xattr::REPLACE).is_idempotent());
        assert!(!set(xattr::CREATE).is_idempotent());
        assert!(set(0).is_change());
        let remove = Request::RemoveXattr {
            path: b"f".to_vec(),
            name: b"user.a".to_vec(),
        };
        assert!(!remove.is_idempotent());
        assert!(remove.is_change());
    }

    #[test]
    fn every_request_kind_is_below_every_reply_kind() {
        for k in [
            kind::HELLO,
            kind::PUT_ABORT,
            kind::FSYNC,
            kind::REMOVE_XATTR,
            kind::COPY_RANGE,
        ] {
            assert!(k < 0x8000);
        }
        for k in [
            kind::R_HELLO,
            kind::R_PUT_STARTED,
            kind::R_XATTR_NAMES,
            kind::R_COPIED,
        ] {
            assert!(k >= 0x8000);
        }
    }
}
