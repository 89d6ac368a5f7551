//! Real programs on a real mount: git, sqlite3, cp -a, rsync -a, find, du, grep, tar, fsx, and an
//! editor's save-by-rename, each checked against the library directory or a local copy.
//!
//! These are the programs that lean hardest on POSIX details the everyday tests in
//! `mount.rs` do not reach: git's lock files, hard links and renames of its index; sqlite's
//! journal (created, fsynced and deleted per transaction) and byte-range writes; the exact
//! modes and nanosecond times `cp -a` and `rsync -a` restore; and readers racing a writer that
//! replaces a file by rename. Each test has its own library, server and mount, and every
//! command runs with a timeout.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shelf_tests::*;

macro_rules! fixture {
    () => {
        match Fixture::new() {
            Some(f) => f,
            None => return,
        }
    };
}

/// git with an identity and without the machine's config, so any machine gives the same run.
fn git(dir: &Path) -> Cmd {
    tool("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "user.name=Shelf Test",
            "-c",
            "user.email=test@shelf.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "safe.directory=*",
        ])
}

#[track_caller]
fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir).args(args).run();
    out.assert_ok();
    out.stdout_str()
}

/// Writes ~`n` text files in a nested tree under `dir` (20 directories, two levels), each with
/// a few lines, some containing `needle`. Returns the relative paths.
fn text_tree(dir: &Path, n: usize, seed: u64) -> Vec<PathBuf> {
    let mut rng = Rng::new(seed);
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let rel = PathBuf::from(format!("d{:02}/s{}/file-{i:04}.txt", i % 20, i % 3));
        let p = dir.join(&rel);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir -p");
        let lines = 1 + rng.below(40) as usize;
        let mut text = String::new();
        for l in 0..lines {
            let word = rng.next_u64();
            if rng.below(7) == 0 {
                text.push_str(&format!("line {l} has the needle {word:x}\n"));
            } else {
                text.push_str(&format!("line {l} of file {i}: {word:016x}\n"));
            }
        }
        // A few empty files and one bigger file than a chunk.
        if i % 97 == 0 {
            text.clear();
        }
        if i == 1234 {
            text = "needle\n".repeat(300_000);
        }
        write(&p, text);
        files.push(rel);
    }
    files
}

// ---------------------------------------------------------------------------------------------
// git
// ---------------------------------------------------------------------------------------------

#[test]
fn a_cold_git_status_of_a_repository_made_on_the_server_reads_no_file_again() {
    require_tool("git", "git");
    let f = fixture!();
    // Made on the server, as a checkout someone then mounts: git's index holds the server's
    // inode numbers, which the mount shows, so git trusts its index and reads no file.
    let repo = f.lib().join("repo");
    std::fs::create_dir(&repo).expect("mkdir repo");
    git_ok(&repo, &["init", "-q"]);
    let mut total = 0;
    for i in 0..300 {
        let text = format!("file {i}\n").repeat(400);
        total += text.len();
        write(repo.join(format!("f{i:03}.txt")), text);
    }
    git_ok(&repo, &["add", "-A"]);
    git_ok(&repo, &["commit", "-q", "-m", "300 files"]);
    // Files older than the index, so none is "racily clean" (which git rereads anywhere).
    let files: Vec<PathBuf> = (0..300)
        .map(|i| repo.join(format!("f{i:03}.txt")))
        .collect();
    tool("touch")
        .args(["-d", "1 hour ago"])
        .args(&files)
        .run()
        .assert_ok();
    assert_eq!(git_ok(&repo, &["status", "--porcelain"]), "");

    let on_mount = f.mount.join("repo");
    assert_eq!(git_ok(&on_mount, &["status", "--porcelain"]), "");
    let (line, text) = status_line(f.mnt(), "file data:");
    let received: usize = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in\n{text}"));
    assert!(
        received < total / 4,
        "git status read {received} bytes of files holding {total}: it reread them\n{text}"
    );
}

#[test]
fn git_init_commit_clone_both_ways_and_fsck() {
    require_tool("git", "git");
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");

    // A repository made on the mount: 500 files, committed in one go, then a change.
    let repo = f.mount.join("repo");
    std::fs::create_dir(&repo).expect("mkdir repo");
    git_ok(&repo, &["init", "-q"]);
    let files = text_tree(&repo, 500, 11);
    git_ok(&repo, &["add", "-A"]);
    git_ok(&repo, &["commit", "-q", "-m", "500 files"]);
    write(repo.join("d00/s0/file-0000.txt"), "changed\n");
    std::fs::remove_file(repo.join(&files[1])).expect("rm one file");
    git_ok(
        &repo,
        &["commit", "-q", "-a", "-m", "change one, remove one"],
    );
    git_ok(&repo, &["gc", "-q"]);
    git_ok(&repo, &["fsck", "--full", "--strict"]);
    assert_eq!(git_ok(&repo, &["status", "--porcelain"]), "");
    assert_eq!(git_ok(&repo, &["ls-files"]).lines().count(), 499);
    // The server's copy is a repository too.
    git_ok(&f.lib().join("repo"), &["fsck", "--full", "--strict"]);

    // Clone out of the mount, then from that clone back into the mount.
    let out = local.path().join("out");
    git_ok(
        local.path(),
        &[
            "clone",
            "-q",
            "--no-hardlinks",
            repo.to_str().expect("utf-8"),
            "out",
        ],
    );
    git_ok(&out, &["fsck", "--full", "--strict"]);
    assert_eq!(git_ok(&out, &["status", "--porcelain"]), "");
    assert_eq!(
        git_ok(&out, &["rev-parse", "HEAD"]),
        git_ok(&repo, &["rev-parse", "HEAD"])
    );

    git_ok(
        f.mnt(),
        &["clone", "-q", out.to_str().expect("utf-8"), "back"],
    );
    let back = f.mount.join("back");
    git_ok(&back, &["fsck", "--full", "--strict"]);
    assert_eq!(git_ok(&back, &["status", "--porcelain"]), "");
    tool("diff")
        .args(["-r", "-x", ".git"])
        .arg(&out)
        .arg(&back)
        .run()
        .assert_ok();
    // Work in the clone on the mount: branch, commit, merge.
    git_ok(&back, &["checkout", "-q", "-b", "side"]);
    write(back.join("new.txt"), "new\n");
    git_ok(&back, &["add", "new.txt"]);
    git_ok(&back, &["commit", "-q", "-m", "new"]);
    git_ok(&back, &["checkout", "-q", "main"]);
    git_ok(&back, &["merge", "-q", "--ff-only", "side"]);
    git_ok(&back, &["fsck", "--full", "--strict"]);
    assert_eq!(git_ok(&back, &["status", "--porcelain"]), "");
    assert_eq!(shelf_leftovers(f.lib()), Vec::<PathBuf>::new());
}

// ---------------------------------------------------------------------------------------------
// sqlite3
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn sqlite(db: &Path, sql: &str) -> String {
    let out = tool("sqlite3")
        .args(["-batch", "-bail"])
        .arg(db)
        .stdin(sql)
        .timeout(Duration::from_secs(300))
        .run();
    out.assert_ok();
    out.stdout_str()
}

/// The transactions of both sqlite tests, and the rows and sum they leave.
const SQL_WORK: &str = "
create table t(id integer primary key, v text not null, n integer not null);
create index t_n on t(n);
begin;
with recursive c(x) as (select 1 union all select x + 1 from c where x < 10000)
  insert into t select x, printf('row %05d %s', x, hex(randomblob(20))), x from c;
commit;
update t set n = n * 2 where id % 3 = 0;
delete from t where id % 10 = 0;
begin;
delete from t;
insert into t values (-1, 'never', 0);
rollback;
insert into t values (20001, 'one', 1);
insert into t values (20002, 'two', 2);
delete from t where id = 20002;
";

fn sqlite_expected() -> (u64, u64) {
    let mut count = 0;
    let mut sum = 0;
    for x in 1..=10_000u64 {
        if x % 10 == 0 {
            continue;
        }
        count += 1;
        sum += if x % 3 == 0 { 2 * x } else { x };
    }
    (count + 1, sum + 1)
}

fn check_sqlite(db: &Path) {
    let (count, sum) = sqlite_expected();
    let got = sqlite(
        db,
        "pragma integrity_check; select count(*), sum(n) from t; \
         select count(*) from t where id = -1;",
    );
    assert_eq!(
        got,
        format!("ok\n{count}|{sum}\n0\n"),
        "{} after reopening",
        db.display()
    );
}

#[test]
fn sqlite3_transactions_rollback_and_reopen() {
    require_tool("sqlite3", "sqlite3");
    let f = fixture!();
    let db = f.mount.join("db/lib.sqlite");
    std::fs::create_dir(f.mount.join("db")).expect("mkdir");
    sqlite(&db, SQL_WORK);
    // Many small transactions: each makes, fsyncs and deletes a rollback journal.
    let mut small = String::new();
    for i in 0..100 {
        small.push_str(&format!(
            "insert into t values ({}, 'small', 0);\n",
            30_000 + i
        ));
    }
    small.push_str("delete from t where id >= 30000;\n");
    sqlite(&db, &small);
    check_sqlite(&db);
    // The server's file is the same database.
    check_sqlite(&f.lib().join("db/lib.sqlite"));
    let names: BTreeSet<String> = std::fs::read_dir(f.mount.join("db"))
        .expect("list db dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["lib.sqlite".to_string()]),
        "no journal left"
    );
}

#[test]
fn sqlite3_in_wal_mode() {
    require_tool("sqlite3", "sqlite3");
    let f = fixture!();
    let db = f.mount.join("wal.sqlite");
    // WAL needs a shared, writable mmap of the -shm file.
    assert_eq!(sqlite(&db, "pragma journal_mode=wal;"), "wal\n");
    sqlite(&db, SQL_WORK);
    check_sqlite(&db);
    assert_eq!(sqlite(&db, "pragma journal_mode;"), "wal\n");
    // A checkpoint folds the log into the database; then the server's copy reads alone.
    sqlite(&db, "pragma wal_checkpoint(truncate);");
    check_sqlite(&db);
    let lib_copy = tempfile::tempdir().expect("temp");
    let copy = lib_copy.path().join("copy.sqlite");
    std::fs::copy(f.lib().join("wal.sqlite"), &copy).expect("copy the server's db");
    check_sqlite(&copy);
}

// ---------------------------------------------------------------------------------------------
// cp -a, rsync -a, executables
// ---------------------------------------------------------------------------------------------

/// A tree with varied modes and old, distinct times (files, directories, and a symlink if
/// `symlink`).
fn moded_tree(dir: &Path, symlink: bool) {
    let files: &[(&str, u32)] = &[
        ("plain.txt", 0o644),
        ("private.txt", 0o600),
        ("readonly.txt", 0o444),
        ("script.sh", 0o755),
        ("group.txt", 0o664),
        ("sub/inner.bin", 0o640),
        ("sub/deeper/x.txt", 0o604),
        ("locked/y.txt", 0o644),
    ];
    for (i, (rel, mode)) in files.iter().enumerate() {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir -p");
        write(&p, random_bytes(i as u64, 1000 * i + 3));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    if symlink {
        std::os::unix::fs::symlink("plain.txt", dir.join("link")).expect("symlink");
    }
    let out = tool("find").arg(dir).arg("-mindepth").arg("1").run();
    out.assert_ok();
    // Deepest first, so setting a file's time does not change its directory's afterwards.
    let mut paths: Vec<String> = out.stdout_str().lines().map(String::from).collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for (i, p) in paths.iter().enumerate() {
        let when = format!(
            "2011-0{}-0{} 0{}:1{}:2{}.{:09}",
            1 + i % 9,
            1 + i % 9,
            i % 10,
            i % 6,
            i % 10,
            123_456_789 * (i + 1) % 1_000_000_000
        );
        tool("touch")
            .args(["-h", "-d", &when])
            .arg(p)
            .run()
            .assert_ok();
    }
    std::fs::set_permissions(
        dir.join("sub/deeper"),
        std::fs::Permissions::from_mode(0o750),
    )
    .expect("chmod dir");
    std::fs::set_permissions(dir.join("locked"), std::fs::Permissions::from_mode(0o555))
        .expect("chmod dir");
    tool("touch")
        .args(["-d", "2012-12-12 12:12:12.5"])
        .arg(dir.join("sub/deeper"))
        .arg(dir.join("locked"))
        .run()
        .assert_ok();
}

/// Type, relative path, mode and mtime (ns) of everything under `dir`, plus size and link
/// target for files and symlinks, sorted.
fn modes_and_times(dir: &Path) -> String {
    let out = tool("find")
        .arg(dir)
        .args(["-mindepth", "1", "-printf", "%y %P %m %T@ %l\n"])
        .run();
    out.assert_ok();
    let mut lines: Vec<String> = out.stdout_str().lines().map(String::from).collect();
    // Symlink permissions are always 777 on Linux, and a symlink's own time is compared too.
    lines.sort();
    let files = tool("find")
        .arg(dir)
        .args(["-type", "f", "-printf", "%P %s\n"])
        .run();
    files.assert_ok();
    let mut sizes: Vec<String> = files.stdout_str().lines().map(String::from).collect();
    sizes.sort();
    format!("{}\n--- sizes ---\n{}", lines.join("\n"), sizes.join("\n"))
}

#[test]
fn cp_a_in_and_out_keeps_modes_and_times() {
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    let src = local.path().join("src");
    moded_tree(&src, false);
    let want = modes_and_times(&src);

    tool("cp")
        .arg("-a")
        .arg(&src)
        .arg(f.mount.join("in"))
        .run()
        .assert_ok();
    assert_eq!(
        modes_and_times(&f.mount.join("in")),
        want,
        "through the mount"
    );
    assert_eq!(modes_and_times(&f.lib().join("in")), want, "on the server");

    let back = local.path().join("back");
    tool("cp")
        .arg("-a")
        .arg(f.mount.join("in"))
        .arg(&back)
        .run()
        .assert_ok();
    assert_eq!(modes_and_times(&back), want, "copied back out");
    tool("diff")
        .arg("-r")
        .arg(&src)
        .arg(&back)
        .run()
        .assert_ok();
    assert_eq!(shelf_leftovers(f.lib()), Vec::<PathBuf>::new());
}

#[test]
fn rsync_a_in_and_out_keeps_modes_and_times() {
    require_tool("rsync", "rsync");
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    let src = local.path().join("src");
    moded_tree(&src, false);
    let want = modes_and_times(&src);
    let slash = |p: &Path| format!("{}/", p.display());

    let dst = f.mount.join("in");
    tool("rsync")
        .arg("-a")
        .arg(slash(&src))
        .arg(slash(&dst))
        .run()
        .assert_ok();
    assert_eq!(modes_and_times(&dst), want, "through the mount");
    assert_eq!(modes_and_times(&f.lib().join("in")), want, "on the server");

    let back = local.path().join("back");
    tool("rsync")
        .arg("-a")
        .arg(slash(&dst))
        .arg(slash(&back))
        .run()
        .assert_ok();
    assert_eq!(modes_and_times(&back), want, "copied back out");
    // Nothing left to do in either direction.
    for (from, to) in [(&src, &dst), (&dst, &back)] {
        let again = tool("rsync")
            .arg("-ai")
            .arg(slash(from))
            .arg(slash(to))
            .run();
        assert_eq!(
            again.assert_ok().stdout_str(),
            "",
            "a second rsync -a\n{again}"
        );
    }
    assert_eq!(shelf_leftovers(f.lib()), Vec::<PathBuf>::new());
}

/// Regression: setting a symlink's own times (`touch -h`, `utimensat(AT_SYMLINK_NOFOLLOW)`,
/// what `cp -a` and `rsync -a` do for every symlink) changed the times of the symlink's
/// *target* on the server and then failed with EIO (ENOENT for a dangling symlink).
#[test]
fn touch_h_sets_a_symlinks_own_times_and_leaves_its_target_alone() {
    let f = fixture!();
    let target = f.mount.join("target.txt");
    write(&target, "target\n");
    let before = std::fs::metadata(f.lib().join("target.txt"))
        .expect("stat target")
        .modified()
        .expect("mtime");
    std::os::unix::fs::symlink("target.txt", f.mount.join("link")).expect("symlink");
    std::os::unix::fs::symlink("nowhere", f.mount.join("dangling")).expect("symlink");
    for name in ["link", "dangling"] {
        let out = tool("touch")
            .args(["-h", "-d", "2011-01-01 00:00:00.25"])
            .arg(f.mount.join(name))
            .run();
        assert!(out.success(), "touch -h {name}\n{out}\n{}", f.logs());
        assert_eq!(
            tool("stat")
                .args(["-c", "%y"])
                .arg(f.lib().join(name))
                .run()
                .assert_ok()
                .stdout_str(),
            "2011-01-01 00:00:00.250000000 +0000\n",
            "{name} on the server"
        );
    }
    let after = std::fs::metadata(f.lib().join("target.txt"))
        .expect("stat target")
        .modified()
        .expect("mtime");
    assert_eq!(
        after, before,
        "touch -h on a symlink changed its target's mtime"
    );
    // And so cp -a of a tree with a symlink keeps every time.
    let local = tempfile::tempdir().expect("temp");
    let src = local.path().join("src");
    moded_tree(&src, true);
    tool("cp")
        .arg("-a")
        .arg(&src)
        .arg(f.mount.join("in"))
        .run()
        .assert_ok();
    assert_eq!(modes_and_times(&f.lib().join("in")), modes_and_times(&src));
}

#[test]
fn a_script_written_on_the_mount_runs() {
    let f = fixture!();
    let script = f.mount.join("bin/hello.sh");
    std::fs::create_dir(f.mount.join("bin")).expect("mkdir");
    write(&script, "#!/bin/sh\necho \"hello from shelf: $*\"\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = tool(&script).args(["a", "b"]).run();
    assert_eq!(out.assert_ok().stdout_str(), "hello from shelf: a b\n");
    // Written again in place and run at once: no ETXTBSY, no stale text.
    write(&script, "#!/bin/sh\necho second\n");
    assert_eq!(tool(&script).run().assert_ok().stdout_str(), "second\n");
    // Without the x bit it is refused, as anywhere.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = std::process::Command::new(&script)
        .status()
        .expect_err("a 0644 file does not execute");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

// ---------------------------------------------------------------------------------------------
// find, du, grep, tar over 3,000 files
// ---------------------------------------------------------------------------------------------

/// Runs `sh -c script` in `dir` and returns its stdout, failing on a non-zero exit.
#[track_caller]
fn sh_in(dir: &Path, script: &str) -> String {
    let out = tool("sh").arg("-c").arg(script).current_dir(dir).run();
    out.assert_ok();
    out.stdout_str()
}

#[test]
fn find_du_grep_and_tar_agree_with_the_library() {
    let f = fixture!();
    // Made on the server side, so the mount reads what it never wrote.
    text_tree(&f.lib().join("t"), 3000, 5);
    let lib = f.lib().join("t");
    let mnt = f.mount.join("t");
    let checks: &[(&str, &str)] = &[
        (
            "find files",
            "find . -type f -printf '%P %s %m %T@ %n\\n' | sort",
        ),
        ("find dirs", "find . -type d -printf '%P %m %T@\\n' | sort"),
        (
            "find -newer",
            "find . -newer d00/s0/file-0000.txt -name '*7.txt' | sort",
        ),
        ("find -size", "find . -size +1k -type f | sort"),
        ("du", "du -s --apparent-size --block-size=1 ."),
        (
            "du files",
            "find . -type f -print0 | du --files0-from=- -b | sort -k2",
        ),
        ("grep -r", "grep -r needle . | sort"),
        ("grep -rc", "grep -rc needle . | sort"),
        ("grep -rl", "grep -rlZ needle . | tr '\\0' '\\n' | sort"),
        (
            "wc",
            "find . -type f -print0 | sort -z | xargs -0 cat | wc -c",
        ),
        ("tar", "tar --sort=name --format=gnu -cf - . | sha256sum"),
        ("tar tv", "tar --sort=name -cf - . | tar -tvf -"),
    ];
    let mut failures = Vec::new();
    for (what, script) in checks {
        let want = sh_in(&lib, script);
        let got = sh_in(&mnt, script);
        assert!(!want.is_empty(), "{what}: empty output on the library");
        if got != want {
            let diff = tool("diff")
                .arg(write_tmp("lib", &want))
                .arg(write_tmp("mnt", &got))
                .run();
            failures.push(format!(
                "{what} (`{script}`) differs:\n{}",
                diff.stdout_str()
                    .lines()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The walks entered 20 directories of one listed parent and 3 of each of them: the next
    // ones were listed ahead of the walk, and it took them.
    let (line, text) = status_line(f.mnt(), "walk-ahead:");
    let taken: u64 = line
        .trim()
        .strip_suffix(" taken")
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count taken in\n{text}"));
    assert!(taken > 0, "walk-ahead took no listing\n{text}");
}

/// The line of the mount's `shelf status` that starts with `key`, less the key, and the
/// whole report (for a failure's message).
fn status_line(mnt: &Path, key: &str) -> (String, String) {
    let status = shelf().arg("status").arg(mnt).run();
    status.assert_ok();
    let text = status.stdout_str();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} line in\n{text}"))
        .to_owned();
    (line, text)
}

/// Writes `text` to a kept temp file, for `diff` in a failure message.
fn write_tmp(prefix: &str, text: &str) -> PathBuf {
    let (mut file, path) = tempfile::Builder::new()
        .prefix(prefix)
        .tempfile()
        .expect("temp file")
        .keep()
        .expect("keep temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    path
}

// ---------------------------------------------------------------------------------------------
// An editor's save: write a temp, fsync, rename over
// ---------------------------------------------------------------------------------------------

/// Version `n` of the document: a header naming the version and length, then a body that
/// depends on both, so a reader can tell a whole version from a partial or mixed one.
fn version(n: u64) -> Vec<u8> {
    let len = 1000 + (n * 7919) % 300_000;
    let mut v = format!("version {n} length {len}\n").into_bytes();
    let body = random_bytes(n, len as usize);
    v.extend_from_slice(&body);
    v
}

/// Checks that `data` is exactly some whole version; returns its number.
fn which_version(data: &[u8]) -> Result<u64, String> {
    let end = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| format!("no header in {} bytes", data.len()))?;
    let header = String::from_utf8_lossy(&data[..end]);
    let n: u64 = header
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad header {header:?}"))?;
    if data != version(n) {
        return Err(format!(
            "partial or mixed version {n}: {} bytes, want {}",
            data.len(),
            version(n).len()
        ));
    }
    Ok(n)
}

#[test]
fn editor_save_by_rename_200_times_with_a_concurrent_reader() {
    let f = fixture!();
    let dir = f.mount.join("doc");
    std::fs::create_dir(&dir).expect("mkdir");
    let doc = dir.join("notes.txt");
    write(&doc, version(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let doc = doc.clone();
        std::thread::spawn(move || -> Result<(u64, u64), String> {
            let (mut reads, mut last) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let mut data = Vec::new();
                File::open(&doc)
                    .and_then(|mut file| file.read_to_end(&mut data))
                    .map_err(|e| format!("read {} after {reads} reads: {e}", doc.display()))?;
                let n = which_version(&data).map_err(|e| format!("read {reads}: {e}"))?;
                if n < last {
                    return Err(format!("went back from version {last} to {n}"));
                }
                last = n;
                reads += 1;
            }
            Ok((reads, last))
        })
    };
    for n in 1..=200 {
        // What vim (`backupcopy=no`), gedit and most editors do.
        let tmp = dir.join(format!(".notes.txt.{n}.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .expect("create the temp");
        file.write_all(&version(n)).expect("write the temp");
        file.sync_all().expect("fsync the temp");
        drop(file);
        std::fs::rename(&tmp, &doc).expect("rename over the document");
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (reads, last) = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| panic!("the reader saw a bad file: {e}\n{}", f.logs()));
    assert_eq!(last, 200, "the reader's last read ({reads} reads)");
    assert!(reads > 10, "only {reads} reads raced the saves");
    assert_eq!(which_version(&read(&doc)), Ok(200));
    assert_eq!(which_version(&read(f.lib().join("doc/notes.txt"))), Ok(200));
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
    assert_eq!(shelf_leftovers(f.lib()), Vec::<PathBuf>::new());
}

// ---------------------------------------------------------------------------------------------
// fsx: a third party's random exerciser of one file's bytes and size
// ---------------------------------------------------------------------------------------------

/// Every operation fsx knows, on a file of up to 8 MiB with operations of up to 2 MiB, so they
/// cross the mount's 1 MiB chunks, its read-ahead and its write-behind.
const FSX_CONFIG: &str = "\
flen = 8388608
[opsize]
max = 2097152
[weights]
close_open = 5
invalidate = 5
mapread = 10
mapwrite = 10
read = 10
write = 10
truncate = 10
fsync = 3
fdatasync = 3
posix_fallocate = 5
punch_hole = 5
sendfile = 5
posix_fadvise = 3
copy_file_range = 5
";

/// The `fsx` binary (crate `fsx`, the Rust port of the FSX that FreeBSD and xfstests use),
/// which scripts/test.sh installs under the target directory.
fn fsx_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SHELF_FSX") {
        return PathBuf::from(path);
    }
    let target = bin_dir();
    target.parent().unwrap_or(&target).join("tools/bin/fsx")
}

/// fsx keeps its own copy of the file and checks every read, `stat` and `lseek(SEEK_END)`
/// against it, through writes, truncates, holes, mmap, sendfile and copy_file_range; between
/// operations it closes and reopens, and drops the kernel's pages. It found a size that went
/// back after a truncate (a stat reply that overlapped it was cached over the truncate's).
#[test]
fn fsx_finds_every_byte_and_size_as_written_through_every_kind_of_change() {
    let fsx = fsx_bin();
    assert!(
        fsx.is_file(),
        "fsx is not at {}: scripts/test.sh installs it \
         (cargo install --locked fsx --version 0.3.2 --root target/tools), or set SHELF_FSX",
        fsx.display()
    );
    let f = fixture!();
    let config = write_tmp("shelf-fsx-", FSX_CONFIG);
    let artifacts = tempfile::Builder::new()
        .prefix("shelf-fsx-")
        .tempdir()
        .expect("temp dir");
    for seed in 1..=4 {
        let name = format!("fsx-{seed}");
        let out = tool(&fsx)
            .args(["-N", "1500", "-S", &seed.to_string(), "-f"])
            .arg(&config)
            .arg("-P")
            .arg(artifacts.path())
            .arg(f.mount.join(&name))
            .timeout(Duration::from_secs(120))
            .run();
        assert!(
            out.success(),
            "fsx, seed {seed}:\n{}{}\n{}",
            out.stdout_str(),
            out.stderr_str(),
            f.logs()
        );
        assert_bytes_eq(
            &read(f.lib().join(&name)),
            &read(f.mount.join(&name)),
            &format!("the server's file after fsx seed {seed}"),
        );
    }
    let _ = std::fs::remove_file(config);
}
