/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcachenode: one struct cn_client is one transport connection to a node.
 *
 * Requests are pipelined: cn_client_submit() encodes a request and sends it
 * (header and meta from one buffer of the client, payloads straight from the
 * caller's buffers, all in one sendv), then queues it in a FIFO ring;
 * cn_client_wait() reads the reply of the oldest queued request (the node
 * answers in order) and receives RETRIEVE payloads straight into the caller's
 * buffers. Nothing is copied on the way in or out but the small meta parts.
 *
 * Flow control. The transport's sendv blocks until every byte is gone, and a
 * node stops reading a connection while too much of its output is queued
 * (32 MiB in node/session.c). A client that sends a large STORE while many
 * large RETRIEVE replies wait unread would deadlock with the node. So before
 * sending a request of more than CLIENT_SMALL_FRAME bytes, submit reads the
 * replies of earlier requests (into their own buffers, exactly as wait would)
 * while more than CLIENT_RX_WINDOW bytes of replies may be unread; wait then
 * hands those requests back without I/O. Small requests never block in
 * practice (socket buffers hold a full ring of them), so pipelines of
 * RETRIEVEs alone are never held back.
 *
 * Connection states: open (tc != NULL), or closed (tc == NULL) after an I/O
 * error, a protocol violation by the node, an ERROR frame, or a reply with
 * CN_F_CLOSE. Requests still queued when the connection closes fail with the
 * error that closed it on the next cn_client_wait() (which returns that error);
 * every call after that returns -ENOTCONN.
 *
 * A failed cn_client_connect() / cn_client_open() still sets *out (except on
 * -ENOMEM): to a closed client that only carries the error message, so that
 * cn_client_errmsg() works there as after any other failure. The caller
 * closes it with cn_client_close() like any other client.
 *
 * Extensions of the cn_req contract in client.h for the two ops without keys:
 * - CN_OP_PING: nkeys/keys are ignored; bufs is NULL (empty payload) or
 *   bufs[0] holds the payload (len <= CN_PROTO_MAX_PING). The reply must echo
 *   it byte for byte, else the request fails with -EPROTO.
 * - CN_OP_STATUS: nkeys/keys are ignored; bufs[0] is required and receives on
 *   success a malloc()'d, NUL-terminated copy of the JSON document in data
 *   (owned by the caller) and its length (without the NUL) in len.
 *
 * Results: a request-level error reply (status != CN_OK) gives
 * -cn_status_to_errno(status) and the node's message; every status[] entry is
 * set to that status. For batches, result is 0 when every key succeeded (for
 * STORE, CN_E_EXIST counts as success: the stored copy was kept), otherwise
 * the -errno of the first key that failed. A RETRIEVE chunk larger than its
 * buffer's cap is drained (the connection stays usable): that key's status
 * becomes CN_E_TOOBIG, bufs[i].len its size, and the key's error -ENOBUFS.
 *
 * RDMA (a transport with mem_reg, i.e. verbs). STORE and RETRIEVE go out with
 * CN_F_RDMA: the frame is the header and one 48-byte descriptor per key
 * {key, len (STORE) or cap (RETRIEVE), rkey, addr of the caller's buffer}
 * and nothing else; the node RDMA-READs STORE payloads and RDMA-WRITEs
 * RETRIEVE chunks before it replies. The RETRIEVE reply is the statuses and
 * lengths alone; a chunk over its cap comes back as CN_E_TOOBIG with its
 * length (nothing written), which is reported exactly as the inline path
 * reports a drained chunk (CN_E_TOOBIG, bufs[i].len, -ENOBUFS). Each buffer
 * must lie wholly inside one registered region (cn_client_mem_register(); up
 * to CN_CLIENT_MAX_REGIONS, looked up linearly with the last hit first), or
 * it is registered for the request alone: those temporary handles live in
 * the request's ring slot and are deregistered when its reply has been read,
 * or when the connection closes. Each slot also records, as a bitmask, which
 * regions it uses, and every region counts the slots using it, so a region
 * cannot be unregistered while the node may still touch it (-EBUSY). When
 * the connection closes every registration is released before the transport
 * connection (which owns the device's protection domain) goes; table
 * entries stay, so a later unregister still finds them and returns 0.
 * Over transports without mem_reg (tcp, loopback) none of this exists: the
 * registration calls do nothing and frames carry payloads inline.
 *
 * Validation in cn_client_submit() (nothing is sent when it fails): -EINVAL
 * for a malformed request (unknown op, nkeys 0, NULL arrays or buffers, a
 * STORE length of 0), -E2BIG for a request over a node or protocol limit
 * (nkeys > max_keys, a chunk over max_chunk, a frame over max_frame).
 * The frame limit is checked on the inline size (payloads included) over
 * RDMA too, so that a request is valid or not whatever the transport.
 * Duplicate keys are not checked here: that is the node's job.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cachenode/client.h>
#include <cachenode/proto.h>

#include "cn_transport.h"
#include "cn_client_internal.h"
#include "cn_gpu.h"

#define CLIENT_ERRMSG_LEN	  256
#define CLIENT_DEFAULT_TIMEOUT_MS 10000
#define CLIENT_DEFAULT_NAME	  "libcachenode"
#define CLIENT_HELLO_REQ	  8u  /* ver_min, ver_max, name_len, 0 */
#define CLIENT_HELLO_REP	  32u /* up to l1_capacity, before node_id */
/* Largest request meta (an RDMA batch) and largest reply meta (a RETRIEVE one). */
#define CLIENT_TX_META (CN_PROTO_BATCH_HDR + CN_PROTO_RDMA_DESC * CN_PROTO_MAX_KEYS)
#define CLIENT_RX_META (CN_PROTO_BATCH_HDR + CN_PROTO_RETR_DESC * CN_PROTO_MAX_KEYS)
/* Error messages, ping echoes and drained payloads land here. */
#define CLIENT_SCRATCH 16384u
#define CLIENT_MAX_IOV (1 + CN_PROTO_MAX_KEYS)
/* Flow control (see above): well under the node's 32 MiB output limit. */
#define CLIENT_RX_WINDOW   (16u << 20)
#define CLIENT_SMALL_FRAME (64u << 10)
#define CLIENT_MAX_REGIONS CN_CLIENT_MAX_REGIONS
#define CLIENT_MEMLOCK_HINT " (locked-memory limit? see ulimit -l)"

_Static_assert(CLIENT_MAX_REGIONS <= 64, "client_slot.regions is a 64-bit mask");
_Static_assert(CN_PROTO_RDMA_DESC >= CN_PROTO_STORE_DESC, "CLIENT_TX_META");

/* A buffer registered for one request only (RDMA). */
struct client_tmp_reg {
	void *handle;
	uintptr_t start;
	size_t len;
	uint32_t rkey;
};

/* A region registered by cn_client_mem_register(). */
struct client_region {
	bool used;
	uintptr_t start;
	size_t len;
	void *handle;	   /* NULL once the connection released it */
	uint32_t rkey;
	unsigned inflight; /* outstanding requests naming it */
};

struct client_slot {
	struct cn_req *req;
	uint64_t req_id;
	uint64_t reply_bytes; /* most the reply can be (flow control) */
	uint8_t op;
	bool rdma;	      /* sent with CN_F_RDMA */
	bool gpu;	      /* sent with CN_F_GPU */
	uint64_t regions;     /* bit i: uses c->regions[i] (its inflight counts this slot) */
	struct client_tmp_reg *tmp; /* tmp[0 .. ntmp): registered for this request */
	unsigned ntmp, tmp_cap;	    /* the array is kept for reuse, freed at close */
};

struct cn_client {
	const struct cn_transport_ops *ops; /* NULL until a connection was made */
	struct cn_tconn *tc;	/* NULL once the connection is closed */
	bool rdma;		/* ops has mem_reg: STORE / RETRIEVE use CN_F_RDMA */
	int close_err;		/* why it closed: given to requests still queued */
	int timeout_ms;		/* for messages only; the transport enforces it */
	struct cn_node_info node;
	char name[CN_PROTO_MAX_NAME + 1];
	uint64_t next_id;
	/*
	 * ring[head .. head+count) are outstanding, oldest first; the first
	 * ndone of them already have their reply read (by flow control in
	 * submit) and wait only hands them back.
	 */
	unsigned head;
	unsigned count;
	unsigned ndone;
	uint64_t unread_bytes;	/* sum of reply_bytes of the not-done ones */
	struct client_slot ring[CN_CLIENT_MAX_DEPTH];
	struct client_region regions[CLIENT_MAX_REGIONS];
	unsigned last_region;	/* where the last lookup hit: tried first */
	char errmsg[CLIENT_ERRMSG_LEN];
	char closed_why[CLIENT_ERRMSG_LEN];
	struct iovec iov[CLIENT_MAX_IOV];
	uint8_t tx[CN_PROTO_HDR_LEN + CLIENT_TX_META];
	uint8_t rx[CLIENT_RX_META];
	uint8_t scratch[CLIENT_SCRATCH];
};

__attribute__((format(printf, 2, 3))) static void client_err(struct cn_client *c, const char *fmt,
							      ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
}

static const char *op_str(uint8_t op)
{
	return cn_op_name(op);
}

/*
 * Give back what slot @s holds: its temporary registrations and its claim on
 * registered regions. Called when its reply has been read, when it failed
 * before being sent, and for every slot when the connection closes.
 */
static void slot_release(struct cn_client *c, struct client_slot *s)
{
	for (unsigned i = 0; i < s->ntmp; i++)
		if (c->tc != NULL)
			c->ops->mem_dereg(c->tc, s->tmp[i].handle);
	s->ntmp = 0;
	for (unsigned i = 0; s->regions != 0; i++, s->regions >>= 1)
		if (s->regions & 1)
			c->regions[i].inflight--;
}

/*
 * The connection is closing: release every registration while the transport
 * connection still exists. Region entries stay (handle NULL) so that
 * cn_client_mem_unregister() still finds them.
 */
static void client_release_rdma(struct cn_client *c)
{
	if (!c->rdma || c->tc == NULL)
		return;
	for (unsigned i = 0; i < CN_CLIENT_MAX_DEPTH; i++)
		slot_release(c, &c->ring[i]);
	for (unsigned i = 0; i < CLIENT_MAX_REGIONS; i++) {
		struct client_region *r = &c->regions[i];

		if (r->used && r->handle != NULL) {
			c->ops->mem_dereg(c->tc, r->handle);
			r->handle = NULL;
		}
	}
}

/*
 * Close the transport connection (if still open) and remember why, so that
 * requests still queued and later calls can say so.
 */
static void client_shutdown(struct cn_client *c, int err)
{
	if (c->tc != NULL) {
		client_release_rdma(c);
		c->ops->close(&c->tc);
		c->tc = NULL;
		c->close_err = err;
		snprintf(c->closed_why, sizeof(c->closed_why), "%s", c->errmsg);
	}
}

/* An I/O error on the connection: say what failed, close, return @err. */
static int client_io_fail(struct cn_client *c, uint8_t op, const char *doing, int err)
{
	if (err == -ETIMEDOUT)
		client_err(c, "%s: %s: timed out after %d ms", op_str(op), doing, c->timeout_ms);
	else if (err == -ECONNRESET)
		client_err(c, "%s: %s: the node closed the connection", op_str(op), doing);
	else
		client_err(c, "%s: %s: %s", op_str(op), doing, strerror(-err));
	client_shutdown(c, err);
	return err;
}

/* The node broke the protocol: the stream can't be trusted any more. */
__attribute__((format(printf, 3, 4))) static int client_proto_fail(struct cn_client *c, uint8_t op,
								    const char *fmt, ...)
{
	char what[CLIENT_ERRMSG_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	client_err(c, "%s: bad reply from the node: %s", op_str(op), what);
	client_shutdown(c, -EPROTO);
	return -EPROTO;
}

static int client_recv(struct cn_client *c, void *buf, size_t len)
{
	if (len == 0)
		return 0;
	return c->ops->recv(c->tc, buf, len);
}

/* Receive and throw away @len bytes. */
static int client_drain(struct cn_client *c, uint64_t len)
{
	while (len > 0) {
		size_t n = len < CLIENT_SCRATCH ? (size_t)len : CLIENT_SCRATCH;
		int rc = c->ops->recv(c->tc, c->scratch, n);

		if (rc < 0)
			return rc;
		len -= n;
	}
	return 0;
}

/*
 * Receive a message payload (error reply or ERROR frame) of @len bytes into
 * scratch as a printable, NUL-terminated string. Returns 0 or -errno (the
 * connection is closed then).
 */
static int client_recv_msg(struct cn_client *c, uint8_t op, uint32_t len, const char **msg)
{
	char *s = (char *)c->scratch;
	int rc;

	if (len >= CLIENT_SCRATCH)
		return client_proto_fail(c, op, "error message of %" PRIu32 " bytes", len);
	rc = client_recv(c, s, len);
	if (rc < 0)
		return client_io_fail(c, op, "receiving the error message", rc);
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' '))
		len--;
	for (uint32_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			s[i] = '?';
	s[len] = '\0';
	*msg = s;
	return 0;
}

static bool op_has_status(uint8_t op)
{
	return op == CN_OP_STORE || op == CN_OP_RETRIEVE || op == CN_OP_DELETE ||
	       op == CN_OP_PREFETCH;
}

/* A GPU request (keys checked already): STORE/RETRIEVE, lengths, regions. */
static int client_validate_gpu(struct cn_client *c, const struct cn_req *req)
{
	const struct cn_node_info *ni = &c->node;
	uint64_t frame = CN_PROTO_BATCH_HDR + (uint64_t)CN_PROTO_RDMA_DESC * req->nkeys;

	if (req->op != CN_OP_STORE && req->op != CN_OP_RETRIEVE) {
		client_err(c, "%s: GPU places are for store and retrieve", op_str(req->op));
		return -EINVAL;
	}
	for (uint32_t i = 0; i < req->nkeys; i++) {
		const struct cn_buf *b = &req->bufs[i];
		uint32_t len = req->op == CN_OP_STORE ? b->len : b->cap;

		if (req->gpu[i].region == 0 || len == 0) {
			client_err(c, "%s: key %" PRIu32 ": %s", op_str(req->op), i,
				   req->gpu[i].region == 0 ? "no GPU region" : "length 0");
			return -EINVAL;
		}
		if (req->op == CN_OP_STORE && len > ni->max_chunk) {
			client_err(c, "store: key %" PRIu32 ": %" PRIu32
				   " bytes, the node takes chunks of at most %" PRIu32, i, len,
				   ni->max_chunk);
			return -E2BIG;
		}
	}
	if (frame > ni->max_frame) {
		client_err(c, "%s: frame of %" PRIu64 " bytes, the node takes at most %" PRIu64,
			   op_str(req->op), frame, ni->max_frame);
		return -E2BIG;
	}
	return 0;
}

/* Check a caller's request against the protocol and the node's limits. */
static int client_validate(struct cn_client *c, const struct cn_req *req)
{
	const struct cn_node_info *ni = &c->node;
	uint8_t op = req->op;
	uint64_t frame;

	switch (op) {
	case CN_OP_PING:
		if (req->bufs == NULL)
			return 0;
		if (req->bufs[0].len > CN_PROTO_MAX_PING) {
			client_err(c, "ping: payload of %" PRIu32 " bytes, the limit is %u",
				   req->bufs[0].len, CN_PROTO_MAX_PING);
			return -E2BIG;
		}
		if (req->bufs[0].len > 0 && req->bufs[0].data == NULL) {
			client_err(c, "ping: NULL payload buffer");
			return -EINVAL;
		}
		return 0;
	case CN_OP_STATUS:
		if (req->bufs == NULL) {
			client_err(c, "status: bufs[0] is needed to receive the document");
			return -EINVAL;
		}
		return 0;
	case CN_OP_GPU_REGISTER:
	case CN_OP_GPU_UNREGISTER: /* built by cn_client_gpu_(un)register() */
		if (req->bufs == NULL || req->bufs[0].data == NULL ||
		    req->bufs[0].len != (op == CN_OP_GPU_REGISTER ? CN_PROTO_GPU_REG_LEN
								   : CN_PROTO_BATCH_HDR)) {
			client_err(c, "%s: use cn_client_gpu_register()", op_str(op));
			return -EINVAL;
		}
		return 0;
	case CN_OP_LOOKUP:
	case CN_OP_STORE:
	case CN_OP_RETRIEVE:
	case CN_OP_DELETE:
	case CN_OP_PREFETCH:
		break;
	default:
		client_err(c, "submit: unknown or reserved opcode %u", op);
		return -EINVAL;
	}

	if (req->nkeys == 0) {
		client_err(c, "%s: no keys (nkeys is 0)", op_str(op));
		return -EINVAL;
	}
	if (req->nkeys > ni->max_keys) {
		client_err(c, "%s: %" PRIu32 " keys, the node takes at most %" PRIu32, op_str(op),
			   req->nkeys, ni->max_keys);
		return -E2BIG;
	}
	if (req->keys == NULL) {
		client_err(c, "%s: NULL key array", op_str(op));
		return -EINVAL;
	}
	if ((op == CN_OP_STORE || op == CN_OP_RETRIEVE) && req->bufs == NULL) {
		client_err(c, "%s: NULL buffer array", op_str(op));
		return -EINVAL;
	}

	if (req->gpu != NULL)
		return client_validate_gpu(c, req);
	if (op == CN_OP_STORE)
		frame = CN_PROTO_BATCH_HDR + (uint64_t)CN_PROTO_STORE_DESC * req->nkeys;
	else
		frame = CN_PROTO_BATCH_HDR + (uint64_t)CN_KEY_LEN * req->nkeys;

	for (uint32_t i = 0; i < req->nkeys && op == CN_OP_RETRIEVE; i++) {
		if (req->bufs[i].data == NULL && req->bufs[i].cap > 0) {
			client_err(c, "retrieve: key %" PRIu32 ": NULL buffer with cap %" PRIu32, i,
				   req->bufs[i].cap);
			return -EINVAL;
		}
	}
	for (uint32_t i = 0; i < req->nkeys && op == CN_OP_STORE; i++) {
		const struct cn_buf *b = &req->bufs[i];

		if (b->len == 0) {
			client_err(c, "store: key %" PRIu32 ": length 0 (chunks are 1..%" PRIu32
				   " bytes)", i, ni->max_chunk);
			return -EINVAL;
		}
		if (b->data == NULL) {
			client_err(c, "store: key %" PRIu32 ": NULL buffer", i);
			return -EINVAL;
		}
		if (b->len > ni->max_chunk) {
			client_err(c, "store: key %" PRIu32 ": %" PRIu32
				   " bytes, the node takes chunks of at most %" PRIu32, i, b->len,
				   ni->max_chunk);
			return -E2BIG;
		}
		frame += b->len;
	}
	if (frame > ni->max_frame) {
		client_err(c, "%s: frame of %" PRIu64 " bytes, the node takes at most %" PRIu64,
			   op_str(op), frame, ni->max_frame);
		return -E2BIG;
	}
	return 0;
}

/* The registered region holding all of [p, p + len), or -1. */
static int region_find(struct cn_client *c, uintptr_t p, size_t len)
{
	const struct client_region *r = &c->regions[c->last_region];

	if (r->used && r->handle != NULL && p >= r->start && p - r->start <= r->len &&
	    len <= r->len - (p - r->start))
		return (int)c->last_region;
	for (unsigned i = 0; i < CLIENT_MAX_REGIONS; i++) {
		r = &c->regions[i];
		if (r->used && r->handle != NULL && p >= r->start && p - r->start <= r->len &&
		    len <= r->len - (p - r->start)) {
			c->last_region = i;
			return (int)i;
		}
	}
	return -1;
}

/*
 * The rkey for [data, data + len) of key @i of a request going out in slot
 * @s: a registered region's, else one registered now for this request (kept
 * in @s). Returns 0, or -errno with the message set (nothing sent yet; the
 * caller releases @s).
 */
static int client_rkey(struct cn_client *c, struct client_slot *s, uint8_t op, uint32_t i,
		       void *data, uint32_t len, uint32_t *rkey)
{
	uintptr_t p = (uintptr_t)data;
	struct client_tmp_reg *t;
	int r = region_find(c, p, len), rc;

	if (r >= 0) {
		if (!(s->regions & (1ull << r))) {
			s->regions |= 1ull << r;
			c->regions[r].inflight++;
		}
		*rkey = c->regions[r].rkey;
		return 0;
	}
	for (unsigned k = 0; k < s->ntmp; k++) {
		t = &s->tmp[k];
		if (p >= t->start && p - t->start <= t->len && len <= t->len - (p - t->start)) {
			*rkey = t->rkey;
			return 0;
		}
	}
	if (s->ntmp == s->tmp_cap) {
		unsigned ncap = s->tmp_cap ? 2 * s->tmp_cap : 8;
		struct client_tmp_reg *nt = realloc(s->tmp, ncap * sizeof(*nt));

		if (nt == NULL) {
			client_err(c, "%s: key %" PRIu32 ": out of memory", op_str(op), i);
			return -ENOMEM;
		}
		s->tmp = nt;
		s->tmp_cap = ncap;
	}
	t = &s->tmp[s->ntmp];
	rc = c->ops->mem_reg(c->tc, data, len, &t->handle, &t->rkey);
	if (rc < 0) {
		client_err(c, "%s: key %" PRIu32 ": registering the %" PRIu32
			   "-byte buffer at %p for RDMA: %s%s", op_str(op), i, len, data,
			   strerror(-rc), rc == -ENOMEM ? CLIENT_MEMLOCK_HINT : "");
		return rc;
	}
	t->start = p;
	t->len = len;
	s->ntmp++;
	*rkey = t->rkey;
	return 0;
}

/*
 * STORE / RETRIEVE with CN_F_RDMA: n x {key, len or cap, rkey, addr} after
 * the batch header; no payload. Returns the meta length or -errno.
 */
static int64_t client_encode_rdma(struct cn_client *c, const struct cn_req *req,
				  struct client_slot *s, uint8_t *m)
{
	size_t mlen = CN_PROTO_BATCH_HDR;

	cn_put_le32(m, req->nkeys);
	cn_put_le32(m + 4, 0);
	for (uint32_t i = 0; i < req->nkeys; i++) {
		const struct cn_buf *b = &req->bufs[i];
		uint32_t len = req->op == CN_OP_STORE ? b->len : b->cap, rkey = 0;
		uint8_t *d = m + mlen;

		/* a RETRIEVE buffer of cap 0 takes nothing: no memory to name */
		if (len > 0) {
			int rc = client_rkey(c, s, req->op, i, b->data, len, &rkey);

			if (rc < 0)
				return rc;
		}
		memcpy(d, req->keys[i].b, CN_KEY_LEN);
		cn_put_le32(d + CN_KEY_LEN, len);
		cn_put_le32(d + CN_KEY_LEN + 4, rkey);
		cn_put_le64(d + CN_KEY_LEN + 8, len > 0 ? (uint64_t)(uintptr_t)b->data : 0);
		mlen += CN_PROTO_RDMA_DESC;
	}
	return (int64_t)mlen;
}

/*
 * Encode @req (already validated) into c->tx and c->iov: iov[0] is header +
 * meta, then one iovec per payload buffer of the caller (none over RDMA,
 * where the registrations are taken into slot @s). Returns the iovec count,
 * or -errno when a buffer could not be registered (@s is then released).
 */
static int client_encode(struct cn_client *c, const struct cn_req *req, uint64_t req_id,
			 struct client_slot *s)
{
	uint8_t *m = c->tx + CN_PROTO_HDR_LEN;
	struct cn_proto_hdr h;
	size_t mlen = 0;
	uint64_t plen = 0;
	uint16_t flags = 0;
	int n = 1;

	s->gpu = req->gpu != NULL && (req->op == CN_OP_STORE || req->op == CN_OP_RETRIEVE);
	s->rdma = !s->gpu && c->rdma && (req->op == CN_OP_STORE || req->op == CN_OP_RETRIEVE);
	if (s->gpu) {
		/* {key, len or cap, region, off}: the RDMA descriptor's layout */
		cn_put_le32(m, req->nkeys);
		cn_put_le32(m + 4, 0);
		mlen = CN_PROTO_BATCH_HDR;
		for (uint32_t i = 0; i < req->nkeys; i++) {
			const struct cn_buf *b = &req->bufs[i];
			uint8_t *d = m + mlen;

			memcpy(d, req->keys[i].b, CN_KEY_LEN);
			cn_put_le32(d + CN_KEY_LEN, req->op == CN_OP_STORE ? b->len : b->cap);
			cn_put_le32(d + CN_KEY_LEN + 4, req->gpu[i].region);
			cn_put_le64(d + CN_KEY_LEN + 8, req->gpu[i].off);
			mlen += CN_PROTO_RDMA_DESC;
		}
		flags = CN_F_GPU;
		goto header;
	}
	if (s->rdma) {
		int64_t ml = client_encode_rdma(c, req, s, m);

		if (ml < 0) {
			slot_release(c, s);
			return (int)ml;
		}
		mlen = (size_t)ml;
		flags = CN_F_RDMA;
		goto header;
	}

	switch (req->op) {
	case CN_OP_HELLO: {
		size_t name_len = strlen(c->name);

		cn_put_le16(m, CN_PROTO_VERSION);
		cn_put_le16(m + 2, CN_PROTO_VERSION);
		cn_put_le16(m + 4, (uint16_t)name_len);
		cn_put_le16(m + 6, 0);
		memcpy(m + CLIENT_HELLO_REQ, c->name, name_len);
		mlen = CLIENT_HELLO_REQ + name_len;
		break;
	}
	case CN_OP_PING:
		if (req->bufs != NULL && req->bufs[0].len > 0) {
			c->iov[n].iov_base = req->bufs[0].data;
			c->iov[n].iov_len = req->bufs[0].len;
			plen = req->bufs[0].len;
			n++;
		}
		break;
	case CN_OP_STATUS:
		break;
	case CN_OP_GPU_REGISTER:
	case CN_OP_GPU_UNREGISTER:
		memcpy(m, req->bufs[0].data, req->bufs[0].len);
		mlen = req->bufs[0].len;
		break;
	case CN_OP_LOOKUP:
	case CN_OP_RETRIEVE:
	case CN_OP_DELETE:
	case CN_OP_PREFETCH:
		cn_put_le32(m, req->nkeys);
		cn_put_le32(m + 4, 0);
		mlen = CN_PROTO_BATCH_HDR;
		for (uint32_t i = 0; i < req->nkeys; i++) {
			memcpy(m + mlen, req->keys[i].b, CN_KEY_LEN);
			mlen += CN_KEY_LEN;
		}
		break;
	case CN_OP_STORE:
		cn_put_le32(m, req->nkeys);
		cn_put_le32(m + 4, 0);
		mlen = CN_PROTO_BATCH_HDR;
		for (uint32_t i = 0; i < req->nkeys; i++) {
			memcpy(m + mlen, req->keys[i].b, CN_KEY_LEN);
			cn_put_le32(m + mlen + CN_KEY_LEN, req->bufs[i].len);
			cn_put_le32(m + mlen + CN_KEY_LEN + 4, 0);
			mlen += CN_PROTO_STORE_DESC;
			c->iov[n].iov_base = req->bufs[i].data;
			c->iov[n].iov_len = req->bufs[i].len;
			plen += req->bufs[i].len;
			n++;
		}
		break;
	}
header:
	cn_proto_hdr_init(&h, req->op, flags, req_id, (uint32_t)(mlen + plen), 0);
	cn_proto_hdr_encode(&h, c->tx);
	c->iov[0].iov_base = c->tx;
	c->iov[0].iov_len = CN_PROTO_HDR_LEN + mlen;
	return n;
}

/*
 * The largest reply @req can get (error messages aside), for flow control.
 * Over RDMA a RETRIEVE reply carries no payload: the chunks were written
 * into the caller's buffers by the node before it replied.
 */
static uint64_t reply_bound(const struct cn_req *req, bool rdma)
{
	uint64_t b = CN_PROTO_HDR_LEN + CN_PROTO_BATCH_HDR;

	switch (req->op) {
	case CN_OP_RETRIEVE:
		b += (uint64_t)CN_PROTO_RETR_DESC * req->nkeys;
		for (uint32_t i = 0; i < req->nkeys && !rdma; i++)
			b += req->bufs[i].cap;
		break;
	case CN_OP_PING:
		b += req->bufs != NULL ? req->bufs[0].len : 0;
		break;
	case CN_OP_STATUS:
		b += 64u << 10; /* a guess: the document has no announced size */
		break;
	case CN_OP_HELLO:
		b += CLIENT_HELLO_REP + CN_PROTO_MAX_NAME;
		break;
	default:
		b += 4ull * req->nkeys;
		break;
	}
	return b;
}

static int client_read_reply(struct cn_client *c, struct client_slot *s);

/* Read the reply of the oldest not-done request; wait() hands it back later. */
static int client_absorb(struct cn_client *c)
{
	struct client_slot *s = &c->ring[(c->head + c->ndone) % CN_CLIENT_MAX_DEPTH];
	int rc = client_read_reply(c, s);

	if (rc < 0)
		return rc;
	c->unread_bytes -= s->reply_bytes;
	c->ndone++;
	return 0;
}

/* Send @req and queue it; validation is the caller's. */
static int client_post(struct cn_client *c, struct cn_req *req)
{
	/* the slot it will take; free, since count < CN_CLIENT_MAX_DEPTH */
	struct client_slot *s = &c->ring[(c->head + c->count) % CN_CLIENT_MAX_DEPTH];
	uint64_t id = c->next_id++, frame = 0;
	int n, rc;

	n = client_encode(c, req, id, s);
	if (n < 0) {
		req->result = n;
		return n;
	}
	for (int i = 0; i < n; i++)
		frame += c->iov[i].iov_len;
	/* Flow control (see the top of the file): a large send must not stall. */
	while (frame > CLIENT_SMALL_FRAME && c->count > c->ndone &&
	       c->unread_bytes > CLIENT_RX_WINDOW) {
		rc = client_absorb(c);
		if (rc == 0 && c->tc == NULL)
			rc = -ECONNRESET; /* that reply carried CN_F_CLOSE */
		if (rc < 0) {
			/* the connection is closed: that released @s too */
			req->result = rc;
			return rc;
		}
	}
	rc = c->ops->sendv(c->tc, c->iov, n, CN_SEND_MORE);
	if (rc < 0) {
		req->result = client_io_fail(c, req->op, "sending the request", rc);
		return rc;
	}
	req->req_id = id;
	req->result = -EINPROGRESS;
	s->req = req;
	s->req_id = id;
	s->op = req->op;
	s->reply_bytes = reply_bound(req, s->rdma || s->gpu);
	c->unread_bytes += s->reply_bytes;
	c->count++;
	return 0;
}

int cn_client_submit(struct cn_client *c, struct cn_req *req)
{
	int rc;

	if (c == NULL || req == NULL)
		return -EINVAL;
	if (c->tc == NULL) {
		client_err(c, "%s: not connected (%s)", op_str(req->op), c->closed_why);
		req->result = -ENOTCONN;
		return -ENOTCONN;
	}
	if (c->count == CN_CLIENT_MAX_DEPTH) {
		client_err(c, "%s: %d requests outstanding already", op_str(req->op),
			   CN_CLIENT_MAX_DEPTH);
		req->result = -EBUSY;
		return -EBUSY;
	}
	rc = client_validate(c, req);
	if (rc < 0) {
		req->result = rc;
		return rc;
	}
	return client_post(c, req);
}

/*
 * Note the first key of a batch that failed: its error becomes the request's
 * result and its description the client's message.
 */
static void key_fail(struct cn_client *c, struct cn_req *req, uint32_t i, int err, const char *why)
{
	if (req->result != 0)
		return;
	req->result = err;
	if (req->nkeys == 1)
		client_err(c, "%s: %s", op_str(req->op), why);
	else
		client_err(c, "%s: key %" PRIu32 " of %" PRIu32 ": %s", op_str(req->op), i,
			   req->nkeys, why);
}

static int reply_hello(struct cn_client *c, const struct cn_proto_hdr *h)
{
	struct cn_node_info *ni = &c->node;
	const uint8_t *p = c->rx;
	uint16_t id_len;
	int rc;

	if (h->payload_len < CLIENT_HELLO_REP ||
	    h->payload_len > CLIENT_HELLO_REP + CN_PROTO_MAX_NAME)
		return client_proto_fail(c, CN_OP_HELLO, "HELLO reply of %" PRIu32 " bytes",
					 h->payload_len);
	rc = client_recv(c, c->rx, h->payload_len);
	if (rc < 0)
		return client_io_fail(c, CN_OP_HELLO, "receiving the reply", rc);
	id_len = cn_get_le16(p + 2);
	if (CLIENT_HELLO_REP + id_len != h->payload_len)
		return client_proto_fail(c, CN_OP_HELLO, "node_id_len %u in a reply of %" PRIu32
					 " bytes", id_len, h->payload_len);
	ni->version = cn_get_le16(p);
	if (ni->version != CN_PROTO_VERSION) {
		client_err(c, "hello: the node chose protocol version %u, we speak %u",
			   ni->version, CN_PROTO_VERSION);
		client_shutdown(c, -EPROTONOSUPPORT);
		return -EPROTONOSUPPORT;
	}
	ni->max_keys = cn_get_le32(p + 4);
	ni->max_chunk = cn_get_le32(p + 8);
	ni->max_frame = cn_get_le64(p + 16);
	ni->l1_capacity = cn_get_le64(p + 24);
	memcpy(ni->node_id, p + CLIENT_HELLO_REP, id_len);
	ni->node_id[id_len] = '\0';
	if (ni->max_keys == 0 || ni->max_chunk == 0 || ni->max_frame == 0)
		return client_proto_fail(c, CN_OP_HELLO, "zero limit (max_keys %" PRIu32
					 ", max_chunk %" PRIu32 ", max_frame %" PRIu64 ")",
					 ni->max_keys, ni->max_chunk, ni->max_frame);
	/* A node may lower the protocol's limits, never raise them. */
	if (ni->max_keys > CN_PROTO_MAX_KEYS)
		ni->max_keys = CN_PROTO_MAX_KEYS;
	if (ni->max_chunk > CN_PROTO_MAX_CHUNK)
		ni->max_chunk = CN_PROTO_MAX_CHUNK;
	if (ni->max_frame > CN_PROTO_MAX_FRAME)
		ni->max_frame = CN_PROTO_MAX_FRAME;
	return 0;
}

static int reply_ping(struct cn_client *c, struct cn_req *req, const struct cn_proto_hdr *h)
{
	uint32_t sent = req->bufs != NULL ? req->bufs[0].len : 0;
	int rc;

	if (h->payload_len > CLIENT_SCRATCH)
		return client_proto_fail(c, CN_OP_PING, "echo of %" PRIu32 " bytes to a ping of %"
					 PRIu32, h->payload_len, sent);
	rc = client_recv(c, c->scratch, h->payload_len);
	if (rc < 0)
		return client_io_fail(c, CN_OP_PING, "receiving the reply", rc);
	if (h->payload_len != sent || (sent > 0 && memcmp(c->scratch, req->bufs[0].data, sent))) {
		client_err(c, "ping: the echo differs from the payload sent (%" PRIu32
			   " bytes back, %" PRIu32 " sent)", h->payload_len, sent);
		req->result = -EPROTO;
	}
	return 0;
}

/* GPU_REGISTER: u32 region, u32 0 (into req->prefix: the request is the library's); GPU_UNREGISTER: empty. */
static int reply_gpu_region(struct cn_client *c, struct cn_req *req, const struct cn_proto_hdr *h)
{
	uint32_t want = h->opcode == CN_OP_GPU_REGISTER ? CN_PROTO_BATCH_HDR : 0;
	int rc;

	if (h->payload_len != want)
		return client_proto_fail(c, h->opcode, "reply of %" PRIu32 " bytes", h->payload_len);
	if (want == 0)
		return 0;
	rc = client_recv(c, c->scratch, want);
	if (rc < 0)
		return client_io_fail(c, h->opcode, "receiving the reply", rc);
	req->prefix = cn_get_le32(c->scratch);
	if (req->prefix == 0)
		return client_proto_fail(c, h->opcode, "region 0");
	return 0;
}

static int reply_lookup(struct cn_client *c, struct cn_req *req, const struct cn_proto_hdr *h)
{
	uint32_t n = req->nkeys, prefix;
	int rc;

	if (h->payload_len != CN_PROTO_BATCH_HDR + n)
		return client_proto_fail(c, CN_OP_LOOKUP, "reply of %" PRIu32 " bytes for %" PRIu32
					 " keys", h->payload_len, n);
	rc = client_recv(c, c->rx, h->payload_len);
	if (rc < 0)
		return client_io_fail(c, CN_OP_LOOKUP, "receiving the reply", rc);
	prefix = cn_get_le32(c->rx + 4);
	if (cn_get_le32(c->rx) != n || prefix > n)
		return client_proto_fail(c, CN_OP_LOOKUP, "count %" PRIu32 ", prefix %" PRIu32
					 " for %" PRIu32 " keys", cn_get_le32(c->rx), prefix, n);
	req->prefix = prefix;
	if (req->tiers != NULL)
		memcpy(req->tiers, c->rx + CN_PROTO_BATCH_HDR, n);
	return 0;
}

/* STORE and DELETE: one i32 status per key. */
static int reply_statuses(struct cn_client *c, struct cn_req *req, const struct cn_proto_hdr *h)
{
	uint32_t n = req->nkeys;
	int rc;

	if (h->payload_len != CN_PROTO_BATCH_HDR + 4 * n)
		return client_proto_fail(c, req->op, "reply of %" PRIu32 " bytes for %" PRIu32
					 " keys", h->payload_len, n);
	rc = client_recv(c, c->rx, h->payload_len);
	if (rc < 0)
		return client_io_fail(c, req->op, "receiving the reply", rc);
	if (cn_get_le32(c->rx) != n)
		return client_proto_fail(c, req->op, "count %" PRIu32 " for %" PRIu32 " keys",
					 cn_get_le32(c->rx), n);
	for (uint32_t i = 0; i < n; i++) {
		int32_t st = (int32_t)cn_get_le32(c->rx + CN_PROTO_BATCH_HDR + 4 * i);

		if (req->status != NULL)
			req->status[i] = st;
		if (st == CN_OK || (st == CN_E_EXIST && req->op == CN_OP_STORE))
			continue;
		key_fail(c, req, i, -cn_status_to_errno(st), cn_status_str(st));
	}
	return 0;
}

/* The key's chunk did not fit its buffer: as the caller sees it on every transport. */
static void key_too_big(struct cn_client *c, struct cn_req *req, uint32_t i, uint32_t len)
{
	char why[96];

	req->bufs[i].len = len;
	if (req->status != NULL)
		req->status[i] = CN_E_TOOBIG;
	snprintf(why, sizeof(why), "chunk of %" PRIu32 " bytes does not fit the buffer (cap %"
		 PRIu32 ")", len, req->bufs[i].cap);
	key_fail(c, req, i, -ENOBUFS, why);
}

static int reply_retrieve(struct cn_client *c, struct cn_req *req, const struct cn_proto_hdr *h)
{
	const uint32_t n = req->nkeys;
	const uint32_t mlen = CN_PROTO_BATCH_HDR + CN_PROTO_RETR_DESC * n;
	uint64_t total = mlen;
	int rc;

	if (h->payload_len < mlen)
		return client_proto_fail(c, CN_OP_RETRIEVE, "reply of %" PRIu32 " bytes for %"
					 PRIu32 " keys", h->payload_len, n);
	rc = client_recv(c, c->rx, mlen);
	if (rc < 0)
		return client_io_fail(c, CN_OP_RETRIEVE, "receiving the reply", rc);
	if (cn_get_le32(c->rx) != n)
		return client_proto_fail(c, CN_OP_RETRIEVE, "count %" PRIu32 " for %" PRIu32
					 " keys", cn_get_le32(c->rx), n);
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *d = c->rx + CN_PROTO_BATCH_HDR + CN_PROTO_RETR_DESC * i;

		if ((int32_t)cn_get_le32(d) == CN_OK)
			total += cn_get_le32(d + 4);
	}
	if (total != h->payload_len)
		return client_proto_fail(c, CN_OP_RETRIEVE, "payload_len %" PRIu32
					 " but the descriptors add up to %" PRIu64, h->payload_len,
					 total);

	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *d = c->rx + CN_PROTO_BATCH_HDR + CN_PROTO_RETR_DESC * i;
		int32_t st = (int32_t)cn_get_le32(d);
		uint32_t len = cn_get_le32(d + 4);
		struct cn_buf *b = &req->bufs[i];

		if (st != CN_OK) {
			b->len = 0;
			if (req->status != NULL)
				req->status[i] = st;
			key_fail(c, req, i, -cn_status_to_errno(st), cn_status_str(st));
			continue;
		}
		b->len = len;
		if (len <= b->cap) {
			rc = client_recv(c, b->data, len);
			if (req->status != NULL)
				req->status[i] = CN_OK;
		} else {
			rc = client_drain(c, len);
			key_too_big(c, req, i, len);
		}
		if (rc < 0)
			return client_io_fail(c, CN_OP_RETRIEVE, "receiving a chunk", rc);
	}
	return 0;
}

/*
 * RETRIEVE sent with CN_F_RDMA: n x {status, len} and nothing after them.
 * Every CN_OK chunk is already in its buffer (the node wrote it before
 * replying); one over its cap is CN_E_TOOBIG with its length.
 */
static int reply_retrieve_rdma(struct cn_client *c, struct cn_req *req,
			       const struct cn_proto_hdr *h)
{
	const uint32_t n = req->nkeys;
	const uint32_t mlen = CN_PROTO_BATCH_HDR + CN_PROTO_RETR_DESC * n;
	int rc;

	if (h->payload_len != mlen)
		return client_proto_fail(c, CN_OP_RETRIEVE, "RDMA reply of %" PRIu32
					 " bytes for %" PRIu32 " keys (expected %" PRIu32 ")",
					 h->payload_len, n, mlen);
	rc = client_recv(c, c->rx, mlen);
	if (rc < 0)
		return client_io_fail(c, CN_OP_RETRIEVE, "receiving the reply", rc);
	if (cn_get_le32(c->rx) != n)
		return client_proto_fail(c, CN_OP_RETRIEVE, "count %" PRIu32 " for %" PRIu32
					 " keys", cn_get_le32(c->rx), n);
	/* check every entry before touching the caller's results */
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *d = c->rx + CN_PROTO_BATCH_HDR + CN_PROTO_RETR_DESC * i;
		uint32_t len = cn_get_le32(d + 4);

		if ((int32_t)cn_get_le32(d) == CN_OK && len > req->bufs[i].cap)
			return client_proto_fail(c, CN_OP_RETRIEVE, "key %" PRIu32 ": %" PRIu32
						 " bytes written into a buffer of %" PRIu32, i,
						 len, req->bufs[i].cap);
	}
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *d = c->rx + CN_PROTO_BATCH_HDR + CN_PROTO_RETR_DESC * i;
		int32_t st = (int32_t)cn_get_le32(d);
		uint32_t len = cn_get_le32(d + 4);

		if (st == CN_OK) {
			req->bufs[i].len = len;
			if (req->status != NULL)
				req->status[i] = CN_OK;
		} else if (st == CN_E_TOOBIG && len > req->bufs[i].cap) {
			key_too_big(c, req, i, len);
		} else {
			req->bufs[i].len = 0;
			if (req->status != NULL)
				req->status[i] = st;
			key_fail(c, req, i, -cn_status_to_errno(st), cn_status_str(st));
		}
	}
	return 0;
}

static int reply_status(struct cn_client *c, struct cn_req *req, const struct cn_proto_hdr *h)
{
	char *doc = malloc((size_t)h->payload_len + 1);
	int rc;

	if (doc == NULL) {
		rc = client_drain(c, h->payload_len);
		if (rc < 0)
			return client_io_fail(c, CN_OP_STATUS, "receiving the reply", rc);
		client_err(c, "status: no memory for a document of %" PRIu32 " bytes",
			   h->payload_len);
		req->result = -ENOMEM;
		return 0;
	}
	rc = client_recv(c, doc, h->payload_len);
	if (rc < 0) {
		free(doc);
		return client_io_fail(c, CN_OP_STATUS, "receiving the reply", rc);
	}
	doc[h->payload_len] = '\0';
	req->bufs[0].data = doc;
	req->bufs[0].len = h->payload_len;
	req->bufs[0].cap = h->payload_len + 1;
	return 0;
}

/*
 * Read the reply to the oldest outstanding request and complete it (sets
 * req->result). Returns 0, or -errno when the connection failed (it is closed
 * then and the request is not complete).
 */
static int client_read_reply(struct cn_client *c, struct client_slot *s)
{
	struct cn_req *req = s->req;
	uint8_t hb[CN_PROTO_HDR_LEN];
	struct cn_proto_hdr h;
	enum cn_status st;
	const char *msg;
	int rc;

	rc = c->ops->recv(c->tc, hb, sizeof(hb));
	if (rc < 0)
		return client_io_fail(c, s->op, "waiting for the reply", rc);
	st = cn_proto_hdr_decode(hb, &h);
	if (st == CN_E_VERSION) {
		client_err(c, "%s: the node answered in protocol version %u, we speak %u",
			   op_str(s->op), h.version, CN_PROTO_VERSION);
		client_shutdown(c, -EPROTONOSUPPORT);
		return -EPROTONOSUPPORT;
	}
	if (st != CN_OK)
		return client_proto_fail(c, s->op, "unusable header (%s)", cn_status_str(st));

	if (h.opcode == CN_OP_ERROR) {
		rc = client_recv_msg(c, s->op, h.payload_len, &msg);
		if (rc < 0)
			return rc;
		client_err(c, "%s: the node closed the connection: %s", op_str(s->op),
			   msg[0] ? msg : cn_status_str(h.status));
		client_shutdown(c, -ECONNRESET);
		return -ECONNRESET;
	}
	if (!(h.flags & CN_F_RESPONSE))
		return client_proto_fail(c, s->op, "frame without the response flag (opcode %u)",
					 h.opcode);
	if (h.req_id != s->req_id)
		return client_proto_fail(c, s->op, "reply to request %" PRIu64 ", expected %" PRIu64,
					 h.req_id, s->req_id);
	if (h.opcode != s->op)
		return client_proto_fail(c, s->op, "%s reply", op_str(h.opcode));

	req->result = 0;
	if (h.status != CN_OK) {
		rc = client_recv_msg(c, s->op, h.payload_len, &msg);
		if (rc < 0)
			return rc;
		client_err(c, "%s: node says: %s", op_str(s->op),
			   msg[0] ? msg : cn_status_str(h.status));
		req->result = -cn_status_to_errno(h.status);
		if (op_has_status(s->op) && req->status != NULL)
			for (uint32_t i = 0; i < req->nkeys; i++)
				req->status[i] = h.status;
	} else {
		switch (s->op) {
		case CN_OP_HELLO:
			rc = reply_hello(c, &h);
			break;
		case CN_OP_PING:
			rc = reply_ping(c, req, &h);
			break;
		case CN_OP_LOOKUP:
			rc = reply_lookup(c, req, &h);
			break;
		case CN_OP_STORE:
		case CN_OP_DELETE:
		case CN_OP_PREFETCH:
			rc = reply_statuses(c, req, &h);
			break;
		case CN_OP_RETRIEVE:
			rc = s->rdma || s->gpu ? reply_retrieve_rdma(c, req, &h)
					       : reply_retrieve(c, req, &h);
			break;
		case CN_OP_GPU_REGISTER:
		case CN_OP_GPU_UNREGISTER:
			rc = reply_gpu_region(c, req, &h);
			break;
		case CN_OP_STATUS:
			rc = reply_status(c, req, &h);
			break;
		default:
			rc = client_proto_fail(c, s->op, "reply to an unknown opcode");
			break;
		}
		if (rc < 0)
			return rc;
	}
	/* the node is done with the request's memory */
	slot_release(c, s);

	if (h.flags & CN_F_CLOSE) {
		/* The request is complete; whatever is queued behind it is lost. */
		client_shutdown(c, -ECONNRESET);
		snprintf(c->closed_why, sizeof(c->closed_why),
			 "the node closed the connection after a %s reply", op_str(s->op));
	}
	return 0;
}

/*
 * Fail every outstanding request with @err (the connection is gone). Only
 * called when none of them has its reply read already (ndone == 0).
 */
static void client_fail_all(struct cn_client *c, int err)
{
	c->unread_bytes = 0;
	while (c->count > 0) {
		c->ring[c->head].req->result = err;
		c->head = (c->head + 1) % CN_CLIENT_MAX_DEPTH;
		c->count--;
	}
}

int cn_client_wait(struct cn_client *c, struct cn_req **done)
{
	struct client_slot *s;
	int rc;

	if (done != NULL)
		*done = NULL;
	if (c == NULL || done == NULL)
		return -EINVAL;
	if (c->ndone > 0) {
		/* Its reply was read by flow control in submit. */
		s = &c->ring[c->head];
		c->head = (c->head + 1) % CN_CLIENT_MAX_DEPTH;
		c->count--;
		c->ndone--;
		*done = s->req;
		return 0;
	}
	if (c->tc == NULL) {
		if (c->count == 0) {
			client_err(c, "wait: not connected (%s)", c->closed_why);
			return -ENOTCONN;
		}
		rc = c->close_err < 0 ? c->close_err : -ECONNRESET;
		client_fail_all(c, rc);
		return rc;
	}
	if (c->count == 0) {
		client_err(c, "wait: no request outstanding");
		return -EAGAIN;
	}
	s = &c->ring[c->head];
	rc = client_read_reply(c, s);
	if (rc < 0) {
		client_fail_all(c, rc);
		return rc;
	}
	c->unread_bytes -= s->reply_bytes;
	c->head = (c->head + 1) % CN_CLIENT_MAX_DEPTH;
	c->count--;
	*done = s->req;
	return 0;
}

unsigned cn_client_outstanding(const struct cn_client *c)
{
	return c != NULL ? c->count : 0;
}

int cn_client_exec(struct cn_client *c, struct cn_req *req)
{
	struct cn_req *done;
	int rc;

	if (c == NULL || req == NULL)
		return -EINVAL;
	if (c->count > 0) {
		client_err(c, "%s: %u requests outstanding (exec needs none)", op_str(req->op),
			   c->count);
		req->result = -EBUSY;
		return -EBUSY;
	}
	rc = cn_client_submit(c, req);
	if (rc < 0)
		return rc;
	rc = cn_client_wait(c, &done);
	if (rc < 0)
		return rc;
	return done->result;
}

/* A client with no connection yet (or ever: it may only carry a message). */
static struct cn_client *client_alloc(const struct cn_client_opts *opts)
{
	struct cn_client *c = calloc(1, sizeof(*c));
	const char *name = CLIENT_DEFAULT_NAME;

	if (c == NULL)
		return NULL;
	c->timeout_ms = CLIENT_DEFAULT_TIMEOUT_MS;
	if (opts != NULL && opts->timeout_ms != 0)
		c->timeout_ms = opts->timeout_ms;
	if (opts != NULL && opts->name != NULL)
		name = opts->name;
	/* Names longer than the protocol allows are cut, not refused. */
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->next_id = 1;
	c->close_err = -ENOTCONN;
	snprintf(c->closed_why, sizeof(c->closed_why), "never connected");
	c->node.max_keys = CN_PROTO_MAX_KEYS;
	c->node.max_chunk = CN_PROTO_MAX_CHUNK;
	c->node.max_frame = CN_PROTO_MAX_FRAME;
	return c;
}

/* Take @tc over and exchange HELLO. On failure the connection is closed. */
static int client_start(struct cn_client *c, const struct cn_transport_ops *ops,
			struct cn_tconn *tc)
{
	struct cn_req hello = {.op = CN_OP_HELLO};
	struct cn_req *done;
	int rc;

	c->ops = ops;
	c->tc = tc;
	c->rdma = ops->mem_reg != NULL && ops->mem_dereg != NULL;
	rc = client_post(c, &hello);
	if (rc < 0)
		return rc;
	rc = cn_client_wait(c, &done);
	if (rc < 0)
		return rc;
	if (hello.result < 0) {
		client_shutdown(c, hello.result);
		return hello.result;
	}
	if (c->tc == NULL) {
		/* HELLO answered with CN_F_CLOSE: nothing more to say to that node. */
		return -ECONNRESET;
	}
	return 0;
}

int cn_client_open(const struct cn_transport_ops *ops, struct cn_tconn *tc,
		   const struct cn_client_opts *opts, struct cn_client **out)
{
	struct cn_client *c;
	int rc;

	if (out == NULL || ops == NULL || tc == NULL) {
		if (ops != NULL && tc != NULL)
			ops->close(&tc);
		if (out != NULL)
			*out = NULL;
		return -EINVAL;
	}
	*out = NULL;
	c = client_alloc(opts);
	if (c == NULL) {
		ops->close(&tc);
		return -ENOMEM;
	}
	rc = client_start(c, ops, tc);
	*out = c;
	return rc;
}

/* Connect @ops to @addr; on failure the message says what went wrong. */
static int client_dial(struct cn_client *c, const struct cn_transport_ops *ops, const char *addr,
		       const struct cn_client_opts *opts, struct cn_tconn **tc)
{
	struct cn_connect_cfg cfg = {
		.addr = addr,
		.timeout_ms = c->timeout_ms,
		.rdma_dev = opts != NULL ? opts->rdma_dev : NULL,
	};
	char over[32] = "";
	int rc = ops->connect(&cfg, tc);

	if (rc == 0)
		return 0;
	if (ops != &cn_tcp_ops)
		snprintf(over, sizeof(over), " over %s", ops->name);
	if (rc == -ETIMEDOUT)
		client_err(c, "connect %s%s: no answer in %d ms", addr, over, c->timeout_ms);
	else if (rc == -EINVAL)
		client_err(c, "connect %s: bad address (expected HOST:PORT or [V6ADDR]:PORT)",
			   addr);
	else if (rc == -ENODEV && cfg.rdma_dev != NULL)
		client_err(c, "connect %s%s: the route to it does not use RDMA device %s", addr,
			   over, cfg.rdma_dev);
	else
		client_err(c, "connect %s%s: %s", addr, over, strerror(-rc));
	return rc;
}

/*
 * "auto" tried verbs first: these failures say the node (or the path to it)
 * does not do RDMA, so tcp is worth a try. Others (bad address, no memory)
 * would fail over tcp too.
 */
static bool verbs_fallback(int rc)
{
	return rc == -ECONNREFUSED || rc == -EHOSTUNREACH || rc == -ENETUNREACH ||
	       rc == -ETIMEDOUT || rc == -ENODEV || rc == -EADDRNOTAVAIL || rc == -ECONNRESET;
}

int cn_client_connect(const char *addr, const struct cn_client_opts *opts, struct cn_client **out)
{
	const char *tname = opts != NULL && opts->transport != NULL ? opts->transport : "tcp";
	const char *rdma_dev = opts != NULL ? opts->rdma_dev : NULL;
	const struct cn_transport_ops *ops;
	struct cn_tconn *tc = NULL;
	struct cn_client *c;
	char why[200];
	int rc;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	c = client_alloc(opts);
	if (c == NULL)
		return -ENOMEM;
	*out = c;
	if (addr == NULL || addr[0] == '\0') {
		client_err(c, "connect: no node address given");
		return -EINVAL;
	}
	if (strcmp(tname, "tcp") != 0 && strcmp(tname, "verbs") != 0 &&
	    strcmp(tname, "auto") != 0) {
		client_err(c, "connect %s: unknown transport \"%s\" (tcp, verbs or auto)", addr,
			   tname);
		return -EINVAL;
	}
	ops = cn_transport_pick(tname, rdma_dev, why, sizeof(why));
	if (ops == NULL || ops->connect == NULL) {
		client_err(c, "connect %s: transport verbs is not usable: %s", addr,
			   why[0] ? why : "not available");
		snprintf(c->closed_why, sizeof(c->closed_why), "%s", c->errmsg);
		return -ENODEV;
	}
	rc = client_dial(c, ops, addr, opts, &tc);
	if (rc < 0 && ops != &cn_tcp_ops && strcmp(tname, "auto") == 0 && verbs_fallback(rc)) {
		ops = &cn_tcp_ops;
		rc = client_dial(c, ops, addr, opts, &tc);
	}
	if (rc < 0) {
		snprintf(c->closed_why, sizeof(c->closed_why), "%s", c->errmsg);
		return rc;
	}
	c->errmsg[0] = '\0';
	rc = client_start(c, ops, tc);
	if (rc < 0) {
		char err[CLIENT_ERRMSG_LEN];

		snprintf(err, sizeof(err), "%s", c->errmsg);
		client_err(c, "connect %s: %s", addr, err);
	}
	return rc;
}

void cn_client_close(struct cn_client **pc)
{
	struct cn_client *c;

	if (pc == NULL || *pc == NULL)
		return;
	c = *pc;
	client_shutdown(c, -ENOTCONN); /* deregisters memory, then closes */
	for (unsigned i = 0; i < CN_CLIENT_MAX_DEPTH; i++)
		free(c->ring[i].tmp);
	free(c);
	*pc = NULL;
}

const char *cn_client_errmsg(const struct cn_client *c)
{
	return c != NULL ? c->errmsg : "";
}

const struct cn_node_info *cn_client_node(const struct cn_client *c)
{
	return c != NULL ? &c->node : NULL;
}

const char *cn_client_transport(const struct cn_client *c)
{
	return c != NULL && c->ops != NULL ? c->ops->name : "none";
}

static int client_cuda(struct cn_client *c, const char *what);

/*
 * A free region slot for [addr, addr + len): NULL and the client's message
 * set when the range is bad, overlaps one, or every slot is taken (*rc).
 */
static struct client_region *region_slot(struct cn_client *c, void *addr, size_t len, int *rc)
{
	uintptr_t p = (uintptr_t)addr;
	struct client_region *r = NULL;

	if (addr == NULL || len == 0 || p + len < p) {
		client_err(c, "register: bad range (%p, %zu bytes)", addr, len);
		*rc = -EINVAL;
		return NULL;
	}
	if (c->tc == NULL) {
		client_err(c, "register: not connected (%s)", c->closed_why);
		*rc = -ENOTCONN;
		return NULL;
	}
	for (unsigned i = 0; i < CLIENT_MAX_REGIONS; i++) {
		struct client_region *o = &c->regions[i];

		if (!o->used) {
			if (r == NULL)
				r = o;
			continue;
		}
		if (p < o->start + o->len && o->start < p + len) {
			client_err(c, "register: [%p, +%zu) overlaps the region at %#" PRIxPTR
				   " (%zu bytes) registered already", addr, len, o->start, o->len);
			*rc = -EEXIST;
			return NULL;
		}
	}
	if (r == NULL) {
		client_err(c, "register: %d regions registered already (the most a client keeps)",
			   CLIENT_MAX_REGIONS);
		*rc = -ENOSPC;
	}
	return r;
}

int cn_client_mem_register(struct cn_client *c, void *addr, size_t len)
{
	struct client_region *r;
	uint32_t rkey = 0;
	void *handle = NULL;
	int rc;

	if (c == NULL)
		return -EINVAL;
	if (c->ops != NULL && !c->rdma)
		return 0; /* nothing to register with */
	r = region_slot(c, addr, len, &rc);
	if (r == NULL)
		return rc;
	rc = c->ops->mem_reg(c->tc, addr, len, &handle, &rkey);
	if (rc < 0) {
		client_err(c, "register: %zu bytes at %p over %s: %s%s", len, addr, c->ops->name,
			   strerror(-rc), rc == -ENOMEM ? CLIENT_MEMLOCK_HINT : "");
		return rc;
	}
	*r = (struct client_region){.used = true, .start = (uintptr_t)addr, .len = len,
				    .handle = handle, .rkey = rkey};
	return 0;
}

int cn_client_mem_register_device(struct cn_client *c, void *dev, size_t len, const char **mode)
{
	char why_dmabuf[CN_GPU_REASON_LEN] = "", why_peer[64] = "";
	struct client_region *r;
	uint64_t off = 0;
	uint32_t rkey = 0;
	void *handle = NULL;
	int rc, fd = -1;

	if (mode != NULL)
		*mode = "staging";
	if (c == NULL)
		return -EINVAL;
	if (c->ops == NULL || !c->rdma) {
		client_err(c, "register device memory: the %s transport has no RDMA; stage through "
			   "host memory (cn_client_store_device)", c->ops ? c->ops->name : "closed");
		return -EOPNOTSUPP;
	}
	rc = client_cuda(c, "register device memory");
	if (rc < 0)
		return rc;
	if (cn_gpu_ptr_device(dev) < 0) {
		client_err(c, "register device memory: %p is not device memory of this process", dev);
		return -EINVAL;
	}
	r = region_slot(c, dev, len, &rc);
	if (r == NULL)
		return rc;
	/* 1. dma-buf: the CUDA driver exports the range, the NIC maps it (no kernel module) */
	rc = c->ops->mem_reg_dmabuf == NULL ? -EOPNOTSUPP
					    : cn_gpu_dmabuf(dev, len, &fd, &off, why_dmabuf,
							    sizeof(why_dmabuf));
	if (rc == 0) {
		rc = c->ops->mem_reg_dmabuf(c->tc, fd, off, len, dev, &handle, &rkey);
		close(fd);
		if (rc < 0)
			snprintf(why_dmabuf, sizeof(why_dmabuf), "ibv_reg_dmabuf_mr: %s",
				 strerror(-rc));
		else if (mode != NULL)
			*mode = "dmabuf";
	}
	/* 2. the device pointer itself: works when nvidia-peermem is loaded */
	if (rc < 0) {
		rc = c->ops->mem_reg(c->tc, dev, len, &handle, &rkey);
		if (rc < 0)
			snprintf(why_peer, sizeof(why_peer), "ibv_reg_mr: %s", strerror(-rc));
		else if (mode != NULL)
			*mode = "peer-memory";
	}
	if (rc < 0) {
		client_err(c, "register device memory: no GPUDirect RDMA (dma-buf: %s; peer memory: "
			   "%s); stage through host memory (cn_client_store_device)",
			   why_dmabuf[0] ? why_dmabuf : "not supported by the transport", why_peer);
		return -EOPNOTSUPP;
	}
	*r = (struct client_region){.used = true, .start = (uintptr_t)dev, .len = len,
				    .handle = handle, .rkey = rkey};
	return 0;
}

int cn_client_mem_unregister(struct cn_client *c, void *addr)
{
	if (c == NULL)
		return -EINVAL;
	if (c->ops != NULL && !c->rdma)
		return 0;
	for (unsigned i = 0; i < CLIENT_MAX_REGIONS; i++) {
		struct client_region *r = &c->regions[i];

		if (!r->used || r->start != (uintptr_t)addr)
			continue;
		if (r->inflight > 0) {
			client_err(c, "unregister: %u outstanding request%s use the region at %p",
				   r->inflight, r->inflight == 1 ? "" : "s", addr);
			return -EBUSY;
		}
		if (r->handle != NULL && c->tc != NULL)
			c->ops->mem_dereg(c->tc, r->handle);
		*r = (struct client_region){0};
		return 0;
	}
	client_err(c, "unregister: no region registered at %p", addr);
	return -ENOENT;
}

/* ---- synchronous calls: one request through cn_client_exec() ---- */

int cn_client_ping(struct cn_client *c)
{
	uint8_t payload[16];
	struct cn_buf b = {.data = payload, .len = sizeof(payload), .cap = sizeof(payload)};
	struct cn_req req = {.op = CN_OP_PING, .bufs = &b};

	if (c == NULL)
		return -EINVAL;
	memcpy(payload, "cn-ping-", 8);
	cn_put_le64(payload + 8, c->next_id);
	return cn_client_exec(c, &req);
}

int cn_client_lookup(struct cn_client *c, const struct cn_key *keys, uint32_t n, uint32_t *prefix,
		     uint8_t *tiers)
{
	struct cn_req req = {.op = CN_OP_LOOKUP, .nkeys = n, .keys = keys, .tiers = tiers};
	int rc;

	rc = cn_client_exec(c, &req);
	if (rc == 0 && prefix != NULL)
		*prefix = req.prefix;
	return rc;
}

int cn_client_store(struct cn_client *c, const struct cn_key *key, const void *buf, uint32_t len)
{
	struct cn_buf b = {.data = (void *)(uintptr_t)buf, .len = len, .cap = len};
	int32_t st = CN_OK;
	struct cn_req req = {.op = CN_OP_STORE, .nkeys = 1, .keys = key, .bufs = &b, .status = &st};

	return cn_client_exec(c, &req);
}

int cn_client_retrieve(struct cn_client *c, const struct cn_key *key, void *buf, uint32_t cap,
		       uint32_t *len)
{
	struct cn_buf b = {.data = buf, .len = 0, .cap = cap};
	int32_t st = CN_OK;
	struct cn_req req = {.op = CN_OP_RETRIEVE, .nkeys = 1, .keys = key, .bufs = &b,
			     .status = &st};
	int rc;

	rc = cn_client_exec(c, &req);
	if ((rc == 0 || rc == -ENOBUFS) && len != NULL)
		*len = b.len;
	return rc;
}

int cn_client_delete(struct cn_client *c, const struct cn_key *key)
{
	int32_t st = CN_OK;
	struct cn_req req = {.op = CN_OP_DELETE, .nkeys = 1, .keys = key, .status = &st};

	return cn_client_exec(c, &req);
}

int cn_client_prefetch(struct cn_client *c, const struct cn_key *keys, uint32_t n,
		       int32_t *status)
{
	struct cn_req req = {.op = CN_OP_PREFETCH, .nkeys = n, .keys = keys, .status = status};

	return cn_client_exec(c, &req);
}

int cn_client_status(struct cn_client *c, char **json)
{
	struct cn_buf b = {0};
	struct cn_req req = {.op = CN_OP_STATUS, .bufs = &b};
	int rc;

	if (json == NULL)
		return -EINVAL;
	*json = NULL;
	rc = cn_client_exec(c, &req);
	if (rc == 0)
		*json = b.data;
	return rc;
}

/* ---- GPU memory ---- */

/* Can this process use CUDA? 0, or -ENODEV with the reason as the client's message. */
static int client_cuda(struct cn_client *c, const char *what)
{
	char why[CN_GPU_REASON_LEN];
	int ndev = 0;

	if (cn_gpu_runtime_probe(&ndev, why, sizeof(why)) == 0)
		return 0;
	client_err(c, "%s: no usable CUDA device in this process (%s)", what, why);
	return -ENODEV;
}

int cn_client_gpu_register(struct cn_client *c, void *dev_base, size_t size, uint32_t *region)
{
	uint8_t p[CN_PROTO_GPU_REG_LEN];
	struct cn_buf b = {.data = p, .len = sizeof(p)};
	struct cn_req req = {.op = CN_OP_GPU_REGISTER, .bufs = &b};
	char why[CN_GPU_REASON_LEN];
	int dev = -1, rc;

	if (c == NULL || dev_base == NULL || size == 0 || region == NULL)
		return -EINVAL;
	rc = client_cuda(c, "gpu register");
	if (rc < 0)
		return rc;
	memset(p, 0, sizeof(p));
	rc = cn_gpu_ipc_export(dev_base, p + 16, &dev, why, sizeof(why));
	if (rc < 0) {
		client_err(c, "gpu register: %s", why);
		return rc;
	}
	cn_put_le32(p, (uint32_t)dev);
	cn_put_le64(p + 8, (uint64_t)size);
	/* the device by PCI bus id: the node may number devices otherwise */
	if (cn_gpu_bus_id(dev, (char *)p + 16 + CN_PROTO_GPU_HANDLE_LEN) < 0)
		memset(p + 16 + CN_PROTO_GPU_HANDLE_LEN, 0, CN_GPU_BUS_ID_LEN);
	rc = cn_client_exec(c, &req);
	if (rc == 0)
		*region = req.prefix;
	return rc;
}

int cn_client_gpu_unregister(struct cn_client *c, uint32_t region)
{
	uint8_t p[CN_PROTO_BATCH_HDR] = {0};
	struct cn_buf b = {.data = p, .len = sizeof(p)};
	struct cn_req req = {.op = CN_OP_GPU_UNREGISTER, .bufs = &b};

	if (c == NULL)
		return -EINVAL;
	cn_put_le32(p, region);
	return cn_client_exec(c, &req);
}

int cn_client_store_device(struct cn_client *c, const struct cn_key *key, const void *dev,
			   uint32_t len)
{
	void *host;
	int rc;

	if (c == NULL || dev == NULL || len == 0)
		return -EINVAL;
	rc = client_cuda(c, "store");
	if (rc < 0)
		return rc;
	host = malloc(len);
	if (host == NULL)
		return -ENOMEM;
	rc = cn_gpu_copy_sync(host, dev, len);
	if (rc < 0)
		client_err(c, "store: copying the chunk off the device failed");
	else
		rc = cn_client_store(c, key, host, len);
	free(host);
	return rc;
}

int cn_client_retrieve_device(struct cn_client *c, const struct cn_key *key, void *dev,
			      uint32_t cap, uint32_t *len)
{
	uint32_t got = 0;
	void *host;
	int rc;

	if (c == NULL || dev == NULL || cap == 0)
		return -EINVAL;
	rc = client_cuda(c, "retrieve");
	if (rc < 0)
		return rc;
	host = malloc(cap);
	if (host == NULL)
		return -ENOMEM;
	rc = cn_client_retrieve(c, key, host, cap, &got);
	if (rc == 0 && cn_gpu_copy_sync(dev, host, got) < 0) {
		client_err(c, "retrieve: copying the chunk to the device failed");
		rc = -EIO;
	}
	if ((rc == 0 || rc == -ENOBUFS) && len != NULL)
		*len = got;
	free(host);
	return rc;
}
