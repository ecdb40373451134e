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

static enum hrtimer_restart k2u_timer_fn(struct hrtimer *timer)
{
	struct k2u *k = container_of(timer, struct k2u, timer);

	queue_work(k->wq, &k->round_work);
	hrtimer_forward_now(timer, ns_to_ktime(k2u_period_ns()));
	return HRTIMER_RESTART;
}

static void k2u_fill(struct k2u *k)
{
	u8 *p = k->buffer;
	size_t i;

	for (i = 0; i < k->buffer_size; i++)
		p[i] = K2U_PATTERN_BYTE(i);
}

/* Under ack_lock: forget the round (a new test, or the listener left). */
void k2u_round_reset_locked(struct k2u *k)
{
	lockdep_assert_held(&k->ack_lock);
	k->round.open = false;
	k->round.shown = false;
	k->round.closed = false;
	k->acks_late = 0;
	k->ack_bad_value = 0;
}

/* Under ack_lock: the MEMORY_READY of round @id reached the listener. */
void k2u_round_shown_locked(struct k2u *k, u32 id)
{
	lockdep_assert_held(&k->ack_lock);
	if (k->round.open && (u32)k->round.id == id)
		k->round.shown = true;
}

/*
 * Under ack_lock: close the outstanding round, timed now. A plain ack
 * (7 on efd2, K2U_IOC_ACK) needs the round to be shown; an ack by id
 * needs the id. 0, -EPROTO (no round outstanding) or -ESTALE.
 */
static int k2u_round_close_locked(struct k2u *k, bool by_id, u32 id)
{
	struct k2u_round *r = &k->round;

	lockdep_assert_held(&k->ack_lock);
	if (!r->open)
		return -EPROTO;
	if (by_id ? (u32)r->id != id : !r->shown)
		return -ESTALE;
	/* Taken under the lock that publish holds: never before the start. */
	r->took_ns = ktime_get_ns() - r->start_ns;
	r->open = false;
	r->closed = true;
	return 0;
}

/*
 * Under ack_lock, from efd2's wake-up: @value is what its counter held,
 * k acks of 7 when several were written before it was read.
 */
void k2u_round_efd2_locked(struct k2u *k, u64 value)
{
	u64 acks;
	u32 rest;

	lockdep_assert_held(&k->ack_lock);
	acks = div_u64_rem(value, K2U_CMD_MEMORY_COPIED, &rest);
	if (rest) {
		k->ack_bad_value = value;
		return;
	}
	if (!k2u_round_close_locked(k, false, 0))
		acks--;
	k->acks_late += acks;
}

/* K2U_IOC_ACK (@by_id false) and K2U_IOC_ACK_ROUND. */
int k2u_round_ack_ioctl(struct k2u *k, bool by_id, u32 id)
{
	unsigned long irqflags;
	int ret;

	lockdep_assert_held(&k->lock);
	spin_lock_irqsave(&k->ack_lock, irqflags);
	ret = k2u_round_close_locked(k, by_id, id);
	if (ret)
		k->acks_late++;
	spin_unlock_irqrestore(&k->ack_lock, irqflags);
	k2u_round_collect(k);
	return ret;
}

/*
 * Fill the buffer and tell the listener. The control page gets the round's
 * sequence number first; in adaptive mode a spinning listener sees it
 * there and the doorbell is skipped (the store, the full barrier, then the
 * load of listener_state pair with the listener's mirror image).
 */
static void k2u_round_begin(struct k2u *k, bool log)
{
	struct k2u_ctrl *ctrl = k->ctrl;
	unsigned long irqflags;
	bool busy;

	/*
	 * Never over an outstanding round, nor over one an ack closed that
	 * is not counted yet (ack_work counts it and, back to back, comes
	 * here again). Only this function opens rounds, under k2u.lock, so
	 * the answer holds until the round below is opened.
	 */
	spin_lock_irqsave(&k->ack_lock, irqflags);
	busy = k->round.open || k->round.closed;
	spin_unlock_irqrestore(&k->ack_lock, irqflags);
	if (busy)
		return;
	if (!k2u_post_has_room(k, K2U_CMD_MEMORY_READY)) {
		pr_notice_ratelimited("event queue full: round skipped\n");
		/* Back to back has no timer to try again: arm it. */
		if (k->back_to_back && !hrtimer_active(&k->timer))
			hrtimer_start(&k->timer, ns_to_ktime(k2u_period_ns()),
				      HRTIMER_MODE_REL);
		return;
	}
	if (log)
		pr_info("Start monitoring for efd2...\n");
	k2u_fill(k);
	k->buffer_filled = true;
	k->calculation_done = false;
	k->log_round = log;
	/*
	 * Open the round and publish its id in one ack_lock section: an ack
	 * either comes before (and cannot close it) or after the round is
	 * visible. In adaptive mode the control page shows every round, so
	 * it counts as shown from its publish. Release: the filled buffer is
	 * visible before the new sequence.
	 */
	spin_lock_irqsave(&k->ack_lock, irqflags);
	k->round.id = ++k->rounds_published;
	k->round.open = true;
	k->round.shown = k->adaptive;
	k->round.start_ns = ktime_get_ns();
	smp_store_release(&ctrl->ready_seq, k->round.id);
	spin_unlock_irqrestore(&k->ack_lock, irqflags);
	/* Pairs with the listener's barrier between ASLEEP and its re-read. */
	smp_mb();
	if (k->adaptive &&
	    READ_ONCE(ctrl->listener_state) == K2U_LISTENER_SPINNING)
		WRITE_ONCE(ctrl->doorbells_skipped,
			   READ_ONCE(ctrl->doorbells_skipped) + 1);
	else
		k2u_post(k, K2U_CMD_MEMORY_READY);
	if (log)
		pr_info("Buffer filled\n");
}

/* Whether a round is published and neither acked nor abandoned. */
static bool k2u_round_outstanding(struct k2u *k)
{
	unsigned long irqflags;
	bool open;

	spin_lock_irqsave(&k->ack_lock, irqflags);
	open = k->round.open;
	spin_unlock_irqrestore(&k->ack_lock, irqflags);
	return open;
}

static void k2u_round_work(struct work_struct *work)
{
	struct k2u *k = container_of(work, struct k2u, round_work);
	bool log;

	mutex_lock(&k->lock);
	if (!k->testing || !k2u_check_listener(k))
		goto out;
	k2u_round_collect(k);
	if (!k->testing)
		goto out;
	log = __ratelimit(&k2u_round_log);
	if (log && !k->back_to_back) {
		pr_info("Timer handler called\n");
		pr_info("In handler: buffer_filled = %d, calculation_done = %d\n",
			k->buffer_filled, k->calculation_done);
	}
	if (k2u_round_outstanding(k))
		goto out;	/* the last round is still outstanding */
	k2u_round_begin(k, log);
out:
	mutex_unlock(&k->lock);
}

void k2u_round_init(struct k2u *k)
{
	INIT_WORK(&k->round_work, k2u_round_work);
	k2u_hrtimer_setup(&k->timer, k2u_timer_fn);
}

void k2u_round_start(struct k2u *k)
{
	unsigned long irqflags;

	lockdep_assert_held(&k->lock);
	k->testing = true;
	k->buffer_filled = false;
	k->calculation_done = false;
	spin_lock_irqsave(&k->ack_lock, irqflags);
	k2u_round_reset_locked(k);
	spin_unlock_irqrestore(&k->ack_lock, irqflags);
	k2u_stats_reset(&k->stats);
	if (k->back_to_back)
		queue_work(k->wq, &k->round_work);
	else
		hrtimer_start(&k->timer, ns_to_ktime(k2u_period_ns()),
			      HRTIMER_MODE_REL);
}

/*
 * Stop the timer. A round acked before this point still counts; one
 * still outstanding is abandoned: no later ack closes it.
 */
void k2u_round_stop(struct k2u *k)
{
	unsigned long irqflags;

	lockdep_assert_held(&k->lock);
	if (!k->testing)
		return;
	hrtimer_cancel(&k->timer);
	k->testing = false;
	/* Abandon first: an ack from here on finds no round to close. */
	spin_lock_irqsave(&k->ack_lock, irqflags);
	k->round.open = false;
	spin_unlock_irqrestore(&k->ack_lock, irqflags);
	k2u_round_collect(k);
	k->buffer_filled = false;
	k->calculation_done = false;
}

u64 k2u_round_average(struct k2u *k)
{
	lockdep_assert_held(&k->lock);
	return k->stats.count ? div64_u64(k->stats.total, k->stats.count) : 0;
}

/*
 * Count a round an ack closed (its time into the statistics, its lines
 * into the log), report ignored acks, and in back-to-back mode start the
 * next round.
 */
void k2u_round_collect(struct k2u *k)
{
	unsigned long irqflags;
	u64 took, late, bad;
	bool closed;

	lockdep_assert_held(&k->lock);
	spin_lock_irqsave(&k->ack_lock, irqflags);
	closed = k->round.closed;
	took = k->round.took_ns;
	k->round.closed = false;
	late = k->acks_late;
	k->acks_late = 0;
	bad = k->ack_bad_value;
	k->ack_bad_value = 0;
	spin_unlock_irqrestore(&k->ack_lock, irqflags);

	if (bad)
		pr_notice_ratelimited("unexpected value %llu on efd2 ignored\n",
				      bad);
	if (late)
		pr_notice_ratelimited("%llu late ack(s) ignored: no shown round outstanding\n",
				      late);
	if (!closed)
		return;
	k2u_stats_add(&k->stats, took);
	k->calculation_done = true;
	if (k->log_round) {
		pr_info("Time to copy = %llu\n", took);
		pr_info("Exit from __monitor_efd2\n");
	}
	/* A dead listener is detached by the next command or timer round. */
	if (k->back_to_back && k->testing && k2u_listener_alive(k))
		k2u_round_begin(k, __ratelimit(&k2u_round_log));
}
