/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Engine: operations on the tiers. With only L1 present this is a thin
 * layer, but it is the one place the transports call, so the L2 fetch on a
 * miss, GPU copies and telemetry events attach here without touching any
 * transport.
 */
#include <errno.h>
#include <stdlib.h>

#include "cn_engine.h"

struct cn_engine {
	struct cn_l1 *l1;
	uint64_t max_chunk;
};

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

int cn_engine_lookup(struct cn_engine *e, unsigned core, const struct cn_key *keys, uint32_t n,
		     uint32_t *prefix, uint8_t *tiers)
{
	uint32_t p = cn_l1_contains_prefix(e->l1, core, keys, n);

	*prefix = p;
	for (uint32_t i = 0; tiers && i < n; i++)
		tiers[i] = i < p ? CN_TIER_L1 : CN_TIER_NONE;
	return 0;
}

int cn_engine_store_begin(struct cn_engine *e, unsigned core, const struct cn_key *key,
			  uint32_t len, struct cn_l1_ref *ref)
{
	return cn_l1_reserve(e->l1, core, key, len, ref);
}

int cn_engine_store_commit(struct cn_engine *e, unsigned core, struct cn_l1_ref *ref)
{
	return cn_l1_commit(e->l1, core, ref);
}

void cn_engine_store_abort(struct cn_engine *e, unsigned core, struct cn_l1_ref *ref)
{
	cn_l1_abort(e->l1, core, ref);
}

int cn_engine_retrieve_pin(struct cn_engine *e, unsigned core, const struct cn_key *key,
			   struct cn_l1_ref *ref)
{
	return cn_l1_pin(e->l1, core, key, ref);
}

void cn_engine_unpin(struct cn_engine *e, unsigned core, struct cn_l1_ref *ref)
{
	cn_l1_unpin(e->l1, core, ref);
}

int cn_engine_delete(struct cn_engine *e, unsigned core, const struct cn_key *key)
{
	return cn_l1_delete(e->l1, core, key);
}
