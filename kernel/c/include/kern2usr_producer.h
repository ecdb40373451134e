/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kern2usr producer API: a kernel module publishes its own data to a
 * userspace listener through a named kern2usr channel.
 *
 * The producer owns the channel and fills its buffer; a listener attaches
 * from userspace with K2U_IOC_CREATE and K2U_CREATE_ATTACH and the name,
 * maps the buffer and acknowledges each round. One round is outstanding at
 * a time: between k2u_producer_publish() and the listener's ack the
 * buffer is the listener's and the producer must not write it.
 *
 * Typical use, from process context:
 *
 *	ch = k2u_producer_create("mydrv", SZ_64K);	// root attaches
 *	...
 *	buf = k2u_producer_reserve(ch, &size);	// ERR_PTR(-EBUSY) while
 *	if (!IS_ERR(buf)) {			// a round is outstanding
 *		len = fill(buf, size);
 *		round = k2u_producer_publish(ch, len);
 *		if (round > 0)
 *			k2u_producer_wait_ack(ch, round, HZ);
 *	}
 *	...
 *	k2u_producer_destroy(ch);
 *
 * A channel holds a reference on kern2usr, so kern2usr cannot be unloaded
 * while a producer has one; destroy every channel in the producer's exit.
 */
#ifndef _KERN2USR_PRODUCER_H
#define _KERN2USR_PRODUCER_H

#include <linux/types.h>
#include <linux/uidgid.h>

struct k2u_channel;

/*
 * Who may attach a listener to a producer's channel, besides a process
 * with CAP_SYS_ADMIN (always allowed): bits of k2u_producer_opts.attach.
 */
#define K2U_ATTACH_UID		0x1	/* euid is opts.uid */
#define K2U_ATTACH_GID		0x2	/* opts.gid is egid or supplementary */
#define K2U_ATTACH_ANYONE	0x4	/* anyone who can open the device */
#define K2U_ATTACH_FLAGS	(K2U_ATTACH_UID | K2U_ATTACH_GID | \
				 K2U_ATTACH_ANYONE)

/**
 * struct k2u_producer_opts - options of k2u_producer_create_opts()
 * @attach: K2U_ATTACH_* bits; 0 (the default): CAP_SYS_ADMIN only
 * @uid: with K2U_ATTACH_UID, a valid uid (e.g. make_kuid(&init_user_ns, n))
 * @gid: with K2U_ATTACH_GID, a valid gid
 *
 * The rule is checked against the attaching process' credentials when it
 * attaches; a refusal is EPERM with one rate-limited log line.
 */
struct k2u_producer_opts {
	unsigned int attach;
	kuid_t uid;
	kgid_t gid;
};

/**
 * k2u_producer_create_opts() - create a named channel that the caller feeds
 * @name: 1 to K2U_CHANNEL_NAME_LEN - 1 bytes of [A-Za-z0-9_.-], unique
 *        among producer channels
 * @size: buffer size in bytes, a multiple of PAGE_SIZE, from one page to
 *        K2U_MAX_BUFFER_SIZE
 * @opts: who may attach; NULL for the defaults (CAP_SYS_ADMIN only)
 *
 * The buffer is zeroed. The channel is listed (owner 0) until a listener
 * attaches. At most K2U_MAX_PRODUCERS (8, kern2usr_abi.h) producer
 * channels exist at once; a place is free again at destroy, and
 * userspace's channels (max_channels, max_channel_memory) cannot take
 * their places.
 *
 * Context: process context, may sleep.
 * Return: the channel, or ERR_PTR(-EINVAL) for a bad name, size or
 * @opts, ERR_PTR(-EEXIST) if the name is taken, ERR_PTR(-ENOSPC) when
 * K2U_MAX_PRODUCERS producer channels exist, ERR_PTR(-ENOMEM).
 */
struct k2u_channel *k2u_producer_create_opts(const char *name, size_t size,
					     const struct k2u_producer_opts *opts);

/**
 * k2u_producer_create() - k2u_producer_create_opts() with the defaults
 * @name: as for k2u_producer_create_opts()
 * @size: as for k2u_producer_create_opts()
 *
 * Only processes with CAP_SYS_ADMIN may attach.
 */
struct k2u_channel *k2u_producer_create(const char *name, size_t size);

/**
 * k2u_producer_destroy() - end a producer's channel
 * @ch: a channel from k2u_producer_create()
 *
 * The channel is unlisted; an attached listener receives EXIT_TEST and
 * keeps its file until it closes it; an outstanding round is abandoned and
 * its waiters return -ENOTCONN; its producer place is free at once, its
 * id once the listener's file is released too. No other call on @ch may
 * run beside this one or start after it (k2u_producer_wait_ack() is the
 * exception: a waiter already asleep returns -ENOTCONN).
 *
 * Context: process context, may sleep.
 */
void k2u_producer_destroy(struct k2u_channel *ch);

/**
 * k2u_producer_reserve() - the buffer, when the producer may write it
 * @ch: the channel
 * @size: set to the buffer size
 *
 * Context: any context but hard irq.
 * Return: the buffer (vmapped kernel memory), or ERR_PTR(-EBUSY) while a
 * round is outstanding: the buffer is lent to the listener from the publish
 * to the ack (or the listener's detach), and nothing may write it then.
 */
void *k2u_producer_reserve(struct k2u_channel *ch, size_t *size);

/**
 * k2u_producer_publish() - hand @len bytes of the buffer to the listener
 * @ch: the channel
 * @len: bytes of data, 1 to the buffer size (the listener reads it as
 *       k2u_ctrl.ready_len)
 *
 * Opens a round: k2u_ctrl.ready_len and .ready_seq are updated, a
 * MEMORY_READY event carrying the round's id is queued and the doorbell
 * rung (unless the listener spins, in adaptive mode).
 *
 * Context: process context, may sleep.
 * Return: the round's id (1 and up), or -EINVAL for a bad @len, -ENOTCONN
 * when no listener is attached, -EBUSY while a round is outstanding,
 * -EAGAIN when the listener's event queue is full.
 */
s64 k2u_producer_publish(struct k2u_channel *ch, size_t len);

/**
 * k2u_producer_wait_ack() - wait for the listener's ack of a round
 * @ch: the channel
 * @round: an id k2u_producer_publish() returned
 * @timeout: most jiffies to wait
 *
 * Context: process context, sleeps (interruptibly).
 * Return: 0 once @round is acked (also if it was before the call),
 * -ETIMEDOUT, -ENOTCONN if the listener left and the round was abandoned,
 * -ESTALE if @round is not the channel's last round, -ERESTARTSYS on a
 * signal.
 */
int k2u_producer_wait_ack(struct k2u_channel *ch, u64 round,
			  unsigned long timeout);

#endif /* _KERN2USR_PRODUCER_H */
