// SPDX-License-Identifier: GPL-2.0-only

//! The listener's eventfds, seen from the kernel.
//!
//! Linux 7.3 has no Rust abstraction for eventfd, so this file wraps the
//! exported C functions (`eventfd_ctx_fileget`, `eventfd_ctx_put`,
//! `eventfd_signal_mask`, `eventfd_ctx_do_read`,
//! `eventfd_ctx_remove_wait_queue`, and the wait-queue `add_wait_queue` and
//! `remove_wait_queue`, all in `kernel::bindings`) in two safe types:
//!
//! * [`EventFd`], a counted reference on an eventfd context;
//! * [`Hook`], a wait-queue entry hooked on an eventfd like KVM's irqfd: its
//!   [`WakeHandler`] runs in the eventfd's wake-up path, under the eventfd's
//!   wait-queue spinlock (interrupts off), so the module reacts to the
//!   listener without a parked thread.

use core::ptr::NonNull;

use kernel::{
    bindings,
    error::from_err_ptr,
    fs::LocalFile,
    prelude::*,
    sync::atomic::{Acquire, Atomic, Release},
    types::Opaque,
};

/// `EPOLLIN` (uapi `eventpoll.h`; bindgen cannot see the `__force` casts).
pub(crate) const EPOLLIN: u32 = 0x0001;
/// `EPOLLHUP`: the eventfd's last file reference was dropped.
pub(crate) const EPOLLHUP: u32 = 0x0010;

/// A counted reference on an eventfd context (`struct eventfd_ctx`).
///
/// # Invariants
///
/// `self.0` points to an eventfd context on which this value owns one
/// reference.
pub(crate) struct EventFd(NonNull<bindings::eventfd_ctx>);

// SAFETY: An eventfd context is reference counted and every operation on it
// takes its own wait-queue lock, so the reference may be used and dropped on
// any thread.
unsafe impl Send for EventFd {}
// SAFETY: See `Send`: all operations through `&EventFd` lock internally.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// Adds 1 to the counter and wakes the readers (`eventfd_signal()`,
    /// which since 6.8 is `eventfd_signal_mask(ctx, 0)`).
    pub(crate) fn signal(&self) {
        // SAFETY: By the type invariant the context is alive. The module
        // never signals from inside an eventfd wake-up (where the kernel
        // would warn about recursion): callers run in process context.
        unsafe { bindings::eventfd_signal_mask(self.0.as_ptr(), 0) };
    }

    /// The context's address, for the hashed `%p` log lines.
    pub(crate) fn as_ptr(&self) -> *const bindings::eventfd_ctx {
        self.0.as_ptr()
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we own one reference; it is given
        // back exactly once, here.
        unsafe { bindings::eventfd_ctx_put(self.0.as_ptr()) };
    }
}

/// An open eventfd: a file and a reference on the context behind it.
///
/// Keeping the two together is what lets [`Hook::install`] be safe: the wait
/// queue it hooks (found through the file's `poll`) is the one of the context
/// it later unhooks from.
pub(crate) struct EventFdFile<'a> {
    file: &'a LocalFile,
    ctx: EventFd,
}

impl<'a> EventFdFile<'a> {
    /// The eventfd behind `file`; `EINVAL` if `file` is no eventfd.
    pub(crate) fn new(file: &'a LocalFile) -> Result<Self> {
        // SAFETY: `file` is a valid file for the duration of the call (the
        // caller holds a reference). `eventfd_ctx_fileget()` only compares
        // its `f_op` and takes a context reference.
        let ctx = from_err_ptr(unsafe { bindings::eventfd_ctx_fileget(file.as_ptr()) })?;
        let ctx = NonNull::new(ctx).ok_or(EINVAL)?;
        // INVARIANT: `eventfd_ctx_fileget()` succeeded, so we own a reference.
        Ok(Self {
            file,
            ctx: EventFd(ctx),
        })
    }

    /// Whether both are the same eventfd context (two fds of one eventfd).
    pub(crate) fn same_eventfd(&self, other: &EventFdFile<'_>) -> bool {
        self.ctx.0 == other.ctx.0
    }

    /// Whether this is the eventfd context `other` refers to.
    pub(crate) fn is(&self, other: &EventFd) -> bool {
        self.ctx.0 == other.0
    }
}

/// What unhooking a [`Hook`] does to the eventfd's counter.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unhook {
    /// Leave it alone (`remove_wait_queue()`): a code signalled there stays
    /// readable by the listener.
    KeepCount,
    /// Read and reset it (`eventfd_ctx_remove_wait_queue()`), as KVM's
    /// irqfd does: for efd2, where only acks the module no longer wants sit.
    DrainCount,
}

/// Gives a [`WakeHandler`] access to the eventfd whose wait-queue lock the
/// wake-up path holds.
pub(crate) struct LockedEventFd<'a>(&'a EventFd);

impl LockedEventFd<'_> {
    /// Reads and resets the counter, as a read() of the eventfd would
    /// (`eventfd_ctx_do_read()`).
    pub(crate) fn take_count(&self) -> u64 {
        let mut count = 0;
        // SAFETY: A `LockedEventFd` only exists inside `Hook::wake_cb()`,
        // which the eventfd's wake-up path calls with the context's wait-queue
        // lock held, as `eventfd_ctx_do_read()` requires. The context is alive
        // (the hook owns a reference).
        unsafe { bindings::eventfd_ctx_do_read(self.0 .0.as_ptr(), &mut count) };
        count
    }
}

/// What a [`Hook`] does when its eventfd wakes its waiters.
pub(crate) trait WakeHandler: Send + Sync {
    /// Called with the eventfd's wait-queue lock held and interrupts off:
    /// must not sleep or take the module's mutex. `events` is the poll mask
    /// of the wake-up (`EPOLLIN` on a write, `EPOLLHUP` on the last close).
    fn wake(&self, efd: &LockedEventFd<'_>, events: u32);
}

/// A wait-queue entry hooked on an eventfd, calling `T` on each wake-up.
///
/// Dropping it unhooks the entry (as its [`Unhook`] says; both ways take the
/// wait-queue lock, so once that returns the callback is neither running nor
/// called again), then drops the context reference and the handler.
#[pin_data(PinnedDrop)]
pub(crate) struct Hook<T: WakeHandler> {
    #[pin]
    wait: Opaque<bindings::wait_queue_entry>,
    #[pin]
    table: Opaque<bindings::poll_table_struct>,
    /// The wait queue `queue_cb()` added `wait` to; null until then.
    wqh: Atomic<*mut bindings::wait_queue_head>,
    unhook: Unhook,
    efd: EventFd,
    handler: T,
}

// SAFETY: The C structures in `wait` and `table` are only touched by the
// kernel's wait-queue code under the wait-queue lock, by `queue_cb()` during
// `install()`, and by `drop()`; the other fields are `Send`.
unsafe impl<T: WakeHandler> Send for Hook<T> {}
// SAFETY: Through `&Hook`, the wake-up callback (on any CPU) only reads `efd`
// and calls `handler`, both `Sync`; `wqh` is atomic and `unhook` never
// changes.
unsafe impl<T: WakeHandler> Sync for Hook<T> {}

impl<T: WakeHandler> Hook<T> {
    /// Hooks `handler` on `efd`'s wait queue, the way `vfs_poll()` with a
    /// custom `poll_table` does (KVM's irqfd does the same).
    pub(crate) fn install(
        efd: EventFdFile<'_>,
        handler: T,
        unhook: Unhook,
    ) -> Result<Pin<KBox<Self>>> {
        let EventFdFile { file, ctx } = efd;
        let hook = KBox::pin_init(
            pin_init!(Self {
                // init_waitqueue_func_entry(): no task, our callback.
                wait: Opaque::new(bindings::wait_queue_entry {
                    flags: 0,
                    private: core::ptr::null_mut(),
                    func: Some(Self::wake_cb),
                    entry: bindings::list_head {
                        next: core::ptr::null_mut(),
                        prev: core::ptr::null_mut(),
                    },
                }),
                // init_poll_funcptr(): our queueing function, all events.
                table: Opaque::new(bindings::poll_table_struct {
                    _qproc: Some(Self::queue_cb),
                    _key: !0,
                }),
                wqh: Atomic::new(core::ptr::null_mut()),
                unhook,
                efd: ctx,
                handler,
            }),
            GFP_KERNEL,
        )?;
        let filp = file.as_ptr();
        // SAFETY: `filp` is a valid, open file (the caller holds a
        // reference), so `f_op` points to its file operations; it is an
        // eventfd (`EventFdFile::new()` checked `f_op`), whose `poll` calls
        // `poll_wait()` on the context's wait queue. `table` is pinned and
        // initialised; `queue_cb()` is only called during this call.
        unsafe {
            if let Some(poll) = (*(*filp).f_op).poll {
                poll(filp, hook.table.get());
            }
        }
        if hook.wqh.load(Acquire).is_null() {
            return Err(EINVAL);
        }
        Ok(hook)
    }

    /// The eventfd context, for the log.
    pub(crate) fn eventfd(&self) -> &EventFd {
        &self.efd
    }

    /// `poll_table` queueing function: hook `wait` on the eventfd's queue.
    ///
    /// # Safety
    ///
    /// `table` is the `table` of a live hook (only `install()` passes it to
    /// `->poll`), and `wqh` a wait queue that outlives the hook's context
    /// reference.
    unsafe extern "C" fn queue_cb(
        _file: *mut bindings::file,
        wqh: *mut bindings::wait_queue_head,
        table: *mut bindings::poll_table_struct,
    ) {
        let table = table.cast::<Opaque<bindings::poll_table_struct>>();
        // SAFETY: Only `install()` hands this table to `->poll`, and the
        // hook it is embedded in is alive (pinned in its box) for that call.
        let hook = unsafe { &*kernel::container_of!(table, Self, table) };
        if !hook.wqh.load(Acquire).is_null() {
            return; // One wait queue is enough (an eventfd has one).
        }
        // SAFETY: `wqh` is the wait queue `->poll` passes to `poll_wait()`,
        // valid while the context lives (the hook owns a reference).
        // `hook.wait` is initialised, pinned, and on no queue yet.
        unsafe { bindings::add_wait_queue(wqh, hook.wait.get()) };
        hook.wqh.store(wqh, Release);
    }

    /// Wake-up function of `wait`, called under the wait-queue lock.
    ///
    /// # Safety
    ///
    /// `wait` is the `wait` of a live hook, on its eventfd's wait queue, and
    /// the caller holds that queue's lock (the kernel's `__wake_up_common()`
    /// contract for a queued entry).
    unsafe extern "C" fn wake_cb(
        wait: *mut bindings::wait_queue_entry,
        _mode: c_uint,
        _flags: c_int,
        key: *mut c_void,
    ) -> c_int {
        let wait = wait.cast::<Opaque<bindings::wait_queue_entry>>();
        // SAFETY: Only `queue_cb()` puts this function on a wait queue, with
        // the entry embedded in a hook; `drop()` takes the entry off the
        // queue (under the lock the caller holds now) before the hook is
        // freed, so the hook is alive.
        let hook = unsafe { &*kernel::container_of!(wait, Self, wait) };
        // key_to_poll(): the wake-up's poll mask travels in the pointer.
        let events = key.addr() as u32;
        hook.handler.wake(&LockedEventFd(&hook.efd), events);
        0
    }
}

#[pinned_drop]
impl<T: WakeHandler> PinnedDrop for Hook<T> {
    fn drop(self: Pin<&mut Self>) {
        let wqh = self.wqh.load(Acquire);
        if wqh.is_null() {
            return;
        }
        match self.unhook {
            // SAFETY: `queue_cb()` added `wait` to `wqh`, the wait queue of
            // `efd`'s context, which is alive: we still own a reference.
            // `remove_wait_queue()` takes that queue's lock, so afterwards
            // `wake_cb()` is neither running nor called again. The counter
            // is not touched.
            Unhook::KeepCount => unsafe { bindings::remove_wait_queue(wqh, self.wait.get()) },
            Unhook::DrainCount => {
                let mut discarded = 0;
                // SAFETY: As above; `eventfd_ctx_remove_wait_queue()` also
                // removes `wait` from the context's queue (the one `wqh`
                // is) under its lock, after resetting the counter.
                unsafe {
                    bindings::eventfd_ctx_remove_wait_queue(
                        self.efd.0.as_ptr(),
                        self.wait.get(),
                        &mut discarded,
                    )
                };
            }
        }
    }
}
