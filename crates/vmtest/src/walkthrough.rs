//! The seed's 11-step walkthrough, run as the `walkthrough` suite (one test
//! per step) or narrated by `demo`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{param, DEVICE_PATH, MODULE_NAME, PARAMS_DIR, SEED_DEVICE_PATH};
use kern2usr::Params;

use crate::guest::{
    self, scaled, sh_ok, timeout, CREATE_CHDEV, KERN_DIR, LISTENER_BIN, MODULE_FILE, ROOT,
};
use crate::harness::{selected, Tally};
use crate::kmsg::KernelLog;
use crate::listener::{command_line, ListenerProc};
use crate::pattern;

/// Kernel lines of one complete round, in order; the two middle lines may
/// swap (the ack can be handled before `Buffer filled` is printed).
const ROUND_HEAD: [&str; 3] = [
    "Timer handler called",
    "In handler: buffer_filled = <n>, calculation_done = <n>",
    "Start monitoring for efd2...",
];
const ROUND_MID: [&str; 2] = ["Buffer filled", "Time to copy = <n>"];
const ROUND_TAIL: &str = "Exit from __monitor_efd2";

/// Complete rounds in `lines` (kern2usr lines, prefix stripped).
pub fn complete_rounds(lines: &[&str]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i + 6 <= lines.len() {
        let w = &lines[i..i + 6];
        let head = ROUND_HEAD
            .iter()
            .zip(w)
            .all(|(p, l)| pattern::matches(p, l));
        let mid = (pattern::matches(ROUND_MID[0], w[3]) && pattern::matches(ROUND_MID[1], w[4]))
            || (pattern::matches(ROUND_MID[1], w[3]) && pattern::matches(ROUND_MID[0], w[4]));
        if head && mid && w[5] == ROUND_TAIL {
            n += 1;
            i += 6;
        } else {
            i += 1;
        }
    }
    n
}

/// `%p` values must be hashed: 8-16 hex digits, not a raw kernel address
/// (`ffff...`), never `(null)`, all different.
pub fn check_hashed_pointers(ptrs: &[String]) -> Result<()> {
    for p in ptrs {
        ensure!(p != "(null)", "a resolved pointer is (null)");
        ensure!(
            (8..=16).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit()),
            "pointer {p:?} is not a hashed %p value (8-16 hex digits)"
        );
        ensure!(
            !p.to_ascii_lowercase().starts_with("ffff"),
            "pointer {p} looks like a raw kernel address (%px or hashing disabled)"
        );
    }
    let mut sorted = ptrs.to_vec();
    sorted.sort();
    sorted.dedup();
    ensure!(
        sorted.len() == ptrs.len(),
        "resolved pointers are not all different: {ptrs:?}"
    );
    Ok(())
}

/// State carried from step to step.
pub struct Walk {
    narrate: bool,
    cwd: PathBuf,
    klog: KernelLog,
    listener: Option<ListenerProc>,
    params: Params,
    notes: Vec<String>,
}

type Step = (u8, &'static str, fn(&mut Walk) -> Result<()>);

/// The walkthrough's steps, numbered and named as in the seed.
pub const STEPS: [Step; 11] = [
    (1, "Go to project directory", step1),
    (2, "Run userspace part", step2),
    (3, "Go to kernel part directory and insert module", step3),
    (
        4,
        "Send process pid and both eventfd to kernel module parameters",
        step4,
    ),
    (5, "Create char dev", step5),
    (6, "Send command to find eventfd descriptors", step6),
    (7, "Send command to perform mmap", step7),
    (8, "Send command to start testing", step8),
    (9, "Send command to stop timer and stop testing", step9),
    (
        10,
        "Send command to stop userspace polling and exit",
        step10,
    ),
    (11, "Unload module", step11),
];

impl Walk {
    /// A walk starting in the guest's root directory's parent.
    pub fn new(narrate: bool) -> Result<Self> {
        Ok(Self {
            narrate,
            cwd: Path::new(ROOT)
                .parent()
                .unwrap_or(Path::new("/"))
                .to_owned(),
            klog: KernelLog::open_at_end()?,
            listener: None,
            params: Params::new(),
            notes: Vec::new(),
        })
    }

    fn show(&self, cmd: &str) {
        if self.narrate {
            println!("$ {cmd}");
        }
    }

    fn note(&mut self, note: String) {
        if self.narrate {
            self.notes.push(note);
        }
    }

    fn shell(&mut self, cmd: &str) -> Result<()> {
        self.show(cmd);
        sh_ok(&self.cwd, cmd).map(drop)
    }

    fn cd(&mut self, dir: &str) -> Result<()> {
        self.show(&format!("cd {dir}"));
        let to = self.cwd.join(dir);
        ensure!(to.is_dir(), "cd {dir}: {} is not a directory", to.display());
        self.cwd = to;
        Ok(())
    }

    fn listener(&mut self) -> Result<&mut ListenerProc> {
        self.listener
            .as_mut()
            .context("the listener is not running (step 2 failed)")
    }

    fn listener_pid(&mut self) -> Result<i32> {
        Ok(self.listener()?.pid().as_raw_nonzero().get())
    }

    fn echo_param(&mut self, value: &str, name: &str) -> Result<()> {
        self.shell(&format!("echo {value} > {PARAMS_DIR}/{name}"))
    }

    /// Print the listener's and the kernel's lines not shown yet.
    pub fn print_new_output(&mut self) {
        if let Some(l) = self.listener.as_mut() {
            for line in l.take_unshown() {
                println!("{line}");
            }
        }
        match self.klog.take_unshown() {
            Ok(recs) => {
                for r in recs {
                    println!("{}", r.seed_format());
                }
            }
            Err(e) => println!("(cannot read the kernel log: {e:#})"),
        }
        for n in self.notes.drain(..) {
            println!("# {n}");
        }
    }

    /// Kill a leftover listener and unload the module.
    pub fn cleanup(&mut self) -> Result<()> {
        self.listener = None;
        guest::unload_if_loaded(&mut self.klog)
    }
}

fn step1(w: &mut Walk) -> Result<()> {
    if guest::module_loaded() {
        w.note("unloaded a kern2usr module left loaded".to_owned());
        guest::rmmod(&mut w.klog).context("unloading a module left loaded")?;
    }
    let name = Path::new(ROOT)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("kern2usr");
    w.cd(name)?;
    for (path, what) in [
        (Path::new(KERN_DIR).join(MODULE_FILE), "the module"),
        (Path::new(KERN_DIR).join(CREATE_CHDEV), "the node script"),
        (PathBuf::from(LISTENER_BIN), "the listener"),
    ] {
        ensure!(
            path.exists(),
            "{what} is missing at {}: the guest image is incomplete",
            path.display()
        );
    }
    Ok(())
}

fn step2(w: &mut Walk) -> Result<()> {
    w.show(&command_line(&[]));
    let mut l = ListenerProc::spawn(&[])?;
    let pid = l.pid().as_raw_nonzero();
    l.expect_next_raw(
        &[
            &format!("Eventfd created efd=3 pid={pid}"),
            &format!("Eventfd created efd2=4 pid={pid}"),
            "Start polling...",
            "timeout in polling",
        ],
        timeout(),
    )?;
    w.listener = Some(l);
    Ok(())
}

fn step3(w: &mut Walk) -> Result<()> {
    w.cd("kern")?;
    w.shell(&format!("insmod {MODULE_FILE}"))?;
    let caps = w.klog.wait_in_order(
        &[
            "module started...",
            "Char dev with Major = <n> was created",
            "Buffer allocated",
            "Work queue created.",
        ],
        timeout(),
    )?;
    let major = caps[1].first().cloned().unwrap_or_default();
    let dev = std::fs::read_to_string(guest::sys_dev_file())
        .with_context(|| format!("reading {}", guest::sys_dev_file().display()))?;
    ensure!(
        dev.trim().split(':').next() == Some(major.as_str()),
        "the log says major {major} but {} says {}",
        guest::sys_dev_file().display(),
        dev.trim()
    );
    let mode = w.params.read(param::EVENT_MODE)?;
    w.note(format!("event_mode = {mode}"));
    Ok(())
}

fn step4(w: &mut Walk) -> Result<()> {
    let pid = w.listener_pid()?.to_string();
    w.echo_param(&pid, param::USR_PID)?;
    w.echo_param("3", param::USR_EFD)?;
    w.echo_param("4", param::USR_EFD2)?;
    for (name, want) in [
        (param::USR_PID, pid.as_str()),
        (param::USR_EFD, "3"),
        (param::USR_EFD2, "4"),
    ] {
        let got = w.params.read(name)?;
        ensure!(
            got.trim() == want,
            "{name} reads {got:?} after writing {want}"
        );
    }
    Ok(())
}

fn step5(w: &mut Walk) -> Result<()> {
    // A node from an earlier load may carry another (dynamic) major.
    let _ = std::fs::remove_file(SEED_DEVICE_PATH);
    w.shell(CREATE_CHDEV)?;
    guest::check_node()
}

fn step6(w: &mut Walk) -> Result<()> {
    let pid = w.listener_pid()?;
    w.echo_param("1", param::CUR_CMD)?;
    w.klog.wait_for(
        &format!("Received from userspace: usr_pid={pid}, efd=3, efd2=4"),
        timeout(),
    )?;
    let caps = w.klog.wait_in_order(
        &[
            "Resolved pointer to the userspace program task struct: <word>",
            "Resolved pointer to the userspace program's eventfd's file struct: <word> and struct2 : <word>",
            "Resolved pointer to the userspace program's eventfd's context: <word> and context2 : <word>",
        ],
        timeout(),
    )?;
    check_hashed_pointers(&caps.concat())
}

fn step7(w: &mut Walk) -> Result<()> {
    w.echo_param("2", param::CUR_CMD)?;
    let l = w.listener()?;
    let mmap = crate::common::mmap_lines();
    let mut lines = vec!["In handling_polling value in eventfd = 2"];
    lines.extend(mmap.iter().map(String::as_str));
    let caps = l.expect_next(&lines, timeout())?;
    ensure!(
        caps.first().map(String::as_str) == Some("5"),
        "the device fd is {caps:?}[0], the seed's is 5"
    );
    l.check_quiet_stderr()
}

fn step8(w: &mut Walk) -> Result<()> {
    w.echo_param("3", param::CUR_CMD)?;
    w.klog.wait_for("Timer is started.", timeout())?;
    let period = w.params.period()?;
    let rounds_timeout = scaled(period * 3 + Duration::from_secs(10));
    w.klog
        .wait_until("3 complete rounds", rounds_timeout, |l| {
            complete_rounds(l) >= 3
        })?;
    let l = w.listener()?;
    l.expect_code_block(3, &["handling_polling done!"], timeout())?;
    l.wait_until("3 MEMORY_READY (6) codes", timeout(), |out| {
        out.iter()
            .filter(|l| *l == "In handling_polling value in eventfd = 6")
            .count()
            >= 3
    })?;
    l.check_quiet_stderr()
}

fn step9(w: &mut Walk) -> Result<()> {
    w.echo_param("4", param::CUR_CMD)?;
    let caps = w
        .klog
        .wait_in_order(&["Timer is deleted.", "Avg copy time = <n>"], timeout())?;
    let avg: u64 = caps[1].first().and_then(|a| a.parse().ok()).unwrap_or(0);
    ensure!(avg > 0, "Avg copy time is 0 although rounds completed");
    let l = w.listener()?;
    l.expect_code_block(4, &["handling_polling done!"], timeout())?;
    l.check_quiet_stderr()
}

fn step10(w: &mut Walk) -> Result<()> {
    w.echo_param("5", param::CUR_CMD)?;
    let l = w.listener()?;
    l.expect_next(
        &[
            "In handling_polling value in eventfd = 5",
            "Stop polling cmd received",
            "handling_polling done!",
            "done!",
        ],
        timeout(),
    )?;
    l.expect_clean_exit()?;
    w.klog
        .wait_for("listener closed its eventfd: detached", timeout())?;
    Ok(())
}

fn step11(w: &mut Walk) -> Result<()> {
    w.shell(&format!("rmmod {MODULE_NAME}"))?;
    w.klog.wait_for("module unloaded", timeout())?;
    for gone in [
        guest::sys_module(),
        PathBuf::from(DEVICE_PATH),
        guest::sys_class(),
        guest::sys_misc(),
    ] {
        ensure!(
            !gone.exists(),
            "{} still exists after rmmod",
            gone.display()
        );
    }
    let lsmod = sh_ok(&w.cwd, "lsmod")?;
    ensure!(
        !lsmod
            .stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(MODULE_NAME)),
        "lsmod still lists {MODULE_NAME}"
    );
    match std::fs::File::open(SEED_DEVICE_PATH) {
        Ok(_) => bail!("{SEED_DEVICE_PATH} still opens after rmmod"),
        // ENXIO for a stale node of the C module's own major, ENODEV for a
        // misc minor nobody registers any more (Rust module).
        Err(e)
            if [rustix::io::Errno::NXIO, rustix::io::Errno::NODEV]
                .iter()
                .any(|n| e.raw_os_error() == Some(n.raw_os_error())) => {}
        Err(e) => bail!(
            "opening {SEED_DEVICE_PATH} after rmmod failed with {e}, expected ENXIO or ENODEV"
        ),
    }
    // Nothing leaked that blocks registering again.
    w.shell(&format!("insmod {MODULE_FILE}"))?;
    w.klog.wait_for("Work queue created.", timeout())?;
    w.shell(&format!("rmmod {MODULE_NAME}"))?;
    w.klog.wait_for("module unloaded", timeout())?;
    ensure!(!guest::module_loaded(), "the module is still loaded");
    Ok(())
}

/// The `walkthrough` suite: one test per step.
pub fn run_suite(filter: Option<&str>) -> Tally {
    let mut tally = Tally::default();
    match Walk::new(false) {
        Ok(mut w) => {
            for (n, what, step) in STEPS {
                let name = format!("step {n}: {what}");
                if !selected(&name, filter) {
                    continue;
                }
                let result = step(&mut w).and_then(|()| w.klog.check_no_kernel_problems());
                tally.record(&name, &result);
            }
            let cleanup = w.cleanup();
            if cleanup.is_err() {
                tally.record("cleanup", &cleanup);
            }
        }
        Err(e) => tally.record("setup", &Err(e)),
    }
    tally.finish("walkthrough");
    tally
}

/// Narrate the walkthrough; false if any expectation failed.
pub fn demo() -> Result<bool> {
    let mut w = Walk::new(true)?;
    let mut tally = Tally::default();
    for (n, what, step) in STEPS {
        println!("== Step {n}: {what} ==");
        let result = step(&mut w).and_then(|()| w.klog.check_no_kernel_problems());
        w.print_new_output();
        match result {
            Ok(()) => tally.passed += 1,
            Err(e) => {
                tally.failed += 1;
                println!("expectation failed: {e:#}");
            }
        }
    }
    if let Err(e) = w.cleanup() {
        println!("cleanup failed: {e:#}");
        tally.failed += 1;
    }
    println!("demo: {} passed, {} failed", tally.passed, tally.failed);
    Ok(tally.failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_complete_rounds() {
        let round = [
            "Timer handler called",
            "In handler: buffer_filled = 0, calculation_done = 0",
            "Start monitoring for efd2...",
            "Buffer filled",
            "Time to copy = 82233",
            "Exit from __monitor_efd2",
        ];
        let mut lines = vec!["Timer is started."];
        lines.extend(round);
        lines.extend([
            "Timer handler called",
            "In handler: buffer_filled = 1, calculation_done = 0",
        ]);
        lines.extend(round);
        assert_eq!(complete_rounds(&lines), 2);
        assert_eq!(complete_rounds(&lines[..lines.len() - 1]), 1);
    }

    #[test]
    fn checks_pointers() {
        let ok = ["000000003c2b3f4a", "00000000aa11bb22"].map(str::to_owned);
        assert!(check_hashed_pointers(&ok).is_ok());
        let raw = ["ffff880feeff4380".to_owned()];
        assert!(check_hashed_pointers(&raw).is_err());
        let null = ["(null)".to_owned()];
        assert!(check_hashed_pointers(&null).is_err());
        let same = ["0000000012345678", "0000000012345678"].map(str::to_owned);
        assert!(check_hashed_pointers(&same).is_err());
    }
}
