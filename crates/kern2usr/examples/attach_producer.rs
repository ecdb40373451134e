//! Listen to a kernel producer's channel: attach by name, check each
//! round the producer publishes (only the published length is shown) and
//! acknowledge it, until the producer destroys its channel (EXIT_TEST) or
//! ROUNDS rounds were read.
//!
//! With the sample producer loaded (`insmod k2u_sample_producer.ko`,
//! which publishes a counter-stamped pattern under the name it logs):
//!
//! ```text
//! cargo run -p kern2usr --example attach_producer -- NAME [ROUNDS] [/dev/kern2usr]
//! ```
//!
//! The check here is generic: every round is non-empty, fits the buffer,
//! and its id follows the last one by exactly one (no round lost). The
//! sample producer's own byte format is checked by the in-VM suites.

use std::process::ExitCode;
use std::time::Duration;

use kern2usr::abi::DEVICE_PATH;
use kern2usr::{Channel, Error, Event};

fn run(device: &str, name: &str, max_rounds: u64) -> Result<u64, Error> {
    // No such producer is Error::NoProducer, whose message says to load
    // the producer module first; one with a listener is ChannelBusy.
    let mut ch = Channel::attach_path(device, name)?;
    println!(
        "attached to producer channel {name:?}: id {}, {} byte buffer, {:?} mode",
        ch.id(),
        ch.info().buffer_size,
        ch.info().event_mode
    );
    let size = ch.info().buffer_size;
    let mut last: Option<u32> = None;
    let mut rounds = 0;
    while rounds < max_rounds {
        match ch.next(Duration::from_secs(5))? {
            None => println!("(no round for 5 s)"),
            Some(Event::MemoryReady { .. }) => {
                let Some(round) = ch.round() else { continue };
                let id = round.id();
                if round.is_empty() || round.len() > size {
                    return Err(Error::Protocol(format!(
                        "round {id}: {} bytes published into a {size}-byte buffer",
                        round.len()
                    )));
                }
                if let Some(prev) = last {
                    if id != prev.wrapping_add(1) {
                        return Err(Error::Protocol(format!("round {id} followed round {prev}")));
                    }
                }
                let head: Vec<u8> = round.iter().take(8).copied().collect();
                println!("round {id}: {} bytes, starts {head:02x?}", round.len());
                round.ack()?;
                last = Some(id);
                rounds += 1;
            }
            Some(Event::Exit) => {
                println!("the producer destroyed its channel");
                break;
            }
            Some(other) => println!("{other:?}"),
        }
    }
    Ok(rounds)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("usage: attach_producer NAME [ROUNDS] [DEVICE]");
        return ExitCode::from(2);
    };
    let rounds = args.next().and_then(|a| a.parse().ok()).unwrap_or(u64::MAX);
    let device = args.next().unwrap_or_else(|| DEVICE_PATH.to_owned());
    match run(&device, &name, rounds) {
        Ok(n) => {
            println!("{n} round(s) read");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("attach_producer: {e}");
            ExitCode::FAILURE
        }
    }
}
