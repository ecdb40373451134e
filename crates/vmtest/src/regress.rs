//! The `regress` suite: one test per protocol defect of issue 7 (each
//! failed before its fix), checking the rules PROTOCOL.md now states:
//! re-attaching keeps undelivered codes, acks close only their own round,
//! STOP and EXIT fit in a full queue, counter mode's eventfd checks, the
//! ptrace check of FIND, a forked-then-killed listener, private mappings;
//! (issue 9) a shown round keeps the buffer lent across STOP/START; and a
//! read() blocked across a re-attach takes none of the new listener's
//! records.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{channel_pattern_byte, param, Code, EventMode, CTRL_MMAP_OFFSET, PARAMS_DIR};
use kern2usr::device::{first_pattern_mismatch, Access};
use kern2usr::{ChannelOptions, Command as ChanCmd, Error, Event, EventFd};
use rustix::event::EventfdFlags;
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::process::{Pid, Signal};
use rustix::thread::{remove_capability_from_bounding_set, CapabilitySet};

use crate::common::{errno_text, expect_refused, SelfListener};
use crate::guest::{self, scaled, timeout};
use crate::harness::{Ctx, Test};
use crate::holder::{READING_LINE, READY_LINE, READ_LINE};
use crate::kmsg::KernelLog;
use crate::listener::ListenerProc;

/// The suite's tests.
pub const TESTS: &[Test] = &[
    (
        "re-FIND and REGISTER with the same eventfds keep an undelivered MMAP (5a)",
        reattach_keeps_pending,
    ),
    (
        "FIND of another listener while one has an undelivered code is EBUSY; the code still arrives (5a)",
        replace_with_pending_is_ebusy,
    ),
    (
        "a listener that always acks 50 ms late: START/STOP churn never credits a later round (5b)",
        late_acks_never_close_later_rounds,
    ),
    (
        "K2U_IOC_ACK_ROUND closes its round, ESTALE for another id, EPROTO with none; K2U_IOC_ACK before the round is shown is ESTALE (5b)",
        ack_round_ids,
    ),
    (
        "14 on efd2 is one ack plus one late ack; back-to-back goes on (5b)",
        two_acks_in_one_read,
    ),
    (
        "STOP and EXIT are accepted with the event queue full; every event arrives in order (5c)",
        stop_exit_with_full_queue,
    ),
    (
        "counter mode: an efd with a pending count is refused at FIND (queue mode accepts it) (5d)",
        pending_count_at_find,
    ),
    (
        "counter mode: an EFD_SEMAPHORE efd is detected at its first code and detached (queue mode serves it) (5d)",
        semaphore_efd,
    ),
    (
        "FIND into another user's process without CAP_SYS_PTRACE is EPERM (5e)",
        find_needs_ptrace_access,
    ),
    (
        "a listener that forked and was killed is detached at the next command (5i)",
        forked_listener_killed,
    ),
    (
        "MAP_PRIVATE read-write: sees the fill, its writes stay its own; private control page is EINVAL (1)",
        private_mapping,
    ),
    (
        "default channel: a shown round stays lent across STOP/START (timer and back-to-back): no fill, no MEMORY_READY until its ack (9)",
        lent_round_default_channel,
    ),
    (
        "created channel: the Round guard's bytes do not change across STOP/START until its ack; the next round is fresh (9)",
        lent_round_created_channel,
    ),
    (
        "a listener without CAP_SYS_ADMIN blocked in read() when root FINDs another process: EPERM at once; the new listener gets every record",
        blocked_read_across_refind,
    ),
];

fn loaded(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)
}

fn errno_of(e: &Error) -> Option<Errno> {
    e.errno()
}

/// A result that must be the errno `want`.
fn expect_errno(what: &str, r: kern2usr::Result<()>, want: Errno) -> Result<()> {
    match r {
        Ok(()) => bail!("{what} succeeded; expected {}", errno_text(want)),
        Err(e) => ensure!(
            errno_of(&e) == Some(want),
            "{what}: {e}; expected {}",
            errno_text(want)
        ),
    }
    Ok(())
}

/// MMAP and START, each delivered to `l`.
fn map_and_start(ctx: &mut Ctx, l: &mut SelfListener) -> Result<()> {
    ctx.params.command(Code::Mmap)?;
    l.expect_code(Code::Mmap)?;
    ctx.params.command(Code::StartTest)?;
    l.expect_code(Code::StartTest)
}

/// Wait until the stats count reaches `n`.
fn wait_stats_count(ctx: &mut Ctx, n: u64, within: Duration) -> Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        let count = ctx.params.stats()?.count;
        if count >= n {
            return Ok(count);
        }
        if Instant::now() >= deadline {
            bail!("stats count is {count}, expected {n} within {within:?}");
        }
        thread::yield_now();
    }
}

fn reattach_keeps_pending(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let mut l = SelfListener::new(ctx)?;
    l.attach_by_params(ctx)?;
    ctx.params.command(Code::Mmap)?;
    // The listener has not read MMAP: FIND for the same eventfds again.
    l.attach_by_params(ctx)?;
    ctx.klog.wait_for(
        "listener pid <n> re-attached: 1 pending events kept",
        timeout(),
    )?;
    l.expect_code(Code::Mmap)?;
    // And by REGISTER, with START pending.
    ctx.params.command(Code::StartTest)?;
    ctx.params.command(Code::StopTest)?;
    l.dev().register(l.efd().as_fd(), l.efd2().as_fd())?;
    l.expect_code(Code::StartTest)?;
    l.expect_code(Code::StopTest)?;
    Ok(())
}

fn replace_with_pending_is_ebusy(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let mut a = SelfListener::new(ctx)?;
    a.attach_by_params(ctx)?;
    ctx.params.command(Code::Mmap)?;
    let b = SelfListener::new(ctx)?;
    ctx.params.attach(
        rustix::process::getpid(),
        b.efd().as_raw_fd(),
        b.efd2().as_raw_fd(),
    )?;
    let why = expect_refused(ctx, "1", Errno::BUSY)?;
    ensure!(
        why.contains("still has 1 undelivered events"),
        "refusal reason {why:?}"
    );
    expect_errno(
        "REGISTER of other eventfds",
        b.dev().register(b.efd().as_fd(), b.efd2().as_fd()),
        Errno::BUSY,
    )?;
    a.expect_code(Code::Mmap)?;
    // Delivered: now the new listener may take over.
    ctx.params.command(Code::Find)?;
    Ok(())
}

fn late_acks_never_close_later_rounds(ctx: &mut Ctx) -> Result<()> {
    const DELAY: Duration = Duration::from_millis(50);
    loaded(ctx)?;
    ctx.params.set_back_to_back(true)?;
    let mut l = SelfListener::new(ctx)?;
    l.attach_by_params(ctx)?;
    ctx.params.command(Code::Mmap)?;
    let (done_tx, done_rx) = mpsc::channel();
    let worker = thread::spawn(move || -> Result<()> {
        loop {
            let code = l.next_code(scaled(Duration::from_secs(30)))?;
            if code == u64::from(Code::MemoryReady.value()) {
                // The behaviour under test: every ack comes DELAY late.
                thread::sleep(DELAY);
                l.efd2().write(7)?;
            } else if code == u64::from(Code::ExitTest.value()) {
                let _ = done_tx.send(());
                return Ok(());
            }
        }
    });
    for _ in 0..20 {
        ctx.params.command(Code::StartTest)?;
        thread::sleep(Duration::from_millis(10));
        ctx.params.command(Code::StopTest)?;
    }
    ctx.params.command(Code::StartTest)?;
    wait_stats_count(ctx, 5, scaled(Duration::from_secs(20)))?;
    ctx.params.command(Code::StopTest)?;
    let stats = ctx.params.stats()?;
    ctx.params.command(Code::ExitTest)?;
    done_rx
        .recv_timeout(timeout())
        .context("the listener thread did not see EXIT")?;
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("listener thread panicked"))??;
    ensure!(
        stats.min >= DELAY.as_nanos() as u64,
        "stats min {} ns is below the {DELAY:?} every ack takes: a late ack closed a later round",
        stats.min
    );
    Ok(())
}

/// The id of the next MEMORY_READY: the record's in queue mode, the
/// control page's ready_seq in counter mode (where the code carries none).
fn next_round_id(l: &mut SelfListener, ctrl: &kern2usr::CtrlPage, mode: EventMode) -> Result<u32> {
    match mode {
        EventMode::Queue => {
            let ev = l.next_event(timeout())?;
            ensure!(
                ev.code == Code::MemoryReady.value(),
                "event {ev:?} where MEMORY_READY was expected"
            );
            Ok(ev.round)
        }
        EventMode::Counter => {
            l.expect_code(Code::MemoryReady)?;
            Ok(ctrl.ready_seq() as u32)
        }
    }
}

fn ack_round_ids(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    ctx.params.set_back_to_back(true)?;
    let mode = ctx.params.event_mode()?;
    let mut l = SelfListener::new(ctx)?;
    let ctrl = l.dev().map_ctrl()?;
    l.attach_by_params(ctx)?;
    map_and_start(ctx, &mut l)?;
    let id = next_round_id(&mut l, &ctrl, mode)?;
    ensure!(
        u64::from(id) == ctrl.ready_seq() & 0xffff_ffff,
        "round id {id} is not ready_seq {}",
        ctrl.ready_seq()
    );
    expect_errno(
        "K2U_IOC_ACK_ROUND with another id",
        l.dev().ack_round(id.wrapping_add(1)),
        Errno::STALE,
    )?;
    l.dev()
        .ack_round(id)
        .context("K2U_IOC_ACK_ROUND with the round's id")?;
    ensure!(
        ctx.params.stats()?.count == 1,
        "the ack did not count the round"
    );
    // Back to back: the next round is out, but not yet shown.
    ensure!(
        ctrl.ready_seq() == u64::from(id) + 1,
        "back-to-back did not publish the next round"
    );
    expect_errno(
        "K2U_IOC_ACK before the round's MEMORY_READY was read",
        l.dev().ack(),
        Errno::STALE,
    )?;
    let id2 = next_round_id(&mut l, &ctrl, mode)?;
    ensure!(id2 == id + 1, "second round id {id2}, expected {}", id + 1);
    l.dev()
        .ack()
        .context("K2U_IOC_ACK once the round was shown")?;
    ensure!(
        ctx.params.stats()?.count == 2,
        "the plain ack did not count the round"
    );
    let id3 = next_round_id(&mut l, &ctrl, mode)?;
    ctx.params.command(Code::StopTest)?;
    expect_errno(
        "K2U_IOC_ACK_ROUND after STOP (round abandoned)",
        l.dev().ack_round(id3),
        Errno::PROTO,
    )?;
    ensure!(
        ctx.params.stats()?.count == 2,
        "an abandoned round was counted"
    );
    Ok(())
}

fn two_acks_in_one_read(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    ctx.params.set_back_to_back(true)?;
    let mut l = SelfListener::new(ctx)?;
    l.attach_by_params(ctx)?;
    map_and_start(ctx, &mut l)?;
    l.expect_code(Code::MemoryReady)?;
    l.efd2().write(14)?;
    ctx.klog.wait_for(
        "1 late ack(s) ignored: no shown round outstanding",
        timeout(),
    )?;
    // The round closed and the next one came: no stall.
    l.expect_code(Code::MemoryReady)?;
    ensure!(
        ctx.params.stats()?.count == 1,
        "14 did not close exactly one round"
    );
    l.efd2().write(7)?;
    l.expect_code(Code::MemoryReady)?;
    ctx.params.command(Code::StopTest)?;
    ensure!(ctx.params.stats()?.count == 2, "the next ack did not count");
    Ok(())
}

fn stop_exit_with_full_queue(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let mode = ctx.params.event_mode()?;
    ctx.params.set_back_to_back(true)?;
    // No timer retry while the queue is full.
    ctx.params.set_period(Duration::from_secs(60))?;
    let mut l = SelfListener::new(ctx)?;
    let ctrl = l.dev().map_ctrl()?;
    l.attach_by_params(ctx)?;
    ctx.params.command(Code::Mmap)?;
    let before = ctrl.ready_seq();
    ctx.params.command(Code::StartTest)?;
    // The first round comes from START's work item: wait until it is out.
    let deadline = Instant::now() + timeout();
    while ctrl.ready_seq() == before {
        ensure!(Instant::now() < deadline, "START published no round");
        thread::yield_now();
    }
    // Ack every round by id without ever reading an event: each ack starts
    // the next round (back to back, in the ioctl), until its MEMORY_READY
    // no longer fits.
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    let mut rounds = 0u64;
    loop {
        let seq = ctrl.ready_seq();
        l.dev().ack_round(seq as u32).context("ack by id")?;
        rounds += 1;
        if ctrl.ready_seq() == seq {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "queue not full after {rounds} rounds"
        );
    }
    ctx.klog
        .wait_for("event queue full: round skipped", timeout())?;
    ctx.params
        .command(Code::StopTest)
        .context("STOP with a full queue")?;
    ctx.params
        .command(Code::ExitTest)
        .context("EXIT with a full queue")?;
    let mut codes = Vec::new();
    loop {
        let code = l.next_code(timeout())?;
        codes.push(code);
        if code == u64::from(Code::ExitTest.value()) {
            break;
        }
    }
    let n = codes.len();
    ensure!(
        codes[..2] == [2, 3] && codes[n - 2..] == [4, 5],
        "events start {:?} and end {:?}",
        &codes[..2],
        &codes[n - 2..]
    );
    ensure!(
        codes[2..n - 2].iter().all(|&c| c == 6) && (n - 4) as u64 == rounds,
        "{} MEMORY_READY events for {rounds} rounds",
        n - 4
    );
    // Counter mode holds one more code in efd's counter itself.
    let held = kern2usr::abi::EVENT_QUEUE_LEN as usize + usize::from(mode == EventMode::Counter);
    ensure!(
        n == held,
        "{n} events queued, the queue holds {held} in {mode:?} mode"
    );
    Ok(())
}

fn pending_count_at_find(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let mode = ctx.params.event_mode()?;
    let mut l = SelfListener::new(ctx)?;
    l.efd().write(1)?;
    ctx.params.attach(
        rustix::process::getpid(),
        l.efd().as_raw_fd(),
        l.efd2().as_raw_fd(),
    )?;
    match mode {
        EventMode::Counter => {
            let why = expect_refused(ctx, "1", Errno::INVAL)?;
            ensure!(why.contains("has a pending count"), "reason {why:?}");
            l.efd().read()?;
            l.attach_by_params(ctx)?;
        }
        EventMode::Queue => {
            l.attach_by_params(ctx)?;
            l.efd().read()?;
        }
    }
    ctx.params.command(Code::Mmap)?;
    l.expect_code(Code::Mmap)
}

fn semaphore_efd(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let mode = ctx.params.event_mode()?;
    let efd = EventFd::with_flags(EventfdFlags::CLOEXEC | EventfdFlags::SEMAPHORE)?;
    let mut l = SelfListener::with_efd(ctx, efd)?;
    l.attach_by_params(ctx)?;
    ctx.params.command(Code::Mmap)?;
    match mode {
        EventMode::Counter => {
            // A semaphore read gives 1, not the code.
            ensure!(l.efd().wait_readable(timeout())?, "no doorbell");
            let got = l.efd().read()?;
            ensure!(got == 1, "a semaphore eventfd read {got}");
            let line = ctx.klog.wait_for(
                "listener refused: efd of pid <n> is not drained by read() (EFD_SEMAPHORE?): detached",
                timeout(),
            )?;
            let last = ctx.params.last_error()?;
            ensure!(
                last.trim().starts_with("efd of pid") && last.contains("EFD_SEMAPHORE"),
                "last_error {last:?} (log {line:?})"
            );
            let why = expect_refused(ctx, "2", Errno::PROTO)?;
            ensure!(why.contains("no listener"), "reason {why:?}");
        }
        EventMode::Queue => l.expect_code(Code::Mmap)?,
    }
    Ok(())
}

/// A holder of two eventfds as another process (optionally another user).
fn start_holder(fork: bool, uid: Option<u32>) -> Result<(ListenerProc, Pid, i32, i32, i32)> {
    let mut cmd = Command::new("/usr/bin/kern2usr-vmtest");
    cmd.arg("hold-eventfds");
    if fork {
        cmd.arg("--fork");
    }
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let mut l = ListenerProc::spawn_command(cmd)?;
    let c = l.wait_line(READY_LINE, timeout())?;
    let num = |i: usize| -> Result<i32> { Ok(c[i].parse()?) };
    let pid = Pid::from_raw(num(2)?).context("pid 0")?;
    Ok((l, pid, num(0)?, num(1)?, num(3)?))
}

fn find_needs_ptrace_access(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let (_holder, pid, efd, efd2, _) = start_holder(false, Some(65534))?;
    ctx.params.attach(pid, efd, efd2)?;
    let mut sh = Command::new("sh");
    sh.args(["-c", &format!("echo 1 > {PARAMS_DIR}/{}", param::CUR_CMD)]);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one prctl() system call, which is async-signal-safe.
    unsafe {
        sh.pre_exec(|| {
            remove_capability_from_bounding_set(CapabilitySet::SYS_PTRACE)
                .map_err(std::io::Error::from)
        });
    }
    let out = sh.output().context("running sh without CAP_SYS_PTRACE")?;
    ensure!(
        !out.status.success(),
        "FIND into uid 65534's process succeeded without CAP_SYS_PTRACE"
    );
    let why = ctx.klog.wait_for(
        &format!(
            "command 1 (FIND) refused: may not reach into the files of pid {} (ptrace access)",
            pid.as_raw_nonzero()
        ),
        timeout(),
    )?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "sh said {:?} (log {why:?})",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the capability (plain root) the same FIND works.
    ctx.params.command(Code::Find)?;
    Ok(())
}

fn forked_listener_killed(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let (mut holder, pid, efd, efd2, child) = start_holder(true, None)?;
    let child = Pid::from_raw(child).context("no child pid")?;
    ctx.params.attach(pid, efd, efd2)?;
    ctx.params.command(Code::Find)?;
    holder.signal(Signal::KILL)?;
    holder.wait_exit(timeout())?;
    let result = (|| -> Result<()> {
        // The detach line comes before the refusal it causes.
        let mut before = KernelLog::open_at_end()?;
        let why = expect_refused(ctx, "2", Errno::PROTO)?;
        ensure!(why.contains("no listener"), "reason {why:?}");
        before.wait_in_order(
            &[
                &format!("listener pid {} exited: detached", pid.as_raw_nonzero()),
                "command 2 (MMAP) refused: <any>",
            ],
            timeout(),
        )?;
        Ok(())
    })();
    let _ = rustix::process::kill_process(child, Signal::KILL);
    result
}

fn private_mapping(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    ctx.params.set_back_to_back(true)?;
    let mut l = SelfListener::new(ctx)?;
    let len = ctx.params.buffer_size()?;
    // SAFETY: a fresh private mapping at an address the kernel picks; it is
    // only read and written through this raw pointer, within `len`, and
    // unmapped below.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
            l.dev().as_fd(),
            0,
        )
    }
    .context("MAP_PRIVATE PROT_READ|PROT_WRITE of the buffer")?;
    let bytes = ptr.cast::<u8>();
    let read_all = || -> Vec<u8> {
        // SAFETY: `bytes` maps `len` readable bytes until the munmap below.
        (0..len)
            .map(|i| unsafe { bytes.add(i).read_volatile() })
            .collect()
    };
    let result = (|| -> Result<()> {
        ensure!(
            read_all().iter().all(|&b| b == 0),
            "the buffer is not zeroed"
        );
        l.attach_by_params(ctx)?;
        map_and_start(ctx, &mut l)?;
        l.expect_code(Code::MemoryReady)?;
        ensure!(
            kern2usr::device::first_pattern_mismatch(&read_all()).is_none(),
            "the private mapping does not show the round's fill"
        );
        // SAFETY: within the mapping, which is writable and private.
        unsafe { bytes.write_volatile(0xAA) };
        let mut kernel = vec![0u8; len];
        l.dev().read_buffer(&mut kernel)?;
        ensure!(
            kernel[0] == 0 && kern2usr::device::first_pattern_mismatch(&kernel).is_none(),
            "the listener's write reached the kernel's buffer (byte 0 is {})",
            kernel[0]
        );
        ensure!(read_all()[0] == 0xAA, "the private copy lost its write");
        ctx.params.command(Code::StopTest)?;
        Ok(())
    })();
    // SAFETY: `ptr`/`len` is the mapping made above, not used afterwards.
    let unmap = unsafe { rustix::mm::munmap(ptr, len) }.context("munmap");
    result?;
    unmap?;
    // The control page stays MAP_SHARED only.
    // SAFETY: as above; a failure maps nothing.
    let r = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            4096,
            ProtFlags::READ,
            MapFlags::PRIVATE,
            l.dev().as_fd(),
            CTRL_MMAP_OFFSET,
        )
    };
    match r {
        Ok(p) => {
            // SAFETY: the one-page mapping just made.
            let _ = unsafe { rustix::mm::munmap(p, 4096) };
            bail!("MAP_PRIVATE of the control page was accepted");
        }
        Err(e) => ensure!(e == Errno::INVAL, "private control page: {e}"),
    }
    ctx.klog.wait_for(
        "mmap refused: the control page must be MAP_SHARED",
        timeout(),
    )?;
    Ok(())
}

/// The round period of the lend tests: short, so that the negative window
/// below covers several timer ticks.
const LEND_PERIOD: Duration = Duration::from_millis(20);

/// How long "nothing happens" is watched while a round is lent. This is a
/// negative check, so it can only be bounded: 5 periods (scaled for slow
/// emulation). In timer mode the timer fires every period, so the window
/// holds at least 4 ticks, each of which would fill and publish a round
/// if the lend were not kept; back to back, the round would come at once
/// from START's work item. (The line waited for next proves that a round
/// was due and held back.)
fn lend_window() -> Duration {
    scaled(LEND_PERIOD * 5)
}

/// The module's line when a round is due while the buffer is still lent
/// for round `id`, which STOP abandoned.
fn lent_line(tag: &str, id: u64) -> String {
    format!("{tag}buffer still lent to the listener (round {id}): rounds wait for its ack")
}

fn lent_round_default_channel(ctx: &mut Ctx) -> Result<()> {
    for back_to_back in [false, true] {
        lent_round_default(ctx, back_to_back)
            .with_context(|| format!("back_to_back={}", u8::from(back_to_back)))?;
    }
    Ok(())
}

fn lent_round_default(ctx: &mut Ctx, back_to_back: bool) -> Result<()> {
    loaded(ctx)?;
    ctx.params.set_period(LEND_PERIOD)?;
    ctx.params.set_back_to_back(back_to_back)?;
    let mode = ctx.params.event_mode()?;
    let mut l = SelfListener::new(ctx)?;
    let ctrl = l.dev().map_ctrl()?;
    let buf = l.dev().map(ctx.params.buffer_size()?, Access::ReadOnly)?;
    l.attach_by_params(ctx)?;
    map_and_start(ctx, &mut l)?;
    // The round is shown: its MEMORY_READY was read.
    let id = u64::from(next_round_id(&mut l, &ctrl, mode)?);
    let shown = buf.to_vec();
    ensure!(
        first_pattern_mismatch(&shown).is_none(),
        "round {id}: the buffer does not hold the fill"
    );
    ctx.params.command(Code::StopTest)?;
    l.expect_code(Code::StopTest)?;
    ctx.params.command(Code::StartTest)?;
    l.expect_code(Code::StartTest)?;
    // Nothing may happen while the round is lent (see lend_window).
    if let Some(ev) = l.event_within(lend_window())? {
        bail!("round {id} is lent, yet the module sent {ev:?} after STOP and START");
    }
    ensure!(
        ctrl.ready_seq() == id,
        "round {id} is lent, yet ready_seq moved to {}: a round was filled",
        ctrl.ready_seq()
    );
    ensure!(
        buf.to_vec() == shown,
        "the buffer changed while round {id} was lent"
    );
    ctx.klog.wait_for(&lent_line("", id), timeout())?;
    ensure!(
        ctx.params.stats()?.count == 0,
        "START reset the stats; the abandoned round must not count"
    );
    // Its ack (late: the round was abandoned) returns the buffer.
    expect_errno(
        "K2U_IOC_ACK_ROUND of the abandoned round",
        l.dev().ack_round(id as u32),
        Errno::PROTO,
    )?;
    // The next round comes with fresh, correct data.
    let next = u64::from(next_round_id(&mut l, &ctrl, mode)?);
    ensure!(
        next == id + 1,
        "round {next} after the ack, expected {}",
        id + 1
    );
    ensure!(
        first_pattern_mismatch(&buf.to_vec()).is_none(),
        "round {next}: the buffer does not hold the fill"
    );
    l.dev()
        .ack_round(next as u32)
        .context("ack of the next round")?;
    wait_stats_count(ctx, 1, timeout())?;
    ensure!(
        ctx.params.stats()?.count == 1,
        "the abandoned round was counted"
    );
    ctx.params.command(Code::StopTest)?;
    Ok(())
}

fn lent_round_created_channel(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    for back_to_back in [false, true] {
        lent_round_created(ctx, back_to_back)
            .with_context(|| format!("back_to_back={}", u8::from(back_to_back)))?;
    }
    Ok(())
}

/// The next event of `ch` must be `want`.
fn expect_event(ch: &mut kern2usr::Channel, want: Event) -> Result<()> {
    let got = ch.next(timeout())?;
    ensure!(got == Some(want), "event {got:?}, expected {want:?}");
    Ok(())
}

/// The next event of `ch` must be a MEMORY_READY; its round id.
fn expect_round(ch: &mut kern2usr::Channel) -> Result<u64> {
    match ch.next(timeout())? {
        Some(Event::MemoryReady { round }) => Ok(u64::from(round)),
        other => bail!("event {other:?}, expected MEMORY_READY"),
    }
}

/// The first byte of `data` that is not round `round`'s of channel `id`.
fn first_bad_byte(id: u32, round: u64, data: &[u8]) -> Option<(usize, u8)> {
    data.iter()
        .copied()
        .enumerate()
        .find(|&(i, b)| b != channel_pattern_byte(id, round, i))
}

fn lent_round_created(ctx: &mut Ctx, back_to_back: bool) -> Result<()> {
    let mut ch = ChannelOptions::new()
        .name("lend")
        .period(LEND_PERIOD)
        .back_to_back(back_to_back)
        .create()?;
    let cid = ch.id();
    ch.command(ChanCmd::Mmap)?;
    expect_event(&mut ch, Event::Mmap)?;
    ch.command(ChanCmd::Start)?;
    expect_event(&mut ch, Event::Start)?;
    let id = expect_round(&mut ch)?;
    let shown = {
        let round = ch.round().context("no round after MEMORY_READY")?;
        ensure!(u64::from(round.id()) == id, "guard of round {}", round.id());
        if let Some((i, b)) = first_bad_byte(cid, id, &round) {
            bail!("channel {cid} round {id}: byte {i} is {b:#04x}");
        }
        round.to_vec()
        // Dropped without ack: the round stays lent.
    };
    ch.command(ChanCmd::Stop)?;
    expect_event(&mut ch, Event::Stop)?;
    ch.command(ChanCmd::Start)?;
    expect_event(&mut ch, Event::Start)?;
    // Nothing may happen while the round is lent (see lend_window).
    if let Some(ev) = ch.next(lend_window())? {
        bail!("channel {cid}: round {id} is lent, yet {ev:?} came after STOP and START");
    }
    ctx.klog
        .wait_for(&lent_line(&format!("channel {cid}: "), id), timeout())?;
    let seq = ch.ctrl().map(kern2usr::CtrlPage::ready_seq);
    ensure!(
        seq.is_none_or(|s| s == id),
        "channel {cid}: ready_seq moved to {seq:?} while round {id} was lent"
    );
    {
        // STOP did not take the round away: the guard shows the same bytes.
        let round = ch
            .round()
            .context("the lent round is not given after STOP")?;
        ensure!(u64::from(round.id()) == id, "guard of round {}", round.id());
        if *round != shown[..] {
            let at = round.iter().zip(&shown).position(|(a, b)| a != b);
            bail!("channel {cid}: round {id}'s bytes changed while it was lent (first at {at:?})");
        }
        // Queue mode reports the ack as late (the round was abandoned);
        // counter mode's 7 has no answer. Either way the buffer returns.
        match round.ack() {
            Ok(()) | Err(Error::RoundAbandoned { .. }) => {}
            Err(e) => return Err(e).context("ack of the lent round"),
        }
    }
    let next = expect_round(&mut ch)?;
    ensure!(
        next == id + 1,
        "round {next} after the ack, expected {}",
        id + 1
    );
    {
        let round = ch.round().context("no round after MEMORY_READY")?;
        if let Some((i, b)) = first_bad_byte(cid, next, &round) {
            bail!("channel {cid} round {next}: byte {i} is {b:#04x}, not round {next}'s");
        }
        round.ack().context("ack of the next round")?;
    }
    let deadline = Instant::now() + timeout();
    while ch.stats()?.round_trips.count < 1 {
        ensure!(Instant::now() < deadline, "the next round was not counted");
        thread::yield_now();
    }
    ensure!(
        ch.stats()?.round_trips.count == 1,
        "the abandoned round was counted"
    );
    ch.command(ChanCmd::Stop)?;
    Ok(())
}

/// Wait until process `pid` sleeps in `read()` (its /proc `stat` state `S`
/// and its /proc `syscall` naming read on `fd`).
fn wait_blocked_in_read(pid: Pid, fd: i32) -> Result<()> {
    let deadline = Instant::now() + timeout();
    let dir = format!("/proc/{}", pid.as_raw_nonzero());
    let want = format!("{} {:#x} ", libc::SYS_read, fd);
    loop {
        let stat = std::fs::read_to_string(format!("{dir}/stat")).context("reading its stat")?;
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        let call = std::fs::read_to_string(format!("{dir}/syscall")).unwrap_or_default();
        if state == Some(Some('S')) && call.starts_with(&want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pid {pid:?} not blocked in read({fd}): state {state:?}, syscall {call:?}");
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// PROTOCOL.md "The listener is a process": the right to read() records is
/// asked again after the wait, so a read begun by the old listener cannot
/// take the next listener's records.
fn blocked_read_across_refind(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    if ctx.params.event_mode()? == EventMode::Counter {
        // Counter mode has no records: read() is EINVAL for everyone.
        return Ok(());
    }
    let mut cmd = Command::new("/usr/bin/kern2usr-vmtest");
    cmd.args(["hold-eventfds", "--read"]);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one prctl() system call, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            remove_capability_from_bounding_set(CapabilitySet::SYS_ADMIN)
                .map_err(std::io::Error::from)
        });
    }
    let mut old = ListenerProc::spawn_command(cmd)?;
    let c = old.wait_line(READY_LINE, timeout())?;
    let num = |i: usize| -> Result<i32> { Ok(c[i].parse()?) };
    let pid = Pid::from_raw(num(2)?).context("pid 0")?;
    ctx.params.attach(pid, num(0)?, num(1)?)?;
    ctx.params.command(Code::Find)?;
    // It is the listener: its read() passes the entry check and waits.
    old.signal(Signal::USR1)?;
    let dev_fd: i32 = old.wait_line(READING_LINE, timeout())?[0].parse()?;
    wait_blocked_in_read(pid, dev_fd)?;
    // Root attaches this process instead (the old one has nothing queued).
    let mut l = SelfListener::new(ctx)?;
    let ctrl = l.dev().map_ctrl()?;
    l.attach_by_params(ctx)?;
    // The detach wakes the old reader, which is no longer allowed to read.
    let got = old.wait_line(READ_LINE, timeout())?;
    let eperm = format!("errno {}", Errno::PERM.raw_os_error());
    ensure!(
        got.first() == Some(&eperm),
        "the old listener's read() returned {got:?}; expected {eperm} (EPERM)"
    );
    ctx.klog.wait_for(
        &format!(
            "default channel: pid {} is neither its listener nor privileged: read refused",
            pid.as_raw_nonzero()
        ),
        timeout(),
    )?;
    // Every record reaches the new listener: MMAP, START, a round.
    map_and_start(ctx, &mut l)?;
    let id = next_round_id(&mut l, &ctrl, EventMode::Queue)?;
    ensure!(id == 1, "first round {id}, expected 1");
    ctx.params.command(Code::StopTest)?;
    l.expect_code(Code::StopTest)
}
