//! `cargo xtask fuzz`: boot a kernel running `kern2usr-vmtest fuzz`, the
//! random operations checked against the protocol model.

use clap::Args;

use anyhow::Result;

use crate::GuestArgs;

/// Options of `cargo xtask fuzz`.
#[derive(Args)]
pub struct FuzzArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Operations to draw.
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Seconds the guest may spend shrinking a failing op log.
    #[arg(long, default_value_t = 120)]
    shrink_secs: u64,
    /// Stop drawing ops after this many seconds in the guest (the run
    /// passes with the ops done by then): bounds a long run's time.
    #[arg(long)]
    max_secs: Option<u64>,
    /// Kill QEMU after this many seconds (default: enough for the ops at
    /// 4 ops/s plus the shrinking and 15 minutes for boot and setup).
    #[arg(long)]
    timeout: Option<u64>,
}

/// The default QEMU time limit of a run: a hang guard, far above what a
/// run takes (TCG runs 10-100 ops/s; the guest prints progress lines).
pub fn default_timeout(ops: usize, shrink_secs: u64) -> u64 {
    900 + (ops as u64).div_ceil(4) + 2 * shrink_secs
}

/// The guest command of a fuzz run.
pub fn guest_command(seed: u64, ops: usize, shrink_secs: u64, max_secs: Option<u64>) -> String {
    let mut cmd =
        format!("kern2usr-vmtest fuzz --seed {seed} --ops {ops} --shrink-secs {shrink_secs}");
    if let Some(s) = max_secs {
        cmd.push_str(&format!(" --max-secs {s}"));
    }
    cmd
}

/// `cargo xtask fuzz`.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let run = guest_command(args.seed, args.ops, args.shrink_secs, args.max_secs);
    let timeout = args.timeout.unwrap_or_else(|| {
        let ops = default_timeout(args.ops, args.shrink_secs);
        args.max_secs
            .map_or(ops, |s| ops.min(900 + s + 2 * args.shrink_secs))
    });
    crate::vm(&args.guest, timeout, &run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_command_carries_the_options() {
        assert_eq!(
            guest_command(7, 300, 0, None),
            "kern2usr-vmtest fuzz --seed 7 --ops 300 --shrink-secs 0"
        );
        assert_eq!(
            guest_command(7, 100_000, 300, Some(1200)),
            "kern2usr-vmtest fuzz --seed 7 --ops 100000 --shrink-secs 300 --max-secs 1200"
        );
    }

    #[test]
    fn the_time_limit_grows_with_the_ops() {
        assert_eq!(default_timeout(300, 0), 975);
        assert!(default_timeout(100_000, 300) >= 100_000 / 4 + 600);
        assert!(default_timeout(100_000, 0) > default_timeout(1000, 0));
    }
}
