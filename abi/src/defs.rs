// SPDX-License-Identifier: GPL-2.0-only
//! Command codes, parameters, ioctls and shared layouts of kern2usr.
//!
//! This file is compiled by cargo (userspace crate) and by kbuild (the Rust
//! kernel module includes it with `#[path]`): keep it `core`-only.

/// Bumped whenever a layout or a code below changes meaning.
pub const ABI_VERSION: u32 = 1;

/// Module name, as in `/sys/module/<name>` and `insmod <name>.ko`.
pub const MODULE_NAME: &str = "kern2usr";
/// Name of the character device, its class and its node under /dev.
pub const DEVICE_NAME: &str = "kern2usr";
/// Node devtmpfs/udev creates when the module loads.
pub const DEVICE_PATH: &str = "/dev/kern2usr";
/// Node the seed's `scripts/create_chdev.sh` creates by hand (step 5).
pub const SEED_DEVICE_PATH: &str = "/dev/char/mmaptest";
/// Directory of the module parameters.
pub const PARAMS_DIR: &str = "/sys/module/kern2usr/parameters";

/// Names of the module parameters (files in [`PARAMS_DIR`]).
pub mod param {
    /// pid of the listener (root-writable).
    pub const USR_PID: &str = "usr_pid";
    /// The listener's kernel->user eventfd number (root-writable).
    pub const USR_EFD: &str = "usr_efd";
    /// The listener's user->kernel eventfd number (root-writable).
    pub const USR_EFD2: &str = "usr_efd2";
    /// Writing a [`super::Code`] command value runs it; reads give the last one run.
    pub const CUR_CMD: &str = "cur_cmd";
    /// Size of the shared data buffer in bytes (load time only).
    pub const BUFFER_SIZE: &str = "buffer_size";
    /// Timer period of the test rounds in milliseconds (root-writable).
    pub const PERIOD_MS: &str = "period_ms";
    /// How codes reach the listener: `counter` or `queue` (read-only).
    pub const EVENT_MODE: &str = "event_mode";
    /// Why the last refused command was refused (read-only, empty if none).
    pub const LAST_ERROR: &str = "last_error";
}

/// Commands (written to `cur_cmd`) and notifications (delivered to the listener).
///
/// 1-5 are commands; 2-5 are also delivered to the listener, 6 is the
/// kernel's per-round notification and 7 the listener's acknowledgement.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// Resolve `usr_pid`'s task and its two eventfds.
    Find = 1,
    /// Tell the listener to open the device and map the buffer.
    Mmap = 2,
    /// Start the periodic test rounds.
    StartTest = 3,
    /// Stop the rounds and print the average copy time.
    StopTest = 4,
    /// Tell the listener to stop polling and exit.
    ExitTest = 5,
    /// The buffer is filled: copy it now.
    MemoryReady = 6,
    /// The listener copied the buffer (written to efd2).
    MemoryCopied = 7,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 7] = [
        Code::Find,
        Code::Mmap,
        Code::StartTest,
        Code::StopTest,
        Code::ExitTest,
        Code::MemoryReady,
        Code::MemoryCopied,
    ];

    /// The code with this numeric value, if any.
    pub const fn from_value(value: u64) -> Option<Code> {
        match value {
            1 => Some(Code::Find),
            2 => Some(Code::Mmap),
            3 => Some(Code::StartTest),
            4 => Some(Code::StopTest),
            5 => Some(Code::ExitTest),
            6 => Some(Code::MemoryReady),
            7 => Some(Code::MemoryCopied),
            _ => None,
        }
    }

    /// Numeric value, as written to `cur_cmd` or carried by an event.
    pub const fn value(self) -> u32 {
        self as u32
    }

    /// Upper-case name used in logs and in the C header (`K2U_CMD_<NAME>`).
    pub const fn name(self) -> &'static str {
        match self {
            Code::Find => "FIND",
            Code::Mmap => "MMAP",
            Code::StartTest => "START_TEST",
            Code::StopTest => "STOP_TEST",
            Code::ExitTest => "EXIT_TEST",
            Code::MemoryReady => "MEMORY_READY",
            Code::MemoryCopied => "MEMORY_COPIED",
        }
    }
}

/// How the kernel delivers codes 2-6 to the listener.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventMode {
    /// The eventfd counter carries the code (kernels before 6.8, the seed's
    /// protocol). The kernel posts one code at a time and waits until the
    /// listener has read the counter, so codes never add up.
    Counter = 1,
    /// The eventfd is a doorbell (each event adds 1) and the codes are read
    /// from the device as [`Event`] records, in order (6.8 and later, where
    /// eventfd_signal() can only add 1).
    Queue = 2,
}

impl EventMode {
    /// Name shown in the `event_mode` parameter.
    pub const fn name(self) -> &'static str {
        match self {
            EventMode::Counter => "counter",
            EventMode::Queue => "queue",
        }
    }

    /// Parse the `event_mode` parameter's text (surrounding whitespace ignored
    /// by the caller).
    pub fn from_name(name: &str) -> Option<EventMode> {
        match name {
            "counter" => Some(EventMode::Counter),
            "queue" => Some(EventMode::Queue),
            _ => None,
        }
    }
}

/// Default size of the shared buffer: one page, as in the seed.
pub const DEFAULT_BUFFER_SIZE: u64 = 4096;
/// Largest `buffer_size` the module accepts.
pub const MAX_BUFFER_SIZE: u64 = 16 << 20;
/// Default timer period of a test round (the seed's TIMER_DELAY).
pub const DEFAULT_PERIOD_MS: u32 = 500;
/// Largest `period_ms` the module accepts.
pub const MAX_PERIOD_MS: u32 = 60_000;
/// The listener's default poll() timeout (the seed's).
pub const DEFAULT_POLL_TIMEOUT_MS: u32 = 10_000;
/// Events the kernel holds for the listener before it refuses commands (EAGAIN).
pub const EVENT_QUEUE_LEN: u32 = 4096;

/// Byte `index` of the buffer after a round has filled it: `index % 255`.
pub const fn pattern_byte(index: usize) -> u8 {
    (index % 255) as u8
}

/// One event as read() from the device in [`EventMode::Queue`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// 1 for the first event after FIND, then +1 per event: a gap means loss.
    pub seq: u64,
    /// The [`Code`] value.
    pub code: u32,
    /// Zero.
    pub reserved: u32,
}

/// Argument of [`IOC_REGISTER`]: the caller's own eventfds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Register {
    /// kernel->user eventfd.
    pub efd: i32,
    /// user->kernel eventfd.
    pub efd2: i32,
}

/// Result of [`IOC_INFO`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// [`ABI_VERSION`] of the module.
    pub abi_version: u32,
    /// [`EventMode`] value.
    pub event_mode: u32,
    /// Size of the mappable buffer in bytes.
    pub buffer_size: u64,
    /// Timer period in milliseconds.
    pub period_ms: u32,
    /// Zero.
    pub reserved: u32,
}

/// ioctl "type" byte of kern2usr.
pub const IOC_MAGIC: u8 = 0xE7;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` as in `<asm-generic/ioctl.h>`.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// Attach the calling process' two eventfds (the clean alternative to
/// `usr_pid`/`usr_efd`/`usr_efd2` + FIND).
pub const IOC_REGISTER: u32 = ioc(IOC_WRITE, IOC_MAGIC, 1, core::mem::size_of::<Register>());
/// Acknowledge the outstanding round (same as writing 7 to efd2).
pub const IOC_ACK: u32 = ioc(IOC_NONE, IOC_MAGIC, 2, 0);
/// Read [`Info`].
pub const IOC_INFO: u32 = ioc(IOC_READ, IOC_MAGIC, 3, core::mem::size_of::<Info>());
