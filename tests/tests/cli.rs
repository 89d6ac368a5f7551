//! End-to-end tests of the `shelf` command line against a real `shelfd`.
//!
//! Each test starts its own server on a free port over its own temporary library and runs
//! the real `shelf` binary, so the tests run in parallel and clean up through the harness's
//! guards (plus [`Tmpfs`] and [`Spawned`] here) even when an assertion fails.
//!
//! What is hard, and how it is handled:
//! 1. *Hostile paths.* The CLI resolves `..` lexically before anything reaches the wire, so a
//!    `shelf` command alone never shows whether the *server* refuses escapes. The hostile-path
//!    test therefore also speaks the protocol directly ([`Raw`]) and checks every escaping
//!    request gets an error, with canaries outside the library to prove nothing was touched.
//!    Destructive requests only ever aim at canaries this test owns, never at real system files.
//! 2. *Interrupts.* SIGINT is sent only once the transfer has visibly started (its temporary
//!    exists), so the signal never races the handler's installation.
//! 3. *The full disk.* A tmpfs is mounted *before* the server starts, because the server lives
//!    in a private mount namespace copied at its start.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shelf_proto::{
    write_frame, Frame, FrameReader, Hello, Reply, Request, SetAttrs, DEFAULT_MAX_PAYLOAD,
};
use shelf_tests::{
    assert_bytes_eq, children_of, library, poll, ramp, random_bytes, read, shelf, shelfd_bin,
    signal, tool, wait_timeout, write, OnTerminal, Output, RawConn, Rng, Server, Tmpfs,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A plain server over a fresh library.
fn serve() -> (tempfile::TempDir, Server) {
    let lib = library();
    let server = Server::plain(lib.path());
    (lib, server)
}

fn addr(server: &Server) -> String {
    server.addr().to_string()
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shelf-cli-local-")
        .tempdir()
        .expect("local scratch dir")
}

/// Every path under `dir` (not following symlinks) whose name contains `needle`.
fn names_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().contains(needle) {
            found.push(path.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(names_containing(&path, needle));
        }
    }
    found
}

/// Put temporaries left in a library.
fn put_temps(lib: &Path) -> Vec<PathBuf> {
    names_containing(lib, ".shelf-put-")
}

/// What a tree holds, without following symlinks: relative path -> kind, mode and content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let mode = meta.mode() & 0o7777;
            let what = if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {mode:o}")
            } else if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&path).expect("readlink");
                format!("link -> {}", t.display())
            } else {
                let data = read(&path);
                format!("file {mode:o} {} bytes {:x}", data.len(), checksum(&data))
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// FNV-1a: enough to tell contents apart in a snapshot.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// Sets atime and mtime of `path` itself (also of a symlink).
fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let c = cstring(path);
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as _,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two valid timespecs for the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A sparse file of `len` bytes: big transfers without writing them first.
fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("create sparse {}: {e}", path.display()));
}

#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(out.code(), Some(code), "wrong exit status\n{out}");
}

/// Fails unless the command exited 1 with `shelf: ` and `needle` on standard error.
#[track_caller]
fn assert_error(out: &Output, needle: &str) {
    assert_code(out, 1);
    let err = out.stderr_str();
    assert!(
        err.starts_with("shelf: ") && err.contains(needle),
        "stderr should be a `shelf: ...` error containing {needle:?}\n{out}"
    );
}

/// A child process started directly (to signal it), killed and reaped on drop.
struct Spawned(Option<Child>);

impl Spawned {
    fn new(cmd: &mut Command) -> Spawned {
        let child = cmd
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Spawned(Some(child))
    }

    fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits for the exit; returns the exit code and standard error.
    fn finish(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let mut child = self.0.take().expect("not finished yet");
        let Some(status) = wait_timeout(&mut child, timeout) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {timeout:?} after SIGINT");
        };
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        (status.code(), err)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A protocol-level client for requests the CLI would never send.
struct Raw {
    stream: RawConn,
    reader: FrameReader<RawConn>,
    next_id: u32,
    scratch: Vec<u8>,
}

impl Raw {
    /// Connects, inside TLS when the server speaks it (the frames are the same).
    fn connect(addr: &str) -> Raw {
        let addr = addr.parse().expect("a socket address");
        let stream = RawConn::connect(addr, Duration::from_secs(10)).expect("connect to shelfd");
        let reader = FrameReader::new(stream.try_clone().expect("clone"), DEFAULT_MAX_PAYLOAD);
        let mut raw = Raw {
            stream,
            reader,
            next_id: 1,
            scratch: Vec::new(),
        };
        let hello = Request::Hello(Hello::new("shelf-e2e-raw"));
        match raw.call(hello) {
            Reply::Hello(_) => raw,
            other => panic!("handshake refused: {other:?}"),
        }
    }

    fn call(&mut self, req: Request) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        let desc = format!("{req:?}");
        write_frame(
            &mut self.stream,
            &Frame::new(id, req),
            DEFAULT_MAX_PAYLOAD,
            &mut self.scratch,
        )
        .unwrap_or_else(|e| panic!("send {desc}: {e}"));
        let frame = self
            .reader
            .read_frame::<Reply>()
            .unwrap_or_else(|e| panic!("reply to {desc}: {e}"))
            .unwrap_or_else(|| panic!("server hung up on {desc}"));
        assert_eq!(frame.id, id, "reply id for {desc}");
        frame.msg
    }
}

// ---------------------------------------------------------------------------------------------
// Transfers
// ---------------------------------------------------------------------------------------------

#[test]
fn put_then_get_of_64_mib_is_byte_identical_with_mode_and_mtime() {
    let (lib, server) = serve();
    let local = scratch();
    let src = local.path().join("big.bin");
    let data = random_bytes(64, 64 << 20);
    write(&src, &data);
    set_mode(&src, 0o640);
    // A time with nanoseconds, long ago, so "now" cannot pass for it.
    set_mtime(&src, 1_600_000_000, 123_456_789);

    shelf()
        .args(["put", &addr(&server)])
        .arg(&src)
        .run()
        .assert_ok();
    let on_server = lib.path().join("big.bin");
    assert_bytes_eq(&read(&on_server), &data, "library copy after put");
    let meta = std::fs::metadata(&on_server).expect("stat library copy");
    assert_eq!(meta.mode() & 0o7777, 0o640, "mode carried by put");
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_600_000_000, 123_456_789),
        "mtime carried by put"
    );
    assert!(
        put_temps(lib.path()).is_empty(),
        "{:?}",
        put_temps(lib.path())
    );

    let dst = local.path().join("back.bin");
    let out = shelf()
        .args(["get", &addr(&server), "big.bin"])
        .arg(&dst)
        .run();
    out.assert_ok();
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "get is silent\n{out}"
    );
    assert_bytes_eq(&read(&dst), &data, "downloaded copy");
    let meta = std::fs::metadata(&dst).expect("stat download");
    assert_eq!(meta.mode() & 0o777, 0o640, "mode carried by get");
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_600_000_000, 123_456_789),
        "mtime carried by get"
    );
    let leftovers = names_containing(local.path(), ".shelf-get-");
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn thirty_two_concurrent_clients_each_get_back_their_own_file() {
    let (lib, server) = serve();
    let local = scratch();
    let a = addr(&server);
    let mut rng = Rng::new(32);
    let sizes: Vec<usize> = (0..32)
        .map(|_| (1 << 20) + rng.below(3 << 20) as usize)
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let (a, dir, lib) = (&a, local.path(), lib.path());
                s.spawn(move || {
                    let data = random_bytes(1000 + i as u64, size);
                    let src = dir.join(format!("c{i}.bin"));
                    write(&src, &data);
                    let put = shelf()
                        .args(["put", a])
                        .arg(&src)
                        .timeout(Duration::from_secs(90))
                        .run();
                    put.assert_ok();
                    let dst = dir.join(format!("c{i}.back"));
                    let get = shelf()
                        .args(["get", a, &format!("c{i}.bin")])
                        .arg(&dst)
                        .timeout(Duration::from_secs(90))
                        .run();
                    get.assert_ok();
                    assert_bytes_eq(&read(&dst), &data, &format!("client {i} download"));
                    assert_bytes_eq(
                        &read(lib.join(format!("c{i}.bin"))),
                        &data,
                        &format!("client {i} library copy"),
                    );
                })
            })
            .collect();
        let failed: Vec<usize> = handles
            .into_iter()
            .enumerate()
            .filter_map(|(i, h)| h.join().is_err().then_some(i))
            .collect();
        assert!(
            failed.is_empty(),
            "clients {failed:?} failed (see their panics above)\n--- shelfd log ---\n{}",
            server.log()
        );
    });
    assert!(put_temps(lib.path()).is_empty());
}

#[test]
fn get_to_stdout_put_from_stdin_and_into_directories() {
    let (lib, server) = serve();
    let a = addr(&server);
    let data = random_bytes(5, 3 << 20 | 17);
    let out = shelf()
        .args(["put", &a, "-", "from-stdin.bin"])
        .stdin(data.clone())
        .run();
    out.assert_ok();
    assert_bytes_eq(&read(lib.path().join("from-stdin.bin")), &data, "put -");
    let out = shelf().args(["get", &a, "from-stdin.bin", "-"]).run();
    out.assert_ok();
    assert_bytes_eq(&out.stdout, &data, "get -");

    // An existing directory receives the file under its own name, both ways.
    std::fs::create_dir(lib.path().join("dir")).expect("mkdir");
    let local = scratch();
    let src = local.path().join("note.txt");
    write(&src, b"note\n");
    shelf()
        .args(["put", &a])
        .arg(&src)
        .arg("dir/")
        .run()
        .assert_ok();
    assert_eq!(read(lib.path().join("dir/note.txt")), b"note\n");
    let into = local.path().join("into");
    std::fs::create_dir(&into).expect("mkdir");
    shelf()
        .args(["get", &a, "dir/note.txt"])
        .arg(&into)
        .run()
        .assert_ok();
    assert_eq!(read(into.join("note.txt")), b"note\n");
    // Without LOCAL, get writes the file's name in the current directory.
    shelf()
        .args(["get", &a, "/dir/note.txt"])
        .current_dir(&into)
        .run()
        .assert_ok();
    let out = shelf().args(["get", &a, "dir"]).current_dir(&into).run();
    assert_error(&out, "get dir: is a directory");
    assert!(put_temps(lib.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Safety
// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_paths_are_refused_and_nothing_outside_is_touched() {
    // base/lib is served; base/x and base/outside/ are canaries beside it.
    let base = tempfile::Builder::new()
        .prefix("shelf-hostile-")
        .tempdir()
        .expect("temp dir");
    let lib = base.path().join("lib");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&lib).expect("mkdir lib");
    std::fs::create_dir_all(&outside).expect("mkdir outside");
    write(base.path().join("x"), b"secret beside the library\n");
    write(outside.join("canary"), b"canary\n");
    let passwd_before = read("/etc/passwd");
    let outside_before = snapshot(base.path());
    let outside_snapshot = || {
        let mut s = snapshot(base.path());
        s.retain(|p, _| !p.starts_with("lib"));
        s
    };
    let mut expected_outside = outside_before.clone();
    expected_outside.retain(|p, _| !p.starts_with("lib"));

    let server = Server::plain(&lib);
    let a = addr(&server);
    let local = scratch();
    let payload = local.path().join("payload");
    write(&payload, b"hostile payload\n");
    let evil = format!("shelf-e2e-evil-{}", std::process::id());

    // Reading: a path that climbs above the library root is refused by the CLI itself, and an
    // absolute path names a file of the library, which does not exist.
    for path in ["../x", "a/../../x", "../outside/canary"] {
        let out = shelf()
            .args(["get", &a, path, "got"])
            .current_dir(local.path())
            .run();
        assert_error(&out, "path escapes the library");
        assert!(
            !local.path().join("got").exists(),
            "{path}: nothing downloaded"
        );
    }
    let out = shelf()
        .args(["get", &a, "/etc/passwd", "got"])
        .current_dir(local.path())
        .run();
    assert_error(&out, "get /etc/passwd: no such file or directory");
    assert!(!local.path().join("got").exists());
    // Writing an absolute path: `etc/` does not exist in the library.
    let out = shelf()
        .args(["put", &a])
        .arg(&payload)
        .arg(format!("/etc/{evil}"))
        .run();
    assert_error(&out, "no such file or directory");
    assert!(!Path::new("/etc").join(&evil).exists());

    // Writing `../x` is refused: nothing lands in the library or beside it.
    for path in ["../x", "a/../../x"] {
        let out = shelf().args(["put", &a]).arg(&payload).arg(path).run();
        assert_error(&out, "path escapes the library");
    }
    assert!(!lib.join("x").exists());
    assert_eq!(outside_snapshot(), expected_outside);

    // Symlinks inside the library that lead out of it.
    std::os::unix::fs::symlink("/etc", lib.join("etc")).expect("ln -s /etc");
    std::os::unix::fs::symlink("/etc/hostname", lib.join("h")).expect("ln -s /etc/hostname");
    std::os::unix::fs::symlink(&outside, lib.join("out")).expect("ln -s outside");
    std::os::unix::fs::symlink(outside.join("canary"), lib.join("c")).expect("ln -s canary");

    for path in ["etc/passwd", "/etc/passwd", "h", "out/canary", "c"] {
        let out = shelf()
            .args(["get", &a, path, "got"])
            .current_dir(local.path())
            .run();
        assert_code(&out, 1);
        assert!(
            out.stderr_str()
                .starts_with(&format!("shelf: get {path}: ")),
            "{out}"
        );
        assert!(
            !local.path().join("got").exists(),
            "{path}: nothing downloaded"
        );
    }
    let out = shelf()
        .args(["get", &a, "etc/passwd", "got"])
        .current_dir(local.path())
        .run();
    assert_error(&out, "path escapes the library");
    let out = shelf().args(["ls", &a, "etc"]).run();
    assert_error(&out, "path escapes the library");
    assert!(out.stdout.is_empty(), "nothing of /etc listed\n{out}");

    let evil_path = format!("etc/{evil}");
    let out = shelf()
        .args(["put", &a])
        .arg(&payload)
        .arg(&evil_path)
        .run();
    assert_error(&out, "path escapes the library");
    assert!(
        !Path::new("/etc").join(&evil).exists(),
        "/etc/{evil} created"
    );
    assert!(
        names_containing(Path::new("/etc"), ".shelf-put-").is_empty(),
        "a put temporary in /etc"
    );
    let p = payload.display().to_string();
    for args in [
        vec!["put", &p, "out/new"],
        vec!["put", &p, "out/canary"],
        vec!["mkdir", "out/d"],
        vec!["mkdir", "-p", "out/d/e"],
        vec!["rm", "out/canary"],
        vec!["rm", "-r", "out/canary"],
        vec!["mv", "out/canary", "stolen"],
        vec!["mv", "h", "out/moved"],
    ] {
        let out = shelf().arg(args[0]).arg(&a).args(&args[1..]).run();
        assert_code(&out, 1);
        assert!(out.stderr_str().starts_with("shelf: "), "{out}");
    }
    // `rm -r` of the link removes the link itself, never what it points to.
    shelf().args(["rm", "-r", &a, "out/"]).run().assert_ok();
    assert!(!lib.join("out").exists());
    // Through a symlink to a file: the link may be replaced, the target never written.
    let _ = shelf().args(["put", &a]).arg(&payload).arg("c").run();
    assert_eq!(
        outside_snapshot(),
        expected_outside,
        "outside the library changed"
    );
    assert_eq!(read("/etc/passwd"), passwd_before);

    // The server itself refuses escaping paths, whatever a client sends.
    std::os::unix::fs::symlink(&outside, lib.join("out2")).expect("ln -s outside");
    std::os::unix::fs::symlink(outside.join("canary"), lib.join("c2")).expect("ln -s canary");
    let mut raw = Raw::connect(&a);
    // Each hostile path, and a new name beside it for the requests that create.
    let evil_new = format!("etc/{evil}");
    let hostile: [(&[u8], &[u8]); 8] = [
        (b"../x", b"../x-new"),
        (b"a/../../x", b"a/../../x-new"),
        (b"/etc/passwd", b"/etc/shelf-e2e-evil"),
        (b"etc/passwd", evil_new.as_bytes()),
        (b"out2/canary", b"out2/new"),
        (b"x\0y", b"x\0y-new"),
        (b"./x", b"./x-new"),
        (b"..", b"../new"),
    ];
    for (path, new) in hostile {
        let (p, new) = (path.to_vec(), new.to_vec());
        let requests = [
            Request::Stat { path: p.clone() },
            Request::Read {
                path: p.clone(),
                offset: 0,
                len: 100,
            },
            Request::List {
                path: p.clone(),
                after: Vec::new(),
                max_entries: 0,
            },
            Request::Write {
                path: p.clone(),
                offset: 0,
                data: b"evil".to_vec().into(),
            },
            Request::SetAttr {
                path: p.clone(),
                attrs: SetAttrs {
                    size: Some(0),
                    ..SetAttrs::default()
                },
            },
            Request::Create {
                path: new.clone(),
                perm: 0o644,
                exclusive: true,
            },
            Request::Mkdir {
                path: new.clone(),
                perm: 0o755,
            },
            Request::PutBegin {
                path: new.clone(),
                perm: 0o644,
            },
            Request::Unlink { path: p.clone() },
            Request::Rename {
                from: p.clone(),
                to: b"stolen".to_vec(),
                flags: 0,
            },
            Request::Symlink {
                path: new.clone(),
                target: b"/".to_vec(),
            },
        ];
        for req in requests {
            let desc = format!("{req:?}");
            match raw.call(req) {
                Reply::Error { message, .. } => {
                    assert!(!message.is_empty(), "{desc}: an error without words")
                }
                other => panic!("{desc} was not refused: {other:?}"),
            }
        }
    }
    // A symlink to a file outside: reading, writing and truncating it through the link fail.
    for req in [
        Request::Read {
            path: b"c2".to_vec(),
            offset: 0,
            len: 100,
        },
        Request::Write {
            path: b"c2".to_vec(),
            offset: 0,
            data: b"evil".to_vec().into(),
        },
        Request::SetAttr {
            path: b"c2".to_vec(),
            attrs: SetAttrs {
                size: Some(0),
                ..SetAttrs::default()
            },
        },
        Request::Read {
            path: b"h".to_vec(),
            offset: 0,
            len: 100,
        },
    ] {
        let desc = format!("{req:?}");
        match raw.call(req) {
            Reply::Error { .. } => {}
            other => panic!("{desc} was not refused: {other:?}"),
        }
    }
    assert_eq!(
        outside_snapshot(),
        expected_outside,
        "outside the library changed"
    );
    assert_eq!(read("/etc/passwd"), passwd_before);
    assert!(!lib.join("stolen").exists());
    assert!(!Path::new("/etc/shelf-e2e-evil").exists());
    assert!(!Path::new("/etc").join(&evil).exists());
}

#[test]
fn garbage_and_oversized_frames_leave_the_server_serving_without_zombies() {
    let (lib, server) = serve();
    write(lib.path().join("still-here"), b"yes");
    let a = addr(&server);

    // Garbage, an oversized length header, and a frame cut short by a hang-up.
    let garbage = random_bytes(99, 64);
    let mut oversized = b"SHLF\x01\x00\x00\x01\x00\x00\x00\x01".to_vec();
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut huge_but_legal_kind = b"SHLF\x01\x00\x00\x10\x00\x00\x00\x01".to_vec();
    huge_but_legal_kind.extend_from_slice(&(1u32 << 30).to_be_bytes());
    let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    for (what, bytes) in [
        ("garbage", garbage),
        ("oversized length", oversized),
        ("1 GiB length", huge_but_legal_kind),
        ("http", http),
    ] {
        let mut s = TcpStream::connect(&a).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // The server may close while we still write; that is its right.
        let _ = s.write_all(&bytes);
        let started = Instant::now();
        let mut sink = Vec::new();
        match s.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "{what}: the server did not close the connection ({e} after {:?})\n{}",
                started.elapsed(),
                server.log()
            ),
        }
    }
    // Half a frame, then hang up.
    {
        let mut s = TcpStream::connect(&a).expect("connect");
        let _ = s.write_all(b"SHLF\x01\x00");
    }

    let out = shelf().args(["ls", &a]).run();
    out.assert_ok();
    assert!(out.stdout_str().ends_with(" still-here\n"), "{out}");

    let pid = server.pid().expect("server runs");
    // The check below sees connection processes at all: one held open shows up.
    let held = Raw::connect(&a);
    let seen = poll(Duration::from_secs(5), || {
        (!children_of(pid).is_empty()).then_some(())
    });
    assert!(
        seen.is_some(),
        "no connection process of shelfd {pid} found in /proc"
    );
    drop(held);
    let settled = poll(Duration::from_secs(5), || {
        let kids = children_of(pid);
        kids.is_empty().then_some(())
    });
    let kids = children_of(pid);
    let zombies: Vec<_> = kids.iter().filter(|(_, state)| *state == 'Z').collect();
    assert!(
        zombies.is_empty(),
        "zombie children of shelfd {pid}: {zombies:?}\n{}",
        server.log()
    );
    assert!(
        settled.is_some(),
        "connection processes of shelfd {pid} still alive 5 s after their clients left: \
         {kids:?}\n{}",
        server.log()
    );
    // The parent itself is still there and serving.
    shelf().args(["ls", &a]).run().assert_ok();
}

#[test]
fn read_only_server_serves_reads_and_refuses_every_change() {
    let lib = library();
    write(lib.path().join("a.txt"), b"alpha\n");
    std::fs::create_dir(lib.path().join("d")).expect("mkdir");
    write(lib.path().join("d/b.txt"), b"beta\n");
    let before = snapshot(lib.path());
    let server = Server::start(lib.path(), &["--read-only"]);
    let a = addr(&server);
    let local = scratch();
    let payload = local.path().join("p.txt");
    write(&payload, b"new\n");

    let out = shelf().args(["ls", &a]).run();
    out.assert_ok();
    assert_eq!(out.stdout_str().lines().count(), 2, "{out}");
    let got = local.path().join("got.txt");
    shelf()
        .args(["get", &a, "d/b.txt"])
        .arg(&got)
        .run()
        .assert_ok();
    assert_eq!(read(&got), b"beta\n");

    let p = payload.display().to_string();
    for args in [
        vec!["put", &p],
        vec!["put", &p, "a.txt"],
        vec!["put", &p, "d/"],
        vec!["rm", "a.txt"],
        vec!["rm", "-r", "d"],
        vec!["mkdir", "e"],
        vec!["mkdir", "-p", "e/f"],
        vec!["mv", "a.txt", "z.txt"],
        vec!["mv", "a.txt", "d"],
    ] {
        let out = shelf().arg(args[0]).arg(&a).args(&args[1..]).run();
        assert_error(&out, "read-only file system");
    }
    assert_eq!(snapshot(lib.path()), before, "the library changed");
    assert!(put_temps(lib.path()).is_empty());
}

#[test]
fn token_mode_refuses_without_the_token_and_never_logs_it() {
    let lib = library();
    write(lib.path().join("a.txt"), b"alpha\n");
    let secrets = scratch();
    let token = format!(
        "e2e-secret-{:016x}",
        Rng::new(u64::from(std::process::id())).next_u64()
    );
    let good = secrets.path().join("token");
    write(&good, format!("{token}\n"));
    let wrong_token = "e2e-wrong-token-42";
    let wrong = secrets.path().join("wrong");
    write(&wrong, format!("{wrong_token}\n"));
    let server = Server::start(lib.path(), &[OsStr::new("--token-file"), good.as_os_str()]);
    let a = addr(&server);
    let local = scratch();
    let payload = local.path().join("p.txt");
    write(&payload, b"new\n");
    let before = snapshot(lib.path());

    let p = payload.display().to_string();
    let commands: [Vec<&str>; 7] = [
        vec!["ls"],
        vec!["get", "a.txt", "got"],
        vec!["put", &p],
        vec!["rm", "a.txt"],
        vec!["mkdir", "d"],
        vec!["mv", "a.txt", "b.txt"],
        vec!["shell"],
    ];
    for token_file in [None, Some(&wrong)] {
        for args in &commands {
            let mut cmd = shelf();
            if let Some(f) = token_file {
                cmd = cmd.arg("--token-file").arg(f);
            }
            let out = cmd
                .arg(args[0])
                .arg(&a)
                .args(&args[1..])
                .current_dir(local.path())
                .stdin("ls\n")
                .run();
            assert_error(&out, "authentication failed: bad or missing token");
            assert!(out.stdout.is_empty(), "{out}");
        }
    }
    assert_eq!(
        snapshot(lib.path()),
        before,
        "refused clients changed the library"
    );
    assert!(!local.path().join("got").exists());

    let with_token = || shelf().arg("--token-file").arg(&good);
    let out = with_token().args(["ls", &a]).run();
    out.assert_ok();
    assert!(out.stdout_str().ends_with(" a.txt\n"), "{out}");
    with_token()
        .args(["put", &a])
        .arg(&payload)
        .run()
        .assert_ok();
    assert_eq!(read(lib.path().join("p.txt")), b"new\n");
    with_token()
        .args(["get", &a, "a.txt"])
        .arg(local.path().join("got"))
        .run()
        .assert_ok();
    assert_eq!(read(local.path().join("got")), b"alpha\n");
    let out = with_token().args(["shell", &a]).stdin("pwd\n").run();
    out.assert_ok();
    assert_eq!(out.stdout_str(), "/\n");

    let log = server.log();
    assert!(
        log.contains("bad or missing token"),
        "refusals are logged\n{log}"
    );
    assert!(
        !log.contains(&token),
        "the token appears in the server log\n{log}"
    );
    assert!(
        !log.contains(wrong_token),
        "a presented token appears in the log\n{log}"
    );
}

/// Issue #11: server and client read one token file by one rule. A file that an editor left
/// with two line endings used to give the server `token\n` and the client `token`, so neither
/// side accepted the other.
#[test]
fn issue_11_one_token_file_is_read_alike_by_server_and_client() {
    let lib = library();
    write(lib.path().join("a.txt"), b"alpha\n");
    let secrets = scratch();
    for ending in ["\n\n", "\r\n\r\n", "\n", "\r\n", ""] {
        let file = secrets.path().join("token");
        write(&file, format!("e2e-two-newlines{ending}"));
        let server = Server::start(lib.path(), &[OsStr::new("--token-file"), file.as_os_str()]);
        let out = shelf()
            .arg("--token-file")
            .arg(&file)
            .args(["ls", &addr(&server)])
            .run();
        assert!(
            out.success() && out.stdout_str().ends_with(" a.txt\n"),
            "a token file ending in {ending:?} must match itself\n{out}"
        );
    }
}

/// Issue #11: a token file holding only line endings is an empty token, refused alike by the
/// server (it does not start) and the client (it does not connect).
#[test]
fn issue_11_a_token_file_of_line_endings_only_is_refused_by_both_sides() {
    let lib = library();
    let secrets = scratch();
    let server = Server::plain(lib.path());
    for content in ["", "\n", "\n\n", "\r\n\r\n"] {
        let file = secrets.path().join("token");
        write(&file, content);
        let out = tool(shelfd_bin())
            .arg(lib.path())
            .args(["--listen", "127.0.0.1:0", "--token-file"])
            .arg(&file)
            .timeout(Duration::from_secs(5))
            .run();
        assert!(
            out.code() == Some(1) && out.stderr_str().contains("the token file is empty"),
            "shelfd must refuse a token file holding {content:?}\n{out}"
        );
        let out = shelf()
            .arg("--token-file")
            .arg(&file)
            .args(["ls", &addr(&server)])
            .run();
        assert_error(&out, &format!("token file {} is empty", file.display()));
    }
}

#[test]
fn put_into_a_full_disk_fails_cleanly_and_keeps_the_old_file() {
    let disk = Tmpfs::new("8m");
    // After the tmpfs: the server's private namespace copies the mounts present at its start.
    let server = Server::plain(disk.path());
    let a = addr(&server);
    let local = scratch();
    let old = random_bytes(1, 1 << 20);
    let small = local.path().join("small");
    write(&small, &old);
    shelf()
        .args(["put", &a])
        .arg(&small)
        .arg("f")
        .run()
        .assert_ok();
    let big = local.path().join("big");
    write(&big, random_bytes(2, 16 << 20));
    let out = shelf().args(["put", &a]).arg(&big).arg("f").run();
    assert_error(&out, "no space left on device");
    assert!(out.stderr_str().starts_with("shelf: put f: "), "{out}");
    assert_bytes_eq(&read(disk.path().join("f")), &old, "f after the failed put");
    // The temporary goes when the put aborts; the connection's end is the backstop.
    let clean = poll(Duration::from_secs(5), || {
        put_temps(disk.path()).is_empty().then_some(())
    });
    assert!(clean.is_some(), "left behind: {:?}", put_temps(disk.path()));
    // And the space is back: a small put works again.
    shelf()
        .args(["put", &a])
        .arg(&small)
        .arg("g")
        .run()
        .assert_ok();
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// The shell
// ---------------------------------------------------------------------------------------------

/// Splits an `ls` line into mode, size, date, time and name (names without spaces).
fn ls_fields(line: &str) -> (String, u64, String, String) {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 5, "ls line {line:?}");
    (
        f[0].to_string(),
        f[1].parse().unwrap_or_else(|_| panic!("size in {line:?}")),
        format!("{} {}", f[2], f[3]),
        f[4].to_string(),
    )
}

#[test]
fn shell_runs_a_script_from_stdin() {
    let (lib, server) = serve();
    write(lib.path().join("seed.txt"), b"seed\n");
    let local = scratch();
    let hello = local.path().join("hello.txt");
    write(&hello, b"hello, shell\n");
    set_mode(&hello, 0o644);
    let back = local.path().join("back.txt");
    let script = format!(
        "ls\nmkdir d\ncd d\nput {hello}\nput {hello} keep.txt\nls\nget hello.txt {back}\npwd\n\
         cd ..\nrm d/hello.txt\nget nope\nhelp\nquit\nmkdir after-quit\n",
        hello = hello.display(),
        back = back.display()
    );
    let out = shelf()
        .args(["shell", &addr(&server)])
        .current_dir(local.path())
        .stdin(script)
        .timeout(Duration::from_secs(60))
        .run();
    // Not a terminal and `get nope` failed: exit 1, after running everything else.
    assert_code(&out, 1);
    assert_eq!(
        out.stderr_str(),
        "shelf: get nope: no such file or directory\n",
        "{out}"
    );
    let stdout = out.stdout_str();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() > 5, "{out}");
    assert!(
        !stdout.contains("shelf:/"),
        "no prompt without a terminal\n{out}"
    );
    let (mode, size, _, name) = ls_fields(lines[0]);
    assert_eq!(
        (mode.as_str(), size, name.as_str()),
        ("-rw-r--r--", 5, "seed.txt")
    );
    let (mode, size, _, name) = ls_fields(lines[1]);
    assert_eq!(
        (mode.as_str(), size, name.as_str()),
        ("-rw-r--r--", 13, "hello.txt")
    );
    let (_, size, _, name) = ls_fields(lines[2]);
    assert_eq!((size, name.as_str()), (13, "keep.txt"));
    assert_eq!(lines[3], "/d", "{out}");
    let help = &lines[4..];
    for cmd in [
        "ls [PATH]",
        "get REMOTE [LOCAL]",
        "put LOCAL [REMOTE]",
        "quit",
    ] {
        assert!(
            help.iter().any(|l| l.starts_with(cmd)),
            "help lists {cmd}\n{out}"
        );
    }
    assert_eq!(read(&back), b"hello, shell\n");
    assert!(lib.path().join("d").is_dir());
    assert!(!lib.path().join("d/hello.txt").exists(), "rm d/hello.txt");
    assert_eq!(read(lib.path().join("d/keep.txt")), b"hello, shell\n");
    assert!(
        !lib.path().join("after-quit").exists(),
        "nothing runs after quit"
    );

    // A script where everything succeeds exits 0; end of input ends it like quit.
    let out = shelf()
        .args(["shell", &addr(&server)])
        .stdin("cd d\npwd\nmv keep.txt kept.txt\n")
        .run();
    out.assert_ok();
    assert_eq!(out.stdout_str(), "/d\n");
    assert!(lib.path().join("d/kept.txt").is_file());
}

#[test]
fn shell_on_a_terminal_prompts_and_ends_successfully() {
    // `script` (util-linux) runs the shell on a pseudo-terminal fed from our stdin.
    shelf_tests::require_tool("script", "bsdutils");
    let (lib, server) = serve();
    std::fs::create_dir(lib.path().join("d")).expect("mkdir");
    let command = format!(
        "'{}' shell {}",
        shelf_tests::shelf_bin().display(),
        addr(&server)
    );
    let out = tool("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin("cd d\nget nope\nquit\n")
        .timeout(Duration::from_secs(30))
        .run();
    // Interactive: a failed command does not fail the session.
    out.assert_ok();
    let text = out.stdout_str().replace('\r', "");
    assert!(text.contains("shelf:/> "), "{out}");
    assert!(text.contains("shelf:/d> "), "{out}");
    assert!(
        text.contains("shelf: get nope: no such file or directory\n"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// ls, errors and usage
// ---------------------------------------------------------------------------------------------

#[test]
fn ls_shows_mode_size_time_and_escaped_names() {
    let (lib, server) = serve();
    let root = lib.path();
    let when = 1_714_566_896; // 2024-05-01 12:34:56 UTC
    write(root.join("f.txt"), ramp(1234));
    set_mode(&root.join("f.txt"), 0o640);
    std::fs::create_dir(root.join("dir")).expect("mkdir");
    set_mode(&root.join("dir"), 0o750);
    std::os::unix::fs::symlink("f.txt", root.join("link")).expect("symlink");
    let latin1 = root.join(OsStr::from_bytes(b"caf\xe9"));
    write(&latin1, b"x");
    set_mode(&latin1, 0o600);
    let newline = root.join("new\nline");
    write(&newline, b"");
    set_mode(&newline, 0o644);
    for name in [
        OsStr::new("f.txt"),
        OsStr::new("dir"),
        OsStr::new("link"),
        OsStr::from_bytes(b"caf\xe9"),
        OsStr::new("new\nline"),
    ] {
        set_mtime(&root.join(name), when, 0);
    }
    let dir_size = std::fs::metadata(root.join("dir")).expect("stat").len();
    let width = dir_size.to_string().len().max(4);

    let out = shelf().args(["ls", &addr(&server)]).run();
    out.assert_ok();
    let row = |mode: &str, size: u64, name: &str| {
        format!("{mode} {size:>width$} 2024-05-01 12:34 {name}")
    };
    let want = [
        row("-rw-------", 1, "caf\\xe9"),
        row("drwxr-x---", dir_size, "dir"),
        row("-rw-r-----", 1234, "f.txt"),
        row("lrwxrwxrwx", 5, "link -> f.txt"),
        row("-rw-r--r--", 0, "new\\x0aline"),
    ];
    assert_eq!(out.stdout_str(), want.join("\n") + "\n", "{out}");

    // A file lists as its own line; a path inside a directory works too.
    let out = shelf().args(["ls", &addr(&server), "f.txt"]).run();
    assert_eq!(
        out.assert_ok().stdout_str(),
        "-rw-r----- 1234 2024-05-01 12:34 f.txt\n"
    );
    let out = shelf().args(["ls", &addr(&server), "/dir/"]).run();
    assert_eq!(out.assert_ok().stdout_str(), "", "an empty directory");
    let out = shelf().args(["ls", &addr(&server), "nope"]).run();
    assert_error(&out, "ls nope: no such file or directory");
}

#[test]
fn ls_into_a_closed_pipe_exits_zero() {
    let (lib, server) = serve();
    let many = lib.path().join("many");
    std::fs::create_dir(&many).expect("mkdir");
    // Well over a pipe's 64 KiB, so `shelf` is still writing when `head` leaves.
    for i in 0..4000 {
        write(many.join(format!("file-with-a-longish-name-{i:05}")), b"");
    }
    let script = r#"set -o pipefail; "$0" ls "$1" many | head -1"#;
    let out = tool("bash")
        .args(["-c", script])
        .arg(shelf_tests::shelf_bin())
        .arg(addr(&server))
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_ok();
    assert_eq!(out.stdout_str().lines().count(), 1, "{out}");
    assert!(
        out.stdout_str()
            .ends_with(" file-with-a-longish-name-00000\n"),
        "{out}"
    );
    assert!(
        out.stderr.is_empty(),
        "a closed pipe is not an error\n{out}"
    );

    // The same without a shell: read one line, close the pipe, and the exit is still 0.
    let mut child = shelf_tests::shelf_command()
        .args(["ls", &addr(&server), "many"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shelf ls");
    let mut first = String::new();
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    reader.read_line(&mut first).expect("first line");
    drop(reader);
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
}

#[test]
fn errors_are_one_line_with_the_right_exit_status() {
    let (_lib, server) = serve();
    let a = addr(&server);
    let local = scratch();

    let out = shelf()
        .args(["get", &a, "nope"])
        .current_dir(local.path())
        .run();
    assert_code(&out, 1);
    assert_eq!(
        out.stderr_str(),
        "shelf: get nope: no such file or directory\n"
    );
    assert!(out.stdout.is_empty());
    assert!(
        std::fs::read_dir(local.path())
            .expect("ls")
            .next()
            .is_none(),
        "nothing left"
    );

    let out = shelf()
        .args(["put", &a, "no-such-local-file"])
        .current_dir(local.path())
        .run();
    assert_error(&out, "no such file or directory");

    for args in [
        vec!["ls"],
        vec!["get", "x"],
        vec!["put", "/etc/hostname"],
        vec!["rm", "x"],
        vec!["mkdir", "x"],
        vec!["mv", "x", "y"],
        vec!["shell"],
    ] {
        let started = Instant::now();
        let out = shelf()
            .arg(args[0])
            .arg("127.0.0.1:1")
            .args(&args[1..])
            .timeout(Duration::from_secs(20))
            .run();
        let took = started.elapsed();
        assert_error(&out, "cannot reach server 127.0.0.1:1");
        assert!(took < Duration::from_secs(10), "took {took:?}\n{out}");
    }

    for args in [
        vec!["get"],
        vec!["get", a.as_str()],
        vec!["ls"],
        vec!["put", a.as_str()],
        vec!["mv", a.as_str(), "x"],
        vec!["rm", a.as_str()],
        vec!["frobnicate", a.as_str()],
    ] {
        let out = shelf().args(&args).run();
        assert_code(&out, 2);
        assert!(!out.stderr.is_empty(), "usage errors say why\n{out}");
    }
    // Usage found after parsing exits 2 as well.
    let out = shelf().args(["get", &a, "/"]).run();
    assert_code(&out, 2);
    assert!(out.stderr_str().starts_with("shelf: get /: "), "{out}");
}

/// Nothing shelf keeps for itself in a library (the mount's `.shelf-hidden`, `.shelf-hidden-*`,
/// put temporaries) shows in a listing or can be fetched, removed or moved: each command
/// answers as for an absent name, and leaves them as they were.
#[test]
fn issue_13_the_implementations_own_names_are_absent_to_the_command_line() {
    let (lib, server) = serve();
    let a = addr(&server);
    let ours = [
        ".shelf-hidden/1-2-3",
        "d/.shelf-hidden-1f-2-3-4a",
        ".shelf-put-0123456789abcdef",
    ];
    std::fs::create_dir_all(lib.path().join(".shelf-hidden")).expect("mkdir");
    std::fs::create_dir_all(lib.path().join("d")).expect("mkdir");
    for name in ours {
        write(lib.path().join(name), b"ours");
    }
    write(lib.path().join("seen.txt"), b"seen");
    let out = shelf().args(["ls", &a]).run();
    out.assert_ok();
    let listed = out.stdout_str();
    assert!(!listed.contains(".shelf"), "{out}");
    assert!(listed.contains(" seen.txt\n"), "{out}");
    let out = shelf().args(["ls", &a, "d"]).run();
    out.assert_ok();
    assert!(out.stdout.is_empty(), "{out}");
    let out = shelf()
        .args(["shell", &a])
        .stdin("ls\nls d\n")
        .timeout(Duration::from_secs(30))
        .run();
    out.assert_ok();
    assert!(!out.stdout_str().contains(".shelf"), "{out}");

    let local = scratch();
    for name in [".shelf-hidden", ours[0], ours[1], ours[2]] {
        for args in [
            vec!["ls", name],
            vec!["get", name],
            vec!["rm", "-r", name],
            vec!["mv", name, "taken"],
        ] {
            let out = shelf()
                .arg(args[0])
                .arg(&a)
                .args(&args[1..])
                .current_dir(local.path())
                .run();
            // The command and its paths, as for any absent name.
            let said = args
                .iter()
                .filter(|a| **a != "-r")
                .copied()
                .collect::<Vec<_>>();
            assert_eq!(
                out.stderr_str(),
                format!("shelf: {}: no such file or directory\n", said.join(" ")),
                "{out}"
            );
            assert_code(&out, 1);
        }
    }
    for name in ours {
        assert_eq!(read(lib.path().join(name)), b"ours");
    }
    assert!(!lib.path().join("taken").exists());
    assert_eq!(std::fs::read_dir(local.path()).expect("ls").count(), 0);
}

/// Every error is said once: a message that shows its cause does not also hand it on as the
/// next link of the chain, which `{:#}` would print again ("No such file or directory (os
/// error 2): No such file or directory (os error 2)").
#[test]
fn issue_13_every_error_is_said_once() {
    // A state directory of its own, so the test never creates the default /var/lib/shelfd.
    let state = scratch();
    let out = tool(shelfd_bin())
        .arg("/nonexistent")
        .arg("--state-dir")
        .arg(state.path())
        .run();
    assert_code(&out, 1);
    assert_eq!(
        out.stderr_str(),
        "shelfd: cannot serve /nonexistent: No such file or directory (os error 2)\n"
    );

    let dir = shelf_tests::MountDir::new();
    let out = shelf()
        .arg("mount")
        .arg("127.0.0.1:1")
        .arg(dir.path())
        .timeout(Duration::from_secs(20))
        .run();
    assert_code(&out, 1);
    assert_eq!(
        out.stderr_str(),
        "shelf: mount 127.0.0.1:1: cannot reach server 127.0.0.1:1: connection refused\n"
    );
}

#[test]
fn rm_mkdir_and_mv_change_the_library() {
    let (lib, server) = serve();
    let root = lib.path();
    let a = addr(&server);
    let run = |args: &[&str]| shelf().arg(args[0]).arg(&a).args(&args[1..]).run();

    let out = run(&["mkdir", "a"]);
    out.assert_ok();
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out}");
    assert!(root.join("a").is_dir());
    run(&["mkdir", "-p", "b/c/d", "e"]).assert_ok();
    assert!(root.join("b/c/d").is_dir() && root.join("e").is_dir());
    assert_error(&run(&["mkdir", "a"]), "mkdir a: file exists");
    run(&["mkdir", "-p", "a", "b/c"]).assert_ok();
    assert_error(
        &run(&["mkdir", "x/y"]),
        "mkdir x/y: no such file or directory",
    );
    write(root.join("file"), b"content\n");
    assert_error(&run(&["mkdir", "-p", "file/sub"]), "mkdir file/sub: ");

    run(&["mv", "file", "renamed"]).assert_ok();
    assert!(!root.join("file").exists());
    assert_eq!(read(root.join("renamed")), b"content\n");
    run(&["mv", "renamed", "a"]).assert_ok();
    assert_eq!(read(root.join("a/renamed")), b"content\n");
    run(&["mv", "a/renamed", "b/c/d/final"]).assert_ok();
    assert_eq!(read(root.join("b/c/d/final")), b"content\n");
    run(&["mv", "e", "b"]).assert_ok();
    assert!(root.join("b/e").is_dir() && !root.join("e").exists());
    write(root.join("other"), b"other\n");
    run(&["mv", "other", "b/c/d/final"]).assert_ok();
    assert_eq!(
        read(root.join("b/c/d/final")),
        b"other\n",
        "mv replaces a file"
    );
    assert_error(
        &run(&["mv", "nope", "x"]),
        "mv nope x: no such file or directory",
    );

    assert_error(&run(&["rm", "b"]), "rm b: directory not empty");
    assert!(root.join("b/c/d/final").exists());
    run(&["rm", "b/c/d/final"]).assert_ok();
    assert!(!root.join("b/c/d/final").exists());
    run(&["rm", "b/c/d"]).assert_ok();
    assert!(!root.join("b/c/d").exists() && root.join("b/c").is_dir());
    write(root.join("b/c/deep"), b"deep\n");
    run(&["rm", "-r", "b"]).assert_ok();
    assert!(!root.join("b").exists());
    assert_error(&run(&["rm", "b"]), "rm b: no such file or directory");
    assert_code(&run(&["rm", "/"]), 2);
    let left: Vec<OsString> = std::fs::read_dir(root)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, [OsString::from("a")], "only a/ is left");
    assert!(std::fs::read_dir(root.join("a"))
        .expect("ls a")
        .next()
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// Interrupts
// ---------------------------------------------------------------------------------------------

#[test]
fn interrupted_get_leaves_no_partial_local_file() {
    let (lib, server) = serve();
    sparse(&lib.path().join("big"), 200 << 20);
    let local = scratch();
    let mut get = Spawned::new(
        shelf_tests::shelf_command()
            .args(["get", &addr(&server), "big", "LOCAL"])
            .current_dir(local.path()),
    );
    // Wait until the download runs (its temporary exists), so the handler is installed.
    let started = poll(Duration::from_secs(10), || {
        (!names_containing(local.path(), ".LOCAL.shelf-get-").is_empty()).then_some(())
    });
    assert!(started.is_some(), "the download never started");
    std::thread::sleep(Duration::from_millis(100));
    signal(get.pid(), libc::SIGINT);
    let (code, err) = get.finish(Duration::from_secs(10));
    assert_eq!(code, Some(130), "exit status after Ctrl-C; stderr: {err}");
    assert_eq!(err, "shelf: interrupted\n");
    let left: Vec<PathBuf> = std::fs::read_dir(local.path())
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn interrupted_put_leaves_nothing_in_the_library() {
    let (lib, server) = serve();
    write(lib.path().join("big"), b"the old content\n");
    let local = scratch();
    let src = local.path().join("big");
    sparse(&src, 200 << 20);
    let mut put = Spawned::new(shelf_tests::shelf_command().args([
        OsStr::new("put"),
        OsStr::new(&addr(&server)),
        src.as_os_str(),
    ]));
    let started = poll(Duration::from_secs(10), || {
        (!put_temps(lib.path()).is_empty()).then_some(())
    });
    assert!(
        started.is_some(),
        "the upload never started\n{}",
        server.log()
    );
    std::thread::sleep(Duration::from_millis(100));
    signal(put.pid(), libc::SIGINT);
    let (code, err) = put.finish(Duration::from_secs(10));
    assert_eq!(code, Some(130), "exit status after Ctrl-C; stderr: {err}");
    let clean = poll(Duration::from_secs(5), || {
        put_temps(lib.path()).is_empty().then_some(())
    });
    assert!(
        clean.is_some(),
        "temporaries left: {:?}\n{}",
        put_temps(lib.path()),
        server.log()
    );
    assert_eq!(read(lib.path().join("big")), b"the old content\n");
    let names: Vec<OsString> = std::fs::read_dir(lib.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, [OsString::from("big")]);
}

// ---------------------------------------------------------------------------------------------
// A full server
// ---------------------------------------------------------------------------------------------

/// What a command says, once, on a terminal while it waits for a full server
/// (`tell_busy` in fuse-client/src/cli/mod.rs; remote/src/pool.rs, point 5).
const BUSY_NOTICE: &str = "waiting for room (--busy-wait)";

/// A server with room for one client, that room taken by a connection past its hello (so
/// its child exists), and a file to list. Refused at once rather than queued
/// (`--queue-wait 0`), so a waiting command meets many refusals and must still say so once.
fn full_server() -> (tempfile::TempDir, Server, Raw) {
    let lib = library();
    write(lib.path().join("hello.txt"), b"hello\n");
    let server = Server::start(lib.path(), &["--max-clients", "1", "--queue-wait", "0"]);
    let held = Raw::connect(&addr(&server));
    (lib, server, held)
}

/// `shelf ARGS` on a terminal of its own: stdin, stdout and stderr.
fn on_terminal(args: &[&str]) -> OnTerminal {
    let mut cmd = shelf_tests::shelf_command();
    cmd.env("LC_ALL", "C").args(args);
    OnTerminal::spawn(cmd)
}

fn refusals(server: &Server) -> usize {
    server.log().matches("busy: refusing").count()
}

#[test]
fn a_command_waiting_for_a_full_server_says_so_once_on_a_terminal() {
    let (_lib, server, held) = full_server();
    let a = addr(&server);

    // Still full when its wait ends: the notice once, then the busy error.
    let before = refusals(&server);
    let (screen, status) =
        on_terminal(&["--busy-wait", "3s", "ls", &a]).finish(Duration::from_secs(120));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{screen}");
    assert_eq!(screen.matches(BUSY_NOTICE).count(), 1, "{screen}");
    let notice = screen.find(BUSY_NOTICE).expect("the notice");
    let failure = screen.find("still busy after").expect("the busy error");
    assert!(notice < failure, "the notice comes first: {screen}");
    assert!(screen.contains("server busy"), "{screen}");
    assert!(
        refusals(&server) - before >= 2,
        "the command was refused more than once, and said so once\n{}",
        server.log()
    );

    // Room frees while it waits: the notice once, then the listing.
    let mut ls = on_terminal(&["--busy-wait", "120s", "ls", &a]);
    assert!(
        ls.wait_for(BUSY_NOTICE, Duration::from_secs(60)),
        "no notice while waiting: {}",
        ls.screen()
    );
    drop(held);
    let (screen, status) = ls.finish(Duration::from_secs(120));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{screen}");
    assert!(screen.contains("hello.txt"), "{screen}");
    assert_eq!(screen.matches(BUSY_NOTICE).count(), 1, "{screen}");
    assert!(!screen.contains("still busy"), "{screen}");
}

#[test]
fn a_command_waiting_for_a_full_server_is_silent_with_q_or_off_a_terminal() {
    let (_lib, server, _held) = full_server();
    let a = addr(&server);

    // `-q` on a terminal: waits just the same, says only the final error.
    let started = Instant::now();
    let (screen, status) =
        on_terminal(&["-q", "--busy-wait", "2s", "ls", &a]).finish(Duration::from_secs(120));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{screen}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited");
    assert!(screen.contains("still busy after"), "{screen}");
    assert!(!screen.contains(BUSY_NOTICE), "{screen}");

    // Standard error a file (a script, a log): no notice either.
    let out = shelf().args(["--busy-wait", "2s", "ls", &a]).run();
    assert_error(&out, "still busy after");
    assert!(out.elapsed >= Duration::from_secs(2), "it waited\n{out}");
    assert!(!out.stderr_str().contains(BUSY_NOTICE), "{out}");
    assert_eq!(
        out.stderr_str().lines().count(),
        1,
        "one line, the error\n{out}"
    );
}
