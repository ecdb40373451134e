//! `cargo xtask`: code generation and the QEMU test harness of kern2usr.
//!
//! Every subcommand first makes sure the host packages it needs are there
//! (see `deps`: only `cargo xtask deps` installs, as root, and it never
//! removes or downgrades a package). Kernels come from Debian's archive
//! into a cache outside the repository; builds and logs go to `target/`.
//! A run locks the cache and `target/` (a second run waits, saying for
//! whom).

mod bench;
mod build;
mod cache;
mod debugkernel;
mod deps;
mod dkms;
mod fuzz;
mod initramfs;
mod kernels;
mod man;
mod msrv;
mod package;
mod plot;
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
    /// Write the kern2usr man pages and bash/zsh/fish completions (from
    /// its clap definition) into target/man; --readme also rewrites the
    /// README's CLI reference table.
    Man(man::ManArgs),
    /// Install the host packages the harness needs (only missing ones,
    /// never removing or downgrading one; needs root: `sudo cargo xtask
    /// deps`), and, when not run through sudo, the 7.3-debug toolchain
    /// (rust-src, bindgen in the cache).
    Deps {
        /// Also install PKG or PKG=VERSION through the same safe path (a
        /// version only bookworm-backports has is taken from there).
        #[arg(long = "with", value_name = "PKG[=VERSION]")]
        with: Vec<String>,
        /// Only show what apt would do.
        #[arg(long)]
        dry_run: bool,
    },
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
    /// Boot a kernel running `kern2usr bench`, extract its JSON and draw
    /// the plot from it (default target/bench/bench.json and bench.svg).
    Bench(bench::BenchArgs),
    /// Boot a kernel running random operations checked against the
    /// protocol model (`kern2usr-vmtest fuzz`).
    Fuzz(fuzz::FuzzArgs),
    /// Boot a kernel running `kern2usr-vmtest demo`: prints the
    /// walkthrough (both sides) and one closing line; build and boot output
    /// go to the log files it names.
    Demo {
        #[command(flatten)]
        guest: GuestArgs,
        /// Kill QEMU after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Build the C module with Debian's dkms (installed if missing) against
    /// each fetched Debian kernel, in a private DKMS tree under target/dkms.
    Dkms {
        /// Kernel series (repeatable; default 6.1 and 6.12).
        #[arg(long, value_enum)]
        kernel: Vec<Series>,
    },
    /// Build kern2usr-dkms_<ver>_all.deb and kern2usr_<ver>_amd64.deb into
    /// target/package and run lintian on them.
    Package(package::PackageArgs),
}

/// `--kernel` and `--kernel-version`.
#[derive(Args, Clone)]
struct KernelArg {
    /// Kernel series.
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: Series,
    /// Debian ABI to use instead of the pinned one (e.g. 6.1.0-57); also
    /// KERN2USR_KERNEL_6_1 / _6_12 / _7_3. For 7.3-debug: the
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
    prepare_from(series, version, module, None, user, run)
}

/// [`prepare`], with `prebuilt` (e.g. the DKMS build) as the module
/// instead of building `module` the kbuild way.
pub fn prepare_from(
    series: Series,
    version: Option<&str>,
    module: Option<&str>,
    prebuilt: Option<&std::path::Path>,
    user: bool,
    run: &str,
) -> Result<(kernels::Unpacked, PathBuf)> {
    prepare_with(series, version, module, prebuilt, user, run, &|_| {
        Ok(Vec::new())
    })
}

/// [`prepare_from`], with `extra` building more modules for the kernel
/// (into /root/kern2usr/kern/ beside the module; the bench's peers).
pub fn prepare_with(
    series: Series,
    version: Option<&str>,
    module: Option<&str>,
    prebuilt: Option<&std::path::Path>,
    user: bool,
    run: &str,
    extra: &dyn Fn(&kernels::Unpacked) -> Result<Vec<PathBuf>>,
) -> Result<(kernels::Unpacked, PathBuf)> {
    let kernel = util::stage(format!("fetch kernel {series}"), || {
        kernels::fetch(series, version)
    })?;
    let ko = match (module, prebuilt) {
        (Some(m), Some(ko)) => {
            util::say(format!(
                "module {m} for {series}: the prebuilt {}",
                ko.display()
            ));
            Some(ko.to_path_buf())
        }
        (Some(m), None) => Some(util::stage(
            format!("build module {m} for {series}"),
            || build::build_module(&kernel, m),
        )?),
        (None, _) => None,
    };
    let bins = if user {
        Some(util::stage(
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
    let extra_modules = extra(&kernel)?;
    let contents = initramfs::Contents {
        module: ko.as_deref(),
        user: bins.as_ref(),
        run,
        extra_modules: &extra_modules,
    };
    let image = util::stage(format!("pack the initramfs for {series}"), || {
        initramfs::build(&name, &contents)
    })?;
    Ok((kernel, image))
}

/// `demo`: the walkthrough and one closing line on the terminal; all the
/// rest in `target/logs/demo-<time>.log` (shown on failure).
fn demo(guest: &GuestArgs, timeout: u64) -> Result<()> {
    let log = util::target_dir()
        .join("logs")
        .join(format!("demo-{}.log", util::timestamp()));
    util::set_quiet(&log)?;
    println!(
        "kern2usr demo: the 11-step walkthrough in a VM ({}, module {}); preparing \
         (build and boot output: {})",
        guest.kernel.kernel,
        guest.module,
        log.display()
    );
    let result = (|| {
        deps::ensure(deps::Need::Boot)?;
        let series = guest.kernel.kernel;
        let (kernel, image) = prepare(
            series,
            guest.kernel.kernel_version.as_deref(),
            Some(&guest.module),
            true,
            suites::DEMO_RUN,
        )?;
        let name = format!("{}@{series}", guest.module);
        let mut boot = qemu::Boot::of(&name, series, &kernel, &image, Duration::from_secs(timeout));
        boot.echo = qemu::Echo::Guest;
        let accel = boot.accel.name();
        let outcome = util::step(format!("boot {} in QEMU", kernel.kernel.release()), || {
            qemu::boot(&boot)
        })?;
        let counts = report::suite_results(&outcome.console)
            .into_iter()
            .rev()
            .find(|(n, _)| n == "demo")
            .map(|(_, c)| c);
        let checked = qemu::check(&name, &outcome);
        let verdict = match (&checked, counts) {
            (Ok(()), Some(c)) if c.failed == 0 => "OK".to_string(),
            (Ok(()), _) => "FAILED (no demo result line)".to_string(),
            (Err(_), _) => "FAILED".to_string(),
        };
        println!(
            "demo {verdict} on {} ({accel}); guest console: {}; build and boot output: {}",
            kernel.kernel.release(),
            outcome.log.display(),
            log.display()
        );
        checked
    })();
    if result.is_err() {
        print_tail(&log, 40);
    }
    result
}

/// Prints the last `n` lines of `path`, for a failed quiet run.
fn print_tail(path: &std::path::Path, n: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    println!("last lines of {}:", path.display());
    for l in &lines[lines.len().saturating_sub(n)..] {
        println!("  {l}");
    }
}

/// `vm`: prepare, boot, judge.
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

/// What a subcommand needs: host packages, and which directories it
/// writes (and so locks).
struct Needs {
    packages: deps::Need,
    cache: bool,
    target: bool,
}

fn needs(cmd: &Cmd) -> Needs {
    use deps::Need;
    let n = |packages, cache, target| Needs {
        packages,
        cache,
        target,
    };
    match cmd {
        Cmd::GenHeader | Cmd::Man(_) => n(Need::Nothing, false, false),
        Cmd::Deps { .. } => n(Need::Nothing, true, false),
        Cmd::Fetch(_) => n(Need::Nothing, true, false),
        Cmd::BuildModule { .. } => n(Need::ModuleBuild, true, true),
        Cmd::BuildUser => n(Need::Nothing, false, true),
        Cmd::Initramfs { .. } => n(Need::Initramfs, true, true),
        Cmd::Bench(args) if args.replot_only() => n(Need::Nothing, false, false),
        Cmd::Vm { .. } | Cmd::Bench(_) | Cmd::Fuzz(_) => n(Need::Boot, true, true),
        // demo checks its own packages, quietly.
        Cmd::Demo { .. } => n(Need::Nothing, true, true),
        Cmd::Test(args) if args.host_only() => n(Need::Nothing, false, false),
        Cmd::Test(_) => n(Need::Boot, true, true),
        Cmd::Dkms { .. } => n(Need::ModuleBuild, true, true),
        // `package --test` boots a Debian root.
        Cmd::Package(_) => n(Need::Boot, true, true),
    }
}

/// `sudo cargo xtask deps`: apt as root, then give the cache and target/
/// files that root created back to the user who ran sudo.
fn deps_cmd(with: &[String], dry_run: bool) -> Result<()> {
    let result = util::stage("deps", || deps::deps(with, dry_run));
    let sudo = util::sudo_user();
    if result.is_ok() && sudo.is_none() && !dry_run {
        let cache = cache::cache_dir()?;
        util::create_dir(&cache)?;
        debugkernel::ensure_toolchain(&cache)?;
    } else if sudo.is_some() {
        util::say(
            "running through sudo: the rest of the toolchain (rust-src, bindgen) is set up as you, \
             by the first run that needs it",
        );
    }
    if let Some(owner) = sudo {
        for dir in [cache::cache_dir()?, util::target_dir()] {
            // Only the user's own directories: with sudo's HOME=/root the
            // cache is root's, and stays so.
            if dir.exists() && util::owned_by(dir.parent().unwrap_or(&dir), owner.0) {
                let n = util::chown_root_files(&dir, owner)?;
                if n > 0 {
                    util::say(format!(
                        "gave {n} root-owned file(s) in {} back to uid {}",
                        dir.display(),
                        owner.0
                    ));
                }
            }
        }
    }
    result
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let name = util::invocation();
    let subcommand = name
        .strip_prefix("cargo xtask ")
        .and_then(|a| a.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    let need = needs(&cli.command);
    if !matches!(cli.command, Cmd::Deps { .. }) {
        util::refuse_foreign_root(&subcommand)?;
    }
    // Always the cache first, then target/: two runs cannot deadlock.
    let _cache_lock = if need.cache {
        Some(util::DirLock::acquire(
            &cache::cache_dir()?,
            "the kernel cache",
        )?)
    } else {
        None
    };
    let _target_lock = if need.target {
        Some(util::DirLock::acquire(&util::target_dir(), "target/")?)
    } else {
        None
    };
    if need.packages != deps::Need::Nothing {
        util::stage("deps", || deps::ensure(need.packages))?;
    }
    if need.packages == deps::Need::Boot {
        util::show(format!(
            "==> accel: {}",
            match std::env::var("K2U_ACCEL").ok().as_deref() {
                Some(a @ ("kvm" | "tcg")) => format!("{a} (K2U_ACCEL)"),
                _ => "KVM if a short probe boot of each kernel works under it, else TCG \
                      (K2U_ACCEL=tcg|kvm skips the probe)"
                    .to_string(),
            }
        ));
    }
    match cli.command {
        Cmd::GenHeader => gen_header(),
        Cmd::Man(args) => man::man(&args),
        Cmd::Deps { with, dry_run } => deps_cmd(&with, dry_run),
        Cmd::Fetch(k) => {
            let u = util::step(format!("fetch kernel {}", k.kernel), || {
                kernels::fetch(k.kernel, k.kernel_version.as_deref())
            })?;
            println!("vmlinuz: {}", u.vmlinuz.display());
            match &u.chroot {
                None => println!("KDIR:    {}", u.kdir.display()),
                Some(root) => println!(
                    "KDIR:    {} (inside the build root {})",
                    u.kdir.display(),
                    root.display()
                ),
            }
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
        Cmd::Demo { guest, timeout } => demo(&guest, timeout),
        Cmd::Dkms { kernel } => dkms::dkms(&kernel).map(|_| ()),
        Cmd::Package(args) => package::package(&args),
    }
}
