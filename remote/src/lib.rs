//! shelf-remote, the client side of the wire: everything between a caller that wants a file
//! operation done on the server and the bytes on a socket. The FUSE core and the CLI both use
//! it, and nothing above it sees a socket.
//!
//! What is hard, and where it is handled:
//! 1. *Pipelining.* Many requests are in flight on one connection and replies come back in any
//!    order. [`Connection`] gives each request an id, and whichever waiter is reading routes
//!    every reply to the waiter holding that id ([`Pending`]).
//! 2. *Never hang.* A server that dies, hangs up or stops answering must turn into an error
//!    promptly. When the stream ends every waiter is failed at once; each wait is bounded by
//!    `request_timeout`; connects are bounded by `connect_timeout`.
//! 3. *Reconnecting.* Requests are stateless and path-based (docs/PROTOCOL.md), so a fresh
//!    connection can carry on where a dead one stopped. [`Pool`] replaces a dead connection on
//!    next use and resends an idempotent request once ([`shelf_proto::Request::is_idempotent`]).
//! 4. *Typed calls.* [`Client`] turns `Reply::Error` into [`RemoteError::Server`] and a reply of
//!    the wrong kind into [`RemoteError::Protocol`], once for every caller.
//! 5. *Pipelined transfers.* [`ranges`] holds the one range reader and writer every `Read` and
//!    `Write` goes through (client, the mount's fetch and write-behind, `get`, `put`): the
//!    window, splitting at `max_io`, in-order pieces, resending a lost piece once where
//!    allowed, and the version check across pieces.
//!
//! Layout: [`stream`] (the socket abstraction), [`connection`], [`pool`], [`client`],
//! [`ranges`], `sys` (the two socket calls `std` lacks), and this file's shared types. Test transports (the
//! real server in-process, in memory, failing on cue) live in the dev-only `shelf-testkit`.

use std::io;
use std::time::{Duration, Instant};

use shelf_proto::{Code, Reply, Request};

pub mod client;
pub mod connection;
pub mod pool;
pub mod ranges;
pub mod stream;
mod sys;
#[cfg(test)]
pub(crate) mod testserver;

pub use client::Client;
pub use connection::{data_moved, Connection, Pending, CLIENT_FEATURES};
pub use pool::{Pool, PoolState};
pub use shelf_secure;
pub use shelf_secure::KeyPair;
pub use stream::Stream;

/// Limits negotiated in the handshake ([`shelf_proto::negotiate`], the function the server
/// calls too): the smaller of what each side announced, bounded alike on both sides.
pub use shelf_proto::Limits;

/// How to reach a server and how long to wait for it.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `HOST:PORT`.
    pub addr: String,
    /// The shared secret, when the server requires one (`shelfd --token-file`).
    pub token: Option<Vec<u8>>,
    /// Bound on one TCP connect plus the handshake.
    pub connect_timeout: Duration,
    /// Bound on waiting for one reply; past it the connection is given up (see [`Pending`]).
    pub request_timeout: Duration,
    /// Names this client in the server's logs.
    pub agent: String,
    /// TLS, and how the server is verified; `None`: plain TCP (`--insecure-plaintext`).
    pub tls: Option<TlsOptions>,
    /// How long a client with no connection keeps trying while the server answers "busy"
    /// (it is at `--max-clients`), with backoff and jitter, before it fails with
    /// [`RemoteError::Busy`]. Zero fails at once. See [`pool`], point 5.
    pub busy_wait: Duration,
    /// Told once, with the server's message, when such a wait begins (the CLI says so on a
    /// terminal). Not called when the first try succeeds.
    pub on_busy: Option<fn(&str)>,
}

/// [`ConnectOptions::busy_wait`]'s default: long enough to outlast a burst of short
/// commands (each holds its connection for well under a second), short enough that a server
/// that stays full is reported while the person still waits for an answer.
pub const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(30);

/// How a client verifies the server and proves who it is.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The server key's fingerprint (`SHA256:...`). `None` trusts no key: the connection fails
    /// with [`RemoteError::UnknownServer`], which carries the key seen (to ask a person).
    pub fingerprint: Option<String>,
    /// The client's own key, offered when the server asks for one.
    pub identity: Option<shelf_secure::KeyPair>,
}

/// What secures a connection, for `shelf status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The server key's fingerprint, as verified.
    pub fingerprint: String,
    pub cipher_suite: String,
}

impl ConnectOptions {
    pub fn new(addr: impl Into<String>) -> Self {
        ConnectOptions {
            addr: addr.into(),
            token: None,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(15),
            agent: format!("shelf/{}", env!("CARGO_PKG_VERSION")),
            busy_wait: DEFAULT_BUSY_WAIT,
            on_busy: None,
            tls: None,
        }
    }
}

impl Default for ConnectOptions {
    /// The default timeouts and agent, with no address: set `addr`.
    fn default() -> Self {
        ConnectOptions::new("")
    }
}

/// Why a remote operation failed.
///
/// Every message here (and in the workspace's other error types) says its cause itself, so
/// none also exposes that cause as `source()`: printed as a chain (`{:#}`, or anyhow's
/// context) the cause would be said twice. A cause is therefore a field named `cause`, never
/// thiserror's `source` or `#[from]`; `tests::no_message_repeats_its_source` walks the chains.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server carried out the request and refused it.
    #[error("{}", server_text(*.code, .message))]
    Server { code: Code, message: String },
    /// No connection could be made.
    #[error("cannot reach server {addr}: {}", io_text(.cause))]
    Unreachable { addr: String, cause: io::Error },
    /// The connection ended before the reply arrived.
    #[error("connection to the server lost: {0}")]
    Disconnected(String),
    /// No reply within the request timeout.
    #[error("no reply from the server within {0:?}")]
    TimedOut(Duration),
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server is at its client limit; the message is the server's.
    #[error("{0}")]
    Busy(String),
    /// The server refused our token or key.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server did not announce the feature this request needs (an older server), so it
    /// was not sent: EOPNOTSUPP, which lets the kernel or the program fall back.
    #[error("the server does not serve {0}")]
    Unsupported(&'static str),
    /// No fingerprint was given for this server; `fingerprint` is the key it showed. Nothing
    /// was sent to it.
    #[error("the server {addr} is not known (its key's fingerprint is {fingerprint})")]
    UnknownServer { addr: String, fingerprint: String },
    /// The server showed another key than the one pinned: a man in the middle, or a server
    /// whose key was replaced. Nothing was sent to it.
    #[error(
        "the server {addr} presented the key {seen}, not the expected {want}: someone may be \
         intercepting the connection (a man in the middle), or the server's key was replaced"
    )]
    ServerKeyChanged {
        addr: String,
        want: String,
        seen: String,
    },
}

impl RemoteError {
    /// The one errno mapping for remote failures. Connection trouble reads as ENOTCONN, so a
    /// program using the mount sees "not connected" rather than a corrupt file; a reply that
    /// never came is ETIMEDOUT; a peer that broke the protocol is EIO, which every program
    /// treats as a failed I/O (EPROTO would confuse tools that expect it only from sockets).
    pub fn code(&self) -> Code {
        match self {
            RemoteError::Server { code, .. } => *code,
            RemoteError::Unreachable { .. } | RemoteError::Disconnected(_) => Code::NotConnected,
            RemoteError::TimedOut(_) => Code::TimedOut,
            RemoteError::Protocol(_) => Code::Io,
            RemoteError::Busy(_) => Code::Busy,
            RemoteError::Auth(_)
            | RemoteError::UnknownServer { .. }
            | RemoteError::ServerKeyChanged { .. } => Code::Access,
            RemoteError::Unsupported(_) => Code::NotSupported,
        }
    }

    pub fn errno(&self) -> i32 {
        self.code().errno()
    }

    /// Whether the request may have been lost with its connection, so that resending an
    /// idempotent request on a fresh connection is worth a try.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, RemoteError::Disconnected(_))
    }

    /// Whether the server may have carried out the request although no answer came: the
    /// connection was lost after it was sent, the reply did not come in time, or it could not
    /// be read. A change that fails so must be checked on the server before anything is
    /// assumed about it; any other error means it was not done.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            RemoteError::Disconnected(_) | RemoteError::TimedOut(_) | RemoteError::Protocol(_)
        )
    }

    pub(crate) fn server(code: Code, message: impl Into<String>) -> RemoteError {
        RemoteError::Server {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn unexpected(req: &'static str, reply: &Reply) -> RemoteError {
        RemoteError::Protocol(format!("unexpected {} reply to {req}", reply_name(reply)))
    }
}

/// The code's text, plus the server's message when it says more than the code does. The
/// server's messages read "OP PATH: TEXT" (server `library::Error`); callers name the operation
/// and path themselves, so a message that only restates the code is left out.
fn server_text(code: Code, message: &str) -> String {
    let text = code.text();
    let lower = message.to_ascii_lowercase();
    if message.is_empty() || lower.ends_with(text) {
        text.to_string()
    } else {
        format!("{text} ({message})")
    }
}

/// An I/O error as a short lowercase phrase ("connection refused"), without Rust's
/// "(os error N)" suffix, for messages people read.
pub fn io_text(err: &io::Error) -> String {
    let full = err.to_string();
    let text = match full.find(" (os error") {
        Some(cut) => &full[..cut],
        None => &full[..],
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn reply_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::Hello(_) => "hello",
        Reply::Error { .. } => "error",
        Reply::Ok => "ok",
        Reply::Pong => "pong",
        Reply::Attr(_) => "attr",
        Reply::Listing { .. } => "listing",
        Reply::Data { .. } => "data",
        Reply::Target(_) => "target",
        Reply::Statfs(_) => "statfs",
        Reply::PutStarted { .. } => "put-started",
        Reply::Xattr(_) => "xattr",
        Reply::XattrNames(_) => "xattr-names",
        Reply::Offset(_) => "offset",
        Reply::Copied { .. } => "copied",
        Reply::Lock(_) => "lock",
        Reply::Watched(_) => "watched",
        Reply::Changes { .. } => "changes",
        Reply::ChangeStates { .. } => "change-states",
    }
}

/// A request on its way, whatever carries it: waiting for it gives its reply.
///
/// Dropping one without waiting abandons the request (its reply, if one comes, is dropped).
pub trait PendingReply: Send + 'static {
    /// Waits for the reply, bounded as the transport bounds it (for a connection, the request
    /// timeout). A request lost with its connection fails with [`RemoteError::Disconnected`].
    fn wait(self) -> Result<Reply, RemoteError>;
}

/// What every remote implementation offers: send a request, get its reply.
///
/// Implemented by [`Pool`] and [`Connection`] here and by the test transports of
/// `shelf-testkit` (the real server in memory; one that fails a chosen request). The pending
/// type is associated, not boxed, so the read and write paths pay no allocation for it.
pub trait Transport: Send + Sync + 'static {
    /// What [`Transport::start`] hands back.
    type Pending: PendingReply;
    /// Sends one request; the reply arrives through the pending value (pipelining: many in
    /// flight). By reference: a caller that may resend it (after a lost connection) keeps it,
    /// and large writes are not copied for that.
    fn start(&self, req: &Request) -> Result<Self::Pending, RemoteError>;
    /// Sends one request and waits for its reply, retrying idempotent requests once on a fresh
    /// connection after a connection failure (where the transport can reconnect).
    fn call(&self, req: Request) -> Result<Reply, RemoteError>;
    /// Sends again a request lost with its connection, which the caller saw at `lost_at`.
    /// A transport of several connections sends it on one made after that instant: a loss
    /// often takes every connection at once (a server restart, a network cut), and the
    /// others may not show it yet, so any other choice may lose the one resend too.
    fn resend(&self, req: &Request, _lost_at: Instant) -> Result<Self::Pending, RemoteError> {
        self.start(req)
    }
    fn limits(&self) -> Limits;
    /// The feature bits in force (`shelf_proto::features`, agreed in the handshake): a
    /// request whose bit is missing must not be sent, an older server would close the
    /// connection over a kind it does not know.
    fn features(&self) -> u64;
    /// Sends a request whose effect lives in the server process of one connection (a lock)
    /// on the transport's *pinned* connection, always the same one while it lives, and never
    /// resends it. Returns the reply and the pinned connection's epoch: a different epoch
    /// than before means that connection, and whatever lived in it, is gone. A transport
    /// that is one connection answers epoch 0.
    fn call_pinned(&self, req: Request) -> Result<(Reply, u64), RemoteError> {
        self.call(req).map(|reply| (reply, 0))
    }
}

/// A shared transport is a transport, so one pool can serve a core and a status reporter.
impl<T: Transport> Transport for std::sync::Arc<T> {
    type Pending = T::Pending;
    fn start(&self, req: &Request) -> Result<T::Pending, RemoteError> {
        (**self).start(req)
    }
    fn call(&self, req: Request) -> Result<Reply, RemoteError> {
        (**self).call(req)
    }
    fn resend(&self, req: &Request, lost_at: Instant) -> Result<T::Pending, RemoteError> {
        (**self).resend(req, lost_at)
    }
    fn limits(&self) -> Limits {
        (**self).limits()
    }
    fn features(&self) -> u64 {
        (**self).features()
    }
    fn call_pinned(&self, req: Request) -> Result<(Reply, u64), RemoteError> {
        (**self).call_pinned(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_for_people() {
        let e = RemoteError::Unreachable {
            addr: "127.0.0.1:9".into(),
            cause: io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach server 127.0.0.1:9: connection refused"
        );
        assert_eq!(
            RemoteError::server(Code::NotFound, "").to_string(),
            "no such file or directory"
        );
        assert_eq!(
            RemoteError::server(Code::NotFound, "No such file or directory").to_string(),
            "no such file or directory"
        );
        assert_eq!(
            RemoteError::server(Code::NotFound, "stat a/b: no such file or directory").to_string(),
            "no such file or directory"
        );
        assert_eq!(
            RemoteError::server(Code::Invalid, "path contains ..").to_string(),
            "invalid argument (path contains ..)"
        );
    }

    /// Fails if a message in `err`'s chain contains the text of the error below it: printed
    /// as a chain (`{:#}`) that cause would be said twice.
    fn assert_said_once(err: &dyn std::error::Error) {
        let mut cur = err;
        while let Some(below) = cur.source() {
            let (text, cause) = (cur.to_string(), below.to_string());
            assert!(
                !text.contains(&cause),
                "{text:?} repeats its source {cause:?}"
            );
            cur = below;
        }
    }

    #[test]
    fn no_message_repeats_its_source() {
        let io = || io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let remote = [
            RemoteError::server(Code::NotFound, "stat a: no such file or directory"),
            RemoteError::Unreachable {
                addr: "127.0.0.1:1".into(),
                cause: io(),
            },
            RemoteError::Disconnected("reset".into()),
            RemoteError::TimedOut(Duration::from_secs(1)),
            RemoteError::Protocol("bad frame".into()),
            RemoteError::Busy("busy".into()),
            RemoteError::Auth("bad token".into()),
            RemoteError::Unsupported("fallocate"),
            RemoteError::UnknownServer {
                addr: "127.0.0.1:1".into(),
                fingerprint: "SHA256:abc".into(),
            },
            RemoteError::ServerKeyChanged {
                addr: "127.0.0.1:1".into(),
                want: "SHA256:abc".into(),
                seen: "SHA256:def".into(),
            },
        ];
        for e in &remote {
            // Exhaustive, so a new variant is added here too.
            match e {
                RemoteError::Server { .. }
                | RemoteError::Unreachable { .. }
                | RemoteError::Disconnected(_)
                | RemoteError::TimedOut(_)
                | RemoteError::Protocol(_)
                | RemoteError::Busy(_)
                | RemoteError::Auth(_)
                | RemoteError::Unsupported(_)
                | RemoteError::UnknownServer { .. }
                | RemoteError::ServerKeyChanged { .. } => assert_said_once(e),
            }
        }
        let read = [
            shelf_proto::ReadError::Io(io()),
            shelf_proto::ReadError::Malformed {
                id: None,
                error: shelf_proto::frame::DecodeError::Truncated,
            },
            shelf_proto::ReadError::UnexpectedEof,
        ];
        for e in &read {
            match e {
                shelf_proto::ReadError::Io(_)
                | shelf_proto::ReadError::Malformed { .. }
                | shelf_proto::ReadError::UnexpectedEof => assert_said_once(e),
            }
        }
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(
            RemoteError::Disconnected("x".into()).errno(),
            libc::ENOTCONN
        );
        assert_eq!(
            RemoteError::TimedOut(Duration::from_secs(1)).errno(),
            libc::ETIMEDOUT
        );
        assert_eq!(RemoteError::Protocol("x".into()).errno(), libc::EIO);
        assert_eq!(RemoteError::Busy("x".into()).errno(), libc::EBUSY);
        assert_eq!(RemoteError::Auth("x".into()).errno(), libc::EACCES);
        assert_eq!(
            RemoteError::Unsupported("fallocate").errno(),
            libc::EOPNOTSUPP
        );
        assert_eq!(
            RemoteError::server(Code::NotEmpty, "").errno(),
            libc::ENOTEMPTY
        );
    }
}
