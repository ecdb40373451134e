/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */
/*
 * kern2usr ABI. Generated from abi/src/defs.rs by `cargo xtask gen-header`;
 * do not edit: a test fails when this copy and the Rust definition differ.
 */
#ifndef _KERN2USR_ABI_H
#define _KERN2USR_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define K2U_ABI_VERSION                 4
#define K2U_MODULE_NAME                 "kern2usr"
#define K2U_DEVICE_NAME                 "kern2usr"
#define K2U_PARAM_USR_PID               "usr_pid"
#define K2U_PARAM_USR_EFD               "usr_efd"
#define K2U_PARAM_USR_EFD2              "usr_efd2"
#define K2U_PARAM_CUR_CMD               "cur_cmd"
#define K2U_PARAM_BUFFER_SIZE           "buffer_size"
#define K2U_PARAM_PERIOD_MS             "period_ms"
#define K2U_PARAM_EVENT_MODE            "event_mode"
#define K2U_PARAM_LAST_ERROR            "last_error"
#define K2U_PARAM_STATS                 "stats"
#define K2U_PARAM_HISTOGRAM             "histogram"
#define K2U_PARAM_BACK_TO_BACK          "back_to_back"
#define K2U_PARAM_ADAPTIVE              "adaptive"
#define K2U_PARAM_MAX_CHANNELS          "max_channels"
#define K2U_PARAM_MAX_CHANNEL_MEMORY    "max_channel_memory"
#define K2U_PARAM_CHANNELS              "channels"
#define K2U_PARAM_ACK_POLL_US           "ack_poll_us"

#define K2U_CMD_FIND                    1
#define K2U_CMD_MMAP                    2
#define K2U_CMD_START_TEST              3
#define K2U_CMD_STOP_TEST               4
#define K2U_CMD_EXIT_TEST               5
#define K2U_CMD_MEMORY_READY            6
#define K2U_CMD_MEMORY_COPIED           7

#define K2U_EVENT_MODE_COUNTER          1
#define K2U_EVENT_MODE_QUEUE            2

#define K2U_DEFAULT_BUFFER_SIZE         4096UL
#define K2U_MAX_BUFFER_SIZE             16777216UL
#define K2U_DEFAULT_PERIOD_MS           500U
#define K2U_MAX_PERIOD_MS               60000U
#define K2U_DEFAULT_POLL_TIMEOUT_MS     10000U
#define K2U_EVENT_QUEUE_LEN             4096U
#define K2U_EVENT_QUEUE_RESERVE         2U

#define K2U_DEFAULT_MAX_CHANNELS        16U
#define K2U_MAX_CHANNELS_LIMIT          32U
#define K2U_MAX_PRODUCERS               8U
#define K2U_DEFAULT_MAX_CHANNEL_MEMORY  67108864ULL
#define K2U_MAX_CHANNEL_MEMORY_LIMIT    1073741824ULL
#define K2U_CHANNEL_NAME_LEN            16
#define K2U_CHANNELS_HEADER             "id name owner buffer_size mode pacing rounds p50_ns p99_ns"
#define K2U_CREATE_BACK_TO_BACK         1U
#define K2U_CREATE_ADAPTIVE             2U
#define K2U_CREATE_ATTACH               4U
#define K2U_CREATE_RING                 8U
#define K2U_CREATE_FLAGS                15U
#define K2U_RING_MIN_SLOTS              2U
#define K2U_RING_MAX_SLOTS              64U
#define K2U_MAX_ACK_POLL_US             1000U

#define K2U_HIST_SUB_BITS               5U
#define K2U_HIST_MAX_BITS               40U
#define K2U_HIST_BUCKETS                1152U
#define K2U_CTRL_MMAP_OFFSET            4294967296ULL
#define K2U_LISTENER_ASLEEP             0U
#define K2U_LISTENER_SPINNING           1U
#define K2U_KERNEL_ASLEEP               0U
#define K2U_KERNEL_POLLING              1U
#define K2U_STATS_KEYS                  { "count", "min", "mean", "p50", "p90", "p99", "p99.9", "max" }

/* Byte i of the buffer after a round has filled it. */
#define K2U_PATTERN_BYTE(i)         ((__u8)((i) % 255))

/* Byte i of channel id's buffer after its round r (see defs.rs). */
#define K2U_CHANNEL_PATTERN_MODULUS 251ULL
#define K2U_CHANNEL_PATTERN_BYTE(id, r, i) \
	((__u8)((((__u64)(i) % 251) + ((__u64)(id) % 251) * 31 % 251 + \
		  ((__u64)(r) % 251)) % 251))

/* One event read() from the device in queue mode. */
struct k2u_event {
	__u64 seq;
	__u32 code;
	__u32 round;
};

/* K2U_IOC_REGISTER: the caller's own eventfds. */
struct k2u_register {
	__s32 efd;
	__s32 efd2;
};

/* K2U_IOC_READ_BUFFER: copy the data buffer to addr. */
struct k2u_read_buffer {
	__u64 addr;
	__u64 len;
};

/* One ring slot's entry in the control page. */
struct k2u_ring_slot {
	__u64 round;
	__u64 len;
};

/* The control page, mapped at K2U_CTRL_MMAP_OFFSET (see defs.rs, Ctrl). */
struct k2u_ctrl {
	__u64 ready_seq;
	__u32 listener_state;
	__u32 kernel_state;
	__u64 doorbells_skipped;
	__u64 ready_len;
	__u64 ack_seq;
	__u64 wake_seq;
	__u32 ring_slots;
	__u32 reserved;
	__u64 ring_full;
	struct k2u_ring_slot slots[K2U_RING_MAX_SLOTS];
};

/* K2U_IOC_INFO result. */
struct k2u_info {
	__u32 abi_version;
	__u32 event_mode;
	__u64 buffer_size;
	__u32 period_ms;
	__u32 channel_id;
};

/* K2U_IOC_CREATE: make the open file a channel (or attach to a producer's). */
struct k2u_create {
	__s32 efd;
	__s32 efd2;
	__u64 buffer_size;
	__u32 period_ms;
	__u32 flags;
	char name[K2U_CHANNEL_NAME_LEN];
	__u32 id;
	__u32 ring_slots;
};

/* K2U_IOC_CHANNEL_STATS result. */
struct k2u_channel_stats {
	__u32 id;
	__u32 event_mode;
	__u64 buffer_size;
	__u64 rounds_published;
	__u64 count;
	__u64 min_ns;
	__u64 mean_ns;
	__u64 p50_ns;
	__u64 p90_ns;
	__u64 p99_ns;
	__u64 p999_ns;
	__u64 max_ns;
};

#define K2U_IOC_MAGIC               0xE7
#define K2U_IOC_REGISTER            _IOW(K2U_IOC_MAGIC, 1, struct k2u_register)
#define K2U_IOC_ACK                 _IO(K2U_IOC_MAGIC, 2)
#define K2U_IOC_INFO                _IOR(K2U_IOC_MAGIC, 3, struct k2u_info)
#define K2U_IOC_READ_BUFFER         _IOW(K2U_IOC_MAGIC, 4, struct k2u_read_buffer)
#define K2U_IOC_ACK_ROUND           _IOW(K2U_IOC_MAGIC, 5, __u32)
#define K2U_IOC_CREATE              _IOWR(K2U_IOC_MAGIC, 6, struct k2u_create)
#define K2U_IOC_CHANNEL_CMD         _IOW(K2U_IOC_MAGIC, 7, __u32)
#define K2U_IOC_CHANNEL_STATS       _IOR(K2U_IOC_MAGIC, 8, struct k2u_channel_stats)

#endif /* _KERN2USR_ABI_H */
