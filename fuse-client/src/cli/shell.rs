//! `shelf shell ADDR`: an interactive prompt over one connection.
//!
//! The shell reads lines from any `BufRead`, so tests drive it with a byte string. It prints
//! the prompt `shelf:/CWD> ` only when input is a terminal. Words split on blanks, with `'…'`,
//! `"…"` and backslash quoting as in sh. A failed command prints `shelf: ERROR` to the error
//! stream and the shell goes on; end of input or `quit`/`exit` ends it. Without a terminal the
//! shell's result says whether every command succeeded, so scripts can check the exit code.
//! Commands call the same functions as the subcommands; paths are relative to the shell's
//! directory (`cd`), local paths to the process's directory.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use shelf_proto::FileKind;

use super::format::escape;
use super::paths::{resolve, resolve_clamped, show};
use super::{get, interrupt, ls, mkdir, mv, put, rm, Remote, Ui, UsageError};
use shelf_remote::Client;

/// Browse and change the library at an interactive prompt.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Commands at the prompt:\n  \
    ls [PATH]                 list a directory (also: list, dir)\n  \
    cd [PATH]                 change directory (no PATH: the root)\n  \
    pwd                       show the current directory\n  \
    get REMOTE [LOCAL]        download a file\n  \
    put LOCAL [REMOTE]        upload a file\n  \
    rm [-r] PATH...           remove\n  \
    mkdir [-p] PATH...        make directories\n  \
    mv FROM TO                rename or move\n  \
    help                      this list\n  \
    quit, exit                leave (also end of input)\n\n\
    Examples:\n  shelf shell 127.0.0.1:7878\n  \
    printf 'cd docs\\nget a.txt\\n' | shelf shell 127.0.0.1:7878")]
pub struct ShellArgs {
    /// Server address, HOST:PORT.
    pub addr: String,
}

const HELP: &str = "\
ls [PATH]            list a directory (also: list, dir)
cd [PATH]            change directory (no PATH: the root)
pwd                  show the current directory
get REMOTE [LOCAL]   download a file
put LOCAL [REMOTE]   upload a file
rm [-r] PATH...      remove files, empty directories, or trees with -r
mkdir [-p] PATH...   make directories
mv FROM TO           rename or move
help                 this list
quit, exit           leave
";

/// How the shell talks to its user.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Input is a terminal: show a prompt, and always succeed at the end.
    pub interactive: bool,
    pub ui: Ui,
}

/// Runs commands from `input` until its end or `quit`; `Ok(false)` when, reading from a
/// script, some command failed.
pub fn run<T: Remote>(
    c: &Client<T>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    mode: Mode,
) -> anyhow::Result<bool> {
    let mut cwd: Vec<u8> = Vec::new();
    let mut all_ok = true;
    let mut line = Vec::new();
    loop {
        if mode.interactive {
            write!(out, "shelf:{}> ", show_dir(&cwd))?;
            out.flush()?;
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            if mode.interactive {
                writeln!(out)?;
            }
            break;
        }
        let words = match split_words(&line) {
            Ok(w) => w,
            Err(e) => {
                writeln!(err, "shelf: {e}")?;
                all_ok = false;
                continue;
            }
        };
        let Some((cmd, args)) = words.split_first() else {
            continue;
        };
        interrupt::reset();
        match one(c, cmd, args, &mut cwd, out, mode.ui) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(e) => {
                all_ok = false;
                // A closed output ends the shell as it ends any command.
                if super::classify(&e) == super::Outcome::BrokenPipe {
                    return Err(e);
                }
                writeln!(err, "shelf: {}", super::render(&e))?;
            }
        }
    }
    Ok(all_ok || mode.interactive)
}

enum Flow {
    Continue,
    Quit,
}

/// Runs one command line.
fn one<T: Remote>(
    c: &Client<T>,
    cmd: &[u8],
    args: &[Vec<u8>],
    cwd: &mut Vec<u8>,
    out: &mut dyn Write,
    ui: Ui,
) -> anyhow::Result<Flow> {
    let os = |a: &Vec<u8>| OsString::from_vec(a.clone());
    let (flags, operands): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) = args
        .iter()
        .partition(|a| a.len() > 1 && a.starts_with(b"-"));
    let flag_set = |allowed: &[&[u8]]| -> anyhow::Result<Vec<u8>> {
        let mut set = Vec::new();
        for f in &flags {
            for &ch in &f[1..] {
                if !allowed.iter().any(|a| a == &[ch]) {
                    bail!(UsageError(format!("unknown option -{}", ch as char)));
                }
                set.push(ch);
            }
        }
        Ok(set)
    };
    let count = |min: usize, max: usize, usage: &str| -> anyhow::Result<()> {
        if operands.len() < min || operands.len() > max {
            bail!(UsageError(format!("usage: {usage}")));
        }
        Ok(())
    };
    match cmd {
        b"ls" | b"list" | b"dir" => {
            flag_set(&[b"l"])?;
            count(0, 1, "ls [PATH]")?;
            let arg = operands.first().map_or(&b""[..], |a| a.as_slice());
            ls::list(c, &resolve(cwd, arg)?, out)?;
        }
        b"cd" => {
            count(0, 1, "cd [PATH]")?;
            let arg = operands.first().map_or(&b"/"[..], |a| a.as_slice());
            let target = resolve_clamped(cwd, arg);
            let context = || format!("cd {}", escape(arg));
            let attr = c.stat(&target).with_context(context)?;
            if attr.kind != FileKind::Dir {
                return Err(anyhow!("not a directory")).with_context(context);
            }
            *cwd = target;
        }
        b"pwd" => {
            count(0, 0, "pwd")?;
            writeln!(out, "{}", show_dir(cwd))?;
        }
        b"get" => {
            count(1, 2, "get REMOTE [LOCAL]")?;
            let args = get::GetArgs {
                addr: String::new(),
                remote: os(operands[0]),
                local: operands.get(1).map(|l| PathBuf::from(os(l))),
            };
            get::run(c, &args, ui, cwd)?;
        }
        b"put" => {
            count(1, 2, "put LOCAL [REMOTE]")?;
            let args = put::PutArgs {
                addr: String::new(),
                local: PathBuf::from(os(operands[0])),
                remote: operands.get(1).map(|r| os(r)),
            };
            put::run(c, &args, ui, cwd)?;
        }
        b"rm" => {
            let set = flag_set(&[b"r", b"f"])?;
            count(1, usize::MAX, "rm [-r] PATH...")?;
            let paths: Vec<OsString> = operands.iter().map(|p| os(p)).collect();
            rm::run(c, &paths, set.contains(&b'r'), cwd)?;
        }
        b"mkdir" => {
            let set = flag_set(&[b"p"])?;
            count(1, usize::MAX, "mkdir [-p] PATH...")?;
            let paths: Vec<OsString> = operands.iter().map(|p| os(p)).collect();
            mkdir::run(c, &paths, set.contains(&b'p'), cwd)?;
        }
        b"mv" => {
            count(2, 2, "mv FROM TO")?;
            mv::run(c, &os(operands[0]), &os(operands[1]), cwd)?;
        }
        b"help" | b"?" => out.write_all(HELP.as_bytes())?,
        b"quit" | b"exit" | b"bye" => return Ok(Flow::Quit),
        other => bail!(UsageError(format!(
            "unknown command {:?}; try help",
            String::from_utf8_lossy(other)
        ))),
    }
    Ok(Flow::Continue)
}

/// `/` plus the directory, for the prompt and `pwd`.
fn show_dir(cwd: &[u8]) -> String {
    if cwd.is_empty() {
        "/".into()
    } else {
        format!("/{}", show(cwd))
    }
}

/// Splits a command line into words as sh does for quoting: blanks separate words, `'…'`
/// keeps everything literally, `"…"` keeps all but `\"` and `\\`, and `\` outside quotes
/// takes the next byte literally.
pub fn split_words(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut words = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut it = line.iter().copied();
    while let Some(b) = it.next() {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            b'\'' => {
                let w = word.get_or_insert_with(Vec::new);
                loop {
                    match it.next() {
                        Some(b'\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            b'"' => {
                let w = word.get_or_insert_with(Vec::new);
                loop {
                    match it.next() {
                        Some(b'"') => break,
                        Some(b'\\') => match it.next() {
                            Some(c @ (b'"' | b'\\')) => w.push(c),
                            Some(c) => w.extend_from_slice(&[b'\\', c]),
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            b'\\' => match it.next() {
                Some(b'\n') | None => {}
                Some(c) => word.get_or_insert_with(Vec::new).push(c),
            },
            b'#' if word.is_none() => break,
            c => word.get_or_insert_with(Vec::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf_testkit::Loopback;

    fn words(line: &str) -> Vec<String> {
        split_words(line.as_bytes())
            .expect("parses")
            .into_iter()
            .map(|w| String::from_utf8(w).expect("utf8"))
            .collect()
    }

    #[test]
    fn splitting_words() {
        assert_eq!(words("  ls   docs  "), ["ls", "docs"]);
        assert_eq!(
            words("get 'my file.txt' \"x y\""),
            ["get", "my file.txt", "x y"]
        );
        assert_eq!(
            words(r#"put a\ b "q\"uote" 'it''s'"#),
            ["put", "a b", "q\"uote", "its"]
        );
        assert_eq!(words("ls # comment"), ["ls"]);
        assert_eq!(words("''"), [""]);
        assert!(words("").is_empty());
        assert!(split_words(b"get 'open").is_err());
        assert!(split_words(b"get \"open").is_err());
    }

    fn script(lib: &std::path::Path, input: &str, interactive: bool) -> (bool, String, String) {
        let c = Client::new(Loopback::new(lib).expect("loopback"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mode = Mode {
            interactive,
            ui: Ui {
                progress: false,
                quiet: true,
            },
        };
        let ok = run(&c, &mut input.as_bytes(), &mut out, &mut err, mode).expect("shell ran");
        let text = |v: Vec<u8>| String::from_utf8(v).expect("utf8");
        (ok, text(out), text(err))
    }

    #[test]
    fn a_script_runs_and_errors_do_not_stop_it() {
        let lib = tempfile::tempdir().expect("tempdir");
        let local = tempfile::tempdir().expect("tempdir");
        let src = local.path().join("hello.txt");
        std::fs::write(&src, b"hello").expect("write");
        let dst = local.path().join("back.txt");
        let input = format!(
            "mkdir -p docs/sub\ncd docs\npwd\nput {src} note.txt\nls\nget nope.txt\n\
             cd nope\nbogus\nget note.txt {dst}\nmv note.txt sub\ncd sub\npwd\ncd ..\ncd\npwd\n",
            src = src.display(),
            dst = dst.display()
        );
        let (ok, out, err) = script(lib.path(), &input, false);
        assert!(!ok, "a command failed, so the script fails");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "/docs", "{out}");
        assert!(lines[1].ends_with(" note.txt"), "{out}");
        assert!(lines[2].ends_with(" sub"), "{out}");
        assert_eq!(&lines[3..], ["/docs/sub", "/"], "{out}");
        assert_eq!(std::fs::read(&dst).expect("got"), b"hello");
        assert!(lib.path().join("docs/sub/note.txt").is_file());
        let errs: Vec<&str> = err.lines().collect();
        assert_eq!(
            errs,
            [
                "shelf: get nope.txt: no such file or directory",
                "shelf: cd nope: no such file or directory",
                "shelf: unknown command \"bogus\"; try help",
            ],
            "{err}"
        );
    }

    #[test]
    fn interactive_prompt_and_quit() {
        let lib = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(lib.path().join("d")).expect("mkdir");
        let (ok, out, _) = script(lib.path(), "cd d\nbogus\nquit\nls\n", true);
        assert!(ok, "interactive sessions end successfully");
        assert_eq!(out, "shelf:/> shelf:/d> shelf:/d> ");
        let (_, out, _) = script(lib.path(), "help\n", false);
        assert!(out.contains("get REMOTE [LOCAL]"));
    }
}
