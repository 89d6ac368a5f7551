//! shelf-testkit: transports for tests only, never linked into a shipped binary.
//!
//! - [`Loopback`]: the real server (`shelf_server::serve`) in this process, over Unix socket
//!   pairs, behind the production pool: handshake, pipelining and reconnect all run for real.
//! - [`Memory`]: the real server's request handling called directly, no socket: the fast
//!   transport for tests of what sits above the wire; [`Memory::hang_up`] plays a reconnect.
//! - [`Faulty`]: wraps any transport and fails, delays or loses the Nth request of a kind,
//!   with counters to assert on (mountpoint-s3's `failure_client.rs`).

mod faulty;
mod loopback;
mod memory;

pub use faulty::{Fault, Faulty, FaultyPending};
pub use loopback::{Loopback, LOOPBACK_ADDR};
pub use memory::{Memory, MemoryPending};
