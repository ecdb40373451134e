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

use crate::abi::{Code, Event, EventMode, DEFAULT_POLL_TIMEOUT_MS, SEED_DEVICE_PATH};
use crate::device::{pattern_mismatches, Access, Device, MappedBuffer};
use crate::error::{Error, Result};
use crate::eventfd::EventFd;
use crate::params::Params;

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
}

/// Where the listener acknowledges a round (MEMORY_COPIED).
pub trait AckSink {
    /// Acknowledge the round whose buffer was just copied.
    fn ack(&mut self) -> Result<()>;
}

/// How [`KernelSide`] acknowledges a round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckMode {
    /// Write MEMORY_COPIED (7) to efd2, as the seed does.
    #[default]
    EventFd,
    /// `K2U_IOC_ACK` on the device.
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
    device: Option<Device>,
    buffer: Option<MappedBuffer>,
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
            device: None,
            buffer: None,
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
}

impl AckSink for KernelSide {
    fn ack(&mut self) -> Result<()> {
        match self.ack_mode {
            AckMode::EventFd => self.efd2.write(u64::from(Code::MemoryCopied.value())),
            AckMode::Ioctl => self.device()?.ack(),
        }
    }
}

/// Settings of a [`Listener`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Device path printed in `Char dev <path> opened`.
    pub device_path: PathBuf,
    /// poll() timeout; each expiry prints `timeout in polling`.
    pub poll_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            device_path: PathBuf::from(SEED_DEVICE_PATH),
            poll_timeout: Duration::from_millis(u64::from(DEFAULT_POLL_TIMEOUT_MS)),
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
            let Some(counter) = self.src.wait(self.config.poll_timeout)? else {
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
                EventMode::Counter => self.handle(counter)?,
                EventMode::Queue => self.drain_queue()?,
            };
            if flow == Flow::Exit {
                return Ok(self.outcome);
            }
        }
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
                if self.handle(u64::from(ev.code))? == Flow::Exit {
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

    /// One code, printed as the seed's `handling_polling` does.
    fn handle(&mut self, code: u64) -> Result<Flow> {
        self.say(format_args!(
            "In handling_polling value in eventfd = {code}"
        ))?;
        let mut flow = Flow::Continue;
        match Code::from_value(code) {
            Some(Code::Mmap) => self.handle_mmap()?,
            Some(Code::StartTest) | Some(Code::StopTest) => {}
            Some(Code::ExitTest) => {
                self.say(format_args!("Stop polling cmd received"))?;
                flow = Flow::Exit;
            }
            Some(Code::MemoryReady) => self.handle_memory_ready()?,
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
                ))
            }
            Err(e) => self.problem(format_args!("{e}")),
        }
    }

    fn handle_memory_ready(&mut self) -> Result<()> {
        if !self.mapped {
            return self.problem(format_args!(
                "got MEMORY_READY (6) before the buffer was mapped (no MMAP (2) yet): not acknowledging"
            ));
        }
        let mut copy = std::mem::take(&mut self.copy);
        let copied = self.src.copy_buffer(&mut copy);
        let result = match copied {
            Ok(()) => self.verify(&copy),
            Err(e) => self.problem(format_args!("cannot copy the buffer: {e}")),
        };
        self.copy = copy;
        result?;
        match self.src.ack() {
            Ok(()) => {
                self.outcome.rounds += 1;
                Ok(())
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
    }

    struct Fake {
        mode: EventMode,
        script: VecDeque<Step>,
        pending: Vec<Event>,
        opened: bool,
        mapped: bool,
        buffer: Vec<u8>,
        acks: u32,
        mode_reads: u32,
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
                mode_reads: 0,
            }
        }
    }

    impl EventSource for Fake {
        fn eventfds(&self) -> (RawFd, RawFd) {
            (3, 4)
        }
        fn wait(&mut self, _timeout: Duration) -> Result<Option<u64>> {
            match self.script.pop_front() {
                Some(Step::Timeout) => Ok(None),
                Some(Step::Bell(n, events)) => {
                    self.pending.extend(events);
                    Ok(Some(n))
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
    }

    impl AckSink for Fake {
        fn ack(&mut self) -> Result<()> {
            self.acks += 1;
            Ok(())
        }
    }

    fn run(fake: Fake) -> Result<(Outcome, Fake, Vec<String>, String)> {
        let config = ListenerConfig {
            device_path: PathBuf::from("/dev/char/mmaptest"),
            poll_timeout: Duration::from_millis(1),
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
            reserved: 0,
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
            fake.mode_reads, 1,
            "event_mode is read once, at the first doorbell"
        );
        assert_eq!(
            outcome,
            Outcome {
                rounds: 2,
                problems: 0
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
            Bell(2, vec![ev(2, StartTest), ev(3, MemoryReady)]),
            Bell(1, vec![]),
            Timeout,
            Bell(3, vec![ev(4, MemoryReady), ev(5, StopTest)]),
            Bell(
                2,
                vec![
                    Event {
                        seq: 6,
                        code: 9,
                        reserved: 0,
                    },
                    ev(7, ExitTest),
                ],
            ),
        ];
        let (outcome, fake, out, diag) = run(Fake::new(EventMode::Queue, script))?;
        assert_eq!(out, seed_session_lines());
        assert_eq!(diag, "");
        assert_eq!(fake.acks, 2);
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
        };
        let mut l = Listener::new(side, config, Vec::new(), Vec::new());
        // One code per read, as the module guarantees in counter mode: handle
        // 4, then put 5 and let the loop finish.
        assert_eq!(l.src.wait(Duration::from_millis(100))?, Some(4));
        assert_eq!(l.handle(4)?, Flow::Continue);
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
