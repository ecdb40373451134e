//! The `ring` suite (issue 11, ABI 4): ring channels (`CREATE_RING`) and
//! acks through the control page (`ack_seq`), against whichever module is
//! loaded: the library's [`Ring`] as a program uses it, every slot's
//! bytes, round id and length checked; back pressure; bad acks and bad
//! CREATEs; STOP/START with slots lent; a ring's memory back at its
//! release; the module's ack polling (`ack_poll_us`); page acks on the
//! default channel. Run it with `cargo xtask test --suite ring`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{
    param, Code, Create, CREATE_ATTACH, CREATE_BACK_TO_BACK, CREATE_RING, DEVICE_PATH,
    KERNEL_ASLEEP, KERNEL_POLLING, LISTENER_SPINNING, MAX_ACK_POLL_US,
};
use kern2usr::ring::first_ring_mismatch;
use kern2usr::{
    Access, Channel, ChannelOptions, Command, CtrlPage, Device, Event, EventFd, Pacing, Ring,
    Session,
};
use rustix::io::Errno;

use crate::common::check_round;
use crate::guest::{self, timeout};
use crate::harness::{Ctx, Test};

/// The suite's tests.
pub const TESTS: &[Test] = &[
    (
        "ring of 8 x 4 KiB back to back: 1500 rounds in order, every byte, round id and length of every slot; listing b2b+ring, INFO and stats show the slot size; rounds/s at 4 KiB and 1 MiB",
        ring_rounds,
    ),
    (
        "back pressure: a listener that stops consuming gets exactly ring_slots rounds, ring_full counts, nothing is overwritten; consuming resumes the rounds",
        back_pressure,
    ),
    (
        "ack_seq beyond the last round published is ignored with one log line; the ring goes on",
        ack_out_of_range,
    ),
    (
        "timer-paced ring (timer+ring): a tick publishes one round; a full ring publishes nothing and counts ring_full; consuming resumes it",
        timer_ring,
    ),
    (
        "K2U_IOC_ACK and K2U_IOC_ACK_ROUND on a ring are EOPNOTSUPP with one log line",
        ioctl_acks_refused,
    ),
    (
        "STOP with slots lent: no publish, lent slots keep their bytes, rounds before STOP are not counted; START continues at ready_seq + 1",
        stop_start_with_slots_lent,
    ),
    (
        "a ring's release returns its slots and its whole memory (ring_slots x size counts against max_channel_memory)",
        release_returns_memory,
    ),
    (
        "bad CREATEs: ring_slots 0/1/3/128, slots x size too big, ring_slots without CREATE_RING, CREATE_ATTACH|CREATE_RING: EINVAL",
        bad_creates,
    ),
    (
        "ack_poll_us: out of range refused; on a back-to-back adaptive channel with page acks, 0 makes every round an efd2 write, 1000 fewer (kernel_state POLLING seen; the count is printed)",
        ack_polling,
    ),
    (
        "page acks on the default channel, adaptive back to back, ack_poll_us=0: every round closes, no late-ack or out-of-range line",
        default_channel_page_acks,
    ),
    (
        "while the module polls (ack_poll_us=1000), an ack_seq naming an older round (closed by K2U_IOC_ACK_ROUND) keeps it polling: the page ack of the open round closes it and the next round comes",
        older_page_ack_while_polling,
    ),
];

/// A fresh module with its node.
fn fresh(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)
}

/// A back-to-back ring of `slots` x `size`, started, spinning `spin`.
fn started_ring(slots: u32, size: usize, spin: Duration) -> Result<Ring> {
    let mut ring = Ring::create(
        &ChannelOptions::new()
            .buffer_size(size)
            .back_to_back(true)
            .ring(slots),
    )
    .with_context(|| format!("Ring::create({slots} x {size})"))?;
    ring.set_spin(spin);
    ring.command(Command::Mmap)?;
    ring.command(Command::Start)?;
    Ok(ring)
}

/// Channel `id`'s pattern, precomputed: every byte checked with one memcmp.
struct Pattern {
    bytes: kern2usr::device::ChannelPattern,
    id: u32,
}

impl Pattern {
    fn new(id: u32, size: usize) -> Self {
        Self {
            bytes: kern2usr::device::ChannelPattern::new(size),
            id,
        }
    }

    fn expected(&self, round: u64, len: usize) -> &[u8] {
        self.bytes.expected(self.id, round, len).unwrap_or_default()
    }
}

/// Take round `want` from `ring`, check its slot, bytes and length, and
/// release it.
fn take(ring: &mut Ring, want: u64) -> Result<()> {
    let pattern = Pattern::new(ring.id(), ring.slot_size());
    take_with(ring, want, &pattern)
}

/// [`take`] with the channel's precomputed pattern.
fn take_with(ring: &mut Ring, want: u64, pattern: &Pattern) -> Result<()> {
    let id = ring.id();
    let size = ring.slot_size();
    let slots = u64::from(ring.slots());
    let slot = ring
        .next(timeout())?
        .with_context(|| format!("ring {id}: no round {want} within {:?}", timeout()))?;
    ensure!(
        slot.round() == want,
        "ring {id}: round {}, expected {want}",
        slot.round()
    );
    ensure!(
        slot.index() as u64 == (want - 1) % slots,
        "ring {id}: round {want} in slot {}",
        slot.index()
    );
    ensure!(
        slot.len() == size,
        "ring {id}: round {want} is {} bytes, expected {size}",
        slot.len()
    );
    if *slot != *pattern.expected(want, size) {
        if let Some((i, got, exp)) = first_ring_mismatch(id, want, &slot) {
            bail!("ring {id} round {want}: byte {i} is {got:#04x}, expected {exp:#04x}");
        }
        bail!("ring {id} round {want}: the precomputed pattern is wrong");
    }
    slot.release()?;
    Ok(())
}

/// Wait until `done` holds for the control page (polling it, bounded).
fn wait_page(what: &str, page: &CtrlPage, done: impl Fn(&CtrlPage) -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout();
    while !done(page) {
        ensure!(
            Instant::now() < deadline,
            "{what} not seen within {:?}: {:?}",
            timeout(),
            (
                page.ready_seq(),
                page.ack_seq(),
                page.kernel_state(),
                page.wake_seq(),
                page.ring_full()
            )
        );
        std::thread::yield_now();
    }
    Ok(())
}

/// The module filled the ring (`slots` rounds after `acked`) and went to
/// sleep on efd2: from here it publishes nothing until an ack wakes it.
fn wait_full_and_asleep(ring: &Ring, acked: u64) -> Result<()> {
    let slots = u64::from(ring.slots());
    wait_page("the ring full and its producer asleep", ring.ctrl(), |p| {
        p.ready_seq() == acked + slots && p.kernel_state() == KERNEL_ASLEEP && p.wake_seq() > acked
    })
}

/// Every slot holds its round (`first..first + slots`) with its bytes.
fn check_all_slots(ring: &Ring, first: u64) -> Result<()> {
    let size = ring.slot_size();
    let mut data = vec![0u8; size];
    for r in first..first + u64::from(ring.slots()) {
        let index = ((r - 1) % u64::from(ring.slots())) as usize;
        let entry = ring.ctrl().slot(index).context("slot entry")?;
        ensure!(
            entry.round == r && entry.len == size as u64,
            "slot {index}: entry {entry:?}, expected round {r}"
        );
        ring.buffer()
            .copy_range(index * size, &mut data)
            .context("slot range")?;
        check_round(ring.id(), r, &data).with_context(|| format!("slot {index}"))?;
    }
    Ok(())
}

/// Rounds/s of `rounds` back-to-back ring rounds of `size` bytes, 8
/// slots, every byte checked, the listener spinning `spin` before it sleeps.
fn ring_rate(size: usize, rounds: u64, spin: Duration) -> Result<f64> {
    let mut ring = started_ring(8, size, spin)?;
    let pattern = Pattern::new(ring.id(), size);
    let t0 = Instant::now();
    for r in 1..=rounds {
        take_with(&mut ring, r, &pattern)?;
    }
    let rate = rounds as f64 / t0.elapsed().as_secs_f64();
    ring.command(Command::Stop)?;
    Ok(rate)
}

fn ring_rounds(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    const ROUNDS: u64 = 1500;
    let mut ring = started_ring(8, 4096, Duration::from_micros(200))?;
    ensure!(ring.ctrl().ring_slots() == 8, "ctrl.ring_slots");
    let info = ring.device().info()?;
    ensure!(
        info.buffer_size == 4096 && info.channel_id == ring.id(),
        "INFO {info:?}"
    );
    let pattern = Pattern::new(ring.id(), 4096);
    let t0 = Instant::now();
    for r in 1..=ROUNDS {
        take_with(&mut ring, r, &pattern)?;
    }
    let rate = ROUNDS as f64 / t0.elapsed().as_secs_f64();
    let list = ctx.params.channels()?;
    let entry = list
        .iter()
        .find(|e| e.id == ring.id())
        .context("the ring is not listed")?;
    ensure!(
        entry.pacing == Pacing::BackToBackRing && entry.buffer_size == 4096,
        "listing: {entry:?}"
    );
    ring.command(Command::Stop)?;
    let st = ring.stats()?;
    ensure!(
        st.buffer_size == 4096 && st.round_trips.count >= ROUNDS - 8,
        "stats after {ROUNDS} rounds: {st:?}"
    );
    ensure!(
        st.rounds_published >= ROUNDS && st.rounds_published <= ROUNDS + 8,
        "{} rounds published after {ROUNDS} consumed (8 slots)",
        st.rounds_published
    );
    drop(ring);
    let big = ring_rate(1 << 20, 200, Duration::from_micros(200))?;
    let big_spin = ring_rate(1 << 20, 200, Duration::from_millis(5))?;
    println!(
        "# ring 8 slots back to back, every byte checked: 4 KiB {rate:.0} rounds/s; 1 MiB {big:.0} rounds/s (listener spins 200 us), {big_spin:.0} rounds/s (spins 5 ms)"
    );
    Ok(())
}

fn back_pressure(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    let mut ring = started_ring(4, 8192, Duration::ZERO)?;
    wait_full_and_asleep(&ring, 0)?;
    ensure!(
        ring.ctrl().ring_full() >= 1,
        "ring_full {} with the ring full",
        ring.ctrl().ring_full()
    );
    check_all_slots(&ring, 1)?;
    ensure!(ring.ctrl().ready_seq() == 4, "published past a full ring");
    // Consume everything, with the bytes of rounds 5.. checked as they come.
    for r in 1..=12 {
        take(&mut ring, r)?;
    }
    ensure!(
        ring.efd2_writes() >= 1,
        "the sleeping producer was never woken through efd2"
    );
    // The module may sleep until ack_seq reaches a wake_seq past 12 (half
    // the ring after an ack it took on the way): "look at ack_seq" now.
    ring.kick()?;
    // Full again after 12 consumed, nothing overwritten.
    wait_full_and_asleep(&ring, 12)?;
    check_all_slots(&ring, 13)?;
    ring.command(Command::Stop)?;
    Ok(())
}

fn timer_ring(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    let mut ring = Ring::create(
        &ChannelOptions::new()
            .period(Duration::from_millis(5))
            .ring(4),
    )?;
    let list = ctx.params.channels()?;
    let entry = list
        .iter()
        .find(|e| e.id == ring.id())
        .context("the ring is not listed")?;
    ensure!(entry.pacing == Pacing::TimerRing, "listing: {entry:?}");
    ring.command(Command::Mmap)?;
    ring.command(Command::Start)?;
    wait_page("a timer ring full", ring.ctrl(), |p| {
        p.ready_seq() == 4 && p.ring_full() >= 1
    })?;
    check_all_slots(&ring, 1)?;
    ensure!(ring.ctrl().ready_seq() == 4, "published past a full ring");
    for r in 1..=12 {
        take(&mut ring, r)?;
    }
    ring.command(Command::Stop)?;
    let st = ring.stats()?;
    ensure!(
        st.round_trips.count >= 8 && st.round_trips.count <= 12,
        "{} rounds counted after 12 consumed",
        st.round_trips.count
    );
    Ok(())
}

fn ack_out_of_range(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    let mut ring = started_ring(4, 4096, Duration::ZERO)?;
    let id = ring.id();
    wait_full_and_asleep(&ring, 0)?;
    // Beyond ready_seq (4): the module ignores it and says so.
    let wake = ring.ctrl().ack_through_page(100);
    ensure!(
        wake,
        "asleep with wake_seq <= 100: the rule says write efd2"
    );
    ring.kick()?;
    ctx.klog.wait_for(
        &format!("channel {id}: ack_seq 100 out of range (acked 0, published 4): ignored"),
        timeout(),
    )?;
    check_all_slots(&ring, 1)?;
    // The real acks go on from there.
    for r in 1..=10 {
        take(&mut ring, r)?;
    }
    ring.command(Command::Stop)?;
    let lines = ctx.klog.take_new_ours()?;
    ensure!(
        !lines.iter().any(|l| l.contains("out of range")),
        "more out-of-range lines: {lines:?}"
    );
    Ok(())
}

fn ioctl_acks_refused(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    let mut ring = started_ring(2, 4096, Duration::ZERO)?;
    let id = ring.id();
    wait_full_and_asleep(&ring, 0)?;
    for (what, r) in [
        ("K2U_IOC_ACK", ring.device().ack()),
        ("K2U_IOC_ACK_ROUND(1)", ring.device().ack_round(1)),
    ] {
        match r {
            Ok(()) => bail!("{what} on a ring succeeded"),
            Err(e) => ensure!(
                e.errno() == Some(Errno::OPNOTSUPP),
                "{what}: {e}; expected EOPNOTSUPP"
            ),
        }
        ctx.klog.wait_for(
            &format!("channel {id}: ring channel: acks go through ack_seq"),
            timeout(),
        )?;
    }
    // Nothing was acked by them.
    ensure!(ring.ctrl().ready_seq() == 2, "published after ioctl acks");
    for r in 1..=6 {
        take(&mut ring, r)?;
    }
    ring.command(Command::Stop)?;
    Ok(())
}

fn stop_start_with_slots_lent(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    let mut ring = started_ring(4, 4096, Duration::ZERO)?;
    wait_full_and_asleep(&ring, 0)?;
    ring.command(Command::Stop)?;
    let evs = wait_event(&mut ring, Event::Stop)?;
    ensure!(
        ring.ctrl().ready_seq() == 4,
        "published after STOP: {evs:?}"
    );
    // The lent slots keep their bytes; consuming two of them frees their
    // slots but publishes nothing (no test runs).
    check_all_slots(&ring, 1)?;
    take(&mut ring, 1)?;
    take(&mut ring, 2)?;
    check_all_slots(&ring, 1)?;
    ensure!(ring.ctrl().ready_seq() == 4, "published while stopped");
    ring.command(Command::Start)?;
    // Continues at 5, in the two free slots.
    for r in 3..=12 {
        take(&mut ring, r)?;
    }
    ring.command(Command::Stop)?;
    let st = ring.stats()?;
    // Rounds 5..=12 were acked before STOP took the ack; 3 and 4 were
    // published before the first STOP: not counted.
    ensure!(
        st.round_trips.count == 8,
        "{} rounds counted, expected 8 (5..=12): {st:?}",
        st.round_trips.count
    );
    Ok(())
}

/// Read events (not rounds) until `want` comes, bounded.
fn wait_event(ring: &mut Ring, want: Event) -> Result<Vec<Event>> {
    let deadline = Instant::now() + timeout();
    let mut seen = Vec::new();
    while !seen.contains(&want) {
        ensure!(Instant::now() < deadline, "no {want:?}; events {seen:?}");
        seen.extend(ring.wait_events(Duration::from_millis(100))?);
    }
    Ok(seen)
}

fn release_returns_memory(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    let budget: u64 = 8 * 64 * 1024;
    ctx.params
        .write(param::MAX_CHANNEL_MEMORY, &budget.to_string())?;
    let ring = started_ring(8, 64 * 1024, Duration::ZERO)?;
    let id = ring.id();
    wait_full_and_asleep(&ring, 0)?;
    // The whole ring counts: one more page does not fit.
    match Channel::create(&ChannelOptions::new()) {
        Ok(_) => bail!("a 4 KiB channel fit beside a ring that uses the whole budget"),
        Err(e) => ensure!(e.errno() == Some(Errno::NOSPC), "{e}; expected ENOSPC"),
    }
    drop(ring);
    ctx.klog
        .wait_for(&format!("channel {id} released"), timeout())?;
    ensure!(
        ctx.params.channels()?.len() == 1,
        "the released ring is still listed"
    );
    // All of it is back.
    let mut again = started_ring(8, 64 * 1024, Duration::ZERO)?;
    for r in 1..=9 {
        take(&mut again, r)?;
    }
    again.command(Command::Stop)?;
    Ok(())
}

fn bad_creates(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    let dev = Device::open(DEVICE_PATH)?;
    let efd = EventFd::new()?;
    let efd2 = EventFd::new()?;
    let base = |size: u64, flags: u32, slots: u32| Create {
        efd: std::os::fd::AsRawFd::as_raw_fd(&efd),
        efd2: std::os::fd::AsRawFd::as_raw_fd(&efd2),
        buffer_size: size,
        flags,
        ring_slots: slots,
        ..Create::default()
    };
    let cases = [
        ("ring_slots 0", base(4096, CREATE_RING, 0)),
        ("ring_slots 1", base(4096, CREATE_RING, 1)),
        ("ring_slots 3", base(4096, CREATE_RING, 3)),
        ("ring_slots 128", base(4096, CREATE_RING, 128)),
        ("64 x 512 KiB", base(512 << 10, CREATE_RING, 64)),
        ("ring_slots without CREATE_RING", base(4096, 0, 4)),
        (
            "CREATE_ATTACH|CREATE_RING",
            Create {
                name: *b"sample\0\0\0\0\0\0\0\0\0\0",
                ..base(0, CREATE_ATTACH | CREATE_RING, 4)
            },
        ),
    ];
    for (what, req) in cases {
        match dev.create(&req) {
            Ok(made) => bail!("{what}: CREATE made channel {}", made.id),
            Err(e) => ensure!(
                e.errno() == Some(Errno::INVAL),
                "{what}: {e}; expected EINVAL"
            ),
        }
        ctx.klog
            .wait_for("CREATE refused: <any>", timeout())
            .with_context(|| format!("{what}: the refusal's line"))?;
    }
    // The largest ring that fits is made.
    let made = dev.create(&base(256 << 10, CREATE_RING | CREATE_BACK_TO_BACK, 64))?;
    ensure!(made.buffer_size == 256 << 10, "{made:?}");
    Ok(())
}

/// Page-acking listener of a created back-to-back adaptive channel:
/// `rounds` rounds, every byte checked; returns (efd2 writes, POLLING
/// seen).
fn page_ack_rounds(rounds: u64) -> Result<(u64, bool, u64)> {
    let mut ch = Channel::create(
        &ChannelOptions::new()
            .buffer_size(4096)
            .back_to_back(true)
            .adaptive(true),
    )?;
    let id = ch.id();
    ch.command(Command::Mmap)?;
    let page = ch.ctrl().context("a created channel's page")?;
    page.set_spinning();
    // Before START: back to back, round 1 may come at once.
    let start = page.ready_seq();
    ch.command(Command::Start)?;
    let (mut writes, mut polling) = (0u64, false);
    let mut data = Vec::with_capacity(4096);
    let mut last = start;
    let mut since = 0u32;
    while last < start + rounds {
        let deadline = Instant::now() + timeout();
        let page = ch.ctrl().context("page")?;
        while page.ready_seq() == last {
            ensure!(Instant::now() < deadline, "round {} never came", last + 1);
            std::hint::spin_loop();
        }
        let seq = page.ready_seq();
        ensure!(seq == last + 1, "ready_seq went from {last} to {seq}");
        ch.buffer().copy_to_vec(&mut data);
        check_round(id, seq, &data)?;
        polling |= page.kernel_state() == KERNEL_POLLING;
        if ch.ack_page(seq)? {
            writes += 1;
        }
        last = seq;
        since += 1;
        if since >= 256 {
            since = 0;
            while ch.try_next()?.is_some() {}
        }
    }
    let page = ch.ctrl().context("page")?;
    page.set_asleep();
    ch.command(Command::Stop)?;
    while ch.try_next()?.is_some() {}
    let counted = ch.stats()?.round_trips.count;
    Ok((writes, polling, counted))
}

fn ack_polling(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    for bad in [(MAX_ACK_POLL_US + 1).to_string(), "-1".into(), "x".into()] {
        crate::common::expect_param_refused(ctx, param::ACK_POLL_US, &bad)?;
    }
    ensure!(
        ctx.params.read(param::ACK_POLL_US)?.trim() == "0",
        "default 0"
    );
    const N: u64 = 400;
    let (writes, polling, counted) = page_ack_rounds(N)?;
    ensure!(
        !polling,
        "ack_poll_us=0: kernel_state POLLING seen ({writes} efd2 writes)"
    );
    ensure!(
        writes == N,
        "ack_poll_us=0: {writes} efd2 writes in {N} rounds, expected one per round"
    );
    ensure!(counted >= N - 1, "ack_poll_us=0: {counted} rounds counted");
    ctx.params
        .write(param::ACK_POLL_US, &MAX_ACK_POLL_US.to_string())?;
    let (writes, polling, counted) = page_ack_rounds(N)?;
    println!("# ack_poll_us={MAX_ACK_POLL_US}: {writes} efd2 writes in {N} rounds");
    ensure!(polling, "ack_poll_us={MAX_ACK_POLL_US}: POLLING never seen");
    // How many depends on how fast the emulated listener is (a round
    // slower than 1 ms falls back to efd2); a poll that took no ack at
    // all would leave one write per round, as with 0.
    ensure!(
        writes < N,
        "ack_poll_us={MAX_ACK_POLL_US}: {writes} efd2 writes in {N} rounds: the poll took no ack (with 0 it is one per round)"
    );
    ensure!(
        counted >= N - 1,
        "ack_poll_us=1000: {counted} rounds counted"
    );
    ctx.params.write(param::ACK_POLL_US, "0")?;
    let lines = ctx.klog.take_new_ours()?;
    ensure!(
        !lines
            .iter()
            .any(|l| l.contains("late ack") || l.contains("out of range")),
        "{lines:?}"
    );
    Ok(())
}

fn default_channel_page_acks(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    ctx.params.set_back_to_back(true)?;
    ctx.params.set_adaptive(true)?;
    let mut s = Session::register(DEVICE_PATH, &ctx.params)?;
    let page = s.map_ctrl()?;
    let buf = s.device().map(4096, Access::ReadOnly)?;
    ctx.params.command(Code::Mmap)?;
    s.expect_code(Code::Mmap, timeout())?;
    page.set_spinning();
    ensure!(page.listener_state() == LISTENER_SPINNING);
    let start = page.ready_seq();
    ctx.params.command(Code::StartTest)?;
    s.expect_code(Code::StartTest, timeout())?;
    const N: u64 = 300;
    let mut data = Vec::with_capacity(4096);
    let mut last = start;
    let mut writes = 0;
    while last < start + N {
        let deadline = Instant::now() + timeout();
        while page.ready_seq() == last {
            ensure!(Instant::now() < deadline, "round {} never came", last + 1);
            std::hint::spin_loop();
        }
        let seq = page.ready_seq();
        ensure!(seq == last + 1, "ready_seq went from {last} to {seq}");
        buf.copy_to_vec(&mut data);
        check_round(0, seq, &data)?;
        if page.ack_through_page(seq) {
            writes += 1;
            s.efd2().write(7)?;
        }
        last = seq;
    }
    page.set_asleep();
    ctx.params.command(Code::StopTest)?;
    let st = ctx.params.stats()?;
    ensure!(
        st.count >= N - 1 && st.count <= N,
        "{} rounds counted after {N} page acks",
        st.count
    );
    ensure!(
        writes == N,
        "{writes} efd2 writes, ack_poll_us=0 needs one per round"
    );
    let lines = ctx.klog.take_new_ours()?;
    ensure!(
        !lines
            .iter()
            .any(|l| l.contains("late ack") || l.contains("out of range")),
        "{lines:?}"
    );
    Ok(())
}

/// Spin until the default channel's `ready_seq` is `want`.
fn wait_ready(page: &CtrlPage, want: u64) -> Result<()> {
    let deadline = Instant::now() + timeout();
    while page.ready_seq() < want {
        ensure!(Instant::now() < deadline, "round {want} never came");
        std::hint::spin_loop();
    }
    ensure!(
        page.ready_seq() == want,
        "ready_seq {} past round {want}: a round was published before the last one's ack",
        page.ready_seq()
    );
    Ok(())
}

/// Page acks mixed with an ack by id: an `ack_seq` the poll takes but that
/// closes nothing must not end the poll with the page still POLLING (the
/// listener would then write no efd2 for the open round's ack, and the
/// rounds stop).
fn older_page_ack_while_polling(ctx: &mut Ctx) -> Result<()> {
    fresh(ctx)?;
    ctx.params.set_back_to_back(true)?;
    ctx.params.set_adaptive(true)?;
    ctx.params
        .write(param::ACK_POLL_US, &MAX_ACK_POLL_US.to_string())?;
    let mut s = Session::register(DEVICE_PATH, &ctx.params)?;
    let page = s.map_ctrl()?;
    ctx.params.command(Code::Mmap)?;
    s.expect_code(Code::Mmap, timeout())?;
    page.set_spinning();
    let r0 = page.ready_seq();
    ctx.params.command(Code::StartTest)?;
    s.expect_code(Code::StartTest, timeout())?;
    // Round 1 through the page: page acks on.
    wait_ready(&page, r0 + 1)?;
    if page.ack_through_page(r0 + 1) {
        s.wake_for_page_ack()?;
    }
    // Round 2 by id: ack_seq stays at round 1.
    wait_ready(&page, r0 + 2)?;
    s.ack_round((r0 + 2) as u32)?;
    // Round 3, polled for: first round 2's id (closed already), then its own.
    wait_ready(&page, r0 + 3)?;
    let mut writes = 0;
    for id in [r0 + 2, r0 + 3] {
        if page.ack_through_page(id) {
            s.wake_for_page_ack()?;
            writes += 1;
        }
    }
    let outcome = wait_ready(&page, r0 + 4);
    let state = (page.kernel_state(), page.wake_seq(), page.ack_seq());
    page.set_asleep();
    ctx.params.write(param::ACK_POLL_US, "0")?;
    ctx.params.command(Code::StopTest)?;
    outcome.with_context(|| {
        format!("after ack_seq {} then {} ({writes} efd2 writes): kernel_state, wake_seq, ack_seq = {state:?}", r0 + 2, r0 + 3)
    })?;
    let st = ctx.params.stats()?;
    ensure!(st.count >= 3, "{} rounds counted, 3 were acked", st.count);
    let lines = ctx.klog.take_new_ours()?;
    ensure!(
        !lines
            .iter()
            .any(|l| l.contains("late ack") || l.contains("out of range")),
        "{lines:?}"
    );
    Ok(())
}
