//! Real FUSE mounts of a real `shelfd`, driven with the everyday tools people use on them
//! (cp, mv, rsync, tar, ls, stat, df, touch, truncate, ln, rm) and compared byte for byte with
//! the library directory the server serves, or with a local reference copy.
//!
//! Each test has its own library, server and mount, so tests run in parallel; the few that
//! kill servers or touch /sbin take [`HEAVY`] so they do not starve each other on two cores.
//! Tests fail (not skip) without FUSE unless `SHELF_SKIP_FUSE=1`.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shelf_tests::*;

/// Serialises the tests that kill servers or install /sbin/mount.fuse.shelf.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

macro_rules! fixture {
    () => {
        match Fixture::new() {
            Some(f) => f,
            None => return,
        }
    };
    ($server:expr, $mount:expr) => {
        match Fixture::with_args($server, $mount) {
            Some(f) => f,
            None => return,
        }
    };
}

fn cmd(program: &str) -> Cmd {
    tool(program)
}

/// `stat -c FORMAT PATH` (UTC), trimmed.
#[track_caller]
fn stat_c(format: &str, path: &Path) -> String {
    let out = cmd("stat").arg("-c").arg(format).arg(path).run();
    out.assert_ok();
    out.stdout_str().trim_end().to_string()
}

#[track_caller]
fn diff_r(a: &Path, b: &Path) {
    cmd("diff").arg("-r").arg(a).arg(b).run().assert_ok();
}

/// Relative path, size, mtime (ns) and mode of every entry under `dir`, sorted: a tree's
/// metadata in one comparable string.
fn tree_listing(dir: &Path, with_times: bool) -> String {
    let fmt = if with_times {
        "%y|%P|%s|%m|%T@\n"
    } else {
        "%y|%P|%s|%m\n"
    };
    let out = cmd("find")
        .arg(dir)
        .args(["-mindepth", "1", "-printf", fmt])
        .run();
    out.assert_ok();
    let mut lines: Vec<String> = out
        .stdout_str()
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split('|').collect();
            // A directory's size is the filesystem's business.
            if f[0] == "d" {
                f[2] = "-";
            }
            f.join("|")
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Copying whole trees
// ---------------------------------------------------------------------------------------------

#[test]
fn cp_r_a_tree_in_and_out_then_diff_r() {
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    let src = local.path().join("tree");
    make_tree(&src);

    cmd("cp").arg("-r").arg(&src).arg(f.mnt()).run().assert_ok();
    diff_r(&src, &f.lib().join("tree"));
    diff_r(&src, &f.mount.join("tree"));

    let back = local.path().join("back");
    cmd("cp")
        .arg("-r")
        .arg(f.mount.join("tree"))
        .arg(&back)
        .run()
        .assert_ok();
    diff_r(&src, &back);
    assert_eq!(shelf_leftovers(f.lib()), Vec::<PathBuf>::new());
}

#[test]
fn rsync_a_a_tree_in_keeps_times_and_a_second_run_copies_nothing() {
    require_tool("rsync", "rsync");
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    let src = local.path().join("tree");
    make_tree(&src);
    // Times in the past, so a preserved time cannot be confused with "now".
    cmd("find")
        .arg(&src)
        .args([
            "-exec",
            "touch",
            "-h",
            "-d",
            "2010-05-06 07:08:09.5",
            "{}",
            "+",
        ])
        .run()
        .assert_ok();

    let dst = f.mount.join("r");
    cmd("rsync")
        .arg("-a")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .run()
        .assert_ok();
    diff_r(&src, &f.lib().join("r"));
    diff_r(&src, &dst);
    assert_eq!(tree_listing(&dst, false), tree_listing(&src, false));
    // rsync sets the times of files (and directories, last); the server must keep them.
    let want = tree_listing(&src, true);
    assert_eq!(
        tree_listing(&f.lib().join("r"), true),
        want,
        "on the server"
    );
    assert_eq!(tree_listing(&dst, true), want, "through the mount");

    let again = cmd("rsync")
        .arg("-ai")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .run();
    again.assert_ok();
    assert_eq!(
        again.stdout_str(),
        "",
        "a second rsync -a found differences in size or time:\n{again}"
    );
    assert_eq!(shelf_leftovers(f.lib()), Vec::<PathBuf>::new());
}

#[test]
fn tar_x_into_the_mount_matches_the_tree() {
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    let src = local.path().join("tree");
    make_tree(&src);
    let tarball = local.path().join("tree.tar");
    cmd("tar")
        .arg("cf")
        .arg(&tarball)
        .arg("-C")
        .arg(local.path())
        .arg("tree")
        .run()
        .assert_ok();

    cmd("tar")
        .arg("xf")
        .arg(&tarball)
        .arg("-C")
        .arg(f.mnt())
        .run()
        .assert_ok();
    diff_r(&src, &f.mount.join("tree"));
    diff_r(&src, &f.lib().join("tree"));
    // tar restores the files' mtimes (whole seconds in a ustar/gnu archive).
    let secs = |p: &Path| stat_c("%Y %s %a", p);
    for rel in ["big.bin", "a/b/c/deep.txt", "empty"] {
        assert_eq!(
            secs(&f.mount.join("tree").join(rel)),
            secs(&src.join(rel)),
            "{rel}"
        );
    }
}

#[test]
fn rm_r_removes_a_tree_made_on_the_server() {
    let f = fixture!();
    make_tree(&f.lib().join("tree"));
    cmd("rm")
        .arg("-r")
        .arg(f.mount.join("tree"))
        .run()
        .assert_ok();
    assert!(!f.lib().join("tree").exists(), "tree still on the server");
    let left: Vec<_> = std::fs::read_dir(f.lib())
        .expect("read library")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left in the library: {left:?}");
    assert!(!f.mount.join("tree").exists());
}

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------

#[test]
fn ls_l_and_stat_show_the_servers_sizes_and_times() {
    let f = fixture!();
    let lib = f.lib();
    write(lib.join("zero"), b"");
    write(lib.join("one"), b"x");
    write(lib.join("page"), ramp(4096));
    write(lib.join("odd.bin"), random_bytes(1, (1 << 20) + 7));
    std::fs::create_dir(lib.join("dir")).expect("mkdir");
    write(lib.join("dir/inner"), b"inner\n");
    std::os::unix::fs::symlink("one", lib.join("link")).expect("symlink");
    std::fs::set_permissions(lib.join("page"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    for (name, when) in [
        ("zero", "1999-12-31 23:59:59.999999999"),
        ("one", "2020-02-29 12:00:00.5"),
        ("page", "1970-01-02 00:00:00"),
        ("odd.bin", "2038-01-19 03:14:08.000000001"),
    ] {
        cmd("touch")
            .arg("-d")
            .arg(when)
            .arg(lib.join(name))
            .run()
            .assert_ok();
    }

    let ls = |dir: &Path| {
        let out = cmd("ls")
            .args(["-ln", "--time-style=full-iso"])
            .arg(dir)
            .run();
        out.assert_ok();
        out.stdout_str()
            .lines()
            .filter(|l| !l.starts_with("total"))
            // The directory's size is the filesystem's business.
            .map(|l| {
                if l.starts_with('d') {
                    let mut w: Vec<&str> = l.split_whitespace().collect();
                    w[4] = "-";
                    w.join(" ")
                } else {
                    l.split_whitespace().collect::<Vec<_>>().join(" ")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        ls(f.mnt()),
        ls(lib),
        "ls -l through the mount vs the server"
    );
    for name in ["zero", "one", "page", "odd.bin", "dir/inner", "link"] {
        let fmt = "%s %y %Y %a %F %h";
        assert_eq!(
            stat_c(fmt, &f.mount.join(name)),
            stat_c(fmt, &lib.join(name)),
            "stat of {name}"
        );
    }
}

#[test]
fn touch_d_sets_nanosecond_times() {
    let f = fixture!();
    let file = f.mount.join("t");
    write(&file, b"keep me");
    cmd("touch")
        .args(["-d", "2001-02-03 04:05:06.123456789"])
        .arg(&file)
        .run()
        .assert_ok();
    let want = "2001-02-03 04:05:06.123456789 +0000";
    assert_eq!(stat_c("%y", &file), want, "mtime through the mount");
    assert_eq!(stat_c("%x", &file), want, "atime through the mount");
    assert_eq!(
        stat_c("%y", &f.lib().join("t")),
        want,
        "mtime on the server"
    );
    assert_eq!(read(&file), b"keep me");

    // A directory, and a new file that touch creates.
    std::fs::create_dir(f.mount.join("d")).expect("mkdir");
    cmd("touch")
        .args(["-d", "1990-01-01 00:00:00.000000007"])
        .arg(f.mount.join("d"))
        .arg(f.mount.join("new"))
        .run()
        .assert_ok();
    for name in ["d", "new"] {
        assert_eq!(
            stat_c("%y", &f.lib().join(name)),
            "1990-01-01 00:00:00.000000007 +0000",
            "{name}"
        );
    }
}

#[test]
fn cp_p_keeps_mtime_and_mode() {
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    for (name, mode, when) in [
        ("private", 0o640, "2005-06-07 08:09:10.111222333"),
        ("script", 0o755, "2012-12-12 12:12:12"),
        ("readonly", 0o444, "1980-01-01 00:00:00.5"),
    ] {
        let p = local.path().join(name);
        write(&p, random_bytes(mode as u64, 10_000));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        cmd("touch").arg("-d").arg(when).arg(&p).run().assert_ok();
        cmd("cp").arg("-p").arg(&p).arg(f.mnt()).run().assert_ok();
        let fmt = "%a %y %s";
        let want = stat_c(fmt, &p);
        assert_eq!(
            stat_c(fmt, &f.mount.join(name)),
            want,
            "{name} through the mount"
        );
        assert_eq!(
            stat_c(fmt, &f.lib().join(name)),
            want,
            "{name} on the server"
        );
        assert_eq!(read(f.lib().join(name)), read(&p), "{name} content");
    }
}

#[test]
fn df_shows_the_server_filesystem() {
    let f = fixture!();
    let out = cmd("df")
        .args(["-B1", "--output=size,avail"])
        .arg(f.mnt())
        .run();
    out.assert_ok();
    let text = out.stdout_str();
    let nums: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .map(|n| n.parse().expect("df prints numbers"))
        .collect();
    assert_eq!(nums.len(), 2, "{out}");
    let (size, avail) = (nums[0], nums[1]);

    let server = stat_c_fs("%S %b %a", f.lib());
    let s: Vec<u64> = server
        .split(' ')
        .map(|n| n.parse().expect("stat -f numbers"))
        .collect();
    let (want_size, want_avail) = (s[0] * s[1], s[0] * s[2]);
    let close = |a: u64, b: u64, slack: u64| a.abs_diff(b) <= slack;
    assert!(
        close(size, want_size, want_size / 100),
        "df size {size} vs the library's {want_size}"
    );
    // Other tests write meanwhile.
    assert!(
        close(avail, want_avail, (want_avail / 20).max(1 << 30)),
        "df avail {avail} vs the library's {want_avail}"
    );
}

/// The kernel reads ahead 1 MiB on a shelf mount (its default, 128 KiB, cost a sequential
/// reader eight times the READ requests), and a cold sequential read still comes back whole.
#[test]
fn the_kernel_reads_ahead_a_mebibyte_and_sequential_reads_are_whole() {
    let f = fixture!();
    let info = f.mount.info();
    let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", info.major, info.minor);
    // The mount shows in mountinfo as soon as mount(2) returns, before the mount process has
    // answered the kernel's INIT and widened the read-ahead (a CI run read 128 in that gap).
    let mut kib = String::new();
    let widened = poll(Duration::from_secs(3), || {
        kib = std::fs::read_to_string(&knob).unwrap_or_else(|e| panic!("{knob}: {e}"));
        (kib.trim() == "1024").then_some(())
    });
    assert!(widened.is_some(), "{knob}: {kib}\n{}", f.logs());
    let data = random_bytes(7, 5 << 20);
    std::fs::write(f.lib().join("seq"), &data).expect("write seq");
    assert_bytes_eq(&read(f.mnt().join("seq")), &data, "sequential read");
}

// A `stat -f` helper in one place: `stat -f -c` on the library directory.
fn stat_c_fs(format: &str, path: &Path) -> String {
    let out = cmd("stat").arg("-f").arg("-c").arg(format).arg(path).run();
    out.assert_ok();
    out.stdout_str().trim_end().to_string()
}

#[test]
fn statfs_block_counts_match_the_server() {
    let f = fixture!();
    let server = stat_c_fs("%S %b %c", f.lib());
    let mount = stat_c_fs("%S %b %c", f.mnt());
    let parse = |s: &str| -> Vec<u64> { s.split(' ').map(|n| n.parse().expect("num")).collect() };
    let (s, m) = (parse(&server), parse(&mount));
    assert_eq!(
        s[0] * s[1],
        m[0] * m[1],
        "total bytes: server {server}, mount {mount}"
    );
    assert_eq!(s[2], m[2], "total inodes: server {server}, mount {mount}");
}

// ---------------------------------------------------------------------------------------------
// Renames
// ---------------------------------------------------------------------------------------------

#[test]
fn mv_files_and_directories_inside_the_mount() {
    let f = fixture!();
    let m = |p: &str| f.mount.join(p);
    std::fs::create_dir_all(m("d1/sub")).expect("mkdir -p");
    write(m("d1/sub/f2"), b"two");
    write(m("f3"), ramp(300_000));

    cmd("mv")
        .arg(m("f3"))
        .arg(m("d1/f3moved"))
        .run()
        .assert_ok();
    cmd("mv").arg(m("d1")).arg(m("d2")).run().assert_ok();
    assert!(!f.lib().join("d1").exists() && !f.lib().join("f3").exists());
    assert_eq!(read(f.lib().join("d2/f3moved")), ramp(300_000));
    assert_eq!(read(f.lib().join("d2/sub/f2")), b"two");
    assert_eq!(read(m("d2/sub/f2")), b"two");

    // The moved names keep working for writes (the client follows the rename).
    let mut fh = OpenOptions::new()
        .append(true)
        .open(m("d2/sub/f2"))
        .expect("open moved file");
    fh.write_all(b"-more").expect("append");
    drop(fh);
    assert_eq!(read(f.lib().join("d2/sub/f2")), b"two-more");

    // A directory into another directory, and back out under a new name.
    std::fs::create_dir(m("d3")).expect("mkdir");
    cmd("mv").arg(m("d2/sub")).arg(m("d3/")).run().assert_ok();
    cmd("mv").arg(m("d3/sub")).arg(m("top")).run().assert_ok();
    assert_eq!(read(f.lib().join("top/f2")), b"two-more");
    assert_eq!(read(m("top/f2")), b"two-more");
    assert!(!m("d2/sub").exists() && !m("d3/sub").exists());
}

#[test]
fn rename_over_an_existing_file_is_atomic() {
    let f = fixture!();
    let target = f.mount.join("target");
    let version = |i: u64| random_bytes(100 + i, 50_000 + 1000 * i as usize);
    write(&target, version(0));
    let mut old = File::open(&target).expect("open the first version");

    // A reader sees one whole version at every moment, never a missing name or a mix.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let target = target.clone();
        let versions: Vec<Vec<u8>> = (0..=20).map(version).collect();
        std::thread::spawn(move || -> Result<usize, String> {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let got = std::fs::read(&target).map_err(|e| format!("read: {e}"))?;
                if !versions.contains(&got) {
                    return Err(format!("read {} bytes matching no version", got.len()));
                }
                reads += 1;
            }
            Ok(reads)
        })
    };
    for i in 1..=20 {
        let tmp = f.mount.join(format!("tmp{i}"));
        write(&tmp, version(i));
        cmd("mv").arg(&tmp).arg(&target).run().assert_ok();
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader thread");
    assert!(reads.is_ok(), "reader: {reads:?}\n{}", f.logs());

    assert_eq!(read(&target), version(20));
    assert_eq!(read(f.lib().join("target")), version(20));
    // The handle opened on the first version still reads it whole.
    let first = read_all(&mut old).expect("read replaced file through its open handle");
    assert_bytes_eq(&first, &version(0), "replaced file via its open fd");
    drop(old);
    let left = poll(Duration::from_secs(3), || {
        let l = shelf_leftovers(f.lib());
        l.is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "hidden names of replaced files outlive their last close: {:?}",
        shelf_leftovers(f.lib())
    );
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

#[test]
fn append_with_shell_redirection() {
    let f = fixture!();
    let log = f.mount.join("log");
    let mut want = Vec::new();
    for i in 0..6 {
        let out = cmd("sh")
            .arg("-c")
            .arg(format!("printf 'line %d\\n' {i} >> \"$0\""))
            .arg(&log)
            .run();
        out.assert_ok();
        want.extend_from_slice(format!("line {i}\n").as_bytes());
        assert_eq!(read(&log), want, "after append {i}, through the mount");
        assert_eq!(
            read(f.lib().join("log")),
            want,
            "after append {i}, on the server"
        );
    }
    // A bigger append that spans chunk boundaries.
    let local = tempfile::tempdir().expect("temp");
    let chunk = random_bytes(42, (2 << 20) + 333);
    write(local.path().join("blob"), &chunk);
    cmd("sh")
        .arg("-c")
        .arg("cat \"$0\" >> \"$1\"")
        .arg(local.path().join("blob"))
        .arg(&log)
        .run()
        .assert_ok();
    want.extend_from_slice(&chunk);
    assert_bytes_eq(&read(f.lib().join("log")), &want, "server after big append");
    assert_bytes_eq(&read(&log), &want, "mount after big append");
}

#[test]
fn truncate_s_grows_and_shrinks() {
    let f = fixture!();
    let p = f.mount.join("t");
    let base = ramp(100_000);
    write(&p, &base);
    let check = |want: &[u8], what: &str| {
        assert_eq!(
            std::fs::metadata(&p).expect("stat").len(),
            want.len() as u64,
            "{what}"
        );
        assert_bytes_eq(&read(&p), want, &format!("{what}, through the mount"));
        assert_bytes_eq(
            &read(f.lib().join("t")),
            want,
            &format!("{what}, on the server"),
        );
    };
    cmd("truncate")
        .args(["-s", "3000000"])
        .arg(&p)
        .run()
        .assert_ok();
    let mut want = base.clone();
    want.resize(3_000_000, 0);
    check(&want, "grown");
    cmd("truncate")
        .args(["-s", "4097"])
        .arg(&p)
        .run()
        .assert_ok();
    check(&base[..4097], "shrunk");
    cmd("truncate").args(["-s", "0"]).arg(&p).run().assert_ok();
    check(b"", "emptied");
    cmd("truncate")
        .args(["-s", "10K"])
        .arg(&p)
        .run()
        .assert_ok();
    check(&[0; 10240], "regrown");
}

#[test]
fn random_pwrite_and_pread_match_a_local_copy() {
    let f = fixture!();
    let p = f.mount.join("rw.bin");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .expect("open for read and write");
    let mut model: Vec<u8> = Vec::new();
    let mut rng = Rng::new(2024);
    const MAX: u64 = 3 << 20;
    for step in 0..300 {
        let off = rng.below(MAX);
        let span = if rng.below(4) == 0 { 400_000 } else { 5000 };
        let len = 1 + rng.below(span) as usize;
        match rng.below(10) {
            0..=4 => {
                let data = rng.bytes(len);
                file.write_all_at(&data, off).expect("pwrite");
                let end = off as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            5 => {
                // Occasionally resize the open file too.
                let size = rng.below(MAX);
                file.set_len(size).expect("ftruncate");
                model.resize(size as usize, 0);
            }
            _ => {
                let mut buf = vec![0; len];
                let mut got = 0;
                while got < len {
                    let n = file
                        .read_at(&mut buf[got..], off + got as u64)
                        .expect("pread");
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                let start = (off as usize).min(model.len());
                let end = (off as usize + len).min(model.len());
                assert_bytes_eq(
                    &buf[..got],
                    &model[start..end],
                    &format!(
                        "step {step}: pread {len} at {off} (file size {})",
                        model.len()
                    ),
                );
            }
        }
    }
    assert_eq!(file.metadata().expect("fstat").len(), model.len() as u64);
    drop(file);
    assert_bytes_eq(
        &read(f.lib().join("rw.bin")),
        &model,
        "server copy after close",
    );
    assert_bytes_eq(&read(&p), &model, "reread through the mount");
}

#[test]
fn a_closed_file_is_on_the_server_byte_exact() {
    let f = fixture!();
    for (i, len) in [0usize, 1, 4095, 4096, 1 << 20, (2 << 20) + 12345]
        .into_iter()
        .enumerate()
    {
        let data = random_bytes(i as u64, len);
        let name = format!("f{i}");
        let mut fh = File::create(f.mount.join(&name)).expect("create");
        fh.write_all(&data).expect("write");
        drop(fh); // close() returned: the bytes must be on the server now, no waiting.
        assert_bytes_eq(
            &read(f.lib().join(&name)),
            &data,
            &format!("{name} ({len} bytes)"),
        );
    }
    // fsync means on the server too, before close.
    let data = random_bytes(99, 700_000);
    let mut fh = File::create(f.mount.join("synced")).expect("create");
    fh.write_all(&data).expect("write");
    fh.sync_all().expect("fsync");
    assert_bytes_eq(
        &read(f.lib().join("synced")),
        &data,
        "after fsync, before close",
    );
}

#[test]
fn a_sparse_5_gib_file_written_past_4_gib() {
    let f = fixture!();
    let p = f.mount.join("big");
    cmd("truncate").args(["-s", "5G"]).arg(&p).run().assert_ok();
    let at = 4608u64 << 20; // 4.5 GiB
    let data = random_bytes(5, 1 << 20);
    let fh = OpenOptions::new().write(true).open(&p).expect("open");
    fh.write_all_at(&data, at).expect("pwrite at 4.5 GiB");
    drop(fh);

    assert_eq!(std::fs::metadata(&p).expect("stat").len(), 5 << 30);
    let fh = File::open(&p).expect("open for reading");
    let mut buf = vec![0; 1 << 20];
    fh.read_exact_at(&mut buf, at).expect("pread at 4.5 GiB");
    assert_bytes_eq(&buf, &data, "1 MiB at 4.5 GiB through the mount");
    let mut edge = vec![1; 8192];
    fh.read_exact_at(&mut edge, at - 4096)
        .expect("pread across the start");
    assert_eq!(&edge[..4096], &[0; 4096][..], "hole before the data");
    assert_eq!(&edge[4096..], &data[..4096]);
    let mut hole = vec![1; 4096];
    fh.read_exact_at(&mut hole, 1 << 30)
        .expect("pread in the hole");
    assert!(hole.iter().all(|b| *b == 0), "a hole reads as zeros");
    let mut tail = vec![1; 10];
    let n = fh
        .read_at(&mut tail, (5 << 30) - 4)
        .expect("pread at the end");
    assert_eq!(n, 4, "a read at the end returns what is left");

    let server = File::open(f.lib().join("big")).expect("open on the server");
    assert_eq!(server.metadata().expect("stat").len(), 5 << 30);
    server.read_exact_at(&mut buf, at).expect("server read");
    assert_bytes_eq(&buf, &data, "1 MiB at 4.5 GiB on the server");
    let du = cmd("du").arg("-k").arg(f.lib().join("big")).run();
    du.assert_ok();
    let kib: u64 = du
        .stdout_str()
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a number");
    assert!(
        kib < 64 * 1024,
        "the server file is not sparse: du says {kib} KiB"
    );
}

// ---------------------------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------------------------

#[test]
fn ln_s_and_ln_make_symbolic_and_hard_links() {
    let f = fixture!();
    let m = |p: &str| f.mount.join(p);
    write(m("a"), b"alpha\n");
    cmd("ln").args(["-s", "a"]).arg(m("sym")).run().assert_ok();
    assert_eq!(
        std::fs::read_link(f.lib().join("sym")).expect("readlink on the server"),
        Path::new("a")
    );
    assert_eq!(
        std::fs::read_link(m("sym")).expect("readlink"),
        Path::new("a")
    );
    assert_eq!(read(m("sym")), b"alpha\n", "reading through the symlink");
    assert_eq!(stat_c("%F", &m("sym")), "symbolic link");

    cmd("ln").arg(m("a")).arg(m("hard")).run().assert_ok();
    assert_eq!(stat_c("%h", &m("hard")), "2", "nlink of the new name");
    // The first name's cached attributes may lag by one TTL (each name is its own node in
    // the client, core/src/inode.rs), but no longer.
    let mut nlink = String::new();
    let fresh = poll(Duration::from_secs(3), || {
        nlink = stat_c("%h", &m("a"));
        (nlink == "2").then_some(())
    });
    assert!(
        fresh.is_some(),
        "nlink of the first name stays {nlink} after `ln`"
    );
    let (la, lh) = (
        std::fs::metadata(f.lib().join("a")).expect("stat"),
        std::fs::metadata(f.lib().join("hard")).expect("stat"),
    );
    assert_eq!(la.ino(), lh.ino(), "one inode on the server");
    assert_eq!(read(m("hard")), b"alpha\n");

    // A write through one name shows through the other (within the attribute TTL: each
    // name has its own node in the client, see core/src/inode.rs).
    let mut fh = OpenOptions::new()
        .append(true)
        .open(m("hard"))
        .expect("open");
    fh.write_all(b"beta\n").expect("append");
    drop(fh);
    let seen = poll(Duration::from_secs(3), || {
        (read(m("a")) == b"alpha\nbeta\n").then_some(())
    });
    assert!(
        seen.is_some(),
        "the other name still reads {:?}",
        read(m("a"))
    );
    assert_eq!(read(f.lib().join("a")), b"alpha\nbeta\n");
}

#[test]
fn inode_numbers_are_the_servers_and_a_replaced_file_gets_its_own() {
    let f = fixture!();
    let m = |p: &str| f.mount.join(p);
    let ino = |p: &Path| std::fs::symlink_metadata(p).expect("stat").ino();
    std::fs::create_dir(f.lib().join("d")).expect("mkdir on the server");
    write(f.lib().join("d/a"), b"a");
    write(m("d/b"), b"b");
    std::fs::hard_link(f.lib().join("d/a"), f.lib().join("d/a2")).expect("ln on the server");
    for name in ["d", "d/a", "d/b", "d/a2"] {
        assert_eq!(ino(&m(name)), ino(&f.lib().join(name)), "st_ino of {name}");
    }
    // `ls -i` (readdir's d_ino) says the same numbers.
    let listed = cmd("ls").arg("-1i").arg(m("d")).run();
    listed.assert_ok();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    for name in ["a", "b", "a2"] {
        let want = format!("{} {name}", ino(&f.lib().join("d").join(name)));
        assert!(
            listed.lines().any(|l| l.trim() == want),
            "{want:?} not in ls -i:\n{listed}"
        );
    }
    // A file replaced under its name (a new server file) never shows the old one's number.
    let before = ino(&m("d/b"));
    write(m("d/b.new"), b"new b");
    std::fs::rename(m("d/b.new"), m("d/b")).expect("rename over");
    let after = ino(&m("d/b"));
    assert_ne!(after, before, "the replaced file's number");
    assert_eq!(read(m("d/b")), b"new b");
    assert_eq!(
        after,
        ino(&f.lib().join("d/b")),
        "the new file's server number"
    );
}

// ---------------------------------------------------------------------------------------------
// Open files and unlink
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unlinked_open_file_stays_readable() {
    let f = fixture!();
    let data = random_bytes(8, 300_000);
    write(f.mount.join("doomed"), &data);
    let mut fh = File::open(f.mount.join("doomed")).expect("open");
    let mut rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.mount.join("doomed"))
        .expect("open rw");
    cmd("rm").arg(f.mount.join("doomed")).run().assert_ok();
    assert!(!f.mount.join("doomed").exists(), "name still there");
    let listed: Vec<_> = std::fs::read_dir(f.mnt())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(listed.is_empty(), "the mount lists {listed:?}");

    let got = read_all(&mut fh).expect("read the unlinked file");
    assert_bytes_eq(&got, &data, "unlinked file through its fd");
    // Still writable through its handle, too.
    rw.write_all_at(b"XYZ", 10)
        .expect("write to the unlinked file");
    let mut back = [0; 3];
    rw.read_exact_at(&mut back, 10).expect("read back");
    assert_eq!(&back, b"XYZ");
    rw.flush().expect("flush");
    drop(fh);
    drop(rw);
    let gone = poll(Duration::from_secs(3), || {
        let left: Vec<_> = std::fs::read_dir(f.lib())
            .expect("read library")
            .map(|e| e.expect("entry").file_name())
            .collect();
        let only_hidden_dir = left.iter().all(|n| n == ".shelf-hidden");
        (only_hidden_dir && shelf_leftovers(f.lib()).is_empty()).then_some(())
    });
    assert!(
        gone.is_some(),
        "after the last close the library still holds {:?}",
        std::fs::read_dir(f.lib())
            .expect("read library")
            .map(|e| e.expect("entry").file_name())
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Errors as tools show them
// ---------------------------------------------------------------------------------------------

#[test]
fn errors_read_as_the_usual_messages() {
    let f = fixture!();
    let m = |p: &str| f.mount.join(p);
    cmd("ls")
        .arg(m("nope"))
        .run()
        .assert_fail()
        .assert_stderr_contains("No such file or directory");
    std::fs::create_dir(m("d")).expect("mkdir");
    write(m("d/x"), b"x");
    cmd("rmdir")
        .arg(m("d"))
        .run()
        .assert_fail()
        .assert_stderr_contains("Directory not empty");
    cmd("mkdir")
        .arg(m("d"))
        .run()
        .assert_fail()
        .assert_stderr_contains("File exists");
    cmd("cat")
        .arg(m("d"))
        .run()
        .assert_fail()
        .assert_stderr_contains("Is a directory");
    cmd("ls")
        .arg(m("d/x/y"))
        .run()
        .assert_fail()
        .assert_stderr_contains("Not a directory");
    let long = "n".repeat(256);
    cmd("touch")
        .arg(m(&long))
        .run()
        .assert_fail()
        .assert_stderr_contains("File name too long");
    // The failed calls changed nothing.
    assert_eq!(read(f.lib().join("d/x")), b"x");
}

#[test]
fn a_read_only_server_refuses_changes() {
    let f = fixture!(&["--read-only"], &[]);
    write(f.lib().join("keep"), b"keep");
    let m = |p: &str| f.mount.join(p);
    assert_eq!(read(m("keep")), b"keep");
    cmd("touch")
        .arg(m("new"))
        .run()
        .assert_fail()
        .assert_stderr_contains("Read-only file system");
    cmd("rm")
        .arg("-f")
        .arg(m("keep"))
        .run()
        .assert_fail()
        .assert_stderr_contains("Read-only file system");
    assert_eq!(read(f.lib().join("keep")), b"keep");
}

// ---------------------------------------------------------------------------------------------
// Seeing other clients' changes
// ---------------------------------------------------------------------------------------------

/// Polls a file through a mount until it reads `want` (3 s: the TTL is 1 s).
#[track_caller]
fn eventually_reads(path: &Path, want: &[u8], what: &str) {
    let mut last = None;
    let ok = poll(Duration::from_secs(3), || {
        let got = std::fs::read(path);
        let done = got.as_deref().ok() == Some(want);
        last = Some(got.map(|g| String::from_utf8_lossy(&g).into_owned()));
        done.then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: {} never read {:?} within 3 s; last read: {last:?}",
        path.display(),
        String::from_utf8_lossy(want)
    );
}

#[track_caller]
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let ok = poll(Duration::from_secs(3), || f().then_some(()));
    assert!(ok.is_some(), "{what} did not happen within 3 s");
}

#[test]
fn a_change_made_on_the_server_shows_within_the_ttl() {
    let f = fixture!(&[], &["--attr-ttl", "1s"]);
    let lib = |p: &str| f.lib().join(p);
    let m = |p: &str| f.mount.join(p);
    write(lib("f"), b"version one");
    assert_eq!(read(m("f")), b"version one");
    write(lib("f"), b"version two, longer");
    eventually_reads(&m("f"), b"version two, longer", "a longer rewrite");
    // The same length: only the version (mtime, ctime) tells.
    std::thread::sleep(Duration::from_millis(20));
    write(lib("f"), b"VERSION TWO, LONGER");
    eventually_reads(&m("f"), b"VERSION TWO, LONGER", "a same-length rewrite");

    // New names appear and removed names go, even after a negative lookup.
    assert!(!m("later").exists());
    write(lib("later"), b"now here");
    eventually_reads(&m("later"), b"now here", "a new file");
    std::fs::remove_file(lib("later")).expect("rm");
    eventually("the removed file disappearing", || !m("later").exists());
    std::fs::create_dir(lib("newdir")).expect("mkdir");
    eventually("a new directory in the listing", || {
        std::fs::read_dir(f.mnt())
            .map(|rd| rd.flatten().any(|e| e.file_name() == "newdir"))
            .unwrap_or(false)
    });
}

#[test]
fn two_mounts_of_one_server_see_each_others_changes() {
    let f = fixture!(&[], &["--attr-ttl", "1s"]);
    let other = Mount::new(f.server.addr(), &["--attr-ttl", "1s"]);
    let a = |p: &str| f.mount.join(p);
    let b = |p: &str| other.join(p);

    write(a("shared"), b"from a");
    eventually_reads(&b("shared"), b"from a", "A's new file in B");
    let mut fh = OpenOptions::new()
        .append(true)
        .open(b("shared"))
        .expect("open in B");
    fh.write_all(b", then b").expect("append in B");
    drop(fh);
    eventually_reads(&a("shared"), b"from a, then b", "B's append in A");
    // A rewrite to the same length through A.
    write(a("shared"), b"FROM A, THEN B");
    eventually_reads(
        &b("shared"),
        b"FROM A, THEN B",
        "A's same-length rewrite in B",
    );

    std::fs::create_dir(a("dir")).expect("mkdir in A");
    eventually("A's directory in B", || b("dir").is_dir());
    cmd("mv")
        .arg(b("shared"))
        .arg(b("dir/moved"))
        .run()
        .assert_ok();
    eventually_reads(&a("dir/moved"), b"FROM A, THEN B", "B's rename in A");
    eventually("the old name gone in A", || !a("shared").exists());
    std::fs::remove_file(b("dir/moved")).expect("rm in B");
    eventually("B's removal in A", || !a("dir/moved").exists());
}

#[test]
fn mv_between_two_mounts_copies_across() {
    let f1 = fixture!();
    let f2 = fixture!();
    let local = tempfile::tempdir().expect("temp");
    make_tree(&local.path().join("tree"));
    cmd("cp")
        .arg("-r")
        .arg(local.path().join("tree"))
        .arg(f1.mnt())
        .run()
        .assert_ok();
    write(f1.mount.join("single"), ramp(123_456));

    // rename(2) across mounts is EXDEV; mv then copies and deletes.
    cmd("mv")
        .arg(f1.mount.join("single"))
        .arg(f2.mount.join("single"))
        .run()
        .assert_ok();
    cmd("mv")
        .arg(f1.mount.join("tree"))
        .arg(f2.mount.join("tree"))
        .run()
        .assert_ok();
    assert_eq!(read(f2.lib().join("single")), ramp(123_456));
    diff_r(&local.path().join("tree"), &f2.lib().join("tree"));
    assert!(!f1.lib().join("single").exists() && !f1.lib().join("tree").exists());
}

// ---------------------------------------------------------------------------------------------
// A server that dies and comes back
// ---------------------------------------------------------------------------------------------

#[test]
fn a_killed_server_fails_calls_quickly_and_a_restart_heals_the_mount() {
    let _heavy = heavy();
    let mut f = fixture!();
    write(f.mount.join("before"), b"written before the crash");
    write(f.lib().join("unseen"), b"never looked up");

    f.server.kill9();
    // A name the client has never seen must go to the server, which is gone.
    let out = cmd("stat")
        .arg(f.mount.join("unseen"))
        .timeout(Duration::from_secs(40))
        .run();
    assert!(
        out.status.is_some(),
        "stat hung with the server dead\n{out}\n{}",
        f.logs()
    );
    assert!(!out.success(), "stat succeeded with the server dead\n{out}");
    assert!(
        out.elapsed < Duration::from_secs(20),
        "stat took {:.1?} to fail with the server dead\n{out}",
        out.elapsed
    );
    eprintln!("with the server dead:\n{out}");
    let out = cmd("cat")
        .arg(f.mount.join("before"))
        .timeout(Duration::from_secs(40))
        .run();
    assert!(
        out.status.is_some() && out.elapsed < Duration::from_secs(20),
        "cat with the server dead: {out}"
    );

    let started = Instant::now();
    f.server.restart();
    let back = poll(Duration::from_secs(15), || {
        cmd("cat")
            .arg(f.mount.join("unseen"))
            .timeout(Duration::from_secs(10))
            .run()
            .success()
            .then_some(())
    });
    assert!(
        back.is_some(),
        "the mount did not recover within 15 s of the restart\n{}",
        f.logs()
    );
    eprintln!("recovered {:.1?} after the restart", started.elapsed());
    assert!(f.mount.is_mounted());
    assert_eq!(read(f.mount.join("before")), b"written before the crash");
    assert_eq!(read(f.mount.join("unseen")), b"never looked up");
    write(f.mount.join("after"), b"written after the restart");
    assert_eq!(read(f.lib().join("after")), b"written after the restart");
    let st = std::fs::metadata(f.mount.join("after")).expect("stat after restart");
    assert_eq!(st.len(), 25);
}

/// The harness's last line of defence: a server that stops answering (SIGSTOP, so its
/// connections stay open) must not hang the test run; the watchdog aborts the connection and
/// the hung call fails (ECONNABORTED).
#[test]
fn the_watchdog_unhangs_a_mount_whose_server_froze() {
    if !fuse_available() {
        return;
    }
    let _heavy = heavy();
    let lib = library();
    write(lib.path().join("f"), b"f");
    let server = Server::plain(lib.path());
    let mount = Mount::try_new_with_watchdog(server.addr(), &[] as &[&str], Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(mount.join("f")), b"f");
    let pgid = server.pid().expect("running") as i32;
    signal(-pgid, libc::SIGSTOP);
    let out = cmd("stat")
        .arg(mount.join("never-seen"))
        .timeout(Duration::from_secs(30))
        .run();
    signal(-pgid, libc::SIGCONT);
    assert!(
        out.status.is_some(),
        "stat still hung after the watchdog\n{out}"
    );
    assert!(!out.success(), "{out}");
    // Sooner than the client's own request timeout: the watchdog did it.
    assert!(out.elapsed < Duration::from_secs(10), "{out}");
    // ECONNABORTED for the call in flight, ENOTCONN for later ones.
    let err = out.stderr_str();
    assert!(
        err.contains("connection abort") || err.contains("not connected"),
        "{out}"
    );
    eprintln!("with the server frozen:\n{out}");
}

#[test]
fn mounting_a_dead_address_fails_clearly_and_leaves_no_mount() {
    if !fuse_available() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    for foreground in [true, false] {
        let dir = MountDir::new();
        let mut c = shelf()
            .arg("mount")
            .arg(&addr)
            .arg(dir.path())
            .timeout(Duration::from_secs(40));
        if foreground {
            c = c.arg("--foreground");
        }
        let out = c.run();
        out.assert_fail();
        assert!(
            out.elapsed < Duration::from_secs(30),
            "took {:.1?}\n{out}",
            out.elapsed
        );
        let err = out.stderr_str();
        assert!(
            err.contains(&addr) && (err.contains("refused") || err.contains("connect")),
            "the message should name the address and the failure\n{out}"
        );
        assert!(
            mount_at(dir.path()).is_none(),
            "a mount was left behind\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Unmounting and detaching
// ---------------------------------------------------------------------------------------------

#[test]
fn shelf_umount_unmounts_and_the_mount_process_exits_0() {
    let mut f = fixture!();
    shelf()
        .arg("umount")
        .arg(f.mnt())
        .timeout(Duration::from_secs(20))
        .run()
        .assert_ok();
    assert!(!f.mount.is_mounted(), "still in mountinfo");
    let status = f.mount.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "shelf mount ended with {status:?}\n{}",
        f.mount.log()
    );
}

#[test]
fn shelf_umount_of_a_busy_mount_falls_back_to_lazy() {
    let mut f = fixture!();
    write(f.mount.join("held"), b"held open");
    let held = File::open(f.mount.join("held")).expect("open");
    let out = shelf()
        .arg("umount")
        .arg(f.mnt())
        .timeout(Duration::from_secs(20))
        .run();
    out.assert_ok();
    assert!(!f.mount.is_mounted(), "still in mountinfo\n{out}");
    // The open file still works until closed; then the session ends.
    assert_eq!(read_all(&held).expect("read the held file"), b"held open");
    drop(held);
    let status = f.mount.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "shelf mount ended with {status:?}\n{}",
        f.mount.log()
    );
}

#[test]
fn sigterm_to_a_foreground_mount_unmounts_cleanly() {
    let mut f = fixture!();
    write(f.mount.join("x"), b"x");
    f.mount.signal(libc::SIGTERM);
    let status = f.mount.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "shelf mount ended with {status:?}\n{}",
        f.mount.log()
    );
    assert!(!f.mount.is_mounted(), "the mountinfo line is still there");
    assert_eq!(read(f.lib().join("x")), b"x");
}

/// A detaching mount command that timed out although the mount is up did not return: say so.
#[track_caller]
fn explain_a_hang_after_mounting(out: &Output, dir: &Path) {
    assert!(
        out.status.is_some() || mount_at(dir).is_none(),
        "the mount came up, but the detaching command never returned\n{out}"
    );
}

#[test]
fn detached_mount_returns_once_the_mount_answers() {
    if !fuse_available() {
        return;
    }
    let lib = library();
    write(lib.path().join("hello"), b"hello");
    let server = Server::plain(lib.path());
    let dir = MountDir::new();
    let out = shelf()
        .arg("mount")
        .arg(server.addr().to_string())
        .arg(dir.path())
        .timeout(Duration::from_secs(20))
        .run();
    explain_a_hang_after_mounting(&out, dir.path());
    out.assert_ok();
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:.1?}",
        out.elapsed
    );
    // No waiting: the mount must answer when `shelf mount` returns.
    let ls = cmd("ls")
        .arg(dir.path())
        .timeout(Duration::from_secs(20))
        .run();
    ls.assert_ok();
    assert_eq!(ls.stdout_str(), "hello\n");
    shelf()
        .arg("umount")
        .arg(dir.path())
        .timeout(Duration::from_secs(20))
        .run()
        .assert_ok();
    assert!(
        mount_at(dir.path()).is_none(),
        "still mounted after shelf umount"
    );
}

/// Creates `/sbin/mount.fuse.shelf -> shelf` for a test unless it exists; removes only what
/// it created.
struct HelperLink {
    created: Option<PathBuf>,
}

impl HelperLink {
    fn install() -> HelperLink {
        let link = PathBuf::from("/sbin/mount.fuse.shelf");
        if std::fs::symlink_metadata(&link).is_ok() {
            return HelperLink { created: None };
        }
        std::os::unix::fs::symlink(shelf_bin(), &link)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", link.display()));
        HelperLink {
            created: Some(link),
        }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        if let Some(link) = self.created.take() {
            let _ = std::fs::remove_file(link);
        }
    }
}

#[test]
fn mount_t_fuse_shelf_works_through_the_helper() {
    if !fuse_available() {
        return;
    }
    let _heavy = heavy();
    let _link = HelperLink::install();
    let lib = library();
    write(lib.path().join("hello"), b"hello");
    let server = Server::plain(lib.path());
    let dir = MountDir::new();
    let out = cmd("mount")
        .args(["-t", "fuse.shelf"])
        .arg(server.addr().to_string())
        .arg(dir.path())
        .timeout(Duration::from_secs(20))
        .run();
    explain_a_hang_after_mounting(&out, dir.path());
    out.assert_ok();
    let ls = cmd("ls")
        .arg(dir.path())
        .timeout(Duration::from_secs(20))
        .run();
    ls.assert_ok();
    assert_eq!(ls.stdout_str(), "hello\n");
    cmd("umount")
        .arg(dir.path())
        .timeout(Duration::from_secs(20))
        .run()
        .assert_ok();
    assert!(mount_at(dir.path()).is_none());
}

#[test]
fn the_mount_shows_as_type_fuse_shelf() {
    let f = fixture!();
    let info = f.mount.info();
    assert_eq!(
        info.fstype, "fuse.shelf",
        "mountinfo type (source {:?}); `findmnt -t fuse.shelf`, `umount -t fuse.shelf` and \
         `df -t fuse.shelf` rely on it",
        info.source
    );
    assert_eq!(info.source, format!("shelf#{}", f.server.addr()));
}

#[test]
fn non_utf8_names_round_trip() {
    let f = fixture!();
    let name = OsStr::from_bytes(b"\xff\xfe-latin1-\xe9");
    write(f.mount.join(name), b"bytes");
    assert_eq!(read(f.lib().join(name)), b"bytes");
    let listed: Vec<_> = std::fs::read_dir(f.mnt())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(listed, vec![name.to_os_string()]);
}
