/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Engine: operations on the tiers. With only L1 present this is a thin
 * layer, but it is the one place the transports call, so the L2 fetch on a
 * miss, GPU copies, telemetry events and trace records attach here without
 * touching any transport.
 *
 * tel_on is true when the telemetry context emits events or records a
 * trace; with neither every operation costs that one branch. Trace records
 * are taken when an operation ends, with the TSC of its start kept in the
 * lent reference (ref->tsc): store at commit or abort (it started at the
 * reserve) or where the reserve failed, retrieve at the unpin (it started at
 * the pin) or at the miss, lookup and delete when done. A replay then
 * reserves and pins when the node did, and commits and unpins when it did.
 */
#include <errno.h>
#include <stdlib.h>

#include "cn_engine.h"

struct cn_engine {
	struct cn_l1 *l1;
	uint64_t max_chunk;
	struct cn_tel *tel;
	bool tel_on;
};

#define EMIT(e, core, type, op, sid, keys, bytes, st)                                           \
	cn_tel_emit((e)->tel, core, type, op, sid, keys, bytes, CN_TIER_L1, st)
#define TRACE(e, core, kind, sid, keys, n, val, st, begin)                                        \
	cn_tel_trace((e)->tel, core, CN_TRACE_##kind, sid, keys, n, val, st, begin)

int cn_engine_create(const struct cn_engine_cfg *cfg, struct cn_engine **out)
{
	struct cn_l1_cfg l1cfg = {
		.size = cfg->l1_size,
		.max_chunk = cfg->max_chunk,
		.eviction = cfg->eviction,
		.ncores = cfg->ncores,
		.socket_id = cfg->socket_id,
		.name = cfg->name,
	};
	struct cn_engine *e;
	int r;

	if (cfg->max_chunk == 0 || cfg->max_chunk > CN_PROTO_MAX_CHUNK)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	r = cn_l1_create(&l1cfg, &e->l1);
	if (r < 0) {
		free(e);
		return r;
	}
	e->max_chunk = cfg->max_chunk;
	e->tel = cfg->tel;
	e->tel_on = cfg->tel != NULL && (cfg->tel->enabled || cfg->tel->tracing);
	*out = e;
	return 0;
}

void cn_engine_destroy(struct cn_engine **pe)
{
	if (pe == NULL || *pe == NULL)
		return;
	cn_l1_destroy(&(*pe)->l1);
	free(*pe);
	*pe = NULL;
}

struct cn_l1 *cn_engine_l1(const struct cn_engine *e)
{
	return e->l1;
}

uint64_t cn_engine_max_chunk(const struct cn_engine *e)
{
	return e->max_chunk;
}

uint64_t cn_engine_span_begin(struct cn_engine *e, unsigned core, enum cn_tel_op op,
			      uint32_t keys)
{
	uint64_t sid;

	if (!e->tel_on)
		return 0;
	sid = cn_tel_session(e->tel, core);
	cn_tel_emit(e->tel, core, CN_TEL_START, op, sid, keys, 0, CN_TIER_L2, 0);
	return sid;
}

void cn_engine_span_end(struct cn_engine *e, unsigned core, enum cn_tel_op op, uint64_t sid,
			uint32_t keys, uint64_t bytes, int status)
{
	if (e->tel_on)
		cn_tel_emit(e->tel, core, CN_TEL_END, op, sid, keys, bytes, CN_TIER_L2, status);
}

int cn_engine_lookup(struct cn_engine *e, unsigned core, const struct cn_key *keys, uint32_t n,
		     uint32_t *prefix, uint8_t *tiers)
{
	uint64_t sid = 0;
	uint32_t p;

	if (e->tel_on) {
		sid = cn_tel_session(e->tel, core);
		EMIT(e, core, CN_TEL_START, CN_TEL_OP_lookup, sid, n, 0, 0);
	}
	p = cn_l1_contains_prefix(e->l1, core, keys, n);
	*prefix = p;
	for (uint32_t i = 0; tiers && i < n; i++)
		tiers[i] = i < p ? CN_TIER_L1 : CN_TIER_NONE;
	if (e->tel_on) {
		EMIT(e, core, CN_TEL_END, CN_TEL_OP_lookup, sid, p, 0, 0);
		TRACE(e, core, lookup, sid, keys, n, p, 0, 0);
	}
	return 0;
}

int cn_engine_store_begin(struct cn_engine *e, unsigned core, const struct cn_key *key,
			  uint32_t len, struct cn_l1_ref *ref)
{
	const struct cn_l1_stats *st = cn_l1_core_stats(e->l1, core);
	uint64_t ev0 = 0, evb0 = 0, sid;
	int r;

	if (!e->tel_on)
		return cn_l1_reserve(e->l1, core, key, len, ref);
	sid = cn_tel_session(e->tel, core);
	EMIT(e, core, CN_TEL_START, CN_TEL_OP_store, sid, 1, len, 0);
	ev0 = CN_STAT_GET(st, evictions);
	evb0 = CN_STAT_GET(st, evicted_bytes);
	r = cn_l1_reserve(e->l1, core, key, len, ref);
	if (CN_STAT_GET(st, evictions) != ev0)
		EMIT(e, core, CN_TEL_POINT, CN_TEL_OP_evict, sid,
		     (uint32_t)(CN_STAT_GET(st, evictions) - ev0),
		     CN_STAT_GET(st, evicted_bytes) - evb0, 0);
	if (r < 0) {
		EMIT(e, core, CN_TEL_END, CN_TEL_OP_store, sid, 1, len, r);
		TRACE(e, core, store, sid, key, 1, len, r, 0);
	} else {
		ref->session = sid;
		ref->tsc = e->tel->tracing ? rte_rdtsc() : 0;
	}
	return r;
}

/* The key of a lent chunk, copied before commit/abort/unpin may free its slot. */
static void ref_key(const struct cn_engine *e, const struct cn_l1_ref *ref, struct cn_key *out)
{
	if (e->tel->tracing)
		*out = *cn_l1_ref_key(e->l1, ref);
}

int cn_engine_store_commit(struct cn_engine *e, unsigned core, struct cn_l1_ref *ref)
{
	uint64_t sid = ref->session;
	uint32_t len = ref->len;
	struct cn_key key;
	int r;

	if (!e->tel_on)
		return cn_l1_commit(e->l1, core, ref);
	ref_key(e, ref, &key);
	r = cn_l1_commit(e->l1, core, ref);
	EMIT(e, core, CN_TEL_END, CN_TEL_OP_store, sid, 1, len, r);
	TRACE(e, core, store, sid, &key, 1, len, r, ref->tsc);
	return r;
}

void cn_engine_store_abort(struct cn_engine *e, unsigned core, struct cn_l1_ref *ref)
{
	uint64_t sid = ref->session;
	uint32_t len = ref->len;
	struct cn_key key;

	if (!e->tel_on) {
		cn_l1_abort(e->l1, core, ref);
		return;
	}
	ref_key(e, ref, &key);
	cn_l1_abort(e->l1, core, ref);
	EMIT(e, core, CN_TEL_END, CN_TEL_OP_store, sid, 1, len, -ECONNABORTED);
	TRACE(e, core, store, sid, &key, 1, len, -ECONNABORTED, ref->tsc);
}

int cn_engine_retrieve_pin(struct cn_engine *e, unsigned core, const struct cn_key *key,
			   struct cn_l1_ref *ref)
{
	uint64_t sid;
	int r;

	if (!e->tel_on)
		return cn_l1_pin(e->l1, core, key, ref);
	sid = cn_tel_session(e->tel, core);
	EMIT(e, core, CN_TEL_START, CN_TEL_OP_retrieve, sid, 1, 0, 0);
	r = cn_l1_pin(e->l1, core, key, ref);
	if (r < 0) {
		EMIT(e, core, CN_TEL_END, CN_TEL_OP_retrieve, sid, 1, 0, r);
		TRACE(e, core, retrieve, sid, key, 1, 0, r, 0);
	} else {
		ref->session = sid;
		ref->tsc = e->tel->tracing ? rte_rdtsc() : 0;
	}
	return r;
}

void cn_engine_unpin(struct cn_engine *e, unsigned core, struct cn_l1_ref *ref)
{
	uint64_t sid = ref->session;
	uint32_t len = ref->len;
	struct cn_key key;

	if (!e->tel_on) {
		cn_l1_unpin(e->l1, core, ref);
		return;
	}
	ref_key(e, ref, &key);
	cn_l1_unpin(e->l1, core, ref);
	EMIT(e, core, CN_TEL_END, CN_TEL_OP_retrieve, sid, 1, len, 0);
	TRACE(e, core, retrieve, sid, &key, 1, len, 0, ref->tsc);
}

int cn_engine_delete(struct cn_engine *e, unsigned core, const struct cn_key *key)
{
	uint64_t sid = 0;
	int r;

	if (e->tel_on) {
		sid = cn_tel_session(e->tel, core);
		EMIT(e, core, CN_TEL_START, CN_TEL_OP_delete, sid, 1, 0, 0);
	}
	r = cn_l1_delete(e->l1, core, key);
	if (e->tel_on) {
		EMIT(e, core, CN_TEL_END, CN_TEL_OP_delete, sid, 1, 0, r);
		TRACE(e, core, delete, sid, key, 1, 0, r, 0);
	}
	return r;
}
