//! Ring channels (ABI 4, [`crate::abi::CREATE_RING`]): the buffer is a
//! ring of `slots` slots; the module fills slot `(r - 1) % slots` with
//! round `r` while the listener reads earlier ones, and the listener acks
//! by advancing `ack_seq` in the control page ("Ring channels and acks
//! through the control page" in `docs/PROTOCOL.md`).
//!
//! A [`Ring`] consumes the rounds in order. [`Ring::next`] spins on
//! `ready_seq` for [`Ring::set_spin`] (the module skips the doorbell
//! meanwhile), then sleeps on efd under the adaptive rule; it lends the
//! round out as a [`Slot`], a zero-copy view of its bytes. Dropping (or
//! [`Slot::release`]) the slot stores its id in `ack_seq`, and writes 7 to
//! efd2 only when the module sleeps waiting for that ack
//! ([`CtrlPage::ack_through_page`]): a listener that keeps up makes no
//! system call per round.
//!
//! ```no_run
//! use std::time::Duration;
//! use kern2usr::{abi, ChannelOptions, Command, Ring};
//!
//! let mut ring = Ring::create(
//!     &ChannelOptions::new().buffer_size(64 << 10).back_to_back(true).ring(8),
//! )?;
//! ring.set_spin(Duration::from_micros(50));
//! ring.command(Command::Mmap)?;
//! ring.command(Command::Start)?;
//! let id = ring.id();
//! for _ in 0..1000 {
//!     let slot = ring.next(Duration::from_secs(2))?.expect("a round within 2 s");
//!     let r = slot.round();
//!     assert!(slot.iter().enumerate().all(|(i, &b)| b == abi::channel_pattern_byte(id, r, i)));
//!     slot.release()?; // or drop it
//! }
//! ring.command(Command::Stop)?;
//! println!("{:?}", ring.stats()?.round_trips);
//! # Ok::<(), kern2usr::Error>(())
//! ```

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::abi::{self, Code};
use crate::channel::{create_error, ChannelKind, Event, Info};
use crate::ctrl::CtrlPage;
use crate::device::{Access, Device, MappedBuffer};
use crate::error::{Error, Result};
use crate::eventfd::EventFd;
use crate::options::{ChannelOptions, ChannelStats, Command};
use crate::session::Session;

/// Polls of `ready_seq` between two looks at the clock while spinning.
const POLLS_PER_CHECK: u32 = 64;
/// Rounds after which pending events are read even while spinning keeps
/// finding rounds (MEMORY_READY records of rounds published while the
/// listener was asleep must not fill the module's event queue).
const DRAIN_EVERY: u32 = 256;

/// A ring channel of this process's own (ABI 4).
///
/// Made with [`Ring::create`] from [`ChannelOptions`] with
/// [`ChannelOptions::ring`]; driven with [`Ring::command`] like a
/// [`crate::Channel`]; its rounds are taken in order with [`Ring::next`].
/// The ring is this process's alone and ends when dropped.
#[derive(Debug)]
pub struct Ring {
    session: Session,
    buffer: MappedBuffer,
    ctrl: CtrlPage,
    id: u32,
    name: Option<String>,
    slots: u32,
    slot_size: usize,
    /// The last round released (the value stored in `ack_seq`).
    consumed: u64,
    spin: Duration,
    events: VecDeque<Event>,
    efd2_writes: u64,
    since_drain: u32,
}

impl Ring {
    /// Make a ring channel: open `options`' device, check its ABI version,
    /// create two non-blocking eventfds, `K2U_IOC_CREATE` with
    /// [`crate::abi::CREATE_RING`] and `ring_slots`, then map the slots
    /// (read-only, `slots * buffer_size` bytes at offset 0) and the
    /// control page.
    ///
    /// Errors: [`Error::InvalidOptions`] (no [`ChannelOptions::ring`], or
    /// a rule the module would refuse), [`Error::ChannelLimit`] (ENOSPC:
    /// the whole ring counts against `max_channel_memory`),
    /// [`Error::AbiMismatch`] (a module before ABI 4), the errors of
    /// opening the device.
    ///
    /// ```no_run
    /// let ring = kern2usr::Ring::create(&kern2usr::ChannelOptions::new().ring(4))?;
    /// assert_eq!(ring.slots(), 4);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn create(options: &ChannelOptions) -> Result<Self> {
        if options.get_ring() == 0 {
            return Err(Error::InvalidOptions(
                "ring: Ring::create needs ChannelOptions::ring(slots)".to_owned(),
            ));
        }
        let mut request = options.request()?;
        let name = (!options.get_name().is_empty()).then(|| options.get_name().to_owned());
        let dev = Device::open(options.get_device())?;
        Info::try_from(dev.info()?)?;
        let efd = EventFd::new_nonblocking()?;
        let efd2 = EventFd::new_nonblocking()?;
        request.efd = efd.as_raw_fd();
        request.efd2 = efd2.as_raw_fd();
        let made = dev
            .create(&request)
            .map_err(|e| create_error(e, &request, ChannelKind::Owned, name.as_deref()))?;
        let info = Info::try_from(dev.info()?)?;
        if info.channel_id != made.id || made.id == 0 {
            return Err(Error::Protocol(format!(
                "K2U_IOC_CREATE made channel {}, K2U_IOC_INFO on its file reports channel {}",
                made.id, info.channel_id
            )));
        }
        let slot_size = usize::try_from(made.buffer_size)
            .map_err(|_| Error::Protocol(format!("slot size {} does not fit", made.buffer_size)))?;
        let slots = request.ring_slots;
        let total = slot_size
            .checked_mul(slots as usize)
            .ok_or_else(|| Error::Protocol(format!("{slots} slots of {slot_size} bytes")))?;
        let buffer = dev.map(total, Access::ReadOnly)?;
        let ctrl = dev.map_ctrl()?;
        if ctrl.ring_slots() != slots {
            return Err(Error::Protocol(format!(
                "the control page says {} ring slots, CREATE asked for {slots}",
                ctrl.ring_slots()
            )));
        }
        let session = Session::from_parts(efd, efd2, dev, info.event_mode);
        Ok(Self::from_parts(
            session, buffer, ctrl, made.id, name, slots, slot_size,
        ))
    }

    fn from_parts(
        session: Session,
        buffer: MappedBuffer,
        ctrl: CtrlPage,
        id: u32,
        name: Option<String>,
        slots: u32,
        slot_size: usize,
    ) -> Self {
        let consumed = ctrl.ack_seq();
        Self {
            session,
            buffer,
            ctrl,
            id,
            name,
            slots,
            slot_size,
            consumed,
            spin: Duration::ZERO,
            events: VecDeque::new(),
            efd2_writes: 0,
            since_drain: 0,
        }
    }

    /// A ring over stand-ins for the module (host tests): `buffer` of
    /// `slots * slot_size` bytes and `ctrl` mappings of ordinary files,
    /// `records` a readable fd standing for the device in queue mode.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_fakes(
        efd: EventFd,
        efd2: EventFd,
        records: std::os::fd::OwnedFd,
        buffer: MappedBuffer,
        ctrl: CtrlPage,
        slots: u32,
        id: u32,
    ) -> Self {
        let slot_size = buffer.len() / slots.max(1) as usize;
        let dev = Device::from_fd(records, "fake".into());
        let session = Session::from_parts(efd, efd2, dev, abi::EventMode::Queue);
        Self::from_parts(session, buffer, ctrl, id, None, slots, slot_size)
    }

    /// The channel's id (1 and up).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The channel's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Bytes per slot (the channel's `buffer_size`).
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// The last round released (what `ack_seq` holds).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The control page (`ready_seq`, `ack_seq`, `kernel_state`,
    /// `ring_full`, the slot table).
    pub fn ctrl(&self) -> &CtrlPage {
        &self.ctrl
    }

    /// The whole mapping of the slots (read-only), for tests that look at
    /// slots they do not hold.
    pub fn buffer(&self) -> &MappedBuffer {
        &self.buffer
    }

    /// How long [`Ring::next`] spins on `ready_seq` before it sleeps on
    /// efd (zero, the default: never spins, so the module rings the
    /// doorbell for every round and `next` reads it).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Times a release wrote 7 to efd2 (the module slept waiting for it).
    pub fn efd2_writes(&self) -> u64 {
        self.efd2_writes
    }

    /// The command events (MMAP, START, STOP, EXIT) read so far, oldest
    /// first; MEMORY_READY doorbells are not kept (they mean "look at
    /// `ready_seq`").
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Wait at most `timeout` for efd and read every event delivered by
    /// then, without consuming rounds; the command events (as
    /// [`Ring::take_events`]).
    pub fn wait_events(&mut self, timeout: Duration) -> Result<Vec<Event>> {
        if let Some(code) = self.session.next_code(timeout)? {
            self.take_code(code)?;
            self.drain()?;
        }
        Ok(self.take_events())
    }

    /// Write 7 to efd2 whatever the page says: "look at `ack_seq`" (a
    /// module asleep on efd2 wakes and takes it; otherwise a no-op).
    pub fn kick(&self) -> Result<()> {
        self.session.wake_for_page_ack()
    }

    /// Run `command` on the ring (`K2U_IOC_CHANNEL_CMD`), as
    /// [`crate::Channel::command`]. Its event is kept for
    /// [`Ring::take_events`].
    pub fn command(&self, command: Command) -> Result<()> {
        self.session
            .device()
            .channel_command(command.code().value())
            .map_err(|e| crate::channel::command_error(e, command, self.id))
    }

    /// The ring's figures (`K2U_IOC_CHANNEL_STATS`; `buffer_size` is the
    /// slot size).
    pub fn stats(&self) -> Result<ChannelStats> {
        ChannelStats::try_from(self.session.device().channel_stats()?)
    }

    /// The device file of the ring (for raw ioctls in tests).
    pub fn device(&self) -> &Device {
        self.session.device()
    }

    /// Whether round `want` is published.
    fn published(&self, want: u64) -> bool {
        self.ctrl.ready_seq() >= want
    }

    /// Take one delivered code: commands are kept, doorbells dropped.
    fn take_code(&mut self, code: u64) -> Result<bool> {
        const READY: u64 = Code::MemoryReady.value() as u64;
        let ev = match code {
            READY => return Ok(false),
            c if c == u64::from(Code::Mmap.value()) => Event::Mmap,
            c if c == u64::from(Code::StartTest.value()) => Event::Start,
            c if c == u64::from(Code::StopTest.value()) => Event::Stop,
            c if c == u64::from(Code::ExitTest.value()) => Event::Exit,
            other => {
                return Err(Error::Protocol(format!(
                    "code {other} is not one the module delivers (2-6)"
                )))
            }
        };
        self.events.push_back(ev);
        // MMAP and START change nothing about the rounds to come: a
        // sleeping `next` keeps waiting through them.
        Ok(matches!(ev, Event::Stop | Event::Exit))
    }

    /// Read every event delivered by now; true if STOP or EXIT came.
    fn drain(&mut self) -> Result<bool> {
        self.since_drain = 0;
        let mut command = false;
        while let Some(code) = self.session.next_code(Duration::ZERO)? {
            command |= self.take_code(code)?;
        }
        Ok(command)
    }

    /// The next round (the one after [`Ring::consumed`]), waiting at most
    /// `timeout`: spin on `ready_seq` for the spin time (listener state
    /// SPINNING), then store ASLEEP, fence, re-check, and sleep on efd.
    /// `Ok(None)` when no round came in time, or when STOP or EXIT came
    /// while it slept (MMAP and START are kept and waited through): see
    /// [`Ring::take_events`].
    ///
    /// The slot's entry in the control page must name the round
    /// ([`Error::Protocol`] otherwise); its length is clamped to the slot.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Slot<'_>>> {
        let want = self.consumed + 1;
        self.since_drain += 1;
        if self.spin.is_zero() || self.since_drain >= DRAIN_EVERY {
            self.drain()?;
        }
        if !self.published(want) && !self.spin.is_zero() {
            // Found, or spun out: the loop below re-checks before sleeping.
            self.spin_for(want);
        }
        let deadline = Instant::now() + timeout;
        while !self.published(want) {
            if self.ctrl.prepare_to_sleep() >= want {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let Some(code) = self.session.next_code(left)? else {
                return Ok(None);
            };
            let mut command = self.take_code(code)?;
            command |= self.drain()?;
            if command && !self.published(want) {
                return Ok(None);
            }
        }
        self.slot(want).map(Some)
    }

    /// Spin until round `want` is published or the spin time is over.
    fn spin_for(&mut self, want: u64) -> bool {
        self.ctrl.set_spinning();
        let start = Instant::now();
        let mut polls: u32 = 0;
        loop {
            if self.published(want) {
                return true;
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(POLLS_PER_CHECK) && start.elapsed() >= self.spin {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    fn slot(&mut self, round: u64) -> Result<Slot<'_>> {
        let index = ((round - 1) % u64::from(self.slots)) as usize;
        let entry = self.ctrl.slot(index).ok_or_else(|| {
            Error::Protocol(format!("slot {index} is past the control page's table"))
        })?;
        if entry.round != round {
            return Err(Error::Protocol(format!(
                "ring slot {index} holds round {}, expected round {round} (ready_seq {})",
                entry.round,
                self.ctrl.ready_seq()
            )));
        }
        let len = usize::try_from(entry.len)
            .unwrap_or(usize::MAX)
            .min(self.slot_size);
        Ok(Slot {
            offset: index * self.slot_size,
            len,
            round,
            ring: self,
            released: false,
        })
    }

    /// Release rounds up to `round` (store `ack_seq`, ring efd2 if the
    /// module sleeps waiting for it).
    fn release_to(&mut self, round: u64) -> Result<()> {
        self.consumed = round;
        if self.ctrl.ack_through_page(round) {
            self.efd2_writes += 1;
            self.session.wake_for_page_ack()?;
        }
        Ok(())
    }
}

impl AsFd for Ring {
    /// The kernel->user eventfd (readable: a doorbell or a command).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.session.efd().as_fd()
    }
}

/// One round of a [`Ring`], lent out by [`Ring::next`]: a zero-copy view
/// of its slot (`Deref<Target = [u8]>`) until released. Dropping it
/// releases it too (errors then are ignored: use [`Slot::release`] to see
/// them).
#[derive(Debug)]
pub struct Slot<'a> {
    ring: &'a mut Ring,
    round: u64,
    offset: usize,
    len: usize,
    released: bool,
}

impl Slot<'_> {
    /// The round's id (its `ready_seq` value).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Index of the slot in the ring.
    pub fn index(&self) -> usize {
        self.offset / self.ring.slot_size.max(1)
    }

    /// The ring's channel id (for the pattern check).
    pub fn channel_id(&self) -> u32 {
        self.ring.id
    }

    /// Done with this round: `ack_seq = round` in the control page, and 7
    /// on efd2 if the module sleeps waiting for it.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        let round = self.round;
        self.ring.release_to(round)
    }
}

impl std::ops::Deref for Slot<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: until this slot is released (ack_seq reaches its round)
        // the module does not refill it: it publishes round r only while
        // r - ack <= slots, and this round's slot is next refilled by round
        // `round + slots`. The mapping is read-only here and outlives the
        // returned slice, which borrows `self` (which borrows the ring).
        let all = unsafe { self.ring.buffer.stable_slice() };
        let end = (self.offset + self.len).min(all.len());
        &all[self.offset.min(end)..end]
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.released {
            let round = self.round;
            let _ = self.ring.release_to(round);
        }
    }
}

/// Whether `data` is channel `id`'s round `round`, byte by byte: the first
/// mismatch as (index, got, expected).
pub fn first_ring_mismatch(id: u32, round: u64, data: &[u8]) -> Option<(usize, u8, u8)> {
    data.iter()
        .enumerate()
        .map(|(i, &b)| (i, b, abi::channel_pattern_byte(id, round, i)))
        .find(|&(_, got, want)| got != want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::FileExt;

    struct Fake {
        ctrl: CtrlPage,
        data: std::fs::File,
        efd: EventFd,
        efd2: EventFd,
        _ctrl_file: std::fs::File,
        _w: std::io::PipeWriter,
    }

    const SLOTS: u32 = 4;
    const SIZE: usize = 4096;

    fn ring() -> anyhow::Result<(Ring, Fake)> {
        let data = tempfile::tempfile()?;
        data.set_len((SLOTS as usize * SIZE) as u64)?;
        let ctrl_file = tempfile::tempfile()?;
        ctrl_file.set_len(4096)?;
        let map = |f: &std::fs::File, len, access| MappedBuffer::map_fd(f.as_fd(), len, 0, access);
        let efd = EventFd::new_nonblocking()?;
        let efd2 = EventFd::new_nonblocking()?;
        let kefd = EventFd::from(efd.as_fd().try_clone_to_owned()?);
        let kefd2 = EventFd::from(efd2.as_fd().try_clone_to_owned()?);
        let (r, w) = std::io::pipe()?;
        let r = OwnedFd::from(r);
        rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::NONBLOCK)?;
        let ring = Ring::from_fakes(
            efd,
            efd2,
            r,
            map(&data, SLOTS as usize * SIZE, Access::ReadOnly)?,
            CtrlPage::from_mapping(map(&ctrl_file, 4096, Access::ReadWrite)?)?,
            SLOTS,
            3,
        );
        let fake = Fake {
            ctrl: CtrlPage::from_mapping(map(&ctrl_file, 4096, Access::ReadWrite)?)?,
            data,
            efd: kefd,
            efd2: kefd2,
            _ctrl_file: ctrl_file,
            _w: w,
        };
        Ok((ring, fake))
    }

    impl Fake {
        fn publish(&self, round: u64) -> anyhow::Result<()> {
            let index = (round - 1) % u64::from(SLOTS);
            let fill: Vec<u8> = (0..SIZE)
                .map(|i| abi::channel_pattern_byte(3, round, i))
                .collect();
            self.data.write_all_at(&fill, index * SIZE as u64)?;
            self.ctrl.publish_slot_as_kernel(SLOTS, round, SIZE as u64);
            Ok(())
        }
    }

    #[test]
    fn slots_come_in_order_with_their_bytes_and_acks_go_through_the_page() -> anyhow::Result<()> {
        let (mut ring, k) = ring()?;
        ring.set_spin(Duration::from_millis(1));
        for r in 1..=SLOTS as u64 {
            k.publish(r)?;
        }
        k.ctrl
            .set_kernel_state_as_kernel(crate::abi::KERNEL_POLLING);
        for r in 1..=SLOTS as u64 {
            let slot = ring
                .next(Duration::from_secs(1))?
                .ok_or_else(|| anyhow::anyhow!("round {r} not found"))?;
            assert_eq!(
                (slot.round(), slot.index(), slot.len()),
                (r, (r - 1) as usize, SIZE)
            );
            assert_eq!(first_ring_mismatch(3, r, &slot), None);
            assert!(first_ring_mismatch(3, r + 1, &slot).is_some());
            slot.release()?;
            assert_eq!(k.ctrl.ack_seq(), r);
        }
        assert_eq!(ring.efd2_writes(), 0, "the module polls: no efd2 write");
        assert!(k.efd2.read().is_err());
        // Nothing more published: None after the timeout.
        assert!(ring.next(Duration::from_millis(20))?.is_none());
        // The module sleeps until half the ring is free: a release below
        // wake_seq writes nothing, the one reaching it writes 7.
        for r in 5..=8 {
            k.publish(r)?;
        }
        assert_eq!(k.ctrl.sleep_as_kernel(6), 4);
        drop(ring.next(Duration::ZERO)?);
        assert_eq!((ring.consumed(), ring.efd2_writes()), (5, 0));
        drop(ring.next(Duration::ZERO)?);
        assert_eq!((ring.consumed(), ring.efd2_writes()), (6, 1));
        assert_eq!(k.efd2.read()?, 7);
        Ok(())
    }

    #[test]
    fn a_slot_holding_another_round_is_a_protocol_error() -> anyhow::Result<()> {
        let (mut ring, k) = ring()?;
        k.publish(1)?;
        // Round 2 published without its slot entry (it still names 0).
        k.ctrl.publish_as_kernel(2);
        drop(ring.next(Duration::ZERO)?);
        let e = ring.next(Duration::ZERO).err();
        assert!(
            matches!(e, Some(Error::Protocol(ref m)) if m.contains("expected round 2")),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn sleeping_listener_wakes_on_the_doorbell_and_keeps_commands() -> anyhow::Result<()> {
        let (mut ring, k) = ring()?;
        ring.set_spin(Duration::from_micros(100));
        // Nothing published and no doorbell: None, and the listener
        // is left asleep (the module would ring).
        assert!(ring.next(Duration::from_millis(10))?.is_none());
        assert_eq!(k.ctrl.listener_state(), crate::abi::LISTENER_ASLEEP);
        assert!(k.ctrl.publish_slot_as_kernel(SLOTS, 1, 10), "asleep: rung");
        // The fake has no records: a doorbell with no record reads as no
        // code, so the re-check finds the round.
        k.efd.write(1)?;
        let slot = ring
            .next(Duration::from_secs(1))?
            .ok_or_else(|| anyhow::anyhow!("round 1 not found"))?;
        assert_eq!((slot.round(), slot.len()), (1, 10));
        drop(slot);
        assert_eq!(ring.take_events(), Vec::<Event>::new());
        Ok(())
    }
}
