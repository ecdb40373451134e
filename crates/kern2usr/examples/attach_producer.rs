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
//! Every round must be non-empty, fit the buffer, and have the id after the
//! last one (no round lost). On the sample producer's channel (name
//! `sample`) each round is also checked byte by byte: its counter stamp
//! (bytes 0-7) follows the last by one, its length is
//! `sample_producer_len(seq, size)` and every later byte is
//! `sample_producer_byte(seq, i)`.

use std::process::ExitCode;
use std::time::Duration;

use kern2usr::abi::{sample_producer_byte, sample_producer_len, DEVICE_PATH, SAMPLE_PRODUCER_NAME};
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
    let mut last_seq: Option<u64> = None;
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
                if name == SAMPLE_PRODUCER_NAME {
                    let seq = check_sample(&round, size as u64, last_seq)?;
                    last_seq = Some(seq);
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

/// The sample producer's round: its stamp (returned), length and bytes.
fn check_sample(data: &[u8], size: u64, last_seq: Option<u64>) -> Result<u64, Error> {
    let stamp: [u8; 8] = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Protocol(format!("a {}-byte round has no stamp", data.len())))?;
    let seq = u64::from_le_bytes(stamp);
    if last_seq.is_some_and(|prev| seq != prev + 1) {
        return Err(Error::Protocol(format!(
            "stamp {seq} after {last_seq:?}: a round was lost"
        )));
    }
    let want = sample_producer_len(seq, size);
    if data.len() as u64 != want {
        return Err(Error::Protocol(format!(
            "round {seq}: {} bytes, the sample publishes {want}",
            data.len()
        )));
    }
    if let Some(i) = (8..data.len()).find(|&i| data[i] != sample_producer_byte(seq, i)) {
        return Err(Error::Protocol(format!(
            "round {seq}: byte {i} is {} where {} was expected",
            data[i],
            sample_producer_byte(seq, i)
        )));
    }
    Ok(seq)
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
