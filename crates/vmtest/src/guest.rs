//! The guest's layout and the shell commands of the seed's walkthrough.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{DEVICE_NAME, MODULE_NAME, SEED_DEVICE_PATH};

use crate::kmsg::KernelLog;

/// The project directory in the guest (the seed's `kern2usr`).
pub const ROOT: &str = "/root/kern2usr";
/// Where the module is (the seed's `kern`).
pub const KERN_DIR: &str = "/root/kern2usr/kern";
/// The module file, insmod'ed from [`KERN_DIR`].
pub const MODULE_FILE: &str = "kern2usr.ko";
/// The node script, run from [`KERN_DIR`] as `../scripts/create_chdev.sh`.
pub const CREATE_CHDEV: &str = "../scripts/create_chdev.sh";
/// The listener binary.
pub const LISTENER_BIN: &str = "/usr/bin/kern2usr";

/// Generous default for anything the kernel or the listener should do
/// promptly (a TCG guest can be slow).
pub fn timeout() -> Duration {
    scaled(Duration::from_secs(10))
}

/// `d` times `K2U_TIMEOUT_SCALE` (default 1), for slow emulation.
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var("K2U_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    d * scale
}

/// `/sys/module/kern2usr`.
pub fn sys_module() -> PathBuf {
    Path::new("/sys/module").join(MODULE_NAME)
}

/// `/sys/class/kern2usr`.
pub fn sys_class() -> PathBuf {
    Path::new("/sys/class").join(DEVICE_NAME)
}

/// `/sys/class/misc/kern2usr`: the Rust module registers a misc device.
pub fn sys_misc() -> PathBuf {
    Path::new("/sys/class/misc").join(DEVICE_NAME)
}

/// `major:minor` of the device: `/sys/class/kern2usr/kern2usr/dev` (C
/// module, own class) or `/sys/class/misc/kern2usr/dev` (Rust module).
pub fn sys_dev_file() -> PathBuf {
    let own_class = sys_class().join(DEVICE_NAME).join("dev");
    if own_class.exists() {
        own_class
    } else {
        sys_misc().join("dev")
    }
}

/// Whether the module is loaded.
pub fn module_loaded() -> bool {
    sys_module().exists()
}

/// What a shell command did.
#[derive(Debug)]
pub struct ShellOut {
    /// Exit status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// `sh -c cmd` in `cwd`.
pub fn sh(cwd: &Path, cmd: &str) -> Result<ShellOut> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `sh -c {cmd:?}` in {}", cwd.display()))?;
    Ok(ShellOut {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `sh -c cmd` that must exit 0 with nothing on stderr.
pub fn sh_ok(cwd: &Path, cmd: &str) -> Result<ShellOut> {
    let out = sh(cwd, cmd)?;
    if !out.status.success() || !out.stderr.trim().is_empty() {
        bail!(
            "`{cmd}` (in {}) exited with {} and stderr {:?}",
            cwd.display(),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out)
}

/// `sh -c cmd` that must fail; returns its stderr.
pub fn sh_fails(cwd: &Path, cmd: &str) -> Result<String> {
    let out = sh(cwd, cmd)?;
    if out.status.success() {
        bail!("`{cmd}` (in {}) succeeded but should fail", cwd.display());
    }
    Ok(out.stderr)
}

/// `insmod kern2usr.ko [args]` from the kern directory, and the load lines.
pub fn insmod(klog: &mut KernelLog, args: &str) -> Result<()> {
    let cmd = format!("insmod {MODULE_FILE} {args}");
    sh_ok(Path::new(KERN_DIR), cmd.trim())?;
    klog.wait_for("Work queue created.", timeout())
        .context("after insmod")?;
    ensure!(
        module_loaded(),
        "insmod succeeded but {} is missing",
        sys_module().display()
    );
    Ok(())
}

/// `rmmod kern2usr`, which must succeed and log `module unloaded`.
pub fn rmmod(klog: &mut KernelLog) -> Result<()> {
    sh_ok(Path::new(KERN_DIR), &format!("rmmod {MODULE_NAME}"))?;
    klog.wait_for("module unloaded", timeout())
        .context("after rmmod")?;
    ensure!(
        !module_loaded(),
        "rmmod succeeded but {} is still there",
        sys_module().display()
    );
    Ok(())
}

/// (Re)create /dev/char/mmaptest with the seed's script, run from kern/.
/// The major is dynamic, so a node left from an earlier load is removed
/// first.
pub fn create_node() -> Result<()> {
    match std::fs::remove_file(SEED_DEVICE_PATH) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the old {SEED_DEVICE_PATH}")),
    }
    sh_ok(Path::new(KERN_DIR), CREATE_CHDEV)?;
    check_node()
}

/// /dev/char/mmaptest is a character device with the numbers in sysfs.
pub fn check_node() -> Result<()> {
    let want = std::fs::read_to_string(sys_dev_file())
        .with_context(|| format!("reading {}", sys_dev_file().display()))?;
    let meta = std::fs::metadata(SEED_DEVICE_PATH)
        .with_context(|| format!("{SEED_DEVICE_PATH} after {CREATE_CHDEV}"))?;
    ensure!(
        meta.file_type().is_char_device(),
        "{SEED_DEVICE_PATH} is not a character device"
    );
    let rdev = meta.rdev();
    let got = format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev));
    ensure!(
        got == want.trim(),
        "{SEED_DEVICE_PATH} is {got} but the device is {}",
        want.trim()
    );
    Ok(())
}

/// A freshly loaded module (unloading a leftover one first) with its node.
pub fn fresh_module(klog: &mut KernelLog) -> Result<()> {
    unload_sample_producer()?;
    if module_loaded() {
        rmmod(klog).context("unloading a module left loaded")?;
    }
    insmod(klog, "")?;
    create_node()
}

/// Unload the module if it is loaded (the sample producer first, which
/// holds it), reporting failure.
pub fn unload_if_loaded(klog: &mut KernelLog) -> Result<()> {
    unload_sample_producer()?;
    if module_loaded() {
        rmmod(klog)?;
    }
    Ok(())
}

/// `rmmod k2u_sample_producer` if it is loaded.
pub fn unload_sample_producer() -> Result<()> {
    let name = kern2usr::abi::SAMPLE_PRODUCER_MODULE;
    if Path::new("/sys/module").join(name).exists() {
        sh_ok(Path::new("/"), &format!("rmmod {name}"))?;
    }
    Ok(())
}
