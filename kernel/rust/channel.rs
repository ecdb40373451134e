// SPDX-License-Identifier: GPL-2.0-only

//! Channels made by `K2U_IOC_CREATE`: their checks, limits, creation and
//! end. Each is an `Arc<Channel>` held by its file (`K2uFile::chan`) and
//! by the registry (`Device::registry`), which counts them against
//! `max_channels` and `max_channel_memory` and lists them; the file's
//! release ends it. `K2U_CREATE_ATTACH` attaches the file to a kernel
//! producer's channel instead (`producer.rs`).

use kernel::{
    fmt,
    fs::LocalFile,
    page::PAGE_SIZE,
    prelude::*,
    str::BStr,
    sync::{aref::ARef, Arc},
};

use crate::abi::{self, Create};
use crate::eventfd::EventFdFile;
use crate::link::AttachError;
use crate::params;
use crate::producer;
use crate::state::{Channel, Config, Device, FileToken, Locked, Registry};
use crate::sys::PidRef;

/// Refuses CREATE with `err`: `CREATE refused: <why>`.
pub(crate) fn refuse(err: Error, why: fmt::Arguments<'_>) -> Error {
    pr_notice!("CREATE refused: {}\n", why);
    err
}

/// Whether `b` may be part of a channel name.
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Checks the name: up to `CHANNEL_NAME_LEN - 1` name bytes, then NULs
/// only (EINVAL).
pub(crate) fn check_name(name: &[u8; abi::CHANNEL_NAME_LEN]) -> Result {
    let Some(len) = name.iter().position(|&b| b == 0) else {
        return Err(refuse(
            EINVAL,
            fmt!(
                "name {}: longer than {} bytes",
                BStr::from_bytes(name),
                abi::CHANNEL_NAME_LEN - 1
            ),
        ));
    };
    for (i, &b) in name.iter().enumerate() {
        if i < len && !name_byte(b) {
            return Err(refuse(
                EINVAL,
                fmt!("name byte {} {:#04x}: not in [A-Za-z0-9_.-]", i, b),
            ));
        }
        if i > len && b != 0 {
            return Err(refuse(
                EINVAL,
                fmt!("name byte {} {:#04x}: not NUL after the name's end", i, b),
            ));
        }
    }
    Ok(())
}

/// Checks the fields of `req` (EINVAL), in the order of PROTOCOL.md:
/// `buffer_size`, `period_ms`, `flags`, `name`, `id`, `ring_slots`.
fn check_fields(req: &Create) -> Result {
    let attach = req.flags & abi::CREATE_ATTACH != 0;
    let size = req.buffer_size;
    if attach && size != 0 {
        return Err(refuse(
            EINVAL,
            fmt!("buffer_size {}: must be 0 with K2U_CREATE_ATTACH", size),
        ));
    }
    if !attach && (size == 0 || size > abi::MAX_BUFFER_SIZE || size % PAGE_SIZE as u64 != 0) {
        return Err(refuse(
            EINVAL,
            fmt!(
                "buffer_size {}: must be a multiple of {} from {} to {}",
                size,
                PAGE_SIZE,
                PAGE_SIZE,
                abi::MAX_BUFFER_SIZE
            ),
        ));
    }
    if attach && req.period_ms != 0 {
        return Err(refuse(
            EINVAL,
            fmt!(
                "period_ms {}: must be 0 with K2U_CREATE_ATTACH",
                req.period_ms
            ),
        ));
    }
    if req.period_ms > abi::MAX_PERIOD_MS {
        return Err(refuse(
            EINVAL,
            fmt!(
                "period_ms {}: above the maximum {}",
                req.period_ms,
                abi::MAX_PERIOD_MS
            ),
        ));
    }
    // Any flag but ATTACH itself (CREATE_RING too) is a pacing flag here.
    if attach && req.flags & !abi::CREATE_ATTACH & abi::CREATE_FLAGS != 0 {
        return Err(refuse(
            EINVAL,
            fmt!(
                "flags {:#x}: a producer's channel has no pacing flags",
                req.flags
            ),
        ));
    }
    let unknown = req.flags & !abi::CREATE_FLAGS;
    if unknown != 0 {
        return Err(refuse(
            EINVAL,
            fmt!("flags {:#x}: unknown flag {:#x}", req.flags, unknown),
        ));
    }
    check_name(&req.name)?;
    if attach && req.name[0] == 0 {
        return Err(refuse(
            EINVAL,
            fmt!("name -: K2U_CREATE_ATTACH needs a name"),
        ));
    }
    if req.id != 0 {
        return Err(refuse(EINVAL, fmt!("id {}: must be 0", req.id)));
    }
    check_ring(req)
}

/// Checks `ring_slots` (EINVAL): 0 without `CREATE_RING`; with it a power
/// of two from `RING_MIN_SLOTS` to `RING_MAX_SLOTS` whose slots together
/// fit `MAX_BUFFER_SIZE` (`CREATE_ATTACH` with it was refused with the
/// flags).
fn check_ring(req: &Create) -> Result {
    let slots = req.ring_slots;
    if req.flags & abi::CREATE_RING == 0 {
        if slots != 0 {
            return Err(refuse(
                EINVAL,
                fmt!("ring_slots {}: must be 0 without K2U_CREATE_RING", slots),
            ));
        }
        return Ok(());
    }
    if !slots.is_power_of_two() || !(abi::RING_MIN_SLOTS..=abi::RING_MAX_SLOTS).contains(&slots) {
        return Err(refuse(
            EINVAL,
            fmt!(
                "ring_slots {}: must be a power of two from {} to {}",
                slots,
                abi::RING_MIN_SLOTS,
                abi::RING_MAX_SLOTS
            ),
        ));
    }
    let total = u64::from(slots).saturating_mul(req.buffer_size);
    if total > abi::MAX_BUFFER_SIZE {
        return Err(refuse(
            EINVAL,
            fmt!(
                "ring_slots {}: {} x buffer_size {} is above the maximum {}",
                slots,
                slots,
                req.buffer_size,
                abi::MAX_BUFFER_SIZE
            ),
        ));
    }
    Ok(())
}

/// One of the caller's eventfds, `which` (`efd` or `efd2`) for the log.
fn caller_file(which: &str, fd: i32, pid: i32) -> Result<ARef<LocalFile>> {
    // Negative fds become huge unsigned ones: EBADF, as C's fget().
    LocalFile::fget(fd as u32).map_err(|_| {
        refuse(
            EBADF,
            fmt!("{}={} is not an open fd of pid {}", which, fd, pid),
        )
    })
}

/// `K2U_IOC_CREATE` on a file that is no channel yet (the caller holds its
/// slot; `this_file` is that file): checks `req`, the caller's eventfds and the
/// limits, makes the channel, attaches the caller as its listener and
/// registers it.
pub(crate) fn create(dev: &Device, req: &Create, this_file: FileToken) -> Result<Arc<Channel>> {
    check_fields(req)?;
    let task = current!();
    let pid = task.tgid_nr_ns(None);
    let file = caller_file("efd", req.efd, pid)?;
    let file2 = caller_file("efd2", req.efd2, pid)?;
    let efd = EventFdFile::new(&file).map_err(|_| refuse(EINVAL, fmt!("efd is not an eventfd")))?;
    let efd2 =
        EventFdFile::new(&file2).map_err(|_| refuse(EINVAL, fmt!("efd2 is not an eventfd")))?;
    if efd.same_eventfd(&efd2) {
        return Err(refuse(EINVAL, fmt!("efd and efd2 are the same eventfd")));
    }
    let owner = PidRef::tgid_of(task).ok_or(ESRCH)?;
    let listener = owner.clone_ref();
    if req.flags & abi::CREATE_ATTACH != 0 {
        let reg = dev.registry.lock();
        return producer::attach(
            dev, &reg, &req.name, this_file, pid, owner, listener, efd, efd2,
        );
    }
    // A multiple of the page size up to MAX_BUFFER_SIZE: fits. A ring's
    // memory is all its slots (at most MAX_BUFFER_SIZE too).
    let size = req.buffer_size as usize;
    let ring_slots = if req.flags & abi::CREATE_RING != 0 {
        req.ring_slots
    } else {
        0
    };
    let memory = size * ring_slots.max(1) as usize;
    let period_ms = if req.period_ms == 0 {
        abi::DEFAULT_PERIOD_MS
    } else {
        req.period_ms
    };

    let mut reg = dev.registry.lock();
    check_limits(&reg, memory)?;
    let id = reg.free_id();
    let cfg = Config::created(id, req.name, period_ms, req.flags, owner, ring_slots);
    let chan = Channel::new(cfg, memory)
        .map_err(|_| refuse(ENOMEM, fmt!("out of memory for {} bytes", memory)))?;
    let attached = Locked::new(&chan).attach(pid, listener, efd, efd2);
    if let Err(e) = attached {
        let err = match &e {
            AttachError::Hook(err) => *err,
            _ => EINVAL,
        };
        chan.shutdown();
        return Err(e.refuse(|_, why| refuse(err, why)));
    }
    if let Err(e) = reg.insert(chan.clone()) {
        chan.shutdown();
        return Err(e);
    }
    drop(reg);
    if ring_slots != 0 {
        pr_info!(
            "channel {} created: name={} size={} ring_slots={} owner={}\n",
            id,
            chan.name(),
            size,
            ring_slots,
            pid
        );
    } else {
        pr_info!(
            "channel {} created: name={} size={} owner={}\n",
            id,
            chan.name(),
            size,
            pid
        );
    }
    Ok(chan)
}

/// ENOSPC unless one more channel of `size` bytes fits `max_channels` and
/// `max_channel_memory` (CREATE's check, under the registry lock).
/// Producers' channels do not count: they have their own cap.
fn check_limits(reg: &Registry, size: usize) -> Result {
    let max = params::max_channels();
    let count = reg.users;
    if count >= max {
        return Err(refuse(
            ENOSPC,
            fmt!("{} channels exist (max_channels={})", count, max),
        ));
    }
    let cap = params::max_channel_memory();
    if reg.memory.saturating_add(size as u64) > cap {
        return Err(refuse(
            ENOSPC,
            fmt!(
                "{} more bytes would pass max_channel_memory={} ({} in use)",
                size,
                cap,
                reg.memory
            ),
        ));
    }
    Ok(())
}

/// The end of a channel, at the release of its file (`file`): stop it
/// (timer, work, eventfds), unregister it, free it. A producer's channel
/// only loses that file (`producer::file_release()`).
pub(crate) fn release(dev: &Device, chan: Arc<Channel>, file: FileToken) {
    if chan.is_producer() {
        producer::file_release(dev, chan, file);
        return;
    }
    chan.shutdown();
    dev.registry.lock().remove(&chan);
    let id = chan.id();
    // The last reference: the file's (the registry's went above, the
    // eventfd hooks' and the work items' in `shutdown()`). Frees the pages.
    drop(chan);
    pr_info!("channel {} released\n", id);
}
