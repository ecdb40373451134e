//! The listener: the seed's `KernUsr` event loop, as a reusable struct.
//!
//! [`Listener`] holds the protocol logic and prints exactly the seed's lines
//! to any [`Write`] (diagnostics go to a second writer). Where the codes and
//! the buffer come from is an [`EventSource`], where acknowledgements go an
//! [`AckSink`]; [`KernelSide`] implements both for the real module, tests
//! use scripted fakes.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::abi::{Code, Event, EventMode, DEFAULT_POLL_TIMEOUT_MS, DEVICE_PATH};
use crate::ctrl::CtrlPage;
use crate::device::{is_late_ack, pattern_mismatches, Access, Device, MappedBuffer, RoundAcker};
use crate::error::{Error, Result};
use crate::eventfd::EventFd;
use crate::params::Params;
use crate::session::{wait_adaptive, AdaptivePort, AdaptiveWake, RoundTracker};

/// Where a mapped buffer lives, for the `Memory from char dev` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Number of the device's fd in this process.
    pub fd: RawFd,
    /// Start address of the mapping.
    pub addr: usize,
}

/// Where the listener's codes and the shared buffer come from.
pub trait EventSource {
    /// Numbers of efd and efd2 in this process (for the start lines).
    fn eventfds(&self) -> (RawFd, RawFd);
    /// Wait at most `timeout` for efd; `Some(counter)` once it was read,
    /// `None` on timeout.
    fn wait(&mut self, timeout: Duration) -> Result<Option<u64>>;
    /// The module's `event_mode`.
    fn event_mode(&mut self) -> Result<EventMode>;
    /// Open the device unless it is open already.
    fn open_device(&mut self) -> Result<()>;
    /// Append every pending event record to `out` (queue mode; the device
    /// is open).
    fn read_events(&mut self, out: &mut Vec<Event>) -> Result<()>;
    /// Map the buffer unless it is mapped already (the device is open).
    fn map_buffer(&mut self) -> Result<Mapping>;
    /// Copy the whole mapped buffer into `dst`.
    fn copy_buffer(&mut self, dst: &mut Vec<u8>) -> Result<()>;

    /// Map the control page unless it is mapped already (adaptive mode;
    /// the device is open). Sources without one refuse.
    fn map_ctrl(&mut self) -> Result<()> {
        Err(Error::Protocol(
            "this event source has no control page".to_owned(),
        ))
    }
    /// The control page's `ready_seq` (0 without one).
    fn ready_seq(&mut self) -> u64 {
        0
    }
    /// Store SPINNING in the control page.
    fn set_spinning(&mut self) {}
    /// Store ASLEEP, full fence, re-read `ready_seq`
    /// ([`CtrlPage::prepare_to_sleep`]; 0 without a page).
    fn prepare_to_sleep(&mut self) -> u64 {
        0
    }
}

/// The adaptive wait over an [`EventSource`]: efd's counter is what wakes.
struct SourcePort<'a, S>(&'a mut S);

impl<S: EventSource> AdaptivePort for SourcePort<'_, S> {
    fn ready_seq(&mut self) -> u64 {
        self.0.ready_seq()
    }
    fn set_spinning(&mut self) {
        self.0.set_spinning();
    }
    fn prepare_to_sleep(&mut self) -> u64 {
        self.0.prepare_to_sleep()
    }
    fn next_code(&mut self, timeout: Duration) -> Result<Option<u64>> {
        self.0.wait(timeout)
    }
}

/// Where the listener acknowledges a round (MEMORY_COPIED).
pub trait AckSink {
    /// Acknowledge the round whose buffer was just copied. `round` is its
    /// id when the listener knows it: a queue-mode record's
    /// [`Event::round`], or `ready_seq` (low 32 bits) for a round handled
    /// through the control page; `None` for a counter-mode MEMORY_READY
    /// (no id; 7 on efd2 closes the round whose 6 was read). An error for
    /// which [`is_late_ack`] holds means the round was no longer
    /// outstanding (abandoned by STOP): ignored by the module, as a late 7.
    fn ack(&mut self, round: Option<u32>) -> Result<()>;

    /// A debug message about how acks are sent, to show once (e.g. the
    /// fallback to `K2U_IOC_ACK` on a module before ABI v2).
    fn take_debug_note(&mut self) -> Option<String> {
        None
    }
}

/// How [`KernelSide`] acknowledges a round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckMode {
    /// By the round's id with `K2U_IOC_ACK_ROUND` where the listener knows
    /// it (queue-mode records, rounds handled through the control page in
    /// adaptive mode), else 7 on efd2 (counter mode, as the seed). A module
    /// without the ioctl (before ABI v2, ENOTTY) gets `K2U_IOC_ACK`
    /// instead, from the first ENOTTY on.
    #[default]
    Round,
    /// Always write MEMORY_COPIED (7) to efd2, as the seed does. (In
    /// adaptive mode a round found on the control page before its
    /// doorbell was read is not yet shown; ABI v2 ignores a 7 for it.)
    EventFd,
    /// Always `K2U_IOC_ACK` on the device.
    Ioctl,
}

/// The real module: two eventfds, the parameters, the device and its buffer.
#[derive(Debug)]
pub struct KernelSide {
    efd: EventFd,
    efd2: EventFd,
    params: Params,
    device_path: PathBuf,
    ack_mode: AckMode,
    acker: RoundAcker,
    debug_note: Option<String>,
    device: Option<Device>,
    buffer: Option<MappedBuffer>,
    ctrl: Option<CtrlPage>,
}

impl KernelSide {
    /// The module as seen through `efd`/`efd2` (created by the caller first
    /// thing, so that they get fds 3 and 4), `params` and `device_path`.
    pub fn new(
        efd: EventFd,
        efd2: EventFd,
        params: Params,
        device_path: impl Into<PathBuf>,
        ack_mode: AckMode,
    ) -> Self {
        Self {
            efd,
            efd2,
            params,
            device_path: device_path.into(),
            ack_mode,
            acker: RoundAcker::default(),
            debug_note: None,
            device: None,
            buffer: None,
            ctrl: None,
        }
    }

    /// The kernel->user eventfd.
    pub fn efd(&self) -> &EventFd {
        &self.efd
    }

    /// The user->kernel eventfd.
    pub fn efd2(&self) -> &EventFd {
        &self.efd2
    }

    /// The module parameters used.
    pub fn params(&self) -> &Params {
        &self.params
    }

    fn device(&mut self) -> Result<&Device> {
        self.open_device()?;
        self.device.as_ref().ok_or(Error::ModuleNotLoaded)
    }
}

impl EventSource for KernelSide {
    fn eventfds(&self) -> (RawFd, RawFd) {
        (self.efd.as_raw_fd(), self.efd2.as_raw_fd())
    }

    fn wait(&mut self, timeout: Duration) -> Result<Option<u64>> {
        if self.efd.wait_readable(timeout)? {
            self.efd.read().map(Some)
        } else {
            Ok(None)
        }
    }

    fn event_mode(&mut self) -> Result<EventMode> {
        self.params.event_mode()
    }

    fn open_device(&mut self) -> Result<()> {
        if self.device.is_none() {
            self.device = Some(Device::open(&self.device_path)?);
        }
        Ok(())
    }

    fn read_events(&mut self, out: &mut Vec<Event>) -> Result<()> {
        self.device()?.read_events(out).map(drop)
    }

    fn map_buffer(&mut self) -> Result<Mapping> {
        if self.buffer.is_none() {
            let params = self.params.clone();
            let buffer = self.device()?.map_buffer(&params, Access::ReadOnly)?;
            self.buffer = Some(buffer);
        }
        let fd = self.device()?.as_fd().as_raw_fd();
        let addr = self.buffer.as_ref().map_or(0, MappedBuffer::addr);
        Ok(Mapping { fd, addr })
    }

    fn copy_buffer(&mut self, dst: &mut Vec<u8>) -> Result<()> {
        match &self.buffer {
            Some(b) => {
                b.copy_to_vec(dst);
                Ok(())
            }
            None => Err(Error::BufferAccess {
                offset: 0,
                len: 0,
                size: 0,
                access: "unmapped",
            }),
        }
    }

    fn map_ctrl(&mut self) -> Result<()> {
        if self.ctrl.is_none() {
            let ctrl = self.device()?.map_ctrl()?;
            self.ctrl = Some(ctrl);
        }
        Ok(())
    }

    fn ready_seq(&mut self) -> u64 {
        self.ctrl.as_ref().map_or(0, CtrlPage::ready_seq)
    }

    fn set_spinning(&mut self) {
        if let Some(c) = &self.ctrl {
            c.set_spinning();
        }
    }

    fn prepare_to_sleep(&mut self) -> u64 {
        self.ctrl.as_ref().map_or(0, CtrlPage::prepare_to_sleep)
    }
}

impl AckSink for KernelSide {
    fn ack(&mut self, round: Option<u32>) -> Result<()> {
        match (self.ack_mode, round) {
            (AckMode::EventFd, _) | (AckMode::Round, None) => {
                self.efd2.write(u64::from(Code::MemoryCopied.value()))
            }
            (AckMode::Ioctl, _) => self.device()?.ack(),
            (AckMode::Round, Some(id)) => {
                self.open_device()?;
                let dev = self.device.as_ref().ok_or(Error::ModuleNotLoaded)?;
                let acked = self.acker.ack(dev, id).map(drop);
                if self.acker.take_fallback_news() {
                    self.debug_note = Some(RoundAcker::FALLBACK_NOTE.to_owned());
                }
                acked
            }
        }
    }

    fn take_debug_note(&mut self) -> Option<String> {
        self.debug_note.take()
    }
}

/// Settings of a [`Listener`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Device path printed in `Char dev <path> opened`.
    pub device_path: PathBuf,
    /// poll() timeout; each expiry prints `timeout in polling`.
    pub poll_timeout: Duration,
    /// Adaptive mode with this spin budget (`None`: the seed's behaviour).
    ///
    /// On MMAP the listener also maps the control page. While a test runs
    /// it spins on `ready_seq` for up to the budget (state SPINNING, the
    /// module skips the doorbell) before it sleeps on efd (state ASLEEP,
    /// after the fence-and-recheck step). A MEMORY_READY event means "look
    /// at `ready_seq`"; each round is handled once, when `ready_seq` passes
    /// the last one handled. Rounds found by spinning come with no event
    /// and print **no** line; events print the seed's lines as usual (a
    /// MEMORY_READY whose round was already handled prints its two lines
    /// and does nothing else). At exit one more line follows `done!`:
    /// `adaptive: <n> round(s) handled, <m> without a doorbell`.
    pub adaptive: Option<Duration>,
    /// Print debug messages on the diagnostics writer (`kern2usr: debug:
    /// ...`): how rounds are acknowledged, late acks.
    pub debug: bool,
}

/// The adaptive mode's default spin budget.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            device_path: PathBuf::from(DEVICE_PATH),
            poll_timeout: Duration::from_millis(u64::from(DEFAULT_POLL_TIMEOUT_MS)),
            adaptive: None,
            debug: false,
        }
    }
}

/// How a listener run ended (after EXIT_TEST).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Rounds acknowledged.
    pub rounds: u64,
    /// Problems reported on the diagnostics writer (data mismatches,
    /// sequence gaps, failed maps or acks, MEMORY_READY before mapping).
    pub problems: u64,
    /// Adaptive mode: rounds found through `ready_seq` without a doorbell
    /// (included in `rounds`).
    pub without_doorbell: u64,
    /// Acknowledgements the module refused as late (ESTALE / EPROTO: the
    /// round was no longer outstanding, e.g. abandoned by STOP); included
    /// in `rounds`, as a late 7 on efd2 would be.
    pub late_acks: u64,
}

impl Outcome {
    /// No problem was reported.
    pub fn is_clean(&self) -> bool {
        self.problems == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// Mismatching bytes reported per round before summarising.
const MAX_REPORTED_MISMATCHES: usize = 8;

/// The event loop. `S` supplies codes and the buffer and takes the acks,
/// `O` gets the seed's lines (flushed per line), `E` the diagnostics.
#[derive(Debug)]
pub struct Listener<S, O, E> {
    src: S,
    out: O,
    diag: E,
    config: ListenerConfig,
    mode: Option<EventMode>,
    mapped: bool,
    next_seq: u64,
    events: Vec<Event>,
    copy: Vec<u8>,
    outcome: Outcome,
    /// Adaptive: the rounds seen, once the control page is mapped.
    rounds: Option<RoundTracker>,
    /// Adaptive: a test runs (between START and STOP/EXIT), so spin.
    testing: bool,
}

impl<S: EventSource + AckSink, O: Write, E: Write> Listener<S, O, E> {
    /// A listener over `src`, printing to `out` and `diag`.
    pub fn new(src: S, config: ListenerConfig, out: O, diag: E) -> Self {
        Self {
            src,
            out,
            diag,
            config,
            mode: None,
            mapped: false,
            next_seq: 1,
            events: Vec::new(),
            copy: Vec::new(),
            outcome: Outcome::default(),
            rounds: None,
            testing: false,
        }
    }

    /// The event source.
    pub fn source(&self) -> &S {
        &self.src
    }

    /// Give back the source and the writers.
    pub fn into_parts(self) -> (S, O, E) {
        (self.src, self.out, self.diag)
    }

    /// [`Listener::announce`] then [`Listener::poll_loop`].
    pub fn run(&mut self) -> Result<Outcome> {
        self.announce()?;
        self.poll_loop()
    }

    /// Print the start lines: both eventfds with this process's pid, and
    /// `Start polling...`.
    pub fn announce(&mut self) -> Result<()> {
        let (efd, efd2) = self.src.eventfds();
        let pid = std::process::id();
        self.say(format_args!("Eventfd created efd={efd} pid={pid}"))?;
        self.say(format_args!("Eventfd created efd2={efd2} pid={pid}"))?;
        self.say(format_args!("Start polling..."))
    }

    /// Poll efd and handle codes until EXIT_TEST.
    pub fn poll_loop(&mut self) -> Result<Outcome> {
        loop {
            let Some(counter) = self.next_wake()? else {
                self.say(format_args!("timeout in polling"))?;
                continue;
            };
            let mode = match self.mode {
                Some(mode) => mode,
                None => {
                    let mode = self.src.event_mode()?;
                    self.mode = Some(mode);
                    mode
                }
            };
            let flow = match mode {
                EventMode::Counter => self.handle(counter, None)?,
                EventMode::Queue => self.drain_queue()?,
            };
            if flow == Flow::Exit {
                if self.config.adaptive.is_some() {
                    self.src.prepare_to_sleep();
                    let Outcome {
                        rounds,
                        without_doorbell,
                        ..
                    } = self.outcome;
                    self.say(format_args!(
                        "adaptive: {rounds} round(s) handled, {without_doorbell} without a doorbell"
                    ))?;
                }
                return Ok(self.outcome);
            }
        }
    }

    /// The next efd counter (`None` on timeout). In adaptive mode during a
    /// test, rounds found through `ready_seq` are handled on the way.
    fn next_wake(&mut self) -> Result<Option<u64>> {
        let timeout = self.config.poll_timeout;
        let (spin, tracker) = match (self.config.adaptive, self.rounds) {
            (Some(spin), Some(tracker)) if self.testing => (spin, tracker),
            _ => return self.src.wait(timeout),
        };
        let mut last = tracker.last();
        loop {
            let wake = wait_adaptive(&mut SourcePort(&mut self.src), last, spin, timeout)?;
            match wake {
                AdaptiveWake::Round { seq, .. } => {
                    self.outcome.without_doorbell += 1;
                    self.adaptive_round(seq)?;
                    last = seq;
                }
                AdaptiveWake::Woken(counter) => return Ok(Some(counter)),
                AdaptiveWake::Timeout => return Ok(None),
            }
        }
    }

    /// Adaptive: handle round `seq` (not handled yet).
    fn adaptive_round(&mut self, seq: u64) -> Result<()> {
        let taken = match &mut self.rounds {
            Some(t) => t.take(seq),
            None => Ok(()),
        };
        if let Err(msg) = taken {
            self.problem(format_args!("{msg}"))?;
        }
        // By id: the round may not be shown yet (its doorbell unread), and
        // a 6 read now may belong to an older round.
        self.copy_check_ack(Some(seq as u32))
    }

    /// Queue mode: the counter was a doorbell; handle every pending record.
    fn drain_queue(&mut self) -> Result<Flow> {
        self.src.open_device()?;
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let read = self.src.read_events(&mut events);
        let mut flow = Flow::Continue;
        if read.is_ok() {
            for (i, ev) in events.iter().enumerate() {
                self.check_seq(ev)?;
                if self.handle(u64::from(ev.code), Some(ev.round))? == Flow::Exit {
                    let left = events.len() - i - 1;
                    if left > 0 {
                        self.note(format_args!(
                            "ignoring {left} event(s) queued after EXIT_TEST"
                        ))?;
                    }
                    flow = Flow::Exit;
                    break;
                }
            }
        }
        self.events = events;
        read.map(|()| flow)
    }

    fn check_seq(&mut self, ev: &Event) -> Result<()> {
        let expected = self.next_seq;
        self.next_seq = ev.seq.wrapping_add(1);
        if ev.seq == expected {
            return Ok(());
        }
        if ev.seq > expected {
            self.problem(format_args!(
                "event sequence gap: expected seq {expected}, got {} ({} event(s) lost)",
                ev.seq,
                ev.seq - expected
            ))
        } else {
            self.problem(format_args!(
                "event sequence went backwards: expected seq {expected}, got {} (code {})",
                ev.seq, ev.code
            ))
        }
    }

    /// One code, printed as the seed's `handling_polling` does. `round`:
    /// the record's round id (queue mode), for MEMORY_READY.
    fn handle(&mut self, code: u64, round: Option<u32>) -> Result<Flow> {
        self.say(format_args!(
            "In handling_polling value in eventfd = {code}"
        ))?;
        let mut flow = Flow::Continue;
        match Code::from_value(code) {
            Some(Code::Mmap) => self.handle_mmap()?,
            Some(Code::StartTest) => self.testing = true,
            Some(Code::StopTest) => {
                self.testing = false;
                // Nothing is published after STOP: a round still shown is
                // abandoned, not one to handle. But the module keeps the
                // buffer lent until its ack (a later START's rounds wait
                // for it): return it.
                let now = self.src.ready_seq();
                if self.rounds.is_some_and(|t| t.is_new(now)) {
                    self.return_abandoned(now)?;
                }
                if let Some(t) = &mut self.rounds {
                    t.test_ended(now);
                }
            }
            Some(Code::ExitTest) => {
                self.testing = false;
                self.say(format_args!("Stop polling cmd received"))?;
                flow = Flow::Exit;
            }
            Some(Code::MemoryReady) => self.handle_memory_ready(round)?,
            Some(Code::Find) | Some(Code::MemoryCopied) | None => {
                self.say(format_args!("Unknown value {code} in eventfd"))?;
            }
        }
        self.say(format_args!("handling_polling done!"))?;
        if flow == Flow::Exit {
            self.say(format_args!("done!"))?;
        }
        Ok(flow)
    }

    fn handle_mmap(&mut self) -> Result<()> {
        self.say(format_args!("Got mmap command in polling eventfd"))?;
        if let Err(e) = self.src.open_device() {
            return self.problem(format_args!("{e}"));
        }
        let path = self.config.device_path.clone();
        self.say(format_args!("Char dev {} opened", path.display()))?;
        match self.src.map_buffer() {
            Ok(m) => {
                self.mapped = true;
                self.say(format_args!(
                    "Memory from char dev = {} mmaped to {:#x}",
                    m.fd, m.addr
                ))?;
            }
            Err(e) => return self.problem(format_args!("{e}")),
        }
        if self.config.adaptive.is_some() && self.rounds.is_none() {
            match self.src.map_ctrl() {
                // MMAP is refused while a test runs: nothing is published
                // now.
                Ok(()) => self.rounds = Some(RoundTracker::new(self.src.ready_seq())),
                Err(e) => {
                    return self.problem(format_args!(
                        "cannot map the control page, adaptive mode off: {e}"
                    ))
                }
            }
        }
        Ok(())
    }

    fn handle_memory_ready(&mut self, round: Option<u32>) -> Result<()> {
        if !self.mapped {
            return self.problem(format_args!(
                "got MEMORY_READY (6) before the buffer was mapped (no MMAP (2) yet): not acknowledging"
            ));
        }
        if let Some(tracker) = self.rounds {
            // "Look at ready_seq": the round may have been handled already.
            let seq = self.src.ready_seq();
            if !tracker.is_new(seq) {
                return Ok(());
            }
            return self.adaptive_round(seq);
        }
        self.copy_check_ack(round)
    }

    /// Adaptive mode: round `seq`, published but not handled before STOP
    /// abandoned it, is acknowledged unseen so that the module takes its
    /// buffer back. The module refuses the ack as late (it counts
    /// nothing); that is the expected answer.
    fn return_abandoned(&mut self, seq: u64) -> Result<()> {
        match self.src.ack(Some(seq as u32)) {
            Ok(()) => Ok(()),
            Err(e) if is_late_ack(&e) => self.debug(format_args!(
                "debug: round {seq}, abandoned by STOP, acknowledged unseen ({e}): its buffer is returned"
            )),
            Err(e) => self.problem(format_args!(
                "cannot acknowledge round {seq}, abandoned by STOP: {e}"
            )),
        }
    }

    fn copy_check_ack(&mut self, round: Option<u32>) -> Result<()> {
        let mut copy = std::mem::take(&mut self.copy);
        let copied = self.src.copy_buffer(&mut copy);
        let result = match copied {
            Ok(()) => self.verify(&copy),
            Err(e) => self.problem(format_args!("cannot copy the buffer: {e}")),
        };
        self.copy = copy;
        result?;
        let acked = self.src.ack(round);
        if let Some(note) = self.src.take_debug_note() {
            self.debug(format_args!("{note}"))?;
        }
        match acked {
            Ok(()) => {
                self.outcome.rounds += 1;
                Ok(())
            }
            Err(e) if is_late_ack(&e) => {
                self.outcome.rounds += 1;
                self.outcome.late_acks += 1;
                let id = round.map_or_else(|| "outstanding".to_owned(), |r| r.to_string());
                self.debug(format_args!(
                    "debug: ack of round {id} came late ({e}): the module no longer waited for it"
                ))
            }
            Err(e) => self.problem(format_args!("cannot acknowledge the round: {e}")),
        }
    }

    fn verify(&mut self, data: &[u8]) -> Result<()> {
        let mut bad = 0usize;
        for m in pattern_mismatches(data) {
            if bad < MAX_REPORTED_MISMATCHES {
                self.note(format_args!("error: {m}"))?;
            }
            bad += 1;
        }
        if bad > 0 {
            self.problem(format_args!(
                "{bad} of {} bytes differ from the fill pattern (byte i = i % 255)",
                data.len()
            ))?;
        }
        Ok(())
    }

    fn say(&mut self, line: std::fmt::Arguments<'_>) -> Result<()> {
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(Error::Output)
    }

    fn note(&mut self, line: std::fmt::Arguments<'_>) -> Result<()> {
        writeln!(self.diag, "kern2usr: {line}")
            .and_then(|()| self.diag.flush())
            .map_err(Error::Output)
    }

    /// A debug message (only with [`ListenerConfig::debug`]).
    fn debug(&mut self, line: std::fmt::Arguments<'_>) -> Result<()> {
        if self.config.debug {
            self.note(line)
        } else {
            Ok(())
        }
    }

    fn problem(&mut self, line: std::fmt::Arguments<'_>) -> Result<()> {
        self.outcome.problems += 1;
        self.note(format_args!("error: {line}"))
    }
}

impl<S, O, E> Listener<S, O, E> {
    /// The device path from the configuration.
    pub fn device_path(&self) -> &Path {
        &self.config.device_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::pattern_byte;
    use std::collections::VecDeque;

    /// One scripted wake-up of the fake.
    enum Step {
        Timeout,
        /// Counter value read from efd, and (queue mode) records readable then.
        Bell(u64, Vec<Event>),
        /// Adaptive tests: the model posts this code (numbered for you).
        Post(Code),
        /// Adaptive tests: the model publishes a round (and rings if asleep).
        Publish,
        /// Adaptive tests: a round is published with its doorbell skipped
        /// (the listener still counted as spinning), then this code posted.
        PublishUnseenThen(Code),
    }

    struct Fake {
        mode: EventMode,
        script: VecDeque<Step>,
        pending: Vec<Event>,
        opened: bool,
        mapped: bool,
        buffer: Vec<u8>,
        acks: u32,
        /// The round id each ack carried (`None`: no id, 7 on efd2).
        ack_ids: Vec<Option<u32>>,
        /// Refuse every ack with this errno (as a `K2U_IOC_ACK_ROUND`).
        refuse_acks: Option<rustix::io::Errno>,
        /// A debug note to hand out after the first ack.
        note: Option<String>,
        mode_reads: u32,
        /// The module's model for adaptive tests.
        kernel: Model,
    }

    /// A model of the module's side of the control page: codes it posts
    /// get sequence numbers; `auto` rounds follow acks back to back.
    #[derive(Default)]
    struct Model {
        ctrl_mapped: bool,
        ready: u64,
        /// How far ready_seq moves per publish (0 counts as 1).
        stride: u64,
        state: u32,
        auto: u64,
        skipped: u64,
        rung: u64,
        next_ev: u64,
        /// Counter mode: codes waiting to be read, one per read.
        codes: VecDeque<u64>,
        /// Queue mode: doorbells not yet read.
        bells: u64,
    }

    impl Fake {
        fn new(mode: EventMode, script: Vec<Step>) -> Self {
            Self {
                mode,
                script: script.into(),
                pending: Vec::new(),
                opened: false,
                mapped: false,
                buffer: (0..4096).map(pattern_byte).collect(),
                acks: 0,
                ack_ids: Vec::new(),
                refuse_acks: None,
                note: None,
                mode_reads: 0,
                kernel: Model {
                    next_ev: 1,
                    ..Model::default()
                },
            }
        }

        fn ring(&mut self, code: Code) {
            match self.mode {
                EventMode::Counter => self.kernel.codes.push_back(u64::from(code.value())),
                EventMode::Queue => {
                    let mut e = ev(self.kernel.next_ev, code);
                    if code == Code::MemoryReady {
                        e.round = self.kernel.ready as u32;
                    }
                    self.pending.push(e);
                    self.kernel.next_ev += 1;
                    self.kernel.bells += 1;
                }
            }
        }

        fn take_bell(&mut self) -> Option<u64> {
            match self.mode {
                EventMode::Counter => self.kernel.codes.pop_front(),
                EventMode::Queue => {
                    let n = std::mem::take(&mut self.kernel.bells);
                    (n > 0).then_some(n)
                }
            }
        }

        fn publish(&mut self) {
            self.kernel.ready += self.kernel.stride.max(1);
            if self.kernel.state == crate::abi::LISTENER_ASLEEP {
                self.kernel.rung += 1;
                self.ring(Code::MemoryReady);
            } else {
                self.kernel.skipped += 1;
            }
        }
    }

    impl EventSource for Fake {
        fn eventfds(&self) -> (RawFd, RawFd) {
            (3, 4)
        }
        fn wait(&mut self, timeout: Duration) -> Result<Option<u64>> {
            if let Some(v) = self.take_bell() {
                return Ok(Some(v));
            }
            if timeout.is_zero() {
                return Ok(None);
            }
            match self.script.pop_front() {
                Some(Step::Timeout) => Ok(None),
                Some(Step::Bell(n, events)) => {
                    self.pending.extend(events);
                    Ok(Some(n))
                }
                Some(Step::Post(code)) => {
                    self.ring(code);
                    Ok(self.take_bell())
                }
                Some(Step::Publish) => {
                    assert_eq!(
                        self.kernel.state,
                        crate::abi::LISTENER_ASLEEP,
                        "sleeping while SPINNING"
                    );
                    self.publish();
                    Ok(self.take_bell())
                }
                Some(Step::PublishUnseenThen(code)) => {
                    self.kernel.ready += self.kernel.stride.max(1);
                    self.kernel.skipped += 1;
                    self.ring(code);
                    Ok(self.take_bell())
                }
                None => Err(Error::Poll(std::io::Error::other("script exhausted"))),
            }
        }
        fn event_mode(&mut self) -> Result<EventMode> {
            self.mode_reads += 1;
            Ok(self.mode)
        }
        fn open_device(&mut self) -> Result<()> {
            self.opened = true;
            Ok(())
        }
        fn read_events(&mut self, out: &mut Vec<Event>) -> Result<()> {
            assert!(self.opened, "read before open");
            out.append(&mut self.pending);
            Ok(())
        }
        fn map_buffer(&mut self) -> Result<Mapping> {
            assert!(self.opened, "map before open");
            self.mapped = true;
            Ok(Mapping {
                fd: 5,
                addr: 0x7f75_cedb_4000,
            })
        }
        fn copy_buffer(&mut self, dst: &mut Vec<u8>) -> Result<()> {
            assert!(self.mapped, "copy before map");
            dst.clear();
            dst.extend_from_slice(&self.buffer);
            Ok(())
        }
        fn map_ctrl(&mut self) -> Result<()> {
            assert!(self.mapped, "control page before the buffer");
            self.kernel.ctrl_mapped = true;
            Ok(())
        }
        fn ready_seq(&mut self) -> u64 {
            self.kernel.ready
        }
        fn set_spinning(&mut self) {
            self.kernel.state = crate::abi::LISTENER_SPINNING;
        }
        fn prepare_to_sleep(&mut self) -> u64 {
            self.kernel.state = crate::abi::LISTENER_ASLEEP;
            self.kernel.ready
        }
    }

    impl AckSink for Fake {
        fn ack(&mut self, round: Option<u32>) -> Result<()> {
            self.acks += 1;
            self.ack_ids.push(round);
            if let Some(errno) = self.refuse_acks {
                return Err(Error::Ioctl {
                    name: "K2U_IOC_ACK_ROUND",
                    source: errno.into(),
                });
            }
            if self.kernel.auto > 0 {
                self.kernel.auto -= 1;
                self.publish();
            }
            Ok(())
        }

        fn take_debug_note(&mut self) -> Option<String> {
            self.note.take()
        }
    }

    fn run(fake: Fake) -> Result<(Outcome, Fake, Vec<String>, String)> {
        run_with(fake, None)
    }

    fn run_with(
        fake: Fake,
        adaptive: Option<Duration>,
    ) -> Result<(Outcome, Fake, Vec<String>, String)> {
        run_cfg(fake, adaptive, false)
    }

    fn run_cfg(
        fake: Fake,
        adaptive: Option<Duration>,
        debug: bool,
    ) -> Result<(Outcome, Fake, Vec<String>, String)> {
        let config = ListenerConfig {
            device_path: PathBuf::from("/dev/char/mmaptest"),
            poll_timeout: Duration::from_millis(1),
            adaptive,
            debug,
        };
        let mut l = Listener::new(fake, config, Vec::new(), Vec::new());
        let outcome = l.run()?;
        let (fake, out, diag) = l.into_parts();
        let out = String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_owned)
            .collect();
        Ok((
            outcome,
            fake,
            out,
            String::from_utf8_lossy(&diag).into_owned(),
        ))
    }

    fn ev(seq: u64, code: Code) -> Event {
        Event {
            seq,
            code: code.value(),
            round: 0,
        }
    }

    fn ready(seq: u64, round: u32) -> Event {
        Event {
            round,
            ..ev(seq, Code::MemoryReady)
        }
    }

    fn start_lines() -> Vec<String> {
        let pid = std::process::id();
        vec![
            format!("Eventfd created efd=3 pid={pid}"),
            format!("Eventfd created efd2=4 pid={pid}"),
            "Start polling...".to_owned(),
        ]
    }

    /// The seed's whole session, from both modes' point of view.
    fn seed_session_lines() -> Vec<String> {
        let mut lines = start_lines();
        lines.extend(
            [
                "timeout in polling",
                "In handling_polling value in eventfd = 2",
                "Got mmap command in polling eventfd",
                "Char dev /dev/char/mmaptest opened",
                "Memory from char dev = 5 mmaped to 0x7f75cedb4000",
                "handling_polling done!",
                "In handling_polling value in eventfd = 3",
                "handling_polling done!",
                "In handling_polling value in eventfd = 6",
                "handling_polling done!",
                "timeout in polling",
                "In handling_polling value in eventfd = 6",
                "handling_polling done!",
                "In handling_polling value in eventfd = 4",
                "handling_polling done!",
                "In handling_polling value in eventfd = 9",
                "Unknown value 9 in eventfd",
                "handling_polling done!",
                "In handling_polling value in eventfd = 5",
                "Stop polling cmd received",
                "handling_polling done!",
                "done!",
            ]
            .map(str::to_owned),
        );
        lines
    }

    #[test]
    fn counter_mode_prints_the_seed_lines() -> Result<()> {
        use Step::*;
        let script = [2, 3, 6]
            .into_iter()
            .map(|c| Bell(c, vec![]))
            .chain([Timeout])
            .chain([6, 4, 9, 5].into_iter().map(|c| Bell(c, vec![])));
        let script = std::iter::once(Timeout).chain(script).collect();
        let (outcome, fake, out, diag) = run(Fake::new(EventMode::Counter, script))?;
        assert_eq!(out, seed_session_lines());
        assert_eq!(diag, "");
        assert_eq!(fake.acks, 2);
        assert_eq!(
            fake.ack_ids,
            [None, None],
            "counter mode: no ids, 7 on efd2"
        );
        assert_eq!(
            fake.mode_reads, 1,
            "event_mode is read once, at the first doorbell"
        );
        assert_eq!(
            outcome,
            Outcome {
                rounds: 2,
                problems: 0,
                without_doorbell: 0,
                late_acks: 0
            }
        );
        Ok(())
    }

    #[test]
    fn queue_mode_prints_the_same_lines_per_record() -> Result<()> {
        use Code::*;
        use Step::*;
        let script = vec![
            Timeout,
            Bell(1, vec![ev(1, Mmap)]),
            // Several records behind one doorbell, one doorbell with none
            // left (its record was drained by the previous read).
            Bell(2, vec![ev(2, StartTest), ready(3, 21)]),
            Bell(1, vec![]),
            Timeout,
            Bell(3, vec![ready(4, 22), ev(5, StopTest)]),
            Bell(
                2,
                vec![
                    Event {
                        seq: 6,
                        code: 9,
                        round: 0,
                    },
                    ev(7, ExitTest),
                ],
            ),
        ];
        let (outcome, fake, out, diag) = run(Fake::new(EventMode::Queue, script))?;
        assert_eq!(out, seed_session_lines());
        assert_eq!(diag, "");
        assert_eq!(fake.acks, 2);
        assert_eq!(
            fake.ack_ids,
            [Some(21), Some(22)],
            "each round acked by its record's id"
        );
        assert!(outcome.is_clean());
        Ok(())
    }

    #[test]
    fn memory_ready_before_mmap_is_an_error_without_ack() -> Result<()> {
        use Step::*;
        let script = vec![Bell(6, vec![]), Bell(5, vec![])];
        let (outcome, fake, out, diag) = run(Fake::new(EventMode::Counter, script))?;
        assert_eq!(fake.acks, 0);
        assert_eq!(outcome.problems, 1);
        assert_eq!(
            out[3..5],
            [
                "In handling_polling value in eventfd = 6",
                "handling_polling done!"
            ]
        );
        assert!(
            diag.contains("MEMORY_READY (6) before the buffer was mapped"),
            "{diag}"
        );
        Ok(())
    }

    #[test]
    fn corrupted_byte_is_reported_with_offset_and_still_acked() -> Result<()> {
        use Step::*;
        let script = vec![Bell(2, vec![]), Bell(6, vec![]), Bell(5, vec![])];
        let mut fake = Fake::new(EventMode::Counter, script);
        fake.buffer[1000] ^= 0xFF;
        let (outcome, fake, _out, diag) = run(fake)?;
        assert_eq!(fake.acks, 1);
        assert_eq!(outcome.problems, 1);
        let expected = pattern_byte(1000);
        let line = format!(
            "kern2usr: error: data mismatch at offset 1000: expected {expected:#04x}, got {:#04x}\n",
            expected ^ 0xFF
        );
        assert!(diag.starts_with(&line), "{diag}");
        assert!(diag.contains("1 of 4096 bytes differ"), "{diag}");
        Ok(())
    }

    #[test]
    fn sequence_gap_is_reported() -> Result<()> {
        use Code::*;
        use Step::*;
        let script = vec![
            Bell(1, vec![ev(1, Mmap)]),
            Bell(1, vec![ev(3, StartTest)]),
            Bell(1, vec![ev(4, ExitTest), ev(5, MemoryReady)]),
        ];
        let (outcome, fake, out, diag) = run(Fake::new(EventMode::Queue, script))?;
        assert_eq!(outcome.problems, 1);
        assert_eq!(fake.acks, 0, "records after EXIT_TEST are not handled");
        assert_eq!(out.last().map(String::as_str), Some("done!"));
        assert!(
            diag.contains("event sequence gap: expected seq 2, got 3 (1 event(s) lost)"),
            "{diag}"
        );
        assert!(
            diag.contains("ignoring 1 event(s) queued after EXIT_TEST"),
            "{diag}"
        );
        Ok(())
    }

    fn block(code: u64) -> [String; 2] {
        [
            format!("In handling_polling value in eventfd = {code}"),
            "handling_polling done!".to_owned(),
        ]
    }

    /// Round 1 wakes the sleeping listener; rounds 2-5 follow its acks
    /// back to back. Round 2 is published while it is still ASLEEP (rung,
    /// but found by spinning first: its MEMORY_READY is a no-op), 3-5 while
    /// it spins (skipped). Each round is acknowledged exactly once.
    fn adaptive_session(mode: EventMode) -> Result<()> {
        use Step::*;
        let script = vec![
            Post(Code::Mmap),
            Post(Code::StartTest),
            Publish,
            Post(Code::StopTest),
            Post(Code::ExitTest),
        ];
        let mut fake = Fake::new(mode, script);
        fake.kernel.auto = 4;
        let (outcome, fake, out, diag) = run_with(fake, Some(Duration::from_millis(2)))?;
        assert_eq!(diag, "");
        assert_eq!(fake.acks, 5);
        // Each round by its ready_seq, in both modes: round 2 is acked
        // before its doorbell (rung while ASLEEP) is read, and in counter
        // mode the 6 read next belongs to round 2 while ready_seq may show
        // a later round.
        assert_eq!(fake.ack_ids, (1..=5).map(Some).collect::<Vec<_>>());
        assert_eq!(fake.kernel.ready, 5);
        assert_eq!(fake.kernel.skipped, 3);
        assert_eq!(fake.kernel.rung, 2);
        assert_eq!(
            outcome,
            Outcome {
                rounds: 5,
                problems: 0,
                without_doorbell: 4,
                late_acks: 0
            }
        );
        let mut want = start_lines();
        want.extend(
            [
                "In handling_polling value in eventfd = 2",
                "Got mmap command in polling eventfd",
                "Char dev /dev/char/mmaptest opened",
                "Memory from char dev = 5 mmaped to 0x7f75cedb4000",
                "handling_polling done!",
            ]
            .map(str::to_owned),
        );
        for code in [3, 6, 6, 4] {
            want.extend(block(code));
        }
        want.extend(
            [
                "In handling_polling value in eventfd = 5",
                "Stop polling cmd received",
                "handling_polling done!",
                "done!",
                "adaptive: 5 round(s) handled, 4 without a doorbell",
            ]
            .map(str::to_owned),
        );
        assert_eq!(out, want);
        Ok(())
    }

    #[test]
    fn adaptive_counter_mode_handles_each_round_once() -> Result<()> {
        adaptive_session(EventMode::Counter)
    }

    #[test]
    fn adaptive_queue_mode_handles_each_round_once() -> Result<()> {
        adaptive_session(EventMode::Queue)
    }

    /// Spin budget 0: never SPINNING, so every round is rung and printed.
    #[test]
    fn adaptive_with_zero_spin_sleeps_every_round() -> Result<()> {
        use Step::*;
        let script = vec![
            Post(Code::Mmap),
            Post(Code::StartTest),
            Publish,
            Post(Code::StopTest),
            Post(Code::ExitTest),
        ];
        let mut fake = Fake::new(EventMode::Queue, script);
        fake.kernel.auto = 3;
        let (outcome, fake, out, _diag) = run_with(fake, Some(Duration::ZERO))?;
        assert_eq!(fake.acks, 4);
        assert_eq!(fake.kernel.skipped, 0);
        assert_eq!(fake.kernel.rung, 4);
        assert!(outcome.is_clean());
        let sixes = out
            .iter()
            .filter(|l| *l == "In handling_polling value in eventfd = 6")
            .count();
        assert_eq!(sixes, 4);
        Ok(())
    }

    /// A round published just before STOP and never seen (its doorbell
    /// skipped) is acknowledged at STOP, by its id: the module keeps the
    /// buffer lent until then. Its refusal as late is no problem.
    #[test]
    fn adaptive_stop_returns_an_unseen_round() -> Result<()> {
        use Step::*;
        for mode in [EventMode::Counter, EventMode::Queue] {
            let script = vec![
                Post(Code::Mmap),
                Post(Code::StartTest),
                Publish,
                PublishUnseenThen(Code::StopTest),
                Post(Code::ExitTest),
            ];
            let fake = Fake::new(mode, script);
            let (outcome, fake, _out, diag) = run_with(fake, Some(Duration::ZERO))?;
            assert_eq!(diag, "", "{mode:?}");
            assert_eq!(fake.ack_ids, [Some(1), Some(2)], "{mode:?}");
            assert_eq!(
                outcome.rounds, 1,
                "{mode:?}: the unseen round is not handled"
            );
            assert_eq!(outcome.problems, 0, "{mode:?}");
        }
        Ok(())
    }

    /// The module refuses acks as late (ESTALE/EPROTO: a STOP abandoned
    /// the round): not a problem, counted, a debug line only with debug on.
    #[test]
    fn late_acks_are_counted_not_reported() -> Result<()> {
        use Code::*;
        use Step::*;
        let script = || {
            vec![
                Bell(1, vec![ev(1, Mmap)]),
                Bell(3, vec![ev(2, StartTest), ready(3, 7), ev(4, StopTest)]),
                Bell(1, vec![ev(5, ExitTest)]),
            ]
        };
        for (errno, debug) in [
            (rustix::io::Errno::STALE, false),
            (rustix::io::Errno::PROTO, true),
        ] {
            let mut fake = Fake::new(EventMode::Queue, script());
            fake.refuse_acks = Some(errno);
            let (outcome, fake, _out, diag) = run_cfg(fake, None, debug)?;
            assert_eq!(fake.ack_ids, [Some(7)]);
            assert_eq!(
                outcome,
                Outcome {
                    rounds: 1,
                    problems: 0,
                    without_doorbell: 0,
                    late_acks: 1
                }
            );
            if debug {
                assert!(
                    diag.starts_with("kern2usr: debug: ack of round 7 came late"),
                    "{diag}"
                );
            } else {
                assert_eq!(diag, "");
            }
        }
        // Any other refusal is a problem.
        let mut fake = Fake::new(EventMode::Queue, script());
        fake.refuse_acks = Some(rustix::io::Errno::BADF);
        let (outcome, _fake, _out, diag) = run(fake)?;
        assert_eq!((outcome.problems, outcome.late_acks), (1, 0));
        assert!(diag.contains("cannot acknowledge the round"), "{diag}");
        Ok(())
    }

    /// The sink's debug note (the fallback to K2U_IOC_ACK) is shown once,
    /// and only with debug on.
    #[test]
    fn the_sinks_debug_note_shows_with_debug_only() -> Result<()> {
        use Step::*;
        let script = || {
            vec![
                Bell(2, vec![]),
                Bell(6, vec![]),
                Bell(6, vec![]),
                Bell(5, vec![]),
            ]
        };
        for debug in [false, true] {
            let mut fake = Fake::new(EventMode::Counter, script());
            fake.note = Some(RoundAcker::FALLBACK_NOTE.to_owned());
            let (outcome, fake, _out, diag) = run_cfg(fake, None, debug)?;
            assert_eq!(fake.acks, 2);
            assert!(outcome.is_clean());
            let want = if debug {
                format!("kern2usr: {}\n", RoundAcker::FALLBACK_NOTE)
            } else {
                String::new()
            };
            assert_eq!(diag, want);
        }
        Ok(())
    }

    /// KernelSide's ack modes, against a real efd2 and a node without the
    /// kern2usr ioctls (a FIFO: every ioctl is ENOTTY).
    #[test]
    fn kernel_side_acks_by_mode_and_falls_back_on_enotty() -> anyhow::Result<()> {
        use rustix::io::Errno;
        let dir = tempfile::tempdir()?;
        let node = dir.path().join("dev");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &node,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )?;
        let side = |mode| -> anyhow::Result<KernelSide> {
            Ok(KernelSide::new(
                EventFd::new()?,
                EventFd::new_nonblocking()?,
                Params::at_dir(dir.path()),
                &node,
                mode,
            ))
        };
        let efd2_value = |s: &KernelSide| s.efd2().read().ok();
        // Round without an id (counter mode): 7 on efd2, no ioctl.
        let mut s = side(AckMode::Round)?;
        s.ack(None)?;
        assert_eq!(efd2_value(&s), Some(7));
        // Round with an id: K2U_IOC_ACK_ROUND, ENOTTY, K2U_IOC_ACK (also
        // ENOTTY here), said once in a debug note; nothing on efd2.
        let e = s.ack(Some(9)).err().and_then(|e| e.errno());
        assert_eq!(e, Some(Errno::NOTTY));
        assert_eq!(
            s.take_debug_note().as_deref(),
            Some(RoundAcker::FALLBACK_NOTE)
        );
        assert_eq!(efd2_value(&s), None);
        let _ = s.ack(Some(10));
        assert_eq!(s.take_debug_note(), None, "said once");
        assert!(s.acker.falls_back());
        // EventFd: always 7, even with an id.
        let mut s = side(AckMode::EventFd)?;
        s.ack(Some(3))?;
        assert_eq!(efd2_value(&s), Some(7));
        // Ioctl: always K2U_IOC_ACK.
        let mut s = side(AckMode::Ioctl)?;
        let e = s.ack(None).err().and_then(|e| e.errno());
        assert_eq!(e, Some(Errno::NOTTY));
        assert!(!s.acker.falls_back(), "K2U_IOC_ACK_ROUND never tried");
        assert_eq!(efd2_value(&s), None);
        Ok(())
    }

    /// A ready_seq that jumps is a problem (a round was never handled).
    #[test]
    fn adaptive_reports_a_jump_in_ready_seq() -> Result<()> {
        use Step::*;
        let script = vec![
            Post(Code::Mmap),
            Post(Code::StartTest),
            Publish,
            Post(Code::ExitTest),
        ];
        let mut fake = Fake::new(EventMode::Counter, script);
        fake.kernel.stride = 2; // round 1 "lost": the publish makes 2
        let (outcome, fake, _out, diag) = run_with(fake, Some(Duration::from_micros(100)))?;
        assert_eq!(fake.acks, 1);
        assert_eq!(outcome.problems, 1, "{diag}");
        assert!(
            diag.contains("ready_seq went from 0 to 2: 1 round(s) never seen"),
            "{diag}"
        );
        Ok(())
    }

    /// The real path against a real eventfd: counter mode, scripted by
    /// writes to efd before the loop starts polling.
    #[test]
    fn kernel_side_reads_codes_from_a_real_eventfd() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(crate::abi::param::EVENT_MODE), "counter\n")?;
        let side = KernelSide::new(
            EventFd::new()?,
            EventFd::new_nonblocking()?,
            Params::at_dir(dir.path()),
            "/nonexistent",
            AckMode::EventFd,
        );
        side.efd().write(4)?;
        let config = ListenerConfig {
            device_path: PathBuf::from("/nonexistent"),
            poll_timeout: Duration::from_millis(1),
            adaptive: None,
            debug: false,
        };
        let mut l = Listener::new(side, config, Vec::new(), Vec::new());
        // One code per read, as the module guarantees in counter mode: handle
        // 4, then put 5 and let the loop finish.
        assert_eq!(l.src.wait(Duration::from_millis(100))?, Some(4));
        assert_eq!(l.handle(4, None)?, Flow::Continue);
        l.src.efd().write(5)?;
        let outcome = l.poll_loop()?;
        assert!(outcome.is_clean());
        let (side, out, _) = l.into_parts();
        let out = String::from_utf8(out)?;
        assert!(out.ends_with("Stop polling cmd received\nhandling_polling done!\ndone!\n"));
        let acks = side.efd2().read().err().and_then(|e| e.errno());
        assert_eq!(acks, Some(rustix::io::Errno::AGAIN), "nothing acked");
        Ok(())
    }
}
