// SPDX-License-Identifier: GPL-2.0-only

//! Test rounds: a timer (or, with `back_to_back`, the last ack) starts a
//! round, which fills the buffer and signals MEMORY_READY; the listener's
//! acknowledgement closes it with its round-trip time. Rounds have ids
//! (the `ready_seq` they publish); an ack closes only its own round.

use kernel::{
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
use crate::params;
use crate::state::{Locked, RateLimit, Shared, ROUND_WORK};
use crate::stats::Stats;

/// The current test (part of the state under the mutex). Which round is
/// outstanding, and its timing, live in [`crate::state::AckState`].
pub(crate) struct Round {
    pub(crate) buffer_filled: bool,
    pub(crate) calculation_done: bool,
    /// This round's lines are not rate-limited away.
    log_round: bool,
    pub(crate) stats: Stats,
    /// The running timer; dropping the handle cancels it.
    timer: Option<ArcHrTimerHandle<Shared>>,
    /// Per-round lines: every round at the seed's pace, at most 20 a second.
    log: RateLimit,
    skip_log: RateLimit,
}

impl Round {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            buffer_filled: false,
            calculation_done: false,
            log_round: false,
            stats: Stats::new()?,
            timer: None,
            log: RateLimit::new("k2u_round_work", 1000, 20),
            skip_log: RateLimit::new("k2u_round_begin", 5000, 10),
        })
    }
}

impl_has_hr_timer! {
    impl HasHrTimer<Self> for Shared {
        mode: RelativeMode<Monotonic>, field: self.timer
    }
}

impl HrTimerCallback for Shared {
    type Pointer<'a> = Arc<Self>;

    /// Hard-interrupt context: queue the round's work, rearm.
    fn run(this: ArcBorrow<'_, Self>, mut ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        // Already queued is fine: the round is under way. (The reference
        // dropped on that path is never the last: the timer handle has one.)
        let _ = this.wq.enqueue::<Arc<Self>, ROUND_WORK>(this.into());
        ctx.forward_now(params::period());
        HrTimerRestart::Restart
    }
}

impl WorkItem<ROUND_WORK> for Shared {
    type Pointer = Arc<Self>;

    fn run(this: Arc<Self>) {
        Locked::new(&this).round_tick();
    }
}

impl Locked<'_> {
    /// The round work (C's `k2u_round_work()`).
    fn round_tick(&mut self) {
        if !self.testing || self.listener_gone() {
            return;
        }
        // A round closed by an ack whose work has not run yet counts first.
        // Taken together with the check below: a round that closes after
        // it still counts as outstanding here, so no round is published
        // while a closed one is not counted (the next close would
        // overwrite it).
        let (closed, outstanding) = {
            let mut ack = self.dev.ack.lock();
            (ack.closed.take(), ack.open.is_some())
        };
        self.round_count(closed);
        let log = self.round.log.check();
        if log && !params::back_to_back() {
            pr_info!("Timer handler called\n");
            pr_info!(
                "In handler: buffer_filled = {}, calculation_done = {}\n",
                u8::from(self.round.buffer_filled),
                u8::from(self.round.calculation_done)
            );
        }
        if outstanding {
            return; // The last round is still outstanding.
        }
        self.round_begin(log);
    }

    /// Fills the buffer and tells the listener. The control page gets the
    /// round's id (`ready_seq`) first; in adaptive mode a spinning listener
    /// sees it there and the doorbell is skipped.
    fn round_begin(&mut self, log: bool) {
        let dev = self.dev;
        if !self.has_room(Code::MemoryReady) {
            if self.round.skip_log.check() {
                pr_notice!("event queue full: round skipped\n");
            }
            // Back to back has no timer to try again: arm it.
            if params::back_to_back() && self.round.timer.is_none() {
                self.round.timer = Some(dev.clone().start(params::period()));
            }
            return;
        }
        if log {
            pr_info!("Start monitoring for efd2...\n");
        }
        dev.mem.fill(self);
        self.round.buffer_filled = true;
        self.round.calculation_done = false;
        self.round.log_round = log;
        self.rounds = self.rounds.wrapping_add(1);
        let id = self.rounds;
        // The round is open (and its time starts) before the listener can
        // see it. In adaptive mode the listener finds rounds on the control
        // page, spinning or in its re-check before it sleeps, and may ack
        // one before its record is read: there it is shown at once.
        let adaptive = params::adaptive();
        dev.ack.lock().publish(id, adaptive);
        let spinning = dev.mem.ctrl.publish_round(id);
        if adaptive && spinning {
            dev.mem.ctrl.count_skipped_doorbell();
        } else {
            self.post(Code::MemoryReady, id as u32);
        }
        if log {
            pr_info!("Buffer filled\n");
        }
    }

    /// START_TEST: reset the statistics and start the rounds.
    pub(crate) fn round_start(&mut self) {
        self.testing = true;
        self.round.buffer_filled = false;
        self.round.calculation_done = false;
        self.round.stats.reset();
        let dev = self.dev;
        if params::back_to_back() {
            let _ = dev.wq.enqueue::<Arc<Shared>, ROUND_WORK>(dev.clone());
        } else {
            self.round.timer = Some(dev.clone().start(params::period()));
        }
    }

    /// Stops the timer; a round closed but not counted yet is counted, a
    /// round still outstanding is abandoned (no later ack closes it).
    pub(crate) fn round_stop(&mut self) {
        if !self.testing {
            return;
        }
        // Dropping the handle cancels the timer and waits for its callback.
        self.round.timer = None;
        self.testing = false;
        let closed = {
            let mut ack = self.dev.ack.lock();
            ack.open = None;
            ack.closed.take()
        };
        self.round_count(closed);
        self.round.buffer_filled = false;
        self.round.calculation_done = false;
    }

    pub(crate) fn round_average(&self) -> u64 {
        self.round.stats.mean()
    }

    /// Counts a closed round's round trip `took` (ns), if any.
    fn round_count(&mut self, took: Option<u64>) -> bool {
        let Some(took) = took else {
            return false;
        };
        self.round.stats.add(took);
        self.round.calculation_done = true;
        if self.round.log_round {
            pr_info!("Time to copy = {}\n", took);
            pr_info!("Exit from __monitor_efd2\n");
        }
        true
    }

    /// An ack closed the round (efd2 callback or ack ioctl): count it and,
    /// back to back, start the next.
    pub(crate) fn round_acked(&mut self) {
        let closed = self.dev.ack.lock().closed.take();
        if self.round_count(closed) && self.testing && params::back_to_back() {
            let log = self.round.log.check();
            self.round_begin(log);
        }
    }

    /// `K2U_IOC_ACK` (`round` `None`) or `K2U_IOC_ACK_ROUND`.
    pub(crate) fn round_ack_ioctl(&mut self, round: Option<u32>) -> Result {
        if self.link.is_none() || self.listener_gone() {
            return Err(EPROTO);
        }
        self.dev.ack.lock().ack_ioctl(round)?;
        self.round_acked();
        Ok(())
    }
}
