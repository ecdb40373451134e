//! `cargo xtask dkms`: builds the C module with Debian's `dkms` against
//! the kernels the harness has headers for, in a private DKMS tree.
//!
//! ```text
//! target/dkms/usr-src/kern2usr-<ver>/   --sourcetree: kernel/c + dkms.conf
//! target/dkms/var-lib-dkms/             --dkmstree: dkms's state and builds
//! target/dkms/lib-modules/              --installtree (unused: build only)
//! ```
//!
//! The host's `/var/lib/dkms`, `/usr/src` and `/lib/modules` are never
//! written: every dkms call gets the three tree options, the kernel's
//! headers come through `--kernelsourcedir`, and [`build`] checks that the
//! three host directories list the same before and after.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kernels::{Series, Unpacked};
use crate::util::{
    create_dir, describe, remove_dir_if_exists, repo_root, run_captured, say, target_dir,
};

/// `PACKAGE_NAME` in dkms.conf, and the module's name.
pub const PACKAGE_NAME: &str = "kern2usr";
/// The kernels `cargo xtask dkms` builds for by default: the binary
/// Debian kernels, whose headers are unpacked in the cache.
pub const DEFAULT_KERNELS: [Series; 2] = [Series::V6_1, Series::V6_12];
/// Host directories dkms would write to without the tree options.
const HOST_TREES: [&str; 3] = ["/var/lib/dkms", "/usr/src", "/lib/modules"];

/// The module's version: the workspace version, which dkms.conf's
/// `PACKAGE_VERSION` must repeat.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The value of `KEY="value"` (or `KEY=value`) in a dkms.conf text.
pub fn conf_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim().trim_matches('"'))
    })
}

/// Reads kernel/c/dkms.conf and checks its name and version.
pub fn check_conf(text: &str) -> Result<()> {
    match conf_value(text, "PACKAGE_NAME") {
        Some(PACKAGE_NAME) => {}
        other => bail!("dkms.conf: PACKAGE_NAME is {other:?}, expected {PACKAGE_NAME:?}"),
    }
    match conf_value(text, "PACKAGE_VERSION") {
        Some(v) if v == version() => Ok(()),
        other => bail!(
            "dkms.conf: PACKAGE_VERSION is {other:?} but the workspace version is {}: update kernel/c/dkms.conf",
            version()
        ),
    }
}

/// The C module's source directory.
pub fn module_dir() -> PathBuf {
    repo_root().join("kernel").join("c")
}

/// Copies the DKMS source (kernel/c's sources and dkms.conf) to `dest`,
/// which must not exist yet. Returns the file names, sorted.
pub fn copy_source(dest: &Path) -> Result<Vec<String>> {
    let src = module_dir();
    let conf = std::fs::read_to_string(src.join("dkms.conf"))
        .with_context(|| format!("could not read {}", src.join("dkms.conf").display()))?;
    check_conf(&conf)?;
    create_dir(dest)?;
    let names = crate::build::copy_sources(&src, dest, |name| name == "dkms.conf")?;
    for needed in ["dkms.conf", "Kbuild", "Makefile", "kern2usr_abi.h"] {
        if !names.iter().any(|n| n == needed) {
            bail!("{} has no {needed}", src.display());
        }
    }
    Ok(names)
}

/// The private trees.
pub struct Trees {
    /// `--dkmstree`.
    pub dkms: PathBuf,
    /// `--sourcetree`.
    pub source: PathBuf,
    /// `--installtree`.
    pub install: PathBuf,
}

impl Trees {
    /// The trees under `target/dkms/`.
    pub fn under_target() -> Trees {
        let base = target_dir().join("dkms");
        Trees {
            dkms: base.join("var-lib-dkms"),
            source: base.join("usr-src"),
            install: base.join("lib-modules"),
        }
    }

    /// A `dkms` command with the three tree options.
    fn dkms(&self, action: &str) -> Command {
        let mut c = Command::new("dkms");
        c.arg(action)
            .arg("--dkmstree")
            .arg(&self.dkms)
            .arg("--sourcetree")
            .arg(&self.source)
            .arg("--installtree")
            .arg(&self.install);
        c
    }

    /// Where `dkms build` leaves the module for `release`.
    pub fn built_module(&self, release: &str) -> PathBuf {
        self.dkms
            .join(PACKAGE_NAME)
            .join(version())
            .join(release)
            .join(std::env::consts::ARCH)
            .join("module")
            .join(crate::build::MODULE_FILE)
    }

    /// dkms's make log for `release`.
    pub fn make_log(&self, release: &str) -> PathBuf {
        self.dkms
            .join(PACKAGE_NAME)
            .join(version())
            .join(release)
            .join(std::env::consts::ARCH)
            .join("log")
            .join("make.log")
    }
}

/// A module dkms built.
pub struct Built {
    /// The kernel's series.
    pub series: Series,
    /// Its `uname -r`.
    pub release: String,
    /// The `.ko` in the private DKMS tree.
    pub ko: PathBuf,
    /// `modinfo -F srcversion`.
    pub srcversion: String,
    /// `modinfo -F vermagic`.
    pub vermagic: String,
    /// sha256 of the `.ko`, to recognise it in the guest.
    pub sha256: String,
}

/// What the host directories dkms must not touch contain (one level).
fn host_snapshot() -> Vec<String> {
    let mut out = Vec::new();
    for dir in HOST_TREES {
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                    .collect();
                names.sort();
                out.extend(names);
            }
            Err(_) => out.push(format!("{dir} (absent)")),
        }
    }
    out
}

/// `modinfo -F <field> <ko>`.
pub fn modinfo(ko: &Path, field: &str) -> Result<String> {
    let out = run_captured(Command::new("modinfo").args(["-F", field]).arg(ko))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// sha256 of a file, as `sha256sum` prints it.
pub fn sha256(path: &Path) -> Result<String> {
    let out = run_captured(Command::new("sha256sum").arg(path))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .with_context(|| format!("sha256sum printed nothing for {}", path.display()))
}

/// Runs a dkms command, saying what it runs; on failure the error carries
/// its output.
fn run_dkms(c: &mut Command) -> Result<String> {
    say(format!("dkms: {}", describe(c)));
    let out = run_captured(c)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fresh private trees, `dkms add`, then `dkms build` for each kernel.
pub fn build(kernels: &[Unpacked]) -> Result<Vec<Built>> {
    crate::deps::ensure_named("DKMS", &["dkms"])?;
    let trees = Trees::under_target();
    let before = host_snapshot();
    for dir in [&trees.dkms, &trees.source, &trees.install] {
        remove_dir_if_exists(dir)?;
        create_dir(dir)?;
    }
    let src = trees.source.join(format!("{PACKAGE_NAME}-{}", version()));
    let files = copy_source(&src)?;
    say(format!(
        "dkms: source {} ({} files)",
        src.display(),
        files.len()
    ));
    let mv = format!("{PACKAGE_NAME}/{}", version());
    run_dkms(trees.dkms("add").arg(&mv))?;
    let mut built = Vec::new();
    for kernel in kernels {
        let release = kernel.kernel.release();
        let mut c = trees.dkms("build");
        c.arg(&mv)
            .arg("-k")
            .arg(&release)
            .arg("--kernelsourcedir")
            .arg(&kernel.kdir);
        if let Err(e) = run_dkms(&mut c) {
            let log = trees.make_log(&release);
            return Err(e.context(format!(
                "dkms build for {release} failed (make log, if any: {})",
                log.display()
            )));
        }
        let ko = trees.built_module(&release);
        if !ko.exists() {
            bail!(
                "dkms build for {release} succeeded but {} is missing",
                ko.display()
            );
        }
        let vermagic = modinfo(&ko, "vermagic")?;
        if vermagic.split_whitespace().next() != Some(release.as_str()) {
            bail!(
                "{}: vermagic `{vermagic}` is not for {release}",
                ko.display()
            );
        }
        let b = Built {
            series: kernel.kernel.series,
            // Empty unless the module has MODULE_VERSION or the kernel
            // CONFIG_MODULE_SRCVERSION_ALL (Debian's have neither).
            srcversion: Some(modinfo(&ko, "srcversion")?)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "none".to_string()),
            sha256: sha256(&ko)?,
            vermagic,
            release,
            ko,
        };
        say(format!(
            "dkms: {} built: {} (srcversion {}, vermagic {}, sha256 {})",
            b.release,
            b.ko.display(),
            b.srcversion,
            b.vermagic,
            &b.sha256[..16.min(b.sha256.len())]
        ));
        built.push(b);
    }
    let status = run_dkms(&mut trees.dkms("status"))?;
    for line in status.lines() {
        println!("    {line}");
    }
    let after = host_snapshot();
    if before != after {
        bail!(
            "dkms changed the host's {}: before {before:?}, after {after:?}",
            HOST_TREES.join(", ")
        );
    }
    Ok(built)
}

/// `cargo xtask dkms`: fetch the kernels, build, print where the modules are.
pub fn dkms(kernels: &[Series]) -> Result<Vec<Built>> {
    let chosen = if kernels.is_empty() {
        DEFAULT_KERNELS.to_vec()
    } else {
        kernels.to_vec()
    };
    let mut unpacked = Vec::new();
    for series in chosen {
        if series.built_from_source() {
            bail!("{series}: DKMS builds run against Debian's binary kernels' headers (6.1, 6.12)");
        }
        unpacked.push(crate::util::step(format!("fetch kernel {series}"), || {
            crate::kernels::fetch(series, None)
        })?);
    }
    crate::util::step("dkms add and build (private tree in target/dkms)", || {
        build(&unpacked)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values() {
        let text = "# c\nPACKAGE_NAME=\"kern2usr\"\nPACKAGE_VERSION=0.1.0\nMAKE[0]=\"make\"\n";
        assert_eq!(conf_value(text, "PACKAGE_NAME"), Some("kern2usr"));
        assert_eq!(conf_value(text, "PACKAGE_VERSION"), Some("0.1.0"));
        assert_eq!(conf_value(text, "AUTOINSTALL"), None);
        assert_eq!(conf_value("PACKAGE_NAMEX=y\n", "PACKAGE_NAME"), None);
    }

    #[test]
    fn repository_dkms_conf_matches_the_workspace() {
        let path = module_dir().join("dkms.conf");
        let text = std::fs::read_to_string(&path).expect("kernel/c/dkms.conf is readable");
        check_conf(&text).expect("dkms.conf name and version");
        assert_eq!(conf_value(&text, "AUTOINSTALL"), Some("yes"));
        assert_eq!(
            conf_value(&text, "BUILT_MODULE_NAME[0]"),
            Some(PACKAGE_NAME)
        );
        let make = conf_value(&text, "MAKE[0]").expect("a MAKE line");
        assert!(make.contains("${kernelver}") && make.contains("${kernel_source_dir}"));
    }

    #[test]
    fn wrong_version_is_refused() {
        let text = format!("PACKAGE_NAME=\"{PACKAGE_NAME}\"\nPACKAGE_VERSION=\"9.9.9-not\"\n");
        assert!(check_conf(&text).is_err());
        assert!(check_conf("PACKAGE_NAME=\"other\"\n").is_err());
    }

    #[test]
    fn module_path_in_the_tree() {
        let t = Trees {
            dkms: PathBuf::from("/d"),
            source: PathBuf::from("/s"),
            install: PathBuf::from("/i"),
        };
        let ko = t.built_module("6.12.117+deb12-amd64");
        assert_eq!(
            ko,
            PathBuf::from(format!(
                "/d/kern2usr/{}/6.12.117+deb12-amd64/{}/module/kern2usr.ko",
                version(),
                std::env::consts::ARCH
            ))
        );
    }
}
