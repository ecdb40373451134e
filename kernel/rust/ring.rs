// SPDX-License-Identifier: GPL-2.0-only

//! Ring channels (`CREATE_RING`) and the module's bounded ack polling
//! (`ack_poll_us`), PROTOCOL.md's ring section.
//!
//! A ring's buffer is `ring_slots` slots of the channel's buffer size;
//! round `r` lives in slot `(r - 1) % ring_slots`. The listener acks by
//! storing the last round it is done with in `Ctrl::ack_seq` (the
//! consumer index); the module takes that value (under the ack lock,
//! [`crate::state::AckState::look`]) on every efd2 wake-up, while it
//! polls, and before every fill, and publishes round `r` only while
//! fewer than `ring_slots` rounds are outstanding: a slot is never
//! refilled before its ack.
//!
//! The round work publishes: one round per tick with timer pacing; back to
//! back, while there is room (at most `ring_slots` rounds per run, then
//! it queues itself again), and when the ring is full it polls `ack_seq`
//! for up to `ack_poll_us` µs (`KERNEL_POLLING`), then sleeps: `wake_seq`
//! half a ring ahead, `KERNEL_ASLEEP`, a full barrier, `ack_seq` read
//! again; the listener's efd2 write (it sees ASLEEP) queues the work again.
//!
//! Ack polling of the other channels: back to back and adaptive, after a
//! round is published, the round work polls its ack the same way, then
//! sleeps with `wake_seq` = the round's id; at most [`POLL_ROUNDS`] rounds
//! per run. Every poll runs in the work item with the channel's mutex
//! released (acks, commands and the listing go on meanwhile), yields the
//! CPU when the scheduler wants it, and never runs in atomic context.

use kernel::{
    page::PAGE_SIZE,
    processor::cpu_relax,
    sync::Arc,
    task::might_sleep,
    time::{Delta, Instant, Monotonic},
};

use crate::abi::{self, Code};
use crate::params;
use crate::state::{Channel, Locked, ROUND_WORK};

/// Rounds one run of the round work polls acks for (a channel that is not
/// a ring) before it queues itself again.
const POLL_ROUNDS: u32 = 64;

/// How a ring producer's step under the mutex ended.
enum Step {
    /// Nothing more to do in this run (timer pacing, no test, no room in
    /// the event queue).
    Done,
    /// Back to back: this run published its share; queue it again.
    Requeue,
    /// Back to back: the ring is full; wait for acks.
    Full,
}

/// What [`Locked::ring_publish`] did.
enum Publish {
    /// Published one round.
    Done,
    /// The ring is full.
    Full,
    /// The event queue has no room for MEMORY_READY.
    NoRoom,
}

impl Channel {
    /// Looks at `ack_seq` (read under the ack lock, so values are taken in
    /// order); returns whether a new value was taken.
    pub(crate) fn look_acks(&self) -> bool {
        let mut ack = self.ack.lock();
        ack.look(self.mem.ctrl.ack_seq())
    }
}

/// Whether round work polls acks after each round: back to back and
/// adaptive (not a ring nor a producer's channel), `ack_poll_us` non-zero.
pub(crate) fn polls(chan: &Channel) -> bool {
    !chan.is_ring()
        && !chan.is_producer()
        && chan.back_to_back()
        && chan.adaptive()
        && params::ack_poll_us() != 0
}

/// Polls `ack_seq` for up to `us` µs (the caller set `KERNEL_POLLING`),
/// without the mutex. Returns whether a new value was taken.
fn poll_for(chan: &Channel, us: u32) -> bool {
    let start = Instant::<Monotonic>::now();
    let limit = Delta::from_micros(i64::from(us));
    let mut last = chan.ack.lock().taken;
    loop {
        let v = chan.mem.ctrl.ack_seq();
        // A value taken or ignored once is not looked at again.
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
        // A scheduling point (cond_resched()); also checks that this is
        // not atomic context.
        might_sleep();
    }
}

/// The round work of a channel that is not a ring, after its step under
/// the mutex: with [`polls`], polls the open round's ack, counts it and
/// goes on with the next round, at most [`POLL_ROUNDS`] rounds, then
/// queues itself again. A round whose poll timed out is slept on (efd2
/// wakes the module) and not polled again.
pub(crate) fn poll_rounds(this: &Arc<Channel>) {
    let ctrl = &this.mem.ctrl;
    let mut polling = false;
    for _ in 0..POLL_ROUNDS {
        let us = params::ack_poll_us();
        let id = {
            let ack = this.ack.lock();
            (ack.open && ack.slept != ack.round_id()).then(|| ack.round_id())
        };
        let (Some(id), true) = (id, polls(this)) else {
            // No round to poll (or polling was turned off): asleep, any
            // ack rings efd2.
            if polling {
                ctrl.idle();
            }
            return;
        };
        ctrl.set_polling();
        polling = true;
        if !poll_for(this, us) {
            this.ack.lock().slept = id;
            ctrl.sleep(id);
            polling = false;
            if !this.look_acks() {
                return;
            }
        }
        // Counts the round and, back to back, publishes the next.
        let mut k = Locked::new(this);
        if k.link.is_some() {
            k.round_collect();
        }
    }
    // Still POLLING: the next run goes on.
    let _ = this.wq.enqueue::<Arc<Channel>, ROUND_WORK>(this.clone());
}

/// The round work of a ring channel: publishes (see the module's doc).
pub(crate) fn run(this: &Arc<Channel>) {
    let b2b = this.back_to_back();
    let slots = this.ring_slots();
    let mut budget = if b2b { slots } else { 1 };
    // Each wait that ends takes acks, so the next step publishes: at most
    // `slots` waits before the budget is spent.
    for _ in 0..=slots {
        let step = Locked::new(this).ring_step(&mut budget, b2b);
        match step {
            Step::Done => return,
            Step::Requeue => break,
            Step::Full => {}
        }
        if !wait_ring(this) {
            return;
        }
    }
    let _ = this.wq.enqueue::<Arc<Channel>, ROUND_WORK>(this.clone());
}

/// A full ring, back to back: polls `ack_seq` for `ack_poll_us` µs
/// (`KERNEL_POLLING`, set by the step), then sleeps until half the ring is
/// free. Returns whether acks were taken (go on publishing).
fn wait_ring(chan: &Channel) -> bool {
    let us = params::ack_poll_us();
    if us != 0 && poll_for(chan, us) {
        return true;
    }
    let taken = chan.ack.lock().taken;
    let half = u64::from(chan.ring_slots() / 2).max(1);
    chan.mem.ctrl.sleep(taken.wrapping_add(half));
    // It may have moved before ASLEEP was visible: the listener then saw
    // POLLING and did not write efd2.
    chan.look_acks()
}

impl Locked<'_> {
    /// A ring producer's step under the mutex: takes the acks, counts them,
    /// publishes what the budget and the room allow.
    fn ring_step(&mut self, budget: &mut u32, b2b: bool) -> Step {
        let dev = self.dev;
        if !self.testing || self.listener_gone() {
            // No producer any more: asleep, any ack rings efd2.
            if b2b {
                dev.mem.ctrl.idle();
            }
            return Step::Done;
        }
        if b2b {
            dev.mem.ctrl.set_polling();
        }
        dev.look_acks();
        self.round_collect();
        dev.ack.lock().ring.moved = false;
        loop {
            if *budget == 0 {
                return Step::Requeue;
            }
            match self.ring_publish() {
                Publish::Done => {
                    *budget -= 1;
                    self.round.ring_waiting = false;
                    if !b2b {
                        return Step::Done;
                    }
                }
                Publish::Full => {
                    // Each tick that finds it full; back to back once per
                    // wait.
                    if !b2b || !self.round.ring_waiting {
                        dev.mem.ctrl.count_ring_full();
                    }
                    self.round.ring_waiting = true;
                    return if b2b { Step::Full } else { Step::Done };
                }
                Publish::NoRoom => {
                    if b2b {
                        dev.mem.ctrl.idle();
                    }
                    return Step::Done;
                }
            }
        }
    }

    /// Publishes the next round into its slot if the ring has room (the
    /// acks were taken just before): fills the slot, describes it in the
    /// control page's table, stores `ready_seq` (release), and rings the
    /// doorbell by the adaptive rule.
    fn ring_publish(&mut self) -> Publish {
        let dev = self.dev;
        // Only this function publishes, under the mutex, and acks only
        // free slots: the room found here holds until the round is out.
        if !dev.ack.lock().ring_room() {
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

    /// Counts the ring's rounds acked since the last look (their round
    /// trips into the statistics, in order).
    pub(crate) fn ring_count_acks(&mut self) {
        let mut times = [0u64; abi::RING_MAX_SLOTS as usize];
        let mut n = 0;
        // Copied out first: the statistics' lock is not taken inside the
        // ack lock.
        self.dev.ack.lock().ring.drain_times(|t| {
            if let Some(slot) = times.get_mut(n) {
                *slot = t;
                n += 1;
            }
        });
        for &t in times.iter().take(n) {
            self.round.stats.add(t);
        }
        if n != 0 {
            self.round.calculation_done = true;
        }
    }

    /// After an efd2 wake-up took acks: a back-to-back ring's producer
    /// (asleep on a full ring) goes on.
    pub(crate) fn ring_kick(&mut self) {
        let dev = self.dev;
        if !dev.is_ring() || !dev.back_to_back() || !self.testing {
            return;
        }
        let moved = core::mem::take(&mut dev.ack.lock().ring.moved);
        if moved {
            let _ = dev.wq.enqueue::<Arc<Channel>, ROUND_WORK>(dev.clone());
        }
    }
}
