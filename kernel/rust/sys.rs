// SPDX-License-Identifier: GPL-2.0-only

//! Small safe wrappers of C APIs that have no Rust abstraction in Linux 7.3,
//! each with the reason it is sound. The driver logic above them is safe
//! Rust.

use core::{alloc::Layout, ptr::NonNull};

use kernel::{
    alloc::{allocator::Vmalloc, Allocator, Flags, NumaNode},
    bindings,
    fmt::{self, Write},
    fs::{file, Kiocb, LocalFile},
    mm::virt::VmaNew,
    page::{BorrowedPage, Page, PAGE_SIZE},
    prelude::*,
    str::Formatter,
    sync::aref::ARef,
    task::Task,
    types::ForeignOwnable,
    workqueue::Queue,
};

/// A workqueue of our own (`alloc_workqueue()` / `destroy_workqueue()`).
///
/// 7.3 deprecates the system workqueues, and draining our own at unload is
/// what guarantees no work item runs module code afterwards.
///
/// # Invariants
///
/// `self.0` is a workqueue allocated by `alloc_workqueue()`, destroyed only
/// in `drop()`.
pub(crate) struct OwnedQueue(NonNull<bindings::workqueue_struct>);

// SAFETY: Workqueues may be used and destroyed from any thread.
unsafe impl Send for OwnedQueue {}
// SAFETY: All workqueue operations used through `&OwnedQueue` are thread-safe.
unsafe impl Sync for OwnedQueue {}

impl OwnedQueue {
    /// A per-CPU, high-priority workqueue (the C module's `WQ_HIGHPRI`; 7.3
    /// wants `WQ_PERCPU` or `WQ_UNBOUND` spelled out).
    pub(crate) fn new(name: &'static CStr) -> Result<Self> {
        Self::with_flags(
            name,
            bindings::wq_flags_WQ_HIGHPRI | bindings::wq_flags_WQ_PERCPU,
        )
    }

    /// An unbound, high-priority workqueue: its work runs on whichever CPU
    /// the scheduler finds free (the ack poll's, which must not spin on
    /// the CPU of the listener it waits for).
    pub(crate) fn new_unbound(name: &'static CStr) -> Result<Self> {
        Self::with_flags(
            name,
            bindings::wq_flags_WQ_HIGHPRI | bindings::wq_flags_WQ_UNBOUND,
        )
    }

    fn with_flags(name: &'static CStr, flags: bindings::wq_flags) -> Result<Self> {
        // SAFETY: The format is a NUL-terminated "%s" and its one argument a
        // NUL-terminated string, as `alloc_workqueue()` expects.
        let wq = unsafe {
            bindings::alloc_workqueue_noprof(c"%s".as_char_ptr(), flags, 0, name.as_char_ptr())
        };
        // INVARIANT: A non-NULL result is a freshly allocated workqueue.
        NonNull::new(wq).map(Self).ok_or(ENOMEM)
    }

    /// Waits until the queue is empty and no work item runs
    /// (`drain_workqueue()`); items queued meanwhile by the running ones are
    /// run too.
    pub(crate) fn drain(&self) {
        // SAFETY: By the type invariant the workqueue is alive.
        unsafe { bindings::drain_workqueue(self.0.as_ptr()) };
    }
}

impl core::ops::Deref for OwnedQueue {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        // SAFETY: By the type invariant the workqueue stays alive until
        // `drop()`, which needs `&mut self`, so for as long as this borrow.
        unsafe { Queue::from_raw(self.0.as_ptr()) }
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the workqueue is alive, and this is
        // its only destruction. It runs what is still queued first.
        unsafe { bindings::destroy_workqueue(self.0.as_ptr()) };
    }
}

/// A zeroed vmalloc area of whole pages (C's `vmap()`ed buffer of a
/// producer's channel): other modules write it through [`Self::as_ptr`],
/// user space maps its pages. Rust code never makes a reference to its
/// bytes.
///
/// # Invariants
///
/// `ptr` is a [`Vmalloc`] allocation of `layout` (`size` bytes, a non-zero
/// multiple of the page size, page-aligned), freed only in `drop()`.
pub(crate) struct VmallocArea {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: The area is plain memory, not tied to a thread; it may be freed
// on any thread.
unsafe impl Send for VmallocArea {}
// SAFETY: Through `&VmallocArea` only the address and the pages are looked
// up; the bytes are never read or written by Rust code.
unsafe impl Sync for VmallocArea {}

impl VmallocArea {
    /// `size` zeroed bytes, a non-zero multiple of the page size.
    pub(crate) fn new(size: usize, gfp: Flags) -> Result<Self> {
        if size == 0 || size % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let layout = Layout::from_size_align(size, PAGE_SIZE).map_err(|_| EINVAL)?;
        let ptr = Vmalloc::alloc(layout, gfp | __GFP_ZERO, NumaNode::NO_NODE)?;
        // INVARIANT: A fresh allocation of `layout`, zeroed.
        Ok(Self {
            ptr: ptr.cast(),
            layout,
        })
    }

    /// Its kernel address.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.ptr.as_ptr().cast()
    }

    /// Its page `n`, if `n` is inside the area.
    pub(crate) fn page(&self, n: usize) -> Option<BorrowedPage<'_>> {
        if n >= self.layout.size() / PAGE_SIZE {
            return None;
        }
        // SAFETY: `n * PAGE_SIZE` is below the size (checked above), so the
        // pointer stays inside the allocation.
        let at = unsafe { self.ptr.add(n * PAGE_SIZE) };
        // SAFETY: `at` points into a live `Vmalloc` allocation (type
        // invariant), the start of one of its pages, and the allocation
        // outlives the borrow of `self` the page is tied to.
        Some(unsafe { Vmalloc::to_page(at) })
    }
}

impl Drop for VmallocArea {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `ptr` is a `Vmalloc` allocation of
        // `layout`, freed only here, once. No pointer handed out by
        // `as_ptr()` is used after this: the producer's calls each hold a
        // reference on the channel that owns the area.
        unsafe { Vmalloc::free(self.ptr, self.layout) };
    }
}

/// The task of process `nr` in the caller's pid namespace (C:
/// `get_pid_task(find_get_pid(nr), PIDTYPE_PID)`), referenced.
pub(crate) fn task_by_vpid(nr: i32) -> Option<ARef<Task>> {
    // SAFETY: `find_get_pid()` looks `nr` up in the current task's pid
    // namespace under RCU and returns a counted `struct pid` or NULL.
    let pid = NonNull::new(unsafe { bindings::find_get_pid(nr) })?;
    // SAFETY: `pid` is a valid, counted `struct pid`. The result is a
    // counted task or NULL.
    let task = unsafe { bindings::get_pid_task(pid.as_ptr(), bindings::pid_type_PIDTYPE_PID) };
    // SAFETY: We own the reference `find_get_pid()` took; drop it.
    unsafe { bindings::put_pid(pid.as_ptr()) };
    let task = NonNull::new(task)?;
    // SAFETY: `get_pid_task()` took a reference that we hand to the `ARef`;
    // `Task` is a transparent wrapper of `struct task_struct`.
    Some(unsafe { ARef::from_raw(task.cast::<Task>()) })
}

/// A reference on open file `fd` of `task` (any file, as C's `iterate_fd()`
/// lookup), or `None`.
///
/// `fget_task_next()` (exported since 6.11) does the locking: `task_lock()`
/// keeps `task->files` from being released, RCU protects the fd table, and
/// the file is returned with its reference count raised.
pub(crate) fn task_file(task: &Task, fd: u32) -> Option<ARef<LocalFile>> {
    let mut found = fd;
    // SAFETY: `task` is a valid task (the caller holds a reference);
    // `found` is a valid `unsigned int` the call may update.
    let file = NonNull::new(unsafe { bindings::fget_task_next(task.as_ptr(), &mut found) })?;
    // SAFETY: `fget_task_next()` returned a file reference that we hand to
    // the `ARef`; `LocalFile` is a transparent wrapper of `struct file`.
    let file: ARef<LocalFile> = unsafe { ARef::from_raw(file.cast::<LocalFile>()) };
    // It returns the first open fd at or above `fd`: only an exact hit counts.
    (found == fd).then_some(file)
}

/// Holds this module's parameter lock (`kernel_param_lock(THIS_MODULE)`),
/// the lock every sysfs parameter callback runs under.
pub(crate) struct ParamLock(());

impl ParamLock {
    /// Takes the lock; it is released when the value is dropped.
    pub(crate) fn new() -> Self {
        // SAFETY: `THIS_MODULE` is this module, alive while its code runs.
        unsafe { bindings::kernel_param_lock(this_module()) };
        Self(())
    }
}

impl Drop for ParamLock {
    fn drop(&mut self) {
        // SAFETY: `new()` took the lock and this value stands for it.
        unsafe { bindings::kernel_param_unlock(this_module()) };
    }
}

/// `THIS_MODULE`.
pub(crate) const fn this_module() -> *mut bindings::module {
    kernel::module::this_module::<crate::LocalModule>().as_ptr()
}

/// Whether a read was opened or `fcntl()`ed with `O_NONBLOCK`.
pub(crate) fn nonblocking<T: ForeignOwnable>(kiocb: &Kiocb<'_, T>) -> bool {
    // SAFETY: `kiocb` is the live request of the current `read_iter` call,
    // so `ki_filp` is the file being read, referenced for the whole call;
    // `vfs_read()` runs on this thread, so any `fdget_pos()` of the read is
    // this thread's (`LocalFile::from_raw_file()`'s conditions).
    let file = unsafe { LocalFile::from_raw_file((*kiocb.as_raw()).ki_filp) };
    // `flags()` reads `f_flags` once (READ_ONCE): `fcntl()` may change it.
    file.flags() & file::flags::O_NONBLOCK != 0
}

/// A counted reference on a `struct pid`: the listener's thread group.
///
/// # Invariants
///
/// `self.0` is a `struct pid` on which this value owns one reference.
pub(crate) struct PidRef(NonNull<bindings::pid>);

// SAFETY: `struct pid` is reference counted with atomics and freed through
// RCU; the reference may be used and dropped on any thread.
unsafe impl Send for PidRef {}
// SAFETY: Only thread-safe, RCU-protected lookups go through `&PidRef`.
unsafe impl Sync for PidRef {}

impl PidRef {
    /// The thread group (process) `task` belongs to (`get_task_pid(task,
    /// PIDTYPE_TGID)`); `None` if it has already been released.
    pub(crate) fn tgid_of(task: &Task) -> Option<Self> {
        // SAFETY: `task` is a valid task (the caller holds a reference);
        // the call returns a counted `struct pid` or NULL.
        let pid = unsafe { bindings::get_task_pid(task.as_ptr(), bindings::pid_type_PIDTYPE_TGID) };
        // INVARIANT: a non-NULL result carries a reference for us.
        NonNull::new(pid).map(Self)
    }

    /// Whether the process has exited: no task left in the thread group's
    /// pid, or none of its threads still running (`signal->live` is 0; the
    /// main thread alone may have left).
    pub(crate) fn exited(&self) -> bool {
        // SAFETY: By the type invariant `self.0` is a valid `struct pid`;
        // `get_pid_task()` returns a counted task or NULL.
        let task =
            unsafe { bindings::get_pid_task(self.0.as_ptr(), bindings::pid_type_PIDTYPE_TGID) };
        let Some(task) = NonNull::new(task) else {
            return true;
        };
        // SAFETY: `get_pid_task()` took a reference that we hand to the
        // `ARef`; `Task` is a transparent wrapper of `struct task_struct`.
        let task: ARef<Task> = unsafe { ARef::from_raw(task.cast::<Task>()) };
        // SAFETY: The task is alive (we hold a reference), and so is its
        // `signal` (freed with it). `live` is an `atomic_t` the exiting
        // threads decrement: read once, volatile (atomic_read()).
        let live = unsafe { (&raw const (*(*task.as_ptr()).signal).live.counter).read_volatile() };
        live <= 0
    }
}

impl PidRef {
    /// The calling process' thread group.
    pub(crate) fn current() -> Option<Self> {
        Self::tgid_of(current!())
    }

    /// Another reference on the same `struct pid` (`get_pid()`).
    pub(crate) fn clone_ref(&self) -> Self {
        // SAFETY: By the type invariant `self.0` is a valid `struct pid` on
        // which we own a reference, so its count is not zero and may be
        // raised (what `get_pid()` does).
        unsafe { bindings::refcount_inc(&raw mut (*self.0.as_ptr()).count) };
        // INVARIANT: The reference taken above is the new value's.
        Self(self.0)
    }

    /// Whether both are the same thread group.
    pub(crate) fn same(&self, other: &PidRef) -> bool {
        self.0 == other.0
    }

    /// The number the caller's pid namespace gives it (`pid_vnr()`); 0 if
    /// it has none there.
    pub(crate) fn vnr(&self) -> i32 {
        // SAFETY: By the type invariant `self.0` is a valid `struct pid`.
        unsafe { bindings::pid_vnr(self.0.as_ptr()) }
    }
}

/// The current task's euid as the initial user namespace sees it (C's
/// `from_kuid_munged(&init_user_ns, current_euid())`), for the log: the
/// host's dmesg names the host's uid, whatever namespace the caller is in.
/// A `kuid_t` holds exactly that value, so no mapping can fail.
pub(crate) fn current_euid_munged() -> u32 {
    kernel::task::Kuid::current_euid().into_raw().val
}

/// Whether the current task has `CAP_SYS_ADMIN` (`capable()`).
pub(crate) fn capable_sys_admin() -> bool {
    // SAFETY: `capable()` only checks the current task's credentials.
    unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as c_int) }
}

impl Drop for PidRef {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we own one reference; it is given
        // back exactly once, here.
        unsafe { bindings::put_pid(self.0.as_ptr()) };
    }
}

/// Holds `task`'s `exec_update_lock` for reading, as `pidfd_getfd()` does
/// around its access check and the file lookup: no execve meanwhile.
pub(crate) struct ExecUpdateLock<'a>(&'a Task);

impl<'a> ExecUpdateLock<'a> {
    /// Takes the lock; `EINTR` if a fatal signal came first.
    pub(crate) fn new(task: &'a Task) -> Result<Self> {
        // SAFETY: `task` is valid (the caller holds a reference) and so is
        // its `signal` (freed with the task); `down_read_killable()` takes
        // the rw-semaphore or fails without it.
        let ret = unsafe {
            bindings::down_read_killable(&raw mut (*(*task.as_ptr()).signal).exec_update_lock)
        };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(Self(task))
    }
}

impl Drop for ExecUpdateLock<'_> {
    fn drop(&mut self) {
        // SAFETY: `new()` took the semaphore for reading; this releases it,
        // once. The task (and its `signal`) outlive the borrow.
        unsafe { bindings::up_read(&raw mut (*(*self.0.as_ptr()).signal).exec_update_lock) };
    }
}

/// Whether the current task may take file descriptors of `task`: the steps
/// of `__ptrace_may_access(task, PTRACE_MODE_ATTACH_REALCREDS)`, which
/// `pidfd_getfd()` asks and modules cannot call (not exported). The caller
/// holds `task`'s [`ExecUpdateLock`].
///
/// Same thread group: yes. Otherwise the C module asks two steps: the
/// caller's real ids match all of the target's or it has `CAP_SYS_PTRACE`
/// in the target's user namespace; then a target that is not dumpable
/// needs `CAP_SYS_PTRACE` over its `exec_state`'s namespace. 7.3 keeps the
/// dumpable flag in `exec_state`, which Rust cannot see (not in the
/// bindings, no exported accessor), so here every target counts as not
/// dumpable, in the initial namespace: `CAP_SYS_PTRACE` there, which also
/// passes the first step. Stricter than C only for a caller with the
/// target's ids but without `CAP_SYS_PTRACE` (refused here). The LSM hook
/// is not exported either and is not asked.
pub(crate) fn may_take_files(task: &Task) -> bool {
    if task.tgid() == current!().tgid() {
        return true;
    }
    // SAFETY: `capable()` only checks the current task's credentials.
    unsafe { bindings::capable(bindings::CAP_SYS_PTRACE as c_int) }
}

/// The mmap offset in pages (`vma->vm_pgoff`).
pub(crate) fn vma_pgoff(vma: &VmaNew) -> usize {
    // SAFETY: `vma` is being set up by our `mmap` hook (type invariant of
    // `VmaNew`), so the pointer is valid and `vm_pgoff` is not changing.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}

/// Calls `f` with the page's kernel address (`kmap_local_page()`), valid
/// only during the call.
pub(crate) fn with_page_mapped<R>(page: &Page, f: impl FnOnce(*mut u8) -> R) -> R {
    // SAFETY: `page` is a valid, owned page; the mapping is dropped below,
    // in reverse order of any nested mapping, on this CPU.
    let addr = unsafe { bindings::kmap_local_page(page.as_ptr()) };
    let ret = f(addr.cast::<u8>());
    // SAFETY: `addr` is the mapping made above and not used after this.
    unsafe { bindings::kunmap_local(addr) };
    ret
}

/// Copies `dst.len()` bytes of `page` from byte `offset` on into `dst`;
/// `offset + dst.len()` must not pass the page's end (checked: the copy is
/// cut there).
pub(crate) fn copy_from_page(page: &Page, offset: usize, dst: &mut [u8]) {
    let offset = offset.min(PAGE_SIZE);
    let len = dst.len().min(PAGE_SIZE - offset);
    with_page_mapped(page, |from| {
        // SAFETY: `from` maps the whole page, so `from + offset` is readable
        // for `len` bytes (`offset + len <= PAGE_SIZE`); `dst` is valid and
        // exclusively borrowed for `len <= dst.len()` bytes and cannot
        // overlap a page of the buffer. User space may be writing the page
        // through its mapping meanwhile: as in C, `memcpy()` takes a
        // byte-wise snapshot and no Rust reference to those bytes is made.
        unsafe {
            bindings::memcpy(
                dst.as_mut_ptr().cast::<c_void>(),
                from.add(offset).cast::<c_void>(),
                len,
            )
        };
    });
}

/// A pointer as C's `%p` prints it: hashed, 16 hex digits, no `0x` (the
/// kernel's `fmt!` routes `{:p}` through `%p` but adds the `0x`).
pub(crate) struct PtrText {
    buf: [u8; 32],
    len: usize,
}

/// The hashed form of `ptr`, for the `Resolved pointer ...` log lines.
pub(crate) fn hashed<T>(ptr: *const T) -> PtrText {
    let mut buf = [0u8; 32];
    let mut f = Formatter::new(&mut buf);
    let _ = f.write_fmt(fmt!("{:p}", ptr));
    let len = f.bytes_written().min(buf.len());
    let skip = if buf.starts_with(b"0x") { 2 } else { 0 };
    let mut out = PtrText {
        buf: [0; 32],
        len: len - skip,
    };
    out.buf[..len - skip].copy_from_slice(&buf[skip..len]);
    out
}

impl fmt::Display for PtrText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?"))
    }
}

/// `N` bytes of `s` as an array, for `.modinfo` entries.
pub(crate) const fn byte_array<const N: usize>(s: &str) -> [u8; N] {
    let bytes = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// String equality usable in `const` assertions.
pub(crate) const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
