// SPDX-License-Identifier: GPL-2.0-only
/*
 * k2u_bench_peers: the two kernel-to-user channels a driver author would
 * pick instead of kern2usr, driven the way `kern2usr bench` drives kern2usr
 * so that their round trips are measured the same way. For the benchmark
 * only: not part of kern2usr.ko, not packaged.
 *
 * Both peers send rounds back to back from a work item; a round is timed
 * from its publish (genlmsg_unicast, or the relay_flush that completes the
 * sub-buffer), with the data already in the message or the sub-buffer as
 * kern2usr's data is in its buffer before it publishes, to the moment the
 * module sees the listener's acknowledgment, into a histogram with
 * kern2usr's buckets (kern2usr_abi.h). Building the message or writing the
 * sub-buffer shows in rounds/s and in the CPU time per round. The data is the default channel's
 * pattern (K2U_PATTERN_BYTE), copied from a buffer filled once at load.
 *
 * netlink: generic netlink family "k2u_bench". K2UB_CMD_START (size,
 * rounds) from the listener's socket starts a run towards that socket;
 * each round is one K2UB_CMD_DATA message (nlmsg_new, genlmsg_put, the
 * sequence number, the data in K2UB_ATTR_CHUNK attributes of up to 32 KiB,
 * since nla_len is 16 bits) unicast to the listener's port. The listener
 * acknowledges with K2UB_CMD_ACK carrying the sequence: a netlink user
 * already has the socket open and the kernel side is already a genl
 * family, so the ack goes back the same way rather than through a second
 * mechanism such as an eventfd.
 *
 * relay: "relay SIZE ROUNDS" written to the control file opens a relay
 * channel with one global buffer (the file relay0 in this module's
 * debugfs directory) of K2UB_RELAY_SUBBUFS sub-buffers of SIZE plus a
 * page; "go" starts the rounds. Each round relay_write()s a header (magic,
 * sequence, length) and the data into a sub-buffer and relay_flush()es it,
 * which completes the sub-buffer and wakes pollers. The listener maps
 * relay0, polls, checks the data in place and writes the sequence to
 * relay_ack, which calls relay_subbufs_consumed() (what an mmap consumer
 * must do) and schedules the next round.
 *
 * debugfs (root only): control ("relay SIZE ROUNDS", "go", "abort",
 * "close"), relay_ack, relay0, state, and netlink_stats,
 * netlink_histogram, relay_stats, relay_histogram in the format of
 * kern2usr's stats and histogram parameters. One run at a time.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitops.h>
#include <linux/capability.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/relay.h>
#include <linux/seq_file.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <net/genetlink.h>
#include <net/netlink.h>

#include "kern2usr_abi.h"

/*
 * WQ_PERCPU came with 6.17 (and stable backports such as Debian's 6.12);
 * where it exists, a workqueue without it or WQ_UNBOUND warns. Kbuild
 * looks for it in the headers.
 */
#ifdef K2UB_HAVE_WQ_PERCPU
#define K2UB_WQ_PERCPU WQ_PERCPU
#else
#define K2UB_WQ_PERCPU 0
#endif

#define K2UB_FAMILY_NAME	"k2u_bench"
#define K2UB_FAMILY_VERSION	1

/* Generic netlink commands and attributes (mirrored in peers.rs). */
enum {
	K2UB_CMD_UNSPEC,
	K2UB_CMD_START,		/* user: SIZE, ROUNDS */
	K2UB_CMD_DATA,		/* kernel: SEQ, CHUNK... */
	K2UB_CMD_ACK,		/* user: SEQ */
	__K2UB_CMD_MAX,
};

enum {
	K2UB_ATTR_UNSPEC,
	K2UB_ATTR_SIZE,		/* u32 */
	K2UB_ATTR_ROUNDS,	/* u32 */
	K2UB_ATTR_SEQ,		/* u32 */
	K2UB_ATTR_CHUNK,	/* binary: the next piece of the data */
	__K2UB_ATTR_MAX,
};

#define K2UB_ATTR_MAX		(__K2UB_ATTR_MAX - 1)

/* Largest power of two an attribute can carry (nla_len is 16 bits). */
#define K2UB_CHUNK		32768U
#define K2UB_MAX_SIZE		SZ_1M
#define K2UB_MAX_ROUNDS		1000000U

/* Relay sub-buffer: this header, then the data; SIZE + a page each. */
#define K2UB_RELAY_MAGIC	0x4b325542U	/* "K2UB" */
#define K2UB_RELAY_SUBBUFS	4U

struct k2ub_relay_hdr {
	__u32 magic;
	__u32 seq;
	__u32 len;
	__u32 reserved;
};

enum k2ub_mech { K2UB_NONE, K2UB_NETLINK, K2UB_RELAY, K2UB_NR_MECH };

static const char * const k2ub_mech_names[] = { "none", "netlink", "relay" };

struct k2ub_stats {
	spinlock_t lock;	/* guards the rest; taken from acks */
	u64 count, total, min, max;
	u64 hist[K2U_HIST_BUCKETS];
};

/*
 * The run. k2ub_lock guards everything here; a round is published by
 * k2ub_round_work and closed by the ack (genl doit or relay_ack write).
 */
static struct {
	enum k2ub_mech mech;	/* of the run, or the prepared relay run */
	bool running;		/* rounds are being sent */
	bool awaiting;		/* round seq is out, its ack not yet seen */
	u32 size, rounds;
	u32 seq;		/* of the last round sent (1 = first) */
	u32 acked;
	u64 published_ns;
	int error;		/* why the last run ended early */
	u32 portid;		/* netlink listener */
	struct net *net;
	struct rchan *chan;	/* relay channel, if open */
	unsigned int relay_full;	/* sub-buffer switches refused */
} k2ub;

static DEFINE_MUTEX(k2ub_lock);
static struct workqueue_struct *k2ub_wq;
static struct work_struct k2ub_work;
static u8 *k2ub_pattern;
static struct k2ub_stats k2ub_st[K2UB_NR_MECH];
static struct dentry *k2ub_dir;
static struct genl_family k2ub_family;
/*
 * A copy of relay_file_operations owned by this module, so that relay0
 * open or mapped pins it; set up at load (hence not const).
 */
static struct file_operations *k2ub_relay_fops; /* not const: see above */

/* Histogram buckets: the same as kern2usr's (abi/src/defs.rs). */
static unsigned int k2ub_hist_bucket(u64 ns)
{
	const u64 sub = 1ULL << K2U_HIST_SUB_BITS;
	unsigned int msb, shift;

	if (ns < sub)
		return ns;
	msb = fls64(ns) - 1;
	if (msb >= K2U_HIST_MAX_BITS)
		return K2U_HIST_BUCKETS - 1;
	shift = msb - K2U_HIST_SUB_BITS;
	return ((shift + 1) << K2U_HIST_SUB_BITS) + ((ns >> shift) & (sub - 1));
}

static u64 k2ub_hist_low(unsigned int index)
{
	const unsigned int sub = 1U << K2U_HIST_SUB_BITS;

	if (index < sub)
		return index;
	return (u64)(sub + (index & (sub - 1))) << ((index >> K2U_HIST_SUB_BITS) - 1);
}

static void k2ub_stats_reset(struct k2ub_stats *st)
{
	spin_lock(&st->lock);
	st->count = 0;
	st->total = 0;
	st->min = U64_MAX;
	st->max = 0;
	memset(st->hist, 0, sizeof(st->hist));
	spin_unlock(&st->lock);
}

static void k2ub_stats_add(struct k2ub_stats *st, u64 ns)
{
	spin_lock(&st->lock);
	st->hist[k2ub_hist_bucket(ns)]++;
	st->count++;
	st->total += ns;
	st->min = min(st->min, ns);
	st->max = max(st->max, ns);
	spin_unlock(&st->lock);
}

/* Low bound of the bucket of rank ceil(count * q / 1000), as kern2usr. */
static u64 k2ub_percentile(const struct k2ub_stats *st, unsigned int q)
{
	u64 rank = max_t(u64, 1, div_u64(st->count * q + 999, 1000));
	u64 seen = 0;
	unsigned int i;

	for (i = 0; i < K2U_HIST_BUCKETS; i++) {
		seen += st->hist[i];
		if (seen >= rank)
			return clamp(k2ub_hist_low(i), st->min, st->max);
	}
	return st->max;
}

static const char * const k2ub_stats_keys[] = K2U_STATS_KEYS;

/* kern2usr's `stats` format: the K2U_STATS_KEYS, one `key value` each. */
static int k2ub_stats_show(struct seq_file *m, void *v)
{
	static const unsigned int permille[] = { 500, 900, 990, 999 };
	struct k2ub_stats *st = m->private;
	u64 values[ARRAY_SIZE(k2ub_stats_keys)] = { 0 };
	unsigned int i;

	BUILD_BUG_ON(ARRAY_SIZE(k2ub_stats_keys) != 4 + ARRAY_SIZE(permille));
	spin_lock(&st->lock);
	if (st->count) {
		values[0] = st->count;
		values[1] = st->min;
		values[2] = div64_u64(st->total, st->count);
		for (i = 0; i < ARRAY_SIZE(permille); i++)
			values[3 + i] = k2ub_percentile(st, permille[i]);
		values[3 + i] = st->max;
	}
	spin_unlock(&st->lock);
	for (i = 0; i < ARRAY_SIZE(k2ub_stats_keys); i++)
		seq_printf(m, "%s %llu\n", k2ub_stats_keys[i], values[i]);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(k2ub_stats);

/* kern2usr's `histogram` format: `low high count` per non-empty bucket. */
static int k2ub_histogram_show(struct seq_file *m, void *v)
{
	struct k2ub_stats *st = m->private;
	unsigned int i;
	u64 *copy;

	copy = kvmalloc_array(K2U_HIST_BUCKETS, sizeof(*copy), GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	spin_lock(&st->lock);
	memcpy(copy, st->hist, sizeof(st->hist));
	spin_unlock(&st->lock);
	for (i = 0; i < K2U_HIST_BUCKETS; i++) {
		if (!copy[i])
			continue;
		/* The last bucket is open-ended: twice its low bound. */
		seq_printf(m, "%llu %llu %llu\n", k2ub_hist_low(i),
			   i + 1 < K2U_HIST_BUCKETS ?
			   k2ub_hist_low(i + 1) : 2 * k2ub_hist_low(i), copy[i]);
	}
	kvfree(copy);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(k2ub_histogram);

static int k2ub_state_show(struct seq_file *m, void *v)
{
	mutex_lock(&k2ub_lock);
	seq_printf(m, "mechanism %s\nrunning %d\nsize %u\nrounds %u\nsent %u\nacked %u\nerror %d\nrelay_full %u\n",
		   k2ub_mech_names[k2ub.mech], k2ub.running, k2ub.size,
		   k2ub.rounds, k2ub.seq, k2ub.acked, k2ub.error,
		   k2ub.relay_full);
	mutex_unlock(&k2ub_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(k2ub_state);

static int k2ub_check_size(u32 size, u32 rounds)
{
	if (!size || size % PAGE_SIZE || size > K2UB_MAX_SIZE) {
		pr_warn_ratelimited("size %u is not a multiple of %lu up to %u\n",
				    size, PAGE_SIZE, K2UB_MAX_SIZE);
		return -EINVAL;
	}
	if (!rounds || rounds > K2UB_MAX_ROUNDS) {
		pr_warn_ratelimited("rounds %u is not between 1 and %u\n",
				    rounds, K2UB_MAX_ROUNDS);
		return -EINVAL;
	}
	return 0;
}

/* A new run of @mech; k2ub_lock held. */
static void k2ub_begin(enum k2ub_mech mech, u32 size, u32 rounds)
{
	k2ub.mech = mech;
	k2ub.size = size;
	k2ub.rounds = rounds;
	k2ub.seq = 0;
	k2ub.acked = 0;
	k2ub.awaiting = false;
	k2ub.error = 0;
	k2ub.relay_full = 0;
	k2ub_stats_reset(&k2ub_st[mech]);
}

/* End the run (early with @error); k2ub_lock held. */
static void k2ub_end(int error)
{
	k2ub.running = false;
	k2ub.awaiting = false;
	if (error && !k2ub.error)
		k2ub.error = error;
	if (k2ub.net) {
		put_net(k2ub.net);
		k2ub.net = NULL;
	}
}

/* One netlink round: DATA with the sequence and the data to the listener. */
static int k2ub_netlink_send(void)
{
	size_t payload = nla_total_size(sizeof(u32));
	struct sk_buff *skb;
	u32 off, len;
	void *hdr;

	for (off = 0; off < k2ub.size; off += K2UB_CHUNK)
		payload += nla_total_size(min(K2UB_CHUNK, k2ub.size - off));
	skb = genlmsg_new(payload, GFP_KERNEL);
	if (!skb)
		return -ENOMEM;
	hdr = genlmsg_put(skb, 0, k2ub.seq, &k2ub_family, 0, K2UB_CMD_DATA);
	if (!hdr)
		goto too_small;
	if (nla_put_u32(skb, K2UB_ATTR_SEQ, k2ub.seq))
		goto too_small;
	for (off = 0; off < k2ub.size; off += len) {
		len = min(K2UB_CHUNK, k2ub.size - off);
		if (nla_put(skb, K2UB_ATTR_CHUNK, len, k2ub_pattern + off))
			goto too_small;
	}
	genlmsg_end(skb, hdr);
	/* The ack waits for k2ub_lock, held here: it cannot beat the clock. */
	k2ub.published_ns = ktime_get_ns();
	/* Consumes skb, also on failure (ECONNREFUSED: the socket is gone). */
	return genlmsg_unicast(k2ub.net, skb, k2ub.portid);
too_small:
	nlmsg_free(skb);
	return -EMSGSIZE;
}

/* Relay (CONFIG_RELAY: Debian's images have it). */

#if IS_ENABLED(CONFIG_RELAY)

/* One relay round: header and data into a sub-buffer, then complete it. */
static void k2ub_relay_send(void)
{
	struct k2ub_relay_hdr hdr = {
		.magic = K2UB_RELAY_MAGIC,
		.seq = k2ub.seq,
		.len = k2ub.size,
	};

	relay_write(k2ub.chan, &hdr, sizeof(hdr));
	relay_write(k2ub.chan, k2ub_pattern, k2ub.size);
	k2ub.published_ns = ktime_get_ns();
	relay_flush(k2ub.chan);
}

#ifdef K2UB_RELAY_PREV_PADDING
static int k2ub_subbuf_start(struct rchan_buf *buf, void *subbuf,
			     void *prev_subbuf, size_t prev_padding)
#else
static int k2ub_subbuf_start(struct rchan_buf *buf, void *subbuf,
			     void *prev_subbuf)
#endif
{
	/* Never overwrite a sub-buffer the listener has not consumed. */
	if (relay_buf_full(buf)) {
		k2ub.relay_full++;
		return 0;
	}
	return 1;
}

static struct dentry *k2ub_create_buf_file(const char *filename,
					   struct dentry *parent, umode_t mode,
					   struct rchan_buf *buf, int *is_global)
{
	struct dentry *d;

	*is_global = 1;
	/*
	 * The unsafe variant: the file's own operations, mmap included (the
	 * full proxy has none); k2ub_relay_fops pins this module while the
	 * file is open or mapped.
	 */
	d = debugfs_create_file_unsafe(filename, 0400, parent, buf,
				       k2ub_relay_fops);
	return IS_ERR(d) ? NULL : d;
}

static int k2ub_remove_buf_file(struct dentry *dentry)
{
	debugfs_remove(dentry);
	return 0;
}

static const struct rchan_callbacks k2ub_relay_callbacks = {
	.subbuf_start = k2ub_subbuf_start,
	.create_buf_file = k2ub_create_buf_file,
	.remove_buf_file = k2ub_remove_buf_file,
};

/* k2ub_lock held, no run going. */
static void k2ub_relay_close(void)
{
	if (k2ub.chan) {
		relay_close(k2ub.chan);
		k2ub.chan = NULL;
	}
	if (k2ub.mech == K2UB_RELAY)
		k2ub.mech = K2UB_NONE;
}

static int k2ub_relay_prepare(u32 size, u32 rounds)
{
	int err = k2ub_check_size(size, rounds);

	if (err)
		return err;
	if (k2ub.running) {
		pr_warn_ratelimited("relay setup while a %s run is going\n",
				    k2ub_mech_names[k2ub.mech]);
		return -EBUSY;
	}
	k2ub_relay_close();
	k2ub.chan = relay_open("relay", k2ub_dir, size + PAGE_SIZE,
			       K2UB_RELAY_SUBBUFS, &k2ub_relay_callbacks, NULL);
	if (!k2ub.chan) {
		pr_warn("relay_open of %u sub-buffers of %lu bytes failed\n",
			K2UB_RELAY_SUBBUFS, size + PAGE_SIZE);
		return -ENOMEM;
	}
	k2ub_begin(K2UB_RELAY, size, rounds);
	return 0;
}

/* The listener consumed the round's sub-buffer; k2ub_lock held. */
static void k2ub_relay_consumed(void)
{
	relay_subbufs_consumed(k2ub.chan, 0, 1);
}

static int k2ub_relay_fops_init(void)
{
	k2ub_relay_fops = kmemdup(&relay_file_operations,
				  sizeof(relay_file_operations), GFP_KERNEL);
	if (!k2ub_relay_fops)
		return -ENOMEM;
	k2ub_relay_fops->owner = THIS_MODULE;
	return 0;
}

#else /* !CONFIG_RELAY */

static void k2ub_relay_send(void)
{
}

static void k2ub_relay_consumed(void)
{
}

static void k2ub_relay_close(void)
{
	if (k2ub.mech == K2UB_RELAY)
		k2ub.mech = K2UB_NONE;
}

static int k2ub_relay_prepare(u32 size, u32 rounds)
{
	pr_warn_ratelimited("relay: this kernel is built without CONFIG_RELAY\n");
	return -EOPNOTSUPP;
}

static int k2ub_relay_fops_init(void)
{
	return 0;
}

#endif /* CONFIG_RELAY */

static int k2ub_relay_go(void)
{
	if (k2ub.running) {
		pr_warn_ratelimited("relay go while a %s run is going\n",
				    k2ub_mech_names[k2ub.mech]);
		return -EBUSY;
	}
	if (k2ub.mech != K2UB_RELAY || !k2ub.chan || k2ub.seq) {
		pr_warn_ratelimited("relay go without a fresh `relay SIZE ROUNDS`\n");
		return -ENOENT;
	}
	k2ub.running = true;
	queue_work(k2ub_wq, &k2ub_work);
	return 0;
}

static void k2ub_round_work(struct work_struct *work)
{
	int err = 0;

	mutex_lock(&k2ub_lock);
	if (!k2ub.running || k2ub.awaiting)
		goto out;
	k2ub.seq++;
	k2ub.awaiting = true;
	if (k2ub.mech == K2UB_NETLINK)
		err = k2ub_netlink_send();
	else
		k2ub_relay_send();
	if (err) {
		pr_warn("netlink round %u to port %u failed: %d\n", k2ub.seq,
			k2ub.portid, err);
		k2ub_end(err);
	}
out:
	mutex_unlock(&k2ub_lock);
}

/* The ack of round @seq of @mech, seen at @now; k2ub_lock held. */
static int k2ub_ack(enum k2ub_mech mech, u32 seq, u64 now)
{
	if (!k2ub.running || k2ub.mech != mech) {
		pr_warn_ratelimited("%s ack %u without a %s run\n",
				    k2ub_mech_names[mech], seq,
				    k2ub_mech_names[mech]);
		return -ENOENT;
	}
	if (!k2ub.awaiting || seq != k2ub.seq) {
		pr_warn_ratelimited("%s ack %u, but round %u is %s\n",
				    k2ub_mech_names[mech], seq, k2ub.seq,
				    k2ub.awaiting ? "out" : "acknowledged");
		return -EPROTO;
	}
	k2ub_stats_add(&k2ub_st[mech], now - k2ub.published_ns);
	k2ub.awaiting = false;
	k2ub.acked++;
	if (mech == K2UB_RELAY)
		k2ub_relay_consumed();
	if (k2ub.acked == k2ub.rounds)
		k2ub_end(0);
	else
		queue_work(k2ub_wq, &k2ub_work);
	return 0;
}

/* Generic netlink. */

static int k2ub_nl_start(struct sk_buff *skb, struct genl_info *info)
{
	u32 size, rounds;
	int err;

	if (!info->attrs[K2UB_ATTR_SIZE] || !info->attrs[K2UB_ATTR_ROUNDS]) {
		pr_warn_ratelimited("netlink start without size and rounds\n");
		return -EINVAL;
	}
	size = nla_get_u32(info->attrs[K2UB_ATTR_SIZE]);
	rounds = nla_get_u32(info->attrs[K2UB_ATTR_ROUNDS]);
	err = k2ub_check_size(size, rounds);
	if (err)
		return err;
	mutex_lock(&k2ub_lock);
	if (k2ub.running) {
		pr_warn_ratelimited("netlink start while a %s run is going\n",
				    k2ub_mech_names[k2ub.mech]);
		mutex_unlock(&k2ub_lock);
		return -EBUSY;
	}
	k2ub_begin(K2UB_NETLINK, size, rounds);
	k2ub.portid = info->snd_portid;
	k2ub.net = get_net(genl_info_net(info));
	k2ub.running = true;
	queue_work(k2ub_wq, &k2ub_work);
	mutex_unlock(&k2ub_lock);
	return 0;
}

static int k2ub_nl_ack(struct sk_buff *skb, struct genl_info *info)
{
	u64 now = ktime_get_ns();
	u32 seq;
	int err;

	if (!info->attrs[K2UB_ATTR_SEQ]) {
		pr_warn_ratelimited("netlink ack without a sequence\n");
		return -EINVAL;
	}
	seq = nla_get_u32(info->attrs[K2UB_ATTR_SEQ]);
	mutex_lock(&k2ub_lock);
	if (k2ub.running && k2ub.mech == K2UB_NETLINK &&
	    info->snd_portid != k2ub.portid) {
		pr_warn_ratelimited("netlink ack %u from port %u, the run's is %u\n",
				    seq, info->snd_portid, k2ub.portid);
		err = -EPERM;
	} else {
		err = k2ub_ack(K2UB_NETLINK, seq, now);
	}
	mutex_unlock(&k2ub_lock);
	return err;
}

static const struct nla_policy k2ub_policy[K2UB_ATTR_MAX + 1] = {
	[K2UB_ATTR_SIZE] = { .type = NLA_U32 },
	[K2UB_ATTR_ROUNDS] = { .type = NLA_U32 },
	[K2UB_ATTR_SEQ] = { .type = NLA_U32 },
	[K2UB_ATTR_CHUNK] = { .type = NLA_REJECT },
};

static const struct genl_small_ops k2ub_ops[] = {
	{
		.cmd = K2UB_CMD_START,
		.flags = GENL_ADMIN_PERM,
		.doit = k2ub_nl_start,
	},
	{
		.cmd = K2UB_CMD_ACK,
		.flags = GENL_ADMIN_PERM,
		.doit = k2ub_nl_ack,
	},
};

static struct genl_family k2ub_family = {
	.name = K2UB_FAMILY_NAME,
	.version = K2UB_FAMILY_VERSION,
	.maxattr = K2UB_ATTR_MAX,
	.policy = k2ub_policy,
	.module = THIS_MODULE,
	.small_ops = k2ub_ops,
	.n_small_ops = ARRAY_SIZE(k2ub_ops),
	.resv_start_op = __K2UB_CMD_MAX,
};

/* debugfs control and relay_ack. */

static ssize_t k2ub_control_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	char buf[64], word[8];
	u32 size, rounds;
	int err;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (count >= sizeof(buf)) {
		pr_warn_ratelimited("control: a command of %zu bytes\n", count);
		return -EINVAL;
	}
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	strim(buf);

	mutex_lock(&k2ub_lock);
	if (sscanf(buf, "%7s %u %u", word, &size, &rounds) == 3 &&
	    !strcmp(word, "relay")) {
		err = k2ub_relay_prepare(size, rounds);
	} else if (!strcmp(buf, "go")) {
		err = k2ub_relay_go();
	} else if (!strcmp(buf, "abort")) {
		if (k2ub.running)
			k2ub_end(-ECANCELED);
		err = 0;
	} else if (!strcmp(buf, "close")) {
		if (k2ub.running)
			k2ub_end(-ECANCELED);
		k2ub_relay_close();
		err = 0;
	} else {
		pr_warn_ratelimited("control: unknown command \"%s\"\n", buf);
		err = -EINVAL;
	}
	mutex_unlock(&k2ub_lock);
	return err ? err : count;
}

static const struct file_operations k2ub_control_fops = {
	.owner = THIS_MODULE,
	.write = k2ub_control_write,
	.llseek = noop_llseek,
};

static ssize_t k2ub_relay_ack_write(struct file *file, const char __user *ubuf,
				    size_t count, loff_t *ppos)
{
	u64 now = ktime_get_ns();
	u32 seq;
	int err;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	err = kstrtou32_from_user(ubuf, count, 10, &seq);
	if (err) {
		pr_warn_ratelimited("relay_ack: not a sequence number\n");
		return err;
	}
	mutex_lock(&k2ub_lock);
	err = k2ub_ack(K2UB_RELAY, seq, now);
	mutex_unlock(&k2ub_lock);
	return err ? err : count;
}

static const struct file_operations k2ub_relay_ack_fops = {
	.owner = THIS_MODULE,
	.write = k2ub_relay_ack_write,
	.llseek = noop_llseek,
};

static int __init k2ub_init(void)
{
	unsigned int i;
	int err;

	for (i = 0; i < K2UB_NR_MECH; i++) {
		spin_lock_init(&k2ub_st[i].lock);
		k2ub_stats_reset(&k2ub_st[i]);
	}
	err = k2ub_relay_fops_init();
	if (err)
		return err;

	k2ub_pattern = kvmalloc(K2UB_MAX_SIZE, GFP_KERNEL);
	if (!k2ub_pattern) {
		err = -ENOMEM;
		goto free_fops;
	}
	for (i = 0; i < K2UB_MAX_SIZE; i++)
		k2ub_pattern[i] = K2U_PATTERN_BYTE(i);

	INIT_WORK(&k2ub_work, k2ub_round_work);
	k2ub_wq = alloc_workqueue(KBUILD_MODNAME, WQ_HIGHPRI | K2UB_WQ_PERCPU, 0);
	if (!k2ub_wq) {
		err = -ENOMEM;
		goto free_pattern;
	}

	k2ub_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("control", 0200, k2ub_dir, NULL, &k2ub_control_fops);
	debugfs_create_file("relay_ack", 0200, k2ub_dir, NULL,
			    &k2ub_relay_ack_fops);
	debugfs_create_file("state", 0400, k2ub_dir, NULL, &k2ub_state_fops);
	debugfs_create_file("netlink_stats", 0400, k2ub_dir,
			    &k2ub_st[K2UB_NETLINK], &k2ub_stats_fops);
	debugfs_create_file("netlink_histogram", 0400, k2ub_dir,
			    &k2ub_st[K2UB_NETLINK], &k2ub_histogram_fops);
	debugfs_create_file("relay_stats", 0400, k2ub_dir,
			    &k2ub_st[K2UB_RELAY], &k2ub_stats_fops);
	debugfs_create_file("relay_histogram", 0400, k2ub_dir,
			    &k2ub_st[K2UB_RELAY], &k2ub_histogram_fops);

	err = genl_register_family(&k2ub_family);
	if (err) {
		pr_err("registering the generic netlink family failed: %d\n",
		       err);
		goto remove_dir;
	}
	return 0;

remove_dir:
	debugfs_remove_recursive(k2ub_dir);
	destroy_workqueue(k2ub_wq);
free_pattern:
	kvfree(k2ub_pattern);
free_fops:
	kfree(k2ub_relay_fops);
	return err;
}

static void __exit k2ub_exit(void)
{
	/* No more starts or acks from sockets. */
	genl_unregister_family(&k2ub_family);
	mutex_lock(&k2ub_lock);
	if (k2ub.running)
		k2ub_end(-ECANCELED);
	mutex_unlock(&k2ub_lock);
	/* A round in flight finishes; none is queued after it (not running). */
	cancel_work_sync(&k2ub_work);
	/*
	 * Nobody holds relay0 open or mapped (it pins the module), and the
	 * control files are gone with this module's last user: close the
	 * channel (which removes relay0), then the directory.
	 */
	mutex_lock(&k2ub_lock);
	k2ub_relay_close();
	mutex_unlock(&k2ub_lock);
	debugfs_remove_recursive(k2ub_dir);
	destroy_workqueue(k2ub_wq);
	kvfree(k2ub_pattern);
	kfree(k2ub_relay_fops);
}

module_init(k2ub_init);
module_exit(k2ub_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kern2usr bench peers: generic netlink and relay round trips");
