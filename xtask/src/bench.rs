//! `cargo xtask bench`: boot a kernel running `kern2usr bench --dump` and
//! extract the JSON and the SVG it prints between K2U-FILE markers
//! (`kern2usr_cli::bench::dump`) into files on the host.

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
    /// Where to write the results as JSON (default: target/bench/bench.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Where to write the latency plot (default: target/bench/bench.svg).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Kill QEMU after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

/// The guest command.
pub fn guest_command(rounds: Option<u64>, sizes: Option<&str>) -> Result<String> {
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
    Ok(run)
}

fn write_out(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    std::fs::write(path, data).with_context(|| format!("could not write {}", path.display()))
}

/// `cargo xtask bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let run = guest_command(args.rounds, args.sizes.as_deref())?;
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("bench.json"));
    let plot = args
        .plot
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("bench.svg"));
    let series = args.kernel;
    let (kernel, image) = crate::prepare(
        series,
        args.kernel_version.as_deref(),
        Some(&args.module),
        true,
        &run,
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
    let mut missing = Vec::new();
    for (file, path) in [("bench.json", &json), ("bench.svg", &plot)] {
        match kern2usr_cli::bench::dump::extract(&outcome.console, file) {
            Ok(data) => {
                write_out(path, &data)?;
                say(format!("bench: {file} written to {}", path.display()));
            }
            Err(e) => missing.push(e),
        }
    }
    crate::qemu::check(&name, &outcome)?;
    if !missing.is_empty() {
        bail!("the guest's files did not arrive: {}", missing.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_command_carries_the_options() -> Result<()> {
        assert_eq!(guest_command(None, None)?, "kern2usr bench --dump");
        assert_eq!(
            guest_command(Some(500), Some("4096,1M"))?,
            "kern2usr bench --dump --rounds 500 --sizes 4096,1M"
        );
        assert!(guest_command(Some(0), None).is_err());
        assert!(guest_command(None, Some("4096; reboot")).is_err());
        Ok(())
    }

    #[test]
    fn files_written_by_the_guest_are_extracted() -> Result<()> {
        let mut out = Vec::new();
        kern2usr_cli::bench::dump::write_file(&mut out, "bench.json", b"{\"runs\":[]}\n")?;
        let console: Vec<String> = String::from_utf8(out)?
            .lines()
            .map(|l| format!("c@6.12| {l}"))
            .collect();
        let data = kern2usr_cli::bench::dump::extract(&console, "bench.json")
            .map_err(anyhow::Error::msg)?;
        assert_eq!(data, b"{\"runs\":[]}\n");
        let dir = std::env::temp_dir().join(format!("k2u-xtask-bench-{}", std::process::id()));
        let path = dir.join("sub").join("bench.json");
        write_out(&path, &data)?;
        assert_eq!(std::fs::read(&path)?, data);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
