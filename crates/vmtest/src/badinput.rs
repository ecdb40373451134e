//! The `badinput` suite: every refusal of PROTOCOL.md, bad parameters, bad
//! mmaps and ioctls, and the module's lifetime when the listener misbehaves.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{self, ioc, param, Code, EventMode, IOC_MAGIC, MODULE_NAME};
use kern2usr::{Access, Device, EventFd};
use rustix::io::Errno;
use rustix::ioctl::{NoArg, Opcode};
use rustix::process::{getpid, Signal};

use crate::burst;
use crate::common::{
    attach_new_listener, attached, errno_text, exit_listener, expect_param_refused, expect_refused,
    map, mapped, start_and_wait_rounds, stop_and_exit, wait_rounds, SelfListener,
};
use crate::guest::{self, sh_fails, sh_ok, timeout, KERN_DIR, MODULE_FILE};
use crate::harness::{Ctx, Test};
use crate::listener::ListenerProc;

/// The suite's tests.
pub const TESTS: &[Test] = &[
    (
        "cur_cmd: values that are no command (0 6 7 9 -1 abc) are EINVAL",
        not_a_command,
    ),
    ("FIND with usr_pid unset is EINVAL", find_without_pid),
    (
        "FIND with usr_efd/usr_efd2 unset is EINVAL, then a valid FIND works",
        find_without_efds,
    ),
    (
        "FIND with a pid that is no process is ESRCH",
        find_no_process,
    ),
    (
        "FIND with an fd not open in the process is EBADF, then a valid FIND works",
        find_fd_not_open,
    ),
    (
        "FIND with an fd that is not an eventfd is EINVAL",
        find_not_eventfd,
    ),
    ("FIND with usr_efd == usr_efd2 is EINVAL", find_same_fd),
    (
        "FIND while the test runs is EBUSY and the rounds go on",
        find_while_running,
    ),
    ("MMAP/START/STOP/EXIT before FIND are EPROTO", before_find),
    (
        "commands after the listener left are EPROTO",
        after_listener_left,
    ),
    (
        "START before MMAP is EPROTO, then the sequence still works",
        start_before_mmap,
    ),
    (
        "START while running is EBUSY and the rounds go on",
        start_while_running,
    ),
    (
        "STOP while not running is EPROTO, then the sequence still works",
        stop_not_running,
    ),
    (
        "event queue full is EAGAIN, accepted commands all arrive",
        queue_full,
    ),
    ("usr_pid -5 and 0 are EINVAL", bad_usr_pid),
    ("usr_efd/usr_efd2 -1 are EINVAL", bad_usr_efd),
    (
        "period_ms 0, 60001 and abc are EINVAL; 1 and 60000 are accepted",
        bad_period,
    ),
    (
        "insmod with a bad buffer_size fails; buffer_size=65536 works end to end",
        buffer_size,
    ),
    (
        "mmap longer than buffer_size is EINVAL with `mmap refused:`",
        mmap_too_long,
    ),
    (
        "mmap at a non-zero offset is EINVAL with `mmap refused:`",
        mmap_offset,
    ),
    ("unknown ioctls are ENOTTY", unknown_ioctl),
    (
        "K2U_IOC_INFO reports ABI version, event mode, buffer size and period",
        ioctl_info,
    ),
    (
        "K2U_IOC_ACK with no round outstanding is EPROTO",
        ack_without_round,
    ),
    (
        "K2U_IOC_REGISTER attaches the caller; codes and ioctl acks work",
        ioctl_register,
    ),
    (
        "read() of event records: EINVAL in counter mode or with a short buffer",
        read_einval,
    ),
    (
        "a value other than 7 on efd2 is logged and ignored",
        efd2_wrong_value,
    ),
    (
        "listener killed (kill -9) mid-round: module detaches, rmmod works",
        killed_mid_round,
    ),
    (
        "rmmod while the listener has the buffer mapped fails; the module keeps working",
        rmmod_while_mapped,
    ),
    (
        "rmmod with the timer running and a listener attached works",
        rmmod_timer_running,
    ),
    (
        "listener exiting (SIGTERM) while the timer runs: detached, rmmod works",
        listener_exits_while_running,
    ),
    (
        "listener with --ack ioctl completes rounds",
        ack_ioctl_listener,
    ),
    (
        "listener with --ack eventfd (7 on efd2, the seed's) completes rounds",
        ack_eventfd_listener,
    ),
];

fn not_a_command(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    for text in ["0", "6", "7", "9", "-1", "abc"] {
        expect_refused(ctx, text, Errno::INVAL)?;
    }
    Ok(())
}

fn find_without_pid(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    expect_refused(ctx, "1", Errno::INVAL).map(drop)
}

fn find_without_efds(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let mut l = ListenerProc::spawn(&[])?;
    l.wait_line("Start polling...", timeout())?;
    for name in [param::USR_EFD, param::USR_EFD2] {
        let v: i64 = ctx.params.read_parsed(name, "a number")?;
        ensure!(
            v < 0,
            "{name} is {v} after load; PROTOCOL.md implies an unset (negative) default"
        );
    }
    ctx.params
        .write(param::USR_PID, &l.pid().as_raw_nonzero().to_string())?;
    expect_refused(ctx, "1", Errno::INVAL)?;
    // Unchanged: a complete, valid attachment still works.
    drop(l);
    let mut l = attach_new_listener(ctx, &[])?;
    map(ctx, &mut l)?;
    exit_listener(ctx, &mut l)
}

/// A pid that belonged to a process that has exited and been reaped.
fn dead_pid() -> Result<u32> {
    let mut child = std::process::Command::new("sh")
        .args(["-c", "exit 0"])
        .spawn()?;
    let pid = child.id();
    child.wait()?;
    ensure!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} was reused already"
    );
    Ok(pid)
}

fn find_no_process(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let pid = dead_pid()?;
    ctx.params.write(param::USR_PID, &pid.to_string())?;
    ctx.params.write(param::USR_EFD, "3")?;
    ctx.params.write(param::USR_EFD2, "4")?;
    expect_refused(ctx, "1", Errno::SRCH).map(drop)
}

fn refused_find_with(ctx: &mut Ctx, efd: i32, efd2: i32, errno: Errno) -> Result<ListenerProc> {
    guest::fresh_module(&mut ctx.klog)?;
    let mut l = ListenerProc::spawn(&[])?;
    l.wait_line("Start polling...", timeout())?;
    ctx.params.attach(l.pid(), efd, efd2)?;
    expect_refused(ctx, "1", errno)?;
    Ok(l)
}

fn find_fd_not_open(ctx: &mut Ctx) -> Result<()> {
    let mut l = refused_find_with(ctx, 3, 77, Errno::BADF)?;
    ctx.params.attach(l.pid(), 3, 4)?;
    ctx.params.command(Code::Find)?;
    ensure!(
        ctx.params.last_error()?.trim().is_empty(),
        "last_error not cleared by an accepted FIND"
    );
    map(ctx, &mut l)?;
    exit_listener(ctx, &mut l)
}

fn find_not_eventfd(ctx: &mut Ctx) -> Result<()> {
    // fd 1 is the listener's stdout (a pipe).
    refused_find_with(ctx, 1, 4, Errno::INVAL).map(drop)
}

fn find_same_fd(ctx: &mut Ctx) -> Result<()> {
    refused_find_with(ctx, 3, 3, Errno::INVAL).map(drop)
}

fn find_while_running(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &[])?;
    start_and_wait_rounds(ctx, &mut l, 1)?;
    expect_refused(ctx, "1", Errno::BUSY)?;
    wait_rounds(ctx, 2)?;
    stop_and_exit(ctx, &mut l)
}

fn before_find(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    for code in ["2", "3", "4", "5"] {
        expect_refused(ctx, code, Errno::PROTO)?;
    }
    Ok(())
}

fn after_listener_left(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &[])?;
    exit_listener(ctx, &mut l)?;
    for code in ["2", "3", "4", "5"] {
        expect_refused(ctx, code, Errno::PROTO)?;
    }
    Ok(())
}

fn start_before_mmap(ctx: &mut Ctx) -> Result<()> {
    let mut l = attached(ctx, &[])?;
    expect_refused(ctx, "3", Errno::PROTO)?;
    map(ctx, &mut l)?;
    let le = ctx.params.last_error()?;
    ensure!(
        le.trim().is_empty(),
        "last_error {le:?} not cleared by the accepted MMAP"
    );
    start_and_wait_rounds(ctx, &mut l, 2)?;
    stop_and_exit(ctx, &mut l)
}

fn start_while_running(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &[])?;
    start_and_wait_rounds(ctx, &mut l, 1)?;
    expect_refused(ctx, "3", Errno::BUSY)?;
    wait_rounds(ctx, 1)?;
    stop_and_exit(ctx, &mut l)
}

fn stop_not_running(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &[])?;
    expect_refused(ctx, "4", Errno::PROTO)?;
    start_and_wait_rounds(ctx, &mut l, 1)?;
    stop_and_exit(ctx, &mut l)
}

fn queue_full(ctx: &mut Ctx) -> Result<()> {
    burst::queue_full(ctx)
}

fn bad_usr_pid(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    expect_param_refused(ctx, param::USR_PID, "-5")?;
    expect_param_refused(ctx, param::USR_PID, "0")
}

fn bad_usr_efd(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    expect_param_refused(ctx, param::USR_EFD, "-1")?;
    expect_param_refused(ctx, param::USR_EFD2, "-1")
}

fn bad_period(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    for bad in ["0", "60001", "abc"] {
        expect_param_refused(ctx, param::PERIOD_MS, bad)?;
    }
    for good in ["1", "60000", "500"] {
        ctx.params.write(param::PERIOD_MS, good)?;
        let got = ctx.params.read(param::PERIOD_MS)?;
        ensure!(
            got.trim() == good,
            "period_ms reads {got:?} after writing {good}"
        );
    }
    Ok(())
}

fn buffer_size(ctx: &mut Ctx) -> Result<()> {
    let kern = Path::new(KERN_DIR);
    for bad in ["1000", &(abi::MAX_BUFFER_SIZE + 4096).to_string()] {
        sh_fails(kern, &format!("insmod {MODULE_FILE} buffer_size={bad}"))
            .with_context(|| format!("buffer_size={bad}"))?;
        ensure!(
            !guest::module_loaded(),
            "the module loaded with buffer_size={bad}"
        );
    }
    guest::insmod(&mut ctx.klog, "buffer_size=65536")?;
    guest::create_node()?;
    ensure!(
        ctx.params.buffer_size()? == 65536,
        "buffer_size does not read 65536"
    );
    let info = Device::open(abi::SEED_DEVICE_PATH)?.info()?;
    ensure!(
        info.buffer_size == 65536,
        "K2U_IOC_INFO says buffer_size {}",
        info.buffer_size
    );
    let mut l = attach_new_listener(ctx, &[])?;
    map(ctx, &mut l)?;
    start_and_wait_rounds(ctx, &mut l, 2)?;
    stop_and_exit(ctx, &mut l)
}

fn expect_mmap_refused(ctx: &mut Ctx, len: usize, offset: u64) -> Result<()> {
    let dev = Device::open(abi::SEED_DEVICE_PATH)?;
    match dev.map_at(len, offset, Access::ReadWrite) {
        Ok(_) => bail!("mmap of {len} bytes at offset {offset} was accepted"),
        Err(e) => ensure!(
            e.errno() == Some(Errno::INVAL),
            "mmap of {len} bytes at offset {offset}: {e}; expected {}",
            errno_text(Errno::INVAL)
        ),
    }
    ctx.klog.wait_for("mmap refused: <any>", timeout())?;
    Ok(())
}

fn mmap_too_long(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let size = ctx.params.buffer_size()?;
    expect_mmap_refused(ctx, size + 4096, 0)?;
    // The whole buffer maps (read-write, shared) and reads zero before any round.
    let dev = Device::open(abi::SEED_DEVICE_PATH)?;
    let buf = dev.map(size, Access::ReadWrite)?;
    ensure!(
        buf.to_vec().iter().all(|&b| b == 0),
        "the buffer is not zeroed at load"
    );
    Ok(())
}

fn mmap_offset(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    expect_mmap_refused(ctx, 4096, 4096)
}

const BOGUS_IOCTL: Opcode = ioc(0, IOC_MAGIC, 0x7f, 0) as Opcode;
const FOREIGN_IOCTL: Opcode = ioc(0, b'T', 0x01, 0) as Opcode;

fn unknown_ioctl(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let dev = Device::open(abi::SEED_DEVICE_PATH)?;
    // SAFETY: a no-argument request: nothing is passed to the kernel.
    let r1 = unsafe { rustix::ioctl::ioctl(&dev, NoArg::<BOGUS_IOCTL>::new()) };
    // SAFETY: as above.
    let r2 = unsafe { rustix::ioctl::ioctl(&dev, NoArg::<FOREIGN_IOCTL>::new()) };
    for (r, what) in [(r1, "kern2usr nr 0x7f"), (r2, "a foreign ioctl")] {
        ensure!(r == Err(Errno::NOTTY), "{what}: {r:?}, expected ENOTTY");
    }
    Ok(())
}

fn ioctl_info(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    ctx.params.write(param::PERIOD_MS, "250")?;
    let info = Device::open(abi::SEED_DEVICE_PATH)?.info()?;
    let mode = ctx.params.event_mode()?;
    ensure!(
        info.abi_version == abi::ABI_VERSION,
        "abi_version {} != {}",
        info.abi_version,
        abi::ABI_VERSION
    );
    ensure!(
        info.event_mode == mode as u32,
        "event_mode {} but the parameter says {}",
        info.event_mode,
        mode.name()
    );
    ensure!(
        info.buffer_size == ctx.params.buffer_size()? as u64,
        "buffer_size {} differs from the parameter",
        info.buffer_size
    );
    ensure!(
        info.period_ms == 250,
        "period_ms {} after writing 250",
        info.period_ms
    );
    Ok(())
}

fn ack_without_round(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let dev = Device::open(abi::SEED_DEVICE_PATH)?;
    let r = dev.ack();
    ensure!(
        r.as_ref().err().and_then(|e| e.errno()) == Some(Errno::PROTO),
        "K2U_IOC_ACK: {r:?}, expected {}",
        errno_text(Errno::PROTO)
    );
    Ok(())
}

/// Handle codes until `want`, acknowledging MEMORY_READY (6) on the way.
fn until_code(me: &mut SelfListener, want: Code, ack_ioctl: bool) -> Result<()> {
    loop {
        let code = me.next_code(timeout())?;
        if code == u64::from(want.value()) {
            return Ok(());
        }
        ensure!(
            code == 6,
            "got code {code} while waiting for {}",
            want.value()
        );
        if ack_ioctl {
            me.dev().ack()?;
        } else {
            me.efd2().write(7)?;
        }
    }
}

fn ioctl_register(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let mut me = SelfListener::new(ctx)?;
    me.dev().register(me.efd().as_fd(), me.efd2().as_fd())?;
    let pid = getpid().as_raw_nonzero();
    let pid_now = ctx.params.read(param::USR_PID)?;
    ensure!(
        pid_now.trim() == pid.to_string(),
        "usr_pid reads {pid_now:?}, not the registering pid {pid}"
    );
    ctx.params.command(Code::Mmap)?;
    me.expect_code(Code::Mmap)?;
    let _buf = me.dev().map(ctx.params.buffer_size()?, Access::ReadOnly)?;
    ctx.params.command(Code::StartTest)?;
    me.expect_code(Code::StartTest)?;
    me.expect_code(Code::MemoryReady)?;
    me.dev().ack()?;
    ctx.klog.wait_for("Time to copy = <n>", timeout())?;
    ctx.params.command(Code::StopTest)?;
    until_code(&mut me, Code::StopTest, true)?;
    ctx.params.command(Code::ExitTest)?;
    me.expect_code(Code::ExitTest)?;
    Ok(())
}

fn read_einval(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let dev = Device::open(abi::SEED_DEVICE_PATH)?;
    let (len, why) = match ctx.params.event_mode()? {
        EventMode::Counter => (16, "in counter mode"),
        EventMode::Queue => (8, "with an 8-byte buffer"),
    };
    let mut buf = vec![0u8; len];
    let r = rustix::io::read(&dev, &mut buf);
    ensure!(
        r == Err(Errno::INVAL),
        "read() {why}: {r:?}, expected EINVAL"
    );
    Ok(())
}

fn efd2_wrong_value(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    let mut me = SelfListener::new(ctx)?;
    me.attach_by_params(ctx)?;
    ctx.params.command(Code::Mmap)?;
    me.expect_code(Code::Mmap)?;
    ctx.params.command(Code::StartTest)?;
    me.expect_code(Code::StartTest)?;
    me.expect_code(Code::MemoryReady)?;
    ctx.klog.wait_for("Buffer filled", timeout())?;
    me.efd2().write(9)?;
    // The wrong value is logged (PROTOCOL.md's line for it) before any
    // copy time...
    let ignored = efd2_value_ignored_line(9);
    ctx.klog
        .wait_until(&format!("`{ignored}`"), timeout(), |lines| {
            logs_ignored_value(lines, 9)
        })?;
    let early = ctx.klog.ours_after_cursor();
    ensure!(
        !early.iter().any(|l| l.starts_with("Time to copy")),
        "the round completed on a 9: {early:?}"
    );
    // ...and only 7 completes the round.
    me.efd2().write(7)?;
    ctx.klog.wait_for("Time to copy = <n>", timeout())?;
    ctx.params.command(Code::StopTest)?;
    until_code(&mut me, Code::StopTest, false)?;
    ctx.params.command(Code::ExitTest)?;
    me.expect_code(Code::ExitTest)
}

/// The line PROTOCOL.md gives for a value on efd2 that is no multiple of
/// 7 (prefix stripped).
fn efd2_value_ignored_line(value: u64) -> String {
    format!("unexpected value {value} on efd2 ignored")
}

/// Whether `lines` (prefix stripped) hold the module's line for `value`
/// ignored on efd2: that exact line, no other mention of the number.
fn logs_ignored_value(lines: &[&str], value: u64) -> bool {
    let want = efd2_value_ignored_line(value);
    lines.iter().any(|l| *l == want)
}

fn killed_mid_round(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &[])?;
    start_and_wait_rounds(ctx, &mut l, 1)?;
    // Stopped, the listener cannot ack: the next round stays outstanding.
    l.signal(Signal::STOP)?;
    ctx.klog.wait_for("Buffer filled", timeout())?;
    let pid = l.pid().as_raw_nonzero();
    sh_ok(Path::new(KERN_DIR), &format!("kill -9 {pid}"))?;
    let status = l.wait_exit(timeout())?;
    ensure!(
        !status.success(),
        "the killed listener exited with {status}"
    );
    ctx.klog
        .wait_for("listener closed its eventfd: detached", timeout())?;
    guest::rmmod(&mut ctx.klog)
}

fn rmmod_while_mapped(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &[])?;
    sh_fails(Path::new(KERN_DIR), &format!("rmmod {MODULE_NAME}"))?;
    ensure!(
        guest::module_loaded(),
        "rmmod removed the module while it was mapped"
    );
    start_and_wait_rounds(ctx, &mut l, 2)?;
    stop_and_exit(ctx, &mut l)?;
    guest::rmmod(&mut ctx.klog)
}

fn rmmod_timer_running(ctx: &mut Ctx) -> Result<()> {
    guest::fresh_module(&mut ctx.klog)?;
    // This process attaches but never opens the device, so rmmod is allowed
    // while the timer runs and a round is outstanding.
    let efd = EventFd::new()?;
    let efd2 = EventFd::new()?;
    ctx.params
        .attach(getpid(), efd.as_raw_fd(), efd2.as_raw_fd())?;
    ctx.params.command(Code::Find)?;
    // Read each code (counter mode posts the next only after a read).
    let take = |efd: &EventFd| -> Result<u64> {
        ensure!(efd.wait_readable(timeout())?, "no code delivered on efd");
        Ok(efd.read()?)
    };
    ctx.params.command(Code::Mmap)?;
    take(&efd)?;
    ctx.params.command(Code::StartTest)?;
    take(&efd)?;
    ctx.klog
        .wait_in_order(&["Timer is started.", "Buffer filled"], timeout())?;
    guest::rmmod(&mut ctx.klog)?;
    // Closing the eventfds after the module is gone must be harmless.
    drop(efd);
    drop(efd2);
    Ok(())
}

fn listener_exits_while_running(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &[])?;
    start_and_wait_rounds(ctx, &mut l, 1)?;
    l.signal(Signal::TERM)?;
    l.wait_exit(timeout())?;
    ctx.klog
        .wait_for("listener closed its eventfd: detached", timeout())?;
    guest::rmmod(&mut ctx.klog)
}

fn ack_ioctl_listener(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &["--ack", "ioctl"])?;
    start_and_wait_rounds(ctx, &mut l, 3)?;
    stop_and_exit(ctx, &mut l)
}

fn ack_eventfd_listener(ctx: &mut Ctx) -> Result<()> {
    let mut l = mapped(ctx, &["--ack", "eventfd"])?;
    start_and_wait_rounds(ctx, &mut l, 3)?;
    stop_and_exit(ctx, &mut l)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines that name a 9 without being the module's answer to a 9 on
    /// efd2 (the old check, "contains '9' and is no Time to copy line",
    /// took each of them) do not count; only PROTOCOL.md's line does.
    #[test]
    fn only_the_protocol_line_shows_an_ignored_value() {
        let near_misses = [
            "Received from userspace: usr_pid=97, efd=3, efd2=4",
            "In handler: buffer_filled = 1, calculation_done = 9",
            "Avg copy time = 91234",
            "unexpected value 99 on efd2 ignored",
            "unexpected value 9 on efd ignored",
            "late ack ignored: round 9 not shown yet",
        ];
        for line in near_misses {
            assert!(!logs_ignored_value(&[line], 9), "{line}");
        }
        assert!(!logs_ignored_value(&near_misses, 9));
        let mut with = near_misses.to_vec();
        with.push("unexpected value 9 on efd2 ignored");
        assert!(logs_ignored_value(&with, 9));
        assert!(!logs_ignored_value(&with, 14));
    }
}
