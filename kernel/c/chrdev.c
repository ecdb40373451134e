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
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "kern2usr.h"

static int k2u_open(struct inode *inode, struct file *filp)
{
	filp->private_data = &k2u_dev;
	return 0;
}

static int k2u_mmap(struct file *filp, struct vm_area_struct *vma)
{
	struct k2u *k = filp->private_data;
	unsigned long len = vma->vm_end - vma->vm_start;
	void *area = k->buffer;
	size_t size = k->buffer_size;

	if (vma->vm_pgoff == K2U_CTRL_MMAP_OFFSET >> PAGE_SHIFT) {
		area = k->ctrl;
		size = PAGE_SIZE;
	} else if (vma->vm_pgoff) {
		pr_info_ratelimited("mmap refused: offset %lu, must be 0 (or the control page's)\n",
				    vma->vm_pgoff << PAGE_SHIFT);
		return -EINVAL;
	}
	if (len > size) {
		pr_info_ratelimited("mmap refused: length %lu exceeds %zu\n",
				    len, size);
		return -EINVAL;
	}
	/*
	 * A private mapping of the buffer is copy-on-write: the listener sees
	 * every fill until it writes a page, which then becomes its own copy
	 * (the 2017 client maps it so). A private control page would hide
	 * listener_state from the module.
	 */
	if (!(vma->vm_flags & VM_MAYSHARE) && area == k->ctrl) {
		pr_info_ratelimited("mmap refused: the control page must be MAP_SHARED\n");
		return -EINVAL;
	}
	/* vmalloc_user() zeroed both areas before they could be mapped. */
	return remap_vmalloc_range(vma, area, 0);
}

static ssize_t k2u_read(struct file *filp, char __user *buf, size_t count,
			loff_t *ppos)
{
	return k2u_read_events(filp->private_data, buf, count,
			       filp->f_flags & O_NONBLOCK);
}

static __poll_t k2u_poll(struct file *filp, poll_table *wait)
{
	struct k2u *k = filp->private_data;

	poll_wait(filp, &k->readq, wait);
	if (K2U_QUEUE_MODE && READ_ONCE(k->ring_count))
		return EPOLLIN | EPOLLRDNORM;
	return 0;
}

static long k2u_ioctl_register(struct k2u *k, void __user *arg)
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
	/* Lock order as in a sysfs write: param lock, then k->lock. */
	kernel_param_lock(THIS_MODULE);
	mutex_lock(&k->lock);
	if (!k->live) {
		ret = -ENODEV;
	} else if (!efd || !efd2) {
		ret = k2u_refuse_op(k, "REGISTER", -EBADF,
				    "%s=%d is not an open fd of pid %d",
				    efd ? "efd2" : "efd", efd ? reg.efd2 : reg.efd,
				    nr);
	} else if (k2u_check_listener(k) && k->testing) {
		ret = k2u_refuse_op(k, "REGISTER", -EBUSY,
				    "test is running: stop it (4) first");
	} else {
		ret = k2u_attach(k, current, efd, efd2, why, sizeof(why));
		if (ret)
			k2u_refuse_op(k, "REGISTER", ret, "%s", why);
	}
	if (!ret) {
		k2u_note_registered(nr, reg.efd, reg.efd2);
		k->last_error[0] = '\0';
	}
	mutex_unlock(&k->lock);
	kernel_param_unlock(THIS_MODULE);
	if (efd2)
		fput(efd2);
	if (efd)
		fput(efd);
	if (!ret)
		pr_info("eventfds of pid %d registered by ioctl\n", nr);
	return ret;
}

/* The classic path: copy the buffer out instead of mapping it. */
static long k2u_ioctl_read_buffer(struct k2u *k, void __user *arg)
{
	struct k2u_read_buffer rb;
	size_t len;
	long ret;

	if (copy_from_user(&rb, arg, sizeof(rb)))
		return -EFAULT;
	len = min_t(u64, rb.len, k->buffer_size);
	/* Under the lock a round's fill cannot write the buffer meanwhile. */
	ret = mutex_lock_interruptible(&k->lock);
	if (ret)
		return ret;
	if (copy_to_user(u64_to_user_ptr(rb.addr), k->buffer, len))
		ret = -EFAULT;
	else
		ret = len;
	mutex_unlock(&k->lock);
	return ret;
}

/* K2U_IOC_ACK (@by_id false) and K2U_IOC_ACK_ROUND. */
static long k2u_ioctl_ack(struct k2u *k, bool by_id, void __user *arg)
{
	u32 id = 0;
	long ret;

	if (by_id && get_user(id, (u32 __user *)arg))
		return -EFAULT;
	mutex_lock(&k->lock);
	if (k2u_check_listener(k))
		ret = k2u_round_ack_ioctl(k, by_id, id);
	else
		ret = -EPROTO;
	mutex_unlock(&k->lock);
	return ret;
}

static long k2u_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct k2u *k = filp->private_data;
	struct k2u_info info = {};

	switch (cmd) {
	case K2U_IOC_REGISTER:
		return k2u_ioctl_register(k, (void __user *)arg);
	case K2U_IOC_ACK:
		return k2u_ioctl_ack(k, false, NULL);
	case K2U_IOC_ACK_ROUND:
		return k2u_ioctl_ack(k, true, (void __user *)arg);
	case K2U_IOC_READ_BUFFER:
		return k2u_ioctl_read_buffer(k, (void __user *)arg);
	case K2U_IOC_INFO:
		info.abi_version = K2U_ABI_VERSION;
		info.event_mode = K2U_EVENT_MODE;
		info.buffer_size = k->buffer_size;
		info.period_ms = div_u64(k2u_period_ns(), NSEC_PER_MSEC);
		return copy_to_user((void __user *)arg, &info, sizeof(info)) ?
		       -EFAULT : 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations k2u_fops = {
	.owner = THIS_MODULE,
	.open = k2u_open,
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

int k2u_chrdev_create(struct k2u *k)
{
	int ret;

	ret = alloc_chrdev_region(&k->devt, 0, 1, K2U_DEVICE_NAME);
	if (ret)
		return ret;
	cdev_init(&k->cdev, &k2u_fops);
	k->cdev.owner = THIS_MODULE;
	ret = cdev_add(&k->cdev, k->devt, 1);
	if (ret)
		goto err_region;
	k->class = k2u_class_create(K2U_DEVICE_NAME);
	if (IS_ERR(k->class)) {
		ret = PTR_ERR(k->class);
		goto err_cdev;
	}
	k->class->devnode = k2u_devnode;
	k->device = device_create(k->class, NULL, k->devt, NULL,
				  K2U_DEVICE_NAME);
	if (IS_ERR(k->device)) {
		ret = PTR_ERR(k->device);
		goto err_class;
	}
	return 0;

err_class:
	class_destroy(k->class);
err_cdev:
	cdev_del(&k->cdev);
err_region:
	unregister_chrdev_region(k->devt, 1);
	return ret;
}

void k2u_chrdev_destroy(struct k2u *k)
{
	device_destroy(k->class, k->devt);
	class_destroy(k->class);
	cdev_del(&k->cdev);
	unregister_chrdev_region(k->devt, 1);
}
