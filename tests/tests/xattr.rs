//! Extended attributes through a real mount: the system calls' answers compared with a local
//! ext4 directory (the root file system here), `setfattr`/`getfattr`, `cp -a`, `rsync -aX` and
//! `tar --xattrs` keeping them in and out, and the kernel's `security.capability` question
//! around every write answered without a round trip.
//!
//! Local ext4 is the reference: a call is made on a file in a temp directory and on the same
//! file in the mount, and the two answers (value or errno) must be equal. The namespaces the
//! mount refuses on purpose (`trusted.`, `security.`, `system.posix_acl_*`; README, "What the
//! mount promises") are checked on their own, since root on ext4 may set them.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use shelf_tests::*;

macro_rules! fixture {
    () => {
        match Fixture::new() {
            Some(f) => f,
            None => return,
        }
    };
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a test path")
}

fn cname(name: &[u8]) -> CString {
    CString::new(name).expect("no NUL in a test name")
}

/// What a call returned: a length or value, or the errno.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Len(usize),
    Bytes(Vec<u8>),
    Errno(i32),
}

fn result(n: isize) -> Got {
    if n < 0 {
        Got::Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Got::Len(n as usize)
    }
}

/// `lgetxattr` with a buffer of `size` bytes (0: the length only).
fn get(path: &Path, name: &[u8], size: usize) -> Got {
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: the path and name are NUL-terminated; `ptr` is null or `size` writable bytes.
    let n = unsafe { libc::lgetxattr(c(path).as_ptr(), cname(name).as_ptr(), ptr, size) };
    match result(n) {
        Got::Len(n) if size > 0 => Got::Bytes(buf[..n].to_vec()),
        other => other,
    }
}

fn set(path: &Path, name: &[u8], value: &[u8], flags: i32) -> Got {
    // SAFETY: the path and name are NUL-terminated; `value` is `value.len()` readable bytes.
    let n = unsafe {
        libc::lsetxattr(
            c(path).as_ptr(),
            cname(name).as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    result(n as isize)
}

fn list(path: &Path, size: usize) -> Got {
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: the path is NUL-terminated; `ptr` is null or `size` writable bytes.
    let n = unsafe { libc::llistxattr(c(path).as_ptr(), ptr, size) };
    match result(n) {
        Got::Len(n) if size > 0 => Got::Bytes(buf[..n].to_vec()),
        other => other,
    }
}

fn remove(path: &Path, name: &[u8]) -> Got {
    // SAFETY: the path and name are NUL-terminated.
    let n = unsafe { libc::lremovexattr(c(path).as_ptr(), cname(name).as_ptr()) };
    result(n as isize)
}

/// The names of a `list` answer, sorted (the order is the file system's own).
fn names(got: Got) -> Vec<Vec<u8>> {
    let Got::Bytes(list) = got else {
        panic!("expected a list, got {got:?}");
    };
    let mut names: Vec<Vec<u8>> = list
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    names.sort();
    names
}

/// In `dir`: a file `f`, a directory `d`, a symlink `l` to `f`; and a FIFO `p` made in
/// `fifo_dir`, the same directory seen without the mount (which makes no FIFOs).
fn probe_tree(dir: &Path, fifo_dir: &Path) {
    // First, so the mount has not yet listed the directory without it.
    std::fs::create_dir_all(fifo_dir).expect("mkdir");
    let fifo = c(&fifo_dir.join("p"));
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    std::fs::create_dir_all(dir.join("d")).expect("mkdir");
    write(dir.join("f"), b"data");
    std::os::unix::fs::symlink("f", dir.join("l")).expect("symlink");
}

/// The same sequence of calls in `dir`, each answer labelled.
fn probe(dir: &Path) -> Vec<(String, Got)> {
    let f = dir.join("f");
    let long_name = [b"user.".as_slice(), &[b'a'; 251]].concat();
    let binary = b"\0\xff\x01\0end".to_vec();
    let mut out = Vec::new();
    let mut at = |what: &str, got: Got| out.push((what.to_string(), got));
    at("get missing", get(&f, b"user.none", 64));
    at("set binary", set(&f, b"user.bin", &binary, 0));
    at("size query", get(&f, b"user.bin", 0));
    at("small buffer", get(&f, b"user.bin", 3));
    at("exact buffer", get(&f, b"user.bin", binary.len()));
    at("set empty", set(&f, b"user.empty", b"", 0));
    at("get empty", get(&f, b"user.empty", 8));
    at(
        "create existing",
        set(&f, b"user.bin", b"x", libc::XATTR_CREATE),
    );
    at(
        "replace missing",
        set(&f, b"user.new", b"x", libc::XATTR_REPLACE),
    );
    at(
        "replace",
        set(&f, b"user.bin", b"again", libc::XATTR_REPLACE),
    );
    at("get replaced", get(&f, b"user.bin", 64));
    at("create", set(&f, b"user.new", b"x", libc::XATTR_CREATE));
    at("both flags, existing", set(&f, b"user.new", b"x", 3));
    at("unknown flag", set(&f, b"user.new", b"x", 4));
    at(
        "value over 64 KiB",
        set(&f, b"user.big", &vec![1; 65537], 0),
    );
    at("name of 255 bytes", set(&f, &long_name[..255], b"v", 0));
    at("get 255 bytes", get(&f, &long_name[..255], 8));
    at("name of 256 bytes", set(&f, &long_name, b"v", 0));
    at("get name of 256 bytes", get(&f, &long_name, 8));
    at("empty name", set(&f, b"", b"v", 0));
    at("prefix only", set(&f, b"user.", b"v", 0));
    at("no namespace", set(&f, b"nonamespace", b"v", 0));
    at("unknown namespace", get(&f, b"other.k", 8));
    at("list size", list(&f, 0));
    at("list small buffer", list(&f, 5));
    at("remove", remove(&f, b"user.new"));
    at("remove missing", remove(&f, b"user.new"));
    at("get removed", get(&f, b"user.new", 8));
    for kind in ["d", "l", "p"] {
        let p = dir.join(kind);
        at(&format!("{kind}: set"), set(&p, b"user.k", b"v", 0));
        at(&format!("{kind}: get"), get(&p, b"user.k", 8));
        at(&format!("{kind}: list"), list(&p, 0));
        at(&format!("{kind}: remove"), remove(&p, b"user.k"));
    }
    let names = names(list(&f, 4096));
    at(
        "names",
        Got::Bytes(names.join(&b","[..]).into_iter().collect()),
    );
    out
}

#[test]
fn system_calls_answer_as_on_local_ext4() {
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    probe_tree(local.path(), local.path());
    probe_tree(&f.mount.join("t"), &f.lib().join("t"));
    let want = probe(local.path());
    // The reference says what the kernel's rules say, so the comparison below means something.
    let said = |what: &str| {
        want.iter()
            .find(|(w, _)| w == what)
            .map(|(_, g)| g.clone())
            .unwrap_or_else(|| panic!("no {what}"))
    };
    for (what, errno) in [
        ("get missing", libc::ENODATA),
        ("small buffer", libc::ERANGE),
        ("create existing", libc::EEXIST),
        ("replace missing", libc::ENODATA),
        ("value over 64 KiB", libc::E2BIG),
        ("name of 256 bytes", libc::ERANGE),
        ("unknown namespace", libc::EOPNOTSUPP),
        ("list small buffer", libc::ERANGE),
        ("remove missing", libc::ENODATA),
        ("l: set", libc::EPERM),
        ("l: get", libc::ENODATA),
        ("p: set", libc::EPERM),
        ("p: remove", libc::EPERM),
    ] {
        assert_eq!(said(what), Got::Errno(errno), "ext4: {what}");
    }
    assert_eq!(said("size query"), Got::Len(7));
    let got = probe(&f.mount.join("t"));
    for ((what, w), (_, g)) in want.iter().zip(&got) {
        assert_eq!(g, w, "{what}: the mount answers as ext4\n{}", f.logs());
    }
    assert_eq!(got.len(), want.len());
    // The value is the server file's own attribute.
    assert_eq!(
        get(&f.lib().join("t/f"), b"user.bin", 64),
        Got::Bytes(b"again".to_vec())
    );
}

#[test]
fn a_value_of_64_kib_answers_as_the_servers_disk_does() {
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    write(local.path().join("f"), b"");
    write(f.mount.join("f"), b"");
    let value = ramp(65536);
    // ext4 without the ea_inode feature holds no value that large (ENOSPC); whatever the
    // server's disk says, the mount says the same.
    let want = set(&local.path().join("f"), b"user.max", &value, 0);
    assert_eq!(set(&f.mount.join("f"), b"user.max", &value, 0), want);
    if want == Got::Len(0) {
        assert_eq!(
            get(&f.mount.join("f"), b"user.max", 65536),
            Got::Bytes(value)
        );
    }
    // The largest a 4 KiB ext4 block takes beside the name.
    let value = ramp(4000);
    assert_eq!(set(&f.mount.join("f"), b"user.big", &value, 0), Got::Len(0));
    assert_eq!(
        get(&f.mount.join("f"), b"user.big", 65536),
        Got::Bytes(value)
    );
}

#[test]
fn refused_namespaces_are_eopnotsupp_and_never_listed() {
    let f = fixture!();
    let file = f.mount.join("f");
    write(&file, b"x");
    for name in [
        &b"trusted.k"[..],
        b"security.capability",
        b"security.selinux",
        b"system.posix_acl_access",
    ] {
        let what = String::from_utf8_lossy(name);
        // The kernel checks a capability's format before any file system sees it: a valid
        // one (revision 2, effective, no capabilities), so the refusal is the mount's.
        let value: &[u8] = match name {
            b"security.capability" => &[1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            // Likewise an ACL's: version 2; owner rw-, group r--, others r--.
            b"system.posix_acl_access" => &[
                2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff,
                0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff,
            ],
            _ => b"v",
        };
        assert_eq!(
            set(&file, name, value, 0),
            Got::Errno(libc::EOPNOTSUPP),
            "{what}"
        );
        assert_eq!(get(&file, name, 64), Got::Errno(libc::EOPNOTSUPP), "{what}");
        assert_eq!(remove(&file, name), Got::Errno(libc::EOPNOTSUPP), "{what}");
    }
    // An attribute the server's own system keeps (shelfd runs as root here) does not show.
    assert_eq!(
        set(&f.lib().join("f"), b"trusted.admin", b"x", 0),
        Got::Len(0)
    );
    assert_eq!(set(&file, b"user.k", b"v", 0), Got::Len(0));
    assert_eq!(names(list(&file, 4096)), [b"user.k".to_vec()]);
    assert_eq!(
        get(&f.lib().join("f"), b"trusted.admin", 8),
        Got::Bytes(b"x".to_vec()),
        "and stays untouched"
    );
}

#[test]
fn an_unlinked_open_file_keeps_its_attributes() {
    let f = fixture!();
    let path = f.mount.join("tmp");
    let file = std::fs::File::create(&path).expect("create");
    assert_eq!(set(&path, b"user.k", b"kept", 0), Got::Len(0));
    std::fs::remove_file(&path).expect("unlink");
    let fd = {
        use std::os::fd::AsRawFd;
        file.as_raw_fd()
    };
    let mut buf = [0u8; 16];
    // SAFETY: an open descriptor, a NUL-terminated name and 16 writable bytes.
    let n = unsafe { libc::fgetxattr(fd, c"user.k".as_ptr(), buf.as_mut_ptr().cast(), 16) };
    assert_eq!(n, 4, "{}", std::io::Error::last_os_error());
    assert_eq!(&buf[..4], b"kept");
    drop(file);
}

// ---------------------------------------------------------------------------------------------
// Tools

/// A small tree with user attributes on files and a directory, binary values included.
fn xattr_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    write(dir.join("a.txt"), b"alpha");
    write(dir.join("sub/b.bin"), ramp(100_000));
    write(dir.join("plain"), b"no attributes");
    let cases: [(&str, &str, &[u8]); 5] = [
        ("a.txt", "user.mime_type", b"text/plain"),
        ("a.txt", "user.binary", b"\0\x01\xff\0"),
        ("sub/b.bin", "user.checksum", b"sha256:00ff"),
        ("sub", "user.dir", b"a directory's own"),
        ("sub/b.bin", "user.empty", b""),
    ];
    for (file, name, value) in cases {
        assert_eq!(
            set(&dir.join(file), name.as_bytes(), value, 0),
            Got::Len(0),
            "{file} {name}"
        );
    }
}

/// `getfattr -R -d -m - -e hex` of a tree, with paths relative to it: what every tool below
/// must keep. `-m -` asks for every name, so a namespace that appears is compared too.
fn dump(dir: &Path) -> String {
    let out = tool("getfattr")
        .current_dir(dir)
        .args([
            "-R",
            "-h",
            "-d",
            "-m",
            "-",
            "-e",
            "hex",
            "--absolute-names",
            ".",
        ])
        .run();
    out.assert_ok();
    // getfattr prints files in directory order; sort the blocks so orders may differ.
    let text = out.stdout_str();
    let mut blocks: Vec<&str> = text.split("\n\n").map(str::trim).collect();
    blocks.retain(|b| !b.is_empty());
    blocks.sort();
    blocks.join("\n\n")
}

fn require_attr_tools() {
    require_tool("getfattr", "attr");
    require_tool("setfattr", "attr");
}

#[test]
fn setfattr_and_getfattr_round_trip_as_on_ext4() {
    require_attr_tools();
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    let run_in = |dir: &Path| -> Vec<String> {
        write(dir.join("f"), b"x");
        let mut outs = Vec::new();
        for args in [
            &["-n", "user.hex", "-v", "0x00ff0a00", "f"][..],
            &["-n", "user.text", "-v", "\"quoted value\"", "f"],
            &["-n", "user.b64", "-v", "0sAAECAwQ=", "f"],
            &["-n", "user.none", "f"],
            &["-x", "user.text", "f"],
            &["-x", "user.text", "f"],
        ] {
            let out = tool("setfattr").current_dir(dir).args(args).run();
            outs.push(format!(
                "setfattr {args:?}: {:?} {}",
                out.code(),
                out.stderr_str()
            ));
        }
        for args in [
            &["-d", "-e", "hex", "f"][..],
            &["-n", "user.hex", "-e", "hex", "f"],
            &["-n", "user.b64", "--only-values", "f"],
            &["-n", "user.text", "f"],
            &["-d", "-m", "^user\\.", "f"],
        ] {
            let out = tool("getfattr").current_dir(dir).args(args).run();
            outs.push(format!(
                "getfattr {args:?}: {:?}\n{}{}",
                out.code(),
                out.stdout_str(),
                out.stderr_str()
            ));
        }
        outs
    };
    let want = run_in(local.path());
    let got = run_in(f.mnt());
    assert_eq!(got, want, "{}", f.logs());
    assert_eq!(
        get(&f.lib().join("f"), b"user.hex", 16),
        Got::Bytes(vec![0, 0xff, 0x0a, 0])
    );
}

#[test]
fn cp_a_keeps_xattrs_in_and_out() {
    require_attr_tools();
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    let src = local.path().join("src");
    xattr_tree(&src);
    let want = dump(&src);
    assert!(want.contains("user.binary=0x0001ff00"), "{want}");

    tool("cp")
        .arg("-a")
        .arg(&src)
        .arg(f.mount.join("in"))
        .run()
        .assert_ok();
    assert_eq!(dump(&f.mount.join("in")), want, "through the mount");
    assert_eq!(dump(&f.lib().join("in")), want, "on the server");

    let back = local.path().join("back");
    tool("cp")
        .arg("-a")
        .arg(f.mount.join("in"))
        .arg(&back)
        .run()
        .assert_ok();
    assert_eq!(dump(&back), want, "copied back out");
    assert_eq!(shelf_leftovers(f.lib()), Vec::<PathBuf>::new());
}

#[test]
fn rsync_ax_keeps_xattrs_in_and_out() {
    require_attr_tools();
    require_tool("rsync", "rsync");
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    let src = local.path().join("src");
    xattr_tree(&src);
    let want = dump(&src);
    let slash = |p: &Path| format!("{}/", p.display());

    let dst = f.mount.join("in");
    let out = tool("rsync")
        .arg("-aX")
        .arg(slash(&src))
        .arg(slash(&dst))
        .run();
    out.assert_ok();
    assert_eq!(out.stderr_str(), "", "no attribute was refused");
    assert_eq!(dump(&dst), want, "through the mount");
    assert_eq!(dump(&f.lib().join("in")), want, "on the server");

    let back = local.path().join("back");
    tool("rsync")
        .arg("-aX")
        .arg(slash(&dst))
        .arg(slash(&back))
        .run()
        .assert_ok();
    assert_eq!(dump(&back), want, "copied back out");
    // A second run finds nothing to change, attributes included.
    let again = tool("rsync")
        .arg("-aXi")
        .arg(slash(&src))
        .arg(slash(&dst))
        .run();
    assert_eq!(
        again.assert_ok().stdout_str(),
        "",
        "a second rsync -aX\n{again}"
    );
}

#[test]
fn tar_xattrs_keeps_them_in_and_out() {
    require_attr_tools();
    require_tool("tar", "tar");
    let f = fixture!();
    let local = tempfile::tempdir().expect("temp");
    let src = local.path().join("src");
    xattr_tree(&src);
    let want = dump(&src);
    let tar = |dir: &Path, args: &[&str]| {
        tool("tar")
            .current_dir(dir)
            .args(["--xattrs", "--xattrs-include=*"])
            .args(args)
            .run()
            .assert_ok()
            .stderr_str()
    };

    let archive = local.path().join("in.tar");
    tar(&src, &["-cf", archive.to_str().expect("utf-8"), "."]);
    let dst = f.mount.join("in");
    std::fs::create_dir(&dst).expect("mkdir");
    assert_eq!(tar(&dst, &["-xf", archive.to_str().expect("utf-8")]), "");
    assert_eq!(dump(&dst), want, "extracted into the mount");
    assert_eq!(dump(&f.lib().join("in")), want, "on the server");

    let out_archive = local.path().join("out.tar");
    tar(&dst, &["-cf", out_archive.to_str().expect("utf-8"), "."]);
    let back = local.path().join("back");
    std::fs::create_dir(&back).expect("mkdir");
    tar(&back, &["-xf", out_archive.to_str().expect("utf-8")]);
    assert_eq!(dump(&back), want, "archived from the mount and extracted");
}

// ---------------------------------------------------------------------------------------------
// security.capability around writes

/// The mount's xattr counters from `shelf status`: (sent to the server, answered locally).
fn xattr_counters(mnt: &Path) -> (u64, u64) {
    let out = shelf().arg("status").arg(mnt).run();
    let text = out.assert_ok().stdout_str();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("xattrs:"))
        .unwrap_or_else(|| panic!("no xattrs line in\n{text}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [sent, local] => (sent, local),
        _ => panic!("cannot read {line:?}"),
    }
}

#[test]
fn a_write_loop_costs_no_xattr_round_trip() {
    let f = fixture!();
    let file = f.mount.join("loop.bin");
    write(&file, b"");
    let (sent0, local0) = xattr_counters(f.mnt());
    let writes = 2000;
    tool("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=4096", &format!("count={writes}"), "conv=notrunc,fsync"])
        .run()
        .assert_ok();
    let (sent1, local1) = xattr_counters(f.mnt());
    let asked = local1 - local0;
    eprintln!(
        "{writes} writes: the kernel asked {asked} xattr questions, {} went to the server",
        sent1 - sent0
    );
    assert_eq!(sent1, sent0, "no xattr request reached the server");
    // The kernel does ask around writes (else this test would not measure anything).
    assert!(asked >= 1, "the kernel asked for security.capability");
    assert_eq!(
        std::fs::metadata(f.lib().join("loop.bin"))
            .expect("stat")
            .len(),
        writes * 4096
    );
}
