//! The bench plot, drawn on the host from the guest's JSON (plotters' SVG
//! backend): one panel per buffer size, the latency distribution of each
//! mechanism as a percentile curve: round-trip time on a log scale (x)
//! against the percentile on a "nines" scale (y = -log10(1 - q): p0, p90,
//! p99, p99.9 evenly spaced), so the tail is as visible as the body.
//! Percentiles are read from each run's histogram buckets as everywhere
//! else (bucket low bounds, `kern2usr::stats`).

use anyhow::{anyhow, Result};
use kern2usr::stats::{format_ns, Histogram};
use kern2usr_cli::bench::{format_ratio, format_size, JsonReport, JsonRun, Mechanism};
use plotters::prelude::*;

const WIDTH: u32 = 960;
const PANEL_H: u32 = 360;
/// The x axis ends at most this many times past the largest p99.9, so one
/// absurd outlier does not squash every curve into a corner.
const OUTLIER_SPAN: u64 = 100;
const FONT: &str = "sans-serif";
/// The title above the panels.
pub const TITLE: &str = "kern2usr bench: round trip (signal to ack) by percentile";
/// The x axis' label.
pub const X_DESC: &str = "round trip (log scale)";
/// The y axis' label.
pub const Y_DESC: &str = "percentile";

/// The nines of quantile `q`: `-log10(1 - q)`.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-12).log10()
}

/// `p0`, `p90`, `p99.9`: the percentile at `y` nines.
fn percentile_label(y: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-y));
    let text = format!("{p:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("p{text}")
}

/// Points `(ns, nines)` of a histogram's percentile curve, up to its last
/// rank.
fn curve(hist: &Histogram) -> Vec<(u64, f64)> {
    let n = hist.count();
    if n == 0 {
        return Vec::new();
    }
    let top = (n as f64).log10();
    let mut pts = Vec::new();
    let mut y = 0.0;
    while y < top {
        let q = 1.0 - 10f64.powf(-y);
        pts.push((hist.percentile(q), y));
        y += 0.01;
    }
    pts.push((hist.percentile(1.0), top));
    pts.push((hist.max(), top));
    pts
}

/// `#rrggbb` as a colour (grey if it is not one).
fn colour(hex: &str) -> RGBColor {
    let ok = hex.len() == 7 && hex.starts_with('#');
    let byte = |i: usize| {
        hex.get(i..i + 2)
            .filter(|_| ok)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0x80)
    };
    RGBColor(byte(1), byte(3), byte(5))
}

/// The legend entry of a run.
fn legend(run: &JsonRun, hist: &Histogram) -> String {
    let mut text = run.mechanism.clone();
    if !run.passed {
        text.push_str(" (FAILED)");
    }
    text.push_str(&format!(
        ": p50 {}, p99 {}",
        format_ns(hist.percentile(0.5)),
        format_ns(hist.percentile(0.99))
    ));
    if let Some(x) = run.p50_vs_floor {
        text.push_str(&format!(", p50 {}x the floor", format_ratio(x)));
    }
    text
}

/// The sizes of `report`, in order of first appearance.
fn sizes(report: &JsonReport) -> Vec<usize> {
    let mut v: Vec<usize> = Vec::new();
    for r in &report.runs {
        if !v.contains(&r.size) {
            v.push(r.size);
        }
    }
    v
}

/// Draws the report's distributions as an SVG document.
pub fn render(report: &JsonReport) -> Result<String> {
    let sizes = sizes(report);
    let panels = sizes.len().max(1);
    let height = 40 + PANEL_H * u32::try_from(panels).unwrap_or(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let body = root.titled(TITLE, (FONT, 20)).map_err(plot_error)?;
        let areas = body.split_evenly((panels, 1));
        if sizes.is_empty() {
            if let Some(area) = areas.first() {
                no_data(area, "no runs")?;
            }
        }
        for (area, &size) in areas.iter().zip(&sizes) {
            panel(area, report, size)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the bench plot: {e}")
}

fn no_data<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    what: &str,
) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let at = (
        i32::try_from(w / 2).unwrap_or(0),
        i32::try_from(h / 2).unwrap_or(0),
    );
    area.draw(&Text::new(what.to_string(), at, (FONT, 16)))
        .map_err(plot_error)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &JsonReport,
    size: usize,
) -> Result<()> {
    let merged = report.merged();
    let runs: Vec<(&JsonRun, Histogram)> = merged
        .iter()
        .filter(|r| r.size == size)
        .filter_map(|r| r.hist().filter(|h| h.count() > 0).map(|h| (r, h)))
        .collect();
    let caption = format_size(size);
    if runs.is_empty() {
        return no_data(area, &format!("{caption}: no data"));
    }
    let lo = runs.iter().map(|(_, h)| h.min()).min().unwrap_or(1).max(1);
    let hi = runs.iter().map(|(_, h)| h.max()).max().unwrap_or(lo);
    let tail = runs
        .iter()
        .map(|(_, h)| h.percentile(0.999))
        .max()
        .unwrap_or(hi);
    let hi = hi.min(tail.saturating_mul(OUTLIER_SPAN)).max(lo);
    let x_lo = 10f64.powf((lo as f64).log10().floor());
    let x_hi = 10f64.powf((hi as f64).log10().ceil()).max(x_lo * 10.0);
    let y_max = runs
        .iter()
        .map(|(_, h)| (h.count() as f64).log10().ceil())
        .fold(2.0_f64, f64::max)
        .min(5.0);
    let mut chart = ChartBuilder::on(area)
        .caption(&caption, (FONT, 16))
        .margin(10)
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(X_DESC)
        .y_desc(Y_DESC)
        .x_label_formatter(&|x| format_ns(x.round() as u64))
        .y_labels(y_max as usize + 1)
        .y_label_formatter(&|y| percentile_label(*y))
        .draw()
        .map_err(plot_error)?;
    for (run, hist) in &runs {
        let c = colour(run.mechanism().map_or("#808080", Mechanism::colour));
        let points: Vec<(f64, f64)> = curve(hist)
            .into_iter()
            .map(|(ns, y)| ((ns.max(1) as f64).clamp(x_lo, x_hi), y))
            .collect();
        let style = c.stroke_width(2);
        let drawn = if run.passed {
            chart.draw_series(LineSeries::new(points, style))
        } else {
            chart.draw_series(DashedLineSeries::new(points, 6, 3, style))
        }
        .map_err(plot_error)?;
        drawn
            .label(legend(run, hist))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
    }
    // The p50 line, where the medians are read.
    let p50 = nines(0.5);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(x_lo, p50), (x_hi, p50)],
            4,
            3,
            RGBColor(0xaa, 0xaa, 0xaa).stroke_width(1),
        ))
        .map_err(plot_error)?;
    chart
        .configure_series_labels()
        // Below and right of every curve is empty on a distribution plot.
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0x99, 0x99, 0x99))
        .label_font((FONT, 12))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kern2usr_cli::bench::{Report, Run};
    use std::time::Duration;

    fn run_with(mechanism: Mechanism, size: usize, values: &[u64]) -> Run {
        let mut r = Run::new(mechanism, size, values.len() as u64);
        for &v in values {
            r.hist.record(v);
        }
        r.rounds = values.len() as u64;
        r.wall = Duration::from_millis(5);
        r
    }

    /// A report as the guest writes it: every mechanism (the peers
    /// included) at 4 KiB (classic failed), the floor alone at 1 MiB.
    fn sample() -> JsonReport {
        let spread = |base: u64| -> Vec<u64> { (0..200).map(|i| base + i * base / 100).collect() };
        let mut failed = run_with(Mechanism::Classic, 4096, &spread(30_000));
        failed.target += 1;
        failed.error = Some("round 201 stalled".to_owned());
        Report {
            runs: vec![
                run_with(Mechanism::Floor, 4096, &spread(10_000)),
                run_with(Mechanism::Kern2usr, 4096, &spread(20_000)),
                run_with(Mechanism::ZeroCopy, 4096, &spread(15_000)),
                failed,
                run_with(Mechanism::Adaptive, 4096, &spread(8_000)),
                run_with(Mechanism::AdaptivePoll, 4096, &spread(6_000)),
                run_with(Mechanism::Ring, 4096, &spread(12_000)),
                run_with(Mechanism::Netlink, 4096, &spread(25_000)),
                run_with(Mechanism::Relay, 4096, &spread(22_000)),
                run_with(Mechanism::Floor, 1 << 20, &spread(300_000)),
                // A second repeat of the 4 KiB floor: drawn merged with
                // the first, as one curve.
                {
                    let mut again = run_with(Mechanism::Floor, 4096, &spread(10_000));
                    again.repeat = 1;
                    again
                },
            ],
            ..Default::default()
        }
        .json()
    }

    /// The contents of the SVG's `<text>` elements, trimmed.
    pub(crate) fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    #[test]
    fn draws_each_mechanism_and_the_axes() -> Result<()> {
        let json = sample();
        // Through the text the guest sends, as the host reads it.
        let text = serde_json::to_string(&json)?;
        let json: JsonReport = serde_json::from_str(&text)?;
        let svg = render(&json)?;
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let t = texts(&svg);
        let count = |s: &str| t.iter().filter(|x| *x == s).count();
        assert_eq!(count(TITLE), 1);
        assert_eq!(count(X_DESC), 2, "an x label per panel: {t:?}");
        assert_eq!(count(Y_DESC), 2, "a y label per panel: {t:?}");
        assert_eq!(count("4 KiB"), 1);
        assert_eq!(count("1 MiB"), 1);
        for m in Mechanism::ALL {
            let name = m.name();
            let entries = t
                .iter()
                .filter(|x| {
                    x.starts_with(&format!("{name}:")) || x.starts_with(&format!("{name} (FAILED)"))
                })
                .count();
            let panels = if m == Mechanism::Floor { 2 } else { 1 };
            assert_eq!(
                entries, panels,
                "a legend entry per panel for {name}: {t:?}"
            );
            // Its curve and its legend line, in its colour.
            let stroke = format!("stroke=\"{}\"", m.colour().to_uppercase());
            assert!(
                svg.matches(&stroke).count() >= 2,
                "no series in {stroke} for {name}"
            );
        }
        assert!(
            t.iter().any(|x| x.starts_with("classic (FAILED): ")),
            "failed runs are marked"
        );
        assert!(
            t.iter()
                .any(|x| x.starts_with("kern2usr: p50 38.9 µs, p99 59.4 µs")
                    && x.ends_with("p50 2.00x the floor")),
            "{t:?}"
        );
        for label in ["p0", "p90", "p99"] {
            assert!(count(label) >= 1, "no y label {label}: {t:?}");
        }
        assert!(
            count("10 µs") + count("100 µs") >= 1,
            "x labels in time units: {t:?}"
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        Ok(())
    }

    #[test]
    fn an_empty_or_histogram_less_report_is_still_an_svg() -> Result<()> {
        let svg = render(&JsonReport::default())?;
        assert!(texts(&svg).contains(&"no runs".to_string()) && svg.contains("</svg>"));
        let mut old = sample();
        for r in &mut old.runs {
            r.histogram.clear();
        }
        let svg = render(&old)?;
        assert!(texts(&svg).contains(&"4 KiB: no data".to_string()));
        Ok(())
    }

    #[test]
    fn labels_nines_and_curves() {
        assert_eq!(percentile_label(0.0), "p0");
        assert_eq!(percentile_label(1.0), "p90");
        assert_eq!(percentile_label(3.0), "p99.9");
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        let mut h = Histogram::new();
        for v in [20_000, 20_000, 21_000, 90_000] {
            h.record(v);
        }
        let c = curve(&h);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(c.last(), Some(&(90_000, (4f64).log10())));
        assert_eq!(colour("#1f77b4"), RGBColor(0x1f, 0x77, 0xb4));
        assert_eq!(colour("bad"), RGBColor(0x80, 0x80, 0x80));
    }
}
