// SPDX-License-Identifier: GPL-2.0-only
/*
 * kern2usr: hand a kernel buffer to a userspace listener and time the round
 * trip, driven through module parameters and two eventfds.
 *
 * This file: module init/exit and the parameters. Writing a command number
 * to cur_cmd runs it; a refused command returns an errno to the writer,
 * logs one line and leaves its reason in last_error.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/file.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "kern2usr.h"

/* The locks are ready before init: parameters given to insmod take them. */
struct k2u_device k2u_dev = {
	.def.lock = __MUTEX_INITIALIZER(k2u_dev.def.lock),
	.def.read_lock = __MUTEX_INITIALIZER(k2u_dev.def.read_lock),
	.def.show_lock = __SPIN_LOCK_UNLOCKED(k2u_dev.def.show_lock),
	.def.stats.lock = __SPIN_LOCK_UNLOCKED(k2u_dev.def.stats.lock),
	.chan_lock = __MUTEX_INITIALIZER(k2u_dev.chan_lock),
	.channels = LIST_HEAD_INIT(k2u_dev.channels),
	.max_channels = K2U_DEFAULT_MAX_CHANNELS,
	.max_memory = K2U_DEFAULT_MAX_CHANNEL_MEMORY,
};

static int usr_pid;
static int usr_efd = -1;
static int usr_efd2 = -1;
static unsigned int cur_cmd;
static unsigned int period_ms = K2U_DEFAULT_PERIOD_MS;
static unsigned long buffer_size = K2U_DEFAULT_BUFFER_SIZE;

/* The default channel follows period_ms; a created one has its own. */
u64 k2u_period_ns(struct k2u_chan *c)
{
	if (!k2u_is_default(c))
		return c->period_ns;
	return (u64)READ_ONCE(period_ms) * NSEC_PER_MSEC;
}

const char *k2u_cmd_name(unsigned int cmd)
{
	static const char * const names[] = {
		[K2U_CMD_FIND] = "FIND",
		[K2U_CMD_MMAP] = "MMAP",
		[K2U_CMD_START_TEST] = "START_TEST",
		[K2U_CMD_STOP_TEST] = "STOP_TEST",
		[K2U_CMD_EXIT_TEST] = "EXIT_TEST",
		[K2U_CMD_MEMORY_READY] = "MEMORY_READY",
		[K2U_CMD_MEMORY_COPIED] = "MEMORY_COPIED",
	};

	return cmd < ARRAY_SIZE(names) && names[cmd] ? names[cmd] : "UNKNOWN";
}

static __printf(5, 0) int k2u_vrefuse(struct k2u_chan *c, const char *cmd,
				      const char *name, int err,
				      const char *fmt, va_list args)
{
	vsnprintf(c->last_error, sizeof(c->last_error), fmt, args);
	pr_notice("%scommand %s (%s) refused: %s\n", c->tag, cmd, name,
		  c->last_error);
	return err;
}

static __printf(4, 5) int k2u_refuse(struct k2u_chan *c, unsigned int cmd, int err,
				     const char *fmt, ...)
{
	char num[12];
	va_list args;

	snprintf(num, sizeof(num), "%u", cmd);
	va_start(args, fmt);
	err = k2u_vrefuse(c, num, k2u_cmd_name(cmd), err, fmt, args);
	va_end(args);
	return err;
}

/* A refusal outside cur_cmd (an ioctl, the listener's eventfds). */
int k2u_refuse_op(struct k2u_chan *c, const char *op, int err, const char *fmt, ...)
{
	va_list args;

	lockdep_assert_held(&c->lock);
	va_start(args, fmt);
	vsnprintf(c->last_error, sizeof(c->last_error), fmt, args);
	va_end(args);
	pr_notice("%s%s refused: %s\n", c->tag, op, c->last_error);
	return err;
}

/* A cur_cmd write that is no number: quote what was written. */
static __printf(3, 4) int k2u_refuse_text(struct k2u_chan *c, const char *text,
					  const char *fmt, ...)
{
	char quoted[17];
	va_list args;
	int err;

	strscpy(quoted, text, min_t(size_t, strcspn(text, "\n") + 1,
				    sizeof(quoted)));
	va_start(args, fmt);
	err = k2u_vrefuse(c, quoted, "UNKNOWN", -EINVAL, fmt, args);
	va_end(args);
	return err;
}

/* K2U_IOC_REGISTER attached the caller: show it in the parameters too. */
void k2u_note_registered(pid_t pid, int efd, int efd2)
{
	usr_pid = pid;
	usr_efd = efd;
	usr_efd2 = efd2;
}

/* FIND: resolve usr_pid's two eventfds and hook them. */
static int k2u_cmd_find(struct k2u_chan *c)
{
	const unsigned int cmd = K2U_CMD_FIND;
	char why[K2U_LAST_ERROR_LEN];
	struct task_struct *task;
	struct file *f1, *f2;
	int ret;

	if (usr_pid <= 0 || usr_efd < 0 || usr_efd2 < 0)
		return k2u_refuse(c, cmd, -EINVAL,
				  "set usr_pid, usr_efd and usr_efd2 first");
	if (usr_efd == usr_efd2)
		return k2u_refuse(c, cmd, -EINVAL,
				  "usr_efd and usr_efd2 must be two different eventfds");
	k2u_check_listener(c);
	if (c->testing)
		return k2u_refuse(c, cmd, -EBUSY,
				  "test is running: stop it (4) before FIND");

	pr_info("Received from userspace: usr_pid=%d, efd=%d, efd2=%d\n",
		usr_pid, usr_efd, usr_efd2);
	task = k2u_get_task(usr_pid);
	if (!task)
		return k2u_refuse(c, cmd, -ESRCH, "usr_pid=%d: no such process",
				  usr_pid);
	/* As pidfd_getfd(): no execve between the check and the files. */
	ret = down_read_killable(&task->signal->exec_update_lock);
	if (ret)
		goto out_task;
	if (!k2u_may_reach_files(task)) {
		up_read(&task->signal->exec_update_lock);
		ret = k2u_refuse(c, cmd, -EPERM,
				 "may not reach into the files of pid %d (ptrace access)",
				 usr_pid);
		goto out_task;
	}
	f1 = k2u_fget_task(task, usr_efd);
	f2 = k2u_fget_task(task, usr_efd2);
	up_read(&task->signal->exec_update_lock);
	ret = -EBADF;
	if (!f1) {
		if (f2)
			fput(f2);
		k2u_refuse(c, cmd, ret, "usr_efd=%d is not an open fd of pid %d",
			   usr_efd, usr_pid);
		goto out_task;
	}
	if (!f2) {
		k2u_refuse(c, cmd, ret, "usr_efd2=%d is not an open fd of pid %d",
			   usr_efd2, usr_pid);
		goto out_f1;
	}
	ret = -EINVAL;
	if (!k2u_is_eventfd(f1)) {
		k2u_refuse(c, cmd, ret, "usr_efd=%d of pid %d is not an eventfd",
			   usr_efd, usr_pid);
		goto out_f2;
	}
	if (!k2u_is_eventfd(f2)) {
		k2u_refuse(c, cmd, ret, "usr_efd2=%d of pid %d is not an eventfd",
			   usr_efd2, usr_pid);
		goto out_f2;
	}
	pr_info("Resolved pointer to the userspace program task struct: %p\n",
		task);
	pr_info("Resolved pointer to the userspace program's eventfd's file struct: %p and struct2 : %p\n",
		f1, f2);
	ret = k2u_attach(c, task, f1, f2, why, sizeof(why));
	if (ret)
		k2u_refuse(c, cmd, ret, "%s", why);
	else
		pr_info("Resolved pointer to the userspace program's eventfd's context: %p and context2 : %p\n",
			c->efd.ctx, c->efd2.ctx);
out_f2:
	fput(f2);
out_f1:
	fput(f1);
out_task:
	put_task_struct(task);
	return ret;
}

/* Commands 2-5 need a listener that has not been told to exit. */
static int k2u_need_listener(struct k2u_chan *c, unsigned int cmd)
{
	bool def = k2u_is_default(c);

	if (!k2u_check_listener(c))
		return k2u_refuse(c, cmd, -EPROTO, def ?
				  "no listener: run FIND (1) first" :
				  "no listener: it has left the channel");
	if (c->exit_sent)
		return k2u_refuse(c, cmd, -EPROTO, def ?
				  "listener was told to exit (5): run FIND (1) for a new one" :
				  "listener was told to exit (5)");
	if (!k2u_post_has_room(c, cmd))
		return k2u_refuse(c, cmd, -EAGAIN,
				  "event queue full: the listener is not reading events");
	return 0;
}

/*
 * Run command @cmd on channel @c (cur_cmd for the default channel,
 * K2U_IOC_CHANNEL_CMD for a created one, which logs no accepted command).
 */
static int k2u_run(struct k2u_chan *c, unsigned int cmd)
{
	bool def = k2u_is_default(c);
	int ret;

	if (cmd == K2U_CMD_FIND)
		return k2u_cmd_find(c);
	if (cmd < K2U_CMD_MMAP || cmd > K2U_CMD_EXIT_TEST)
		return k2u_refuse(c, cmd, -EINVAL,
				  "unknown command %u (valid: 1-5)", cmd);
	ret = k2u_need_listener(c, cmd);
	if (ret)
		return ret;

	switch (cmd) {
	case K2U_CMD_MMAP:
		if (c->testing)
			return k2u_refuse(c, cmd, -EBUSY,
					  "test is running: stop it (4) first");
		k2u_post(c, cmd);
		c->mmap_sent = true;
		break;
	case K2U_CMD_START_TEST:
		if (!c->mmap_sent)
			return k2u_refuse(c, cmd, -EPROTO,
					  "MMAP (2) must come before START_TEST (3)");
		if (c->testing)
			return k2u_refuse(c, cmd, -EBUSY, "test already running");
		k2u_post(c, cmd);
		k2u_round_start(c);
		if (def)
			pr_info("Timer is started.\n");
		break;
	case K2U_CMD_STOP_TEST:
		if (!c->testing)
			return k2u_refuse(c, cmd, -EPROTO, "test is not running");
		k2u_round_stop(c);
		if (def) {
			pr_info("Timer is deleted.\n");
			pr_info("Avg copy time = %llu\n",
				k2u_round_average(c));
		}
		k2u_post(c, cmd);
		break;
	case K2U_CMD_EXIT_TEST:
		if (c->testing) {
			k2u_round_stop(c);
			if (def)
				pr_info("Timer is deleted.\n");
		}
		k2u_post(c, cmd);
		c->exit_sent = true;
		break;
	}
	return 0;
}

/* K2U_IOC_CHANNEL_CMD on a created channel: commands 2-5 only. */
int k2u_channel_cmd(struct k2u_chan *c, u32 cmd)
{
	int ret;

	mutex_lock(&c->lock);
	if (!c->live) {
		ret = -ENODEV;
	} else if (cmd < K2U_CMD_MMAP || cmd > K2U_CMD_EXIT_TEST) {
		ret = k2u_refuse(c, cmd, -EINVAL,
				 "not a channel command (valid: 2-5)");
	} else {
		ret = k2u_run(c, cmd);
		if (!ret)
			c->last_error[0] = '\0';
	}
	mutex_unlock(&c->lock);
	return ret;
}

static int cur_cmd_set(const char *val, const struct kernel_param *kp)
{
	struct k2u_chan *c = &k2u_dev.def;
	unsigned int cmd;
	int ret;

	mutex_lock(&c->lock);
	if (!c->live) {
		ret = -ENODEV;	/* at load time (insmod cur_cmd=) or unloading */
	} else if (kstrtouint(val, 0, &cmd)) {
		ret = k2u_refuse_text(c, val, "not a command number (valid: 1-5)");
	} else {
		ret = k2u_run(c, cmd);
		if (!ret) {
			cur_cmd = cmd;
			c->last_error[0] = '\0';
		}
	}
	mutex_unlock(&c->lock);
	return ret;
}

static const struct kernel_param_ops cur_cmd_ops = {
	.set = cur_cmd_set,
	.get = param_get_uint,
};
module_param_cb(cur_cmd, &cur_cmd_ops, &cur_cmd, 0644);
MODULE_PARM_DESC(cur_cmd, "Write 1-5 to run FIND, MMAP, START_TEST, STOP_TEST, EXIT_TEST");

static int int_at_least_set(const char *val, const struct kernel_param *kp,
			    int min)
{
	int v, ret;

	ret = kstrtoint(val, 0, &v);
	if (ret || v < min)
		return -EINVAL;
	*(int *)kp->arg = v;
	return 0;
}

static int usr_pid_set(const char *val, const struct kernel_param *kp)
{
	return int_at_least_set(val, kp, 1);
}

static int usr_fd_set(const char *val, const struct kernel_param *kp)
{
	return int_at_least_set(val, kp, 0);
}

static const struct kernel_param_ops usr_pid_ops = {
	.set = usr_pid_set,
	.get = param_get_int,
};

static const struct kernel_param_ops usr_fd_ops = {
	.set = usr_fd_set,
	.get = param_get_int,
};
module_param_cb(usr_pid, &usr_pid_ops, &usr_pid, 0644);
MODULE_PARM_DESC(usr_pid, "pid of the listener");
module_param_cb(usr_efd, &usr_fd_ops, &usr_efd, 0644);
MODULE_PARM_DESC(usr_efd, "listener's kernel->user eventfd");
module_param_cb(usr_efd2, &usr_fd_ops, &usr_efd2, 0644);
MODULE_PARM_DESC(usr_efd2, "listener's user->kernel eventfd");

static int period_ms_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;

	if (kstrtouint(val, 0, &v) || v < 1 || v > K2U_MAX_PERIOD_MS)
		return -EINVAL;
	WRITE_ONCE(period_ms, v);
	return 0;
}

static const struct kernel_param_ops period_ms_ops = {
	.set = period_ms_set,
	.get = param_get_uint,
};
module_param_cb(period_ms, &period_ms_ops, &period_ms, 0644);
MODULE_PARM_DESC(period_ms, "Timer period of a test round in ms (1-60000, default 500)");

module_param(buffer_size, ulong, 0444);
MODULE_PARM_DESC(buffer_size, "Size of the shared buffer in bytes (multiple of 4096, default 4096)");

/* A mode switch, writable only while no test runs. */
static int mode_flag_set(const char *val, const struct kernel_param *kp)
{
	struct k2u_chan *c = &k2u_dev.def;
	bool v;
	int ret;

	ret = kstrtobool(val, &v);
	if (ret)
		return ret;
	mutex_lock(&c->lock);
	if (c->testing)
		ret = -EBUSY;
	else
		WRITE_ONCE(*(bool *)kp->arg, v);	/* the listing reads it */
	mutex_unlock(&c->lock);
	return ret;
}

static int mode_flag_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(*(bool *)kp->arg));
}

static const struct kernel_param_ops mode_flag_ops = {
	.set = mode_flag_set,
	.get = mode_flag_get,
};
module_param_cb(back_to_back, &mode_flag_ops, &k2u_dev.def.back_to_back, 0644);
MODULE_PARM_DESC(back_to_back, "1: next round right after the ack, no timer wait");
module_param_cb(adaptive, &mode_flag_ops, &k2u_dev.def.adaptive, 0644);
MODULE_PARM_DESC(adaptive, "1: no MEMORY_READY doorbell while the listener spins");

static int read_only_set(const char *val, const struct kernel_param *kp)
{
	return -EPERM;
}

static int event_mode_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%s\n", K2U_QUEUE_MODE ? "queue" : "counter");
}

static const struct kernel_param_ops event_mode_ops = {
	.set = read_only_set,
	.get = event_mode_get,
};
module_param_cb(event_mode, &event_mode_ops, NULL, 0444);
MODULE_PARM_DESC(event_mode, "How codes reach the listener: counter or queue");

static int last_error_get(char *buf, const struct kernel_param *kp)
{
	struct k2u_chan *c = &k2u_dev.def;
	int ret;

	mutex_lock(&c->lock);
	ret = sysfs_emit(buf, "%s\n", c->last_error);
	mutex_unlock(&c->lock);
	return ret;
}

static const struct kernel_param_ops last_error_ops = {
	.set = read_only_set,
	.get = last_error_get,
};
module_param_cb(last_error, &last_error_ops, NULL, 0444);
MODULE_PARM_DESC(last_error, "Why the last refused command was refused");

/* Both read under the statistics' own lock, not the channel's. */
static int stats_get(char *buf, const struct kernel_param *kp)
{
	return k2u_stats_show(&k2u_dev.def.stats, buf);
}

static int histogram_get(char *buf, const struct kernel_param *kp)
{
	return k2u_histogram_show(&k2u_dev.def.stats, buf);
}

static const struct kernel_param_ops stats_ops = {
	.set = read_only_set,
	.get = stats_get,
};
module_param_cb(stats, &stats_ops, NULL, 0444);
MODULE_PARM_DESC(stats, "Round trips of the current test: count, min, mean, p50, p90, p99, p99.9, max (ns)");

static const struct kernel_param_ops histogram_ops = {
	.set = read_only_set,
	.get = histogram_get,
};
module_param_cb(histogram, &histogram_ops, NULL, 0444);
MODULE_PARM_DESC(histogram, "Round-trip histogram: low high count per non-empty bucket (ns)");

static int max_channels_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;

	if (kstrtouint(val, 0, &v) || v < 1 || v > K2U_MAX_CHANNELS_LIMIT)
		return -EINVAL;
	WRITE_ONCE(k2u_dev.max_channels, v);
	return 0;
}

static const struct kernel_param_ops max_channels_ops = {
	.set = max_channels_set,
	.get = param_get_uint,
};
module_param_cb(max_channels, &max_channels_ops, &k2u_dev.max_channels, 0644);
MODULE_PARM_DESC(max_channels, "Most userspace channels besides the default one (1-32, default 16; producers have their own 8)");

static int max_memory_set(const char *val, const struct kernel_param *kp)
{
	u64 v;

	if (kstrtou64(val, 0, &v) || v < PAGE_SIZE ||
	    v > K2U_MAX_CHANNEL_MEMORY_LIMIT)
		return -EINVAL;
	WRITE_ONCE(k2u_dev.max_memory, v);
	return 0;
}

static const struct kernel_param_ops max_memory_ops = {
	.set = max_memory_set,
	.get = param_get_ullong,
};
module_param_cb(max_channel_memory, &max_memory_ops, &k2u_dev.max_memory, 0644);
MODULE_PARM_DESC(max_channel_memory, "Most buffer bytes of all channels besides the default one (default 64 MiB)");

static int channels_get(char *buf, const struct kernel_param *kp)
{
	return k2u_channels_show(buf);
}

static const struct kernel_param_ops channels_ops = {
	.set = read_only_set,
	.get = channels_get,
};
module_param_cb(channels, &channels_ops, NULL, 0444);
MODULE_PARM_DESC(channels, "Every channel: id name owner buffer_size mode pacing rounds p50_ns p99_ns");

static int __init k2u_init(void)
{
	struct k2u_device *d = &k2u_dev;
	struct k2u_chan *c = &d->def;
	int ret;

	pr_info("module started...\n");
	if (!buffer_size || buffer_size > K2U_MAX_BUFFER_SIZE ||
	    !PAGE_ALIGNED(buffer_size)) {
		pr_err("buffer_size=%lu: must be a multiple of %lu up to %lu\n",
		       buffer_size, PAGE_SIZE, K2U_MAX_BUFFER_SIZE);
		return -EINVAL;
	}
	ida_init(&d->ids);
	k2u_chan_init(c);
	c->buffer_size = buffer_size;

	/* Zeroed, and flagged VM_USERMAP for remap_vmalloc_range(). */
	c->buffer = vmalloc_user(c->buffer_size);
	if (!c->buffer)
		return -ENOMEM;
	c->ctrl = vmalloc_user(PAGE_SIZE);
	if (!c->ctrl) {
		ret = -ENOMEM;
		goto err_buffer;
	}
	c->ring = kvcalloc(K2U_EVENT_QUEUE_LEN, sizeof(*c->ring), GFP_KERNEL);
	if (!c->ring) {
		ret = -ENOMEM;
		goto err_ctrl;
	}
	d->wq = alloc_workqueue(KBUILD_MODNAME, WQ_HIGHPRI | K2U_WQ_PERCPU, 0);
	if (!d->wq) {
		ret = -ENOMEM;
		goto err_ring;
	}
	d->poll_wq = alloc_workqueue(KBUILD_MODNAME "_poll",
				     WQ_UNBOUND | WQ_HIGHPRI, 0);
	if (!d->poll_wq) {
		ret = -ENOMEM;
		goto err_wq;
	}
	c->wq = d->wq;
	c->poll_wq = d->poll_wq;
	mutex_lock(&c->lock);
	WRITE_ONCE(c->live, true);
	mutex_unlock(&c->lock);
	/* Last: once the device exists it can be opened and mapped. */
	ret = k2u_chrdev_create(d);
	if (ret)
		goto err_live;
	pr_info("Char dev with Major = %d was created\n", MAJOR(d->devt));
	pr_info("Buffer allocated\n");
	pr_info("Work queue created.\n");
	return 0;

err_live:
	mutex_lock(&c->lock);
	WRITE_ONCE(c->live, false);
	k2u_detach(c);
	mutex_unlock(&c->lock);
	destroy_workqueue(d->poll_wq);
err_wq:
	destroy_workqueue(d->wq);
err_ring:
	kvfree(c->ring);
err_ctrl:
	vfree(c->ctrl);
err_buffer:
	vfree(c->buffer);
	return ret;
}

static void __exit k2u_exit(void)
{
	struct k2u_device *d = &k2u_dev;
	struct k2u_chan *c = &d->def;

	mutex_lock(&c->lock);
	WRITE_ONCE(c->live, false);
	k2u_detach(c);		/* stops the timer, unhooks the eventfds */
	mutex_unlock(&c->lock);
	wake_up_interruptible(&c->readq);

	/* No channel is left: each file held the module. */
	k2u_chrdev_destroy(d);
	/* Both run what is queued (all see !live); a poll queues on wq. */
	destroy_workqueue(d->poll_wq);
	destroy_workqueue(d->wq);
	ida_destroy(&d->ids);
	kvfree(c->ring);
	vfree(c->ctrl);
	vfree(c->buffer);
	pr_info("module unloaded\n");
}

module_init(k2u_init);
module_exit(k2u_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Kernel to userspace buffer hand-off over eventfds and mmap");
MODULE_AUTHOR("kern2usr developers");
