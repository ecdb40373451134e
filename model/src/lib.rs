//! An executable model of the kern2usr protocol (docs/PROTOCOL.md), in
//! plain Rust with no kernel in it: what every sysfs write, ioctl, read,
//! mmap, acknowledgement, listener exit and rmmod must return and cause.
//!
//! The model is a reference state machine: the fuzzer in
//! `crates/vmtest` applies the same operations to the real module and to
//! the model and compares what it observes with what the model says.
//!
//! What the kernel does on its own time (publishing a round when the timer
//! fires, detaching after an EPOLLHUP) is not tied to the clock here: it
//! is an explicit step ([`Model::publish`], [`Model::detach_async`]) that
//! the fuzzer applies when it observes it (the control page's `ready_seq`,
//! the kernel log), so comparisons never depend on timing.
//!
//! The model also keeps the small part of the world the protocol depends
//! on: processes (alive or not), their fd tables (which fd is which
//! eventfd, the device, or something else), the eventfd counters and who
//! holds the device open or mapped.

pub mod channels;
pub mod kstrto;

use std::collections::{BTreeMap, VecDeque};

pub use kern2usr_abi::EventMode as Mode;
use kern2usr_abi::{
    param, Code, ABI_VERSION, CTRL_MMAP_OFFSET, DEFAULT_BUFFER_SIZE, DEFAULT_PERIOD_MS,
    EVENT_QUEUE_LEN, EVENT_QUEUE_RESERVE, MAX_PERIOD_MS,
};

/// The errnos the module (and the kernel around it) returns, with their
/// Linux numbers.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// No such file.
    ENOENT = 2,
    /// No such process.
    ESRCH = 3,
    /// Bad file descriptor.
    EBADF = 9,
    /// Try again.
    EAGAIN = 11,
    /// Permission denied.
    EACCES = 13,
    /// Bad address.
    EFAULT = 14,
    /// Busy.
    EBUSY = 16,
    /// No such device.
    ENODEV = 19,
    /// Invalid argument.
    EINVAL = 22,
    /// Not a typewriter (unknown ioctl).
    ENOTTY = 25,
    /// Out of range.
    ERANGE = 34,
    /// Protocol error.
    EPROTO = 71,
    /// Stale (an ack for another round).
    ESTALE = 116,
    /// No space left (a channel limit).
    ENOSPC = 28,
    /// Not supported (a producer's channel).
    EOPNOTSUPP = 95,
    /// Not connected (a channel call on a file that is no channel).
    ENOTCONN = 107,
}

impl Errno {
    /// Every errno of the model.
    pub const ALL: [Errno; 17] = [
        Errno::EPERM,
        Errno::ENOENT,
        Errno::ESRCH,
        Errno::EBADF,
        Errno::EAGAIN,
        Errno::EACCES,
        Errno::EFAULT,
        Errno::EBUSY,
        Errno::ENODEV,
        Errno::EINVAL,
        Errno::ENOTTY,
        Errno::ERANGE,
        Errno::EPROTO,
        Errno::ESTALE,
        Errno::ENOSPC,
        Errno::EOPNOTSUPP,
        Errno::ENOTCONN,
    ];

    /// The Linux number.
    pub fn raw(self) -> i32 {
        self as i32
    }

    /// The errno with this Linux number, if the model knows it.
    pub fn from_raw(raw: i32) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.raw() == raw)
    }

    /// The symbolic name (`EINVAL`).
    pub fn name(self) -> String {
        format!("{self:?}")
    }

    /// The errno called `name` (`EINVAL`).
    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// A process id, as the kernel sees it.
pub type Pid = i32;

/// An eventfd object (one `eventfd()` call; dups and forks share it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EfdId(pub u32);

/// What an fd of a process refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FdKind {
    /// An eventfd.
    Eventfd(EfdId),
    /// The kern2usr device (either node).
    Device,
    /// Anything else (a pipe, /dev/null, a regular file).
    Other,
}

/// A process of the world.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Proc {
    /// Not exited (an exited process is reaped at once in the model).
    pub alive: bool,
    /// Its open fds.
    pub fds: BTreeMap<i32, FdKind>,
    /// Mappings of the device it holds (each keeps the device file open).
    pub mappings: u32,
}

/// One event for the listener (a record in queue mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// 1 for the first event after an attach, then +1.
    pub seq: u64,
    /// The code (2-6).
    pub code: u32,
    /// MEMORY_READY: the low 32 bits of the round id; 0 otherwise.
    pub round: u32,
}

/// The attached listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Listener {
    /// The process that attached (usr_pid for FIND, the caller for REGISTER).
    pub pid: Pid,
    /// kernel->user eventfd.
    pub efd: EfdId,
    /// user->kernel eventfd.
    pub efd2: EfdId,
}

/// The outstanding round: published, neither acked nor abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Round {
    /// Its id: the `ready_seq` value it published.
    pub id: u64,
    /// Its MEMORY_READY reached the listener (or its doorbell was skipped).
    pub shown: bool,
}

/// What a parameter read must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamText {
    /// Exactly this text (with its newline).
    Exact(String),
    /// Some non-empty line (`last_error` after a refusal: its wording is
    /// the kernel's).
    NonEmpty,
}

impl ParamText {
    /// Whether `text` (as read) is what the model expects.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            ParamText::Exact(want) => text == want,
            ParamText::NonEmpty => !text.trim().is_empty(),
        }
    }
}

/// What the data buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Zeros: no round was filled since the module was loaded.
    Zeros,
    /// The pattern (byte i = i % 255).
    Pattern,
    /// The first fill may be under way: each byte is 0 or the pattern's.
    ZerosOrPattern,
}

/// An mmap() of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmapReq {
    /// Length in bytes (the kernel rounds it up to pages).
    pub len: u64,
    /// File offset.
    pub offset: u64,
    /// MAP_SHARED (else MAP_PRIVATE).
    pub shared: bool,
    /// PROT_WRITE.
    pub write: bool,
    /// PROT_EXEC.
    pub exec: bool,
}

/// What a write of a value to efd2 did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Rounds it closed (0 or 1).
    pub closed: u32,
    /// Acks ignored as late.
    pub late: u32,
    /// The value was no multiple of 7 and ignored whole.
    pub unexpected: bool,
}

/// The state of the world and of the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    // The environment (fixed for a run).
    mode: Mode,
    dev_noexec: bool,
    buffer_size: u64,

    // The world.
    procs: BTreeMap<Pid, Proc>,
    efd_counters: Vec<u64>,

    // The module.
    live: bool,
    usr_pid: i32,
    usr_efd: i32,
    usr_efd2: i32,
    cur_cmd: u32,
    period_ms: u32,
    back_to_back: bool,
    adaptive: bool,
    last_error: bool,
    listener: Option<Listener>,
    mmap_sent: bool,
    exit_sent: bool,
    testing: bool,
    /// Counter mode: not yet posted; queue mode: not yet read.
    queue: VecDeque<Event>,
    /// Counter mode: the event whose code sits in efd.
    in_flight: Option<Event>,
    next_seq: u64,
    ready_seq: u64,
    round: Option<Round>,
    /// A round STOP (or EXIT) abandoned before its ack: it keeps the
    /// buffer lent, so no round is published until its ack or a detach.
    lent: Option<Round>,
    counted: u64,
    late_acks: u64,
    doorbells_skipped: u64,
    /// Detaches the kernel logs as a listener's end (its process exited,
    /// or it closed an eventfd): one log line each.
    detach_lines: u64,
    spinning: bool,
    /// Acks through the control page (ABI 4): `ack_seq` as the listener
    /// last stored it (the module stores `ready_seq` there at attach).
    ack_seq: u64,
    /// The last `ack_seq` value the module took.
    ack_taken: u64,
    /// A change of `ack_seq` was taken since the attach: from then on
    /// efd2 values are doorbells only.
    page_acks: bool,
    /// `ack_seq` values the module ignored (out of range): one log line
    /// each.
    acks_out_of_range: u64,
    /// A ring channel's slots (0: no ring).
    ring_slots: u32,
    /// A ring's rounds published and not yet acked, oldest first, each
    /// with whether its ack counts (published in the current test).
    ring_out: VecDeque<(u64, bool)>,
}

/// The page size of the guests.
pub const PAGE_SIZE: u64 = 4096;

fn page_round(len: u64) -> u64 {
    len.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE)
}

impl Model {
    /// A world with the module not loaded yet. `dev_noexec`: /dev is
    /// mounted noexec (PROT_EXEC mappings of the device are EPERM).
    pub fn new(mode: Mode, dev_noexec: bool) -> Self {
        Model {
            mode,
            dev_noexec,
            buffer_size: DEFAULT_BUFFER_SIZE,
            procs: BTreeMap::new(),
            efd_counters: Vec::new(),
            live: false,
            usr_pid: 0,
            usr_efd: -1,
            usr_efd2: -1,
            cur_cmd: 0,
            period_ms: DEFAULT_PERIOD_MS,
            back_to_back: false,
            adaptive: false,
            last_error: false,
            listener: None,
            mmap_sent: false,
            exit_sent: false,
            testing: false,
            queue: VecDeque::new(),
            in_flight: None,
            next_seq: 1,
            ready_seq: 0,
            round: None,
            lent: None,
            counted: 0,
            late_acks: 0,
            doorbells_skipped: 0,
            detach_lines: 0,
            spinning: false,
            ack_seq: 0,
            ack_taken: 0,
            page_acks: false,
            acks_out_of_range: 0,
            ring_slots: 0,
            ring_out: VecDeque::new(),
        }
    }

    // ----- Observers -------------------------------------------------

    /// The event mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The module is loaded.
    pub fn live(&self) -> bool {
        self.live
    }
    /// The attached listener.
    pub fn listener(&self) -> Option<Listener> {
        self.listener
    }
    /// Test rounds are running.
    pub fn testing(&self) -> bool {
        self.testing
    }
    /// MMAP was sent to the attached listener.
    pub fn mmap_sent(&self) -> bool {
        self.mmap_sent
    }
    /// EXIT was sent to the attached listener.
    pub fn exit_sent(&self) -> bool {
        self.exit_sent
    }
    /// The outstanding round.
    pub fn round(&self) -> Option<Round> {
        self.round
    }
    /// A round STOP abandoned that still holds the buffer lent (the
    /// outstanding round, [`Model::round`], is lent too).
    pub fn lent(&self) -> Option<Round> {
        self.lent
    }
    /// `ready_seq` of the control page: rounds published since load.
    pub fn ready_seq(&self) -> u64 {
        self.ready_seq
    }
    /// How many detaches so far logged a listener's end ("listener pid N
    /// exited: detached" or "listener closed its eventfd: detached"); the
    /// other detaches (a new FIND, rmmod) log no such line.
    pub fn detach_lines(&self) -> u64 {
        self.detach_lines
    }

    /// `doorbells_skipped` of the control page.
    pub fn doorbells_skipped(&self) -> u64 {
        self.doorbells_skipped
    }
    /// `count` of the stats: rounds closed by an ack since START.
    pub fn counted(&self) -> u64 {
        self.counted
    }
    /// Acks ignored as late since load.
    pub fn late_acks(&self) -> u64 {
        self.late_acks
    }
    /// Events not yet delivered (queue mode: unread records; counter
    /// mode: not yet posted), oldest first.
    pub fn queue(&self) -> &VecDeque<Event> {
        &self.queue
    }
    /// Counter mode: the event whose code sits in efd.
    pub fn in_flight(&self) -> Option<Event> {
        self.in_flight
    }
    /// The buffer size (load time).
    pub fn buffer_size(&self) -> u64 {
        self.buffer_size
    }
    /// Set the buffer size (a created channel's, from its CREATE; the
    /// default channel's is the load-time parameter).
    pub fn set_buffer_size(&mut self, size: u64) {
        self.buffer_size = size;
    }
    /// `period_ms`.
    pub fn period_ms(&self) -> u32 {
        self.period_ms
    }
    /// `back_to_back`.
    pub fn back_to_back(&self) -> bool {
        self.back_to_back
    }
    /// `adaptive`.
    pub fn adaptive(&self) -> bool {
        self.adaptive
    }
    /// The control page says the listener spins.
    pub fn spinning(&self) -> bool {
        self.spinning
    }
    /// The control page's `ack_seq` (the listener's last store, or what
    /// the module stored at attach).
    pub fn ack_seq(&self) -> u64 {
        self.ack_seq
    }
    /// The last `ack_seq` value the module took (a ring's consumer index).
    pub fn ack_taken(&self) -> u64 {
        self.ack_taken
    }
    /// Acks go through the control page since the attach (efd2 values
    /// are doorbells).
    pub fn page_acks(&self) -> bool {
        self.page_acks
    }
    /// `ack_seq` values ignored as out of range so far (log lines).
    pub fn acks_out_of_range(&self) -> u64 {
        self.acks_out_of_range
    }
    /// A ring channel's slots (0: not a ring).
    pub fn ring_slots(&self) -> u32 {
        self.ring_slots
    }
    /// Make this (a created channel's model) a ring of `slots` slots.
    pub fn set_ring(&mut self, slots: u32) {
        self.ring_slots = slots;
    }
    /// A ring's rounds published and not acked, oldest first, with
    /// whether each counts when acked.
    pub fn ring_outstanding(&self) -> &VecDeque<(u64, bool)> {
        &self.ring_out
    }
    /// `last_error` is non-empty.
    pub fn last_error_set(&self) -> bool {
        self.last_error
    }
    /// A process of the world.
    pub fn proc(&self, pid: Pid) -> Option<&Proc> {
        self.procs.get(&pid)
    }
    /// The counter of an eventfd.
    pub fn efd_counter(&self, id: EfdId) -> u64 {
        self.efd_counters.get(id.0 as usize).copied().unwrap_or(0)
    }

    /// Eventfds created so far (the next one gets this id).
    pub fn eventfd_count(&self) -> usize {
        self.efd_counters.len()
    }

    fn alive(&self, pid: Pid) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.alive)
    }

    /// No live process holds an fd of this eventfd any more (its last
    /// fput ran: the EPOLLHUP wake-up).
    pub fn efd_released(&self, id: EfdId) -> bool {
        !self
            .procs
            .values()
            .any(|p| p.alive && p.fds.values().any(|k| *k == FdKind::Eventfd(id)))
    }

    /// Some live process has the device open or mapped (rmmod fails).
    pub fn device_in_use(&self) -> bool {
        self.procs
            .values()
            .any(|p| p.alive && (p.mappings > 0 || p.fds.values().any(|k| *k == FdKind::Device)))
    }

    /// What the data buffer holds.
    pub fn content(&self) -> Content {
        if self.ready_seq > 0 {
            Content::Pattern
        } else if self.testing {
            Content::ZerosOrPattern
        } else {
            Content::Zeros
        }
    }

    fn undelivered(&self) -> bool {
        !self.queue.is_empty() || self.in_flight.is_some()
    }

    fn free_slots(&self) -> u32 {
        EVENT_QUEUE_LEN.saturating_sub(self.queue.len() as u32)
    }

    // ----- The world -------------------------------------------------

    /// A new process with fds 0-2 open (not eventfds, not the device).
    pub fn spawn(&mut self, pid: Pid) {
        let fds = (0..3).map(|fd| (fd, FdKind::Other)).collect();
        self.procs.insert(
            pid,
            Proc {
                alive: true,
                fds,
                mappings: 0,
            },
        );
    }

    /// `pid` opened something that is neither an eventfd nor the device as `fd`.
    pub fn open_other(&mut self, pid: Pid, fd: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.fds.insert(fd, FdKind::Other);
        }
    }

    /// `pid` created a fresh eventfd (counter 0) as `fd`.
    pub fn new_eventfd(&mut self, pid: Pid, fd: i32) -> EfdId {
        let id = EfdId(self.efd_counters.len() as u32);
        self.efd_counters.push(0);
        if let Some(p) = self.procs.get_mut(&pid) {
            p.fds.insert(fd, FdKind::Eventfd(id));
        }
        id
    }

    /// `pid` opens the device as `fd`: ENOENT when the module is not loaded.
    pub fn open_device(&mut self, pid: Pid, fd: i32) -> Result<(), Errno> {
        if !self.live {
            return Err(Errno::ENOENT);
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            p.fds.insert(fd, FdKind::Device);
        }
        Ok(())
    }

    /// What `fd` of `pid` is.
    pub fn fd(&self, pid: Pid, fd: i32) -> Option<FdKind> {
        self.procs
            .get(&pid)
            .filter(|p| p.alive)
            .and_then(|p| p.fds.get(&fd).copied())
    }

    /// `pid` closes `fd`.
    pub fn close_fd(&mut self, pid: Pid, fd: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.fds.remove(&fd);
        }
    }

    /// `pid` dups `fd` as `newfd`.
    pub fn dup_fd(&mut self, pid: Pid, fd: i32, newfd: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            if let Some(k) = p.fds.get(&fd).copied() {
                p.fds.insert(newfd, k);
            }
        }
    }

    /// `parent` forks `child`: same fds, same mappings.
    pub fn fork(&mut self, parent: Pid, child: Pid) {
        if let Some(p) = self.procs.get(&parent).cloned() {
            self.procs.insert(child, p);
        }
    }

    /// `pid` exited (and was reaped): its fds closed, its mappings gone.
    pub fn exit(&mut self, pid: Pid) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.alive = false;
            p.fds.clear();
            p.mappings = 0;
        }
    }

    /// `pid` unmapped one of its mappings of the device.
    pub fn unmapped(&mut self, pid: Pid) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.mappings = p.mappings.saturating_sub(1);
        }
    }

    /// The control page's `listener_state` was set (spinning or asleep).
    pub fn set_spinning(&mut self, spinning: bool) {
        if self.live {
            self.spinning = spinning;
        }
    }

    // ----- The module: load and unload -------------------------------

    /// `insmod kern2usr.ko`: a fresh module (nothing attached, parameters
    /// at their defaults, a zeroed buffer and control page).
    pub fn insmod(&mut self) -> Result<(), Errno> {
        if self.live {
            return Err(Errno::EBUSY);
        }
        let world = (
            std::mem::take(&mut self.procs),
            std::mem::take(&mut self.efd_counters),
        );
        // The log outlives the module.
        let lines = self.detach_lines;
        *self = Model::new(self.mode, self.dev_noexec);
        (self.procs, self.efd_counters) = world;
        self.detach_lines = lines;
        self.live = true;
        Ok(())
    }

    /// `rmmod kern2usr`: fails (EAGAIN, "in use") while the device is
    /// open or mapped; else detaches and unloads.
    pub fn rmmod(&mut self) -> Result<(), Errno> {
        if !self.live {
            return Err(Errno::ENOENT);
        }
        if self.device_in_use() {
            return Err(Errno::EAGAIN);
        }
        self.detach();
        self.live = false;
        Ok(())
    }

    // ----- Parameters and commands -----------------------------------

    /// The expected text of a parameter read; ENOENT when not loaded.
    pub fn param_read(&self, name: &str) -> Result<ParamText, Errno> {
        if !self.live {
            return Err(Errno::ENOENT);
        }
        let line = |v: String| Ok(ParamText::Exact(format!("{v}\n")));
        match name {
            param::CUR_CMD => line(self.cur_cmd.to_string()),
            param::USR_PID => line(self.usr_pid.to_string()),
            param::USR_EFD => line(self.usr_efd.to_string()),
            param::USR_EFD2 => line(self.usr_efd2.to_string()),
            param::PERIOD_MS => line(self.period_ms.to_string()),
            param::BUFFER_SIZE => line(self.buffer_size.to_string()),
            param::BACK_TO_BACK => line(u8::from(self.back_to_back).to_string()),
            param::ADAPTIVE => line(u8::from(self.adaptive).to_string()),
            param::EVENT_MODE => line(self.mode.name().to_string()),
            param::LAST_ERROR if self.last_error => Ok(ParamText::NonEmpty),
            param::LAST_ERROR => line(String::new()),
            _ => Err(Errno::ENOENT),
        }
    }

    /// One `write()` of `bytes` to parameter `name`.
    pub fn param_write(&mut self, name: &str, bytes: &[u8]) -> Result<(), Errno> {
        if !self.live {
            return Err(Errno::ENOENT);
        }
        let writable = [
            param::CUR_CMD,
            param::USR_PID,
            param::USR_EFD,
            param::USR_EFD2,
            param::PERIOD_MS,
            param::BACK_TO_BACK,
            param::ADAPTIVE,
        ];
        let read_only = [
            param::BUFFER_SIZE,
            param::EVENT_MODE,
            param::LAST_ERROR,
            param::STATS,
            param::HISTOGRAM,
        ];
        if read_only.contains(&name) {
            return Err(Errno::EACCES);
        }
        if !writable.contains(&name) {
            return Err(Errno::ENOENT);
        }
        // sysfs answers an empty write itself.
        let Some(text) = kstrto::set_text(bytes) else {
            return Ok(());
        };
        match name {
            param::CUR_CMD => self.cur_cmd_write(text),
            param::USR_PID => {
                self.usr_pid = kstrto::kstrtoint(text)
                    .ok()
                    .filter(|&v| v >= 1)
                    .ok_or(Errno::EINVAL)?;
                Ok(())
            }
            param::USR_EFD | param::USR_EFD2 => {
                let v = kstrto::kstrtoint(text)
                    .ok()
                    .filter(|&v| v >= 0)
                    .ok_or(Errno::EINVAL)?;
                if name == param::USR_EFD {
                    self.usr_efd = v;
                } else {
                    self.usr_efd2 = v;
                }
                Ok(())
            }
            param::PERIOD_MS => {
                self.period_ms = kstrto::kstrtouint(text)
                    .ok()
                    .filter(|v| (1..=MAX_PERIOD_MS).contains(v))
                    .ok_or(Errno::EINVAL)?;
                Ok(())
            }
            _ => {
                let v = kstrto::kstrtobool(text, true).map_err(|_| Errno::EINVAL)?;
                if self.testing {
                    return Err(Errno::EBUSY);
                }
                if name == param::BACK_TO_BACK {
                    self.back_to_back = v;
                } else {
                    self.adaptive = v;
                }
                Ok(())
            }
        }
    }

    fn cur_cmd_write(&mut self, text: &[u8]) -> Result<(), Errno> {
        let result = match kstrto::kstrtouint(text) {
            Err(_) => Err(Errno::EINVAL),
            Ok(cmd) if !(1..=5).contains(&cmd) => Err(Errno::EINVAL),
            Ok(cmd) => self.run(cmd).map(|()| cmd),
        };
        match result {
            Ok(cmd) => {
                self.cur_cmd = cmd;
                self.last_error = false;
                Ok(())
            }
            Err(e) => {
                self.last_error = true;
                Err(e)
            }
        }
    }

    /// The attached listener's process exited: detach (the module checks
    /// at every command, FIND, REGISTER, ACK and round).
    fn dead_check(&mut self) {
        if let Some(l) = self.listener {
            if !self.alive(l.pid) {
                self.detach();
                self.detach_lines += 1;
            }
        }
    }

    fn run(&mut self, cmd: u32) -> Result<(), Errno> {
        if cmd == Code::Find.value() {
            return self.find();
        }
        self.dead_check();
        if self.listener.is_none() || self.exit_sent {
            return Err(Errno::EPROTO);
        }
        let code = Code::from_value(u64::from(cmd)).ok_or(Errno::EINVAL)?;
        // The queue's room comes before the state checks.
        self.need_room(match code {
            Code::ExitTest => 1,
            Code::StopTest => EVENT_QUEUE_RESERVE,
            _ => EVENT_QUEUE_RESERVE + 1,
        })?;
        match code {
            Code::Mmap => {
                if self.testing {
                    return Err(Errno::EBUSY);
                }
                self.post(code.value(), 0);
                self.mmap_sent = true;
            }
            Code::StartTest => {
                if !self.mmap_sent {
                    return Err(Errno::EPROTO);
                }
                if self.testing {
                    return Err(Errno::EBUSY);
                }
                self.post(code.value(), 0);
                self.testing = true;
                self.counted = 0;
                self.round = None;
            }
            Code::StopTest => {
                if !self.testing {
                    return Err(Errno::EPROTO);
                }
                self.stop();
                self.post(code.value(), 0);
            }
            Code::ExitTest => {
                self.stop();
                self.post(code.value(), 0);
                self.exit_sent = true;
            }
            _ => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    fn need_room(&self, slots: u32) -> Result<(), Errno> {
        if self.free_slots() >= slots {
            Ok(())
        } else {
            Err(Errno::EAGAIN)
        }
    }

    fn find(&mut self) -> Result<(), Errno> {
        let (pid, fd1, fd2) = (self.usr_pid, self.usr_efd, self.usr_efd2);
        if pid <= 0 || fd1 < 0 || fd2 < 0 {
            return Err(Errno::EINVAL);
        }
        if fd1 == fd2 {
            return Err(Errno::EINVAL);
        }
        self.dead_check();
        if self.testing {
            return Err(Errno::EBUSY);
        }
        if !self.alive(pid) {
            return Err(Errno::ESRCH);
        }
        // EPERM (ptrace_may_access) cannot happen: the writer is root.
        let k1 = self.fd(pid, fd1).ok_or(Errno::EBADF)?;
        let k2 = self.fd(pid, fd2).ok_or(Errno::EBADF)?;
        let (FdKind::Eventfd(e1), FdKind::Eventfd(e2)) = (k1, k2) else {
            return Err(Errno::EINVAL);
        };
        self.attach(pid, e1, e2)
    }

    fn attach(&mut self, pid: Pid, efd: EfdId, efd2: EfdId) -> Result<(), Errno> {
        if efd == efd2 {
            return Err(Errno::EINVAL);
        }
        let exit_sent = self.exit_sent;
        if let Some(l) = &mut self.listener {
            if l.efd == efd && l.efd2 == efd2 && !exit_sent {
                // Re-attach: everything is kept but the pid.
                l.pid = pid;
                return Ok(());
            }
            if self.undelivered() {
                return Err(Errno::EBUSY);
            }
        }
        if self.mode == Mode::Counter && self.efd_counter(efd) != 0 {
            return Err(Errno::EINVAL);
        }
        self.detach();
        self.listener = Some(Listener { pid, efd, efd2 });
        self.next_seq = 1;
        self.reset_page_acks();
        Ok(())
    }

    /// At every attach and detach: `ack_seq` and the value taken are
    /// `ready_seq` (nothing outstanding), page acks off.
    fn reset_page_acks(&mut self) {
        self.ack_seq = self.ready_seq;
        self.ack_taken = self.ready_seq;
        self.page_acks = false;
        self.ring_out.clear();
    }

    /// Forget the listener: the test stops, its round is abandoned, its
    /// undelivered events are dropped; its eventfd counters are untouched.
    fn detach(&mut self) {
        let Some(l) = self.listener.take() else {
            return;
        };
        // Acks are consumed: efd2 is drained; efd is never touched.
        if let Some(c) = self.efd_counters.get_mut(l.efd2.0 as usize) {
            *c = 0;
        }
        self.stop();
        self.lent = None;
        self.queue.clear();
        self.in_flight = None;
        self.mmap_sent = false;
        self.exit_sent = false;
        // A ring's outstanding rounds are returned.
        self.reset_page_acks();
    }

    /// The test ends: an outstanding round is abandoned (no ack counts
    /// it), but it stays lent until its ack or a detach.
    fn stop(&mut self) {
        // A ring takes the acks stored so far first: they still count.
        if self.ring_slots > 0 && self.testing {
            self.take_ack_seq();
        }
        self.testing = false;
        if let Some(r) = self.round.take() {
            self.lent = Some(r);
        }
        // A ring's outstanding rounds stay lent (their slots are not
        // refilled) until acked, but no longer count.
        for r in &mut self.ring_out {
            r.1 = false;
        }
    }

    /// An ack that names the abandoned lent round (by `id`, or plainly
    /// once it was shown) ends its lend; it still counts nothing.
    fn return_lent(&mut self, id: Option<u32>) {
        if let Some(r) = self.lent {
            if id.map_or(r.shown, |id| r.id as u32 == id) {
                self.lent = None;
            }
        }
    }

    fn post(&mut self, code: u32, round: u32) {
        let Some(l) = self.listener else { return };
        let ev = Event {
            seq: self.next_seq,
            code,
            round,
        };
        self.next_seq += 1;
        match self.mode {
            Mode::Queue => {
                self.queue.push_back(ev);
                self.add_to_efd(l.efd, 1);
            }
            Mode::Counter => {
                if self.in_flight.is_none() {
                    self.in_flight = Some(ev);
                    self.add_to_efd(l.efd, u64::from(code));
                } else {
                    self.queue.push_back(ev);
                }
            }
        }
    }

    fn add_to_efd(&mut self, id: EfdId, v: u64) {
        if let Some(c) = self.efd_counters.get_mut(id.0 as usize) {
            *c = c.saturating_add(v);
        }
    }

    fn show(&mut self, round: u32) {
        // An abandoned round's MEMORY_READY may still be read.
        for r in [&mut self.round, &mut self.lent].into_iter().flatten() {
            if r.id as u32 == round {
                r.shown = true;
            }
        }
    }

    // ----- The listener's side ---------------------------------------

    /// `read()` of an eventfd: the counter (then 0), or `None` when it is
    /// 0 (EAGAIN, or a blocking read would wait). In counter mode a read
    /// of the attached efd consumes the posted code (showing a
    /// MEMORY_READY's round) and lets the module post the next one.
    pub fn efd_read(&mut self, id: EfdId) -> Option<u64> {
        let v = self.efd_counter(id);
        if v == 0 {
            return None;
        }
        if let Some(c) = self.efd_counters.get_mut(id.0 as usize) {
            *c = 0;
        }
        let attached_efd = self.live && self.listener.is_some_and(|l| l.efd == id);
        if self.mode == Mode::Counter && attached_efd {
            if let Some(ev) = self.in_flight.take() {
                if ev.code == Code::MemoryReady.value() {
                    self.show(ev.round);
                }
            }
            if let Some(next) = self.queue.pop_front() {
                self.in_flight = Some(next);
                self.add_to_efd(id, u64::from(next.code));
            }
        }
        Some(v)
    }

    /// `write()` of `value` to an eventfd. On the attached efd2 the module
    /// takes it at once: a multiple of 7 counts as that many acks.
    pub fn efd_write(&mut self, id: EfdId, value: u64) -> AckOutcome {
        self.add_to_efd(id, value);
        let attached_efd2 = self.live && self.listener.is_some_and(|l| l.efd2 == id);
        let mut out = AckOutcome::default();
        if !attached_efd2 {
            return out;
        }
        let v = self.efd_counter(id);
        if let Some(c) = self.efd_counters.get_mut(id.0 as usize) {
            *c = 0;
        }
        // Every efd2 wake-up looks at ack_seq first.
        out.closed += self.take_ack_seq();
        if !v.is_multiple_of(7) {
            out.unexpected = true;
            return out;
        }
        if self.page_acks || self.ring_slots > 0 {
            // A doorbell only ("look at ack_seq").
            return out;
        }
        for _ in 0..v / 7 {
            if self.round.is_some_and(|r| r.shown) {
                self.close_round();
                out.closed += 1;
            } else {
                self.late_acks += 1;
                out.late += 1;
                self.return_lent(None);
            }
        }
        out
    }

    fn close_round(&mut self) {
        self.round = None;
        self.counted += 1;
    }

    /// The listener stores `v` in the control page's `ack_seq`. Nothing
    /// happens until the module looks (an efd2 wake-up, or a ring's next
    /// fill).
    pub fn store_ack_seq(&mut self, v: u64) {
        if self.live {
            self.ack_seq = v;
        }
    }

    /// The module looks at `ack_seq`: a value other than the last one
    /// taken is taken if in range, which turns page acks on. Not a ring:
    /// the open round's id closes it (as `K2U_IOC_ACK_ROUND`), an older
    /// round's id ends a lend (or nothing); a ring: every round up to it
    /// is acked (those of the current test counted). Out of range (behind
    /// the last value taken, beyond `ready_seq`): ignored, one log line.
    /// The rounds it closed.
    pub fn take_ack_seq(&mut self) -> u32 {
        let v = self.ack_seq;
        if !self.live || self.listener.is_none() || v == self.ack_taken {
            return 0;
        }
        if v < self.ack_taken || v > self.ready_seq {
            self.acks_out_of_range += 1;
            return 0;
        }
        self.page_acks = true;
        self.ack_taken = v;
        let mut closed = 0;
        if self.ring_slots > 0 {
            while let Some(&(id, counts)) = self.ring_out.front() {
                if id > v {
                    break;
                }
                self.ring_out.pop_front();
                if counts {
                    self.counted += 1;
                    closed += 1;
                }
            }
        } else if self.round.is_some_and(|r| r.id == v) {
            self.close_round();
            closed += 1;
        } else if self.lent.is_some_and(|r| r.id == v) {
            self.lent = None;
        }
        closed
    }

    /// `read()` of `len` bytes from the device (queue mode records).
    /// A read of an empty queue is EAGAIN (the fuzzer only reads
    /// O_NONBLOCK when the model says the queue is empty).
    pub fn read_records(&mut self, len: usize) -> Result<Vec<Event>, Errno> {
        if self.mode == Mode::Counter || len < 16 {
            return Err(Errno::EINVAL);
        }
        if self.queue.is_empty() {
            return Err(Errno::EAGAIN);
        }
        let n = (len / 16).min(self.queue.len());
        let out: Vec<Event> = self.queue.drain(..n).collect();
        for ev in &out {
            if ev.code == Code::MemoryReady.value() {
                self.show(ev.round);
            }
        }
        Ok(out)
    }

    /// `K2U_IOC_ACK`.
    pub fn ioctl_ack(&mut self) -> Result<(), Errno> {
        if self.ring_slots > 0 {
            // "ring channel: acks go through ack_seq".
            return Err(Errno::EOPNOTSUPP);
        }
        self.dead_check();
        match self.round {
            None => {
                self.return_lent(None);
                Err(Errno::EPROTO)
            }
            Some(r) if !r.shown => {
                self.late_acks += 1;
                Err(Errno::ESTALE)
            }
            Some(_) => {
                self.close_round();
                Ok(())
            }
        }
    }

    /// `K2U_IOC_ACK_ROUND(id)`.
    pub fn ioctl_ack_round(&mut self, id: u32) -> Result<(), Errno> {
        if self.ring_slots > 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        self.dead_check();
        match self.round {
            None => {
                self.return_lent(Some(id));
                Err(Errno::EPROTO)
            }
            Some(r) if r.id as u32 != id => Err(Errno::ESTALE),
            Some(_) => {
                self.close_round();
                Ok(())
            }
        }
    }

    /// `K2U_IOC_REGISTER` by `caller` naming its fds `efd` and `efd2`.
    pub fn ioctl_register(&mut self, caller: Pid, efd: i32, efd2: i32) -> Result<(), Errno> {
        if !self.live {
            return Err(Errno::ENODEV);
        }
        let r = self.register(caller, efd, efd2);
        self.last_error = r.is_err();
        r
    }

    fn register(&mut self, caller: Pid, efd: i32, efd2: i32) -> Result<(), Errno> {
        let k1 = self.fd(caller, efd).ok_or(Errno::EBADF)?;
        let k2 = self.fd(caller, efd2).ok_or(Errno::EBADF)?;
        self.dead_check();
        if self.testing {
            return Err(Errno::EBUSY);
        }
        let (FdKind::Eventfd(e1), FdKind::Eventfd(e2)) = (k1, k2) else {
            return Err(Errno::EINVAL);
        };
        self.attach(caller, e1, e2)?;
        self.usr_pid = caller;
        self.usr_efd = efd;
        self.usr_efd2 = efd2;
        Ok(())
    }

    /// `K2U_IOC_INFO`: (abi version, event mode, buffer size, period_ms).
    pub fn ioctl_info(&self) -> (u32, u32, u64, u32) {
        (
            ABI_VERSION,
            self.mode as u32,
            self.buffer_size,
            self.period_ms,
        )
    }

    /// `K2U_IOC_READ_BUFFER` of `len` bytes to a valid address: the
    /// bytes copied.
    pub fn ioctl_read_buffer(&self, len: u64) -> u64 {
        len.min(self.buffer_size)
    }

    /// `mmap()` of the device; on success `pid` holds one more mapping.
    pub fn mmap(&mut self, pid: Pid, req: MmapReq) -> Result<(), Errno> {
        if req.len == 0 {
            return Err(Errno::EINVAL);
        }
        if req.exec && self.dev_noexec {
            return Err(Errno::EPERM);
        }
        let len = page_round(req.len);
        if req.offset == 0 {
            if len > self.buffer_size * u64::from(self.ring_slots.max(1)) {
                return Err(Errno::EINVAL);
            }
        } else if req.offset == CTRL_MMAP_OFFSET {
            if len > PAGE_SIZE || !req.shared {
                return Err(Errno::EINVAL);
            }
        } else {
            return Err(Errno::EINVAL);
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            p.mappings += 1;
        }
        Ok(())
    }

    /// `mremap()` of a mapping of the device to a larger size: a mapping
    /// of the module cannot grow.
    pub fn mremap_grow(&self) -> Result<(), Errno> {
        Err(Errno::EFAULT)
    }

    // ----- What the kernel does on its own time ----------------------

    /// Whether the kernel may publish a round now. A ring: while a slot
    /// is free (after taking `ack_seq`, which the module looks at before
    /// every fill); never overwriting an outstanding round.
    pub fn can_publish(&self) -> bool {
        let room = if self.ring_slots > 0 {
            let v = self.ack_seq;
            let taken = if v > self.ack_taken && v <= self.ready_seq {
                v
            } else {
                self.ack_taken
            };
            self.ready_seq + 1 - taken <= u64::from(self.ring_slots)
        } else {
            self.round.is_none() && self.lent.is_none()
        };
        self.live
            && self.testing
            && room
            && self.listener.is_some_and(|l| self.alive(l.pid))
            && self.free_slots() > EVENT_QUEUE_RESERVE
    }

    /// The kernel published a round (its timer fired, or the last ack came
    /// in back-to-back mode): `ready_seq` moves, MEMORY_READY is posted
    /// unless adaptive mode skips the doorbell for a spinning listener.
    pub fn publish(&mut self) -> Result<(), String> {
        if !self.can_publish() {
            return Err(format!(
                "no round can be published now (live {}, testing {}, round {:?}, lent {:?}, listener {:?}, free slots {})",
                self.live,
                self.testing,
                self.round,
                self.lent,
                self.listener,
                self.free_slots()
            ));
        }
        if self.ring_slots > 0 {
            // The fill looks at ack_seq first.
            self.take_ack_seq();
            self.ready_seq += 1;
            let id = self.ready_seq;
            self.ring_out.push_back((id, true));
            // The adaptive rule, always.
            if self.spinning {
                self.doorbells_skipped += 1;
            } else {
                self.post(Code::MemoryReady.value(), id as u32);
            }
            return Ok(());
        }
        self.ready_seq += 1;
        let id = self.ready_seq;
        let skip = self.adaptive && self.spinning;
        // In adaptive mode the control page shows every round at once.
        self.round = Some(Round {
            id,
            shown: self.adaptive,
        });
        if skip {
            self.doorbells_skipped += 1;
        } else {
            self.post(Code::MemoryReady.value(), id as u32);
        }
        Ok(())
    }

    /// Whether the kernel may detach the listener on its own now: it
    /// closed an eventfd for good, or its process exited while rounds run.
    pub fn can_detach_async(&self) -> bool {
        self.live
            && self.listener.is_some_and(|l| {
                self.efd_released(l.efd)
                    || self.efd_released(l.efd2)
                    || (!self.alive(l.pid) && self.testing)
            })
    }

    /// The kernel detached the listener on its own (EPOLLHUP, or a round
    /// found its process gone).
    pub fn detach_async(&mut self) -> Result<(), String> {
        if !self.can_detach_async() {
            return Err(format!(
                "the listener cannot be detached now (listener {:?}, testing {})",
                self.listener, self.testing
            ));
        }
        self.detach();
        self.detach_lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
