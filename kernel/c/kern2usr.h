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
 * so they never take k2u.lock: they record what happened (the round and the
 * counter-mode delivery state under ack_lock, bits in k2u.events) and queue
 * a work item that does the rest under the mutex.
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
	K2U_EV_HUP,		/* listener closed efd or efd2 */
	K2U_EV_EFD_UNDRAINED,	/* counter mode: a read left efd non-zero */
};

/*
 * The round in progress. Guarded by ack_lock, because the efd2 wake-up
 * callback decides which round an ack closes (and takes the end time)
 * right where the ack is consumed; writers also hold k2u.lock.
 */
struct k2u_round {
	u64 id;			/* the ready_seq value this round published */
	u64 start_ns;		/* publish time */
	u64 took_ns;		/* round trip, once closed */
	bool open;		/* published, neither closed nor abandoned */
	bool shown;		/* its MEMORY_READY reached the listener */
	bool closed;		/* closed by an ack, not yet counted */
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

	/* Guarded by ack_lock (taken inside an eventfd's wait-queue lock). */
	spinlock_t ack_lock;
	struct k2u_round round;
	u64 rounds_published;		/* round ids; the control page shows it */
	u64 acks_late;			/* acks that closed nothing, not yet logged */
	u64 ack_bad_value;		/* last efd2 value that is no multiple of 7 */
	bool in_flight;			/* counter mode: a code sits in efd */
	unsigned int in_flight_code;
	u32 in_flight_round;

	/* Everything below is guarded by lock. */
	struct mutex lock;
	bool live;			/* commands accepted: set up, not unloading */
	bool attached;
	struct pid *listener;		/* the listener process (thread group) */
	pid_t pid;			/* its number, for the log */
	struct k2u_hook efd;
	struct k2u_hook efd2;
	bool mmap_sent;
	bool exit_sent;
	bool testing;
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
__printf(4, 5) int k2u_refuse_op(struct k2u *k, const char *op, int err,
				 const char *fmt, ...);

/* chrdev.c */
int k2u_chrdev_create(struct k2u *k);
void k2u_chrdev_destroy(struct k2u *k);

/* link.c */
void k2u_link_init(struct k2u *k);
int k2u_attach(struct k2u *k, struct task_struct *task, struct file *efd_file,
	       struct file *efd2_file, char *why, size_t why_len);
void k2u_detach(struct k2u *k);
bool k2u_check_listener(struct k2u *k);
bool k2u_listener_alive(struct k2u *k);
struct task_struct *k2u_get_task(pid_t nr);
bool k2u_may_reach_files(struct task_struct *task);
struct file *k2u_fget_task(struct task_struct *task, unsigned int fd);
bool k2u_is_eventfd(struct file *file);
bool k2u_post_has_room(struct k2u *k, unsigned int code);
void k2u_post(struct k2u *k, unsigned int code);
ssize_t k2u_read_events(struct k2u *k, char __user *buf, size_t count,
			bool nonblock);

/* round.c */
void k2u_round_init(struct k2u *k);
void k2u_round_start(struct k2u *k);
void k2u_round_stop(struct k2u *k);
u64 k2u_round_average(struct k2u *k);
void k2u_round_collect(struct k2u *k);
void k2u_round_efd2_locked(struct k2u *k, u64 value);
int k2u_round_ack_ioctl(struct k2u *k, bool by_id, u32 id);
void k2u_round_shown_locked(struct k2u *k, u32 id);
void k2u_round_reset_locked(struct k2u *k);

#endif /* _KERN2USR_H */
