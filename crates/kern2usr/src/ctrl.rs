//! The control page of the adaptive mode ([`crate::abi::Ctrl`], mapped at
//! [`crate::abi::CTRL_MMAP_OFFSET`]) and the listener's side of its protocol.
//!
//! The module publishes each round by storing `ready_seq + 1`, then a full
//! barrier, then reading `listener_state`; it rings efd (MEMORY_READY) only
//! when the listener is [`LISTENER_ASLEEP`]. The listener spins on
//! `ready_seq` for a bounded time with [`LISTENER_SPINNING`]; to sleep it
//! stores `ASLEEP`, a full barrier, re-reads `ready_seq` and sleeps only if
//! it did not move. Either the module sees `ASLEEP` (and rings) or the
//! listener sees the new `ready_seq` (and does not sleep): with both
//! barriers, a round cannot fall between the two (the store-buffering
//! pattern, forbidden under sequential consistency).

use std::mem::offset_of;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::abi::{Ctrl, CTRL_MMAP_OFFSET, LISTENER_ASLEEP, LISTENER_SPINNING};
use crate::device::{Access, MappedBuffer};
use crate::error::Result;

/// What the listener says it does, as stored in `listener_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerState {
    /// Sleeping in poll() on efd: the module must ring it.
    Asleep,
    /// Watching `ready_seq`: the module may skip the doorbell.
    Spinning,
}

impl ListenerState {
    /// The ABI value.
    pub const fn value(self) -> u32 {
        match self {
            ListenerState::Asleep => LISTENER_ASLEEP,
            ListenerState::Spinning => LISTENER_SPINNING,
        }
    }
}

/// The mapped control page (one page, read-write, `MAP_SHARED`).
///
/// The fields of [`Ctrl`] are accessed only as atomics
/// ([`AtomicU64`]/[`AtomicU32`] over the mapping): the module reads and
/// writes them concurrently with `READ_ONCE`/`WRITE_ONCE`/`smp_mb()`, and
/// Rust atomics are the sound way to share such memory.
#[derive(Debug)]
pub struct CtrlPage {
    map: MappedBuffer,
}

const _: () = assert!(std::mem::size_of::<Ctrl>() <= 4096, "k2u_ctrl fits a page");
const _: () = assert!(offset_of!(Ctrl, ready_len) % 8 == 0);
const _: () = assert!(offset_of!(Ctrl, ready_seq) % 8 == 0);
const _: () = assert!(offset_of!(Ctrl, listener_state) % 4 == 0);
const _: () = assert!(offset_of!(Ctrl, doorbells_skipped) % 8 == 0);

impl CtrlPage {
    /// Map the control page of the device `fd` (`mmap` of one page at
    /// [`CTRL_MMAP_OFFSET`], read-write).
    pub(crate) fn map(fd: BorrowedFd<'_>) -> Result<Self> {
        let len = rustix::param::page_size().max(std::mem::size_of::<Ctrl>());
        Self::from_mapping(MappedBuffer::map_fd(
            fd,
            len,
            CTRL_MMAP_OFFSET,
            Access::ReadWrite,
        )?)
    }

    /// A control page over an existing read-write mapping (tests map a
    /// file). Fails if the mapping is read-only or smaller than [`Ctrl`].
    pub fn from_mapping(map: MappedBuffer) -> Result<Self> {
        if map.access() != Access::ReadWrite || map.len() < std::mem::size_of::<Ctrl>() {
            return Err(crate::Error::BufferAccess {
                offset: 0,
                len: std::mem::size_of::<Ctrl>(),
                size: map.len(),
                access: match map.access() {
                    Access::ReadOnly => "read-only",
                    Access::ReadWrite => "read-write",
                },
            });
        }
        Ok(Self { map })
    }

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 <= self.map.len());
        // SAFETY: `offset` is a field offset of Ctrl (checked 8-aligned at
        // compile time above) inside the mapping (at least size_of::<Ctrl>()
        // bytes, checked in from_mapping), and the mapping is page-aligned,
        // so the pointer is valid and aligned for an AtomicU64 for as long
        // as `self.map` lives, which bounds the returned reference. The
        // memory is only ever accessed atomically on our side; the kernel's
        // concurrent accesses are single-copy atomic aligned 64-bit ones,
        // which is what AtomicU64 permits (it is an UnsafeCell).
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u64>()) }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset + 4 <= self.map.len());
        // SAFETY: as in u64_at, for a 4-aligned u32 field.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u32>()) }
    }

    /// Rounds published in this test (`ready_seq`), read with acquire
    /// ordering: the buffer of that round is filled once this is seen.
    pub fn ready_seq(&self) -> u64 {
        self.u64_at(offset_of!(Ctrl, ready_seq))
            .load(Ordering::Acquire)
    }

    /// Bytes of data the round `ready_seq` published (`ready_len`, ABI
    /// v3): the buffer size for test rounds, the producer's length on a
    /// producer's channel. The module stores it before `ready_seq`, so read
    /// it after [`CtrlPage::ready_seq`] (whose acquire orders this load).
    /// Untrusted: clamp it to the buffer before slicing.
    ///
    /// ```no_run
    /// let ch = kern2usr::ChannelOptions::new().create()?;
    /// if let Some(ctrl) = ch.ctrl() {
    ///     let seq = ctrl.ready_seq();
    ///     println!("round {seq}: {} bytes", ctrl.ready_len());
    /// }
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn ready_len(&self) -> u64 {
        self.u64_at(offset_of!(Ctrl, ready_len))
            .load(Ordering::Acquire)
    }

    /// Rounds whose doorbell the module skipped (`doorbells_skipped`).
    pub fn doorbells_skipped(&self) -> u64 {
        self.u64_at(offset_of!(Ctrl, doorbells_skipped))
            .load(Ordering::Relaxed)
    }

    /// The raw `listener_state`.
    pub fn listener_state(&self) -> u32 {
        self.u32_at(offset_of!(Ctrl, listener_state))
            .load(Ordering::SeqCst)
    }

    /// Say that the listener watches `ready_seq` (no doorbell needed).
    pub fn set_spinning(&self) {
        self.u32_at(offset_of!(Ctrl, listener_state))
            .store(LISTENER_SPINNING, Ordering::SeqCst);
    }

    /// Say that the listener will sleep, without the re-check (when it
    /// leaves for good, or before it ever spun).
    pub fn set_asleep(&self) {
        self.u32_at(offset_of!(Ctrl, listener_state))
            .store(LISTENER_ASLEEP, Ordering::SeqCst);
    }

    /// The step before sleeping: store [`LISTENER_ASLEEP`], a full
    /// (SeqCst) fence, then re-read `ready_seq`. The caller may sleep on
    /// efd only if the value returned is not newer than the last round it
    /// handled; otherwise that round was published while it was still
    /// "spinning" and may have no doorbell.
    pub fn prepare_to_sleep(&self) -> u64 {
        self.set_asleep();
        // Pairs with the module's smp_mb() between its ready_seq store and
        // its listener_state load.
        fence(Ordering::SeqCst);
        self.u64_at(offset_of!(Ctrl, ready_seq))
            .load(Ordering::SeqCst)
    }

    /// A snapshot of all fields (each read atomically, not all at once).
    pub fn snapshot(&self) -> Ctrl {
        Ctrl {
            ready_seq: self.ready_seq(),
            listener_state: self.listener_state(),
            doorbells_skipped: self.doorbells_skipped(),
            ready_len: self.ready_len(),
            ..Ctrl::default()
        }
    }

    /// Play the module's part on a test mapping: publish round `seq`
    /// (store, full fence, read the state). Returns whether it would ring.
    /// A test double: only with `cfg(test)` or the `testing` feature.
    #[cfg(any(test, feature = "testing"))]
    pub fn publish_as_kernel(&self, seq: u64) -> bool {
        self.publish_len_as_kernel(seq, None)
    }

    /// [`CtrlPage::publish_as_kernel`] that also stores `ready_len` (before
    /// `ready_seq`, as the module does) when `len` is given. A test double.
    #[cfg(any(test, feature = "testing"))]
    pub fn publish_len_as_kernel(&self, seq: u64, len: Option<u64>) -> bool {
        if let Some(len) = len {
            self.u64_at(offset_of!(Ctrl, ready_len))
                .store(len, Ordering::Release);
        }
        self.u64_at(offset_of!(Ctrl, ready_seq))
            .store(seq, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let asleep = self.listener_state() == LISTENER_ASLEEP;
        if !asleep {
            self.u64_at(offset_of!(Ctrl, doorbells_skipped))
                .fetch_add(1, Ordering::SeqCst);
        }
        asleep
    }
}

impl Drop for CtrlPage {
    /// A listener that goes away must not leave the module skipping
    /// doorbells.
    fn drop(&mut self) {
        self.set_asleep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn file_page() -> anyhow::Result<(std::fs::File, CtrlPage)> {
        let f = tempfile::tempfile()?;
        f.set_len(4096)?;
        let map = MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadWrite)?;
        Ok((f, CtrlPage::from_mapping(map)?))
    }

    #[test]
    fn fields_are_at_the_abi_offsets() -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt;
        let (f, page) = file_page()?;
        f.write_all_at(&42u64.to_ne_bytes(), 0)?;
        f.write_all_at(&7u64.to_ne_bytes(), 16)?;
        assert_eq!(page.ready_seq(), 42);
        assert_eq!(page.doorbells_skipped(), 7);
        assert_eq!(page.listener_state(), LISTENER_ASLEEP);
        page.set_spinning();
        let mut state = [0u8; 4];
        f.read_exact_at(&mut state, 8)?;
        assert_eq!(u32::from_ne_bytes(state), LISTENER_SPINNING);
        assert_eq!(page.prepare_to_sleep(), 42);
        assert_eq!(page.listener_state(), LISTENER_ASLEEP);
        assert_eq!(
            page.snapshot(),
            Ctrl {
                ready_seq: 42,
                listener_state: 0,
                doorbells_skipped: 7,
                ready_len: 0,
                ..Ctrl::default()
            }
        );
        Ok(())
    }

    #[test]
    fn read_only_or_short_mappings_are_refused() -> anyhow::Result<()> {
        let f = tempfile::tempfile()?;
        f.set_len(4096)?;
        let ro = MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadOnly)?;
        assert!(CtrlPage::from_mapping(ro).is_err());
        let short = MappedBuffer::map_fd(f.as_fd(), 16, 0, Access::ReadWrite)?;
        assert!(CtrlPage::from_mapping(short).is_err());
        Ok(())
    }

    #[test]
    fn dropping_the_page_leaves_the_listener_asleep() -> anyhow::Result<()> {
        let (f, page) = file_page()?;
        let map = MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadWrite)?;
        let other = CtrlPage::from_mapping(map)?;
        page.set_spinning();
        assert_eq!(other.listener_state(), LISTENER_SPINNING);
        drop(page);
        assert_eq!(other.listener_state(), LISTENER_ASLEEP);
        Ok(())
    }

    /// The kernel's half played by a thread: every published round is
    /// either rung or seen by the re-check; none is missed.
    #[test]
    fn no_round_falls_between_spinning_and_sleeping() -> anyhow::Result<()> {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let (f, page) = file_page()?;
        let kernel =
            CtrlPage::from_mapping(MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadWrite)?)?;
        let bell = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        const ROUNDS: u64 = 5_000;
        let (bell_k, acked_k) = (bell.clone(), acked.clone());
        let k = std::thread::spawn(move || {
            for seq in 1..=ROUNDS {
                if kernel.publish_as_kernel(seq) {
                    bell_k.store(true, Ordering::SeqCst);
                }
                while acked_k.load(Ordering::SeqCst) < seq {
                    std::thread::yield_now();
                }
            }
            kernel
        });
        let mut last = 0;
        while last < ROUNDS {
            // Alternate short spins and "sleeps" (waiting for the bell);
            // a bell whose round was already seen is a spurious wake-up.
            loop {
                page.set_spinning();
                // No spin, a short one, or one until the round comes (so
                // some doorbells are surely skipped).
                let polls = match last % 3 {
                    0 => 0,
                    1 => 50,
                    _ => u64::MAX,
                };
                let give_up = std::time::Instant::now() + std::time::Duration::from_secs(1);
                if (0..polls)
                    .take_while(|_| std::time::Instant::now() < give_up)
                    .any(|_| {
                        std::thread::yield_now();
                        page.ready_seq() > last
                    })
                {
                    break;
                }
                if page.prepare_to_sleep() > last {
                    break;
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !bell.swap(false, Ordering::SeqCst) {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "stalled after round {last}: asleep and never rung"
                    );
                    std::thread::yield_now();
                }
                if page.ready_seq() > last {
                    break;
                }
            }
            let seq = page.ready_seq();
            anyhow::ensure!(seq == last + 1, "round {seq} after {last}");
            last = seq;
            acked.store(seq, Ordering::SeqCst);
        }
        let kernel = k
            .join()
            .map_err(|_| anyhow::anyhow!("kernel thread panicked"))?;
        assert!(kernel.doorbells_skipped() > 0);
        Ok(())
    }
}
