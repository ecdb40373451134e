//! A userfaultfd-backed memory range whose pages stall whoever touches
//! them, the kernel's copy_to_user() included, until the test lets them go:
//! the "stalled destination page" of the tests that check that no channel
//! lock is held across a copy to userspace.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::ioctl::{opcode, Opcode, Setter, Updater};
use rustix::mm::{MapFlags, ProtFlags};

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

const UFFD_API: u64 = 0xAA;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFDIO_API: Opcode = opcode::read_write::<UffdioApi>(0xAA, 0x3F);
const UFFDIO_REGISTER: Opcode = opcode::read_write::<UffdioRegister>(0xAA, 0x00);
const UFFDIO_UNREGISTER: Opcode = opcode::read::<UffdioRange>(0xAA, 0x01);
/// Bytes of `struct uffd_msg`.
const MSG_LEN: usize = 32;

/// An anonymous mapping of `len` bytes whose pages from `stall_from` on are
/// registered with a userfaultfd (missing-page mode): a first touch of
/// one of them blocks until [`StallRange::release`].
pub struct StallRange {
    uffd: OwnedFd,
    addr: *mut u8,
    len: usize,
    stall_from: usize,
    registered: bool,
}

// SAFETY: the mapping is plain memory owned by this value; the raw pointer
// is only handed out as a slice borrowed from it.
unsafe impl Send for StallRange {}
// SAFETY: as above; shared access only reads the fields.
unsafe impl Sync for StallRange {}

impl StallRange {
    /// The range, or `Ok(None)` when the kernel has no userfaultfd
    /// (`CONFIG_USERFAULTFD` off: ENOSYS).
    pub fn new(len: usize, stall_from: usize) -> Result<Option<Self>> {
        ensure!(
            stall_from < len && stall_from.is_multiple_of(4096) && len.is_multiple_of(4096),
            "stall_from {stall_from}, len {len}"
        );
        // SAFETY: userfaultfd(2) takes flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSYS) {
                return Ok(None);
            }
            return Err(e).context("userfaultfd(O_CLOEXEC)");
        }
        let fd = i32::try_from(fd).context("userfaultfd fd")?;
        // SAFETY: `fd` was just returned by the kernel and is ours alone.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut api = UffdioApi {
            api: UFFD_API,
            ..UffdioApi::default()
        };
        // SAFETY: UFFDIO_API is _IOWR(0xAA, 0x3F, struct uffdio_api) and
        // UffdioApi its #[repr(C)] layout; `api` outlives the call.
        unsafe { rustix::ioctl::ioctl(&uffd, Updater::<UFFDIO_API, UffdioApi>::new(&mut api)) }
            .context("UFFDIO_API")?;
        // SAFETY: a fresh private anonymous mapping; nothing else is at the
        // address the kernel picks.
        let addr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .context("mmap of the stall range")?
        .cast::<u8>();
        let mut me = Self {
            uffd,
            addr,
            len,
            stall_from,
            registered: false,
        };
        // Populate the pages before the stall: they copy without a fault.
        // SAFETY: [addr, addr + stall_from) is inside the mapping, writable.
        unsafe { std::ptr::write_bytes(me.addr, 0, stall_from) };
        let mut reg = UffdioRegister {
            range: me.range(),
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER is _IOWR(0xAA, 0x00, struct
        // uffdio_register) and UffdioRegister its layout.
        unsafe {
            rustix::ioctl::ioctl(
                &me.uffd,
                Updater::<UFFDIO_REGISTER, UffdioRegister>::new(&mut reg),
            )
        }
        .context("UFFDIO_REGISTER")?;
        me.registered = true;
        Ok(Some(me))
    }

    fn range(&self) -> UffdioRange {
        UffdioRange {
            start: self.addr as u64 + self.stall_from as u64,
            len: (self.len - self.stall_from) as u64,
        }
    }

    /// The user address of byte 0, and the length, for an ioctl argument.
    pub fn addr_len(&self) -> (u64, u64) {
        (self.addr as u64, self.len as u64)
    }

    /// Wait up to `within` for a fault on a stalled page: the address.
    pub fn wait_fault(&self, within: Duration) -> Result<u64> {
        let ts = Timespec::try_from(within).context("timeout")?;
        let mut fds = [PollFd::new(&self.uffd, PollFlags::IN)];
        let n = poll(&mut fds, Some(&ts)).context("poll on the userfaultfd")?;
        if n == 0 {
            bail!("no fault on the stalled pages within {within:?}");
        }
        let mut msg = [0u8; MSG_LEN];
        let got = rustix::io::read(&self.uffd, &mut msg).context("reading a uffd_msg")?;
        ensure!(got == MSG_LEN, "uffd_msg of {got} bytes");
        ensure!(
            msg[0] == UFFD_EVENT_PAGEFAULT,
            "uffd event {:#x}, not a page fault",
            msg[0]
        );
        let addr = u64::from_ne_bytes(msg[16..24].try_into().context("address")?);
        Ok(addr)
    }

    /// Let every stalled access go on: unregistering wakes the blocked
    /// faults, which then fault in plain anonymous pages.
    pub fn release(&mut self) -> Result<()> {
        if !self.registered {
            return Ok(());
        }
        let range = self.range();
        // SAFETY: UFFDIO_UNREGISTER takes a struct uffdio_range (read
        // only); UffdioRange is its layout.
        unsafe {
            rustix::ioctl::ioctl(
                &self.uffd,
                Setter::<UFFDIO_UNREGISTER, UffdioRange>::new(range),
            )
        }
        .context("UFFDIO_UNREGISTER")?;
        self.registered = false;
        Ok(())
    }

    /// The bytes, once released (a read of a stalled page would block).
    pub fn bytes(&self) -> Result<&[u8]> {
        ensure!(!self.registered, "the range is still stalled");
        // SAFETY: the mapping is `len` readable bytes for as long as self.
        Ok(unsafe { std::slice::from_raw_parts(self.addr, self.len) })
    }
}

impl Drop for StallRange {
    fn drop(&mut self) {
        // Closing the userfaultfd also wakes and unregisters; be explicit.
        let _ = self.release();
        // SAFETY: the mapping was made in new() with this length and no
        // borrow of it outlives self.
        let _ = unsafe { rustix::mm::munmap(self.addr.cast(), self.len) };
    }
}
