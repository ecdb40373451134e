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
    /// Kill QEMU after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

/// The guest command of a fuzz run.
pub fn guest_command(seed: u64, ops: usize, shrink_secs: u64) -> String {
    format!("kern2usr-vmtest fuzz --seed {seed} --ops {ops} --shrink-secs {shrink_secs}")
}

/// `cargo xtask fuzz`.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let run = guest_command(args.seed, args.ops, args.shrink_secs);
    crate::vm(&args.guest, args.timeout, &run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_command_carries_the_options() {
        assert_eq!(
            guest_command(7, 300, 0),
            "kern2usr-vmtest fuzz --seed 7 --ops 300 --shrink-secs 0"
        );
    }
}
