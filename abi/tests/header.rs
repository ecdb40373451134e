//! The C header is the Rust definition, to the letter and to the byte.

use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use kern2usr_abi::{
    channel_pattern_byte, header, ChannelStats, Code, Create, Ctrl, Event, Info, ReadBuffer,
    Register, RingSlot, CREATE_FLAGS, CREATE_RING, EVENT_QUEUE_RESERVE, HIST_BUCKETS, IOC_ACK,
    IOC_ACK_ROUND, IOC_CHANNEL_CMD, IOC_CHANNEL_STATS, IOC_CREATE, IOC_INFO, IOC_READ_BUFFER,
    IOC_REGISTER, MAX_CHANNELS_LIMIT, RING_MAX_SLOTS,
};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("abi/ has a parent")
        .to_path_buf()
}

#[test]
fn checked_in_header_is_generated_from_rust() {
    let path = workspace_root().join(header::HEADER_PATH);
    let on_disk = std::fs::read_to_string(&path).expect("read kern2usr_abi.h");
    assert!(
        on_disk == header::render(),
        "{} is stale: run `cargo xtask gen-header`",
        path.display()
    );
}

/// Compiles a C program against the header and compares every number it
/// prints with the Rust value.
#[test]
fn c_compiler_sees_the_rust_values_and_layouts() {
    let dir = std::env::temp_dir().join(format!("k2u-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <stddef.h>
#include "kern2usr_abi.h"
int main(void)
{
	printf("%u %u %u %u %u %u %u\n", K2U_CMD_FIND, K2U_CMD_MMAP, K2U_CMD_START_TEST,
	       K2U_CMD_STOP_TEST, K2U_CMD_EXIT_TEST, K2U_CMD_MEMORY_READY, K2U_CMD_MEMORY_COPIED);
	printf("%lu %lu %lu\n", (unsigned long)K2U_IOC_REGISTER, (unsigned long)K2U_IOC_ACK,
	       (unsigned long)K2U_IOC_INFO);
	printf("%zu %zu %zu %zu\n", sizeof(struct k2u_event), offsetof(struct k2u_event, code),
	       sizeof(struct k2u_register), offsetof(struct k2u_register, efd2));
	printf("%zu %zu %zu\n", sizeof(struct k2u_info), offsetof(struct k2u_info, buffer_size),
	       offsetof(struct k2u_info, period_ms));
	printf("%lu %zu %zu %zu %u\n", (unsigned long)K2U_IOC_READ_BUFFER,
	       sizeof(struct k2u_read_buffer), sizeof(struct k2u_ctrl),
	       offsetof(struct k2u_ctrl, doorbells_skipped), K2U_HIST_BUCKETS);
	printf("%lu %zu %u\n", (unsigned long)K2U_IOC_ACK_ROUND, offsetof(struct k2u_event, round),
	       K2U_EVENT_QUEUE_RESERVE);
	printf("%lu %lu %lu %zu %zu %zu %zu %zu\n", (unsigned long)K2U_IOC_CREATE,
	       (unsigned long)K2U_IOC_CHANNEL_CMD, (unsigned long)K2U_IOC_CHANNEL_STATS,
	       sizeof(struct k2u_create), offsetof(struct k2u_create, name),
	       offsetof(struct k2u_create, id), sizeof(struct k2u_channel_stats),
	       offsetof(struct k2u_channel_stats, max_ns));
	printf("%zu %zu %u %u\n", offsetof(struct k2u_ctrl, ready_len),
	       offsetof(struct k2u_info, channel_id), K2U_CREATE_FLAGS, K2U_MAX_CHANNELS_LIMIT);
	printf("%u %u %u\n", K2U_CHANNEL_PATTERN_BYTE(1, 0, 0),
	       K2U_CHANNEL_PATTERN_BYTE(40, 123456789012ULL, 4095),
	       K2U_CHANNEL_PATTERN_BYTE(0xffffffffU, 0xffffffffffffffffULL, 1048575));
	printf("%zu %zu %zu %zu %zu %zu %zu %zu %u %u\n", offsetof(struct k2u_ctrl, kernel_state),
	       offsetof(struct k2u_ctrl, ack_seq), offsetof(struct k2u_ctrl, wake_seq),
	       offsetof(struct k2u_ctrl, ring_slots), offsetof(struct k2u_ctrl, ring_full),
	       offsetof(struct k2u_ctrl, slots), sizeof(struct k2u_ring_slot),
	       offsetof(struct k2u_create, ring_slots), K2U_RING_MAX_SLOTS, K2U_CREATE_RING);
	return 0;
}
"#,
    )
    .expect("write probe.c");
    let include = workspace_root().join("kernel/c");
    let status = Command::new("cc")
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("run cc (install gcc)");
    assert!(
        status.success(),
        "probe.c does not compile against the header"
    );
    let out = Command::new(&exe).output().expect("run probe");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let codes: Vec<String> = Code::ALL.iter().map(|c| c.value().to_string()).collect();
    let expected = format!(
        "{}\n{} {} {}\n{} {} {} {}\n{} {} {}\n{} {} {} {} {}\n{} {} {}\n\
         {} {} {} {} {} {} {} {}\n{} {} {} {}\n{} {} {}\n{} {} {} {} {} {} {} {} {} {}\n",
        codes.join(" "),
        IOC_REGISTER,
        IOC_ACK,
        IOC_INFO,
        size_of::<Event>(),
        offset_of!(Event, code),
        size_of::<Register>(),
        offset_of!(Register, efd2),
        size_of::<Info>(),
        offset_of!(Info, buffer_size),
        offset_of!(Info, period_ms),
        IOC_READ_BUFFER,
        size_of::<ReadBuffer>(),
        size_of::<Ctrl>(),
        offset_of!(Ctrl, doorbells_skipped),
        HIST_BUCKETS,
        IOC_ACK_ROUND,
        offset_of!(Event, round),
        EVENT_QUEUE_RESERVE,
        IOC_CREATE,
        IOC_CHANNEL_CMD,
        IOC_CHANNEL_STATS,
        size_of::<Create>(),
        offset_of!(Create, name),
        offset_of!(Create, id),
        size_of::<ChannelStats>(),
        offset_of!(ChannelStats, max_ns),
        offset_of!(Ctrl, ready_len),
        offset_of!(Info, channel_id),
        CREATE_FLAGS,
        MAX_CHANNELS_LIMIT,
        channel_pattern_byte(1, 0, 0),
        channel_pattern_byte(40, 123_456_789_012, 4095),
        channel_pattern_byte(u32::MAX, u64::MAX, 1_048_575),
        offset_of!(Ctrl, kernel_state),
        offset_of!(Ctrl, ack_seq),
        offset_of!(Ctrl, wake_seq),
        offset_of!(Ctrl, ring_slots),
        offset_of!(Ctrl, ring_full),
        offset_of!(Ctrl, slots),
        size_of::<RingSlot>(),
        offset_of!(Create, ring_slots),
        RING_MAX_SLOTS,
        CREATE_RING,
    );
    assert_eq!(text, expected);
    let _ = std::fs::remove_dir_all(&dir);
}
