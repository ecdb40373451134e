//! `cargo xtask deps`: the host packages the VM harness needs.

use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{run, say};

/// Debian packages the harness uses (qemu, the initramfs tools, and what
/// Debian's kernel headers need to build an out-of-tree module).
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "gzip",
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

/// What only `--kernel 7.3-debug` needs: the kernel is built with
/// `make LLVM=-19` (KASAN with Rust needs a clang-built kernel) and bindgen
/// loads libclang. Installed when that kernel is first asked for.
pub const DEBUG_PACKAGES: &[&str] = &["clang-19", "lld-19", "llvm-19", "libclang-19-dev"];

/// Whether dpkg knows `pkg` as installed.
fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", pkg])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "installed")
        .unwrap_or(false)
}

/// Installs whatever of [`PACKAGES`] is missing; cheap when all are there.
pub fn ensure() -> Result<()> {
    ensure_packages("host packages", PACKAGES)
}

/// Installs whatever of [`DEBUG_PACKAGES`] is missing.
pub fn ensure_debug() -> Result<()> {
    ensure_packages("7.3-debug toolchain packages", DEBUG_PACKAGES)
}

/// Installs whatever of `packages` is missing with the host's apt.
fn ensure_packages(what: &str, packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        say(format!("{what}: all {} present", packages.len()));
        return Ok(());
    }
    let list = missing.join(" ");
    if !crate::util::is_root() {
        bail!("missing {what}: {list}; run `sudo apt-get update && sudo apt-get install -y {list}` (or run `cargo xtask deps` as root)");
    }
    say(format!("{what}: installing {list}"));
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!(
            "apt-get install finished but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}
