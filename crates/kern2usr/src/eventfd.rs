//! Linux eventfds: the two doorbells between the module and the listener.
//!
//! An eventfd holds a 64-bit counter: write() adds to it, read() returns it
//! and resets it to zero. Two writes before one read therefore *add up*
//! (2 then 3 reads as 5), which is why the protocol never lets the kernel
//! post a second code before the first was read (counter mode) or carries
//! the codes elsewhere (queue mode). See docs/PROTOCOL.md.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// An owned eventfd.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Create a blocking eventfd with counter 0 (close-on-exec).
    pub fn new() -> Result<Self> {
        Self::with_flags(EventfdFlags::CLOEXEC)
    }

    /// Create a non-blocking eventfd with counter 0: [`EventFd::read`] then
    /// fails with EAGAIN instead of waiting when the counter is 0.
    pub fn new_nonblocking() -> Result<Self> {
        Self::with_flags(EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
    }

    /// Create an eventfd with `flags` (e.g. [`EventfdFlags::SEMAPHORE`],
    /// which counter mode refuses: see PROTOCOL.md).
    pub fn with_flags(flags: EventfdFlags) -> Result<Self> {
        let fd = rustix::event::eventfd(0, flags).map_err(|e| Error::EventFd {
            op: "create",
            source: e.into(),
        })?;
        Ok(Self { fd })
    }

    /// Read the counter (and reset it to 0). Blocks while it is 0 unless the
    /// eventfd is non-blocking.
    pub fn read(&self) -> Result<u64> {
        let mut buf = [0u8; 8];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(8) => return Ok(u64::from_ne_bytes(buf)),
                Ok(n) => {
                    return Err(Error::EventFd {
                        op: "read",
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("read {n} bytes instead of 8"),
                        ),
                    })
                }
                Err(Errno::INTR) => continue,
                Err(e) => {
                    return Err(Error::EventFd {
                        op: "read",
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Add `value` to the counter (waking pollers). `u64::MAX` is invalid.
    pub fn write(&self, value: u64) -> Result<()> {
        loop {
            match rustix::io::write(&self.fd, &value.to_ne_bytes()) {
                Ok(8) => return Ok(()),
                Ok(n) => {
                    return Err(Error::EventFd {
                        op: "write",
                        source: io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("wrote {n} bytes instead of 8"),
                        ),
                    })
                }
                Err(Errno::INTR) => continue,
                Err(e) => {
                    return Err(Error::EventFd {
                        op: "write",
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Wait until the counter is non-zero, at most `timeout`. Returns
    /// `false` on timeout. Does not read the counter.
    pub fn wait_readable(&self, timeout: Duration) -> Result<bool> {
        wait_readable(self.fd.as_fd(), timeout)
    }
}

/// poll() `fd` for POLLIN for at most `timeout`; `false` on timeout.
/// Interrupted polls are restarted with the full timeout.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> Result<bool> {
    let ts = Timespec::try_from(timeout).map_err(|_| {
        Error::Poll(io::Error::new(
            io::ErrorKind::InvalidInput,
            "poll timeout out of range",
        ))
    })?;
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(false),
            Ok(_) => {
                let rev = fds[0].revents();
                if rev.contains(PollFlags::NVAL) {
                    return Err(Error::Poll(io::Error::other("fd is not open (POLLNVAL)")));
                }
                return Ok(true);
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::Poll(e.into())),
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Adopt an fd that must be an eventfd (e.g. one taken from another
/// process with pidfd_getfd); operations on anything else fail.
impl From<OwnedFd> for EventFd {
    fn from(fd: OwnedFd) -> EventFd {
        EventFd { fd }
    }
}

impl From<EventFd> for OwnedFd {
    fn from(e: EventFd) -> OwnedFd {
        e.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_returns_what_was_written() -> Result<()> {
        let e = EventFd::new()?;
        e.write(2)?;
        assert_eq!(e.read()?, 2);
        Ok(())
    }

    /// The weakness the protocol exists for: two signals before one read merge.
    #[test]
    fn counter_adds_up_two_then_three_reads_five() -> Result<()> {
        let e = EventFd::new()?;
        e.write(2)?;
        e.write(3)?;
        assert_eq!(e.read()?, 5, "2 + 3 merge into 5 (= EXIT_TEST)");
        Ok(())
    }

    #[test]
    fn read_resets_the_counter() -> Result<()> {
        let e = EventFd::new_nonblocking()?;
        e.write(7)?;
        assert_eq!(e.read()?, 7);
        let err = e.read().err().and_then(|e| e.errno());
        assert_eq!(err, Some(Errno::AGAIN));
        Ok(())
    }

    #[test]
    fn wait_readable_times_out_then_sees_a_write() -> Result<()> {
        let e = EventFd::new()?;
        assert!(!e.wait_readable(Duration::from_millis(10))?);
        e.write(1)?;
        assert!(e.wait_readable(Duration::from_millis(10))?);
        Ok(())
    }

    #[test]
    fn writing_u64_max_is_refused() -> Result<()> {
        let e = EventFd::new()?;
        let err = e.write(u64::MAX).err().and_then(|e| e.errno());
        assert_eq!(err, Some(Errno::INVAL));
        Ok(())
    }
}
