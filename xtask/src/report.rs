//! Reading what the guest and `cargo test` print: suite result lines,
//! exit markers, kernel problem reports, and the final summary.

use crate::initramfs::{DMESG_BEGIN, DMESG_END, EXIT_MARKER, KMEMLEAK_BEGIN, KMEMLEAK_END};

/// Passed and failed counts of one suite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
}

impl Counts {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Parses `<n> passed, <m> failed` exactly.
fn parse_counts(text: &str) -> Option<Counts> {
    let (p, f) = text.trim().split_once(", ")?;
    let passed = p.strip_suffix(" passed")?.parse().ok()?;
    let failed = f.strip_suffix(" failed")?.parse().ok()?;
    Some(Counts { passed, failed })
}

/// A vmtest closing line `<suite>: N passed, N failed`, with the suite name.
/// Kernel messages interleaved on the console come first on a line at
/// most, so only an exact whole line counts.
pub fn parse_suite_line(line: &str) -> Option<(&str, Counts)> {
    let line = line.trim_end();
    let (name, rest) = line.split_once(": ")?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return None;
    }
    Some((name, parse_counts(rest)?))
}

/// All suite lines in `console`, in order.
pub fn suite_results(console: &[String]) -> Vec<(String, Counts)> {
    console
        .iter()
        .filter_map(|l| parse_suite_line(l).map(|(n, c)| (n.to_string(), c)))
        .collect()
}

/// Sums libtest's `test result: ok. N passed; M failed; ...` lines.
/// Returns `None` when there is none at all.
pub fn cargo_test_counts(output: &str) -> Option<Counts> {
    let mut total: Option<Counts> = None;
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        let Some((_, numbers)) = rest.split_once(". ") else {
            continue;
        };
        let mut counts = Counts::default();
        for part in numbers.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => counts.passed = n,
                "failed" => counts.failed = n,
                _ => {}
            }
        }
        total.get_or_insert_with(Counts::default).add(counts);
    }
    total
}

/// The status of the last `K2U-EXIT <rc>` line.
pub fn exit_status(console: &[String]) -> Option<i64> {
    console.iter().rev().find_map(|l| {
        let rest = l.trim().strip_prefix(EXIT_MARKER)?.trim();
        rest.parse().ok()
    })
}

/// Whether the dmesg dump was printed completely.
pub fn has_dmesg_dump(console: &[String]) -> bool {
    let begin = console.iter().position(|l| l.trim() == DMESG_BEGIN);
    let end = console.iter().rposition(|l| l.trim() == DMESG_END);
    matches!((begin, end), (Some(b), Some(e)) if b < e)
}

/// The non-blank lines between the last `K2U-KMEMLEAK-BEGIN` and the
/// `K2U-KMEMLEAK-END` after it (what `cat /sys/kernel/debug/kmemleak`
/// printed: empty when nothing leaked), or `None` without a complete pair.
pub fn kmemleak_report(console: &[String]) -> Option<Vec<&str>> {
    let begin = console.iter().rposition(|l| l.trim() == KMEMLEAK_BEGIN)?;
    let len = console[begin + 1..]
        .iter()
        .position(|l| l.trim() == KMEMLEAK_END)?;
    Some(
        console[begin + 1..begin + 1 + len]
            .iter()
            .map(|l| l.trim_end())
            .filter(|l| !l.trim().is_empty())
            .collect(),
    )
}

/// The console lines that report kernel problems, each once (the dmesg
/// dump repeats what the console already showed). The matcher is the one
/// the guest suites use too (`kern2usr-kreport`).
pub fn kernel_reports(console: &[String]) -> Vec<&str> {
    kern2usr_kreport::kernel_reports(console.iter().map(String::as_str))
}

/// One line of the final summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryLine {
    /// `host`, or `<module>@<kernel>/<suite>`.
    pub name: String,
    /// The counts, or `None` when the line was missing.
    pub counts: Option<Counts>,
    /// Why it is missing or failed beyond the counts, if known.
    pub note: Option<String>,
}

impl SummaryLine {
    /// Whether this line counts as a failure: a note, a failed test, no
    /// counts, or counts of nothing (a suite that ran no test proves
    /// nothing, e.g. a filter that selects none).
    pub fn failed(&self) -> bool {
        self.note.is_some() || !matches!(self.counts, Some(c) if c.failed == 0 && c.passed > 0)
    }

    /// `name: N passed, N failed[ (note)]`, or `name: MISSING (note)`; a
    /// line that ran no test says so when it has no other note.
    pub fn render(&self) -> String {
        let ran_nothing = matches!(self.counts, Some(c) if c.passed + c.failed == 0);
        let note = self
            .note
            .as_deref()
            .or(ran_nothing.then_some("no test ran"))
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        match self.counts {
            Some(c) => format!(
                "{}: {} passed, {} failed{note}",
                self.name, c.passed, c.failed
            ),
            None => format!("{}: MISSING{note}", self.name),
        }
    }
}

/// The per-stage table at the end of `cargo xtask test`: one row per
/// stage in the order they ran, then their sum and the wall time. Rows
/// whose name starts with a blank are part of the row above (the debug
/// kernel build inside its fetch) and are not summed.
pub fn stage_table(stages: &[crate::util::Stage], wall: std::time::Duration) -> String {
    let width = stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max("stage".len());
    let mut out = format!("{:<width$}  {:>8}\n", "stage", "seconds");
    let mut sum = 0.0;
    for s in stages {
        let secs = s.took.as_secs_f64();
        if !s.name.starts_with(' ') {
            sum += secs;
        }
        let mark = if s.ok { "" } else { "  FAILED" };
        out.push_str(&format!("{:<width$}  {secs:>8.1}{mark}\n", s.name));
    }
    out.push_str(&format!("{:<width$}  {sum:>8.1}\n", "sum of stages"));
    out.push_str(&format!(
        "{:<width$}  {:>8.1}\n",
        "wall time",
        wall.as_secs_f64()
    ));
    out
}

/// Sum of all counts, for the `total:` line.
pub fn total(lines: &[SummaryLine]) -> Counts {
    let mut t = Counts::default();
    for c in lines.iter().filter_map(|l| l.counts) {
        t.add(c);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use kern2usr_kreport::is_kernel_report;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn suite_lines() {
        assert_eq!(
            parse_suite_line("walkthrough: 14 passed, 0 failed"),
            Some((
                "walkthrough",
                Counts {
                    passed: 14,
                    failed: 0
                }
            ))
        );
        assert_eq!(
            parse_suite_line("burst: 3 passed, 2 failed\r"),
            Some((
                "burst",
                Counts {
                    passed: 3,
                    failed: 2
                }
            ))
        );
        assert_eq!(parse_suite_line("walkthrough: 14 passed"), None);
        assert_eq!(parse_suite_line("[   1.0] x: 1 passed, 0 failed"), None);
        assert_eq!(parse_suite_line("ok walkthrough: 1 passed, 0 failed"), None);
        assert_eq!(parse_suite_line("walkthrough: many passed, 0 failed"), None);
        let console =
            lines("boot\nwalkthrough: 14 passed, 0 failed\nnoise\nbadinput: 9 passed, 1 failed\n");
        assert_eq!(
            suite_results(&console),
            vec![
                (
                    "walkthrough".to_string(),
                    Counts {
                        passed: 14,
                        failed: 0
                    }
                ),
                (
                    "badinput".to_string(),
                    Counts {
                        passed: 9,
                        failed: 1
                    }
                ),
            ]
        );
    }

    #[test]
    fn cargo_test_lines() {
        let out = "running 3 tests\ntest a ... ok\n\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
                   test result: FAILED. 5 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.10s\n\
                   test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        assert_eq!(
            cargo_test_counts(out),
            Some(Counts {
                passed: 8,
                failed: 2
            })
        );
        assert_eq!(cargo_test_counts("error: could not compile `x`\n"), None);
    }

    #[test]
    fn exit_and_dump() {
        let console = lines("K2U-RUN x\nK2U-EXIT 3\nK2U-DMESG-BEGIN\n[ 0.1] hi\nK2U-DMESG-END\n");
        assert_eq!(exit_status(&console), Some(3));
        assert!(has_dmesg_dump(&console));
        assert_eq!(exit_status(&lines("K2U-EXIT\n")), None);
        assert!(!has_dmesg_dump(&lines("K2U-DMESG-BEGIN\n")));
    }

    #[test]
    fn the_shared_matcher_reads_console_lines() {
        // Details are tested in kern2usr-kreport; here only that console
        // prefixes and the sanitizers the guest checks are covered.
        for bad in [
            "[   12.345678] BUG: KCSAN: data-race in k2u_ioctl / k2u_publish",
            "[    9.000000] [    T1] UBSAN: shift-out-of-bounds in kernel/c/hist.c:31:22",
            "[  250.000000] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
        ] {
            assert!(is_kernel_report(bad), "{bad}");
        }
        assert!(!is_kernel_report(
            "[    0.123456] RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable"
        ));
    }

    #[test]
    fn kmemleak_section() {
        let clean = lines("K2U-EXIT 0\nK2U-KMEMLEAK-BEGIN\nK2U-KMEMLEAK-END\nK2U-DMESG-BEGIN\n");
        assert_eq!(kmemleak_report(&clean), Some(vec![]));
        let leak = lines(
            "K2U-KMEMLEAK-BEGIN\nunreferenced object 0xffff888004a3c000 (size 64):\n  comm \"insmod\", pid 61, jiffies 4294893210\n\nK2U-KMEMLEAK-END\n",
        );
        let report = kmemleak_report(&leak).expect("complete");
        assert_eq!(report.len(), 2);
        assert!(is_kernel_report(report[0]));
        assert_eq!(kmemleak_report(&lines("K2U-KMEMLEAK-BEGIN\nx\n")), None);
        assert_eq!(kmemleak_report(&lines("K2U-EXIT 0\n")), None);
    }

    #[test]
    fn reports_are_listed_once() {
        let console = lines("[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f\nok\nK2U-DMESG-BEGIN\n[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f\n[ 1.1] Call Trace:\n");
        assert_eq!(
            kernel_reports(&console),
            [
                "[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f",
                "[ 1.1] Call Trace:"
            ]
        );
    }

    #[test]
    fn stage_rows() {
        use crate::util::Stage;
        use std::time::Duration;
        let stages = [
            Stage {
                name: "deps".into(),
                took: Duration::from_millis(200),
                ok: true,
            },
            Stage {
                name: "  of which: make".into(),
                took: Duration::from_millis(100),
                ok: true,
            },
            Stage {
                name: "VM run c@6.1 (tcg)".into(),
                took: Duration::from_millis(47_250),
                ok: false,
            },
        ];
        let t = stage_table(&stages, Duration::from_secs(50));
        assert_eq!(
            t,
            "stage                seconds\n\
             deps                     0.2\n\
             \x20 of which: make         0.1\n\
             VM run c@6.1 (tcg)      47.2  FAILED\n\
             sum of stages           47.5\n\
             wall time               50.0\n"
        );
    }

    #[test]
    fn summary_lines() {
        let ok = SummaryLine {
            name: "c@6.12/walkthrough".into(),
            counts: Some(Counts {
                passed: 14,
                failed: 0,
            }),
            note: None,
        };
        assert_eq!(ok.render(), "c@6.12/walkthrough: 14 passed, 0 failed");
        assert!(!ok.failed());
        let missing = SummaryLine {
            name: "c@6.1/burst".into(),
            counts: None,
            note: Some("VM run failed".into()),
        };
        assert_eq!(missing.render(), "c@6.1/burst: MISSING (VM run failed)");
        assert!(missing.failed());
        let empty = SummaryLine {
            name: "c@6.12/perf".into(),
            counts: Some(Counts::default()),
            note: None,
        };
        assert!(empty.failed(), "a suite that ran no test fails");
        assert_eq!(
            empty.render(),
            "c@6.12/perf: 0 passed, 0 failed (no test ran)"
        );
        assert_eq!(
            total(&[ok, missing]),
            Counts {
                passed: 14,
                failed: 0
            }
        );
    }
}
