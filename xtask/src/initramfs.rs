//! `cargo xtask initramfs`: the guest's whole root file system.
//!
//! ```text
//! /init                                busybox sh script (INIT_SCRIPT)
//! /bin/busybox                         from busybox-static
//! /usr/bin/kern2usr, kern2usr-vmtest   static guest binaries
//! /usr/bin/seed-client                 the 2017 client's calls (tests/seed-client)
//! /root/kern2usr/kern/kern2usr.ko      the module
//! /root/kern2usr/kern/<other>.ko       extra modules (the bench's peers)
//! /root/kern2usr/scripts/create_chdev.sh
//! /etc/k2u-run                         the guest command
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::build::{ensure_static, UserBins};
use crate::util::{create_dir, remove_dir_if_exists, repo_root, say, target_dir};

/// Printed by /init with the guest command's exit status.
pub const EXIT_MARKER: &str = "K2U-EXIT";
/// Printed by /init before the `dmesg` dump.
pub const DMESG_BEGIN: &str = "K2U-DMESG-BEGIN";
/// Printed by /init after the `dmesg` dump.
pub const DMESG_END: &str = "K2U-DMESG-END";
/// Printed by /init before the kmemleak report (kernels with kmemleak).
pub const KMEMLEAK_BEGIN: &str = "K2U-KMEMLEAK-BEGIN";
/// Printed by /init after the kmemleak report.
pub const KMEMLEAK_END: &str = "K2U-KMEMLEAK-END";

/// The guest's /init. Everything goes to the console; the command in
/// /etc/k2u-run runs from /root/kern2usr. On a kernel with kmemleak it then
/// scans twice (objects younger than 5 s are not reported, hence the pause)
/// and prints the report between the K2U-KMEMLEAK markers: anything there
/// fails the run.
pub const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
mkdir -p /dev/char
export PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/root
cd /root/kern2usr
echo "K2U-RUN $(cat /etc/k2u-run)"
sh /etc/k2u-run
echo "K2U-EXIT $?"
if [ -e /sys/kernel/debug/kmemleak ]; then
    echo scan > /sys/kernel/debug/kmemleak
    sleep 5
    echo scan > /sys/kernel/debug/kmemleak
    echo K2U-KMEMLEAK-BEGIN
    cat /sys/kernel/debug/kmemleak
    echo K2U-KMEMLEAK-END
fi
echo K2U-DMESG-BEGIN
dmesg
echo K2U-DMESG-END
reboot -f
"#;

/// What goes into the image.
pub struct Contents<'a> {
    /// The module, if any (`--no-module` leaves it out).
    pub module: Option<&'a Path>,
    /// The guest binaries, if any (`--no-user`).
    pub user: Option<&'a UserBins>,
    /// The one-line guest command.
    pub run: &'a str,
    /// More modules for /root/kern2usr/kern/ (`cargo xtask bench`: the
    /// peers' module).
    pub extra_modules: &'a [PathBuf],
}

/// Host path of the static busybox.
fn busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let p = PathBuf::from(p);
        if p.exists() {
            ensure_static(&p).context("install busybox-static (`cargo xtask deps`)")?;
            return Ok(p);
        }
    }
    bail!("busybox not found; run `cargo xtask deps` (it installs busybox-static)")
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = to.parent() {
        create_dir(dir)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("could not copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("could not chmod {}", to.display()))
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = to.parent() {
        create_dir(dir)?;
    }
    std::fs::write(to, text).with_context(|| format!("could not write {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("could not chmod {}", to.display()))
}

/// All paths under `dir`, relative, parents before children, sorted.
fn list_tree(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let mut children: Vec<PathBuf> = std::fs::read_dir(&abs)
            .with_context(|| format!("could not list {}", abs.display()))?
            .map(|e| e.map(|e| rel.join(e.file_name())))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("could not list {}", abs.display()))?;
        children.sort();
        for child in children.into_iter().rev() {
            if dir
                .join(&child)
                .symlink_metadata()
                .is_ok_and(|m| m.is_dir())
            {
                stack.push(child.clone());
            }
            out.push(child);
        }
    }
    out.sort();
    Ok(out)
}

/// Builds the tree and packs it; returns the `.cpio.gz` path.
pub fn build(name: &str, contents: &Contents<'_>) -> Result<PathBuf> {
    let base = target_dir().join("initramfs").join(name);
    let tree = base.join("tree");
    let image = base.join("initramfs.cpio.gz");
    say(format!("initramfs: assembling {}", tree.display()));
    remove_dir_if_exists(&tree)?;
    for d in [
        "proc",
        "sys",
        "dev",
        "tmp",
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "root/kern2usr/kern",
    ] {
        create_dir(&tree.join(d))?;
    }
    write(&tree.join("init"), INIT_SCRIPT, 0o755)?;
    copy(&busybox()?, &tree.join("bin/busybox"), 0o755)?;
    if let Some(bins) = contents.user {
        copy(&bins.kern2usr, &tree.join("usr/bin/kern2usr"), 0o755)?;
        copy(&bins.vmtest, &tree.join("usr/bin/kern2usr-vmtest"), 0o755)?;
        copy(&bins.seed_client, &tree.join("usr/bin/seed-client"), 0o755)?;
    }
    if let Some(ko) = contents.module {
        copy(ko, &tree.join("root/kern2usr/kern/kern2usr.ko"), 0o644)?;
        let sample = ko.with_file_name(crate::build::SAMPLE_PRODUCER_FILE);
        if sample.exists() {
            copy(
                &sample,
                &tree
                    .join("root/kern2usr/kern")
                    .join(crate::build::SAMPLE_PRODUCER_FILE),
                0o644,
            )?;
        }
    }
    for ko in contents.extra_modules {
        let name = ko
            .file_name()
            .with_context(|| format!("{} has no file name", ko.display()))?;
        copy(ko, &tree.join("root/kern2usr/kern").join(name), 0o644)?;
    }
    let chdev = repo_root().join("scripts/create_chdev.sh");
    if chdev.exists() {
        copy(
            &chdev,
            &tree.join("root/kern2usr/scripts/create_chdev.sh"),
            0o755,
        )?;
    }
    let run = contents.run.trim();
    if run.is_empty() || run.contains('\n') {
        bail!(
            "the guest command must be one non-empty line, got {:?}",
            contents.run
        );
    }
    write(&tree.join("etc/k2u-run"), &format!("{run}\n"), 0o644)?;
    pack(&tree, &image)?;
    Ok(image)
}

/// Packs `tree` as a gzipped newc cpio owned by root into `image`.
pub fn pack(tree: &Path, image: &Path) -> Result<()> {
    say(format!(
        "initramfs: cpio -o -H newc | gzip > {}",
        image.display()
    ));
    let list: Vec<u8> = list_tree(tree)?
        .iter()
        .flat_map(|p| {
            let mut b = p.as_os_str().as_encoded_bytes().to_vec();
            b.push(0);
            b
        })
        .collect();
    let out = std::fs::File::create(image)
        .with_context(|| format!("could not create {}", image.display()))?;
    let mut gzip = Command::new("gzip")
        .arg("-6")
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .context("could not start gzip; run `cargo xtask deps`")?;
    let gzip_in = gzip.stdin.take().context("gzip has no stdin")?;
    let mut cpio = Command::new("cpio")
        .args([
            "--quiet",
            "-o",
            "-H",
            "newc",
            "--null",
            "-R",
            "0:0",
            "--reproducible",
        ])
        .current_dir(tree)
        .stdin(Stdio::piped())
        .stdout(gzip_in)
        .spawn()
        .context("could not start cpio; run `cargo xtask deps`")?;
    {
        use std::io::Write;
        let mut stdin = cpio.stdin.take().context("cpio has no stdin")?;
        stdin
            .write_all(&list)
            .context("could not send the file list to cpio")?;
    }
    let cpio_status = cpio.wait().context("cpio did not finish")?;
    let gzip_status = gzip.wait().context("gzip did not finish")?;
    if !cpio_status.success() || !gzip_status.success() {
        bail!(
            "packing {} failed (cpio: {cpio_status}, gzip: {gzip_status})",
            image.display()
        );
    }
    let size = std::fs::metadata(image).map(|m| m.len()).unwrap_or(0);
    say(format!(
        "initramfs: {} ({} KiB)",
        image.display(),
        size / 1024
    ));
    Ok(())
}
