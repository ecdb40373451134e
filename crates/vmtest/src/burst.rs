//! The `burst` suite: commands written back to back must reach the
//! listener one by one, in order: never merged, lost or reordered.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{Code, EVENT_QUEUE_LEN, EVENT_QUEUE_RESERVE};
use rustix::io::Errno;
use rustix::process::Signal;

use crate::common::{exit_listener, mapped, stop_and_exit};
use crate::guest::{self, scaled, timeout};
use crate::harness::{Ctx, Test};
use crate::listener::ListenerProc;

/// The suite's tests.
pub const TESTS: &[Test] = &[
    (
        "1000 START/STOP written back to back, then EXIT, arrive exactly in order",
        thousand,
    ),
    (
        "MMAP then START back to back arrive as 2 then 3, never as 5",
        two_then_three,
    ),
    (
        "queue full: EAGAIN with last_error, every accepted command arrives in order",
        queue_full,
    ),
];

/// Codes the listener handled after its MMAP (2), without MEMORY_READY (6).
fn commands_after_mmap(l: &ListenerProc) -> Result<Vec<u64>> {
    let values = l.values();
    ensure!(
        values.first() == Some(&2),
        "the listener's first code is {:?}, not 2",
        values.first()
    );
    Ok(values[1..].iter().copied().filter(|&v| v != 6).collect())
}

fn first_difference(got: &[u64], want: &[u64]) -> String {
    let i = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    let show = |v: &[u64]| format!("{:?}", &v[i.saturating_sub(2)..(i + 3).min(v.len())]);
    format!(
        "first difference at #{i}: got {} (of {}), sent {} (of {})",
        show(got),
        got.len(),
        show(want),
        want.len()
    )
}

fn thousand(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &[])?;
    let mut sent = Vec::with_capacity(1001);
    for i in 0..1000 {
        let code = if i % 2 == 0 {
            Code::StartTest
        } else {
            Code::StopTest
        };
        ctx.params
            .command(code)
            .with_context(|| format!("command #{i} ({})", code.value()))?;
        sent.push(u64::from(code.value()));
    }
    ctx.params.command(Code::ExitTest)?;
    sent.push(5);
    l.wait_until("done!", scaled(Duration::from_secs(120)), |out| {
        out.iter().any(|x| x == "done!")
    })?;
    l.expect_clean_exit()?;
    let got = commands_after_mmap(&l)?;
    ensure!(
        got == sent,
        "codes differ: {}",
        first_difference(&got, &sent)
    );
    Ok(())
}

fn two_then_three(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let mut l = ListenerProc::spawn(&["--attach"])?;
    let pid = l.pid().as_raw_nonzero();
    ctx.klog.wait_for(
        &format!("Received from userspace: usr_pid={pid}, efd=3, efd2=4"),
        timeout(),
    )?;
    ctx.params.command(Code::Mmap)?;
    ctx.params.command(Code::StartTest)?;
    l.wait_until("codes 2 and 3", timeout(), |out| {
        out.iter()
            .filter(|x| x.starts_with("In handling_polling value"))
            .count()
            >= 2
    })?;
    let values = l.values();
    ensure!(
        values[..2] == [2, 3],
        "first codes are {:?}, expected [2, 3]",
        &values[..2]
    );
    l.skip_to_end();
    stop_and_exit(ctx, &mut l)?;
    let values = l.values();
    ensure!(
        values.iter().position(|&v| v == 5) == Some(values.len() - 1),
        "5 arrived before the end: {values:?}"
    );
    Ok(())
}

/// Stop the listener, fill the queue until EAGAIN, resume: every accepted
/// command must arrive, in order. Shared with the badinput suite.
pub fn queue_full(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &[])?;
    // No rounds during the test: only the commands are queued.
    ctx.params.set_period(Duration::from_secs(60))?;
    l.signal(Signal::STOP)?;
    let cap = EVENT_QUEUE_LEN as usize * 2 + 16;
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..cap {
        let code = if i % 2 == 0 {
            Code::StartTest
        } else {
            Code::StopTest
        };
        match ctx.params.command(code) {
            Ok(()) => accepted.push(u64::from(code.value())),
            Err(e) if e.errno() == Some(Errno::AGAIN) => {
                refused = Some(code);
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("command #{i}")),
        }
    }
    let resumed = l.signal(Signal::CONT);
    let Some(code) = refused else {
        bail!("{cap} commands were accepted with the listener stopped; expected EAGAIN once the queue ({EVENT_QUEUE_LEN}) is full");
    };
    resumed?;
    let last_error = ctx.params.last_error()?;
    ensure!(
        !last_error.trim().is_empty(),
        "last_error is empty after EAGAIN"
    );
    ctx.klog.wait_for(
        &format!("command {} ({}) refused: <any>", code.value(), code.name()),
        timeout(),
    )?;
    // START needs more than the reserve free; counter mode holds one more
    // code in efd itself.
    let q = EVENT_QUEUE_LEN as usize;
    let n = accepted.len();
    ensure!(
        (q - EVENT_QUEUE_RESERVE as usize..=q + 1).contains(&n),
        "{n} commands accepted before EAGAIN, the queue holds {q} ({EVENT_QUEUE_RESERVE} kept for STOP/EXIT)"
    );
    l.wait_until(
        &format!("{n} queued codes"),
        scaled(Duration::from_secs(120)),
        |out| {
            out.iter()
                .filter(|x| {
                    x.starts_with("In handling_polling value in eventfd = ")
                        && !x.ends_with("= 2")
                        && !x.ends_with("= 6")
                })
                .count()
                >= n
        },
    )?;
    let got = commands_after_mmap(&l)?;
    ensure!(
        got == accepted,
        "codes differ: {}",
        first_difference(&got, &accepted)
    );
    l.skip_to_end();
    exit_listener(ctx, &mut l)
}
