//! What a channel of its own is made of ([`ChannelOptions`]), the commands
//! that drive it ([`Command`]) and its figures ([`ChannelStats`]): the
//! typed side of `K2U_IOC_CREATE`, `K2U_IOC_CHANNEL_CMD` and
//! `K2U_IOC_CHANNEL_STATS` (ABI v3, "Channels" in `docs/PROTOCOL.md`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::abi::{
    self, Code, EventMode, CHANNEL_NAME_LEN, CREATE_ADAPTIVE, CREATE_BACK_TO_BACK, CREATE_RING,
    DEFAULT_BUFFER_SIZE, DEFAULT_PERIOD_MS, DEVICE_PATH, MAX_BUFFER_SIZE, MAX_PERIOD_MS,
    RING_MAX_SLOTS, RING_MIN_SLOTS,
};
use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::stats::Stats;

/// How to make a channel of one's own with [`Channel::create`]: the
/// device, the buffer size, the period and pacing of the test rounds and
/// a name for the listing. A builder; every setter takes and returns the
/// options by value.
///
/// The defaults are the seed's: one page (4 KiB), a round every 500 ms,
/// timer pacing, no name, `/dev/kern2usr`.
///
/// ```no_run
/// use std::time::Duration;
/// use kern2usr::{ChannelOptions, Channel};
///
/// let opts = ChannelOptions::new()
///     .buffer_size(64 * 1024)
///     .period(Duration::from_millis(20))
///     .name("camera0");
/// let ch = Channel::create(&opts)?;
/// println!("channel {} ({:?}): {} bytes", ch.id(), ch.name(), ch.info().buffer_size);
/// # Ok::<(), kern2usr::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelOptions {
    device: PathBuf,
    buffer_size: usize,
    period: Option<Duration>,
    back_to_back: bool,
    adaptive: bool,
    name: String,
    ring_slots: u32,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelOptions {
    /// The defaults: [`DEVICE_PATH`], a [`DEFAULT_BUFFER_SIZE`] buffer,
    /// the module's default period ([`DEFAULT_PERIOD_MS`]), timer pacing,
    /// no name.
    ///
    /// ```
    /// let opts = kern2usr::ChannelOptions::new();
    /// assert_eq!(opts.get_buffer_size(), 4096);
    /// assert!(opts.validate().is_ok());
    /// ```
    pub fn new() -> Self {
        Self {
            device: PathBuf::from(DEVICE_PATH),
            buffer_size: DEFAULT_BUFFER_SIZE as usize,
            period: None,
            back_to_back: false,
            adaptive: false,
            name: String::new(),
            ring_slots: 0,
        }
    }

    /// The device node to open (default [`DEVICE_PATH`]).
    ///
    /// ```
    /// let opts = kern2usr::ChannelOptions::new().device("/dev/char/mmaptest");
    /// assert_eq!(opts.get_device(), std::path::Path::new("/dev/char/mmaptest"));
    /// ```
    pub fn device(mut self, path: impl Into<PathBuf>) -> Self {
        self.device = path.into();
        self
    }

    /// Buffer size in bytes: a multiple of the page size, from one page
    /// to [`MAX_BUFFER_SIZE`] (16 MiB). The module charges it to this
    /// process's memory cgroup and counts it against `max_channel_memory`.
    ///
    /// ```
    /// let opts = kern2usr::ChannelOptions::new().buffer_size(1 << 20);
    /// assert_eq!(opts.get_buffer_size(), 1 << 20);
    /// assert!(kern2usr::ChannelOptions::new().buffer_size(1000).validate().is_err());
    /// ```
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// Period of the timer-paced test rounds: whole milliseconds, 1 ms to
    /// [`MAX_PERIOD_MS`]. Unset: the module's default, [`DEFAULT_PERIOD_MS`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = kern2usr::ChannelOptions::new().period(Duration::from_millis(10));
    /// assert_eq!(opts.get_period(), Duration::from_millis(10));
    /// ```
    pub fn period(mut self, period: Duration) -> Self {
        self.period = Some(period);
        self
    }

    /// Back-to-back pacing: the next round starts as soon as the last is
    /// acknowledged, no timer wait ([`CREATE_BACK_TO_BACK`]).
    ///
    /// ```
    /// let opts = kern2usr::ChannelOptions::new().back_to_back(true);
    /// assert_eq!(opts.flags(), kern2usr::abi::CREATE_BACK_TO_BACK);
    /// ```
    pub fn back_to_back(mut self, on: bool) -> Self {
        self.back_to_back = on;
        self
    }

    /// Adaptive doorbells: the module skips MEMORY_READY's doorbell while
    /// the listener says it spins on the control page
    /// ([`CREATE_ADAPTIVE`]; see [`Channel::ctrl`] and
    /// [`crate::session::wait_adaptive`]). [`Channel::next`] itself never
    /// spins, so with it alone every round still rings.
    ///
    /// ```
    /// let opts = kern2usr::ChannelOptions::new().back_to_back(true).adaptive(true);
    /// assert_eq!(opts.flags(), kern2usr::abi::CREATE_BACK_TO_BACK | kern2usr::abi::CREATE_ADAPTIVE);
    /// ```
    pub fn adaptive(mut self, on: bool) -> Self {
        self.adaptive = on;
        self
    }

    /// A label for the listing (`kern2usr status`): up to 15 bytes of
    /// `[A-Za-z0-9_.-]`; empty (the default) for none.
    ///
    /// ```
    /// assert!(kern2usr::ChannelOptions::new().name("cam-0.raw").validate().is_ok());
    /// assert!(kern2usr::ChannelOptions::new().name("no spaces").validate().is_err());
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A ring channel of `slots` slots of [`ChannelOptions::buffer_size`]
    /// bytes each ([`CREATE_RING`], ABI 4): a power of two from
    /// [`RING_MIN_SLOTS`] to [`RING_MAX_SLOTS`], with `slots *
    /// buffer_size` at most [`MAX_BUFFER_SIZE`]; 0 (the default) for an
    /// ordinary channel. A ring is made with [`crate::Ring::create`]
    /// ([`Channel::create`] refuses these options).
    ///
    /// ```
    /// let opts = kern2usr::ChannelOptions::new().back_to_back(true).ring(8);
    /// assert_eq!(opts.get_ring(), 8);
    /// assert_eq!(opts.flags(), kern2usr::abi::CREATE_BACK_TO_BACK | kern2usr::abi::CREATE_RING);
    /// assert!(kern2usr::ChannelOptions::new().ring(3).validate().is_err());
    /// ```
    pub fn ring(mut self, slots: u32) -> Self {
        self.ring_slots = slots;
        self
    }

    /// The ring's number of slots (0: not a ring).
    ///
    /// ```
    /// assert_eq!(kern2usr::ChannelOptions::new().get_ring(), 0);
    /// ```
    pub fn get_ring(&self) -> u32 {
        self.ring_slots
    }

    /// The device node.
    ///
    /// ```
    /// assert_eq!(kern2usr::ChannelOptions::new().get_device(), std::path::Path::new("/dev/kern2usr"));
    /// ```
    pub fn get_device(&self) -> &Path {
        &self.device
    }

    /// The buffer size in bytes.
    ///
    /// ```
    /// assert_eq!(kern2usr::ChannelOptions::new().get_buffer_size(), 4096);
    /// ```
    pub fn get_buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// The period of the rounds ([`DEFAULT_PERIOD_MS`] unless set).
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(kern2usr::ChannelOptions::new().get_period(), Duration::from_millis(500));
    /// ```
    pub fn get_period(&self) -> Duration {
        self.period
            .unwrap_or(Duration::from_millis(u64::from(DEFAULT_PERIOD_MS)))
    }

    /// The name (empty for none).
    ///
    /// ```
    /// assert_eq!(kern2usr::ChannelOptions::new().name("a").get_name(), "a");
    /// ```
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// The `CREATE_*` bits these options ask for.
    ///
    /// ```
    /// assert_eq!(kern2usr::ChannelOptions::new().flags(), 0);
    /// ```
    pub fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.back_to_back {
            flags |= CREATE_BACK_TO_BACK;
        }
        if self.adaptive {
            flags |= CREATE_ADAPTIVE;
        }
        if self.ring_slots != 0 {
            flags |= CREATE_RING;
        }
        flags
    }

    /// Check the options against the module's rules without asking it:
    /// [`Error::InvalidOptions`] names the field and the rule. (The limits
    /// `max_channels` and `max_channel_memory` only the module knows.)
    ///
    /// ```
    /// use kern2usr::{ChannelOptions, Error};
    /// let e = ChannelOptions::new().buffer_size(0).validate();
    /// assert!(matches!(e, Err(Error::InvalidOptions(_))));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let page = rustix::param::page_size();
        let bad = |s: String| Err(Error::InvalidOptions(s));
        if self.buffer_size == 0
            || !self.buffer_size.is_multiple_of(page)
            || self.buffer_size as u64 > MAX_BUFFER_SIZE
        {
            return bad(format!(
                "buffer_size {}: a multiple of the page size ({page}) from {page} to {MAX_BUFFER_SIZE} bytes",
                self.buffer_size
            ));
        }
        if let Some(p) = self.period {
            let ms = p.as_millis();
            if p.subsec_nanos() % 1_000_000 != 0 || ms == 0 || ms > u128::from(MAX_PERIOD_MS) {
                return bad(format!(
                    "period {p:?}: whole milliseconds from 1 to {MAX_PERIOD_MS}"
                ));
            }
        }
        if self.ring_slots != 0 {
            let n = self.ring_slots;
            if !n.is_power_of_two() || !(RING_MIN_SLOTS..=RING_MAX_SLOTS).contains(&n) {
                return bad(format!(
                    "ring {n}: a power of two from {RING_MIN_SLOTS} to {RING_MAX_SLOTS} slots"
                ));
            }
            if u64::from(n) * self.buffer_size as u64 > MAX_BUFFER_SIZE {
                return bad(format!(
                    "ring {n} x buffer_size {}: at most {MAX_BUFFER_SIZE} bytes in all",
                    self.buffer_size
                ));
            }
        }
        validate_name(&self.name, false)
    }

    /// [`Channel::create`] with these options.
    ///
    /// ```no_run
    /// let ch = kern2usr::ChannelOptions::new().name("mine").create()?;
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn create(&self) -> Result<Channel> {
        Channel::create(self)
    }

    /// The `K2U_IOC_CREATE` request (eventfds left at -1, filled in by
    /// [`Channel::create`]); the options are validated first.
    ///
    /// ```
    /// let req = kern2usr::ChannelOptions::new().name("x").request()?;
    /// assert_eq!(req.buffer_size, 4096);
    /// assert_eq!(&req.name[..2], b"x\0");
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn request(&self) -> Result<abi::Create> {
        self.validate()?;
        Ok(abi::Create {
            efd: -1,
            efd2: -1,
            buffer_size: self.buffer_size as u64,
            period_ms: self.period.map_or(0, |p| p.as_millis() as u32),
            flags: self.flags(),
            name: name_bytes(&self.name),
            id: 0,
            ring_slots: self.ring_slots,
        })
    }
}

/// Check a channel name: at most `CHANNEL_NAME_LEN - 1` bytes of
/// `[A-Za-z0-9_.-]`, non-empty when `required`.
pub(crate) fn validate_name(name: &str, required: bool) -> Result<()> {
    let max = CHANNEL_NAME_LEN - 1;
    if required && name.is_empty() {
        return Err(Error::InvalidOptions(
            "name: a producer channel's name is needed to attach".to_owned(),
        ));
    }
    if name.len() > max
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(Error::InvalidOptions(format!(
            "name {name:?}: at most {max} bytes of [A-Za-z0-9_.-]"
        )));
    }
    Ok(())
}

/// `name` NUL-padded into the ABI's field (callers validated it).
pub(crate) fn name_bytes(name: &str) -> [u8; CHANNEL_NAME_LEN] {
    let mut out = [0u8; CHANNEL_NAME_LEN];
    let n = name.len().min(CHANNEL_NAME_LEN - 1);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// A command to one's own channel ([`Channel::command`],
/// `K2U_IOC_CHANNEL_CMD`). The channel follows the default channel's
/// state machine minus FIND: MMAP, then START, STOP (START again), EXIT.
/// Each accepted command is also delivered to the channel's listener (this
/// process) as the matching [`crate::Event`].
///
/// ```
/// use kern2usr::{Command, abi::Code};
/// assert_eq!(Command::Start.code(), Code::StartTest);
/// assert_eq!(Command::Exit.name(), "EXIT_TEST");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// MMAP (2): the listener is told to map the buffer ([`Channel`]
    /// mapped it already); needed once before the first START.
    Mmap,
    /// START_TEST (3): test rounds begin.
    Start,
    /// STOP_TEST (4): rounds end; an outstanding round is abandoned.
    Stop,
    /// EXIT_TEST (5): the listener is told to go away; no command after it.
    Exit,
}

impl Command {
    /// Every command, in protocol order.
    ///
    /// ```
    /// assert_eq!(kern2usr::Command::ALL.len(), 4);
    /// ```
    pub const ALL: [Command; 4] = [Command::Mmap, Command::Start, Command::Stop, Command::Exit];

    /// The protocol code.
    ///
    /// ```
    /// assert_eq!(kern2usr::Command::Mmap.code().value(), 2);
    /// ```
    pub const fn code(self) -> Code {
        match self {
            Command::Mmap => Code::Mmap,
            Command::Start => Code::StartTest,
            Command::Stop => Code::StopTest,
            Command::Exit => Code::ExitTest,
        }
    }

    /// The code's upper-case name, as the kernel log prints it.
    ///
    /// ```
    /// assert_eq!(kern2usr::Command::Stop.name(), "STOP_TEST");
    /// ```
    pub const fn name(self) -> &'static str {
        self.code().name()
    }
}

/// One channel's figures (`K2U_IOC_CHANNEL_STATS`), typed: see
/// [`Channel::stats`].
///
/// ```no_run
/// let ch = kern2usr::Channel::create(&kern2usr::ChannelOptions::new())?;
/// let s = ch.stats()?;
/// println!("channel {}: {} rounds, p99 {} ns", s.id, s.rounds_published, s.round_trips.p99);
/// # Ok::<(), kern2usr::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelStats {
    /// The channel's id (0: the default channel).
    pub id: u32,
    /// How its codes are delivered.
    pub event_mode: EventMode,
    /// Its buffer size in bytes.
    pub buffer_size: u64,
    /// Rounds it published since it was created (`ready_seq`).
    pub rounds_published: u64,
    /// Round trips of its current (or last) test, in ns; `count` rounds.
    pub round_trips: Stats,
}

impl TryFrom<abi::ChannelStats> for ChannelStats {
    type Error = Error;

    /// Type the raw figures; an unknown event mode is
    /// [`Error::UnknownEventMode`].
    fn try_from(raw: abi::ChannelStats) -> Result<Self> {
        Ok(Self {
            id: raw.id,
            event_mode: event_mode(raw.event_mode)?,
            buffer_size: raw.buffer_size,
            rounds_published: raw.rounds_published,
            round_trips: Stats {
                count: raw.count,
                min: raw.min_ns,
                mean: raw.mean_ns,
                p50: raw.p50_ns,
                p90: raw.p90_ns,
                p99: raw.p99_ns,
                p99_9: raw.p999_ns,
                max: raw.max_ns,
            },
        })
    }
}

/// The [`EventMode`] of an ABI value.
pub(crate) fn event_mode(raw: u32) -> Result<EventMode> {
    match raw {
        m if m == EventMode::Counter as u32 => Ok(EventMode::Counter),
        m if m == EventMode::Queue as u32 => Ok(EventMode::Queue),
        m => Err(Error::UnknownEventMode(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_as_the_module_checks_them() {
        let page = rustix::param::page_size();
        let ok = ChannelOptions::new();
        assert!(ok.validate().is_ok());
        for size in [0, page - 1, page + 1, MAX_BUFFER_SIZE as usize + page] {
            let e = ok.clone().buffer_size(size).validate();
            assert!(
                matches!(e, Err(Error::InvalidOptions(ref m)) if m.contains("buffer_size")),
                "{size}: {e:?}"
            );
        }
        for size in [page, 2 * page, MAX_BUFFER_SIZE as usize] {
            assert!(ok.clone().buffer_size(size).validate().is_ok(), "{size}");
        }
        for p in [
            Duration::ZERO,
            Duration::from_micros(1500),
            Duration::from_millis(u64::from(MAX_PERIOD_MS) + 1),
        ] {
            assert!(ok.clone().period(p).validate().is_err(), "{p:?}");
        }
        assert!(ok
            .clone()
            .period(Duration::from_millis(u64::from(MAX_PERIOD_MS)))
            .validate()
            .is_ok());
        for name in ["0123456789abcdef", "a b", "é", "a/b", "x\0"] {
            assert!(ok.clone().name(name).validate().is_err(), "{name:?}");
        }
        for name in ["", "0123456789abcde", "A-z_0.9"] {
            assert!(ok.clone().name(name).validate().is_ok(), "{name:?}");
        }
    }

    #[test]
    fn the_request_carries_every_option() -> Result<()> {
        let req = ChannelOptions::new()
            .buffer_size(2 * rustix::param::page_size())
            .period(Duration::from_millis(7))
            .back_to_back(true)
            .adaptive(true)
            .name("0123456789abcde")
            .request()?;
        assert_eq!(req.buffer_size, 2 * rustix::param::page_size() as u64);
        assert_eq!(req.period_ms, 7);
        assert_eq!(req.flags, CREATE_BACK_TO_BACK | CREATE_ADAPTIVE);
        assert_eq!(&req.name[..15], b"0123456789abcde");
        assert_eq!(req.name[15], 0, "NUL-terminated");
        assert_eq!((req.id, req.ring_slots), (0, 0));
        // Unset period: 0, the module's default.
        assert_eq!(ChannelOptions::new().request()?.period_ms, 0);
        Ok(())
    }

    #[test]
    fn ring_options_are_checked_and_carried() -> Result<()> {
        let page = rustix::param::page_size();
        for n in [1, 3, 6, 128, 256] {
            let e = ChannelOptions::new().ring(n).validate();
            assert!(
                matches!(e, Err(Error::InvalidOptions(ref m)) if m.contains("ring")),
                "{n}: {e:?}"
            );
        }
        let too_big = ChannelOptions::new()
            .buffer_size(MAX_BUFFER_SIZE as usize / 4 + page)
            .ring(4);
        assert!(too_big.validate().is_err());
        let fits = ChannelOptions::new()
            .buffer_size(MAX_BUFFER_SIZE as usize / 4)
            .ring(4);
        assert!(fits.validate().is_ok());
        for n in [2, 4, 8, 16, 32, 64] {
            let req = ChannelOptions::new().ring(n).request()?;
            assert_eq!((req.ring_slots, req.flags), (n, CREATE_RING));
        }
        Ok(())
    }

    #[test]
    fn raw_stats_are_typed() {
        let raw = abi::ChannelStats {
            id: 3,
            event_mode: EventMode::Queue as u32,
            buffer_size: 8192,
            rounds_published: 10,
            count: 9,
            min_ns: 1,
            mean_ns: 2,
            p50_ns: 3,
            p90_ns: 4,
            p99_ns: 5,
            p999_ns: 6,
            max_ns: 7,
        };
        let s = ChannelStats::try_from(raw).ok();
        assert_eq!(
            s.map(|s| (s.id, s.event_mode, s.round_trips.values())),
            Some((3, EventMode::Queue, [9, 1, 2, 3, 4, 5, 6, 7]))
        );
        let bad = abi::ChannelStats {
            event_mode: 0,
            ..raw
        };
        assert!(matches!(
            ChannelStats::try_from(bad),
            Err(Error::UnknownEventMode(0))
        ));
    }
}
