//! Booting a kernel and an initramfs in QEMU (KVM when a short probe boot
//! of the same kernel works there, TCG otherwise), streaming the serial
//! console, enforcing a timeout and judging the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report;
use crate::util::{
    create_dir, describe, fmt_duration, note, say, scaled, show, target_dir, timeout_scale,
    timestamp,
};

/// How QEMU runs the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accel {
    /// `-accel kvm -cpu host`.
    Kvm,
    /// `-accel tcg -cpu max` (emulation).
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub fn name(&self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the console shows on the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// Every console line, prefixed with the run's name.
    All,
    /// Only what the guest command prints (no kernel messages, no dmesg
    /// dump): for `cargo xtask demo`.
    Guest,
}

/// The probe result per kernel image, for this run (in front of the
/// per-boot [`ProbeCache`]).
static PROBED: Mutex<Vec<(PathBuf, Accel, String)>> = Mutex::new(Vec::new());

/// Time limit of the KVM probe boot (times `K2U_TIMEOUT_SCALE`).
const PROBE_LIMIT: Duration = Duration::from_secs(60);
/// The probe also gives up when the console is silent this long (times
/// `K2U_TIMEOUT_SCALE`): under KVM a kernel prints its first lines and
/// reaches /init within seconds, so silence means it hangs.
const PROBE_SILENCE: Duration = Duration::from_secs(10);
/// Printed by /init once userspace runs: the probe's success marker.
const PROBE_MARKER: &str = "K2U-RUN";

/// KVM if `K2U_ACCEL` says so or a probe boot of `kernel` reaches /init
/// under KVM; TCG otherwise. Probed once per kernel image and host boot
/// ([`ProbeCache`]); the choice and its reason are printed.
pub fn accel_for(kernel: &crate::kernels::Unpacked) -> Accel {
    let key = kernel.vmlinuz.clone();
    if let Ok(p) = PROBED.lock() {
        if let Some((_, a, _)) = p.iter().find(|(k, _, _)| *k == key) {
            return a.clone();
        }
    }
    let start = Instant::now();
    let (accel, why) = choose_accel(kernel);
    crate::util::record_stage(
        &format!("kvm probe for {}", kernel.kernel.series),
        start.elapsed(),
        true,
    );
    show(format!(
        "==> accel for {}: {} ({why})",
        kernel.kernel.release(),
        accel.name().to_uppercase()
    ));
    if let Ok(mut p) = PROBED.lock() {
        p.push((key, accel.clone(), why));
    }
    accel
}

fn choose_accel(kernel: &crate::kernels::Unpacked) -> (Accel, String) {
    match std::env::var("K2U_ACCEL").ok().as_deref().map(str::trim) {
        Some("tcg") => return (Accel::Tcg, "K2U_ACCEL=tcg".to_string()),
        Some("kvm") => return (Accel::Kvm, "K2U_ACCEL=kvm, not probed".to_string()),
        _ => {}
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return (
            Accel::Tcg,
            format!("/dev/kvm cannot be opened: {e}; add yourself to group kvm for KVM"),
        );
    }
    let cache = ProbeCache::here();
    let key = probe_key(&kernel.vmlinuz);
    if let Some((accel, why)) = cache.as_ref().and_then(|c| c.lookup(&key)) {
        return (accel, format!("{why}; cached for this host boot"));
    }
    let (accel, why) = match probe_kvm(kernel) {
        Ok(took) => (
            Accel::Kvm,
            format!(
                "a probe boot reached /init under KVM in {}",
                fmt_duration(took)
            ),
        ),
        Err(e) => (
            Accel::Tcg,
            format!("KVM probe failed: {e:#}; set K2U_ACCEL=tcg to skip the probe"),
        ),
    };
    if let Some(c) = &cache {
        // Without the cache the next run probes again: not worth failing.
        if let Err(e) = c.store(&key, &accel, &why) {
            say(format!("kvm probe: result not cached: {e:#}"));
        }
    }
    (accel, why)
}

/// The KVM probe's results for this host boot: `<cache>/kvm-probe/<boot
/// id>` (from /proc/sys/kernel/random/boot_id), one `key<TAB>accel<TAB>
/// reason` line per kernel image. Whether KVM works changes with a reboot
/// (modules, nested virtualisation settings), rarely within one; files of
/// earlier boots are removed when a result is stored.
pub struct ProbeCache {
    dir: PathBuf,
    boot_id: String,
}

/// The file of this host boot's id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

impl ProbeCache {
    /// The cache of this boot, if the boot id and cache dir are known.
    fn here() -> Option<ProbeCache> {
        let boot_id = std::fs::read_to_string(BOOT_ID).ok()?;
        let dir = crate::cache::cache_dir().ok()?.join("kvm-probe");
        ProbeCache::new(dir, &boot_id)
    }

    /// The cache in `dir` for boot `boot_id` (`None` if the id is not a
    /// plain file name).
    pub fn new(dir: PathBuf, boot_id: &str) -> Option<ProbeCache> {
        let boot_id = boot_id.trim().to_string();
        let plain = !boot_id.is_empty()
            && boot_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        plain.then_some(ProbeCache { dir, boot_id })
    }

    fn file(&self) -> PathBuf {
        self.dir.join(&self.boot_id)
    }

    /// The stored result for `key`, if any (the last one wins).
    pub fn lookup(&self, key: &str) -> Option<(Accel, String)> {
        let text = std::fs::read_to_string(self.file()).ok()?;
        parse_probe_lines(&text, key)
    }

    /// Stores a result for `key` and removes earlier boots' files.
    pub fn store(&self, key: &str, accel: &Accel, why: &str) -> Result<()> {
        create_dir(&self.dir)?;
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy() != self.boot_id {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let line = probe_line(key, accel, why);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file())
            .with_context(|| format!("could not open {}", self.file().display()))?;
        f.write_all(line.as_bytes())
            .with_context(|| format!("could not write {}", self.file().display()))
    }
}

/// A kernel image's cache key: its path, size and modification time (a
/// rebuilt image is probed again).
pub fn probe_key(vmlinuz: &Path) -> String {
    let (len, mtime) = std::fs::metadata(vmlinuz).map_or((0, 0), |m| {
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        (m.len(), mtime)
    });
    format!("{} {len} {mtime}", vmlinuz.display()).replace(['\t', '\n'], " ")
}

/// One line of the probe cache.
fn probe_line(key: &str, accel: &Accel, why: &str) -> String {
    let why = why.replace(['\t', '\n'], " ");
    format!("{key}\t{}\t{why}\n", accel.name())
}

/// The last result for `key` in the cache's text.
fn parse_probe_lines(text: &str, key: &str) -> Option<(Accel, String)> {
    text.lines().rev().find_map(|line| {
        let mut parts = line.splitn(3, '\t');
        if parts.next()? != key {
            return None;
        }
        let accel = match parts.next()? {
            "kvm" => Accel::Kvm,
            "tcg" => Accel::Tcg,
            _ => return None,
        };
        Some((accel, parts.next().unwrap_or("").to_string()))
    })
}

/// Boots `kernel` under KVM with a module-less, binary-less initramfs
/// until /init prints its first line.
fn probe_kvm(kernel: &crate::kernels::Unpacked) -> Result<Duration> {
    let contents = crate::initramfs::Contents {
        module: None,
        user: None,
        run: "true",
        extra_modules: &[],
    };
    let image = crate::initramfs::build("kvm-probe", &contents)?;
    let boot = Boot {
        name: "kvm-probe",
        vmlinuz: &kernel.vmlinuz,
        initrd: &image,
        timeout: scaled(PROBE_LIMIT),
        extra_cmdline: kernel.kernel.series.extra_cmdline(),
        expect_kmemleak: false,
        accel: Accel::Kvm,
        echo: Echo::Guest,
        extra_args: Vec::new(),
    };
    let mut cmd = command(&boot);
    say(format!("kvm probe: {}", describe(&cmd)));
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            pump(pipe, |l| tx.send(l).is_ok())
        }));
    }
    drop(tx);
    let deadline = start + boot.timeout;
    let silence = scaled(PROBE_SILENCE);
    let mut last = Vec::new();
    let result = loop {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(silence);
        match rx.recv_timeout(wait) {
            Ok(line) if line.trim_start().starts_with(PROBE_MARKER) => break Ok(start.elapsed()),
            // QEMU stops the guest and dumps its registers: no use waiting.
            Ok(line) if line.contains("KVM internal error") || line.contains("kvm run failed") => {
                break Err(anyhow::anyhow!(
                    "qemu: {} after {}",
                    line.trim(),
                    fmt_duration(start.elapsed())
                ))
            }
            Ok(line) => {
                last.push(line);
                if last.len() > 3 {
                    last.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let why = if Instant::now() >= deadline {
                    format!("no {PROBE_MARKER} line within {}s", boot.timeout.as_secs())
                } else {
                    format!(
                        "the console was silent for {}s after {}",
                        silence.as_secs(),
                        fmt_duration(start.elapsed())
                    )
                };
                let seen = if last.is_empty() {
                    "nothing".to_string()
                } else {
                    last.join(" / ")
                };
                break Err(anyhow::anyhow!("{why} (last console lines: {seen})"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!(
                    "qemu exited before /init ran: {}",
                    last.join(" / ")
                ))
            }
        }
    };
    kill(&mut child);
    for r in readers {
        // Only a bug makes a reader panic.
        let _ = r.join();
    }
    result
}

/// What to boot.
pub struct Boot<'a> {
    /// Short name for the log file and the line prefix (`6.12`).
    pub name: &'a str,
    /// The kernel image.
    pub vmlinuz: &'a Path,
    /// The initramfs.
    pub initrd: &'a Path,
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Appended to the kernel command line (may be empty).
    pub extra_cmdline: &'a str,
    /// The kernel has kmemleak: the guest's report must be there (and empty).
    pub expect_kmemleak: bool,
    /// KVM or TCG.
    pub accel: Accel,
    /// What the terminal shows of the console.
    pub echo: Echo,
    /// More QEMU arguments (e.g. a `-drive`), appended last.
    pub extra_args: Vec<String>,
}

impl<'a> Boot<'a> {
    /// A boot of `kernel` for `series` with that series' command line and
    /// kmemleak expectation.
    pub fn of(
        name: &'a str,
        series: crate::kernels::Series,
        kernel: &'a crate::kernels::Unpacked,
        initrd: &'a Path,
        timeout: Duration,
    ) -> Self {
        Boot {
            name,
            vmlinuz: &kernel.vmlinuz,
            initrd,
            // Like every timeout of the harness, times K2U_TIMEOUT_SCALE.
            timeout: scaled(timeout),
            extra_cmdline: series.extra_cmdline(),
            expect_kmemleak: series.built_from_source(),
            accel: accel_for(kernel),
            echo: Echo::All,
            extra_args: Vec::new(),
        }
    }
}

/// What came out of a boot.
pub struct Outcome {
    /// Every console line.
    pub console: Vec<String>,
    /// Where the console was saved.
    pub log: PathBuf,
    /// Why the run failed, if it did.
    pub failure: Option<String>,
}

/// One event from the reader threads.
enum Event {
    /// A console line (QEMU's stdout, the guest's serial port).
    Console(String),
    /// A line QEMU printed on stderr.
    Qemu(String),
}

/// QEMU's command line. No display, no monitor, the serial port on stdio.
pub fn command(boot: &Boot<'_>) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    let cpu = match boot.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    };
    c.args([
        "-accel",
        boot.accel.name(),
        "-cpu",
        cpu,
        "-m",
        "512",
        "-smp",
        "2",
    ])
    .args([
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
    ])
    .arg("-no-reboot")
    .arg("-kernel")
    .arg(boot.vmlinuz)
    .arg("-initrd")
    .arg(boot.initrd)
    .arg("-append")
    .arg(cmdline(boot.extra_cmdline, timeout_scale()))
    .args(&boot.extra_args);
    c
}

/// The kernel command line: the console on the serial port, no reboot on
/// panic (QEMU exits instead), and `extra`. A `K2U_TIMEOUT_SCALE` above 1
/// goes on it as `K2U_TIMEOUT_SCALE=<n>`: the kernel hands parameters it
/// does not know that contain `=` to /init as environment variables, so
/// the guest suites read it with `std::env::var` like on the host.
pub fn cmdline(extra: &str, scale: u32) -> String {
    let mut line = "console=ttyS0 panic=-1 loglevel=5".to_string();
    if !extra.trim().is_empty() {
        line.push(' ');
        line.push_str(extra.trim());
    }
    if scale > 1 {
        line.push_str(&format!(" K2U_TIMEOUT_SCALE={scale}"));
    }
    line
}

/// Whether a console line is a kernel message (`[    3.327425] ...`).
pub fn is_kernel_line(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix('[') else {
        return false;
    };
    rest.split_once(']').is_some_and(|(t, _)| {
        let t = t.trim();
        !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.')
    })
}

/// What [`Echo::Guest`] shows: the guest command's own lines, between
/// /init's `K2U-RUN` and `K2U-EXIT`, without kernel messages.
#[derive(Default)]
pub struct GuestFilter {
    inside: bool,
}

impl GuestFilter {
    /// Whether to show `line`.
    pub fn show(&mut self, line: &str) -> bool {
        let t = line.trim_start();
        if t.starts_with("K2U-RUN") {
            self.inside = true;
            return false;
        }
        if t.starts_with(crate::initramfs::EXIT_MARKER) {
            self.inside = false;
            return false;
        }
        self.inside && !is_kernel_line(line)
    }
}

/// Splits a byte stream into lines (lossy UTF-8, `\r` dropped) and sends
/// each through `send`; the last partial line is sent at EOF.
pub fn pump(reader: impl Read, send: impl Fn(String) -> bool) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                if !send(line) {
                    return;
                }
            }
        }
    }
}

fn kill(child: &mut Child) {
    // Already-exited children make kill() fail; that is fine.
    let _ = child.kill();
    let _ = child.wait();
}

/// Boots, streams the console with prefix `<name>| `, saves it, and
/// judges the run (timeout, `K2U-EXIT 0`, kernel reports).
pub fn boot(boot: &Boot<'_>) -> Result<Outcome> {
    let logs = target_dir().join("vm-logs");
    create_dir(&logs)?;
    let file_name = boot.name.replace(['@', '/', ' '], "-");
    let log_path = logs.join(format!("{file_name}-{}.log", timestamp()));
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("could not create {}", log_path.display()))?;
    let mut cmd = command(boot);
    let mut filter = GuestFilter::default();
    say(format!(
        "vm {}: {} (timeout {}s)",
        boot.name,
        describe(&cmd),
        boot.timeout.as_secs()
    ));
    say(format!(
        "vm {}: console log in {}",
        boot.name,
        log_path.display()
    ));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start qemu-system-x86_64; run `cargo xtask deps`")?;
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            pump(out, |l| tx.send(Event::Console(l)).is_ok())
        }));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            pump(err, |l| tx.send(Event::Qemu(l)).is_ok())
        }));
    }
    drop(tx);

    let start = Instant::now();
    let deadline = start + boot.timeout;
    let mut console = Vec::new();
    let mut qemu_errors = Vec::new();
    let mut timed_out = false;
    let stdout = std::io::stdout();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Console(line)) => {
                // A failing log write must not hide the run's result.
                let _ = writeln!(log, "{line}");
                match boot.echo {
                    Echo::All => note(format!("{}| {line}", boot.name)),
                    Echo::Guest if filter.show(&line) => {
                        let _ = writeln!(stdout.lock(), "{line}");
                    }
                    Echo::Guest => {}
                }
                console.push(line);
            }
            Ok(Event::Qemu(line)) => {
                let _ = writeln!(log, "qemu: {line}");
                note(format!("{}| qemu: {line}", boot.name));
                qemu_errors.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                kill(&mut child);
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Both pipes are closed: QEMU has exited or is about to.
    let status = child.wait().context("could not wait for qemu")?;
    for r in readers {
        // A reader thread only panics on a bug; the console is already in.
        let _ = r.join();
    }
    let elapsed = start.elapsed();
    say(format!(
        "vm {}: qemu finished after {} ({status})",
        boot.name,
        fmt_duration(elapsed)
    ));

    let mut problems = Vec::new();
    if timed_out {
        problems.push(format!(
            "timed out after {}s: qemu killed (raise --timeout if the guest was still making progress)",
            boot.timeout.as_secs()
        ));
    } else if !status.success() {
        problems.push(format!(
            "qemu exited with {status}: {}",
            qemu_errors.join(" / ")
        ));
    }
    match report::exit_status(&console) {
        Some(0) => {}
        Some(rc) => problems.push(format!(
            "the guest command exited with {rc} (K2U-EXIT {rc})"
        )),
        None => problems.push("no K2U-EXIT line: the guest did not finish its command".to_string()),
    }
    if !timed_out && report::exit_status(&console).is_some() && !report::has_dmesg_dump(&console) {
        problems.push("the dmesg dump is incomplete".to_string());
    }
    match report::kmemleak_report(&console) {
        Some(leaks) if !leaks.is_empty() => {
            note(format!("vm {}: kmemleak reports:", boot.name));
            for l in &leaks {
                note(format!("    {l}"));
            }
            problems.push(format!(
                "kmemleak reported {} line(s), first: {}",
                leaks.len(),
                leaks[0].trim()
            ));
        }
        Some(_) => say(format!("vm {}: kmemleak: no leaks", boot.name)),
        None if boot.expect_kmemleak && report::exit_status(&console).is_some() => problems.push(
            "no complete K2U-KMEMLEAK-BEGIN/END report although the kernel has kmemleak"
                .to_string(),
        ),
        None => {}
    }
    let reports = report::kernel_reports(&console);
    if !reports.is_empty() {
        note(format!(
            "vm {}: kernel problem report(s) on the console:",
            boot.name
        ));
        for r in &reports {
            note(format!("    {r}"));
        }
        problems.push(format!(
            "{} kernel problem report line(s), first: {}",
            reports.len(),
            reports[0].trim()
        ));
    }
    let failure = if problems.is_empty() {
        None
    } else {
        Some(format!(
            "{} (console in {})",
            problems.join("; "),
            log_path.display()
        ))
    };
    Ok(Outcome {
        console,
        log: log_path,
        failure,
    })
}

/// Fails with the outcome's reason, if any.
pub fn check(name: &str, outcome: &Outcome) -> Result<()> {
    match &outcome.failure {
        None => {
            say(format!(
                "vm {name}: OK (console in {})",
                outcome.log.display()
            ));
            Ok(())
        }
        Some(why) => bail!("VM run on {name} failed: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_cache_is_per_boot_and_per_image() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("k2u-probe-cache-{}", std::process::id()));
        let old = ProbeCache::new(dir.clone(), "0000-old\n").context("plain id")?;
        old.store("/k/vmlinuz 10 20", &Accel::Kvm, "old boot")?;
        assert!(old.lookup("/k/vmlinuz 10 20").is_some());
        let now = ProbeCache::new(dir.clone(), "1111-now").context("plain id")?;
        assert_eq!(
            now.lookup("/k/vmlinuz 10 20"),
            None,
            "another boot probes again"
        );
        now.store(
            "/k/vmlinuz 10 20",
            &Accel::Tcg,
            "KVM probe failed:\tno /init",
        )?;
        now.store("/k/other 1 2", &Accel::Kvm, "reached /init")?;
        assert_eq!(
            now.lookup("/k/vmlinuz 10 20"),
            Some((Accel::Tcg, "KVM probe failed: no /init".to_string()))
        );
        assert_eq!(now.lookup("/k/other 1 2").map(|(a, _)| a), Some(Accel::Kvm));
        assert_eq!(
            now.lookup("/k/vmlinuz 10 21"),
            None,
            "a rebuilt image probes again"
        );
        assert!(!dir.join("0000-old").exists(), "earlier boots are pruned");
        assert!(ProbeCache::new(dir.clone(), "../etc").is_none());
        assert!(ProbeCache::new(dir.clone(), "").is_none());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn probe_lines_round_trip_and_the_last_wins() {
        let text = format!(
            "{}{}garbage\n{}",
            probe_line("k", &Accel::Kvm, "first"),
            probe_line("other", &Accel::Tcg, "x"),
            probe_line("k", &Accel::Tcg, "second")
        );
        assert_eq!(
            parse_probe_lines(&text, "k"),
            Some((Accel::Tcg, "second".to_string()))
        );
        assert_eq!(parse_probe_lines(&text, "none"), None);
        assert_eq!(parse_probe_lines("k\tbogus\tx\n", "k"), None);
        let key = probe_key(Path::new("/nonexistent/vmlinuz"));
        assert_eq!(key, "/nonexistent/vmlinuz 0 0");
    }

    #[test]
    fn command_line_carries_the_timeout_scale() {
        assert_eq!(cmdline("", 1), "console=ttyS0 panic=-1 loglevel=5");
        assert_eq!(
            cmdline("tsc=reliable", 3),
            "console=ttyS0 panic=-1 loglevel=5 tsc=reliable K2U_TIMEOUT_SCALE=3"
        );
    }

    #[test]
    fn demo_shows_only_the_guest_command() {
        let console = [
            "[    0.000000] Linux version 6.12.117+deb12-amd64",
            "K2U-RUN kern2usr-vmtest demo",
            "== Step 1: Go to project directory ==",
            "[    3.327425] kern2usr: loading out-of-tree module taints kernel.",
            "kernel: module started...",
            "demo: 11 passed, 0 failed",
            "K2U-EXIT 0",
            "K2U-DMESG-BEGIN",
            "[    0.000000] Command line: console=ttyS0",
        ];
        let mut f = GuestFilter::default();
        let shown: Vec<&str> = console.iter().copied().filter(|l| f.show(l)).collect();
        assert_eq!(
            shown,
            [
                "== Step 1: Go to project directory ==",
                "kernel: module started...",
                "demo: 11 passed, 0 failed"
            ]
        );
        assert!(is_kernel_line("[ 12.5] x"));
        assert!(!is_kernel_line("[kern2usr] listener"));
        assert!(!is_kernel_line("[] x"));
    }
}
