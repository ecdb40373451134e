//! `kern2usr`: the listener (the seed's KernUsr) and small tools to drive
//! the module's parameters.
//!
//! The command line is defined in [`kern2usr_cli::args`] (shared with the
//! man pages, completions and README table); the exit codes are listed
//! there ([`kern2usr_cli::args::EXIT_CODES`]).

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use kern2usr::abi::{self, param, Code, DEVICE_PATH};
use kern2usr::{
    AckMode, ChannelEntry, Device, EventFd, KernelSide, Listener, ListenerConfig, Params,
};
use kern2usr_cli::args::{
    Cli, Command, FloorCpu, EXIT_BAD_DATA, EXIT_MISSING, EXIT_NO_CHANNEL, EXIT_PERMISSION,
    EXIT_REFUSED,
};
use kern2usr_cli::bench;
use rustix::process::Pid;

/// `stats --channel ID` with an id the `channels` listing does not have.
#[derive(Debug)]
struct NoSuchChannel {
    id: u32,
    listed: Vec<u32>,
}

impl std::fmt::Display for NoSuchChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.listed.iter().map(u32::to_string).collect();
        write!(
            f,
            "no channel {} (the module lists {}); see `kern2usr status`",
            self.id,
            ids.join(", ")
        )
    }
}

impl std::error::Error for NoSuchChannel {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = io::stdout().flush();
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The documented exit code for an error (see `args::EXIT_CODES`).
fn exit_code(e: &anyhow::Error) -> u8 {
    use kern2usr::Error as E;
    use rustix::io::Errno;
    if e.chain()
        .any(|c| c.downcast_ref::<NoSuchChannel>().is_some())
    {
        return EXIT_NO_CHANNEL;
    }
    let Some(k) = e.chain().find_map(|c| c.downcast_ref::<kern2usr::Error>()) else {
        return 1;
    };
    match k {
        E::CommandRefused { .. }
        | E::ChannelCommand { .. }
        | E::ChannelLimit { .. }
        | E::ChannelBusy { .. }
        | E::ProducerChannel { .. } => return EXIT_REFUSED,
        E::ModuleNotLoaded | E::NoProducer { .. } => return EXIT_MISSING,
        E::NotOwner { .. } => return EXIT_PERMISSION,
        E::ParamValue { .. }
        | E::EventSize { .. }
        | E::Protocol(_)
        | E::AbiMismatch { .. }
        | E::UnknownEventMode(_) => return EXIT_BAD_DATA,
        _ => {}
    }
    match k.errno() {
        Some(Errno::ACCESS | Errno::PERM) => EXIT_PERMISSION,
        Some(Errno::NOENT | Errno::NXIO | Errno::NODEV)
            if matches!(k, E::DeviceOpen { .. } | E::ParamRead { .. }) =>
        {
            EXIT_MISSING
        }
        _ => 1,
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
            adaptive,
            spin_us,
            debug,
        } => {
            let adaptive = adaptive.then(|| Duration::from_micros(spin_us));
            let options = ListenOptions {
                attach,
                ack: ack.into(),
                adaptive,
                debug: debug || kern2usr::session::debug_enabled(),
            };
            listen(params, device, poll_timeout, &options)
        }
        Command::Stats {
            channel: Some(id),
            json,
            ..
        } => channel_stats(&params, id, json),
        Command::Stats {
            channel: None,
            rows,
            width,
            json,
        } => stats(&params, rows, width, json),
        Command::Bench {
            sizes,
            rounds,
            repeats,
            mechanisms,
            channels,
            ack_poll_us,
            spin_us,
            json,
            dump,
            module,
            peers_module,
            timeout,
            floor_cpu,
        } => {
            let config = bench::runner::Config {
                sizes: sizes.0,
                rounds,
                repeats,
                scaling: channels.0,
                scaling_size: 4096,
                ack_poll_us,
                mechanisms,
                spin: Duration::from_micros(spin_us),
                module,
                device: PathBuf::from(DEVICE_PATH),
                params,
                timeout: Duration::from_secs(timeout),
                floor_same_cpu: floor_cpu == FloorCpu::Same,
                peers_module,
            };
            run_bench(&config, json, dump)
        }
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
        Command::Status { device, json } => status(&params, device, json),
    }
}

/// The parameters every module has, in `status`'s order.
const STATUS_PARAMS: [&str; 8] = [
    param::USR_PID,
    param::USR_EFD,
    param::USR_EFD2,
    param::CUR_CMD,
    param::BUFFER_SIZE,
    param::PERIOD_MS,
    param::EVENT_MODE,
    param::LAST_ERROR,
];

/// Parameters of newer modules, shown by `status` when present.
const OPTIONAL_PARAMS: [&str; 4] = [
    param::BACK_TO_BACK,
    param::ADAPTIVE,
    param::MAX_CHANNELS,
    param::MAX_CHANNEL_MEMORY,
];

/// One channel of the listing as JSON (`status --json`, `stats --channel
/// --json`): the listing's fields, `null` for no name or no owner.
fn channel_json(c: &ChannelEntry) -> serde_json::Value {
    serde_json::json!({
        "id": c.id,
        "name": c.name,
        "owner": c.owner,
        "buffer_size": c.buffer_size,
        "event_mode": c.event_mode.name(),
        "pacing": c.pacing.name(),
        "rounds": c.rounds,
        "p50_ns": c.p50_ns,
        "p99_ns": c.p99_ns,
    })
}

/// `status`'s table of the channels.
fn render_channels(list: &[ChannelEntry]) -> String {
    use kern2usr::stats::format_ns;
    let mut rows = vec![[
        "id".to_owned(),
        "name".to_owned(),
        "owner".to_owned(),
        "buffer".to_owned(),
        "mode".to_owned(),
        "pacing".to_owned(),
        "rounds".to_owned(),
        "p50".to_owned(),
        "p99".to_owned(),
    ]];
    for c in list {
        let name = match (&c.name, c.is_default()) {
            (Some(n), _) => n.clone(),
            (None, true) => "(default)".to_owned(),
            (None, false) => "-".to_owned(),
        };
        rows.push([
            c.id.to_string(),
            name,
            c.owner.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            c.buffer_size.to_string(),
            c.event_mode.name().to_owned(),
            c.pacing.name().to_owned(),
            c.rounds.to_string(),
            format_ns(c.p50_ns),
            format_ns(c.p99_ns),
        ]);
    }
    let mut widths = [0usize; 9];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = format!("channels ({}):\n", list.len());
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        s.push_str("  ");
        s.push_str(cells.join("  ").trim_end());
        s.push('\n');
    }
    s
}

/// `stats --channel ID`: that channel's line of the listing.
fn channel_stats(params: &Params, id: u32, json: bool) -> anyhow::Result<ExitCode> {
    use kern2usr::stats::format_ns;
    params.ensure_loaded()?;
    let list = params.channels()?;
    let Some(c) = list.iter().find(|c| c.id == id) else {
        return Err(NoSuchChannel {
            id,
            listed: list.iter().map(|c| c.id).collect(),
        }
        .into());
    };
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::json!({ "channel": channel_json(c) }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let name = c
        .name
        .as_deref()
        .unwrap_or(if c.is_default() { "default" } else { "-" });
    let owner = c.owner.map_or_else(|| "none".to_owned(), |p| p.to_string());
    writeln!(out, "channel {} ({name})", c.id)?;
    writeln!(out, "owner   {owner}")?;
    writeln!(out, "buffer  {} bytes", c.buffer_size)?;
    writeln!(out, "mode    {}", c.event_mode.name())?;
    writeln!(out, "pacing  {}", c.pacing.name())?;
    writeln!(out, "rounds  {}", c.rounds)?;
    writeln!(out, "p50     {}", format_ns(c.p50_ns))?;
    writeln!(out, "p99     {}", format_ns(c.p99_ns))?;
    Ok(ExitCode::SUCCESS)
}

/// `listen`'s switches.
struct ListenOptions {
    attach: bool,
    ack: AckMode,
    adaptive: Option<Duration>,
    debug: bool,
}

fn listen(
    params: Params,
    device: PathBuf,
    poll_timeout: u32,
    options: &ListenOptions,
) -> anyhow::Result<ExitCode> {
    let &ListenOptions {
        attach,
        ack,
        adaptive,
        debug,
    } = options;
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
        adaptive,
        debug,
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
        // Problems are data the listener could not accept (mismatches,
        // sequence gaps, refused maps or acks).
        Ok(ExitCode::from(EXIT_BAD_DATA))
    }
}

fn stats(params: &Params, rows: usize, width: usize, json: bool) -> anyhow::Result<ExitCode> {
    params.ensure_loaded()?;
    let stats = params.stats()?;
    let buckets = params.histogram()?;
    let mut out = io::stdout().lock();
    if json {
        let histogram: Vec<_> = buckets
            .iter()
            .map(|b| serde_json::json!({ "low": b.low, "high": b.high, "count": b.count }))
            .collect();
        let doc = serde_json::json!({ "stats": stats, "histogram": histogram });
        writeln!(out, "{doc}")?;
        return Ok(ExitCode::SUCCESS);
    }
    write!(out, "{}", kern2usr::stats::render_summary(&stats))?;
    if buckets.is_empty() {
        writeln!(out, "histogram: empty (no round completed since START)")?;
    } else {
        let in_buckets: u64 = buckets.iter().map(|b| b.count).sum();
        writeln!(out, "histogram ({in_buckets} rounds, signal to ack):")?;
        write!(
            out,
            "{}",
            kern2usr::stats::render_chart(&buckets, rows, width)
        )?;
        if in_buckets != stats.count {
            writeln!(
                out,
                "note: the histogram holds {in_buckets} rounds, stats {} (a test is running)",
                stats.count
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `status --json`: the parameters by name and, with a device, its INFO
/// (checked: a module of another ABI version is an error, exit code 6).
fn status_json(
    params: &Params,
    device: Option<PathBuf>,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let mut map = serde_json::Map::new();
    for name in STATUS_PARAMS {
        map.insert(name.to_owned(), params.read(name)?.into());
    }
    for name in OPTIONAL_PARAMS {
        if params.path(name).exists() {
            map.insert(name.to_owned(), params.read(name)?.into());
        }
    }
    let mut doc = serde_json::json!({ "params": map });
    if params.path(param::CHANNELS).exists() {
        let list: Vec<_> = params.channels()?.iter().map(channel_json).collect();
        doc["channels"] = list.into();
    }
    if let Some(path) = device {
        let info = kern2usr::Info::try_from(Device::open(&path)?.info()?)?;
        doc["info"] = serde_json::json!({
            "abi_version": info.abi_version,
            "event_mode": info.event_mode.name(),
            "buffer_size": info.buffer_size,
            "period_ms": info.period.as_millis(),
            "channel_id": info.channel_id,
        });
    }
    writeln!(out, "{doc}")?;
    Ok(ExitCode::SUCCESS)
}

fn run_bench(
    config: &bench::runner::Config,
    json: Option<PathBuf>,
    dump: bool,
) -> anyhow::Result<ExitCode> {
    if !rustix::process::geteuid().is_root() {
        bail!("bench loads and unloads the module: run it as root (in a guest)");
    }
    let mut out = io::stdout().lock();
    let report = bench::runner::run(config, &mut out);
    writeln!(out)?;
    write!(out, "{}", report.table())?;
    writeln!(
        out,
        "(round trip = MEMORY_READY signalled to ack consumed, measured by the module; floor: \
         two threads over eventfds, measured in userspace; percentiles are histogram bucket \
         low bounds, within 3 %; adaptive spins up to {} µs then sleeps, and copies like kern2usr)",
        config.spin.as_micros()
    )?;
    let json_text = report.json_text();
    if let Some(path) = &json {
        std::fs::write(path, &json_text).with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "bench: JSON written to {}", path.display())?;
    }
    if dump {
        bench::dump::write_file(&mut out, "bench.json", &json_text)?;
    }
    writeln!(out, "{}", report.closing_line())?;
    let (_, failed) = report.tally();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn status(params: &Params, device: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    params.ensure_loaded()?;
    let mut out = io::stdout().lock();
    if json {
        return status_json(params, device, &mut out);
    }
    for name in STATUS_PARAMS {
        writeln!(out, "{name} = {}", params.read(name)?)?;
    }
    // Newer parameters: shown when the module has them.
    for name in OPTIONAL_PARAMS {
        if params.path(name).exists() {
            writeln!(out, "{name} = {}", params.read(name)?)?;
        }
    }
    if params.path(param::CHANNELS).exists() {
        write!(out, "{}", render_channels(&params.channels()?))?;
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
        // Shown first, then checked: a mismatch exits with code 6.
        kern2usr::Info::try_from(info)?;
    }
    Ok(ExitCode::SUCCESS)
}
