//! Load on the real `shelfd`: hundreds of concurrent raw clients, the client limit, thousands
//! of short connections, and abandoned connections freed by the idle and handshake timeouts.
//!
//! The clients are threads speaking the protocol directly with `shelf_proto` over a
//! `TcpStream` (a process per client would measure process start-up, not the server). The
//! server parent is checked for leaks: its resident memory (VmRSS) and its open descriptors
//! are compared before and after, once its children are gone, and no child is left a zombie.
//! Tests take [`heavy`]: they load both cores and time the server.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shelf_proto::{Code, Frame, FrameReader, Hello, Reply, Request, HARD_MAX_PAYLOAD};
use shelf_tests::*;

static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

const IO_TIMEOUT: Duration = Duration::from_secs(30);

struct Raw {
    stream: RawConn,
    reader: FrameReader<RawConn>,
    next_id: u32,
}

impl Raw {
    /// Connects, inside TLS when the server speaks it (the frames are the same).
    fn connect(addr: SocketAddr) -> std::io::Result<Raw> {
        let stream = RawConn::connect(addr, IO_TIMEOUT)?;
        let reader = FrameReader::new(stream.try_clone()?, HARD_MAX_PAYLOAD);
        Ok(Raw {
            stream,
            reader,
            next_id: 1,
        })
    }

    /// Connects over bare TCP, whatever the server speaks.
    fn connect_plain(addr: SocketAddr) -> std::io::Result<Raw> {
        let stream = RawConn::connect_plain(addr, IO_TIMEOUT)?;
        let reader = FrameReader::new(stream.try_clone()?, HARD_MAX_PAYLOAD);
        Ok(Raw {
            stream,
            reader,
            next_id: 1,
        })
    }

    fn call(&mut self, req: Request) -> Result<Frame<Reply>, String> {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = Frame::new(id, req)
            .to_bytes(HARD_MAX_PAYLOAD)
            .map_err(|e| e.to_string())?;
        self.stream
            .write_all(&bytes)
            .map_err(|e| format!("send: {e}"))?;
        match self.reader.read_frame::<Reply>() {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err("connection closed".into()),
            Err(e) => Err(format!("receive: {e}")),
        }
    }

    fn hello(&mut self) -> Result<Frame<Reply>, String> {
        self.call(Request::Hello(Hello::new("load-test")))
    }

    fn ready(addr: SocketAddr) -> Result<Raw, String> {
        let mut c = Raw::connect(addr).map_err(|e| format!("connect: {e}"))?;
        match c.hello()?.msg {
            Reply::Hello(_) => Ok(c),
            other => Err(format!("handshake: {other:?}")),
        }
    }
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count()
}

/// Waits until `pid` has exactly `n` children (counting zombies); returns how long it took.
#[track_caller]
fn wait_children(pid: u32, n: usize, within: Duration, server: &Server) -> Duration {
    let started = Instant::now();
    let done = poll(within, || (children_of(pid).len() == n).then_some(()));
    assert!(
        done.is_some(),
        "the server has not {n} children after {within:?}: {:?}\n--- log tail ---\n{}",
        children_of(pid),
        tail(&server.log(), 30)
    );
    started.elapsed()
}

/// Waits until `pid` has no children at all (none running, none a zombie).
#[track_caller]
fn wait_no_children(pid: u32, within: Duration, server: &Server) -> Duration {
    wait_children(pid, 0, within, server)
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[track_caller]
fn assert_no_panic(server: &Server) {
    assert!(
        !server.log().contains("panicked"),
        "the server panicked\n{}",
        server.log()
    );
}

/// One client's mixed work: its own file written, read back, stat'ed and listed, plus shared
/// reads, until `deadline`. Returns the number of requests it checked.
fn client_work(addr: SocketAddr, i: usize, deadline: Instant) -> Result<u64, String> {
    let mut c = Raw::ready(addr)?;
    let name = format!("load/c{i:03}").into_bytes();
    let mut n = 0u64;
    let mut round = 0u64;
    while Instant::now() < deadline {
        let data = random_bytes(
            (i as u64) << 20 | round,
            1000 + (round as usize * 37) % 60_000,
        );
        let expect = |f: Frame<Reply>, what: &str| -> Result<Reply, String> {
            match f.msg {
                Reply::Error { code, message } => Err(format!("{what}: {code:?} {message}")),
                other => Ok(other),
            }
        };
        expect(
            c.call(Request::Create {
                path: name.clone(),
                perm: 0o644,
                exclusive: false,
            })?,
            "create",
        )?;
        expect(
            c.call(Request::SetAttr {
                path: name.clone(),
                attrs: shelf_proto::SetAttrs {
                    perm: None,
                    size: Some(0),
                    atime: None,
                    mtime: None,
                },
            })?,
            "truncate",
        )?;
        expect(
            c.call(Request::Write {
                path: name.clone(),
                offset: 0,
                data: data.clone().into(),
            })?,
            "write",
        )?;
        match expect(
            c.call(Request::Read {
                path: name.clone(),
                offset: 0,
                len: 1 << 20,
            })?,
            "read",
        )? {
            Reply::Data { data: got, .. } if got == data => {}
            other => return Err(format!("client {i}: read back wrong data: {other:.100?}")),
        }
        match expect(c.call(Request::Stat { path: name.clone() })?, "stat")? {
            Reply::Attr(a) if a.size == data.len() as u64 => {}
            other => return Err(format!("client {i}: stat: {other:.200?}")),
        }
        match expect(
            c.call(Request::List {
                path: b"load".to_vec(),
                after: Vec::new(),
                max_entries: 0,
            })?,
            "list",
        )? {
            Reply::Listing { entries, .. } if entries.iter().any(|e| e.name == name[5..]) => {}
            other => return Err(format!("client {i}: own file not listed: {other:.200?}")),
        }
        match expect(
            c.call(Request::Read {
                path: b"shared".to_vec(),
                offset: 100,
                len: 1000,
            })?,
            "shared read",
        )? {
            Reply::Data { data, .. } if data == ramp(1100)[100..] => {}
            other => return Err(format!("client {i}: shared read: {other:.100?}")),
        }
        n += 7;
        round += 1;
    }
    Ok(n)
}

#[test]
fn two_hundred_concurrent_clients_get_correct_answers_and_leave_no_leak() {
    let _heavy = heavy();
    let lib = library();
    std::fs::create_dir(lib.path().join("load")).expect("mkdir");
    write(lib.path().join("shared"), ramp(1100));
    let server = Server::start(lib.path(), &["--max-clients", "256"]);
    let pid = server.pid().expect("running");

    // Warm up (the first fork touches pages), then measure.
    for _ in 0..5 {
        let mut c = Raw::ready(server.addr()).expect("warm-up client");
        assert!(matches!(
            c.call(Request::Ping).expect("ping").msg,
            Reply::Pong
        ));
    }
    wait_no_children(pid, Duration::from_secs(10), &server);
    let (rss0, fds0) = (rss_kib(pid), fd_count(pid));

    const CLIENTS: usize = 200;
    let requests = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (addr, requests) = (server.addr(), &requests);
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(s, move || {
                        let n = client_work(addr, i, deadline)?;
                        requests.fetch_add(n, Ordering::Relaxed);
                        Ok::<(), String>(())
                    })
                    .expect("spawn client thread")
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("client thread").err())
            .collect()
    });
    let elapsed = started.elapsed();
    assert!(
        errors.is_empty(),
        "{} of {CLIENTS} clients failed, e.g. {:?}\n--- log tail ---\n{}",
        errors.len(),
        &errors[..errors.len().min(5)],
        tail(&server.log(), 30)
    );
    let n = requests.load(Ordering::Relaxed);
    let reaped_in = wait_no_children(pid, Duration::from_secs(20), &server);
    let (rss1, fds1) = (rss_kib(pid), fd_count(pid));
    eprintln!(
        "{CLIENTS} clients: {n} requests checked in {elapsed:.1?} ({:.0}/s); children gone \
         {reaped_in:.1?} after; parent VmRSS {rss0} -> {rss1} KiB, fds {fds0} -> {fds1}",
        n as f64 / elapsed.as_secs_f64()
    );
    assert!(
        n >= CLIENTS as u64 * 7,
        "every client did at least one round"
    );
    assert_eq!(fds1, fds0, "the parent's descriptors grew");
    assert!(
        rss1 <= rss0 + 2048,
        "the parent's memory grew from {rss0} to {rss1} KiB"
    );
    assert_no_panic(&server);
}

#[test]
fn clients_past_max_clients_get_a_busy_frame_not_a_silent_drop() {
    let _heavy = heavy();
    let lib = library();
    // Refused at once, not queued: this test is about the refusal itself.
    let server = Server::start(lib.path(), &["--max-clients", "20", "--queue-wait", "0"]);
    let pid = server.pid().expect("running");
    let held: Vec<Raw> = (0..20)
        .map(|i| Raw::ready(server.addr()).unwrap_or_else(|e| panic!("client {i}: {e}")))
        .collect();
    let mut busy = 0;
    for i in 0..20 {
        // The parent answers before any TLS, in a plain frame (a TLS client reads it as such).
        let mut c = Raw::connect_plain(server.addr()).expect("connect");
        // The parent answers without reading the hello; send it anyway, like a real client.
        match c.hello() {
            Ok(f) => match f.msg {
                Reply::Error {
                    code: Code::Busy,
                    message,
                } => {
                    assert_eq!(f.id, 0, "the busy frame has request id 0");
                    assert!(message.contains("busy"), "{message}");
                    busy += 1;
                }
                other => panic!("surplus client {i}: {other:?}"),
            },
            Err(e) => panic!("surplus client {i} got no busy frame: {e}"),
        }
    }
    assert_eq!(busy, 20);
    // The held clients are still served.
    for mut c in held {
        assert!(matches!(
            c.call(Request::Ping).expect("ping").msg,
            Reply::Pong
        ));
    }
    wait_no_children(pid, Duration::from_secs(10), &server);
    // With room again, a new client is served.
    let mut c = Raw::ready(server.addr()).expect("a client after the load");
    assert!(matches!(
        c.call(Request::Ping).expect("ping").msg,
        Reply::Pong
    ));
}

#[test]
fn a_connection_past_the_cap_waits_for_room_then_is_served() {
    let _heavy = heavy();
    let lib = library();
    // A queue wait far longer than the test needs: the client is served when room frees,
    // whatever the machine's speed, never by a deadline.
    let server = Server::start(lib.path(), &["--max-clients", "2", "--queue-wait", "60000"]);
    let pid = server.pid().expect("running");
    let mut held: Vec<Raw> = (0..2)
        .map(|i| Raw::ready(server.addr()).unwrap_or_else(|e| panic!("client {i}: {e}")))
        .collect();
    let waiting = std::thread::spawn({
        let addr = server.addr();
        move || Raw::ready(addr)
    });
    // It is queued, not served: the parent still has only the two children.
    wait_children(pid, 2, Duration::from_secs(10), &server);
    assert!(!waiting.is_finished(), "served past the cap");
    drop(held.pop());
    let mut c = waiting
        .join()
        .expect("client thread")
        .expect("the queued client is served once a child exits");
    assert!(matches!(
        c.call(Request::Ping).expect("ping").msg,
        Reply::Pong
    ));
    assert_no_panic(&server);
}

#[test]
fn a_queued_connection_gets_busy_at_its_deadline_and_the_served_go_on() {
    let _heavy = heavy();
    let lib = library();
    let server = Server::start(lib.path(), &["--max-clients", "2", "--queue-wait", "200"]);
    let mut held: Vec<Raw> = (0..2)
        .map(|i| Raw::ready(server.addr()).unwrap_or_else(|e| panic!("client {i}: {e}")))
        .collect();
    // A flood past the cap: each is held, then refused; the served never notice.
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let addr = server.addr();
            std::thread::spawn(move || {
                let mut c = Raw::connect_plain(addr).expect("connect");
                c.hello()
            })
        })
        .collect();
    for c in &mut held {
        for _ in 0..20 {
            assert!(matches!(
                c.call(Request::Ping).expect("ping during the flood").msg,
                Reply::Pong
            ));
        }
    }
    for t in flood {
        match t.join().expect("flood thread").map(|f| f.msg) {
            Ok(Reply::Error {
                code: Code::Busy, ..
            }) => {}
            other => panic!(
                "a connection past the cap: {other:?}\n{}",
                tail(&server.log(), 60)
            ),
        }
    }
    // Held to the end, so the flood never found room.
    drop(held);
    assert_no_panic(&server);
}

#[test]
fn thousands_of_short_connections_are_all_served_and_reaped() {
    let _heavy = heavy();
    let lib = library();
    let server = Server::start(lib.path(), &["--max-clients", "64"]);
    let pid = server.pid().expect("running");
    const TOTAL: usize = 3000;
    const THREADS: usize = 6;
    let started = Instant::now();
    let busy = AtomicU64::new(0);
    let served = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let (busy, served, addr) = (&busy, &served, server.addr());
            s.spawn(move || {
                for _ in 0..TOTAL / THREADS {
                    // A busy answer is an honest answer; try again like a client would.
                    loop {
                        let mut c = Raw::connect(addr).expect("connect");
                        let f = c.hello().expect("hello answered");
                        match f.msg {
                            Reply::Hello(_) => {
                                let p = c.call(Request::Ping).expect("ping");
                                assert!(matches!(p.msg, Reply::Pong));
                                served.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Reply::Error {
                                code: Code::Busy, ..
                            } => {
                                busy.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let reaped_in = wait_no_children(pid, Duration::from_secs(20), &server);
    eprintln!(
        "{} short connections served in {elapsed:.1?}, {} busy retries, children gone \
         {reaped_in:.1?} after",
        served.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed)
    );
    assert_eq!(served.load(Ordering::Relaxed), TOTAL as u64);
    assert_no_panic(&server);
}

#[test]
fn abandoned_connections_are_freed_by_the_idle_and_handshake_timeouts() {
    let _heavy = heavy();
    let lib = library();
    let server = Server::start(lib.path(), &["--idle-timeout", "1"]);
    let pid = server.pid().expect("running");

    // Handshaken, then idle: freed after the 1 s idle timeout.
    let idle: Vec<Raw> = (0..5)
        .map(|_| Raw::ready(server.addr()).expect("client"))
        .collect();
    wait_children(pid, 5, Duration::from_secs(5), &server);
    let freed = wait_no_children(pid, Duration::from_secs(6), &server);
    eprintln!("5 idle handshaken connections freed {freed:.1?} after becoming idle");
    drop(idle);

    // Connected, nothing sent: freed by the handshake timeout (10 s in shelfd, not
    // configurable from the command line), so allow 15 s.
    let silent: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(server.addr()).expect("connect"))
        .collect();
    wait_children(pid, 5, Duration::from_secs(5), &server);
    let freed = wait_no_children(pid, Duration::from_secs(15), &server);
    eprintln!("5 silent connections freed {freed:.1?} after connecting");
    drop(silent);

    // Half a hello header, then silence: the handshake timeout as well.
    let mut partial = TcpStream::connect(server.addr()).expect("connect");
    partial.write_all(b"SHLF\x01").expect("send");
    wait_children(pid, 1, Duration::from_secs(5), &server);
    wait_no_children(pid, Duration::from_secs(15), &server);
    drop(partial);

    let mut c = Raw::ready(server.addr()).expect("a fresh client");
    assert!(matches!(
        c.call(Request::Ping).expect("ping").msg,
        Reply::Pong
    ));
    assert_no_panic(&server);
}

/// Issue #14's first report: 64 `shelf put`/`get` loops beside a mount, against a server whose
/// cap they exceed many times over. Clients that meet "busy" wait and try again; the mount
/// works with the connections it has. Correctness only: every command succeeds, every byte
/// comes back, and no child is left behind.
#[test]
fn clients_past_the_cap_wait_their_turn_and_the_mount_keeps_working() {
    let _heavy = heavy();
    let lib = library();
    // Room for the mount's four connections and two more: the 64 clients share the two.
    // No queue: the clients' own waiting is what is under test here.
    let server = Server::start(lib.path(), &["--max-clients", "6", "--queue-wait", "0"]);
    let pid = server.pid().expect("running");
    let mount = Mount::new(server.addr(), &["--connections", "4"]);
    let addr = server.addr().to_string();
    let local = tempfile::Builder::new()
        .prefix("shelf-load-local-")
        .tempdir()
        .expect("local dir");
    const CLIENTS: usize = 64;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failures: Vec<String> = std::thread::scope(|s| {
        // The mount writes and reads back its own files all the while.
        let mounted = s.spawn(|| {
            let mut rounds = 0u32;
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) || rounds < 3 {
                let data = random_bytes(u64::from(rounds), 300_000 + rounds as usize);
                let path = mount.join(format!("m{}", rounds % 4));
                let wrote = std::fs::write(&path, &data);
                match wrote.and_then(|()| std::fs::read(&path)) {
                    Ok(back) if back == data => {}
                    Ok(_) => errors.push(format!("mount round {rounds}: wrong bytes")),
                    Err(e) => errors.push(format!("mount round {rounds}: {e}")),
                }
                rounds += 1;
            }
            errors
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (addr, dir) = (&addr, local.path());
                s.spawn(move || -> Result<(), String> {
                    let data = random_bytes(7000 + i as u64, 20_000 + i * 977);
                    let src = dir.join(format!("c{i}"));
                    write(&src, &data);
                    let run = |args: &[&str]| {
                        // The wait is generous: on two busy cores, 64 TLS handshakes through
                        // two free slots take a while; what matters is that nothing fails.
                        let out = shelf()
                            .args(["--busy-wait", "120s"])
                            .args(args)
                            .timeout(Duration::from_secs(180))
                            .run();
                        if out.success() {
                            Ok(out)
                        } else {
                            Err(format!("client {i}: shelf {args:?}: {}", out.stderr_str()))
                        }
                    };
                    let src_s = src.to_string_lossy().into_owned();
                    let name = format!("c{i}");
                    run(&["put", addr, &src_s, &name])?;
                    let back = dir.join(format!("c{i}.back"));
                    run(&["get", addr, &name, &back.to_string_lossy()])?;
                    if read(&back) != data {
                        return Err(format!("client {i}: wrong bytes came back"));
                    }
                    let listing = run(&["ls", addr])?.stdout_str();
                    if !listing.contains(&name) {
                        return Err(format!("client {i}: {name} missing from ls"));
                    }
                    Ok(())
                })
            })
            .collect();
        let mut failures: Vec<String> = clients
            .into_iter()
            .filter_map(|h| h.join().expect("client thread").err())
            .collect();
        stop.store(true, Ordering::Relaxed);
        failures.extend(mounted.join().expect("mount thread"));
        failures
    });
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}\n--- log tail ---\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        tail(&server.log(), 30)
    );
    // The cap was really met: some client was told "busy" (the parent logs each refusal).
    assert!(
        server.log().contains("busy"),
        "no client met the cap; the test proves nothing\n{}",
        tail(&server.log(), 30)
    );
    for i in 0..CLIENTS {
        assert_eq!(
            read(lib.path().join(format!("c{i}"))),
            random_bytes(7000 + i as u64, 20_000 + i * 977),
            "client {i}'s file on the server"
        );
    }
    drop(mount);
    wait_no_children(pid, Duration::from_secs(20), &server);
    assert_no_panic(&server);
}

/// The load benchmark's workload (`bench/load.sh`), short and small, for correctness only:
/// CLI clients and two mounts at once against a server whose cap they exceed, every byte
/// and every listing checked.
#[test]
fn the_mixed_workload_of_the_load_benchmark_loses_and_corrupts_nothing() {
    let _heavy = heavy();
    let lib = library();
    // No queue: the clients' own waiting is what is under test here.
    let server = Server::start(lib.path(), &["--max-clients", "8", "--queue-wait", "0"]);
    let pid = server.pid().expect("running");
    let mounts = [
        Mount::new(server.addr(), &["--connections", "2"]),
        Mount::new(server.addr(), &["--connections", "2"]),
    ];
    let scratch = tempfile::Builder::new()
        .prefix("shelf-loadgen-")
        .tempdir()
        .expect("scratch");
    let cfg = shelf_tests::loadgen::LoadConfig {
        addr: server.addr().to_string(),
        cli_options: vec![
            "--busy-wait".into(),
            "120s".into(),
            "--fingerprint".into(),
            server.fingerprint().expect("a TLS server").into(),
        ],
        clients: 24,
        mounts: mounts.iter().map(|m| m.path().to_path_buf()).collect(),
        workers_per_mount: 2,
        duration: Duration::from_secs(4),
        scratch: scratch.path().to_path_buf(),
        run_id: "t".into(),
        command_timeout: Duration::from_secs(150),
    };
    let report = shelf_tests::loadgen::run(&cfg);
    eprint!("{}", report.table());
    assert_eq!(
        (report.failed, report.wrong),
        (0, 0),
        "{:#?}\n--- log tail ---\n{}",
        report.problems,
        tail(&server.log(), 30)
    );
    for kind in ["put", "get", "ls", "write", "pread", "read"] {
        let n = report.kinds.get(kind).map_or(0, |k| k.latencies.len());
        assert!(n > 0, "no {kind} ran: the test proves nothing of it");
    }
    assert!(report.bytes_checked > 0);
    assert!(
        server.log().contains("busy: refusing"),
        "the cap was never met"
    );
    drop(mounts);
    wait_no_children(pid, Duration::from_secs(20), &server);
    assert_no_panic(&server);
}
