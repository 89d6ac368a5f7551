//! shelf-testkit: transports for tests only, never linked into a shipped binary.
//!
//! - [`Loopback`]: the real server (`shelf_server::serve`) in this process, over Unix socket
//!   pairs, behind the production pool: handshake, pipelining and reconnect all run for real.

mod loopback;

pub use loopback::{Loopback, LOOPBACK_ADDR};
