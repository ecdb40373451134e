//! The repeats of each mechanism folded into one row: medians with their
//! min-max spread, ratios taken within a repeat, and the targets,
//! each counted as met only when its whole spread clears it.

use std::fmt::Write as _;

use kern2usr::stats::{format_ns, Histogram};

use super::{format_ratio, format_size, render_table, Mechanism, Report, Run};

/// The median of some values and their range.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    /// Middle value (the mean of the two middle ones for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`; `None` when there are none (or a NaN).
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// `0.62 (0.58-0.71)`.
    pub fn ratio_text(&self) -> String {
        format!(
            "{} ({}-{})",
            format_ratio(self.median),
            format_ratio(self.min),
            format_ratio(self.max)
        )
    }
}

/// One size and mechanism over all its repeats.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Buffer size.
    pub size: usize,
    /// Mechanism.
    pub mechanism: Mechanism,
    /// Repeats run, and how many passed.
    pub repeats: usize,
    /// Repeats that completed with exact data.
    pub passed: usize,
    /// Rounds over all repeats.
    pub rounds: u64,
    /// Per-repeat p50 (ns).
    pub p50: Option<Spread>,
    /// Per-repeat rounds/s.
    pub rounds_per_s: Option<Spread>,
    /// Per-repeat GB/s.
    pub gb_per_s: Option<Spread>,
    /// Per-repeat p50 over the same repeat's floor p50.
    pub p50_vs_floor: Option<Spread>,
    /// All repeats' rounds in one histogram.
    pub merged: Histogram,
    /// Busy guest CPU per round over all repeats (ns).
    pub cpu_per_round: Option<u64>,
    /// Doorbells skipped over all repeats.
    pub doorbells_skipped: Option<u64>,
    /// Acks that needed a write to efd2, over all repeats.
    pub efd2_writes: u64,
    /// The first failure's reason.
    pub first_error: Option<String>,
}

/// [`Summary`] as it goes into the JSON.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JsonSummary {
    /// Mechanism name.
    pub mechanism: String,
    /// Buffer size in bytes.
    pub size: usize,
    /// Repeats run.
    pub repeats: usize,
    /// Repeats that passed.
    pub passed: usize,
    /// Rounds over all repeats.
    pub rounds: u64,
    /// Per-repeat p50 (ns).
    pub p50_ns: Option<Spread>,
    /// p99 of all repeats' rounds together (ns).
    pub p99_ns: u64,
    /// Per-repeat rounds/s.
    pub rounds_per_s: Option<Spread>,
    /// Per-repeat GB/s.
    pub gb_per_s: Option<Spread>,
    /// Per-repeat p50 over the floor's in the same repeat.
    pub p50_vs_floor: Option<Spread>,
    /// Busy guest CPU per round (ns), all repeats.
    pub cpu_ns_per_round: Option<u64>,
}

impl Summary {
    /// The JSON form.
    pub fn json(&self) -> JsonSummary {
        JsonSummary {
            mechanism: self.mechanism.name().to_owned(),
            size: self.size,
            repeats: self.repeats,
            passed: self.passed,
            rounds: self.rounds,
            p50_ns: self.p50,
            p99_ns: self.merged.percentile(0.99),
            rounds_per_s: self.rounds_per_s,
            gb_per_s: self.gb_per_s,
            p50_vs_floor: self.p50_vs_floor,
            cpu_ns_per_round: self.cpu_per_round,
        }
    }
}

/// A target of the issue, checked on the spread of its per-repeat ratio.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// What is aimed at, e.g. `kern2usr p50 < netlink p50 at 4 KiB`.
    pub name: String,
    /// Met (the whole spread clears the bound), missed, or `None` when a
    /// run it needs is missing or failed.
    pub met: Option<bool>,
    /// The per-repeat ratios.
    pub ratio: Option<Spread>,
    /// The bound the ratio must stay below (or above, with `at_least`).
    pub bound: f64,
    /// The ratio must be at least `bound` (else at most / below).
    pub at_least: bool,
}

impl Target {
    fn check(
        name: String,
        ratio: Option<Spread>,
        bound: f64,
        at_least: bool,
        strict: bool,
    ) -> Self {
        let met = ratio.map(|r| match (at_least, strict) {
            (true, _) => r.min >= bound,
            (false, true) => r.max < bound,
            (false, false) => r.max <= bound,
        });
        Self {
            name,
            met,
            ratio,
            bound,
            at_least,
        }
    }

    /// `met    kern2usr ... : 0.62 (0.58-0.71)`.
    pub fn line(&self) -> String {
        let verdict = match self.met {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "n/a   ",
        };
        let figure = self
            .ratio
            .map_or_else(|| "not measured".to_owned(), |r| r.ratio_text());
        format!("{verdict} {}: {figure}", self.name)
    }
}

/// Peers a driver author would pick instead (by name: they may be absent).
const PEERS: [&str; 3] = ["netlink", "relay", "classic"];
/// kern2usr's fastest modes.
const BEST_MODES: [&str; 4] = ["zero-copy", "ring", "adaptive", "adaptive-poll"];

impl Report {
    /// The repeats of each (size, mechanism), in order of first appearance.
    pub fn summary(&self) -> Vec<Summary> {
        let mut keys: Vec<(usize, Mechanism)> = Vec::new();
        for r in &self.runs {
            if !keys.contains(&(r.size, r.mechanism)) {
                keys.push((r.size, r.mechanism));
            }
        }
        keys.into_iter()
            .map(|(size, mechanism)| self.summarise(size, mechanism))
            .collect()
    }

    fn summarise(&self, size: usize, mechanism: Mechanism) -> Summary {
        let runs: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.size == size && r.mechanism == mechanism)
            .collect();
        let ok: Vec<&Run> = runs.iter().copied().filter(|r| r.passed()).collect();
        let spread =
            |f: &dyn Fn(&Run) -> f64| Spread::of(&ok.iter().map(|r| f(r)).collect::<Vec<_>>());
        let mut merged = Histogram::new();
        for r in &ok {
            merged.merge(&r.hist);
        }
        let rounds: u64 = ok.iter().map(|r| r.rounds).sum();
        let busy: Option<u64> = ok
            .iter()
            .map(|r| r.cpu_busy.map(super::duration_ns))
            .sum::<Option<u64>>();
        let ratios: Vec<f64> = ok.iter().filter_map(|r| self.p50_vs_floor(r)).collect();
        Summary {
            size,
            mechanism,
            repeats: runs.len(),
            passed: ok.len(),
            rounds,
            p50: spread(&|r| r.p50() as f64),
            rounds_per_s: spread(&|r| r.rounds_per_s()),
            gb_per_s: spread(&|r| r.gb_per_s()),
            p50_vs_floor: Spread::of(&ratios),
            merged,
            cpu_per_round: busy.filter(|_| rounds > 0).map(|b| b / rounds),
            doorbells_skipped: ok.iter().map(|r| r.doorbells_skipped).sum(),
            efd2_writes: ok.iter().map(|r| r.efd2_writes).sum(),
            first_error: runs
                .iter()
                .find(|r| !r.passed())
                .map(|r| super::run_result(r)),
        }
    }

    /// Per repeat, the smallest p50 among `names` at `size` (mechanisms
    /// that did not run or failed are left out; `None` if none ran).
    fn best_p50(&self, names: &[&str], size: usize, repeat: u32) -> Option<u64> {
        names
            .iter()
            .filter_map(|n| Mechanism::from_name(n))
            .filter_map(|m| {
                self.runs
                    .iter()
                    .find(|r| {
                        r.mechanism == m && r.size == size && r.repeat == repeat && r.passed()
                    })
                    .map(Run::p50)
            })
            .filter(|&p| p > 0)
            .min()
    }

    /// The repeats that ran at `size`.
    fn repeats_at(&self, size: usize) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .runs
            .iter()
            .filter(|r| r.size == size)
            .map(|r| r.repeat)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Per repeat at `size`: best p50 of `a` over best p50 of `b`.
    fn ratio_spread(&self, a: &[&str], b: &[&str], size: usize) -> Option<Spread> {
        let ratios: Vec<f64> = self
            .repeats_at(size)
            .into_iter()
            .filter_map(|k| {
                let (x, y) = (self.best_p50(a, size, k)?, self.best_p50(b, size, k)?);
                Some(x as f64 / y as f64)
            })
            .collect();
        Spread::of(&ratios)
    }

    /// Per repeat at `size`: GB/s of `a` over GB/s of the floor.
    fn throughput_vs_floor(&self, a: Mechanism, size: usize) -> Option<Spread> {
        let find = |m: Mechanism, k: u32| {
            self.runs
                .iter()
                .find(|r| r.mechanism == m && r.size == size && r.repeat == k && r.passed())
                .map(Run::gb_per_s)
                .filter(|&g| g > 0.0)
        };
        let ratios: Vec<f64> = self
            .repeats_at(size)
            .into_iter()
            .filter_map(|k| Some(find(a, k)? / find(Mechanism::Floor, k)?))
            .collect();
        Spread::of(&ratios)
    }

    /// The targets at the sizes that ran (only those whose
    /// mechanisms ran at all).
    pub fn targets(&self) -> Vec<Target> {
        let ran = |name: &str, size: usize| {
            Mechanism::from_name(name)
                .is_some_and(|m| self.runs.iter().any(|r| r.mechanism == m && r.size == size))
        };
        let mut out = Vec::new();
        for size in self.sizes() {
            let at = format_size(size);
            for peer in PEERS.into_iter().filter(|p| ran(p, size)) {
                if ran("kern2usr", size) {
                    out.push(Target::check(
                        format!("kern2usr p50 below {peer}'s at {at}"),
                        self.ratio_spread(&["kern2usr"], &[peer], size),
                        1.0,
                        false,
                        true,
                    ));
                }
            }
            let peers: Vec<&str> = PEERS.into_iter().filter(|p| ran(p, size)).collect();
            let modes: Vec<&str> = BEST_MODES.into_iter().filter(|m| ran(m, size)).collect();
            if !peers.is_empty() && !modes.is_empty() {
                let bound = if size >= 1 << 20 { 0.2 } else { 0.5 };
                out.push(Target::check(
                    format!(
                        "best of {} p50 <= {bound}x best of {} at {at}",
                        modes.join("/"),
                        peers.join("/")
                    ),
                    self.ratio_spread(&modes, &peers, size),
                    bound,
                    false,
                    false,
                ));
            }
            if size == 1 << 20 && ran("ring", size) && ran("floor", size) {
                out.push(Target::check(
                    format!("ring GB/s >= 0.8x the floor's at {at}"),
                    self.throughput_vs_floor(Mechanism::Ring, size),
                    0.8,
                    true,
                    false,
                ));
            }
            if size == 4096 && ran("floor", size) {
                let adaptive: Vec<&str> = ["adaptive", "adaptive-poll"]
                    .into_iter()
                    .filter(|m| ran(m, size))
                    .collect();
                if !adaptive.is_empty() {
                    out.push(Target::check(
                        format!(
                            "best of {} p50 <= 0.3x the floor at {at}",
                            adaptive.join("/")
                        ),
                        self.ratio_spread(&adaptive, &["floor"], size),
                        0.3,
                        false,
                        false,
                    ));
                }
            }
        }
        out
    }

    /// The table printed at the end: one row per size and mechanism
    /// (medians over the repeats, the p50 ratio with its spread), the
    /// several-channels rows, then the targets.
    pub fn table(&self) -> String {
        let header = [
            "size",
            "mechanism",
            "rounds",
            "rounds/s",
            "GB/s",
            "p50",
            "p99",
            "CPU/round",
            "p50/floor (spread)",
            "result",
        ];
        let dash = || "-".to_owned();
        let rows: Vec<Vec<String>> = self
            .summary()
            .iter()
            .map(|s| {
                let result = if s.passed == s.repeats {
                    match s.doorbells_skipped {
                        Some(n) => format!(
                            "ok {}/{} ({n} doorbells skipped, {} acks by efd2)",
                            s.passed, s.repeats, s.efd2_writes
                        ),
                        None => format!("ok {}/{}", s.passed, s.repeats),
                    }
                } else {
                    format!(
                        "FAILED {}/{}: {}",
                        s.repeats - s.passed,
                        s.repeats,
                        s.first_error.as_deref().unwrap_or("incomplete")
                    )
                };
                vec![
                    format_size(s.size),
                    s.mechanism.name().to_owned(),
                    s.rounds.to_string(),
                    s.rounds_per_s
                        .map_or_else(dash, |r| format!("{:.0}", r.median)),
                    s.gb_per_s.map_or_else(dash, |r| format!("{:.3}", r.median)),
                    s.p50.map_or_else(dash, |r| format_ns(r.median as u64)),
                    if s.merged.count() > 0 {
                        format_ns(s.merged.percentile(0.99))
                    } else {
                        dash()
                    },
                    s.cpu_per_round.map_or_else(dash, format_ns),
                    s.p50_vs_floor.map_or_else(dash, |r| r.ratio_text()),
                    result,
                ]
            })
            .collect();
        let mut out = render_table(&header, &rows, 2);
        if !self.scaling.is_empty() {
            out.push('\n');
            out.push_str(&super::scaling::table(&self.scaling));
        }
        let targets = self.targets();
        if !targets.is_empty() {
            out.push_str(
                "\ntargets (met only when the whole spread of the repeats clears the bound):\n",
            );
            for t in &targets {
                let _ = writeln!(out, "  {}", t.line());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(m: Mechanism, size: usize, repeat: u32, p50: u64, wall_ms: u64) -> Run {
        let mut r = Run::new(m, size, 3);
        for v in [p50, p50, p50 * 3] {
            r.hist.record(v);
        }
        r.rounds = 3;
        r.wall = Duration::from_millis(wall_ms);
        r.repeat = repeat;
        r.cpu_busy = Some(Duration::from_micros(300));
        r
    }

    fn report() -> Report {
        let mut runs = Vec::new();
        // Floor 10 µs; kern2usr 6, 8, 12 µs over three repeats; classic 9.
        for (k, kp50) in [(0, 6_000), (1, 8_000), (2, 12_000)] {
            runs.push(run(Mechanism::Floor, 4096, k, 10_000, 1));
            runs.push(run(Mechanism::Kern2usr, 4096, k, kp50, 1));
            runs.push(run(Mechanism::Classic, 4096, k, 9_000, 1));
            runs.push(run(Mechanism::Adaptive, 4096, k, 2_500, 1));
        }
        Report {
            runs,
            scaling: Vec::new(),
        }
    }

    #[test]
    fn spreads_are_medians_and_ranges() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap_or_else(|| panic!("values"));
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let e = Spread::of(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median);
        assert_eq!(e, Some(2.5));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
    }

    #[test]
    fn ratios_pair_runs_of_the_same_repeat() {
        let rep = report();
        let sums = rep.summary();
        let k = sums
            .iter()
            .find(|s| s.mechanism == Mechanism::Kern2usr)
            .unwrap_or_else(|| panic!("kern2usr row"));
        // Buckets read low by under 3 %.
        let r = k.p50_vs_floor.unwrap_or_else(|| panic!("ratio"));
        assert!((r.median - 0.8).abs() < 0.03, "{r:?}");
        assert!(
            (r.min - 0.6).abs() < 0.03 && (r.max - 1.2).abs() < 0.04,
            "{r:?}"
        );
        assert_eq!((k.repeats, k.passed, k.rounds), (3, 3, 9));
        assert_eq!(k.merged.count(), 9);
        // 3 x 300 µs over 9 rounds.
        assert_eq!(k.cpu_per_round, Some(100_000));
    }

    #[test]
    fn a_target_is_met_only_when_the_whole_spread_clears_it() {
        let rep = report();
        let targets = rep.targets();
        let by = |name: &str| {
            targets
                .iter()
                .find(|t| t.name == name)
                .cloned()
                .unwrap_or_else(|| panic!("no target {name:?} in {targets:?}"))
        };
        // kern2usr/classic: 0.67, 0.89, 1.33: the median clears 1, the
        // spread does not.
        let t = by("kern2usr p50 below classic's at 4 KiB");
        assert_eq!(t.met, Some(false), "{t:?}");
        assert!(t.ratio.is_some_and(|r| r.median < 1.0));
        // adaptive/classic 0.28 in every repeat.
        assert_eq!(
            by("best of adaptive p50 <= 0.5x best of classic at 4 KiB").met,
            Some(true)
        );
        assert_eq!(
            by("best of adaptive p50 <= 0.3x the floor at 4 KiB").met,
            Some(true)
        );
        assert!(targets.iter().all(|t| !t.name.contains("netlink")));
        let text = rep.table();
        // Each run's p50 is its min (clamped), so exact: 6, 8, 12 over 9.
        assert!(
            text.contains("MISSED kern2usr p50 below classic's at 4 KiB: 0.89 (0.67-1.33)"),
            "{text}"
        );
        assert!(text.contains("ok 3/3"), "{text}");
    }

    #[test]
    fn a_failed_repeat_is_left_out_of_the_figures_and_shown() {
        let mut rep = report();
        rep.runs[1].bad_rounds = 1;
        let k = rep
            .summary()
            .into_iter()
            .find(|s| s.mechanism == Mechanism::Kern2usr)
            .unwrap_or_else(|| panic!("row"));
        assert_eq!((k.repeats, k.passed), (3, 2));
        assert_eq!(k.p50.map(|p| p.n), Some(2));
        assert!(rep
            .table()
            .contains("FAILED 1/3: FAILED: 1 round(s) with bad data"));
    }
}
