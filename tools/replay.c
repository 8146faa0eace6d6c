/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode-replay: run a recorded workload (cachenode --trace-output) again
 * and compare what happens now with what happened then.
 *
 *   cachenode-replay --local [--l1-size SIZE] [--max-chunk SIZE] [--eviction P] FILE
 *   cachenode-replay --node HOST:PORT [--transport NAME] FILE
 *   common: [--speed X] [--strict] [--json] [--no-follow]; --dump FILE prints the records
 *
 * Steps: (1) read the whole recording once to check it (a corrupt record or
 * an unknown format version stops here, before anything is replayed; a file
 * cut short by a crash is replayed up to its last whole record, with a
 * warning) and to follow its rotation chain FILE, FILE.1, ...; (2) set up
 * the target: an embedded engine configured from the trace header (unless
 * overridden) or a connection to a live node; compare its configuration with
 * the recording's (a warning, or exit 3 with --strict); (3) replay every
 * operation record in time order, one at a time, paced by the recorded
 * timestamps (--speed 1) or as fast as possible (--speed 0); (4) report per
 * operation: count, hit rate and bytes now and as recorded, latency
 * quantiles, and how many outcomes changed (hit -> miss, miss -> hit).
 *
 * A store or retrieve that lasted (reserve..commit, pin..unpin) is two
 * events, at its start and at its end, so the target holds reservations and
 * pins over the same stretch of the workload as the node did. Records come
 * from per-core rings drained in turns, so a file is in end order per core
 * but not across cores, and a start may precede records written before it:
 * events are merged through a heap that holds one second of recording
 * (REORDER_NS) before running its oldest. Chunks are replayed as generated
 * bytes of the recorded size.
 *
 * Exit status: 0 replayed (whatever the outcomes), 1 the trace or the target
 * failed, 2 bad usage, 3 refused by --strict.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <rte_eal.h>
#include <rte_errno.h>

#include <cachenode/client.h>

#include "cn_config.h"
#include "cn_engine.h"
#include "cn_tel.h"
#include "cn_trace.h"

#define NAME	    "cachenode-replay"
#define REORDER_NS  UINT64_C(1000000000)
#define NOPS	    (CN_TRACE_prefetch + 1) /* indexed by kind 1..5 */
#define MAX_STATUS  12			    /* distinct statuses tracked per op */
#define MAX_FILES   100000

enum { EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_REFUSED = 3 };

struct opts {
	const char *path;
	const char *node;
	const char *transport;
	bool local, strict, json, follow, dump;
	double speed;
	uint64_t l1_size, max_chunk; /* 0: from the trace */
	const char *eviction;	     /* NULL: from the trace */
	int timeout_ms;
};

/* ---- the recording: the chain of files, checked once before replaying ---- */

struct chain {
	char **paths;
	unsigned nfiles;
	struct cn_trace_header h; /* the first file's */
	uint64_t records, lost, skipped_unknown;
	uint64_t first_mono, last_mono;
	bool complete;	 /* the last file ends with END and names no successor */
	char *cut;	 /* why it ended early; NULL if it did not */
};

static void set_cut(struct chain *ch, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_cut(struct chain *ch, const char *fmt, ...)
{
	va_list ap;

	free(ch->cut);
	va_start(ap, fmt);
	if (vasprintf(&ch->cut, fmt, ap) < 0)
		ch->cut = NULL;
	va_end(ap);
}

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, NAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int add_path(struct chain *ch, const char *p)
{
	char **np = realloc(ch->paths, sizeof(*np) * (ch->nfiles + 1));

	if (np == NULL)
		return -ENOMEM;
	ch->paths = np;
	ch->paths[ch->nfiles] = strdup(p);
	if (ch->paths[ch->nfiles] == NULL)
		return -ENOMEM;
	ch->nfiles++;
	return 0;
}

static void chain_free(struct chain *ch)
{
	for (unsigned i = 0; i < ch->nfiles; i++)
		free(ch->paths[i]);
	free(ch->paths);
	free(ch->cut);
}

/*
 * The base name of a chain given one of its files: FILE.n (file_seq n > 0)
 * belongs to FILE. Returns a malloc'd string or NULL.
 */
static char *chain_base(const char *path, uint32_t seq)
{
	char suffix[16];
	size_t pl = strlen(path), sl;
	char *out = strdup(path);

	if (out == NULL || seq == 0)
		return out;
	sl = (size_t)snprintf(suffix, sizeof(suffix), ".%" PRIu32, seq);
	if (pl > sl && strcmp(path + pl - sl, suffix) == 0)
		out[pl - sl] = '\0';
	return out;
}

/*
 * Read every record of the chain starting at o->path: counts, time span,
 * where it ends. Returns 0, or -errno after printing why.
 */
static int chain_scan(const struct opts *o, struct chain *ch)
{
	char *base = NULL, *path = strdup(o->path), err[256];
	uint32_t seq = 0;
	int n = 0;

	memset(ch, 0, sizeof(*ch));
	while (path != NULL) {
		struct cn_trace_reader *r;
		struct cn_trace_rec rec;
		uint32_t next = 0;

		n = cn_trace_reader_open(path, &r, err, sizeof(err));
		if (n < 0) {
			warn("%s: %s", path, err);
			break;
		}
		if (ch->nfiles == 0) {
			ch->h = *cn_trace_reader_header(r);
			seq = ch->h.file_seq;
			base = chain_base(path, seq);
			if (seq != 0)
				warn("%s is part %" PRIu32 " of a recording: replaying from there",
				     path, seq);
		} else if (cn_trace_reader_header(r)->trace_id != ch->h.trace_id ||
			   cn_trace_reader_header(r)->file_seq != seq) {
			set_cut(ch, "%s belongs to another recording (trace id or part differs)",
				path);
			cn_trace_reader_close(&r);
			break;
		}
		n = base != NULL ? add_path(ch, path) : -ENOMEM;
		if (n < 0) {
			cn_trace_reader_close(&r);
			break;
		}
		while ((n = cn_trace_reader_next(r, &rec)) == 1) {
			if (rec.kind == CN_TRACE_LOST) {
				ch->lost += rec.lost;
			} else if (rec.kind == CN_TRACE_END) {
				next = rec.next_seq;
			} else {
				if (ch->records == 0 || rec.op.mono_ns < ch->first_mono)
					ch->first_mono = rec.op.mono_ns;
				if (rec.op.mono_ns > ch->last_mono)
					ch->last_mono = rec.op.mono_ns;
				ch->records++;
			}
		}
		if (n < 0) {
			warn("%s: %s", path, cn_trace_reader_errmsg(r));
			cn_trace_reader_close(&r);
			break;
		}
		ch->skipped_unknown += cn_trace_reader_skipped(r);
		if (!cn_trace_reader_complete(r)) {
			set_cut(ch, "%s: %s", path, cn_trace_reader_errmsg(r));
			cn_trace_reader_close(&r);
			break;
		}
		cn_trace_reader_close(&r);
		free(path);
		path = NULL;
		if (next == 0) {
			ch->complete = true;
			break;
		}
		if (!o->follow) {
			set_cut(ch, "--no-follow: not reading part %" PRIu32, next);
			break;
		}
		seq = next;
		if (ch->nfiles >= MAX_FILES || asprintf(&path, "%s.%" PRIu32, base, seq) < 0) {
			path = NULL;
			n = -E2BIG;
			warn("too many files");
			break;
		}
		if (access(path, R_OK) != 0) {
			set_cut(ch, "the recording goes on in %s, which is missing", path);
			break;
		}
	}
	free(path);
	free(base);
	return n < 0 ? n : 0;
}

/* ---- what is replayed: records, split into events ---- */

/*
 * A store or retrieve that lasted (reserve..commit, pin..unpin) is replayed
 * as two events, at its start and at its end, so that the target holds the
 * reservation or the pin over the same stretch of the workload as the node
 * did (a STORE batch reserves every chunk before committing any; eviction
 * skips pinned chunks). Everything else is one event.
 */
enum phase {
	EV_ONLY,  /* the whole operation */
	EV_BEGIN, /* reserve, pin */
	EV_END,	  /* commit or abort, unpin */
};

struct rrec {
	uint64_t seq;		/* file order */
	uint16_t kind;
	uint8_t refs;		/* events queued for it, and a node's pending STORE */
	bool held;		/* local: reserved or pinned by its begin */
	bool done;		/* its outcome is counted */
	bool queued;		/* node: in its core's pending STORE */
	uint64_t spent_ns;	/* time the target took for it */
	struct cn_l1_ref ref;	/* local: what begin got */
	struct cn_trace_op op;
	struct cn_key keys[];
};

struct event {
	uint64_t t; /* CLOCK_MONOTONIC of the recording */
	uint64_t seq;
	struct rrec *r;
	enum phase ph;
};

static void rrec_put(struct rrec *r)
{
	if (--r->refs == 0)
		free(r);
}

/* ---- statistics ---- */

struct status_count {
	int32_t status;
	uint64_t recorded, replayed;
};

struct op_stats {
	uint64_t count, skipped;
	uint64_t keys;			   /* lookup: keys asked for; others: count */
	uint64_t hits, rec_hits;	   /* lookup: keys found; retrieve/delete: found */
	uint64_t bytes, rec_bytes;	   /* store: stored; retrieve: read */
	uint64_t changed, hit_to_miss, miss_to_hit;
	unsigned nstatus;
	struct status_count st[MAX_STATUS];
	struct cn_hist lat;		   /* ns */
};

struct target_ops;

struct replay {
	const struct opts *o;
	const struct target_ops *ops;
	void *target;
	struct op_stats op[NOPS];
	uint64_t replayed, late, last_t, base_t, t0;
	uint64_t max_behind_ns;
	bool started;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

static void count_status(struct op_stats *s, int32_t st, bool replayed)
{
	unsigned i;

	for (i = 0; i < s->nstatus && s->st[i].status != st; i++)
		;
	if (i == s->nstatus) {
		if (s->nstatus == MAX_STATUS)
			i = MAX_STATUS - 1; /* the last slot collects the rest */
		else
			s->st[s->nstatus++] = (struct status_count){.status = st};
	}
	if (replayed)
		s->st[i].replayed++;
	else
		s->st[i].recorded++;
}

static const char *status_name(int32_t st, char *buf, size_t len)
{
	switch (-st) {
	case 0:
		return "ok";
	case ENOENT:
		return "missing";
	case EEXIST:
		return "exists";
	case ENOSPC:
		return "no_space";
	case E2BIG:
		return "too_big";
	case EINVAL:
		return "invalid";
	case ECONNABORTED:
		return "aborted";
	default:
		snprintf(buf, len, "errno_%d", (int)-st);
		return buf;
	}
}

static void skip(struct replay *rp, struct rrec *r)
{
	r->done = true;
	rp->op[r->kind].skipped++;
}

/*
 * @r's outcome now: @st (0 or -errno) and @val (lookup: keys found;
 * retrieve: bytes read), against the recorded one.
 */
static void finish(struct replay *rp, struct rrec *r, int32_t st, uint32_t val)
{
	struct op_stats *s = &rp->op[r->kind];
	const struct cn_trace_op *op = &r->op;
	bool hit_now = st == 0, hit_rec = op->status == 0;

	r->done = true;
	cn_hist_add(&s->lat, r->spent_ns);
	s->count++;
	rp->replayed++;
	count_status(s, op->status, false);
	count_status(s, st, true);
	switch (r->kind) {
	case CN_TRACE_lookup:
		s->keys += op->nkeys;
		s->hits += val;
		s->rec_hits += op->val;
		s->changed += st != op->status || val != op->val;
		s->hit_to_miss += val < op->val;
		s->miss_to_hit += val > op->val;
		return;
	case CN_TRACE_store:
		s->keys++;
		s->bytes += st == 0 ? op->val : 0;
		s->rec_bytes += op->status == 0 ? op->val : 0;
		s->changed += st != op->status;
		return;
	case CN_TRACE_retrieve:
		s->bytes += val;
		s->rec_bytes += op->val;
		break;
	default:
		break;
	}
	s->keys++;
	s->changed += st != op->status;
	s->hits += hit_now;
	s->rec_hits += hit_rec;
	s->hit_to_miss += hit_rec && !hit_now;
	s->miss_to_hit += !hit_rec && hit_now;
}

/* ---- targets: an embedded engine or a live node, behind one table ---- */

/*
 * run() replays one event of a record and, once the record's outcome is
 * known (now or at a later event), calls finish() or skip(); flush() sends
 * whatever a target still holds back. A negative return means the target
 * is gone: the replay stops.
 */
struct target_ops {
	const char *kind;
	int (*run)(struct replay *rp, struct rrec *r, enum phase ph);
	int (*flush)(struct replay *rp);
};

/* The target's configuration, as far as it can tell. */
struct target_cfg {
	uint64_t l1_size; /* 0: not known (a live node does not say) */
	uint64_t l1_capacity;
	uint64_t max_chunk;
	char eviction[16];
};

/* Generated chunk bytes: the same pattern for every chunk, as long as the largest one. */
static uint8_t *make_payload(uint64_t len)
{
	uint8_t *p = malloc(len != 0 ? len : 1);
	uint64_t x = UINT64_C(0x9e3779b97f4a7c15);

	for (uint64_t i = 0; p != NULL && i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
	return p;
}

/* -- local: the engine in this process; begin and end are the engine's own calls -- */

struct local {
	struct cn_engine *eng;
	uint8_t *payload; /* max_chunk bytes written into every stored chunk */
	uint8_t *sink;	  /* where retrieved chunks are copied to (as a send would read them) */
};

/*
 * Commit (or abort, as recorded) a reserved chunk, or copy it out and unpin
 * it. Returns the status; *val the bytes read.
 */
static int local_end(struct local *l, struct rrec *r, uint32_t *val)
{
	uint32_t len = r->ref.len;

	r->held = false;
	*val = 0;
	if (r->kind == CN_TRACE_retrieve) {
		memcpy(l->sink, r->ref.data, len);
		cn_engine_unpin(l->eng, 0, &r->ref);
		*val = len;
		return 0;
	}
	if (r->op.status == -ECONNABORTED) {
		cn_engine_store_abort(l->eng, 0, &r->ref);
		return -ECONNABORTED;
	}
	memcpy(r->ref.data, l->payload, len);
	return cn_engine_store_commit(l->eng, 0, &r->ref);
}

static int local_run(struct replay *rp, struct rrec *r, enum phase ph)
{
	struct local *l = rp->target;
	uint64_t t0 = now_ns();
	uint32_t val = 0;
	int st = 0;

	switch (r->kind) {
	case CN_TRACE_lookup:
		st = cn_engine_lookup(l->eng, 0, r->keys, r->op.nkeys, &val, NULL);
		break;
	case CN_TRACE_delete:
		st = cn_engine_delete(l->eng, 0, r->keys);
		break;
	case CN_TRACE_store:
	case CN_TRACE_retrieve:
		if (ph != EV_END) {
			st = r->kind == CN_TRACE_store
				     ? cn_engine_store_begin(l->eng, 0, r->keys, r->op.val, &r->ref)
				     : cn_engine_retrieve_pin(l->eng, 0, r->keys, &r->ref);
			r->held = st == 0;
		}
		/* the end, or at once when the recording saw it end at once (a failure) */
		if (ph != EV_BEGIN && r->held)
			st = local_end(l, r, &val);
		if (r->held) { /* reserved or pinned until its end event */
			r->spent_ns += now_ns() - t0;
			return 0;
		}
		break;
	default:
		skip(rp, r); /* prefetch: no such operation yet */
		return 0;
	}
	r->spent_ns += now_ns() - t0;
	finish(rp, r, st, val);
	return 0;
}

static int local_flush(struct replay *rp)
{
	(void)rp;
	return 0;
}

static const struct target_ops local_ops = {
	.kind = "local",
	.run = local_run,
	.flush = local_flush,
};

/* -- node: a live node through libcachenode -- */

/*
 * A node takes a STORE batch as one request, reserving every chunk before
 * committing any. The reserves of one core are gathered until that core's
 * next event that is not a reserve (normally the batch's first commit) and
 * sent as one request of the chunks' recorded sizes.
 */
struct remote {
	struct cn_client *c;
	uint8_t *payload; /* max_chunk bytes */
	uint8_t *buf;	  /* retrieve buffer, max_chunk bytes */
	uint32_t max_chunk;
	uint32_t max_keys;
	struct pending {
		unsigned n;
		struct rrec **r;
	} *pending; /* per recorded core */
	unsigned ncores;
	struct cn_key *keys;   /* max_keys */
	struct cn_buf *bufs;   /* max_keys */
	int32_t *status;       /* max_keys */
};

/* Connection errors end the replay; a request the client refuses before sending is an outcome. */
static int remote_exec(struct remote *m, struct cn_req *req)
{
	struct cn_req *done;
	int r = cn_client_submit(m->c, req);

	if (r == -EINVAL || r == -E2BIG) {
		req->result = r;
		for (uint32_t i = 0; req->status != NULL && i < req->nkeys; i++)
			req->status[i] = (int32_t)cn_status_from_errno(r);
		return 0;
	}
	if (r == 0)
		r = cn_client_wait(m->c, &done);
	if (r < 0)
		warn("lost the node: %s", cn_client_errmsg(m->c));
	return r;
}

static int32_t wire_status(int32_t st)
{
	return st == CN_OK ? 0 : -cn_status_to_errno(st);
}

/* Send core @core's gathered reserves as one STORE. */
static int remote_send_stores(struct replay *rp, unsigned core)
{
	struct remote *m = rp->target;
	struct pending *p = &m->pending[core];
	struct cn_req req = {.op = CN_OP_STORE, .nkeys = p->n, .keys = m->keys, .bufs = m->bufs,
			     .status = m->status};
	uint64_t t0;
	int r;

	if (p->n == 0)
		return 0;
	for (unsigned i = 0; i < p->n; i++) {
		m->keys[i] = p->r[i]->keys[0];
		m->bufs[i] = (struct cn_buf){.data = m->payload, .len = p->r[i]->op.val};
	}
	t0 = now_ns();
	r = remote_exec(m, &req);
	for (unsigned i = 0; i < p->n; i++) {
		if (r == 0) {
			p->r[i]->spent_ns = now_ns() - t0;
			finish(rp, p->r[i], wire_status(m->status[i]), 0);
		}
		p->r[i]->queued = false;
		rrec_put(p->r[i]);
	}
	p->n = 0;
	return r;
}

static bool pending_has_key(const struct pending *p, const struct cn_key *k)
{
	for (unsigned i = 0; i < p->n; i++)
		if (memcmp(&p->r[i]->keys[0], k, sizeof(*k)) == 0)
			return true;
	return false;
}

static int remote_run(struct replay *rp, struct rrec *r, enum phase ph)
{
	struct remote *m = rp->target;
	unsigned core = r->op.core % m->ncores;
	struct pending *p = &m->pending[core];
	struct cn_buf b = {.data = m->buf, .cap = m->max_chunk};
	int32_t st = CN_OK;
	struct cn_req req = {.nkeys = 1, .keys = r->keys, .status = &st};
	uint64_t t0;
	int ret;

	if (r->kind == CN_TRACE_store && ph != EV_END) {
		if (r->op.status == -ECONNABORTED) {
			skip(rp, r); /* a client gone mid-payload cannot be asked of a node */
			return 0;
		}
		/* a batch never holds a key twice, nor more keys than the node takes */
		if ((p->n == m->max_keys || pending_has_key(p, r->keys)) &&
		    (ret = remote_send_stores(rp, core)) < 0)
			return ret;
		p->r[p->n++] = r;
		r->queued = true;
		r->refs++;
		return 0;
	}
	ret = remote_send_stores(rp, core);
	if (ret < 0 || r->done || ph == EV_END)
		return ret; /* a store's commit: sent with its batch; an unpin: done at the pin */
	switch (r->kind) {
	case CN_TRACE_lookup:
		req.op = CN_OP_LOOKUP;
		req.nkeys = r->op.nkeys;
		req.status = NULL;
		break;
	case CN_TRACE_retrieve:
		req.op = CN_OP_RETRIEVE;
		req.bufs = &b;
		break;
	case CN_TRACE_delete:
		req.op = CN_OP_DELETE;
		break;
	default:
		skip(rp, r);
		return 0;
	}
	t0 = now_ns();
	ret = remote_exec(m, &req);
	r->spent_ns = now_ns() - t0;
	if (ret < 0)
		return ret;
	if (r->kind == CN_TRACE_lookup)
		finish(rp, r, req.result, req.result == 0 ? req.prefix : 0);
	else
		finish(rp, r, wire_status(st), st == CN_OK && req.op == CN_OP_RETRIEVE ? b.len : 0);
	return 0;
}

/* Free what remote_setup() made, records still pending included (after a failure). */
static void remote_free(struct remote *m)
{
	for (unsigned c = 0; m->pending != NULL && c < m->ncores; c++) {
		for (unsigned i = 0; i < m->pending[c].n; i++)
			rrec_put(m->pending[c].r[i]);
		free(m->pending[c].r);
	}
	free(m->pending);
	free(m->keys);
	free(m->bufs);
	free(m->status);
	free(m->payload);
	free(m->buf);
	cn_client_close(&m->c);
}

static int remote_flush(struct replay *rp)
{
	struct remote *m = rp->target;
	int r = 0;

	for (unsigned c = 0; c < m->ncores && r == 0; c++)
		r = remote_send_stores(rp, c);
	return r;
}

static const struct target_ops remote_ops = {
	.kind = "node",
	.run = remote_run,
	.flush = remote_flush,
};

/* ---- the reorder heap: oldest event first, file order among equals ---- */

struct heap {
	struct event *a;
	size_t n, cap;
};

static bool older(const struct event *x, const struct event *y)
{
	return x->t < y->t || (x->t == y->t && x->seq < y->seq);
}

static int heap_push(struct heap *h, struct event e)
{
	size_t i;

	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 1024;
		struct event *a = realloc(h->a, cap * sizeof(*a));

		if (a == NULL)
			return -ENOMEM;
		h->a = a;
		h->cap = cap;
	}
	i = h->n++;
	while (i > 0 && older(&e, &h->a[(i - 1) / 2])) {
		h->a[i] = h->a[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h->a[i] = e;
	return 0;
}

static struct event heap_pop(struct heap *h)
{
	struct event top = h->a[0], last = h->a[--h->n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && older(&h->a[c + 1], &h->a[c]))
			c++;
		if (!older(&h->a[c], &last))
			break;
		h->a[i] = h->a[c];
		i = c;
	}
	if (h->n > 0)
		h->a[i] = last;
	return top;
}

/* Wait until @t of the recording is due at --speed. */
static void pace(struct replay *rp, uint64_t t)
{
	uint64_t target, now;

	if (rp->o->speed <= 0)
		return;
	target = rp->t0 + (uint64_t)((double)(t - rp->base_t) / rp->o->speed);
	now = now_ns();
	if (now < target) {
		struct timespec ts = {.tv_sec = (time_t)(target / 1000000000u),
				      .tv_nsec = (long)(target % 1000000000u)};

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
	} else if (now - target > rp->max_behind_ns) {
		rp->max_behind_ns = now - target;
	}
}

static int pop_and_run(struct replay *rp, struct heap *h)
{
	struct event e = heap_pop(h);
	int ret = 0;

	if (!rp->started) {
		rp->started = true;
		rp->base_t = e.t;
		rp->t0 = now_ns();
	}
	if (e.t < rp->last_t)
		rp->late++; /* more than REORDER_NS out of order: replayed late */
	else
		rp->last_t = e.t;
	pace(rp, e.t);
	if (!e.r->done)
		ret = rp->ops->run(rp, e.r, e.ph);
	rrec_put(e.r);
	return ret;
}

/* Queue @x's events: begin and end for an operation that lasted, else one. */
static int push_record(struct heap *h, struct rrec *x, uint64_t *seq)
{
	bool two = (x->kind == CN_TRACE_store || x->kind == CN_TRACE_retrieve) && x->op.dur_ns != 0;
	int r;

	if (!two) {
		r = heap_push(h, (struct event){x->op.mono_ns, (*seq)++, x, EV_ONLY});
		x->refs = r == 0;
		return r;
	}
	r = heap_push(h, (struct event){x->op.mono_ns - x->op.dur_ns, (*seq)++, x, EV_BEGIN});
	x->refs = r == 0;
	if (r == 0 && (r = heap_push(h, (struct event){x->op.mono_ns, (*seq)++, x, EV_END})) == 0)
		x->refs++;
	return r;
}

/* Replay every operation record of the chain. 0, or -errno (printed). */
static int replay_chain(struct replay *rp, const struct chain *ch)
{
	struct heap h = {0};
	uint64_t seq = 0, newest = 0, left = ch->records;
	int ret = 0;

	for (unsigned f = 0; f < ch->nfiles && ret == 0 && left > 0; f++) {
		struct cn_trace_reader *r;
		struct cn_trace_rec rec;
		char err[256];

		ret = cn_trace_reader_open(ch->paths[f], &r, err, sizeof(err));
		if (ret < 0) {
			warn("%s: %s", ch->paths[f], err);
			break;
		}
		while (ret == 0 && left > 0 && cn_trace_reader_next(r, &rec) == 1) {
			struct rrec *x;
			size_t nk = rec.op.nkeys;

			if (rec.kind == CN_TRACE_LOST || rec.kind == CN_TRACE_END)
				continue;
			left--; /* the scan's count: the same records, even if the file grew since */
			x = calloc(1, sizeof(*x) + nk * sizeof(x->keys[0]));
			if (x == NULL) {
				ret = -ENOMEM;
				break;
			}
			x->seq = seq;
			x->kind = rec.kind;
			x->op = rec.op;
			memcpy(x->keys, rec.keys, nk * sizeof(x->keys[0]));
			newest = x->op.mono_ns > newest ? x->op.mono_ns : newest;
			ret = push_record(&h, x, &seq);
			if (ret < 0) {
				if (x->refs == 0)
					free(x);
				break;
			}
			while (ret == 0 && h.n > 0 && h.a[0].t + REORDER_NS <= newest)
				ret = pop_and_run(rp, &h);
		}
		cn_trace_reader_close(&r);
	}
	while (ret == 0 && h.n > 0)
		ret = pop_and_run(rp, &h);
	if (ret == 0)
		ret = rp->ops->flush(rp);
	/* after a failure: let go of what is still queued */
	while (h.n > 0)
		rrec_put(heap_pop(&h).r);
	free(h.a);
	if (ret == -ENOMEM)
		warn("out of memory");
	return ret;
}

/* ---- configuration checks ---- */

static void human(uint64_t v, char *out, size_t len)
{
	static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	unsigned i = 0;
	double d = (double)v;

	while (d >= 1024 && i < 4) {
		d /= 1024;
		i++;
	}
	snprintf(out, len, "%.4g %s", d, u[i]);
}

/* Differences between the target and the recording, one string each, into @diff (a JSON array). */
static void compare_cfg(const struct cn_trace_meta *m, const struct target_cfg *t, json_t *diff)
{
	char a[32], b[32], line[160];

	if (t->l1_size != 0 && t->l1_size != m->l1_size) {
		human(t->l1_size, a, sizeof(a));
		human(m->l1_size, b, sizeof(b));
		snprintf(line, sizeof(line), "l1 size %s (recorded %s)", a, b);
		json_array_append_new(diff, json_string(line));
	}
	if (t->l1_capacity != 0 && t->l1_capacity != m->l1_capacity) {
		human(t->l1_capacity, a, sizeof(a));
		human(m->l1_capacity, b, sizeof(b));
		snprintf(line, sizeof(line), "l1 capacity %s (recorded %s)", a, b);
		json_array_append_new(diff, json_string(line));
	}
	if (t->max_chunk != m->max_chunk) {
		snprintf(line, sizeof(line), "max chunk %" PRIu64 " (recorded %" PRIu64 ")",
			 t->max_chunk, m->max_chunk);
		json_array_append_new(diff, json_string(line));
	}
	if (t->eviction[0] != '\0' && strcmp(t->eviction, m->eviction) != 0) {
		snprintf(line, sizeof(line), "eviction %s (recorded %s)", t->eviction, m->eviction);
		json_array_append_new(diff, json_string(line));
	}
}

/* ---- setting up the targets ---- */

static int eal_init(const char *argv0, uint64_t l1_size, char *rundir, size_t len)
{
	char prefix[64], mem[32], lcore[16];
	cpu_set_t cpus;
	int cpu = 0;

	CPU_ZERO(&cpus);
	if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0)
		while (cpu < CPU_SETSIZE - 1 && !CPU_ISSET(cpu, &cpus))
			cpu++;
	snprintf(prefix, sizeof(prefix), "--file-prefix=cn_replay_%d", (int)getpid());
	/* the node's budget: 128 MiB for DPDK, 256 B of index per 4 KiB of pool */
	snprintf(mem, sizeof(mem), "%" PRIu64, 128 + (l1_size / 4096 * 256 >> 20));
	snprintf(lcore, sizeof(lcore), "%d", cpu);
	char *argv[] = {
		(char *)argv0, "--no-huge", "--no-pci", "--no-shconf", "--no-telemetry", "-m", mem,
		"--log-level=lib.eal:error", prefix, "-l", lcore, NULL,
	};
	if (rte_eal_init((int)(sizeof(argv) / sizeof(argv[0])) - 1, argv) < 0) {
		warn("EAL initialisation failed: %s", rte_strerror(rte_errno));
		return -rte_errno;
	}
	snprintf(rundir, len, "%s", rte_eal_get_runtime_dir());
	return 0;
}

static int local_setup(const struct opts *o, const struct chain *ch, struct local *l,
		       struct target_cfg *tc)
{
	const struct cn_trace_meta *m = &ch->h.meta;
	struct cn_engine_cfg ecfg = {
		.l1_size = o->l1_size ? o->l1_size : m->l1_size,
		.max_chunk = o->max_chunk ? o->max_chunk : m->max_chunk,
		.eviction = o->eviction ? o->eviction : m->eviction,
		.ncores = 1,
		.socket_id = -1,
		.name = "replay",
	};
	struct cn_l1_info info;
	int r;

	if (cn_evict_find(ecfg.eviction) == NULL) {
		warn("eviction policy '%s'%s is unknown to this build; choose one with --eviction",
		     ecfg.eviction, o->eviction ? "" : " (from the recording)");
		return -EINVAL;
	}
	r = cn_engine_create(&ecfg, &l->eng);
	if (r < 0) {
		warn("cannot create the engine (l1 size %" PRIu64 ", max chunk %" PRIu64 "): %s",
		     ecfg.l1_size, ecfg.max_chunk, strerror(-r));
		return r;
	}
	l->payload = make_payload(ecfg.max_chunk);
	l->sink = malloc(ecfg.max_chunk);
	if (l->payload == NULL || l->sink == NULL)
		return -ENOMEM;
	cn_l1_get_info(cn_engine_l1(l->eng), &info);
	tc->l1_size = ecfg.l1_size;
	tc->l1_capacity = info.capacity;
	tc->max_chunk = ecfg.max_chunk;
	snprintf(tc->eviction, sizeof(tc->eviction), "%s", info.eviction);
	return 0;
}

/* The node's eviction policy, from its STATUS document ("" if it does not say). */
static void node_eviction(struct cn_client *c, char *out, size_t len)
{
	char *text = NULL;
	json_t *root;
	const char *ev;

	out[0] = '\0';
	if (cn_client_status(c, &text) < 0)
		return;
	root = json_loads(text, 0, NULL);
	free(text);
	ev = json_string_value(json_object_get(
		json_object_get(json_object_get(json_object_get(json_object_get(
			root, "components"), "engine"), "components"), "l1"), "eviction"));
	if (ev != NULL)
		snprintf(out, len, "%s", ev);
	json_decref(root);
}

/* @ncores: the recording's cores (workers + 1): one pending STORE each. */
static int remote_setup(const struct opts *o, unsigned ncores, struct remote *m,
			struct target_cfg *tc)
{
	struct cn_client_opts copts = {
		.transport = o->transport,
		.timeout_ms = o->timeout_ms,
		.name = NAME,
	};
	const struct cn_node_info *ni;
	int r = cn_client_connect(o->node, &copts, &m->c);

	if (r < 0) {
		warn("%s", m->c != NULL ? cn_client_errmsg(m->c) : strerror(-r));
		return r;
	}
	ni = cn_client_node(m->c);
	m->max_chunk = ni->max_chunk;
	m->max_keys = ni->max_keys < CN_PROTO_MAX_KEYS ? ni->max_keys : CN_PROTO_MAX_KEYS;
	m->payload = make_payload(ni->max_chunk);
	m->buf = malloc(ni->max_chunk);
	m->ncores = ncores;
	m->pending = calloc(ncores, sizeof(*m->pending));
	m->keys = calloc(m->max_keys, sizeof(*m->keys));
	m->bufs = calloc(m->max_keys, sizeof(*m->bufs));
	m->status = calloc(m->max_keys, sizeof(*m->status));
	if (m->payload == NULL || m->buf == NULL || m->pending == NULL || m->keys == NULL ||
	    m->bufs == NULL || m->status == NULL)
		return -ENOMEM;
	for (unsigned c = 0; c < ncores; c++)
		if ((m->pending[c].r = calloc(m->max_keys, sizeof(*m->pending[c].r))) == NULL)
			return -ENOMEM;
	tc->l1_capacity = ni->l1_capacity;
	tc->max_chunk = ni->max_chunk;
	node_eviction(m->c, tc->eviction, sizeof(tc->eviction));
	return 0;
}

/* ---- output ---- */

static double ratio(uint64_t a, uint64_t b)
{
	return b == 0 ? 0.0 : (double)a / (double)b;
}

static void iso_time(uint64_t wall_ns, char *out, size_t len)
{
	time_t s = (time_t)(wall_ns / 1000000000u);
	struct tm tm;

	gmtime_r(&s, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static bool has_hit_rate(unsigned kind)
{
	return kind == CN_TRACE_lookup || kind == CN_TRACE_retrieve || kind == CN_TRACE_delete;
}

static json_t *op_json(const struct op_stats *s, unsigned kind)
{
	json_t *o = json_object(), *sts = json_object();
	char buf[24];

	json_object_set_new(o, "count", json_integer((json_int_t)s->count));
	json_object_set_new(o, "skipped", json_integer((json_int_t)s->skipped));
	json_object_set_new(o, "keys", json_integer((json_int_t)s->keys));
	if (has_hit_rate(kind)) {
		json_object_set_new(o, "hits", json_integer((json_int_t)s->hits));
		json_object_set_new(o, "recorded_hits", json_integer((json_int_t)s->rec_hits));
		json_object_set_new(o, "hit_rate", json_real(ratio(s->hits, s->keys)));
		json_object_set_new(o, "recorded_hit_rate", json_real(ratio(s->rec_hits, s->keys)));
	}
	json_object_set_new(o, "bytes", json_integer((json_int_t)s->bytes));
	json_object_set_new(o, "recorded_bytes", json_integer((json_int_t)s->rec_bytes));
	json_object_set_new(o, "p50_us", json_real((double)cn_hist_quantile(&s->lat, 0.5) / 1e3));
	json_object_set_new(o, "p99_us", json_real((double)cn_hist_quantile(&s->lat, 0.99) / 1e3));
	json_object_set_new(o, "p999_us",
			    json_real((double)cn_hist_quantile(&s->lat, 0.999) / 1e3));
	json_object_set_new(o, "changed", json_integer((json_int_t)s->changed));
	json_object_set_new(o, "hit_to_miss", json_integer((json_int_t)s->hit_to_miss));
	json_object_set_new(o, "miss_to_hit", json_integer((json_int_t)s->miss_to_hit));
	for (unsigned i = 0; i < s->nstatus; i++)
		json_object_set_new(sts, status_name(s->st[i].status, buf, sizeof(buf)),
				    json_pack("{sIsI}", "recorded", (json_int_t)s->st[i].recorded,
					      "replayed", (json_int_t)s->st[i].replayed));
	json_object_set_new(o, "statuses", sts);
	return o;
}

static json_t *report_json(const struct replay *rp, const struct chain *ch,
			   const struct target_cfg *tc, json_t *diff, double elapsed)
{
	const struct cn_trace_meta *m = &ch->h.meta;
	json_t *root = json_object(), *ops = json_object(), *files = json_array();
	char when[32], digest[20];
	uint64_t changed = 0;

	iso_time(ch->h.start_wall_ns, when, sizeof(when));
	snprintf(digest, sizeof(digest), "%016" PRIx64, ch->h.digest);
	for (unsigned i = 0; i < ch->nfiles; i++)
		json_array_append_new(files, json_string(ch->paths[i]));
	json_object_set_new(
		root, "trace",
		json_pack("{sosssssssfsIsIsIsbsos{sIsIsIsssiss}}", "files", files, "node_id",
			  m->node_id, "version", m->version, "started_at", when, "duration_s",
			  (double)(ch->last_mono - ch->first_mono) / 1e9, "records",
			  (json_int_t)ch->records, "lost", (json_int_t)ch->lost,
			  "skipped_unknown", (json_int_t)ch->skipped_unknown, "complete",
			  ch->complete, "cut_short",
			  ch->cut != NULL ? json_string(ch->cut) : json_null(), "config", "l1_size",
			  (json_int_t)m->l1_size, "l1_capacity", (json_int_t)m->l1_capacity,
			  "max_chunk", (json_int_t)m->max_chunk, "eviction", m->eviction,
			  "workers", (int)m->workers, "digest", digest));
	json_object_set_new(
		root, "target",
		json_pack("{ssss?s{sIsIsIss}sbsO}", "kind", rp->ops->kind, "node", rp->o->node,
			  "config", "l1_size", (json_int_t)tc->l1_size, "l1_capacity",
			  (json_int_t)tc->l1_capacity, "max_chunk", (json_int_t)tc->max_chunk,
			  "eviction", tc->eviction, "matches_recording", json_array_size(diff) == 0,
			  "differences", diff));
	if (tc->l1_size == 0) /* a node does not say */
		json_object_set_new(json_object_get(json_object_get(root, "target"), "config"),
				    "l1_size", json_null());
	for (unsigned k = 1; k < NOPS; k++) {
		json_object_set_new(ops, cn_trace_kind_name(k), op_json(&rp->op[k], k));
		changed += rp->op[k].changed;
	}
	json_object_set_new(root, "replay",
			    json_pack("{sfsfsIsIsfsI}", "speed", rp->o->speed, "elapsed_s", elapsed,
				      "records", (json_int_t)rp->replayed, "late",
				      (json_int_t)rp->late, "max_behind_ms",
				      (double)rp->max_behind_ns / 1e6, "changed",
				      (json_int_t)changed));
	json_object_set_new(root, "ops", ops);
	return root;
}

static void report_text(const struct replay *rp, const struct chain *ch,
			const struct target_cfg *tc, json_t *diff, double elapsed)
{
	const struct cn_trace_meta *m = &ch->h.meta;
	char when[32], a[32], b[32];
	uint64_t changed = 0;

	iso_time(ch->h.start_wall_ns, when, sizeof(when));
	human(m->l1_size, a, sizeof(a));
	printf("trace    %s%s: node %s (%s), recorded %s, %.3f s, %" PRIu64 " records in %u "
	       "file%s, %" PRIu64 " lost, %s\n",
	       ch->paths[0], ch->nfiles > 1 ? " ..." : "", m->node_id, m->version, when,
	       (double)(ch->last_mono - ch->first_mono) / 1e9, ch->records, ch->nfiles,
	       ch->nfiles == 1 ? "" : "s", ch->lost, ch->complete ? "complete" : "cut short");
	printf("recorded l1 %s, max chunk %" PRIu64 ", eviction %s, %u worker%s\n", a,
	       m->max_chunk, m->eviction, m->workers, m->workers == 1 ? "" : "s");
	human(tc->l1_capacity, b, sizeof(b));
	printf("target   %s%s%s: l1 capacity %s, max chunk %" PRIu64 ", eviction %s; %s\n",
	       rp->ops->kind, rp->o->node ? " " : "", rp->o->node ? rp->o->node : "", b,
	       tc->max_chunk, tc->eviction[0] ? tc->eviction : "?",
	       json_array_size(diff) == 0 ? "configured like the recording"
					  : "DIFFERS from the recording");
	printf("replayed %" PRIu64 " records in %.3f s (speed %g%s)%s\n\n", rp->replayed, elapsed,
	       rp->o->speed, rp->o->speed == 0 ? ": as fast as possible" : "",
	       rp->late ? " (some out of time order)" : "");
	printf("%-9s %9s %8s %8s %9s %12s %9s %9s %9s %8s %9s %9s\n", "op", "count", "hit%",
	       "rec hit%", "keys", "bytes", "p50 us", "p99 us", "p999 us", "changed", "hit>miss",
	       "miss>hit");
	for (unsigned k = 1; k < NOPS; k++) {
		const struct op_stats *s = &rp->op[k];
		char hr[16] = "-", rhr[16] = "-";

		changed += s->changed;
		if (s->count == 0 && s->skipped == 0)
			continue;
		if (has_hit_rate(k) && s->keys != 0) {
			snprintf(hr, sizeof(hr), "%.2f", 100.0 * ratio(s->hits, s->keys));
			snprintf(rhr, sizeof(rhr), "%.2f", 100.0 * ratio(s->rec_hits, s->keys));
		}
		printf("%-9s %9" PRIu64 " %8s %8s %9" PRIu64 " %12" PRIu64 " %9.1f %9.1f %9.1f %8"
		       PRIu64 " %9" PRIu64 " %9" PRIu64 "%s\n",
		       cn_trace_kind_name(k), s->count, hr, rhr, s->keys, s->bytes,
		       (double)cn_hist_quantile(&s->lat, 0.5) / 1e3,
		       (double)cn_hist_quantile(&s->lat, 0.99) / 1e3,
		       (double)cn_hist_quantile(&s->lat, 0.999) / 1e3, s->changed, s->hit_to_miss,
		       s->miss_to_hit, s->skipped ? " (some skipped)" : "");
	}
	printf("\n%" PRIu64 " outcome%s differ%s from the recording\n", changed,
	       changed == 1 ? "" : "s", changed == 1 ? "s" : "");
	for (unsigned k = 1; k < NOPS; k++)
		if (rp->op[k].skipped != 0)
			printf("%" PRIu64 " %s records skipped (%s)\n", rp->op[k].skipped,
			       cn_trace_kind_name(k),
			       k == CN_TRACE_prefetch ? "no prefetch operation yet"
						      : "aborted stores cannot be replayed on a node");
}

/*
 * --dump: every record, one line each: "MONO_NS KIND core C op ID status S
 * val V dur NS keys N KEY...", "lost N (total T)", "end records R lost L
 * next S", after a "# FILE: ..." line per file with its header.
 */
static int dump(const struct chain *ch)
{
	for (unsigned f = 0; f < ch->nfiles; f++) {
		struct cn_trace_reader *r;
		struct cn_trace_rec rec;
		char err[256], key[2 * CN_KEY_LEN + 1], sb[24];
		const struct cn_trace_header *h;
		int n = cn_trace_reader_open(ch->paths[f], &r, err, sizeof(err));

		if (n < 0) {
			warn("%s: %s", ch->paths[f], err);
			return n;
		}
		h = cn_trace_reader_header(r);
		printf("# %s: trace %016" PRIx64 " part %" PRIu32 ", node %s, l1_size %" PRIu64
		       ", l1_capacity %" PRIu64 ", max_chunk %" PRIu64 ", eviction %s, digest %016"
		       PRIx64 "\n",
		       ch->paths[f], h->trace_id, h->file_seq, h->meta.node_id, h->meta.l1_size,
		       h->meta.l1_capacity, h->meta.max_chunk, h->meta.eviction, h->digest);
		while (cn_trace_reader_next(r, &rec) == 1) {
			if (rec.kind == CN_TRACE_LOST) {
				printf("lost %" PRIu64 " (total %" PRIu64 ")\n", rec.lost,
				       rec.lost_total);
				continue;
			}
			if (rec.kind == CN_TRACE_END) {
				printf("end records %" PRIu64 " lost %" PRIu64 " next %" PRIu32 "\n",
				       rec.records, rec.lost_total, rec.next_seq);
				continue;
			}
			printf("%" PRIu64 " %s core %u op %#" PRIx64 " status %s val %" PRIu32
			       " dur %" PRIu64 " keys %" PRIu32,
			       rec.op.mono_ns, cn_trace_kind_name(rec.kind), rec.op.core,
			       rec.op.op_id, status_name(rec.op.status, sb, sizeof(sb)), rec.op.val,
			       rec.op.dur_ns, rec.op.nkeys);
			for (uint32_t i = 0; i < rec.op.nkeys; i++) {
				cn_key_format(&rec.keys[i], key);
				printf(" %s", key);
			}
			putchar('\n');
		}
		cn_trace_reader_close(&r);
	}
	return 0;
}

/* ---- main ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " NAME " (--local | --node HOST:PORT | --dump) [OPTIONS] FILE\n"
		"\n"
		"Replay a workload recorded with cachenode --trace-output FILE and compare the\n"
		"outcomes (hits, misses, statuses) and latencies with the recording.\n"
		"\n"
		"targets:\n"
		"  --local               an engine in this process, configured from the trace\n"
		"  --node HOST:PORT      a running node\n"
		"  --dump                print the records instead of replaying them\n"
		"options:\n"
		"  --l1-size SIZE        (--local) L1 size instead of the recorded one\n"
		"  --max-chunk SIZE      (--local) max chunk instead of the recorded one\n"
		"  --eviction POLICY     (--local) eviction policy instead of the recorded one\n"
		"  --transport NAME      (--node) client transport (default tcp)\n"
		"  --timeout MS          (--node) limit on each blocking step (default 10000)\n"
		"  --speed X             1 = recorded timing (default), 2 = twice as fast,\n"
		"                        0 = as fast as possible\n"
		"  --strict              refuse (exit 3) when the target is configured unlike the\n"
		"                        recording (default: a warning)\n"
		"  --no-follow           do not go on into FILE.1, FILE.2, ... (rotated parts)\n"
		"  --json                the report as JSON\n"
		"  -h, --help            this text\n"
		"\n"
		"Exit status: 0 replayed, 1 the trace or the target failed, 2 bad usage,\n"
		"3 refused by --strict.\n");
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, NAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" NAME " --help'.\n");
	return EXIT_USAGE;
}

enum { O_LOCAL = 256, O_NODE, O_DUMP, O_L1, O_MAXCHUNK, O_EVICTION, O_TRANSPORT, O_TIMEOUT,
       O_SPEED, O_STRICT, O_NOFOLLOW, O_JSON };

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{"local", no_argument, NULL, O_LOCAL},
		{"node", required_argument, NULL, O_NODE},
		{"dump", no_argument, NULL, O_DUMP},
		{"l1-size", required_argument, NULL, O_L1},
		{"max-chunk", required_argument, NULL, O_MAXCHUNK},
		{"eviction", required_argument, NULL, O_EVICTION},
		{"transport", required_argument, NULL, O_TRANSPORT},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"speed", required_argument, NULL, O_SPEED},
		{"strict", no_argument, NULL, O_STRICT},
		{"no-follow", no_argument, NULL, O_NOFOLLOW},
		{"json", no_argument, NULL, O_JSON},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	*o = (struct opts){.speed = 1.0, .follow = true};
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		char *end;

		switch (c) {
		case O_LOCAL:
			o->local = true;
			break;
		case O_NODE:
			o->node = optarg;
			break;
		case O_DUMP:
			o->dump = true;
			break;
		case O_L1:
			if (cn_parse_size(optarg, &o->l1_size) < 0 || o->l1_size < (1u << 20))
				return bad_usage("--l1-size '%s': expected a size of at least 1M",
						 optarg);
			break;
		case O_MAXCHUNK:
			if (cn_parse_size(optarg, &o->max_chunk) < 0 || o->max_chunk < 4096 ||
			    o->max_chunk > CN_PROTO_MAX_CHUNK)
				return bad_usage("--max-chunk '%s': expected a size from 4K to 1G",
						 optarg);
			break;
		case O_EVICTION:
			o->eviction = optarg;
			break;
		case O_TRANSPORT:
			o->transport = optarg;
			break;
		case O_TIMEOUT: {
			long v;

			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || end == optarg || v <= 0 || v > INT_MAX)
				return bad_usage("--timeout '%s': milliseconds > 0 expected", optarg);
			o->timeout_ms = (int)v;
			break;
		}
		case O_SPEED:
			errno = 0;
			o->speed = strtod(optarg, &end);
			if (errno != 0 || *end != '\0' || end == optarg || !(o->speed >= 0) ||
			    o->speed > 1e9)
				return bad_usage("--speed '%s': a number >= 0 expected", optarg);
			break;
		case O_STRICT:
			o->strict = true;
			break;
		case O_NOFOLLOW:
			o->follow = false;
			break;
		case O_JSON:
			o->json = true;
			break;
		case 'h':
			usage(stdout);
			return -1;
		default:
			return bad_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return bad_usage(optind >= argc ? "no trace FILE given" : "one trace FILE expected");
	o->path = argv[optind];
	if ((int)o->local + (o->node != NULL) + (int)o->dump != 1)
		return bad_usage("choose one of --local, --node HOST:PORT and --dump");
	if (!o->local && (o->l1_size || o->max_chunk || o->eviction))
		return bad_usage("--l1-size, --max-chunk and --eviction configure --local only");
	if (o->node == NULL && (o->transport || o->timeout_ms))
		return bad_usage("--transport and --timeout are for --node only");
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct chain ch;
	struct local loc = {0};
	struct remote rem = {0};
	struct target_cfg tc = {0};
	struct replay *rp = NULL;
	char rundir[PATH_MAX] = "";
	json_t *diff = NULL;
	uint64_t t0;
	double elapsed;
	int r, rc = EXIT_FAIL;

	r = parse_args(argc, argv, &o);
	if (r != 0)
		return r < 0 ? 0 : r;
	if (chain_scan(&o, &ch) < 0) {
		chain_free(&ch);
		return EXIT_FAIL;
	}
	if (o.dump) {
		rc = dump(&ch) < 0 ? EXIT_FAIL : 0;
		goto out_chain;
	}
	if (ch.cut != NULL)
		warn("warning: %s; replaying the %" PRIu64 " records before it", ch.cut, ch.records);
	if (ch.lost != 0)
		warn("warning: the node dropped %" PRIu64 " records while recording (a full trace "
		     "ring): outcomes after them may differ", ch.lost);
	if (ch.skipped_unknown != 0)
		warn("note: skipped %" PRIu64 " records of kinds this build does not know",
		     ch.skipped_unknown);

	rp = calloc(1, sizeof(*rp));
	diff = json_array();
	if (rp == NULL || diff == NULL) {
		warn("out of memory");
		goto out_chain;
	}
	for (unsigned k = 0; k < NOPS; k++)
		cn_hist_reset(&rp->op[k].lat);
	rp->o = &o;
	if (o.local) {
		uint64_t l1 = o.l1_size ? o.l1_size : ch.h.meta.l1_size;

		if (eal_init(argv[0], l1, rundir, sizeof(rundir)) < 0)
			goto out_chain;
		r = local_setup(&o, &ch, &loc, &tc);
		rp->ops = &local_ops;
		rp->target = &loc;
	} else {
		r = remote_setup(&o, ch.h.meta.workers < CN_MAX_CORES ? ch.h.meta.workers + 1 : CN_MAX_CORES,
				 &rem, &tc);
		rp->ops = &remote_ops;
		rp->target = &rem;
	}
	if (r < 0)
		goto out_target;

	compare_cfg(&ch.h.meta, &tc, diff);
	for (size_t i = 0; i < json_array_size(diff); i++)
		warn("%s: %s", o.strict ? "refusing to replay (--strict)" : "warning: the target differs "
		     "from the recording", json_string_value(json_array_get(diff, i)));
	if (o.strict && json_array_size(diff) != 0) {
		rc = EXIT_REFUSED;
		goto out_target;
	}

	t0 = now_ns();
	r = replay_chain(rp, &ch);
	elapsed = (double)(now_ns() - t0) / 1e9;
	if (r < 0)
		goto out_target;
	if (o.json) {
		json_t *root = report_json(rp, &ch, &tc, diff, elapsed);

		json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
		putchar('\n');
		json_decref(root);
	} else {
		report_text(rp, &ch, &tc, diff, elapsed);
	}
	rc = 0;

out_target:
	cn_engine_destroy(&loc.eng);
	free(loc.payload);
	free(loc.sink);
	remote_free(&rem);
	if (rundir[0] != '\0') {
		rte_eal_cleanup();
		rmdir(rundir); /* --no-shconf still leaves an empty runtime directory */
	}
out_chain:
	json_decref(diff);
	free(rp);
	chain_free(&ch);
	return rc;
}
