//! `cargo xtask`: code generation and the QEMU test harness of kern2usr.
//!
//! Every subcommand except `gen-header` first makes sure the host packages
//! are there (`deps`). Kernels come from Debian's archive into a cache
//! outside the repository; builds and logs go to `target/`.

mod bench;
mod build;
mod cache;
mod debugkernel;
mod deps;
mod fuzz;
mod initramfs;
mod kernels;
mod qemu;
mod report;
mod suites;
mod util;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use kernels::Series;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "kern2usr build tasks and QEMU test harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write kernel/c/kern2usr_abi.h from abi/src/defs.rs.
    GenHeader,
    /// Install the host packages the harness needs (apt-get; only missing
    /// ones), and the 7.3-debug toolchain (clang-19, rust-src, bindgen).
    Deps,
    /// Download and unpack a Debian kernel and its headers into the cache
    /// (7.3-debug: download the source and build it).
    Fetch(KernelArg),
    /// Build the kernel module against a fetched kernel.
    BuildModule {
        #[command(flatten)]
        kernel: KernelArg,
        /// Module implementation: the directory under kernel/.
        #[arg(long, default_value = "c")]
        module: String,
    },
    /// Build the static guest binaries kern2usr and kern2usr-vmtest.
    BuildUser,
    /// Build everything and pack the initramfs for a kernel.
    Initramfs {
        #[command(flatten)]
        guest: GuestArgs,
        /// The guest command (one shell line) written to /etc/k2u-run.
        #[arg(long, default_value = suites::DEFAULT_RUN)]
        run: String,
    },
    /// Build, pack and boot a kernel running one guest command.
    Vm {
        #[command(flatten)]
        guest: GuestArgs,
        /// Kill QEMU after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// The guest command, run by `sh` in /root/kern2usr.
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Run the host tests and the VM suites, and print a summary.
    Test(suites::TestArgs),
    /// Boot a kernel running `kern2usr bench` and extract its JSON and
    /// SVG (default target/bench/bench.json and bench.svg).
    Bench(bench::BenchArgs),
    /// Boot a kernel running random operations checked against the
    /// protocol model (`kern2usr-vmtest fuzz`).
    Fuzz(fuzz::FuzzArgs),
    /// Boot a kernel running `kern2usr-vmtest demo`.
    Demo {
        #[command(flatten)]
        guest: GuestArgs,
        /// Kill QEMU after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

/// `--kernel` and `--kernel-version`.
#[derive(Args, Clone)]
struct KernelArg {
    /// Kernel series.
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: Series,
    /// Debian ABI to use instead of the pinned one (e.g. 6.1.0-57); also
    /// KERN2USR_KERNEL_6_1 / KERN2USR_KERNEL_6_12. For 7.3-debug: the
    /// linux-source-7.3 version (also KERN2USR_KERNEL_7_3_DEBUG).
    #[arg(long)]
    kernel_version: Option<String>,
}

/// What goes into the guest.
#[derive(Args, Clone)]
pub struct GuestArgs {
    #[command(flatten)]
    kernel: KernelArg,
    /// Module implementation: the directory under kernel/.
    #[arg(long, default_value = "c")]
    module: String,
    /// Leave the module out (to test the boot path alone).
    #[arg(long)]
    no_module: bool,
    /// Leave the guest binaries out (to test the boot path alone).
    #[arg(long)]
    no_user: bool,
}

/// Fetches, builds and packs; returns the kernel and the initramfs.
pub fn prepare(
    series: Series,
    version: Option<&str>,
    module: Option<&str>,
    user: bool,
    run: &str,
) -> Result<(kernels::Unpacked, PathBuf)> {
    let kernel = util::step(format!("fetch kernel {series}"), || {
        kernels::fetch(series, version)
    })?;
    let ko = match module {
        Some(m) => Some(util::step(
            format!("build module {m} for {series}"),
            || build::build_module(&kernel, m),
        )?),
        None => None,
    };
    let bins = if user {
        Some(util::step(
            "build the static guest binaries",
            build::build_user,
        )?)
    } else {
        None
    };
    let name = match module {
        Some(m) => format!("{m}-{series}"),
        None => format!("nomodule-{series}"),
    };
    let contents = initramfs::Contents {
        module: ko.as_deref(),
        user: bins.as_ref(),
        run,
    };
    let image = util::step(format!("pack the initramfs for {series}"), || {
        initramfs::build(&name, &contents)
    })?;
    Ok((kernel, image))
}

/// `vm` and `demo`: prepare, boot, judge.
fn vm(guest: &GuestArgs, timeout: u64, run: &str) -> Result<()> {
    let series = guest.kernel.kernel;
    let module = (!guest.no_module).then_some(guest.module.as_str());
    let (kernel, image) = prepare(
        series,
        guest.kernel.kernel_version.as_deref(),
        module,
        !guest.no_user,
        run,
    )?;
    let name = match module {
        Some(m) => format!("{m}@{series}"),
        None => series.to_string(),
    };
    let boot = qemu::Boot::of(&name, series, &kernel, &image, Duration::from_secs(timeout));
    let outcome = util::step(format!("boot {} in QEMU", kernel.kernel.release()), || {
        qemu::boot(&boot)
    })?;
    qemu::check(&name, &outcome)
}

fn gen_header() -> Result<()> {
    let path = util::repo_root().join(kern2usr_abi::header::HEADER_PATH);
    util::say(format!("writing {}", path.display()));
    std::fs::write(&path, kern2usr_abi::header::render())
        .with_context(|| format!("could not write {}", path.display()))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::GenHeader | Cmd::Deps) {
        deps::ensure()?;
    }
    match cli.command {
        Cmd::GenHeader => gen_header(),
        Cmd::Deps => {
            deps::ensure()?;
            let cache = cache::cache_dir()?;
            util::create_dir(&cache)?;
            debugkernel::ensure_toolchain(&cache).map(|_| ())
        }
        Cmd::Fetch(k) => {
            let u = util::step(format!("fetch kernel {}", k.kernel), || {
                kernels::fetch(k.kernel, k.kernel_version.as_deref())
            })?;
            println!("vmlinuz: {}", u.vmlinuz.display());
            println!("KDIR:    {}", u.kdir.display());
            Ok(())
        }
        Cmd::BuildModule { kernel, module } => {
            let u = util::step(format!("fetch kernel {}", kernel.kernel), || {
                kernels::fetch(kernel.kernel, kernel.kernel_version.as_deref())
            })?;
            let ko = util::step(
                format!("build module {module} for {}", kernel.kernel),
                || build::build_module(&u, &module),
            )?;
            println!("{}", ko.display());
            Ok(())
        }
        Cmd::BuildUser => {
            let bins = util::step("build the static guest binaries", build::build_user)?;
            println!(
                "{}\n{}\n{}",
                bins.kern2usr.display(),
                bins.vmtest.display(),
                bins.seed_client.display()
            );
            Ok(())
        }
        Cmd::Initramfs { guest, run } => {
            let module = (!guest.no_module).then_some(guest.module.as_str());
            let (_, image) = prepare(
                guest.kernel.kernel,
                guest.kernel.kernel_version.as_deref(),
                module,
                !guest.no_user,
                &run,
            )?;
            println!("{}", image.display());
            Ok(())
        }
        Cmd::Vm {
            guest,
            timeout,
            command,
        } => vm(&guest, timeout, &command.join(" ")),
        Cmd::Test(args) => suites::test(&args),
        Cmd::Bench(args) => bench::bench(&args),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
        Cmd::Demo { guest, timeout } => vm(&guest, timeout, suites::DEMO_RUN),
    }
}
