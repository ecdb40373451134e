//! The `producer` suite: the kernel producer API end to end. The sample
//! module `k2u_sample_producer` publishes a counter-stamped pattern through
//! a named channel; a listener attaches by name (K2U_IOC_CREATE with
//! K2U_CREATE_ATTACH), checks every byte, length and sequence number, and
//! the two modules unload in either order.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{
    sample_producer_byte, sample_producer_len, Code, Create, EventMode, ReadBuffer,
    CHANNEL_NAME_LEN, CREATE_ATTACH, DEVICE_PATH, IOC_CHANNEL_CMD, IOC_CREATE, IOC_READ_BUFFER,
    MAX_PRODUCERS, SAMPLE_PRODUCER_MODULE, SAMPLE_PRODUCER_NAME,
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
    (
        "attach rule: by default uid 1000 gets EPERM (one log line); attach_uid / attach_gid let that uid or group attach and take rounds, others still EPERM",
        attach_rule,
    ),
    (
        "a forked child holding the listener's file: once the listener process exited, a new listener attaches; the left-behind file's close detaches nothing",
        orphaned_listener_file,
    ),
    (
        "producers have their own cap: user channels at max_channels do not stop a producer, a producer does not count against max_channels, the 9th producer channel is ENOSPC",
        producer_cap,
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
    take_rounds(&mut l, 30)?;
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

// ---------------------------------------------------------------------
// Attach rule, orphaned listener files, the producers' cap.

/// kern2usr freshly loaded, then the sample producer with `args`.
fn both_loaded_with(ctx: &mut Ctx, args: &str) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    guest::sh_ok(
        Path::new(KERN_DIR),
        &format!(
            "insmod {} size={SAMPLE_SIZE} period_ms=5 {args}",
            sample_ko()
        ),
    )?;
    ctx.klog.wait_for(
        &format!("channel <any> created: name={SAMPLE_PRODUCER_NAME} size={SAMPLE_SIZE} owner=0"),
        timeout(),
    )?;
    Ok(())
}

/// Take `n` consecutive rounds on `l`, checking every length, byte, stamp
/// and (queue mode) the event's round id against the control page.
fn take_rounds(l: &mut Attached, n: usize) -> Result<()> {
    let map = l.dev.map_at(l.size, 0, Access::ReadOnly)?;
    let ctrl = l.dev.map_ctrl()?;
    let mut pending = Vec::new();
    let mut last_seq: Option<u64> = None;
    for _ in 0..n {
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
    }
    Ok(())
}

/// Open the device, attach to the sample's channel on fresh eventfds.
fn attach_as(mode: EventMode) -> Result<Result<Attached, Errno>> {
    let efd = EventFd::new()?;
    let efd2 = EventFd::new()?;
    let dev = Device::open(DEVICE_PATH)?;
    let r = attach_raw(
        dev.as_fd(),
        efd.as_fd().as_raw_fd(),
        efd2.as_fd().as_raw_fd(),
        SAMPLE_PRODUCER_NAME,
    );
    Ok(r.map(|_| Attached {
        dev,
        efd,
        _efd2: efd2,
        size: SAMPLE_SIZE as usize,
        mode,
    }))
}

/// The unprivileged users of the attach-rule test.
const USER_UID: u32 = 1000;
const OTHER_UID: u32 = 1001;
const GROUP_GID: u32 = 990;

/// Run `f` in a forked child with uid/gid `uid` and supplementary groups
/// `groups`; its lines, and its pid. The harness runs tests on its one
/// thread, so the child may allocate; it leaves with _exit.
fn as_user(
    uid: u32,
    groups: &[u32],
    f: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<(i32, String)> {
    let (rd, wr) = std::io::pipe()?;
    // SAFETY: no other thread is alive (see above); the child runs `f` and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(rd);
        let mut out = wr;
        // SAFETY: plain system calls with valid arguments in the child.
        let ids_ok = unsafe {
            libc::setgroups(groups.len(), groups.as_ptr()) == 0
                && libc::setresgid(uid, uid, uid) == 0
                && libc::setresuid(uid, uid, uid) == 0
        };
        let ok = ids_ok
            && match f(&mut out) {
                Ok(()) => true,
                Err(e) => {
                    let _ = writeln!(out, "error {e:#}");
                    false
                }
            };
        if !ids_ok {
            let _ = writeln!(out, "error cannot become uid {uid}");
        }
        // SAFETY: leaving the forked child without the parent's cleanup.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    drop(wr);
    let mut text = String::new();
    let mut rd = rd;
    rd.read_to_string(&mut text)?;
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    ensure!(unsafe { libc::waitpid(pid, &mut status, 0) } == pid);
    ensure!(status == 0, "uid {uid} child failed ({status}):\n{text}");
    Ok((pid, text))
}

/// The child's part: attach, and on success take 3 rounds.
fn try_attach(out: &mut dyn Write, mode: EventMode) -> Result<()> {
    match attach_as(mode)? {
        Err(e) => writeln!(out, "attach errno {}", e.raw_os_error())?,
        Ok(mut l) => {
            take_rounds(&mut l, 3)?;
            writeln!(out, "attach ok rounds 3")?;
        }
    }
    Ok(())
}

/// The node open to everyone, so the rule alone decides.
fn open_node() -> Result<()> {
    std::fs::set_permissions(DEVICE_PATH, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("chmod 0666 {DEVICE_PATH}"))
}

fn attach_rule(ctx: &mut Ctx) -> Result<()> {
    let eperm = format!("attach errno {}", Errno::PERM.raw_os_error());
    let ok = "attach ok rounds 3";
    // Default: CAP_SYS_ADMIN only.
    both_loaded(ctx)?;
    open_node()?;
    let mode = ctx.params.event_mode()?;
    let (pid, text) = as_user(USER_UID, &[], |o| try_attach(o, mode))?;
    ensure!(text.trim() == eperm, "uid {USER_UID}, default rule: {text}");
    ctx.klog.wait_for(
        &format!("CREATE refused: channel <any> ({SAMPLE_PRODUCER_NAME}) does not let pid {pid} (euid {USER_UID}) attach"),
        timeout(),
    )?;
    // Root still attaches.
    let mut l = attach(ctx)?;
    take_rounds(&mut l, 3)?;
    drop(l);

    // attach_uid: that uid only.
    both_loaded_with(ctx, &format!("attach_uid={USER_UID}"))?;
    open_node()?;
    let (_, text) = as_user(USER_UID, &[], |o| try_attach(o, mode))?;
    ensure!(text.trim() == ok, "uid {USER_UID} with attach_uid: {text}");
    let (_, text) = as_user(OTHER_UID, &[], |o| try_attach(o, mode))?;
    ensure!(
        text.trim() == eperm,
        "uid {OTHER_UID} with attach_uid={USER_UID}: {text}"
    );

    // attach_gid: members of that group (a supplementary one here).
    both_loaded_with(ctx, &format!("attach_gid={GROUP_GID}"))?;
    open_node()?;
    let (_, text) = as_user(OTHER_UID, &[GROUP_GID], |o| try_attach(o, mode))?;
    ensure!(
        text.trim() == ok,
        "uid {OTHER_UID} in group {GROUP_GID}: {text}"
    );
    let (_, text) = as_user(USER_UID, &[], |o| try_attach(o, mode))?;
    ensure!(
        text.trim() == eperm,
        "uid {USER_UID} outside group {GROUP_GID}: {text}"
    );
    guest::unload_sample_producer()?;
    guest::rmmod(&mut ctx.klog)
}

/// The listener process L attaches, forks C (which inherits the device
/// file and the eventfds, and waits on a pipe) and exits. A new listener
/// attaches (before the fix: EBUSY for as long as C lived), takes rounds;
/// C's exit closes the left-behind file, and the new listener still takes
/// rounds.
fn orphaned_listener_file(ctx: &mut Ctx) -> Result<()> {
    both_loaded(ctx)?;
    let mode = ctx.params.event_mode()?;
    let (hold_rd, hold_wr) = std::io::pipe()?;
    let (rd, wr) = std::io::pipe()?;
    // SAFETY: the harness runs tests on its one thread; the child attaches,
    // forks and leaves with _exit.
    let l_pid = unsafe { libc::fork() };
    ensure!(l_pid >= 0, "fork failed");
    if l_pid == 0 {
        drop(rd);
        drop(hold_wr);
        let mut out = wr;
        let code = match attach_as(mode) {
            Ok(Ok(l)) => {
                // SAFETY: one thread here too; C only blocks on the pipe
                // and leaves with _exit.
                let c_pid = unsafe { libc::fork() };
                if c_pid == 0 {
                    // Only L writes the report: the test reads it to EOF.
                    drop(out);
                    let mut hold = hold_rd;
                    let mut b = [0u8; 1];
                    let _ = hold.read(&mut b);
                    drop(l);
                    // SAFETY: leaving the grandchild.
                    unsafe { libc::_exit(0) };
                }
                let _ = writeln!(out, "attached child {c_pid}");
                0
            }
            Ok(Err(e)) => {
                let _ = writeln!(out, "attach errno {}", e.raw_os_error());
                1
            }
            Err(e) => {
                let _ = writeln!(out, "error {e:#}");
                1
            }
        };
        // SAFETY: leaving the listener process.
        unsafe { libc::_exit(code) };
    }
    drop(wr);
    drop(hold_rd);
    let mut text = String::new();
    let mut rd = rd;
    rd.read_to_string(&mut text)?;
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    ensure!(unsafe { libc::waitpid(l_pid, &mut status, 0) } == l_pid);
    ensure!(
        status == 0 && text.starts_with("attached child "),
        "listener process: {text}"
    );
    // L is gone; C holds its file. A new listener gets the channel.
    let mut l = match attach_as(mode)? {
        Ok(l) => l,
        Err(e) => bail!(
            "attach after the listener exited, its child holding the file: {}",
            errno_text(e)
        ),
    };
    ctx.klog.wait_for(
        &format!("channel <any>: listener pid {l_pid} exited: its file is left behind"),
        timeout(),
    )?;
    take_rounds(&mut l, 3)?;
    // C exits: the file it held is closed.
    drop(hold_wr);
    ctx.klog.wait_for(
        "channel <any>: a file its exited listener left behind is closed",
        timeout(),
    )?;
    take_rounds(&mut l, 3).context("rounds after the left-behind file was closed")?;
    drop(l);
    ctx.klog
        .wait_for("channel <any>: listener left", timeout())?;
    guest::unload_sample_producer()?;
    guest::rmmod(&mut ctx.klog)
}

/// Lines of the listing with pacing `producer`.
fn producers_listed(ctx: &Ctx) -> Result<usize> {
    let text = ctx.params.read(kern2usr::abi::param::CHANNELS)?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| l.split(' ').nth(5) == Some("producer"))
        .count())
}

/// The errno of the first error in `e`'s chain that carries one (the
/// library's error or a bare errno).
fn chain_errno(e: &anyhow::Error) -> Option<Errno> {
    e.chain().find_map(|c| {
        c.downcast_ref::<kern2usr::Error>()
            .and_then(kern2usr::Error::errno)
            .or_else(|| c.downcast_ref::<Errno>().copied())
    })
}

fn producer_cap(ctx: &mut Ctx) -> Result<()> {
    use kern2usr::abi::param::MAX_CHANNELS;
    guest::fresh_module(&mut ctx.klog)?;
    ctx.params.write(MAX_CHANNELS, "1")?;
    // A user channel fills max_channels=1: a producer still gets its place.
    let user = crate::channels::Chan::create(4096, 0, 0, "user")?;
    guest::sh_ok(
        Path::new(KERN_DIR),
        &format!("insmod {} size={SAMPLE_SIZE} period_ms=5", sample_ko()),
    )
    .context("the producer with max_channels=1 taken by a user channel")?;
    ctx.klog.wait_for(
        &format!("channel <any> created: name={SAMPLE_PRODUCER_NAME} size={SAMPLE_SIZE} owner=0"),
        timeout(),
    )?;
    // The producer does not count against max_channels either.
    drop(user);
    ctx.klog.wait_for("channel <any> released", timeout())?;
    let user = crate::channels::Chan::create(4096, 0, 0, "user2")
        .context("a user channel with max_channels=1 beside a producer")?;
    match crate::channels::Chan::create(4096, 0, 0, "user3") {
        Ok(_) => bail!("a second user channel past max_channels=1"),
        Err(e) => ensure!(
            chain_errno(&e) == Some(Errno::NOSPC),
            "a second user channel past max_channels=1: {e:#}"
        ),
    }
    ctx.klog.wait_for(
        "CREATE refused: 1 channels exist (max_channels=1)",
        timeout(),
    )?;
    drop(user);
    guest::unload_sample_producer()?;

    // MAX_PRODUCERS at once; one more is ENOSPC, and what was made goes.
    let over = MAX_PRODUCERS; // the main channel + this many idle ones
    let err = guest::sh_fails(
        Path::new(KERN_DIR),
        &format!("insmod {} extra_channels={over}", sample_ko()),
    )?;
    ensure!(
        err.contains("No space left") || err.contains("space"),
        "insmod with {} producer channels failed, but said {err:?}",
        over + 1
    );
    ctx.klog.wait_for(
        &format!("producer refused: {MAX_PRODUCERS} producer channels exist (the most)"),
        timeout(),
    )?;
    ensure!(
        producers_listed(ctx)? == 0,
        "producer channels left after the refused load"
    );
    guest::sh_ok(
        Path::new(KERN_DIR),
        &format!("insmod {} extra_channels={}", sample_ko(), over - 1),
    )?;
    let n = producers_listed(ctx)?;
    ensure!(
        n == MAX_PRODUCERS as usize,
        "{n} producer channels listed, expected {MAX_PRODUCERS}"
    );
    guest::unload_sample_producer()?;
    guest::rmmod(&mut ctx.klog)
}
