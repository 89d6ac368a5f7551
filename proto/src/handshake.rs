//! The handshake's agreement: which limits and features hold on a connection, computed by one
//! function, [`negotiate`], that the server calls on the client's `Hello` and its own
//! announcement, and the client on its `Hello` and the server's reply (docs/PROTOCOL.md,
//! "Handshake" and "Limits").
//!
//! What is hard: both sides must arrive at the same numbers without a second round trip. The
//! server replies with the values it computed, and the rule is idempotent (negotiating again
//! with the reply gives the same answer), so the client's own computation agrees with the
//! server's, and a value only one side bounded (`HARD_MAX_PAYLOAD`, room for the I/O overhead)
//! is bounded the same way on both.

use std::fmt;

use crate::frame::{DEFAULT_MAX_IO, DEFAULT_MAX_PAYLOAD, HARD_MAX_PAYLOAD};
use crate::msg::{Hello, HelloReply};

/// Smallest payload limit a connection may agree on: room for any error message, any symlink
/// target and a listing entry with the longest name.
pub const MIN_PAYLOAD: u32 = 16 << 10;
/// Room in a frame beside the data of a `Read` reply or `Write` request (path, offset, attr),
/// so `max_io` never exceeds `max_payload - IO_OVERHEAD`.
pub const IO_OVERHEAD: u32 = 8 << 10;

/// Limits agreed in the handshake: the smaller of what each side announced, bounded as
/// [`negotiate`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest data length of one `Read` or `Write`.
    pub max_io: u32,
    /// Largest frame payload either side will send.
    pub max_payload: u32,
}

impl Default for Limits {
    /// The defaults each side announces unless configured otherwise.
    fn default() -> Self {
        Limits {
            max_io: DEFAULT_MAX_IO,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_io {} bytes, max_payload {} bytes",
            self.max_io, self.max_payload
        )
    }
}

/// What holds on a connection once the handshake succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub limits: Limits,
    /// The feature bits both sides announced; only these are used.
    pub features: u64,
}

/// Why two announcements cannot make a connection. The server answers `EPROTO` with this text;
/// the client reports a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    /// The smaller `max_payload` is below [`MIN_PAYLOAD`].
    #[error("payload limit {0} is below the minimum of {MIN_PAYLOAD}")]
    PayloadTooSmall(u32),
    /// The smaller `max_io` is zero.
    #[error("an I/O limit of 0 bytes")]
    NoIo,
}

/// The limits and features of a connection between a client that sent `hello` and a server
/// that announces `reply` (its own values on the server; the reply received on the client):
/// - `max_payload`: the smaller of the two, and at most `HARD_MAX_PAYLOAD`; below
///   [`MIN_PAYLOAD`] is an error.
/// - `max_io`: the smaller of the two, and at most `max_payload - IO_OVERHEAD`, so a `Data`
///   reply of `max_io` bytes fits in a frame; zero is an error.
/// - `features`: the bits both announced.
///
/// Versions are not part of it: the server picks one from the client's range and the client
/// checks it (docs/PROTOCOL.md, "Version negotiation").
pub fn negotiate(hello: &Hello, reply: &HelloReply) -> Result<Negotiated, NegotiateError> {
    let max_payload = hello
        .max_payload
        .min(reply.max_payload)
        .min(HARD_MAX_PAYLOAD);
    if max_payload < MIN_PAYLOAD {
        return Err(NegotiateError::PayloadTooSmall(max_payload));
    }
    let max_io = hello
        .max_io
        .min(reply.max_io)
        .min(max_payload - IO_OVERHEAD);
    if max_io == 0 {
        return Err(NegotiateError::NoIo);
    }
    Ok(Negotiated {
        limits: Limits {
            max_io,
            max_payload,
        },
        features: hello.features & reply.features,
    })
}

impl HelloReply {
    /// This reply with the negotiated values in place of the announced ones: what the server
    /// sends, so the client's [`negotiate`] arrives at the same values.
    pub fn agreed(self, n: &Negotiated) -> HelloReply {
        HelloReply {
            max_payload: n.limits.max_payload,
            max_io: n.limits.max_io,
            features: n.features,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::msg::{features, PROTOCOL_VERSION};

    fn hello(max_payload: u32, max_io: u32, features: u64) -> Hello {
        Hello {
            max_payload,
            max_io,
            features,
            ..Hello::new("client")
        }
    }

    fn reply(max_payload: u32, max_io: u32, features: u64) -> HelloReply {
        HelloReply {
            version: PROTOCOL_VERSION,
            max_payload,
            max_io,
            features,
            agent: "server".into(),
            admitted: None,
        }
    }

    fn limits(max_payload: u32, max_io: u32) -> Limits {
        Limits {
            max_io,
            max_payload,
        }
    }

    #[test]
    fn each_sides_smaller_value_wins() {
        let d = (DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_IO);
        for (client, server, want) in [
            (d, d, limits(d.0, d.1)),
            (d, (d.0, 1 << 20), limits(d.0, 1 << 20)),
            ((d.0, 1 << 20), d, limits(d.0, 1 << 20)),
            ((1 << 20, 1 << 19), d, limits(1 << 20, 1 << 19)),
            (d, (1 << 20, 1 << 19), limits(1 << 20, 1 << 19)),
        ] {
            let n = negotiate(&hello(client.0, client.1, 0), &reply(server.0, server.1, 0))
                .expect("valid limits");
            assert_eq!(n.limits, want, "client {client:?}, server {server:?}");
        }
    }

    #[test]
    fn oversized_announcements_are_clamped_alike_on_both_sides() {
        // Both announce more than any frame may hold: HARD_MAX_PAYLOAD bounds the payload, and
        // max_io leaves room for the rest of a Data reply.
        let n = negotiate(&hello(u32::MAX, u32::MAX, 0), &reply(u32::MAX, u32::MAX, 0))
            .expect("clamped");
        assert_eq!(
            n.limits,
            limits(HARD_MAX_PAYLOAD, HARD_MAX_PAYLOAD - IO_OVERHEAD)
        );
        // One side's max_io larger than its own payload allows.
        let n = negotiate(
            &hello(DEFAULT_MAX_PAYLOAD, u32::MAX, 0),
            &reply(MIN_PAYLOAD, u32::MAX, 0),
        )
        .expect("clamped");
        assert_eq!(n.limits, limits(MIN_PAYLOAD, MIN_PAYLOAD - IO_OVERHEAD));
    }

    #[test]
    fn zero_or_tiny_announcements_are_refused_by_either_side() {
        let d = (DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_IO);
        for (client, server, want) in [
            ((0, d.1), d, NegotiateError::PayloadTooSmall(0)),
            (d, (0, d.1), NegotiateError::PayloadTooSmall(0)),
            ((100, 10), d, NegotiateError::PayloadTooSmall(100)),
            (
                d,
                (MIN_PAYLOAD - 1, 10),
                NegotiateError::PayloadTooSmall(MIN_PAYLOAD - 1),
            ),
            ((d.0, 0), d, NegotiateError::NoIo),
            (d, (d.0, 0), NegotiateError::NoIo),
        ] {
            assert_eq!(
                negotiate(&hello(client.0, client.1, 0), &reply(server.0, server.1, 0)),
                Err(want),
                "client {client:?}, server {server:?}"
            );
        }
        assert_eq!(
            NegotiateError::PayloadTooSmall(100).to_string(),
            "payload limit 100 is below the minimum of 16384"
        );
        assert_eq!(NegotiateError::NoIo.to_string(), "an I/O limit of 0 bytes");
    }

    #[test]
    fn features_are_those_both_announced() {
        let both = features::ATOMIC_PUT | features::LINKS;
        for (client, server, want) in [
            (both, both, both),
            (0, both, 0),
            (both, 0, 0),
            (
                features::LINKS | features::CHANGE_NOTIFY,
                both,
                features::LINKS,
            ),
            // Bits neither side defines yet are carried like any other.
            (both | 1 << 63, 1 << 63, 1 << 63),
        ] {
            let d = (DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_IO);
            let n = negotiate(&hello(d.0, d.1, client), &reply(d.0, d.1, server))
                .expect("valid limits");
            assert_eq!(n.features, want, "client {client:#x}, server {server:#x}");
        }
    }

    proptest! {
        /// Whatever the two sides announce, the client's negotiation over the server's reply
        /// agrees with the server's, and the agreed values are within every bound.
        #[test]
        fn both_sides_agree(
            c_payload in any::<u32>(), c_io in any::<u32>(), c_features in any::<u64>(),
            s_payload in any::<u32>(), s_io in any::<u32>(), s_features in any::<u64>(),
        ) {
            let client = hello(c_payload, c_io, c_features);
            let server = reply(s_payload, s_io, s_features);
            match negotiate(&client, &server) {
                Ok(n) => {
                    let sent = server.clone().agreed(&n);
                    prop_assert_eq!(negotiate(&client, &sent), Ok(n));
                    let l = n.limits;
                    prop_assert!(l.max_payload <= c_payload.min(s_payload).min(HARD_MAX_PAYLOAD));
                    prop_assert!(l.max_payload >= MIN_PAYLOAD);
                    prop_assert!(l.max_io >= 1 && l.max_io <= c_io.min(s_io));
                    prop_assert!(l.max_io + IO_OVERHEAD <= l.max_payload);
                }
                Err(_) => {
                    let payload = c_payload.min(s_payload).min(HARD_MAX_PAYLOAD);
                    prop_assert!(payload < MIN_PAYLOAD || c_io.min(s_io) == 0);
                }
            }
        }
    }
}
