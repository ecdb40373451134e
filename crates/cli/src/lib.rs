//! The `kern2usr` command's own code beside the binary: its command-line
//! definition ([`args`], from which xtask renders the man pages and shell
//! completions), the README reference table generated from it
//! ([`reference`]) and the benchmark (insmod runner, the JSON report,
//! console dump). xtask reads the dump with [`bench::dump`] and draws the
//! plot from the JSON; nothing here is part of the `kern2usr` library.

pub mod args;
pub mod bench;
pub mod reference;
