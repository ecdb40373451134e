// SPDX-License-Identifier: GPL-2.0-only

//! The module parameters, as C's `module_param_cb()` makes them.
//!
//! `module!`'s parameters are load-time only (not in sysfs), so each
//! parameter here is a `struct kernel_param` of our own in the `__param`
//! section, with its permissions and its `set`/`get` callbacks: writing
//! `cur_cmd` runs a command and its errno reaches the writer. The kernel
//! calls both callbacks with the module's parameter lock held. The values
//! live in atomics (they are set at load time, before the device exists).

use kernel::{
    bindings,
    error::to_result,
    fmt::{self, Write},
    module_param::KernelParam,
    page::PAGE_SIZE,
    prelude::*,
    str::{kstrtobool_bytes, BStr, Formatter},
    sync::atomic::{Atomic, Relaxed},
};

use crate::abi::{self, param, EventMode};
use crate::cmd;
use crate::state::{self, Channel, Locked};
use crate::stats::Stats;
use crate::sys;

static USR_PID: Atomic<i32> = Atomic::new(0);
static USR_EFD: Atomic<i32> = Atomic::new(-1);
static USR_EFD2: Atomic<i32> = Atomic::new(-1);
static CUR_CMD: Atomic<u32> = Atomic::new(0);
static PERIOD_MS: Atomic<u32> = Atomic::new(abi::DEFAULT_PERIOD_MS);
static BUFFER_SIZE: Atomic<usize> = Atomic::new(abi::DEFAULT_BUFFER_SIZE as usize);
/// Changed only while no test runs (under the device mutex once it exists).
static BACK_TO_BACK: Atomic<bool> = Atomic::new(false);
static ADAPTIVE: Atomic<bool> = Atomic::new(false);
static MAX_CHANNELS: Atomic<u32> = Atomic::new(abi::DEFAULT_MAX_CHANNELS);
static MAX_CHANNEL_MEMORY: Atomic<u64> = Atomic::new(abi::DEFAULT_MAX_CHANNEL_MEMORY);
/// Read once per round (C's READ_ONCE); writable at any time.
static ACK_POLL_US: Atomic<u32> = Atomic::new(0);

/// `usr_pid`, `usr_efd`, `usr_efd2`.
pub(crate) fn usr() -> (i32, i32, i32) {
    (
        USR_PID.load(Relaxed),
        USR_EFD.load(Relaxed),
        USR_EFD2.load(Relaxed),
    )
}

/// `K2U_IOC_REGISTER` attached the caller: show it in the parameters too.
/// The caller holds the parameter lock, like a sysfs write.
pub(crate) fn note_registered(pid: i32, efd: i32, efd2: i32) {
    USR_PID.store(pid, Relaxed);
    USR_EFD.store(efd, Relaxed);
    USR_EFD2.store(efd2, Relaxed);
}

pub(crate) fn set_cur_cmd(cmd: u32) {
    CUR_CMD.store(cmd, Relaxed);
}

pub(crate) fn period_ms() -> u32 {
    PERIOD_MS.load(Relaxed)
}

pub(crate) fn buffer_size() -> usize {
    BUFFER_SIZE.load(Relaxed)
}

pub(crate) fn back_to_back() -> bool {
    BACK_TO_BACK.load(Relaxed)
}

pub(crate) fn adaptive() -> bool {
    ADAPTIVE.load(Relaxed)
}

pub(crate) fn max_channels() -> u32 {
    MAX_CHANNELS.load(Relaxed)
}

pub(crate) fn max_channel_memory() -> u64 {
    MAX_CHANNEL_MEMORY.load(Relaxed)
}

/// `ack_poll_us`: how long the round work polls `ack_seq` before it
/// sleeps on efd2 (0: never).
pub(crate) fn ack_poll_us() -> u32 {
    ACK_POLL_US.load(Relaxed)
}

/// The callbacks of one parameter.
trait Param {
    /// A write, or the value given at load time.
    fn set(val: &CStr) -> Result;
    /// The sysfs contents, newline included.
    fn show(f: &mut Formatter<'_>) -> fmt::Result;
}

/// `kernel_param_ops.set` for `P`.
///
/// # Safety
///
/// `val` is NULL or a NUL-terminated string valid for the call (the kernel's
/// contract for `set`).
unsafe extern "C" fn set_cb<P: Param>(
    val: *const c_char,
    _kp: *const bindings::kernel_param,
) -> c_int {
    if val.is_null() {
        return EINVAL.to_errno();
    }
    // SAFETY: `parse_args()` at load time and `param_attr_store()` for a
    // sysfs write pass a NUL-terminated string that outlives the call.
    let val = unsafe { CStr::from_char_ptr(val) };
    match P::set(val) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `kernel_param_ops.get` for `P`.
///
/// # Safety
///
/// `buf` is a writable buffer of `PAGE_SIZE` bytes (the kernel's contract
/// for `get`).
unsafe extern "C" fn get_cb<P: Param>(
    buf: *mut c_char,
    _kp: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: `param_attr_show()` passes sysfs's page buffer, `PAGE_SIZE`
    // writable bytes that are ours for the call.
    let page = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), PAGE_SIZE) };
    // As `sysfs_emit()`: at most `PAGE_SIZE - 1` bytes and a NUL (sysfs
    // warns about a `show` that returns `PAGE_SIZE` or more); the rest is cut.
    let (text, _) = page.split_at_mut(PAGE_SIZE - 1);
    let mut f = Formatter::new(text);
    let _ = P::show(&mut f);
    let len = f.bytes_written().min(PAGE_SIZE - 1);
    if let Some(nul) = page.get_mut(len) {
        *nul = 0;
    }
    len as c_int
}

/// Defines parameters: `name: Handler, permissions, "description";`. Each
/// gets its `kernel_param_ops`, its `kernel_param` in `__param`, and its
/// `parm=` line in `.modinfo` (what `MODULE_PARM_DESC()` emits).
macro_rules! module_params {
    ($($name:ident: $handler:ty, $perm:literal, $desc:literal;)*) => {$(
        const _: () = {
            static OPS: bindings::kernel_param_ops = bindings::kernel_param_ops {
                flags: 0,
                set: Some(set_cb::<$handler>),
                get: Some(get_cb::<$handler>),
                free: None,
            };

            // `used(compiler)`, as `module!` uses for its statics, keeps one
            // `__param` section for all of them.
            #[link_section = "__param"]
            #[used(compiler)]
            static PARAM: KernelParam = KernelParam::new(bindings::kernel_param {
                name: kernel::str::as_char_ptr_in_const_context(
                    kernel::c_str!(stringify!($name)),
                ),
                mod_: sys::this_module(),
                ops: &raw const OPS,
                perm: $perm,
                level: -1,
                flags: 0,
                __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 {
                    arg: core::ptr::null_mut(),
                },
            });

            const DESC: &str = concat!("parm=", stringify!($name), ":", $desc, "\0");
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static MODINFO: [u8; DESC.len()] = sys::byte_array(DESC);
        };
    )*};
}

module_params! {
    usr_pid: UsrPid, 0o644, "pid of the listener";
    usr_efd: UsrEfd, 0o644, "listener's kernel->user eventfd";
    usr_efd2: UsrEfd2, 0o644, "listener's user->kernel eventfd";
    cur_cmd: CurCmd, 0o644, "Write 1-5 to run FIND, MMAP, START_TEST, STOP_TEST, EXIT_TEST";
    period_ms: PeriodMs, 0o644, "Timer period of a test round in ms (1-60000, default 500)";
    buffer_size: BufferSize, 0o444,
        "Size of the shared buffer in bytes (multiple of 4096, default 4096)";
    back_to_back: BackToBack, 0o644, "1: next round right after the ack, no timer wait";
    adaptive: Adaptive, 0o644, "1: no MEMORY_READY doorbell while the listener spins";
    event_mode: EventModeParam, 0o444, "How codes reach the listener: counter or queue";
    last_error: LastError, 0o444, "Why the last refused command was refused";
    stats: StatsParam, 0o444,
        "Round trips of the current test: count, min, mean, p50, p90, p99, p99.9, max (ns)";
    histogram: Histogram, 0o444, "Round-trip histogram: low high count per non-empty bucket (ns)";
    max_channels: MaxChannels, 0o644, "Most userspace channels besides the default one (1-32, default 16; producers have their own 8)";
    max_channel_memory: MaxChannelMemory, 0o644,
        "Most buffer bytes of all channels besides the default one (default 64 MiB)";
    channels: Channels, 0o444,
        "Every channel: id name owner buffer_size mode pacing rounds p50_ns p99_ns";
    ack_poll_us: AckPollUs, 0o644,
        "us the module polls ack_seq before it sleeps on efd2 (b2b adaptive and rings; 0-1000, default 0: never)";
}

// `module_param(buffer_size, ulong, 0444)` also emits its type.
#[link_section = ".modinfo"]
#[used(compiler)]
static BUFFER_SIZE_TYPE: [u8; BUFFER_SIZE_TYPE_STR.len()] = sys::byte_array(BUFFER_SIZE_TYPE_STR);
const BUFFER_SIZE_TYPE_STR: &str = "parmtype=buffer_size:ulong\0";

// The parameter names are the ABI's.
const _: () = {
    assert!(sys::str_eq(param::USR_PID, "usr_pid"));
    assert!(sys::str_eq(param::USR_EFD, "usr_efd"));
    assert!(sys::str_eq(param::USR_EFD2, "usr_efd2"));
    assert!(sys::str_eq(param::CUR_CMD, "cur_cmd"));
    assert!(sys::str_eq(param::PERIOD_MS, "period_ms"));
    assert!(sys::str_eq(param::BUFFER_SIZE, "buffer_size"));
    assert!(sys::str_eq(param::BACK_TO_BACK, "back_to_back"));
    assert!(sys::str_eq(param::ADAPTIVE, "adaptive"));
    assert!(sys::str_eq(param::EVENT_MODE, "event_mode"));
    assert!(sys::str_eq(param::LAST_ERROR, "last_error"));
    assert!(sys::str_eq(param::STATS, "stats"));
    assert!(sys::str_eq(param::HISTOGRAM, "histogram"));
    assert!(sys::str_eq(param::MAX_CHANNELS, "max_channels"));
    assert!(sys::str_eq(param::MAX_CHANNEL_MEMORY, "max_channel_memory"));
    assert!(sys::str_eq(param::CHANNELS, "channels"));
    assert!(sys::str_eq(param::ACK_POLL_US, "ack_poll_us"));
};

/// `kstrtoint()` setter with a lower bound (C's `int_at_least_set()`).
fn set_int_at_least(val: &CStr, min: i32, store: &Atomic<i32>) -> Result {
    match kstrtoint(val) {
        Ok(v) if v >= min => {
            store.store(v, Relaxed);
            Ok(())
        }
        _ => Err(EINVAL),
    }
}

struct UsrPid;
impl Param for UsrPid {
    fn set(val: &CStr) -> Result {
        set_int_at_least(val, 1, &USR_PID)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", USR_PID.load(Relaxed)))
    }
}

struct UsrEfd;
impl Param for UsrEfd {
    fn set(val: &CStr) -> Result {
        set_int_at_least(val, 0, &USR_EFD)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", USR_EFD.load(Relaxed)))
    }
}

struct UsrEfd2;
impl Param for UsrEfd2 {
    fn set(val: &CStr) -> Result {
        set_int_at_least(val, 0, &USR_EFD2)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", USR_EFD2.load(Relaxed)))
    }
}

struct CurCmd;
impl Param for CurCmd {
    fn set(val: &CStr) -> Result {
        cmd::write(val)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", CUR_CMD.load(Relaxed)))
    }
}

struct PeriodMs;
impl Param for PeriodMs {
    fn set(val: &CStr) -> Result {
        match kstrtouint(val) {
            Ok(v) if (1..=abi::MAX_PERIOD_MS).contains(&v) => {
                PERIOD_MS.store(v, Relaxed);
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", period_ms()))
    }
}

struct BufferSize;
impl Param for BufferSize {
    /// `param_set_ulong()`: the device copies the value at load.
    fn set(val: &CStr) -> Result {
        let v = kstrtoull(val)?;
        BUFFER_SIZE.store(usize::try_from(v).map_err(|_| ERANGE)?, Relaxed);
        Ok(())
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", buffer_size()))
    }
}

/// A mode switch, writable only while no test runs (C's `mode_flag_set()`).
fn set_mode_flag(val: &CStr, flag: &Atomic<bool>) -> Result {
    let v = kstrtobool_bytes(val.to_bytes())?;
    // At load time there is no device yet, and so no test.
    let Some(dev) = state::device() else {
        flag.store(v, Relaxed);
        return Ok(());
    };
    let k = Locked::new(&dev.default);
    if k.testing {
        return Err(EBUSY);
    }
    flag.store(v, Relaxed);
    Ok(())
}

struct BackToBack;
impl Param for BackToBack {
    fn set(val: &CStr) -> Result {
        set_mode_flag(val, &BACK_TO_BACK)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", u8::from(back_to_back())))
    }
}

struct Adaptive;
impl Param for Adaptive {
    fn set(val: &CStr) -> Result {
        set_mode_flag(val, &ADAPTIVE)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", u8::from(adaptive())))
    }
}

struct EventModeParam;
impl Param for EventModeParam {
    fn set(_val: &CStr) -> Result {
        Err(EPERM)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", EventMode::Queue.name()))
    }
}

struct LastError;
impl Param for LastError {
    fn set(_val: &CStr) -> Result {
        Err(EPERM)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        match state::device() {
            Some(dev) => f.write_fmt(fmt!("{}\n", Locked::new(&dev.default).last_error.as_bstr())),
            None => f.write_str("\n"),
        }
    }
}

struct StatsParam;
impl Param for StatsParam {
    fn set(_val: &CStr) -> Result {
        Err(EPERM)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        match state::device() {
            // The figures' own spinlock, not the channel's mutex.
            Some(dev) => dev.default.stats.show(f),
            None => Stats::show_empty(f),
        }
    }
}

struct Histogram;
impl Param for Histogram {
    fn set(_val: &CStr) -> Result {
        Err(EPERM)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        match state::device() {
            Some(dev) => dev.default.stats.show_histogram(f),
            None => Ok(()),
        }
    }
}

struct MaxChannels;
impl Param for MaxChannels {
    fn set(val: &CStr) -> Result {
        match kstrtouint(val) {
            Ok(v) if (1..=abi::MAX_CHANNELS_LIMIT).contains(&v) => {
                MAX_CHANNELS.store(v, Relaxed);
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", max_channels()))
    }
}

struct MaxChannelMemory;
impl Param for MaxChannelMemory {
    fn set(val: &CStr) -> Result {
        match kstrtoull(val) {
            Ok(v) if (PAGE_SIZE as u64..=abi::MAX_CHANNEL_MEMORY_LIMIT).contains(&v) => {
                MAX_CHANNEL_MEMORY.store(v, Relaxed);
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", max_channel_memory()))
    }
}

struct AckPollUs;
impl Param for AckPollUs {
    fn set(val: &CStr) -> Result {
        match kstrtouint(val) {
            Ok(v) if v <= abi::MAX_ACK_POLL_US => {
                ACK_POLL_US.store(v, Relaxed);
                Ok(())
            }
            _ => {
                // Rate-limited once the device exists (a load-time value
                // is parsed once).
                if state::device().is_none_or(|dev| dev.param_log.lock().check()) {
                    let text = val.to_bytes();
                    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
                    pr_notice!(
                        "ack_poll_us={} refused: must be 0 to {}\n",
                        BStr::from_bytes(line),
                        abi::MAX_ACK_POLL_US
                    );
                }
                Err(EINVAL)
            }
        }
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", ack_poll_us()))
    }
}

struct Channels;
impl Param for Channels {
    fn set(_val: &CStr) -> Result {
        Err(EPERM)
    }
    fn show(f: &mut Formatter<'_>) -> fmt::Result {
        f.write_fmt(fmt!("{}\n", abi::CHANNELS_HEADER))?;
        let Some(dev) = state::device() else {
            return Ok(());
        };
        channel_line(f, &dev.default)?;
        let registry = dev.registry.lock();
        for chan in registry.channels.iter().filter(|c| c.listed()) {
            channel_line(f, chan)?;
        }
        Ok(())
    }
}

/// One line of the `channels` listing (see `CHANNELS_HEADER`).
fn channel_line(f: &mut Formatter<'_>, chan: &Channel) -> fmt::Result {
    let owner = chan.owner_nr();
    // Not the channel's mutex: a channel whose mutex is held for long must
    // not hold up the listing. The figures have a spinlock of their own.
    let v = chan.stats.values();
    let (rounds, p50, p99) = (v[0], v[3], v[5]);
    f.write_fmt(fmt!(
        "{} {} {} {} {} {} {} {} {}\n",
        chan.id(),
        chan.name(),
        owner,
        chan.buffer_size(),
        EventMode::Queue.name(),
        chan.pacing(),
        rounds,
        p50,
        p99
    ))
}

/// `kstrtoull(s, 0, &v)`, the kernel's own parser (as C's
/// `param_set_ulong()` uses): an optional `+`, a `0x` (hex) or `0` (octal)
/// prefix, digits, at most one trailing newline; ERANGE on overflow.
pub(crate) fn kstrtoull(s: &CStr) -> Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: `s` is NUL-terminated and `v` a valid `u64` to write.
    to_result(unsafe { bindings::kstrtoull(s.as_char_ptr(), 0, &mut v) })?;
    Ok(v)
}

/// `kstrtouint(s, 0, &v)`.
pub(crate) fn kstrtouint(s: &CStr) -> Result<u32> {
    let mut v: c_uint = 0;
    // SAFETY: `s` is NUL-terminated and `v` a valid `unsigned int` to write.
    to_result(unsafe { bindings::kstrtouint(s.as_char_ptr(), 0, &mut v) })?;
    Ok(v)
}

/// `kstrtoint(s, 0, &v)`.
pub(crate) fn kstrtoint(s: &CStr) -> Result<i32> {
    let mut v: c_int = 0;
    // SAFETY: `s` is NUL-terminated and `v` a valid `int` to write.
    to_result(unsafe { bindings::kstrtoint(s.as_char_ptr(), 0, &mut v) })?;
    Ok(v)
}
