/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */
/*
 * kern2usr ABI. Generated from abi/src/defs.rs by `cargo xtask gen-header`;
 * do not edit: a test fails when this copy and the Rust definition differ.
 */
#ifndef _KERN2USR_ABI_H
#define _KERN2USR_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define K2U_ABI_VERSION             2
#define K2U_MODULE_NAME             "kern2usr"
#define K2U_DEVICE_NAME             "kern2usr"
#define K2U_PARAM_USR_PID           "usr_pid"
#define K2U_PARAM_USR_EFD           "usr_efd"
#define K2U_PARAM_USR_EFD2          "usr_efd2"
#define K2U_PARAM_CUR_CMD           "cur_cmd"
#define K2U_PARAM_BUFFER_SIZE       "buffer_size"
#define K2U_PARAM_PERIOD_MS         "period_ms"
#define K2U_PARAM_EVENT_MODE        "event_mode"
#define K2U_PARAM_LAST_ERROR        "last_error"
#define K2U_PARAM_STATS             "stats"
#define K2U_PARAM_HISTOGRAM         "histogram"
#define K2U_PARAM_BACK_TO_BACK      "back_to_back"
#define K2U_PARAM_ADAPTIVE          "adaptive"

#define K2U_CMD_FIND                1
#define K2U_CMD_MMAP                2
#define K2U_CMD_START_TEST          3
#define K2U_CMD_STOP_TEST           4
#define K2U_CMD_EXIT_TEST           5
#define K2U_CMD_MEMORY_READY        6
#define K2U_CMD_MEMORY_COPIED       7

#define K2U_EVENT_MODE_COUNTER      1
#define K2U_EVENT_MODE_QUEUE        2

#define K2U_DEFAULT_BUFFER_SIZE     4096UL
#define K2U_MAX_BUFFER_SIZE         16777216UL
#define K2U_DEFAULT_PERIOD_MS       500U
#define K2U_MAX_PERIOD_MS           60000U
#define K2U_DEFAULT_POLL_TIMEOUT_MS 10000U
#define K2U_EVENT_QUEUE_LEN         4096U
#define K2U_EVENT_QUEUE_RESERVE     2U

#define K2U_HIST_SUB_BITS           5U
#define K2U_HIST_MAX_BITS           40U
#define K2U_HIST_BUCKETS            1152U
#define K2U_CTRL_MMAP_OFFSET        4294967296ULL
#define K2U_LISTENER_ASLEEP         0U
#define K2U_LISTENER_SPINNING       1U
#define K2U_STATS_KEYS              { "count", "min", "mean", "p50", "p90", "p99", "p99.9", "max" }

/* Byte i of the buffer after a round has filled it. */
#define K2U_PATTERN_BYTE(i)         ((__u8)((i) % 255))

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

/* The control page, mapped at K2U_CTRL_MMAP_OFFSET (adaptive mode). */
struct k2u_ctrl {
	__u64 ready_seq;
	__u32 listener_state;
	__u32 reserved;
	__u64 doorbells_skipped;
};

/* K2U_IOC_INFO result. */
struct k2u_info {
	__u32 abi_version;
	__u32 event_mode;
	__u64 buffer_size;
	__u32 period_ms;
	__u32 reserved;
};

#define K2U_IOC_MAGIC               0xE7
#define K2U_IOC_REGISTER            _IOW(K2U_IOC_MAGIC, 1, struct k2u_register)
#define K2U_IOC_ACK                 _IO(K2U_IOC_MAGIC, 2)
#define K2U_IOC_INFO                _IOR(K2U_IOC_MAGIC, 3, struct k2u_info)
#define K2U_IOC_READ_BUFFER         _IOW(K2U_IOC_MAGIC, 4, struct k2u_read_buffer)
#define K2U_IOC_ACK_ROUND           _IOW(K2U_IOC_MAGIC, 5, __u32)

#endif /* _KERN2USR_ABI_H */
