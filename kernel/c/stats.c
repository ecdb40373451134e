// SPDX-License-Identifier: GPL-2.0-only
/*
 * Round-trip statistics: a log-linear histogram (the ABI's buckets, about
 * 3 % wide) plus count, min, max and sum; read through the `stats` and
 * `histogram` parameters. Each function takes the statistics' spinlock,
 * so readers never wait for the channel's mutex.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitops.h>
#include <linux/math64.h>
#include <linux/sysfs.h>

#include "kern2usr.h"

static unsigned int k2u_hist_bucket(u64 ns)
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

static u64 k2u_hist_low(unsigned int index)
{
	const unsigned int sub = 1U << K2U_HIST_SUB_BITS;

	if (index < sub)
		return index;
	return (u64)(sub + (index & (sub - 1))) << ((index >> K2U_HIST_SUB_BITS) - 1);
}

/* Empty: the figures are zero, the lock is left as it is. */
static void k2u_stats_clear(struct k2u_stats *st)
{
	memset(&st->fig, 0, sizeof(st->fig));
	st->min = U64_MAX;
}

/* A created channel's statistics, before anyone can read them. */
void k2u_stats_init(struct k2u_stats *st)
{
	spin_lock_init(&st->lock);
	k2u_stats_clear(st);
}

void k2u_stats_reset(struct k2u_stats *st)
{
	spin_lock(&st->lock);
	k2u_stats_clear(st);
	spin_unlock(&st->lock);
}

void k2u_stats_add(struct k2u_stats *st, u64 ns)
{
	spin_lock(&st->lock);
	st->hist[k2u_hist_bucket(ns)]++;
	st->count++;
	st->total += ns;
	st->min = min(st->min, ns);
	st->max = max(st->max, ns);
	spin_unlock(&st->lock);
}

/* Low bound of the bucket holding the value of rank ceil(count * q / 1000). */
static u64 k2u_stats_percentile(const struct k2u_stats *st, unsigned int q)
{
	u64 rank = max_t(u64, 1, div_u64(st->count * q + 999, 1000));
	u64 seen = 0;
	unsigned int i;

	for (i = 0; i < K2U_HIST_BUCKETS; i++) {
		seen += st->hist[i];
		if (seen >= rank)
			return clamp(k2u_hist_low(i), st->min, st->max);
	}
	return st->max;
}

static const char * const k2u_stats_keys[] = K2U_STATS_KEYS;

int k2u_stats_show(struct k2u_stats *st, char *buf)
{
	static const struct {
		const char *key;
		unsigned int permille;
	} pct[] = { { "p50", 500 }, { "p90", 900 }, { "p99", 990 },
		    { "p99.9", 999 } };
	int len = 0;
	unsigned int i;

	spin_lock(&st->lock);
	if (!st->count) {
		for (i = 0; i < ARRAY_SIZE(k2u_stats_keys); i++)
			len += sysfs_emit_at(buf, len, "%s 0\n", k2u_stats_keys[i]);
		spin_unlock(&st->lock);
		return len;
	}
	len += sysfs_emit_at(buf, len, "count %llu\n", st->count);
	len += sysfs_emit_at(buf, len, "min %llu\n", st->min);
	len += sysfs_emit_at(buf, len, "mean %llu\n",
			     div64_u64(st->total, st->count));
	for (i = 0; i < ARRAY_SIZE(pct); i++)
		len += sysfs_emit_at(buf, len, "%s %llu\n", pct[i].key,
				     k2u_stats_percentile(st, pct[i].permille));
	len += sysfs_emit_at(buf, len, "max %llu\n", st->max);
	spin_unlock(&st->lock);
	return len;
}

/* Lines a page holds with room to spare; more buckets are merged. */
#define K2U_HIST_LINES 100

int k2u_histogram_show(struct k2u_stats *st, char *buf)
{
	unsigned int i, used = 0, per_line, in_line = 0;
	u64 low = 0, sum = 0;
	int len = 0;

	spin_lock(&st->lock);
	for (i = 0; i < K2U_HIST_BUCKETS; i++)
		used += st->hist[i] != 0;
	per_line = max(1U, DIV_ROUND_UP(used, K2U_HIST_LINES));

	for (i = 0; i < K2U_HIST_BUCKETS; i++) {
		if (!st->hist[i])
			continue;
		if (!in_line)
			low = k2u_hist_low(i);
		sum += st->hist[i];
		used--;
		if (++in_line < per_line && used)
			continue;
		/* The last bucket is open-ended: call it twice its low bound. */
		len += sysfs_emit_at(buf, len, "%llu %llu %llu\n", low,
				     i + 1 < K2U_HIST_BUCKETS ?
				     k2u_hist_low(i + 1) : 2 * k2u_hist_low(i),
				     sum);
		in_line = 0;
		sum = 0;
	}
	spin_unlock(&st->lock);
	return len;
}

/* The figures of K2U_IOC_CHANNEL_STATS: all 0 before the first round. */
void k2u_stats_get(struct k2u_stats *st, struct k2u_channel_stats *out)
{
	spin_lock(&st->lock);
	if (!st->count) {
		spin_unlock(&st->lock);
		return;
	}
	out->count = st->count;
	out->min_ns = st->min;
	out->mean_ns = div64_u64(st->total, st->count);
	out->p50_ns = k2u_stats_percentile(st, 500);
	out->p90_ns = k2u_stats_percentile(st, 900);
	out->p99_ns = k2u_stats_percentile(st, 990);
	out->p999_ns = k2u_stats_percentile(st, 999);
	out->max_ns = st->max;
	spin_unlock(&st->lock);
}
