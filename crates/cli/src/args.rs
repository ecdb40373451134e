//! The `kern2usr` command line: the clap definition the binary parses, and
//! the exit codes it documents. xtask renders the man pages and shell
//! completions from [`command`], and [`crate::reference`] the README's
//! reference table, so neither can drift from what the binary accepts.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use kern2usr::abi::{Code, DEFAULT_POLL_TIMEOUT_MS, DEVICE_PATH, PARAMS_DIR};
use kern2usr::AckMode;

use crate::bench::{self, Mechanism};

/// Exit code: the module refused a command (errno and reason on stderr).
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: the module is not loaded or the device node is missing.
pub const EXIT_MISSING: u8 = 4;
/// Exit code: permission denied (parameters and device are root-only).
pub const EXIT_PERMISSION: u8 = 5;
/// Exit code: bad data (pattern mismatch, unreadable parameter or record,
/// protocol violation, ABI mismatch).
pub const EXIT_BAD_DATA: u8 = 6;
/// Exit code: `stats --channel ID` names a channel the module does not list.
pub const EXIT_NO_CHANNEL: u8 = 7;

/// Every exit code and what it means, in order (`--help`, the man page and
/// the README show this list).
pub const EXIT_CODES: [(u8, &str); 8] = [
    (0, "success"),
    (1, "other failure"),
    (2, "bad usage (unknown subcommand or flag, bad value)"),
    (
        EXIT_REFUSED,
        "command refused by the module (errno and reason on stderr)",
    ),
    (EXIT_MISSING, "module not loaded, or device node missing"),
    (
        EXIT_PERMISSION,
        "permission denied (parameters and device are root-only)",
    ),
    (
        EXIT_BAD_DATA,
        "bad data: pattern mismatch, unreadable parameter or record, protocol or ABI mismatch",
    ),
    (
        EXIT_NO_CHANNEL,
        "no such channel (`stats --channel` with an id the module does not list)",
    ),
];

/// The `Exit codes: ...` paragraph after `--help`.
pub fn exit_codes_help() -> String {
    let list: Vec<String> = EXIT_CODES
        .iter()
        .map(|(code, meaning)| format!("{code} {meaning}"))
        .collect();
    format!("Exit codes: {}.", list.join("; "))
}

/// The whole command line as clap sees it (for man pages, completions and
/// the reference table).
pub fn command() -> clap::Command {
    Cli::command()
}

// `kern2usr`'s arguments (no doc comment: it would become the long about).
#[derive(Parser, Debug)]
#[command(
    name = "kern2usr",
    version,
    about = "Userspace side of the kern2usr module",
    after_help = exit_codes_help()
)]
pub struct Cli {
    /// Directory of the module parameters.
    #[arg(long, global = true, default_value = PARAMS_DIR, hide = true)]
    pub params_dir: PathBuf,
    #[command(subcommand)]
    pub cmd: Command,
}

// The subcommands (no doc comment, as for `Cli`).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the two eventfds and handle the module's codes until EXIT_TEST
    /// (the seed's KernUsr). Prints exactly the seed's lines on stdout.
    Listen {
        /// Device node to open and map on MMAP (2).
        #[arg(long, default_value = DEVICE_PATH)]
        device: PathBuf,
        /// poll() timeout in milliseconds; each expiry prints `timeout in polling`.
        #[arg(long, value_name = "MS", default_value_t = DEFAULT_POLL_TIMEOUT_MS)]
        poll_timeout: u32,
        /// Write usr_pid/usr_efd/usr_efd2 and run FIND (1) ourselves (root).
        #[arg(long)]
        attach: bool,
        /// How to acknowledge a round.
        #[arg(long, value_enum, default_value_t = AckArg::Round)]
        ack: AckArg,
        /// Adaptive mode: map the control page and, during a test, spin on
        /// its ready_seq before sleeping on efd (the module skips the
        /// doorbell while we spin if its `adaptive` parameter is 1). Rounds
        /// found by spinning print no line (no event arrived); at exit a
        /// line `adaptive: N round(s) handled, M without a doorbell`
        /// follows `done!`.
        #[arg(long)]
        adaptive: bool,
        /// Adaptive mode: spin budget in microseconds (0: never spin).
        #[arg(long, value_name = "US", default_value_t = 50, requires = "adaptive")]
        spin_us: u64,
        /// Print debug messages on stderr (how rounds are acknowledged,
        /// late acks); also on with KERN2USR_DEBUG=1.
        #[arg(long)]
        debug: bool,
    },
    /// Print the round-trip statistics of the current or last test
    /// (`stats`) and draw its histogram (`histogram`); with --channel, one
    /// channel's figures from the `channels` listing.
    Stats {
        /// Print this channel's line of the `channels` listing instead
        /// (id as `kern2usr status` shows it; 0 is the default channel).
        #[arg(long, value_name = "ID")]
        channel: Option<u32>,
        /// Rows of the chart (adjacent buckets are merged on a log scale).
        #[arg(long, default_value_t = 20)]
        rows: usize,
        /// Width of the longest bar in characters.
        #[arg(long, default_value_t = 50)]
        width: usize,
        /// Print one JSON object instead: `stats` (count, min, mean, p50,
        /// p90, p99, p99_9, max in ns) and `histogram` (low, high, count);
        /// with --channel, `channel` (the fields of the listing).
        #[arg(long)]
        json: bool,
    },
    /// Benchmark the module's ways of moving a buffer against a userspace
    /// floor (as root, in a guest: loads and unloads the module per size).
    Bench {
        /// Buffer sizes in bytes (multiples of 4096; k/M suffixes allowed).
        #[arg(long, default_value = "4096,65536,1048576", value_parser = parse_sizes_arg)]
        sizes: Sizes,
        /// Rounds per repeat of each mechanism and size (default: 2000 up
        /// to 16 KiB, 600 up to 256 KiB, 200 above).
        #[arg(long)]
        rounds: Option<u64>,
        /// How many times each mechanism runs at each size, interleaved
        /// (ratios are reported as the median and min-max of the repeats).
        #[arg(long, default_value_t = bench::DEFAULT_REPEATS,
              value_parser = clap::value_parser!(u32).range(1..=100))]
        repeats: u32,
        /// Mechanisms to run, comma-separated (floor, kern2usr, zero-copy,
        /// classic, adaptive, adaptive-poll, ring, and the peers netlink
        /// and relay).
        #[arg(long, value_delimiter = ',', value_parser = parse_mechanism,
              default_value = "floor,kern2usr,zero-copy,classic,adaptive,adaptive-poll,ring,netlink,relay")]
        mechanisms: Vec<Mechanism>,
        /// Channel counts of the several-channels runs, comma-separated
        /// (each channel its own thread, 4 KiB, back to back), or `none`.
        #[arg(long, default_value = "1,2,4,8", value_parser = parse_channel_counts)]
        channels: ChannelCounts,
        /// The module's `ack_poll_us` for the adaptive-poll runs.
        #[arg(long, value_name = "US", default_value_t = 200,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        ack_poll_us: u32,
        /// The adaptive run's spin budget in microseconds.
        #[arg(long, value_name = "US", default_value_t = 200)]
        spin_us: u64,
        /// Write the results as JSON to this file (with each run's
        /// histogram; `cargo xtask bench` draws the plot from it).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also print the JSON to stdout between K2U-FILE-BEGIN/END
        /// markers (for `cargo xtask bench`).
        #[arg(long)]
        dump: bool,
        /// The module file to insmod for each size.
        #[arg(long, default_value = "/root/kern2usr/kern/kern2usr.ko")]
        module: PathBuf,
        /// The peers' module (netlink and relay), insmod'ed for each of
        /// their runs.
        #[arg(long, default_value = "/root/kern2usr/kern/k2u_bench_peers.ko")]
        peers_module: PathBuf,
        /// Longest wait for one round or command, in seconds.
        #[arg(long, value_name = "S", default_value_t = 20)]
        timeout: u64,
        /// Where the floor's two threads run: both on one CPU (`same`) or
        /// wherever the scheduler puts them (`any`).
        #[arg(long, value_enum, default_value_t = FloorCpu::Same)]
        floor_cpu: FloorCpu,
    },
    /// Run a command by writing it to cur_cmd.
    Cmd {
        /// find, mmap, start, stop, exit, or a number.
        #[arg(value_parser = parse_command)]
        command: String,
    },
    /// Tell the module which process and eventfds to use.
    Attach {
        /// The listener's pid.
        #[arg(long)]
        pid: i32,
        /// Its kernel->user eventfd number.
        #[arg(long)]
        efd: i32,
        /// Its user->kernel eventfd number.
        #[arg(long)]
        efd2: i32,
        /// Also run FIND (1).
        #[arg(long)]
        find: bool,
    },
    /// Print the module's parameters, its channels (the `channels`
    /// listing, ABI v3) and, with --device, its K2U_IOC_INFO.
    Status {
        /// Device node to query with K2U_IOC_INFO.
        #[arg(long)]
        device: Option<PathBuf>,
        /// Print one JSON object instead: `params` (name -> text),
        /// `channels` (one object per channel, when the module lists them)
        /// and, with --device, `info`.
        #[arg(long)]
        json: bool,
    },
}

/// `bench --floor-cpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FloorCpu {
    /// Both threads pinned to the CPU the benchmark starts on.
    Same,
    /// No pinning.
    Any,
}

/// `listen --ack`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AckArg {
    /// By round id (K2U_IOC_ACK_ROUND) where known: queue-mode records and
    /// adaptive rounds; 7 on efd2 otherwise (counter mode, as the seed).
    /// K2U_IOC_ACK on a module without round ids.
    Round,
    /// Always write 7 to efd2 (as the seed).
    #[value(alias = "efd2")]
    Eventfd,
    /// Always K2U_IOC_ACK on the device.
    Ioctl,
}

impl From<AckArg> for AckMode {
    fn from(a: AckArg) -> Self {
        match a {
            AckArg::Round => AckMode::Round,
            AckArg::Eventfd => AckMode::EventFd,
            AckArg::Ioctl => AckMode::Ioctl,
        }
    }
}

/// `bench --channels`, parsed.
#[derive(Clone, Debug)]
pub struct ChannelCounts(pub Vec<usize>);

fn parse_channel_counts(s: &str) -> Result<ChannelCounts, String> {
    if s.trim() == "none" {
        return Ok(ChannelCounts(Vec::new()));
    }
    let max = kern2usr::abi::MAX_CHANNELS_LIMIT as usize;
    s.split(',')
        .map(|p| match p.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{p:?}: a channel count is a number from 1 to {max} (or `none`)"
            )),
        })
        .collect::<Result<_, _>>()
        .map(ChannelCounts)
}

/// `bench --sizes`, parsed (bytes).
#[derive(Clone, Debug)]
pub struct Sizes(pub Vec<usize>);

fn parse_sizes_arg(s: &str) -> Result<Sizes, String> {
    bench::parse_sizes(s).map(Sizes)
}

fn parse_mechanism(s: &str) -> Result<Mechanism, String> {
    Mechanism::from_name(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

/// Command names to the text written to cur_cmd; numbers pass unchanged.
fn parse_command(s: &str) -> Result<String, String> {
    let code = match s {
        "find" => Code::Find,
        "mmap" => Code::Mmap,
        "start" => Code::StartTest,
        "stop" => Code::StopTest,
        "exit" => Code::ExitTest,
        _ => {
            return s
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|_| "expected find, mmap, start, stop, exit or a number".to_owned())
        }
    };
    Ok(code.value().to_string())
}
