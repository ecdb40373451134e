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
//!
//! Acks through the page (ABI 4) are the mirror image: the listener stores
//! the id of the last round it is done with in `ack_seq`, a full barrier,
//! then reads `kernel_state` and `wake_seq`, and writes 7 to efd2 only
//! when the module is [`KERNEL_ASLEEP`] and `ack_seq >= wake_seq`
//! ([`CtrlPage::ack_through_page`]). The module, to sleep, stores
//! `wake_seq`, then `KERNEL_ASLEEP`, a full barrier, and re-reads
//! `ack_seq`.

use std::mem::offset_of;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::abi::{
    Ctrl, RingSlot, CTRL_MMAP_OFFSET, KERNEL_ASLEEP, LISTENER_ASLEEP, LISTENER_SPINNING,
    RING_MAX_SLOTS,
};
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
const _: () = assert!(offset_of!(Ctrl, kernel_state) % 4 == 0);
const _: () = assert!(offset_of!(Ctrl, ack_seq) % 8 == 0);
const _: () = assert!(offset_of!(Ctrl, wake_seq) % 8 == 0);
const _: () = assert!(offset_of!(Ctrl, ring_slots) % 4 == 0);
const _: () = assert!(offset_of!(Ctrl, ring_full) % 8 == 0);
const _: () = assert!(offset_of!(Ctrl, slots) % 8 == 0);
const _: () = assert!(std::mem::size_of::<RingSlot>() == 16);

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

    /// `ack_seq` (ABI 4): the id of the last round the listener is done
    /// with, as stored in the page (acquire).
    pub fn ack_seq(&self) -> u64 {
        self.u64_at(offset_of!(Ctrl, ack_seq))
            .load(Ordering::Acquire)
    }

    /// The raw `kernel_state` ([`KERNEL_ASLEEP`] or
    /// [`crate::abi::KERNEL_POLLING`]).
    pub fn kernel_state(&self) -> u32 {
        self.u32_at(offset_of!(Ctrl, kernel_state))
            .load(Ordering::SeqCst)
    }

    /// `wake_seq`: the `ack_seq` from which an ack must ring efd2 while
    /// the module sleeps.
    pub fn wake_seq(&self) -> u64 {
        self.u64_at(offset_of!(Ctrl, wake_seq))
            .load(Ordering::SeqCst)
    }

    /// A ring's number of slots (0: not a ring).
    pub fn ring_slots(&self) -> u32 {
        self.u32_at(offset_of!(Ctrl, ring_slots))
            .load(Ordering::Relaxed)
    }

    /// Times a ring's producer found the ring full.
    pub fn ring_full(&self) -> u64 {
        self.u64_at(offset_of!(Ctrl, ring_full))
            .load(Ordering::Relaxed)
    }

    /// Entry `index` of the ring's slot table (`None` past
    /// [`RING_MAX_SLOTS`]). The module writes entry `(r - 1) % slots`
    /// before it publishes round `r`, so read it after
    /// [`CtrlPage::ready_seq`] showed `r` (whose acquire orders these
    /// loads). Untrusted: check `round` and clamp `len`.
    pub fn slot(&self, index: usize) -> Option<RingSlot> {
        if index >= RING_MAX_SLOTS as usize {
            return None;
        }
        let base = offset_of!(Ctrl, slots) + index * std::mem::size_of::<RingSlot>();
        Some(RingSlot {
            round: self
                .u64_at(base + offset_of!(RingSlot, round))
                .load(Ordering::Acquire),
            len: self
                .u64_at(base + offset_of!(RingSlot, len))
                .load(Ordering::Acquire),
        })
    }

    /// Ack round `round` through the page (ABI 4): store `ack_seq =
    /// round` (release: every read of the round's data happens before),
    /// a full (SeqCst) fence, then read `kernel_state` and `wake_seq`.
    /// Returns true when the caller must write 7 to efd2: the module
    /// sleeps ([`KERNEL_ASLEEP`]) and `round >= wake_seq`. Either the
    /// module's re-read after its own barrier sees the new `ack_seq`, or
    /// this sees its `KERNEL_ASLEEP` and `wake_seq`: an ack is never left
    /// unseen by a sleeping module.
    ///
    /// ```no_run
    /// use kern2usr::abi::Code;
    /// # let ch = kern2usr::ChannelOptions::new().create()?;
    /// # let efd2 = kern2usr::EventFd::new()?;
    /// let page = ch.ctrl().expect("a created channel has its page");
    /// let round = page.ready_seq();
    /// if page.ack_through_page(round) {
    ///     efd2.write(u64::from(Code::MemoryCopied.value()))?;
    /// }
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn ack_through_page(&self, round: u64) -> bool {
        self.u64_at(offset_of!(Ctrl, ack_seq))
            .store(round, Ordering::Release);
        // Pairs with the module's smp_mb() between its KERNEL_ASLEEP store
        // and its re-read of ack_seq.
        fence(Ordering::SeqCst);
        let state = self.kernel_state();
        let wake = self.wake_seq();
        state == KERNEL_ASLEEP && round >= wake
    }

    /// A snapshot of all fields (each read atomically, not all at once).
    pub fn snapshot(&self) -> Ctrl {
        let mut c = Ctrl {
            ready_seq: self.ready_seq(),
            listener_state: self.listener_state(),
            kernel_state: self.kernel_state(),
            doorbells_skipped: self.doorbells_skipped(),
            ready_len: self.ready_len(),
            ack_seq: self.ack_seq(),
            wake_seq: self.wake_seq(),
            ring_slots: self.ring_slots(),
            ring_full: self.ring_full(),
            ..Ctrl::default()
        };
        for (i, slot) in c.slots.iter_mut().enumerate() {
            if let Some(s) = self.slot(i) {
                *slot = s;
            }
        }
        c
    }

    /// Play the module's part of page acks on a test mapping: store
    /// `wake_seq`, then [`KERNEL_ASLEEP`], a full fence, and re-read
    /// `ack_seq` (the module sleeps only if it did not move). A test
    /// double: only with `cfg(test)` or the `testing` feature.
    #[cfg(any(test, feature = "testing"))]
    pub fn sleep_as_kernel(&self, wake_seq: u64) -> u64 {
        self.u64_at(offset_of!(Ctrl, wake_seq))
            .store(wake_seq, Ordering::SeqCst);
        self.u32_at(offset_of!(Ctrl, kernel_state))
            .store(KERNEL_ASLEEP, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.u64_at(offset_of!(Ctrl, ack_seq))
            .load(Ordering::SeqCst)
    }

    /// Store `kernel_state` as the module would. A test double.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_kernel_state_as_kernel(&self, state: u32) {
        self.u32_at(offset_of!(Ctrl, kernel_state))
            .store(state, Ordering::SeqCst);
    }

    /// Write ring slot entry `index` and publish round `round` as the
    /// module does for a ring (entry, then `ready_len`, then `ready_seq`,
    /// full fence, `listener_state`). Returns whether it would ring. A
    /// test double.
    #[cfg(any(test, feature = "testing"))]
    pub fn publish_slot_as_kernel(&self, slots: u32, round: u64, len: u64) -> bool {
        self.u32_at(offset_of!(Ctrl, ring_slots))
            .store(slots, Ordering::Relaxed);
        let index = ((round - 1) % u64::from(slots)) as usize;
        let base = offset_of!(Ctrl, slots) + index * std::mem::size_of::<RingSlot>();
        self.u64_at(base + offset_of!(RingSlot, round))
            .store(round, Ordering::Release);
        self.u64_at(base + offset_of!(RingSlot, len))
            .store(len, Ordering::Release);
        self.publish_len_as_kernel(round, Some(len))
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

    #[test]
    fn ring_fields_are_at_the_abi_offsets() -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt;
        let (f, page) = file_page()?;
        f.write_all_at(&1u32.to_ne_bytes(), offset_of!(Ctrl, kernel_state) as u64)?;
        f.write_all_at(&9u64.to_ne_bytes(), offset_of!(Ctrl, wake_seq) as u64)?;
        f.write_all_at(&8u32.to_ne_bytes(), offset_of!(Ctrl, ring_slots) as u64)?;
        f.write_all_at(&3u64.to_ne_bytes(), offset_of!(Ctrl, ring_full) as u64)?;
        let slot5 = offset_of!(Ctrl, slots) as u64 + 5 * 16;
        f.write_all_at(&14u64.to_ne_bytes(), slot5)?;
        f.write_all_at(&4096u64.to_ne_bytes(), slot5 + 8)?;
        assert_eq!(page.kernel_state(), crate::abi::KERNEL_POLLING);
        assert_eq!(page.wake_seq(), 9);
        assert_eq!(page.ring_slots(), 8);
        assert_eq!(page.ring_full(), 3);
        assert_eq!(
            page.slot(5),
            Some(RingSlot {
                round: 14,
                len: 4096
            })
        );
        assert_eq!(page.slot(RING_MAX_SLOTS as usize), None);
        // Polling: no efd2 write needed, whatever wake_seq says.
        assert!(!page.ack_through_page(12));
        let mut ack = [0u8; 8];
        f.read_exact_at(&mut ack, offset_of!(Ctrl, ack_seq) as u64)?;
        assert_eq!(u64::from_ne_bytes(ack), 12);
        assert_eq!(page.ack_seq(), 12);
        let snap = page.snapshot();
        assert_eq!(
            (
                snap.ack_seq,
                snap.wake_seq,
                snap.ring_slots,
                snap.slots[5].round
            ),
            (12, 9, 8, 14)
        );
        Ok(())
    }

    /// The NEED_WAKEUP rule of page acks: asleep and `ack_seq >=
    /// wake_seq` rings, anything else does not.
    #[test]
    fn page_acks_ring_efd2_only_when_the_module_sleeps_and_waits_for_them() -> anyhow::Result<()> {
        let (f, page) = file_page()?;
        let kernel =
            CtrlPage::from_mapping(MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadWrite)?)?;
        // A fresh page: asleep, wake_seq 0: every ack rings (ABI 3 style).
        assert!(page.ack_through_page(1));
        assert_eq!(kernel.sleep_as_kernel(5), 1, "the re-read sees the ack");
        for (ack, rings) in [(2, false), (4, false), (5, true), (7, true)] {
            assert_eq!(page.ack_through_page(ack), rings, "ack {ack}, wake_seq 5");
        }
        kernel.set_kernel_state_as_kernel(crate::abi::KERNEL_POLLING);
        assert!(!page.ack_through_page(9), "polling: no efd2 write");
        assert_eq!(kernel.ack_seq(), 9);
        Ok(())
    }

    /// The module's sleep played by a thread against page acks: every
    /// time it sleeps, either its re-read sees the ack or the listener is
    /// told to ring efd2; it never sleeps through an ack it waits for.
    #[test]
    fn no_ack_falls_between_polling_and_sleeping() -> anyhow::Result<()> {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let (f, page) = file_page()?;
        let kernel =
            CtrlPage::from_mapping(MappedBuffer::map_fd(f.as_fd(), 4096, 0, Access::ReadWrite)?)?;
        let bell = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        const ROUNDS: u64 = 5_000;
        let (bell_k, pub_k) = (bell.clone(), published.clone());
        let k = std::thread::spawn(move || -> anyhow::Result<()> {
            for r in 1..=ROUNDS {
                pub_k.store(r, Ordering::SeqCst);
                // Wait for ack r: poll a little (POLLING), then sleep.
                kernel.set_kernel_state_as_kernel(crate::abi::KERNEL_POLLING);
                let mut seen = (0..(r % 3) * 20).any(|_| {
                    std::thread::yield_now();
                    kernel.ack_seq() >= r
                });
                while !seen {
                    if kernel.sleep_as_kernel(r) >= r {
                        break;
                    }
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    while !bell_k.swap(false, Ordering::SeqCst) {
                        anyhow::ensure!(
                            std::time::Instant::now() < deadline,
                            "asleep waiting for ack {r}, never rung"
                        );
                        std::thread::yield_now();
                    }
                    seen = kernel.ack_seq() >= r;
                }
            }
            Ok(())
        });
        let mut last = 0;
        while last < ROUNDS {
            let r = published.load(Ordering::SeqCst);
            if r > last {
                last = r;
                if page.ack_through_page(r) {
                    bell.store(true, Ordering::SeqCst);
                }
            } else {
                std::thread::yield_now();
            }
        }
        k.join()
            .map_err(|_| anyhow::anyhow!("kernel thread panicked"))??;
        assert_eq!(page.ack_seq(), ROUNDS);
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
