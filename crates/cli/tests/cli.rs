//! The `kern2usr` binary on the host, without the module: a temp dir stands
//! in for the parameters and a pattern-filled file for the device. The test
//! plays the kernel by writing codes into the listener's own efd (taken with
//! pidfd_getfd) and reading its acks from efd2, in counter mode.

use std::io::{BufRead, BufReader};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kern2usr::abi::{param, pattern_byte};
use kern2usr::EventFd;
use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};

const BIN: &str = env!("CARGO_BIN_EXE_kern2usr");
const WAIT: Duration = Duration::from_secs(10);

fn fake_params(dir: &Path, mode: &str) -> Result<()> {
    for (name, value) in [
        (param::USR_PID, "0"),
        (param::USR_EFD, "-1"),
        (param::USR_EFD2, "-1"),
        (param::CUR_CMD, "0"),
        (param::BUFFER_SIZE, "8192"),
        (param::PERIOD_MS, "500"),
        (param::EVENT_MODE, mode),
        (param::LAST_ERROR, ""),
    ] {
        std::fs::write(dir.join(name), format!("{value}\n"))?;
    }
    Ok(())
}

struct Running {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
}

impl Running {
    fn spawn(args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(BIN);
        // The seed's numbers (efd=3, efd2=4) need a child with only 0-2
        // open: fds this test process inherited (a lock a wrapper holds,
        // a CI runner's pipes) must not reach it.
        // SAFETY: the closure runs in the forked child before exec and
        // makes only fcntl() system calls, which are async-signal-safe; the
        // raw fds are borrowed for the one call and may be closed (EBADF).
        unsafe {
            cmd.pre_exec(|| {
                for fd in 3..1024 {
                    let fd = BorrowedFd::borrow_raw(fd);
                    let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
                }
                Ok(())
            });
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut err = child.stderr.take().context("no stderr")?;
        let (etx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            let _ = etx.send(s);
        });
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            stderr,
        })
    }

    /// The next line that is not `timeout in polling`.
    fn next(&self) -> Result<String> {
        loop {
            let line = self
                .lines
                .recv_timeout(WAIT)
                .context("no line from kern2usr")?;
            if line != "timeout in polling" {
                return Ok(line);
            }
        }
    }

    fn expect(&self, expected: &[&str]) -> Result<()> {
        for want in expected {
            let got = self.next()?;
            if got != *want {
                bail!("expected {want:?}, got {got:?}");
            }
        }
        Ok(())
    }

    fn fd(&self, n: i32) -> Result<OwnedFd> {
        let pid = Pid::from_child(&self.child);
        let pidfd = pidfd_open(pid, PidfdFlags::empty())?;
        Ok(pidfd_getfd(&pidfd, n, PidfdGetfdFlags::empty())?)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn listen_creates_fds_3_and_4_and_polls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_params(dir.path(), "counter")?;
    let params = dir.path().to_string_lossy().into_owned();
    let l = Running::spawn(&["--params-dir", &params, "listen", "--poll-timeout", "20"])?;
    let pid = l.child.id();
    for want in [
        format!("Eventfd created efd=3 pid={pid}"),
        format!("Eventfd created efd2=4 pid={pid}"),
        "Start polling...".to_owned(),
        "timeout in polling".to_owned(),
        "timeout in polling".to_owned(),
    ] {
        assert_eq!(l.lines.recv_timeout(WAIT)?, want);
    }
    Ok(())
}

/// A whole seed session through the real eventfds and a real mmap.
#[test]
fn listen_session_in_counter_mode() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_params(dir.path(), "counter")?;
    let dev = dir.path().join("mmaptest");
    let data: Vec<u8> = (0..8192).map(pattern_byte).collect();
    std::fs::write(&dev, &data)?;
    let params = dir.path().to_string_lossy().into_owned();
    let dev_s = dev.to_string_lossy().into_owned();
    let l = Running::spawn(&[
        "--params-dir",
        &params,
        "listen",
        "--device",
        &dev_s,
        "--poll-timeout",
        "50",
    ])?;
    l.next()?;
    l.next()?;
    l.expect(&["Start polling..."])?;
    let efd = EventFd::from(l.fd(3)?);
    let efd2 = EventFd::from(l.fd(4)?);

    // One code at a time, each only after the previous was handled: what
    // the module guarantees in counter mode.
    efd.write(2)?;
    l.expect(&[
        "In handling_polling value in eventfd = 2",
        "Got mmap command in polling eventfd",
        &format!("Char dev {dev_s} opened"),
    ])?;
    let map_line = l.next()?;
    assert!(
        map_line.starts_with("Memory from char dev = 5 mmaped to 0x"),
        "{map_line}"
    );
    l.expect(&["handling_polling done!"])?;
    efd.write(3)?;
    l.expect(&[
        "In handling_polling value in eventfd = 3",
        "handling_polling done!",
    ])?;
    for _ in 0..3 {
        efd.write(6)?;
        l.expect(&[
            "In handling_polling value in eventfd = 6",
            "handling_polling done!",
        ])?;
        assert!(efd2.wait_readable(WAIT)?, "no ack");
        assert_eq!(efd2.read()?, 7);
    }
    efd.write(4)?;
    l.expect(&[
        "In handling_polling value in eventfd = 4",
        "handling_polling done!",
    ])?;
    efd.write(5)?;
    l.expect(&[
        "In handling_polling value in eventfd = 5",
        "Stop polling cmd received",
        "handling_polling done!",
        "done!",
    ])?;
    let mut l = l;
    let status = l.child.wait()?;
    assert!(status.success(), "{status}");
    assert_eq!(l.stderr.recv_timeout(WAIT)?, "", "nothing on stderr");
    Ok(())
}

/// A corrupted buffer makes the final exit code non-zero.
#[test]
fn listen_exits_non_zero_after_a_mismatch() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_params(dir.path(), "counter")?;
    let dev = dir.path().join("mmaptest");
    let mut data: Vec<u8> = (0..8192).map(pattern_byte).collect();
    data[4097] = 0;
    std::fs::write(&dev, &data)?;
    let params = dir.path().to_string_lossy().into_owned();
    let dev_s = dev.to_string_lossy().into_owned();
    let mut l = Running::spawn(&["--params-dir", &params, "listen", "--device", &dev_s])?;
    while l.next()? != "Start polling..." {}
    let efd = EventFd::from(l.fd(3)?);
    for code in [2, 6, 5] {
        efd.write(code)?;
        while l.next()? != "handling_polling done!" {}
    }
    assert_eq!(l.next()?, "done!");
    let status = l.child.wait()?;
    assert_eq!(status.code(), Some(6), "bad data has its own exit code");
    let err = l.stderr.recv_timeout(WAIT)?;
    assert_eq!(
        err,
        format!(
            "kern2usr: error: data mismatch at offset 4097: expected {:#04x}, got 0x00\n\
             kern2usr: error: 1 of 8192 bytes differ from the fill pattern (byte i = i % 255)\n\
             kern2usr: finished after 1 round(s) with 1 problem(s) (reported above)\n",
            pattern_byte(4097)
        )
    );
    Ok(())
}

fn run_cmd(args: &[&str]) -> Result<(Option<i32>, String)> {
    let out = Command::new(BIN).args(args).output()?;
    Ok((out.status.code(), String::from_utf8(out.stderr)?))
}

#[test]
fn cmd_without_the_module_says_to_insmod() -> Result<()> {
    let (code, err) = run_cmd(&["--params-dir", "/nonexistent/params", "cmd", "mmap"])?;
    assert_eq!(code, Some(4), "a missing module has its own exit code");
    assert_eq!(
        err,
        "error: module kern2usr is not loaded: insmod kern2usr.ko first\n"
    );
    Ok(())
}

#[test]
fn refused_cmd_prints_errno_and_reason() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_params(dir.path(), "queue")?;
    let cur = dir.path().join(param::CUR_CMD);
    std::fs::remove_file(&cur)?;
    std::os::unix::fs::symlink("/dev/full", &cur)?;
    std::fs::write(
        dir.path().join(param::LAST_ERROR),
        "no listener: run FIND (1) first\n",
    )?;
    let params = dir.path().to_string_lossy().into_owned();
    let (code, err) = run_cmd(&["--params-dir", &params, "cmd", "mmap"])?;
    assert_eq!(code, Some(3), "a refused command has its own exit code");
    assert_eq!(
        err,
        "error: command 2 (MMAP) refused: No space left on device (os error 28): no listener: run FIND (1) first\n"
    );
    Ok(())
}

#[test]
fn cmd_and_attach_write_the_parameters() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_params(dir.path(), "queue")?;
    let params = dir.path().to_string_lossy().into_owned();
    let p = kern2usr::Params::at_dir(dir.path());
    assert_eq!(
        run_cmd(&["--params-dir", &params, "cmd", "start"])?,
        (Some(0), String::new())
    );
    assert_eq!(p.read(param::CUR_CMD)?, "3");
    assert_eq!(run_cmd(&["--params-dir", &params, "cmd", "9"])?.0, Some(0));
    assert_eq!(p.read(param::CUR_CMD)?, "9");
    let (code, err) = run_cmd(&["--params-dir", &params, "cmd", "strat"])?;
    assert_eq!(code, Some(2), "{err}");
    let args = [
        "--params-dir",
        &params,
        "attach",
        "--pid",
        "5426",
        "--efd",
        "3",
        "--efd2",
        "4",
        "--find",
    ];
    assert_eq!(run_cmd(&args)?, (Some(0), String::new()));
    assert_eq!(p.read(param::USR_PID)?, "5426");
    assert_eq!(p.read(param::USR_EFD2)?, "4");
    assert_eq!(p.read(param::CUR_CMD)?, "1");
    Ok(())
}

#[test]
fn stats_prints_units_and_draws_the_histogram() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_params(dir.path(), "queue")?;
    std::fs::write(
        dir.path().join(param::STATS),
        "count 4\nmin 10000\nmean 27500\np50 19968\np90 79872\np99 79872\np99.9 79872\nmax 80000\n",
    )?;
    // 10000 and 20000 twice, 80000 once: three buckets far apart.
    std::fs::write(
        dir.path().join(param::HISTOGRAM),
        "9984 10240 1\n19968 20480 2\n79872 81920 1\n",
    )?;
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let out = Command::new(BIN)
        .args([
            "--params-dir",
            &dir_arg,
            "stats",
            "--rows",
            "20",
            "--width",
            "10",
        ])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("count  4\nmin    10.0 µs\nmean   27.5 µs\np50    20.0 µs\n"),
        "{text}"
    );
    assert!(text.contains("max    80.0 µs\n"), "{text}");
    assert!(
        text.contains("histogram (4 rounds, signal to ack):\n"),
        "{text}"
    );
    let bars: Vec<&str> = text.lines().filter(|l| l.contains(" |")).collect();
    assert!((3..=21).contains(&bars.len()), "{text}");
    assert!(bars.iter().any(|l| l.ends_with("|██████████ 2")), "{text}");
    assert_eq!(
        bars.iter().filter(|l| l.ends_with("|█████ 1")).count(),
        2,
        "{text}"
    );
    Ok(())
}

#[test]
fn spin_budget_needs_adaptive() -> Result<()> {
    let out = Command::new(BIN)
        .args(["listen", "--spin-us", "10"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("--adaptive"), "{err}");
    Ok(())
}

#[test]
fn status_and_stats_print_json() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_params(dir.path(), "queue")?;
    std::fs::write(
        dir.path().join(param::STATS),
        "count 3\nmin 100\nmean 110\np50 104\np90 120\np99 120\np99.9 120\nmax 125\n",
    )?;
    std::fs::write(
        dir.path().join(param::HISTOGRAM),
        "100 104 1\n104 108 1\n120 124 1\n",
    )?;
    let params = dir.path().to_string_lossy().into_owned();
    let out = Command::new(BIN)
        .args(["--params-dir", &params, "status", "--json"])
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["params"][param::EVENT_MODE], "queue");
    assert_eq!(v["params"][param::BUFFER_SIZE], "8192");
    assert!(v.get("info").is_none(), "no --device, no info");
    let out = Command::new(BIN)
        .args(["--params-dir", &params, "stats", "--json"])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["stats"]["count"], 3);
    assert_eq!(v["stats"]["p99_9"], 120);
    assert_eq!(v["histogram"][1]["low"], 104);
    assert_eq!(v["histogram"].as_array().map(Vec::len), Some(3));
    Ok(())
}

#[test]
fn a_device_that_is_not_there_exits_4_and_a_non_device_exits_1() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_params(dir.path(), "queue")?;
    let params = dir.path().to_string_lossy().into_owned();
    let missing = dir
        .path()
        .join("no-such-node")
        .to_string_lossy()
        .into_owned();
    let (code, err) = run_cmd(&["--params-dir", &params, "status", "--device", &missing])?;
    assert_eq!(code, Some(4), "{err}");
    // A file that is no device answers INFO with ENOTTY: an other failure.
    let plain = dir
        .path()
        .join(param::USR_PID)
        .to_string_lossy()
        .into_owned();
    let (code, err) = run_cmd(&["--params-dir", &params, "status", "--device", &plain])?;
    assert_eq!(code, Some(1), "{err}");
    Ok(())
}

/// A module with channels: the `channels` listing as the module prints it.
fn fake_channels(dir: &Path) -> Result<()> {
    fake_params(dir, "queue")?;
    std::fs::write(dir.join(param::MAX_CHANNELS), "16\n")?;
    std::fs::write(
        dir.join(param::CHANNELS),
        format!(
            "{}\n0 - 0 4096 queue timer 0 0 0\n3 cam0 812 65536 queue b2b 120 9000 41000\n\
             5 prod 0 8192 queue timer 7 1500 2000\n",
            kern2usr::abi::CHANNELS_HEADER
        ),
    )?;
    Ok(())
}

#[test]
fn status_lists_the_channels_as_text_and_json() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_channels(dir.path())?;
    let params = dir.path().to_string_lossy().into_owned();
    let out = Command::new(BIN)
        .args(["--params-dir", &params, "status"])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("max_channels = 16\n"), "{text}");
    assert!(text.contains("channels (3):\n"), "{text}");
    let row = |id: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(
        row("3"),
        Some(vec![
            "3", "cam0", "812", "65536", "queue", "b2b", "120", "9.00", "µs", "41.0", "µs"
        ]),
        "{text}"
    );
    assert_eq!(
        row("0").map(|r| r[1..3].join(" ")),
        Some("(default) -".to_owned())
    );
    let out = Command::new(BIN)
        .args(["--params-dir", &params, "status", "--json"])
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let list = v["channels"].as_array().context("channels array")?;
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["id"], 0);
    assert!(list[0]["name"].is_null() && list[0]["owner"].is_null());
    assert_eq!(list[1]["name"], "cam0");
    assert_eq!(list[1]["owner"], 812);
    assert_eq!(list[1]["pacing"], "b2b");
    assert_eq!(list[2]["p99_ns"], 2000);
    assert_eq!(v["params"][param::MAX_CHANNELS], "16");
    Ok(())
}

#[test]
fn stats_channel_reads_one_line_of_the_listing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fake_channels(dir.path())?;
    let params = dir.path().to_string_lossy().into_owned();
    let out = Command::new(BIN)
        .args(["--params-dir", &params, "stats", "--channel", "3"])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("channel 3 (cam0)\nowner   812\nbuffer  65536 bytes\n"),
        "{text}"
    );
    assert!(
        text.contains("rounds  120\np50     9.00 µs\np99     41.0 µs\n"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["--params-dir", &params, "stats", "--channel", "5", "--json"])
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["channel"]["id"], 5);
    assert_eq!(v["channel"]["name"], "prod");
    assert!(v["channel"]["owner"].is_null(), "owner 0 is none");
    assert_eq!(v["channel"]["rounds"], 7);
    // An id the module does not list: its own exit code, the ids listed.
    let (code, err) = run_cmd(&["--params-dir", &params, "stats", "--channel", "4"])?;
    assert_eq!(code, Some(7), "{err}");
    assert!(
        err.contains("no channel 4 (the module lists 0, 3, 5)"),
        "{err}"
    );
    // A listing the tool cannot read is bad data.
    std::fs::write(dir.path().join(param::CHANNELS), "garbage\n")?;
    let (code, err) = run_cmd(&["--params-dir", &params, "stats", "--channel", "0"])?;
    assert_eq!(code, Some(6), "{err}");
    // A module without channels: the parameter is missing.
    std::fs::remove_file(dir.path().join(param::CHANNELS))?;
    let (code, err) = run_cmd(&["--params-dir", &params, "status"])?;
    assert_eq!(code, Some(0), "{err}");
    Ok(())
}
