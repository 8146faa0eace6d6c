/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine: the node's operations on its tiers, the same whichever
 * transport delivered the request. Today it fronts the L1 tier; the L2 and
 * GPU tiers and telemetry events plug in here, behind the same calls.
 *
 * Every call takes @core, the caller's per-core slot (worker index, or the
 * control-plane slot nworkers); see struct cn_engine_cfg.ncores.
 *
 * Telemetry: every operation emits a START and an END event with one session
 * id on @core's ring: lookup (a key batch), store (one chunk, from
 * store_begin to commit/abort, so the span covers receiving the payload),
 * retrieve (one chunk, from pin to unpin, so the span covers sending it),
 * delete; evictions caused by a store are POINT events (keys = chunks
 * evicted, bytes = their bytes). With trace recording on (cn_tel tracing),
 * every operation also puts one trace record (keys, bytes, status, start
 * and end) on @core's trace ring when it ends: lookup, store (reserve to
 * commit or abort, or a failed reserve), retrieve (pin to unpin, or a miss),
 * delete. With telemetry and tracing off this is one branch.
 * Chunks handed out through struct cn_l1_ref are lent: a reserved chunk
 * until store_commit/store_abort, a pinned one until unpin.
 */
#ifndef CN_ENGINE_H
#define CN_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include <cachenode/proto.h>
#include "cn_l1.h"
#include "cn_tel.h"

struct cn_engine;

struct cn_engine_cfg {
	uint64_t l1_size;
	uint64_t max_chunk;
	const char *eviction; /* NULL = "lru" */
	unsigned ncores;      /* per-core slots (workers + control plane) */
	int socket_id;	      /* -1 = any */
	const char *name;     /* unique per process; NULL = "cn" */
	struct cn_tel *tel;   /* events and trace records go here; NULL = none. Not owned. */
};

/* Returns 0 and *out (caller owns; cn_engine_destroy()), or -errno from the tiers. */
int cn_engine_create(const struct cn_engine_cfg *cfg, struct cn_engine **out);
/* Accepts NULL; *e becomes NULL. Nothing may be lent. */
void cn_engine_destroy(struct cn_engine **e);

/* The L1 tier (for info, stats and memory registration). */
struct cn_l1 *cn_engine_l1(const struct cn_engine *e);
uint64_t cn_engine_max_chunk(const struct cn_engine *e);

/*
 * cn_engine_lookup - prefix lookup: *prefix = number of leading keys present.
 * @tiers: NULL or n bytes receiving enum cn_tier per key (CN_TIER_NONE from
 * the first absent key on). Returns 0.
 */
int cn_engine_lookup(struct cn_engine *e, unsigned core, const struct cn_key *keys, uint32_t n,
		     uint32_t *prefix, uint8_t *tiers);

/* Store: reserve a slot to fill. 0, -EEXIST (already stored: skip the payload),
 * -EINVAL (len 0), -E2BIG (len > max chunk), -ENOSPC. */
int cn_engine_store_begin(struct cn_engine *e, unsigned core, const struct cn_key *key,
			  uint32_t len, struct cn_l1_ref *ref);
/* Publish a filled slot: 0, or -EEXIST if the key was stored meanwhile (success). */
int cn_engine_store_commit(struct cn_engine *e, unsigned core, struct cn_l1_ref *ref);
/* Discard a partly filled slot: it never becomes visible. */
void cn_engine_store_abort(struct cn_engine *e, unsigned core, struct cn_l1_ref *ref);

/* Retrieve: pin a ready chunk to read: 0 or -ENOENT. */
int cn_engine_retrieve_pin(struct cn_engine *e, unsigned core, const struct cn_key *key,
			   struct cn_l1_ref *ref);
void cn_engine_unpin(struct cn_engine *e, unsigned core, struct cn_l1_ref *ref);

/*
 * Spans of work the engine does not run itself (L2 requests to peers, run
 * on the L2 threads): begin on @core's ring when the work is handed off,
 * end on the same core when it comes back. The events carry tier L2.
 * begin returns the span's session id (0 with telemetry off).
 */
uint64_t cn_engine_span_begin(struct cn_engine *e, unsigned core, enum cn_tel_op op,
			      uint32_t keys);
void cn_engine_span_end(struct cn_engine *e, unsigned core, enum cn_tel_op op, uint64_t sid,
			uint32_t keys, uint64_t bytes, int status);

/* Delete: 0 or -ENOENT. */
int cn_engine_delete(struct cn_engine *e, unsigned core, const struct cn_key *key);

#endif /* CN_ENGINE_H */
