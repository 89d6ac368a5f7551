//! `shelf completions SHELL` and `shelf man [DIR]`: shell completions and man pages generated
//! from the clap definitions of [`super::Cli`], so they never drift from the real options.
//!
//! Both subcommands are hidden from `--help`: they are for packagers and install scripts
//! (docs/INSTALL.md), not for daily use.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

/// Print a shell completion script.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    shelf completions bash > /etc/bash_completion.d/shelf\n  \
    shelf completions zsh > \"${fpath[1]}/_shelf\"\n  \
    shelf completions fish > ~/.config/fish/completions/shelf.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Write man pages: shelf.1 and one shelf-SUBCOMMAND.1 per subcommand.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    shelf man | man -l -\n  \
    shelf man /usr/local/share/man/man1")]
pub struct ManArgs {
    /// Directory to write the pages into; without it, shelf.1 goes to standard output.
    pub dir: Option<PathBuf>,
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = super::Cli::command();
    // clap_complete panics on a failed write; buffering first turns a closed pipe into an
    // error that [`super::report`] knows.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "shelf", &mut buf);
    out.write_all(&buf)
}

/// Writes `shelf.1` to `out`.
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(super::Cli::command()).render(out)
}

/// Writes `shelf.1` and `shelf-SUB.1` for every visible subcommand into `dir`; returns the
/// files written.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let cmd = super::Cli::command();
    let mut written = Vec::new();
    let mut write_page = |name: String, page: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("shelf-{}", sub.get_name());
        // The page's title and synopsis use the command's name. clap takes only `&'static str`
        // names without its `string` feature; a few bytes leaked once per page is fine here.
        let title: &'static str = Box::leak(name.clone().into_boxed_str());
        let bin_name = format!("shelf {}", sub.get_name());
        write_page(name, sub.clone().name(title).bin_name(bin_name))?;
    }
    write_page("shelf".into(), cmd.clone())?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_every_subcommand() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out).expect("write to a Vec");
            let text = String::from_utf8(out).expect("completion scripts are UTF-8");
            for word in ["mount", "umount", "get", "put", "token-file"] {
                assert!(text.contains(word), "{shell:?} completion lacks {word}");
            }
        }
    }

    #[test]
    fn the_man_page_has_the_options_and_examples() {
        let mut out = Vec::new();
        man_page(&mut out).expect("render shelf.1");
        let text = String::from_utf8(out).expect("man pages are UTF-8");
        assert!(
            text.starts_with(".ie") || text.contains(".TH shelf"),
            "{text}"
        );
        assert!(text.contains("token\\-file"), "{text}");
        assert!(text.contains("shelf mount 127.0.0.1:7878"), "{text}");
    }

    #[test]
    fn man_pages_are_written_per_subcommand() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = man_pages(dir.path()).expect("write man pages");
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"shelf.1".to_string()), "{names:?}");
        assert!(names.contains(&"shelf-mount.1".to_string()), "{names:?}");
        assert!(
            !names.contains(&"shelf-man.1".to_string()),
            "hidden: {names:?}"
        );
        let mount = std::fs::read_to_string(dir.path().join("shelf-mount.1")).expect("read");
        assert!(mount.contains(".TH shelf-mount"), "{mount}");
        assert!(mount.contains("cache\\-size"), "{mount}");
    }
}
