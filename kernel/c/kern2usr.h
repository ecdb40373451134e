/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kern2usr: internal interfaces between the parts of the C module.
 *
 * main.c    module init/exit and the sysfs parameters (commands)
 * chrdev.c  the character device: mmap, read (event records), ioctl
 * channel.c channels: create, look up, release, list
 * link.c    the listener's eventfds: attach, detach, event delivery, acks
 * round.c   the periodic test rounds and their timing
 * ring.c    ring channels, acks through the control page, ack polling
 *
 * struct k2u_device is the device (cdev, class, workqueue) and the list of
 * channels with their limits; struct k2u_chan is one channel. The default
 * channel (id 0) is part of the device and lives as long as the module; a
 * created channel is allocated at K2U_IOC_CREATE, referenced by its file
 * (private_data) and freed at the file's release.
 *
 * Locking: k2u_chan.lock (a mutex) guards everything below it in struct
 * k2u_chan. Nothing copies to or from userspace while holding it (a
 * destination page may stall for as long as its owner likes: userfaultfd,
 * FUSE): READ_BUFFER and read() copy through kernel memory, and the
 * listing reads snapshots under leaf spinlocks (k2u_stats.lock, show_lock).
 * The eventfd wake-up callbacks run under the eventfd's
 * wait-queue spinlock, so they never take the mutex: they record what
 * happened (the round and the counter-mode delivery state under ack_lock,
 * bits in events) and queue a work item that does the rest under the mutex.
 * k2u_device.chan_lock guards the list of channels, their count and memory.
 * Lock order: the module's param lock (held by sysfs parameter callbacks),
 * then chan_lock, then a channel's read_lock, then its lock, then an
 * eventfd's wait-queue lock, then ack_lock. k2u_stats.lock and show_lock
 * are leaves: nothing is taken inside them.
 */
#ifndef _KERN2USR_H
#define _KERN2USR_H

#include <linux/cdev.h>
#include <linux/eventfd.h>
#include <linux/hrtimer.h>
#include <linux/idr.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/spinlock.h>
#include <linux/stddef.h>
#include <linux/uidgid.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "kern2usr_abi.h"
#include "compat.h"

#define K2U_LAST_ERROR_LEN 160

/*
 * Round-trip times of the current test. Writers hold k2u_chan.lock and,
 * around each change, @lock; readers that must not wait for the channel
 * (the `channels` listing, CHANNEL_STATS, the `stats` parameters) take
 * @lock alone, which no one holds for longer than a pass over @hist.
 */
struct k2u_stats {
	spinlock_t lock;

	struct_group(fig,
		u64 count;
		u64 total;
		u64 min;
		u64 max;
		u64 hist[K2U_HIST_BUCKETS];
	);
};

/* A wait-queue entry hooked on one of the listener's eventfds. */
struct k2u_hook {
	wait_queue_entry_t wait;
	poll_table pt;
	wait_queue_head_t *wqh;
	struct eventfd_ctx *ctx;
};

/* Bits in k2u_chan.events, set by the wake-up callbacks. */
enum k2u_event_bits {
	K2U_EV_HUP,		/* listener closed efd or efd2 */
	K2U_EV_EFD_UNDRAINED,	/* counter mode: a read left efd non-zero */
};

/*
 * The round in progress. Guarded by ack_lock, because the efd2 wake-up
 * callback decides which round an ack closes (and takes the end time)
 * right where the ack is consumed; writers also hold k2u_chan.lock.
 */
struct k2u_round {
	u64 id;			/* the ready_seq value this round published */
	u64 start_ns;		/* publish time */
	u64 took_ns;		/* round trip, once closed */
	bool open;		/* published, neither closed nor abandoned */
	bool shown;		/* its MEMORY_READY reached the listener */
	bool closed;		/* closed by an ack, not yet counted */
	/*
	 * Published and not acked: the listener may hold a view of the
	 * buffer, so nothing fills it. Outlives STOP's abandon (and START);
	 * ended by the round's ack or the listener's detach.
	 */
	bool lent;
	bool returned;		/* an ack ended an abandoned round's lend */
};

/* A ring slot's round, kept in kernel memory (ring.c; under ack_lock). */
struct k2u_ring_stamp {
	u64 start_ns;		/* its publish time */
	u64 took_ns;		/* its round trip, once its ack is taken */
};

/* Prefix of a created channel's log lines: "channel <id>: ". */
#define K2U_TAG_LEN 24

struct k2u_chan {
	/* Set once at init (or CREATE), read-only afterwards. */
	u32 id;				/* 0: the default channel */
	char name[K2U_CHANNEL_NAME_LEN];
	char tag[K2U_TAG_LEN];		/* "" for the default channel */
	struct pid *owner;		/* creator's thread group; NULL: default */
	struct kref ref;		/* the file's, later a producer's */
	struct list_head node;		/* in k2u_device.channels */
	u64 period_ns;			/* created channels' period */
	void *buffer;
	size_t buffer_size;
	struct page **pages;		/* created channels: the buffer's pages */
	unsigned int npages;
	struct page *ctrl_page;		/* created channels: the control page */
	struct k2u_ctrl *ctrl;		/* the control page, shared with userspace */
	struct workqueue_struct *wq;
	struct workqueue_struct *poll_wq;	/* unbound: poll_work's */
	struct work_struct round_work;
	struct work_struct ack_work;
	struct work_struct post_work;
	struct work_struct hup_work;
	struct work_struct poll_work;	/* ring.c: polls ack_seq (ack_poll_us) */
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

	/*
	 * Acks through the control page and rings (ring.c), guarded by
	 * ack_lock. ring_slots and ring_stamps are set once at CREATE.
	 */
	u32 ring_slots;			/* 0: not a ring */
	struct k2u_ring_stamp *ring_stamps;
	u64 ack_taken;			/* the last ack_seq value taken */
	u64 ring_counted;		/* rounds up to here are counted */
	u64 ring_abandon;		/* rounds up to here: before a STOP */
	u64 ack_oor;			/* out-of-range ack_seq to log */
	u64 ack_oor_acked;		/* ack_taken when it was seen */
	u64 ack_oor_published;		/* rounds_published then */
	u64 ack_oor_last;		/* the last one seen: said once */
	bool ack_oor_seen;		/* ack_oor_last is valid */
	bool ack_oor_pending;
	bool page_acks;			/* ack_seq changed since the attach */

	/*
	 * Serialises read() of event records: one reader at a time takes
	 * records off the ring, copying them out without c->lock held.
	 */
	struct mutex read_lock;
	/*
	 * Writers of owner and listener hold lock and, around the store,
	 * show_lock; the listing takes show_lock alone to reference them.
	 */
	spinlock_t show_lock;

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
	u64 ring_epoch;			/* +1 each time the ring is emptied whole */

	/* The current test. */
	bool buffer_filled;
	bool calculation_done;
	bool log_round;			/* this round's lines are not rate-limited */
	bool back_to_back;		/* next round right after the ack */
	bool adaptive;			/* no doorbell while the listener spins */
	bool lend_logged;		/* "still lent" said for this round */
	bool ring_waiting;		/* the ring is full: ring_full counted */
	struct k2u_stats stats;

	char last_error[K2U_LAST_ERROR_LEN];

	/* A kernel producer's channel (producer.c); guarded by lock. */
	bool producer;			/* fed by a producer, not by rounds */
	unsigned int attach;		/* K2U_ATTACH_*: who may attach (set once) */
	kuid_t attach_uid;		/* with K2U_ATTACH_UID (set once) */
	kgid_t attach_gid;		/* with K2U_ATTACH_GID (set once) */
	struct file *listener_filp;	/* the attached listener's file */
	wait_queue_head_t ack_wait;	/* k2u_producer_wait_ack() sleeps here */
	u64 acked_id;			/* last round an ack closed (ack_lock) */
};

struct k2u_device {
	/* Set once at init, read-only afterwards. */
	struct workqueue_struct *wq;
	/*
	 * Unbound: a poll of ack_seq must not spin on the CPU of the listener
	 * whose ack it waits for (a per-CPU work queued from efd2's wake-up
	 * would).
	 */
	struct workqueue_struct *poll_wq;
	dev_t devt;
	struct cdev cdev;
	struct class *class;
	struct device *device;

	/* Guarded by chan_lock. */
	struct mutex chan_lock;
	struct list_head channels;	/* created channels, by id */
	struct ida ids;
	unsigned int nr_channels;	/* users' channels (max_channels) */
	u64 memory;			/* their buffer bytes */
	unsigned int nr_producers;	/* producers' (K2U_MAX_PRODUCERS) */

	/* Parameters, read with READ_ONCE. */
	unsigned int max_channels;
	u64 max_memory;

	struct k2u_chan def;		/* the default channel, id 0 */
};

extern struct k2u_device k2u_dev;

static inline bool k2u_is_default(const struct k2u_chan *c)
{
	return !c->id;
}

/* Bytes of the buffer mapping: the whole ring for a ring channel. */
static inline size_t k2u_chan_map_size(const struct k2u_chan *c)
{
	return c->ring_slots ? c->buffer_size * c->ring_slots : c->buffer_size;
}

/* The channel a file is, or NULL: its calls reach the default channel. */
static inline struct k2u_chan *k2u_file_chan(struct file *filp)
{
	/* Acquire: pairs with CREATE's release, the channel is complete. */
	return smp_load_acquire(&filp->private_data);
}

/* stats.c */
void k2u_stats_init(struct k2u_stats *st);
void k2u_stats_reset(struct k2u_stats *st);
void k2u_stats_add(struct k2u_stats *st, u64 ns);
int k2u_stats_show(struct k2u_stats *st, char *buf);
int k2u_histogram_show(struct k2u_stats *st, char *buf);

/* stats.c (continued) */
void k2u_stats_get(struct k2u_stats *st, struct k2u_channel_stats *out);

/* main.c */
const char *k2u_cmd_name(unsigned int cmd);
u64 k2u_period_ns(struct k2u_chan *c);
void k2u_note_registered(pid_t pid, int efd, int efd2);
__printf(4, 5) int k2u_refuse_op(struct k2u_chan *c, const char *op, int err,
				 const char *fmt, ...);
int k2u_channel_cmd(struct k2u_chan *c, u32 cmd);

/* chrdev.c */
int k2u_chrdev_create(struct k2u_device *d);
void k2u_chrdev_destroy(struct k2u_device *d);
int k2u_may(struct k2u_chan *c, const char *op);

/* channel.c */
struct k2u_chan *k2u_chan_alloc(size_t size);
void k2u_chan_free(struct kref *ref);
int k2u_check_name(const char *name);
void k2u_chan_insert(struct k2u_device *d, struct k2u_chan *c);
int k2u_chan_limits(struct k2u_device *d, u64 size);
void k2u_chan_init(struct k2u_chan *c);
long k2u_chan_create_ioctl(struct file *filp, void __user *arg);
void k2u_chan_release(struct k2u_chan *c);
int k2u_channels_show(char *buf);

/* producer.c */
int k2u_producer_attach(struct k2u_device *d, struct file *filp,
			struct k2u_create *cr,
			struct file *efd, struct file *efd2);
void k2u_producer_listener_release(struct k2u_chan *c, struct file *filp);

/* link.c */
void k2u_link_init(struct k2u_chan *c);
int k2u_attach(struct k2u_chan *c, struct task_struct *task,
	       struct file *efd_file, struct file *efd2_file, char *why,
	       size_t why_len);
int k2u_check_eventfds(struct file *efd_file, struct file *efd2_file,
		       pid_t nr, char *why, size_t why_len);
void k2u_detach(struct k2u_chan *c);
struct pid *k2u_swap_pid(struct k2u_chan *c, struct pid **slot,
			 struct pid *pid);
bool k2u_check_listener(struct k2u_chan *c);
bool k2u_listener_alive(struct k2u_chan *c);
struct task_struct *k2u_get_task(pid_t nr);
bool k2u_may_reach_files(struct task_struct *task);
struct file *k2u_fget_task(struct task_struct *task, unsigned int fd);
bool k2u_is_eventfd(struct file *file);
bool k2u_post_has_room(struct k2u_chan *c, unsigned int code);
void k2u_post(struct k2u_chan *c, unsigned int code);
ssize_t k2u_read_events(struct k2u_chan *c, char __user *buf, size_t count,
			bool nonblock);

/* round.c */
void k2u_fill_periodic(u8 *p, size_t len, unsigned int first,
		       unsigned int period);
void k2u_round_init(struct k2u_chan *c);
void k2u_round_cancel_sync(struct k2u_chan *c);
void k2u_round_start(struct k2u_chan *c);
void k2u_round_stop(struct k2u_chan *c);
u64 k2u_round_average(struct k2u_chan *c);
void k2u_round_collect(struct k2u_chan *c);
void k2u_round_efd2_locked(struct k2u_chan *c, u64 value);
int k2u_round_ack_ioctl(struct k2u_chan *c, bool by_id, u32 id);
void k2u_round_shown_locked(struct k2u_chan *c, u32 id);
void k2u_round_reset_locked(struct k2u_chan *c);
s64 k2u_round_publish(struct k2u_chan *c, size_t len);
void k2u_round_page_ack_locked(struct k2u_chan *c, u64 v);

/* ring.c */
void k2u_ring_init(struct k2u_chan *c);
int k2u_ring_setup(struct k2u_chan *c, u32 slots, size_t slot_size);
int k2u_ring_check_create(const struct k2u_create *cr);
void k2u_page_ack_attach(struct k2u_chan *c);
void k2u_page_ack_reset_locked(struct k2u_chan *c);
bool k2u_page_ack_locked(struct k2u_chan *c);
void k2u_page_ack_report(struct k2u_chan *c);
void k2u_ack_poll_kick(struct k2u_chan *c);
void k2u_ring_work(struct k2u_chan *c);
void k2u_ring_collect(struct k2u_chan *c);
void k2u_ring_stopped(struct k2u_chan *c);
int k2u_ring_refuse(struct k2u_chan *c, const char *op);

#endif /* _KERN2USR_H */
