//! Round-trip statistics: the module's `stats` and `histogram` parameters,
//! and a userspace [`Histogram`] with the very same buckets
//! ([`abi::hist_bucket`]) so that numbers measured in userspace (the
//! benchmark's floor) and in the kernel are comparable.
//!
//! # Percentiles
//!
//! A histogram only knows which bucket a value fell into, so every
//! percentile this module computes is **the low bound of the bucket that
//! holds the rank, clamped to `[min, max]`**, where the rank of quantile `q`
//! over `n` values is `ceil(q * n)` (at least 1): the q-th value in sorted
//! order. Buckets are at most 1/32 of their value wide (about 3 %), so a
//! percentile reads low by at most that much. `min`, `max` and `mean` are
//! exact.

use std::fmt::{self, Write as _};

use crate::abi::{self, hist_bucket, hist_bucket_low, param, HIST_BUCKETS, STATS_KEYS};
use crate::error::{Error, Result};

/// The `stats` parameter: round-trip times of the current (or last) test in
/// nanoseconds; `count` is the number of rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stats {
    /// Rounds measured.
    pub count: u64,
    /// Fastest round (ns).
    pub min: u64,
    /// Mean (ns).
    pub mean: u64,
    /// Median (ns).
    pub p50: u64,
    /// 90th percentile (ns).
    pub p90: u64,
    /// 99th percentile (ns).
    pub p99: u64,
    /// 99.9th percentile (ns).
    pub p99_9: u64,
    /// Slowest round (ns).
    pub max: u64,
}

impl Stats {
    /// The values in [`STATS_KEYS`] order.
    pub fn values(&self) -> [u64; 8] {
        [
            self.count, self.min, self.mean, self.p50, self.p90, self.p99, self.p99_9, self.max,
        ]
    }

    fn from_values(v: [u64; 8]) -> Self {
        Self {
            count: v[0],
            min: v[1],
            mean: v[2],
            p50: v[3],
            p90: v[4],
            p99: v[5],
            p99_9: v[6],
            max: v[7],
        }
    }

    /// Parse the `stats` parameter: exactly the [`STATS_KEYS`] in order, one
    /// `key value` line each (blank lines and surrounding blanks ignored).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |line: &str, expected: &'static str| Error::ParamValue {
            name: param::STATS.to_owned(),
            value: line.to_owned(),
            expected,
        };
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut values = [0u64; 8];
        for (i, key) in STATS_KEYS.iter().enumerate() {
            let line = lines.next().ok_or_else(|| {
                bad(
                    text.trim(),
                    "8 lines `key value` (count min mean p50 p90 p99 p99.9 max)",
                )
            })?;
            let mut words = line.split_whitespace();
            let (Some(k), Some(v), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad(line, "a line `key value`"));
            };
            if k != *key {
                return Err(bad(
                    line,
                    "the keys count min mean p50 p90 p99 p99.9 max, in this order",
                ));
            }
            values[i] = v
                .parse()
                .map_err(|_| bad(line, "a whole number of nanoseconds"))?;
        }
        if let Some(extra) = lines.next() {
            return Err(bad(extra, "nothing after the `max` line"));
        }
        Ok(Self::from_values(values))
    }

    /// Render as the module does: one `key value` line per key.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in STATS_KEYS.iter().zip(self.values()) {
            // Writing to a String cannot fail.
            let _ = writeln!(s, "{k} {v}");
        }
        s
    }
}

/// One non-empty histogram bucket: `count` values in `[low, high)` ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Smallest value of the bucket (ns).
    pub low: u64,
    /// First value past the bucket (ns, exclusive).
    pub high: u64,
    /// Values that fell into it.
    pub count: u64,
}

/// Parse the `histogram` parameter: one `low high count` line per
/// non-empty bucket (blank lines ignored). When many buckets are in use the
/// module merges neighbours into one line, so a line spans one or more of
/// the ABI's buckets: `low` and `high` must be bucket boundaries
/// ([`hist_bucket_low`]; the last, open-ended bucket reads `2 * low`), in
/// increasing order without overlap, each with a non-zero count.
pub fn parse_histogram(text: &str) -> Result<Vec<Bucket>> {
    let bad = |line: &str, expected: &'static str| Error::ParamValue {
        name: param::HISTOGRAM.to_owned(),
        value: line.to_owned(),
        expected,
    };
    let is_boundary = |v: u64| hist_bucket_low(hist_bucket(v)) == v;
    let last_low = hist_bucket_low(HIST_BUCKETS - 1);
    let mut out: Vec<Bucket> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let nums: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(line, "a line `low high count` of whole numbers"))?;
        let [low, high, count] = nums[..] else {
            return Err(bad(line, "a line `low high count` of whole numbers"));
        };
        let high_ok = high > low && (is_boundary(high) || high == 2 * last_low);
        if !is_boundary(low) || !high_ok {
            return Err(bad(
                line,
                "bucket boundaries of the ABI's histogram (abi::hist_bucket_low)",
            ));
        }
        if count == 0 {
            return Err(bad(line, "only non-empty buckets"));
        }
        if out.last().is_some_and(|b| b.high > low) {
            return Err(bad(line, "buckets in increasing order, not overlapping"));
        }
        out.push(Bucket { low, high, count });
    }
    Ok(out)
}

/// Render buckets as the module does: one `low high count` line each.
pub fn render_histogram(buckets: &[Bucket]) -> String {
    let mut s = String::new();
    for b in buckets {
        let _ = writeln!(s, "{} {} {}", b.low, b.high, b.count);
    }
    s
}

/// Exclusive upper bound of bucket `index`: the next bucket's low bound;
/// for the last, open-ended bucket twice its low bound, as the module
/// prints it.
pub fn bucket_high(index: usize) -> u64 {
    if index + 1 >= HIST_BUCKETS {
        2 * hist_bucket_low(index)
    } else {
        hist_bucket_low(index + 1)
    }
}

/// Round-trip times in the ABI's log-linear buckets, with exact count,
/// sum, min and max. See the module documentation for how percentiles are
/// read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    /// Bucket index ranges `[first, end)` of the module's lines, when it
    /// merged neighbours (empty for a histogram recorded here).
    spans: Vec<(usize, usize)>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; HIST_BUCKETS],
            spans: Vec::new(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Add one value (ns).
    pub fn record(&mut self, ns: u64) {
        self.counts[hist_bucket(ns)] += 1;
        self.count += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// The module's histogram: its buckets, with the exact min, max and
    /// mean from its `stats`. A line that merges several buckets counts in
    /// its first. Fails if the buckets do not add up to `stats.count`.
    pub fn from_kernel(buckets: &[Bucket], stats: &Stats) -> Result<Self> {
        let mut h = Self::new();
        for b in buckets {
            let first = hist_bucket(b.low);
            h.counts[first] += b.count;
            h.count += b.count;
            h.spans.push((first, hist_bucket(b.high - 1) + 1));
        }
        if h.count != stats.count {
            return Err(Error::ParamValue {
                name: param::HISTOGRAM.to_owned(),
                value: format!("{} values in the buckets", h.count),
                expected: "buckets that add up to the `count` of stats",
            });
        }
        if h.count > 0 {
            h.min = stats.min;
            h.max = stats.max;
            h.sum = u128::from(stats.mean) * u128::from(stats.count);
        }
        Ok(h)
    }

    /// Add every value of `other` (repeats of one measurement read as
    /// one): counts, sum, min and max combine exactly.
    ///
    /// ```
    /// use kern2usr::Histogram;
    /// let (mut a, mut b) = (Histogram::new(), Histogram::new());
    /// a.record(1_000);
    /// b.record(3_000);
    /// a.merge(&b);
    /// assert_eq!((a.count(), a.min(), a.max(), a.mean()), (2, 1_000, 3_000, 2_000));
    /// ```
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.spans.extend_from_slice(&other.spans);
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest value (0 when empty).
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest value (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean, rounded down (0 when empty).
    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            u64::try_from(self.sum / u128::from(self.count)).unwrap_or(u64::MAX)
        }
    }

    /// Bucket index holding the value of rank `rank` (1-based), if any.
    fn bucket_of_rank(&self, rank: u64) -> Option<usize> {
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if c > 0 && seen >= rank {
                return Some(i);
            }
        }
        None
    }

    /// The rank of quantile `q` (0..=1): `ceil(q * count)`, at least 1.
    pub fn rank(&self, q: f64) -> u64 {
        let r = (q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64;
        r.clamp(1, self.count.max(1))
    }

    /// Quantile `q` (0.5 = median): the low bound of the bucket holding
    /// its rank, clamped to `[min, max]`; 0 when empty.
    pub fn percentile(&self, q: f64) -> u64 {
        match self.bucket_of_rank(self.rank(q)) {
            Some(i) => hist_bucket_low(i).clamp(self.min(), self.max()),
            None => 0,
        }
    }

    /// Values in buckets strictly below and up to (including) the bucket
    /// of `ns`: a percentile of `ns` is consistent with this histogram when
    /// its rank lies in `below + 1 ..= through`.
    /// For the module's histogram the "bucket" is the line holding `ns`
    /// (lines may merge neighbouring buckets).
    pub fn ranks_of_bucket(&self, ns: u64) -> (u64, u64) {
        let i = hist_bucket(ns);
        let (first, end) = self
            .spans
            .iter()
            .copied()
            .find(|&(first, end)| first <= i && i < end)
            .unwrap_or((i, i + 1));
        let below: u64 = self.counts[..first].iter().sum();
        (below, below + self.counts[first..end].iter().sum::<u64>())
    }

    /// Count, min, mean, p50/90/99/99.9 and max, as the module reports them.
    pub fn stats(&self) -> Stats {
        Stats {
            count: self.count,
            min: self.min(),
            mean: self.mean(),
            p50: self.percentile(0.5),
            p90: self.percentile(0.9),
            p99: self.percentile(0.99),
            p99_9: self.percentile(0.999),
            max: self.max(),
        }
    }

    /// The non-empty buckets, in order.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &count)| Bucket {
                low: hist_bucket_low(i),
                high: bucket_high(i),
                count,
            })
            .collect()
    }

    /// Points of the cumulative distribution: `(ns, fraction <= ns)` at the
    /// start (min, 0) and at the end of each non-empty bucket (clamped to
    /// max), ending at (max, 1). Empty when no value was recorded.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        if self.count == 0 {
            return Vec::new();
        }
        let mut pts = vec![(self.min(), 0.0)];
        let mut seen = 0u64;
        for b in self.buckets() {
            seen += b.count;
            let x = b.high.saturating_sub(1).clamp(self.min(), self.max());
            pts.push((x, seen as f64 / self.count as f64));
        }
        pts
    }
}

/// `850 ns`, `12.3 µs`, `4.56 ms`, `1.20 s`: three significant digits.
pub fn format_ns(ns: u64) -> String {
    let three = |v: f64, unit: &str| {
        if v >= 100.0 {
            format!("{v:.0} {unit}")
        } else if v >= 10.0 {
            format!("{v:.1} {unit}")
        } else {
            format!("{v:.2} {unit}")
        }
    };
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 999_500 {
        three(v / 1e3, "µs")
    } else if ns < 999_500_000 {
        three(v / 1e6, "ms")
    } else {
        three(v / 1e9, "s")
    }
}

/// The summary `kern2usr stats` prints: one `name value` line per
/// statistic, with units.
pub fn render_summary(s: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "count  {}", s.count);
    for (name, v) in [
        ("min", s.min),
        ("mean", s.mean),
        ("p50", s.p50),
        ("p90", s.p90),
        ("p99", s.p99),
        ("p99.9", s.p99_9),
        ("max", s.max),
    ] {
        let _ = writeln!(out, "{name:<6} {}", format_ns(v));
    }
    out
}

/// One row of the terminal chart: buckets `[low, high)` merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// Low bound (ns).
    pub low: u64,
    /// Exclusive high bound (ns).
    pub high: u64,
    /// Values in the row.
    pub count: u64,
}

/// Merge `buckets` into at most about `rows` rows of equal width on a log
/// scale (bucket-aligned), covering the first to the last non-empty bucket;
/// rows in between may be empty. With few enough buckets, one row each.
pub fn chart_rows(buckets: &[Bucket], rows: usize) -> Vec<Row> {
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return Vec::new();
    };
    let rows = rows.max(1);
    let first_i = hist_bucket(first.low);
    let last_i = hist_bucket(last.low);
    // Row edges, as bucket indices: each row is [edge[k], edge[k+1]).
    let mut edges: Vec<usize> = Vec::new();
    if last_i - first_i < rows {
        edges.extend(first_i..=last_i + 1);
    } else {
        let lo = (first.low.max(1)) as f64;
        let hi = (last.high.max(2)) as f64;
        for k in 0..=rows {
            let v = lo * (hi / lo).powf(k as f64 / rows as f64);
            let i = hist_bucket(v as u64).clamp(first_i, last_i + 1);
            if edges.last() != Some(&i) {
                edges.push(i);
            }
        }
        if edges.last() != Some(&(last_i + 1)) {
            edges.push(last_i + 1);
        }
    }
    edges
        .windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let count = buckets
                .iter()
                .filter(|bk| (a..b).contains(&hist_bucket(bk.low)))
                .map(|bk| bk.count)
                .sum();
            Row {
                low: hist_bucket_low(a),
                high: hist_bucket_low(b),
                count,
            }
        })
        .collect()
}

/// Horizontal bars, one per row of [`chart_rows`]: `low – high | ███ count`,
/// bar lengths scaled so the fullest row is `width` characters.
pub fn render_chart(buckets: &[Bucket], rows: usize, width: usize) -> String {
    let rows = chart_rows(buckets, rows);
    let max = rows.iter().map(|r| r.count).max().unwrap_or(0);
    let labels: Vec<(String, String)> = rows
        .iter()
        .map(|r| (format_ns(r.low), format_ns(r.high)))
        .collect();
    let wl = labels
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let wh = labels
        .iter()
        .map(|(_, h)| h.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (r, (l, h)) in rows.iter().zip(&labels) {
        let len = if max == 0 || r.count == 0 {
            0
        } else {
            ((r.count as f64 / max as f64) * width as f64)
                .round()
                .max(1.0) as usize
        };
        let _ = writeln!(
            out,
            "{l:>wl$} - {h:<wh$} |{} {}",
            "█".repeat(len),
            r.count,
            wl = wl,
            wh = wh
        );
    }
    out
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "count {} min {} mean {} p50 {} p90 {} p99 {} p99.9 {} max {}",
            self.count,
            format_ns(self.min),
            format_ns(self.mean),
            format_ns(self.p50),
            format_ns(self.p90),
            format_ns(self.p99),
            format_ns(self.p99_9),
            format_ns(self.max)
        )
    }
}

/// Bucket bounds as the module prints them, for tests and docs.
pub fn abi_bucket(ns: u64) -> (u64, u64) {
    let i = abi::hist_bucket(ns);
    (hist_bucket_low(i), bucket_high(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_STATS: &str =
        "count 5\nmin 1000\nmean 2600\np50 2000\np90 5000\np99 5000\np99.9 5000\nmax 5000\n";

    #[test]
    fn parses_stats_in_key_order() -> Result<()> {
        let s = Stats::parse(SAMPLE_STATS)?;
        assert_eq!(
            s,
            Stats {
                count: 5,
                min: 1000,
                mean: 2600,
                p50: 2000,
                p90: 5000,
                p99: 5000,
                p99_9: 5000,
                max: 5000
            }
        );
        assert_eq!(s.render(), SAMPLE_STATS);
        assert_eq!(Stats::parse(&format!("\n  {SAMPLE_STATS}  \n"))?, s);
        Ok(())
    }

    #[test]
    fn rejects_malformed_stats() {
        let swapped = SAMPLE_STATS.replace("min 1000\nmean 2600", "mean 2600\nmin 1000");
        for bad in [
            "",
            "count 5\n",
            &swapped,
            &SAMPLE_STATS.replace("p50 2000", "p50 2us"),
            &SAMPLE_STATS.replace("p50 2000", "p50 2000 ns"),
            &format!("{SAMPLE_STATS}extra 1\n"),
        ] {
            let e = Stats::parse(bad).err();
            assert!(
                matches!(e, Some(Error::ParamValue { ref name, .. }) if name == "stats"),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn parses_the_module_histogram() -> Result<()> {
        // 1000 ns is bucket [992, 1008) (16-wide); 5000 is [4992, 5120).
        let (l1, h1) = abi_bucket(1000);
        let (l2, h2) = abi_bucket(5000);
        assert_eq!((l1, h1), (992, 1008));
        assert_eq!((l2, h2), (4992, 5120));
        let text = format!("{l1} {h1} 3\n{l2} {h2} 2\n");
        let b = parse_histogram(&text)?;
        assert_eq!(
            b,
            [
                Bucket {
                    low: 992,
                    high: 1008,
                    count: 3
                },
                Bucket {
                    low: 4992,
                    high: 5120,
                    count: 2
                }
            ]
        );
        assert_eq!(render_histogram(&b), text);
        assert_eq!(parse_histogram("")?, []);
        Ok(())
    }

    #[test]
    fn rejects_histogram_lines_that_are_no_abi_bucket() {
        for bad in [
            "992 1008",
            "992 1008 3 4",
            "1000 1008 3",
            "992 1020 3",
            "992 992 3",
            "992 1008 0",
            "4992 5120 1\n992 1008 1",
            "992 1008 1\n992 1008 1",
            "992 1024 1\n1008 1024 1",
            "a b c",
        ] {
            assert!(parse_histogram(bad).is_err(), "{bad:?}");
        }
    }

    /// More than 100 buckets in use: the module merges neighbours, and
    /// the last, open-ended bucket reads twice its low bound.
    #[test]
    fn accepts_merged_lines_and_the_open_ended_bucket() -> Result<()> {
        let last = hist_bucket_low(HIST_BUCKETS - 1);
        let text = format!("992 1024 5\n1024 4992 2\n{last} {} 1\n", 2 * last);
        let b = parse_histogram(&text)?;
        assert_eq!(b.len(), 3);
        assert_eq!(
            b[1],
            Bucket {
                low: 1024,
                high: 4992,
                count: 2
            }
        );
        let stats = Stats {
            count: 8,
            min: 995,
            mean: 1 << 39,
            p50: 992,
            p90: 1024,
            p99: last,
            p99_9: last,
            max: u64::MAX / 2,
        };
        let h = Histogram::from_kernel(&b, &stats)?;
        assert_eq!(h.percentile(0.5), 995, "clamped to min");
        assert_eq!(h.percentile(0.75), 1024);
        assert_eq!(h.percentile(1.0), last);
        assert_eq!(bucket_high(HIST_BUCKETS - 1), 2 * last);
        Ok(())
    }

    #[test]
    fn small_values_have_exact_buckets_and_large_ones_three_percent() {
        for ns in 0..32 {
            assert_eq!(abi_bucket(ns), (ns, ns + 1));
        }
        for ns in [33u64, 1000, 4096, 123_456, 10_000_000, 1 << 39] {
            let (l, h) = abi_bucket(ns);
            assert!(l <= ns && ns < h, "{ns} in [{l}, {h})");
            assert!((h - l) * 32 <= l, "{ns}: bucket [{l}, {h}) wider than 1/32");
        }
    }

    #[test]
    fn percentiles_are_bucket_low_bounds_clamped_to_min_max() {
        let mut h = Histogram::new();
        assert_eq!(h.stats(), Stats::default());
        for ns in [1000u64, 1001, 1002, 2000, 5000] {
            h.record(ns);
        }
        let s = h.stats();
        assert_eq!(s.count, 5);
        assert_eq!(s.min, 1000);
        assert_eq!(s.max, 5000);
        assert_eq!(s.mean, 2000);
        // Rank ceil(0.5*5) = 3: 1002, bucket [992, 1008), clamped to min.
        assert_eq!(s.p50, 1000);
        // Rank 5: 5000 in [4992, 5120): low 4992.
        assert_eq!(s.p90, 4992);
        assert_eq!(s.p99_9, 4992);
        // Clamping: a single value reads exactly.
        let mut one = Histogram::new();
        one.record(5000);
        assert_eq!(one.percentile(0.5), 5000);
        assert_eq!(one.stats().p99, 5000);
    }

    #[test]
    fn rank_is_ceil_of_q_times_n() {
        let mut h = Histogram::new();
        for ns in 1..=1000 {
            h.record(ns);
        }
        assert_eq!(h.rank(0.5), 500);
        assert_eq!(h.rank(0.999), 999);
        assert_eq!(h.rank(0.0), 1);
        assert_eq!(h.rank(1.0), 1000);
        let (below, through) = h.ranks_of_bucket(h.percentile(0.5));
        assert!(below < 500 && 500 <= through);
    }

    #[test]
    fn kernel_histogram_round_trips_through_the_userspace_one() -> Result<()> {
        let mut h = Histogram::new();
        for ns in [1000u64, 1001, 1002, 2000, 5000] {
            h.record(ns);
        }
        let text = render_histogram(&h.buckets());
        let stats = h.stats();
        let k = Histogram::from_kernel(&parse_histogram(&text)?, &stats)?;
        assert_eq!(k.stats(), stats);
        let wrong = Stats { count: 6, ..stats };
        assert!(Histogram::from_kernel(&k.buckets(), &wrong).is_err());
        Ok(())
    }

    #[test]
    fn cdf_ends_at_max_and_one() {
        let mut h = Histogram::new();
        for ns in [100u64, 200, 300, 400] {
            h.record(ns);
        }
        let c = h.cdf();
        assert_eq!(c.first(), Some(&(100, 0.0)));
        assert_eq!(c.last(), Some(&(400, 1.0)));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!(Histogram::new().cdf().is_empty());
    }

    #[test]
    fn formats_with_units() {
        assert_eq!(format_ns(0), "0 ns");
        assert_eq!(format_ns(999), "999 ns");
        assert_eq!(format_ns(1_000), "1.00 µs");
        assert_eq!(format_ns(12_345), "12.3 µs");
        assert_eq!(format_ns(123_456), "123 µs");
        assert_eq!(format_ns(999_999), "1.00 ms");
        assert_eq!(format_ns(4_560_000), "4.56 ms");
        assert_eq!(format_ns(1_200_000_000), "1.20 s");
    }

    #[test]
    fn chart_merges_into_about_twenty_log_rows() {
        let mut h = Histogram::new();
        for ns in (0..2000).map(|i| 1_000 + i * 997) {
            h.record(ns);
        }
        let b = h.buckets();
        assert!(b.len() > 20);
        let rows = chart_rows(&b, 20);
        assert!((10..=21).contains(&rows.len()), "{} rows", rows.len());
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 2000);
        assert!(rows.windows(2).all(|w| w[0].high == w[1].low));
        assert_eq!(rows[0].low, b[0].low);
        assert_eq!(rows.last().map(|r| r.high), b.last().map(|b| b.high));
        let text = render_chart(&b, 20, 40);
        assert_eq!(text.lines().count(), rows.len());
        let longest = text
            .lines()
            .map(|l| l.chars().filter(|&c| c == '█').count())
            .max();
        assert_eq!(longest, Some(40));
    }

    #[test]
    fn chart_of_few_buckets_has_a_row_per_bucket_with_gaps() {
        let mut h = Histogram::new();
        h.record(10);
        h.record(10);
        h.record(13);
        let rows = chart_rows(&h.buckets(), 20);
        assert_eq!(
            rows.iter().map(|r| (r.low, r.count)).collect::<Vec<_>>(),
            [(10, 2), (11, 0), (12, 0), (13, 1)]
        );
        let text = render_chart(&h.buckets(), 20, 10);
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(first, "10 ns - 11 ns |██████████ 2");
        assert!(render_chart(&[], 20, 10).is_empty());
    }

    #[test]
    fn summary_has_units() {
        let s = Stats::parse(SAMPLE_STATS).unwrap_or_default();
        let text = render_summary(&s);
        assert!(text.starts_with("count  5\nmin    1.00 µs\n"), "{text}");
        assert!(text.contains("p99.9  5.00 µs\n"), "{text}");
    }
}

#[cfg(test)]
mod merged_line_tests {
    use super::*;

    #[test]
    fn a_value_inside_a_merged_line_has_that_lines_ranks() {
        // Line 1: one bucket [1000, 1024) x 3; line 2 merges buckets from
        // 2048 up to 4096 x 5: a percentile of 3000 lies in line 2.
        let buckets = [
            Bucket {
                low: 992,
                high: 1024,
                count: 3,
            },
            Bucket {
                low: 2048,
                high: 4096,
                count: 5,
            },
        ];
        let stats = Stats {
            count: 8,
            min: 1000,
            mean: 2500,
            max: 4000,
            ..Stats::default()
        };
        let h = Histogram::from_kernel(&buckets, &stats).expect("consistent");
        assert_eq!(h.ranks_of_bucket(3000), (3, 8));
        assert_eq!(h.ranks_of_bucket(1000), (0, 3));
    }
}
