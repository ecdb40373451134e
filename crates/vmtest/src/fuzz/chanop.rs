//! The fuzzer's channel operations (ABI 4): channels the fuzzer itself
//! creates and owns, their calls, their limits, the listing, and another
//! process trying them; with a module that has them (`ack_poll_us`
//! exists), ring channels and acks through the control page's `ack_seq`.
//! One line of text each (`ch.<name> ...`).

use std::fmt;

use anyhow::{bail, Context, Result};
use kern2usr::abi::{
    param, CHANNEL_NAME_LEN, CREATE_ADAPTIVE, CREATE_ATTACH, CREATE_BACK_TO_BACK, CREATE_RING,
    CTRL_MMAP_OFFSET, MAX_BUFFER_SIZE,
};

use super::op::{escape, number_text, unescape, RoundPick};
use super::rng::Rng;

/// Channel slots (channels the fuzzer process owns at once).
pub const CHAN_SLOTS: u8 = 3;

/// Which fds a CREATE names as efd and efd2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EfdPick {
    /// Two fresh eventfds.
    Normal,
    /// The fresh efd twice.
    Same,
    /// efd2 is fd 900 (not open).
    NotOpen,
    /// efd is the device file itself.
    NotEventfd,
    /// A fresh efd with 1 written into it first.
    Pending,
}

const EFD_PICKS: [(EfdPick, &str); 5] = [
    (EfdPick::Normal, "normal"),
    (EfdPick::Same, "same"),
    (EfdPick::NotOpen, "notopen"),
    (EfdPick::NotEventfd, "noteventfd"),
    (EfdPick::Pending, "pending"),
];

/// The fields of one CREATE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateReq {
    /// `buffer_size`.
    pub size: u64,
    /// `period_ms`.
    pub period_ms: u32,
    /// `flags`.
    pub flags: u32,
    /// `name`'s bytes (at most 16; NUL-padded to 16).
    pub name: Vec<u8>,
    /// The eventfds.
    pub efds: EfdPick,
    /// `id` (must be 0).
    pub id: u32,
    /// `ring_slots` (ABI 3's `reserved`): 0, or with `K2U_CREATE_RING` a
    /// power of two from 2 to 64.
    pub reserved: u32,
}

impl CreateReq {
    /// The name field as the ABI has it.
    pub fn name_field(&self) -> [u8; CHANNEL_NAME_LEN] {
        let mut n = [0u8; CHANNEL_NAME_LEN];
        for (d, s) in n.iter_mut().zip(&self.name) {
            *d = *s;
        }
        n
    }

    /// The CREATE argument with these eventfd numbers.
    pub fn create_arg(&self, efd: i32, efd2: i32) -> kern2usr::abi::Create {
        kern2usr::abi::Create {
            efd,
            efd2,
            buffer_size: self.size,
            period_ms: self.period_ms,
            flags: self.flags,
            name: self.name_field(),
            id: self.id,
            ring_slots: self.reserved,
        }
    }
}

/// Length of a channel mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapLen {
    /// The channel's buffer size.
    Whole,
    /// One page.
    Page,
    /// The buffer size and a page more.
    Over,
    /// Zero.
    Zero,
}

/// One channel mmap variant: (len, offset, shared, write).
pub type ChanMmap = (MapLen, u64, bool, bool);

/// The channel mmap variants the fuzzer tries.
pub const CHAN_MMAPS: [ChanMmap; 10] = [
    (MapLen::Whole, 0, true, false),
    (MapLen::Whole, 0, false, true),
    (MapLen::Page, 0, true, true),
    (MapLen::Page, 0, false, false),
    (MapLen::Whole, 0, true, true),
    (MapLen::Over, 0, true, false),
    (MapLen::Page, CTRL_MMAP_OFFSET, true, true),
    (MapLen::Page, CTRL_MMAP_OFFSET, false, false),
    (MapLen::Page, 4096, true, false),
    (MapLen::Zero, 0, true, false),
];

/// Which value `ch.ackseq` stores in `ack_seq`, from the control page's
/// `ready_seq` and the highest value stored before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckPick {
    /// `ready_seq`: every round published so far.
    Ready,
    /// One round more than the highest stored (a ring: consume one).
    Next,
    /// `ready_seq + 1` and beyond: out of range.
    Beyond,
    /// Below the highest stored: out of range once that was taken.
    Behind,
}

impl AckPick {
    /// The value stored, from the control page's `ready_seq` and the
    /// highest value stored before (`hi`).
    pub fn value(self, ready_seq: u64, hi: u64) -> u64 {
        match self {
            AckPick::Ready => ready_seq,
            AckPick::Next => hi + 1,
            AckPick::Beyond => ready_seq + 1,
            AckPick::Behind => hi.saturating_sub(1),
        }
    }
}

const ACK_PICKS: [(AckPick, &str); 4] = [
    (AckPick::Ready, "ready"),
    (AckPick::Next, "next"),
    (AckPick::Beyond, "beyond"),
    (AckPick::Behind, "behind"),
];

/// One channel operation. `u8` is the channel slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChanOp {
    /// Open the device (if the slot has no file) and CREATE.
    Create(u8, CreateReq),
    /// CREATE again on the slot's channel file (EBUSY).
    Recreate(u8),
    /// `K2U_IOC_CHANNEL_CMD`.
    Cmd(u8, u32),
    /// `K2U_IOC_CHANNEL_STATS`.
    Stats(u8),
    /// `K2U_IOC_INFO`.
    Info(u8),
    /// Read the channel's efd (O_NONBLOCK).
    ReadEfd(u8),
    /// Read records from the channel's file (this many bytes, O_NONBLOCK).
    Records(u8, u32),
    /// Write a value to the channel's efd2.
    WriteEfd2(u8, u64),
    /// `K2U_IOC_ACK`.
    Ack(u8),
    /// `K2U_IOC_ACK_ROUND`.
    AckRound(u8, RoundPick),
    /// mmap() variant `CHAN_MMAPS[i]`.
    Mmap(u8, u8),
    /// munmap() of the slot's last mapping.
    Munmap(u8),
    /// Check every data mapping byte by byte.
    Check(u8),
    /// `K2U_IOC_READ_BUFFER` of this many bytes, checked byte by byte.
    ReadBuf(u8, u32),
    /// close() of the channel's file (the mappings stay).
    Close(u8),
    /// A forked child tries every call on the slot's file: EPERM.
    Foreign(u8),
    /// One write() of these bytes to `max_channels` or `max_channel_memory`.
    Limit(String, Vec<u8>),
    /// Read the `channels` listing and the limits.
    List,
    /// Store a value in the control page's `ack_seq`, then write 7 to
    /// efd2 (the doorbell that makes the module look).
    AckSeq(u8, AckPick),
}

impl ChanOp {
    /// The channel slot the op acts on.
    pub fn slot(&self) -> Option<u8> {
        match self {
            ChanOp::Create(c, _)
            | ChanOp::Recreate(c)
            | ChanOp::Cmd(c, _)
            | ChanOp::Stats(c)
            | ChanOp::Info(c)
            | ChanOp::ReadEfd(c)
            | ChanOp::Records(c, _)
            | ChanOp::WriteEfd2(c, _)
            | ChanOp::Ack(c)
            | ChanOp::AckRound(c, _)
            | ChanOp::Mmap(c, _)
            | ChanOp::Munmap(c)
            | ChanOp::Check(c)
            | ChanOp::ReadBuf(c, _)
            | ChanOp::Close(c)
            | ChanOp::AckSeq(c, _)
            | ChanOp::Foreign(c) => Some(*c),
            ChanOp::Limit(..) | ChanOp::List => None,
        }
    }
}

fn pick_str(p: RoundPick) -> String {
    match p {
        RoundPick::Current => "current".to_owned(),
        RoundPick::Prev => "prev".to_owned(),
        RoundPick::Next => "next".to_owned(),
        RoundPick::Value(v) => v.to_string(),
    }
}

impl fmt::Display for ChanOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChanOp::Create(c, r) => {
                let efds = EFD_PICKS
                    .iter()
                    .find(|(p, _)| *p == r.efds)
                    .map_or("normal", |(_, s)| s);
                write!(
                    f,
                    "ch.create {c} {} {} {:#x} {} {efds} {} {}",
                    r.size,
                    r.period_ms,
                    r.flags,
                    escape(&r.name),
                    r.id,
                    r.reserved
                )
            }
            ChanOp::Recreate(c) => write!(f, "ch.recreate {c}"),
            ChanOp::Cmd(c, code) => write!(f, "ch.cmd {c} {code}"),
            ChanOp::Stats(c) => write!(f, "ch.stats {c}"),
            ChanOp::Info(c) => write!(f, "ch.info {c}"),
            ChanOp::ReadEfd(c) => write!(f, "ch.readefd {c}"),
            ChanOp::Records(c, n) => write!(f, "ch.records {c} {n}"),
            ChanOp::WriteEfd2(c, v) => write!(f, "ch.writeefd2 {c} {v}"),
            ChanOp::Ack(c) => write!(f, "ch.ack {c}"),
            ChanOp::AckRound(c, p) => write!(f, "ch.ackround {c} {}", pick_str(*p)),
            ChanOp::Mmap(c, v) => write!(f, "ch.mmap {c} {v}"),
            ChanOp::Munmap(c) => write!(f, "ch.munmap {c}"),
            ChanOp::Check(c) => write!(f, "ch.check {c}"),
            ChanOp::ReadBuf(c, n) => write!(f, "ch.readbuf {c} {n}"),
            ChanOp::Close(c) => write!(f, "ch.close {c}"),
            ChanOp::Foreign(c) => write!(f, "ch.foreign {c}"),
            ChanOp::Limit(name, bytes) => write!(f, "ch.limit {name} {}", escape(bytes)),
            ChanOp::List => write!(f, "ch.list"),
            ChanOp::AckSeq(c, p) => {
                let p = ACK_PICKS
                    .iter()
                    .find(|(k, _)| k == p)
                    .map_or("ready", |(_, s)| s);
                write!(f, "ch.ackseq {c} {p}")
            }
        }
    }
}

fn num(s: &str) -> Result<u64> {
    let v = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    v.with_context(|| format!("bad number {s:?}"))
}

impl ChanOp {
    /// Parse one `ch.` line of the op log.
    pub fn parse(line: &str) -> Result<ChanOp> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let arg = |i: usize| {
            w.get(i)
                .copied()
                .with_context(|| format!("op {line:?}: argument {i} missing"))
        };
        let slot = || -> Result<u8> {
            let s = num(arg(1)?)?;
            if s >= u64::from(CHAN_SLOTS) {
                bail!("op {line:?}: no channel slot {s}");
            }
            Ok(s as u8)
        };
        let op = match arg(0)? {
            "ch.create" => {
                let efds = EFD_PICKS
                    .iter()
                    .find(|(_, s)| *s == arg(6).unwrap_or(""))
                    .map(|(p, _)| *p)
                    .with_context(|| format!("op {line:?}: unknown eventfd choice"))?;
                let name = unescape(arg(5)?)?;
                if name.len() > CHANNEL_NAME_LEN {
                    bail!("op {line:?}: name longer than {CHANNEL_NAME_LEN} bytes");
                }
                ChanOp::Create(
                    slot()?,
                    CreateReq {
                        size: num(arg(2)?)?,
                        period_ms: num(arg(3)?)? as u32,
                        flags: num(arg(4)?)? as u32,
                        name,
                        efds,
                        id: num(arg(7)?)? as u32,
                        reserved: num(arg(8)?)? as u32,
                    },
                )
            }
            "ch.recreate" => ChanOp::Recreate(slot()?),
            "ch.cmd" => ChanOp::Cmd(slot()?, num(arg(2)?)? as u32),
            "ch.stats" => ChanOp::Stats(slot()?),
            "ch.info" => ChanOp::Info(slot()?),
            "ch.readefd" => ChanOp::ReadEfd(slot()?),
            "ch.records" => ChanOp::Records(slot()?, num(arg(2)?)? as u32),
            "ch.writeefd2" => ChanOp::WriteEfd2(slot()?, num(arg(2)?)?),
            "ch.ack" => ChanOp::Ack(slot()?),
            "ch.ackround" => ChanOp::AckRound(
                slot()?,
                match arg(2)? {
                    "current" => RoundPick::Current,
                    "prev" => RoundPick::Prev,
                    "next" => RoundPick::Next,
                    v => RoundPick::Value(num(v)? as u32),
                },
            ),
            "ch.mmap" => {
                let v = num(arg(2)?)?;
                if v as usize >= CHAN_MMAPS.len() {
                    bail!("op {line:?}: no channel mmap variant {v}");
                }
                ChanOp::Mmap(slot()?, v as u8)
            }
            "ch.munmap" => ChanOp::Munmap(slot()?),
            "ch.check" => ChanOp::Check(slot()?),
            "ch.readbuf" => ChanOp::ReadBuf(slot()?, num(arg(2)?)? as u32),
            "ch.close" => ChanOp::Close(slot()?),
            "ch.foreign" => ChanOp::Foreign(slot()?),
            "ch.limit" => {
                let name = arg(1)?;
                if name != param::MAX_CHANNELS && name != param::MAX_CHANNEL_MEMORY {
                    bail!("op {line:?}: not a channel limit");
                }
                ChanOp::Limit(name.to_owned(), unescape(arg(2)?)?)
            }
            "ch.list" => ChanOp::List,
            "ch.ackseq" => ChanOp::AckSeq(
                slot()?,
                ACK_PICKS
                    .iter()
                    .find(|(_, s)| *s == arg(2).unwrap_or(""))
                    .map(|(p, _)| *p)
                    .with_context(|| format!("op {line:?}: unknown ack_seq choice"))?,
            ),
            other => bail!("unknown op {other:?} in {line:?}"),
        };
        Ok(op)
    }
}

/// What the generator knows about a channel slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlotView {
    /// No file.
    #[default]
    Empty,
    /// An open file that is no channel (a CREATE failed).
    Plain,
    /// A channel whose file is open.
    Open {
        /// Its mappings.
        maps: usize,
        /// It is a ring.
        ring: bool,
    },
    /// A channel whose file is closed, kept by its mappings.
    Mapped,
}

/// A ring CREATE's size and `ring_slots`: valid (mostly) or not (slots
/// 0, 1, 3 or 128, or slots * size past `MAX_BUFFER_SIZE`).
fn ring_fields(rng: &mut Rng, valid: bool) -> (u64, u32) {
    if valid || rng.chance(1, 2) {
        let slots = *rng.pick(&[2u32, 4, 4, 8, 16, 64]);
        (*rng.pick(&[4096u64, 4096, 8192, 65536]), slots)
    } else if rng.chance(1, 2) {
        (4096, *rng.pick(&[0u32, 1, 3, 128]))
    } else {
        (1 << 20, 64)
    }
}

fn create_req(rng: &mut Rng, rings: bool) -> CreateReq {
    let valid = rng.chance(3, 4);
    let size = if valid || rng.chance(1, 2) {
        // 16 MiB rarely: its allocation is slow on a debug kernel.
        if rng.chance(1, 40) {
            MAX_BUFFER_SIZE
        } else {
            *rng.pick(&[4096u64, 4096, 8192, 65536, 1 << 20])
        }
    } else {
        *rng.pick(&[0u64, 100, 4097, MAX_BUFFER_SIZE + 4096, 1 << 40])
    };
    let period_ms = if valid || rng.chance(1, 2) {
        // 0 is the default, 500 ms: rarely, or its rounds are few.
        *rng.pick(&[5u32, 5, 5, 20, 20, 100, 0])
    } else {
        *rng.pick(&[60_001u32, u32::MAX])
    };
    let mut flags = if valid || rng.chance(1, 2) {
        *rng.pick(&[0u32, 0, CREATE_BACK_TO_BACK, CREATE_ADAPTIVE, 3])
    } else {
        *rng.pick(&[8u32, 0x8000_0000, CREATE_ATTACH, CREATE_ATTACH | 1])
    };
    let name: Vec<u8> = if valid || rng.chance(1, 2) {
        rng.pick(&[&b""[..], b"ch", b"a.b-c_D9", b"012345678901234"])
            .to_vec()
    } else {
        rng.pick(&[&b"bad name"[..], b"0123456789abcdef", b"a\0b", b"x/y"])
            .to_vec()
    };
    let efds = if valid || rng.chance(1, 2) {
        if rng.chance(1, 10) {
            EfdPick::Pending
        } else {
            EfdPick::Normal
        }
    } else {
        *rng.pick(&[EfdPick::Same, EfdPick::NotOpen, EfdPick::NotEventfd])
    };
    let (mut size, mut period_ms) = (size, period_ms);
    if flags & CREATE_ATTACH != 0 && rng.chance(2, 3) {
        // Mostly a well-formed attach: ENOENT (no producer).
        size = 0;
        period_ms = 0;
        if name.is_empty() {
            flags &= !CREATE_ATTACH;
        }
    }
    let (id, mut reserved) = if valid || rng.chance(1, 2) {
        (0, 0)
    } else {
        *rng.pick(&[(5u32, 0u32), (0, 1)])
    };
    if rings && rng.chance(1, 2) {
        // A ring, mostly well formed and back to back (its rounds come at
        // once, up to the slots); rarely with ATTACH (EINVAL).
        (size, reserved) = ring_fields(rng, valid);
        flags = *rng.pick(&[
            CREATE_BACK_TO_BACK,
            CREATE_BACK_TO_BACK,
            CREATE_BACK_TO_BACK | CREATE_ADAPTIVE,
            0,
        ]) | CREATE_RING;
        if !valid && rng.chance(1, 4) {
            flags |= CREATE_ATTACH;
        }
    }
    CreateReq {
        size,
        period_ms,
        flags,
        name,
        efds,
        id,
        reserved,
    }
}

/// Draw a channel operation, given the slots; `rings`: the module has
/// ring channels and page acks (ABI 4).
pub fn generate(rng: &mut Rng, slots: &[SlotView], rings: bool) -> Option<ChanOp> {
    let c = rng.below(u64::from(CHAN_SLOTS)) as u8;
    let op = match slots.get(c as usize).copied().unwrap_or_default() {
        SlotView::Empty => match rng.below(10) {
            0 => ChanOp::List,
            1 => limit(rng),
            _ => ChanOp::Create(c, create_req(rng, rings)),
        },
        SlotView::Plain => match rng.below(6) {
            0 => ChanOp::Cmd(c, 2),
            1 => ChanOp::Stats(c),
            2 => ChanOp::Close(c),
            _ => ChanOp::Create(c, create_req(rng, rings)),
        },
        SlotView::Mapped => match rng.below(3) {
            0 => ChanOp::Check(c),
            1 => ChanOp::List,
            _ => ChanOp::Munmap(c),
        },
        SlotView::Open { maps, ring } => {
            // Weighted towards the round ops (MMAP/START, records, acks),
            // so that channel rounds get counted.
            let page_acks = if rings { 10 } else { 0 };
            match rng.weighted(&[14, 5, 16, 18, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, page_acks]) {
                0 => {
                    // Mostly MMAP and START, STOP now and then, so that
                    // rounds run; EXIT (the channel is done until its file
                    // is closed) rarely.
                    let code = if rng.chance(9, 10) {
                        *rng.pick(&[2u32, 3, 3, 3, 3, 4])
                    } else if rng.chance(1, 3) {
                        5
                    } else {
                        rng.below(10) as u32
                    };
                    ChanOp::Cmd(c, code)
                }
                1 => ChanOp::ReadEfd(c),
                2 => ChanOp::Records(c, *rng.pick(&[16u32, 16 * 64, 16 * 64, 8])),
                3 if ring => match rng.below(4) {
                    // A ring acks through ack_seq; the ioctls are
                    // EOPNOTSUPP and 7 is a doorbell.
                    0 => ChanOp::WriteEfd2(c, 7),
                    1 => ChanOp::Ack(c),
                    2 => ChanOp::AckRound(c, RoundPick::Current),
                    _ => ChanOp::AckSeq(c, AckPick::Next),
                },
                3 => match rng.below(6) {
                    0 | 1 => ChanOp::WriteEfd2(c, 7),
                    2 => ChanOp::WriteEfd2(c, *rng.pick(&[14u64, 6, 1])),
                    3 => ChanOp::Ack(c),
                    _ => ChanOp::AckRound(
                        c,
                        match rng.below(5) {
                            0 => RoundPick::Prev,
                            1 => RoundPick::Next,
                            2 => RoundPick::Value(rng.next_u64() as u32),
                            _ => RoundPick::Current,
                        },
                    ),
                },
                4 => ChanOp::Mmap(c, rng.below(CHAN_MMAPS.len() as u64) as u8),
                5 if maps > 0 => ChanOp::Check(c),
                5 | 6 => ChanOp::ReadBuf(c, *rng.pick(&[4096u32, 100, 8192, 1 << 20, 2 << 20])),
                7 => ChanOp::Stats(c),
                8 => ChanOp::List,
                9 => ChanOp::Info(c),
                10 => ChanOp::Munmap(c),
                11 => ChanOp::Close(c),
                12 => ChanOp::Foreign(c),
                14 => {
                    let pick = if rng.chance(3, 4) {
                        *rng.pick(&[AckPick::Ready, AckPick::Next, AckPick::Next])
                    } else {
                        *rng.pick(&[AckPick::Beyond, AckPick::Behind])
                    };
                    ChanOp::AckSeq(c, pick)
                }
                _ => {
                    if rng.chance(1, 2) {
                        ChanOp::Recreate(c)
                    } else {
                        limit(rng)
                    }
                }
            }
        }
    };
    Some(op)
}

fn limit(rng: &mut Rng) -> ChanOp {
    // Mostly back to roomy limits: a low cap refuses every CREATE until
    // the next write.
    if rng.chance(2, 3) {
        return if rng.chance(1, 2) {
            ChanOp::Limit(param::MAX_CHANNELS.to_owned(), b"16\n".to_vec())
        } else {
            ChanOp::Limit(param::MAX_CHANNEL_MEMORY.to_owned(), b"67108864\n".to_vec())
        };
    }
    if rng.chance(1, 2) {
        let v = *rng.pick(&["1", "2", "3", "16", "32", "33", "40", "0"]);
        ChanOp::Limit(param::MAX_CHANNELS.to_owned(), number_text(rng, v))
    } else {
        let v = *rng.pick(&[
            "4096",
            "8192",
            "65536",
            "1048576",
            "67108864",
            "1073741824",
            "1073741825",
            "4095",
        ]);
        ChanOp::Limit(param::MAX_CHANNEL_MEMORY.to_owned(), number_text(rng, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ops_round_trip_through_text() {
        let mut rng = Rng::new(9);
        let slots = [
            SlotView::Empty,
            SlotView::Open {
                maps: 1,
                ring: false,
            },
            SlotView::Mapped,
        ];
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..3000 {
            let Some(op) = generate(&mut rng, &slots, true) else {
                continue;
            };
            let text = op.to_string();
            assert!(!text.contains('\n') && !text.contains('\0'), "{text:?}");
            let back = ChanOp::parse(&text);
            assert_eq!(back.ok().as_ref(), Some(&op), "{text}");
            kinds.insert(text.split_whitespace().next().unwrap_or("").to_owned());
        }
        assert!(kinds.len() >= 17, "only {kinds:?}");
        assert!(ChanOp::parse("ch.cmd 3 2").is_err());
        assert!(ChanOp::parse("ch.mmap 0 99").is_err());
        assert!(ChanOp::parse("ch.limit period_ms 5").is_err());
    }

    /// The generator's ops, applied to the channel model with a kernel
    /// that publishes whenever it may: channels get created and rounds
    /// run and get acked (the fuzzer exercises the round paths).
    #[test]
    fn generated_ops_run_rounds_on_the_model() {
        use kern2usr_model::channels::{Channels, EfdArg, FileId};
        use kern2usr_model::{MmapReq, Mode as EventMode};
        const ME: i32 = 10;
        #[derive(Clone, Copy)]
        struct S {
            file: FileId,
            open: bool,
            maps: u32,
            id: Option<u32>,
            ring: bool,
            hi: u64,
        }
        let mut m = Channels::new(EventMode::Queue, false);
        let mut slots: [Option<S>; CHAN_SLOTS as usize] = [None; CHAN_SLOTS as usize];
        let mut rng = Rng::new(12);
        let (mut next_file, mut obj) = (1, 1);
        let (mut created, mut published, mut acked) = (0, 0, 0);
        let (mut rings, mut ring_acked) = (0, 0);
        for _ in 0..3000 {
            let view: Vec<SlotView> = slots
                .iter()
                .map(|s| match s {
                    None => SlotView::Empty,
                    Some(s) if !s.open => SlotView::Mapped,
                    Some(s) if s.id.is_none() => SlotView::Plain,
                    Some(s) => SlotView::Open {
                        maps: s.maps as usize,
                        ring: s.ring,
                    },
                })
                .collect();
            let Some(op) = generate(&mut rng, &view, true) else {
                continue;
            };
            let c = op.slot().unwrap_or(0) as usize;
            let file = slots[c].map_or(0, |s| s.file);
            let id = slots[c].and_then(|s| s.id).unwrap_or(0);
            match &op {
                ChanOp::Create(_, r) => {
                    if slots[c].is_none() {
                        m.open(next_file);
                        slots[c] = Some(S {
                            file: next_file,
                            open: true,
                            maps: 0,
                            id: None,
                            ring: false,
                            hi: 0,
                        });
                        next_file += 1;
                    }
                    let f = slots[c].map_or(0, |s| s.file);
                    let ev = |o: u32| EfdArg::Eventfd {
                        object: o,
                        count: 0,
                    };
                    let (a, b) = match r.efds {
                        EfdPick::Normal | EfdPick::Pending => (ev(obj), ev(obj + 1)),
                        EfdPick::Same => (ev(obj), ev(obj)),
                        EfdPick::NotOpen => (ev(obj), EfdArg::NotOpen),
                        EfdPick::NotEventfd => (EfdArg::NotEventfd, ev(obj + 1)),
                    };
                    obj += 2;
                    let req = r.create_arg(0, 0);
                    if let Ok(out) = m.create(f, ME, &req, a, b) {
                        created += 1;
                        let ring = req.flags & CREATE_RING != 0;
                        rings += u32::from(ring);
                        if let Some(s) = slots[c].as_mut() {
                            (s.id, s.ring, s.hi) = (Some(out.id), ring, 0);
                        }
                    }
                }
                ChanOp::Cmd(_, code) => {
                    let _ = m.command(file, ME, *code);
                }
                ChanOp::ReadEfd(_) => {
                    let _ = m.efd_read(id);
                }
                ChanOp::Records(_, n) => {
                    let _ = m.read_records(file, ME, *n as usize);
                }
                ChanOp::WriteEfd2(_, v) => acked += m.efd2_write(id, *v).closed,
                ChanOp::Ack(_) => acked += u32::from(m.ack(file, ME).is_ok()),
                ChanOp::AckRound(..) => {
                    let r = m
                        .chan(id)
                        .and_then(|ch| ch.state.round())
                        .map_or(0, |r| r.id);
                    acked += u32::from(m.ack_round(file, ME, r as u32).is_ok());
                }
                ChanOp::Mmap(..) => {
                    let req = MmapReq {
                        len: 4096,
                        offset: 0,
                        shared: true,
                        write: false,
                        exec: false,
                    };
                    if m.mmap(file, ME, req).is_ok() {
                        if let Some(s) = slots[c].as_mut() {
                            s.maps += 1;
                        }
                    }
                }
                ChanOp::Munmap(_) => {
                    if let Some(s) = slots[c].as_mut() {
                        if s.maps > 0 {
                            s.maps -= 1;
                            m.unmapped(file);
                        }
                    }
                }
                ChanOp::Close(_) => {
                    if let Some(s) = slots[c].as_mut() {
                        s.open = false;
                        m.close(file);
                    }
                }
                ChanOp::Limit(name, bytes) => {
                    let _ = m.param_write(name, bytes);
                }
                ChanOp::AckSeq(_, pick) => {
                    let ready = m.chan(id).map_or(0, |ch| ch.state.ready_seq());
                    if let Some(s) = slots[c].as_mut() {
                        let v = pick.value(ready, s.hi);
                        s.hi = s.hi.max(v);
                        m.store_ack_seq(id, v);
                        let closed = m.efd2_write(id, 7).closed;
                        acked += closed;
                        if s.ring {
                            ring_acked += closed;
                        }
                    }
                }
                _ => {}
            }
            if slots[c].is_some_and(|s| !s.open && s.maps == 0) {
                slots[c] = None;
            }
            let ids: Vec<u32> = m.chans().map(|ch| ch.id).collect();
            for id in ids {
                if m.can_publish(id) && m.publish(id).is_ok() {
                    published += 1;
                }
            }
        }
        println!(
            "{created} channels ({rings} rings), {published} rounds published, {acked} acked ({ring_acked} through a ring's ack_seq)"
        );
        assert!(rings >= 5, "{rings} rings created");
        assert!(ring_acked >= 20, "{ring_acked} ring rounds acked");
        assert!(created >= 20, "{created} channels created");
        assert!(published >= 50, "{published} rounds published");
        assert!(acked >= 20, "{acked} rounds acked");
    }
}
