//! Ed25519 key pairs and their files.
//!
//! What is hard: a private key must never leak, so [`KeyPair`]'s `Debug` prints only the
//! fingerprint, no error message carries key bytes, and a key file that group or others can
//! read is refused on load (as ssh does) with the `chmod` to run. Files are created with mode
//! 0600 from the start (`O_CREAT` with the mode, never a chmod after the bytes are written)
//! and never overwritten.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (32 bytes) }; the key's 32 bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
/// The first word of a public-key line, in `.pub` files and authorized-keys files.
pub const PUBLIC_KEY_WORD: &str = "shelf-key";
/// Largest key file read: a PEM Ed25519 key is about 170 bytes.
const MAX_KEY_FILE: u64 = 64 << 10;

/// Why a key file could not be used. Each message says its cause itself, so the cause is a
/// plain field (`cause`, not thiserror's `source`): exposed as `source()` too, a chain printed
/// with `{:#}` would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {}: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },
    #[error("cannot write key file {}: {cause}", path.display())]
    Write { path: PathBuf, cause: io::Error },
    #[error("key file {} already exists; remove it first or pick another name", path.display())]
    Exists { path: PathBuf },
    #[error(
        "key file {} is readable by group or others (mode {mode:04o}); a private key must be \
         private: run `chmod 600 {}`",
        path.display(), path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {} is not a shelf private key: {why}", path.display())]
    Format { path: PathBuf, why: &'static str },
    #[error("cannot generate a key: the system's random source failed")]
    Random,
}

/// An Ed25519 key pair: the private key as PKCS#8 DER and the public key as
/// SubjectPublicKeyInfo DER.
#[derive(Clone)]
pub struct KeyPair {
    pkcs8: Vec<u8>,
    spki: Vec<u8>,
}

impl fmt::Debug for KeyPair {
    /// Never the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<KeyPair, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        KeyPair::from_pkcs8(doc.as_ref().to_vec()).ok_or(KeyError::Random)
    }

    /// A key from PKCS#8 DER (v1 or v2); `None` if it is not an Ed25519 key.
    pub fn from_pkcs8(pkcs8: Vec<u8>) -> Option<KeyPair> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).ok()?;
        let spki = ed25519_spki(pair.public_key().as_ref());
        Some(KeyPair { pkcs8, spki })
    }

    /// The private key, PKCS#8 DER: for rustls only.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key, SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.spki)
    }

    /// `shelf-key BASE64 COMMENT`: the line for an authorized-keys file.
    pub fn public_line(&self, comment: &str) -> String {
        let line = format!("{PUBLIC_KEY_WORD} {}", STANDARD.encode(&self.spki));
        match comment.trim() {
            "" => line,
            c => format!("{line} {c}"),
        }
    }

    /// The private key as PEM (`PRIVATE KEY`, PKCS#8).
    pub fn to_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.pkcs8);
        let mut out = format!("{PEM_BEGIN}\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            out.push('\n');
        }
        out.push_str(PEM_END);
        out.push('\n');
        out
    }

    /// Reads a private key file, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<KeyPair, KeyError> {
        let read = |cause| KeyError::Read {
            path: path.to_owned(),
            cause,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        if meta.len() > MAX_KEY_FILE {
            return Err(KeyError::Format {
                path: path.to_owned(),
                why: "the file is far too large",
            });
        }
        let text = std::fs::read(path).map_err(read)?;
        let format = |why| KeyError::Format {
            path: path.to_owned(),
            why,
        };
        let text = std::str::from_utf8(&text).map_err(|_| format("it is not text"))?;
        let der = pem_body(text).ok_or_else(|| format("no PEM block `PRIVATE KEY`"))?;
        KeyPair::from_pkcs8(der).ok_or_else(|| format("it is not an Ed25519 PKCS#8 key"))
    }

    /// Writes the private key to a new file created with mode 0600; an existing file is
    /// never overwritten.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        write_new(path, self.to_pem().as_bytes(), 0o600)
    }

    /// Loads `path`, or creates a new key there if there is no file: the server's first start.
    pub fn load_or_create(path: &Path) -> Result<(KeyPair, bool), KeyError> {
        match KeyPair::load(path) {
            Ok(k) => Ok((k, false)),
            Err(KeyError::Read { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {
                let k = KeyPair::generate()?;
                k.save(path)?;
                Ok((k, true))
            }
            Err(e) => Err(e),
        }
    }
}

/// Creates `path` with `mode` and writes `bytes`; refuses an existing file.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|cause| match cause.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => KeyError::Write {
                path: path.to_owned(),
                cause,
            },
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|cause| KeyError::Write {
            path: path.to_owned(),
            cause,
        })
}

fn pem_body(text: &str) -> Option<Vec<u8>> {
    let start = text.find(PEM_BEGIN)? + PEM_BEGIN.len();
    let end = start + text[start..].find(PEM_END)?;
    let b64: String = text[start..end].split_whitespace().collect();
    STANDARD.decode(b64).ok()
}

/// The SubjectPublicKeyInfo DER of an Ed25519 public key.
pub fn ed25519_spki(public: &[u8]) -> Vec<u8> {
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(public);
    spki
}

/// `SHA256:` and the unpadded base64 of SHA-256 over `spki` (a SubjectPublicKeyInfo DER), the
/// form ssh prints.
pub fn fingerprint(spki: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    format!("SHA256:{}", STANDARD_NO_PAD.encode(digest.as_ref()))
}

/// Whether `s` has the form of a fingerprint (`SHA256:` and 43 base64 characters).
pub fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:")
        .is_some_and(|b| STANDARD_NO_PAD.decode(b).is_ok_and(|d| d.len() == 32))
}

/// Whether `der` is an Ed25519 SubjectPublicKeyInfo.
pub fn parse_public_key_der(der: &[u8]) -> bool {
    der.len() == ED25519_SPKI_PREFIX.len() + 32 && der.starts_with(&ED25519_SPKI_PREFIX)
}

/// The SubjectPublicKeyInfo DER in a public-key line's base64 word; `None` if it is not an
/// Ed25519 key.
pub fn parse_public_key(b64: &str) -> Option<Vec<u8>> {
    let der = STANDARD.decode(b64).ok()?;
    parse_public_key_der(&der).then_some(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_said_once;

    #[test]
    fn no_message_repeats_its_source() {
        let io = || io::Error::from(rustix::io::Errno::NOENT);
        let path = || PathBuf::from("/k/id_shelf");
        let all = [
            KeyError::Read {
                path: path(),
                cause: io(),
            },
            KeyError::Write {
                path: path(),
                cause: io(),
            },
            KeyError::Exists { path: path() },
            KeyError::Permissions {
                path: path(),
                mode: 0o644,
            },
            KeyError::Format {
                path: path(),
                why: "it is not text",
            },
            KeyError::Random,
        ];
        for e in &all {
            // Exhaustive, so a new variant is added here too.
            match e {
                KeyError::Read { .. }
                | KeyError::Write { .. }
                | KeyError::Exists { .. }
                | KeyError::Permissions { .. }
                | KeyError::Format { .. }
                | KeyError::Random => assert_said_once(e),
            }
        }
    }

    #[test]
    fn a_saved_key_loads_back_and_the_file_is_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id");
        let key = KeyPair::generate().expect("generate");
        key.save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = KeyPair::load(&path).expect("load");
        assert_eq!(back.spki_der(), key.spki_der());
        assert_eq!(back.pkcs8_der(), key.pkcs8_der());
        assert!(
            matches!(key.save(&path), Err(KeyError::Exists { .. })),
            "never overwritten"
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id");
        KeyPair::generate()
            .expect("generate")
            .save(&path)
            .expect("save");
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let err = KeyPair::load(&path).expect_err("readable by others");
            let text = err.to_string();
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        KeyPair::load(&path).expect("0400 is private");
    }

    #[test]
    fn debug_and_errors_never_show_the_private_key() {
        let key = KeyPair::generate().expect("generate");
        let pem = key.to_pem();
        let secret_line = pem.lines().nth(1).expect("body");
        let debug = format!("{key:?}");
        assert!(!debug.contains(secret_line), "{debug}");
        assert!(debug.contains(&key.fingerprint()));
    }

    #[test]
    fn garbage_is_a_format_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, body) in [
            "",
            "hello",
            "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ]
        .iter()
        .enumerate()
        {
            let path = dir.path().join(format!("k{i}"));
            write_new(&path, body.as_bytes(), 0o600).expect("write");
            assert!(
                matches!(KeyPair::load(&path), Err(KeyError::Format { .. })),
                "{body:?}"
            );
        }
    }

    #[test]
    fn fingerprints_are_ssh_style_and_differ_per_key() {
        let a = KeyPair::generate().expect("a");
        let b = KeyPair::generate().expect("b");
        let fa = a.fingerprint();
        assert!(fa.starts_with("SHA256:") && fa.len() == 7 + 43, "{fa}");
        assert!(is_fingerprint(&fa));
        assert!(!is_fingerprint("SHA256:short"));
        assert!(!is_fingerprint("MD5:aa"));
        assert_ne!(fa, b.fingerprint());
        // Known answer: SHA-256 of the empty string.
        assert_eq!(
            fingerprint(b""),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn a_public_line_parses_back_to_the_key() {
        let key = KeyPair::generate().expect("key");
        let line = key.public_line("me@host");
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some(PUBLIC_KEY_WORD));
        let der = parse_public_key(words.next().expect("b64")).expect("parses");
        assert_eq!(der, key.spki_der());
        assert_eq!(words.next(), Some("me@host"));
        assert_eq!(parse_public_key("AAAA"), None);
    }
}
