//! The channel side of the fuzzer: channels the fuzzer process creates
//! and owns (one device file, two eventfds and its mappings per channel
//! slot), run for real and on the channel model
//! (`kern2usr_model::channels`), compared after every operation.
//!
//! After every op (a channel op or not) each channel whose file is open
//! is observed with `K2U_IOC_CHANNEL_STATS`: its rounds published and
//! counted. The model applies the rounds the kernel published on its own
//! time as explicit steps: for the op's own channel in every order around
//! the op, for the others after it (they do not interact). The data of a
//! round is checked byte by byte against `channel_pattern_byte(id,
//! round, i)`.
//!
//! With a module that has ring channels and page acks (ABI 4: its
//! `ack_poll_us` parameter exists), rings are created too and `ch.ackseq`
//! stores `ack_seq` through a (transient) mapping of the control page,
//! then rings the efd2 doorbell. A ring's check reads the control page's
//! `ready_seq` first: every round after the highest `ack_seq` stored (the
//! module can have taken no more) up to it is outstanding, so its slot
//! must hold exactly that round's bytes and the slot table its id and
//! length.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kern2usr::abi::{
    self, channel_pattern_byte, param, ChannelStats, Create, Ctrl, Info, ReadBuffer, Register,
    DEFAULT_BUFFER_SIZE, DEVICE_PATH, PARAMS_DIR,
};
use kern2usr::{Device, EventFd};
use kern2usr_model::channels::{Channels, EfdArg, FileId, ListEntry};
use kern2usr_model::{Errno, MmapReq, Mode, Pid};

use super::chanop::{ChanOp, EfdPick, MapLen, SlotView, CHAN_MMAPS, CHAN_SLOTS};
use super::op::RoundPick;
use super::profile::Profile;
use crate::guest;
use kern2usr::abi::{RingSlot, CREATE_RING, CTRL_MMAP_OFFSET};

/// Most candidate channel models kept at once.
const MAX_CANDIDATES: usize = 16;
/// Rounds past the one before an op that a data check tells apart.
const WINDOW: u64 = 3;

/// A mapping of a channel's file.
struct ChanMap {
    addr: *mut u8,
    len: usize,
    data: bool,
}

impl Drop for ChanMap {
    fn drop(&mut self) {
        // SAFETY: addr/len are a mapping this process made with mmap()
        // and nothing else refers to it (ChanMap owns it).
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

impl ChanMap {
    /// The mapping's bytes, each read once with a volatile load (the
    /// kernel may be filling the buffer meanwhile).
    fn bytes(&self) -> Vec<u8> {
        (0..self.len)
            // SAFETY: i < len, inside the live mapping; a volatile read
            // of a byte the kernel may write concurrently.
            .map(|i| unsafe { std::ptr::read_volatile(self.addr.add(i)) })
            .collect()
    }

    /// The control page's `ready_seq`.
    fn ready_seq(&self) -> u64 {
        // SAFETY: a control page mapping is a page long, Ctrl fits in it
        // and ready_seq is 8-byte aligned at its start (page aligned).
        unsafe {
            std::ptr::read_volatile(
                self.addr
                    .add(std::mem::offset_of!(Ctrl, ready_seq))
                    .cast::<u64>(),
            )
        }
    }
}

/// One channel slot: a device file (None once closed), its eventfds and
/// mappings.
struct ChanSlot {
    file: FileId,
    dev: Option<Device>,
    efd: EventFd,
    efd2: EventFd,
    /// Model objects of efd and efd2.
    objs: (u32, u32),
    /// The channel's id once CREATE succeeded.
    id: Option<u32>,
    /// Its buffer size (a ring's slot size).
    size: u64,
    /// A ring's slots (0: not a ring).
    ring: u32,
    /// The highest value stored in `ack_seq` so far.
    hi: u64,
    maps: Vec<ChanMap>,
}

impl ChanSlot {
    /// Bytes of the data buffer (a ring's: every slot).
    fn data_size(&self) -> u64 {
        self.size * u64::from(self.ring.max(1))
    }

    /// A transient shared read-write mapping of the control page.
    fn map_ctrl(&self) -> Result<ChanMap> {
        let fd = self.dev.as_ref().context("no file")?.as_raw_fd();
        // SAFETY: a new mapping chosen by the kernel (addr NULL); nothing
        // of ours is replaced.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                CTRL_MMAP_OFFSET as i64,
            )
        };
        if addr == libc::MAP_FAILED {
            bail!("mapping the control page: errno {}", os_err());
        }
        Ok(ChanMap {
            addr: addr.cast(),
            len: 4096,
            data: false,
        })
    }
}

impl ChanMap {
    /// A `u64` field of a control page mapping, as an atomic.
    fn ctrl_u64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(!self.data && offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: a control page mapping is a page long and page aligned;
        // the Ctrl fields asked for are 8-byte aligned u64s inside it,
        // shared with the kernel, which accesses them atomically
        // (READ_ONCE/WRITE_ONCE, acquire/release), as AtomicU64 does. The
        // reference lives no longer than the mapping (borrowed from it).
        unsafe { &*self.addr.add(offset).cast::<AtomicU64>() }
    }

    /// Entry `k` of the control page's ring slot table.
    fn ring_slot(&self, k: usize) -> Option<RingSlot> {
        let at = std::mem::offset_of!(Ctrl, slots) + k * std::mem::size_of::<RingSlot>();
        if at + std::mem::size_of::<RingSlot>() > self.len {
            return None;
        }
        Some(RingSlot {
            round: self.ctrl_u64(at).load(Ordering::Acquire),
            len: self.ctrl_u64(at + 8).load(Ordering::Acquire),
        })
    }
}

/// A ring's check: every round after `hi` up to the control page's
/// `ready_seq` is outstanding, so its slot in each data mapping that holds
/// it whole must show exactly its bytes, and the slot table its id and
/// length. `ring ok <n>` (slots checked) or `ring bad ...`.
fn check_ring(s: &ChanSlot, id: u32) -> Result<String> {
    if s.dev.is_none() {
        // The file is closed (the mappings keep the channel): no control
        // page to map any more.
        return Ok("ring ok 0".to_owned());
    }
    let ctrl = s.map_ctrl()?;
    let ready = ctrl
        .ctrl_u64(std::mem::offset_of!(Ctrl, ready_seq))
        .load(Ordering::Acquire);
    let (slots, size) = (u64::from(s.ring), s.size as usize);
    let mut checked = 0;
    for r in s.hi + 1..=ready {
        let k = ((r - 1) % slots) as usize;
        match ctrl.ring_slot(k) {
            Some(e) if e.round == r && e.len == s.size => {}
            e => return Ok(format!("ring bad: round {r}: slot {k} table {e:?}")),
        }
        for m in s.maps.iter().filter(|m| m.data && m.len >= (k + 1) * size) {
            let bad = (0..size).find(|&i| {
                // SAFETY: slot k lies inside the live mapping (checked
                // above); a volatile read of a byte the kernel does not
                // write while the round is outstanding.
                let b = unsafe { std::ptr::read_volatile(m.addr.add(k * size + i)) };
                b != channel_pattern_byte(id, r, i)
            });
            if let Some(i) = bad {
                return Ok(format!("ring bad: round {r}: slot {k} byte {i}"));
            }
            checked += 1;
        }
    }
    Ok(format!("ring ok {checked}"))
}

/// Facts an execution learned, the same for every candidate.
#[derive(Clone, Debug, Default)]
pub struct ChanFacts {
    /// The op's file.
    file: FileId,
    /// The file was opened by the op.
    opened: bool,
    /// CREATE's eventfd arguments.
    efds: Option<(EfdArg, EfdArg)>,
    /// The round id an ACK_ROUND named.
    round: u32,
    /// The target channel's id before the op (its rounds are ordered
    /// around the op).
    target: Option<u32>,
    /// ready_seq of the target before the op.
    r0: u64,
    /// The value `ch.ackseq` stored.
    ack: u64,
    /// The forked process of `ch.foreign`.
    other: Pid,
}

/// What the channel model expects an observation to be.
#[derive(Clone, Debug)]
enum CExpect {
    /// This line.
    Exact(String),
    /// `maps ...`: data masks per mapping, checked against the rounds.
    Maps,
    /// `rb <n> e<mask>`.
    ReadBuf(u64),
    /// The listing and the limits.
    Listing(Vec<ListEntry>, u32, u64),
    /// A ring's check passed (`ring ok <n>`).
    RingOk,
}

/// Masks of a buffer against rounds r0..r0+WINDOW: bit k of `exact` when
/// every byte is round r0+k's; bit k of `mixed` when every byte is round
/// r0+k's or r0+k+1's (round 0: zeros, the buffer before any fill).
fn masks(data: &[u8], id: u32, r0: u64) -> (u8, u8) {
    let byte = |r: u64, i: usize| {
        if r == 0 {
            0
        } else {
            channel_pattern_byte(id, r, i)
        }
    };
    let mut exact = 0u8;
    let mut mixed = 0u8;
    for k in 0..WINDOW {
        let r = r0 + k;
        if data.iter().enumerate().all(|(i, &b)| b == byte(r, i)) {
            exact |= 1 << k;
        }
        if data
            .iter()
            .enumerate()
            .all(|(i, &b)| b == byte(r, i) || b == byte(r + 1, i))
        {
            mixed |= 1 << k;
        }
    }
    (exact, mixed)
}

/// A data mapping read without the channel's lock shows round r0+d (d:
/// rounds published during the op) or a fill in progress that was
/// published before the op's observation.
fn data_ok(exact: u8, mixed: u8, d: u64) -> bool {
    (d < 8 && exact & (1 << d) != 0) || (0..d.min(8)).any(|k| mixed & (1 << k) != 0)
}

fn parse_mask(s: &str) -> Option<(u8, u8)> {
    let rest = s.strip_prefix('e')?;
    let (e, m) = rest.split_once('m')?;
    Some((e.parse().ok()?, m.parse().ok()?))
}

impl CExpect {
    fn matches(&self, obs: &str, d: u64, lo_rounds: &BTreeMap<u32, u64>) -> bool {
        match self {
            CExpect::Exact(s) => s == obs,
            CExpect::RingOk => obs.starts_with("ring ok "),
            CExpect::Maps => {
                let Some(rest) = obs.strip_prefix("maps ") else {
                    return false;
                };
                rest == "-"
                    || rest.split(',').all(|m| {
                        if let Some(k) = m.strip_prefix('C') {
                            return k.parse::<u64>().is_ok_and(|k| k <= d);
                        }
                        parse_mask(m).is_some_and(|(e, x)| data_ok(e, x, d))
                    })
            }
            CExpect::ReadBuf(n) => {
                let w: Vec<&str> = obs.split_whitespace().collect();
                w.len() == 3
                    && w[0] == "rb"
                    && w[1] == n.to_string()
                    && (*n == 0
                        || parse_mask(w[2])
                            .is_some_and(|(e, _)| (0..=d.min(7)).any(|k| e & (1 << k) != 0)))
            }
            CExpect::Listing(want, max, mem) => {
                let mut parts = obs.splitn(3, '|');
                let (Some(m), Some(g), Some(text)) = (parts.next(), parts.next(), parts.next())
                else {
                    return false;
                };
                if m != max.to_string() || g != mem.to_string() {
                    return false;
                }
                let Ok(list) = kern2usr::listing::parse_channels(text) else {
                    return false;
                };
                let Some((first, rest)) = list.split_first() else {
                    return false;
                };
                first.id == 0
                    && first.buffer_size == DEFAULT_BUFFER_SIZE
                    && rest.len() == want.len()
                    && rest.iter().zip(want).all(|(got, w)| {
                        got.id == w.id
                            && got.name.as_deref().unwrap_or("-") == w.name
                            && got.owner == Some(w.owner as u32)
                            && got.buffer_size == w.buffer_size
                            && got.event_mode.name() == w.mode
                            && got.pacing.to_string() == w.pacing
                            // The count may trail an ack by a work item;
                            // a channel no longer observed is not checked.
                            && lo_rounds.get(&w.id).is_none_or(|lo| {
                                got.rounds >= *lo && got.rounds <= w.rounds
                            })
                    })
            }
        }
    }
}

impl std::fmt::Display for CExpect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CExpect::Exact(s) => write!(f, "{s:?}"),
            CExpect::Maps => write!(f, "maps of the rounds published"),
            CExpect::RingOk => write!(f, "every outstanding slot intact (ring ok)"),
            CExpect::ReadBuf(n) => write!(f, "rb {n} of a round published"),
            CExpect::Listing(l, m, g) => write!(f, "listing {l:?}, limits {m} {g}"),
        }
    }
}

fn res(r: Result<(), Errno>) -> String {
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("err {}", e.raw()),
    }
}

fn os_err() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// One ioctl with a pointer argument: its return value or the errno.
///
/// # Safety
///
/// `arg` must point at what `req` reads or writes, valid for the call.
unsafe fn ioctl_ptr(fd: RawFd, req: u32, arg: *mut libc::c_void) -> Result<i32, i32> {
    // SAFETY: the caller's contract; the fd is an open fd of ours.
    let r = unsafe { libc::ioctl(fd, req as libc::Ioctl, arg) };
    if r < 0 {
        Err(os_err())
    } else {
        Ok(r)
    }
}

fn ires(r: Result<i32, i32>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("err {e}"),
    }
}

/// The model's answer for an ioctl the fuzzer answers as `ires`.
fn mres(r: Result<(), Errno>) -> String {
    res(r)
}

fn mmap_req(len: u64, offset: u64, shared: bool, write: bool) -> MmapReq {
    MmapReq {
        len,
        offset,
        shared,
        write,
        exec: false,
    }
}

fn map_len(l: MapLen, size: u64) -> u64 {
    match l {
        MapLen::Whole => size,
        MapLen::Page => 4096,
        MapLen::Over => size + 4096,
        MapLen::Zero => 0,
    }
}

fn read_text(name: &str) -> Result<String> {
    let path = Path::new(PARAMS_DIR).join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn write_param(name: &str, bytes: &[u8]) -> String {
    use std::io::Write;
    let path = Path::new(PARAMS_DIR).join(name);
    let mut file = match std::fs::OpenOptions::new().write(true).open(&path) {
        Ok(f) => f,
        Err(e) => return format!("err {}", e.raw_os_error().unwrap_or(0)),
    };
    match file.write(bytes) {
        Ok(n) if n == bytes.len() => "ok".to_owned(),
        Ok(n) => format!("short write {n}"),
        Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
    }
}

/// The channel side of a run.
pub struct ChanSide {
    /// The module has ring channels and page acks (ABI 4).
    rings: bool,
    slots: Vec<Option<ChanSlot>>,
    cands: Vec<Channels>,
    me: Pid,
    mode: Mode,
    noexec: bool,
    next_file: FileId,
    next_obj: u32,
}

impl ChanSide {
    /// No channels, the limits at their defaults.
    pub fn new(me: Pid, mode: Mode, noexec: bool) -> Self {
        ChanSide {
            rings: Path::new(PARAMS_DIR).join(param::ACK_POLL_US).exists(),
            slots: (0..CHAN_SLOTS).map(|_| None).collect(),
            cands: vec![Channels::new(mode, noexec)],
            me,
            mode,
            noexec,
            next_file: 1,
            next_obj: 1,
        }
    }

    /// The module was loaded again: no channels, default limits.
    pub fn reset(&mut self) {
        self.close_all();
        self.cands = vec![Channels::new(self.mode, self.noexec)];
    }

    /// Close every channel file and mapping (before an rmmod).
    pub fn close_all(&mut self) {
        for s in &mut self.slots {
            if let Some(mut slot) = s.take() {
                slot.maps.clear();
                slot.dev = None;
            }
        }
    }

    /// The module has ring channels and page acks: the generator draws
    /// them.
    pub fn rings(&self) -> bool {
        self.rings
    }

    /// Some channel file is open or mapped (the module is in use).
    pub fn in_use(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }

    /// What the generator needs.
    pub fn view(&self) -> [SlotView; CHAN_SLOTS as usize] {
        let mut v = [SlotView::Empty; CHAN_SLOTS as usize];
        for (i, s) in self.slots.iter().enumerate() {
            v[i] = match s {
                None => SlotView::Empty,
                Some(s) if s.dev.is_none() => SlotView::Mapped,
                Some(s) if s.id.is_none() => SlotView::Plain,
                Some(s) => SlotView::Open {
                    maps: s.maps.len(),
                    ring: s.ring > 0,
                },
            };
        }
        v
    }

    /// Whether the op can run now.
    pub fn runnable(&self, op: &ChanOp) -> bool {
        let Some(c) = op.slot() else { return true };
        let s = self.slots[c as usize].as_ref();
        let open = s.is_some_and(|s| s.dev.is_some());
        let chan = open && s.is_some_and(|s| s.id.is_some());
        match op {
            ChanOp::Create(..) => s.is_none() || (open && !chan),
            ChanOp::Cmd(..) | ChanOp::Stats(_) | ChanOp::Close(_) => open,
            ChanOp::Munmap(_) | ChanOp::Check(_) => s.is_some_and(|s| s.id.is_some()),
            _ => chan,
        }
    }

    fn slot(&mut self, c: u8) -> Result<&mut ChanSlot> {
        self.slots[c as usize]
            .as_mut()
            .context("internal: no channel in this slot")
    }

    fn new_efds(&mut self) -> Result<(EventFd, EventFd, (u32, u32))> {
        let efd = EventFd::new_nonblocking().context("eventfd")?;
        let efd2 = EventFd::new_nonblocking().context("eventfd")?;
        let objs = (self.next_obj, self.next_obj + 1);
        self.next_obj += 2;
        Ok((efd, efd2, objs))
    }

    /// Run `op` for real: the observation and the facts.
    pub fn execute(&mut self, op: &ChanOp, profile: &mut Profile) -> Result<(String, ChanFacts)> {
        let mut f = ChanFacts::default();
        if let Some(c) = op.slot() {
            if let Some(s) = &self.slots[c as usize] {
                f.file = s.file;
                f.target = s.id;
                if let Some(id) = s.id {
                    f.r0 = self.cands[0].chan(id).map_or(0, |ch| ch.state.ready_seq());
                }
            }
        }
        let obs = match op {
            ChanOp::Create(c, r) => {
                if self.slots[*c as usize].is_none() {
                    let dev = Device::open(DEVICE_PATH).context("opening the device")?;
                    let (efd, efd2, objs) = self.new_efds()?;
                    self.slots[*c as usize] = Some(ChanSlot {
                        file: self.next_file,
                        dev: Some(dev),
                        efd,
                        efd2,
                        objs,
                        id: None,
                        size: 0,
                        ring: 0,
                        hi: 0,
                        maps: Vec::new(),
                    });
                    self.next_file += 1;
                    f.opened = true;
                } else {
                    // A fresh pair for each try (a pending count stays).
                    let (efd, efd2, objs) = self.new_efds()?;
                    let s = self.slot(*c)?;
                    (s.efd, s.efd2, s.objs) = (efd, efd2, objs);
                }
                let s = self.slot(*c)?;
                f.file = s.file;
                let dev = s.dev.as_ref().context("internal: no file")?;
                let (a, b) = (s.efd.as_raw_fd(), s.efd2.as_raw_fd());
                let ev = |o: u32, count: u64| EfdArg::Eventfd { object: o, count };
                let (fds, args) = match r.efds {
                    EfdPick::Normal => ((a, b), (ev(s.objs.0, 0), ev(s.objs.1, 0))),
                    EfdPick::Same => ((a, a), (ev(s.objs.0, 0), ev(s.objs.0, 0))),
                    EfdPick::NotOpen => ((a, 900), (ev(s.objs.0, 0), EfdArg::NotOpen)),
                    EfdPick::NotEventfd => {
                        ((dev.as_raw_fd(), b), (EfdArg::NotEventfd, ev(s.objs.1, 0)))
                    }
                    EfdPick::Pending => {
                        s.efd.write(1).context("writing efd")?;
                        ((a, b), (ev(s.objs.0, 1), ev(s.objs.1, 0)))
                    }
                };
                f.efds = Some(args);
                let req = r.create_arg(fds.0, fds.1);
                match dev.create(&req) {
                    Ok(out) => {
                        s.id = Some(out.id);
                        s.size = out.buffer_size;
                        s.ring = if req.flags & CREATE_RING != 0 {
                            req.ring_slots
                        } else {
                            0
                        };
                        format!("ok {} {}", out.id, out.buffer_size)
                    }
                    Err(e) => format!(
                        "err {}",
                        e.errno().map_or(0, rustix::io::Errno::raw_os_error)
                    ),
                }
            }
            ChanOp::Recreate(c) => {
                let s = self.slot(*c)?;
                f.efds = Some((
                    EfdArg::Eventfd {
                        object: s.objs.0,
                        count: 0,
                    },
                    EfdArg::Eventfd {
                        object: s.objs.1,
                        count: 0,
                    },
                ));
                let mut req = Create {
                    efd: s.efd.as_raw_fd(),
                    efd2: s.efd2.as_raw_fd(),
                    buffer_size: 4096,
                    ..Create::default()
                };
                let fd = s.dev.as_ref().context("no file")?.as_raw_fd();
                // SAFETY: IOC_CREATE reads and writes one struct k2u_create,
                // `req`, live for the call.
                ires(unsafe { ioctl_ptr(fd, abi::IOC_CREATE, (&raw mut req).cast()) })
            }
            ChanOp::Cmd(c, code) => {
                let fd = self.fd(*c)?;
                let mut code = *code;
                // SAFETY: IOC_CHANNEL_CMD reads one u32, `code`.
                ires(unsafe { ioctl_ptr(fd, abi::IOC_CHANNEL_CMD, (&raw mut code).cast()) })
            }
            ChanOp::Stats(c) => {
                let fd = self.fd(*c)?;
                let mut st = ChannelStats::default();
                // SAFETY: IOC_CHANNEL_STATS writes one struct
                // k2u_channel_stats, `st`.
                match unsafe { ioctl_ptr(fd, abi::IOC_CHANNEL_STATS, (&raw mut st).cast()) } {
                    Ok(_) => format!("stats {} {} {}", st.id, st.event_mode, st.buffer_size),
                    Err(e) => format!("err {e}"),
                }
            }
            ChanOp::Info(c) => {
                let fd = self.fd(*c)?;
                let mut info = Info::default();
                // SAFETY: IOC_INFO writes one struct k2u_info, `info`.
                match unsafe { ioctl_ptr(fd, abi::IOC_INFO, (&raw mut info).cast()) } {
                    Ok(_) => format!(
                        "info {} {} {} {} {}",
                        info.abi_version,
                        info.event_mode,
                        info.buffer_size,
                        info.period_ms,
                        info.channel_id
                    ),
                    Err(e) => format!("err {e}"),
                }
            }
            ChanOp::ReadEfd(c) => {
                let id = f.target.context("no channel")?;
                let pending = self.cands[0].clone().efd_read(id).is_some();
                let s = self.slot(*c)?;
                if pending {
                    // Counter mode posts the next code from a work item.
                    let t = Instant::now();
                    let _ = s.efd.wait_readable(guest::scaled(Duration::from_secs(5)));
                    profile.add("chan wait efd", t.elapsed());
                }
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into `v`.
                let n = unsafe { libc::read(s.efd.as_raw_fd(), (&raw mut v).cast(), 8) };
                if n == 8 {
                    format!("val {v}")
                } else if os_err() == libc::EAGAIN {
                    "eagain".to_owned()
                } else {
                    format!("err {}", os_err())
                }
            }
            ChanOp::Records(c, n) => {
                let fd = self.fd(*c)?;
                let mut buf = vec![0u8; *n as usize];
                // SAFETY: reads at most buf.len() bytes into buf.
                let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if got < 0 {
                    format!("err {}", os_err())
                } else {
                    let recs: Vec<String> = buf[..got as usize]
                        .chunks_exact(16)
                        .map(|r| {
                            let seq = u64::from_ne_bytes(r[0..8].try_into().unwrap_or([0; 8]));
                            let code = u32::from_ne_bytes(r[8..12].try_into().unwrap_or([0; 4]));
                            let round = u32::from_ne_bytes(r[12..16].try_into().unwrap_or([0; 4]));
                            format!("{seq}:{code}:{round}")
                        })
                        .collect();
                    format!("recs {}", recs.join(","))
                }
            }
            ChanOp::WriteEfd2(c, v) => {
                let s = self.slot(*c)?;
                match s.efd2.write(*v) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("err {e}"),
                }
            }
            ChanOp::Ack(c) => {
                let fd = self.fd(*c)?;
                // SAFETY: IOC_ACK takes no argument.
                ires(unsafe { ioctl_ptr(fd, abi::IOC_ACK, std::ptr::null_mut()) })
            }
            ChanOp::AckRound(c, pick) => {
                let id = f.target.context("no channel")?;
                let base = self.cands[0].chan(id).map_or(0, |ch| {
                    ch.state.round().map_or(ch.state.ready_seq(), |r| r.id)
                });
                f.round = match pick {
                    RoundPick::Current => base as u32,
                    RoundPick::Prev => base.wrapping_sub(1) as u32,
                    RoundPick::Next => base.wrapping_add(1) as u32,
                    RoundPick::Value(v) => *v,
                };
                let fd = self.fd(*c)?;
                let mut round = f.round;
                // SAFETY: IOC_ACK_ROUND reads one u32, `round`.
                ires(unsafe { ioctl_ptr(fd, abi::IOC_ACK_ROUND, (&raw mut round).cast()) })
            }
            ChanOp::Mmap(c, v) => {
                let (l, offset, shared, write) = CHAN_MMAPS[*v as usize];
                let s = self.slot(*c)?;
                let fd = s.dev.as_ref().context("no file")?.as_raw_fd();
                let len = map_len(l, s.data_size()) as usize;
                let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
                let flags = if shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
                // SAFETY: a new mapping chosen by the kernel (addr NULL);
                // nothing of ours is replaced.
                let addr = unsafe {
                    libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset as i64)
                };
                if addr == libc::MAP_FAILED {
                    format!("err {}", os_err())
                } else {
                    s.maps.push(ChanMap {
                        addr: addr.cast(),
                        len,
                        data: offset == 0,
                    });
                    "ok".to_owned()
                }
            }
            ChanOp::Munmap(c) => {
                let s = self.slot(*c)?;
                if s.maps.pop().is_none() {
                    "none".to_owned()
                } else {
                    self.drop_if_released(*c);
                    "ok".to_owned()
                }
            }
            ChanOp::Check(c) if self.slot(*c)?.ring > 0 => {
                let t = Instant::now();
                let s = self.slot(*c)?;
                let id = s.id.context("no channel")?;
                let obs = check_ring(s, id)?;
                profile.add("chan ring check", t.elapsed());
                obs
            }
            ChanOp::Check(c) => {
                let t = Instant::now();
                let id = self.slot(*c)?.id.context("no channel")?;
                let r0 = f.r0;
                let s = self.slot(*c)?;
                let parts: Vec<String> = s
                    .maps
                    .iter()
                    .map(|m| {
                        if m.data {
                            let (e, x) = masks(&m.bytes(), id, r0);
                            format!("e{e}m{x}")
                        } else {
                            let seq = m.ready_seq();
                            match seq.checked_sub(r0) {
                                Some(k) if k <= WINDOW => format!("C{k}"),
                                _ => format!("C?{seq}"),
                            }
                        }
                    })
                    .collect();
                profile.add("chan check", t.elapsed());
                if parts.is_empty() {
                    "maps -".to_owned()
                } else {
                    format!("maps {}", parts.join(","))
                }
            }
            ChanOp::ReadBuf(c, n) => {
                let id = f.target.context("no channel")?;
                let fd = self.fd(*c)?;
                let mut buf = vec![0u8; *n as usize];
                let mut rb = ReadBuffer {
                    addr: buf.as_mut_ptr() as u64,
                    len: buf.len() as u64,
                };
                // SAFETY: IOC_READ_BUFFER reads `rb`, which names `buf`,
                // writable and live for the call.
                match unsafe { ioctl_ptr(fd, abi::IOC_READ_BUFFER, (&raw mut rb).cast()) } {
                    Ok(got) => {
                        let got = (got.max(0) as usize).min(buf.len());
                        let (e, _) = masks(&buf[..got], id, f.r0);
                        format!("rb {got} e{e}m0")
                    }
                    Err(e) => format!("err {e}"),
                }
            }
            ChanOp::Close(c) => {
                self.slot(*c)?.dev = None;
                self.drop_if_released(*c);
                "ok".to_owned()
            }
            ChanOp::Foreign(c) => {
                let (obs, pid) = self.foreign(*c)?;
                f.other = pid;
                obs
            }
            ChanOp::AckSeq(c, pick) => {
                let s = self.slot(*c)?;
                let ctrl = s.map_ctrl()?;
                let ready = ctrl
                    .ctrl_u64(std::mem::offset_of!(Ctrl, ready_seq))
                    .load(Ordering::Acquire);
                f.ack = pick.value(ready, s.hi);
                s.hi = s.hi.max(f.ack);
                // The page ack: ack_seq (release), a full barrier, then
                // the doorbell (always: the fuzzer does not poll
                // kernel_state).
                ctrl.ctrl_u64(std::mem::offset_of!(Ctrl, ack_seq))
                    .store(f.ack, Ordering::Release);
                fence(Ordering::SeqCst);
                drop(ctrl);
                match s.efd2.write(7) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("err {e}"),
                }
            }
            ChanOp::Limit(name, bytes) => write_param(name, bytes),
            ChanOp::List => {
                let max = read_text(param::MAX_CHANNELS)?;
                let mem = read_text(param::MAX_CHANNEL_MEMORY)?;
                let list = read_text(param::CHANNELS)?;
                format!("{}|{}|{list}", max.trim(), mem.trim())
            }
        };
        Ok((obs, f))
    }

    fn fd(&mut self, c: u8) -> Result<RawFd> {
        Ok(self
            .slot(c)?
            .dev
            .as_ref()
            .context("internal: the channel's file is closed")?
            .as_raw_fd())
    }

    /// A slot whose file is closed and unmapped is gone (its eventfds
    /// are closed after the release).
    fn drop_if_released(&mut self, c: u8) {
        let gone = self.slots[c as usize]
            .as_ref()
            .is_some_and(|s| s.dev.is_none() && s.maps.is_empty());
        if gone {
            self.slots[c as usize] = None;
        }
    }

    /// A forked child tries every call on the slot's file; the answers
    /// (`ok`, `err <errno>`) and the child's pid.
    fn foreign(&mut self, c: u8) -> Result<(String, Pid)> {
        let s = self.slot(c)?;
        let fd = s.dev.as_ref().context("no file")?.as_raw_fd();
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe() writes two fds into the array.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            bail!("pipe: {}", std::io::Error::last_os_error());
        }
        // Everything the child uses is made before the fork.
        let mut code: u32 = 2;
        let mut round: u32 = 1;
        let mut st = ChannelStats::default();
        let mut info = Info::default();
        let mut buf = [0u8; 64];
        let mut rb = ReadBuffer {
            addr: buf.as_mut_ptr() as u64,
            len: buf.len() as u64,
        };
        let mut reg = Register {
            efd: s.efd.as_raw_fd(),
            efd2: s.efd2.as_raw_fd(),
        };
        let mut cr = Create {
            efd: s.efd.as_raw_fd(),
            efd2: s.efd2.as_raw_fd(),
            buffer_size: 4096,
            ..Create::default()
        };
        let mut out = [0i32; 11];
        // SAFETY: fork() in a process with one thread; the child only
        // makes system calls on memory prepared above, then _exit()s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            let r = |x: Result<i32, i32>| match x {
                Ok(_) => 0,
                Err(e) => e,
            };
            // SAFETY: each argument is the struct its ioctl reads or
            // writes (or the buffer read() fills), live until _exit; the
            // mapping made is unmapped at once.
            unsafe {
                out[0] = r(ioctl_ptr(fd, abi::IOC_CHANNEL_CMD, (&raw mut code).cast()));
                out[1] = r(ioctl_ptr(fd, abi::IOC_ACK, std::ptr::null_mut()));
                out[2] = r(ioctl_ptr(fd, abi::IOC_ACK_ROUND, (&raw mut round).cast()));
                out[3] = r(ioctl_ptr(fd, abi::IOC_CHANNEL_STATS, (&raw mut st).cast()));
                out[4] = r(ioctl_ptr(fd, abi::IOC_READ_BUFFER, (&raw mut rb).cast()));
                out[5] = r(ioctl_ptr(fd, abi::IOC_REGISTER, (&raw mut reg).cast()));
                out[6] = r(ioctl_ptr(fd, abi::IOC_CREATE, (&raw mut cr).cast()));
                let a = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    0,
                );
                out[7] = if a == libc::MAP_FAILED {
                    *libc::__errno_location()
                } else {
                    libc::munmap(a, 4096);
                    0
                };
                let n = libc::read(fd, buf.as_mut_ptr().cast(), 16);
                out[8] = if n < 0 { *libc::__errno_location() } else { 0 };
                out[9] = r(ioctl_ptr(fd, abi::IOC_INFO, (&raw mut info).cast()));
                out[10] = info.channel_id as i32;
                libc::write(fds[1], out.as_ptr().cast(), std::mem::size_of_val(&out));
                libc::_exit(0);
            }
        }
        // SAFETY: our copy of the write end, not used again.
        unsafe { libc::close(fds[1]) };
        let mut got = 0usize;
        let want = std::mem::size_of_val(&out);
        while got < want {
            // SAFETY: reads into the rest of `out`.
            let n = unsafe {
                libc::read(
                    fds[0],
                    out.as_mut_ptr().cast::<u8>().add(got).cast(),
                    want - got,
                )
            };
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        // SAFETY: our read end, not used again; the child is ours to reap.
        unsafe {
            libc::close(fds[0]);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        if got < want {
            bail!("the forked process answered {got} of {want} bytes");
        }
        let e = |v: i32| {
            if v == 0 {
                "ok".to_owned()
            } else {
                format!("err {v}")
            }
        };
        let names = [
            "cmd", "ack", "ackround", "stats", "readbuf", "register", "create", "mmap", "read",
            "info",
        ];
        let mut parts: Vec<String> = names
            .iter()
            .zip(out)
            .map(|(n, v)| format!("{n}:{}", e(v)))
            .collect();
        parts.push(format!("id:{}", out[10]));
        Ok((parts.join(" "), pid))
    }

    /// The model's side of one channel op.
    fn predict(&self, m: &mut Channels, op: &ChanOp, f: &ChanFacts) -> CExpect {
        let me = self.me;
        let exact = |s: String| CExpect::Exact(s);
        match op {
            ChanOp::Create(_, r) => {
                if f.opened {
                    m.open(f.file);
                }
                let Some((a, b)) = f.efds else {
                    return exact("no eventfds".into());
                };
                let req = r.create_arg(0, 0);
                match m.create(f.file, me, &req, a, b) {
                    Ok(out) => exact(format!("ok {} {}", out.id, out.buffer_size)),
                    Err(e) => exact(format!("err {}", e.raw())),
                }
            }
            ChanOp::Recreate(_) => {
                let (a, b) = f.efds.unwrap_or((EfdArg::NotOpen, EfdArg::NotOpen));
                let req = Create {
                    buffer_size: 4096,
                    ..Create::default()
                };
                exact(mres(m.create(f.file, me, &req, a, b).map(|_| ())))
            }
            ChanOp::Cmd(_, code) => exact(mres(m.command(f.file, me, *code))),
            ChanOp::Stats(_) => exact(match m.stats(f.file, me) {
                Ok(Some(s)) => format!("stats {} {} {}", s.id, s.event_mode, s.buffer_size),
                Ok(None) => format!("stats 0 {} {DEFAULT_BUFFER_SIZE}", self.mode as u32),
                Err(e) => format!("err {}", e.raw()),
            }),
            ChanOp::Info(_) => exact(match m.info(f.file) {
                Some((abi, mode, size, period, id)) => {
                    format!("info {abi} {mode} {size} {period} {id}")
                }
                None => "no info".to_owned(),
            }),
            ChanOp::ReadEfd(_) => {
                let v = f.target.and_then(|id| m.efd_read(id));
                exact(v.map_or("eagain".to_owned(), |v| format!("val {v}")))
            }
            ChanOp::Records(_, n) => exact(match m.read_records(f.file, me, *n as usize) {
                Ok(evs) => {
                    let recs: Vec<String> = evs
                        .iter()
                        .map(|e| format!("{}:{}:{}", e.seq, e.code, e.round))
                        .collect();
                    format!("recs {}", recs.join(","))
                }
                Err(e) => format!("err {}", e.raw()),
            }),
            ChanOp::WriteEfd2(_, v) => {
                if let Some(id) = f.target {
                    m.efd2_write(id, *v);
                }
                exact("ok".into())
            }
            ChanOp::Ack(_) => exact(mres(m.ack(f.file, me))),
            ChanOp::AckRound(..) => exact(mres(m.ack_round(f.file, me, f.round))),
            ChanOp::Mmap(c, v) => {
                let (l, offset, shared, write) = CHAN_MMAPS[*v as usize];
                let size = self.slots[*c as usize]
                    .as_ref()
                    .map_or(0, ChanSlot::data_size);
                exact(mres(m.mmap(
                    f.file,
                    me,
                    mmap_req(map_len(l, size), offset, shared, write),
                )))
            }
            ChanOp::Munmap(_) => {
                if m.file(f.file).is_some_and(|d| d.maps > 0) {
                    m.unmapped(f.file);
                    exact("ok".into())
                } else {
                    exact("none".into())
                }
            }
            ChanOp::Check(c) if self.slots[*c as usize].as_ref().is_some_and(|s| s.ring > 0) => {
                CExpect::RingOk
            }
            ChanOp::Check(_) => CExpect::Maps,
            ChanOp::ReadBuf(_, n) => match m.read_buffer(f.file, me, u64::from(*n)) {
                Ok(got) => CExpect::ReadBuf(got),
                Err(e) => exact(format!("err {}", e.raw())),
            },
            ChanOp::Close(_) => {
                m.close(f.file);
                exact("ok".into())
            }
            ChanOp::Foreign(_) => {
                let o = f.other;
                let map = mmap_req(4096, 0, true, false);
                let req = Create {
                    buffer_size: 4096,
                    ..Create::default()
                };
                let any = EfdArg::Eventfd {
                    object: 0,
                    count: 0,
                };
                let mut mm = m.clone();
                let answers = [
                    mm.command(f.file, o, 2),
                    mm.ack(f.file, o),
                    mm.ack_round(f.file, o, 1),
                    mm.stats(f.file, o).map(|_| ()),
                    mm.read_buffer(f.file, o, 64).map(|_| ()),
                    mm.foreign_call(f.file, o),
                    mm.create(f.file, o, &req, any, any).map(|_| ()),
                    mm.mmap(f.file, o, map),
                    mm.read_records(f.file, o, 16).map(|_| ()),
                    Ok(()),
                ];
                let names = [
                    "cmd", "ack", "ackround", "stats", "readbuf", "register", "create", "mmap",
                    "read", "info",
                ];
                let mut parts: Vec<String> = names
                    .iter()
                    .zip(answers)
                    .map(|(n, a)| format!("{n}:{}", res(a)))
                    .collect();
                parts.push(format!("id:{}", m.chan_of(f.file).unwrap_or(0)));
                exact(parts.join(" "))
            }
            ChanOp::Limit(name, bytes) => exact(mres(m.param_write(name, bytes))),
            ChanOp::AckSeq(..) => {
                if let Some(id) = f.target {
                    m.store_ack_seq(id, f.ack);
                    m.efd2_write(id, 7);
                }
                exact("ok".into())
            }
            ChanOp::List => CExpect::Listing(m.listing(), m.max_channels(), m.max_memory()),
        }
    }

    /// Each observed channel (file open, a channel): id -> (rounds
    /// published, count).
    fn observe(&self) -> Result<BTreeMap<u32, (u64, u64)>> {
        let mut out = BTreeMap::new();
        for s in self.slots.iter().flatten() {
            let (Some(id), Some(dev)) = (s.id, &s.dev) else {
                continue;
            };
            let st = dev
                .channel_stats()
                .with_context(|| format!("channel {id}: K2U_IOC_CHANNEL_STATS"))?;
            if st.id != id {
                bail!(
                    "channel {id}: K2U_IOC_CHANNEL_STATS names channel {}",
                    st.id
                );
            }
            out.insert(id, (st.rounds_published, st.count));
        }
        Ok(out)
    }

    /// After any op: apply it (a channel op) and the rounds published to
    /// the candidates, keep those that agree with what was observed.
    pub fn step(
        &mut self,
        op: Option<&ChanOp>,
        obs: &str,
        f: &ChanFacts,
        profile: &mut Profile,
    ) -> Result<(), String> {
        let t = Instant::now();
        let seen = self
            .observe()
            .map_err(|e| format!("observing channels: {e:#}"))?;
        profile.add("chan observe", t.elapsed());
        let t = Instant::now();
        let lo: BTreeMap<u32, u64> = self.cands[0]
            .chans()
            .filter(|c| seen.contains_key(&c.id))
            .map(|c| (c.id, c.state.counted()))
            .collect();
        let mut next: Vec<Channels> = Vec::new();
        let mut why: Vec<String> = Vec::new();
        let mut first_expect = None;
        for cand in &self.cands {
            let target = f.target.filter(|id| seen.contains_key(id));
            let before = target
                .and_then(|id| cand.chan(id))
                .map_or(0, |c| c.state.ready_seq());
            let d = target.map_or(0, |id| seen[&id].0.saturating_sub(before));
            // The op at each place among the target's d publishes.
            let orders = if op.is_some() { d as usize + 1 } else { 1 };
            for at in 0..orders {
                let mut m = cand.clone();
                let mut expect = None;
                let mut fail = None;
                for i in 0..=d as usize {
                    if i == at {
                        if let Some(op) = op {
                            expect = Some(self.predict(&mut m, op, f));
                        }
                    }
                    if i < d as usize {
                        if let Err(e) = m.publish(target.unwrap_or(0)) {
                            fail = Some(e);
                            break;
                        }
                    }
                }
                // The other channels' rounds, after the op.
                if fail.is_none() {
                    for (id, (published, _)) in &seen {
                        if Some(*id) == target {
                            continue;
                        }
                        let Some(c) = m.chan(*id) else {
                            fail = Some(format!("channel {id} exists, the model has none"));
                            break;
                        };
                        let have = c.state.ready_seq();
                        if *published < have {
                            fail = Some(format!("channel {id}: {published} rounds, model {have}"));
                            break;
                        }
                        for _ in have..*published {
                            if let Err(e) = m.publish(*id) {
                                fail = Some(format!("channel {id}: {e}"));
                                break;
                            }
                        }
                    }
                }
                if fail.is_none() {
                    for id in seen.keys() {
                        if m.chan(*id).is_none() {
                            fail = Some(format!("channel {id} exists, the model has none"));
                        }
                    }
                    let modelled: Vec<u32> = m
                        .chans()
                        .filter(|c| self.is_open(c.id))
                        .map(|c| c.id)
                        .filter(|id| !seen.contains_key(id))
                        .collect();
                    if !modelled.is_empty() {
                        fail = Some(format!(
                            "the model has channels {modelled:?} the kernel does not report"
                        ));
                    }
                }
                if fail.is_none() {
                    if let Some(e) = &expect {
                        let dd = match (f.target, target) {
                            // A channel no longer observed (its file closed,
                            // still mapped) may have published one more
                            // round since: nothing acks it after that.
                            (Some(_), None) => 1,
                            _ => target
                                .and_then(|id| m.chan(id))
                                .map_or(0, |c| c.state.ready_seq())
                                .saturating_sub(f.r0),
                        };
                        if first_expect.is_none() {
                            first_expect = Some(e.clone());
                        }
                        if !e.matches(obs, dd, &lo) {
                            fail = Some(format!("expects {e}"));
                        }
                    }
                }
                match fail {
                    None => {
                        if !next.contains(&m) {
                            next.push(m);
                        }
                    }
                    Some(r) => {
                        if why.len() < 8 {
                            why.push(format!("op at {at}/{d}: {r}"));
                        }
                    }
                }
            }
        }
        profile.add("chan model", t.elapsed());
        if next.is_empty() {
            return Err(format!(
                "channels: observed {obs:?}, the model expects {} (kernel: {seen:?}); {}",
                first_expect.map_or("nothing".to_owned(), |e| e.to_string()),
                why.join("; ")
            ));
        }
        // The counts may trail an ack by a work item: read them again for a
        // moment when the model has more.
        let t = Instant::now();
        let deadline = Instant::now() + guest::scaled(Duration::from_secs(3));
        let settle = Instant::now() + guest::scaled(Duration::from_millis(200));
        let mut counts: BTreeMap<u32, u64> = seen.iter().map(|(id, (_, c))| (*id, *c)).collect();
        loop {
            let agrees = |m: &Channels| {
                counts
                    .iter()
                    .all(|(id, c)| m.chan(*id).is_some_and(|ch| ch.state.counted() == *c))
            };
            let higher = |m: &Channels| {
                counts
                    .iter()
                    .any(|(id, c)| m.chan(*id).is_some_and(|ch| ch.state.counted() > *c))
            };
            let matching: Vec<Channels> = next.iter().filter(|m| agrees(m)).cloned().collect();
            let any_higher = next.iter().any(higher);
            if !matching.is_empty() && (!any_higher || Instant::now() >= settle) {
                next = matching;
                break;
            }
            if Instant::now() >= deadline || !any_higher {
                return Err(format!(
                    "channels: observed {obs:?}; counts {counts:?}, the model says {:?}",
                    next.iter()
                        .map(|m| m
                            .chans()
                            .map(|c| (c.id, c.state.counted()))
                            .collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
            counts = self
                .observe()
                .map_err(|e| format!("observing channels: {e:#}"))?
                .iter()
                .map(|(id, (_, c))| (*id, *c))
                .collect();
        }
        profile.add("chan wait count", t.elapsed());
        // Activity, for the report: total = rounds published / counted.
        let (mut published, mut counted) = (0u64, 0u64);
        let (mut ring_published, mut ring_counted) = (0u64, 0u64);
        for (id, (p, c)) in &seen {
            if let Some(ch) = self.cands[0].chan(*id) {
                let p = p.saturating_sub(ch.state.ready_seq());
                let c = counts
                    .get(id)
                    .map_or(0, |c2| c2.max(c).saturating_sub(ch.state.counted()));
                published += p;
                counted += c;
                if ch.state.ring_slots() > 0 {
                    ring_published += p;
                    ring_counted += c;
                }
            }
        }
        for (name, n) in [
            ("chan published(=ms)", published),
            ("chan counted(=ms)", counted),
            ("chan ring published(=ms)", ring_published),
            ("chan ring counted(=ms)", ring_counted),
        ] {
            if n > 0 {
                profile.add(name, Duration::from_millis(n));
            }
        }
        if let Some(n) = obs
            .strip_prefix("ring ok ")
            .and_then(|n| n.parse::<u64>().ok())
        {
            profile.add("chan ring slots checked(=ms)", Duration::from_millis(n));
        }
        if matches!(op, Some(ChanOp::Create(..))) && obs.starts_with("ok") {
            profile.add("chan created", Duration::ZERO);
        }
        next.truncate(MAX_CANDIDATES);
        self.cands = next;
        Ok(())
    }

    fn is_open(&self, id: u32) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|s| s.id == Some(id) && s.dev.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_tell_rounds_and_fills_apart() {
        let id = 3;
        let round = |r: u64, n: usize| -> Vec<u8> {
            (0..n)
                .map(|i| {
                    if r == 0 {
                        0
                    } else {
                        channel_pattern_byte(id, r, i)
                    }
                })
                .collect()
        };
        // Round 5 exactly, seen from r0 = 4: bit 1.
        let (e, m) = masks(&round(5, 8192), id, 4);
        assert_eq!(e, 0b010);
        assert!(data_ok(e, m, 1));
        assert!(!data_ok(e, m, 0), "round 5 before any publish");
        assert!(data_ok(e, m, 2), "read between the two rounds published");
        let (e, m) = masks(&round(6, 8192), id, 4);
        assert!(!data_ok(e, m, 1), "round 6 was never published");
        // Half round 4, half round 5: a fill in progress, published later.
        let mut mix = round(4, 8192);
        mix[4096..].copy_from_slice(&round(5, 8192)[4096..]);
        let (e, m) = masks(&mix, id, 4);
        assert_eq!(e, 0);
        assert!(data_ok(e, m, 1));
        assert!(!data_ok(e, m, 0), "a fill nobody published");
        // Zeros before the first round.
        let (e, _) = masks(&round(0, 4096), id, 0);
        assert_eq!(e & 1, 1);
        // Another channel's data is no round of this one.
        let other: Vec<u8> = (0..4096).map(|i| channel_pattern_byte(4, 5, i)).collect();
        let (e, m) = masks(&other, id, 4);
        assert_eq!((e, m), (0, 0));
    }

    #[test]
    fn listing_expectations_compare_every_field() {
        let want = vec![ListEntry {
            id: 1,
            name: "ch".into(),
            owner: 77,
            buffer_size: 8192,
            mode: "queue",
            pacing: "b2b",
            rounds: 3,
        }];
        let e = CExpect::Listing(want, 16, 1 << 26);
        let head = abi::CHANNELS_HEADER;
        let text = |rounds: u64, pacing: &str| {
            format!(
                "16|67108864|{head}\n0 - 0 4096 queue timer 0 0 0\n1 ch 77 8192 queue {pacing} {rounds} 0 0\n"
            )
        };
        let lo: BTreeMap<u32, u64> = [(1, 2)].into_iter().collect();
        assert!(e.matches(&text(3, "b2b"), 0, &lo));
        assert!(
            e.matches(&text(2, "b2b"), 0, &lo),
            "a count not collected yet"
        );
        assert!(!e.matches(&text(4, "b2b"), 0, &lo));
        assert!(!e.matches(&text(3, "timer"), 0, &lo));
        assert!(!e.matches(&text(1, "b2b"), 0, &lo));
    }
}
