//! Busy CPU time of the whole guest, from the `cpu` line of `/proc/stat`,
//! so a mechanism's cost counts every thread and the module's work items
//! (a spinning listener, a polling module) and not only the benchmark
//! process.
//!
//! The kernel reports the line in USER_HZ ticks (10 ms); a run's figure is
//! the difference of two readings, so it is exact to about 10 ms per CPU,
//! which [`super::summary`] spreads over all the repeats' rounds.

use std::time::Duration;

/// Ticks per second of `/proc/stat` (USER_HZ, 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// Busy time since boot: every field of the `cpu` line but idle (4th)
/// and iowait (5th); guest time is already inside user and nice.
pub fn parse_busy(stat: &str) -> Option<Duration> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(Duration::from_millis(busy.checked_mul(1000 / USER_HZ)?))
}

/// The guest's busy time now, if `/proc/stat` can be read.
pub fn busy() -> Option<Duration> {
    parse_busy(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Busy time between two readings.
pub fn between(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    after?.checked_sub(before?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_counts_all_but_idle_and_iowait() {
        let stat = "cpu  100 2 30 5000 7 1 4 0 9 0\ncpu0 50 1 15 2500 3 0 2 0 0 0\nintr 1\n";
        // 100 + 2 + 30 + 1 + 4 + 0 ticks of 10 ms (guest is inside user).
        assert_eq!(parse_busy(stat), Some(Duration::from_millis(1370)));
        assert_eq!(parse_busy("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(parse_busy("cpu  1 2 x 4 5\n"), None);
        assert_eq!(parse_busy("cpu  1 2 3\n"), None);
    }

    #[test]
    fn the_host_reports_busy_time_that_grows() {
        let a = busy();
        assert!(a.is_some(), "/proc/stat has a cpu line");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(60) {
            std::hint::spin_loop();
        }
        assert!(between(a, busy()).is_some_and(|d| d >= Duration::from_millis(10)));
        // A reading before an earlier one is no figure.
        assert_eq!(between(busy(), Some(Duration::ZERO)), None);
    }
}
