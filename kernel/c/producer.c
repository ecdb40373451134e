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
#include <linux/cred.h>
#include <linux/pid.h>
#include <linux/ratelimit.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
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
	/* Its id and place count until they are really returned. */
	mutex_lock(&d->chan_lock);
	d->nr_producers--;
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

/* Who may attach: the producer's rule, checked at k2u_producer_create_opts(). */
static int k2u_check_opts(const struct k2u_producer_opts *opts)
{
	if (opts->attach & ~K2U_ATTACH_FLAGS) {
		pr_notice("producer refused: attach 0x%x: unknown bit 0x%x\n",
			  opts->attach, opts->attach & ~K2U_ATTACH_FLAGS);
		return -EINVAL;
	}
	if ((opts->attach & K2U_ATTACH_UID) && !uid_valid(opts->uid)) {
		pr_notice("producer refused: K2U_ATTACH_UID with an invalid uid\n");
		return -EINVAL;
	}
	if ((opts->attach & K2U_ATTACH_GID) && !gid_valid(opts->gid)) {
		pr_notice("producer refused: K2U_ATTACH_GID with an invalid gid\n");
		return -EINVAL;
	}
	return 0;
}

struct k2u_channel *k2u_producer_create(const char *name, size_t size)
{
	return k2u_producer_create_opts(name, size, NULL);
}
EXPORT_SYMBOL_GPL(k2u_producer_create);

struct k2u_channel *k2u_producer_create_opts(const char *name, size_t size,
					     const struct k2u_producer_opts *opts)
{
	static const struct k2u_producer_opts defaults = {};
	struct k2u_device *d = &k2u_dev;
	char padded[K2U_CHANNEL_NAME_LEN] = {};
	struct k2u_channel *ch;
	struct k2u_chan *c;
	int id, ret;

	if (!opts)
		opts = &defaults;

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
	ret = k2u_check_opts(opts);
	if (ret)
		return ERR_PTR(ret);
	ch = kzalloc(sizeof(*ch), GFP_KERNEL);
	if (!ch)
		return ERR_PTR(-ENOMEM);

	mutex_lock(&d->chan_lock);
	if (k2u_producer_find(d, padded)) {
		pr_notice("producer refused: name %s: taken\n", padded);
		ret = -EEXIST;
		goto err;
	}
	/* Userspace's channels do not count: they cannot take this place. */
	if (d->nr_producers >= K2U_MAX_PRODUCERS) {
		pr_notice("producer refused: %u producer channels exist (the most)\n",
			  d->nr_producers);
		ret = -ENOSPC;
		goto err;
	}
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
	c->attach = opts->attach;
	c->attach_uid = opts->uid;
	c->attach_gid = opts->gid;
	WRITE_ONCE(c->live, true);
	d->nr_producers++;
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
EXPORT_SYMBOL_GPL(k2u_producer_create_opts);

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

/* Refused attaches: one line each, at most 10 per 5 s. */
static DEFINE_RATELIMIT_STATE(k2u_attach_log, 5 * HZ, 10);

/*
 * Whether the caller may attach to @c: the producer's rule
 * (struct k2u_producer_opts), CAP_SYS_ADMIN always. 0 or -EPERM.
 */
static int k2u_producer_may_attach(struct k2u_chan *c)
{
	if (c->attach & K2U_ATTACH_ANYONE)
		return 0;
	if ((c->attach & K2U_ATTACH_UID) && uid_eq(current_euid(), c->attach_uid))
		return 0;
	if ((c->attach & K2U_ATTACH_GID) && in_egroup_p(c->attach_gid))
		return 0;
	if (capable(CAP_SYS_ADMIN))
		return 0;
	if (__ratelimit(&k2u_attach_log))
		pr_notice("CREATE refused: channel %u (%s) does not let pid %d (euid %u) attach\n",
			  c->id, c->name, task_tgid_vnr(current),
			  from_kuid_munged(current_user_ns(), current_euid()));
	return -EPERM;
}

/*
 * Under c->lock: whether the process whose listener file is attached
 * still runs. It counts as exited when all its threads have, as the
 * default channel's listener does (k2u_listener_alive()); a child it
 * forked may hold the file on, but got the file, not the role.
 */
static bool k2u_producer_owner_alive(struct k2u_chan *c)
{
	struct task_struct *task;
	bool alive;

	lockdep_assert_held(&c->lock);
	rcu_read_lock();
	task = pid_task(c->owner, PIDTYPE_TGID);
	alive = task && atomic_read(&task->signal->live) > 0;
	rcu_read_unlock();
	return alive;
}

/*
 * Under c->lock: the listener's process has exited, its file lives on in
 * a child. Detach it and leave the file behind: it is no longer the
 * channel's (its release does nothing but drop its reference), and its
 * holder is not the owner.
 */
static void k2u_producer_orphan(struct k2u_chan *c)
{
	pid_t pid = c->pid;

	lockdep_assert_held(&c->lock);
	k2u_detach(c);
	put_pid(k2u_swap_pid(c, &c->owner, NULL));
	c->listener_filp = NULL;
	pr_info("channel %u: listener pid %d exited: its file is left behind\n",
		c->id, pid);
}

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
	ret = k2u_producer_may_attach(c);
	if (ret)
		return ret;
	mutex_lock(&c->lock);
	/* One listener's file at a time, while its process runs. */
	if (c->listener_filp && k2u_producer_owner_alive(c)) {
		pr_notice("CREATE refused: channel %u has a listener\n", c->id);
		ret = -EBUSY;
		goto out;
	}
	if (c->listener_filp)
		k2u_producer_orphan(c);
	ret = k2u_attach(c, current, efd, efd2, why, sizeof(why));
	if (ret) {
		pr_notice("CREATE refused: %s\n", why);
		goto out;
	}
	cr->id = c->id;
	cr->buffer_size = c->buffer_size;
	/* Detached or orphaned above: no owner to put. */
	k2u_swap_pid(c, &c->owner, get_task_pid(current, PIDTYPE_TGID));
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

/*
 * A file attached to producer channel @c is released: if it is still the
 * listener's (not left behind by an exited one), the listener leaves.
 */
void k2u_producer_listener_release(struct k2u_chan *c, struct file *filp)
{
	struct pid *owner = NULL;
	bool mine;

	mutex_lock(&c->lock);
	mine = c->listener_filp == filp;
	if (mine) {
		k2u_detach(c);
		c->listener_filp = NULL;
		owner = k2u_swap_pid(c, &c->owner, NULL);
	}
	mutex_unlock(&c->lock);
	put_pid(owner);
	if (mine)
		pr_info("channel %u: listener left\n", c->id);
	else
		pr_info("channel %u: a file its exited listener left behind is closed\n",
			c->id);
	kref_put(&c->ref, k2u_producer_free);
}
