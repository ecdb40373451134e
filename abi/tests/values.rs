//! The numbers the seed fixed, and the ioctl encoding, checked independently.
use kern2usr_abi::*;

#[test]
fn seed_codes_keep_their_values() {
    let values: Vec<u32> = Code::ALL.iter().map(|c| c.value()).collect();
    assert_eq!(values, [1, 2, 3, 4, 5, 6, 7]);
    for code in Code::ALL {
        assert_eq!(Code::from_value(code.value().into()), Some(code));
    }
    assert_eq!(Code::from_value(0), None);
    assert_eq!(Code::from_value(8), None);
}

#[test]
fn seed_defaults() {
    assert_eq!(DEFAULT_BUFFER_SIZE, 4096);
    assert_eq!(DEFAULT_PERIOD_MS, 500);
    assert_eq!(DEFAULT_POLL_TIMEOUT_MS, 10_000);
    assert_eq!(pattern_byte(0), 0);
    assert_eq!(pattern_byte(254), 254);
    assert_eq!(pattern_byte(255), 0);
    assert_eq!(pattern_byte(4095), (4095 % 255) as u8);
}

#[test]
fn ioctl_numbers_follow_asm_generic_encoding() {
    // _IOW(0xE7, 1, 8 bytes) = (1 << 30) | (8 << 16) | (0xE7 << 8) | 1
    assert_eq!(IOC_REGISTER, 0x4008_E701);
    // _IO(0xE7, 2)
    assert_eq!(IOC_ACK, 0x0000_E702);
    // _IOR(0xE7, 3, 24 bytes) = (2 << 30) | (24 << 16) | (0xE7 << 8) | 3
    assert_eq!(IOC_INFO, 0x8018_E703);
    // _IOW(0xE7, 5, u32) = (1 << 30) | (4 << 16) | (0xE7 << 8) | 5
    assert_eq!(IOC_ACK_ROUND, 0x4004_E705);
}

#[test]
fn event_modes_round_trip_by_name() {
    for mode in [EventMode::Counter, EventMode::Queue] {
        assert_eq!(EventMode::from_name(mode.name()), Some(mode));
    }
    assert_eq!(EventMode::from_name("bogus"), None);
}

#[test]
fn histogram_buckets_are_monotonic_and_tight() {
    // Every bucket's low bound maps back to that bucket, bounds increase,
    // and above the linear range a bucket is at most 1/32 of its value wide.
    let mut prev_low = None;
    for i in 0..HIST_BUCKETS {
        let low = hist_bucket_low(i);
        assert_eq!(hist_bucket(low), i, "bucket {i} low {low}");
        if let Some(p) = prev_low {
            assert!(low > p, "bucket {i} low {low} not above {p}");
        }
        if i + 1 < HIST_BUCKETS {
            let high = hist_bucket_low(i + 1);
            assert_eq!(hist_bucket(high - 1), i);
            if low >= 32 {
                assert!(
                    (high - low) * 32 <= low,
                    "bucket {i}: {low}..{high} too wide"
                );
            }
        }
        prev_low = Some(low);
    }
    assert_eq!(hist_bucket(0), 0);
    assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
    assert!(
        hist_bucket(10_000_000_000) < HIST_BUCKETS - 1,
        "10 s is in range"
    );
}

#[test]
fn new_ioctls_and_layouts() {
    // _IOW(0xE7, 4, 16 bytes)
    assert_eq!(IOC_READ_BUFFER, 0x4010_E704);
    // Fits the one page mapped at CTRL_MMAP_OFFSET; the ABI 3 fields kept
    // their offsets.
    assert_eq!(
        std::mem::size_of::<Ctrl>(),
        64 + 16 * RING_MAX_SLOTS as usize
    );
    assert_eq!(std::mem::offset_of!(Ctrl, ready_len), 24);
    assert_eq!(std::mem::offset_of!(Ctrl, ack_seq), 32);
    assert_eq!(std::mem::offset_of!(Ctrl, slots), 64);
}
