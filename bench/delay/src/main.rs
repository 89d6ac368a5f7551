//! `shelf-delay`: a TCP relay on loopback that makes a link look far away.
//!
//! This machine's kernel has no `netem`, so the latency benchmark (`bench/latency.sh`) puts
//! this relay between a client and its server. Every byte, in both directions, is held for a
//! fixed one-way delay; with `--rate` the link also serialises bytes at that rate, the way a
//! real link does: a chunk leaves when the link is free and has carried it
//! (`max(arrival, link free) + len / rate`), then arrives `delay` later. The link is one
//! for all relayed connections, as a real one is: a mount's four connections share its rate
//! (each had the whole rate to itself before, and a mount read at four times the cap). Bytes
//! are never
//! reordered (one queue per direction), and a FIN is delayed like data, so a peer's close
//! arrives after its last bytes.
//!
//! Each direction of a connection is two threads: a reader that stamps what it reads with the
//! time of arrival and queues it, and a writer that sleeps until each chunk is due. At zero
//! delay and no rate the writer sends at once, so what the relay costs is one copy and one
//! hand-over between threads per chunk; `bench/latency.sh` measures that against a direct
//! connection in the same run. The queue is bounded ([`QUEUE_CHUNKS`] chunks of at most
//! [`CHUNK`] bytes), so a fast sender is held back by TCP's own flow control instead of
//! filling memory.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

/// The most a reader takes from its socket at once.
const CHUNK: usize = 256 << 10;
/// Chunks queued per direction: 64 MiB at most, more than a 1 GB/s link holds in flight at a
/// 40 ms round trip.
const QUEUE_CHUNKS: usize = 256;

#[derive(Parser, Debug)]
#[command(about = "Relay TCP connections, adding a one-way delay and optionally a bandwidth cap")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address every connection is relayed to.
    #[arg(long)]
    to: SocketAddr,
    /// One-way delay in milliseconds, each direction (a round trip costs twice this).
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Bandwidth cap per direction in MB/s (10^6 bytes), shared by all relayed connections; 0
    /// for none.
    #[arg(long, default_value_t = 0.0)]
    rate_mbs: f64,
}

/// How one direction of the link treats bytes.
#[derive(Clone, Copy, Debug)]
struct Link {
    delay: Duration,
    /// Seconds per byte; 0 for an unlimited link.
    secs_per_byte: f64,
}

impl Link {
    /// When a chunk of `len` bytes that arrived at `arrival` is delivered, given the time the
    /// link became free; returns (delivery, the time the link is free again).
    fn schedule(&self, arrival: Instant, link_free: Instant, len: usize) -> (Instant, Instant) {
        let start = arrival.max(link_free);
        let sent = start + Duration::from_secs_f64(self.secs_per_byte * len as f64);
        (sent + self.delay, sent)
    }

    /// [`schedule`](Self::schedule) on the link all connections share: books it for this
    /// chunk and returns when the chunk is delivered.
    fn book(&self, free: &LinkFree, arrival: Instant, len: usize) -> Instant {
        // A poisoned lock only means another connection's writer panicked mid-update.
        let mut link_free = free.lock().unwrap_or_else(|e| e.into_inner());
        let (due, next) = self.schedule(arrival, *link_free, len);
        *link_free = next;
        due
    }
}

/// When one direction of the link is next free, for every connection over it.
type LinkFree = Arc<Mutex<Instant>>;

enum Piece {
    Data(Instant, Vec<u8>),
    /// The sender closed its side at this time.
    Fin(Instant),
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.delay_ms >= 0.0 && args.delay_ms.is_finite()) {
        bail!(
            "--delay-ms must be a non-negative number, not {}",
            args.delay_ms
        );
    }
    if !(args.rate_mbs >= 0.0 && args.rate_mbs.is_finite()) {
        bail!(
            "--rate-mbs must be a non-negative number, not {}",
            args.rate_mbs
        );
    }
    let link = Link {
        delay: Duration::from_secs_f64(args.delay_ms / 1000.0),
        secs_per_byte: if args.rate_mbs > 0.0 {
            1.0 / (args.rate_mbs * 1e6)
        } else {
            0.0
        },
    };
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    // The benchmark script reads this line to learn the port.
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let up_free: LinkFree = Arc::new(Mutex::new(Instant::now()));
    let down_free: LinkFree = Arc::new(Mutex::new(Instant::now()));
    for client in listener.incoming() {
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                eprintln!("shelf-delay: accept: {e}");
                continue;
            }
        };
        let to = args.to;
        let free = (Arc::clone(&up_free), Arc::clone(&down_free));
        thread::spawn(move || {
            if let Err(e) = relay(client, to, link, free) {
                eprintln!("shelf-delay: {e:#}");
            }
        });
    }
    Ok(())
}

/// Relays one connection until both directions have closed.
fn relay(
    client: TcpStream,
    to: SocketAddr,
    link: Link,
    (up_free, down_free): (LinkFree, LinkFree),
) -> Result<()> {
    let server = TcpStream::connect(to).with_context(|| format!("connecting to {to}"))?;
    for s in [&client, &server] {
        // The relay adds the delay it is told to and no more: Nagle's rule would add its own.
        s.set_nodelay(true)?;
    }
    let up = direction(client.try_clone()?, server.try_clone()?, link, up_free);
    let down = direction(server, client, link, down_free);
    for half in up.into_iter().chain(down) {
        let _ = half.join();
    }
    Ok(())
}

/// Starts the reader and the writer of one direction, `from` to `to`.
fn direction(
    from: TcpStream,
    to: TcpStream,
    link: Link,
    free: LinkFree,
) -> [thread::JoinHandle<()>; 2] {
    let (tx, rx) = sync_channel(QUEUE_CHUNKS);
    let reader_to = to.try_clone().ok();
    let reader = thread::spawn(move || read_side(from, tx, reader_to));
    let writer = thread::spawn(move || write_side(rx, to, link, free));
    [reader, writer]
}

fn read_side(mut from: TcpStream, tx: SyncSender<Piece>, to: Option<TcpStream>) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Piece::Fin(Instant::now()));
                return;
            }
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Piece::Data(Instant::now(), buf)).is_err() {
                    // The writer gave up (its peer is gone): stop reading from this side too.
                    let _ = from.shutdown(Shutdown::Read);
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // A reset: pass it on as a close, at once (a reset is not delayed data).
                if let Some(to) = &to {
                    let _ = to.shutdown(Shutdown::Both);
                }
                let _ = tx.send(Piece::Fin(Instant::now()));
                return;
            }
        }
    }
}

fn write_side(rx: Receiver<Piece>, mut to: TcpStream, link: Link, free: LinkFree) {
    for piece in rx {
        let (arrival, data) = match piece {
            Piece::Data(t, d) => (t, Some(d)),
            Piece::Fin(t) => (t, None),
        };
        let len = data.as_ref().map_or(0, Vec::len);
        let due = link.book(&free, arrival, len);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        match data {
            Some(d) => {
                if to.write_all(&d).is_err() {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            None => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_link_only_delays() {
        let link = Link {
            delay: Duration::from_millis(10),
            secs_per_byte: 0.0,
        };
        let t0 = Instant::now();
        let (due, free) = link.schedule(t0, t0, 1 << 20);
        assert_eq!(due, t0 + Duration::from_millis(10));
        assert_eq!(free, t0);
    }

    /// 1 MB/s, 5 ms away: a 1,000-byte chunk occupies the link for 1 ms.
    const SLOW: Link = Link {
        delay: Duration::from_millis(5),
        secs_per_byte: 1e-6,
    };

    #[test]
    fn a_capped_link_serialises_chunks_one_after_another() {
        let link = SLOW;
        let t0 = Instant::now();
        let (due1, free1) = link.schedule(t0, t0, 1000);
        assert_eq!(free1, t0 + Duration::from_millis(1));
        assert_eq!(due1, t0 + Duration::from_millis(6));
        // A second chunk arriving at the same moment waits for the first to leave.
        let (due2, free2) = link.schedule(t0, free1, 1000);
        assert_eq!(free2, t0 + Duration::from_millis(2));
        assert_eq!(due2, t0 + Duration::from_millis(7));
        // One arriving after the link went idle starts at its own arrival.
        let later = t0 + Duration::from_millis(50);
        let (due3, _) = link.schedule(later, free2, 1000);
        assert_eq!(due3, later + Duration::from_millis(6));
    }

    #[test]
    fn connections_share_one_link() {
        let link = SLOW;
        let t0 = Instant::now();
        let free: LinkFree = Arc::new(Mutex::new(t0));
        // Two connections' chunks arriving together leave one after the other.
        let a = link.book(&Arc::clone(&free), t0, 1000);
        let b = link.book(&Arc::clone(&free), t0, 1000);
        assert_eq!(a, t0 + Duration::from_millis(6));
        assert_eq!(b, t0 + Duration::from_millis(7));
    }
}
