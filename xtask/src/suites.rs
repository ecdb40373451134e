//! `cargo xtask test`: the host tests and the VM suites, with one summary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::kernels::Series;
use crate::report::{self, Counts, SummaryLine};
use crate::util::{describe, fmt_duration, repo_root, say, stage};

/// The VM suites run by default, in order.
pub const DEFAULT_SUITES: &[&str] = &[
    "walkthrough",
    "badinput",
    "burst",
    "perf",
    "regress",
    "seedclient",
    "channels",
    "producer",
    "libchan",
    "ring",
    "fuzz",
];
/// Default guest command of `initramfs`.
pub const DEFAULT_RUN: &str =
    "kern2usr-vmtest suite walkthrough badinput burst perf regress seedclient channels producer libchan ring fuzz";
/// Guest command of `demo`.
pub const DEMO_RUN: &str = "kern2usr-vmtest demo";

/// Options of `cargo xtask test`.
#[derive(Args)]
pub struct TestArgs {
    /// Kernel series to boot (repeatable; default: 6.1, 6.12, 7.3-debug and
    /// 7.3-kcsan; for `--module rust` only 7.3-debug and 7.3-kcsan).
    #[arg(long, value_enum)]
    kernel: Vec<Series>,
    /// Only `cargo test --workspace`.
    #[arg(long, conflicts_with = "vm_only")]
    host_only: bool,
    /// Only the VM suites.
    #[arg(long)]
    vm_only: bool,
    /// VM suite to run (repeatable; default: walkthrough badinput burst
    /// perf regress seedclient channels fuzz).
    #[arg(long = "suite", value_name = "NAME")]
    suites: Vec<String>,
    /// Module implementation, the directory under kernel/ (repeatable;
    /// default: c and rust, each on its default kernels).
    #[arg(long = "module", value_name = "MODULE")]
    modules: Vec<String>,
    /// Kill each QEMU run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Skip the DKMS builds (by default `dkms build` runs for the C module
    /// on 6.1 and 6.12 when they are tested, and c@6.12 loads its module).
    #[arg(long)]
    no_dkms: bool,
}

/// The kernel whose C-module VM run loads the module built by DKMS.
pub const DKMS_LOADED_ON: Series = Series::V6_12;

/// The guest prints this and the sha256 of the module it loads.
const KO_MARKER: &str = "K2U-KO";

/// The DKMS builds for the C module's Debian kernels among `pairs`, one
/// summary line each (`dkms@6.12: 1 passed`).
fn dkms_builds(pairs: &[(String, Series)]) -> (Vec<crate::dkms::Built>, Vec<SummaryLine>) {
    let series: Vec<Series> = crate::dkms::DEFAULT_KERNELS
        .into_iter()
        .filter(|s| pairs.iter().any(|(m, p)| m == "c" && p == s))
        .collect();
    if series.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let line = |s: &Series, failure: Option<String>| SummaryLine {
        name: format!("dkms@{s}"),
        counts: Some(Counts {
            passed: u64::from(failure.is_none()),
            failed: u64::from(failure.is_some()),
        }),
        note: failure,
    };
    match crate::dkms::dkms(&series) {
        Ok(built) => {
            let lines = series
                .iter()
                .map(|s| {
                    let missing =
                        (!built.iter().any(|b| b.series == *s)).then(|| "no module".to_string());
                    line(s, missing)
                })
                .collect();
            (built, lines)
        }
        Err(e) => {
            println!("DKMS builds FAILED: {e:#}");
            let lines = series
                .iter()
                .map(|s| line(s, Some("dkms build failed".to_string())))
                .collect();
            (Vec::new(), lines)
        }
    }
}

impl TestArgs {
    /// Whether only the host tests run (no packages, no locks needed).
    pub fn host_only(&self) -> bool {
        self.host_only
    }
}

/// Runs `cargo test --workspace`, streaming its output, and sums the
/// `test result:` lines.
fn host_tests() -> Result<(Option<Counts>, Option<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut c = Command::new(cargo);
    // --all-features: the library's tokio, serde and testing features
    // too; cargo test also builds every example and runs the doctests.
    c.args(["test", "--workspace", "--all-features"])
        .current_dir(repo_root());
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
    let note = if !status.success() {
        Some(format!("cargo test --workspace exited with {status}"))
    } else {
        match library_docs_clean()? {
            Some(note) => Some(note),
            None => crate::msrv::check()?,
        }
    };
    Ok((counts, note))
}

/// `RUSTDOCFLAGS=-Dwarnings cargo doc -p kern2usr --no-deps`: the
/// library's documentation builds without a warning. A note if not.
fn library_docs_clean() -> Result<Option<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut c = Command::new(cargo);
    c.args(["doc", "-p", "kern2usr", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-Dwarnings")
        .current_dir(repo_root());
    say(format!("host: RUSTDOCFLAGS=-Dwarnings {}", describe(&c)));
    let status = c.status().context("could not start cargo doc")?;
    Ok((!status.success()).then(|| format!("cargo doc -p kern2usr exited with {status}")))
}

/// One VM run: the summary lines of its suites.
fn vm_suites(
    series: Series,
    module: &str,
    suites: &[String],
    timeout: u64,
    dkms: Option<&crate::dkms::Built>,
) -> Vec<SummaryLine> {
    let mut run = format!("kern2usr-vmtest suite {}", suites.join(" "));
    if dkms.is_some() {
        run = format!("echo {KO_MARKER} $(sha256sum kern/kern2usr.ko); {run}");
    }
    let name = format!("{module}@{series}");
    // The summary names the exact kernel version once it is known.
    let mut label = name.clone();
    let outcome = (|| {
        let prebuilt = dkms.map(|b| b.ko.as_path());
        let (kernel, image) =
            crate::prepare_from(series, None, Some(module), prebuilt, true, &run)?;
        label = format!("{name} ({})", kernel.kernel.version());
        let boot =
            crate::qemu::Boot::of(&name, series, &kernel, &image, Duration::from_secs(timeout));
        stage(format!("VM run {name} ({})", boot.accel.name()), || {
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
    let failure = failure.or_else(|| {
        let b = dkms?;
        let loaded = console
            .iter()
            .find_map(|l| l.trim().strip_prefix(KO_MARKER))
            .and_then(|rest| rest.split_whitespace().next());
        if loaded == Some(b.sha256.as_str()) {
            say(format!(
                "{name}: the guest loaded the DKMS build {} (sha256 {}, srcversion {}, vermagic {})",
                b.ko.display(),
                b.sha256,
                b.srcversion,
                b.vermagic
            ));
            None
        } else {
            Some(format!(
                "the guest's module (sha256 {loaded:?}) is not the DKMS build (sha256 {})",
                b.sha256
            ))
        }
    });
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
                name: format!("{label}/{suite}"),
                counts,
                note,
            }
        })
        .collect()
}

/// The kernels a module is tested on by default: the Rust module needs a
/// kernel built with Rust support, so only 7.3-debug and 7.3-kcsan.
pub fn default_kernels(module: &str) -> Vec<Series> {
    match module {
        "rust" => vec![Series::V7_3Debug, Series::V7_3Kcsan],
        _ => Series::ALL.to_vec(),
    }
}

/// Whether `module` can run on `series` at all (the Rust module needs a
/// kernel built here with Rust).
fn can_run_on(module: &str, series: Series) -> bool {
    module != "rust" || series.built_from_source()
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
        let chosen = if kernels.is_empty() {
            default_kernels(&module)
        } else {
            kernels.to_vec()
        };
        for series in chosen {
            // An explicit --module on a kernel it cannot run on is the
            // user's call; a defaulted one is skipped there.
            if !defaulted || can_run_on(&module, series) {
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
        let pairs = test_pairs(&args.modules, &args.kernel);
        let mut built = Vec::new();
        if !args.no_dkms {
            let t = Instant::now();
            let (b, dkms_lines) = dkms_builds(&pairs);
            if !dkms_lines.is_empty() {
                println!("    DKMS builds took {}", fmt_duration(t.elapsed()));
            }
            built = b;
            lines.extend(dkms_lines);
        }
        for (module, series) in pairs {
            let t = Instant::now();
            let dkms = built
                .iter()
                .find(|b| module == "c" && series == DKMS_LOADED_ON && b.series == series);
            say(format!(
                "VM suites on {module}@{series}{}: {}",
                if dkms.is_some() {
                    " (module built by DKMS)"
                } else {
                    ""
                },
                suites.join(" ")
            ));
            lines.extend(vm_suites(series, &module, &suites, args.timeout, dkms));
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
    println!();
    print!(
        "{}",
        report::stage_table(&crate::util::stages(), start.elapsed())
    );
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
            [
                Series::V6_1,
                Series::V6_12,
                Series::V7_3,
                Series::V7_3Debug,
                Series::V7_3Kcsan
            ]
        );
        assert_eq!(
            default_kernels("rust"),
            [Series::V7_3Debug, Series::V7_3Kcsan]
        );
    }
}

#[cfg(test)]
mod pair_tests {
    use super::*;

    #[test]
    fn default_pairs_run_rust_only_where_it_can() {
        let pairs = test_pairs(&[], &[]);
        let names: Vec<String> = pairs.iter().map(|(m, s)| format!("{m}@{s}")).collect();
        assert_eq!(
            names,
            [
                "c@6.1",
                "c@6.12",
                "c@7.3",
                "c@7.3-debug",
                "c@7.3-kcsan",
                "rust@7.3-debug",
                "rust@7.3-kcsan"
            ]
        );
        let on_612 = test_pairs(&[], &[Series::V6_12]);
        assert_eq!(on_612, [("c".to_string(), Series::V6_12)]);
        let forced = test_pairs(&["rust".to_string()], &[Series::V6_12]);
        assert_eq!(forced, [("rust".to_string(), Series::V6_12)]);
        let kcsan = test_pairs(&[], &[Series::V7_3Kcsan]);
        let names: Vec<String> = kcsan.iter().map(|(m, s)| format!("{m}@{s}")).collect();
        assert_eq!(names, ["c@7.3-kcsan", "rust@7.3-kcsan"]);
    }
}
