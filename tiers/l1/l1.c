/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L1 tier: the pool, the slab allocator, the descriptor table, the index and
 * the eviction driver. The contract is in cn_l1.h; this comment says how.
 *
 * Pool and pages. The pool is one contiguous region of `npages` slab pages of
 * `page_size` bytes (max_chunk rounded up to 4 KiB). A page is free (on the
 * free-page stack) or belongs to one size class and is cut into
 * page_size / class_size equal slots. Slots are cut lazily (a bump index),
 * freed slots go on a per-page stack; a page with some free slots sits on its
 * class's "partial" list; a page whose slots are all free goes back to the
 * free-page stack at once, so memory moves between classes.
 *
 * Size classes. The smallest is min_chunk; each next one is ~1.25x the
 * previous. Sizes below 4 KiB are multiples of 64 bytes (cache lines), sizes
 * from 4 KiB on multiples of 4 KiB (so that every slot of those classes is
 * page aligned for DMA: RDMA and CUDA copy engines like that, and the waste is
 * under 4 KiB on chunks of hundreds of KiB). A class is then widened to the
 * largest size that still gives the same number of slots per page (the
 * memcached trick), so no class wastes a tail that a bigger slot could use;
 * classes that would give the same slot count collapse into one. The last
 * class is always page_size (one slot per page).
 *
 * Descriptors. One per possible slot: page p owns descriptor ids
 * [p * maxslots, (p + 1) * maxslots) where maxslots is the slot count of the
 * smallest class; a page of a bigger class uses the first few of its ids. So
 * the table is bounded, allocated at create time, and id -> address is
 * arithmetic. Each descriptor has one 32-bit atomic state word:
 *
 *     bits 31..30  state: FREE, RESERVED, READY, EVICTING
 *     bits 29..0   readers (pins)
 *
 * so that "pin only if READY" and "free only if nobody reads" are single CAS
 * decisions with no lock on the reader side.
 *
 * Locking. One mutex (adaptive: spins briefly, then sleeps) serialises every
 * writer: the allocator, the index writers (commit, delete, evict), the
 * policy's list and the levels. Readers (pin, contains) take no lock; the
 * only time a reader takes it is the last unpin of a chunk that was deleted
 * or evicted while pinned, to free the slot.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_log.h>
#include <rte_malloc.h>
#include <rte_memory.h>
#include <rte_prefetch.h>

#include "cn_l1.h"

#define L1_NIL		     UINT32_MAX /* no page / no descriptor */
#define L1_CLS_NONE	     UINT32_MAX /* page not assigned to a class */
#define L1_MAX_CLASSES	     128	/* 64 B .. 1 GiB at 1.25x needs < 80 */
#define L1_MIN_CHUNK_DEFAULT 4096
#define L1_SMALL_ALIGN	     64
#define L1_PAGE_ALIGN	     4096
#define L1_GROWTH_NUM	     5 /* class growth factor 5/4 */
#define L1_GROWTH_DEN	     4
#define L1_HIGH_WM_DEFAULT   95
#define L1_LOW_WM_DEFAULT    90
/*
 * rte_hash names its rings "HT_<name>" and "HT_EXT_<name>", and a ring name
 * is at most 28 characters: a longer name would be truncated silently and two
 * instances could collide, so refuse it instead.
 */
#define L1_NAME_MAX 21

/* Descriptor state word. */
#define L1_ST_SHIFT   30
#define L1_REF_MASK   ((UINT32_C(1) << L1_ST_SHIFT) - 1)
#define L1_ST(w)      ((w) >> L1_ST_SHIFT)
#define L1_REFS(w)    ((w) & L1_REF_MASK)
#define L1_WORD(s, r) (((uint32_t)(s) << L1_ST_SHIFT) | (uint32_t)(r))

enum l1_state {
	L1_FREE = 0,
	L1_RESERVED = 1,
	L1_READY = 2,
	L1_EVICTING = 3,
};

struct l1_desc {
	uint32_t state;	   /* atomic: L1_WORD(state, readers) */
	uint32_t len;	   /* chunk bytes, set at reserve */
	uint32_t cls;	   /* size class, set at reserve (readers compute the address) */
	uint32_t next;	   /* page's free-slot stack (FREE only, under the lock) */
	struct cn_key key; /* set at reserve, read by readers only while pinned */
};

struct l1_page {
	uint32_t cls;	    /* L1_CLS_NONE when on the free-page stack */
	uint32_t nfree;	    /* free slots, cut or not yet cut */
	uint32_t bump;	    /* slots cut so far */
	uint32_t free_head; /* freed slots (descriptor ids), L1_NIL-terminated */
	uint32_t prev;	    /* class partial list (doubly linked) ... */
	uint32_t next;	    /* ... or the free-page stack (next only) */
};

struct l1_class {
	uint32_t size;	 /* slot bytes */
	uint32_t nslots; /* slots per page */
};

struct cn_l1 {
	/* Set at create, read-only afterwards. */
	uint8_t *base;
	size_t pool_len;
	size_t page_size;
	uint32_t npages;
	uint32_t maxslots; /* descriptors per page */
	uint32_t ndesc;
	uint32_t nclasses;
	uint64_t max_chunk;
	uint64_t high_wm;
	uint64_t low_wm;
	bool hugepages;
	unsigned ncores;
	struct rte_hash *index;
	const struct cn_evict_ops *ev;
	void *ev_state;
	struct l1_desc *desc;
	struct l1_page *pages;
	struct cn_l1_stats *stats; /* [ncores] */
	struct l1_class cls[L1_MAX_CLASSES];

	/* Everything below is under `lock` (its own cache lines: readers never look). */
	pthread_mutex_t lock CN_CACHE_ALIGNED;
	uint32_t partial[L1_MAX_CLASSES]; /* per class: pages with a free slot, L1_NIL */
	uint32_t free_pages;		  /* free-page stack head */
	uint32_t npages_free;
	uint64_t used;
	uint64_t payload;
	uint64_t nchunks;
	uint64_t nreserved;
};

const struct cn_metric_desc cn_l1_metric_desc[] = {CN_L1_METRICS(CN_METRIC_DESC)};
const unsigned cn_l1_metric_count = RTE_DIM(cn_l1_metric_desc);

/* ---- metadata memory ---- */

/*
 * Metadata (descriptors, pages, counters) comes from EAL memory when EAL has
 * hugepages, and from the C heap otherwise: without hugepages EAL memory is
 * the small -m budget, and a large pool's descriptor table would not fit.
 */
static void *l1_zalloc(bool huge, size_t len, int socket)
{
	void *p;

	if (huge)
		return rte_zmalloc_socket("cn_l1", len, RTE_CACHE_LINE_SIZE, socket);
	if (posix_memalign(&p, RTE_CACHE_LINE_SIZE, len) != 0)
		return NULL;
	memset(p, 0, len);
	return p;
}

static void l1_zfree(bool huge, void *p)
{
	if (huge)
		rte_free(p);
	else
		free(p);
}

/*
 * The pool: rte_malloc'd from hugepages when EAL has them; otherwise an
 * anonymous mapping, advised for transparent huge pages and prefaulted (best
 * effort, both) so that the data path takes no page faults and a later
 * ibv_reg_mr / cudaHostRegister pins memory that is already there. The
 * mapping ignores socket_id (no libnuma dependency).
 */
static int l1_pool_alloc(struct cn_l1 *l1, int socket)
{
	void *p;

	if (l1->hugepages) {
		l1->base = rte_malloc_socket("cn_l1_pool", l1->pool_len, L1_PAGE_ALIGN, socket);
		return l1->base != NULL ? 0 : -ENOMEM;
	}
	p = mmap(NULL, l1->pool_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	(void)madvise(p, l1->pool_len, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
	if (madvise(p, l1->pool_len, MADV_POPULATE_WRITE) != 0 && errno == ENOMEM) {
		munmap(p, l1->pool_len);
		return -ENOMEM;
	}
#endif
	l1->base = p;
	return 0;
}

static void l1_pool_free(struct cn_l1 *l1)
{
	if (l1->base == NULL)
		return;
	if (l1->hugepages)
		rte_free(l1->base);
	else
		munmap(l1->base, l1->pool_len);
	l1->base = NULL;
}

/* ---- configuration ---- */

static size_t l1_class_align(size_t size)
{
	return size < L1_PAGE_ALIGN ? L1_SMALL_ALIGN : L1_PAGE_ALIGN;
}

/*
 * Build the size classes from min_chunk up to page_size (see the file
 * comment). Returns the number of classes, or 0 if there would be too many.
 */
static uint32_t l1_build_classes(struct l1_class *cls, size_t min_chunk, size_t page_size)
{
	size_t size = RTE_ALIGN_CEIL(min_chunk, l1_class_align(min_chunk));
	uint32_t n = 0;

	if (size > page_size)
		size = page_size;
	for (;;) {
		size_t nslots = page_size / size;
		size_t wide = page_size / nslots;

		wide = RTE_ALIGN_FLOOR(wide, l1_class_align(wide));
		if (n == L1_MAX_CLASSES)
			return 0;
		cls[n].size = (uint32_t)wide;
		cls[n].nslots = (uint32_t)(page_size / wide);
		n++;
		if (wide >= page_size)
			return n;
		size = wide * L1_GROWTH_NUM / L1_GROWTH_DEN;
		if (wide < L1_PAGE_ALIGN && size > L1_PAGE_ALIGN)
			size = L1_PAGE_ALIGN; /* don't skip 4 KiB when the alignment changes */
		size = RTE_ALIGN_CEIL(size, l1_class_align(size));
		if (size <= wide)
			size = wide + l1_class_align(wide);
		if (size > page_size)
			size = page_size;
	}
}

#define L1_CFG_ERR(...) RTE_LOG(ERR, USER1, "cn_l1: " __VA_ARGS__)

/* Validate @cfg and fill the geometry of @l1. Returns 0 or -EINVAL (logged). */
static int l1_configure(struct cn_l1 *l1, const struct cn_l1_cfg *cfg, const char *name)
{
	unsigned high = cfg->high_wm_pct ? cfg->high_wm_pct : L1_HIGH_WM_DEFAULT;
	unsigned low = cfg->low_wm_pct ? cfg->low_wm_pct : L1_LOW_WM_DEFAULT;
	size_t min_chunk = cfg->min_chunk;
	uint64_t ndesc;

	if (strlen(name) == 0 || strlen(name) > L1_NAME_MAX) {
		L1_CFG_ERR("name '%s' must be 1..%d characters\n", name, L1_NAME_MAX);
		return -EINVAL;
	}
	if (cfg->ncores == 0 || cfg->ncores > CN_MAX_CORES) {
		L1_CFG_ERR("%s: ncores %u not in 1..%d\n", name, cfg->ncores, CN_MAX_CORES);
		return -EINVAL;
	}
	if (cfg->max_chunk == 0 || cfg->max_chunk > CN_PROTO_MAX_CHUNK) {
		L1_CFG_ERR("%s: max_chunk %zu not in 1..%u\n", name, cfg->max_chunk,
			   CN_PROTO_MAX_CHUNK);
		return -EINVAL;
	}
	if (cfg->size == 0 || cfg->max_chunk > cfg->size) {
		L1_CFG_ERR("%s: size %zu must be > 0 and >= max_chunk %zu\n", name, cfg->size,
			   cfg->max_chunk);
		return -EINVAL;
	}
	if (min_chunk == 0)
		min_chunk = RTE_MIN((size_t)L1_MIN_CHUNK_DEFAULT, cfg->max_chunk);
	if (min_chunk > cfg->max_chunk) {
		L1_CFG_ERR("%s: min_chunk %zu > max_chunk %zu\n", name, min_chunk, cfg->max_chunk);
		return -EINVAL;
	}
	if (high > 100 || low >= high) {
		L1_CFG_ERR("%s: watermarks low %u%% high %u%%: need low < high <= 100\n", name, low,
			   high);
		return -EINVAL;
	}

	l1->page_size = RTE_ALIGN_CEIL(cfg->max_chunk, (size_t)L1_PAGE_ALIGN);
	if (cfg->size / l1->page_size == 0 || cfg->size / l1->page_size >= L1_NIL) {
		L1_CFG_ERR("%s: size %zu holds no whole page of %zu bytes (or too many)\n", name,
			   cfg->size, l1->page_size);
		return -EINVAL;
	}
	l1->npages = (uint32_t)(cfg->size / l1->page_size);
	l1->pool_len = (size_t)l1->npages * l1->page_size;
	l1->max_chunk = cfg->max_chunk;
	l1->nclasses = l1_build_classes(l1->cls, min_chunk, l1->page_size);
	if (l1->nclasses == 0) {
		L1_CFG_ERR("%s: too many size classes from %zu to %zu\n", name, min_chunk,
			   l1->page_size);
		return -EINVAL;
	}
	l1->maxslots = l1->cls[0].nslots;
	ndesc = (uint64_t)l1->npages * l1->maxslots;
	if (ndesc > RTE_HASH_ENTRIES_MAX) {
		L1_CFG_ERR("%s: %" PRIu64 " slots of %u bytes: over %d; raise min_chunk\n", name,
			   ndesc, l1->cls[0].size, RTE_HASH_ENTRIES_MAX);
		return -EINVAL;
	}
	l1->ndesc = (uint32_t)ndesc;
	l1->high_wm = (uint64_t)l1->pool_len * high / 100;
	l1->low_wm = (uint64_t)l1->pool_len * low / 100;
	l1->ncores = cfg->ncores;
	return 0;
}

/* ---- slab allocator (all under the lock) ---- */

static uint32_t l1_class_for(const struct cn_l1 *l1, uint32_t len)
{
	uint32_t lo = 0, hi = l1->nclasses - 1;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (l1->cls[mid].size >= len)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void l1_partial_add(struct cn_l1 *l1, uint32_t pg)
{
	uint32_t *head = &l1->partial[l1->pages[pg].cls];

	l1->pages[pg].prev = L1_NIL;
	l1->pages[pg].next = *head;
	if (*head != L1_NIL)
		l1->pages[*head].prev = pg;
	*head = pg;
}

static void l1_partial_del(struct cn_l1 *l1, uint32_t pg)
{
	struct l1_page *p = &l1->pages[pg];

	if (p->prev != L1_NIL)
		l1->pages[p->prev].next = p->next;
	else
		l1->partial[p->cls] = p->next;
	if (p->next != L1_NIL)
		l1->pages[p->next].prev = p->prev;
}

/* A free slot of class @c: a partial page's, else a free page's. L1_NIL if none. */
static uint32_t l1_slot_alloc(struct cn_l1 *l1, uint32_t c)
{
	uint32_t pg = l1->partial[c];
	struct l1_page *p;
	uint32_t id;

	if (pg == L1_NIL) {
		pg = l1->free_pages;
		if (pg == L1_NIL)
			return L1_NIL;
		p = &l1->pages[pg];
		l1->free_pages = p->next;
		l1->npages_free--;
		p->cls = c;
		p->nfree = l1->cls[c].nslots;
		p->bump = 0;
		p->free_head = L1_NIL;
		l1_partial_add(l1, pg);
	}
	p = &l1->pages[pg];
	if (p->free_head != L1_NIL) {
		id = p->free_head;
		p->free_head = l1->desc[id].next;
	} else {
		id = pg * l1->maxslots + p->bump++;
	}
	if (--p->nfree == 0)
		l1_partial_del(l1, pg);
	return id;
}

/*
 * Give a slot back: descriptor FREE, levels down, and a page whose slots are
 * all free back to the free-page stack. The caller has made sure nobody holds
 * the descriptor (state RESERVED, or readers == 0 and out of the index).
 */
static void l1_slot_free(struct cn_l1 *l1, uint32_t id)
{
	struct l1_desc *d = &l1->desc[id];
	uint32_t pg = id / l1->maxslots;
	struct l1_page *p = &l1->pages[pg];
	const struct l1_class *c = &l1->cls[p->cls];

	l1->used -= c->size;
	l1->payload -= d->len;
	__atomic_store_n(&d->state, L1_WORD(L1_FREE, 0), __ATOMIC_RELEASE);
	if (p->nfree++ == 0)
		l1_partial_add(l1, pg);
	if (p->nfree == c->nslots) {
		l1_partial_del(l1, pg);
		p->cls = L1_CLS_NONE;
		p->next = l1->free_pages;
		l1->free_pages = pg;
		l1->npages_free++;
		return;
	}
	d->next = p->free_head;
	p->free_head = id;
}

static void *l1_slot_addr(const struct cn_l1 *l1, uint32_t id, uint32_t cls)
{
	uint32_t pg = id / l1->maxslots;
	uint32_t slot = id % l1->maxslots;

	return l1->base + (size_t)pg * l1->page_size + (size_t)slot * l1->cls[cls].size;
}

/* ---- descriptor state ---- */

/* Take a reader reference if the chunk is READY. Lock-free. */
static bool l1_desc_pin(struct l1_desc *d)
{
	uint32_t w = __atomic_load_n(&d->state, __ATOMIC_RELAXED);

	do {
		if (L1_ST(w) != L1_READY || L1_REFS(w) == L1_REF_MASK)
			return false;
	} while (!__atomic_compare_exchange_n(&d->state, &w, w + 1, true, __ATOMIC_ACQUIRE,
					      __ATOMIC_RELAXED));
	return true;
}

/*
 * Drop a reader reference. The release orders the reader's accesses to the
 * bytes before any reuse of the slot. The reader that drops the last
 * reference of an EVICTING chunk (deleted or evicted while pinned) frees it;
 * nobody else can touch an EVICTING chunk with no readers, so there is no
 * race for that job.
 */
static void l1_desc_unpin(struct cn_l1 *l1, uint32_t id)
{
	uint32_t old = __atomic_fetch_sub(&l1->desc[id].state, 1, __ATOMIC_ACQ_REL);

	if (old == L1_WORD(L1_EVICTING, 1)) {
		pthread_mutex_lock(&l1->lock);
		l1_slot_free(l1, id);
		pthread_mutex_unlock(&l1->lock);
	}
}

/*
 * Take a READY chunk out of the index and the policy, under the lock. With
 * no readers it is freed now (FREE first, so a reader that still finds the id
 * in the index fails to pin it); with readers it becomes EVICTING and the
 * last unpin frees it. @if_unpinned (eviction): leave a pinned chunk alone
 * and return -EBUSY, since evicting it would free no space now.
 *
 * Index and LF readers: with RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF,
 * rte_hash_del_key() does not free the key slot; we free it right away with
 * rte_hash_free_key_with_position() instead of waiting for readers to
 * quiesce (there is no RCU here). A reader still inside rte_hash_lookup may
 * then compare against a recycled key slot and come back with a stale or
 * foreign descriptor id, or with none. That is safe because readers never
 * trust the index: they pin the descriptor (which only succeeds in READY, and
 * then holds the slot) and compare its stored key with the key they looked
 * up; a mismatch is a miss. The worst a reader can see is a miss for a key
 * that is being deleted or replaced concurrently, which it could have seen
 * anyway.
 */
static int l1_retire(struct cn_l1 *l1, uint32_t id, bool if_unpinned)
{
	struct l1_desc *d = &l1->desc[id];
	uint32_t w = __atomic_load_n(&d->state, __ATOMIC_RELAXED);
	uint32_t nw;
	int32_t pos;

	do {
		RTE_ASSERT(L1_ST(w) == L1_READY);
		if (L1_REFS(w) != 0 && if_unpinned)
			return -EBUSY;
		nw = L1_REFS(w) != 0 ? L1_WORD(L1_EVICTING, L1_REFS(w)) : L1_WORD(L1_FREE, 0);
	} while (!__atomic_compare_exchange_n(&d->state, &w, nw, false, __ATOMIC_ACQ_REL,
					      __ATOMIC_RELAXED));

	pos = rte_hash_del_key(l1->index, &d->key);
	if (pos >= 0)
		rte_hash_free_key_with_position(l1->index, pos);
	l1->ev->remove(l1->ev_state, id);
	l1->nchunks--;
	if (nw == L1_WORD(L1_FREE, 0))
		l1_slot_free(l1, id);
	return 0;
}

/*
 * Evict one unpinned READY chunk, the policy's choice, under the lock.
 * Pinned candidates are skipped (the policy moves them away); the skips are
 * bounded by the number of READY chunks so an all-pinned cache ends the
 * search. Returns true if a chunk was evicted (and its slot freed).
 */
static bool l1_evict_one(struct cn_l1 *l1, struct cn_l1_stats *st)
{
	uint64_t tries = l1->nchunks;

	for (uint64_t i = 0; i <= tries; i++) {
		uint32_t id = l1->ev->victim(l1->ev_state);
		uint32_t len;

		if (id == UINT32_MAX)
			return false;
		len = l1->desc[id].len;
		if (l1_retire(l1, id, true) == 0) {
			CN_STAT_INC(st, evictions);
			CN_STAT_ADD(st, evicted_bytes, len);
			return true;
		}
		l1->ev->skip(l1->ev_state, id);
	}
	return false;
}

static unsigned l1_evict_to(struct cn_l1 *l1, struct cn_l1_stats *st, uint64_t target)
{
	unsigned n = 0;

	while (l1->used > target && l1_evict_one(l1, st))
		n++;
	return n;
}

/*
 * Core @core's counters. An out-of-range core is a caller bug; it counts in
 * slot 0 rather than writing out of bounds.
 */
static struct cn_l1_stats *l1_stats(struct cn_l1 *l1, unsigned core)
{
	return &l1->stats[core < l1->ncores ? core : 0];
}

static bool l1_key_eq(const struct cn_key *a, const struct cn_key *b)
{
	return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}

/*
 * Find @key and pin its descriptor. See l1_retire() for why the pin is
 * followed by a key check. Returns the descriptor id or L1_NIL.
 */
static uint32_t l1_find_pin(struct cn_l1 *l1, const struct cn_key *key)
{
	void *data;
	uint32_t id;

	if (rte_hash_lookup_data(l1->index, key, &data) < 0)
		return L1_NIL;
	id = (uint32_t)(uintptr_t)data;
	if (id >= l1->ndesc || !l1_desc_pin(&l1->desc[id]))
		return L1_NIL;
	if (!l1_key_eq(&l1->desc[id].key, key)) {
		l1_desc_unpin(l1, id);
		return L1_NIL;
	}
	return id;
}

/*
 * The index's hash: CRC32C of the key, read from an aligned copy. Keys come
 * straight from request buffers at any offset, and rte_hash_crc reads 8 bytes
 * at a time.
 */
static uint32_t l1_hash(const void *key, uint32_t len, uint32_t init)
{
	uint64_t k[CN_KEY_LEN / 8];

	RTE_BUILD_BUG_ON(sizeof(k) != sizeof(struct cn_key));
	memcpy(k, key, sizeof(k));
	return rte_hash_crc(k, RTE_MIN(len, (uint32_t)sizeof(k)), init);
}

/* ---- public API ---- */

int cn_l1_create(const struct cn_l1_cfg *cfg, struct cn_l1 **out)
{
	const char *name = cfg != NULL && cfg->name != NULL ? cfg->name : "cn_l1";
	const char *evname;
	int socket;
	bool huge;
	struct rte_hash_parameters hp;
	struct cn_l1 *l1;
	pthread_mutexattr_t ma;
	int r;

	if (cfg == NULL || out == NULL)
		return -EINVAL;
	evname = cfg->eviction != NULL ? cfg->eviction : "lru";
	socket = cfg->socket_id < 0 ? SOCKET_ID_ANY : cfg->socket_id;
	huge = rte_eal_has_hugepages() != 0;

	l1 = l1_zalloc(huge, sizeof(*l1), socket);
	if (l1 == NULL)
		return -ENOMEM;
	l1->hugepages = huge;
	r = l1_configure(l1, cfg, name);
	if (r < 0)
		goto free_l1;
	l1->ev = cn_evict_find(evname);
	if (l1->ev == NULL) {
		L1_CFG_ERR("%s: unknown eviction policy '%s'\n", name, evname);
		r = -EINVAL;
		goto free_l1;
	}

	r = -ENOMEM;
	l1->stats = l1_zalloc(huge, sizeof(*l1->stats) * l1->ncores, socket);
	if (l1->stats == NULL)
		goto free_l1;
	l1->pages = l1_zalloc(huge, sizeof(*l1->pages) * l1->npages, socket);
	if (l1->pages == NULL)
		goto free_stats;
	l1->desc = l1_zalloc(huge, sizeof(*l1->desc) * l1->ndesc, socket);
	if (l1->desc == NULL)
		goto free_pages;
	r = l1_pool_alloc(l1, socket);
	if (r < 0) {
		L1_CFG_ERR("%s: pool of %zu bytes: %s\n", name, l1->pool_len, strerror(-r));
		goto free_desc;
	}
	r = l1->ev->create(l1->ndesc, &l1->ev_state);
	if (r < 0)
		goto free_pool;

	hp = (struct rte_hash_parameters){
		.name = name,
		.entries = RTE_MAX(l1->ndesc, 8u),
		.key_len = sizeof(struct cn_key),
		.hash_func = l1_hash,
		.hash_func_init_val = 0,
		.socket_id = socket,
		/*
		 * LF: lock-free readers; writers are serialised by our lock,
		 * so no MULTI_WRITER_ADD. EXT_TABLE: an insert never fails
		 * for a full bucket pair while key slots (one per
		 * descriptor) remain, so commit cannot run out of index.
		 */
		.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF |
			      RTE_HASH_EXTRA_FLAGS_EXT_TABLE,
	};
	l1->index = rte_hash_create(&hp);
	if (l1->index == NULL) {
		r = -rte_errno;
		L1_CFG_ERR("%s: rte_hash_create(%u entries): %s\n", name, hp.entries,
			   rte_strerror(rte_errno));
		goto free_policy;
	}

	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
	r = -pthread_mutex_init(&l1->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	if (r < 0)
		goto free_index;

	for (uint32_t c = 0; c < L1_MAX_CLASSES; c++)
		l1->partial[c] = L1_NIL;
	l1->free_pages = L1_NIL;
	for (uint32_t pg = l1->npages; pg-- > 0;) {
		l1->pages[pg].cls = L1_CLS_NONE;
		l1->pages[pg].next = l1->free_pages;
		l1->free_pages = pg;
	}
	l1->npages_free = l1->npages;
	*out = l1;
	return 0;

free_index:
	rte_hash_free(l1->index);
free_policy:
	l1->ev->destroy(l1->ev_state);
free_pool:
	l1_pool_free(l1);
free_desc:
	l1_zfree(huge, l1->desc);
free_pages:
	l1_zfree(huge, l1->pages);
free_stats:
	l1_zfree(huge, l1->stats);
free_l1:
	l1_zfree(huge, l1);
	return r;
}

void cn_l1_destroy(struct cn_l1 **pl1)
{
	struct cn_l1 *l1;
	bool huge;

	if (pl1 == NULL || *pl1 == NULL)
		return;
	l1 = *pl1;
	huge = l1->hugepages;
	pthread_mutex_destroy(&l1->lock);
	rte_hash_free(l1->index);
	l1->ev->destroy(l1->ev_state);
	l1_pool_free(l1);
	l1_zfree(huge, l1->desc);
	l1_zfree(huge, l1->pages);
	l1_zfree(huge, l1->stats);
	l1_zfree(huge, l1);
	*pl1 = NULL;
}

/*
 * Reserve: refuse a key that is already ready, then find a slot of the
 * chunk's class: the class's partial pages, a free page, and otherwise evict
 * the policy's unpinned victims one by one. A victim of another class frees a
 * slot of that class, not of ours, so we keep going until our class has a
 * free slot or some page has become entirely free; each round removes one
 * READY chunk, so the loop ends at the latest when none is left (then
 * -ENOSPC: everything left is pinned or being written). After success, if
 * the pool is above the high watermark, evict down to the low one.
 */
int cn_l1_reserve(struct cn_l1 *l1, unsigned core, const struct cn_key *key, uint32_t len,
		  struct cn_l1_ref *ref)
{
	struct cn_l1_stats *st = l1_stats(l1, core);
	struct l1_desc *d;
	uint32_t c, id;

	if (len == 0 || len > l1->max_chunk) {
		CN_STAT_INC(st, errors);
		return len == 0 ? -EINVAL : -E2BIG;
	}
	c = l1_class_for(l1, len);

	pthread_mutex_lock(&l1->lock);
	if (rte_hash_lookup(l1->index, key) >= 0) {
		pthread_mutex_unlock(&l1->lock);
		CN_STAT_INC(st, store_exists);
		return -EEXIST;
	}
	while ((id = l1_slot_alloc(l1, c)) == L1_NIL) {
		if (!l1_evict_one(l1, st)) {
			pthread_mutex_unlock(&l1->lock);
			CN_STAT_INC(st, store_nospc);
			return -ENOSPC;
		}
	}
	d = &l1->desc[id];
	d->len = len;
	d->cls = c;
	d->key = *key;
	__atomic_store_n(&d->state, L1_WORD(L1_RESERVED, 0), __ATOMIC_RELAXED);
	l1->used += l1->cls[c].size;
	l1->payload += len;
	l1->nreserved++;
	if (l1->used > l1->high_wm)
		l1_evict_to(l1, st, l1->low_wm);
	pthread_mutex_unlock(&l1->lock);

	ref->id = id;
	ref->len = len;
	ref->data = l1_slot_addr(l1, id, c);
	return 0;
}

/*
 * Commit: publish the chunk in the index, then mark it READY (release: the
 * key and the bytes written before commit are visible to whoever pins it).
 * Readers that find the id before the state flips fail to pin: a miss, as if
 * they had come a moment earlier.
 */
int cn_l1_commit(struct cn_l1 *l1, unsigned core, struct cn_l1_ref *ref)
{
	struct cn_l1_stats *st = l1_stats(l1, core);
	uint32_t id = ref->id;
	struct l1_desc *d;
	int r;

	if (id >= l1->ndesc) {
		CN_STAT_INC(st, errors);
		return -EINVAL;
	}
	d = &l1->desc[id];
	pthread_mutex_lock(&l1->lock);
	RTE_ASSERT(__atomic_load_n(&d->state, __ATOMIC_RELAXED) == L1_WORD(L1_RESERVED, 0));
	l1->nreserved--;
	if (rte_hash_lookup(l1->index, &d->key) >= 0) {
		l1_slot_free(l1, id);
		pthread_mutex_unlock(&l1->lock);
		CN_STAT_INC(st, store_exists);
		return -EEXIST;
	}
	r = rte_hash_add_key_data(l1->index, &d->key, (void *)(uintptr_t)id);
	if (r < 0) {
		/* Not expected: one key slot per descriptor and an extendable table. */
		l1_slot_free(l1, id);
		pthread_mutex_unlock(&l1->lock);
		CN_STAT_INC(st, errors);
		return r;
	}
	__atomic_store_n(&d->state, L1_WORD(L1_READY, 0), __ATOMIC_RELEASE);
	l1->ev->insert(l1->ev_state, id);
	l1->nchunks++;
	pthread_mutex_unlock(&l1->lock);
	CN_STAT_INC(st, stores);
	CN_STAT_ADD(st, store_bytes, ref->len);
	return 0;
}

void cn_l1_abort(struct cn_l1 *l1, unsigned core, struct cn_l1_ref *ref)
{
	struct cn_l1_stats *st = l1_stats(l1, core);

	if (ref->id >= l1->ndesc) {
		CN_STAT_INC(st, errors);
		return;
	}
	pthread_mutex_lock(&l1->lock);
	RTE_ASSERT(__atomic_load_n(&l1->desc[ref->id].state, __ATOMIC_RELAXED) ==
		   L1_WORD(L1_RESERVED, 0));
	l1->nreserved--;
	l1_slot_free(l1, ref->id);
	pthread_mutex_unlock(&l1->lock);
	CN_STAT_INC(st, store_aborts);
}

/* A lent descriptor's key is written at reserve and stays until the slot is given back. */
const struct cn_key *cn_l1_ref_key(const struct cn_l1 *l1, const struct cn_l1_ref *ref)
{
	return &l1->desc[ref->id].key;
}

int cn_l1_pin(struct cn_l1 *l1, unsigned core, const struct cn_key *key, struct cn_l1_ref *ref)
{
	struct cn_l1_stats *st = l1_stats(l1, core);
	uint32_t id = l1_find_pin(l1, key);
	const struct l1_desc *d;

	if (id == L1_NIL) {
		CN_STAT_INC(st, misses);
		return -ENOENT;
	}
	d = &l1->desc[id];
	l1->ev->touch(l1->ev_state, id);
	ref->id = id;
	ref->len = d->len;
	ref->data = l1_slot_addr(l1, id, d->cls);
	CN_STAT_INC(st, hits);
	CN_STAT_INC(st, retrieves);
	CN_STAT_ADD(st, retrieve_bytes, d->len);
	return 0;
}

void cn_l1_unpin(struct cn_l1 *l1, unsigned core, struct cn_l1_ref *ref)
{
	if (ref->id >= l1->ndesc) {
		CN_STAT_INC(l1_stats(l1, core), errors);
		return;
	}
	l1_desc_unpin(l1, ref->id);
}

/*
 * contains: a pin held just long enough to check the descriptor's key, then
 * dropped. Checking "READY and same key" without a reference would race with
 * the descriptor being freed and reused for another key between the two
 * reads; the pin closes that window for the cost of two atomics on the
 * descriptor. No recency change, no retrieve counted.
 */
bool cn_l1_contains(struct cn_l1 *l1, unsigned core, const struct cn_key *key)
{
	struct cn_l1_stats *st = l1_stats(l1, core);
	uint32_t id = l1_find_pin(l1, key);

	CN_STAT_INC(st, lookups);
	if (id == L1_NIL) {
		CN_STAT_INC(st, misses);
		return false;
	}
	l1_desc_unpin(l1, id);
	CN_STAT_INC(st, hits);
	return true;
}

/*
 * contains_prefix: LOOKUP's hot path. Looking keys up one by one costs a
 * chain of dependent cache misses per key (bucket, key slot, descriptor);
 * rte_hash's bulk lookup prefetches the buckets of up to 64 keys at once,
 * and the descriptors are prefetched before they are validated, so a
 * 32-key request costs about as much as a few single lookups. Validation is
 * the same pin/check/unpin as contains(). Counters are those contains()
 * would have counted for the keys examined (up to the first miss).
 */
uint32_t cn_l1_contains_prefix(struct cn_l1 *l1, unsigned core, const struct cn_key *keys,
			       uint32_t n)
{
	struct cn_l1_stats *st = l1_stats(l1, core);
	uint32_t done = 0;

	while (done < n) {
		const void *kp[RTE_HASH_LOOKUP_BULK_MAX];
		void *data[RTE_HASH_LOOKUP_BULK_MAX];
		uint64_t hit = 0;
		uint32_t m = RTE_MIN(n - done, (uint32_t)RTE_HASH_LOOKUP_BULK_MAX);

		for (uint32_t i = 0; i < m; i++)
			kp[i] = &keys[done + i];
		rte_hash_lookup_bulk_data(l1->index, kp, m, &hit, data);
		for (uint32_t i = 0; i < m; i++)
			if (hit & (1ull << i) && (uintptr_t)data[i] < l1->ndesc)
				rte_prefetch0(&l1->desc[(uintptr_t)data[i]]);
		for (uint32_t i = 0; i < m; i++) {
			uint32_t id = (uint32_t)(uintptr_t)data[i];
			bool ok = (hit & (1ull << i)) && id < l1->ndesc &&
				  l1_desc_pin(&l1->desc[id]);

			if (ok) {
				ok = l1_key_eq(&l1->desc[id].key, &keys[done + i]);
				l1_desc_unpin(l1, id);
			}
			CN_STAT_INC(st, lookups);
			if (!ok) {
				CN_STAT_INC(st, misses);
				return done + i;
			}
			CN_STAT_INC(st, hits);
		}
		done += m;
	}
	return done;
}

int cn_l1_delete(struct cn_l1 *l1, unsigned core, const struct cn_key *key)
{
	void *data;
	int r;

	pthread_mutex_lock(&l1->lock);
	r = rte_hash_lookup_data(l1->index, key, &data);
	if (r >= 0)
		r = l1_retire(l1, (uint32_t)(uintptr_t)data, false);
	pthread_mutex_unlock(&l1->lock);
	if (r < 0)
		return -ENOENT;
	CN_STAT_INC(l1_stats(l1, core), deletes);
	return 0;
}

unsigned cn_l1_evict(struct cn_l1 *l1, unsigned core, uint64_t target)
{
	unsigned n;

	pthread_mutex_lock(&l1->lock);
	n = l1_evict_to(l1, l1_stats(l1, core), target);
	pthread_mutex_unlock(&l1->lock);
	return n;
}

void cn_l1_region(const struct cn_l1 *l1, void **base, size_t *len)
{
	*base = l1->base;
	*len = l1->pool_len;
}

/*
 * The pinned figure is counted from the descriptors of the pages in use
 * (their cut slots only), so pins stay lock-free; it is exact at the moment
 * each word is read. pinned_bytes adds up the slot (class) size of those
 * chunks, not their payload, so that it compares with used and the
 * watermarks: memory a reader holds that eviction cannot free.
 */
void cn_l1_get_info(struct cn_l1 *l1, struct cn_l1_info *info)
{
	uint64_t pinned = 0, pinned_bytes = 0;

	memset(info, 0, sizeof(*info));
	pthread_mutex_lock(&l1->lock);
	for (uint32_t pg = 0; pg < l1->npages; pg++) {
		const struct l1_page *p = &l1->pages[pg];

		if (p->cls == L1_CLS_NONE)
			continue;
		for (uint32_t s = 0; s < p->bump; s++) {
			uint32_t w = __atomic_load_n(&l1->desc[pg * l1->maxslots + s].state,
						     __ATOMIC_RELAXED);

			if (L1_REFS(w) != 0) {
				pinned++;
				pinned_bytes += l1->cls[p->cls].size; /* slot bytes, like used */
			}
		}
	}
	info->used = l1->used;
	info->payload = l1->payload;
	info->chunks = l1->nchunks;
	info->reserved = l1->nreserved;
	info->pages_free = l1->npages_free;
	pthread_mutex_unlock(&l1->lock);

	info->pinned = pinned;
	info->pinned_bytes = pinned_bytes;
	info->capacity = l1->pool_len;
	info->high_wm = l1->high_wm;
	info->low_wm = l1->low_wm;
	info->pages_total = l1->npages;
	info->page_size = l1->page_size;
	info->nclasses = l1->nclasses;
	info->max_chunk = l1->max_chunk;
	info->eviction = l1->ev->name;
	info->hugepages = l1->hugepages;
}

const struct cn_l1_stats *cn_l1_core_stats(const struct cn_l1 *l1, unsigned core)
{
	return core < l1->ncores ? &l1->stats[core] : NULL;
}

void cn_l1_stats_sum(const struct cn_l1 *l1, struct cn_l1_stats *out)
{
	memset(out, 0, sizeof(*out));
	cn_metrics_sum(l1->stats, sizeof(*l1->stats), l1->ncores, cn_l1_metric_count,
		       (uint64_t *)out);
}
