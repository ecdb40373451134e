// SPDX-License-Identifier: GPL-2.0-only

//! kern2usr: hand a kernel buffer to a userspace listener and time the round
//! trip, driven through module parameters and two eventfds.
//!
//! The Rust twin of the C module in `kernel/c/`, for Linux 7.3: the same
//! parameters, ioctls, log lines and errnos (`docs/PROTOCOL.md`), and the
//! same ABI: this crate compiles `abi/src/defs.rs`, the file the userspace
//! crate uses. The event mode is `queue` (7.3 is past 6.8).
//!
//! Files: this one (the crate root: `kern2usr.ko` is a composite module
//! of this crate and `exports.c`), module init and exit; `params.rs` the sysfs
//! parameters; `cmd.rs` the commands written to `cur_cmd` and their
//! refusals; `device.rs` the misc device (mmap, read, ioctl); `memory.rs`
//! the data buffer and the control page; `link.rs` the listener's eventfds,
//! event delivery and acks; `round.rs` the rounds and their timing;
//! `stats.rs` the round-trip histogram; `ring.rs` ring channels
//! (`CREATE_RING`), acks through the control page (`ack_seq`) and the
//! bounded ack polling (`ack_poll_us`); `state.rs` the channel (`Channel`:
//! the default one, id 0, and those `K2U_IOC_CREATE` makes) and the device
//! (`Device`: the default channel and the registry of the others);
//! `channel.rs` CREATE's checks and limits and a channel's end;
//! `producer.rs` the producer API of `kernel/c/include/kern2usr_producer.h`
//! (`extern "C"` functions that `exports.c` exports with
//! `EXPORT_SYMBOL_GPL`) and the attach by name;
//! `eventfd.rs` and `sys.rs` safe wrappers of C APIs that 7.3 has no Rust
//! abstraction for. `k2u_sample_producer.c` builds the C module's sample
//! producer beside this module.
//!
//! Lifetime: a channel is an `Arc<Channel>`. The default channel's
//! references are the module's, the hooks' and the queued work's; a
//! created channel's are its file's (`K2uFile::chan`), the registry's, the
//! hooks' and the work's. The file's release stops it (`shutdown()`:
//! timer cancelled, eventfds unhooked, its own workqueue drained), takes it
//! out of the registry and drops the last reference, which frees it. A
//! producer's channel is held by the producer's handle and the registry,
//! and by each file attached to it (its listener's, and one an exited
//! listener left behind); the last of the producer and those files ends
//! it (see `producer.rs`).
//!
//! Locking, as in C, per channel: `Channel::inner` (a mutex) guards the state. The eventfd
//! wake-up callbacks run under the eventfd's wait-queue spinlock, so they
//! never take the mutex: the efd2 callback consumes the acks and decides,
//! under `Channel::ack` (a spinlock that also holds the outstanding round),
//! which round they close; the EPOLLHUP callbacks set `Channel::hup`; both
//! queue a work item that does the rest under the mutex. The timer
//! callback only queues work. Lock order: the module's parameter lock
//! (held by the sysfs parameter callbacks), then the mutex, then an
//! eventfd's wait-queue lock, then `Channel::ack`. Around it: a file's
//! `create_lock`, then `Device::registry`, then a channel's mutex (CREATE,
//! and the listing under the parameter lock); the file's channel slot, a
//! channel's `listener` copy, a producer channel's owner and the refusal
//! rate limit are leaf spinlocks
//! (mmap takes them under the mm lock, which `read()` and
//! `K2U_IOC_READ_BUFFER` take under a channel's mutex). The `DEVICE` lock
//! that publishes the state is only held to take a reference.

use kernel::{
    bindings,
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

#[path = "../../abi/src/defs.rs"]
pub mod abi;

mod channel;
mod cmd;
mod device;
mod eventfd;
mod link;
mod memory;
mod params;
mod producer;
mod ring;
mod round;
mod state;
mod stats;
mod sys;

module! {
    type: Kern2usr,
    name: "kern2usr",
    authors: ["kern2usr developers"],
    description: "Kernel to userspace buffer hand-off over eventfds and mmap",
    license: "GPL",
}

// `module!` and the misc device need literals: they are the ABI's names.
const _: () = assert!(sys::str_eq(abi::MODULE_NAME, "kern2usr"));
const _: () = assert!(sys::str_eq(abi::DEVICE_NAME, "kern2usr"));

/// The module: the misc device and the state it serves.
#[pin_data(PinnedDrop)]
struct Kern2usr {
    /// Declared first, dropped first after `PinnedDrop::drop`.
    #[pin]
    miscdev: MiscDeviceRegistration<device::K2uFile>,
    dev: state::Published,
}

impl kernel::InPlaceModule for Kern2usr {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_info!("module started...\n");
        // Fields are initialised in this order: the device node comes last,
        // once everything it serves exists.
        try_pin_init!(Self {
            dev: state::Published::new(state::Device::new()?),
            miscdev <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c"kern2usr",
            }),
        })
        .pin_chain(|_| {
            pr_info!(
                "Char dev with Major = {} was created\n",
                bindings::MISC_MAJOR
            );
            pr_info!("Buffer allocated\n");
            pr_info!("Work queue created.\n");
            Ok(())
        })
    }
}

#[pinned_drop]
impl PinnedDrop for Kern2usr {
    fn drop(self: Pin<&mut Self>) {
        // No file is open (each holds a module reference): stop the timer,
        // unhook the eventfds, drain the work. The device node and the
        // memory go with the fields.
        self.dev.shutdown();
        pr_info!("module unloaded\n");
    }
}
