//! `cargo xtask man`: the `kern2usr` man pages (clap_mangen) and its bash,
//! zsh and fish completions (clap_complete), rendered from the clap
//! definition the binary parses (`kern2usr_cli::args::command`), into
//! `target/man/`; with `--readme`, also the README's reference table
//! (`kern2usr_cli::reference`). `cargo xtask package` installs the pages
//! and completions from the same renderer.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use clap_complete::Shell;
use kern2usr_cli::reference;

use crate::util::{create_dir, repo_root, say, target_dir};

/// Options of `cargo xtask man`.
#[derive(Args)]
pub struct ManArgs {
    /// Directory to write into (default: target/man).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Also rewrite the CLI reference table in README.md.
    #[arg(long)]
    readme: bool,
}

/// One generated file: its name and contents.
pub struct Generated {
    /// File name (`kern2usr.1`, `kern2usr-listen.1`, `kern2usr.bash`, ...).
    pub name: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Where Debian puts it, relative to `/` (man pages gzipped there).
    pub installed_as: String,
}

/// The command line, as the binary builds it (no `help` subcommand).
fn command() -> clap::Command {
    reference::built(kern2usr_cli::args::command())
}

/// `kern2usr.1` and one `kern2usr-<sub>.1` per subcommand.
pub fn man_pages() -> Result<Vec<Generated>> {
    let cmd = command();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let page = |c: clap::Command| -> Result<Generated> {
        let man = clap_mangen::Man::new(c)
            .source(format!("kern2usr {version}"))
            .manual("kern2usr manual");
        let name = man.get_filename();
        let mut data = Vec::new();
        man.render(&mut data)
            .with_context(|| format!("rendering {name}"))?;
        Ok(Generated {
            installed_as: format!("usr/share/man/man1/{name}.gz"),
            name,
            data,
        })
    };
    let mut main = page(cmd.clone())?;
    // The main page again, section by section: the exit codes as an EXIT
    // STATUS list instead of clap's `--help` paragraph under EXTRA.
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("kern2usr {version}"))
        .manual("kern2usr manual");
    let mut data = Vec::new();
    man.render_title(&mut data)?;
    man.render_name_section(&mut data)?;
    man.render_synopsis_section(&mut data)?;
    man.render_description_section(&mut data)?;
    man.render_options_section(&mut data)?;
    man.render_subcommands_section(&mut data)?;
    data.extend(exit_status_section().into_bytes());
    man.render_version_section(&mut data)?;
    main.data = data;
    let mut out = vec![main];
    for sub in reference::subcommands(&cmd) {
        out.push(page(sub.clone())?);
    }
    Ok(out)
}

/// Text for a roff line: `-` as `\-`, backslashes doubled, no control
/// character at the start.
fn roff_text(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// `.SH "EXIT STATUS"` with one `.TP` entry per exit code.
fn exit_status_section() -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in kern2usr_cli::args::EXIT_CODES {
        s.push_str(&format!(".TP\n{code}\n{}\n", roff_text(meaning)));
    }
    s
}

/// The bash, zsh and fish completions.
pub fn completions() -> Vec<Generated> {
    [
        (
            Shell::Bash,
            "kern2usr.bash",
            "usr/share/bash-completion/completions/kern2usr",
        ),
        (
            Shell::Zsh,
            "_kern2usr",
            "usr/share/zsh/vendor-completions/_kern2usr",
        ),
        (
            Shell::Fish,
            "kern2usr.fish",
            "usr/share/fish/vendor_completions.d/kern2usr.fish",
        ),
    ]
    .into_iter()
    .map(|(shell, name, installed_as)| {
        let mut cmd = command();
        let mut data = Vec::new();
        clap_complete::generate(shell, &mut cmd, "kern2usr", &mut data);
        Generated {
            name: name.to_string(),
            data,
            installed_as: installed_as.to_string(),
        }
    })
    .collect()
}

/// Man pages and completions.
pub fn all() -> Result<Vec<Generated>> {
    let mut v = man_pages()?;
    v.extend(completions());
    Ok(v)
}

/// Writes every generated file into `dir`; their paths.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>> {
    create_dir(dir)?;
    let mut paths = Vec::new();
    for g in all()? {
        let path = dir.join(&g.name);
        std::fs::write(&path, &g.data)
            .with_context(|| format!("could not write {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// Rewrites README.md's reference block; whether it changed.
fn update_readme() -> Result<bool> {
    let path = repo_root().join("README.md");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let block = reference::markdown(kern2usr_cli::args::command());
    let new = reference::replace_block(&text, &block).with_context(|| {
        format!(
            "{} has no CLI reference block (a `{}` line, then a `{}` line)",
            path.display(),
            reference::BEGIN,
            reference::END
        )
    })?;
    if new == text {
        return Ok(false);
    }
    std::fs::write(&path, new).with_context(|| format!("could not write {}", path.display()))?;
    Ok(true)
}

/// `cargo xtask man`.
pub fn man(args: &ManArgs) -> Result<()> {
    let dir = args.out.clone().unwrap_or_else(|| target_dir().join("man"));
    for path in write_all(&dir)? {
        say(format!("wrote {}", path.display()));
    }
    if args.readme {
        if update_readme()? {
            say("README.md: CLI reference rewritten");
        } else {
            say("README.md: CLI reference already up to date");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of a roff page with its escapes for `-` and the fonts
    /// undone.
    fn plain(page: &Generated) -> String {
        let mut text = String::from_utf8_lossy(&page.data).replace("\\-", "-");
        for font in ["\\fB", "\\fI", "\\fR"] {
            text = text.replace(font, "");
        }
        text
    }

    /// Each subcommand has a page, the main page names them all, and each
    /// page names every visible flag of its command: walked from the real
    /// command line, so a new flag without a page entry fails here.
    #[test]
    fn man_pages_name_every_subcommand_and_flag() -> Result<()> {
        let pages = man_pages()?;
        let cmd = command();
        let main = pages
            .iter()
            .find(|p| p.name == "kern2usr.1")
            .context("no kern2usr.1")?;
        let main_text = plain(main);
        assert!(main_text.contains("\n.TH kern2usr 1 "), "{main_text}");
        let subs = reference::subcommands(&cmd);
        assert_eq!(pages.len(), subs.len() + 1);
        for sub in subs {
            let name = sub.get_name();
            assert!(
                main_text.contains(&format!("kern2usr-{name}(1)")),
                "kern2usr.1 does not name {name}"
            );
            let page = pages
                .iter()
                .find(|p| p.name == format!("kern2usr-{name}.1"))
                .with_context(|| format!("no page for {name}"))?;
            let text = plain(page);
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                let named = match arg.get_long() {
                    Some(long) => text.contains(&format!("--{long}")),
                    None => text.contains(&format!("<{}>", arg.get_id().as_str().to_uppercase())),
                };
                assert!(named, "kern2usr-{name}.1 does not name {:?}", arg.get_id());
            }
        }
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                assert!(main_text.contains(&format!("--{long}")), "no --{long}");
            }
        }
        assert!(
            !main_text.contains("params-dir"),
            "hidden flags stay hidden"
        );
        // The exit codes are in the main page, each its own entry.
        assert!(main_text.contains(".SH \"EXIT STATUS\""), "{main_text}");
        assert!(!main_text.contains(".SH EXTRA"), "{main_text}");
        for (code, meaning) in kern2usr_cli::args::EXIT_CODES {
            assert!(
                main_text.contains(&format!(".TP\n{code}\n{meaning}\n")),
                "exit code {code} missing"
            );
        }
        Ok(())
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff_text("root-only"), "root\\-only");
        assert_eq!(roff_text(".x"), "\\&.x");
        assert_eq!(roff_text("a\\b"), "a\\eb");
    }

    #[test]
    fn completions_cover_the_subcommands_and_flags() {
        let all = completions();
        assert_eq!(all.len(), 3);
        let cmd = command();
        for c in &all {
            let text = String::from_utf8_lossy(&c.data);
            for sub in reference::subcommands(&cmd) {
                assert!(
                    text.contains(sub.get_name()),
                    "{}: {}",
                    c.name,
                    sub.get_name()
                );
                for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                    if let Some(long) = arg.get_long() {
                        // fish writes `-l attach`, bash and zsh `--attach`.
                        assert!(
                            text.contains(&format!("--{long}"))
                                || text.contains(&format!("-l {long}")),
                            "{}: --{long}",
                            c.name
                        );
                    }
                }
            }
        }
        let dests: Vec<&str> = all.iter().map(|c| c.installed_as.as_str()).collect();
        assert_eq!(
            dests,
            [
                "usr/share/bash-completion/completions/kern2usr",
                "usr/share/zsh/vendor-completions/_kern2usr",
                "usr/share/fish/vendor_completions.d/kern2usr.fish"
            ]
        );
    }

    #[test]
    fn writes_every_file() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("k2u-xtask-man-{}", std::process::id()));
        let paths = write_all(&dir)?;
        let names: Vec<String> = paths
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for want in [
            "kern2usr.1",
            "kern2usr-listen.1",
            "kern2usr.bash",
            "_kern2usr",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(paths
            .iter()
            .all(|p| p.metadata().is_ok_and(|m| m.len() > 0)));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
