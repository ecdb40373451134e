//! The listener (`kern2usr listen`) as a child process whose lines are
//! read by threads into a channel and awaited with deadlines.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kern2usr::abi::SEED_DEVICE_PATH;
use rustix::process::{Pid, Signal};

use crate::guest::{timeout, LISTENER_BIN, ROOT};
use crate::pattern;

/// The line printed on every poll timeout.
pub const TIMEOUT_LINE: &str = "timeout in polling";
/// Pattern of the line printed per code.
pub const VALUE_LINE: &str = "In handling_polling value in eventfd = <n>";

enum Msg {
    Out(String),
    Err(String),
    OutClosed,
    ErrClosed,
}

/// A running `kern2usr listen`, killed on drop.
pub struct ListenerProc {
    child: Child,
    pid: Pid,
    rx: Receiver<Msg>,
    out: Vec<String>,
    err: Vec<String>,
    cursor: usize,
    shown_out: usize,
    shown_err: usize,
    open_streams: u8,
    status: Option<ExitStatus>,
}

/// The command line of the walkthrough's listener, as shown.
pub fn command_line(extra: &[&str]) -> String {
    let mut s = format!("kern2usr listen --device {SEED_DEVICE_PATH} --poll-timeout 500");
    for a in extra {
        s.push(' ');
        s.push_str(a);
    }
    s
}

fn pump<R: Read + Send + 'static>(r: R, tx: Sender<Msg>, wrap: fn(String) -> Msg, end: Msg) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(wrap(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(end);
    });
}

impl ListenerProc {
    /// Start `kern2usr listen --device /dev/char/mmaptest --poll-timeout 500 [extra]`
    /// in the project directory.
    pub fn spawn(extra: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(LISTENER_BIN);
        cmd.args([
            "listen",
            "--device",
            SEED_DEVICE_PATH,
            "--poll-timeout",
            "500",
        ])
        .args(extra);
        Self::spawn_command(cmd)
    }

    /// Start another listener program (the seed client, an eventfd holder)
    /// whose lines are read the same way.
    pub fn spawn_command(mut cmd: Command) -> Result<Self> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .current_dir(ROOT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let pid = Pid::from_child(&child);
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().context("listener stdout")?;
        let stderr = child.stderr.take().context("listener stderr")?;
        pump(stdout, tx.clone(), Msg::Out, Msg::OutClosed);
        pump(stderr, tx, Msg::Err, Msg::ErrClosed);
        Ok(Self {
            child,
            pid,
            rx,
            out: Vec::new(),
            err: Vec::new(),
            cursor: 0,
            shown_out: 0,
            shown_err: 0,
            open_streams: 2,
            status: None,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Take one message, waiting until `deadline`; false on timeout or when
    /// both streams are closed.
    fn recv(&mut self, deadline: Instant) -> bool {
        if self.open_streams == 0 {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(msg) => {
                self.store(msg);
                true
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    fn store(&mut self, msg: Msg) {
        match msg {
            Msg::Out(l) => self.out.push(l),
            Msg::Err(l) => self.err.push(l),
            Msg::OutClosed | Msg::ErrClosed => self.open_streams -= 1,
        }
    }

    /// Take everything already received.
    pub fn drain(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            self.store(msg);
        }
    }

    /// The next stdout line after the cursor, `timeout in polling` lines
    /// included; moves the cursor.
    pub fn next_raw(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.out.get(self.cursor) {
                self.cursor += 1;
                return Ok(line.clone());
            }
            if !self.recv(deadline) {
                bail!(
                    "listener printed no further line within {timeout:?}{}; last lines: {}",
                    if self.open_streams == 0 {
                        " (it exited)"
                    } else {
                        ""
                    },
                    self.context()
                );
            }
        }
    }

    /// The next stdout line that is not `timeout in polling`.
    pub fn next_line(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.next_raw(deadline.saturating_duration_since(Instant::now()))?;
            if line != TIMEOUT_LINE {
                return Ok(line);
            }
        }
    }

    /// The next lines (`timeout in polling` skipped) must match `patterns`
    /// one by one; returns all captures in order.
    pub fn expect_next(&mut self, patterns: &[&str], timeout: Duration) -> Result<Vec<String>> {
        self.expect_lines(patterns, timeout, Self::next_line)
    }

    /// As [`ListenerProc::expect_next`], without skipping `timeout in polling`.
    pub fn expect_next_raw(&mut self, patterns: &[&str], timeout: Duration) -> Result<Vec<String>> {
        self.expect_lines(patterns, timeout, Self::next_raw)
    }

    fn expect_lines(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
        next: fn(&mut Self, Duration) -> Result<String>,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut caps = Vec::new();
        for p in patterns {
            let line = next(self, deadline.saturating_duration_since(Instant::now()))?;
            match pattern::capture(p, &line) {
                Some(c) => caps.extend(c),
                None => bail!(
                    "listener printed {line:?} where `{p}` was expected; last lines: {}",
                    self.context()
                ),
            }
        }
        Ok(caps)
    }

    /// Skip to the next stdout line matching `pattern`; returns its captures.
    pub fn wait_line(&mut self, pattern: &str, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self
                .next_raw(deadline.saturating_duration_since(Instant::now()))
                .with_context(|| format!("waiting for the listener to print `{pattern}`"))?;
            if let Some(c) = pattern::capture(pattern, &line) {
                return Ok(c);
            }
        }
    }

    /// Handle code `code`'s block next: skip `timeout in polling` and whole
    /// MEMORY_READY (6) blocks, then expect `In handling_polling value in
    /// eventfd = <code>` followed by `rest`.
    pub fn expect_code_block(
        &mut self,
        code: u64,
        rest: &[&str],
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let want = format!("In handling_polling value in eventfd = {code}");
        loop {
            let line = self.next_line(deadline.saturating_duration_since(Instant::now()))?;
            if line == want {
                break;
            }
            // Rounds go on while commands are handled: skip MEMORY_READY
            // blocks (also one whose first line was skipped already).
            if code != 6
                && (line == "In handling_polling value in eventfd = 6"
                    || line == "handling_polling done!")
            {
                continue;
            }
            bail!(
                "listener printed {line:?} where `{want}` was expected; last lines: {}",
                self.context()
            );
        }
        self.expect_next(rest, deadline.saturating_duration_since(Instant::now()))
    }

    /// Consume every line received so far (the next `expect_*` starts
    /// with what comes after).
    pub fn skip_to_end(&mut self) {
        self.drain();
        self.cursor = self.out.len();
    }

    /// Wait until `done` holds for all stdout lines so far.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[String]) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if done(&self.out) {
                return Ok(());
            }
            if self.open_streams == 0 {
                bail!(
                    "listener exited before {what}; last lines: {}",
                    self.context()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "listener: {what} not seen within {timeout:?}; last lines: {}",
                    self.context()
                );
            }
            self.recv(deadline);
        }
    }

    /// Codes the listener reported handling, in order.
    pub fn values(&self) -> Vec<u64> {
        self.out
            .iter()
            .filter_map(|l| pattern::capture(VALUE_LINE, l))
            .filter_map(|c| c.first().and_then(|v| v.parse().ok()))
            .collect()
    }

    /// Fail if it reported anything on stderr (mismatches, gaps, errors).
    pub fn check_quiet_stderr(&mut self) -> Result<()> {
        self.drain();
        if !self.err.is_empty() {
            bail!("listener reported on stderr: {}", self.err.join(" | "));
        }
        Ok(())
    }

    /// Stdout and stderr lines not shown yet (stderr marked), for narration.
    pub fn take_unshown(&mut self) -> Vec<String> {
        self.drain();
        let mut v: Vec<String> = self.out[self.shown_out..].to_vec();
        v.extend(
            self.err[self.shown_err..]
                .iter()
                .map(|l| format!("(stderr) {l}")),
        );
        self.shown_out = self.out.len();
        self.shown_err = self.err.len();
        v
    }

    /// Send `sig`.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        rustix::process::kill_process(self.pid, sig).with_context(|| {
            format!(
                "sending {sig:?} to the listener ({})",
                self.pid.as_raw_nonzero()
            )
        })
    }

    /// Wait until it exits (its output streams close), then reap it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let deadline = Instant::now() + timeout;
        while self.open_streams > 0 {
            if Instant::now() >= deadline {
                bail!(
                    "listener did not exit within {timeout:?}; last lines: {}",
                    self.context()
                );
            }
            self.recv(deadline);
        }
        let status = self.child.wait().context("reaping the listener")?;
        self.status = Some(status);
        Ok(status)
    }

    /// Wait for a clean exit: status 0 and nothing on stderr.
    pub fn expect_clean_exit(&mut self) -> Result<()> {
        let status = self.wait_exit(timeout())?;
        if !status.success() {
            bail!(
                "listener exited with {status}; stderr: {}",
                self.err.join(" | ")
            );
        }
        self.check_quiet_stderr()
    }

    fn context(&self) -> String {
        let start = self.out.len().saturating_sub(8);
        let mut s: Vec<String> = self.out[start..].iter().map(|l| format!("{l:?}")).collect();
        if s.is_empty() {
            s.push("(none)".to_owned());
        }
        let mut text = s.join(", ");
        if !self.err.is_empty() {
            text.push_str(&format!("; stderr: {}", self.err.join(" | ")));
        }
        text
    }
}

impl Drop for ListenerProc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
