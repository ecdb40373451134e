// SPDX-License-Identifier: GPL-2.0-only

//! The device state (C's `struct k2u`), shared by the parameters, the file
//! operations, the work items and the callbacks, and how they find it.

use core::ops::{Deref, DerefMut};

use kernel::{
    fmt::{self, Write},
    new_work,
    prelude::*,
    str::{BStr, Formatter},
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        new_condvar, new_mutex, new_spinlock, new_spinlock_irq, Arc, CondVar, CondVarTimeoutResult,
        Mutex, MutexGuard, SpinLock, SpinLockIrq,
    },
    time::hrtimer::HrTimer,
    time::{Delta, Instant, Jiffies, Monotonic},
    workqueue::{impl_has_work, Work},
};

use crate::abi::{self, Code, Event};
use crate::link::Link;
use crate::memory::Memory;
use crate::params;
use crate::producer::AttachRule;
use crate::round::Round;
use crate::stats::Stats;
use crate::sys::{OwnedQueue, PidRef};

/// Ids of the four work items of a [`Channel`].
pub(crate) const ROUND_WORK: u64 = 1;
pub(crate) const ACK_WORK: u64 = 2;
pub(crate) const HUP_WORK: u64 = 3;
/// Polls a round's ack (`ack_poll_us`, `ring.rs`).
pub(crate) const POLL_WORK: u64 = 4;

/// Events the ring holds (`EVENT_QUEUE_LEN`).
pub(crate) const QUEUE_LEN: usize = abi::EVENT_QUEUE_LEN as usize;

/// Bytes of `last_error`, with C's terminating NUL.
const LAST_ERROR_LEN: usize = 160;

/// The rounds as the acks see them (C's `ack_lock` part): taken by the
/// efd2 callback, under the eventfd's wait-queue lock, and by the ack
/// ioctls; the work items count what they left under the mutex.
pub(crate) struct AckState {
    /// A round is published and neither closed nor abandoned.
    pub(crate) open: bool,
    /// Its MEMORY_READY reached the listener (record read, or adaptive
    /// mode): 7 and `K2U_IOC_ACK` may close it.
    shown: bool,
    /// An ack closed it and the work has not counted it yet. No round is
    /// opened while this is set, so one close never overwrites another.
    pub(crate) closed: bool,
    /// Published and not acked: the listener may hold a view of the
    /// buffer, so nothing fills it. Outlives STOP's abandon (and START);
    /// ended by the round's ack or the listener's detach.
    pub(crate) lent: bool,
    /// An ack ended an abandoned round's lend; the work has not looked.
    returned: bool,
    /// The round's id: the `ready_seq` it published.
    id: u64,
    /// When it was opened and published: the round trip starts here.
    start: Option<Instant<Monotonic>>,
    /// Round trip (ns) of the closed round.
    took: u64,
    /// Acks that closed nothing since the work last looked.
    pub(crate) late: u64,
    /// The last efd2 value that was not a multiple of 7, if any.
    pub(crate) bad: u64,
    /// The last round whose close was counted (C's `acked_id`); kept by
    /// [`Self::reset`], for `k2u_producer_wait_ack()`.
    acked: u64,
    /// The last round published (`ready_seq`), as the acks see it; kept
    /// by [`Self::reset`].
    published: u64,
    /// The last `Ctrl::ack_seq` value taken (a ring's consumer index);
    /// `published` at the attach.
    pub(crate) taken: u64,
    /// `ack_seq` changed since the attach: from now until the detach, a
    /// multiple of 7 on efd2 is a doorbell ("look at `ack_seq`") only.
    page_acks: bool,
    /// An `ack_seq` value ignored since the work last looked: the value,
    /// then `taken` and `published` at the time.
    pub(crate) stray: Option<(u64, u64, u64)>,
    /// The last value ignored since a value was taken: said once.
    stray_last: Option<u64>,
    /// A ring's part (`slots` 0: not a ring).
    pub(crate) ring: RingAcks,
}

/// A ring channel's acks (under the ack lock): round `r` is in slot `(r -
/// 1) % slots`; rounds `taken + 1 ..= published` are outstanding.
pub(crate) struct RingAcks {
    /// Its number of slots, fixed at creation (0: not a ring).
    pub(crate) slots: u32,
    /// Rounds up to this one were published before the last START or
    /// STOP: their acks free their slots and count nothing.
    test_base: u64,
    /// When the round in each slot was published.
    stamps: [Option<Instant<Monotonic>>; RING_SLOTS],
    /// Round trips (ns) of rounds acked and not yet counted by the work, in
    /// order. At most `slots + 1`: a fill counts them first, under the
    /// mutex, but efd2's wake-up may take more acks between that count and
    /// the fill's room check, and the round then published may be acked
    /// too before the next count.
    times: [u64; RING_SLOTS + 1],
    ntimes: usize,
}

/// Entries of [`RingAcks`]' tables.
const RING_SLOTS: usize = abi::RING_MAX_SLOTS as usize;

impl RingAcks {
    const fn new(slots: u32) -> Self {
        Self {
            slots,
            test_base: 0,
            stamps: [None; RING_SLOTS],
            times: [0; RING_SLOTS + 1],
            ntimes: 0,
        }
    }

    /// The slot of round `r` (1 and up).
    pub(crate) fn slot_of(&self, r: u64) -> usize {
        (r.wrapping_sub(1) % u64::from(self.slots.max(1))) as usize
    }

    /// Rounds `from + 1 ..= to` were acked now: those of the current test
    /// get their round trip.
    fn take(&mut self, from: u64, to: u64) {
        let now = Instant::<Monotonic>::now();
        for r in from.saturating_add(1)..=to {
            if r <= self.test_base {
                continue;
            }
            let slot = self.slot_of(r);
            let took = self
                .stamps
                .get(slot)
                .copied()
                .flatten()
                .map_or(0, |start| (now - start).as_nanos());
            if let Some(t) = self.times.get_mut(self.ntimes) {
                *t = u64::try_from(took).unwrap_or(0);
                self.ntimes += 1;
            }
        }
    }

    /// Calls `f` with each round trip taken since the last call, in order.
    pub(crate) fn drain_times(&mut self, mut f: impl FnMut(u64)) {
        for &t in self.times.iter().take(self.ntimes) {
            f(t);
        }
        self.ntimes = 0;
    }
}

impl AckState {
    /// `slots`: a ring's number of slots, 0 for other channels.
    const fn new(slots: u32) -> Self {
        Self {
            open: false,
            shown: false,
            closed: false,
            lent: false,
            returned: false,
            id: 0,
            start: None,
            took: 0,
            late: 0,
            bad: 0,
            acked: 0,
            published: 0,
            taken: 0,
            page_acks: false,
            stray: None,
            stray_last: None,
            ring: RingAcks::new(slots),
        }
    }

    /// Forgets the round, its lend included (the listener left): a ring's
    /// outstanding rounds are all returned (`taken` is `published`), the
    /// page acks start afresh. Which round was acked last stays known.
    pub(crate) fn reset(&mut self) {
        let acked = self.acked;
        let published = self.published;
        let slots = self.ring.slots;
        *self = Self::new(slots);
        self.acked = acked;
        self.published = published;
        self.taken = published;
        self.ring.test_base = published;
    }

    /// A new test (C's `k2u_round_start()`): a round the last STOP
    /// abandoned keeps the buffer lent (its id and whether it was shown
    /// stay), so the first round waits for its ack. A ring's rounds
    /// published so far count nothing when acked.
    pub(crate) fn new_test(&mut self) {
        self.open = false;
        self.closed = false;
        self.late = 0;
        self.bad = 0;
        self.end_test();
    }

    /// The test ended (STOP) or begins (START): a ring's rounds published
    /// so far count nothing when acked.
    pub(crate) fn end_test(&mut self) {
        self.ring.test_base = self.published;
        self.ring.ntimes = 0;
    }

    /// The id of the round outstanding (or last opened).
    pub(crate) fn round_id(&self) -> u64 {
        self.id
    }

    /// The last round published (`ready_seq`).
    pub(crate) fn published(&self) -> u64 {
        self.published
    }

    /// A ring has room for one more round: fewer than `slots` outstanding.
    pub(crate) fn ring_room(&self) -> bool {
        self.published.wrapping_sub(self.taken) < u64::from(self.ring.slots)
    }

    /// Publishes ring round `id` (the caller stores it to the control
    /// page in the same ack-lock section): its time starts now.
    pub(crate) fn ring_publish(&mut self, id: u64) {
        let slot = self.ring.slot_of(id);
        if let Some(stamp) = self.ring.stamps.get_mut(slot) {
            *stamp = Some(Instant::now());
        }
        self.published = id;
    }

    /// `Ctrl::ack_seq` reads `v` (under this lock, so lookers take values
    /// in order): takes it if it moved since the last value taken
    /// (PROTOCOL.md, acks through the control page). A value in `taken +
    /// 1 ..= published` is taken, and the first one since the attach turns
    /// page acks on: on a ring it acks every round up to it; else it
    /// closes the open round if it is its id (as `K2U_IOC_ACK_ROUND`), or
    /// ends the lend of the round STOP abandoned if it is that one's, or
    /// (an older round's) changes nothing more. Any other value is
    /// ignored, and noted in `stray` for the log once (until another
    /// value is taken or ignored). Returns whether it took a value.
    pub(crate) fn look(&mut self, v: u64) -> bool {
        if v == self.taken {
            return false;
        }
        if v < self.taken || v > self.published {
            if self.stray_last != Some(v) {
                self.stray = Some((v, self.taken, self.published));
                self.stray_last = Some(v);
            }
            return false;
        }
        self.page_acks = true;
        self.stray_last = None;
        let from = core::mem::replace(&mut self.taken, v);
        if self.ring.slots != 0 {
            self.ring.take(from, v);
        } else if self.id == v {
            if self.open {
                let _ = self.close(Some(v as u32));
            } else if self.lent {
                self.lent = false;
                self.returned = true;
            }
        }
        true
    }

    /// A round is due but the buffer is lent for a round STOP abandoned:
    /// its id.
    pub(crate) fn held_for(&self) -> Option<u64> {
        (self.lent && !self.open).then_some(self.id)
    }

    /// An ack ended an abandoned round's lend since the last look.
    pub(crate) fn take_returned(&mut self) -> bool {
        core::mem::replace(&mut self.returned, false)
    }

    /// Opens round `id`, shown already or not; the time starts now.
    pub(crate) fn open(&mut self, id: u64, shown: bool) {
        self.published = id;
        self.open = true;
        self.lent = true;
        self.returned = false;
        self.shown = shown;
        self.id = id;
        self.start = Some(Instant::now());
    }

    /// The MEMORY_READY record of round `round` (low 32 bits) was read.
    /// A round STOP abandoned is still lent: its record may be read later.
    pub(crate) fn shown(&mut self, round: u32) {
        if (self.open || self.lent) && self.id as u32 == round {
            self.shown = true;
        }
    }

    /// The closed round's time, once (`None` if none is closed).
    pub(crate) fn take_closed(&mut self) -> Option<u64> {
        let closed = core::mem::replace(&mut self.closed, false);
        if closed {
            self.acked = self.id;
        }
        closed.then_some(self.took)
    }

    /// What `k2u_producer_wait_ack()` returns for round `round`, `last`
    /// being the last round published: `None` while it is outstanding;
    /// `Ok` once acked (before now too); ESTALE if it is not the last
    /// round; ENOTCONN if it was abandoned (the listener left, or the
    /// producer destroyed the channel). C's `k2u_producer_settled()`.
    pub(crate) fn settled(&self, round: u64, last: u64) -> Option<Result> {
        if round == 0 || round != last {
            Some(Err(ESTALE))
        } else if self.acked == round || (self.id == round && self.closed) {
            Some(Ok(()))
        } else if self.id == round && self.open {
            None
        } else {
            Some(Err(ENOTCONN))
        }
    }

    /// Closes the outstanding round now: a plain ack (`round` `None`, 7 on
    /// efd2 or `K2U_IOC_ACK`) needs it shown, an ack by id the id. EPROTO:
    /// no round outstanding; ESTALE: not this ack's round. An ack that
    /// would close a round STOP abandoned ends its lend instead, and is
    /// refused (EPROTO) as any ack with no round outstanding.
    pub(crate) fn close(&mut self, round: Option<u32>) -> Result {
        let mine = match round {
            Some(id) => self.id as u32 == id,
            None => self.shown,
        };
        if !self.open {
            if self.lent && mine {
                self.lent = false;
                self.returned = true;
            }
            return Err(EPROTO);
        }
        if !mine {
            return Err(ESTALE);
        }
        let took = self
            .start
            .map_or(0, |start| (Instant::<Monotonic>::now() - start).as_nanos());
        self.took = u64::try_from(took).unwrap_or(0);
        self.open = false;
        self.lent = false;
        self.closed = true;
        Ok(())
    }

    /// `value` was read from efd2: a multiple of 7 is that many acks, the
    /// first closes the outstanding round if it was shown, the others are
    /// late; any other value is noted whole.
    pub(crate) fn efd2_value(&mut self, value: u64) {
        let ack = u64::from(Code::MemoryCopied.value());
        if value % ack != 0 {
            self.bad = value;
            return;
        }
        // With page acks (and always on a ring) 7 is the doorbell that
        // made the caller look at `ack_seq`: it closes nothing itself.
        if self.page_acks || self.ring.slots != 0 {
            return;
        }
        let mut acks = value / ack;
        if self.close(None).is_ok() {
            acks -= 1;
        }
        self.late = self.late.wrapping_add(acks);
    }
}

/// What a channel is, fixed when it is made.
pub(crate) struct Config {
    /// 0: the default channel, driven by the parameters.
    pub(crate) id: u32,
    /// NUL-padded, valid characters only (checked at CREATE).
    name: [u8; abi::CHANNEL_NAME_LEN],
    /// Round period of a created channel (the default channel's is
    /// `period_ms`).
    period_ms: u32,
    /// `CREATE_*` bits of a created channel.
    flags: u32,
    /// The creator's thread group; `None` for the default channel and a
    /// producer's (whose owner is its listener: [`ProducerSide::owner`]).
    pub(crate) owner: Option<PidRef>,
    /// A kernel producer's channel (`k2u_producer_create()`): fed by the
    /// producer, not by rounds, and takes no commands.
    pub(crate) producer: bool,
    /// A producer's channel: who may attach (`struct k2u_producer_opts`).
    pub(crate) attach: AttachRule,
    /// A ring channel's number of slots (`CREATE_RING`); 0 otherwise.
    pub(crate) ring_slots: u32,
}

impl Config {
    /// The default channel's.
    pub(crate) fn default_channel() -> Self {
        Self {
            id: 0,
            name: [0; abi::CHANNEL_NAME_LEN],
            period_ms: 0,
            flags: 0,
            owner: None,
            producer: false,
            attach: AttachRule::ADMIN,
            ring_slots: 0,
        }
    }

    /// The name, NUL-padded.
    pub(crate) fn raw_name(&self) -> &[u8; abi::CHANNEL_NAME_LEN] {
        &self.name
    }

    /// A kernel producer's; `name` and `attach` are checked already.
    pub(crate) fn producer(id: u32, name: [u8; abi::CHANNEL_NAME_LEN], attach: AttachRule) -> Self {
        Self {
            id,
            name,
            period_ms: 0,
            flags: 0,
            owner: None,
            producer: true,
            attach,
            ring_slots: 0,
        }
    }

    /// A created channel's; `name` and `ring_slots` (0 unless
    /// `CREATE_RING`) are checked already.
    pub(crate) fn created(
        id: u32,
        name: [u8; abi::CHANNEL_NAME_LEN],
        period_ms: u32,
        flags: u32,
        owner: PidRef,
        ring_slots: u32,
    ) -> Self {
        Self {
            id,
            name,
            period_ms,
            flags,
            owner: Some(owner),
            producer: false,
            attach: AttachRule::ADMIN,
            ring_slots,
        }
    }
}

/// Which open file of the device holds a channel: the address of its
/// `K2uFile`, never 0, unique while that file is open (and a file that
/// holds a channel stays open until its release drops it).
pub(crate) type FileToken = usize;

/// A kernel producer's side of its channel (unused on other channels).
/// `destroyed` and `files` change under `Device::registry` only, which
/// decides with them who ends the channel: the last of the producer
/// (`k2u_producer_destroy()`) and the files attached to it (their
/// release): the listener's, and any an exited listener left behind.
#[pin_data]
pub(crate) struct ProducerSide {
    /// The producer destroyed the channel: it is no longer listed nor
    /// found by name.
    pub(crate) destroyed: Atomic<bool>,
    /// Files that hold the channel: the listener's (one at a time) and
    /// those exited listeners left behind in their children.
    pub(crate) files: Atomic<u32>,
    /// The listener's file (its [`FileToken`]), 0 when none; changed
    /// under `Channel::inner` (C's `listener_filp`).
    pub(crate) listener_file: Atomic<usize>,
    /// The listener's pid as it attached, for the log; under
    /// `Channel::inner`.
    pub(crate) listener_nr: Atomic<i32>,
    /// The attached listener's process, the channel's owner while its
    /// file is attached (C's `owner` of a producer's channel). Written
    /// under `Channel::inner` and this spinlock; the listing and the
    /// ownership checks take only the spinlock.
    #[pin]
    pub(crate) owner: SpinLock<Option<PidRef>>,
    /// `k2u_producer_wait_ack()` sleeps here, `Channel::inner` released
    /// meanwhile; notified when a round is counted or abandoned.
    #[pin]
    pub(crate) ack_wait: CondVar,
}

impl ProducerSide {
    fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            destroyed: Atomic::new(false),
            files: Atomic::new(0),
            listener_file: Atomic::new(0),
            listener_nr: Atomic::new(0),
            owner <- new_spinlock!(None),
            ack_wait <- new_condvar!(),
        })
    }
}

/// A channel (C's `struct k2u_channel`): the default one, made at load and
/// freed at unload, or one a file made with `K2U_IOC_CREATE`, freed after
/// that file's release. Shared by the file, the parameters, the work items
/// and the callbacks: it goes when the last reference does.
#[pin_data]
pub(crate) struct Channel {
    /// Its id, name, pacing and owner.
    pub(crate) cfg: Config,
    /// The state that changes, under one mutex (C's `k2u.lock`).
    #[pin]
    pub(crate) inner: Mutex<Inner>,
    /// Readers of event records wait here (C's `readq`).
    #[pin]
    pub(crate) readq: CondVar,
    /// The outstanding round and the acks (C's `ack_lock`): taken by the
    /// efd2 callback and the ack ioctls, counted by the work items.
    #[pin]
    pub(crate) ack: SpinLockIrq<AckState>,
    /// The listener's thread group, as `inner`'s link has it, for the
    /// checks that cannot take the mutex (mmap runs under the mm lock,
    /// which `K2U_IOC_READ_BUFFER` takes under the mutex).
    #[pin]
    pub(crate) listener: SpinLock<Option<PidRef>>,
    /// The listener closed efd or efd2 (C's `K2U_EV_HUP`).
    pub(crate) hup: Atomic<bool>,
    /// The data buffer and the control page; fixed at creation.
    pub(crate) mem: Memory,
    /// The round-trip statistics (a handle on the figures `inner`'s round
    /// adds to): readers take their spinlock, never `inner`.
    pub(crate) stats: Stats,
    /// Rate limit of the `mmap refused` lines (mmap cannot take `inner`).
    #[pin]
    pub(crate) mmap_log: SpinLock<RateLimit>,
    /// The channel's workqueue; `ROUND_WORK`, `ACK_WORK`, `HUP_WORK` run on
    /// it. Its own, so that draining it at the end waits for this
    /// channel's work only.
    pub(crate) wq: OwnedQueue,
    /// `POLL_WORK`'s queue: unbound, so that the poll spins on a CPU the
    /// scheduler finds free, not on the listener's (which queued the ack
    /// work that published the round), where it would keep the listener
    /// from acking until the poll times out. It queues only `ACK_WORK`.
    pub(crate) poll_wq: OwnedQueue,
    #[pin]
    pub(crate) round_work: Work<Channel, ROUND_WORK>,
    #[pin]
    pub(crate) ack_work: Work<Channel, ACK_WORK>,
    #[pin]
    pub(crate) hup_work: Work<Channel, HUP_WORK>,
    #[pin]
    pub(crate) poll_work: Work<Channel, POLL_WORK>,
    /// The round timer (unused with `back_to_back`).
    #[pin]
    pub(crate) timer: HrTimer<Channel>,
    /// A kernel producer's part.
    #[pin]
    pub(crate) prod: ProducerSide,
}

impl_has_work! {
    impl HasWork<Self, ROUND_WORK> for Channel { self.round_work }
    impl HasWork<Self, ACK_WORK> for Channel { self.ack_work }
    impl HasWork<Self, HUP_WORK> for Channel { self.hup_work }
    impl HasWork<Self, POLL_WORK> for Channel { self.poll_work }
}

/// The state under [`Channel::inner`].
pub(crate) struct Inner {
    /// The module is going away, or (a created channel) its file is.
    pub(crate) dead: bool,
    /// The attached listener: its two hooked eventfds.
    pub(crate) link: Option<Link>,
    pub(crate) mmap_sent: bool,
    pub(crate) exit_sent: bool,
    pub(crate) testing: bool,
    /// Sequence number of the next event (1 after FIND).
    pub(crate) next_seq: u64,
    /// Rounds published since load: the last round's id, the control
    /// page's `ready_seq` (kept here: the page is writable by userspace).
    pub(crate) rounds: u64,
    /// Events not yet read by the listener: `ring_count` from `ring_head`.
    pub(crate) ring: KVVec<Event>,
    pub(crate) ring_head: usize,
    pub(crate) ring_count: usize,
    /// One more each time the ring is emptied whole (a detach): a reader
    /// that copied records out without the mutex takes them off only if
    /// the ring is still the one it copied them from.
    pub(crate) ring_epoch: u64,
    /// A `read()` is copying records out (without the mutex); other
    /// readers wait for it (or, non-blocking, get EAGAIN).
    pub(crate) reading: bool,
    /// The current test.
    pub(crate) round: Round,
    /// Why the last refused command was refused.
    pub(crate) last_error: ErrorText,
}

impl Channel {
    /// The default channel, as C's `k2u_init()` makes it before the device.
    pub(crate) fn new_default() -> Result<Arc<Self>> {
        let size = params::buffer_size();
        let max = abi::MAX_BUFFER_SIZE as usize;
        if size == 0 || size > max || size % kernel::page::PAGE_SIZE != 0 {
            pr_err!(
                "buffer_size={}: must be a multiple of {} up to {}\n",
                size,
                kernel::page::PAGE_SIZE,
                max
            );
            return Err(EINVAL);
        }
        Self::new(Config::default_channel(), size)
    }

    /// A channel of `size` bytes (checked by the caller; a ring's: all
    /// its slots). A created channel's memory (buffer, control page,
    /// queue, state) is charged to the caller's memory cgroup.
    pub(crate) fn new(cfg: Config, size: usize) -> Result<Arc<Self>> {
        let gfp = if cfg.id == 0 {
            GFP_KERNEL
        } else {
            GFP_KERNEL_ACCOUNT
        };
        let slots = cfg.ring_slots;
        let mem = Memory::new(size, cfg.id, cfg.producer)?;
        mem.ctrl.set_ring_slots(slots);
        let ring = KVVec::from_elem(Event::default(), QUEUE_LEN, gfp)?;
        let round = Round::new(gfp)?;
        let stats = round.stats.clone();
        let wq = OwnedQueue::new(c"kern2usr")?;
        let poll_wq = OwnedQueue::new_unbound(c"kern2usr_poll")?;
        Arc::pin_init(
            try_pin_init!(Self {
                cfg,
                inner <- new_mutex!(Inner {
                    dead: false,
                    link: None,
                    mmap_sent: false,
                    exit_sent: false,
                    testing: false,
                    next_seq: 1,
                    rounds: 0,
                    ring,
                    ring_head: 0,
                    ring_count: 0,
                    ring_epoch: 0,
                    reading: false,
                    round,
                    last_error: ErrorText::new(),
                }),
                readq <- new_condvar!(),
                ack <- new_spinlock_irq!(AckState::new(slots)),
                listener <- new_spinlock!(None),
                hup: Atomic::new(false),
                mem,
                stats,
                mmap_log <- new_spinlock!(RateLimit::new("k2u_mmap", 5000, 10)),
                wq,
                poll_wq,
                round_work <- new_work!("kern2usr::round_work"),
                ack_work <- new_work!("kern2usr::ack_work"),
                hup_work <- new_work!("kern2usr::hup_work"),
                poll_work <- new_work!("kern2usr::poll_work"),
                timer <- HrTimer::new(),
                prod <- ProducerSide::new(),
            }),
            gfp,
        )
    }

    pub(crate) fn id(&self) -> u32 {
        self.cfg.id
    }

    /// Whether this is the default channel (id 0).
    pub(crate) fn is_default(&self) -> bool {
        self.cfg.id == 0
    }

    /// Its name, `-` when empty (as the listing and the log show it).
    pub(crate) fn name(&self) -> &BStr {
        let len = self
            .cfg
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.cfg.name.len());
        match self.cfg.name.get(..len) {
            Some(name) if !name.is_empty() => BStr::from_bytes(name),
            _ => BStr::from_bytes(b"-"),
        }
    }

    /// Round period in ms.
    pub(crate) fn period_ms(&self) -> u32 {
        if self.is_default() {
            params::period_ms()
        } else {
            self.cfg.period_ms
        }
    }

    /// Round period.
    pub(crate) fn period(&self) -> Delta {
        Delta::from_millis(i64::from(self.period_ms()))
    }

    /// The next round starts at the ack (no timer).
    pub(crate) fn back_to_back(&self) -> bool {
        if self.is_default() {
            params::back_to_back()
        } else {
            self.cfg.flags & abi::CREATE_BACK_TO_BACK != 0
        }
    }

    /// No doorbell while the listener spins (a ring implies it).
    pub(crate) fn adaptive(&self) -> bool {
        if self.is_ring() {
            true
        } else if self.is_default() {
            params::adaptive()
        } else {
            self.cfg.flags & abi::CREATE_ADAPTIVE != 0
        }
    }

    /// A ring's number of slots; 0: not a ring.
    pub(crate) fn ring_slots(&self) -> u32 {
        self.cfg.ring_slots
    }

    /// Whether it is a ring channel (`CREATE_RING`).
    pub(crate) fn is_ring(&self) -> bool {
        self.cfg.ring_slots != 0
    }

    /// The buffer size userspace is told (`Info`, `ChannelStats`, the
    /// listing, CREATE's answer): a ring's slot size.
    pub(crate) fn buffer_size(&self) -> usize {
        self.mem.size() / self.cfg.ring_slots.max(1) as usize
    }

    /// Whether a kernel producer feeds it.
    pub(crate) fn is_producer(&self) -> bool {
        self.cfg.producer
    }

    /// Whether the listing shows it: all but a producer's channel its
    /// producer destroyed (its listener's file still holds it).
    pub(crate) fn listed(&self) -> bool {
        !(self.cfg.producer && self.prod.destroyed.load(Relaxed))
    }

    /// Whether process `me` owns this created channel: its creator, or a
    /// producer's channel's attached listener.
    pub(crate) fn owned_by(&self, me: &PidRef) -> bool {
        if self.cfg.producer {
            self.prod.owner.lock().as_ref().is_some_and(|o| o.same(me))
        } else {
            self.cfg.owner.as_ref().is_some_and(|o| o.same(me))
        }
    }

    /// The owner's pid as the listing shows it: a created channel's
    /// creator, a producer's channel's listener, the default channel's
    /// listener; 0 when there is none or the reader's namespace cannot see
    /// it.
    pub(crate) fn owner_nr(&self) -> i32 {
        let owner = if self.cfg.producer {
            &self.prod.owner
        } else if let Some(owner) = &self.cfg.owner {
            return owner.vnr();
        } else {
            &self.listener
        };
        owner.lock().as_ref().map_or(0, |o| o.vnr())
    }

    /// The pacing as the listing names it.
    pub(crate) fn pacing(&self) -> &'static str {
        if self.cfg.producer {
            return "producer";
        }
        if self.is_ring() {
            return if self.back_to_back() {
                "b2b+ring"
            } else {
                "timer+ring"
            };
        }
        match (self.back_to_back(), self.adaptive()) {
            (false, false) => "timer",
            (false, true) => "timer+adaptive",
            (true, false) => "b2b",
            (true, true) => "b2b+adaptive",
        }
    }

    /// Prefix of this channel's log lines: none for the default channel
    /// (its lines are the seed's), `channel <id>: ` for the others.
    pub(crate) fn tag(&self) -> Tag {
        Tag(self.cfg.id)
    }

    /// Whether the current process is the listener.
    pub(crate) fn is_listener(&self, me: &PidRef) -> bool {
        self.listener.lock().as_ref().is_some_and(|l| l.same(me))
    }

    /// Stops the channel for good (module exit for the default channel,
    /// the file's release for the others; C's `k2u_channel_stop()`): mark
    /// dead, detach (stops the timer, unhooks the eventfds), wake readers,
    /// and wait for the work items; none can be queued after this. Calling
    /// it again does nothing more.
    pub(crate) fn shutdown(self: &Arc<Self>) {
        {
            let mut k = Locked::new(self);
            k.dead = true;
            k.detach();
        }
        self.readq.notify_all();
        // The poll work first: it may queue the ack work. Detached, no
        // work queues the poll work any more (only a publish does).
        self.poll_wq.drain();
        self.wq.drain();
    }
}

/// See [`Channel::tag`].
pub(crate) struct Tag(u32);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            Ok(())
        } else {
            f.write_fmt(fmt!("channel {}: ", self.0))
        }
    }
}

/// The channels made with `K2U_IOC_CREATE` (the default one is not here).
pub(crate) struct Registry {
    /// In id order: userspace's channels and producers'.
    pub(crate) channels: KVec<Arc<Channel>>,
    /// Userspace's channels among them (`max_channels`).
    pub(crate) users: u32,
    /// Sum of their buffer sizes (`max_channel_memory`).
    pub(crate) memory: u64,
    /// Producers' channels among them (`MAX_PRODUCERS`): they count
    /// apart, so userspace's channels cannot take their places.
    pub(crate) producers: u32,
}

impl Registry {
    /// The smallest id not in use (1 and up).
    pub(crate) fn free_id(&self) -> u32 {
        let mut id = 1;
        for c in self.channels.iter() {
            if c.id() != id {
                break;
            }
            id += 1;
        }
        id
    }

    /// Adds `chan`, keeping the id order.
    pub(crate) fn insert(&mut self, chan: Arc<Channel>) -> Result {
        let at = self
            .channels
            .iter()
            .position(|c| c.id() > chan.id())
            .unwrap_or(self.channels.len());
        let size = chan.mem.size() as u64;
        let producer = chan.is_producer();
        // Destroyed producers' channels that a file still holds stay
        // listed here (their ids stay taken, as C's ida keeps them) beyond
        // the caps: grow rather than refuse (the registry is a mutex).
        self.channels.reserve(1, GFP_KERNEL).map_err(|_| ENOMEM)?;
        self.channels
            .insert_within_capacity(at, chan)
            .map_err(|_| ENOMEM)?;
        if producer {
            self.producers += 1;
        } else {
            self.users += 1;
            self.memory += size;
        }
        Ok(())
    }

    /// Takes `chan` out.
    pub(crate) fn remove(&mut self, chan: &Arc<Channel>) {
        if let Some(at) = self.channels.iter().position(|c| Arc::ptr_eq(c, chan)) {
            let _ = self.channels.remove(at);
            // A producer's place was given back at its destroy.
            if !chan.is_producer() {
                self.users = self.users.saturating_sub(1);
                self.memory = self.memory.saturating_sub(chan.mem.size() as u64);
            }
        }
    }
}

/// The module's state: the default channel and the channel registry.
#[pin_data]
pub(crate) struct Device {
    pub(crate) default: Arc<Channel>,
    #[pin]
    pub(crate) registry: Mutex<Registry>,
    /// One limit for every ownership refusal line: 100 per 5 s.
    #[pin]
    perm_log: SpinLock<RateLimit>,
    /// Refused attaches to producers' channels: 10 lines per 5 s.
    #[pin]
    pub(crate) attach_log: SpinLock<RateLimit>,
    /// Refused `ack_poll_us` writes: 10 lines per 5 s.
    #[pin]
    pub(crate) param_log: SpinLock<RateLimit>,
}

impl Device {
    /// Whether an ownership refusal may be logged now.
    pub(crate) fn perm_log(&self) -> bool {
        self.perm_log.lock().check()
    }

    pub(crate) fn new() -> Result<Arc<Self>> {
        let default = Channel::new_default()?;
        let channels = KVec::with_capacity(
            (abi::MAX_CHANNELS_LIMIT + abi::MAX_PRODUCERS) as usize,
            GFP_KERNEL,
        )?;
        Arc::pin_init(
            try_pin_init!(Self {
                default,
                registry <- new_mutex!(Registry {
                    channels,
                    users: 0,
                    memory: 0,
                    producers: 0,
                }),
                perm_log <- new_spinlock!(RateLimit::new("k2u_may", 5000, 100)),
                attach_log <- new_spinlock!(RateLimit::new("k2u_producer_may_attach", 5000, 10)),
                param_log <- new_spinlock!(RateLimit::new("ack_poll_us_set", 5000, 10)),
            }),
            GFP_KERNEL,
        )
    }
}

/// The mutex held, with the [`Arc`] it belongs to (some steps need one:
/// starting the timer, queueing work, hooking eventfds).
pub(crate) struct Locked<'a> {
    pub(crate) dev: &'a Arc<Channel>,
    guard: MutexGuard<'a, Inner>,
}

impl<'a> Locked<'a> {
    /// Locks `dev`'s state.
    pub(crate) fn new(dev: &'a Arc<Channel>) -> Self {
        Self {
            dev,
            guard: dev.inner.lock(),
        }
    }

    /// Sleeps until `readq` is notified, the mutex released meanwhile.
    /// Returns whether a signal is pending.
    pub(crate) fn wait_readable(&mut self) -> bool {
        self.dev.readq.wait_interruptible(&mut self.guard)
    }

    /// Sleeps (interruptibly) at most `jiffies` until `prod.ack_wait` is
    /// notified, the mutex released meanwhile.
    pub(crate) fn wait_ack(&mut self, jiffies: Jiffies) -> CondVarTimeoutResult {
        self.dev
            .prod
            .ack_wait
            .wait_interruptible_timeout(&mut self.guard, jiffies)
    }
}

impl Deref for Locked<'_> {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.guard
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.guard
    }
}

kernel::sync::global_lock! {
    // SAFETY: `Published::new()` initialises it, once per load, before it
    // sets `DEVICE_READY`; nothing locks it before seeing `DEVICE_READY`.
    unsafe(uninit) static DEVICE: Mutex<Option<Arc<Device>>> = None;
}

/// `DEVICE` is initialised. Parameters are parsed (and may be written in
/// sysfs) before and during module init, and after exit until sysfs is
/// torn down: they find no device then.
static DEVICE_READY: Atomic<bool> = Atomic::new(false);

/// The device, for the parameter callbacks and `open()`; `None` before init
/// and from unload on.
pub(crate) fn device() -> Option<Arc<Device>> {
    if !DEVICE_READY.load(Acquire) {
        return None;
    }
    DEVICE.lock().clone()
}

/// The module's reference on the device, published in `DEVICE` while it
/// lives.
pub(crate) struct Published(Arc<Device>);

impl Published {
    /// Publishes `dev`.
    pub(crate) fn new(dev: Arc<Device>) -> Self {
        if !DEVICE_READY.load(Relaxed) {
            // SAFETY: Module init is the only caller, once per load, and
            // `DEVICE_READY` is still unset: `DEVICE` is not initialised and
            // nobody uses it yet.
            unsafe { DEVICE.init() };
            DEVICE_READY.store(true, Release);
        }
        *DEVICE.lock() = Some(dev.clone());
        Self(dev)
    }

    /// Module exit (C's `k2u_exit()` up to the device): unpublish, then
    /// stop the default channel. No other channel exists (each one's file
    /// holds a module reference).
    pub(crate) fn shutdown(&self) {
        let old = DEVICE.lock().take();
        drop(old);
        self.0.default.shutdown();
    }
}

impl Drop for Published {
    /// Also on a failed init (the misc device not registered): a command
    /// written meanwhile may have attached a listener or started the timer.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `last_error`: a reason, truncated like C's 160-byte buffer.
pub(crate) struct ErrorText {
    buf: [u8; LAST_ERROR_LEN - 1],
    len: usize,
}

impl ErrorText {
    const fn new() -> Self {
        Self {
            buf: [0; LAST_ERROR_LEN - 1],
            len: 0,
        }
    }

    /// Replaces the text (`vsnprintf()` into the buffer).
    pub(crate) fn set(&mut self, args: fmt::Arguments<'_>) {
        let mut f = Formatter::new(&mut self.buf);
        let _ = f.write_fmt(args);
        self.len = f.bytes_written().min(LAST_ERROR_LEN - 1);
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn as_bstr(&self) -> &BStr {
        BStr::from_bytes(self.buf.get(..self.len).unwrap_or_default())
    }
}

/// C's `__ratelimit()`: at most `burst` calls per `interval`; the first call
/// after a window with misses logs how many were suppressed.
pub(crate) struct RateLimit {
    name: &'static str,
    interval: Delta,
    burst: u32,
    begin: Option<Instant<Monotonic>>,
    left: u32,
    missed: u32,
}

impl RateLimit {
    /// A limit named `name` (C prints the calling function's name) of
    /// `burst` calls per `interval_ms`.
    pub(crate) const fn new(name: &'static str, interval_ms: i64, burst: u32) -> Self {
        Self {
            name,
            interval: Delta::from_millis(interval_ms),
            burst,
            begin: None,
            left: 0,
            missed: 0,
        }
    }

    /// Whether this call may log.
    pub(crate) fn check(&mut self) -> bool {
        let now = Instant::<Monotonic>::now();
        let expired = match self.begin {
            Some(begin) => now - begin > self.interval,
            None => true,
        };
        if expired {
            if self.missed != 0 {
                pr_warn!("{}: {} callbacks suppressed\n", self.name, self.missed);
                self.missed = 0;
            }
            self.begin = Some(now);
            self.left = self.burst;
        }
        if self.left > 0 {
            self.left -= 1;
            true
        } else {
            self.missed = self.missed.saturating_add(1);
            false
        }
    }
}
