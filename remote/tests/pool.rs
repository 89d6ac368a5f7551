//! The pool against the real server in-process: reconnects, fail-fast, spreading load.

use std::time::{Duration, Instant};

use shelf_remote::{Client, ConnectOptions};
use shelf_testkit::Loopback;

fn loopback(dir: &std::path::Path, connections: usize) -> Loopback {
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..ConnectOptions::new("loopback")
    };
    Loopback::with(dir, Default::default(), opts, connections).expect("loopback")
}

#[test]
fn keepalive_holds_connections_past_the_server_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = shelf_server::ServeConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let opts = ConnectOptions::new("loopback");
    let lb = Loopback::with(dir.path(), serve, opts, 1).expect("loopback");
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        lb.pool().keepalive();
    }
    let state = lb.pool().state();
    assert_eq!((state.connected, state.reconnects), (1, 0), "{state:?}");

    // Without pings the server hangs up on the idle connection.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        lb.pool().state().connected,
        0,
        "the idle timeout does close"
    );
}

#[test]
fn reconnects_after_the_server_hangs_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a"), b"hello").expect("write");
    let client = Client::new(loopback(dir.path(), 1));
    assert_eq!(client.stat(b"a").expect("stat").size, 5);
    client.transport().hang_up();
    // The pending stat loses its connection; being idempotent it is resent on a new one.
    assert_eq!(client.stat(b"a").expect("stat after restart").size, 5);
    let state = client.transport().pool().state();
    assert_eq!(state.reconnects, 1, "{state:?}");
    assert_eq!(state.connected, 1);
}

#[test]
fn fails_fast_while_the_server_is_down_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new(loopback(dir.path(), 2));
    client.ping().expect("up");
    client.transport().set_down(true);
    client.transport().hang_up();
    let started = Instant::now();
    for _ in 0..5 {
        let err = client.stat(b"").expect_err("server is down");
        assert_eq!(err.errno(), libc::ENOTCONN, "{err:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    // A request that is not idempotent is not resent, and fails as cleanly.
    let err = client.mkdir(b"d", 0o755).expect_err("down");
    assert_eq!(err.errno(), libc::ENOTCONN, "{err:?}");
    client.transport().set_down(false);
    client.mkdir(b"d", 0o755).expect("back up");
    assert!(dir.path().join("d").is_dir());
}

#[test]
fn requests_spread_over_the_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f"), vec![7u8; 1 << 20]).expect("write");
    let lb = std::sync::Arc::new(loopback(dir.path(), 3));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let lb = std::sync::Arc::clone(&lb);
            std::thread::spawn(move || {
                let client = Client::new(lb);
                for _ in 0..10 {
                    let (_, data) = client.read(b"f", 0, 1 << 20).expect("read");
                    assert_eq!(data.len(), 1 << 20);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader thread");
    }
    let state = lb.pool().state();
    assert!(state.connected >= 2, "{state:?}");
    assert_eq!(state.in_flight, 0);
    assert!(state.requests >= 60);
}

fn quick_busy(dir: &std::path::Path, connections: usize, busy_wait: Duration) -> Loopback {
    let opts = ConnectOptions {
        busy_wait,
        ..ConnectOptions::new("loopback")
    };
    Loopback::with(dir, Default::default(), opts, connections).expect("loopback")
}

#[test]
fn a_pool_with_no_connection_waits_out_a_busy_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new(quick_busy(dir.path(), 1, Duration::from_secs(20)));
    client.ping().expect("up");
    client.transport().refuse_busy(4);
    client.transport().hang_up();
    // The connection is gone and the next four connects meet "busy": the call still
    // succeeds, on the fifth.
    client.ping().expect("served once the server has room");
    assert_eq!(client.transport().refused_busy(), 4);
    assert_eq!(client.transport().pool().state().connected, 1);
}

#[test]
fn a_busy_server_that_stays_full_is_reported_after_the_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wait = Duration::from_millis(300);
    let client = Client::new(quick_busy(dir.path(), 1, wait));
    client.ping().expect("up");
    client.transport().refuse_busy(usize::MAX);
    client.transport().hang_up();
    let started = Instant::now();
    let err = client.ping().expect_err("still busy");
    assert_eq!(err.errno(), libc::EBUSY, "{err:?}");
    assert!(err.to_string().contains("still busy after"), "{err}");
    assert!(
        started.elapsed() >= wait,
        "gave up early: {:?}",
        started.elapsed()
    );
    // Tried again with backoff, not in a tight loop, and more than once.
    let tries = client.transport().refused_busy();
    assert!((2..=20).contains(&tries), "{tries} tries in {wait:?}");
}

#[test]
fn a_pool_with_a_live_connection_never_waits_for_a_busy_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f"), vec![1u8; 4 << 20]).expect("write");
    // A long wait: if any call waited for the busy server, the test would take it.
    let client = std::sync::Arc::new(Client::new(quick_busy(
        dir.path(),
        4,
        Duration::from_secs(60),
    )));
    client.ping().expect("up");
    client.transport().refuse_busy(usize::MAX);
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let c = std::sync::Arc::clone(&client);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let (_, data) = c
                        .read(b"f", 0, 256 << 10)
                        .expect("read on the live connection");
                    assert_eq!(data.len(), 256 << 10);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "calls waited for the busy server"
    );
    let state = client.transport().pool().state();
    assert_eq!(state.connected, 1, "{state:?}");
    // The holdoff keeps calls from asking the full server for a connection each time.
    let tries = client.transport().refused_busy();
    assert!(tries <= 10, "{tries} connects tried against a full server");
}

/// Lock requests all go to one connection, whatever the load on the others, and its epoch
/// changes only when that connection does; a lock taken there is gone with it.
#[test]
fn pinned_requests_keep_to_one_connection_and_its_epoch_says_when_it_changed() {
    use shelf_proto::{LockAsk, LockFlavor, LockKind};
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f"), b"x").expect("file");
    let client = Client::new(loopback(dir.path(), 4));
    let ask = |owner, kind| LockAsk {
        file: 1,
        owner,
        flavor: LockFlavor::Posix,
        kind,
        start: 0,
        end: u64::MAX,
    };
    let first = client
        .lock(b"f", ask(1, LockKind::Write), Duration::ZERO)
        .expect("lock");
    // Busy the pool so other slots fill, then lock again: same connection, same epoch, and
    // the owner's own lock is no conflict (it would be on another server process).
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20 {
                    client.ping().expect("ping");
                }
            });
        }
        for _ in 0..20 {
            let epoch = client
                .lock(b"f", ask(1, LockKind::Write), Duration::ZERO)
                .expect("the owner re-locks on the same connection");
            assert_eq!(epoch, first);
        }
    });
    assert!(client.transport().pool().state().connected > 1);
    let refused = client.lock(b"f", ask(2, LockKind::Read), Duration::ZERO);
    assert!(refused.is_err(), "another owner is refused");
    client.transport().hang_up();
    // The server's end of the old connection lets go as it finishes, a moment after the
    // hang-up: asked again until then.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match client.lock(b"f", ask(2, LockKind::Read), Duration::ZERO) {
            Ok(epoch) => break epoch,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the lock did not go with its connection: {e}"),
        }
    };
    assert_ne!(after, first, "a new connection, a new epoch");
}

#[test]
fn a_pool_opens_its_free_slots_at_once_and_a_failure_is_left_for_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lb = loopback(dir.path(), 4);
    assert_eq!(lb.pool().state().connected, 1, "the first, at connect");
    lb.pool().open_free_slots();
    let state = lb.pool().state();
    assert_eq!((state.connected, state.reconnects), (4, 0), "{state:?}");

    let lb = loopback(dir.path(), 3);
    lb.set_down(true);
    lb.pool().open_free_slots();
    assert_eq!(lb.pool().state().connected, 1, "nothing more while down");
    lb.set_down(false);
    let client = Client::new(lb);
    client.ping().expect("the live connection serves");
    client.transport().pool().open_free_slots();
    assert_eq!(client.transport().pool().state().connected, 3);
}
