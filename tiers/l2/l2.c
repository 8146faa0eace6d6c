/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L2 tier: peers, rendezvous placement, health and back-off, and the pool of
 * control-plane threads that talk to peers. See cn_l2.h for the contract.
 *
 * The peer table is an array that only grows (CN_L2_MAX_PEERS slots): a
 * refresh appends new peers (published by a release store of npeers) and
 * flips the member flag of the others, so the workers read placement
 * without a lock. Health (down_until, fails, last_error) is written by the
 * pool threads under the peer's mutex and read with relaxed loads.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cachenode/client.h>

#include "cn_l2.h"

#define L2_BACKOFF_MIN_MS 1000u
#define L2_BACKOFF_MAX_MS 30000u

const struct cn_metric_desc cn_l2_peer_metric_desc[] = {CN_L2_PEER_METRICS(CN_METRIC_DESC)};
const unsigned cn_l2_peer_metric_count = 0 CN_L2_PEER_METRICS(CN_METRIC_COUNT);
const struct cn_metric_desc cn_l2_metric_desc[] = {CN_L2_METRICS(CN_METRIC_DESC)};
const unsigned cn_l2_metric_count = 0 CN_L2_METRICS(CN_METRIC_COUNT);

struct l2_peer {
	struct cn_l2_peer_info info;
	uint64_t idhash;
	_Atomic bool member;
	_Atomic uint64_t down_until_ms; /* 0 = up */
	pthread_mutex_t lock;		/* fails, last_error */
	unsigned fails;
	char last_error[192];
	struct cn_l2_peer_stats st;	/* atomic adds */
};

struct l2_thread {
	struct cn_l2 *l2;
	pthread_t tid;
	bool started;
	struct cn_client *cli[CN_L2_MAX_PEERS]; /* this thread's, lazily connected */
	char idmsg[200]; /* why the last connect was refused (wrong node id), else "" */
};

struct cn_l2 {
	struct cn_l2_cfg cfg;
	char self_id[CN_PROTO_MAX_NAME + 1];
	char hello_name[CN_PROTO_MAX_NAME + 1];
	struct l2_peer peers[CN_L2_MAX_PEERS];
	_Atomic unsigned npeers;
	_Atomic unsigned nmembers; /* member peers other than this node */
	_Atomic bool self_member;  /* the source lists this node: it owns keys too */

	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	struct cn_async *qhead, *qtail; /* waiting jobs, linked through async.next */
	unsigned qlen;
	bool stopping;
	struct l2_thread *thr;
	unsigned nthr;

	struct cn_l2_stats st; /* atomic adds */
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#define ATOMIC_ADD(p, v) __atomic_fetch_add((p), (uint64_t)(v), __ATOMIC_RELAXED)

void cn_l2_count(struct cn_l2 *l2, unsigned off, uint64_t v)
{
	ATOMIC_ADD((uint64_t *)&l2->st + off, v);
}

void cn_l2_peer_skip(struct cn_l2 *l2, uint16_t i, uint64_t n)
{
	ATOMIC_ADD(&l2->peers[i].st.down_skips, n);
}

/* ---- placement ---- */

static uint64_t mix64(uint64_t x)
{
	/* splitmix64's finaliser: every input bit affects every output bit */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static uint64_t id_hash(const char *id)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 */

	for (; *id; id++) {
		h ^= (unsigned char)*id;
		h *= 0x100000001b3ull;
	}
	return mix64(h);
}

/* score(key, node): all 32 key bytes chained through the mixer, seeded by the node. */
static uint64_t score(const struct cn_key *key, uint64_t idh)
{
	uint64_t h = idh;

	for (unsigned i = 0; i < CN_KEY_LEN; i += 8) {
		uint64_t w;
		memcpy(&w, key->b + i, 8);
		h = mix64(h ^ w);
	}
	return h;
}

unsigned cn_l2_rendezvous(const struct cn_key *key, const char *const *ids, unsigned n)
{
	unsigned best = 0;
	uint64_t best_s = score(key, id_hash(ids[0]));

	for (unsigned i = 1; i < n; i++) {
		uint64_t s = score(key, id_hash(ids[i]));

		if (s > best_s || (s == best_s && strcmp(ids[i], ids[best]) < 0)) {
			best = i;
			best_s = s;
		}
	}
	return best;
}

uint16_t cn_l2_owner(const struct cn_l2 *l2, const struct cn_key *key)
{
	unsigned n = atomic_load_explicit(&l2->npeers, memory_order_acquire);
	bool self = atomic_load_explicit(&l2->self_member, memory_order_relaxed);
	uint64_t best_s = self ? score(key, id_hash(l2->self_id)) : 0;
	uint16_t best = CN_L2_SELF;
	const char *best_id = l2->self_id;

	for (unsigned i = 0; i < n; i++) {
		const struct l2_peer *p = &l2->peers[i];
		uint64_t s;

		if (!atomic_load_explicit(&p->member, memory_order_relaxed))
			continue;
		s = score(key, p->idhash);
		if (best == CN_L2_SELF && !self) { /* the first member when this node owns nothing */
			best = (uint16_t)i;
			best_s = s;
			best_id = p->info.id;
			continue;
		}
		if (s > best_s || (s == best_s && strcmp(p->info.id, best_id) < 0)) {
			best = (uint16_t)i;
			best_s = s;
			best_id = p->info.id;
		}
	}
	return best;
}

bool cn_l2_peer_down(const struct cn_l2 *l2, uint16_t i)
{
	uint64_t until = atomic_load_explicit(&l2->peers[i].down_until_ms, memory_order_relaxed);

	return until != 0 && now_ms() < until;
}

bool cn_l2_self_member(const struct cn_l2 *l2)
{
	return atomic_load(&l2->self_member);
}

bool cn_l2_active(const struct cn_l2 *l2)
{
	return l2 != NULL && atomic_load_explicit(&l2->nmembers, memory_order_relaxed) > 0;
}

enum cn_l2_write cn_l2_write_mode(const struct cn_l2 *l2)
{
	return l2->cfg.write;
}

/* ---- sources ---- */

int cn_l2_static_parse(const char *spec, struct cn_l2_static *out, char *err, size_t errlen)
{
	const char *p = spec;

	memset(out, 0, sizeof(*out));
	while (*p) {
		size_t len = strcspn(p, ",");
		char ent[256], host[200];
		const char *at, *tname = "tcp";
		char *slash;
		uint16_t port;
		struct cn_l2_peer_info *pi;

		if (len == 0 || len >= sizeof(ent))
			goto bad;
		memcpy(ent, p, len);
		ent[len] = '\0';
		at = strchr(ent, '@');
		/* an optional "/TRANSPORT" after the address (no address has a '/') */
		slash = at != NULL ? strchr(at, '/') : NULL;
		if (slash != NULL) {
			*slash = '\0';
			tname = slash + 1;
			if (strcmp(tname, "tcp") != 0 && strcmp(tname, "verbs") != 0 &&
			    strcmp(tname, "auto") != 0) {
				snprintf(err, errlen,
					 "'%.*s': unknown transport '%.16s' (expected tcp, verbs "
					 "or auto after the '/')",
					 (int)(len > 100 ? 100 : len), p, tname);
				return -EINVAL;
			}
		}
		if (at == NULL || at == ent || (size_t)(at - ent) > CN_PROTO_MAX_NAME ||
		    cn_parse_hostport(at + 1, host, sizeof(host), &port) < 0 || port == 0 ||
		    strlen(at + 1) >= sizeof(pi->addr))
			goto bad;
		for (const char *c = ent; c < at; c++)
			if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_' && *c != '.')
				goto bad;
		for (unsigned i = 0; i < out->n; i++)
			if (strncmp(out->peers[i].id, ent, (size_t)(at - ent)) == 0 &&
			    out->peers[i].id[at - ent] == '\0') {
				snprintf(err, errlen, "peer id '%.*s' given twice", (int)(at - ent), ent);
				return -EINVAL;
			}
		if (out->n == CN_L2_MAX_PEERS) {
			snprintf(err, errlen, "more than %u peers", CN_L2_MAX_PEERS);
			return -EINVAL;
		}
		pi = &out->peers[out->n++];
		memcpy(pi->id, ent, (size_t)(at - ent));
		pi->id[at - ent] = '\0';
		snprintf(pi->addr, sizeof(pi->addr), "%s", at + 1);
		snprintf(pi->transport, sizeof(pi->transport), "%s", tname);
		p += len;
		if (*p == ',')
			p++;
		continue;
bad:
		snprintf(err, errlen,
			 "'%.*s': expected ID@HOST:PORT[/tcp|/verbs|/auto] (ID: 1-64 of "
			 "[A-Za-z0-9._-])",
			 (int)(len > 100 ? 100 : len), p);
		return -EINVAL;
	}
	return 0;
}

static int static_snapshot(void *arg, struct cn_l2_peer_info *out, unsigned max)
{
	const struct cn_l2_static *st = arg;
	unsigned n = st->n < max ? st->n : max;

	memcpy(out, st->peers, n * sizeof(*out));
	return (int)n;
}

const struct cn_l2_source_ops cn_l2_static_source = {
	.name = "static",
	.snapshot = static_snapshot,
};

int cn_l2_refresh(struct cn_l2 *l2)
{
	struct cn_l2_peer_info *snap = calloc(CN_L2_MAX_PEERS, sizeof(*snap));
	bool seen[CN_L2_MAX_PEERS] = {false};
	unsigned n = atomic_load(&l2->npeers), members = 0;
	bool self = false;
	int got;

	if (snap == NULL)
		return -ENOMEM;
	got = l2->cfg.source->snapshot(l2->cfg.source_arg, snap, CN_L2_MAX_PEERS);
	if (got < 0) {
		free(snap);
		return got;
	}
	for (int k = 0; k < got; k++) {
		unsigned i;

		if (strcmp(snap[k].id, l2->self_id) == 0) {
			self = true; /* this node: an owner like the others */
			continue;
		}
		for (i = 0; i < n; i++)
			if (strcmp(l2->peers[i].info.id, snap[k].id) == 0)
				break;
		if (i == n) {
			if (n == CN_L2_MAX_PEERS)
				continue;
			l2->peers[n].info = snap[k];
			l2->peers[n].idhash = id_hash(snap[k].id);
			n++;
			atomic_store_explicit(&l2->npeers, n, memory_order_release);
		}
		/*
		 * An address change keeps the slot (the pool threads reconnect on
		 * their next failure); the registry source will make use of it.
		 */
		seen[i] = true;
	}
	for (unsigned i = 0; i < n; i++) {
		atomic_store(&l2->peers[i].member, seen[i]);
		members += seen[i];
	}
	atomic_store(&l2->nmembers, members);
	atomic_store(&l2->self_member, self);
	free(snap);
	return 0;
}

/* ---- health ---- */

static void peer_ok(struct l2_peer *p)
{
	if (atomic_load_explicit(&p->down_until_ms, memory_order_relaxed) == 0 && p->fails == 0)
		return;
	pthread_mutex_lock(&p->lock);
	p->fails = 0;
	atomic_store(&p->down_until_ms, 0);
	pthread_mutex_unlock(&p->lock);
}

/* A request to @p failed with @err: mark it down for the next back-off step. */
static void peer_fail(struct l2_peer *p, int err, const char *what)
{
	unsigned ms;

	if (err == -ETIMEDOUT || err == -EAGAIN)
		ATOMIC_ADD(&p->st.timeouts, 1);
	else
		ATOMIC_ADD(&p->st.errors, 1);
	ATOMIC_ADD(&p->st.marked_down, 1);
	pthread_mutex_lock(&p->lock);
	ms = L2_BACKOFF_MIN_MS << (p->fails < 5 ? p->fails : 5);
	if (ms > L2_BACKOFF_MAX_MS)
		ms = L2_BACKOFF_MAX_MS;
	p->fails++;
	if (err == -EADDRNOTAVAIL) /* @what says it all: a node with another id */
		snprintf(p->last_error, sizeof(p->last_error), "%s", what);
	else
		snprintf(p->last_error, sizeof(p->last_error), "%s: %s", what, strerror(-err));
	atomic_store(&p->down_until_ms, now_ms() + ms);
	pthread_mutex_unlock(&p->lock);
}

/* ---- the pool ---- */

static struct cn_client *peer_client(struct l2_thread *t, unsigned i, int *err)
{
	struct cn_l2 *l2 = t->l2;
	struct l2_peer *p = &l2->peers[i];
	struct cn_client_opts o = {
		.transport = p->info.transport[0] ? p->info.transport : "tcp",
		.timeout_ms = (int)l2->cfg.timeout_ms,
		.name = l2->hello_name,
	};
	int r;

	if (t->cli[i] != NULL)
		return t->cli[i];
	r = cn_client_connect(p->info.addr, &o, &t->cli[i]);
	if (r < 0) {
		*err = r;
		return NULL;
	}
	ATOMIC_ADD(&p->st.connects, 1);
	/*
	 * The node at that address must be the one the source named: another
	 * id there means a wrong list (or a moved node), and asking it would
	 * put keys where no other node looks for them.
	 */
	if (strcmp(cn_client_node(t->cli[i])->node_id, p->info.id) != 0) {
		snprintf(t->idmsg, sizeof(t->idmsg), "%.100s answers as node '%.64s'",
			 p->info.addr, cn_client_node(t->cli[i])->node_id);
		cn_client_close(&t->cli[i]);
		*err = -EADDRNOTAVAIL;
		return NULL;
	}
	return t->cli[i];
}

/* A connection-level failure: the client is dropped (reconnected next time), the peer marked down. */
static void peer_broken(struct l2_thread *t, unsigned i, int err, const char *what)
{
	cn_client_close(&t->cli[i]);
	peer_fail(&t->l2->peers[i], err, what);
}

/* Room per key of a fetch's first RETRIEVE over client @c (see cn_l2_cfg.fetch_cap). */
static uint32_t fetch_cap(const struct cn_l2 *l2, struct cn_client *c)
{
	uint32_t cap = l2->cfg.fetch_cap;

	if (cap == 0)
		cap = strcmp(cn_client_transport(c), "tcp") == 0 ? (uint32_t)l2->cfg.max_chunk
								 : CN_L2_RDMA_FETCH_CAP;
	return cap < l2->cfg.max_chunk ? cap : (uint32_t)l2->cfg.max_chunk;
}

/*
 * The keys of fetch @req (answered) whose chunks did not fit the first cap
 * (CN_E_TOOBIG with their length, within max_chunk): fetch them again in one
 * RETRIEVE with buffers of their size, in place in @req's bufs and status.
 * 0 (also when a key is gone meanwhile: a miss), or a connection error.
 */
static int refetch_big(struct l2_thread *t, struct l2_peer *p, struct cn_client *c,
		       struct cn_req *req)
{
	uint32_t n = 0, *at = malloc(req->nkeys * sizeof(*at));
	struct cn_key *keys = malloc(req->nkeys * sizeof(*keys));
	struct cn_buf *bufs = calloc(req->nkeys, sizeof(*bufs));
	int32_t *status = calloc(req->nkeys, sizeof(*status));
	struct cn_req again = {.op = CN_OP_RETRIEVE, .keys = keys, .bufs = bufs, .status = status};
	struct cn_req *done;
	int r = 0;

	for (uint32_t j = 0; j < req->nkeys && at && keys && bufs && status; j++) {
		struct cn_buf *b = &req->bufs[j];
		void *grown;

		if (req->status[j] != CN_E_TOOBIG || b->len <= b->cap ||
		    b->len > t->l2->cfg.max_chunk)
			continue;
		grown = realloc(b->data, b->len);
		if (grown == NULL)
			continue; /* stays a miss */
		b->data = grown;
		keys[n] = req->keys[j];
		bufs[n] = (struct cn_buf){.data = grown, .cap = b->len};
		at[n++] = j;
	}
	if (n > 0) {
		ATOMIC_ADD(&p->st.fetch_reqs, 1);
		again.nkeys = n;
		r = cn_client_submit(c, &again);
		if (r == 0)
			r = cn_client_wait(c, &done);
		for (uint32_t i = 0; r == 0 && i < n; i++) {
			req->status[at[i]] = status[i];
			req->bufs[at[i]].len = bufs[i].len;
		}
	}
	free(at);
	free(keys);
	free(bufs);
	free(status);
	return r;
}

/* One RETRIEVE / LOOKUP / STORE of @job's items owned by peer @pi (@idx: their indexes). */
static void run_group(struct l2_thread *t, struct cn_l2_job *job, unsigned pi, const uint32_t *idx,
		      uint32_t k)
{
	struct cn_l2 *l2 = t->l2;
	struct l2_peer *p = &l2->peers[pi];
	struct cn_key *keys = malloc(k * sizeof(*keys));
	struct cn_buf *bufs = calloc(k, sizeof(*bufs));
	int32_t *status = calloc(k, sizeof(*status));
	uint8_t *tiers = calloc(k, 1);
	struct cn_req req = {.nkeys = k, .keys = keys, .bufs = bufs, .status = status,
			     .tiers = tiers};
	struct cn_client *c;
	int r = -ENOMEM;

	if (keys == NULL || bufs == NULL || status == NULL || tiers == NULL)
		goto out;
	if (cn_l2_peer_down(l2, (uint16_t)pi)) {
		ATOMIC_ADD(&p->st.down_skips, k);
		goto out;
	}
	t->idmsg[0] = '\0';
	c = peer_client(t, pi, &r);
	if (c == NULL) {
		peer_fail(p, r, t->idmsg[0] ? t->idmsg : "connect");
		goto out;
	}
	for (uint32_t j = 0; j < k; j++)
		keys[j] = job->it[idx[j]].key;
	switch (job->op) {
	case CN_L2_FETCH:
		req.op = CN_OP_RETRIEVE;
		for (uint32_t j = 0; j < k; j++) {
			bufs[j].cap = fetch_cap(l2, c);
			/* untouched pages of a large malloc cost nothing until written */
			bufs[j].data = malloc(bufs[j].cap);
			if (bufs[j].data == NULL)
				goto out;
		}
		ATOMIC_ADD(&p->st.fetch_reqs, 1);
		ATOMIC_ADD(&p->st.fetch_keys, k);
		break;
	case CN_L2_LOOKUP:
		req.op = CN_OP_LOOKUP;
		ATOMIC_ADD(&p->st.lookup_reqs, 1);
		ATOMIC_ADD(&p->st.lookup_keys, k);
		break;
	case CN_L2_PUT:
		req.op = CN_OP_STORE;
		for (uint32_t j = 0; j < k; j++) {
			bufs[j].data = job->it[idx[j]].data;
			bufs[j].len = job->it[idx[j]].len;
			ATOMIC_ADD(&p->st.put_bytes, bufs[j].len);
		}
		ATOMIC_ADD(&p->st.put_reqs, 1);
		break;
	}
	/* submit + wait, not exec: wait's own return tells a broken connection from a reply */
	r = cn_client_submit(c, &req);
	if (r == 0) {
		struct cn_req *done;
		r = cn_client_wait(c, &done);
	}
	if (r < 0) {
		/* timeout, reset, refused: nothing of this connection can be trusted */
		peer_broken(t, pi, r, job->op == CN_L2_FETCH	  ? "retrieve"
				      : job->op == CN_L2_LOOKUP ? "lookup"
								 : "store");
		goto out;
	}
	if (job->op == CN_L2_FETCH && (r = refetch_big(t, p, c, &req)) < 0) {
		peer_broken(t, pi, r, "retrieve");
		goto out;
	}
	peer_ok(p);
	for (uint32_t j = 0; j < k; j++) {
		struct cn_l2_item *it = &job->it[idx[j]];

		switch (job->op) {
		case CN_L2_FETCH:
			it->status = status[j];
			if (status[j] == CN_OK) {
				void *shrunk = realloc(bufs[j].data, bufs[j].len ? bufs[j].len : 1);

				it->data = shrunk ? shrunk : bufs[j].data;
				it->len = bufs[j].len;
				bufs[j].data = NULL;
				ATOMIC_ADD(&p->st.fetch_hits, 1);
				ATOMIC_ADD(&p->st.fetch_bytes, it->len);
			}
			break;
		case CN_L2_LOOKUP:
			it->present = j < req.prefix;
			it->status = it->present ? CN_OK : CN_E_NOENT;
			ATOMIC_ADD(&p->st.lookup_hits, it->present);
			break;
		case CN_L2_PUT:
			it->status = status[j];
			break;
		}
	}
out:
	if (bufs != NULL && job->op == CN_L2_FETCH)
		for (uint32_t j = 0; j < k; j++)
			free(bufs[j].data);
	free(keys);
	free(bufs);
	free(status);
	free(tiers);
}

/* Run @job: one request per owner peer, items in their order. */
static void run_job(struct l2_thread *t, struct cn_l2_job *job)
{
	uint32_t *idx = malloc(job->n * sizeof(*idx));
	bool *done = calloc(job->n, sizeof(*done));

	for (uint32_t i = 0; i < job->n; i++) {
		job->it[i].status = CN_E_NOENT;
		job->it[i].present = false;
		if (job->op == CN_L2_FETCH) {
			job->it[i].data = NULL;
			job->it[i].len = 0;
		}
	}
	if (idx == NULL || done == NULL)
		goto out;
	for (uint32_t i = 0; i < job->n; i++) {
		uint16_t pi = job->it[i].peer;
		uint32_t k = 0;

		if (done[i] || pi == CN_L2_SELF || pi >= atomic_load(&t->l2->npeers))
			continue;
		for (uint32_t j = i; j < job->n; j++)
			if (!done[j] && job->it[j].peer == pi) {
				idx[k++] = j;
				done[j] = true;
			}
		run_group(t, job, pi, idx, k);
	}
out:
	free(idx);
	free(done);
}

static void *pool_main(void *arg)
{
	struct l2_thread *t = arg;
	struct cn_l2 *l2 = t->l2;

	for (;;) {
		struct cn_async *a;

		pthread_mutex_lock(&l2->qlock);
		while (l2->qhead == NULL && !l2->stopping)
			pthread_cond_wait(&l2->qcond, &l2->qlock);
		if (l2->qhead == NULL) {
			pthread_mutex_unlock(&l2->qlock);
			break;
		}
		a = l2->qhead;
		l2->qhead = a->next;
		if (l2->qhead == NULL)
			l2->qtail = NULL;
		l2->qlen--;
		__atomic_store_n(&l2->st.queue_depth, l2->qlen, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&l2->qlock);

		run_job(t, (struct cn_l2_job *)a);
		ATOMIC_ADD(&l2->st.jobs_done, 1);
		((struct cn_l2_job *)a)->wake.post(((struct cn_l2_job *)a)->wake.worker, a);
	}
	for (unsigned i = 0; i < CN_L2_MAX_PEERS; i++)
		cn_client_close(&t->cli[i]);
	return NULL;
}

struct cn_l2_job *cn_l2_job_alloc(uint32_t n)
{
	return calloc(1, sizeof(struct cn_l2_job) + n * sizeof(struct cn_l2_item));
}

int cn_l2_submit(struct cn_l2 *l2, struct cn_l2_job *job)
{
	int r = 0;

	pthread_mutex_lock(&l2->qlock);
	if (l2->stopping) {
		r = -ESHUTDOWN;
	} else if (l2->qlen >= l2->cfg.queue_max) {
		r = -EAGAIN;
	} else {
		job->async.next = NULL;
		if (l2->qtail)
			l2->qtail->next = &job->async;
		else
			l2->qhead = &job->async;
		l2->qtail = &job->async;
		l2->qlen++;
		__atomic_store_n(&l2->st.queue_depth, l2->qlen, __ATOMIC_RELAXED);
		pthread_cond_signal(&l2->qcond);
	}
	pthread_mutex_unlock(&l2->qlock);
	if (r == 0)
		ATOMIC_ADD(&l2->st.jobs_submitted, 1);
	else if (r == -EAGAIN)
		ATOMIC_ADD(job->op == CN_L2_PUT ? &l2->st.put_dropped : &l2->st.queue_full, 1);
	return r;
}

int cn_l2_create(const struct cn_l2_cfg *cfg, struct cn_l2 **out)
{
	struct cn_l2 *l2;
	int r;

	if (cfg == NULL || cfg->self_id == NULL || cfg->source == NULL || cfg->max_chunk == 0 ||
	    strlen(cfg->self_id) > CN_PROTO_MAX_NAME)
		return -EINVAL;
	l2 = calloc(1, sizeof(*l2));
	if (l2 == NULL)
		return -ENOMEM;
	l2->cfg = *cfg;
	if (l2->cfg.threads == 0)
		l2->cfg.threads = 2;
	if (l2->cfg.queue_max == 0)
		l2->cfg.queue_max = 1024;
	if (l2->cfg.timeout_ms == 0)
		l2->cfg.timeout_ms = 1000;
	snprintf(l2->self_id, sizeof(l2->self_id), "%s", cfg->self_id);
	snprintf(l2->hello_name, sizeof(l2->hello_name), "%s%.*s", CN_L2_PEER_NAME_PREFIX,
		 (int)(CN_PROTO_MAX_NAME - strlen(CN_L2_PEER_NAME_PREFIX)), cfg->self_id);
	l2->cfg.self_id = l2->self_id;
	for (unsigned i = 0; i < CN_L2_MAX_PEERS; i++)
		pthread_mutex_init(&l2->peers[i].lock, NULL);
	pthread_mutex_init(&l2->qlock, NULL);
	pthread_cond_init(&l2->qcond, NULL);
	r = cn_l2_refresh(l2);
	if (r < 0)
		goto err;
	l2->thr = calloc(l2->cfg.threads, sizeof(*l2->thr));
	if (l2->thr == NULL) {
		r = -ENOMEM;
		goto err;
	}
	for (unsigned i = 0; i < l2->cfg.threads; i++) {
		char name[16];

		l2->thr[i].l2 = l2;
		r = pthread_create(&l2->thr[i].tid, NULL, pool_main, &l2->thr[i]);
		if (r != 0) {
			r = -r;
			goto err;
		}
		l2->thr[i].started = true;
		l2->nthr++;
		snprintf(name, sizeof(name), "cn-l2-%u", i % 100u);
		pthread_setname_np(l2->thr[i].tid, name);
	}
	*out = l2;
	return 0;
err:
	cn_l2_destroy(&l2);
	return r;
}

void cn_l2_stop(struct cn_l2 *l2)
{
	struct cn_async *left;

	if (l2 == NULL)
		return;
	pthread_mutex_lock(&l2->qlock);
	l2->stopping = true;
	left = l2->qhead;
	l2->qhead = l2->qtail = NULL;
	l2->qlen = 0;
	pthread_cond_broadcast(&l2->qcond);
	pthread_mutex_unlock(&l2->qlock);
	/* hand the queued jobs back unrun: every item a miss */
	while (left != NULL) {
		struct cn_l2_job *job = (struct cn_l2_job *)left;

		left = left->next;
		for (uint32_t i = 0; i < job->n; i++) {
			job->it[i].status = CN_E_NOENT;
			job->it[i].present = false;
			if (job->op == CN_L2_FETCH)
				job->it[i].data = NULL;
		}
		job->wake.post(job->wake.worker, &job->async);
	}
	for (unsigned i = 0; l2->thr && i < l2->cfg.threads; i++)
		if (l2->thr[i].started) {
			pthread_join(l2->thr[i].tid, NULL);
			l2->thr[i].started = false;
		}
}

void cn_l2_destroy(struct cn_l2 **pl2)
{
	struct cn_l2 *l2 = pl2 ? *pl2 : NULL;

	if (l2 == NULL)
		return;
	cn_l2_stop(l2);
	for (unsigned i = 0; i < CN_L2_MAX_PEERS; i++)
		pthread_mutex_destroy(&l2->peers[i].lock);
	pthread_mutex_destroy(&l2->qlock);
	pthread_cond_destroy(&l2->qcond);
	free(l2->thr);
	free(l2);
	*pl2 = NULL;
}

/* ---- reading ---- */

unsigned cn_l2_npeers(const struct cn_l2 *l2)
{
	return atomic_load_explicit(&l2->npeers, memory_order_acquire);
}

int cn_l2_peer_get(const struct cn_l2 *l2, unsigned i, struct cn_l2_peer_view *v)
{
	struct l2_peer *p;
	uint64_t until, now = now_ms();

	if (i >= cn_l2_npeers(l2))
		return -ENOENT;
	p = (struct l2_peer *)&l2->peers[i];
	memset(v, 0, sizeof(*v));
	v->info = p->info;
	v->member = atomic_load(&p->member);
	until = atomic_load(&p->down_until_ms);
	v->down = until != 0 && now < until;
	v->down_ms_left = v->down ? until - now : 0;
	pthread_mutex_lock(&p->lock);
	v->fails = p->fails;
	snprintf(v->last_error, sizeof(v->last_error), "%s", p->last_error);
	pthread_mutex_unlock(&p->lock);
	cn_metrics_sum(&p->st, sizeof(p->st), 1, sizeof(p->st) / sizeof(uint64_t), (uint64_t *)&v->st);
	return 0;
}

void cn_l2_get_stats(const struct cn_l2 *l2, struct cn_l2_stats *out)
{
	cn_metrics_sum(&l2->st, sizeof(l2->st), 1, sizeof(l2->st) / sizeof(uint64_t), (uint64_t *)out);
}

const char *cn_l2_source_name(const struct cn_l2 *l2)
{
	return l2->cfg.source->name;
}

unsigned cn_l2_timeout_ms(const struct cn_l2 *l2)
{
	return l2->cfg.timeout_ms;
}
