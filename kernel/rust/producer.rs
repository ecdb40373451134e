// SPDX-License-Identifier: GPL-2.0-only

//! The producer API (`kernel/c/include/kern2usr_producer.h`): another
//! module creates a named channel and publishes its own data through it; a
//! listener attaches from userspace with `K2U_IOC_CREATE` and
//! `K2U_CREATE_ATTACH`. The six functions are `#[no_mangle] extern "C"`
//! with the header's prototypes; `exports.c` exports them
//! (`EXPORT_SYMBOL_GPL`).
//!
//! A producer's channel is a [`Channel`] like any other, in the registry
//! (listed with pacing `producer`), but counted apart: at most
//! [`abi::MAX_PRODUCERS`] at once, and not against `max_channels` nor
//! `max_channel_memory`. Who may attach is the producer's rule
//! ([`AttachRule`], `struct k2u_producer_opts`). Its references: the
//! producer's handle ([`K2uChannel`], from create to destroy), the
//! registry's, each attached file's (the listener's from attach to its
//! release, and one an exited listener left behind in a child until that
//! one's release) and, as for any channel, the hooks' and the work items'.
//! The last of the producer and those files to let go ends it (stops it
//! and takes it out of the registry); `ProducerSide::destroyed` and
//! `ProducerSide::files`, changed under the registry lock, say which.
//! While the producer holds a channel it also holds a reference on this
//! module, so `rmmod kern2usr` fails meanwhile.
//!
//! The handle is only valid from create to destroy, as the header says (no
//! call may start once destroy has). A call in process context takes its
//! own reference on the channel for its length, so a destroy or a
//! listener's release that runs meanwhile never frees the channel under
//! it (C's `k2u_producer_wait_ack()` takes a kref for the same reason).

use kernel::ffi::{c_char, c_int, c_ulong, c_void};

use kernel::{
    bindings, fmt,
    page::PAGE_SIZE,
    prelude::*,
    str::BStr,
    sync::{atomic::Relaxed, Arc, CondVarTimeoutResult},
    task::{Kuid, MAX_SCHEDULE_TIMEOUT},
    time::Jiffies,
};

use crate::abi::{self, Code};
use crate::channel::{self, refuse};
use crate::eventfd::EventFdFile;
use crate::state::{self, Channel, Config, Device, FileToken, Locked, Registry};
use crate::sys::{self, PidRef};

/// `K2U_ATTACH_UID`: the attaching process' euid is `opts.uid`.
const ATTACH_UID: u32 = 0x1;
/// `K2U_ATTACH_GID`: `opts.gid` is its egid or a supplementary group.
const ATTACH_GID: u32 = 0x2;
/// `K2U_ATTACH_ANYONE`: anyone who can open the device.
const ATTACH_ANYONE: u32 = 0x4;
/// `K2U_ATTACH_FLAGS`.
const ATTACH_FLAGS: u32 = ATTACH_UID | ATTACH_GID | ATTACH_ANYONE;

/// The header's `struct k2u_producer_opts` (exports.c asserts the same
/// layout on the C side: 12 bytes, `attach` at 0, `uid` at 4, `gid` at 8).
#[repr(C)]
pub(crate) struct K2uProducerOpts {
    attach: u32,
    uid: bindings::kuid_t,
    gid: bindings::kgid_t,
}

const _: () = {
    assert!(size_of::<K2uProducerOpts>() == 12);
    assert!(core::mem::offset_of!(K2uProducerOpts, attach) == 0);
    assert!(core::mem::offset_of!(K2uProducerOpts, uid) == 4);
    assert!(core::mem::offset_of!(K2uProducerOpts, gid) == 8);
};

/// `(uid_t)-1` / `(gid_t)-1`: the invalid ids (C's `uid_valid()`).
const INVALID_ID: u32 = u32::MAX;

/// Who may attach a listener to a producer's channel besides a process
/// with `CAP_SYS_ADMIN` (always allowed): checked `struct
/// k2u_producer_opts`, fixed at create.
#[derive(Clone, Copy)]
pub(crate) struct AttachRule {
    bits: u32,
    uid: bindings::kuid_t,
    gid: bindings::kgid_t,
}

impl AttachRule {
    /// The default (opts NULL): `CAP_SYS_ADMIN` only.
    pub(crate) const ADMIN: Self = Self {
        bits: 0,
        uid: bindings::kuid_t { val: INVALID_ID },
        gid: bindings::kgid_t { val: INVALID_ID },
    };

    /// Checks the producer's options as C's `k2u_check_opts()`: EINVAL
    /// (one line) for an unknown bit or an invalid id a bit needs.
    fn from_opts(opts: &K2uProducerOpts) -> Result<Self> {
        let unknown = opts.attach & !ATTACH_FLAGS;
        if unknown != 0 {
            return Err(refuse_producer(
                EINVAL,
                fmt!("attach {:#x}: unknown bit {:#x}", opts.attach, unknown),
            ));
        }
        if opts.attach & ATTACH_UID != 0 && opts.uid.val == INVALID_ID {
            return Err(refuse_producer(
                EINVAL,
                fmt!("K2U_ATTACH_UID with an invalid uid"),
            ));
        }
        if opts.attach & ATTACH_GID != 0 && opts.gid.val == INVALID_ID {
            return Err(refuse_producer(
                EINVAL,
                fmt!("K2U_ATTACH_GID with an invalid gid"),
            ));
        }
        Ok(Self {
            bits: opts.attach,
            uid: opts.uid,
            gid: opts.gid,
        })
    }

    /// Whether the current process may attach under this rule.
    fn allows_current(&self) -> bool {
        if self.bits & ATTACH_ANYONE != 0 {
            return true;
        }
        if self.bits & ATTACH_UID != 0 && Kuid::current_euid() == Kuid::from_raw(self.uid) {
            return true;
        }
        // SAFETY: `in_egroup_p()` only reads the current task's
        // credentials; `gid` is a plain value.
        if self.bits & ATTACH_GID != 0 && unsafe { bindings::in_egroup_p(self.gid) } != 0 {
            return true;
        }
        sys::capable_sys_admin()
    }
}

/// The header's `struct k2u_channel`, opaque to the producer: what it holds
/// from `k2u_producer_create()` to `k2u_producer_destroy()`.
pub(crate) struct K2uChannel {
    dev: Arc<Device>,
    chan: Arc<Channel>,
}

// The prototypes of kern2usr_producer.h; exports.c includes the header, so
// a renamed function fails there, and these keep the Rust side's types.
const _: unsafe extern "C" fn(*const c_char, usize) -> *mut K2uChannel = k2u_producer_create;
const _: unsafe extern "C" fn(*const c_char, usize, *const K2uProducerOpts) -> *mut K2uChannel =
    k2u_producer_create_opts;
const _: unsafe extern "C" fn(*mut K2uChannel) = k2u_producer_destroy;
const _: unsafe extern "C" fn(*mut K2uChannel, *mut usize) -> *mut c_void = k2u_producer_reserve;
const _: unsafe extern "C" fn(*mut K2uChannel, usize) -> i64 = k2u_producer_publish;
const _: unsafe extern "C" fn(*mut K2uChannel, u64, c_ulong) -> c_int = k2u_producer_wait_ack;

/// Refuses a producer's call with `err`: `producer refused: <why>`.
fn refuse_producer(err: Error, why: fmt::Arguments<'_>) -> Error {
    pr_notice!("producer refused: {}\n", why);
    err
}

/// The producer channel named `name` (NUL-padded) that its producer has
/// not destroyed, if any (C's `k2u_producer_find()`: C unlists a channel
/// at destroy, here it stays in the registry, unlisted, until its end).
fn find<'a>(reg: &'a Registry, name: &[u8; abi::CHANNEL_NAME_LEN]) -> Option<&'a Arc<Channel>> {
    reg.channels
        .iter()
        .find(|c| c.is_producer() && c.listed() && c.cfg.raw_name() == name)
}

/// `k2u_producer_create()`: [`k2u_producer_create_opts`] with the
/// defaults (only `CAP_SYS_ADMIN` attaches).
///
/// # Safety
///
/// `name` is NULL or points to a NUL-terminated string, readable for the
/// call.
#[no_mangle]
unsafe extern "C" fn k2u_producer_create(name: *const c_char, size: usize) -> *mut K2uChannel {
    // SAFETY: The caller's contract; no options.
    unsafe { k2u_producer_create_opts(name, size, core::ptr::null()) }
}

/// `k2u_producer_create_opts()`.
///
/// # Safety
///
/// `name` is NULL or points to a NUL-terminated string, readable for the
/// call; `opts` is NULL or points to a `struct k2u_producer_opts`, readable
/// for the call.
#[no_mangle]
unsafe extern "C" fn k2u_producer_create_opts(
    name: *const c_char,
    size: usize,
    opts: *const K2uProducerOpts,
) -> *mut K2uChannel {
    // Like C's strscpy() into the 16-byte name: at most 16 bytes are read,
    // and a string of 16 or more (no NUL among them) is refused.
    let mut padded = [0u8; abi::CHANNEL_NAME_LEN];
    let mut len = None;
    if !name.is_null() {
        for (i, slot) in padded.iter_mut().enumerate() {
            // SAFETY: The caller passes a NUL-terminated string (the
            // header's contract); the loop stops at its NUL, so byte `i`
            // is part of it.
            let b: u8 = unsafe { name.add(i).read() };
            if b == 0 {
                len = Some(i);
                break;
            }
            *slot = b;
        }
    }
    // SAFETY: The caller's contract: NULL or a readable options struct,
    // which is only read, for this call.
    let opts = unsafe { opts.as_ref() };
    match create(padded, len, size, opts) {
        Ok(handle) => KBox::into_raw(handle),
        Err(e) => e.to_ptr(),
    }
}

/// Creates the channel: `name` NUL-padded, `len` its length if it ends
/// within the 16 bytes; `opts` `None` for the defaults. The checks in C's
/// order: name, size, options, then (under the registry lock) the name
/// taken, the producers' cap, the memory.
fn create(
    name: [u8; abi::CHANNEL_NAME_LEN],
    len: Option<usize>,
    size: usize,
    opts: Option<&K2uProducerOpts>,
) -> Result<KBox<K2uChannel>> {
    if !matches!(len, Some(1..)) {
        return Err(refuse_producer(
            EINVAL,
            fmt!("name: 1 to {} bytes", abi::CHANNEL_NAME_LEN - 1),
        ));
    }
    channel::check_name(&name)?;
    if size == 0 || size as u64 > abi::MAX_BUFFER_SIZE || size % PAGE_SIZE != 0 {
        return Err(refuse_producer(
            EINVAL,
            fmt!(
                "size {}: must be a multiple of {} from {} to {}",
                size,
                PAGE_SIZE,
                PAGE_SIZE,
                abi::MAX_BUFFER_SIZE
            ),
        ));
    }
    let rule = match opts {
        Some(opts) => AttachRule::from_opts(opts)?,
        None => AttachRule::ADMIN,
    };
    // Loaded and initialised: the producer links against this module,
    // which the kernel only allows once its init has returned.
    let dev = state::device().ok_or(ENODEV)?;
    let mut reg = dev.registry.lock();
    if find(&reg, &name).is_some() {
        return Err(refuse_producer(
            EEXIST,
            fmt!("name {}: taken", BStr::from_bytes(name_bytes(&name))),
        ));
    }
    // Userspace's channels do not count: they cannot take this place.
    if reg.producers >= abi::MAX_PRODUCERS {
        return Err(refuse_producer(
            ENOSPC,
            fmt!("{} producer channels exist (the most)", reg.producers),
        ));
    }
    let id = reg.free_id();
    let oom = || refuse_producer(ENOMEM, fmt!("out of memory for {} bytes", size));
    let chan = Channel::new(Config::producer(id, name, rule), size).map_err(|_| oom())?;
    let handle = match KBox::new(
        K2uChannel {
            dev: dev.clone(),
            chan: chan.clone(),
        },
        GFP_KERNEL,
    ) {
        Ok(handle) => handle,
        Err(_) => {
            chan.shutdown();
            return Err(oom());
        }
    };
    if reg.insert(chan.clone()).is_err() {
        chan.shutdown();
        return Err(oom());
    }
    drop(reg);
    // Pinned while the producer holds the channel: `rmmod kern2usr` fails
    // meanwhile. Dropped in `k2u_producer_destroy()`.
    // SAFETY: `this_module()` is this module, alive while its code runs;
    // `__module_get()` raises its reference count.
    unsafe { bindings::__module_get(sys::this_module()) };
    pr_info!(
        "channel {} created: name={} size={} owner=0\n",
        id,
        chan.name(),
        size
    );
    Ok(handle)
}

/// The name bytes of a NUL-padded name.
fn name_bytes(name: &[u8; abi::CHANNEL_NAME_LEN]) -> &[u8] {
    name.split(|&b| b == 0).next().unwrap_or_default()
}

/// `k2u_producer_destroy()`.
///
/// # Safety
///
/// `ch` comes from `k2u_producer_create()` and was not destroyed; no other
/// call on it starts from now on (the header's contract).
#[no_mangle]
unsafe extern "C" fn k2u_producer_destroy(ch: *mut K2uChannel) {
    // SAFETY: `ch` is the `KBox` that `k2u_producer_create()` leaked, not
    // destroyed yet; this call takes it back, once, and no call starts on
    // it any more. Calls still running hold references of their own.
    let handle = unsafe { KBox::from_raw(ch) };
    // The handle is freed last, as C's kfree(ch): nothing reads a freed
    // handle while the channel is being ended.
    destroy(&handle.dev, handle.chan.clone());
    drop(handle);
    // SAFETY: Drops the reference `k2u_producer_create()` took on this
    // module (alive: this is its code).
    unsafe { bindings::module_put(sys::this_module()) };
}

/// Ends the producer's part: unlists the channel, abandons the round
/// (its waiters get ENOTCONN), tells an attached listener EXIT_TEST (it
/// keeps its file), and ends the channel unless a file still holds it.
fn destroy(dev: &Device, chan: Arc<Channel>) {
    let last = {
        let mut reg = dev.registry.lock();
        chan.prod.destroyed.store(true, Relaxed);
        // Its producer place is free from here, as in C: a listener's
        // file that lingers must not keep the producer from creating it
        // again (the entry, and so the id, stay until `end()`).
        reg.producers = reg.producers.saturating_sub(1);
        chan.prod.files.load(Relaxed) == 0
    };
    let attached = {
        let mut k = Locked::new(&chan);
        // As C's `live = false`: a blocked read() returns ENODEV.
        k.dead = true;
        chan.readq.notify_all();
        chan.ack.lock().reset();
        chan.prod.ack_wait.notify_all();
        // The listener stays attached until its file is released, so that
        // it can read EXIT_TEST (the queue keeps a slot for it).
        let attached = k.link.is_some() && !k.listener_gone();
        if attached && k.has_room(Code::ExitTest) {
            k.post(Code::ExitTest, 0);
        }
        attached
    };
    pr_info!(
        "channel {} destroyed by its producer{}\n",
        chan.id(),
        if attached {
            ": listener told to exit"
        } else {
            ""
        }
    );
    if last {
        end(dev, &chan);
    }
}

/// The last of the producer and the listener's file let go: stop the
/// channel (timer, eventfds, work) and take it out of the registry, which
/// returns its id and memory to the limits. The caller's reference is the
/// last but the running calls'.
fn end(dev: &Device, chan: &Arc<Channel>) {
    chan.shutdown();
    dev.registry.lock().remove(chan);
}

/// The handle's channel, for a call.
///
/// # Safety
///
/// `ch` comes from `k2u_producer_create()` and its destroy has not started
/// (the header's contract for every call).
unsafe fn channel_of<'a>(ch: *mut K2uChannel) -> &'a Arc<Channel> {
    // SAFETY: By the caller's contract `ch` is a live handle: no destroy
    // has started or runs beside this call (the header's rule), so the box
    // is not freed while the call reads it.
    unsafe { &(*ch).chan }
}

/// `k2u_producer_reserve()`: any context but hard irq, so no mutex and no
/// reference of its own (whose drop could sleep): the handle's reference
/// holds the channel for the call.
///
/// # Safety
///
/// `ch` is a live handle (see [`channel_of`]); `size` is valid for a write.
#[no_mangle]
unsafe extern "C" fn k2u_producer_reserve(ch: *mut K2uChannel, size: *mut usize) -> *mut c_void {
    // SAFETY: The caller's contract.
    let chan = unsafe { channel_of(ch) };
    // Not while the listener may hold a view: a round outstanding (lent),
    // or closed and not yet counted. A producer's channel has no STOP, so
    // no round of it is ever abandoned and left lent; a detach ends both.
    {
        let ack = chan.ack.lock();
        if ack.open || ack.lent || ack.closed {
            return EBUSY.to_ptr();
        }
    }
    let Some(buf) = chan.mem.producer_buffer() else {
        return EINVAL.to_ptr();
    };
    // SAFETY: The caller passes a `size_t` to write (the header's
    // contract).
    unsafe { size.write(chan.mem.size()) };
    buf
}

/// `k2u_producer_publish()`.
///
/// # Safety
///
/// `ch` is a live handle (see [`channel_of`]).
#[no_mangle]
unsafe extern "C" fn k2u_producer_publish(ch: *mut K2uChannel, len: usize) -> i64 {
    // SAFETY: The caller's contract.
    let chan = unsafe { channel_of(ch) }.clone();
    match publish(&chan, len) {
        // Ids count from 1 by one: far below i64::MAX.
        Ok(id) => id as i64,
        Err(e) => e.to_errno().into(),
    }
}

/// Opens a round of `len` bytes the producer wrote: as a test round opens
/// (`Locked::round_begin()`), without the fill. Returns its id.
fn publish(chan: &Arc<Channel>, len: usize) -> Result<u64> {
    if len == 0 || len > chan.mem.size() {
        return Err(EINVAL);
    }
    let mut k = Locked::new(chan);
    if k.link.is_none() || k.listener_gone() {
        return Err(ENOTCONN);
    }
    // Never while the buffer is lent, nor over a round an ack closed that
    // is not counted yet. Only this function opens a producer's rounds,
    // under the mutex, so the answer holds until the round below is opened.
    {
        let ack = chan.ack.lock();
        if ack.open || ack.lent || ack.closed {
            return Err(EBUSY);
        }
    }
    if !k.has_room(Code::MemoryReady) {
        return Err(EAGAIN);
    }
    let id = k.rounds.wrapping_add(1);
    k.rounds = id;
    // Open the round and publish its length and id in one ack-lock
    // section: an ack comes either before (and cannot close it) or after
    // the round is visible. `ready_seq` is stored with release: the
    // producer's writes to the buffer are visible first.
    let adaptive = chan.adaptive();
    {
        let mut ack = chan.ack.lock();
        ack.open(id, adaptive);
        chan.mem.ctrl.store_ready_seq(id, len as u64);
    }
    if adaptive && chan.mem.ctrl.listener_spinning() {
        chan.mem.ctrl.count_skipped_doorbell();
    } else {
        k.post(Code::MemoryReady, id as u32);
    }
    Ok(id)
}

/// `k2u_producer_wait_ack()`.
///
/// # Safety
///
/// `ch` is a live handle (see [`channel_of`]).
#[no_mangle]
unsafe extern "C" fn k2u_producer_wait_ack(
    ch: *mut K2uChannel,
    round: u64,
    timeout: c_ulong,
) -> c_int {
    // Its own reference, as C's kref_get(): the listener's release or a
    // destroy may drop the others meanwhile.
    // SAFETY: The caller's contract.
    let chan = unsafe { channel_of(ch) }.clone();
    match wait_ack(&chan, round, timeout) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Sleeps until round `round` is settled, at most `timeout` jiffies, as
/// C's `wait_event_interruptible_timeout()`: the condition first, then a
/// pending signal (ERESTARTSYS), then the time left (ETIMEDOUT).
fn wait_ack(chan: &Arc<Channel>, round: u64, timeout: Jiffies) -> Result {
    let mut left = timeout.min(MAX_SCHEDULE_TIMEOUT as Jiffies);
    let mut signal = false;
    let mut k = Locked::new(chan);
    loop {
        // `rounds` under the mutex, the round's state under the ack lock:
        // the efd2 callback closes rounds under the latter only, and the
        // work that counts them (and notifies `ack_wait`) takes the mutex,
        // which this task holds until it sleeps: no wake-up is missed.
        if let Some(res) = chan.ack.lock().settled(round, k.rounds) {
            return res;
        }
        if signal {
            return Err(ERESTARTSYS);
        }
        if left == 0 {
            return Err(ETIMEDOUT);
        }
        match k.wait_ack(left) {
            CondVarTimeoutResult::Timeout => left = 0,
            CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
            CondVarTimeoutResult::Signal { jiffies } => {
                left = jiffies;
                signal = true;
            }
        }
    }
}

/// Whether the caller may attach to `chan`: the producer's rule,
/// `CAP_SYS_ADMIN` always. EPERM with one (rate-limited) line otherwise.
fn may_attach(dev: &Device, chan: &Channel) -> Result {
    if chan.cfg.attach.allows_current() {
        return Ok(());
    }
    if dev.attach_log.lock().check() {
        pr_notice!(
            "CREATE refused: channel {} ({}) does not let pid {} (euid {}) attach\n",
            chan.id(),
            chan.name(),
            current!().tgid_nr_ns(None),
            sys::current_euid_munged()
        );
    }
    Err(EPERM)
}

/// Whether the process whose listener's file is attached still runs: it
/// counts as exited when all its threads have, as the default channel's
/// listener does; a child it forked may hold the file on, but got the
/// file, not the role.
fn owner_alive(chan: &Channel) -> bool {
    chan.prod
        .owner
        .lock()
        .as_ref()
        .is_some_and(|owner| !owner.exited())
}

/// The listener's process has exited, its file lives on in a child:
/// detach it and leave the file behind. It is no longer the channel's
/// listener's (its release only lets go of the channel), and its holder
/// is not the owner. C's `k2u_producer_orphan()`.
fn orphan(k: &mut Locked<'_>) {
    let chan = k.dev;
    k.detach();
    let old = chan.prod.owner.lock().take();
    drop(old);
    chan.prod.listener_file.store(0, Relaxed);
    pr_info!(
        "channel {}: listener pid {} exited: its file is left behind\n",
        chan.id(),
        chan.prod.listener_nr.load(Relaxed)
    );
}

/// `K2U_IOC_CREATE` with `K2U_CREATE_ATTACH`, the registry locked (`reg`):
/// attaches the caller (`pid`, `owner`, `listener`: its thread group) with
/// its checked eventfds to the producer channel named `name`, which its
/// file (`file`) then holds. C's `k2u_producer_attach()`: ENOENT, then the
/// attach rule (EPERM), then EBUSY while the listener's process runs.
#[expect(clippy::too_many_arguments)]
pub(crate) fn attach(
    dev: &Device,
    reg: &Registry,
    name: &[u8; abi::CHANNEL_NAME_LEN],
    file: FileToken,
    pid: i32,
    owner: PidRef,
    listener: PidRef,
    efd: EventFdFile<'_>,
    efd2: EventFdFile<'_>,
) -> Result<Arc<Channel>> {
    let Some(chan) = find(reg, name) else {
        return Err(refuse(
            ENOENT,
            fmt!(
                "name {}: no producer channel has this name",
                BStr::from_bytes(name_bytes(name))
            ),
        ));
    };
    may_attach(dev, chan)?;
    let mut k = Locked::new(chan);
    // One listener's file at a time, while its process runs.
    let attached = chan.prod.listener_file.load(Relaxed) != 0;
    if attached && owner_alive(chan) {
        return Err(refuse(EBUSY, fmt!("channel {} has a listener", chan.id())));
    }
    if attached {
        orphan(&mut k);
    }
    if let Err(e) = k.attach(pid, listener, efd, efd2) {
        return Err(e.refuse(refuse));
    }
    // Detached or orphaned above: no owner to drop.
    let old = chan.prod.owner.lock().replace(owner);
    drop(old);
    chan.prod.listener_file.store(file, Relaxed);
    chan.prod.listener_nr.store(pid, Relaxed);
    // The registry is locked (`reg`): `files` changes under it.
    chan.prod.files.add(1u32, Relaxed);
    drop(k);
    pr_info!(
        "channel {} attached: name={} listener={}\n",
        chan.id(),
        chan.name(),
        pid
    );
    Ok(chan.clone())
}

/// A file attached to producer channel `chan` (`file`) is released: if it
/// is still the listener's (not left behind by an exited one), the
/// listener leaves (a round an ack closed still counts; an open one is
/// abandoned). If it was the last file and the producer destroyed the
/// channel already, the channel ends. C's
/// `k2u_producer_listener_release()`.
pub(crate) fn file_release(dev: &Device, chan: Arc<Channel>, file: FileToken) {
    let mine = {
        let mut k = Locked::new(&chan);
        let mine = chan.prod.listener_file.load(Relaxed) == file;
        if mine {
            k.detach();
            chan.prod.listener_file.store(0, Relaxed);
            let old = chan.prod.owner.lock().take();
            drop(old);
        }
        mine
    };
    if mine {
        pr_info!("channel {}: listener left\n", chan.id());
    } else {
        pr_info!(
            "channel {}: a file its exited listener left behind is closed\n",
            chan.id()
        );
    }
    let last = {
        let _reg = dev.registry.lock();
        let files = chan.prod.files.load(Relaxed).saturating_sub(1);
        chan.prod.files.store(files, Relaxed);
        files == 0 && chan.prod.destroyed.load(Relaxed)
    };
    if last {
        end(dev, &chan);
    }
}
