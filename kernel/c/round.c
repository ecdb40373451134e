// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test rounds: a timer fills the buffer, signals MEMORY_READY, and the
 * listener's acknowledgement closes the round with its round-trip time.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/math64.h>
#include <linux/ratelimit.h>

#include "kern2usr.h"

/* Log every round at the seed's pace; a fast timer cannot flood the log. */
static DEFINE_RATELIMIT_STATE(k2u_round_log, HZ, 20);

/* Only the default channel logs its rounds, as the seed did. */
static bool k2u_round_logs(struct k2u_chan *c)
{
	return k2u_is_default(c) && __ratelimit(&k2u_round_log);
}

static enum hrtimer_restart k2u_timer_fn(struct hrtimer *timer)
{
	struct k2u_chan *c = container_of(timer, struct k2u_chan, timer);

	queue_work(c->wq, &c->round_work);
	hrtimer_forward_now(timer, ns_to_ktime(k2u_period_ns(c)));
	return HRTIMER_RESTART;
}

/*
 * @len bytes of period @period (at least a word) at @p, byte 0 being
 * @first (< @period): the first period, rounded up to a whole word, by
 * hand; then word after word copied from one period back, where the bytes
 * are already written. No table to allocate. Not memcpy(): with FSRM the
 * kernel's memcpy() is `rep movsb`, which QEMU's TCG (where the suites
 * and the benchmark run) executes a byte at a time.
 */
void k2u_fill_periodic(u8 *p, size_t len, unsigned int first,
		       unsigned int period)
{
	size_t i, n = min_t(size_t, len, round_up(period, sizeof(u64)));
	unsigned int v = first;

	for (i = 0; i < n; i++) {
		p[i] = v;
		if (++v == period)
			v = 0;
	}
	for (; i + sizeof(u64) <= len; i += sizeof(u64))
		put_unaligned(get_unaligned((u64 *)(p + i - period)),
			      (u64 *)(p + i));
	for (; i < len; i++)
		p[i] = p[i - period];
}

/*
 * The default channel's bytes are the seed's i % 255; a created channel's
 * are K2U_CHANNEL_PATTERN_BYTE(id, round, i): the value at 0, then +1
 * modulo 251.
 */
static void k2u_fill(struct k2u_chan *c, u64 round)
{
	if (k2u_is_default(c))
		k2u_fill_periodic(c->buffer, c->buffer_size, 0, 255);
	else
		k2u_fill_periodic(c->buffer, c->buffer_size,
				  K2U_CHANNEL_PATTERN_BYTE(c->id, round, 0),
				  K2U_CHANNEL_PATTERN_MODULUS);
}

/*
 * Under ack_lock: forget the round, its lend included (the listener left,
 * or the producer went away).
 */
void k2u_round_reset_locked(struct k2u_chan *c)
{
	lockdep_assert_held(&c->ack_lock);
	c->round.open = false;
	c->round.shown = false;
	c->round.closed = false;
	c->round.lent = false;
	c->round.returned = false;
	c->acks_late = 0;
	c->ack_bad_value = 0;
	k2u_page_ack_reset_locked(c);
}

/*
 * Under ack_lock: the MEMORY_READY of round @id reached the listener. A
 * round STOP abandoned is still lent: its record may be read later.
 */
void k2u_round_shown_locked(struct k2u_chan *c, u32 id)
{
	lockdep_assert_held(&c->ack_lock);
	if ((c->round.open || c->round.lent) && (u32)c->round.id == id)
		c->round.shown = true;
}

/*
 * Under ack_lock: close the outstanding round, timed now. A plain ack
 * (7 on efd2, K2U_IOC_ACK) needs the round to be shown; an ack by id
 * needs the id. 0, -EPROTO (no round outstanding) or -ESTALE. An ack that
 * would close a round STOP abandoned ends its lend instead, and is
 * refused (-EPROTO) as any ack with no round outstanding.
 */
static int k2u_round_close_locked(struct k2u_chan *c, bool by_id, u32 id)
{
	struct k2u_round *r = &c->round;
	bool mine = by_id ? (u32)r->id == id : r->shown;

	lockdep_assert_held(&c->ack_lock);
	if (!r->open) {
		if (r->lent && mine) {
			r->lent = false;
			r->returned = true;
		}
		return -EPROTO;
	}
	if (!mine)
		return -ESTALE;
	/* Taken under the lock that publish holds: never before the start. */
	r->took_ns = ktime_get_ns() - r->start_ns;
	r->open = false;
	r->lent = false;
	r->closed = true;
	return 0;
}

/*
 * Under ack_lock, ack_seq moved to @v (page acks, not a ring): if it
 * names the outstanding round, close it as K2U_IOC_ACK_ROUND would; if
 * it names the round STOP abandoned and still lent, end the lend. Any
 * other (older) round is acked already: nothing to do.
 */
void k2u_round_page_ack_locked(struct k2u_chan *c, u64 v)
{
	lockdep_assert_held(&c->ack_lock);
	if (v == c->round.id)
		k2u_round_close_locked(c, true, (u32)v);
}

/*
 * Under ack_lock, from efd2's wake-up: @value is what its counter held,
 * k acks of 7 when several were written before it was read. ack_seq is
 * looked at first; once the listener acks through the page (or on a
 * ring) efd2 is only a doorbell.
 */
void k2u_round_efd2_locked(struct k2u_chan *c, u64 value)
{
	bool paged;
	u64 acks;
	u32 rest;

	lockdep_assert_held(&c->ack_lock);
	paged = k2u_page_ack_locked(c);
	acks = div_u64_rem(value, K2U_CMD_MEMORY_COPIED, &rest);
	if (rest) {
		c->ack_bad_value = value;
		return;
	}
	if (paged || c->page_acks || c->ring_slots)
		return;
	if (!k2u_round_close_locked(c, false, 0))
		acks--;
	c->acks_late += acks;
}

/* K2U_IOC_ACK (@by_id false) and K2U_IOC_ACK_ROUND. */
int k2u_round_ack_ioctl(struct k2u_chan *c, bool by_id, u32 id)
{
	unsigned long irqflags;
	int ret;

	lockdep_assert_held(&c->lock);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	ret = k2u_round_close_locked(c, by_id, id);
	if (ret)
		c->acks_late++;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	k2u_round_collect(c);
	return ret;
}

/*
 * Under c->lock: whether a round may open now: 0, -EBUSY while the buffer
 * is lent (a round outstanding, or abandoned by STOP and not acked) or a
 * round is closed by an ack but not counted yet (ack_work counts it and,
 * back to back, opens the next), -EAGAIN when the event queue has no room
 * for MEMORY_READY. Only k2u_round_open() opens rounds, under c->lock, so
 * the answer holds until the caller opens one.
 */
static int k2u_round_may_open(struct k2u_chan *c)
{
	unsigned long irqflags;
	bool busy;

	lockdep_assert_held(&c->lock);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	busy = c->round.open || c->round.lent || c->round.closed;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if (busy)
		return -EBUSY;
	return k2u_post_has_room(c, K2U_CMD_MEMORY_READY) ? 0 : -EAGAIN;
}

/*
 * Under c->lock, after k2u_round_may_open(): publish a round of @len bytes
 * already in the buffer and tell the listener; returns the round's id. The
 * control page gets ready_len, then the id; in adaptive mode a spinning
 * listener sees it there and the doorbell is skipped (the store, the full
 * barrier, then the load of listener_state pair with the listener's mirror
 * image).
 */
static u64 k2u_round_open(struct k2u_chan *c, size_t len)
{
	struct k2u_ctrl *ctrl = c->ctrl;
	unsigned long irqflags;
	u64 id;

	/*
	 * Open the round and publish its id in one ack_lock section: an ack
	 * either comes before (and cannot close it) or after the round is
	 * visible. In adaptive mode the control page shows every round, so
	 * it counts as shown from its publish.
	 */
	WRITE_ONCE(ctrl->ready_len, len);
	c->lend_logged = false;
	spin_lock_irqsave(&c->ack_lock, irqflags);
	id = ++c->rounds_published;
	c->round.id = id;
	c->round.open = true;
	c->round.lent = true;
	c->round.returned = false;
	c->round.shown = c->adaptive;
	c->round.start_ns = ktime_get_ns();
	/* Release: the buffer and ready_len are visible before the sequence. */
	smp_store_release(&ctrl->ready_seq, id);
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	/* Pairs with the listener's barrier between ASLEEP and its re-read. */
	smp_mb();
	if (c->adaptive &&
	    READ_ONCE(ctrl->listener_state) == K2U_LISTENER_SPINNING)
		WRITE_ONCE(ctrl->doorbells_skipped,
			   READ_ONCE(ctrl->doorbells_skipped) + 1);
	else
		k2u_post(c, K2U_CMD_MEMORY_READY);
	return id;
}

/*
 * Under c->lock: a round is due but the buffer is still lent for a round
 * STOP abandoned. Said once per such round: the ticks that follow skip
 * silently until its ack.
 */
static void k2u_round_note_lent(struct k2u_chan *c)
{
	unsigned long irqflags;
	bool held;
	u64 id;

	lockdep_assert_held(&c->lock);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	held = c->round.lent && !c->round.open;
	id = c->round.id;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if (!held || c->lend_logged)
		return;
	c->lend_logged = true;
	pr_info_ratelimited("%sbuffer still lent to the listener (round %llu): rounds wait for its ack\n",
			    c->tag, id);
}

/* A test round: fill the buffer, then publish all of it. */
static void k2u_round_begin(struct k2u_chan *c, bool log)
{
	int ret = k2u_round_may_open(c);

	if (ret == -EBUSY)
		k2u_round_note_lent(c);
	if (ret == -EAGAIN) {
		pr_notice_ratelimited("%sevent queue full: round skipped\n",
				      c->tag);
		/* Back to back has no timer to try again: arm it. */
		if (c->back_to_back && !hrtimer_active(&c->timer))
			hrtimer_start(&c->timer, ns_to_ktime(k2u_period_ns(c)),
				      HRTIMER_MODE_REL);
	}
	if (ret)
		return;
	if (log)
		pr_info("Start monitoring for efd2...\n");
	k2u_fill(c, c->rounds_published + 1);
	c->buffer_filled = true;
	c->calculation_done = false;
	c->log_round = log;
	k2u_round_open(c, c->buffer_size);
	k2u_ack_poll_kick(c);
	if (log)
		pr_info("Buffer filled\n");
}

/*
 * A producer's round: @len bytes the producer wrote. Under c->lock; the
 * round's id, or -EBUSY / -EAGAIN as k2u_round_may_open(). (A producer's
 * channel has no STOP: its round is lent exactly while it is outstanding.)
 */
s64 k2u_round_publish(struct k2u_chan *c, size_t len)
{
	int ret = k2u_round_may_open(c);

	if (ret)
		return ret;
	c->log_round = false;
	return k2u_round_open(c, len);
}

/* Whether a round is published and neither acked nor abandoned. */
static bool k2u_round_outstanding(struct k2u_chan *c)
{
	unsigned long irqflags;
	bool open;

	spin_lock_irqsave(&c->ack_lock, irqflags);
	open = c->round.open;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	return open;
}

static void k2u_round_work(struct work_struct *work)
{
	struct k2u_chan *c = container_of(work, struct k2u_chan, round_work);
	bool log;

	if (c->ring_slots) {
		k2u_ring_work(c);
		return;
	}
	mutex_lock(&c->lock);
	if (!c->testing || !k2u_check_listener(c))
		goto out;
	k2u_round_collect(c);
	if (!c->testing)
		goto out;
	log = k2u_round_logs(c);
	if (log && !c->back_to_back) {
		pr_info("Timer handler called\n");
		pr_info("In handler: buffer_filled = %d, calculation_done = %d\n",
			c->buffer_filled, c->calculation_done);
	}
	if (k2u_round_outstanding(c))
		goto out;	/* the last round is still outstanding */
	k2u_round_begin(c, log);
out:
	mutex_unlock(&c->lock);
}

void k2u_round_init(struct k2u_chan *c)
{
	INIT_WORK(&c->round_work, k2u_round_work);
	k2u_hrtimer_setup(&c->timer, k2u_timer_fn);
}

/*
 * A channel going away: after this neither the timer nor a work item of
 * @c runs. Call without c->lock, after k2u_detach(): with no test and no
 * hooks nothing queues them or arms the timer again. The timer first, as
 * it queues the round work.
 */
void k2u_round_cancel_sync(struct k2u_chan *c)
{
	hrtimer_cancel(&c->timer);
	cancel_work_sync(&c->round_work);
	cancel_work_sync(&c->poll_work);	/* it queues ack_work */
	cancel_work_sync(&c->ack_work);
	cancel_work_sync(&c->post_work);
	cancel_work_sync(&c->hup_work);
}

/*
 * A new test. A round the last STOP abandoned keeps the buffer lent (its
 * id and whether it was shown stay): the first round waits for its ack.
 */
void k2u_round_start(struct k2u_chan *c)
{
	unsigned long irqflags;

	lockdep_assert_held(&c->lock);
	c->testing = true;
	c->buffer_filled = false;
	c->calculation_done = false;
	spin_lock_irqsave(&c->ack_lock, irqflags);
	c->round.open = false;
	c->round.closed = false;
	c->acks_late = 0;
	c->ack_bad_value = 0;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	k2u_stats_reset(&c->stats);
	if (c->back_to_back)
		queue_work(c->wq, &c->round_work);
	else
		hrtimer_start(&c->timer, ns_to_ktime(k2u_period_ns(c)),
			      HRTIMER_MODE_REL);
}

/*
 * Stop the timer. A round acked before this point still counts; one
 * still outstanding is abandoned: no later ack closes it, but it keeps
 * the buffer lent until its ack (or the listener's detach).
 */
void k2u_round_stop(struct k2u_chan *c)
{
	unsigned long irqflags;

	lockdep_assert_held(&c->lock);
	if (!c->testing)
		return;
	hrtimer_cancel(&c->timer);
	c->testing = false;
	/* Abandon first: an ack from here on finds no round to close. */
	spin_lock_irqsave(&c->ack_lock, irqflags);
	c->round.open = false;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	k2u_round_collect(c);
	if (c->ring_slots)
		k2u_ring_stopped(c);
	c->buffer_filled = false;
	c->calculation_done = false;
}

u64 k2u_round_average(struct k2u_chan *c)
{
	lockdep_assert_held(&c->lock);
	return c->stats.count ? div64_u64(c->stats.total, c->stats.count) : 0;
}

/* Under c->lock: the line for a value on efd2 that is no multiple of 7. */
static void k2u_round_report_bad(struct k2u_chan *c)
{
	unsigned long irqflags;
	u64 bad;

	spin_lock_irqsave(&c->ack_lock, irqflags);
	bad = c->ack_bad_value;
	c->ack_bad_value = 0;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if (bad)
		pr_notice_ratelimited("%sunexpected value %llu on efd2 ignored\n",
				      c->tag, bad);
}

/*
 * Count a round an ack closed (its time into the statistics, its lines
 * into the log), report ignored acks, and in back-to-back mode start the
 * next round (also when an ack ended an abandoned round's lend).
 */
void k2u_round_collect(struct k2u_chan *c)
{
	unsigned long irqflags;
	u64 took, late;
	bool closed, returned;

	lockdep_assert_held(&c->lock);
	if (c->ring_slots) {
		/* efd2 is only a doorbell there, but still says a bad value. */
		k2u_round_report_bad(c);
		k2u_ring_collect(c);
		return;
	}
	k2u_page_ack_report(c);
	k2u_round_report_bad(c);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	closed = c->round.closed;
	took = c->round.took_ns;
	c->round.closed = false;
	returned = c->round.returned;
	c->round.returned = false;
	if (closed)
		c->acked_id = c->round.id;
	late = c->acks_late;
	c->acks_late = 0;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);

	if (late)
		pr_notice_ratelimited("%s%llu late ack(s) ignored: no shown round outstanding\n",
				      c->tag, late);
	if (closed) {
		/* A producer waiting in k2u_producer_wait_ack(). */
		wake_up_all(&c->ack_wait);
		k2u_stats_add(&c->stats, took);
		c->calculation_done = true;
		if (c->log_round) {
			pr_info("Time to copy = %llu\n", took);
			pr_info("Exit from __monitor_efd2\n");
		}
	} else if (!returned) {
		return;
	}
	/* A dead listener is detached by the next command or timer round. */
	if (c->back_to_back && c->testing && k2u_listener_alive(c))
		k2u_round_begin(c, k2u_round_logs(c));
}
