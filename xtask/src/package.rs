//! `cargo xtask package`: the two Debian packages, lintian, and (with
//! `--test`) the walkthrough in a Debian root that installed them.
//!
//! ```text
//! target/package/kern2usr-dkms_<ver>_all.deb   module source + dkms.conf
//! target/package/kern2usr_<ver>_amd64.deb      the CLI
//! target/package/lintian.txt                   lintian's output for both
//! target/package/stage/<package>/              the trees dpkg-deb packed
//! target/package/vm/                           the --test loader initramfs
//! <cache>/debroot/<hash>/root.img              the --test Debian root
//! ```
//!
//! The packages are built with `dpkg-deb --build --root-owner-group` from
//! trees written here (no debhelper: the two packages are a source
//! directory and one binary, and writing the control files directly keeps
//! every file's origin in this module). The DKMS maintainer scripts do what
//! dh_dkms generates: postinst hands the module to dkms's
//! `/usr/lib/dkms/common.postinst`, prerm runs `dkms remove`.
//!
//! `--test`: the Debian root is a minimal bookworm made by mmdebstrap with
//! dkms, gcc, make and the headers of the kernel the harness boots (cached,
//! keyed by a hash of the package list), written to an ext4 image with
//! `mkfs.ext4 -d`. QEMU boots the harness's kernel with that image as a
//! virtio disk (`snapshot=on`: the cached image is never written) and a
//! small busybox initramfs that loads the disk and ext4 modules, mounts the
//! root and runs the test in a chroot there: `dpkg -i` of both packages
//! (dkms builds and installs the module for the running kernel), `modprobe`,
//! then `kern2usr-vmtest suite walkthrough` with the packaged CLI as the
//! listener and the DKMS-built module.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::dkms::{self, PACKAGE_NAME};
use crate::kernels::{Series, Unpacked};
use crate::util::{
    create_dir, describe, fmt_duration, remove_dir_if_exists, repo_root, run_captured, run_stdout,
    say, step, target_dir,
};

/// Options of `cargo xtask package`.
#[derive(Args)]
pub struct PackageArgs {
    /// Also install both packages in a Debian root booted in QEMU and run
    /// the walkthrough there with the module DKMS builds in it.
    #[arg(long)]
    test: bool,
    /// Kernel the --test guest boots (its headers go into the Debian root).
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: Series,
    /// Kill the --test QEMU run after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

/// The source package name and the CLI package.
pub const CLI_PACKAGE: &str = "kern2usr";
/// The DKMS package.
pub const DKMS_PACKAGE: &str = "kern2usr-dkms";
/// The cargo package whose binary `kern2usr` the CLI package ships (the
/// library is the cargo package `kern2usr`).
pub const CLI_CRATE: &str = "kern2usr-cli";

/// Host packages `cargo xtask package` needs.
const PACKAGE_TOOLS: &[&str] = &["dpkg-dev", "lintian", "binutils"];
/// Host packages `--test` adds.
const TEST_TOOLS: &[&str] = &["mmdebstrap", "e2fsprogs", "xz-utils"];

/// What the Debian root holds besides mmdebstrap's minbase: the packages'
/// dependencies and what building a module against Debian headers needs
/// (pahole: 6.12's headers generate BTF for modules).
const ROOT_PACKAGES: &[&str] = &[
    "dkms",
    "gcc",
    "make",
    "libc6-dev",
    "kmod",
    "dwarves",
    "xz-utils",
];

/// Lintian warnings that stay, and why. Anything else lintian warns about
/// is printed as unexplained (and should be fixed or added here).
pub const LINTIAN_KEPT: &[(&str, &str)] = &[(
    "initial-upload-closes-no-bugs",
    "the package is not uploaded to Debian, so there is no ITP bug to close",
)];

/// `DEBFULLNAME <DEBEMAIL>` if both are set, else the project default.
fn maintainer() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    match (var("DEBFULLNAME"), var("DEBEMAIL")) {
        (Some(name), Some(mail)) => format!("{} <{}>", name.trim(), mail.trim()),
        _ => "kern2usr developers <kern2usr@lists.example.org>".to_string(),
    }
}

/// The date of the last commit (RFC 2822), for the changelog: the same
/// tree gives the same changelog.
fn release_date() -> Result<String> {
    let out = run_stdout(
        Command::new("git")
            .args(["log", "-1", "--format=%cD"])
            .current_dir(repo_root()),
    )
    .or_else(|_| run_stdout(Command::new("date").arg("-R")))?;
    Ok(out.trim().to_string())
}

/// The Debian changelog of both packages (native: one entry per version).
pub fn changelog(package: &str, version: &str, maintainer: &str, date: &str) -> String {
    format!(
        "{package} ({version}) unstable; urgency=medium\n\
         \n  * Built by `cargo xtask package` from the kern2usr tree.\n\
         \n -- {maintainer}  {date}\n"
    )
}

/// The year in an RFC 2822 date (`Mon, 30 Nov 2026 00:19:37 +0000`).
pub fn year_of(date: &str) -> Option<&str> {
    date.split_whitespace()
        .find(|w| w.len() == 4 && w.chars().all(|c| c.is_ascii_digit()))
}

/// The machine-readable copyright file (`year`: of the last commit).
pub fn copyright(year: &str) -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: kern2usr\n\
         \n\
         Files: *\n\
         Copyright: {year} kern2usr developers\n\
         License: GPL-2\n\
         \n\
         License: GPL-2\n \
         This program is free software; you can redistribute it and/or modify it\n \
         under the terms of version 2 of the GNU General Public License as\n \
         published by the Free Software Foundation.\n \
         .\n \
         This program is distributed in the hope that it will be useful, but\n \
         WITHOUT ANY WARRANTY; without even the implied warranty of\n \
         MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.\n \
         .\n \
         On Debian systems the full text of the license is in\n \
         /usr/share/common-licenses/GPL-2.\n"
    )
}

/// kern2usr-dkms's postinst: on configure, dkms's own helper adds the
/// source, builds the module for the running kernel (and the newest
/// installed one) and installs it, as a dh_dkms postinst does.
pub fn dkms_postinst(version: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # kern2usr-dkms postinst: register /usr/src/{PACKAGE_NAME}-{version} with DKMS,\n\
         # then build and install the module for the kernels that have headers.\n\
         set -e\n\
         \n\
         if [ \"$1\" = configure ]; then\n\
         \t/usr/lib/dkms/common.postinst {PACKAGE_NAME} {version} \"\" \"\" \"$2\"\n\
         fi\n\
         \n\
         exit 0\n"
    )
}

/// kern2usr-dkms's prerm: drop every build of this version from DKMS
/// (the installed modules with it) before the source goes away.
pub fn dkms_prerm(version: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # kern2usr-dkms prerm: remove the module and its DKMS builds.\n\
         set -e\n\
         \n\
         case \"$1\" in\n\
         remove|upgrade|deconfigure)\n\
         \tif [ -n \"$(dkms status -m {PACKAGE_NAME} -v {version})\" ]; then\n\
         \t\tdkms remove -m {PACKAGE_NAME} -v {version} --all\n\
         \tfi\n\
         \t;;\n\
         esac\n\
         \n\
         exit 0\n"
    )
}

/// One binary package's control file.
pub struct Control<'a> {
    /// Package name.
    pub package: &'a str,
    /// Version.
    pub version: &'a str,
    /// `all` or `amd64`.
    pub arch: &'a str,
    /// Section.
    pub section: &'a str,
    /// Depends line, if any.
    pub depends: Option<String>,
    /// Recommends line, if any.
    pub recommends: Option<&'a str>,
    /// Installed-Size in KiB.
    pub installed_size: u64,
    /// Short description.
    pub summary: &'a str,
    /// Long description paragraphs (plain text, one per element).
    pub description: &'a [&'a str],
}

impl Control<'_> {
    /// The DEBIAN/control text.
    pub fn render(&self, maintainer: &str) -> String {
        let mut s = format!(
            "Package: {}\nSource: {CLI_PACKAGE}\nVersion: {}\nArchitecture: {}\nMaintainer: {maintainer}\n\
             Installed-Size: {}\n",
            self.package, self.version, self.arch, self.installed_size
        );
        if let Some(d) = &self.depends {
            s.push_str(&format!("Depends: {d}\n"));
        }
        if let Some(r) = self.recommends {
            s.push_str(&format!("Recommends: {r}\n"));
        }
        s.push_str(&format!(
            "Section: {}\nPriority: optional\nDescription: {}\n",
            self.section, self.summary
        ));
        for (i, para) in self.description.iter().enumerate() {
            if i > 0 {
                s.push_str(" .\n");
            }
            for line in wrap(para, 72) {
                s.push_str(&format!(" {line}\n"));
            }
        }
        s
    }
}

/// Greedy word wrap.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Writes `text` to `path` with `mode`, creating parents.
fn write(path: &Path, text: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("could not write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("could not chmod {}", path.display()))
}

/// `gzip -9n` of `data`.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("could not start gzip")?;
    let mut stdin = child.stdin.take().context("gzip has no stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("gzip did not finish")?;
    writer
        .join()
        .map_err(|_| anyhow!("the gzip writer thread panicked"))?
        .context("could not feed gzip")?;
    if !out.status.success() {
        bail!("gzip failed with {}", out.status);
    }
    Ok(out.stdout)
}

/// Every path under `root` except `DEBIAN/`, relative, sorted.
fn files_under(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("could not list {}", dir.display()))?
        {
            let e = e.with_context(|| format!("could not list {}", dir.display()))?;
            let child = rel.join(e.file_name());
            if child == Path::new("DEBIAN") {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(child.clone());
            }
            out.push(child);
        }
    }
    out.sort();
    Ok(out)
}

/// Normalises modes (dirs 0755; files 0755 if executable else 0644),
/// writes DEBIAN/md5sums and returns the Installed-Size in KiB (as
/// dpkg-gencontrol counts it: each file rounded up, one per directory).
fn finish_tree(root: &Path) -> Result<u64> {
    let mut kib = 0;
    let mut regular = Vec::new();
    for rel in files_under(root)? {
        let path = root.join(&rel);
        let meta = path
            .symlink_metadata()
            .with_context(|| format!("could not stat {}", path.display()))?;
        if meta.is_dir() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            kib += 1;
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            let mode = if exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            kib += meta.len().div_ceil(1024);
            regular.push(rel);
        } else {
            kib += 1;
        }
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    let out = run_captured(Command::new("md5sum").args(&regular).current_dir(root))?;
    write(&root.join("DEBIAN/md5sums"), &out.stdout, 0o644)?;
    Ok(kib)
}

/// The doc directory of a package: copyright and changelog.gz.
fn write_docs(
    root: &Path,
    package: &str,
    version: &str,
    maint: &str,
    date: &str,
) -> Result<PathBuf> {
    let doc = root.join("usr/share/doc").join(package);
    let year = year_of(date).ok_or_else(|| anyhow!("no year in the date `{date}`"))?;
    write(&doc.join("copyright"), copyright(year).as_bytes(), 0o644)?;
    let log = changelog(CLI_PACKAGE, version, maint, date);
    write(&doc.join("changelog.gz"), &gzip(log.as_bytes())?, 0o644)?;
    Ok(doc)
}

/// `dpkg-deb --build --root-owner-group` of `root` into `out_dir`.
fn build_deb(root: &Path, out: &Path) -> Result<()> {
    let mut c = Command::new("dpkg-deb");
    c.args(["--build", "--root-owner-group", "-Zxz"])
        .arg(root)
        .arg(out);
    say(format!("package: {}", describe(&c)));
    run_captured(&mut c).map(|_| ())
}

/// The kern2usr-dkms tree.
fn stage_dkms(root: &Path, version: &str, maint: &str, date: &str) -> Result<()> {
    let src = root
        .join("usr/src")
        .join(format!("{PACKAGE_NAME}-{version}"));
    let files = dkms::copy_source(&src)?;
    say(format!(
        "package {DKMS_PACKAGE}: {} files in /usr/src/{PACKAGE_NAME}-{version}",
        files.len()
    ));
    write_docs(root, DKMS_PACKAGE, version, maint, date)?;
    write(
        &root.join("DEBIAN/postinst"),
        dkms_postinst(version).as_bytes(),
        0o755,
    )?;
    write(
        &root.join("DEBIAN/prerm"),
        dkms_prerm(version).as_bytes(),
        0o755,
    )?;
    let size = finish_tree(root)?;
    let control = Control {
        package: DKMS_PACKAGE,
        version,
        arch: "all",
        section: "kernel",
        depends: Some("dkms (>= 2.1.0.0)".to_string()),
        recommends: Some(CLI_PACKAGE),
        installed_size: size,
        summary: "kernel-to-userspace buffer hand-off module (DKMS source)",
        description: &[
            "kern2usr.ko hands a kernel buffer to a userspace program through two eventfds and an mmap'ed character device, and times every round trip.",
            "This package provides the source of the C module; DKMS builds and installs it for every kernel that has its headers installed.",
        ],
    };
    write(
        &root.join("DEBIAN/control"),
        control.render(maint).as_bytes(),
        0o644,
    )
}

/// The udev rule the CLI package installs (node 0660, group `kern2usr`).
pub const UDEV_RULE: &str = "packaging/udev/60-kern2usr.rules";
/// Where the package installs it.
pub const UDEV_RULE_DEST: &str = "lib/udev/rules.d/60-kern2usr.rules";
/// The system group the udev rule gives the device to.
pub const DEVICE_GROUP: &str = "kern2usr";

/// The CLI package's postinst: on configure, create the system group
/// [`DEVICE_GROUP`] if it is missing (the udev rule names it), then, where
/// udev runs, reload the rules and re-apply them to the device.
pub fn cli_postinst() -> String {
    format!(
        "#!/bin/sh
         # kern2usr postinst: the group of the udev rule, then load the rule.
         set -e
         
         if [ \"$1\" = configure ]; then
         	if ! getent group {DEVICE_GROUP} >/dev/null; then
         		addgroup --system {DEVICE_GROUP}
         	fi
         	if [ -d /run/udev ]; then
         		udevadm control --reload-rules || true
         		udevadm trigger --action=change --sysname-match=kern2usr || true
         	fi
         fi
         
         exit 0
"
    )
}

/// Optional files of the CLI package found in the tree: (source, path in
/// the package, mode, gzip?). The udev rule (`*.rules`, required: see
/// [`UDEV_RULE`]), man pages
/// (`kern2usr*.1`) and shell completions (`kern2usr.bash`, `_kern2usr`,
/// `kern2usr.fish`) are packaged once they exist in the repository.
fn optional_cli_files() -> Result<Vec<(PathBuf, String, u32, bool)>> {
    let mut found = Vec::new();
    let root = repo_root();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
                continue;
            }
            let dest = if name.ends_with(".rules") && name.contains("kern2usr") {
                Some((format!("lib/udev/rules.d/{name}"), 0o644, false))
            } else if name.starts_with("kern2usr") && name.ends_with(".1") {
                Some((format!("usr/share/man/man1/{name}.gz"), 0o644, true))
            } else if name == "kern2usr.bash" {
                Some((
                    "usr/share/bash-completion/completions/kern2usr".to_string(),
                    0o644,
                    false,
                ))
            } else if name == "_kern2usr" {
                Some((
                    "usr/share/zsh/vendor-completions/_kern2usr".to_string(),
                    0o644,
                    false,
                ))
            } else if name == "kern2usr.fish" {
                Some((
                    "usr/share/fish/vendor_completions.d/kern2usr.fish".to_string(),
                    0o644,
                    false,
                ))
            } else {
                None
            };
            if let Some((d, mode, gz)) = dest {
                found.push((path, d, mode, gz));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `cargo build --release -p kern2usr-cli --bin kern2usr` for the host;
/// the binary path.
fn build_cli() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let dir = target_dir().join("package").join("cargo");
    let mut c = Command::new(cargo);
    c.args([
        "build",
        "--release",
        "--locked",
        "-p",
        CLI_CRATE,
        "--bin",
        CLI_PACKAGE,
    ])
    .current_dir(repo_root())
    .env("CARGO_TARGET_DIR", &dir);
    say(format!(
        "package: CARGO_TARGET_DIR={} {}",
        dir.display(),
        describe(&c)
    ));
    crate::util::run(&mut c).context("building the release CLI failed")?;
    Ok(dir.join("release").join(CLI_PACKAGE))
}

/// `shlibs:Depends` of `binary`, from dpkg-shlibdeps.
fn shlib_depends(binary: &Path, scratch: &Path) -> Result<String> {
    write(
        &scratch.join("debian/control"),
        format!("Source: {CLI_PACKAGE}\n\nPackage: {CLI_PACKAGE}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let out = run_stdout(
        Command::new("dpkg-shlibdeps")
            .arg("-O")
            .arg(format!("-e{}", binary.display()))
            .current_dir(scratch),
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(|d| d.trim().to_string())
        .ok_or_else(|| anyhow!("dpkg-shlibdeps printed no shlibs:Depends: {out}"))
}

/// The kern2usr tree.
fn stage_cli(root: &Path, version: &str, maint: &str, date: &str, scratch: &Path) -> Result<()> {
    let built = build_cli()?;
    let bin = root.join("usr/bin").join(CLI_PACKAGE);
    create_dir(bin.parent().context("usr/bin")?)?;
    std::fs::copy(&built, &bin)
        .with_context(|| format!("could not copy {} to {}", built.display(), bin.display()))?;
    // What dh_strip does to an executable.
    run_captured(
        Command::new("strip")
            .args(["--remove-section=.comment", "--remove-section=.note"])
            .arg(&bin),
    )?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    let doc = write_docs(root, CLI_PACKAGE, version, maint, date)?;
    let readme =
        std::fs::read(repo_root().join("README.md")).context("could not read README.md")?;
    // dh_compress's rule: documentation over 4 KiB is compressed.
    if readme.len() > 4096 {
        write(&doc.join("README.md.gz"), &gzip(&readme)?, 0o644)?;
    } else {
        write(&doc.join("README.md"), &readme, 0o644)?;
    }
    // Man pages (gzipped, as dh_installman does) and completions, rendered
    // from the CLI's clap definition (`cargo xtask man`; nothing of them
    // is kept in the tree, so `optional_cli_files` finds none).
    for g in crate::man::all()? {
        let data = if g.installed_as.ends_with(".gz") {
            gzip(&g.data)?
        } else {
            g.data
        };
        say(format!(
            "package {CLI_PACKAGE}: generated {} -> /{}",
            g.name, g.installed_as
        ));
        write(&root.join(&g.installed_as), &data, 0o644)?;
    }
    let chdev = repo_root().join("scripts/create_chdev.sh");
    let text =
        std::fs::read(&chdev).with_context(|| format!("could not read {}", chdev.display()))?;
    write(
        &root.join("usr/share/kern2usr/create_chdev.sh"),
        &text,
        0o755,
    )?;
    let mut has_udev = false;
    let files = optional_cli_files()?;
    if !files.iter().any(|(_, dest, _, _)| dest == UDEV_RULE_DEST) {
        bail!("{UDEV_RULE} is missing: the package installs it as /{UDEV_RULE_DEST}");
    }
    for (src, dest, mode, gz) in files {
        let data =
            std::fs::read(&src).with_context(|| format!("could not read {}", src.display()))?;
        let data = if gz { gzip(&data)? } else { data };
        say(format!(
            "package {CLI_PACKAGE}: {} -> /{dest}",
            src.display()
        ));
        has_udev |= dest.starts_with("lib/udev/");
        write(&root.join(&dest), &data, mode)?;
    }
    if has_udev {
        write(
            &root.join("DEBIAN/postinst"),
            cli_postinst().as_bytes(),
            0o755,
        )?;
    }
    // addgroup in the postinst.
    let depends = format!("{}, adduser", shlib_depends(&bin, scratch)?);
    let size = finish_tree(root)?;
    let control = Control {
        package: CLI_PACKAGE,
        version,
        arch: "amd64",
        section: "utils",
        depends: Some(depends),
        recommends: Some(DKMS_PACKAGE),
        installed_size: size,
        summary: "kernel-to-userspace buffer hand-off: listener and control CLI",
        description: &[
            "kern2usr drives the kern2usr kernel module: it listens on two eventfds, maps the module's buffer from its character device, acknowledges every round and sends the module its commands (find, mmap, start, stop, exit).",
            "The module itself is in the kern2usr-dkms package.",
        ],
    };
    write(
        &root.join("DEBIAN/control"),
        control.render(maint).as_bytes(),
        0o644,
    )
}

/// The two .deb files.
pub struct Debs {
    /// kern2usr-dkms_<ver>_all.deb.
    pub dkms: PathBuf,
    /// kern2usr_<ver>_amd64.deb.
    pub cli: PathBuf,
}

/// Builds both packages into target/package/.
pub fn build_packages() -> Result<Debs> {
    crate::deps::ensure_named("packaging tools", PACKAGE_TOOLS)?;
    let version = dkms::version();
    let maint = maintainer();
    let date = release_date()?;
    let out = target_dir().join("package");
    let stage = out.join("stage");
    remove_dir_if_exists(&stage)?;
    create_dir(&stage)?;
    let arch = run_stdout(Command::new("dpkg").arg("--print-architecture"))?;
    if arch.trim() != "amd64" {
        bail!(
            "kern2usr_{version}_amd64.deb must be built on amd64 (dpkg says {})",
            arch.trim()
        );
    }
    let dkms_root = stage.join(DKMS_PACKAGE);
    stage_dkms(&dkms_root, version, &maint, &date)?;
    let dkms_deb = out.join(format!("{DKMS_PACKAGE}_{version}_all.deb"));
    build_deb(&dkms_root, &dkms_deb)?;
    let cli_root = stage.join(CLI_PACKAGE);
    stage_cli(&cli_root, version, &maint, &date, &stage.join("shlibdeps"))?;
    let cli_deb = out.join(format!("{CLI_PACKAGE}_{version}_amd64.deb"));
    build_deb(&cli_root, &cli_deb)?;
    Ok(Debs {
        dkms: dkms_deb,
        cli: cli_deb,
    })
}

/// One lintian finding.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    /// `E`, `W`, `I`, `P`, `X`, `O`, `N`.
    pub severity: char,
    /// Package.
    pub package: String,
    /// Tag.
    pub tag: String,
    /// The rest of the line.
    pub extra: String,
}

/// Parses lintian's `E: pkg: tag extra` lines.
pub fn parse_lintian(out: &str) -> Vec<Finding> {
    out.lines()
        .filter_map(|l| {
            let (sev, rest) = l.split_once(": ")?;
            let severity = match sev {
                "E" | "W" | "I" | "P" | "X" | "O" | "N" => sev.chars().next()?,
                _ => return None,
            };
            let (package, rest) = rest.split_once(": ")?;
            let package = package.split_whitespace().next()?.to_string();
            let (tag, extra) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(Finding {
                severity,
                package,
                tag: tag.to_string(),
                extra: extra.trim().to_string(),
            })
        })
        .collect()
}

/// Runs lintian on both packages; fails on any error.
pub fn lintian(debs: &Debs) -> Result<Vec<Finding>> {
    let mut c = Command::new("lintian");
    c.args(["--tag-display-limit", "0"])
        .arg(&debs.dkms)
        .arg(&debs.cli);
    say(format!("package: {}", describe(&c)));
    let out = c
        .stdin(std::process::Stdio::null())
        .output()
        .context("could not start lintian")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = target_dir().join("package/lintian.txt");
    write(&log, text.as_bytes(), 0o644)?;
    let findings = parse_lintian(&text);
    println!("lintian ({}):", log.display());
    if findings.is_empty() {
        println!("    no findings");
    }
    for f in &findings {
        let why = LINTIAN_KEPT
            .iter()
            .find(|(t, _)| *t == f.tag)
            .map_or("UNEXPLAINED", |(_, w)| w);
        println!("    {}: {}: {} {}", f.severity, f.package, f.tag, f.extra);
        if f.severity == 'W' {
            println!("        kept: {why}");
        }
    }
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.severity == 'E').collect();
    if !errors.is_empty() {
        bail!(
            "lintian reported {} error(s): {}",
            errors.len(),
            errors
                .iter()
                .map(|f| format!("{}: {}", f.package, f.tag))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !out.status.success() && findings.is_empty() {
        bail!("lintian failed with {}:\n{}", out.status, text.trim_end());
    }
    Ok(findings)
}

/// `cargo xtask package [--test]`.
pub fn package(args: &PackageArgs) -> Result<()> {
    let start = Instant::now();
    let debs = step("build the Debian packages", build_packages)?;
    println!("{}\n{}", debs.dkms.display(), debs.cli.display());
    let findings = step("lintian", || lintian(&debs))?;
    let warnings = findings.iter().filter(|f| f.severity == 'W').count();
    println!(
        "package: 2 packages, lintian: 0 errors, {warnings} warning(s) ({})",
        fmt_duration(start.elapsed())
    );
    if args.test {
        test_in_vm(args, &debs)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------
// --test: the Debian root and its boot.

/// bookworm's suites, for mmdebstrap (the headers of both harness kernels
/// are in bookworm-security).
const ROOT_SOURCES: [&str; 3] = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];

/// Bumped when the image's layout or the way it is made changes.
const ROOT_FORMAT: &str = "k2u-debroot-1 minbase ext4";

/// The Debian root's package list for `kernel`.
pub fn root_packages(kernel: &Unpacked) -> Vec<String> {
    let mut pkgs: Vec<String> = ROOT_PACKAGES.iter().map(|p| p.to_string()).collect();
    pkgs.push(format!("linux-headers-{}", kernel.kernel.release()));
    pkgs
}

/// FNV-1a, 64 bits: a stable key for the cache directory.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The cache key of a root with `packages`.
pub fn root_key(packages: &[String]) -> String {
    let text = format!(
        "{ROOT_FORMAT}\n{}\n{}\n",
        ROOT_SOURCES.join("\n"),
        packages.join("\n")
    );
    format!("{:016x}", fnv1a(text.as_bytes()))
}

/// Makes (or reuses) the cached ext4 image of the Debian root.
fn root_image(kernel: &Unpacked) -> Result<PathBuf> {
    let packages = root_packages(kernel);
    let key = root_key(&packages);
    let dir = crate::cache::cache_dir()?.join("debroot").join(&key);
    let image = dir.join("root.img");
    if dir.join("complete").exists() && image.exists() {
        say(format!(
            "debian root: cached {} ({})",
            image.display(),
            packages.join(" ")
        ));
        return Ok(image);
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    remove_dir_if_exists(&tmp)?;
    create_dir(&tmp)?;
    let tree = tmp.join("root");
    let mut c = Command::new("mmdebstrap");
    c.args(["--variant=minbase", "--mode=root", "--format=directory"])
        .arg("--aptopt=APT::Install-Recommends \"false\"")
        .arg(format!("--include={}", packages.join(",")))
        .arg("bookworm")
        .arg(&tree)
        .args(ROOT_SOURCES);
    let t = Instant::now();
    say(format!("debian root: {}", describe(&c)));
    let log = tmp.join("mmdebstrap.log");
    let out = c
        .stdin(std::process::Stdio::null())
        .output()
        .context("could not start mmdebstrap")?;
    write(
        &log,
        &[out.stdout.as_slice(), out.stderr.as_slice()].concat(),
        0o644,
    )?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!(
            "mmdebstrap failed with {} (log {}):\n{}",
            out.status,
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    say(format!(
        "debian root: mmdebstrap took {}",
        fmt_duration(t.elapsed())
    ));
    // Room for dpkg -i and the DKMS build on top of what is there.
    let used = run_stdout(Command::new("du").args(["-s", "-B1M"]).arg(&tree))?;
    let used_mib: u64 = used
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du printed no size")?;
    let size_mib = used_mib + 1024;
    let tmp_image = tmp.join("root.img");
    let t = Instant::now();
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "k2uroot", "-d"])
        .arg(&tree)
        .arg(&tmp_image)
        .arg(format!("{size_mib}M"));
    say(format!("debian root: {}", describe(&mkfs)));
    run_captured(&mut mkfs)?;
    say(format!(
        "debian root: {used_mib} MiB of files in a {size_mib} MiB image ({})",
        fmt_duration(t.elapsed())
    ));
    remove_dir_if_exists(&tree)?;
    write(
        &tmp.join("packages"),
        format!("{}\n", packages.join("\n")).as_bytes(),
        0o644,
    )?;
    write(&tmp.join("complete"), b"", 0o644)?;
    remove_dir_if_exists(&dir)?;
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("could not rename {} to {}", tmp.display(), dir.display()))?;
    Ok(image)
}

/// Modules the loader needs to reach an ext4 root on virtio-blk (with
/// their dependencies); built-in ones are skipped. ext4 asks for crc32c
/// through the crypto API (a soft dependency), hence crc32c_generic.
const LOADER_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];

/// `kernel/fs/ext4/ext4.ko.xz` -> `ext4` (dashes as underscores).
pub fn module_name(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or("");
    let base = file.split(".ko").next().unwrap_or(file);
    base.replace('-', "_")
}

/// The load order for `wanted` (dependencies first), skipping names in
/// `builtin`; `depends` gives a module's direct dependencies by name.
pub fn load_order(
    wanted: &[&str],
    builtin: &BTreeSet<String>,
    depends: &mut dyn FnMut(&str) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        builtin: &BTreeSet<String>,
        depends: &mut dyn FnMut(&str) -> Result<Vec<String>>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        if builtin.contains(name) || !seen.insert(name.to_string()) {
            return Ok(());
        }
        for d in depends(name)? {
            visit(&d, builtin, depends, seen, out)?;
        }
        out.push(name.to_string());
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for name in wanted {
        visit(name, builtin, depends, &mut seen, &mut out)?;
    }
    Ok(out)
}

/// Module name -> file under `moddir`, from modules.order (whose `.ko`
/// names may be shipped compressed).
fn module_files(moddir: &Path) -> Result<std::collections::BTreeMap<String, PathBuf>> {
    let order = moddir.join("modules.order");
    let text = std::fs::read_to_string(&order)
        .with_context(|| format!("could not read {}", order.display()))?;
    let mut map = std::collections::BTreeMap::new();
    for rel in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        for candidate in [rel.to_string(), format!("{rel}.xz")] {
            let path = moddir.join(&candidate);
            if path.exists() {
                map.insert(module_name(rel), path);
                break;
            }
        }
    }
    Ok(map)
}

/// The loader's /init: load the modules, mount the Debian root, run the
/// test in a chroot, print the harness's markers, power off.
fn loader_init(release: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
for m in $(cat /modules/order); do
    insmod "/modules/$m" || echo "K2U-LOADER: insmod $m failed"
done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do
    sleep 0.1
    n=$((n + 1))
done
rc=1
if mount -t ext4 /dev/vda /mnt; then
    mount -t proc proc /mnt/proc
    mount -t sysfs sysfs /mnt/sys
    mount -o bind /dev /mnt/dev
    mkdir -p /mnt/dev/char /mnt/dev/pts
    # What udev would add: dkms uses <(...), which needs /dev/fd.
    ln -sfn /proc/self/fd /mnt/dev/fd
    ln -sf /proc/self/fd/0 /mnt/dev/stdin
    ln -sf /proc/self/fd/1 /mnt/dev/stdout
    ln -sf /proc/self/fd/2 /mnt/dev/stderr
    mount -t devpts devpts /mnt/dev/pts
    mount -t tmpfs tmpfs /mnt/tmp
    mount -t tmpfs tmpfs /mnt/run
    rm -rf /mnt/root/k2u
    cp -a /k2u /mnt/root/k2u
    echo "K2U-RUN packaged walkthrough on {release}"
    chroot /mnt /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive K2U_TIMEOUT_SCALE=3 \
        /bin/sh /root/k2u/guest-test.sh
    rc=$?
    sync
else
    echo "K2U-LOADER: cannot mount /dev/vda"
fi
echo "K2U-EXIT $rc"
echo K2U-DMESG-BEGIN
dmesg
echo K2U-DMESG-END
reboot -f
"#
    )
}

/// What runs in the Debian root.
pub const GUEST_TEST: &str = r#"#!/bin/sh
# Installs both packages (kern2usr-dkms's postinst builds the module with
# DKMS for the running kernel), proves modprobe finds it, then runs the
# walkthrough with the packaged CLI and the DKMS-built module.
set -eu
cd /root/k2u
release=$(uname -r)
echo "K2U-PKG: dpkg -i $(ls *.deb | tr '\n' ' ')"
t0=$(date +%s)
if ! dpkg -i ./kern2usr-dkms_*_all.deb ./kern2usr_*_amd64.deb; then
    for log in /var/lib/dkms/kern2usr/*/build/make.log /var/lib/dkms/kern2usr/*/*/*/log/make.log; do
        [ -f "$log" ] && { echo "== $log"; cat "$log"; }
    done
    exit 1
fi
t1=$(date +%s)
echo "K2U-PKG: dpkg -i (with the DKMS build) took $((t1 - t0)) s"
dkms status
ko=$(modinfo -n kern2usr)
case "$ko" in
/lib/modules/"$release"/updates/dkms/kern2usr.ko*) ;;
*) echo "K2U-PKG: modinfo -n kern2usr gives $ko, not the DKMS install"; exit 1 ;;
esac
echo "K2U-PKG: module $ko srcversion $(modinfo -F srcversion kern2usr) vermagic $(modinfo -F vermagic kern2usr)"
modprobe kern2usr
test -d /sys/module/kern2usr
echo "K2U-PKG: modprobe kern2usr loaded it ($(cat /sys/module/kern2usr/srcversion 2>/dev/null || echo no srcversion in sysfs))"
modprobe -r kern2usr
test ! -d /sys/module/kern2usr
command -v kern2usr
mkdir -p /root/kern2usr/kern /root/kern2usr/scripts
case "$ko" in
*.xz) xz -dc "$ko" > /root/kern2usr/kern/kern2usr.ko ;;
*) cp "$ko" /root/kern2usr/kern/kern2usr.ko ;;
esac
cp /usr/share/kern2usr/create_chdev.sh /root/kern2usr/scripts/
test -f /lib/udev/rules.d/60-kern2usr.rules
grep -q 'KERNEL=="kern2usr", GROUP="kern2usr", MODE="0660"' /lib/udev/rules.d/60-kern2usr.rules
gid=$(getent group kern2usr | cut -d: -f3)
test "$gid" -lt 1000
echo "K2U-PKG: udev rule installed, system group kern2usr (gid $gid)"
# configure again (an upgrade): the group exists, nothing fails.
/var/lib/dpkg/info/kern2usr.postinst configure 0.0.0
test "$(getent group kern2usr | wc -l)" = 1
cd /root/kern2usr
/root/k2u/kern2usr-vmtest suite walkthrough
"#;

/// Builds the loader initramfs for `kernel` with the test payload.
fn loader_initramfs(kernel: &Unpacked, debs: &Debs, vmtest: &Path) -> Result<PathBuf> {
    let release = kernel.kernel.release();
    let kroot = kernel
        .vmlinuz
        .parent()
        .and_then(Path::parent)
        .context("odd vmlinuz path")?;
    let moddir = kroot.join("lib/modules").join(&release);
    let builtin: BTreeSet<String> = std::fs::read_to_string(moddir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    let files = module_files(&moddir)?;
    let mut depends = |name: &str| -> Result<Vec<String>> {
        let path = files
            .get(name)
            .ok_or_else(|| anyhow!("module {name} is neither built in nor in modules.order"))?;
        let deps = dkms::modinfo(path, "depends")?;
        Ok(deps
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect())
    };
    let order = load_order(LOADER_MODULES, &builtin, &mut depends)?;
    let base = target_dir().join("package/vm");
    let tree = base.join("tree");
    remove_dir_if_exists(&tree)?;
    create_dir(&tree.join("modules"))?;
    let mut names = Vec::new();
    for module in &order {
        let src = files
            .get(module)
            .ok_or_else(|| anyhow!("module {module} has no file"))?;
        let name = format!("{module}.ko");
        let dest = tree.join("modules").join(&name);
        let file = src.to_string_lossy();
        let data = if file.ends_with(".ko.xz") {
            run_captured(Command::new("xz").arg("-dc").arg(src))?.stdout
        } else if file.ends_with(".ko") {
            std::fs::read(src).with_context(|| format!("could not read {}", src.display()))?
        } else {
            bail!("{file}: only .ko and .ko.xz modules are handled");
        };
        write(&dest, &data, 0o644)?;
        names.push(name);
    }
    say(format!("loader: modules {}", names.join(" ")));
    write(
        &tree.join("modules/order"),
        format!("{}\n", names.join("\n")).as_bytes(),
        0o644,
    )?;
    write(&tree.join("init"), loader_init(&release).as_bytes(), 0o755)?;
    let busybox = Path::new("/bin/busybox");
    crate::build::ensure_static(busybox).context("install busybox-static")?;
    write(&tree.join("bin/busybox"), &std::fs::read(busybox)?, 0o755)?;
    let payload = tree.join("k2u");
    create_dir(&payload)?;
    for deb in [&debs.dkms, &debs.cli] {
        let name = deb.file_name().context("deb name")?;
        std::fs::copy(deb, payload.join(name))
            .with_context(|| format!("could not copy {}", deb.display()))?;
    }
    write(
        &payload.join("kern2usr-vmtest"),
        &std::fs::read(vmtest)?,
        0o755,
    )?;
    write(&payload.join("guest-test.sh"), GUEST_TEST.as_bytes(), 0o755)?;
    let image = base.join("loader.cpio.gz");
    crate::initramfs::pack(&tree, &image)?;
    Ok(image)
}

/// `--test`: the walkthrough in the Debian root.
fn test_in_vm(args: &PackageArgs, debs: &Debs) -> Result<()> {
    if args.kernel.built_from_source() {
        bail!("--test boots a Debian kernel (6.1 or 6.12): its headers come from the archive");
    }
    let mut times: Vec<(String, Duration)> = Vec::new();
    let mut timed = |what: &str, t: Instant| times.push((what.to_string(), t.elapsed()));
    crate::deps::ensure_named("package --test tools", TEST_TOOLS)?;
    let t = Instant::now();
    let kernel = step(format!("fetch kernel {}", args.kernel), || {
        crate::kernels::fetch(args.kernel, None)
    })?;
    timed("fetch kernel", t);
    let t = Instant::now();
    let image = step("the Debian root image", || root_image(&kernel))?;
    timed("debian root (mmdebstrap + mkfs.ext4, or cache)", t);
    let t = Instant::now();
    let bins = step("build the static guest binaries", crate::build::build_user)?;
    timed("static kern2usr-vmtest", t);
    let t = Instant::now();
    let initrd = step("pack the loader initramfs", || {
        loader_initramfs(&kernel, debs, &bins.vmtest)
    })?;
    timed("loader initramfs", t);
    let name = format!("package@{}", args.kernel);
    let mut boot = crate::qemu::Boot::of(
        &name,
        args.kernel,
        &kernel,
        &initrd,
        Duration::from_secs(args.timeout),
    );
    boot.extra_args = vec![
        "-drive".to_string(),
        format!("file={},if=virtio,format=raw,snapshot=on", image.display()),
    ];
    let t = Instant::now();
    let outcome = step(
        format!("boot {} with the Debian root", kernel.kernel.release()),
        || crate::qemu::boot(&boot),
    )?;
    timed("boot + dpkg -i + DKMS build + walkthrough", t);
    println!("package --test timings:");
    for (what, d) in &times {
        println!("    {:>8}  {what}", fmt_duration(*d));
    }
    for l in outcome.console.iter().filter(|l| l.starts_with("K2U-PKG")) {
        println!("    {l}");
    }
    crate::qemu::check(&name, &outcome)?;
    let results = crate::report::suite_results(&outcome.console);
    let walk = results
        .iter()
        .rev()
        .find(|(n, _)| n == "walkthrough")
        .map(|(_, c)| *c)
        .context("no walkthrough result line from the guest")?;
    println!(
        "package@{}/walkthrough: {} passed, {} failed",
        args.kernel, walk.passed, walk.failed
    );
    if walk.failed != 0 || walk.passed == 0 {
        bail!("the packaged walkthrough failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lintian_lines() {
        let out = "E: kern2usr: bogus-mail-host Maintainer x@y\nW: kern2usr-dkms: no-manual-page [usr/bin/kern2usr]\nN: some note\nrandom line\n";
        let f = parse_lintian(out);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].severity, 'E');
        assert_eq!(f[0].package, "kern2usr");
        assert_eq!(f[0].tag, "bogus-mail-host");
        assert_eq!(f[1].tag, "no-manual-page");
        assert_eq!(f[1].extra, "[usr/bin/kern2usr]");
    }

    #[test]
    fn control_renders_and_wraps() {
        let c = Control {
            package: "kern2usr-dkms",
            version: "0.1.0",
            arch: "all",
            section: "kernel",
            depends: Some("dkms (>= 2.1.0.0)".into()),
            recommends: None,
            installed_size: 42,
            summary: "short",
            description: &["one two three", "second paragraph"],
        };
        let text = c.render("M <m@example.org>");
        assert!(text.contains("Package: kern2usr-dkms\n"));
        assert!(text.contains("Installed-Size: 42\n"));
        assert!(text.contains("Depends: dkms (>= 2.1.0.0)\n"));
        assert!(!text.contains("Recommends"));
        assert!(text.ends_with("Description: short\n one two three\n .\n second paragraph\n"));
        assert_eq!(wrap("aaa bbb ccc", 7), ["aaa bbb", "ccc"]);
    }

    #[test]
    fn cli_postinst_makes_the_group_only_when_missing() {
        let post = cli_postinst();
        assert!(post.starts_with("#!/bin/sh\n"));
        assert!(post.contains("set -e\n"));
        let check = post.find("if ! getent group kern2usr >/dev/null; then");
        let add = post.find("addgroup --system kern2usr");
        assert!(
            matches!((check, add), (Some(c), Some(a)) if c < a),
            "{post}"
        );
        // The group exists before udev applies the rule naming it.
        let reload = post.find("udevadm control --reload-rules");
        assert!(
            matches!((add, reload), (Some(a), Some(r)) if a < r),
            "{post}"
        );
        assert!(post.contains("if [ \"$1\" = configure ]; then"));
        assert!(post.trim_end().ends_with("exit 0"));
    }

    #[test]
    fn the_udev_rule_gives_the_node_to_the_group() -> Result<()> {
        let text = std::fs::read_to_string(repo_root().join(UDEV_RULE))?;
        let rules: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(
            rules,
            [r#"KERNEL=="kern2usr", GROUP="kern2usr", MODE="0660""#]
        );
        assert_eq!(UDEV_RULE_DEST, "lib/udev/rules.d/60-kern2usr.rules");
        Ok(())
    }

    #[test]
    fn maintainer_scripts_call_dkms() {
        let post = dkms_postinst("1.2.3");
        assert!(post.starts_with("#!/bin/sh\n"));
        assert!(post.contains("/usr/lib/dkms/common.postinst kern2usr 1.2.3 \"\" \"\" \"$2\""));
        let pre = dkms_prerm("1.2.3");
        assert!(pre.contains("dkms remove -m kern2usr -v 1.2.3 --all"));
        assert!(pre.contains("remove|upgrade|deconfigure)"));
    }

    #[test]
    fn changelog_format() {
        let c = changelog(
            "kern2usr",
            "0.1.0",
            "M <m@example.org>",
            "Mon, 01 Jan 2024 00:00:00 +0000",
        );
        let mut lines = c.lines();
        assert_eq!(
            lines.next(),
            Some("kern2usr (0.1.0) unstable; urgency=medium")
        );
        assert!(c.ends_with("\n -- M <m@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n"));
    }

    #[test]
    fn module_load_order() {
        let table: &[(&str, &[&str])] = &[
            ("ext4", &["mbcache", "jbd2", "crc16"]),
            ("jbd2", &["crc16"]),
            ("mbcache", &[]),
            ("crc16", &[]),
            ("virtio_blk", &["virtio", "virtio_ring"]),
            ("virtio", &[]),
            ("virtio_ring", &[]),
            ("crc32c_generic", &[]),
        ];
        let mut depends = |n: &str| -> Result<Vec<String>> {
            table
                .iter()
                .find(|(m, _)| *m == n)
                .map(|(_, d)| d.iter().map(|s| s.to_string()).collect())
                .ok_or_else(|| anyhow!("no {n}"))
        };
        let builtin: BTreeSet<String> = ["virtio_pci".to_string()].into_iter().collect();
        let order = load_order(LOADER_MODULES, &builtin, &mut depends).expect("resolves");
        assert_eq!(
            order,
            [
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "crc32c_generic",
                "mbcache",
                "crc16",
                "jbd2",
                "ext4"
            ]
        );
        assert!(load_order(&["nope"], &BTreeSet::new(), &mut depends).is_err());
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.xz"), "ext4");
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio-mmio.ko"),
            "virtio_mmio"
        );
    }

    #[test]
    fn root_key_depends_on_packages() {
        let a = root_key(&["dkms".into(), "linux-headers-6.12.117+deb12-amd64".into()]);
        let b = root_key(&["dkms".into(), "linux-headers-6.1.0-57-amd64".into()]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert_eq!(
            a,
            root_key(&["dkms".into(), "linux-headers-6.12.117+deb12-amd64".into()])
        );
    }

    #[test]
    fn copyright_is_dep5() {
        assert_eq!(year_of("Mon, 30 Nov 2026 00:19:37 +0000"), Some("2026"));
        assert_eq!(year_of("yesterday"), None);
        let c = copyright("2026");
        assert!(c.contains("\nCopyright: 2026 kern2usr developers\n"));
        assert!(c.starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        ));
        assert!(c.contains("\nLicense: GPL-2\n This program"));
    }
}
