/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LRU eviction policy, and the table of policies (cn_evict_find()).
 *
 * The READY chunks sit on a doubly linked list of descriptor ids (arrays of
 * prev/next, no allocation per chunk): insert() puts an id at the head, the
 * victim is taken from the tail. All list operations run under the L1 lock.
 *
 * touch() is called by readers without the lock, on every hit, so it cannot
 * move list nodes. It only sets the id's "referenced" byte (a relaxed load,
 * and a relaxed store when the byte was clear, so a hot chunk's line is not
 * dirtied again and again). victim() then gives the tail a second chance:
 * a tail referenced since it was placed at the head is moved back to the
 * head, unmarked, and the next tail is examined; at most one pass over the
 * list, so the search is bounded even if readers keep touching.
 *
 * That is "touched since placed" exactly, which is what a per-id access
 * stamp compared with a list stamp would say, without a shared counter that
 * every reader increments (one cache line bouncing between all cores) and
 * without trusting cross-core TSC order. The order among several touched
 * tails is the list order rather than the touch order: approximate LRU,
 * exact for the untouched, which is the point.
 *
 * A touch can race only with remove(): a reader touches while it holds a pin,
 * so the id cannot be freed and inserted again before the touch is done, and
 * insert() clears the byte. A stale byte on an unlinked id is harmless.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cn_l1.h"

#define LRU_NIL	  UINT32_MAX	   /* end of list */
#define LRU_OFF	  (UINT32_MAX - 1) /* id not on the list */
#define LRU_IDMAX (UINT32_MAX - 2)

struct lru_node {
	uint32_t prev; /* towards the head (more recent) */
	uint32_t next; /* towards the tail (older) */
};

struct lru {
	uint32_t nslots;
	uint32_t count;
	uint32_t head;	       /* most recently inserted */
	uint32_t tail;	       /* next victim candidate */
	struct lru_node *node; /* [nslots], under the L1 lock */
	uint8_t *ref;	       /* [nslots], touched since placed; readers write */
};

static int lru_create(uint32_t nslots, void **state)
{
	struct lru *l;

	if (nslots == 0 || nslots > LRU_IDMAX)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -ENOMEM;
	l->node = malloc(sizeof(*l->node) * nslots);
	l->ref = calloc(nslots, sizeof(*l->ref));
	if (l->node == NULL || l->ref == NULL) {
		free(l->node);
		free(l->ref);
		free(l);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < nslots; i++)
		l->node[i].prev = l->node[i].next = LRU_OFF;
	l->nslots = nslots;
	l->head = l->tail = LRU_NIL;
	*state = l;
	return 0;
}

static void lru_destroy(void *state)
{
	struct lru *l = state;

	if (l == NULL)
		return;
	free(l->node);
	free(l->ref);
	free(l);
}

static bool lru_linked(const struct lru *l, uint32_t id)
{
	return l->node[id].prev != LRU_OFF;
}

static void lru_unlink(struct lru *l, uint32_t id)
{
	struct lru_node *n = &l->node[id];

	if (n->prev != LRU_NIL)
		l->node[n->prev].next = n->next;
	else
		l->head = n->next;
	if (n->next != LRU_NIL)
		l->node[n->next].prev = n->prev;
	else
		l->tail = n->prev;
	n->prev = n->next = LRU_OFF;
	l->count--;
}

static void lru_push_head(struct lru *l, uint32_t id)
{
	struct lru_node *n = &l->node[id];

	n->prev = LRU_NIL;
	n->next = l->head;
	if (l->head != LRU_NIL)
		l->node[l->head].prev = id;
	else
		l->tail = id;
	l->head = id;
	l->count++;
	__atomic_store_n(&l->ref[id], 0, __ATOMIC_RELAXED);
}

static void lru_insert(void *state, uint32_t id)
{
	struct lru *l = state;

	if (id >= l->nslots)
		return;
	if (lru_linked(l, id))
		lru_unlink(l, id);
	lru_push_head(l, id);
}

static void lru_remove(void *state, uint32_t id)
{
	struct lru *l = state;

	if (id < l->nslots && lru_linked(l, id))
		lru_unlink(l, id);
}

static void lru_touch(void *state, uint32_t id)
{
	struct lru *l = state;

	if (id < l->nslots && __atomic_load_n(&l->ref[id], __ATOMIC_RELAXED) == 0)
		__atomic_store_n(&l->ref[id], 1, __ATOMIC_RELAXED);
}

static uint32_t lru_victim(void *state)
{
	struct lru *l = state;

	for (uint32_t i = 0; i < l->count; i++) {
		uint32_t id = l->tail;

		if (__atomic_load_n(&l->ref[id], __ATOMIC_RELAXED) == 0)
			return id;
		lru_unlink(l, id);
		lru_push_head(l, id);
	}
	return l->tail; /* LRU_NIL (== UINT32_MAX) when empty */
}

/* A candidate the L1 could not evict (pinned): to the head, so the search moves on. */
static void lru_skip(void *state, uint32_t id)
{
	struct lru *l = state;

	if (id < l->nslots && lru_linked(l, id)) {
		lru_unlink(l, id);
		lru_push_head(l, id);
	}
}

const struct cn_evict_ops cn_evict_lru_ops = {
	.name = "lru",
	.create = lru_create,
	.destroy = lru_destroy,
	.insert = lru_insert,
	.remove = lru_remove,
	.touch = lru_touch,
	.victim = lru_victim,
	.skip = lru_skip,
};

static const struct cn_evict_ops *const cn_evict_policies[] = {
	&cn_evict_lru_ops,
};

const struct cn_evict_ops *cn_evict_find(const char *name)
{
	if (name == NULL)
		return NULL;
	for (size_t i = 0; i < sizeof(cn_evict_policies) / sizeof(cn_evict_policies[0]); i++)
		if (strcmp(cn_evict_policies[i]->name, name) == 0)
			return cn_evict_policies[i];
	return NULL;
}
