//! The fuzzer's operations: one line of text each (the op log), and how
//! they are drawn at random.

use std::fmt;

use anyhow::{bail, Context, Result};
use kern2usr::abi::{param, CTRL_MMAP_OFFSET};

use super::chanop::{self, ChanOp, SlotView, CHAN_SLOTS};
use super::rng::Rng;

/// Listener slots (processes the fuzzer drives).
pub const SLOTS: u8 = 3;

/// Which fds (and pid) a FIND or REGISTER names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// The slot's efd and efd2.
    Normal,
    /// efd2 and efd.
    Swapped,
    /// efd twice.
    Same,
    /// A dup of efd (if the slot made one) and efd2.
    DupEfd,
    /// fd 0 (a pipe) as efd.
    NotEventfd,
    /// fd 900 (not open) as efd2.
    Unopened,
    /// A pid with no process (FIND only).
    NoProcess,
}

const NAMES: [(Names, &str); 7] = [
    (Names::Normal, "normal"),
    (Names::Swapped, "swapped"),
    (Names::Same, "same"),
    (Names::DupEfd, "dup"),
    (Names::NotEventfd, "noteventfd"),
    (Names::Unopened, "unopened"),
    (Names::NoProcess, "noprocess"),
];

/// Which round id an ACK_ROUND names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundPick {
    /// The outstanding round (as the model knows it).
    Current,
    /// The one before.
    Prev,
    /// The one after.
    Next,
    /// A fixed value.
    Value(u32),
}

/// One mmap variant: (len, offset, shared, write, exec).
pub type MmapVariant = (u64, u64, bool, bool, bool);

/// The mmap variants the fuzzer tries.
pub const MMAPS: [MmapVariant; 13] = [
    (4096, 0, true, true, false),
    (4096, 0, true, false, false),
    (4096, 0, false, true, false),
    (4096, 0, false, false, false),
    (100, 0, true, false, false),
    (8192, 0, true, false, false),
    (4096, 4096, true, false, false),
    (4096, CTRL_MMAP_OFFSET, true, true, false),
    (4096, CTRL_MMAP_OFFSET, false, false, false),
    (8192, CTRL_MMAP_OFFSET, true, false, false),
    (4096, 0, true, false, true),
    (0, 0, true, false, false),
    (4096, 12345, true, false, false),
];

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Start a listener process in a slot, with two fresh eventfds.
    Spawn(u8),
    /// The listener makes two more eventfds and uses them from now on.
    NewEfds(u8),
    /// The listener opens the device.
    OpenDev(u8),
    /// The listener closes the device.
    CloseDev(u8),
    /// One write() of these bytes to a parameter (cur_cmd included).
    Param(String, Vec<u8>),
    /// usr_pid, usr_efd, usr_efd2 of a listener, then FIND.
    Find(u8, Names),
    /// K2U_IOC_REGISTER by the listener.
    Register(u8, Names),
    /// The listener reads efd.
    ReadEfd(u8),
    /// The listener reads records (this many bytes, O_NONBLOCK).
    ReadRecords(u8, u32),
    /// The listener writes a value to its efd2.
    WriteEfd2(u8, u64),
    /// K2U_IOC_ACK.
    Ack(u8),
    /// K2U_IOC_ACK_ROUND.
    AckRound(u8, RoundPick),
    /// mmap() variant `MMAPS[i]`.
    Mmap(u8, u8),
    /// munmap() of the listener's last mapping.
    Munmap(u8),
    /// The listener checks what its mappings show.
    CheckMaps(u8),
    /// The listener writes into its first private writable data mapping.
    WritePrivate(u8),
    /// mremap() of its first data mapping to one page more.
    Mremap(u8),
    /// K2U_IOC_READ_BUFFER of this many bytes.
    ReadBuffer(u8, u32),
    /// K2U_IOC_INFO.
    Info(u8),
    /// An ioctl the module does not know.
    BadIoctl(u8),
    /// SIGSTOP.
    Stop(u8),
    /// SIGCONT.
    Cont(u8),
    /// SIGKILL (and reap).
    Kill(u8),
    /// The listener exits.
    Exit(u8),
    /// The listener forks a child that holds its fds and mappings.
    Fork(u8),
    /// SIGKILL a forked holder (by index).
    KillHolder(u8),
    /// The listener dups its efd.
    Dup(u8),
    /// The listener closes its efd (false) or efd2 (true).
    CloseEfd(u8, bool),
    /// The fuzzer's control page says the listener spins (or sleeps).
    Spin(bool),
    /// Let time pass (rounds happen).
    Wait(u32),
    /// Write MMAP (2) until the queue is full (at most 5000 times).
    FillQueue,
    /// rmmod.
    Rmmod,
    /// insmod.
    Insmod,
    /// A channel operation (`ch.` lines).
    Chan(ChanOp),
}

pub(super) fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if s.is_empty() {
        s.push_str("\\e");
    }
    s
}

pub(super) fn unescape(s: &str) -> Result<Vec<u8>> {
    if s == "\\e" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = s.get(i + 2..i + 4).context("bad escape")?;
            ensure_x(b.get(i + 1))?;
            out.push(u8::from_str_radix(hex, 16).context("bad escape")?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn ensure_x(c: Option<&u8>) -> Result<()> {
    if c != Some(&b'x') {
        bail!("bad escape");
    }
    Ok(())
}

fn names_str(n: Names) -> &'static str {
    NAMES
        .iter()
        .find(|(x, _)| *x == n)
        .map_or("normal", |(_, s)| s)
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Spawn(l) => write!(f, "spawn {l}"),
            Op::NewEfds(l) => write!(f, "newefds {l}"),
            Op::OpenDev(l) => write!(f, "opendev {l}"),
            Op::CloseDev(l) => write!(f, "closedev {l}"),
            Op::Param(name, bytes) => write!(f, "param {name} {}", escape(bytes)),
            Op::Find(l, n) => write!(f, "find {l} {}", names_str(*n)),
            Op::Register(l, n) => write!(f, "register {l} {}", names_str(*n)),
            Op::ReadEfd(l) => write!(f, "readefd {l}"),
            Op::ReadRecords(l, n) => write!(f, "records {l} {n}"),
            Op::WriteEfd2(l, v) => write!(f, "writeefd2 {l} {v}"),
            Op::Ack(l) => write!(f, "ack {l}"),
            Op::AckRound(l, p) => match p {
                RoundPick::Current => write!(f, "ackround {l} current"),
                RoundPick::Prev => write!(f, "ackround {l} prev"),
                RoundPick::Next => write!(f, "ackround {l} next"),
                RoundPick::Value(v) => write!(f, "ackround {l} {v}"),
            },
            Op::Mmap(l, v) => write!(f, "mmap {l} {v}"),
            Op::Munmap(l) => write!(f, "munmap {l}"),
            Op::CheckMaps(l) => write!(f, "checkmaps {l}"),
            Op::WritePrivate(l) => write!(f, "writeprivate {l}"),
            Op::Mremap(l) => write!(f, "mremap {l}"),
            Op::ReadBuffer(l, n) => write!(f, "readbuffer {l} {n}"),
            Op::Info(l) => write!(f, "info {l}"),
            Op::BadIoctl(l) => write!(f, "badioctl {l}"),
            Op::Stop(l) => write!(f, "sigstop {l}"),
            Op::Cont(l) => write!(f, "sigcont {l}"),
            Op::Kill(l) => write!(f, "kill {l}"),
            Op::Exit(l) => write!(f, "exit {l}"),
            Op::Fork(l) => write!(f, "fork {l}"),
            Op::KillHolder(h) => write!(f, "killholder {h}"),
            Op::Dup(l) => write!(f, "dup {l}"),
            Op::CloseEfd(l, second) => write!(f, "closeefd {l} {}", u8::from(*second)),
            Op::Spin(on) => write!(f, "spin {}", u8::from(*on)),
            Op::Wait(ms) => write!(f, "wait {ms}"),
            Op::FillQueue => write!(f, "fillqueue"),
            Op::Rmmod => write!(f, "rmmod"),
            Op::Insmod => write!(f, "insmod"),
            Op::Chan(c) => c.fmt(f),
        }
    }
}

impl std::str::FromStr for Op {
    type Err = anyhow::Error;

    fn from_str(line: &str) -> Result<Op> {
        if line.starts_with("ch.") {
            return ChanOp::parse(line).map(Op::Chan);
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let arg = |i: usize| -> Result<&str> {
            w.get(i)
                .copied()
                .with_context(|| format!("op {line:?}: argument {i} missing"))
        };
        let num = |i: usize| -> Result<u64> {
            arg(i)?
                .parse::<u64>()
                .with_context(|| format!("op {line:?}: argument {i} is no number"))
        };
        let slot = || -> Result<u8> {
            let l = num(1)?;
            if l >= u64::from(SLOTS) {
                bail!("op {line:?}: slot {l} out of range");
            }
            Ok(l as u8)
        };
        let names = |i: usize| -> Result<Names> {
            let s = arg(i)?;
            NAMES
                .iter()
                .find(|(_, n)| *n == s)
                .map(|(x, _)| *x)
                .with_context(|| format!("op {line:?}: unknown fd choice {s:?}"))
        };
        let op = match arg(0)? {
            "spawn" => Op::Spawn(slot()?),
            "newefds" => Op::NewEfds(slot()?),
            "opendev" => Op::OpenDev(slot()?),
            "closedev" => Op::CloseDev(slot()?),
            "param" => Op::Param(arg(1)?.to_owned(), unescape(arg(2)?)?),
            "find" => Op::Find(slot()?, names(2)?),
            "register" => Op::Register(slot()?, names(2)?),
            "readefd" => Op::ReadEfd(slot()?),
            "records" => Op::ReadRecords(slot()?, num(2)? as u32),
            "writeefd2" => Op::WriteEfd2(slot()?, num(2)?),
            "ack" => Op::Ack(slot()?),
            "ackround" => Op::AckRound(
                slot()?,
                match arg(2)? {
                    "current" => RoundPick::Current,
                    "prev" => RoundPick::Prev,
                    "next" => RoundPick::Next,
                    _ => RoundPick::Value(num(2)? as u32),
                },
            ),
            "mmap" => {
                let v = num(2)?;
                if v as usize >= MMAPS.len() {
                    bail!("op {line:?}: no mmap variant {v}");
                }
                Op::Mmap(slot()?, v as u8)
            }
            "munmap" => Op::Munmap(slot()?),
            "checkmaps" => Op::CheckMaps(slot()?),
            "writeprivate" => Op::WritePrivate(slot()?),
            "mremap" => Op::Mremap(slot()?),
            "readbuffer" => Op::ReadBuffer(slot()?, num(2)? as u32),
            "info" => Op::Info(slot()?),
            "badioctl" => Op::BadIoctl(slot()?),
            "sigstop" => Op::Stop(slot()?),
            "sigcont" => Op::Cont(slot()?),
            "kill" => Op::Kill(slot()?),
            "exit" => Op::Exit(slot()?),
            "fork" => Op::Fork(slot()?),
            "killholder" => Op::KillHolder(num(1)? as u8),
            "dup" => Op::Dup(slot()?),
            "closeefd" => Op::CloseEfd(slot()?, num(2)? != 0),
            "spin" => Op::Spin(num(1)? != 0),
            "wait" => Op::Wait(num(1)? as u32),
            "fillqueue" => Op::FillQueue,
            "rmmod" => Op::Rmmod,
            "insmod" => Op::Insmod,
            other => bail!("unknown op {other:?} in {line:?}"),
        };
        Ok(op)
    }
}

/// What the generator needs to know about the run.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Per slot: a process runs there.
    pub running: [bool; SLOTS as usize],
    /// Per slot: it is stopped (SIGSTOP).
    pub stopped: [bool; SLOTS as usize],
    /// Per slot: it has the device open.
    pub dev_open: [bool; SLOTS as usize],
    /// Per slot: its mappings.
    pub maps: [usize; SLOTS as usize],
    /// Holders alive.
    pub holders: usize,
    /// The module is loaded.
    pub loaded: bool,
    /// Some slot is attached (per the model).
    pub attached: Option<u8>,
    /// The channel slots.
    pub chans: [SlotView; CHAN_SLOTS as usize],
    /// The module has ring channels and page acks (ABI 4).
    pub rings: bool,
}

/// Parameter texts: valid and invalid, in every way the parsers differ.
pub(super) fn number_text(rng: &mut Rng, valid: &str) -> Vec<u8> {
    // The hex and octal forms keep the sign: "-1" as "0x1" would name
    // pid 1, a process the model does not know.
    let (sign, abs) = valid.strip_prefix('-').map_or(("", valid), |a| ("-", a));
    let n: u64 = abs.parse().unwrap_or(0);
    let forms: Vec<Vec<u8>> = vec![
        format!("{valid}\n").into_bytes(),
        valid.as_bytes().to_vec(),
        format!("{sign}0x{n:x}\n").into_bytes(),
        format!("{sign}0{n:o}").into_bytes(),
        format!("+{valid}\n").into_bytes(),
        format!(" {valid}\n").into_bytes(),
        format!("{valid} \n").into_bytes(),
        format!("{valid}\n\n").into_bytes(),
        format!("{valid}abc").into_bytes(),
        format!("{valid}\0junk").into_bytes(),
        format!("-{valid}\n").into_bytes(),
        b"".to_vec(),
        b"\n".to_vec(),
        b"0x\n".to_vec(),
        b"08\n".to_vec(),
        b"99999999999999999999999\n".to_vec(),
        b"4294967296\n".to_vec(),
        b"2147483648\n".to_vec(),
        b"-2147483649\n".to_vec(),
        b"abc\n".to_vec(),
        b"\0".to_vec(),
    ];
    // Mostly the plain valid form.
    if rng.chance(1, 2) {
        return forms[0].clone();
    }
    rng.pick(&forms).clone()
}

fn bool_text(rng: &mut Rng) -> Vec<u8> {
    // Never e/E/d/D first: kstrtobool took those only in newer kernels.
    let forms: [&[u8]; 14] = [
        b"1\n", b"0\n", b"y\n", b"N", b"true\n", b"off\n", b"on", b"Yes", b"2\n", b"o\n", b" 1\n",
        b"\n", b"", b"x",
    ];
    rng.pick(&forms).to_vec()
}

/// Draw the next operation.
pub fn generate(rng: &mut Rng, v: &View) -> Op {
    let slot = |rng: &mut Rng| rng.below(u64::from(SLOTS)) as u8;
    // A running, not stopped slot, preferring the attached one.
    let live_slot = |rng: &mut Rng| -> Option<u8> {
        let ok: Vec<u8> = (0..SLOTS)
            .filter(|&l| v.running[l as usize] && !v.stopped[l as usize])
            .collect();
        if ok.is_empty() {
            return None;
        }
        if let Some(a) = v.attached.filter(|a| ok.contains(a)) {
            if rng.chance(2, 3) {
                return Some(a);
            }
        }
        Some(*rng.pick(&ok))
    };
    // An unloaded module makes most operations moot: load it soon.
    if !v.loaded && rng.chance(1, 3) {
        return Op::Insmod;
    }
    for _ in 0..100 {
        // Weights of the op families.
        let family = rng.weighted(&[
            14, // 0 commands
            6,  // 1 parameters
            6,  // 2 find/register
            16, // 3 read codes
            12, // 4 acks
            6,  // 5 mappings
            3,  // 6 ioctls
            4,  // 7 process life
            4,  // 8 time passes
            1,  // 9 module
            2,  // 10 spawn
            32, // 11 channels
        ]);
        let op = match family {
            0 => {
                let text: Vec<u8> = if rng.chance(9, 10) {
                    let c = *rng.pick(&[2u32, 3, 3, 4, 4, 5, 1]);
                    format!("{c}\n").into_bytes()
                } else {
                    let c = rng.below(10).to_string();
                    number_text(rng, &c)
                };
                if !v.loaded {
                    continue;
                }
                Op::Param(param::CUR_CMD.to_owned(), text)
            }
            1 => {
                if !v.loaded {
                    continue;
                }
                match rng.below(7) {
                    0 | 1 => {
                        let ms = *rng.pick(&["1", "2", "5", "10", "20", "60000", "0", "60001"]);
                        Op::Param(param::PERIOD_MS.to_owned(), number_text(rng, ms))
                    }
                    2 => Op::Param(param::BACK_TO_BACK.to_owned(), bool_text(rng)),
                    3 => Op::Param(param::ADAPTIVE.to_owned(), bool_text(rng)),
                    4 => {
                        let name = *rng.pick(&[param::USR_PID, param::USR_EFD, param::USR_EFD2]);
                        // A pid is either none at all or none that exists
                        // (1 and the kernel threads are real processes the
                        // model does not know): FIND names listeners itself.
                        let val = if name == param::USR_PID {
                            *rng.pick(&["0", "-1", "4000000"])
                        } else {
                            *rng.pick(&["3", "4", "0", "1", "900", "-1"])
                        };
                        Op::Param(name.to_owned(), number_text(rng, val))
                    }
                    5 => Op::Spin(rng.chance(1, 2)),
                    _ => {
                        let name = *rng.pick(&[param::EVENT_MODE, param::BUFFER_SIZE]);
                        Op::Param(name.to_owned(), b"1\n".to_vec())
                    }
                }
            }
            2 => {
                let Some(l) = live_slot(rng) else { continue };
                let names = if rng.chance(3, 4) {
                    Names::Normal
                } else {
                    rng.pick(&NAMES).0
                };
                if rng.chance(1, 3) && v.dev_open[l as usize] && names != Names::NoProcess {
                    Op::Register(l, names)
                } else {
                    Op::Find(l, names)
                }
            }
            3 => {
                let Some(l) = live_slot(rng) else { continue };
                if rng.chance(1, 2) && v.dev_open[l as usize] {
                    let n = *rng.pick(&[16u32, 16 * 64, 32, 8, 16 * 5000]);
                    Op::ReadRecords(l, n)
                } else {
                    Op::ReadEfd(l)
                }
            }
            4 => {
                let Some(l) = live_slot(rng) else { continue };
                match rng.below(6) {
                    0 | 1 => Op::WriteEfd2(l, 7),
                    2 => Op::WriteEfd2(l, *rng.pick(&[14u64, 21, 6, 8, 1, 0, 70])),
                    3 if v.dev_open[l as usize] => Op::Ack(l),
                    4 | 5 if v.dev_open[l as usize] => {
                        let pick = match rng.below(5) {
                            0 => RoundPick::Prev,
                            1 => RoundPick::Next,
                            2 => RoundPick::Value(rng.next_u64() as u32),
                            _ => RoundPick::Current,
                        };
                        Op::AckRound(l, pick)
                    }
                    _ => Op::WriteEfd2(l, 7),
                }
            }
            5 => {
                let Some(l) = live_slot(rng) else { continue };
                if !v.dev_open[l as usize] {
                    Op::OpenDev(l)
                } else {
                    match rng.below(7) {
                        0 | 1 => Op::Mmap(l, rng.below(MMAPS.len() as u64) as u8),
                        2 => Op::CheckMaps(l),
                        3 => Op::WritePrivate(l),
                        4 => Op::Mremap(l),
                        5 => Op::Munmap(l),
                        _ => Op::CloseDev(l),
                    }
                }
            }
            6 => {
                let Some(l) = live_slot(rng) else { continue };
                if !v.dev_open[l as usize] {
                    Op::OpenDev(l)
                } else {
                    match rng.below(4) {
                        0 | 1 => Op::ReadBuffer(l, *rng.pick(&[4096u32, 100, 0, 10_000])),
                        2 => Op::Info(l),
                        _ => Op::BadIoctl(l),
                    }
                }
            }
            7 => {
                let l = slot(rng);
                if !v.running[l as usize] {
                    Op::Spawn(l)
                } else if v.stopped[l as usize] {
                    if rng.chance(3, 4) {
                        Op::Cont(l)
                    } else {
                        Op::Kill(l)
                    }
                } else {
                    match rng.below(9) {
                        0 => Op::Stop(l),
                        1 => Op::Kill(l),
                        2 => Op::Exit(l),
                        3 => Op::Fork(l),
                        4 => Op::Dup(l),
                        5 => Op::CloseEfd(l, rng.chance(1, 2)),
                        6 => Op::NewEfds(l),
                        7 if v.holders > 0 => Op::KillHolder(rng.below(v.holders as u64) as u8),
                        _ => Op::Fork(l),
                    }
                }
            }
            // Short: a 5 ms timer gives rounds within any of these.
            8 => Op::Wait(*rng.pick(&[1u32, 5, 10, 20])),
            9 => {
                if !v.loaded {
                    Op::Insmod
                } else if rng.chance(1, 16) {
                    // Some 4000 writes under a debug kernel take seconds:
                    // about one in 1300 ops (a full queue then stays
                    // until a long read drains it).
                    Op::FillQueue
                } else {
                    Op::Rmmod
                }
            }
            10 => {
                let l = slot(rng);
                if v.running[l as usize] {
                    continue;
                }
                Op::Spawn(l)
            }
            _ => {
                if !v.loaded {
                    continue;
                }
                let Some(op) = chanop::generate(rng, &v.chans, v.rings) else {
                    continue;
                };
                Op::Chan(op)
            }
        };
        return op;
    }
    Op::Wait(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_through_text() {
        let ops = [
            Op::Param("cur_cmd".into(), b" 1\0x\n\\".to_vec()),
            Op::Param("period_ms".into(), Vec::new()),
            Op::Find(2, Names::DupEfd),
            Op::AckRound(1, RoundPick::Value(77)),
            Op::AckRound(0, RoundPick::Next),
            Op::CloseEfd(0, true),
            Op::Mmap(1, 12),
            Op::Spin(true),
        ];
        for op in ops {
            let text = op.to_string();
            assert!(!text.contains('\n') && !text.contains('\0'), "{text:?}");
            let back: Op = text.parse().unwrap_or(Op::Wait(0));
            assert_eq!(back, op, "{text}");
        }
        assert!("find 7 normal".parse::<Op>().is_err());
        assert!("mmap 0 99".parse::<Op>().is_err());
        assert!("bogus".parse::<Op>().is_err());
    }

    #[test]
    fn number_forms_name_the_number_or_nothing() {
        use kern2usr_model::kstrto::{kstrtoint, set_text};
        for valid in ["-1", "0", "3", "4000000"] {
            let want: i32 = valid.parse().unwrap_or(i32::MIN);
            let mut rng = Rng::new(3);
            for _ in 0..400 {
                let text = number_text(&mut rng, valid);
                let Some(Ok(v)) = set_text(&text).map(kstrtoint) else {
                    continue;
                };
                // The valid number, the negation of a positive one, or one
                // of the fixed out-of-range texts: never a small positive
                // other number (a pid like 1 names a real process).
                assert!(
                    v == want || (want > 0 && v == -want) || !(1..=100).contains(&v),
                    "{valid}: {:?} reads as {v}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }

    #[test]
    fn generation_is_seeded_and_varied() {
        let view = View {
            running: [true, false, true],
            dev_open: [true, false, false],
            loaded: true,
            ..View::default()
        };
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..300)
                .map(|_| generate(&mut rng, &view).to_string())
                .collect::<Vec<_>>()
        };
        let a = draw(5);
        assert_eq!(a, draw(5));
        assert_ne!(a, draw(6));
        let kinds: std::collections::BTreeSet<&str> = a
            .iter()
            .filter_map(|s| s.split_whitespace().next())
            .collect();
        assert!(kinds.len() >= 15, "only {kinds:?}");
    }
}
