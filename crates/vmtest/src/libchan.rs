//! The `libchan` suite: the library's channel API (`Channel::create`,
//! `command`, `stats`, the `channels` listing and its typed refusals)
//! against the real module, as a program that adopts the library uses it.
//! Not in `all` (the Rust module may not have channels yet): run it with
//! `cargo xtask test --suite libchan`.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{channel_pattern_byte, param, DEVICE_PATH};
use kern2usr::{Channel, ChannelKind, ChannelOptions, Command, Error, Event};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::guest::{self, timeout};
use crate::harness::{Ctx, Test};

/// The suite's tests.
pub const TESTS: &[Test] = &[
    (
        "two channels in one process: own sizes, every round checked byte by byte, listed, stats",
        two_channels,
    ),
    (
        "refusals are typed: out of order, limits, no producer, default channel",
        typed_refusals,
    ),
];

/// Rounds each channel must check.
const ROUNDS: u64 = 8;

/// What one channel saw.
#[derive(Default)]
struct Seen {
    rounds: u64,
    stop_sent: bool,
    stop_seen: bool,
    exit_seen: bool,
}

/// Take every event `ch` has now; check and ack each round.
fn drain(ch: &mut Channel, seen: &mut Seen) -> Result<()> {
    while let Some(ev) = ch.try_next()? {
        match ev {
            Event::MemoryReady { .. } => {
                let id = ch.id();
                let Some(round) = ch.round() else {
                    bail!("channel {id}: MEMORY_READY without a round");
                };
                let seq = u64::from(round.id());
                if let Some((i, &got)) = round
                    .iter()
                    .enumerate()
                    .find(|&(i, &b)| b != channel_pattern_byte(id, seq, i))
                {
                    bail!(
                        "channel {id} round {seq}: byte {i} of {} is {got:#04x}, expected {:#04x}",
                        round.len(),
                        channel_pattern_byte(id, seq, i)
                    );
                }
                match round.ack() {
                    Ok(()) => seen.rounds += 1,
                    Err(Error::RoundAbandoned { .. }) if seen.stop_sent => {}
                    Err(e) => return Err(e).context(format!("channel {id}: ack of round {seq}")),
                }
            }
            Event::Stop => seen.stop_seen = true,
            Event::Exit => seen.exit_seen = true,
            Event::Mmap | Event::Start => {}
        }
    }
    Ok(())
}

/// Wait for either channel's eventfd, then drain both.
fn step(chans: &mut [(Channel, Seen); 2]) -> Result<()> {
    let ready = {
        let mut fds = [
            PollFd::new(&chans[0].0, PollFlags::IN),
            PollFd::new(&chans[1].0, PollFlags::IN),
        ];
        let t = Timespec::try_from(timeout())?;
        poll(&mut fds, Some(&t))?
    };
    ensure!(
        ready > 0,
        "no event on either channel within {:?}",
        timeout()
    );
    for (ch, seen) in chans.iter_mut() {
        drain(ch, seen)?;
    }
    Ok(())
}

fn two_channels(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let default_before = ctx.params.channels()?;
    let me = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let make = |size: usize, ms: u64, name: &str| {
        Channel::create(
            &ChannelOptions::new()
                .device(DEVICE_PATH)
                .buffer_size(size)
                .period(Duration::from_millis(ms))
                .name(name),
        )
        .with_context(|| format!("creating channel {name}"))
    };
    let mut chans = [
        (make(4096, 30, "lib-small")?, Seen::default()),
        (make(64 << 10, 45, "lib-large")?, Seen::default()),
    ];
    ensure!(
        chans[0].0.id() != chans[1].0.id() && chans[0].0.id() != 0 && chans[1].0.id() != 0,
        "ids {} and {}",
        chans[0].0.id(),
        chans[1].0.id()
    );
    let listed = ctx.params.channels()?;
    for (ch, _) in &chans {
        ensure!(ch.kind() == ChannelKind::Owned);
        let line = listed
            .iter()
            .find(|c| c.id == ch.id())
            .with_context(|| format!("channel {} not in the listing {listed:?}", ch.id()))?;
        ensure!(
            line.name.as_deref() == ch.name()
                && line.owner == Some(me)
                && line.buffer_size == ch.info().buffer_size as u64,
            "listing line {line:?} for channel {} ({:?}, {} bytes, owner {me})",
            ch.id(),
            ch.name(),
            ch.info().buffer_size
        );
        ch.command(Command::Mmap)?;
        ch.command(Command::Start)?;
    }
    while chans.iter().any(|(_, s)| s.rounds < ROUNDS) {
        step(&mut chans)?;
        for (ch, s) in &mut chans {
            if s.rounds >= ROUNDS && !s.stop_sent {
                ch.command(Command::Stop)?;
                s.stop_sent = true;
            }
        }
    }
    for (ch, _) in &chans {
        ch.command(Command::Exit)?;
    }
    while chans.iter().any(|(_, s)| !s.exit_seen) {
        step(&mut chans)?;
    }
    for (ch, s) in &chans {
        ensure!(s.stop_seen, "channel {}: no STOP_TEST event", ch.id());
        let stats = ch.stats()?;
        ensure!(
            stats.id == ch.id() && stats.buffer_size == ch.info().buffer_size as u64,
            "stats {stats:?} of channel {}",
            ch.id()
        );
        ensure!(
            stats.round_trips.count >= ROUNDS && stats.rounds_published >= s.rounds,
            "channel {}: {} rounds checked, stats {stats:?}",
            ch.id(),
            s.rounds
        );
    }
    let ids: Vec<u32> = chans.iter().map(|(c, _)| c.id()).collect();
    drop(chans);
    let after = ctx.params.channels()?;
    ensure!(
        !after.iter().any(|c| ids.contains(&c.id)),
        "channels {ids:?} still listed after their files closed: {after:?}"
    );
    ensure!(
        after.first() == default_before.first(),
        "the default channel changed: {:?} -> {:?}",
        default_before.first(),
        after.first()
    );
    Ok(())
}

fn typed_refusals(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let ch = Channel::create(&ChannelOptions::new().name("lib-order"))?;
    match ch.command(Command::Start) {
        Err(Error::ChannelCommand {
            command: "START_TEST",
            ..
        }) => {}
        other => bail!("START before MMAP: {other:?}"),
    }
    match ch.command(Command::Stop) {
        Err(e @ Error::ChannelCommand { .. }) => ensure!(
            e.errno() == Some(rustix::io::Errno::PROTO),
            "STOP while not running: {e}"
        ),
        other => bail!("STOP while not running: {other:?}"),
    }
    match Channel::attach("no-such-prod") {
        Err(Error::NoProducer { name, .. }) if name == "no-such-prod" => {}
        other => bail!("attach to a missing producer: {other:?}"),
    }
    // The default channel is not a channel of its own: its commands are
    // root's, through the parameters.
    let def = Channel::open()?;
    ensure!(def.kind() == ChannelKind::Default && def.id() == 0);
    match def.command(Command::Mmap) {
        Err(Error::NotAChannel { .. }) => {}
        other => bail!("a command on the default channel's file: {other:?}"),
    }
    drop(def);
    // Limits: with max_channels at the number that exist, the next is ENOSPC.
    let old = ctx.params.read(param::MAX_CHANNELS)?;
    let exist = ctx.params.channels()?.len() - 1;
    ctx.params.write(param::MAX_CHANNELS, &exist.to_string())?;
    let refused = Channel::create(&ChannelOptions::new());
    ctx.params.write(param::MAX_CHANNELS, &old)?;
    match refused {
        Err(e @ Error::ChannelLimit { .. }) => ensure!(
            e.to_string().contains("max_channels"),
            "the message does not say what to raise: {e}"
        ),
        other => bail!("a channel past max_channels={exist}: {other:?}"),
    }
    ctx.klog.wait_for(
        "CREATE refused: <n> channels exist (max_channels=<n>)",
        timeout(),
    )?;
    // The refusal leaked nothing: with the old limit one more fits again.
    let again = Channel::create(&ChannelOptions::new())?;
    drop((again, ch));
    Ok(())
}
