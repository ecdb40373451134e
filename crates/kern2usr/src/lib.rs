//! Userspace side of kern2usr: the two eventfds, the module parameters, the
//! mapped device buffer and the listener (the seed's `KernUsr`).
//!
//! The protocol is described in `docs/PROTOCOL.md`; every number and layout
//! comes from [`abi`].

pub use kern2usr_abi as abi;

pub mod channel;
pub mod ctrl;
pub mod device;
pub mod error;
pub mod eventfd;
pub mod listener;
pub mod params;
pub mod session;
pub mod stats;

pub use channel::{Channel, Event, Info, Round};
pub use ctrl::CtrlPage;
pub use device::{Access, Device, MappedBuffer, Mismatch};
pub use error::{Error, Result};
pub use eventfd::EventFd;
pub use listener::{AckMode, AckSink, EventSource, KernelSide, Listener, ListenerConfig, Outcome};
pub use params::Params;
pub use session::Session;
pub use stats::{Histogram, Stats};
