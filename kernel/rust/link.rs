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
    transmute::AsBytes,
    workqueue::WorkItem,
};

use crate::abi::{self, Code, Event};
use crate::eventfd::{
    EventFd, EventFdFile, Hook, LockedEventFd, Unhook, WakeHandler, EPOLLHUP, EPOLLIN,
};
use crate::state::{Channel, Locked, ACK_WORK, HUP_WORK, QUEUE_LEN};
use crate::sys::PidRef;

/// Bytes of one event record.
const EVENT_SIZE: usize = size_of::<Event>();
/// Reads of efd2 per wake-up (C's `K2U_EFD2_READS`).
const EFD2_READS: usize = 64;

/// The attached listener: its process and its two eventfds, hooked.
/// Dropping it unhooks both and drops the references.
pub(crate) struct Link {
    /// kernel -> user: the doorbell. Unhooking leaves its counter alone.
    efd: Pin<KBox<Hook<Waker>>>,
    /// user -> kernel: the acknowledgements.
    efd2: Pin<KBox<Hook<Waker>>>,
    /// The listener's thread group, to notice when it has exited.
    pid: PidRef,
    /// Its number, for the log (`usr_pid` or the registering process).
    pid_nr: i32,
}

impl Link {
    pub(crate) fn efd(&self) -> &EventFd {
        self.efd.eventfd()
    }

    pub(crate) fn efd2(&self) -> &EventFd {
        self.efd2.eventfd()
    }

    /// Whether the listener process has exited.
    pub(crate) fn exited(&self) -> bool {
        self.pid.exited()
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
    dev: Arc<Channel>,
    role: Role,
}

impl WakeHandler for Waker {
    fn wake(&self, efd: &LockedEventFd<'_>, events: u32) {
        let dev = &self.dev;
        if self.role == Role::Ack && events & EPOLLIN != 0 {
            // Consume the acks right here and decide, under the ack lock,
            // which round they close: a round published after this cannot
            // be closed by them, and the time is taken now. Every wake-up
            // looks at `ack_seq` first (page acks; a ring's only acks):
            // nothing here sleeps, the control page is read in place.
            let value = {
                let mut ack = dev.ack.lock();
                ack.look(dev.mem.ctrl.ack_seq());
                // A plain eventfd gives its whole count at once, an
                // EFD_SEMAPHORE one 1 per read: read a bounded number of
                // times.
                let mut value = 0u64;
                for _ in 0..EFD2_READS {
                    let part = efd.take_count();
                    if part == 0 {
                        break;
                    }
                    value = value.saturating_add(part);
                }
                if value != 0 {
                    ack.efd2_value(value);
                }
                value
            };
            if value != 0 {
                let _ = dev.wq.enqueue::<Arc<Channel>, ACK_WORK>(dev.clone());
            }
        }
        if events & EPOLLHUP != 0 {
            dev.hup.store(true, Release);
            let _ = dev.wq.enqueue::<Arc<Channel>, HUP_WORK>(dev.clone());
        }
    }
}

impl WorkItem<ACK_WORK> for Channel {
    type Pointer = Arc<Self>;

    fn run(this: Arc<Self>) {
        let mut k = Locked::new(&this);
        if k.link.is_some() {
            // (A ring's: back to back, wakes its producer if the acks
            // made room.)
            k.round_collect();
        }
    }
}

impl WorkItem<HUP_WORK> for Channel {
    type Pointer = Arc<Self>;

    fn run(this: Arc<Self>) {
        let mut k = Locked::new(&this);
        if k.link.is_some() && this.hup.xchg(false, Release) {
            k.detach();
            pr_info!("{}listener closed its eventfd: detached\n", this.tag());
        }
    }
}

/// Why [`Locked::attach`] refused.
pub(crate) enum AttachError {
    /// efd (`false`) or efd2 (`true`) is no eventfd.
    NotEventFd(bool),
    /// efd and efd2 are one eventfd.
    Same,
    /// Another listener (pid, events) still has undelivered events.
    Busy(i32, usize),
    /// Hooking an eventfd failed.
    Hook(Error),
}

impl AttachError {
    /// Refuses with this error: `refuse(errno, reason)`, the reason as C
    /// words it.
    pub(crate) fn refuse(
        &self,
        refuse: impl FnOnce(Error, kernel::fmt::Arguments<'_>) -> Error,
    ) -> Error {
        match self {
            Self::NotEventFd(false) => refuse(EINVAL, fmt!("efd is not an eventfd")),
            Self::NotEventFd(true) => refuse(EINVAL, fmt!("efd2 is not an eventfd")),
            Self::Same => refuse(EINVAL, fmt!("efd and efd2 are the same eventfd")),
            Self::Busy(pid, n) => refuse(
                EBUSY,
                fmt!("listener pid {} still has {} undelivered events", pid, n),
            ),
            Self::Hook(e) => refuse(
                *e,
                fmt!("cannot watch the eventfds (error {})", e.to_errno()),
            ),
        }
    }
}

impl Locked<'_> {
    /// Attaches process `pid` (`pid_nr` in the log) with these eventfds.
    /// The same two eventfds as now keep everything (re-attach); others
    /// replace the listener unless it has undelivered events. Both
    /// contexts are taken before anything changes, so a failure leaves the
    /// previous listener attached.
    pub(crate) fn attach(
        &mut self,
        pid_nr: i32,
        pid: PidRef,
        efd: EventFdFile<'_>,
        efd2: EventFdFile<'_>,
    ) -> Result<(), AttachError> {
        if efd.same_eventfd(&efd2) {
            return Err(AttachError::Same);
        }
        let pending = self.ring_count;
        let exit_sent = self.exit_sent;
        let dev = self.dev;
        if let Some(link) = &mut self.link {
            // After EXIT_TEST the same eventfds attach afresh.
            if !exit_sent && efd.is(link.efd()) && efd2.is(link.efd2()) {
                let old = dev.listener.lock().replace(pid.clone_ref());
                drop(old);
                link.pid = pid;
                link.pid_nr = pid_nr;
                pr_info!(
                    "{}listener pid {} re-attached: {} pending events kept\n",
                    dev.tag(),
                    pid_nr,
                    pending
                );
                return Ok(());
            }
            if pending != 0 {
                return Err(AttachError::Busy(link.pid_nr, pending));
            }
        }
        self.detach();
        dev.hup.store(false, Release);
        let waker = |role| Waker {
            dev: dev.clone(),
            role,
        };
        let efd = Hook::install(efd, waker(Role::Doorbell), Unhook::KeepCount)
            .map_err(AttachError::Hook)?;
        let efd2 =
            Hook::install(efd2, waker(Role::Ack), Unhook::DrainCount).map_err(AttachError::Hook)?;
        let old = dev.listener.lock().replace(pid.clone_ref());
        drop(old);
        self.link = Some(Link {
            efd,
            efd2,
            pid,
            pid_nr,
        });
        self.next_seq = 1;
        // Page acks start afresh: `ack_seq` is `ready_seq` (a ring's
        // slots are all free: the detach returned them).
        {
            let mut ack = dev.ack.lock();
            ack.reset();
            dev.mem.ctrl.attach(ack.published());
        }
        // A note for the seed's client, which only knows the default channel.
        if dev.is_default() {
            pr_info!(
                "queue mode: codes are records read from {}; a client that reads codes from efd \
                 (the 2017 KernUsr) cannot follow them on this kernel\n",
                abi::DEVICE_PATH
            );
        }
        Ok(())
    }

    /// [`Self::attach`] for two files of the caller (`K2U_IOC_REGISTER`).
    pub(crate) fn attach_files(
        &mut self,
        pid_nr: i32,
        pid: PidRef,
        efd: &LocalFile,
        efd2: &LocalFile,
    ) -> Result<(), AttachError> {
        self.listener_gone();
        let efd = EventFdFile::new(efd).map_err(|_| AttachError::NotEventFd(false))?;
        let efd2 = EventFdFile::new(efd2).map_err(|_| AttachError::NotEventFd(true))?;
        self.attach(pid_nr, pid, efd, efd2)
    }

    /// Forgets the listener: stops the test, unhooks, drops pending events.
    pub(crate) fn detach(&mut self) {
        if self.link.is_none() {
            return;
        }
        self.round_stop();
        // A producer's round an ack closed still counts (and its waiter
        // returns 0); an open one is abandoned (its waiter gets ENOTCONN).
        if self.dev.is_producer() {
            self.round_collect();
        }
        self.dev.ack.lock().reset();
        self.dev.prod.ack_wait.notify_all();
        self.link = None;
        // Dropped outside the spinlock (`put_pid()` may free).
        let old = self.dev.listener.lock().take();
        drop(old);
        self.mmap_sent = false;
        self.exit_sent = false;
        self.ring_head = 0;
        self.ring_count = 0;
        // A read() copying records out must not take them off again.
        self.ring_epoch = self.ring_epoch.wrapping_add(1);
        self.dev.readq.notify_all();
    }

    /// Detaches the listener if its process has exited (a child it forked
    /// may still hold the eventfds, so no EPOLLHUP comes). Returns whether
    /// it did.
    pub(crate) fn listener_gone(&mut self) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        if !link.exited() {
            return false;
        }
        let pid_nr = link.pid_nr;
        self.detach();
        pr_info!(
            "{}listener pid {} exited: detached\n",
            self.dev.tag(),
            pid_nr
        );
        true
    }

    /// Whether `code` may be queued: the last `EVENT_QUEUE_RESERVE` slots
    /// are kept for STOP_TEST and EXIT_TEST (STOP_TEST leaves one for
    /// EXIT_TEST), so a listener that never reads can always be stopped.
    pub(crate) fn has_room(&self, code: Code) -> bool {
        let free = QUEUE_LEN.saturating_sub(self.ring_count);
        let reserve = match code {
            Code::ExitTest => 0,
            Code::StopTest => 1,
            _ => abi::EVENT_QUEUE_RESERVE as usize,
        };
        free > reserve
    }

    /// Queues a code for the listener and rings efd; `round` is the round
    /// id's low 32 bits for MEMORY_READY, else 0. Callers check
    /// [`Self::has_room`] first, before they change any state, so a full
    /// queue refuses a command whole.
    pub(crate) fn post(&mut self, code: Code, round: u32) {
        // (C warns here; `warn_on!` would make every out-of-tree build of
        // this module regenerate files in the kernel tree, see Kbuild.)
        if self.ring_count >= QUEUE_LEN {
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
            round,
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

/// Records `read()` copies out per pass, from a batch on the stack.
const READ_BATCH: usize = 16;

/// `read()`: hands out records, oldest first; blocks for the first one
/// unless `nonblock`. The records are copied to the reader with the mutex
/// released (a stalled destination page must not hold up the channel's
/// rounds, acks and commands): a batch is copied out of the ring under the
/// mutex, then to the reader, then taken off the ring under the mutex if
/// the ring was not emptied meanwhile; a record leaves the ring only once
/// it reached the reader. One reader at a time (`Inner::reading`); a
/// non-blocking one does not wait for its turn: EAGAIN.
///
/// `may` says whether the caller may still read (EPERM, logged, if not):
/// it is asked under the mutex before every batch, and a detach (the
/// ring's epoch moves on) wakes a waiting reader to ask it, so a read
/// begun before root attached another process never takes that
/// listener's records.
pub(crate) fn read_events(
    dev: &Arc<Channel>,
    iov: &mut IovIterDest<'_>,
    nonblock: bool,
    may: impl Fn() -> Result,
) -> Result<usize> {
    if iov.len() < EVENT_SIZE {
        return Err(EINVAL);
    }
    let mut seen = Locked::new(dev).ring_epoch;
    loop {
        {
            let mut k = Locked::new(dev);
            while (k.ring_count == 0 && k.ring_epoch == seen) || k.reading {
                if nonblock {
                    return Err(EAGAIN);
                }
                // A producer's destroyed channel: nothing will come (C
                // waits on `ring_count || !live`).
                if k.dead && k.ring_count == 0 && k.ring_epoch == seen {
                    return Err(ENODEV);
                }
                if k.wait_readable() {
                    return Err(ERESTARTSYS);
                }
            }
            k.reading = true;
        }
        let ret = read_batches(dev, iov, &may, &mut seen);
        let mut k = Locked::new(dev);
        k.reading = false;
        // The next reader's turn.
        dev.readq.notify_all();
        match ret {
            // Emptied by a detach before the first record was taken, and
            // the caller may still read: wait on (EAGAIN when
            // non-blocking), as C does; never 0 (EOF).
            Ok(0) => continue,
            other => return other,
        }
    }
}

/// The body of [`read_events`], its turn taken.
/// `seen` is the ring's epoch at the last check of `may`.
fn read_batches(
    dev: &Arc<Channel>,
    iov: &mut IovIterDest<'_>,
    may: &impl Fn() -> Result,
    seen: &mut u64,
) -> Result<usize> {
    let mut done = 0;
    let mut batch = [Event::default(); READ_BATCH];
    while iov.len() >= EVENT_SIZE {
        let (n, epoch) = {
            let k = Locked::new(dev);
            // The caller may have stopped being the listener while it
            // waited (root attached another process): asked again under
            // the mutex, where the listener cannot change.
            *seen = k.ring_epoch;
            if let Err(e) = may() {
                return if done == 0 { Err(e) } else { Ok(done) };
            }
            let n = k.ring_count.min(READ_BATCH).min(iov.len() / EVENT_SIZE);
            for (i, slot) in batch.iter_mut().take(n).enumerate() {
                *slot = k
                    .ring
                    .get((k.ring_head + i) % QUEUE_LEN)
                    .copied()
                    .unwrap_or_default();
            }
            (n, k.ring_epoch)
        };
        if n == 0 {
            break;
        }
        let mut copied = 0;
        for event in batch.iter().take(n) {
            if iov.copy_to_iter(event.as_bytes()) < EVENT_SIZE {
                break;
            }
            copied += 1;
        }
        {
            let mut k = Locked::new(dev);
            if k.ring_epoch == epoch {
                for event in batch.iter().take(copied) {
                    k.ring_head = (k.ring_head + 1) % QUEUE_LEN;
                    k.ring_count -= 1;
                    if event.code == Code::MemoryReady.value() {
                        // The round reached the listener: its 7 may close it now.
                        dev.ack.lock().shown(event.round);
                    }
                }
            }
        }
        done += copied * EVENT_SIZE;
        if copied < n {
            if done == 0 {
                return Err(EFAULT);
            }
            break;
        }
    }
    Ok(done)
}
