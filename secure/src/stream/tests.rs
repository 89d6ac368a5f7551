use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::key::KeyPair;
use crate::tls::{client_config, server_config, server_name, PinError, ServerPin};

const T: Duration = Duration::from_secs(5);

/// A connected TCP pair on loopback.
fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (s, _) = l.accept().expect("accept");
    (c, s)
}

fn server_side(
    sock: TcpStream,
    key: &KeyPair,
) -> thread::JoinHandle<Result<TlsStream, HandshakeError>> {
    let cfg = server_config(key).expect("server config");
    thread::spawn(move || {
        let conn = rustls::ServerConnection::new(cfg).expect("server conn");
        TlsStream::handshake(sock, conn, T)
    })
}

fn client_side(
    sock: TcpStream,
    pin: Arc<ServerPin>,
    id: Option<&KeyPair>,
) -> Result<TlsStream, HandshakeError> {
    let cfg = client_config(pin, id).expect("client config");
    let conn = rustls::ClientConnection::new(cfg, server_name()).expect("client conn");
    TlsStream::handshake(sock, conn, T)
}

fn connected(id: Option<&KeyPair>) -> (TlsStream, TlsStream, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let (c, s) = pair();
    let server = server_side(s, &key);
    let pin = ServerPin::new(Some(key.fingerprint()));
    let client = client_side(c, pin, id).expect("client handshake");
    let server = server.join().expect("join").expect("server handshake");
    (client, server, key)
}

#[test]
fn the_pinned_key_is_accepted_and_data_flows_both_ways() {
    let id = KeyPair::generate().expect("id");
    let (mut c, mut s, key) = connected(Some(&id));
    assert_eq!(c.peer_key(), Some(key.spki_der()));
    assert_eq!(
        s.peer_key(),
        Some(id.spki_der()),
        "the server sees the client's key"
    );
    assert_eq!(c.cipher_suite(), "TLS13_AES_128_GCM_SHA256");
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"ping");
    s.write_all(b"pong").expect("write");
    c.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"pong");
}

#[test]
fn a_client_without_a_key_still_connects() {
    let (_c, s, _) = connected(None);
    assert_eq!(s.peer_key(), None);
}

#[test]
fn any_other_key_is_refused_with_both_fingerprints_named() {
    let key = KeyPair::generate().expect("key");
    let other = KeyPair::generate().expect("other");
    let (c, s) = pair();
    let server = server_side(s, &key);
    let pin = ServerPin::new(Some(other.fingerprint()));
    let err = client_side(c, Arc::clone(&pin), None).expect_err("mismatch");
    assert!(matches!(err, HandshakeError::Tls(_)), "{err}");
    assert_eq!(
        pin.outcome(),
        Some(Err(PinError::Mismatch {
            want: other.fingerprint(),
            seen: key.fingerprint()
        }))
    );
    assert!(
        server.join().expect("join").is_err(),
        "the server sees the refusal"
    );
}

#[test]
fn no_pin_learns_the_key_but_trusts_nothing() {
    let key = KeyPair::generate().expect("key");
    let (c, s) = pair();
    let _server = server_side(s, &key);
    let pin = ServerPin::new(None);
    client_side(c, Arc::clone(&pin), None).expect_err("unknown");
    assert_eq!(
        pin.outcome(),
        Some(Err(PinError::Unknown {
            seen: key.fingerprint()
        }))
    );
}

#[test]
fn bytes_that_are_not_tls_are_named_as_such() {
    let (mut c, s) = pair();
    let key = KeyPair::generate().expect("key");
    let server = server_side(s, &key);
    c.write_all(b"SHLF\0\0\0\0garbage").expect("write");
    match server.join().expect("join") {
        Err(HandshakeError::NotTls(bytes)) => assert!(bytes.starts_with(b"SHLF")),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_truncated_or_corrupt_record_fails_the_handshake_without_a_hang() {
    let key = KeyPair::generate().expect("key");
    // A record header claiming 300 bytes, then garbage, then the end.
    let (mut c, s) = pair();
    let server = server_side(s, &key);
    c.write_all(&[22, 3, 1, 1, 44, 1, 2, 3]).expect("write");
    drop(c);
    assert!(matches!(
        server.join().expect("join"),
        Err(HandshakeError::Closed)
    ));
    let (mut c, s) = pair();
    let server = server_side(s, &key);
    let mut junk = vec![22, 3, 1, 0, 40];
    junk.extend([0xee; 40]);
    c.write_all(&junk).expect("write");
    assert!(matches!(
        server.join().expect("join"),
        Err(HandshakeError::Tls(_))
    ));
}

#[test]
fn a_stalled_handshake_ends_at_its_deadline_even_when_trickled() {
    let key = KeyPair::generate().expect("key");
    let (mut c, s) = pair();
    let cfg = server_config(&key).expect("cfg");
    let start = Instant::now();
    let server = thread::spawn(move || {
        let conn = rustls::ServerConnection::new(cfg).expect("conn");
        TlsStream::handshake(s, conn, Duration::from_millis(300))
    });
    // One byte of a record header every 100 ms: each read succeeds, the whole never does.
    for b in [22u8, 3, 1, 0, 200] {
        let _ = c.write_all(&[b]);
        thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(
        server.join().expect("join"),
        Err(HandshakeError::TimedOut(_))
    ));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn plaintext_buffered_inside_tls_counts_as_readable() {
    let (mut c, mut s, _) = connected(None);
    s.write_all(b"abcdef").expect("write");
    let mut one = [0u8; 1];
    c.read_exact(&mut one).expect("read");
    // The socket is empty now; the other five bytes sit decrypted inside rustls.
    assert!(!crate::stream::wait(c.as_fd(), PollFlags::IN, Some(Duration::ZERO)).expect("poll"));
    assert!(c.readable_now(), "buffered plaintext is readable");
    let mut rest = [0u8; 5];
    c.read_exact(&mut rest).expect("read");
    assert!(!c.readable_now(), "nothing left");
}

#[test]
fn a_read_times_out_like_a_socket_and_shutdown_wakes_it() {
    let (c, _s, _) = connected(None);
    c.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 8];
    let err = (&c).read(&mut buf).expect_err("nothing sent");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    c.set_read_timeout(None);
    let killer = c.clone();
    let reader = thread::spawn(move || (&c).read(&mut [0u8; 8]));
    thread::sleep(Duration::from_millis(100));
    killer.shutdown(Shutdown::Both).expect("shutdown");
    assert_eq!(reader.join().expect("join").expect("eof"), 0);
}

#[test]
fn both_sides_writing_large_frames_at_once_do_not_deadlock() {
    let (c, s, _) = connected(None);
    const N: usize = 16 << 20;
    let data: Arc<Vec<u8>> = Arc::new((0..N).map(|i| (i % 251) as u8).collect());
    let mut threads = Vec::new();
    for (mut w, r) in [(c.clone(), c), (s.clone(), s)] {
        let d = Arc::clone(&data);
        threads.push(thread::spawn(move || w.write_all(&d).expect("write")));
        let d = Arc::clone(&data);
        threads.push(thread::spawn(move || {
            let mut got = vec![0u8; N];
            (&r).read_exact(&mut got).expect("read");
            assert!(got == *d, "bytes arrive in order");
        }));
    }
    for t in threads {
        t.join().expect("join");
    }
}

#[test]
fn send_now_never_waits_and_flush_now_finishes_the_records() {
    let (c, s, _) = connected(None);
    let data = vec![7u8; 8 << 20];
    let mut off = 0;
    let mut blocked = false;
    // Nobody reads yet: the socket fills and send_now says WouldBlock instead of waiting.
    while off < data.len() {
        match c.send_now(&data[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                blocked = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(blocked, "8 MiB does not fit a socket buffer");
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; 8 << 20];
        (&s).read_exact(&mut got).expect("read");
        got
    });
    let deadline = Instant::now() + T;
    loop {
        let r = if off < data.len() {
            c.send_now(&data[off..]).map(|n| {
                off += n;
                false
            })
        } else {
            c.flush_now()
        };
        match r {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(c.as_fd(), PollFlags::OUT, Some(Duration::from_millis(10))).expect("poll");
            }
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "stuck");
    }
    assert!(reader.join().expect("join") == data);
}

#[test]
fn everything_already_received_counts_as_readable_until_it_is_read() {
    let (c, mut s, _) = connected(None);
    const N: usize = 300 << 10;
    s.write_all(&vec![9u8; N]).expect("write");
    // Let it all arrive: some will sit in the socket, some as ciphertext taken in but not
    // yet decrypted, some as plaintext inside rustls.
    thread::sleep(Duration::from_millis(200));
    let mut got = 0;
    let mut buf = [0u8; 1000];
    while got < N {
        assert!(c.readable_now(), "{got} of {N} read: the rest is here");
        let want = buf.len().min(N - got);
        got += (&c).read(&mut buf[..want]).expect("read");
    }
    assert!(!c.readable_now(), "all read");
}

#[test]
fn no_message_repeats_its_source() {
    let all = [
        HandshakeError::Io(io::Error::from(rustix::io::Errno::CONNRESET)),
        HandshakeError::TimedOut(T),
        HandshakeError::Closed,
        HandshakeError::Tls(rustls::Error::HandshakeNotComplete),
        HandshakeError::NotTls(b"SHLF".to_vec()),
    ];
    for e in &all {
        // Exhaustive, so a new variant is added here too.
        match e {
            HandshakeError::Io(_)
            | HandshakeError::TimedOut(_)
            | HandshakeError::Closed
            | HandshakeError::Tls(_)
            | HandshakeError::NotTls(_) => crate::assert_said_once(e),
        }
    }
}

#[test]
fn writers_on_many_threads_each_send_whole_messages_in_the_order_made() {
    // Four threads write at once, two with write_all and two with send_now, while the socket
    // keeps filling: every record must reach the socket in the order rustls sealed it (one
    // out of order fails its decryption) and each message must arrive whole.
    let (c, s, _) = connected(None);
    const THREADS: u8 = 4;
    const PER_THREAD: u32 = 100;
    let message = |t: u8, seq: u32| {
        // send_now takes at most one chunk: its messages fit one, so each goes whole.
        let max = if t.is_multiple_of(2) {
            600 << 10
        } else {
            CHUNK - 9
        };
        let len = 1 + (seq as usize * 7919 + t as usize * 104_729) % max;
        let mut msg = Vec::with_capacity(9 + len);
        msg.push(t);
        msg.extend_from_slice(&seq.to_le_bytes());
        msg.extend_from_slice(&(len as u32).to_le_bytes());
        msg.extend((0..len).map(|i| (i as u8) ^ t ^ seq as u8));
        msg
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut w = c.clone();
            thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    let msg = message(t, seq);
                    if t.is_multiple_of(2) {
                        w.write_all(&msg).expect("write");
                        continue;
                    }
                    loop {
                        match w.send_now(&msg) {
                            Ok(n) => {
                                assert_eq!(n, msg.len(), "a message within a chunk goes whole");
                                break;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                wait(w.as_fd(), PollFlags::OUT, Some(Duration::from_millis(5)))
                                    .expect("poll");
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                // What send_now left in rustls goes out now.
                while !w.flush_now().expect("flush") {
                    wait(w.as_fd(), PollFlags::OUT, Some(Duration::from_millis(5))).expect("poll");
                }
            })
        })
        .collect();
    let mut next = [0u32; THREADS as usize];
    let mut r = &s;
    while next.iter().any(|&n| n < PER_THREAD) {
        let mut head = [0u8; 9];
        r.read_exact(&mut head).expect("head");
        let t = head[0];
        let seq = u32::from_le_bytes(head[1..5].try_into().expect("4"));
        let len = u32::from_le_bytes(head[5..9].try_into().expect("4")) as usize;
        assert!(t < THREADS, "a message begins where the last ended");
        assert_eq!(
            seq, next[t as usize],
            "thread {t}'s messages in the order written"
        );
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).expect("body");
        assert!(message(t, seq)[9..] == body[..], "message {t}/{seq} whole");
        next[t as usize] += 1;
    }
    for w in writers {
        w.join().expect("writer");
    }
}
