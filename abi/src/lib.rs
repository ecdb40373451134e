//! The kern2usr ABI, defined once.
//!
//! The definitions live in `defs.rs`, which has no dependencies and uses only
//! `core`, so the Rust kernel module includes the very same file with
//! `#[path]`. The C module's header is rendered from it ([`header::render`])
//! and a test keeps the checked-in copy in step.

mod defs;
pub use defs::*;

pub mod header;
