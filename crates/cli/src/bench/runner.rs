//! Running the benchmark in the guest: the floor in two threads, the
//! module's mechanisms through a [`Session`] of this process, with the
//! module loaded fresh for each buffer size; every mechanism
//! [`Config::repeats`] times, interleaved; then the several-channels runs
//! ([`super::scaling`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{format_size, Mechanism, Report, Run};
use kern2usr::abi::{pattern_byte, Code, MODULE_NAME};
use kern2usr::ctrl::CtrlPage;
use kern2usr::device::{first_pattern_mismatch, Access, MappedBuffer, Mismatch};
use kern2usr::error::{Error, Result};
use kern2usr::eventfd::EventFd;
use kern2usr::params::Params;
use kern2usr::session::{wait_adaptive, AdaptiveWake, CtrlPort, RoundTracker, Session};
use kern2usr::stats::format_ns;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Buffer sizes, in order.
    pub sizes: Vec<usize>,
    /// Rounds per run (one repeat of one mechanism); `None`:
    /// [`super::default_rounds`] of the size.
    pub rounds: Option<u64>,
    /// How many times each mechanism runs at each size, interleaved.
    pub repeats: u32,
    /// Channel counts of the several-channels runs (empty: none).
    pub scaling: Vec<usize>,
    /// Buffer size of the several-channels runs.
    pub scaling_size: usize,
    /// `ack_poll_us` of the `adaptive-poll` runs.
    pub ack_poll_us: u32,
    /// Mechanisms to run (the floor runs first, the others in this order).
    pub mechanisms: Vec<Mechanism>,
    /// The adaptive listener's spin budget.
    pub spin: Duration,
    /// The module file, insmod'ed for each size.
    pub module: PathBuf,
    /// The device node the module creates.
    pub device: PathBuf,
    /// The module's parameters.
    pub params: Params,
    /// Longest wait for any one round, command or parameter change.
    pub timeout: Duration,
    /// Run both floor threads on one CPU (no cross-CPU wake-ups).
    pub floor_same_cpu: bool,
    /// `k2u_bench_peers.ko`, insmod'ed for each peer run ([`super::peers`]).
    pub peers_module: PathBuf,
}

impl Config {
    fn rounds(&self, size: usize) -> u64 {
        self.rounds.unwrap_or_else(|| super::default_rounds(size))
    }
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

/// `items` rotated left by `k` places: repeat k's order, so that no
/// mechanism always runs first (after the module load) or last.
pub fn rotated<T: Copy>(items: &[T], k: u32) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let by = k as usize % v.len();
        v.rotate_left(by);
    }
    v
}

/// Run everything; progress lines go to `log`. Never fails as a whole: a
/// run that cannot complete is reported failed with its reason.
pub fn run(cfg: &Config, log: &mut dyn Write) -> Report {
    let mut report = Report::default();
    for &size in &cfg.sizes {
        let mut runs = one_size(cfg, size, log);
        report.runs.append(&mut runs);
    }
    if !cfg.scaling.is_empty() {
        report.scaling = scale(cfg, log);
    }
    report
}

/// One run of a peer (netlink or relay), which loads and unloads
/// `k2u_bench_peers.ko` itself.
pub fn peer(cfg: &Config, m: Mechanism, size: usize, target: u64) -> Run {
    match m {
        Mechanism::Netlink => super::peers::netlink(size, target, cfg.timeout, &cfg.peers_module),
        Mechanism::Relay => super::peers::relay(size, target, cfg.timeout, &cfg.peers_module),
        _ => {
            let mut r = Run::new(m, size, target);
            r.error = Some(format!("{} is no peer", m.name()));
            r
        }
    }
}

/// The several-channels runs: the module loaded once, each count of
/// channels once per repeat, interleaved.
fn scale(cfg: &Config, log: &mut dyn Write) -> Vec<super::scaling::ScaleRun> {
    let size = cfg.scaling_size;
    let rounds = cfg.rounds(size);
    let mut out = Vec::new();
    let loaded = load(cfg, size);
    for k in 0..cfg.repeats {
        for n in rotated(&cfg.scaling, k) {
            let mut r = match &loaded {
                Ok(()) => super::scaling::run(&cfg.device, n, size, rounds, k, cfg.timeout),
                Err(e) => super::scaling::ScaleRun::failed(
                    n,
                    size,
                    rounds,
                    k,
                    format!("loading the module: {e}"),
                ),
            };
            r.repeat = k;
            let _ = writeln!(
                log,
                "bench: {n} channel(s) of {} (repeat {k}): {}",
                format_size(size),
                match &r.error {
                    None => format!(
                        "{} rounds in {:.2} s, {:.0} rounds/s, p50 {}",
                        r.rounds,
                        r.wall.as_secs_f64(),
                        r.rounds_per_s(),
                        format_ns(r.p50())
                    ),
                    Some(e) => format!("FAILED: {e}"),
                }
            );
            out.push(r);
        }
    }
    if loaded.is_ok() {
        if let Err(e) = unload(cfg) {
            let _ = writeln!(log, "bench: several channels: rmmod failed: {e}");
        }
    }
    out
}

/// Every mechanism at `size`, `cfg.repeats` times, interleaved; the
/// module loaded once for the size (if any mechanism needs it).
fn one_size(cfg: &Config, size: usize, log: &mut dyn Write) -> Vec<Run> {
    let target = cfg.rounds(size);
    let needs_module = cfg
        .mechanisms
        .iter()
        .any(|&m| m != Mechanism::Floor && !m.is_peer());
    let mut bench = if needs_module {
        Some(
            load(cfg, size)
                .map_err(|e| format!("loading the module: {e}"))
                .and_then(|()| {
                    KernelBench::open(cfg, size).map_err(|e| format!("setting up: {e}"))
                }),
        )
    } else {
        None
    };
    let mut runs = Vec::new();
    for k in 0..cfg.repeats {
        for m in rotated(&cfg.mechanisms, k) {
            let before = super::cpu::busy();
            let mut r = match (m, &mut bench) {
                (Mechanism::Floor, _) => floor(size, target, cfg.timeout, cfg.floor_same_cpu),
                (m, _) if m.is_peer() => peer(cfg, m, size, target),
                (Mechanism::Ring, Some(Ok(_))) => ring(cfg, size, target),
                (_, Some(Ok(kb))) => {
                    let r = kb.run(m, target);
                    if matches!(m, Mechanism::Adaptive | Mechanism::AdaptivePoll) {
                        // Acks through the page last until the listener
                        // re-attaches; the others ack on efd2.
                        if let Err(e) = kb.reattach() {
                            kb.broken = Some(format!("re-attaching after {}: {e}", m.name()));
                        }
                    }
                    r
                }
                (_, Some(Err(e))) => {
                    let mut r = Run::new(m, size, target);
                    r.error = Some(e.clone());
                    r
                }
                (_, None) => Run::new(m, size, target),
            };
            r.cpu_busy = super::cpu::between(before, super::cpu::busy());
            r.repeat = k;
            progress(log, &r);
            runs.push(r);
        }
    }
    // Everything of the session is closed once `bench` is: the module can go.
    let loaded = matches!(bench, Some(Ok(_)));
    drop(bench);
    if loaded {
        if let Err(e) = unload(cfg) {
            let _ = writeln!(log, "bench: {}: rmmod failed: {e}", format_size(size));
            if let Some(last) = runs.last_mut() {
                last.error
                    .get_or_insert_with(|| format!("rmmod failed: {e}"));
            }
        }
    }
    runs
}

fn progress(log: &mut dyn Write, r: &Run) {
    let what = match &r.error {
        None if r.bad_rounds == 0 => format!(
            "{} rounds in {:.2} s, p50 {}, p99 {}",
            r.rounds,
            r.wall.as_secs_f64(),
            format_ns(r.p50()),
            format_ns(r.p99())
        ),
        None => format!("{} of {} rounds had bad data", r.bad_rounds, r.rounds),
        Some(e) => format!("FAILED after {} rounds: {e}", r.rounds),
    };
    // Progress output is best effort.
    let _ = writeln!(
        log,
        "bench: {} {} (repeat {}): {what}",
        format_size(r.size),
        r.mechanism.name(),
        r.repeat
    );
    let _ = log.flush();
}

/// The floor: this thread pings a responder thread over one eventfd and
/// waits for its pong on another; the responder copies `size` bytes and
/// checks them like the listener does. Timed on this thread. With
/// `same_cpu` both threads are pinned to the CPU this one runs on.
pub fn floor(size: usize, target: u64, timeout: Duration, same_cpu: bool) -> Run {
    let mut run = Run::new(Mechanism::Floor, size, target);
    let before = rustix::thread::sched_getaffinity(None).ok();
    if let Err(e) = floor_into(&mut run, timeout, same_cpu) {
        run.error = Some(e.to_string());
    }
    if let (true, Some(set)) = (same_cpu, before) {
        // Best effort: give this thread its CPUs back.
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
    run
}

/// Pin the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| protocol(format!("floor: cannot pin a thread to CPU {cpu}: {e}")))
}

fn floor_into(run: &mut Run, timeout: Duration, same_cpu: bool) -> Result<()> {
    let cpu = rustix::thread::sched_getcpu();
    if same_cpu {
        pin_to(cpu)?;
    }
    let ping = EventFd::new()?;
    let pong = EventFd::new()?;
    let src: Vec<u8> = (0..run.size).map(pattern_byte).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let responder = scope.spawn(|| -> Result<u64> {
            if same_cpu {
                pin_to(cpu)?;
            }
            let mut dst = vec![0u8; src.len()];
            let mut bad = 0;
            loop {
                if !ping.wait_readable(timeout)? {
                    return Err(protocol("floor: the responder got no ping"));
                }
                ping.read()?;
                if stop.load(Ordering::SeqCst) {
                    return Ok(bad);
                }
                dst.copy_from_slice(&src);
                if first_pattern_mismatch(&dst).is_some() {
                    bad += 1;
                }
                pong.write(1)?;
            }
        });
        let pinged = (|| -> Result<()> {
            let start = Instant::now();
            while run.rounds < run.target {
                let t = Instant::now();
                ping.write(1)?;
                if !pong.wait_readable(timeout)? {
                    return Err(protocol(format!("floor: no pong within {timeout:?}")));
                }
                pong.read()?;
                run.hist.record(duration_ns(t.elapsed()));
                run.rounds += 1;
                run.wall = start.elapsed();
            }
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        let woken = ping.write(1);
        let answered = responder
            .join()
            .map_err(|_| protocol("floor: the responder thread panicked"))?;
        pinged?;
        woken?;
        run.bad_rounds = answered?;
        Ok(())
    })
}

use super::duration_ns;

fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| protocol(format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(protocol(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn load(cfg: &Config, size: usize) -> Result<()> {
    if cfg.params.is_loaded() {
        unload(cfg)?;
    }
    let module = cfg.module.to_string_lossy().into_owned();
    sh(
        "insmod",
        &[&module, &format!("buffer_size={size}"), "back_to_back=1"],
    )?;
    wait_for_path(&cfg.device, cfg.timeout)
}

fn unload(_cfg: &Config) -> Result<()> {
    sh("rmmod", &[MODULE_NAME])
}

fn wait_for_path(path: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            return Err(protocol(format!(
                "{} did not appear within {timeout:?}",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The module at one size, attached to this process and mapped.
struct KernelBench<'a> {
    cfg: &'a Config,
    size: usize,
    session: Session,
    buffer: MappedBuffer,
    ctrl: Option<CtrlPage>,
    copy: Vec<u8>,
    own: Vec<u8>,
    /// A run left the session in an unknown state: skip the rest.
    broken: Option<String>,
}

impl<'a> KernelBench<'a> {
    fn open(cfg: &'a Config, size: usize) -> Result<Self> {
        let session = Session::register(&cfg.device, &cfg.params)?;
        let params = &cfg.params;
        params.command(Code::Mmap)?;
        let mut session = session;
        session.expect_code(Code::Mmap, cfg.timeout)?;
        let buffer = session.device().map(size, Access::ReadOnly)?;
        Ok(Self {
            cfg,
            size,
            session,
            buffer,
            ctrl: None,
            copy: Vec::with_capacity(size),
            own: vec![0u8; size],
            broken: None,
        })
    }

    /// REGISTER again with new eventfds (the old ones are unhooked by
    /// it) and MMAP: a fresh attach, so the acks through the control page
    /// that an adaptive run turned on end, and efd2 is an ack again. The
    /// buffer stays mapped.
    fn reattach(&mut self) -> Result<()> {
        let cfg = self.cfg;
        let mut fresh = Session::register(&cfg.device, &cfg.params)?;
        cfg.params.command(Code::Mmap)?;
        fresh.expect_code(Code::Mmap, cfg.timeout)?;
        self.session = fresh;
        self.ctrl = None;
        Ok(())
    }

    fn run(&mut self, mechanism: Mechanism, target: u64) -> Run {
        let mut run = Run::new(mechanism, self.size, target);
        if let Some(why) = &self.broken {
            run.error = Some(format!("skipped: {why}"));
            return run;
        }
        if let Err(e) = self.run_into(&mut run) {
            run.error = Some(e.to_string());
            // Best effort back to a known state: stopped, queue drained.
            let stopped = self.cfg.params.command(Code::StopTest).and_then(|()| {
                self.session
                    .skip_rounds_until(Code::StopTest, self.cfg.timeout)
            });
            if let Err(e) = stopped {
                self.broken = Some(format!(
                    "{} failed and STOP did not recover: {e}",
                    mechanism.name()
                ));
            }
        }
        if let Some(ctrl) = &self.ctrl {
            ctrl.set_asleep();
        }
        run
    }

    fn run_into(&mut self, run: &mut Run) -> Result<()> {
        let cfg = self.cfg;
        let adaptive = matches!(run.mechanism, Mechanism::Adaptive | Mechanism::AdaptivePoll);
        cfg.params.set_adaptive(adaptive)?;
        let poll_us = match run.mechanism {
            Mechanism::AdaptivePoll => cfg.ack_poll_us,
            _ => 0,
        };
        cfg.params
            .write(kern2usr::abi::param::ACK_POLL_US, &poll_us.to_string())?;
        if adaptive && self.ctrl.is_none() {
            self.ctrl = Some(self.session.map_ctrl()?);
        }
        let skipped_before = self.ctrl.as_ref().map(CtrlPage::doorbells_skipped);
        let mut first_bad: Option<Mismatch> = None;
        // No test runs: nothing is published while we read this.
        let mut tracker = RoundTracker::new(self.ctrl.as_ref().map_or(0, CtrlPage::ready_seq));
        let start = Instant::now();
        cfg.params.command(Code::StartTest)?;
        self.session.expect_code(Code::StartTest, cfg.timeout)?;
        while run.rounds < run.target {
            let round = if adaptive {
                let seq = self.next_adaptive_round(tracker.last())?;
                tracker.take(seq).map_err(protocol)?;
                Some(seq)
            } else {
                self.next_doorbell_round(run.rounds)?;
                None
            };
            let bad = match run.mechanism {
                Mechanism::Kern2usr | Mechanism::Adaptive | Mechanism::AdaptivePoll => {
                    self.buffer.copy_to_vec(&mut self.copy);
                    first_pattern_mismatch(&self.copy)
                }
                Mechanism::ZeroCopy => {
                    // SAFETY: between MEMORY_READY and our ack the module
                    // does not write the buffer (docs/PROTOCOL.md, "One
                    // round"), and this process maps it read-only; the
                    // slice is dropped at the end of this arm, before the
                    // ack below.
                    let data = unsafe { self.buffer.stable_slice() };
                    first_pattern_mismatch(data)
                }
                Mechanism::Classic => {
                    let n = self.session.device().read_buffer(&mut self.own)?;
                    if n != self.own.len() {
                        return Err(protocol(format!(
                            "K2U_IOC_READ_BUFFER copied {n} of {} bytes",
                            self.own.len()
                        )));
                    }
                    first_pattern_mismatch(&self.own)
                }
                Mechanism::Floor | Mechanism::Ring | Mechanism::Netlink | Mechanism::Relay => {
                    return Err(protocol(format!(
                        "{} is not run through the default channel",
                        run.mechanism.name()
                    )))
                }
            };
            if let Some(m) = bad {
                run.bad_rounds += 1;
                first_bad.get_or_insert(m);
            }
            match (run.mechanism, round) {
                (Mechanism::Classic, _) => self.session.ack_ioctl()?,
                // Found on the control page, maybe before its doorbell was
                // read (not shown yet): only its id closes it.
                // Through the control page: a system call only when the
                // module sleeps on efd2 (always with ack_poll_us=0).
                (Mechanism::Adaptive | Mechanism::AdaptivePoll, Some(seq)) => {
                    let ctrl = self
                        .ctrl
                        .as_ref()
                        .ok_or_else(|| protocol("adaptive run without the control page"))?;
                    if ctrl.ack_through_page(seq) {
                        self.session.wake_for_page_ack()?;
                        run.efd2_writes += 1;
                    }
                }
                _ => self.session.ack()?,
            }
            run.rounds += 1;
        }
        run.wall = start.elapsed();
        // The module accounts an ack in a work item: wait until it has
        // counted every round before stopping (STOP abandons the round in
        // flight, the next one with back_to_back).
        let deadline = Instant::now() + cfg.timeout;
        loop {
            let count = cfg.params.stats()?.count;
            if count >= run.target {
                break;
            }
            if Instant::now() >= deadline {
                return Err(protocol(format!(
                    "stats count is {count} {:?} after {} acknowledged rounds",
                    cfg.timeout, run.target
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        cfg.params.command(Code::StopTest)?;
        self.session
            .skip_rounds_until(Code::StopTest, cfg.timeout)?;
        if let (true, Some(ctrl)) = (adaptive, &self.ctrl) {
            // A round published after the last one taken (with its doorbell
            // skipped) was abandoned by STOP but stays lent until its ack:
            // the next run's rounds wait for it. The ack is late (EPROTO).
            let seq = ctrl.ready_seq();
            if tracker.is_new(seq) {
                match self.session.ack_round(seq as u32) {
                    Err(e) if e.errno() != Some(rustix::io::Errno::PROTO) => return Err(e),
                    _ => {}
                }
            }
        }
        let (stats, hist) = cfg.params.round_trips()?;
        run.hist = hist;
        run.kernel_stats = Some(stats);
        if let (Some(before), Some(ctrl)) = (skipped_before, &self.ctrl) {
            if adaptive {
                run.doorbells_skipped = Some(ctrl.doorbells_skipped().saturating_sub(before));
            }
        }
        if u128::from(stats.max) > run.wall.as_nanos() {
            return Err(protocol(format!(
                "the module's slowest round trip ({} ns) is longer than the whole run ({} ns): \
                 its clock went backwards or a negative time wrapped",
                stats.max,
                run.wall.as_nanos()
            )));
        }
        if stats.count != run.target {
            return Err(protocol(format!(
                "the module counted {} rounds, {} were acknowledged",
                stats.count, run.target
            )));
        }
        if let Some(m) = first_bad {
            return Err(protocol(format!(
                "{} round(s) with bad data, first: {m}",
                run.bad_rounds
            )));
        }
        Ok(())
    }

    /// Wait for MEMORY_READY (6); nothing else may come.
    fn next_doorbell_round(&mut self, done: u64) -> Result<()> {
        match self.session.next_code(self.cfg.timeout)? {
            Some(6) => Ok(()),
            Some(c) => Err(protocol(format!(
                "code {c} where MEMORY_READY (6) was expected after {done} rounds"
            ))),
            None => Err(protocol(format!(
                "no MEMORY_READY within {:?} after {done} rounds",
                self.cfg.timeout
            ))),
        }
    }

    /// Spin, then sleep, until `ready_seq` shows a round after `last`;
    /// returns it.
    fn next_adaptive_round(&mut self, last: u64) -> Result<u64> {
        let cfg = self.cfg;
        let Some(ctrl) = &self.ctrl else {
            return Err(protocol("adaptive run without the control page"));
        };
        let session = &mut self.session;
        loop {
            let mut port = CtrlPort {
                ctrl,
                next: |t| session.next_code(t),
            };
            match wait_adaptive(&mut port, last, cfg.spin, cfg.timeout)? {
                AdaptiveWake::Round { seq, .. } => return Ok(seq),
                // "Look at ready_seq" (maybe a round handled already).
                AdaptiveWake::Woken(6) => continue,
                AdaptiveWake::Woken(c) => {
                    return Err(protocol(format!(
                        "code {c} during the adaptive run after round {last}"
                    )))
                }
                AdaptiveWake::Timeout => {
                    return Err(protocol(format!(
                        "stalled after round {last}: ready_seq {} and no doorbell within {:?} (listener_state {})",
                        ctrl.ready_seq(),
                        cfg.timeout,
                        ctrl.listener_state()
                    )))
                }
            }
        }
    }
}

/// Slots of a ring run of `size`-byte slots: about 1 MiB of ring, at
/// least 8 slots and at most 64. The module sleeps on a full ring until
/// half of it is free again, so a deep ring lets it refill while the
/// listener still has half a ring to read (8 MiB at 1 MiB, within the
/// default `max_channel_memory`).
pub fn ring_slots(size: usize) -> u32 {
    let fit = (1usize << 20) / size.max(1);
    u32::try_from(fit.clamp(8, kern2usr::abi::RING_MAX_SLOTS as usize)).unwrap_or(8)
}

/// The ring: a ring channel of [`ring_slots`] slots of `size` bytes, back to
/// back; every slot checked in place (its round id and every byte) and
/// released through `ack_seq`. The module times each round from its
/// publish to the ack it took; it exports a channel's percentiles, not its
/// buckets, so the run's histogram is rebuilt from them
/// ([`super::hist_from_stats`]).
pub fn ring(cfg: &Config, size: usize, target: u64) -> Run {
    let mut run = Run::new(Mechanism::Ring, size, target);
    if let Err(e) = ring_into(cfg, &mut run) {
        run.error = Some(e.to_string());
    }
    run
}

fn ring_into(cfg: &Config, run: &mut Run) -> Result<()> {
    let mut ring = kern2usr::Ring::create(
        &kern2usr::ChannelOptions::new()
            .device(&cfg.device)
            .buffer_size(run.size)
            .back_to_back(true)
            .name("bench-ring")
            .ring(ring_slots(run.size)),
    )?;
    ring.set_spin(cfg.spin);
    ring.command(kern2usr::Command::Mmap)?;
    let start = Instant::now();
    ring.command(kern2usr::Command::Start)?;
    let id = ring.id();
    let pattern = super::ChannelPattern::new(run.size);
    let mut first_bad = None;
    while run.rounds < run.target {
        let Some(slot) = ring.next(cfg.timeout)? else {
            return Err(protocol(format!(
                "no round within {:?} after {} rounds ({:?})",
                cfg.timeout,
                run.rounds,
                ring.take_events()
            )));
        };
        if !pattern.matches(id, slot.round(), &slot) {
            run.bad_rounds += 1;
            if first_bad.is_none() {
                first_bad = kern2usr::ring::first_ring_mismatch(id, slot.round(), &slot)
                    .map(|m| (slot.round(), m));
            }
        }
        slot.release()?;
        run.rounds += 1;
    }
    run.wall = start.elapsed();
    run.efd2_writes = ring.efd2_writes();
    // The module takes acks when it looks at ack_seq: make it look.
    ring.kick()?;
    let deadline = Instant::now() + cfg.timeout;
    let stats = loop {
        let s = ring.stats()?.round_trips;
        if s.count >= run.target {
            break s;
        }
        if Instant::now() >= deadline {
            return Err(protocol(format!(
                "the module counted {} of {} released rounds",
                s.count, run.target
            )));
        }
        std::thread::yield_now();
    };
    ring.command(kern2usr::Command::Stop)?;
    run.doorbells_skipped = Some(ring.ctrl().doorbells_skipped());
    run.hist = super::hist_from_stats(&stats);
    run.kernel_stats = Some(stats);
    if let Some((round, (at, got, want))) = first_bad {
        return Err(protocol(format!(
            "{} round(s) with bad data, first: round {round} byte {at} is {got}, not {want}",
            run.bad_rounds
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_runs_on_the_host_with_exact_data() {
        let r = floor(65536, 200, Duration::from_secs(10), false);
        assert!(r.passed(), "{:?}", r.error);
        let pinned = floor(4096, 100, Duration::from_secs(10), true);
        assert!(pinned.passed(), "{:?}", pinned.error);
        assert_eq!(r.rounds, 200);
        assert_eq!(r.hist.count(), 200);
        assert!(r.p50() > 0 && r.p50() <= r.p99() && r.p99() <= r.max());
        assert!(r.wall > Duration::ZERO);
        assert!(r.rounds_per_s() > 0.0);
    }

    #[test]
    fn rings_hold_about_a_mebibyte_in_8_to_64_slots() {
        assert_eq!(ring_slots(4096), 64);
        assert_eq!(ring_slots(65536), 16);
        assert_eq!(ring_slots(1 << 20), 8);
        assert_eq!(ring_slots(16 << 20), 8);
    }

    #[test]
    fn a_missing_module_fails_every_kernel_run_with_the_reason() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = Config {
            sizes: vec![4096],
            rounds: Some(10),
            repeats: 2,
            scaling: vec![2],
            scaling_size: 4096,
            ack_poll_us: 100,
            mechanisms: vec![Mechanism::Floor, Mechanism::Kern2usr, Mechanism::Classic],
            spin: Duration::from_micros(50),
            module: dir.path().join("kern2usr.ko"),
            device: dir.path().join("dev"),
            params: Params::at_dir(dir.path().join("params")),
            timeout: Duration::from_secs(1),
            floor_same_cpu: true,
            peers_module: dir.path().join("k2u_bench_peers.ko"),
        };
        let mut log = Vec::new();
        let report = run(&cfg, &mut log);
        // Two repeats of three mechanisms, the second in rotated order.
        let order: Vec<(&str, u32)> = report
            .runs
            .iter()
            .map(|r| (r.mechanism.name(), r.repeat))
            .collect();
        assert_eq!(
            order,
            [
                ("floor", 0),
                ("kern2usr", 0),
                ("classic", 0),
                ("kern2usr", 1),
                ("classic", 1),
                ("floor", 1)
            ]
        );
        for r in &report.runs {
            if r.mechanism == Mechanism::Floor {
                assert!(r.passed(), "{:?}", r.error);
            } else {
                let e = r.error.as_deref().unwrap_or_default();
                assert!(e.starts_with("loading the module: "), "{e}");
            }
        }
        assert_eq!(report.scaling.len(), 2);
        for r in &report.scaling {
            let e = r.error.as_deref().unwrap_or_default();
            assert!(e.starts_with("loading the module: "), "{e}");
        }
        assert_eq!(report.closing_line(), "bench: 2 passed, 6 failed");
        let log = String::from_utf8(log)?;
        assert!(
            log.contains("bench: 4 KiB floor (repeat 1): 10 rounds in"),
            "{log}"
        );
        assert!(
            log.contains("bench: 4 KiB classic (repeat 0): FAILED after 0 rounds"),
            "{log}"
        );
        assert!(
            log.contains("bench: 2 channel(s) of 4 KiB (repeat 1): FAILED: loading the module"),
            "{log}"
        );
        Ok(())
    }
}
