//! shelf-secure: everything TLS for shelf, so that `shelf-proto` stays pure and the server and
//! the client share one implementation.
//!
//! - [`key`]: Ed25519 key pairs, their files (0600, refused when group or others may read
//!   them), public-key lines and fingerprints (`SHA256:` + unpadded base64 of SHA-256 over the
//!   SubjectPublicKeyInfo DER, as ssh prints them).
//! - [`files`]: the parsers of the known-servers and authorized-keys files: pure functions,
//!   comments and blank lines allowed, a bad line reported as `file:line`.
//! - [`tls`]: the rustls configurations (TLS 1.3 only, the `ring` provider, raw public keys,
//!   RFC 7250) and the one custom verifier, which compares a pinned fingerprint and nothing
//!   else: no CA, no names, no expiry.
//! - [`stream`]: [`TlsStream`], one TLS connection over a TCP socket that a reading and a
//!   writing thread can use at once. What is hard there is in its module docs.
//!
//! Why `ring`: it builds with the C compiler alone, where aws-lc-rs needs cmake and takes far
//! longer to build on a small machine.

pub mod files;
pub mod key;
pub mod stream;
pub mod tls;

pub use files::{AuthorizedKey, KnownServer, LineError};
pub use key::{fingerprint, KeyError, KeyPair};
pub use stream::TlsStream;
pub use tls::{client_config, server_config, PinError, ServerPin, TlsSetupError};

/// Fails if a message in `err`'s chain contains the text of the error below it: printed as a
/// chain (`{:#}`) that cause would be said twice. The `no_message_repeats_its_source` test
/// beside each error type walks every variant through this.
#[cfg(test)]
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
