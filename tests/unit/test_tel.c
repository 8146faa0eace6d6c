/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the telemetry core: histogram math, START/END pairing,
 * rings (overflow, sizing), the drain end to end with the Chrome sink, the
 * rate-limited error log, disabled telemetry, and the DPDK command shim.
 * Runs without hugepages (cn_test_eal_init).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <rte_log.h>

#include "cn_tel.h"
#include "cn_tel_dpdk.h"
#include "cn_test_eal.h"

/* ---- helpers ---- */

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

/* uniform in (0, 1] */
static double rng_unit(uint64_t *s)
{
	return ((double)(rng_next(s) >> 11) + 1.0) / 9007199254740992.0;
}

/* natural log without libm (the test links no -lm): atanh series on [1/sqrt2, sqrt2) */
static double xln(double x)
{
	union {
		double d;
		uint64_t u;
	} v = {.d = x};
	int e = (int)((v.u >> 52) & 0x7ff) - 1023;
	double m, z, z2, term, s = 0.0;

	v.u = (v.u & ((UINT64_C(1) << 52) - 1)) | (UINT64_C(1023) << 52);
	m = v.d;
	if (m > 1.4142135623730951) {
		m /= 2.0;
		e++;
	}
	z = (m - 1.0) / (m + 1.0);
	z2 = z * z;
	term = z;
	for (int k = 0; k < 40; k++) {
		s += term / (2 * k + 1);
		term *= z2;
	}
	return e * 0.6931471805599453 + 2.0 * s;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t bucket_hi(uint64_t v)
{
	uint64_t lo, hi;

	cn_hist_bounds(cn_hist_bucket(v), &lo, &hi);
	return hi;
}

static struct cn_tel_event ev(uint8_t type, uint64_t session, uint64_t tsc)
{
	return (struct cn_tel_event){
		.tsc = tsc, .session = session, .type = type, .op = CN_TEL_OP_store,
		.bytes = type == CN_TEL_END ? 4096 : 0, .keys = 1, .core = 3,
	};
}

/* ---- histogram ---- */

static void test_hist_small_values_exact(void **state)
{
	uint64_t lo, hi;

	(void)state;
	for (uint64_t v = 0; v < (1u << CN_HIST_SUB_BITS); v++) {
		assert_int_equal(cn_hist_bucket(v), v);
		cn_hist_bounds((unsigned)v, &lo, &hi);
		assert_int_equal(lo, v);
		assert_int_equal(hi, v);
	}
	assert_int_equal(cn_hist_bucket(32), 32);
	assert_int_equal(cn_hist_bucket(63), 63);
	assert_int_equal(cn_hist_bucket(64), 64);	/* [64,65] */
	assert_int_equal(cn_hist_bucket(65), 64);
	assert_int_equal(cn_hist_bucket(66), 65);
	assert_int_equal(cn_hist_bucket(UINT64_MAX), CN_HIST_BUCKETS - 1);
}

static void test_hist_bounds_monotonic_covering(void **state)
{
	uint64_t lo, hi, prev_hi = 0, s = 42;

	(void)state;
	for (unsigned i = 0; i < CN_HIST_BUCKETS; i++) {
		cn_hist_bounds(i, &lo, &hi);
		assert_true(lo <= hi);
		if (i == 0)
			assert_int_equal(lo, 0);
		else
			assert_int_equal(lo, prev_hi + 1); /* no gap, no overlap */
		assert_int_equal(cn_hist_bucket(lo), i);
		assert_int_equal(cn_hist_bucket(hi), i);
		if (i >= (1u << CN_HIST_SUB_BITS)) /* width <= lo / 2^SUB_BITS */
			assert_true((hi - lo + 1) << CN_HIST_SUB_BITS <= lo);
		prev_hi = hi;
	}
	assert_true(prev_hi == UINT64_MAX);
	for (int k = 0; k < 100000; k++) {
		uint64_t v = rng_next(&s) >> (rng_next(&s) % 64);

		cn_hist_bounds(cn_hist_bucket(v), &lo, &hi);
		assert_true(lo <= v && v <= hi);
	}
}

static void check_quantiles(uint64_t *v, size_t n)
{
	static const double qs[] = {0.5, 0.9, 0.99, 0.999, 1.0};
	struct cn_hist *h = malloc(sizeof(*h));
	uint64_t sum = 0;

	assert_non_null(h);
	cn_hist_reset(h);
	for (size_t i = 0; i < n; i++) {
		cn_hist_add(h, v[i]);
		sum += v[i];
	}
	qsort(v, n, sizeof(v[0]), cmp_u64);
	assert_int_equal(h->count, n);
	assert_int_equal(h->sum, sum);
	assert_int_equal(h->min, v[0]);
	assert_int_equal(h->max, v[n - 1]);
	for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
		size_t rank = (size_t)(qs[k] * (double)n);
		uint64_t truth, rep, lo, hi, want;

		if ((double)rank < qs[k] * (double)n)
			rank++;
		truth = v[rank - 1];
		rep = cn_hist_quantile(h, qs[k]);
		cn_hist_bounds(cn_hist_bucket(truth), &lo, &hi);
		want = hi < v[n - 1] ? hi : v[n - 1];
		assert_int_equal(rep, want);
		assert_true(rep >= truth);
		assert_true(rep - truth <= hi - lo);		   /* within the bucket */
		assert_true((double)(rep - truth) <= 0.032 * (double)truth + 0.5); /* ~3.2% */
	}
	assert_int_equal(cn_hist_quantile(h, 1.0), v[n - 1]);
	free(h);
}

static void test_hist_quantiles_exponential(void **state)
{
	enum { N = 100000 };
	uint64_t *v = malloc(N * sizeof(*v)), s = 7;

	(void)state;
	assert_non_null(v);
	for (size_t i = 0; i < N; i++) /* mean 50 us, in ns */
		v[i] = (uint64_t)(-xln(rng_unit(&s)) * 50000.0);
	check_quantiles(v, N);
	free(v);
}

static void test_hist_quantiles_lognormal(void **state)
{
	enum { N = 100000 };
	uint64_t *v = malloc(N * sizeof(*v)), s = 1234567;

	(void)state;
	assert_non_null(v);
	for (size_t i = 0; i < N; i++) {
		/* a product of random factors is roughly lognormal: heavy right tail */
		double x = 20000.0;

		for (int k = 0; k < 12; k++)
			x *= 0.3 + 1.4 * rng_unit(&s);
		v[i] = (uint64_t)x;
	}
	check_quantiles(v, N);
	for (size_t i = 0; i < N; i++) /* small values: the exact region and its edge */
		v[i] = rng_next(&s) % 100;
	check_quantiles(v, N);
	free(v);
}

static void test_hist_count_le(void **state)
{
	enum { N = 20000 };
	uint64_t *v = malloc(N * sizeof(*v)), s = 99;
	struct cn_hist *h = malloc(sizeof(*h));

	(void)state;
	assert_non_null(v);
	assert_non_null(h);
	cn_hist_reset(h);
	for (size_t i = 0; i < N; i++) {
		v[i] = rng_next(&s) % 1000000;
		cn_hist_add(h, v[i]);
	}
	for (int k = 0; k < 300; k++) {
		uint64_t t = k < 100 ? (uint64_t)k : rng_next(&s) % 1100000, whole = 0, exact = 0;

		for (size_t i = 0; i < N; i++) {
			whole += bucket_hi(v[i]) <= t; /* buckets entirely <= t */
			exact += v[i] <= t;
		}
		assert_int_equal(cn_hist_count_le(h, t), whole);
		assert_true(whole <= exact);
		/* at a bucket's upper bound the answer is exact */
		t = bucket_hi(t);
		exact = 0;
		for (size_t i = 0; i < N; i++)
			exact += v[i] <= t;
		assert_int_equal(cn_hist_count_le(h, t), exact);
	}
	assert_int_equal(cn_hist_count_le(h, UINT64_MAX), N);
	free(h);
	free(v);
}

static void test_hist_empty_and_snapshot(void **state)
{
	struct cn_hist *h = malloc(sizeof(*h)), *c = malloc(sizeof(*c));

	(void)state;
	assert_non_null(h);
	assert_non_null(c);
	cn_hist_reset(h);
	assert_int_equal(cn_hist_quantile(h, 0.5), 0);
	assert_int_equal(cn_hist_count_le(h, 1000), 0);
	assert_int_equal(h->min, 0);
	assert_int_equal(h->max, 0);
	cn_hist_add(h, 1000);
	cn_hist_add(h, 7);
	cn_hist_snapshot(h, c);
	assert_memory_equal(h, c, sizeof(*h));
	assert_int_equal(c->min, 7);
	assert_int_equal(c->max, 1000);
	assert_int_equal(cn_hist_quantile(c, 0.5), 7);
	assert_int_equal(cn_hist_quantile(c, 0.0), 7);
	assert_int_equal(cn_hist_quantile(c, 0.51), 1000); /* clamped to max */
	free(c);
	free(h);
}

/* ---- pairer ---- */

static void test_pairer_in_order(void **state)
{
	struct cn_tel_pairer *p;
	struct cn_tel_span sp;
	struct cn_tel_event e;

	(void)state;
	assert_int_equal(cn_tel_pairer_create(16, 1000000, &p), 0);
	e = ev(CN_TEL_START, 5, 100);
	e.bytes = 77;
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 0);
	assert_int_equal(cn_tel_pairer_open(p), 1);
	e = ev(CN_TEL_END, 5, 250);
	e.status = -ENOSPC;
	e.tier = 2;
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 1);
	assert_int_equal(cn_tel_pairer_open(p), 0);
	assert_int_equal(sp.start_tsc, 100);
	assert_int_equal(sp.end_tsc, 250);
	assert_int_equal(sp.session, 5);
	assert_int_equal(sp.bytes, 4096);
	assert_int_equal(sp.keys, 1);
	assert_int_equal(sp.status, -ENOSPC);
	assert_int_equal(sp.op, CN_TEL_OP_store);
	assert_int_equal(sp.core, 3);
	assert_int_equal(sp.tier, 2);
	/* END with bytes 0 takes the START's */
	e = ev(CN_TEL_START, 6, 300);
	e.bytes = 77;
	cn_tel_pairer_feed(p, &e, &sp);
	e = ev(CN_TEL_END, 6, 400);
	e.bytes = 0;
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 1);
	assert_int_equal(sp.bytes, 77);
	/* POINT events are not paired */
	e = ev(CN_TEL_POINT, 7, 400);
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 0);
	assert_int_equal(cn_tel_pairer_open(p), 0);
	cn_tel_pairer_destroy(&p);
	assert_null(p);
	cn_tel_pairer_destroy(&p);
}

static void test_pairer_out_of_order(void **state)
{
	struct cn_tel_pairer *p;
	struct cn_tel_span sp;
	struct cn_tel_event e;

	(void)state;
	assert_int_equal(cn_tel_pairer_create(16, 1000000, &p), 0);
	e = ev(CN_TEL_END, 9, 500);
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 0);
	assert_int_equal(cn_tel_pairer_open(p), 1);
	e = ev(CN_TEL_START, 9, 120);
	e.core = 1;
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 1);
	assert_int_equal(sp.start_tsc, 120);
	assert_int_equal(sp.end_tsc, 500);
	assert_int_equal(sp.core, 1);
	assert_int_equal(sp.bytes, 4096);
	assert_int_equal(cn_tel_pairer_open(p), 0);
	cn_tel_pairer_destroy(&p);
}

static void test_pairer_interleaved(void **state)
{
	enum { NS = 5000 };
	struct cn_tel_pairer *p;
	struct cn_tel_span sp;
	struct cn_tel_event *evs = malloc(2 * NS * sizeof(*evs));
	unsigned *seen = calloc(NS, sizeof(*seen));
	uint64_t s = 5, spans = 0;

	(void)state;
	assert_non_null(evs);
	assert_non_null(seen);
	assert_int_equal(cn_tel_pairer_create(NS, UINT64_MAX / 2, &p), 0);
	for (unsigned i = 0; i < NS; i++) {
		uint64_t sess = ((uint64_t)(i % 4) << 48) | (i + 1);

		evs[2 * i] = ev(CN_TEL_START, sess, 1000 + i);
		evs[2 * i + 1] = ev(CN_TEL_END, sess, 1000 + i + 10 * (i + 1));
	}
	for (unsigned i = 2 * NS - 1; i > 0; i--) { /* shuffle: any order, ENDs first too */
		unsigned j = (unsigned)(rng_next(&s) % (i + 1));
		struct cn_tel_event tmp = evs[i];

		evs[i] = evs[j];
		evs[j] = tmp;
	}
	for (unsigned i = 0; i < 2 * NS; i++) {
		if (cn_tel_pairer_feed(p, &evs[i], &sp) == 1) {
			unsigned id = (unsigned)(sp.session & 0xffffffffffffu) - 1;

			assert_true(id < NS);
			assert_int_equal(sp.start_tsc, 1000 + id);
			assert_int_equal(sp.end_tsc - sp.start_tsc, 10 * (id + 1));
			seen[id]++;
			spans++;
		}
	}
	assert_int_equal(spans, NS);
	for (unsigned i = 0; i < NS; i++)
		assert_int_equal(seen[i], 1);
	assert_int_equal(cn_tel_pairer_open(p), 0);
	cn_tel_pairer_destroy(&p);
	free(seen);
	free(evs);
}

static void test_pairer_expire_missing_end(void **state)
{
	struct cn_tel_pairer *p;
	struct cn_tel_span sp;
	struct cn_tel_event e;

	(void)state;
	assert_int_equal(cn_tel_pairer_create(16, 1000, &p), 0);
	e = ev(CN_TEL_START, 1, 100); /* never ends */
	cn_tel_pairer_feed(p, &e, &sp);
	e = ev(CN_TEL_END, 2, 300); /* never started */
	cn_tel_pairer_feed(p, &e, &sp);
	e = ev(CN_TEL_START, 3, 5000);
	cn_tel_pairer_feed(p, &e, &sp);
	assert_int_equal(cn_tel_pairer_open(p), 3);
	assert_int_equal(cn_tel_pairer_expire(p, 500), 0); /* now < expire */
	assert_int_equal(cn_tel_pairer_expire(p, 1200), 1); /* 100 is 1100 old */
	assert_int_equal(cn_tel_pairer_expire(p, 1400), 1); /* 300 is 1100 old */
	assert_int_equal(cn_tel_pairer_expire(p, 5500), 0);
	assert_int_equal(cn_tel_pairer_open(p), 1);
	/* the expired START is gone: its late END is held, not paired */
	e = ev(CN_TEL_END, 1, 5600);
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 0);
	assert_int_equal(cn_tel_pairer_open(p), 2);
	e = ev(CN_TEL_END, 3, 5700);
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 1);
	assert_int_equal(cn_tel_pairer_expire(p, UINT64_MAX), 1);
	assert_int_equal(cn_tel_pairer_open(p), 0);
	cn_tel_pairer_destroy(&p);
}

static void test_pairer_table_full(void **state)
{
	struct cn_tel_pairer *p;
	struct cn_tel_span sp;
	struct cn_tel_event e;

	(void)state;
	assert_int_equal(cn_tel_pairer_create(4, 1000000, &p), 0);
	for (uint64_t s = 1; s <= 4; s++) {
		e = ev(CN_TEL_START, s, 10 * s);
		assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 0);
	}
	assert_int_equal(cn_tel_pairer_open(p), 4);
	/* full: a new START is refused (open does not move), nothing is evicted */
	e = ev(CN_TEL_START, 5, 60);
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 0);
	assert_int_equal(cn_tel_pairer_open(p), 4);
	e = ev(CN_TEL_END, 5, 70); /* its END cannot be held either */
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 0);
	assert_int_equal(cn_tel_pairer_open(p), 4);
	/* the four open sessions still pair */
	for (uint64_t s = 1; s <= 4; s++) {
		e = ev(CN_TEL_END, s, 100 + s);
		assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 1);
		assert_int_equal(sp.start_tsc, 10 * s);
	}
	assert_int_equal(cn_tel_pairer_open(p), 0);
	/* a duplicate START replaces the older one, open does not move */
	e = ev(CN_TEL_START, 8, 1);
	cn_tel_pairer_feed(p, &e, &sp);
	e = ev(CN_TEL_START, 8, 2);
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 0);
	assert_int_equal(cn_tel_pairer_open(p), 1);
	e = ev(CN_TEL_END, 8, 3);
	assert_int_equal(cn_tel_pairer_feed(p, &e, &sp), 1);
	assert_int_equal(sp.start_tsc, 2);
	cn_tel_pairer_destroy(&p);
	assert_int_equal(cn_tel_pairer_create(0, 1, &p), -EINVAL);
}

/* Random feeds and expiries against a plain array model (exercises deletion). */
static void test_pairer_random_vs_model(void **state)
{
	enum { CAP = 48, KEYS = 200, STEPS = 200000 };
	struct cn_tel_pairer *p;
	struct cn_tel_span sp;
	struct {
		uint8_t type;
		uint64_t tsc;
	} model[KEYS];
	unsigned open = 0;
	uint64_t s = 31337, now = 1000;

	(void)state;
	memset(model, 0, sizeof(model));
	assert_int_equal(cn_tel_pairer_create(CAP, 500, &p), 0);
	for (int k = 0; k < STEPS; k++) {
		uint64_t r = rng_next(&s);
		unsigned key = (unsigned)(r % KEYS);
		uint8_t type = (r >> 20) & 1 ? CN_TEL_END : CN_TEL_START;
		struct cn_tel_event e = ev(type, ((uint64_t)key << 48) | (key * 7919u), now);
		int got, want;

		now += 1 + (r >> 40) % 3;
		if ((r >> 30) % 97 == 0) {
			unsigned drop = 0;

			for (unsigned i = 0; i < KEYS; i++) {
				if (model[i].type != 0 && model[i].tsc < now - 500) {
					model[i].type = 0;
					drop++;
				}
			}
			open -= drop;
			assert_int_equal(cn_tel_pairer_expire(p, now), drop);
			assert_int_equal(cn_tel_pairer_open(p), open);
			continue;
		}
		if (model[key].type == 0) {
			want = 0;
			if (open < CAP) {
				model[key].type = type;
				model[key].tsc = now;
				open++;
			}
		} else if (model[key].type == type) {
			want = 0;
			model[key].tsc = now;
		} else {
			want = 1;
			model[key].type = 0;
			open--;
		}
		e.tsc = now;
		got = cn_tel_pairer_feed(p, &e, &sp);
		assert_int_equal(got, want);
		assert_int_equal(cn_tel_pairer_open(p), open);
	}
	cn_tel_pairer_destroy(&p);
}

/* ---- rings ---- */

static void test_ring_overflow(void **state)
{
	struct cn_tel_cfg cfg = {.ncores = 1, .ring_size = 64, .enabled = true, .name = "t_ovf"};
	struct cn_tel_drain_stats ds;
	struct cn_tel *t;

	(void)state;
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	assert_int_equal(cn_tel_ring_size(t), 64);
	for (int i = 0; i < 1000; i++)
		cn_tel_emit(t, 0, CN_TEL_START, CN_TEL_OP_lookup, cn_tel_session(t, 0), 1, 0, 0, 0);
	assert_int_equal(CN_STAT_GET(&t->core[0].st, events), 64);
	assert_int_equal(CN_STAT_GET(&t->core[0].st, drops), 1000 - 64);
	assert_int_equal(cn_tel_ring_depth(t, 0), 64);
	assert_int_equal(cn_tel_drain_once(t), 64);
	assert_int_equal(cn_tel_ring_depth(t, 0), 0);
	assert_int_equal(cn_tel_drain_once(t), 0);
	cn_tel_drain_stats(t, &ds);
	assert_int_equal(ds.drained, 64);
	assert_int_equal(ds.drain_passes, 2);
	assert_int_equal(ds.spans, 0);
	/* the 64 STARTs never end: counted when telemetry stops */
	cn_tel_stop(t);
	cn_tel_drain_stats(t, &ds);
	assert_int_equal(ds.spans_unmatched, 64);
	cn_tel_destroy(&t);
	assert_null(t);
}

static void test_ring_config(void **state)
{
	struct cn_tel_cfg cfg = {.ncores = 2, .enabled = true, .name = "t_cfg"};
	struct cn_tel *t, *t2;
	static const unsigned bad[] = {1, 32, 63, 100, 65535};

	(void)state;
	assert_int_equal(cn_tel_create(&cfg, &t), 0); /* 0: the default */
	assert_int_equal(cn_tel_ring_size(t), CN_TEL_RING_DEFAULT);
	assert_int_equal(cn_tel_ring_depth(t, 5), 0); /* out of range */
	assert_int_equal(cn_tel_create(&cfg, &t2), -EEXIST); /* same ring names */
	cn_tel_destroy(&t);
	cn_tel_destroy(&t); /* NULL is fine */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg.ring_size = bad[i];
		assert_int_equal(cn_tel_create(&cfg, &t), -EINVAL);
	}
	cfg.ring_size = 64;
	cfg.ncores = 0;
	assert_int_equal(cn_tel_create(&cfg, &t), -EINVAL);
	cfg.ncores = CN_MAX_CORES + 1;
	assert_int_equal(cn_tel_create(&cfg, &t), -EINVAL);
	cfg.ncores = 1;
	cfg.name = "a_name_that_is_far_too_long_for_a_ring";
	assert_int_equal(cn_tel_create(&cfg, &t), -ENAMETOOLONG);
	cfg.name = NULL; /* default prefix */
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	assert_int_equal(cn_tel_ring_size(t), 64);
	cn_tel_destroy(&t);
}

/* ---- end to end ---- */

struct counting_sub {
	uint64_t events, starts, ends, points, spans, flushes, closes;
	int fail; /* return this from every call */
};

static int cnt_event(void *arg, const struct cn_tel_event *e)
{
	struct counting_sub *c = arg;

	c->events++;
	c->starts += e->type == CN_TEL_START;
	c->ends += e->type == CN_TEL_END;
	c->points += e->type == CN_TEL_POINT;
	return c->fail;
}

static int cnt_span(void *arg, const struct cn_tel_span *sp)
{
	struct counting_sub *c = arg;

	c->spans++;
	return c->fail;
}

static int cnt_flush(void *arg)
{
	struct counting_sub *c = arg;

	c->flushes++;
	return c->fail;
}

static void cnt_close(void *arg)
{
	struct counting_sub *c = arg;

	c->closes++;
}

static const struct cn_tel_sub_ops cnt_ops = {
	.name = "count", .event = cnt_event, .span = cnt_span, .flush = cnt_flush,
	.close = cnt_close,
};

#define E2E_PER_CORE 20000
static const enum cn_tel_op e2e_ops[] = {
	CN_TEL_OP_lookup, CN_TEL_OP_store, CN_TEL_OP_retrieve, CN_TEL_OP_delete,
	CN_TEL_OP_l2_fetch,
};
#define E2E_NOPS (sizeof(e2e_ops) / sizeof(e2e_ops[0]))

struct e2e_worker {
	struct cn_tel *t;
	unsigned core;
};

static void *e2e_worker(void *arg)
{
	struct e2e_worker *w = arg;

	for (unsigned i = 0; i < E2E_PER_CORE; i++) {
		enum cn_tel_op op = e2e_ops[(i + w->core) % E2E_NOPS];
		uint64_t s = cn_tel_session(w->t, w->core);

		cn_tel_emit(w->t, w->core, CN_TEL_START, op, s, 1, 0, 1, 0);
		if (i % 1000 == 0)
			cn_tel_emit(w->t, w->core, CN_TEL_POINT, CN_TEL_OP_evict, 0, 0, 0, 1, 0);
		cn_tel_emit(w->t, w->core, CN_TEL_END, op, s, 1, 4096, 1,
			    i % 7 == 0 ? -ENOENT : 0);
	}
	return NULL;
}

static void test_end_to_end_chrome(void **state)
{
	struct cn_tel_cfg cfg = {.ncores = 2, .ring_size = 65536, .enabled = true, .name = "t_e2e"};
	char path[] = "/tmp/cn_test_tel_XXXXXX";
	const struct cn_tel_sub_ops *ops;
	struct counting_sub cnt = {0};
	struct e2e_worker w[2];
	pthread_t th[2];
	struct cn_tel_drain_stats ds;
	struct cn_hist *h = malloc(sizeof(*h));
	uint64_t per_op[CN_TEL_OP_MAX] = {0}, x_per_op[CN_TEL_OP_MAX] = {0}, nx = 0, nm = 0;
	const uint64_t total = 2 * E2E_PER_CORE;
	struct cn_tel *t;
	json_error_t jerr;
	json_t *root, *arr, *e;
	size_t idx;
	void *arg;
	int fd;

	(void)state;
	assert_non_null(h);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	assert_int_equal(cn_tel_chrome_sink_create(path, "test \"tel\"", &ops, &arg), 0);
	assert_int_equal(cn_tel_subscribe(t, ops, arg), 0);
	assert_int_equal(cn_tel_subscribe(t, &cnt_ops, &cnt), 0);
	assert_int_equal(cn_tel_start(t), 0);
	assert_int_equal(cn_tel_start(t), -EBUSY);
	assert_int_equal(cn_tel_subscribe(t, &cnt_ops, &cnt), -EBUSY);
	for (unsigned c = 0; c < 2; c++) {
		w[c] = (struct e2e_worker){.t = t, .core = c};
		assert_int_equal(pthread_create(&th[c], NULL, e2e_worker, &w[c]), 0);
	}
	for (unsigned c = 0; c < 2; c++)
		pthread_join(th[c], NULL);
	cn_tel_stop(t);
	cn_tel_stop(t); /* twice is fine */

	for (unsigned c = 0; c < 2; c++) {
		assert_int_equal(CN_STAT_GET(&t->core[c].st, drops), 0);
		for (unsigned i = 0; i < E2E_PER_CORE; i++)
			per_op[e2e_ops[(i + c) % E2E_NOPS]]++;
	}
	cn_tel_drain_stats(t, &ds);
	assert_int_equal(ds.spans, total);
	assert_int_equal(ds.spans_unmatched, 0);
	assert_int_equal(ds.drained, 2 * total + 2 * (E2E_PER_CORE / 1000));
	assert_int_equal(ds.subscriber_errors, 0);
	assert_true(ds.drain_passes >= 1);
	for (unsigned op = 0; op < CN_TEL_OP_MAX; op++) {
		cn_tel_op_hist(t, (enum cn_tel_op)op, h);
		assert_int_equal(h->count, per_op[op]);
		if (h->count != 0)
			assert_true(cn_hist_quantile(h, 0.99) >= cn_hist_quantile(h, 0.5));
	}
	assert_int_equal(cnt.spans, total);
	assert_int_equal(cnt.starts, total);
	assert_int_equal(cnt.ends, total);
	assert_int_equal(cnt.points, 2 * (E2E_PER_CORE / 1000));
	assert_true(cnt.flushes >= 1);
	assert_int_equal(cnt.closes, 1);
	cn_tel_destroy(&t);
	assert_int_equal(cnt.closes, 1); /* not closed twice */

	root = json_load_file(path, 0, &jerr);
	if (root == NULL)
		fail_msg("%s: line %d: %s", path, jerr.line, jerr.text);
	arr = json_object_get(root, "traceEvents");
	assert_true(json_is_array(arr));
	json_array_foreach(arr, idx, e) {
		const char *ph = json_string_value(json_object_get(e, "ph"));
		const char *name = json_string_value(json_object_get(e, "name"));
		int op;

		assert_non_null(ph);
		assert_non_null(name);
		if (strcmp(ph, "M") == 0) {
			nm++;
			if (strcmp(name, "process_name") == 0)
				assert_string_equal(json_string_value(json_object_get(
					json_object_get(e, "args"), "name")), "test \"tel\"");
			continue;
		}
		assert_string_equal(ph, "X");
		nx++;
		op = cn_tel_op_find(name);
		assert_true(op >= 0);
		x_per_op[op]++;
		assert_string_equal(json_string_value(json_object_get(e, "cat")), "cachenode");
		assert_true(json_number_value(json_object_get(e, "ts")) >= 0.0);
		assert_true(json_number_value(json_object_get(e, "dur")) >= 0.0);
		assert_true(json_integer_value(json_object_get(e, "tid")) < 2);
		assert_int_equal(json_integer_value(json_object_get(e, "pid")), getpid());
		assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "args"),
								    "bytes")), 4096);
		assert_non_null(json_object_get(json_object_get(e, "args"), "session"));
		assert_non_null(json_object_get(json_object_get(e, "args"), "status"));
	}
	assert_int_equal(nx, total);
	assert_int_equal(nm, 3); /* process_name, thread_name x 2 cores */
	assert_memory_equal(x_per_op, per_op, sizeof(per_op));
	json_decref(root);
	unlink(path);
	free(h);
}

/* Drops nothing emitted before stop, even with no pass in between. */
static void test_stop_drains_everything(void **state)
{
	struct cn_tel_cfg cfg = {.ncores = 1, .ring_size = 4096, .enabled = true, .name = "t_stop"};
	struct counting_sub cnt = {0};
	struct cn_tel_drain_stats ds;
	struct cn_tel *t;

	(void)state;
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	assert_int_equal(cn_tel_subscribe(t, &cnt_ops, &cnt), 0);
	assert_int_equal(cn_tel_start(t), 0);
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 20; i++) {
			uint64_t s = cn_tel_session(t, 0);

			cn_tel_emit(t, 0, CN_TEL_START, CN_TEL_OP_gpu_copy, s, 0, 0, 0, 0);
			cn_tel_emit(t, 0, CN_TEL_END, CN_TEL_OP_gpu_copy, s, 0, 1, 0, 0);
		}
		if (round % 10 == 0)
			usleep(2000);
	}
	cn_tel_stop(t);
	cn_tel_drain_stats(t, &ds);
	assert_int_equal(ds.spans, 1000);
	assert_int_equal(cnt.spans, 1000);
	assert_int_equal(cnt.closes, 1);
	/* after stop: drain_once still feeds histograms, no subscriber is called */
	cn_tel_emit(t, 0, CN_TEL_START, CN_TEL_OP_gpu_copy, 77, 0, 0, 0, 0);
	cn_tel_emit(t, 0, CN_TEL_END, CN_TEL_OP_gpu_copy, 77, 0, 0, 0, 0);
	assert_int_equal(cn_tel_drain_once(t), 2);
	cn_tel_drain_stats(t, &ds);
	assert_int_equal(ds.spans, 1001);
	assert_int_equal(cnt.spans, 1000);
	assert_int_equal(cn_tel_start(t), -EBUSY);
	cn_tel_destroy(&t);
}

static void test_subscriber_errors(void **state)
{
	struct cn_tel_cfg cfg = {.ncores = 1, .ring_size = 64, .enabled = true, .name = "t_suberr"};
	struct counting_sub cnt = {.fail = -EIO};
	struct cn_tel_drain_stats ds;
	struct cn_tel *t;

	(void)state;
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	assert_int_equal(cn_tel_subscribe(t, &cnt_ops, &cnt), 0);
	cn_tel_emit(t, 0, CN_TEL_START, CN_TEL_OP_store, 1, 0, 0, 0, 0);
	cn_tel_emit(t, 0, CN_TEL_END, CN_TEL_OP_store, 1, 0, 0, 0, 0);
	assert_int_equal(cn_tel_drain_once(t), 2);
	cn_tel_drain_stats(t, &ds);
	/* 2 events + 1 span + 1 flush */
	assert_int_equal(ds.subscriber_errors, 4);
	assert_int_equal(ds.spans, 1);
	cn_tel_destroy(&t);
	assert_int_equal(cnt.closes, 1);
}

static void test_chrome_sink_errors(void **state)
{
	const struct cn_tel_sub_ops *ops = NULL;
	void *arg = NULL;

	(void)state;
	assert_int_equal(cn_tel_chrome_sink_create("/nonexistent/dir/trace.json", NULL, &ops, &arg),
			 -ENOENT);
	if (access("/dev/full", W_OK) == 0)
		assert_int_equal(cn_tel_chrome_sink_create("/dev/full", NULL, &ops, &arg), -ENOSPC);
	assert_int_equal(cn_tel_chrome_sink_create(NULL, NULL, &ops, &arg), -EINVAL);
	assert_null(arg);
}

/* The built-in log: errors other than -ENOENT/-EEXIST, one line per op per second. */
static void test_log_rate_limit(void **state)
{
	struct cn_tel_cfg cfg = {.ncores = 1, .ring_size = 256, .enabled = true, .name = "t_log"};
	struct cn_tel *t;
	char *buf = NULL, *p;
	size_t len = 0;
	FILE *mem;
	int failed_store = 0, failed_retrieve = 0, suppressed = 0;

	(void)state;
	mem = open_memstream(&buf, &len);
	assert_non_null(mem);
	assert_int_equal(rte_openlog_stream(mem), 0);
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	for (uint64_t s = 1; s <= 40; s++) {
		int32_t st = s <= 10 ? -ENOSPC : s <= 20 ? -ENOENT : s <= 30 ? -EEXIST : 0;

		cn_tel_emit(t, 0, CN_TEL_START, CN_TEL_OP_store, s, 1, 0, 0, 0);
		cn_tel_emit(t, 0, CN_TEL_END, CN_TEL_OP_store, s, 1, 0, 0, st);
	}
	cn_tel_emit(t, 0, CN_TEL_END, CN_TEL_OP_retrieve, 99, 1, 0, 0, -EIO);
	assert_int_equal(cn_tel_drain_once(t), 81);
	cn_tel_destroy(&t); /* close reports what was suppressed */
	rte_openlog_stream(NULL);
	fclose(mem);
	for (p = buf; (p = strstr(p, "cachenode: store failed")) != NULL; p++)
		failed_store++;
	for (p = buf; (p = strstr(p, "cachenode: retrieve failed")) != NULL; p++)
		failed_retrieve++;
	for (p = buf; (p = strstr(p, "cachenode: store: 9 more failures suppressed")) != NULL; p++)
		suppressed++;
	if (failed_store != 1 || failed_retrieve != 1 || suppressed != 1)
		fail_msg("unexpected log:\n%s", buf);
	assert_null(strstr(buf, "No such file")); /* -ENOENT is not logged */
	assert_non_null(strstr(buf, "No space left on device"));
	free(buf);
}

/* ---- disabled ---- */

static void test_disabled(void **state)
{
	struct cn_tel_cfg cfg = {.ncores = 2, .ring_size = 64, .enabled = false, .name = "t_off"};
	struct counting_sub cnt = {0};
	struct cn_tel_drain_stats ds, zero;
	struct cn_hist *h = malloc(sizeof(*h)), *hz = calloc(1, sizeof(*hz));
	struct cn_tel *t;

	(void)state;
	assert_non_null(h);
	assert_non_null(hz);
	memset(&zero, 0, sizeof(zero));
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	assert_false(t->enabled);
	assert_null(t->core[0].ring);
	assert_int_equal(cn_tel_subscribe(t, &cnt_ops, &cnt), 0);
	assert_int_equal(cn_tel_start(t), 0);
	for (int i = 0; i < 100; i++) {
		uint64_t s = cn_tel_session(t, 1);

		cn_tel_emit(t, 1, CN_TEL_START, CN_TEL_OP_lookup, s, 1, 0, 0, 0);
		cn_tel_emit(t, 1, CN_TEL_END, CN_TEL_OP_lookup, s, 1, 0, 0, -ENOSPC);
	}
	assert_int_equal(CN_STAT_GET(&t->core[1].st, events), 0);
	assert_int_equal(CN_STAT_GET(&t->core[1].st, drops), 0);
	assert_int_equal(cn_tel_ring_depth(t, 1), 0);
	assert_int_equal(cn_tel_ring_size(t), 0);
	assert_int_equal(cn_tel_drain_once(t), 0);
	cn_tel_drain_stats(t, &ds);
	assert_memory_equal(&ds, &zero, sizeof(ds));
	for (unsigned op = 0; op < CN_TEL_OP_MAX; op++) {
		cn_tel_op_hist(t, (enum cn_tel_op)op, h);
		assert_memory_equal(h, hz, sizeof(*h));
	}
	cn_tel_stop(t);
	assert_int_equal(cnt.events, 0);
	assert_int_equal(cnt.closes, 1);
	cn_tel_destroy(&t);
	free(hz);
	free(h);
}

/* ---- idle cost ---- */

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void test_idle_drain_sleeps(void **state)
{
	struct cn_tel_cfg cfg = {.ncores = 4, .ring_size = 64, .enabled = true, .name = "t_idle"};
	struct cn_tel_drain_stats ds;
	struct cn_tel *t;
	double c0, c1;

	(void)state;
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	assert_int_equal(cn_tel_start(t), 0);
	c0 = cpu_s();
	usleep(500000);
	c1 = cpu_s();
	cn_tel_drain_stats(t, &ds);
	cn_tel_destroy(&t);
	/*
	 * empty passes back off from CN_TEL_DRAIN_IDLE_US (5 ms) to
	 * CN_TEL_DRAIN_IDLE_MAX_US (100 ms): about 10 passes in 0.5 s (a fixed
	 * 5 ms sleep would make about 100)
	 */
	assert_true(ds.drain_passes < 30);
	if (c1 - c0 > 0.05)
		fail_msg("idle drain used %.3f s CPU in 0.5 s", c1 - c0);
}

/*
 * A light steady load (one event every ~200 us) must not turn the drain into
 * a busy loop, and nothing emitted may be lost.
 */
struct trickle_arg {
	struct cn_tel *t;
	volatile bool stop;
	unsigned sent;
};

static void *trickle(void *p)
{
	struct trickle_arg *a = p;

	while (!a->stop) {
		cn_tel_emit(a->t, 0, CN_TEL_POINT, CN_TEL_OP_evict, 1, 1, 0, 0, 0);
		a->sent++;
		usleep(200);
	}
	return NULL;
}

static void test_light_load_drain_sleeps(void **state)
{
	struct cn_tel_cfg cfg = {.ncores = 1, .ring_size = 1024, .enabled = true, .name = "t_lite"};
	struct cn_tel_drain_stats ds;
	struct trickle_arg a = {0};
	pthread_t th;
	struct cn_tel *t;
	double c0, c1;

	(void)state;
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	assert_int_equal(cn_tel_start(t), 0);
	a.t = t;
	pthread_create(&th, NULL, trickle, &a);
	c0 = cpu_s();
	usleep(500000);
	c1 = cpu_s();
	a.stop = true;
	pthread_join(th, NULL);
	cn_tel_stop(t);
	cn_tel_drain_stats(t, &ds);
	assert_int_equal(ds.drained, a.sent); /* nothing lost */
	assert_true(ds.drain_passes < 1000);
	/* emitter + drain together: a busy drain alone would be ~0.5 s */
	if (c1 - c0 > 0.15)
		fail_msg("drain under light load used %.3f s CPU in 0.5 s", c1 - c0);
	cn_tel_destroy(&t);
}

/* ---- tables ---- */

static void test_tables(void **state)
{
	(void)state;
	assert_int_equal(cn_tel_op_find("retrieve"), CN_TEL_OP_retrieve);
	assert_int_equal(cn_tel_op_find("gpu_copy"), CN_TEL_OP_gpu_copy);
	assert_int_equal(cn_tel_op_find("nope"), -1);
	assert_int_equal(cn_tel_op_find(NULL), -1);
	for (unsigned i = 0; i < CN_TEL_OP_MAX; i++) {
		assert_non_null(cn_tel_op_names[i]);
		assert_non_null(cn_tel_op_help[i]);
		assert_int_equal(cn_tel_op_find(cn_tel_op_names[i]), (int)i);
	}
	assert_int_equal(cn_tel_core_metric_count, 4);
	assert_string_equal(cn_tel_core_metric_desc[0].name, "events");
	assert_string_equal(cn_tel_core_metric_desc[1].name, "drops");
	assert_string_equal(cn_tel_core_metric_desc[3].name, "trace_drops");
	assert_int_equal(cn_tel_drain_metric_count, 10);
	assert_string_equal(cn_tel_drain_metric_desc[5].name, "drain_lag_ns");
	assert_string_equal(cn_tel_drain_metric_desc[6].name, "trace_written");
	assert_int_equal(cn_tel_drain_metric_desc[5].type, CN_METRIC_GAUGE);
	assert_int_equal(cn_tel_drain_metric_desc[0].type, CN_METRIC_COUNTER);
	assert_true(cn_tel_tsc_hz() > 0);
}

/* ---- DPDK command shim ---- */

static int dummy_cmd(void *ctx, const char *params, struct rte_tel_data *d)
{
	return 0;
}

static void test_dpdk_register(void **state)
{
	char longname[64], longhelp[200];
	int ctx;
	struct cn_tel_cmd good[] = {
		{"/cntest/a", "first", dummy_cmd},
		{"/cntest/b_2", "second", dummy_cmd},
	};
	struct cn_tel_cmd bad[] = {
		{"cntest/noslash", "h", dummy_cmd},
		{"/cntest/with space", "h", dummy_cmd},
		{"/cntest/a.b", "h", dummy_cmd},
		{"/cntest/dash-no", "h", dummy_cmd},
		{longname, "h", dummy_cmd},
		{"/cntest/c", longhelp, dummy_cmd},
		{"/cntest/c", NULL, dummy_cmd},
		{"/cntest/c", "h", NULL},
		{NULL, "h", dummy_cmd},
	};

	(void)state;
	memset(longname, 'x', sizeof(longname));
	longname[0] = '/';
	longname[56] = '\0'; /* 56 chars: one too many */
	memset(longhelp, 'h', sizeof(longhelp));
	longhelp[128] = '\0';
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cn_tel_cmd two[2] = {good[0], bad[i]};

		assert_int_equal(cn_tel_dpdk_register(two, 2, &ctx), -EINVAL);
	}
	assert_int_equal(cn_tel_dpdk_register(good, 2, NULL), -EINVAL);
	assert_int_equal(cn_tel_dpdk_register(good, 0, &ctx), -EINVAL);
	longname[55] = '\0'; /* 55 is allowed */
	good[1].name = longname;
	assert_int_equal(cn_tel_dpdk_register(good, 2, &ctx), 0);
	assert_int_equal(cn_tel_dpdk_register(good, 2, &ctx), -EBUSY);
	cn_tel_dpdk_unregister();
	cn_tel_dpdk_unregister();
	assert_int_equal(cn_tel_dpdk_register(good, 1, &ctx), 0);
	cn_tel_dpdk_unregister();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hist_small_values_exact),
		cmocka_unit_test(test_hist_bounds_monotonic_covering),
		cmocka_unit_test(test_hist_quantiles_exponential),
		cmocka_unit_test(test_hist_quantiles_lognormal),
		cmocka_unit_test(test_hist_count_le),
		cmocka_unit_test(test_hist_empty_and_snapshot),
		cmocka_unit_test(test_pairer_in_order),
		cmocka_unit_test(test_pairer_out_of_order),
		cmocka_unit_test(test_pairer_interleaved),
		cmocka_unit_test(test_pairer_expire_missing_end),
		cmocka_unit_test(test_pairer_table_full),
		cmocka_unit_test(test_pairer_random_vs_model),
		cmocka_unit_test(test_ring_overflow),
		cmocka_unit_test(test_ring_config),
		cmocka_unit_test(test_end_to_end_chrome),
		cmocka_unit_test(test_stop_drains_everything),
		cmocka_unit_test(test_subscriber_errors),
		cmocka_unit_test(test_chrome_sink_errors),
		cmocka_unit_test(test_log_rate_limit),
		cmocka_unit_test(test_disabled),
		cmocka_unit_test(test_idle_drain_sleeps),
		cmocka_unit_test(test_light_load_drain_sleeps),
		cmocka_unit_test(test_tables),
		cmocka_unit_test(test_dpdk_register),
	};
	int ret;

	if (cn_test_eal_init("test_tel") < 0)
		return 1;
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	rte_eal_cleanup();
	return ret;
}
