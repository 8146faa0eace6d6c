/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Protocol session: see cn_session.h for the contract.
 *
 * Input goes through a staging buffer (rxb) while the session parses headers
 * and batch descriptors; once a STORE's payload starts and the staging buffer
 * is empty, rx_buf() points the transport straight at the reserved slab, so
 * payload bytes are copied at most once (only the few that arrived in the
 * same read as the header). Output is a FIFO of replies, each a short list
 * of iovecs (header, meta, then pinned slabs for RETRIEVE).
 *
 * CN_F_RDMA requests (sessions opened with CN_SESS_RDMA) carry no payload
 * bytes in the stream: the session parses a request's descriptors into a
 * struct rreq of its own, reserves (STORE) or pins (RETRIEVE) the slabs and
 * hands the transport one RDMA operation per slab through rdma_next(). The
 * started requests form a FIFO (rq_head..rq_tail); operations are handed out
 * and completed (rdma_done) in that order, so requests finish in it too: a
 * finished STORE commits at once (never before its bytes are in), a RETRIEVE
 * unpins. Meanwhile the session keeps parsing: another CN_F_RDMA request
 * starts at once unless it conflicts with one in flight (a shared key where
 * either is a STORE) or the bounds of cn_session.h are reached, in which
 * case it waits, parsed, in RX_WAIT; any other frame is a barrier, left
 * unparsed in the staging buffer until nothing is in flight. A RETRIEVE
 * whose keys miss in L1 also waits in RX_WAIT, once it may start, while
 * the L2 tier fetches them from their owner peers (see "L2" below).
 *
 * Reply order: an RDMA request's reply takes its place in the output FIFO
 * when the request starts, marked held; tx_iov() stops at the first held
 * entry, and finishing the request clears the mark. Error replies to later
 * requests queue behind it like any other.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cn_session.h"

#define RXB_SIZE	(64u << 10) /* > the largest meta block (8 + 1024 * 40) */
#define DISCARD_SIZE	(64u << 10)
#define TX_PAUSE_BYTES	(32u << 20) /* stop reading past this much queued output... */
#define TX_PAUSE_ENTS	512u	    /* ...or this many queued replies */

const struct cn_metric_desc cn_session_metric_desc[] = {CN_SESSION_METRICS(CN_METRIC_DESC)};
const unsigned cn_session_metric_count = 0 CN_SESSION_METRICS(CN_METRIC_COUNT);

/* struct cn_async.kind of the session's jobs */
enum { ASYNC_L2 = 0, ASYNC_GPU = 1 };

enum rx_state {
	RX_HDR,	    /* want a frame header */
	RX_META,    /* want meta_need bytes of the payload in rxb */
	RX_PAYLOAD, /* STORE payloads, item by item */
	RX_SKIP,    /* discard the rest of a refused request */
	RX_WAIT,    /* a parsed CN_F_RDMA request (wait_req) waits to start: read nothing */
	RX_DEAD,    /* fatal error queued: read nothing more */
};

/* One chunk of a STORE batch, or of a RETRIEVE batch with CN_F_RDMA. */
struct store_item {
	struct cn_key key;
	uint32_t len;	  /* STORE: chunk length; RETRIEVE: the requester's cap */
	int32_t status;
	bool reserved;	  /* STORE: ref is a reserved slab (commit or abort it) */
	bool pinned;	  /* RETRIEVE with CN_F_RDMA: ref is pinned (unpin it) */
	bool l2;	  /* RETRIEVE with CN_F_RDMA: fetched from its owner peer for this request */
	uint32_t rkey;	  /* CN_F_RDMA: the requester's memory, [addr, addr + len) */
	uint64_t addr;
	struct cn_l1_ref ref;
};

struct tx_ent {
	struct tx_ent *next;
	size_t total;	 /* bytes in iov[] */
	size_t sent;
	unsigned niov;
	unsigned nrefs;	 /* pinned chunks to unpin once sent */
	bool held;	 /* RDMA request not finished: send nothing from here on */
	uint8_t hdr[CN_PROTO_HDR_LEN];
	uint8_t *meta;	 /* points into the allocation */
	struct cn_l1_ref *refs;
	struct iovec *iov;
};

/*
 * One CN_F_RDMA STORE or RETRIEVE, from its parsed descriptors until its
 * last operation completed (or the connection closed). One allocation holds
 * the struct, the items and a sorted copy of the keys (for conflict checks);
 * the session owns it. @reply is queued (held) when the request starts and
 * is owned by the output FIFO from then on.
 */
struct rreq {
	struct rreq *next;
	uint64_t req_id;
	uint8_t opcode;	      /* CN_OP_STORE or CN_OP_RETRIEVE */
	uint32_t n;	      /* items */
	uint32_t ops;	      /* items holding a slab: one operation each */
	uint32_t cur;	      /* next item rdma_next() looks at */
	uint32_t given, done; /* operations handed out / completed */
	uint64_t bytes;	      /* descriptor lengths (STORE) or caps (RETRIEVE): the byte bound */
	bool l2_asked;	      /* RETRIEVE: its L1 misses went to the L2 tier (once per request) */
	struct tx_ent *reply;
	struct cn_key *sorted; /* the n keys in memcmp order */
	struct store_item it[];
};

struct sess {
	struct cn_session_ctx *ctx;
	struct cn_session_stats *st;
	unsigned core;
	char peer[64];

	enum rx_state state;
	struct cn_proto_hdr hdr;
	uint32_t meta_need;
	uint8_t *rxb;
	uint32_t rx_off, rx_len; /* unconsumed bytes are rxb[rx_off, rx_len) */
	bool rx_direct;		 /* last rx_buf() pointed outside rxb */
	uint64_t skip_left;
	uint8_t *discard;

	/*
	 * STORE in progress. store_n is the count the frame announced; nitems
	 * becomes non-zero only once every item is initialised and reservations
	 * begin, so close() and idle() never look at half-parsed descriptors.
	 */
	struct store_item *items;
	uint32_t items_cap, store_n, nitems, cur, cur_off;

	/*
	 * CN_F_RDMA requests in flight, oldest first: rq_n of them, naming
	 * rq_bytes. rq_next is the first whose operations are not all handed
	 * out; ops_out operations were handed out and not completed yet.
	 * wait_req is a parsed request waiting in RX_WAIT (not started: holds
	 * no slab). barrier: the staged header must wait until none is in
	 * flight.
	 */
	bool rdma; /* open() got CN_SESS_RDMA */
	struct rreq *rq_head, *rq_tail, *rq_next;
	unsigned rq_n;
	uint64_t rq_bytes;
	uint64_t ops_out;
	struct rreq *wait_req;
	bool barrier;

	struct tx_ent *tx_head, *tx_tail;
	size_t tx_bytes;
	unsigned tx_ents;

	/*
	 * L2 (async work on the L2 threads, see "L2" below). wake is the
	 * transport's completion path (NULL: no async work). l2_req is the
	 * RETRIEVE or LOOKUP waiting for peers: its reply is queued, held, and
	 * every later frame waits (a barrier) until it comes back. For a
	 * CN_F_RDMA RETRIEVE, l2_req is its fetch and the request itself waits,
	 * not started, in wait_req (RX_WAIT). jobs lists every job out (l2_req
	 * and write-through copies), to orphan at close.
	 */
	const struct cn_wake *wake;
	bool local_only; /* a peer node's session: L1 only, no L2 */
	struct cn_l2_job *l2_req;
	struct cn_l2_job *jobs;

	/*
	 * GPU (see "CN_F_GPU requests" below): the regions this connection
	 * registered, and the one CN_F_GPU request in flight (a barrier:
	 * nothing more is parsed until it finished).
	 */
	uint32_t *gpu_regions;
	uint32_t gpu_nregions, gpu_cap;
	struct gpu_req *gpu_req;
};

static void sess_process(struct sess *s);
static void rdma_store_begin(struct sess *s, const uint8_t *p);
static bool l2_retrieve(struct sess *s, struct tx_ent *e, uint32_t n, const struct cn_key *keys,
			uint32_t stride);
static bool l2_lookup(struct sess *s, struct tx_ent *e, uint32_t n, const struct cn_key *keys,
		      uint32_t prefix);
static void l2_write_through(struct sess *s, struct store_item *it, uint32_t n);
static void gpu_begin(struct sess *s, const uint8_t *p, uint32_t n);
static int gpu_nodev(struct sess *s);
static void do_gpu_register(struct sess *s, const uint8_t *p);
static void do_gpu_unregister(struct sess *s, const uint8_t *p);
static int gpu_async_done(struct cn_async *a);
static void gpu_close(struct sess *s);
static bool rreq_l2_fetch(struct sess *s, struct rreq *r);

/* ---- output ---- */

static struct tx_ent *tx_alloc(uint32_t meta_len, unsigned nrefs)
{
	unsigned niov = 2 + nrefs;
	size_t sz = sizeof(struct tx_ent) + niov * sizeof(struct iovec) +
		    nrefs * sizeof(struct cn_l1_ref) + meta_len;
	struct tx_ent *e = malloc(sz);

	if (e == NULL)
		return NULL;
	memset(e, 0, sizeof(*e));
	e->iov = (struct iovec *)(e + 1);
	e->refs = (struct cn_l1_ref *)(e->iov + niov);
	e->meta = (uint8_t *)(e->refs + nrefs);
	return e;
}

/* Append a reply to request @req_id to the output FIFO (its header is encoded now). */
static void tx_queue(struct sess *s, struct tx_ent *e, uint64_t req_id, uint8_t op, uint16_t flags,
		     int32_t status, uint32_t meta_len)
{
	struct cn_proto_hdr h;
	uint64_t body = meta_len;

	e->iov[0] = (struct iovec){e->hdr, CN_PROTO_HDR_LEN};
	e->iov[1] = (struct iovec){e->meta, meta_len};
	e->niov = 2;
	for (unsigned i = 0; i < e->nrefs; i++) {
		e->iov[e->niov++] = (struct iovec){e->refs[i].data, e->refs[i].len};
		body += e->refs[i].len;
	}
	cn_proto_hdr_init(&h, op, (uint16_t)(flags | CN_F_RESPONSE), req_id, (uint32_t)body,
			  status);
	cn_proto_hdr_encode(&h, e->hdr);
	e->total = CN_PROTO_HDR_LEN + body;
	if (s->tx_tail)
		s->tx_tail->next = e;
	else
		s->tx_head = e;
	s->tx_tail = e;
	s->tx_bytes += e->total;
	s->tx_ents++;
}

/* The reply to the request being parsed. */
static void tx_push(struct sess *s, struct tx_ent *e, uint8_t op, uint16_t flags, int32_t status,
		    uint32_t meta_len)
{
	tx_queue(s, e, s->hdr.req_id, op, flags, status, meta_len);
}

static void tx_free(struct sess *s, struct tx_ent *e)
{
	for (unsigned i = 0; i < e->nrefs; i++)
		cn_engine_unpin(s->ctx->engine, s->core, &e->refs[i]);
	free(e);
}

/*
 * Queue a reply that carries only a message: a request-level error, or with
 * CN_F_CLOSE a fatal one. If even that allocation fails the connection is
 * closed without a reply (returns -ENOMEM).
 */
static int reply_msg(struct sess *s, uint8_t op, uint16_t flags, int32_t status, const char *fmt,
		     ...) __attribute__((format(printf, 5, 6)));
static int reply_msg(struct sess *s, uint8_t op, uint16_t flags, int32_t status, const char *fmt,
		     ...)
{
	char msg[CN_PROTO_MAX_ERRMSG];
	struct tx_ent *e;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	e = tx_alloc((uint32_t)n, 0);
	if (e == NULL)
		return -ENOMEM;
	memcpy(e->meta, msg, (size_t)n);
	tx_push(s, e, op, flags, status, (uint32_t)n);
	return 0;
}

/* A request-level error: reply, then skip what is left of the request's payload. */
static void req_error(struct sess *s, uint64_t consumed, int32_t status, const char *what)
{
	CN_STAT_INC(s->st, req_errors);
	if (reply_msg(s, s->hdr.opcode, 0, status, "%s: %s: %s", cn_op_name(s->hdr.opcode), what,
		      cn_status_str(status)) < 0) {
		s->state = RX_DEAD;
		return;
	}
	s->skip_left = s->hdr.payload_len - consumed;
	s->state = s->skip_left ? RX_SKIP : RX_HDR;
}

/* A fatal error: queue an ERROR frame with CN_F_CLOSE and stop reading. */
static int fatal(struct sess *s, int32_t status, const char *what)
{
	CN_STAT_INC(s->st, frames_bad);
	reply_msg(s, CN_OP_ERROR, CN_F_CLOSE, status, "%s: %s (closing connection)", what,
		  cn_status_str(status));
	s->state = RX_DEAD;
	return -EPROTO;
}

/* ---- requests ---- */

/*
 * A batch reply's output entry: meta = u32 n, u32 0, then n entries of
 * @per_key bytes; room for @nrefs pinned chunks. On allocation failure the
 * connection is given up (RX_DEAD) and NULL returned.
 */
static struct tx_ent *batch_reply(struct sess *s, uint32_t n, uint32_t per_key, unsigned nrefs)
{
	struct tx_ent *e = tx_alloc(CN_PROTO_BATCH_HDR + per_key * n, nrefs);

	if (e == NULL) {
		s->state = RX_DEAD;
		return NULL;
	}
	cn_put_le32(e->meta, n);
	cn_put_le32(e->meta + 4, 0);
	return e;
}

static void do_hello(struct sess *s, const uint8_t *p)
{
	const char *id = s->ctx->node_id;
	size_t idlen = strnlen(id, CN_PROTO_MAX_NAME);
	struct cn_l1_info info;
	struct tx_ent *e;
	uint16_t vmin = cn_get_le16(p), vmax = cn_get_le16(p + 2);
	uint16_t nlen = cn_get_le16(p + 4);

	CN_STAT_INC(s->st, hello_reqs);
	if (8u + nlen != s->hdr.payload_len || nlen > CN_PROTO_MAX_NAME) {
		req_error(s, s->hdr.payload_len, CN_E_INVAL, "name length does not match the frame");
		return;
	}
	if (vmin > CN_PROTO_VERSION || vmax < CN_PROTO_VERSION) {
		req_error(s, s->hdr.payload_len, CN_E_VERSION, "this node speaks version 1");
		return;
	}
	/* another node's L2 client: serve it from L1 only, so peer requests never recurse */
	if (nlen >= sizeof(CN_L2_PEER_NAME_PREFIX) - 1 &&
	    memcmp(p + 8, CN_L2_PEER_NAME_PREFIX, sizeof(CN_L2_PEER_NAME_PREFIX) - 1) == 0 &&
	    !s->local_only) {
		s->local_only = true;
		CN_STAT_INC(s->st, peer_sessions);
	}
	cn_l1_get_info(cn_engine_l1(s->ctx->engine), &info);
	e = tx_alloc((uint32_t)(32 + idlen), 0);
	if (e == NULL) {
		s->state = RX_DEAD;
		return;
	}
	cn_put_le16(e->meta + 0, CN_PROTO_VERSION);
	cn_put_le16(e->meta + 2, (uint16_t)idlen);
	cn_put_le32(e->meta + 4, s->ctx->max_keys);
	cn_put_le32(e->meta + 8, (uint32_t)cn_engine_max_chunk(s->ctx->engine));
	cn_put_le32(e->meta + 12, 0);
	cn_put_le64(e->meta + 16, s->ctx->max_frame);
	cn_put_le64(e->meta + 24, info.capacity);
	memcpy(e->meta + 32, id, idlen);
	tx_push(s, e, CN_OP_HELLO, 0, CN_OK, (uint32_t)(32 + idlen));
	s->state = RX_HDR;
}

static void do_ping(struct sess *s, const uint8_t *p)
{
	struct tx_ent *e = tx_alloc(s->hdr.payload_len, 0);

	CN_STAT_INC(s->st, ping_reqs);
	if (e == NULL) {
		s->state = RX_DEAD;
		return;
	}
	memcpy(e->meta, p, s->hdr.payload_len);
	tx_push(s, e, CN_OP_PING, 0, CN_OK, s->hdr.payload_len);
	s->state = RX_HDR;
}

static void do_status(struct sess *s)
{
	size_t len = 0;
	char *json;
	struct tx_ent *e;

	CN_STAT_INC(s->st, status_reqs);
	json = s->ctx->status_json ? s->ctx->status_json(s->ctx->status_arg, &len) : NULL;
	if (json == NULL) {
		req_error(s, 0, CN_E_INTERNAL, "status unavailable");
		return;
	}
	e = tx_alloc((uint32_t)len, 0);
	if (e == NULL) {
		free(json);
		s->state = RX_DEAD;
		return;
	}
	memcpy(e->meta, json, len);
	free(json);
	tx_push(s, e, CN_OP_STATUS, 0, CN_OK, (uint32_t)len);
	s->state = RX_HDR;
}

static void do_lookup(struct sess *s, uint32_t n, const struct cn_key *keys)
{
	struct tx_ent *e = batch_reply(s, n, 1, 0);
	uint32_t prefix = 0;

	if (e == NULL)
		return;
	cn_engine_lookup(s->ctx->engine, s->core, keys, n, &prefix, e->meta + 8);
	cn_put_le32(e->meta + 4, prefix);
	CN_STAT_INC(s->st, lookup_reqs);
	CN_STAT_ADD(s->st, lookup_keys, n);
	s->state = RX_HDR;
	if (prefix < n && l2_lookup(s, e, n, keys, prefix))
		return; /* the prefix is counted when the peers answered */
	CN_STAT_ADD(s->st, lookup_prefix_keys, prefix);
	tx_push(s, e, CN_OP_LOOKUP, 0, CN_OK, 8 + n);
}

static void do_retrieve(struct sess *s, uint32_t n, const struct cn_key *keys)
{
	struct tx_ent *e = batch_reply(s, n, CN_PROTO_RETR_DESC, n);
	uint64_t body = 8 + 8ull * n;
	uint32_t hits = 0;

	if (e == NULL)
		return;
	for (uint32_t i = 0; i < n; i++) {
		struct cn_l1_ref ref;
		int r = cn_engine_retrieve_pin(s->ctx->engine, s->core, &keys[i], &ref);
		uint8_t *d = e->meta + 8 + 8 * i;

		if (r == 0 && body + ref.len > s->ctx->max_frame) {
			cn_engine_unpin(s->ctx->engine, s->core, &ref);
			r = -E2BIG;
		}
		if (r == 0) {
			e->refs[e->nrefs++] = ref;
			body += ref.len;
			hits++;
		}
		cn_put_le32(d, (uint32_t)(r == 0 ? CN_OK : cn_status_from_errno(r)));
		cn_put_le32(d + 4, r == 0 ? ref.len : 0);
	}
	CN_STAT_INC(s->st, retrieve_reqs);
	CN_STAT_ADD(s->st, retrieve_keys, n);
	CN_STAT_ADD(s->st, retrieve_hits, hits);
	CN_STAT_ADD(s->st, retrieve_bytes, body - 8 - 8ull * n);
	s->state = RX_HDR;
	if (hits < n && l2_retrieve(s, e, n, keys, CN_PROTO_RETR_DESC))
		return; /* held until the peers answered */
	tx_push(s, e, CN_OP_RETRIEVE, 0, CN_OK, 8 + 8 * n);
}

/*
 * PREFETCH: keys in L1 answer CN_OK at once; the others are fetched from
 * their owners into L1 (as a RETRIEVE miss is) and answer CN_OK once there.
 */
static void do_prefetch(struct sess *s, uint32_t n, const struct cn_key *keys)
{
	struct tx_ent *e = batch_reply(s, n, 4, 0);
	struct cn_l1 *l1 = cn_engine_l1(s->ctx->engine);
	uint32_t have = 0;

	if (e == NULL)
		return;
	for (uint32_t i = 0; i < n; i++) {
		bool in = cn_l1_contains(l1, s->core, &keys[i]);

		cn_put_le32(e->meta + 8 + 4 * i, (uint32_t)(in ? CN_OK : CN_E_NOENT));
		have += in;
	}
	CN_STAT_INC(s->st, prefetch_reqs);
	CN_STAT_ADD(s->st, prefetch_keys, n);
	CN_STAT_ADD(s->st, prefetch_l1_keys, have);
	s->state = RX_HDR;
	if (have < n && l2_retrieve(s, e, n, keys, 4))
		return;
	tx_push(s, e, CN_OP_PREFETCH, 0, CN_OK, 8 + 4 * n);
}

static void do_delete(struct sess *s, uint32_t n, const struct cn_key *keys)
{
	struct tx_ent *e = batch_reply(s, n, 4, 0);
	uint32_t done = 0;

	if (e == NULL)
		return;
	for (uint32_t i = 0; i < n; i++) {
		int r = cn_engine_delete(s->ctx->engine, s->core, &keys[i]);
		cn_put_le32(e->meta + 8 + 4 * i, (uint32_t)cn_status_from_errno(r));
		done += r == 0;
	}
	CN_STAT_INC(s->st, delete_reqs);
	CN_STAT_ADD(s->st, delete_keys, done);
	tx_push(s, e, CN_OP_DELETE, 0, CN_OK, 8 + 4 * n);
	s->state = RX_HDR;
}

static int cmp_key_idx(const void *a, const void *b, void *arg)
{
	const struct store_item *it = arg;
	return memcmp(&it[*(const uint32_t *)a].key, &it[*(const uint32_t *)b].key, CN_KEY_LEN);
}

/* true if two of the first @n items share a key (n <= max_keys: sort an index array). */
static bool store_has_dup(struct sess *s, uint32_t n)
{
	uint32_t idx[CN_PROTO_MAX_KEYS];

	for (uint32_t i = 0; i < n; i++)
		idx[i] = i;
	qsort_r(idx, n, sizeof(idx[0]), cmp_key_idx, s->items);
	for (uint32_t i = 1; i < n; i++)
		if (memcmp(&s->items[idx[i - 1]].key, &s->items[idx[i]].key, CN_KEY_LEN) == 0)
			return true;
	return false;
}

/* Make room for @n items; 0 or -ENOMEM. */
static int items_reserve(struct sess *s, uint32_t n)
{
	struct store_item *it;

	if (n <= s->items_cap)
		return 0;
	it = realloc(s->items, n * sizeof(*it));
	if (it == NULL)
		return -ENOMEM;
	s->items = it;
	s->items_cap = n;
	return 0;
}

/*
 * STORE descriptors are in; validate them all, then reserve slabs. Inline,
 * the payloads follow in the stream (RX_PAYLOAD); a CN_F_RDMA batch (the
 * count step has checked the frame holds exactly the descriptors) goes to
 * rdma_store_begin().
 */
static void store_begin(struct sess *s, const uint8_t *p)
{
	uint64_t sum = 0;
	uint64_t max_chunk = cn_engine_max_chunk(s->ctx->engine);
	uint32_t n = s->store_n;
	uint32_t meta = CN_PROTO_BATCH_HDR + n * CN_PROTO_STORE_DESC;

	if (s->hdr.flags & CN_F_RDMA) {
		rdma_store_begin(s, p);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *d = p + CN_PROTO_BATCH_HDR + i * CN_PROTO_STORE_DESC;
		struct store_item *it = &s->items[i];

		memcpy(&it->key, d, CN_KEY_LEN);
		it->len = cn_get_le32(d + 32);
		it->rkey = 0;
		it->addr = 0;
		it->reserved = false;
		it->pinned = false;
		it->status = CN_OK;
		sum += it->len;
		if (it->len == 0) {
			req_error(s, meta, CN_E_INVAL, "zero-length chunk in batch");
			return;
		}
		if (it->len > max_chunk) {
			req_error(s, meta, CN_E_TOOBIG, "chunk larger than the node's max chunk");
			return;
		}
	}
	if (meta + sum != s->hdr.payload_len) {
		req_error(s, meta, CN_E_INVAL, "chunk lengths do not add up to the frame length");
		return;
	}
	if (store_has_dup(s, n)) {
		req_error(s, meta, CN_E_DUP, "duplicate key in batch");
		return;
	}
	CN_STAT_INC(s->st, store_reqs);
	CN_STAT_ADD(s->st, store_keys, n);
	s->nitems = n; /* every item is initialised: from here on they may hold slabs */
	for (uint32_t i = 0; i < n; i++) {
		struct store_item *it = &s->items[i];
		int r = cn_engine_store_begin(s->ctx->engine, s->core, &it->key, it->len, &it->ref);

		if (r == 0)
			it->reserved = true;
		else
			it->status = cn_status_from_errno(r);
	}
	s->cur = 0;
	s->cur_off = 0;
	s->state = RX_PAYLOAD;
}

/* Every payload byte is in: commit, reply. */
static void store_finish(struct sess *s)
{
	uint32_t n = s->nitems;
	struct tx_ent *e = batch_reply(s, n, 4, 0);

	for (uint32_t i = 0; i < n; i++) {
		struct store_item *it = &s->items[i];

		if (it->reserved) {
			int r = cn_engine_store_commit(s->ctx->engine, s->core, &it->ref);
			it->reserved = false;
			it->status = r == 0 ? CN_OK : cn_status_from_errno(r);
		}
		if (it->status == CN_OK) {
			CN_STAT_INC(s->st, store_ok);
			CN_STAT_ADD(s->st, store_bytes, it->len);
		} else {
			CN_STAT_INC(s->st, store_failed);
		}
		if (e)
			cn_put_le32(e->meta + 8 + 4 * i, (uint32_t)it->status);
	}
	l2_write_through(s, s->items, n);
	s->nitems = 0;
	if (e == NULL)
		return;
	tx_push(s, e, CN_OP_STORE, 0, CN_OK, 8 + 4 * n);
	s->state = RX_HDR;
}

/*
 * The connection is gone: abort every chunk of @it[0..n) still reserved
 * (mid-payload, or RDMA READs outstanding) and unpin every chunk an RDMA
 * WRITE still held.
 */
static void items_release(struct sess *s, struct store_item *it, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (it[i].reserved) {
			cn_engine_store_abort(s->ctx->engine, s->core, &it[i].ref);
			it[i].reserved = false;
			CN_STAT_INC(s->st, store_discarded);
		}
		if (it[i].pinned) {
			cn_engine_unpin(s->ctx->engine, s->core, &it[i].ref);
			it[i].pinned = false;
		}
	}
}

/* ---- CN_F_RDMA requests ---- */

static int cmp_key(const void *a, const void *b)
{
	return memcmp(a, b, CN_KEY_LEN);
}

/*
 * The request being parsed has CN_F_RDMA and @n descriptors {key, len or
 * cap, rkey, addr} at @p (after its batch header). Copy them into a new
 * struct rreq, nothing reserved or pinned yet. NULL when out of memory.
 */
static struct rreq *rreq_parse(struct sess *s, const uint8_t *p, uint32_t n)
{
	size_t per = sizeof(struct store_item) + sizeof(struct cn_key);
	struct rreq *r = malloc(sizeof(*r) + n * per);

	if (r == NULL)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->req_id = s->hdr.req_id;
	r->opcode = s->hdr.opcode;
	r->n = n;
	r->sorted = (struct cn_key *)(r->it + n);
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *d = p + CN_PROTO_BATCH_HDR + i * CN_PROTO_RDMA_DESC;
		struct store_item *it = &r->it[i];

		memcpy(&it->key, d, CN_KEY_LEN);
		it->len = cn_get_le32(d + 32);
		it->rkey = cn_get_le32(d + 36);
		it->addr = cn_get_le64(d + 40);
		it->reserved = false;
		it->pinned = false;
		it->l2 = false;
		it->status = CN_OK;
		r->sorted[i] = it->key;
		r->bytes += it->len;
	}
	qsort(r->sorted, n, sizeof(r->sorted[0]), cmp_key);
	return r;
}

/* true if the sorted key sets of @a and @b meet. */
static bool keys_meet(const struct rreq *a, const struct rreq *b)
{
	uint32_t i = 0, j = 0;

	while (i < a->n && j < b->n) {
		int c = memcmp(&a->sorted[i], &b->sorted[j], CN_KEY_LEN);

		if (c == 0)
			return true;
		if (c < 0)
			i++;
		else
			j++;
	}
	return false;
}

/*
 * May @r start now? Always when nothing is in flight. Else only within the
 * bounds, and not if it shares a key with an in-flight request where either
 * is a STORE: a RETRIEVE must see the bytes of an earlier STORE, a STORE
 * must not change what an earlier request works on. Two RETRIEVEs of one
 * key may overlap.
 */
static bool rreq_may_start(const struct sess *s, const struct rreq *r)
{
	if (s->rq_head == NULL)
		return true;
	if (s->rq_n >= CN_SESSION_RDMA_MAX_REQS ||
	    s->rq_bytes + r->bytes > CN_SESSION_RDMA_MAX_BYTES)
		return false;
	for (const struct rreq *q = s->rq_head; q != NULL; q = q->next)
		if ((r->opcode == CN_OP_STORE || q->opcode == CN_OP_STORE) && keys_meet(r, q))
			return false;
	return true;
}

/*
 * Every operation of @r completed (or it had none), and every earlier
 * request has finished: STORE commits its chunks (visible together now) and
 * fills in the statuses, RETRIEVE unpins. The reply, queued when @r started,
 * is released; it leaves once the replies before it have. Frees @r.
 */
static void rreq_finish(struct sess *s, struct rreq *r)
{
	uint8_t *meta = r->reply->meta + CN_PROTO_BATCH_HDR;
	uint64_t bytes = 0;
	uint32_t hits = 0, l2hits = 0;

	for (uint32_t i = 0; i < r->n; i++) {
		struct store_item *it = &r->it[i];

		if (r->opcode == CN_OP_RETRIEVE) {
			if (it->pinned) {
				hits++;
				l2hits += it->l2;
				bytes += it->ref.len;
				cn_engine_unpin(s->ctx->engine, s->core, &it->ref);
				it->pinned = false;
			}
			continue;
		}
		if (it->reserved) {
			int rc = cn_engine_store_commit(s->ctx->engine, s->core, &it->ref);

			it->reserved = false;
			it->status = rc == 0 ? CN_OK : cn_status_from_errno(rc);
		}
		if (it->status == CN_OK) {
			CN_STAT_INC(s->st, store_ok);
			CN_STAT_ADD(s->st, store_bytes, it->len);
		} else {
			CN_STAT_INC(s->st, store_failed);
		}
		cn_put_le32(meta + 4 * i, (uint32_t)it->status);
	}
	if (r->opcode == CN_OP_STORE)
		l2_write_through(s, r->it, r->n);
	if (r->opcode == CN_OP_RETRIEVE) {
		CN_STAT_ADD(s->st, retrieve_hits, hits);
		CN_STAT_ADD(s->st, retrieve_l2_hits, l2hits);
		CN_STAT_ADD(s->st, retrieve_bytes, bytes);
	}
	r->reply->held = false;
	free(r);
}

/*
 * Take the slab of one STORE (reserve) or RETRIEVE (pin) item of an RDMA or
 * GPU request and note its status (reserved / pinned say whether it holds
 * a slab); a RETRIEVE's reply entry at @d gets {status, len} now (a hit over
 * the cap is CN_E_TOOBIG with its length, and unpinned). A STORE's status
 * goes into its reply when it finishes.
 */
static void item_claim(struct sess *s, struct store_item *it, bool store, uint8_t *d)
{
	int rc;

	if (store) {
		rc = cn_engine_store_begin(s->ctx->engine, s->core, &it->key, it->len, &it->ref);
		it->reserved = rc == 0;
		it->status = cn_status_from_errno(rc);
		return;
	}
	rc = cn_engine_retrieve_pin(s->ctx->engine, s->core, &it->key, &it->ref);
	cn_put_le32(d + 4, rc == 0 ? it->ref.len : 0);
	if (rc == 0 && it->ref.len > it->len) {
		cn_engine_unpin(s->ctx->engine, s->core, &it->ref);
		rc = -E2BIG; /* len stays: the requester learns the size it needs */
	}
	it->pinned = rc == 0;
	it->status = cn_status_from_errno(rc);
	cn_put_le32(d, (uint32_t)it->status);
}

/*
 * Start @r: queue its reply (held), reserve (STORE) or pin (RETRIEVE) its
 * slabs and put it in flight, so rdma_next() hands out one operation per
 * slab. A RETRIEVE hit that does not fit its cap is unpinned at once and
 * answered CN_E_TOOBIG with its length; the statuses of a RETRIEVE are
 * known now, those of a STORE when it finishes. A request that got no slab
 * finishes at once (its reply still waits for the earlier ones).
 */
static void rreq_start(struct sess *s, struct rreq *r)
{
	bool store = r->opcode == CN_OP_STORE;
	uint32_t per = store ? 4 : CN_PROTO_RETR_DESC;
	struct tx_ent *e = batch_reply(s, r->n, per, 0);

	if (e == NULL) {
		free(r);
		return;
	}
	if (store) {
		CN_STAT_INC(s->st, store_reqs);
		CN_STAT_ADD(s->st, store_keys, r->n);
		CN_STAT_INC(s->st, rdma_store_reqs);
	} else {
		CN_STAT_INC(s->st, retrieve_reqs);
		CN_STAT_INC(s->st, rdma_retrieve_reqs);
		CN_STAT_ADD(s->st, retrieve_keys, r->n);
	}
	for (uint32_t i = 0; i < r->n; i++) {
		item_claim(s, &r->it[i], store, e->meta + CN_PROTO_BATCH_HDR + per * i);
		r->ops += r->it[i].reserved || r->it[i].pinned;
	}
	r->reply = e;
	e->held = true;
	tx_queue(s, e, r->req_id, r->opcode, 0, CN_OK, CN_PROTO_BATCH_HDR + per * r->n);
	s->state = RX_HDR;
	if (r->ops == 0) {
		rreq_finish(s, r);
		return;
	}
	if (s->rq_tail)
		s->rq_tail->next = r;
	else
		s->rq_head = r;
	s->rq_tail = r;
	if (s->rq_next == NULL)
		s->rq_next = r;
	s->rq_n++;
	s->rq_bytes += r->bytes;
}

/*
 * @r may start now (rreq_may_start()). A RETRIEVE with keys missing in L1
 * that an up peer owns first goes to the L2 tier (rreq_l2_fetch()): it then
 * waits in RX_WAIT, not started (no slab pinned, no reply queued), exactly
 * as a request waiting on a conflict does, and async_done() starts it once
 * the fetched chunks are in L1. Else it starts now.
 */
static void rreq_launch(struct sess *s, struct rreq *r)
{
	if (rreq_l2_fetch(s, r)) {
		s->wait_req = r;
		s->state = RX_WAIT;
		return;
	}
	rreq_start(s, r);
}

/* A parsed, valid CN_F_RDMA request: launch it, or let it wait in RX_WAIT. */
static void rreq_submit(struct sess *s, struct rreq *r)
{
	if (rreq_may_start(s, r)) {
		rreq_launch(s, r);
		return;
	}
	s->wait_req = r;
	s->state = RX_WAIT;
}

/*
 * STORE with CN_F_RDMA: store_n descriptors at @p, and the frame holds
 * exactly them (checked at the count step). Validated as an inline STORE
 * is, all before anything is reserved.
 */
static void rdma_store_begin(struct sess *s, const uint8_t *p)
{
	uint64_t max_chunk = cn_engine_max_chunk(s->ctx->engine);
	uint32_t n = s->store_n;
	uint32_t meta = CN_PROTO_BATCH_HDR + n * CN_PROTO_RDMA_DESC;
	struct rreq *r = rreq_parse(s, p, n);

	if (r == NULL) {
		req_error(s, meta, CN_E_BUSY, "out of memory");
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (r->it[i].len == 0) {
			req_error(s, meta, CN_E_INVAL, "zero-length chunk in batch");
			goto refused;
		}
		if (r->it[i].len > max_chunk) {
			req_error(s, meta, CN_E_TOOBIG, "chunk larger than the node's max chunk");
			goto refused;
		}
	}
	for (uint32_t i = 1; i < n; i++) {
		if (memcmp(&r->sorted[i - 1], &r->sorted[i], CN_KEY_LEN) == 0) {
			req_error(s, meta, CN_E_DUP, "duplicate key in batch");
			goto refused;
		}
	}
	rreq_submit(s, r);
	return;
refused:
	free(r);
}

/*
 * RETRIEVE with CN_F_RDMA: n descriptors {key, cap, rkey, addr} at @p (the
 * count was checked against the frame). Repeated keys are allowed.
 */
static void rdma_retrieve_begin(struct sess *s, uint32_t n, const uint8_t *p)
{
	struct rreq *r = rreq_parse(s, p, n);

	if (r == NULL) {
		req_error(s, s->hdr.payload_len, CN_E_BUSY, "out of memory");
		return;
	}
	rreq_submit(s, r);
}

/*
 * While RDMA requests are in flight, may the frame whose header is at @raw
 * be parsed? Only a well-formed STORE/RETRIEVE with CN_F_RDMA that on_header()
 * accepts without a fatal error: its errors, if any, are request-level and
 * their replies queue in order. Anything else (another opcode, a header
 * on_header() would refuse) waits until nothing is in flight.
 */
static bool hdr_pipelines(const struct sess *s, const uint8_t *raw)
{
	struct cn_proto_hdr h;

	if (!s->rdma || cn_proto_hdr_decode(raw, &h) != CN_OK)
		return false;
	if ((h.flags & (CN_F_RESPONSE | CN_F_RDMA)) != CN_F_RDMA ||
	    h.payload_len > s->ctx->max_frame)
		return false;
	if (h.opcode == CN_OP_STORE)
		return true;
	return h.opcode == CN_OP_RETRIEVE &&
	       h.payload_len <= CN_PROTO_BATCH_HDR + s->ctx->max_keys * CN_PROTO_RDMA_DESC;
}

/* Advance the current STORE item by @n payload bytes (already placed). */
static void store_advance(struct sess *s, uint32_t n)
{
	s->cur_off += n;
	while (s->cur < s->nitems && s->cur_off == s->items[s->cur].len) {
		s->cur++;
		s->cur_off = 0;
	}
	if (s->cur == s->nitems)
		store_finish(s);
}

/* Where the current STORE item's next bytes go: its slab, or the discard buffer. */
static uint8_t *store_target(struct sess *s, uint32_t *room)
{
	struct store_item *it = &s->items[s->cur];
	uint32_t left = it->len - s->cur_off;

	if (it->reserved) {
		*room = left;
		return (uint8_t *)it->ref.data + s->cur_off;
	}
	*room = left < DISCARD_SIZE ? left : DISCARD_SIZE;
	return s->discard;
}

/*
 * A header is in. Decide what the payload is: meta to collect, a refusal to
 * skip, or a fatal error. Per-op payload bounds are checked here so that no
 * request can make the session buffer more than RXB_SIZE bytes. CN_F_RDMA is
 * checked after them: it is a request-level error on an opcode other than
 * STORE/RETRIEVE, or on a session whose transport runs no RDMA.
 */
static int on_header(struct sess *s, const uint8_t *raw)
{
	enum cn_status st = cn_proto_hdr_decode(raw, &s->hdr);
	uint32_t plen;
	uint32_t keys_max;

	if (st != CN_OK) {
		if (s->hdr.magic != CN_PROTO_MAGIC)
			s->hdr.req_id = 0;
		return fatal(s, st, st == CN_E_VERSION ? "unsupported protocol version"
			     : st == CN_E_TOOBIG	  ? "frame length over the limit"
							  : "bad frame header");
	}
	if (s->hdr.flags & CN_F_RESPONSE)
		return fatal(s, CN_E_PROTO, "reply frame sent to the node");
	CN_STAT_INC(s->st, frames_rx);
	plen = s->hdr.payload_len;
	keys_max = CN_PROTO_BATCH_HDR +
		   s->ctx->max_keys *
			   (s->hdr.flags & (CN_F_RDMA | CN_F_GPU) ? CN_PROTO_RDMA_DESC : CN_KEY_LEN);
	if (plen > s->ctx->max_frame)
		return fatal(s, CN_E_TOOBIG, "frame length over the node's limit");
	switch (s->hdr.opcode) {
	case CN_OP_HELLO:
		if (plen < 8 || plen > 8 + CN_PROTO_MAX_NAME)
			return fatal(s, CN_E_TOOBIG, "HELLO payload length out of range");
		s->meta_need = plen;
		break;
	case CN_OP_PING:
		if (plen > CN_PROTO_MAX_PING)
			return fatal(s, CN_E_TOOBIG, "PING payload over 4096 bytes");
		s->meta_need = plen;
		break;
	case CN_OP_STATUS:
		if (plen != 0)
			return fatal(s, CN_E_TOOBIG, "STATUS takes no payload");
		s->meta_need = 0;
		break;
	case CN_OP_LOOKUP:
	case CN_OP_RETRIEVE:
	case CN_OP_DELETE:
	case CN_OP_PREFETCH:
		if (plen > keys_max)
			return fatal(s, CN_E_TOOBIG, "key batch over the node's max keys");
		s->meta_need = plen;
		break;
	case CN_OP_STORE:
		if (plen < CN_PROTO_BATCH_HDR) {
			req_error(s, 0, CN_E_INVAL, "STORE payload shorter than its batch header");
			return 0;
		}
		s->meta_need = CN_PROTO_BATCH_HDR; /* the count first, then the descriptors */
		s->store_n = 0;
		break;
	case CN_OP_GPU_REGISTER:
	case CN_OP_GPU_UNREGISTER:
		if (!cn_gpu_present(s->ctx->gpu))
			return gpu_nodev(s);
		if (plen != (s->hdr.opcode == CN_OP_GPU_REGISTER ? CN_PROTO_GPU_REG_LEN
								  : CN_PROTO_BATCH_HDR)) {
			req_error(s, 0, CN_E_INVAL, "payload length is not that of the opcode");
			return 0;
		}
		s->meta_need = plen;
		break;
	default:
		req_error(s, 0, CN_E_OPCODE, "unknown opcode");
		return 0;
	}
	if (s->hdr.flags & CN_F_GPU) {
		if (s->hdr.opcode != CN_OP_STORE && s->hdr.opcode != CN_OP_RETRIEVE) {
			req_error(s, 0, CN_E_INVAL,
				  "CN_F_GPU on an opcode other than STORE/RETRIEVE");
			return 0;
		}
		if (s->hdr.flags & CN_F_RDMA) {
			req_error(s, 0, CN_E_INVAL, "CN_F_GPU and CN_F_RDMA together");
			return 0;
		}
		if (!cn_gpu_present(s->ctx->gpu))
			return gpu_nodev(s);
		if (s->wake == NULL) {
			req_error(s, 0, CN_E_INVAL, "GPU requests on a transport without completions");
			return 0;
		}
	}
	if (s->hdr.flags & CN_F_RDMA) {
		if (s->hdr.opcode != CN_OP_STORE && s->hdr.opcode != CN_OP_RETRIEVE) {
			req_error(s, 0, CN_E_INVAL,
				  "CN_F_RDMA on an opcode other than STORE/RETRIEVE");
			return 0;
		}
		if (!s->rdma) {
			req_error(s, 0, CN_E_INVAL, "RDMA descriptors on a transport without RDMA");
			return 0;
		}
	}
	s->state = RX_META;
	return 0;
}

/*
 * Check a key batch (LOOKUP/RETRIEVE/DELETE; RETRIEVE with CN_F_RDMA has
 * 48-byte descriptors instead of keys) and run it.
 */
static void on_key_batch(struct sess *s, const uint8_t *p)
{
	/* only RETRIEVE gets here with CN_F_RDMA or CN_F_GPU (both: 48-byte descriptors) */
	bool rdma = s->hdr.flags & (CN_F_RDMA | CN_F_GPU);
	uint32_t plen = s->hdr.payload_len;
	uint32_t n = plen >= 8 ? cn_get_le32(p) : 0;
	uint64_t want = CN_PROTO_BATCH_HDR + (uint64_t)n * (rdma ? CN_PROTO_RDMA_DESC : CN_KEY_LEN);
	const struct cn_key *keys = (const struct cn_key *)(p + 8);

	if (plen < 8 || n == 0 || n > s->ctx->max_keys || plen != want) {
		req_error(s, plen, n > s->ctx->max_keys ? CN_E_TOOBIG : CN_E_INVAL,
			  rdma ? "descriptor count does not match the frame (or is 0)"
			       : "key count does not match the frame (or is 0)");
		return;
	}
	switch (s->hdr.opcode) {
	case CN_OP_LOOKUP:
		do_lookup(s, n, keys);
		break;
	case CN_OP_RETRIEVE:
		if (s->hdr.flags & CN_F_GPU)
			gpu_begin(s, p, n);
		else if (rdma)
			rdma_retrieve_begin(s, n, p);
		else
			do_retrieve(s, n, keys);
		break;
	case CN_OP_PREFETCH:
		do_prefetch(s, n, keys);
		break;
	default:
		do_delete(s, n, keys);
		break;
	}
}

/* meta_need bytes of payload are at @p. */
static void on_meta(struct sess *s, const uint8_t *p)
{
	switch (s->hdr.opcode) {
	case CN_OP_HELLO:
		do_hello(s, p);
		return;
	case CN_OP_PING:
		do_ping(s, p);
		return;
	case CN_OP_STATUS:
		do_status(s);
		return;
	case CN_OP_GPU_REGISTER:
		do_gpu_register(s, p);
		return;
	case CN_OP_GPU_UNREGISTER:
		do_gpu_unregister(s, p);
		return;
	case CN_OP_STORE:
		break;
	default:
		on_key_batch(s, p);
		return;
	}
	if (s->meta_need == CN_PROTO_BATCH_HDR) {
		bool rdma = s->hdr.flags & (CN_F_RDMA | CN_F_GPU); /* descriptors only */
		uint32_t n = cn_get_le32(p);
		uint64_t need = CN_PROTO_BATCH_HDR +
				(uint64_t)n * (rdma ? CN_PROTO_RDMA_DESC : CN_PROTO_STORE_DESC);

		if (n == 0 || n > s->ctx->max_keys || need > s->hdr.payload_len) {
			req_error(s, CN_PROTO_BATCH_HDR,
				  n > s->ctx->max_keys ? CN_E_TOOBIG : CN_E_INVAL,
				  "chunk count is 0, over max keys, or larger than the frame");
			return;
		}
		/* RDMA, GPU: no payload follows the descriptors */
		if (rdma && need != s->hdr.payload_len) {
			req_error(s, CN_PROTO_BATCH_HDR, CN_E_INVAL,
				  s->hdr.flags & CN_F_GPU
					  ? "frame length is not that of the GPU descriptors"
					  : "frame length is not that of the RDMA descriptors");
			return;
		}
		if (!rdma && items_reserve(s, n) < 0) {
			req_error(s, CN_PROTO_BATCH_HDR, CN_E_BUSY, "out of memory");
			return;
		}
		s->store_n = n;
		s->meta_need = (uint32_t)need; /* stay in RX_META for the descriptors */
		return;
	}
	if (s->hdr.flags & CN_F_GPU) {
		gpu_begin(s, p, s->store_n);
		return;
	}
	store_begin(s, p);
}

/*
 * Consume staged input until it runs out, the session pauses for output
 * backlog, or the connection is dead.
 */
static void sess_process(struct sess *s)
{
	for (;;) {
		uint32_t avail = s->rx_len - s->rx_off;
		uint8_t *p = s->rxb + s->rx_off;

		if (s->state == RX_DEAD)
			return;
		if (s->state == RX_HDR &&
		    (s->tx_bytes >= TX_PAUSE_BYTES || s->tx_ents >= TX_PAUSE_ENTS))
			return; /* resumed from tx_done() */
		switch (s->state) {
		case RX_HDR:
			if (s->l2_req != NULL || s->gpu_req != NULL)
				goto out; /* resumed from async_done() */
			if (avail < CN_PROTO_HDR_LEN)
				goto out;
			/* resumed from rdma_done() once nothing is in flight */
			s->barrier = s->rq_head != NULL && !hdr_pipelines(s, p);
			if (s->barrier)
				goto out;
			s->rx_off += CN_PROTO_HDR_LEN;
			if (on_header(s, p) < 0)
				return;
			break;
		case RX_META:
			if (avail < s->meta_need)
				goto out;
			{
				uint32_t need = s->meta_need;
				on_meta(s, p);
				/* STORE's count step keeps the 8 bytes staged and asks for more */
				if (!(s->state == RX_META && s->meta_need > need))
					s->rx_off += need;
			}
			break;
		case RX_PAYLOAD: {
			uint32_t room;
			uint8_t *dst;

			if (avail == 0)
				goto out;
			dst = store_target(s, &room);
			if (room > avail)
				room = avail;
			if (dst != s->discard)
				memcpy(dst, p, room);
			s->rx_off += room;
			store_advance(s, room);
			break;
		}
		case RX_SKIP: {
			uint64_t k = avail < s->skip_left ? avail : s->skip_left;

			if (avail == 0)
				goto out;
			s->rx_off += (uint32_t)k;
			s->skip_left -= k;
			if (s->skip_left == 0)
				s->state = RX_HDR;
			break;
		}
		case RX_WAIT: /* resumed from rdma_done(); an L2 fetch resumes from async_done() */
			if (s->l2_req != NULL || !rreq_may_start(s, s->wait_req))
				goto out;
			{
				struct rreq *r = s->wait_req;

				s->wait_req = NULL;
				rreq_launch(s, r);
			}
			break;
		case RX_DEAD:
			return;
		}
	}
out:
	if (s->rx_off == s->rx_len)
		s->rx_off = s->rx_len = 0;
}

/* ---- L2: misses asked of their owner peers, stores copied to them ----
 *
 * A RETRIEVE or LOOKUP whose keys miss in L1 and are owned by a live peer
 * (cn_l2_owner(), not in back-off) becomes a job for the L2 threads. Its
 * reply is built as far as L1 allows, queued and held (as an RDMA request's
 * is), and the session reads nothing more: the next frame waits, like an
 * RDMA barrier, so requests still run in order. The job comes back through
 * the transport's wake handle to sess_async_done() on this worker, which
 * stores fetched chunks into L1 (store_begin / memcpy / commit: the L2
 * thread fetched into a malloc'd buffer, so no L1 slot is held across the
 * network), pins them, completes the reply and releases it. A key whose
 * peer is down, failed or does not have it is a miss (CN_E_NOENT), never
 * an error. Sessions of peer nodes (local_only) and sessions without a wake
 * handle never go to L2.
 *
 * A RETRIEVE with CN_F_RDMA goes to L2 the same way, but at the moment it
 * may start (rreq_launch(): after any conflict with in-flight requests has
 * cleared, so a key an earlier STORE-RDMA is storing is found in L1, not
 * fetched): its keys missing in L1 and owned by an up peer (each distinct
 * key once) become one FETCH job, and the request waits in RX_WAIT, parsed
 * but not started: nothing pinned, no reply queued yet. Its reply's place
 * in the output FIFO is therefore taken when it starts, which keeps the
 * order, since the session parses nothing past a waiting request; RDMA
 * requests already in flight go on, and their replies leave. This reuses
 * the wait that conflicts already use rather than the held-reply path of
 * the inline RETRIEVE: rreq_start() pins and counts from L1 as it always
 * does, so a fetched chunk is served like any L1 hit (RDMA WRITE straight
 * from its slab) and there is no second way to build an RDMA reply. When
 * the job is back, rreq_l2_done() fills the chunks into L1, keeps them
 * pinned across rreq_start() (so eviction cannot take them in between)
 * and starts the request; a key the peer did not have, a peer that failed
 * or timed out, or a chunk that could not be stored is a plain miss.
 * The request goes to L2 at most once (l2_asked).
 *
 * Write-through: after a STORE commits, each chunk owned by a live peer is
 * pinned and a CN_L2_PUT job sends it from the pinned slab; the reply does
 * not wait. When the job comes back the worker unpins (also when the
 * session has closed meanwhile: the job carries the session context).
 * A full queue drops the copy (counted: put_dropped).
 */

static bool l2_on(const struct sess *s)
{
	return s->ctx->l2 != NULL && s->wake != NULL && !s->local_only &&
	       cn_l2_active(s->ctx->l2);
}

static void job_link(struct sess *s, struct cn_l2_job *j)
{
	j->sprev = NULL;
	j->snext = s->jobs;
	if (s->jobs)
		s->jobs->sprev = j;
	s->jobs = j;
}

static void job_unlink(struct sess *s, struct cn_l2_job *j)
{
	if (j->sprev)
		j->sprev->snext = j->snext;
	else
		s->jobs = j->snext;
	if (j->snext)
		j->snext->sprev = j->sprev;
}

/* A job of this session's, to run on the L2 threads and come back here. */
static struct cn_l2_job *job_new(struct sess *s, enum cn_l2_op op, uint32_t n)
{
	struct cn_l2_job *j = cn_l2_job_alloc(n);

	if (j == NULL)
		return NULL;
	j->op = op;
	j->wake = *s->wake;
	j->async.conn = s->wake->conn;
	j->sess = s;
	j->ctx = s->ctx;
	j->core = s->core;
	j->req_id = s->hdr.req_id;
	j->req_op = s->hdr.opcode;
	return j;
}

static enum cn_tel_op job_tel_op(const struct cn_l2_job *j)
{
	return j->op == CN_L2_FETCH ? CN_TEL_OP_l2_fetch
	       : j->op == CN_L2_LOOKUP ? CN_TEL_OP_l2_lookup
				       : CN_TEL_OP_l2_put;
}

/* Hand @j to the L2 threads; on success it is linked to the session. 0 or -errno. */
static int job_submit(struct sess *s, struct cn_l2_job *j)
{
	int r;

	j->sid = cn_engine_span_begin(s->ctx->engine, s->core, job_tel_op(j), j->n);
	r = cn_l2_submit(s->ctx->l2, j);
	if (r < 0) {
		cn_engine_span_end(s->ctx->engine, s->core, job_tel_op(j), j->sid, 0, 0, r);
		return r;
	}
	job_link(s, j);
	return 0;
}

/*
 * The owner of @key if it is a peer worth asking (up), else CN_L2_SELF. A
 * key of a peer in back-off is counted there and answered as a miss.
 */
static uint16_t l2_peer_of(struct sess *s, const struct cn_key *key)
{
	uint16_t o = cn_l2_owner(s->ctx->l2, key);

	if (o != CN_L2_SELF && cn_l2_peer_down(s->ctx->l2, o)) {
		cn_l2_peer_skip(s->ctx->l2, o, 1);
		return CN_L2_SELF;
	}
	return o;
}

/*
 * RETRIEVE reply @e (n entries filled from L1, L1 hits pinned in e->refs in
 * key order) has misses: ask their owners. true if a job went out (the
 * reply is then queued, held, and finished by l2_retrieve_done()).
 */
static bool l2_retrieve(struct sess *s, struct tx_ent *e, uint32_t n, const struct cn_key *keys,
			uint32_t stride)
{
	struct cn_l2_job *j;
	uint32_t k = 0;

	if (!l2_on(s))
		return false;
	j = job_new(s, CN_L2_FETCH, n);
	if (j == NULL)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		uint16_t o;

		if (cn_get_le32(e->meta + 8 + stride * i) != (uint32_t)CN_E_NOENT)
			continue;
		o = l2_peer_of(s, &keys[i]);
		if (o == CN_L2_SELF)
			continue;
		j->it[k] = (struct cn_l2_item){.key = keys[i], .peer = o, .idx = i};
		k++;
	}
	j->n = k;
	if (k == 0 || job_submit(s, j) < 0) {
		free(j);
		return false;
	}
	j->user = e;
	s->l2_req = j;
	CN_STAT_INC(s->st, l2_waits);
	e->held = true;
	tx_push(s, e, s->hdr.opcode, 0, CN_OK, 8 + stride * n);
	return true;
}

/* LOOKUP reply @e: keys [prefix, n) are not in L1 as a prefix; ask the owners. */
static bool l2_lookup(struct sess *s, struct tx_ent *e, uint32_t n, const struct cn_key *keys,
		      uint32_t prefix)
{
	struct cn_l2_job *j;
	uint32_t asked = 0;

	if (!l2_on(s))
		return false;
	j = job_new(s, CN_L2_LOOKUP, n - prefix);
	if (j == NULL)
		return false;
	/*
	 * Every key from the first L1 miss on, up to the first one that cannot
	 * be anywhere (owned here, or by a peer in back-off, and not in L1):
	 * the prefix ends there whatever the peers say. Keys owned here are
	 * looked at again in L1 when the answers are in.
	 */
	j->n = 0;
	for (uint32_t i = prefix; i < n; i++) {
		uint16_t o = l2_peer_of(s, &keys[i]);

		if (o == CN_L2_SELF && (i == prefix || !cn_l1_contains(cn_engine_l1(s->ctx->engine),
								      s->core, &keys[i])))
			break;
		j->it[j->n++] = (struct cn_l2_item){.key = keys[i], .peer = o, .idx = i};
		asked += o != CN_L2_SELF;
	}
	if (asked == 0 || job_submit(s, j) < 0) {
		free(j);
		return false;
	}
	j->user = e;
	s->l2_req = j;
	CN_STAT_INC(s->st, l2_waits);
	e->held = true;
	tx_push(s, e, CN_OP_LOOKUP, 0, CN_OK, 8 + n);
	return true;
}

/*
 * CN_F_RDMA RETRIEVE @r may start: ask the owners of its keys that miss in
 * L1 (see above). true if a job went out: the caller lets @r wait, and
 * rreq_l2_done() starts it. Counts a lookup per distinct key in L1's
 * counters (cn_l1_contains()), as PREFETCH does.
 */
static bool rreq_l2_fetch(struct sess *s, struct rreq *r)
{
	struct cn_l1 *l1;
	struct cn_l2_job *j;
	uint32_t k = 0;

	if (r->opcode != CN_OP_RETRIEVE || r->l2_asked || !l2_on(s))
		return false;
	r->l2_asked = true;
	j = job_new(s, CN_L2_FETCH, r->n);
	if (j == NULL)
		return false;
	l1 = cn_engine_l1(s->ctx->engine);
	for (uint32_t i = 0; i < r->n; i++) {
		const struct cn_key *key = &r->sorted[i];
		uint16_t o;

		if (i > 0 && memcmp(key, &r->sorted[i - 1], CN_KEY_LEN) == 0)
			continue; /* a repeated key is fetched once */
		if (cn_l1_contains(l1, s->core, key))
			continue;
		o = l2_peer_of(s, key);
		if (o == CN_L2_SELF)
			continue;
		/* in r->sorted's order: rreq_l2_done() looks the items up by key */
		j->it[k++] = (struct cn_l2_item){.key = *key, .peer = o, .idx = i};
	}
	j->n = k;
	j->req_id = r->req_id;
	j->req_op = CN_OP_RETRIEVE;
	j->req_flags = CN_F_RDMA;
	if (k == 0 || job_submit(s, j) < 0) {
		free(j);
		return false;
	}
	j->user = r;
	s->l2_req = j;
	CN_STAT_INC(s->st, l2_waits);
	return true;
}

/* Rebuild a held reply's iovecs and header after its refs or meta changed. */
static void tx_refresh(struct sess *s, struct tx_ent *e, uint64_t req_id, uint8_t op,
		       uint32_t meta_len)
{
	struct cn_proto_hdr h;
	uint64_t body = meta_len;
	size_t old = e->total;

	e->iov[0] = (struct iovec){e->hdr, CN_PROTO_HDR_LEN};
	e->iov[1] = (struct iovec){e->meta, meta_len};
	e->niov = 2;
	for (unsigned i = 0; i < e->nrefs; i++) {
		e->iov[e->niov++] = (struct iovec){e->refs[i].data, e->refs[i].len};
		body += e->refs[i].len;
	}
	cn_proto_hdr_init(&h, op, CN_F_RESPONSE, req_id, (uint32_t)body, CN_OK);
	cn_proto_hdr_encode(&h, e->hdr);
	e->total = CN_PROTO_HDR_LEN + body;
	s->tx_bytes = s->tx_bytes - old + e->total;
}

/*
 * Put a fetched chunk into L1 and pin it. The chunk may have been stored
 * meanwhile (-EEXIST): then the stored copy is pinned. 0 or -errno.
 */
static int l2_fill(struct sess *s, const struct cn_l2_item *it, struct cn_l1_ref *ref)
{
	struct cn_engine *eng = s->ctx->engine;
	struct cn_l1_ref w;
	int r = cn_engine_store_begin(eng, s->core, &it->key, it->len, &w);

	if (r == 0) {
		memcpy(w.data, it->data, it->len);
		r = cn_engine_store_commit(eng, s->core, &w);
	}
	if (r == 0 || r == -EEXIST) {
		CN_L2_COUNT(s->ctx->l2, fills, r == 0);
		r = cn_engine_retrieve_pin(eng, s->core, &it->key, ref);
	}
	if (r < 0)
		CN_L2_COUNT(s->ctx->l2, fill_failed, 1);
	return r;
}

static void l2_retrieve_done(struct sess *s, struct cn_l2_job *j, struct tx_ent *e)
{
	uint32_t n = cn_get_le32(e->meta);
	struct cn_l1_ref *refs = malloc(n * sizeof(*refs));
	uint64_t body = 8 + 8ull * n, bytes = 0;
	uint32_t old = 0, k = 0, got = 0;

	for (unsigned i = 0; i < e->nrefs; i++)
		body += e->refs[i].len;
	for (uint32_t i = 0; i < n && refs != NULL; i++) {
		uint8_t *d = e->meta + 8 + 8 * i;
		struct cn_l2_item *it = k < j->n && j->it[k].idx == i ? &j->it[k++] : NULL;

		if (cn_get_le32(d) == CN_OK) {
			refs[got++] = e->refs[old++]; /* an L1 hit, in key order */
			continue;
		}
		if (it == NULL || it->status != CN_OK || it->data == NULL)
			continue;
		if (body + it->len > s->ctx->max_frame ||
		    l2_fill(s, it, &refs[got]) < 0)
			continue; /* stays a miss */
		body += refs[got].len;
		bytes += refs[got].len;
		cn_put_le32(d, CN_OK);
		cn_put_le32(d + 4, refs[got].len);
		got++;
	}
	if (refs != NULL) {
		/* e->refs has room for n (batch_reply) */
		memcpy(e->refs, refs, got * sizeof(*refs));
		e->nrefs = got;
		CN_STAT_ADD(s->st, retrieve_hits, got - old);
		CN_STAT_ADD(s->st, retrieve_l2_hits, got - old);
		CN_STAT_ADD(s->st, retrieve_bytes, bytes);
	}
	free(refs);
	for (uint32_t i = 0; i < j->n; i++)
		free(j->it[i].data);
	tx_refresh(s, e, j->req_id, CN_OP_RETRIEVE, 8 + 8 * n);
	cn_engine_span_end(s->ctx->engine, s->core, CN_TEL_OP_l2_fetch, j->sid, got - old, bytes, 0);
}

/* PREFETCH: fill L1 with what came back; nothing is sent but the statuses. */
static void l2_prefetch_done(struct sess *s, struct cn_l2_job *j, struct tx_ent *e)
{
	uint32_t n = cn_get_le32(e->meta), got = 0;
	uint64_t bytes = 0;

	for (uint32_t k = 0; k < j->n; k++) {
		struct cn_l2_item *it = &j->it[k];
		struct cn_l1_ref ref;

		if (it->status == CN_OK && it->data != NULL && l2_fill(s, it, &ref) == 0) {
			cn_engine_unpin(s->ctx->engine, s->core, &ref);
			cn_put_le32(e->meta + 8 + 4 * it->idx, CN_OK);
			bytes += it->len;
			got++;
		}
		free(it->data);
	}
	CN_STAT_ADD(s->st, prefetch_l2_keys, got);
	tx_refresh(s, e, j->req_id, CN_OP_PREFETCH, 8 + 4 * n);
	cn_engine_span_end(s->ctx->engine, s->core, CN_TEL_OP_l2_fetch, j->sid, got, bytes, 0);
}

static void l2_lookup_done(struct sess *s, struct cn_l2_job *j, struct tx_ent *e)
{
	struct cn_l1 *l1 = cn_engine_l1(s->ctx->engine);
	/* the items start at the first L1 miss (a submitted job has at least one) */
	uint32_t n = cn_get_le32(e->meta), prefix = j->it[0].idx, l2keys = 0;

	for (uint32_t k = 0; k < j->n; k++) {
		const struct cn_l2_item *it = &j->it[k];
		uint8_t tier;

		if (cn_l1_contains(l1, s->core, &it->key))
			tier = CN_TIER_L1;
		else if (it->present)
			tier = CN_TIER_L2;
		else
			break;
		e->meta[8 + it->idx] = tier;
		l2keys += tier == CN_TIER_L2;
		prefix++;
	}
	cn_put_le32(e->meta + 4, prefix);
	CN_STAT_ADD(s->st, lookup_prefix_keys, prefix);
	CN_STAT_ADD(s->st, lookup_l2_keys, l2keys);
	tx_refresh(s, e, j->req_id, CN_OP_LOOKUP, 8 + n);
	cn_engine_span_end(s->ctx->engine, s->core, CN_TEL_OP_l2_lookup, j->sid, l2keys, 0, 0);
}

static int cmp_key_item(const void *key, const void *item)
{
	return memcmp(key, &((const struct cn_l2_item *)item)->key, CN_KEY_LEN);
}

/*
 * The fetch of CN_F_RDMA RETRIEVE @r (waiting in wait_req) came back: store
 * what the peers returned into L1, mark the request's items that were
 * fetched (counted as retrieve_l2_hits when their WRITE completes), and
 * start the request. The fills stay pinned until rreq_start() has pinned
 * them for the request. rreq_may_start() still holds (nothing started since
 * it was checked, and in-flight requests only finish); were it not so, the
 * request waits on in RX_WAIT and starts from L1 as it is then.
 */
static void rreq_l2_done(struct sess *s, struct cn_l2_job *j, struct rreq *r)
{
	struct cn_l1_ref *held = malloc(j->n * sizeof(*held));
	uint32_t got = 0, nheld = 0;
	uint64_t bytes = 0;

	for (uint32_t k = 0; k < j->n; k++) {
		struct cn_l2_item *it = &j->it[k];
		struct cn_l1_ref ref;

		it->present = false;
		if (it->status == CN_OK && it->data != NULL && l2_fill(s, it, &ref) == 0) {
			it->present = true;
			bytes += it->len;
			got++;
			if (held != NULL)
				held[nheld++] = ref;
			else
				cn_engine_unpin(s->ctx->engine, s->core, &ref);
		}
		free(it->data);
		it->data = NULL;
	}
	for (uint32_t i = 0; i < r->n; i++) {
		const struct cn_l2_item *it =
			bsearch(&r->it[i].key, j->it, j->n, sizeof(j->it[0]), cmp_key_item);

		r->it[i].l2 = it != NULL && it->present;
	}
	cn_engine_span_end(s->ctx->engine, s->core, CN_TEL_OP_l2_fetch, j->sid, got, bytes, 0);
	if (rreq_may_start(s, r)) {
		s->wait_req = NULL;
		rreq_start(s, r);
	}
	for (uint32_t i = 0; i < nheld; i++)
		cn_engine_unpin(s->ctx->engine, s->core, &held[i]);
	free(held);
}

/* The pinned chunks a CN_L2_PUT job sends; freed when it comes back. */
struct put_pins {
	uint32_t n;
	struct cn_l1_ref ref[];
};

static void l2_write_through(struct sess *s, struct store_item *items, uint32_t n)
{
	struct cn_l1 *l1;
	struct cn_l2_job *j = NULL;
	struct put_pins *pp = NULL;
	uint32_t k = 0;

	if (s->ctx->l2 == NULL || s->local_only || !cn_l2_active(s->ctx->l2) ||
	    cn_l2_write_mode(s->ctx->l2) != CN_L2_WRITE_THROUGH)
		return;
	l1 = cn_engine_l1(s->ctx->engine);
	for (uint32_t i = 0; i < n; i++) {
		struct store_item *it = &items[i];
		uint16_t o;

		if (it->status != CN_OK)
			continue;
		o = l2_peer_of(s, &it->key);
		if (o == CN_L2_SELF)
			continue;
		if (s->wake == NULL) {
			CN_L2_COUNT(s->ctx->l2, put_dropped, 1);
			continue;
		}
		if (j == NULL) {
			j = job_new(s, CN_L2_PUT, n);
			pp = malloc(sizeof(*pp) + n * sizeof(pp->ref[0]));
			if (j == NULL || pp == NULL)
				goto drop;
			pp->n = 0;
		}
		/* L1 directly: a write-through pin is not a RETRIEVE (no span, no trace record) */
		if (cn_l1_pin(l1, s->core, &it->key, &pp->ref[pp->n]) < 0)
			continue; /* deleted or evicted already */
		j->it[k] = (struct cn_l2_item){.key = it->key, .peer = o, .idx = i,
					       .data = pp->ref[pp->n].data,
					       .len = pp->ref[pp->n].len};
		pp->n++;
		k++;
	}
	if (j == NULL)
		return;
	j->n = k;
	j->user = pp;
	if (k > 0 && job_submit(s, j) == 0) {
		CN_STAT_ADD(s->st, l2_puts, k);
		return;
	}
drop:
	for (uint32_t i = 0; pp != NULL && i < pp->n; i++)
		cn_l1_unpin(cn_engine_l1(s->ctx->engine), s->core, &pp->ref[i]);
	free(pp);
	free(j);
}

/*
 * A job came back from the L2 threads (on this worker). Returns 1 (the
 * connection is serviced), 0 (orphaned: freed), or -EPROTO.
 */
static int sess_async_done(struct cn_async *a)
{
	struct cn_l2_job *j = (struct cn_l2_job *)a;

	if (a->kind == ASYNC_GPU)
		return gpu_async_done(a);
	struct cn_session_ctx *ctx = j->ctx;
	struct sess *s = j->sess;
	struct tx_ent *e = j->user;

	if (j->op == CN_L2_PUT) {
		struct put_pins *pp = j->user;
		uint64_t bytes = 0;
		uint32_t ok = 0;

		for (uint32_t i = 0; i < j->n; i++) {
			ok += j->it[i].status == CN_OK || j->it[i].status == CN_E_EXIST;
			bytes += j->it[i].len;
		}
		for (uint32_t i = 0; i < pp->n; i++)
			cn_l1_unpin(cn_engine_l1(ctx->engine), j->core, &pp->ref[i]);
		free(pp);
		cn_engine_span_end(ctx->engine, j->core, CN_TEL_OP_l2_put, j->sid, ok, bytes,
				   ok == j->n ? 0 : -EIO);
	} else if (j->orphaned) {
		for (uint32_t i = 0; j->op == CN_L2_FETCH && i < j->n; i++)
			free(j->it[i].data);
		cn_engine_span_end(ctx->engine, j->core, job_tel_op(j), j->sid, 0, 0,
				   -ECONNABORTED);
	} else if (j->req_flags & CN_F_RDMA) {
		s->l2_req = NULL;
		rreq_l2_done(s, j, j->user); /* starts the request: state RX_HDR */
	} else {
		s->l2_req = NULL;
		if (j->op == CN_L2_FETCH && j->req_op == CN_OP_PREFETCH)
			l2_prefetch_done(s, j, e);
		else if (j->op == CN_L2_FETCH)
			l2_retrieve_done(s, j, e);
		else
			l2_lookup_done(s, j, e);
		e->held = false;
	}
	if (j->orphaned) {
		free(j);
		return 0;
	}
	job_unlink(s, j);
	free(j);
	if (s->l2_req == NULL)
		sess_process(s); /* frames staged behind the request */
	return s->state == RX_DEAD ? -EPROTO : 1;
}

/* ---- CN_F_GPU requests ----
 *
 * A connection first registers GPU regions (GPU_REGISTER: the tier maps the
 * engine's CUDA IPC handle; the ids are kept per connection and released at
 * close). A STORE/RETRIEVE with CN_F_GPU then names chunks as (region,
 * offset, length) in the RDMA descriptor layout (rkey = region, addr =
 * offset). The session checks every descriptor before touching L1, reserves
 * (STORE) or pins (RETRIEVE) the slabs, and hands the tier one copy batch
 * per region named. The tier's completion (a CUDA runtime thread) posts the
 * batch's job through the transport's wake path; gpu_async_done() on this
 * worker counts it down and, after the last, commits the STORE's chunks
 * together (or unpins the RETRIEVE's), fills in the statuses and releases
 * the reply, held in the output FIFO since the request started. A batch
 * that failed on the device fails its chunks (CN_E_INTERNAL): a STORE's are
 * aborted, never visible. While the request runs the session parses
 * nothing more. If the connection closes first the request is orphaned:
 * the jobs still come back (copies cannot be cancelled), and the last one
 * releases the slabs and the regions, which the copies were still using.
 */

struct gpu_req {
	struct sess *s;	       /* NULL once orphaned: free everything when pending hits 0 */
	struct rreq *r;	       /* the items: rkey = region, addr = offset */
	struct cn_session_ctx *ctx;
	unsigned core;
	uint32_t pending;      /* batches not back yet */
	uint32_t *regions;     /* orphaned: the session's regions, closed at the end */
	uint32_t nregions;
	uint64_t sid;	       /* telemetry span */
};

struct gpu_job {
	struct cn_async async; /* must be first; kind = ASYNC_GPU */
	struct cn_wake wake;
	struct gpu_req *g;
	struct cn_gpu_batch *batch;
	uint32_t region;
	int status;
};

static int gpu_nodev(struct sess *s)
{
	char what[CN_GPU_REASON_LEN + 32];

	CN_STAT_INC(s->st, gpu_nodev);
	snprintf(what, sizeof(what), "no GPU tier (%s)",
		 s->ctx->gpu != NULL ? cn_gpu_reason(s->ctx->gpu) : "not configured");
	req_error(s, 0, CN_E_NODEV, what);
	return 0;
}

static bool gpu_region_mine(const struct sess *s, uint32_t id)
{
	for (uint32_t i = 0; i < s->gpu_nregions; i++)
		if (s->gpu_regions[i] == id)
			return true;
	return false;
}

_Static_assert(CN_PROTO_GPU_REG_LEN == 16 + CN_PROTO_GPU_HANDLE_LEN + CN_GPU_BUS_ID_LEN,
	       "GPU_REGISTER layout");
_Static_assert(CN_PROTO_GPU_HANDLE_LEN == CN_GPU_IPC_HANDLE_LEN, "IPC handle size");

/* GPU_REGISTER: u32 dev, u32 0, u64 size, handle[64], bus_id[16] -> u32 region, u32 0. */
static void do_gpu_register(struct sess *s, const uint8_t *p)
{
	int dev = (int)cn_get_le32(p);
	uint64_t size = cn_get_le64(p + 8);
	char bus[CN_GPU_BUS_ID_LEN];
	char err[160] = "", what[200];
	struct tx_ent *e;
	uint32_t id;
	int r;

	if (s->gpu_nregions == s->gpu_cap) {
		uint32_t cap = s->gpu_cap ? 2 * s->gpu_cap : 8;
		uint32_t *n = realloc(s->gpu_regions, cap * sizeof(*n));

		if (n == NULL) {
			req_error(s, s->hdr.payload_len, CN_E_BUSY, "out of memory");
			return;
		}
		s->gpu_regions = n;
		s->gpu_cap = cap;
	}
	/* the bus id, when given, names the device: the engine may number devices otherwise */
	memcpy(bus, p + 16 + CN_PROTO_GPU_HANDLE_LEN, sizeof(bus));
	bus[sizeof(bus) - 1] = '\0';
	if (bus[0] != '\0') {
		dev = cn_gpu_dev_by_bus_id(s->ctx->gpu, bus);
		if (dev < 0) {
			snprintf(what, sizeof(what), "no device at PCI bus id %s here", bus);
			req_error(s, s->hdr.payload_len, CN_E_NODEV, what);
			return;
		}
	}
	r = cn_gpu_region_open(s->ctx->gpu, dev, p + 16, size, &id, err, sizeof(err));
	if (r < 0) {
		snprintf(what, sizeof(what), "device %d: %s", dev, err[0] ? err : strerror(-r));
		req_error(s, s->hdr.payload_len, cn_status_from_errno(r), what);
		return;
	}
	e = batch_reply(s, 0, 0, 0);
	if (e == NULL) {
		cn_gpu_region_close(s->ctx->gpu, id);
		return;
	}
	s->gpu_regions[s->gpu_nregions++] = id;
	CN_STAT_INC(s->st, gpu_regions);
	cn_put_le32(e->meta, id);
	tx_push(s, e, CN_OP_GPU_REGISTER, 0, CN_OK, CN_PROTO_BATCH_HDR);
	s->state = RX_HDR;
}

/* GPU_UNREGISTER: u32 region, u32 0 -> empty. */
static void do_gpu_unregister(struct sess *s, const uint8_t *p)
{
	uint32_t id = cn_get_le32(p);
	struct tx_ent *e;

	for (uint32_t i = 0; i < s->gpu_nregions; i++) {
		if (s->gpu_regions[i] != id)
			continue;
		e = tx_alloc(0, 0);
		if (e == NULL) {
			s->state = RX_DEAD;
			return;
		}
		cn_gpu_region_close(s->ctx->gpu, id);
		s->gpu_regions[i] = s->gpu_regions[--s->gpu_nregions];
		tx_push(s, e, CN_OP_GPU_UNREGISTER, 0, CN_OK, 0);
		s->state = RX_HDR;
		return;
	}
	req_error(s, s->hdr.payload_len, CN_E_INVAL, "not a region of this connection");
}

/* A CUDA runtime thread: hand the batch back to the session's worker. */
static void gpu_batch_done(struct cn_gpu_batch *b, int status, void *arg)
{
	struct gpu_job *j = arg;

	(void)b;
	j->status = status;
	j->wake.post(j->wake.worker, &j->async);
}

/* Release what @g holds (orphaned, or failed before starting) and free it. */
static void gpu_req_free(struct gpu_req *g)
{
	struct cn_engine *eng = g->ctx->engine;

	for (uint32_t i = 0; i < g->r->n; i++) {
		struct store_item *it = &g->r->it[i];

		if (it->reserved)
			cn_engine_store_abort(eng, g->core, &it->ref);
		if (it->pinned)
			cn_engine_unpin(eng, g->core, &it->ref);
	}
	for (uint32_t i = 0; i < g->nregions; i++)
		cn_gpu_region_close(g->ctx->gpu, g->regions[i]);
	free(g->regions);
	free(g->r);
	free(g);
}

/* Every batch of the session's GPU request is back: finish it and let the reply go. */
static void gpu_finish(struct sess *s, struct gpu_req *g)
{
	struct rreq *r = g->r;
	bool store = r->opcode == CN_OP_STORE;
	uint32_t per = store ? 4 : CN_PROTO_RETR_DESC;
	uint8_t *meta = r->reply->meta + CN_PROTO_BATCH_HDR;
	uint32_t ok = 0;
	uint64_t bytes = 0;

	for (uint32_t i = 0; i < r->n; i++) {
		struct store_item *it = &r->it[i];
		uint8_t *d = meta + per * i;

		if (it->reserved && it->status != CN_OK) {
			cn_engine_store_abort(s->ctx->engine, s->core, &it->ref); /* copy failed */
			it->reserved = false;
		}
		if (it->reserved) {
			int rc = cn_engine_store_commit(s->ctx->engine, s->core, &it->ref);

			it->reserved = false;
			if (rc < 0)
				it->status = cn_status_from_errno(rc);
		}
		if (it->pinned) {
			cn_engine_unpin(s->ctx->engine, s->core, &it->ref);
			it->pinned = false;
		}
		if (it->status == CN_OK) {
			ok++;
			bytes += store ? it->len : it->ref.len;
		}
		cn_put_le32(d, (uint32_t)it->status);
	}
	if (store) {
		CN_STAT_ADD(s->st, store_ok, ok);
		CN_STAT_ADD(s->st, store_bytes, bytes);
		CN_STAT_ADD(s->st, store_failed, r->n - ok);
		l2_write_through(s, r->it, r->n);
	} else {
		CN_STAT_ADD(s->st, retrieve_hits, ok);
		CN_STAT_ADD(s->st, retrieve_bytes, bytes);
	}
	cn_engine_span_end(s->ctx->engine, s->core, CN_TEL_OP_gpu_copy, g->sid, ok, bytes, 0);
	r->reply->held = false;
	free(r);
	free(g);
	s->gpu_req = NULL;
}

static int gpu_async_done(struct cn_async *a)
{
	struct gpu_job *j = (struct gpu_job *)a;
	struct gpu_req *g = j->g;
	struct sess *s = g->s;

	cn_gpu_batch_free(g->ctx->gpu, j->batch);
	if (j->status < 0) {
		for (uint32_t i = 0; i < g->r->n; i++) {
			struct store_item *it = &g->r->it[i];

			if (it->rkey == j->region && it->status == CN_OK) {
				it->status = CN_E_INTERNAL;
				CN_STAT_INC(&g->ctx->stats[g->core], gpu_copy_failed);
			}
		}
	}
	free(j);
	if (--g->pending > 0)
		return s != NULL;
	if (s == NULL) {
		cn_engine_span_end(g->ctx->engine, g->core, CN_TEL_OP_gpu_copy, g->sid, 0, 0,
				   -ECONNABORTED);
		gpu_req_free(g);
		return 0;
	}
	gpu_finish(s, g);
	sess_process(s); /* frames staged behind the request */
	return s->state == RX_DEAD ? -EPROTO : 1;
}

/*
 * The session closes: an unfinished GPU request is orphaned (its batches
 * still come back and the last frees it, with the regions it may still be
 * copying from); otherwise the regions are closed now.
 */
static void gpu_close(struct sess *s)
{
	struct gpu_req *g = s->gpu_req;

	if (g != NULL) {
		g->s = NULL;
		g->regions = s->gpu_regions;
		g->nregions = s->gpu_nregions;
		s->gpu_req = NULL;
	} else {
		for (uint32_t i = 0; i < s->gpu_nregions; i++)
			cn_gpu_region_close(s->ctx->gpu, s->gpu_regions[i]);
		free(s->gpu_regions);
	}
	s->gpu_regions = NULL;
	s->gpu_nregions = s->gpu_cap = 0;
}

/*
 * STORE (n descriptors {key, len, region, off}) or RETRIEVE (n descriptors
 * {key, cap, region, off}) with CN_F_GPU, the frame checked to hold exactly
 * them. Everything is validated before L1 is touched; then the request
 * starts (no RDMA request can be in flight: a GPU request is a barrier).
 */
static void gpu_begin(struct sess *s, const uint8_t *p, uint32_t n)
{
	bool store = s->hdr.opcode == CN_OP_STORE;
	uint32_t per = store ? 4 : CN_PROTO_RETR_DESC;
	uint64_t max_chunk = cn_engine_max_chunk(s->ctx->engine);
	uint32_t meta = CN_PROTO_BATCH_HDR + n * CN_PROTO_RDMA_DESC;
	struct cn_gpu_copy *copies = NULL;
	struct gpu_req *g = NULL;
	struct rreq *r = rreq_parse(s, p, n);
	struct tx_ent *e;
	const char *bad = NULL;

	if (r == NULL || (g = calloc(1, sizeof(*g))) == NULL ||
	    (copies = malloc(n * sizeof(*copies))) == NULL) {
		free(r);
		free(g);
		req_error(s, meta, CN_E_BUSY, "out of memory");
		return;
	}
	for (uint32_t i = 0; i < n && bad == NULL; i++) {
		const struct store_item *it = &r->it[i];
		uint64_t rsize = gpu_region_mine(s, it->rkey)
					 ? cn_gpu_region_size(s->ctx->gpu, it->rkey)
					 : 0;

		if (rsize == 0)
			bad = "not a GPU region of this connection";
		else if (it->len == 0)
			bad = store ? "zero-length chunk in batch" : "zero capacity";
		else if (store && it->len > max_chunk)
			bad = "chunk larger than the node's max chunk";
		else if (it->addr > rsize || it->len > rsize - it->addr)
			bad = "range outside the GPU region";
	}
	for (uint32_t i = 1; store && bad == NULL && i < n; i++)
		if (memcmp(&r->sorted[i - 1], &r->sorted[i], CN_KEY_LEN) == 0)
			bad = "duplicate key in batch";
	if (bad != NULL) {
		free(copies);
		free(g);
		free(r);
		req_error(s, meta, CN_E_INVAL, bad);
		return;
	}
	e = batch_reply(s, n, per, 0);
	if (e == NULL) {
		free(copies);
		free(g);
		free(r);
		return;
	}
	g->s = s;
	g->r = r;
	g->ctx = s->ctx;
	g->core = s->core;
	r->reply = e;
	if (store) {
		CN_STAT_INC(s->st, store_reqs);
		CN_STAT_ADD(s->st, store_keys, n);
		CN_STAT_INC(s->st, gpu_store_reqs);
	} else {
		CN_STAT_INC(s->st, retrieve_reqs);
		CN_STAT_ADD(s->st, retrieve_keys, n);
		CN_STAT_INC(s->st, gpu_retrieve_reqs);
	}
	for (uint32_t i = 0; i < n; i++)
		item_claim(s, &r->it[i], store, e->meta + CN_PROTO_BATCH_HDR + per * i);
	e->held = true;
	tx_push(s, e, s->hdr.opcode, 0, CN_OK, CN_PROTO_BATCH_HDR + per * n);
	s->state = RX_HDR;
	s->gpu_req = g;
	g->sid = cn_engine_span_begin(s->ctx->engine, s->core, CN_TEL_OP_gpu_copy, n);
	/* one batch per region, the region's chunks in request order */
	for (uint32_t i = 0; i < n; i++) {
		uint32_t region = r->it[i].rkey, nc = 0;
		struct gpu_job *j;
		int rc;

		bool first = r->it[i].reserved || r->it[i].pinned;

		/* the region's batch goes with its first chunk that holds a slab */
		for (uint32_t k = 0; k < i && first; k++)
			first = r->it[k].rkey != region || !(r->it[k].reserved || r->it[k].pinned);
		if (!first)
			continue;
		for (uint32_t k = i; k < n; k++) {
			const struct store_item *it = &r->it[k];

			if (it->rkey == region && (it->reserved || it->pinned))
				copies[nc++] = (struct cn_gpu_copy){
					.host = it->ref.data,
					.off = it->addr,
					.len = store ? it->len : it->ref.len,
				};
		}
		j = calloc(1, sizeof(*j));
		rc = j == NULL ? -ENOMEM : 0;
		if (j != NULL) {
			j->async.kind = ASYNC_GPU;
			j->async.conn = s->wake->conn;
			j->wake = *s->wake;
			j->g = g;
			j->region = region;
			g->pending++; /* before submit: the completion may come at once */
			rc = cn_gpu_batch_submit(s->ctx->gpu, s->core, region,
						 store ? CN_GPU_D2H : CN_GPU_H2D, copies, nc,
						 gpu_batch_done, j, &j->batch);
			if (rc < 0) {
				g->pending--;
				free(j);
			}
		}
		if (rc < 0) {
			for (uint32_t k = i; k < n; k++)
				if (r->it[k].rkey == region && r->it[k].status == CN_OK) {
					r->it[k].status = CN_E_INTERNAL;
					CN_STAT_INC(s->st, gpu_copy_failed);
				}
		}
	}
	free(copies);
	if (g->pending == 0)
		gpu_finish(s, g);
}

/* ---- struct cn_session_ops ---- */

static void *sess_open(void *arg, unsigned worker, const char *peer, unsigned flags,
		       const struct cn_wake *wake)
{
	struct cn_session_ctx *ctx = arg;
	struct sess *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->rxb = malloc(RXB_SIZE);
	s->discard = malloc(DISCARD_SIZE);
	if (s->rxb == NULL || s->discard == NULL) {
		free(s->rxb);
		free(s->discard);
		free(s);
		return NULL;
	}
	s->rdma = flags & CN_SESS_RDMA;
	s->wake = wake;
	s->ctx = ctx;
	s->core = worker;
	s->st = &ctx->stats[worker];
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
	s->state = RX_HDR;
	CN_STAT_ADD(s->st, sessions_open, 1);
	return s;
}

static void sess_rx_buf(void *sp, void **buf, size_t *len)
{
	struct sess *s = sp;
	uint32_t avail = s->rx_len - s->rx_off;

	s->rx_direct = false;
	if (avail == 0 && s->state == RX_PAYLOAD) {
		uint32_t room;
		*buf = store_target(s, &room);
		*len = room;
		s->rx_direct = true;
		return;
	}
	if (avail == 0 && s->state == RX_SKIP) {
		*buf = s->discard;
		*len = s->skip_left < DISCARD_SIZE ? (size_t)s->skip_left : DISCARD_SIZE;
		s->rx_direct = true;
		return;
	}
	if (s->rx_off > 0) { /* compact: keep the unconsumed tail at the front */
		memmove(s->rxb, s->rxb + s->rx_off, avail);
		s->rx_off = 0;
		s->rx_len = avail;
	}
	*buf = s->rxb + s->rx_len;
	*len = RXB_SIZE - s->rx_len;
}

static int sess_rx_done(void *sp, size_t n)
{
	struct sess *s = sp;

	if (s->rx_direct) {
		s->rx_direct = false;
		if (s->state == RX_PAYLOAD) {
			store_advance(s, (uint32_t)n);
		} else if (s->state == RX_SKIP) {
			s->skip_left -= n;
			if (s->skip_left == 0)
				s->state = RX_HDR;
		}
	} else {
		s->rx_len += (uint32_t)n;
	}
	sess_process(s);
	return s->state == RX_DEAD ? -EPROTO : 0;
}

static bool sess_rx_paused(void *sp)
{
	const struct sess *s = sp;

	if (s->state == RX_DEAD || s->state == RX_WAIT)
		return true;
	if (s->l2_req != NULL && s->state == RX_HDR)
		return true; /* a request waits for the L2 tier: later frames wait too */
	/* Never pause in the middle of a payload: the chunk's bytes must keep flowing. */
	if (s->state != RX_HDR)
		return false;
	/* A barrier frame is staged, or the RDMA pipeline is full. */
	if (s->rq_head != NULL && (s->barrier || s->rq_n >= CN_SESSION_RDMA_MAX_REQS ||
				   s->rq_bytes >= CN_SESSION_RDMA_MAX_BYTES))
		return true;
	/*
	 * A full staging buffer is not a reason to pause: rx_buf() compacts it,
	 * and what is left unconsumed is always shorter than the largest meta
	 * block, so there is room.
	 */
	return s->tx_bytes >= TX_PAUSE_BYTES || s->tx_ents >= TX_PAUSE_ENTS;
}

static int sess_tx_iov(void *sp, struct iovec *iov, int max)
{
	struct sess *s = sp;
	int n = 0;

	for (struct tx_ent *e = s->tx_head; e != NULL && !e->held && n < max; e = e->next) {
		size_t skip = e == s->tx_head ? e->sent : 0;

		for (unsigned i = 0; i < e->niov && n < max; i++) {
			size_t l = e->iov[i].iov_len;
			if (skip >= l) {
				skip -= l;
				continue;
			}
			iov[n].iov_base = (char *)e->iov[i].iov_base + skip;
			iov[n].iov_len = l - skip;
			skip = 0;
			n++;
		}
	}
	return n;
}

static int sess_tx_done(void *sp, size_t n)
{
	struct sess *s = sp;
	bool was_paused = s->tx_bytes >= TX_PAUSE_BYTES || s->tx_ents >= TX_PAUSE_ENTS;

	s->tx_bytes -= n;
	while (n > 0 && s->tx_head != NULL) {
		struct tx_ent *e = s->tx_head;
		size_t left = e->total - e->sent;

		if (n < left) {
			e->sent += n;
			break;
		}
		n -= left;
		s->tx_head = e->next;
		if (s->tx_head == NULL)
			s->tx_tail = NULL;
		s->tx_ents--;
		tx_free(s, e);
	}
	/* Requests left staged while output was backed up can run now. */
	if (was_paused && s->tx_bytes < TX_PAUSE_BYTES && s->tx_ents < TX_PAUSE_ENTS)
		sess_process(s);
	return s->state == RX_DEAD ? -EPROTO : 0;
}

static void sess_close(void *sp, int err)
{
	struct sess *s = sp;

	items_release(s, s->items, s->nitems);
	s->nitems = 0;
	while (s->rq_head) {
		struct rreq *r = s->rq_head;

		s->rq_head = r->next;
		CN_STAT_INC(s->st, rdma_aborted);
		items_release(s, r->it, r->n);
		free(r); /* its reply is in the output FIFO, freed below */
	}
	/* parsed only (waiting on a conflict or on its L2 fetch, orphaned below): holds no slab */
	free(s->wait_req);
	/* jobs still on the L2 threads: the worker frees them when they come back */
	for (struct cn_l2_job *j = s->jobs; j != NULL; j = j->snext) {
		j->orphaned = true;
		j->sess = NULL;
		j->user = j->op == CN_L2_PUT ? j->user : NULL; /* the reply goes below */
	}
	s->jobs = NULL;
	s->l2_req = NULL;
	gpu_close(s); /* before the replies go: a GPU request's reply is among them */
	while (s->tx_head) {
		struct tx_ent *e = s->tx_head;
		s->tx_head = e->next;
		tx_free(s, e);
	}
	CN_STAT_ADD(s->st, sessions_open, (uint64_t)-1);
	free(s->items);
	free(s->rxb);
	free(s->discard);
	free(s);
}

static bool sess_idle(void *sp)
{
	const struct sess *s = sp;

	/* bytes of a next frame already staged mean a request has begun */
	return (s->state == RX_HDR || s->state == RX_DEAD) && s->nitems == 0 &&
	       s->l2_req == NULL && s->gpu_req == NULL && s->rq_head == NULL && s->wait_req == NULL && s->tx_head == NULL &&
	       (s->state == RX_DEAD || s->rx_off == s->rx_len);
}

/* Operations of the requests in flight, request after request, item order within each. */
static int sess_rdma_next(void *sp, struct cn_rdma_op *ops, int max)
{
	struct sess *s = sp;
	int k = 0;

	while (s->rq_next != NULL) {
		struct rreq *r = s->rq_next;

		while (k < max && r->given < r->ops) {
			const struct store_item *it = &r->it[r->cur++];

			if (!it->reserved && !it->pinned)
				continue;
			ops[k++] = (struct cn_rdma_op){
				.read = it->reserved,
				.local = it->ref.data,
				.len = it->ref.len,
				.rkey = it->rkey,
				.remote_addr = it->addr,
			};
			r->given++;
		}
		if (r->given < r->ops)
			break;
		s->rq_next = r->next;
	}
	s->ops_out += (unsigned)k;
	return k;
}

/*
 * @n more operations completed, the oldest handed out first, so they belong
 * to the oldest requests in flight. Each request whose last operation is
 * among them finishes (commit or unpin, reply released); then the session
 * runs what was staged behind a barrier or waiting to start. Reporting more
 * than is outstanding is a transport bug: -EINVAL, nothing changed.
 */
static int sess_rdma_done(void *sp, unsigned n)
{
	struct sess *s = sp;
	bool finished = false;

	if (n > s->ops_out)
		return -EINVAL;
	s->ops_out -= n;
	while (n > 0) {
		struct rreq *r = s->rq_head; /* ops_out > 0: its ops are the oldest */
		uint32_t k = r->given - r->done;

		if (k > n)
			k = n;
		r->done += k;
		n -= k;
		if (r->done < r->ops)
			break; /* n is 0: the rest of r's operations are still out */
		s->rq_head = r->next;
		if (s->rq_head == NULL)
			s->rq_tail = NULL;
		if (s->rq_next == r)
			s->rq_next = r->next;
		s->rq_n--;
		s->rq_bytes -= r->bytes;
		rreq_finish(s, r);
		finished = true;
	}
	if (finished)
		sess_process(s);
	return s->state == RX_DEAD ? -EPROTO : 0;
}

const struct cn_session_ops cn_session_ops = {
	.open = sess_open,
	.rx_buf = sess_rx_buf,
	.rx_done = sess_rx_done,
	.rx_paused = sess_rx_paused,
	.tx_iov = sess_tx_iov,
	.tx_done = sess_tx_done,
	.close = sess_close,
	.idle = sess_idle,
	.rdma_next = sess_rdma_next,
	.rdma_done = sess_rdma_done,
	.async_done = sess_async_done,
};
