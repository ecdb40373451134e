//! The `seedclient` suite: the 2017 client's exact system calls
//! (tests/seed-client, built static as /usr/bin/seed-client) against the
//! module, driven through the parameters as the seed's walkthrough does.
//! Counter mode (kernels before 6.8) must serve it unchanged; in queue
//! mode it cannot follow the codes, and the module says so.

use std::process::Command;

use anyhow::{ensure, Result};
use kern2usr::abi::{Code, EventMode};
use rustix::process::{Pid, Signal};

use crate::common::{exit_listener, mmap_lines};
use crate::guest::{self, scaled, timeout};
use crate::harness::{Ctx, Test};
use crate::listener::ListenerProc;

/// The client, as packed into the initramfs.
pub const SEED_CLIENT_BIN: &str = "/usr/bin/seed-client";

/// Rounds the walkthrough waits for.
const ROUNDS: usize = 3;

/// The suite's tests.
pub const TESTS: &[Test] = &[(
    "the 2017 client: the whole walkthrough in counter mode (3 rounds, data checked); in queue mode the documented limits",
    seed_client,
)];

/// Start the client (the seed's step 2) and read its first lines.
fn start_client() -> Result<(ListenerProc, Pid, i32, i32)> {
    let mut l = ListenerProc::spawn_command(Command::new(SEED_CLIENT_BIN))?;
    let a = l.expect_next(&["Eventfd created efd=<n> pid=<n>"], timeout())?;
    let b = l.expect_next(
        &["Eventfd created efd2=<n> pid=<n>", "Start polling..."],
        timeout(),
    )?;
    let efd: i32 = a[0].parse()?;
    let pid: i32 = a[1].parse()?;
    let efd2: i32 = b[0].parse()?;
    ensure!(
        b[1] == a[1],
        "the client printed two pids: {} and {}",
        a[1],
        b[1]
    );
    let pid = Pid::from_raw(pid).ok_or_else(|| anyhow::anyhow!("pid 0"))?;
    Ok((l, pid, efd, efd2))
}

fn seed_client(ctx: &mut Ctx) -> Result<()> {
    guest::unload_if_loaded(&mut ctx.klog)?;
    let (mut l, pid, efd, efd2) = start_client()?;
    guest::fresh_module(&mut ctx.klog)?;
    ctx.params.attach(pid, efd, efd2)?;
    ctx.params.command(Code::Find)?;
    ctx.klog.wait_for(
        &format!(
            "Received from userspace: usr_pid={}, efd={efd}, efd2={efd2}",
            pid.as_raw_nonzero()
        ),
        timeout(),
    )?;
    match ctx.params.event_mode()? {
        EventMode::Counter => counter_mode_walkthrough(ctx, &mut l),
        EventMode::Queue => queue_mode_limits(ctx, &mut l),
    }
}

/// Steps 7-10 with the client: it maps the buffer MAP_PRIVATE read-write,
/// copies and checks every round, acks with 7 and exits on 5.
fn counter_mode_walkthrough(ctx: &mut Ctx, l: &mut ListenerProc) -> Result<()> {
    ctx.params.command(Code::Mmap)?;
    let lines = mmap_lines();
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    // The client prints the seed's line with its trailing space.
    let opened = format!("{} ", want[1]);
    want[1] = &opened;
    l.expect_code_block(2, &want, timeout())?;

    ctx.params.command(Code::StartTest)?;
    ctx.klog.wait_for("Timer is started.", timeout())?;
    let period = ctx.params.period()?;
    let t = scaled(period * ROUNDS as u32 + timeout());
    for _ in 0..ROUNDS {
        ctx.klog.wait_for("Time to copy = <n>", t)?;
        ctx.klog.wait_for("Exit from __monitor_efd2", t)?;
    }
    let mut bad = None;
    l.wait_until(&format!("{ROUNDS} rounds copied"), t, |lines| {
        bad = lines.iter().find(|x| x.contains("pattern BAD")).cloned();
        bad.is_some() || lines.iter().filter(|x| x.ends_with(": pattern ok")).count() >= ROUNDS
    })?;
    ensure!(bad.is_none(), "the client saw wrong data: {bad:?}");

    ctx.params.command(Code::StopTest)?;
    ctx.klog
        .wait_in_order(&["Timer is deleted.", "Avg copy time = <n>"], timeout())?;
    l.wait_line("In handling_polling value in eventfd = 4", timeout())?;
    // After the 4 no round runs: EXIT is the seed's step 10.
    exit_listener(ctx, l)?;
    let stats = ctx.params.stats()?;
    ensure!(
        stats.count >= ROUNDS as u64,
        "stats count {} after {ROUNDS} rounds",
        stats.count
    );
    Ok(())
}

/// Queue mode: the module warns at attach; every code reads as 1, so the
/// client maps nothing and never acknowledges.
fn queue_mode_limits(ctx: &mut Ctx, l: &mut ListenerProc) -> Result<()> {
    ctx.klog.wait_for(
        "queue mode: codes are records read from /dev/kern2usr; a client that reads codes from efd (the 2017 KernUsr) cannot follow them on this kernel",
        timeout(),
    )?;
    ctx.params.command(Code::Mmap)?;
    l.expect_next(
        &[
            "In handling_polling value in eventfd = 1",
            "handling_polling done!",
        ],
        timeout(),
    )?;
    ensure!(
        !l.values().contains(&2),
        "the client read a 2 in queue mode: {:?}",
        l.values()
    );
    l.signal(Signal::KILL)?;
    l.wait_exit(timeout())?;
    Ok(())
}
