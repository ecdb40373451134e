// SPDX-License-Identifier: GPL-2.0-only
/*
 * The producer API (include/kern2usr_producer.h): another module creates a
 * named channel and publishes its own data through it; a listener attaches
 * from userspace with K2U_IOC_CREATE and K2U_CREATE_ATTACH.
 *
 * References: the producer holds one (from create to destroy), the
 * listener's file another (from attach to its release); the last one frees
 * the channel. A producer's channel also holds the module.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/err.h>
#include <linux/file.h>
#include <linux/module.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "kern2usr.h"
#include "include/kern2usr_producer.h"

/* The producer's handle. */
struct k2u_channel {
	struct k2u_chan *chan;
};

/*
 * The last reference is gone: no hook is left (the listener's release
 * detached it), so once its timer and work items are idle it can go.
 */
static void k2u_producer_free(struct kref *ref)
{
	struct k2u_chan *c = container_of(ref, struct k2u_chan, ref);
	struct k2u_device *d = &k2u_dev;

	k2u_round_cancel_sync(c);
	/* Its id and memory count until they are really returned. */
	mutex_lock(&d->chan_lock);
	d->nr_channels--;
	d->memory -= c->buffer_size;
	ida_free(&d->ids, c->id);
	mutex_unlock(&d->chan_lock);
	k2u_chan_free(ref);
}

/* Under chan_lock: the producer channel named @name, if any. */
static struct k2u_chan *k2u_producer_find(struct k2u_device *d,
					  const char *name)
{
	struct k2u_chan *c;

	lockdep_assert_held(&d->chan_lock);
	list_for_each_entry(c, &d->channels, node)
		if (c->producer &&
		    !strncmp(c->name, name, K2U_CHANNEL_NAME_LEN))
			return c;
	return NULL;
}

struct k2u_channel *k2u_producer_create(const char *name, size_t size)
{
	struct k2u_device *d = &k2u_dev;
	char padded[K2U_CHANNEL_NAME_LEN] = {};
	struct k2u_channel *ch;
	struct k2u_chan *c;
	int id, ret;

	if (!name || !name[0] || strscpy(padded, name, sizeof(padded)) < 0) {
		pr_notice("producer refused: name: 1 to %d bytes\n",
			  K2U_CHANNEL_NAME_LEN - 1);
		return ERR_PTR(-EINVAL);
	}
	ret = k2u_check_name(padded);
	if (ret)
		return ERR_PTR(ret);
	if (!size || size > K2U_MAX_BUFFER_SIZE || !PAGE_ALIGNED(size)) {
		pr_notice("producer refused: size %zu: must be a multiple of %lu from %lu to %lu\n",
			  size, PAGE_SIZE, PAGE_SIZE, K2U_MAX_BUFFER_SIZE);
		return ERR_PTR(-EINVAL);
	}
	ch = kzalloc(sizeof(*ch), GFP_KERNEL);
	if (!ch)
		return ERR_PTR(-ENOMEM);

	mutex_lock(&d->chan_lock);
	if (k2u_producer_find(d, padded)) {
		pr_notice("producer refused: name %s: taken\n", padded);
		ret = -EEXIST;
		goto err;
	}
	ret = k2u_chan_limits(d, size);
	if (ret)
		goto err;
	c = k2u_chan_alloc(size);
	id = c ? ida_alloc_min(&d->ids, 1, GFP_KERNEL) : -ENOMEM;
	if (id < 0) {
		pr_notice("producer refused: out of memory for %zu bytes\n",
			  size);
		if (c)
			k2u_chan_free(&c->ref);
		ret = -ENOMEM;
		goto err;
	}
	c->id = id;
	memcpy(c->name, padded, sizeof(c->name));
	snprintf(c->tag, sizeof(c->tag), "channel %u: ", c->id);
	c->producer = true;
	WRITE_ONCE(c->live, true);
	d->nr_channels++;
	d->memory += size;
	k2u_chan_insert(d, c);
	mutex_unlock(&d->chan_lock);

	/* Pinned while the channel exists: rmmod kern2usr fails meanwhile. */
	__module_get(THIS_MODULE);
	ch->chan = c;
	pr_info("channel %u created: name=%s size=%zu owner=0\n", c->id,
		c->name, size);
	return ch;

err:
	mutex_unlock(&d->chan_lock);
	kfree(ch);
	return ERR_PTR(ret);
}
EXPORT_SYMBOL_GPL(k2u_producer_create);

void k2u_producer_destroy(struct k2u_channel *ch)
{
	struct k2u_device *d = &k2u_dev;
	struct k2u_chan *c = ch->chan;
	unsigned long irqflags;
	bool attached;

	mutex_lock(&d->chan_lock);
	list_del_init(&c->node);
	mutex_unlock(&d->chan_lock);

	mutex_lock(&c->lock);
	WRITE_ONCE(c->live, false);
	wake_up_interruptible(&c->readq);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	k2u_round_reset_locked(c);
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	wake_up_all(&c->ack_wait);
	/*
	 * The listener stays attached until its file is released, so that it
	 * can read EXIT_TEST (the queue keeps a slot for it).
	 */
	attached = c->attached && k2u_check_listener(c);
	if (attached && k2u_post_has_room(c, K2U_CMD_EXIT_TEST))
		k2u_post(c, K2U_CMD_EXIT_TEST);
	mutex_unlock(&c->lock);
	pr_info("channel %u destroyed by its producer%s\n", c->id,
		attached ? ": listener told to exit" : "");
	kref_put(&c->ref, k2u_producer_free);
	kfree(ch);
	module_put(THIS_MODULE);
}
EXPORT_SYMBOL_GPL(k2u_producer_destroy);

void *k2u_producer_reserve(struct k2u_channel *ch, size_t *size)
{
	struct k2u_chan *c = ch->chan;
	unsigned long irqflags;
	bool busy;

	/*
	 * Not while the listener may hold a view: a round outstanding (lent),
	 * or closed and not yet counted. A producer's channel has no STOP, so
	 * no round of it is ever abandoned and left lent; a detach ends both.
	 */
	spin_lock_irqsave(&c->ack_lock, irqflags);
	busy = c->round.open || c->round.lent || c->round.closed;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if (busy)
		return ERR_PTR(-EBUSY);
	*size = c->buffer_size;
	return c->buffer;
}
EXPORT_SYMBOL_GPL(k2u_producer_reserve);

s64 k2u_producer_publish(struct k2u_channel *ch, size_t len)
{
	struct k2u_chan *c = ch->chan;
	s64 ret;

	if (!len || len > c->buffer_size)
		return -EINVAL;
	mutex_lock(&c->lock);
	if (!c->attached || !k2u_check_listener(c))
		ret = -ENOTCONN;
	else
		ret = k2u_round_publish(c, len);
	mutex_unlock(&c->lock);
	return ret;
}
EXPORT_SYMBOL_GPL(k2u_producer_publish);

/* Whether round @round is settled; then *@res is what the wait returns. */
static bool k2u_producer_settled(struct k2u_chan *c, u64 round, int *res)
{
	unsigned long irqflags;
	bool settled = true;

	spin_lock_irqsave(&c->ack_lock, irqflags);
	if (round != c->rounds_published || !round)
		*res = -ESTALE;
	else if (c->acked_id == round ||
		 (c->round.id == round && c->round.closed))
		*res = 0;
	else if (c->round.id == round && c->round.open)
		settled = false;
	else
		*res = -ENOTCONN;	/* abandoned: the listener left */
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	return settled;
}

int k2u_producer_wait_ack(struct k2u_channel *ch, u64 round,
			  unsigned long timeout)
{
	struct k2u_chan *c = ch->chan;
	int res = 0;
	long left;

	/* The listener's release may drop the last other reference meanwhile. */
	kref_get(&c->ref);
	left = wait_event_interruptible_timeout(c->ack_wait,
						k2u_producer_settled(c, round,
								     &res),
						min_t(unsigned long, timeout,
						      MAX_SCHEDULE_TIMEOUT));
	kref_put(&c->ref, k2u_producer_free);
	if (left < 0)
		return left;
	return left ? res : -ETIMEDOUT;
}
EXPORT_SYMBOL_GPL(k2u_producer_wait_ack);

/*
 * K2U_IOC_CREATE with K2U_CREATE_ATTACH, under chan_lock: make @filp the
 * listener's handle of the producer channel named in @cr.
 */
int k2u_producer_attach(struct k2u_device *d, struct file *filp,
			struct k2u_create *cr,
			struct file *efd, struct file *efd2)
{
	char why[K2U_LAST_ERROR_LEN];
	struct k2u_chan *c;
	int ret;

	lockdep_assert_held(&d->chan_lock);
	c = k2u_producer_find(d, cr->name);
	if (!c) {
		pr_notice("CREATE refused: name %s: no producer channel has this name\n",
			  cr->name);
		return -ENOENT;
	}
	mutex_lock(&c->lock);
	/* One listener's file at a time: its release detaches it. */
	if (c->listener_filp) {
		pr_notice("CREATE refused: channel %u has a listener\n", c->id);
		ret = -EBUSY;
		goto out;
	}
	ret = k2u_attach(c, current, efd, efd2, why, sizeof(why));
	if (ret) {
		pr_notice("CREATE refused: %s\n", why);
		goto out;
	}
	cr->id = c->id;
	cr->buffer_size = c->buffer_size;
	WRITE_ONCE(c->owner, get_task_pid(current, PIDTYPE_TGID));
	c->listener_filp = filp;
	kref_get(&c->ref);
	/* Pairs with k2u_file_chan(): the channel is attached first. */
	smp_store_release(&filp->private_data, c);
	pr_info("channel %u attached: name=%s listener=%d\n", c->id, c->name,
		task_tgid_vnr(current));
out:
	mutex_unlock(&c->lock);
	return ret;
}

/* The listener's file of producer channel @c is released. */
void k2u_producer_listener_release(struct k2u_chan *c)
{
	struct pid *owner;

	mutex_lock(&c->lock);
	k2u_detach(c);
	c->listener_filp = NULL;
	owner = c->owner;
	WRITE_ONCE(c->owner, NULL);
	mutex_unlock(&c->lock);
	put_pid(owner);
	pr_info("channel %u: listener left\n", c->id);
	kref_put(&c->ref, k2u_producer_free);
}
