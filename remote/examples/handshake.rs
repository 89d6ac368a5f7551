//! What a TLS handshake adds to a (re)connect: connects N times to a TLS shelfd and to a
//! plaintext one and prints the median time of one whole connect (TCP, TLS if any, the shelf
//! hello), in microseconds, and the median round trip of a ping on one connection each way.
//! bench/run.sh runs it.
//!
//!   cargo run --release -p shelf-remote --example handshake -- \
//!       TLS_ADDR FINGERPRINT PLAIN_ADDR [N]

use std::time::{Duration, Instant};

use shelf_proto::Request;
use shelf_remote::{ConnectOptions, Connection, TlsOptions, Transport};

/// The median round trip of a ping on one connection, in microseconds.
fn ping_us(opts: &ConnectOptions, n: usize) -> u128 {
    let conn = Connection::connect(opts).unwrap_or_else(|e| panic!("connect: {e}"));
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            conn.call(Request::Ping)
                .unwrap_or_else(|e| panic!("ping: {e}"));
            start.elapsed()
        })
        .collect();
    t.sort();
    t[n / 2].as_micros()
}

fn median_us(opts: &ConnectOptions, n: usize) -> u128 {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            let conn = Connection::connect(opts).unwrap_or_else(|e| panic!("connect: {e}"));
            let took = start.elapsed();
            drop(conn);
            took
        })
        .collect();
    t.sort();
    t[n / 2].as_micros()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tls_addr, fingerprint, plain_addr, rest @ ..] = args.as_slice() else {
        eprintln!("usage: handshake TLS_ADDR FINGERPRINT PLAIN_ADDR [N]");
        std::process::exit(2);
    };
    let n: usize = rest
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
        .max(1);
    let tls = ConnectOptions {
        tls: Some(TlsOptions {
            fingerprint: Some(fingerprint.clone()),
            identity: None,
        }),
        ..ConnectOptions::new(tls_addr.as_str())
    };
    let plain = ConnectOptions::new(plain_addr.as_str());
    // Warm both servers and this process up before measuring.
    median_us(&tls, 3);
    median_us(&plain, 3);
    let (t, p) = (median_us(&tls, n), median_us(&plain, n));
    println!("connect_tls_us={t}");
    println!("connect_plain_us={p}");
    println!("connect_tls_extra_us={}", t.saturating_sub(p));
    let (t, p) = (ping_us(&tls, 20 * n), ping_us(&plain, 20 * n));
    println!("ping_tls_us={t}");
    println!("ping_plain_us={p}");
}
