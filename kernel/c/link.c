// SPDX-License-Identifier: GPL-2.0-only
/*
 * The link to the listener: its two eventfds, how codes reach it, how its
 * acknowledgements come back.
 *
 * Like KVM's irqfd, a wait-queue entry is hooked on each eventfd through
 * vfs_poll(), so the module reacts to the listener without a parked thread.
 * The callbacks run under the eventfd's wait-queue lock: they only record
 * what happened and queue work; the work runs under k2u.lock.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/sched/task.h>
#include <linux/uaccess.h>

#include "kern2usr.h"

/* efd: EPOLLOUT means the listener read the counter; EPOLLHUP, it closed it. */
static int k2u_efd_wake(wait_queue_entry_t *wait, unsigned int mode, int sync,
			void *key)
{
	struct k2u *k = container_of(wait, struct k2u, efd.wait);
	__poll_t flags = key_to_poll(key);

	if (flags & EPOLLHUP) {
		set_bit(K2U_EV_HUP, &k->events);
		queue_work(k->wq, &k->hup_work);
	} else if (!K2U_QUEUE_MODE && (flags & EPOLLOUT)) {
		set_bit(K2U_EV_EFD_READ, &k->events);
		queue_work(k->wq, &k->post_work);
	}
	return 0;
}

/* efd2: consume the listener's acknowledgement right here, timestamp it. */
static int k2u_efd2_wake(wait_queue_entry_t *wait, unsigned int mode, int sync,
			 void *key)
{
	struct k2u *k = container_of(wait, struct k2u, efd2.wait);
	__poll_t flags = key_to_poll(key);
	unsigned long irqflags;
	u64 value;

	if (flags & EPOLLIN) {
		u64 now = ktime_get_ns();

		/* The caller holds efd2's wait-queue lock, as do_read requires. */
		eventfd_ctx_do_read(k->efd2.ctx, &value);
		spin_lock_irqsave(&k->ack_lock, irqflags);
		if (!k->ack_value)
			k->ack_time_ns = now;
		k->ack_value += value;
		spin_unlock_irqrestore(&k->ack_lock, irqflags);
		queue_work(k->wq, &k->ack_work);
	}
	if (flags & EPOLLHUP) {
		set_bit(K2U_EV_HUP, &k->events);
		queue_work(k->wq, &k->hup_work);
	}
	return 0;
}

static void k2u_queue_proc(struct file *file, wait_queue_head_t *wqh,
			   poll_table *pt)
{
	struct k2u_hook *hook = container_of(pt, struct k2u_hook, pt);

	hook->wqh = wqh;
	add_wait_queue(wqh, &hook->wait);
}

static int k2u_hook_add(struct k2u_hook *hook, struct file *file,
			struct eventfd_ctx *ctx, wait_queue_func_t fn)
{
	hook->ctx = ctx;
	hook->wqh = NULL;
	init_waitqueue_func_entry(&hook->wait, fn);
	init_poll_funcptr(&hook->pt, k2u_queue_proc);
	vfs_poll(file, &hook->pt);
	return hook->wqh ? 0 : -EINVAL;
}

/* After this returns the callback is neither running nor called again. */
static void k2u_hook_unhook(struct k2u_hook *hook)
{
	u64 cnt;

	if (hook->wqh)
		eventfd_ctx_remove_wait_queue(hook->ctx, &hook->wait, &cnt);
	hook->wqh = NULL;
}

static void k2u_hook_remove(struct k2u_hook *hook)
{
	k2u_hook_unhook(hook);
	eventfd_ctx_put(hook->ctx);
	hook->ctx = NULL;
}

#if !K2U_QUEUE_MODE
/* Signal the code at the ring's head, if the last one was read. */
static void k2u_post_next(struct k2u *k)
{
	struct k2u_event *ev;

	lockdep_assert_held(&k->lock);
	if (k->in_flight || !k->ring_count)
		return;
	ev = &k->ring[k->ring_head];
	k->ring_head = (k->ring_head + 1) % K2U_EVENT_QUEUE_LEN;
	k->ring_count--;
	k->in_flight = true;
	k2u_eventfd_ring(k->efd.ctx, ev->code);
}

static void k2u_post_work(struct work_struct *work)
{
	struct k2u *k = container_of(work, struct k2u, post_work);

	mutex_lock(&k->lock);
	if (k->attached && test_and_clear_bit(K2U_EV_EFD_READ, &k->events)) {
		k->in_flight = false;
		k2u_post_next(k);
	}
	mutex_unlock(&k->lock);
}
#else
static void k2u_post_work(struct work_struct *work)
{
	/* Queue mode: efd is a doorbell; records leave through read(). */
}
#endif

static void k2u_hup_work(struct work_struct *work)
{
	struct k2u *k = container_of(work, struct k2u, hup_work);

	mutex_lock(&k->lock);
	if (k->attached && test_and_clear_bit(K2U_EV_HUP, &k->events)) {
		k2u_detach(k);
		pr_info("listener closed its eventfd: detached\n");
	}
	mutex_unlock(&k->lock);
}

static void k2u_ack_work(struct work_struct *work)
{
	struct k2u *k = container_of(work, struct k2u, ack_work);
	unsigned long irqflags;
	u64 value, when;

	spin_lock_irqsave(&k->ack_lock, irqflags);
	value = k->ack_value;
	when = k->ack_time_ns;
	k->ack_value = 0;
	spin_unlock_irqrestore(&k->ack_lock, irqflags);
	if (!value)
		return;

	mutex_lock(&k->lock);
	if (k->attached)
		k2u_round_ack(k, value, when);
	mutex_unlock(&k->lock);
}

void k2u_link_init(struct k2u *k)
{
	spin_lock_init(&k->ack_lock);
	init_waitqueue_head(&k->readq);
	INIT_WORK(&k->post_work, k2u_post_work);
	INIT_WORK(&k->hup_work, k2u_hup_work);
	INIT_WORK(&k->ack_work, k2u_ack_work);
}

bool k2u_post_has_room(struct k2u *k)
{
	lockdep_assert_held(&k->lock);
	return k->ring_count < K2U_EVENT_QUEUE_LEN;
}

/*
 * Queue a code for the listener. Callers check k2u_post_has_room() first,
 * before they change any state, so a full queue refuses a command whole.
 */
void k2u_post(struct k2u *k, unsigned int code)
{
	unsigned int tail;

	lockdep_assert_held(&k->lock);
	if (WARN_ON_ONCE(!k2u_post_has_room(k)))
		return;
	tail = (k->ring_head + k->ring_count) % K2U_EVENT_QUEUE_LEN;
	k->ring[tail] = (struct k2u_event){ .seq = k->next_seq++, .code = code };
	k->ring_count++;
#if K2U_QUEUE_MODE
	/* The counter is a doorbell; the record carries the code. */
	k2u_eventfd_ring(k->efd.ctx, code);
	wake_up_interruptible(&k->readq);
#else
	k2u_post_next(k);
#endif
}

/* Queue mode: hand out records, oldest first. */
ssize_t k2u_read_events(struct k2u *k, char __user *buf, size_t count,
			bool nonblock)
{
	size_t done = 0;
	int ret;

	if (!K2U_QUEUE_MODE || count < sizeof(struct k2u_event))
		return -EINVAL;

	ret = mutex_lock_interruptible(&k->lock);
	if (ret)
		return ret;
	while (!k->ring_count) {
		mutex_unlock(&k->lock);
		if (nonblock)
			return -EAGAIN;
		ret = wait_event_interruptible(k->readq,
					       READ_ONCE(k->ring_count) ||
					       !READ_ONCE(k->live));
		if (ret)
			return ret;
		if (!READ_ONCE(k->live))
			return -ENODEV;
		ret = mutex_lock_interruptible(&k->lock);
		if (ret)
			return ret;
	}
	while (k->ring_count && count - done >= sizeof(struct k2u_event)) {
		/* A record leaves the ring only once it reached the reader. */
		if (copy_to_user(buf + done, &k->ring[k->ring_head],
				 sizeof(struct k2u_event))) {
			if (!done)
				done = -EFAULT;
			break;
		}
		k->ring_head = (k->ring_head + 1) % K2U_EVENT_QUEUE_LEN;
		k->ring_count--;
		done += sizeof(struct k2u_event);
	}
	mutex_unlock(&k->lock);
	return done;
}

struct k2u_fd_lookup {
	unsigned int fd;
	struct file *file;
};

/* iterate_fd() callback: called for open fds from the wanted one upwards. */
static int k2u_match_fd(const void *arg, struct file *file, unsigned int fd)
{
	struct k2u_fd_lookup *lookup = (struct k2u_fd_lookup *)arg;

	if (fd == lookup->fd)
		lookup->file = get_file(file);
	return 1;
}

/* The task of process @nr in the caller's pid namespace, referenced. */
struct task_struct *k2u_get_task(pid_t nr)
{
	struct task_struct *task;
	struct pid *pid;

	pid = find_get_pid(nr);
	task = pid ? get_pid_task(pid, PIDTYPE_PID) : NULL;
	put_pid(pid);
	return task;
}

/* A reference on open file @fd of @task, or NULL. */
struct file *k2u_fget_task(struct task_struct *task, unsigned int fd)
{
	struct k2u_fd_lookup lookup = { .fd = fd };

	/* task_lock keeps ->files from being released under us. */
	task_lock(task);
	if (task->files)
		iterate_fd(task->files, fd, k2u_match_fd, &lookup);
	task_unlock(task);
	return lookup.file;
}

bool k2u_is_eventfd(struct file *file)
{
	struct eventfd_ctx *ctx = eventfd_ctx_fileget(file);

	if (IS_ERR(ctx))
		return false;
	eventfd_ctx_put(ctx);
	return true;
}

/*
 * Attach the listener's eventfds. Both contexts are taken before anything
 * changes, so a failure leaves the previous listener (if any) attached.
 */
int k2u_attach(struct k2u *k, pid_t pid, struct file *efd_file,
	       struct file *efd2_file)
{
	struct eventfd_ctx *efd, *efd2;
	int ret;

	lockdep_assert_held(&k->lock);
	efd = eventfd_ctx_fileget(efd_file);
	if (IS_ERR(efd))
		return PTR_ERR(efd);
	efd2 = eventfd_ctx_fileget(efd2_file);
	if (IS_ERR(efd2)) {
		eventfd_ctx_put(efd);
		return PTR_ERR(efd2);
	}
	if (efd == efd2) {
		eventfd_ctx_put(efd2);
		eventfd_ctx_put(efd);
		return -EINVAL;
	}

	k2u_detach(k);
	clear_bit(K2U_EV_EFD_READ, &k->events);
	clear_bit(K2U_EV_HUP, &k->events);
	ret = k2u_hook_add(&k->efd, efd_file, efd, k2u_efd_wake);
	if (ret)
		goto err_put;
	ret = k2u_hook_add(&k->efd2, efd2_file, efd2, k2u_efd2_wake);
	if (ret) {
		k2u_hook_unhook(&k->efd);
		goto err_put;
	}
	k->pid = pid;
	k->attached = true;
	k->next_seq = 1;
	return 0;

err_put:
	k->efd.ctx = NULL;
	k->efd2.ctx = NULL;
	eventfd_ctx_put(efd2);
	eventfd_ctx_put(efd);
	return ret;
}

/* Forget the listener: stop the test, unhook, drop pending events. */
void k2u_detach(struct k2u *k)
{
	lockdep_assert_held(&k->lock);
	if (!k->attached)
		return;
	k2u_round_stop(k);
	k2u_hook_remove(&k->efd);
	k2u_hook_remove(&k->efd2);
	k->attached = false;
	k->mmap_sent = false;
	k->exit_sent = false;
	k->in_flight = false;
	k->ring_head = 0;
	k->ring_count = 0;
	wake_up_interruptible(&k->readq);
}
