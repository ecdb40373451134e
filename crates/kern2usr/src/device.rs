//! The module's character device: the mapped data buffer, the event records
//! (queue mode) and the ioctls.
//!
//! # Synchronisation of the shared buffer
//!
//! The kernel fills the buffer in each round *before* it signals
//! MEMORY_READY (6) and does not touch it again until the listener has
//! acknowledged the round (7 on efd2 or `K2U_IOC_ACK`). Between receiving 6
//! and sending the ack the contents are therefore stable; outside that
//! window a copy may see a round half-written. [`MappedBuffer`] never hands
//! out a `&[u8]` into the mapping (the kernel is a concurrent writer Rust
//! cannot see); it copies out through raw pointers instead, which is sound
//! at any time and *meaningful* inside the window.

use std::fmt;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{Getter, NoArg, Opcode, Setter, Updater};
use rustix::mm::{MapFlags, ProtFlags};

use crate::abi::{
    pattern_byte, ChannelStats, Create, Event, Info, ReadBuffer, Register, IOC_ACK, IOC_ACK_ROUND,
    IOC_CHANNEL_CMD, IOC_CHANNEL_STATS, IOC_CREATE, IOC_INFO, IOC_READ_BUFFER, IOC_REGISTER,
};
use crate::ctrl::CtrlPage;
use crate::error::{Error, Result};
use crate::params::Params;

/// Size of one [`Event`] record as read() from the device.
pub const EVENT_RECORD_SIZE: usize = size_of::<Event>();
/// Records asked for by one read() of the device.
const EVENTS_PER_READ: usize = 64;
const _: () = assert!(EVENT_RECORD_SIZE == 16, "k2u_event is 16 bytes");

/// How a buffer is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `PROT_READ`.
    ReadOnly,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl Access {
    fn prot(self) -> ProtFlags {
        match self {
            Access::ReadOnly => ProtFlags::READ,
            Access::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Access::ReadOnly => "read-only",
            Access::ReadWrite => "read-write",
        }
    }
}

/// A `MAP_SHARED` mapping of a file or of the module's buffer, unmapped on
/// drop.
///
/// Invariant: `ptr` is the start of a live mapping of exactly `len > 0`
/// bytes, created by [`MappedBuffer::map`] with at least `PROT_READ` (and
/// `PROT_WRITE` when `access` is [`Access::ReadWrite`]), owned by this value
/// alone and unmapped only by its `Drop`. Other parties (the kernel, other
/// processes, the file) may change the bytes at any time, so the mapping is
/// only ever accessed through raw-pointer copies, never through references.
pub struct MappedBuffer {
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
}

// SAFETY: the mapping is process-wide memory owned by this value alone; it
// is not tied to the creating thread, so moving the owner is fine.
unsafe impl Send for MappedBuffer {}

// SAFETY: every `&self` method only reads the mapping through raw-pointer
// copies or volatile loads (never through references, the one exception
// being the `unsafe` [`MappedBuffer::stable_slice`], whose caller vouches
// for it); the only writer, `write_at`, takes `&mut self`. Reads from
// several threads at once are what the kernel's concurrent writes already
// allow for, so sharing `&MappedBuffer` between threads adds no hazard.
unsafe impl Sync for MappedBuffer {}

impl MappedBuffer {
    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)` of any file.
    ///
    /// The module's buffer is mapped with [`Device::map`] (safe: the
    /// device's size never changes while it is mapped).
    ///
    /// # Safety
    ///
    /// `fd` must stay at least `offset + len` bytes long for as long as
    /// the mapping lives (a file truncated under a mapping raises SIGBUS
    /// on the next access, which this type cannot prevent), and must not
    /// be a device whose mapping has side effects on access.
    pub unsafe fn map(fd: BorrowedFd<'_>, len: usize, offset: u64, access: Access) -> Result<Self> {
        Self::map_fd(fd, len, offset, access)
    }

    /// [`MappedBuffer::map`] for the crate: only called with the kern2usr
    /// device (or, in tests, a temporary file nobody truncates).
    pub(crate) fn map_fd(
        fd: BorrowedFd<'_>,
        len: usize,
        offset: u64,
        access: Access,
    ) -> Result<Self> {
        let map_err = |e: Errno| Error::Mmap {
            len,
            offset,
            source: e.into(),
        };
        if len == 0 {
            return Err(map_err(Errno::INVAL));
        }
        // SAFETY: a fresh mapping at an address the kernel chooses (NULL
        // hint, no MAP_FIXED) cannot alias any existing Rust object.
        let addr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                access.prot(),
                MapFlags::SHARED,
                fd,
                offset,
            )
        }
        .map_err(map_err)?;
        let ptr = NonNull::new(addr.cast::<u8>()).ok_or(map_err(Errno::FAULT))?;
        Ok(Self { ptr, len, access })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty mappings cannot be made.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How the mapping was made.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Start address of the mapping (for display).
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Start of the mapping as a raw pointer (for atomics over it).
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mapping as a slice, without copying (the zero-copy path).
    ///
    /// # Safety
    ///
    /// Nobody may write to the mapped bytes while the returned slice is
    /// alive: not this process (through [`MappedBuffer::write_at`] or
    /// another mapping), not the file, not the kernel. For the module's
    /// buffer that holds between receiving a round's MEMORY_READY and
    /// acknowledging it (see the module documentation), so drop the slice
    /// before acknowledging.
    pub unsafe fn stable_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live readable mapping for as long as
        // `self` (invariant), and the caller guarantees no concurrent
        // writer for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Copy the whole mapping into `dst` (replacing its contents): the
    /// listener's memcpy.
    pub fn copy_to_vec(&self, dst: &mut Vec<u8>) {
        dst.clear();
        dst.reserve(self.len);
        // SAFETY: by the type's invariant `ptr..ptr+len` is readable;
        // `dst` has capacity for `len` bytes after reserve() and is a
        // separate allocation, so the ranges do not overlap. All `len` bytes
        // are initialised by the copy before set_len.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), dst.as_mut_ptr(), self.len);
            dst.set_len(self.len);
        }
    }

    /// A copy of the whole mapping.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.copy_to_vec(&mut v);
        v
    }

    /// Copy `dst.len()` bytes starting at `offset` into `dst`; `None` if the
    /// range is out of bounds.
    pub fn copy_range(&self, offset: usize, dst: &mut [u8]) -> Option<()> {
        let end = offset.checked_add(dst.len())?;
        if end > self.len {
            return None;
        }
        // SAFETY: offset..end is inside the mapping (checked above), which
        // is readable by the invariant; `dst` is a distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
        Some(())
    }

    /// Byte `index`, read once (volatile), or `None` if out of bounds.
    pub fn get(&self, index: usize) -> Option<u8> {
        if index >= self.len {
            return None;
        }
        // SAFETY: index < len, so the byte is inside the readable mapping;
        // a volatile read makes exactly one access, as for device memory.
        Some(unsafe { self.ptr.as_ptr().add(index).read_volatile() })
    }

    /// Write `src` at `offset` (read-write mappings only).
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        let bad = || Error::BufferAccess {
            offset,
            len: src.len(),
            size: self.len,
            access: self.access.name(),
        };
        if self.access != Access::ReadWrite {
            return Err(bad());
        }
        let end = offset.checked_add(src.len()).ok_or_else(bad)?;
        if end > self.len {
            return Err(bad());
        }
        // SAFETY: offset..end is inside the mapping, which is writable since
        // access is ReadWrite (invariant); `src` is a distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len());
        }
        Ok(())
    }
}

impl Drop for MappedBuffer {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe the mapping this value owns (invariant);
        // nothing can use it after drop. A failing munmap leaks the mapping,
        // which is harmless.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl fmt::Debug for MappedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedBuffer")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .field("access", &self.access)
            .finish()
    }
}

/// A byte of a filled buffer that differs from [`pattern_byte`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Offset in the buffer.
    pub offset: usize,
    /// `pattern_byte(offset)`.
    pub expected: u8,
    /// What the buffer held.
    pub got: u8,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "data mismatch at offset {}: expected {:#04x}, got {:#04x}",
            self.offset, self.expected, self.got
        )
    }
}

/// Every byte of `data` that is not the round's fill pattern.
pub fn pattern_mismatches(data: &[u8]) -> impl Iterator<Item = Mismatch> + '_ {
    data.iter().enumerate().filter_map(|(offset, &got)| {
        let expected = pattern_byte(offset);
        (got != expected).then_some(Mismatch {
            offset,
            expected,
            got,
        })
    })
}

/// Bytes of the fill pattern, repeated a whole number of periods (255),
/// to compare buffers against with memcmp speed.
fn pattern_reference() -> &'static [u8] {
    static REF: OnceLock<Vec<u8>> = OnceLock::new();
    REF.get_or_init(|| (0..255 * 256).map(pattern_byte).collect())
}

/// The bytes of a created channel's test rounds, precomputed so that a
/// round is checked at memcmp speed: round `r` of channel `id` is this
/// pattern from offset `channel_pattern_byte(id, r, 0)` on
/// ([`crate::abi::channel_pattern_byte`]).
///
/// ```
/// use kern2usr::abi::channel_pattern_byte;
/// use kern2usr::device::ChannelPattern;
/// let data: Vec<u8> = (0..100).map(|i| channel_pattern_byte(3, 7, i)).collect();
/// let p = ChannelPattern::new(100);
/// assert!(p.matches(3, 7, &data) && !p.matches(3, 8, &data));
/// ```
#[derive(Clone, Debug)]
pub struct ChannelPattern {
    bytes: Vec<u8>,
}

impl ChannelPattern {
    /// For rounds of up to `size` bytes.
    pub fn new(size: usize) -> Self {
        let m = crate::abi::CHANNEL_PATTERN_MODULUS as usize;
        Self {
            bytes: (0..size + m).map(|i| (i % m) as u8).collect(),
        }
    }

    /// What round `round` of channel `id` holds in its first `len` bytes
    /// (`None` past the size given to [`ChannelPattern::new`]).
    pub fn expected(&self, id: u32, round: u64, len: usize) -> Option<&[u8]> {
        let off = usize::from(crate::abi::channel_pattern_byte(id, round, 0));
        self.bytes.get(off..off + len)
    }

    /// Whether `data` is what round `round` of channel `id` published.
    pub fn matches(&self, id: u32, round: u64, data: &[u8]) -> bool {
        self.expected(id, round, data.len()) == Some(data)
    }
}

/// The first byte of `data` that is not the fill pattern, if any. Same
/// answer as `pattern_mismatches(data).next()`, at memcmp speed.
pub fn first_pattern_mismatch(data: &[u8]) -> Option<Mismatch> {
    let reference = pattern_reference();
    for (n, chunk) in data.chunks(reference.len()).enumerate() {
        if chunk != &reference[..chunk.len()] {
            let base = n * reference.len();
            return pattern_mismatches(chunk).next().map(|m| Mismatch {
                offset: base + m.offset,
                ..m
            });
        }
    }
    None
}

/// The opened device node.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    path: PathBuf,
}

impl Device {
    /// Open `path` read-write, non-blocking (so that reading event records
    /// stops with EAGAIN when none is pending), close-on-exec.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::DeviceOpen {
            path: path.to_owned(),
            source: e.into(),
        })?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// A device over a file of the node that is open already: one
    /// received from another process (`SCM_RIGHTS`) or inherited. Errors
    /// name it `/proc/self/fd/<n>`.
    ///
    /// # Safety
    ///
    /// `fd` must be an open file of the kern2usr device node: the safe
    /// [`Device::map`] relies on that (see [`MappedBuffer::map`] for what
    /// mapping another file needs).
    pub unsafe fn from_owned_fd(fd: OwnedFd) -> Self {
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Self { fd, path }
    }

    /// A device over an fd that stands in for the node (tests: a pipe
    /// whose read end carries event records).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn from_fd(fd: OwnedFd, path: PathBuf) -> Self {
        Self { fd, path }
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Map the first `len` bytes of the buffer (`len` = `buffer_size` for
    /// all of it).
    pub fn map(&self, len: usize, access: Access) -> Result<MappedBuffer> {
        self.map_at(len, 0, access)
    }

    /// Map the whole buffer: `buffer_size` bytes as the module's
    /// parameter says.
    pub fn map_buffer(&self, params: &Params, access: Access) -> Result<MappedBuffer> {
        self.map(params.buffer_size()?, access)
    }

    /// Map `len` bytes at `offset` (the module refuses any offset but 0).
    pub fn map_at(&self, len: usize, offset: u64, access: Access) -> Result<MappedBuffer> {
        MappedBuffer::map_fd(self.fd.as_fd(), len, offset, access)
    }

    /// Map the control page of the adaptive mode (one page at
    /// [`crate::abi::CTRL_MMAP_OFFSET`], read-write).
    pub fn map_ctrl(&self) -> Result<CtrlPage> {
        CtrlPage::map(self.fd.as_fd())
    }

    /// `K2U_IOC_READ_BUFFER`: the module copies up to `dst.len()` bytes of
    /// its buffer into `dst` with copy_to_user (the classic path). Returns
    /// the bytes copied: `dst.len()` or the buffer size if smaller.
    pub fn read_buffer(&self, dst: &mut [u8]) -> Result<usize> {
        let ioctl = ReadBufferIoctl(ReadBuffer {
            addr: dst.as_mut_ptr() as u64,
            len: dst.len() as u64,
        });
        // SAFETY: the request describes `dst`, which is valid, writable and
        // exclusively borrowed for the whole call (see ReadBufferIoctl); the
        // fd is ours and open.
        let n = unsafe { rustix::ioctl::ioctl(&self.fd, ioctl) }.map_err(|e| Error::Ioctl {
            name: "K2U_IOC_READ_BUFFER",
            source: e.into(),
        })?;
        if n > dst.len() {
            return Err(Error::Ioctl {
                name: "K2U_IOC_READ_BUFFER",
                source: std::io::Error::other(format!(
                    "the module reports {n} bytes copied into {} bytes",
                    dst.len()
                )),
            });
        }
        Ok(n)
    }

    /// Read at most one batch of pending event records (queue mode) and
    /// append them to `out`; `Ok(0)` when none is pending. One read() per
    /// call, for loops that get a doorbell per record anyway.
    pub fn read_events_once(&self, out: &mut Vec<Event>) -> Result<usize> {
        let mut buf = [0u8; EVENT_RECORD_SIZE * EVENTS_PER_READ];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(0) | Err(Errno::AGAIN) => return Ok(0),
                Ok(n) => {
                    if n % EVENT_RECORD_SIZE != 0 {
                        return Err(Error::EventSize {
                            got: n,
                            record: EVENT_RECORD_SIZE,
                        });
                    }
                    out.extend(buf[..n].chunks_exact(EVENT_RECORD_SIZE).map(decode_event));
                    return Ok(n / EVENT_RECORD_SIZE);
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Error::EventRead { source: e.into() }),
            }
        }
    }

    /// Append every pending event record to `out` (queue mode): reads
    /// until one read brings fewer records than it asked for (the queue
    /// was empty then; a record posted later rings efd again), so a round
    /// costs one read, not a second one that finds EAGAIN. Returns how
    /// many were appended.
    pub fn read_events(&self, out: &mut Vec<Event>) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.read_events_once(out)?;
            total += n;
            if n < EVENTS_PER_READ {
                return Ok(total);
            }
        }
    }

    /// `K2U_IOC_REGISTER`: attach this process's `efd` and `efd2`.
    pub fn register(&self, efd: BorrowedFd<'_>, efd2: BorrowedFd<'_>) -> Result<()> {
        let arg = Register {
            efd: efd.as_raw_fd(),
            efd2: efd2.as_raw_fd(),
        };
        // SAFETY: IOC_REGISTER is _IOW(magic, 1, struct k2u_register) and
        // Register is its #[repr(C)] mirror from the ABI crate; the kernel
        // only reads size_of::<Register>() bytes from it.
        let ioctl = unsafe { Setter::<{ IOC_REGISTER as Opcode }, Register>::new(arg) };
        // SAFETY: see above; the fd is ours and open.
        unsafe { rustix::ioctl::ioctl(&self.fd, ioctl) }.map_err(|e| Error::Ioctl {
            name: "K2U_IOC_REGISTER",
            source: e.into(),
        })
    }

    /// `K2U_IOC_ACK`: acknowledge the outstanding round.
    pub fn ack(&self) -> Result<()> {
        // SAFETY: IOC_ACK is _IO(magic, 2): no argument is passed or used.
        let ioctl = unsafe { NoArg::<{ IOC_ACK as Opcode }>::new() };
        // SAFETY: see above; the fd is ours and open.
        unsafe { rustix::ioctl::ioctl(&self.fd, ioctl) }.map_err(|e| Error::Ioctl {
            name: "K2U_IOC_ACK",
            source: e.into(),
        })
    }

    /// `K2U_IOC_ACK_ROUND` (ABI v2): acknowledge round `round` (the low 32
    /// bits of its id: [`Event::round`], or [`crate::abi::Ctrl::ready_seq`]
    /// for a round seen on the control page). ESTALE when another round is
    /// outstanding, EPROTO when none is; ENOTTY from a module before ABI v2
    /// (see [`RoundAcker`] for the fallback).
    pub fn ack_round(&self, round: u32) -> Result<()> {
        // SAFETY: IOC_ACK_ROUND is _IOW(magic, 5, __u32): the kernel reads
        // one u32 through the pointer Setter passes, which points at
        // `round` for the call.
        let ioctl = unsafe { Setter::<{ IOC_ACK_ROUND as Opcode }, u32>::new(round) };
        // SAFETY: see above; the fd is ours and open.
        unsafe { rustix::ioctl::ioctl(&self.fd, ioctl) }.map_err(|e| Error::Ioctl {
            name: "K2U_IOC_ACK_ROUND",
            source: e.into(),
        })
    }

    /// `K2U_IOC_INFO`: ABI version, event mode, buffer size, period.
    pub fn info(&self) -> Result<Info> {
        // SAFETY: IOC_INFO is _IOR(magic, 3, struct k2u_info) and Info is
        // its #[repr(C)] mirror; the kernel writes exactly that many bytes.
        let ioctl = unsafe { Getter::<{ IOC_INFO as Opcode }, Info>::new() };
        // SAFETY: see above; the fd is ours and open.
        unsafe { rustix::ioctl::ioctl(&self.fd, ioctl) }.map_err(|e| Error::Ioctl {
            name: "K2U_IOC_INFO",
            source: e.into(),
        })
    }
}

impl Device {
    /// `K2U_IOC_CREATE` (ABI v3): make this open file a channel of its own
    /// (or, with [`crate::abi::CREATE_ATTACH`], the listener of a kernel
    /// producer's channel). Returns the request as the module wrote it
    /// back: the channel's `id` and `buffer_size`.
    ///
    /// The raw call: [`crate::Channel::create`] and
    /// [`crate::Channel::attach`] check the options first and turn the
    /// errnos into typed errors.
    ///
    /// ```no_run
    /// use std::os::fd::AsRawFd;
    /// let dev = kern2usr::Device::open("/dev/kern2usr")?;
    /// let (efd, efd2) = (kern2usr::EventFd::new()?, kern2usr::EventFd::new()?);
    /// let mut req = kern2usr::ChannelOptions::new().request()?;
    /// (req.efd, req.efd2) = (efd.as_raw_fd(), efd2.as_raw_fd());
    /// let made = dev.create(&req)?;
    /// println!("channel {} of {} bytes", made.id, made.buffer_size);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn create(&self, request: &Create) -> Result<Create> {
        let mut arg = *request;
        self.create_in_place(&mut arg)?;
        Ok(arg)
    }

    /// [`Device::create`] on the caller's request itself: whatever the
    /// module writes back lands in `arg`, on a refusal too (where the ABI
    /// says it writes nothing, which tests check).
    ///
    /// ```no_run
    /// # let dev = kern2usr::Device::open("/dev/kern2usr")?;
    /// let mut req = kern2usr::abi::Create { buffer_size: 4097, ..Default::default() };
    /// let before = req;
    /// assert!(dev.create_in_place(&mut req).is_err());
    /// assert_eq!(req, before);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn create_in_place(&self, arg: &mut Create) -> Result<()> {
        // SAFETY: IOC_CREATE is _IOWR(magic, 6, struct k2u_create) and
        // Create is its #[repr(C)] mirror from the ABI crate; the kernel
        // reads and writes exactly size_of::<Create>() bytes through the
        // pointer, which points at `arg`, borrowed mutably for the call.
        let ioctl = unsafe { Updater::<{ IOC_CREATE as Opcode }, Create>::new(arg) };
        // SAFETY: see above; the fd is ours and open.
        unsafe { rustix::ioctl::ioctl(&self.fd, ioctl) }.map_err(|e| Error::Ioctl {
            name: "K2U_IOC_CREATE",
            source: e.into(),
        })
    }

    /// `K2U_IOC_CHANNEL_CMD` (ABI v3): run command `code` (2-5) on this
    /// file's channel. ENOTCONN when the file is not a channel,
    /// EOPNOTSUPP on a producer's channel, otherwise the refusals
    /// `cur_cmd` has on the default channel.
    ///
    /// ```no_run
    /// # let dev = kern2usr::Device::open("/dev/kern2usr")?;
    /// let e = dev.channel_command(kern2usr::abi::Code::Mmap.value()).err();
    /// // Not a channel yet: ENOTCONN.
    /// assert_eq!(e.and_then(|e| e.errno()), Some(rustix::io::Errno::NOTCONN));
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn channel_command(&self, code: u32) -> Result<()> {
        // SAFETY: IOC_CHANNEL_CMD is _IOW(magic, 7, __u32): the kernel
        // reads one u32 through the pointer Setter passes, which points at
        // `code` for the call.
        let ioctl = unsafe { Setter::<{ IOC_CHANNEL_CMD as Opcode }, u32>::new(code) };
        // SAFETY: see above; the fd is ours and open.
        unsafe { rustix::ioctl::ioctl(&self.fd, ioctl) }.map_err(|e| Error::Ioctl {
            name: "K2U_IOC_CHANNEL_CMD",
            source: e.into(),
        })
    }

    /// `K2U_IOC_CHANNEL_STATS` (ABI v3): this file's channel's figures
    /// (the default channel's, id 0, on a file that is not a channel).
    ///
    /// ```no_run
    /// let raw = kern2usr::Device::open("/dev/kern2usr")?.channel_stats()?;
    /// assert_eq!(raw.id, 0);
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn channel_stats(&self) -> Result<ChannelStats> {
        // SAFETY: IOC_CHANNEL_STATS is _IOR(magic, 8, struct
        // k2u_channel_stats) and ChannelStats is its #[repr(C)] mirror;
        // the kernel writes exactly that many bytes.
        let ioctl = unsafe { Getter::<{ IOC_CHANNEL_STATS as Opcode }, ChannelStats>::new() };
        // SAFETY: see above; the fd is ours and open.
        unsafe { rustix::ioctl::ioctl(&self.fd, ioctl) }.map_err(|e| Error::Ioctl {
            name: "K2U_IOC_CHANNEL_STATS",
            source: e.into(),
        })
    }
}

/// The two acknowledgement ioctls, as [`RoundAcker`] uses them (the
/// [`Device`], or a fake in tests).
pub trait AckIoctls {
    /// `K2U_IOC_ACK_ROUND` with `round`.
    fn ack_round(&self, round: u32) -> Result<()>;
    /// `K2U_IOC_ACK`.
    fn ack(&self) -> Result<()>;
}

impl AckIoctls for Device {
    fn ack_round(&self, round: u32) -> Result<()> {
        Device::ack_round(self, round)
    }
    fn ack(&self) -> Result<()> {
        Device::ack(self)
    }
}

/// How [`RoundAcker::ack`] acknowledged a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckedBy {
    /// `K2U_IOC_ACK_ROUND` with the round's id.
    Round,
    /// `K2U_IOC_ACK`: the module has no `K2U_IOC_ACK_ROUND` (ENOTTY, a
    /// module before ABI v2).
    Fallback,
}

/// Acknowledges rounds by id with `K2U_IOC_ACK_ROUND`; against a module
/// without it (ENOTTY) falls back to `K2U_IOC_ACK` once and for good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundAcker {
    /// The module answered ENOTTY to `K2U_IOC_ACK_ROUND`.
    no_round_ioctl: bool,
    /// [`RoundAcker::take_fallback_news`] said so.
    announced: bool,
}

impl RoundAcker {
    /// The debug line for the switch to [`AckedBy::Fallback`].
    pub const FALLBACK_NOTE: &'static str = "debug: the module has no K2U_IOC_ACK_ROUND \
         (ENOTTY: older than ABI v2): acknowledging rounds with K2U_IOC_ACK from now on";

    /// Acknowledge round `round` through `dev`. Errors other than the
    /// first ENOTTY are returned as they are (ESTALE / EPROTO: the round
    /// is not the outstanding one, e.g. abandoned by STOP).
    pub fn ack(&mut self, dev: &impl AckIoctls, round: u32) -> Result<AckedBy> {
        if self.no_round_ioctl {
            return dev.ack().map(|()| AckedBy::Fallback);
        }
        match dev.ack_round(round) {
            Ok(()) => Ok(AckedBy::Round),
            Err(e) if e.errno() == Some(Errno::NOTTY) => {
                self.no_round_ioctl = true;
                dev.ack().map(|()| AckedBy::Fallback)
            }
            Err(e) => Err(e),
        }
    }

    /// True once, after the first ENOTTY switched to `K2U_IOC_ACK` (whether
    /// or not that ack succeeded): the moment to say so.
    pub fn take_fallback_news(&mut self) -> bool {
        let news = self.no_round_ioctl && !self.announced;
        self.announced |= news;
        news
    }

    /// Whether the module turned out to have no `K2U_IOC_ACK_ROUND`.
    pub fn falls_back(&self) -> bool {
        self.no_round_ioctl
    }
}

/// Whether a failed acknowledgement only says the round was no longer the
/// outstanding one (ESTALE: another round is, EPROTO: none is), as when a
/// STOP abandoned it: the module ignores such an ack, as it ignores a late
/// 7 on efd2 (PROTOCOL.md, "Which round an ack closes").
pub fn is_late_ack(e: &Error) -> bool {
    matches!(e, Error::Ioctl { .. }) && matches!(e.errno(), Some(Errno::STALE | Errno::PROTO))
}

/// `K2U_IOC_READ_BUFFER`: the kernel reads the [`ReadBuffer`] and writes
/// up to `len` bytes at `addr` (userspace memory rustix does not see, hence
/// `IS_MUTATING`); the return value is the number of bytes copied.
struct ReadBufferIoctl(ReadBuffer);

// SAFETY: the opcode is _IOW(magic, 4, struct k2u_read_buffer), whose
// argument ReadBuffer mirrors (#[repr(C)], from the ABI crate); as_ptr
// points at it for the call; the kernel writes userspace memory (at
// `addr`), so IS_MUTATING is true; the output is the non-negative return
// value and reads nothing through the pointer.
unsafe impl rustix::ioctl::Ioctl for ReadBufferIoctl {
    type Output = usize;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        IOC_READ_BUFFER as Opcode
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::addr_of_mut!(self.0).cast()
    }

    unsafe fn output_from_ptr(
        out: rustix::ioctl::IoctlOutput,
        _extract_output: *mut std::ffi::c_void,
    ) -> rustix::io::Result<usize> {
        usize::try_from(out).map_err(|_| Errno::RANGE)
    }
}

fn decode_event(rec: &[u8]) -> Event {
    let mut seq = [0u8; 8];
    let mut code = [0u8; 4];
    let mut round = [0u8; 4];
    seq.copy_from_slice(&rec[0..8]);
    code.copy_from_slice(&rec[8..12]);
    round.copy_from_slice(&rec[12..16]);
    Event {
        seq: u64::from_ne_bytes(seq),
        code: u32::from_ne_bytes(code),
        round: u32::from_ne_bytes(round),
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, Seek, SeekFrom, Write};

    fn pattern_file(len: usize) -> io::Result<std::fs::File> {
        let mut f = tempfile::tempfile()?;
        let data: Vec<u8> = (0..len).map(pattern_byte).collect();
        f.write_all(&data)?;
        Ok(f)
    }

    #[test]
    fn copies_a_pattern_buffer_and_finds_no_mismatch() -> anyhow::Result<()> {
        let f = pattern_file(3 * 4096)?;
        let buf = MappedBuffer::map_fd(f.as_fd(), 3 * 4096, 0, Access::ReadOnly)?;
        assert_eq!(buf.len(), 3 * 4096);
        assert_ne!(buf.addr(), 0);
        let copy = buf.to_vec();
        assert_eq!(copy.len(), 3 * 4096);
        assert_eq!(pattern_mismatches(&copy).count(), 0);
        assert_eq!(buf.get(254), Some(254));
        assert_eq!(buf.get(255), Some(0));
        assert_eq!(buf.get(3 * 4096), None);
        let mut four = [0u8; 4];
        assert_eq!(buf.copy_range(253, &mut four), Some(()));
        assert_eq!(four, [253, 254, 0, 1]);
        assert_eq!(buf.copy_range(3 * 4096 - 2, &mut four), None);
        Ok(())
    }

    /// MAP_SHARED: a change made behind the mapping's back (as the kernel
    /// does) is seen by the next copy, at the right offset.
    #[test]
    fn detects_a_corrupted_byte_at_its_offset() -> anyhow::Result<()> {
        let mut f = pattern_file(8192)?;
        let buf = MappedBuffer::map_fd(f.as_fd(), 8192, 0, Access::ReadOnly)?;
        f.seek(SeekFrom::Start(5000))?;
        f.write_all(&[0xAA])?;
        let mut copy = Vec::new();
        buf.copy_to_vec(&mut copy);
        let bad: Vec<Mismatch> = pattern_mismatches(&copy).collect();
        assert_eq!(
            bad,
            [Mismatch {
                offset: 5000,
                expected: pattern_byte(5000),
                got: 0xAA
            }]
        );
        assert_eq!(
            bad[0].to_string(),
            format!(
                "data mismatch at offset 5000: expected {:#04x}, got 0xaa",
                pattern_byte(5000)
            )
        );
        Ok(())
    }

    #[test]
    fn writes_only_through_read_write_mappings() -> anyhow::Result<()> {
        let f = pattern_file(4096)?;
        let mut ro = MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadOnly)?;
        assert!(matches!(
            ro.write_at(0, &[1]),
            Err(Error::BufferAccess { .. })
        ));
        let mut rw = MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadWrite)?;
        rw.write_at(10, &[0xFF, 0xFE])?;
        assert!(rw.write_at(4095, &[1, 2]).is_err());
        assert_eq!(
            ro.get(10),
            Some(0xFF),
            "shared: visible in the other mapping"
        );
        let mut byte = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, 11)?;
        assert_eq!(byte, [0xFE], "shared: written through to the file");
        Ok(())
    }

    #[test]
    fn empty_and_unaligned_maps_are_refused() -> anyhow::Result<()> {
        let f = pattern_file(4096)?;
        let e = MappedBuffer::map_fd(f.as_fd(), 0, 0, Access::ReadOnly).err();
        assert_eq!(e.and_then(|e| e.errno()), Some(Errno::INVAL));
        let e = MappedBuffer::map_fd(f.as_fd(), 4096, 100, Access::ReadOnly).err();
        assert_eq!(e.and_then(|e| e.errno()), Some(Errno::INVAL));
        Ok(())
    }

    #[test]
    fn fast_pattern_check_agrees_with_the_byte_by_byte_one() {
        let len = 255 * 256 * 2 + 1000;
        let mut data: Vec<u8> = (0..len).map(pattern_byte).collect();
        assert_eq!(first_pattern_mismatch(&data), None);
        assert_eq!(first_pattern_mismatch(&data[..17]), None);
        for at in [0, 254, 255 * 256, 255 * 256 * 2 + 999] {
            let old = data[at];
            data[at] ^= 0x5A;
            assert_eq!(
                first_pattern_mismatch(&data),
                pattern_mismatches(&data).next(),
                "at {at}"
            );
            assert_eq!(first_pattern_mismatch(&data).map(|m| m.offset), Some(at));
            data[at] = old;
        }
    }

    #[test]
    fn stable_slice_sees_the_file_without_copying() -> anyhow::Result<()> {
        let f = pattern_file(8192)?;
        let buf = MappedBuffer::map_fd(f.as_fd(), 8192, 0, Access::ReadOnly)?;
        // SAFETY: nothing writes the file while the slice lives.
        let s = unsafe { buf.stable_slice() };
        assert_eq!(s.len(), 8192);
        assert_eq!(s.as_ptr() as usize, buf.addr());
        assert_eq!(first_pattern_mismatch(s), None);
        Ok(())
    }

    #[test]
    fn decodes_event_records() {
        let mut rec = Vec::new();
        rec.extend_from_slice(&42u64.to_ne_bytes());
        rec.extend_from_slice(&6u32.to_ne_bytes());
        rec.extend_from_slice(&0u32.to_ne_bytes());
        assert_eq!(
            decode_event(&rec),
            Event {
                seq: 42,
                code: 6,
                round: 0
            }
        );
    }

    /// Answers the two ack ioctls as told and counts the calls.
    struct FakeIoctls {
        round: std::cell::Cell<u32>,
        acks: std::cell::Cell<u32>,
        round_errno: Option<Errno>,
        ack_errno: Option<Errno>,
    }

    impl FakeIoctls {
        fn new(round_errno: Option<Errno>, ack_errno: Option<Errno>) -> Self {
            Self {
                round: std::cell::Cell::new(0),
                acks: std::cell::Cell::new(0),
                round_errno,
                ack_errno,
            }
        }
        fn answer(name: &'static str, errno: Option<Errno>) -> Result<()> {
            errno.map_or(Ok(()), |e| {
                Err(Error::Ioctl {
                    name,
                    source: e.into(),
                })
            })
        }
    }

    impl AckIoctls for FakeIoctls {
        fn ack_round(&self, _round: u32) -> Result<()> {
            self.round.set(self.round.get() + 1);
            Self::answer("K2U_IOC_ACK_ROUND", self.round_errno)
        }
        fn ack(&self) -> Result<()> {
            self.acks.set(self.acks.get() + 1);
            Self::answer("K2U_IOC_ACK", self.ack_errno)
        }
    }

    #[test]
    fn round_acks_use_the_round_ioctl_when_the_module_has_it() -> Result<()> {
        let dev = FakeIoctls::new(None, None);
        let mut acker = RoundAcker::default();
        assert_eq!(acker.ack(&dev, 7)?, AckedBy::Round);
        assert_eq!(acker.ack(&dev, 8)?, AckedBy::Round);
        assert_eq!((dev.round.get(), dev.acks.get()), (2, 0));
        assert!(!acker.falls_back());
        Ok(())
    }

    #[test]
    fn enotty_falls_back_to_ioc_ack_once_and_for_good() -> Result<()> {
        let dev = FakeIoctls::new(Some(Errno::NOTTY), None);
        let mut acker = RoundAcker::default();
        assert!(!acker.take_fallback_news());
        assert_eq!(acker.ack(&dev, 1)?, AckedBy::Fallback);
        assert!(acker.take_fallback_news(), "said once");
        assert!(!acker.take_fallback_news());
        assert_eq!(acker.ack(&dev, 2)?, AckedBy::Fallback);
        assert_eq!(acker.ack(&dev, 3)?, AckedBy::Fallback);
        assert!(!acker.take_fallback_news());
        assert_eq!(
            (dev.round.get(), dev.acks.get()),
            (1, 3),
            "K2U_IOC_ACK_ROUND is tried once"
        );
        assert!(acker.falls_back());
        Ok(())
    }

    #[test]
    fn a_stale_round_ack_is_late_not_a_reason_to_fall_back() {
        let dev = FakeIoctls::new(Some(Errno::STALE), None);
        let mut acker = RoundAcker::default();
        let e = acker.ack(&dev, 5).err();
        assert!(e.as_ref().is_some_and(is_late_ack), "{e:?}");
        assert!(!acker.falls_back());
        assert_eq!(dev.acks.get(), 0);
        assert!(!acker.take_fallback_news());
        // The fallback's own ack is late: the switch is still news.
        let dev = FakeIoctls::new(Some(Errno::NOTTY), Some(Errno::PROTO));
        let e = acker.ack(&dev, 5).err();
        assert!(e.as_ref().is_some_and(is_late_ack), "{e:?}");
        assert!(acker.falls_back());
        assert!(acker.take_fallback_news());
        let other = Error::Ioctl {
            name: "K2U_IOC_ACK_ROUND",
            source: Errno::BADF.into(),
        };
        assert!(!is_late_ack(&other));
    }

    /// A FIFO stands in for the device node: it has no ioctls at all.
    #[test]
    fn a_node_without_the_ioctl_answers_enotty() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("dev");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )?;
        let dev = Device::open(&path)?;
        let e = dev.ack_round(3).err();
        assert_eq!(e.and_then(|e| e.errno()), Some(Errno::NOTTY));
        Ok(())
    }

    #[test]
    fn opening_a_missing_node_says_what_to_do() {
        let msg = Device::open("/nonexistent/kern2usr")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("insmod kern2usr.ko"), "{msg}");
        assert!(msg.contains("create_chdev.sh"), "{msg}");
    }
}
