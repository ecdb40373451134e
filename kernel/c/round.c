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

/*
 * Fill the buffer and tell the listener. The control page gets the round's
 * sequence number first; in adaptive mode a spinning listener sees it
 * there and the doorbell is skipped (the store, the full barrier, then the
 * load of listener_state pair with the listener's mirror image).
 */
static void k2u_round_begin(struct k2u *k, bool log)
{
	struct k2u_ctrl *ctrl = k->ctrl;

	if (!k2u_post_has_room(k)) {
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
	/* A spinning listener may ack as soon as it sees the sequence. */
	k2u_round_signalled(k);
	/* Release: the filled buffer is visible before the new sequence. */
	smp_store_release(&ctrl->ready_seq, ctrl->ready_seq + 1);
	/* Pairs with the listener's barrier between ASLEEP and its re-read. */
	smp_mb();
	if (k->adaptive &&
	    READ_ONCE(ctrl->listener_state) == K2U_LISTENER_SPINNING)
		WRITE_ONCE(ctrl->doorbells_skipped, ctrl->doorbells_skipped + 1);
	else
		k2u_post(k, K2U_CMD_MEMORY_READY);
	if (log)
		pr_info("Buffer filled\n");
}

static void k2u_round_work(struct work_struct *work)
{
	struct k2u *k = container_of(work, struct k2u, round_work);
	bool log;

	mutex_lock(&k->lock);
	if (!k->testing)
		goto out;
	log = __ratelimit(&k2u_round_log);
	if (log && !k->back_to_back) {
		pr_info("Timer handler called\n");
		pr_info("In handler: buffer_filled = %d, calculation_done = %d\n",
			k->buffer_filled, k->calculation_done);
	}
	if (k->buffer_filled && !k->calculation_done)
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
	lockdep_assert_held(&k->lock);
	k->testing = true;
	k->buffer_filled = false;
	k->calculation_done = false;
	k2u_stats_reset(&k->stats);
	if (k->back_to_back)
		queue_work(k->wq, &k->round_work);
	else
		hrtimer_start(&k->timer, ns_to_ktime(k2u_period_ns()),
			      HRTIMER_MODE_REL);
}

/* Stop the timer; a round still outstanding is abandoned. */
void k2u_round_stop(struct k2u *k)
{
	lockdep_assert_held(&k->lock);
	if (!k->testing)
		return;
	hrtimer_cancel(&k->timer);
	k->testing = false;
	k->buffer_filled = false;
	k->calculation_done = false;
}

u64 k2u_round_average(struct k2u *k)
{
	lockdep_assert_held(&k->lock);
	return k->stats.count ? div64_u64(k->stats.total, k->stats.count) : 0;
}

/* The round is published now: the round trip starts here. */
void k2u_round_signalled(struct k2u *k)
{
	k->round_start_ns = ktime_get_ns();
}

/* The listener acknowledged @value at @now_ns. -EPROTO: nothing to ack. */
int k2u_round_ack(struct k2u *k, u64 value, u64 now_ns)
{
	u64 took;

	lockdep_assert_held(&k->lock);
	if (value != K2U_CMD_MEMORY_COPIED) {
		pr_notice_ratelimited("unexpected value %llu on efd2 ignored\n",
				      value);
		return -EINVAL;
	}
	if (!k->testing || !k->buffer_filled || k->calculation_done)
		return -EPROTO;
	took = now_ns - k->round_start_ns;
	k2u_stats_add(&k->stats, took);
	k->calculation_done = true;
	if (k->log_round) {
		pr_info("Time to copy = %llu\n", took);
		pr_info("Exit from __monitor_efd2\n");
	}
	if (k->back_to_back)
		k2u_round_begin(k, __ratelimit(&k2u_round_log));
	return 0;
}
