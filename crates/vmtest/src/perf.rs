//! The `perf` suite: round-trip statistics, back-to-back rounds, the
//! adaptive mode's control page, the classic READ_BUFFER path and the
//! rate-limited round log.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{param, Code, DEVICE_PATH};
use kern2usr::device::first_pattern_mismatch;
use kern2usr::stats::{Histogram, Stats};
use kern2usr::{Access, Channel, CtrlPage, Device, Event, MappedBuffer, Session};

use crate::common::{exit_listener, mapped};
use crate::guest::{self, scaled, timeout};
use crate::harness::{Ctx, Test};
use crate::listener::ListenerProc;
use crate::pattern;

/// The suite's tests.
pub const TESTS: &[Test] = &[
    (
        "stats: zero before a test, reset at START, count = rounds acknowledged",
        stats_reset_and_count,
    ),
    (
        "histogram: buckets add up to count and agree with the percentiles",
        histogram_matches_stats,
    ),
    (
        "back_to_back: 300 rounds without the timer, none lost, refused while running",
        back_to_back_rounds,
    ),
    (
        "ready_seq counts every round published since load, across tests",
        ready_seq_per_test,
    ),
    (
        "adaptive: spinning and sleeping phases, every round handled once",
        adaptive_phases,
    ),
    (
        "adaptive back_to_back: doorbells skipped while spinning, none lost",
        adaptive_back_to_back,
    ),
    (
        "adaptive with spin budget 0: every doorbell rung, none skipped",
        adaptive_no_spin,
    ),
    (
        "classic: K2U_IOC_READ_BUFFER copies the buffer byte-exact",
        classic_read_buffer,
    ),
    (
        "rate-limited log: 300 rounds at period_ms=1 print far fewer Time to copy lines",
        rate_limited_log,
    ),
    (
        "round guard: while a round is held no timer pass or READ_BUFFER writes the buffer",
        round_guard_view_is_stable,
    ),
];

/// A fresh module loaded with `args` (and its node for the CLI listener).
fn fresh(ctx: &mut Ctx, args: &str) -> Result<()> {
    if guest::module_loaded() {
        guest::rmmod(&mut ctx.klog)?;
    }
    guest::insmod(&mut ctx.klog, args)?;
    guest::create_node()
}

/// This process attached with REGISTER, MMAP done, the buffer mapped.
fn session(ctx: &mut Ctx) -> Result<(Session, MappedBuffer)> {
    let mut s = Session::register(DEVICE_PATH, &ctx.params)?;
    ctx.params.command(Code::Mmap)?;
    s.expect_code(Code::Mmap, timeout())?;
    let size = ctx.params.buffer_size()?;
    let buf = s.device().map(size, Access::ReadOnly)?;
    Ok((s, buf))
}

/// START and its code.
fn start(ctx: &mut Ctx, s: &mut Session) -> Result<()> {
    ctx.params.command(Code::StartTest)?;
    s.expect_code(Code::StartTest, timeout())?;
    Ok(())
}

/// STOP and its code (a round abandoned by it may come first).
fn stop(ctx: &mut Ctx, s: &mut Session) -> Result<()> {
    ctx.params.command(Code::StopTest)?;
    s.skip_rounds_until(Code::StopTest, timeout())?;
    Ok(())
}

/// `n` rounds: MEMORY_READY, copy and check, ack on efd2.
fn rounds(s: &mut Session, buf: &MappedBuffer, n: u64) -> Result<()> {
    let mut copy = Vec::new();
    for i in 0..n {
        match s.next_code(scaled(Duration::from_secs(10)))? {
            Some(6) => {}
            Some(c) => bail!(
                "round {}: code {c} where MEMORY_READY (6) was expected",
                i + 1
            ),
            None => bail!("round {}: no MEMORY_READY within 10 s", i + 1),
        }
        buf.copy_to_vec(&mut copy);
        if let Some(m) = first_pattern_mismatch(&copy) {
            bail!("round {}: {m}", i + 1);
        }
        s.ack()?;
    }
    Ok(())
}

/// `data` must be a whole filled buffer of `size` bytes: every byte the
/// round's pattern (byte i = i % 255).
fn check_fill(data: &[u8], size: usize) -> Result<()> {
    ensure!(
        data.len() == size,
        "{} bytes where the buffer has {size}",
        data.len()
    );
    let mut bad = kern2usr::device::pattern_mismatches(data);
    if let Some(first) = bad.next() {
        bail!("{first} ({} byte(s) differ in all)", bad.count() + 1);
    }
    Ok(())
}

/// Wait until `stats` counts at least `n` rounds.
fn wait_count(ctx: &Ctx, n: u64, within: Duration) -> Result<Stats> {
    let deadline = Instant::now() + within;
    loop {
        let st = ctx.params.stats()?;
        if st.count >= n {
            return Ok(st);
        }
        if Instant::now() >= deadline {
            bail!(
                "stats count is {} after {within:?}, expected at least {n} (rounds stalled?)",
                st.count
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The stats must be ordered and consistent with the histogram, whose
/// buckets must add up to count; no round may be longer than `wall`.
fn check_consistent(stats: &Stats, hist: &Histogram, wall: Duration) -> Result<()> {
    let v = [
        stats.min,
        stats.p50,
        stats.p90,
        stats.p99,
        stats.p99_9,
        stats.max,
    ];
    ensure!(
        v.windows(2).all(|w| w[0] <= w[1]),
        "stats not ordered min <= p50 <= p90 <= p99 <= p99.9 <= max: {stats}"
    );
    ensure!(
        stats.min <= stats.mean && stats.mean <= stats.max,
        "mean outside [min, max]: {stats}"
    );
    ensure!(
        u128::from(stats.max) <= wall.as_nanos(),
        "the slowest round trip ({} ns) is longer than the whole test ({} ns): a negative time wrapped?",
        stats.max,
        wall.as_nanos()
    );
    ensure!(
        hist.count() == stats.count,
        "histogram holds {} rounds, stats {}",
        hist.count(),
        stats.count
    );
    for (q, p) in [
        (0.5, stats.p50),
        (0.9, stats.p90),
        (0.99, stats.p99),
        (0.999, stats.p99_9),
    ] {
        let rank = hist.rank(q);
        let (below, through) = hist.ranks_of_bucket(p);
        ensure!(
            below < rank && rank <= through,
            "percentile {q}: {p} ns is in a bucket holding ranks {}..={through}, but its rank is {rank}",
            below + 1
        );
    }
    Ok(())
}

fn stats_reset_and_count(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx, "")?;
    ctx.params.set_period(Duration::from_millis(2))?;
    ensure!(
        ctx.params.stats()? == Stats::default(),
        "stats before any test: {}",
        ctx.params.read(param::STATS)?
    );
    ensure!(
        ctx.params.histogram()?.is_empty(),
        "histogram before any test is not empty"
    );
    let (mut s, buf) = session(ctx)?;
    let t = Instant::now();
    start(ctx, &mut s)?;
    rounds(&mut s, &buf, 20)?;
    let st = wait_count(ctx, 20, timeout())?;
    ensure!(
        st.count == 20,
        "stats count {} after 20 acknowledged rounds",
        st.count
    );
    stop(ctx, &mut s)?;
    let wall = t.elapsed();
    let (st, hist) = ctx.params.round_trips()?;
    ensure!(
        st.count == 20,
        "stats count {} after STOP, 20 rounds acknowledged",
        st.count
    );
    check_consistent(&st, &hist, wall)?;
    let shown = guest::sh_ok(Path::new(guest::ROOT), "kern2usr stats")?.stdout;
    ensure!(
        shown.starts_with("count  20\nmin    ")
            && shown.contains("histogram (20 rounds, signal to ack):\n"),
        "`kern2usr stats` printed: {shown}"
    );
    // The next test starts from zero.
    start(ctx, &mut s)?;
    let st = ctx.params.stats()?;
    ensure!(
        st == Stats::default(),
        "stats right after the second START: {st}"
    );
    ensure!(
        ctx.params.histogram()?.is_empty(),
        "histogram not reset at START"
    );
    rounds(&mut s, &buf, 5)?;
    let st = wait_count(ctx, 5, timeout())?;
    ensure!(
        st.count == 5,
        "second test: stats count {} after 5 rounds",
        st.count
    );
    stop(ctx, &mut s)
}

fn histogram_matches_stats(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx, "back_to_back=1")?;
    let (mut s, buf) = session(ctx)?;
    let t = Instant::now();
    start(ctx, &mut s)?;
    rounds(&mut s, &buf, 1000)?;
    wait_count(ctx, 1000, timeout())?;
    stop(ctx, &mut s)?;
    let wall = t.elapsed();
    let stats = ctx.params.stats()?;
    let buckets = ctx.params.histogram()?;
    let sum: u64 = buckets.iter().map(|b| b.count).sum();
    ensure!(
        sum == stats.count && sum == 1000,
        "histogram buckets add up to {sum}, stats count {}, 1000 rounds acknowledged",
        stats.count
    );
    let first = buckets.first().map_or(0, |b| b.low);
    let last = buckets.last().map_or(0, |b| b.high);
    ensure!(
        first <= stats.min && stats.max < last,
        "min {} / max {} outside the histogram's [{first}, {last})",
        stats.min,
        stats.max
    );
    let hist = Histogram::from_kernel(&buckets, &stats)?;
    check_consistent(&stats, &hist, wall)
}

fn back_to_back_rounds(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx, "")?;
    ctx.params.set_back_to_back(true)?;
    ensure!(
        ctx.params.back_to_back()?,
        "back_to_back reads 0 after writing 1"
    );
    // The timer would take 60 s per round: only back_to_back drives.
    ctx.params.set_period(Duration::from_secs(60))?;
    let (mut s, buf) = session(ctx)?;
    let t = Instant::now();
    start(ctx, &mut s)?;
    match ctx.params.set_back_to_back(false) {
        Ok(()) => bail!("back_to_back=0 was accepted while a test runs"),
        Err(e) => ensure!(e.errno().is_some(), "back_to_back=0 while running: {e}"),
    }
    ensure!(
        ctx.params.back_to_back()?,
        "a refused write changed back_to_back"
    );
    rounds(&mut s, &buf, 300).context("back_to_back rounds")?;
    let took = t.elapsed();
    ensure!(
        took < scaled(Duration::from_secs(30)),
        "300 back-to-back rounds took {took:?}"
    );
    let st = wait_count(ctx, 300, timeout())?;
    stop(ctx, &mut s)?;
    let (st2, hist) = ctx.params.round_trips()?;
    ensure!(
        st.count == 300 && st2.count == 300,
        "stats count {} (then {} after STOP) after 300 acknowledged rounds",
        st.count,
        st2.count
    );
    check_consistent(&st2, &hist, t.elapsed())
}

fn ready_seq_per_test(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx, "")?;
    ctx.params.set_period(Duration::from_millis(5))?;
    let (mut s, buf) = session(ctx)?;
    let ctrl = s.map_ctrl()?;
    ensure!(
        ctrl.ready_seq() == 0,
        "ready_seq is {} before any test",
        ctrl.ready_seq()
    );
    for test in 1..=2u64 {
        // STOP can race one more published round (abandoned, never acked):
        // each test counts on from where the last one left ready_seq.
        let base = ctrl.ready_seq();
        start(ctx, &mut s)?;
        for round in 1..=3u64 {
            match s.next_code(timeout())? {
                Some(6) => {}
                other => bail!("test {test} round {round}: {other:?} instead of MEMORY_READY"),
            }
            // Outstanding until acked: nothing else is published.
            let seq = ctrl.ready_seq();
            let want = base + round;
            ensure!(
                seq == want,
                "test {test}, round {round}: ready_seq reads {seq}, want {want}: the ABI \
                 says it counts the rounds published since load"
            );
            let mut copy = Vec::new();
            buf.copy_to_vec(&mut copy);
            check_fill(&copy, buf.len())
                .with_context(|| format!("test {test}, round {round}: the mapped copy"))?;
            s.ack()?;
        }
        stop(ctx, &mut s)?;
    }
    Ok(())
}

/// The control page seen from the test (a second mapping).
fn observer() -> Result<(Device, CtrlPage)> {
    let dev = Device::open(DEVICE_PATH)?;
    let ctrl = dev.map_ctrl()?;
    Ok((dev, ctrl))
}

/// STOP, EXIT, and the listener's `adaptive: N round(s) handled` line.
fn finish_adaptive(ctx: &mut Ctx, l: &mut ListenerProc) -> Result<u64> {
    ctx.params.command(Code::StopTest)?;
    ctx.klog.wait_for("Timer is deleted.", timeout())?;
    l.expect_code_block(3, &["handling_polling done!"], timeout())?;
    l.expect_code_block(4, &["handling_polling done!"], timeout())?;
    exit_listener(ctx, l)?;
    let caps = l.wait_line(
        "adaptive: <n> round(s) handled, <n> without a doorbell",
        timeout(),
    )?;
    caps.first()
        .and_then(|n| n.parse().ok())
        .context("parsing the listener's adaptive line")
}

/// Every published round was handled and counted, but for the one STOP
/// may have abandoned.
fn check_accounting(published: u64, handled: u64, counted: u64) -> Result<()> {
    ensure!(
        counted <= handled && handled <= published && published <= counted + 1,
        "rounds published {published}, handled by the listener {handled}, counted by the module \
         {counted}: expected counted <= handled <= published <= counted + 1"
    );
    Ok(())
}

fn adaptive_listener(ctx: &mut Ctx, spin_us: &str) -> Result<ListenerProc> {
    let l = mapped(ctx, &["--adaptive", "--spin-us", spin_us])?;
    ctx.params.set_adaptive(true)?;
    Ok(l)
}

fn adaptive_phases(ctx: &mut Ctx) -> Result<()> {
    // Spin budget 5 ms: rounds every 1 ms are found spinning, rounds every
    // 50 ms find the listener asleep.
    let mut l = adaptive_listener(ctx, "5000")?;
    ctx.params.set_period(Duration::from_millis(1))?;
    let (_dev, ctrl) = observer()?;
    let t = Instant::now();
    let within = scaled(Duration::from_secs(30));
    ctx.params.command(Code::StartTest)?;
    let st = wait_count(ctx, 100, within).context("spinning phase")?;
    let skipped_a = ctrl.doorbells_skipped();
    ensure!(
        skipped_a > 0,
        "spinning phase: {} rounds, no doorbell skipped",
        st.count
    );
    ctx.params.set_period(Duration::from_millis(50))?;
    let n = ctx.params.stats()?.count;
    // Let the timer armed with the old period go off.
    let st = wait_count(ctx, n + 2, within).context("switching to 50 ms")?;
    let skipped_b0 = ctrl.doorbells_skipped();
    let st_b = wait_count(ctx, st.count + 10, within).context("sleeping phase")?;
    let skipped_b1 = ctrl.doorbells_skipped();
    ensure!(
        skipped_b1 == skipped_b0,
        "sleeping phase: {} doorbell(s) skipped in {} rounds 50 ms apart (spin budget 5 ms)",
        skipped_b1 - skipped_b0,
        st_b.count - st.count
    );
    ctx.params.set_period(Duration::from_millis(1))?;
    let st_c = wait_count(ctx, st_b.count + 100, within).context("spinning again")?;
    ensure!(
        ctrl.doorbells_skipped() > skipped_b1,
        "second spinning phase: {} rounds, no doorbell skipped",
        st_c.count - st_b.count
    );
    let handled = finish_adaptive(ctx, &mut l)?;
    let wall = t.elapsed();
    let (stats, hist) = ctx.params.round_trips()?;
    println!(
        "# phases: {} rounds, doorbells skipped {skipped_a} (1 ms), 0 of {} (50 ms), {} (1 ms)",
        stats.count,
        st_b.count - st.count,
        ctrl.doorbells_skipped() - skipped_b1
    );
    check_accounting(ctrl.ready_seq(), handled, stats.count)?;
    check_consistent(&stats, &hist, wall)
}

fn adaptive_back_to_back(ctx: &mut Ctx) -> Result<()> {
    let mut l = adaptive_listener(ctx, "20000")?;
    ctx.params.set_back_to_back(true)?;
    let (_dev, ctrl) = observer()?;
    let t = Instant::now();
    ctx.params.command(Code::StartTest)?;
    wait_count(ctx, 300, scaled(Duration::from_secs(30)))?;
    let handled = finish_adaptive(ctx, &mut l)?;
    let wall = t.elapsed();
    let (stats, hist) = ctx.params.round_trips()?;
    println!(
        "# back_to_back: {} rounds, {} doorbells skipped, p50 {}",
        stats.count,
        ctrl.doorbells_skipped(),
        kern2usr::stats::format_ns(stats.p50)
    );
    ensure!(
        ctrl.doorbells_skipped() > 0,
        "{} back-to-back rounds with a 20 ms spin budget, no doorbell skipped",
        stats.count
    );
    check_accounting(ctrl.ready_seq(), handled, stats.count)?;
    check_consistent(&stats, &hist, wall)
}

fn adaptive_no_spin(ctx: &mut Ctx) -> Result<()> {
    let mut l = adaptive_listener(ctx, "0")?;
    ctx.params.set_back_to_back(true)?;
    let (_dev, ctrl) = observer()?;
    let t = Instant::now();
    ctx.params.command(Code::StartTest)?;
    wait_count(ctx, 200, scaled(Duration::from_secs(30)))?;
    let handled = finish_adaptive(ctx, &mut l)?;
    let wall = t.elapsed();
    let (stats, hist) = ctx.params.round_trips()?;
    ensure!(
        ctrl.doorbells_skipped() == 0,
        "{} doorbell(s) skipped although the listener never spins",
        ctrl.doorbells_skipped()
    );
    let sixes = l.values().iter().filter(|&&v| v == 6).count() as u64;
    ensure!(
        sixes >= stats.count,
        "{sixes} MEMORY_READY events for {} rounds: every round needs its doorbell",
        stats.count
    );
    check_accounting(ctrl.ready_seq(), handled, stats.count)?;
    check_consistent(&stats, &hist, wall)
}

fn classic_read_buffer(ctx: &mut Ctx) -> Result<()> {
    const SIZE: usize = 65536;
    fresh(ctx, &format!("buffer_size={SIZE}"))?;
    ctx.params.set_period(Duration::from_millis(5))?;
    let (mut s, buf) = session(ctx)?;
    start(ctx, &mut s)?;
    for round in 1..=3 {
        match s.next_code(timeout())? {
            Some(6) => {}
            other => bail!("round {round}: {other:?} instead of MEMORY_READY"),
        }
        let mut whole = vec![0xAAu8; SIZE];
        let n = s.device().read_buffer(&mut whole)?;
        ensure!(n == SIZE, "READ_BUFFER of {SIZE} bytes copied {n}");
        if let Some(m) = first_pattern_mismatch(&whole) {
            bail!("round {round}: READ_BUFFER: {m}");
        }
        ensure!(
            whole == buf.to_vec(),
            "READ_BUFFER differs from the mapping"
        );
        let mut short = vec![0xAAu8; 1000];
        let n = s.device().read_buffer(&mut short)?;
        ensure!(
            n == 1000 && first_pattern_mismatch(&short).is_none(),
            "short READ_BUFFER: {n} bytes"
        );
        let mut long = vec![0xAAu8; SIZE + 4096];
        let n = s.device().read_buffer(&mut long)?;
        ensure!(
            n == SIZE,
            "READ_BUFFER into {} bytes copied {n}, the buffer has {SIZE}",
            SIZE + 4096
        );
        ensure!(
            first_pattern_mismatch(&long[..SIZE]).is_none()
                && long[SIZE..].iter().all(|&b| b == 0xAA),
            "READ_BUFFER into a larger buffer: wrong data or bytes written past {SIZE}"
        );
        s.ack_ioctl()?;
    }
    let st = wait_count(ctx, 3, timeout())?;
    ensure!(
        st.count == 3,
        "stats count {} after 3 rounds acknowledged by ioctl",
        st.count
    );
    stop(ctx, &mut s)
}

fn rate_limited_log(ctx: &mut Ctx) -> Result<()> {
    const ROUNDS: u64 = 300;
    fresh(ctx, "")?;
    ctx.params.set_period(Duration::from_millis(1))?;
    let (mut s, buf) = session(ctx)?;
    start(ctx, &mut s)?;
    ctx.klog.wait_for("Timer is started.", timeout())?;
    rounds(&mut s, &buf, ROUNDS)?;
    wait_count(ctx, ROUNDS, timeout())?;
    stop(ctx, &mut s)?;
    let lines = ctx.klog.wait_until("Avg copy time", timeout(), |l| {
        l.iter().any(|x| pattern::matches("Avg copy time = <n>", x))
    })?;
    let copies = lines
        .iter()
        .filter(|l| pattern::matches("Time to copy = <n>", l))
        .count() as u64;
    ensure!(
        copies >= 1,
        "no `Time to copy` line at all for {ROUNDS} rounds"
    );
    ensure!(
        copies * 4 <= ROUNDS,
        "{copies} `Time to copy` lines for {ROUNDS} rounds at period_ms=1: the log is not rate-limited"
    );
    Ok(())
}

/// The next event must be `want` (a MEMORY_READY may come first when
/// `skip_rounds`; those rounds are acknowledged).
fn expect_event(ch: &mut Channel, want: Event, skip_rounds: bool) -> Result<()> {
    loop {
        match ch.next(timeout())? {
            Some(ev) if ev == want => return Ok(()),
            Some(Event::MemoryReady { .. }) if skip_rounds => {
                if let Some(r) = ch.round() {
                    r.ack()?;
                }
            }
            other => bail!("{other:?} where {want:?} was expected"),
        }
    }
}

/// Index and values of the first byte where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<(usize, u8, u8)> {
    if a.len() != b.len() {
        return Some((a.len().min(b.len()), 0, 0));
    }
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, *x, *y))
}

/// The claim behind `Round`'s zero-copy view: from a round's publish to
/// its ack the module does not write the buffer. Every fill writes the
/// same pattern, so comparing bytes alone could not see a refill; the test
/// therefore also marks the buffer through a second, writable mapping
/// (while no view is held) and checks that timer passes leave the mark,
/// and that `ready_seq` does not move while the round is held.
fn round_guard_view_is_stable(ctx: &mut Ctx) -> Result<()> {
    const SIZE: usize = 16384;
    const PASSES: usize = 3;
    fresh(ctx, &format!("buffer_size={SIZE}"))?;
    ctx.params.set_period(Duration::from_millis(100))?;
    let mut ch = Channel::open()?;
    ensure!(
        ch.info().buffer_size == SIZE,
        "INFO reports {} bytes, loaded with {SIZE}",
        ch.info().buffer_size
    );
    let (dev, ctrl) = observer()?;
    ctx.params.command(Code::Mmap)?;
    expect_event(&mut ch, Event::Mmap, false)?;
    ctx.params.command(Code::StartTest)?;
    expect_event(&mut ch, Event::Start, false)?;
    let id = match ch.next(timeout())? {
        Some(Event::MemoryReady { round }) => round,
        other => bail!("{other:?} where the first MEMORY_READY was expected"),
    };
    ctx.klog.wait_for("Buffer filled", timeout())?;
    let published = ctrl.ready_seq();
    ensure!(
        published as u32 == id,
        "MEMORY_READY names round {id}, ready_seq shows {published}"
    );
    {
        let round = ch.round().context("no round after MEMORY_READY")?;
        let before = round.to_vec();
        check_fill(&before, SIZE)?;
        for pass in 1..=PASSES {
            let mut copy = vec![0xAAu8; SIZE];
            let n = dev.read_buffer(&mut copy)?;
            ensure!(n == SIZE, "READ_BUFFER copied {n} of {SIZE} bytes");
            if let Some((i, was, now)) = first_difference(&before, &copy) {
                bail!("pass {pass}: READ_BUFFER byte {i} is {now:#04x}, the view held {was:#04x}");
            }
            ctx.klog.wait_for("Timer handler called", timeout())?;
            if let Some((i, was, now)) = first_difference(&before, &round) {
                bail!("pass {pass}: byte {i} of the held round changed {was:#04x} -> {now:#04x}");
            }
        }
        ensure!(
            ctrl.ready_seq() == published,
            "ready_seq moved {published} -> {} while round {id} was held",
            ctrl.ready_seq()
        );
        // Dropped without ack: the round stays outstanding.
    }
    let mark = 0xEEu8;
    ensure!(
        first_pattern_mismatch(&[mark]).is_some(),
        "the mark must differ from the fill"
    );
    let mut writer = dev.map(SIZE, Access::ReadWrite)?;
    writer.write_at(0, &[mark])?;
    for _ in 0..PASSES {
        ctx.klog.wait_for("Timer handler called", timeout())?;
    }
    {
        let round = ch
            .round()
            .context("a round dropped without ack was not lent again")?;
        ensure!(round.id() == id, "round {} lent again as {id}", round.id());
        ensure!(
            round[0] == mark,
            "byte 0 reads {:#04x} after {PASSES} timer passes: the module wrote the held round's buffer",
            round[0]
        );
        round.ack()?;
    }
    let next = match ch.next(timeout())? {
        Some(Event::MemoryReady { round }) => round,
        other => bail!("{other:?} where the round after the ack was expected"),
    };
    ensure!(
        next == id.wrapping_add(1),
        "round {next} followed round {id}"
    );
    {
        let round = ch
            .round()
            .context("no round after the second MEMORY_READY")?;
        check_fill(&round, SIZE).context("the fill after the ack did not restore the pattern")?;
        round.ack()?;
    }
    ctx.params.command(Code::StopTest)?;
    expect_event(&mut ch, Event::Stop, true)?;
    ctx.params.command(Code::ExitTest)?;
    expect_event(&mut ch, Event::Exit, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_must_match_the_fill_in_every_byte() {
        let good: Vec<u8> = (0..8192).map(kern2usr::abi::pattern_byte).collect();
        assert!(check_fill(&good, 8192).is_ok());
        assert!(check_fill(&good[..4096], 8192).is_err(), "short copy");
        for at in [0, 4095, 8191] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            let msg = check_fill(&bad, 8192).err().map(|e| e.to_string());
            let want = format!("data mismatch at offset {at}: ");
            assert!(
                msg.as_deref().is_some_and(|m| m.starts_with(&want)),
                "{msg:?}"
            );
        }
        let zeros = vec![0u8; 8192];
        let msg = check_fill(&zeros, 8192).err().map(|e| e.to_string());
        assert!(
            msg.as_deref()
                .is_some_and(|m| m.ends_with("(8159 byte(s) differ in all)")),
            "{msg:?}"
        );
    }

    #[test]
    fn accounting_allows_only_the_round_abandoned_by_stop() {
        assert!(check_accounting(300, 300, 300).is_ok());
        assert!(check_accounting(301, 300, 300).is_ok());
        assert!(check_accounting(301, 301, 300).is_ok());
        assert!(check_accounting(302, 300, 300).is_err(), "a round lost");
        assert!(
            check_accounting(300, 299, 300).is_err(),
            "counted but not handled"
        );
        assert!(
            check_accounting(300, 301, 300).is_err(),
            "handled but never published"
        );
    }

    #[test]
    fn consistency_catches_disorder_and_wrapped_times() {
        let mut h = Histogram::new();
        for ns in [1000u64, 2000, 3000, 4000] {
            h.record(ns);
        }
        let s = h.stats();
        assert!(check_consistent(&s, &h, Duration::from_secs(1)).is_ok());
        assert!(check_consistent(&s, &h, Duration::from_nanos(3000)).is_err());
        let bad = Stats { p90: 500, ..s };
        assert!(check_consistent(&bad, &h, Duration::from_secs(1)).is_err());
        let off = Stats { p50: 3968, ..s };
        assert!(check_consistent(&off, &h, Duration::from_secs(1)).is_err());
    }
}
