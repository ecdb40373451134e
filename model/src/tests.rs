//! Unit tests of the model: the protocol's stories, one per test.

use super::*;

const L: Pid = 100;

/// A loaded module and a listener process `L` with eventfds at fds 3 and 4.
fn world(mode: Mode) -> (Model, EfdId, EfdId) {
    let mut m = Model::new(mode, false);
    assert_eq!(m.insmod(), Ok(()));
    m.spawn(L);
    let efd = m.new_eventfd(L, 3);
    let efd2 = m.new_eventfd(L, 4);
    (m, efd, efd2)
}

fn w(m: &mut Model, name: &str, text: &str) -> Result<(), Errno> {
    m.param_write(name, format!("{text}\n").as_bytes())
}

fn cmd(m: &mut Model, c: u32) -> Result<(), Errno> {
    w(m, param::CUR_CMD, &c.to_string())
}

fn find(m: &mut Model, pid: Pid, fd1: i32, fd2: i32) -> Result<(), Errno> {
    w(m, param::USR_PID, &pid.to_string())?;
    w(m, param::USR_EFD, &fd1.to_string())?;
    w(m, param::USR_EFD2, &fd2.to_string())?;
    cmd(m, 1)
}

/// Codes the listener reads from efd (counter mode) until it is empty.
fn drain_counter(m: &mut Model, efd: EfdId) -> Vec<u64> {
    std::iter::from_fn(|| m.efd_read(efd)).collect()
}

/// Records the listener reads (queue mode) until EAGAIN.
fn drain_records(m: &mut Model) -> Vec<(u64, u32, u32)> {
    let mut out = Vec::new();
    while let Ok(evs) = m.read_records(64 * 16) {
        out.extend(evs.iter().map(|e| (e.seq, e.code, e.round)));
    }
    out
}

#[test]
fn the_seed_walkthrough_in_counter_mode() {
    let (mut m, efd, efd2) = world(Mode::Counter);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(drain_counter(&mut m, efd), [2]);
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert_eq!(m.publish(), Ok(()));
    assert_eq!(m.ready_seq(), 1);
    // 3 then 6: one code per read, never 9.
    assert_eq!(drain_counter(&mut m, efd), [3, 6]);
    let out = m.efd_write(efd2, 7);
    assert_eq!(out.closed, 1);
    assert_eq!(m.counted(), 1);
    assert_eq!(m.publish(), Ok(()));
    assert!(m.publish().is_err(), "one round outstanding at a time");
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert_eq!(cmd(&mut m, 5), Ok(()));
    assert_eq!(drain_counter(&mut m, efd), [6, 4, 5]);
    // The round of the 6 read after STOP was abandoned: the ack is late.
    assert_eq!(m.efd_write(efd2, 7).late, 1);
    assert_eq!(m.counted(), 1);
    assert_eq!(
        m.param_read(param::CUR_CMD),
        Ok(ParamText::Exact("5\n".into()))
    );
}

#[test]
fn queue_mode_records_have_seq_and_round() {
    let (mut m, efd, _) = world(Mode::Queue);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert_eq!(m.publish(), Ok(()));
    // The doorbell counts the events; the records carry the codes.
    assert_eq!(m.efd_read(efd), Some(3));
    assert_eq!(drain_records(&mut m), [(1, 2, 0), (2, 3, 0), (3, 6, 1)]);
    assert_eq!(m.read_records(16), Err(Errno::EAGAIN));
    assert_eq!(m.read_records(15), Err(Errno::EINVAL));
    assert_eq!(m.ioctl_ack_round(2), Err(Errno::ESTALE));
    assert_eq!(m.ioctl_ack_round(1), Ok(()));
    assert_eq!(m.ioctl_ack_round(1), Err(Errno::EPROTO));
}

#[test]
fn counter_mode_device_read_is_einval() {
    let (mut m, _, _) = world(Mode::Counter);
    assert_eq!(m.read_records(16), Err(Errno::EINVAL));
}

#[test]
fn re_find_keeps_a_pending_code() {
    // Issue 7 5a: a re-FIND of the same eventfds must not eat the 2.
    let (mut m, efd, _) = world(Mode::Counter);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(cmd(&mut m, 1), Ok(()));
    assert!(m.mmap_sent());
    assert_eq!(drain_counter(&mut m, efd), [2]);
    // A dup of efd is the same eventfd: still a re-attach.
    m.dup_fd(L, 3, 7);
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert_eq!(find(&mut m, L, 7, 4), Ok(()));
    assert_eq!(drain_counter(&mut m, efd), [3, 4]);
}

#[test]
fn replacing_a_listener_with_undelivered_events_is_ebusy() {
    let (mut m, efd, _) = world(Mode::Queue);
    let other = m.new_eventfd(L, 5);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(find(&mut m, L, 5, 4), Err(Errno::EBUSY));
    assert_eq!(m.listener().map(|l| l.efd), Some(efd));
    drain_records(&mut m);
    assert_eq!(find(&mut m, L, 5, 4), Ok(()));
    assert_eq!(m.listener().map(|l| l.efd), Some(other));
    assert!(!m.mmap_sent(), "a new listener starts over");
    // The old efd keeps its doorbell count: never touched.
    assert_eq!(m.efd_counter(efd), 1);
}

#[test]
fn counter_mode_refuses_an_efd_with_a_count() {
    let (mut m, efd, _) = world(Mode::Counter);
    m.efd_write(efd, 1);
    assert_eq!(find(&mut m, L, 3, 4), Err(Errno::EINVAL));
    assert_eq!(m.efd_read(efd), Some(1));
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    // Queue mode does not care.
    let (mut q, efd, _) = world(Mode::Queue);
    q.efd_write(efd, 1);
    assert_eq!(find(&mut q, L, 3, 4), Ok(()));
}

#[test]
fn late_acks_never_close_a_later_round() {
    // Issue 7 5b: an ack after STOP, or before the next round is shown.
    let (mut m, _, efd2) = world(Mode::Queue);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert_eq!(m.publish(), Ok(()));
    drain_records(&mut m);
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    // Round 1 was shown and abandoned: it keeps the buffer lent.
    assert!(m.publish().is_err());
    // The listener answers it now: late, and the buffer is returned.
    let out = m.efd_write(efd2, 7);
    assert_eq!((out.closed, out.late), (0, 1));
    assert_eq!(m.publish(), Ok(()));
    // An ack before round 2 is shown belongs to an older round: late.
    let out = m.efd_write(efd2, 7);
    assert_eq!((out.closed, out.late), (0, 1));
    assert_eq!(m.ioctl_ack(), Err(Errno::ESTALE));
    assert_eq!(m.counted(), 0);
    drain_records(&mut m);
    // Two acks at once: the first closes, the second is late.
    let out = m.efd_write(efd2, 14);
    assert_eq!((out.closed, out.late), (1, 1));
    assert_eq!(m.counted(), 1);
    // A value that is no multiple of 7 is ignored whole.
    assert_eq!(m.publish(), Ok(()));
    drain_records(&mut m);
    assert!(m.efd_write(efd2, 8).unexpected);
    assert_eq!(m.counted(), 1);
    assert_eq!(m.ioctl_ack(), Ok(()));
    assert_eq!(m.counted(), 2);
}

#[test]
fn stop_and_exit_are_possible_on_a_full_queue() {
    // Issue 7 5c: a listener that never drains its records.
    let (mut m, _, _) = world(Mode::Queue);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    let mut sent = 0;
    while cmd(&mut m, 2) == Ok(()) {
        sent += 1;
    }
    assert_eq!(sent, EVENT_QUEUE_LEN - EVENT_QUEUE_RESERVE);
    assert_eq!(cmd(&mut m, 2), Err(Errno::EAGAIN));
    assert!(m.last_error_set());
    assert_eq!(cmd(&mut m, 3), Err(Errno::EAGAIN));
    assert_eq!(cmd(&mut m, 4), Err(Errno::EPROTO));
    assert_eq!(cmd(&mut m, 5), Ok(()));
    assert!(!m.last_error_set());
    assert_eq!(m.queue().len() as u32, EVENT_QUEUE_LEN - 1);

    // With a test running: rounds stop at the reserve, STOP then EXIT fit.
    let (mut m, _, _) = world(Mode::Queue);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    for _ in 0..EVENT_QUEUE_LEN - EVENT_QUEUE_RESERVE - 2 {
        assert_eq!(cmd(&mut m, 2), Ok(()));
    }
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert_eq!(m.publish(), Ok(()));
    assert_eq!(m.ioctl_ack_round(1), Ok(()));
    assert!(!m.can_publish(), "a MEMORY_READY may not take the reserve");
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert_eq!(cmd(&mut m, 5), Ok(()));
    assert_eq!(m.queue().len() as u32, EVENT_QUEUE_LEN);
    assert_eq!(cmd(&mut m, 5), Err(Errno::EPROTO));
}

#[test]
fn adaptive_mode_skips_the_doorbell_and_shows_the_round() {
    let (mut m, _, efd2) = world(Mode::Queue);
    assert_eq!(w(&mut m, param::ADAPTIVE, "1"), Ok(()));
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    drain_records(&mut m);
    m.set_spinning(true);
    assert_eq!(m.publish(), Ok(()));
    assert_eq!(m.doorbells_skipped(), 1);
    assert!(m.queue().is_empty());
    assert_eq!(m.efd_write(efd2, 7).closed, 1);
    assert_eq!(w(&mut m, param::ADAPTIVE, "0"), Err(Errno::EBUSY));
}

#[test]
fn a_closed_eventfd_detaches_and_a_fork_keeps_it_open() {
    let (mut m, efd, _) = world(Mode::Queue);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    m.fork(L, 101);
    m.close_fd(L, 3);
    assert!(!m.efd_released(efd), "the child still holds efd");
    assert!(!m.can_detach_async());
    // The listener dies; its child holds the eventfds: the next command
    // detaches (the process is the listener, not its fds).
    m.exit(L);
    assert_eq!(cmd(&mut m, 2), Err(Errno::EPROTO));
    assert!(m.listener().is_none());
    // FIND naming the child's fds attaches the child.
    assert_eq!(find(&mut m, 101, 3, 4), Ok(()));
    m.exit(101);
    assert!(m.can_detach_async());
    assert_eq!(m.detach_async(), Ok(()));
}

#[test]
fn a_dead_listener_is_detached_by_a_round_while_testing() {
    let (mut m, _, _) = world(Mode::Counter);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    m.fork(L, 101);
    m.exit(L);
    assert!(!m.can_publish());
    assert!(m.can_detach_async());
    assert_eq!(m.ioctl_ack(), Err(Errno::EPROTO));
    assert!(!m.testing());
}

#[test]
fn register_attaches_the_caller_and_updates_the_parameters() {
    let (mut m, _, _) = world(Mode::Queue);
    assert_eq!(m.open_device(L, 5), Ok(()));
    assert_eq!(m.ioctl_register(L, 3, 9), Err(Errno::EBADF));
    assert_eq!(m.ioctl_register(L, 3, 5), Err(Errno::EINVAL));
    assert_eq!(m.ioctl_register(L, 3, 4), Ok(()));
    assert_eq!(
        m.param_read(param::USR_PID),
        Ok(ParamText::Exact(format!("{L}\n")))
    );
    assert_eq!(
        m.param_read(param::USR_EFD2),
        Ok(ParamText::Exact("4\n".into()))
    );
    assert!(!m.last_error_set(), "ioctls never touch last_error");
}

#[test]
fn find_refusals_in_order() {
    let (mut m, _, _) = world(Mode::Queue);
    m.open_other(L, 5);
    assert_eq!(cmd(&mut m, 1), Err(Errno::EINVAL));
    assert_eq!(find(&mut m, L, 3, 3), Err(Errno::EINVAL));
    assert_eq!(find(&mut m, 99999, 3, 4), Err(Errno::ESRCH));
    assert_eq!(find(&mut m, L, 3, 9), Err(Errno::EBADF));
    assert_eq!(find(&mut m, L, 3, 5), Err(Errno::EINVAL));
    m.dup_fd(L, 3, 6);
    assert_eq!(find(&mut m, L, 3, 6), Err(Errno::EINVAL));
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
}

#[test]
fn parameter_writes() {
    let (mut m, _, _) = world(Mode::Queue);
    assert_eq!(m.param_write(param::PERIOD_MS, b""), Ok(()));
    assert_eq!(m.param_write(param::PERIOD_MS, b"0x10\n"), Ok(()));
    assert_eq!(m.period_ms(), 16);
    assert_eq!(m.param_write(param::PERIOD_MS, b" 5"), Err(Errno::EINVAL));
    assert_eq!(
        m.param_write(param::PERIOD_MS, b"60001"),
        Err(Errno::EINVAL)
    );
    assert_eq!(m.param_write(param::PERIOD_MS, b"0"), Err(Errno::EINVAL));
    assert_eq!(m.param_write(param::PERIOD_MS, b"9\0junk"), Ok(()));
    assert_eq!(m.period_ms(), 9);
    assert_eq!(m.param_write(param::USR_PID, b"-1"), Err(Errno::EINVAL));
    assert_eq!(m.param_write(param::USR_EFD, b"-0"), Ok(()));
    assert_eq!(m.param_write(param::USR_EFD, b"-1"), Err(Errno::EINVAL));
    assert_eq!(m.param_write(param::BACK_TO_BACK, b"yes"), Ok(()));
    assert!(m.back_to_back());
    assert_eq!(
        m.param_write(param::BACK_TO_BACK, b"maybe"),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        m.param_write(param::EVENT_MODE, b"queue"),
        Err(Errno::EACCES)
    );
    // Parameter writes never touch last_error; cur_cmd refusals do.
    assert!(!m.last_error_set());
    assert_eq!(m.param_write(param::CUR_CMD, b" 1"), Err(Errno::EINVAL));
    assert!(m.last_error_set());
    assert_eq!(m.param_read(param::LAST_ERROR), Ok(ParamText::NonEmpty));
    assert_eq!(m.param_write(param::CUR_CMD, b"+0x1"), Err(Errno::EINVAL));
    assert_eq!(m.param_write(param::CUR_CMD, b""), Ok(()));
}

#[test]
fn mmap_variants() {
    let (mut m, _, _) = world(Mode::Queue);
    let req = |len, offset, shared, write| MmapReq {
        len,
        offset,
        shared,
        write,
        exec: false,
    };
    assert_eq!(m.mmap(L, req(4096, 0, true, true)), Ok(()));
    assert_eq!(
        m.mmap(L, req(100, 0, false, true)),
        Ok(()),
        "the seed's MAP_PRIVATE"
    );
    assert_eq!(m.mmap(L, req(4097, 0, true, false)), Err(Errno::EINVAL));
    assert_eq!(m.mmap(L, req(4096, 4096, true, false)), Err(Errno::EINVAL));
    assert_eq!(m.mmap(L, req(4096, CTRL_MMAP_OFFSET, true, true)), Ok(()));
    assert_eq!(
        m.mmap(L, req(4096, CTRL_MMAP_OFFSET, false, false)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        m.mmap(L, req(8192, CTRL_MMAP_OFFSET, true, false)),
        Err(Errno::EINVAL)
    );
    assert_eq!(m.mmap(L, req(0, 0, true, false)), Err(Errno::EINVAL));
    assert_eq!(m.proc(L).map(|p| p.mappings), Some(3));
    assert_eq!(m.rmmod(), Err(Errno::EAGAIN));
    m.exit(L);
    assert_eq!(m.rmmod(), Ok(()));
    assert_eq!(m.param_write(param::CUR_CMD, b"1"), Err(Errno::ENOENT));
    assert_eq!(m.insmod(), Ok(()));
    assert_eq!(m.ready_seq(), 0);
}

#[test]
fn rmmod_detaches_and_insmod_starts_over() {
    let (mut m, efd, _) = world(Mode::Counter);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(m.rmmod(), Ok(()));
    // The code stays in the old efd.
    assert_eq!(m.efd_counter(efd), 2);
    assert_eq!(m.insmod(), Ok(()));
    assert_eq!(
        m.param_read(param::USR_EFD),
        Ok(ParamText::Exact("-1\n".into()))
    );
    assert_eq!(
        find(&mut m, L, 3, 4),
        Err(Errno::EINVAL),
        "efd still holds 2"
    );
}

#[test]
fn only_the_end_of_a_listener_counts_as_a_detach_line() {
    let (mut m, _, _) = world(Mode::Queue);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    // A new FIND of other eventfds replaces the listener silently.
    let _ = m.new_eventfd(L, 5);
    let _ = m.new_eventfd(L, 6);
    assert_eq!(find(&mut m, L, 5, 6), Ok(()));
    assert_eq!(m.detach_lines(), 0);
    // A closed eventfd: the EPOLLHUP work logs one line.
    m.close_fd(L, 5);
    assert_eq!(m.detach_async(), Ok(()));
    assert_eq!(m.detach_lines(), 1);
    assert!(m.detach_async().is_err(), "nothing left to detach");
    // A dead listener found by the next command: one line.
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    m.exit(L);
    assert_eq!(cmd(&mut m, 2), Err(Errno::EPROTO));
    assert_eq!(m.detach_lines(), 2);
    // rmmod detaches without such a line.
    m.spawn(102);
    let _ = m.new_eventfd(102, 3);
    let _ = m.new_eventfd(102, 4);
    assert_eq!(find(&mut m, 102, 3, 4), Ok(()));
    assert_eq!(m.rmmod(), Ok(()));
    assert!(m.listener().is_none());
    assert_eq!(m.detach_lines(), 2);
    // The count is the log's: a new module keeps it.
    assert_eq!(m.insmod(), Ok(()));
    assert_eq!(m.detach_lines(), 2);
}

/// A listener attached, MMAP and START delivered, round 1 published.
fn round_one(mode: Mode) -> (Model, EfdId, EfdId) {
    let (mut m, efd, efd2) = world(mode);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert_eq!(m.publish(), Ok(()));
    (m, efd, efd2)
}

#[test]
fn a_shown_round_stays_lent_across_stop_and_start() {
    let (mut m, _, efd2) = round_one(Mode::Queue);
    assert_eq!(drain_records(&mut m), [(1, 2, 0), (2, 3, 0), (3, 6, 1)]);
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert_eq!(m.round(), None, "STOP abandons the round");
    assert_eq!(m.lent(), Some(Round { id: 1, shown: true }));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert_eq!(m.lent().map(|r| r.id), Some(1), "START keeps the lend");
    assert!(!m.can_publish(), "no fill while the buffer is lent");
    // An ack by another id does not return it.
    assert_eq!(m.ioctl_ack_round(2), Err(Errno::EPROTO));
    assert!(m.lent().is_some());
    // A value that is no multiple of 7 does not either.
    assert!(m.efd_write(efd2, 8).unexpected);
    assert!(m.lent().is_some());
    // The plain ack of the shown round does; it counts nothing.
    assert_eq!(m.ioctl_ack(), Err(Errno::EPROTO));
    assert_eq!(m.lent(), None);
    assert_eq!(m.counted(), 0);
    assert_eq!(m.publish(), Ok(()));
    assert_eq!(drain_records(&mut m), [(4, 4, 0), (5, 3, 0), (6, 6, 2)]);
    assert_eq!(m.ioctl_ack_round(2), Ok(()));
    assert_eq!(m.counted(), 1);
}

#[test]
fn an_ack_by_id_returns_the_lent_buffer_shown_or_not() {
    let (mut m, _, _) = round_one(Mode::Queue);
    // STOP before the listener read round 1's record: still lent.
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert_eq!(
        m.lent(),
        Some(Round {
            id: 1,
            shown: false
        })
    );
    assert!(!m.can_publish());
    // A plain ack cannot name it before it is shown.
    assert_eq!(m.ioctl_ack(), Err(Errno::EPROTO));
    assert!(m.lent().is_some());
    assert_eq!(m.ioctl_ack_round(1), Err(Errno::EPROTO));
    assert_eq!(m.lent(), None);
    assert!(m.can_publish());
}

#[test]
fn an_abandoned_round_read_after_stop_is_lent_until_its_ack() {
    // Counter mode: the 6 of round 1 is still in efd when STOP comes; the
    // listener reads it later and may look at the buffer then.
    let (mut m, efd, efd2) = round_one(Mode::Counter);
    assert_eq!(m.efd_read(efd), Some(2));
    assert_eq!(m.efd_read(efd), Some(3));
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    // Not shown yet: a 7 is late and returns nothing.
    assert_eq!(m.efd_write(efd2, 7).late, 1);
    assert!(m.lent().is_some());
    assert_eq!(drain_counter(&mut m, efd), [6, 4, 3]);
    assert_eq!(m.lent(), Some(Round { id: 1, shown: true }));
    assert!(!m.can_publish());
    let out = m.efd_write(efd2, 7);
    assert_eq!((out.closed, out.late), (0, 1));
    assert_eq!(m.lent(), None);
    assert_eq!(m.publish(), Ok(()));
    assert_eq!(drain_counter(&mut m, efd), [6]);
    assert_eq!(m.efd_write(efd2, 7).closed, 1);
    assert_eq!(m.counted(), 1);
}

#[test]
fn adaptive_rounds_are_lent_from_their_publish() {
    let (mut m, _, efd2) = world(Mode::Queue);
    assert_eq!(w(&mut m, param::ADAPTIVE, "1"), Ok(()));
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    m.set_spinning(true);
    assert_eq!(m.publish(), Ok(()));
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert!(!m.can_publish());
    // Shown at its publish: a plain 7 returns it.
    assert_eq!(m.efd_write(efd2, 7).late, 1);
    assert!(m.can_publish());
}

#[test]
fn a_detach_ends_the_lend() {
    // The listener's death.
    let (mut m, _, _) = round_one(Mode::Queue);
    drain_records(&mut m);
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert!(m.lent().is_some());
    m.exit(L);
    assert_eq!(cmd(&mut m, 3), Err(Errno::EPROTO));
    assert_eq!(m.lent(), None);

    // EXIT keeps the lend until the listener closes its eventfds.
    let (mut m, _, _) = round_one(Mode::Queue);
    drain_records(&mut m);
    assert_eq!(cmd(&mut m, 5), Ok(()));
    assert!(m.lent().is_some());
    m.close_fd(L, 3);
    assert!(m.can_detach_async());
    assert_eq!(m.detach_async(), Ok(()));
    assert_eq!(m.lent(), None);

    // A re-attach with the same eventfds keeps it; other eventfds end it.
    let (mut m, _, _) = round_one(Mode::Queue);
    drain_records(&mut m);
    assert_eq!(cmd(&mut m, 4), Ok(()));
    drain_records(&mut m);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    assert!(m.lent().is_some());
    m.new_eventfd(L, 5);
    m.new_eventfd(L, 6);
    assert_eq!(find(&mut m, L, 5, 6), Ok(()));
    assert_eq!(m.lent(), None);

    // rmmod (after the device is closed) ends everything.
    let (mut m, _, _) = round_one(Mode::Queue);
    assert_eq!(cmd(&mut m, 4), Ok(()));
    assert_eq!(m.rmmod(), Ok(()));
    assert_eq!(m.insmod(), Ok(()));
    assert_eq!(m.lent(), None);
}
