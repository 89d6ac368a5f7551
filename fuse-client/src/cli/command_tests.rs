//! The subcommands run against an in-process server ([`Loopback`]).

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use shelf_proto::{Reply, Request};
use shelf_server::ServeConfig;

use super::*;
use shelf_remote::{Limits, Pending, RemoteError};
use shelf_testkit::{Fault, Faulty, Loopback, Memory};

fn quiet() -> Ui {
    Ui {
        progress: false,
        quiet: true,
    }
}

/// Byte k is k mod 251, so a misplaced chunk cannot pass.
fn ramp(len: usize) -> Vec<u8> {
    (0..len).map(|k| (k % 251) as u8).collect()
}

/// A server that splits I/O at 64 KiB, so small files already take many pipelined chunks.
fn server(dir: &std::path::Path) -> Client<Loopback> {
    let cfg = ServeConfig {
        max_io: 64 << 10,
        max_payload: 96 << 10,
        ..ServeConfig::default()
    };
    let opts = ConnectOptions::new("loopback");
    // As `cli::connect` makes it: a person's client.
    Client::for_people(Loopback::with(dir, cfg, opts, 1).expect("loopback"))
}

fn no_stop() -> AtomicBool {
    AtomicBool::new(false)
}

#[test]
fn ls_lists_with_modes_sizes_and_escaped_names() {
    let lib = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(lib.path().join("docs")).expect("mkdir");
    std::fs::write(lib.path().join("a.txt"), b"12345").expect("write");
    std::fs::write(lib.path().join("bad\nname"), b"").expect("write");
    std::os::unix::fs::symlink("a.txt", lib.path().join("link")).expect("symlink");
    let c = server(lib.path());
    let mut out = Vec::new();
    ls::list(&c, b"", &mut out).expect("ls");
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let fields: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(fields[0][0].starts_with("-rw"), "{text}");
    assert_eq!(fields[0][0].len(), 10);
    assert_eq!(fields[0][1], "5");
    assert_eq!(fields[0][4], "a.txt");
    assert_eq!(fields[1][4], "bad\\x0aname");
    assert!(fields[2][0].starts_with('d'), "{text}");
    assert_eq!(fields[2][4], "docs");
    assert!(fields[3][0].starts_with('l'));
    assert_eq!(&fields[3][4..], ["link", "->", "a.txt"]);
    // A date and a time between mode and name.
    assert_eq!(fields[0][2].len(), 10);
    assert_eq!(fields[0][3].len(), 5);

    let mut out = Vec::new();
    ls::list(&c, b"a.txt", &mut out).expect("ls of a file");
    assert!(String::from_utf8(out).expect("utf8").ends_with(" a.txt\n"));
    let err = ls::list(&c, b"nope", &mut Vec::new()).expect_err("missing");
    assert_eq!(format!("{err:#}"), "ls nope: no such file or directory");
}

#[test]
fn put_then_get_round_trips_many_chunks() {
    let lib = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let c = server(lib.path());
    let data = ramp((1 << 20) + 777);
    let src = local.path().join("src.bin");
    std::fs::write(&src, &data).expect("write");
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o640))
        .expect("chmod");
    put::put(&c, &src, Some(b"up.bin"), b"", quiet(), &no_stop()).expect("put");
    assert!(std::fs::read(lib.path().join("up.bin")).expect("uploaded") == data);
    let attr = c.stat(b"up.bin").expect("stat");
    assert_eq!(attr.perm & 0o777, 0o640);
    let src_mtime = std::fs::metadata(&src)
        .expect("meta")
        .modified()
        .expect("mtime");
    let dst = local.path().join("down.bin");
    get::get(&c, b"up.bin", Some(&dst), quiet(), &no_stop()).expect("get");
    assert!(std::fs::read(&dst).expect("downloaded") == data);
    let meta = std::fs::metadata(&dst).expect("meta");
    assert_eq!(
        meta.modified().expect("mtime"),
        src_mtime,
        "mtime kept both ways"
    );
    // Into an existing directory, under the remote name; nothing else left behind.
    let into = local.path().join("dir");
    std::fs::create_dir(&into).expect("mkdir");
    get::get(&c, b"up.bin", Some(&into), quiet(), &no_stop()).expect("get into dir");
    let names: Vec<_> = std::fs::read_dir(&into)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [OsString::from("up.bin")]);
    // put into an existing remote directory.
    std::fs::create_dir(lib.path().join("d")).expect("mkdir");
    put::put(&c, &src, Some(b"d"), b"", quiet(), &no_stop()).expect("put into dir");
    assert!(lib.path().join("d/src.bin").is_file());
}

#[test]
fn interrupted_transfers_leave_nothing_behind() {
    let lib = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let c = server(lib.path());
    std::fs::write(lib.path().join("f"), ramp(300_000)).expect("write");
    let stop = AtomicBool::new(true);
    let dst = local.path().join("f");
    let err = get::get(&c, b"f", Some(&dst), quiet(), &stop).expect_err("interrupted");
    assert!(err.is::<Interrupted>(), "{err:#}");
    assert_eq!(std::fs::read_dir(local.path()).expect("dir").count(), 0);

    let src = local.path().join("new");
    std::fs::write(&src, ramp(300_000)).expect("write");
    let before = std::fs::read(lib.path().join("f")).expect("read");
    let err = put::put(&c, &src, Some(b"f"), b"", quiet(), &stop).expect_err("interrupted");
    assert!(err.is::<Interrupted>(), "{err:#}");
    assert_eq!(
        std::fs::read(lib.path().join("f")).expect("old kept"),
        before
    );
    let names: Vec<_> = std::fs::read_dir(lib.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [OsString::from("f")], "the temporary was aborted");
}

/// Appends to a file on disk whenever a read of it is started, `changes` times.
struct Meddler {
    inner: Loopback,
    file: std::path::PathBuf,
    changes: AtomicUsize,
}

impl Transport for Meddler {
    type Pending = Pending;
    fn start(&self, req: &Request) -> Result<Pending, RemoteError> {
        if matches!(req, Request::Read { .. })
            && self
                .changes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.file)
                .expect("open");
            f.write_all(b"more").expect("append");
        }
        self.inner.start(req)
    }
    fn call(&self, req: Request) -> Result<Reply, RemoteError> {
        self.inner.call(req)
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn features(&self) -> u64 {
        self.inner.features()
    }
}

#[test]
fn get_starts_over_once_when_the_file_changes() {
    for (changes, ok) in [(1, true), (100, false)] {
        let lib = tempfile::tempdir().expect("tempdir");
        let local = tempfile::tempdir().expect("tempdir");
        let file = lib.path().join("f");
        std::fs::write(&file, ramp(200_000)).expect("write");
        let c = Client::new(Arc::new(Meddler {
            inner: server(lib.path()).into_transport(),
            file: file.clone(),
            changes: AtomicUsize::new(changes),
        }));
        let dst = local.path().join("f");
        let got = get::get(&c, b"f", Some(&dst), quiet(), &no_stop());
        if ok {
            got.expect("second try succeeds");
            assert_eq!(
                std::fs::read(&dst).expect("read"),
                std::fs::read(&file).expect("read")
            );
        } else {
            let err = got.expect_err("keeps changing");
            assert_eq!(
                format!("{err:#}"),
                "changed on the server while downloading"
            );
            assert_eq!(std::fs::read_dir(local.path()).expect("dir").count(), 0);
        }
    }
}

#[test]
fn rm_mkdir_mv() {
    let lib = tempfile::tempdir().expect("tempdir");
    let c = server(lib.path());
    let os = |s: &str| OsString::from(s);
    mkdir::run(&c, &[os("a/b/c")], true, b"").expect("mkdir -p");
    assert!(lib.path().join("a/b/c").is_dir());
    mkdir::run(&c, &[os("a/b")], true, b"").expect("mkdir -p of an existing dir");
    let err = mkdir::run(&c, &[os("a/b")], false, b"").expect_err("exists");
    assert_eq!(format!("{err:#}"), "mkdir a/b: file exists");
    std::fs::write(lib.path().join("a/b/c/f"), b"x").expect("write");
    mv::run(&c, &os("a/b/c/f"), &os("a"), b"").expect("mv into dir");
    assert!(lib.path().join("a/f").is_file());
    mv::run(&c, &os("/a/f"), &os("g"), b"a").expect("mv relative to a cwd");
    assert!(lib.path().join("a/g").is_file());
    let err = rm::run(&c, &[os("a")], false, b"").expect_err("not empty");
    assert!(format!("{err:#}").contains("use -r"), "{err:#}");
    rm::run(&c, &[os("a/g")], false, b"").expect("rm file");
    rm::run(&c, &[os("a")], true, b"").expect("rm -r");
    assert_eq!(std::fs::read_dir(lib.path()).expect("dir").count(), 0);
    let err = rm::run(&c, &[os("/")], true, b"").expect_err("root");
    assert!(err.is::<UsageError>() || err.chain().any(|e| e.is::<UsageError>()));
}

/// The names shelf keeps for itself are neither listed nor reachable: each command answers
/// as if they were absent, and leaves them as they were.
#[test]
fn the_implementations_own_names_are_absent_to_every_command() {
    let lib = tempfile::tempdir().expect("tempdir");
    let ours = [
        ".shelf-hidden/1-2-3",
        "d/.shelf-hidden-1-2",
        ".shelf-put-0123456789abcdef",
    ];
    std::fs::create_dir_all(lib.path().join(".shelf-hidden")).expect("mkdir");
    std::fs::create_dir_all(lib.path().join("d/.shelf-hidden")).expect("mkdir");
    for name in ours {
        std::fs::write(lib.path().join(name), b"ours").expect("write");
    }
    let c = server(lib.path());
    let os = |s: &str| OsString::from(s);
    let listed = |dir: &[u8]| {
        let mut out = Vec::new();
        ls::list(&c, dir, &mut out).expect("ls");
        String::from_utf8(out).expect("utf8")
    };
    let root = listed(b"");
    assert!(!root.contains(".shelf"), "{root}");
    assert!(root.ends_with(" d\n"), "{root}");
    // Only the root's `.shelf-hidden` is ours.
    assert!(listed(b"d").ends_with(" .shelf-hidden\n"));
    for name in [
        ".shelf-hidden",
        ".shelf-hidden/1-2-3",
        "d/.shelf-hidden-1-2",
        ".shelf-put-0123456789abcdef",
    ] {
        let err = ls::list(&c, name.as_bytes(), &mut Vec::new()).expect_err("ls of ours");
        assert_eq!(
            format!("{err:#}"),
            format!("ls {name}: no such file or directory")
        );
        let err = rm::run(&c, &[os(name)], true, b"").expect_err("rm of ours");
        assert!(
            format!("{err:#}").ends_with("no such file or directory"),
            "{err:#}"
        );
        let err = mv::run(&c, &os(name), &os("taken"), b"").expect_err("mv of ours");
        assert!(
            format!("{err:#}").ends_with("no such file or directory"),
            "{err:#}"
        );
    }
    let err = mkdir::run(&c, &[os(".shelf-hidden")], false, b"").expect_err("mkdir of ours");
    assert!(
        format!("{err:#}").ends_with("no such file or directory"),
        "{err:#}"
    );
    for name in ours {
        assert_eq!(std::fs::read(lib.path().join(name)).expect("kept"), b"ours");
    }
    assert!(!lib.path().join("taken").exists());
}

/// The in-memory server splitting I/O at 64 KiB, behind a fault injector; with
/// `whole_connection`, a loss hangs the connection up (its put temporaries go with it).
fn faulty(dir: &std::path::Path, whole_connection: bool) -> Client<Faulty<Memory>> {
    let cfg = ServeConfig {
        max_io: 64 << 10,
        max_payload: 96 << 10,
        ..ServeConfig::default()
    };
    let f = Faulty::new(Memory::with(dir, cfg).expect("memory server"));
    Client::new(if whole_connection {
        f.on_hang_up(Memory::hang_up)
    } else {
        f
    })
}

#[test]
fn put_never_resends_a_lost_write_and_commits_nothing() {
    for (fault, whole_connection) in [
        (Fault::LostAfter, true),
        (Fault::LostBefore, true),
        (Fault::LostAfter, false),
        (Fault::LostBefore, false),
    ] {
        let lib = tempfile::tempdir().expect("tempdir");
        let local = tempfile::tempdir().expect("tempdir");
        std::fs::write(lib.path().join("f"), b"old").expect("write");
        let src = local.path().join("new");
        std::fs::write(&src, ramp(8 << 16)).expect("write");
        let c = faulty(lib.path(), whole_connection);
        c.transport().fail("write", 3, fault.clone());
        let err = put::put(&c, &src, Some(b"f"), b"", quiet(), &no_stop()).expect_err("lost");
        assert!(
            err.downcast_ref::<RemoteError>()
                .is_some_and(RemoteError::is_connection_lost),
            "{fault:?}: {err:#}"
        );
        assert_eq!(c.transport().seen("put-commit"), 0, "{fault:?}");
        assert!(
            c.transport().seen("write") <= 8,
            "{fault:?}: nothing resent"
        );
        assert_eq!(
            std::fs::read(lib.path().join("f")).expect("old kept"),
            b"old"
        );
        let names: Vec<_> = std::fs::read_dir(lib.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [OsString::from("f")], "{fault:?}: no temporary left");
    }
}

#[test]
fn get_resends_a_read_lost_with_its_connection() {
    let lib = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let data = ramp((8 << 16) + 99);
    std::fs::write(lib.path().join("f"), &data).expect("write");
    let c = faulty(lib.path(), true);
    c.transport().fail("read", 3, Fault::LostAfter);
    let dst = local.path().join("f");
    get::get(&c, b"f", Some(&dst), quiet(), &no_stop()).expect("get");
    assert_eq!(std::fs::read(&dst).expect("read"), data);
    assert_eq!(c.transport().fired().len(), 1);
    assert_eq!(c.transport().inner().connections(), 2);
}
