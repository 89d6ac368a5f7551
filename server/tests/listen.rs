//! The real `shelfd` binary on port 0: many connections, no zombies, hostile bytes, the
//! client limit, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use shelf_proto::{
    write_frame, Code, Frame, FrameReader, Hello, ReadError, Reply, Request, HARD_MAX_PAYLOAD,
};

/// The server process; killed and reaped when dropped, even while a test unwinds.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("lib");
        std::fs::create_dir(&root).expect("mkdir root");
        std::fs::write(root.join("hello.txt"), b"hello\n").expect("seed file");
        let log = dir.path().join("shelfd.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shelfd"))
            .arg(&root)
            .args(["--listen", "127.0.0.1:0", "--log-level", "debug"])
            // These tests are about the forking parent and speak frames on bare TCP; TLS on
            // the real binary is tests/tests/tls.rs's.
            .arg("--insecure-plaintext")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn shelfd");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Server {
            child,
            addr: "127.0.0.1:1".parse().expect("placeholder"),
            log,
            _dir: dir,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no address line; log:\n{}", server.log_text()));
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line was {line:?}"));
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        server.addr = addr.parse().expect("address parses");
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Live (unreaped) connection children, zombies included; not the change watcher.
    fn children(&self) -> Vec<u32> {
        let path = format!("/proc/{0}/task/{0}/children", self.pid());
        std::fs::read_to_string(path)
            .expect("read children (CONFIG_PROC_CHILDREN)")
            .split_whitespace()
            .map(|s| s.parse().expect("pid"))
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() != "shelfd-watch")
            })
            .collect()
    }

    fn wait_children(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let kids = self.children();
            if kids.len() == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} children, have {kids:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "shelfd did not exit; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pid fits")).expect("pid > 0");
        kill_process(pid, sig).expect("our own unreaped child can be signalled");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    stream: TcpStream,
    reader: FrameReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let reader = FrameReader::new(stream.try_clone().expect("clone"), HARD_MAX_PAYLOAD);
        Client { stream, reader }
    }

    fn send(&mut self, id: u32, req: Request) {
        write_frame(
            &mut self.stream,
            &Frame::new(id, req),
            HARD_MAX_PAYLOAD,
            &mut Vec::new(),
        )
        .expect("send");
    }

    fn recv(&mut self) -> Frame<Reply> {
        self.reader
            .read_frame()
            .expect("valid reply")
            .expect("not closed")
    }

    fn hello(&mut self) -> Reply {
        self.send(1, Request::Hello(Hello::new("listen-test")));
        self.recv().msg
    }

    fn ready(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        let reply = c.hello();
        assert!(matches!(reply, Reply::Hello(_)), "{reply:?}");
        c
    }

    fn expect_closed(&mut self) {
        match self.reader.read_frame::<Reply>() {
            Ok(None) => {}
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected close, got {other:?}"),
        }
    }

    fn read_hello_txt(&mut self) {
        self.send(
            2,
            Request::Read {
                path: b"hello.txt".to_vec(),
                offset: 0,
                len: 100,
            },
        );
        match self.recv().msg {
            Reply::Data { data, .. } => assert_eq!(&data[..], b"hello\n"),
            other => panic!("read failed: {other:?}"),
        }
    }
}

fn error_code(reply: &Reply) -> Code {
    match reply {
        Reply::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn shelfd_serves_reaps_refuses_and_stops() {
    let mut server = Server::start(&["--max-clients", "4"]);

    // Many short connections leave no zombies behind. Batches stay under --max-clients:
    // a child still exiting counts against the limit until it is reaped, which on a loaded
    // machine can lag behind the next connect.
    for batch in 0..50 {
        for i in 0..3 {
            let mut c = Client::ready(server.addr);
            c.send(2, Request::Ping);
            assert_eq!(c.recv().msg, Reply::Pong, "connection {batch}.{i}");
        }
        server.wait_children(0);
    }

    // Garbage instead of a hello: an EPROTO reply, then the connection closes.
    let mut c = Client::connect(server.addr);
    c.stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send garbage");
    assert_eq!(error_code(&c.recv().msg), Code::Protocol);
    c.expect_closed();

    // An oversized length after a good hello: refused from the header alone.
    let mut c = Client::ready(server.addr);
    c.stream
        .write_all(b"SHLF\x01\x00\x00\x02\x00\x00\x00\x05\xff\xff\xff\xff")
        .expect("send header");
    let f = c.recv();
    assert_eq!((f.id, error_code(&f.msg)), (5, Code::Protocol));
    c.expect_closed();

    // A client that connects and says nothing does not hold up others.
    let _silent = Client::connect(server.addr);
    Client::ready(server.addr).read_hello_txt();
    drop(_silent);
    server.wait_children(0);

    // Past --max-clients: one Busy frame with request id 0, then close.
    let mut held: Vec<Client> = (0..4).map(|_| Client::ready(server.addr)).collect();
    server.wait_children(4);
    let mut extra = Client::connect(server.addr);
    let f = extra.recv();
    assert_eq!(f.id, 0);
    match &f.msg {
        Reply::Error { code, message } => {
            assert_eq!(*code, Code::Busy);
            assert_eq!(message, "server busy: 4 clients connected, try again later");
        }
        other => panic!("expected busy, got {other:?}"),
    }
    extra.expect_closed();
    held.truncate(1);
    server.wait_children(1);
    Client::ready(server.addr).read_hello_txt();

    // SIGTERM: stop accepting, let the live connection finish, exit 0.
    server.signal(Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "waits for its client"
    );
    held[0].read_hello_txt();
    drop(held);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        server.log_text()
    );
    let log = server.log_text();
    assert!(log.contains("connect"), "connections are logged:\n{log}");
}

#[test]
fn shelfd_reports_bad_setup_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_shelfd"))
        .arg("/nonexistent/shelf-root")
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run shelfd");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("shelfd: cannot serve /nonexistent/shelf-root"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_shelfd"))
        .args(["/tmp", "--max-clients", "zero"])
        .output()
        .expect("run shelfd");
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");

    // A port in use is a clear error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_shelfd"))
        .args(["/tmp", "--listen", &addr])
        .output()
        .expect("run shelfd");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn shelfd_requires_the_token_from_its_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, b"s3cret\n").expect("token file");
    let server = Server::start(&["--token-file", token.to_str().expect("utf-8 path")]);
    let mut c = Client::connect(server.addr);
    assert_eq!(error_code(&c.hello()), Code::Access);
    c.expect_closed();
    let mut c = Client::connect(server.addr);
    c.send(
        1,
        Request::Hello(Hello {
            token: b"s3cret".to_vec(),
            ..Hello::new("t")
        }),
    );
    assert!(matches!(c.recv().msg, Reply::Hello(_)));
    c.read_hello_txt();
    drop(c);
    assert!(!server.log_text().contains("s3cret"), "token never logged");
}

#[test]
fn shelfd_ends_lingering_connections_after_the_grace_period() {
    let mut server = Server::start(&["--shutdown-grace", "1"]);
    let mut c = Client::ready(server.addr);
    c.send(
        2,
        Request::PutBegin {
            path: b"upload".to_vec(),
            perm: 0o644,
        },
    );
    let Reply::PutStarted { temp } = c.recv().msg else {
        panic!("put-begin failed");
    };
    let root = server._dir.path().join("lib");
    let temp_path = root.join(std::str::from_utf8(&temp).expect("ascii temp name"));
    assert!(temp_path.exists());
    server.signal(Signal::TERM);
    // The connection is ended for us: its reading half is shut, so we see a clean close.
    c.expect_closed();
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        server.log_text()
    );
    assert!(!temp_path.exists(), "unfinished upload removed");
    assert!(root.join("hello.txt").exists());
}
