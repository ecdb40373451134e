//! Joining an existing epoll loop: the channel's eventfd sits beside other
//! fds (here stdin and a 1 s timerfd standing for "other work"); when it is
//! readable the loop drains events with `try_next()` until `None`.
//!
//! ```text
//! cargo run -p kern2usr --example epoll [/dev/kern2usr]
//! ```

use std::io::Read;
use std::os::fd::AsFd;
use std::process::ExitCode;

use kern2usr::abi::DEVICE_PATH;
use kern2usr::{Channel, Event};
use rustix::event::epoll;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

const CHANNEL: u64 = 1;
const TICK: u64 = 2;
const STDIN: u64 = 3;

fn run(device: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let mut ch = Channel::open_path(device)?;
    let tick = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?;
    let second = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    timerfd_settime(
        &tick,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: second,
            it_value: second,
        },
    )?;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &ep,
        ch.as_fd(),
        epoll::EventData::new_u64(CHANNEL),
        epoll::EventFlags::IN,
    )?;
    epoll::add(
        &ep,
        &tick,
        epoll::EventData::new_u64(TICK),
        epoll::EventFlags::IN,
    )?;
    epoll::add(
        &ep,
        std::io::stdin().as_fd(),
        epoll::EventData::new_u64(STDIN),
        epoll::EventFlags::IN,
    )?;

    let mut rounds = 0;
    let mut events = Vec::with_capacity(8);
    loop {
        events.clear();
        epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None)?;
        for ev in &events {
            match ev.data.u64() {
                CHANNEL => {
                    // Readable: drain what is there; None = nothing more now.
                    while let Some(event) = ch.try_next()? {
                        match event {
                            Event::MemoryReady { .. } => {
                                if let Some(round) = ch.round() {
                                    let sum: u64 = round.iter().map(|&b| u64::from(b)).sum();
                                    println!("round {}: byte sum {sum}", round.id());
                                    round.ack()?;
                                    rounds += 1;
                                }
                            }
                            Event::Exit => return Ok(rounds),
                            other => println!("{other:?}"),
                        }
                    }
                }
                TICK => {
                    let mut buf = [0u8; 8];
                    rustix::io::read(&tick, &mut buf)?;
                    println!("tick ({rounds} rounds so far)");
                }
                _ => {
                    let mut line = [0u8; 256];
                    if std::io::stdin().read(&mut line)? == 0 {
                        println!("stdin closed: leaving");
                        return Ok(rounds);
                    }
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let device = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEVICE_PATH.to_owned());
    match run(&device) {
        Ok(n) => {
            println!("{n} round(s) handled");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("epoll example: {e}");
            ExitCode::FAILURE
        }
    }
}
