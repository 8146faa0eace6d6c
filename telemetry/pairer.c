/* SPDX-License-Identifier: Apache-2.0 */
/*
 * START/END pairing, keyed by session id.
 *
 * An open-addressing hash table (linear probing, backward-shift deletion, so
 * no tombstones) whose slots are whole events: a slot holds the half of a
 * session that arrived first, normally its START, or its END when the END
 * came out of another core's ring before the START. The slot array has at
 * least twice @capacity slots (a power of two) so probes stay short; at most
 * @capacity of them are in use.
 *
 * What is dropped, and how the caller sees it: cn_tel_pairer_feed() returns 0
 * both when it stores an event and when it has to drop one. It drops (and
 * the drain counts spans_unmatched) when
 *   - the table already holds @capacity open sessions: the new half is
 *     refused, never evicting an older one silently;
 *   - a session's START (or held END) arrives twice: the newer replaces the
 *     older, which is dropped.
 * In both cases cn_tel_pairer_open() does not move, so a caller tells "held"
 * (open grew by one) from "dropped" (open unchanged) without another call.
 * Entries whose event tsc is more than @expire_tsc older than the now_tsc
 * given to cn_tel_pairer_expire() are removed and returned as its count.
 *
 * Single-threaded: only the drain (or one test thread) may use a pairer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cn_tel.h"

struct cn_tel_pairer {
	struct cn_tel_event *slot; /* type 0: empty */
	uint64_t mask;
	unsigned capacity;
	unsigned used;
	uint64_t expire_tsc;
};

static uint64_t mix64(uint64_t x)
{
	/* murmur3 fmix64: session ids are core << 48 | counter, spread them */
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

int cn_tel_pairer_create(unsigned capacity, uint64_t expire_tsc, struct cn_tel_pairer **out)
{
	struct cn_tel_pairer *p;
	uint64_t nslots = 16;

	if (out == NULL || capacity == 0 || capacity > (1u << 30))
		return -EINVAL;
	while (nslots < 2 * (uint64_t)capacity)
		nslots <<= 1;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->slot = calloc(nslots, sizeof(*p->slot));
	if (p->slot == NULL) {
		free(p);
		return -ENOMEM;
	}
	p->mask = nslots - 1;
	p->capacity = capacity;
	p->expire_tsc = expire_tsc;
	*out = p;
	return 0;
}

void cn_tel_pairer_destroy(struct cn_tel_pairer **pp)
{
	if (pp == NULL || *pp == NULL)
		return;
	free((*pp)->slot);
	free(*pp);
	*pp = NULL;
}

/* The slot holding @session, or the empty slot ending its probe sequence. */
static uint64_t find(const struct cn_tel_pairer *p, uint64_t session)
{
	uint64_t i = mix64(session) & p->mask;

	while (p->slot[i].type != 0 && p->slot[i].session != session)
		i = (i + 1) & p->mask;
	return i;
}

/* Backward-shift deletion: pull later members of the probe run into the hole. */
static void remove_at(struct cn_tel_pairer *p, uint64_t hole)
{
	uint64_t j = hole;

	for (;;) {
		uint64_t home;

		j = (j + 1) & p->mask;
		if (p->slot[j].type == 0)
			break;
		home = mix64(p->slot[j].session) & p->mask;
		/* move j into the hole unless its home lies cyclically in (hole, j] */
		if (((j - home) & p->mask) >= ((j - hole) & p->mask)) {
			p->slot[hole] = p->slot[j];
			hole = j;
		}
	}
	p->slot[hole].type = 0;
	p->used--;
}

static void make_span(const struct cn_tel_event *s, const struct cn_tel_event *e,
		      struct cn_tel_span *sp)
{
	sp->start_tsc = s->tsc;
	sp->end_tsc = e->tsc;
	sp->session = s->session;
	sp->bytes = e->bytes != 0 ? e->bytes : s->bytes;
	sp->keys = e->keys != 0 ? e->keys : s->keys;
	sp->status = e->status;
	sp->core = s->core;
	sp->op = s->op;
	sp->tier = e->tier != 0 ? e->tier : s->tier;
}

/*
 * Returns 1 with @span filled when @ev completes a pair, else 0 (stored, or
 * dropped: see the top of the file). Events that are neither START nor END
 * are ignored (0, nothing stored).
 */
int cn_tel_pairer_feed(struct cn_tel_pairer *p, const struct cn_tel_event *ev,
		       struct cn_tel_span *span)
{
	uint64_t i;
	struct cn_tel_event *o;

	if (ev->type != CN_TEL_START && ev->type != CN_TEL_END)
		return 0;
	i = find(p, ev->session);
	o = &p->slot[i];
	if (o->type == 0) {
		if (p->used >= p->capacity)
			return 0; /* full: refused, counted by the caller */
		*o = *ev;
		p->used++;
		return 0;
	}
	if (o->type == ev->type) {
		*o = *ev; /* duplicate half: the older one is dropped */
		return 0;
	}
	if (ev->type == CN_TEL_END)
		make_span(o, ev, span);
	else
		make_span(ev, o, span);
	remove_at(p, i);
	return 1;
}

/*
 * Removes every held half whose tsc is more than expire_tsc before @now_tsc
 * (an event stamped after now_tsc, e.g. by a core whose TSC runs slightly
 * ahead, never expires early). now_tsc = UINT64_MAX drops every entry (the
 * drain does that when it stops: those STARTs will never end).
 */
unsigned cn_tel_pairer_expire(struct cn_tel_pairer *p, uint64_t now_tsc)
{
	unsigned dropped = 0;
	uint64_t i = 0, visits = 0, nslots = p->mask + 1;

	if (p->used == 0 || now_tsc < p->expire_tsc)
		return 0;
	/*
	 * Deleting at i may pull a later entry into i: look at i again. Entries
	 * only ever move into a hole at or after the current position (or into
	 * an already-visited wrapped slot holding an already-checked entry), so
	 * none is skipped; visits bounds the loop in any case.
	 */
	while (i < nslots && visits < 2 * nslots) {
		struct cn_tel_event *e = &p->slot[i];

		visits++;
		if (e->type != 0 && e->tsc < now_tsc - p->expire_tsc) {
			remove_at(p, i);
			dropped++;
			continue;
		}
		i++;
	}
	return dropped;
}

unsigned cn_tel_pairer_open(const struct cn_tel_pairer *p)
{
	return p->used;
}
