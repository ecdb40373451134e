//! The `producer` suite: the kernel producer API end to end. The sample
//! module `k2u_sample_producer` publishes a counter-stamped pattern through
//! a named channel; a listener attaches by name (K2U_IOC_CREATE with
//! K2U_CREATE_ATTACH), checks every byte, length and sequence number, and
//! the two modules unload in either order.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{
    sample_producer_byte, sample_producer_len, Code, Create, EventMode, ReadBuffer,
    CHANNEL_NAME_LEN, CREATE_ATTACH, DEVICE_PATH, IOC_CHANNEL_CMD, IOC_CREATE, IOC_READ_BUFFER,
    SAMPLE_PRODUCER_MODULE, SAMPLE_PRODUCER_NAME,
};
use kern2usr::{Access, Device, EventFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{Opcode, Setter, Updater};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

use crate::common::errno_text;
use crate::guest::{self, timeout, KERN_DIR};
use crate::harness::{Ctx, Test};

/// The suite's tests.
pub const TESTS: &[Test] = &[
    (
        "a listener attached by name sees 30 consecutive rounds, every length and byte right",
        attach_and_check_rounds,
    ),
    (
        "attach refusals: ENOENT for an unknown name, EBUSY while attached; commands are EOPNOTSUPP",
        attach_refusals,
    ),
    (
        "rmmod kern2usr is refused while the producer holds a channel; producer first, then kern2usr",
        unload_producer_first,
    ),
    (
        "the producer unloads while a listener is attached: the listener gets EXIT_TEST",
        unload_with_listener,
    ),
    (
        "a producer's channel: listed as producer (owner 0, then its listener), READ_BUFFER \
         EOPNOTSUPP, its buffer read-only when shared, unlisted once destroyed",
        channel_rules,
    ),
];

const SAMPLE_SIZE: u64 = 65536;

fn sample_ko() -> String {
    format!("{SAMPLE_PRODUCER_MODULE}.ko")
}

/// kern2usr freshly loaded, then the sample producer (a round every 5 ms).
fn both_loaded(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    guest::sh_ok(
        Path::new(KERN_DIR),
        &format!("insmod {} size={SAMPLE_SIZE} period_ms=5", sample_ko()),
    )?;
    ctx.klog.wait_for(
        &format!("channel <any> created: name={SAMPLE_PRODUCER_NAME} size={SAMPLE_SIZE} owner=0"),
        timeout(),
    )?;
    Ok(())
}

fn name_bytes(name: &str) -> [u8; CHANNEL_NAME_LEN] {
    let mut out = [0u8; CHANNEL_NAME_LEN];
    let n = name.len().min(CHANNEL_NAME_LEN - 1);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// A listener of a producer's channel: the device file it attached with,
/// its eventfds and its mappings.
struct Attached {
    dev: Device,
    efd: EventFd,
    _efd2: EventFd,
    size: usize,
    mode: EventMode,
}

/// `K2U_IOC_CREATE` with `K2U_CREATE_ATTACH` on `file`; returns the
/// channel's buffer size or the errno.
fn attach_raw(file: BorrowedFd<'_>, efd: i32, efd2: i32, name: &str) -> Result<Create, Errno> {
    let mut arg = Create {
        efd,
        efd2,
        flags: CREATE_ATTACH,
        name: name_bytes(name),
        ..Create::default()
    };
    // SAFETY: IOC_CREATE is _IOWR(magic, 6, struct k2u_create) and Create
    // is its #[repr(C)] mirror; the kernel reads and writes exactly
    // size_of::<Create>() bytes of `arg`, which outlives the call.
    let ioctl = unsafe { Updater::<{ IOC_CREATE as Opcode }, Create>::new(&mut arg) };
    // SAFETY: see above; the fd is open.
    unsafe { rustix::ioctl::ioctl(file, ioctl) }?;
    Ok(arg)
}

fn open_dev() -> Result<OwnedFd> {
    rustix::fs::open(DEVICE_PATH, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {DEVICE_PATH}"))
}

fn attach(ctx: &mut Ctx) -> Result<Attached> {
    let efd = EventFd::new()?;
    let efd2 = EventFd::new()?;
    let dev = Device::open(DEVICE_PATH)?;
    let got = attach_raw(
        dev.as_fd(),
        efd.as_fd().as_raw_fd(),
        efd2.as_fd().as_raw_fd(),
        SAMPLE_PRODUCER_NAME,
    )
    .map_err(|e| anyhow::anyhow!("attaching to {SAMPLE_PRODUCER_NAME}: {}", errno_text(e)))?;
    ensure!(
        got.buffer_size == SAMPLE_SIZE && got.id >= 1,
        "attach returned size {} id {}",
        got.buffer_size,
        got.id
    );
    Ok(Attached {
        dev,
        efd,
        _efd2: efd2,
        size: SAMPLE_SIZE as usize,
        mode: ctx.params.event_mode()?,
    })
}

impl Attached {
    /// The next event: (code, round) from a record, or from efd's counter.
    fn next_event(&mut self, pending: &mut Vec<kern2usr::abi::Event>) -> Result<(u32, u32)> {
        loop {
            if !pending.is_empty() {
                let ev = pending.remove(0);
                return Ok((ev.code, ev.round));
            }
            if !self.efd.wait_readable(timeout())? {
                bail!("no event within {:?}", timeout());
            }
            let counter = self.efd.read()?;
            match self.mode {
                EventMode::Counter => {
                    let code = u32::try_from(counter).context("efd counter")?;
                    return Ok((code, 0));
                }
                EventMode::Queue => {
                    self.dev.read_events(pending)?;
                }
            }
        }
    }
}

fn check_round(data: &[u8], len: usize, seq: u64) -> Result<()> {
    let want_len = sample_producer_len(seq, SAMPLE_SIZE) as usize;
    ensure!(
        len == want_len,
        "round {seq}: ready_len {len}, expected {want_len}"
    );
    let stamp = u64::from_le_bytes(data[..8].try_into().context("stamp")?);
    ensure!(
        stamp == seq,
        "round stamped {stamp} where {seq} was expected"
    );
    if let Some(i) = (8..len).find(|&i| data[i] != sample_producer_byte(seq, i)) {
        bail!(
            "round {seq}: byte {i} is {} where {} was expected",
            data[i],
            sample_producer_byte(seq, i)
        );
    }
    Ok(())
}

fn attach_and_check_rounds(ctx: &mut Ctx) -> Result<()> {
    both_loaded(ctx)?;
    let mut l = attach(ctx)?;
    let map = l.dev.map_at(l.size, 0, Access::ReadOnly)?;
    let ctrl = l.dev.map_ctrl()?;
    let mut pending = Vec::new();
    let mut last_seq: Option<u64> = None;
    let mut rounds = 0;
    while rounds < 30 {
        let (code, round) = l.next_event(&mut pending)?;
        ensure!(
            code == Code::MemoryReady.value(),
            "code {code} where MEMORY_READY was expected"
        );
        let ready = ctrl.ready_seq();
        let len = usize::try_from(ctrl.ready_len()).context("ready_len")?;
        ensure!(len <= l.size, "ready_len {len} > size {}", l.size);
        let data = map.to_vec();
        let seq = u64::from_le_bytes(data[..8].try_into().context("stamp")?);
        if let Some(prev) = last_seq {
            ensure!(
                seq == prev + 1,
                "sequence {seq} after {prev}: a round was lost"
            );
        }
        check_round(&data, len, seq)?;
        if l.mode == EventMode::Queue {
            ensure!(
                u64::from(round) == ready & 0xffff_ffff,
                "event round {round}, control page ready_seq {ready}"
            );
        }
        l.dev.ack_round(ready as u32)?;
        last_seq = Some(seq);
        rounds += 1;
    }
    drop(map);
    drop(ctrl);
    drop(l);
    guest::sh_ok(Path::new("/"), &format!("rmmod {SAMPLE_PRODUCER_MODULE}"))?;
    // The listener's file is closed: the producer's channel goes quietly.
    ctx.klog
        .wait_for("channel <any> destroyed by its producer", timeout())?;
    guest::rmmod(&mut ctx.klog)
}

fn attach_refusals(ctx: &mut Ctx) -> Result<()> {
    both_loaded(ctx)?;
    let efd = EventFd::new()?;
    let efd2 = EventFd::new()?;
    let (a, b) = (efd.as_fd().as_raw_fd(), efd2.as_fd().as_raw_fd());
    let f1 = open_dev()?;
    match attach_raw(f1.as_fd(), a, b, "nosuch") {
        Err(Errno::NOENT) => {}
        other => bail!("attach to an unknown name: {other:?}, expected ENOENT"),
    }
    attach_raw(f1.as_fd(), a, b, SAMPLE_PRODUCER_NAME)
        .map_err(|e| anyhow::anyhow!("first attach: {}", errno_text(e)))?;
    let f2 = open_dev()?;
    let e3 = EventFd::new()?;
    let e4 = EventFd::new()?;
    match attach_raw(
        f2.as_fd(),
        e3.as_fd().as_raw_fd(),
        e4.as_fd().as_raw_fd(),
        SAMPLE_PRODUCER_NAME,
    ) {
        Err(Errno::BUSY) => {}
        other => bail!("second attach: {other:?}, expected EBUSY"),
    }
    for code in [Code::Mmap, Code::StartTest, Code::StopTest, Code::ExitTest] {
        // SAFETY: IOC_CHANNEL_CMD is _IOW(magic, 7, __u32); the kernel
        // reads one u32 through the pointer Setter passes.
        let ioctl = unsafe { Setter::<{ IOC_CHANNEL_CMD as Opcode }, u32>::new(code.value()) };
        // SAFETY: see above; the fd is open.
        match unsafe { rustix::ioctl::ioctl(&f1, ioctl) } {
            Err(Errno::OPNOTSUPP) => {}
            other => bail!(
                "{} on a producer's channel: {other:?}, expected EOPNOTSUPP",
                code.name()
            ),
        }
    }
    drop(f1);
    // Released: the channel waits for the next listener.
    attach_raw(
        f2.as_fd(),
        e3.as_fd().as_raw_fd(),
        e4.as_fd().as_raw_fd(),
        SAMPLE_PRODUCER_NAME,
    )
    .map_err(|e| anyhow::anyhow!("attach after the first listener left: {}", errno_text(e)))?;
    drop(f2);
    guest::unload_sample_producer()?;
    guest::rmmod(&mut ctx.klog)
}

fn unload_producer_first(ctx: &mut Ctx) -> Result<()> {
    both_loaded(ctx)?;
    let err = guest::sh_fails(Path::new("/"), "rmmod kern2usr")?;
    ensure!(
        err.contains("in use") || err.contains("busy") || err.contains("Resource"),
        "rmmod kern2usr with a producer loaded failed, but said {err:?}"
    );
    ensure!(
        guest::module_loaded(),
        "kern2usr is gone although rmmod failed"
    );
    guest::sh_ok(Path::new("/"), &format!("rmmod {SAMPLE_PRODUCER_MODULE}"))?;
    guest::rmmod(&mut ctx.klog)
}

/// The `channels` listing's line of the sample's channel, split in fields.
fn sample_line(ctx: &Ctx) -> Result<Option<Vec<String>>> {
    let text = ctx.params.read(kern2usr::abi::param::CHANNELS)?;
    Ok(text
        .lines()
        .skip(1)
        .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.get(1).map(String::as_str) == Some(SAMPLE_PRODUCER_NAME)))
}

/// Checks the sample's listing line: owner `owner`, its size, pacing
/// `producer`.
fn check_sample_line(ctx: &Ctx, owner: u32) -> Result<()> {
    let line = sample_line(ctx)?.context("the sample's channel is not listed")?;
    ensure!(
        line.len() == 9
            && line[2] == owner.to_string()
            && line[3] == SAMPLE_SIZE.to_string()
            && line[5] == "producer",
        "listing line {line:?}, expected owner {owner}, size {SAMPLE_SIZE}, pacing producer"
    );
    Ok(())
}

/// A shared `mmap()` of `len` bytes of `fd` at offset 0 with `prot`; the
/// caller unmaps it.
fn map_shared(
    fd: BorrowedFd<'_>,
    len: usize,
    prot: ProtFlags,
) -> Result<*mut std::ffi::c_void, Errno> {
    // SAFETY: a fresh shared mapping at an address the kernel picks; the
    // caller only passes it to mprotect() and munmap().
    unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0) }
}

fn channel_rules(ctx: &mut Ctx) -> Result<()> {
    both_loaded(ctx)?;
    check_sample_line(ctx, 0)?;
    let l = attach(ctx)?;
    check_sample_line(ctx, std::process::id())?;

    let mut buf = vec![0u8; 4096];
    let rb = ReadBuffer {
        addr: buf.as_mut_ptr() as u64,
        len: buf.len() as u64,
    };
    // SAFETY: IOC_READ_BUFFER is _IOW(magic, 4, struct k2u_read_buffer);
    // the kernel reads `rb` and writes at most buf.len() bytes to buf,
    // which is valid and not otherwise used during the call.
    let ioctl = unsafe { Setter::<{ IOC_READ_BUFFER as Opcode }, ReadBuffer>::new(rb) };
    // SAFETY: see above; the fd is open.
    match unsafe { rustix::ioctl::ioctl(&l.dev, ioctl) } {
        Err(Errno::OPNOTSUPP) => {}
        other => bail!("READ_BUFFER on a producer's channel: {other:?}, expected EOPNOTSUPP"),
    }
    ctx.klog.wait_for(
        "channel <any>: READ_BUFFER refused: a producer's buffer is read through the mapping",
        timeout(),
    )?;

    match map_shared(l.dev.as_fd(), l.size, ProtFlags::READ | ProtFlags::WRITE) {
        Err(Errno::ACCESS) => {}
        other => {
            bail!("a shared writable mapping of a producer's buffer: {other:?}, expected EACCES")
        }
    }
    ctx.klog.wait_for(
        "channel <any>: mmap refused: a producer's buffer is read-only (MAP_SHARED with PROT_WRITE)",
        timeout(),
    )?;
    let p = map_shared(l.dev.as_fd(), l.size, ProtFlags::READ)
        .map_err(|e| anyhow::anyhow!("a shared read-only mapping: {}", errno_text(e)))?;
    // SAFETY: p is the l.size-byte mapping made above, never accessed.
    let made_writable =
        unsafe { rustix::mm::mprotect(p, l.size, MprotectFlags::READ | MprotectFlags::WRITE) };
    // SAFETY: as above; unmapped once, not used after.
    unsafe { rustix::mm::munmap(p, l.size) }?;
    match made_writable {
        Err(Errno::ACCESS) => {}
        other => {
            bail!("mprotect(PROT_WRITE) of a shared read-only mapping: {other:?}, expected EACCES")
        }
    }

    // Destroyed while the listener keeps its file: unlisted at once.
    guest::sh_ok(Path::new("/"), &format!("rmmod {SAMPLE_PRODUCER_MODULE}"))?;
    ctx.klog.wait_for(
        "channel <any> destroyed by its producer: listener told to exit",
        timeout(),
    )?;
    if let Some(line) = sample_line(ctx)? {
        bail!("the destroyed channel is still listed: {line:?}");
    }
    drop(l);
    ctx.klog
        .wait_for("channel <any>: listener left", timeout())?;
    guest::rmmod(&mut ctx.klog)
}

fn unload_with_listener(ctx: &mut Ctx) -> Result<()> {
    both_loaded(ctx)?;
    let mut l = attach(ctx)?;
    let ctrl = l.dev.map_ctrl()?;
    let mut pending = Vec::new();
    // Let one round through, then unload the producer mid-stream.
    let (code, _) = l.next_event(&mut pending)?;
    ensure!(code == Code::MemoryReady.value(), "first code {code}");
    l.dev.ack_round(ctrl.ready_seq() as u32)?;
    guest::sh_ok(Path::new("/"), &format!("rmmod {SAMPLE_PRODUCER_MODULE}"))?;
    loop {
        let (code, _) = l.next_event(&mut pending)?;
        if code == Code::ExitTest.value() {
            break;
        }
        ensure!(
            code == Code::MemoryReady.value(),
            "code {code} before EXIT_TEST"
        );
    }
    drop(ctrl);
    drop(l);
    guest::rmmod(&mut ctx.klog)
}
