// SPDX-License-Identifier: GPL-2.0-only
/*
 * The character device: mmap of the data buffer, event records (queue
 * mode) through read(), and the ioctls. Dynamic major; the node appears
 * as /dev/kern2usr (mode 0600) through devtmpfs or udev.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/ratelimit.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "kern2usr.h"

/* Refusals of callers who do not own what they call: bounded, not silent. */
static DEFINE_RATELIMIT_STATE(k2u_perm_log, 5 * HZ, 100);

static int k2u_open(struct inode *inode, struct file *filp)
{
	filp->private_data = NULL;	/* not a channel: the default one */
	return 0;
}

static int k2u_release(struct inode *inode, struct file *filp)
{
	struct k2u_chan *c = k2u_file_chan(filp);

	if (c && c->producer)
		k2u_producer_listener_release(c, filp);
	else if (c)
		k2u_chan_release(c);
	return 0;
}

/*
 * Whether the caller's process is the default channel's listener. No
 * lock: mmap() calls this under mmap_lock, and a lock-free compare is
 * all it needs. The pointers are only compared: if the
 * value read is the caller's own struct pid, which lives as long as the
 * caller, the caller was the listener when it was read.
 */
static bool k2u_is_listener(struct k2u_chan *c)
{
	return READ_ONCE(c->listener) == task_tgid(current);
}

/*
 * Whether the caller may do @op on channel @c: a created channel's owner
 * process; on the default channel its listener process or CAP_SYS_ADMIN.
 * 0, or -EPERM with one (rate-limited) line.
 */
int k2u_may(struct k2u_chan *c, const char *op)
{
	if (!k2u_is_default(c)) {
		/* A producer's channel changes owner with its listener. */
		if (READ_ONCE(c->owner) == task_tgid(current))
			return 0;
		if (__ratelimit(&k2u_perm_log))
			pr_notice("channel %u: pid %d is not its owner: %s refused\n",
				  c->id, task_tgid_vnr(current), op);
		return -EPERM;
	}
	if (k2u_is_listener(c) || capable(CAP_SYS_ADMIN))
		return 0;
	if (__ratelimit(&k2u_perm_log))
		pr_notice("default channel: pid %d is neither its listener nor privileged: %s refused\n",
			  task_tgid_vnr(current), op);
	return -EPERM;
}

/* The file's channel, or the default one. */
static struct k2u_chan *k2u_chan_of(struct file *filp)
{
	return k2u_file_chan(filp) ?: &k2u_dev.def;
}

static int k2u_mmap(struct file *filp, struct vm_area_struct *vma)
{
	struct k2u_chan *c = k2u_chan_of(filp);
	unsigned long len = vma->vm_end - vma->vm_start;
	void *area = c->buffer;
	size_t size = k2u_chan_map_size(c);	/* a ring: all its slots */
	int ret;

	ret = k2u_may(c, "mmap");
	if (ret)
		return ret;
	if (vma->vm_pgoff == K2U_CTRL_MMAP_OFFSET >> PAGE_SHIFT) {
		area = c->ctrl;
		size = PAGE_SIZE;
	} else if (vma->vm_pgoff) {
		pr_info_ratelimited("%smmap refused: offset %lu, must be 0 (or the control page's)\n",
				    c->tag, vma->vm_pgoff << PAGE_SHIFT);
		return -EINVAL;
	}
	if (len > size) {
		pr_info_ratelimited("%smmap refused: length %lu exceeds %zu\n",
				    c->tag, len, size);
		return -EINVAL;
	}
	/*
	 * A private mapping of the buffer is copy-on-write: the listener sees
	 * every fill until it writes a page, which then becomes its own copy
	 * (the 2017 client maps it so). A private control page would hide
	 * listener_state from the module.
	 */
	if (!(vma->vm_flags & VM_MAYSHARE) && area == c->ctrl) {
		pr_info_ratelimited("%smmap refused: the control page must be MAP_SHARED\n",
				    c->tag);
		return -EINVAL;
	}
	/*
	 * A producer's buffer is written by the producer only: its listener
	 * maps it read-only when shared (a private copy is its own).
	 */
	if (c->producer && area == c->buffer && (vma->vm_flags & VM_SHARED)) {
		if (vma->vm_flags & VM_WRITE) {
			pr_info_ratelimited("%smmap refused: a producer's buffer is read-only (MAP_SHARED with PROT_WRITE)\n",
					    c->tag);
			return -EACCES;
		}
		k2u_vm_flags_clear(vma, VM_MAYWRITE);
	}
	/*
	 * A producer's channel changes listener: a child must not keep a view
	 * of a later listener's rounds or share its control page. And no
	 * child inherits a control page: its ack_seq acks rounds.
	 */
	if (c->producer || area == c->ctrl)
		k2u_vm_flags_set(vma, VM_DONTCOPY);
	/* vmalloc_user() zeroed both areas before they could be mapped. */
	if (k2u_is_default(c))
		return remap_vmalloc_range(vma, area, 0);
	/*
	 * A created channel's zeroed pages, inserted as remap_vmalloc_range()
	 * does (vm_insert_page(): COW in a private mapping), and as fixed.
	 */
	k2u_vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	if (area == c->ctrl)
		return vm_map_pages_zero(vma, &c->ctrl_page, 1);
	return vm_map_pages_zero(vma, c->pages, c->npages);
}

static ssize_t k2u_read(struct file *filp, char __user *buf, size_t count,
			loff_t *ppos)
{
	struct k2u_chan *c = k2u_chan_of(filp);
	int ret;

	ret = k2u_may(c, "read");
	if (ret)
		return ret;
	return k2u_read_events(c, buf, count, filp->f_flags & O_NONBLOCK);
}

static __poll_t k2u_poll(struct file *filp, poll_table *wait)
{
	struct k2u_chan *c = k2u_chan_of(filp);

	poll_wait(filp, &c->readq, wait);
	if (K2U_QUEUE_MODE && READ_ONCE(c->ring_count))
		return EPOLLIN | EPOLLRDNORM;
	return 0;
}

static long k2u_ioctl_register(struct k2u_chan *c, void __user *arg)
{
	char why[K2U_LAST_ERROR_LEN];
	struct k2u_register reg;
	struct file *efd, *efd2;
	pid_t nr = task_tgid_vnr(current);
	long ret;

	if (copy_from_user(&reg, arg, sizeof(reg)))
		return -EFAULT;
	efd = fget(reg.efd);
	efd2 = fget(reg.efd2);
	/* Lock order as in a sysfs write: param lock, then c->lock. */
	kernel_param_lock(THIS_MODULE);
	mutex_lock(&c->lock);
	if (!c->live) {
		ret = -ENODEV;
	} else if (!efd || !efd2) {
		ret = k2u_refuse_op(c, "REGISTER", -EBADF,
				    "%s=%d is not an open fd of pid %d",
				    efd ? "efd2" : "efd", efd ? reg.efd2 : reg.efd,
				    nr);
	} else if (k2u_check_listener(c) && c->testing) {
		ret = k2u_refuse_op(c, "REGISTER", -EBUSY,
				    "test is running: stop it (4) first");
	} else {
		ret = k2u_attach(c, current, efd, efd2, why, sizeof(why));
		if (ret)
			k2u_refuse_op(c, "REGISTER", ret, "%s", why);
	}
	if (!ret) {
		k2u_note_registered(nr, reg.efd, reg.efd2);
		c->last_error[0] = '\0';
	}
	mutex_unlock(&c->lock);
	kernel_param_unlock(THIS_MODULE);
	if (efd2)
		fput(efd2);
	if (efd)
		fput(efd);
	if (!ret)
		pr_info("eventfds of pid %d registered by ioctl\n", nr);
	return ret;
}

/* READ_BUFFER copies through kernel memory, this many bytes at a time. */
#define K2U_READ_CHUNK		SZ_64K
/* Fresh starts after a round refilled the buffer mid-copy, then EAGAIN. */
#define K2U_READ_RESTARTS	4

/*
 * The classic path: copy the buffer out instead of mapping it. Each chunk
 * is copied into a kernel bounce buffer under c->lock (a round's fill
 * cannot write the buffer meanwhile) and out to the caller after c->lock
 * is dropped, so a destination that stalls (userfaultfd, FUSE) holds up
 * nothing but this call. Under c->lock the buffer holds the fill of round
 * rounds_published (a round is filled and published in one c->lock
 * section), so a chunk that finds another round than the first did means
 * the buffer was refilled meanwhile: the copy starts over, and after
 * K2U_READ_RESTARTS such starts the call fails with EAGAIN. The bytes
 * copied all come from one fill.
 */
static long k2u_ioctl_read_buffer(struct k2u_chan *c, void __user *arg)
{
	unsigned int restarts = 0;
	struct k2u_read_buffer rb;
	size_t len, done = 0, n;
	u64 fill = 0;
	void *bounce;
	long ret = 0;

	if (copy_from_user(&rb, arg, sizeof(rb)))
		return -EFAULT;
	len = min_t(u64, rb.len, c->buffer_size);
	if (!len)
		return 0;
	bounce = kvmalloc(min_t(size_t, len, K2U_READ_CHUNK), GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;
	while (done < len) {
		n = min_t(size_t, len - done, K2U_READ_CHUNK);
		ret = mutex_lock_interruptible(&c->lock);
		if (ret)
			break;
		if (done && c->rounds_published != fill) {
			mutex_unlock(&c->lock);
			if (++restarts > K2U_READ_RESTARTS) {
				ret = -EAGAIN;
				break;
			}
			done = 0;
			continue;
		}
		fill = c->rounds_published;
		memcpy(bounce, c->buffer + done, n);
		mutex_unlock(&c->lock);
		if (copy_to_user(u64_to_user_ptr(rb.addr) + done, bounce, n)) {
			ret = -EFAULT;
			break;
		}
		done += n;
	}
	kvfree(bounce);
	return ret ? ret : (long)len;
}

/* K2U_IOC_ACK (@by_id false) and K2U_IOC_ACK_ROUND. */
static long k2u_ioctl_ack(struct k2u_chan *c, bool by_id, void __user *arg)
{
	u32 id = 0;
	long ret;

	if (by_id && get_user(id, (u32 __user *)arg))
		return -EFAULT;
	mutex_lock(&c->lock);
	if (k2u_check_listener(c))
		ret = k2u_round_ack_ioctl(c, by_id, id);
	else
		ret = -EPROTO;
	mutex_unlock(&c->lock);
	return ret;
}

static long k2u_ioctl_info(struct k2u_chan *c, void __user *arg)
{
	struct k2u_info info = {
		.abi_version = K2U_ABI_VERSION,
		.event_mode = K2U_EVENT_MODE,
		.buffer_size = c->buffer_size,
		.period_ms = div_u64(k2u_period_ns(c), NSEC_PER_MSEC),
		.channel_id = c->id,
	};

	return copy_to_user(arg, &info, sizeof(info)) ? -EFAULT : 0;
}

static long k2u_ioctl_stats(struct k2u_chan *c, void __user *arg)
{
	struct k2u_channel_stats st = {
		.id = c->id,
		.event_mode = K2U_EVENT_MODE,
		.buffer_size = c->buffer_size,
	};
	unsigned long irqflags;

	/* Open to anyone: the snapshots, never the channel's mutex. */
	k2u_stats_get(&c->stats, &st);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	st.rounds_published = c->rounds_published;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	return copy_to_user(arg, &st, sizeof(st)) ? -EFAULT : 0;
}

static long k2u_ioctl_channel_cmd(struct k2u_chan *c, void __user *arg)
{
	u32 code;

	if (get_user(code, (u32 __user *)arg))
		return -EFAULT;
	if (c->producer) {
		pr_notice("%scommand %u refused: a producer's channel takes no commands\n",
			  c->tag, code);
		return -EOPNOTSUPP;
	}
	return k2u_channel_cmd(c, code);
}

/* REGISTER on the default channel replaces the listener root chose. */
static int k2u_may_register(struct k2u_chan *c)
{
	if (capable(CAP_SYS_ADMIN))
		return 0;
	if (__ratelimit(&k2u_perm_log))
		pr_notice("default channel: pid %d is not privileged (CAP_SYS_ADMIN): REGISTER refused\n",
			  task_tgid_vnr(current));
	return -EPERM;
}

/* The ioctls of a file that is a channel (@c), owned by the caller. */
static long k2u_chan_ioctl(struct file *filp, struct k2u_chan *c,
			   unsigned int cmd, void __user *arg)
{
	switch (cmd) {
	case K2U_IOC_REGISTER:
		pr_notice("%sREGISTER refused: this file is a channel\n",
			  c->tag);
		return -EBUSY;
	case K2U_IOC_CREATE:
		return k2u_chan_create_ioctl(filp, arg);
	case K2U_IOC_ACK:
		if (c->ring_slots)
			return k2u_ring_refuse(c, "ACK");
		return k2u_ioctl_ack(c, false, NULL);
	case K2U_IOC_ACK_ROUND:
		if (c->ring_slots)
			return k2u_ring_refuse(c, "ACK_ROUND");
		return k2u_ioctl_ack(c, true, arg);
	case K2U_IOC_READ_BUFFER:
		if (c->ring_slots)
			return k2u_ring_refuse(c, "READ_BUFFER");
		if (c->producer) {
			/* The producer writes its buffer without c->lock. */
			pr_notice("%sREAD_BUFFER refused: a producer's buffer is read through the mapping\n",
				  c->tag);
			return -EOPNOTSUPP;
		}
		return k2u_ioctl_read_buffer(c, arg);
	case K2U_IOC_CHANNEL_CMD:
		return k2u_ioctl_channel_cmd(c, arg);
	case K2U_IOC_CHANNEL_STATS:
		return k2u_ioctl_stats(c, arg);
	default:
		return -ENOTTY;
	}
}

static const char *k2u_ioctl_name(unsigned int cmd)
{
	switch (cmd) {
	case K2U_IOC_REGISTER:
		return "REGISTER";
	case K2U_IOC_ACK:
		return "ACK";
	case K2U_IOC_ACK_ROUND:
		return "ACK_ROUND";
	case K2U_IOC_READ_BUFFER:
		return "READ_BUFFER";
	case K2U_IOC_CREATE:
		return "CREATE";
	case K2U_IOC_CHANNEL_CMD:
		return "CHANNEL_CMD";
	case K2U_IOC_CHANNEL_STATS:
		return "CHANNEL_STATS";
	default:
		return NULL;
	}
}

static long k2u_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct k2u_chan *c = k2u_file_chan(filp);
	struct k2u_chan *def = &k2u_dev.def;
	void __user *argp = (void __user *)arg;
	const char *name = k2u_ioctl_name(cmd);
	long ret;

	if (cmd == K2U_IOC_INFO)
		return k2u_ioctl_info(c ?: def, argp);
	if (!name)
		return -ENOTTY;
	if (c) {
		ret = k2u_may(c, name);
		return ret ? ret : k2u_chan_ioctl(filp, c, cmd, argp);
	}
	switch (cmd) {
	case K2U_IOC_CREATE:
		return k2u_chan_create_ioctl(filp, argp);
	case K2U_IOC_CHANNEL_STATS:
		return k2u_ioctl_stats(def, argp);
	case K2U_IOC_CHANNEL_CMD:
		return -ENOTCONN;
	case K2U_IOC_REGISTER:
		ret = k2u_may_register(def);
		return ret ? ret : k2u_ioctl_register(def, argp);
	}
	ret = k2u_may(def, name);
	if (ret)
		return ret;
	switch (cmd) {
	case K2U_IOC_ACK:
		return k2u_ioctl_ack(def, false, NULL);
	case K2U_IOC_ACK_ROUND:
		return k2u_ioctl_ack(def, true, argp);
	default:
		return k2u_ioctl_read_buffer(def, argp);
	}
}

static const struct file_operations k2u_fops = {
	.owner = THIS_MODULE,
	.open = k2u_open,
	.release = k2u_release,
	.mmap = k2u_mmap,
	.read = k2u_read,
	.poll = k2u_poll,
	.unlocked_ioctl = k2u_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static char *k2u_devnode(K2U_DEVNODE_DEV *dev, umode_t *mode)
{
	if (mode)
		*mode = 0600;
	return NULL;
}

int k2u_chrdev_create(struct k2u_device *d)
{
	int ret;

	ret = alloc_chrdev_region(&d->devt, 0, 1, K2U_DEVICE_NAME);
	if (ret)
		return ret;
	cdev_init(&d->cdev, &k2u_fops);
	d->cdev.owner = THIS_MODULE;
	ret = cdev_add(&d->cdev, d->devt, 1);
	if (ret)
		goto err_region;
	d->class = k2u_class_create(K2U_DEVICE_NAME);
	if (IS_ERR(d->class)) {
		ret = PTR_ERR(d->class);
		goto err_cdev;
	}
	d->class->devnode = k2u_devnode;
	d->device = device_create(d->class, NULL, d->devt, NULL,
				  K2U_DEVICE_NAME);
	if (IS_ERR(d->device)) {
		ret = PTR_ERR(d->device);
		goto err_class;
	}
	return 0;

err_class:
	class_destroy(d->class);
err_cdev:
	cdev_del(&d->cdev);
err_region:
	unregister_chrdev_region(d->devt, 1);
	return ret;
}

void k2u_chrdev_destroy(struct k2u_device *d)
{
	device_destroy(d->class, d->devt);
	class_destroy(d->class);
	cdev_del(&d->cdev);
	unregister_chrdev_region(d->devt, 1);
}
