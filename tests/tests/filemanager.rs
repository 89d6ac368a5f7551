//! File managers on a real mount: GIO's command line (`gio`, the library under GNOME Files,
//! Nemo, Thunar's GVfs side) checked against the library, and PCManFM opening a folder of
//! images under a virtual X server.
//!
//! What is hard, and how it is handled:
//! 1. GIO does more than cp: `gio save` writes `.goutputstream-*` and renames it over the
//!    file, `gio move` across file systems copies then deletes, `gio trash` makes
//!    `.Trash-UID` at the top of the mount. Each result is read back from the library
//!    directory, not through the mount.
//! 2. A GUI program must not hang the suite or leak: Xvfb gets its own display number and
//!    both it and PCManFM run in their own process groups, killed by a guard on drop; every
//!    wait polls with a deadline.
//! 3. Proof that PCManFM really read the mount: its window's title is the folder's name, and
//!    it writes a thumbnail (read through the mount) for each image into its cache.
//!
//! The tools come from Debian packages listed in TEST_PACKAGES (scripts/lib.sh):
//! libglib2.0-bin, pcmanfm, xvfb, xdotool, imagemagick. The tests fail, not
//! skip, without them. `SHELF_SCREENSHOT=PATH` keeps PCManFM's screenshot (docs/filemanager.png
//! was made that way).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

// ---------------------------------------------------------------------------------------------
// gio
// ---------------------------------------------------------------------------------------------

fn gio() -> Cmd {
    tool("gio")
}

/// `name\tsize\t(type)` lines as `gio list -l` prints them, from the library directory.
fn expected_gio_list(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_dir(dir)
        .expect("list the library")
        .map(|e| {
            let e = e.expect("entry");
            let m = std::fs::symlink_metadata(e.path()).expect("lstat");
            let name = e.file_name().to_string_lossy().into_owned();
            if m.is_dir() {
                format!("{name}\t(directory)")
            } else {
                format!("{name}\t{}\t(regular)", m.len())
            }
        })
        .collect();
    lines.sort();
    lines
}

/// `gio list -l` output with directory sizes left out (the file system's business), sorted.
fn gio_list(dir: &Path) -> Vec<String> {
    let out = gio().args(["list", "-l"]).arg(dir).run();
    out.assert_ok();
    let mut lines: Vec<String> = out
        .stdout_str()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.get(2) == Some(&"(directory)") {
                format!("{}\t(directory)", f[0])
            } else {
                l.to_string()
            }
        })
        .collect();
    lines.sort();
    lines
}

/// The value of `attr` in `gio info -a ATTR PATH`.
fn gio_info(path: &Path, attr: &str) -> String {
    let out = gio().args(["info", "-a", attr]).arg(path).run();
    out.assert_ok();
    let key = format!("  {attr}: ");
    out.stdout_str()
        .lines()
        .find_map(|l| l.strip_prefix(&key).map(String::from))
        .unwrap_or_else(|| panic!("no {attr} in\n{out}"))
}

#[test]
fn gio_list_info_copy_move_save_remove_and_trash() {
    require_tool("gio", "libglib2.0-bin");
    let f = fixture!();
    let lib = f.lib().join("docs");
    std::fs::create_dir_all(lib.join("sub")).expect("mkdir");
    write(lib.join("a.txt"), "hello, gio\n");
    write(lib.join("ramp.bin"), ramp(300_007));
    write(lib.join("sub/inner.txt"), "inner\n");
    let mnt = f.mount.join("docs");

    // list and info see what the server has.
    assert_eq!(gio_list(&mnt), expected_gio_list(&lib));
    let meta = std::fs::metadata(lib.join("ramp.bin")).expect("stat");
    assert_eq!(gio_info(&mnt.join("ramp.bin"), "standard::size"), "300007");
    let mtime = meta.modified().expect("mtime");
    let secs = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert_eq!(
        gio_info(&mnt.join("ramp.bin"), "time::modified"),
        secs.to_string()
    );
    assert_eq!(gio_info(&mnt.join("sub"), "standard::type"), "2");

    // copy in and out.
    let local = tempfile::tempdir().expect("temp");
    let photo = local.path().join("photo.bin");
    write(&photo, random_bytes(42, 2_500_000));
    gio()
        .arg("copy")
        .arg(&photo)
        .arg(format!("{}/", mnt.display()))
        .run()
        .assert_ok();
    assert_bytes_eq(
        &read(lib.join("photo.bin")),
        &read(&photo),
        "gio copy into the mount",
    );
    let out = local.path().join("ramp-out.bin");
    gio()
        .arg("copy")
        .arg("--preserve")
        .arg(mnt.join("ramp.bin"))
        .arg(&out)
        .run()
        .assert_ok();
    assert_bytes_eq(&read(&out), &ramp(300_007), "gio copy out of the mount");
    assert_eq!(
        std::fs::metadata(&out).expect("stat").modified().ok(),
        Some(mtime),
        "gio copy --preserve keeps the time"
    );

    // move within the mount (a rename) and into it from another file system (copy + delete).
    gio()
        .arg("move")
        .arg(mnt.join("a.txt"))
        .arg(mnt.join("sub/moved.txt"))
        .run()
        .assert_ok();
    assert!(!lib.join("a.txt").exists());
    assert_eq!(read(lib.join("sub/moved.txt")), b"hello, gio\n");
    let loose = local.path().join("loose.txt");
    write(&loose, "from afar\n");
    gio()
        .arg("move")
        .arg(&loose)
        .arg(mnt.join("loose.txt"))
        .run()
        .assert_ok();
    assert!(!loose.exists(), "gio move removes the source");
    assert_eq!(read(lib.join("loose.txt")), b"from afar\n");

    // save: what GTK editors do (a hidden temp renamed over the file), twice.
    for text in ["saved once\n", "saved twice, longer\n"] {
        gio()
            .arg("save")
            .arg(mnt.join("saved.txt"))
            .stdin(text)
            .run()
            .assert_ok();
        assert_eq!(read(lib.join("saved.txt")), text.as_bytes());
    }

    // remove, and trash (what a file manager's Delete key does).
    gio()
        .arg("remove")
        .arg(mnt.join("sub/moved.txt"))
        .run()
        .assert_ok();
    assert!(!lib.join("sub/moved.txt").exists());
    let trashed = gio().arg("trash").arg(mnt.join("loose.txt")).run();
    trashed.assert_ok();
    assert!(!lib.join("loose.txt").exists(), "trashed file still there");

    assert_eq!(gio_list(&mnt), expected_gio_list(&lib));
    let leftovers = tool("find")
        .arg(f.lib())
        .args(["-name", ".goutputstream-*"])
        .run();
    assert_eq!(
        leftovers.assert_ok().stdout_str(),
        "",
        "GIO temporaries left"
    );
    assert_eq!(
        shelf_leftovers(f.lib()),
        Vec::<PathBuf>::new(),
        "shelf temporaries left"
    );
}

// ---------------------------------------------------------------------------------------------
// PCManFM under Xvfb
// ---------------------------------------------------------------------------------------------

/// A child in its own process group; the group is killed and the child reaped on drop.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { child, name }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        signal(-(self.child.id() as i32), libc::SIGTERM);
        if wait_timeout(&mut self.child, Duration::from_secs(3)).is_none() {
            signal(-(self.child.id() as i32), libc::SIGKILL);
            let _ = self.child.wait();
        }
        let _ = self.name;
    }
}

/// A display number no X server uses now.
fn free_display() -> u32 {
    (0..200)
        .map(|k| 90 + (std::process::id() + k) % 400)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .expect("a free X display number")
}

/// CRC-32 (IEEE), as PNG chunks need.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A truecolour PNG of `w`x`h` pixels from `pixel(x, y)`, compressed with stored (raw)
/// deflate blocks: valid and tiny to write, if not small.
fn png(w: u32, h: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((w * 3 + 1) * h) as usize);
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            raw.extend_from_slice(&pixel(x, y));
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter, no interlace
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    out
}

#[test]
fn png_writer_makes_images_imagemagick_reads() {
    require_tool("identify", "imagemagick");
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("t.png");
    write(&path, png(300, 250, |x, y| [x as u8, y as u8, 128]));
    let out = tool("identify").arg(&path).run();
    assert!(
        out.assert_ok().stdout_str().contains("PNG 300x250"),
        "{out}"
    );
    assert_eq!(crc32(b"IEND"), 0xAE42_6082);
}

/// The colours of the images [`picture_folder`] makes.
const COLOURS: [[u8; 3]; 6] = [
    [220, 60, 60],
    [60, 180, 80],
    [60, 90, 220],
    [230, 180, 40],
    [150, 70, 200],
    [40, 190, 200],
];

/// Writes six striped images and a text file into `dir`.
fn picture_folder(dir: &Path) -> usize {
    std::fs::create_dir_all(dir).expect("mkdir pictures");
    for (i, c) in COLOURS.iter().enumerate() {
        // Wide stripes of the colour and a darker shade: the colour survives scaling to an
        // icon exactly, so the screenshot shows whether the image was read.
        let image = png(160, 120, |x, y| {
            if ((x + y) / 24) % 2 == 0 {
                *c
            } else {
                c.map(|v| v / 5 * 4)
            }
        });
        write(dir.join(format!("photo-{}.png", i + 1)), image);
    }
    write(dir.join("README.txt"), "six pictures served by shelfd\n");
    COLOURS.len()
}

/// How many pixels of each colour `image` has (ImageMagick's histogram).
fn histogram(image: &Path) -> std::collections::HashMap<String, u64> {
    let out = tool("convert")
        .arg(image)
        .args(["-format", "%c", "histogram:info:-"])
        .run();
    out.assert_ok();
    // Lines like `   6912: (220,60,60) #DC3C3C srgb(220,60,60)`.
    out.stdout_str()
        .lines()
        .filter_map(|l| {
            let (count, rest) = l.trim().split_once(':')?;
            let hex = rest.split_whitespace().find(|w| w.starts_with('#'))?;
            Some((hex.to_string(), count.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn pcmanfm_opens_a_folder_of_images_on_the_mount() {
    for (program, package) in [
        ("pcmanfm", "pcmanfm"),
        ("Xvfb", "xvfb"),
        ("xdotool", "xdotool"),
        ("import", "imagemagick"),
    ] {
        require_tool(program, package);
    }
    let f = fixture!();
    let images = picture_folder(&f.lib().join("Pictures"));
    let folder = f.mount.join("Pictures");

    let display = format!(":{}", free_display());
    let _xvfb = Proc::spawn(
        "Xvfb",
        Command::new("Xvfb")
            .arg(&display)
            .args(["-screen", "0", "640x480x24", "-nolisten", "tcp", "-noreset"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // Ready when it accepts a connection: the socket's file appears before Xvfb listens on it,
    // and a client that comes in between is refused ("Cannot open display"). `-noreset`: an X
    // server resets when its last client leaves, as this probe does, and refuses clients
    // while it does.
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{}", &display[1..]));
    poll(START_TIMEOUT, || {
        std::os::unix::net::UnixStream::connect(&socket)
            .is_ok()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("Xvfb {display} did not start"));

    // A fresh home: default settings, an empty thumbnail cache.
    let home = tempfile::tempdir().expect("temp home");
    let log = home.path().join("pcmanfm.log");
    let mut pcmanfm = Proc::spawn(
        "pcmanfm",
        Command::new("pcmanfm")
            .arg(&folder)
            .env("DISPLAY", &display)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env("XDG_CACHE_HOME", home.path().join(".cache"))
            .env("XDG_RUNTIME_DIR", home.path())
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(&log).expect("log file")),
    );
    let window = poll(Duration::from_secs(30), || {
        if pcmanfm.exited().is_some() {
            return Some(Err("pcmanfm exited".to_string()));
        }
        let out = tool("xdotool")
            .args(["search", "--onlyvisible", "--name", "Pictures"])
            .env("DISPLAY", &display)
            .timeout(Duration::from_secs(5))
            .run();
        out.success()
            .then(|| out.stdout_str().lines().next().map(|w| Ok(w.to_string())))
            .flatten()
    });
    let window = match window {
        Some(Ok(w)) => w,
        Some(Err(e)) => panic!(
            "{e} before showing its window\n--- pcmanfm log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
        None => panic!(
            "no PCManFM window named Pictures within 30 s\n--- pcmanfm log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
    };
    let title = tool("xdotool")
        .args(["getwindowname", &window])
        .env("DISPLAY", &display)
        .run();
    assert!(
        title.assert_ok().stdout_str().contains("Pictures"),
        "{title}"
    );

    // Icons of the images appear once PCManFM has read them through the mount.
    let shot_dir = tempfile::tempdir().expect("temp");
    let shot = std::env::var_os("SHELF_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| shot_dir.path().join("filemanager.png"));
    let hex = |c: &[u8; 3]| format!("#{:02X}{:02X}{:02X}", c[0], c[1], c[2]);
    let mut missing = Vec::new();
    let seen = poll(Duration::from_secs(30), || {
        tool("import")
            .args(["-window", "root", "-depth", "8"])
            .arg(format!("png:{}", shot.display()))
            .env("DISPLAY", &display)
            .run()
            .assert_ok();
        let colours = histogram(&shot);
        missing = COLOURS
            .iter()
            .map(hex)
            .filter(|h| colours.get(h).copied().unwrap_or(0) < 300)
            .collect();
        missing.is_empty().then_some(())
    });
    let size = std::fs::metadata(&shot).expect("screenshot").len();
    assert!(
        size > 2_000 && size < 300_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    assert!(
        seen.is_some(),
        "after 30 s the screenshot ({}) lacks the icons of {missing:?} of {images} images\n\
         --- pcmanfm log ---\n{}",
        shot.display(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(pcmanfm.exited().is_none(), "pcmanfm exited");
}
