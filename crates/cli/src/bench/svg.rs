//! The `--plot` SVG: one panel per buffer size, the latency distribution
//! of each mechanism as a percentile curve: round-trip time on a log scale
//! (x) against the percentile on a "nines" scale (y = -log10(1 - q): p50,
//! p90, p99, p99.9 evenly spaced), so the tail is as visible as the body.
//! Percentiles are read from the histograms as everywhere else (bucket low
//! bounds). Written by hand: no plotting dependency.

use std::fmt::Write as _;

use super::{format_ratio, format_size, Report, Run};
use kern2usr::stats::format_ns;

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 45.0;
const TITLE_H: f64 = 40.0;
/// The x axis ends at most this many times past the largest p99.9, so one
/// absurd outlier does not squash every curve into a corner.
const OUTLIER_SPAN: u64 = 100;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Decades `[10^a, 10^b]` covering `lo..=hi` (ns, at least 1).
fn decades(lo: u64, hi: u64) -> (i32, i32) {
    let a = (lo.max(1) as f64).log10().floor() as i32;
    let b = (hi.max(1) as f64).log10().ceil() as i32;
    (a, b.max(a + 1))
}

/// `1 µs`, `10 ms`: the label of 10^d ns.
fn decade_label(d: i32) -> String {
    let (unit, base) = match d {
        i32::MIN..=2 => ("ns", 0),
        3..=5 => ("µs", 3),
        6..=8 => ("ms", 6),
        _ => ("s", 9),
    };
    format!("{} {unit}", 10u64.saturating_pow((d - base).max(0) as u32))
}

/// The nines of quantile `q`: `-log10(1 - q)`.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-12).log10()
}

/// Points `(ns, nines)` of a run's percentile curve, up to its last rank.
fn curve(run: &Run) -> Vec<(u64, f64)> {
    let n = run.hist.count();
    if n == 0 {
        return Vec::new();
    }
    let top = (n as f64).log10();
    let mut pts = Vec::new();
    let mut y = 0.0;
    while y < top {
        let q = 1.0 - 10f64.powf(-y);
        pts.push((run.hist.percentile(q), y));
        y += 0.01;
    }
    pts.push((run.hist.percentile(1.0), top));
    pts.push((run.hist.max(), top));
    pts
}

/// Render the report's distributions.
pub fn render(report: &Report) -> String {
    let sizes = report.sizes();
    let panel_total = TOP + PANEL_H + BOTTOM;
    let height = TITLE_H + panel_total * sizes.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="16">kern2usr bench: round trip (signal to ack) by percentile</text>"#,
        WIDTH / 2.0
    );
    for (i, &size) in sizes.iter().enumerate() {
        let y0 = TITLE_H + panel_total * i as f64;
        let runs: Vec<&Run> = report
            .runs
            .iter()
            .filter(|r| r.size == size && r.hist.count() > 0)
            .collect();
        panel(&mut s, report, size, &runs, y0);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, report: &Report, size: usize, runs: &[&Run], y0: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let (top, bottom) = (y0 + TOP, y0 + TOP + PANEL_H);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y0 + TOP - 10.0,
        esc(&format_size(size))
    );
    let lo = runs.iter().map(|r| r.hist.min()).min().unwrap_or(1_000);
    let hi = runs.iter().map(|r| r.hist.max()).max().unwrap_or(1_000_000);
    let tail = runs
        .iter()
        .map(|r| r.hist.percentile(0.999))
        .max()
        .unwrap_or(hi);
    let hi = hi.min(tail.saturating_mul(OUTLIER_SPAN)).max(lo);
    let (a, b) = decades(lo, hi);
    let x_of = |ns: u64| {
        let v = (ns.max(1) as f64).log10().clamp(a as f64, b as f64);
        LEFT + (v - a as f64) / (b - a) as f64 * plot_w
    };
    let y_max = runs
        .iter()
        .map(|r| (r.hist.count() as f64).log10().ceil())
        .fold(2.0_f64, f64::max)
        .min(5.0);
    let y_of = |n: f64| bottom - n / y_max * PANEL_H;
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#000"/>"##
    );
    let every = ((b - a) as usize).div_ceil(8).max(1);
    for d in a..=b {
        let ns = 10u64.saturating_pow(d.max(0) as u32);
        let x = x_of(ns);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/>"##
        );
        if ((d - a) as usize).is_multiple_of(every) {
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 16.0,
                esc(&decade_label(d))
            );
        }
        if d < b {
            for m in [2u64, 5] {
                let x = x_of(ns.saturating_mul(m));
                let _ = writeln!(
                    s,
                    r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#f2f2f2"/>"##
                );
            }
        }
    }
    for (q, label) in [
        (0.0, "p0"),
        (0.5, "p50"),
        (0.9, "p90"),
        (0.99, "p99"),
        (0.999, "p99.9"),
        (0.9999, "p99.99"),
        (0.99999, "p99.999"),
    ] {
        let n = nines(q);
        if n > y_max + 1e-9 {
            break;
        }
        let y = y_of(n);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ccc" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">round trip (log scale)</text>"#,
        LEFT + plot_w / 2.0,
        bottom + 34.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">percentile</text>"#,
        LEFT - 50.0,
        top + PANEL_H / 2.0
    );
    for (k, r) in runs.iter().enumerate() {
        let colour = r.mechanism.colour();
        let mut pts = String::new();
        for (ns, n) in curve(r) {
            let _ = write!(pts, "{:.1},{:.1} ", x_of(ns), y_of(n));
        }
        let dash = if r.passed() {
            ""
        } else {
            r#" stroke-dasharray="6 3""#
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            pts.trim_end()
        );
        let ly = top + 12.0 + 50.0 * k as f64;
        let lx = LEFT + plot_w + 14.0;
        let name = if r.passed() {
            r.mechanism.name().to_owned()
        } else {
            format!("{} (FAILED)", r.mechanism.name())
        };
        let ratio = report.p50_vs_floor(r).map_or_else(String::new, |x| {
            format!("p50 {}x the floor", format_ratio(x))
        });
        let _ = writeln!(
            s,
            r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}" font-size="10" fill="#444">p50 {}, p99 {}</text><text x="{:.1}" y="{:.1}" font-size="10" fill="#444">{}</text>"##,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            esc(&name),
            lx + 28.0,
            ly + 17.0,
            esc(&format_ns(r.p50())),
            esc(&format_ns(r.p99())),
            lx + 28.0,
            ly + 30.0,
            esc(&ratio)
        );
    }
    if runs.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no data</text>"#,
            LEFT + plot_w / 2.0,
            top + PANEL_H / 2.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run_with, sample_report};
    use super::*;
    use crate::bench::Mechanism;

    #[test]
    fn one_panel_per_size_and_a_curve_per_run() {
        let svg = render(&sample_report());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(svg.contains(">4 KiB<") && svg.contains(">1 MiB<"));
        assert!(svg.contains(">adaptive<"));
        assert!(svg.contains("p50 2.00x the floor"));
        assert!(svg.contains("classic (FAILED)"), "failed runs are marked");
        // Balanced tags, no raw ampersands or NaN coordinates.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    /// Every mechanism that ran gets its legend entry, zero-copy included
    /// (the sample report has none, so add one).
    #[test]
    fn each_run_is_labelled_with_its_mechanism() {
        let mut report = sample_report();
        report
            .runs
            .push(run_with(Mechanism::ZeroCopy, 4096, &[15_000, 16_000], 2));
        let svg = render(&report);
        assert_eq!(svg.matches("<polyline").count(), 6);
        for name in ["floor", "kern2usr", "zero-copy", "adaptive"] {
            assert!(svg.contains(&format!(">{name}<")), "no legend for {name}");
        }
        assert_eq!(svg.matches(">zero-copy<").count(), 1);
    }

    #[test]
    fn decade_axis_covers_the_data() {
        assert_eq!(decades(9_000, 90_000), (3, 5));
        assert_eq!(decades(10_000, 10_000), (4, 5));
        assert_eq!(decades(0, 0), (0, 1));
    }

    #[test]
    fn labels_decades_and_nines() {
        assert_eq!(decade_label(0), "1 ns");
        assert_eq!(decade_label(4), "10 µs");
        assert_eq!(decade_label(6), "1 ms");
        assert_eq!(decade_label(10), "10 s");
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
    }

    #[test]
    fn curves_rise_to_the_last_rank() {
        let rep = sample_report();
        let c = curve(&rep.runs[1]);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(c.last(), Some(&(90_000, (4f64).log10())));
    }

    #[test]
    fn an_empty_report_is_still_an_svg() {
        let svg = render(&Report::default());
        assert!(svg.contains("</svg>"));
    }
}
