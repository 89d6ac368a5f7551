//! TLS end to end: the real `shelfd` and `shelf` over real sockets. Pinned server keys (by
//! option, by the known-servers file, by trust on first use on a terminal), client keys
//! (authorized, unlisted, revoked while the server runs, read-only), plaintext meeting TLS in
//! both directions, and a hostile network: a man in the middle with its own key, garbage and
//! truncated records, stalled handshakes, a thousand unfinished ones; and no private key in
//! any log, process list or error.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shelf_secure::KeyPair;
use shelf_tests::tls::client_handshake;
use shelf_tests::*;

/// A config directory of a test's own: no known servers, no identity.
fn fresh_config() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shelf-tls-config-")
        .tempdir()
        .expect("config dir")
}

fn addr(server: &Server) -> String {
    server.addr().to_string()
}

fn fp(server: &Server) -> String {
    server.fingerprint().expect("a TLS server").to_owned()
}

/// `shelf ARGS` with its own config directory `cfg`.
fn shelf_in(cfg: &Path) -> Cmd {
    shelf().env("XDG_CONFIG_HOME", cfg)
}

fn seeded_library() -> tempfile::TempDir {
    let lib = library();
    write(lib.path().join("hello.txt"), b"hello over tls\n");
    lib
}

/// The base64 lines of a PEM private key file: what must never leak.
fn secret_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("key file")
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 8)
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Server identity
// ---------------------------------------------------------------------------------------------

#[test]
fn shelfd_prints_its_fingerprint_second_and_keeps_its_key_private_and_stable() {
    let lib = seeded_library();
    let mut server = Server::plain(lib.path());
    let first = fp(&server);
    assert!(first.starts_with("SHA256:") && first.len() == 50, "{first}");
    let key = server.state_dir().join("server_key");
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the server key is created 0600");
    server.restart();
    assert_eq!(fp(&server), first, "the key is made once and kept");

    let cfg = fresh_config();
    shelf_in(cfg.path())
        .args(["--fingerprint", &first, "ls", &addr(&server)])
        .run()
        .assert_ok();
    assert!(
        !cfg.path().join("shelf/known_servers").exists(),
        "a pinned fingerprint needs no file and writes none"
    );
}

#[test]
fn shelfd_refuses_a_state_dir_inside_the_library_and_a_readable_key() {
    let lib = seeded_library();
    let inside = lib.path().join("state");
    let out = tool(shelfd_bin())
        .arg(lib.path())
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&inside)
        .timeout(Duration::from_secs(10))
        .run();
    out.assert_fail();
    out.assert_stderr_contains("inside the library");
    assert!(
        !inside.join("server_key").exists(),
        "no key was written there"
    );

    let state = tempfile::tempdir().expect("state");
    let key = state.path().join("server_key");
    KeyPair::generate().expect("key").save(&key).expect("save");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = tool(shelfd_bin())
        .arg(lib.path())
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .timeout(Duration::from_secs(10))
        .run();
    out.assert_fail();
    out.assert_stderr_contains(&format!("chmod 600 {}", key.display()));
}

// ---------------------------------------------------------------------------------------------
// Known servers, trust on first use, changed keys
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unknown_server_without_a_terminal_is_refused_with_what_to_pass() {
    let lib = seeded_library();
    let server = Server::plain(lib.path());
    let cfg = fresh_config();
    let out = shelf_in(cfg.path()).args(["ls", &addr(&server)]).run();
    out.assert_fail();
    let f = fp(&server);
    out.assert_stderr_contains(&format!("--fingerprint {f}"));
    out.assert_stderr_contains(&format!("-o fingerprint={f}"));
    out.assert_stderr_contains("not known");
    assert!(
        !cfg.path().join("shelf/known_servers").exists(),
        "nothing is recorded without a yes"
    );
    assert!(
        !server.log().contains("handshake done"),
        "no hello reached the server:\n{}",
        server.log()
    );
}

/// Runs `shelf ARGS` with a pty as stdin, stdout and stderr, answering `answer` once the
/// prompt shows. Returns what the terminal showed and the exit code.
fn on_terminal(cfg: &Path, args: &[&str], answer: &str) -> (String, Option<i32>) {
    on_terminal_with(cfg, args, answer, |_| {})
}

/// [`on_terminal`], calling `at_prompt` with the pid of the `shelf` it started once the
/// prompt shows and before it is answered, while the question waits.
fn on_terminal_with(
    cfg: &Path,
    args: &[&str],
    answer: &str,
    mut at_prompt: impl FnMut(u32),
) -> (String, Option<i32>) {
    let mut cmd = shelf_command();
    cmd.env("XDG_CONFIG_HOME", cfg).args(args);
    let mut terminal = OnTerminal::spawn(cmd);
    // No prompt within the wait (or an exit without one): nothing is typed.
    if terminal.wait_for("[y/N]", Duration::from_secs(20)) {
        at_prompt(terminal.pid());
        terminal.type_in(answer);
    }
    let (screen, status) = terminal.finish(Duration::from_secs(20));
    (screen, status.and_then(|s| s.code()))
}

#[test]
fn trust_on_first_use_asks_on_a_terminal_records_and_is_not_asked_again() {
    let lib = seeded_library();
    let server = Server::plain(lib.path());
    let f = fp(&server);

    let cfg = fresh_config();
    let (screen, code) = on_terminal(cfg.path(), &["ls", &addr(&server)], "n\n");
    assert!(screen.contains(&f), "the fingerprint is shown: {screen}");
    assert_eq!(code, Some(1), "no means no: {screen}");
    assert!(!cfg.path().join("shelf/known_servers").exists());

    let (screen, code) = on_terminal(cfg.path(), &["ls", &addr(&server)], "y\n");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("hello.txt"), "{screen}");
    let known = std::fs::read_to_string(cfg.path().join("shelf/known_servers")).expect("recorded");
    assert!(known.contains(&format!("{} {f}", addr(&server))), "{known}");
    // Known now: no terminal needed, no question asked.
    let out = shelf_in(cfg.path()).args(["ls", &addr(&server)]).run();
    out.assert_ok();
    assert!(!out.stderr_str().contains("[y/N]"), "{out}");
}

#[test]
fn a_changed_key_is_a_hard_error_naming_the_file_and_line() {
    let lib = seeded_library();
    let server = Server::plain(lib.path());
    let cfg = fresh_config();
    let file = cfg.path().join("shelf/known_servers");
    std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
    let other = KeyPair::generate().expect("key").fingerprint();
    std::fs::write(
        &file,
        format!("# mine\n127.0.0.9:1 {other}\n{} {other}\n", addr(&server)),
    )
    .expect("write");
    let out = shelf_in(cfg.path()).args(["ls", &addr(&server)]).run();
    out.assert_fail();
    out.assert_stderr_contains("CHANGED");
    out.assert_stderr_contains(&format!("{}:3", file.display()));
    out.assert_stderr_contains(&fp(&server));
    out.assert_stderr_contains("man in the middle");
    // Even on a terminal it never asks to accept the new key.
    let (screen, code) = on_terminal(cfg.path(), &["ls", &addr(&server)], "y\n");
    assert_eq!(code, Some(1), "{screen}");
    assert!(!screen.contains("[y/N]"), "{screen}");
}

#[test]
fn a_mount_pins_the_server_with_o_fingerprint() {
    if !fuse_available() {
        return;
    }
    let lib = seeded_library();
    let server = Server::plain(lib.path());
    let nowhere = "known_servers=/nonexistent/known_servers";
    let opts = format!("{nowhere},fingerprint={}", fp(&server));
    let mount = Mount::new(server.addr(), &["-o", &opts]);
    assert_eq!(read(mount.path().join("hello.txt")), b"hello over tls\n");
    drop(mount);

    let wrong = KeyPair::generate().expect("key").fingerprint();
    let opts = format!("{nowhere},fingerprint={wrong}");
    let err = Mount::try_new(server.addr(), &["-o", &opts])
        .err()
        .expect("refused");
    assert!(err.contains("not the expected"), "{err}");
    let err = Mount::try_new(server.addr(), &["-o", nowhere])
        .err()
        .expect("refused");
    assert!(err.contains("-o fingerprint="), "{err}");
}

/// `shelf mount` that detaches (no `-f`) with its own config directory.
fn detached_mount(cfg: &Path, server: &Server, dir: &Path, extra: &[&str]) -> Output {
    shelf_in(cfg)
        .arg("mount")
        .arg(addr(server))
        .arg(dir)
        .args(extra)
        .timeout(Duration::from_secs(20))
        .run()
}

/// Unmounts a detached mount and waits until it is gone from mountinfo.
fn umount(dir: &Path) {
    shelf()
        .arg("umount")
        .arg(dir)
        .timeout(Duration::from_secs(20))
        .run()
        .assert_ok();
    assert!(mount_at(dir).is_none(), "still mounted after shelf umount");
}

/// Trust on first use for a mount that detaches: without a terminal (fstab, systemd) an
/// unknown server is refused, before anything is mounted, with the message that says what
/// to pass; with `-o fingerprint=` it mounts.
#[test]
fn a_detaching_mount_of_an_unknown_server_is_refused_without_a_terminal_and_pinned_mounts() {
    if !fuse_available() {
        return;
    }
    let lib = seeded_library();
    let server = Server::plain(lib.path());
    let (a, f) = (addr(&server), fp(&server));
    let cfg = fresh_config();
    let known = cfg.path().join("shelf/known_servers");
    let dir = MountDir::new();
    let out = detached_mount(cfg.path(), &server, dir.path(), &[]);
    out.assert_fail();
    let text = out
        .stderr_str()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let want = format!(
        "the server {a} is not known, and there is no terminal to ask whether to trust it. \
         Its key's fingerprint is {f}. If shelfd printed that same fingerprint when it \
         started, pass --fingerprint {f} (for shelf mount and fstab: -o fingerprint={f}), or \
         add the line `{a} {f}` to {}. Nothing was sent to it.",
        known.display()
    );
    assert!(text.contains(&want), "want {want:?} in:\n{out}");
    assert!(mount_at(dir.path()).is_none(), "nothing is mounted");
    assert!(!known.exists(), "nothing is recorded without a yes");
    assert!(
        !server.log().contains("handshake done"),
        "no hello reached the server:\n{}",
        server.log()
    );

    let out = detached_mount(
        cfg.path(),
        &server,
        dir.path(),
        &["-o", &format!("fingerprint={f}")],
    );
    out.assert_ok();
    assert_eq!(read(dir.path().join("hello.txt")), b"hello over tls\n");
    assert!(!known.exists(), "a pinned fingerprint records nothing");
    umount(dir.path());
}

/// On a terminal, a detaching mount asks before it detaches (the parent asks; the child,
/// in a session of its own, never does): no means refused and nothing mounted, yes records
/// the server and mounts. Who asks is checked while the question waits: the `shelf` on the
/// terminal has no child yet. (Asked from the detached child, the question would find its
/// parent waiting for it.)
#[test]
fn a_detaching_mount_asks_on_the_terminal_before_it_detaches() {
    if !fuse_available() {
        return;
    }
    let lib = seeded_library();
    let server = Server::plain(lib.path());
    let f = fp(&server);
    let cfg = fresh_config();
    let known = cfg.path().join("shelf/known_servers");
    let dir = MountDir::new();
    let dir_arg = dir.path().to_str().expect("a UTF-8 temp path");
    let args = ["mount", &addr(&server), dir_arg];

    let mut forked_before_asking = Vec::new();
    let mut note_children = |pid| forked_before_asking.push(children_of(pid));
    let (screen, code) = on_terminal_with(cfg.path(), &args, "n\n", &mut note_children);
    assert!(screen.contains(&f), "the fingerprint is shown: {screen}");
    assert!(screen.contains("[y/N]"), "{screen}");
    assert_eq!(code, Some(1), "no means no: {screen}");
    assert!(
        mount_at(dir.path()).is_none(),
        "nothing is mounted: {screen}"
    );
    assert!(!known.exists());

    let (screen, code) = on_terminal_with(cfg.path(), &args, "y\n", &mut note_children);
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(screen.matches("[y/N]").count(), 1, "asked once: {screen}");
    assert_eq!(
        forked_before_asking,
        [vec![], vec![]],
        "asked by the process on the terminal, before it forked: {screen}"
    );
    let recorded = std::fs::read_to_string(&known).expect("recorded");
    assert!(
        recorded.contains(&format!("{} {f}", addr(&server))),
        "{recorded}"
    );
    assert_eq!(read(dir.path().join("hello.txt")), b"hello over tls\n");
    umount(dir.path());
}

// ---------------------------------------------------------------------------------------------
// A man in the middle
// ---------------------------------------------------------------------------------------------

/// A proxy that terminates TLS with a key of its own and would relay to the real server.
/// Counts the plaintext bytes clients sent it: the client must send none.
struct Mitm {
    addr: SocketAddr,
    fingerprint: String,
    plaintext: Arc<AtomicU64>,
    handshakes_done: Arc<AtomicU64>,
}

impl Mitm {
    fn start(upstream: SocketAddr) -> Mitm {
        let key = KeyPair::generate().expect("mitm key");
        let cfg = shelf_secure::server_config(&key).expect("config");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let plaintext = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let (p, d) = (Arc::clone(&plaintext), Arc::clone(&done));
        std::thread::spawn(move || {
            for sock in listener.incoming().take(8) {
                let Ok(sock) = sock else { continue };
                let conn = rustls::ServerConnection::new(Arc::clone(&cfg)).expect("conn");
                let Ok(mut tls) =
                    shelf_secure::TlsStream::handshake(sock, conn, Duration::from_secs(5))
                else {
                    continue;
                };
                d.fetch_add(1, Ordering::SeqCst);
                let _up = TcpStream::connect(upstream);
                tls.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    p.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        });
        Mitm {
            addr,
            fingerprint: key.fingerprint(),
            plaintext,
            handshakes_done: done,
        }
    }
}

#[test]
fn a_man_in_the_middle_with_its_own_key_is_refused_and_hears_nothing() {
    let lib = seeded_library();
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), "s3cret-token\n").expect("token");
    let server = Server::start(
        lib.path(),
        &[OsStr::new("--token-file"), token.path().as_os_str()],
    );
    let mitm = Mitm::start(server.addr());
    let cfg = fresh_config();
    let out = shelf_in(cfg.path())
        .args(["--fingerprint", &fp(&server), "--token-file"])
        .arg(token.path())
        .args(["ls", &mitm.addr.to_string()])
        .run();
    out.assert_fail();
    out.assert_stderr_contains(&format!(
        "presented the key {}, not the expected {}",
        mitm.fingerprint,
        fp(&server)
    ));
    out.assert_stderr_contains("man in the middle");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        mitm.plaintext.load(Ordering::SeqCst),
        0,
        "not a byte of the hello (or its token) reached the middle"
    );
    assert_eq!(mitm.handshakes_done.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// Plaintext meets TLS
// ---------------------------------------------------------------------------------------------

#[test]
fn plaintext_and_tls_meeting_get_clear_errors_in_both_directions() {
    let lib = seeded_library();
    let tls_server = Server::plain(lib.path());
    let started = Instant::now();
    let out = shelf()
        .args(["--insecure-plaintext", "ls", &addr(&tls_server)])
        .run();
    out.assert_fail();
    out.assert_stderr_contains("this server requires TLS");
    out.assert_stderr_contains("--insecure-plaintext");
    assert!(started.elapsed() < Duration::from_secs(5), "no hang: {out}");

    let plain_server = Server::start(lib.path(), &["--insecure-plaintext"]);
    assert_eq!(plain_server.fingerprint(), None);
    let started = Instant::now();
    let out = shelf()
        .args([
            "--fingerprint",
            &fp(&tls_server),
            "ls",
            &addr(&plain_server),
        ])
        .run();
    out.assert_fail();
    out.assert_stderr_contains("the server speaks plaintext");
    out.assert_stderr_contains("--insecure-plaintext");
    assert!(started.elapsed() < Duration::from_secs(5), "no hang: {out}");

    // Both sides asking for plaintext is allowed.
    let out = shelf()
        .args(["--insecure-plaintext", "ls", &addr(&plain_server)])
        .run();
    out.assert_ok();
    assert!(out.stdout_str().contains("hello.txt"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Hostile bytes and stalls
// ---------------------------------------------------------------------------------------------

/// Live connection processes of a server.
fn live_children(server: &Server) -> usize {
    let pid = server.pid().expect("running");
    children_of(pid).iter().filter(|(_, s)| *s != 'Z').count()
}

#[test]
fn garbage_and_truncated_records_are_closed_promptly_and_the_server_serves_on() {
    let lib = seeded_library();
    let server = Server::plain(lib.path());
    let hello = {
        // The first bytes of a real ClientHello, cut short.
        let mut v = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        v.extend([0x42; 40]);
        v
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "garbage",
            (0..200u32).map(|i| (i * 37 % 251) as u8).collect(),
            false,
        ),
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false),
        (
            "a record of garbage",
            {
                let mut v = vec![0x16, 0x03, 0x03, 0x00, 0x40];
                v.extend([0xee; 0x40]);
                v
            },
            false,
        ),
        (
            "a record longer than allowed",
            vec![0x17, 0x03, 0x03, 0xff, 0xff, 1, 2, 3],
            false,
        ),
        ("a truncated client hello, then a hang-up", hello, true),
    ];
    for (what, bytes, hang_up) in cases {
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = s.write_all(&bytes);
        if hang_up {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let started = Instant::now();
        let mut sink = Vec::new();
        match s.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "{what}: not closed ({e} after {:?})\n{}",
                started.elapsed(),
                server.log()
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: closed late"
        );
    }
    let out = shelf().args(["ls", &addr(&server)]).run();
    out.assert_ok();
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn a_handshake_stalled_midway_is_freed_by_the_handshake_timeout() {
    let lib = seeded_library();
    let server = Server::plain(lib.path());
    // A record header promising 512 bytes of ClientHello, and then nothing more.
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("send");
    let up = poll(Duration::from_secs(5), || {
        (live_children(&server) == 1).then_some(())
    });
    assert!(up.is_some(), "a child serves the stalled connection");
    let started = Instant::now();
    // The handshake timeout is 10 s (the TLS handshake and the hello together).
    let freed = poll(Duration::from_secs(16), || {
        (live_children(&server) == 0).then_some(())
    });
    assert!(
        freed.is_some(),
        "the stalled handshake was never freed\n{}",
        server.log()
    );
    eprintln!("stalled handshake freed after {:?}", started.elapsed());
    let mut buf = [0u8; 16];
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "closed");
}

#[test]
fn a_thousand_unfinished_handshakes_do_not_stop_real_clients() {
    let lib = seeded_library();
    let server = Server::start(lib.path(), &["--max-clients", "1100"]);
    const N: usize = 1000;
    let mut stalled = Vec::with_capacity(N);
    let started = Instant::now();
    for i in 0..N {
        let mut s =
            TcpStream::connect(server.addr()).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        // Half a ClientHello: each child waits in the TLS handshake.
        let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        stalled.push(s);
        if i % 100 == 99 {
            // Meanwhile a real client is served, in good time.
            let t = Instant::now();
            let out = shelf()
                .args(["ls", &addr(&server)])
                .timeout(Duration::from_secs(30))
                .run();
            out.assert_ok();
            assert!(out.stdout_str().contains("hello.txt"), "{out}");
            eprintln!("with {} stalled: ls took {:?}", i + 1, t.elapsed());
        }
    }
    eprintln!("{N} stalled handshakes opened in {:?}", started.elapsed());
    let out = shelf().args(["ls", &addr(&server)]).run();
    out.assert_ok();
    drop(stalled);
    let freed = poll(Duration::from_secs(30), || {
        (live_children(&server) == 0).then_some(())
    });
    assert!(freed.is_some(), "children left: {}", live_children(&server));
    assert!(!server.log().contains("panicked"));
}

#[test]
fn a_tls_client_hears_busy_from_a_full_server() {
    let lib = seeded_library();
    let server = Server::start(lib.path(), &["--max-clients", "1"]);
    let _held = RawConn::connect(server.addr(), Duration::from_secs(5)).expect("first client");
    let up = poll(Duration::from_secs(5), || {
        (live_children(&server) == 1).then_some(())
    });
    assert!(up.is_some());
    let out = shelf()
        .args(["--busy-wait", "1s", "ls", &addr(&server)])
        .run();
    out.assert_fail();
    out.assert_stderr_contains("busy");
    out.assert_stderr_contains("still busy after");
    // A client that waits is served once the first one leaves.
    let waiting = std::thread::spawn({
        let a = addr(&server);
        move || shelf().args(["--busy-wait", "60s", "ls", &a]).run()
    });
    // Only once it has been refused at least once (the failed client above was the first).
    let refused = poll(Duration::from_secs(20), || {
        (server.log().matches("busy: refusing").count() >= 2).then_some(())
    });
    assert!(refused.is_some(), "{}", server.log());
    drop(_held);
    waiting.join().expect("waiting client").assert_ok();
}

// ---------------------------------------------------------------------------------------------
// Client keys
// ---------------------------------------------------------------------------------------------

/// A server that admits the keys of `authorized` (an authorized-keys file's text, written
/// to `dir`), with `extra` arguments; its library and the file's path come with it.
fn serve_authorizing(
    dir: &Path,
    authorized: &str,
    extra: &[&OsStr],
) -> (tempfile::TempDir, Server, PathBuf) {
    let file = dir.join("authorized_keys");
    write(&file, authorized);
    let lib = seeded_library();
    let mut args = vec![OsStr::new("--authorized-keys"), file.as_os_str()];
    args.extend_from_slice(extra);
    let server = Server::start(lib.path(), &args);
    (lib, server, file)
}

/// `shelf keygen -f DIR/NAME`: returns the private key path and the public line.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let out = shelf()
        .args(["keygen", "-f"])
        .arg(&file)
        .args(["-C", "tester@e2e"])
        .run();
    out.assert_ok();
    let line = out
        .stdout_str()
        .lines()
        .find(|l| l.starts_with("shelf-key "))
        .expect("the line to add")
        .to_owned();
    (file, line)
}

/// Client keys are proved inside TLS: a server asked for both authorized keys and plaintext
/// refuses to start, saying which option to drop, before it listens.
#[test]
fn shelfd_refuses_authorized_keys_with_insecure_plaintext() {
    let dir = tempfile::tempdir().expect("dir");
    let (_, line) = keygen(dir.path(), "id");
    let file = dir.path().join("authorized_keys");
    write(&file, format!("{line}\n"));
    let lib = seeded_library();
    let out = Cmd::new(shelfd_bin())
        .arg(lib.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--insecure-plaintext",
            "--authorized-keys",
        ])
        .arg(&file)
        .timeout(Duration::from_secs(20))
        .run();
    out.assert_fail();
    out.assert_stderr_contains("--authorized-keys needs TLS: drop --insecure-plaintext");
    assert!(out.status.is_some(), "it exited rather than served: {out}");
    assert!(!out.stdout_str().contains("listening on"), "{out}");
}

#[test]
fn keygen_writes_a_private_key_0600_and_its_public_line() {
    let dir = tempfile::tempdir().expect("dir");
    let (file, line) = keygen(dir.path(), "id");
    let mode = std::fs::metadata(&file).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let public = std::fs::read_to_string(dir.path().join("id.pub")).expect("pub");
    assert_eq!(public.trim_end(), line);
    assert!(line.ends_with(" tester@e2e"), "{line}");
    // Never overwritten.
    let again = shelf().args(["keygen", "-f"]).arg(&file).run();
    again.assert_fail();
    again.assert_stderr_contains("already exists");
    // A key others can read is refused, with the fix.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let lib = seeded_library();
    let server = Server::plain(lib.path());
    let out = shelf()
        .arg("--identity")
        .arg(&file)
        .args(["ls", &addr(&server)])
        .run();
    out.assert_fail();
    out.assert_stderr_contains(&format!("chmod 600 {}", file.display()));
}

#[test]
fn listed_keys_get_in_unlisted_and_revoked_ones_do_not() {
    let dir = tempfile::tempdir().expect("dir");
    let (alice, alice_line) = keygen(dir.path(), "alice");
    let (bob, bob_line) = keygen(dir.path(), "bob");
    let (mallory, _) = keygen(dir.path(), "mallory");
    let (_lib, server, authorized) = serve_authorizing(
        dir.path(),
        &format!("# team\n{alice_line}\n\n{bob_line}\n"),
        &[],
    );
    let ls = |key: Option<&Path>| {
        let mut c = shelf();
        if let Some(k) = key {
            c = c.arg("--identity").arg(k);
        }
        c.args(["ls", &addr(&server)]).run()
    };
    ls(Some(&alice)).assert_ok();
    ls(Some(&bob)).assert_ok();
    let out = ls(Some(&mallory));
    out.assert_fail();
    let mallory_fp = KeyPair::load(&mallory).expect("load").fingerprint();
    out.assert_stderr_contains(&format!("{mallory_fp} is not authorized"));
    let out = ls(None);
    out.assert_fail();
    out.assert_stderr_contains("shelf keygen");

    // Revoked while the server runs: the next connection is refused.
    write(&authorized, format!("{alice_line}\n"));
    let out = ls(Some(&bob));
    out.assert_fail();
    out.assert_stderr_contains("is not authorized");
    ls(Some(&alice)).assert_ok();
}

#[test]
fn a_read_only_key_gets_erofs_for_every_change_and_the_token_still_works() {
    let dir = tempfile::tempdir().expect("dir");
    let (reader, reader_line) = keygen(dir.path(), "reader");
    let token = dir.path().join("token");
    write(&token, "t0ken\n");
    let (lib, server, _) = serve_authorizing(
        dir.path(),
        &format!("read-only {reader_line}\n"),
        &[OsStr::new("--token-file"), token.as_os_str()],
    );
    let local = dir.path().join("up.txt");
    write(&local, "new");
    let with_key = || shelf().arg("--identity").arg(&reader);
    let out = with_key().args(["ls", &addr(&server)]).run();
    out.assert_ok();
    for args in [
        vec!["mkdir", &addr(&server), "d"],
        vec!["rm", &addr(&server), "hello.txt"],
        vec!["mv", &addr(&server), "hello.txt", "x.txt"],
    ] {
        let out = with_key().args(&args).run();
        out.assert_fail();
        out.assert_stderr_contains("read-only");
    }
    let out = with_key().arg("put").arg(addr(&server)).arg(&local).run();
    out.assert_fail();
    out.assert_stderr_contains("read-only");
    assert!(lib.path().join("hello.txt").exists());
    assert!(!lib.path().join("up.txt").exists());

    // Through a mount: EROFS, as with --read-only.
    if fuse_available() {
        let mount = Mount::new(
            server.addr(),
            &["-o", &format!("identity={}", reader.display())],
        );
        let err = std::fs::write(mount.path().join("new.txt"), b"x").expect_err("read-only");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        // Extended attributes are changes too.
        let path = std::ffi::CString::new(
            mount
                .path()
                .join("hello.txt")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("path");
        // SAFETY: NUL-terminated path and name; the value is 1 readable byte.
        let n = unsafe {
            libc::setxattr(
                path.as_ptr(),
                c"user.k".as_ptr(),
                b"v".as_ptr().cast(),
                1,
                0,
            )
        };
        let err = std::io::Error::last_os_error();
        assert_eq!((n, err.raw_os_error()), (-1, Some(libc::EROFS)), "{err}");
        assert_eq!(read(mount.path().join("hello.txt")), b"hello over tls\n");
    }

    // The token admits a client without a key, read-write, over TLS.
    shelf()
        .arg("--token-file")
        .arg(&token)
        .args(["mkdir", &addr(&server), "by-token"])
        .run()
        .assert_ok();
    assert!(lib.path().join("by-token").is_dir());
    let out = shelf().args(["ls", &addr(&server)]).run();
    out.assert_fail();
}

// ---------------------------------------------------------------------------------------------
// Status, and secrets that must not leak
// ---------------------------------------------------------------------------------------------

#[test]
fn status_shows_the_fingerprint_suite_and_key_and_no_private_key_leaks() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (id, line) = keygen(dir.path(), "id");
    let (_lib, server, _) = serve_authorizing(dir.path(), &format!("{line}\n"), &[]);
    let mount = Mount::new(
        server.addr(),
        &["-o", &format!("identity={}", id.display())],
    );
    let status = shelf().arg("status").arg(mount.path()).run();
    status.assert_ok();
    let text = status.stdout_str();
    let id_fp = KeyPair::load(&id).expect("load").fingerprint();
    assert!(
        text.contains(&format!("server key {}", fp(&server))),
        "{text}"
    );
    assert!(text.contains("TLS13_AES_128_GCM_SHA256"), "{text}");
    assert!(text.contains(&format!("client key {id_fp}")), "{text}");

    // Failed attempts too, so error paths are in the logs.
    let (other, _) = keygen(dir.path(), "other");
    shelf()
        .arg("--identity")
        .arg(&other)
        .args(["ls", &addr(&server)])
        .run()
        .assert_fail();
    let ps = run("ps", ["-eo", "args"]);
    let secrets: Vec<String> = secret_lines(&id)
        .into_iter()
        .chain(secret_lines(&other))
        .chain(secret_lines(&server.state_dir().join("server_key")))
        .collect();
    assert!(secrets.len() >= 3, "{secrets:?}");
    let places = [
        ("the server log", server.log()),
        ("the mount log", mount.log()),
        ("ps", ps.stdout_str()),
        ("shelf status", text.clone()),
    ];
    for (what, haystack) in places {
        for s in &secrets {
            assert!(
                !haystack.contains(s.as_str()),
                "a private key appears in {what}"
            );
        }
    }
    // Nor in any error message a client prints.
    let out = shelf()
        .arg("--identity")
        .arg(&other)
        .args(["ls", &addr(&server)])
        .run();
    for s in &secrets {
        assert!(
            !out.stderr_str().contains(s.as_str()),
            "a private key in an error: {out}"
        );
    }
}

/// `shelf status` says what the server accepted (the Hello reply's `admitted`), not what the
/// mount offered: a listed key beside a token is the key; an unlisted key beside the token
/// is the token; a read-only key says so; a server that asks for nothing needs nothing.
#[test]
fn status_shows_what_the_server_accepted_not_what_was_offered() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (listed, listed_line) = keygen(dir.path(), "listed");
    let (reader, reader_line) = keygen(dir.path(), "reader");
    let (unlisted, _) = keygen(dir.path(), "unlisted");
    let token = dir.path().join("token");
    write(&token, "t0ken\n");
    let (_lib, server, _) = serve_authorizing(
        dir.path(),
        &format!("{listed_line}\nread-only {reader_line}\n"),
        &[OsStr::new("--token-file"), token.as_os_str()],
    );
    let auth_of = |server: &Server, key: &Path, with_token: bool| {
        let mut opts = format!("identity={}", key.display());
        if with_token {
            opts.push_str(&format!(",token_file={}", token.display()));
        }
        let mount = Mount::new(server.addr(), &["-o", &opts]);
        let status = shelf().arg("status").arg(mount.path()).run();
        status.assert_ok();
        let text = status.stdout_str();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("auth:"))
            .unwrap_or_else(|| panic!("no auth line: {text}"))
            .trim()
            .to_owned()
    };
    let fp_of = |key: &Path| KeyPair::load(key).expect("load").fingerprint();
    let shown = |key: &Path| format!("client key {} ({})", fp_of(key), key.display());

    assert_eq!(auth_of(&server, &listed, true), shown(&listed));
    assert_eq!(auth_of(&server, &unlisted, true), "token");
    assert_eq!(
        auth_of(&server, &reader, false),
        format!("{}, read-only", shown(&reader))
    );
    let lib = seeded_library();
    let open = Server::plain(lib.path());
    assert_eq!(
        auth_of(&open, &listed, false),
        "none needed (the server admits every client)"
    );
}

/// A TLS client that offers a key the server does not list gets an error frame inside TLS,
/// never a bare hang-up.
#[test]
fn an_unlisted_key_is_told_why_inside_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let (_, line) = keygen(dir.path(), "listed");
    let (_lib, server, _) = serve_authorizing(dir.path(), &format!("{line}\n"), &[]);
    let stranger = KeyPair::generate().expect("key");
    let sock = TcpStream::connect(server.addr()).expect("connect");
    let mut tls = client_handshake(
        sock,
        Some(fp(&server)),
        Some(&stranger),
        Duration::from_secs(5),
    )
    .expect("the handshake itself succeeds");
    let hello = shelf_proto::Frame::new(
        1,
        shelf_proto::Request::Hello(shelf_proto::Hello::new("tls-test")),
    )
    .to_bytes(shelf_proto::DEFAULT_MAX_PAYLOAD)
    .expect("encode");
    tls.write_all(&hello).expect("send hello");
    tls.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = shelf_proto::FrameReader::new(tls, shelf_proto::DEFAULT_MAX_PAYLOAD);
    let frame = reader
        .read_frame::<shelf_proto::Reply>()
        .expect("a frame")
        .expect("not closed");
    match frame.msg {
        shelf_proto::Reply::Error { code, message } => {
            assert_eq!(code, shelf_proto::Code::Access);
            assert!(message.contains(&stranger.fingerprint()), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
