//! Runs operations on the real module and on the model, and compares.
//!
//! Every operation is executed for real first, giving one observation
//! line. The model then predicts that line; what the kernel does on its
//! own time (rounds, detaching after an EPOLLHUP) is applied to the model
//! as explicit steps, in every order around the operation that the
//! observations allow: the number of rounds is read from the control
//! page (`ready_seq`), detaches from the kernel log. Candidates that
//! disagree with an observation are dropped; none left is a mismatch.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kern2usr::abi::{param, EventMode, CTRL_MMAP_OFFSET, DEVICE_PATH, PARAMS_DIR};
use kern2usr::{CtrlPage, Device};
use kern2usr_model::{Content, EfdId, Errno, FdKind, MmapReq, Model, Pid};

use super::chanrun::{ChanFacts, ChanSide};
use super::op::{Names, Op, RoundPick, View, MMAPS, SLOTS};
use super::profile::Profile;
use crate::guest;
use crate::kmsg::KernelLog;

/// The fd number the model gives the fuzzer's own device handle (never
/// named by an operation).
const MY_DEV_FD: i32 = -100;
/// A pid no process has.
const NO_PID: i32 = 4_000_000;
/// Parameters compared after every operation.
const WATCHED: [&str; 9] = [
    param::CUR_CMD,
    param::USR_PID,
    param::USR_EFD,
    param::USR_EFD2,
    param::PERIOD_MS,
    param::BACK_TO_BACK,
    param::ADAPTIVE,
    param::EVENT_MODE,
    param::LAST_ERROR,
];
/// Most candidate states kept at once.
const MAX_CANDIDATES: usize = 16;

/// A mapping as the fuzzer remembers it.
#[derive(Clone, Copy, Debug)]
struct MapInfo {
    data: bool,
    shared: bool,
    write: bool,
    /// A private mapping the process wrote: its page is its own copy,
    /// frozen with what the buffer held then.
    frozen: Option<Content>,
}

/// What the fuzzer knows about a listener process.
#[derive(Clone, Copy, Debug)]
struct SlotInfo {
    pid: Pid,
    efd: i32,
    efd2: i32,
    efd_id: EfdId,
    efd2_id: EfdId,
    dup: Option<i32>,
    dev: Option<i32>,
    stopped: bool,
}

struct Slot {
    info: SlotInfo,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    maps: Vec<MapInfo>,
}

impl Slot {
    fn ask(&mut self, request: &str) -> Result<String> {
        writeln!(self.stdin, "{request}").context("writing to the listener")?;
        self.stdin.flush().context("writing to the listener")?;
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .context("reading the listener's answer")?;
        if n == 0 {
            bail!("the listener (pid {}) closed its stdout", self.info.pid);
        }
        Ok(line.trim_end().to_owned())
    }
}

/// Facts an execution learned (pids, fd numbers), the same for every
/// candidate.
#[derive(Clone, Debug, Default)]
struct Facts {
    pid: Pid,
    fds: Vec<i32>,
    id: u32,
    /// A channel op's facts.
    chan: ChanFacts,
    /// Channel files were open or mapped at an rmmod.
    chan_busy: bool,
}

/// What the model expects an observation to be.
#[derive(Clone, Debug)]
enum Expect {
    /// Anything (a channel op: the channel side compares it).
    Any,
    /// This line.
    Exact(String),
    /// `maps <c>,<c>,...`: per mapping, the data content (None: control page).
    Maps(Vec<Option<Content>>),
    /// `n <bytes> <class>`.
    ReadBuf(u64, Content),
}

fn class_ok(class: &str, content: Content) -> bool {
    match content {
        Content::Zeros => class == "Z",
        Content::Pattern => class == "P",
        Content::ZerosOrPattern => matches!(class, "Z" | "P" | "M"),
    }
}

impl Expect {
    fn matches(&self, obs: &str) -> bool {
        match self {
            Expect::Any => true,
            Expect::Exact(s) => s == obs,
            Expect::Maps(maps) => {
                let Some(rest) = obs.strip_prefix("maps ") else {
                    return false;
                };
                if maps.is_empty() {
                    return rest == "-";
                }
                let classes: Vec<&str> = rest.split(',').collect();
                classes.len() == maps.len()
                    && classes.iter().zip(maps).all(|(c, m)| match m {
                        None => *c == "C",
                        Some(content) => class_ok(c, *content),
                    })
            }
            Expect::ReadBuf(n, content) => {
                let w: Vec<&str> = obs.split_whitespace().collect();
                w.len() == 3
                    && w[0] == "n"
                    && w[1] == n.to_string()
                    && (*n == 0 || class_ok(w[2], *content))
            }
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Any => write!(f, "anything"),
            Expect::Exact(s) => write!(f, "{s:?}"),
            Expect::Maps(m) => write!(f, "maps {m:?}"),
            Expect::ReadBuf(n, c) => write!(f, "n {n} {c:?}"),
        }
    }
}

fn res(r: Result<(), Errno>) -> String {
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("err {}", e.raw()),
    }
}

fn exact(s: impl Into<String>) -> Expect {
    Expect::Exact(s.into())
}

/// The fds (as text) a FIND or REGISTER names.
fn named(s: &SlotInfo, names: Names) -> (Pid, i32, i32) {
    match names {
        Names::Normal => (s.pid, s.efd, s.efd2),
        Names::Swapped => (s.pid, s.efd2, s.efd),
        Names::Same => (s.pid, s.efd, s.efd),
        Names::DupEfd => (s.pid, s.dup.unwrap_or(s.efd), s.efd2),
        Names::NotEventfd => (s.pid, 0, s.efd2),
        Names::Unopened => (s.pid, s.efd, 900),
        Names::NoProcess => (NO_PID, s.efd, s.efd2),
    }
}

fn mmap_req(v: u8) -> MmapReq {
    let (len, offset, shared, write, exec) = MMAPS[v as usize];
    MmapReq {
        len,
        offset,
        shared,
        write,
        exec,
    }
}

/// The model's side of one operation. `slots` and `maps` are as before
/// the operation.
fn predict(
    m: &mut Model,
    op: &Op,
    slots: &[Option<SlotInfo>],
    maps: &[Vec<MapInfo>],
    f: &Facts,
    me: Pid,
) -> Expect {
    let s = |l: &u8| slots[*l as usize];
    match op {
        Op::Spawn(_) => {
            m.spawn(f.pid);
            m.new_eventfd(f.pid, f.fds[0]);
            m.new_eventfd(f.pid, f.fds[1]);
            exact("ok")
        }
        Op::NewEfds(l) => {
            let Some(s) = s(l) else { return exact("skip") };
            m.new_eventfd(s.pid, f.fds[0]);
            m.new_eventfd(s.pid, f.fds[1]);
            exact("ok")
        }
        Op::OpenDev(l) => {
            let Some(s) = s(l) else { return exact("skip") };
            exact(res(
                m.open_device(s.pid, f.fds.first().copied().unwrap_or(-1))
            ))
        }
        Op::CloseDev(l) => {
            if let Some((s, dev)) = s(l).and_then(|s| s.dev.map(|d| (s, d))) {
                m.close_fd(s.pid, dev);
            }
            exact("ok")
        }
        Op::Param(name, bytes) => exact(res(m.param_write(name, bytes))),
        Op::Find(l, names) => {
            let Some(s) = s(l) else { return exact("skip") };
            let (pid, a, b) = named(&s, *names);
            let r: Vec<String> = [
                (param::USR_PID, pid.to_string()),
                (param::USR_EFD, a.to_string()),
                (param::USR_EFD2, b.to_string()),
                (param::CUR_CMD, "1".to_owned()),
            ]
            .iter()
            .map(|(name, v)| res(m.param_write(name, format!("{v}\n").as_bytes())))
            .collect();
            exact(r.join(","))
        }
        Op::Register(l, names) => {
            let Some(s) = s(l) else { return exact("skip") };
            let (_, a, b) = named(&s, *names);
            exact(res(m.ioctl_register(s.pid, a, b)))
        }
        Op::ReadEfd(l) => {
            let Some(s) = s(l) else { return exact("skip") };
            match m.fd(s.pid, s.efd) {
                Some(FdKind::Eventfd(id)) => match m.efd_read(id) {
                    Some(v) => exact(format!("val {v}")),
                    None => exact("eagain"),
                },
                _ => exact(res(Err(Errno::EBADF))),
            }
        }
        Op::ReadRecords(_, n) => match m.read_records(*n as usize) {
            Ok(evs) => {
                let recs: Vec<String> = evs
                    .iter()
                    .map(|e| format!("{}:{}:{}", e.seq, e.code, e.round))
                    .collect();
                exact(format!("recs {}", recs.join(",")))
            }
            Err(e) => exact(format!("err {}", e.raw())),
        },
        Op::WriteEfd2(l, v) => {
            let Some(s) = s(l) else { return exact("skip") };
            match m.fd(s.pid, s.efd2) {
                Some(FdKind::Eventfd(id)) => {
                    m.efd_write(id, *v);
                    exact("ok")
                }
                _ => exact(res(Err(Errno::EBADF))),
            }
        }
        Op::Ack(_) => exact(res(m.ioctl_ack())),
        Op::AckRound(_, _) => exact(res(m.ioctl_ack_round(f.id))),
        Op::Mmap(l, v) => {
            let Some(s) = s(l) else { return exact("skip") };
            exact(res(m.mmap(s.pid, mmap_req(*v))))
        }
        Op::Munmap(l) => {
            let Some(s) = s(l) else { return exact("skip") };
            if maps[*l as usize].is_empty() {
                return exact("none");
            }
            m.unmapped(s.pid);
            exact("ok")
        }
        Op::CheckMaps(l) => Expect::Maps(
            maps[*l as usize]
                .iter()
                .map(|mi| mi.data.then(|| mi.frozen.unwrap_or_else(|| m.content())))
                .collect(),
        ),
        Op::WritePrivate(l) => {
            if maps[*l as usize]
                .iter()
                .any(|mi| mi.data && !mi.shared && mi.write)
            {
                exact("ok")
            } else {
                exact("none")
            }
        }
        Op::Mremap(l) => {
            if maps[*l as usize].iter().any(|mi| mi.data) {
                exact(res(m.mremap_grow()))
            } else {
                exact("none")
            }
        }
        Op::ReadBuffer(_, len) => {
            Expect::ReadBuf(m.ioctl_read_buffer(u64::from(*len)), m.content())
        }
        Op::Info(_) => {
            let (abi, mode, size, period) = m.ioctl_info();
            exact(format!("info {abi} {mode} {size} {period}"))
        }
        Op::BadIoctl(_) => exact(res(Err(Errno::ENOTTY))),
        Op::Stop(_) | Op::Cont(_) | Op::Wait(_) => exact("ok"),
        Op::Kill(l) | Op::Exit(l) => {
            if let Some(s) = s(l) {
                m.exit(s.pid);
            }
            exact("ok")
        }
        Op::Fork(l) => {
            if let Some(s) = s(l) {
                m.fork(s.pid, f.pid);
            }
            exact("ok")
        }
        Op::KillHolder(_) => {
            m.exit(f.pid);
            exact("ok")
        }
        Op::Dup(l) => {
            let Some(s) = s(l) else { return exact("skip") };
            if m.fd(s.pid, s.efd).is_none() {
                return exact(res(Err(Errno::EBADF)));
            }
            m.dup_fd(s.pid, s.efd, f.fds[0]);
            exact("ok")
        }
        Op::CloseEfd(l, second) => {
            let Some(s) = s(l) else { return exact("skip") };
            let fd = if *second { s.efd2 } else { s.efd };
            if m.fd(s.pid, fd).is_none() {
                return exact(res(Err(Errno::EBADF)));
            }
            m.close_fd(s.pid, fd);
            exact("ok")
        }
        Op::Spin(on) => {
            m.set_spinning(*on);
            exact("ok")
        }
        Op::FillQueue => {
            let mut n = 0;
            let last = loop {
                let r = m.param_write(param::CUR_CMD, b"2\n");
                if r.is_err() || n >= 5000 {
                    break r;
                }
                n += 1;
            };
            exact(format!("n={n} {}", res(last)))
        }
        Op::Chan(_) => Expect::Any,
        // A channel's file holds the module.
        Op::Rmmod if f.chan_busy => exact("fail"),
        Op::Rmmod => {
            m.close_fd(me, MY_DEV_FD);
            m.unmapped(me);
            let r = m.rmmod();
            if m.live() {
                reopen_model(m, me);
            }
            exact(if r.is_ok() { "ok" } else { "fail" })
        }
        Op::Insmod => {
            let r = m.insmod();
            if r.is_ok() {
                reopen_model(m, me);
            }
            exact(if r.is_ok() { "ok" } else { "fail" })
        }
    }
}

fn reopen_model(m: &mut Model, me: Pid) {
    if m.open_device(me, MY_DEV_FD).is_ok() {
        let ctrl = MmapReq {
            len: 4096,
            offset: CTRL_MMAP_OFFSET,
            shared: true,
            write: true,
            exec: false,
        };
        let _ = m.mmap(me, ctrl);
    }
}

/// The line a detach prints (HUP, exited process).
fn is_detach_line(line: &str) -> bool {
    line == "listener closed its eventfd: detached"
        || (line.starts_with("listener pid ") && line.ends_with(" exited: detached"))
}

/// The parameters and stats the fuzzer reads after every op, kept open
/// while the module stays loaded: each read at offset 0 runs the
/// attribute's show again, without the path walk and open of a fresh
/// file.
struct SysFiles {
    params: Vec<(&'static str, std::fs::File)>,
    stats: std::fs::File,
}

/// One attribute's text, read from the start.
fn read_attr(file: &std::fs::File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        let n = file.read_at(&mut buf[len..], len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl SysFiles {
    fn open() -> Result<Self> {
        let open = |name: &str| {
            let path = Path::new(PARAMS_DIR).join(name);
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))
        };
        let params = WATCHED
            .iter()
            .map(|&name| Ok((name, open(name)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(SysFiles {
            params,
            stats: open(param::STATS)?,
        })
    }

    fn count(&self) -> Result<u64> {
        let text = read_attr(&self.stats).context("reading stats")?;
        text.lines()
            .find_map(|l| l.strip_prefix("count ").and_then(|v| v.trim().parse().ok()))
            .context("stats has no count line")
    }
}

/// A failed run: where and why.
#[derive(Debug)]
pub struct Failure {
    /// Index of the op in the log.
    pub index: usize,
    /// What went wrong.
    pub message: String,
}

/// The fuzzer's state for one run.
pub struct Runner {
    cands: Vec<Model>,
    slots: Vec<Option<Slot>>,
    holders: Vec<Pid>,
    me: Pid,
    ctrl: Option<(Device, CtrlPage)>,
    /// Open while `ctrl` is.
    files: Option<SysFiles>,
    klog: KernelLog,
    ready_seq: Option<u64>,
    mode: EventMode,
    /// What the fuzzer last stored in the control page's listener_state.
    spinning: bool,
    /// The channels the fuzzer owns, and their model.
    chan: ChanSide,
    /// Where the time goes.
    pub profile: Profile,
}

fn wait_gone(pid: Pid, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat) => {
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                if matches!(state, Some("Z" | "X")) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `rmmod kern2usr` without a process: delete_module(2) with O_NONBLOCK,
/// as rmmod calls it. True when the module went away.
fn delete_module() -> bool {
    let name = c"kern2usr";
    // SAFETY: a NUL-terminated name that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    r == 0
}

/// `insmod kern2usr.ko` without a process: finit_module(2) of the module
/// file with no parameters, as insmod calls it. True when it loaded.
fn finit_module() -> Result<bool> {
    let path = Path::new(guest::KERN_DIR).join(guest::MODULE_FILE);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let params = c"";
    // SAFETY: an open fd and a NUL-terminated (empty) parameter string that
    // outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            params.as_ptr(),
            0,
        )
    };
    Ok(r == 0)
}

fn kill(pid: Pid, sig: libc::c_int) {
    // SAFETY: kill() takes no pointers; the pid is one of our processes.
    unsafe { libc::kill(pid, sig) };
}

/// Write MMAP (2) to cur_cmd until a write fails, at most 5000 times:
/// the successful writes and the last answer. One open file takes every
/// write (each write() is one store, as with a fresh open).
fn fill_queue() -> (u64, String) {
    let path = Path::new(PARAMS_DIR).join(param::CUR_CMD);
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => return (0, format!("err {}", e.raw_os_error().unwrap_or(0))),
    };
    let mut n = 0;
    loop {
        let r = match file.write(b"2\n") {
            Ok(2) => "ok".to_owned(),
            Ok(k) => format!("short write {k}"),
            Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
        };
        if r != "ok" || n >= 5000 {
            return (n, r);
        }
        n += 1;
    }
}

fn write_param(name: &str, bytes: &[u8]) -> String {
    let path = Path::new(PARAMS_DIR).join(name);
    let file = std::fs::OpenOptions::new().write(true).open(&path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) => return format!("err {}", e.raw_os_error().unwrap_or(0)),
    };
    match file.write(bytes) {
        Ok(n) if n == bytes.len() => "ok".to_owned(),
        Ok(n) => format!("short write {n}"),
        Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
    }
}

impl Runner {
    /// A fresh module, no listeners.
    pub fn start() -> Result<Self> {
        let mut klog = KernelLog::open_at_end()?;
        if guest::module_loaded() {
            guest::rmmod(&mut klog).context("unloading the module before the run")?;
        }
        guest::insmod(&mut klog, "")?;
        let mode = kern2usr::Params::new().event_mode()?;
        let noexec = rustix::fs::statvfs("/dev")
            .map(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::NOEXEC))
            .unwrap_or(false);
        let me = std::process::id() as Pid;
        let mut model = Model::new(mode, noexec);
        model.spawn(me);
        model
            .insmod()
            .map_err(|e| anyhow::anyhow!("model insmod: {e:?}"))?;
        reopen_model(&mut model, me);
        let mut r = Runner {
            cands: vec![model],
            slots: (0..SLOTS).map(|_| None).collect(),
            holders: Vec::new(),
            me,
            ctrl: None,
            files: None,
            klog,
            ready_seq: None,
            mode,
            spinning: false,
            chan: ChanSide::new(me, mode, noexec),
            profile: Profile::default(),
        };
        r.open_ctrl()?;
        Ok(r)
    }

    fn open_ctrl(&mut self) -> Result<()> {
        let dev = Device::open(DEVICE_PATH)?;
        let ctrl = dev.map_ctrl()?;
        // Dropping the last handle stored ASLEEP: put back what the
        // fuzzer said (the module kept the page if it stayed loaded).
        if self.spinning {
            ctrl.set_spinning();
        }
        self.ready_seq = Some(ctrl.ready_seq());
        self.ctrl = Some((dev, ctrl));
        self.files = Some(SysFiles::open()?);
        Ok(())
    }

    /// The event mode of the module.
    pub fn mode(&self) -> EventMode {
        self.mode
    }

    /// What the generator needs.
    pub fn view(&self) -> View {
        let mut v = View {
            holders: self.holders.len(),
            loaded: self.ctrl.is_some(),
            chans: self.chan.view(),
            rings: self.chan.rings(),
            ..View::default()
        };
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(s) = s {
                v.running[i] = true;
                v.stopped[i] = s.info.stopped;
                v.dev_open[i] = s.info.dev.is_some();
                v.maps[i] = s.maps.len();
                if self.cands[0]
                    .listener()
                    .is_some_and(|l| l.pid == s.info.pid)
                {
                    v.attached = Some(i as u8);
                }
            }
        }
        v
    }

    /// Whether the op can run now (its slot runs and is not stopped...).
    fn runnable(&self, op: &Op) -> bool {
        let slot = |l: &u8| self.slots[*l as usize].as_ref();
        let active = |l: &u8| slot(l).is_some_and(|s| !s.info.stopped);
        let dev = |l: &u8| active(l) && slot(l).is_some_and(|s| s.info.dev.is_some());
        let loaded = self.ctrl.is_some();
        // An efd number now naming the device or a pipe is left alone.
        let efd_ok = |l: &u8, second: bool| {
            slot(l).is_some_and(|s| {
                let fd = if second { s.info.efd2 } else { s.info.efd };
                matches!(
                    self.cands[0].fd(s.info.pid, fd),
                    None | Some(FdKind::Eventfd(_))
                )
            })
        };
        match op {
            Op::ReadEfd(l) | Op::Dup(l) | Op::CloseEfd(l, false) if !efd_ok(l, false) => false,
            Op::WriteEfd2(l, _) | Op::CloseEfd(l, true) if !efd_ok(l, true) => false,
            Op::Spawn(l) => slot(l).is_none(),
            Op::NewEfds(l)
            | Op::ReadEfd(l)
            | Op::WriteEfd2(l, _)
            | Op::Munmap(l)
            | Op::CheckMaps(l)
            | Op::WritePrivate(l)
            | Op::Mremap(l)
            | Op::Exit(l)
            | Op::Fork(l)
            | Op::Dup(l)
            | Op::CloseEfd(l, _)
            | Op::Stop(l) => active(l),
            Op::Find(l, _) => active(l) && loaded,
            Op::OpenDev(l) => active(l) && slot(l).is_some_and(|s| s.info.dev.is_none()),
            Op::CloseDev(l)
            | Op::Register(l, _)
            | Op::ReadRecords(l, _)
            | Op::Ack(l)
            | Op::AckRound(l, _)
            | Op::Mmap(l, _)
            | Op::ReadBuffer(l, _)
            | Op::Info(l)
            | Op::BadIoctl(l) => dev(l),
            Op::Cont(l) => slot(l).is_some_and(|s| s.info.stopped),
            Op::Kill(l) => slot(l).is_some(),
            Op::KillHolder(h) => (*h as usize) < self.holders.len(),
            // The fuzzer's control page handle is dropped around rmmod,
            // which stores ASLEEP for a moment: not while that matters.
            Op::Rmmod => {
                let m = &self.cands[0];
                loaded && !(m.testing() && m.adaptive() && m.spinning())
            }
            Op::Param(..) | Op::Spin(_) | Op::FillQueue => loaded,
            Op::Insmod => !loaded,
            Op::Wait(_) => true,
            Op::Chan(c) => loaded && self.chan.runnable(c),
        }
    }

    fn slot(&mut self, l: u8) -> Result<&mut Slot> {
        self.slots[l as usize]
            .as_mut()
            .context("internal: no listener in this slot")
    }

    fn spawn(&mut self, l: u8) -> Result<Facts> {
        let exe = std::env::current_exe().context("finding the vmtest binary")?;
        let mut child = Command::new(exe)
            .arg("fuzz-child")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting a listener process")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("listener without pipes");
        };
        let pid = child.id() as Pid;
        let mut slot = Slot {
            info: SlotInfo {
                pid,
                efd: -1,
                efd2: -1,
                efd_id: EfdId(0),
                efd2_id: EfdId(0),
                dup: None,
                dev: None,
                stopped: false,
            },
            child,
            stdin,
            stdout: BufReader::new(stdout),
            maps: Vec::new(),
        };
        let fds = Self::new_efds(&mut slot)?;
        self.slots[l as usize] = Some(slot);
        Ok(Facts {
            pid,
            fds,
            ..Facts::default()
        })
    }

    fn new_efds(slot: &mut Slot) -> Result<Vec<i32>> {
        let a = slot.ask("efds")?;
        let w: Vec<&str> = a.split_whitespace().collect();
        if w.len() != 3 || w[0] != "ok" {
            bail!("the listener could not make eventfds: {a}");
        }
        let fds: Vec<i32> = w[1..].iter().filter_map(|s| s.parse().ok()).collect();
        slot.info.efd = fds[0];
        slot.info.efd2 = fds[1];
        slot.info.dup = None;
        Ok(fds)
    }

    fn reap_slot(&mut self, l: u8) -> Result<()> {
        if let Some(mut s) = self.slots[l as usize].take() {
            s.child.wait().context("reaping a listener")?;
        }
        Ok(())
    }

    /// Run `op` for real: the observation line and the facts learned.
    fn execute(&mut self, op: &Op) -> Result<(String, Facts)> {
        let mut facts = Facts::default();
        let scale = |ms: u64| guest::scaled(Duration::from_millis(ms));
        let obs = match op {
            Op::Spawn(l) => {
                facts = self.spawn(*l)?;
                "ok".to_owned()
            }
            Op::NewEfds(l) => {
                let s = self.slot(*l)?;
                facts.fds = Self::new_efds(s)?;
                "ok".to_owned()
            }
            Op::OpenDev(l) => {
                let s = self.slot(*l)?;
                let a = s.ask("open")?;
                match a.strip_prefix("ok ").and_then(|f| f.parse::<i32>().ok()) {
                    Some(fd) => {
                        s.info.dev = Some(fd);
                        facts.fds = vec![fd];
                        "ok".to_owned()
                    }
                    None => a,
                }
            }
            Op::CloseDev(l) => {
                let s = self.slot(*l)?;
                if let Some(dev) = s.info.dev.take() {
                    s.ask(&format!("close {dev}"))?;
                }
                "ok".to_owned()
            }
            Op::Param(name, bytes) => write_param(name, bytes),
            Op::Find(l, names) => {
                let info = self.slot(*l)?.info;
                let (pid, a, b) = named(&info, *names);
                [
                    (param::USR_PID, pid.to_string()),
                    (param::USR_EFD, a.to_string()),
                    (param::USR_EFD2, b.to_string()),
                    (param::CUR_CMD, "1".to_owned()),
                ]
                .iter()
                .map(|(name, v)| write_param(name, format!("{v}\n").as_bytes()))
                .collect::<Vec<_>>()
                .join(",")
            }
            Op::Register(l, names) => {
                let s = self.slot(*l)?;
                let (_, a, b) = named(&s.info, *names);
                let dev = s.info.dev.unwrap_or(-1);
                norm_ioctl(s.ask(&format!("register {dev} {a} {b}"))?)
            }
            Op::ReadEfd(l) => {
                let info = self.slot(*l)?.info;
                let mut probe = self.cands[0].clone();
                let pending = match probe.fd(info.pid, info.efd) {
                    Some(FdKind::Eventfd(id)) => probe.efd_read(id).is_some(),
                    _ => false,
                };
                let wait = if pending {
                    scale(5000).as_millis() as u64
                } else {
                    0
                };
                self.slot(*l)?
                    .ask(&format!("readefd {} {wait}", info.efd))?
            }
            Op::ReadRecords(l, n) => {
                let s = self.slot(*l)?;
                let dev = s.info.dev.unwrap_or(-1);
                s.ask(&format!("records {dev} {n}"))?
            }
            Op::WriteEfd2(l, v) => {
                let s = self.slot(*l)?;
                let efd2 = s.info.efd2;
                s.ask(&format!("write {efd2} {v}"))?
            }
            Op::Ack(l) => {
                let s = self.slot(*l)?;
                let dev = s.info.dev.unwrap_or(-1);
                norm_ioctl(s.ask(&format!("ack {dev}"))?)
            }
            Op::AckRound(l, pick) => {
                let m = &self.cands[0];
                // The outstanding round, else the one STOP left lent.
                let base = m.round().or(m.lent()).map_or(m.ready_seq(), |r| r.id);
                facts.id = match pick {
                    RoundPick::Current => base as u32,
                    RoundPick::Prev => base.wrapping_sub(1) as u32,
                    RoundPick::Next => base.wrapping_add(1) as u32,
                    RoundPick::Value(v) => *v,
                };
                let s = self.slot(*l)?;
                let dev = s.info.dev.unwrap_or(-1);
                norm_ioctl(s.ask(&format!("ackround {dev} {}", facts.id))?)
            }
            Op::Mmap(l, v) => {
                let (len, off, shared, write, exec) = MMAPS[*v as usize];
                let s = self.slot(*l)?;
                let dev = s.info.dev.unwrap_or(-1);
                let a = s.ask(&format!(
                    "mmap {dev} {len} {off} {} {} {}",
                    u8::from(shared),
                    u8::from(write),
                    u8::from(exec)
                ))?;
                if a == "ok" {
                    s.maps.push(MapInfo {
                        data: off == 0,
                        shared,
                        write,
                        frozen: None,
                    });
                }
                a
            }
            Op::Munmap(l) => {
                let s = self.slot(*l)?;
                let a = s.ask("munmap")?;
                if a == "ok" {
                    s.maps.pop();
                }
                a
            }
            Op::CheckMaps(l) => self.slot(*l)?.ask("check")?,
            Op::WritePrivate(l) => {
                let content = self.cands[0].content();
                let s = self.slot(*l)?;
                let a = s.ask("wpriv")?;
                // The child writes into the first private writable data map.
                if let Some(mi) = s
                    .maps
                    .iter_mut()
                    .find(|mi| mi.data && !mi.shared && mi.write)
                {
                    mi.frozen.get_or_insert(content);
                }
                a
            }
            Op::Mremap(l) => self.slot(*l)?.ask("mremap")?,
            Op::ReadBuffer(l, n) => {
                let s = self.slot(*l)?;
                let dev = s.info.dev.unwrap_or(-1);
                s.ask(&format!("readbuf {dev} {n}"))?
            }
            Op::Info(l) => {
                let s = self.slot(*l)?;
                let dev = s.info.dev.unwrap_or(-1);
                s.ask(&format!("info {dev}"))?
            }
            Op::BadIoctl(l) => {
                let s = self.slot(*l)?;
                let dev = s.info.dev.unwrap_or(-1);
                norm_ioctl(s.ask(&format!("badioctl {dev}"))?)
            }
            Op::Stop(l) => {
                let s = self.slot(*l)?;
                kill(s.info.pid, libc::SIGSTOP);
                s.info.stopped = true;
                "ok".to_owned()
            }
            Op::Cont(l) => {
                let s = self.slot(*l)?;
                kill(s.info.pid, libc::SIGCONT);
                s.info.stopped = false;
                "ok".to_owned()
            }
            Op::Kill(l) => {
                let pid = self.slot(*l)?.info.pid;
                kill(pid, libc::SIGKILL);
                self.reap_slot(*l)?;
                "ok".to_owned()
            }
            Op::Exit(l) => {
                let s = self.slot(*l)?;
                writeln!(s.stdin, "exit").context("telling the listener to exit")?;
                s.stdin.flush().context("telling the listener to exit")?;
                self.reap_slot(*l)?;
                "ok".to_owned()
            }
            Op::Fork(l) => {
                let a = self.slot(*l)?.ask("fork")?;
                let pid = a
                    .strip_prefix("ok ")
                    .and_then(|p| p.parse::<Pid>().ok())
                    .with_context(|| format!("fork: {a}"))?;
                self.holders.push(pid);
                facts.pid = pid;
                "ok".to_owned()
            }
            Op::KillHolder(h) => {
                let pid = self.holders.remove(*h as usize);
                kill(pid, libc::SIGKILL);
                let t = Instant::now();
                wait_gone(pid, scale(5000));
                self.profile.add("wait gone", t.elapsed());
                facts.pid = pid;
                "ok".to_owned()
            }
            Op::Dup(l) => {
                let s = self.slot(*l)?;
                let a = s.ask(&format!("dup {}", s.info.efd))?;
                match a.strip_prefix("ok ").and_then(|p| p.parse::<i32>().ok()) {
                    Some(fd) => {
                        s.info.dup = Some(fd);
                        facts.fds = vec![fd];
                        "ok".to_owned()
                    }
                    None => a,
                }
            }
            Op::CloseEfd(l, second) => {
                let s = self.slot(*l)?;
                let fd = if *second { s.info.efd2 } else { s.info.efd };
                s.ask(&format!("close {fd}"))?
            }
            Op::Spin(on) => {
                if let Some((_, ctrl)) = &self.ctrl {
                    if *on {
                        ctrl.set_spinning();
                    } else {
                        ctrl.set_asleep();
                    }
                    self.spinning = *on;
                }
                "ok".to_owned()
            }
            Op::Wait(ms) => {
                std::thread::sleep(Duration::from_millis(u64::from(*ms)));
                "ok".to_owned()
            }
            Op::FillQueue => {
                let (n, last) = fill_queue();
                self.profile
                    .add("fillqueue writes", Duration::from_millis(n));
                format!("n={n} {last}")
            }
            Op::Chan(c) => {
                let (obs, chan) = self.chan.execute(c, &mut self.profile)?;
                facts.chan = chan;
                obs
            }
            Op::Rmmod => {
                facts.chan_busy = self.chan.in_use();
                if let Some((_, ctrl)) = &self.ctrl {
                    self.ready_seq = Some(ctrl.ready_seq());
                }
                self.ctrl = None;
                self.files = None;
                let unloaded = delete_module();
                if !guest::module_loaded() {
                    self.spinning = false;
                }
                if guest::module_loaded() {
                    self.open_ctrl()?;
                }
                if unloaded {
                    self.ready_seq = None;
                    "ok".to_owned()
                } else {
                    "fail".to_owned()
                }
            }
            Op::Insmod => {
                let loaded = finit_module()?;
                if guest::module_loaded() {
                    self.open_ctrl()?;
                }
                if loaded {
                    self.chan.reset();
                }
                if loaded {
                    "ok".to_owned()
                } else {
                    "fail".to_owned()
                }
            }
        };
        // Keep the fd facts of spawn/newefds in the slot for later ops.
        Ok((obs, facts))
    }

    fn snapshot_slots(&self) -> (Vec<Option<SlotInfo>>, Vec<Vec<MapInfo>>) {
        (
            self.slots
                .iter()
                .map(|s| s.as_ref().map(|s| s.info))
                .collect(),
            self.slots
                .iter()
                .map(|s| s.as_ref().map(|s| s.maps.clone()).unwrap_or_default())
                .collect(),
        )
    }

    /// Run one op on both sides and compare. Ok(false): skipped.
    pub fn step(&mut self, op: &Op) -> Result<bool, String> {
        if !self.runnable(op) {
            return Ok(false);
        }
        let t = Instant::now();
        let r = self.step_timed(op);
        let text = op.to_string();
        let kind = text.split_whitespace().next().unwrap_or("?");
        self.profile.add(&format!("op {kind}"), t.elapsed());
        r
    }

    fn step_timed(&mut self, op: &Op) -> Result<bool, String> {
        let (slots, maps) = self.snapshot_slots();
        let r0 = self.ready_seq;
        let t = Instant::now();
        let (obs, facts) = self.execute(op).map_err(|e| format!("{op}: {e:#}"))?;
        self.profile.add("execute", t.elapsed());
        let t = Instant::now();
        // The fuzzer's own bookkeeping of the eventfd ids (the same for all
        // candidates: they share the world's history).
        if let Op::Spawn(l) | Op::NewEfds(l) = op {
            let n = self.cands[0].eventfd_count();
            if let Some(s) = self.slots[*l as usize].as_mut() {
                s.info.efd_id = EfdId(n as u32);
                s.info.efd2_id = EfdId(n as u32 + 1);
            }
        }
        // An eventfd of the listener released by the op: its EPOLLHUP work
        // detaches it soon. When every candidate says so, wait for that
        // line (it comes in a few ms; a kernel that never detaches fails);
        // when only some do, look briefly and keep both sets: a late line
        // is taken by the next op's orders.
        // Only these ops close files or end processes.
        let closes = matches!(
            op,
            Op::Kill(_) | Op::Exit(_) | Op::CloseEfd(..) | Op::KillHolder(_)
        );
        let released = self
            .cands
            .iter()
            .filter(|_| closes)
            .filter(|c| {
                let mut m = (*c).clone();
                predict(&mut m, op, &slots, &maps, &facts, self.me);
                m.listener()
                    .is_some_and(|l| m.efd_released(l.efd) || m.efd_released(l.efd2))
            })
            .count();
        self.profile.add("model released", t.elapsed());
        if released > 0 {
            let must = released == self.cands.len();
            let t0 = Instant::now();
            let bound = if must {
                guest::scaled(Duration::from_secs(3))
            } else {
                guest::scaled(Duration::from_millis(20))
            };
            let seen = self
                .klog
                .wait_until("a detach", bound, |lines| {
                    lines.iter().any(|l| is_detach_line(l))
                })
                .is_ok();
            let site = match (must, seen) {
                (true, true) => "wait detach must",
                (true, false) => "wait detach MISSING",
                (false, true) => "wait detach may+",
                (false, false) => "wait detach may-",
            };
            self.profile.add(site, t0.elapsed());
            if must && !seen {
                return Err(format!(
                    "{op}: observed {obs:?}; the listener's eventfd is released but the kernel \
                     logged no detach within {bound:?}"
                ));
            }
        }
        let t = Instant::now();
        // Observe: ready_seq, then (taking the module's lock) stats and
        // the parameters, then the kernel log.
        let sync = self
            .observe()
            .map_err(|e| format!("{op}: observing: {e:#}"))?;
        self.profile.add("observe", t.elapsed());
        let t = Instant::now();
        let mut next: Vec<Model> = Vec::new();
        let mut first_expect = None;
        let mut why: Vec<String> = Vec::new();
        for (ci, c) in self.cands.iter().enumerate() {
            for seq in interleavings(sync.detaches.min(2)) {
                let mut m = c.clone();
                let mut failed_step = None;
                let mut expect = None;
                for step in &seq {
                    let ok = match step {
                        Step::Op => {
                            expect = Some(predict(&mut m, op, &slots, &maps, &facts, self.me));
                            true
                        }
                        Step::Publish => m.publish().is_ok(),
                        Step::Detach => m.detach_async().is_ok(),
                    };
                    if !ok {
                        failed_step = Some(*step);
                        break;
                    }
                }
                let reason = if let Some(step) = failed_step {
                    Some(format!("{step:?} impossible"))
                } else if let Some(expect) = expect {
                    if first_expect.is_none() {
                        first_expect = Some(expect.clone());
                    }
                    if !expect.matches(&obs) {
                        Some(format!("expects {expect}"))
                    } else if m.detach_lines().checked_sub(c.detach_lines())
                        != Some(sync.detaches as u64)
                    {
                        Some(format!(
                            "detach lines {} -> {}",
                            c.detach_lines(),
                            m.detach_lines()
                        ))
                    } else if let Some(seq_now) = sync.ready_seq {
                        if m.ready_seq() != seq_now {
                            Some(format!("ready_seq {}", m.ready_seq()))
                        } else if Some(m.doorbells_skipped()) != sync.doorbells {
                            Some(format!("doorbells_skipped {}", m.doorbells_skipped()))
                        } else {
                            sync.params
                                .iter()
                                .find(|(name, text)| {
                                    !m.param_read(name).is_ok_and(|want| want.matches(text))
                                })
                                .map(|(name, _)| format!("{name} {:?}", m.param_read(name)))
                        }
                    } else if m.live() {
                        Some("module loaded".to_owned())
                    } else {
                        None
                    }
                } else {
                    Some("no op step".to_owned())
                };
                match reason {
                    None => {
                        if !next.contains(&m) {
                            next.push(m);
                        }
                    }
                    Some(r) => {
                        if ci == 0 && why.len() < 12 {
                            why.push(format!("{seq:?}: {r}"));
                        }
                    }
                }
            }
        }
        let _ = r0;
        self.profile.add("model compare", t.elapsed());
        if next.is_empty() {
            let c = &self.cands[0];
            return Err(format!(
                "{op}: observed {obs:?}, the model expects {} (ready_seq {:?} -> {:?}, model {}; doorbells_skipped {:?}, model {}; detach lines {}; params {:?}; model: listener {:?} testing {} round {:?} lent {:?} queue {} in_flight {:?} counted {} last_error {})",
                first_expect.map_or("nothing".to_owned(), |e| e.to_string()),
                r0,
                sync.ready_seq,
                c.ready_seq(),
                sync.doorbells,
                c.doorbells_skipped(),
                sync.detaches,
                sync.params,
                c.listener(),
                c.testing(),
                c.round(),
                c.lent(),
                c.queue().len(),
                c.in_flight(),
                c.counted(),
                c.last_error_set(),
            ) + &format!("; orders tried: {}", why.join("; ")));
        }
        // The stats count may trail the ack by a work item: wait for it.
        let t = Instant::now();
        if let Some(first) = sync.count {
            let deadline = Instant::now() + guest::scaled(Duration::from_secs(3));
            // Orders that disagree on the count (an ack just before or
            // just after a publish): a lower count read now may be the
            // higher one not yet counted. Give the work item a moment
            // before settling on the lower one.
            let settle = Instant::now() + guest::scaled(Duration::from_millis(200));
            let mut count = first;
            loop {
                let matching: Vec<Model> = next
                    .iter()
                    .filter(|m| m.counted() == count)
                    .cloned()
                    .collect();
                let higher = next.iter().any(|m| m.counted() > count);
                if !matching.is_empty() && (!higher || Instant::now() >= settle) {
                    next = matching;
                    break;
                }
                if Instant::now() >= deadline || next.iter().all(|m| m.counted() < count) {
                    return Err(format!(
                        "{op}: observed {obs:?}; stats count is {count}, the model says {:?}",
                        next.iter().map(Model::counted).collect::<Vec<_>>()
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
                count = self
                    .files
                    .as_ref()
                    .map_or_else(read_count, SysFiles::count)
                    .map_err(|e| format!("{op}: reading stats: {e:#}"))?;
            }
        }
        self.profile.add("wait count", t.elapsed());
        let chan_op = match op {
            Op::Chan(c) => Some(c),
            _ => None,
        };
        self.chan
            .step(chan_op, &obs, &facts.chan, &mut self.profile)
            .map_err(|e| format!("{op}: {e}"))?;
        self.profile
            .add("candidates", Duration::from_millis(next.len() as u64));
        next.truncate(MAX_CANDIDATES);
        self.cands = next;
        self.ready_seq = sync.ready_seq;
        Ok(true)
    }

    fn observe(&mut self) -> Result<Sync> {
        let mut ready_seq = self.ctrl.as_ref().map(|(_, c)| c.ready_seq());
        let mut params = Vec::new();
        let mut doorbells = None;
        let mut count = None;
        if let (Some((_, ctrl)), Some(files)) = (&self.ctrl, &self.files) {
            // Reading stats takes the module's lock: a round whose
            // ready_seq we saw is complete after it (doorbells_skipped,
            // stored after ready_seq, included). A newer round may have
            // begun meanwhile: read again until ready_seq holds still
            // around the doorbells_skipped read.
            let t = Instant::now();
            for _ in 0..1000 {
                let seq = ctrl.ready_seq();
                let c = files.count()?;
                let skipped = ctrl.doorbells_skipped();
                if ctrl.ready_seq() == seq {
                    ready_seq = Some(seq);
                    doorbells = Some(skipped);
                    count = Some(c);
                    break;
                }
            }
            if doorbells.is_none() {
                bail!("ready_seq never held still (rounds published without pause)");
            }
            self.profile.add("observe stats", t.elapsed());
            let t = Instant::now();
            for (name, file) in &files.params {
                let text = read_attr(file).with_context(|| format!("reading {name}"))?;
                params.push((*name, text));
            }
            self.profile.add("observe params", t.elapsed());
        }
        let t = Instant::now();
        let lines = self.klog.take_new_ours()?;
        self.klog.check_no_kernel_problems()?;
        self.profile.add("observe kmsg", t.elapsed());
        let detaches = lines.iter().filter(|l| is_detach_line(l)).count();
        self.klog.forget_consumed(64);
        Ok(Sync {
            ready_seq,
            doorbells,
            count,
            params,
            detaches,
        })
    }

    /// Kill every process of the run and unload the module.
    pub fn finish(mut self) -> Result<()> {
        for l in 0..SLOTS {
            if let Some(s) = self.slots[l as usize].as_ref() {
                kill(s.info.pid, libc::SIGKILL);
                self.reap_slot(l)?;
            }
        }
        for pid in std::mem::take(&mut self.holders) {
            kill(pid, libc::SIGKILL);
            wait_gone(pid, guest::scaled(Duration::from_secs(5)));
        }
        self.chan.close_all();
        self.ctrl = None;
        self.files = None;
        if guest::module_loaded() {
            guest::rmmod(&mut self.klog)?;
        }
        self.klog.check_no_kernel_problems()
    }
}

/// ioctl answers: `ok <ret>` becomes `ok` (the model does not predict
/// return values of 0).
fn norm_ioctl(a: String) -> String {
    if a.starts_with("ok") {
        "ok".to_owned()
    } else {
        a
    }
}

fn read_count() -> Result<u64> {
    let text = std::fs::read_to_string(Path::new(PARAMS_DIR).join(param::STATS))
        .context("reading stats")?;
    text.lines()
        .find_map(|l| l.strip_prefix("count ").and_then(|v| v.trim().parse().ok()))
        .context("stats has no count line")
}

struct Sync {
    ready_seq: Option<u64>,
    doorbells: Option<u64>,
    /// The stats count read with them.
    count: Option<u64>,
    params: Vec<(&'static str, String)>,
    detaches: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Op,
    Publish,
    Detach,
}

/// Every order of the op, up to two publishes and up to `detaches`
/// detaches (the final ready_seq check picks the right count).
fn interleavings(detaches: usize) -> Vec<Vec<Step>> {
    let mut out: Vec<Vec<Step>> = Vec::new();
    for p in 0..=2 {
        for d in 0..=detaches {
            let mut items = vec![Step::Op];
            items.extend(std::iter::repeat_n(Step::Publish, p));
            items.extend(std::iter::repeat_n(Step::Detach, d));
            permute(&mut items, 0, &mut out);
        }
    }
    out
}

fn permute(items: &mut Vec<Step>, k: usize, out: &mut Vec<Vec<Step>>) {
    if k == items.len() {
        if !out.contains(items) {
            out.push(items.clone());
        }
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permute(items, k + 1, out);
        items.swap(k, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleavings_cover_every_order_once() {
        let none = interleavings(0);
        // op; op+P (2 orders); op+P+P (3 orders).
        assert_eq!(none.len(), 1 + 2 + 3);
        assert!(none.contains(&vec![Step::Publish, Step::Op, Step::Publish]));
        let with_detach = interleavings(1);
        // plus op+D (2), op+P+D (6), op+P+P+D (12).
        assert_eq!(with_detach.len(), 6 + 2 + 6 + 12);
    }

    #[test]
    fn expectations_match_observations() {
        assert!(Expect::Exact("ok".into()).matches("ok"));
        assert!(!Expect::Exact("ok".into()).matches("err 22"));
        let maps = Expect::Maps(vec![Some(Content::ZerosOrPattern), None]);
        assert!(maps.matches("maps M,C"));
        assert!(!maps.matches("maps X,C"));
        assert!(!maps.matches("maps M"));
        assert!(Expect::Maps(vec![]).matches("maps -"));
        let rb = Expect::ReadBuf(4096, Content::Pattern);
        assert!(rb.matches("n 4096 P"));
        assert!(!rb.matches("n 4096 Z"));
        assert!(Expect::ReadBuf(0, Content::Pattern).matches("n 0 Z"));
    }
}
