//! `kern2usr-vmtest fuzz`: random operations on the real module from
//! several processes, every observation checked against the model
//! (`kern2usr-model`). A mismatch or a kernel report prints the seed, the
//! op index and the op log, shrinks the log while it still fails (within
//! a time budget) and exits non-zero; `--replay FILE` runs a log again.

mod chanop;
mod chanrun;
pub mod child;
mod op;
mod profile;
mod rng;
mod runner;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use op::{generate, Op};
use rng::Rng;
use runner::{Failure, Runner};

/// Options of one fuzz run.
#[derive(Clone, Debug)]
pub struct Options {
    /// PRNG seed.
    pub seed: u64,
    /// Operations to draw.
    pub ops: usize,
    /// Replay this op log instead of drawing.
    pub replay: Option<std::path::PathBuf>,
    /// Seconds to spend shrinking a failing log (0: do not shrink).
    pub shrink_secs: u64,
    /// Stop drawing ops after this many seconds (None: run them all).
    pub max_secs: Option<u64>,
}

/// The result of running a list (or a stream) of ops.
struct Outcome {
    /// The ops run (skipped ones included: they are part of the log).
    log: Vec<Op>,
    /// Ops that ran (not skipped).
    ran: usize,
    failure: Option<Failure>,
}

/// Ops between two progress lines.
const PROGRESS_EVERY: usize = 5000;

/// Run ops: from `fixed` if given, else `n` drawn from `rng`. `report`:
/// print progress lines and the profile (not while shrinking). Past
/// `deadline` the run stops early, as if it had passed.
fn run_ops(
    fixed: Option<&[Op]>,
    rng: &mut Rng,
    n: usize,
    report: bool,
    deadline: Option<Instant>,
) -> Result<Outcome> {
    let mut runner = Runner::start().context("setting up the run")?;
    println!("fuzz: event mode {}", runner.mode().name());
    let started = Instant::now();
    let mut log = Vec::new();
    let mut ran = 0;
    let mut failure = None;
    let total = fixed.map_or(n, <[Op]>::len);
    for index in 0..total {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let op = match fixed {
            Some(ops) => ops[index].clone(),
            // A fast timer first, so that rounds happen.
            None if index == 0 => Op::Param("period_ms".to_owned(), b"5\n".to_vec()),
            None => generate(rng, &runner.view()),
        };
        if report && index > 0 && index % PROGRESS_EVERY == 0 {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "fuzz: progress {index}/{total} ops ({ran} ran), {:.1} ops/s, 0 mismatches",
                index as f64 / secs.max(1e-3)
            );
        }
        log.push(op.clone());
        match runner.step(&op) {
            Ok(true) => ran += 1,
            Ok(false) => {}
            Err(message) => {
                failure = Some(Failure { index, message });
                break;
            }
        }
    }
    if report {
        let secs = started.elapsed().as_secs_f64();
        println!(
            "fuzz: {} ops ({ran} ran) in {secs:.1} s without setup: {:.1} ops/s",
            log.len(),
            log.len() as f64 / secs.max(1e-3)
        );
        for line in runner.profile.lines() {
            println!("{line}");
        }
    }
    if let Err(e) = runner.finish() {
        if failure.is_none() {
            failure = Some(Failure {
                index: log.len(),
                message: format!("cleanup: {e:#}"),
            });
        }
    }
    Ok(Outcome { log, ran, failure })
}

fn print_log(title: &str, log: &[Op]) {
    println!("fuzz: {title} ({} ops):", log.len());
    println!("--- op log ---");
    for op in log {
        println!("{op}");
    }
    println!("--- end ---");
}

/// Shrink a failing log in the VM within `budget`.
fn shrink(log: Vec<Op>, budget: Duration) -> Vec<Op> {
    let deadline = Instant::now() + budget;
    let mut rng = Rng::new(0);
    shrink_with(log, deadline, |trial| {
        match run_ops(Some(trial), &mut rng, 0, false, Some(deadline)) {
            Ok(o) => o
                .failure
                .map(|f| trial[..=f.index.min(trial.len().saturating_sub(1))].to_vec()),
            Err(_) => None,
        }
    })
}

/// Suffixes of growing length first (a mismatch usually needs only the
/// recent ops: cheap trials for a long log), then delete-chunk and
/// delete-one passes, while the log still fails. `fails` runs a trial:
/// the prefix that fails, or None.
fn shrink_with(
    log: Vec<Op>,
    deadline: Instant,
    mut fails: impl FnMut(&[Op]) -> Option<Vec<Op>>,
) -> Vec<Op> {
    let mut best = log;
    let mut keep = 16;
    while keep < best.len() / 2 && Instant::now() < deadline {
        let trial = best[best.len() - keep..].to_vec();
        if let Some(prefix) = fails(&trial) {
            println!("fuzz: shrink: the last {keep} ops fail alone");
            best = prefix;
            break;
        }
        keep *= 4;
    }
    let mut chunk = best.len() / 2;
    while chunk >= 1 && Instant::now() < deadline {
        let mut start = 0;
        let mut progressed = false;
        while start < best.len() && Instant::now() < deadline {
            let end = (start + chunk).min(best.len());
            let mut trial = best.clone();
            trial.drain(start..end);
            match fails(&trial) {
                Some(prefix) if !trial.is_empty() => {
                    println!("fuzz: shrink: {} ops still fail", prefix.len());
                    best = prefix;
                    progressed = true;
                }
                _ => start += chunk,
            }
        }
        if !progressed {
            chunk /= 2;
        }
    }
    best
}

/// `kern2usr-vmtest fuzz`: true when no mismatch and no kernel report.
pub fn run(opts: &Options) -> Result<bool> {
    let started = Instant::now();
    let mut rng = Rng::new(opts.seed);
    let fixed: Option<Vec<Op>> = match &opts.replay {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let ops: Result<Vec<Op>> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("---"))
                .map(str::parse)
                .collect();
            Some(ops?)
        }
        None => None,
    };
    let outcome = run_ops(
        fixed.as_deref(),
        &mut rng,
        opts.ops,
        true,
        opts.max_secs.map(|s| started + Duration::from_secs(s)),
    )?;
    let Some(failure) = outcome.failure else {
        let stopped = if fixed.is_none() && outcome.log.len() < opts.ops {
            " (stopped by --max-secs)"
        } else {
            ""
        };
        println!(
            "fuzz: seed {} : {} ops ({} ran), 0 mismatches, 0 kernel reports, {:.1} s{stopped}",
            opts.seed,
            outcome.log.len(),
            outcome.ran,
            started.elapsed().as_secs_f64()
        );
        return Ok(true);
    };
    println!(
        "fuzz: MISMATCH seed {} op {}: {}",
        opts.seed, failure.index, failure.message
    );
    let failing: Vec<Op> = outcome.log[..=failure.index.min(outcome.log.len() - 1)].to_vec();
    print_log(&format!("seed {} failing log", opts.seed), &failing);
    if opts.shrink_secs > 0 {
        let small = shrink(failing, Duration::from_secs(opts.shrink_secs));
        // Run it once more to show its message (a log that did not shrink
        // gets the budget once more, not its whole length again).
        let budget = Instant::now() + Duration::from_secs(opts.shrink_secs);
        let again = run_ops(Some(&small), &mut rng, 0, false, Some(budget))?;
        if let Some(f) = again.failure {
            println!(
                "fuzz: shrunk reproducer fails at op {}: {}",
                f.index, f.message
            );
        }
        print_log(&format!("seed {} shrunk log", opts.seed), &small);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_finds_the_two_ops_that_fail() {
        // Fails when a spawn 1 comes before an insmod: the prefix up to it.
        let fails = |trial: &[Op]| -> Option<Vec<Op>> {
            let s = trial.iter().position(|o| *o == Op::Spawn(1))?;
            let i = s + trial[s..].iter().position(|o| *o == Op::Insmod)?;
            Some(trial[..=i].to_vec())
        };
        let mut log = vec![Op::Wait(1); 5000];
        log[4000] = Op::Spawn(1);
        log[4990] = Op::Insmod;
        let mut trials = 0;
        let small = shrink_with(log, Instant::now() + Duration::from_secs(60), |t| {
            trials += 1;
            fails(t)
        });
        assert_eq!(small, vec![Op::Spawn(1), Op::Insmod]);
        assert!(trials < 200, "{trials} trials");
    }
}
