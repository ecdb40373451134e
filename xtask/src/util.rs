//! Small helpers shared by the subcommands: repository paths, step
//! reporting and running external commands with useful errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// Root of the cargo workspace (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// `target/` of the workspace (honours `CARGO_TARGET_DIR` only for host
/// builds; VM artefacts always live under the workspace's own `target/`).
pub fn target_dir() -> PathBuf {
    repo_root().join("target")
}

/// Prints the one line that says what the next step does.
pub fn say(what: impl AsRef<str>) {
    println!("==> {}", what.as_ref());
}

/// Runs `f` as a named step: prints what it does, then how long it took.
pub fn step<T>(what: impl AsRef<str>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let what = what.as_ref();
    say(what);
    let start = Instant::now();
    let result = f();
    let status = if result.is_ok() { "done" } else { "FAILED" };
    println!("    {status} in {} ({what})", fmt_duration(start.elapsed()));
    result
}

/// `12.3s` or `2m05.1s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let mins = (secs / 60.0).floor();
        format!("{}m{:04.1}s", mins as u64, secs - mins * 60.0)
    }
}

/// The command line as a shell-like string, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with inherited stdio and fails unless it exits with 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let desc = describe(cmd);
    let status = cmd.status().with_context(|| {
        format!("could not start `{desc}` (is it installed? try `cargo xtask deps`)")
    })?;
    if !status.success() {
        bail!("`{desc}` failed with {status}");
    }
    Ok(())
}

/// Runs `cmd`, capturing stdout and stderr; fails unless it exits with 0,
/// and then includes what it printed in the error.
pub fn run_captured(cmd: &mut Command) -> Result<Output> {
    let desc = describe(cmd);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| {
        format!("could not start `{desc}` (is it installed? try `cargo xtask deps`)")
    })?;
    if !out.status.success() {
        bail!(
            "`{desc}` failed with {}:\n{}",
            out.status,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim_end()
        );
    }
    Ok(out)
}

/// Runs `cmd` and returns its stdout as text (stderr is included in errors).
pub fn run_stdout(cmd: &mut Command) -> Result<String> {
    let out = run_captured(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes a directory tree if it exists.
pub fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("could not remove {}", dir.display())),
    }
}

/// Creates a directory and its parents.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))
}

/// Whether we run as root (needed for apt-get install).
pub fn is_root() -> bool {
    // The effective uid is not exposed by std; `id -u` is always present.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// UTC time stamp `YYYYmmdd-HHMMSS` for log file names.
pub fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the epoch as `YYYYmmdd-HHMMSS` (UTC).
pub fn format_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), after H. Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "19700101-000000");
        // 2024-02-29 12:34:56 UTC
        assert_eq!(format_utc(1_709_210_096), "20240229-123456");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05.0s");
    }
}
