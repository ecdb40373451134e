// SPDX-License-Identifier: GPL-2.0-only
/*
 * k2u_sample_producer: a module that publishes through kern2usr's producer
 * API. Every period it fills the channel's buffer with round @seq's pattern
 * (seq little endian in bytes 0-7, then (seq + i) % 251, as
 * sample_producer_byte() in abi/src/defs.rs), publishes
 * size - (seq % 4) * 8 bytes and waits for the listener's ack. @seq only
 * advances on a publish that succeeded, so a listener sees 1, 2, 3, ...
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/string.h>
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

static int __init sample_init(void)
{
	if (size < 4096 || size % PAGE_SIZE || period_ms < 1) {
		pr_err("size must be a page multiple >= 4096 and period_ms >= 1\n");
		return -EINVAL;
	}
	channel = k2u_producer_create(name, size);
	if (IS_ERR(channel)) {
		pr_err("could not create channel %s: %ld\n", name,
		       PTR_ERR(channel));
		return PTR_ERR(channel);
	}
	INIT_DELAYED_WORK(&tick, sample_tick);
	schedule_delayed_work(&tick, msecs_to_jiffies(period_ms));
	pr_info("channel %s: %u bytes, a round every %u ms\n", name, size,
		period_ms);
	return 0;
}

static void __exit sample_exit(void)
{
	cancel_delayed_work_sync(&tick);
	k2u_producer_destroy(channel);
	pr_info("channel %s destroyed after %lu rounds (%lu acked)\n", name,
		published, acked);
}

module_init(sample_init);
module_exit(sample_exit);
MODULE_DESCRIPTION("kern2usr sample producer: a counter-stamped pattern every period");
MODULE_LICENSE("GPL");
