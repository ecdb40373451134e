//! Renders `kernel/c/kern2usr_abi.h` from the definitions in `defs.rs`.
//!
//! `cargo xtask gen-header` writes the file; the tests in `tests/header.rs`
//! fail when the checked-in copy is stale or when a C compiler sees other
//! values or layouts than Rust does.

use std::fmt::Write;
use std::string::String;
use std::vec::Vec;

use crate::{
    param, Code, EventMode, ABI_VERSION, CHANNELS_HEADER, CHANNEL_NAME_LEN, CREATE_ADAPTIVE,
    CREATE_ATTACH, CREATE_BACK_TO_BACK, CREATE_FLAGS, CREATE_RING, CTRL_MMAP_OFFSET,
    DEFAULT_BUFFER_SIZE, DEFAULT_MAX_CHANNELS, DEFAULT_MAX_CHANNEL_MEMORY, DEFAULT_PERIOD_MS,
    DEFAULT_POLL_TIMEOUT_MS, DEVICE_NAME, EVENT_QUEUE_LEN, EVENT_QUEUE_RESERVE, HIST_BUCKETS,
    HIST_MAX_BITS, HIST_SUB_BITS, IOC_MAGIC, KERNEL_ASLEEP, KERNEL_POLLING, LISTENER_ASLEEP,
    LISTENER_SPINNING, MAX_ACK_POLL_US, MAX_BUFFER_SIZE, MAX_CHANNELS_LIMIT,
    MAX_CHANNEL_MEMORY_LIMIT, MAX_PERIOD_MS, MAX_PRODUCERS, MODULE_NAME, RING_MAX_SLOTS,
    RING_MIN_SLOTS, STATS_KEYS,
};

/// Path of the generated header, relative to the workspace root.
pub const HEADER_PATH: &str = "kernel/c/kern2usr_abi.h";

/// The C header text.
pub fn render() -> String {
    let mut h = String::new();
    let mut line = |s: &str| {
        h.push_str(s);
        h.push('\n');
    };
    line("/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */");
    line("/*");
    line(" * kern2usr ABI. Generated from abi/src/defs.rs by `cargo xtask gen-header`;");
    line(" * do not edit: a test fails when this copy and the Rust definition differ.");
    line(" */");
    line("#ifndef _KERN2USR_ABI_H");
    line("#define _KERN2USR_ABI_H");
    line("");
    line("#include <linux/types.h>");
    line("#include <linux/ioctl.h>");
    line("");
    let mut defs = String::new();
    let mut def = |name: &str, value: &str| {
        let _ = writeln!(defs, "#define {name:<32}{value}");
    };
    def("K2U_ABI_VERSION", &ABI_VERSION.to_string());
    def("K2U_MODULE_NAME", &quoted(MODULE_NAME));
    def("K2U_DEVICE_NAME", &quoted(DEVICE_NAME));
    def("K2U_PARAM_USR_PID", &quoted(param::USR_PID));
    def("K2U_PARAM_USR_EFD", &quoted(param::USR_EFD));
    def("K2U_PARAM_USR_EFD2", &quoted(param::USR_EFD2));
    def("K2U_PARAM_CUR_CMD", &quoted(param::CUR_CMD));
    def("K2U_PARAM_BUFFER_SIZE", &quoted(param::BUFFER_SIZE));
    def("K2U_PARAM_PERIOD_MS", &quoted(param::PERIOD_MS));
    def("K2U_PARAM_EVENT_MODE", &quoted(param::EVENT_MODE));
    def("K2U_PARAM_LAST_ERROR", &quoted(param::LAST_ERROR));
    def("K2U_PARAM_STATS", &quoted(param::STATS));
    def("K2U_PARAM_HISTOGRAM", &quoted(param::HISTOGRAM));
    def("K2U_PARAM_BACK_TO_BACK", &quoted(param::BACK_TO_BACK));
    def("K2U_PARAM_ADAPTIVE", &quoted(param::ADAPTIVE));
    def("K2U_PARAM_MAX_CHANNELS", &quoted(param::MAX_CHANNELS));
    def(
        "K2U_PARAM_MAX_CHANNEL_MEMORY",
        &quoted(param::MAX_CHANNEL_MEMORY),
    );
    def("K2U_PARAM_CHANNELS", &quoted(param::CHANNELS));
    def("K2U_PARAM_ACK_POLL_US", &quoted(param::ACK_POLL_US));
    def("", "");
    for code in Code::ALL {
        def(
            &format!("K2U_CMD_{}", code.name()),
            &code.value().to_string(),
        );
    }
    def("", "");
    for mode in [EventMode::Counter, EventMode::Queue] {
        let name = mode.name().to_ascii_uppercase();
        def(
            &format!("K2U_EVENT_MODE_{name}"),
            &(mode as u32).to_string(),
        );
    }
    def("", "");
    def(
        "K2U_DEFAULT_BUFFER_SIZE",
        &format!("{DEFAULT_BUFFER_SIZE}UL"),
    );
    def("K2U_MAX_BUFFER_SIZE", &format!("{MAX_BUFFER_SIZE}UL"));
    def("K2U_DEFAULT_PERIOD_MS", &format!("{DEFAULT_PERIOD_MS}U"));
    def("K2U_MAX_PERIOD_MS", &format!("{MAX_PERIOD_MS}U"));
    def(
        "K2U_DEFAULT_POLL_TIMEOUT_MS",
        &format!("{DEFAULT_POLL_TIMEOUT_MS}U"),
    );
    def("K2U_EVENT_QUEUE_LEN", &format!("{EVENT_QUEUE_LEN}U"));
    def(
        "K2U_EVENT_QUEUE_RESERVE",
        &format!("{EVENT_QUEUE_RESERVE}U"),
    );
    def("", "");
    def(
        "K2U_DEFAULT_MAX_CHANNELS",
        &format!("{DEFAULT_MAX_CHANNELS}U"),
    );
    def("K2U_MAX_CHANNELS_LIMIT", &format!("{MAX_CHANNELS_LIMIT}U"));
    def("K2U_MAX_PRODUCERS", &format!("{MAX_PRODUCERS}U"));
    def(
        "K2U_DEFAULT_MAX_CHANNEL_MEMORY",
        &format!("{DEFAULT_MAX_CHANNEL_MEMORY}ULL"),
    );
    def(
        "K2U_MAX_CHANNEL_MEMORY_LIMIT",
        &format!("{MAX_CHANNEL_MEMORY_LIMIT}ULL"),
    );
    def("K2U_CHANNEL_NAME_LEN", &format!("{CHANNEL_NAME_LEN}"));
    def("K2U_CHANNELS_HEADER", &quoted(CHANNELS_HEADER));
    def(
        "K2U_CREATE_BACK_TO_BACK",
        &format!("{CREATE_BACK_TO_BACK}U"),
    );
    def("K2U_CREATE_ADAPTIVE", &format!("{CREATE_ADAPTIVE}U"));
    def("K2U_CREATE_ATTACH", &format!("{CREATE_ATTACH}U"));
    def("K2U_CREATE_RING", &format!("{CREATE_RING}U"));
    def("K2U_CREATE_FLAGS", &format!("{CREATE_FLAGS}U"));
    def("K2U_RING_MIN_SLOTS", &format!("{RING_MIN_SLOTS}U"));
    def("K2U_RING_MAX_SLOTS", &format!("{RING_MAX_SLOTS}U"));
    def("K2U_MAX_ACK_POLL_US", &format!("{MAX_ACK_POLL_US}U"));
    def("", "");
    def("K2U_HIST_SUB_BITS", &format!("{HIST_SUB_BITS}U"));
    def("K2U_HIST_MAX_BITS", &format!("{HIST_MAX_BITS}U"));
    def("K2U_HIST_BUCKETS", &format!("{HIST_BUCKETS}U"));
    def("K2U_CTRL_MMAP_OFFSET", &format!("{CTRL_MMAP_OFFSET}ULL"));
    def("K2U_LISTENER_ASLEEP", &format!("{LISTENER_ASLEEP}U"));
    def("K2U_LISTENER_SPINNING", &format!("{LISTENER_SPINNING}U"));
    def("K2U_KERNEL_ASLEEP", &format!("{KERNEL_ASLEEP}U"));
    def("K2U_KERNEL_POLLING", &format!("{KERNEL_POLLING}U"));
    let keys: Vec<String> = STATS_KEYS.iter().map(|k| quoted(k)).collect();
    def("K2U_STATS_KEYS", &format!("{{ {} }}", keys.join(", ")));
    // The blank-name rows above separate groups.
    let defs = defs.replace(&format!("#define {:<32}\n", ""), "\n");
    h.push_str(&defs);
    h.push_str(
        "\n/* Byte i of the buffer after a round has filled it. */\n\
         #define K2U_PATTERN_BYTE(i)         ((__u8)((i) % 255))\n\
         \n\
         /* Byte i of channel id's buffer after its round r (see defs.rs). */\n\
         #define K2U_CHANNEL_PATTERN_MODULUS 251ULL\n\
         #define K2U_CHANNEL_PATTERN_BYTE(id, r, i) \\\n\
         \t((__u8)((((__u64)(i) % 251) + ((__u64)(id) % 251) * 31 % 251 + \\\n\
         \t\t  ((__u64)(r) % 251)) % 251))\n\
         \n\
         /* One event read() from the device in queue mode. */\n\
         struct k2u_event {\n\
         \t__u64 seq;\n\
         \t__u32 code;\n\
         \t__u32 round;\n\
         };\n\
         \n\
         /* K2U_IOC_REGISTER: the caller's own eventfds. */\n\
         struct k2u_register {\n\
         \t__s32 efd;\n\
         \t__s32 efd2;\n\
         };\n\
         \n\
         /* K2U_IOC_READ_BUFFER: copy the data buffer to addr. */\n\
         struct k2u_read_buffer {\n\
         \t__u64 addr;\n\
         \t__u64 len;\n\
         };\n\
         \n\
         /* One ring slot's entry in the control page. */\n\
         struct k2u_ring_slot {\n\
         \t__u64 round;\n\
         \t__u64 len;\n\
         };\n\
         \n\
         /* The control page, mapped at K2U_CTRL_MMAP_OFFSET (see defs.rs, Ctrl). */\n\
         struct k2u_ctrl {\n\
         \t__u64 ready_seq;\n\
         \t__u32 listener_state;\n\
         \t__u32 kernel_state;\n\
         \t__u64 doorbells_skipped;\n\
         \t__u64 ready_len;\n\
         \t__u64 ack_seq;\n\
         \t__u64 wake_seq;\n\
         \t__u32 ring_slots;\n\
         \t__u32 reserved;\n\
         \t__u64 ring_full;\n\
         \tstruct k2u_ring_slot slots[K2U_RING_MAX_SLOTS];\n\
         };\n\
         \n\
         /* K2U_IOC_INFO result. */\n\
         struct k2u_info {\n\
         \t__u32 abi_version;\n\
         \t__u32 event_mode;\n\
         \t__u64 buffer_size;\n\
         \t__u32 period_ms;\n\
         \t__u32 channel_id;\n\
         };\n\
         \n\
         /* K2U_IOC_CREATE: make the open file a channel (or attach to a producer's). */\n\
         struct k2u_create {\n\
         \t__s32 efd;\n\
         \t__s32 efd2;\n\
         \t__u64 buffer_size;\n\
         \t__u32 period_ms;\n\
         \t__u32 flags;\n\
         \tchar name[K2U_CHANNEL_NAME_LEN];\n\
         \t__u32 id;\n\
         \t__u32 ring_slots;\n\
         };\n\
         \n\
         /* K2U_IOC_CHANNEL_STATS result. */\n\
         struct k2u_channel_stats {\n\
         \t__u32 id;\n\
         \t__u32 event_mode;\n\
         \t__u64 buffer_size;\n\
         \t__u64 rounds_published;\n\
         \t__u64 count;\n\
         \t__u64 min_ns;\n\
         \t__u64 mean_ns;\n\
         \t__u64 p50_ns;\n\
         \t__u64 p90_ns;\n\
         \t__u64 p99_ns;\n\
         \t__u64 p999_ns;\n\
         \t__u64 max_ns;\n\
         };\n\
         \n",
    );
    let _ = writeln!(h, "#define K2U_IOC_MAGIC               0x{IOC_MAGIC:02X}");
    h.push_str(
        "#define K2U_IOC_REGISTER            _IOW(K2U_IOC_MAGIC, 1, struct k2u_register)\n\
         #define K2U_IOC_ACK                 _IO(K2U_IOC_MAGIC, 2)\n\
         #define K2U_IOC_INFO                _IOR(K2U_IOC_MAGIC, 3, struct k2u_info)\n\
         #define K2U_IOC_READ_BUFFER         _IOW(K2U_IOC_MAGIC, 4, struct k2u_read_buffer)\n\
         #define K2U_IOC_ACK_ROUND           _IOW(K2U_IOC_MAGIC, 5, __u32)\n\
         #define K2U_IOC_CREATE              _IOWR(K2U_IOC_MAGIC, 6, struct k2u_create)\n\
         #define K2U_IOC_CHANNEL_CMD         _IOW(K2U_IOC_MAGIC, 7, __u32)\n\
         #define K2U_IOC_CHANNEL_STATS       _IOR(K2U_IOC_MAGIC, 8, struct k2u_channel_stats)\n\
         \n\
         #endif /* _KERN2USR_ABI_H */\n",
    );
    h
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}
