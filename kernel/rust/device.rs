// SPDX-License-Identifier: GPL-2.0-only

//! The character device (a misc device, `/dev/kern2usr`, mode 0600): mmap of
//! the data buffer and the control page, event records through read(), and
//! the ioctls.

use kernel::{
    fs::{File, Kiocb, LocalFile},
    iov::IovIterDest,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    mm::virt::VmaNew,
    prelude::*,
    sync::Arc,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserSlice, UserSliceReader, UserSliceWriter},
};

use crate::abi::{self, EventMode, Info, ReadBuffer, Register};
use crate::link;
use crate::params;
use crate::state::{self, Locked, Shared};
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

const _: () = {
    assert!(size_of::<Register>() == 8);
    assert!(size_of::<ReadBuffer>() == 16);
    assert!(size_of::<Info>() == 24);
    assert!(size_of::<abi::Event>() == 16);
};

/// One open file of the device: a reference on the device state.
pub(crate) struct K2uFile {
    dev: Arc<Shared>,
}

#[vtable]
impl MiscDevice for K2uFile {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let dev = state::device().ok_or(ENODEV)?;
        Ok(KBox::new(Self { dev }, GFP_KERNEL)?)
    }

    fn mmap(me: &K2uFile, _file: &File, vma: &VmaNew) -> Result {
        me.dev.mem.mmap(vma, &me.dev.mmap_log)
    }

    fn read_iter(kiocb: Kiocb<'_, KBox<Self>>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let nonblock = sys::nonblocking(&kiocb);
        link::read_events(&kiocb.file().dev, iov, nonblock)
    }

    fn ioctl(me: &K2uFile, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let arg = UserPtr::from_addr(arg);
        match cmd {
            abi::IOC_REGISTER => me.register(UserSlice::new(arg, size_of::<Register>()).reader()),
            abi::IOC_ACK => me.ack(None),
            abi::IOC_ACK_ROUND => {
                let round: u32 = UserSlice::new(arg, size_of::<u32>()).reader().read()?;
                me.ack(Some(round))
            }
            abi::IOC_INFO => me.info(UserSlice::new(arg, size_of::<Info>()).writer()),
            abi::IOC_READ_BUFFER => {
                me.read_buffer(UserSlice::new(arg, size_of::<ReadBuffer>()).reader())
            }
            _ => Err(ENOTTY),
        }
    }
}

impl K2uFile {
    /// `K2U_IOC_REGISTER`: attach the caller's own eventfds. (They are the
    /// caller's own files: no access check is needed, unlike FIND.) A
    /// refusal is logged `REGISTER refused: <reason>` and kept in
    /// `last_error`.
    fn register(&self, mut reader: UserSliceReader) -> Result<isize> {
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
            let mut k = Locked::new(&self.dev);
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

    /// `K2U_IOC_ACK` (`round` `None`: the outstanding round, if it was
    /// shown, as 7 on efd2) or `K2U_IOC_ACK_ROUND` (round `round`).
    fn ack(&self, round: Option<u32>) -> Result<isize> {
        Locked::new(&self.dev).round_ack_ioctl(round)?;
        Ok(0)
    }

    /// `K2U_IOC_INFO`.
    fn info(&self, mut writer: UserSliceWriter) -> Result<isize> {
        writer.write(&Info {
            abi_version: abi::ABI_VERSION,
            event_mode: EventMode::Queue as u32,
            buffer_size: self.dev.mem.size() as u64,
            period_ms: params::period_ms(),
            channel_id: 0,
        })?;
        Ok(0)
    }

    /// `K2U_IOC_READ_BUFFER`: the classic path, copy the buffer out instead
    /// of mapping it. Returns the bytes copied.
    fn read_buffer(&self, mut reader: UserSliceReader) -> Result<isize> {
        let rb: ReadBuffer = reader.read()?;
        // Under the lock: no fill writes the pages while they are copied.
        let k = Locked::new(&self.dev);
        let len = self.dev.mem.copy_to_user(&k, rb.addr, rb.len)?;
        Ok(len as isize)
    }
}
