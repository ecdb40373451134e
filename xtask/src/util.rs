//! Small helpers shared by the subcommands: repository paths, step
//! reporting (to the terminal, or to a log file in quiet mode), running
//! external commands with useful errors and timeouts, per-stage timings,
//! directory locks and file ownership under sudo.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

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

/// Where chatter goes in quiet mode (`cargo xtask demo`): the log file.
static QUIET_LOG: Mutex<Option<(PathBuf, File)>> = Mutex::new(None);

/// From now on, [`say`], [`note`], step lines and the output of commands
/// run through this module go to `path` instead of the terminal.
pub fn set_quiet(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let file =
        File::create(path).with_context(|| format!("could not create {}", path.display()))?;
    if let Ok(mut q) = QUIET_LOG.lock() {
        *q = Some((path.to_path_buf(), file));
    }
    Ok(())
}

/// The quiet-mode log file, if quiet mode is on.
pub fn quiet_log() -> Option<PathBuf> {
    QUIET_LOG
        .lock()
        .ok()
        .and_then(|q| q.as_ref().map(|(p, _)| p.clone()))
}

/// Writes `line` to the quiet log; false when quiet mode is off.
fn to_quiet_log(line: &str) -> bool {
    let Ok(mut q) = QUIET_LOG.lock() else {
        return false;
    };
    match q.as_mut() {
        // A failed log write must not stop the run; the terminal shows
        // the result either way.
        Some((_, f)) => {
            let _ = writeln!(f, "{line}");
            true
        }
        None => false,
    }
}

/// A line of chatter: on the terminal, or in the log file in quiet mode.
pub fn note(line: impl AsRef<str>) {
    if !to_quiet_log(line.as_ref()) {
        println!("{}", line.as_ref());
    }
}

/// A line the user always sees (also copied to the quiet log).
pub fn show(line: impl AsRef<str>) {
    to_quiet_log(line.as_ref());
    println!("{}", line.as_ref());
}

/// Prints the one line that says what the next step does.
pub fn say(what: impl AsRef<str>) {
    note(format!("==> {}", what.as_ref()));
}

/// Runs `f` as a named step: prints what it does, then how long it took.
pub fn step<T>(what: impl AsRef<str>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let what = what.as_ref();
    say(what);
    let start = Instant::now();
    let result = f();
    let status = if result.is_ok() { "done" } else { "FAILED" };
    note(format!(
        "    {status} in {} ({what})",
        fmt_duration(start.elapsed())
    ));
    result
}

/// One row of the stage table: name, wall time, whether it succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// What ran, e.g. `fetch kernel 6.12`.
    pub name: String,
    /// How long it took.
    pub took: Duration,
    /// Whether it succeeded.
    pub ok: bool,
}

static STAGES: Mutex<Vec<Stage>> = Mutex::new(Vec::new());

/// A [`step`] that also goes into the stage table of the run.
pub fn stage<T>(what: impl AsRef<str>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let result = step(what.as_ref(), f);
    record_stage(what.as_ref(), start.elapsed(), result.is_ok());
    result
}

/// Adds a row to the stage table.
pub fn record_stage(name: &str, took: Duration, ok: bool) {
    if let Ok(mut s) = STAGES.lock() {
        s.push(Stage {
            name: name.to_string(),
            took,
            ok,
        });
    }
}

/// The stage table so far.
pub fn stages() -> Vec<Stage> {
    STAGES.lock().map(|s| s.clone()).unwrap_or_default()
}

/// `K2U_TIMEOUT_SCALE` (a whole number, default 1): multiplies every
/// timeout of the harness, the host's and the guest's.
pub fn timeout_scale() -> u32 {
    parse_scale(std::env::var("K2U_TIMEOUT_SCALE").ok().as_deref())
}

/// Pure part of [`timeout_scale`]: missing, bad or zero values give 1.
pub fn parse_scale(value: Option<&str>) -> u32 {
    value
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}

/// `d` times [`timeout_scale`].
pub fn scaled(d: Duration) -> Duration {
    d * timeout_scale()
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
    // An inline script (`sh -c '...'`) is shown as `<script>`.
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.contains('\n') {
            "<script>".to_string()
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Runs `cmd` with inherited stdio and fails unless it exits with 0. In
/// quiet mode its output goes to the log instead.
pub fn run(cmd: &mut Command) -> Result<()> {
    let desc = describe(cmd);
    if quiet_log().is_some() {
        run_timeout(cmd, Duration::from_secs(24 * 3600)).map(|_| ())?;
        return Ok(());
    }
    let status = cmd.status().with_context(|| {
        format!("could not start `{desc}` (is it installed? try `cargo xtask deps`)")
    })?;
    if !status.success() {
        bail!("`{desc}` failed with {status}");
    }
    Ok(())
}

/// How many output lines a failed command shows.
const TAIL_LINES: usize = 30;

/// Runs `cmd` with stdin closed, its stdout and stderr echoed line by line
/// as chatter ([`note`]) and collected; kills it and everything it started
/// after `limit` (already scaled by the caller if it should be). Fails
/// unless it exits with 0; the error carries the last lines it printed.
pub fn run_timeout(cmd: &mut Command, limit: Duration) -> Result<String> {
    run_timeout_with(cmd, limit, true)
}

/// [`run_timeout`], without echoing (the caller shows what matters).
pub fn run_timeout_quiet(cmd: &mut Command, limit: Duration) -> Result<String> {
    run_timeout_with(cmd, limit, false)
}

fn run_timeout_with(cmd: &mut Command, limit: Duration, echo: bool) -> Result<String> {
    let desc = describe(cmd);
    let ran = collect(cmd, limit, echo)?;
    let last = ran.tail.iter().cloned().collect::<Vec<_>>().join("\n");
    if ran.timed_out {
        bail!(
            "`{desc}` did not finish within {}s and was killed (K2U_TIMEOUT_SCALE={} multiplies \
             every timeout); its last lines:\n{last}",
            limit.as_secs(),
            timeout_scale()
        );
    }
    if !ran.status.success() {
        bail!(
            "`{desc}` failed with {}; its last lines:\n{last}",
            ran.status
        );
    }
    Ok(ran.text)
}

/// Runs `cmd` with stdin closed and returns its status and its stdout and
/// stderr interleaved (in `stdout`) like `Command::output`; kills it and
/// everything it started after `limit` times `K2U_TIMEOUT_SCALE`, which is
/// an error.
pub fn output_timeout(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let limit = scaled(limit);
    let desc = describe(cmd);
    let ran = collect(cmd, limit, false)?;
    if ran.timed_out {
        bail!(
            "`{desc}` did not finish within {}s and was killed (K2U_TIMEOUT_SCALE={} multiplies \
             every timeout); its output:\n{}",
            limit.as_secs(),
            timeout_scale(),
            ran.text
        );
    }
    Ok(Output {
        status: ran.status,
        stdout: ran.text.into_bytes(),
        stderr: Vec::new(),
    })
}

/// What [`watch`] saw.
pub struct Ran {
    /// How the command ended (killed, after a timeout).
    pub status: std::process::ExitStatus,
    /// All its output lines, if [`Watch::keep_text`].
    pub text: String,
    /// Its last [`Watch::tail_lines`] lines.
    pub tail: VecDeque<String>,
    /// Killed at the time limit.
    pub timed_out: bool,
}

/// A periodic callback of [`watch`]: lines so far, the last one.
pub type Tick<'a> = (Duration, &'a mut dyn FnMut(u64, Option<&str>));

/// What [`watch`] does with a command's output.
pub struct Watch<'a> {
    /// Called with each stdout or stderr line as it arrives.
    pub on_line: &'a mut dyn FnMut(&str),
    /// Called every so often while the command runs.
    pub tick: Option<Tick<'a>>,
    /// Keep the whole output in [`Ran::text`] (else only the tail).
    pub keep_text: bool,
    /// Lines kept in [`Ran::tail`].
    pub tail_lines: usize,
}

/// Runs `cmd`, collecting its stdout and stderr lines in arrival order
/// (echoed as chatter if `echo`), and kills its process tree at `limit`.
fn collect(cmd: &mut Command, limit: Duration, echo: bool) -> Result<Ran> {
    let mut on_line = |line: &str| {
        if echo {
            note(format!("    | {line}"));
        }
    };
    watch(
        cmd,
        limit,
        Watch {
            on_line: &mut on_line,
            tick: None,
            keep_text: true,
            tail_lines: TAIL_LINES,
        },
    )
}

/// Runs `cmd` with stdin closed, handing its stdout and stderr lines in
/// arrival order to `w`, and kills its process tree at `limit` (not
/// scaled here). Only fails if it cannot be started or waited for.
pub fn watch(cmd: &mut Command, limit: Duration, w: Watch<'_>) -> Result<Ran> {
    let Watch {
        on_line,
        mut tick,
        keep_text,
        tail_lines,
    } = w;
    let desc = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("could not start `{desc}` (is it installed? try `cargo xtask deps`)")
        })?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            crate::qemu::pump(out, |l| tx.send(l).is_ok())
        }));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            crate::qemu::pump(err, |l| tx.send(l).is_ok())
        }));
    }
    drop(tx);
    let start = Instant::now();
    let deadline = start + limit;
    let mut next_tick = tick.as_ref().map(|(every, _)| start + *every);
    let mut text = String::new();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut lines = 0u64;
    let mut timed_out = false;
    loop {
        let wake = next_tick.map_or(deadline, |t| t.min(deadline));
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                lines += 1;
                on_line(&line);
                if keep_text {
                    text.push_str(&line);
                    text.push('\n');
                }
                tail.push_back(line);
                if tail.len() > tail_lines {
                    tail.pop_front();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            kill_tree(child.id());
            break;
        }
        if let (Some(at), Some((every, f))) = (next_tick.as_mut(), tick.as_mut()) {
            if now >= *at {
                f(lines, tail.back().map(String::as_str));
                *at += *every;
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("could not wait for `{desc}`"))?;
    for r in readers {
        // A reader only panics on a bug; the output is in already.
        let _ = r.join();
    }
    Ok(Ran {
        status,
        text,
        tail,
        timed_out,
    })
}

/// The pids of `pid`'s descendants, from /proc (parents before children).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            if let Some(pp) = parent_in_stat(&stat) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out.remove(0);
    out
}

/// The parent pid in a `/proc/<pid>/stat` line (after the `(comm)` field,
/// which may contain spaces and parentheses).
pub fn parent_in_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// SIGKILLs `pid` and everything it started.
pub fn kill_tree(pid: u32) {
    let mut all = vec![pid];
    all.extend(descendants(pid));
    for p in all {
        let Ok(p) = i32::try_from(p) else { continue };
        if let Some(p) = rustix::process::Pid::from_raw(p) {
            // Processes that already exited make kill fail; that is fine.
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
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
    rustix::process::geteuid().is_root()
}

/// The user who ran `sudo`, when we run as root through it
/// (`SUDO_UID`, `SUDO_GID`).
pub fn sudo_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    parse_sudo_ids(
        std::env::var("SUDO_UID").ok().as_deref(),
        std::env::var("SUDO_GID").ok().as_deref(),
    )
}

/// Pure part of [`sudo_user`]: both set, numeric, and not root.
pub fn parse_sudo_ids(uid: Option<&str>, gid: Option<&str>) -> Option<(u32, u32)> {
    let uid: u32 = uid?.trim().parse().ok()?;
    let gid: u32 = gid?.trim().parse().ok()?;
    (uid != 0).then_some((uid, gid))
}

/// Gives every root-owned file under `dir` (and `dir`) to `owner`: what a
/// `sudo cargo xtask deps` created in a user's checkout or cache. Files of
/// other owners are left alone. Returns how many were changed.
pub fn chown_root_files(dir: &Path, owner: (u32, u32)) -> Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let mut changed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if meta.uid() == 0 {
            std::os::unix::fs::lchown(&path, Some(owner.0), Some(owner.1))
                .with_context(|| format!("could not chown {}", path.display()))?;
            changed += 1;
        }
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path)
                .with_context(|| format!("could not list {}", path.display()))?;
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    Ok(changed)
}

/// Whether `path` belongs to `uid`.
pub fn owned_by(path: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.uid() == uid)
}

/// Refuses to run as root in a checkout that belongs to someone else
/// (typically `sudo cargo xtask test`): everything it wrote to target/ and
/// the cache would be root's. Only `deps` needs root, and it gives what it
/// creates back to the sudo user. `KERN2USR_ALLOW_ROOT=1` overrides.
pub fn refuse_foreign_root(subcommand: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !is_root() || std::env::var("KERN2USR_ALLOW_ROOT").is_ok_and(|v| v == "1") {
        return Ok(());
    }
    let owner = std::fs::metadata(repo_root()).map(|m| m.uid()).unwrap_or(0);
    let sudo = sudo_user();
    if owner == 0 && sudo.is_none() {
        return Ok(());
    }
    let who = match sudo {
        Some((uid, _)) => format!(
            "through sudo (SUDO_USER={}, uid {uid})",
            std::env::var("SUDO_USER").unwrap_or_else(|_| "?".to_string())
        ),
        None => format!("in a checkout owned by uid {owner}"),
    };
    bail!(
        "`cargo xtask {subcommand}` runs as root {who}: it would leave root-owned files in \
         target/ and the cache. Only `sudo cargo xtask deps` needs root; run everything else \
         as yourself (set KERN2USR_ALLOW_ROOT=1 to run as root anyway)"
    )
}

/// An exclusive lock on a directory (flock on `<dir>/.k2u-lock`), held
/// until dropped. The file names its holder for whoever has to wait.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, waiting (with one message naming the
    /// holder) while another run holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<DirLock> {
        use rustix::fs::{flock, FlockOperation};
        create_dir(dir)?;
        let path = dir.join(".k2u-lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("could not open the lock file {}", path.display()))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            show(format!(
                "==> waiting for the lock held by {} on {} ({what})",
                if holder.is_empty() {
                    "another run"
                } else {
                    holder
                },
                dir.display()
            ));
            let start = Instant::now();
            flock(&file, FlockOperation::LockExclusive)
                .map_err(|e| anyhow!("could not lock {}: {e}", path.display()))?;
            note(format!(
                "    got the lock on {} after {}",
                dir.display(),
                fmt_duration(start.elapsed())
            ));
        }
        let me = format!("pid {} ({})", std::process::id(), invocation());
        file.set_len(0)
            .and_then(|()| {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(0))?;
                file.write_all(me.as_bytes())
            })
            .with_context(|| format!("could not write {}", path.display()))?;
        Ok(DirLock { _file: file })
    }
}

/// `cargo xtask <args>`, for lock messages.
pub fn invocation() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
        .trim_end()
        .to_string()
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
    fn scale_parsing() {
        assert_eq!(parse_scale(None), 1);
        assert_eq!(parse_scale(Some("3")), 3);
        assert_eq!(parse_scale(Some(" 4 ")), 4);
        assert_eq!(parse_scale(Some("0")), 1);
        assert_eq!(parse_scale(Some("1.5")), 1);
        assert_eq!(parse_scale(Some("")), 1);
    }

    #[test]
    fn sudo_ids() {
        assert_eq!(
            parse_sudo_ids(Some("1000"), Some("1000")),
            Some((1000, 1000))
        );
        assert_eq!(parse_sudo_ids(Some("0"), Some("0")), None);
        assert_eq!(parse_sudo_ids(None, Some("1000")), None);
        assert_eq!(parse_sudo_ids(Some("x"), Some("1000")), None);
    }

    #[test]
    fn stat_parent() {
        assert_eq!(
            parent_in_stat("1234 (make) S 1200 1234 1200 0 -1"),
            Some(1200)
        );
        assert_eq!(parent_in_stat("99 (a) b (c)) R 7 99 7 0 -1"), Some(7));
        assert_eq!(parent_in_stat("garbage"), None);
    }

    /// Every line reaches the callback in order, the tail keeps the last
    /// ones, text is only kept when asked, and the tick runs while the
    /// command does (its `sleep` outlasts several tick periods).
    #[test]
    fn watch_hands_over_lines_and_ticks() -> Result<()> {
        let mut seen = Vec::new();
        let mut ticks = Vec::new();
        let mut on_line = |l: &str| seen.push(l.to_string());
        let mut on_tick = |n: u64, last: Option<&str>| ticks.push((n, last.map(str::to_owned)));
        let ran = watch(
            Command::new("sh").args(["-c", "echo a; echo b; echo c; sleep 0.5; exit 3"]),
            Duration::from_secs(60),
            Watch {
                on_line: &mut on_line,
                tick: Some((Duration::from_millis(50), &mut on_tick)),
                keep_text: false,
                tail_lines: 2,
            },
        )?;
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(ran.status.code(), Some(3));
        assert!(!ran.timed_out);
        assert_eq!(ran.tail, ["b", "c"]);
        assert!(ran.text.is_empty());
        assert!(!ticks.is_empty(), "no tick in 0.5 s at 50 ms");
        assert!(ticks.windows(2).all(|w| w[0].0 <= w[1].0));
        Ok(())
    }

    #[test]
    fn timeout_kills_the_whole_tree() -> Result<()> {
        // The child starts a grandchild that holds the pipe open; both must
        // go, or run_timeout would hang until the sleep ends.
        let start = Instant::now();
        let err = run_timeout_quiet(
            Command::new("sh").args(["-c", "echo started; sleep 300 & sleep 300"]),
            Duration::from_millis(500),
        )
        .expect_err("must time out");
        assert!(start.elapsed() < Duration::from_secs(60));
        let msg = format!("{err:#}");
        assert!(msg.contains("did not finish within"), "{msg}");
        assert!(msg.contains("started"), "{msg}");
        Ok(())
    }

    #[test]
    fn failures_carry_the_last_lines() {
        let err = run_timeout_quiet(
            Command::new("sh").args(["-c", "echo one; echo two >&2; exit 3"]),
            Duration::from_secs(60),
        )
        .expect_err("exit 3");
        let msg = format!("{err:#}");
        assert!(msg.contains("one") && msg.contains("two"), "{msg}");
        let ok = run_timeout_quiet(
            Command::new("sh").args(["-c", "echo fine"]),
            Duration::from_secs(60),
        )
        .expect("exit 0");
        assert_eq!(ok, "fine\n");
    }

    #[test]
    fn second_lock_waits_for_the_first() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("k2u-lock-test-{}", std::process::id()));
        let first = DirLock::acquire(&dir, "test")?;
        let text = std::fs::read_to_string(dir.join(".k2u-lock"))?;
        assert!(
            text.starts_with(&format!("pid {} (", std::process::id())),
            "{text}"
        );
        let (tx, rx) = mpsc::channel();
        let d2 = dir.clone();
        let waiter = std::thread::spawn(move || {
            // flock locks belong to the open file description: a second
            // open in the same process conflicts like another process.
            let got = DirLock::acquire(&d2, "test").map(|_| ());
            let _ = tx.send(got.is_ok());
        });
        // The waiter must still be blocked while we hold the lock.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        drop(first);
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(true));
        let _ = waiter.join();
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn chown_gives_root_files_back() -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        if !is_root() {
            return Ok(());
        }
        let dir = std::env::temp_dir().join(format!("k2u-chown-test-{}", std::process::id()));
        create_dir(&dir.join("a/b"))?;
        std::fs::write(dir.join("a/b/f"), "x")?;
        let n = chown_root_files(&dir, (65534, 65534))?;
        assert_eq!(n, 4);
        assert_eq!(std::fs::metadata(dir.join("a/b/f"))?.uid(), 65534);
        assert_eq!(chown_root_files(&dir, (65534, 65534))?, 0);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05.0s");
    }
}
