//! Parses arbitrary text as a known-servers file and as an authorized-keys file, and
//! arbitrary bytes as a private key (PKCS#8): the files a person edits by hand and the key
//! files a server or client loads at start.
//!
//! Beyond "never panics":
//! - every accepted entry prints back to a line that parses to the same entry (so what
//!   `shelf` writes into known_servers it can read again, and an authorized key keeps its
//!   read-only mark and comment);
//! - an authorized key is a well-formed Ed25519 SubjectPublicKeyInfo with a fingerprint of
//!   the documented form;
//! - a rejected file names a line that exists (the message says where to look);
//! - a private key that loads re-encodes to the same bytes and keeps its fingerprint.

#![no_main]

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use shelf_secure::files::{known_server_line, parse_authorized_keys, parse_known_servers};
use shelf_secure::key::{fingerprint, is_fingerprint, parse_public_key_der};
use shelf_secure::KeyPair;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let file = Path::new("fuzz");
    let lines = text.lines().count();

    match parse_known_servers(&text, file) {
        Ok(entries) => {
            for e in entries {
                assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
                assert!(is_fingerprint(&e.fingerprint));
                let again = parse_known_servers(&known_server_line(&e.addr, &e.fingerprint), file)
                    .expect("a printed entry parses");
                assert_eq!(again.len(), 1);
                assert_eq!((&again[0].addr, &again[0].fingerprint), (&e.addr, &e.fingerprint));
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= lines, "error at line {} of {lines}", e.line),
    }

    match parse_authorized_keys(&text, file) {
        Ok(keys) => {
            for k in keys {
                assert!(k.line >= 1 && k.line <= lines);
                assert!(parse_public_key_der(&k.spki), "an accepted key is an Ed25519 SPKI");
                assert!(is_fingerprint(&fingerprint(&k.spki)));
                let printed = format!(
                    "{}shelf-key {} {}",
                    if k.read_only { "read-only " } else { "" },
                    STANDARD.encode(&k.spki),
                    k.comment
                );
                let again = parse_authorized_keys(&printed, file).expect("a printed key parses");
                assert_eq!(again.len(), 1, "{printed:?}");
                assert_eq!(
                    (&again[0].spki, again[0].read_only, &again[0].comment),
                    (&k.spki, k.read_only, &k.comment),
                    "{printed:?}"
                );
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= lines),
    }

    if let Some(key) = KeyPair::from_pkcs8(data.to_vec()) {
        assert_eq!(key.pkcs8_der(), data);
        let again = KeyPair::from_pkcs8(key.pkcs8_der().to_vec()).expect("reloads");
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert!(is_fingerprint(&key.fingerprint()));
    }
});
