//! rustls configurations: TLS 1.3 only, the `ring` provider, Ed25519 raw public keys (RFC
//! 7250) on both sides, no CA.
//!
//! What is hard: trust comes from one comparison only. The client's verifier
//! ([`ServerPin`]) hashes the server's SubjectPublicKeyInfo and compares it with the pinned
//! fingerprint; rustls then checks that the server signed the handshake with that very key.
//! No name, date or issuer is looked at, because there is none to trust. The server accepts
//! any client key at the TLS level (it only proves possession by its signature), and decides
//! after the handshake, against its authorized-keys file re-read for that connection, so that
//! a refusal can be an ordinary shelf error naming the key instead of a bare TLS alert.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{
    verify_tls13_signature_with_raw_key, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::key::{fingerprint, KeyPair};

/// Why a TLS configuration could not be made. The message says its cause itself, so the
/// cause is not exposed again as `source()` (a chain printed with `{:#}` would say it twice).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS setup: {0}")]
    Rustls(rustls::Error),
}

impl From<rustls::Error> for TlsSetupError {
    fn from(e: rustls::Error) -> Self {
        TlsSetupError::Rustls(e)
    }
}

/// The provider: ring, TLS 1.3 suites only, AES-128-GCM first (the fastest with AES-NI).
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn certified(key: &KeyPair) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec()));
    let signer = provider().key_provider.load_private_key(der)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(key.spki_der().to_vec())],
        signer,
    )))
}

/// The server's configuration: its own key, and client keys asked for but not required.
pub fn server_config(key: &KeyPair) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyClientKey))
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(certified(
            key,
        )?)));
    // Every connection is a fresh process: tickets could never be used, and would only cost
    // a round of writes after the handshake.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(cfg))
}

/// The client's configuration: the server is verified by `pin`; `identity` is offered when the
/// server asks for a client key.
pub fn client_config(
    pin: Arc<ServerPin>,
    identity: Option<&KeyPair>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let identity = identity.map(certified).transpose()?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(pin)
        .with_client_cert_resolver(Arc::new(ClientKey(identity)));
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.enable_sni = false;
    Ok(Arc::new(cfg))
}

/// The name the client gives rustls: unused (no SNI is sent, no name is checked).
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("shelf")
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

/// Why the server was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// No fingerprint was pinned: the server's is `seen`.
    #[error("the server's key {seen} is not known")]
    Unknown { seen: String },
    #[error("the server's key {seen} does not match the expected {want}")]
    Mismatch { want: String, seen: String },
}

/// The one custom verifier: the server's key must have the pinned fingerprint. Remembers the
/// key it saw, so that a refusal can name it (and a prompt can show it).
#[derive(Debug)]
pub struct ServerPin {
    want: Option<String>,
    outcome: Mutex<Option<Result<String, PinError>>>,
}

impl ServerPin {
    /// Trusts only the key with fingerprint `want`; `None` trusts none (to learn the key).
    pub fn new(want: Option<String>) -> Arc<ServerPin> {
        Arc::new(ServerPin {
            want,
            outcome: Mutex::new(None),
        })
    }

    /// What the last verification found: the fingerprint accepted, or why it was refused.
    /// `None` if the handshake never got as far as the server's key.
    pub fn outcome(&self) -> Option<Result<String, PinError>> {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn check(&self, spki: &[u8]) -> Result<String, PinError> {
        let seen = fingerprint(spki);
        let result = match &self.want {
            None => Err(PinError::Unknown { seen }),
            // Fingerprints are public: no need for a constant-time comparison.
            Some(want) if *want == seen => Ok(seen),
            Some(want) => Err(PinError::Mismatch {
                want: want.clone(),
                seen,
            }),
        };
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(result.clone());
        result
    }
}

impl ServerCertVerifier for ServerPin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.check(end_entity.as_ref()) {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(rustls::Error::General(e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_raw_key_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Neither side speaks TLS 1.2 (the configs allow 1.3 only); a 1.2 signature is refused.
fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls13RequiredForQuic,
    ))
}

/// The peer's handshake signature, checked against the raw public key it presented (RFC
/// 7250): the same check for the server's key and a client's.
fn verify_raw_key_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let spki = SubjectPublicKeyInfoDer::from(cert.as_ref());
    verify_tls13_signature_with_raw_key(message, &spki, dss, &algorithms())
}

/// Accepts any client key that signs the handshake; which keys are admitted is decided after
/// it (module docs).
#[derive(Debug)]
struct AnyClientKey;

impl ClientCertVerifier for AnyClientKey {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if crate::key::parse_public_key_der(end_entity.as_ref()) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_raw_key_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The client's key, if it has one. Always announces raw public keys: a server that asks for
/// a client key only takes raw ones, and a client without a key then answers with none.
#[derive(Debug)]
struct ClientKey(Option<Arc<CertifiedKey>>);

impl ResolvesClientCert for ClientKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .clone()
            .filter(|_| sigschemes.contains(&SignatureScheme::ED25519))
    }

    fn only_raw_public_keys(&self) -> bool {
        true
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_said_once;

    #[test]
    fn no_message_repeats_its_source() {
        let setup = [TlsSetupError::Rustls(rustls::Error::HandshakeNotComplete)];
        for e in &setup {
            // Exhaustive, so a new variant is added here too.
            match e {
                TlsSetupError::Rustls(_) => assert_said_once(e),
            }
        }
        let pin = [
            PinError::Unknown {
                seen: "SHA256:abc".into(),
            },
            PinError::Mismatch {
                want: "SHA256:abc".into(),
                seen: "SHA256:def".into(),
            },
        ];
        for e in &pin {
            match e {
                PinError::Unknown { .. } | PinError::Mismatch { .. } => assert_said_once(e),
            }
        }
    }
}
