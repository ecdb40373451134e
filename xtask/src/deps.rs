//! `cargo xtask deps`: the host packages the harness needs, installed
//! without ever removing or downgrading a package of the host.
//!
//! Every install is first simulated (`apt-get -s`): the `Inst` and `Remv`
//! lines say exactly what apt would do. Only a plan that removes nothing and
//! downgrades nothing is carried out, with `--no-remove` as a second guard.
//! When the plain install conflicts with what is installed (a newer backport
//! of the same source package, e.g. qemu-utils from bookworm-backports
//! beside a missing qemu-system-x86), the family is resolved again from a
//! private bookworm-backports configuration (`<cache>/apt-host`: its own
//! sources and lists, the host's dpkg status; /etc/apt and
//! /var/lib/apt/lists are never written) at the installed sibling's
//! version. If that does not give a clean plan either, nothing is changed
//! and the error names the package and what the user can do.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::kernels::Apt;
use crate::util::{is_root, run_timeout, run_timeout_quiet, say, scaled, show};

/// What one subcommand needs on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing (host unit tests, gen-header, build-user).
    Nothing,
    /// Building a module against a fetched kernel.
    ModuleBuild,
    /// Module build and the initramfs tools.
    Initramfs,
    /// All of the above and QEMU.
    Boot,
}

/// What Debian's kernel headers need to build an out-of-tree module.
pub const BUILD_PACKAGES: &[&str] = &[
    "make",
    "gcc-12",
    "libelf-dev",
    "bc",
    "flex",
    "bison",
    "kmod",
    "file",
    // pahole: 6.12 headers generate BTF for modules and fail without it.
    "dwarves",
];

/// The initramfs tools.
pub const INITRAMFS_PACKAGES: &[&str] = &["busybox-static", "cpio", "gzip"];

/// QEMU.
pub const BOOT_PACKAGES: &[&str] = &["qemu-system-x86"];

/// What only `--kernel 7.3-debug` needs: the kernel is built with
/// `make LLVM=-19` (KASAN with Rust needs a clang-built kernel) and bindgen
/// loads libclang. Installed when that kernel is first asked for.
pub const DEBUG_PACKAGES: &[&str] = &["clang-19", "lld-19", "llvm-19", "libclang-19-dev"];

/// What the stock `7.3` kernel needs: its headers want trixie's gcc-14 and
/// glibc, so modules are built in a trixie root made by mmdebstrap
/// (`uidmap` lets it and `unshare` run without root).
pub const STOCK_73_PACKAGES: &[&str] = &["mmdebstrap", "uidmap"];

impl Need {
    /// The packages of this need.
    pub fn packages(self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if matches!(self, Need::ModuleBuild | Need::Initramfs | Need::Boot) {
            p.extend(BUILD_PACKAGES);
        }
        if matches!(self, Need::Initramfs | Need::Boot) {
            p.extend(INITRAMFS_PACKAGES);
        }
        if self == Need::Boot {
            p.extend(BOOT_PACKAGES);
        }
        p
    }
}

/// The suite of the private backports configuration.
pub const BACKPORTS: &str = "bookworm-backports";

/// bookworm with backports, for the host's own installs.
const HOST_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
";

/// Time limits (times `K2U_TIMEOUT_SCALE`).
const APT_UPDATE_LIMIT: Duration = Duration::from_secs(10 * 60);
const APT_SIMULATE_LIMIT: Duration = Duration::from_secs(5 * 60);
const APT_INSTALL_LIMIT: Duration = Duration::from_secs(30 * 60);

// ------------------------------------------------------------- pure parts

/// Compares two Debian versions the way dpkg does (epoch, upstream
/// version, revision; `~` sorts before everything, even the end).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ra) = split_epoch(a);
    let (eb, rb) = split_epoch(b);
    if ea != eb {
        return ea.cmp(&eb);
    }
    let (ua, va) = ra.rsplit_once('-').unwrap_or((ra, ""));
    let (ub, vb) = rb.rsplit_once('-').unwrap_or((rb, ""));
    verrevcmp(ua.as_bytes(), ub.as_bytes()).then_with(|| verrevcmp(va.as_bytes(), vb.as_bytes()))
}

fn split_epoch(v: &str) -> (u64, &str) {
    match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    }
}

fn char_order(c: Option<&u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
        Some(c) => i32::from(*c) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (char_order(a.get(i)), char_order(b.get(j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// One package apt would install or upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Package name (with `:arch` for foreign architectures).
    pub name: String,
    /// Installed version, when it is an upgrade (or downgrade).
    pub from: Option<String>,
    /// Version apt would install.
    pub to: String,
}

impl Change {
    /// Whether the new version is older than the installed one.
    pub fn is_downgrade(&self) -> bool {
        self.from
            .as_deref()
            .is_some_and(|from| compare_versions(&self.to, from) == Ordering::Less)
    }
}

/// What `apt-get -s install` would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `Inst` lines: new packages, upgrades and downgrades.
    pub installs: Vec<Change>,
    /// `Remv`/`Purg` lines: installed packages and their versions.
    pub removals: Vec<(String, String)>,
}

impl Plan {
    /// The installs that are downgrades.
    pub fn downgrades(&self) -> Vec<&Change> {
        self.installs.iter().filter(|c| c.is_downgrade()).collect()
    }

    /// Whether the plan neither removes nor downgrades anything.
    pub fn is_clean(&self) -> bool {
        self.removals.is_empty() && self.downgrades().is_empty()
    }

    /// `qemu-utils 1:10.0.2+ds-2+deb13u1~bpo12+1 would be REMOVED; ...`.
    pub fn describe_harm(&self) -> String {
        let mut parts: Vec<String> = self
            .removals
            .iter()
            .map(|(n, v)| format!("{n} {v} would be REMOVED"))
            .collect();
        parts.extend(self.downgrades().iter().map(|c| {
            format!(
                "{} would be DOWNGRADED from {} to {}",
                c.name,
                c.from.as_deref().unwrap_or("?"),
                c.to
            )
        }));
        parts.join("; ")
    }
}

/// The text between the first `[` and `]` of `s`, and what follows.
fn bracketed(s: &str, open: char, close: char) -> Option<(&str, &str)> {
    let s = s.trim_start().strip_prefix(open)?;
    let end = s.find(close)?;
    Some((&s[..end], &s[end + 1..]))
}

/// Parses the `Inst`, `Remv` and `Purg` lines of `apt-get -s` output:
///
/// ```text
/// Inst qemu-system-x86 [1:7.2+dfsg-7+deb12u18+b3] (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64]) []
/// Inst qemu-utils (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])
/// Remv qemu-system-x86 [1:7.2+dfsg-7+deb12u18+b3]
/// ```
pub fn parse_simulation(text: &str) -> Plan {
    let mut plan = Plan::default();
    for line in text.lines() {
        let mut words = line.splitn(3, ' ');
        let (Some(kind), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        let rest = words.next().unwrap_or("");
        match kind {
            "Inst" => {
                let (from, rest) = match bracketed(rest, '[', ']') {
                    Some((v, rest)) => (Some(v.to_string()), rest),
                    None => (None, rest),
                };
                let Some((inside, _)) = bracketed(rest, '(', ')') else {
                    continue;
                };
                let Some(to) = inside.split_whitespace().next() else {
                    continue;
                };
                plan.installs.push(Change {
                    name: name.to_string(),
                    from,
                    to: to.to_string(),
                });
            }
            "Remv" | "Purg" => {
                let version = bracketed(rest, '[', ']')
                    .map(|(v, _)| v.to_string())
                    .unwrap_or_default();
                plan.removals.push((name.to_string(), version));
            }
            _ => {}
        }
    }
    plan
}

/// A package to install: a name and, optionally, an exact version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Package name.
    pub name: String,
    /// `=version`, if asked for.
    pub version: Option<String>,
}

impl Request {
    /// `name` or `name=version`.
    pub fn parse(text: &str) -> Request {
        match text.split_once('=') {
            Some((n, v)) if !v.is_empty() => Request {
                name: n.to_string(),
                version: Some(v.to_string()),
            },
            _ => Request {
                name: text.trim_end_matches('=').to_string(),
                version: None,
            },
        }
    }

    /// The apt-get argument.
    pub fn arg(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={v}", self.name),
            None => self.name.clone(),
        }
    }
}

/// An installed package: name, version and source package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// Binary package name.
    pub name: String,
    /// Installed version.
    pub version: String,
    /// Source package name.
    pub source: String,
}

/// Parses `dpkg-query -W -f '${db:Status-Status} ${Package} ${Version} ${source:Package}\n'`.
pub fn parse_installed(text: &str) -> Vec<Installed> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (status, name, version) = (w.next()?, w.next()?, w.next()?);
            let source = w.next().unwrap_or(name);
            (status == "installed").then(|| Installed {
                name: name.to_string(),
                version: version.to_string(),
                source: source.to_string(),
            })
        })
        .collect()
}

/// The source package in `apt-cache show` output (`Source: qemu` or
/// `Source: qemu (1:7.2...)`), else the package itself.
pub fn source_of(show: &str, package: &str) -> String {
    show.lines()
        .find_map(|l| l.strip_prefix("Source:"))
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or(package)
        .to_string()
}

/// Pins each request without a version to the version of an installed
/// package built from the same source (qemu-system-x86 beside an
/// installed qemu-utils 1:10.0.2+...~bpo12+1 gets that version), when the
/// installed sibling is newer than what the plain install would take.
/// Returns the pinned family; the other requests are unchanged.
pub fn pin_families(
    requests: &[Request],
    sources: &BTreeMap<String, String>,
    installed: &[Installed],
    plain_versions: &BTreeMap<String, String>,
) -> Vec<Request> {
    let mut pinned = Vec::new();
    for r in requests {
        if r.version.is_some() {
            pinned.push(r.clone());
            continue;
        }
        let Some(src) = sources.get(&r.name) else {
            continue;
        };
        let sibling = installed
            .iter()
            .filter(|i| &i.source == src && i.name != r.name)
            .max_by(|a, b| compare_versions(&a.version, &b.version));
        let Some(sibling) = sibling else { continue };
        let newer = plain_versions
            .get(&r.name)
            .is_none_or(|plain| compare_versions(&sibling.version, plain) == Ordering::Greater);
        if newer {
            pinned.push(Request {
                name: r.name.clone(),
                version: Some(sibling.version.clone()),
            });
        }
    }
    pinned
}

// ------------------------------------------------------------- apt calls

/// Whether dpkg knows `pkg` as installed.
fn installed(pkg: &str) -> bool {
    installed_version(pkg).is_some()
}

/// The installed version of `pkg`.
fn installed_version(pkg: &str) -> Option<String> {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status} ${Version}", pkg])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.strip_prefix("installed ")
                .map(|v| v.trim().to_string())
        })
}

fn all_installed() -> Result<Vec<Installed>> {
    let out = run_timeout_quiet(
        Command::new("dpkg-query").args([
            "-W",
            "-f=${db:Status-Status} ${Package} ${Version} ${source:Package}\\n",
        ]),
        scaled(APT_SIMULATE_LIMIT),
    )?;
    Ok(parse_installed(&out))
}

/// Which apt to use: the host's own, or the private backports one.
enum Via<'a> {
    Host,
    Backports(&'a Apt),
}

impl Via<'_> {
    fn command(&self, program: &str) -> Command {
        let mut c = match self {
            Via::Host => Command::new(program),
            Via::Backports(apt) => apt.command(program),
        };
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C");
        c
    }

    fn name(&self) -> &'static str {
        match self {
            Via::Host => "the host's apt sources",
            Via::Backports(_) => "bookworm-backports (private apt configuration)",
        }
    }

    fn install_args(&self, requests: &[Request], simulate: bool) -> Vec<String> {
        let mut a = vec![
            "-q".to_string(),
            "-y".to_string(),
            "--no-install-recommends".to_string(),
        ];
        if simulate {
            // Without --no-remove, so the plan shows what it would remove.
            a.push("-s".to_string());
        } else {
            a.push("--no-remove".to_string());
        }
        if matches!(self, Via::Backports(_)) {
            a.extend(["-t".to_string(), BACKPORTS.to_string()]);
        }
        a.push("install".to_string());
        a.extend(requests.iter().map(Request::arg));
        a
    }

    /// `apt-get -s install`: the plan, or apt's complaint.
    fn simulate(&self, requests: &[Request]) -> Result<Plan> {
        let mut c = self.command("apt-get");
        c.args(self.install_args(requests, true));
        let text = run_timeout_quiet(&mut c, scaled(APT_SIMULATE_LIMIT))
            .with_context(|| format!("apt cannot install that from {}", self.name()))?;
        Ok(parse_simulation(&text))
    }

    /// The real `apt-get --no-remove install`.
    fn install(&self, requests: &[Request]) -> Result<()> {
        let mut c = self.command("apt-get");
        c.args(self.install_args(requests, false));
        say(format!("apt: {}", crate::util::describe(&c)));
        run_timeout(&mut c, scaled(APT_INSTALL_LIMIT)).context(
            "apt-get install failed; if it was interrupted, `sudo dpkg --configure -a` finishes \
             what it started",
        )?;
        Ok(())
    }

    /// The candidate version and source package of `pkg`.
    fn candidate(&self, pkg: &str) -> Option<(String, String)> {
        let out = run_timeout_quiet(
            self.command("apt-cache")
                .args(["show", "--no-all-versions", pkg]),
            scaled(APT_SIMULATE_LIMIT),
        )
        .ok()?;
        let version = out
            .lines()
            .find_map(|l| l.strip_prefix("Version:"))?
            .trim()
            .to_string();
        Some((version, source_of(&out, pkg)))
    }
}

/// The private apt configuration with bookworm-backports and the host's
/// dpkg status, in `<cache>/apt-host`.
fn backports_apt(cache: &Path) -> Result<Apt> {
    let apt = Apt::host(
        cache,
        "apt-host",
        HOST_SOURCES,
        "bookworm + bookworm-backports",
    )?;
    apt.update_if_stale()?;
    Ok(apt)
}

/// Installs whatever of `need`'s packages is missing; cheap (no apt at all)
/// when all are there.
pub fn ensure(need: Need) -> Result<()> {
    let packages = need.packages();
    if packages.is_empty() {
        return Ok(());
    }
    ensure_packages("host packages", &packages, false)
}

/// Installs whatever of [`DEBUG_PACKAGES`] is missing.
pub fn ensure_debug() -> Result<()> {
    ensure_packages("7.3-debug toolchain packages", DEBUG_PACKAGES, false)
}

/// Installs whatever of [`STOCK_73_PACKAGES`] is missing.
pub fn ensure_stock_73() -> Result<()> {
    ensure_packages("7.3 build-root packages", STOCK_73_PACKAGES, false)
}

/// Installs whatever of `packages` is missing, for a subcommand's own
/// tools (`dkms`, `package`): the same safe path as `deps` (as root; a
/// normal user is told to run `sudo cargo xtask deps --with ...`).
pub fn ensure_named(what: &str, packages: &[&str]) -> Result<()> {
    ensure_packages(what, packages, false)
}

/// `cargo xtask deps`: everything, plus `extra` requests
/// (`name[=version]`); `dry_run` only shows the plan.
pub fn deps(extra: &[String], dry_run: bool) -> Result<()> {
    let mut all: Vec<&str> = Need::Boot.packages();
    all.extend(DEBUG_PACKAGES);
    all.extend(STOCK_73_PACKAGES);
    ensure_packages("host packages", &all, dry_run)?;
    if !extra.is_empty() {
        let requests: Vec<Request> = extra.iter().map(|e| Request::parse(e)).collect();
        install_requests("requested packages", &requests, dry_run)?;
    }
    Ok(())
}

fn ensure_packages(what: &str, packages: &[&str], dry_run: bool) -> Result<()> {
    let missing: Vec<Request> = packages
        .iter()
        .filter(|p| !installed(p))
        .map(|p| Request::parse(p))
        .collect();
    if missing.is_empty() {
        say(format!("{what}: all {} present", packages.len()));
        return Ok(());
    }
    install_requests(what, &missing, dry_run)
}

/// The message for a non-root run that needs packages.
fn need_root(what: &str, requests: &[Request]) -> anyhow::Error {
    anyhow::anyhow!("{}", need_root_text(what, requests))
}

/// [`need_root`]'s text: the packages and the `deps` line that installs
/// exactly them (`--with` also serves packages outside the default set,
/// e.g. `dkms` or `lintian`).
fn need_root_text(what: &str, requests: &[Request]) -> String {
    let list: Vec<String> = requests.iter().map(Request::arg).collect();
    let with: Vec<String> = list.iter().map(|p| format!("--with {p}")).collect();
    format!(
        "missing {what}: {}. Install them with `sudo cargo xtask deps {}` (it never removes or \
         downgrades a package: it shows apt's plan first), then run this again as yourself",
        list.join(" "),
        with.join(" ")
    )
}

/// Simulates, checks and installs `requests`.
fn install_requests(what: &str, requests: &[Request], dry_run: bool) -> Result<()> {
    // Exact versions that are installed already need nothing.
    let requests: Vec<Request> = requests
        .iter()
        .filter(|r| match &r.version {
            Some(v) => installed_version(&r.name).as_deref() != Some(v.as_str()),
            None => !installed(&r.name),
        })
        .cloned()
        .collect();
    if requests.is_empty() {
        say(format!("{what}: already installed"));
        return Ok(());
    }
    let list: Vec<String> = requests.iter().map(Request::arg).collect();
    if !is_root() && !dry_run {
        return Err(need_root(what, &requests));
    }
    show(format!("==> {what}: installing {}", list.join(" ")));
    if is_root() {
        // The host's lists may be missing or stale on a fresh machine.
        run_timeout(
            Command::new("apt-get").args(["-q", "update"]),
            scaled(APT_UPDATE_LIMIT),
        )
        .context("apt-get update failed; is the network up?")?;
    }
    let host = Via::Host;
    let first = host.simulate(&requests);
    let first_problem = match &first {
        Ok(plan) if plan.is_clean() => {
            say(format!(
                "apt plan ({}): {} install(s), nothing removed or downgraded",
                host.name(),
                plan.installs.len()
            ));
            if dry_run {
                show_plan(plan);
                return Ok(());
            }
            host.install(&requests)?;
            return verify(&requests);
        }
        Ok(plan) => plan.describe_harm(),
        Err(e) => apt_errors(&format!("{e:#}")),
    };
    show(format!(
        "==> apt: installing {} from {} would not be safe: {first_problem}",
        list.join(" "),
        host.name()
    ));
    let cache = crate::cache::cache_dir()?;
    crate::util::create_dir(&cache)?;
    let apt = backports_apt(&cache)?;
    let bp = Via::Backports(&apt);
    let installed_now = all_installed()?;
    let mut sources = BTreeMap::new();
    let mut plain = BTreeMap::new();
    for r in &requests {
        if let Some((version, source)) = host.candidate(&r.name) {
            plain.insert(r.name.clone(), version);
            sources.insert(r.name.clone(), source);
        } else if let Some((_, source)) = bp.candidate(&r.name) {
            sources.insert(r.name.clone(), source);
        }
    }
    let family = pin_families(&requests, &sources, &installed_now, &plain);
    let stop = |why: String| -> anyhow::Error {
        let names: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
        anyhow::anyhow!(
            "not installing {}: {why}. Nothing was changed. What you can do: install {} \
             yourself at a version that fits what is installed (e.g. from the repository the \
             newer sibling came from), or remove/downgrade the conflicting package yourself if \
             you do not need it; then run `sudo cargo xtask deps` again",
            list.join(" "),
            names.join(" ")
        )
    };
    if family.is_empty() {
        return Err(stop(first_problem));
    }
    let rest: Vec<Request> = requests
        .iter()
        .filter(|r| !family.iter().any(|f| f.name == r.name))
        .cloned()
        .collect();
    let fam_list: Vec<String> = family.iter().map(Request::arg).collect();
    show(format!(
        "==> apt: resolving {} from {BACKPORTS} instead (-t {BACKPORTS}; a version without `=` \
         is the one of the installed package built from the same source)",
        fam_list.join(" ")
    ));
    let bp_plan = bp.simulate(&family).map_err(|e| {
        stop(format!(
            "{first_problem}; and from {BACKPORTS}: {}",
            apt_errors(&format!("{e:#}"))
        ))
    })?;
    if !bp_plan.is_clean() {
        return Err(stop(format!(
            "{first_problem}; and from {BACKPORTS}: {}",
            bp_plan.describe_harm()
        )));
    }
    let rest_plan = if rest.is_empty() {
        None
    } else {
        let p = host
            .simulate(&rest)
            .map_err(|e| stop(apt_errors(&format!("{e:#}"))))?;
        if !p.is_clean() {
            return Err(stop(p.describe_harm()));
        }
        Some(p)
    };
    say(format!(
        "apt plan ({BACKPORTS}): {} install(s)/upgrade(s), nothing removed or downgraded",
        bp_plan.installs.len()
    ));
    if dry_run {
        show_plan(&bp_plan);
        if let Some(p) = &rest_plan {
            show_plan(p);
        }
        return Ok(());
    }
    bp.install(&family)?;
    if !rest.is_empty() {
        host.install(&rest)?;
    }
    verify(&requests)
}

/// apt's own complaint in its output: the `E:` lines and unmet
/// `Depends:`/`Breaks:` lines, joined; else the first line.
pub fn apt_errors(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("E:")
                || l.contains(": Depends:")
                || l.starts_with("Depends:")
                || l.contains("Breaks:")
                || l.contains("Conflicts:")
        })
        .collect();
    if lines.is_empty() {
        text.lines().next().unwrap_or("").to_string()
    } else {
        lines.join(" / ").trim_end_matches('.').to_string()
    }
}

fn show_plan(plan: &Plan) {
    for c in &plan.installs {
        match &c.from {
            Some(f) => show(format!("    would upgrade {} {f} -> {}", c.name, c.to)),
            None => show(format!("    would install {} {}", c.name, c.to)),
        }
    }
}

fn verify(requests: &[Request]) -> Result<()> {
    let still: Vec<String> = requests
        .iter()
        .filter(|r| match (&r.version, installed_version(&r.name)) {
            (_, None) => true,
            (Some(want), Some(have)) => &have != want,
            (None, Some(_)) => false,
        })
        .map(Request::arg)
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get install finished but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apt-get -s install qemu-utils=1:10.0.2+ds-2+deb13u1~bpo12+1` on a
    /// bookworm host with qemu-system-x86 7.2: the removal that issue 10
    /// is about (real output).
    const SIM_REMOVES: &str = "\
Reading package lists...
Building dependency tree...
Recommended packages:
  qemu-block-extra
The following packages will be REMOVED:
  qemu-system-common qemu-system-x86
The following NEW packages will be installed:
  qemu-utils
0 upgraded, 1 newly installed, 2 to remove and 137 not upgraded.
Remv qemu-system-x86 [1:7.2+dfsg-7+deb12u18+b3]
Remv qemu-system-common [1:7.2+dfsg-7+deb12u18+b3]
Inst qemu-utils (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
Conf qemu-utils (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
";

    /// `apt-get -s --no-install-recommends -t bookworm-backports install
    /// qemu-system-x86=V qemu-utils=V` on the same host (real output).
    const SIM_BACKPORTS: &str = "\
The following NEW packages will be installed:
  qemu-utils
The following packages will be upgraded:
  qemu-system-common qemu-system-data qemu-system-x86 seabios
4 upgraded, 1 newly installed, 0 to remove and 165 not upgraded.
Inst qemu-system-x86 [1:7.2+dfsg-7+deb12u18+b3] (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64]) []
Inst qemu-system-common [1:7.2+dfsg-7+deb12u18+b3] (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64]) []
Inst qemu-system-data [1:7.2+dfsg-7+deb12u18] (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [all]) []
Inst seabios [1.16.2-1] (1.16.3-2~bpo12+1 Debian Backports:oldstable-backports [all])
Inst qemu-utils (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
Conf qemu-system-x86 (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
";

    /// A plain install of new packages (real output, shortened).
    const SIM_NEW: &str = "\
Inst libnfs13 (4.0.0-1+deb12u1 Debian-Security:12/oldstable-security [amd64])
Inst librados2 (16.2.15+ds-0+deb12u2 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
Inst qemu-utils (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])
Conf qemu-utils (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])
";

    #[test]
    fn versions_compare_like_dpkg() {
        use Ordering::*;
        let cases = [
            (
                "1:10.0.2+ds-2+deb13u1~bpo12+1",
                "1:7.2+dfsg-7+deb12u18+b3",
                Greater,
            ),
            ("1:7.2+dfsg-7+deb12u15", "1:7.2+dfsg-7+deb12u18+b3", Less),
            ("1.16.3-2~bpo12+1", "1.16.2-1", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0~rc1", Greater),
            ("1.0-1", "1.0-1", Equal),
            ("1:1.0", "2.0", Greater),
            ("2.4.123-1~bpo12+1", "2.4.123-1", Less),
            ("1.0a", "1.0+", Less),
            ("7.3.4-1~bpo13+1", "7.3.4-1", Less),
            ("1.01", "1.1", Equal),
            ("1.0", "1.0-0", Equal),
            ("10", "9", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn removals_are_seen() {
        let plan = parse_simulation(SIM_REMOVES);
        assert_eq!(
            plan.removals,
            [
                (
                    "qemu-system-x86".to_string(),
                    "1:7.2+dfsg-7+deb12u18+b3".to_string()
                ),
                (
                    "qemu-system-common".to_string(),
                    "1:7.2+dfsg-7+deb12u18+b3".to_string()
                ),
            ]
        );
        assert_eq!(plan.installs.len(), 1);
        assert!(!plan.is_clean());
        assert!(plan
            .describe_harm()
            .starts_with("qemu-system-x86 1:7.2+dfsg-7+deb12u18+b3 would be REMOVED"));
    }

    #[test]
    fn backports_upgrades_are_clean() {
        let plan = parse_simulation(SIM_BACKPORTS);
        assert!(plan.removals.is_empty());
        assert_eq!(plan.installs.len(), 5);
        assert_eq!(
            plan.installs[0],
            Change {
                name: "qemu-system-x86".into(),
                from: Some("1:7.2+dfsg-7+deb12u18+b3".into()),
                to: "1:10.0.2+ds-2+deb13u1~bpo12+1".into(),
            }
        );
        assert_eq!(plan.installs[4].from, None);
        assert!(plan.downgrades().is_empty());
        assert!(plan.is_clean());
        let plan = parse_simulation(SIM_NEW);
        assert_eq!(plan.installs.len(), 3);
        assert!(plan.is_clean());
    }

    #[test]
    fn downgrades_are_seen() {
        // The reverse of the backports upgrade: what a plain bookworm
        // install of qemu-system-x86=1:7.2... would do on the restored host.
        let text = "Inst qemu-system-x86 [1:10.0.2+ds-2+deb13u1~bpo12+1] (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64]) []\n\
                    Inst seabios [1.16.3-2~bpo12+1] (1.16.2-1 Debian:12.15/oldstable [all])\n";
        let plan = parse_simulation(text);
        assert_eq!(plan.downgrades().len(), 2);
        assert!(!plan.is_clean());
        assert!(plan.describe_harm().contains(
            "qemu-system-x86 would be DOWNGRADED from 1:10.0.2+ds-2+deb13u1~bpo12+1 to 1:7.2+dfsg-7+deb12u18+b3"
        ));
    }

    #[test]
    fn requests_and_families() {
        assert_eq!(
            Request::parse("qemu-utils=1:10.0.2+ds-2"),
            Request {
                name: "qemu-utils".into(),
                version: Some("1:10.0.2+ds-2".into())
            }
        );
        assert_eq!(Request::parse("cpio").arg(), "cpio");
        let installed = parse_installed(
            "installed qemu-utils 1:10.0.2+ds-2+deb13u1~bpo12+1 qemu\n\
             installed cpio 2.13+dfsg-7.1 cpio\n\
             config-files qemu-system-x86 1:7.2+dfsg-7+deb12u18+b3 qemu\n",
        );
        assert_eq!(installed.len(), 2);
        let requests = vec![Request::parse("qemu-system-x86"), Request::parse("cpio")];
        let sources: BTreeMap<String, String> = [
            ("qemu-system-x86".to_string(), "qemu".to_string()),
            ("cpio".to_string(), "cpio".to_string()),
        ]
        .into();
        let plain: BTreeMap<String, String> = [(
            "qemu-system-x86".to_string(),
            "1:7.2+dfsg-7+deb12u18+b3".to_string(),
        )]
        .into();
        assert_eq!(
            pin_families(&requests, &sources, &installed, &plain),
            [Request {
                name: "qemu-system-x86".into(),
                version: Some("1:10.0.2+ds-2+deb13u1~bpo12+1".into())
            }]
        );
        // An older sibling gives no pin: the plain version is newer.
        let older = parse_installed("installed qemu-utils 1:5.2+dfsg-11 qemu\n");
        assert!(pin_families(&requests, &sources, &older, &plain).is_empty());
        assert_eq!(
            source_of("Package: qemu-utils\nSource: qemu (1:7.2)\n", "qemu-utils"),
            "qemu"
        );
        assert_eq!(source_of("Package: cpio\n", "cpio"), "cpio");
    }

    #[test]
    fn apt_complaints_are_condensed() {
        // `apt-get -s install qemu-system-x86=1:10.0.2+ds-2+deb13u1~bpo12+1
        // qemu-utils=...` without -t (real output, shortened).
        let text = "`apt-get ...` failed with exit status: 100; its last lines:\n\
            Some packages could not be installed. This may mean that you have\n\
            The following packages have unmet dependencies:\n \
            qemu-system-x86 : Depends: qemu-system-common (= 1:10.0.2+ds-2+deb13u1~bpo12+1) but it is not installable\n                   \
            Depends: seabios (> 1.16.3-1~) but 1.16.2-1 is to be installed\n\
            E: Unable to correct problems, you have held broken packages.\n";
        assert_eq!(
            apt_errors(text),
            "qemu-system-x86 : Depends: qemu-system-common (= 1:10.0.2+ds-2+deb13u1~bpo12+1) but it is not installable / \
             Depends: seabios (> 1.16.3-1~) but 1.16.2-1 is to be installed / \
             E: Unable to correct problems, you have held broken packages"
        );
        assert_eq!(apt_errors("just this\nand that"), "just this");
    }

    #[test]
    fn each_subcommand_needs_only_its_packages() {
        assert!(Need::Nothing.packages().is_empty());
        assert!(!Need::ModuleBuild.packages().contains(&"qemu-system-x86"));
        assert!(!Need::Initramfs.packages().contains(&"qemu-system-x86"));
        assert!(Need::Initramfs.packages().contains(&"busybox-static"));
        assert!(Need::Boot.packages().contains(&"qemu-system-x86"));
    }

    #[test]
    fn the_root_message_names_the_deps_line() {
        let reqs = [Request::parse("dkms"), Request::parse("lintian=2.116")];
        let text = need_root_text("packaging tools", &reqs);
        assert!(
            text.starts_with("missing packaging tools: dkms lintian=2.116."),
            "{text}"
        );
        assert!(
            text.contains("`sudo cargo xtask deps --with dkms --with lintian=2.116`"),
            "{text}"
        );
    }
}
