//! Faults under a real mount of a real `shelfd`: a stalled or cut network (through
//! [`shelf_tests::proxy::Proxy`]), processes killed with SIGKILL, a full disk, files changed on
//! the server behind the client's back, and writers racing each other.
//!
//! The promises checked: a caller never hangs (every failure arrives within a stated bound),
//! idempotent requests survive a lost connection transparently, acknowledged data is on the
//! server, a reader sees one whole version of a file and never a blend, nothing is left
//! behind (no zombies, no `.shelf-*` temporaries).
//!
//! Tests that kill processes or time calls take [`heavy`], so they do not starve each other
//! of the machine's two cores and their time bounds stay meaningful.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shelf_tests::proxy::Proxy;
use shelf_tests::*;

static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client's request timeout (`ConnectOptions::request_timeout`, 15 s) plus its connect
/// timeout (3 s) for the one reconnect a failed call may try, plus slack for a loaded
/// machine: no call through a mount may take longer than this to fail.
const FAIL_BOUND: Duration = Duration::from_secs(25);

fn errno_of<T>(r: &std::io::Result<T>) -> Option<i32> {
    r.as_ref().err().and_then(|e| e.raw_os_error())
}

/// Runs `cmd` with a timeout of twice the bound and asserts it ended (either way) in bound.
#[track_caller]
fn bounded(cmd: Cmd, logs: &dyn Fn() -> String) -> Output {
    let out = cmd.timeout(FAIL_BOUND * 2).run();
    assert!(
        out.status.is_some() && out.elapsed < FAIL_BOUND,
        "a call took {:.1?} (bound {FAIL_BOUND:?})\n{out}\n{}",
        out.elapsed,
        logs()
    );
    out
}

// ---------------------------------------------------------------------------------------------
// A stalled or cut network
// ---------------------------------------------------------------------------------------------

#[test]
fn a_stalled_server_fails_calls_within_the_bound_and_resume_heals() {
    if !fuse_available() {
        return;
    }
    let _heavy = heavy();
    let lib = library();
    write(lib.path().join("warm"), b"warm");
    write(lib.path().join("cold-a"), b"cold a");
    write(lib.path().join("cold-b"), b"cold b");
    let server = Server::plain(lib.path());
    let proxy = Proxy::start(server.addr());
    let mount = Mount::plain(proxy.addr());
    assert_eq!(read(mount.join("warm")), b"warm");

    proxy.stall();
    let logs = || format!("--- mount log ---\n{}", mount.log());
    // In parallel, so the test waits one bound, not two.
    let (stat, cat) = std::thread::scope(|s| {
        let stat = s.spawn(|| {
            tool("stat")
                .arg(mount.join("cold-a"))
                .timeout(FAIL_BOUND * 2)
                .run()
        });
        let cat = s.spawn(|| {
            tool("cat")
                .arg(mount.join("cold-b"))
                .timeout(FAIL_BOUND * 2)
                .run()
        });
        (
            stat.join().expect("stat thread"),
            cat.join().expect("cat thread"),
        )
    });
    for out in [&stat, &cat] {
        assert!(
            out.status.is_some() && out.elapsed < FAIL_BOUND,
            "with the server stalled a call took {:.1?} (bound {FAIL_BOUND:?})\n{out}\n{}",
            out.elapsed,
            logs()
        );
        out.assert_fail();
        eprintln!("stalled: {} failed after {:.1?}", out.desc, out.elapsed);
    }

    proxy.resume();
    let started = Instant::now();
    let back = poll(Duration::from_secs(20), || {
        tool("cat")
            .arg(mount.join("cold-b"))
            .timeout(FAIL_BOUND)
            .run()
            .success()
            .then_some(())
    });
    assert!(back.is_some(), "no recovery after resume\n{}", logs());
    eprintln!("recovered {:.1?} after resume", started.elapsed());
    assert_eq!(read(mount.join("cold-a")), b"cold a");
    write(mount.join("after"), b"after the stall");
    assert_eq!(read(lib.path().join("after")), b"after the stall");
}

#[test]
fn cut_connections_are_healed_transparently_for_reads_and_stats() {
    if !fuse_available() {
        return;
    }
    let _heavy = heavy();
    let lib = library();
    for i in 0..12 {
        write(
            lib.path().join(format!("f{i}")),
            random_bytes(i, 300_000 + i as usize),
        );
    }
    let server = Server::plain(lib.path());
    let proxy = Proxy::start(server.addr());
    let mount = Mount::plain(proxy.addr());
    // Open every connection of the pool.
    let _ = std::fs::read_dir(mount.path()).expect("ls").count();
    for i in 0..4 {
        assert_eq!(
            read(mount.join(format!("f{i}"))),
            random_bytes(i, 300_000 + i as usize)
        );
    }
    // After each cut, calls on names and data not cached yet must go to the server and
    // succeed: the client reconnects and resends idempotent requests.
    for i in 4..12u64 {
        proxy.cut_all();
        let started = Instant::now();
        let meta = std::fs::metadata(mount.join(format!("f{i}")))
            .unwrap_or_else(|e| panic!("stat f{i} after a cut: {e}\n{}", mount.log()));
        assert_eq!(meta.len(), 300_000 + i);
        proxy.cut_all();
        let data = std::fs::read(mount.join(format!("f{i}")))
            .unwrap_or_else(|e| panic!("read f{i} after a cut: {e}\n{}", mount.log()));
        assert_bytes_eq(
            &data,
            &random_bytes(i, 300_000 + i as usize),
            "read after a cut",
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    eprintln!("{} connections through the proxy", proxy.accepted());

    // A cut in the middle of a large write (non-idempotent): an error at worst, never a hang,
    // and a successful close means the data is on the server.
    let data = random_bytes(99, 8 << 20);
    let local = tempfile::NamedTempFile::new().expect("temp file");
    write(local.path(), &data);
    let stop = AtomicBool::new(false);
    let cutter = {
        let (stop, proxy) = (&stop, &proxy);
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                let mut cuts = 0;
                while !stop.load(Ordering::Relaxed) && cuts < 5 {
                    std::thread::sleep(Duration::from_millis(30));
                    proxy.cut_all();
                    cuts += 1;
                }
                cuts
            });
            let out = bounded(tool("cp").arg(local.path()).arg(mount.join("big")), &|| {
                mount.log()
            });
            stop.store(true, Ordering::Relaxed);
            let cuts = h.join().expect("cutter");
            (out, cuts)
        })
    };
    let (out, cuts) = cutter;
    eprintln!(
        "cp with {cuts} cuts: {}",
        if out.success() { "ok" } else { "failed" }
    );
    if out.success() {
        assert_bytes_eq(&read(lib.path().join("big")), &data, "cp through cuts");
    } else {
        assert!(!out.stderr.is_empty(), "cp failed silently\n{out}");
    }
    // The mount still works.
    assert_eq!(
        read(mount.join("f0")),
        random_bytes(0, 300_000),
        "after the cuts"
    );
}

#[test]
fn a_half_closed_connection_fails_or_heals_without_hanging() {
    if !fuse_available() {
        return;
    }
    let _heavy = heavy();
    let lib = library();
    write(lib.path().join("a"), b"a");
    write(lib.path().join("b"), b"b");
    let server = Server::plain(lib.path());
    let proxy = Proxy::start(server.addr());
    let mount = Mount::plain(proxy.addr());
    assert_eq!(read(mount.join("a")), b"a");
    proxy.half_close_all();
    let out = bounded(tool("cat").arg(mount.join("b")), &|| mount.log());
    eprintln!("cat after half-close: {out}");
    let back = poll(Duration::from_secs(20), || {
        std::fs::read(mount.join("b")).ok().filter(|d| d == b"b")
    });
    assert!(
        back.is_some(),
        "no recovery after half-close\n{}",
        mount.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Killed processes
// ---------------------------------------------------------------------------------------------

#[test]
fn open_files_keep_reading_and_writing_across_a_server_restart() {
    let _heavy = heavy();
    let Some(mut f) = Fixture::new() else { return };
    let rdata = random_bytes(1, 3 << 20);
    write(f.lib().join("r"), &rdata);
    write(f.mount.join("acked"), b"acknowledged before the crash");
    let mut synced = File::create(f.mount.join("synced")).expect("create synced");
    synced.write_all(&random_bytes(2, 100_000)).expect("write");
    synced.sync_all().expect("fsync");

    let mut r = File::open(f.mount.join("r")).expect("open r");
    let mut head = vec![0; 1 << 20];
    r.read_exact(&mut head).expect("read head");
    assert_bytes_eq(&head, &rdata[..1 << 20], "head of r");
    let mut w = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(f.mount.join("w"))
        .expect("open w");
    let part1 = random_bytes(3, 700_000);
    w.write_all(&part1).expect("write part 1");
    w.sync_all().expect("fsync part 1");

    f.server.restart();

    // The same descriptors carry on (the protocol keeps no server-side handles).
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("read after the restart: {e}\n{}", f.logs()));
    assert_bytes_eq(&rest, &rdata[1 << 20..], "rest of r after the restart");
    r.seek(SeekFrom::Start(12345)).expect("seek");
    let mut again = vec![0; 1000];
    r.read_exact(&mut again).expect("reread");
    assert_bytes_eq(&again, &rdata[12345..13345], "reread after the restart");
    let part2 = random_bytes(4, 500_000);
    w.write_all(&part2)
        .unwrap_or_else(|e| panic!("write after the restart: {e}\n{}", f.logs()));
    w.sync_all().expect("fsync after the restart");
    drop(w);
    drop(synced);
    assert_bytes_eq(
        &read(f.lib().join("w")),
        &[part1, part2].concat(),
        "w on the server",
    );
    assert_eq!(
        read(f.lib().join("acked")),
        b"acknowledged before the crash"
    );
    assert_bytes_eq(
        &read(f.lib().join("synced")),
        &random_bytes(2, 100_000),
        "fsynced before the crash",
    );
}

#[test]
fn killing_serving_children_and_the_parent_never_hangs_callers_or_leaves_zombies() {
    let _heavy = heavy();
    let Some(mut f) = Fixture::new() else { return };
    let data = random_bytes(5, 2 << 20);
    write(f.lib().join("data"), &data);
    assert_bytes_eq(&read(f.mount.join("data")), &data, "before");
    let parent = f.server.pid().expect("running");

    // 1. SIGKILL every child serving the mount.
    let kids = children_of(parent);
    assert!(!kids.is_empty(), "no serving children under {parent}");
    for (pid, _) in &kids {
        signal(*pid as i32, libc::SIGKILL);
    }
    let started = Instant::now();
    let got = std::fs::read(f.mount.join("data"));
    assert!(started.elapsed() < FAIL_BOUND);
    // Reads are idempotent: the client reconnects and the call succeeds.
    let got = got.unwrap_or_else(|e| panic!("read after killing the children: {e}\n{}", f.logs()));
    assert_bytes_eq(&got, &data, "read after killing the children");
    write(f.mount.join("after-children"), b"x");
    let zombies = poll(Duration::from_secs(5), || {
        let z: Vec<_> = children_of(parent)
            .into_iter()
            .filter(|(_, s)| *s == 'Z')
            .collect();
        z.is_empty().then_some(())
    });
    assert!(
        zombies.is_some(),
        "zombies under the server: {:?}",
        children_of(parent)
    );

    // 2. SIGKILL the parent alone: live connections keep being served by their children;
    // a call that needs a new connection fails within the bound.
    signal(parent as i32, libc::SIGKILL);
    let out = bounded(tool("cat").arg(f.mount.join("data")), &|| f.logs());
    eprintln!(
        "with the parent dead: {}",
        out.status.map_or(-1, |s| s.code().unwrap_or(-1))
    );
    // Restart (kills the orphaned children through the process group) and carry on.
    f.server.restart();
    let back = poll(Duration::from_secs(20), || {
        std::fs::read(f.mount.join("data"))
            .ok()
            .filter(|d| *d == data)
    });
    assert!(
        back.is_some(),
        "no recovery after the restart\n{}",
        f.logs()
    );
    assert_eq!(read(f.lib().join("after-children")), b"x");
    // Killed processes whose parent died are adopted by init, which reaps them on its own
    // schedule: such zombies are gone from us; anything else of the old group is not.
    let old: Vec<_> = processes()
        .into_iter()
        .filter(|p| p.pgid == parent && !(p.state == 'Z' && p.ppid == 1))
        .collect();
    assert!(
        old.is_empty(),
        "processes of the killed server remain: {old:?}"
    );
    assert_bytes_eq(&read(f.lib().join("data")), &data, "data on the server");
}

#[test]
fn a_killed_mount_process_leaves_enotconn_until_shelf_umount_clears_it() {
    let _heavy = heavy();
    let Some(mut f) = Fixture::new() else { return };
    write(f.mount.join("before"), b"closed before the kill");
    let data = random_bytes(6, 1 << 20);
    write(f.lib().join("big"), &data);
    let mount_pid = f.mount.pid().expect("mount running");

    f.mount.signal(libc::SIGKILL);
    let status = f.mount.wait_exit(Duration::from_secs(10));
    assert!(status.is_some(), "the killed mount process was not reaped");
    assert!(
        !Path::new(&format!("/proc/{mount_pid}")).exists(),
        "mount process {mount_pid} still exists (zombie?)"
    );

    let started = Instant::now();
    let r = std::fs::metadata(f.mount.join("before"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(errno_of(&r), Some(libc::ENOTCONN), "{r:?}");
    let out = bounded(tool("cat").arg(f.mount.join("big")), &|| f.logs());
    out.assert_fail()
        .assert_stderr_contains("Transport endpoint is not connected");
    let out = bounded(tool("ls").arg(f.mount.path()), &|| f.logs());
    out.assert_fail();

    let out = shelf()
        .arg("umount")
        .arg(f.mount.path())
        .timeout(Duration::from_secs(30))
        .run();
    out.assert_ok();
    assert!(
        !f.mount.is_mounted(),
        "still mounted after shelf umount\n{out}"
    );
    assert!(
        std::fs::read_dir(f.mount.path())
            .expect("list the bare mount point")
            .next()
            .is_none(),
        "the mount point is not empty"
    );
    // Nothing damaged on the server.
    assert_eq!(read(f.lib().join("before")), b"closed before the kill");
    assert_bytes_eq(&read(f.lib().join("big")), &data, "big on the server");
    // A new mount of the same server works.
    let m2 = Mount::plain(f.server.addr());
    assert_eq!(read(m2.join("before")), b"closed before the kill");
}

// ---------------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------------

/// A small tmpfs mounted on a temp directory; unmounted (lazily) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("shelf-tmpfs-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let out = tool("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .timeout(Duration::from_secs(20))
            .run();
        out.assert_ok();
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.dir.as_os_str().as_bytes()) {
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_full_disk_reports_enospc_and_keeps_atomic_replacements_intact() {
    if !fuse_available() {
        return;
    }
    let _heavy = heavy();
    // Field order: the mount drops first, then the server, then the tmpfs.
    let tmpfs = Tmpfs::new("8m");
    let server = Server::plain(&tmpfs.dir);
    let mount = Mount::plain(server.addr());
    let logs = || {
        format!(
            "--- mount log ---\n{}\n--- shelfd ---\n{}",
            mount.log(),
            server.log()
        )
    };

    let one = random_bytes(10, 1 << 20);
    write(mount.join("f"), &one);
    assert_bytes_eq(&read(tmpfs.dir.join("f")), &one, "1 MiB on the server");

    let big = tempfile::NamedTempFile::new().expect("temp file");
    write(big.path(), random_bytes(11, 16 << 20));
    let out = bounded(tool("cp").arg(big.path()).arg(mount.join("f")), &logs);
    out.assert_fail()
        .assert_stderr_contains("No space left on device");

    // Write a temporary, then rename over the original: the failure comes before the
    // rename, so the original stays whole.
    std::fs::remove_file(mount.join("f")).expect("rm f");
    write(mount.join("g"), &one);
    let tmp = mount.join("g.tmp");
    let result = (|| -> std::io::Result<()> {
        let mut t = File::create(&tmp)?;
        t.write_all(&random_bytes(12, 16 << 20))?;
        t.sync_all()?;
        drop(t);
        std::fs::rename(&tmp, mount.join("g"))
    })();
    assert_eq!(
        result.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::ENOSPC),
        "{result:?}\n{}",
        logs()
    );
    let _ = std::fs::remove_file(&tmp);
    assert_bytes_eq(&read(mount.join("g")), &one, "g through the mount");
    assert_bytes_eq(&read(tmpfs.dir.join("g")), &one, "g on the server");

    // `shelf put` of a too-large file fails and leaves the old file and no temporary.
    let out = shelf()
        .arg("put")
        .arg(server.addr().to_string())
        .arg(big.path())
        .arg("g")
        .timeout(FAIL_BOUND * 2)
        .run();
    out.assert_fail();
    assert_bytes_eq(&read(tmpfs.dir.join("g")), &one, "g after a failed put");

    let seen: Vec<String> = std::fs::read_dir(mount.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        seen.iter().all(|n| !n.starts_with(".shelf-")),
        "temporaries visible on the mount: {seen:?}"
    );
    assert_eq!(
        shelf_leftovers(&tmpfs.dir),
        Vec::<PathBuf>::new(),
        "temporaries left"
    );
    // Space came back: a small write works again.
    write(mount.join("small"), b"fits");
    assert_eq!(read(tmpfs.dir.join("small")), b"fits");
}

// ---------------------------------------------------------------------------------------------
// Files changed behind the client's back
// ---------------------------------------------------------------------------------------------

/// 8 MiB where each 1 MiB chunk is filled with `tag ^ chunk number`: a blend of two versions
/// shows as a chunk of the wrong tag.
fn versioned(tag: u8) -> Vec<u8> {
    (0..8u8).flat_map(|k| vec![tag ^ k; 1 << 20]).collect()
}

/// Which tag every chunk of `data` carries, if it is one whole version.
fn whole_version(data: &[u8]) -> Option<u8> {
    if data.len() != 8 << 20 {
        return None;
    }
    let tag = data[0];
    (data == versioned(tag).as_slice()).then_some(tag)
}

#[test]
fn a_file_rewritten_in_place_on_the_server_reads_as_one_whole_version() {
    let Some(f) = Fixture::new() else { return };
    let path = f.lib().join("v");
    write(&path, versioned(0xA0));
    assert_eq!(whole_version(&read(f.mount.join("v"))), Some(0xA0));
    for (round, tag) in [0xB0u8, 0xC0, 0xD0].into_iter().enumerate() {
        if round == 1 {
            // Truncate then rewrite: the size passes through 0.
            write(&path, versioned(tag));
        } else {
            // Same size, rewritten in place (no truncation, same inode).
            let file = OpenOptions::new().write(true).open(&path).expect("open");
            file.write_all_at(&versioned(tag), 0).expect("rewrite");
        }
        // Reads right after the change may still see the old version (within the TTL), but
        // never a blend; after the TTL they see the new one.
        let got = read(f.mount.join("v"));
        let seen = whole_version(&got);
        assert!(
            seen.is_some(),
            "a read right after the change blended versions (chunks: {:?})",
            got.chunks(1 << 20).map(|c| c[0]).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(1500));
        let got = read(f.mount.join("v"));
        assert_eq!(
            whole_version(&got),
            Some(tag),
            "after the TTL (chunks: {:?})",
            got.chunks(1 << 20).map(|c| c[0]).collect::<Vec<_>>()
        );
    }
}

#[test]
fn open_files_deleted_or_replaced_on_the_server_give_errors_or_true_data() {
    let Some(f) = Fixture::new() else { return };
    let old = random_bytes(20, 4 << 20);
    let new = random_bytes(21, 4 << 20);

    // Deleted while open.
    write(f.lib().join("del"), &old);
    let mut fd = File::open(f.mount.join("del")).expect("open del");
    let mut head = vec![0; 100_000];
    fd.read_exact(&mut head).expect("head");
    std::fs::remove_file(f.lib().join("del")).expect("rm on server");
    std::thread::sleep(Duration::from_millis(1200));
    let mut buf = vec![0; 1 << 20];
    match fd.read_at(&mut buf, 2 << 20) {
        Ok(n) => assert_bytes_eq(&buf[..n], &old[2 << 20..(2 << 20) + n], "deleted, read"),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESTALE)),
            "read of a deleted file: {e}"
        ),
    }
    drop(fd);
    let r = std::fs::metadata(f.mount.join("del"));
    assert_eq!(errno_of(&r), Some(libc::ENOENT), "{r:?}");

    // Replaced (a new file renamed over it) while open.
    write(f.lib().join("rep"), &old);
    let fd = File::open(f.mount.join("rep")).expect("open rep");
    let mut buf = vec![0; 100_000];
    fd.read_exact_at(&mut buf, 0).expect("head");
    write(f.lib().join("rep.new"), &new);
    std::fs::rename(f.lib().join("rep.new"), f.lib().join("rep")).expect("replace");
    std::thread::sleep(Duration::from_millis(1200));
    for off in [1u64 << 20, 3 << 20] {
        let mut buf = vec![0; 1 << 20];
        match fd.read_at(&mut buf, off) {
            Ok(n) => {
                let o = off as usize;
                let from_old = buf[..n] == old[o..o + n];
                let from_new = buf[..n] == new[o..o + n];
                assert!(from_old || from_new, "replaced: garbage at {off}");
            }
            Err(e) => assert!(
                matches!(e.raw_os_error(), Some(libc::ESTALE | libc::ENOENT)),
                "read of a replaced file: {e}"
            ),
        }
    }
    drop(fd);
    assert_bytes_eq(
        &read(f.mount.join("rep")),
        &new,
        "a fresh open after the TTL",
    );

    // Truncated to 10 bytes while open: no byte past the new end is invented.
    write(f.lib().join("tr"), &old);
    let fd = File::open(f.mount.join("tr")).expect("open tr");
    let mut buf = vec![0; 4096];
    fd.read_exact_at(&mut buf, 0).expect("head");
    let file = OpenOptions::new()
        .write(true)
        .open(f.lib().join("tr"))
        .expect("open on server");
    file.set_len(10).expect("truncate");
    drop(file);
    std::thread::sleep(Duration::from_millis(1200));
    let mut buf = vec![0; 1 << 20];
    match fd.read_at(&mut buf, 2 << 20) {
        Ok(n) => assert!(
            n == 0 || buf[..n] == old[2 << 20..(2 << 20) + n],
            "truncated: {n} bytes of garbage"
        ),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::ESTALE | libc::ENOENT)),
            "read of a truncated file: {e}"
        ),
    }
    drop(fd);
    assert_eq!(read(f.mount.join("tr")), &old[..10]);
}

// ---------------------------------------------------------------------------------------------
// Racing writers
// ---------------------------------------------------------------------------------------------

/// 2 MiB of one byte value: version `v`.
fn put_version(v: u8) -> Vec<u8> {
    vec![v; 2 << 20]
}

#[track_caller]
fn assert_one_version(data: &[u8], what: &str) {
    assert_eq!(data.len(), 2 << 20, "{what}: length");
    let v = data[0];
    assert!(
        (1..=6).contains(&v) && data.iter().all(|&b| b == v),
        "{what}: a blend of versions (first byte {v}, {} differing; version of each 256 KiB: {:?})",
        data.iter().filter(|&&b| b != v).count(),
        data.chunks(256 << 10).map(|c| c[0]).collect::<Vec<_>>()
    );
}

#[test]
fn concurrent_puts_are_seen_whole_by_every_reader() {
    if !fuse_available() {
        return;
    }
    let _heavy = heavy();
    let lib = library();
    write(lib.path().join("shared"), put_version(1));
    let server = Server::plain(lib.path());
    let mount = Mount::plain(server.addr());
    let addr = server.addr().to_string();
    let locals = tempfile::tempdir().expect("temp dir");
    for v in 1..=6u8 {
        write(locals.path().join(format!("v{v}")), put_version(v));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let puts = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let (addr, puts, reads, refused, mount) = (&addr, &puts, &reads, &refused, &mount);
    std::thread::scope(|s| {
        for writer in 0..2u8 {
            let locals = locals.path();
            s.spawn(move || {
                let mut k = 0u8;
                while Instant::now() < deadline {
                    let v = 1 + writer * 3 + k % 3;
                    shelf()
                        .arg("put")
                        .arg(addr)
                        .arg(locals.join(format!("v{v}")))
                        .arg("shared")
                        .arg("-q")
                        .timeout(Duration::from_secs(60))
                        .run()
                        .assert_ok();
                    puts.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
            });
        }
        s.spawn(move || {
            while Instant::now() < deadline {
                let out = shelf()
                    .args(["get", addr, "shared", "-", "-q"])
                    .timeout(Duration::from_secs(60))
                    .run();
                if out.success() {
                    assert_one_version(&out.stdout, "shelf get");
                    reads.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Refusing a download that changed under it is fine; a blend is not.
                    out.assert_stderr_contains("changed on the server");
                    let first = out.stdout.first().copied();
                    assert!(
                        out.stdout.iter().all(|&b| Some(b) == first),
                        "a failed get wrote a blend to stdout\n{out}"
                    );
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        s.spawn(move || {
            while Instant::now() < deadline {
                match std::fs::read(mount.join("shared")) {
                    Ok(data) => {
                        assert_one_version(&data, "a read through the mount");
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    // Replaced between open and read: allowed.
                    Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("read through the mount: {e}"),
                }
            }
        });
        // Reads of an open file through the mount, chunk by chunk, restarting at each open.
        s.spawn(move || {
            while Instant::now() < deadline {
                let mut file = File::open(mount.join("shared")).expect("open shared");
                let mut all = Vec::new();
                let mut buf = vec![0; 256 << 10];
                let whole = loop {
                    match file.read(&mut buf) {
                        Ok(0) => break true,
                        Ok(n) => all.extend_from_slice(&buf[..n]),
                        // The file was replaced under the open descriptor: allowed.
                        Err(e) if e.raw_os_error() == Some(libc::ESTALE) => break false,
                        Err(e) => panic!("read of shared: {e}"),
                    }
                };
                if !whole {
                    refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                assert_one_version(&all, "piecewise reads of one open file");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        });
    });
    eprintln!(
        "{} puts, {} whole reads, {} reads refused (ESTALE or \"changed\")",
        puts.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    assert!(reads.load(Ordering::Relaxed) > 0, "no read ever completed");
    assert_one_version(&read(lib.path().join("shared")), "the final file");
    let leftovers: Vec<_> = std::fs::read_dir(lib.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "shared")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
