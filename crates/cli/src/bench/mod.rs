//! `kern2usr bench`: round-trip latency and throughput of the ways a
//! buffer can get from the module to userspace, against a userspace-only
//! floor.
//!
//! | mechanism | notification | data | acknowledgement |
//! | --- | --- | --- | --- |
//! | `kern2usr` | efd doorbell (MEMORY_READY) | memcpy out of the mmap, checked | 7 on efd2 |
//! | `zero-copy` | efd doorbell | checked in place in the mmap | 7 on efd2 |
//! | `classic` | efd doorbell | `K2U_IOC_READ_BUFFER` (copy_to_user), checked | `K2U_IOC_ACK` |
//! | `adaptive` | spin on `ready_seq`, doorbell only when asleep | memcpy out of the mmap, checked | `ack_seq` on the control page, 7 on efd2 (the module sleeps) |
//! | `adaptive-poll` | as `adaptive` | as `adaptive` | `ack_seq`; the module polls it (`ack_poll_us`), efd2 only once it sleeps |
//! | `ring` | a ring of slots: spin on `ready_seq`, doorbell only when asleep | checked in place in the slot | `ack_seq` (the consumer index); efd2 only when the module waits for room |
//! | `floor` | a second thread's eventfd | memcpy of the same size, checked | the thread's second eventfd |
//! | `netlink` | a generic netlink message to our socket ([`peers`]) | recv(), checked | a netlink message back |
//! | `relay` | poll() on the mapped relay file ([`peers`]) | checked in place | the sequence written to a debugfs file |
//!
//! Every mechanism runs [`runner::Config::repeats`] times per size,
//! interleaved (repeat k runs them all, in an order rotated by k), so slow
//! phases of the emulated machine hit all of them alike; ratios are taken
//! within a repeat and reported as the median with the min-max spread
//! ([`summary`]).
//!
//! The peers (`netlink`, `relay`) run in `k2u_bench_peers.ko`, timed the
//! same way into the same buckets. Kernel mechanisms run with
//! `back_to_back=1`; the module measures each
//! round from signalling MEMORY_READY to consuming the ack (its `stats` and
//! `histogram`). The floor measures the same span on the initiating thread
//! with CLOCK_MONOTONIC into a [`Histogram`] with the same buckets, so every
//! percentile is read the same way (bucket low bound, see [`kern2usr::stats`]).
//! "Checked" means compared byte for byte with the fill pattern; a run
//! passes when it completed its rounds with byte-exact data.

pub mod cpu;
pub mod dump;
pub mod peers;
pub mod runner;
pub mod scaling;
pub mod summary;

use std::fmt::Write as _;
use std::time::Duration;

use kern2usr::stats::{format_ns, Bucket, Histogram, Stats};

/// One way of moving the buffer (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// Two userspace threads over two eventfds (the lower bound).
    Floor,
    /// efd doorbell, memcpy out of the mmap, ack on efd2.
    Kern2usr,
    /// efd doorbell, checked in place, ack on efd2.
    ZeroCopy,
    /// efd doorbell, `K2U_IOC_READ_BUFFER`, `K2U_IOC_ACK`.
    Classic,
    /// Spin on the control page, doorbell only when asleep; memcpy; ack
    /// through the control page.
    Adaptive,
    /// As [`Mechanism::Adaptive`], with the module polling for the ack
    /// (`ack_poll_us`).
    AdaptivePoll,
    /// A ring channel: slots checked in place, acks through `ack_seq`.
    Ring,
    /// Peer: a generic netlink message, acked by one back.
    Netlink,
    /// Peer: a relay channel's mapped sub-buffer, acked through debugfs.
    Relay,
}

impl Mechanism {
    /// Every mechanism, in the order they run and are shown.
    pub const ALL: [Mechanism; 9] = [
        Mechanism::Floor,
        Mechanism::Kern2usr,
        Mechanism::ZeroCopy,
        Mechanism::Classic,
        Mechanism::Adaptive,
        Mechanism::AdaptivePoll,
        Mechanism::Ring,
        Mechanism::Netlink,
        Mechanism::Relay,
    ];

    /// A peer, run by `k2u_bench_peers.ko` ([`peers`]), not by kern2usr.
    pub const fn is_peer(self) -> bool {
        matches!(self, Mechanism::Netlink | Mechanism::Relay)
    }

    /// Name in the table, the JSON and the plot (drawn on the host by
    /// `cargo xtask bench` from the JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Mechanism::Floor => "floor",
            Mechanism::Kern2usr => "kern2usr",
            Mechanism::ZeroCopy => "zero-copy",
            Mechanism::Classic => "classic",
            Mechanism::Adaptive => "adaptive",
            Mechanism::AdaptivePoll => "adaptive-poll",
            Mechanism::Ring => "ring",
            Mechanism::Netlink => "netlink",
            Mechanism::Relay => "relay",
        }
    }

    /// The mechanism called `name`.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Colour of its curve in the plot (`#rrggbb`).
    pub const fn colour(self) -> &'static str {
        match self {
            Mechanism::Floor => "#555555",
            Mechanism::Kern2usr => "#1f77b4",
            Mechanism::ZeroCopy => "#2ca02c",
            Mechanism::Classic => "#d62728",
            Mechanism::Adaptive => "#9467bd",
            Mechanism::AdaptivePoll => "#e377c2",
            Mechanism::Ring => "#17becf",
            Mechanism::Netlink => "#ff7f0e",
            Mechanism::Relay => "#8c564b",
        }
    }
}

/// Default rounds per repeat and size: over the default 5 repeats enough
/// for a p99 at 4 KiB, fewer for large buffers so that a TCG guest
/// finishes the whole benchmark in minutes.
pub fn default_rounds(size: usize) -> u64 {
    match size {
        0..=16_384 => 2000,
        16_385..=262_144 => 600,
        _ => 200,
    }
}

/// Default repeats of each mechanism at each size.
pub const DEFAULT_REPEATS: u32 = 5;

/// The result of one mechanism at one size.
#[derive(Clone, Debug)]
pub struct Run {
    /// Which mechanism.
    pub mechanism: Mechanism,
    /// Buffer size in bytes.
    pub size: usize,
    /// Rounds asked for.
    pub target: u64,
    /// Rounds completed (acknowledged).
    pub rounds: u64,
    /// From the first signal (START, or the floor's first round) to the
    /// last acknowledgement.
    pub wall: Duration,
    /// Round-trip times.
    pub hist: Histogram,
    /// The module's `stats` (kernel mechanisms).
    pub kernel_stats: Option<Stats>,
    /// Rounds whose data differed from the pattern.
    pub bad_rounds: u64,
    /// Adaptive: rounds whose doorbell the module skipped.
    pub doorbells_skipped: Option<u64>,
    /// Why the run did not complete, if it did not.
    pub error: Option<String>,
    /// Which repeat (0 and up) of the interleaved sequence it was.
    pub repeat: u32,
    /// Adaptive and ring runs: acks that needed a write to efd2 (the
    /// module slept on it); the other acks were a store to the page.
    pub efd2_writes: u64,
    /// CPU time the whole guest spent busy during the run (all CPUs:
    /// the listener, its spinning, the module's work and polling).
    pub cpu_busy: Option<Duration>,
}

impl Run {
    /// An empty run of `mechanism` at `size` (to fill in).
    pub fn new(mechanism: Mechanism, size: usize, target: u64) -> Self {
        Self {
            mechanism,
            size,
            target,
            rounds: 0,
            wall: Duration::ZERO,
            hist: Histogram::new(),
            kernel_stats: None,
            bad_rounds: 0,
            doorbells_skipped: None,
            error: None,
            repeat: 0,
            efd2_writes: 0,
            cpu_busy: None,
        }
    }

    /// Completed all its rounds with byte-exact data.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.rounds == self.target && self.bad_rounds == 0
    }

    /// Rounds per second of wall time.
    pub fn rounds_per_s(&self) -> f64 {
        per_second(self.rounds as f64, self.wall)
    }

    /// Gigabytes (10^9 bytes) per second of wall time.
    pub fn gb_per_s(&self) -> f64 {
        per_second(self.rounds as f64 * self.size as f64, self.wall) / 1e9
    }

    /// Median round trip (ns), read as described in [`kern2usr::stats`].
    pub fn p50(&self) -> u64 {
        self.hist.percentile(0.5)
    }

    /// 99th percentile (ns).
    pub fn p99(&self) -> u64 {
        self.hist.percentile(0.99)
    }

    /// Slowest round (ns).
    pub fn max(&self) -> u64 {
        self.hist.max()
    }

    /// Busy guest CPU time per completed round (ns).
    pub fn cpu_per_round(&self) -> Option<u64> {
        let busy = self.cpu_busy?;
        (self.rounds > 0).then(|| duration_ns(busy) / self.rounds)
    }
}

pub use kern2usr::device::ChannelPattern;

/// A histogram with the percentiles of `stats` (the module's figures of a
/// channel, whose buckets it does not export): ranks up to p50's hold p50,
/// up to p90's p90, and so on, the first min and the last max, so every
/// percentile the module gave reads back the same. For the plot and the
/// table, not a measurement of its own.
pub fn hist_from_stats(stats: &Stats) -> Histogram {
    let mut h = Histogram::new();
    let c = stats.count;
    if c == 0 {
        return h;
    }
    let rank = |q: f64| ((q * c as f64).ceil() as u64).clamp(1, c);
    let steps = [
        (1, stats.min),
        (rank(0.5), stats.p50),
        (rank(0.9), stats.p90),
        (rank(0.99), stats.p99),
        (rank(0.999), stats.p99_9),
        (c.saturating_sub(1), stats.max),
        (c, stats.max),
    ];
    let mut done = 0;
    for (upto, value) in steps {
        while done < upto {
            h.record(value);
            done += 1;
        }
    }
    h
}

/// `d` in ns, saturating.
pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn per_second(n: f64, wall: Duration) -> f64 {
    let s = wall.as_secs_f64();
    if s > 0.0 {
        n / s
    } else {
        0.0
    }
}

/// One entry of the `--json` file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JsonRun {
    /// Mechanism name.
    pub mechanism: String,
    /// Buffer size in bytes.
    pub size: usize,
    /// Rounds completed.
    pub rounds: u64,
    /// Median round trip (ns).
    pub p50_ns: u64,
    /// 99th percentile (ns).
    pub p99_ns: u64,
    /// Slowest round (ns).
    pub max_ns: u64,
    /// Rounds per second of wall time.
    pub rounds_per_s: f64,
    /// 10^9 bytes per second of wall time.
    pub gb_per_s: f64,
    /// p50 over the floor's p50 at the same size (null without a floor).
    pub p50_vs_floor: Option<f64>,
    /// Rounds asked for.
    #[serde(default)]
    pub target: u64,
    /// Completed all its rounds with byte-exact data.
    #[serde(default)]
    pub passed: bool,
    /// Why the run failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Fastest round (ns).
    #[serde(default)]
    pub min_ns: u64,
    /// Mean round trip (ns).
    #[serde(default)]
    pub mean_ns: u64,
    /// The round-trip histogram: its non-empty buckets (the ABI's
    /// log-linear buckets), from which the host draws the plot.
    #[serde(default)]
    pub histogram: Vec<JsonBucket>,
    /// Which repeat of the interleaved sequence (0 and up).
    #[serde(default)]
    pub repeat: u32,
    /// Busy guest CPU time per round (ns), all CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns_per_round: Option<u64>,
    /// Adaptive and ring runs: rounds whose doorbell the module skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doorbells_skipped: Option<u64>,
    /// Adaptive and ring runs: acks that needed a write to efd2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efd2_writes: Option<u64>,
}

/// One non-empty histogram bucket of a [`JsonRun`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JsonBucket {
    /// Smallest value of the bucket (ns).
    pub low: u64,
    /// First value past it (ns).
    pub high: u64,
    /// Rounds that fell into it.
    pub count: u64,
}

impl JsonRun {
    /// The mechanism, if the name is one this build knows.
    pub fn mechanism(&self) -> Option<Mechanism> {
        Mechanism::from_name(&self.mechanism)
    }

    /// The run's histogram rebuilt from [`JsonRun::histogram`] and its
    /// min, mean and max, so percentiles read the same as in the guest.
    /// `None` when the buckets do not add up to the rounds.
    pub fn hist(&self) -> Option<Histogram> {
        let buckets: Vec<Bucket> = self
            .histogram
            .iter()
            .map(|b| Bucket {
                low: b.low,
                high: b.high,
                count: b.count,
            })
            .collect();
        let count = buckets.iter().map(|b| b.count).sum();
        let stats = Stats {
            count,
            min: self.min_ns,
            mean: self.mean_ns,
            max: self.max_ns,
            ..Stats::default()
        };
        Histogram::from_kernel(&buckets, &stats).ok()
    }
}

/// The `--json` file.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JsonReport {
    /// Every run (every repeat), in the order they ran.
    pub runs: Vec<JsonRun>,
    /// Per size and mechanism: medians over the repeats and their spread.
    #[serde(default)]
    pub summary: Vec<summary::JsonSummary>,
    /// Aggregate figures with several channels at once.
    #[serde(default)]
    pub scaling: Vec<scaling::JsonScale>,
    /// The issue's targets, each met or missed.
    #[serde(default)]
    pub targets: Vec<summary::Target>,
}

impl JsonReport {
    /// One run per size and mechanism with the histograms of all its
    /// repeats merged (what the plot draws), in order of first appearance.
    pub fn merged(&self) -> Vec<JsonRun> {
        let mut out: Vec<JsonRun> = Vec::new();
        for r in &self.runs {
            match out
                .iter_mut()
                .find(|m| m.size == r.size && m.mechanism == r.mechanism)
            {
                Some(m) => m.absorb(r),
                None => out.push(r.clone()),
            }
        }
        for m in &mut out {
            if let Some(s) = self
                .summary
                .iter()
                .find(|s| s.size == m.size && s.mechanism == m.mechanism)
            {
                m.p50_vs_floor = s.p50_vs_floor.as_ref().map(|r| r.median);
            }
        }
        out
    }
}

impl JsonRun {
    /// Add another repeat of the same size and mechanism: rounds and
    /// buckets summed, min/max/mean over both; passed only if both did.
    fn absorb(&mut self, other: &JsonRun) {
        let (a, b) = (self.rounds as u128, other.rounds as u128);
        let sum = u128::from(self.mean_ns) * a + u128::from(other.mean_ns) * b;
        if let Some(mean) = sum.checked_div(a + b) {
            self.mean_ns = u64::try_from(mean).unwrap_or(u64::MAX);
        }
        self.min_ns = match (self.rounds, other.rounds) {
            (0, _) => other.min_ns,
            (_, 0) => self.min_ns,
            _ => self.min_ns.min(other.min_ns),
        };
        self.max_ns = self.max_ns.max(other.max_ns);
        self.rounds += other.rounds;
        self.target += other.target;
        self.passed &= other.passed;
        if self.error.is_none() {
            self.error.clone_from(&other.error);
        }
        for b in &other.histogram {
            match self.histogram.iter_mut().find(|x| x.low == b.low) {
                Some(x) => x.count += b.count,
                None => self.histogram.push(*b),
            }
        }
        self.histogram.sort_by_key(|b| b.low);
        if let Some(h) = self.hist() {
            self.p50_ns = h.percentile(0.5);
            self.p99_ns = h.percentile(0.99);
        }
    }
}

/// All runs of a benchmark.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// In the order they ran.
    pub runs: Vec<Run>,
    /// The several-channels runs, in the order they ran.
    pub scaling: Vec<scaling::ScaleRun>,
}

impl Report {
    /// The sizes, in order of first appearance.
    pub fn sizes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = Vec::new();
        for r in &self.runs {
            if !v.contains(&r.size) {
                v.push(r.size);
            }
        }
        v
    }

    /// The p50 of `mechanism` at `size` in repeat `repeat`, if it ran and
    /// measured something.
    pub fn p50_of(&self, mechanism: Mechanism, size: usize, repeat: u32) -> Option<u64> {
        self.runs
            .iter()
            .find(|r| {
                r.mechanism == mechanism
                    && r.size == size
                    && r.repeat == repeat
                    && r.hist.count() > 0
            })
            .map(Run::p50)
            .filter(|&p| p > 0)
    }

    /// The floor's p50 at `size` in repeat `repeat`.
    pub fn floor_p50(&self, size: usize, repeat: u32) -> Option<u64> {
        self.p50_of(Mechanism::Floor, size, repeat)
    }

    /// `run`'s p50 over the floor's at its size, in the same repeat.
    pub fn p50_vs_floor(&self, run: &Run) -> Option<f64> {
        let floor = self.floor_p50(run.size, run.repeat)?;
        (run.hist.count() > 0).then(|| run.p50() as f64 / floor as f64)
    }

    /// Runs that passed and failed (the scaling runs included).
    pub fn tally(&self) -> (usize, usize) {
        let passed = self.runs.iter().filter(|r| r.passed()).count()
            + self.scaling.iter().filter(|r| r.passed()).count();
        (passed, self.runs.len() + self.scaling.len() - passed)
    }

    /// The closing line: `bench: N passed, N failed`.
    pub fn closing_line(&self) -> String {
        let (p, f) = self.tally();
        format!("bench: {p} passed, {f} failed")
    }

    /// The `--json` contents.
    pub fn json(&self) -> JsonReport {
        JsonReport {
            summary: self.summary().iter().map(summary::Summary::json).collect(),
            scaling: scaling::json(&self.scaling),
            targets: self.targets(),
            runs: self
                .runs
                .iter()
                .map(|r| JsonRun {
                    mechanism: r.mechanism.name().to_owned(),
                    size: r.size,
                    rounds: r.rounds,
                    p50_ns: r.p50(),
                    p99_ns: r.p99(),
                    max_ns: r.max(),
                    rounds_per_s: round3(r.rounds_per_s()),
                    gb_per_s: round6(r.gb_per_s()),
                    p50_vs_floor: self.p50_vs_floor(r).map(round6),
                    target: r.target,
                    passed: r.passed(),
                    error: if r.bad_rounds > 0 {
                        Some(format!("{} round(s) with bad data", r.bad_rounds))
                    } else {
                        r.error.clone()
                    },
                    min_ns: r.hist.min(),
                    mean_ns: r.hist.mean(),
                    histogram: r
                        .hist
                        .buckets()
                        .iter()
                        .map(|b| JsonBucket {
                            low: b.low,
                            high: b.high,
                            count: b.count,
                        })
                        .collect(),
                    repeat: r.repeat,
                    cpu_ns_per_round: r.cpu_per_round(),
                    doorbells_skipped: r.doorbells_skipped,
                    efd2_writes: matches!(
                        r.mechanism,
                        Mechanism::Adaptive | Mechanism::AdaptivePoll | Mechanism::Ring
                    )
                    .then_some(r.efd2_writes),
                })
                .collect(),
        }
    }

    /// The `--json` text (pretty, with a final newline).
    pub fn json_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.json())
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        s.push('\n');
        s
    }

    /// One line per run (every repeat), as progress goes: the raw data
    /// behind [`Report::table`].
    pub fn runs_table(&self) -> String {
        let header = [
            "size",
            "mechanism",
            "repeat",
            "rounds",
            "rounds/s",
            "GB/s",
            "p50",
            "p99",
            "max",
            "p50/floor",
            "result",
        ];
        let rows: Vec<Vec<String>> = self
            .runs
            .iter()
            .map(|r| {
                let dash = |ok: bool, s: String| if ok { s } else { "-".to_owned() };
                let some = r.hist.count() > 0;
                vec![
                    format_size(r.size),
                    r.mechanism.name().to_owned(),
                    r.repeat.to_string(),
                    format!("{}/{}", r.rounds, r.target),
                    dash(r.rounds > 0, format!("{:.0}", r.rounds_per_s())),
                    dash(r.rounds > 0, format!("{:.3}", r.gb_per_s())),
                    dash(some, format_ns(r.p50())),
                    dash(some, format_ns(r.p99())),
                    dash(some, format_ns(r.max())),
                    self.p50_vs_floor(r)
                        .map_or_else(|| "-".to_owned(), format_ratio),
                    run_result(r),
                ]
            })
            .collect();
        render_table(&header, &rows, 2)
    }
}

/// `ok`, `ok (N doorbells skipped)` or `FAILED: why`.
pub fn run_result(r: &Run) -> String {
    if r.passed() {
        match (r.doorbells_skipped, r.mechanism) {
            (Some(n), Mechanism::Adaptive | Mechanism::AdaptivePoll | Mechanism::Ring) => format!(
                "ok ({n} doorbells skipped, {} of {} acks by efd2)",
                r.efd2_writes, r.rounds
            ),
            (Some(n), _) => format!("ok ({n} doorbells skipped)"),
            (None, _) => "ok".to_owned(),
        }
    } else if r.bad_rounds > 0 {
        format!("FAILED: {} round(s) with bad data", r.bad_rounds)
    } else {
        format!("FAILED: {}", r.error.as_deref().unwrap_or("incomplete"))
    }
}

/// A plain-text table: the first `text_columns` columns left-aligned,
/// the others right-aligned, the last one not padded.
pub fn render_table(header: &[&str], rows: &[Vec<String>], text_columns: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            if i == cells.len() - 1 {
                l.push_str(cell);
            } else if i < text_columns {
                let _ = write!(l, "{cell}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(l, "{}{cell}  ", " ".repeat(pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
    out
}

/// A ratio with at least two significant digits: `2.05`, `0.14`, `0.012`.
pub fn format_ratio(x: f64) -> String {
    if x >= 0.1 || x == 0.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// `4 KiB`, `64 KiB`, `1 MiB`, or bytes.
pub fn format_size(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// Parse `--sizes`: comma-separated byte counts, each a multiple of 4096
/// up to the module's maximum (`k`/`K` and `m`/`M` suffixes accepted).
pub fn parse_sizes(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (num, mult) = match part.char_indices().last() {
            Some((i, 'k' | 'K')) => (&part[..i], 1024),
            Some((i, 'm' | 'M')) => (&part[..i], 1 << 20),
            _ => (part, 1),
        };
        let n: usize = num
            .trim()
            .parse()
            .map_err(|_| format!("{part:?} is not a size in bytes"))?;
        let size = n
            .checked_mul(mult)
            .ok_or_else(|| format!("{part:?} is too large"))?;
        let max = kern2usr::abi::MAX_BUFFER_SIZE as usize;
        if size == 0 || size % 4096 != 0 || size > max {
            return Err(format!(
                "{part}: a buffer size must be a multiple of 4096 between 4096 and {max}"
            ));
        }
        out.push(size);
    }
    if out.is_empty() {
        return Err("no sizes given".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn run_with(mechanism: Mechanism, size: usize, values: &[u64], wall_ms: u64) -> Run {
        let mut r = Run::new(mechanism, size, values.len() as u64);
        for &v in values {
            r.hist.record(v);
        }
        r.rounds = values.len() as u64;
        r.wall = Duration::from_millis(wall_ms);
        r
    }

    pub(crate) fn sample_report() -> Report {
        let mut failed = run_with(Mechanism::Classic, 4096, &[30_000, 31_000], 10);
        failed.target = 3;
        failed.error = Some("round 3 stalled".to_owned());
        let mut adaptive = run_with(Mechanism::Adaptive, 4096, &[8_000, 9_000, 9_500], 3);
        adaptive.doorbells_skipped = Some(2);
        Report {
            runs: vec![
                run_with(Mechanism::Floor, 4096, &[10_000, 10_000, 12_000, 50_000], 4),
                run_with(
                    Mechanism::Kern2usr,
                    4096,
                    &[20_000, 20_000, 21_000, 90_000],
                    8,
                ),
                failed,
                adaptive,
                run_with(Mechanism::Floor, 1 << 20, &[300_000, 310_000], 1),
            ],
            scaling: Vec::new(),
        }
    }

    #[test]
    fn rates_and_ratios() {
        let rep = sample_report();
        let k = &rep.runs[1];
        assert_eq!(k.rounds_per_s(), 500.0);
        assert!((k.gb_per_s() - 4096.0 * 500.0 / 1e9).abs() < 1e-12);
        // Rank 2 of 4 is 10000, bucket [9984, 10240): its low bound,
        // clamped to min.
        assert_eq!(rep.floor_p50(4096, 0), Some(10_000));
        let ratio = rep.p50_vs_floor(k).unwrap_or_default();
        assert!((ratio - 2.0).abs() < 1e-9, "{ratio}");
        assert_eq!(rep.p50_vs_floor(&rep.runs[0]), Some(1.0));
        assert_eq!(rep.tally(), (4, 1));
        assert_eq!(rep.closing_line(), "bench: 4 passed, 1 failed");
        assert_eq!(rep.sizes(), [4096, 1 << 20]);
    }

    #[test]
    fn json_has_the_agreed_fields() -> anyhow::Result<()> {
        let rep = sample_report();
        let text = rep.json_text();
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let runs = v["runs"].as_array().cloned().unwrap_or_default();
        assert_eq!(runs.len(), 5);
        let first = runs[1].as_object().cloned().unwrap_or_default();
        let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "gb_per_s",
                "histogram",
                "max_ns",
                "mean_ns",
                "mechanism",
                "min_ns",
                "p50_ns",
                "p50_vs_floor",
                "p99_ns",
                "passed",
                "repeat",
                "rounds",
                "rounds_per_s",
                "size",
                "target"
            ]
        );
        assert_eq!(runs[2]["passed"], false);
        assert_eq!(runs[2]["error"], "round 3 stalled");
        // The buckets hold every round, and rebuild the same percentiles.
        let buckets = runs[1]["histogram"].as_array().cloned().unwrap_or_default();
        let total: u64 = buckets.iter().filter_map(|b| b["count"].as_u64()).sum();
        assert_eq!(total, 4);
        assert_eq!(runs[1]["mechanism"], "kern2usr");
        assert_eq!(runs[1]["p50_ns"], 20000);
        assert_eq!(runs[1]["max_ns"], 90000);
        assert_eq!(runs[1]["p50_vs_floor"], 2.0);
        let back: JsonReport = serde_json::from_str(&text)?;
        assert_eq!(back, rep.json());
        for (json, run) in back.runs.iter().zip(&rep.runs) {
            let hist = json.hist().unwrap_or_default();
            assert_eq!(hist.count(), run.hist.count());
            for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                assert_eq!(hist.percentile(q), run.hist.percentile(q), "{q}");
            }
            assert_eq!(json.mechanism(), Some(run.mechanism));
        }
        Ok(())
    }

    /// A JSON file of the older format (no histogram) still reads.
    #[test]
    fn older_json_reads_without_the_new_fields() -> anyhow::Result<()> {
        let text = r#"{"runs":[{"mechanism":"floor","size":4096,"rounds":2,"p50_ns":1,
            "p99_ns":2,"max_ns":3,"rounds_per_s":1.0,"gb_per_s":0.1,"p50_vs_floor":1.0}]}"#;
        let back: JsonReport = serde_json::from_str(text)?;
        assert!(back.runs[0].histogram.is_empty());
        assert_eq!(back.runs[0].hist().map(|h| h.count()), Some(0));
        Ok(())
    }

    #[test]
    fn table_shows_units_ratios_and_failures() {
        let text = sample_report().runs_table();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines[0].starts_with("size   mechanism"), "{text}");
        assert!(lines[2].contains("20.0 µs"), "{text}");
        assert!(lines[2].ends_with("2.00  ok"), "{text}");
        assert!(lines[3].contains("2/3"), "{text}");
        assert!(lines[3].ends_with("FAILED: round 3 stalled"), "{text}");
        assert!(
            lines[4].ends_with("ok (2 doorbells skipped, 0 of 3 acks by efd2)"),
            "{text}"
        );
        assert!(lines[5].starts_with("1 MiB"), "{text}");
    }

    #[test]
    fn the_channel_pattern_is_the_abi_s_byte_for_byte() {
        let p = ChannelPattern::new(1000);
        for (id, round) in [(1, 1), (7, 250), (40, 123_456_789), (u32::MAX, u64::MAX)] {
            let data: Vec<u8> = (0..1000)
                .map(|i| kern2usr::abi::channel_pattern_byte(id, round, i))
                .collect();
            assert!(p.matches(id, round, &data), "{id} {round}");
            let next = round.checked_add(1).unwrap_or(0);
            assert!(!p.matches(id, next, &data), "{id} {round}+1");
            let mut bad = data.clone();
            bad[999] ^= 1;
            assert!(!p.matches(id, round, &bad));
        }
        assert!(!p.matches(1, 1, &[0; 1001]), "longer than the pattern");
    }

    #[test]
    fn a_histogram_rebuilt_from_stats_reads_the_same_percentiles() {
        let mut real = Histogram::new();
        for i in 1..=1000u64 {
            real.record(i * 1000);
        }
        let stats = real.stats();
        let h = hist_from_stats(&stats);
        assert_eq!(h.count(), 1000);
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(h.percentile(q), real.percentile(q), "{q}");
        }
        assert_eq!((h.min(), h.max()), (real.min(), real.max()));
        assert_eq!(hist_from_stats(&Stats::default()).count(), 0);
    }

    #[test]
    fn bad_data_fails_a_run() {
        let mut r = run_with(Mechanism::ZeroCopy, 4096, &[1, 2], 1);
        assert!(r.passed());
        r.bad_rounds = 1;
        assert!(!r.passed());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(
            parse_sizes("4096,65536,1048576"),
            Ok(vec![4096, 65536, 1 << 20])
        );
        assert_eq!(parse_sizes("4k, 64K,1M"), Ok(vec![4096, 65536, 1 << 20]));
        for bad in ["", "100", "4097", "x", "32M", "0"] {
            assert!(parse_sizes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_sizes_and_names() {
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(100), "100 B");
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert!(default_rounds(4096) > default_rounds(1 << 20));
    }
}
