//! Booting a kernel and an initramfs in QEMU (TCG), streaming the serial
//! console, enforcing a timeout and judging the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report;
use crate::util::{create_dir, describe, fmt_duration, say, target_dir, timestamp};

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
            timeout,
            extra_cmdline: series.extra_cmdline(),
            expect_kmemleak: series.built_from_source(),
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
    c.args(["-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "2"])
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
        .arg(cmdline(boot.extra_cmdline))
        .args(&boot.extra_args);
    c
}

/// The kernel command line: the console on the serial port, no reboot on
/// panic (QEMU exits instead), and `extra`.
pub fn cmdline(extra: &str) -> String {
    let base = "console=ttyS0 panic=-1 loglevel=5";
    match extra.trim() {
        "" => base.to_string(),
        extra => format!("{base} {extra}"),
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
                let _ = writeln!(stdout.lock(), "{}| {line}", boot.name);
                console.push(line);
            }
            Ok(Event::Qemu(line)) => {
                let _ = writeln!(log, "qemu: {line}");
                let _ = writeln!(stdout.lock(), "{}| qemu: {line}", boot.name);
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
            println!("vm {}: kmemleak reports:", boot.name);
            for l in &leaks {
                println!("    {l}");
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
        println!("vm {}: kernel problem report(s) on the console:", boot.name);
        for r in &reports {
            println!("    {r}");
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
