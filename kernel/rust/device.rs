// SPDX-License-Identifier: GPL-2.0-only

//! The character device (a misc device, `/dev/kern2usr`, mode 0600): mmap of
//! the data buffer and the control page, event records through read(), and
//! the ioctls.

use kernel::{
    fs::{File, Kiocb, LocalFile},
    iov::IovIterDest,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    mm::virt::VmaNew,
    new_mutex, new_spinlock,
    prelude::*,
    sync::{Arc, Mutex, SpinLock},
    transmute::{AsBytes, FromBytes},
    uaccess::{UserSlice, UserSliceReader, UserSliceWriter},
};

use crate::abi::{self, ChannelStats, Create, EventMode, Info, ReadBuffer, Register};
use crate::channel;
use crate::link;
use crate::params;
use crate::ring;
use crate::state::{self, Channel, Device, FileToken, Locked};
use crate::sys::{self, ParamLock, PidRef};

// SAFETY: `repr(C)` of two `i32`s: no padding, any bit pattern is valid.
unsafe impl FromBytes for Register {}
// SAFETY: `repr(C)` of two `u64`s: no padding, any bit pattern is valid.
unsafe impl FromBytes for ReadBuffer {}
// SAFETY: `repr(C)` of `u32, u32, u64, u32, u32`: 24 bytes, no padding
// (asserted below), all fields plain integers.
unsafe impl AsBytes for Info {}
// SAFETY: `repr(C)` of `u64, u32, u32`: 16 bytes, no padding (asserted
// below), all fields plain integers.
unsafe impl AsBytes for abi::Event {}
// SAFETY: `repr(C)` of `i32, i32, u64, u32, u32, [u8; 16], u32, u32`: 48
// bytes, no padding (asserted below), all fields plain integers.
unsafe impl FromBytes for Create {}
// SAFETY: As for `FromBytes` above.
unsafe impl AsBytes for Create {}
// SAFETY: `repr(C)` of `u32, u32` and ten `u64`s: 88 bytes, no padding
// (asserted below), all fields plain integers.
unsafe impl AsBytes for ChannelStats {}

const _: () = {
    assert!(size_of::<Register>() == 8);
    assert!(size_of::<ReadBuffer>() == 16);
    assert!(size_of::<Info>() == 24);
    assert!(size_of::<abi::Event>() == 16);
    assert!(size_of::<Create>() == 48);
    assert!(size_of::<ChannelStats>() == 88);
};

/// `K2U_IOC_READ_BUFFER` copies through kernel memory, this many bytes at a
/// time (C's `K2U_READ_CHUNK`).
const READ_CHUNK: usize = 64 * 1024;
/// Fresh starts after a round refilled the buffer mid-copy, then EAGAIN.
const READ_RESTARTS: u32 = 4;

/// One open file of the device: a reference on the device state, and the
/// file's own channel once `K2U_IOC_CREATE` made it one.
#[pin_data]
pub(crate) struct K2uFile {
    dev: Arc<Device>,
    /// Serialises CREATE on this file. Lock order: this, then the
    /// registry, then a channel's mutex.
    #[pin]
    create_lock: Mutex<()>,
    /// The file's channel (C's `file->private_data` channel), set once by
    /// CREATE. A leaf lock: operations take a reference and let it go at
    /// once (mmap does so under the mm lock, which a channel's mutex
    /// nests: `read()` copies out under it).
    #[pin]
    chan: SpinLock<Option<Arc<Channel>>>,
}

/// Who may reach the default channel through a file that is not a channel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Anyone who could open the device.
    Anyone,
    /// The default channel's listener process, or `CAP_SYS_ADMIN`.
    Listener,
    /// `CAP_SYS_ADMIN` only.
    Admin,
}

#[vtable]
impl MiscDevice for K2uFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let dev = state::device().ok_or(ENODEV)?;
        KBox::try_pin_init(
            try_pin_init!(Self {
                dev,
                create_lock <- new_mutex!(()),
                chan <- new_spinlock!(None),
            }),
            GFP_KERNEL,
        )
    }

    /// The last reference to the file went (every descriptor closed, every
    /// mapping gone): its channel ends.
    fn release(me: Pin<KBox<Self>>, _file: &File) {
        let chan = me.chan.lock().take();
        if let Some(chan) = chan {
            channel::release(&me.dev, chan, me.token());
        }
    }

    fn mmap(me: Pin<&K2uFile>, _file: &File, vma: &VmaNew) -> Result {
        let chan = me.reach("mmap", Rule::Listener)?;
        chan.mem.mmap(vma, &chan.mmap_log, chan.tag())
    }

    fn read_iter(kiocb: Kiocb<'_, Pin<KBox<Self>>>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let nonblock = sys::nonblocking(&kiocb);
        let me = kiocb.file();
        let chan = me.reach("read", Rule::Listener)?;
        // Asked again before records are taken (the listener may change
        // while the call waits): the same check as `reach()`'s.
        let own = me.own().is_some();
        let may = || {
            if own {
                check_owner(&me.dev, &chan, "read")
            } else {
                check_default(&me.dev, "read", Rule::Listener)
            }
        };
        link::read_events(&chan, iov, nonblock, may)
    }

    fn ioctl(me: Pin<&K2uFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let arg = UserPtr::from_addr(arg);
        match cmd {
            abi::IOC_REGISTER => me.register(UserSlice::new(arg, size_of::<Register>()).reader()),
            abi::IOC_ACK => me.ack("ACK", None),
            abi::IOC_ACK_ROUND => {
                let chan = me.reach("ACK_ROUND", Rule::Listener)?;
                if chan.is_ring() {
                    return Err(ring::refuse_ioctl(&chan, "ACK_ROUND"));
                }
                let round: u32 = UserSlice::new(arg, size_of::<u32>()).reader().read()?;
                Locked::new(&chan).round_ack_ioctl(Some(round))?;
                Ok(0)
            }
            abi::IOC_INFO => me.info(UserSlice::new(arg, size_of::<Info>()).writer()),
            abi::IOC_READ_BUFFER => {
                me.read_buffer(UserSlice::new(arg, size_of::<ReadBuffer>()).reader())
            }
            abi::IOC_CREATE => me.create(arg),
            abi::IOC_CHANNEL_CMD => {
                let chan = me.own().ok_or(ENOTCONN)?;
                check_owner(&me.dev, &chan, "CHANNEL_CMD")?;
                let code: u32 = UserSlice::new(arg, size_of::<u32>()).reader().read()?;
                if chan.is_producer() {
                    pr_notice!(
                        "{}command {} refused: a producer's channel takes no commands\n",
                        chan.tag(),
                        code
                    );
                    return Err(EOPNOTSUPP);
                }
                Locked::new(&chan).channel_cmd(code)?;
                Ok(0)
            }
            abi::IOC_CHANNEL_STATS => {
                let chan = me.reach("CHANNEL_STATS", Rule::Anyone)?;
                me.channel_stats(
                    &chan,
                    UserSlice::new(arg, size_of::<ChannelStats>()).writer(),
                )
            }
            _ => Err(ENOTTY),
        }
    }
}

/// The calling process' pid, for the log.
fn current_pid() -> i32 {
    current!().tgid_nr_ns(None)
}

/// EPERM unless the caller's process owns `chan` (a created channel, or a
/// producer's with the caller attached):
/// `channel <id>: pid <p> is not its owner: <op> refused`.
fn check_owner(dev: &Device, chan: &Channel, op: &str) -> Result {
    let me = PidRef::current().ok_or(ESRCH)?;
    if chan.owned_by(&me) {
        return Ok(());
    }
    if !dev.perm_log() {
        return Err(EPERM);
    }
    pr_notice!(
        "channel {}: pid {} is not its owner: {} refused\n",
        chan.id(),
        current_pid(),
        op
    );
    Err(EPERM)
}

/// EPERM unless the caller may do `op` on the default channel under `rule`.
fn check_default(dev: &Device, op: &str, rule: Rule) -> Result {
    let chan = &dev.default;
    let allowed = match rule {
        Rule::Anyone => true,
        Rule::Listener => {
            PidRef::current().is_some_and(|me| chan.is_listener(&me)) || sys::capable_sys_admin()
        }
        Rule::Admin => sys::capable_sys_admin(),
    };
    if allowed {
        return Ok(());
    }
    if !dev.perm_log() {
        return Err(EPERM);
    }
    if rule == Rule::Admin {
        pr_notice!(
            "default channel: pid {} is not privileged (CAP_SYS_ADMIN): {} refused\n",
            current_pid(),
            op
        );
    } else {
        pr_notice!(
            "default channel: pid {} is neither its listener nor privileged: {} refused\n",
            current_pid(),
            op
        );
    }
    Err(EPERM)
}

impl K2uFile {
    /// This file, as a channel knows it: its address (pinned, so stable
    /// while it is open).
    fn token(&self) -> FileToken {
        core::ptr::from_ref(self) as FileToken
    }

    /// The file's own channel, if it is one.
    fn own(&self) -> Option<Arc<Channel>> {
        self.chan.lock().clone()
    }

    /// The channel `op` acts on, if the caller may: the file's own (its
    /// owner only), else the default channel (as `rule` says).
    fn reach(&self, op: &str, rule: Rule) -> Result<Arc<Channel>> {
        match self.own() {
            Some(chan) => {
                check_owner(&self.dev, &chan, op)?;
                Ok(chan)
            }
            None => {
                check_default(&self.dev, op, rule)?;
                Ok(self.dev.default.clone())
            }
        }
    }

    /// `K2U_IOC_REGISTER`: attach the caller's own eventfds to the default
    /// channel. (They are the caller's own files: no access check is
    /// needed, unlike FIND; but it replaces the listener root chose, so it
    /// needs `CAP_SYS_ADMIN`.) A refusal is logged `REGISTER refused:
    /// <reason>` and kept in `last_error`. On a channel's file: EBUSY.
    fn register(&self, mut reader: UserSliceReader) -> Result<isize> {
        if let Some(chan) = self.own() {
            check_owner(&self.dev, &chan, "REGISTER")?;
            pr_notice!("{}REGISTER refused: this file is a channel\n", chan.tag());
            return Err(EBUSY);
        }
        check_default(&self.dev, "REGISTER", Rule::Admin)?;
        let reg: Register = reader.read()?;
        // Negative fds become huge unsigned ones: EBADF, as C's fget().
        let efd = LocalFile::fget(reg.efd as u32).ok();
        let efd2 = LocalFile::fget(reg.efd2 as u32).ok();
        let task = current!();
        let pid = task.tgid_nr_ns(None);
        let tgid = PidRef::tgid_of(task).ok_or(ESRCH)?;
        {
            // Lock order as in a sysfs write: parameter lock, then the mutex.
            let _params = ParamLock::new();
            let mut k = Locked::new(&self.dev.default);
            if k.dead {
                return Err(ENODEV);
            }
            let missing = match (&efd, &efd2) {
                (None, _) => Some(("efd", reg.efd)),
                (_, None) => Some(("efd2", reg.efd2)),
                _ => None,
            };
            if let Some((name, fd)) = missing {
                return Err(k.refuse_op(
                    "REGISTER",
                    EBADF,
                    fmt!("{}={} is not an open fd of pid {}", name, fd, pid),
                ));
            }
            let (Some(efd), Some(efd2)) = (efd, efd2) else {
                return Err(EBADF);
            };
            k.listener_gone();
            if k.testing {
                return Err(k.refuse_op(
                    "REGISTER",
                    EBUSY,
                    fmt!("test is running: stop it (4) first"),
                ));
            }
            if let Err(e) = k.attach_files(pid, tgid, &efd, &efd2) {
                return Err(e.refuse(|err, why| k.refuse_op("REGISTER", err, why)));
            }
            params::note_registered(pid, reg.efd, reg.efd2);
            k.last_error.clear();
        }
        pr_info!("eventfds of pid {} registered by ioctl\n", pid);
        Ok(0)
    }

    /// `K2U_IOC_ACK`: the outstanding round, if it was shown, as 7 on efd2.
    fn ack(&self, op: &str, round: Option<u32>) -> Result<isize> {
        let chan = self.reach(op, Rule::Listener)?;
        if chan.is_ring() {
            return Err(ring::refuse_ioctl(&chan, op));
        }
        Locked::new(&chan).round_ack_ioctl(round)?;
        Ok(0)
    }

    /// `K2U_IOC_INFO` (anyone): the file's channel, or the default one.
    fn info(&self, mut writer: UserSliceWriter) -> Result<isize> {
        let own = self.own();
        let chan = own.as_ref().unwrap_or(&self.dev.default);
        writer.write(&Info {
            abi_version: abi::ABI_VERSION,
            event_mode: EventMode::Queue as u32,
            buffer_size: chan.buffer_size() as u64,
            period_ms: chan.period_ms(),
            channel_id: chan.id(),
        })?;
        Ok(0)
    }

    /// `K2U_IOC_READ_BUFFER`: the classic path, copy the buffer out instead
    /// of mapping it. Returns the bytes copied.
    ///
    /// As in C: each chunk ([`READ_CHUNK`]) is copied into a kernel bounce
    /// buffer under the mutex (no fill writes the pages meanwhile) and out
    /// to the caller with the mutex released, so a destination that stalls
    /// (userfaultfd, FUSE) holds up nothing but this call. Under the mutex
    /// the buffer holds round `rounds`' fill (a round is filled and
    /// counted in one locked section), so a chunk that finds another round
    /// than the first did means a refill: the copy starts over, at most
    /// [`READ_RESTARTS`] times, then EAGAIN. The bytes all come from one
    /// fill.
    fn read_buffer(&self, mut reader: UserSliceReader) -> Result<isize> {
        let chan = self.reach("READ_BUFFER", Rule::Listener)?;
        if chan.is_ring() {
            return Err(ring::refuse_ioctl(&chan, "READ_BUFFER"));
        }
        if chan.is_producer() {
            // The producer writes its buffer without the channel's mutex.
            pr_notice!(
                "{}READ_BUFFER refused: a producer's buffer is read through the mapping\n",
                chan.tag()
            );
            return Err(EOPNOTSUPP);
        }
        let rb: ReadBuffer = reader.read()?;
        let len = usize::try_from(rb.len)
            .unwrap_or(usize::MAX)
            .min(chan.mem.size());
        if len == 0 {
            return Ok(0);
        }
        let mut bounce = KVVec::from_elem(0u8, len.min(READ_CHUNK), GFP_KERNEL)?;
        let mut restarts = 0;
        'pass: loop {
            let to = UserPtr::from_addr(rb.addr as usize);
            let mut writer = UserSlice::new(to, len).writer();
            let mut fill = None;
            let mut done = 0;
            while done < len {
                let n = (len - done).min(READ_CHUNK);
                let chunk = &mut bounce[..n];
                {
                    let k = Locked::new(&chan);
                    if fill.is_some_and(|f| f != k.rounds) {
                        restarts += 1;
                        if restarts > READ_RESTARTS {
                            return Err(EAGAIN);
                        }
                        continue 'pass;
                    }
                    fill = Some(k.rounds);
                    chan.mem.copy_out(&k, done, chunk);
                }
                writer.write_slice(chunk)?;
                done += n;
            }
            return Ok(len as isize);
        }
    }

    /// `K2U_IOC_CREATE`: make this file a channel.
    fn create(&self, arg: UserPtr) -> Result<isize> {
        if let Some(chan) = self.own() {
            check_owner(&self.dev, &chan, "CREATE")?;
        }
        let (mut reader, mut writer) = UserSlice::new(arg, size_of::<Create>()).reader_writer();
        let mut req: Create = reader.read()?;
        let _create = self.create_lock.lock();
        if let Some(chan) = self.own() {
            pr_notice!(
                "CREATE refused: this file is channel {} already\n",
                chan.id()
            );
            return Err(EBUSY);
        }
        let chan = channel::create(&self.dev, &req, self.token())?;
        req.id = chan.id();
        req.buffer_size = chan.buffer_size() as u64;
        if let Err(e) = writer.write(&req) {
            // The caller cannot learn of its channel: undo it.
            channel::release(&self.dev, chan, self.token());
            return Err(e);
        }
        *self.chan.lock() = Some(chan);
        Ok(0)
    }

    /// `K2U_IOC_CHANNEL_STATS`.
    fn channel_stats(&self, chan: &Channel, mut writer: UserSliceWriter) -> Result<isize> {
        let (rounds, v) = {
            let k = chan.inner.lock();
            (k.rounds, k.round.stats.values())
        };
        writer.write(&ChannelStats {
            id: chan.id(),
            event_mode: EventMode::Queue as u32,
            buffer_size: chan.buffer_size() as u64,
            rounds_published: rounds,
            count: v[0],
            min_ns: v[1],
            mean_ns: v[2],
            p50_ns: v[3],
            p90_ns: v[4],
            p99_ns: v[5],
            p999_ns: v[6],
            max_ns: v[7],
        })?;
        Ok(0)
    }
}
