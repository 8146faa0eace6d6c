/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L1 tier: the node's host-DRAM chunk store.
 *
 * One pool, allocated once (rte_malloc'd memory when EAL has hugepages, an
 * anonymous mmap otherwise) so that RDMA (ibv_reg_mr) and CUDA
 * (cudaHostRegister) can register the whole of it once: cn_l1_region().
 * The pool is cut into slab pages of `page_size` bytes; a page belongs to one
 * size class at a time and is cut into equal slots; a chunk occupies one
 * slot of the smallest class that fits it. Pages whose slots are all free go
 * back to the pool and can serve another class.
 *
 * Chunk life cycle (one descriptor per slot):
 *
 *   FREE --reserve--> RESERVED --commit--> READY --evict/delete--> (EVICTING) --> FREE
 *                          \--abort--> FREE        ^  pin/unpin (refcount)
 *
 * A RESERVED chunk is invisible to lookups. Readers pin a READY chunk (a
 * reference count); a pinned chunk is never freed: delete/evict of a pinned
 * chunk removes it from the index at once and frees it when the last reader
 * unpins. Eviction picks victims through an eviction-policy ops table
 * (struct cn_evict_ops; "lru" implemented), keeps the bytes in use between
 * the low and high watermarks, and runs before a reservation fails.
 *
 * Index: rte_hash with lock-free reader/writer concurrency. Writers (commit,
 * delete, evict) are serialised by the L1 lock; readers (pin, contains) take
 * no lock and validate the descriptor they find (key and state) after
 * pinning, so a concurrent delete can only make them miss.
 *
 * Threading: every function may be called from any thread; @core selects the
 * per-core counter slot (0..ncores-1) and each slot must have one writer
 * thread at a time. Requires an initialised DPDK EAL (rte_hash, rte_malloc).
 */
#ifndef CN_L1_H
#define CN_L1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cachenode/proto.h>
#include "cn_metrics.h"

struct cn_l1;

struct cn_l1_cfg {
	size_t size;		/* pool bytes; > 0 (rounded down to whole pages) */
	size_t max_chunk;	/* largest chunk; also the slab page size; <= size */
	size_t min_chunk;	/* smallest size class; 0 = 4096 */
	const char *eviction;	/* policy name; NULL = "lru" */
	unsigned ncores;	/* counter slots, 1..CN_MAX_CORES */
	unsigned high_wm_pct;	/* evict when used > this % of capacity; 0 = 95 */
	unsigned low_wm_pct;	/* ... down to this %; 0 = 90; < high_wm_pct */
	int socket_id;		/* NUMA socket for the pool; -1 = any */
	const char *name;	/* unique name for DPDK objects; NULL = "cn_l1" */
};

/* A chunk lent to a caller between reserve..commit/abort or pin..unpin. */
struct cn_l1_ref {
	uint32_t id;   /* descriptor index */
	uint32_t len;  /* chunk bytes */
	void *data;    /* len bytes inside the pool */
	uint64_t session; /* the caller's (telemetry session of the engine); L1 ignores it */
	uint64_t tsc;	  /* the caller's (when the engine lent it, for traces); L1 ignores it */
};

#define CN_L1_METRICS(X)                                                                  \
	X(lookups, COUNTER, "keys looked up (contains)")                                  \
	X(hits, COUNTER, "lookups and pins that found a ready chunk")                     \
	X(misses, COUNTER, "lookups and pins that found nothing")                         \
	X(stores, COUNTER, "chunks committed")                                            \
	X(store_bytes, COUNTER, "bytes of chunks committed")                              \
	X(store_exists, COUNTER, "stores of a key already present (kept the stored copy)") \
	X(store_aborts, COUNTER, "reservations abandoned (client error or disconnect)")   \
	X(store_nospc, COUNTER, "reservations refused for lack of evictable space")       \
	X(retrieves, COUNTER, "chunks pinned for reading")                                \
	X(retrieve_bytes, COUNTER, "bytes of chunks pinned for reading")                  \
	X(deletes, COUNTER, "chunks deleted")                                             \
	X(evictions, COUNTER, "chunks evicted")                                           \
	X(evicted_bytes, COUNTER, "bytes of chunks evicted")                              \
	X(errors, COUNTER, "other errors (bad arguments)")

struct cn_l1_stats {
	CN_L1_METRICS(CN_METRIC_FIELD)
} CN_CACHE_ALIGNED;

extern const struct cn_metric_desc cn_l1_metric_desc[];
extern const unsigned cn_l1_metric_count;

/* Levels, read under the L1 lock (a consistent snapshot). */
struct cn_l1_info {
	uint64_t capacity;	/* pool bytes usable for chunks */
	uint64_t used;		/* bytes of slots held (reserved + ready + pinned-evicting) */
	uint64_t payload;	/* bytes of chunk data in those slots */
	uint64_t chunks;	/* ready chunks (in the index) */
	uint64_t reserved;	/* chunks being written */
	uint64_t pinned;	/* chunks with readers */
	uint64_t pinned_bytes;	/* slot bytes of those (comparable with used, high_wm) */
	uint64_t high_wm;	/* bytes */
	uint64_t low_wm;	/* bytes */
	uint64_t pages_total;
	uint64_t pages_free;
	uint64_t page_size;
	uint32_t nclasses;
	uint64_t max_chunk;
	const char *eviction;	/* policy name, static storage */
	bool hugepages;		/* pool from hugepage memory */
};

/**
 * cn_l1_create - allocate the pool, descriptors and index.
 * Returns 0 and *out (owned by the caller, cn_l1_destroy()), -EINVAL for a
 * bad configuration (sizes, watermarks, unknown eviction policy: the message
 * goes to the DPDK log), -ENOMEM.
 */
int cn_l1_create(const struct cn_l1_cfg *cfg, struct cn_l1 **out);

/** cn_l1_destroy - free everything; *l1 becomes NULL; accepts NULL. No chunk may be lent. */
void cn_l1_destroy(struct cn_l1 **l1);

/**
 * cn_l1_reserve - reserve a slot for a chunk of @len bytes under @key.
 * Evicts unpinned chunks if needed. The slot is lent to the caller until
 * cn_l1_commit() or cn_l1_abort().
 * Returns 0, -EEXIST (key already ready: nothing reserved), -EINVAL (len 0),
 * -E2BIG (len > max_chunk), -ENOSPC (nothing evictable frees enough).
 */
int cn_l1_reserve(struct cn_l1 *l1, unsigned core, const struct cn_key *key, uint32_t len,
		  struct cn_l1_ref *ref);

/**
 * cn_l1_commit - make a reserved chunk visible. Returns 0, or -EEXIST if
 * another writer committed the same key first (this copy is freed, the first
 * one stays: store is idempotent). Either way @ref is given back.
 */
int cn_l1_commit(struct cn_l1 *l1, unsigned core, struct cn_l1_ref *ref);

/** cn_l1_abort - give a reserved slot back unseen. */
void cn_l1_abort(struct cn_l1 *l1, unsigned core, struct cn_l1_ref *ref);

/**
 * cn_l1_pin - find a ready chunk and pin it for reading; counts a hit or miss
 * and marks it recently used. Returns 0 (ref filled, lent until
 * cn_l1_unpin()) or -ENOENT.
 */
int cn_l1_pin(struct cn_l1 *l1, unsigned core, const struct cn_key *key, struct cn_l1_ref *ref);

/** cn_l1_unpin - give a pinned chunk back (frees it if it was deleted meanwhile). */
void cn_l1_unpin(struct cn_l1 *l1, unsigned core, struct cn_l1_ref *ref);

/**
 * cn_l1_contains - is @key ready? Counts a lookup and a hit or miss; does
 * not change recency. Lock-free.
 */
bool cn_l1_contains(struct cn_l1 *l1, unsigned core, const struct cn_key *key);

/**
 * cn_l1_contains_prefix - how many leading keys of @keys are ready (prefix
 * semantics: stops at the first absent key). Same counting as calling
 * cn_l1_contains() on each key up to and including the first miss, but
 * looked up in bulk. Lock-free.
 */
uint32_t cn_l1_contains_prefix(struct cn_l1 *l1, unsigned core, const struct cn_key *keys,
			       uint32_t n);

/**
 * cn_l1_ref_key - the key of a chunk lent through @ref (reserved or pinned;
 * before commit/abort/unpin gives it back). Owned by the L1, read-only.
 */
const struct cn_key *cn_l1_ref_key(const struct cn_l1 *l1, const struct cn_l1_ref *ref);

/** cn_l1_delete - remove @key. Returns 0 or -ENOENT. */
int cn_l1_delete(struct cn_l1 *l1, unsigned core, const struct cn_key *key);

/**
 * cn_l1_evict - evict unpinned chunks until used <= @target bytes.
 * Returns the number of chunks evicted.
 */
unsigned cn_l1_evict(struct cn_l1 *l1, unsigned core, uint64_t target);

/** cn_l1_region - the pool's address and length, for RDMA/CUDA registration. */
void cn_l1_region(const struct cn_l1 *l1, void **base, size_t *len);

/** cn_l1_get_info - a consistent snapshot of the levels. */
void cn_l1_get_info(struct cn_l1 *l1, struct cn_l1_info *info);

/** cn_l1_core_stats - core @core's counters (read with CN_STAT_GET). */
const struct cn_l1_stats *cn_l1_core_stats(const struct cn_l1 *l1, unsigned core);

/** cn_l1_stats_sum - counters summed over all cores into @out. */
void cn_l1_stats_sum(const struct cn_l1 *l1, struct cn_l1_stats *out);

/* ---- eviction policies ----
 *
 * A policy orders the READY chunks. Every call but touch() is made under the
 * L1 lock; touch() is made by readers without it and must be lock-free and
 * cheap (a relaxed store). Ids are descriptor indexes < nslots.
 */
struct cn_evict_ops {
	const char *name;
	int (*create)(uint32_t nslots, void **state);
	void (*destroy)(void *state);
	void (*insert)(void *state, uint32_t id); /* became READY */
	void (*remove)(void *state, uint32_t id); /* left READY (delete, evict) */
	void (*touch)(void *state, uint32_t id);  /* read hit */
	/*
	 * Next victim candidate, or UINT32_MAX if none. The L1 calls remove()
	 * on a candidate it evicts; a candidate it cannot evict (pinned) is
	 * passed to skip() so the policy moves on.
	 */
	uint32_t (*victim)(void *state);
	void (*skip)(void *state, uint32_t id);
};

extern const struct cn_evict_ops cn_evict_lru_ops;

/** cn_evict_find - the policy called @name, or NULL. */
const struct cn_evict_ops *cn_evict_find(const char *name);

#endif /* CN_L1_H */
