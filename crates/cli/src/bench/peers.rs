//! The peers: what a driver author would pick instead of kern2usr, driven
//! by `k2u_bench_peers.ko` (kernel/peers/, built for the bench guest only)
//! and measured like kern2usr's mechanisms: the module times each round
//! from just before it publishes the data to the moment it sees the
//! acknowledgement, into a histogram with the ABI's buckets, and this
//! listener checks every byte against the fill pattern.
//!
//! | mechanism | notification | data | acknowledgement |
//! | --- | --- | --- | --- |
//! | `netlink` | a generic netlink message (family `k2u_bench`) unicast to our socket | recv() copies it out; checked | a netlink message back (`K2UB_CMD_ACK` with the sequence) |
//! | `relay` | poll() on the mapped relay file (relay_flush() wakes it) | checked in place in the mapping | the sequence written to `relay_ack` (relay_subbufs_consumed()) |
//!
//! The netlink ack goes back over the same socket: the listener of a
//! netlink channel already holds it, and the kernel side is already a genl
//! family, so a second mechanism (an eventfd) is what such a user would
//! not add. A netlink attribute carries at most 65531 bytes (`nla_len` is
//! 16 bits), so the module sends the data as attributes of 32 KiB each.
//!
//! Each call loads the module, does one run and unloads it.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{sockopt, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::{Mechanism, Run};
use kern2usr::abi::pattern_byte;
use kern2usr::device::first_pattern_mismatch;
use kern2usr::stats::{parse_histogram, Histogram, Stats};

/// The module's name (for rmmod).
pub const MODULE_NAME: &str = "k2u_bench_peers";
/// Where the bench guest's initramfs puts the module.
pub const DEFAULT_MODULE: &str = "/root/kern2usr/kern/k2u_bench_peers.ko";
/// The module's debugfs directory.
pub const DEBUGFS_DIR: &str = "/sys/kernel/debug/k2u_bench_peers";
/// Sub-buffers of the relay channel (`K2UB_RELAY_SUBBUFS`).
pub const RELAY_SUBBUFS: usize = 4;
/// `K2UB_RELAY_MAGIC` at the start of each relay sub-buffer.
pub const RELAY_MAGIC: u32 = 0x4b32_5542;
/// Bytes of the header before the data in a relay sub-buffer.
pub const RELAY_HEADER: usize = 16;

/// Generic netlink encoding, just what the benchmark needs (netlink(7),
/// genetlink.h); native byte order, 4-byte alignment.
pub mod genl {
    /// `NLMSG_ERROR`.
    pub const NLMSG_ERROR: u16 = 2;
    /// `NLM_F_REQUEST`.
    pub const NLM_F_REQUEST: u16 = 1;
    /// `NLM_F_ACK`.
    pub const NLM_F_ACK: u16 = 4;
    /// `GENL_ID_CTRL`: the controller family, which resolves names.
    pub const GENL_ID_CTRL: u16 = 16;
    /// `CTRL_CMD_NEWFAMILY`: the controller's answer.
    pub const CTRL_CMD_NEWFAMILY: u8 = 1;
    /// `CTRL_CMD_GETFAMILY`.
    pub const CTRL_CMD_GETFAMILY: u8 = 3;
    /// `CTRL_ATTR_FAMILY_ID` (u16).
    pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
    /// `CTRL_ATTR_FAMILY_NAME` (NUL-terminated string).
    pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
    /// The module's family.
    pub const FAMILY_NAME: &str = "k2u_bench";
    /// Its version.
    pub const FAMILY_VERSION: u8 = 1;
    /// `K2UB_CMD_START`: SIZE, ROUNDS.
    pub const CMD_START: u8 = 1;
    /// `K2UB_CMD_DATA`: SEQ, CHUNK...
    pub const CMD_DATA: u8 = 2;
    /// `K2UB_CMD_ACK`: SEQ.
    pub const CMD_ACK: u8 = 3;
    /// `K2UB_ATTR_SIZE` (u32).
    pub const ATTR_SIZE: u16 = 1;
    /// `K2UB_ATTR_ROUNDS` (u32).
    pub const ATTR_ROUNDS: u16 = 2;
    /// `K2UB_ATTR_SEQ` (u32).
    pub const ATTR_SEQ: u16 = 3;
    /// `K2UB_ATTR_CHUNK`: the next piece of the data.
    pub const ATTR_CHUNK: u16 = 4;

    const NLMSG_HDRLEN: usize = 16;
    const GENL_HDRLEN: usize = 4;
    const NLA_HDRLEN: usize = 4;
    /// `NLA_TYPE_MASK`: the type without the NESTED and BYTEORDER flags.
    const NLA_TYPE_MASK: u16 = 0x3fff;

    fn align4(n: usize) -> usize {
        (n + 3) & !3
    }

    /// One generic netlink message: header, genl header, attributes.
    /// Fails if it does not fit the 32-bit length or an attribute the
    /// 16-bit one.
    pub fn message(
        ty: u16,
        flags: u16,
        seq: u32,
        cmd: u8,
        version: u8,
        attrs: &[(u16, &[u8])],
    ) -> Result<Vec<u8>, String> {
        let mut out = vec![0u8; NLMSG_HDRLEN];
        out.extend_from_slice(&[cmd, version, 0, 0]);
        for &(kind, data) in attrs {
            let len = u16::try_from(NLA_HDRLEN + data.len())
                .map_err(|_| format!("attribute {kind} of {} bytes", data.len()))?;
            out.extend_from_slice(&len.to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(data);
            out.resize(align4(out.len()), 0);
        }
        let total =
            u32::try_from(out.len()).map_err(|_| format!("a message of {} bytes", out.len()))?;
        out[0..4].copy_from_slice(&total.to_ne_bytes());
        out[4..6].copy_from_slice(&ty.to_ne_bytes());
        out[6..8].copy_from_slice(&flags.to_ne_bytes());
        out[8..12].copy_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid 0: to the kernel.
        Ok(out)
    }

    /// A received netlink message.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Message<'a> {
        /// `NLMSG_ERROR`: 0 is an acknowledgement, else `-errno`.
        Error {
            /// 0 or a negative errno.
            code: i32,
            /// The sequence of the request it answers.
            seq: u32,
        },
        /// A generic netlink message of family `ty`.
        Genl {
            /// The family id.
            ty: u16,
            /// Its sequence number.
            seq: u32,
            /// The command.
            cmd: u8,
            /// The attributes (see [`attrs`]).
            attrs: &'a [u8],
        },
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// The first message in `buf` (the module sends one per datagram).
    pub fn parse(buf: &[u8]) -> Result<Message<'_>, String> {
        if buf.len() < NLMSG_HDRLEN {
            return Err(format!("a netlink message of {} bytes", buf.len()));
        }
        let len = u32_at(buf, 0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(format!(
                "nlmsg_len {len} in a datagram of {} bytes",
                buf.len()
            ));
        }
        let ty = u16_at(buf, 4);
        let seq = u32_at(buf, 8);
        let body = &buf[NLMSG_HDRLEN..len];
        if ty == NLMSG_ERROR {
            if body.len() < 4 {
                return Err("a truncated NLMSG_ERROR".to_owned());
            }
            let code = u32_at(body, 0) as i32;
            // The request's header follows: its sequence says what failed.
            let seq = if body.len() >= 4 + NLMSG_HDRLEN {
                u32_at(body, 4 + 8)
            } else {
                seq
            };
            return Ok(Message::Error { code, seq });
        }
        if body.len() < GENL_HDRLEN {
            return Err(format!("message type {ty} without a genl header"));
        }
        Ok(Message::Genl {
            ty,
            seq,
            cmd: body[0],
            attrs: &body[GENL_HDRLEN..],
        })
    }

    /// The attributes in `buf`, in order, as (type, payload).
    pub fn attrs(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), String>> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= buf.len() {
                return None;
            }
            let rest = &buf[at..];
            if rest.len() < NLA_HDRLEN {
                at = buf.len();
                return Some(Err(format!(
                    "{} stray bytes after the attributes",
                    rest.len()
                )));
            }
            let len = u16_at(rest, 0) as usize;
            if len < NLA_HDRLEN || len > rest.len() {
                at = buf.len();
                return Some(Err(format!(
                    "an attribute of {len} bytes where {} are left",
                    rest.len()
                )));
            }
            let kind = u16_at(rest, 2) & NLA_TYPE_MASK;
            at += align4(len);
            Some(Ok((kind, &rest[NLA_HDRLEN..len])))
        })
    }

    /// A u32 attribute's value.
    pub fn get_u32(payload: &[u8]) -> Option<u32> {
        Some(u32::from_ne_bytes(payload.try_into().ok()?))
    }

    /// The family id in the controller's answer to `CTRL_CMD_GETFAMILY`.
    pub fn family_id(msg: &Message<'_>) -> Result<u16, String> {
        match *msg {
            Message::Genl {
                ty: GENL_ID_CTRL,
                cmd: CTRL_CMD_NEWFAMILY,
                attrs: a,
                ..
            } => {
                for attr in attrs(a) {
                    let (kind, payload) = attr?;
                    if kind == CTRL_ATTR_FAMILY_ID {
                        let id: [u8; 2] = payload
                            .try_into()
                            .map_err(|_| "a family id that is not 2 bytes".to_owned())?;
                        return Ok(u16::from_ne_bytes(id));
                    }
                }
                Err("the controller's answer has no family id".to_owned())
            }
            Message::Error { code, .. } => Err(format!(
                "the controller does not know the family: {}",
                super::errno_text(code)
            )),
            Message::Genl { ty, cmd, .. } => Err(format!(
                "message type {ty} command {cmd} where the controller's answer was expected"
            )),
        }
    }

    /// What one DATA message carried.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Data {
        /// Its `ATTR_SEQ`.
        pub seq: Option<u32>,
        /// Bytes in its chunks.
        pub len: usize,
        /// Offset of the first byte that differs from `pattern`, if any.
        pub first_bad: Option<usize>,
    }

    /// Walk a DATA message's attributes: the sequence, and the chunks
    /// compared in order with `pattern` (a chunk past its end is bad).
    pub fn check_data(attrs_buf: &[u8], pattern: &[u8]) -> Result<Data, String> {
        let mut data = Data {
            seq: None,
            len: 0,
            first_bad: None,
        };
        for attr in attrs(attrs_buf) {
            let (kind, payload) = attr?;
            match kind {
                ATTR_SEQ => data.seq = get_u32(payload),
                ATTR_CHUNK => {
                    let end = data.len + payload.len();
                    let good = pattern.get(data.len..end) == Some(payload);
                    if !good && data.first_bad.is_none() {
                        let expected = pattern.get(data.len..).unwrap_or_default();
                        let i = payload
                            .iter()
                            .zip(expected)
                            .position(|(a, b)| a != b)
                            .unwrap_or(expected.len().min(payload.len()));
                        data.first_bad = Some(data.len + i);
                    }
                    data.len = end;
                }
                _ => {}
            }
        }
        Ok(data)
    }
}

/// `-errno` as text.
fn errno_text(code: i32) -> String {
    let e = std::io::Error::from_raw_os_error(code.saturating_neg());
    format!("{e} ({code})")
}

fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn debugfs(name: &str) -> PathBuf {
    Path::new(DEBUGFS_DIR).join(name)
}

/// Write `text` to the module's debugfs file `name` in one write().
fn write_file(name: &str, text: &str) -> Result<()> {
    let path = debugfs(name);
    let mut f = OpenOptions::new()
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("`{}` into {}", text.trim(), path.display()))
}

fn loaded() -> bool {
    Path::new("/sys/module").join(MODULE_NAME).exists()
}

/// Load the module, do `body`, read the module's statistics of `mech`,
/// unload. Never fails as a whole: the reason goes to `Run::error`.
fn with_module(
    mechanism: Mechanism,
    size: usize,
    target: u64,
    timeout: Duration,
    module: &Path,
    body: impl FnOnce(&mut Run) -> Result<()>,
) -> Run {
    let mut run = Run::new(mechanism, size, target);
    let loaded_ok = (|| -> Result<()> {
        if !module.exists() {
            bail!(
                "no module at {} (--peers-module; `cargo xtask bench` builds and packs it)",
                module.display()
            );
        }
        if loaded() {
            sh("rmmod", &[MODULE_NAME])?;
        }
        sh("insmod", &[&module.to_string_lossy()])?;
        let control = debugfs("control");
        let deadline = Instant::now() + timeout;
        while !control.exists() {
            if Instant::now() >= deadline {
                bail!("{} did not appear (is debugfs mounted?)", control.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    })();
    if let Err(e) = loaded_ok {
        run.error = Some(format!("loading the peers module: {e:#}"));
        return run;
    }
    let result = body(&mut run).and_then(|()| collect(&mut run, mechanism));
    if let Err(e) = result {
        run.error = Some(format!("{e:#}"));
        // Best effort: stop a run the module may still be driving.
        let _ = write_file("control", "abort");
    }
    if let Err(e) = sh("rmmod", &[MODULE_NAME]) {
        run.error
            .get_or_insert_with(|| format!("rmmod failed: {e:#}"));
    }
    run
}

/// The module's statistics of `mechanism` into `run.hist`, checked
/// against what the listener saw.
fn collect(run: &mut Run, mechanism: Mechanism) -> Result<()> {
    let name = mechanism.name();
    let read = |what: &str| -> Result<String> {
        let path = debugfs(&format!("{name}_{what}"));
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let stats = Stats::parse(&read("stats")?)?;
    let buckets = parse_histogram(&read("histogram")?)?;
    run.hist = Histogram::from_kernel(&buckets, &stats)?;
    run.kernel_stats = Some(stats);
    if u128::from(stats.max) > run.wall.as_nanos() {
        bail!(
            "the module's slowest round trip ({} ns) is longer than the whole run ({} ns)",
            stats.max,
            run.wall.as_nanos()
        );
    }
    if stats.count != run.target {
        bail!(
            "the module counted {} rounds, {} were acknowledged",
            stats.count,
            run.rounds
        );
    }
    if run.bad_rounds > 0 {
        bail!("{} round(s) with bad data", run.bad_rounds);
    }
    Ok(())
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(pattern_byte).collect()
}

/// The netlink peer: one run of `target` rounds of `size` bytes.
pub fn netlink(size: usize, target: u64, timeout: Duration, module: &Path) -> Run {
    with_module(Mechanism::Netlink, size, target, timeout, module, |run| {
        netlink_rounds(run, timeout)
    })
}

struct Genl {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Genl {
    fn open(size: usize, timeout: Duration) -> Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(rustix::net::netlink::GENERIC),
        )
        .context("socket(AF_NETLINK, NETLINK_GENERIC)")?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0)).context("bind (netlink)")?;
        // Room for two rounds (a round and an error or ack) at any size.
        let room = 2 * (size + 65536);
        if sockopt::set_socket_recv_buffer_size_force(&fd, room).is_err() {
            sockopt::set_socket_recv_buffer_size(&fd, room).context("SO_RCVBUF")?;
        }
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(timeout))
            .context("SO_RCVTIMEO")?;
        Ok(Self {
            fd,
            buf: vec![0u8; size + 65536],
        })
    }

    fn send(&self, msg: &[u8]) -> Result<()> {
        let n = rustix::net::send(&self.fd, msg, SendFlags::empty()).context("send (netlink)")?;
        if n != msg.len() {
            bail!("netlink send took {n} of {} bytes", msg.len());
        }
        Ok(())
    }

    /// The next datagram; an error after `timeout` (SO_RCVTIMEO).
    fn recv(&mut self, what: &str) -> Result<usize> {
        loop {
            match rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::TRUNC) {
                Ok((_, n)) if n > self.buf.len() => {
                    bail!(
                        "{what}: a datagram of {n} bytes, more than {}",
                        self.buf.len()
                    )
                }
                Ok((_, n)) => return Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => bail!("{what}: nothing within the timeout"),
                Err(e) => return Err(anyhow!(e).context(format!("{what}: recv (netlink)"))),
            }
        }
    }

    fn family(&mut self) -> Result<u16> {
        let mut name = genl::FAMILY_NAME.as_bytes().to_vec();
        name.push(0);
        let msg = genl::message(
            genl::GENL_ID_CTRL,
            genl::NLM_F_REQUEST,
            1,
            genl::CTRL_CMD_GETFAMILY,
            1,
            &[(genl::CTRL_ATTR_FAMILY_NAME, &name)],
        )
        .map_err(|e| anyhow!(e))?;
        self.send(&msg)?;
        let n = self.recv("resolving the family")?;
        let parsed = genl::parse(&self.buf[..n]).map_err(|e| anyhow!(e))?;
        genl::family_id(&parsed).map_err(|e| anyhow!(e))
    }
}

fn netlink_rounds(run: &mut Run, timeout: Duration) -> Result<()> {
    let size = run.size;
    let mut sock = Genl::open(size, timeout)?;
    let family = sock.family()?;
    let size32 = u32::try_from(size).context("size")?;
    let rounds32 = u32::try_from(run.target).context("rounds")?;
    let reference = pattern(size);
    let start_msg = genl::message(
        family,
        genl::NLM_F_REQUEST,
        1,
        genl::CMD_START,
        genl::FAMILY_VERSION,
        &[
            (genl::ATTR_SIZE, &size32.to_ne_bytes()),
            (genl::ATTR_ROUNDS, &rounds32.to_ne_bytes()),
        ],
    )
    .map_err(|e| anyhow!(e))?;
    let start = Instant::now();
    sock.send(&start_msg)?;
    for seq in 1..=rounds32 {
        let what = format!("round {seq}");
        let n = sock.recv(&what)?;
        let attrs = match genl::parse(&sock.buf[..n]).map_err(|e| anyhow!(e))? {
            genl::Message::Genl {
                ty,
                cmd: genl::CMD_DATA,
                attrs,
                ..
            } if ty == family => attrs,
            genl::Message::Error { code, seq: of } => {
                bail!(
                    "{what}: the module refused request {of}: {}",
                    errno_text(code)
                )
            }
            genl::Message::Genl { ty, cmd, .. } => {
                bail!("{what}: message type {ty} command {cmd} where DATA was expected")
            }
        };
        let data = genl::check_data(attrs, &reference).map_err(|e| anyhow!(e))?;
        if data.seq != Some(seq) {
            bail!("{what}: DATA carries sequence {:?}", data.seq);
        }
        if data.len != size || data.first_bad.is_some() {
            run.bad_rounds += 1;
        }
        // The last ack asks for the kernel's answer: it says the module
        // took it (an ack it refuses is answered anyway).
        let last = seq == rounds32;
        let flags = genl::NLM_F_REQUEST | if last { genl::NLM_F_ACK } else { 0 };
        let ack = genl::message(
            family,
            flags,
            seq + 1,
            genl::CMD_ACK,
            genl::FAMILY_VERSION,
            &[(genl::ATTR_SEQ, &seq.to_ne_bytes())],
        )
        .map_err(|e| anyhow!(e))?;
        sock.send(&ack)?;
        run.rounds += 1;
        run.wall = start.elapsed();
    }
    let n = sock.recv("the last ack's answer")?;
    match genl::parse(&sock.buf[..n]).map_err(|e| anyhow!(e))? {
        genl::Message::Error { code: 0, .. } => Ok(()),
        genl::Message::Error { code, seq } => {
            bail!("the module refused request {seq}: {}", errno_text(code))
        }
        genl::Message::Genl { cmd, .. } => {
            bail!("command {cmd} after the last round")
        }
    }
}

/// The relay peer: one run of `target` rounds of `size` bytes.
pub fn relay(size: usize, target: u64, timeout: Duration, module: &Path) -> Run {
    with_module(Mechanism::Relay, size, target, timeout, module, |run| {
        let r = relay_rounds(run, timeout);
        // The channel goes; the file is closed and unmapped by now.
        let closed = write_file("control", "close");
        r.and(closed)
    })
}

/// The relay file, mapped read-only.
struct RelayMap {
    ptr: *mut std::ffi::c_void,
    len: usize,
    _file: File,
}

impl RelayMap {
    fn open(len: usize) -> Result<Self> {
        let path = debugfs("relay0");
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: a fresh mapping chosen by the kernel (null hint), of the
        // whole relay buffer, read-only; nothing else in this process
        // refers to it, and Drop unmaps it.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                &file,
                0,
            )
        }
        .with_context(|| format!("mmap of {} ({len} bytes)", path.display()))?;
        Ok(Self {
            ptr,
            len,
            _file: file,
        })
    }

    /// Bytes `[at, at + n)` of the buffer.
    ///
    /// # Safety
    ///
    /// The module must not write them while the slice lives: it writes a
    /// sub-buffer only after the listener has acknowledged the round it
    /// holds (one round in flight, [`RELAY_SUBBUFS`] sub-buffers).
    unsafe fn bytes(&self, at: usize, n: usize) -> &[u8] {
        assert!(at.checked_add(n).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds (asserted) of a live read-only mapping; the
        // caller promises nobody writes the range meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>().add(at), n) }
    }
}

impl Drop for RelayMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in open(), unmapped once; no slice of it
        // outlives self (bytes() borrows self).
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

fn relay_rounds(run: &mut Run, timeout: Duration) -> Result<()> {
    let size = run.size;
    let subbuf = size + rustix::param::page_size();
    write_file("control", &format!("relay {size} {}", run.target))?;
    let map = RelayMap::open(subbuf * RELAY_SUBBUFS)?;
    let ack_path = debugfs("relay_ack");
    let mut ack = OpenOptions::new()
        .write(true)
        .open(&ack_path)
        .with_context(|| format!("cannot open {}", ack_path.display()))?;
    let ts = Timespec::try_from(timeout).context("timeout")?;
    let rounds32 = u32::try_from(run.target).context("rounds")?;
    let start = Instant::now();
    write_file("control", "go")?;
    for seq in 1..=rounds32 {
        loop {
            let mut fds = [PollFd::new(&map._file, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(0) => bail!("round {seq}: relay0 not readable within {timeout:?}"),
                Ok(_) if fds[0].revents().contains(PollFlags::IN) => break,
                Ok(_) => bail!("round {seq}: poll says {:?}", fds[0].revents()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(anyhow!(e).context("poll (relay0)")),
            }
        }
        let at = (seq as usize - 1) % RELAY_SUBBUFS * subbuf;
        // SAFETY: the sub-buffer of round `seq`, complete (poll said so)
        // and not written again before our ack below (see bytes()).
        let header = unsafe { map.bytes(at, RELAY_HEADER) };
        let word = |i: usize| genl::get_u32(&header[4 * i..4 * i + 4]).unwrap_or_default();
        let (magic, got, len) = (word(0), word(1), word(2));
        if magic != RELAY_MAGIC || got != seq || len as usize != size {
            bail!("round {seq}: sub-buffer header magic {magic:#x} sequence {got} length {len}");
        }
        // SAFETY: as for the header, same sub-buffer.
        let data = unsafe { map.bytes(at + RELAY_HEADER, size) };
        if first_pattern_mismatch(data).is_some() {
            run.bad_rounds += 1;
        }
        ack.write_all(format!("{seq}\n").as_bytes())
            .with_context(|| format!("round {seq}: acknowledging"))?;
        run.rounds += 1;
        run.wall = start.elapsed();
    }
    drop(map);
    drop(ack);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::genl::*;
    use super::*;

    fn data_message(family: u16, seq: u32, data: &[u8], chunk: usize) -> Vec<u8> {
        let seq_bytes = seq.to_ne_bytes();
        let mut attrs: Vec<(u16, &[u8])> = vec![(ATTR_SEQ, &seq_bytes)];
        attrs.extend(data.chunks(chunk).map(|c| (ATTR_CHUNK, c)));
        message(family, 0, seq, CMD_DATA, FAMILY_VERSION, &attrs).unwrap_or_default()
    }

    #[test]
    fn a_message_is_laid_out_as_netlink_says() -> Result<(), String> {
        let m = message(
            0x1234,
            NLM_F_REQUEST | NLM_F_ACK,
            7,
            CMD_ACK,
            1,
            &[(ATTR_SEQ, &9u32.to_ne_bytes()), (ATTR_CHUNK, &[1, 2, 3])],
        )?;
        // 16 + 4 + (4 + 4) + (4 + 3, padded to 8).
        assert_eq!(m.len(), 36);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), 36);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x1234);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 5);
        assert_eq!(u32::from_ne_bytes([m[8], m[9], m[10], m[11]]), 7);
        assert_eq!(&m[16..20], &[CMD_ACK, 1, 0, 0]);
        assert_eq!(&m[20..22], &8u16.to_ne_bytes());
        assert_eq!(&m[22..24], &ATTR_SEQ.to_ne_bytes());
        assert_eq!(&m[32..36], &[1, 2, 3, 0]);
        let Message::Genl {
            ty,
            seq,
            cmd,
            attrs: a,
        } = parse(&m)?
        else {
            return Err("not genl".into());
        };
        assert_eq!((ty, seq, cmd), (0x1234, 7, CMD_ACK));
        let all: Vec<(u16, &[u8])> = attrs(a).collect::<Result<_, _>>()?;
        assert_eq!(
            all,
            vec![
                (ATTR_SEQ, &9u32.to_ne_bytes()[..]),
                (ATTR_CHUNK, &[1, 2, 3][..])
            ]
        );
        Ok(())
    }

    #[test]
    fn too_big_an_attribute_is_refused() {
        let big = vec![0u8; 65532];
        assert!(message(20, 0, 1, CMD_DATA, 1, &[(ATTR_CHUNK, &big)]).is_err());
        let fits = vec![0u8; 65531];
        assert!(message(20, 0, 1, CMD_DATA, 1, &[(ATTR_CHUNK, &fits)]).is_ok());
    }

    #[test]
    fn data_is_checked_chunk_by_chunk() -> Result<(), String> {
        let size = 65536 + 4096;
        let reference = pattern(size);
        let m = data_message(30, 5, &reference, 32768);
        let Message::Genl { attrs: a, cmd, .. } = parse(&m)? else {
            return Err("not genl".into());
        };
        assert_eq!(cmd, CMD_DATA);
        let d = check_data(a, &reference)?;
        assert_eq!(
            d,
            Data {
                seq: Some(5),
                len: size,
                first_bad: None
            }
        );

        let mut bad = reference.clone();
        bad[40000] ^= 1;
        let m = data_message(30, 6, &bad, 32768);
        let Message::Genl { attrs: a, .. } = parse(&m)? else {
            return Err("not genl".into());
        };
        assert_eq!(check_data(a, &reference)?.first_bad, Some(40000));

        // Short data is seen by its length, long data as bad.
        let m = data_message(30, 7, &reference[..4096], 32768);
        let Message::Genl { attrs: a, .. } = parse(&m)? else {
            return Err("not genl".into());
        };
        assert_eq!(check_data(a, &reference)?.len, 4096);
        let m = data_message(30, 8, &pattern(size + 10), 32768);
        let Message::Genl { attrs: a, .. } = parse(&m)? else {
            return Err("not genl".into());
        };
        assert_eq!(check_data(a, &reference)?.first_bad, Some(size));
        Ok(())
    }

    #[test]
    fn errors_and_family_answers_parse() -> Result<(), String> {
        // NLMSG_ERROR -EBUSY answering request 42.
        let request = message(30, NLM_F_REQUEST, 42, CMD_START, 1, &[])?;
        let mut e = vec![0u8; 16];
        e[0..4].copy_from_slice(&(16u32 + 4 + 16).to_ne_bytes());
        e[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        e.extend_from_slice(&(-16i32).to_ne_bytes());
        e.extend_from_slice(&request[..16]);
        assert_eq!(parse(&e)?, Message::Error { code: -16, seq: 42 });
        assert!(family_id(&parse(&e)?).is_err());

        let answer = message(
            GENL_ID_CTRL,
            0,
            1,
            CTRL_CMD_NEWFAMILY,
            2,
            &[
                (CTRL_ATTR_FAMILY_NAME, b"k2u_bench\0"),
                (CTRL_ATTR_FAMILY_ID, &0x25u16.to_ne_bytes()),
            ],
        )?;
        assert_eq!(family_id(&parse(&answer)?)?, 0x25);
        Ok(())
    }

    #[test]
    fn a_missing_module_fails_the_run_with_the_reason() {
        let missing = Path::new("/nonexistent/k2u_bench_peers.ko");
        for r in [
            netlink(4096, 10, Duration::from_secs(1), missing),
            relay(4096, 10, Duration::from_secs(1), missing),
        ] {
            assert!(!r.passed());
            assert_eq!(r.rounds, 0);
            let e = r.error.unwrap_or_default();
            assert!(
                e.starts_with("loading the peers module: no module at /nonexistent/"),
                "{e}"
            );
        }
    }

    #[test]
    fn broken_messages_are_errors_not_panics() -> Result<(), String> {
        assert!(parse(&[0u8; 8]).is_err());
        let mut m = message(30, 0, 1, CMD_DATA, 1, &[(ATTR_SEQ, &1u32.to_ne_bytes())])?;
        // nlmsg_len beyond the datagram.
        m[0] = 200;
        assert!(parse(&m).is_err());
        // An attribute longer than what is left.
        let attrs_buf = [40u8, 0, 3, 0, 1, 2, 3, 4];
        assert!(attrs(&attrs_buf).any(|a| a.is_err()));
        // Stray bytes after the last attribute.
        let attrs_buf = [8u8, 0, 3, 0, 1, 0, 0, 0, 9];
        let all: Vec<_> = attrs(&attrs_buf).collect();
        assert_eq!(all.len(), 2);
        assert!(all[1].is_err());
        Ok(())
    }
}
