//! Two channels of one's own in one process, each with its own buffer
//! size and period: one thread waits on both eventfds with poll(), every
//! round is checked byte by byte against `abi::channel_pattern_byte` (which
//! depends on the channel and the round, so crosstalk or a stale round
//! shows) and acknowledged.
//!
//! Needs the module (ABI v3) and access to the device (root, or a member
//! of group `kern2usr` with the udev rule installed); no parameters are
//! written, so the default channel is left alone:
//!
//! ```text
//! cargo run -p kern2usr --example two_channels [ROUNDS] [/dev/kern2usr]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use kern2usr::abi::{channel_pattern_byte, DEVICE_PATH};
use kern2usr::{Channel, ChannelOptions, Command, Event};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// What one channel saw.
#[derive(Default)]
struct Tally {
    rounds: u64,
    bytes: u64,
    /// STOP_TEST sent: a round published just before it is abandoned.
    stop_sent: bool,
    exited: bool,
}

/// Check and acknowledge the open round of `ch`; `Err` names the first
/// byte that is not the channel's pattern for that round.
fn check_round(ch: &mut Channel, tally: &mut Tally) -> Result<(), String> {
    let id = ch.id();
    let Some(round) = ch.round() else {
        return Ok(());
    };
    let seq = u64::from(round.id());
    if let Some((i, &got)) = round
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != channel_pattern_byte(id, seq, i))
    {
        return Err(format!(
            "channel {id} round {seq}: byte {i} is {got:#04x}, expected {:#04x}",
            channel_pattern_byte(id, seq, i)
        ));
    }
    let len = round.len() as u64;
    match round.ack() {
        Ok(()) => {
            tally.rounds += 1;
            tally.bytes += len;
            Ok(())
        }
        // STOP abandoned it while its MEMORY_READY was on the way.
        Err(kern2usr::Error::RoundAbandoned { .. }) if tally.stop_sent => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Take every event `ch` has now.
fn drain(ch: &mut Channel, tally: &mut Tally) -> Result<(), String> {
    while let Some(ev) = ch.try_next().map_err(|e| e.to_string())? {
        match ev {
            Event::MemoryReady { .. } => check_round(ch, tally)?,
            Event::Exit => tally.exited = true,
            Event::Mmap | Event::Start | Event::Stop => {}
        }
    }
    Ok(())
}

/// Wait (at most `timeout`) until one of the channels' eventfds is
/// readable, then drain both.
fn step(chans: &mut [(Channel, Tally); 2], timeout: Duration) -> Result<(), String> {
    let ready = {
        let mut fds = [
            PollFd::new(&chans[0].0, PollFlags::IN),
            PollFd::new(&chans[1].0, PollFlags::IN),
        ];
        let t = Timespec::try_from(timeout).map_err(|e| e.to_string())?;
        poll(&mut fds, Some(&t)).map_err(|e| format!("poll: {e}"))?
    };
    if ready == 0 {
        return Err(format!("no event on either channel within {timeout:?}"));
    }
    for (ch, tally) in chans.iter_mut() {
        drain(ch, tally)?;
    }
    Ok(())
}

fn run(device: &str, rounds: u64) -> Result<(), String> {
    let make = |size: usize, period_ms: u64, name: &str| {
        Channel::create(
            &ChannelOptions::new()
                .device(device)
                .buffer_size(size)
                .period(Duration::from_millis(period_ms))
                .name(name),
        )
        .map_err(|e| e.to_string())
    };
    let mut chans = [
        (make(4096, 20, "small")?, Tally::default()),
        (make(256 << 10, 35, "large")?, Tally::default()),
    ];
    for (ch, _) in &chans {
        println!(
            "channel {} ({}): {} bytes, {:?} mode, period {:?}",
            ch.id(),
            ch.name().unwrap_or("-"),
            ch.info().buffer_size,
            ch.info().event_mode,
            ch.info().period
        );
        ch.command(Command::Mmap).map_err(|e| e.to_string())?;
        ch.command(Command::Start).map_err(|e| e.to_string())?;
    }
    let timeout = Duration::from_secs(10);
    while chans.iter().any(|(_, t)| t.rounds < rounds) {
        step(&mut chans, timeout)?;
        // A channel that has its rounds stops; the other goes on.
        for (ch, t) in &mut chans {
            if t.rounds >= rounds && !t.stop_sent {
                ch.command(Command::Stop).map_err(|e| e.to_string())?;
                t.stop_sent = true;
            }
        }
    }
    for (ch, _) in &chans {
        ch.command(Command::Exit).map_err(|e| e.to_string())?;
    }
    while chans.iter().any(|(_, t)| !t.exited) {
        step(&mut chans, timeout)?;
    }
    for (ch, t) in &chans {
        let stats = ch.stats().map_err(|e| e.to_string())?;
        println!(
            "channel {}: {} rounds checked ({} bytes), module counted {} (p50 {} ns, p99 {} ns)",
            ch.id(),
            t.rounds,
            t.bytes,
            stats.round_trips.count,
            stats.round_trips.p50,
            stats.round_trips.p99
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let rounds = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let device = args.next().unwrap_or_else(|| DEVICE_PATH.to_owned());
    match run(&device, rounds) {
        Ok(()) => {
            println!("two_channels: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("two_channels: {e}");
            ExitCode::FAILURE
        }
    }
}
