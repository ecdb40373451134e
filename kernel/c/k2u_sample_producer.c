// SPDX-License-Identifier: GPL-2.0-only
/*
 * k2u_sample_producer: a module that publishes through kern2usr's producer
 * API. Every period it fills the channel's buffer with round @seq's pattern
 * (seq little endian in bytes 0-7, then (seq + i) % 251, as
 * sample_producer_byte() in abi/src/defs.rs), publishes
 * size - (seq % 4) * 8 bytes and waits for the listener's ack. @seq only
 * advances on a publish that succeeded, so a listener sees 1, 2, 3, ...
 *
 * Attaching is for CAP_SYS_ADMIN unless attach_uid, attach_gid or
 * attach_anyone say otherwise: they fill the struct k2u_producer_opts
 * that k2u_producer_create_opts() takes.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/string.h>
#include <linux/uidgid.h>
#include <linux/user_namespace.h>
#include <linux/sysfs.h>
#include <linux/workqueue.h>

#include "include/kern2usr_producer.h"

static char *name = "sample";
module_param(name, charp, 0444);
MODULE_PARM_DESC(name, "Channel name (default: sample)");

static unsigned int size = 65536;
module_param(size, uint, 0444);
MODULE_PARM_DESC(size, "Buffer size in bytes, a page multiple (default: 65536)");

static unsigned int period_ms = 20;
module_param(period_ms, uint, 0444);
MODULE_PARM_DESC(period_ms, "Milliseconds between rounds (default: 20)");

/*
 * Who may attach besides CAP_SYS_ADMIN (struct k2u_producer_opts): by
 * default no one else, as k2u_producer_create() has it.
 */
static int attach_uid = -1;
module_param(attach_uid, int, 0444);
MODULE_PARM_DESC(attach_uid, "Also let this uid attach (default: -1, none)");

static int attach_gid = -1;
module_param(attach_gid, int, 0444);
MODULE_PARM_DESC(attach_gid, "Also let this group attach (default: -1, none)");

static bool attach_anyone;
module_param(attach_anyone, bool, 0444);
MODULE_PARM_DESC(attach_anyone, "Let anyone who can open /dev/kern2usr attach (default: 0)");

/* Tests of the producers' own cap: channels that are created and stay idle. */
#define SAMPLE_MAX_EXTRA 16
static unsigned int extra_channels;
module_param(extra_channels, uint, 0444);
MODULE_PARM_DESC(extra_channels, "Idle channels <name>.1, <name>.2, ... to create too (default: 0, at most 16)");

/* Read-only counters for tests: rounds published and rounds acked. */
static unsigned long published;
static unsigned long acked;

/* The tick writes them while sysfs reads them: a marked load. */
static int sample_counter_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%lu\n", READ_ONCE(*(unsigned long *)kp->arg));
}

static const struct kernel_param_ops sample_counter_ops = {
	.get = sample_counter_get,
};

module_param_cb(published, &sample_counter_ops, &published, 0444);
module_param_cb(acked, &sample_counter_ops, &acked, 0444);

static struct k2u_channel *channel;
static struct k2u_channel *extra[SAMPLE_MAX_EXTRA];
static struct delayed_work tick;
static u64 seq = 1;

static void sample_fill(u8 *buf, size_t len)
{
	size_t i;

	/* The buffer is page aligned. */
	*(__le64 *)buf = cpu_to_le64(seq);
	for (i = 8; i < len; i++)
		buf[i] = (u8)((seq % 251 + i % 251) % 251);
}

static void sample_tick(struct work_struct *work)
{
	size_t cap, len;
	void *buf;
	s64 round;

	buf = k2u_producer_reserve(channel, &cap);
	if (IS_ERR(buf))
		goto again;
	len = cap - (seq % 4) * 8;
	sample_fill(buf, len);
	round = k2u_producer_publish(channel, len);
	if (round <= 0)
		goto again;
	WRITE_ONCE(published, published + 1);
	seq++;
	if (!k2u_producer_wait_ack(channel, round, msecs_to_jiffies(1000)))
		WRITE_ONCE(acked, acked + 1);
again:
	schedule_delayed_work(&tick, msecs_to_jiffies(period_ms));
}

static void sample_destroy_extra(void)
{
	unsigned int i;

	for (i = 0; i < SAMPLE_MAX_EXTRA; i++) {
		if (extra[i])
			k2u_producer_destroy(extra[i]);
		extra[i] = NULL;
	}
}

/* The idle channels; the first refusal undoes them all. */
static int sample_create_extra(const struct k2u_producer_opts *opts)
{
	char extra_name[16];
	unsigned int i;

	for (i = 0; i < extra_channels; i++) {
		snprintf(extra_name, sizeof(extra_name), "%.10s.%u", name, i + 1);
		extra[i] = k2u_producer_create_opts(extra_name, PAGE_SIZE, opts);
		if (IS_ERR(extra[i])) {
			int ret = PTR_ERR(extra[i]);

			pr_err("could not create channel %s: %d\n", extra_name,
			       ret);
			extra[i] = NULL;
			sample_destroy_extra();
			return ret;
		}
	}
	return 0;
}

static int __init sample_init(void)
{
	struct k2u_producer_opts opts = {};
	int ret;

	if (size < 4096 || size % PAGE_SIZE || period_ms < 1 ||
	    extra_channels > SAMPLE_MAX_EXTRA) {
		pr_err("size must be a page multiple >= 4096, period_ms >= 1, extra_channels <= %d\n",
		       SAMPLE_MAX_EXTRA);
		return -EINVAL;
	}
	/* The ids are the initial namespace's, as insmod's parameters are. */
	if (attach_uid >= 0) {
		opts.attach |= K2U_ATTACH_UID;
		opts.uid = make_kuid(&init_user_ns, attach_uid);
	}
	if (attach_gid >= 0) {
		opts.attach |= K2U_ATTACH_GID;
		opts.gid = make_kgid(&init_user_ns, attach_gid);
	}
	if (attach_anyone)
		opts.attach |= K2U_ATTACH_ANYONE;
	channel = k2u_producer_create_opts(name, size, &opts);
	if (IS_ERR(channel)) {
		pr_err("could not create channel %s: %ld\n", name,
		       PTR_ERR(channel));
		return PTR_ERR(channel);
	}
	ret = sample_create_extra(&opts);
	if (ret) {
		k2u_producer_destroy(channel);
		return ret;
	}
	INIT_DELAYED_WORK(&tick, sample_tick);
	schedule_delayed_work(&tick, msecs_to_jiffies(period_ms));
	pr_info("channel %s: %u bytes, a round every %u ms, attach 0x%x\n",
		name, size, period_ms, opts.attach);
	return 0;
}

static void __exit sample_exit(void)
{
	cancel_delayed_work_sync(&tick);
	sample_destroy_extra();
	k2u_producer_destroy(channel);
	pr_info("channel %s destroyed after %lu rounds (%lu acked)\n", name,
		published, acked);
}

module_init(sample_init);
module_exit(sample_exit);
MODULE_DESCRIPTION("kern2usr sample producer: a counter-stamped pattern every period");
MODULE_LICENSE("GPL");
