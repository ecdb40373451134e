//! The module's parameters under `/sys/module/kern2usr/parameters/`.
//!
//! Writing `cur_cmd` runs a command; the module refuses a command by failing
//! the write() with an errno and storing its reason in `last_error`. The
//! directory is overridable so that the mapping can be tested without the
//! module.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::Pid;

use crate::abi::{param, Code, EventMode, PARAMS_DIR};
use crate::error::{Error, Result};
use crate::stats::{parse_histogram, Bucket, Histogram, Stats};

/// Handle on a module parameters directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    dir: PathBuf,
}

impl Default for Params {
    fn default() -> Self {
        Self::new()
    }
}

impl Params {
    /// The loaded module's parameters ([`PARAMS_DIR`]).
    pub fn new() -> Self {
        Self::at_dir(PARAMS_DIR)
    }

    /// Parameters in another directory (tests, other module names).
    pub fn at_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory exists (the module is loaded).
    pub fn is_loaded(&self) -> bool {
        self.dir.is_dir()
    }

    /// [`Error::ModuleNotLoaded`] unless the directory exists.
    pub fn ensure_loaded(&self) -> Result<()> {
        if self.is_loaded() {
            Ok(())
        } else {
            Err(Error::ModuleNotLoaded)
        }
    }

    /// The file of parameter `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Read parameter `name`, without the trailing newline.
    pub fn read(&self, name: &str) -> Result<String> {
        self.ensure_loaded()?;
        let path = self.path(name);
        match fs::read_to_string(&path) {
            Ok(mut s) => {
                while s.ends_with('\n') {
                    s.pop();
                }
                Ok(s)
            }
            Err(source) => Err(Error::ParamRead {
                name: name.to_owned(),
                path,
                source,
            }),
        }
    }

    /// Read parameter `name` and parse it as `T`.
    pub fn read_parsed<T: FromStr>(&self, name: &str, expected: &'static str) -> Result<T> {
        let value = self.read(name)?;
        value.trim().parse().map_err(|_| Error::ParamValue {
            name: name.to_owned(),
            value,
            expected,
        })
    }

    /// Write `value` to parameter `name` the way `echo value > file` does
    /// (one write() of `value` plus a newline).
    pub fn write(&self, name: &str, value: &str) -> Result<()> {
        self.write_raw(name, value)
            .map_err(|source| Error::ParamWrite {
                name: name.to_owned(),
                path: self.path(name),
                value: value.to_owned(),
                source,
            })
    }

    fn write_raw(&self, name: &str, value: &str) -> io::Result<()> {
        if !self.is_loaded() {
            // Reported as ModuleNotLoaded by the callers that check first;
            // here it is the plain ENOENT of the open.
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(name))?;
        let text = format!("{value}\n");
        let n = file.write(text.as_bytes())?;
        if n != text.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", text.len()),
            ));
        }
        Ok(())
    }

    /// How the module delivers codes (`event_mode`).
    pub fn event_mode(&self) -> Result<EventMode> {
        let value = self.read(param::EVENT_MODE)?;
        EventMode::from_name(value.trim()).ok_or(Error::ParamValue {
            name: param::EVENT_MODE.to_owned(),
            value,
            expected: "`counter` or `queue`",
        })
    }

    /// Size of the mappable buffer (`buffer_size`).
    pub fn buffer_size(&self) -> Result<usize> {
        self.read_parsed(param::BUFFER_SIZE, "a size in bytes")
    }

    /// The module's reason for the last refused command (empty if none).
    pub fn last_error(&self) -> Result<String> {
        self.read(param::LAST_ERROR)
    }

    /// Timer period of the test rounds (`period_ms`).
    pub fn period(&self) -> Result<Duration> {
        self.read_parsed(param::PERIOD_MS, "milliseconds")
            .map(Duration::from_millis)
    }

    /// Set the timer period (whole milliseconds; the module accepts 1..=60000).
    pub fn set_period(&self, period: Duration) -> Result<()> {
        self.ensure_loaded()?;
        self.write(param::PERIOD_MS, &period.as_millis().to_string())
    }

    /// Round-trip statistics of the current or last test (`stats`).
    pub fn stats(&self) -> Result<Stats> {
        Stats::parse(&self.read(param::STATS)?)
    }

    /// Non-empty buckets of the round-trip histogram (`histogram`).
    pub fn histogram(&self) -> Result<Vec<Bucket>> {
        parse_histogram(&self.read(param::HISTOGRAM)?)
    }

    /// `stats` and `histogram` as one [`Histogram`] (checks that the
    /// buckets add up to the count). Read one after the other: call it
    /// when no test runs, or accept a round of skew (then it fails).
    pub fn round_trips(&self) -> Result<(Stats, Histogram)> {
        let stats = self.stats()?;
        let hist = Histogram::from_kernel(&self.histogram()?, &stats)?;
        Ok((stats, hist))
    }

    fn read_flag(&self, name: &str) -> Result<bool> {
        let value = self.read(name)?;
        match value.trim() {
            "0" | "N" | "n" => Ok(false),
            "1" | "Y" | "y" => Ok(true),
            _ => Err(Error::ParamValue {
                name: name.to_owned(),
                value,
                expected: "0 or 1",
            }),
        }
    }

    /// Whether rounds follow each other without the timer (`back_to_back`).
    pub fn back_to_back(&self) -> Result<bool> {
        self.read_flag(param::BACK_TO_BACK)
    }

    /// Set `back_to_back` (the module refuses it while a test runs).
    pub fn set_back_to_back(&self, on: bool) -> Result<()> {
        self.ensure_loaded()?;
        self.write(param::BACK_TO_BACK, if on { "1" } else { "0" })
    }

    /// Whether the module skips doorbells for a spinning listener (`adaptive`).
    pub fn adaptive(&self) -> Result<bool> {
        self.read_flag(param::ADAPTIVE)
    }

    /// Set `adaptive` (the module refuses it while a test runs).
    pub fn set_adaptive(&self, on: bool) -> Result<()> {
        self.ensure_loaded()?;
        self.write(param::ADAPTIVE, if on { "1" } else { "0" })
    }

    /// Set `usr_pid`, `usr_efd` and `usr_efd2`: the listener's pid and the
    /// numbers of its two eventfds *in that process*.
    pub fn attach(&self, pid: Pid, efd: RawFd, efd2: RawFd) -> Result<()> {
        self.ensure_loaded()?;
        self.write(param::USR_PID, &pid.as_raw_nonzero().to_string())?;
        self.write(param::USR_EFD, &efd.to_string())?;
        self.write(param::USR_EFD2, &efd2.to_string())
    }

    /// Run command `code` by writing it to `cur_cmd`.
    pub fn command(&self, code: Code) -> Result<()> {
        self.command_text(&code.value().to_string())
    }

    /// Write arbitrary text to `cur_cmd` (for values that are no command).
    ///
    /// A failed write is [`Error::CommandRefused`] with the write's errno and
    /// the module's reason from `last_error`.
    pub fn command_text(&self, text: &str) -> Result<()> {
        self.ensure_loaded()?;
        match self.write_raw(param::CUR_CMD, text) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.is_loaded() => {
                Err(Error::ModuleNotLoaded)
            }
            Err(e) => match Errno::from_io_error(&e) {
                // Opening failed for a reason of its own (not a refusal).
                Some(Errno::NOENT) | Some(Errno::ACCESS) | Some(Errno::PERM) | None => {
                    Err(Error::ParamWrite {
                        name: param::CUR_CMD.to_owned(),
                        path: self.path(param::CUR_CMD),
                        value: text.to_owned(),
                        source: e,
                    })
                }
                Some(errno) => Err(Error::CommandRefused {
                    value: text.to_owned(),
                    name: command_name(text),
                    errno,
                    reason: self.refusal_reason(),
                }),
            },
        }
    }

    fn refusal_reason(&self) -> String {
        match self.last_error() {
            Ok(r) if r.trim().is_empty() => "(the module left last_error empty)".to_owned(),
            Ok(r) => r.trim().to_owned(),
            Err(e) => format!("(cannot read last_error: {e})"),
        }
    }
}

/// `FIND`, `MMAP`, ... for the values of codes, `UNKNOWN` for anything else.
pub fn command_name(text: &str) -> &'static str {
    text.trim()
        .parse::<u64>()
        .ok()
        .and_then(Code::from_value)
        .map_or("UNKNOWN", Code::name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake_module() -> io::Result<(tempfile::TempDir, Params)> {
        let dir = tempfile::tempdir()?;
        for (name, value) in [
            (param::USR_PID, "0\n"),
            (param::USR_EFD, "-1\n"),
            (param::USR_EFD2, "-1\n"),
            (param::CUR_CMD, "0\n"),
            (param::BUFFER_SIZE, "4096\n"),
            (param::PERIOD_MS, "500\n"),
            (param::EVENT_MODE, "queue\n"),
            (param::LAST_ERROR, "\n"),
            (param::BACK_TO_BACK, "0\n"),
            (param::ADAPTIVE, "N\n"),
            (
                param::STATS,
                "count 2\nmin 1000\nmean 1500\np50 1000\np90 2000\np99 2000\np99.9 2000\nmax 2000\n",
            ),
            (param::HISTOGRAM, "992 1008 1\n1984 2016 1\n"),
        ] {
            fs::write(dir.path().join(name), value)?;
        }
        let params = Params::at_dir(dir.path());
        Ok((dir, params))
    }

    #[test]
    fn reads_typed_values() -> anyhow::Result<()> {
        let (_dir, p) = fake_module()?;
        assert_eq!(p.buffer_size()?, 4096);
        assert_eq!(p.event_mode()?, EventMode::Queue);
        assert_eq!(p.period()?, Duration::from_millis(500));
        assert_eq!(p.last_error()?, "");
        Ok(())
    }

    #[test]
    fn reads_stats_histogram_and_flags() -> anyhow::Result<()> {
        let (dir, p) = fake_module()?;
        let (stats, hist) = p.round_trips()?;
        assert_eq!(stats.count, 2);
        assert_eq!(hist.count(), 2);
        assert_eq!(hist.percentile(0.5), 1000);
        assert!(!p.back_to_back()?);
        assert!(!p.adaptive()?);
        p.set_back_to_back(true)?;
        p.set_adaptive(true)?;
        assert!(p.back_to_back()?);
        assert!(p.adaptive()?);
        fs::write(dir.path().join(param::HISTOGRAM), "992 1008 1\n")?;
        assert!(p.round_trips().is_err(), "buckets do not add up to count");
        fs::write(dir.path().join(param::ADAPTIVE), "maybe\n")?;
        assert!(p.adaptive().is_err());
        Ok(())
    }

    #[test]
    fn writes_like_echo_and_replaces_the_value() -> anyhow::Result<()> {
        let (dir, p) = fake_module()?;
        let pid = Pid::from_raw(5426).ok_or_else(|| anyhow::anyhow!("pid"))?;
        p.attach(pid, 3, 4)?;
        assert_eq!(
            fs::read_to_string(dir.path().join(param::USR_PID))?,
            "5426\n"
        );
        assert_eq!(p.read(param::USR_EFD)?, "3");
        assert_eq!(p.read(param::USR_EFD2)?, "4");
        p.command(Code::Mmap)?;
        assert_eq!(p.read(param::CUR_CMD)?, "2");
        p.set_period(Duration::from_millis(20))?;
        assert_eq!(p.period()?, Duration::from_millis(20));
        Ok(())
    }

    #[test]
    fn bad_values_are_reported_with_the_parameter() -> anyhow::Result<()> {
        let (dir, p) = fake_module()?;
        fs::write(dir.path().join(param::EVENT_MODE), "bell\n")?;
        let msg = p
            .event_mode()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            msg,
            "module parameter event_mode reads \"bell\", expected `counter` or `queue`"
        );
        fs::write(dir.path().join(param::BUFFER_SIZE), "lots\n")?;
        assert!(matches!(p.buffer_size(), Err(Error::ParamValue { .. })));
        Ok(())
    }

    /// A refused write carries the write's errno and the reason from
    /// last_error. /dev/full stands in for the module: every write fails
    /// (ENOSPC) while the open succeeds, as with a refused sysfs store.
    #[test]
    fn refused_command_carries_errno_and_last_error() -> anyhow::Result<()> {
        let (dir, p) = fake_module()?;
        let cur = dir.path().join(param::CUR_CMD);
        fs::remove_file(&cur)?;
        symlink("/dev/full", &cur)?;
        fs::write(
            dir.path().join(param::LAST_ERROR),
            "no listener attached: run FIND (1) first\n",
        )?;
        let err = p
            .command(Code::Mmap)
            .err()
            .ok_or_else(|| anyhow::anyhow!("accepted"))?;
        assert_eq!(err.errno(), Some(Errno::NOSPC));
        assert!(matches!(err, Error::CommandRefused { name: "MMAP", .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "command 2 (MMAP) refused: {}: no listener attached: run FIND (1) first",
                io::Error::from(Errno::NOSPC)
            )
        );
        let err = p
            .command_text("abc")
            .err()
            .ok_or_else(|| anyhow::anyhow!("accepted"))?;
        assert!(err
            .to_string()
            .starts_with("command abc (UNKNOWN) refused: "));
        Ok(())
    }

    #[test]
    fn refusal_with_empty_last_error_says_so() -> anyhow::Result<()> {
        let (dir, p) = fake_module()?;
        let cur = dir.path().join(param::CUR_CMD);
        fs::remove_file(&cur)?;
        symlink("/dev/full", &cur)?;
        let msg = p
            .command_text("9")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.starts_with("command 9 (UNKNOWN) refused: "), "{msg}");
        assert!(msg.ends_with("(the module left last_error empty)"), "{msg}");
        Ok(())
    }

    #[test]
    fn missing_module_says_to_insmod() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = Params::at_dir(dir.path().join("nope"));
        for err in [
            p.command(Code::Find).err(),
            p.read(param::CUR_CMD).err(),
            p.attach(rustix::process::getpid(), 3, 4).err(),
        ] {
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert_eq!(
                msg,
                "module kern2usr is not loaded: insmod kern2usr.ko first"
            );
        }
        Ok(())
    }

    #[test]
    fn command_names() {
        assert_eq!(command_name("1"), "FIND");
        assert_eq!(command_name("5\n"), "EXIT_TEST");
        assert_eq!(command_name("6"), "MEMORY_READY");
        assert_eq!(command_name("0"), "UNKNOWN");
        assert_eq!(command_name("x"), "UNKNOWN");
    }
}
