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
//!
//! A `Channel` is one of three kinds ([`ChannelKind`]): this process as the
//! default channel's listener ([`Channel::open`], `K2U_IOC_REGISTER`), a
//! channel of its own ([`Channel::create`], `K2U_IOC_CREATE`), or the
//! listener of a kernel producer's channel ([`Channel::attach`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;

use crate::abi::{self, Code, EventMode, ABI_VERSION, CREATE_ATTACH, DEVICE_PATH};
use crate::ctrl::CtrlPage;
use crate::device::{Access, Device, MappedBuffer};
use crate::error::{Error, Result};
use crate::eventfd::EventFd;
use crate::options::{self, ChannelOptions, ChannelStats, Command};
use crate::session::Session;

/// What the module sends a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// MMAP (2): map the buffer. A [`Channel`] maps it when it opens, so
    /// this is informational.
    Mmap,
    /// START_TEST (3): rounds begin.
    Start,
    /// STOP_TEST (4): rounds end; a round still outstanding is abandoned
    /// (no ack counts it) but stays lent: [`Channel::round`] still gives
    /// it, and no new round comes until it is acknowledged.
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
    /// The file's channel id (ABI v3): 0 when the file is not a channel
    /// of its own (its calls reach the default channel).
    pub channel_id: u32,
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
        let event_mode = options::event_mode(raw.event_mode)?;
        let buffer_size = usize::try_from(raw.buffer_size).map_err(|_| {
            Error::Protocol(format!("buffer size {} does not fit", raw.buffer_size))
        })?;
        Ok(Info {
            abi_version: raw.abi_version,
            event_mode,
            buffer_size,
            period: Duration::from_millis(u64::from(raw.period_ms)),
            channel_id: raw.channel_id,
        })
    }
}

/// Which channel a [`Channel`] listens to.
///
/// ```no_run
/// let ch = kern2usr::Channel::attach("sample")?;
/// assert_eq!(ch.kind(), kern2usr::ChannelKind::Producer);
/// # Ok::<(), kern2usr::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// The default channel (id 0), the seed's: attached with
    /// `K2U_IOC_REGISTER`, driven by root through the parameters.
    Default,
    /// A channel of this process's own ([`Channel::create`]), driven with
    /// [`Channel::command`].
    Owned,
    /// A kernel producer's channel ([`Channel::attach`]): the producer
    /// publishes rounds of its own length; commands are refused.
    Producer,
}

/// The round shown by the last MEMORY_READY and not yet acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpenRound {
    id: u32,
    /// Bytes of the buffer the round published (<= the buffer size).
    len: usize,
}

/// A listener of one channel, typed: its own eventfds attached, the
/// buffer mapped read-only. [`Channel::open`] listens to the default
/// channel (`K2U_IOC_REGISTER`), [`Channel::create`] makes a channel of
/// its own, [`Channel::attach`] listens to a kernel producer's channel.
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
    /// Counter mode: where the round ids are read (the 6 carries none);
    /// channels of their own: also where `ready_len` is read.
    ctrl: Option<CtrlPage>,
    /// The round shown by the last MEMORY_READY and not yet acknowledged.
    open_round: Option<OpenRound>,
    kind: ChannelKind,
    /// The channel's name (channels of their own and producers').
    name: Option<String>,
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
    /// both versions. Without root (`CAP_SYS_ADMIN`) the module refuses
    /// the default channel to anyone but its listener:
    /// [`Error::NotOwner`] (use [`Channel::create`] instead).
    ///
    /// ```no_run
    /// let ch = kern2usr::Channel::open_path("/dev/kern2usr")?;
    /// assert_eq!(ch.info().abi_version, kern2usr::abi::ABI_VERSION);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn open_path(device: impl AsRef<Path>) -> Result<Self> {
        let dev = Device::open(device)?;
        let info = Info::try_from(dev.info()?)?;
        // EPERM (ABI v3): the default channel is its listener's and
        // root's; say so, and what to do instead.
        let perm = |op: &'static str| {
            move |e: Error| match e.errno() {
                Some(Errno::PERM) => Error::NotOwner {
                    op,
                    channel: 0,
                    source: Errno::PERM.into(),
                },
                _ => e,
            }
        };
        let buffer = dev
            .map(info.buffer_size, Access::ReadOnly)
            .map_err(perm("mmap"))?;
        let ctrl = match info.event_mode {
            EventMode::Counter => Some(dev.map_ctrl().map_err(perm("mmap"))?),
            EventMode::Queue => None,
        };
        let efd = EventFd::new_nonblocking()?;
        let efd2 = EventFd::new_nonblocking()?;
        dev.register(efd.as_fd(), efd2.as_fd())
            .map_err(perm("K2U_IOC_REGISTER"))?;
        Ok(Self::from_parts(
            Session::from_parts(efd, efd2, dev, info.event_mode),
            buffer,
            info,
            ctrl,
        ))
    }

    /// Make a channel of this process's own (ABI v3): open
    /// `options`' device, check its ABI version, create two non-blocking
    /// eventfds, `K2U_IOC_CREATE` with the options, then map the channel's
    /// buffer (read-only) and its control page.
    ///
    /// The channel is this process's alone (another process gets EPERM on
    /// it, [`Error::NotOwner`]) and ends when the `Channel` is dropped
    /// (its file closed and its mappings gone). Drive it with
    /// [`Channel::command`]; its test rounds fill the buffer with
    /// [`abi::channel_pattern_byte`]`(id, round, i)`.
    ///
    /// Errors: [`Error::InvalidOptions`] (checked before the module is
    /// asked), [`Error::ChannelLimit`] (ENOSPC: `max_channels` or
    /// `max_channel_memory` reached), [`Error::AbiMismatch`], and the
    /// errors of opening the device.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use kern2usr::{abi, Channel, ChannelOptions, Command, Event};
    ///
    /// let mut ch = Channel::create(&ChannelOptions::new().buffer_size(8192).name("demo"))?;
    /// ch.command(Command::Mmap)?;
    /// ch.command(Command::Start)?;
    /// while let Some(ev) = ch.next(Duration::from_secs(2))? {
    ///     if let Event::MemoryReady { .. } = ev {
    ///         let id = ch.id();
    ///         let round = ch.round().expect("MEMORY_READY opened a round");
    ///         let seq = u64::from(round.id());
    ///         assert!(round.iter().enumerate().all(|(i, &b)| b == abi::channel_pattern_byte(id, seq, i)));
    ///         round.ack()?;
    ///         break;
    ///     }
    /// }
    /// ch.command(Command::Stop)?;
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn create(options: &ChannelOptions) -> Result<Self> {
        if options.get_ring() != 0 {
            return Err(Error::InvalidOptions(
                "ring: a ring channel is made with Ring::create (its slots and acks differ)"
                    .to_owned(),
            ));
        }
        let request = options.request()?;
        let name = (!options.get_name().is_empty()).then(|| options.get_name().to_owned());
        Self::new_channel(options.get_device(), request, ChannelKind::Owned, name)
    }

    /// [`Channel::attach_path`] on [`DEVICE_PATH`].
    ///
    /// ```no_run
    /// let mut ch = kern2usr::Channel::attach("sample")?;
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn attach(name: &str) -> Result<Self> {
        Self::attach_path(DEVICE_PATH, name)
    }

    /// Listen to the channel a kernel producer created under `name`
    /// (`K2U_IOC_CREATE` with `K2U_CREATE_ATTACH`): its buffer size is the
    /// producer's, each [`Round`] shows the length the producer published
    /// (`Ctrl.ready_len`), and commands are the producer's business
    /// ([`Channel::command`] is [`Error::ProducerChannel`]). When the
    /// producer destroys the channel this listener gets [`Event::Exit`].
    ///
    /// Errors: [`Error::NoProducer`] (ENOENT: no producer channel has that
    /// name), [`Error::ChannelBusy`] (EBUSY: it has a listener already),
    /// [`Error::InvalidOptions`] for a name the module cannot hold.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use kern2usr::{Channel, Event};
    ///
    /// let mut ch = Channel::attach_path("/dev/kern2usr", "k2u_sample")?;
    /// while let Some(ev) = ch.next(Duration::from_secs(5))? {
    ///     match ev {
    ///         Event::MemoryReady { .. } => {
    ///             if let Some(round) = ch.round() {
    ///                 println!("{} bytes published", round.len());
    ///                 round.ack()?;
    ///             }
    ///         }
    ///         Event::Exit => break, // the producer went away
    ///         _ => {}
    ///     }
    /// }
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn attach_path(device: impl AsRef<Path>, name: &str) -> Result<Self> {
        options::validate_name(name, true)?;
        let request = abi::Create {
            efd: -1,
            efd2: -1,
            buffer_size: 0,
            period_ms: 0,
            flags: CREATE_ATTACH,
            name: options::name_bytes(name),
            id: 0,
            ring_slots: 0,
        };
        Self::new_channel(
            device.as_ref(),
            request,
            ChannelKind::Producer,
            Some(name.to_owned()),
        )
    }

    fn new_channel(
        device: &Path,
        mut request: abi::Create,
        kind: ChannelKind,
        name: Option<String>,
    ) -> Result<Self> {
        let dev = Device::open(device)?;
        // The version first: another ABI may lay out Create differently.
        Info::try_from(dev.info()?)?;
        let efd = EventFd::new_nonblocking()?;
        let efd2 = EventFd::new_nonblocking()?;
        request.efd = efd.as_raw_fd();
        request.efd2 = efd2.as_raw_fd();
        let made = dev
            .create(&request)
            .map_err(|e| create_error(e, &request, kind, name.as_deref()))?;
        let info = Info::try_from(dev.info()?)?;
        if info.channel_id != made.id || made.id == 0 {
            return Err(Error::Protocol(format!(
                "K2U_IOC_CREATE made channel {}, K2U_IOC_INFO on its file reports channel {}",
                made.id, info.channel_id
            )));
        }
        let buffer_size = usize::try_from(made.buffer_size).map_err(|_| {
            Error::Protocol(format!("buffer size {} does not fit", made.buffer_size))
        })?;
        let buffer = dev.map(buffer_size, Access::ReadOnly)?;
        let ctrl = dev.map_ctrl()?;
        let info = Info {
            buffer_size,
            ..info
        };
        let mut ch = Self::from_parts(
            Session::from_parts(efd, efd2, dev, info.event_mode),
            buffer,
            info,
            Some(ctrl),
        );
        ch.kind = kind;
        ch.name = name;
        Ok(ch)
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
            kind: ChannelKind::Default,
            name: None,
        }
    }

    /// The channel's id: 0 for the default channel, 1 and up for the
    /// others (as in `kern2usr status` and [`crate::channels`]).
    ///
    /// ```no_run
    /// let ch = kern2usr::Channel::create(&kern2usr::ChannelOptions::new())?;
    /// assert_ne!(ch.id(), 0);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn id(&self) -> u32 {
        self.info.channel_id
    }

    /// The channel's name, if it has one.
    ///
    /// ```no_run
    /// let ch = kern2usr::ChannelOptions::new().name("cam0").create()?;
    /// assert_eq!(ch.name(), Some("cam0"));
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Which kind of channel this is.
    ///
    /// ```no_run
    /// let ch = kern2usr::Channel::open()?;
    /// assert_eq!(ch.kind(), kern2usr::ChannelKind::Default);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// Run `command` on this channel (`K2U_IOC_CHANNEL_CMD`). The command
    /// is also delivered to this listener as its [`Event`], in order with
    /// the rounds; read them with [`Channel::next`].
    ///
    /// Errors: [`Error::ChannelCommand`] for the state machine's refusals
    /// (EPROTO out of order, EBUSY while a test runs, EAGAIN with a full
    /// event queue), [`Error::NotAChannel`] on the default channel (root
    /// drives it through the parameters: [`crate::Params::command`]),
    /// [`Error::ProducerChannel`] on a producer's, [`Error::NotOwner`]
    /// from another process.
    ///
    /// ```no_run
    /// use kern2usr::{Channel, ChannelOptions, Command, Error};
    /// let ch = Channel::create(&ChannelOptions::new())?;
    /// // START before MMAP is out of order:
    /// assert!(matches!(ch.command(Command::Start), Err(Error::ChannelCommand { .. })));
    /// ch.command(Command::Mmap)?;
    /// ch.command(Command::Start)?;
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn command(&self, command: Command) -> Result<()> {
        self.session
            .device()
            .channel_command(command.code().value())
            .map_err(|e| command_error(e, command, self.id()))
    }

    /// This channel's figures (`K2U_IOC_CHANNEL_STATS`): rounds published
    /// and the round trips of its current or last test. On the default
    /// channel: the default channel's.
    ///
    /// ```no_run
    /// let ch = kern2usr::ChannelOptions::new().create()?;
    /// let s = ch.stats()?;
    /// assert_eq!(s.id, ch.id());
    /// println!("{} rounds, p50 {} ns", s.round_trips.count, s.round_trips.p50);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn stats(&self) -> Result<ChannelStats> {
        let raw = self.session.device().channel_stats().map_err(|e| {
            if e.errno() == Some(Errno::PERM) {
                Error::NotOwner {
                    op: "K2U_IOC_CHANNEL_STATS",
                    channel: self.id(),
                    source: Errno::PERM.into(),
                }
            } else {
                e
            }
        })?;
        ChannelStats::try_from(raw)
    }

    /// The channel's control page, where the module publishes
    /// `ready_seq` and `ready_len` (always mapped for a channel of one's
    /// own or a producer's; for the default channel only in counter
    /// mode). For adaptive listeners: see [`crate::session::wait_adaptive`].
    ///
    /// ```no_run
    /// let ch = kern2usr::ChannelOptions::new().create()?;
    /// let published = ch.ctrl().map(|c| c.ready_seq());
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn ctrl(&self) -> Option<&CtrlPage> {
        self.ctrl.as_ref()
    }

    /// Ack round `round` through the control page (ABI 4): store it in
    /// `ack_seq` and write 7 to efd2 only when the module sleeps waiting
    /// for it ([`CtrlPage::ack_through_page`]). Returns whether efd2 was
    /// written. For listeners that take rounds from `ready_seq` (adaptive
    /// spinning) rather than from [`Channel::round`]; once a listener acks
    /// through the page, efd2 is only its doorbell (`docs/PROTOCOL.md`).
    ///
    /// ```no_run
    /// # let ch = kern2usr::ChannelOptions::new().back_to_back(true).adaptive(true).create()?;
    /// if let Some(page) = ch.ctrl() {
    ///     let seq = page.ready_seq();
    ///     // ... read the buffer ...
    ///     ch.ack_page(seq)?;
    /// }
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn ack_page(&self, round: u64) -> Result<bool> {
        let Some(page) = self.ctrl.as_ref() else {
            return Err(Error::Protocol(
                "no control page mapped (queue mode on the default channel)".to_owned(),
            ));
        };
        if !page.ack_through_page(round) {
            return Ok(false);
        }
        self.session.wake_for_page_ack()?;
        Ok(true)
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
            channel_id: 0,
        };
        let dev = Device::from_fd(records, "fake".into());
        Self::from_parts(
            Session::from_parts(efd, efd2, dev, event_mode),
            buffer,
            info,
            ctrl,
        )
    }

    /// Make a [`Channel::from_fakes`] channel stand for channel `id` of
    /// `kind` ([`ChannelKind::Owned`] or [`ChannelKind::Producer`]):
    /// rounds then take their length from the fake control page's
    /// `ready_len` (so `from_fakes` needs `Some(ctrl)` then), and its
    /// `records` fd stands for the channel's file (its ioctls: a pipe
    /// refuses them with ENOTTY).
    #[cfg(any(test, feature = "testing"))]
    pub fn fake_as_channel(mut self, kind: ChannelKind, id: u32) -> Self {
        self.info.channel_id = id;
        self.kind = kind;
        self
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
    /// out; STOP_TEST keeps it (the module abandoned it but keeps the
    /// buffer lent until its ack), EXIT_TEST forgets it.
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
            Event::MemoryReady { round } => {
                let len = self.published_len();
                self.open_round = Some(OpenRound { id: round, len });
            }
            Event::Exit => self.open_round = None,
            Event::Mmap | Event::Start | Event::Stop => {}
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
    /// (none came, it was acknowledged, or EXIT_TEST came). A round
    /// STOP_TEST abandoned is still given: the module keeps it lent, and
    /// starts no round after a new START_TEST until it is acknowledged.
    pub fn round(&mut self) -> Option<Round<'_>> {
        let OpenRound { id, len } = self.open_round?;
        Some(Round {
            channel: self,
            id,
            len,
        })
    }

    /// Bytes the round just shown published: the whole buffer on the
    /// default channel (its rounds always fill it), `ready_len` clamped to
    /// the buffer on the others (the module stores it before `ready_seq`
    /// with release ordering; `ready_seq`'s acquire load orders it).
    fn published_len(&self) -> usize {
        match (self.kind, &self.ctrl) {
            (ChannelKind::Default, _) | (_, None) => self.buffer.len(),
            (_, Some(ctrl)) => {
                let _ = ctrl.ready_seq();
                usize::try_from(ctrl.ready_len())
                    .unwrap_or(usize::MAX)
                    .min(self.buffer.len())
            }
        }
    }

    /// The mapped buffer (read-only), for copies outside a round.
    pub fn buffer(&self) -> &MappedBuffer {
        &self.buffer
    }

    fn ack(&mut self, id: u32) -> Result<()> {
        let owner_err = |e: Error| match e.errno() {
            Some(Errno::PERM) => Error::NotOwner {
                op: "K2U_IOC_ACK_ROUND",
                channel: self.info.channel_id,
                source: Errno::PERM.into(),
            },
            _ => e,
        };
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
                    _ => owner_err(e),
                }),
        };
        // Whatever the answer, this round is done with: a refused ack means
        // the module does not hold it open any more.
        self.open_round = None;
        r
    }
}

/// The typed error for a refused `K2U_IOC_CHANNEL_CMD`.
pub(crate) fn command_error(e: Error, command: Command, channel: u32) -> Error {
    let Some(errno) = e.errno().filter(|_| matches!(e, Error::Ioctl { .. })) else {
        return e;
    };
    match errno {
        Errno::NOTCONN => Error::NotAChannel {
            op: "K2U_IOC_CHANNEL_CMD",
            source: errno.into(),
        },
        Errno::OPNOTSUPP => Error::ProducerChannel {
            command: command.name(),
            channel,
            source: errno.into(),
        },
        Errno::PERM => Error::NotOwner {
            op: "K2U_IOC_CHANNEL_CMD",
            channel,
            source: errno.into(),
        },
        _ => Error::ChannelCommand {
            command: command.name(),
            channel,
            source: errno.into(),
        },
    }
}

/// The typed error for a refused `K2U_IOC_CREATE`.
pub(crate) fn create_error(
    e: Error,
    request: &abi::Create,
    kind: ChannelKind,
    name: Option<&str>,
) -> Error {
    let Some(errno) = e.errno().filter(|_| matches!(e, Error::Ioctl { .. })) else {
        return e;
    };
    let attach = kind == ChannelKind::Producer;
    let name = name.unwrap_or_default().to_owned();
    match errno {
        Errno::NOSPC => Error::ChannelLimit {
            buffer_size: request.buffer_size,
            source: errno.into(),
        },
        Errno::NOENT if attach => Error::NoProducer {
            name,
            source: errno.into(),
        },
        Errno::BUSY => Error::ChannelBusy {
            what: if attach {
                format!("producer channel {name:?} has a listener already: wait until it detaches (its file is closed)")
            } else {
                "this file is a channel already: open the device again for another channel".to_owned()
            },
            source: errno.into(),
        },
        Errno::INVAL => Error::InvalidOptions(format!(
            "the module refused them ({}); its log line `CREATE refused: <field> <value>: <why>` names the field",
            std::io::Error::from(errno)
        )),
        _ => e,
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
/// The kernel lends the buffer to the listener from the publish of a
/// round until that round's acknowledgement (`docs/PROTOCOL.md`, "The
/// buffer is lent until the ack"), and fills it only when it is not lent:
/// the module writes it only in `k2u_round_begin()` (`kernel/c/round.c`;
/// `round_begin()` in the Rust module), which refuses to run while a round
/// is lent or acknowledged but not yet counted, and a kernel producer's
/// `k2u_producer_reserve()` refuses likewise; `K2U_IOC_READ_BUFFER` only
/// reads it. So from the publish of a round until its acknowledgement
/// nobody writes the bytes this guard shows: the slice is as immutable as
/// a `&[u8]` must be. The guard borrows the channel mutably, so no later
/// event can be read (and no other round opened) while the view lives,
/// and [`Round::ack`] consumes it, so the view cannot outlive the round.
/// The mapping is read-only, so this process cannot write it either.
///
/// Nothing outside the listener ends the lend early. STOP_TEST abandons
/// an outstanding round (no ack counts it any more) but the buffer stays
/// lent, across a following START_TEST too: the next round waits for
/// this round's ack, which [`Round::ack`] still sends (it then reports
/// [`Error::RoundAbandoned`] in queue mode: the round counted nothing, but
/// the buffer was returned). What ends a lend without an ack is the
/// listener's detach or the channel's release: its process exits, or its
/// eventfds close (this guard's borrow of the channel rules both out while
/// the view lives); and, on the default channel only, root attaching
/// another listener (FIND or `K2U_IOC_REGISTER` with other eventfds, or
/// FIND after EXIT_TEST), which the module allows once this listener has
/// read all its events. Whoever drives the default channel must not do
/// that while a listener holds a round.
///
/// # Drop without ack
///
/// Dropping the guard does not acknowledge: the round stays outstanding
/// (or, after STOP_TEST, lent), the module starts no new one, and
/// [`Channel::round`] lends it out again until it is acknowledged. So a
/// listener that drops a round must take it again and acknowledge it, or
/// the channel's rounds stop for good. Acknowledging is a system call
/// that can fail, so it is never hidden in `Drop`.
#[derive(Debug)]
pub struct Round<'a> {
    channel: &'a mut Channel,
    id: u32,
    len: usize,
}

impl Round<'_> {
    /// The round's id (what `K2U_IOC_ACK_ROUND` takes; on a channel of
    /// one's own also the `round` of [`abi::channel_pattern_byte`]).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Bytes the round published: the view's length. The whole buffer
    /// for test rounds; on a producer's channel the length the producer
    /// published (`Ctrl.ready_len`), which may be less.
    ///
    /// ```no_run
    /// let mut ch = kern2usr::Channel::attach("sample")?;
    /// let size = ch.info().buffer_size;
    /// if let Some(round) = ch.round() {
    ///     assert_eq!(round.published_len(), round.len());
    ///     assert!(round.published_len() <= size);
    /// }
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn published_len(&self) -> usize {
        self.len
    }

    /// The channel's id (0: the default channel), for checks that depend
    /// on it such as [`abi::channel_pattern_byte`].
    ///
    /// ```no_run
    /// use kern2usr::abi::channel_pattern_byte;
    /// # let mut ch = kern2usr::ChannelOptions::new().create()?;
    /// if let Some(round) = ch.round() {
    ///     let (id, seq) = (round.channel_id(), u64::from(round.id()));
    ///     assert!(round.iter().enumerate().all(|(i, &b)| b == channel_pattern_byte(id, seq, i)));
    /// }
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn channel_id(&self) -> u32 {
        self.channel.id()
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
        // SAFETY: while this guard lives the round is not acknowledged, so
        // the module keeps the buffer lent and writes it only when it opens
        // a round, never while one is lent (see the type's docs); the mapping is
        // read-only in this process, and the returned slice borrows `self`,
        // which borrows the channel owning the mapping.
        let all = unsafe { self.channel.buffer.stable_slice() };
        // `len` was clamped to the mapping when the round was shown.
        &all[..self.len.min(all.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::pattern_byte;
    use std::io::Write;
    use std::os::fd::OwnedFd;

    use crate::options::Command;

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
                channel_id: 0,
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
    fn stop_keeps_the_lent_round_exit_forgets_it_unknown_codes_are_errors() -> anyhow::Result<()> {
        let (mut ch, k) = counter_channel()?;
        k.ctrl.publish_as_kernel(1);
        k.efd.write(u64::from(Code::MemoryReady.value()))?;
        assert!(matches!(
            ch.try_next()?,
            Some(Event::MemoryReady { round: 1 })
        ));
        // STOP abandons the round, but the kernel keeps it lent until its
        // ack: it is still there to view and to acknowledge.
        k.efd.write(u64::from(Code::StopTest.value()))?;
        assert_eq!(ch.try_next()?, Some(Event::Stop));
        let round = ch
            .round()
            .ok_or_else(|| anyhow::anyhow!("STOP dropped the lent round"))?;
        assert_eq!(round.id(), 1);
        round.ack()?;
        assert_eq!(k.efd2.read()?, u64::from(Code::MemoryCopied.value()));
        assert!(ch.round().is_none());
        k.ctrl.publish_as_kernel(2);
        k.efd.write(u64::from(Code::MemoryReady.value()))?;
        assert!(ch.try_next()?.is_some());
        k.efd.write(u64::from(Code::ExitTest.value()))?;
        assert_eq!(ch.try_next()?, Some(Event::Exit));
        assert!(ch.round().is_none(), "EXIT forgets the round");
        k.efd.write(9)?;
        assert!(matches!(ch.try_next(), Err(Error::Protocol(_))));
        Ok(())
    }

    fn ioctl_err(name: &'static str, errno: Errno) -> Error {
        Error::Ioctl {
            name,
            source: errno.into(),
        }
    }

    #[test]
    fn refused_commands_are_typed_and_say_what_to_do() {
        let cmd = |errno| command_error(ioctl_err("K2U_IOC_CHANNEL_CMD", errno), Command::Start, 4);
        let e = cmd(Errno::NOTCONN);
        assert!(matches!(e, Error::NotAChannel { .. }), "{e:?}");
        assert!(e.to_string().contains("Channel::create"), "{e}");
        let e = cmd(Errno::OPNOTSUPP);
        assert!(
            matches!(e, Error::ProducerChannel { channel: 4, .. }),
            "{e:?}"
        );
        let e = cmd(Errno::PERM);
        assert!(matches!(e, Error::NotOwner { channel: 4, .. }), "{e:?}");
        assert!(
            e.to_string().contains("only the process that created"),
            "{e}"
        );
        for (errno, hint) in [
            (Errno::PROTO, "MMAP before START_TEST"),
            (Errno::BUSY, "STOP_TEST first"),
            (Errno::AGAIN, "read its events first"),
        ] {
            let e = cmd(errno);
            assert!(
                matches!(
                    e,
                    Error::ChannelCommand {
                        command: "START_TEST",
                        channel: 4,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert_eq!(e.errno(), Some(errno));
            assert!(e.to_string().contains(hint), "{e}");
        }
        // Not an ioctl's refusal: passed on as it is.
        let other = command_error(Error::Protocol("x".into()), Command::Stop, 1);
        assert!(matches!(other, Error::Protocol(_)));
    }

    #[test]
    fn refused_creates_are_typed_and_say_what_to_do() {
        let req = abi::Create {
            buffer_size: 1 << 20,
            ..Default::default()
        };
        let create = |errno, kind| {
            create_error(ioctl_err("K2U_IOC_CREATE", errno), &req, kind, Some("prod"))
        };
        let e = create(Errno::NOSPC, ChannelKind::Owned);
        assert!(
            matches!(
                e,
                Error::ChannelLimit {
                    buffer_size: 1048576,
                    ..
                }
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("max_channels") && text.contains("max_channel_memory"),
            "{text}"
        );
        let e = create(Errno::NOENT, ChannelKind::Producer);
        assert!(
            matches!(e, Error::NoProducer { ref name, .. } if name == "prod"),
            "{e:?}"
        );
        let e = create(Errno::BUSY, ChannelKind::Producer);
        assert!(e.to_string().contains("has a listener already"), "{e}");
        let e = create(Errno::BUSY, ChannelKind::Owned);
        assert!(e.to_string().contains("a channel already"), "{e}");
        let e = create(Errno::INVAL, ChannelKind::Owned);
        assert!(matches!(e, Error::InvalidOptions(_)), "{e:?}");
        // ENOENT on a create (no attach) is not about producers.
        let e = create(Errno::NOENT, ChannelKind::Owned);
        assert!(matches!(e, Error::Ioctl { .. }), "{e:?}");
    }

    /// A queue-mode channel of its own over fakes: records through a
    /// pipe, the buffer and control page in files the test writes as the
    /// kernel would.
    struct ChannelFake {
        efd: EventFd,
        ctrl: CtrlPage,
        records: std::io::PipeWriter,
        data: std::fs::File,
        _ctrl_file: std::fs::File,
    }

    fn owned_channel(
        size: usize,
        kind: ChannelKind,
        id: u32,
    ) -> anyhow::Result<(Channel, ChannelFake)> {
        let data = tempfile::tempfile()?;
        data.set_len(size as u64)?;
        let ctrl_file = tempfile::tempfile()?;
        ctrl_file.set_len(4096)?;
        let map = |f: &std::fs::File, len, access| MappedBuffer::map_fd(f.as_fd(), len, 0, access);
        let efd = EventFd::new_nonblocking()?;
        let kefd = EventFd::from(efd.as_fd().try_clone_to_owned()?);
        let (r, w) = std::io::pipe()?;
        let r = OwnedFd::from(r);
        rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::NONBLOCK)?;
        let ch = Channel::from_fakes(
            efd,
            EventFd::new_nonblocking()?,
            r,
            map(&data, size, Access::ReadOnly)?,
            Some(CtrlPage::from_mapping(map(
                &ctrl_file,
                4096,
                Access::ReadWrite,
            )?)?),
            EventMode::Queue,
        )
        .fake_as_channel(kind, id);
        let fake = ChannelFake {
            efd: kefd,
            ctrl: CtrlPage::from_mapping(map(&ctrl_file, 4096, Access::ReadWrite)?)?,
            records: w,
            data,
            _ctrl_file: ctrl_file,
        };
        Ok((ch, fake))
    }

    impl ChannelFake {
        /// Fill `len` bytes as channel `id`'s round `seq`, publish it
        /// (ready_len, then ready_seq) and deliver its MEMORY_READY record
        /// number `rec` with the doorbell.
        fn publish(&mut self, id: u32, seq: u64, len: u64, rec: u64) -> anyhow::Result<()> {
            use std::os::unix::fs::FileExt;
            let fill: Vec<u8> = (0..len as usize)
                .map(|i| abi::channel_pattern_byte(id, seq, i))
                .collect();
            self.data.write_all_at(&fill, 0)?;
            self.ctrl.publish_len_as_kernel(seq, Some(len));
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&rec.to_ne_bytes());
            b[8..12].copy_from_slice(&Code::MemoryReady.value().to_ne_bytes());
            b[12..].copy_from_slice(&(seq as u32).to_ne_bytes());
            self.records.write_all(&b)?;
            self.efd.write(1)?;
            Ok(())
        }
    }

    #[test]
    fn an_owned_channels_rounds_carry_its_pattern_and_length() -> anyhow::Result<()> {
        let (mut ch, mut k) = owned_channel(8192, ChannelKind::Owned, 5)?;
        assert_eq!((ch.id(), ch.kind()), (5, ChannelKind::Owned));
        for (rec, seq) in [(1u64, 1u64), (2, 2)] {
            k.publish(5, seq, 8192, rec)?;
            assert_eq!(
                ch.next(Duration::from_secs(5))?,
                Some(Event::MemoryReady { round: seq as u32 })
            );
            let round = ch.round().ok_or_else(|| anyhow::anyhow!("no round"))?;
            assert_eq!((round.len(), round.published_len()), (8192, 8192));
            assert_eq!(round.channel_id(), 5);
            let bad = round
                .iter()
                .enumerate()
                .find(|&(i, &b)| b != abi::channel_pattern_byte(5, seq, i));
            assert_eq!(bad, None, "round {seq}");
            // Another channel's or another round's bytes would not pass.
            assert!(round
                .iter()
                .enumerate()
                .any(|(i, &b)| b != abi::channel_pattern_byte(6, seq, i)));
            assert!(round
                .iter()
                .enumerate()
                .any(|(i, &b)| b != abi::channel_pattern_byte(5, seq + 1, i)));
            // The pipe is no device: the ack ioctl is refused (ENOTTY).
            assert_eq!(
                round.ack().err().and_then(|e| e.errno()),
                Some(Errno::NOTTY)
            );
        }
        Ok(())
    }

    #[test]
    fn a_producer_round_shows_only_the_published_length() -> anyhow::Result<()> {
        let (mut ch, mut k) = owned_channel(16384, ChannelKind::Producer, 9)?;
        k.publish(9, 3, 100, 1)?;
        assert_eq!(ch.try_next()?, Some(Event::MemoryReady { round: 3 }));
        {
            let round = ch.round().ok_or_else(|| anyhow::anyhow!("no round"))?;
            assert_eq!(round.len(), 100);
            assert_eq!(round[99], abi::channel_pattern_byte(9, 3, 99));
        }
        // A length past the buffer (a broken producer) is clamped to it.
        k.publish(9, 4, 1 << 30, 2)?;
        assert_eq!(ch.try_next()?, Some(Event::MemoryReady { round: 4 }));
        let round = ch.round().ok_or_else(|| anyhow::anyhow!("no round"))?;
        assert_eq!(round.len(), 16384);
        Ok(())
    }

    #[test]
    fn the_default_channel_keeps_the_whole_buffer_whatever_ready_len_says() -> anyhow::Result<()> {
        let (mut ch, k) = counter_channel()?;
        assert_eq!((ch.id(), ch.kind()), (0, ChannelKind::Default));
        k.ctrl.publish_len_as_kernel(2, Some(10));
        k.efd.write(u64::from(Code::MemoryReady.value()))?;
        assert_eq!(ch.try_next()?, Some(Event::MemoryReady { round: 2 }));
        let round = ch.round().ok_or_else(|| anyhow::anyhow!("no round"))?;
        assert_eq!(round.len(), 8192);
        Ok(())
    }

    #[test]
    fn commands_and_stats_on_a_file_without_the_ioctls_are_errors() -> anyhow::Result<()> {
        let (ch, _k) = owned_channel(4096, ChannelKind::Owned, 1)?;
        let e = ch.command(Command::Mmap).err();
        assert!(
            matches!(
                e,
                Some(Error::ChannelCommand {
                    command: "MMAP",
                    channel: 1,
                    ..
                })
            ),
            "{e:?}"
        );
        let e = ch.stats().err();
        assert_eq!(e.and_then(|e| e.errno()), Some(Errno::NOTTY));
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
