//! The shelf wire protocol: frames, typed messages and error codes, as pure encode/decode.
//!
//! This crate knows bytes and messages, nothing about sockets or files; the full byte-level
//! description is `docs/PROTOCOL.md`.
//!
//! Layout:
//! - [`frame`]: the 16-byte header, payload limits, `Frame::encode`/`decode`.
//! - [`wire`]: checked primitive fields (`Reader`, `Writer`).
//! - [`msg`]: `Request` and `Reply`, one variant per message, and the shared value types.
//! - [`handshake`]: the limits and features a connection agrees on, one function both sides
//!   call ([`negotiate`]).
//! - [`errno`]: `Code`, the errno-style error code, and its one mapping each way.
//! - [`io`]: reading and writing whole frames on any `Read`/`Write` stream.
//! - [`token`]: what a token file holds, one rule for both sides.
//! - [`reserved`]: the names the implementation keeps for itself, hidden from people.

pub mod errno;
pub mod frame;
pub mod handshake;
pub mod io;
pub mod lock;
pub mod msg;
pub mod reserved;
pub mod token;
pub mod wire;

pub use bytes::Bytes;
pub use errno::Code;
pub use frame::{
    DecodeError, EncodeError, Frame, Header, DEFAULT_MAX_IO, DEFAULT_MAX_PAYLOAD, HARD_MAX_PAYLOAD,
    HEADER_LEN,
};
pub use handshake::{negotiate, Limits, NegotiateError, Negotiated, IO_OVERHEAD, MIN_PAYLOAD};
pub use io::{is_timeout, write_frame, write_parts, FrameReader, ReadError};
pub use lock::{HeldLock, LockAsk, LockFlavor, LockKind};
pub use msg::{
    falloc_mode, features, rename_flags, xattr, Admission, Attr, ChangedPath, DirEntry, EntryState,
    FileKind, Hello, HelloReply, Message, Reply, Request, SetAttrs, SetTime, Statfs, Timestamp,
    Version, Whence, WirePath, MAX_CHANGES_WAIT_MS, MAX_LOCK_WAIT_MS, PROTOCOL_VERSION,
};
