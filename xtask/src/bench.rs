//! `cargo xtask bench`: boot a kernel running `kern2usr bench --dump`,
//! extract the JSON it prints between K2U-FILE markers
//! (`kern2usr_cli::bench::dump`) into a file on the host, and draw the
//! plot from it here ([`crate::plot`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::kernels::Series;
use crate::util::{create_dir, say, step, target_dir};

/// Options of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Kernel series to boot.
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: Series,
    /// Debian ABI to use instead of the pinned one (see `fetch`).
    #[arg(long)]
    kernel_version: Option<String>,
    /// Module implementation: the directory under kernel/.
    #[arg(long, default_value = "c")]
    module: String,
    /// Rounds per mechanism and size (default: the guest's, 10000 at 4 KiB
    /// down to 1000 at 1 MiB).
    #[arg(long)]
    rounds: Option<u64>,
    /// Buffer sizes (default: 4096,65536,1048576).
    #[arg(long)]
    sizes: Option<String>,
    /// Repeats of each mechanism, interleaved (default: the guest's, 5).
    #[arg(long)]
    repeats: Option<u32>,
    /// Mechanisms, comma-separated (default: all of them).
    #[arg(long)]
    mechanisms: Option<String>,
    /// Channel counts of the several-channels runs, or `none` (default:
    /// 1,2,4,8).
    #[arg(long)]
    channels: Option<String>,
    /// Where to write the results as JSON (default: target/bench/bench.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Where to write the latency plot, drawn from the JSON (default:
    /// target/bench/bench.svg).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Kill QEMU after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Boot nothing: draw the plot again from the JSON file (--json) of an
    /// earlier run.
    #[arg(long)]
    replot: bool,
}

impl BenchArgs {
    /// Only `--replot`: no VM, no packages.
    pub fn replot_only(&self) -> bool {
        self.replot
    }
}

/// What the guest runs besides the defaults.
#[derive(Default)]
pub struct GuestOptions<'a> {
    /// `--rounds`.
    pub rounds: Option<u64>,
    /// `--sizes`.
    pub sizes: Option<&'a str>,
    /// `--repeats`.
    pub repeats: Option<u32>,
    /// `--mechanisms`.
    pub mechanisms: Option<&'a str>,
    /// `--channels`.
    pub channels: Option<&'a str>,
}

/// A comma-separated list of names or numbers, safe on the kernel command
/// line (letters, digits, `-` and `,` only).
fn plain_list(what: &str, s: &str) -> Result<()> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ',' || c == '-')
    {
        bail!("--{what} must be a comma-separated list of names or numbers, not {s:?}");
    }
    Ok(())
}

/// The guest command.
pub fn guest_command(o: &GuestOptions<'_>) -> Result<String> {
    let (rounds, sizes) = (o.rounds, o.sizes);
    let mut run = "kern2usr bench --dump".to_string();
    if let Some(r) = rounds {
        if r == 0 {
            bail!("--rounds must be at least 1");
        }
        run.push_str(&format!(" --rounds {r}"));
    }
    if let Some(s) = sizes {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == ',') {
            bail!("--sizes must be a comma-separated list like 4096,64k,1M, not {s:?}");
        }
        run.push_str(&format!(" --sizes {s}"));
    }
    if let Some(r) = o.repeats {
        if r == 0 {
            bail!("--repeats must be at least 1");
        }
        run.push_str(&format!(" --repeats {r}"));
    }
    for (what, value) in [("mechanisms", o.mechanisms), ("channels", o.channels)] {
        if let Some(v) = value {
            plain_list(what, v)?;
            run.push_str(&format!(" --{what} {v}"));
        }
    }
    Ok(run)
}

fn write_out(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    std::fs::write(path, data).with_context(|| format!("could not write {}", path.display()))
}

/// Draws the plot of the JSON `text` into `path`.
pub fn write_plot(text: &str, path: &Path) -> Result<()> {
    let report: kern2usr_cli::bench::JsonReport =
        serde_json::from_str(text).context("the guest's bench.json does not parse")?;
    let svg = crate::plot::render(&report)?;
    write_out(path, svg.as_bytes())
}

/// `cargo xtask bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let run = guest_command(&GuestOptions {
        rounds: args.rounds,
        sizes: args.sizes.as_deref(),
        repeats: args.repeats,
        mechanisms: args.mechanisms.as_deref(),
        channels: args.channels.as_deref(),
    })?;
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("bench.json"));
    let plot = args
        .plot
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("bench.svg"));
    if args.replot {
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("could not read {}", json.display()))?;
        write_plot(&text, &plot)?;
        say(format!(
            "bench: plot of {} drawn to {}",
            json.display(),
            plot.display()
        ));
        return Ok(());
    }
    let series = args.kernel;
    // The peers (netlink, relay) run from their own module, built here.
    let (kernel, image) = crate::prepare_with(
        series,
        args.kernel_version.as_deref(),
        Some(&args.module),
        None,
        true,
        &run,
        &|kernel| {
            let ko = crate::util::stage(format!("build module peers for {series}"), || {
                crate::build::build_peers(kernel)
            })?;
            Ok(vec![ko])
        },
    )?;
    let name = format!("{}@{series}", args.module);
    let boot = crate::qemu::Boot::of(
        &name,
        series,
        &kernel,
        &image,
        Duration::from_secs(args.timeout),
    );
    let outcome = step(format!("boot {} in QEMU", kernel.kernel.release()), || {
        crate::qemu::boot(&boot)
    })?;
    // The files first: a failed run's numbers are worth keeping too.
    let extracted = kern2usr_cli::bench::dump::extract(&outcome.console, "bench.json");
    if let Ok(text) = &extracted {
        write_out(&json, text.as_bytes())?;
        say(format!("bench: bench.json written to {}", json.display()));
        write_plot(text, &plot)?;
        say(format!("bench: plot drawn to {}", plot.display()));
    }
    crate::qemu::check(&name, &outcome)?;
    if let Err(e) = extracted {
        bail!("the guest's JSON did not arrive: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_command_carries_the_options() -> Result<()> {
        let none = GuestOptions::default();
        assert_eq!(guest_command(&none)?, "kern2usr bench --dump");
        assert_eq!(
            guest_command(&GuestOptions {
                rounds: Some(500),
                sizes: Some("4096,1M"),
                repeats: Some(3),
                mechanisms: Some("floor,adaptive-poll"),
                channels: Some("none"),
            })?,
            "kern2usr bench --dump --rounds 500 --sizes 4096,1M --repeats 3 \
             --mechanisms floor,adaptive-poll --channels none"
        );
        let bad = |o: GuestOptions<'_>| guest_command(&o).is_err();
        assert!(bad(GuestOptions {
            rounds: Some(0),
            ..GuestOptions::default()
        }));
        assert!(bad(GuestOptions {
            repeats: Some(0),
            ..GuestOptions::default()
        }));
        assert!(bad(GuestOptions {
            sizes: Some("4096; reboot"),
            ..GuestOptions::default()
        }));
        assert!(bad(GuestOptions {
            mechanisms: Some("floor reboot"),
            ..GuestOptions::default()
        }));
        assert!(bad(GuestOptions {
            channels: Some(""),
            ..GuestOptions::default()
        }));
        Ok(())
    }

    #[test]
    fn files_written_by_the_guest_are_extracted_and_plotted() -> Result<()> {
        let mut run = kern2usr_cli::bench::Run::new(kern2usr_cli::bench::Mechanism::Floor, 4096, 3);
        for v in [10_000, 11_000, 30_000] {
            run.hist.record(v);
        }
        run.rounds = 3;
        let report = kern2usr_cli::bench::Report {
            runs: vec![run],
            ..Default::default()
        };
        let text = report.json_text();
        let mut out = Vec::new();
        kern2usr_cli::bench::dump::write_file(&mut out, "bench.json", &text)?;
        let console: Vec<String> = String::from_utf8(out)?
            .lines()
            .map(|l| format!("c@6.12| {l}"))
            .collect();
        let data = kern2usr_cli::bench::dump::extract(&console, "bench.json")
            .map_err(anyhow::Error::msg)?;
        assert_eq!(data, text);
        let dir = std::env::temp_dir().join(format!("k2u-xtask-bench-{}", std::process::id()));
        let path = dir.join("sub").join("bench.json");
        write_out(&path, data.as_bytes())?;
        assert_eq!(std::fs::read_to_string(&path)?, data);
        let svg = dir.join("bench.svg");
        write_plot(&data, &svg)?;
        let drawn = std::fs::read_to_string(&svg)?;
        let texts = crate::plot::tests::texts(&drawn);
        assert!(
            texts.iter().any(|t| t.starts_with("floor: p50 ")),
            "{texts:?}"
        );
        assert!(write_plot("not json", &svg).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
