/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode-bench: load a node through libcachenode and measure it.
 *
 * One thread per connection; each keeps --depth requests in flight with
 * cn_client_submit() / cn_client_wait() and times every request from submit
 * to completion (CLOCK_MONOTONIC). All latencies are kept (the run is bounded
 * by --count or --duration) and sorted once for the percentiles.
 *
 * Keys are SHA-256 of "bench-TAG-CONN-NS-INDEX": deterministic, distinct per
 * connection, and distinct per run through TAG (random unless --tag). A key's
 * payload is a window of a shared pattern buffer that starts at an offset
 * derived from the key's index, so a chunk returned for the wrong key is seen
 * by --verify without a per-key buffer.
 *
 * Phases per connection: prefill (retrieve, mixed, lookup: store the key set
 * they read; untimed), warmup (--warmup; untimed), then the measured run.
 * Every thread starts measuring at the same barrier.
 *
 * Transports: --transport tcp (default), verbs or auto. Each connection
 * registers its buffers once (the pattern its stores send, one block that
 * holds every slot's retrieve buffers) with cn_client_mem_register(), so
 * over verbs every request takes the registered fast path; over tcp that is
 * a no-op.
 *
 * --raw hands the whole command line to the raw RDMA benchmark
 * (rdma_bench.c, cn_rdma_bench_main()), built in when the build has verbs.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cachenode/client.h>

#ifdef CN_HAVE_VERBS
#include "rdma_bench.h"
#endif

#define BENCH_NAME	    "cachenode-bench"
#define BENCH_DEFAULT_NODE  "127.0.0.1:7700"
#define BENCH_PATTERN_SLOTS 509u /* distinct payload windows (prime) */
#define BENCH_PATTERN_STEP  8u
#define BENCH_MAX_KEYSPACE  65536u
#define BENCH_FULL_VERIFY   16u /* --verify: full compare of 1 reply in 16 */

enum bench_op { OP_STORE, OP_RETRIEVE, OP_MIXED, OP_LOOKUP };

static const char *const op_names[] = {"store", "retrieve", "mixed", "lookup"};

struct bench_cfg {
	const char *node;
	const char *prefill_node; /* NULL = node */
	enum bench_op op;
	uint32_t size;
	uint64_t count;	  /* requests in all, over every connection; 0 with duration */
	double duration;  /* seconds; 0 with count */
	unsigned depth;
	unsigned conns;
	uint32_t kpr;	  /* keys per request */
	uint32_t keyspace; /* keys per connection (retrieve, mixed, lookup) */
	bool warmup;
	bool verify;
	bool json;
	int timeout_ms;
	const char *transport; /* "tcp", "verbs" or "auto" */
	const char *rdma_dev;  /* NULL = any */
	char tag[32];
	const uint8_t *pattern; /* size + BENCH_PATTERN_SLOTS * BENCH_PATTERN_STEP bytes */
	uint64_t seed; /* from the tag: runs with the same tag use the same keys */
};

struct bench_slot {
	struct cn_req req;
	struct cn_key *keys;
	struct cn_buf *bufs;
	int32_t *status;
	uint8_t *tiers;
	uint64_t *kidx; /* each key's index, for the payload window */
	uint8_t *rbuf;	/* kpr x size, RETRIEVE destination (inside the connection's rbufs) */
	uint64_t t0;
};

struct bench_conn {
	const struct bench_cfg *cfg;
	unsigned id;
	struct cn_client *c;
	struct cn_client *pc; /* --prefill-node: the prefill phase's connection */
	pthread_barrier_t *barrier;
	pthread_t thr;
	struct bench_slot *slots;
	uint8_t *rbufs;	/* depth x kpr x size: every slot's rbuf, one registration */
	size_t rbufs_len;
	uint64_t rng;
	/* measured phase */
	uint64_t *lat;
	size_t nlat, cap_lat;
	uint64_t reqs, keys, bytes;
	uint64_t failed, verify_errs, misses;
	uint64_t t_begin, t_end;
	int fatal;
	char msg[320];
};

/* What one pass over the workload counts (prefill, warmup or measured). */
struct bench_phase {
	char ns;	 /* key namespace: 'k' key set, 's' stores, 'w' warmup stores */
	uint64_t target; /* requests; UINT64_MAX with a deadline */
	uint64_t deadline_ns;
	bool record;
	bool prefill;	 /* store the key set (whatever the op) */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/*
 * Key idx of connection conn in namespace ns: four splitmix64 words of
 * (run seed, conn, ns, idx). Keys are made inside the timed loop, so they
 * must cost nanoseconds (hashing text with SHA-256 per key was most of the
 * machine's CPU in a lookup run); they are distinct and uniformly spread,
 * which is all the node's index sees of them.
 */
static void bench_key(const struct bench_cfg *cfg, unsigned conn, char ns, uint64_t idx,
		      struct cn_key *k)
{
	uint64_t base = cfg->seed ^ ((uint64_t)conn << 40) ^ ((uint64_t)(uint8_t)ns << 56) ^ idx;

	for (unsigned w = 0; w < 4; w++) {
		uint64_t v = splitmix64(base + w * 0x632be59bd9b4e019ull);
		memcpy(k->b + 8 * w, &v, 8);
	}
}

static const uint8_t *payload_of(const struct bench_cfg *cfg, uint64_t idx)
{
	return cfg->pattern + (idx % BENCH_PATTERN_SLOTS) * BENCH_PATTERN_STEP;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " BENCH_NAME " [options]\n"
		"\n"
		"  -n, --node HOST:PORT     node (default " BENCH_DEFAULT_NODE ")\n"
		"  -o, --op OP              store | retrieve | mixed | lookup (default store)\n"
		"  -s, --size SIZE          chunk size, K/M/G suffixes (default 1M; lookup 4K)\n"
		"  -c, --count N            requests in all, over every connection (default 1000)\n"
		"  -D, --duration SEC       run for SEC seconds instead of --count\n"
		"  -d, --depth D            requests in flight per connection (default 1)\n"
		"  -C, --conns C            connections, one thread each (default 1)\n"
		"  -k, --keys-per-req K     keys per request (default 1; lookup 32)\n"
		"      --keyspace N         keys per connection that retrieve/mixed/lookup read;\n"
		"                           they are stored first, untimed (default: what fits\n"
		"                           in a quarter of the node's L1)\n"
		"      --prefill-node ADDR  store the key set through this node instead (retrieve\n"
		"                           through --node then reads what an L2 peer holds)\n"
		"  -w, --warmup             an untimed pass before measuring\n"
		"  -V, --verify             check retrieved bytes (3 windows of every chunk,\n"
		"                           all bytes of 1 reply in %u)\n"
		"  -j, --json               also print one JSON object as the last line\n"
		"  -t, --timeout MS         limit on each blocking step (default 10000)\n"
		"      --tag TEXT           key namespace (default: random per run)\n"
		"      --transport T        tcp (default), verbs (RDMA; fails without a usable\n"
		"                           device) or auto (verbs if usable and the node accepts\n"
		"                           it, else tcp); the one used is printed\n"
		"      --rdma-dev NAME      RDMA device for verbs / auto (default: any)\n"
		"  -h, --help               this text\n"
		"\n"
		"mixed: 50/50 store and retrieve over the stored key set (stores of keys that\n"
		"are there already are answered \"exists\", which counts as success).\n"
		"ops/s counts keys, req/s requests; GB/s is payload bytes / 1e9 per second.\n"
		"Exit status: 0 no request failed, 1 some failed, 2 bad usage.\n"
		"\n"
		"Raw RDMA (the verbs transport's primitives alone, no node; perftest's columns):\n"
		"  " BENCH_NAME " --raw server [--rdma-dev NAME] [--port P]      on one host\n"
		"  " BENCH_NAME " --raw write|read [--lat] --size S [--iters N] [--json]\n"
		"                  [--rdma-dev NAME] [--port P] --node HOST     on another\n"
		"  write|read measure RDMA WRITE / READ bandwidth (bytes, iterations, BW peak and\n"
		"  average [MB/sec], MsgRate [Mpps], like ib_write_bw); with --lat one operation\n"
		"  at a time (t_min, t_max, t_typical, t_avg, t_stdev, 99%% and 99.9%% [usec],\n"
		"  like ib_read_lat). --port is the RDMA CM port (default 7701). In this mode the\n"
		"  options are the raw benchmark's: '" BENCH_NAME " --raw write --help' lists\n"
		"  them all (-n is --iters there). Exit 77: no usable RDMA device; 2 (and a\n"
		"  message) in a build without RDMA support.\n",
		BENCH_FULL_VERIFY);
}

__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, BENCH_NAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" BENCH_NAME " --help'.\n");
	return 2;
}

/* "64K", "1M", "1.5G", "4096": bytes (binary multiples). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v <= 0)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		v *= 1024;
		end++;
		break;
	case 'm':
	case 'M':
		v *= 1024 * 1024;
		end++;
		break;
	case 'g':
	case 'G':
		v *= 1024.0 * 1024 * 1024;
		end++;
		break;
	default:
		break;
	}
	if (*end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end != '\0' || v < 1 || v > (double)UINT32_MAX)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end != '\0' || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

__attribute__((format(printf, 2, 3))) static void conn_fail(struct bench_conn *bc,
							     const char *fmt, ...)
{
	va_list ap;

	if (bc->fatal)
		return;
	bc->fatal = 1;
	va_start(ap, fmt);
	vsnprintf(bc->msg, sizeof(bc->msg), fmt, ap);
	va_end(ap);
}

static int conn_alloc(struct bench_conn *bc)
{
	const struct bench_cfg *cfg = bc->cfg;
	bool rbufs = cfg->op == OP_RETRIEVE || cfg->op == OP_MIXED;

	bc->slots = calloc(cfg->depth, sizeof(*bc->slots));
	if (bc->slots == NULL)
		return -ENOMEM;
	if (rbufs) {
		size_t per = (size_t)cfg->kpr * cfg->size;

		bc->rbufs_len = per * cfg->depth;
		bc->rbufs = malloc(bc->rbufs_len);
		if (bc->rbufs == NULL)
			return -ENOMEM;
		/* fault the pages in now, not in the measured run */
		memset(bc->rbufs, 0, bc->rbufs_len);
	}
	for (unsigned i = 0; i < cfg->depth; i++) {
		struct bench_slot *s = &bc->slots[i];

		s->keys = calloc(cfg->kpr, sizeof(*s->keys));
		s->bufs = calloc(cfg->kpr, sizeof(*s->bufs));
		s->status = calloc(cfg->kpr, sizeof(*s->status));
		s->tiers = calloc(cfg->kpr, sizeof(*s->tiers));
		s->kidx = calloc(cfg->kpr, sizeof(*s->kidx));
		if (!s->keys || !s->bufs || !s->status || !s->tiers || !s->kidx)
			return -ENOMEM;
		if (rbufs)
			s->rbuf = bc->rbufs + (size_t)i * cfg->kpr * cfg->size;
	}
	return 0;
}

/*
 * Register what the connection's requests name: the pattern its stores send
 * and its retrieve buffers (a no-op over tcp). Returns 0 or -errno, with the
 * message in bc->msg.
 */
static int conn_register(struct bench_conn *bc, size_t pattern_len)
{
	int rc = cn_client_mem_register(bc->c, (void *)(uintptr_t)bc->cfg->pattern, pattern_len);

	if (rc == 0 && bc->rbufs != NULL)
		rc = cn_client_mem_register(bc->c, bc->rbufs, bc->rbufs_len);
	if (rc < 0)
		snprintf(bc->msg, sizeof(bc->msg), "conn %u: %s", bc->id,
			 cn_client_errmsg(bc->c));
	return rc;
}

static void conn_free(struct bench_conn *bc)
{
	/* first: closing deregisters the buffers freed below */
	cn_client_close(&bc->c);
	cn_client_close(&bc->pc);
	for (unsigned i = 0; bc->slots != NULL && i < bc->cfg->depth; i++) {
		struct bench_slot *s = &bc->slots[i];

		free(s->keys);
		free(s->bufs);
		free(s->status);
		free(s->tiers);
		free(s->kidx);
	}
	free(bc->rbufs);
	free(bc->slots);
	free(bc->lat);
}

/* Fill slot @s with request number @seq of @ph. */
static void prepare(struct bench_conn *bc, const struct bench_phase *ph, struct bench_slot *s,
		    uint64_t seq)
{
	const struct bench_cfg *cfg = bc->cfg;
	const uint32_t K = cfg->kpr;
	uint8_t op;

	if (ph->prefill)
		op = CN_OP_STORE;
	else if (cfg->op == OP_STORE)
		op = CN_OP_STORE;
	else if (cfg->op == OP_RETRIEVE)
		op = CN_OP_RETRIEVE;
	else if (cfg->op == OP_LOOKUP)
		op = CN_OP_LOOKUP;
	else
		op = (xorshift(&bc->rng) >> 32) & 1 ? CN_OP_STORE : CN_OP_RETRIEVE;

	for (uint32_t k = 0; k < K; k++) {
		uint64_t idx;
		char ns = 'k';

		if (ph->prefill)
			idx = seq * K + k; /* the whole key set, in order */
		else if (cfg->op == OP_STORE) {
			idx = seq * K + k; /* new keys every time */
			ns = ph->ns;
		} else
			idx = (seq * K + k) % cfg->keyspace;
		s->kidx[k] = idx;
		bench_key(cfg, bc->id, ns, idx, &s->keys[k]);
		if (op == CN_OP_STORE) {
			s->bufs[k].data = (void *)(uintptr_t)payload_of(cfg, idx);
			s->bufs[k].len = cfg->size;
			s->bufs[k].cap = cfg->size;
		} else if (op == CN_OP_RETRIEVE) {
			s->bufs[k].data = s->rbuf + (size_t)k * cfg->size;
			s->bufs[k].len = 0;
			s->bufs[k].cap = cfg->size;
		}
	}
	s->req = (struct cn_req){
		.op = op,
		.nkeys = K,
		.keys = s->keys,
		.bufs = op == CN_OP_LOOKUP ? NULL : s->bufs,
		.status = op == CN_OP_LOOKUP ? NULL : s->status,
		.tiers = op == CN_OP_LOOKUP ? s->tiers : NULL,
		.user = s,
	};
}

/* Check a retrieved chunk against its payload window; true if it matches. */
static bool verify_chunk(const struct bench_cfg *cfg, const struct cn_buf *b, uint64_t idx,
			 bool full)
{
	const uint8_t *want = payload_of(cfg, idx);
	const uint8_t *got = b->data;
	size_t n = cfg->size, w = n < 64 ? n : 64;

	if (b->len != cfg->size)
		return false;
	if (!cfg->verify)
		return true;
	if (full)
		return memcmp(got, want, n) == 0;
	return memcmp(got, want, w) == 0 && memcmp(got + n / 2, want + n / 2, w / 2) == 0 &&
	       memcmp(got + n - w, want + n - w, w) == 0;
}

static int record_latency(struct bench_conn *bc, uint64_t ns)
{
	if (bc->nlat == bc->cap_lat) {
		size_t ncap = bc->cap_lat ? bc->cap_lat * 2 : 4096;
		uint64_t *n = realloc(bc->lat, ncap * sizeof(*n));

		if (n == NULL)
			return -ENOMEM;
		bc->lat = n;
		bc->cap_lat = ncap;
	}
	bc->lat[bc->nlat++] = ns;
	return 0;
}

/* Account for one completed request of the measured phase. */
static void complete(struct bench_conn *bc, struct bench_slot *s, uint64_t t)
{
	const struct bench_cfg *cfg = bc->cfg;
	struct cn_req *r = &s->req;

	if (record_latency(bc, t - s->t0) < 0)
		conn_fail(bc, "out of memory for latencies");
	bc->reqs++;
	if (r->result != 0) {
		bc->failed++;
		if (bc->failed <= 3)
			fprintf(stderr, BENCH_NAME ": conn %u: %s\n", bc->id,
				cn_client_errmsg(bc->c));
		return;
	}
	bc->keys += r->nkeys;
	switch (r->op) {
	case CN_OP_STORE:
		bc->bytes += (uint64_t)r->nkeys * cfg->size;
		break;
	case CN_OP_RETRIEVE:
		for (uint32_t k = 0; k < r->nkeys; k++) {
			bool full = (bc->reqs % BENCH_FULL_VERIFY) == 0;

			bc->bytes += r->bufs[k].len;
			if (!verify_chunk(cfg, &r->bufs[k], s->kidx[k], full))
				bc->verify_errs++;
		}
		break;
	case CN_OP_LOOKUP:
		if (r->prefix != r->nkeys)
			bc->misses++;
		break;
	}
}

/*
 * Run one phase: keep up to depth requests in flight until @ph->target have
 * completed or the deadline passed. Returns 0, or -1 after a connection
 * error (bc->fatal set; the requests it failed count as failed).
 */
static int run_phase(struct bench_conn *bc, const struct bench_phase *ph)
{
	const struct bench_cfg *cfg = bc->cfg;
	uint64_t submitted = 0, completed = 0;
	bool stopping = false;
	int rc;

	for (;;) {
		while (!stopping && submitted < ph->target &&
		       cn_client_outstanding(bc->c) < cfg->depth) {
			struct bench_slot *s = &bc->slots[submitted % cfg->depth];

			prepare(bc, ph, s, submitted);
			s->t0 = now_ns();
			if (ph->deadline_ns && s->t0 >= ph->deadline_ns) {
				stopping = true;
				break;
			}
			rc = cn_client_submit(bc->c, &s->req);
			if (rc < 0) {
				conn_fail(bc, "conn %u: %s", bc->id, cn_client_errmsg(bc->c));
				stopping = true;
				break;
			}
			submitted++;
		}
		if (completed == submitted)
			break;
		{
			struct cn_req *done;
			uint64_t t;

			rc = cn_client_wait(bc->c, &done);
			t = now_ns();
			if (rc < 0) {
				conn_fail(bc, "conn %u: %s", bc->id, cn_client_errmsg(bc->c));
				if (ph->record)
					bc->failed += submitted - completed;
				break;
			}
			completed++;
			if (ph->record)
				complete(bc, done->user, t);
			else if (done->result != 0 && !bc->fatal)
				conn_fail(bc, "conn %u: %s: %s", bc->id,
					  ph->prefill ? "prefill" : "warmup",
					  cn_client_errmsg(bc->c));
		}
	}
	return bc->fatal ? -1 : 0;
}

static void *conn_main(void *arg)
{
	struct bench_conn *bc = arg;
	const struct bench_cfg *cfg = bc->cfg;
	uint64_t per = cfg->count / cfg->conns + (bc->id < cfg->count % cfg->conns ? 1 : 0);
	struct bench_phase ph;

	bc->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)bc->id << 32 | 1);
	if (cfg->op != OP_STORE) {
		/* Prefill: store the key set, kpr keys a request. */
		struct cn_client *mine = bc->c;

		ph = (struct bench_phase){.ns = 'k', .prefill = true,
					  .target = cfg->keyspace / cfg->kpr};
		if (bc->pc != NULL)
			bc->c = bc->pc; /* the key set goes to another node (an L2 owner) */
		run_phase(bc, &ph);
		bc->c = mine;
	}
	if (!bc->fatal && cfg->warmup) {
		uint64_t n = per / 10 > 2 * cfg->depth ? per / 10 : 2 * cfg->depth;

		ph = (struct bench_phase){.ns = 'w', .target = n};
		if (cfg->duration > 0) {
			ph.target = UINT64_MAX;
			ph.deadline_ns = now_ns() + (uint64_t)(1e9 * (cfg->duration / 10 < 1 ?
								       cfg->duration / 10 : 1));
		}
		run_phase(bc, &ph);
	}
	if (cfg->duration == 0) {
		bc->lat = malloc((per ? per : 1) * sizeof(*bc->lat));
		if (bc->lat != NULL)
			bc->cap_lat = per;
		else
			conn_fail(bc, "conn %u: out of memory for %" PRIu64 " latencies", bc->id,
				  per);
	}

	pthread_barrier_wait(bc->barrier);
	bc->t_begin = now_ns();
	bc->t_end = bc->t_begin;
	if (bc->fatal)
		return NULL;
	ph = (struct bench_phase){.ns = 's', .record = true, .target = per};
	if (cfg->duration > 0) {
		ph.target = UINT64_MAX;
		ph.deadline_ns = bc->t_begin + (uint64_t)(cfg->duration * 1e9);
	}
	run_phase(bc, &ph);
	bc->t_end = now_ns();
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted @v, in microseconds. */
static double pct_us(const uint64_t *v, size_t n, double p)
{
	size_t r;

	if (n == 0)
		return 0;
	r = (size_t)ceil(p * (double)n);
	if (r < 1)
		r = 1;
	if (r > n)
		r = n;
	return (double)v[r - 1] / 1e3;
}

static const char *human_size(uint64_t b, char *out, size_t len)
{
	if (b >= (1u << 20) && b % (1u << 20) == 0)
		snprintf(out, len, "%" PRIu64 " MiB", b >> 20);
	else if (b >= 1024 && b % 1024 == 0)
		snprintf(out, len, "%" PRIu64 " KiB", b >> 10);
	else
		snprintf(out, len, "%" PRIu64 " B", b);
	return out;
}

/* Check the workload against the node's limits and pick the key set size. */
static int fit_to_node(struct bench_cfg *cfg, const struct cn_node_info *ni, bool keyspace_set)
{
	uint64_t frame = (uint64_t)cfg->kpr * (cfg->size + CN_PROTO_STORE_DESC) + 8;

	if (cfg->kpr > ni->max_keys) {
		fprintf(stderr, BENCH_NAME ": --keys-per-req %u: the node takes at most %u keys\n",
			cfg->kpr, ni->max_keys);
		return -E2BIG;
	}
	if (cfg->size > ni->max_chunk) {
		fprintf(stderr, BENCH_NAME ": --size %u: the node takes chunks of at most %u bytes\n",
			cfg->size, ni->max_chunk);
		return -E2BIG;
	}
	if (frame > ni->max_frame) {
		fprintf(stderr, BENCH_NAME ": %u keys of %u bytes make a %" PRIu64
			" byte frame; the node takes at most %" PRIu64 "\n",
			cfg->kpr, cfg->size, frame, ni->max_frame);
		return -E2BIG;
	}
	if (cfg->op == OP_STORE)
		return 0;
	if (!keyspace_set) {
		uint64_t budget = ni->l1_capacity ? ni->l1_capacity / 4 / cfg->conns : 256u << 20;
		uint64_t ks = budget / cfg->size;
		uint64_t need = cfg->duration > 0 ? BENCH_MAX_KEYSPACE :
				(cfg->count / cfg->conns + 1) * cfg->kpr;

		if (ks > need)
			ks = need;
		if (ks > BENCH_MAX_KEYSPACE)
			ks = BENCH_MAX_KEYSPACE;
		cfg->keyspace = (uint32_t)ks;
	}
	/* Whole requests of distinct keys. */
	if (cfg->keyspace < cfg->kpr)
		cfg->keyspace = cfg->kpr;
	cfg->keyspace -= cfg->keyspace % cfg->kpr;
	if (ni->l1_capacity &&
	    (uint64_t)cfg->keyspace * cfg->size * cfg->conns > ni->l1_capacity)
		fprintf(stderr, BENCH_NAME ": warning: %u keys x %u bytes x %u conns exceed the "
			"node's L1 (%" PRIu64 " bytes): expect evictions and misses\n",
			cfg->keyspace, cfg->size, cfg->conns, ni->l1_capacity);
	return 0;
}

static size_t pattern_len(uint32_t size)
{
	return (size_t)size + BENCH_PATTERN_SLOTS * BENCH_PATTERN_STEP;
}

static uint8_t *make_pattern(uint32_t size)
{
	size_t n = pattern_len(size);
	uint8_t *p = malloc(n);
	uint64_t s = 0x2545f4914f6cdd1dull;

	if (p == NULL)
		return NULL;
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = xorshift(&s);

		memcpy(p + i, &v, n - i < 8 ? n - i : 8);
	}
	return p;
}

/* Is this command line for the raw RDMA benchmark (--raw anywhere before "--")? */
static bool raw_mode(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], "--raw") == 0 || strncmp(argv[i], "--raw=", 6) == 0)
			return true;
	}
	return false;
}

int main(int argc, char **argv)
{
	enum { OPT_KEYSPACE = 256, OPT_TAG, OPT_TRANSPORT, OPT_RDMA_DEV, OPT_PREFILL_NODE };
	static const struct option longopts[] = {
		{"node", required_argument, NULL, 'n'},
		{"op", required_argument, NULL, 'o'},
		{"size", required_argument, NULL, 's'},
		{"count", required_argument, NULL, 'c'},
		{"duration", required_argument, NULL, 'D'},
		{"depth", required_argument, NULL, 'd'},
		{"conns", required_argument, NULL, 'C'},
		{"keys-per-req", required_argument, NULL, 'k'},
		{"keyspace", required_argument, NULL, OPT_KEYSPACE},
		{"prefill-node", required_argument, NULL, OPT_PREFILL_NODE},
		{"warmup", no_argument, NULL, 'w'},
		{"verify", no_argument, NULL, 'V'},
		{"json", no_argument, NULL, 'j'},
		{"timeout", required_argument, NULL, 't'},
		{"tag", required_argument, NULL, OPT_TAG},
		{"transport", required_argument, NULL, OPT_TRANSPORT},
		{"rdma-dev", required_argument, NULL, OPT_RDMA_DEV},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct bench_cfg cfg = {.node = BENCH_DEFAULT_NODE, .op = OP_STORE, .depth = 1, .conns = 1,
				.transport = "tcp"};
	bool size_set = false, count_set = false, kpr_set = false, keyspace_set = false;
	struct cn_client_opts copts = {.name = BENCH_NAME};
	struct bench_conn *conns = NULL;
	pthread_barrier_t barrier;
	uint64_t v, reqs = 0, keys = 0, bytes = 0, failed = 0, verr = 0, misses = 0;
	uint64_t t_begin = UINT64_MAX, t_end = 0, *all = NULL;
	size_t nall = 0;
	double secs, p50, p99, p999;
	uint8_t *pattern = NULL;
	const char *transport;
	char sz[32];
	int opt, rc = 1, fatal = 0;
	unsigned started = 0;

	if (raw_mode(argc, argv)) {
#ifdef CN_HAVE_VERBS
		return cn_rdma_bench_main(argc, argv);
#else
		fprintf(stderr, BENCH_NAME ": --raw: this build has no RDMA support "
			"(libibverbs/librdmacm were not found when it was built)\n");
		return 2;
#endif
	}

	while ((opt = getopt_long(argc, argv, "n:o:s:c:D:d:C:k:wVjt:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			cfg.node = optarg;
			break;
		case 'o': {
			size_t i;

			for (i = 0; i < 4; i++)
				if (strcmp(optarg, op_names[i]) == 0)
					break;
			if (i == 4)
				return bad_usage("bad --op '%s' (store, retrieve, mixed, lookup)",
						 optarg);
			cfg.op = (enum bench_op)i;
			break;
		}
		case 's':
			if (parse_size(optarg, &v) < 0)
				return bad_usage("bad --size '%s' (bytes, K/M/G suffixes)", optarg);
			cfg.size = (uint32_t)v;
			size_set = true;
			break;
		case 'c':
			if (parse_u64(optarg, 1, UINT32_MAX, &v) < 0)
				return bad_usage("bad --count '%s'", optarg);
			cfg.count = v;
			count_set = true;
			break;
		case 'D': {
			char *end;

			cfg.duration = strtod(optarg, &end);
			if (end == optarg || *end != '\0' || !(cfg.duration > 0) ||
			    cfg.duration > 86400)
				return bad_usage("bad --duration '%s' (seconds)", optarg);
			break;
		}
		case 'd':
			if (parse_u64(optarg, 1, CN_CLIENT_MAX_DEPTH, &v) < 0)
				return bad_usage("bad --depth '%s' (1..%d)", optarg,
						 CN_CLIENT_MAX_DEPTH);
			cfg.depth = (unsigned)v;
			break;
		case 'C':
			if (parse_u64(optarg, 1, 1024, &v) < 0)
				return bad_usage("bad --conns '%s' (1..1024)", optarg);
			cfg.conns = (unsigned)v;
			break;
		case 'k':
			if (parse_u64(optarg, 1, CN_PROTO_MAX_KEYS, &v) < 0)
				return bad_usage("bad --keys-per-req '%s' (1..%u)", optarg,
						 CN_PROTO_MAX_KEYS);
			cfg.kpr = (uint32_t)v;
			kpr_set = true;
			break;
		case OPT_KEYSPACE:
			if (parse_u64(optarg, 1, UINT32_MAX, &v) < 0)
				return bad_usage("bad --keyspace '%s'", optarg);
			cfg.keyspace = (uint32_t)v;
			keyspace_set = true;
			break;
		case 'w':
			cfg.warmup = true;
			break;
		case 'V':
			cfg.verify = true;
			break;
		case 'j':
			cfg.json = true;
			break;
		case 't':
			if (parse_u64(optarg, 1, INT_MAX, &v) < 0)
				return bad_usage("bad --timeout '%s' (milliseconds)", optarg);
			cfg.timeout_ms = (int)v;
			break;
		case OPT_PREFILL_NODE:
			cfg.prefill_node = optarg;
			break;
		case OPT_TAG:
			if (strlen(optarg) == 0 || strlen(optarg) >= sizeof(cfg.tag))
				return bad_usage("bad --tag '%s' (1..%zu characters)", optarg,
						 sizeof(cfg.tag) - 1);
			snprintf(cfg.tag, sizeof(cfg.tag), "%s", optarg);
			break;
		case OPT_TRANSPORT:
			if (strcmp(optarg, "tcp") != 0 && strcmp(optarg, "verbs") != 0 &&
			    strcmp(optarg, "auto") != 0)
				return bad_usage("bad --transport '%s' (tcp, verbs or auto)",
						 optarg);
			cfg.transport = optarg;
			break;
		case OPT_RDMA_DEV:
			if (optarg[0] == '\0')
				return bad_usage("empty --rdma-dev");
			cfg.rdma_dev = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "Try '" BENCH_NAME " --help'.\n");
			return 2;
		}
	}
	if (optind < argc)
		return bad_usage("unexpected argument '%s'", argv[optind]);
	if (count_set && cfg.duration > 0)
		return bad_usage("--count and --duration exclude each other");
	if (!size_set)
		cfg.size = cfg.op == OP_LOOKUP ? 4096 : 1u << 20;
	if (!kpr_set)
		cfg.kpr = cfg.op == OP_LOOKUP ? 32 : 1;
	if (!count_set && cfg.duration == 0)
		cfg.count = 1000;
	if (cfg.duration == 0 && cfg.count < cfg.conns)
		return bad_usage("--count %" PRIu64 " is less than --conns %u", cfg.count,
				 cfg.conns);
	if (cfg.tag[0] == '\0')
		snprintf(cfg.tag, sizeof(cfg.tag), "%x%" PRIx64, (unsigned)getpid(),
			 now_ns() & (uint64_t)0xffffffffff);
	{
		uint8_t h[32];
		cn_sha256(cfg.tag, strlen(cfg.tag), h);
		memcpy(&cfg.seed, h, sizeof(cfg.seed));
	}
	copts.timeout_ms = cfg.timeout_ms;
	copts.transport = cfg.transport;
	copts.rdma_dev = cfg.rdma_dev;

	conns = calloc(cfg.conns, sizeof(*conns));
	if (conns == NULL) {
		fprintf(stderr, BENCH_NAME ": out of memory\n");
		return 1;
	}
	for (unsigned i = 0; i < cfg.conns; i++) {
		conns[i].cfg = &cfg;
		conns[i].id = i;
		conns[i].barrier = &barrier;
		if (cn_client_connect(cfg.node, &copts, &conns[i].c) < 0) {
			fprintf(stderr, BENCH_NAME ": %s\n", cn_client_errmsg(conns[i].c));
			goto out_conns;
		}
		if (cfg.prefill_node != NULL &&
		    cn_client_connect(cfg.prefill_node, &copts, &conns[i].pc) < 0) {
			fprintf(stderr, BENCH_NAME ": --prefill-node: %s\n",
				cn_client_errmsg(conns[i].pc));
			goto out_conns;
		}
	}
	if (fit_to_node(&cfg, cn_client_node(conns[0].c), keyspace_set) < 0)
		goto out_conns;
	pattern = make_pattern(cfg.size);
	if (pattern == NULL) {
		fprintf(stderr, BENCH_NAME ": out of memory\n");
		goto out_conns;
	}
	cfg.pattern = pattern;
	for (unsigned i = 0; i < cfg.conns; i++) {
		if (conn_alloc(&conns[i]) < 0) {
			fprintf(stderr, BENCH_NAME ": out of memory for %u x %u buffers of %u bytes\n",
				cfg.depth, cfg.kpr, cfg.size);
			goto out_conns;
		}
		if (conn_register(&conns[i], pattern_len(cfg.size)) < 0) {
			fprintf(stderr, BENCH_NAME ": registering the buffers: %s\n", conns[i].msg);
			goto out_conns;
		}
	}

	pthread_barrier_init(&barrier, NULL, cfg.conns);
	for (; started < cfg.conns; started++) {
		if (pthread_create(&conns[started].thr, NULL, conn_main, &conns[started]) != 0) {
			fprintf(stderr, BENCH_NAME ": cannot start thread %u\n", started);
			/* the barrier would never open: no way back but out */
			exit(1);
		}
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(conns[i].thr, NULL);
	pthread_barrier_destroy(&barrier);

	for (unsigned i = 0; i < cfg.conns; i++) {
		struct bench_conn *bc = &conns[i];

		if (bc->fatal) {
			fprintf(stderr, BENCH_NAME ": %s\n", bc->msg);
			fatal = 1;
		}
		reqs += bc->reqs;
		keys += bc->keys;
		bytes += bc->bytes;
		failed += bc->failed;
		verr += bc->verify_errs;
		misses += bc->misses;
		if (bc->t_begin < t_begin)
			t_begin = bc->t_begin;
		if (bc->t_end > t_end)
			t_end = bc->t_end;
		nall += bc->nlat;
	}
	all = malloc((nall ? nall : 1) * sizeof(*all));
	if (all == NULL) {
		fprintf(stderr, BENCH_NAME ": out of memory\n");
		goto out_conns;
	}
	nall = 0;
	for (unsigned i = 0; i < cfg.conns; i++) {
		memcpy(all + nall, conns[i].lat, conns[i].nlat * sizeof(*all));
		nall += conns[i].nlat;
	}
	qsort(all, nall, sizeof(*all), cmp_u64);
	p50 = pct_us(all, nall, 0.50);
	p99 = pct_us(all, nall, 0.99);
	p999 = pct_us(all, nall, 0.999);
	secs = t_end > t_begin ? (double)(t_end - t_begin) / 1e9 : 0;
	/* with auto, connections could in principle settle differently */
	transport = cn_client_transport(conns[0].c);
	for (unsigned i = 1; i < cfg.conns; i++)
		if (strcmp(cn_client_transport(conns[i].c), transport) != 0)
			transport = "mixed";

	printf(BENCH_NAME ": %s, %s x %u key%s a request, depth %u, %u connection%s, node %s\n",
	       op_names[cfg.op], human_size(cfg.size, sz, sizeof(sz)), cfg.kpr,
	       cfg.kpr == 1 ? "" : "s", cfg.depth, cfg.conns, cfg.conns == 1 ? "" : "s",
	       cfg.node);
	printf("  transport     %s\n", transport);
	if (cfg.op != OP_STORE)
		printf("  key set       %u keys a connection (stored first, untimed)\n",
		       cfg.keyspace);
	printf("  requests      %" PRIu64 " in %.3f s\n", reqs, secs);
	printf("  req/s         %.1f\n", secs > 0 ? (double)reqs / secs : 0);
	printf("  ops/s         %.1f (keys)\n", secs > 0 ? (double)keys / secs : 0);
	printf("  GB/s          %.3f\n", secs > 0 ? (double)bytes / 1e9 / secs : 0);
	printf("  latency us    p50 %.1f  p99 %.1f  p99.9 %.1f\n", p50, p99, p999);
	printf("  errors        %" PRIu64 " (failed %" PRIu64 ", verify %" PRIu64
	       ", lookup misses %" PRIu64 ")\n",
	       failed + verr + misses, failed, verr, misses);
	if (cfg.json)
		printf("{\"op\": \"%s\", \"transport\": \"%s\", \"size\": %u, \"count\": %" PRIu64
		       ", \"depth\": %u, \"conns\": %u, \"keys_per_req\": %u, \"ops_per_s\": %.1f"
		       ", \"req_per_s\": %.1f, \"gbytes_per_s\": %.4f, \"p50_us\": %.1f, \"p99_us\": "
		       "%.1f, \"p999_us\": %.1f, \"errors\": %" PRIu64 ", \"seconds\": %.4f}\n",
		       op_names[cfg.op], transport, cfg.size, reqs, cfg.depth,
		       cfg.conns, cfg.kpr,
		       secs > 0 ? (double)keys / secs : 0, secs > 0 ? (double)reqs / secs : 0,
		       secs > 0 ? (double)bytes / 1e9 / secs : 0, p50, p99, p999,
		       failed + verr + misses, secs);
	fflush(stdout);
	rc = fatal || failed + verr + misses > 0 ? 1 : 0;

out_conns:
	free(all);
	for (unsigned i = 0; i < cfg.conns; i++)
		conn_free(&conns[i]);
	free(conns);
	free(pattern);
	return rc;
}
