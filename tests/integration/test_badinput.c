/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bad input against the real daemon over raw TCP: each case gets a clear
 * error (or a clean close), leaves no partial chunk visible, moves the
 * node's counters, and the node keeps serving a well-behaved client that is
 * connected all along.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <cachenode/client.h>
#include "daemon.h"

static struct cn_daemon d;
static struct cn_client *bystander; /* connected through every case */

static int raw_connect(void)
{
	int fd = cn_raw_connect(d.addr);

	assert_true(fd >= 0);
	return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void send_hdr(int fd, uint8_t op, uint64_t id, uint32_t len)
{
	struct cn_proto_hdr h;
	uint8_t b[CN_PROTO_HDR_LEN];

	cn_proto_hdr_init(&h, op, 0, id, len, 0);
	cn_proto_hdr_encode(&h, b);
	send_all(fd, b, sizeof(b));
}

/* Read one reply; payload (NUL-terminated) into @buf. */
static void recv_reply(int fd, struct cn_proto_hdr *h, char *buf, size_t cap)
{
	assert_int_equal(cn_raw_recv_reply(fd, h, buf, cap), 0);
}

/* The node closed this connection: EOF (or reset) and nothing else. */
static void assert_closed(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, 0);

	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
	close(fd);
}

static void assert_node_serving(void)
{
	struct cn_client *c = NULL;

	assert_int_equal(cn_client_ping(bystander), 0);
	assert_int_equal(cn_client_connect(d.addr, NULL, &c), 0);
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
}

static uint64_t stat_of(const char *path)
{
	uint64_t v = 0;
	assert_int_equal(cn_status_u64(d.addr, path, &v), 0);
	return v;
}

/* Wait up to 5 s for the number at @path to be @want (counted when the worker sees the close). */
static void wait_stat(const char *path, uint64_t want)
{
	uint64_t v = 0;
	int r = cn_status_wait_u64(d.addr, path, want, 5000, &v);

	if (r != 0)
		fail_msg("%s: %llu after 5 s, want %llu (%s)", path, (unsigned long long)v,
			 (unsigned long long)want, strerror(-r));
}

static void store_meta(uint8_t *p, uint32_t n, const struct cn_key *keys, const uint32_t *lens)
{
	cn_put_le32(p, n);
	cn_put_le32(p + 4, 0);
	for (uint32_t i = 0; i < n; i++) {
		memcpy(p + 8 + 40 * i, &keys[i], 32);
		cn_put_le32(p + 8 + 40 * i + 32, lens[i]);
		cn_put_le32(p + 8 + 40 * i + 36, 0);
	}
}

static bool key_visible(const char *name)
{
	struct cn_key k = cn_test_key("%s", name);
	uint32_t prefix = 99;

	assert_int_equal(cn_client_lookup(bystander, &k, 1, &prefix, NULL), 0);
	return prefix == 1;
}

/* ---- cases ---- */

static void bad_checksum(void **state)
{
	uint64_t bad0 = stat_of("components.engine.requests.frames_bad");
	struct cn_proto_hdr h;
	uint8_t b[CN_PROTO_HDR_LEN];
	char msg[512];
	int fd = raw_connect();

	cn_proto_hdr_init(&h, CN_OP_PING, 0, 11, 0, 0);
	cn_proto_hdr_encode(&h, b);
	b[29] ^= 0x40;
	send_all(fd, b, sizeof(b));
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.opcode, CN_OP_ERROR);
	assert_int_equal(h.status, CN_E_PROTO);
	assert_true(h.flags & CN_F_CLOSE);
	assert_non_null(strstr(msg, "bad frame header"));
	assert_closed(fd);
	assert_int_equal(stat_of("components.engine.requests.frames_bad"), bad0 + 1);
	assert_node_serving();
}

static void wrong_magic(void **state)
{
	struct cn_proto_hdr h;
	char msg[512];
	int fd = raw_connect();

	send_all(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\n", 32);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.opcode, CN_OP_ERROR);
	assert_int_equal(h.req_id, 0);
	assert_int_equal(h.status, CN_E_PROTO);
	assert_closed(fd);
	assert_node_serving();
}

static void wrong_version(void **state)
{
	struct cn_proto_hdr h;
	uint8_t b[CN_PROTO_HDR_LEN];
	char msg[512];
	int fd = raw_connect();

	cn_proto_hdr_init(&h, CN_OP_PING, 0, 12, 0, 0);
	h.version = 9;
	cn_proto_hdr_encode(&h, b);
	send_all(fd, b, sizeof(b));
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.status, CN_E_VERSION);
	assert_int_equal(h.req_id, 12);
	assert_non_null(strstr(msg, "version"));
	assert_closed(fd);
	assert_node_serving();
}

static void length_beyond_limits(void **state)
{
	struct cn_proto_hdr h;
	char msg[512];
	int fd = raw_connect();

	/* a PING claiming 1 MiB of payload: refused before a byte of it is read */
	send_hdr(fd, CN_OP_PING, 13, 1u << 20);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.opcode, CN_OP_ERROR);
	assert_int_equal(h.status, CN_E_TOOBIG);
	assert_closed(fd);
	/* a STORE of 3 GiB: over the protocol's frame cap */
	fd = raw_connect();
	send_hdr(fd, CN_OP_STORE, 14, 3000u << 20);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.status, CN_E_TOOBIG);
	assert_closed(fd);
	assert_node_serving();
}

static void truncated_frame_then_disconnect(void **state)
{
	uint64_t disc0 = stat_of("components.engine.requests.store_discarded");
	uint64_t chunks0 = stat_of("components.engine.components.l1.chunks");
	struct cn_key k = cn_test_key("truncated-chunk");
	uint32_t len = 1u << 20;
	uint8_t meta[48], *data = malloc(len);
	int fd = raw_connect();

	memset(data, 0x5a, len);
	store_meta(meta, 1, &k, &len);
	send_hdr(fd, CN_OP_STORE, 15, 48 + len);
	send_all(fd, meta, sizeof(meta));
	send_all(fd, data, len / 2); /* half the chunk, then gone */
	close(fd);
	wait_stat("components.engine.requests.store_discarded", disc0 + 1);
	assert_int_equal(stat_of("components.engine.components.l1.chunks"), chunks0);
	assert_int_equal(stat_of("components.engine.components.l1.reserved"), 0);
	assert_false(key_visible("truncated-chunk"));
	/* a truncated header, then gone: nothing to discard, nothing breaks */
	fd = raw_connect();
	send_all(fd, "CNKV\x01", 5);
	close(fd);
	free(data);
	assert_node_serving();
}

static void unknown_opcode(void **state)
{
	struct cn_proto_hdr h;
	char msg[512];
	int fd = raw_connect();
	uint64_t err0 = stat_of("components.engine.requests.req_errors");

	send_hdr(fd, 99, 16, 10);
	send_all(fd, "0123456789", 10);
	send_hdr(fd, CN_OP_PING, 17, 0);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.opcode, 99);
	assert_int_equal(h.status, CN_E_OPCODE);
	assert_non_null(strstr(msg, "unknown opcode"));
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.req_id, 17);
	assert_int_equal(h.status, CN_OK);
	close(fd);
	assert_int_equal(stat_of("components.engine.requests.req_errors"), err0 + 1);
	assert_node_serving();
}

static void duplicate_keys_in_batch(void **state)
{
	struct cn_key keys[3] = {cn_test_key("dup-a"), cn_test_key("dup-b"), cn_test_key("dup-a")};
	uint32_t lens[3] = {100, 100, 100};
	uint8_t meta[8 + 3 * 40], data[300];
	struct cn_proto_hdr h;
	char msg[512];
	int fd = raw_connect();

	store_meta(meta, 3, keys, lens);
	memset(data, 1, sizeof(data));
	send_hdr(fd, CN_OP_STORE, 18, sizeof(meta) + sizeof(data));
	send_all(fd, meta, sizeof(meta));
	send_all(fd, data, sizeof(data));
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.opcode, CN_OP_STORE);
	assert_int_equal(h.status, CN_E_DUP);
	assert_non_null(strstr(msg, "duplicate"));
	/* all-or-nothing: neither key was stored, and the connection still works */
	assert_false(key_visible("dup-a"));
	assert_false(key_visible("dup-b"));
	send_hdr(fd, CN_OP_PING, 19, 0);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.status, CN_OK);
	close(fd);
	assert_node_serving();
}

static void zero_length_chunk(void **state)
{
	struct cn_key keys[2] = {cn_test_key("zero-a"), cn_test_key("zero-b")};
	uint32_t lens[2] = {10, 0};
	uint8_t meta[8 + 2 * 40];
	struct cn_proto_hdr h;
	char msg[512];
	int fd = raw_connect();

	store_meta(meta, 2, keys, lens);
	send_hdr(fd, CN_OP_STORE, 20, sizeof(meta) + 10);
	send_all(fd, meta, sizeof(meta));
	send_all(fd, "abcdefghij", 10);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.status, CN_E_INVAL);
	assert_non_null(strstr(msg, "zero-length"));
	assert_false(key_visible("zero-a"));
	send_hdr(fd, CN_OP_PING, 21, 0);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.status, CN_OK);
	close(fd);
	assert_node_serving();
}

static void retrieve_missing_key(void **state)
{
	struct cn_key k = cn_test_key("never-stored");
	uint8_t buf[16];
	uint32_t len = 7;
	struct cn_proto_hdr h;
	char reply[64];
	uint8_t req[8 + 32];
	int fd;

	assert_int_equal(cn_client_retrieve(bystander, &k, buf, sizeof(buf), &len), -ENOENT);
	assert_non_null(strstr(cn_client_errmsg(bystander), "no such key"));
	/* on the wire: a per-key status, no payload, the request itself OK */
	fd = raw_connect();
	cn_put_le32(req, 1);
	cn_put_le32(req + 4, 0);
	memcpy(req + 8, &k, 32);
	send_hdr(fd, CN_OP_RETRIEVE, 22, sizeof(req));
	send_all(fd, req, sizeof(req));
	recv_reply(fd, &h, reply, sizeof(reply));
	assert_int_equal(h.status, CN_OK);
	assert_int_equal(h.payload_len, 16);
	assert_int_equal(cn_get_le32((uint8_t *)reply + 8), CN_E_NOENT);
	assert_int_equal(cn_get_le32((uint8_t *)reply + 12), 0);
	close(fd);
	assert_node_serving();
}

static void client_vanishes_mid_payload_batch(void **state)
{
	uint64_t disc0 = stat_of("components.engine.requests.store_discarded");
	struct cn_key keys[3] = {cn_test_key("mid-0"), cn_test_key("mid-1"), cn_test_key("mid-2")};
	uint32_t lens[3] = {70000, 70000, 70000};
	uint8_t meta[8 + 3 * 40], *data = calloc(1, 210000);
	int fd = raw_connect();

	store_meta(meta, 3, keys, lens);
	send_hdr(fd, CN_OP_STORE, 23, sizeof(meta) + 210000);
	send_all(fd, meta, sizeof(meta));
	send_all(fd, data, 100000); /* chunk 0 whole, chunk 1 partly, chunk 2 not at all */
	close(fd);
	/* the batch never completed: none of its chunks may be visible */
	wait_stat("components.engine.requests.store_discarded", disc0 + 3);
	assert_false(key_visible("mid-0"));
	assert_false(key_visible("mid-1"));
	assert_false(key_visible("mid-2"));
	assert_int_equal(stat_of("components.engine.components.l1.reserved"), 0);
	free(data);
	assert_node_serving();
}

/*
 * A refused batch (first chunk zero-length) followed by a disconnect: the
 * node once walked the refused batch's unset entries on close and crashed.
 */
static void refused_batch_then_disconnect(void **state)
{
	struct cn_key keys[3] = {cn_test_key("ref-0"), cn_test_key("ref-1"), cn_test_key("ref-2")};
	uint32_t lens[3] = {0, 5000, 5000};
	uint8_t meta[8 + 3 * 40];
	struct cn_proto_hdr h;
	char msg[512];

	for (int round = 0; round < 3; round++) {
		int fd = raw_connect();
		store_meta(meta, 3, keys, lens);
		send_hdr(fd, CN_OP_STORE, 40, sizeof(meta) + 10000);
		send_all(fd, meta, sizeof(meta));
		if (round == 1) { /* also: the refusal is read, then the peer leaves mid-skip */
			recv_reply(fd, &h, msg, sizeof(msg));
			assert_int_equal(h.status, CN_E_INVAL);
		}
		if (round == 2)
			send_all(fd, meta, 40); /* part of the payload being skipped */
		close(fd);
	}
	/* and a batch whose descriptors never all arrive */
	{
		int fd = raw_connect();
		store_meta(meta, 3, keys, lens);
		send_hdr(fd, CN_OP_STORE, 41, sizeof(meta) + 10000);
		send_all(fd, meta, 50);
		close(fd);
	}
	wait_stat("components.engine.components.l1.reserved", 0); /* every close seen */
	assert_false(key_visible("ref-1"));
	assert_node_serving();
}

/* STORE payloads shorter than the 8-byte batch header are refused, not misparsed. */
static void store_shorter_than_batch_header(void **state)
{
	struct cn_proto_hdr h;
	char msg[512];
	int fd = raw_connect();

	send_hdr(fd, CN_OP_STORE, 50, 0);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.req_id, 50);
	assert_int_equal(h.status, CN_E_INVAL);
	send_hdr(fd, CN_OP_STORE, 51, 4);
	send_all(fd, "\x01\x00\x00\x00", 4);
	send_hdr(fd, CN_OP_PING, 52, 0);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.req_id, 51);
	assert_int_equal(h.status, CN_E_INVAL);
	assert_non_null(strstr(msg, "shorter than its batch header"));
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.req_id, 52);
	assert_int_equal(h.status, CN_OK);
	close(fd);
	assert_node_serving();
}

/* A client that shuts its sending side after asking still gets the whole reply. */
static void half_close_still_gets_whole_reply(void **state)
{
	enum { N = 8, SZ = 1u << 20 };
	struct cn_key keys[N];
	uint8_t *chunk = malloc(SZ), *got = malloc(SZ), req[8 + N * 32], hb[CN_PROTO_HDR_LEN];
	uint8_t meta[8 + N * 8];
	struct cn_proto_hdr h;
	int fd;

	for (unsigned i = 0; i < N; i++) {
		char name[32];
		snprintf(name, sizeof(name), "half-%u", i);
		keys[i] = cn_test_key("%s", name);
		memset(chunk, (int)(i + 1), SZ);
		assert_int_equal(cn_client_store(bystander, &keys[i], chunk, SZ), 0);
	}
	fd = raw_connect();
	cn_put_le32(req, N);
	cn_put_le32(req + 4, 0);
	memcpy(req + 8, keys, sizeof(keys));
	send_hdr(fd, CN_OP_RETRIEVE, 60, sizeof(req));
	send_all(fd, req, sizeof(req));
	shutdown(fd, SHUT_WR);
	assert_int_equal(recv(fd, hb, sizeof(hb), MSG_WAITALL), (ssize_t)sizeof(hb));
	assert_int_equal(cn_proto_hdr_decode(hb, &h), CN_OK);
	assert_int_equal(h.payload_len, sizeof(meta) + (uint64_t)N * SZ);
	assert_int_equal(recv(fd, meta, sizeof(meta), MSG_WAITALL), (ssize_t)sizeof(meta));
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(recv(fd, got, SZ, MSG_WAITALL), (ssize_t)SZ);
		memset(chunk, (int)(i + 1), SZ);
		assert_memory_equal(got, chunk, SZ);
	}
	assert_closed(fd);
	free(chunk);
	free(got);
	assert_node_serving();
}

/*
 * Replies owed before a fatal frame still arrive, whole, even when the client
 * keeps sending after it: closing a socket with unread input would make the
 * kernel reset the connection and drop the queued replies.
 */
static void replies_survive_a_fatal_frame_and_junk(void **state)
{
	enum { N = 8, SZ = 1u << 20 };
	struct cn_key keys[N];
	uint8_t *got = malloc(SZ), *junk = calloc(1, SZ), req[8 + N * 32], hb[CN_PROTO_HDR_LEN];
	uint8_t meta[8 + N * 8], bad[CN_PROTO_HDR_LEN];
	struct cn_proto_hdr h;
	char msg[512];
	int fd;

	for (unsigned i = 0; i < N; i++) { /* stored by half_close_still_gets_whole_reply */
		char name[32];
		snprintf(name, sizeof(name), "half-%u", i);
		keys[i] = cn_test_key("%s", name);
	}
	fd = raw_connect();
	cn_put_le32(req, N);
	cn_put_le32(req + 4, 0);
	memcpy(req + 8, keys, sizeof(keys));
	send_hdr(fd, CN_OP_RETRIEVE, 70, sizeof(req));
	send_all(fd, req, sizeof(req));
	memset(bad, 'x', sizeof(bad));
	send_all(fd, bad, sizeof(bad)); /* fatal */
	send(fd, junk, SZ, MSG_NOSIGNAL | MSG_DONTWAIT); /* and more the node will not read */
	usleep(300 * 1000); /* the node has flushed what it could and decided to close */
	assert_int_equal(recv(fd, hb, sizeof(hb), MSG_WAITALL), (ssize_t)sizeof(hb));
	assert_int_equal(cn_proto_hdr_decode(hb, &h), CN_OK);
	assert_int_equal(h.req_id, 70);
	assert_int_equal(recv(fd, meta, sizeof(meta), MSG_WAITALL), (ssize_t)sizeof(meta));
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(recv(fd, got, SZ, MSG_WAITALL), (ssize_t)SZ);
		assert_int_equal(got[0], i + 1);
		assert_int_equal(got[SZ - 1], i + 1);
	}
	recv_reply(fd, &h, msg, sizeof(msg)); /* and then the ERROR frame */
	assert_int_equal(h.opcode, CN_OP_ERROR);
	close(fd);
	free(got);
	free(junk);
	assert_node_serving();
}

static void reply_flag_from_client_is_fatal(void **state)
{
	struct cn_proto_hdr h;
	uint8_t b[CN_PROTO_HDR_LEN];
	char msg[512];
	int fd = raw_connect();

	cn_proto_hdr_init(&h, CN_OP_PING, CN_F_RESPONSE, 24, 0, 0);
	cn_proto_hdr_encode(&h, b);
	send_all(fd, b, sizeof(b));
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.opcode, CN_OP_ERROR);
	assert_closed(fd);
	assert_node_serving();
}

static int group_setup(void **state)
{
	const char *args[] = {"--l1-size", "64M", "--max-chunk", "1M", NULL};

	signal(SIGPIPE, SIG_IGN);
	if (cn_daemon_start(&d, args) < 0)
		return -1;
	return cn_client_connect(d.addr, NULL, &bystander);
}

static int group_teardown(void **state)
{
	int rc;

	cn_client_close(&bystander);
	rc = cn_daemon_stop(&d, SIGTERM, 10000);
	if (rc != 0)
		fprintf(stderr, "daemon exit status %d\n", rc);
	return rc;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bad_checksum),
		cmocka_unit_test(wrong_magic),
		cmocka_unit_test(wrong_version),
		cmocka_unit_test(length_beyond_limits),
		cmocka_unit_test(truncated_frame_then_disconnect),
		cmocka_unit_test(unknown_opcode),
		cmocka_unit_test(duplicate_keys_in_batch),
		cmocka_unit_test(zero_length_chunk),
		cmocka_unit_test(retrieve_missing_key),
		cmocka_unit_test(client_vanishes_mid_payload_batch),
		cmocka_unit_test(refused_batch_then_disconnect),
		cmocka_unit_test(store_shorter_than_batch_header),
		cmocka_unit_test(half_close_still_gets_whole_reply),
		cmocka_unit_test(replies_survive_a_fatal_frame_and_junk),
		cmocka_unit_test(reply_flag_from_client_is_fatal),
	};
	return cmocka_run_group_tests_name("badinput", tests, group_setup, group_teardown);
}
