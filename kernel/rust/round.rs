// SPDX-License-Identifier: GPL-2.0-only

//! Test rounds: a timer (or, with `back_to_back`, the last ack) starts a
//! round, which fills the buffer and signals MEMORY_READY; the listener's
//! acknowledgement closes it with its round-trip time. Rounds have ids
//! (the `ready_seq` they publish); an ack closes only its own round.

use kernel::{
    alloc::Flags,
    impl_has_hr_timer,
    prelude::*,
    sync::{Arc, ArcBorrow},
    time::{
        hrtimer::{
            ArcHrTimerHandle, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer,
            HrTimerRestart, RelativeMode,
        },
        Monotonic,
    },
    workqueue::WorkItem,
};

use crate::abi::Code;
use crate::state::{Channel, Locked, RateLimit, ROUND_WORK};
use crate::stats::Stats;

/// The current test (part of the state under the mutex). Which round is
/// outstanding, and its timing, live in [`crate::state::AckState`].
pub(crate) struct Round {
    pub(crate) buffer_filled: bool,
    pub(crate) calculation_done: bool,
    /// This round's lines are not rate-limited away.
    log_round: bool,
    /// The "still lent" line was said for the current round.
    lend_logged: bool,
    pub(crate) stats: Stats,
    /// The running timer; dropping the handle cancels it.
    timer: Option<ArcHrTimerHandle<Channel>>,
    /// Per-round lines: every round at the seed's pace, at most 20 a second.
    log: RateLimit,
    skip_log: RateLimit,
    value_log: RateLimit,
    late_log: RateLimit,
    lend_log: RateLimit,
    stray_log: RateLimit,
    /// `ring channel: ...` refusals of ioctls a ring does not have.
    pub(crate) ring_ack_log: RateLimit,
    pub(crate) ring_read_log: RateLimit,
    /// A ring's producer counted `ring_full` for the full spell it is in
    /// (once per spell, either pacing); cleared by the next publish.
    pub(crate) ring_waiting: bool,
}

impl Round {
    /// `gfp`: the allocation flags of the channel's memory.
    pub(crate) fn new(gfp: Flags) -> Result<Self> {
        Ok(Self {
            buffer_filled: false,
            calculation_done: false,
            log_round: false,
            lend_logged: false,
            stats: Stats::new(gfp)?,
            timer: None,
            log: RateLimit::new("k2u_round_work", 1000, 20),
            skip_log: RateLimit::new("k2u_round_begin", 5000, 10),
            value_log: RateLimit::new("k2u_round_collect", 5000, 10),
            late_log: RateLimit::new("k2u_round_collect", 5000, 10),
            lend_log: RateLimit::new("k2u_round_note_lent", 5000, 10),
            stray_log: RateLimit::new("k2u_page_ack_report", 5000, 10),
            ring_ack_log: RateLimit::new("k2u_ring_refuse", 5000, 10),
            ring_read_log: RateLimit::new("k2u_ring_refuse", 5000, 10),
            ring_waiting: false,
        })
    }
}

impl_has_hr_timer! {
    impl HasHrTimer<Self> for Channel {
        mode: RelativeMode<Monotonic>, field: self.timer
    }
}

impl HrTimerCallback for Channel {
    type Pointer<'a> = Arc<Self>;

    /// Hard-interrupt context: queue the round's work, rearm.
    fn run(this: ArcBorrow<'_, Self>, mut ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        // Already queued is fine: the round is under way. (The reference
        // dropped on that path is never the last: the timer handle has one.)
        let _ = this.wq.enqueue::<Arc<Self>, ROUND_WORK>(this.into());
        ctx.forward_now(this.period());
        HrTimerRestart::Restart
    }
}

impl WorkItem<ROUND_WORK> for Channel {
    type Pointer = Arc<Self>;

    fn run(this: Arc<Self>) {
        if this.is_ring() {
            crate::ring::run(&this);
            return;
        }
        Locked::new(&this).round_tick();
    }
}

impl Locked<'_> {
    /// The round work (C's `k2u_round_work()`).
    fn round_tick(&mut self) {
        if !self.testing || self.listener_gone() {
            return;
        }
        // A round an ack closed and the ack work has not counted yet.
        self.round_collect();
        if !self.testing {
            return;
        }
        // The per-round lines are the default channel's only.
        let log = self.dev.is_default() && self.round.log.check();
        if log && !self.dev.back_to_back() {
            pr_info!("Timer handler called\n");
            pr_info!(
                "In handler: buffer_filled = {}, calculation_done = {}\n",
                u8::from(self.round.buffer_filled),
                u8::from(self.round.calculation_done)
            );
        }
        if self.dev.ack.lock().open {
            return; // The last round is still outstanding.
        }
        self.round_begin(log);
    }

    /// Fills the buffer and tells the listener. The control page gets the
    /// round's id (`ready_seq`) first; in adaptive mode a spinning listener
    /// sees it there and the doorbell is skipped.
    fn round_begin(&mut self, log: bool) {
        let dev = self.dev;
        // Never while the buffer is lent (a round outstanding, or abandoned
        // by STOP and not acked), nor over a round an ack closed that is
        // not counted yet. Only this function opens rounds, under the
        // mutex, so the answer holds until the round below is opened.
        let held = {
            let ack = dev.ack.lock();
            if ack.open || ack.lent || ack.closed {
                Some(ack.held_for())
            } else {
                None
            }
        };
        match held {
            Some(Some(id)) => return self.note_lent(id),
            Some(None) => return,
            None => {}
        }
        if !self.has_room(Code::MemoryReady) {
            self.note_queue_full();
            return;
        }
        if log {
            pr_info!("Start monitoring for efd2...\n");
        }
        let id = self.rounds.wrapping_add(1);
        dev.mem.fill(self, id);
        self.round.buffer_filled = true;
        self.round.calculation_done = false;
        self.round.log_round = log;
        self.round.lend_logged = false;
        self.rounds = id;
        // Open the round and publish its id in one ack-lock section: an
        // ack comes either before (and cannot close it) or after the round
        // is visible. In adaptive mode the control page shows every round,
        // so it counts as shown from its publish.
        let adaptive = dev.adaptive();
        {
            let mut ack = dev.ack.lock();
            ack.open(id, adaptive);
            dev.mem.ctrl.store_ready_seq(id, dev.mem.size() as u64);
        }
        if adaptive && dev.mem.ctrl.listener_spinning() {
            dev.mem.ctrl.count_skipped_doorbell();
        } else {
            self.post(Code::MemoryReady, id as u32);
        }
        if log {
            pr_info!("Buffer filled\n");
        }
        crate::ring::poll_kick(dev);
    }

    /// A round is due but the event queue has no room for its
    /// MEMORY_READY: skipped. Back to back has no timer to try again: arm
    /// it.
    pub(crate) fn note_queue_full(&mut self) {
        let dev = self.dev;
        if self.round.skip_log.check() {
            pr_notice!("{}event queue full: round skipped\n", dev.tag());
        }
        if dev.back_to_back() && self.round.timer.is_none() {
            self.round.timer = Some(dev.clone().start(dev.period()));
        }
    }

    /// A round is due but the buffer is still lent for round `id`, which
    /// STOP abandoned (C's `k2u_round_note_lent()`). Said once per such
    /// round: the ticks that follow skip silently until its ack.
    fn note_lent(&mut self, id: u64) {
        if self.round.lend_logged {
            return;
        }
        self.round.lend_logged = true;
        if self.round.lend_log.check() {
            pr_info!(
                "{}buffer still lent to the listener (round {}): rounds wait for its ack\n",
                self.dev.tag(),
                id
            );
        }
    }

    /// START_TEST: reset the statistics and start the rounds. A round the
    /// last STOP abandoned keeps the buffer lent: the first round waits
    /// for its ack.
    pub(crate) fn round_start(&mut self) {
        self.testing = true;
        self.round.buffer_filled = false;
        self.round.calculation_done = false;
        self.dev.ack.lock().new_test();
        self.round.stats.reset();
        self.round.ring_waiting = false;
        let dev = self.dev;
        if dev.back_to_back() {
            let _ = dev.wq.enqueue::<Arc<Channel>, ROUND_WORK>(dev.clone());
        } else {
            self.round.timer = Some(dev.clone().start(dev.period()));
        }
    }

    /// Stops the timer. A round acked before this point still counts; one
    /// still outstanding is abandoned: no later ack closes it, but it keeps
    /// the buffer lent until its ack (or the listener's detach).
    pub(crate) fn round_stop(&mut self) {
        if !self.testing {
            return;
        }
        // Dropping the handle cancels the timer and waits for its callback.
        self.round.timer = None;
        self.testing = false;
        // Abandon first: an ack from here on finds no round to close.
        self.dev.ack.lock().open = false;
        // (A ring's takes the acks already in `ack_seq` first: given
        // before STOP, they count.)
        self.round_collect();
        // A ring's rounds published so far count nothing when acked.
        if self.dev.is_ring() {
            self.dev.ack.lock().end_test();
        }
        self.round.buffer_filled = false;
        self.round.calculation_done = false;
    }

    pub(crate) fn round_average(&self) -> u64 {
        self.round.stats.mean()
    }

    /// Counts a round an ack closed (its time into the statistics, its
    /// lines into the log), reports ignored acks, and back to back starts
    /// the next round, also when an ack ended an abandoned round's lend
    /// (C's `k2u_round_collect()`).
    pub(crate) fn round_collect(&mut self) {
        let (took, returned, late, bad, stray) = {
            let mut ack = self.dev.ack.lock();
            let took = ack.take_closed();
            (
                took,
                ack.take_returned(),
                core::mem::take(&mut ack.late),
                core::mem::take(&mut ack.bad),
                ack.stray.take(),
            )
        };
        let tag = self.dev.tag();
        if bad != 0 && self.round.value_log.check() {
            pr_notice!("{}unexpected value {} on efd2 ignored\n", tag, bad);
        }
        self.report_stray(stray);
        if self.dev.is_ring() {
            self.ring_collect();
            return;
        }
        if late != 0 && self.round.late_log.check() {
            pr_notice!(
                "{}{} late ack(s) ignored: no shown round outstanding\n",
                tag,
                late
            );
        }
        if let Some(took) = took {
            self.round.stats.add(took);
            self.round.calculation_done = true;
            if self.round.log_round {
                pr_info!("Time to copy = {}\n", took);
                pr_info!("Exit from __monitor_efd2\n");
            }
        } else if !returned {
            return;
        }
        // A producer waiting in `k2u_producer_wait_ack()`.
        if self.dev.is_producer() {
            self.dev.prod.ack_wait.notify_all();
        }
        // A dead listener is detached by the next command or timer round.
        let alive = self.link.as_ref().is_some_and(|l| !l.exited());
        if self.dev.back_to_back() && self.testing && alive {
            let log = self.dev.is_default() && self.round.log.check();
            self.round_begin(log);
        }
    }

    /// The out-of-range line for an `ack_seq` value `stray` that was
    /// ignored, if any (rate-limited).
    pub(crate) fn report_stray(&mut self, stray: Option<(u64, u64, u64)>) {
        if let Some((v, acked, published)) = stray {
            if self.round.stray_log.check() {
                pr_notice!(
                    "{}ack_seq {} out of range (acked {}, published {}): ignored\n",
                    self.dev.tag(),
                    v,
                    acked,
                    published
                );
            }
        }
    }

    /// `K2U_IOC_ACK` (`round` `None`) or `K2U_IOC_ACK_ROUND` (a ring was
    /// refused before, `ring::refuse_ioctl()`).
    pub(crate) fn round_ack_ioctl(&mut self, round: Option<u32>) -> Result {
        if self.link.is_none() || self.listener_gone() {
            return Err(EPROTO);
        }
        let ret = {
            let mut ack = self.dev.ack.lock();
            let ret = ack.close(round);
            if ret.is_err() {
                ack.late = ack.late.wrapping_add(1);
            }
            ret
        };
        self.round_collect();
        ret
    }
}
