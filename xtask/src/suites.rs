//! `cargo xtask test`: the host tests and the VM suites, with one summary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::kernels::Series;
use crate::report::{self, Counts, SummaryLine};
use crate::util::{describe, fmt_duration, repo_root, say, step};

/// The VM suites run by default, in order.
pub const DEFAULT_SUITES: &[&str] = &[
    "walkthrough",
    "badinput",
    "burst",
    "perf",
    "regress",
    "seedclient",
    "fuzz",
];
/// Default guest command of `initramfs`.
pub const DEFAULT_RUN: &str =
    "kern2usr-vmtest suite walkthrough badinput burst perf regress seedclient fuzz";
/// Guest command of `demo`.
pub const DEMO_RUN: &str = "kern2usr-vmtest demo";

/// Options of `cargo xtask test`.
#[derive(Args)]
pub struct TestArgs {
    /// Kernel series to boot (repeatable; default: 6.1, 6.12 and 7.3-debug;
    /// for `--module rust` only 7.3-debug).
    #[arg(long, value_enum)]
    kernel: Vec<Series>,
    /// Only `cargo test --workspace`.
    #[arg(long, conflicts_with = "vm_only")]
    host_only: bool,
    /// Only the VM suites.
    #[arg(long)]
    vm_only: bool,
    /// VM suite to run (repeatable; default: walkthrough badinput burst
    /// perf regress seedclient fuzz).
    #[arg(long = "suite", value_name = "NAME")]
    suites: Vec<String>,
    /// Module implementation, the directory under kernel/ (repeatable;
    /// default: c and rust, each on its default kernels).
    #[arg(long = "module", value_name = "MODULE")]
    modules: Vec<String>,
    /// Kill each QEMU run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// Runs `cargo test --workspace`, streaming its output, and sums the
/// `test result:` lines.
fn host_tests() -> Result<(Option<Counts>, Option<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut c = Command::new(cargo);
    c.args(["test", "--workspace"]).current_dir(repo_root());
    say(format!("host: {}", describe(&c)));
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("could not read cargo test's output")?;
            println!("{line}");
            out.push_str(&line);
            out.push('\n');
        }
    }
    let status = child.wait().context("could not wait for cargo test")?;
    let counts = report::cargo_test_counts(&out);
    let note = if status.success() {
        None
    } else {
        Some(format!("cargo test --workspace exited with {status}"))
    };
    Ok((counts, note))
}

/// One VM run: the summary lines of its suites.
fn vm_suites(series: Series, module: &str, suites: &[String], timeout: u64) -> Vec<SummaryLine> {
    let run = format!("kern2usr-vmtest suite {}", suites.join(" "));
    let name = format!("{module}@{series}");
    let outcome = (|| {
        let (kernel, image) = crate::prepare(series, None, Some(module), true, &run)?;
        let boot =
            crate::qemu::Boot::of(&name, series, &kernel, &image, Duration::from_secs(timeout));
        step(format!("boot {} in QEMU", kernel.kernel.release()), || {
            crate::qemu::boot(&boot)
        })
    })();
    let (console, failure) = match outcome {
        Ok(o) => {
            let failure = o.failure.clone();
            if let Some(f) = &failure {
                println!("VM run {name} FAILED: {f}");
            }
            (o.console, failure)
        }
        Err(e) => {
            println!("VM run {name} FAILED before or while booting: {e:#}");
            (Vec::new(), Some(format!("VM run failed: {e:#}")))
        }
    };
    let results = report::suite_results(&console);
    suites
        .iter()
        .map(|suite| {
            let counts = results
                .iter()
                .rev()
                .find(|(n, _)| n == suite)
                .map(|(_, c)| *c);
            let note = match (&failure, counts) {
                (Some(_), _) => Some("VM run failed".to_string()),
                (None, None) => Some("no result line from the guest".to_string()),
                (None, Some(_)) => None,
            };
            SummaryLine {
                name: format!("{name}/{suite}"),
                counts,
                note,
            }
        })
        .collect()
}

/// The kernels a module is tested on by default: the Rust module needs a
/// kernel built with Rust support, so only 7.3-debug.
pub fn default_kernels(module: &str) -> Vec<Series> {
    match module {
        "rust" => vec![Series::V7_3Debug],
        _ => Series::ALL.to_vec(),
    }
}

/// The (module, kernel) pairs to test. Without `--module`, every module
/// on the kernels it can run on; without `--kernel`, each module's default
/// kernels.
fn test_pairs(modules: &[String], kernels: &[Series]) -> Vec<(String, Series)> {
    let defaulted = modules.is_empty();
    let modules: Vec<String> = if defaulted {
        DEFAULT_MODULES.iter().map(|m| m.to_string()).collect()
    } else {
        modules.to_vec()
    };
    let mut pairs = Vec::new();
    for module in modules {
        let runs_on = default_kernels(&module);
        let chosen = if kernels.is_empty() {
            runs_on.clone()
        } else {
            kernels.to_vec()
        };
        for series in chosen {
            // An explicit --module on a kernel it cannot run on is the
            // user's call; a defaulted one is skipped there.
            if !defaulted || runs_on.contains(&series) {
                pairs.push((module.clone(), series));
            }
        }
    }
    pairs
}

/// Module implementations `cargo xtask test` runs by default.
pub const DEFAULT_MODULES: [&str; 2] = ["c", "rust"];

/// `cargo xtask test`.
pub fn test(args: &TestArgs) -> Result<()> {
    let start = Instant::now();
    let mut lines = Vec::new();
    // Host tests first: they are quick and catch most mistakes.
    let mut host = None;
    if !args.vm_only {
        let t = Instant::now();
        let (counts, note) = host_tests()?;
        println!("    host tests took {}", fmt_duration(t.elapsed()));
        let note = note.or_else(|| {
            counts
                .is_none()
                .then(|| "no `test result:` lines".to_string())
        });
        host = Some(SummaryLine {
            name: "host".to_string(),
            counts,
            note,
        });
    }
    if !args.host_only {
        let suites: Vec<String> = if args.suites.is_empty() {
            DEFAULT_SUITES.iter().map(|s| s.to_string()).collect()
        } else {
            args.suites.clone()
        };
        for (module, series) in test_pairs(&args.modules, &args.kernel) {
            let t = Instant::now();
            say(format!(
                "VM suites on {module}@{series}: {}",
                suites.join(" ")
            ));
            lines.extend(vm_suites(series, &module, &suites, args.timeout));
            println!(
                "    VM suites on {module}@{series} took {}",
                fmt_duration(t.elapsed())
            );
        }
    }
    lines.extend(host);
    println!();
    println!("summary (wall time {}):", fmt_duration(start.elapsed()));
    for l in &lines {
        println!("{}", l.render());
    }
    let total = report::total(&lines);
    println!("total: {} passed, {} failed", total.passed, total.failed);
    let failed: Vec<&str> = lines
        .iter()
        .filter(|l| l.failed())
        .map(|l| l.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("failed or missing: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_kernels_per_module() {
        assert_eq!(
            default_kernels("c"),
            [Series::V6_1, Series::V6_12, Series::V7_3Debug]
        );
        assert_eq!(default_kernels("rust"), [Series::V7_3Debug]);
    }
}

#[cfg(test)]
mod pair_tests {
    use super::*;

    #[test]
    fn default_pairs_run_rust_only_where_it_can() {
        let pairs = test_pairs(&[], &[]);
        let names: Vec<String> = pairs.iter().map(|(m, s)| format!("{m}@{s}")).collect();
        assert_eq!(names, ["c@6.1", "c@6.12", "c@7.3-debug", "rust@7.3-debug"]);
        let on_612 = test_pairs(&[], &[Series::V6_12]);
        assert_eq!(on_612, [("c".to_string(), Series::V6_12)]);
        let forced = test_pairs(&["rust".to_string()], &[Series::V6_12]);
        assert_eq!(forced, [("rust".to_string(), Series::V6_12)]);
    }
}
