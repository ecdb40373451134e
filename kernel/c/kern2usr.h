/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kern2usr: internal interfaces between the parts of the C module.
 *
 * main.c   module init/exit and the sysfs parameters (commands)
 * chrdev.c the character device: mmap, read (event records), ioctl
 * link.c   the listener's eventfds: attach, detach, event delivery, acks
 * round.c  the periodic test rounds and their timing
 *
 * Locking: k2u.lock (a mutex) guards everything below it in struct k2u.
 * The eventfd wake-up callbacks run under the eventfd's wait-queue spinlock,
 * so they never take k2u.lock: they record what happened (ack_lock, bits in
 * k2u.events) and queue a work item that does the rest under the mutex.
 * Lock order: the module's param lock (held by sysfs parameter callbacks),
 * then k2u.lock, then an eventfd's wait-queue lock, then ack_lock.
 */
#ifndef _KERN2USR_H
#define _KERN2USR_H

#include <linux/cdev.h>
#include <linux/eventfd.h>
#include <linux/hrtimer.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "kern2usr_abi.h"
#include "compat.h"

#define K2U_LAST_ERROR_LEN 160

/* Round-trip times of the current test. */
struct k2u_stats {
	u64 count;
	u64 total;
	u64 min;
	u64 max;
	u64 hist[K2U_HIST_BUCKETS];
};

/* A wait-queue entry hooked on one of the listener's eventfds. */
struct k2u_hook {
	wait_queue_entry_t wait;
	poll_table pt;
	wait_queue_head_t *wqh;
	struct eventfd_ctx *ctx;
};

/* Bits in k2u.events, set by the wake-up callbacks. */
enum k2u_event_bits {
	K2U_EV_EFD_READ,	/* listener read efd: the posted code was consumed */
	K2U_EV_HUP,		/* listener closed efd or efd2 */
};

struct k2u {
	/* Set once at init, read-only afterwards. */
	void *buffer;
	size_t buffer_size;
	struct k2u_ctrl *ctrl;		/* the control page, shared with userspace */
	struct workqueue_struct *wq;
	dev_t devt;
	struct cdev cdev;
	struct class *class;
	struct device *device;
	struct work_struct round_work;
	struct work_struct ack_work;
	struct work_struct post_work;
	struct work_struct hup_work;
	struct hrtimer timer;
	wait_queue_head_t readq;	/* readers of event records */
	unsigned long events;		/* enum k2u_event_bits */

	/* Written by the efd2 callback, consumed by ack_work. */
	spinlock_t ack_lock;
	u64 ack_value;
	u64 ack_time_ns;

	/* Everything below is guarded by lock. */
	struct mutex lock;
	bool live;			/* commands accepted: set up, not unloading */
	bool attached;
	pid_t pid;
	struct k2u_hook efd;
	struct k2u_hook efd2;
	bool mmap_sent;
	bool exit_sent;
	bool testing;
	bool in_flight;			/* counter mode: a code sits in efd */
	u64 next_seq;

	/* Pending events: counter mode, not yet posted; queue mode, not yet read. */
	struct k2u_event *ring;
	unsigned int ring_head;
	unsigned int ring_count;	/* also read locklessly by poll() */

	/* The current test. */
	bool buffer_filled;
	bool calculation_done;
	bool log_round;			/* this round's lines are not rate-limited */
	bool back_to_back;		/* next round right after the ack */
	bool adaptive;			/* no doorbell while the listener spins */
	u64 round_start_ns;
	struct k2u_stats stats;

	char last_error[K2U_LAST_ERROR_LEN];
};

extern struct k2u k2u_dev;

/* stats.c */
void k2u_stats_reset(struct k2u_stats *st);
void k2u_stats_add(struct k2u_stats *st, u64 ns);
int k2u_stats_show(const struct k2u_stats *st, char *buf);
int k2u_histogram_show(const struct k2u_stats *st, char *buf);

/* main.c */
const char *k2u_cmd_name(unsigned int cmd);
u64 k2u_period_ns(void);
void k2u_note_registered(pid_t pid, int efd, int efd2);

/* chrdev.c */
int k2u_chrdev_create(struct k2u *k);
void k2u_chrdev_destroy(struct k2u *k);

/* link.c */
void k2u_link_init(struct k2u *k);
int k2u_attach(struct k2u *k, pid_t pid, struct file *efd_file,
	       struct file *efd2_file);
void k2u_detach(struct k2u *k);
struct task_struct *k2u_get_task(pid_t nr);
struct file *k2u_fget_task(struct task_struct *task, unsigned int fd);
bool k2u_is_eventfd(struct file *file);
bool k2u_post_has_room(struct k2u *k);
void k2u_post(struct k2u *k, unsigned int code);
ssize_t k2u_read_events(struct k2u *k, char __user *buf, size_t count,
			bool nonblock);

/* round.c */
void k2u_round_init(struct k2u *k);
void k2u_round_start(struct k2u *k);
void k2u_round_stop(struct k2u *k);
u64 k2u_round_average(struct k2u *k);
int k2u_round_ack(struct k2u *k, u64 value, u64 now_ns);
void k2u_round_signalled(struct k2u *k);

#endif /* _KERN2USR_H */
