// SPDX-License-Identifier: GPL-2.0-only

//! Ring channels (`CREATE_RING`) and the module's bounded ack polling
//! (`ack_poll_us`): PROTOCOL.md's "Ring channels and acks through the
//! control page", as the C module's `ring.c` does them.
//!
//! A ring's buffer is `ring_slots` slots of the channel's buffer size;
//! round `r` lives in slot `(r - 1) % ring_slots`. The listener acks by
//! storing the last round it is done with in `Ctrl::ack_seq` (the
//! consumer index); the module takes that value (under the ack lock,
//! [`crate::state::AckState::look`]) in efd2's wake-up callback, while it
//! polls, and on a ring before every fill and at STOP, and publishes
//! round `r` only while fewer than `ring_slots` rounds are outstanding: a
//! slot is never refilled before its ack.
//!
//! A ring's round work publishes one round per tick with timer pacing;
//! back to back, while there is room, at most `ring_slots` rounds per run
//! (then it queues itself again, showing `KERNEL_POLLING` meanwhile), and
//! on a full ring it polls `ack_seq` for up to `ack_poll_us` µs, then
//! sleeps: `wake_seq` half a ring ahead, `KERNEL_ASLEEP`, a full barrier,
//! `ack_seq` read again. An ack seen there queues it again; else efd2's
//! wake-up takes the ack and the ack work queues it once there is room.
//!
//! Other channels, back to back and adaptive: after each publish the poll
//! work polls that round's ack the same way, then sleeps with `wake_seq`
//! = the round's id; one round per run: the ack it takes goes to the ack
//! work, which counts the round and publishes the next (queueing the poll
//! work again). Every poll runs in a work item with the channel's mutex
//! released (acks, commands and the listing go on meanwhile), is a
//! scheduling point at every turn, and never runs in atomic context.

use kernel::{
    page::PAGE_SIZE,
    prelude::*,
    processor::cpu_relax,
    sync::Arc,
    task::might_sleep,
    time::{Delta, Instant, Monotonic},
    workqueue::WorkItem,
};

use crate::abi::{self, Code};
use crate::params;
use crate::state::{Channel, Locked, ACK_WORK, POLL_WORK, ROUND_WORK};

/// What [`Locked::ring_publish`] did (C's 0, -ENOSPC, -EAGAIN), or why the
/// ring work stopped before it (-ESHUTDOWN).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// Published one round.
    Done,
    /// The ring is full.
    Full,
    /// The event queue has no room for MEMORY_READY.
    NoRoom,
    /// No test runs, or the listener is gone.
    Shutdown,
}

impl Channel {
    /// Looks at `ack_seq` (read under the ack lock, so values are taken in
    /// order); returns whether a new value was taken.
    pub(crate) fn look_acks(&self) -> bool {
        let mut ack = self.ack.lock();
        ack.look(self.mem.ctrl.ack_seq())
    }
}

/// Polls `ack_seq` for up to `us` µs with `KERNEL_POLLING` shown, without
/// the mutex. Returns whether a new value was taken (a value ignored once
/// is not looked at again).
fn poll_for(chan: &Channel, us: u32) -> bool {
    chan.mem.ctrl.set_polling();
    let start = Instant::<Monotonic>::now();
    let limit = Delta::from_micros(i64::from(us));
    let mut last = chan.ack.lock().taken;
    loop {
        let v = chan.mem.ctrl.ack_seq();
        if v != last {
            last = v;
            if chan.look_acks() {
                return true;
            }
        }
        if start.elapsed() >= limit {
            return false;
        }
        cpu_relax();
        // A scheduling point (cond_resched()), and a check that this is
        // not atomic context.
        might_sleep();
    }
}

/// Sleeps on efd2 until `ack_seq` reaches `wake` (NEED_WAKEUP): `wake_seq`,
/// ASLEEP, a full barrier, then `ack_seq` looked at again; returns whether
/// a new value was taken there (the listener may have seen the module
/// awake and written no efd2: the caller goes on).
fn sleep_ack(chan: &Channel, wake: u64) -> bool {
    chan.mem.ctrl.sleep(wake);
    chan.look_acks()
}

/// A round was published on `chan` (under its mutex): the poll work polls
/// its ack if `ack_poll_us` asks and the rounds are back to back and
/// adaptive; it is queued also whenever the page shows POLLING, so that it
/// either looks at `ack_seq` or shows ASLEEP (no ack is left unseen).
pub(crate) fn poll_kick(chan: &Arc<Channel>) {
    if chan.is_ring() || chan.is_producer() {
        return;
    }
    let poll = params::ack_poll_us() != 0 && chan.back_to_back() && chan.adaptive();
    if poll || chan.mem.ctrl.polling() {
        let _ = chan
            .poll_wq
            .enqueue::<Arc<Channel>, POLL_WORK>(chan.clone());
    }
}

impl WorkItem<POLL_WORK> for Channel {
    type Pointer = Arc<Self>;

    /// One round's poll (C's `k2u_poll_work()`): polls `ack_seq` for up to
    /// `ack_poll_us` µs, then sleeps with `wake_seq` the round's id; an ack
    /// taken goes to the ack work (close, count, next round).
    fn run(this: Arc<Self>) {
        let us = params::ack_poll_us();
        if this.is_ring() {
            ring_poll(&this, us);
            return;
        }
        // Each pass that goes round again took a newer ack_seq, at most
        // the round's id: the loop is bounded.
        loop {
            let (open, id, taken) = {
                let ack = this.ack.lock();
                (ack.open, ack.round_id(), ack.taken)
            };
            let poll = open && us != 0 && this.back_to_back() && this.adaptive();
            let took = (poll && poll_for(&this, us))
                || sleep_ack(&this, if open { id } else { taken.wrapping_add(1) });
            if !took {
                return;
            }
            let _ = this.wq.enqueue::<Arc<Channel>, ACK_WORK>(this.clone());
            // The value taken may name an older round (ACK_ROUND closed the
            // one after it): the open round still waits for its ack, and
            // the page still says POLLING, so look again (or sleep).
            let waiting = {
                let ack = this.ack.lock();
                ack.open && ack.round_id() == id
            };
            if !open || !waiting {
                return;
            }
        }
    }
}

/// The `ack_seq` a sleeping ring's producer wakes at: half the ring free.
fn ring_wake(chan: &Channel, taken: u64) -> u64 {
    taken.wrapping_add(u64::from(chan.ring_slots() / 2).max(1))
}

/// A full ring's poll, on the unbound poll queue: polls `ack_seq` for up to
/// `us` µs, then sleeps per NEED_WAKEUP; an ack taken wakes the round work.
fn ring_poll(chan: &Arc<Channel>, us: u32) {
    let taken = chan.ack.lock().taken;
    if (us != 0 && poll_for(chan, us)) || sleep_ack(chan, ring_wake(chan, taken)) {
        let _ = chan.wq.enqueue::<Arc<Channel>, ROUND_WORK>(chan.clone());
    }
}

/// A ring's round work (C's `k2u_ring_work()`; see the module's doc).
pub(crate) fn run(this: &Arc<Channel>) {
    let ctrl = &this.mem.ctrl;
    let mut b2b = false;
    let mut ret = Publish::Shutdown;
    for _ in 0..this.ring_slots() {
        let mut k = Locked::new(this);
        if !k.testing || k.listener_gone() {
            ret = Publish::Shutdown;
            break;
        }
        b2b = this.back_to_back();
        if b2b {
            // It looks at `ack_seq` before every fill.
            ctrl.set_polling();
        }
        ret = k.ring_publish();
        drop(k);
        if ret != Publish::Done || !b2b {
            break;
        }
    }
    if !b2b && ret != Publish::Shutdown {
        return;
    }
    let taken = this.ack.lock().taken;
    let again = match ret {
        // A whole ring published: let others have the worker.
        Publish::Done => true,
        // The timer armed by `note_queue_full()` tries again.
        Publish::NoRoom => false,
        Publish::Shutdown => {
            // No test: nothing looks at `ack_seq` until START.
            ctrl.sleep(taken.wrapping_add(1));
            false
        }
        Publish::Full => {
            if params::ack_poll_us() != 0 {
                // Polled from the unbound queue: here it would spin on the
                // CPU that queued this work, often the listener's.
                let _ = this
                    .poll_wq
                    .enqueue::<Arc<Channel>, POLL_WORK>(this.clone());
                return;
            }
            sleep_ack(this, ring_wake(this, taken))
        }
    };
    if again {
        let _ = this.wq.enqueue::<Arc<Channel>, ROUND_WORK>(this.clone());
    }
}

/// `K2U_IOC_ACK`, `K2U_IOC_ACK_ROUND` (`op` `ACK`, `ACK_ROUND`) and
/// `K2U_IOC_READ_BUFFER` on a ring: EOPNOTSUPP with one line.
pub(crate) fn refuse_ioctl(chan: &Arc<Channel>, op: &str) -> Error {
    let mut k = Locked::new(chan);
    if op == "READ_BUFFER" {
        if k.round.ring_read_log.check() {
            pr_notice!(
                "{}ring channel: READ_BUFFER refused: read the slots through the mapping\n",
                chan.tag()
            );
        }
    } else if k.round.ring_ack_log.check() {
        pr_notice!("{}ring channel: acks go through ack_seq\n", chan.tag());
    }
    EOPNOTSUPP
}

impl Locked<'_> {
    /// Publishes the next round into its slot if the ring has room, the
    /// acks in `ack_seq` taken and counted first: fills the slot,
    /// describes it in the control page's table, stores `ready_seq`
    /// (release), and rings the doorbell by the adaptive rule. A full ring
    /// counts `ring_full` once per wait (until the next publish).
    fn ring_publish(&mut self) -> Publish {
        let dev = self.dev;
        self.ring_count_acks();
        // Only this function publishes, under the mutex, and acks only
        // free slots: the room found here holds until the round is out.
        if !dev.ack.lock().ring_room() {
            if !self.round.ring_waiting {
                self.round.ring_waiting = true;
                dev.mem.ctrl.count_ring_full();
            }
            return Publish::Full;
        }
        if !self.has_room(Code::MemoryReady) {
            self.note_queue_full();
            return Publish::NoRoom;
        }
        let id = self.rounds.wrapping_add(1);
        let size = dev.buffer_size();
        let pages = size / PAGE_SIZE;
        let slot = dev.ack.lock().ring.slot_of(id);
        // Round `id - ring_slots`, the slot's last, was acked (room).
        dev.mem.fill_slot(self, id, slot * pages, pages);
        dev.mem.ctrl.store_slot(slot, id, size as u64);
        self.round.ring_waiting = false;
        self.round.buffer_filled = true;
        self.round.calculation_done = false;
        self.rounds = id;
        {
            let mut ack = dev.ack.lock();
            ack.ring_publish(id);
            dev.mem.ctrl.store_ready_seq(id, size as u64);
        }
        if dev.mem.ctrl.listener_spinning() {
            dev.mem.ctrl.count_skipped_doorbell();
        } else {
            self.post(Code::MemoryReady, id as u32);
        }
        Publish::Done
    }

    /// Takes the acks in `ack_seq` and counts the rounds of the current
    /// test they acked (their round trips into the statistics, in order);
    /// says an out-of-range `ack_seq` (C's `k2u_ring_count()`).
    fn ring_count_acks(&mut self) {
        // As many as RingAcks keeps (slots + 1 at most).
        let mut times = [0u64; abi::RING_MAX_SLOTS as usize + 1];
        let mut n = 0;
        // Copied out first: the statistics' lock is not taken inside the
        // ack lock.
        let stray = {
            let mut ack = self.dev.ack.lock();
            ack.look(self.dev.mem.ctrl.ack_seq());
            ack.ring.drain_times(|t| {
                if let Some(slot) = times.get_mut(n) {
                    *slot = t;
                    n += 1;
                }
            });
            ack.stray.take()
        };
        for &t in times.iter().take(n) {
            self.round.stats.add(t);
        }
        if n != 0 {
            self.round.calculation_done = true;
        }
        self.report_stray(stray);
    }

    /// A ring's part of `round_collect()` (the ack work, STOP): counts
    /// the acks and, back to back, wakes the round work when the ring has
    /// room (C's `k2u_ring_collect()`).
    pub(crate) fn ring_collect(&mut self) {
        self.ring_count_acks();
        let dev = self.dev;
        let alive = self.link.as_ref().is_some_and(|l| !l.exited());
        if !dev.back_to_back() || !self.testing || !alive {
            return;
        }
        if dev.ack.lock().ring_room() {
            let _ = dev.wq.enqueue::<Arc<Channel>, ROUND_WORK>(dev.clone());
        }
    }
}
