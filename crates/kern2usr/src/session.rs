//! A listener inside the calling process: its own two eventfds attached
//! with `K2U_IOC_REGISTER` (no pid parameters), codes read in either event
//! mode with their sequence checked. Used by the benchmark and the tests.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::abi::{Code, Event, EventMode};
use crate::ctrl::CtrlPage;
use crate::device::{AckedBy, Device, RoundAcker};
use crate::error::{Error, Result};
use crate::eventfd::EventFd;
use crate::params::Params;

/// This process as the module's listener.
#[derive(Debug)]
pub struct Session {
    efd: EventFd,
    efd2: EventFd,
    dev: Device,
    mode: EventMode,
    pending: VecDeque<Event>,
    batch: Vec<Event>,
    next_seq: u64,
    /// Queue mode: the round id of the last MEMORY_READY returned.
    last_round: Option<u32>,
    acker: RoundAcker,
}

/// Whether debug messages are wanted: `KERN2USR_DEBUG` set to anything
/// but empty or `0`.
pub fn debug_enabled() -> bool {
    std::env::var_os("KERN2USR_DEBUG").is_some_and(|v| !v.is_empty() && v != "0")
}

impl Session {
    /// Open `device`, create both eventfds and attach them with
    /// `K2U_IOC_REGISTER`. The event sequence starts again at 1.
    pub fn register(device: impl AsRef<Path>, params: &Params) -> Result<Self> {
        let efd = EventFd::new()?;
        let efd2 = EventFd::new()?;
        let dev = Device::open(device)?;
        let mode = params.event_mode()?;
        dev.register(efd.as_fd(), efd2.as_fd())?;
        Ok(Self::from_parts(efd, efd2, dev, mode))
    }

    /// A session over these eventfds and this device, attached already or
    /// to be attached by the caller (through the parameters and FIND, or
    /// [`Device::register`]); `mode` is the module's event mode
    /// ([`Params::event_mode`]). The event sequence starts at 1. For tools
    /// and tests that attach in ways [`Session::register`] does not.
    ///
    /// ```no_run
    /// use std::os::fd::AsFd;
    /// use kern2usr::{Device, EventFd, Params, Session};
    ///
    /// let (efd, efd2) = (EventFd::new()?, EventFd::new()?);
    /// let dev = Device::open("/dev/kern2usr")?;
    /// dev.register(efd.as_fd(), efd2.as_fd())?;
    /// let s = Session::from_parts(efd, efd2, dev, Params::new().event_mode()?);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn from_parts(efd: EventFd, efd2: EventFd, dev: Device, mode: EventMode) -> Self {
        Self {
            efd,
            efd2,
            dev,
            mode,
            pending: VecDeque::new(),
            batch: Vec::new(),
            next_seq: 1,
            last_round: None,
            acker: RoundAcker::default(),
        }
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// The kernel->user eventfd.
    pub fn efd(&self) -> &EventFd {
        &self.efd
    }

    /// The user->kernel eventfd.
    pub fn efd2(&self) -> &EventFd {
        &self.efd2
    }

    /// How codes arrive.
    pub fn mode(&self) -> EventMode {
        self.mode
    }

    /// Map the control page.
    pub fn map_ctrl(&self) -> Result<CtrlPage> {
        self.dev.map_ctrl()
    }

    /// The next delivered code, waiting at most `timeout` (zero: only
    /// what is there now); `None` if none came. A gap or a step back in the
    /// event sequence (queue mode) is an [`Error::Protocol`]. In queue mode
    /// each doorbell is followed by reading records until EAGAIN, so none
    /// is left behind for a doorbell that will not come.
    pub fn next_code(&mut self, timeout: Duration) -> Result<Option<u64>> {
        Ok(self.next_record(timeout)?.map(|(code, _)| code))
    }

    /// [`Session::next_code`] with the record it came in: in queue mode
    /// the device's record (its sequence number checked), in counter mode
    /// `None` (the counter carries only the code). For tests that look at
    /// sequence numbers and round ids themselves.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let mut s = kern2usr::Session::register("/dev/kern2usr", &kern2usr::Params::new())?;
    /// if let Some((code, Some(rec))) = s.next_record(Duration::from_secs(1))? {
    ///     println!("code {code}: seq {}, round {}", rec.seq, rec.round);
    /// }
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn next_record(&mut self, timeout: Duration) -> Result<Option<(u64, Option<Event>)>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.pending.pop_front() {
                if ev.seq != self.next_seq {
                    return Err(Error::Protocol(format!(
                        "event seq {} (code {}) where {} was expected",
                        ev.seq, ev.code, self.next_seq
                    )));
                }
                self.next_seq += 1;
                if ev.code == Code::MemoryReady.value() {
                    self.last_round = Some(ev.round);
                }
                return Ok(Some((u64::from(ev.code), Some(ev))));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.efd.wait_readable(left)? {
                return Ok(None);
            }
            let counter = self.efd.read()?;
            match self.mode {
                EventMode::Counter => return Ok(Some((counter, None))),
                EventMode::Queue => {
                    self.batch.clear();
                    self.dev.read_events(&mut self.batch)?;
                    self.pending.extend(self.batch.drain(..));
                }
            }
        }
    }

    /// The next code must be `code`, within `timeout`.
    pub fn expect_code(&mut self, code: Code, timeout: Duration) -> Result<()> {
        match self.next_code(timeout)? {
            Some(c) if c == u64::from(code.value()) => Ok(()),
            Some(c) => Err(Error::Protocol(format!(
                "got code {c} where {} ({}) was expected",
                code.value(),
                code.name()
            ))),
            None => Err(Error::Protocol(format!(
                "no code within {timeout:?} where {} ({}) was expected",
                code.value(),
                code.name()
            ))),
        }
    }

    /// Read codes until `code` arrives (within `timeout` in all); returns
    /// how many MEMORY_READY (6) came before it. Any other code is an error.
    ///
    /// Each skipped round is acknowledged (7 on efd2) without a look at
    /// the buffer: a round STOP abandoned keeps the buffer lent until its
    /// ack, and no round of a later START comes before it.
    pub fn skip_rounds_until(&mut self, code: Code, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut rounds = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_code(left)? {
                Some(c) if c == u64::from(code.value()) => return Ok(rounds),
                Some(c) if c == u64::from(Code::MemoryReady.value()) => {
                    self.ack()?;
                    rounds += 1;
                }
                Some(c) => {
                    return Err(Error::Protocol(format!(
                        "got code {c} while waiting for {} ({})",
                        code.value(),
                        code.name()
                    )))
                }
                None => {
                    return Err(Error::Protocol(format!(
                        "{} ({}) did not arrive within {timeout:?}",
                        code.value(),
                        code.name()
                    )))
                }
            }
        }
    }

    /// Acknowledge the round: MEMORY_COPIED (7) on efd2.
    pub fn ack(&self) -> Result<()> {
        self.efd2.write(u64::from(Code::MemoryCopied.value()))
    }

    /// Tell the module to look at the control page's `ack_seq`: 7 on
    /// efd2, where a counter already full (EAGAIN) wakes it all the same.
    /// With acks through the page on, efd2 is only this doorbell.
    pub fn wake_for_page_ack(&self) -> Result<()> {
        match self.efd2.write(u64::from(Code::MemoryCopied.value())) {
            Err(e) if e.errno() == Some(rustix::io::Errno::AGAIN) => Ok(()),
            r => r,
        }
    }

    /// Acknowledge the round with `K2U_IOC_ACK`.
    pub fn ack_ioctl(&self) -> Result<()> {
        self.dev.ack()
    }

    /// Queue mode: the round id (low 32 bits) of the last MEMORY_READY
    /// [`Session::next_code`] returned; `None` in counter mode or before
    /// the first.
    pub fn last_round(&self) -> Option<u32> {
        self.last_round
    }

    /// Acknowledge round `round` with `K2U_IOC_ACK_ROUND` (a module before
    /// ABI v2: `K2U_IOC_ACK`, see [`RoundAcker`]; the switch is reported
    /// on stderr when `KERN2USR_DEBUG` is set).
    pub fn ack_round(&mut self, round: u32) -> Result<AckedBy> {
        let by = self.acker.ack(&self.dev, round);
        if self.acker.take_fallback_news() && debug_enabled() {
            eprintln!("kern2usr: {}", RoundAcker::FALLBACK_NOTE);
        }
        by
    }

    /// Acknowledge the round of the last MEMORY_READY read: by its id in
    /// queue mode ([`Session::ack_round`]), with 7 on efd2 in counter mode
    /// (which has no ids; the round was shown when its 6 was read).
    pub fn ack_current(&mut self) -> Result<()> {
        match self.last_round {
            Some(round) => self.ack_round(round).map(drop),
            None => self.ack(),
        }
    }
}

/// Whether `ready_seq` reading `seq` shows a round not handled yet, when
/// `last` was the last one seen: any change to a non-zero value. (Zero is
/// no round; it is what a module that restarts the count at START shows
/// until the first round of the new test.)
pub fn is_new_round(seq: u64, last: u64) -> bool {
    seq != 0 && seq != last
}

/// The rounds of the adaptive mode, as `ready_seq` shows them.
///
/// `ready_seq` counts the rounds published "in this test" (the ABI); a
/// module may also keep counting across tests. Both are handled: the
/// tracker starts from the value read while no test runs (when the page is
/// mapped, and again after each STOP), and the first round of a test may be
/// `1` (count restarted) or the next number (count went on). Within a test
/// each round must be the previous plus one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundTracker {
    last: u64,
    first_of_test: bool,
}

impl RoundTracker {
    /// Start from `ready_seq` = `current`, read while no test runs.
    pub fn new(current: u64) -> Self {
        Self {
            last: current,
            first_of_test: true,
        }
    }

    /// The last value seen (what [`wait_adaptive`] compares with).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether `seq` is a round not handled yet.
    pub fn is_new(&self, seq: u64) -> bool {
        is_new_round(seq, self.last)
    }

    /// Round `seq` is being handled. `Err` (with the message) when rounds
    /// were skipped or the value went backwards; it is taken anyway.
    pub fn take(&mut self, seq: u64) -> Result<(), String> {
        let prev = self.last;
        let first = std::mem::replace(&mut self.first_of_test, false);
        self.last = seq;
        let expected = prev.wrapping_add(1);
        if seq == expected || (first && seq == 1) {
            Ok(())
        } else if seq > expected {
            Err(format!(
                "ready_seq went from {prev} to {seq}: {} round(s) never seen",
                seq - expected
            ))
        } else {
            Err(format!("ready_seq went from {prev} back to {seq}"))
        }
    }

    /// The test ended (STOP handled); `current` is `ready_seq` now. A round
    /// published but abandoned by STOP is not one to handle.
    pub fn test_ended(&mut self, current: u64) {
        self.last = current;
        self.first_of_test = true;
    }
}

/// How an adaptive wait for the next round ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdaptiveWake {
    /// `ready_seq` moved away from the last round handled (to a non-zero
    /// value, see [`RoundTracker`]): this is its value.
    /// No doorbell is needed (it may still come: a MEMORY_READY whose round
    /// was handled already is then a no-op).
    Round {
        /// The new `ready_seq`.
        seq: u64,
        /// Seen while spinning (true) or by the re-check before sleeping.
        spinning: bool,
    },
    /// efd had something: the value `next_code` returned (a code; for a
    /// [`crate::Listener`] the counter read from efd). MEMORY_READY means
    /// "look at `ready_seq`".
    Woken(u64),
    /// Nothing within the timeout.
    Timeout,
}

/// What [`wait_adaptive`] needs: the control page and efd.
pub trait AdaptivePort {
    /// `ready_seq`.
    fn ready_seq(&mut self) -> u64;
    /// Store SPINNING.
    fn set_spinning(&mut self);
    /// Store ASLEEP, full fence, re-read `ready_seq`
    /// ([`CtrlPage::prepare_to_sleep`]).
    fn prepare_to_sleep(&mut self) -> u64;
    /// Wait at most `timeout` (zero: do not block) for efd.
    fn next_code(&mut self, timeout: Duration) -> Result<Option<u64>>;
}

/// An [`AdaptivePort`] from a control page and a function that waits for
/// efd (e.g. `|t| session.next_code(t)`).
pub struct CtrlPort<'a, F> {
    /// The mapped control page.
    pub ctrl: &'a CtrlPage,
    /// Waits at most the given time for a code.
    pub next: F,
}

impl<F: FnMut(Duration) -> Result<Option<u64>>> AdaptivePort for CtrlPort<'_, F> {
    fn ready_seq(&mut self) -> u64 {
        self.ctrl.ready_seq()
    }
    fn set_spinning(&mut self) {
        self.ctrl.set_spinning();
    }
    fn prepare_to_sleep(&mut self) -> u64 {
        self.ctrl.prepare_to_sleep()
    }
    fn next_code(&mut self, timeout: Duration) -> Result<Option<u64>> {
        (self.next)(timeout)
    }
}

/// Polls of `ready_seq` between two looks at efd (and at the clock) while
/// spinning.
const POLLS_PER_CHECK: u32 = 64;

/// The listener's half of the adaptive protocol: spin on `ready_seq` for
/// at most `spin` (state SPINNING, looking at efd every 64 polls for
/// commands), then store ASLEEP, fence, re-check `ready_seq`, and sleep on
/// efd for at most `timeout`. With `spin` zero the state stays ASLEEP
/// throughout, so the module rings for every round, and a doorbell already
/// there is taken before `ready_seq` is looked at.
pub fn wait_adaptive(
    port: &mut impl AdaptivePort,
    last: u64,
    spin: Duration,
    timeout: Duration,
) -> Result<AdaptiveWake> {
    if spin.is_zero() {
        // Never spinning, every round is rung: take the doorbells as they
        // come, so that rounds found by the re-check below cannot leave
        // them piling up in the module's event queue.
        if let Some(v) = port.next_code(Duration::ZERO)? {
            return Ok(AdaptiveWake::Woken(v));
        }
    } else {
        port.set_spinning();
        let start = Instant::now();
        let mut polls: u32 = 0;
        loop {
            let seq = port.ready_seq();
            if is_new_round(seq, last) {
                return Ok(AdaptiveWake::Round {
                    seq,
                    spinning: true,
                });
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(POLLS_PER_CHECK) {
                if let Some(v) = port.next_code(Duration::ZERO)? {
                    return Ok(AdaptiveWake::Woken(v));
                }
                if start.elapsed() >= spin {
                    break;
                }
            }
            std::hint::spin_loop();
        }
    }
    let seq = port.prepare_to_sleep();
    if is_new_round(seq, last) {
        return Ok(AdaptiveWake::Round {
            seq,
            spinning: false,
        });
    }
    Ok(match port.next_code(timeout)? {
        Some(v) => AdaptiveWake::Woken(v),
        None => AdaptiveWake::Timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{LISTENER_ASLEEP, LISTENER_SPINNING};

    /// A FIFO stands in for the device in queue mode: `read()` gives at
    /// most what the buffer holds and EAGAIN when it is empty, as the
    /// module does for records.
    fn fifo_session() -> anyhow::Result<(tempfile::TempDir, Session, std::fs::File)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("kern2usr");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )?;
        let dev = Device::open(&path)?;
        let writer = std::fs::OpenOptions::new().write(true).open(&path)?;
        let s = Session::from_parts(EventFd::new()?, EventFd::new()?, dev, EventMode::Queue);
        Ok((dir, s, writer))
    }

    fn record(seq: u64, code: Code, round: u32) -> Vec<u8> {
        let mut r = Vec::with_capacity(16);
        r.extend_from_slice(&seq.to_ne_bytes());
        r.extend_from_slice(&code.value().to_ne_bytes());
        r.extend_from_slice(&round.to_ne_bytes());
        r
    }

    /// More records than one read() takes (64) behind one doorbell: every
    /// one is delivered without another doorbell.
    #[test]
    fn queue_mode_reads_every_record_behind_one_doorbell() -> anyhow::Result<()> {
        use std::io::Write;
        const N: u64 = 200;
        let (_dir, mut s, mut writer) = fifo_session()?;
        let mut all = record(1, Code::StartTest, 0);
        for seq in 2..=N {
            all.extend(record(seq, Code::MemoryReady, 1000 + seq as u32));
        }
        writer.write_all(&all)?;
        s.efd().write(N)?;
        assert_eq!(s.next_code(Duration::ZERO)?, Some(3));
        assert_eq!(s.last_round(), None);
        for seq in 2..=N {
            let code = s.next_code(Duration::ZERO)?;
            assert_eq!(code, Some(6), "record {seq} of {N} stranded");
            assert_eq!(s.last_round(), Some(1000 + seq as u32));
        }
        assert_eq!(s.next_code(Duration::ZERO)?, None);
        // next_record gives the record itself.
        writer.write_all(&record(N + 1, Code::MemoryReady, 9))?;
        s.efd().write(1)?;
        let rec = s.next_record(Duration::ZERO)?;
        assert_eq!(
            rec,
            Some((
                6,
                Some(Event {
                    seq: N + 1,
                    code: 6,
                    round: 9
                })
            ))
        );
        // A later doorbell finds the next record in sequence.
        writer.write_all(&record(N + 2, Code::StopTest, 0))?;
        s.efd().write(1)?;
        assert_eq!(s.next_code(Duration::from_secs(5))?, Some(4));
        Ok(())
    }

    /// Rounds skipped on the way to STOP are acknowledged (the module
    /// keeps an abandoned round's buffer lent until its ack).
    #[test]
    fn skipped_rounds_are_acknowledged() -> anyhow::Result<()> {
        use std::io::Write;
        let (_dir, mut s, mut writer) = fifo_session()?;
        let mut all = record(1, Code::MemoryReady, 1);
        all.extend(record(2, Code::MemoryReady, 2));
        all.extend(record(3, Code::StopTest, 0));
        writer.write_all(&all)?;
        s.efd().write(3)?;
        assert_eq!(
            s.skip_rounds_until(Code::StopTest, Duration::from_secs(5))?,
            2
        );
        assert_eq!(s.efd2().read()?, 14, "one 7 per skipped round");
        Ok(())
    }

    /// Against a node without K2U_IOC_ACK_ROUND (here a FIFO: no ioctls)
    /// the session tries it once, then only K2U_IOC_ACK.
    #[test]
    fn ack_current_uses_the_round_id_of_the_last_memory_ready() -> anyhow::Result<()> {
        use std::io::Write;
        let (_dir, mut s, mut writer) = fifo_session()?;
        writer.write_all(&record(1, Code::MemoryReady, 41))?;
        s.efd().write(1)?;
        assert_eq!(s.next_code(Duration::ZERO)?, Some(6));
        assert_eq!(s.last_round(), Some(41));
        let e = s.ack_current().err();
        // The FIFO has no K2U_IOC_ACK either: the fallback's answer.
        assert_eq!(e.and_then(|e| e.errno()), Some(rustix::io::Errno::NOTTY));
        assert!(s.acker.falls_back());
        Ok(())
    }

    #[test]
    fn tracker_accepts_restarted_and_continued_counts() {
        // Count restarted at START: 0 is no round, 1 is the first.
        let mut t = RoundTracker::new(604);
        assert!(!t.is_new(604) && !t.is_new(0) && t.is_new(1));
        assert_eq!(t.take(1), Ok(()));
        assert_eq!(t.take(2), Ok(()));
        // Round 3 published and abandoned by STOP: not handled.
        t.test_ended(3);
        assert!(!t.is_new(3));
        // Count went on.
        assert!(t.is_new(4));
        assert_eq!(t.take(4), Ok(()));
        assert_eq!(
            t.take(7),
            Err("ready_seq went from 4 to 7: 2 round(s) never seen".to_owned())
        );
        assert_eq!(t.last(), 7);
        assert_eq!(t.take(6), Err("ready_seq went from 7 back to 6".to_owned()));
        // A 1 in the middle of a test is a step back, not a restart.
        let mut t = RoundTracker::new(0);
        assert_eq!(t.take(1), Ok(()));
        assert_eq!(t.take(2), Ok(()));
        assert!(t.take(1).is_err());
    }
    use crate::device::{Access, MappedBuffer};

    fn page() -> anyhow::Result<(std::fs::File, CtrlPage, CtrlPage)> {
        let f = tempfile::tempfile()?;
        f.set_len(4096)?;
        let a =
            CtrlPage::from_mapping(MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadWrite)?)?;
        let k =
            CtrlPage::from_mapping(MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadWrite)?)?;
        Ok((f, a, k))
    }

    #[test]
    fn a_published_round_is_found_while_spinning() -> anyhow::Result<()> {
        let (_f, page, kernel) = page()?;
        // A fresh page reads ASLEEP, so the module rings for round 1 and
        // skips nothing.
        assert_eq!(page.listener_state(), LISTENER_ASLEEP);
        assert!(kernel.publish_as_kernel(1), "asleep: the module rings");
        assert_eq!(kernel.doorbells_skipped(), 0);
        let mut port = CtrlPort {
            ctrl: &page,
            next: |_| Ok(None),
        };
        let wake = wait_adaptive(&mut port, 0, Duration::from_millis(50), Duration::ZERO)?;
        assert_eq!(
            wake,
            AdaptiveWake::Round {
                seq: 1,
                spinning: true
            }
        );
        assert_eq!(page.listener_state(), LISTENER_SPINNING);
        // The module now skips the doorbell.
        assert!(!kernel.publish_as_kernel(2));
        assert_eq!(kernel.doorbells_skipped(), 1);
        Ok(())
    }

    #[test]
    fn without_a_round_it_sleeps_asleep_and_reports_codes() -> anyhow::Result<()> {
        let (_f, page, _kernel) = page()?;
        let mut asked = Vec::new();
        let mut port = CtrlPort {
            ctrl: &page,
            next: |t: Duration| {
                asked.push(t);
                Ok(if t.is_zero() { None } else { Some(4) })
            },
        };
        let wake = wait_adaptive(
            &mut port,
            0,
            Duration::from_micros(200),
            Duration::from_secs(3),
        )?;
        assert_eq!(wake, AdaptiveWake::Woken(4));
        assert_eq!(page.listener_state(), LISTENER_ASLEEP);
        assert_eq!(asked.last(), Some(&Duration::from_secs(3)));
        assert!(asked[..asked.len() - 1].iter().all(|t| t.is_zero()));
        let mut port = CtrlPort {
            ctrl: &page,
            next: |_| Ok(None),
        };
        let wake = wait_adaptive(&mut port, 0, Duration::ZERO, Duration::ZERO)?;
        assert_eq!(wake, AdaptiveWake::Timeout);
        Ok(())
    }

    #[test]
    fn zero_spin_never_says_spinning() -> anyhow::Result<()> {
        let (_f, page, kernel) = page()?;
        kernel.publish_as_kernel(1);
        let mut port = CtrlPort {
            ctrl: &page,
            next: |t: Duration| {
                if t.is_zero() {
                    Ok(None)
                } else {
                    Err(Error::Protocol(
                        "must not sleep: the re-check sees round 1".to_owned(),
                    ))
                }
            },
        };
        let wake = wait_adaptive(&mut port, 0, Duration::ZERO, Duration::ZERO)?;
        assert_eq!(
            wake,
            AdaptiveWake::Round {
                seq: 1,
                spinning: false
            }
        );
        assert_eq!(page.listener_state(), LISTENER_ASLEEP);
        assert!(kernel.publish_as_kernel(2), "asleep: the module rings");
        assert_eq!(kernel.doorbells_skipped(), 0);
        Ok(())
    }

    #[test]
    fn a_command_during_the_spin_ends_it() -> anyhow::Result<()> {
        let (_f, page, _kernel) = page()?;
        let mut port = CtrlPort {
            ctrl: &page,
            next: |_| Ok(Some(5)),
        };
        let wake = wait_adaptive(&mut port, 0, Duration::from_secs(10), Duration::ZERO)?;
        assert_eq!(wake, AdaptiveWake::Woken(5));
        Ok(())
    }
}
