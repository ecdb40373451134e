//! The `kern2usr` command's own code beside the binary: the benchmark
//! (insmod runner, SVG report, console dump). xtask reads the dump with
//! [`bench::dump`]; nothing here is part of the `kern2usr` library.

pub mod bench;
