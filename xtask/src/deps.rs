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
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        say(format!("host packages: all {} present", PACKAGES.len()));
        return Ok(());
    }
    let list = missing.join(" ");
    if !crate::util::is_root() {
        bail!("missing host packages: {list}; run `sudo apt-get update && sudo apt-get install -y {list}` (or run `cargo xtask deps` as root)");
    }
    say(format!("host packages: installing {list}"));
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
