//! Async consumption on tokio (feature `tokio`): [`AsyncChannel`] waits for
//! the channel's non-blocking eventfd with tokio's [`AsyncFd`], so a
//! listener runs as a task beside other work.

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::channel::{Channel, Event, Info, Round};
use crate::error::{Error, Result};

/// A [`Channel`] whose [`AsyncChannel::next`] is awaited instead of
/// blocking a thread. Rounds are the same [`Round`] guards, acknowledged
/// the same way (the ack is one non-blocking system call).
///
/// ```no_run
/// # async fn listen() -> kern2usr::Result<()> {
/// use kern2usr::{aio::AsyncChannel, Channel, Event};
///
/// let mut ch = AsyncChannel::new(Channel::open()?)?;
/// loop {
///     match ch.next().await? {
///         Event::MemoryReady { .. } => {
///             if let Some(round) = ch.round() {
///                 println!("round {}: {} bytes", round.id(), round.len());
///                 round.ack()?;
///             }
///         }
///         Event::Exit => return Ok(()),
///         _ => {}
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncChannel {
    inner: AsyncFd<Channel>,
}

impl AsyncChannel {
    /// Register `channel`'s eventfd (non-blocking, as [`Channel`] creates
    /// it) with the current tokio runtime's reactor.
    ///
    /// Must be called from within a tokio runtime (tokio panics
    /// otherwise); a registration that fails is [`Error::Poll`].
    pub fn new(channel: Channel) -> Result<Self> {
        // SAFETY: `Channel::as_raw_fd` is its kernel->user eventfd, an
        // `OwnedFd` the channel creates at open and owns, never replaces
        // and closes only when dropped; the `AsyncFd` owns the channel, so
        // the fd stays open and the same until it is dropped or
        // `into_inner` gives the channel back.
        let inner = unsafe { AsyncFd::register_with_interest(channel, Interest::READABLE) }
            .map_err(|e| Error::Poll(e.into_parts().1))?;
        Ok(Self { inner })
    }

    /// What the module reported at open.
    pub fn info(&self) -> &Info {
        self.inner.get_ref().info()
    }

    /// The channel itself, for what needs no event: [`Channel::command`],
    /// [`Channel::stats`], [`Channel::id`], [`Channel::name`].
    ///
    /// ```no_run
    /// # async fn run() -> kern2usr::Result<()> {
    /// use kern2usr::{aio::AsyncChannel, Channel, ChannelOptions, Command, Event};
    ///
    /// let mut ch = AsyncChannel::new(Channel::create(&ChannelOptions::new().name("async"))?)?;
    /// ch.channel().command(Command::Mmap)?;
    /// assert_eq!(ch.next().await?, Event::Mmap);
    /// ch.channel().command(Command::Start)?;
    /// println!("channel {}: {:?}", ch.channel().id(), ch.channel().stats()?);
    /// # Ok(()) }
    /// ```
    pub fn channel(&self) -> &Channel {
        self.inner.get_ref()
    }

    /// The next event, waiting without blocking the thread.
    ///
    /// Cancel-safe: an event is taken from the channel only in the step
    /// that returns it, so dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            let mut guard = self.inner.readable_mut().await.map_err(Error::Poll)?;
            match guard.get_inner_mut().try_next()? {
                // Readiness is kept: more events may be queued already.
                Some(event) => return Ok(event),
                None => guard.clear_ready(),
            }
        }
    }

    /// The next event if one is there now ([`Channel::try_next`]).
    pub fn try_next(&mut self) -> Result<Option<Event>> {
        self.inner.get_mut().try_next()
    }

    /// The open round ([`Channel::round`]).
    pub fn round(&mut self) -> Option<Round<'_>> {
        self.inner.get_mut().round()
    }

    /// The channel back, deregistered from the reactor.
    pub fn into_inner(self) -> Channel {
        self.inner.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;

    use super::*;
    use crate::abi::{pattern_byte, Code, EventMode};
    use crate::ctrl::CtrlPage;
    use crate::device::{first_pattern_mismatch, Access, MappedBuffer};
    use crate::eventfd::EventFd;

    /// A counter-mode channel over fakes, and the kernel's side of it.
    fn fake() -> anyhow::Result<(Channel, EventFd, EventFd, CtrlPage, [std::fs::File; 2])> {
        let mut data = tempfile::tempfile()?;
        data.write_all(&(0..4096).map(pattern_byte).collect::<Vec<_>>())?;
        let page = tempfile::tempfile()?;
        page.set_len(4096)?;
        let map = |f: &std::fs::File, access| MappedBuffer::map_fd(f.as_fd(), 4096, 0, access);
        let efd = EventFd::new_nonblocking()?;
        let efd2 = EventFd::new_nonblocking()?;
        let k_efd = EventFd::from(efd.as_fd().try_clone_to_owned()?);
        let k_efd2 = EventFd::from(efd2.as_fd().try_clone_to_owned()?);
        let k_ctrl = CtrlPage::from_mapping(map(&page, Access::ReadWrite)?)?;
        let (records, _w) = std::io::pipe()?;
        let ch = Channel::from_fakes(
            efd,
            efd2,
            records.into(),
            map(&data, Access::ReadOnly)?,
            Some(CtrlPage::from_mapping(map(&page, Access::ReadWrite)?)?),
            EventMode::Counter,
        );
        Ok((ch, k_efd, k_efd2, k_ctrl, [data, page]))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn next_waits_for_the_kernel_and_rounds_ack_with_7() -> anyhow::Result<()> {
        let (ch, k_efd, k_efd2, k_ctrl, _files) = fake()?;
        let mut ach = AsyncChannel::new(ch)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // The listener as a task; it reports each event, and for a round
        // its id and whether the view is the buffer, after acking it.
        let task = tokio::spawn(async move {
            loop {
                let ev = ach.next().await?;
                let round = match ach.round() {
                    Some(r) => {
                        let seen = (r.id(), first_pattern_mismatch(&r).is_none());
                        r.ack()?;
                        Some(seen)
                    }
                    None => None,
                };
                if tx.send((ev, round)).is_err() || ev == Event::Exit {
                    return anyhow::Ok(());
                }
            }
        });
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "an event with nothing sent");
        assert!(!task.is_finished(), "next() returned with nothing sent");
        // Counter mode: one code at a time, the next after the listener
        // has read the last (as the module does).
        k_efd.write(u64::from(Code::StartTest.value()))?;
        assert_eq!(rx.recv().await, Some((Event::Start, None)));
        k_ctrl.publish_as_kernel(12);
        k_efd.write(u64::from(Code::MemoryReady.value()))?;
        assert_eq!(
            rx.recv().await,
            Some((Event::MemoryReady { round: 12 }, Some((12, true))))
        );
        assert_eq!(k_efd2.read()?, u64::from(Code::MemoryCopied.value()));
        k_efd.write(u64::from(Code::ExitTest.value()))?;
        assert_eq!(rx.recv().await, Some((Event::Exit, None)));
        task.await??;
        Ok(())
    }

    /// A channel of its own (counter mode, id 7) over the fakes: its
    /// rounds show the published `ready_len`, and its id is reachable.
    #[tokio::test(flavor = "current_thread")]
    async fn an_owned_channels_round_has_the_published_length() -> anyhow::Result<()> {
        let (ch, k_efd, k_efd2, k_ctrl, _files) = fake()?;
        let mut ach = AsyncChannel::new(ch.fake_as_channel(crate::ChannelKind::Owned, 7))?;
        assert_eq!(ach.channel().id(), 7);
        k_ctrl.publish_len_as_kernel(5, Some(4096));
        k_efd.write(u64::from(Code::MemoryReady.value()))?;
        assert_eq!(ach.next().await?, Event::MemoryReady { round: 5 });
        let round = ach.round().ok_or_else(|| anyhow::anyhow!("no round"))?;
        assert_eq!(round.len(), 4096);
        round.ack()?;
        assert_eq!(k_efd2.read()?, u64::from(Code::MemoryCopied.value()));
        Ok(())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn try_next_is_none_when_nothing_is_there() -> anyhow::Result<()> {
        let (ch, k_efd, _k_efd2, _k_ctrl, _files) = fake()?;
        let mut ach = AsyncChannel::new(ch)?;
        assert_eq!(ach.try_next()?, None);
        k_efd.write(u64::from(Code::ExitTest.value()))?;
        assert_eq!(ach.next().await?, Event::Exit);
        assert_eq!(ach.try_next()?, None);
        Ok(())
    }
}
