//! `--kernel 7.3-debug`: Linux 7.3 built from Debian's `linux-source-7.3`
//! with clang 19, Rust and the debug options in `kernel/config/debug.config`
//! (KASAN, lockdep, kmemleak, debug objects, ...). `--kernel 7.3-kcsan`:
//! the same source and fragment with `kernel/config/kcsan.config` laid over
//! it (KCSAN instead of KASAN), built and cached the same way beside it
//! (trees `kcsan-linux-<ver>-<key>`, symlink `current-7.3-kcsan`).
//!
//! Layout under the cache directory:
//!
//! ```text
//! apt-sid/                          private apt config for sid + trixie-backports
//! sources/linux-source-7.3_*.deb    the downloaded source package (kept)
//! tools/bin/bindgen                 bindgen-cli, `cargo install --root tools`
//! build/linux-<ver>-<key>/          the built tree (`make -C` it for modules)
//! build/linux-<ver>-<key>/.k2u-complete  stamp: built, with the key's inputs
//! build/current-7.3-debug           symlink to the last tree built or used
//! build/logs/                       make's output, one file per build
//! ```
//!
//! The key hashes the source package version, the fragment's text and the
//! versions of rustc, bindgen and clang: changing any of them builds a new
//! tree. Module builds use the same `make LLVM=-19` and the same PATH.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::kernels::{Apt, Kernel, Series, Unpacked};
use crate::util::{
    create_dir, describe, fmt_duration, remove_dir_if_exists, repo_root, run, run_captured,
    run_stdout, say, step, timestamp,
};

/// The config fragment, relative to the repository root.
pub const FRAGMENT: &str = "kernel/config/debug.config";
/// 7.3-kcsan's fragment, laid over [`FRAGMENT`] (see [`compose`]).
pub const KCSAN_FRAGMENT: &str = "kernel/config/kcsan.config";
/// Debian's source package.
const SOURCE_PACKAGE: &str = "linux-source-7.3";
/// The tarball inside it.
const SOURCE_TARBALL: &str = "usr/src/linux-source-7.3.tar.xz";
/// `make LLVM=-19`: clang-19, ld.lld-19, llvm-ar-19, ...
pub const LLVM_VAR: &str = "LLVM=-19";
/// clang of that toolchain, for the cache key.
const CLANG: &str = "clang-19";
/// Where bindgen finds libclang.
const LIBCLANG_PATH: &str = "/usr/lib/llvm-19/lib";
/// bindgen-cli from crates.io.
pub const BINDGEN_VERSION: &str = "0.71.1";
/// Measured wall time of a cold build (unpack, configure, `make -j2`) on
/// this project's 2-core machines: 6m45s, of which make took 6m08s.
pub const COLD_BUILD_MINUTES: u32 = 7;
/// Name of the symlink to the tree in use.
pub const CURRENT_LINK: &str = "current-7.3-debug";
/// Stamps inside a tree.
const STAMP_UNPACKED: &str = ".k2u-unpacked";
const STAMP_CONFIGURED: &str = ".k2u-configured";
const STAMP_COMPLETE: &str = ".k2u-complete";
/// Time limits (times `K2U_TIMEOUT_SCALE`): `cargo install bindgen-cli`
/// and the kernel's `make` (a cold build took 6-7 minutes here).
const CARGO_INSTALL_LIMIT: Duration = Duration::from_secs(30 * 60);
const KERNEL_MAKE_LIMIT: Duration = Duration::from_secs(120 * 60);
/// How often the build prints a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(20);

/// sid and trixie-backports: where `linux-source-7.3` is.
const SID_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

// ---------------------------------------------------------------- variants

/// One kernel built from the 7.3 source: its fragments and cache names.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// `7.3-debug` or `7.3-kcsan`.
    pub series: Series,
    /// Fragment laid over [`FRAGMENT`], if any.
    pub overlay: Option<&'static str>,
    /// Symlink to the tree in use, in `<cache>/build`.
    pub link: &'static str,
    /// Prefix of its tree names (`linux-<ver>-<key>` follows). No prefix
    /// is the start of another's, so pruning one never touches another's.
    pub prefix: &'static str,
    /// Measured wall time of a cold build on 2 cores, for the messages.
    pub cold_minutes: u32,
}

impl Variant {
    /// The variant of `series` (a series built from source).
    pub fn of(series: Series) -> Result<Variant> {
        match series {
            Series::V7_3Debug => Ok(Variant {
                series,
                overlay: None,
                link: CURRENT_LINK,
                prefix: "",
                cold_minutes: COLD_BUILD_MINUTES,
            }),
            Series::V7_3Kcsan => Ok(Variant {
                series,
                overlay: Some(KCSAN_FRAGMENT),
                link: "current-7.3-kcsan",
                prefix: "kcsan-",
                // 9m28s (make 8m58s), measured with the VM lock held.
                cold_minutes: 10,
            }),
            other => bail!("internal: {other} is not built from source"),
        }
    }

    /// Directory name of the tree of `inputs`.
    fn tree_name(&self, inputs: &KeyInputs) -> String {
        format!("{}{}", self.prefix, inputs.tree_name())
    }

    /// The fragment text: [`FRAGMENT`], with the overlay laid over it.
    fn fragment(&self) -> Result<String> {
        let read = |rel: &str| {
            let path = repo_root().join(rel);
            std::fs::read_to_string(&path)
                .with_context(|| format!("could not read {}", path.display()))
        };
        let base = read(FRAGMENT)?;
        let text = match self.overlay {
            None => base,
            Some(overlay) => compose(&base, &read(overlay)?, overlay)?,
        };
        parse_fragment(&text).with_context(|| {
            format!(
                "{FRAGMENT}{} is not a Kconfig fragment",
                self.overlay.map(|o| format!(" + {o}")).unwrap_or_default()
            )
        })?;
        Ok(text)
    }
}

/// Lays fragment `overlay` (named `name`) over `base`: each base line
/// about a symbol the overlay sets becomes a comment saying so, then the
/// overlay's lines follow. The result is one fragment in which every
/// symbol appears once.
pub fn compose(base: &str, overlay: &str, name: &str) -> Result<String> {
    let over = parse_fragment(overlay).with_context(|| format!("{name} is not a fragment"))?;
    let mut out = String::new();
    for line in base.lines() {
        let symbol = parse_fragment(line)
            .ok()
            .and_then(|f| f.into_iter().next())
            .map(|(n, _)| n);
        match symbol {
            Some(sym) if over.iter().any(|(n, _)| *n == sym) => {
                out.push_str(&format!("## replaced by {name}: {}\n", line.trim()));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str(&format!("\n## {name}\n"));
    out.push_str(overlay);
    if !overlay.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

// ---------------------------------------------------------------- pure parts

/// What a fragment line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// `CONFIG_X=value` (`y`, `m`, a number or a quoted string).
    Value(String),
    /// `# CONFIG_X is not set` or `CONFIG_X=n`.
    Unset,
}

/// Parses a Kconfig fragment: `CONFIG_X=v` and `# CONFIG_X is not set`
/// lines; other `#` lines and blank lines are comments.
pub fn parse_fragment(text: &str) -> Result<Vec<(String, Want)>> {
    let mut out: Vec<(String, Want)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let entry = if line.is_empty() {
            None
        } else if let Some(comment) = line.strip_prefix('#') {
            comment
                .trim()
                .strip_suffix(" is not set")
                .filter(|name| is_symbol(name))
                .map(|name| (name.to_string(), Want::Unset))
        } else {
            let (name, value) = line
                .split_once('=')
                .filter(|(name, value)| is_symbol(name) && !value.is_empty())
                .ok_or_else(|| anyhow!("line {}: expected CONFIG_X=value, got `{raw}`", i + 1))?;
            let want = if value == "n" {
                Want::Unset
            } else {
                Want::Value(value.to_string())
            };
            Some((name.to_string(), want))
        };
        if let Some((name, want)) = entry {
            if out.iter().any(|(n, _)| *n == name) {
                bail!("line {}: {name} appears twice", i + 1);
            }
            out.push((name, want));
        }
    }
    if out.is_empty() {
        bail!("no CONFIG_ lines");
    }
    Ok(out)
}

fn is_symbol(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// The `CONFIG_X=value` assignments of a `.config`.
pub fn parse_config(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .collect()
}

/// The fragment options that the final `.config` does not have, as
/// `CONFIG_X=y (got: not set)` lines.
pub fn not_stuck(fragment: &[(String, Want)], config: &str) -> Vec<String> {
    let config = parse_config(config);
    let mut out = Vec::new();
    for (name, want) in fragment {
        let got = config.get(name.as_str()).copied().filter(|v| *v != "n");
        match (want, got) {
            (Want::Value(v), Some(g)) if g == v => {}
            (Want::Unset, None) => {}
            (Want::Value(v), g) => out.push(format!(
                "{name}={v} (got: {})",
                g.map_or_else(|| "not set".to_string(), |g| format!("{name}={g}"))
            )),
            (Want::Unset, Some(g)) => out.push(format!("{name} not set (got: {name}={g})")),
        }
    }
    out
}

/// What the build depends on; any change builds a new tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInputs {
    /// Version of `linux-source-7.3`, e.g. `7.3.1-1`.
    pub source_version: String,
    /// Text of `kernel/config/debug.config`.
    pub fragment: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `bindgen --version`.
    pub bindgen: String,
    /// First line of `clang-19 --version`.
    pub clang: String,
}

/// FNV-1a, 64 bits: a stable hash (std's are not stable across releases).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl KeyInputs {
    /// The text that is hashed, also stored in the stamp.
    pub fn describe(&self) -> String {
        format!(
            "version={}\nrustc={}\nbindgen={}\nclang={}\nfragment-fnv={:016x}\n",
            self.source_version,
            self.rustc.trim(),
            self.bindgen.trim(),
            self.clang.trim(),
            fnv1a64(self.fragment.as_bytes())
        )
    }

    /// 12 hex digits.
    pub fn key(&self) -> String {
        let mut text = self.describe();
        // The whole fragment, not only its hash, goes in.
        text.push_str(&self.fragment);
        format!("{:016x}", fnv1a64(text.as_bytes()))[..12].to_string()
    }

    /// Directory name of the tree: `linux-<version>-<key>`, with anything
    /// but `[A-Za-z0-9._-]` in the version replaced by `_`.
    pub fn tree_name(&self) -> String {
        let version: String = self
            .source_version
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("linux-{version}-{}", self.key())
    }
}

/// The `version=` line of a stamp.
#[cfg(test)]
pub fn stamp_version(stamp: &str) -> Option<&str> {
    stamp
        .lines()
        .find_map(|l| l.strip_prefix("version="))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------- toolchain

/// The toolchain that builds the tree and every module for it.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// PATH with `<cache>/tools/bin` first.
    path: OsString,
    /// `rustc --version`.
    rustc: String,
    /// `bindgen --version`.
    bindgen: String,
    /// First line of `clang-19 --version`.
    clang: String,
}

impl Toolchain {
    /// Environment for `make` and the tools.
    pub fn env(&self) -> Vec<(String, OsString)> {
        vec![
            ("PATH".to_string(), self.path.clone()),
            ("LIBCLANG_PATH".to_string(), OsString::from(LIBCLANG_PATH)),
        ]
    }

    /// `make -C <tree> LLVM=-19` with the toolchain's environment.
    fn make(&self, tree: &Path) -> Command {
        let mut c = Command::new("make");
        c.arg("-C").arg(tree).arg(LLVM_VAR).stdin(Stdio::null());
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }

    fn key_inputs(&self, source_version: &str, fragment: &str) -> KeyInputs {
        KeyInputs {
            source_version: source_version.to_string(),
            fragment: fragment.to_string(),
            rustc: self.rustc.clone(),
            bindgen: self.bindgen.clone(),
            clang: self.clang.clone(),
        }
    }
}

fn tools_dir(cache: &Path) -> PathBuf {
    cache.join("tools")
}

/// First line of `<program> --version` run with `path`.
fn version_of(program: &str, path: &OsString) -> Result<String> {
    let out = run_stdout(Command::new(program).arg("--version").env("PATH", path))?;
    out.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("`{program} --version` printed nothing"))
}

/// Installs (when missing) and describes the 7.3-debug toolchain: clang-19
/// and friends from bookworm, rustup's `rust-src`, and bindgen-cli in
/// `<cache>/tools`.
pub fn ensure_toolchain(cache: &Path) -> Result<Toolchain> {
    step(
        "7.3-debug toolchain: clang-19, lld-19, llvm-19, libclang-19-dev",
        crate::deps::ensure_debug,
    )?;
    let tools_bin = tools_dir(cache).join("bin");
    let mut dirs = vec![tools_bin.clone()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(dirs).context("PATH has an entry with a `:` in it")?;

    step("7.3-debug toolchain: rustup's rust-src", || {
        let sysroot = run_stdout(
            Command::new("rustc")
                .args(["--print", "sysroot"])
                .env("PATH", &path),
        )
        .context("rustc (from rustup) is needed for the 7.3-debug kernel")?;
        let lib = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core/src/lib.rs");
        if lib.exists() {
            say(format!("rust-src: present in {}", sysroot.trim()));
            return Ok(());
        }
        run(Command::new("rustup")
            .args(["component", "add", "rust-src"])
            .env("PATH", &path))
        .context("could not add rustup's rust-src component (the kernel builds `core` from it)")?;
        if !lib.exists() {
            bail!(
                "rustup added rust-src but {} is still missing",
                lib.display()
            );
        }
        Ok(())
    })?;

    step(
        format!("7.3-debug toolchain: bindgen-cli {BINDGEN_VERSION}"),
        || {
            let bindgen = tools_bin.join("bindgen");
            let have = Command::new(&bindgen)
                .arg("--version")
                .env("LIBCLANG_PATH", LIBCLANG_PATH)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
            if have.as_deref() == Some(format!("bindgen {BINDGEN_VERSION}").as_str()) {
                say(format!(
                    "bindgen: {BINDGEN_VERSION} present in {}",
                    bindgen.display()
                ));
                return Ok(());
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let mut c = Command::new(cargo);
            c.args([
                "install",
                "--locked",
                "--force",
                "bindgen-cli",
                "--version",
                BINDGEN_VERSION,
            ])
            .arg("--root")
            .arg(tools_dir(cache))
            .env("PATH", &path);
            say(describe(&c));
            crate::util::run_timeout(&mut c, crate::util::scaled(CARGO_INSTALL_LIMIT))
                .map(|_| ())
                .context("could not install bindgen-cli from crates.io")
        },
    )?;

    let env_lib = [("LIBCLANG_PATH", LIBCLANG_PATH)];
    let rustc = version_of("rustc", &path)?;
    let bindgen = run_stdout(
        Command::new(tools_bin.join("bindgen"))
            .arg("--version")
            .envs(env_lib),
    )
    .context("bindgen does not run")?
    .trim()
    .to_string();
    let clang = version_of(CLANG, &path)?;
    say(format!("toolchain: {rustc}; {bindgen}; {clang}"));
    Ok(Toolchain {
        path,
        rustc,
        bindgen,
        clang,
    })
}

// ---------------------------------------------------------------- fetching

fn build_dir(cache: &Path) -> PathBuf {
    cache.join("build")
}

fn sources_dir(cache: &Path) -> PathBuf {
    cache.join("sources")
}

pub(crate) fn sid_apt(cache: &Path) -> Result<Apt> {
    // sid's InRelease carries a Valid-Until a week ahead; the archive this
    // project reaches can serve it past that date ("Release file ... is
    // expired"). The signature is still checked.
    Apt::new(
        cache,
        "apt-sid",
        SID_SOURCES,
        "sid, trixie-backports",
        "Acquire::Check-Valid-Until \"false\";\n",
    )
}

/// The candidate version of `linux-source-7.3` in sid / trixie-backports.
fn newest_source_version(apt: &Apt) -> Result<String> {
    let show =
        run_stdout(
            apt.command("apt-cache")
                .args(["show", "--no-all-versions", SOURCE_PACKAGE]),
        )
        .with_context(|| format!("{SOURCE_PACKAGE} is not in sid's or trixie-backports' lists"))?;
    show.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| anyhow!("no Version in `apt-cache show {SOURCE_PACKAGE}`"))
}

/// The downloaded `.deb` of `version`, if it is in `<cache>/sources`.
fn source_deb(cache: &Path, version: &str) -> Option<PathBuf> {
    // apt-get download names it <pkg>_<version with ':' as %3a>_all.deb.
    let name = format!("{SOURCE_PACKAGE}_{}_all.deb", version.replace(':', "%3a"));
    let path = sources_dir(cache).join(name);
    path.exists().then_some(path)
}

fn download_source(cache: &Path, apt: &Apt, version: &str) -> Result<PathBuf> {
    if let Some(deb) = source_deb(cache, version) {
        say(format!(
            "{SOURCE_PACKAGE} {version}: {} is here",
            deb.display()
        ));
        return Ok(deb);
    }
    let dir = sources_dir(cache);
    create_dir(&dir)?;
    apt.download(&[format!("{SOURCE_PACKAGE}={version}")], &dir)
        .with_context(|| format!("could not download {SOURCE_PACKAGE} {version}"))?;
    source_deb(cache, version).ok_or_else(|| {
        anyhow!(
            "apt-get download finished but no {SOURCE_PACKAGE}_{version}_all.deb is in {}",
            dir.display()
        )
    })
}

fn unpack_source(cache: &Path, deb: &Path, tree: &Path) -> Result<()> {
    remove_dir_if_exists(tree)?;
    create_dir(tree)?;
    let tmp = build_dir(cache).join(".unpack");
    remove_dir_if_exists(&tmp)?;
    create_dir(&tmp)?;
    run_captured(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))
        .with_context(|| format!("could not unpack {}", deb.display()))?;
    let tarball = tmp.join(SOURCE_TARBALL);
    if !tarball.exists() {
        bail!("{} has no {SOURCE_TARBALL}", deb.display());
    }
    say(format!(
        "tar xJf {} -C {}",
        tarball.display(),
        tree.display()
    ));
    run_captured(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(tree)
            .arg("--strip-components=1"),
    )
    .with_context(|| format!("could not extract {}", tarball.display()))?;
    remove_dir_if_exists(&tmp)?;
    if !tree.join("Makefile").exists() || !tree.join("rust").is_dir() {
        bail!(
            "{} does not look like a kernel tree with Rust support after unpacking",
            tree.display()
        );
    }
    write_file(&tree.join(STAMP_UNPACKED), &format!("{}\n", deb.display()))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("could not write {}", path.display()))
}

/// `make rustavailable`: fails with its explanation when rustc, rust-src,
/// bindgen or libclang do not suit the tree.
fn check_rust_available(tc: &Toolchain, tree: &Path) -> Result<()> {
    let out = run_captured(tc.make(tree).arg("rustavailable")).context(
        "`make LLVM=-19 rustavailable` failed: the kernel cannot use this Rust toolchain (see above)",
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        println!("    rustavailable: {line}");
    }
    Ok(())
}

/// tinyconfig + fragment, olddefconfig, and the check that it all stuck.
fn configure(tc: &Toolchain, tree: &Path, fragment: &str) -> Result<()> {
    // The composed fragment, as merged (7.3-debug: debug.config verbatim).
    let fragment_path = tree.join(".k2u-fragment.config");
    write_file(&fragment_path, fragment)?;
    let fragment_path = fragment_path.as_path();
    let wanted = parse_fragment(fragment)
        .with_context(|| format!("{} is not a Kconfig fragment", fragment_path.display()))?;
    run_captured(tc.make(tree).arg("tinyconfig")).context("make tinyconfig failed")?;
    let mut merge = Command::new(tree.join("scripts/kconfig/merge_config.sh"));
    merge
        .arg("-m")
        .arg(".config")
        .arg(fragment_path)
        .current_dir(tree)
        .envs(tc.env());
    run_captured(&mut merge).context("merge_config.sh -m .config <fragment> failed")?;
    run_captured(tc.make(tree).arg("olddefconfig")).context("make olddefconfig failed")?;
    let config_path = tree.join(".config");
    let config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("could not read {}", config_path.display()))?;
    let missing = not_stuck(&wanted, &config);
    if !missing.is_empty() {
        bail!(
            "{} option(s) of {} did not stick after olddefconfig (a dependency is missing or \
             they conflict); fix the fragment:\n  {}",
            missing.len(),
            fragment_path.display(),
            missing.join("\n  ")
        );
    }
    say(format!(
        "config: all {} options of {} are set as asked",
        wanted.len(),
        fragment_path.display()
    ));
    write_file(&tree.join(STAMP_CONFIGURED), "")
}

/// Runs `cmd` with its output going to `log`: prints warnings and errors
/// as they come, a progress line every [`PROGRESS_EVERY`], and the last
/// lines when it fails (the output collector of [`crate::util::watch`]).
fn run_logged(cmd: &mut Command, log_path: &Path) -> Result<()> {
    let desc = describe(cmd);
    let mut log = std::fs::File::create(log_path)
        .with_context(|| format!("could not create {}", log_path.display()))?;
    let start = Instant::now();
    let limit = crate::util::scaled(KERNEL_MAKE_LIMIT);
    let mut on_line = |line: &str| {
        // A full disk shows up as a failed build anyway.
        let _ = writeln!(log, "{line}");
        if is_notable(line) {
            println!("    make| {line}");
        }
    };
    let mut progress = |count: u64, last: Option<&str>| {
        println!(
            "    [{}] {count} lines, last: {}",
            fmt_duration(start.elapsed()),
            last.unwrap_or("").trim()
        );
    };
    let ran = crate::util::watch(
        cmd,
        limit,
        crate::util::Watch {
            on_line: &mut on_line,
            tick: Some((PROGRESS_EVERY, &mut progress)),
            keep_text: false,
            tail_lines: 40,
        },
    )?;
    if ran.timed_out {
        bail!(
            "`{desc}` did not finish within {} and was killed (K2U_TIMEOUT_SCALE multiplies \
             every timeout); output in {}",
            fmt_duration(limit),
            log_path.display()
        );
    }
    if !ran.status.success() {
        println!("    last lines of {}:", log_path.display());
        for l in &ran.tail {
            println!("    make| {l}");
        }
        bail!(
            "`{desc}` failed with {} after {}; full output in {}",
            ran.status,
            fmt_duration(start.elapsed()),
            log_path.display()
        );
    }
    Ok(())
}

/// Whether a build output line is a diagnostic worth showing live (not a
/// `CC lib/zstd/common/error_private.o` progress line).
pub fn is_notable(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.contains("warning:")
        || lower.contains("error:")
        || lower.contains("error[")
        || (lower.starts_with("make") && lower.contains("error "))
}

/// Points `<cache>/build/current-7.3-debug` (the variant's link) at
/// `tree` (atomically).
fn update_current(cache: &Path, v: &Variant, tree: &Path) -> Result<()> {
    let link = build_dir(cache).join(v.link);
    let tmp = build_dir(cache).join(format!(".{}.tmp", v.link));
    let _ = std::fs::remove_file(&tmp);
    let target = tree
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", tree.display()))?;
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("could not create the symlink {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).with_context(|| format!("could not replace {}", link.display()))
}

/// Removes the trees of other keys (about 2.3 GB each): a tree is only
/// rebuilt when an input changed, so the old ones are stale. The tree that
/// `current-7.3-debug` still points at is kept (someone may be building a
/// module against it or booting it right now); it goes with the next build.
fn prune_other_trees(cache: &Path, v: &Variant, keep: &Path) -> Result<()> {
    let dir = build_dir(cache);
    let own = format!("{}linux-", v.prefix);
    let previous = std::fs::read_link(dir.join(v.link))
        .ok()
        .map(|target| dir.join(target));
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("could not list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("could not list {}", dir.display()))?;
        let path = entry.path();
        let is_tree = entry.file_name().to_string_lossy().starts_with(&own)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if is_tree && path != keep && previous.as_deref() != Some(path.as_path()) {
            say(format!(
                "{}: removing the stale tree {}",
                v.series,
                path.display()
            ));
            remove_dir_if_exists(&path)?;
        }
    }
    Ok(())
}

/// Builds the tree of `inputs` unless it is built; returns its path.
fn build(
    cache: &Path,
    v: &Variant,
    tc: &Toolchain,
    apt: Option<&Apt>,
    inputs: &KeyInputs,
) -> Result<PathBuf> {
    let tree = build_dir(cache).join(v.tree_name(inputs));
    let version = &inputs.source_version;
    let name = v.series;
    if tree.join(STAMP_COMPLETE).exists() {
        say(format!("{name}: built tree in {}", tree.display()));
        return Ok(tree);
    }
    let start = Instant::now();
    say(format!(
        "{name}: building {SOURCE_PACKAGE} {version} in {} (a cold build takes ~{} min on 2 cores)",
        tree.display(),
        v.cold_minutes
    ));
    create_dir(&build_dir(cache))?;
    if !tree.join(STAMP_UNPACKED).exists() {
        let apt = match apt {
            Some(a) => a,
            None => bail!("internal: no apt configuration to download {SOURCE_PACKAGE}"),
        };
        let deb = step(format!("download {SOURCE_PACKAGE} {version}"), || {
            download_source(cache, apt, version)
        })?;
        step(format!("unpack {SOURCE_PACKAGE} {version}"), || {
            unpack_source(cache, &deb, &tree)
        })?;
    }
    step("make LLVM=-19 rustavailable", || {
        check_rust_available(tc, &tree)
    })?;
    if !tree.join(STAMP_CONFIGURED).exists() {
        let what = v.overlay.map(|o| format!(" + {o}")).unwrap_or_default();
        step(format!("configure: tinyconfig + {FRAGMENT}{what}"), || {
            configure(tc, &tree, &inputs.fragment)
        })?;
    }
    let logs = build_dir(cache).join("logs");
    create_dir(&logs)?;
    let log = logs.join(format!("{}-{}.log", v.tree_name(inputs), timestamp()));
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut make = tc.make(&tree);
    make.arg(format!("-j{jobs}"))
        .args(["bzImage", "modules_prepare", "modules"]);
    say(format!(
        "{name}: {} (output in {}; progress every {}s)",
        describe(&make),
        log.display(),
        PROGRESS_EVERY.as_secs()
    ));
    // Nested in "fetch kernel 7.3-debug": the leading blanks keep it out
    // of the table's sum.
    crate::util::stage("  of which: debug kernel build (make)", || {
        run_logged(&mut make, &log)
    })?;
    for needed in [
        "arch/x86/boot/bzImage",
        "Module.symvers",
        "rust/libkernel.rmeta",
        "rust/libmacros.so",
    ] {
        if !tree.join(needed).exists() {
            bail!(
                "make succeeded but {} is missing: the tree is not usable for (Rust) modules",
                tree.join(needed).display()
            );
        }
    }
    write_file(
        &tree.join(STAMP_COMPLETE),
        &format!("{}key={}\n", inputs.describe(), inputs.key()),
    )?;
    prune_other_trees(cache, v, &tree)?;
    say(format!(
        "{name}: built in {} (a cold build takes ~{} min on 2 cores); tree {}",
        fmt_duration(start.elapsed()),
        v.cold_minutes,
        tree.display()
    ));
    Ok(tree)
}

/// The `linux-source-7.3` version to build, like the binary kernels:
/// `--kernel-version`, else `KERN2USR_KERNEL_7_3_DEBUG`, else the pinned
/// [`Series::pinned_abi`]. A built tree or a downloaded package of it is
/// used as is; a pinned version that left the archive falls back to the
/// newest one, with a warning; an explicit one that is gone is an error.
fn choose_source(
    cache: &Path,
    v: &Variant,
    tc: &Toolchain,
    fragment: &str,
    flag: Option<&str>,
    env: Option<&str>,
) -> Result<(KeyInputs, Option<Apt>)> {
    let series = v.series;
    let (wanted, pinned) = crate::kernels::choose_abi(series, flag, env);
    let inputs = tc.key_inputs(&wanted, fragment);
    let built = |i: &KeyInputs| {
        build_dir(cache)
            .join(v.tree_name(i))
            .join(STAMP_COMPLETE)
            .exists()
    };
    if built(&inputs) {
        return Ok((inputs, None));
    }
    let apt = sid_apt(cache)?;
    if source_deb(cache, &wanted).is_some() {
        return Ok((inputs, Some(apt)));
    }
    apt.update_if_stale()?;
    let spec = format!("{SOURCE_PACKAGE}={wanted}");
    if apt.query(&["show", &spec]).is_ok() {
        return Ok((inputs, Some(apt)));
    }
    if !pinned {
        bail!(
            "{SOURCE_PACKAGE} {wanted} (from --kernel-version or {}) is not in sid's or \
             trixie-backports' lists; unset it to use the pinned {}",
            series.env_var(),
            series.pinned_abi()
        );
    }
    let newest = newest_source_version(&apt)?;
    crate::kernels::warn_replaced(series, &wanted, &newest);
    let inputs = tc.key_inputs(&newest, fragment);
    Ok((inputs, Some(apt)))
}

/// Makes sure the kernel of `series` (7.3-debug or 7.3-kcsan) is built
/// and returns its paths. `version` (or the series' variable) picks a
/// `linux-source-7.3` version; without it, the pinned one (see
/// [`choose_source`]; 7.3-kcsan pins the same source as 7.3-debug).
pub fn fetch(series: Series, version: Option<&str>) -> Result<Unpacked> {
    let v = Variant::of(series)?;
    let cache = crate::cache::cache_dir()?;
    create_dir(&cache).context("set KERN2USR_CACHE to a writable directory")?;
    let fragment = v.fragment()?;
    let tc = ensure_toolchain(&cache)?;

    let env = std::env::var(series.env_var()).ok();
    let (inputs, apt) = choose_source(&cache, &v, &tc, &fragment, version, env.as_deref())?;
    let tree = build(&cache, &v, &tc, apt.as_ref(), &inputs)?;
    update_current(&cache, &v, &tree)?;
    say(format!(
        "{series}: {} -> {}",
        build_dir(&cache).join(v.link).display(),
        v.tree_name(&inputs)
    ));
    Ok(Unpacked {
        kernel: Kernel {
            series,
            abi: inputs.source_version.clone(),
        },
        vmlinuz: tree.join("arch/x86/boot/bzImage"),
        kdir: tree,
        make_vars: vec![LLVM_VAR.to_string()],
        make_env: tc.env(),
        chroot: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> KeyInputs {
        KeyInputs {
            source_version: "7.3.1-1".into(),
            fragment: "CONFIG_RUST=y\n".into(),
            rustc: "rustc 1.95.0 (59807616e 2026-04-14)".into(),
            bindgen: "bindgen 0.71.1".into(),
            clang: "Debian clang version 19.1.7 (3~deb12u1)".into(),
        }
    }

    #[test]
    fn key_is_stable_and_covers_every_input() {
        let base = inputs();
        assert_eq!(base.key(), inputs().key());
        assert_eq!(base.key().len(), 12);
        let changes: [fn(&mut KeyInputs); 5] = [
            |i| i.source_version = "7.3.2-1".into(),
            |i| i.fragment.push_str("CONFIG_KASAN=y\n"),
            |i| i.rustc = "rustc 1.96.0".into(),
            |i| i.bindgen = "bindgen 0.72.0".into(),
            |i| i.clang = "Debian clang version 19.1.8".into(),
        ];
        for change in changes {
            let mut other = inputs();
            change(&mut other);
            assert_ne!(base.key(), other.key(), "{other:?}");
        }
        // Known value: the key must not change between xtask builds.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn tree_names_are_path_safe() {
        let mut i = inputs();
        i.source_version = "7.3.1-1~bpo13+1".into();
        let name = i.tree_name();
        assert!(name.starts_with("linux-7.3.1-1_bpo13_1-"), "{name}");
        assert_eq!(name.len(), "linux-7.3.1-1_bpo13_1-".len() + 12);
    }

    #[test]
    fn notable_lines() {
        for yes in [
            "kernel/fork.c:10:5: warning: unused variable 'a' [-Wunused-variable]",
            "drivers/x.c:1:1: error: expected ';'",
            "error[E0425]: cannot find value `x` in this scope",
            "make[2]: *** [scripts/Makefile.build:203: kernel/fork.o] Error 1",
        ] {
            assert!(is_notable(yes), "{yes}");
        }
        for no in [
            "  CC      lib/zstd/common/error_private.o",
            "  RUSTC L rust/build_error.o",
            "  CC      fs/fserror.o",
        ] {
            assert!(!is_notable(no), "{no}");
        }
    }

    #[test]
    fn stamp_round_trip() {
        let i = inputs();
        let stamp = format!("{}key={}\n", i.describe(), i.key());
        assert_eq!(stamp_version(&stamp), Some("7.3.1-1"));
        assert_eq!(stamp_version("key=abc\n"), None);
    }

    #[test]
    fn fragment_parsing() {
        let text = "# comment\n\nCONFIG_KASAN=y\n# CONFIG_SLUB_TINY is not set\n\
                    CONFIG_MODVERSIONS=n\nCONFIG_LOG_BUF_SHIFT=17\nCONFIG_CMDLINE=\"a b\"\n";
        let f = parse_fragment(text).expect("parses");
        assert_eq!(
            f,
            vec![
                ("CONFIG_KASAN".to_string(), Want::Value("y".into())),
                ("CONFIG_SLUB_TINY".to_string(), Want::Unset),
                ("CONFIG_MODVERSIONS".to_string(), Want::Unset),
                ("CONFIG_LOG_BUF_SHIFT".to_string(), Want::Value("17".into())),
                ("CONFIG_CMDLINE".to_string(), Want::Value("\"a b\"".into())),
            ]
        );
        assert!(parse_fragment("KASAN=y\n").is_err());
        assert!(parse_fragment("CONFIG_KASAN\n").is_err());
        assert!(parse_fragment("CONFIG_KASAN=\n").is_err());
        assert!(parse_fragment("CONFIG_A=y\nCONFIG_A=n\n").is_err());
        assert!(parse_fragment("# nothing\n").is_err());
    }

    #[test]
    fn the_repository_fragment_parses() {
        let path = repo_root().join(FRAGMENT);
        let text = std::fs::read_to_string(&path).expect("the fragment is in the repository");
        let f = parse_fragment(&text).expect("parses");
        for needed in ["CONFIG_RUST", "CONFIG_KASAN", "CONFIG_DEBUG_KMEMLEAK"] {
            assert!(f.iter().any(|(n, _)| n == needed), "{needed}");
        }
    }

    #[test]
    fn compose_replaces_the_overlaid_lines() {
        let base = "# base\nCONFIG_KASAN=y\nCONFIG_UBSAN=y\n# CONFIG_SLUB_TINY is not set\n";
        let overlay = "# CONFIG_KASAN is not set\nCONFIG_KCSAN=y\nCONFIG_SLUB_TINY=y\n";
        let text = compose(base, overlay, "o.config").expect("composes");
        let f = parse_fragment(&text).expect("one symbol once");
        let get = |n: &str| f.iter().find(|(s, _)| s == n).map(|(_, w)| w.clone());
        assert_eq!(get("CONFIG_KASAN"), Some(Want::Unset));
        assert_eq!(get("CONFIG_KCSAN"), Some(Want::Value("y".into())));
        assert_eq!(get("CONFIG_UBSAN"), Some(Want::Value("y".into())));
        assert_eq!(get("CONFIG_SLUB_TINY"), Some(Want::Value("y".into())));
        assert_eq!(f.len(), 4);
        assert!(
            text.contains("## replaced by o.config: CONFIG_KASAN=y"),
            "{text}"
        );
        assert!(compose(base, "CONFIG_A=y\nCONFIG_A=n\n", "o").is_err());
    }

    #[test]
    fn the_kcsan_variant_is_the_debug_fragment_without_kasan() {
        let v = Variant::of(Series::V7_3Kcsan).expect("built from source");
        let f = parse_fragment(&v.fragment().expect("composes")).expect("parses");
        let get = |n: &str| f.iter().find(|(s, _)| s == n).map(|(_, w)| w.clone());
        assert_eq!(get("CONFIG_KCSAN"), Some(Want::Value("y".into())));
        for off in [
            "CONFIG_KASAN",
            "CONFIG_KASAN_GENERIC",
            "CONFIG_KCSAN_STRICT",
        ] {
            assert_eq!(get(off), Some(Want::Unset), "{off}");
        }
        // The rest of the debug fragment is kept.
        for on in [
            "CONFIG_RUST",
            "CONFIG_PROVE_LOCKING",
            "CONFIG_DEBUG_KMEMLEAK",
        ] {
            assert_eq!(get(on), Some(Want::Value("y".into())), "{on}");
        }
        // 7.3-debug's text (and so its cache key) is debug.config verbatim.
        let debug = Variant::of(Series::V7_3Debug).expect("built from source");
        let text = std::fs::read_to_string(repo_root().join(FRAGMENT)).expect("fragment");
        assert_eq!(debug.fragment().expect("reads"), text);
        // Tree names and links of the two never collide or prefix each other.
        let i = inputs();
        assert!(!v.tree_name(&i).starts_with("linux-"));
        assert_ne!(v.link, debug.link);
        assert!(Variant::of(Series::V6_1).is_err());
    }

    #[test]
    fn verification_lists_what_did_not_stick() {
        let fragment = parse_fragment(
            "CONFIG_KASAN=y\n# CONFIG_SLUB_TINY is not set\nCONFIG_UBSAN=y\n\
             CONFIG_LOG_BUF_SHIFT=17\n# CONFIG_MODVERSIONS is not set\nCONFIG_RUST=y\n",
        )
        .expect("parses");
        let config = "CONFIG_KASAN=y\nCONFIG_SLUB_TINY=y\n# CONFIG_UBSAN is not set\n\
                      CONFIG_LOG_BUF_SHIFT=18\n# CONFIG_MODVERSIONS is not set\nCONFIG_RUST=y\n";
        assert_eq!(
            not_stuck(&fragment, config),
            vec![
                "CONFIG_SLUB_TINY not set (got: CONFIG_SLUB_TINY=y)",
                "CONFIG_UBSAN=y (got: not set)",
                "CONFIG_LOG_BUF_SHIFT=17 (got: CONFIG_LOG_BUF_SHIFT=18)",
            ]
        );
        let good = "CONFIG_KASAN=y\nCONFIG_UBSAN=y\nCONFIG_LOG_BUF_SHIFT=17\nCONFIG_RUST=y\n";
        assert!(not_stuck(&fragment, good).is_empty());
    }
}
