// SPDX-License-Identifier: GPL-2.0-only

//! Test rounds: a timer (or, with `back_to_back`, the last ack) starts a
//! round, which fills the buffer and signals MEMORY_READY; the listener's
//! acknowledgement closes it with its round-trip time.

use kernel::{
    impl_has_hr_timer,
    prelude::*,
    sync::{Arc, ArcBorrow},
    time::{
        hrtimer::{
            ArcHrTimerHandle, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer,
            HrTimerRestart, RelativeMode,
        },
        Instant, Monotonic,
    },
    workqueue::WorkItem,
};

use crate::abi::Code;
use crate::params;
use crate::state::{Locked, RateLimit, Shared, ROUND_WORK};
use crate::stats::Stats;

/// The current test (part of the state under the mutex).
pub(crate) struct Round {
    pub(crate) buffer_filled: bool,
    pub(crate) calculation_done: bool,
    /// This round's lines are not rate-limited away.
    log_round: bool,
    /// When the round was published.
    start: Option<Instant<Monotonic>>,
    pub(crate) stats: Stats,
    /// The running timer; dropping the handle cancels it.
    timer: Option<ArcHrTimerHandle<Shared>>,
    /// Per-round lines: every round at the seed's pace, at most 20 a second.
    log: RateLimit,
    skip_log: RateLimit,
    value_log: RateLimit,
}

impl Round {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            buffer_filled: false,
            calculation_done: false,
            log_round: false,
            start: None,
            stats: Stats::new()?,
            timer: None,
            log: RateLimit::new("k2u_round_work", 1000, 20),
            skip_log: RateLimit::new("k2u_round_begin", 5000, 10),
            value_log: RateLimit::new("k2u_round_ack", 5000, 10),
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
        if !self.testing {
            return;
        }
        let log = self.round.log.check();
        if log && !params::back_to_back() {
            pr_info!("Timer handler called\n");
            pr_info!(
                "In handler: buffer_filled = {}, calculation_done = {}\n",
                u8::from(self.round.buffer_filled),
                u8::from(self.round.calculation_done)
            );
        }
        if self.round.buffer_filled && !self.round.calculation_done {
            return; // The last round is still outstanding.
        }
        self.round_begin(log);
    }

    /// Fills the buffer and tells the listener. The control page gets the
    /// round's sequence number first; in adaptive mode a spinning listener
    /// sees it there and the doorbell is skipped.
    fn round_begin(&mut self, log: bool) {
        let dev = self.dev;
        if !self.has_room() {
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
        // A spinning listener may ack as soon as it sees the sequence.
        self.round_signalled();
        let spinning = dev.mem.ctrl.publish_round();
        if params::adaptive() && spinning {
            dev.mem.ctrl.count_skipped_doorbell();
        } else {
            self.post(Code::MemoryReady);
        }
        if log {
            pr_info!("Buffer filled\n");
        }
    }

    /// The round is published now: the round trip starts here.
    fn round_signalled(&mut self) {
        self.round.start = Some(Instant::now());
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

    /// Stops the timer; a round still outstanding is abandoned.
    pub(crate) fn round_stop(&mut self) {
        if !self.testing {
            return;
        }
        // Dropping the handle cancels the timer and waits for its callback.
        self.round.timer = None;
        self.testing = false;
        self.round.buffer_filled = false;
        self.round.calculation_done = false;
    }

    pub(crate) fn round_average(&self) -> u64 {
        self.round.stats.mean()
    }

    /// The listener acknowledged `value` at `at`. `EPROTO`: nothing to ack.
    pub(crate) fn round_ack(&mut self, value: u64, at: Instant<Monotonic>) -> Result {
        if value != u64::from(Code::MemoryCopied.value()) {
            if self.round.value_log.check() {
                pr_notice!("unexpected value {} on efd2 ignored\n", value);
            }
            return Err(EINVAL);
        }
        if !self.testing || !self.round.buffer_filled || self.round.calculation_done {
            return Err(EPROTO);
        }
        // C: `now_ns - round_start_ns` in u64 (a negative time wraps the same).
        let took = self
            .round
            .start
            .map_or(0, |start| (at - start).as_nanos() as u64);
        self.round.stats.add(took);
        self.round.calculation_done = true;
        if self.round.log_round {
            pr_info!("Time to copy = {}\n", took);
            pr_info!("Exit from __monitor_efd2\n");
        }
        if params::back_to_back() {
            let log = self.round.log.check();
            self.round_begin(log);
        }
        Ok(())
    }
}
