//! Unit tests of the channel model.

use super::*;
use crate::{Code, Content};

const OWNER: Pid = 200;
const OTHER: Pid = 201;

fn efds(a: u32) -> (EfdArg, EfdArg) {
    (
        EfdArg::Eventfd {
            object: a,
            count: 0,
        },
        EfdArg::Eventfd {
            object: a + 1,
            count: 0,
        },
    )
}

fn req(size: u64) -> Create {
    Create {
        buffer_size: size,
        ..Create::default()
    }
}

/// A created channel on file `f` of `size` bytes: its id.
fn make(ch: &mut Channels, f: FileId, size: u64) -> Result<u32, Errno> {
    ch.open(f);
    let (a, b) = efds(f * 2);
    ch.create(f, OWNER, &req(size), a, b).map(|c| c.id)
}

#[test]
fn ids_are_the_lowest_free_from_one_and_return_at_release() {
    let mut ch = Channels::new(Mode::Queue, false);
    assert_eq!(make(&mut ch, 1, 4096), Ok(1));
    assert_eq!(make(&mut ch, 2, 4096), Ok(2));
    assert_eq!(make(&mut ch, 3, 4096), Ok(3));
    assert_eq!(ch.close(2), Some(2));
    assert_eq!(make(&mut ch, 4, 4096), Ok(2), "the gap is reused first");
    assert_eq!(make(&mut ch, 5, 4096), Ok(4));
    assert_eq!(ch.released(), 1);
}

#[test]
fn create_checks_run_in_the_documented_order() {
    let mut ch = Channels::new(Mode::Counter, false);
    ch.open(1);
    let (a, b) = efds(10);
    // A bad size comes before a missing eventfd.
    assert_eq!(
        ch.create(1, OWNER, &req(100), EfdArg::NotOpen, b),
        Err(Errno::EINVAL)
    );
    for size in [0, 100, MAX_BUFFER_SIZE + 4096] {
        assert_eq!(ch.create(1, OWNER, &req(size), a, b), Err(Errno::EINVAL));
    }
    let mut r = req(4096);
    r.period_ms = MAX_PERIOD_MS + 1;
    assert_eq!(ch.create(1, OWNER, &r, a, b), Err(Errno::EINVAL));
    let mut r = req(4096);
    r.flags = 8;
    assert_eq!(ch.create(1, OWNER, &r, a, b), Err(Errno::EINVAL));
    for name in [&b"bad name"[..], b"0123456789abcdef", b"a\0b"] {
        let mut r = req(4096);
        r.name[..name.len()].copy_from_slice(name);
        assert_eq!(
            ch.create(1, OWNER, &r, a, b),
            Err(Errno::EINVAL),
            "{name:?}"
        );
    }
    let mut r = req(4096);
    r.id = 3;
    assert_eq!(ch.create(1, OWNER, &r, a, b), Err(Errno::EINVAL));
    // Attach: size and period 0, no pacing flags, a name; then the
    // eventfds; then ENOENT (no producer).
    let mut r = req(0);
    r.flags = CREATE_ATTACH;
    assert_eq!(ch.create(1, OWNER, &r, a, b), Err(Errno::EINVAL), "no name");
    r.name[..3].copy_from_slice(b"cam");
    assert_eq!(
        ch.create(1, OWNER, &r, a, EfdArg::NotOpen),
        Err(Errno::EBADF)
    );
    assert_eq!(ch.create(1, OWNER, &r, a, b), Err(Errno::ENOENT));
    r.flags |= CREATE_BACK_TO_BACK;
    assert_eq!(ch.create(1, OWNER, &r, a, b), Err(Errno::EINVAL));
    // Eventfds: not open, not an eventfd, the same, a pending count.
    assert_eq!(
        ch.create(1, OWNER, &req(4096), EfdArg::NotOpen, b),
        Err(Errno::EBADF)
    );
    assert_eq!(
        ch.create(1, OWNER, &req(4096), EfdArg::NotEventfd, b),
        Err(Errno::EINVAL)
    );
    assert_eq!(ch.create(1, OWNER, &req(4096), a, a), Err(Errno::EINVAL));
    let pending = EfdArg::Eventfd {
        object: 10,
        count: 1,
    };
    assert_eq!(
        ch.create(1, OWNER, &req(4096), pending, b),
        Err(Errno::EINVAL),
        "counter mode refuses a pending count"
    );
    assert_eq!(ch.count(), 0, "nothing was created");
    assert_eq!(ch.create(1, OWNER, &req(4096), a, b).map(|c| c.id), Ok(1));
    // A channel's file again: EBUSY for its owner, EPERM for another.
    assert_eq!(ch.create(1, OWNER, &req(4096), a, b), Err(Errno::EBUSY));
    assert_eq!(ch.create(1, OTHER, &req(4096), a, b), Err(Errno::EPERM));
}

#[test]
fn queue_mode_takes_a_pending_efd_as_doorbells() {
    let mut ch = Channels::new(Mode::Queue, false);
    ch.open(1);
    let a = EfdArg::Eventfd {
        object: 1,
        count: 3,
    };
    let (_, b) = efds(1);
    let id = ch.create(1, OWNER, &req(4096), a, b).map(|c| c.id);
    assert_eq!(id, Ok(1));
    assert_eq!(ch.command(1, OWNER, 2), Ok(()));
    assert_eq!(ch.efd_read(1), Some(4), "3 pending + MMAP's doorbell");
}

#[test]
fn limits_refuse_new_channels_only() {
    let mut ch = Channels::new(Mode::Queue, false);
    assert_eq!(ch.param_write(param::MAX_CHANNELS, b"2\n"), Ok(()));
    assert_eq!(make(&mut ch, 1, 8192), Ok(1));
    assert_eq!(make(&mut ch, 2, 4096), Ok(2));
    assert_eq!(make(&mut ch, 3, 4096), Err(Errno::ENOSPC));
    // Below what exists: accepted, the channels stay.
    assert_eq!(ch.param_write(param::MAX_CHANNELS, b"1"), Ok(()));
    assert_eq!(ch.count(), 2);
    let most = kern2usr_abi::MAX_CHANNELS_LIMIT.to_string();
    assert_eq!(ch.param_write(param::MAX_CHANNELS, most.as_bytes()), Ok(()));
    assert_eq!(
        ch.param_write(param::MAX_CHANNEL_MEMORY, b"16384\n"),
        Ok(())
    );
    assert_eq!(make(&mut ch, 4, 8192), Err(Errno::ENOSPC), "12288 in use");
    assert_eq!(make(&mut ch, 5, 4096), Ok(3));
    assert_eq!(ch.memory(), 16384);
    for (name, bad) in [
        (param::MAX_CHANNELS, &b"0\n"[..]),
        (param::MAX_CHANNELS, b" 3"),
        (param::MAX_CHANNEL_MEMORY, b"4095"),
        (param::MAX_CHANNEL_MEMORY, b"1073741825"),
        (param::MAX_CHANNEL_MEMORY, b"-4096"),
    ] {
        assert_eq!(ch.param_write(name, bad), Err(Errno::EINVAL), "{bad:?}");
    }
    let past = (kern2usr_abi::MAX_CHANNELS_LIMIT + 1).to_string();
    assert_eq!(
        ch.param_write(param::MAX_CHANNELS, past.as_bytes()),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        ch.param_read(param::MAX_CHANNELS),
        Some(format!("{most}\n"))
    );
    assert_eq!(
        ch.param_read(param::MAX_CHANNEL_MEMORY).as_deref(),
        Some("16384\n")
    );
    assert_eq!(
        ch.param_write(param::MAX_CHANNEL_MEMORY, b"0x100000"),
        Ok(())
    );
    assert_eq!(ch.max_memory(), 1 << 20);
    assert_eq!(
        ch.param_write(param::MAX_CHANNELS, b""),
        Ok(()),
        "empty write"
    );
}

#[test]
fn a_channel_runs_the_default_channels_protocol() {
    let mut ch = Channels::new(Mode::Queue, false);
    ch.open(1);
    let (a, b) = efds(1);
    let mut r = req(8192);
    r.period_ms = 5;
    r.flags = CREATE_BACK_TO_BACK;
    r.name[..3].copy_from_slice(b"cam");
    assert_eq!(ch.create(1, OWNER, &r, a, b).map(|c| c.id), Ok(1));
    assert_eq!(
        ch.info(1),
        Some((ABI_VERSION, Mode::Queue as u32, 8192, 5, 1))
    );
    // Codes outside 2-5 are EINVAL (1, FIND, is not a channel command).
    for code in [0, 1, 6, 7, 9] {
        assert_eq!(ch.command(1, OWNER, code), Err(Errno::EINVAL));
    }
    assert_eq!(
        ch.command(1, OWNER, 3),
        Err(Errno::EPROTO),
        "START before MMAP"
    );
    assert_eq!(
        ch.command(1, OWNER, 4),
        Err(Errno::EPROTO),
        "STOP while idle"
    );
    assert_eq!(ch.command(1, OWNER, 2), Ok(()));
    assert_eq!(ch.command(1, OWNER, 3), Ok(()));
    assert!(ch.can_publish(1));
    assert_eq!(ch.publish(1), Ok(()));
    assert!(!ch.can_publish(1), "one round at a time");
    let recs = ch.read_records(1, OWNER, 16 * 8);
    let codes: Vec<u32> = recs.iter().flatten().map(|e| e.code).collect();
    assert_eq!(codes, vec![2, 3, Code::MemoryReady.value()]);
    assert_eq!(
        ch.chan(1).map(|c| c.state.content()),
        Some(Content::Pattern)
    );
    assert_eq!(ch.efd2_write(1, 7).closed, 1);
    let st = ch.stats(1, OWNER);
    assert_eq!(
        st.map(|s| s.map(|s| (s.rounds_published, s.count))),
        Ok(Some((1, 1)))
    );
    assert_eq!(ch.ack(1, OWNER), Err(Errno::EPROTO), "nothing outstanding");
    assert_eq!(ch.publish(1), Ok(()));
    assert_eq!(ch.ack_round(1, OWNER, 1), Err(Errno::ESTALE));
    assert_eq!(ch.ack_round(1, OWNER, 2), Ok(()));
    let list = ch.listing();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (
            list[0].name.as_str(),
            list[0].pacing,
            list[0].rounds,
            list[0].owner
        ),
        ("cam", "b2b", 2, OWNER)
    );
    assert_eq!(ch.command(1, OWNER, 5), Ok(()));
    assert_eq!(ch.command(1, OWNER, 2), Err(Errno::EPROTO), "after EXIT");
    // Another channel is untouched by all this.
    assert_eq!(make(&mut ch, 2, 4096), Ok(2));
    assert_eq!(ch.chan(2).map(|c| c.state.ready_seq()), Some(0));
    assert_eq!(ch.chan(2).map(|c| c.pacing()), Some("timer"));
}

#[test]
fn another_process_is_refused_everything_but_info() {
    let mut ch = Channels::new(Mode::Queue, false);
    assert_eq!(make(&mut ch, 1, 4096), Ok(1));
    let map = MmapReq {
        len: 4096,
        offset: 0,
        shared: true,
        write: false,
        exec: false,
    };
    assert_eq!(ch.command(1, OTHER, 2), Err(Errno::EPERM));
    assert_eq!(
        ch.command(1, OTHER, 9),
        Err(Errno::EPERM),
        "EPERM before EINVAL"
    );
    assert_eq!(ch.ack(1, OTHER), Err(Errno::EPERM));
    assert_eq!(ch.ack_round(1, OTHER, 1), Err(Errno::EPERM));
    assert_eq!(ch.read_records(1, OTHER, 16), Err(Errno::EPERM));
    assert_eq!(ch.read_buffer(1, OTHER, 4096), Err(Errno::EPERM));
    assert_eq!(ch.stats(1, OTHER), Err(Errno::EPERM));
    assert_eq!(ch.mmap(1, OTHER, map), Err(Errno::EPERM));
    assert_eq!(ch.foreign_call(1, OTHER), Err(Errno::EPERM));
    assert!(ch.info(1).is_some());
    assert_eq!(ch.file(1).map(|f| f.maps), Some(0));
    // The owner's calls still work.
    assert_eq!(ch.mmap(1, OWNER, map), Ok(()));
    assert_eq!(ch.command(1, OWNER, 2), Ok(()));
}

#[test]
fn a_file_that_is_no_channel_has_no_channel_calls() {
    let mut ch = Channels::new(Mode::Queue, false);
    ch.open(1);
    assert_eq!(ch.command(1, OWNER, 2), Err(Errno::ENOTCONN));
    assert_eq!(ch.stats(1, OWNER), Ok(None), "the default channel's");
    assert_eq!(ch.info(1), None);
    assert_eq!(ch.close(1), None);
    assert!(!ch.in_use());
}

#[test]
fn the_release_waits_for_the_last_mapping() {
    let mut ch = Channels::new(Mode::Queue, false);
    assert_eq!(make(&mut ch, 1, 8192), Ok(1));
    let map = |len, offset, shared| MmapReq {
        len,
        offset,
        shared,
        write: false,
        exec: false,
    };
    assert_eq!(ch.mmap(1, OWNER, map(8192, 0, false)), Ok(()));
    assert_eq!(ch.mmap(1, OWNER, map(12288, 0, true)), Err(Errno::EINVAL));
    assert_eq!(ch.mmap(1, OWNER, map(4096, 4096, true)), Err(Errno::EINVAL));
    assert_eq!(
        ch.mmap(1, OWNER, map(4096, kern2usr_abi::CTRL_MMAP_OFFSET, false)),
        Err(Errno::EINVAL),
        "the control page is MAP_SHARED only"
    );
    assert_eq!(
        ch.mmap(1, OWNER, map(4096, kern2usr_abi::CTRL_MMAP_OFFSET, true)),
        Ok(())
    );
    assert_eq!(ch.close(1), None, "two mappings keep it");
    assert_eq!(ch.count(), 1);
    assert_eq!(ch.listing().len(), 1);
    assert_eq!(ch.unmapped(1), None);
    assert!(ch.in_use());
    assert_eq!(ch.unmapped(1), Some(1));
    assert_eq!(ch.count(), 0);
    assert_eq!(ch.memory(), 0);
    assert!(!ch.in_use());
    assert_eq!(make(&mut ch, 2, 4096), Ok(1), "its id is free again");
}

#[test]
fn counter_mode_channels_deliver_one_code_per_read() {
    let mut ch = Channels::new(Mode::Counter, false);
    assert_eq!(make(&mut ch, 1, 4096), Ok(1));
    assert_eq!(ch.command(1, OWNER, 2), Ok(()));
    assert_eq!(ch.command(1, OWNER, 3), Ok(()));
    assert_eq!(ch.read_records(1, OWNER, 16), Err(Errno::EINVAL));
    assert_eq!(ch.efd_read(1), Some(2));
    assert_eq!(ch.efd_read(1), Some(3));
    assert_eq!(ch.efd_read(1), None);
    assert_eq!(ch.publish(1), Ok(()));
    assert_eq!(ch.efd2_write(1, 7).late, 1, "not shown yet: late");
    assert_eq!(ch.efd_read(1), Some(6));
    assert_eq!(ch.efd2_write(1, 7).closed, 1);
}

/// A ring request: `slots` slots of `size` bytes.
fn ring_req(size: u64, slots: u32) -> Create {
    let mut r = req(size);
    r.flags = CREATE_RING;
    r.ring_slots = slots;
    r
}

/// A ring channel of 4 slots of a page on file 1, MMAP and START sent and
/// their records read: its id.
fn running_ring(ch: &mut Channels, slots: u32) -> u32 {
    ch.open(1);
    let (a, b) = efds(1);
    let id = ch
        .create(1, OWNER, &ring_req(4096, slots), a, b)
        .map(|c| c.id);
    assert_eq!(id, Ok(1));
    assert_eq!(ch.command(1, OWNER, 2), Ok(()));
    assert_eq!(ch.command(1, OWNER, 3), Ok(()));
    assert_eq!(ch.read_records(1, OWNER, 16 * 8).map(|r| r.len()), Ok(2));
    1
}

fn count(ch: &Channels, id: u32) -> u64 {
    ch.chan(id).map_or(0, |c| c.state.counted())
}

#[test]
fn ring_create_checks_slots_and_charges_every_slot() {
    let mut ch = Channels::new(Mode::Queue, false);
    ch.open(1);
    let (a, b) = efds(1);
    for slots in [0, 1, 3, 6, 128, RING_MAX_SLOTS * 2] {
        assert_eq!(
            ch.create(1, OWNER, &ring_req(4096, slots), a, b),
            Err(Errno::EINVAL),
            "{slots} slots"
        );
    }
    // slots * size past MAX_BUFFER_SIZE.
    assert_eq!(
        ch.create(1, OWNER, &ring_req(MAX_BUFFER_SIZE / 2, 4), a, b),
        Err(Errno::EINVAL)
    );
    // ring_slots without the flag, and the flag with ATTACH.
    let mut r = req(4096);
    r.ring_slots = 4;
    assert_eq!(ch.create(1, OWNER, &r, a, b), Err(Errno::EINVAL));
    let mut r = ring_req(0, 4);
    r.flags |= CREATE_ATTACH;
    r.name[..3].copy_from_slice(b"cam");
    assert_eq!(ch.create(1, OWNER, &r, a, b), Err(Errno::EINVAL));
    // The memory cap counts every slot.
    assert_eq!(ch.param_write(param::MAX_CHANNEL_MEMORY, b"65536"), Ok(()));
    assert_eq!(
        ch.create(1, OWNER, &ring_req(32768, 4), a, b),
        Err(Errno::ENOSPC)
    );
    let out = ch.create(1, OWNER, &ring_req(16384, 4), a, b);
    assert_eq!(out.map(|c| (c.id, c.buffer_size)), Ok((1, 16384)));
    assert_eq!(ch.memory(), 65536);
    assert_eq!(
        ch.info(1).map(|i| i.2),
        Some(16384),
        "Info shows the slot size"
    );
    let list = ch.listing();
    assert_eq!((list[0].buffer_size, list[0].pacing), (16384, "timer+ring"));
    // The ring maps whole: offset 0 up to slots * size.
    let map = |len| MmapReq {
        len,
        offset: 0,
        shared: true,
        write: false,
        exec: false,
    };
    assert_eq!(ch.mmap(1, OWNER, map(65536)), Ok(()));
    assert_eq!(ch.mmap(1, OWNER, map(65536 + 4096)), Err(Errno::EINVAL));
    assert_eq!(ch.close(1), None, "still mapped");
    assert_eq!(ch.unmapped(1), Some(1));
    assert_eq!(ch.memory(), 0);
    // Back to back shows as b2b+ring (the adaptive rule is a ring's own).
    ch.open(2);
    let mut r = ring_req(4096, 2);
    r.flags |= CREATE_BACK_TO_BACK | CREATE_ADAPTIVE;
    assert!(ch.create(2, OWNER, &r, a, b).is_ok());
    assert_eq!(ch.listing()[0].pacing, "b2b+ring");
}

#[test]
fn a_full_ring_publishes_nothing_until_acks_free_slots() {
    let mut ch = Channels::new(Mode::Queue, false);
    let id = running_ring(&mut ch, 4);
    for r in 1..=4 {
        assert!(ch.can_publish(id), "room for round {r}");
        assert_eq!(ch.publish(id), Ok(()));
    }
    assert!(!ch.can_publish(id), "4 outstanding: never overwritten");
    let recs = ch.read_records(1, OWNER, 16 * 8).unwrap_or_default();
    let rounds: Vec<u32> = recs.iter().map(|e| e.round).collect();
    assert_eq!(rounds, vec![1, 2, 3, 4], "one MEMORY_READY per round");
    // Consume two at once through ack_seq; the doorbell makes the module
    // look.
    ch.store_ack_seq(id, 2);
    assert_eq!(count(&ch, id), 0, "nothing until the module looks");
    assert_eq!(ch.efd2_write(id, 7).closed, 2);
    assert_eq!(count(&ch, id), 2);
    assert!(ch.can_publish(id));
    assert_eq!(ch.publish(id), Ok(()));
    assert_eq!(ch.publish(id), Ok(()));
    assert!(!ch.can_publish(id));
    // The fill looks at ack_seq itself: no doorbell needed for room.
    ch.store_ack_seq(id, 3);
    assert!(ch.can_publish(id));
    assert_eq!(ch.publish(id), Ok(()));
    assert_eq!(count(&ch, id), 3);
    let st = ch.stats(1, OWNER).ok().flatten();
    assert_eq!(st.map(|s| (s.rounds_published, s.count)), Some((7, 3)));
    assert_eq!(
        ch.chan(id).map(|c| c.state.ring_outstanding().len()),
        Some(4)
    );
}

#[test]
fn ring_acks_out_of_range_are_ignored_and_ioctl_acks_refused() {
    let mut ch = Channels::new(Mode::Queue, false);
    let id = running_ring(&mut ch, 4);
    assert_eq!(ch.publish(id), Ok(()));
    assert_eq!(ch.publish(id), Ok(()));
    // Beyond ready_seq.
    ch.store_ack_seq(id, 3);
    assert_eq!(ch.efd2_write(id, 7).closed, 0);
    assert_eq!(ch.chan(id).map(|c| c.state.acks_out_of_range()), Some(1));
    ch.store_ack_seq(id, 2);
    assert_eq!(ch.efd2_write(id, 7).closed, 2);
    // Behind the last value taken.
    ch.store_ack_seq(id, 1);
    assert_eq!(ch.efd2_write(id, 14).closed, 0);
    assert_eq!(ch.chan(id).map(|c| c.state.acks_out_of_range()), Some(2));
    assert_eq!(ch.chan(id).map(|c| c.state.ack_taken()), Some(2));
    assert_eq!(count(&ch, id), 2);
    // The ioctls: EOPNOTSUPP (after the owner check).
    assert_eq!(ch.ack(1, OWNER), Err(Errno::EOPNOTSUPP));
    assert_eq!(ch.ack_round(1, OWNER, 3), Err(Errno::EOPNOTSUPP));
    assert_eq!(ch.ack(1, OTHER), Err(Errno::EPERM));
    assert_eq!(ch.read_buffer(1, OWNER, 4096), Err(Errno::EOPNOTSUPP));
    assert_eq!(ch.read_buffer(1, OTHER, 4096), Err(Errno::EPERM));
    // 7 on efd2 alone is a doorbell: nothing closes, nothing is late.
    assert_eq!(ch.publish(id), Ok(()));
    let out = ch.efd2_write(id, 7);
    assert_eq!((out.closed, out.late, out.unexpected), (0, 0, false));
    assert!(ch.efd2_write(id, 6).unexpected);
    assert_eq!(ch.chan(id).map(|c| c.state.late_acks()), Some(0));
}

#[test]
fn ring_stop_keeps_slots_lent_and_start_continues() {
    let mut ch = Channels::new(Mode::Queue, false);
    let id = running_ring(&mut ch, 2);
    assert_eq!(ch.publish(id), Ok(()));
    assert_eq!(ch.publish(id), Ok(()));
    ch.store_ack_seq(id, 1);
    assert_eq!(ch.efd2_write(id, 7).closed, 1);
    assert_eq!(ch.command(1, OWNER, 4), Ok(()), "STOP");
    assert_eq!(ch.command(1, OWNER, 3), Ok(()), "START");
    assert_eq!(count(&ch, id), 0, "START resets the stats");
    // Round 2 is still lent: one slot free, round 3 fits, then full.
    assert!(ch.can_publish(id));
    assert_eq!(ch.publish(id), Ok(()));
    assert!(
        !ch.can_publish(id),
        "round 2 (abandoned) still holds its slot"
    );
    // Acking through 3 frees both; only round 3 (this test's) counts.
    ch.store_ack_seq(id, 3);
    assert_eq!(ch.efd2_write(id, 7).closed, 1);
    assert_eq!(count(&ch, id), 1);
    assert_eq!(ch.chan(id).map(|c| c.state.ready_seq()), Some(3));
    // STOP with a slot lent, then the release (the channel's detach).
    assert_eq!(ch.publish(id), Ok(()));
    assert_eq!(ch.command(1, OWNER, 4), Ok(()));
    assert_eq!(
        ch.chan(id).map(|c| c.state.ring_outstanding().len()),
        Some(1)
    );
    assert!(!ch.can_publish(id), "stopped");
    assert_eq!(ch.close(1), Some(id));
    assert_eq!(ch.memory(), 0);
}

#[test]
fn page_acks_close_rounds_and_turn_efd2_into_a_doorbell() {
    let mut ch = Channels::new(Mode::Queue, false);
    ch.open(1);
    let (a, b) = efds(1);
    assert_eq!(ch.create(1, OWNER, &req(4096), a, b).map(|c| c.id), Ok(1));
    assert_eq!(ch.command(1, OWNER, 2), Ok(()));
    assert_eq!(ch.command(1, OWNER, 3), Ok(()));
    assert_eq!(ch.publish(1), Ok(()));
    // Without page acks: 7 on efd2 closes the shown round (ABI 3).
    assert!(ch.read_records(1, OWNER, 16 * 8).is_ok());
    assert_eq!(ch.efd2_write(1, 7).closed, 1);
    assert!(!ch.chan(1).is_some_and(|c| c.state.page_acks()));
    assert_eq!(ch.chan(1).map(|c| c.state.ack_seq()), Some(0));
    // The page ack of round 2 closes it at the doorbell, shown or not.
    assert_eq!(ch.publish(1), Ok(()));
    ch.store_ack_seq(1, 2);
    let out = ch.efd2_write(1, 7);
    assert_eq!((out.closed, out.late), (1, 0));
    assert!(ch.chan(1).is_some_and(|c| c.state.page_acks()));
    // From now on 7 alone is a doorbell: never a late ack.
    assert_eq!(ch.publish(1), Ok(()));
    let out = ch.efd2_write(1, 14);
    assert_eq!((out.closed, out.late), (0, 0));
    assert_eq!(count(&ch, 1), 2);
    // An older round's id: taken silently; beyond ready_seq: ignored.
    ch.store_ack_seq(1, 5);
    assert_eq!(ch.efd2_write(1, 7).closed, 0);
    assert_eq!(ch.chan(1).map(|c| c.state.acks_out_of_range()), Some(1));
    // ACK_ROUND still names its round.
    assert_eq!(ch.ack_round(1, OWNER, 3), Ok(()));
    assert_eq!(count(&ch, 1), 3);
    // STOP abandons round 4; its page ack ends the lend (no count).
    assert_eq!(ch.publish(1), Ok(()));
    assert_eq!(ch.command(1, OWNER, 4), Ok(()));
    assert_eq!(ch.command(1, OWNER, 3), Ok(()));
    assert!(!ch.can_publish(1), "round 4 lent");
    ch.store_ack_seq(1, 4);
    assert_eq!(ch.efd2_write(1, 7).closed, 0);
    assert!(ch.can_publish(1), "the page ack returned the buffer");
    assert_eq!(count(&ch, 1), 0);
}

#[test]
fn ring_stop_takes_the_acks_stored_before_it() {
    let mut ch = Channels::new(Mode::Queue, false);
    let id = running_ring(&mut ch, 4);
    for _ in 0..3 {
        assert_eq!(ch.publish(id), Ok(()));
    }
    // Stored, no doorbell: STOP looks at ack_seq before it abandons.
    ch.store_ack_seq(id, 2);
    assert_eq!(ch.command(1, OWNER, 4), Ok(()));
    assert_eq!(count(&ch, id), 2);
    // Round 3 was abandoned: its ack frees its slot, counts nothing.
    ch.store_ack_seq(id, 3);
    assert_eq!(ch.efd2_write(id, 7).closed, 0);
    assert_eq!(count(&ch, id), 2);
    // An out-of-range value does not turn page acks on by itself.
    let mut fresh = Channels::new(Mode::Queue, false);
    let id = running_ring(&mut fresh, 2);
    fresh.store_ack_seq(id, 9);
    assert_eq!(fresh.efd2_write(id, 7).closed, 0);
    assert!(!fresh.chan(id).is_some_and(|c| c.state.page_acks()));
}
