//! The library's error type: every variant says what failed and, where it
//! can, what to do about it.

use std::io;
use std::path::PathBuf;

use rustix::io::Errno;

use crate::abi::MODULE_NAME;

/// Result of the kern2usr library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to the module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The parameters directory does not exist.
    #[error("module {MODULE_NAME} is not loaded: insmod {MODULE_NAME}.ko first")]
    ModuleNotLoaded,

    /// Reading a module parameter failed.
    #[error("cannot read module parameter {name} ({}): {source}", path.display())]
    ParamRead {
        /// Parameter name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// Writing a module parameter other than a refused `cur_cmd` failed.
    #[error(
        "cannot write {value:?} to module parameter {name} ({}): {source}{}",
        path.display(),
        write_hint(source)
    )]
    ParamWrite {
        /// Parameter name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// The value written.
        value: String,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// A parameter holds something this library cannot parse.
    #[error("module parameter {name} reads {value:?}, expected {expected}")]
    ParamValue {
        /// Parameter name.
        name: String,
        /// What it reads.
        value: String,
        /// What was expected.
        expected: &'static str,
    },

    /// The module refused a command written to `cur_cmd`.
    #[error("command {value} ({name}) refused: {}: {reason}", io::Error::from(*errno))]
    CommandRefused {
        /// The text written (a number for well-formed commands).
        value: String,
        /// The command's name, `UNKNOWN` for values that are no code.
        name: &'static str,
        /// errno of the write.
        errno: Errno,
        /// The module's reason, read from `last_error`.
        reason: String,
    },

    /// An eventfd operation failed.
    #[error("eventfd {op} failed: {source}")]
    EventFd {
        /// `create`, `read` or `write`.
        op: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// poll() failed.
    #[error("poll on the eventfd failed: {0}")]
    Poll(#[source] io::Error),

    /// Opening the device node failed.
    #[error("cannot open device {}: {source}; {}", path.display(), open_hint(source))]
    DeviceOpen {
        /// The node.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// mmap() failed.
    #[error("cannot mmap {len} bytes at offset {offset}: {source}; the module maps at most buffer_size bytes from offset 0")]
    Mmap {
        /// Requested length.
        len: usize,
        /// Requested offset.
        offset: u64,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// A write through a read-only mapping or out of its bounds was asked for.
    #[error("cannot write {len} bytes at offset {offset} of a {size}-byte {access} mapping")]
    BufferAccess {
        /// Offset asked for.
        offset: usize,
        /// Bytes asked for.
        len: usize,
        /// Size of the mapping.
        size: usize,
        /// `read-only` or `read-write`.
        access: &'static str,
    },

    /// An ioctl on the device failed.
    #[error("ioctl {name} failed: {source}")]
    Ioctl {
        /// `K2U_IOC_*` name.
        name: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// read() of event records from the device failed.
    #[error(
        "cannot read event records from the device: {source}{}",
        read_hint(source)
    )]
    EventRead {
        /// Why.
        #[source]
        source: io::Error,
    },

    /// read() returned a length that is not a whole number of records.
    #[error("device read returned {got} bytes, not a multiple of the {record}-byte event record: ABI mismatch between module and tool")]
    EventSize {
        /// Bytes returned.
        got: usize,
        /// Size of one record.
        record: usize,
    },

    /// The module broke the protocol or did not answer in time (a gap in
    /// the event sequence, an unexpected code, a stalled round).
    #[error("protocol: {0}")]
    Protocol(String),

    /// The module speaks another ABI version than this library.
    #[error("ABI mismatch: the module speaks kern2usr ABI v{module}, this library v{library}; load the module built from the same tree")]
    AbiMismatch {
        /// `abi_version` the module reported in `K2U_IOC_INFO`.
        module: u32,
        /// [`crate::abi::ABI_VERSION`] of this library.
        library: u32,
    },

    /// `K2U_IOC_INFO` reported an event mode this library does not know.
    #[error("the module reports event mode {0}, which ABI v{abi} does not define", abi = crate::abi::ABI_VERSION)]
    UnknownEventMode(u32),

    /// The round a [`crate::Round`] stands for was no longer outstanding
    /// when it was acknowledged: STOP_TEST abandoned it (ESTALE or EPROTO
    /// from `K2U_IOC_ACK_ROUND`). Bytes viewed through the guard after the
    /// abandonment may belong to a later fill.
    #[error("round {round} was not outstanding any more when acknowledged (abandoned by STOP_TEST?): {source}")]
    RoundAbandoned {
        /// The round's id (low 32 bits).
        round: u32,
        /// ESTALE or EPROTO.
        #[source]
        source: io::Error,
    },

    /// [`crate::ChannelOptions`] that the module would refuse (EINVAL),
    /// caught before any system call.
    #[error("invalid channel options: {0}")]
    InvalidOptions(String),

    /// The module's channel limits are reached (ENOSPC from
    /// `K2U_IOC_CREATE`): `max_channels` channels exist, or the buffer
    /// would pass `max_channel_memory`.
    #[error(
        "cannot create a channel of {buffer_size} bytes: the module's channel limits are reached ({source}); \
         close a channel, ask for a smaller buffer, or (as root) raise max_channels or max_channel_memory \
         in /sys/module/kern2usr/parameters (see `kern2usr status` for what exists)"
    )]
    ChannelLimit {
        /// The buffer size asked for.
        buffer_size: u64,
        /// ENOSPC.
        #[source]
        source: io::Error,
    },

    /// EPERM on a channel operation: this process is not the channel's
    /// owner (another process created it; the file was inherited or
    /// passed), or, on the default channel, neither its listener nor
    /// privileged.
    #[error(
        "{op} refused on {}: this process is not its owner ({source}); {}",
        channel_name(*channel),
        owner_hint(*channel)
    )]
    NotOwner {
        /// The operation (`K2U_IOC_*`, `mmap`, `read`).
        op: &'static str,
        /// The channel's id (0: the default channel).
        channel: u32,
        /// EPERM.
        #[source]
        source: io::Error,
    },

    /// EBUSY from `K2U_IOC_CREATE`: the file is a channel already, or
    /// the producer's channel to attach to has a listener.
    #[error("{what} ({source})")]
    ChannelBusy {
        /// What is busy and what to do.
        what: String,
        /// EBUSY.
        #[source]
        source: io::Error,
    },

    /// ENOENT from an attach: no kernel producer has a channel of that
    /// name.
    #[error(
        "no producer channel is named {name:?} ({source}); load the module that creates it \
         (e.g. k2u_sample_producer) and check the names in `kern2usr status`"
    )]
    NoProducer {
        /// The name asked for.
        name: String,
        /// ENOENT.
        #[source]
        source: io::Error,
    },

    /// ENOTCONN: a channel operation on a file that is not a channel.
    #[error(
        "{op}: the file is not a channel ({source}); make it one with Channel::create or Channel::attach"
    )]
    NotAChannel {
        /// The operation.
        op: &'static str,
        /// ENOTCONN.
        #[source]
        source: io::Error,
    },

    /// EOPNOTSUPP: a command on a producer's channel (its producer drives
    /// the rounds; the listener only acknowledges them).
    #[error(
        "{command} refused on channel {channel}: a kernel producer drives it and takes no commands ({source})"
    )]
    ProducerChannel {
        /// The command's name.
        command: &'static str,
        /// The channel's id.
        channel: u32,
        /// EOPNOTSUPP.
        #[source]
        source: io::Error,
    },

    /// The module refused a command on a channel (`K2U_IOC_CHANNEL_CMD`)
    /// for the reasons `cur_cmd` has on the default channel.
    #[error(
        "command {command} refused on channel {channel}: {source}{}",
        channel_command_hint(source)
    )]
    ChannelCommand {
        /// The command's name (`MMAP`, `START_TEST`, ...).
        command: &'static str,
        /// The channel's id.
        channel: u32,
        /// The errno.
        #[source]
        source: io::Error,
    },

    /// Writing the listener's output failed.
    #[error("cannot write the listener's output: {0}")]
    Output(#[source] io::Error),
}

impl Error {
    /// The errno behind this error, if it came from a system call.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::CommandRefused { errno, .. } => Some(*errno),
            Error::ParamRead { source, .. }
            | Error::RoundAbandoned { source, .. }
            | Error::ParamWrite { source, .. }
            | Error::EventFd { source, .. }
            | Error::Poll(source)
            | Error::DeviceOpen { source, .. }
            | Error::Mmap { source, .. }
            | Error::Ioctl { source, .. }
            | Error::EventRead { source }
            | Error::ChannelLimit { source, .. }
            | Error::NotOwner { source, .. }
            | Error::ChannelBusy { source, .. }
            | Error::NoProducer { source, .. }
            | Error::NotAChannel { source, .. }
            | Error::ProducerChannel { source, .. }
            | Error::ChannelCommand { source, .. }
            | Error::Output(source) => Errno::from_io_error(source),
            Error::ModuleNotLoaded
            | Error::ParamValue { .. }
            | Error::BufferAccess { .. }
            | Error::EventSize { .. }
            | Error::AbiMismatch { .. }
            | Error::UnknownEventMode(_)
            | Error::InvalidOptions(_)
            | Error::Protocol(_) => None,
        }
    }
}

fn write_hint(source: &io::Error) -> &'static str {
    match Errno::from_io_error(source) {
        Some(Errno::ACCESS) | Some(Errno::PERM) => {
            "; module parameters are root-writable: run as root"
        }
        Some(Errno::INVAL) => {
            "; the module rejected the value (see PROTOCOL.md for the accepted ranges)"
        }
        _ => "",
    }
}

fn open_hint(source: &io::Error) -> &'static str {
    match Errno::from_io_error(source) {
        Some(Errno::NOENT) => {
            "load the module (insmod kern2usr.ko) and create the node (scripts/create_chdev.sh)"
        }
        Some(Errno::NXIO) | Some(Errno::NODEV) => {
            "no driver behind this node: load the module, then re-create the node (scripts/create_chdev.sh)"
        }
        Some(Errno::ACCESS) | Some(Errno::PERM) => "the node is root-only: run as root",
        _ => "check that the module is loaded and the node is a kern2usr device",
    }
}

fn read_hint(source: &io::Error) -> &'static str {
    match Errno::from_io_error(source) {
        Some(Errno::INVAL) => {
            " (read() is only valid in queue mode, with a buffer of at least one record)"
        }
        _ => "",
    }
}

fn channel_name(id: u32) -> String {
    if id == 0 {
        "the default channel".to_owned()
    } else {
        format!("channel {id}")
    }
}

fn owner_hint(id: u32) -> &'static str {
    if id == 0 {
        "the default channel is its listener's and root's (CAP_SYS_ADMIN): run as root, \
         or create a channel of your own (Channel::create)"
    } else {
        "only the process that created a channel may use it: create one in this process \
         (a channel's file passed to or inherited by another process is refused)"
    }
}

fn channel_command_hint(source: &io::Error) -> &'static str {
    match Errno::from_io_error(source) {
        Some(Errno::PROTO) => {
            "; out of order: MMAP before START_TEST, START_TEST before STOP_TEST, nothing after EXIT_TEST \
             (or the listener is gone)"
        }
        Some(Errno::BUSY) => "; the test is running: STOP_TEST first",
        Some(Errno::AGAIN) => "; the channel's event queue is full: read its events first",
        Some(Errno::INVAL) => "; not a command the channel takes (2-5)",
        _ => "",
    }
}
