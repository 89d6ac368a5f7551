//! The handshake's negotiation and the token rule, on arbitrary announcements.
//!
//! The first 32 bytes are what the two sides announce (each: `max_payload` u32, `max_io` u32,
//! `features` u64, little-endian), the rest is a token file's content. Checked:
//! - `negotiate` either fails for the documented reason, or agrees on limits within every
//!   bound both sides and the protocol set (`MIN_PAYLOAD..=HARD_MAX_PAYLOAD`, room for the
//!   I/O overhead) and on exactly the shared feature bits;
//! - the client, negotiating with the reply the server sends (`HelloReply::agreed`), arrives
//!   at the same values (both ends use the same limits);
//! - `token::parse` takes off exactly the trailing `\n` / `\r\n` endings and nothing else, and
//!   a parsed token parses to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shelf_proto::handshake::NegotiateError;
use shelf_proto::{
    negotiate, token, Hello, HelloReply, HARD_MAX_PAYLOAD, IO_OVERHEAD, MIN_PAYLOAD,
    PROTOCOL_VERSION,
};

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 {
        return;
    }
    let (ann, rest) = data.split_at(32);
    let hello = Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        token: Vec::new(),
        max_payload: u32_at(ann, 0),
        max_io: u32_at(ann, 4),
        features: u64_at(ann, 8),
        agent: "fuzz".into(),
    };
    let reply = HelloReply {
        version: PROTOCOL_VERSION,
        max_payload: u32_at(ann, 16),
        max_io: u32_at(ann, 20),
        features: u64_at(ann, 24),
        agent: "fuzz".into(),
    };
    let smaller_payload = hello.max_payload.min(reply.max_payload).min(HARD_MAX_PAYLOAD);
    match negotiate(&hello, &reply) {
        Ok(n) => {
            let l = n.limits;
            assert!(l.max_payload >= MIN_PAYLOAD && l.max_payload <= HARD_MAX_PAYLOAD);
            assert_eq!(l.max_payload, smaller_payload);
            assert!(l.max_io >= 1);
            assert!(l.max_io <= hello.max_io && l.max_io <= reply.max_io);
            assert!(l.max_io <= l.max_payload - IO_OVERHEAD);
            assert_eq!(n.features, hello.features & reply.features);
            let client = negotiate(&hello, &reply.clone().agreed(&n)).expect("the client agrees");
            assert_eq!(client, n, "the two ends would use different limits");
        }
        Err(NegotiateError::PayloadTooSmall(p)) => {
            assert_eq!(p, smaller_payload);
            assert!(p < MIN_PAYLOAD);
        }
        Err(NegotiateError::NoIo) => {
            let io = hello
                .max_io
                .min(reply.max_io)
                .min(smaller_payload - IO_OVERHEAD);
            assert_eq!(io, 0);
        }
    }

    match token::parse(rest.to_vec()) {
        Ok(t) => {
            assert!(!t.is_empty());
            assert!(rest.starts_with(&t));
            assert_ne!(t.last(), Some(&b'\n'));
            // What was taken off is nothing but line endings.
            let mut tail = &rest[t.len()..];
            while !tail.is_empty() {
                tail = tail
                    .strip_prefix(b"\r\n")
                    .or_else(|| tail.strip_prefix(b"\n"))
                    .expect("only \\n and \\r\\n are taken off");
            }
            assert_eq!(token::parse(t.clone()), Ok(t));
        }
        Err(token::TokenError::Empty) => {
            assert!(rest.iter().all(|&b| b == b'\n' || b == b'\r'));
        }
    }
});
