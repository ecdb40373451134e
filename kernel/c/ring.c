// SPDX-License-Identifier: GPL-2.0-only
/*
 * Acks through the control page (ack_seq, kernel_state, wake_seq), ring
 * channels (K2U_CREATE_RING: the buffer is ring_slots slots, round r in
 * slot (r - 1) % ring_slots, acked by advancing ack_seq) and the bounded
 * polling of ack_seq (the ack_poll_us parameter). See "Ring channels and
 * acks through the control page" in docs/PROTOCOL.md.
 *
 * ack_seq is read where the module looks for acks: in efd2's wake-up
 * callback (under ack_lock, atomic: it only takes the value and times the
 * rounds it acks; work items do the rest), in the poll loop (a work item,
 * no lock held while it spins), and for a ring before every fill.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/log2.h>
#include <linux/moduleparam.h>
#include <linux/ratelimit.h>
#include <linux/sched.h>
#include <linux/slab.h>

#include "kern2usr.h"

static unsigned int ack_poll_us;

static int ack_poll_us_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;

	if (kstrtouint(val, 0, &v) || v > K2U_MAX_ACK_POLL_US) {
		pr_notice_ratelimited("ack_poll_us=%.*s refused: must be 0 to %u\n",
				      (int)strcspn(val, "\n"), val,
				      K2U_MAX_ACK_POLL_US);
		return -EINVAL;
	}
	WRITE_ONCE(ack_poll_us, v);
	return 0;
}

static const struct kernel_param_ops ack_poll_us_ops = {
	.set = ack_poll_us_set,
	.get = param_get_uint,
};
module_param_cb(ack_poll_us, &ack_poll_us_ops, &ack_poll_us, 0644);
MODULE_PARM_DESC(ack_poll_us, "us the module polls ack_seq before it sleeps on efd2 (0-1000, default 0: never)");

/* cond_resched() at least this often while polling. */
#define K2U_POLL_RESCHED_NS	(4 * NSEC_PER_USEC)

/*
 * Whether ack_seq holds a value the module would take: past @taken, the
 * last one taken, and not beyond @published. An out-of-range value must
 * not end a poll or a sleep: the poll would stop with the page still
 * saying POLLING, or a full ring's work requeue itself for ever.
 */
static bool k2u_ack_usable(struct k2u_chan *c, u64 taken, u64 published)
{
	/* Acquire: pairs with the listener's release of ack_seq. */
	u64 v = smp_load_acquire(&c->ctrl->ack_seq);

	return v > taken && v <= published;
}

/*
 * Poll ack_seq for up to @usec us (KERNEL_POLLING), no lock held; true
 * if it holds an ack to take (k2u_ack_usable()).
 */
static bool k2u_poll_ack(struct k2u_chan *c, u64 taken, u64 published,
			 unsigned int usec)
{
	struct k2u_ctrl *ctrl = c->ctrl;
	u64 now = ktime_get_ns();
	u64 end = now + (u64)usec * NSEC_PER_USEC;
	u64 resched = now + K2U_POLL_RESCHED_NS;

	WRITE_ONCE(ctrl->kernel_state, K2U_KERNEL_POLLING);
	for (;;) {
		if (k2u_ack_usable(c, taken, published))
			return true;
		now = ktime_get_ns();
		if (now >= end)
			return false;
		if (now >= resched) {
			cond_resched();
			resched = ktime_get_ns() + K2U_POLL_RESCHED_NS;
		}
		cpu_relax();
	}
}

/*
 * The module's half of NEED_WAKEUP: store wake_seq, then KERNEL_ASLEEP, a
 * full barrier, and re-read ack_seq. True if it holds an ack to take
 * (then the caller goes on instead of sleeping): either this sees the
 * listener's ack or the listener sees ASLEEP and writes efd2.
 */
static bool k2u_sleep_ack(struct k2u_chan *c, u64 taken, u64 published,
			  u64 wake)
{
	struct k2u_ctrl *ctrl = c->ctrl;

	WRITE_ONCE(ctrl->wake_seq, wake);
	smp_wmb();	/* a listener that sees ASLEEP sees this wake_seq */
	WRITE_ONCE(ctrl->kernel_state, K2U_KERNEL_ASLEEP);
	/* Pairs with the listener's barrier between ack_seq and its loads. */
	smp_mb();
	return k2u_ack_usable(c, taken, published);
}

/* A new listener: its acks start from the rounds published so far. */
void k2u_page_ack_attach(struct k2u_chan *c)
{
	struct k2u_ctrl *ctrl = c->ctrl;
	unsigned long irqflags;

	lockdep_assert_held(&c->lock);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	k2u_page_ack_reset_locked(c);
	WRITE_ONCE(ctrl->ack_seq, c->rounds_published);
	WRITE_ONCE(ctrl->wake_seq, 0);
	WRITE_ONCE(ctrl->kernel_state, K2U_KERNEL_ASLEEP);
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
}

/*
 * Under ack_lock: forget the page acks (attach, detach): everything
 * published counts as acked, so a ring's slots are all free again.
 */
void k2u_page_ack_reset_locked(struct k2u_chan *c)
{
	lockdep_assert_held(&c->ack_lock);
	c->ack_taken = c->rounds_published;
	c->ring_counted = c->rounds_published;
	c->ring_abandon = c->rounds_published;
	c->page_acks = false;
	c->ack_oor_pending = false;
	c->ack_oor_seen = false;
}

/* Under ack_lock: ack_seq @v is neither behind nor beyond: say it once. */
static void k2u_page_ack_oor_locked(struct k2u_chan *c, u64 v)
{
	if (c->ack_oor_seen && v == c->ack_oor_last)
		return;
	c->ack_oor = v;
	c->ack_oor_acked = c->ack_taken;
	c->ack_oor_published = c->rounds_published;
	c->ack_oor_pending = true;
	c->ack_oor_last = v;
	c->ack_oor_seen = true;
}

/* Under ack_lock: a ring's rounds ack_taken+1 ..= @v are acked now. */
static void k2u_ring_ack_locked(struct k2u_chan *c, u64 v)
{
	u64 now = ktime_get_ns(), r;
	struct k2u_ring_stamp *s;

	for (r = c->ack_taken + 1; r <= v; r++) {
		s = &c->ring_stamps[(r - 1) & (c->ring_slots - 1)];
		s->took_ns = now - s->start_ns;
	}
}

/*
 * Under ack_lock: look at ack_seq and take it if it moved. Not a ring: a
 * value naming the open round closes it (as K2U_IOC_ACK_ROUND), one naming
 * an older round ends its lend (k2u_round_page_ack_locked()). A ring: the
 * rounds up to it are acked. A value behind the last one taken or beyond
 * the last round published is ignored (logged by k2u_page_ack_report()).
 * True if a new value was taken.
 */
bool k2u_page_ack_locked(struct k2u_chan *c)
{
	u64 v;

	lockdep_assert_held(&c->ack_lock);
	/* Acquire: its reads of the acked rounds happened before. */
	v = smp_load_acquire(&c->ctrl->ack_seq);
	if (v == c->ack_taken)
		return false;
	if (v < c->ack_taken || v > c->rounds_published) {
		k2u_page_ack_oor_locked(c, v);
		return false;
	}
	c->page_acks = true;
	c->ack_oor_seen = false;
	if (c->ring_slots)
		k2u_ring_ack_locked(c, v);
	else
		k2u_round_page_ack_locked(c, v);
	c->ack_taken = v;
	return true;
}

/* Under c->lock: the out-of-range line, if one is due. */
void k2u_page_ack_report(struct k2u_chan *c)
{
	unsigned long irqflags;
	u64 v, acked, published;
	bool due;

	spin_lock_irqsave(&c->ack_lock, irqflags);
	due = c->ack_oor_pending;
	c->ack_oor_pending = false;
	v = c->ack_oor;
	acked = c->ack_oor_acked;
	published = c->ack_oor_published;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if (due)
		pr_notice_ratelimited("%sack_seq %llu out of range (acked %llu, published %llu): ignored\n",
				      c->tag, v, acked, published);
}

/* The ack_seq a sleeping ring's producer wakes at: half the ring free. */
static u64 k2u_ring_wake(struct k2u_chan *c, u64 taken)
{
	return taken + max(1U, c->ring_slots / 2);
}

/*
 * A full ring's poll, on the unbound poll queue: poll ack_seq for up to
 * @usec us, then sleep per NEED_WAKEUP; an ack to take wakes the round
 * work, which takes it before its next fill.
 */
static void k2u_ring_poll(struct k2u_chan *c, unsigned int usec)
{
	unsigned long irqflags;
	u64 taken, published;

	spin_lock_irqsave(&c->ack_lock, irqflags);
	taken = c->ack_taken;
	published = c->rounds_published;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if ((usec && k2u_poll_ack(c, taken, published, usec)) ||
	    k2u_sleep_ack(c, taken, published, k2u_ring_wake(c, taken)))
		queue_work(c->wq, &c->round_work);
}

/*
 * The poll work of back-to-back adaptive rounds (not a ring): one round
 * per invocation. Polls ack_seq for up to ack_poll_us (no lock held),
 * then sleeps per NEED_WAKEUP; an ack it sees is taken and ack_work
 * closes the round and, back to back, publishes the next one, which
 * queues this work again.
 */
static void k2u_poll_work(struct work_struct *work)
{
	struct k2u_chan *c = container_of(work, struct k2u_chan, poll_work);
	unsigned int usec = READ_ONCE(ack_poll_us);
	unsigned long irqflags;
	u64 id, taken, published;
	bool open, moved, waiting;

	if (c->ring_slots) {
		k2u_ring_poll(c, usec);
		return;
	}

	/*
	 * Each pass that goes round again took a newer ack_seq, at most the
	 * round's id: the loop is bounded.
	 */
	for (;;) {
		spin_lock_irqsave(&c->ack_lock, irqflags);
		open = c->round.open;
		id = c->round.id;
		taken = c->ack_taken;
		published = c->rounds_published;
		spin_unlock_irqrestore(&c->ack_lock, irqflags);
		moved = open && usec && READ_ONCE(c->back_to_back) &&
			READ_ONCE(c->adaptive) &&
			k2u_poll_ack(c, taken, published, usec);
		if (!moved)
			moved = k2u_sleep_ack(c, taken, published,
					      open ? id : taken + 1);
		if (!moved)
			return;	/* asleep: efd2's wake-up takes the ack */
		spin_lock_irqsave(&c->ack_lock, irqflags);
		k2u_page_ack_locked(c);
		/*
		 * The value taken may name an older round (ACK_ROUND closed the
		 * one after it): the open round still waits, and the page still
		 * says POLLING: look again, or sleep.
		 */
		waiting = open && c->round.open && c->round.id == id;
		spin_unlock_irqrestore(&c->ack_lock, irqflags);
		queue_work(c->wq, &c->ack_work);
		if (!waiting)
			return;
	}
}

/*
 * Under c->lock, a round (not a ring's) was published: poll for its ack
 * if ack_poll_us asks and the rounds are back to back and adaptive; and
 * whenever the page says POLLING, so that the poll work either looks at
 * ack_seq or says ASLEEP (no ack is then left without a look).
 */
void k2u_ack_poll_kick(struct k2u_chan *c)
{
	bool poll = READ_ONCE(ack_poll_us) && c->back_to_back && c->adaptive;

	lockdep_assert_held(&c->lock);
	if (c->ring_slots || c->producer)
		return;
	if (poll || READ_ONCE(c->ctrl->kernel_state) != K2U_KERNEL_ASLEEP)
		queue_work(c->poll_wq, &c->poll_work);
}

void k2u_ring_init(struct k2u_chan *c)
{
	INIT_WORK(&c->poll_work, k2u_poll_work);
}

/* CREATE's checks of ring_slots (after the other fields'). */
int k2u_ring_check_create(const struct k2u_create *cr)
{
	u32 n = cr->ring_slots;

	if (!(cr->flags & K2U_CREATE_RING)) {
		if (!n)
			return 0;
		pr_notice("CREATE refused: ring_slots %u: must be 0 without K2U_CREATE_RING\n",
			  n);
		return -EINVAL;
	}
	if (n < K2U_RING_MIN_SLOTS || n > K2U_RING_MAX_SLOTS ||
	    !is_power_of_2(n)) {
		pr_notice("CREATE refused: ring_slots %u: must be a power of two from %u to %u\n",
			  n, K2U_RING_MIN_SLOTS, K2U_RING_MAX_SLOTS);
		return -EINVAL;
	}
	if ((u64)n * cr->buffer_size > K2U_MAX_BUFFER_SIZE) {
		pr_notice("CREATE refused: ring_slots %u: %u x buffer_size %llu is above the maximum %lu\n",
			  n, n, cr->buffer_size, K2U_MAX_BUFFER_SIZE);
		return -EINVAL;
	}
	return 0;
}

/*
 * A new channel becomes a ring of @slots slots of @slot_size bytes (its
 * buffer was allocated for all of them). Before the channel is live.
 */
int k2u_ring_setup(struct k2u_chan *c, u32 slots, size_t slot_size)
{
	c->ring_stamps = kvcalloc(slots, sizeof(*c->ring_stamps),
				  GFP_KERNEL_ACCOUNT);
	if (!c->ring_stamps)
		return -ENOMEM;
	c->ring_slots = slots;
	c->buffer_size = slot_size;
	c->adaptive = true;	/* a ring's doorbell is always adaptive */
	WRITE_ONCE(c->ctrl->ring_slots, slots);
	return 0;
}

/* Fill @dst with channel @c's round @round (word copies: round.c). */
static void k2u_ring_fill(struct k2u_chan *c, u8 *dst, u64 round)
{
	k2u_fill_periodic(dst, c->buffer_size,
			  K2U_CHANNEL_PATTERN_BYTE(c->id, round, 0),
			  K2U_CHANNEL_PATTERN_MODULUS);
}

/*
 * Under c->lock: take the ring's acks, count the rounds of the current
 * test they acked (in order), and report a bad ack_seq.
 */
static void k2u_ring_count(struct k2u_chan *c)
{
	u64 took[K2U_RING_MAX_SLOTS];
	unsigned int n = 0, i;
	unsigned long irqflags;
	u64 r;

	lockdep_assert_held(&c->lock);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	k2u_page_ack_locked(c);
	for (r = c->ring_counted + 1; r <= c->ack_taken; r++) {
		if (r > c->ring_abandon && n < ARRAY_SIZE(took))
			took[n++] = c->ring_stamps[(r - 1) & (c->ring_slots - 1)].took_ns;
	}
	c->ring_counted = c->ack_taken;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	for (i = 0; i < n; i++)
		k2u_stats_add(&c->stats, took[i]);
	if (n)
		c->calculation_done = true;
	k2u_page_ack_report(c);
}

/*
 * Under c->lock: publish the next round if the ring has room: fill its
 * slot, write its entry, then ready_seq (release), and ring the doorbell
 * unless the listener spins. 0, -ENOSPC (full: ring_full counted once per
 * wait) or -EAGAIN (no room for MEMORY_READY in the event queue).
 */
static int k2u_ring_publish(struct k2u_chan *c)
{
	struct k2u_ctrl *ctrl = c->ctrl;
	unsigned long irqflags;
	unsigned int idx;
	u64 r, taken;

	lockdep_assert_held(&c->lock);
	k2u_ring_count(c);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	taken = c->ring_counted;	/* a slot is free once its time is counted */
	r = c->rounds_published + 1;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if (r - taken > c->ring_slots) {
		if (!c->ring_waiting) {
			c->ring_waiting = true;
			WRITE_ONCE(ctrl->ring_full, READ_ONCE(ctrl->ring_full) + 1);
		}
		return -ENOSPC;
	}
	if (!k2u_post_has_room(c, K2U_CMD_MEMORY_READY)) {
		pr_notice_ratelimited("%sevent queue full: round skipped\n",
				      c->tag);
		return -EAGAIN;
	}
	idx = (r - 1) & (c->ring_slots - 1);
	k2u_ring_fill(c, c->buffer + (size_t)idx * c->buffer_size, r);
	WRITE_ONCE(ctrl->slots[idx].round, r);
	WRITE_ONCE(ctrl->slots[idx].len, c->buffer_size);
	WRITE_ONCE(ctrl->ready_len, c->buffer_size);
	c->ring_waiting = false;
	c->buffer_filled = true;
	c->calculation_done = false;
	spin_lock_irqsave(&c->ack_lock, irqflags);
	c->rounds_published = r;
	c->round.id = r;	/* the MEMORY_READY record's round */
	c->ring_stamps[idx].start_ns = ktime_get_ns();
	/* Release: the slot and its entry are visible before the sequence. */
	smp_store_release(&ctrl->ready_seq, r);
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	/* Pairs with the listener's barrier between ASLEEP and its re-read. */
	smp_mb();
	if (READ_ONCE(ctrl->listener_state) == K2U_LISTENER_SPINNING)
		WRITE_ONCE(ctrl->doorbells_skipped,
			   READ_ONCE(ctrl->doorbells_skipped) + 1);
	else
		k2u_post(c, K2U_CMD_MEMORY_READY);
	return 0;
}

/*
 * A ring's round work. Timer pacing: one publish per tick (a full ring
 * publishes nothing; the next tick tries again). Back to back: publish
 * while there is room, at most ring_slots rounds per invocation (then
 * requeue); on a full ring poll ack_seq for up to ack_poll_us, then sleep
 * per NEED_WAKEUP with wake_seq at half the ring free; efd2's wake-up
 * requeues it (k2u_ring_collect()).
 */
void k2u_ring_work(struct k2u_chan *c)
{
	unsigned int n;
	unsigned long irqflags;
	u64 taken, published;
	bool b2b = false;
	int ret = 0;

	for (n = 0; n < c->ring_slots; n++) {
		mutex_lock(&c->lock);
		if (!c->testing || !k2u_check_listener(c)) {
			mutex_unlock(&c->lock);
			ret = -ESHUTDOWN;
			break;
		}
		b2b = c->back_to_back;
		if (b2b)	/* it looks at ack_seq before every fill */
			WRITE_ONCE(c->ctrl->kernel_state, K2U_KERNEL_POLLING);
		ret = k2u_ring_publish(c);
		/* Back to back has no timer to try again: arm it. */
		if (ret == -EAGAIN && b2b && !hrtimer_active(&c->timer))
			hrtimer_start(&c->timer, ns_to_ktime(k2u_period_ns(c)),
				      HRTIMER_MODE_REL);
		mutex_unlock(&c->lock);
		if (ret || !b2b)
			break;
	}
	if (!b2b && ret != -ESHUTDOWN)
		return;
	if (!ret) {
		/* A whole ring published: let others have the worker. */
		queue_work(c->wq, &c->round_work);
		return;
	}
	if (ret == -EAGAIN)
		return;
	spin_lock_irqsave(&c->ack_lock, irqflags);
	taken = c->ack_taken;
	published = c->rounds_published;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if (ret == -ESHUTDOWN) {
		/* No test: nothing looks at ack_seq until START. */
		k2u_sleep_ack(c, taken, published, taken + 1);
		return;
	}
	/*
	 * Polled from the unbound queue: here it would spin on the CPU that
	 * queued this work, often the listener's, which must run to ack.
	 */
	if (READ_ONCE(ack_poll_us)) {
		queue_work(c->poll_wq, &c->poll_work);
		return;
	}
	if (k2u_sleep_ack(c, taken, published, k2u_ring_wake(c, taken)))
		queue_work(c->wq, &c->round_work);
}

/*
 * Under c->lock (ack_work, STOP, an ioctl): count what the acks taken
 * acked and, back to back, wake the round work when the ring has room.
 */
void k2u_ring_collect(struct k2u_chan *c)
{
	unsigned long irqflags;
	bool room;

	lockdep_assert_held(&c->lock);
	k2u_ring_count(c);
	if (!c->back_to_back || !c->testing || !k2u_listener_alive(c))
		return;
	spin_lock_irqsave(&c->ack_lock, irqflags);
	room = c->rounds_published - c->ack_taken < c->ring_slots;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if (room)
		queue_work(c->wq, &c->round_work);
}

/*
 * Under c->lock, STOP (after the acks taken so far were counted): the
 * rounds published until now are abandoned: their slots stay lent until
 * acked, and no ack of them counts.
 */
void k2u_ring_stopped(struct k2u_chan *c)
{
	unsigned long irqflags;

	u64 taken;

	lockdep_assert_held(&c->lock);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	c->ring_abandon = c->rounds_published;
	taken = c->ack_taken;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	/*
	 * Nothing polls or fills until START: the next ack must ring efd2
	 * (a work stopped at a full event queue left the page POLLING).
	 */
	WRITE_ONCE(c->ctrl->wake_seq, taken + 1);
	smp_wmb();	/* a listener that sees ASLEEP sees this wake_seq */
	WRITE_ONCE(c->ctrl->kernel_state, K2U_KERNEL_ASLEEP);
}

/* An ioctl a ring does not have: EOPNOTSUPP with one line. */
int k2u_ring_refuse(struct k2u_chan *c, const char *op)
{
	if (!strcmp(op, "READ_BUFFER"))
		pr_notice_ratelimited("%sring channel: READ_BUFFER refused: read the slots through the mapping\n",
				      c->tag);
	else
		pr_notice_ratelimited("%sring channel: acks go through ack_seq\n",
				      c->tag);
	return -EOPNOTSUPP;
}
