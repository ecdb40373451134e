// SPDX-License-Identifier: GPL-2.0-only

//! The link to the listener: its two eventfds, how codes reach it, how its
//! acknowledgements come back.
//!
//! A [`Hook`] sits on each eventfd's wait queue. Its callback runs under the
//! eventfd's wait-queue lock: it only records what happened and queues work;
//! the work runs under the mutex. Queue mode: efd is a doorbell (+1 per
//! event) and the codes are read from the device as [`Event`] records.

use kernel::{
    fs::LocalFile,
    iov::IovIterDest,
    prelude::*,
    sync::{atomic::Release, Arc},
    time::{Instant, Monotonic},
    transmute::AsBytes,
    workqueue::WorkItem,
};

use crate::abi::{Code, Event};
use crate::eventfd::{EventFd, EventFdFile, Hook, LockedEventFd, WakeHandler, EPOLLHUP, EPOLLIN};
use crate::state::{Locked, Shared, ACK_WORK, HUP_WORK, QUEUE_LEN};

/// Bytes of one event record.
const EVENT_SIZE: usize = size_of::<Event>();

/// The attached listener's eventfds, hooked. Dropping it unhooks both and
/// drops the context references.
pub(crate) struct Link {
    /// kernel -> user: the doorbell.
    efd: Pin<KBox<Hook<Waker>>>,
    /// user -> kernel: the acknowledgements.
    efd2: Pin<KBox<Hook<Waker>>>,
}

impl Link {
    pub(crate) fn efd(&self) -> &EventFd {
        self.efd.eventfd()
    }

    pub(crate) fn efd2(&self) -> &EventFd {
        self.efd2.eventfd()
    }
}

/// Which eventfd a [`Waker`] watches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// efd: only its closing matters (EPOLLHUP).
    Doorbell,
    /// efd2: the listener writes 7 to acknowledge a round.
    Ack,
}

/// The wake-up handler of both eventfds. It holds a device reference, so the
/// device outlives the hook (the reference goes in `detach()`, under the
/// mutex, never the last one).
pub(crate) struct Waker {
    dev: Arc<Shared>,
    role: Role,
}

impl WakeHandler for Waker {
    fn wake(&self, efd: &LockedEventFd<'_>, events: u32) {
        let dev = &self.dev;
        if self.role == Role::Ack && events & EPOLLIN != 0 {
            // Consume the acknowledgement right here and timestamp it.
            let now = Instant::<Monotonic>::now();
            let value = efd.take_count();
            {
                let mut ack = dev.ack.lock();
                if ack.value == 0 {
                    ack.at = Some(now);
                }
                ack.value = ack.value.wrapping_add(value);
            }
            let _ = dev.wq.enqueue::<Arc<Shared>, ACK_WORK>(dev.clone());
        }
        if events & EPOLLHUP != 0 {
            dev.hup.store(true, Release);
            let _ = dev.wq.enqueue::<Arc<Shared>, HUP_WORK>(dev.clone());
        }
    }
}

impl WorkItem<ACK_WORK> for Shared {
    type Pointer = Arc<Self>;

    fn run(this: Arc<Self>) {
        let (value, at) = {
            let mut ack = this.ack.lock();
            (core::mem::take(&mut ack.value), ack.at)
        };
        let Some(at) = at.filter(|_| value != 0) else {
            return;
        };
        let mut k = Locked::new(&this);
        if k.link.is_some() {
            let _ = k.round_ack(value, at);
        }
    }
}

impl WorkItem<HUP_WORK> for Shared {
    type Pointer = Arc<Self>;

    fn run(this: Arc<Self>) {
        let mut k = Locked::new(&this);
        if k.link.is_some() && this.hup.xchg(false, Release) {
            k.detach();
            pr_info!("listener closed its eventfd: detached\n");
        }
    }
}

impl Locked<'_> {
    /// Attaches the listener's eventfds. Both contexts are taken before
    /// anything changes, so a failure there leaves the previous listener
    /// attached; `EINVAL` if they are one eventfd.
    pub(crate) fn attach(&mut self, efd: EventFdFile<'_>, efd2: EventFdFile<'_>) -> Result {
        if efd.same_eventfd(&efd2) {
            return Err(EINVAL);
        }
        self.detach();
        let dev = self.dev;
        dev.hup.store(false, Release);
        let waker = |role| Waker {
            dev: dev.clone(),
            role,
        };
        let efd = Hook::install(efd, waker(Role::Doorbell))?;
        let efd2 = Hook::install(efd2, waker(Role::Ack))?;
        self.link = Some(Link { efd, efd2 });
        self.next_seq = 1;
        Ok(())
    }

    /// [`Self::attach`] for two files of the caller (`K2U_IOC_REGISTER`).
    pub(crate) fn attach_files(&mut self, efd: &LocalFile, efd2: &LocalFile) -> Result {
        let efd = EventFdFile::new(efd)?;
        let efd2 = EventFdFile::new(efd2)?;
        self.attach(efd, efd2)
    }

    /// Forgets the listener: stops the test, unhooks, drops pending events.
    pub(crate) fn detach(&mut self) {
        if self.link.is_none() {
            return;
        }
        self.round_stop();
        self.link = None;
        self.mmap_sent = false;
        self.exit_sent = false;
        self.ring_head = 0;
        self.ring_count = 0;
        self.dev.readq.notify_all();
    }

    pub(crate) fn has_room(&self) -> bool {
        self.ring_count < QUEUE_LEN
    }

    /// Queues a code for the listener and rings efd. Callers check
    /// [`Self::has_room`] first, before they change any state, so a full
    /// queue refuses a command whole.
    pub(crate) fn post(&mut self, code: Code) {
        // (C warns here; `warn_on!` would make every out-of-tree build of
        // this module regenerate files in the kernel tree, see Kbuild.)
        if !self.has_room() {
            return;
        }
        let tail = (self.ring_head + self.ring_count) % QUEUE_LEN;
        let seq = self.next_seq;
        let Some(slot) = self.ring.get_mut(tail) else {
            return;
        };
        *slot = Event {
            seq,
            code: code.value(),
            round: 0,
        };
        self.next_seq = seq.wrapping_add(1);
        self.ring_count += 1;
        // The counter is a doorbell; the record carries the code.
        if let Some(link) = &self.link {
            link.efd().signal();
        }
        self.dev.readq.notify_all();
    }
}

/// `read()`: hands out records, oldest first; blocks for the first one
/// unless `nonblock`.
pub(crate) fn read_events(
    dev: &Arc<Shared>,
    iov: &mut IovIterDest<'_>,
    nonblock: bool,
) -> Result<usize> {
    if iov.len() < EVENT_SIZE {
        return Err(EINVAL);
    }
    let mut k = Locked::new(dev);
    while k.ring_count == 0 {
        if nonblock {
            return Err(EAGAIN);
        }
        if k.wait_readable() {
            return Err(ERESTARTSYS);
        }
        if k.dead {
            return Err(ENODEV);
        }
    }
    let mut done = 0;
    while k.ring_count != 0 && iov.len() >= EVENT_SIZE {
        let Some(event) = k.ring.get(k.ring_head).copied() else {
            break;
        };
        // A record leaves the ring only once it reached the reader.
        if iov.copy_to_iter(event.as_bytes()) < EVENT_SIZE {
            if done == 0 {
                return Err(EFAULT);
            }
            break;
        }
        k.ring_head = (k.ring_head + 1) % QUEUE_LEN;
        k.ring_count -= 1;
        done += EVENT_SIZE;
    }
    Ok(done)
}
