// SPDX-License-Identifier: GPL-2.0-only
//! Command codes, parameters, ioctls and shared layouts of kern2usr.
//!
//! This file is compiled by cargo (userspace crate) and by kbuild (the Rust
//! kernel module includes it with `#[path]`): keep it `core`-only.

/// Bumped whenever a layout or a code below changes meaning.
///
/// 3: channels ([`IOC_CREATE`], [`IOC_CHANNEL_CMD`], [`IOC_CHANNEL_STATS`],
/// [`Info::channel_id`], [`Ctrl::ready_len`]); every v2 call keeps its meaning.
///
/// 4: ring channels ([`CREATE_RING`], [`Create::ring_slots`], the ring
/// fields of [`Ctrl`]), acks through the control page ([`Ctrl::ack_seq`],
/// [`Ctrl::kernel_state`], [`Ctrl::wake_seq`]) and the module's bounded
/// ack polling ([`param::ACK_POLL_US`]); every v3 call keeps its meaning.
pub const ABI_VERSION: u32 = 4;

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
    /// Round-trip statistics of the current test (read-only, see [`super::STATS_KEYS`]).
    pub const STATS: &str = "stats";
    /// Non-empty histogram buckets, one `low high count` line each (read-only).
    pub const HISTOGRAM: &str = "histogram";
    /// 1: the next round starts as soon as the last is acknowledged, no
    /// timer wait; 0: every `period_ms` (the seed). Root-writable while no
    /// test runs.
    pub const BACK_TO_BACK: &str = "back_to_back";
    /// 1: skip the MEMORY_READY doorbell while the listener says it spins
    /// (see [`super::Ctrl`]); 0: always ring it (the seed). Root-writable
    /// while no test runs.
    pub const ADAPTIVE: &str = "adaptive";
    /// Most channels (besides the default one) that may exist at once
    /// (root-writable, 1..=[`super::MAX_CHANNELS_LIMIT`]).
    pub const MAX_CHANNELS: &str = "max_channels";
    /// Most bytes of buffer all channels (besides the default one) may hold
    /// together (root-writable, a page to [`super::MAX_CHANNEL_MEMORY_LIMIT`]).
    pub const MAX_CHANNEL_MEMORY: &str = "max_channel_memory";
    /// Every channel, the default one first: [`super::CHANNELS_HEADER`],
    /// then one line each (read-only).
    pub const CHANNELS: &str = "channels";
    /// How long (µs) the module polls [`super::Ctrl::ack_seq`] for an ack
    /// before it sleeps on efd2 (sets [`super::KERNEL_ASLEEP`]): in
    /// back-to-back adaptive rounds after each publish, and on a ring
    /// channel when the ring is full. 0 (the default) never polls;
    /// at most [`super::MAX_ACK_POLL_US`]. Root only.
    pub const ACK_POLL_US: &str = "ack_poll_us";
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

/// Default of [`param::MAX_CHANNELS`].
pub const DEFAULT_MAX_CHANNELS: u32 = 16;
/// Largest [`param::MAX_CHANNELS`]: the [`param::CHANNELS`] listing of this
/// many channels and [`MAX_PRODUCERS`] producers' still fits the page a
/// parameter is read into.
pub const MAX_CHANNELS_LIMIT: u32 = 32;
/// Kernel producers' channels that may exist at once. They count against
/// neither [`param::MAX_CHANNELS`] nor [`param::MAX_CHANNEL_MEMORY`]
/// (userspace's limits), so userspace cannot take their places.
pub const MAX_PRODUCERS: u32 = 8;
/// Default of [`param::MAX_CHANNEL_MEMORY`]: 64 MiB.
pub const DEFAULT_MAX_CHANNEL_MEMORY: u64 = 64 << 20;
/// Largest [`param::MAX_CHANNEL_MEMORY`]: 1 GiB.
pub const MAX_CHANNEL_MEMORY_LIMIT: u64 = 1 << 30;
/// Bytes of [`Create::name`], the terminating NUL included.
pub const CHANNEL_NAME_LEN: usize = 16;
/// First line of [`param::CHANNELS`]; each further line gives these
/// fields of one channel, separated by one space: the id (0: the default
/// channel), the name (`-` when empty), the owner's pid as the reader's
/// pid namespace sees it (0: none or not visible), the buffer size, the
/// [`EventMode`] name, the pacing (`timer`, `b2b`, `b2b+adaptive`,
/// `timer+adaptive` or `producer`), the
/// rounds counted, and their p50 and p99 in ns (0 before the first round).
pub const CHANNELS_HEADER: &str = "id name owner buffer_size mode pacing rounds p50_ns p99_ns";

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
/// Slots of the event queue kept for STOP_TEST and EXIT_TEST: MMAP,
/// START_TEST and MEMORY_READY need more than this many free slots, so a
/// listener that never drains its events can still be stopped and told to exit.
pub const EVENT_QUEUE_RESERVE: u32 = 2;

/// Keys of the `stats` parameter, one `key value` line each, in this order.
/// Values are nanoseconds except `count`; all are 0 before the first round.
pub const STATS_KEYS: [&str; 8] = ["count", "min", "mean", "p50", "p90", "p99", "p99.9", "max"];

/// Histogram of round-trip times, log-linear (HDR style): values below
/// 2^[`HIST_SUB_BITS`] ns have a bucket each; above, every power of two is
/// split into 2^[`HIST_SUB_BITS`] buckets, so a bucket is at most 1/32
/// (about 3 %) of its value wide.
pub const HIST_SUB_BITS: u32 = 5;
/// Values at or above 2^[`HIST_MAX_BITS`] ns (about 1100 s) land in the last bucket.
pub const HIST_MAX_BITS: u32 = 40;
/// Number of histogram buckets.
pub const HIST_BUCKETS: usize = ((HIST_MAX_BITS - HIST_SUB_BITS + 1) << HIST_SUB_BITS) as usize;

/// Bucket of a value in nanoseconds.
pub const fn hist_bucket(ns: u64) -> usize {
    let sub = 1u64 << HIST_SUB_BITS;
    if ns < sub {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros();
    if msb >= HIST_MAX_BITS {
        return HIST_BUCKETS - 1;
    }
    let shift = msb - HIST_SUB_BITS;
    let low_bits = ((ns >> shift) & (sub - 1)) as usize;
    (((shift + 1) as usize) << HIST_SUB_BITS) + low_bits
}

/// Smallest value (ns) that falls into bucket `index`.
pub const fn hist_bucket_low(index: usize) -> u64 {
    let sub = 1usize << HIST_SUB_BITS;
    if index < sub {
        return index as u64;
    }
    let shift = (index >> HIST_SUB_BITS) as u32 - 1;
    ((sub + (index & (sub - 1))) as u64) << shift
}

/// Byte `index` of the buffer after a round has filled it: `index % 255`.
pub const fn pattern_byte(index: usize) -> u8 {
    (index % 255) as u8
}

/// Modulus of [`channel_pattern_byte`] (a prime, unlike the default
/// channel's 255, so no channel's data can pass for another's).
pub const CHANNEL_PATTERN_MODULUS: u64 = 251;

/// Byte `index` of channel `id`'s buffer (id 1 and up) after its test
/// round `round` (the [`Ctrl::ready_seq`] value it published) filled it.
/// The default channel keeps [`pattern_byte`], the seed's pattern.
pub const fn channel_pattern_byte(id: u32, round: u64, index: usize) -> u8 {
    let m = CHANNEL_PATTERN_MODULUS;
    let i = index as u64 % m;
    let c = (id as u64 % m) * 31 % m;
    ((i + c + round % m) % m) as u8
}

/// Name of the channel the sample producer module (`k2u_sample_producer`,
/// kernel/c/k2u_sample_producer.c) creates by default.
pub const SAMPLE_PRODUCER_NAME: &str = "sample";
/// Module name of the sample producer.
pub const SAMPLE_PRODUCER_MODULE: &str = "k2u_sample_producer";

/// Bytes the sample producer publishes in its round `seq` (1 and up) of a
/// `size`-byte buffer: the length varies, so `ready_len` is checked too.
pub const fn sample_producer_len(seq: u64, size: u64) -> u64 {
    size - (seq % 4) * 8
}

/// Byte `index` of the sample producer's round `seq`: bytes 0-7 hold `seq`
/// (little endian), every later byte this.
pub const fn sample_producer_byte(seq: u64, index: usize) -> u8 {
    ((seq % 251 + index as u64 % 251) % 251) as u8
}

/// One event as read() from the device in [`EventMode::Queue`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// 1 for the first event after FIND, then +1 per event: a gap means loss.
    pub seq: u64,
    /// The [`Code`] value.
    pub code: u32,
    /// For [`Code::MemoryReady`]: the low 32 bits of the round's id (the
    /// [`Ctrl::ready_seq`] value the round published), the value to pass
    /// to [`IOC_ACK_ROUND`]. Zero for the other codes.
    pub round: u32,
}

/// [`Create::flags`]: the next round starts as soon as the last is acked
/// (as [`param::BACK_TO_BACK`] for the default channel).
pub const CREATE_BACK_TO_BACK: u32 = 1 << 0;
/// [`Create::flags`]: no doorbell while the listener spins (as
/// [`param::ADAPTIVE`]).
pub const CREATE_ADAPTIVE: u32 = 1 << 1;
/// [`Create::flags`]: attach to the channel a kernel producer created
/// under [`Create::name`] instead of creating one; `buffer_size` and
/// `period_ms` must be 0 and the channel's size is returned in `buffer_size`.
pub const CREATE_ATTACH: u32 = 1 << 2;
/// [`Create::flags`]: a ring channel: the buffer is [`Create::ring_slots`]
/// slots of `buffer_size` bytes (mapped together at offset 0, slot k at
/// `k * buffer_size`); round `r` (the [`Ctrl::ready_seq`] value that
/// published it, from 1) is in slot `(r - 1) % ring_slots`. The module
/// fills the next slot while the listener reads earlier ones; the listener
/// consumes rounds in order and acks by storing the last one's id in
/// [`Ctrl::ack_seq`] (see [`Ctrl`]). The doorbell follows the adaptive
/// rule ([`CREATE_ADAPTIVE`] is implied). A full ring makes the module
/// wait: a slot is never overwritten before its ack. Not with
/// [`CREATE_ATTACH`].
pub const CREATE_RING: u32 = 1 << 3;
/// Every [`Create::flags`] bit the module knows; others are EINVAL.
pub const CREATE_FLAGS: u32 = CREATE_BACK_TO_BACK | CREATE_ADAPTIVE | CREATE_ATTACH | CREATE_RING;
/// Fewest slots of a ring channel.
pub const RING_MIN_SLOTS: u32 = 2;
/// Most slots of a ring channel (the [`Ctrl::slots`] table's length).
pub const RING_MAX_SLOTS: u32 = 64;
/// Largest [`param::ACK_POLL_US`].
pub const MAX_ACK_POLL_US: u32 = 1000;

/// Argument of [`IOC_CREATE`]: make the open file a channel of its own
/// (or, with [`CREATE_ATTACH`], the listener of a producer's channel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Create {
    /// kernel->user eventfd of the caller.
    pub efd: i32,
    /// user->kernel eventfd of the caller.
    pub efd2: i32,
    /// In: buffer size in bytes, a multiple of the page size from one page
    /// to [`MAX_BUFFER_SIZE`]. Out: the channel's buffer size.
    pub buffer_size: u64,
    /// Period of the test rounds in ms, 1..=[`MAX_PERIOD_MS`]; 0 means
    /// [`DEFAULT_PERIOD_MS`].
    pub period_ms: u32,
    /// `CREATE_*` bits.
    pub flags: u32,
    /// Name, NUL-padded: up to `CHANNEL_NAME_LEN - 1` bytes of
    /// `[A-Za-z0-9_.-]`; may be empty unless [`CREATE_ATTACH`] is set.
    pub name: [u8; CHANNEL_NAME_LEN],
    /// Out: the channel's id (1 and up; 0 is the default channel).
    pub id: u32,
    /// With [`CREATE_RING`]: the number of slots, a power of two from
    /// [`RING_MIN_SLOTS`] to [`RING_MAX_SLOTS`], with `ring_slots *
    /// buffer_size` at most [`MAX_BUFFER_SIZE`] (it all counts against
    /// [`param::MAX_CHANNEL_MEMORY`]). Zero otherwise (it was `reserved`
    /// before ABI 4).
    pub ring_slots: u32,
}

/// Result of [`IOC_CHANNEL_STATS`]: one channel's figures (the default
/// channel's on a file that is not a channel). Times in ns, 0 before the
/// first round, as in [`STATS_KEYS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Channel id (0: the default channel).
    pub id: u32,
    /// [`EventMode`] value.
    pub event_mode: u32,
    /// Buffer size in bytes.
    pub buffer_size: u64,
    /// Rounds published since the channel was created ([`Ctrl::ready_seq`]).
    pub rounds_published: u64,
    /// Rounds counted in the current test.
    pub count: u64,
    /// Fastest round trip.
    pub min_ns: u64,
    /// Mean round trip.
    pub mean_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Slowest round trip.
    pub max_ns: u64,
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
    /// The file's channel id; 0 when the file is not a channel (its calls
    /// reach the default channel).
    pub channel_id: u32,
}

/// Argument of [`IOC_READ_BUFFER`]: where to copy the buffer to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadBuffer {
    /// Userspace address of the destination.
    pub addr: u64,
    /// Bytes to copy (at most the buffer size).
    pub len: u64,
}

/// mmap offset of the control page (a page apart from the data buffer,
/// which is mapped at offset 0).
pub const CTRL_MMAP_OFFSET: u64 = 1 << 32;
// The control page never overlaps the largest buffer and is page aligned.
const _: () = assert!(CTRL_MMAP_OFFSET > MAX_BUFFER_SIZE && CTRL_MMAP_OFFSET.is_multiple_of(4096));

/// [`Ctrl::listener_state`]: the listener sleeps in poll() on efd; ring it.
pub const LISTENER_ASLEEP: u32 = 0;
/// [`Ctrl::listener_state`]: the listener polls [`Ctrl::ready_seq`]; no doorbell needed.
pub const LISTENER_SPINNING: u32 = 1;
/// [`Ctrl::kernel_state`]: the module sleeps on efd2; a listener whose
/// [`Ctrl::ack_seq`] reached [`Ctrl::wake_seq`] writes 7 to efd2.
pub const KERNEL_ASLEEP: u32 = 0;
/// [`Ctrl::kernel_state`]: the module polls [`Ctrl::ack_seq`] itself; no
/// write to efd2 needed.
pub const KERNEL_POLLING: u32 = 1;

/// One entry of [`Ctrl::slots`]: what a ring slot holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingSlot {
    /// Id of the round in the slot (its [`Ctrl::ready_seq`] value).
    pub round: u64,
    /// Bytes of data in the slot.
    pub len: u64,
}

/// The control page, shared by the module and the listener (mapped at
/// [`CTRL_MMAP_OFFSET`], one page). Used by the adaptive mode, page acks
/// and ring channels.
///
/// Doorbell (like io_uring's NEED_WAKEUP): for each round the module
/// stores `ready_seq + 1`, then a full barrier, then reads
/// `listener_state`; it rings efd (MEMORY_READY) only when the listener is
/// asleep (always, unless adaptive or a ring). The listener spins on
/// `ready_seq` for a bounded time; to sleep it stores [`LISTENER_ASLEEP`],
/// a full barrier, re-reads `ready_seq` and sleeps only if it did not
/// move. A MEMORY_READY event then means "look at `ready_seq`": a round is
/// handled once, when `ready_seq` is newer than the last one handled.
///
/// Acks through the page, the mirror image: the listener stores the id of
/// the last round it is done with in `ack_seq` (release), a full barrier,
/// then reads `kernel_state` and `wake_seq`; it writes 7 to efd2 only when
/// the module is [`KERNEL_ASLEEP`] and `ack_seq >= wake_seq`. To sleep the
/// module stores `wake_seq`, then [`KERNEL_ASLEEP`], a full barrier, and
/// re-reads `ack_seq`. From the first change of `ack_seq` after an attach
/// until the detach, a write to efd2 means "look at `ack_seq`" and never
/// closes a round by itself; [`IOC_ACK_ROUND`] still acks by id. An
/// `ack_seq` behind the last ack, or beyond the last round published, is
/// ignored with one log line. At attach the module sets `ack_seq` to
/// `ready_seq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctrl {
    /// Rounds published since the channel was created (never reset, so a
    /// listener's "last handled" stays comparable across tests).
    pub ready_seq: u64,
    /// [`LISTENER_ASLEEP`] or [`LISTENER_SPINNING`], written by the listener.
    pub listener_state: u32,
    /// [`KERNEL_ASLEEP`] or [`KERNEL_POLLING`], written by the module (it
    /// was `reserved`, always 0, before ABI 4).
    pub kernel_state: u32,
    /// Rounds whose doorbell was skipped because the listener was spinning
    /// (since the channel was created).
    pub doorbells_skipped: u64,
    /// Bytes of data in the buffer for round `ready_seq`: the buffer size
    /// for test rounds, the published length on a producer's channel.
    /// Stored before `ready_seq` (release), so a reader that sees a new
    /// `ready_seq` (acquire) sees its length.
    pub ready_len: u64,
    /// Written by the listener: the id of the last round it is done with
    /// (a ring's consumer index). See above.
    pub ack_seq: u64,
    /// Written by the module before it sleeps: the `ack_seq` that must
    /// ring efd2 (a ring: when half of it is free again).
    pub wake_seq: u64,
    /// A ring's number of slots (0: not a ring).
    pub ring_slots: u32,
    /// Zero.
    pub reserved: u32,
    /// Times a ring's producer found the ring full (since the channel was
    /// created).
    pub ring_full: u64,
    /// A ring's slots: entry `(r - 1) % ring_slots` describes round `r`,
    /// written before `ready_seq` publishes it.
    pub slots: [RingSlot; RING_MAX_SLOTS as usize],
}

impl Default for Ctrl {
    fn default() -> Self {
        Self {
            ready_seq: 0,
            listener_state: LISTENER_ASLEEP,
            kernel_state: KERNEL_ASLEEP,
            doorbells_skipped: 0,
            ready_len: 0,
            ack_seq: 0,
            wake_seq: 0,
            ring_slots: 0,
            reserved: 0,
            ring_full: 0,
            slots: [RingSlot { round: 0, len: 0 }; RING_MAX_SLOTS as usize],
        }
    }
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
/// Acknowledge the outstanding round (same as writing 7 to efd2): closes it
/// only if its MEMORY_READY reached the listener (see PROTOCOL.md).
pub const IOC_ACK: u32 = ioc(IOC_NONE, IOC_MAGIC, 2, 0);
/// Acknowledge round `id` (a `u32`: [`Event::round`], or the low 32 bits of
/// [`Ctrl::ready_seq`]). ESTALE if that round is not the outstanding one,
/// EPROTO if no round is outstanding.
pub const IOC_ACK_ROUND: u32 = ioc(IOC_WRITE, IOC_MAGIC, 5, core::mem::size_of::<u32>());
/// Read [`Info`].
pub const IOC_INFO: u32 = ioc(IOC_READ, IOC_MAGIC, 3, core::mem::size_of::<Info>());
/// Copy the data buffer to userspace (`copy_to_user`), the classic path the
/// benchmark compares with mmap.
pub const IOC_READ_BUFFER: u32 = ioc(IOC_WRITE, IOC_MAGIC, 4, core::mem::size_of::<ReadBuffer>());
/// Make this open file a channel ([`Create`]). EBUSY if it already is one
/// or (attach) the named channel has a listener; ENOSPC past
/// [`param::MAX_CHANNELS`] or [`param::MAX_CHANNEL_MEMORY`]; ENOENT
/// (attach) when no producer channel has that name; EINVAL for a bad field.
pub const IOC_CREATE: u32 = ioc(
    IOC_READ | IOC_WRITE,
    IOC_MAGIC,
    6,
    core::mem::size_of::<Create>(),
);
/// Run a command (a `u32`: [`Code::Mmap`], [`Code::StartTest`],
/// [`Code::StopTest`] or [`Code::ExitTest`]) on this file's channel, with
/// the refusals `cur_cmd` has for the default channel. ENOTCONN on a file
/// that is not a channel, EOPNOTSUPP on a producer's channel.
pub const IOC_CHANNEL_CMD: u32 = ioc(IOC_WRITE, IOC_MAGIC, 7, core::mem::size_of::<u32>());
/// Read [`ChannelStats`] of this file's channel.
pub const IOC_CHANNEL_STATS: u32 =
    ioc(IOC_READ, IOC_MAGIC, 8, core::mem::size_of::<ChannelStats>());
