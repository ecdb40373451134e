//! Kernel problem reports, recognised in one place.
//!
//! Both the in-guest suites (`kern2usr-vmtest`, reading `/dev/kmsg`
//! records) and `cargo xtask` (reading the serial console, where lines
//! carry `[    1.234567]` times and, on newer kernels, `[    T1]` caller
//! ids) ask [`is_kernel_report`] whether a line is part of a report, so a
//! run cannot pass in the guest and fail on the host or the other way
//! round.
//!
//! What counts (each with a test below, from lines as the kernel prints
//! them): oopses and `kernel BUG at`, `BUG:` (also KASAN, KCSAN, KFENCE,
//! scheduling while atomic, sleeping in atomic context, slab `BUG <cache>`
//! reports), `WARNING:` (WARN_ON, lockdep, RCU), `Call Trace:`, `Kernel
//! panic`, `general protection fault`, `Unable to handle kernel`, lockdep
//! (`possible circular locking`, `possible recursive locking`,
//! `inconsistent lock state`, `lockdep` reports), kmemleak (`unreferenced
//! object`, `suspected memory leak`), UBSAN, debugobjects (`ODEBUG:` object
//! reports), hung tasks (`INFO: task ... blocked`), list debugging
//! (`list_add corruption`, `list_del corruption`, `list_add double add`),
//! `refcount_t:` saturation and the `cut here` marker.
//!
//! The common words (`BUG`, `WARNING`, `Oops`, `lockdep`, ...) count only
//! at the start of the message: a test named `detects_Oops` or the boot line
//! `RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable` is no
//! report. Boot lines of debug kernels (`kasan: KernelAddressSanitizer
//! initialized`, `ODEBUG: selftest passed`, lockdep's `... MAX_LOCKDEP_KEYS`
//! table) are not reports either.

/// Message starts that begin (or are part of) a kernel problem report.
const STARTS: &[&str] = &[
    "Oops:",
    "Oops ",
    "BUG:",
    // SLUB debugging: `BUG kmalloc-64 (Not tainted): Poison overwritten`.
    "BUG ",
    "kernel BUG at",
    "WARNING:",
    "------------[ cut here ]------------",
    "Call Trace:",
    "Kernel panic",
    "general protection",
    "Unable to handle kernel",
    "UBSAN:",
    // kmemleak's report (cat /sys/kernel/debug/kmemleak).
    "unreferenced object",
    // lockdep on a lock that was never initialised.
    "INFO: trying to register non-static key",
    // lockdep's own complaints (`lockdep bfs error:-1`, and the line it
    // prints in reports once it has switched itself off).
    "lockdep",
    "INFO: lockdep is turned off",
    "DEBUG_LOCKS_WARN_ON",
    // refcount saturation (a WARNING follows).
    "refcount_t:",
];

/// Phrases that report a problem wherever they appear in a message.
const PHRASES: &[&str] = &[
    "BUG: KASAN",
    "BUG: KCSAN",
    "BUG: KFENCE",
    "suspected memory leak",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "list_add corruption",
    "list_del corruption",
    "list_add double add",
];

/// The message part of a kernel log line: drops leading blanks and the
/// `[    1.234567]` time and `[    T1]` / `[  C0]` caller prefixes (a
/// `/dev/kmsg` record has none, a console line one or two).
pub fn message(line: &str) -> &str {
    let mut rest = line.trim_start();
    while let Some(after) = rest.strip_prefix('[') {
        match after.split_once(']') {
            Some((inside, tail))
                if inside.len() <= 20
                    && inside
                        .trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.') =>
            {
                rest = tail.trim_start()
            }
            _ => break,
        }
    }
    rest
}

/// Whether one kernel log line (console line or `/dev/kmsg` message) is
/// part of a kernel problem report.
pub fn is_kernel_report(line: &str) -> bool {
    let msg = message(line);
    if STARTS.iter().any(|s| msg.starts_with(s)) {
        return true;
    }
    if PHRASES.iter().any(|p| msg.contains(p)) {
        return true;
    }
    // Hung task: `INFO: task kworker/0:1:12 blocked for more than 120 seconds.`
    if msg.starts_with("INFO: task ") && msg.contains(" blocked") {
        return true;
    }
    // debugobjects: `ODEBUG: free active (active state 0) object: ...
    // object type: hrtimer hint: ...` (not its boot lines).
    msg.starts_with("ODEBUG:") && msg.contains("object type:")
}

/// The lines of `lines` that are part of kernel problem reports, each
/// once, in order (a console with a dmesg dump shows the same lines twice).
pub fn kernel_reports<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    lines
        .into_iter()
        .map(str::trim)
        .filter(|l| is_kernel_report(l) && seen.insert(*l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Report lines as kernels print them, with and without the console's
    /// time (and caller) prefixes.
    const REPORTS: &[&str] = &[
        // Oops, BUG, panic.
        "Oops: 0002 [#1] PREEMPT SMP NOPTI",
        "[   12.345678] Oops: 0002 [#1] PREEMPT SMP NOPTI",
        "[   12.345678] Oops: general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP KASAN NOPTI",
        "Oops [#1]",
        "[   12.345678] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "[    9.000000] [    T1] BUG: scheduling while atomic: swapper/0/1/0x00000002",
        "BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580",
        "[   10.100000] kernel BUG at kernel/c/link.c:212!",
        "BUG kmalloc-64 (Not tainted): Poison overwritten",
        "[    9.000000] Kernel panic - not syncing: Fatal exception",
        "Kernel panic - not syncing: No working init found.",
        "[    5.000000] Unable to handle kernel paging request at virtual address ffff800008000000",
        // WARN.
        "[    3.000000] WARNING: CPU: 1 PID: 42 at kernel/c/kern2usr.c:100 k2u_find+0x10/0x20 [kern2usr]",
        "WARNING: CPU: 0 PID: 88 at fs/eventfd.c:73 eventfd_signal_mask+0x8d/0xa0",
        "[    3.000000] ------------[ cut here ]------------",
        "[    3.000000] Call Trace:",
        "[    3.000000]  Call Trace:",
        "refcount_t: underflow; use-after-free.",
        // general protection.
        "[   12.345678] general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP",
        // KASAN, KCSAN, KFENCE.
        "[    9.000000] BUG: KASAN: slab-use-after-free in k2u_work+0x1/0x2 [kern2usr]",
        "BUG: KASAN: vmalloc-out-of-bounds in k2u_fill+0x4d/0x90 [kern2usr]",
        "[   44.000000] BUG: KCSAN: data-race in k2u_efd2_wake / k2u_round_work",
        "[   44.000000] [  T212] BUG: KCSAN: data-race in k2u_ioctl [kern2usr] / k2u_publish [kern2usr]",
        "BUG: KFENCE: use-after-free read in k2u_release+0x22/0x80 [kern2usr]",
        // lockdep.
        "[    9.000000] WARNING: possible circular locking dependency detected",
        "WARNING: possible recursive locking detected",
        "[   20.000000] WARNING: inconsistent lock state",
        "[ INFO: inconsistent lock state ]",
        "[   20.000000] INFO: lockdep is turned off.",
        "lockdep bfs error:-1",
        "[    9.000000] INFO: trying to register non-static key.",
        "DEBUG_LOCKS_WARN_ON(lock->magic != lock)",
        // kmemleak.
        "unreferenced object 0xffff888004a3c000 (size 64):",
        "[    9.000000] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
        // UBSAN.
        "[    9.000000] UBSAN: array-index-out-of-bounds in kernel/c/kern2usr.c:10:2",
        "UBSAN: shift-out-of-bounds in kernel/c/hist.c:31:22",
        // debugobjects.
        "[    9.000000] ODEBUG: free active (active state 0) object: 00000000 object type: hrtimer hint: k2u_timer+0x0/0x40",
        "ODEBUG: init destroyed (active state 0) object: ffff888003a1c0d8 object type: work_struct hint: k2u_ack_work+0x0/0x60 [kern2usr]",
        // Hung tasks.
        "[  250.000000] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
        "INFO: task rmmod:301 blocked for more than 122 seconds.",
        // List debugging.
        "[   30.000000] list_add corruption. prev->next should be next (ffff888003a1c100), but was ffff888003a1c000. (prev=ffff888003a1c0f0).",
        "list_del corruption, ffff888003a1c0d8->next is LIST_POISON1 (dead000000000100)",
        "list_del corruption. prev->next should be ffff888003a1c0d8, but was 0000000000000000. (prev=ffff888003a1c100)",
        "list_add double add: new=ffff888003a1c0d8, prev=ffff888003a1c0d8, next=ffff888003a1c100.",
    ];

    /// Lines that are no report: boot lines of debug kernels, our own
    /// log, the test runners' output (which names the problems it checks).
    const HARMLESS: &[&str] = &[
        "test report::tests::detects_Oops_and_BUG ... ok",
        "badinput: no_WARNING_on_refused_command ... ok",
        "ok - lockdep: no report after 20 rounds",
        "ok - BUG: none",
        "walkthrough: 14 passed, 0 failed",
        "[    0.123456] RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks, data leaks possible!",
        "[    0.300000] Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on, data leaks possible via Spectre v2 BHB attacks!",
        "[    0.200000] kmemleak: Kernel memory leak detector initialized (mem pool available: 15683)",
        "[    0.210000] kmemleak: Automatic memory scanning thread started",
        "[    0.000000] kasan: KernelAddressSanitizer initialized (generic)",
        "[    0.050000] kcsan: enabled early",
        "[    0.050000] kcsan: strict mode configured",
        "[    0.000000] Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar",
        "[    0.000000] ... MAX_LOCKDEP_SUBCLASSES:  8",
        "[    0.000000] ... MAX_LOCKDEP_KEYS:        8192",
        "[    0.000000] ODEBUG: selftest passed",
        "[    0.100000] ODEBUG: 13 of 13 active objects replaced",
        "[    0.400000] list_sort_test: start testing list_sort()",
        "[    1.000000] kern2usr: command 9 (UNKNOWN) refused: not a command",
        "kern2usr: unexpected value 9 on efd2 ignored",
        "kern2usr: late ack ignored: round 3 not shown yet",
        "[    1.000000] kern2usr: listener pid 97 exited: detached",
        "[    2.000000] INFO: some other notice",
        "[    0.500000] hung_task: INFO: task detector enabled",
        "",
    ];

    #[test]
    fn recognises_every_kind_of_report() {
        for line in REPORTS {
            assert!(is_kernel_report(line), "should match: {line}");
        }
    }

    #[test]
    fn ignores_harmless_lines() {
        for line in HARMLESS {
            assert!(!is_kernel_report(line), "should not match: {line}");
        }
    }

    #[test]
    fn strips_time_and_caller_prefixes_only() {
        assert_eq!(message("[   12.345678] BUG: x"), "BUG: x");
        assert_eq!(message("[    9.000000] [    T1] BUG: x"), "BUG: x");
        assert_eq!(message("[    9.000000] [  C0] BUG: x"), "BUG: x");
        assert_eq!(message("  Call Trace:"), "Call Trace:");
        // Not a prefix: lockdep's old bracketed banner is the message.
        assert_eq!(
            message("[ INFO: inconsistent lock state ]"),
            "[ INFO: inconsistent lock state ]"
        );
        assert_eq!(message("no prefix"), "no prefix");
    }

    #[test]
    fn lists_each_report_line_once() {
        let console = [
            "[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f",
            "ok",
            "K2U-DMESG-BEGIN",
            "[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f",
            "[ 1.1] Call Trace:",
        ];
        assert_eq!(
            kernel_reports(console),
            [
                "[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f",
                "[ 1.1] Call Trace:"
            ]
        );
    }
}
