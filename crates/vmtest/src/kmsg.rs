//! The kernel log, read from /dev/kmsg from the moment a test starts.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags, SeekFrom};
use rustix::io::Errno;

use crate::pattern;

/// Prefix of every kern2usr line (pr_fmt).
pub const PREFIX: &str = "kern2usr: ";

/// One kernel log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Microseconds since boot.
    pub usec: u64,
    /// The message, as printed (with any module prefix).
    pub msg: String,
}

impl Record {
    /// The message without the `kern2usr: ` prefix, if it is one of ours.
    pub fn ours(&self) -> Option<&str> {
        self.msg.strip_prefix(PREFIX)
    }

    /// `kernel: [  119.313422] <message>`, as the seed shows the log.
    pub fn seed_format(&self) -> String {
        format!(
            "kernel: [{:5}.{:06}] {}",
            self.usec / 1_000_000,
            self.usec % 1_000_000,
            self.ours().unwrap_or(&self.msg)
        )
    }

    /// Whether this record is part of a kernel problem report (a WARN,
    /// BUG, oops, sanitizer, lockdep, kmemleak, ... report): the matcher
    /// `cargo xtask` applies to the console too.
    pub fn is_kernel_problem(&self) -> bool {
        kern2usr_kreport::is_kernel_report(&self.msg)
    }
}

fn parse_record(raw: &str) -> Option<Record> {
    let (header, rest) = raw.split_once(';')?;
    let usec = header.split(',').nth(2)?.parse().ok()?;
    let msg = rest.split('\n').next().unwrap_or_default().to_owned();
    Some(Record { usec, msg })
}

/// Reader of /dev/kmsg with the records seen so far.
pub struct KernelLog {
    fd: OwnedFd,
    records: Vec<Record>,
    /// First record not consumed by a `wait_*`.
    cursor: usize,
    /// First record not yet shown by [`KernelLog::take_unshown`].
    shown: usize,
    /// First record not yet checked for kernel problems.
    checked: usize,
}

impl KernelLog {
    /// Open /dev/kmsg positioned after the last record: only what happens
    /// from now on is seen.
    pub fn open_at_end() -> Result<Self> {
        let fd = rustix::fs::open(
            "/dev/kmsg",
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .context("opening /dev/kmsg (the kernel log)")?;
        rustix::fs::seek(&fd, SeekFrom::End(0)).context("seeking to the end of /dev/kmsg")?;
        Ok(Self {
            fd,
            records: Vec::new(),
            cursor: 0,
            shown: 0,
            checked: 0,
        })
    }

    /// Read every available record; if none is and `deadline` is later,
    /// wait for one until then. Returns whether any record was added.
    fn pull(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let before = self.records.len();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let raw = String::from_utf8_lossy(&buf[..n]);
                    if let Some(rec) = parse_record(&raw) {
                        self.records.push(rec);
                    }
                }
                // EPIPE: records were overwritten before we read them; the
                // next read continues with the oldest still available.
                Err(Errno::PIPE) | Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {
                    if self.records.len() > before {
                        break;
                    }
                    let Some(deadline) = deadline else { break };
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let ts = Timespec::try_from(left).unwrap_or(Timespec {
                        tv_sec: 1,
                        tv_nsec: 0,
                    });
                    let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
                    match rustix::event::poll(&mut fds, Some(&ts)) {
                        Ok(_) | Err(Errno::INTR) => continue,
                        Err(e) => return Err(e).context("polling /dev/kmsg"),
                    }
                }
                Err(e) => return Err(e).context("reading /dev/kmsg"),
            }
        }
        Ok(self.records.len() > before)
    }

    /// Read whatever is available now, without waiting.
    pub fn refresh(&mut self) -> Result<()> {
        self.pull(None).map(drop)
    }

    /// Wait for the next kern2usr line (after the cursor) matching
    /// `pattern` (prefix stripped); skip earlier lines. Returns its captures
    /// and moves the cursor past it.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<Vec<String>> {
        self.wait_for_record(pattern, timeout).map(|(caps, _)| caps)
    }

    /// As [`KernelLog::wait_for`], also returning the record.
    pub fn wait_for_record(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<(Vec<String>, Record)> {
        let deadline = Instant::now() + timeout;
        loop {
            while self.cursor < self.records.len() {
                let rec = &self.records[self.cursor];
                self.cursor += 1;
                if let Some(caps) = rec.ours().and_then(|m| pattern::capture(pattern, m)) {
                    return Ok((caps, rec.clone()));
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "kernel log: no line `{PREFIX}{pattern}` within {timeout:?}; kern2usr lines seen: {}",
                    self.recent_ours(12)
                );
            }
            self.pull(Some(deadline))?;
        }
    }

    /// Wait for each pattern in order (other lines may come between).
    pub fn wait_in_order(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Vec<String>>> {
        let deadline = Instant::now() + timeout;
        patterns
            .iter()
            .map(|p| self.wait_for(p, deadline.saturating_duration_since(Instant::now())))
            .collect()
    }

    /// Wait until `done` holds for the kern2usr lines after the cursor (the
    /// cursor does not move).
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[&str]) -> bool,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.ours_after_cursor();
            if done(&lines.iter().map(String::as_str).collect::<Vec<_>>()) {
                return Ok(lines);
            }
            if Instant::now() >= deadline {
                bail!(
                    "kernel log: {what} not seen within {timeout:?}; kern2usr lines seen: {}",
                    self.recent_ours(20)
                );
            }
            self.pull(Some(deadline))?;
        }
    }

    /// kern2usr lines (prefix stripped) after the cursor.
    pub fn ours_after_cursor(&self) -> Vec<String> {
        self.records[self.cursor..]
            .iter()
            .filter_map(|r| r.ours().map(str::to_owned))
            .collect()
    }

    /// kern2usr lines (prefix stripped) after the cursor, read now without
    /// waiting; the cursor moves past them.
    pub fn take_new_ours(&mut self) -> Result<Vec<String>> {
        self.refresh()?;
        let lines = self.ours_after_cursor();
        self.cursor = self.records.len();
        Ok(lines)
    }

    /// kern2usr records not yet shown, for narration (all, after a refresh).
    pub fn take_unshown(&mut self) -> Result<Vec<Record>> {
        self.refresh()?;
        let new = self.records[self.shown..]
            .iter()
            .filter(|r| r.ours().is_some())
            .cloned()
            .collect();
        self.shown = self.records.len();
        Ok(new)
    }

    /// Fail if any record since the last check shows a kernel bug.
    pub fn check_no_kernel_problems(&mut self) -> Result<()> {
        self.refresh()?;
        let bad: Vec<&str> = self.records[self.checked..]
            .iter()
            .filter(|r| r.is_kernel_problem())
            .map(|r| r.msg.as_str())
            .collect();
        self.checked = self.records.len();
        if !bad.is_empty() {
            bail!("the kernel reported a bug: {}", bad.join(" | "));
        }
        Ok(())
    }

    /// Drop records consumed and checked, keeping the last `keep` of them
    /// for error messages (a long run would otherwise hold every record it
    /// ever read). Dropped records are never shown by
    /// [`KernelLog::take_unshown`].
    pub fn forget_consumed(&mut self, keep: usize) {
        let done = self.cursor.min(self.checked);
        let drop = done.saturating_sub(keep);
        if drop > 0 {
            self.records.drain(..drop);
            self.cursor -= drop;
            self.shown = self.shown.saturating_sub(drop);
            self.checked -= drop;
        }
    }

    fn recent_ours(&self, n: usize) -> String {
        let ours: Vec<&str> = self.records.iter().filter_map(Record::ours).collect();
        if ours.is_empty() {
            return "(none)".to_owned();
        }
        let start = ours.len().saturating_sub(n);
        let mut s = ours[start..].join(" | ");
        if start > 0 {
            s = format!("... | {s}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kmsg_records() {
        let rec = parse_record("6,1234,119313422,-;kern2usr: Buffer filled\n SUBSYSTEM=x\n");
        assert_eq!(
            rec,
            Some(Record {
                usec: 119_313_422,
                msg: "kern2usr: Buffer filled".to_owned()
            })
        );
        let rec = rec.unwrap_or_else(|| Record {
            usec: 0,
            msg: String::new(),
        });
        assert_eq!(rec.ours(), Some("Buffer filled"));
        assert_eq!(rec.seed_format(), "kernel: [  119.313422] Buffer filled");
        assert_eq!(parse_record("garbage"), None);
    }

    #[test]
    fn recognises_kernel_problems() {
        let rec = |m: &str| Record {
            usec: 0,
            msg: m.to_owned(),
        };
        assert!(rec("WARNING: CPU: 0 PID: 1 at fs/eventfd.c:73").is_kernel_problem());
        assert!(rec("BUG: KASAN: use-after-free in x").is_kernel_problem());
        // Missed by the guest's old list of marks.
        assert!(rec("UBSAN: array-index-out-of-bounds in kernel/c/x.c:1:2").is_kernel_problem());
        assert!(rec("ODEBUG: free active (active state 0) object: 000000002a8b object type: hrtimer hint: k2u_timer+0x0/0x40 [kern2usr]").is_kernel_problem());
        assert!(rec("INFO: task rmmod:301 blocked for more than 122 seconds.").is_kernel_problem());
        assert!(!rec("kern2usr: Buffer filled").is_kernel_problem());
        assert!(!rec("kasan: KernelAddressSanitizer initialized (generic)").is_kernel_problem());
    }
}
