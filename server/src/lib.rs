//! shelfd: serves one directory (the *library*) to shelf clients over TCP.
//!
//! Layout:
//! - [`listen`]: the parent process. Binds, accepts, forks one child per connection, reaps,
//!   refuses clients past the limit, stops on SIGTERM. Single-threaded by design.
//! - [`conn`]: [`serve`], one connection from handshake to hang-up over any [`Peer`]; knows
//!   nothing of processes, so tests and the client's loopback transport run it in a thread.
//! - [`library`]: [`Library`], every file operation, confined beneath the root with
//!   `openat2(RESOLVE_BENEATH)`.
//! - [`relpath`]: [`RelPath`], a wire path checked once (no `..`, `/`, NUL, empty names).
//! - `sys`: the system calls that need a rule of ours on top of `rustix`, and the two it
//!   lacks (`sync_file_range`, `mallopt`): the server's only `unsafe` code outside `listen`.
//!
//! The wire protocol itself is the `shelf_proto` crate and `docs/PROTOCOL.md`.

pub mod conn;
pub mod library;
pub mod listen;
pub mod locks;
pub mod relpath;
mod sys;
pub mod watch;

pub use conn::{serve, Peer, ServeConfig, ServeError, Session};
pub use library::{Library, PUT_PREFIX};
pub use listen::{read_token_file, run, Config, RunError, Tls, DEFAULT_MAX_CLIENTS, QUEUE_MAX};
pub use relpath::{PathError, RelPath};
/// The limits a connection agreed on (one type for both sides, from the protocol crate).
pub use shelf_proto::Limits;
