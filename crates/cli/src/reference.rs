//! The README's command-line reference: every subcommand, flag and exit
//! code of `kern2usr`, rendered as Markdown tables from the clap definition
//! ([`crate::args::command`]). The README holds a copy between [`BEGIN`]
//! and [`END`]; a test compares it with [`markdown`] so it cannot drift, and
//! `cargo xtask man --readme` rewrites it.

use std::fmt::Write as _;

use clap::builder::PossibleValue;
use clap::{Arg, ArgAction, Command};

use crate::args::EXIT_CODES;

/// The line before the generated block in README.md.
pub const BEGIN: &str = "<!-- cli-reference: generated from crates/cli/src/args.rs by \
                         `cargo xtask man --readme`; edit the doc comments there, not here -->";
/// The line after it.
pub const END: &str = "<!-- cli-reference end -->";

/// One line of help text, safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `--device <PATH>`, `-h, --help`, `<COMMAND>`.
fn arg_name(arg: &Arg) -> String {
    if arg.is_positional() {
        let name = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string);
        return format!("`<{name}>`");
    }
    let mut names = Vec::new();
    if let Some(s) = arg.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("--{l}"));
    }
    let mut text = names.join(", ");
    if takes_value(arg) {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string);
        let _ = write!(text, " <{value}>");
    }
    format!("`{text}`")
}

fn takes_value(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Set | ArgAction::Append)
}

/// The default as shown in the table (empty for switches).
fn default_of(arg: &Arg) -> String {
    if !takes_value(arg) {
        return String::new();
    }
    let values: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if values.is_empty() {
        String::new()
    } else {
        format!("`{}`", values.join(","))
    }
}

/// `text`, then `more` as a new sentence.
fn sentence(text: &mut String, more: &str) {
    let text_end = text.trim_end().chars().last();
    if text_end.is_some_and(|c| !matches!(c, '.' | '!' | '?' | ':')) {
        text.push('.');
    }
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(more);
}

/// One table row: `| a | b |`, an empty cell as `| |`.
fn row(cells: &[&str]) -> String {
    let mut line = String::from("|");
    for c in cells {
        if c.is_empty() {
            line.push_str(" |");
        } else {
            let _ = write!(line, " {c} |");
        }
    }
    line.push('\n');
    line
}

fn arg_row(arg: &Arg) -> String {
    row(&["", &arg_name(arg), &default_of(arg), &meaning_of(arg)])
}

fn meaning_of(arg: &Arg) -> String {
    let mut text = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v: &PossibleValue| format!("`{}`", v.get_name()))
        .collect();
    if takes_value(arg) && !values.is_empty() {
        sentence(&mut text, &format!("One of: {}.", values.join(", ")));
    }
    if arg.is_required_set() {
        sentence(&mut text, "Required.");
    }
    cell(&text)
}

/// The arguments of `cmd` a user can pass (hidden ones and the help of each
/// subcommand left out).
fn visible_args(cmd: &Command, top: bool) -> Vec<&Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter(|a| top || !matches!(a.get_action(), ArgAction::Help | ArgAction::HelpLong))
        .collect()
}

/// The command line prepared the way the binary sees it (help and version
/// flags added), without clap's `help` subcommand.
pub fn built(cmd: Command) -> Command {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The subcommands a user sees, in definition order.
pub fn subcommands(cmd: &Command) -> Vec<&Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect()
}

/// The generated block (without the markers): the subcommand and flag table
/// and the exit code table.
pub fn markdown(cmd: Command) -> String {
    let cmd = built(cmd);
    let name = cmd.get_name().to_owned();
    let mut out = String::new();
    out.push_str("| command | flag or argument | default | meaning |\n");
    out.push_str("| --- | --- | --- | --- |\n");
    let about = cmd.get_about().map(ToString::to_string).unwrap_or_default();
    out.push_str(&row(&[&format!("`{name}`"), "", "", &cell(&about)]));
    for arg in visible_args(&cmd, true) {
        out.push_str(&arg_row(arg));
    }
    for sub in subcommands(&cmd) {
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        let title = format!("`{name} {}`", sub.get_name());
        out.push_str(&row(&[&title, "", "", &cell(&about)]));
        for arg in visible_args(sub, false) {
            out.push_str(&arg_row(arg));
        }
    }
    out.push('\n');
    out.push_str("| exit code | meaning |\n");
    out.push_str("| ---: | --- |\n");
    for (code, meaning) in EXIT_CODES {
        let _ = writeln!(out, "| {code} | {} |", cell(meaning));
    }
    out
}

/// The block between the markers in `readme`, if both are there in order.
pub fn block_in(readme: &str) -> Option<&str> {
    let start = readme.find(BEGIN)? + BEGIN.len();
    let len = readme[start..].find(END)?;
    Some(readme[start..start + len].trim_start_matches('\n'))
}

/// `readme` with the block between the markers replaced by `block`.
pub fn replace_block(readme: &str, block: &str) -> Option<String> {
    let start = readme.find(BEGIN)? + BEGIN.len();
    let end = start + readme[start..].find(END)?;
    Some(format!("{}\n{block}{}", &readme[..start], &readme[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::command;

    #[test]
    fn names_every_subcommand_flag_and_exit_code() {
        let text = markdown(command());
        let cmd = built(command());
        assert!(!subcommands(&cmd).is_empty());
        for sub in subcommands(&cmd) {
            let row = format!("| `kern2usr {}` |", sub.get_name());
            assert!(text.contains(&row), "no row for {}", sub.get_name());
            for arg in visible_args(sub, false) {
                if let Some(long) = arg.get_long() {
                    assert!(
                        text.contains(&format!("`--{long}")),
                        "no --{long} of {}",
                        sub.get_name()
                    );
                }
            }
        }
        for (code, _) in EXIT_CODES {
            assert!(
                text.contains(&format!("\n| {code} | ")),
                "no exit code {code}"
            );
        }
        assert!(text.contains("`-h, --help`") && text.contains("`-V, --version`"));
        assert!(!text.contains("params-dir"), "hidden flags stay hidden");
        assert!(!text.contains("`kern2usr help`"));
    }

    #[test]
    fn rows_carry_value_names_defaults_and_choices() {
        let text = markdown(command());
        let poll = format!(
            "| | `--poll-timeout <MS>` | `{}` |",
            kern2usr::abi::DEFAULT_POLL_TIMEOUT_MS
        );
        assert!(text.contains(&poll), "{text}");
        assert!(
            text.contains("How to acknowledge a round. One of: `round`, `eventfd`, `ioctl`. |"),
            "{text}"
        );
        assert!(text.contains("a number. Required. |"), "{text}");
        assert!(text.contains("| | `<COMMAND>` | |"), "{text}");
        assert!(text.contains("| | `--attach` | |"), "{text}");
        // Every row of the first table has four cells.
        let first = text.split("\n\n").next().unwrap_or_default();
        for line in first.lines() {
            let cells = line.replace("\\|", "").matches('|').count();
            assert_eq!(cells, 5, "{line}");
        }
    }

    #[test]
    fn a_new_flag_changes_the_table() {
        let before = markdown(command());
        let after = markdown(command().mut_subcommand("stats", |s| {
            s.arg(
                Arg::new("not-a-flag")
                    .long("not-a-flag")
                    .help("A new flag."),
            )
        }));
        assert_ne!(before, after);
        assert!(after.contains("| | `--not-a-flag <NOT-A-FLAG>` | | A new flag. |"));
    }

    #[test]
    fn replaces_only_the_block() {
        let readme = format!("intro\n{BEGIN}\nold\n{END}\noutro\n");
        assert_eq!(block_in(&readme), Some("old\n"));
        let new = replace_block(&readme, "new\n").unwrap_or_default();
        assert_eq!(new, format!("intro\n{BEGIN}\nnew\n{END}\noutro\n"));
        assert_eq!(block_in(&new), Some("new\n"));
        assert_eq!(block_in("no markers"), None);
        assert_eq!(replace_block("no markers", "x"), None);
    }

    /// The README's copy is the generated one: run `cargo xtask man
    /// --readme` after changing the command line.
    #[test]
    fn readme_reference_matches_the_command_line() -> anyhow::Result<()> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path)?;
        let Some(block) = block_in(&readme) else {
            anyhow::bail!("README.md has no `{BEGIN}` ... `{END}` block");
        };
        assert!(
            block == markdown(command()),
            "README.md's CLI reference is out of date: run `cargo xtask man --readme`"
        );
        Ok(())
    }
}
