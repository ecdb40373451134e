//! The typed listener API: a [`Channel`] delivers [`Event`]s and hands out
//! each round as a [`Round`] guard, a zero-copy view of the buffer that the
//! borrow checker keeps from outliving the round.
//!
//! Why a new type beside [`crate::Session`]: `Session` is the protocol
//! driver the benchmark and the in-VM suites use (raw codes, its own acks
//! by several paths, no mapping of its own). `Channel` owns the mapping, so
//! it can lend it out per round, and it only offers what is safe to offer:
//! one open round at a time, acknowledged by its id. It reuses `Session`
//! underneath for reading codes in both event modes.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;

use crate::abi::{self, Code, EventMode, ABI_VERSION, DEVICE_PATH};
use crate::ctrl::CtrlPage;
use crate::device::{Access, Device, MappedBuffer};
use crate::error::{Error, Result};
use crate::eventfd::EventFd;
use crate::session::Session;

/// What the module sends a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// MMAP (2): map the buffer. A [`Channel`] maps it when it opens, so
    /// this is informational.
    Mmap,
    /// START_TEST (3): rounds begin.
    Start,
    /// STOP_TEST (4): rounds end; a round still outstanding is abandoned.
    Stop,
    /// EXIT_TEST (5): the listener should go away.
    Exit,
    /// MEMORY_READY (6): a round was published; [`Channel::round`] gives
    /// its guard.
    MemoryReady {
        /// The round's id (low 32 bits of the control page's `ready_seq`
        /// it published), what `K2U_IOC_ACK_ROUND` takes.
        round: u32,
    },
}

impl Event {
    /// The protocol code this event carries.
    pub fn code(self) -> Code {
        match self {
            Event::Mmap => Code::Mmap,
            Event::Start => Code::StartTest,
            Event::Stop => Code::StopTest,
            Event::Exit => Code::ExitTest,
            Event::MemoryReady { .. } => Code::MemoryReady,
        }
    }

    /// The event for a delivered `code`; `round` is used for MEMORY_READY.
    /// Codes the kernel never delivers (1, 7, anything else, or two codes
    /// that added up in a shared counter) are a protocol error.
    fn from_code(code: u64, round: u32) -> Result<Event> {
        const MMAP: u64 = Code::Mmap.value() as u64;
        const START: u64 = Code::StartTest.value() as u64;
        const STOP: u64 = Code::StopTest.value() as u64;
        const EXIT: u64 = Code::ExitTest.value() as u64;
        const READY: u64 = Code::MemoryReady.value() as u64;
        match code {
            MMAP => Ok(Event::Mmap),
            START => Ok(Event::Start),
            STOP => Ok(Event::Stop),
            EXIT => Ok(Event::Exit),
            READY => Ok(Event::MemoryReady { round }),
            other => Err(Error::Protocol(format!(
                "code {other} is not one the module delivers (2-6)"
            ))),
        }
    }
}

/// What `K2U_IOC_INFO` reports, typed and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// The module's ABI version (equal to [`ABI_VERSION`] once checked).
    pub abi_version: u32,
    /// How codes are delivered.
    pub event_mode: EventMode,
    /// Size of the mappable buffer in bytes.
    pub buffer_size: usize,
    /// Period of the timer rounds.
    pub period: Duration,
}

impl TryFrom<abi::Info> for Info {
    type Error = Error;

    /// Check the ABI version first (a module of another version may lay
    /// out the rest differently), then the event mode.
    fn try_from(raw: abi::Info) -> Result<Info> {
        if raw.abi_version != ABI_VERSION {
            return Err(Error::AbiMismatch {
                module: raw.abi_version,
                library: ABI_VERSION,
            });
        }
        let event_mode = match raw.event_mode {
            m if m == EventMode::Counter as u32 => EventMode::Counter,
            m if m == EventMode::Queue as u32 => EventMode::Queue,
            m => return Err(Error::UnknownEventMode(m)),
        };
        let buffer_size = usize::try_from(raw.buffer_size).map_err(|_| {
            Error::Protocol(format!("buffer size {} does not fit", raw.buffer_size))
        })?;
        Ok(Info {
            abi_version: raw.abi_version,
            event_mode,
            buffer_size,
            period: Duration::from_millis(u64::from(raw.period_ms)),
        })
    }
}

/// This process as the module's listener, typed: its own eventfds
/// attached with `K2U_IOC_REGISTER`, the buffer mapped read-only.
///
/// [`Channel::next`] blocks (with a timeout), [`Channel::try_next`] never
/// does, and [`AsFd`] gives the eventfd to wait on in an existing
/// epoll/mio loop (readable = call [`Channel::try_next`] until `None`).
///
/// ```no_run
/// use std::time::Duration;
/// use kern2usr::{Channel, Event};
///
/// let mut ch = Channel::open()?;
/// while let Some(ev) = ch.next(Duration::from_secs(5))? {
///     match ev {
///         Event::MemoryReady { .. } => {
///             if let Some(round) = ch.round() {
///                 let sum: u64 = round.iter().map(|&b| u64::from(b)).sum();
///                 println!("round {}: {} bytes, sum {sum}", round.id(), round.len());
///                 round.ack()?;
///             }
///         }
///         Event::Exit => break,
///         _ => {}
///     }
/// }
/// # Ok::<(), kern2usr::Error>(())
/// ```
#[derive(Debug)]
pub struct Channel {
    session: Session,
    buffer: MappedBuffer,
    info: Info,
    /// Counter mode: where the round ids are read (the 6 carries none).
    ctrl: Option<CtrlPage>,
    /// The round shown by the last MEMORY_READY and not yet acknowledged.
    open_round: Option<u32>,
}

impl Channel {
    /// [`Channel::open_path`] of the default node, [`DEVICE_PATH`].
    pub fn open() -> Result<Self> {
        Self::open_path(DEVICE_PATH)
    }

    /// Open `device`, check its ABI version and event mode
    /// (`K2U_IOC_INFO`), map the buffer read-only, create two
    /// non-blocking eventfds and attach them (`K2U_IOC_REGISTER`).
    ///
    /// A module of another ABI version is [`Error::AbiMismatch`], naming
    /// both versions.
    ///
    /// ```no_run
    /// let ch = kern2usr::Channel::open_path("/dev/kern2usr")?;
    /// assert_eq!(ch.info().abi_version, kern2usr::abi::ABI_VERSION);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn open_path(device: impl AsRef<Path>) -> Result<Self> {
        let dev = Device::open(device)?;
        let info = Info::try_from(dev.info()?)?;
        let buffer = dev.map(info.buffer_size, Access::ReadOnly)?;
        let ctrl = match info.event_mode {
            EventMode::Counter => Some(dev.map_ctrl()?),
            EventMode::Queue => None,
        };
        let efd = EventFd::new_nonblocking()?;
        let efd2 = EventFd::new_nonblocking()?;
        dev.register(efd.as_fd(), efd2.as_fd())?;
        Ok(Self::from_parts(
            Session::from_parts(efd, efd2, dev, info.event_mode),
            buffer,
            info,
            ctrl,
        ))
    }

    fn from_parts(
        session: Session,
        buffer: MappedBuffer,
        info: Info,
        ctrl: Option<CtrlPage>,
    ) -> Self {
        Self {
            session,
            buffer,
            info,
            ctrl,
            open_round: None,
        }
    }

    /// A channel over stand-ins for the module (host tests): `efd`/`efd2`
    /// as the kernel would hold them, `records` a readable fd (a pipe)
    /// standing for the device in queue mode, `buffer` and (counter mode)
    /// `ctrl` mappings of ordinary files. Acks by id go to `records` as an
    /// ioctl and fail there (ENOTTY); counter mode acks by 7 on efd2.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_fakes(
        efd: EventFd,
        efd2: EventFd,
        records: std::os::fd::OwnedFd,
        buffer: MappedBuffer,
        ctrl: Option<CtrlPage>,
        event_mode: EventMode,
    ) -> Self {
        let info = Info {
            abi_version: ABI_VERSION,
            event_mode,
            buffer_size: buffer.len(),
            period: Duration::from_millis(u64::from(abi::DEFAULT_PERIOD_MS)),
        };
        let dev = Device::from_fd(records, "fake".into());
        Self::from_parts(
            Session::from_parts(efd, efd2, dev, event_mode),
            buffer,
            info,
            ctrl,
        )
    }

    /// What the module reported at open.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The next event, waiting at most `timeout` (zero: only what is
    /// there now); `Ok(None)` when none came in time.
    ///
    /// A gap in the event sequence or a code the module never sends is
    /// an error. A MEMORY_READY opens the round [`Channel::round`] lends
    /// out; STOP_TEST forgets an open round (the module abandoned it).
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let Some(code) = self.session.next_code(timeout)? else {
            return Ok(None);
        };
        let round = match (code == u64::from(Code::MemoryReady.value()), &self.ctrl) {
            (false, _) => 0,
            (true, Some(ctrl)) => ctrl.ready_seq() as u32,
            (true, None) => self
                .session
                .last_round()
                .ok_or_else(|| Error::Protocol("MEMORY_READY without a round id".to_owned()))?,
        };
        let event = Event::from_code(code, round)?;
        match event {
            Event::MemoryReady { round } => self.open_round = Some(round),
            Event::Stop | Event::Exit => self.open_round = None,
            Event::Mmap | Event::Start => {}
        }
        Ok(Some(event))
    }

    /// The next event if one is there now, without blocking: "nothing
    /// yet" (EAGAIN underneath) is `Ok(None)`, not an error.
    ///
    /// ```no_run
    /// # let mut ch = kern2usr::Channel::open()?;
    /// // After epoll/mio reported the channel's fd readable:
    /// while let Some(event) = ch.try_next()? {
    ///     println!("{event:?}");
    /// }
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn try_next(&mut self) -> Result<Option<Event>> {
        self.next(Duration::ZERO)
    }

    /// The round shown by the last [`Event::MemoryReady`] and not yet
    /// acknowledged, as a guard over the buffer; `None` when there is none
    /// (none came, it was acknowledged, or STOP_TEST abandoned it).
    pub fn round(&mut self) -> Option<Round<'_>> {
        let id = self.open_round?;
        Some(Round { channel: self, id })
    }

    /// The mapped buffer (read-only), for copies outside a round.
    pub fn buffer(&self) -> &MappedBuffer {
        &self.buffer
    }

    fn ack(&mut self, id: u32) -> Result<()> {
        let r = match self.info.event_mode {
            // Counter mode has no ids on the wire: 7 on efd2 closes the
            // shown round, which is this one (one round at a time).
            EventMode::Counter => self
                .session
                .efd2()
                .write(u64::from(Code::MemoryCopied.value())),
            EventMode::Queue => self
                .session
                .device()
                .ack_round(id)
                .map_err(|e| match e.errno() {
                    Some(errno @ (Errno::STALE | Errno::PROTO)) => Error::RoundAbandoned {
                        round: id,
                        source: errno.into(),
                    },
                    _ => e,
                }),
        };
        // Whatever the answer, this round is done with: a refused ack means
        // the module does not hold it open any more.
        self.open_round = None;
        r
    }
}

impl AsFd for Channel {
    /// The kernel->user eventfd: readable when an event may be waiting
    /// (then call [`Channel::try_next`] until it returns `None`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.session.efd().as_fd()
    }
}

impl AsRawFd for Channel {
    /// The kernel->user eventfd, as [`AsFd::as_fd`] (for reactors that
    /// take raw fds, such as tokio's `AsyncFd`).
    fn as_raw_fd(&self) -> RawFd {
        self.session.efd().as_raw_fd()
    }
}

/// One round, lent out by [`Channel::round`]: a zero-copy view of the
/// module's buffer (`Deref<Target = [u8]>`) until [`Round::ack`].
///
/// ```no_run
/// # let mut ch = kern2usr::Channel::open()?;
/// if let Some(round) = ch.round() {
///     let first: &[u8] = &round[..16]; // borrows the guard
///     println!("round {} starts {first:?}", round.id());
///     round.ack()?; // `first` cannot be used past this point
/// }
/// # Ok::<(), kern2usr::Error>(())
/// ```
///
/// # Why the view is sound
///
/// The module fills the buffer only in `k2u_round_begin()`
/// (`kernel/c/round.c`), which refuses to run while a round is open or
/// acknowledged but not yet counted; `K2U_IOC_READ_BUFFER` only reads it.
/// So from the publish of a round until its acknowledgement nobody writes
/// the bytes this guard shows: the slice is as immutable as a `&[u8]`
/// must be. The guard borrows the channel mutably, so no later event can
/// be read (and no other round opened) while the view lives, and
/// [`Round::ack`] consumes it, so the view cannot outlive the round. The
/// mapping is read-only, so this process cannot write it either.
///
/// One thing outside the listener ends a round early: STOP_TEST abandons
/// an outstanding round, and a following START_TEST fills the buffer
/// again. Whoever drives the module (root, through the parameters) must
/// not STOP and START while a listener holds a round; if it does,
/// [`Round::ack`] reports [`Error::RoundAbandoned`] (queue mode).
///
/// # Drop without ack
///
/// Dropping the guard does not acknowledge: the round stays outstanding
/// (the module starts no new one), and [`Channel::round`] lends it out
/// again. Acknowledging is a system call that can fail, so it is never
/// hidden in `Drop`.
#[derive(Debug)]
pub struct Round<'a> {
    channel: &'a mut Channel,
    id: u32,
}

impl Round<'_> {
    /// The round's id (what `K2U_IOC_ACK_ROUND` takes).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Acknowledge the round: `K2U_IOC_ACK_ROUND` with its id (queue
    /// mode), 7 on efd2 (counter mode). Ends the view.
    pub fn ack(self) -> Result<()> {
        self.channel.ack(self.id)
    }
}

impl std::ops::Deref for Round<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: while this guard lives the round is outstanding, and the
        // module writes the buffer only when it opens a round, never while
        // one is outstanding (see the type's docs); the mapping is
        // read-only in this process, and the returned slice borrows `self`,
        // which borrows the channel owning the mapping.
        unsafe { self.channel.buffer.stable_slice() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::pattern_byte;
    use std::io::Write;
    use std::os::fd::OwnedFd;

    #[test]
    fn info_names_both_versions_on_a_mismatch() {
        let raw = abi::Info {
            abi_version: ABI_VERSION + 1,
            event_mode: EventMode::Queue as u32,
            buffer_size: 4096,
            period_ms: 500,
            channel_id: 0,
        };
        let e = Info::try_from(raw).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains(&format!("v{}", ABI_VERSION + 1)), "{e}");
        assert!(e.contains(&format!("v{ABI_VERSION}")), "{e}");
        let bad_mode = abi::Info {
            abi_version: ABI_VERSION,
            event_mode: 9,
            ..raw
        };
        assert!(matches!(
            Info::try_from(bad_mode),
            Err(Error::UnknownEventMode(9))
        ));
        let good = Info::try_from(abi::Info {
            abi_version: ABI_VERSION,
            ..raw
        })
        .ok();
        assert_eq!(
            good,
            Some(Info {
                abi_version: ABI_VERSION,
                event_mode: EventMode::Queue,
                buffer_size: 4096,
                period: Duration::from_millis(500),
            })
        );
    }

    #[test]
    fn codes_map_to_events_and_back() {
        for (code, ev) in [
            (2, Event::Mmap),
            (3, Event::Start),
            (4, Event::Stop),
            (5, Event::Exit),
            (6, Event::MemoryReady { round: 9 }),
        ] {
            assert_eq!(Event::from_code(code, 9).ok(), Some(ev));
            assert_eq!(u64::from(ev.code().value()), code);
        }
        for bad in [0, 1, 7, 5 + 6] {
            assert!(Event::from_code(bad, 0).is_err(), "{bad}");
        }
    }

    /// The kernel's side of a counter-mode fake: efd/efd2 duplicates, the
    /// control page and the buffer file.
    struct CounterFake {
        efd: EventFd,
        efd2: EventFd,
        ctrl: CtrlPage,
        _files: (std::fs::File, std::fs::File),
    }

    fn counter_channel() -> anyhow::Result<(Channel, CounterFake)> {
        let mut data = tempfile::tempfile()?;
        let pattern: Vec<u8> = (0..8192).map(pattern_byte).collect();
        data.write_all(&pattern)?;
        let ctrl_file = tempfile::tempfile()?;
        ctrl_file.set_len(4096)?;
        let buffer = MappedBuffer::map_fd(data.as_fd(), 8192, 0, Access::ReadOnly)?;
        let ctrl = CtrlPage::from_mapping(MappedBuffer::map_fd(
            ctrl_file.as_fd(),
            4096,
            0,
            Access::ReadWrite,
        )?)?;
        let kernel_ctrl = CtrlPage::from_mapping(MappedBuffer::map_fd(
            ctrl_file.as_fd(),
            4096,
            0,
            Access::ReadWrite,
        )?)?;
        let efd = EventFd::new_nonblocking()?;
        let efd2 = EventFd::new_nonblocking()?;
        let fake = CounterFake {
            efd: EventFd::from(efd.as_fd().try_clone_to_owned()?),
            efd2: EventFd::from(efd2.as_fd().try_clone_to_owned()?),
            ctrl: kernel_ctrl,
            _files: (data, ctrl_file),
        };
        let (records, _w) = std::io::pipe()?;
        let ch = Channel::from_fakes(
            efd,
            efd2,
            records.into(),
            buffer,
            Some(ctrl),
            EventMode::Counter,
        );
        Ok((ch, fake))
    }

    #[test]
    fn counter_mode_round_is_a_view_acked_with_7() -> anyhow::Result<()> {
        let (mut ch, k) = counter_channel()?;
        assert_eq!(ch.try_next()?, None, "nothing sent yet");
        assert!(ch.round().is_none());
        k.efd.write(u64::from(Code::StartTest.value()))?;
        assert_eq!(ch.try_next()?, Some(Event::Start));
        k.ctrl.publish_as_kernel(41);
        k.efd.write(u64::from(Code::MemoryReady.value()))?;
        assert_eq!(
            ch.next(Duration::from_secs(5))?,
            Some(Event::MemoryReady { round: 41 })
        );
        {
            let round = ch.round().ok_or_else(|| anyhow::anyhow!("no round"))?;
            assert_eq!(round.id(), 41);
            assert_eq!(round.len(), 8192);
            assert!(crate::device::first_pattern_mismatch(&round).is_none());
            // Dropped without ack: nothing written to efd2.
        }
        assert_eq!(
            k.efd2.read().err().and_then(|e| e.errno()),
            Some(Errno::AGAIN)
        );
        let round = ch
            .round()
            .ok_or_else(|| anyhow::anyhow!("round not kept"))?;
        round.ack()?;
        assert_eq!(k.efd2.read()?, u64::from(Code::MemoryCopied.value()));
        assert!(ch.round().is_none(), "acked rounds are not lent again");
        Ok(())
    }

    #[test]
    fn stop_forgets_the_open_round_and_unknown_codes_are_errors() -> anyhow::Result<()> {
        let (mut ch, k) = counter_channel()?;
        k.ctrl.publish_as_kernel(1);
        k.efd.write(u64::from(Code::MemoryReady.value()))?;
        assert!(matches!(
            ch.try_next()?,
            Some(Event::MemoryReady { round: 1 })
        ));
        k.efd.write(u64::from(Code::StopTest.value()))?;
        assert_eq!(ch.try_next()?, Some(Event::Stop));
        assert!(ch.round().is_none());
        k.efd.write(9)?;
        assert!(matches!(ch.try_next(), Err(Error::Protocol(_))));
        Ok(())
    }

    #[test]
    fn queue_mode_reads_round_ids_from_records() -> anyhow::Result<()> {
        let mut data = tempfile::tempfile()?;
        data.write_all(&[0u8; 4096])?;
        let buffer = MappedBuffer::map_fd(data.as_fd(), 4096, 0, Access::ReadOnly)?;
        let efd = EventFd::new_nonblocking()?;
        let kefd = EventFd::from(efd.as_fd().try_clone_to_owned()?);
        let (records, w) = std::io::pipe()?;
        let records = OwnedFd::from(records);
        rustix::fs::fcntl_setfl(&records, rustix::fs::OFlags::NONBLOCK)?;
        let mut ch = Channel::from_fakes(
            efd,
            EventFd::new_nonblocking()?,
            records,
            buffer,
            None,
            EventMode::Queue,
        );
        let rec = |seq: u64, code: Code, round: u32| {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&seq.to_ne_bytes());
            b[8..12].copy_from_slice(&code.value().to_ne_bytes());
            b[12..].copy_from_slice(&round.to_ne_bytes());
            b
        };
        rustix::io::write(&w, &rec(1, Code::StartTest, 0))?;
        rustix::io::write(&w, &rec(2, Code::MemoryReady, 77))?;
        kefd.write(1)?;
        assert_eq!(ch.try_next()?, Some(Event::Start));
        assert_eq!(ch.try_next()?, Some(Event::MemoryReady { round: 77 }));
        assert_eq!(ch.try_next()?, None);
        let round = ch.round().ok_or_else(|| anyhow::anyhow!("no round"))?;
        assert_eq!(round.id(), 77);
        // The pipe is no device: the ack ioctl is refused, and the error
        // says which ioctl.
        let e = round.ack().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("K2U_IOC_ACK_ROUND"), "{e}");
        Ok(())
    }
}
