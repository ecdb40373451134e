//! The module's list of channels (the read-only parameter `channels`,
//! ABI v3), typed: [`channels`] or [`crate::Params::channels`].

use std::fmt;

use crate::abi::{param, EventMode, CHANNELS_HEADER};
use crate::error::{Error, Result};
use crate::params::Params;

/// How a channel's rounds follow each other (the listing's `pacing`).
///
/// ```
/// use kern2usr::Pacing;
/// assert_eq!(Pacing::from_name("b2b+adaptive"), Some(Pacing::BackToBackAdaptive));
/// assert_eq!(Pacing::Timer.name(), "timer");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pacing {
    /// A round every period (`timer`).
    Timer,
    /// The next round as soon as the last is acknowledged (`b2b`).
    BackToBack,
    /// Back to back, without doorbells while the listener spins
    /// (`b2b+adaptive`).
    BackToBackAdaptive,
    /// A round every period, without doorbells while the listener spins
    /// (`timer+adaptive`: the default channel's `adaptive=1` without
    /// `back_to_back`, or a channel created with only
    /// [`crate::abi::CREATE_ADAPTIVE`]).
    TimerAdaptive,
    /// A ring channel (ABI 4), back to back (`b2b+ring`; a ring's
    /// doorbell always follows the adaptive rule).
    BackToBackRing,
    /// A ring channel paced by its timer (`timer+ring`).
    TimerRing,
}

impl Pacing {
    /// The listing's word for it.
    ///
    /// ```
    /// assert_eq!(kern2usr::Pacing::BackToBack.name(), "b2b");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Pacing::Timer => "timer",
            Pacing::BackToBack => "b2b",
            Pacing::BackToBackAdaptive => "b2b+adaptive",
            Pacing::TimerAdaptive => "timer+adaptive",
            Pacing::BackToBackRing => "b2b+ring",
            Pacing::TimerRing => "timer+ring",
        }
    }

    /// The pacing the listing's word names, if any.
    ///
    /// ```
    /// assert_eq!(kern2usr::Pacing::from_name("timer"), Some(kern2usr::Pacing::Timer));
    /// assert_eq!(kern2usr::Pacing::from_name("fast"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Pacing::Timer,
            Pacing::BackToBack,
            Pacing::BackToBackAdaptive,
            Pacing::TimerAdaptive,
            Pacing::BackToBackRing,
            Pacing::TimerRing,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

impl fmt::Display for Pacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line of the `channels` listing: a channel as the module shows it
/// to anyone (no ownership needed).
///
/// ```no_run
/// for ch in kern2usr::channels()? {
///     println!("{} {} owner {:?}: {} rounds", ch.id, ch.name.as_deref().unwrap_or("-"), ch.owner, ch.rounds);
/// }
/// # Ok::<(), kern2usr::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelEntry {
    /// Its id; 0 is the default channel (the seed's, driven by the
    /// parameters).
    pub id: u32,
    /// Its name; `None` when it has none (`-`).
    pub name: Option<String>,
    /// Its owner's pid as this process's pid namespace sees it; `None`
    /// when there is none (a producer's channel without a listener, the
    /// default channel without one) or it is not visible from here (0).
    pub owner: Option<u32>,
    /// Buffer size in bytes.
    pub buffer_size: u64,
    /// How its codes are delivered.
    pub event_mode: EventMode,
    /// How its rounds follow each other.
    pub pacing: Pacing,
    /// Rounds counted (its current or last test).
    pub rounds: u64,
    /// Median round trip in ns (0 before the first round).
    pub p50_ns: u64,
    /// 99th percentile round trip in ns (0 before the first round).
    pub p99_ns: u64,
}

impl ChannelEntry {
    /// Whether this is the default channel (id 0).
    ///
    /// ```
    /// let l = kern2usr::listing::parse_channels(
    ///     "id name owner buffer_size mode pacing rounds p50_ns p99_ns\n0 - 0 4096 queue timer 0 0 0\n")?;
    /// assert!(l[0].is_default());
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn is_default(&self) -> bool {
        self.id == 0
    }
}

/// Parse the `channels` parameter: the line [`CHANNELS_HEADER`], then
/// one line per channel, the default channel (id 0) first. Anything else
/// is [`Error::ParamValue`] naming the line.
///
/// ```
/// use kern2usr::{listing::parse_channels, Pacing};
/// let text = "id name owner buffer_size mode pacing rounds p50_ns p99_ns\n\
///             0 - 0 4096 counter timer 12 15000 40000\n\
///             3 cam0 812 65536 counter b2b 100 9000 20000\n";
/// let list = parse_channels(text)?;
/// assert_eq!(list.len(), 2);
/// assert_eq!(list[1].name.as_deref(), Some("cam0"));
/// assert_eq!(list[1].owner, Some(812));
/// assert_eq!(list[1].pacing, Pacing::BackToBack);
/// # Ok::<(), kern2usr::Error>(())
/// ```
pub fn parse_channels(text: &str) -> Result<Vec<ChannelEntry>> {
    let bad = |line: &str, expected: &'static str| Error::ParamValue {
        name: param::CHANNELS.to_owned(),
        value: line.to_owned(),
        expected,
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header = lines.next().unwrap_or_default();
    if header
        .split_whitespace()
        .ne(CHANNELS_HEADER.split_whitespace())
    {
        return Err(bad(
            header,
            "the header `id name owner buffer_size mode pacing rounds p50_ns p99_ns`",
        ));
    }
    let mut out: Vec<ChannelEntry> = Vec::new();
    for line in lines {
        let entry = parse_line(line).ok_or_else(|| {
            bad(
                line,
                "9 fields: id, name or -, owner pid, buffer size, counter or queue, \
                 timer/b2b/b2b+adaptive/timer+adaptive/b2b+ring/timer+ring, rounds, p50_ns, p99_ns",
            )
        })?;
        if out.is_empty() != entry.is_default() {
            return Err(bad(
                line,
                "the default channel (id 0) first, and only there",
            ));
        }
        if out.iter().any(|e| e.id == entry.id) {
            return Err(bad(line, "each channel id once"));
        }
        out.push(entry);
    }
    if out.is_empty() {
        return Err(bad(text.trim(), "at least the default channel's line"));
    }
    Ok(out)
}

fn parse_line(line: &str) -> Option<ChannelEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [id, name, owner, size, mode, pacing, rounds, p50, p99] = f.as_slice() else {
        return None;
    };
    let owner: u32 = owner.parse().ok()?;
    Some(ChannelEntry {
        id: id.parse().ok()?,
        name: (*name != "-").then(|| (*name).to_owned()),
        owner: (owner != 0).then_some(owner),
        buffer_size: size.parse().ok()?,
        event_mode: EventMode::from_name(mode)?,
        pacing: Pacing::from_name(pacing)?,
        rounds: rounds.parse().ok()?,
        p50_ns: p50.parse().ok()?,
        p99_ns: p99.parse().ok()?,
    })
}

/// Every channel of the loaded module, the default one first (the
/// `channels` parameter of [`Params::new`]). Anyone who can read sysfs may
/// call it.
///
/// ```no_run
/// let n = kern2usr::channels()?.len() - 1;
/// println!("{n} channel(s) besides the default one");
/// # Ok::<(), kern2usr::Error>(())
/// ```
pub fn channels() -> Result<Vec<ChannelEntry>> {
    Params::new().channels()
}

impl Params {
    /// The `channels` listing of this parameters directory, typed
    /// ([`parse_channels`]). A module before ABI v3 has no such parameter:
    /// [`Error::ParamRead`] (ENOENT).
    ///
    /// ```no_run
    /// let list = kern2usr::Params::new().channels()?;
    /// assert!(list[0].is_default());
    /// # Ok::<(), kern2usr::Error>(())
    /// ```
    pub fn channels(&self) -> Result<Vec<ChannelEntry>> {
        parse_channels(&self.read(param::CHANNELS)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "id name owner buffer_size mode pacing rounds p50_ns p99_ns";

    #[test]
    fn parses_every_field_of_every_line() -> Result<()> {
        let text = format!(
            "{HEAD}\n0 - 0 4096 queue timer 0 0 0\n1 a.b-c_d 42 1048576 queue b2b+adaptive 7 100 200\n\
             17 prod 0 8192 queue b2b 3 5 6\n18 - 0 4096 counter timer+adaptive 0 0 0\n"
        );
        let l = parse_channels(&text)?;
        assert_eq!(
            l[1],
            ChannelEntry {
                id: 1,
                name: Some("a.b-c_d".to_owned()),
                owner: Some(42),
                buffer_size: 1 << 20,
                event_mode: EventMode::Queue,
                pacing: Pacing::BackToBackAdaptive,
                rounds: 7,
                p50_ns: 100,
                p99_ns: 200,
            }
        );
        assert_eq!((l[0].name.clone(), l[0].owner), (None, None));
        assert_eq!(
            (l[2].id, l[2].owner, l[2].pacing),
            (17, None, Pacing::BackToBack)
        );
        assert_eq!(l[3].pacing, Pacing::TimerAdaptive);
        Ok(())
    }

    #[test]
    fn refuses_what_the_module_never_prints() {
        let ok = "0 - 0 4096 queue timer 0 0 0";
        for text in [
            String::new(),
            format!("{HEAD}\n"),
            format!("id name\n{ok}"),
            format!("{HEAD}\n1 - 0 4096 queue timer 0 0 0"),
            format!("{HEAD}\n{ok}\n0 - 0 4096 queue timer 0 0 0"),
            format!("{HEAD}\n{ok}\n2 x 1 4096 queue timer 0 0 0\n2 y 1 4096 queue timer 0 0 0"),
            format!("{HEAD}\n{ok}\n2 x 1 4096 fifo timer 0 0 0"),
            format!("{HEAD}\n{ok}\n2 x 1 4096 queue fast 0 0 0"),
            format!("{HEAD}\n{ok}\n2 x 1 4096 queue timer 0 0"),
            format!("{HEAD}\n{ok}\n2 x -1 4096 queue timer 0 0 0"),
            format!("{HEAD}\n{ok}\n2 x 1 4096 queue timer 0 0 0 9"),
        ] {
            let e = parse_channels(&text);
            assert!(
                matches!(e, Err(Error::ParamValue { ref name, .. }) if name == "channels"),
                "{text:?}: {e:?}"
            );
        }
    }

    #[test]
    fn params_read_the_channels_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("channels"),
            format!("{HEAD}\n0 - 0 4096 counter timer 1 2 3\n"),
        )?;
        let l = Params::at_dir(dir.path()).channels()?;
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].event_mode, EventMode::Counter);
        Ok(())
    }
}
