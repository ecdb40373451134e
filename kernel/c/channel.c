// SPDX-License-Identifier: GPL-2.0-only
/*
 * Channels: K2U_IOC_CREATE makes an open file a channel of its own (its
 * listener, buffer, queue, rounds, statistics and control page), within
 * the limits max_channels and max_channel_memory. The file holds the
 * channel's reference; its release ends the channel.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ctype.h>
#include <linux/file.h>
#include <linux/mm.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "kern2usr.h"

/* What every channel, the default one included, starts with. */
void k2u_chan_init(struct k2u_chan *c)
{
	k2u_stats_reset(&c->stats);
	k2u_link_init(c);
	k2u_round_init(c);
	k2u_ring_init(c);
	INIT_LIST_HEAD(&c->node);
	init_waitqueue_head(&c->ack_wait);
	kref_init(&c->ref);
}

/* Free a created channel: no timer, work item or hook of it is left. */
void k2u_chan_free(struct kref *ref)
{
	struct k2u_chan *c = container_of(ref, struct k2u_chan, ref);
	unsigned int i;

	if (c->buffer)
		vunmap(c->buffer);
	for (i = 0; c->pages && i < c->npages; i++)
		if (c->pages[i])
			__free_page(c->pages[i]);
	kvfree(c->pages);
	if (c->ctrl_page)
		__free_page(c->ctrl_page);
	kvfree(c->ring);
	kvfree(c->ring_stamps);
	put_pid(c->owner);
	mutex_destroy(&c->read_lock);
	mutex_destroy(&c->lock);
	kvfree(c);
}

/*
 * A channel with its memory, charged to the caller's memory cgroup: the
 * buffer page by page (zeroed, mapped into the kernel with vmap() for the
 * fill and into userspace page by page), the control page and the queue.
 */
struct k2u_chan *k2u_chan_alloc(size_t size)
{
	const gfp_t gfp = GFP_KERNEL_ACCOUNT | __GFP_ZERO;
	struct k2u_chan *c;
	unsigned int i;

	c = kvzalloc(sizeof(*c), GFP_KERNEL_ACCOUNT);
	if (!c)
		return NULL;
	/* The default channel's are initialised statically (main.c). */
	mutex_init(&c->lock);
	mutex_init(&c->read_lock);
	spin_lock_init(&c->show_lock);
	k2u_stats_init(&c->stats);
	k2u_chan_init(c);
	c->wq = k2u_dev.wq;
	c->poll_wq = k2u_dev.poll_wq;
	c->buffer_size = size;
	c->npages = size >> PAGE_SHIFT;
	c->pages = kvcalloc(c->npages, sizeof(*c->pages), GFP_KERNEL_ACCOUNT);
	if (!c->pages)
		goto err;
	for (i = 0; i < c->npages; i++) {
		c->pages[i] = alloc_page(gfp);
		if (!c->pages[i])
			goto err;
	}
	c->buffer = vmap(c->pages, c->npages, VM_MAP, PAGE_KERNEL);
	if (!c->buffer)
		goto err;
	c->ctrl_page = alloc_page(gfp);
	if (!c->ctrl_page)
		goto err;
	c->ctrl = page_address(c->ctrl_page);
	c->ring = kvcalloc(K2U_EVENT_QUEUE_LEN, sizeof(*c->ring),
			   GFP_KERNEL_ACCOUNT);
	if (!c->ring)
		goto err;
	return c;

err:
	k2u_chan_free(&c->ref);
	return NULL;
}

/* The name: up to 15 bytes of [A-Za-z0-9_.-], then NULs only. */
int k2u_check_name(const char *name)
{
	size_t len = strnlen(name, K2U_CHANNEL_NAME_LEN);
	size_t i;

	if (len == K2U_CHANNEL_NAME_LEN) {
		/* Escaped: the bytes are the caller's, not checked yet. */
		pr_notice("CREATE refused: name %*pE: longer than %d bytes\n",
			  K2U_CHANNEL_NAME_LEN, name, K2U_CHANNEL_NAME_LEN - 1);
		return -EINVAL;
	}
	for (i = 0; i < len; i++) {
		unsigned char ch = name[i];

		if (!(isascii(ch) && isalnum(ch)) && ch != '_' && ch != '.' && ch != '-') {
			pr_notice("CREATE refused: name byte %zu 0x%02x: not in [A-Za-z0-9_.-]\n",
				  i, ch);
			return -EINVAL;
		}
	}
	for (; i < K2U_CHANNEL_NAME_LEN; i++) {
		if (name[i]) {
			pr_notice("CREATE refused: name byte %zu 0x%02x: not NUL after the name's end\n",
				  i, (unsigned char)name[i]);
			return -EINVAL;
		}
	}
	return 0;
}

/* The fields of struct k2u_create, in the order PROTOCOL.md gives. */
static int k2u_check_create(const struct k2u_create *cr)
{
	bool attach = cr->flags & K2U_CREATE_ATTACH;
	int ret;

	if (attach && cr->buffer_size) {
		pr_notice("CREATE refused: buffer_size %llu: must be 0 with K2U_CREATE_ATTACH\n",
			  cr->buffer_size);
		return -EINVAL;
	}
	if (!attach && (!cr->buffer_size ||
			cr->buffer_size > K2U_MAX_BUFFER_SIZE ||
			!PAGE_ALIGNED(cr->buffer_size))) {
		pr_notice("CREATE refused: buffer_size %llu: must be a multiple of %lu from %lu to %lu\n",
			  cr->buffer_size, PAGE_SIZE, PAGE_SIZE,
			  K2U_MAX_BUFFER_SIZE);
		return -EINVAL;
	}
	if (attach && cr->period_ms) {
		pr_notice("CREATE refused: period_ms %u: must be 0 with K2U_CREATE_ATTACH\n",
			  cr->period_ms);
		return -EINVAL;
	}
	if (cr->period_ms > K2U_MAX_PERIOD_MS) {
		pr_notice("CREATE refused: period_ms %u: above the maximum %u\n",
			  cr->period_ms, K2U_MAX_PERIOD_MS);
		return -EINVAL;
	}
	if (attach && (cr->flags & ~K2U_CREATE_ATTACH & K2U_CREATE_FLAGS)) {
		pr_notice("CREATE refused: flags 0x%x: a producer's channel has no pacing flags\n",
			  cr->flags);
		return -EINVAL;
	}
	if (cr->flags & ~K2U_CREATE_FLAGS) {
		pr_notice("CREATE refused: flags 0x%x: unknown flag 0x%x\n",
			  cr->flags, cr->flags & ~K2U_CREATE_FLAGS);
		return -EINVAL;
	}
	ret = k2u_check_name(cr->name);
	if (ret)
		return ret;
	if (attach && !cr->name[0]) {
		pr_notice("CREATE refused: name -: K2U_CREATE_ATTACH needs a name\n");
		return -EINVAL;
	}
	if (cr->id) {
		pr_notice("CREATE refused: id %u: must be 0\n", cr->id);
		return -EINVAL;
	}
	return k2u_ring_check_create(cr);
}

/* Keep the list ordered by id, so the listing is. */
void k2u_chan_insert(struct k2u_device *d, struct k2u_chan *c)
{
	struct k2u_chan *pos;

	lockdep_assert_held(&d->chan_lock);
	list_for_each_entry(pos, &d->channels, node) {
		if (pos->id > c->id) {
			list_add_tail(&c->node, &pos->node);
			return;
		}
	}
	list_add_tail(&c->node, &d->channels);
}

/* Under chan_lock: 0 if one more channel of @size bytes fits the limits. */
int k2u_chan_limits(struct k2u_device *d, u64 size)
{
	lockdep_assert_held(&d->chan_lock);
	if (d->nr_channels >= READ_ONCE(d->max_channels)) {
		pr_notice("CREATE refused: %u channels exist (max_channels=%u)\n",
			  d->nr_channels, READ_ONCE(d->max_channels));
		return -ENOSPC;
	}
	if (d->memory + size > READ_ONCE(d->max_memory)) {
		pr_notice("CREATE refused: %llu more bytes would pass max_channel_memory=%llu (%llu in use)\n",
			  size, READ_ONCE(d->max_memory), d->memory);
		return -ENOSPC;
	}
	return 0;
}

/*
 * Under chan_lock: make @c the channel of @filp. Limits, ids, the
 * listener, the answer to userspace; 0 or an errno, every step undone.
 */
static int k2u_chan_publish(struct k2u_device *d, struct file *filp,
			    struct k2u_create *cr,
			    struct file *efd, struct file *efd2)
{
	u64 total = cr->buffer_size * (cr->ring_slots ?: 1);
	char why[K2U_LAST_ERROR_LEN];
	struct k2u_chan *c;
	int id, ret;

	/* A ring: all its slots count, allocated and mapped as one buffer. */
	ret = k2u_chan_limits(d, total);
	if (ret)
		return ret;
	c = k2u_chan_alloc(total);
	if (c && cr->ring_slots &&
	    k2u_ring_setup(c, cr->ring_slots, cr->buffer_size)) {
		k2u_chan_free(&c->ref);
		c = NULL;
	}
	id = c ? ida_alloc_min(&d->ids, 1, GFP_KERNEL) : -ENOMEM;
	if (id < 0) {
		pr_notice("CREATE refused: out of memory for %llu bytes\n",
			  total);
		ret = -ENOMEM;
		goto err_free;
	}
	c->id = id;
	memcpy(c->name, cr->name, sizeof(c->name));
	snprintf(c->tag, sizeof(c->tag), "channel %u: ", c->id);
	c->period_ns = (u64)(cr->period_ms ?: K2U_DEFAULT_PERIOD_MS) *
		       NSEC_PER_MSEC;
	c->back_to_back = cr->flags & K2U_CREATE_BACK_TO_BACK;
	c->adaptive = (cr->flags & K2U_CREATE_ADAPTIVE) || c->ring_slots;
	c->owner = get_task_pid(current, PIDTYPE_TGID);

	cr->id = c->id;
	mutex_lock(&c->lock);
	ret = k2u_attach(c, current, efd, efd2, why, sizeof(why));
	if (!ret)
		WRITE_ONCE(c->live, true);
	mutex_unlock(&c->lock);
	if (ret) {
		pr_notice("CREATE refused: %s\n", why);
		goto err_id;
	}
	d->nr_channels++;
	d->memory += k2u_chan_map_size(c);
	k2u_chan_insert(d, c);
	/* Pairs with k2u_file_chan(): the channel is complete first. */
	smp_store_release(&filp->private_data, c);
	if (c->ring_slots)
		pr_info("channel %u created: name=%s size=%zu ring_slots=%u owner=%d\n",
			c->id, c->name[0] ? c->name : "-", c->buffer_size,
			c->ring_slots, task_tgid_vnr(current));
	else
		pr_info("channel %u created: name=%s size=%zu owner=%d\n",
			c->id, c->name[0] ? c->name : "-", c->buffer_size,
			task_tgid_vnr(current));
	return 0;

err_id:
	ida_free(&d->ids, c->id);
err_free:
	if (c)
		k2u_chan_free(&c->ref);
	return ret;
}

/* K2U_IOC_CREATE on a file that is not a channel yet. */
long k2u_chan_create_ioctl(struct file *filp, void __user *uarg)
{
	struct k2u_create __user *arg = uarg;
	struct k2u_device *d = &k2u_dev;
	char why[K2U_LAST_ERROR_LEN];
	pid_t nr = task_tgid_vnr(current);
	struct file *efd, *efd2;
	struct k2u_create cr;
	struct k2u_chan *cur;
	long ret;

	if (copy_from_user(&cr, arg, sizeof(cr)))
		return -EFAULT;
	mutex_lock(&d->chan_lock);
	cur = k2u_file_chan(filp);
	if (cur) {
		pr_notice("CREATE refused: this file is channel %u already\n",
			  cur->id);
		mutex_unlock(&d->chan_lock);
		return -EBUSY;
	}
	mutex_unlock(&d->chan_lock);
	ret = k2u_check_create(&cr);
	if (ret)
		return ret;
	efd = fget(cr.efd);
	efd2 = fget(cr.efd2);
	if (!efd || !efd2) {
		pr_notice("CREATE refused: %s=%d is not an open fd of pid %d\n",
			  efd ? "efd2" : "efd", efd ? cr.efd2 : cr.efd, nr);
		ret = -EBADF;
		goto out;
	}
	ret = k2u_check_eventfds(efd, efd2, nr, why, sizeof(why));
	if (ret) {
		pr_notice("CREATE refused: %s\n", why);
		goto out;
	}
	mutex_lock(&d->chan_lock);
	if (k2u_file_chan(filp)) {
		/* Another thread made this file a channel meanwhile. */
		pr_notice("CREATE refused: this file is channel %u already\n",
			  k2u_file_chan(filp)->id);
		ret = -EBUSY;
	} else if (cr.flags & K2U_CREATE_ATTACH) {
		ret = k2u_producer_attach(d, filp, &cr, efd, efd2);
	} else {
		ret = k2u_chan_publish(d, filp, &cr, efd, efd2);
	}
	mutex_unlock(&d->chan_lock);
	/*
	 * The answer is written back with no lock held (a stalled page must
	 * not block other channels); the file is a channel even if it fails.
	 */
	if (!ret && copy_to_user(arg, &cr, sizeof(cr)))
		ret = -EFAULT;
out:
	if (efd2)
		fput(efd2);
	if (efd)
		fput(efd);
	return ret;
}

/*
 * The file of channel @c is released (no descriptor, no mapping left):
 * stop its test, unhook its eventfds, wait for its timer and work items,
 * and return its id and memory.
 */
void k2u_chan_release(struct k2u_chan *c)
{
	struct k2u_device *d = &k2u_dev;

	mutex_lock(&c->lock);
	WRITE_ONCE(c->live, false);
	k2u_detach(c);
	mutex_unlock(&c->lock);
	k2u_round_cancel_sync(c);

	mutex_lock(&d->chan_lock);
	list_del(&c->node);
	d->nr_channels--;
	d->memory -= k2u_chan_map_size(c);
	ida_free(&d->ids, c->id);
	mutex_unlock(&d->chan_lock);
	pr_info("channel %u released\n", c->id);
	kref_put(&c->ref, k2u_chan_free);
}

static const char *k2u_pacing(const struct k2u_chan *c)
{
	if (c->producer)
		return "producer";
	/* Set once at CREATE; a ring's doorbell is always adaptive. */
	if (c->ring_slots)
		return c->back_to_back ? "b2b+ring" : "timer+ring";
	/* The default channel's flags change under c->lock (main.c). */
	if (READ_ONCE(c->back_to_back))
		return READ_ONCE(c->adaptive) ? "b2b+adaptive" : "b2b";
	return READ_ONCE(c->adaptive) ? "timer+adaptive" : "timer";
}

/*
 * One line of the listing; chan_lock held, so @c stays. Without c->lock:
 * a channel whose mutex is held for long (a stalled reader, before the
 * copies went through kernel memory) must not hold up the listing. The
 * owner is referenced under show_lock, the figures read under the
 * statistics' lock; the pacing flags are read once each.
 */
static int k2u_chan_show(struct k2u_chan *c, char *buf, int len)
{
	struct k2u_channel_stats st = {};
	struct pid *pid;
	pid_t owner;

	spin_lock(&c->show_lock);
	/* The default channel's owner is its listener. */
	pid = get_pid(k2u_is_default(c) ? c->listener : c->owner);
	spin_unlock(&c->show_lock);
	owner = pid_vnr(pid);
	put_pid(pid);
	k2u_stats_get(&c->stats, &st);
	return scnprintf(buf + len, PAGE_SIZE - len,
			 "%u %s %d %zu %s %s %llu %llu %llu\n", c->id,
			 c->name[0] ? c->name : "-", owner, c->buffer_size,
			 K2U_QUEUE_MODE ? "queue" : "counter", k2u_pacing(c),
			 st.count, st.p50_ns, st.p99_ns);
}

/* The `channels` parameter: the header, the default channel, the others. */
int k2u_channels_show(char *buf)
{
	struct k2u_device *d = &k2u_dev;
	struct k2u_chan *c;
	int len;

	len = scnprintf(buf, PAGE_SIZE, "%s\n", K2U_CHANNELS_HEADER);
	len += k2u_chan_show(&d->def, buf, len);
	mutex_lock(&d->chan_lock);
	list_for_each_entry(c, &d->channels, node)
		len += k2u_chan_show(c, buf, len);
	mutex_unlock(&d->chan_lock);
	return len;
}
