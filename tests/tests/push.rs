//! Change push (issue #16): with a TTL far longer than the test, a mount sees changes made
//! through another mount and on the server itself only because the server told it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use shelf_tests::*;

/// Far more than the test waits: anything seen in time was pushed, not expired.
const LONG_TTL: &str = "120s";
const PATIENCE: Duration = Duration::from_secs(5);

macro_rules! fixture {
    () => {
        match Fixture::with_args(&[] as &[&str], &["--attr-ttl", LONG_TTL]) {
            Some(f) => f,
            None => return,
        }
    };
}

fn soon(what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        poll(PATIENCE, || f().then_some(())).is_some(),
        "not seen in time: {what}"
    );
}

#[test]
fn changes_on_the_server_and_through_another_mount_are_seen_before_the_ttl() {
    let f = fixture!();
    let other = Mount::new(f.server.addr(), &["--attr-ttl", LONG_TTL]);
    std::fs::create_dir(f.lib().join("d")).expect("mkdir");
    std::fs::write(f.lib().join("d/a"), b"one").expect("seed");
    // The mount caches the directory and the file.
    let names = |m: &Mount| {
        let mut v: Vec<String> = std::fs::read_dir(m.join("d"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(names(&f.mount), ["a"]);
    assert_eq!(std::fs::read(f.mount.join("d/a")).expect("read"), b"one");
    std::thread::sleep(Duration::from_millis(300));

    // On the server itself.
    std::fs::write(f.lib().join("d/b"), b"new").expect("create on the server");
    soon("a file made on the server", || f.mount.join("d/b").exists());
    std::fs::write(f.lib().join("d/a"), b"two, longer").expect("rewrite on the server");
    soon("a file rewritten on the server", || {
        std::fs::read(f.mount.join("d/a")).ok().as_deref() == Some(&b"two, longer"[..])
    });
    // Through the other mount.
    std::fs::rename(other.join("d/b"), other.join("d/c")).expect("mv in the other mount");
    soon("a rename in the other mount", || {
        names(&f.mount) == ["a", "c"]
    });
    std::fs::remove_file(other.join("d/a")).expect("rm in the other mount");
    soon("a removal in the other mount", || {
        !f.mount.join("d/a").exists() && names(&f.mount) == ["c"]
    });
    let status = shelf().arg("status").run();
    status.assert_ok();
    assert!(
        status.stdout_str().contains("pushed by the server"),
        "status says the mount is pushed to\n{status}"
    );
}

/// What a tool run on a mount prints (stdout), or its error.
fn tool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .expect("run a tool");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_kind_of_change_shows_at_once_in_the_tools_of_another_mount() {
    let f = fixture!();
    let other = Mount::new(f.server.addr(), &["--attr-ttl", LONG_TTL]);
    std::fs::create_dir(f.lib().join("w")).expect("mkdir");
    std::fs::write(f.lib().join("w/file"), b"first\n").expect("seed");
    let here = f.mount.join("w");
    // Mount B has listed, stat'ed and read everything once: all of it is cached for 120 s.
    assert_eq!(tool(&["ls"], &here), "file\n");
    assert_eq!(tool(&["cat", "file"], &here), "first\n");
    assert_eq!(tool(&["stat", "-c", "%s %a", "file"], &here), "6 644\n");
    std::thread::sleep(Duration::from_millis(300));
    let there = other.join("w");
    let shows = |what: &str, args: &[&str], want: &str| {
        soon(what, || tool(args, &here) == want);
    };

    std::fs::write(there.join("file"), b"second, longer\n").expect("rewrite on A");
    shows("a rewrite (cat)", &["cat", "file"], "second, longer\n");
    shows("a rewrite (stat)", &["stat", "-c", "%s", "file"], "15\n");
    std::fs::write(there.join("new"), b"x").expect("create on A");
    shows("a create (ls)", &["ls"], "file\nnew\n");
    std::fs::rename(there.join("new"), there.join("renamed")).expect("rename on A");
    shows("a rename (ls)", &["ls"], "file\nrenamed\n");
    std::fs::set_permissions(
        there.join("file"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod on A");
    shows("a chmod (stat)", &["stat", "-c", "%a", "file"], "600\n");
    std::fs::create_dir(there.join("sub")).expect("mkdir on A");
    std::fs::write(there.join("sub/deep"), b"d").expect("create in the new dir on A");
    shows(
        "a new directory and its file (find)",
        &["find", ".", "-name", "deep"],
        "./sub/deep\n",
    );
    std::fs::remove_file(there.join("sub/deep")).expect("rm on A");
    std::fs::remove_dir(there.join("sub")).expect("rmdir on A");
    std::fs::remove_file(there.join("renamed")).expect("rm on A");
    shows("removals (find)", &["find", "."], ".\n./file\n");
}

/// The server's connection processes that watch for a client, with their watch count.
fn watchers(server: &Server) -> Vec<(u32, usize)> {
    let parent = server.pid().expect("server pid");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The fields after the command's closing parenthesis: state, then the parent's pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten();
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            if target.to_string_lossy() == "anon_inode:inotify" {
                let info = std::fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .unwrap_or_default();
                found.push((pid, info.matches("inotify wd:").count()));
            }
        }
    }
    found
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `shelf status` of one mount, as text.
fn status_of(mount: &Mount) -> String {
    let out = shelf().arg("status").arg(mount.path()).run();
    out.assert_ok();
    out.stdout_str().to_owned()
}

/// The counts of `changes:` in `shelf status`: (watched, refused).
fn push_counts(status: &str) -> (u64, u64) {
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with("changes:"))
        .unwrap_or_else(|| panic!("no changes line in\n{status}"));
    let number_before = |word: &str| -> u64 {
        let at = line
            .find(word)
            .unwrap_or_else(|| panic!("{word:?} in {line:?}"));
        line[..at]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a count before {word:?} in {line:?}"))
    };
    (
        number_before("directories watched"),
        number_before("refused"),
    )
}

#[test]
fn past_the_watch_budget_the_mount_falls_back_to_its_short_ttl_and_says_so() {
    // The server may watch 3 directories per mount; the mount keeps its default TTLs, so a
    // directory it could not have watched is on the 1 s TTL.
    let f = match Fixture::with_args(&["--max-watches", "3"], &[] as &[&str]) {
        Some(f) => f,
        None => return,
    };
    for d in 0..8 {
        std::fs::create_dir_all(f.lib().join(format!("d{d}"))).expect("mkdir");
        std::fs::write(f.lib().join(format!("d{d}/f")), b"1").expect("seed");
    }
    let listed = tool(&["find", "."], f.mnt());
    assert_eq!(listed.lines().count(), 17, "{listed}");
    let counts = poll(PATIENCE, || {
        let c = push_counts(&status_of(&f.mount));
        (c.0 + c.1 >= 9).then_some(c)
    })
    .unwrap_or_else(|| panic!("status never counted the nine\n{}", status_of(&f.mount)));
    assert_eq!(counts.0, 3, "watched: the budget");
    assert!(counts.1 >= 6, "refused: the rest, {counts:?}");
    assert_eq!(
        watchers(&f.server).iter().map(|w| w.1).max(),
        Some(3),
        "the server holds no more watches than its budget"
    );
    // Every directory still shows changes: the watched ones pushed, the rest within 1 s.
    for d in 0..8 {
        std::fs::write(f.lib().join(format!("d{d}/f")), b"22").expect("rewrite");
    }
    for d in 0..8 {
        let p = f.mount.join(format!("d{d}/f"));
        soon("a change in every directory", || {
            std::fs::metadata(&p).is_ok_and(|m| m.len() == 2)
        });
    }
}

#[test]
fn fifty_thousand_directories_keep_the_server_bounded() {
    let f = fixture!();
    let lib = f.lib().join("big");
    for a in 0..50 {
        for b in 0..1000 {
            std::fs::create_dir_all(lib.join(format!("a{a}/b{b}"))).expect("mkdir");
        }
    }
    let before: Vec<u32> = watchers(&f.server).iter().map(|w| w.0).collect();
    let found = tool(&["find", "big", "-type", "d"], f.mnt());
    assert_eq!(found.lines().count(), 50 + 50 * 1000 + 1);
    let counts = poll(Duration::from_secs(60), || {
        let c = push_counts(&status_of(&f.mount));
        (c.0 + c.1 >= 50_000).then_some(c)
    })
    .unwrap_or_else(|| panic!("status never counted them\n{}", status_of(&f.mount)));
    assert_eq!(counts.0 as usize, 8192, "watched: the default budget");
    let w = watchers(&f.server);
    assert_eq!(
        w.len(),
        1,
        "one watching process for the one mount: {w:?} (before: {before:?})"
    );
    let (pid, watches) = w[0];
    assert_eq!(watches, 8192, "watches held by the server");
    let rss = rss_kib(pid);
    assert!(
        rss < 64 << 10,
        "the watcher's memory stays bounded: {rss} KiB"
    );
    eprintln!(
        "50,051 directories walked: {} watched, {} refused; the watching process holds {watches} \
         watches in {rss} KiB RSS",
        counts.0, counts.1
    );
}

/// The server's change watcher process.
fn watcher_of(server: &Server) -> Option<u32> {
    let parent = server.pid()?;
    processes().into_iter().map(|p| p.pid).find(|&pid| {
        processes().iter().any(|q| q.pid == pid && q.ppid == parent)
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "shelfd-watch")
    })
}

#[test]
fn a_killed_watcher_is_replaced_and_its_mounts_fall_back_to_the_ttl() {
    let f = fixture!();
    std::fs::create_dir(f.lib().join("d")).expect("mkdir");
    assert_eq!(tool(&["ls"], &f.mount.join("d")), "");
    let first = poll(PATIENCE, || watcher_of(&f.server)).expect("a watcher runs");
    signal(first as i32, libc::SIGKILL);
    let second = poll(PATIENCE, || watcher_of(&f.server).filter(|&p| p != first))
        .expect("the server starts another watcher");
    assert_ne!(first, second);
    // The old mount is told it lost its watches, so a change shows within its TTL (here the
    // long one, had it trusted its old listing: it must not).
    std::fs::write(f.lib().join("d/after"), b"x").expect("create on the server");
    soon("a change after the watcher died", || {
        tool(&["ls"], &f.mount.join("d")) == "after\n"
    });
    // A new mount is watched by the new watcher.
    let other = Mount::new(f.server.addr(), &["--attr-ttl", LONG_TTL]);
    assert_eq!(tool(&["ls"], &other.join("d")), "after\n");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(f.lib().join("d/pushed"), b"x").expect("create on the server");
    soon("a change pushed by the new watcher", || {
        tool(&["ls"], &other.join("d")) == "after\npushed\n"
    });
}
