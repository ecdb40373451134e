//! The `libchan` suite: the library's channel API (`Channel::create`,
//! `command`, `stats`, the `channels` listing and its typed refusals)
//! against the real module, as a program that adopts the library uses it;
//! and the async listener (feature `tokio`: `aio::AsyncChannel`) as a tokio
//! task on one thread beside the task that drives it.
//! Not in `all` (the Rust module may not have channels yet): run it with
//! `cargo xtask test --suite libchan`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{param, DEVICE_PATH};
use kern2usr::aio::AsyncChannel;
use kern2usr::{Channel, ChannelKind, ChannelOptions, Command, Error, Event};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::common::check_round;
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
    (
        "async listener (tokio task, one thread) on the default channel beside the task driving it: every byte of every round",
        async_default_channel,
    ),
    (
        "async listener (tokio task, one thread) on a created channel, its commands sent from another task: every byte of every round",
        async_created_channel,
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
                check_round(id, seq, &round)?;
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

/// What the async listener tells the task beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Note {
    /// An event other than MEMORY_READY.
    Event(Event),
    /// A round checked byte by byte and acknowledged: its id.
    Round(u32),
}

/// What woke the async listener.
enum Wake {
    /// A command to run on its channel (`None`: no more will come).
    Command(Option<Command>),
    /// The channel's next event.
    Event(kern2usr::Result<Event>),
}

/// The next command from `cmds` or the next event of `ch`, whichever
/// comes first. Dropping the unfinished `next()` future when a command
/// wins is fine: it is cancel-safe.
async fn next_wake(ch: &mut AsyncChannel, cmds: &mut Option<UnboundedReceiver<Command>>) -> Wake {
    let mut next = std::pin::pin!(ch.next());
    std::future::poll_fn(|cx| {
        if let Some(rx) = cmds.as_mut() {
            if let Poll::Ready(c) = rx.poll_recv(cx) {
                return Poll::Ready(Wake::Command(c));
            }
        }
        next.as_mut().poll(cx).map(Wake::Event)
    })
    .await
}

/// The async listener: runs the commands `cmds` brings on its channel;
/// reports each event to `notes`; checks every byte of each round,
/// acknowledges it and reports its id; returns at EXIT_TEST with the
/// number of rounds acknowledged and the channel. A round abandoned by
/// STOP (its ack refused) is fine once `stop_sent`.
async fn listen_async(
    mut ch: AsyncChannel,
    mut cmds: Option<UnboundedReceiver<Command>>,
    stop_sent: Arc<AtomicBool>,
    notes: UnboundedSender<Note>,
) -> Result<(u64, AsyncChannel)> {
    let id = ch.channel().id();
    let size = ch.info().buffer_size;
    let mut rounds = 0;
    loop {
        let ev = match next_wake(&mut ch, &mut cmds).await {
            Wake::Command(Some(c)) => {
                ch.channel()
                    .command(c)
                    .with_context(|| format!("channel {id}: {}", c.name()))?;
                continue;
            }
            Wake::Command(None) => {
                cmds = None;
                continue;
            }
            Wake::Event(ev) => ev.with_context(|| format!("channel {id}: next().await"))?,
        };
        if let Event::MemoryReady { round } = ev {
            let Some(r) = ch.round() else {
                bail!("channel {id}: MEMORY_READY of round {round} without a round");
            };
            ensure!(
                r.id() == round && r.len() == size,
                "channel {id}: round {} of {} bytes for MEMORY_READY of round {round} ({size} bytes)",
                r.id(),
                r.len()
            );
            check_round(id, u64::from(round), &r)?;
            match r.ack() {
                Ok(()) => {
                    rounds += 1;
                    let _ = notes.send(Note::Round(round));
                }
                Err(Error::RoundAbandoned { .. }) if stop_sent.load(Ordering::SeqCst) => {}
                Err(e) => return Err(e).context(format!("channel {id}: ack of round {round}")),
            }
            continue;
        }
        let _ = notes.send(Note::Event(ev));
        if ev == Event::Exit {
            return Ok((rounds, ch));
        }
    }
}

/// The next note, within the suite's timeout.
async fn next_note(notes: &mut UnboundedReceiver<Note>) -> Result<Note> {
    match tokio::time::timeout(timeout(), notes.recv()).await {
        Ok(Some(n)) => Ok(n),
        Ok(None) => bail!("the listener task ended"),
        Err(_) => bail!("nothing from the listener task within {:?}", timeout()),
    }
}

/// The next note must be `want`.
async fn expect_note(notes: &mut UnboundedReceiver<Note>, want: Note) -> Result<()> {
    let got = next_note(notes).await?;
    ensure!(
        got == want,
        "the listener reported {got:?}, expected {want:?}"
    );
    Ok(())
}

/// The driving task's script: MMAP, START, [`ROUNDS`] rounds (their ids
/// consecutive), STOP, EXIT, each command given by `send` and its event
/// awaited from the listener. Returns the round ids.
async fn drive(
    mut send: impl FnMut(Command) -> Result<()>,
    notes: &mut UnboundedReceiver<Note>,
    stop_sent: &AtomicBool,
) -> Result<Vec<u32>> {
    send(Command::Mmap)?;
    expect_note(notes, Note::Event(Event::Mmap)).await?;
    send(Command::Start)?;
    expect_note(notes, Note::Event(Event::Start)).await?;
    let mut ids = Vec::new();
    while (ids.len() as u64) < ROUNDS {
        match next_note(notes).await? {
            Note::Round(id) => ids.push(id),
            other => bail!("{other:?} after {} round(s), before STOP", ids.len()),
        }
    }
    ensure!(
        ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "round ids {ids:?} are not consecutive"
    );
    stop_sent.store(true, Ordering::SeqCst);
    send(Command::Stop)?;
    loop {
        match next_note(notes).await? {
            Note::Round(_) => {}
            Note::Event(Event::Stop) => break,
            other => bail!("{other:?} while waiting for STOP"),
        }
    }
    send(Command::Exit)?;
    expect_note(notes, Note::Event(Event::Exit)).await?;
    Ok(ids)
}

/// Spawn [`listen_async`] on `ch`; check it waits (the task is pending,
/// nothing reported) while no event is there, which is what leaves the
/// thread to the driving task; run [`drive`]; return the listener's
/// count and channel. A listener that failed reports its own error.
async fn listen_beside_driver(
    ch: AsyncChannel,
    cmds: Option<UnboundedReceiver<Command>>,
    send: impl FnMut(Command) -> Result<()>,
) -> Result<(Vec<u32>, u64, AsyncChannel)> {
    let stop_sent = Arc::new(AtomicBool::new(false));
    let (tx, mut notes) = unbounded_channel();
    let listener = tokio::spawn(listen_async(ch, cmds, stop_sent.clone(), tx));
    tokio::task::yield_now().await;
    let waited = !listener.is_finished() && notes.is_empty();
    let driven = match waited {
        true => drive(send, &mut notes, &stop_sent).await,
        false => Err(anyhow::anyhow!(
            "the listener task did not wait for the first event"
        )),
    };
    let ids = match driven {
        Ok(ids) => ids,
        // The listener ended early: its own error says why.
        Err(e) if listener.is_finished() => {
            return match listener.await {
                Ok(Err(le)) => Err(le.context(format!("the listener task failed ({e:#})"))),
                _ => Err(e),
            }
        }
        Err(e) => {
            listener.abort();
            return Err(e);
        }
    };
    let (rounds, ch) = tokio::time::timeout(timeout(), listener)
        .await
        .context("the listener task did not end after EXIT")?
        .context("the listener task")??;
    Ok((ids, rounds, ch))
}

/// A current-thread runtime with its reactor and clock.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?)
}

fn async_default_channel(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    ctx.params.set_period(Duration::from_millis(30))?;
    let rt = runtime()?;
    let (ids, rounds, ch) = rt.block_on(async {
        let ch = AsyncChannel::new(Channel::open_path(DEVICE_PATH)?)?;
        ensure!(ch.channel().kind() == ChannelKind::Default);
        // The driving task commands the default channel as root does,
        // through the parameters.
        let send = |c: Command| Ok(ctx.params.command(c.code())?);
        listen_beside_driver(ch, None, send).await
    })?;
    ensure!(rounds >= ROUNDS, "{rounds} rounds acknowledged for {ids:?}");
    let count = ctx.params.stats()?.count;
    ensure!(
        count >= ROUNDS,
        "the module counts {count} rounds after {rounds} acknowledged"
    );
    drop(ch);
    ctx.klog
        .wait_for("listener closed its eventfd: detached", timeout())?;
    Ok(())
}

fn async_created_channel(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let rt = runtime()?;
    let (ids, rounds, ch) = rt.block_on(async {
        let ch = AsyncChannel::new(Channel::create(
            &ChannelOptions::new()
                .device(DEVICE_PATH)
                .buffer_size(16 << 10)
                .period(Duration::from_millis(25))
                .name("lib-async"),
        )?)?;
        ensure!(ch.channel().kind() == ChannelKind::Owned && ch.channel().id() != 0);
        // Only the channel's file takes its commands: the driving task
        // passes them to the listener task, which runs each between two
        // waits for events.
        let (cmd_tx, cmd_rx) = unbounded_channel();
        let send = move |c: Command| {
            cmd_tx
                .send(c)
                .map_err(|_| anyhow::anyhow!("the listener task is gone ({})", c.name()))
        };
        listen_beside_driver(ch, Some(cmd_rx), send).await
    })?;
    let id = ch.channel().id();
    ensure!(ids.first() == Some(&1), "channel {id}: round ids {ids:?}");
    let stats = ch.channel().stats()?;
    ensure!(
        stats.id == id && stats.round_trips.count >= ROUNDS && stats.round_trips.count == rounds,
        "channel {id}: {rounds} rounds acknowledged, stats {stats:?}"
    );
    drop(ch);
    ctx.klog
        .wait_for(&format!("channel {id} released"), timeout())?;
    Ok(())
}
