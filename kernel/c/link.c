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

#include <linux/cred.h>
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/pid.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/uaccess.h>

#include "kern2usr.h"

#if !K2U_QUEUE_MODE
/*
 * Counter mode, efd's wait-queue lock held: the listener's read() consumed
 * the posted code. A plain eventfd reads as 0 afterwards; anything left
 * means one code reaches the listener as several reads (EFD_SEMAPHORE) or
 * another writer adds to efd: have the listener detached.
 */
static void k2u_efd_consumed(struct k2u_chan *c)
{
	unsigned long irqflags;
	bool was_in_flight;
	u64 rest;

	eventfd_ctx_do_read(c->efd.ctx, &rest);
	if (rest) {
		/* Left as it is: a semaphore count may be huge. */
		set_bit(K2U_EV_EFD_UNDRAINED, &c->events);
		queue_work(c->wq, &c->hup_work);
		return;
	}
	spin_lock_irqsave(&c->ack_lock, irqflags);
	was_in_flight = c->in_flight;
	if (c->in_flight) {
		c->in_flight = false;
		if (c->in_flight_code == K2U_CMD_MEMORY_READY)
			k2u_round_shown_locked(c, c->in_flight_round);
	}
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	if (was_in_flight)
		queue_work(c->wq, &c->post_work);
}
#else
static void k2u_efd_consumed(struct k2u_chan *c)
{
	/* Queue mode: the counter is a doorbell, its reads tell nothing. */
}
#endif

/* efd: EPOLLOUT means the listener read the counter; EPOLLHUP, it closed it. */
static int k2u_efd_wake(wait_queue_entry_t *wait, unsigned int mode, int sync,
			void *key)
{
	struct k2u_chan *c = container_of(wait, struct k2u_chan, efd.wait);
	__poll_t flags = key_to_poll(key);

	if (flags & EPOLLHUP) {
		set_bit(K2U_EV_HUP, &c->events);
		queue_work(c->wq, &c->hup_work);
	} else if (flags & EPOLLOUT) {
		k2u_efd_consumed(c);
	}
	return 0;
}

/* Reads of efd2 per wake-up: 7 covers a semaphore eventfd's one ack. */
#define K2U_EFD2_READS 64

/* efd2: consume the listener's acknowledgements right here. */
static int k2u_efd2_wake(wait_queue_entry_t *wait, unsigned int mode, int sync,
			 void *key)
{
	struct k2u_chan *c = container_of(wait, struct k2u_chan, efd2.wait);
	__poll_t flags = key_to_poll(key);
	unsigned long irqflags;
	u64 value, part;
	int i;

	if (flags & EPOLLIN) {
		/*
		 * The caller holds efd2's wait-queue lock, as do_read requires.
		 * A plain eventfd gives its whole count at once; an EFD_SEMAPHORE
		 * one 1 per read, so read a bounded number of times.
		 */
		value = 0;
		for (i = 0; i < K2U_EFD2_READS; i++) {
			eventfd_ctx_do_read(c->efd2.ctx, &part);
			if (!part)
				break;
			value += part;
		}
		if (value) {
			spin_lock_irqsave(&c->ack_lock, irqflags);
			k2u_round_efd2_locked(c, value);
			spin_unlock_irqrestore(&c->ack_lock, irqflags);
			queue_work(c->wq, &c->ack_work);
		}
	}
	if (flags & EPOLLHUP) {
		set_bit(K2U_EV_HUP, &c->events);
		queue_work(c->wq, &c->hup_work);
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

/*
 * After this returns the callback is neither running nor called again
 * (it runs under the same wait-queue lock). Only efd2's counter is
 * consumed, as KVM's irqfd does: a code waiting in efd stays there for
 * its reader.
 */
static void k2u_hook_unhook(struct k2u_hook *hook, bool drain)
{
	u64 cnt;

	if (hook->wqh && drain)
		eventfd_ctx_remove_wait_queue(hook->ctx, &hook->wait, &cnt);
	else if (hook->wqh)
		remove_wait_queue(hook->wqh, &hook->wait);
	hook->wqh = NULL;
}

static void k2u_hook_remove(struct k2u_hook *hook, bool drain)
{
	k2u_hook_unhook(hook, drain);
	eventfd_ctx_put(hook->ctx);
	hook->ctx = NULL;
}

/* Events queued or sitting in efd that the listener has not received. */
static unsigned int k2u_undelivered(struct k2u_chan *c)
{
	unsigned long irqflags;
	unsigned int n;

	lockdep_assert_held(&c->lock);
	spin_lock_irqsave(&c->ack_lock, irqflags);
	n = c->ring_count + c->in_flight;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	return n;
}

#if !K2U_QUEUE_MODE
/* Signal the code at the ring's head, if the last one was read. */
static void k2u_post_next(struct k2u_chan *c)
{
	unsigned long irqflags;
	struct k2u_event *ev;

	lockdep_assert_held(&c->lock);
	if (!c->ring_count)
		return;
	ev = &c->ring[c->ring_head];
	spin_lock_irqsave(&c->ack_lock, irqflags);
	if (c->in_flight) {
		spin_unlock_irqrestore(&c->ack_lock, irqflags);
		return;
	}
	c->in_flight = true;
	c->in_flight_code = ev->code;
	c->in_flight_round = ev->round;
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	c->ring_head = (c->ring_head + 1) % K2U_EVENT_QUEUE_LEN;
	WRITE_ONCE(c->ring_count, c->ring_count - 1);
	/* Outside ack_lock: signalling takes efd's wait-queue lock. */
	k2u_eventfd_ring(c->efd.ctx, ev->code);
}
#else
static void k2u_post_next(struct k2u_chan *c)
{
	/* Queue mode: efd is a doorbell; records leave through read(). */
}
#endif

static void k2u_post_work(struct work_struct *work)
{
	struct k2u_chan *c = container_of(work, struct k2u_chan, post_work);

	mutex_lock(&c->lock);
	if (c->attached)
		k2u_post_next(c);
	mutex_unlock(&c->lock);
}

static void k2u_hup_work(struct work_struct *work)
{
	struct k2u_chan *c = container_of(work, struct k2u_chan, hup_work);
	pid_t pid;

	mutex_lock(&c->lock);
	pid = c->pid;
	if (c->attached && test_and_clear_bit(K2U_EV_EFD_UNDRAINED, &c->events)) {
		k2u_detach(c);
		k2u_refuse_op(c, "listener", -EINVAL,
			      "efd of pid %d is not drained by read() (EFD_SEMAPHORE?): detached",
			      pid);
	}
	if (c->attached && test_and_clear_bit(K2U_EV_HUP, &c->events)) {
		k2u_detach(c);
		pr_info("%slistener closed its eventfd: detached\n", c->tag);
	}
	mutex_unlock(&c->lock);
}

static void k2u_ack_work(struct work_struct *work)
{
	struct k2u_chan *c = container_of(work, struct k2u_chan, ack_work);

	mutex_lock(&c->lock);
	if (c->attached)
		k2u_round_collect(c);
	mutex_unlock(&c->lock);
}

void k2u_link_init(struct k2u_chan *c)
{
	spin_lock_init(&c->ack_lock);
	init_waitqueue_head(&c->readq);
	INIT_WORK(&c->post_work, k2u_post_work);
	INIT_WORK(&c->hup_work, k2u_hup_work);
	INIT_WORK(&c->ack_work, k2u_ack_work);
}

/*
 * Whether the event queue has room for @code. The last slots are kept
 * for STOP_TEST and EXIT_TEST, so a listener that never drains its
 * events can still be stopped and told to exit.
 */
bool k2u_post_has_room(struct k2u_chan *c, unsigned int code)
{
	unsigned int need;

	lockdep_assert_held(&c->lock);
	if (code == K2U_CMD_EXIT_TEST)
		need = 1;
	else if (code == K2U_CMD_STOP_TEST)
		need = K2U_EVENT_QUEUE_RESERVE;
	else
		need = K2U_EVENT_QUEUE_RESERVE + 1;
	return K2U_EVENT_QUEUE_LEN - c->ring_count >= need;
}

/*
 * Queue a code for the listener. Callers check k2u_post_has_room() first,
 * before they change any state, so a full queue refuses a command whole.
 */
void k2u_post(struct k2u_chan *c, unsigned int code)
{
	unsigned int tail;

	lockdep_assert_held(&c->lock);
	if (WARN_ON_ONCE(!k2u_post_has_room(c, code)))
		return;
	tail = (c->ring_head + c->ring_count) % K2U_EVENT_QUEUE_LEN;
	c->ring[tail] = (struct k2u_event){
		.seq = c->next_seq++,
		.code = code,
		.round = code == K2U_CMD_MEMORY_READY ? (u32)c->round.id : 0,
	};
	WRITE_ONCE(c->ring_count, c->ring_count + 1);
	if (K2U_QUEUE_MODE) {
		/* The counter is a doorbell; the record carries the code. */
		k2u_eventfd_ring(c->efd.ctx, code);
		wake_up_interruptible(&c->readq);
	} else {
		k2u_post_next(c);
	}
}

/* A MEMORY_READY record is handed out: its round is shown. */
static void k2u_record_read(struct k2u_chan *c, const struct k2u_event *ev)
{
	unsigned long irqflags;

	if (ev->code != K2U_CMD_MEMORY_READY)
		return;
	spin_lock_irqsave(&c->ack_lock, irqflags);
	k2u_round_shown_locked(c, ev->round);
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
}

/* Records read() copies out per pass: 256 bytes on the stack. */
#define K2U_READ_BATCH 16

/*
 * Under c->lock: copy up to @max records from the ring's head into @out,
 * leaving them on the ring. The number copied; *@epoch names the ring.
 */
static unsigned int k2u_peek_events(struct k2u_chan *c, struct k2u_event *out,
				    unsigned int max, u64 *epoch)
{
	unsigned int n = min(c->ring_count, max);
	unsigned int i;

	lockdep_assert_held(&c->lock);
	for (i = 0; i < n; i++)
		out[i] = c->ring[(c->ring_head + i) % K2U_EVENT_QUEUE_LEN];
	*epoch = c->ring_epoch;
	return n;
}

/*
 * Under c->lock: @n records peeked from ring @epoch reached the reader:
 * take them off (they are still at the head: only readers, one at a time,
 * take records off, and emptying the ring changes its epoch) and mark
 * their rounds shown. If the ring was emptied meanwhile (the listener was
 * detached) they are gone already: the reader got them just in time.
 */
static void k2u_consume_events(struct k2u_chan *c, const struct k2u_event *ev,
			       unsigned int n, u64 epoch)
{
	unsigned int i;

	lockdep_assert_held(&c->lock);
	if (c->ring_epoch != epoch)
		return;
	for (i = 0; i < n; i++) {
		k2u_record_read(c, &ev[i]);
		c->ring_head = (c->ring_head + 1) % K2U_EVENT_QUEUE_LEN;
		WRITE_ONCE(c->ring_count, c->ring_count - 1);
	}
}

/* Whether there are records, or the ring was emptied since @epoch. */
static bool k2u_events_changed(struct k2u_chan *c, u64 epoch)
{
	return READ_ONCE(c->ring_count) || READ_ONCE(c->ring_epoch) != epoch;
}

/*
 * Wait for a record, a detach (the ring's epoch moves on from @epoch: the
 * caller's right to read is asked again) or the channel's end;
 * c->read_lock not held.
 */
static int k2u_wait_events(struct k2u_chan *c, bool nonblock, u64 epoch)
{
	int ret;

	if (k2u_events_changed(c, epoch))
		return 0;
	if (nonblock)
		return -EAGAIN;
	ret = wait_event_interruptible(c->readq, k2u_events_changed(c, epoch) ||
				       !READ_ONCE(c->live));
	if (ret)
		return ret;
	return k2u_events_changed(c, epoch) ? 0 : -ENODEV;
}

/*
 * Queue mode: hand out records, oldest first. They are copied to the
 * reader with no c->lock held (a stalled destination page must not hold
 * up the channel's rounds, acks and commands), through a small batch on
 * the stack; a record leaves the ring only once it reached the reader.
 * Readers of one channel take turns (c->read_lock); a non-blocking one
 * does not wait for its turn: EAGAIN.
 */
ssize_t k2u_read_events(struct k2u_chan *c, char __user *buf, size_t count,
			bool nonblock)
{
	struct k2u_event batch[K2U_READ_BATCH];
	unsigned int n, copied;
	size_t done = 0;
	unsigned long left;
	u64 epoch, seen;
	int ret;

	if (!K2U_QUEUE_MODE || count < sizeof(struct k2u_event))
		return -EINVAL;
	ret = mutex_lock_interruptible(&c->lock);
	if (ret)
		return ret;
	seen = c->ring_epoch;
	mutex_unlock(&c->lock);
again:
	for (;;) {
		ret = k2u_wait_events(c, nonblock, seen);
		if (ret)
			return ret;
		if (nonblock) {
			if (!mutex_trylock(&c->read_lock))
				return -EAGAIN;
		} else {
			ret = mutex_lock_interruptible(&c->read_lock);
			if (ret)
				return ret;
		}
		if (k2u_events_changed(c, seen))
			break;
		/* Another reader took them meanwhile. */
		mutex_unlock(&c->read_lock);
	}
	while (count - done >= sizeof(struct k2u_event)) {
		ret = mutex_lock_interruptible(&c->lock);
		if (ret)
			break;
		/*
		 * The caller may have stopped being the listener while it
		 * waited (root attached another process): asked again under
		 * c->lock, where the listener cannot change, before any
		 * record is taken.
		 */
		seen = c->ring_epoch;
		ret = k2u_may(c, "read");
		if (ret) {
			mutex_unlock(&c->lock);
			break;
		}
		n = k2u_peek_events(c, batch,
				    min_t(size_t, K2U_READ_BATCH,
					  (count - done) / sizeof(*batch)),
				    &epoch);
		mutex_unlock(&c->lock);
		if (!n)
			break;
		left = copy_to_user(buf + done, batch, n * sizeof(*batch));
		/* Whole records only: a torn one stays on the ring. */
		copied = (n * sizeof(*batch) - left) / sizeof(*batch);
		mutex_lock(&c->lock);
		k2u_consume_events(c, batch, copied, epoch);
		mutex_unlock(&c->lock);
		done += copied * sizeof(*batch);
		if (copied < n) {
			ret = -EFAULT;
			break;
		}
	}
	mutex_unlock(&c->read_lock);
	/* Emptied by a detach before the first record was taken: wait on. */
	if (!done && !ret)
		goto again;
	return done ? (ssize_t)done : ret;
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
 * Whether the caller may reach into @task's files: the steps of
 * __ptrace_may_access(task, PTRACE_MODE_ATTACH_REALCREDS), which
 * pidfd_getfd() asks and modules cannot call (not exported): same thread
 * group; the caller's real ids match all of the target's, or it has
 * CAP_SYS_PTRACE in the target's user namespace; a target that is not
 * dumpable needs CAP_SYS_PTRACE over it. The LSM hook (Yama, SELinux) is
 * not exported either and is not asked. Call with the target's
 * exec_update_lock held, as pidfd_getfd() does, so that an execve cannot
 * change what the answer is about before its files are taken.
 */
bool k2u_may_reach_files(struct task_struct *task)
{
	const struct cred *cred = current_cred(), *tcred;
	bool ok;

	if (same_thread_group(task, current))
		return true;
	rcu_read_lock();
	tcred = __task_cred(task);
	ok = (uid_eq(cred->uid, tcred->euid) && uid_eq(cred->uid, tcred->suid) &&
	      uid_eq(cred->uid, tcred->uid) && gid_eq(cred->gid, tcred->egid) &&
	      gid_eq(cred->gid, tcred->sgid) && gid_eq(cred->gid, tcred->gid)) ||
	     ns_capable(tcred->user_ns, CAP_SYS_PTRACE);
	rcu_read_unlock();
	if (!ok)
		return false;
	/* Dumpability after the credentials; pairs with commit_creds(). */
	smp_rmb();
	task_lock(task);
	rcu_read_lock();
	ok = k2u_dumpable_or_capable(task);
	rcu_read_unlock();
	task_unlock(task);
	return ok;
}

/*
 * Whether the attached listener process still exists. Its eventfds may
 * outlive it in a child it forked; the child got the files, not the role.
 */
bool k2u_listener_alive(struct k2u_chan *c)
{
	struct task_struct *task;
	bool alive;

	lockdep_assert_held(&c->lock);
	rcu_read_lock();
	task = pid_task(c->listener, PIDTYPE_TGID);
	/* Threads still running, even if the main thread has exited. */
	alive = task && atomic_read(&task->signal->live) > 0;
	rcu_read_unlock();
	return alive;
}

/* Detach a listener whose process has exited. True if one is attached. */
bool k2u_check_listener(struct k2u_chan *c)
{
	pid_t pid = c->pid;

	lockdep_assert_held(&c->lock);
	if (!c->attached)
		return false;
	if (k2u_listener_alive(c))
		return true;
	k2u_detach(c);
	pr_info("%slistener pid %d exited: detached\n", c->tag, pid);
	return false;
}

/*
 * References on both eventfds of a new listener, which must be two
 * different eventfds. 0 or an errno, with the reason in @why.
 */
static int k2u_get_eventfds(struct file *efd_file, struct file *efd2_file,
			    struct eventfd_ctx **efd, struct eventfd_ctx **efd2,
			    char *why, size_t why_len)
{
	*efd = eventfd_ctx_fileget(efd_file);
	if (IS_ERR(*efd)) {
		snprintf(why, why_len, "efd is not an eventfd");
		return PTR_ERR(*efd);
	}
	*efd2 = eventfd_ctx_fileget(efd2_file);
	if (IS_ERR(*efd2)) {
		snprintf(why, why_len, "efd2 is not an eventfd");
		eventfd_ctx_put(*efd);
		return PTR_ERR(*efd2);
	}
	if (*efd == *efd2) {
		snprintf(why, why_len, "efd and efd2 are the same eventfd");
		eventfd_ctx_put(*efd2);
		eventfd_ctx_put(*efd);
		return -EINVAL;
	}
	return 0;
}

/* Counter mode: a count already in efd would add up with a code. */
static int k2u_check_efd_empty(struct file *efd_file, pid_t nr, char *why,
			       size_t why_len)
{
	if (K2U_QUEUE_MODE || !(vfs_poll(efd_file, NULL) & EPOLLIN))
		return 0;
	snprintf(why, why_len,
		 "efd of pid %d has a pending count: pass a fresh eventfd", nr);
	return -EINVAL;
}

/*
 * The checks of a new listener's eventfds that need no channel (CREATE
 * runs them before it allocates one): both eventfds, not the same one,
 * and in counter mode an efd with nothing pending. 0 or an errno, with
 * the reason in @why.
 */
int k2u_check_eventfds(struct file *efd_file, struct file *efd2_file,
		       pid_t nr, char *why, size_t why_len)
{
	struct eventfd_ctx *efd, *efd2;
	int ret;

	ret = k2u_get_eventfds(efd_file, efd2_file, &efd, &efd2, why, why_len);
	if (ret)
		return ret;
	ret = k2u_check_efd_empty(efd_file, nr, why, why_len);
	eventfd_ctx_put(efd2);
	eventfd_ctx_put(efd);
	return ret;
}

/*
 * Attach @task's eventfds as the listener's. Every check comes before
 * anything changes, so a refusal (reason in @why) leaves the previous
 * listener attached as it was.
 */
int k2u_attach(struct k2u_chan *c, struct task_struct *task, struct file *efd_file,
	       struct file *efd2_file, char *why, size_t why_len)
{
	pid_t nr = task_tgid_vnr(task);
	struct eventfd_ctx *efd, *efd2;
	unsigned int pending;
	int ret;

	lockdep_assert_held(&c->lock);
	k2u_check_listener(c);
	ret = k2u_get_eventfds(efd_file, efd2_file, &efd, &efd2, why, why_len);
	if (ret)
		return ret;
	if (c->attached && !c->exit_sent && efd == c->efd.ctx &&
	    efd2 == c->efd2.ctx) {
		/* The same listener again: keep its events and its round. */
		put_pid(k2u_swap_pid(c, &c->listener,
				     get_task_pid(task, PIDTYPE_TGID)));
		c->pid = nr;
		pr_info("%slistener pid %d re-attached: %u pending events kept\n",
			c->tag, nr, k2u_undelivered(c));
		ret = 0;
		goto out_efd2;
	}
	pending = c->attached ? k2u_undelivered(c) : 0;
	if (pending) {
		snprintf(why, why_len,
			 "listener pid %d still has %u undelivered events",
			 c->pid, pending);
		ret = -EBUSY;
		goto out_efd2;
	}
	ret = k2u_check_efd_empty(efd_file, nr, why, why_len);
	if (ret)
		goto out_efd2;

	k2u_detach(c);
	clear_bit(K2U_EV_HUP, &c->events);
	clear_bit(K2U_EV_EFD_UNDRAINED, &c->events);
	ret = k2u_hook_add(&c->efd, efd_file, efd, k2u_efd_wake);
	if (ret)
		goto err_hook;
	ret = k2u_hook_add(&c->efd2, efd2_file, efd2, k2u_efd2_wake);
	if (ret) {
		k2u_hook_unhook(&c->efd, false);
		goto err_hook;
	}
	/* Detached above: no listener to put. */
	k2u_swap_pid(c, &c->listener, get_task_pid(task, PIDTYPE_TGID));
	c->pid = nr;
	c->attached = true;
	c->next_seq = 1;
	k2u_page_ack_attach(c);
	if (K2U_QUEUE_MODE && k2u_is_default(c))
		pr_info("queue mode: codes are records read from /dev/%s; a client that reads codes from efd (the 2017 KernUsr) cannot follow them on this kernel\n",
			K2U_DEVICE_NAME);
	return 0;

err_hook:
	snprintf(why, why_len, "cannot watch the eventfds (error %d)", ret);
	c->efd.ctx = NULL;
	c->efd2.ctx = NULL;
out_efd2:
	eventfd_ctx_put(efd2);
	eventfd_ctx_put(efd);
	return ret;
}

/* Forget the listener: stop the test, unhook, drop pending events. */
void k2u_detach(struct k2u_chan *c)
{
	unsigned long irqflags;
	struct pid *pid;

	lockdep_assert_held(&c->lock);
	if (!c->attached)
		return;
	k2u_round_stop(c);
	/* A producer's round an ack closed still counts (and wakes its waiter). */
	if (c->producer)
		k2u_round_collect(c);
	k2u_hook_remove(&c->efd, false);
	k2u_hook_remove(&c->efd2, true);
	pid = k2u_swap_pid(c, &c->listener, NULL);
	put_pid(pid);
	c->attached = false;
	c->mmap_sent = false;
	c->exit_sent = false;
	spin_lock_irqsave(&c->ack_lock, irqflags);
	c->in_flight = false;
	k2u_round_reset_locked(c);
	spin_unlock_irqrestore(&c->ack_lock, irqflags);
	c->ring_head = 0;
	WRITE_ONCE(c->ring_count, 0);
	/* A read() copying records out must not take them off again. */
	WRITE_ONCE(c->ring_epoch, c->ring_epoch + 1);
	/* Readers that wait ask again whether they may read. */
	wake_up_interruptible(&c->readq);
	/* A producer's round is abandoned: its waiter returns -ENOTCONN. */
	wake_up_all(&c->ack_wait);
}

/*
 * Under c->lock: store @pid in @slot (c->listener or c->owner) and return
 * what was there, for the caller to put. show_lock makes the store and a
 * listing's get_pid() of the old value exclusive, so the listing never
 * references a pid the caller is about to put for the last time.
 */
struct pid *k2u_swap_pid(struct k2u_chan *c, struct pid **slot,
			 struct pid *pid)
{
	struct pid *old;

	lockdep_assert_held(&c->lock);
	spin_lock(&c->show_lock);
	old = *slot;
	/* k2u_is_listener() and k2u_may() compare it without a lock. */
	WRITE_ONCE(*slot, pid);
	spin_unlock(&c->show_lock);
	return old;
}
