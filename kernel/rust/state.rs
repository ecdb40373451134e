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
        new_condvar, new_mutex, new_spinlock, new_spinlock_irq, Arc, CondVar, Mutex, MutexGuard,
        SpinLock, SpinLockIrq,
    },
    time::hrtimer::HrTimer,
    time::{Delta, Instant, Monotonic},
    workqueue::{impl_has_work, Work},
};

use crate::abi::{self, Code, Event};
use crate::link::Link;
use crate::memory::Memory;
use crate::params;
use crate::round::Round;
use crate::sys::OwnedQueue;

/// Ids of the three work items of [`Shared`].
pub(crate) const ROUND_WORK: u64 = 1;
pub(crate) const ACK_WORK: u64 = 2;
pub(crate) const HUP_WORK: u64 = 3;

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
}

impl AckState {
    const fn new() -> Self {
        Self {
            open: false,
            shown: false,
            closed: false,
            id: 0,
            start: None,
            took: 0,
            late: 0,
            bad: 0,
        }
    }

    /// Forgets the round (a new test, or the listener left).
    pub(crate) fn reset(&mut self) {
        *self = Self::new();
    }

    /// Opens round `id`, shown already or not; the time starts now.
    pub(crate) fn open(&mut self, id: u64, shown: bool) {
        self.open = true;
        self.shown = shown;
        self.id = id;
        self.start = Some(Instant::now());
    }

    /// The MEMORY_READY record of round `round` (low 32 bits) was read.
    pub(crate) fn shown(&mut self, round: u32) {
        if self.open && self.id as u32 == round {
            self.shown = true;
        }
    }

    /// The closed round's time, once (`None` if none is closed).
    pub(crate) fn take_closed(&mut self) -> Option<u64> {
        core::mem::replace(&mut self.closed, false).then_some(self.took)
    }

    /// Closes the outstanding round now: a plain ack (`round` `None`, 7 on
    /// efd2 or `K2U_IOC_ACK`) needs it shown, an ack by id the id. EPROTO:
    /// no round outstanding; ESTALE: not this ack's round.
    pub(crate) fn close(&mut self, round: Option<u32>) -> Result {
        if !self.open {
            return Err(EPROTO);
        }
        let mine = match round {
            Some(id) => self.id as u32 == id,
            None => self.shown,
        };
        if !mine {
            return Err(ESTALE);
        }
        let took = self
            .start
            .map_or(0, |start| (Instant::<Monotonic>::now() - start).as_nanos());
        self.took = u64::try_from(took).unwrap_or(0);
        self.open = false;
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
        let mut acks = value / ack;
        if self.close(None).is_ok() {
            acks -= 1;
        }
        self.late = self.late.wrapping_add(acks);
    }
}

/// Everything the module shares: created at load, freed when the last
/// reference (the module's, a file's, a parameter callback's) goes.
#[pin_data]
pub(crate) struct Shared {
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
    /// The listener closed efd or efd2 (C's `K2U_EV_HUP`).
    pub(crate) hup: Atomic<bool>,
    /// The data buffer and the control page; fixed at load.
    pub(crate) mem: Memory,
    /// Rate limit of the `mmap refused` lines (mmap cannot take `inner`).
    #[pin]
    pub(crate) mmap_log: SpinLock<RateLimit>,
    /// The module's workqueue; `ROUND_WORK`, `ACK_WORK`, `HUP_WORK` run on it.
    pub(crate) wq: OwnedQueue,
    #[pin]
    pub(crate) round_work: Work<Shared, ROUND_WORK>,
    #[pin]
    pub(crate) ack_work: Work<Shared, ACK_WORK>,
    #[pin]
    pub(crate) hup_work: Work<Shared, HUP_WORK>,
    /// The round timer (unused with `back_to_back`).
    #[pin]
    pub(crate) timer: HrTimer<Shared>,
}

impl_has_work! {
    impl HasWork<Self, ROUND_WORK> for Shared { self.round_work }
    impl HasWork<Self, ACK_WORK> for Shared { self.ack_work }
    impl HasWork<Self, HUP_WORK> for Shared { self.hup_work }
}

/// The state under [`Shared::inner`].
pub(crate) struct Inner {
    /// The module is going away.
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
    /// The current test.
    pub(crate) round: Round,
    /// Why the last refused command was refused.
    pub(crate) last_error: ErrorText,
}

impl Shared {
    /// Allocates everything, as C's `k2u_init()` does before the device.
    pub(crate) fn new() -> Result<Arc<Self>> {
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
        let mem = Memory::new(size)?;
        let ring = KVVec::from_elem(Event::default(), QUEUE_LEN, GFP_KERNEL)?;
        let round = Round::new()?;
        let wq = OwnedQueue::new(c"kern2usr")?;
        Arc::pin_init(
            try_pin_init!(Self {
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
                    round,
                    last_error: ErrorText::new(),
                }),
                readq <- new_condvar!(),
                ack <- new_spinlock_irq!(AckState::new()),
                hup: Atomic::new(false),
                mem,
                mmap_log <- new_spinlock!(RateLimit::new("k2u_mmap", 5000, 10)),
                wq,
                round_work <- new_work!("kern2usr::round_work"),
                ack_work <- new_work!("kern2usr::ack_work"),
                hup_work <- new_work!("kern2usr::hup_work"),
                timer <- HrTimer::new(),
            }),
            GFP_KERNEL,
        )
    }
}

/// The mutex held, with the [`Arc`] it belongs to (some steps need one:
/// starting the timer, queueing work, hooking eventfds).
pub(crate) struct Locked<'a> {
    pub(crate) dev: &'a Arc<Shared>,
    guard: MutexGuard<'a, Inner>,
}

impl<'a> Locked<'a> {
    /// Locks `dev`'s state.
    pub(crate) fn new(dev: &'a Arc<Shared>) -> Self {
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
    unsafe(uninit) static DEVICE: Mutex<Option<Arc<Shared>>> = None;
}

/// `DEVICE` is initialised. Parameters are parsed (and may be written in
/// sysfs) before and during module init, and after exit until sysfs is
/// torn down: they find no device then.
static DEVICE_READY: Atomic<bool> = Atomic::new(false);

/// The device, for the parameter callbacks and `open()`; `None` before init
/// and from unload on.
pub(crate) fn device() -> Option<Arc<Shared>> {
    if !DEVICE_READY.load(Acquire) {
        return None;
    }
    DEVICE.lock().clone()
}

/// The module's reference on the device, published in `DEVICE` while it
/// lives.
pub(crate) struct Published(Arc<Shared>);

impl Published {
    /// Publishes `dev`.
    pub(crate) fn new(dev: Arc<Shared>) -> Self {
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

    /// Module exit (C's `k2u_exit()` up to the device): unpublish, mark
    /// dead, detach (stops the timer, unhooks the eventfds), wake readers,
    /// and wait for the work items; none can be queued after this. Calling
    /// it again does nothing more.
    pub(crate) fn shutdown(&self) {
        let old = DEVICE.lock().take();
        drop(old);
        {
            let mut k = Locked::new(&self.0);
            k.dead = true;
            k.detach();
        }
        self.0.readq.notify_all();
        self.0.wq.drain();
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
