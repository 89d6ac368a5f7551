//! TLS for the end-to-end tests: every [`Server`](crate::Server) speaks TLS unless told
//! `--insecure-plaintext`, and every `shelf` a test runs trusts exactly the servers the tests
//! started.
//!
//! How: each server's fingerprint (shelfd's second line) is recorded here by address and
//! written to a known-servers file in a config directory private to this test process; every
//! command a test runs gets `XDG_CONFIG_HOME` pointing there ([`config_home`]). So no user
//! file is read or touched, and `shelf ls ADDR` in a test verifies the server by its pinned
//! key exactly as a user's would after trusting it once. A port reused by a later server
//! replaces the earlier line. [`RawConn`] lets protocol-level tests speak frames inside TLS.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shelf_secure::stream::HandshakeError;
use shelf_secure::{KeyPair, ServerPin, TlsStream};

fn registry() -> &'static Mutex<HashMap<SocketAddr, String>> {
    static R: OnceLock<Mutex<HashMap<SocketAddr, String>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The config directory every command of this test process gets as `XDG_CONFIG_HOME`.
pub fn config_home() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("shelf-config-")
            .tempdir()
            .expect("config dir")
            .keep();
        std::fs::create_dir_all(dir.join("shelf")).expect("config dir");
        dir
    })
}

/// `shelf` as a plain `std::process::Command` with the tests' config directory, for a test
/// that needs the child itself (signals, pipes).
pub fn shelf_command() -> std::process::Command {
    let mut c = std::process::Command::new(crate::environment::shelf_bin());
    c.env("XDG_CONFIG_HOME", config_home());
    c
}

/// The known-servers file the tests' commands use.
pub fn known_servers_file() -> PathBuf {
    config_home().join("shelf/known_servers")
}

/// Records that the server at `addr` has key `fingerprint` (`None`: it speaks plaintext).
pub fn register(addr: SocketAddr, fingerprint: Option<&str>) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    match fingerprint {
        Some(fp) => r.insert(addr, fp.to_owned()),
        None => r.remove(&addr),
    };
    let mut text = String::from("# written by the shelf end-to-end tests\n");
    for (a, fp) in r.iter() {
        text.push_str(&format!("{a} {fp}\n"));
    }
    let tmp = known_servers_file().with_extension("tmp");
    std::fs::write(&tmp, text).expect("write known servers");
    std::fs::rename(&tmp, known_servers_file()).expect("replace known servers");
}

/// The fingerprint of the test server at `addr`, if it speaks TLS.
pub fn fingerprint_of(addr: SocketAddr) -> Option<String> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&addr)
        .cloned()
}

/// Runs a client TLS handshake over `sock`, pinning `fingerprint`, offering `identity`.
pub fn client_handshake(
    sock: TcpStream,
    fingerprint: Option<String>,
    identity: Option<&KeyPair>,
    timeout: Duration,
) -> Result<TlsStream, HandshakeError> {
    let pin = ServerPin::new(fingerprint);
    let cfg = shelf_secure::client_config(Arc::clone(&pin), identity).expect("client config");
    let conn = rustls::ClientConnection::new(cfg, shelf_secure::tls::server_name())
        .expect("client connection");
    TlsStream::handshake(sock, conn, timeout)
}

/// A protocol-level connection to a test server: TLS when the server speaks it, else TCP.
#[derive(Debug)]
pub enum RawConn {
    Plain(TcpStream),
    Tls(TlsStream),
}

impl RawConn {
    /// Connects to `addr` and, for a TLS server, runs the handshake pinned to its key.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<RawConn> {
        let sock = TcpStream::connect_timeout(&addr, timeout)?;
        sock.set_write_timeout(Some(timeout))?;
        match fingerprint_of(addr) {
            None => {
                sock.set_read_timeout(Some(timeout))?;
                Ok(RawConn::Plain(sock))
            }
            Some(fp) => {
                let s = client_handshake(sock, Some(fp), None, timeout)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                s.set_read_timeout(Some(timeout));
                Ok(RawConn::Tls(s))
            }
        }
    }

    /// Connects over bare TCP whatever the server speaks: for what the parent answers before
    /// any TLS (the busy frame), and for bytes that are not TLS.
    pub fn connect_plain(addr: SocketAddr, timeout: Duration) -> io::Result<RawConn> {
        let sock = TcpStream::connect_timeout(&addr, timeout)?;
        sock.set_write_timeout(Some(timeout))?;
        sock.set_read_timeout(Some(timeout))?;
        Ok(RawConn::Plain(sock))
    }

    pub fn try_clone(&self) -> io::Result<RawConn> {
        Ok(match self {
            RawConn::Plain(s) => RawConn::Plain(s.try_clone()?),
            RawConn::Tls(s) => RawConn::Tls(s.clone()),
        })
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            RawConn::Plain(s) => s.shutdown(how),
            RawConn::Tls(s) => s.shutdown(how),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            RawConn::Plain(s) => s.set_read_timeout(t),
            RawConn::Tls(s) => {
                s.set_read_timeout(t);
                Ok(())
            }
        }
    }
}

impl Read for RawConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            RawConn::Plain(s) => s.read(buf),
            RawConn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for RawConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            RawConn::Plain(s) => s.write(buf),
            RawConn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            RawConn::Plain(s) => s.flush(),
            RawConn::Tls(s) => s.flush(),
        }
    }
}
