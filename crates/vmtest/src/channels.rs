//! The `channels` suite (issue 8): channels created with `K2U_IOC_CREATE`,
//! each owned by its file and its process. Several at once with their own
//! listener processes, data checked byte by byte against
//! `channel_pattern_byte`; ownership refusals; a killed listener's channel
//! freed; the limits; CREATE's and CHANNEL_CMD's refusals; the group
//! option of the udev rule; and the figures (rounds/s with 1-8 channels).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use kern2usr::abi::{
    ChannelStats, Code, Create, Event, EventMode, CHANNEL_NAME_LEN, CREATE_ATTACH,
    CREATE_BACK_TO_BACK, CTRL_MMAP_OFFSET, DEVICE_NAME, IOC_READ_BUFFER, PARAMS_DIR,
};
use kern2usr::{
    Access, ChannelEntry, CtrlPage, Device, EventFd, Info, MappedBuffer, Pacing, Session,
};
use rustix::io::Errno;
use rustix::ioctl::{Opcode, Setter};
use rustix::process::{Pid, Signal};

use crate::common::check_round;
use crate::guest::{self, timeout};
use crate::harness::{Ctx, Test};

/// The suite's tests.
pub const TESTS: &[Test] = &[
    (
        "8 channels at once (4 KiB-1 MiB), each its own listener process: every byte of every round, no crosstalk; the default channel runs undisturbed; listing and stats read back",
        eight_channels,
    ),
    (
        "another process (a file passed with SCM_RIGHTS, a forked child) gets EPERM on every operation of a channel it does not own",
        not_the_owner,
    ),
    (
        "a listener killed mid-round frees its channel: released, unlisted, memory back, kmemleak clean",
        killed_listener_frees,
    ),
    (
        "limits: max_channels and max_channel_memory refuse CREATE with ENOSPC; the parameters' ranges",
        limits,
    ),
    (
        "CREATE's refusals (EINVAL, EBADF, ENOENT, EBUSY), CHANNEL_CMD's (EINVAL, EPROTO, ENOTCONN), INFO and CHANNEL_STATS",
        create_and_command_refusals,
    ),
    (
        "udev rule's group option: uid 1000 in group kern2usr runs a channel; EPERM on the default channel, EACCES on a parameter",
        group_option,
    ),
    (
        "figures: memory per channel, rounds/s with 1, 2, 4 and 8 channels at once",
        figures,
    ),
    (
        "a READ_BUFFER stalled on its destination (userfaultfd) holds up neither the listing nor the channel's rounds and acks; its bytes are one round's",
        stalled_read_buffer,
    ),
];

/// The node every channel test opens (devtmpfs makes it).
fn dev_path() -> String {
    format!("/dev/{DEVICE_NAME}")
}

/// The shipped udev rule, checked against what the test applies.
const UDEV_RULE: &str = include_str!("../../../packaging/udev/60-kern2usr.rules");

/// Group id the test gives group `kern2usr` in the guest.
const GROUP_GID: u32 = 990;
/// The unprivileged user of the group test.
const USER_UID: u32 = 1000;

// ---------------------------------------------------------------------
// Requests and outcomes.

/// `K2U_IOC_READ_BUFFER` of `len` bytes to user address `addr`.
fn read_buffer_at(fd: BorrowedFd<'_>, addr: u64, len: u64) -> rustix::io::Result<()> {
    let rb = kern2usr::abi::ReadBuffer { addr, len };
    // SAFETY: IOC_READ_BUFFER is _IOW(magic, 4, struct k2u_read_buffer);
    // the kernel reads `rb` and writes at most `len` bytes at `addr`, which
    // the caller keeps mapped and writable, and otherwise untouched, for
    // the whole call.
    let ioctl =
        unsafe { Setter::<{ IOC_READ_BUFFER as Opcode }, kern2usr::abi::ReadBuffer>::new(rb) };
    // SAFETY: see above; the fd is open for the call.
    unsafe { rustix::ioctl::ioctl(fd, ioctl) }.map(drop)
}

/// A `Create` for a channel of `size` bytes on the caller's eventfds.
fn create_arg(efd: &EventFd, efd2: &EventFd, size: u64) -> Create {
    Create {
        efd: efd.as_raw_fd(),
        efd2: efd2.as_raw_fd(),
        buffer_size: size,
        ..Create::default()
    }
}

/// `name` as the NUL-padded field.
fn name_field(name: &str) -> [u8; CHANNEL_NAME_LEN] {
    let mut f = [0u8; CHANNEL_NAME_LEN];
    let n = name.len().min(CHANNEL_NAME_LEN);
    f[..n].copy_from_slice(&name.as_bytes()[..n]);
    f
}

/// `ok` or `errno <n>` (the error's errno: `.map_err(|e| e.errno())` of
/// a library call, `.map_err(Some)` of a system call).
fn outcome<T>(r: std::result::Result<T, Option<Errno>>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(Some(e)) => errno_word(e),
        Err(None) => "error without an errno".to_string(),
    }
}

fn errno_word(e: Errno) -> String {
    format!("errno {}", e.raw_os_error())
}

fn expect_errno<T>(what: &str, r: kern2usr::Result<T>, want: Errno) -> Result<()> {
    match r {
        Ok(_) => bail!("{what} succeeded; expected {want:?}"),
        Err(e) => ensure!(
            e.errno() == Some(want),
            "{what}: {e} ({:?}); expected {want:?}",
            e.errno()
        ),
    }
    Ok(())
}

/// Run `body` in a forked child whose output goes to a pipe; the child
/// leaves with `_exit`: status 0, or 1 after a line `error <chain>` when
/// `body` fails. Returns the child's pid, all it wrote and its wait status.
///
/// # Safety
///
/// No other thread may be running in this process (the harness runs each
/// test on its one thread): the child allocates.
unsafe fn forked(body: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<(i32, String, i32)> {
    let (mut rd, mut wr) = std::io::pipe()?;
    // SAFETY: no other thread runs (the caller's promise), so the child
    // may allocate; it only runs `body` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(rd);
        let ok = match body(&mut wr) {
            Ok(()) => true,
            Err(e) => {
                let _ = writeln!(wr, "error {e:#}");
                false
            }
        };
        // SAFETY: leaving the forked child without running the parent's
        // destructors or atexit handlers.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    drop(wr);
    let mut text = String::new();
    rd.read_to_string(&mut text)?;
    let mut status = 0;
    // SAFETY: waiting for the child forked above, into a local.
    ensure!(unsafe { libc::waitpid(pid, &mut status, 0) } == pid);
    Ok((pid, text, status))
}

// ---------------------------------------------------------------------
// A channel and its listener, in this process.

/// A channel this process created: its file and eventfds, its events
/// read by the library's [`Session`].
pub struct Chan {
    s: Session,
    /// The id the kernel gave it.
    pub id: u32,
    /// Its buffer size.
    pub size: usize,
}

impl Chan {
    /// Open the device and make the file a channel.
    pub fn create(size: u64, period_ms: u32, flags: u32, name: &str) -> Result<Self> {
        let dev = Device::open(dev_path())?;
        let efd = EventFd::new()?;
        let efd2 = EventFd::new()?;
        let made = dev
            .create(&Create {
                period_ms,
                flags,
                name: name_field(name),
                ..create_arg(&efd, &efd2, size)
            })
            .with_context(|| format!("CREATE of {size} bytes"))?;
        ensure!(made.id >= 1, "CREATE gave id {}", made.id);
        ensure!(
            made.buffer_size == size,
            "CREATE wrote back buffer_size {}, expected {size}",
            made.buffer_size
        );
        Self::made(dev, efd, efd2, made.id, size)
    }

    /// The channel `id` of `size` bytes that `dev` was made with these
    /// eventfds.
    fn made(dev: Device, efd: EventFd, efd2: EventFd, id: u32, size: u64) -> Result<Self> {
        let mode = Info::try_from(dev.info()?)?.event_mode;
        Ok(Self {
            s: Session::from_parts(efd, efd2, dev, mode),
            id,
            size: usize::try_from(size)?,
        })
    }

    /// Its file.
    pub fn dev(&self) -> &Device {
        self.s.device()
    }

    /// Its event mode.
    pub fn mode(&self) -> EventMode {
        self.s.mode()
    }

    /// Run a command on the channel.
    pub fn cmd(&self, code: Code) -> kern2usr::Result<()> {
        self.dev().channel_command(code.value())
    }

    /// The next event (its sequence number checked in queue mode).
    pub fn next_event(&mut self, within: Duration) -> Result<Event> {
        let id = self.id;
        match self
            .s
            .next_record(within)
            .with_context(|| format!("channel {id}"))?
        {
            Some((_, Some(ev))) => Ok(ev),
            Some((counter, None)) => Ok(Event {
                seq: 0,
                code: u32::try_from(counter)?,
                round: 0,
            }),
            None => bail!("channel {id}: no event within {within:?}"),
        }
    }

    /// The next event must be `code`; MEMORY_READY events of rounds left
    /// behind are skipped when `skip_ready`.
    pub fn expect(&mut self, code: Code, skip_ready: bool) -> Result<Event> {
        loop {
            let ev = self.next_event(timeout())?;
            if skip_ready && ev.code == Code::MemoryReady.value() && code != Code::MemoryReady {
                continue;
            }
            ensure!(
                ev.code == code.value(),
                "channel {}: got code {}, expected {} ({})",
                self.id,
                ev.code,
                code.value(),
                code.name()
            );
            return Ok(ev);
        }
    }

    /// Command `code` and its event.
    pub fn run(&mut self, code: Code) -> Result<()> {
        self.cmd(code)
            .with_context(|| format!("channel {}: command {}", self.id, code.name()))?;
        self.expect(code, true).map(drop)
    }

    /// Its statistics.
    pub fn stats(&self) -> Result<ChannelStats> {
        Ok(self.dev().channel_stats()?)
    }
}

/// The two mappings a listener uses.
pub struct Maps {
    buf: MappedBuffer,
    ctrl: CtrlPage,
}

impl Maps {
    /// Map `c`'s buffer and control page.
    pub fn new(c: &Chan) -> Result<Self> {
        Ok(Self {
            buf: c.dev().map(c.size, Access::ReadOnly)?,
            ctrl: c.dev().map_ctrl()?,
        })
    }
}

/// Wait for MEMORY_READY, check the round's id, length and bytes, and ack
/// it (by efd2 or by id). Returns the round id.
fn take_round(
    c: &mut Chan,
    m: &Maps,
    want_round: u64,
    by_id: bool,
    data: &mut Vec<u8>,
) -> Result<u64> {
    let ev = c.expect(Code::MemoryReady, false)?;
    let seq = m.ctrl.ready_seq();
    ensure!(
        seq == want_round,
        "channel {}: ready_seq {seq}, expected round {want_round}",
        c.id
    );
    if c.mode() == EventMode::Queue {
        ensure!(
            u64::from(ev.round) == want_round,
            "channel {}: record of round {}, expected {want_round}",
            c.id,
            ev.round
        );
    }
    let len = m.ctrl.ready_len();
    ensure!(
        len == c.size as u64,
        "channel {}: ready_len {len}, expected {}",
        c.id,
        c.size
    );
    m.buf.copy_to_vec(data);
    check_round(c.id, want_round, data)?;
    if by_id {
        c.dev()
            .ack_round(u32::try_from(want_round & 0xffff_ffff)?)
            .with_context(|| format!("channel {}: ACK_ROUND {want_round}", c.id))?;
    } else {
        c.s.ack()?;
    }
    Ok(want_round)
}

/// Options of the hidden `channel-child` subcommand.
#[derive(Args, Debug, Clone)]
pub struct ChildOpts {
    /// Buffer size in bytes.
    #[arg(long)]
    pub size: u64,
    /// Rounds to take.
    #[arg(long)]
    pub rounds: u64,
    /// Period in ms (0: the default).
    #[arg(long, default_value_t = 0)]
    pub period_ms: u32,
    /// Back to back.
    #[arg(long)]
    pub b2b: bool,
    /// Ack with K2U_IOC_ACK_ROUND instead of 7 on efd2.
    #[arg(long)]
    pub by_id: bool,
    /// Channel name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// After the rounds, wait for one more MEMORY_READY, do not ack it,
    /// print `mid-round <n>` and wait on stdin forever.
    #[arg(long)]
    pub hold_mid_round: bool,
}

/// A channel listener: prints `ready id=<id>`, waits for `go` on `input`,
/// runs the rounds, prints `done ...`, waits for `exit`, EXITs and prints
/// `exited`. Any failure is returned (the process prints it and exits 1).
pub fn listener(o: &ChildOpts, out: &mut dyn Write, input: &mut dyn BufRead) -> Result<()> {
    let flags = if o.b2b { CREATE_BACK_TO_BACK } else { 0 };
    let mut c = Chan::create(o.size, o.period_ms, flags, &o.name)?;
    c.run(Code::Mmap)?;
    let m = Maps::new(&c)?;
    writeln!(out, "ready id={} pid={}", c.id, std::process::id())?;
    out.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    ensure!(line.trim() == "go", "expected go, got {line:?}");
    let t0 = Instant::now();
    c.run(Code::StartTest)?;
    let mut data = Vec::with_capacity(c.size);
    for r in 1..=o.rounds {
        take_round(&mut c, &m, r, o.by_id, &mut data)?;
    }
    let elapsed = t0.elapsed();
    if o.hold_mid_round {
        // The round's id from the control page (counter mode's events
        // carry none).
        c.expect(Code::MemoryReady, false)?;
        writeln!(out, "mid-round {}", m.ctrl.ready_seq())?;
        out.flush()?;
        loop {
            let mut l = String::new();
            if input.read_line(&mut l)? == 0 {
                bail!("stdin closed while holding a round");
            }
        }
    }
    c.run(Code::StopTest)?;
    let st = c.stats()?;
    ensure!(
        st.count == o.rounds && st.id == c.id && st.buffer_size == o.size,
        "channel {}: stats {st:?} after {} rounds",
        c.id,
        o.rounds
    );
    ensure!(
        st.rounds_published == o.rounds || st.rounds_published == o.rounds + 1,
        "channel {}: {} rounds published after {} acked",
        c.id,
        st.rounds_published,
        o.rounds
    );
    writeln!(
        out,
        "done id={} rounds={} published={} p50={} p99={} elapsed_ns={}",
        c.id,
        st.count,
        st.rounds_published,
        st.p50_ns,
        st.p99_ns,
        elapsed.as_nanos()
    )?;
    out.flush()?;
    line.clear();
    input.read_line(&mut line)?;
    ensure!(line.trim() == "exit", "expected exit, got {line:?}");
    c.run(Code::ExitTest)?;
    writeln!(out, "exited")?;
    out.flush()?;
    Ok(())
}

/// The `channel-child` subcommand: [`listener`] on stdin/stdout.
pub fn child_main(o: &ChildOpts) -> Result<bool> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout();
    match listener(o, &mut out, &mut input) {
        Ok(()) => Ok(true),
        Err(e) => {
            writeln!(out, "error {e:#}")?;
            Ok(false)
        }
    }
}

/// A `channel-child` process.
struct ChildProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    id: u32,
    pid: u32,
    size: u64,
}

impl ChildProc {
    fn spawn(o: &ChildOpts) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("channel-child")
            .arg("--size")
            .arg(o.size.to_string())
            .arg("--rounds")
            .arg(o.rounds.to_string())
            .arg("--period-ms")
            .arg(o.period_ms.to_string());
        if o.b2b {
            cmd.arg("--b2b");
        }
        if o.by_id {
            cmd.arg("--by-id");
        }
        if o.hold_mid_round {
            cmd.arg("--hold-mid-round");
        }
        if !o.name.is_empty() {
            cmd.arg("--name").arg(&o.name);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawning channel-child")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut p = Self {
            child,
            stdin,
            stdout,
            id: 0,
            pid: 0,
            size: o.size,
        };
        let ready = p.line()?;
        let fields = parse_fields(&ready, "ready")?;
        p.id = field(&fields, "id")?;
        p.pid = field(&fields, "pid")?;
        Ok(p)
    }

    /// The child's next line (it ends every wait on its own, with `error`
    /// or by exiting, so a blocking read cannot hang).
    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        if self.stdout.read_line(&mut l)? == 0 {
            let status = self.child.wait()?;
            bail!("channel-child exited ({status}) without a line");
        }
        let l = l.trim_end().to_string();
        if let Some(e) = l.strip_prefix("error ") {
            bail!("channel-child (size {}): {e}", self.size);
        }
        Ok(l)
    }

    fn send(&mut self, s: &str) -> Result<()> {
        writeln!(self.stdin, "{s}")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.send("exit")?;
        let l = self.line()?;
        ensure!(l == "exited", "channel-child said {l:?}, expected exited");
        let status = self.child.wait()?;
        ensure!(status.success(), "channel-child exited with {status}");
        Ok(())
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_fields(line: &str, tag: &str) -> Result<Vec<(String, String)>> {
    let mut words = line.split(' ');
    ensure!(
        words.next() == Some(tag),
        "expected a {tag} line, got {line:?}"
    );
    Ok(words
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn field<T: std::str::FromStr>(fields: &[(String, String)], key: &str) -> Result<T> {
    let v = fields
        .iter()
        .find(|(k, _)| k == key)
        .with_context(|| format!("no {key}= field"))?;
    v.1.parse::<T>()
        .map_err(|_| anyhow::anyhow!("{key}={} is no number", v.1))
}

// ---------------------------------------------------------------------
// The listing.

fn listing(ctx: &Ctx) -> Result<Vec<ChannelEntry>> {
    Ok(ctx.params.channels()?)
}

fn listed(ctx: &Ctx, id: u32) -> Result<Option<ChannelEntry>> {
    Ok(listing(ctx)?.into_iter().find(|l| l.id == id))
}

// ---------------------------------------------------------------------
// The tests.

fn loaded(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)
}

fn eight_channels(ctx: &mut Ctx) -> Result<()> {
    // The default channel, driven as the seed's, runs throughout.
    let mut l = crate::common::mapped(ctx, &[])?;
    ctx.params.set_period(Duration::from_millis(20))?;
    crate::common::start_and_wait_rounds(ctx, &mut l, 2)?;
    let default_before = ctx.params.stats()?.count;

    let plan: [(u64, u64, u32, bool, bool); 8] = [
        (4096, 60, 5, false, false),
        (8192, 50, 0, true, true),
        (16384, 40, 7, false, true),
        (65536, 30, 0, true, false),
        (131072, 20, 11, false, false),
        (262144, 12, 0, true, true),
        (524288, 8, 13, false, true),
        (1 << 20, 5, 0, true, false),
    ];
    let mut kids = Vec::new();
    for (i, &(size, rounds, period_ms, b2b, by_id)) in plan.iter().enumerate() {
        kids.push(ChildProc::spawn(&ChildOpts {
            size,
            rounds,
            period_ms,
            b2b,
            by_id,
            name: format!("ch{i}"),
            hold_mid_round: false,
        })?);
    }
    let mode = ctx.params.event_mode()?;
    for (k, &(size, _, period_ms, b2b, _)) in kids.iter().zip(plan.iter()) {
        ctx.klog.wait_for(
            &format!(
                "channel {} created: name=<any> size={size} owner={}",
                k.id, k.pid
            ),
            timeout(),
        )?;
        let li = listed(ctx, k.id)?.with_context(|| format!("channel {} not listed", k.id))?;
        ensure!(
            li.owner == Some(k.pid)
                && li.buffer_size == size
                && li.event_mode == mode
                && li.rounds == 0,
            "listing of channel {}: {li:?}",
            k.id
        );
        ensure!(
            li.pacing
                == if b2b {
                    Pacing::BackToBack
                } else {
                    Pacing::Timer
                },
            "pacing of channel {}: {}",
            k.id,
            li.pacing
        );
        let _ = period_ms;
    }
    let mut ids: Vec<u32> = kids.iter().map(|k| k.id).collect();
    ids.sort_unstable();
    ids.dedup();
    ensure!(ids.len() == 8, "channel ids are not distinct: {ids:?}");
    for k in &mut kids {
        k.send("go")?;
    }
    let mut done = Vec::new();
    for (k, &(_, rounds, ..)) in kids.iter_mut().zip(plan.iter()) {
        let d = k.line()?;
        let f = parse_fields(&d, "done")?;
        ensure!(
            field::<u64>(&f, "rounds")? == rounds,
            "channel {}: {d}",
            k.id
        );
        done.push(f);
    }
    // Every channel listed with its owner and its rounds, while all live.
    let list = listing(ctx)?;
    ensure!(
        list.len() == 9,
        "listing has {} channels: {list:?}",
        list.len()
    );
    for (k, &(_, rounds, ..)) in kids.iter().zip(plan.iter()) {
        let li = list
            .iter()
            .find(|li| li.id == k.id)
            .with_context(|| format!("channel {} missing", k.id))?;
        ensure!(
            li.rounds == rounds
                && li.owner == Some(k.pid)
                && li.p50_ns > 0
                && li.p99_ns >= li.p50_ns,
            "listing of channel {}: {li:?}",
            k.id
        );
    }
    for k in &mut kids {
        k.finish()?;
        ctx.klog
            .wait_for(&format!("channel {} released", k.id), timeout())?;
    }
    ensure!(
        listing(ctx)?.len() == 1,
        "channels left after release: {:?}",
        listing(ctx)?
    );
    // The default channel went on meanwhile, its listener content.
    let default_after = ctx.params.stats()?.count;
    ensure!(
        default_after > default_before,
        "the default channel made no round while the channels ran ({default_before} -> {default_after})"
    );
    ensure!(listing(ctx)?[0].owner == Some(l.pid().as_raw_nonzero().get() as u32));
    crate::common::stop_and_exit(ctx, &mut l)?;
    Ok(())
}

/// The operations an intruder tries, with their names in the log.
const INTRUDER_OPS: &[&str] = &[
    "mmap",
    "mmap",
    "read",
    "ACK",
    "ACK_ROUND",
    "READ_BUFFER",
    "CHANNEL_CMD",
    "CHANNEL_STATS",
    "REGISTER",
    "CREATE",
];

/// Try every operation on `dev` (a channel this process does not own);
/// write one line per op (`<op> <result>`) and `info <channel_id>`.
fn intrude(dev: &Device, out: &mut dyn Write) -> Result<()> {
    let map = |off: u64| dev.map_at(4096, off, Access::ReadOnly).map(drop);
    let mut rec = [0u8; 16];
    let mut buf = vec![0u8; 4096];
    let e1 = EventFd::new()?;
    let e2 = EventFd::new()?;
    let results = [
        ("mmap", outcome(map(0).map_err(|e| e.errno()))),
        (
            "mmap",
            outcome(map(CTRL_MMAP_OFFSET).map_err(|e| e.errno())),
        ),
        (
            "read",
            outcome(rustix::io::read(dev, &mut rec).map_err(Some)),
        ),
        ("ACK", outcome(dev.ack().map_err(|e| e.errno()))),
        (
            "ACK_ROUND",
            outcome(dev.ack_round(1).map_err(|e| e.errno())),
        ),
        (
            "READ_BUFFER",
            outcome(dev.read_buffer(&mut buf).map_err(|e| e.errno())),
        ),
        (
            "CHANNEL_CMD",
            outcome(
                dev.channel_command(Code::StartTest.value())
                    .map_err(|e| e.errno()),
            ),
        ),
        (
            "CHANNEL_STATS",
            outcome(dev.channel_stats().map_err(|e| e.errno())),
        ),
        (
            "REGISTER",
            outcome(dev.register(e1.as_fd(), e2.as_fd()).map_err(|e| e.errno())),
        ),
        (
            "CREATE",
            outcome(
                dev.create(&create_arg(&e1, &e2, 4096))
                    .map_err(|e| e.errno()),
            ),
        ),
    ];
    for (op, r) in results {
        writeln!(out, "{op} {r}")?;
    }
    match dev.info() {
        Ok(i) => writeln!(out, "info {}", i.channel_id)?,
        Err(e) => writeln!(out, "info {e}")?,
    }
    out.flush()?;
    Ok(())
}

/// The `channel-intruder` subcommand: receive a channel's fd with
/// SCM_RIGHTS on stdin (a unix socket), [`intrude`], print the results.
pub fn intruder_main() -> Result<bool> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let stdin = std::io::stdin();
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    recvmsg(
        stdin.as_fd(),
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut anc,
        RecvFlags::empty(),
    )?;
    let mut got: Option<OwnedFd> = None;
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            got = fds.next();
        }
    }
    let fd = got.context("no fd received")?;
    // SAFETY: the one fd `not_the_owner` sends is its channel's file of the
    // kern2usr node.
    let dev = unsafe { Device::from_owned_fd(fd) };
    let mut out = std::io::stdout();
    writeln!(out, "pid {}", std::process::id())?;
    intrude(&dev, &mut out)?;
    Ok(true)
}

/// Check an intruder's lines and the refusal lines it caused.
fn check_intrusion(ctx: &mut Ctx, id: u32, pid: u32, lines: &[String]) -> Result<()> {
    ensure!(
        lines.len() == INTRUDER_OPS.len() + 1,
        "intruder printed {lines:?}"
    );
    for (op, l) in INTRUDER_OPS.iter().zip(lines) {
        ensure!(
            l == &format!("{op} {}", errno_word(Errno::PERM)),
            "{op} from a process that does not own the channel: {l}"
        );
    }
    ensure!(
        lines[INTRUDER_OPS.len()] == format!("info {id}"),
        "INFO from the intruder: {}",
        lines[INTRUDER_OPS.len()]
    );
    for op in INTRUDER_OPS {
        ctx.klog.wait_for(
            &format!("channel {id}: pid {pid} is not its owner: {op} refused"),
            timeout(),
        )?;
    }
    Ok(())
}

fn not_the_owner(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let mut c = Chan::create(8192, 10, 0, "owned")?;
    c.run(Code::Mmap)?;
    let m = Maps::new(&c)?;

    // A process that got the file over a unix socket.
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("channel-intruder")
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::piped())
        .spawn()?;
    {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        let fds = [c.dev().as_fd()];
        ensure!(anc.push(SendAncillaryMessage::ScmRights(&fds)));
        sendmsg(
            &ours,
            &[std::io::IoSlice::new(b"x")],
            &mut anc,
            SendFlags::empty(),
        )?;
    }
    let mut text = String::new();
    child
        .stdout
        .take()
        .context("intruder stdout")?
        .read_to_string(&mut text)?;
    ensure!(child.wait()?.success(), "intruder failed: {text}");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    ensure!(!lines.is_empty(), "intruder printed nothing");
    let pid: u32 = lines
        .remove(0)
        .strip_prefix("pid ")
        .context("no pid line")?
        .parse()?;
    check_intrusion(ctx, c.id, pid, &lines)?;

    // A child forked by the owner, with the file inherited.
    let dev = c.dev();
    // SAFETY: this test runs on the harness' one thread and spawns no
    // thread (the intruder above is a process, and it has exited).
    let (pid, text, status) = unsafe { forked(|out| intrude(dev, out)) }?;
    ensure!(status == 0, "forked intruder status {status}: {text}");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    check_intrusion(ctx, c.id, u32::try_from(pid)?, &lines)?;

    // The owner is served as before: a round, all bytes.
    c.run(Code::StartTest)?;
    let mut data = Vec::new();
    take_round(&mut c, &m, 1, true, &mut data)?;
    c.run(Code::StopTest)?;
    c.run(Code::ExitTest)?;
    let id = c.id;
    drop(m);
    drop(c);
    ctx.klog
        .wait_for(&format!("channel {id} released"), timeout())?;
    Ok(())
}

fn kmemleak_path() -> &'static Path {
    Path::new("/sys/kernel/debug/kmemleak")
}

/// Mount debugfs if needed; whether kmemleak is there.
fn kmemleak_available() -> bool {
    if !kmemleak_path().exists() {
        let _ = guest::sh(Path::new("/"), "mount -t debugfs none /sys/kernel/debug");
    }
    kmemleak_path().exists()
}

fn killed_listener_frees(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let leak = kmemleak_available();
    if leak {
        std::fs::write(kmemleak_path(), "clear").context("kmemleak clear")?;
    }
    let size: u64 = 256 * 1024;
    ctx.params
        .write(kern2usr::abi::param::MAX_CHANNEL_MEMORY, &size.to_string())?;
    let t0 = Instant::now();
    let mut k = ChildProc::spawn(&ChildOpts {
        size,
        rounds: 3,
        period_ms: 5,
        b2b: false,
        by_id: false,
        name: "victim".into(),
        hold_mid_round: true,
    })?;
    k.send("go")?;
    let l = k.line()?;
    ensure!(l == "mid-round 4", "child said {l:?}, expected mid-round 4");
    ensure!(listed(ctx, k.id)?.is_some(), "channel {} not listed", k.id);
    // The memory is in use: one more channel of that size passes the cap.
    let efd = EventFd::new()?;
    let efd2 = EventFd::new()?;
    let probe = Device::open(dev_path())?;
    expect_errno(
        "CREATE past the memory cap",
        probe.create(&create_arg(&efd, &efd2, 4096)),
        Errno::NOSPC,
    )?;
    ctx.klog.wait_for(
        &format!(
            "CREATE refused: 4096 more bytes would pass max_channel_memory={size} ({size} in use)"
        ),
        timeout(),
    )?;
    let id = k.id;
    let pid = k.pid;
    rustix::process::kill_process(
        Pid::from_raw(i32::try_from(pid)?).context("pid 0")?,
        Signal::KILL,
    )?;
    let _ = k.child.wait();
    ctx.klog
        .wait_for(&format!("channel {id} released"), timeout())?;
    ensure!(listed(ctx, id)?.is_none(), "channel {id} still listed");
    // Its memory is back: a channel of the whole cap fits again.
    let made = probe
        .create(&create_arg(&efd, &efd2, size))
        .context("CREATE after the release")?;
    let pid2 = std::process::id();
    ctx.klog.wait_for(
        &format!(
            "channel {} created: name=- size={size} owner={pid2}",
            made.id
        ),
        timeout(),
    )?;
    drop(probe);
    ctx.klog
        .wait_for(&format!("channel {} released", made.id), timeout())?;
    if leak {
        // kmemleak only reports objects older than 5 s.
        let age = Duration::from_secs(6);
        if let Some(left) = age.checked_sub(t0.elapsed()) {
            std::thread::sleep(left);
        }
        std::fs::write(kmemleak_path(), "scan").context("kmemleak scan")?;
        let report = std::fs::read_to_string(kmemleak_path())?;
        ensure!(
            !report.contains("kern2usr"),
            "kmemleak reports kern2usr objects:\n{report}"
        );
        println!("# kmemleak: scanned, nothing of kern2usr");
    } else {
        println!("# kmemleak: not in this kernel");
    }
    Ok(())
}

fn limits(ctx: &mut Ctx) -> Result<()> {
    use kern2usr::abi::param::{MAX_CHANNELS, MAX_CHANNEL_MEMORY};
    loaded(ctx)?;
    ensure!(ctx.params.read(MAX_CHANNELS)?.trim() == "16");
    ensure!(ctx.params.read(MAX_CHANNEL_MEMORY)?.trim() == (64u64 << 20).to_string());
    for (name, bad) in [
        (MAX_CHANNELS, "0"),
        (MAX_CHANNELS, "41"),
        (MAX_CHANNELS, "x"),
        (MAX_CHANNEL_MEMORY, "4095"),
        (MAX_CHANNEL_MEMORY, "1073741825"),
    ] {
        match ctx.params.write(name, bad) {
            Ok(()) => bail!("{name}={bad} accepted"),
            Err(e) => ensure!(e.errno() == Some(Errno::INVAL), "{name}={bad}: {e}"),
        }
    }
    ctx.params.write(MAX_CHANNELS, "2")?;
    let a = Chan::create(4096, 0, 0, "a")?;
    let b = Chan::create(4096, 0, 0, "b")?;
    let efd = EventFd::new()?;
    let efd2 = EventFd::new()?;
    let third = Device::open(dev_path())?;
    let arg = create_arg(&efd, &efd2, 4096);
    expect_errno("a third channel", third.create(&arg), Errno::NOSPC)?;
    ctx.klog.wait_for(
        "CREATE refused: 2 channels exist (max_channels=2)",
        timeout(),
    )?;
    // Lowering below what exists refuses new ones only.
    ctx.params.write(MAX_CHANNELS, "1")?;
    ensure!(listing(ctx)?.len() == 3);
    expect_errno(
        "a channel past max_channels=1",
        third.create(&arg),
        Errno::NOSPC,
    )?;
    ctx.klog.wait_for(
        "CREATE refused: 2 channels exist (max_channels=1)",
        timeout(),
    )?;
    let (ida, idb) = (a.id, b.id);
    drop(a);
    drop(b);
    ctx.klog
        .wait_for(&format!("channel {ida} released"), timeout())?;
    ctx.klog
        .wait_for(&format!("channel {idb} released"), timeout())?;

    ctx.params.write(MAX_CHANNELS, "16")?;
    ctx.params.write(MAX_CHANNEL_MEMORY, "16384")?;
    let a = Chan::create(8192, 0, 0, "")?;
    expect_errno(
        "12 KiB past the 16 KiB cap",
        third.create(&create_arg(&efd, &efd2, 12288)),
        Errno::NOSPC,
    )?;
    ctx.klog.wait_for(
        "CREATE refused: 12288 more bytes would pass max_channel_memory=16384 (8192 in use)",
        timeout(),
    )?;
    let b = Chan::create(8192, 0, 0, "")?;
    ensure!(
        b.id == a.id + 1 || b.id < a.id,
        "ids {} then {}",
        a.id,
        b.id
    );
    expect_errno(
        "a page past the full cap",
        third.create(&create_arg(&efd, &efd2, 4096)),
        Errno::NOSPC,
    )?;
    ctx.klog.wait_for(
        "CREATE refused: 4096 more bytes would pass max_channel_memory=16384 (16384 in use)",
        timeout(),
    )?;
    drop(a);
    drop(b);
    Ok(())
}

fn create_and_command_refusals(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let dev = Device::open(dev_path())?;
    let efd = EventFd::new()?;
    let efd2 = EventFd::new()?;
    let base = create_arg(&efd, &efd2, 4096);
    let max = kern2usr::abi::MAX_BUFFER_SIZE;
    let mut long_name = [b'a'; CHANNEL_NAME_LEN];
    long_name[0] = b'b';
    let mut after_nul = name_field("ok");
    after_nul[5] = b'x';
    let cases: Vec<(Create, Errno, String)> = vec![
        (
            Create {
                buffer_size: 0,
                ..base
            },
            Errno::INVAL,
            format!("CREATE refused: buffer_size 0: must be a multiple of 4096 from 4096 to {max}"),
        ),
        (
            Create {
                buffer_size: 4097,
                ..base
            },
            Errno::INVAL,
            format!(
                "CREATE refused: buffer_size 4097: must be a multiple of 4096 from 4096 to {max}"
            ),
        ),
        (
            Create {
                buffer_size: max + 4096,
                ..base
            },
            Errno::INVAL,
            format!(
                "CREATE refused: buffer_size {}: must be a multiple of 4096 from 4096 to {max}",
                max + 4096
            ),
        ),
        (
            Create {
                period_ms: 60001,
                ..base
            },
            Errno::INVAL,
            "CREATE refused: period_ms 60001: above the maximum 60000".into(),
        ),
        (
            Create { flags: 16, ..base },
            Errno::INVAL,
            "CREATE refused: flags 0x10: unknown flag 0x10".into(),
        ),
        (
            Create {
                name: name_field("a b"),
                ..base
            },
            Errno::INVAL,
            "CREATE refused: name byte 1 0x20: not in [A-Za-z0-9_.-]".into(),
        ),
        (
            Create {
                name: long_name,
                ..base
            },
            Errno::INVAL,
            "CREATE refused: name baaaaaaaaaaaaaaa: longer than 15 bytes".into(),
        ),
        (
            Create {
                name: after_nul,
                ..base
            },
            Errno::INVAL,
            "CREATE refused: name byte 5 0x78: not NUL after the name's end".into(),
        ),
        (
            Create { id: 1, ..base },
            Errno::INVAL,
            "CREATE refused: id 1: must be 0".into(),
        ),
        (
            Create {
                ring_slots: 1,
                ..base
            },
            Errno::INVAL,
            "CREATE refused: ring_slots 1: must be 0 without K2U_CREATE_RING".into(),
        ),
        (
            Create {
                flags: CREATE_ATTACH,
                ..base
            },
            Errno::INVAL,
            "CREATE refused: buffer_size 4096: must be 0 with K2U_CREATE_ATTACH".into(),
        ),
        (
            Create {
                flags: CREATE_ATTACH,
                buffer_size: 0,
                ..base
            },
            Errno::INVAL,
            "CREATE refused: name -: K2U_CREATE_ATTACH needs a name".into(),
        ),
        (
            Create {
                flags: CREATE_ATTACH,
                buffer_size: 0,
                name: name_field("nosuch"),
                ..base
            },
            Errno::NOENT,
            "CREATE refused: name nosuch: no producer channel has this name".into(),
        ),
        (
            Create { efd: 999, ..base },
            Errno::BADF,
            format!(
                "CREATE refused: efd=999 is not an open fd of pid {}",
                std::process::id()
            ),
        ),
        (
            Create { efd2: 998, ..base },
            Errno::BADF,
            format!(
                "CREATE refused: efd2=998 is not an open fd of pid {}",
                std::process::id()
            ),
        ),
        (
            Create {
                efd: dev.as_raw_fd(),
                ..base
            },
            Errno::INVAL,
            "CREATE refused: efd is not an eventfd".into(),
        ),
        (
            Create {
                efd2: efd.as_raw_fd(),
                ..base
            },
            Errno::INVAL,
            "CREATE refused: efd and efd2 are the same eventfd".into(),
        ),
    ];
    for (mut arg, errno, line) in cases {
        let before = arg;
        expect_errno(&line, dev.create_in_place(&mut arg), errno)?;
        ensure!(arg == before, "a refused CREATE wrote back {arg:?}");
        ctx.klog.wait_for(&line, timeout())?;
    }
    // A file that is not a channel: ENOTCONN for commands; INFO and
    // CHANNEL_STATS are the default channel's.
    expect_errno(
        "CHANNEL_CMD on a plain file",
        dev.channel_command(Code::Mmap.value()),
        Errno::NOTCONN,
    )?;
    let i = dev.info()?;
    ensure!(i.channel_id == 0 && i.abi_version == kern2usr::abi::ABI_VERSION);
    let st = dev.channel_stats()?;
    ensure!(
        st.id == 0 && st.buffer_size == 4096 && st.count == 0,
        "{st:?}"
    );

    // Success, then the file is a channel.
    let id = dev
        .create(&Create {
            period_ms: 250,
            name: name_field("Ok_1.x-"),
            ..base
        })?
        .id;
    ctx.klog.wait_for(
        &format!(
            "channel {id} created: name=Ok_1.x- size=4096 owner={}",
            std::process::id()
        ),
        timeout(),
    )?;
    let i = dev.info()?;
    ensure!(
        i.channel_id == id && i.buffer_size == 4096 && i.period_ms == 250,
        "INFO of channel {id}: {i:?}"
    );
    let li = listed(ctx, id)?.context("not listed")?;
    ensure!(
        li.name.as_deref() == Some("Ok_1.x-") && li.pacing == Pacing::Timer,
        "{li:?}"
    );
    expect_errno("CREATE again", dev.create(&base), Errno::BUSY)?;
    ctx.klog.wait_for(
        &format!("CREATE refused: this file is channel {id} already"),
        timeout(),
    )?;
    expect_errno(
        "REGISTER on a channel",
        dev.register(efd.as_fd(), efd2.as_fd()),
        Errno::BUSY,
    )?;
    ctx.klog.wait_for(
        &format!("channel {id}: REGISTER refused: this file is a channel"),
        timeout(),
    )?;
    // The default channel's last_error is not touched by any of it.
    ensure!(ctx.params.last_error()?.is_empty(), "last_error set");

    let refuse = |ctx: &mut Ctx, code: u32, errno: Errno, reason: &str| -> Result<()> {
        expect_errno(
            &format!("CHANNEL_CMD {code}"),
            dev.channel_command(code),
            errno,
        )?;
        let name = match code {
            1 => "FIND",
            2 => "MMAP",
            3 => "START_TEST",
            4 => "STOP_TEST",
            5 => "EXIT_TEST",
            6 => "MEMORY_READY",
            7 => "MEMORY_COPIED",
            _ => "UNKNOWN",
        };
        ctx.klog.wait_for(
            &format!("channel {id}: command {code} ({name}) refused: {reason}"),
            timeout(),
        )?;
        Ok(())
    };
    for code in [0, 1, 6, 7, 99] {
        refuse(
            ctx,
            code,
            Errno::INVAL,
            "not a channel command (valid: 2-5)",
        )?;
    }
    refuse(
        ctx,
        3,
        Errno::PROTO,
        "MMAP (2) must come before START_TEST (3)",
    )?;
    refuse(ctx, 4, Errno::PROTO, "test is not running")?;
    expect_errno("ACK with no round", dev.ack(), Errno::PROTO)?;

    // Drive it: MMAP, START, three rounds acked three ways, STOP, EXIT.
    let mut c = Chan::made(dev, efd, efd2, id, 4096)?;
    c.run(Code::Mmap)?;
    let m = Maps::new(&c)?;
    // MMAP again while no test runs is accepted, as on the default channel.
    c.run(Code::Mmap)?;
    c.run(Code::StartTest)?;
    expect_errno("START while running", c.cmd(Code::StartTest), Errno::BUSY)?;
    ctx.klog.wait_for(
        &format!("channel {id}: command 3 (START_TEST) refused: test already running"),
        timeout(),
    )?;
    expect_errno("MMAP while running", c.cmd(Code::Mmap), Errno::BUSY)?;
    let mut data = Vec::new();
    take_round(&mut c, &m, 1, false, &mut data)?;
    take_round(&mut c, &m, 2, true, &mut data)?;
    // The third with K2U_IOC_ACK (the round is shown once its event is read).
    c.expect(Code::MemoryReady, false)?;
    ensure!(m.ctrl.ready_seq() == 3);
    m.buf.copy_to_vec(&mut data);
    check_round(id, 3, &data)?;
    let mut copy = vec![0u8; 4096];
    c.dev().read_buffer(&mut copy)?;
    ensure!(copy == data, "READ_BUFFER differs from the mapping");
    c.dev().ack()?;
    c.run(Code::StopTest)?;
    let st = c.stats()?;
    ensure!(
        st.id == id
            && st.count == 3
            && st.min_ns > 0
            && st.min_ns <= st.p50_ns
            && st.p50_ns <= st.p99_ns
            && st.p99_ns <= st.max_ns
            && (st.rounds_published == 3 || st.rounds_published == 4),
        "stats {st:?}"
    );
    let li = listed(ctx, id)?.context("not listed")?;
    ensure!(
        li.rounds == 3 && li.p50_ns == st.p50_ns && li.p99_ns == st.p99_ns,
        "listing {li:?} vs stats {st:?}"
    );
    c.run(Code::ExitTest)?;
    expect_errno("MMAP after EXIT", c.cmd(Code::Mmap), Errno::PROTO)?;
    ctx.klog.wait_for(
        &format!("channel {id}: command 2 (MMAP) refused: listener was told to exit (5)"),
        timeout(),
    )?;
    drop(m);
    drop(c);
    ctx.klog
        .wait_for(&format!("channel {id} released"), timeout())?;
    ensure!(ctx.params.last_error()?.is_empty(), "last_error set");
    Ok(())
}

/// `KEY=="v"` or `KEY="v"` of the rule line.
fn rule_value<'a>(rule: &'a str, key: &str) -> Option<&'a str> {
    rule.split(',').map(str::trim).find_map(|kv| {
        let rest = kv.strip_prefix(key)?;
        let rest = rest.strip_prefix("==").or_else(|| rest.strip_prefix('='))?;
        rest.strip_prefix('"')?.strip_suffix('"')
    })
}

/// The group test's child, as uid 1000: run `o`'s rounds on a channel,
/// then try the default channel and a parameter. One line per check.
fn group_child(o: &ChildOpts, out: &mut dyn Write) -> Result<()> {
    // The listener waits for go and exit: they are there already.
    let mut input = std::io::Cursor::new(b"go\nexit\n".to_vec());
    listener(o, out, &mut input)?;
    let dev = Device::open(dev_path())?;
    let map = dev.map(4096, Access::ReadOnly).map(drop);
    writeln!(out, "mmap {}", outcome(map.map_err(|e| e.errno())))?;
    let mut rec = [0u8; 16];
    let read = rustix::io::read(&dev, &mut rec);
    writeln!(out, "read {}", outcome(read.map_err(Some)))?;
    writeln!(out, "ACK {}", outcome(dev.ack().map_err(|e| e.errno())))?;
    let mut buf = vec![0u8; 4096];
    let rb = dev.read_buffer(&mut buf);
    writeln!(out, "READ_BUFFER {}", outcome(rb.map_err(|e| e.errno())))?;
    let e1 = EventFd::new()?;
    let e2 = EventFd::new()?;
    let reg = dev.register(e1.as_fd(), e2.as_fd());
    writeln!(out, "REGISTER {}", outcome(reg.map_err(|e| e.errno())))?;
    let p = Path::new(PARAMS_DIR).join(kern2usr::abi::param::CUR_CMD);
    let w = std::fs::OpenOptions::new().write(true).open(&p);
    writeln!(
        out,
        "param {}",
        match w {
            Ok(_) => "ok".to_string(),
            Err(e) => errno_word(Errno::from_io_error(&e).unwrap_or(Errno::IO)),
        }
    )?;
    out.flush()?;
    Ok(())
}

fn group_option(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let rule = UDEV_RULE
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .context("no rule in 60-kern2usr.rules")?;
    ensure!(
        rule_value(rule, "KERNEL") == Some(DEVICE_NAME),
        "rule: {rule}"
    );
    let group = rule_value(rule, "GROUP").context("no GROUP")?;
    let mode = rule_value(rule, "MODE").context("no MODE")?;
    ensure!(group == "kern2usr" && mode == "0660", "rule: {rule}");
    // The guest has no udev: do what the rule says.
    let etc_group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    if !etc_group.lines().any(|l| l.starts_with("kern2usr:")) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/etc/group")?;
        writeln!(f, "{group}:x:{GROUP_GID}:")?;
    }
    let node = dev_path();
    let m = u32::from_str_radix(mode, 8)?;
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(m))?;
    rustix::fs::chown(
        node.as_str(),
        None,
        Some(rustix::fs::Gid::from_raw(GROUP_GID)),
    )?;
    let o = ChildOpts {
        size: 8192,
        rounds: 5,
        period_ms: 5,
        b2b: false,
        by_id: true,
        name: "user".into(),
        hold_mid_round: false,
    };
    let as_user = |out: &mut dyn Write| -> Result<()> {
        let gid = GROUP_GID;
        // SAFETY: plain system calls with valid arguments in the child.
        let ids_ok = unsafe {
            libc::setgroups(1, &gid) == 0
                && libc::setresgid(USER_UID, USER_UID, USER_UID) == 0
                && libc::setresuid(USER_UID, USER_UID, USER_UID) == 0
        };
        ensure!(ids_ok, "cannot become uid {USER_UID}");
        group_child(&o, out)
    };
    // SAFETY: the harness runs this test on its one thread with no other
    // thread alive.
    let (pid, text, status) = unsafe { forked(as_user) }?;
    ensure!(
        status == 0,
        "uid {USER_UID} child failed ({status}):\n{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let id: u32 = field(
        &parse_fields(lines.first().copied().unwrap_or(""), "ready")?,
        "id",
    )?;
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("done ") && l.contains(" rounds=5 ")),
        "no 5 rounds:\n{text}"
    );
    for op in ["mmap", "read", "ACK", "READ_BUFFER", "REGISTER"] {
        ensure!(
            lines.contains(&format!("{op} {}", errno_word(Errno::PERM)).as_str()),
            "{op} on the default channel as uid {USER_UID}:\n{text}"
        );
    }
    ensure!(
        lines.contains(&format!("param {}", errno_word(Errno::ACCESS)).as_str()),
        "writing cur_cmd as uid {USER_UID}:\n{text}"
    );
    ctx.klog.wait_for(
        &format!("channel {id} created: name=user size=8192 owner={pid}"),
        timeout(),
    )?;
    ctx.klog
        .wait_for(&format!("channel {id} released"), timeout())?;
    for op in ["mmap", "read", "ACK", "READ_BUFFER"] {
        ctx.klog.wait_for(
            &format!(
                "default channel: pid {pid} is neither its listener nor privileged: {op} refused"
            ),
            timeout(),
        )?;
    }
    ctx.klog.wait_for(
        &format!("default channel: pid {pid} is not privileged (CAP_SYS_ADMIN): REGISTER refused"),
        timeout(),
    )?;
    Ok(())
}

fn figures(ctx: &mut Ctx) -> Result<()> {
    loaded(ctx)?;
    let rounds: u64 = 300;
    let mut rates = Vec::new();
    for n in [1usize, 2, 4, 8] {
        let mut kids = Vec::new();
        for i in 0..n {
            kids.push(ChildProc::spawn(&ChildOpts {
                size: 4096,
                rounds,
                period_ms: 0,
                b2b: true,
                by_id: i % 2 == 1,
                name: format!("fig{i}"),
                hold_mid_round: false,
            })?);
        }
        let t0 = Instant::now();
        for k in &mut kids {
            k.send("go")?;
        }
        for k in &mut kids {
            let d = k.line()?;
            ensure!(d.starts_with("done "), "{d}");
        }
        let wall = t0.elapsed();
        for k in &mut kids {
            k.finish()?;
        }
        let total = rounds * n as u64;
        rates.push(format!("{n}ch={:.0}", total as f64 / wall.as_secs_f64()));
        for k in &kids {
            ctx.klog
                .wait_for(&format!("channel {} released", k.id), timeout())?;
        }
    }
    // Kernel memory of a channel besides its buffer: the control page,
    // the event queue, the state (struct k2u_chan, mostly its histogram,
    // from kvzalloc: 16 KiB) and 8 bytes per buffer page (the page array).
    let queue = kern2usr::abi::EVENT_QUEUE_LEN as usize * std::mem::size_of::<Event>();
    println!(
        "channels: figures memory_per_channel=buffer+{}B+8B/page (control page 4096, queue {queue}, state {STATE_BYTES}) rounds_per_s(4KiB,b2b,{rounds} rounds each) {}",
        4096 + queue + STATE_BYTES,
        rates.join(" ")
    );
    Ok(())
}

/// What the kernel allocates for a struct k2u_chan: its histogram
/// (K2U_HIST_BUCKETS u64s) and about 600 bytes more, which kvzalloc()
/// rounds up to 16 KiB.
const STATE_BYTES: usize = 16384;
const _: () = assert!(kern2usr::abi::HIST_BUCKETS * 8 + 1024 <= STATE_BYTES);

/// The `channels` listing, read on a thread of its own: an error if it
/// takes longer than `within` (a reader blocked behind a channel's lock;
/// the thread then finishes by itself once that lock is free).
fn listing_within(within: Duration) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = Path::new(PARAMS_DIR).join(kern2usr::abi::param::CHANNELS);
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(path));
    });
    match rx.recv_timeout(within) {
        Ok(text) => Ok(text?),
        Err(_) => bail!("reading the channels listing took longer than {within:?}"),
    }
}

/// The rounds column of channel `id` in a listing's text.
fn listed_rounds(text: &str, id: u32) -> Option<u64> {
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.first()?.parse::<u32>().ok()? != id {
            return None;
        }
        f.get(6)?.parse().ok()
    })
}

/// READ_BUFFER copies each chunk (64 KiB) out with no lock of the channel
/// held. Its destination's second chunk is a userfaultfd page: the call
/// stalls there, having copied round 1's first chunk. Meanwhile the
/// listing reads back, and three more rounds are published and acked
/// (each MEMORY_READY comes after the last round was counted). After
/// STOP the pages are let go: the call restarts (the buffer was refilled
/// mid-copy) and returns the last round's bytes throughout.
fn stalled_read_buffer(ctx: &mut Ctx) -> Result<()> {
    const SIZE: usize = 256 * 1024;
    const CHUNK: usize = 64 * 1024;
    loaded(ctx)?;
    let mut c = Chan::create(SIZE as u64, 5, 0, "stall")?;
    c.run(Code::Mmap)?;
    let m = Maps::new(&c)?;
    c.run(Code::StartTest)?;
    let mut data = Vec::new();
    let mut round = take_round(&mut c, &m, 1, false, &mut data)?;
    // Its ack is counted by a work item: wait for it, so that the listing
    // read during the stall has a known count.
    let deadline = Instant::now() + timeout();
    while c.stats()?.count < 1 {
        ensure!(
            Instant::now() < deadline,
            "round 1's ack not counted within {:?}",
            timeout()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let Some(mut stall) = crate::uffd::StallRange::new(SIZE, CHUNK)? else {
        c.run(Code::StopTest)?;
        let mut copy = vec![0u8; SIZE];
        c.dev().read_buffer(&mut copy).context("READ_BUFFER")?;
        check_round(c.id, m.ctrl.ready_seq(), &copy)?;
        println!("# userfaultfd: not in this kernel (CONFIG_USERFAULTFD off): no stalled copy; READ_BUFFER checked unstalled");
        return Ok(());
    };
    let (addr, len) = stall.addr_len();
    let dup = rustix::io::fcntl_dupfd_cloexec(c.dev().as_fd(), 0)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let _ = tx.send(read_buffer_at(dup.as_fd(), addr, len));
    });
    let mut during = || -> Result<()> {
        let at = stall.wait_fault(timeout())?;
        let second = addr + CHUNK as u64..addr + 2 * CHUNK as u64;
        ensure!(
            second.contains(&at),
            "fault at {at:#x}, expected in the second chunk {second:x?}"
        );
        let text = listing_within(timeout())?;
        ensure!(
            listed_rounds(&text, c.id) == Some(1),
            "while READ_BUFFER stalls the listing shows {:?} rounds, expected 1:\n{text}",
            listed_rounds(&text, c.id)
        );
        for _ in 0..3 {
            round += 1;
            take_round(&mut c, &m, round, false, &mut data)
                .with_context(|| format!("round {round} while READ_BUFFER stalls"))?;
        }
        let text = listing_within(timeout())?;
        let counted = listed_rounds(&text, c.id).unwrap_or(0);
        ensure!(
            counted >= round - 1,
            "while READ_BUFFER stalls the listing counts {counted} rounds, expected at least {}",
            round - 1
        );
        c.run(Code::StopTest)?;
        ensure!(
            rx.try_recv().is_err(),
            "READ_BUFFER returned while its destination was stalled"
        );
        Ok(())
    };
    let result = during();
    // Always let the reader go, then collect it.
    let released = stall.release();
    let read = rx.recv_timeout(timeout());
    if read.is_ok() {
        let _ = reader.join();
    }
    result?;
    released?;
    match read {
        Ok(r) => r.context("READ_BUFFER after its pages were let go")?,
        Err(_) => bail!(
            "READ_BUFFER did not return within {:?} of the release",
            timeout()
        ),
    }
    let last = m.ctrl.ready_seq();
    ensure!(last > 1, "no round after the first: ready_seq {last}");
    check_round(c.id, last, stall.bytes()?)
        .context("READ_BUFFER's bytes are not all of the last round")
}
