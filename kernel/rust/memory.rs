// SPDX-License-Identifier: GPL-2.0-only

//! The memory shared with the listener: the data buffer (mapped at offset 0)
//! and the control page (mapped at `CTRL_MMAP_OFFSET`).
//!
//! Both are zeroed pages mapped with `vm_insert_page()`, which is what C's
//! `vmalloc_user()` + `remap_vmalloc_range()` do underneath, through the
//! kernel's safe `Page` and `VmaNew` abstractions. A kernel producer's
//! buffer is one zeroed vmalloc area instead (the producer writes it
//! through one pointer), whose pages are mapped the same way.

use kernel::{
    mm::virt::{flags, VmaNew},
    page::{Page, PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        barrier::{smp_mb, Full},
        SpinLock,
    },
};

use crate::abi::{self, pattern_byte, Ctrl};
use crate::state::{Locked, RateLimit, Tag};
use crate::sys::{self, VmallocArea};

/// `vm_pgoff` of the control page.
const CTRL_PGOFF: usize = (abi::CTRL_MMAP_OFFSET >> PAGE_SHIFT) as usize;

/// Period of the default channel's pattern (`pattern_byte()`).
const DEFAULT_MODULUS: usize = 255;
// The two patterns are told apart by their period.
const _: () = assert!(abi::CHANNEL_PATTERN_MODULUS as usize != DEFAULT_MODULUS);
const _: () = assert!(pattern_byte(DEFAULT_MODULUS + 7) == 7);

/// The data buffer's memory.
enum Data {
    /// Separate zeroed pages: the default channel's and a created one's.
    Pages(KVec<Page>),
    /// One zeroed vmalloc area: a kernel producer's, which it writes
    /// through [`Memory::producer_buffer`].
    Area(VmallocArea),
}

/// The data buffer and the control page of a channel.
pub(crate) struct Memory {
    data: Data,
    /// Bytes of the data buffer, a multiple of the page size.
    size: usize,
    /// `pattern[i] = i % modulus` for a page plus a period, so that the
    /// fill of page `n` is the slice starting at `(n * PAGE_SIZE + shift)
    /// % modulus`: the default channel's `i % 255` (shift 0), or a created
    /// channel's `channel_pattern_byte()` (modulus 251, shifted by the
    /// channel and the round).
    pattern: KVec<u8>,
    /// 255 (the default channel) or `CHANNEL_PATTERN_MODULUS`.
    modulus: usize,
    /// `channel_pattern_byte()`'s offset of this channel, 0 for the default.
    shift: usize,
    pub(crate) ctrl: CtrlPage,
}

impl Memory {
    /// `size` bytes (a multiple of the page size) of zeroed pages, and the
    /// control page, for channel `id`; one contiguous area for a
    /// `producer`'s. A created channel's (`id` not 0) are charged to the
    /// caller's memory cgroup (`GFP_KERNEL_ACCOUNT`).
    pub(crate) fn new(size: usize, id: u32, producer: bool) -> Result<Self> {
        let count = size / PAGE_SIZE;
        let gfp = if id == 0 {
            GFP_KERNEL
        } else {
            GFP_KERNEL_ACCOUNT
        };
        let data = if producer {
            Data::Area(VmallocArea::new(size, gfp)?)
        } else {
            let mut pages = KVec::with_capacity(count, gfp)?;
            for _ in 0..count {
                pages.push(Page::alloc_page(gfp | __GFP_ZERO)?, gfp)?;
            }
            Data::Pages(pages)
        };
        let (modulus, shift) = if id == 0 {
            (DEFAULT_MODULUS, 0)
        } else {
            // channel_pattern_byte(id, 0, 0): the channel's own offset.
            (
                abi::CHANNEL_PATTERN_MODULUS as usize,
                usize::from(abi::channel_pattern_byte(id, 0, 0)),
            )
        };
        let mut pattern = KVec::with_capacity(PAGE_SIZE + modulus, gfp)?;
        for i in 0..PAGE_SIZE + modulus {
            let byte = if id == 0 {
                pattern_byte(i)
            } else {
                (i % modulus) as u8
            };
            pattern.push(byte, gfp)?;
        }
        Ok(Self {
            data,
            size: count * PAGE_SIZE,
            pattern,
            modulus,
            shift,
            ctrl: CtrlPage(Page::alloc_page(gfp | __GFP_ZERO)?),
        })
    }

    /// Size of the data buffer.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// A kernel producer's buffer: its kernel address, for the producer to
    /// write (`None` on other channels).
    pub(crate) fn producer_buffer(&self) -> Option<*mut c_void> {
        match &self.data {
            Data::Area(area) => Some(area.as_ptr()),
            Data::Pages(_) => None,
        }
    }

    /// Calls `f` with page `n` of the data buffer, if there is one.
    fn with_page<R>(&self, n: usize, f: impl FnOnce(&Page) -> R) -> Option<R> {
        match &self.data {
            Data::Pages(pages) => pages.get(n).map(f),
            Data::Area(area) => area.page(n).map(|page| f(&page)),
        }
    }

    /// Calls `f` with each page of the data buffer and its index, in
    /// order, until it fails.
    fn for_each_page(&self, mut f: impl FnMut(usize, &Page) -> Result) -> Result {
        match &self.data {
            Data::Pages(pages) => {
                for (n, page) in pages.iter().enumerate() {
                    f(n, page)?;
                }
            }
            Data::Area(area) => {
                for n in 0..self.size / PAGE_SIZE {
                    let page = area.page(n).ok_or(EINVAL)?;
                    f(n, &page)?;
                }
            }
        }
        Ok(())
    }

    /// Writes round `round`'s pattern into the whole buffer: byte `i` is
    /// `i % 255` on the default channel, `channel_pattern_byte(id, round,
    /// i)` on channel `id`.
    ///
    /// Taking the lock guard serialises the fills, the only kernel writes.
    pub(crate) fn fill(&self, _locked: &mut Locked<'_>, round: u64) {
        let modulus = self.modulus;
        // Zero for the default channel (modulus 255, shift 0), whose
        // pattern does not move with the round.
        let start = if modulus == DEFAULT_MODULUS {
            0
        } else {
            (self.shift + (round % modulus as u64) as usize) % modulus
        };
        let _ = self.for_each_page(|n, page| {
            let Some(src) = self.pattern.get((n * PAGE_SIZE + start) % modulus..) else {
                return Ok(());
            };
            // SAFETY: `src` is at least `PAGE_SIZE` bytes long (`pattern`
            // holds a page and `modulus` more, and it starts below `modulus`). The only kernel writer is this
            // function, serialised by the lock guard. User space may access
            // the page through its mapping concurrently: as with C's fill of
            // a vmalloc_user() buffer, that is the byte-wise race inherent
            // to shared memory, and no Rust reference to the page exists.
            let _ = unsafe { page.write_raw(src.as_ptr(), 0, PAGE_SIZE) };
            Ok(())
        });
    }

    /// The `mmap` hook: the data buffer at offset 0, the control page at
    /// `CTRL_MMAP_OFFSET`, each at most its size long.
    /// Refusals are logged with `tag` (the channel's prefix).
    pub(crate) fn mmap(&self, vma: &VmaNew, log: &SpinLock<RateLimit>, tag: Tag) -> Result {
        let len = vma.end() - vma.start();
        let pgoff = sys::vma_pgoff(vma);
        let ctrl = pgoff == CTRL_PGOFF;
        let size = if ctrl {
            PAGE_SIZE
        } else if pgoff != 0 {
            if log.lock().check() {
                pr_info!(
                    "{}mmap refused: offset {}, must be 0 (or the control page's)\n",
                    tag,
                    pgoff << PAGE_SHIFT
                );
            }
            return Err(EINVAL);
        } else {
            self.size
        };
        if len > size {
            if log.lock().check() {
                pr_info!("{}mmap refused: length {} exceeds {}\n", tag, len, size);
            }
            return Err(EINVAL);
        }
        // The control page must be shared: a private copy would hide
        // `listener_state` from the module. The data buffer may be private
        // with any protection (the 2017 client maps it so): the pages are
        // mapped read-only and copy-on-write, so the listener sees every
        // fill until it writes a page, which then becomes its own copy.
        // By the mapping's type (`MAP_SHARED` of a read-only fd has no
        // VM_SHARED but VM_MAYSHARE), not by its protection.
        if ctrl && vma.flags() & flags::MAYSHARE == 0 {
            if log.lock().check() {
                pr_info!("{}mmap refused: the control page must be MAP_SHARED\n", tag);
            }
            return Err(EINVAL);
        }
        // A producer's buffer is written by the producer only: its
        // listener maps it read-only when shared (a private copy is its
        // own).
        if !ctrl && self.producer_buffer().is_some() && vma.flags() & flags::SHARED != 0 {
            if vma.try_clear_maywrite().is_err() {
                if log.lock().check() {
                    pr_info!(
                        "{}mmap refused: a producer's buffer is read-only (MAP_SHARED with PROT_WRITE)\n",
                        tag
                    );
                }
                return Err(EACCES);
            }
        }
        let map = vma.set_mixedmap();
        let count = len / PAGE_SIZE;
        if ctrl {
            if count != 0 {
                map.vm_insert_page(vma.start(), &self.ctrl.0)?;
            }
        } else {
            self.for_each_page(|n, page| {
                if n < count {
                    map.vm_insert_page(vma.start() + n * PAGE_SIZE, page)?;
                }
                Ok(())
            })?;
        }
        // As remap_vmalloc_range() does.
        vma.set_dontexpand();
        vma.set_dontdump();
        // A producer's channel changes listener: a child must not keep a
        // view of a later listener's rounds or share its control page. And
        // no child inherits a control page: its ack_seq acks rounds.
        if ctrl || self.producer_buffer().is_some() {
            vma.set_dontcopy();
        }
        Ok(())
    }

    /// A ring's fill: writes round `round`'s pattern into the `pages`
    /// pages from page `first` on (the round's slot), byte `i` of the slot
    /// being `channel_pattern_byte(id, round, i)` as [`Self::fill`] writes
    /// a whole buffer.
    ///
    /// Taking the lock guard serialises it with the other fills.
    pub(crate) fn fill_slot(
        &self,
        _locked: &mut Locked<'_>,
        round: u64,
        first: usize,
        pages: usize,
    ) {
        let modulus = self.modulus;
        let start = (self.shift + (round % modulus as u64) as usize) % modulus;
        for n in 0..pages {
            let Some(src) = self.pattern.get((n * PAGE_SIZE + start) % modulus..) else {
                return;
            };
            let _ = self.with_page(first + n, |page| {
                // SAFETY: As in `fill()`: `src` holds at least `PAGE_SIZE`
                // bytes (`pattern` is a page and a period long and `src`
                // starts within the period); the kernel's writes to the
                // pages are serialised by the lock guard; user space may
                // read the page through its mapping meanwhile (shared
                // memory's byte-wise race, no Rust reference to it exists).
                unsafe { page.write_raw(src.as_ptr(), 0, PAGE_SIZE) }
            });
        }
    }

    /// `K2U_IOC_READ_BUFFER`'s step under the mutex: copies the buffer's
    /// bytes from `offset` on into `dst` (kernel memory; as many as fit,
    /// up to the buffer's end). Returns the bytes copied.
    ///
    /// Taking the lock guard keeps [`Self::fill`] (a back-to-back round
    /// may start in an ack's work item) from writing the pages meanwhile.
    pub(crate) fn copy_out(&self, _locked: &Locked<'_>, offset: usize, dst: &mut [u8]) -> usize {
        let mut done = 0;
        while done < dst.len() {
            let at = offset + done;
            let in_page = at % PAGE_SIZE;
            let n = (dst.len() - done).min(PAGE_SIZE - in_page);
            let Some(()) = self.with_page(at / PAGE_SIZE, |page| {
                sys::copy_from_page(page, in_page, &mut dst[done..done + n]);
            }) else {
                break;
            };
            done += n;
        }
        done
    }
}

/// The control page (`struct k2u_ctrl`), shared with the listener.
pub(crate) struct CtrlPage(Page);

/// The control page's fields, for the length of one [`CtrlPage::with`] call.
struct CtrlFields<'a> {
    ready_seq: &'a Atomic<u64>,
    ready_len: &'a Atomic<u64>,
    listener_state: &'a Atomic<u32>,
    doorbells_skipped: &'a Atomic<u64>,
    ack_seq: &'a Atomic<u64>,
    kernel_state: &'a Atomic<u32>,
    wake_seq: &'a Atomic<u64>,
    ring_slots: &'a Atomic<u32>,
    ring_full: &'a Atomic<u64>,
    /// `slots[0]`'s round; entry `i`'s `round` and `len` are `2 * i` and
    /// `2 * i + 1` `u64`s on.
    slots: *mut u64,
}

// `Ctrl` fits in the page, its ring table included.
const _: () = assert!(size_of::<Ctrl>() <= PAGE_SIZE);
const _: () = assert!(size_of::<abi::RingSlot>() == 2 * size_of::<u64>());

impl CtrlPage {
    /// Calls `f` with the fields, as atomics (the listener accesses them
    /// atomically too, from its mapping).
    fn with<R>(&self, f: impl FnOnce(&CtrlFields<'_>) -> R) -> R {
        sys::with_page_mapped(&self.0, |addr| {
            let ctrl = addr.cast::<Ctrl>();
            // SAFETY: `addr` maps the whole page for this call, and a
            // `Ctrl` (8-aligned, smaller than a page: asserted above) fits
            // at its start, so the field pointers are valid and aligned.
            // The kernel accesses them only here, atomically; the listener
            // uses atomic accesses as well.
            let fields = unsafe {
                CtrlFields {
                    ready_seq: Atomic::from_ptr(&raw mut (*ctrl).ready_seq),
                    ready_len: Atomic::from_ptr(&raw mut (*ctrl).ready_len),
                    listener_state: Atomic::from_ptr(&raw mut (*ctrl).listener_state),
                    doorbells_skipped: Atomic::from_ptr(&raw mut (*ctrl).doorbells_skipped),
                    ack_seq: Atomic::from_ptr(&raw mut (*ctrl).ack_seq),
                    kernel_state: Atomic::from_ptr(&raw mut (*ctrl).kernel_state),
                    wake_seq: Atomic::from_ptr(&raw mut (*ctrl).wake_seq),
                    ring_slots: Atomic::from_ptr(&raw mut (*ctrl).ring_slots),
                    ring_full: Atomic::from_ptr(&raw mut (*ctrl).ring_full),
                    slots: (&raw mut (*ctrl).slots).cast::<u64>(),
                }
            };
            f(&fields)
        })
    }

    /// Publishes round `id` of `len` bytes: stores `ready_len`, then `id`
    /// in `ready_seq` (release: the filled buffer and the length are
    /// visible first).
    pub(crate) fn store_ready_seq(&self, id: u64, len: u64) {
        self.with(|c| {
            c.ready_len.store(len, Relaxed);
            c.ready_seq.store(id, Release);
        });
    }

    /// After [`Self::store_ready_seq`]: a full barrier (pairs with the
    /// listener's between storing ASLEEP and re-reading `ready_seq`), then
    /// whether the listener says it spins.
    pub(crate) fn listener_spinning(&self) -> bool {
        smp_mb(Full);
        self.with(|c| c.listener_state.load(Relaxed) == abi::LISTENER_SPINNING)
    }

    /// One more round whose doorbell was skipped.
    pub(crate) fn count_skipped_doorbell(&self) {
        self.with(|c| c.doorbells_skipped.add(1u64, Relaxed));
    }

    /// The listener's `ack_seq` (acquire: what it did before the store,
    /// its reads of the buffer, happened before).
    pub(crate) fn ack_seq(&self) -> u64 {
        self.with(|c| c.ack_seq.load(Acquire))
    }

    /// An attach: `ack_seq = ready`, `wake_seq = 0`, the module asleep.
    pub(crate) fn attach(&self, ready: u64) {
        self.with(|c| {
            c.ack_seq.store(ready, Relaxed);
            c.wake_seq.store(0, Relaxed);
            c.kernel_state.store(abi::KERNEL_ASLEEP, Release);
        });
    }

    /// The module polls `ack_seq` (or works, a ring's producer): the
    /// listener need not write efd2.
    pub(crate) fn set_polling(&self) {
        self.with(|c| c.kernel_state.store(abi::KERNEL_POLLING, Relaxed));
        // The listener's next ack is free to skip efd2 from now on; one
        // that already looked writes it anyway (harmless).
    }

    /// The module goes to sleep on efd2 until `ack_seq` reaches `wake`:
    /// stores `wake_seq`, then ASLEEP, a full barrier (pairs with the
    /// listener's between its `ack_seq` store and its read of
    /// `kernel_state`), and returns `ack_seq` read again: if it moved, the
    /// caller takes it (the listener may have seen POLLING and not written
    /// efd2).
    pub(crate) fn sleep(&self, wake: u64) -> u64 {
        self.with(|c| {
            c.wake_seq.store(wake, Relaxed);
            c.kernel_state.store(abi::KERNEL_ASLEEP, Release);
            smp_mb(Full);
            c.ack_seq.load(Acquire)
        })
    }

    /// Whether the page shows the module polling.
    pub(crate) fn polling(&self) -> bool {
        self.with(|c| c.kernel_state.load(Relaxed) != abi::KERNEL_ASLEEP)
    }

    /// `Ctrl::ring_slots`, set at creation.
    pub(crate) fn set_ring_slots(&self, slots: u32) {
        self.with(|c| c.ring_slots.store(slots, Relaxed));
    }

    /// A ring's producer found it full once more.
    pub(crate) fn count_ring_full(&self) {
        self.with(|c| c.ring_full.add(1u64, Relaxed));
    }

    /// Describes ring slot `slot`: it holds round `round`, `len` bytes.
    /// Stored before the round's `ready_seq` (release), which orders them.
    pub(crate) fn store_slot(&self, slot: usize, round: u64, len: u64) {
        if slot >= abi::RING_MAX_SLOTS as usize {
            return;
        }
        self.with(|c| {
            // SAFETY: `slot` is below the table's length (checked above),
            // so both `u64`s of entry `slot` are inside the mapped page's
            // `Ctrl` and 8-aligned; accessed atomically as above.
            let (r, l) = unsafe {
                (
                    Atomic::from_ptr(c.slots.add(2 * slot)),
                    Atomic::from_ptr(c.slots.add(2 * slot + 1)),
                )
            };
            r.store(round, Relaxed);
            l.store(len, Relaxed);
        });
    }
}
