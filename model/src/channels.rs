//! Channels (ABI 4, docs/PROTOCOL.md "Channels"): the files that
//! `K2U_IOC_CREATE` made channels of their own, the device-wide limits
//! `max_channels` and `max_channel_memory`, ids, ownership, release and
//! the `channels` listing.
//!
//! Each channel's own protocol (commands, events, rounds, acks, mmap) is
//! the default channel's: a channel carries a [`Model`] of its own, in a
//! world of one process (its owner) with two eventfds (`efd` at fd
//! [`CHAN_EFD_FD`], `efd2` at fd [`CHAN_EFD2_FD`]), loaded with the
//! channel's buffer size, period and pacing and attached at CREATE. So the
//! per-round logic lives in one place.
//!
//! What the two modules do, and this model with them:
//! * ids: the lowest free id from 1 (`ida_alloc_min(1)` in C, the first gap
//!   of the id-ordered registry in Rust); an id returns at the release;
//! * CREATE's checks, in order: the file is a channel already (EBUSY), the
//!   fields (EINVAL: `buffer_size`, `period_ms`, `flags`, `name`, `id`,
//!   `reserved`), the eventfds (EBADF when not open, EINVAL when not an
//!   eventfd, the same one twice, or in counter mode an `efd` with a
//!   count), `K2U_CREATE_ATTACH` with no producer of that name (ENOENT; the
//!   model has no producers), `max_channels` then `max_channel_memory`
//!   (ENOSPC);
//! * ownership: on a channel's file every call of another process is EPERM
//!   but `K2U_IOC_INFO` (unknown ioctls stay ENOTTY);
//! * release: at the last reference of the file (its fds and mappings),
//!   which returns the id and the memory;
//! * ring channels (`K2U_CREATE_RING`, RING-SPEC B): `ring_slots` a power of
//!   two in `RING_MIN_SLOTS..=RING_MAX_SLOTS` with `ring_slots *
//!   buffer_size <= MAX_BUFFER_SIZE` (else EINVAL, as is `ring_slots`
//!   without the flag and the flag with `K2U_CREATE_ATTACH`); charged
//!   `ring_slots * buffer_size`; the listing's pacing `b2b+ring` or
//!   `timer+ring`. The rounds, slots and acks through `ack_seq` are in
//!   the channel's [`Model`].

use std::collections::BTreeMap;

use kern2usr_abi::{
    param, Create, ABI_VERSION, CHANNEL_NAME_LEN, CREATE_ADAPTIVE, CREATE_ATTACH,
    CREATE_BACK_TO_BACK, CREATE_FLAGS, CREATE_RING, DEFAULT_MAX_CHANNELS,
    DEFAULT_MAX_CHANNEL_MEMORY, MAX_BUFFER_SIZE, MAX_CHANNELS_LIMIT, MAX_CHANNEL_MEMORY_LIMIT,
    MAX_PERIOD_MS, RING_MAX_SLOTS, RING_MIN_SLOTS,
};

use crate::{kstrto, AckOutcome, Errno, Event, MmapReq, Mode, Model, Pid, PAGE_SIZE};

/// The fd of a channel's `efd` in its model's world.
pub const CHAN_EFD_FD: i32 = 3;
/// The fd of a channel's `efd2` in its model's world.
pub const CHAN_EFD2_FD: i32 = 4;

/// An open file of the device (one `open()`; dups and forks share it).
pub type FileId = u32;

/// What an eventfd argument of CREATE names in the caller's fd table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EfdArg {
    /// No open fd.
    NotOpen,
    /// An open fd that is not an eventfd.
    NotEventfd,
    /// An eventfd: `object` tells eventfds apart (dups share it), `count`
    /// is its counter.
    Eventfd {
        /// Which eventfd object.
        object: u32,
        /// Its counter now.
        count: u64,
    },
}

/// An open file of the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevFile {
    /// A descriptor of it is still open.
    pub fd_open: bool,
    /// Mappings of it.
    pub maps: u32,
    /// The channel it is (None: it reaches the default channel).
    pub chan: Option<u32>,
}

/// A created channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Its id (1 and up).
    pub id: u32,
    /// Its name (may be empty).
    pub name: String,
    /// The process that created it.
    pub owner: Pid,
    /// `K2U_CREATE_BACK_TO_BACK`.
    pub back_to_back: bool,
    /// `K2U_CREATE_ADAPTIVE`.
    pub adaptive: bool,
    /// Its protocol state: the default channel's model, in a world of
    /// one process (the owner) holding efd and efd2.
    pub state: Model,
}

impl Channel {
    /// The buffer size (a ring's slot size).
    pub fn buffer_size(&self) -> u64 {
        self.state.buffer_size()
    }

    /// The memory charged for its buffer: all its slots.
    pub fn charged(&self) -> u64 {
        self.buffer_size() * u64::from(self.state.ring_slots().max(1))
    }

    /// The pacing the listing shows.
    pub fn pacing(&self) -> &'static str {
        if self.state.ring_slots() > 0 {
            return if self.back_to_back {
                "b2b+ring"
            } else {
                "timer+ring"
            };
        }
        match (self.back_to_back, self.adaptive) {
            (true, true) => "b2b+adaptive",
            (true, false) => "b2b",
            (false, true) => "timer+adaptive",
            (false, false) => "timer",
        }
    }
}

/// One line of the `channels` listing (a created channel's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// Id.
    pub id: u32,
    /// Name, `-` when empty.
    pub name: String,
    /// Owner pid.
    pub owner: Pid,
    /// Buffer size.
    pub buffer_size: u64,
    /// `queue` or `counter`.
    pub mode: &'static str,
    /// Pacing.
    pub pacing: &'static str,
    /// Rounds counted in the current (or last) test.
    pub rounds: u64,
}

/// What `K2U_IOC_CHANNEL_STATS` returns, as far as the model knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsView {
    /// Channel id.
    pub id: u32,
    /// Event mode value.
    pub event_mode: u32,
    /// Buffer size.
    pub buffer_size: u64,
    /// Rounds published since creation.
    pub rounds_published: u64,
    /// Rounds counted in the current test.
    pub count: u64,
}

/// The channels of the device and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channels {
    mode: Mode,
    dev_noexec: bool,
    max_channels: u32,
    max_memory: u64,
    files: BTreeMap<FileId, DevFile>,
    chans: BTreeMap<u32, Channel>,
    released: u64,
}

/// The name's text and whether it passes: up to 15 bytes of
/// `[A-Za-z0-9_.-]`, then NULs only.
fn check_name(name: &[u8; CHANNEL_NAME_LEN]) -> Result<String, Errno> {
    let len = name.iter().position(|&b| b == 0).ok_or(Errno::EINVAL)?;
    let ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    if !name[..len].iter().all(ok) || name[len..].iter().any(|&b| b != 0) {
        return Err(Errno::EINVAL);
    }
    Ok(String::from_utf8_lossy(&name[..len]).into_owned())
}

/// The field checks of CREATE (EINVAL), in the modules' order.
fn check_fields(req: &Create) -> Result<String, Errno> {
    let attach = req.flags & CREATE_ATTACH != 0;
    let size = req.buffer_size;
    if attach && size != 0 {
        return Err(Errno::EINVAL);
    }
    if !attach && (size == 0 || size > MAX_BUFFER_SIZE || !size.is_multiple_of(PAGE_SIZE)) {
        return Err(Errno::EINVAL);
    }
    if (attach && req.period_ms != 0) || req.period_ms > MAX_PERIOD_MS {
        return Err(Errno::EINVAL);
    }
    if attach && req.flags & (CREATE_BACK_TO_BACK | CREATE_ADAPTIVE) != 0 {
        return Err(Errno::EINVAL);
    }
    if req.flags & !CREATE_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    let name = check_name(&req.name)?;
    if attach && name.is_empty() {
        return Err(Errno::EINVAL);
    }
    if req.id != 0 {
        return Err(Errno::EINVAL);
    }
    let slots = req.ring_slots;
    if req.flags & CREATE_RING == 0 {
        if slots != 0 {
            return Err(Errno::EINVAL);
        }
    } else if attach
        || !slots.is_power_of_two()
        || !(RING_MIN_SLOTS..=RING_MAX_SLOTS).contains(&slots)
        || u64::from(slots).saturating_mul(size) > MAX_BUFFER_SIZE
    {
        return Err(Errno::EINVAL);
    }
    Ok(name)
}

impl Channels {
    /// A freshly loaded module: no channels, limits at their defaults.
    pub fn new(mode: Mode, dev_noexec: bool) -> Self {
        Channels {
            mode,
            dev_noexec,
            max_channels: DEFAULT_MAX_CHANNELS,
            max_memory: DEFAULT_MAX_CHANNEL_MEMORY,
            files: BTreeMap::new(),
            chans: BTreeMap::new(),
            released: 0,
        }
    }

    // ----- Observers -------------------------------------------------

    /// `max_channels`.
    pub fn max_channels(&self) -> u32 {
        self.max_channels
    }
    /// `max_channel_memory`.
    pub fn max_memory(&self) -> u64 {
        self.max_memory
    }
    /// Channels that exist (not released).
    pub fn count(&self) -> usize {
        self.chans.len()
    }
    /// Sum of their buffer sizes (a ring's: all its slots).
    pub fn memory(&self) -> u64 {
        self.chans.values().map(Channel::charged).sum()
    }
    /// A channel by id.
    pub fn chan(&self, id: u32) -> Option<&Channel> {
        self.chans.get(&id)
    }
    /// A channel by id, to apply what the kernel did on its own time.
    pub fn chan_mut(&mut self, id: u32) -> Option<&mut Channel> {
        self.chans.get_mut(&id)
    }
    /// Every channel, by id.
    pub fn chans(&self) -> impl Iterator<Item = &Channel> {
        self.chans.values()
    }
    /// An open file.
    pub fn file(&self, f: FileId) -> Option<&DevFile> {
        self.files.get(&f)
    }
    /// The channel of file `f`, if it is one.
    pub fn chan_of(&self, f: FileId) -> Option<u32> {
        self.files.get(&f).and_then(|d| d.chan)
    }
    /// Channels released so far (one `channel <id> released` line each).
    pub fn released(&self) -> u64 {
        self.released
    }
    /// Some file of the model is open or mapped (the module is in use).
    pub fn in_use(&self) -> bool {
        !self.files.is_empty()
    }

    /// What the listing shows for the created channels, by id.
    pub fn listing(&self) -> Vec<ListEntry> {
        self.chans
            .values()
            .map(|c| ListEntry {
                id: c.id,
                name: if c.name.is_empty() {
                    "-".to_owned()
                } else {
                    c.name.clone()
                },
                owner: c.owner,
                buffer_size: c.buffer_size(),
                mode: self.mode.name(),
                pacing: c.pacing(),
                rounds: c.state.counted(),
            })
            .collect()
    }

    /// The id the next channel gets: the lowest free one from 1.
    pub fn next_id(&self) -> u32 {
        (1..).find(|i| !self.chans.contains_key(i)).unwrap_or(1)
    }

    // ----- Parameters ------------------------------------------------

    /// A read of `max_channels` or `max_channel_memory`.
    pub fn param_read(&self, name: &str) -> Option<String> {
        match name {
            param::MAX_CHANNELS => Some(format!("{}\n", self.max_channels)),
            param::MAX_CHANNEL_MEMORY => Some(format!("{}\n", self.max_memory)),
            _ => None,
        }
    }

    /// One write of `bytes` to `max_channels` or `max_channel_memory`:
    /// EINVAL out of range (1..=40; a page..=1 GiB) or not a number.
    /// Lowering a cap below what exists only refuses new channels.
    pub fn param_write(&mut self, name: &str, bytes: &[u8]) -> Result<(), Errno> {
        let Some(text) = kstrto::set_text(bytes) else {
            return Ok(());
        };
        match name {
            param::MAX_CHANNELS => {
                self.max_channels = kstrto::kstrtouint(text)
                    .ok()
                    .filter(|v| (1..=MAX_CHANNELS_LIMIT).contains(v))
                    .ok_or(Errno::EINVAL)?;
            }
            param::MAX_CHANNEL_MEMORY => {
                self.max_memory = kstrto::kstrtoull(text)
                    .ok()
                    .filter(|v| (PAGE_SIZE..=MAX_CHANNEL_MEMORY_LIMIT).contains(v))
                    .ok_or(Errno::EINVAL)?;
            }
            _ => return Err(Errno::ENOENT),
        }
        Ok(())
    }

    // ----- Files -----------------------------------------------------

    /// A process opened the device: file `f`, not a channel.
    pub fn open(&mut self, f: FileId) {
        self.files.insert(
            f,
            DevFile {
                fd_open: true,
                maps: 0,
                chan: None,
            },
        );
    }

    /// The last descriptor of `f` was closed: the release if no mapping
    /// is left (the channel's id, when it ends).
    pub fn close(&mut self, f: FileId) -> Option<u32> {
        let file = self.files.get_mut(&f)?;
        file.fd_open = false;
        self.release_if_unused(f)
    }

    /// One mapping of `f` went away (munmap, or its process exited).
    pub fn unmapped(&mut self, f: FileId) -> Option<u32> {
        let file = self.files.get_mut(&f)?;
        file.maps = file.maps.saturating_sub(1);
        self.release_if_unused(f)
    }

    fn release_if_unused(&mut self, f: FileId) -> Option<u32> {
        let file = self.files.get(&f)?;
        if file.fd_open || file.maps > 0 {
            return None;
        }
        let chan = file.chan;
        self.files.remove(&f);
        let id = chan?;
        self.chans.remove(&id);
        self.released += 1;
        Some(id)
    }

    /// The channel a call on `f` by `caller` acts on: ENOTCONN when `f` is
    /// no channel, EPERM when `caller` does not own it.
    fn owned(&mut self, f: FileId, caller: Pid) -> Result<&mut Channel, Errno> {
        let id = self.chan_of(f).ok_or(Errno::ENOTCONN)?;
        let c = self.chans.get_mut(&id).ok_or(Errno::ENOTCONN)?;
        if c.owner != caller {
            return Err(Errno::EPERM);
        }
        Ok(c)
    }

    // ----- CREATE ----------------------------------------------------

    /// `K2U_IOC_CREATE` on `f` by `caller`: the answer (id and size
    /// filled in) or the errno.
    pub fn create(
        &mut self,
        f: FileId,
        caller: Pid,
        req: &Create,
        efd: EfdArg,
        efd2: EfdArg,
    ) -> Result<Create, Errno> {
        let file = self.files.get(&f).ok_or(Errno::EBADF)?;
        if let Some(id) = file.chan {
            // The owner check comes first: another process gets EPERM.
            if self.chans.get(&id).is_some_and(|c| c.owner != caller) {
                return Err(Errno::EPERM);
            }
            return Err(Errno::EBUSY);
        }
        let name = check_fields(req)?;
        let (e1, c1) = match efd {
            EfdArg::NotOpen => return Err(Errno::EBADF),
            EfdArg::NotEventfd => (None, 0),
            EfdArg::Eventfd { object, count } => (Some(object), count),
        };
        let e2 = match efd2 {
            EfdArg::NotOpen => return Err(Errno::EBADF),
            EfdArg::NotEventfd => None,
            EfdArg::Eventfd { object, .. } => Some(object),
        };
        let (Some(e1), Some(e2)) = (e1, e2) else {
            return Err(Errno::EINVAL);
        };
        if e1 == e2 {
            return Err(Errno::EINVAL);
        }
        if self.mode == Mode::Counter && c1 != 0 {
            return Err(Errno::EINVAL);
        }
        if req.flags & CREATE_ATTACH != 0 {
            // No kernel producer in the model.
            return Err(Errno::ENOENT);
        }
        if self.chans.len() >= self.max_channels as usize {
            return Err(Errno::ENOSPC);
        }
        let slots = u64::from(req.ring_slots.max(1));
        if self.memory() + req.buffer_size * slots > self.max_memory {
            return Err(Errno::ENOSPC);
        }
        let id = self.next_id();
        let back_to_back = req.flags & CREATE_BACK_TO_BACK != 0;
        let adaptive = req.flags & CREATE_ADAPTIVE != 0;
        let mut state = Self::channel_model(
            self.mode,
            self.dev_noexec,
            caller,
            req.buffer_size,
            req.period_ms,
            back_to_back,
            adaptive,
            c1,
        )?;
        if req.flags & CREATE_RING != 0 {
            state.set_ring(req.ring_slots);
        }
        self.chans.insert(
            id,
            Channel {
                id,
                name,
                owner: caller,
                back_to_back,
                adaptive,
                state,
            },
        );
        if let Some(file) = self.files.get_mut(&f) {
            file.chan = Some(id);
        }
        let mut out = *req;
        out.id = id;
        Ok(out)
    }

    /// A channel's own model: loaded with its size, period and pacing,
    /// its owner attached with efd (counter `count`) and efd2.
    #[allow(clippy::too_many_arguments)]
    fn channel_model(
        mode: Mode,
        dev_noexec: bool,
        owner: Pid,
        size: u64,
        period_ms: u32,
        back_to_back: bool,
        adaptive: bool,
        count: u64,
    ) -> Result<Model, Errno> {
        let mut m = Model::new(mode, dev_noexec);
        m.insmod()?;
        m.set_buffer_size(size);
        m.spawn(owner);
        let efd = m.new_eventfd(owner, CHAN_EFD_FD);
        m.new_eventfd(owner, CHAN_EFD2_FD);
        if count != 0 {
            m.efd_write(efd, count);
        }
        if period_ms != 0 {
            m.param_write(param::PERIOD_MS, format!("{period_ms}\n").as_bytes())?;
        }
        m.param_write(param::BACK_TO_BACK, if back_to_back { b"1" } else { b"0" })?;
        m.param_write(param::ADAPTIVE, if adaptive { b"1" } else { b"0" })?;
        m.ioctl_register(owner, CHAN_EFD_FD, CHAN_EFD2_FD)?;
        Ok(m)
    }

    // ----- Calls on a channel's file -----------------------------------

    /// `K2U_IOC_CHANNEL_CMD` with `code`: the default channel's refusals
    /// for 2-5 (`cur_cmd`'s), EINVAL for any other code.
    pub fn command(&mut self, f: FileId, caller: Pid, code: u32) -> Result<(), Errno> {
        let c = self.owned(f, caller)?;
        if !(2..=5).contains(&code) {
            return Err(Errno::EINVAL);
        }
        c.state
            .param_write(param::CUR_CMD, format!("{code}\n").as_bytes())
    }

    /// `K2U_IOC_CHANNEL_STATS`: the channel's figures. On a file that is
    /// no channel the default channel's: `Ok(None)`.
    pub fn stats(&self, f: FileId, caller: Pid) -> Result<Option<StatsView>, Errno> {
        let Some(id) = self.chan_of(f) else {
            return Ok(None);
        };
        let c = self.chans.get(&id).ok_or(Errno::ENOTCONN)?;
        if c.owner != caller {
            return Err(Errno::EPERM);
        }
        Ok(Some(StatsView {
            id,
            event_mode: self.mode as u32,
            buffer_size: c.buffer_size(),
            rounds_published: c.state.ready_seq(),
            count: c.state.counted(),
        }))
    }

    /// `K2U_IOC_INFO` (anyone): abi version, mode, size, period, id.
    pub fn info(&self, f: FileId) -> Option<(u32, u32, u64, u32, u32)> {
        let id = self.chan_of(f)?;
        let c = self.chans.get(&id)?;
        Some((
            ABI_VERSION,
            self.mode as u32,
            c.buffer_size(),
            c.state.period_ms(),
            id,
        ))
    }

    /// `K2U_IOC_ACK` on a channel's file.
    pub fn ack(&mut self, f: FileId, caller: Pid) -> Result<(), Errno> {
        self.owned(f, caller)?.state.ioctl_ack()
    }

    /// `K2U_IOC_ACK_ROUND(id)` on a channel's file.
    pub fn ack_round(&mut self, f: FileId, caller: Pid, round: u32) -> Result<(), Errno> {
        self.owned(f, caller)?.state.ioctl_ack_round(round)
    }

    /// `read()` of `len` bytes from a channel's file (O_NONBLOCK).
    pub fn read_records(
        &mut self,
        f: FileId,
        caller: Pid,
        len: usize,
    ) -> Result<Vec<Event>, Errno> {
        self.owned(f, caller)?.state.read_records(len)
    }

    /// `K2U_IOC_READ_BUFFER` of `len` bytes: the bytes copied; on a ring
    /// EOPNOTSUPP (its slots are read through the mapping).
    pub fn read_buffer(&mut self, f: FileId, caller: Pid, len: u64) -> Result<u64, Errno> {
        let c = self.owned(f, caller)?;
        if c.state.ring_slots() > 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        Ok(c.state.ioctl_read_buffer(len))
    }

    /// `mmap()` of a channel's file; on success the file has one more
    /// mapping (which keeps the channel).
    pub fn mmap(&mut self, f: FileId, caller: Pid, req: MmapReq) -> Result<(), Errno> {
        self.owned(f, caller)?.state.mmap(caller, req)?;
        if let Some(file) = self.files.get_mut(&f) {
            file.maps += 1;
        }
        Ok(())
    }

    /// Another ioctl the module knows, by a process that does not own the
    /// channel (REGISTER, CREATE, READ_BUFFER...): EPERM on a channel's
    /// file.
    pub fn foreign_call(&self, f: FileId, caller: Pid) -> Result<(), Errno> {
        match self.chan_of(f).and_then(|id| self.chans.get(&id)) {
            Some(c) if c.owner != caller => Err(Errno::EPERM),
            _ => Ok(()),
        }
    }

    /// The owner reads its channel's efd: the value, or None (EAGAIN).
    pub fn efd_read(&mut self, id: u32) -> Option<u64> {
        let c = self.chans.get_mut(&id)?;
        let efd = c.state.fd(c.owner, CHAN_EFD_FD)?;
        match efd {
            crate::FdKind::Eventfd(e) => c.state.efd_read(e),
            _ => None,
        }
    }

    /// The owner stores `v` in its channel's control page `ack_seq` (a
    /// page ack; the module takes it at the next efd2 wake-up or, on a
    /// ring, before its next fill).
    pub fn store_ack_seq(&mut self, id: u32, v: u64) {
        if let Some(c) = self.chans.get_mut(&id) {
            c.state.store_ack_seq(v);
        }
    }

    /// The owner writes `value` to its channel's efd2.
    pub fn efd2_write(&mut self, id: u32, value: u64) -> AckOutcome {
        let Some(c) = self.chans.get_mut(&id) else {
            return AckOutcome::default();
        };
        match c.state.fd(c.owner, CHAN_EFD2_FD) {
            Some(crate::FdKind::Eventfd(e)) => c.state.efd_write(e, value),
            _ => AckOutcome::default(),
        }
    }

    // ----- What the kernel does on its own time ----------------------

    /// Whether channel `id` may publish a round now.
    pub fn can_publish(&self, id: u32) -> bool {
        self.chans.get(&id).is_some_and(|c| c.state.can_publish())
    }

    /// Channel `id` published a round.
    pub fn publish(&mut self, id: u32) -> Result<(), String> {
        self.chans
            .get_mut(&id)
            .ok_or_else(|| format!("no channel {id}"))?
            .state
            .publish()
    }
}

#[cfg(test)]
mod tests;
