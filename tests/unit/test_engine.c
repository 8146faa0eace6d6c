/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Engine and protocol session over the loopback transport: the real client
 * library talks to the real session and engine in one process, through the
 * same code path the TCP workers use. Raw frames test the error paths.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cachenode/client.h>
#include "cn_client_internal.h"
#include "cn_engine.h"
#include "cn_session.h"
#include "cn_test_eal.h"
#include "cn_transport.h"

struct fix {
	struct cn_engine *eng;
	struct cn_server *srv;
	struct cn_session_ctx ctx;
	struct cn_session_stats sstats[2];
	struct cn_transport_stats tstats[1];
	const struct cn_transport_ops *ops;
};

static unsigned fix_seq;

static struct fix *fix_new(uint64_t l1, uint64_t max_chunk)
{
	struct fix *f = calloc(1, sizeof(*f));
	char name[32];
	struct cn_engine_cfg ecfg = {
		.l1_size = l1, .max_chunk = max_chunk, .ncores = 2, .socket_id = -1, .name = name,
	};
	struct cn_server_cfg scfg = {.listen = "loop", .nworkers = 1, .sess = &cn_session_ops};

	snprintf(name, sizeof(name), "eng%u", fix_seq++);
	assert_int_equal(cn_engine_create(&ecfg, &f->eng), 0);
	f->ctx = (struct cn_session_ctx){
		.engine = f->eng,
		.node_id = "test-node",
		.max_keys = CN_PROTO_MAX_KEYS,
		.max_frame = CN_PROTO_MAX_FRAME,
		.stats = f->sstats,
	};
	scfg.sess_arg = &f->ctx;
	scfg.stats = f->tstats;
	f->ops = cn_transport_find("loopback");
	assert_int_equal(f->ops->server_create(&scfg, &f->srv), 0);
	return f;
}

static void fix_free(struct fix *f)
{
	struct cn_l1_info info;

	/* Nothing may stay lent once every connection is closed. */
	cn_l1_get_info(cn_engine_l1(f->eng), &info);
	assert_int_equal(info.pinned, 0);
	assert_int_equal(info.reserved, 0);
	f->ops->server_destroy(&f->srv);
	cn_engine_destroy(&f->eng);
	assert_null(f->eng);
	free(f);
}

static struct cn_client *client(struct fix *f)
{
	struct cn_connect_cfg cc = {.server = f->srv};
	struct cn_tconn *tc;
	struct cn_client *c = NULL;

	assert_int_equal(f->ops->connect(&cc, &tc), 0);
	assert_int_equal(cn_client_open(f->ops, tc, NULL, &c), 0);
	return c;
}

static struct cn_tconn *raw(struct fix *f)
{
	struct cn_connect_cfg cc = {.server = f->srv};
	struct cn_tconn *tc;

	assert_int_equal(f->ops->connect(&cc, &tc), 0);
	return tc;
}

static struct cn_key key_of(unsigned i)
{
	struct cn_key k;
	char s[32];

	snprintf(s, sizeof(s), "key-%u", i);
	cn_sha256(s, strlen(s), k.b);
	return k;
}

static void pattern(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i >> 3) * 131 + seed * 7 + i);
}

static void store_retrieve_round_trip(void **state)
{
	struct fix *f = fix_new(64u << 20, 1u << 20);
	struct cn_client *c = client(f);
	static const uint32_t sizes[] = {1, 100, 4096, 4097, 65536, 300000, 1u << 20};
	uint8_t *in = malloc(1u << 20), *out = malloc(1u << 20);
	uint32_t len;

	assert_string_equal(cn_client_node(c)->node_id, "test-node");
	assert_int_equal(cn_client_node(c)->max_chunk, 1u << 20);
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct cn_key k = key_of(i);

		pattern(in, sizes[i], i);
		assert_int_equal(cn_client_store(c, &k, in, sizes[i]), 0);
		memset(out, 0, sizes[i]);
		assert_int_equal(cn_client_retrieve(c, &k, out, 1u << 20, &len), 0);
		assert_int_equal(len, sizes[i]);
		assert_memory_equal(in, out, sizes[i]);
	}
	/* counters moved by exactly the workload */
	assert_int_equal(f->sstats[0].store_ok, 7);
	assert_int_equal(f->sstats[0].retrieve_hits, 7);
	assert_int_equal(cn_l1_core_stats(cn_engine_l1(f->eng), 0)->stores, 7);
	cn_client_close(&c);
	free(in);
	free(out);
	fix_free(f);
}

static void lookup_has_prefix_semantics(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_client *c = client(f);
	struct cn_key keys[6];
	uint8_t buf[1000], tiers[6];
	uint32_t prefix;

	for (unsigned i = 0; i < 6; i++)
		keys[i] = key_of(100 + i);
	memset(buf, 1, sizeof(buf));
	/* stored: 0, 1, 2 and 4 (not 3) */
	for (unsigned i = 0; i < 5; i++)
		if (i != 3)
			assert_int_equal(cn_client_store(c, &keys[i], buf, sizeof(buf)), 0);
	assert_int_equal(cn_client_lookup(c, keys, 6, &prefix, tiers), 0);
	assert_int_equal(prefix, 3);
	assert_int_equal(tiers[0], CN_TIER_L1);
	assert_int_equal(tiers[2], CN_TIER_L1);
	assert_int_equal(tiers[3], CN_TIER_NONE);
	assert_int_equal(tiers[4], CN_TIER_NONE); /* present, but after the first miss */
	assert_int_equal(cn_client_lookup(c, keys + 3, 1, &prefix, NULL), 0);
	assert_int_equal(prefix, 0);
	assert_int_equal(cn_client_delete(c, &keys[1]), 0);
	assert_int_equal(cn_client_delete(c, &keys[1]), -ENOENT);
	assert_int_equal(cn_client_lookup(c, keys, 6, &prefix, NULL), 0);
	assert_int_equal(prefix, 1);
	cn_client_close(&c);
	fix_free(f);
}

static void store_is_idempotent(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_client *c = client(f);
	struct cn_key k = key_of(7);
	uint8_t a[500], b[800], out[800];
	uint32_t len;

	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	assert_int_equal(cn_client_store(c, &k, a, sizeof(a)), 0);
	/* a second store of the key succeeds and keeps the first copy */
	assert_int_equal(cn_client_store(c, &k, b, sizeof(b)), 0);
	assert_int_equal(cn_client_retrieve(c, &k, out, sizeof(out), &len), 0);
	assert_int_equal(len, sizeof(a));
	assert_memory_equal(out, a, sizeof(a));
	assert_int_equal(cn_l1_core_stats(cn_engine_l1(f->eng), 0)->store_exists, 1);
	cn_client_close(&c);
	fix_free(f);
}

static void batch_errors_keep_connection(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_client *c = client(f);
	struct cn_key keys[3] = {key_of(1), key_of(2), key_of(1)}; /* 0 and 2 repeat */
	uint8_t data[3][100];
	struct cn_buf bufs[3];
	int32_t st[3];
	struct cn_req req = {.op = CN_OP_STORE, .nkeys = 3, .keys = keys, .bufs = bufs,
			     .status = st};
	uint32_t prefix, len;

	for (int i = 0; i < 3; i++)
		bufs[i] = (struct cn_buf){data[i], sizeof(data[i]), 0};
	assert_int_equal(cn_client_exec(c, &req), -EALREADY);
	assert_non_null(strstr(cn_client_errmsg(c), "duplicate"));
	/* nothing of the refused batch was stored, and the connection still serves */
	assert_int_equal(cn_client_lookup(c, keys, 2, &prefix, NULL), 0);
	assert_int_equal(prefix, 0);
	assert_int_equal(cn_client_ping(c), 0);
	assert_int_equal(cn_client_retrieve(c, &keys[0], data[0], 100, &len), -ENOENT);
	/* chunk over the node's max chunk: refused by the client before sending */
	{
		uint8_t *big = calloc(1, 65537);
		assert_int_equal(cn_client_store(c, &keys[0], big, 65537), -E2BIG);
		free(big);
	}
	assert_int_equal(cn_client_ping(c), 0);
	assert_int_equal(f->sstats[0].req_errors, 1);
	cn_client_close(&c);
	fix_free(f);
}

static void pinned_chunks_are_never_evicted(void **state)
{
	/* 4 MiB pool of 1 MiB pages: four 1 MiB chunks fill it */
	struct fix *f = fix_new(4u << 20, 1u << 20);
	struct cn_client *a = client(f), *b = client(f), *c = client(f);
	uint8_t *buf = malloc(1u << 20), *out[4];
	struct cn_key keys[4], extra = key_of(99);
	struct cn_buf bufs[4];
	int32_t st[4];
	struct cn_req get3 = {.op = CN_OP_RETRIEVE, .nkeys = 3, .keys = keys, .bufs = bufs,
			      .status = st};
	struct cn_req get1 = {.op = CN_OP_RETRIEVE, .nkeys = 1, .keys = &keys[3],
			      .bufs = &bufs[3], .status = &st[3]};
	struct cn_req *done;

	for (unsigned i = 0; i < 4; i++) {
		keys[i] = key_of(200 + i);
		out[i] = malloc(1u << 20);
		bufs[i] = (struct cn_buf){out[i], 0, 1u << 20};
	}
	/*
	 * A retrieve whose reply has not been read keeps its chunks pinned on
	 * the node. Pin 0..2, then store 3 (the last free page), then pin 3.
	 */
	for (unsigned i = 0; i < 3; i++) {
		pattern(buf, 1u << 20, i);
		assert_int_equal(cn_client_store(a, &keys[i], buf, 1u << 20), 0);
	}
	assert_int_equal(cn_client_submit(a, &get3), 0);
	pattern(buf, 1u << 20, 3);
	assert_int_equal(cn_client_store(b, &keys[3], buf, 1u << 20), 0);
	assert_int_equal(cn_client_submit(c, &get1), 0);
	/* everything is pinned: a clear -ENOSPC, and nothing was evicted */
	assert_int_equal(cn_client_store(b, &extra, buf, 1u << 20), -ENOSPC);
	assert_non_null(strstr(cn_client_errmsg(b), "no space"));
	assert_int_equal(cn_l1_core_stats(cn_engine_l1(f->eng), 0)->store_nospc, 1);
	assert_int_equal(cn_l1_core_stats(cn_engine_l1(f->eng), 0)->evictions, 0);
	/* the pinned bytes arrive intact */
	assert_int_equal(cn_client_wait(a, &done), 0);
	assert_int_equal(done->result, 0);
	assert_int_equal(cn_client_wait(c, &done), 0);
	assert_int_equal(done->result, 0);
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(st[i], CN_OK);
		pattern(buf, 1u << 20, i);
		assert_memory_equal(out[i], buf, 1u << 20);
	}
	/* unpinned now: the store evicts and succeeds */
	assert_int_equal(cn_client_store(b, &extra, buf, 1u << 20), 0);
	assert_true(cn_l1_core_stats(cn_engine_l1(f->eng), 0)->evictions >= 1);
	cn_client_close(&a);
	cn_client_close(&b);
	cn_client_close(&c);
	for (unsigned i = 0; i < 4; i++)
		free(out[i]);
	free(buf);
	fix_free(f);
}

/* ---- raw frames ---- */

static void send_frame(struct fix *f, struct cn_tconn *tc, uint8_t op, uint64_t id,
		       const void *payload, uint32_t len)
{
	struct cn_proto_hdr h;
	uint8_t hb[CN_PROTO_HDR_LEN];
	struct iovec iov[2] = {{hb, sizeof(hb)}, {(void *)payload, len}};

	cn_proto_hdr_init(&h, op, 0, id, len, 0);
	cn_proto_hdr_encode(&h, hb);
	assert_int_equal(f->ops->sendv(tc, iov, len ? 2 : 1, 0), 0);
}

static void read_reply(struct fix *f, struct cn_tconn *tc, struct cn_proto_hdr *h, void *payload,
		       size_t cap)
{
	uint8_t hb[CN_PROTO_HDR_LEN];

	assert_int_equal(f->ops->recv(tc, hb, sizeof(hb)), 0);
	assert_int_equal(cn_proto_hdr_decode(hb, h), CN_OK);
	assert_true(h->flags & CN_F_RESPONSE);
	assert_true(h->payload_len <= cap);
	if (h->payload_len)
		assert_int_equal(f->ops->recv(tc, payload, h->payload_len), 0);
}

static void bad_magic_gets_error_frame_and_close(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_tconn *tc = raw(f);
	uint8_t junk[CN_PROTO_HDR_LEN];
	struct iovec iov = {junk, sizeof(junk)};
	struct cn_proto_hdr h;
	char msg[CN_PROTO_MAX_ERRMSG + 1] = {0};
	struct cn_client *c;

	memset(junk, 'x', sizeof(junk));
	assert_int_equal(f->ops->sendv(tc, &iov, 1, 0), 0);
	read_reply(f, tc, &h, msg, sizeof(msg) - 1);
	assert_int_equal(h.opcode, CN_OP_ERROR);
	assert_int_equal(h.status, CN_E_PROTO);
	assert_true(h.flags & CN_F_CLOSE);
	assert_non_null(strstr(msg, "bad frame header"));
	assert_int_equal(f->ops->recv(tc, junk, 1), -ECONNRESET);
	f->ops->close(&tc);
	assert_int_equal(f->sstats[0].frames_bad, 1);
	/* everyone else is still served */
	c = client(f);
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
	fix_free(f);
}

static void unknown_opcode_is_refused_and_skipped(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_tconn *tc = raw(f);
	struct cn_proto_hdr h;
	uint8_t junk[100], reply[300];

	memset(junk, 0xab, sizeof(junk));
	send_frame(f, tc, 77, 5, junk, sizeof(junk));
	send_frame(f, tc, CN_OP_PING, 6, "hi", 2);
	read_reply(f, tc, &h, reply, sizeof(reply));
	assert_int_equal(h.opcode, 77);
	assert_int_equal(h.req_id, 5);
	assert_int_equal(h.status, CN_E_OPCODE);
	assert_false(h.flags & CN_F_CLOSE);
	/* the payload of the refused frame was skipped: the PING is answered */
	read_reply(f, tc, &h, reply, sizeof(reply));
	assert_int_equal(h.opcode, CN_OP_PING);
	assert_int_equal(h.req_id, 6);
	assert_int_equal(h.payload_len, 2);
	assert_memory_equal(reply, "hi", 2);
	f->ops->close(&tc);
	fix_free(f);
}

static void store_frame(uint8_t *p, const struct cn_key *k, uint32_t len)
{
	cn_put_le32(p, 1);
	cn_put_le32(p + 4, 0);
	memcpy(p + 8, k, CN_KEY_LEN);
	cn_put_le32(p + 8 + 32, len);
	cn_put_le32(p + 8 + 36, 0);
}

static void zero_length_chunk_is_refused(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_tconn *tc = raw(f);
	struct cn_key k = key_of(3);
	uint8_t meta[48], reply[300];
	struct cn_proto_hdr h;

	store_frame(meta, &k, 0);
	send_frame(f, tc, CN_OP_STORE, 9, meta, sizeof(meta));
	read_reply(f, tc, &h, reply, sizeof(reply));
	assert_int_equal(h.status, CN_E_INVAL);
	assert_non_null(memmem(reply, h.payload_len, "zero-length", 11));
	send_frame(f, tc, CN_OP_PING, 10, NULL, 0);
	read_reply(f, tc, &h, reply, sizeof(reply));
	assert_int_equal(h.status, CN_OK);
	f->ops->close(&tc);
	fix_free(f);
}

static void vanished_client_leaves_no_partial_chunk(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_tconn *tc = raw(f);
	struct cn_key k = key_of(4);
	uint8_t frame[48 + 1000];
	struct cn_proto_hdr h;
	uint8_t hb[CN_PROTO_HDR_LEN];
	struct iovec iov[2] = {{hb, sizeof(hb)}, {frame, 48 + 600}}; /* 400 bytes short */
	struct cn_client *c;
	uint32_t prefix;

	store_frame(frame, &k, 1000);
	memset(frame + 48, 'z', 1000);
	cn_proto_hdr_init(&h, CN_OP_STORE, 0, 1, sizeof(frame), 0);
	cn_proto_hdr_encode(&h, hb);
	assert_int_equal(f->ops->sendv(tc, iov, 2, 0), 0);
	f->ops->close(&tc); /* gone mid-payload */
	assert_int_equal(f->sstats[0].store_discarded, 1);
	c = client(f);
	assert_int_equal(cn_client_lookup(c, &k, 1, &prefix, NULL), 0);
	assert_int_equal(prefix, 0);
	cn_client_close(&c);
	fix_free(f);
}

static void oversized_key_batch_is_fatal(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_tconn *tc = raw(f);
	uint32_t n = CN_PROTO_MAX_KEYS + 1, len = 8 + n * CN_KEY_LEN;
	uint8_t *p = calloc(1, len), reply[300];
	struct cn_proto_hdr h;

	cn_put_le32(p, n);
	send_frame(f, tc, CN_OP_LOOKUP, 3, p, len);
	read_reply(f, tc, &h, reply, sizeof(reply));
	assert_int_equal(h.opcode, CN_OP_ERROR);
	assert_int_equal(h.status, CN_E_TOOBIG);
	assert_int_equal(f->ops->recv(tc, reply, 1), -ECONNRESET);
	f->ops->close(&tc);
	free(p);
	fix_free(f);
}

/*
 * Frames laid out so that the session's 64 KiB staging buffer fills up with
 * the next header cut after 10 bytes: the session must compact and go on,
 * not wait for room that only compaction makes (a stall found under load).
 */
static void header_split_at_staging_boundary(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_tconn *tc = raw(f);
	const uint32_t na = 1024, nb = 1000, ping = 646;
	uint32_t la = 8 + na * CN_KEY_LEN, lb = 8 + nb * CN_KEY_LEN;
	uint8_t *a = calloc(1, la), *b = calloc(1, lb), pad[646], reply[2048];
	struct cn_proto_hdr h;

	/* 32+la + 32+lb + 32+ping = 65526: the 4th header straddles 65536 */
	assert_int_equal(32 + la + 32 + lb + 32 + ping, 65536 - 10);
	cn_put_le32(a, na);
	cn_put_le32(b, nb);
	memset(pad, 'p', sizeof(pad));
	{
		struct cn_proto_hdr hh[4];
		uint8_t hb[4][CN_PROTO_HDR_LEN];
		struct iovec iov[8];

		cn_proto_hdr_init(&hh[0], CN_OP_LOOKUP, 0, 1, la, 0);
		cn_proto_hdr_init(&hh[1], CN_OP_LOOKUP, 0, 2, lb, 0);
		cn_proto_hdr_init(&hh[2], CN_OP_PING, 0, 3, ping, 0);
		cn_proto_hdr_init(&hh[3], CN_OP_PING, 0, 4, 0, 0);
		for (int i = 0; i < 4; i++)
			cn_proto_hdr_encode(&hh[i], hb[i]);
		iov[0] = (struct iovec){hb[0], 32};
		iov[1] = (struct iovec){a, la};
		iov[2] = (struct iovec){hb[1], 32};
		iov[3] = (struct iovec){b, lb};
		iov[4] = (struct iovec){hb[2], 32};
		iov[5] = (struct iovec){pad, ping};
		iov[6] = (struct iovec){hb[3], 32};
		/* one contiguous buffer, as a socket read would deliver it */
		{
			uint8_t *all = malloc(65536 + 22), *p = all;
			for (int i = 0; i < 7; i++) {
				memcpy(p, iov[i].iov_base, iov[i].iov_len);
				p += iov[i].iov_len;
			}
			iov[7] = (struct iovec){all, (size_t)(p - all)};
			assert_int_equal(f->ops->sendv(tc, &iov[7], 1, 0), 0);
			free(all);
		}
	}
	for (uint64_t id = 1; id <= 4; id++) {
		uint8_t hb[CN_PROTO_HDR_LEN];
		assert_int_equal(f->ops->recv(tc, hb, sizeof(hb)), 0);
		assert_int_equal(cn_proto_hdr_decode(hb, &h), CN_OK);
		assert_int_equal(h.req_id, id);
		assert_int_equal(h.status, CN_OK);
		assert_true(h.payload_len <= sizeof(reply));
		if (h.payload_len)
			assert_int_equal(f->ops->recv(tc, reply, h.payload_len), 0);
	}
	f->ops->close(&tc);
	free(a);
	free(b);
	fix_free(f);
}

static void status_without_provider_is_an_error(void **state)
{
	struct fix *f = fix_new(16u << 20, 64u << 10);
	struct cn_client *c;
	char *json = NULL;

	c = client(f);
	/* this fixture has no status provider: a clear error, connection kept */
	assert_int_equal(cn_client_status(c, &json), -EIO);
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
	fix_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(store_retrieve_round_trip),
		cmocka_unit_test(lookup_has_prefix_semantics),
		cmocka_unit_test(store_is_idempotent),
		cmocka_unit_test(batch_errors_keep_connection),
		cmocka_unit_test(pinned_chunks_are_never_evicted),
		cmocka_unit_test(bad_magic_gets_error_frame_and_close),
		cmocka_unit_test(unknown_opcode_is_refused_and_skipped),
		cmocka_unit_test(zero_length_chunk_is_refused),
		cmocka_unit_test(vanished_client_leaves_no_partial_chunk),
		cmocka_unit_test(oversized_key_batch_is_fatal),
		cmocka_unit_test(header_split_at_staging_boundary),
		cmocka_unit_test(status_without_provider_is_an_error),
	};

	if (cn_test_eal_init("test_engine") < 0)
		return 1;
	return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
