//! Several channels at once: each a channel of its own (`IOC_CREATE`, back
//! to back) served by its own thread, all started together; the figure is
//! the aggregate rounds/s, with each channel's p50 and p99 as the module
//! measured them (`K2U_IOC_CHANNEL_STATS`).

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use kern2usr::stats::format_ns;
use kern2usr::{Channel, ChannelOptions, Command, Error, Event, Result};

use super::summary::Spread;
use super::{format_size, render_table};

/// One run with `channels` channels.
#[derive(Clone, Debug)]
pub struct ScaleRun {
    /// Channels at once.
    pub channels: usize,
    /// Buffer size of each.
    pub size: usize,
    /// Rounds asked of each channel.
    pub rounds_per_channel: u64,
    /// Which repeat.
    pub repeat: u32,
    /// Rounds acked over all channels.
    pub rounds: u64,
    /// From the common start to the last channel's last ack.
    pub wall: Duration,
    /// Each channel's p50 and p99 (ns), as its module stats give them.
    pub p50s: Vec<u64>,
    /// See `p50s`.
    pub p99s: Vec<u64>,
    /// Busy guest CPU time during the run.
    pub cpu_busy: Option<Duration>,
    /// Rounds whose data was not the channel's pattern.
    pub bad_rounds: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl ScaleRun {
    /// A run that could not start, for `why`.
    pub fn failed(channels: usize, size: usize, rounds: u64, repeat: u32, why: String) -> Self {
        Self {
            channels,
            size,
            rounds_per_channel: rounds,
            repeat,
            rounds: 0,
            wall: Duration::ZERO,
            p50s: Vec::new(),
            p99s: Vec::new(),
            cpu_busy: None,
            bad_rounds: 0,
            error: Some(why),
        }
    }

    /// Every channel completed its rounds with exact data.
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.bad_rounds == 0
            && self.rounds == self.rounds_per_channel * self.channels as u64
    }

    /// Aggregate rounds per second.
    pub fn rounds_per_s(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 {
            self.rounds as f64 / s
        } else {
            0.0
        }
    }

    /// The median of the channels' p50s (ns).
    pub fn p50(&self) -> u64 {
        Spread::of(&self.p50s.iter().map(|&v| v as f64).collect::<Vec<_>>())
            .map_or(0, |s| s.median as u64)
    }

    /// The largest of the channels' p99s (ns).
    pub fn p99(&self) -> u64 {
        self.p99s.iter().copied().max().unwrap_or(0)
    }
}

/// One entry of the JSON's `scaling`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JsonScale {
    /// Channels at once.
    pub channels: usize,
    /// Buffer size of each.
    pub size: usize,
    /// Which repeat.
    pub repeat: u32,
    /// Rounds acked over all channels.
    pub rounds: u64,
    /// Aggregate rounds per second.
    pub rounds_per_s: f64,
    /// Median of the channels' p50s (ns).
    pub p50_ns: u64,
    /// Largest of the channels' p99s (ns).
    pub p99_ns: u64,
    /// Busy guest CPU per round (ns).
    pub cpu_ns_per_round: Option<u64>,
    /// Completed with exact data.
    pub passed: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The JSON entries of `runs`.
pub fn json(runs: &[ScaleRun]) -> Vec<JsonScale> {
    runs.iter()
        .map(|r| JsonScale {
            channels: r.channels,
            size: r.size,
            repeat: r.repeat,
            rounds: r.rounds,
            rounds_per_s: (r.rounds_per_s() * 1e3).round() / 1e3,
            p50_ns: r.p50(),
            p99_ns: r.p99(),
            cpu_ns_per_round: r
                .cpu_busy
                .filter(|_| r.rounds > 0)
                .map(|b| super::duration_ns(b) / r.rounds),
            passed: r.passed(),
            error: r.error.clone(),
        })
        .collect()
}

/// One row per channel count: aggregate rounds/s (median and spread of
/// the repeats), the median p50, the largest p99, CPU per round.
pub fn table(runs: &[ScaleRun]) -> String {
    let header = [
        "channels",
        "size",
        "rounds",
        "rounds/s (spread)",
        "p50",
        "p99",
        "CPU/round",
        "result",
    ];
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for r in runs {
        if !counts.contains(&(r.channels, r.size)) {
            counts.push((r.channels, r.size));
        }
    }
    let rows: Vec<Vec<String>> = counts
        .into_iter()
        .map(|(n, size)| {
            let all: Vec<&ScaleRun> = runs
                .iter()
                .filter(|r| r.channels == n && r.size == size)
                .collect();
            let ok: Vec<&ScaleRun> = all.iter().copied().filter(|r| r.passed()).collect();
            let rate = Spread::of(&ok.iter().map(|r| r.rounds_per_s()).collect::<Vec<_>>());
            let p50 = Spread::of(&ok.iter().map(|r| r.p50() as f64).collect::<Vec<_>>());
            let rounds: u64 = ok.iter().map(|r| r.rounds).sum();
            let busy: Option<u64> = ok.iter().map(|r| r.cpu_busy.map(super::duration_ns)).sum();
            let result = match all.iter().find(|r| !r.passed()) {
                None => format!("ok {}/{}", ok.len(), all.len()),
                Some(r) => format!(
                    "FAILED {}/{}: {}",
                    all.len() - ok.len(),
                    all.len(),
                    r.error.clone().unwrap_or_else(|| format!(
                        "{} rounds, {} with bad data",
                        r.rounds, r.bad_rounds
                    ))
                ),
            };
            vec![
                n.to_string(),
                format_size(size),
                rounds.to_string(),
                rate.map_or_else(
                    || "-".to_owned(),
                    |r| format!("{:.0} ({:.0}-{:.0})", r.median, r.min, r.max),
                ),
                p50.map_or_else(|| "-".to_owned(), |p| format_ns(p.median as u64)),
                ok.iter()
                    .map(|r| r.p99())
                    .max()
                    .map_or_else(|| "-".to_owned(), format_ns),
                busy.filter(|_| rounds > 0)
                    .map_or_else(|| "-".to_owned(), |b| format_ns(b / rounds)),
                result,
            ]
        })
        .collect();
    render_table(&header, &rows, 2)
}

/// What one channel's thread brings back.
struct ChannelOutcome {
    rounds: u64,
    bad_rounds: u64,
    p50: u64,
    p99: u64,
}

/// Run `channels` channels of `size` bytes at once, `rounds` rounds each,
/// every byte of every round checked in place.
pub fn run(
    device: &Path,
    channels: usize,
    size: usize,
    rounds: u64,
    repeat: u32,
    timeout: Duration,
) -> ScaleRun {
    let mut out = ScaleRun::failed(channels, size, rounds, repeat, String::new());
    out.error = None;
    let start = Barrier::new(channels + 1);
    let mut began = Instant::now();
    let cpu_before = super::cpu::busy();
    let results: Vec<Result<ChannelOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..channels)
            .map(|i| {
                let start = &start;
                scope.spawn(move || serve(device, size, rounds, i, start, timeout))
            })
            .collect();
        start.wait();
        began = Instant::now();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Protocol("a channel thread panicked".into())))
            })
            .collect()
    });
    out.wall = began.elapsed();
    out.cpu_busy = super::cpu::between(cpu_before, super::cpu::busy());
    for r in results {
        match r {
            Ok(o) => {
                out.rounds += o.rounds;
                out.bad_rounds += o.bad_rounds;
                out.p50s.push(o.p50);
                out.p99s.push(o.p99);
            }
            Err(e) => {
                out.error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out
}

/// One channel: create, wait for the others, START, check and ack
/// `rounds` rounds, wait until the module counted them, STOP.
fn serve(
    device: &Path,
    size: usize,
    rounds: u64,
    index: usize,
    start: &Barrier,
    timeout: Duration,
) -> Result<ChannelOutcome> {
    let made = ChannelOptions::new()
        .device(device)
        .buffer_size(size)
        .back_to_back(true)
        .name(format!("bench{index}"))
        .create();
    // Every thread reaches the barrier, or the others wait forever.
    start.wait();
    let mut ch = made?;
    ch.command(Command::Mmap)?;
    ch.command(Command::Start)?;
    let pattern = super::ChannelPattern::new(size);
    let (mut done, mut bad) = (0u64, 0u64);
    while done < rounds {
        match ch.next(timeout)? {
            Some(Event::MemoryReady { .. }) => {
                let id = ch.id();
                let round = ch
                    .round()
                    .ok_or_else(|| Error::Protocol("MEMORY_READY without a round".into()))?;
                let seq = u64::from(round.id());
                if !pattern.matches(id, seq, &round) {
                    bad += 1;
                }
                round.ack()?;
                done += 1;
            }
            Some(Event::Mmap | Event::Start) => {}
            Some(other) => {
                return Err(Error::Protocol(format!(
                    "channel {}: {other:?} during the run",
                    ch.id()
                )))
            }
            None => {
                return Err(Error::Protocol(format!(
                    "channel {}: no round within {timeout:?} after {done}",
                    ch.id()
                )))
            }
        }
    }
    let stats = counted(&ch, rounds, timeout)?;
    ch.command(Command::Stop)?;
    Ok(ChannelOutcome {
        rounds: done,
        bad_rounds: bad,
        p50: stats.p50,
        p99: stats.p99,
    })
}

/// The channel's stats once the module counted `rounds` rounds (it counts
/// an ack in a work item, just after the ack).
fn counted(ch: &Channel, rounds: u64, timeout: Duration) -> Result<kern2usr::Stats> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = ch.stats()?.round_trips;
        if s.count >= rounds {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            return Err(Error::Protocol(format!(
                "channel {}: the module counted {} of {rounds} rounds",
                ch.id(),
                s.count
            )));
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(n: usize, repeat: u32, wall_ms: u64, p50s: &[u64]) -> ScaleRun {
        ScaleRun {
            channels: n,
            size: 4096,
            rounds_per_channel: 10,
            repeat,
            rounds: 10 * n as u64,
            wall: Duration::from_millis(wall_ms),
            p50s: p50s.to_vec(),
            p99s: p50s.iter().map(|p| p * 2).collect(),
            cpu_busy: Some(Duration::from_millis(1)),
            bad_rounds: 0,
            error: None,
        }
    }

    #[test]
    fn aggregates_over_channels_and_repeats() {
        let runs = vec![
            scale(1, 0, 10, &[5_000]),
            scale(2, 0, 10, &[6_000, 8_000]),
            scale(1, 1, 20, &[5_000]),
            scale(2, 1, 5, &[7_000, 9_000]),
        ];
        assert_eq!(runs[1].rounds_per_s(), 2000.0);
        assert_eq!(runs[1].p50(), 7_000);
        assert_eq!(runs[1].p99(), 16_000);
        let text = table(&runs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // 1 channel: 1000 and 500 rounds/s; 2: 2000 and 4000.
        assert!(lines[1].contains("750 (500-1000)"), "{text}");
        assert!(lines[2].contains("3000 (2000-4000)"), "{text}");
        assert!(lines[2].ends_with("ok 2/2"), "{text}");
        let j = json(&runs);
        assert_eq!(j[3].p50_ns, 8_000);
        assert_eq!(j[3].cpu_ns_per_round, Some(50_000));
    }

    #[test]
    fn short_runs_fail_with_their_reason() {
        let mut r = scale(4, 0, 10, &[1, 2, 3]);
        r.rounds = 39;
        assert!(!r.passed());
        r.error = Some("channel 3: no round".into());
        assert!(table(&[r]).contains("FAILED 1/1: channel 3: no round"));
    }

    #[test]
    fn no_module_fails_every_channel_without_hanging() {
        let dir = std::env::temp_dir().join(format!("k2u-scale-{}", std::process::id()));
        let r = run(&dir.join("nodev"), 3, 4096, 5, 0, Duration::from_secs(1));
        assert!(!r.passed());
        assert_eq!(r.rounds, 0);
        assert!(r.error.is_some());
    }
}
