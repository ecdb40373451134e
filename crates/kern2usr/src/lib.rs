//! Userspace library for the kern2usr kernel module: a process attaches
//! two eventfds, the module signals events (MMAP, START, STOP, EXIT and one
//! MEMORY_READY per round) and the listener reads the module's buffer
//! through a shared mapping, then acknowledges the round.
//!
//! The entry point is [`Channel`]: it opens the device (checking the
//! module's ABI version), maps the buffer read-only and attaches its own
//! eventfds. Events are typed ([`Event`]); each round is lent out as a
//! [`Round`], a zero-copy `&[u8]` view of the buffer that borrows the
//! channel until [`Round::ack`], so the view cannot outlive the round.
//!
//! ```no_run
//! use std::time::Duration;
//! use kern2usr::{Channel, Event};
//!
//! let mut ch = Channel::open()?; // /dev/kern2usr
//! println!("{:?} mode, {} byte buffer", ch.info().event_mode, ch.info().buffer_size);
//! loop {
//!     match ch.next(Duration::from_secs(1))? {
//!         Some(Event::MemoryReady { .. }) => {
//!             if let Some(round) = ch.round() {
//!                 let checksum = round.iter().fold(0u8, |a, &b| a ^ b);
//!                 println!("round {}: xor {checksum:#04x}", round.id());
//!                 round.ack()?;
//!             }
//!         }
//!         Some(Event::Exit) => break,
//!         Some(other) => println!("{other:?}"),
//!         None => println!("nothing for a second"),
//!     }
//! }
//! # Ok::<(), kern2usr::Error>(())
//! ```
//!
//! Channels of one's own (ABI v3): [`Channel::create`] makes the open
//! file a channel with its own buffer size, period and pacing
//! ([`ChannelOptions`]), driven by [`Channel::command`] and measured by
//! [`Channel::stats`]; [`Channel::attach`] listens to a kernel producer's
//! channel, whose rounds show the length it published. [`channels`] lists
//! every channel of the module.
//!
//! ```no_run
//! use std::time::Duration;
//! use kern2usr::{abi, Channel, ChannelOptions, Command, Event};
//!
//! let mut ch = Channel::create(&ChannelOptions::new().buffer_size(64 << 10).name("mine"))?;
//! ch.command(Command::Mmap)?;
//! ch.command(Command::Start)?;
//! let mut rounds = 0;
//! while rounds < 10 {
//!     if let Some(Event::MemoryReady { .. }) = ch.next(Duration::from_secs(2))? {
//!         let id = ch.id();
//!         if let Some(round) = ch.round() {
//!             let seq = u64::from(round.id());
//!             assert!(round.iter().enumerate().all(|(i, &b)| b == abi::channel_pattern_byte(id, seq, i)));
//!             round.ack()?;
//!             rounds += 1;
//!         }
//!     }
//! }
//! ch.command(Command::Stop)?;
//! println!("{:?}", ch.stats()?.round_trips);
//! # Ok::<(), kern2usr::Error>(())
//! ```
//!
//! Ring channels (ABI 4): [`Ring::create`] with [`ChannelOptions::ring`]
//! makes a channel whose buffer is a ring of slots; [`Ring::next`] lends
//! each round as a [`Slot`], acknowledged through the control page
//! (`ack_seq`) without a system call while the module keeps up.
//!
//! Waiting elsewhere: [`Channel`] is [`AsFd`](std::os::fd::AsFd) (its
//! kernel->user eventfd), so it joins an existing epoll/mio loop; when the
//! fd is readable, call [`Channel::try_next`] until it returns `None`.
//!
//! Lower layers stay public for tools and tests: [`Session`] (the raw
//! protocol driver with codes), [`Device`], [`MappedBuffer`], [`CtrlPage`]
//! (adaptive mode), [`Params`] (the module parameters) and [`Stats`].
//! Feature `tokio`: `aio::AsyncChannel`, `next().await` over tokio's
//! `AsyncFd`. Features: `serde` (Serialize for [`Stats`]), `testing` (test doubles
//! such as `Channel::from_fakes`; not a stable API).
//!
//! The protocol is described in `docs/PROTOCOL.md`; every number and layout
//! comes from [`abi`].

#![deny(missing_docs)]

pub use kern2usr_abi as abi;

#[cfg(feature = "tokio")]
pub mod aio;
pub mod channel;
pub mod ctrl;
pub mod device;
pub mod error;
pub mod eventfd;
pub mod listener;
pub mod listing;
pub mod options;
pub mod params;
pub mod ring;
pub mod session;
pub mod stats;

pub use channel::{Channel, ChannelKind, Event, Info, Round};
pub use ctrl::CtrlPage;
pub use device::{Access, Device, MappedBuffer, Mismatch};
pub use error::{Error, Result};
pub use eventfd::EventFd;
pub use listener::{AckMode, AckSink, EventSource, KernelSide, Listener, ListenerConfig, Outcome};
pub use listing::{channels, ChannelEntry, Pacing};
pub use options::{ChannelOptions, ChannelStats, Command};
pub use params::Params;
pub use ring::{Ring, Slot};
pub use session::Session;
pub use stats::{Histogram, Stats};
