//! Building blocks shared by the suites: an attached or mapped listener,
//! refusal checks, and this process acting as a minimal listener.

use std::io;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kern2usr::abi::{channel_pattern_byte, param, pattern_byte, Code, Event, SEED_DEVICE_PATH};
use kern2usr::{Device, Error, EventFd, Session};
use rustix::io::Errno;
use rustix::process::getpid;

use crate::guest::{self, timeout};
use crate::harness::Ctx;
use crate::listener::ListenerProc;

/// A fresh module and a listener attached to it through the parameters
/// (usr_pid/usr_efd/usr_efd2 + FIND), as in steps 4 and 6.
pub fn attached(ctx: &mut Ctx, extra: &[&str]) -> Result<ListenerProc> {
    guest::fresh_module(&mut ctx.klog)?;
    attach_new_listener(ctx, extra)
}

/// Start a listener and attach it to the loaded module.
pub fn attach_new_listener(ctx: &mut Ctx, extra: &[&str]) -> Result<ListenerProc> {
    let mut l = ListenerProc::spawn(extra)?;
    l.wait_line("Start polling...", timeout())?;
    ctx.params.attach(l.pid(), 3, 4)?;
    ctx.params.command(Code::Find)?;
    let pid = l.pid().as_raw_nonzero();
    ctx.klog.wait_for(
        &format!("Received from userspace: usr_pid={pid}, efd=3, efd2=4"),
        timeout(),
    )?;
    Ok(l)
}

/// MMAP (2) and the listener's mapping lines.
pub fn map(ctx: &mut Ctx, l: &mut ListenerProc) -> Result<()> {
    ctx.params.command(Code::Mmap)?;
    let lines = mmap_lines();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    l.expect_code_block(2, &lines, timeout())?;
    Ok(())
}

/// The listener's lines after `In handling_polling value in eventfd = 2`
/// (the seed's step 7); the mmap line captures the device fd.
pub fn mmap_lines() -> [String; 4] {
    [
        "Got mmap command in polling eventfd".to_string(),
        format!("Char dev {SEED_DEVICE_PATH} opened"),
        "Memory from char dev = <n> mmaped to 0x<hex>".to_string(),
        "handling_polling done!".to_string(),
    ]
}

/// [`attached`] and [`map`].
pub fn mapped(ctx: &mut Ctx, extra: &[&str]) -> Result<ListenerProc> {
    let mut l = attached(ctx, extra)?;
    map(ctx, &mut l)?;
    Ok(l)
}

/// START (3) and `n` complete rounds in the kernel log.
pub fn start_and_wait_rounds(ctx: &mut Ctx, l: &mut ListenerProc, n: usize) -> Result<()> {
    ctx.params.command(Code::StartTest)?;
    ctx.klog.wait_for("Timer is started.", timeout())?;
    l.expect_code_block(3, &["handling_polling done!"], timeout())?;
    wait_rounds(ctx, n)
}

/// `n` more complete rounds (`Exit from __monitor_efd2` lines) in the log.
pub fn wait_rounds(ctx: &mut Ctx, n: usize) -> Result<()> {
    let period = ctx.params.period()?;
    let t = guest::scaled(period * n as u32 + Duration::from_secs(10));
    for _ in 0..n {
        ctx.klog.wait_for("Time to copy = <n>", t)?;
        ctx.klog.wait_for("Exit from __monitor_efd2", t)?;
    }
    Ok(())
}

/// STOP (4) then EXIT (5): the listener prints its last lines and exits 0
/// with nothing on stderr.
pub fn stop_and_exit(ctx: &mut Ctx, l: &mut ListenerProc) -> Result<()> {
    ctx.params.command(Code::StopTest)?;
    ctx.klog
        .wait_in_order(&["Timer is deleted.", "Avg copy time = <n>"], timeout())?;
    l.expect_code_block(4, &["handling_polling done!"], timeout())?;
    exit_listener(ctx, l)
}

/// EXIT (5): the listener's last lines, exit 0, and the module detaches.
pub fn exit_listener(ctx: &mut Ctx, l: &mut ListenerProc) -> Result<()> {
    ctx.params.command(Code::ExitTest)?;
    l.expect_code_block(
        5,
        &[
            "Stop polling cmd received",
            "handling_polling done!",
            "done!",
        ],
        timeout(),
    )?;
    l.expect_clean_exit()?;
    ctx.klog
        .wait_for("listener closed its eventfd: detached", timeout())?;
    Ok(())
}

/// Every byte of round `seq` of channel `id`: the default channel's
/// pattern (id 0) or the channel's own.
pub fn check_round(id: u32, seq: u64, data: &[u8]) -> Result<()> {
    let want = |i: usize| match id {
        0 => pattern_byte(i),
        _ => channel_pattern_byte(id, seq, i),
    };
    if let Some((i, &got)) = data.iter().enumerate().find(|&(i, &b)| b != want(i)) {
        bail!(
            "channel {id} round {seq}: byte {i} of {} is {got:#04x}, expected {:#04x}",
            data.len(),
            want(i)
        );
    }
    Ok(())
}

/// The errno's description, as `write()` errors print.
pub fn errno_text(errno: Errno) -> String {
    io::Error::from(errno).to_string()
}

/// Writing `text` to cur_cmd must fail with `errno`, log
/// `command <n> (<NAME>) refused: <reason>` and leave that reason in
/// last_error. Returns the reason.
pub fn expect_refused(ctx: &mut Ctx, text: &str, errno: Errno) -> Result<String> {
    let cur_before = ctx.params.read(param::CUR_CMD)?;
    let err = match ctx.params.command_text(text) {
        Ok(()) => bail!(
            "command {text:?} was accepted; expected {}",
            errno_text(errno)
        ),
        Err(e) => e,
    };
    let Error::CommandRefused { errno: got, .. } = &err else {
        return Err(err).context(format!("writing {text:?} to cur_cmd"));
    };
    ensure!(
        *got == errno,
        "command {text:?} refused with {}, expected {}",
        errno_text(*got),
        errno_text(errno)
    );
    let pattern = match text.parse::<u64>().ok().and_then(Code::from_value) {
        Some(code) => format!("command {text} ({}) refused: <any>", code.name()),
        None if text.parse::<i64>().is_ok() => format!("command {text} (<word>) refused: <any>"),
        None => "command <any> refused: <any>".to_owned(),
    };
    let caps = ctx.klog.wait_for(&pattern, timeout())?;
    let logged = caps.last().cloned().unwrap_or_default();
    let last_error = ctx.params.last_error()?;
    ensure!(
        !last_error.trim().is_empty(),
        "last_error is empty after refusing {text:?}"
    );
    ensure!(
        last_error.trim() == logged.trim(),
        "last_error {last_error:?} differs from the logged reason {logged:?}"
    );
    let cur_after = ctx.params.read(param::CUR_CMD)?;
    ensure!(
        cur_after == cur_before,
        "cur_cmd changed from {cur_before:?} to {cur_after:?} although {text:?} was refused"
    );
    Ok(logged)
}

/// A parameter write that the module must refuse with EINVAL, leaving the
/// old value.
pub fn expect_param_refused(ctx: &mut Ctx, name: &str, value: &str) -> Result<()> {
    let before = ctx.params.read(name)?;
    match ctx.params.write(name, value) {
        Ok(()) => bail!(
            "{name}={value} was accepted; expected {}",
            errno_text(Errno::INVAL)
        ),
        Err(e) => ensure!(
            e.errno() == Some(Errno::INVAL),
            "{name}={value}: {e}; expected {}",
            errno_text(Errno::INVAL)
        ),
    }
    let after = ctx.params.read(name)?;
    ensure!(
        after == before,
        "{name} changed from {before:?} to {after:?} although refused"
    );
    Ok(())
}

/// This process as a bare listener: its own two eventfds (numbers vary),
/// codes read in either event mode by the library's [`Session`] (sequence
/// numbers checked in queue mode).
pub struct SelfListener {
    session: Session,
}

impl SelfListener {
    /// Eventfds and the device of the loaded module (nothing attached yet).
    pub fn new(ctx: &mut Ctx) -> Result<Self> {
        Self::with_efd(ctx, EventFd::new()?)
    }

    /// As [`SelfListener::new`], with this kernel->user eventfd.
    pub fn with_efd(ctx: &mut Ctx, efd: EventFd) -> Result<Self> {
        let efd2 = EventFd::new()?;
        let dev = Device::open(SEED_DEVICE_PATH)?;
        let mode = ctx.params.event_mode()?;
        Ok(Self {
            session: Session::from_parts(efd, efd2, dev, mode),
        })
    }

    /// kernel->user.
    pub fn efd(&self) -> &EventFd {
        self.session.efd()
    }

    /// user->kernel.
    pub fn efd2(&self) -> &EventFd {
        self.session.efd2()
    }

    /// The device, for records and ioctls.
    pub fn dev(&self) -> &Device {
        self.session.device()
    }

    /// Attach through the parameters and FIND.
    pub fn attach_by_params(&self, ctx: &mut Ctx) -> Result<()> {
        use std::os::fd::AsRawFd;
        ctx.params
            .attach(getpid(), self.efd().as_raw_fd(), self.efd2().as_raw_fd())?;
        ctx.params.command(Code::Find)?;
        ctx.klog
            .wait_for("Received from userspace: <any>", timeout())?;
        Ok(())
    }

    /// The next delivered code (checking sequence numbers in queue mode).
    pub fn next_code(&mut self, timeout: Duration) -> Result<u64> {
        Ok(u64::from(self.next_event(timeout)?.code))
    }

    /// The next delivered event: the record in queue mode (its sequence
    /// number checked), the code with seq and round 0 in counter mode.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Event> {
        self.event_within(timeout)?
            .with_context(|| format!("no code delivered within {timeout:?}"))
    }

    /// As [`SelfListener::next_event`], `None` when none is delivered
    /// within `timeout`.
    pub fn event_within(&mut self, timeout: Duration) -> Result<Option<Event>> {
        match self.session.next_record(timeout)? {
            Some((_, Some(ev))) => Ok(Some(ev)),
            Some((counter, None)) => {
                let code = u32::try_from(counter).with_context(|| format!("efd read {counter}"))?;
                Ok(Some(Event {
                    seq: 0,
                    code,
                    round: 0,
                }))
            }
            None => Ok(None),
        }
    }

    /// The next code must be `code`.
    pub fn expect_code(&mut self, code: Code) -> Result<()> {
        let got = self.next_code(timeout())?;
        ensure!(
            got == u64::from(code.value()),
            "got code {got}, expected {} ({})",
            code.value(),
            code.name()
        );
        Ok(())
    }
}
