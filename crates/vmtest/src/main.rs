//! `kern2usr-vmtest`: the in-guest test suites and the narrated
//! walkthrough. Runs inside the QEMU guest, as root, from /root/kern2usr.

mod badinput;
mod burst;
mod channels;
mod common;
mod fuzz;
mod guest;
mod harness;
mod holder;
mod kmsg;
mod libchan;
mod listener;
mod pattern;
mod perf;
mod producer;
mod regress;
mod ring;
mod seedclient;
mod uffd;
mod walkthrough;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "kern2usr-vmtest", about = "kern2usr's in-guest tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run suites; exits non-zero if any test failed.
    Suite {
        /// Suites to run, in order.
        #[arg(required = true, value_enum)]
        names: Vec<SuiteName>,
        /// Run only tests whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Narrate the seed's 11-step walkthrough; exits non-zero if an
    /// expectation failed.
    Demo,
    /// List the suites and their tests.
    List,
    /// Random operations checked against the protocol model; exits
    /// non-zero on a mismatch or a kernel report.
    Fuzz {
        /// PRNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Operations to draw.
        #[arg(long, default_value_t = 300)]
        ops: usize,
        /// Replay an op log (one op a line) instead of drawing.
        #[arg(long)]
        replay: Option<std::path::PathBuf>,
        /// Seconds to spend shrinking a failing log.
        #[arg(long, default_value_t = 120)]
        shrink_secs: u64,
        /// Stop drawing ops after this many seconds (the run passes with
        /// the ops done so far).
        #[arg(long)]
        max_secs: Option<u64>,
    },
    /// The fuzzer's listener role (internal).
    #[command(hide = true)]
    FuzzChild,
    /// A channel's listener process of the `channels` suite (internal).
    #[command(hide = true)]
    ChannelChild(channels::ChildOpts),
    /// Receive a channel's fd on stdin and try every operation (internal).
    #[command(hide = true)]
    ChannelIntruder,
    /// Hold two inheritable eventfds until killed (a listener for tests).
    HoldEventfds {
        /// Share them with a forked child (`sleep 3600`).
        #[arg(long)]
        fork: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SuiteName {
    /// The seed's steps 1-11.
    Walkthrough,
    /// Refusals, bad parameters, bad mmaps/ioctls, lifetime.
    Badinput,
    /// Back-to-back commands and a full queue.
    Burst,
    /// Statistics, back_to_back, adaptive mode, READ_BUFFER, log rate.
    Perf,
    /// A bounded fuzz run (300 ops, seed 1) against the model.
    Fuzz,
    /// Regression tests of protocol defects (issue 7).
    Regress,
    /// The 2017 client's exact calls (tests/seed-client).
    Seedclient,
    /// Channels (issue 8): several at once, ownership, limits, group use.
    Channels,
    /// The kernel producer API with the sample producer module (both modules).
    Producer,
    /// The library's channel API against the module (ABI v3).
    Libchan,
    /// Ring channels and acks through the control page (ABI 4).
    Ring,
    /// All of the above but producer.
    All,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            println!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `fuzz` suite: one bounded run with a fixed seed, as one test.
fn fuzz_suite() -> harness::Tally {
    let mut tally = harness::Tally::default();
    let opts = fuzz::Options {
        seed: 1,
        ops: 300,
        replay: None,
        shrink_secs: 60,
        max_secs: None,
    };
    let result = match fuzz::run(&opts) {
        Ok(true) => Ok(()),
        Ok(false) => Err(anyhow::anyhow!(
            "mismatch with the model (seed 1, log above)"
        )),
        Err(e) => Err(e),
    };
    tally.record("fuzz seed 1, 300 ops", &result);
    tally.finish("fuzz");
    tally
}

fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Suite { names, filter } => {
            let mut expanded = Vec::new();
            for n in names {
                match n {
                    SuiteName::All => expanded.extend([
                        SuiteName::Walkthrough,
                        SuiteName::Badinput,
                        SuiteName::Burst,
                        SuiteName::Perf,
                        SuiteName::Regress,
                        SuiteName::Seedclient,
                        SuiteName::Channels,
                        SuiteName::Libchan,
                        SuiteName::Fuzz,
                    ]),
                    other => expanded.push(other),
                }
            }
            let filter = filter.as_deref();
            let mut failed = 0;
            for name in expanded {
                let tally = match name {
                    SuiteName::Walkthrough => walkthrough::run_suite(filter),
                    SuiteName::Badinput => {
                        harness::run_independent("badinput", badinput::TESTS, filter)
                    }
                    SuiteName::Burst => harness::run_independent("burst", burst::TESTS, filter),
                    SuiteName::Perf => harness::run_independent("perf", perf::TESTS, filter),
                    SuiteName::Fuzz => fuzz_suite(),
                    SuiteName::Channels => {
                        harness::run_independent("channels", channels::TESTS, filter)
                    }
                    SuiteName::Regress => {
                        harness::run_independent("regress", regress::TESTS, filter)
                    }
                    SuiteName::Seedclient => {
                        harness::run_independent("seedclient", seedclient::TESTS, filter)
                    }
                    SuiteName::Producer => {
                        harness::run_independent("producer", producer::TESTS, filter)
                    }
                    SuiteName::Libchan => {
                        harness::run_independent("libchan", libchan::TESTS, filter)
                    }
                    SuiteName::Ring => harness::run_independent("ring", ring::TESTS, filter),
                    SuiteName::All => harness::Tally::default(),
                };
                failed += tally.failed;
            }
            Ok(failed == 0)
        }
        Cmd::Demo => walkthrough::demo(),
        Cmd::Fuzz {
            seed,
            ops,
            replay,
            shrink_secs,
            max_secs,
        } => fuzz::run(&fuzz::Options {
            seed,
            ops,
            replay,
            shrink_secs,
            max_secs,
        }),
        Cmd::FuzzChild => fuzz::child::run(),
        Cmd::ChannelChild(o) => channels::child_main(&o),
        Cmd::ChannelIntruder => channels::intruder_main(),
        Cmd::HoldEventfds { fork } => holder::run(fork).map(|()| true),
        Cmd::List => {
            println!("walkthrough:");
            for (n, what, _) in walkthrough::STEPS {
                println!("  step {n}: {what}");
            }
            for (suite, tests) in [
                ("badinput", badinput::TESTS),
                ("burst", burst::TESTS),
                ("perf", perf::TESTS),
                ("regress", regress::TESTS),
                ("seedclient", seedclient::TESTS),
                ("producer", producer::TESTS),
                ("channels", channels::TESTS),
                ("libchan", libchan::TESTS),
                ("ring", ring::TESTS),
            ] {
                println!("{suite}:");
                for (name, _) in tests {
                    println!("  {name}");
                }
            }
            Ok(true)
        }
    }
}
