//! Where a fuzz run spends its time: per op kind and per wait site, printed
//! as a short table at the end of a run (`fuzz profile: ...`).

use std::collections::BTreeMap;
use std::time::Duration;

/// Count, total and longest time of one kind of work.
#[derive(Clone, Copy, Debug, Default)]
struct Stat {
    n: u64,
    total: Duration,
    max: Duration,
}

/// Times per key (an op kind such as `op readefd`, or a wait site such as
/// `wait detach`).
#[derive(Debug, Default)]
pub struct Profile {
    stats: BTreeMap<String, Stat>,
}

impl Profile {
    /// Add one sample.
    pub fn add(&mut self, key: &str, took: Duration) {
        let s = self.stats.entry(key.to_owned()).or_default();
        s.n += 1;
        s.total += took;
        s.max = s.max.max(took);
    }

    /// The table, biggest total first, one line per key.
    pub fn lines(&self) -> Vec<String> {
        let mut rows: Vec<(&String, &Stat)> = self.stats.iter().collect();
        rows.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(b.0)));
        rows.iter()
            .map(|(key, s)| {
                format!(
                    "fuzz profile: {key:<18} n={:<6} total={}ms max={}ms",
                    s.n,
                    s.total.as_millis(),
                    s.max.as_millis()
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_sums_and_sorts() {
        let mut p = Profile::default();
        p.add("op a", Duration::from_millis(5));
        p.add("op a", Duration::from_millis(7));
        p.add("wait b", Duration::from_millis(20));
        let lines = p.lines();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("wait b") && lines[0].contains("total=20ms"));
        assert!(lines[1].contains("n=2") && lines[1].contains("total=12ms"));
        assert!(lines[1].contains("max=7ms"), "{}", lines[1]);
    }
}
