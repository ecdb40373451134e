// SPDX-License-Identifier: GPL-2.0-only

//! Round-trip statistics: a log-linear histogram (the ABI's buckets, about
//! 3 % wide) plus count, min, max and sum; read through the `stats` and
//! `histogram` parameters.
//!
//! The figures sit under a spinlock of their own, shared by handles: the
//! round (under the channel's mutex) adds to them, and the readers (the
//! `channels` listing, the `stats` and `histogram` parameters) take only
//! that spinlock, so they never wait for the channel's mutex.

use kernel::{
    alloc::Flags,
    fmt, new_spinlock,
    prelude::*,
    sync::{Arc, SpinLock},
};

use crate::abi::{self, hist_bucket, hist_bucket_low, HIST_BUCKETS, STATS_KEYS};

/// Lines a page holds with room to spare; more buckets are merged.
const HIST_LINES: usize = 100;

/// Round-trip times of the current test: a handle on the figures (clones
/// share them).
#[derive(Clone)]
pub(crate) struct Stats(Arc<SpinLock<Figures>>);

impl Stats {
    pub(crate) fn new(gfp: Flags) -> Result<Self> {
        let figures = Figures {
            count: 0,
            total: 0,
            min: u64::MAX,
            max: 0,
            hist: KVec::from_elem(0, HIST_BUCKETS, gfp)?,
        };
        Ok(Self(Arc::pin_init(
            new_spinlock!(figures, "kern2usr::stats"),
            gfp,
        )?))
    }

    pub(crate) fn reset(&mut self) {
        self.0.lock().reset();
    }

    pub(crate) fn add(&mut self, ns: u64) {
        self.0.lock().add(ns);
    }

    /// Mean round trip, 0 before the first.
    pub(crate) fn mean(&self) -> u64 {
        self.0.lock().mean()
    }

    /// The figures of [`STATS_KEYS`], in that order (all 0 before the
    /// first round).
    pub(crate) fn values(&self) -> [u64; STATS_KEYS.len()] {
        self.0.lock().values()
    }

    /// The `stats` parameter: one `key value` line per [`STATS_KEYS`] entry.
    pub(crate) fn show(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let values = self.values();
        for (key, value) in STATS_KEYS.iter().zip(values) {
            f.write_fmt(fmt!("{} {}\n", key, value))?;
        }
        Ok(())
    }

    /// The `stats` parameter before the module exists: all zero.
    pub(crate) fn show_empty(f: &mut impl fmt::Write) -> fmt::Result {
        for key in STATS_KEYS {
            f.write_fmt(fmt!("{} 0\n", key))?;
        }
        Ok(())
    }

    /// The `histogram` parameter (under the spinlock: the output goes to
    /// the parameter's page, no sleeping).
    pub(crate) fn show_histogram(&self, f: &mut impl fmt::Write) -> fmt::Result {
        self.0.lock().show_histogram(f)
    }
}

/// The figures behind a [`Stats`], in nanoseconds.
struct Figures {
    count: u64,
    total: u64,
    min: u64,
    max: u64,
    hist: KVec<u64>,
}

impl Figures {
    fn reset(&mut self) {
        self.count = 0;
        self.total = 0;
        self.min = u64::MAX;
        self.max = 0;
        self.hist.iter_mut().for_each(|n| *n = 0);
    }

    fn add(&mut self, ns: u64) {
        if let Some(n) = self.hist.get_mut(hist_bucket(ns)) {
            *n += 1;
        }
        self.count += 1;
        self.total = self.total.wrapping_add(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Mean round trip, 0 before the first.
    fn mean(&self) -> u64 {
        self.total.checked_div(self.count).unwrap_or(0)
    }

    /// Low bound of the bucket holding the value of rank
    /// `ceil(count * permille / 1000)`, clamped to `[min, max]`.
    fn percentile(&self, permille: u64) -> u64 {
        let rank = (self.count.saturating_mul(permille).saturating_add(999) / 1000).max(1);
        let mut seen = 0u64;
        for (i, &n) in self.hist.iter().enumerate() {
            seen = seen.saturating_add(n);
            if seen >= rank {
                return hist_bucket_low(i).max(self.min).min(self.max);
            }
        }
        self.max
    }

    /// The figures of [`STATS_KEYS`], in that order (all 0 before the
    /// first round).
    fn values(&self) -> [u64; STATS_KEYS.len()] {
        if self.count == 0 {
            [0; STATS_KEYS.len()]
        } else {
            [
                self.count,
                self.min,
                self.mean(),
                self.percentile(500),
                self.percentile(900),
                self.percentile(990),
                self.percentile(999),
                self.max,
            ]
        }
    }

    /// The `histogram` parameter: `low high count` per non-empty bucket
    /// (high exclusive), neighbours merged beyond [`HIST_LINES`] lines.
    fn show_histogram(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let mut used = self.hist.iter().filter(|&&n| n != 0).count();
        let per_line = used.div_ceil(HIST_LINES).max(1);
        let (mut in_line, mut low, mut sum) = (0, 0, 0u64);
        for (i, &n) in self.hist.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if in_line == 0 {
                low = hist_bucket_low(i);
            }
            sum = sum.saturating_add(n);
            used -= 1;
            in_line += 1;
            if in_line < per_line && used != 0 {
                continue;
            }
            // The last bucket is open-ended: call it twice its low bound.
            let high = if i + 1 < HIST_BUCKETS {
                hist_bucket_low(i + 1)
            } else {
                2 * hist_bucket_low(i)
            };
            f.write_fmt(fmt!("{} {} {}\n", low, high, sum))?;
            in_line = 0;
            sum = 0;
        }
        Ok(())
    }
}

// The histogram's last bucket is the ABI's catch-all.
const _: () = assert!(hist_bucket(u64::MAX) == abi::HIST_BUCKETS - 1);
