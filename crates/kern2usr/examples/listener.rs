//! A blocking listener: attach to the module, print each event, check and
//! acknowledge every round until EXIT_TEST.
//!
//! Run as root with the module loaded, then drive it from another shell
//! (`kern2usr cmd mmap`, `start`, `stop`, `exit`):
//!
//! ```text
//! cargo run -p kern2usr --example listener [/dev/kern2usr]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use kern2usr::abi::DEVICE_PATH;
use kern2usr::device::first_pattern_mismatch;
use kern2usr::{Channel, Event};

fn run(device: &str) -> kern2usr::Result<u64> {
    let mut ch = Channel::open_path(device)?;
    let info = ch.info();
    println!(
        "attached to {device}: ABI v{}, {} mode, {} byte buffer, period {:?}",
        info.abi_version,
        info.event_mode.name(),
        info.buffer_size,
        info.period
    );
    let mut rounds = 0;
    loop {
        match ch.next(Duration::from_secs(2))? {
            None => println!("(no event for 2 s)"),
            Some(Event::MemoryReady { .. }) => {
                let Some(round) = ch.round() else { continue };
                // The view is the module's buffer itself: no copy.
                match first_pattern_mismatch(&round) {
                    Some(m) => println!("round {}: {m}", round.id()),
                    None => println!("round {}: {} bytes ok", round.id(), round.len()),
                }
                round.ack()?;
                rounds += 1;
            }
            Some(Event::Exit) => return Ok(rounds),
            Some(ev) => println!("{ev:?}"),
        }
    }
}

fn main() -> ExitCode {
    let device = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEVICE_PATH.to_owned());
    match run(&device) {
        Ok(n) => {
            println!("EXIT_TEST after {n} round(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("listener: {e}");
            ExitCode::FAILURE
        }
    }
}
