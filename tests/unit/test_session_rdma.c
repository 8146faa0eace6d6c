/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The protocol session's CN_F_RDMA STORE and RETRIEVE, driven through
 * struct cn_session_ops the way the verbs transport drives it: frames go in
 * through rx_buf()/rx_done(), replies come out through tx_iov()/tx_done(),
 * and the test plays the transport's RDMA part itself. For each operation
 * rdma_next() hands out it checks what an HCA would (the local side inside
 * the registered L1 region, the remote side inside a buffer registered with
 * that rkey), copies the bytes between the slab and a plain buffer of the
 * test, then reports completion with rdma_done(). The engine, L1 and session
 * are the real ones.
 *
 * The L2 cases give the session a real L2 tier (tiers/l2, its own threads)
 * whose peer is a second engine and session served over the real tcp
 * transport in this process; the test plays the worker's side of the async
 * completion path (the wake handle's post() queues the job, the test hands
 * it to async_done() as the transport's worker would).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <cachenode/client.h>
#include "cn_engine.h"
#include "cn_l2.h"
#include "cn_session.h"
#include "cn_test_eal.h"
#include "cn_test_wake.h"
#include "cn_transport.h"

#define MAX_REGIONS 16
#define GUARD	    0xee /* bytes around and after what RDMA may write */
#define GUARD_LEN   64

/* Remote memory the test's "peer" registered: what an rkey may reach. */
struct region {
	uint8_t *base;
	size_t len;
	uint32_t rkey;
};

struct fix {
	struct cn_engine *eng;
	struct cn_session_ctx ctx;
	struct cn_session_stats sstats[2];
	struct region reg[MAX_REGIONS];
	unsigned nreg;
	/* loopback server for the test over the real transport */
	struct cn_server *srv;
	struct cn_transport_stats tstats[1];
};

/* One server-side session and the reply bytes it has produced. */
struct conn {
	struct fix *f;
	void *s;
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	bool fatal; /* a fatal error was queued: tx_done() answers -EPROTO */
};

/* A request being built: header + payload, appended to a byte stream. */
struct bytes {
	uint8_t *p;
	size_t len, cap;
};

static unsigned fix_seq;

static struct fix *fix_new(uint64_t l1, uint64_t max_chunk)
{
	struct fix *f = calloc(1, sizeof(*f));
	char name[32];
	struct cn_engine_cfg ecfg = {
		.l1_size = l1, .max_chunk = max_chunk, .ncores = 2, .socket_id = -1, .name = name,
	};

	assert_non_null(f);
	snprintf(name, sizeof(name), "rdma%u", fix_seq++);
	assert_int_equal(cn_engine_create(&ecfg, &f->eng), 0);
	f->ctx = (struct cn_session_ctx){
		.engine = f->eng,
		.node_id = "rdma-node",
		.max_keys = CN_PROTO_MAX_KEYS,
		.max_frame = CN_PROTO_MAX_FRAME,
		.stats = f->sstats,
	};
	return f;
}

static void l1_info(struct fix *f, struct cn_l1_info *info)
{
	cn_l1_get_info(cn_engine_l1(f->eng), info);
}

static void fix_free(struct fix *f)
{
	struct cn_l1_info info;

	/* Nothing may stay lent once every session is closed. */
	l1_info(f, &info);
	assert_int_equal(info.pinned, 0);
	assert_int_equal(info.reserved, 0);
	assert_int_equal(f->sstats[0].sessions_open, 0);
	for (unsigned i = 0; i < f->nreg; i++)
		free(f->reg[i].base);
	if (f->srv)
		cn_loopback_ops.server_destroy(&f->srv);
	cn_engine_destroy(&f->eng);
	free(f);
}

/* A remote buffer of @len bytes plus GUARD_LEN guard bytes, all GUARD. */
static struct region *remote(struct fix *f, size_t len)
{
	struct region *r = &f->reg[f->nreg];

	assert_true(f->nreg < MAX_REGIONS);
	r->base = malloc(len + GUARD_LEN);
	assert_non_null(r->base);
	memset(r->base, GUARD, len + GUARD_LEN);
	r->len = len + GUARD_LEN;
	r->rkey = 0x5a000 + f->nreg++;
	return r;
}

static bool all_guard(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != GUARD)
			return false;
	return true;
}

/* A session with @wake as its completion path (NULL: none, no async work). */
static struct conn *conn_open_wake(struct fix *f, unsigned flags, const struct cn_wake *wake)
{
	struct conn *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->f = f;
	c->s = cn_session_ops.open(&f->ctx, 0, "test", flags, wake);
	assert_non_null(c->s);
	return c;
}

static struct conn *conn_open(struct fix *f, unsigned flags)
{
	return conn_open_wake(f, flags, NULL);
}

static void conn_close(struct conn **pc, int err)
{
	struct conn *c = *pc;

	cn_session_ops.close(c->s, err);
	free(c->out);
	free(c);
	*pc = NULL;
}

/*
 * Deliver @len bytes as a transport would: while the session reads, into
 * whatever rx_buf() offers. Returns the bytes taken (less than @len when the
 * session paused); each rx_done() must succeed.
 */
static size_t feed(struct conn *c, const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t done = 0;

	while (done < len && !cn_session_ops.rx_paused(c->s)) {
		void *dst;
		size_t room;

		cn_session_ops.rx_buf(c->s, &dst, &room);
		assert_true(room > 0);
		if (room > len - done)
			room = len - done;
		memcpy(dst, p + done, room);
		done += room;
		assert_int_equal(cn_session_ops.rx_done(c->s, room), 0);
	}
	return done;
}

static void feed_all(struct conn *c, const struct bytes *b)
{
	assert_int_equal(feed(c, b->p, b->len), b->len);
}

/* Take every byte of pending output, as a socket that never blocks would. */
static size_t drain(struct conn *c)
{
	struct iovec iov[16];
	size_t total = 0;
	int n;

	while ((n = cn_session_ops.tx_iov(c->s, iov, 16)) > 0) {
		size_t got = 0;

		for (int i = 0; i < n; i++) {
			if (c->out_len + iov[i].iov_len > c->out_cap) {
				c->out_cap = (c->out_len + iov[i].iov_len) * 2;
				c->out = realloc(c->out, c->out_cap);
				assert_non_null(c->out);
			}
			memcpy(c->out + c->out_len, iov[i].iov_base, iov[i].iov_len);
			c->out_len += iov[i].iov_len;
			got += iov[i].iov_len;
		}
		assert_int_equal(cn_session_ops.tx_done(c->s, got), c->fatal ? -EPROTO : 0);
		total += got;
	}
	return total;
}

/* The next complete reply frame; false when none is there. */
static bool next_reply(struct conn *c, struct cn_proto_hdr *h, const uint8_t **payload)
{
	drain(c);
	if (c->out_len - c->out_off < CN_PROTO_HDR_LEN)
		return false;
	assert_int_equal(cn_proto_hdr_decode(c->out + c->out_off, h), CN_OK);
	assert_true(h->flags & CN_F_RESPONSE);
	assert_true(c->out_len - c->out_off >= CN_PROTO_HDR_LEN + (size_t)h->payload_len);
	*payload = c->out + c->out_off + CN_PROTO_HDR_LEN;
	c->out_off += CN_PROTO_HDR_LEN + h->payload_len;
	return true;
}

/* The next reply must exist and be @op / @id / header status @status. */
static const uint8_t *expect_reply(struct conn *c, uint8_t op, uint64_t id, int32_t status,
				   struct cn_proto_hdr *h)
{
	const uint8_t *p = NULL;

	assert_true(next_reply(c, h, &p));
	assert_int_equal(h->opcode, op);
	assert_int_equal(h->req_id, id);
	assert_int_equal(h->status, status);
	return p;
}

static bool no_reply(struct conn *c)
{
	drain(c);
	return c->out_off == c->out_len;
}

/* ---- building requests ---- */

static void put(struct bytes *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 256;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void put_hdr(struct bytes *b, uint8_t op, uint16_t flags, uint64_t id, uint32_t plen)
{
	struct cn_proto_hdr h;
	uint8_t hb[CN_PROTO_HDR_LEN];

	cn_proto_hdr_init(&h, op, flags, id, plen, 0);
	cn_proto_hdr_encode(&h, hb);
	put(b, hb, sizeof(hb));
}

static void put_u32(struct bytes *b, uint32_t v)
{
	uint8_t x[4];

	cn_put_le32(x, v);
	put(b, x, 4);
}

/* One RDMA descriptor: key, len (STORE) or cap (RETRIEVE), rkey, addr. */
struct desc {
	struct cn_key key;
	uint32_t len;
	uint32_t rkey;
	const void *addr;
};

/* A STORE/RETRIEVE with CN_F_RDMA carrying @n descriptors (and @n in its count). */
static void put_rdma_req(struct bytes *b, uint8_t op, uint64_t id, const struct desc *d,
			 uint32_t n)
{
	put_hdr(b, op, CN_F_RDMA, id, CN_PROTO_BATCH_HDR + n * CN_PROTO_RDMA_DESC);
	put_u32(b, n);
	put_u32(b, 0);
	for (uint32_t i = 0; i < n; i++) {
		uint8_t x[8];

		put(b, &d[i].key, CN_KEY_LEN);
		put_u32(b, d[i].len);
		put_u32(b, d[i].rkey);
		cn_put_le64(x, (uint64_t)(uintptr_t)d[i].addr);
		put(b, x, 8);
	}
}

static void put_ping(struct bytes *b, uint64_t id, const char *s)
{
	put_hdr(b, CN_OP_PING, 0, id, (uint32_t)strlen(s));
	put(b, s, strlen(s));
}

static void put_keys(struct bytes *b, uint8_t op, uint16_t flags, uint64_t id,
		     const struct cn_key *k, uint32_t n)
{
	put_hdr(b, op, flags, id, CN_PROTO_BATCH_HDR + n * CN_KEY_LEN);
	put_u32(b, n);
	put_u32(b, 0);
	put(b, k, n * CN_KEY_LEN);
}

static void bytes_reset(struct bytes *b)
{
	b->len = 0;
}

static struct cn_key key_of(unsigned i)
{
	struct cn_key k;
	char s[32];

	snprintf(s, sizeof(s), "rdma-key-%u", i);
	cn_sha256(s, strlen(s), k.b);
	return k;
}

static void pattern(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i >> 5) * 151 + seed * 13 + i);
}

/* ---- the test's transport: run RDMA operations ---- */

/*
 * Check one operation as the HCA would (else the test fails: the session
 * named memory it must not touch) and move its bytes.
 */
static void run_op(struct fix *f, const struct cn_rdma_op *op, bool want_read)
{
	void *base;
	size_t blen;
	uint8_t *lo, *rp;
	const struct region *r = NULL;

	cn_l1_region(cn_engine_l1(f->eng), &base, &blen);
	lo = op->local;
	assert_true(op->len > 0);
	assert_true(lo >= (uint8_t *)base && lo + op->len <= (uint8_t *)base + blen);
	rp = (uint8_t *)(uintptr_t)op->remote_addr;
	for (unsigned i = 0; i < f->nreg; i++)
		if (f->reg[i].rkey == op->rkey)
			r = &f->reg[i];
	assert_non_null(r);
	assert_true(rp >= r->base && rp + op->len <= r->base + r->len);
	assert_int_equal(op->read, want_read);
	if (op->read)
		memcpy(lo, rp, op->len);
	else
		memcpy(rp, lo, op->len);
}

/*
 * Take pending operations (up to @batch per rdma_next() call), run them, and
 * report them done as they were taken, until none is pending or @limit ran
 * (the last completion of a request may let the session start the next
 * one, whose operations are not this call's). Returns the number run.
 */
static unsigned run_rdma(struct conn *c, bool want_read, int batch, unsigned limit)
{
	struct cn_rdma_op ops[8];
	unsigned total = 0;

	assert_true(batch > 0 && batch <= 8);
	while (total < limit) {
		int want = limit - total < (unsigned)batch ? (int)(limit - total) : batch;
		int n = cn_session_ops.rdma_next(c->s, ops, want);

		if (n == 0)
			break;
		assert_true(n > 0 && n <= want);
		for (int i = 0; i < n; i++)
			run_op(c->f, &ops[i], want_read);
		total += (unsigned)n;
		assert_int_equal(cn_session_ops.rdma_done(c->s, (unsigned)n), 0);
	}
	return total;
}

/* A plain (inline) LOOKUP on @c: the prefix of present keys. */
static uint32_t lookup_prefix(struct conn *c, const struct cn_key *k, uint32_t n)
{
	struct bytes b = {0};
	struct cn_proto_hdr h;
	const uint8_t *p;

	put_keys(&b, CN_OP_LOOKUP, 0, 900, k, n);
	feed_all(c, &b);
	free(b.p);
	p = expect_reply(c, CN_OP_LOOKUP, 900, CN_OK, &h);
	return cn_get_le32(p + 4);
}

/* A plain STORE of one chunk on @c; returns its per-key status. */
static int32_t store_inline(struct conn *c, const struct cn_key *k, const void *data,
			    uint32_t len)
{
	struct bytes b = {0};
	struct cn_proto_hdr h;
	const uint8_t *p;
	uint8_t zero[4] = {0};

	put_hdr(&b, CN_OP_STORE, 0, 901, CN_PROTO_BATCH_HDR + CN_PROTO_STORE_DESC + len);
	put_u32(&b, 1);
	put_u32(&b, 0);
	put(&b, k, CN_KEY_LEN);
	put_u32(&b, len);
	put(&b, zero, 4);
	put(&b, data, len);
	feed_all(c, &b);
	free(b.p);
	p = expect_reply(c, CN_OP_STORE, 901, CN_OK, &h);
	return (int32_t)cn_get_le32(p + 8);
}

static void expect_pong(struct conn *c, uint64_t id, const char *s)
{
	struct cn_proto_hdr h;
	const uint8_t *p = expect_reply(c, CN_OP_PING, id, CN_OK, &h);

	assert_int_equal(h.payload_len, strlen(s));
	assert_memory_equal(p, s, strlen(s));
}

/* ---- tests ---- */

/*
 * STORE-RDMA of chunks of random sizes, then RETRIEVE-RDMA into other
 * buffers: the bytes come back equal, statuses and lengths are right, and
 * the counters moved by exactly the workload.
 */
static void rdma_store_retrieve_round_trip(void **state)
{
	enum { N = 7 };
	struct fix *f = fix_new(64u << 20, 1u << 20);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct desc sd[N], rd[N];
	struct region *src[N], *dst[N];
	uint32_t len[N];
	uint64_t sum = 0;
	struct bytes b = {0};
	struct cn_proto_hdr h;
	const uint8_t *p;
	struct cn_rdma_op op;

	srand(12345);
	for (unsigned i = 0; i < N; i++) {
		/* 1 byte, exactly max_chunk, and random sizes in between */
		len[i] = i == 0 ? 1 : i == 1 ? 1u << 20 : 1 + (uint32_t)rand() % (300u << 10);
		sum += len[i];
		src[i] = remote(f, len[i]);
		pattern(src[i]->base, len[i], i);
		sd[i] = (struct desc){key_of(i), len[i], src[i]->rkey, src[i]->base};
	}
	put_rdma_req(&b, CN_OP_STORE, 10, sd, N);
	feed_all(c, &b);
	/* nothing is answered before the chunks are read; the session keeps reading */
	assert_true(no_reply(c));
	assert_false(cn_session_ops.rx_paused(c->s));
	assert_false(cn_session_ops.idle(c->s));
	assert_int_equal(run_rdma(c, true, 3, 100), N);
	p = expect_reply(c, CN_OP_STORE, 10, CN_OK, &h);
	assert_int_equal(h.payload_len, 8 + 4 * N);
	assert_int_equal(cn_get_le32(p), N);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal((int32_t)cn_get_le32(p + 8 + 4 * i), CN_OK);
	assert_int_equal(f->sstats[0].store_ok, N);
	assert_int_equal(f->sstats[0].store_bytes, sum);
	assert_int_equal(f->sstats[0].rdma_store_reqs, 1);
	assert_true(cn_session_ops.idle(c->s));
	/* nothing outstanding: no operation to hand out, nothing to complete */
	assert_int_equal(cn_session_ops.rdma_next(c->s, &op, 1), 0);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), -EINVAL);

	/* back, in reverse order, into fresh buffers with some slack in the cap */
	for (unsigned i = 0; i < N; i++) {
		unsigned k = N - 1 - i;
		uint32_t cap = len[k] + 100 * (i & 1); /* exact, or with room to spare */

		dst[i] = remote(f, len[k] + 100);
		rd[i] = (struct desc){key_of(k), cap, dst[i]->rkey, dst[i]->base};
	}
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_RETRIEVE, 11, rd, N);
	feed_all(c, &b);
	assert_true(no_reply(c));
	assert_int_equal(run_rdma(c, false, 8, 100), N);
	p = expect_reply(c, CN_OP_RETRIEVE, 11, CN_OK, &h);
	assert_int_equal(h.payload_len, 8 + 8 * N); /* statuses only, no chunk bytes */
	assert_int_equal(cn_get_le32(p), N);
	for (unsigned i = 0; i < N; i++) {
		unsigned k = N - 1 - i;

		assert_int_equal((int32_t)cn_get_le32(p + 8 + 8 * i), CN_OK);
		assert_int_equal(cn_get_le32(p + 12 + 8 * i), len[k]);
		assert_memory_equal(dst[i]->base, src[k]->base, len[k]);
		assert_true(all_guard(dst[i]->base + len[k], 100 + GUARD_LEN));
	}
	assert_int_equal(f->sstats[0].retrieve_hits, N);
	assert_int_equal(f->sstats[0].retrieve_bytes, sum);
	assert_int_equal(f->sstats[0].rdma_retrieve_reqs, 1);
	assert_int_equal(f->sstats[0].req_errors, 0);
	conn_close(&c, 0);
	free(b.p);
	fix_free(f);
}

/*
 * A STORE-RDMA batch is invisible to other connections until rdma_done()
 * has covered its last READ, and then visible all at once.
 */
static void rdma_store_invisible_until_done(void **state)
{
	enum { N = 3 };
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA), *other = conn_open(f, 0);
	struct desc d[N];
	struct cn_key keys[N];
	struct cn_rdma_op ops[N];
	struct bytes b = {0};
	struct cn_proto_hdr h;
	struct cn_l1_info info;
	const uint8_t *p;

	for (unsigned i = 0; i < N; i++) {
		struct region *r = remote(f, 5000 + i);

		keys[i] = key_of(20 + i);
		pattern(r->base, 5000 + i, 20 + i);
		d[i] = (struct desc){keys[i], 5000 + i, r->rkey, r->base};
	}
	put_rdma_req(&b, CN_OP_STORE, 1, d, N);
	feed_all(c, &b);
	/* each operation is handed out once */
	assert_int_equal(cn_session_ops.rdma_next(c->s, ops, N), N);
	assert_int_equal(cn_session_ops.rdma_next(c->s, ops, N), 0);
	for (unsigned i = 0; i < N; i++)
		run_op(f, &ops[i], true);
	/* two of three done: still reserved, invisible, unanswered */
	assert_int_equal(cn_session_ops.rdma_done(c->s, 2), 0);
	assert_true(no_reply(c));
	assert_int_equal(lookup_prefix(other, keys, 1), 0);
	{
		struct bytes g = {0};

		put_keys(&g, CN_OP_RETRIEVE, 0, 2, &keys[0], 1);
		feed_all(other, &g);
		p = expect_reply(other, CN_OP_RETRIEVE, 2, CN_OK, &h);
		assert_int_equal((int32_t)cn_get_le32(p + 8), CN_E_NOENT);
		free(g.p);
	}
	l1_info(f, &info);
	assert_int_equal(info.reserved, N);
	assert_int_equal(info.chunks, 0);
	/* more than is outstanding is refused and changes nothing */
	assert_int_equal(cn_session_ops.rdma_done(c->s, 2), -EINVAL);
	assert_true(no_reply(c));
	/* the last one: committed together, answered */
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	p = expect_reply(c, CN_OP_STORE, 1, CN_OK, &h);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal((int32_t)cn_get_le32(p + 8 + 4 * i), CN_OK);
	assert_int_equal(lookup_prefix(other, keys, N), N);
	l1_info(f, &info);
	assert_int_equal(info.reserved, 0);
	assert_int_equal(info.chunks, N);
	conn_close(&c, 0);
	conn_close(&other, 0);
	free(b.p);
	fix_free(f);
}

/*
 * The connection ends with READs outstanding (as after an RDMA error: the
 * transport destroyed the QP, then close()): no chunk of the batch is
 * stored, store_discarded moves by exactly the chunks reserved, and a key
 * that was already stored keeps its copy.
 */
static void rdma_close_mid_store_discards(void **state)
{
	enum { N = 4 };
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA), *other = conn_open(f, 0);
	struct desc d[N];
	struct cn_key keys[N];
	struct cn_rdma_op ops[N];
	struct bytes b = {0};
	struct cn_l1_info info;
	uint8_t old[700];
	uint64_t disc0;

	for (unsigned i = 0; i < N; i++) {
		struct region *r = remote(f, 3000);

		keys[i] = key_of(40 + i);
		memset(r->base, 'n', 3000);
		d[i] = (struct desc){keys[i], 3000, r->rkey, r->base};
	}
	memset(old, 'o', sizeof(old));
	assert_int_equal(store_inline(other, &keys[0], old, sizeof(old)), CN_OK);
	disc0 = f->sstats[0].store_discarded;
	put_rdma_req(&b, CN_OP_STORE, 1, d, N);
	feed_all(c, &b);
	/* key 0 exists: three slabs reserved, three READs */
	assert_int_equal(cn_session_ops.rdma_next(c->s, ops, N), N - 1);
	run_op(f, &ops[0], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	l1_info(f, &info);
	assert_int_equal(info.reserved, N - 1);
	conn_close(&c, -EREMOTEIO);
	assert_int_equal(f->sstats[0].store_discarded - disc0, N - 1);
	assert_int_equal(f->sstats[0].rdma_aborted, 1);
	assert_int_equal(f->sstats[0].store_ok, 1); /* only the inline store */
	l1_info(f, &info);
	assert_int_equal(info.reserved, 0);
	assert_int_equal(info.chunks, 1);
	assert_int_equal(lookup_prefix(other, keys, 1), 1);
	assert_int_equal(lookup_prefix(other, keys + 1, N - 1), 0);
	for (unsigned i = 1; i < N; i++)
		assert_int_equal(lookup_prefix(other, &keys[i], 1), 0);
	/* the old copy of key 0 is untouched */
	{
		struct bytes g = {0};
		struct cn_proto_hdr h;
		const uint8_t *p;

		put_keys(&g, CN_OP_RETRIEVE, 0, 3, &keys[0], 1);
		feed_all(other, &g);
		p = expect_reply(other, CN_OP_RETRIEVE, 3, CN_OK, &h);
		assert_int_equal(cn_get_le32(p + 12), sizeof(old));
		assert_memory_equal(p + 16, old, sizeof(old));
		free(g.p);
	}
	conn_close(&other, 0);
	free(b.p);
	fix_free(f);
}

/* The connection ends with WRITEs outstanding: every pinned chunk is unpinned. */
static void rdma_close_mid_retrieve_unpins(void **state)
{
	enum { N = 3 };
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct desc d[N];
	struct cn_rdma_op ops[N];
	struct bytes b = {0};
	struct cn_l1_info info;
	uint8_t data[2000];

	memset(data, 'r', sizeof(data));
	for (unsigned i = 0; i < N; i++) {
		struct region *r = remote(f, sizeof(data));

		d[i] = (struct desc){key_of(60 + i), sizeof(data), r->rkey, r->base};
		assert_int_equal(store_inline(c, &d[i].key, data, sizeof(data)), CN_OK);
	}
	put_rdma_req(&b, CN_OP_RETRIEVE, 1, d, N);
	feed_all(c, &b);
	assert_int_equal(cn_session_ops.rdma_next(c->s, ops, 1), 1);
	l1_info(f, &info);
	assert_int_equal(info.pinned, N);
	assert_false(cn_session_ops.idle(c->s));
	conn_close(&c, -ECONNRESET);
	l1_info(f, &info);
	assert_int_equal(info.pinned, 0);
	assert_int_equal(info.chunks, N); /* a RETRIEVE cut short loses nothing */
	assert_int_equal(f->sstats[0].rdma_aborted, 1);
	assert_int_equal(f->sstats[0].store_discarded, 0);
	free(b.p);
	fix_free(f);
}

/*
 * RETRIEVE-RDMA: a chunk larger than its cap is CN_E_TOOBIG with its length
 * and nothing is written into the buffer; a missing key is CN_E_NOENT; an
 * exact fit and a repeated key are served. A batch with nothing to write is
 * answered at once.
 */
static void rdma_retrieve_cap_and_missing(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct cn_key ka = key_of(80), kb = key_of(81), kc = key_of(82);
	uint8_t a[1000], bb[5000];
	struct region *ra = remote(f, 1000), *rb = remote(f, 4999), *rc = remote(f, 100),
		      *ra2 = remote(f, 2000);
	struct desc d[4] = {
		{ka, 1000, ra->rkey, ra->base},	  /* exact fit */
		{kb, 4999, rb->rkey, rb->base},	  /* one byte short */
		{kc, 100, rc->rkey, rc->base},	  /* not stored */
		{ka, 2000, ra2->rkey, ra2->base}, /* the same key again, roomier */
	};
	struct bytes b = {0};
	struct cn_proto_hdr h;
	struct cn_rdma_op op;
	const uint8_t *p;
	static const int32_t want_st[4] = {CN_OK, CN_E_TOOBIG, CN_E_NOENT, CN_OK};
	static const uint32_t want_len[4] = {1000, 5000, 0, 1000};

	pattern(a, sizeof(a), 1);
	pattern(bb, sizeof(bb), 2);
	assert_int_equal(store_inline(c, &ka, a, sizeof(a)), CN_OK);
	assert_int_equal(store_inline(c, &kb, bb, sizeof(bb)), CN_OK);
	put_rdma_req(&b, CN_OP_RETRIEVE, 7, d, 4);
	feed_all(c, &b);
	assert_true(no_reply(c));
	assert_int_equal(run_rdma(c, false, 1, 100), 2); /* only the two that fit */
	p = expect_reply(c, CN_OP_RETRIEVE, 7, CN_OK, &h);
	assert_int_equal(h.payload_len, 8 + 8 * 4);
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal((int32_t)cn_get_le32(p + 8 + 8 * i), want_st[i]);
		assert_int_equal(cn_get_le32(p + 12 + 8 * i), want_len[i]);
	}
	assert_memory_equal(ra->base, a, 1000);
	assert_true(all_guard(ra->base + 1000, GUARD_LEN));
	assert_memory_equal(ra2->base, a, 1000);
	assert_true(all_guard(ra2->base + 1000, 1000 + GUARD_LEN));
	assert_true(all_guard(rb->base, 4999 + GUARD_LEN));
	assert_true(all_guard(rc->base, 100 + GUARD_LEN));
	assert_int_equal(f->sstats[0].retrieve_keys, 4);
	assert_int_equal(f->sstats[0].retrieve_hits, 2);
	assert_int_equal(f->sstats[0].retrieve_bytes, 2000);

	/* nothing to write: answered at once, no operation, session reading */
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_RETRIEVE, 8, &d[1], 2);
	feed_all(c, &b);
	assert_int_equal(cn_session_ops.rdma_next(c->s, &op, 1), 0);
	p = expect_reply(c, CN_OP_RETRIEVE, 8, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(p + 8), CN_E_TOOBIG);
	assert_int_equal((int32_t)cn_get_le32(p + 16), CN_E_NOENT);
	assert_false(cn_session_ops.rx_paused(c->s));
	assert_true(cn_session_ops.idle(c->s));
	assert_true(all_guard(rb->base, 4999 + GUARD_LEN));
	conn_close(&c, 0);
	free(b.p);
	fix_free(f);
}

/*
 * Requests that arrived in the same read as RDMA requests: a second
 * STORE-RDMA right behind the first gets its operations before the first
 * completes, but a PING (any other opcode) is a barrier: it is answered, and
 * what is behind it parsed, only once no RDMA request is in flight. Replies
 * come out in request order.
 */
static void rdma_pipelined_requests_wait_in_order(void **state)
{
	enum { N = 3 };
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct desc sd[N], rd[N];
	struct cn_key keys[N];
	struct region *src[N], *dst[N];
	struct cn_rdma_op ops[8];
	struct bytes b = {0};
	struct cn_proto_hdr h;
	const uint8_t *p;

	for (unsigned i = 0; i < N; i++) {
		keys[i] = key_of(100 + i);
		src[i] = remote(f, 10000);
		dst[i] = remote(f, 10000);
		pattern(src[i]->base, 10000, 100 + i);
		sd[i] = (struct desc){keys[i], 10000, src[i]->rkey, src[i]->base};
		rd[i] = (struct desc){keys[i], 10000, dst[i]->rkey, dst[i]->base};
	}
	put_ping(&b, 1, "one");
	put_rdma_req(&b, CN_OP_STORE, 2, sd, 2);
	put_rdma_req(&b, CN_OP_STORE, 3, &sd[2], 1);
	put_ping(&b, 4, "four");
	put_rdma_req(&b, CN_OP_RETRIEVE, 5, rd, N);
	put_keys(&b, CN_OP_LOOKUP, 0, 6, keys, N);
	feed_all(c, &b); /* one read, as a socket would deliver it */

	expect_pong(c, 1, "one");
	assert_true(no_reply(c));
	assert_true(cn_session_ops.rx_paused(c->s)); /* the PING waits */
	/* the READs of both STOREs, none completed yet; the RETRIEVE is not parsed */
	assert_int_equal(cn_session_ops.rdma_next(c->s, ops, 8), N);
	assert_int_equal(cn_session_ops.rdma_next(c->s, ops + N, 8), 0);
	for (unsigned i = 0; i < N; i++) {
		assert_true(ops[i].read);
		assert_ptr_equal((void *)(uintptr_t)ops[i].remote_addr, src[i]->base);
		run_op(f, &ops[i], true);
	}
	assert_true(no_reply(c));
	assert_int_equal(cn_session_ops.rdma_done(c->s, N), 0);
	p = expect_reply(c, CN_OP_STORE, 2, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(p + 8), CN_OK);
	assert_int_equal((int32_t)cn_get_le32(p + 12), CN_OK);
	p = expect_reply(c, CN_OP_STORE, 3, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(p + 8), CN_OK);
	expect_pong(c, 4, "four");
	/* now the RETRIEVE waits for its WRITEs, and the LOOKUP behind it */
	assert_true(no_reply(c));
	assert_true(cn_session_ops.rx_paused(c->s));
	assert_int_equal(run_rdma(c, false, 2, 100), N);
	p = expect_reply(c, CN_OP_RETRIEVE, 5, CN_OK, &h);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal((int32_t)cn_get_le32(p + 8 + 8 * i), CN_OK);
		assert_memory_equal(dst[i]->base, src[i]->base, 10000);
	}
	p = expect_reply(c, CN_OP_LOOKUP, 6, CN_OK, &h);
	assert_int_equal(cn_get_le32(p + 4), N);
	assert_true(no_reply(c));
	assert_false(cn_session_ops.rx_paused(c->s));
	assert_true(cn_session_ops.idle(c->s));
	conn_close(&c, 0);
	free(b.p);
	fix_free(f);
}

/* The next reply is a request-level @status (connection kept) whose message contains @what. */
static void expect_refused(struct conn *c, uint8_t op, uint64_t id, int32_t status,
			   const char *what)
{
	struct cn_proto_hdr h;
	const uint8_t *p = expect_reply(c, op, id, status, &h);

	assert_false(h.flags & CN_F_CLOSE);
	assert_non_null(memmem(p, h.payload_len, what, strlen(what)));
}

/*
 * CN_F_RDMA on a session whose transport runs no RDMA is refused per
 * request (payload skipped, nothing reserved) and the session keeps serving.
 */
static void rdma_flag_refused_without_rdma(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, 0);
	struct region *r = remote(f, 4000);
	struct desc d = {key_of(120), 4000, r->rkey, r->base};
	struct bytes b = {0};
	struct cn_rdma_op op;
	struct cn_l1_info info;
	uint8_t data[4000];

	put_rdma_req(&b, CN_OP_STORE, 1, &d, 1);
	put_ping(&b, 2, "still");
	put_rdma_req(&b, CN_OP_RETRIEVE, 3, &d, 1);
	put_ping(&b, 4, "here");
	feed_all(c, &b);
	expect_refused(c, CN_OP_STORE, 1, CN_E_INVAL, "without RDMA");
	expect_pong(c, 2, "still");
	expect_refused(c, CN_OP_RETRIEVE, 3, CN_E_INVAL, "without RDMA");
	expect_pong(c, 4, "here");
	assert_int_equal(cn_session_ops.rdma_next(c->s, &op, 1), 0);
	assert_int_equal(f->sstats[0].req_errors, 2);
	assert_int_equal(f->sstats[0].store_reqs, 0);
	l1_info(f, &info);
	assert_int_equal(info.reserved, 0);
	assert_int_equal(lookup_prefix(c, &d.key, 1), 0);
	/* a stored key is not written to the buffer either */
	memset(data, 'x', sizeof(data));
	assert_int_equal(store_inline(c, &d.key, data, sizeof(data)), CN_OK);
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_RETRIEVE, 5, &d, 1);
	feed_all(c, &b);
	expect_refused(c, CN_OP_RETRIEVE, 5, CN_E_INVAL, "without RDMA");
	assert_true(all_guard(r->base, 4000 + GUARD_LEN));
	l1_info(f, &info);
	assert_int_equal(info.pinned, 0);
	conn_close(&c, 0);
	free(b.p);
	fix_free(f);
}

/* The same over the real loopback transport (which opens sessions without RDMA). */
static void rdma_flag_refused_over_loopback(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_server_cfg scfg = {.listen = "loop", .nworkers = 1, .sess = &cn_session_ops,
				     .sess_arg = &f->ctx, .stats = f->tstats};
	struct cn_connect_cfg cc;
	struct cn_tconn *tc;
	struct region *r = remote(f, 100);
	struct desc d = {key_of(130), 100, r->rkey, r->base};
	struct bytes b = {0};
	struct iovec iov;
	uint8_t hb[CN_PROTO_HDR_LEN], reply[CN_PROTO_MAX_ERRMSG];
	struct cn_proto_hdr h;

	assert_int_equal(cn_loopback_ops.server_create(&scfg, &f->srv), 0);
	cc = (struct cn_connect_cfg){.server = f->srv};
	assert_int_equal(cn_loopback_ops.connect(&cc, &tc), 0);
	put_rdma_req(&b, CN_OP_STORE, 1, &d, 1);
	put_ping(&b, 2, "ok");
	iov = (struct iovec){b.p, b.len};
	assert_int_equal(cn_loopback_ops.sendv(tc, &iov, 1, 0), 0);
	assert_int_equal(cn_loopback_ops.recv(tc, hb, sizeof(hb)), 0);
	assert_int_equal(cn_proto_hdr_decode(hb, &h), CN_OK);
	assert_int_equal(h.opcode, CN_OP_STORE);
	assert_int_equal(h.req_id, 1);
	assert_int_equal(h.status, CN_E_INVAL);
	assert_false(h.flags & CN_F_CLOSE);
	assert_true(h.payload_len <= sizeof(reply));
	assert_int_equal(cn_loopback_ops.recv(tc, reply, h.payload_len), 0);
	assert_non_null(memmem(reply, h.payload_len, "without RDMA", 12));
	assert_int_equal(cn_loopback_ops.recv(tc, hb, sizeof(hb)), 0);
	assert_int_equal(cn_proto_hdr_decode(hb, &h), CN_OK);
	assert_int_equal(h.opcode, CN_OP_PING);
	assert_int_equal(h.req_id, 2);
	assert_int_equal(h.payload_len, 2);
	assert_int_equal(cn_loopback_ops.recv(tc, reply, 2), 0);
	assert_memory_equal(reply, "ok", 2);
	cn_loopback_ops.close(&tc);
	free(b.p);
	fix_free(f);
}

/*
 * On an RDMA session, CN_F_RDMA on any other opcode is a request-level
 * CN_E_INVAL (payload skipped); other unknown flag bits stay ignored.
 */
static void rdma_flag_on_other_opcodes(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct cn_key k = key_of(140);
	struct bytes b = {0};
	struct cn_proto_hdr h;
	const uint8_t *p;

	put_keys(&b, CN_OP_LOOKUP, CN_F_RDMA, 1, &k, 1);
	put_keys(&b, CN_OP_DELETE, CN_F_RDMA, 2, &k, 1);
	put_hdr(&b, CN_OP_PING, CN_F_RDMA, 3, 4);
	put(&b, "ping", 4);
	put_hdr(&b, CN_OP_PING, 0x8000, 4, 2); /* an unassigned bit: ignored */
	put(&b, "hi", 2);
	feed_all(c, &b);
	expect_refused(c, CN_OP_LOOKUP, 1, CN_E_INVAL, "CN_F_RDMA");
	expect_refused(c, CN_OP_DELETE, 2, CN_E_INVAL, "CN_F_RDMA");
	expect_refused(c, CN_OP_PING, 3, CN_E_INVAL, "CN_F_RDMA");
	expect_pong(c, 4, "hi");
	p = NULL;
	assert_false(next_reply(c, &h, &p));
	assert_int_equal(f->sstats[0].req_errors, 3);
	assert_int_equal(f->sstats[0].delete_reqs, 0);
	conn_close(&c, 0);
	free(b.p);
	fix_free(f);
}

/*
 * Malformed RDMA batches are request-level errors: nothing is reserved, no
 * RDMA operation is handed out, the session serves the next request.
 */
static void rdma_malformed_batches(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct region *r = remote(f, 1u << 20);
	struct desc d[3] = {
		{key_of(150), 100, r->rkey, r->base},
		{key_of(151), 100, r->rkey, r->base + 100},
		{key_of(150), 100, r->rkey, r->base + 200},
	};
	struct bytes b = {0};
	struct cn_rdma_op op;
	struct cn_l1_info info;
	uint64_t id = 1;
	unsigned errors = 0;

	struct {
		uint8_t op;
		uint32_t count;	    /* the batch header's n */
		uint32_t ndesc;	    /* descriptors actually sent */
		uint32_t extra;	    /* junk bytes after them */
		uint32_t len0;	    /* length / cap of descriptor 0 */
		int32_t status;
		const char *what;
	} cases[] = {
		{CN_OP_STORE, 0, 0, 0, 100, CN_E_INVAL, "chunk count is 0"},
		/* n = 1 in a frame of 2 descriptors: longer than its descriptors */
		{CN_OP_STORE, 1, 2, 0, 100, CN_E_INVAL, "RDMA descriptors"},
		/* n = 3 in a frame of 2 descriptors: shorter */
		{CN_OP_STORE, 3, 2, 0, 100, CN_E_INVAL, "larger than the frame"},
		/* a 40-byte inline payload after the descriptor */
		{CN_OP_STORE, 1, 1, 40, 100, CN_E_INVAL, "RDMA descriptors"},
		{CN_OP_STORE, 1, 1, 0, 0, CN_E_INVAL, "zero-length"},
		{CN_OP_STORE, 1, 1, 0, (64u << 10) + 1, CN_E_TOOBIG, "max chunk"},
		{CN_OP_STORE, 3, 3, 0, 100, CN_E_DUP, "duplicate"},
		{CN_OP_STORE, CN_PROTO_MAX_KEYS + 1, 1, 0, 100, CN_E_TOOBIG, "max keys"},
		{CN_OP_RETRIEVE, 0, 0, 0, 100, CN_E_INVAL, "descriptor count"},
		{CN_OP_RETRIEVE, 2, 1, 0, 100, CN_E_INVAL, "descriptor count"},
		{CN_OP_RETRIEVE, 1, 1, 8, 100, CN_E_INVAL, "descriptor count"},
	};

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct desc dd[3];
		char pong[16];

		memcpy(dd, d, sizeof(dd));
		dd[0].len = cases[i].len0;
		bytes_reset(&b);
		put_rdma_req(&b, cases[i].op, id, dd, cases[i].ndesc);
		cn_put_le32(b.p + CN_PROTO_HDR_LEN, cases[i].count);
		if (cases[i].extra) { /* bytes after the descriptors, counted in payload_len */
			struct cn_proto_hdr h;
			uint8_t junk[64] = {0};

			put(&b, junk, cases[i].extra);
			assert_int_equal(cn_proto_hdr_decode(b.p, &h), CN_OK);
			h.payload_len += cases[i].extra;
			cn_proto_hdr_encode(&h, b.p);
		}
		snprintf(pong, sizeof(pong), "p%u", i);
		put_ping(&b, id + 1, pong);
		feed_all(c, &b);
		assert_int_equal(cn_session_ops.rdma_next(c->s, &op, 1), 0);
		expect_refused(c, cases[i].op, id, cases[i].status, cases[i].what);
		expect_pong(c, id + 1, pong);
		errors++;
		id += 2;
	}
	assert_int_equal(f->sstats[0].req_errors, errors);
	assert_int_equal(f->sstats[0].store_reqs, 0);
	assert_int_equal(f->sstats[0].retrieve_reqs, 0);
	l1_info(f, &info);
	assert_int_equal(info.reserved, 0);
	assert_int_equal(info.chunks, 0);
	conn_close(&c, 0);
	free(b.p);
	fix_free(f);
}

/* ---- pipelining of RDMA requests ---- */

/*
 * @n STORE descriptors for keys key_of(k0 + i), chunk i @len bytes of
 * pattern k0 + i, all in one remote buffer (chunk i at offset i * len).
 */
static void store_descs(struct fix *f, struct desc *d, unsigned k0, unsigned n, uint32_t len)
{
	struct region *r = remote(f, (size_t)n * len);

	for (unsigned i = 0; i < n; i++) {
		uint8_t *at = r->base + (size_t)i * len;

		pattern(at, len, k0 + i);
		d[i] = (struct desc){key_of(k0 + i), len, r->rkey, at};
	}
}

/* Take every operation pending (at most @max); none is completed. */
static unsigned take_ops(struct conn *c, struct cn_rdma_op *ops, unsigned max)
{
	unsigned n = 0;
	int k;

	while (n < max && (k = cn_session_ops.rdma_next(c->s, ops + n, (int)(max - n))) > 0)
		n += (unsigned)k;
	return n;
}

/* The next reply is a STORE @id with @n statuses, all CN_OK. */
static void expect_stored(struct conn *c, uint64_t id, unsigned n)
{
	struct cn_proto_hdr h;
	const uint8_t *p = expect_reply(c, CN_OP_STORE, id, CN_OK, &h);

	assert_int_equal(h.payload_len, 8 + 4 * n);
	assert_int_equal(cn_get_le32(p), n);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal((int32_t)cn_get_le32(p + 8 + 4 * i), CN_OK);
}

/*
 * RETRIEVE-RDMA (request @id, alone on @c) of the chunks @sd named: each
 * comes back byte-exact, nothing written past it.
 */
static void expect_retrievable(struct conn *c, uint64_t id, const struct desc *sd, unsigned n)
{
	struct desc *rd = calloc(n, sizeof(*rd));
	struct bytes b = {0};
	struct cn_proto_hdr h;
	const uint8_t *p;
	size_t total = 0, off = 0;
	struct region *dst;

	assert_non_null(rd);
	for (unsigned i = 0; i < n; i++)
		total += sd[i].len;
	dst = remote(c->f, total);
	for (unsigned i = 0; i < n; i++) {
		rd[i] = (struct desc){sd[i].key, sd[i].len, dst->rkey, dst->base + off};
		off += sd[i].len;
	}
	put_rdma_req(&b, CN_OP_RETRIEVE, id, rd, n);
	feed_all(c, &b);
	assert_int_equal(run_rdma(c, false, 8, 100000), n);
	p = expect_reply(c, CN_OP_RETRIEVE, id, CN_OK, &h);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal((int32_t)cn_get_le32(p + 8 + 8 * i), CN_OK);
		assert_int_equal(cn_get_le32(p + 12 + 8 * i), sd[i].len);
		assert_memory_equal(rd[i].addr, sd[i].addr, sd[i].len);
	}
	assert_true(all_guard(dst->base + total, GUARD_LEN));
	free(rd);
	free(b.p);
}

/*
 * Three STORE-RDMA requests back to back: the READs of all three are handed
 * out before any completes, the replies come out in request order once they
 * do, and every chunk comes back byte-exact.
 */
static void rdma_pipelined_stores(void **state)
{
	enum { N = 6 };
	static const unsigned per_req[3] = {2, 1, 3};
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct desc sd[N];
	struct cn_rdma_op ops[N + 1];
	struct bytes b = {0};
	unsigned at = 0;

	store_descs(f, sd, 200, N, 7000);
	for (unsigned r = 0; r < 3; r++) {
		put_rdma_req(&b, CN_OP_STORE, 10 + r, sd + at, per_req[r]);
		at += per_req[r];
	}
	feed_all(c, &b);
	assert_false(cn_session_ops.rx_paused(c->s));
	assert_false(cn_session_ops.idle(c->s));
	/* every READ of the three, in request order, before any completion */
	assert_int_equal(take_ops(c, ops, N + 1), N);
	for (unsigned i = 0; i < N; i++) {
		assert_true(ops[i].read);
		assert_int_equal(ops[i].len, 7000);
		assert_ptr_equal((void *)(uintptr_t)ops[i].remote_addr, sd[i].addr);
		run_op(f, &ops[i], true);
	}
	assert_true(no_reply(c));
	assert_int_equal(cn_session_ops.rdma_done(c->s, N), 0);
	for (unsigned r = 0; r < 3; r++)
		expect_stored(c, 10 + r, per_req[r]);
	assert_true(no_reply(c));
	assert_true(cn_session_ops.idle(c->s));
	assert_int_equal(f->sstats[0].rdma_store_reqs, 3);
	assert_int_equal(f->sstats[0].store_reqs, 3);
	assert_int_equal(f->sstats[0].store_keys, N);
	assert_int_equal(f->sstats[0].store_ok, N);
	assert_int_equal(f->sstats[0].store_bytes, N * 7000);
	expect_retrievable(c, 20, sd, N);
	conn_close(&c, 0);
	free(b.p);
	fix_free(f);
}

/*
 * A reply leaves only after every earlier one: completing the first
 * request's READs releases its reply and the one of a RETRIEVE behind it
 * that had nothing to write (finished at once, held until then), not the
 * reply of the STORE after them, whose chunk stays invisible until its own
 * READ completes. A refused request behind them is answered in its place
 * too, and a malformed header behind them is a barrier: its ERROR frame
 * comes last.
 */
static void rdma_pipelined_replies_in_order(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA), *other = conn_open(f, 0);
	struct desc sd[4], miss, dup[2];
	struct region *mr = remote(f, 100);
	struct cn_rdma_op ops[4];
	struct bytes b = {0};
	struct cn_proto_hdr h;
	struct cn_key k3;
	const uint8_t *p;
	size_t bad;

	store_descs(f, sd, 300, 4, 3000);
	miss = (struct desc){key_of(399), 100, mr->rkey, mr->base};
	dup[0] = dup[1] = sd[3];
	k3 = sd[3].key;
	put_rdma_req(&b, CN_OP_STORE, 1, sd, 2);	  /* two READs */
	put_rdma_req(&b, CN_OP_RETRIEVE, 2, &miss, 1); /* nothing to write */
	put_rdma_req(&b, CN_OP_STORE, 3, &sd[2], 1);	  /* one READ */
	put_rdma_req(&b, CN_OP_STORE, 4, dup, 2);	  /* refused: duplicate key */
	bad = b.len;
	put_ping(&b, 5, "x");
	b.p[bad] ^= 0xff; /* a bad magic: fatal */
	feed_all(c, &b);
	assert_true(cn_session_ops.rx_paused(c->s)); /* the bad header waits */
	assert_int_equal(take_ops(c, ops, 4), 3);
	for (unsigned i = 0; i < 3; i++)
		run_op(f, &ops[i], true);
	assert_true(no_reply(c)); /* even the RETRIEVE's, and the refusal's */
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	assert_true(no_reply(c));
	assert_int_equal(lookup_prefix(other, &sd[0].key, 1), 0);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	/* the first STORE is done: its reply and the finished RETRIEVE's, no more */
	expect_stored(c, 1, 2);
	p = expect_reply(c, CN_OP_RETRIEVE, 2, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(p + 8), CN_E_NOENT);
	assert_true(no_reply(c));
	assert_int_equal(lookup_prefix(other, &sd[0].key, 1), 1);
	assert_int_equal(lookup_prefix(other, &sd[1].key, 1), 1);
	assert_int_equal(lookup_prefix(other, &sd[2].key, 1), 0);
	assert_true(cn_session_ops.rx_paused(c->s));
	/* the last READ: the STORE's reply, the refusal, then the fatal error */
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), -EPROTO);
	c->fatal = true;
	expect_stored(c, 3, 1);
	expect_refused(c, CN_OP_STORE, 4, CN_E_DUP, "duplicate");
	assert_true(next_reply(c, &h, &p));
	assert_int_equal(h.opcode, CN_OP_ERROR);
	assert_true(h.flags & CN_F_CLOSE);
	assert_true(no_reply(c));
	assert_int_equal(lookup_prefix(other, &sd[2].key, 1), 1);
	assert_int_equal(lookup_prefix(other, &k3, 1), 0);
	assert_int_equal(f->sstats[0].frames_bad, 1);
	assert_int_equal(f->sstats[0].ping_reqs, 0);
	conn_close(&c, -EPROTO);
	conn_close(&other, 0);
	free(b.p);
	fix_free(f);
}

/*
 * Conflicts: a RETRIEVE-RDMA of a key an in-flight STORE is storing gets no
 * operation (and the session reads nothing more) until the STORE is done,
 * then returns the stored bytes; a STORE of a key an in-flight RETRIEVE is
 * reading waits likewise. A RETRIEVE of another key, or two RETRIEVEs of one
 * key, do not wait.
 */
static void rdma_pipelined_conflicts_wait(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct desc sd[3], rk, rk2, ro, sk2[2];
	struct region *dk = remote(f, 5000), *dk2 = remote(f, 5000), *dother = remote(f, 5000);
	uint8_t old[5000];
	struct cn_rdma_op ops[8];
	struct bytes b = {0};
	struct cn_proto_hdr h;
	struct cn_l1_info info;
	const uint8_t *p;

	store_descs(f, sd, 400, 3, 5000); /* sd[0..1]: the STORE; sd[2]: a new key later */
	pattern(old, sizeof(old), 77);
	ro = (struct desc){key_of(450), 5000, dother->rkey, dother->base};
	assert_int_equal(store_inline(c, &ro.key, old, sizeof(old)), CN_OK);
	rk = (struct desc){sd[1].key, 5000, dk->rkey, dk->base};
	rk2 = (struct desc){sd[1].key, 5000, dk2->rkey, dk2->base};

	/* STORE {k0, k1}, RETRIEVE {other}: no conflict; RETRIEVE {k1}: waits */
	put_rdma_req(&b, CN_OP_STORE, 1, sd, 2);
	put_rdma_req(&b, CN_OP_RETRIEVE, 2, &ro, 1);
	put_rdma_req(&b, CN_OP_RETRIEVE, 3, &rk, 1);
	put_ping(&b, 4, "after");
	feed_all(c, &b);
	assert_true(cn_session_ops.rx_paused(c->s));
	assert_int_equal(take_ops(c, ops, 8), 3); /* two READs, then the other key's WRITE */
	assert_true(ops[0].read && ops[1].read);
	assert_false(ops[2].read);
	assert_ptr_equal((void *)(uintptr_t)ops[2].remote_addr, dother->base);
	for (unsigned i = 0; i < 3; i++)
		run_op(f, &ops[i], i < 2);
	assert_true(all_guard(dk->base, 5000 + GUARD_LEN)); /* k1 not read yet */
	assert_int_equal(cn_session_ops.rdma_done(c->s, 2), 0);
	expect_stored(c, 1, 2);
	/* the STORE is done: now the conflicting RETRIEVE gets its WRITE */
	assert_int_equal(take_ops(c, ops + 3, 8), 1);
	assert_false(ops[3].read);
	assert_ptr_equal((void *)(uintptr_t)ops[3].remote_addr, dk->base);
	run_op(f, &ops[3], false);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 2), 0);
	p = expect_reply(c, CN_OP_RETRIEVE, 2, CN_OK, &h);
	assert_int_equal(cn_get_le32(p + 12), 5000);
	assert_memory_equal(dother->base, old, 5000);
	p = expect_reply(c, CN_OP_RETRIEVE, 3, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(p + 8), CN_OK);
	assert_int_equal(cn_get_le32(p + 12), 5000);
	assert_memory_equal(dk->base, sd[1].addr, 5000);
	expect_pong(c, 4, "after");

	/* RETRIEVE {k1}, RETRIEVE {k1} again: both run; STORE {k2, k1}: waits */
	sk2[0] = sd[2];
	sk2[1] = sd[1];
	memset(dk->base, GUARD, 5000);
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_RETRIEVE, 5, &rk, 1);
	put_rdma_req(&b, CN_OP_RETRIEVE, 6, &rk2, 1);
	put_rdma_req(&b, CN_OP_STORE, 7, sk2, 2);
	feed_all(c, &b);
	assert_int_equal(take_ops(c, ops, 8), 2);
	assert_false(ops[0].read || ops[1].read);
	l1_info(f, &info);
	assert_int_equal(info.pinned, 1); /* one chunk, two readers */
	assert_int_equal(info.reserved, 0); /* the STORE has reserved nothing */
	assert_true(cn_session_ops.rx_paused(c->s));
	run_op(f, &ops[0], false);
	run_op(f, &ops[1], false);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	assert_int_equal(take_ops(c, ops, 8), 0); /* the other RETRIEVE still reads k1 */
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	expect_reply(c, CN_OP_RETRIEVE, 5, CN_OK, &h);
	expect_reply(c, CN_OP_RETRIEVE, 6, CN_OK, &h);
	assert_memory_equal(dk->base, sd[1].addr, 5000);
	assert_memory_equal(dk2->base, sd[1].addr, 5000);
	/* the STORE starts now: k1 exists (CN_E_EXIST, no READ), k2 is read */
	assert_int_equal(take_ops(c, ops, 8), 1);
	assert_true(ops[0].read);
	assert_ptr_equal((void *)(uintptr_t)ops[0].remote_addr, sd[2].addr);
	run_op(f, &ops[0], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	p = expect_reply(c, CN_OP_STORE, 7, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(p + 8), CN_OK);
	assert_int_equal((int32_t)cn_get_le32(p + 12), CN_E_EXIST);
	assert_true(cn_session_ops.idle(c->s));
	expect_retrievable(c, 8, sd, 3);
	conn_close(&c, 0);
	free(b.p);
	fix_free(f);
}

/*
 * A DELETE behind a STORE-RDMA of the same key is a barrier: it runs and is
 * answered only after the STORE's reply, and really deletes. A STORE-RDMA of
 * the key behind the DELETE starts only after it, so the key ends up stored
 * with the later bytes.
 */
static void rdma_pipelined_barrier_delete(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA), *other = conn_open(f, 0);
	struct desc first, second;
	struct region *r2 = remote(f, 4000);
	struct cn_rdma_op ops[4];
	struct bytes b = {0};
	struct cn_proto_hdr h;
	const uint8_t *p;

	store_descs(f, &first, 500, 1, 4000);
	pattern(r2->base, 4000, 501);
	second = (struct desc){first.key, 4000, r2->rkey, r2->base};
	put_rdma_req(&b, CN_OP_STORE, 1, &first, 1);
	put_keys(&b, CN_OP_DELETE, 0, 2, &first.key, 1);
	put_rdma_req(&b, CN_OP_STORE, 3, &second, 1);
	feed_all(c, &b);
	assert_true(cn_session_ops.rx_paused(c->s));
	assert_int_equal(take_ops(c, ops, 4), 1); /* only the first STORE's READ */
	assert_ptr_equal((void *)(uintptr_t)ops[0].remote_addr, first.addr);
	assert_true(no_reply(c));
	assert_int_equal(f->sstats[0].delete_reqs, 0);
	run_op(f, &ops[0], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	expect_stored(c, 1, 1);
	p = expect_reply(c, CN_OP_DELETE, 2, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(p + 8), CN_OK); /* it found the chunk */
	assert_int_equal(f->sstats[0].delete_keys, 1);
	assert_int_equal(lookup_prefix(other, &first.key, 1), 0);
	/* the STORE behind the DELETE: a READ of the second buffer */
	assert_int_equal(take_ops(c, ops, 4), 1);
	assert_ptr_equal((void *)(uintptr_t)ops[0].remote_addr, second.addr);
	run_op(f, &ops[0], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	expect_stored(c, 3, 1);
	expect_retrievable(c, 4, &second, 1);
	conn_close(&c, 0);
	conn_close(&other, 0);
	free(b.p);
	fix_free(f);
}

/*
 * The request bound: with CN_SESSION_RDMA_MAX_REQS requests in flight the
 * session pauses, and a request beyond them, even one already received in
 * the same read, gets no operation until one finishes; then it starts.
 */
static void rdma_pipeline_request_bound(void **state)
{
	enum { M = CN_SESSION_RDMA_MAX_REQS };
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct desc sd[2 * M + 2];
	struct cn_rdma_op ops[M + 2];
	struct bytes b = {0};

	store_descs(f, sd, 600, 2 * M + 2, 1000);
	/* M + 1 requests in one read */
	for (unsigned i = 0; i <= M; i++)
		put_rdma_req(&b, CN_OP_STORE, 1 + i, &sd[i], 1);
	feed_all(c, &b);
	assert_true(cn_session_ops.rx_paused(c->s));
	assert_int_equal(take_ops(c, ops, M + 2), M);
	for (unsigned i = 0; i < M; i++)
		run_op(f, &ops[i], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	expect_stored(c, 1, 1);
	assert_true(no_reply(c));
	assert_int_equal(take_ops(c, ops + M, 2), 1); /* the last one starts now */
	assert_ptr_equal((void *)(uintptr_t)ops[M].remote_addr, sd[M].addr);
	run_op(f, &ops[M], true);
	assert_true(cn_session_ops.rx_paused(c->s)); /* M in flight again */
	assert_int_equal(cn_session_ops.rdma_done(c->s, M), 0);
	for (unsigned i = 1; i <= M; i++)
		expect_stored(c, 1 + i, 1);
	assert_false(cn_session_ops.rx_paused(c->s));
	assert_true(cn_session_ops.idle(c->s));

	/* one read per request: the one beyond the bound is not even taken in */
	for (unsigned i = 0; i < M; i++) {
		assert_false(cn_session_ops.rx_paused(c->s));
		bytes_reset(&b);
		put_rdma_req(&b, CN_OP_STORE, 100 + i, &sd[M + 1 + i], 1);
		feed_all(c, &b);
	}
	assert_true(cn_session_ops.rx_paused(c->s));
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_STORE, 100 + M, &sd[2 * M + 1], 1);
	assert_int_equal(feed(c, b.p, b.len), 0);
	assert_int_equal(take_ops(c, ops, M + 2), M);
	for (unsigned i = 0; i < M; i++)
		run_op(f, &ops[i], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	expect_stored(c, 100, 1);
	assert_false(cn_session_ops.rx_paused(c->s));
	feed_all(c, &b);
	assert_int_equal(take_ops(c, ops + M, 2), 1);
	run_op(f, &ops[M], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, M), 0);
	for (unsigned i = 1; i <= M; i++)
		expect_stored(c, 100 + i, 1);
	assert_true(cn_session_ops.idle(c->s));
	assert_int_equal(f->sstats[0].store_ok, 2 * M + 2);
	assert_int_equal(f->sstats[0].rdma_store_reqs, 2 * M + 2);
	expect_retrievable(c, 200, sd, 2 * M + 2);
	conn_close(&c, 0);
	free(b.p);
	fix_free(f);
}

/*
 * The byte bound: requests naming CN_SESSION_RDMA_MAX_BYTES in all fill the
 * pipeline (the session pauses); one that would pass it waits, parsed, until
 * enough has finished. A request larger than the bound still runs, alone.
 */
static void rdma_pipeline_byte_bound(void **state)
{
	enum { CH = 1u << 20, PER = (unsigned)(CN_SESSION_RDMA_MAX_BYTES / CH / 2) };
	struct fix *f = fix_new(160u << 20, CH);
	struct conn *c = conn_open(f, CN_SESS_RDMA);
	struct region *src = remote(f, CH);
	struct desc *d = calloc(2 * PER + 2, sizeof(*d));
	struct cn_rdma_op *ops = calloc(2 * PER + 2, sizeof(*ops));
	struct bytes b = {0};
	unsigned n;

	assert_non_null(d);
	assert_non_null(ops);
	pattern(src->base, CH, 7);
	for (unsigned i = 0; i < 2 * PER + 2; i++) /* every chunk read from one buffer */
		d[i] = (struct desc){key_of(700 + i), CH, src->rkey, src->base};
	/* half the bound, the other half: both run; then one more chunk waits */
	put_rdma_req(&b, CN_OP_STORE, 1, d, PER);
	put_rdma_req(&b, CN_OP_STORE, 2, d + PER, PER);
	feed_all(c, &b);
	assert_true(cn_session_ops.rx_paused(c->s));
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_STORE, 3, d + 2 * PER, 1);
	assert_int_equal(feed(c, b.p, b.len), 0);
	assert_int_equal(take_ops(c, ops, 2 * PER + 2), 2 * PER);
	assert_int_equal(cn_session_ops.rdma_done(c->s, PER), 0); /* the first request */
	expect_stored(c, 1, PER);
	feed_all(c, &b);
	assert_int_equal(take_ops(c, ops, 2), 1);
	assert_int_equal(cn_session_ops.rdma_done(c->s, PER + 1), 0);
	expect_stored(c, 2, PER);
	expect_stored(c, 3, 1);
	assert_true(cn_session_ops.idle(c->s));

	/* alone, more than the bound runs; a one-chunk request behind it waits */
	n = 2 * PER + 1;
	for (unsigned i = 0; i < n; i++)
		d[i] = (struct desc){key_of(800 + i), CH, src->rkey, src->base};
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_STORE, 4, d, n);
	put_rdma_req(&b, CN_OP_STORE, 5, &(struct desc){key_of(900), 10, src->rkey, src->base},
		     1);
	feed_all(c, &b);
	assert_true(cn_session_ops.rx_paused(c->s));
	assert_int_equal(take_ops(c, ops, n + 1), n);
	assert_int_equal(cn_session_ops.rdma_done(c->s, n), 0);
	expect_stored(c, 4, n);
	assert_int_equal(take_ops(c, ops, 2), 1);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	expect_stored(c, 5, 1);
	assert_true(cn_session_ops.idle(c->s));
	conn_close(&c, 0);
	free(ops);
	free(d);
	free(b.p);
	fix_free(f);
}

/*
 * The connection ends with three requests in flight (a STORE partly read,
 * a RETRIEVE, a STORE with one key already stored) and a fourth parsed but
 * waiting on a conflict: every reserved chunk is discarded (store_discarded
 * moves by exactly those), none becomes visible, every pinned chunk is
 * unpinned, and each in-flight request counts as aborted.
 */
static void rdma_close_with_requests_in_flight(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct conn *c = conn_open(f, CN_SESS_RDMA), *other = conn_open(f, 0);
	struct desc sa[2], sb[3], rx, wait;
	struct region *dx = remote(f, 2000), *dw = remote(f, 2000);
	struct cn_key kx = key_of(1020);
	uint8_t old[2000];
	struct cn_rdma_op ops[8];
	struct bytes b = {0};
	struct cn_l1_info info;
	uint64_t disc0, ok0, ab0;

	store_descs(f, sa, 1000, 2, 2000);
	store_descs(f, sb, 1010, 3, 2000);
	memset(old, 'o', sizeof(old));
	assert_int_equal(store_inline(other, &kx, old, sizeof(old)), CN_OK);
	assert_int_equal(store_inline(other, &sb[1].key, old, sizeof(old)), CN_OK);
	rx = (struct desc){kx, 2000, dx->rkey, dx->base};
	wait = (struct desc){sa[0].key, 2000, dw->rkey, dw->base}; /* A is storing it */
	disc0 = f->sstats[0].store_discarded;
	ok0 = f->sstats[0].store_ok;
	ab0 = f->sstats[0].rdma_aborted;
	put_rdma_req(&b, CN_OP_STORE, 1, sa, 2);	 /* A: two reserved */
	put_rdma_req(&b, CN_OP_RETRIEVE, 2, &rx, 1); /* one pinned */
	put_rdma_req(&b, CN_OP_STORE, 3, sb, 3);	 /* B: two reserved, one CN_E_EXIST */
	put_rdma_req(&b, CN_OP_RETRIEVE, 4, &wait, 1);
	feed_all(c, &b);
	assert_true(cn_session_ops.rx_paused(c->s));
	assert_int_equal(take_ops(c, ops, 8), 5);
	run_op(f, &ops[0], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0); /* A half read */
	l1_info(f, &info);
	assert_int_equal(info.reserved, 4);
	assert_int_equal(info.pinned, 1);
	assert_true(no_reply(c));
	assert_false(cn_session_ops.idle(c->s));
	conn_close(&c, -EREMOTEIO);
	assert_int_equal(f->sstats[0].store_discarded - disc0, 4);
	assert_int_equal(f->sstats[0].store_ok, ok0);
	assert_int_equal(f->sstats[0].rdma_aborted - ab0, 3);
	l1_info(f, &info);
	assert_int_equal(info.reserved, 0);
	assert_int_equal(info.pinned, 0);
	assert_int_equal(info.chunks, 2); /* only the inline ones */
	assert_int_equal(lookup_prefix(other, &sa[0].key, 1), 0);
	assert_int_equal(lookup_prefix(other, &sa[1].key, 1), 0);
	assert_int_equal(lookup_prefix(other, &sb[0].key, 1), 0);
	assert_int_equal(lookup_prefix(other, &sb[2].key, 1), 0);
	assert_int_equal(lookup_prefix(other, &sb[1].key, 1), 1);
	assert_int_equal(lookup_prefix(other, &kx, 1), 1);
	assert_true(all_guard(dw->base, 2000 + GUARD_LEN));
	conn_close(&other, 0);
	free(b.p);
	fix_free(f);
}


/* ---- L2: CN_F_RDMA RETRIEVE misses fetched from the owner peer ---- */

/* A peer node in this process: its own engine and sessions, served over tcp by one thread. */
struct peer {
	struct cn_engine *eng;
	struct cn_session_ctx ctx;
	struct cn_session_stats sstats[2];
	struct cn_transport_stats tstats[1];
	struct cn_server *srv;
	pthread_t thr;
};

static void *peer_main(void *arg)
{
	struct peer *p = arg;

	cn_tcp_ops.server_run(p->srv, 0);
	return NULL;
}

static struct peer *peer_new(const char *id, uint64_t max_chunk)
{
	struct peer *p = calloc(1, sizeof(*p));
	char name[32];
	struct cn_engine_cfg ecfg = {
		.l1_size = 16u << 20, .max_chunk = max_chunk, .ncores = 2, .socket_id = -1,
		.name = name,
	};
	struct cn_server_cfg scfg = {.listen = "127.0.0.1:0", .nworkers = 1,
				     .sess = &cn_session_ops};

	assert_non_null(p);
	snprintf(name, sizeof(name), "peer%u", fix_seq++);
	assert_int_equal(cn_engine_create(&ecfg, &p->eng), 0);
	p->ctx = (struct cn_session_ctx){
		.engine = p->eng,
		.node_id = id,
		.max_keys = CN_PROTO_MAX_KEYS,
		.max_frame = CN_PROTO_MAX_FRAME,
		.stats = p->sstats,
	};
	scfg.sess_arg = &p->ctx;
	scfg.stats = p->tstats;
	assert_int_equal(cn_tcp_ops.server_create(&scfg, &p->srv), 0);
	assert_int_equal(pthread_create(&p->thr, NULL, peer_main, p), 0);
	return p;
}

static void peer_free(struct peer *p)
{
	cn_tcp_ops.server_stop(p->srv, 0);
	pthread_join(p->thr, NULL);
	cn_tcp_ops.server_destroy(&p->srv);
	cn_engine_destroy(&p->eng);
	free(p);
}

/* Store a chunk in the peer's L1 only (on core 1: its server thread runs core 0). */
static void peer_put(struct peer *p, const struct cn_key *k, const void *data, uint32_t len)
{
	struct cn_l1_ref ref;

	assert_int_equal(cn_engine_store_begin(p->eng, 1, k, len, &ref), 0);
	memcpy(ref.data, data, len);
	assert_int_equal(cn_engine_store_commit(p->eng, 1, &ref), 0);
}

/* The session's L2 tier: this node ("rdma-node") and one peer, both members. */
struct l2fix {
	struct cn_l2_static st;
	struct cn_l2 *l2;
	struct cn_test_waiter wt;
	struct cn_wake wake;
};

static struct l2fix *l2_new(struct fix *f, const char *peer_id, const char *peer_addr,
			    uint64_t max_chunk, uint32_t fetch_cap)
{
	struct l2fix *l = calloc(1, sizeof(*l));
	char spec[256], err[200];
	struct cn_l2_cfg cfg = {.self_id = "rdma-node", .source = &cn_l2_static_source,
				.timeout_ms = 2000, .threads = 2, .max_chunk = max_chunk,
				.fetch_cap = fetch_cap,
				/* no write-through: the only jobs are the fetches under test */
				.write = CN_L2_WRITE_NONE};

	assert_non_null(l);
	pthread_mutex_init(&l->wt.lock, NULL);
	pthread_cond_init(&l->wt.cond, NULL);
	/* every node gets the same list, this one included */
	snprintf(spec, sizeof(spec), "rdma-node@127.0.0.1:1,%s@%s/tcp", peer_id, peer_addr);
	assert_int_equal(cn_l2_static_parse(spec, &l->st, err, sizeof(err)), 0);
	cfg.source_arg = &l->st;
	assert_int_equal(cn_l2_create(&cfg, &l->l2), 0);
	assert_true(cn_l2_active(l->l2));
	assert_true(cn_l2_self_member(l->l2));
	l->wake = (struct cn_wake){.post = cn_test_wake_post, .worker = &l->wt, .conn = l};
	f->ctx.l2 = l->l2;
	return l;
}

static void l2_free(struct fix *f, struct l2fix *l)
{
	assert_null(l->wt.got); /* every job was handed to async_done() */
	f->ctx.l2 = NULL;
	cn_l2_destroy(&l->l2);
	pthread_mutex_destroy(&l->wt.lock);
	pthread_cond_destroy(&l->wt.cond);
	free(l);
}

/* Hand every job back to the session as the worker would; each must be taken (1). */
static void finish_job(struct l2fix *l, int want)
{
	struct cn_async *a = cn_test_wait_job(&l->wt);

	assert_non_null(a);
	assert_int_equal(cn_session_ops.async_done(a), want);
}

/* @n keys (from key_of(*next) on) whose owner is the peer (@peer) or this node (!@peer). */
static void owned_keys(struct l2fix *l, bool peer, unsigned *next, struct cn_key *out, unsigned n)
{
	for (unsigned got = 0; got < n; (*next)++) {
		struct cn_key k = key_of(*next);

		if ((cn_l2_owner(l->l2, &k) != CN_L2_SELF) == peer)
			out[got++] = k;
	}
}

static void l2_peer_stats(struct l2fix *l, struct cn_l2_peer_stats *st)
{
	struct cn_l2_peer_view v;

	assert_int_equal(cn_l2_peer_get(l->l2, 0, &v), 0);
	*st = v.st;
}

static struct cn_l2_stats l2_stats(struct l2fix *l)
{
	struct cn_l2_stats st;

	cn_l2_get_stats(l->l2, &st);
	return st;
}

/*
 * RETRIEVE-RDMA of chunks held only by their owner peer: the request waits
 * (no operation, no reply, nothing more read) while the L2 threads fetch
 * them, then every chunk is RDMA-written byte-exact from L1; an L1 hit in
 * the same request is served as ever, a key the peer lacks and a key this
 * node owns are plain misses, a repeated key is fetched once and written
 * twice. The counters move by exactly that; a second RETRIEVE is all L1.
 */
static void rdma_retrieve_l2_fetch(void **state)
{
	enum { N = 5, NREQ = N + 4 };
	static const uint32_t len[N] = {1, 1000, 64u << 10, 3000, 17};
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct peer *p = peer_new("peer1", 64u << 10);
	struct l2fix *l = l2_new(f, "peer1", cn_tcp_ops.server_addr(p->srv), 64u << 10, 0);
	struct conn *c = conn_open_wake(f, CN_SESS_RDMA, &l->wake);
	struct cn_key pk[N + 2], sk;
	uint8_t *data[N], local[700];
	struct region *dst[NREQ];
	struct desc d[NREQ];
	struct cn_rdma_op op;
	struct bytes b = {0};
	struct cn_proto_hdr h;
	struct cn_l2_peer_stats ps;
	struct cn_l2_stats ls;
	struct cn_l1_info info;
	const uint8_t *rp;
	unsigned next = 2000;
	uint64_t sum = 0;
	/* what each descriptor must get back: a peer chunk, local, or nothing */
	int32_t want_st[NREQ];
	const uint8_t *want[NREQ];
	uint32_t want_len[NREQ];

	owned_keys(l, true, &next, pk, N + 2); /* N on the peer; pk[N]: not; pk[N + 1]: local */
	owned_keys(l, false, &next, &sk, 1);	/* this node's, and missing: never asked for */
	for (unsigned i = 0; i < N; i++) {
		data[i] = malloc(len[i]);
		assert_non_null(data[i]);
		pattern(data[i], len[i], 40 + i);
		peer_put(p, &pk[i], data[i], len[i]);
		sum += len[i];
	}
	pattern(local, sizeof(local), 99);
	assert_int_equal(store_inline(c, &pk[N + 1], local, sizeof(local)), CN_OK);
	/* the request: the peer's N, pk[0] again, the peer's miss, this node's miss, L1 */
	for (unsigned i = 0; i < NREQ; i++) {
		const struct cn_key *k = i < N ? &pk[i] : i == N ? &pk[0] : i == N + 1 ? &pk[N]
					 : i == N + 2 ? &sk : &pk[N + 1];

		dst[i] = remote(f, 64u << 10);
		d[i] = (struct desc){*k, 64u << 10, dst[i]->rkey, dst[i]->base};
		want_st[i] = i == N + 1 || i == N + 2 ? CN_E_NOENT : CN_OK;
		want[i] = i < N ? data[i] : i == N ? data[0] : i == N + 3 ? local : NULL;
		want_len[i] = i < N ? len[i] : i == N ? len[0] : i == N + 3 ? sizeof(local) : 0;
	}
	put_rdma_req(&b, CN_OP_RETRIEVE, 30, d, NREQ);
	put_ping(&b, 31, "behind");
	feed_all(c, &b);
	/* waiting for the peer: nothing to write yet, nothing answered, nothing read past it */
	assert_int_equal(cn_session_ops.rdma_next(c->s, &op, 1), 0);
	assert_true(no_reply(c));
	assert_true(cn_session_ops.rx_paused(c->s));
	assert_false(cn_session_ops.idle(c->s));
	assert_int_equal(f->sstats[0].l2_waits, 1);
	assert_int_equal(f->sstats[0].ping_reqs, 0);
	l1_info(f, &info);
	assert_int_equal(info.pinned, 0); /* the request has not started */

	finish_job(l, 1);
	/* N fetched + the repeat + the L1 hit */
	assert_int_equal(run_rdma(c, false, 3, 100), N + 2);
	rp = expect_reply(c, CN_OP_RETRIEVE, 30, CN_OK, &h);
	assert_int_equal(h.payload_len, 8 + 8 * NREQ);
	for (unsigned i = 0; i < NREQ; i++) {
		assert_int_equal((int32_t)cn_get_le32(rp + 8 + 8 * i), want_st[i]);
		assert_int_equal(cn_get_le32(rp + 12 + 8 * i), want_len[i]);
		if (want[i] != NULL)
			assert_memory_equal(dst[i]->base, want[i], want_len[i]);
		assert_true(all_guard(dst[i]->base + want_len[i],
				      (64u << 10) - want_len[i] + GUARD_LEN));
	}
	expect_pong(c, 31, "behind");
	assert_true(cn_session_ops.idle(c->s));
	assert_int_equal(f->sstats[0].retrieve_reqs, 1);
	assert_int_equal(f->sstats[0].rdma_retrieve_reqs, 1);
	assert_int_equal(f->sstats[0].retrieve_keys, NREQ);
	assert_int_equal(f->sstats[0].retrieve_hits, N + 2);
	assert_int_equal(f->sstats[0].retrieve_l2_hits, N + 1); /* pk[0] was sent twice */
	assert_int_equal(f->sstats[0].retrieve_bytes, sum + len[0] + sizeof(local));
	assert_int_equal(f->sstats[0].req_errors, 0);
	ls = l2_stats(l);
	assert_int_equal(ls.jobs_submitted, 1);
	assert_int_equal(ls.fills, N);
	assert_int_equal(ls.fill_failed, 0);
	l2_peer_stats(l, &ps);
	assert_int_equal(ps.fetch_reqs, 1);
	assert_int_equal(ps.fetch_keys, N + 1); /* distinct keys missing in L1: not sk, not local */
	assert_int_equal(ps.fetch_hits, N);
	assert_int_equal(ps.fetch_bytes, sum);
	assert_int_equal(ps.errors + ps.timeouts, 0);
	assert_int_equal(p->sstats[0].peer_sessions, 1); /* the peer served it from L1 only */
	l1_info(f, &info);
	assert_int_equal(info.pinned, 0);
	assert_int_equal(info.chunks, N + 1);

	/* now they are L1 hits: no wait, no job, no L2 hit */
	for (unsigned i = 0; i < N; i++)
		memset(dst[i]->base, GUARD, 64u << 10);
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_RETRIEVE, 32, d, N);
	feed_all(c, &b);
	assert_int_equal(run_rdma(c, false, 8, 100), N);
	rp = expect_reply(c, CN_OP_RETRIEVE, 32, CN_OK, &h);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal((int32_t)cn_get_le32(rp + 8 + 8 * i), CN_OK);
		assert_memory_equal(dst[i]->base, data[i], len[i]);
	}
	assert_int_equal(f->sstats[0].l2_waits, 1);
	assert_int_equal(f->sstats[0].retrieve_l2_hits, N + 1);
	assert_int_equal(l2_stats(l).jobs_submitted, 1);

	conn_close(&c, 0);
	l2_free(f, l);
	peer_free(p);
	for (unsigned i = 0; i < N; i++)
		free(data[i]);
	free(b.p);
	fix_free(f);
}

/*
 * A fetch's first RETRIEVE gives each key fetch_cap bytes (over RDMA peers,
 * 1 MiB rather than max_chunk: its buffers are registered). Chunks that do
 * not fit come back CN_E_TOOBIG with their size and are fetched again, in
 * one second request, at that size: every chunk arrives byte-exact, in two
 * requests to the peer.
 */
static void rdma_retrieve_l2_refetch_big(void **state)
{
	enum { N = 4 };
	static const uint32_t len[N] = {4096, 4097, 60000, 100};
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct peer *p = peer_new("peer1", 64u << 10);
	struct l2fix *l = l2_new(f, "peer1", cn_tcp_ops.server_addr(p->srv), 64u << 10, 4096);
	struct conn *c = conn_open_wake(f, CN_SESS_RDMA, &l->wake);
	struct cn_key pk[N];
	uint8_t *data[N];
	struct region *dst[N];
	struct desc d[N];
	struct bytes b = {0};
	struct cn_proto_hdr h;
	struct cn_l2_peer_stats ps;
	const uint8_t *rp;
	unsigned next = 9000;

	(void)state;
	owned_keys(l, true, &next, pk, N);
	for (unsigned i = 0; i < N; i++) {
		data[i] = malloc(len[i]);
		assert_non_null(data[i]);
		pattern(data[i], len[i], 70 + i);
		peer_put(p, &pk[i], data[i], len[i]);
		dst[i] = remote(f, 64u << 10);
		d[i] = (struct desc){pk[i], 64u << 10, dst[i]->rkey, dst[i]->base};
	}
	put_rdma_req(&b, CN_OP_RETRIEVE, 40, d, N);
	feed_all(c, &b);
	finish_job(l, 1);
	assert_int_equal(run_rdma(c, false, 8, 100), N);
	rp = expect_reply(c, CN_OP_RETRIEVE, 40, CN_OK, &h);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal((int32_t)cn_get_le32(rp + 8 + 8 * i), CN_OK);
		assert_int_equal(cn_get_le32(rp + 12 + 8 * i), len[i]);
		assert_memory_equal(dst[i]->base, data[i], len[i]);
	}
	l2_peer_stats(l, &ps);
	assert_int_equal(ps.fetch_reqs, 2);	/* all four, then the two over 4096 */
	assert_int_equal(ps.fetch_keys, N);
	assert_int_equal(ps.fetch_hits, N);
	assert_int_equal(ps.fetch_bytes, 4096 + 4097 + 60000 + 100);
	assert_int_equal(ps.errors + ps.timeouts, 0);
	assert_int_equal(f->sstats[0].retrieve_l2_hits, N);
	conn_close(&c, 0);
	l2_free(f, l);
	peer_free(p);
	for (unsigned i = 0; i < N; i++)
		free(data[i]);
	free(b.p);
	fix_free(f);
}

/*
 * Order around a RETRIEVE-RDMA waiting for L2: a STORE-RDMA in flight before
 * it goes on and is answered first; a STORE-RDMA of the same key behind it
 * is not even parsed until the fetch is back, and then waits for the
 * RETRIEVE's WRITE: the RETRIEVE gets the peer's bytes, the STORE finds
 * the key stored (CN_E_EXIST). A RETRIEVE waiting on a conflict goes to L2
 * only once it may start, and asks only for what L1 does not have then.
 */
static void rdma_retrieve_l2_keeps_order(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct peer *p = peer_new("peer1", 64u << 10);
	struct l2fix *l = l2_new(f, "peer1", cn_tcp_ops.server_addr(p->srv), 64u << 10, 0);
	struct conn *c = conn_open_wake(f, CN_SESS_RDMA, &l->wake);
	struct cn_key pk[3];
	struct desc sa, rx, sx, ry[2];
	struct region *dx = remote(f, 4000), *sxr = remote(f, 4000), *dy0 = remote(f, 4000),
		      *dy1 = remote(f, 4000);
	uint8_t onpeer[4000], onpeer2[4000];
	struct cn_rdma_op ops[4];
	struct bytes b = {0};
	struct cn_proto_hdr h;
	struct cn_l2_peer_stats ps;
	const uint8_t *rp;
	unsigned next = 3000;

	owned_keys(l, true, &next, pk, 3);
	pattern(onpeer, sizeof(onpeer), 1);
	pattern(onpeer2, sizeof(onpeer2), 2);
	pattern(sxr->base, 4000, 3); /* the later STORE's bytes: must never be retrieved */
	peer_put(p, &pk[0], onpeer, sizeof(onpeer));
	peer_put(p, &pk[2], onpeer2, sizeof(onpeer2));
	store_descs(f, &sa, 3500, 1, 2000);
	rx = (struct desc){pk[0], 4000, dx->rkey, dx->base};
	sx = (struct desc){pk[0], 4000, sxr->rkey, sxr->base};
	put_rdma_req(&b, CN_OP_STORE, 1, &sa, 1);    /* in flight before */
	put_rdma_req(&b, CN_OP_RETRIEVE, 2, &rx, 1); /* waits for L2 */
	put_rdma_req(&b, CN_OP_STORE, 3, &sx, 1);    /* the same key, behind it */
	put_ping(&b, 4, "last");
	feed_all(c, &b);
	assert_true(cn_session_ops.rx_paused(c->s));
	assert_int_equal(f->sstats[0].l2_waits, 1);
	assert_int_equal(take_ops(c, ops, 4), 1); /* the first STORE's READ only */
	assert_true(ops[0].read);
	assert_ptr_equal((void *)(uintptr_t)ops[0].remote_addr, sa.addr);
	run_op(f, &ops[0], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	expect_stored(c, 1, 1); /* the earlier request went on while the fetch is out */
	assert_true(no_reply(c));
	assert_int_equal(f->sstats[0].store_reqs, 1); /* the later STORE is not parsed */

	finish_job(l, 1);
	assert_int_equal(take_ops(c, ops, 4), 1); /* the WRITE; the STORE of pk[0] waits on it */
	assert_false(ops[0].read);
	assert_ptr_equal((void *)(uintptr_t)ops[0].remote_addr, dx->base);
	assert_true(cn_session_ops.rx_paused(c->s));
	run_op(f, &ops[0], false);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	rp = expect_reply(c, CN_OP_RETRIEVE, 2, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(rp + 8), CN_OK);
	assert_int_equal(cn_get_le32(rp + 12), sizeof(onpeer));
	assert_memory_equal(dx->base, onpeer, sizeof(onpeer));
	/* the STORE behind: the key is in L1 now, so no READ and CN_E_EXIST */
	assert_int_equal(take_ops(c, ops, 4), 0);
	rp = expect_reply(c, CN_OP_STORE, 3, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(rp + 8), CN_E_EXIST);
	expect_pong(c, 4, "last");
	assert_int_equal(f->sstats[0].retrieve_l2_hits, 1);

	/*
	 * STORE-RDMA of pk[1] in flight, then RETRIEVE {pk[1], pk[2]}: it waits on
	 * the conflict without asking anyone; once the STORE is done it asks the
	 * peer for pk[2] alone (pk[1] is in L1 by then).
	 */
	store_descs(f, &sa, 3600, 1, 3000);
	sa.key = pk[1];
	ry[0] = (struct desc){pk[1], 4000, dy0->rkey, dy0->base};
	ry[1] = (struct desc){pk[2], 4000, dy1->rkey, dy1->base};
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_STORE, 5, &sa, 1);
	put_rdma_req(&b, CN_OP_RETRIEVE, 6, ry, 2);
	feed_all(c, &b);
	assert_int_equal(take_ops(c, ops, 4), 1);
	assert_int_equal(f->sstats[0].l2_waits, 1); /* not yet */
	run_op(f, &ops[0], true);
	assert_int_equal(cn_session_ops.rdma_done(c->s, 1), 0);
	expect_stored(c, 5, 1);
	assert_int_equal(f->sstats[0].l2_waits, 2);
	assert_true(no_reply(c));
	finish_job(l, 1);
	assert_int_equal(run_rdma(c, false, 8, 100), 2);
	rp = expect_reply(c, CN_OP_RETRIEVE, 6, CN_OK, &h);
	assert_int_equal(cn_get_le32(rp + 12), 3000);
	assert_memory_equal(dy0->base, sa.addr, 3000);
	assert_int_equal(cn_get_le32(rp + 20), sizeof(onpeer2));
	assert_memory_equal(dy1->base, onpeer2, sizeof(onpeer2));
	l2_peer_stats(l, &ps);
	assert_int_equal(ps.fetch_reqs, 2);
	assert_int_equal(ps.fetch_keys, 2); /* pk[0], then pk[2] alone */
	assert_int_equal(ps.fetch_hits, 2);
	assert_int_equal(f->sstats[0].retrieve_l2_hits, 2);
	assert_true(cn_session_ops.idle(c->s));
	conn_close(&c, 0);
	l2_free(f, l);
	peer_free(p);
	free(b.p);
	fix_free(f);
}

/*
 * The owner peer is down: its keys are misses (CN_E_NOENT), never a
 * request-level error; what L1 has in the same request is still written.
 * Once the peer is marked down its keys are answered at once, with no job.
 */
static void rdma_retrieve_l2_peer_down(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	char addr[64];
	struct l2fix *l;
	struct conn *c;
	struct cn_key k[4];
	struct region *r[4];
	struct desc d[4];
	uint8_t local[900];
	struct bytes b = {0};
	struct cn_proto_hdr h;
	struct cn_l2_peer_view v;
	const uint8_t *rp;
	unsigned next = 4000;

	snprintf(addr, sizeof(addr), "127.0.0.1:%u", cn_test_dead_port());
	l = l2_new(f, "gone", addr, 64u << 10, 0);
	c = conn_open_wake(f, CN_SESS_RDMA, &l->wake);
	owned_keys(l, true, &next, k, 4);
	pattern(local, sizeof(local), 5);
	assert_int_equal(store_inline(c, &k[2], local, sizeof(local)), CN_OK);
	for (unsigned i = 0; i < 4; i++) {
		r[i] = remote(f, 1000);
		d[i] = (struct desc){k[i], 1000, r[i]->rkey, r[i]->base};
	}
	put_rdma_req(&b, CN_OP_RETRIEVE, 1, d, 4);
	feed_all(c, &b);
	assert_true(no_reply(c));
	finish_job(l, 1);
	assert_int_equal(run_rdma(c, false, 8, 100), 1);
	rp = expect_reply(c, CN_OP_RETRIEVE, 1, CN_OK, &h);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal((int32_t)cn_get_le32(rp + 8 + 8 * i), i == 2 ? CN_OK : CN_E_NOENT);
	assert_memory_equal(r[2]->base, local, sizeof(local));
	assert_true(all_guard(r[0]->base, 1000 + GUARD_LEN));
	assert_int_equal(f->sstats[0].req_errors, 0);
	assert_int_equal(f->sstats[0].retrieve_l2_hits, 0);
	assert_int_equal(cn_l2_peer_get(l->l2, 0, &v), 0);
	assert_true(v.down);
	assert_int_equal(v.st.errors, 1);
	assert_int_equal(l2_stats(l).fills, 0);

	/* down: answered at once, no job, counted as skipped */
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_RETRIEVE, 2, d, 2);
	put_ping(&b, 3, "alive");
	feed_all(c, &b);
	rp = expect_reply(c, CN_OP_RETRIEVE, 2, CN_OK, &h);
	assert_int_equal((int32_t)cn_get_le32(rp + 8), CN_E_NOENT);
	assert_int_equal((int32_t)cn_get_le32(rp + 16), CN_E_NOENT);
	expect_pong(c, 3, "alive");
	assert_int_equal(f->sstats[0].l2_waits, 1);
	assert_int_equal(l2_stats(l).jobs_submitted, 1);
	assert_int_equal(cn_l2_peer_get(l->l2, 0, &v), 0);
	assert_int_equal(v.st.down_skips, 2);
	assert_true(cn_session_ops.idle(c->s));
	conn_close(&c, 0);
	l2_free(f, l);
	free(b.p);
	fix_free(f);
}

/*
 * The connection closes while the fetch is out: the job is orphaned and,
 * when it comes back, freed with its buffers (async_done() answers 0);
 * nothing is filled, pinned or reserved, and the node serves others.
 */
static void rdma_retrieve_l2_close_while_fetching(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct peer *p = peer_new("peer1", 64u << 10);
	struct l2fix *l = l2_new(f, "peer1", cn_tcp_ops.server_addr(p->srv), 64u << 10, 0);
	struct conn *c = conn_open_wake(f, CN_SESS_RDMA, &l->wake), *other;
	struct cn_key k[2];
	struct region *r = remote(f, 2 * 5000);
	struct desc d[2];
	uint8_t data[5000];
	struct bytes b = {0};
	struct cn_l1_info info;
	unsigned next = 5000;

	owned_keys(l, true, &next, k, 2);
	pattern(data, sizeof(data), 9);
	for (unsigned i = 0; i < 2; i++) {
		peer_put(p, &k[i], data, sizeof(data));
		d[i] = (struct desc){k[i], 5000, r->rkey, r->base + 5000 * i};
	}
	put_rdma_req(&b, CN_OP_RETRIEVE, 1, d, 2);
	put_ping(&b, 2, "never");
	feed_all(c, &b);
	assert_true(no_reply(c));
	conn_close(&c, -ECONNRESET);
	assert_int_equal(f->sstats[0].sessions_open, 0);
	finish_job(l, 0); /* orphaned: freed, its connection not touched */
	l1_info(f, &info);
	assert_int_equal(info.chunks, 0);
	assert_int_equal(info.pinned, 0);
	assert_int_equal(info.reserved, 0);
	assert_int_equal(l2_stats(l).fills, 0);
	assert_true(all_guard(r->base, 2 * 5000 + GUARD_LEN));
	/* another session fetches them fine */
	other = conn_open_wake(f, CN_SESS_RDMA, &l->wake);
	bytes_reset(&b);
	put_rdma_req(&b, CN_OP_RETRIEVE, 3, d, 2);
	feed_all(other, &b);
	finish_job(l, 1);
	assert_int_equal(run_rdma(other, false, 8, 100), 2);
	{
		struct cn_proto_hdr h;
		const uint8_t *rp = expect_reply(other, CN_OP_RETRIEVE, 3, CN_OK, &h);

		for (unsigned i = 0; i < 2; i++) {
			assert_int_equal((int32_t)cn_get_le32(rp + 8 + 8 * i), CN_OK);
			assert_memory_equal(r->base + 5000 * i, data, sizeof(data));
		}
	}
	assert_int_equal(f->sstats[0].retrieve_l2_hits, 2);
	conn_close(&other, 0);
	l2_free(f, l);
	peer_free(p);
	free(b.p);
	fix_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rdma_store_retrieve_round_trip),
		cmocka_unit_test(rdma_store_invisible_until_done),
		cmocka_unit_test(rdma_close_mid_store_discards),
		cmocka_unit_test(rdma_close_mid_retrieve_unpins),
		cmocka_unit_test(rdma_retrieve_cap_and_missing),
		cmocka_unit_test(rdma_pipelined_requests_wait_in_order),
		cmocka_unit_test(rdma_flag_refused_without_rdma),
		cmocka_unit_test(rdma_flag_refused_over_loopback),
		cmocka_unit_test(rdma_flag_on_other_opcodes),
		cmocka_unit_test(rdma_malformed_batches),
		cmocka_unit_test(rdma_pipelined_stores),
		cmocka_unit_test(rdma_pipelined_replies_in_order),
		cmocka_unit_test(rdma_pipelined_conflicts_wait),
		cmocka_unit_test(rdma_pipelined_barrier_delete),
		cmocka_unit_test(rdma_pipeline_request_bound),
		cmocka_unit_test(rdma_pipeline_byte_bound),
		cmocka_unit_test(rdma_close_with_requests_in_flight),
		cmocka_unit_test(rdma_retrieve_l2_fetch),
		cmocka_unit_test(rdma_retrieve_l2_refetch_big),
		cmocka_unit_test(rdma_retrieve_l2_keeps_order),
		cmocka_unit_test(rdma_retrieve_l2_peer_down),
		cmocka_unit_test(rdma_retrieve_l2_close_while_fetching),
	};

	if (cn_test_eal_init("test_session_rdma") < 0)
		return 1;
	return cmocka_run_group_tests_name("session_rdma", tests, NULL, NULL);
}
