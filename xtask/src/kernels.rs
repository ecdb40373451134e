//! `cargo xtask fetch`: Debian kernel images and headers, unpacked into the
//! cache with a private apt configuration (the host's apt state is only
//! read for the archive keyring, never written).
//!
//! Layout under the cache directory:
//!
//! ```text
//! apt/                      private apt config, lists and package cache
//! apt-sid/                  the same for sid and trixie-backports (7.3-debug)
//! kernels/<ABI>/root/       dpkg-deb -x of the packages
//! kernels/<ABI>/complete    stamp: the tree is fully unpacked and fixed up
//! kernels/<series>.resolved the ABI used when the pinned one was gone
//! kernels/<ABI>/buildroot/  7.3: a trixie root with Debian's headers and
//!                           gcc-14, where modules for that kernel are built
//! apt-host/                 bookworm + backports with the host's dpkg status
//!                           (only for `deps`, see there)
//! build/                    kernels built from source (see `debugkernel`)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;

use crate::util::{
    create_dir, describe, remove_dir_if_exists, run, run_timeout_quiet, say, scaled,
};

/// The kernel series the harness knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Series {
    /// Debian 12's own kernel (counter mode).
    #[value(name = "6.1")]
    V6_1,
    /// bookworm's 6.12 (queue mode: `eventfd_signal()` only adds 1).
    #[value(name = "6.12")]
    V6_12,
    /// Debian's own 7.3 from trixie-backports (linux-image and headers):
    /// the kernel users of current Debian actually load.
    #[value(name = "7.3")]
    V7_3,
    /// Linux 7.3 built from Debian's `linux-source-7.3` with
    /// `kernel/config/debug.config` (KASAN, lockdep, kmemleak, Rust).
    #[value(name = "7.3-debug")]
    V7_3Debug,
    /// The same source with `kernel/config/kcsan.config` over the debug
    /// fragment: KCSAN (data races) instead of KASAN.
    #[value(name = "7.3-kcsan")]
    V7_3Kcsan,
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Series {
    /// Every series, in the order the tests run them.
    pub const ALL: [Series; 5] = [
        Series::V6_1,
        Series::V6_12,
        Series::V7_3,
        Series::V7_3Debug,
        Series::V7_3Kcsan,
    ];

    /// `6.1`, `6.12`, `7.3`, `7.3-debug` or `7.3-kcsan`.
    pub fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
            Series::V7_3 => "7.3",
            Series::V7_3Debug => "7.3-debug",
            Series::V7_3Kcsan => "7.3-kcsan",
        }
    }

    /// Whether the kernel is built here from source (with clang, and the
    /// debug options that make the harness scan for leaks) rather than
    /// Debian's binary packages.
    pub fn built_from_source(self) -> bool {
        matches!(self, Series::V7_3Debug | Series::V7_3Kcsan)
    }

    /// Extra kernel command line for this series.
    pub fn extra_cmdline(self) -> &'static str {
        match self {
            // The tiny config has no ACPI or HPET: without this the TSC is
            // not trusted as a clocksource and hrtimers tick at 4 ms.
            Series::V7_3Debug | Series::V7_3Kcsan => "tsc=reliable",
            Series::V6_1 | Series::V6_12 | Series::V7_3 => "",
        }
    }

    /// The pinned Debian ABI name (the part before `-amd64`); for 7.3-debug
    /// the `linux-source-7.3` version. A pin that left the archive falls
    /// back to the newest of the series, with a warning.
    pub fn pinned_abi(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1.0-57",
            Series::V6_12 => "6.12.117+deb12",
            Series::V7_3 => "7.3.4+deb13",
            // 7.3-kcsan is the same source as 7.3-debug.
            Series::V7_3Debug | Series::V7_3Kcsan => "7.3.4-1~bpo13+1",
        }
    }

    /// Environment variable that overrides the pinned ABI (for 7.3-debug:
    /// the `linux-source-7.3` package version).
    pub fn env_var(self) -> &'static str {
        match self {
            Series::V6_1 => "KERN2USR_KERNEL_6_1",
            Series::V6_12 => "KERN2USR_KERNEL_6_12",
            Series::V7_3 => "KERN2USR_KERNEL_7_3",
            Series::V7_3Debug => "KERN2USR_KERNEL_7_3_DEBUG",
            Series::V7_3Kcsan => "KERN2USR_KERNEL_7_3_KCSAN",
        }
    }

    /// apt-cache regex matching every unsigned image of this series; the
    /// ABI is the text between the prefix and `-amd64-unsigned`.
    fn image_regex(self) -> &'static str {
        match self {
            Series::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
            Series::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$",
            Series::V7_3 => r"^linux-image-7\.3\.[0-9]+\+deb13-amd64$",
            Series::V7_3Debug | Series::V7_3Kcsan => r"^linux-source-7\.3$",
        }
    }
}

/// One concrete kernel: a series and an ABI, with its package names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// Series it belongs to.
    pub series: Series,
    /// Debian ABI, e.g. `6.1.0-56` or `6.12.117+deb12`.
    pub abi: String,
}

impl Kernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`; for a kernel built
    /// from source, a description with the source package version.
    pub fn release(&self) -> String {
        match self.series {
            Series::V7_3Debug | Series::V7_3Kcsan => {
                format!("{} (linux-source-7.3 {})", self.series, self.abi)
            }
            Series::V6_1 | Series::V6_12 | Series::V7_3 => format!("{}-amd64", self.abi),
        }
    }

    /// The exact version for summary lines: the ABI (`6.1.0-57`,
    /// `7.3.4+deb13`) or the source package version (7.3-debug).
    pub fn version(&self) -> &str {
        &self.abi
    }

    /// The packages to download.
    pub fn packages(&self) -> Vec<String> {
        let abi = &self.abi;
        let kbuild = match self.series {
            // 6.1's kbuild package is per upstream version, 6.12's (from
            // bookworm's security/backports line) per ABI.
            Series::V6_1 => "linux-kbuild-6.1".to_string(),
            Series::V6_12 => format!("linux-kbuild-{abi}"),
            Series::V7_3Debug | Series::V7_3Kcsan => {
                return vec![format!("linux-source-7.3={abi}")]
            }
            // Only the image, which 7.x packages as linux-binary (the
            // linux-image package is an empty metapackage): the headers,
            // their kbuild and gcc-14 go into the trixie build root (see
            // `ensure_buildroot`).
            Series::V7_3 => return vec![format!("linux-binary-{abi}-amd64")],
        };
        vec![
            format!("linux-image-{abi}-amd64-unsigned"),
            format!("linux-headers-{abi}-amd64"),
            format!("linux-headers-{abi}-common"),
            kbuild,
        ]
    }
}

/// Paths of an unpacked kernel.
#[derive(Clone, Debug)]
pub struct Unpacked {
    /// The kernel this is.
    pub kernel: Kernel,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// Build directory for `make -C`.
    pub kdir: PathBuf,
    /// Extra `make` variables for module builds (`LLVM=-19`).
    pub make_vars: Vec<String>,
    /// Extra environment for module builds (the Rust toolchain's PATH).
    pub make_env: Vec<(String, std::ffi::OsString)>,
    /// A root file system to build modules in (`kdir` is inside it), for
    /// kernels whose headers need another Debian release's compiler.
    pub chroot: Option<PathBuf>,
}

/// How the module directory appears inside a build root.
pub const CHROOT_MODULE_DIR: &str = "/k2u/module";

/// Bind-mounts /dev/null, /proc (objtool reads /proc/self/maps) and the
/// module directory into the build root and runs the command there, with
/// a clean environment. The mounts live in the command's own mount
/// namespace and vanish with it.
const CHROOT_SCRIPT: &str = r#"set -e
root=$1; out=$2; shift 2
[ -e "$root/dev/null" ] || { echo "$root has no /dev/null: remove it to rebuild it" >&2; exit 1; }
mount --bind /dev/null "$root/dev/null"
mount --rbind /proc "$root/proc"
mount --bind "$out" "$root/k2u/module"
mkdir -p "$out/.tmp"
exec chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp LC_ALL=C.UTF-8 TMPDIR=/k2u/module/.tmp "$@"
"#;

impl Unpacked {
    /// `make -C <kdir> M=<dir> <vars> modules`, run in the build root
    /// (through `unshare --map-root-user --mount` and `chroot`, so it needs
    /// no root) when the kernel has one.
    pub fn make_command(&self, module_dir: &Path) -> Command {
        let mut args: Vec<std::ffi::OsString> = vec!["make".into(), "-C".into()];
        args.push(self.kdir.clone().into_os_string());
        match &self.chroot {
            None => {
                args.push(format!("M={}", module_dir.display()).into());
                args.extend(self.make_vars.iter().map(Into::into));
                args.push("modules".into());
                let mut c = Command::new(&args[0]);
                c.args(&args[1..]);
                c.envs(self.make_env.iter().map(|(k, v)| (k, v)));
                c
            }
            Some(root) => {
                args.push(format!("M={CHROOT_MODULE_DIR}").into());
                args.extend(self.make_vars.iter().map(Into::into));
                args.push("modules".into());
                let mut c = Command::new("unshare");
                c.args([
                    "--map-root-user",
                    "--mount",
                    "--",
                    "sh",
                    "-c",
                    CHROOT_SCRIPT,
                    "sh",
                ])
                .arg(root)
                .arg(module_dir)
                .args(&args);
                c
            }
        }
    }
}

/// Which ABI to use: `--kernel-version`, else the env override, else pinned.
/// The second value says whether it is the pinned default (only then may a
/// newer ABI replace it).
pub fn choose_abi(series: Series, flag: Option<&str>, env: Option<&str>) -> (String, bool) {
    let set = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match set(flag).or_else(|| set(env)) {
        Some(abi) => (abi, false),
        None => (series.pinned_abi().to_string(), true),
    }
}

/// Numeric key for ordering ABIs: the runs of digits, in order.
fn abi_key(abi: &str) -> Vec<u64> {
    abi.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The newest ABI among `apt-cache pkgnames`-style lines.
pub fn newest_abi(series: Series, names: &str) -> Option<String> {
    let prefix = "linux-image-";
    let suffix = match series {
        Series::V7_3 => "-amd64",
        _ => "-amd64-unsigned",
    };
    names
        .lines()
        .map(str::trim)
        .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix))
        .filter(|abi| match series {
            Series::V6_1 => abi.starts_with("6.1.0-"),
            Series::V6_12 => abi.starts_with("6.12.") && abi.ends_with("+deb12"),
            Series::V7_3 => {
                abi.starts_with("7.3.")
                    && abi.ends_with("+deb13")
                    && !abi.contains("cloud")
                    && !abi.contains("rt")
            }
            Series::V7_3Debug | Series::V7_3Kcsan => false,
        })
        .max_by_key(|abi| abi_key(abi))
        .map(str::to_string)
}

/// Rewrites Debian's one-line `-amd64` headers Makefile, which includes the
/// `-common` tree by its installed absolute path, to the unpacked path.
pub fn rewrite_headers_makefile(text: &str, common_dir: &Path) -> Result<String> {
    let mut out = String::new();
    let mut rewritten = false;
    for line in text.lines() {
        match line.trim().strip_prefix("include ") {
            Some(path) if path.trim().starts_with("/usr/src/linux-headers-") => {
                let file = Path::new(path.trim())
                    .file_name()
                    .ok_or_else(|| anyhow!("odd include line `{line}`"))?;
                out.push_str(&format!("include {}\n", common_dir.join(file).display()));
                rewritten = true;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !rewritten {
        bail!("no `include /usr/src/linux-headers-...` line to rewrite in:\n{text}");
    }
    Ok(out)
}

/// A private apt setup in the cache (`<cache>/apt` for bookworm,
/// `<cache>/apt-sid` for the 7.3 source).
pub struct Apt {
    dir: PathBuf,
    /// The suites, for messages.
    label: &'static str,
}

/// bookworm's suites, for the binary kernels.
pub const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
";

/// Lists older than this are refreshed before use.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Time limits of apt calls (times `K2U_TIMEOUT_SCALE`).
const APT_QUERY_LIMIT: Duration = Duration::from_secs(5 * 60);
const APT_UPDATE_LIMIT: Duration = Duration::from_secs(10 * 60);
const APT_DOWNLOAD_LIMIT: Duration = Duration::from_secs(30 * 60);

impl Apt {
    /// The bookworm configuration in `<cache>/apt`.
    fn bookworm(cache: &Path) -> Result<Apt> {
        Apt::new(
            cache,
            "apt",
            SOURCES,
            "bookworm, bookworm-updates, bookworm-security",
            "",
        )
    }

    /// Writes (or rewrites) the configuration in `<cache>/<name>`;
    /// `extra` is appended to its apt.conf.
    pub fn new(
        cache: &Path,
        name: &str,
        sources: &str,
        label: &'static str,
        extra: &str,
    ) -> Result<Apt> {
        Apt::write(cache, name, sources, label, extra, false)
    }

    /// A configuration for installing on the host: its own sources and
    /// lists, but the host's dpkg status, auto-installed marks and
    /// apt.conf.d (proxies, dpkg options), so a real `apt-get install`
    /// with it installs into the host like the host's apt would.
    pub fn host(cache: &Path, name: &str, sources: &str, label: &'static str) -> Result<Apt> {
        Apt::write(cache, name, sources, label, "", true)
    }

    fn write(
        cache: &Path,
        name: &str,
        sources: &str,
        label: &'static str,
        extra: &str,
        host: bool,
    ) -> Result<Apt> {
        let dir = cache.join(name);
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "state",
            "empty.d",
        ] {
            create_dir(&dir.join(sub))?;
        }
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("could not write {}", path.display()))
        };
        write("sources.list", sources)?;
        let d = dir.display();
        // For the host: its dpkg status, auto-installed marks, apt.conf.d
        // and history log (/var/log/apt), so an install shows up there.
        let (parts, status, states, log, arch) = if host {
            (
                "/etc/apt/apt.conf.d".to_string(),
                "/var/lib/dpkg/status".to_string(),
                "Dir::State::extended_states \"/var/lib/apt/extended_states\";\n".to_string(),
                "/var/log/apt".to_string(),
                // The host's own architectures (multiarch included).
                String::new(),
            )
        } else {
            write("status", "")?;
            (
                format!("{d}/empty.d"),
                format!("{d}/status"),
                String::new(),
                format!("{d}/state"),
                "APT::Architecture \"amd64\";\nAPT::Architectures { \"amd64\"; };\n".to_string(),
            )
        };
        let conf = format!(
            "Dir::Etc::main \"/dev/null\";\n\
             Dir::Etc::Parts \"{parts}\";\n\
             Dir::Etc::SourceList \"{d}/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/empty.d\";\n\
             Dir::Etc::Preferences \"/dev/null\";\n\
             Dir::Etc::PreferencesParts \"{d}/empty.d\";\n\
             Dir::State \"{d}/state\";\n\
             Dir::State::Lists \"{d}/lists\";\n\
             Dir::State::status \"{status}\";\n\
             {states}\
             Dir::Cache \"{d}/cache\";\n\
             Dir::Cache::archives \"{d}/cache/archives\";\n\
             Dir::Log \"{log}\";\n\
             {arch}\
             APT::Sandbox::User \"root\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled \"false\";\n\
             Acquire::Retries \"3\";\n\
             {extra}"
        );
        write("apt.conf", &conf)?;
        Ok(Apt { dir, label })
    }

    /// An apt command using only the private configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", self.dir.join("apt.conf"));
        c
    }

    fn stamp(&self) -> PathBuf {
        self.dir.join("lists.updated")
    }

    fn lists_fresh(&self) -> bool {
        std::fs::metadata(self.stamp())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE)
    }

    /// `apt-get update` with the private configuration.
    pub fn update(&self) -> Result<()> {
        say(format!("private apt: apt-get update ({})", self.label));
        run_timeout_quiet(
            self.command("apt-get").args(["-q", "update"]),
            scaled(APT_UPDATE_LIMIT),
        )
        .context("apt-get update with the private apt configuration failed; is deb.debian.org reachable?")?;
        std::fs::write(self.stamp(), "")
            .with_context(|| format!("could not write {}", self.stamp().display()))
    }

    /// `update` unless the lists are less than a day old.
    pub fn update_if_stale(&self) -> Result<()> {
        if self.lists_fresh() {
            say("private apt: package lists are less than a day old");
            Ok(())
        } else {
            self.update()
        }
    }

    /// `apt-get download` of `pkgs` into `into`.
    pub fn download(&self, pkgs: &[String], into: &Path) -> Result<()> {
        let mut c = self.command("apt-get");
        c.args(["-q", "download"]).args(pkgs).current_dir(into);
        say(format!(
            "private apt: {} (in {})",
            describe(&c),
            into.display()
        ));
        run_timeout_quiet(&mut c, scaled(APT_DOWNLOAD_LIMIT)).map(|_| ())
    }

    /// `apt-cache <args>` with the private configuration.
    pub fn query(&self, args: &[&str]) -> Result<String> {
        run_timeout_quiet(
            self.command("apt-cache").args(args),
            scaled(APT_QUERY_LIMIT),
        )
    }

    /// The package list with `linux-kbuild-6.1` pinned to the version of
    /// the headers: that package is shared by every 6.1 ABI, so the plain
    /// name would fetch the newest one, not the one matching the headers.
    fn pin_kbuild(&self, kernel: &Kernel) -> Result<Vec<String>> {
        let mut pkgs = kernel.packages();
        if kernel.series == Series::V6_1 {
            let common = &pkgs[2];
            let show = self
                .query(&["show", "--no-all-versions", common])
                .with_context(|| format!("{common} is not in the package lists"))?;
            let version = show
                .lines()
                .find_map(|l| l.strip_prefix("Version: "))
                .ok_or_else(|| anyhow!("no Version in `apt-cache show {common}`"))?
                .trim()
                .to_string();
            pkgs[3] = format!("{}={version}", pkgs[3]);
        }
        Ok(pkgs)
    }

    fn newest(&self, series: Series) -> Result<Option<String>> {
        let out = self.query(&["search", "--names-only", series.image_regex()])?;
        let names: String = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| format!("{n}\n"))
            .collect();
        Ok(newest_abi(series, &names))
    }
}

fn kernels_dir(cache: &Path) -> PathBuf {
    cache.join("kernels")
}

fn complete_stamp(cache: &Path, abi: &str) -> PathBuf {
    kernels_dir(cache).join(abi).join("complete")
}

fn buildroot_dir(cache: &Path, abi: &str) -> PathBuf {
    kernels_dir(cache).join(abi).join("buildroot")
}

fn unpacked(cache: &Path, kernel: Kernel) -> Unpacked {
    let root = kernels_dir(cache).join(&kernel.abi).join("root");
    let release = kernel.release();
    let headers = format!("usr/src/linux-headers-{release}");
    let (kdir, chroot) = match kernel.series {
        Series::V7_3 => (
            Path::new("/").join(&headers),
            Some(buildroot_dir(cache, &kernel.abi)),
        ),
        _ => (root.join(&headers), None),
    };
    let vmlinuz = match kernel.series {
        Series::V7_3 => root.join("usr/lib/modules").join(&release).join("vmlinuz"),
        _ => root.join("boot").join(format!("vmlinuz-{release}")),
    };
    Unpacked {
        vmlinuz,
        kdir,
        kernel,
        make_vars: Vec::new(),
        make_env: Vec::new(),
        chroot,
    }
}

/// trixie and trixie-backports, for the 7.3 build root.
const TRIXIE_SOURCES: [&str; 2] = [
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main",
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main",
];
/// Time limit of making the build root (times `K2U_TIMEOUT_SCALE`): it
/// downloads about 100 MB and took 1m41s here.
const BUILDROOT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Makes the trixie root in which modules for the stock 7.3 kernel are
/// built: Debian's `linux-headers-<abi>-amd64` need trixie's gcc-14 and
/// its kbuild tools need trixie's glibc, neither of which bookworm has.
/// `mmdebstrap` makes it (as root, or in a user namespace without).
fn ensure_buildroot(cache: &Path, kernel: &Kernel) -> Result<()> {
    let dir = buildroot_dir(cache, &kernel.abi);
    let stamp = kernels_dir(cache)
        .join(&kernel.abi)
        .join("buildroot.complete");
    let headers = format!("linux-headers-{}-amd64", kernel.abi);
    // binutils: gcc needs `as`, and kbuild's cc-option probes fail
    // silently without it (leaving out flags the kernel was built with).
    let include = format!("make,binutils,{headers}");
    // The stamp holds the package list: another list makes a new root.
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == include) {
        return Ok(());
    }
    crate::deps::ensure_stock_73()?;
    remove_dir_if_exists(&dir)?;
    let mut c = Command::new("mmdebstrap");
    c.args([
        "--variant=apt",
        "--aptopt=Acquire::Check-Valid-Until \"false\"",
        "--aptopt=APT::Install-Recommends \"false\"",
    ])
    .arg(format!("--include={include}"))
    .arg("--customize-hook=mkdir -p \"$1/k2u/module\"")
    .arg("trixie")
    .arg(&dir)
    .args(TRIXIE_SOURCES);
    say(format!(
        "kernel {}: making the trixie build root (gcc-14, {headers}): {}",
        kernel.abi,
        describe(&c)
    ));
    if let Err(e) = run_timeout_quiet(&mut c, scaled(BUILDROOT_LIMIT)) {
        remove_dir_if_exists(&dir)?;
        return Err(e.context(format!(
            "could not make the trixie build root for {headers} in {}",
            dir.display()
        )));
    }
    let kdir = dir
        .join("usr/src")
        .join(format!("linux-headers-{}", kernel.release()));
    if !kdir.join("Makefile").exists() {
        bail!("{} is missing after mmdebstrap", kdir.display());
    }
    std::fs::write(&stamp, format!("{include}\n"))
        .with_context(|| format!("could not write {}", stamp.display()))
}

fn resolved_note(cache: &Path, series: Series) -> PathBuf {
    kernels_dir(cache).join(format!("{series}.resolved"))
}

/// Makes sure the kernel of `series` is unpacked in the cache and returns
/// its paths. `version` is `--kernel-version` (an ABI like `6.1.0-56`).
///
/// 7.3-debug and 7.3-kcsan are built from source instead (see
/// [`crate::debugkernel`]).
pub fn fetch(series: Series, version: Option<&str>) -> Result<Unpacked> {
    if series.built_from_source() {
        return crate::debugkernel::fetch(series, version);
    }
    let cache = crate::cache::cache_dir()?;
    let env = std::env::var(series.env_var()).ok();
    let (abi, pinned) = choose_abi(series, version, env.as_deref());
    let kernel = Kernel { series, abi };
    let result = fetch_binary(&cache, kernel, pinned)?;
    if series == Series::V7_3 {
        ensure_buildroot(&cache, &result.kernel)?;
    }
    Ok(result)
}

fn fetch_binary(cache: &Path, kernel: Kernel, pinned: bool) -> Result<Unpacked> {
    let cache = cache.to_path_buf();
    let series = kernel.series;
    if complete_stamp(&cache, &kernel.abi).exists() {
        say(format!(
            "kernel {}: cached in {}",
            kernel.abi,
            kernels_dir(&cache).join(&kernel.abi).display()
        ));
        return Ok(unpacked(&cache, kernel));
    }
    // A pinned ABI that was gone earlier: reuse what replaced it.
    if pinned {
        if let Ok(note) = std::fs::read_to_string(resolved_note(&cache, series)) {
            if let Some((from, to)) = note.trim().split_once(' ') {
                if from == kernel.abi && complete_stamp(&cache, to).exists() {
                    warn_replaced(series, from, to);
                    return Ok(unpacked(
                        &cache,
                        Kernel {
                            series,
                            abi: to.to_string(),
                        },
                    ));
                }
            }
        }
    }
    create_dir(&cache).with_context(|| "set KERN2USR_CACHE to a writable directory".to_string())?;
    let apt = match series {
        Series::V7_3 => crate::debugkernel::sid_apt(&cache)?,
        _ => Apt::bookworm(&cache)?,
    };
    apt.update_if_stale()?;
    let first = download_and_unpack(&cache, &apt, &kernel);
    let Err(first_err) = first else {
        return Ok(unpacked(&cache, kernel));
    };
    say(format!(
        "kernel {}: failed ({first_err:#}); refreshing the package lists and retrying",
        kernel.abi
    ));
    apt.update()?;
    let second = download_and_unpack(&cache, &apt, &kernel);
    let Err(second_err) = second else {
        return Ok(unpacked(&cache, kernel));
    };
    if !pinned {
        return Err(second_err.context(format!(
            "kernel {} (from --kernel-version or {}) cannot be downloaded; unset it to use the pinned {}",
            kernel.abi,
            series.env_var(),
            series.pinned_abi()
        )));
    }
    let newest = apt.newest(series)?.ok_or_else(|| {
        anyhow!(
            "no linux-image of series {series} in the package lists ({})",
            apt.label
        )
    })?;
    if newest == kernel.abi {
        return Err(second_err.context(format!(
            "kernel {} is the newest of its series but does not download",
            kernel.abi
        )));
    }
    warn_replaced(series, &kernel.abi, &newest);
    let replacement = Kernel {
        series,
        abi: newest,
    };
    download_and_unpack(&cache, &apt, &replacement)?;
    let note = resolved_note(&cache, series);
    std::fs::write(&note, format!("{} {}\n", kernel.abi, replacement.abi))
        .with_context(|| format!("could not write {}", note.display()))?;
    Ok(unpacked(&cache, replacement))
}

pub fn warn_replaced(series: Series, from: &str, to: &str) {
    let bar = "!".repeat(78);
    println!("{bar}");
    println!("!! kernel {series}: pinned ABI {from} is no longer in Debian's archive;");
    println!("!! using the newest one, {to}. Update Series::pinned_abi in");
    println!(
        "!! xtask/src/kernels.rs (or set {}={to}).",
        series.env_var()
    );
    println!("{bar}");
}

fn download_and_unpack(cache: &Path, apt: &Apt, kernel: &Kernel) -> Result<()> {
    let result = try_download_and_unpack(cache, apt, kernel);
    if result.is_err() {
        // Leave no half-made tree behind (it has no stamp, so it would be
        // redone anyway, but it takes space).
        remove_dir_if_exists(&kernels_dir(cache).join(&kernel.abi))?;
    }
    result
}

fn try_download_and_unpack(cache: &Path, apt: &Apt, kernel: &Kernel) -> Result<()> {
    let dir = kernels_dir(cache).join(&kernel.abi);
    // A tree without the stamp may be half unpacked: start over.
    remove_dir_if_exists(&dir)?;
    let debs = dir.join("debs");
    let root = dir.join("root");
    create_dir(&debs)?;
    create_dir(&root)?;
    apt.download(&apt.pin_kbuild(kernel)?, &debs)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&debs)
        .with_context(|| format!("could not list {}", debs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    files.sort();
    if files.len() != kernel.packages().len() {
        bail!(
            "expected {} .deb files in {}, found {}",
            kernel.packages().len(),
            debs.display(),
            files.len()
        );
    }
    for deb in &files {
        let name = deb
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        say(format!("kernel {}: dpkg-deb -x {name}", kernel.abi));
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    }
    let u = unpacked(cache, kernel.clone());
    if kernel.series == Series::V7_3 {
        // The headers live in the build root; only the image is here.
        if !u.vmlinuz.exists() {
            bail!("{} is missing after unpacking", u.vmlinuz.display());
        }
        remove_dir_if_exists(&debs)?;
        let stamp = complete_stamp(cache, &kernel.abi);
        return std::fs::write(&stamp, kernel.packages().join("\n") + "\n")
            .with_context(|| format!("could not write {}", stamp.display()));
    }
    let makefile = u.kdir.join("Makefile");
    let common = root
        .join("usr/src")
        .join(format!("linux-headers-{}-common", kernel.abi));
    say(format!(
        "kernel {}: pointing {} at {}",
        kernel.abi,
        makefile.display(),
        common.display()
    ));
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("could not read {}", makefile.display()))?;
    let text = rewrite_headers_makefile(&text, &common)?;
    std::fs::write(&makefile, text)
        .with_context(|| format!("could not write {}", makefile.display()))?;
    for needed in [
        &u.vmlinuz,
        &common.join("Makefile"),
        &u.kdir.join("scripts/Makefile.build"),
    ] {
        if !needed.exists() {
            bail!(
                "{} is missing after unpacking {}",
                needed.display(),
                kernel.packages().join(" ")
            );
        }
    }
    remove_dir_if_exists(&debs)?;
    let stamp = complete_stamp(cache, &kernel.abi);
    std::fs::write(&stamp, kernel.packages().join("\n") + "\n")
        .with_context(|| format!("could not write {}", stamp.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makefile_points_at_unpacked_common() {
        let text = "include /usr/src/linux-headers-6.1.0-56-common/Makefile\n";
        let out = rewrite_headers_makefile(
            text,
            Path::new("/c/k/root/usr/src/linux-headers-6.1.0-56-common"),
        )
        .expect("rewrites");
        assert_eq!(
            out,
            "include /c/k/root/usr/src/linux-headers-6.1.0-56-common/Makefile\n"
        );
    }

    #[test]
    fn makefile_without_include_is_an_error() {
        assert!(rewrite_headers_makefile("all:\n", Path::new("/x")).is_err());
    }

    #[test]
    fn packages_per_series() {
        let k = Kernel {
            series: Series::V6_12,
            abi: "6.12.117+deb12".into(),
        };
        assert_eq!(
            k.packages(),
            [
                "linux-image-6.12.117+deb12-amd64-unsigned",
                "linux-headers-6.12.117+deb12-amd64",
                "linux-headers-6.12.117+deb12-common",
                "linux-kbuild-6.12.117+deb12",
            ]
        );
        let k = Kernel {
            series: Series::V6_1,
            abi: "6.1.0-56".into(),
        };
        assert_eq!(k.packages()[3], "linux-kbuild-6.1");
        assert_eq!(k.release(), "6.1.0-56-amd64");
    }

    #[test]
    fn abi_choice() {
        assert_eq!(
            choose_abi(Series::V6_1, None, None),
            ("6.1.0-57".to_string(), true)
        );
        assert_eq!(
            choose_abi(Series::V6_1, None, Some("6.1.0-57")),
            ("6.1.0-57".to_string(), false)
        );
        assert_eq!(
            choose_abi(Series::V6_1, Some("6.1.0-58"), Some("6.1.0-57")),
            ("6.1.0-58".to_string(), false)
        );
        assert_eq!(
            choose_abi(Series::V6_12, Some(" "), None),
            ("6.12.117+deb12".to_string(), true)
        );
    }

    #[test]
    fn stock_73_is_the_signed_image_in_a_build_root() {
        let k = Kernel {
            series: Series::V7_3,
            abi: "7.3.4+deb13".into(),
        };
        assert_eq!(k.packages(), ["linux-binary-7.3.4+deb13-amd64"]);
        assert_eq!(k.release(), "7.3.4+deb13-amd64");
        let u = unpacked(Path::new("/c"), k);
        assert_eq!(
            u.vmlinuz,
            Path::new("/c/kernels/7.3.4+deb13/root/usr/lib/modules/7.3.4+deb13-amd64/vmlinuz")
        );
        assert_eq!(
            u.kdir,
            Path::new("/usr/src/linux-headers-7.3.4+deb13-amd64")
        );
        assert_eq!(
            u.chroot.as_deref(),
            Some(Path::new("/c/kernels/7.3.4+deb13/buildroot"))
        );
        let c = u.make_command(Path::new("/t/kmod/c"));
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "unshare");
        let tail = [
            "/c/kernels/7.3.4+deb13/buildroot",
            "/t/kmod/c",
            "make",
            "-C",
            "/usr/src/linux-headers-7.3.4+deb13-amd64",
            "M=/k2u/module",
            "modules",
        ];
        assert!(args.ends_with(&tail.map(String::from)), "{args:?}");
        let names = "linux-image-7.3.4+deb13-amd64\nlinux-image-7.3.10+deb13-cloud-amd64\n\
                     linux-image-7.3.9+deb13-amd64\nlinux-image-7.3.12+deb13-rt-amd64\n";
        assert_eq!(
            newest_abi(Series::V7_3, names).as_deref(),
            Some("7.3.9+deb13")
        );
    }

    #[test]
    fn newest_abi_orders_numerically() {
        let names = "linux-image-6.1.0-9-amd64-unsigned\nlinux-image-6.1.0-56-amd64-unsigned\nlinux-image-6.1.0-10-amd64-unsigned\n";
        assert_eq!(newest_abi(Series::V6_1, names).as_deref(), Some("6.1.0-56"));
        let names = "linux-image-6.12.99+deb12-amd64-unsigned\nlinux-image-6.12.117+deb12-amd64-unsigned\nlinux-image-6.1.0-99-amd64-unsigned\n";
        assert_eq!(
            newest_abi(Series::V6_12, names).as_deref(),
            Some("6.12.117+deb12")
        );
        assert_eq!(
            newest_abi(Series::V6_12, "linux-image-6.1.0-9-amd64-unsigned\n"),
            None
        );
    }
}
