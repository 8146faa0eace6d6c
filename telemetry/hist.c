/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Log-linear latency histogram (see cn_tel.h).
 *
 * With S = CN_HIST_SUB_BITS, a value v < 2^S has its own bucket v. Above, let
 * m = floor(log2 v) >= S and shift = m - S: the power of two [2^m, 2^(m+1))
 * is split into 2^S buckets of width 2^shift, and v lands in
 *
 *	bucket = (shift + 1) * 2^S + ((v >> shift) - 2^S)
 *
 * so bucket i >= 2^S covers [(2^S + sub) << shift, ((2^S + sub + 1) << shift) - 1]
 * with shift = i / 2^S - 1 and sub = i % 2^S. The last bucket ends at
 * UINT64_MAX, so the buckets cover every uint64_t without gaps or overlap,
 * and a bucket's width is at most 1/2^S of its lower bound (~3.1% for S = 5).
 *
 * One writer (the drain) stores with relaxed atomics; readers copy with
 * relaxed loads (cn_hist_snapshot). A snapshot taken during an add may see
 * the bucket before the count or the other way round; quantiles therefore
 * rank against the sum of the buckets, not against the count field.
 */
#include <string.h>

#include "cn_tel.h"

#define SUB   CN_HIST_SUB_BITS
#define NSUB  (1u << SUB)

#define LD(p)	  __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELAXED)

void cn_hist_reset(struct cn_hist *h)
{
	memset(h, 0, sizeof(*h));
}

unsigned cn_hist_bucket(uint64_t v)
{
	unsigned m, shift;

	if (v < NSUB)
		return (unsigned)v;
	m = 63u - (unsigned)__builtin_clzll(v);
	shift = m - SUB;
	return ((shift + 1) << SUB) + (unsigned)((v >> shift) - NSUB);
}

void cn_hist_bounds(unsigned i, uint64_t *lo, uint64_t *hi)
{
	unsigned shift, sub;
	uint64_t l;

	if (i >= CN_HIST_BUCKETS)
		i = CN_HIST_BUCKETS - 1;
	if (i < NSUB) {
		*lo = i;
		*hi = i;
		return;
	}
	shift = (i >> SUB) - 1;
	sub = i & (NSUB - 1);
	l = (uint64_t)(NSUB + sub) << shift;
	*lo = l;
	*hi = l + ((UINT64_C(1) << shift) - 1);
}

/* min and max are 0 while count is 0. */
void cn_hist_add(struct cn_hist *h, uint64_t v)
{
	unsigned i = cn_hist_bucket(v);
	uint64_t n = LD(&h->count);

	ST(&h->b[i], LD(&h->b[i]) + 1);
	ST(&h->sum, LD(&h->sum) + v);
	if (n == 0 || v < LD(&h->min))
		ST(&h->min, v);
	if (n == 0 || v > LD(&h->max))
		ST(&h->max, v);
	ST(&h->count, n + 1);
}

void cn_hist_snapshot(const struct cn_hist *h, struct cn_hist *out)
{
	out->count = LD(&h->count);
	out->sum = LD(&h->sum);
	out->min = LD(&h->min);
	out->max = LD(&h->max);
	for (unsigned i = 0; i < CN_HIST_BUCKETS; i++)
		out->b[i] = LD(&h->b[i]);
}

/*
 * Rank r = ceil(q * total) clamped to [1, total]; the answer is the upper
 * bound of the first bucket whose cumulative count reaches r, clamped to the
 * largest value seen (so p100 is the exact max). Reads with relaxed loads so
 * it may be called on the live histogram as well as on a snapshot.
 */
uint64_t cn_hist_quantile(const struct cn_hist *h, double q)
{
	uint64_t total = 0, rank, cum = 0, lo, hi, max;
	double want;

	for (unsigned i = 0; i < CN_HIST_BUCKETS; i++)
		total += LD(&h->b[i]);
	if (total == 0)
		return 0;
	if (!(q > 0.0)) /* also NaN */
		q = 0.0;
	if (q > 1.0)
		q = 1.0;
	want = q * (double)total;
	rank = (uint64_t)want;
	if ((double)rank < want)
		rank++;
	if (rank < 1)
		rank = 1;
	if (rank > total)
		rank = total;
	max = LD(&h->max);
	for (unsigned i = 0; i < CN_HIST_BUCKETS; i++) {
		cum += LD(&h->b[i]);
		if (cum >= rank) {
			cn_hist_bounds(i, &lo, &hi);
			return (max != 0 && hi > max && lo <= max) ? max : hi;
		}
	}
	return max;
}

uint64_t cn_hist_count_le(const struct cn_hist *h, uint64_t v)
{
	unsigned last = cn_hist_bucket(v);
	uint64_t lo, hi, n = 0;

	cn_hist_bounds(last, &lo, &hi);
	if (hi > v) {
		/* v is inside bucket `last`, which may hold larger values: exclude it */
		if (last == 0)
			return 0;
		last--;
	}
	for (unsigned i = 0; i <= last; i++)
		n += LD(&h->b[i]);
	return n;
}
