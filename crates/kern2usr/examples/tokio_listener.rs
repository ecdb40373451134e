//! A listener as a tokio task beside other work: one task handles the
//! module's events and rounds (`AsyncChannel::next().await`), another ticks
//! every 500 ms; the program ends when the module sends EXIT_TEST.
//!
//! ```text
//! cargo run -p kern2usr --features tokio --example tokio_listener [/dev/kern2usr]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use kern2usr::abi::DEVICE_PATH;
use kern2usr::aio::AsyncChannel;
use kern2usr::device::first_pattern_mismatch;
use kern2usr::{Channel, Event};

async fn listen(mut ch: AsyncChannel) -> kern2usr::Result<u64> {
    let mut rounds = 0;
    loop {
        match ch.next().await? {
            Event::MemoryReady { .. } => {
                let Some(round) = ch.round() else { continue };
                if let Some(m) = first_pattern_mismatch(&round) {
                    println!("round {}: {m}", round.id());
                }
                round.ack()?;
                rounds += 1;
            }
            Event::Exit => return Ok(rounds),
            other => println!("listener: {other:?}"),
        }
    }
}

async fn run(device: String) -> kern2usr::Result<u64> {
    let ch = AsyncChannel::new(Channel::open_path(&device)?)?;
    println!("listening on {device} ({:?} mode)", ch.info().event_mode);
    let listener = tokio::spawn(listen(ch));
    // Other work, beside the listener on the same runtime.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut ticks = 0u64;
    tokio::pin!(listener);
    loop {
        tokio::select! {
            done = &mut listener => {
                println!("other work: {ticks} ticks meanwhile");
                return done.unwrap_or_else(|e| Err(kern2usr::Error::Protocol(format!("listener task: {e}"))));
            }
            _ = tick.tick() => ticks += 1,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let device = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEVICE_PATH.to_owned());
    match run(device).await {
        Ok(n) => {
            println!("EXIT_TEST after {n} round(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokio listener: {e}");
            ExitCode::FAILURE
        }
    }
}
