//! `kern2usr`: the listener (the seed's KernUsr) and small tools to drive
//! the module's parameters.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use kern2usr::abi::{self, param, Code, DEFAULT_POLL_TIMEOUT_MS, DEVICE_PATH, PARAMS_DIR};
use kern2usr::{AckMode, Device, EventFd, KernelSide, Listener, ListenerConfig, Params};
use rustix::process::Pid;

#[derive(Parser, Debug)]
#[command(
    name = "kern2usr",
    version,
    about = "Userspace side of the kern2usr module"
)]
struct Cli {
    /// Directory of the module parameters.
    #[arg(long, global = true, default_value = PARAMS_DIR, hide = true)]
    params_dir: PathBuf,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
        #[arg(long, value_enum, default_value_t = AckArg::Eventfd)]
        ack: AckArg,
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
    /// Print the module's parameters and, with --device, its K2U_IOC_INFO.
    Status {
        /// Device node to query with K2U_IOC_INFO.
        #[arg(long)]
        device: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AckArg {
    /// Write 7 to efd2 (as the seed).
    Eventfd,
    /// K2U_IOC_ACK on the device.
    Ioctl,
}

impl From<AckArg> for AckMode {
    fn from(a: AckArg) -> Self {
        match a {
            AckArg::Eventfd => AckMode::EventFd,
            AckArg::Ioctl => AckMode::Ioctl,
        }
    }
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = io::stdout().flush();
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let params = Params::at_dir(&cli.params_dir);
    match cli.cmd {
        Command::Listen {
            device,
            poll_timeout,
            attach,
            ack,
        } => listen(params, device, poll_timeout, attach, ack.into()),
        Command::Cmd { command } => {
            params.command_text(&command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Attach {
            pid,
            efd,
            efd2,
            find,
        } => {
            let Some(pid) = Pid::from_raw(pid).filter(|_| pid > 0) else {
                bail!("--pid must be a positive process id, not {pid}");
            };
            params.attach(pid, efd, efd2)?;
            if find {
                params.command(Code::Find)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { device } => status(&params, device),
    }
}

fn listen(
    params: Params,
    device: PathBuf,
    poll_timeout: u32,
    attach: bool,
    ack: AckMode,
) -> anyhow::Result<ExitCode> {
    // First thing: in a fresh process these become fds 3 and 4, the
    // numbers the seed's walkthrough writes to usr_efd/usr_efd2.
    let efd = EventFd::new()?;
    let efd2 = EventFd::new()?;
    if attach {
        params
            .ensure_loaded()
            .context("--attach needs the module")?;
    }
    let side = KernelSide::new(efd, efd2, params, &device, ack);
    let config = ListenerConfig {
        device_path: device,
        poll_timeout: Duration::from_millis(u64::from(poll_timeout)),
    };
    let mut listener = Listener::new(side, config, io::stdout().lock(), io::stderr());
    listener.announce()?;
    if attach {
        let side = listener.source();
        let pid = rustix::process::getpid();
        side.params()
            .attach(pid, side.efd().as_raw_fd(), side.efd2().as_raw_fd())
            .context("--attach: setting usr_pid/usr_efd/usr_efd2")?;
        side.params()
            .command(Code::Find)
            .context("--attach: running FIND (1)")?;
    }
    let outcome = listener.poll_loop()?;
    if outcome.is_clean() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "kern2usr: finished after {} round(s) with {} problem(s) (reported above)",
            outcome.rounds, outcome.problems
        );
        Ok(ExitCode::FAILURE)
    }
}

fn status(params: &Params, device: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    params.ensure_loaded()?;
    let mut out = io::stdout().lock();
    for name in [
        param::USR_PID,
        param::USR_EFD,
        param::USR_EFD2,
        param::CUR_CMD,
        param::BUFFER_SIZE,
        param::PERIOD_MS,
        param::EVENT_MODE,
        param::LAST_ERROR,
    ] {
        writeln!(out, "{name} = {}", params.read(name)?)?;
    }
    if let Some(path) = device {
        let info = Device::open(&path)?.info()?;
        let mode = match info.event_mode {
            m if m == abi::EventMode::Counter as u32 => abi::EventMode::Counter.name(),
            m if m == abi::EventMode::Queue as u32 => abi::EventMode::Queue.name(),
            _ => "unknown",
        };
        writeln!(
            out,
            "info: abi_version = {}, event_mode = {mode}, buffer_size = {}, period_ms = {}",
            info.abi_version, info.buffer_size, info.period_ms
        )?;
        if info.abi_version != abi::ABI_VERSION {
            bail!(
                "module ABI version {} differs from this tool's {}: rebuild one of them",
                info.abi_version,
                abi::ABI_VERSION
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
