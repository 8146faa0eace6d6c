/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L1 tier: slab classes, index, eviction order and watermarks, pinned
 * chunks, configuration errors, a multi-threaded stress run, and the LRU
 * policy on its own. Runs without hugepages (the pool is an anonymous
 * mapping); every instance gets its own name because DPDK object names are
 * global to the process.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cn_l1.h"
#include "cn_test_eal.h"

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* ---- helpers ---- */

static uint32_t mix32(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	x ^= x >> 16;
	return x;
}

/* Key @n of key space @space: distinct for distinct (space, n). */
static struct cn_key key_of(uint32_t space, uint32_t n)
{
	uint32_t w[CN_KEY_LEN / 4];
	struct cn_key k;

	w[0] = n;
	w[1] = space;
	for (unsigned i = 2; i < CN_KEY_LEN / 4; i++)
		w[i] = mix32(n * 8 + i + (space << 20));
	memcpy(k.b, w, sizeof(k.b));
	return k;
}

static uint32_t key_seed(const struct cn_key *k)
{
	uint32_t s = 0;

	for (unsigned i = 0; i < CN_KEY_LEN; i++)
		s = s * 31 + k->b[i];
	return mix32(s);
}

/* The bytes a chunk of @k holds: derived from the key, so any reader can check them. */
static void fill(void *p, uint32_t len, const struct cn_key *k)
{
	uint32_t s = key_seed(k);
	uint8_t *b = p;

	for (uint32_t i = 0; i < len; i++)
		b[i] = (uint8_t)((s + i * 2654435761U) >> 24);
}

static bool bytes_ok(const void *p, uint32_t len, const struct cn_key *k)
{
	uint32_t s = key_seed(k);
	const uint8_t *b = p;

	for (uint32_t i = 0; i < len; i++)
		if (b[i] != (uint8_t)((s + i * 2654435761U) >> 24))
			return false;
	return true;
}

static int store(struct cn_l1 *l1, unsigned core, const struct cn_key *k, uint32_t len)
{
	struct cn_l1_ref ref;
	int r = cn_l1_reserve(l1, core, k, len, &ref);

	if (r < 0)
		return r;
	fill(ref.data, len, k);
	return cn_l1_commit(l1, core, &ref);
}

/* Pin, compare length and bytes, unpin: 0, -ENOENT, or -EIO on wrong content. */
static int check(struct cn_l1 *l1, unsigned core, const struct cn_key *k, uint32_t len)
{
	struct cn_l1_ref ref;
	int r = cn_l1_pin(l1, core, k, &ref);

	if (r < 0)
		return r;
	if (ref.len != len || !bytes_ok(ref.data, ref.len, k))
		r = -EIO;
	cn_l1_unpin(l1, core, &ref);
	return r;
}

static struct cn_l1_cfg cfg_of(const char *name, size_t size, size_t max_chunk)
{
	struct cn_l1_cfg cfg = {
		.size = size,
		.max_chunk = max_chunk,
		.ncores = 1,
		.socket_id = -1,
		.name = name,
	};
	return cfg;
}

static struct cn_l1 *make(const struct cn_l1_cfg *cfg)
{
	struct cn_l1 *l1 = NULL;

	assert_int_equal(cn_l1_create(cfg, &l1), 0);
	assert_non_null(l1);
	return l1;
}

static struct cn_l1_info info_of(struct cn_l1 *l1)
{
	struct cn_l1_info info;

	cn_l1_get_info(l1, &info);
	return info;
}

static struct cn_l1_stats stats_of(struct cn_l1 *l1)
{
	struct cn_l1_stats s;

	cn_l1_stats_sum(l1, &s);
	return s;
}

/* ---- configuration ---- */

static void create_refuses_bad_config(void **state)
{
	struct cn_l1_cfg good = cfg_of("l1_badcfg", 1 * MiB, 64 * KiB), cfg;
	struct cn_l1 *l1 = NULL;

#define REFUSED(field, value)                                                                      \
	do {                                                                                       \
		cfg = good;                                                                        \
		cfg.field = value;                                                                 \
		assert_int_equal(cn_l1_create(&cfg, &l1), -EINVAL);                                \
		assert_null(l1);                                                                   \
	} while (0)
	REFUSED(max_chunk, 2 * MiB); /* max_chunk > size */
	REFUSED(max_chunk, 0);
	REFUSED(size, 0);
	REFUSED(min_chunk, 128 * KiB); /* > max_chunk */
	REFUSED(eviction, "nope");
	REFUSED(ncores, 0);
	REFUSED(ncores, CN_MAX_CORES + 1);
	REFUSED(name, "a_name_far_too_long_for_dpdk");
	cfg = good;
	cfg.high_wm_pct = 80;
	cfg.low_wm_pct = 80; /* low >= high */
	assert_int_equal(cn_l1_create(&cfg, &l1), -EINVAL);
	cfg.low_wm_pct = 85;
	assert_int_equal(cn_l1_create(&cfg, &l1), -EINVAL);
	cfg.high_wm_pct = 101;
	assert_int_equal(cn_l1_create(&cfg, &l1), -EINVAL);
	cfg = good;
	cfg.low_wm_pct = 96; /* default high is 95 */
	assert_int_equal(cn_l1_create(&cfg, &l1), -EINVAL);
	assert_null(l1);
#undef REFUSED

	/* The good one works, and a second instance under the same name does not. */
	l1 = make(&good);
	struct cn_l1 *dup = NULL;
	assert_true(cn_l1_create(&good, &dup) < 0);
	assert_null(dup);

	struct cn_l1_info info = info_of(l1);
	assert_int_equal(info.capacity, 1 * MiB);
	assert_int_equal(info.page_size, 64 * KiB);
	assert_int_equal(info.pages_total, 16);
	assert_int_equal(info.pages_free, 16);
	assert_int_equal(info.max_chunk, 64 * KiB);
	assert_int_equal(info.high_wm, 1 * MiB * 95 / 100);
	assert_int_equal(info.low_wm, 1 * MiB * 90 / 100);
	assert_string_equal(info.eviction, "lru");
	assert_false(info.hugepages);
	assert_true(info.nclasses >= 2);
	assert_int_equal(info.used + info.payload + info.chunks + info.reserved + info.pinned, 0);

	void *base;
	size_t len;
	cn_l1_region(l1, &base, &len);
	assert_non_null(base);
	assert_int_equal(len, 1 * MiB);
	assert_int_equal((uintptr_t)base % 4096, 0);

	assert_null(cn_l1_core_stats(l1, 1));
	assert_non_null(cn_l1_core_stats(l1, 0));
	assert_int_equal(cn_l1_metric_count, 14);
	assert_string_equal(cn_l1_metric_desc[0].name, "lookups");

	cn_l1_destroy(&l1);
	assert_null(l1);
	cn_l1_destroy(&l1); /* accepts NULL */
	cn_l1_destroy(NULL);

	/* A size that is not a whole number of pages is rounded down. */
	cfg = cfg_of("l1_round", 1 * MiB + 5000, 100 * KiB);
	l1 = make(&cfg);
	info = info_of(l1);
	assert_int_equal(info.page_size, 100 * KiB);
	assert_int_equal(info.pages_total, 10);
	assert_int_equal(info.capacity, 1000 * KiB);
	cn_l1_destroy(&l1);
}

static void reserve_refuses_bad_lengths(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_badlen", 1 * MiB, 64 * KiB);
	struct cn_l1 *l1 = make(&cfg);
	struct cn_key k = key_of(1, 1);
	struct cn_l1_ref ref;

	assert_int_equal(cn_l1_reserve(l1, 0, &k, 0, &ref), -EINVAL);
	assert_int_equal(cn_l1_reserve(l1, 0, &k, 64 * KiB + 1, &ref), -E2BIG);
	assert_int_equal(cn_l1_reserve(l1, 0, &k, UINT32_MAX, &ref), -E2BIG);
	assert_int_equal(stats_of(l1).errors, 3);
	assert_int_equal(info_of(l1).reserved, 0);
	assert_int_equal(info_of(l1).used, 0);
	/* The largest allowed chunk is fine. */
	assert_int_equal(store(l1, 0, &k, 64 * KiB), 0);
	assert_int_equal(check(l1, 0, &k, 64 * KiB), 0);
	cn_l1_destroy(&l1);
}

/* ---- slab classes ---- */

static void chunks_of_every_size_round_trip(void **state)
{
	static const uint32_t lens[] = {
		1,	   2,	      63,	 64,	    65,	       100,	  1000,
		4095,	   4096,      4097,	 5000,	    8191,      8192,	  8193,
		12345,	   30000,     65535,	 65536,	    65537,     100000,	  131072,
		200000,	   250000,    262143,	 262144,
	};
	const size_t n = sizeof(lens) / sizeof(lens[0]);
	struct cn_l1_cfg cfg = cfg_of("l1_sizes", 16 * MiB, 256 * KiB);
	struct cn_l1 *l1 = make(&cfg);
	struct cn_l1_info info;
	struct cn_l1_ref ref;
	uint64_t payload = 0, bound = 0;
	void *base;
	size_t region;

	cn_l1_region(l1, &base, &region);
	for (size_t i = 0; i < n; i++) {
		struct cn_key k = key_of(2, (uint32_t)i);

		assert_int_equal(cn_l1_reserve(l1, 0, &k, lens[i], &ref), 0);
		assert_int_equal(ref.len, lens[i]);
		/* Inside the pool (RDMA/CUDA see only the region), page aligned for DMA. */
		assert_true((uint8_t *)ref.data >= (uint8_t *)base);
		assert_true((uint8_t *)ref.data + ref.len <= (uint8_t *)base + region);
		assert_int_equal((uintptr_t)ref.data % 4096, 0);
		fill(ref.data, ref.len, &k);
		assert_int_equal(cn_l1_commit(l1, 0, &ref), 0);
		payload += lens[i];
		/* A slot is at most ~1.25x the chunk, plus 4 KiB rounding. */
		bound += (uint64_t)lens[i] * 5 / 4 + 4096;
	}
	for (size_t i = 0; i < n; i++) {
		struct cn_key k = key_of(2, (uint32_t)i);

		assert_int_equal(check(l1, 0, &k, lens[i]), 0);
	}
	info = info_of(l1);
	assert_int_equal(info.chunks, n);
	assert_int_equal(info.payload, payload);
	assert_true(info.used >= payload);
	assert_true(info.used <= bound);
	assert_int_equal(info.reserved, 0);
	assert_int_equal(info.pinned, 0);
	assert_int_equal(stats_of(l1).stores, n);
	assert_int_equal(stats_of(l1).store_bytes, payload);
	assert_int_equal(stats_of(l1).retrieve_bytes, payload);
	assert_int_equal(stats_of(l1).evictions, 0);

	/* An aborted reservation leaves nothing behind. */
	struct cn_key ka = key_of(2, 1000);
	assert_int_equal(cn_l1_reserve(l1, 0, &ka, 5000, &ref), 0);
	assert_int_equal(info_of(l1).reserved, 1);
	cn_l1_abort(l1, 0, &ref);
	assert_int_equal(info_of(l1).reserved, 0);
	assert_int_equal(info_of(l1).used, info.used);
	assert_int_equal(info_of(l1).payload, info.payload);
	assert_false(cn_l1_contains(l1, 0, &ka));
	assert_int_equal(stats_of(l1).store_aborts, 1);

	/* Deleting everything gives every page back. */
	for (size_t i = 0; i < n; i++) {
		struct cn_key k = key_of(2, (uint32_t)i);

		assert_int_equal(cn_l1_delete(l1, 0, &k), 0);
	}
	info = info_of(l1);
	assert_int_equal(info.used, 0);
	assert_int_equal(info.payload, 0);
	assert_int_equal(info.chunks, 0);
	assert_int_equal(info.pages_free, info.pages_total);
	cn_l1_destroy(&l1);
}

/* With a small min_chunk, small chunks take small slots: within ~1.25x, 64-byte rounded. */
static void small_classes_pack_small_chunks(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_small", 1 * MiB, 64 * KiB);
	struct cn_l1 *l1;
	uint64_t used = 0;

	cfg.min_chunk = 64;
	l1 = make(&cfg);
	assert_true(info_of(l1).nclasses > 10);
	for (uint32_t len = 1; len <= 64 * KiB; len = len * 3 + 1) {
		struct cn_key k = key_of(17, len);
		uint64_t slot;

		assert_int_equal(store(l1, 0, &k, len), 0);
		slot = info_of(l1).used - used;
		used += slot;
		assert_true(slot >= len);
		if (len <= 64)
			assert_int_equal(slot, 64);
		else if (len < 4096)
			assert_true(slot <= (uint64_t)len * 5 / 4 + 64);
		else
			assert_true(slot <= (uint64_t)len * 5 / 4 + 4096);
		assert_int_equal(check(l1, 0, &k, len), 0);
	}
	cn_l1_destroy(&l1);
}

static void pages_move_between_classes(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_pages", 2 * MiB, 64 * KiB);
	struct cn_l1 *l1;
	struct cn_l1_info info;
	const uint32_t npages = 32, small = 4096, per_page = 16;

	cfg.high_wm_pct = 100; /* no watermark eviction: only allocation pressure */
	cfg.low_wm_pct = 99;
	l1 = make(&cfg);

	/* Fill the whole pool with the smallest class. */
	for (uint32_t i = 0; i < npages * per_page; i++) {
		struct cn_key k = key_of(3, i);

		assert_int_equal(store(l1, 0, &k, small), 0);
	}
	info = info_of(l1);
	assert_int_equal(info.pages_free, 0);
	assert_int_equal(info.used, info.capacity);
	assert_int_equal(stats_of(l1).evictions, 0);

	/* Delete all: every page is free again, and big chunks fit without eviction. */
	for (uint32_t i = 0; i < npages * per_page; i++) {
		struct cn_key k = key_of(3, i);

		assert_int_equal(cn_l1_delete(l1, 0, &k), 0);
	}
	assert_int_equal(info_of(l1).pages_free, npages);
	for (uint32_t i = 0; i < npages; i++) {
		struct cn_key k = key_of(4, i);

		assert_int_equal(store(l1, 0, &k, 64 * KiB), 0);
	}
	assert_int_equal(info_of(l1).pages_free, 0);
	assert_int_equal(stats_of(l1).evictions, 0);
	for (uint32_t i = 0; i < npages; i++) {
		struct cn_key k = key_of(4, i);

		assert_int_equal(check(l1, 0, &k, 64 * KiB), 0);
		assert_int_equal(cn_l1_delete(l1, 0, &k), 0);
	}

	/*
	 * Full of small chunks again, then one big chunk: the oldest small
	 * chunks are evicted until a page is entirely free. The first 16
	 * stored share one page, so exactly those 16 go.
	 */
	for (uint32_t i = 0; i < npages * per_page; i++) {
		struct cn_key k = key_of(5, i);

		assert_int_equal(store(l1, 0, &k, small), 0);
	}
	struct cn_key big = key_of(6, 0);
	assert_int_equal(store(l1, 0, &big, 64 * KiB), 0);
	assert_int_equal(check(l1, 0, &big, 64 * KiB), 0);
	uint32_t gone = 0;
	for (uint32_t i = 0; i < npages * per_page; i++) {
		struct cn_key k = key_of(5, i);
		bool present = cn_l1_contains(l1, 0, &k);

		assert_int_equal(present, i >= per_page);
		gone += !present;
	}
	assert_int_equal(gone, per_page);
	assert_int_equal(stats_of(l1).evictions, gone);
	assert_int_equal(stats_of(l1).evicted_bytes, (uint64_t)gone * small);
	assert_int_equal(info_of(l1).chunks, npages * per_page - gone + 1);
	cn_l1_destroy(&l1);
}

/* ---- index ---- */

static void index_finds_stored_keys_and_forgets_deleted_ones(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_index", 4 * MiB, 64 * KiB);
	struct cn_l1 *l1 = make(&cfg);
	const uint32_t n = 200;
	struct cn_l1_stats s;

	for (uint32_t i = 0; i < n; i++) {
		struct cn_key k = key_of(7, i);

		assert_int_equal(store(l1, 0, &k, 1000 + i), 0);
	}
	for (uint32_t i = 0; i < n; i++) {
		struct cn_key k = key_of(7, i);

		assert_true(cn_l1_contains(l1, 0, &k));
		assert_int_equal(check(l1, 0, &k, 1000 + i), 0);
	}
	s = stats_of(l1);
	assert_int_equal(s.lookups, n);
	assert_int_equal(s.hits, 2 * n);
	assert_int_equal(s.retrieves, n);
	assert_int_equal(s.misses, 0);

	for (uint32_t i = 0; i < n / 2; i++) {
		struct cn_key k = key_of(7, i);

		assert_int_equal(cn_l1_delete(l1, 0, &k), 0);
	}
	for (uint32_t i = 0; i < n; i++) {
		struct cn_key k = key_of(7, i);

		if (i < n / 2) {
			assert_false(cn_l1_contains(l1, 0, &k));
			assert_int_equal(check(l1, 0, &k, 1000 + i), -ENOENT);
			assert_int_equal(cn_l1_delete(l1, 0, &k), -ENOENT);
		} else {
			assert_int_equal(check(l1, 0, &k, 1000 + i), 0);
		}
	}
	struct cn_key never = key_of(8, 0);
	assert_false(cn_l1_contains(l1, 0, &never));
	s = stats_of(l1);
	assert_int_equal(s.deletes, n / 2);
	assert_int_equal(s.misses, n / 2 * 2 + 1);
	assert_int_equal(s.lookups, n + n / 2 + 1);
	assert_int_equal(info_of(l1).chunks, n - n / 2);
	cn_l1_destroy(&l1);
}

static void reserved_chunk_is_invisible_until_commit(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_reserved", 1 * MiB, 64 * KiB);
	struct cn_l1 *l1 = make(&cfg);
	struct cn_key k = key_of(9, 0);
	struct cn_l1_ref ref, pin;

	assert_int_equal(cn_l1_reserve(l1, 0, &k, 3000, &ref), 0);
	fill(ref.data, ref.len, &k);
	assert_false(cn_l1_contains(l1, 0, &k));
	assert_int_equal(cn_l1_pin(l1, 0, &k, &pin), -ENOENT);
	assert_int_equal(cn_l1_delete(l1, 0, &k), -ENOENT);
	assert_int_equal(info_of(l1).reserved, 1);
	assert_int_equal(info_of(l1).chunks, 0);
	assert_int_equal(info_of(l1).payload, 3000);

	assert_int_equal(cn_l1_commit(l1, 0, &ref), 0);
	assert_true(cn_l1_contains(l1, 0, &k));
	assert_int_equal(check(l1, 0, &k, 3000), 0);
	assert_int_equal(info_of(l1).reserved, 0);
	assert_int_equal(info_of(l1).chunks, 1);
	cn_l1_destroy(&l1);
}

static void duplicate_store_keeps_the_first_copy(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_dup", 1 * MiB, 64 * KiB);
	struct cn_l1 *l1 = make(&cfg);
	struct cn_key k = key_of(10, 0), k2 = key_of(10, 1);
	struct cn_l1_ref ref, r1, r2;
	uint64_t used;

	assert_int_equal(store(l1, 0, &k, 5000), 0);
	used = info_of(l1).used;
	assert_int_equal(cn_l1_reserve(l1, 0, &k, 7000, &ref), -EEXIST);
	assert_int_equal(check(l1, 0, &k, 5000), 0);
	assert_int_equal(info_of(l1).used, used);
	assert_int_equal(stats_of(l1).store_exists, 1);

	/* Two writers reserve the same new key: the first commit wins. */
	assert_int_equal(cn_l1_reserve(l1, 0, &k2, 4000, &r1), 0);
	assert_int_equal(cn_l1_reserve(l1, 0, &k2, 6000, &r2), 0);
	assert_ptr_not_equal(r1.data, r2.data);
	fill(r1.data, r1.len, &k2);
	memset(r2.data, 0xbb, r2.len);
	assert_int_equal(cn_l1_commit(l1, 0, &r1), 0);
	assert_int_equal(cn_l1_commit(l1, 0, &r2), -EEXIST);
	assert_int_equal(check(l1, 0, &k2, 4000), 0);
	assert_int_equal(stats_of(l1).store_exists, 2);
	assert_int_equal(stats_of(l1).stores, 2);
	assert_int_equal(info_of(l1).chunks, 2);
	assert_int_equal(info_of(l1).reserved, 0);
	assert_int_equal(info_of(l1).payload, 5000 + 4000);
	cn_l1_destroy(&l1);
}

struct race {
	struct cn_l1 *l1;
	pthread_barrier_t *barrier;
	unsigned core;
	int reserve_rc;
	int commit_rc;
};

static void *race_commit(void *arg)
{
	struct race *r = arg;
	struct cn_key k = key_of(11, 0);
	struct cn_l1_ref ref;

	r->reserve_rc = cn_l1_reserve(r->l1, r->core, &k, 20000, &ref);
	if (r->reserve_rc == 0)
		memset(ref.data, (int)(0x10 + r->core), ref.len);
	pthread_barrier_wait(r->barrier);
	r->commit_rc = r->reserve_rc == 0 ? cn_l1_commit(r->l1, r->core, &ref) : r->reserve_rc;
	return NULL;
}

static void concurrent_commits_of_one_key_keep_one(void **state)
{
	enum { N = 4 };
	struct cn_l1_cfg cfg = cfg_of("l1_race", 2 * MiB, 64 * KiB);
	struct cn_l1 *l1;
	pthread_barrier_t barrier;
	pthread_t th[N];
	struct race r[N];
	struct cn_key k = key_of(11, 0);
	struct cn_l1_ref ref;
	int winners = 0, winner = -1;

	cfg.ncores = N;
	l1 = make(&cfg);
	pthread_barrier_init(&barrier, NULL, N);
	for (unsigned i = 0; i < N; i++) {
		r[i] = (struct race){.l1 = l1, .barrier = &barrier, .core = i};
		assert_int_equal(pthread_create(&th[i], NULL, race_commit, &r[i]), 0);
	}
	for (unsigned i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&barrier);

	for (int i = 0; i < N; i++) {
		assert_int_equal(r[i].reserve_rc, 0);
		if (r[i].commit_rc == 0) {
			winners++;
			winner = i;
		} else {
			assert_int_equal(r[i].commit_rc, -EEXIST);
		}
	}
	assert_int_equal(winners, 1);
	assert_int_equal(cn_l1_pin(l1, 0, &k, &ref), 0);
	assert_int_equal(ref.len, 20000);
	for (uint32_t i = 0; i < ref.len; i++)
		assert_int_equal(((uint8_t *)ref.data)[i], 0x10 + winner);
	cn_l1_unpin(l1, 0, &ref);
	assert_int_equal(stats_of(l1).store_exists, N - 1);
	assert_int_equal(info_of(l1).chunks, 1);
	assert_int_equal(info_of(l1).payload, 20000);
	cn_l1_destroy(&l1);
}

/* ---- eviction ---- */

static void eviction_takes_the_least_recently_used(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_lru", 8 * 64 * KiB, 64 * KiB);
	struct cn_l1 *l1;
	struct cn_l1_stats before;
	const uint32_t len = 64 * KiB; /* one chunk per page */

	cfg.high_wm_pct = 100;
	cfg.low_wm_pct = 99;
	l1 = make(&cfg);
	for (uint32_t i = 0; i < 8; i++) {
		struct cn_key k = key_of(12, i);

		assert_int_equal(store(l1, 0, &k, len), 0);
	}
	struct cn_key k0 = key_of(12, 0);
	assert_int_equal(check(l1, 0, &k0, len), 0); /* k0 is now recent */

	before = stats_of(l1);
	for (uint32_t i = 8; i < 10; i++) {
		struct cn_key k = key_of(12, i);

		assert_int_equal(store(l1, 0, &k, len), 0);
	}
	for (uint32_t i = 0; i < 10; i++) {
		struct cn_key k = key_of(12, i);

		/* k1 and k2, the oldest untouched, are gone; the rest survive. */
		if (i == 1 || i == 2)
			assert_int_equal(check(l1, 0, &k, len), -ENOENT);
		else
			assert_int_equal(check(l1, 0, &k, len), 0);
	}
	assert_int_equal(stats_of(l1).evictions - before.evictions, 2);
	assert_int_equal(stats_of(l1).evicted_bytes - before.evicted_bytes, 2 * len);
	assert_int_equal(info_of(l1).chunks, 8);
	cn_l1_destroy(&l1);
}

static void watermarks_bound_the_pool(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_wm", 1 * MiB, 16 * KiB);
	struct cn_l1 *l1;
	struct cn_l1_info info;
	const uint32_t n = 400;
	uint32_t present = 0;
	bool crossed = false;

	cfg.high_wm_pct = 80;
	cfg.low_wm_pct = 60;
	l1 = make(&cfg);
	info = info_of(l1);
	for (uint32_t i = 0; i < n; i++) {
		struct cn_key k = key_of(13, i);
		uint32_t len = 1 + mix32(i) % (16 * KiB);

		assert_int_equal(store(l1, 0, &k, len), 0);
		uint64_t used = info_of(l1).used;
		assert_true(used <= info.high_wm);
		if (stats_of(l1).evictions > 0 && !crossed) {
			/* The store that crossed high_wm evicted down to low_wm. */
			assert_true(used <= info.low_wm);
			crossed = true;
		}
	}
	assert_true(crossed);
	for (uint32_t i = 0; i < n; i++) {
		struct cn_key k = key_of(13, i);

		if (check(l1, 0, &k, 1 + mix32(i) % (16 * KiB)) == 0)
			present++;
	}
	/* The newest survive, and the counter matches what disappeared. */
	struct cn_key last = key_of(13, n - 1);
	assert_true(cn_l1_contains(l1, 0, &last));
	assert_int_equal(stats_of(l1).evictions, n - present);
	assert_int_equal(info_of(l1).chunks, present);

	/* Explicit eviction down to a target. */
	uint64_t before = stats_of(l1).evictions;
	unsigned got = cn_l1_evict(l1, 0, info.capacity / 4);
	assert_true(info_of(l1).used <= info.capacity / 4);
	assert_true(got > 0);
	assert_int_equal(stats_of(l1).evictions - before, got);
	assert_int_equal(cn_l1_evict(l1, 0, 0), present - got);
	info = info_of(l1);
	assert_int_equal(info.used, 0);
	assert_int_equal(info.chunks, 0);
	assert_int_equal(info.pages_free, info.pages_total);
	cn_l1_destroy(&l1);
}

/* ---- pinned chunks ---- */

static void pinned_chunks_are_never_evicted(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_pinned", 8 * 64 * KiB, 64 * KiB);
	struct cn_l1 *l1 = make(&cfg);
	struct cn_l1_ref refs[8], ref;
	uint32_t n = 0;

	/* Fill (default watermarks evict a little on the way). */
	for (uint32_t i = 0; i < 8; i++) {
		struct cn_key k = key_of(14, i);

		assert_int_equal(store(l1, 0, &k, 64 * KiB), 0);
	}
	for (uint32_t i = 0; i < 8; i++) {
		struct cn_key k = key_of(14, i);

		if (cn_l1_pin(l1, 0, &k, &refs[n]) == 0)
			n++;
	}
	assert_true(n >= 7);
	/* Fill what watermark eviction left free, then pin that too. */
	for (uint32_t i = 8; n < 8; i++) {
		struct cn_key k = key_of(14, i);

		assert_int_equal(store(l1, 0, &k, 64 * KiB), 0);
		assert_int_equal(cn_l1_pin(l1, 0, &k, &refs[n]), 0);
		n++;
	}
	assert_int_equal(info_of(l1).pinned, 8);
	assert_int_equal(info_of(l1).pages_free, 0);

	struct cn_key nk = key_of(14, 100);
	uint64_t evictions = stats_of(l1).evictions;
	assert_int_equal(cn_l1_reserve(l1, 0, &nk, 64 * KiB, &ref), -ENOSPC);
	assert_int_equal(cn_l1_reserve(l1, 0, &nk, 1, &ref), -ENOSPC);
	assert_int_equal(stats_of(l1).store_nospc, 2);
	assert_int_equal(stats_of(l1).evictions, evictions);
	assert_int_equal(cn_l1_evict(l1, 0, 0), 0);
	assert_int_equal(info_of(l1).chunks, 8);

	/* Still readable, all of them. */
	for (uint32_t i = 0; i < n; i++) {
		struct cn_key k;
		bool found = false;

		for (uint32_t j = 0; j < 16 && !found; j++) {
			k = key_of(14, j);
			found = bytes_ok(refs[i].data, refs[i].len, &k);
		}
		assert_true(found);
		cn_l1_unpin(l1, 0, &refs[i]);
	}
	assert_int_equal(info_of(l1).pinned, 0);
	assert_int_equal(store(l1, 0, &nk, 64 * KiB), 0);
	assert_int_equal(check(l1, 0, &nk, 64 * KiB), 0);
	cn_l1_destroy(&l1);
}

static void deleted_pinned_chunk_lives_until_unpin(void **state)
{
	struct cn_l1_cfg cfg = cfg_of("l1_delpin", 1 * MiB, 64 * KiB);
	struct cn_l1 *l1 = make(&cfg);
	struct cn_key k = key_of(15, 0);
	struct cn_l1_ref old, again, ref;
	struct cn_l1_info info;

	assert_int_equal(store(l1, 0, &k, 50000), 0);
	assert_int_equal(cn_l1_pin(l1, 0, &k, &old), 0);
	assert_int_equal(cn_l1_pin(l1, 0, &k, &again), 0); /* two readers */
	assert_int_equal(info_of(l1).pinned, 1);
	uint64_t used = info_of(l1).used;

	assert_int_equal(cn_l1_delete(l1, 0, &k), 0);
	assert_false(cn_l1_contains(l1, 0, &k));
	assert_int_equal(cn_l1_pin(l1, 0, &k, &ref), -ENOENT);
	assert_int_equal(cn_l1_delete(l1, 0, &k), -ENOENT);
	info = info_of(l1);
	assert_int_equal(info.chunks, 0);
	assert_int_equal(info.used, used); /* the slot is still held */
	assert_int_equal(info.pinned, 1);
	assert_true(bytes_ok(old.data, old.len, &k));

	/* The key can be stored again meanwhile: a new chunk, a new slot. */
	assert_int_equal(cn_l1_reserve(l1, 0, &k, 3000, &ref), 0);
	assert_ptr_not_equal(ref.data, old.data);
	memset(ref.data, 0x5a, ref.len);
	assert_int_equal(cn_l1_commit(l1, 0, &ref), 0);
	assert_true(bytes_ok(old.data, old.len, &k));

	cn_l1_unpin(l1, 0, &again);
	assert_int_equal(info_of(l1).pinned, 1);
	assert_true(bytes_ok(old.data, old.len, &k));
	cn_l1_unpin(l1, 0, &old);
	info = info_of(l1);
	assert_int_equal(info.pinned, 0);
	assert_int_equal(info.chunks, 1);
	assert_int_equal(info.payload, 3000);
	assert_true(info.used < used);

	/* The new copy is what readers get. */
	assert_int_equal(cn_l1_pin(l1, 0, &k, &ref), 0);
	assert_int_equal(ref.len, 3000);
	assert_int_equal(((uint8_t *)ref.data)[0], 0x5a);
	cn_l1_unpin(l1, 0, &ref);

	assert_int_equal(cn_l1_delete(l1, 0, &k), 0);
	info = info_of(l1);
	assert_int_equal(info.used, 0);
	assert_int_equal(info.pages_free, info.pages_total);
	cn_l1_destroy(&l1);
}

/* ---- concurrency ---- */

#define STRESS_KEYS    256
#define STRESS_SECONDS 2

struct stress {
	struct cn_l1 *l1;
	unsigned core;
	uint64_t seed;
	const struct timespec *deadline;
	/* results */
	uint64_t ops, mismatches, unexpected, stored, pinned, nospc;
};

static uint32_t stress_len(uint32_t n)
{
	/* Mostly mid-size chunks, some tiny, some of the largest class. */
	uint32_t h = mix32(n * 2654435761U + 1);

	switch (h % 4) {
	case 0:
		return 1 + h % 4096;
	case 3:
		return 64 * KiB - h % 100;
	default:
		return 1 + h % (64 * KiB);
	}
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static bool past(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

static void stress_read(struct stress *s, const struct cn_key *k, uint32_t n, bool del)
{
	struct cn_l1_ref ref;
	int r = cn_l1_pin(s->l1, s->core, k, &ref);

	if (r == -ENOENT)
		return;
	if (r != 0) {
		s->unexpected++;
		return;
	}
	s->pinned++;
	if (ref.len != stress_len(n) || !bytes_ok(ref.data, ref.len, k))
		s->mismatches++;
	if (del) {
		/* Delete under our own pin: the bytes must stay intact until unpin. */
		r = cn_l1_delete(s->l1, s->core, k);
		if (r != 0 && r != -ENOENT)
			s->unexpected++;
		sched_yield();
		if (!bytes_ok(ref.data, ref.len, k))
			s->mismatches++;
	}
	cn_l1_unpin(s->l1, s->core, &ref);
}

static void *stress_thread(void *arg)
{
	struct stress *s = arg;

	while (!past(s->deadline)) {
		for (int batch = 0; batch < 64; batch++) {
			uint64_t x = xorshift(&s->seed);
			uint32_t n = (uint32_t)(x >> 32) % STRESS_KEYS;
			struct cn_key k = key_of(16, n);
			unsigned op = (unsigned)(x % 100);
			struct cn_l1_ref ref;
			int r;

			s->ops++;
			if (op < 40) {
				r = cn_l1_reserve(s->l1, s->core, &k, stress_len(n), &ref);
				if (r == -ENOSPC) {
					s->nospc++;
				} else if (r == 0) {
					fill(ref.data, ref.len, &k);
					if (op < 2) {
						cn_l1_abort(s->l1, s->core, &ref);
						continue;
					}
					r = cn_l1_commit(s->l1, s->core, &ref);
					if (r == 0)
						s->stored++;
					else if (r != -EEXIST)
						s->unexpected++;
				} else if (r != -EEXIST) {
					s->unexpected++;
				}
			} else if (op < 80) {
				stress_read(s, &k, n, false);
			} else if (op < 88) {
				r = cn_l1_delete(s->l1, s->core, &k);
				if (r != 0 && r != -ENOENT)
					s->unexpected++;
			} else if (op < 95) {
				(void)cn_l1_contains(s->l1, s->core, &k);
			} else {
				stress_read(s, &k, n, true);
			}
		}
	}
	return NULL;
}

static void threads_never_see_wrong_bytes(void **state)
{
	enum { N = 4 };
	struct cn_l1_cfg cfg = cfg_of("l1_stress", 2 * MiB, 64 * KiB);
	struct cn_l1 *l1;
	struct stress st[N];
	pthread_t th[N];
	struct timespec deadline;
	uint64_t mismatches = 0, unexpected = 0, stored = 0, pinned = 0;
	struct cn_l1_info info;
	struct cn_l1_stats sum;

	cfg.ncores = N;
	cfg.high_wm_pct = 90;
	cfg.low_wm_pct = 70;
	l1 = make(&cfg);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += STRESS_SECONDS;
	for (unsigned i = 0; i < N; i++) {
		st[i] = (struct stress){
			.l1 = l1, .core = i, .seed = 0x9e3779b97f4a7c15ULL * (i + 1),
			.deadline = &deadline,
		};
		assert_int_equal(pthread_create(&th[i], NULL, stress_thread, &st[i]), 0);
	}
	for (unsigned i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		mismatches += st[i].mismatches;
		unexpected += st[i].unexpected;
		stored += st[i].stored;
		pinned += st[i].pinned;
	}
	print_message("stress: %" PRIu64 " stores, %" PRIu64 " pins over %d threads\n", stored,
		      pinned, N);
	assert_int_equal(mismatches, 0);
	assert_int_equal(unexpected, 0);
	assert_true(stored > 100);
	assert_true(pinned > 100);

	/* Nothing lent any more: the levels add up. */
	info = info_of(l1);
	sum = stats_of(l1);
	assert_int_equal(info.pinned, 0);
	assert_int_equal(info.reserved, 0);
	assert_true(sum.evictions > 0);
	assert_int_equal(sum.stores, stored);
	assert_int_equal(info.chunks, sum.stores - sum.deletes - sum.evictions);
	assert_true(info.used >= info.payload);
	uint32_t present = 0;
	for (uint32_t n = 0; n < STRESS_KEYS; n++) {
		struct cn_key k = key_of(16, n);
		int r = check(l1, 0, &k, stress_len(n));

		assert_true(r == 0 || r == -ENOENT);
		present += r == 0;
	}
	assert_int_equal(present, info.chunks);

	/* Evicting everything gives every page back: no slot leaked. */
	assert_int_equal(cn_l1_evict(l1, 0, 0), present);
	info = info_of(l1);
	assert_int_equal(info.used, 0);
	assert_int_equal(info.payload, 0);
	assert_int_equal(info.chunks, 0);
	assert_int_equal(info.pages_free, info.pages_total);
	cn_l1_destroy(&l1);
}

/* ---- LRU policy on its own ---- */

static void *lru_make(uint32_t n)
{
	void *p = NULL;

	assert_int_equal(cn_evict_lru_ops.create(n, &p), 0);
	assert_non_null(p);
	return p;
}

static void lru_policy_order(void **state)
{
	const struct cn_evict_ops *ops = &cn_evict_lru_ops;
	enum { A = 3, B = 7, C = 1, D = 0 };
	void *p = NULL;

	assert_ptr_equal(cn_evict_find("lru"), ops);
	assert_null(cn_evict_find("s3fifo-not-yet"));
	assert_null(cn_evict_find(NULL));
	assert_string_equal(ops->name, "lru");
	assert_int_equal(ops->create(0, &p), -EINVAL);

	/* Untouched: oldest first. */
	p = lru_make(8);
	assert_int_equal(ops->victim(p), UINT32_MAX);
	ops->insert(p, A);
	ops->insert(p, B);
	ops->insert(p, C);
	assert_int_equal(ops->victim(p), A);
	assert_int_equal(ops->victim(p), A); /* asking again changes nothing */
	ops->remove(p, A);
	assert_int_equal(ops->victim(p), B);
	ops->remove(p, B);
	assert_int_equal(ops->victim(p), C);
	ops->remove(p, C);
	assert_int_equal(ops->victim(p), UINT32_MAX);
	ops->remove(p, C); /* not on the list: nothing happens */
	ops->destroy(p);

	/* A touch saves the oldest; it goes after the others. */
	p = lru_make(8);
	ops->insert(p, A);
	ops->insert(p, B);
	ops->insert(p, C);
	ops->touch(p, A);
	assert_int_equal(ops->victim(p), B);
	ops->remove(p, B);
	assert_int_equal(ops->victim(p), C);
	ops->remove(p, C);
	assert_int_equal(ops->victim(p), A);
	ops->destroy(p);

	/* Everything touched: one pass clears the marks, the oldest goes. */
	p = lru_make(8);
	ops->insert(p, A);
	ops->insert(p, B);
	ops->insert(p, C);
	ops->touch(p, A);
	ops->touch(p, B);
	ops->touch(p, C);
	assert_int_equal(ops->victim(p), A);
	ops->destroy(p);

	/* skip() moves a pinned candidate out of the way. */
	p = lru_make(8);
	ops->insert(p, A);
	ops->insert(p, B);
	ops->insert(p, C);
	assert_int_equal(ops->victim(p), A);
	(ops->skip)(p, A); /* parenthesised: cmocka defines skip() */
	assert_int_equal(ops->victim(p), B);
	(ops->skip)(p, B); /* parenthesised: cmocka defines skip() */
	assert_int_equal(ops->victim(p), C);
	ops->remove(p, C);
	assert_int_equal(ops->victim(p), A);
	ops->destroy(p);

	/* Removing from the middle; a re-insert forgets old touches. */
	p = lru_make(8);
	ops->insert(p, A);
	ops->insert(p, B);
	ops->insert(p, C);
	ops->remove(p, B);
	assert_int_equal(ops->victim(p), A);
	ops->touch(p, A);
	ops->remove(p, A);
	ops->insert(p, A);
	ops->insert(p, D);
	assert_int_equal(ops->victim(p), C);
	ops->remove(p, C);
	assert_int_equal(ops->victim(p), A);
	ops->destroy(p);
	ops->destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(create_refuses_bad_config),
		cmocka_unit_test(reserve_refuses_bad_lengths),
		cmocka_unit_test(chunks_of_every_size_round_trip),
		cmocka_unit_test(small_classes_pack_small_chunks),
		cmocka_unit_test(pages_move_between_classes),
		cmocka_unit_test(index_finds_stored_keys_and_forgets_deleted_ones),
		cmocka_unit_test(reserved_chunk_is_invisible_until_commit),
		cmocka_unit_test(duplicate_store_keeps_the_first_copy),
		cmocka_unit_test(concurrent_commits_of_one_key_keep_one),
		cmocka_unit_test(eviction_takes_the_least_recently_used),
		cmocka_unit_test(watermarks_bound_the_pool),
		cmocka_unit_test(pinned_chunks_are_never_evicted),
		cmocka_unit_test(deleted_pinned_chunk_lives_until_unpin),
		cmocka_unit_test(threads_never_see_wrong_bytes),
		cmocka_unit_test(lru_policy_order),
	};

	if (cn_test_eal_init("test_l1") < 0)
		return 1;
	return cmocka_run_group_tests_name("l1", tests, NULL, NULL);
}
