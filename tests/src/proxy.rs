//! A test-only TCP proxy between a client and a server that misbehaves on command.
//!
//! [`Proxy::start`] listens on a free loopback port and forwards every connection to the
//! upstream address, one thread per direction. On command it
//! - **stalls**: stops forwarding in both directions while keeping every socket open (what a
//!   frozen server or a black-holed network looks like to the client), until [`Proxy::resume`];
//! - **cuts**: closes both sides of every live connection ([`Proxy::cut_all`]);
//! - **half-closes**: shuts the write side toward the client, so the client reads EOF while its
//!   own writes still reach the server ([`Proxy::half_close_all`]).
//!
//! New connections keep being accepted in every state (while stalled they are accepted and
//! then stall too). Dropping the proxy stops the listener, closes every connection and joins
//! every thread, so a test never leaves a thread or a socket behind.
//!
//! What is hard: a pump blocked in `read` cannot look at a flag, so a stall takes effect at
//! the next chunk (the chunk read is held, not forwarded), and a cut is done with
//! `shutdown(Both)` on the sockets, which wakes blocked reads and writes at once.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// One proxied connection: the client's socket and the upstream socket.
struct Pair {
    client: TcpStream,
    upstream: TcpStream,
    /// Set by `half_close_all`: the server-to-client pump stops forwarding.
    half_closed: Arc<AtomicBool>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    stalled: AtomicBool,
    pairs: Mutex<Vec<Pair>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    accepted: AtomicU64,
}

impl Shared {
    fn pairs(&self) -> MutexGuard<'_, Vec<Pair>> {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn threads(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A misbehaving TCP proxy; see the module docs. Stops on drop.
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind a loopback port");
        let addr = listener.local_addr().expect("proxy: local address");
        // Bytes pass through unchanged, TLS included: clients of the proxy trust the
        // upstream server's key.
        crate::tls::register(addr, crate::tls::fingerprint_of(upstream).as_deref());
        listener
            .set_nonblocking(true)
            .expect("proxy: non-blocking listener");
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let handle = std::thread::spawn(move || accept_loop(listener, upstream, s));
        Proxy {
            addr,
            upstream,
            shared,
            listener: Some(handle),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn live(&self) -> usize {
        self.shared.pairs().len()
    }

    /// Stops forwarding in both directions; sockets stay open.
    pub fn stall(&self) {
        self.shared.stalled.store(true, Ordering::SeqCst);
    }

    /// Forwards again, including what was held while stalled.
    pub fn resume(&self) {
        self.shared.stalled.store(false, Ordering::SeqCst);
    }

    /// Closes both sides of every live connection. Later connections pass through.
    pub fn cut_all(&self) {
        for p in self.shared.pairs().drain(..) {
            let _ = p.client.shutdown(Shutdown::Both);
            let _ = p.upstream.shutdown(Shutdown::Both);
        }
    }

    /// Shuts the write side toward the client of every live connection: the client reads EOF,
    /// its writes still reach the server.
    pub fn half_close_all(&self) {
        for p in self.shared.pairs().iter() {
            p.half_closed.store(true, Ordering::SeqCst);
            let _ = p.client.shutdown(Shutdown::Write);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.stalled.store(false, Ordering::SeqCst);
        self.cut_all();
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        // The listener has stopped, so no new pumps appear; cut again for any pair it added
        // between the first cut and its exit.
        self.cut_all();
        let threads = std::mem::take(&mut *self.shared.threads());
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if client.set_nonblocking(false).is_err() {
            continue;
        }
        let upstream_sock = match TcpStream::connect_timeout(&upstream, Duration::from_secs(3)) {
            Ok(s) => s,
            // Upstream down: the client sees its connection closed, as with a dead server.
            Err(_) => continue,
        };
        let _ = client.set_nodelay(true);
        let _ = upstream_sock.set_nodelay(true);
        let half_closed = Arc::new(AtomicBool::new(false));
        let clones = (
            client.try_clone(),
            upstream_sock.try_clone(),
            client.try_clone(),
            upstream_sock.try_clone(),
        );
        let (Ok(c_read), Ok(u_write), Ok(c_write), Ok(u_read)) = clones else {
            continue;
        };
        shared.pairs().push(Pair {
            client,
            upstream: upstream_sock,
            half_closed: Arc::clone(&half_closed),
        });
        let s1 = Arc::clone(&shared);
        let up = std::thread::spawn(move || pump(c_read, u_write, &s1, None));
        let s2 = Arc::clone(&shared);
        let down = std::thread::spawn(move || pump(u_read, c_write, &s2, Some(half_closed)));
        let mut threads = shared.threads();
        // Forget finished pumps so a long test does not pile up handles.
        threads.retain(|t| !t.is_finished());
        threads.push(up);
        threads.push(down);
    }
}

/// Copies `from` to `to` until either side fails or ends, holding data while stalled.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, half: Option<Arc<AtomicBool>>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while shared.stalled.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if half.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
            // Half-closed toward the client: swallow what the server sends.
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // Pass the end on (a FIN for a FIN); the other pump ends on its own.
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        (addr, h)
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn passes_through_stalls_resumes_and_cuts() {
        let (addr, echo) = echo_server();
        let proxy = Proxy::start(addr);
        let mut s = TcpStream::connect(proxy.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        assert_eq!(roundtrip(&mut s, b"hello").expect("echo"), b"hello");

        proxy.stall();
        let started = Instant::now();
        assert!(
            roundtrip(&mut s, b"held").is_err(),
            "a stalled proxy forwarded"
        );
        assert!(started.elapsed() >= Duration::from_millis(250));
        proxy.resume();
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = [0u8; 4];
        s.read_exact(&mut got).expect("held data after resume");
        assert_eq!(&got, b"held");

        proxy.cut_all();
        let mut buf = [0u8; 8];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
        drop(proxy);
        let _ = echo.join();
    }

    #[test]
    fn half_close_gives_the_client_eof() {
        let (addr, echo) = echo_server();
        let proxy = Proxy::start(addr);
        let mut s = TcpStream::connect(proxy.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_eq!(roundtrip(&mut s, b"x").expect("echo"), b"x");
        proxy.half_close_all();
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).expect("eof"), 0);
        drop(s);
        drop(proxy);
        let _ = echo.join();
    }
}
