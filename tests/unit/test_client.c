/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of libcachenode: SHA-256 and keys, then the client against a
 * scripted peer. The peer is a thread on a TCP socket that answers HELLO and
 * then checks the frames it receives byte by byte against the layout in
 * proto.h (written out here by hand, not through the client's encoder), and
 * sends the replies each test needs, including broken ones.
 *
 * The peer never calls cmocka (its assertions would jump across threads): it
 * records the first failed check, and the test asserts on it after joining.
 *
 * The RDMA path (CN_F_RDMA frames, memory registration) runs over a fake
 * transport: TCP for the bytes plus a mem_reg/mem_dereg that only keep a
 * table. The peer shares the process, so it "RDMA-reads" and "-writes" the
 * client's buffers with memcpy, after checking that each descriptor's rkey
 * names a live registration covering the range. That needs cn_transport.h:
 * these tests skip, saying so, when the test is built without it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cachenode/client.h>
#include <cachenode/proto.h>

#include "cn_client_internal.h"

#ifdef __has_include
#if __has_include("cn_transport.h")
#include "cn_transport.h"
#define HAVE_TRANSPORT_H 1
#endif
#endif

#define PEER_IO_MS 5000

struct fake_rdma;

struct peer;
typedef int (*peer_script_fn)(struct peer *p);

struct peer {
	int lfd;
	int fd;
	char addr[64];
	pthread_t thr;
	peer_script_fn script;
	bool no_hello; /* the script answers HELLO itself */
	uint32_t max_keys, max_chunk;
	uint64_t max_frame;
	struct fake_rdma *rdma; /* the fake RDMA transport's registrations, or NULL */
	int failed;
	char why[256];
};

#define PCHECK(p, cond)                                                                      \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			snprintf((p)->why, sizeof((p)->why), "%s:%d: %s", __FILE__, __LINE__, \
				 #cond);                                                     \
			(p)->failed = 1;                                                     \
			return -1;                                                           \
		}                                                                            \
	} while (0)

static int peer_read(struct peer *p, void *buf, size_t len)
{
	char *b = buf;

	while (len > 0) {
		struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
		ssize_t n;

		if (poll(&pfd, 1, PEER_IO_MS) <= 0)
			return -ETIMEDOUT;
		n = read(p->fd, b, len);
		if (n <= 0)
			return -ECONNRESET;
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

static int peer_write(struct peer *p, const void *buf, size_t len)
{
	const char *b = buf;

	while (len > 0) {
		ssize_t n = send(p->fd, b, len, MSG_NOSIGNAL);

		if (n <= 0)
			return -EPIPE;
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Read one request header and check every field by hand against the layout
 * of proto.h, flags included; returns its req_id through @id and payload_len
 * through @plen.
 */
static int peer_expect_hdr_flags(struct peer *p, uint8_t op, uint16_t flags, uint64_t *id,
				 uint32_t *plen)
{
	uint8_t h[CN_PROTO_HDR_LEN];
	uint32_t crc;

	PCHECK(p, peer_read(p, h, sizeof(h)) == 0);
	PCHECK(p, h[0] == 'C' && h[1] == 'N' && h[2] == 'K' && h[3] == 'V');
	PCHECK(p, h[4] == CN_PROTO_VERSION);
	PCHECK(p, h[5] == op);
	PCHECK(p, h[6] == (uint8_t)flags && h[7] == (uint8_t)(flags >> 8));
	*id = 0;
	for (int i = 7; i >= 0; i--)
		*id = *id << 8 | h[8 + i];
	*plen = (uint32_t)h[16] | (uint32_t)h[17] << 8 | (uint32_t)h[18] << 16 |
		(uint32_t)h[19] << 24;
	for (int i = 20; i < 28; i++)
		PCHECK(p, h[i] == 0); /* status and reserved */
	crc = cn_crc32c(0, h, 28);
	PCHECK(p, h[28] == (uint8_t)crc && h[29] == (uint8_t)(crc >> 8) &&
			  h[30] == (uint8_t)(crc >> 16) && h[31] == (uint8_t)(crc >> 24));
	return 0;
}

/* A request without flags: everything but RDMA STORE / RETRIEVE. */
static int peer_expect_hdr(struct peer *p, uint8_t op, uint64_t *id, uint32_t *plen)
{
	return peer_expect_hdr_flags(p, op, 0, id, plen);
}

static int peer_reply(struct peer *p, uint8_t op, uint16_t flags, uint64_t id, int32_t status,
		      const void *payload, uint32_t len)
{
	struct cn_proto_hdr h;
	uint8_t raw[CN_PROTO_HDR_LEN];

	cn_proto_hdr_init(&h, op, flags, id, len, status);
	cn_proto_hdr_encode(&h, raw);
	PCHECK(p, peer_write(p, raw, sizeof(raw)) == 0);
	if (len > 0)
		PCHECK(p, peer_write(p, payload, len) == 0);
	return 0;
}

static int peer_hello(struct peer *p, const char *want_name)
{
	uint8_t req[8 + CN_PROTO_MAX_NAME], rep[32 + 16];
	uint64_t id;
	uint32_t plen;
	size_t nl = strlen("node-a");

	if (peer_expect_hdr(p, CN_OP_HELLO, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen >= 8 && plen <= sizeof(req));
	PCHECK(p, peer_read(p, req, plen) == 0);
	PCHECK(p, req[0] == CN_PROTO_VERSION && req[1] == 0); /* ver_min */
	PCHECK(p, req[2] == CN_PROTO_VERSION && req[3] == 0); /* ver_max */
	PCHECK(p, req[4] + (req[5] << 8) == (int)plen - 8);   /* name_len */
	PCHECK(p, req[6] == 0 && req[7] == 0);
	if (want_name != NULL)
		PCHECK(p, plen - 8 == strlen(want_name) && !memcmp(req + 8, want_name, plen - 8));

	memset(rep, 0, sizeof(rep));
	cn_put_le16(rep, CN_PROTO_VERSION);
	cn_put_le16(rep + 2, (uint16_t)nl);
	cn_put_le32(rep + 4, p->max_keys);
	cn_put_le32(rep + 8, p->max_chunk);
	cn_put_le64(rep + 16, p->max_frame);
	cn_put_le64(rep + 24, 1ull << 30);
	memcpy(rep + 32, "node-a", nl);
	return peer_reply(p, CN_OP_HELLO, CN_F_RESPONSE, id, CN_OK, rep, (uint32_t)(32 + nl));
}

/* Wait (bounded) for the client to hang up, so its last frames are all read. */
static int peer_expect_eof(struct peer *p)
{
	uint8_t b;

	PCHECK(p, peer_read(p, &b, 1) == -ECONNRESET);
	return 0;
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	struct pollfd pfd = {.fd = p->lfd, .events = POLLIN};

	if (poll(&pfd, 1, PEER_IO_MS) <= 0) {
		snprintf(p->why, sizeof(p->why), "no connection to accept");
		p->failed = 1;
		return NULL;
	}
	p->fd = accept(p->lfd, NULL, NULL);
	if (p->fd < 0) {
		snprintf(p->why, sizeof(p->why), "accept: %s", strerror(errno));
		p->failed = 1;
		return NULL;
	}
	if (!p->no_hello && peer_hello(p, NULL) < 0)
		return NULL;
	if (p->script != NULL)
		p->script(p);
	return NULL;
}

static int listen_any(char *addr, size_t len)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(addr, len, "127.0.0.1:%u", ntohs(sin.sin_port));
	return fd;
}

/*
 * @max_chunk: what the peer's HELLO announces; 0 for 4096.
 * @rdma: the fake transport's registrations the script checks, or NULL.
 */
static void peer_start_rdma(struct peer *p, peer_script_fn script, bool no_hello,
			    uint32_t max_chunk, struct fake_rdma *rdma)
{
	memset(p, 0, sizeof(*p));
	p->rdma = rdma;
	p->fd = -1;
	p->no_hello = no_hello;
	p->script = script;
	p->max_keys = 8;
	p->max_chunk = max_chunk ? max_chunk : 4096;
	p->max_frame = 1u << 20;
	p->lfd = listen_any(p->addr, sizeof(p->addr));
	assert_int_equal(pthread_create(&p->thr, NULL, peer_main, p), 0);
}

static void peer_start(struct peer *p, peer_script_fn script, bool no_hello, uint32_t max_chunk)
{
	peer_start_rdma(p, script, no_hello, max_chunk, NULL);
}

/* Join the peer (the client must have hung up or be about to) and check it. */
static void peer_finish(struct peer *p)
{
	pthread_join(p->thr, NULL);
	if (p->fd >= 0)
		close(p->fd);
	close(p->lfd);
	if (p->failed)
		fail_msg("peer: %s", p->why);
}

static struct cn_client *connect_peer(struct peer *p)
{
	struct cn_client_opts o = {.timeout_ms = 3000};
	struct cn_client *c = NULL;
	int rc = cn_client_connect(p->addr, &o, &c);

	if (rc != 0)
		fail_msg("connect: %d %s", rc, cn_client_errmsg(c));
	return c;
}

static void make_key(struct cn_key *k, uint8_t seed)
{
	for (int i = 0; i < CN_KEY_LEN; i++)
		k->b[i] = (uint8_t)(seed * 31 + i);
}

/* ---- SHA-256 and keys ---- */

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static void test_sha256_vectors(void **state)
{
	uint8_t d[32];
	char h[65];
	char *million;

	cn_sha256("", 0, d);
	hex(d, 32, h);
	assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	cn_sha256("abc", 3, d);
	hex(d, 32, h);
	assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	cn_sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
	hex(d, 32, h);
	assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	cn_sha256("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
		  "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu", 112, d);
	hex(d, 32, h);
	assert_string_equal(h, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
	million = malloc(1000000);
	assert_non_null(million);
	memset(million, 'a', 1000000);
	cn_sha256(million, 1000000, d);
	free(million);
	hex(d, 32, h);
	assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	/* 55, 56 and 64 bytes straddle the padding boundary. */
	cn_sha256("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 55, d);
	hex(d, 32, h);
	assert_string_equal(h, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
	cn_sha256("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 64, d);
	hex(d, 32, h);
	assert_string_equal(h, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

static void test_key_parse_format(void **state)
{
	const char *lower = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	const char *upper = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
	struct cn_key k, k2;
	uint8_t d[32];
	char out[65];

	assert_int_equal(cn_key_parse(lower, &k), 0);
	for (int i = 0; i < 32; i++)
		assert_int_equal(k.b[i], i);
	cn_key_format(&k, out);
	assert_string_equal(out, lower);
	assert_int_equal(cn_key_parse(upper, &k2), 0);
	assert_memory_equal(k.b, k2.b, 32);

	/* 63 and 65 characters, and 64 that are not all hex: names, hashed. */
	assert_int_equal(cn_key_parse("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",
				      &k), 0);
	cn_sha256("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1", 63, d);
	assert_memory_equal(k.b, d, 32);
	assert_int_equal(cn_key_parse("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0",
				      &k), 0);
	cn_sha256("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0", 65, d);
	assert_memory_equal(k.b, d, 32);
	assert_int_equal(cn_key_parse("g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
				      &k), 0);
	cn_sha256("g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 64, d);
	assert_memory_equal(k.b, d, 32);

	assert_int_equal(cn_key_parse("abc", &k), 0);
	cn_key_format(&k, out);
	assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	/* format -> parse is the identity */
	assert_int_equal(cn_key_parse(out, &k2), 0);
	assert_memory_equal(k.b, k2.b, 32);

	assert_int_equal(cn_key_parse("", &k), -EINVAL);
	assert_int_equal(cn_key_parse(NULL, &k), -EINVAL);
}

/* ---- connecting ---- */

static void test_connect_refused(void **state)
{
	struct cn_client_opts o = {.timeout_ms = 2000};
	struct cn_client *c = NULL;
	char addr[64], want[96];
	int fd = listen_any(addr, sizeof(addr));

	close(fd); /* nothing listens on that port any more */
	assert_int_equal(cn_client_connect(addr, &o, &c), -ECONNREFUSED);
	assert_non_null(c); /* carries the message */
	snprintf(want, sizeof(want), "connect %s: Connection refused", addr);
	assert_string_equal(cn_client_errmsg(c), want);
	assert_int_equal(cn_client_ping(c), -ENOTCONN);
	cn_client_close(&c);
	assert_null(c);
	cn_client_close(&c);
	cn_client_close(NULL);

	assert_int_equal(cn_client_connect("no-port-here", &o, &c), -EINVAL);
	assert_non_null(strstr(cn_client_errmsg(c), "no-port-here"));
	cn_client_close(&c);
	o.transport = "carrier-pigeon";
	assert_int_equal(cn_client_connect(addr, &o, &c), -EINVAL);
	assert_non_null(strstr(cn_client_errmsg(c), "carrier-pigeon"));
	cn_client_close(&c);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_hello_timeout(void **state)
{
	struct cn_client_opts o = {.timeout_ms = 300};
	struct cn_client *c = NULL;
	char addr[64];
	int fd = listen_any(addr, sizeof(addr)); /* the kernel accepts; nobody answers */
	double t0 = now_s(), dt;

	assert_int_equal(cn_client_connect(addr, &o, &c), -ETIMEDOUT);
	dt = now_s() - t0;
	assert_true(dt >= 0.25 && dt < 3.0);
	assert_non_null(strstr(cn_client_errmsg(c), "hello"));
	assert_non_null(strstr(cn_client_errmsg(c), "timed out after 300 ms"));
	cn_client_close(&c);
	close(fd);
}

static int script_ping_echo(struct peer *p)
{
	uint8_t buf[CN_PROTO_MAX_PING];
	uint64_t id;
	uint32_t plen;

	if (peer_expect_hdr(p, CN_OP_PING, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen <= sizeof(buf));
	PCHECK(p, peer_read(p, buf, plen) == 0);
	if (peer_reply(p, CN_OP_PING, CN_F_RESPONSE, id, CN_OK, buf, plen) < 0)
		return -1;
	return peer_expect_eof(p);
}

static int script_named_hello(struct peer *p)
{
	if (peer_hello(p, "unit-test-client") < 0)
		return -1;
	return script_ping_echo(p);
}

static void test_hello_node_info(void **state)
{
	struct cn_client_opts o = {.timeout_ms = 3000, .name = "unit-test-client"};
	const struct cn_node_info *ni;
	struct cn_client *c = NULL;
	struct peer p;

	peer_start(&p, script_named_hello, true, 0);
	assert_int_equal(cn_client_connect(p.addr, &o, &c), 0);
	ni = cn_client_node(c);
	assert_int_equal(ni->version, CN_PROTO_VERSION);
	assert_int_equal(ni->max_keys, 8);
	assert_int_equal(ni->max_chunk, 4096);
	assert_int_equal(ni->max_frame, 1u << 20);
	assert_int_equal(ni->l1_capacity, 1ull << 30);
	assert_string_equal(ni->node_id, "node-a");
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
	peer_finish(&p);
}

static int script_version_refused(struct peer *p)
{
	static const char msg[] = "protocol version 1 not supported (node speaks 2..3)";
	uint8_t req[8 + CN_PROTO_MAX_NAME];
	uint64_t id;
	uint32_t plen;

	if (peer_expect_hdr(p, CN_OP_HELLO, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen <= sizeof(req) && peer_read(p, req, plen) == 0);
	return peer_reply(p, CN_OP_HELLO, CN_F_RESPONSE | CN_F_CLOSE, id, CN_E_VERSION, msg,
			  sizeof(msg) - 1);
}

static void test_hello_version_refused(void **state)
{
	struct cn_client_opts o = {.timeout_ms = 3000};
	struct cn_client *c = NULL;
	struct peer p;

	peer_start(&p, script_version_refused, true, 0);
	assert_int_equal(cn_client_connect(p.addr, &o, &c), -EPROTONOSUPPORT);
	assert_non_null(strstr(cn_client_errmsg(c), "node speaks 2..3"));
	assert_non_null(strstr(cn_client_errmsg(c), p.addr));
	cn_client_close(&c);
	peer_finish(&p);
}

/* ---- requests ---- */

/* Validation: nothing reaches the peer, which must see the ping next. */
static void test_submit_validation(void **state)
{
	struct cn_key keys[9];
	uint8_t data[4097] = {0};
	struct cn_buf bufs[2] = {{data, 10, 10}, {data, 0, 0}};
	int32_t st[9];
	struct cn_client *c;
	struct peer p;
	struct cn_req r;

	for (int i = 0; i < 9; i++)
		make_key(&keys[i], (uint8_t)i);
	peer_start(&p, script_ping_echo, false, 0);
	c = connect_peer(&p);

	r = (struct cn_req){.op = CN_OP_LOOKUP, .nkeys = 0, .keys = keys};
	assert_int_equal(cn_client_submit(c, &r), -EINVAL);
	assert_int_equal(r.result, -EINVAL);
	assert_non_null(strstr(cn_client_errmsg(c), "lookup"));
	r = (struct cn_req){.op = CN_OP_STORE, .nkeys = 2, .keys = keys, .bufs = bufs, .status = st};
	assert_int_equal(cn_client_submit(c, &r), -EINVAL); /* bufs[1].len == 0 */
	assert_non_null(strstr(cn_client_errmsg(c), "length 0"));
	bufs[1] = (struct cn_buf){NULL, 10, 10};
	assert_int_equal(cn_client_submit(c, &r), -EINVAL); /* NULL data */
	bufs[1] = (struct cn_buf){data, 4097, 4097};
	assert_int_equal(cn_client_submit(c, &r), -E2BIG); /* over max_chunk 4096 */
	r.bufs = NULL;
	bufs[1].len = 10;
	assert_int_equal(cn_client_submit(c, &r), -EINVAL);
	r = (struct cn_req){.op = CN_OP_DELETE, .nkeys = 9, .keys = keys, .status = st};
	assert_int_equal(cn_client_submit(c, &r), -E2BIG); /* over max_keys 8 */
	r = (struct cn_req){.op = CN_OP_DELETE, .nkeys = 1, .keys = NULL, .status = st};
	assert_int_equal(cn_client_submit(c, &r), -EINVAL);
	r = (struct cn_req){.op = CN_OP_RETRIEVE, .nkeys = 1, .keys = keys};
	assert_int_equal(cn_client_submit(c, &r), -EINVAL); /* no buffers */
	r = (struct cn_req){.op = 99, .nkeys = 1, .keys = keys};
	assert_int_equal(cn_client_submit(c, &r), -EINVAL);
	r = (struct cn_req){.op = CN_OP_HELLO, .nkeys = 1, .keys = keys};
	assert_int_equal(cn_client_submit(c, &r), -EINVAL);
	r = (struct cn_req){.op = CN_OP_STATUS};
	assert_int_equal(cn_client_submit(c, &r), -EINVAL); /* no bufs[0] for the document */
	assert_int_equal(cn_client_store(c, &keys[0], data, 0), -EINVAL);
	assert_int_equal(cn_client_lookup(c, keys, 0, NULL, NULL), -EINVAL);
	assert_int_equal(cn_client_outstanding(c), 0);
	{
		struct cn_req *done = (struct cn_req *)&r;

		assert_int_equal(cn_client_wait(c, &done), -EAGAIN);
		assert_null(done);
	}

	assert_int_equal(cn_client_ping(c), 0); /* the first frame the peer sees */
	cn_client_close(&c);
	peer_finish(&p);
}

static const char small_chunk[] = "hello";

static void fill_pattern(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 7 + seed);
}

static int check_keys(struct peer *p, const uint8_t *m, uint32_t n, size_t stride)
{
	for (uint32_t i = 0; i < n; i++) {
		struct cn_key k;

		make_key(&k, (uint8_t)i);
		PCHECK(p, !memcmp(m + i * stride, k.b, CN_KEY_LEN));
	}
	return 0;
}

static int script_batches(struct peer *p)
{
	uint8_t m[256], big[3000], want[3000];
	uint64_t id, last_id;
	uint32_t plen;
	uint8_t rep[64];

	/* STORE of 2 keys: count, 0, 2 x {key, len, 0}, "hello", 3000 pattern bytes */
	if (peer_expect_hdr(p, CN_OP_STORE, &id, &plen) < 0)
		return -1;
	PCHECK(p, id != 0);
	PCHECK(p, plen == 8 + 2 * 40 + 5 + 3000);
	PCHECK(p, peer_read(p, m, 8 + 2 * 40) == 0);
	PCHECK(p, m[0] == 2 && m[1] == 0 && m[2] == 0 && m[3] == 0);
	for (int i = 4; i < 8; i++)
		PCHECK(p, m[i] == 0);
	if (check_keys(p, m + 8, 2, 40) < 0)
		return -1;
	PCHECK(p, m[8 + 32] == 5 && m[8 + 33] == 0 && m[8 + 34] == 0 && m[8 + 35] == 0);
	PCHECK(p, !memcmp(m + 8 + 36, "\0\0\0\0", 4));
	PCHECK(p, m[48 + 32] == (3000 & 0xff) && m[48 + 33] == (3000 >> 8) && m[48 + 34] == 0 &&
			  m[48 + 35] == 0);
	PCHECK(p, !memcmp(m + 48 + 36, "\0\0\0\0", 4));
	PCHECK(p, peer_read(p, m, 5) == 0 && !memcmp(m, small_chunk, 5));
	PCHECK(p, peer_read(p, big, 3000) == 0);
	fill_pattern(want, 3000, 1);
	PCHECK(p, !memcmp(big, want, 3000));
	memset(rep, 0, sizeof(rep));
	cn_put_le32(rep, 2);
	cn_put_le32(rep + 8, CN_OK);
	cn_put_le32(rep + 12, CN_E_EXIST);
	if (peer_reply(p, CN_OP_STORE, CN_F_RESPONSE, id, CN_OK, rep, 16) < 0)
		return -1;
	last_id = id;

	/* DELETE of 1 key -> CN_E_NOENT */
	if (peer_expect_hdr(p, CN_OP_DELETE, &id, &plen) < 0)
		return -1;
	PCHECK(p, id > last_id);
	PCHECK(p, plen == 8 + 32);
	PCHECK(p, peer_read(p, m, plen) == 0);
	PCHECK(p, !memcmp(m, "\x01\0\0\0\0\0\0\0", 8));
	if (check_keys(p, m + 8, 1, 32) < 0)
		return -1;
	cn_put_le32(rep, 1);
	cn_put_le32(rep + 4, 0);
	cn_put_le32(rep + 8, CN_E_NOENT);
	if (peer_reply(p, CN_OP_DELETE, CN_F_RESPONSE, id, CN_OK, rep, 12) < 0)
		return -1;

	/* LOOKUP of 3 keys -> prefix 2, tiers L1 L2 NONE */
	if (peer_expect_hdr(p, CN_OP_LOOKUP, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen == 8 + 3 * 32);
	PCHECK(p, peer_read(p, m, plen) == 0);
	PCHECK(p, !memcmp(m, "\x03\0\0\0\0\0\0\0", 8));
	if (check_keys(p, m + 8, 3, 32) < 0)
		return -1;
	cn_put_le32(rep, 3);
	cn_put_le32(rep + 4, 2);
	rep[8] = CN_TIER_L1;
	rep[9] = CN_TIER_L2;
	rep[10] = CN_TIER_NONE;
	if (peer_reply(p, CN_OP_LOOKUP, CN_F_RESPONSE, id, CN_OK, rep, 11) < 0)
		return -1;

	/* STATUS: empty request, JSON reply */
	if (peer_expect_hdr(p, CN_OP_STATUS, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen == 0);
	if (peer_reply(p, CN_OP_STATUS, CN_F_RESPONSE, id, CN_OK, "{\"is_healthy\":true}", 19) < 0)
		return -1;
	return peer_expect_eof(p);
}

static void test_store_delete_lookup_status(void **state)
{
	struct cn_key keys[3];
	uint8_t big[3000], tiers[3] = {9, 9, 9};
	struct cn_buf bufs[2] = {{(void *)small_chunk, 5, 5}, {big, 3000, 3000}};
	int32_t st[2] = {-1, -1};
	struct cn_req r = {.op = CN_OP_STORE, .nkeys = 2, .bufs = bufs, .status = st};
	uint32_t prefix = 99;
	struct cn_client *c;
	char *json = NULL;
	struct peer p;

	for (int i = 0; i < 3; i++)
		make_key(&keys[i], (uint8_t)i);
	r.keys = keys;
	fill_pattern(big, sizeof(big), 1);
	peer_start(&p, script_batches, false, 0);
	c = connect_peer(&p);

	assert_int_equal(cn_client_exec(c, &r), 0); /* CN_E_EXIST is a success */
	assert_int_equal(st[0], CN_OK);
	assert_int_equal(st[1], CN_E_EXIST);
	assert_true(r.req_id != 0);

	assert_int_equal(cn_client_delete(c, &keys[0]), -ENOENT);
	assert_string_equal(cn_client_errmsg(c), "delete: no such key");

	assert_int_equal(cn_client_lookup(c, keys, 3, &prefix, tiers), 0);
	assert_int_equal(prefix, 2);
	assert_int_equal(tiers[0], CN_TIER_L1);
	assert_int_equal(tiers[1], CN_TIER_L2);
	assert_int_equal(tiers[2], CN_TIER_NONE);

	assert_int_equal(cn_client_status(c, &json), 0);
	assert_string_equal(json, "{\"is_healthy\":true}");
	free(json);

	cn_client_close(&c);
	peer_finish(&p);
}

static int script_retrieve(struct peer *p)
{
	uint8_t m[256], rep[64], chunk[3000];
	uint64_t id;
	uint32_t plen;

	/* 3 keys -> [OK "hello"], [NOENT], [OK 3000 bytes] */
	if (peer_expect_hdr(p, CN_OP_RETRIEVE, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen == 8 + 3 * 32);
	PCHECK(p, peer_read(p, m, plen) == 0);
	PCHECK(p, !memcmp(m, "\x03\0\0\0\0\0\0\0", 8));
	if (check_keys(p, m + 8, 3, 32) < 0)
		return -1;
	memset(rep, 0, sizeof(rep));
	cn_put_le32(rep, 3);
	cn_put_le32(rep + 8, CN_OK);
	cn_put_le32(rep + 12, 5);
	cn_put_le32(rep + 16, CN_E_NOENT);
	cn_put_le32(rep + 20, 0);
	cn_put_le32(rep + 24, CN_OK);
	cn_put_le32(rep + 28, 3000);
	memcpy(rep + 32, small_chunk, 5);
	fill_pattern(chunk, sizeof(chunk), 2);
	{
		struct cn_proto_hdr h;
		uint8_t raw[CN_PROTO_HDR_LEN];

		cn_proto_hdr_init(&h, CN_OP_RETRIEVE, CN_F_RESPONSE, id, 32 + 5 + 3000, CN_OK);
		cn_proto_hdr_encode(&h, raw);
		PCHECK(p, peer_write(p, raw, sizeof(raw)) == 0);
		PCHECK(p, peer_write(p, rep, 37) == 0);
		PCHECK(p, peer_write(p, chunk, sizeof(chunk)) == 0);
	}

	/* single key, 3000 bytes, into a buffer of 100: drained by the client */
	if (peer_expect_hdr(p, CN_OP_RETRIEVE, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen == 8 + 32 && peer_read(p, m, plen) == 0);
	cn_put_le32(rep, 1);
	cn_put_le32(rep + 8, CN_OK);
	cn_put_le32(rep + 12, 3000);
	{
		struct cn_proto_hdr h;
		uint8_t raw[CN_PROTO_HDR_LEN];

		cn_proto_hdr_init(&h, CN_OP_RETRIEVE, CN_F_RESPONSE, id, 16 + 3000, CN_OK);
		cn_proto_hdr_encode(&h, raw);
		PCHECK(p, peer_write(p, raw, sizeof(raw)) == 0);
		PCHECK(p, peer_write(p, rep, 16) == 0);
		PCHECK(p, peer_write(p, chunk, sizeof(chunk)) == 0);
	}
	/* still in step: a ping next */
	return script_ping_echo(p);
}

static void test_retrieve(void **state)
{
	struct cn_key keys[3];
	uint8_t b0[16], b1[16], b2[4000], want[3000];
	struct cn_buf bufs[3] = {{b0, 77, sizeof(b0)}, {b1, 77, sizeof(b1)}, {b2, 77, sizeof(b2)}};
	int32_t st[3] = {-1, -1, -1};
	struct cn_req r = {.op = CN_OP_RETRIEVE, .nkeys = 3, .bufs = bufs, .status = st};
	struct cn_client *c;
	struct peer p;
	uint32_t len = 0;

	for (int i = 0; i < 3; i++)
		make_key(&keys[i], (uint8_t)i);
	r.keys = keys;
	peer_start(&p, script_retrieve, false, 0);
	c = connect_peer(&p);

	assert_int_equal(cn_client_exec(c, &r), -ENOENT); /* key 1 is missing */
	assert_int_equal(st[0], CN_OK);
	assert_int_equal(st[1], CN_E_NOENT);
	assert_int_equal(st[2], CN_OK);
	assert_int_equal(bufs[0].len, 5);
	assert_memory_equal(b0, small_chunk, 5);
	assert_int_equal(bufs[1].len, 0);
	assert_int_equal(bufs[2].len, 3000);
	fill_pattern(want, sizeof(want), 2);
	assert_memory_equal(b2, want, 3000);
	assert_string_equal(cn_client_errmsg(c), "retrieve: key 1 of 3: no such key");

	assert_int_equal(cn_client_retrieve(c, &keys[0], b2, 100, &len), -ENOBUFS);
	assert_int_equal(len, 3000);
	assert_non_null(strstr(cn_client_errmsg(c), "cap 100"));
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
	peer_finish(&p);
}

/* Pipelining: N pings all sent before any reply; replies in order. */
static int script_pipeline(struct peer *p)
{
	uint64_t ids[CN_CLIENT_MAX_DEPTH];
	uint8_t buf[64];
	uint32_t plen;

	for (int i = 0; i < CN_CLIENT_MAX_DEPTH; i++) {
		if (peer_expect_hdr(p, CN_OP_PING, &ids[i], &plen) < 0)
			return -1;
		PCHECK(p, plen == 8);
		PCHECK(p, peer_read(p, buf, plen) == 0);
		PCHECK(p, cn_get_le64(buf) == (uint64_t)i);
		PCHECK(p, i == 0 || ids[i] > ids[i - 1]);
	}
	for (int i = 0; i < CN_CLIENT_MAX_DEPTH; i++) {
		cn_put_le64(buf, (uint64_t)i);
		if (peer_reply(p, CN_OP_PING, CN_F_RESPONSE, ids[i], CN_OK, buf, 8) < 0)
			return -1;
	}
	return peer_expect_eof(p);
}

static void test_pipeline(void **state)
{
	static uint8_t pay[CN_CLIENT_MAX_DEPTH][8];
	static struct cn_buf bufs[CN_CLIENT_MAX_DEPTH];
	static struct cn_req reqs[CN_CLIENT_MAX_DEPTH];
	struct cn_req extra = {.op = CN_OP_PING}, *done;
	struct cn_client *c;
	struct peer p;

	peer_start(&p, script_pipeline, false, 0);
	c = connect_peer(&p);
	for (int i = 0; i < CN_CLIENT_MAX_DEPTH; i++) {
		cn_put_le64(pay[i], (uint64_t)i);
		bufs[i] = (struct cn_buf){pay[i], 8, 8};
		reqs[i] = (struct cn_req){.op = CN_OP_PING, .bufs = &bufs[i], .user = &pay[i]};
		assert_int_equal(cn_client_submit(c, &reqs[i]), 0);
		assert_int_equal(cn_client_outstanding(c), i + 1);
	}
	assert_int_equal(cn_client_submit(c, &extra), -EBUSY);
	assert_int_equal(cn_client_ping(c), -EBUSY); /* exec needs an idle client */
	for (int i = 0; i < CN_CLIENT_MAX_DEPTH; i++) {
		assert_int_equal(cn_client_wait(c, &done), 0);
		assert_ptr_equal(done, &reqs[i]);
		assert_int_equal(done->result, 0);
		assert_ptr_equal(done->user, &pay[i]);
		assert_int_equal(cn_client_outstanding(c), CN_CLIENT_MAX_DEPTH - 1 - i);
	}
	assert_int_equal(cn_client_wait(c, &done), -EAGAIN);
	cn_client_close(&c);
	peer_finish(&p);
}

/* A request-level error: -errno and the node's message; the connection stays. */
static int script_nospc(struct peer *p)
{
	static const char msg[] = "pool full: 0 of 1024 MiB free, 12 chunks pinned";
	uint8_t m[64];
	uint64_t id;
	uint32_t plen;

	if (peer_expect_hdr(p, CN_OP_STORE, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen == 8 + 40 + 5 && peer_read(p, m, plen) == 0);
	if (peer_reply(p, CN_OP_STORE, CN_F_RESPONSE, id, CN_E_NOSPC, msg, sizeof(msg) - 1) < 0)
		return -1;
	return script_ping_echo(p);
}

static void test_request_error(void **state)
{
	struct cn_key k;
	struct cn_client *c;
	struct peer p;

	make_key(&k, 0);
	peer_start(&p, script_nospc, false, 0);
	c = connect_peer(&p);
	assert_int_equal(cn_client_store(c, &k, small_chunk, 5), -ENOSPC);
	assert_string_equal(cn_client_errmsg(c),
			    "store: node says: pool full: 0 of 1024 MiB free, 12 chunks pinned");
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
	peer_finish(&p);
}

/* An ERROR frame kills the connection. */
static int script_error_frame(struct peer *p)
{
	static const char msg[] = "malformed frame: bad header checksum";
	uint8_t m[64];
	uint64_t id;
	uint32_t plen;

	if (peer_expect_hdr(p, CN_OP_PING, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen <= sizeof(m) && peer_read(p, m, plen) == 0);
	if (peer_reply(p, CN_OP_ERROR, CN_F_RESPONSE | CN_F_CLOSE, id, CN_E_PROTO, msg,
		       sizeof(msg) - 1) < 0)
		return -1;
	return peer_expect_eof(p);
}

static void test_error_frame(void **state)
{
	struct cn_key k;
	struct cn_client *c;
	struct peer p;

	make_key(&k, 0);
	peer_start(&p, script_error_frame, false, 0);
	c = connect_peer(&p);
	assert_int_equal(cn_client_ping(c), -ECONNRESET);
	assert_non_null(strstr(cn_client_errmsg(c), "bad header checksum"));
	assert_int_equal(cn_client_ping(c), -ENOTCONN);
	assert_int_equal(cn_client_delete(c, &k), -ENOTCONN);
	assert_non_null(strstr(cn_client_errmsg(c), "not connected"));
	peer_finish(&p); /* the client closed its socket already */
	cn_client_close(&c);
}

/* CN_F_CLOSE on a reply: that request completes, those queued behind fail. */
static int script_close_flag(struct peer *p)
{
	uint8_t m[2][64];
	uint64_t id[2];
	uint32_t plen[2];

	for (int i = 0; i < 2; i++) {
		if (peer_expect_hdr(p, CN_OP_PING, &id[i], &plen[i]) < 0)
			return -1;
		PCHECK(p, plen[i] <= sizeof(m[i]) && peer_read(p, m[i], plen[i]) == 0);
	}
	return peer_reply(p, CN_OP_PING, CN_F_RESPONSE | CN_F_CLOSE, id[0], CN_OK, m[0], plen[0]);
}

static void test_close_flag(void **state)
{
	uint8_t pay[2][4] = {"abc", "def"};
	struct cn_buf bufs[2] = {{pay[0], 4, 4}, {pay[1], 4, 4}};
	struct cn_req r[2] = {{.op = CN_OP_PING, .bufs = &bufs[0]},
			      {.op = CN_OP_PING, .bufs = &bufs[1]}};
	struct cn_req *done;
	struct cn_client *c;
	struct peer p;

	peer_start(&p, script_close_flag, false, 0);
	c = connect_peer(&p);
	assert_int_equal(cn_client_submit(c, &r[0]), 0);
	assert_int_equal(cn_client_submit(c, &r[1]), 0);
	assert_int_equal(cn_client_wait(c, &done), 0);
	assert_ptr_equal(done, &r[0]);
	assert_int_equal(r[0].result, 0);
	assert_int_equal(cn_client_outstanding(c), 1);
	assert_int_equal(cn_client_wait(c, &done), -ECONNRESET);
	assert_null(done);
	assert_int_equal(r[1].result, -ECONNRESET);
	assert_int_equal(cn_client_outstanding(c), 0);
	assert_int_equal(cn_client_wait(c, &done), -ENOTCONN);
	assert_int_equal(cn_client_submit(c, &r[0]), -ENOTCONN);
	assert_int_equal(cn_client_ping(c), -ENOTCONN);
	cn_client_close(&c);
	peer_finish(&p);
}

/* A reply that does not match the request is a protocol error. */
static int script_bad_reply(struct peer *p)
{
	uint8_t m[64];
	uint64_t id;
	uint32_t plen;

	if (peer_expect_hdr(p, CN_OP_PING, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen <= sizeof(m) && peer_read(p, m, plen) == 0);
	if (peer_reply(p, CN_OP_PING, CN_F_RESPONSE, id + 1, CN_OK, m, plen) < 0)
		return -1;
	return peer_expect_eof(p);
}

static void test_bad_reply(void **state)
{
	struct cn_client *c;
	struct peer p;

	peer_start(&p, script_bad_reply, false, 0);
	c = connect_peer(&p);
	assert_int_equal(cn_client_ping(c), -EPROTO);
	assert_non_null(strstr(cn_client_errmsg(c), "bad reply"));
	assert_int_equal(cn_client_ping(c), -ENOTCONN);
	peer_finish(&p);
	cn_client_close(&c);
}

/* The node goes away in the middle of a request. */
static int script_hangup(struct peer *p)
{
	uint64_t id;
	uint32_t plen;

	if (peer_expect_hdr(p, CN_OP_DELETE, &id, &plen) < 0)
		return -1;
	close(p->fd);
	p->fd = -1;
	return 0;
}

static void test_hangup(void **state)
{
	struct cn_key k;
	struct cn_client *c;
	struct peer p;

	make_key(&k, 0);
	peer_start(&p, script_hangup, false, 0);
	c = connect_peer(&p);
	assert_int_equal(cn_client_delete(c, &k), -ECONNRESET);
	assert_non_null(strstr(cn_client_errmsg(c), "closed the connection"));
	assert_int_equal(cn_client_delete(c, &k), -ENOTCONN);
	peer_finish(&p);
	cn_client_close(&c);
}

/*
 * Flow control: with more than 16 MiB of RETRIEVE replies possibly unread, a
 * large STORE is sent only after submit has read replies (into their buffers)
 * so the node, which stops reading while its output is backed up, can't
 * deadlock with a client stuck in sendv. The peer answers the retrieves late:
 * submitting the store has to wait for that.
 */
#define FC_DELAY_MS 600
#define FC_CAP	    (8u << 20)

static int script_flow_control(struct peer *p)
{
	static uint8_t payload[100000];
	uint8_t m[64], rep[32];
	uint64_t id[4];
	uint32_t plen;
	struct timespec d = {.tv_sec = 0, .tv_nsec = FC_DELAY_MS * 1000000L};

	for (int i = 0; i < 3; i++) {
		if (peer_expect_hdr(p, CN_OP_RETRIEVE, &id[i], &plen) < 0)
			return -1;
		PCHECK(p, plen == 8 + 32 && peer_read(p, m, plen) == 0);
	}
	nanosleep(&d, NULL);
	for (int i = 0; i < 3; i++) {
		memset(rep, 0, sizeof(rep));
		cn_put_le32(rep, 1);
		cn_put_le32(rep + 12, 10);
		memset(rep + 16, 'a' + i, 10);
		if (peer_reply(p, CN_OP_RETRIEVE, CN_F_RESPONSE, id[i], CN_OK, rep, 26) < 0)
			return -1;
	}
	if (peer_expect_hdr(p, CN_OP_STORE, &id[3], &plen) < 0)
		return -1;
	PCHECK(p, plen == 8 + 40 + sizeof(payload));
	PCHECK(p, peer_read(p, m, 48) == 0 && peer_read(p, payload, sizeof(payload)) == 0);
	memset(rep, 0, sizeof(rep));
	cn_put_le32(rep, 1);
	if (peer_reply(p, CN_OP_STORE, CN_F_RESPONSE, id[3], CN_OK, rep, 12) < 0)
		return -1;
	return peer_expect_eof(p);
}

static void test_flow_control(void **state)
{
	static uint8_t big[3][FC_CAP], payload[100000];
	struct cn_buf rb[3], sb = {payload, sizeof(payload), sizeof(payload)};
	struct cn_req r[4], *done;
	struct cn_key k[4];
	struct cn_client *c;
	struct peer p;
	double t0, dt;

	for (int i = 0; i < 4; i++)
		make_key(&k[i], (uint8_t)i);
	peer_start(&p, script_flow_control, false, 1u << 20);
	c = connect_peer(&p);
	t0 = now_s();
	for (int i = 0; i < 3; i++) {
		rb[i] = (struct cn_buf){big[i], 0, FC_CAP};
		r[i] = (struct cn_req){.op = CN_OP_RETRIEVE, .nkeys = 1, .keys = &k[i],
				       .bufs = &rb[i]};
		assert_int_equal(cn_client_submit(c, &r[i]), 0);
	}
	/* retrieves alone are never held back */
	assert_true(now_s() - t0 < FC_DELAY_MS * 0.8 / 1000.0); /* held back: >= FC_DELAY_MS */
	r[3] = (struct cn_req){.op = CN_OP_STORE, .nkeys = 1, .keys = &k[3], .bufs = &sb};
	assert_int_equal(cn_client_submit(c, &r[3]), 0);
	dt = now_s() - t0;
	assert_true(dt >= FC_DELAY_MS * 0.8 / 1000.0); /* it waited for replies */
	assert_int_equal(cn_client_outstanding(c), 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(cn_client_wait(c, &done), 0);
		assert_ptr_equal(done, &r[i]);
		assert_int_equal(done->result, 0);
		if (i < 3) {
			assert_int_equal(rb[i].len, 10);
			assert_int_equal(big[i][0], 'a' + i);
			assert_int_equal(big[i][9], 'a' + i);
		}
	}
	assert_int_equal(cn_client_wait(c, &done), -EAGAIN);
	cn_client_close(&c);
	peer_finish(&p);
}

/* ---- transports and memory registration ---- */

/* True when this machine lists an RDMA device (then "verbs" may get further). */
static bool rdma_device_present(void)
{
	DIR *d = opendir("/sys/class/infiniband");
	struct dirent *e;
	bool any = false;

	if (d == NULL)
		return false;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			any = true;
	closedir(d);
	return any;
}

/* A STORE with no flags and its payload inline, then a ping. */
static int script_inline_store(struct peer *p)
{
	uint8_t m[64], rep[12] = {0};
	uint64_t id;
	uint32_t plen;

	if (peer_expect_hdr(p, CN_OP_STORE, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen == 8 + 40 + 5 && peer_read(p, m, plen) == 0);
	PCHECK(p, !memcmp(m + 48, small_chunk, 5));
	cn_put_le32(rep, 1);
	if (peer_reply(p, CN_OP_STORE, CN_F_RESPONSE, id, CN_OK, rep, sizeof(rep)) < 0)
		return -1;
	return script_ping_echo(p);
}

static void test_transport_choice(void **state)
{
	struct cn_client_opts o = {.timeout_ms = 3000};
	struct cn_client *c = NULL;
	char addr[64];
	struct peer p;
	int fd, rc;

	assert_string_equal(cn_client_transport(NULL), "none");

	/* an unknown name: -EINVAL, the name and the choices in the message */
	fd = listen_any(addr, sizeof(addr));
	close(fd);
	o.transport = "bogus";
	assert_int_equal(cn_client_connect(addr, &o, &c), -EINVAL);
	assert_non_null(strstr(cn_client_errmsg(c), "unknown transport \"bogus\""));
	assert_non_null(strstr(cn_client_errmsg(c), "tcp, verbs or auto"));
	assert_string_equal(cn_client_transport(c), "none");
	assert_int_equal(cn_client_ping(c), -ENOTCONN);
	cn_client_close(&c);

	/* verbs without an RDMA device (or RDMA support in the build): says why */
	o.transport = "verbs";
	rc = cn_client_connect(addr, &o, &c);
	if (!rdma_device_present()) {
		const char *m = cn_client_errmsg(c);
		const char *why = strstr(m, "transport verbs is not usable: ");

		assert_int_equal(rc, -ENODEV);
		assert_non_null(why);
		assert_true(strlen(why) > strlen("transport verbs is not usable: ") + 3);
		assert_non_null(strstr(m, addr));
	} else {
		/* nothing listens there: refused, unreachable or timed out over verbs */
		assert_true(rc < 0);
		assert_non_null(strstr(cn_client_errmsg(c), "verbs"));
	}
	cn_client_close(&c);

	/* auto: tcp when verbs is not usable or the node does not answer RDMA */
	peer_start(&p, script_ping_echo, false, 0);
	o.transport = "auto";
	assert_int_equal(cn_client_connect(p.addr, &o, &c), 0);
	assert_string_equal(cn_client_transport(c), "tcp");
	assert_string_equal(cn_client_errmsg(c), "");
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
	peer_finish(&p);

	/* tcp named, with an RDMA device that tcp ignores */
	peer_start(&p, script_ping_echo, false, 0);
	o.transport = "tcp";
	o.rdma_dev = "no-such-dev0";
	assert_int_equal(cn_client_connect(p.addr, &o, &c), 0);
	assert_string_equal(cn_client_transport(c), "tcp");
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
	peer_finish(&p);
}

/* Over tcp registration does nothing and STORE stays inline. */
static void test_tcp_mem_register_noop(void **state)
{
	static uint8_t buf[8192];
	struct cn_client *c;
	struct cn_key k;
	struct peer p;

	make_key(&k, 0);
	peer_start(&p, script_inline_store, false, 0);
	c = connect_peer(&p);
	assert_string_equal(cn_client_transport(c), "tcp");
	assert_int_equal(cn_client_mem_register(c, buf, sizeof(buf)), 0);
	assert_int_equal(cn_client_mem_register(c, buf, sizeof(buf)), 0); /* no table: no -EEXIST */
	assert_int_equal(cn_client_mem_register(c, NULL, 0), 0);
	memcpy(buf, small_chunk, 5);
	assert_int_equal(cn_client_store(c, &k, buf, 5), 0);
	assert_int_equal(cn_client_mem_unregister(c, buf), 0);
	assert_int_equal(cn_client_mem_unregister(c, buf + 1), 0); /* never registered: still 0 */
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
	peer_finish(&p);
	assert_int_equal(cn_client_mem_register(NULL, buf, 1), -EINVAL);
	assert_int_equal(cn_client_mem_unregister(NULL, buf), -EINVAL);
}

#ifdef HAVE_TRANSPORT_H

#define FAKE_MAX_MR 256

struct fake_mr {
	bool live;
	uintptr_t start;
	size_t len;
	uint32_t rkey;
};

/* The fake transport's registration table, shared by the client and the peer. */
struct fake_rdma {
	pthread_mutex_t lock;
	struct fake_mr mr[FAKE_MAX_MR];
	unsigned live, regs, deregs, bad_deregs;
	int live_at_close; /* registrations still live when the connection closed; -1 before */
	int fail_at;	   /* the fail_at-th mem_reg from now fails with -ENOMEM; 0 never */
};

/* The fake transport's connection: a TCP connection and the table. */
struct cn_tconn {
	void *tcp;
	struct fake_rdma *f;
};

static void fake_init(struct fake_rdma *f)
{
	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->lock, NULL);
	f->live_at_close = -1;
}

static int fake_sendv(struct cn_tconn *t, const struct iovec *iov, int iovcnt, unsigned flags)
{
	return cn_tcp_ops.sendv(t->tcp, iov, iovcnt, flags);
}

static int fake_recv(struct cn_tconn *t, void *buf, size_t len)
{
	return cn_tcp_ops.recv(t->tcp, buf, len);
}

static void fake_close(struct cn_tconn **pt)
{
	struct cn_tconn *t = *pt, *tcp;

	if (t == NULL)
		return;
	pthread_mutex_lock(&t->f->lock);
	t->f->live_at_close = (int)t->f->live;
	pthread_mutex_unlock(&t->f->lock);
	tcp = t->tcp;
	cn_tcp_ops.close(&tcp);
	free(t);
	*pt = NULL;
}

static int fake_mem_reg(struct cn_tconn *t, void *addr, size_t len, void **handle, uint32_t *rkey)
{
	struct fake_rdma *f = t->f;
	int rc = -ENOSPC;

	pthread_mutex_lock(&f->lock);
	if (f->fail_at > 0 && --f->fail_at == 0) {
		pthread_mutex_unlock(&f->lock);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < FAKE_MAX_MR; i++) {
		if (f->mr[i].live)
			continue;
		f->regs++;
		f->mr[i] = (struct fake_mr){true, (uintptr_t)addr, len, 0xab000000u | f->regs};
		f->live++;
		*handle = &f->mr[i];
		*rkey = f->mr[i].rkey;
		rc = 0;
		break;
	}
	pthread_mutex_unlock(&f->lock);
	return rc;
}

static void fake_mem_dereg(struct cn_tconn *t, void *handle)
{
	struct fake_rdma *f = t->f;
	struct fake_mr *mr = handle;

	if (mr == NULL)
		return;
	pthread_mutex_lock(&f->lock);
	if (mr < f->mr || mr >= f->mr + FAKE_MAX_MR || !mr->live) {
		f->bad_deregs++;
	} else {
		mr->live = false;
		f->live--;
		f->deregs++;
	}
	pthread_mutex_unlock(&f->lock);
}

static const struct cn_transport_ops fake_rdma_ops = {
	.name = "fake-rdma",
	.sendv = fake_sendv,
	.recv = fake_recv,
	.close = fake_close,
	.mem_reg = fake_mem_reg,
	.mem_dereg = fake_mem_dereg,
};

static unsigned fake_live(struct fake_rdma *f)
{
	unsigned n;

	pthread_mutex_lock(&f->lock);
	n = f->live;
	pthread_mutex_unlock(&f->lock);
	return n;
}

/* Does @rkey name a live registration that covers [addr, addr + len)? */
static bool fake_covers(struct fake_rdma *f, uint32_t rkey, uint64_t addr, uint32_t len)
{
	bool ok = false;

	pthread_mutex_lock(&f->lock);
	for (unsigned i = 0; i < FAKE_MAX_MR && !ok; i++) {
		const struct fake_mr *m = &f->mr[i];

		ok = m->live && m->rkey == rkey && addr >= m->start &&
		     addr + len <= m->start + m->len;
	}
	pthread_mutex_unlock(&f->lock);
	return ok;
}

/* Connect over TCP and make a client of it with the fake RDMA transport. */
static struct cn_client *connect_fake(struct peer *p, struct fake_rdma *f)
{
	struct cn_connect_cfg cfg = {.addr = p->addr, .timeout_ms = 3000};
	struct cn_client_opts o = {.timeout_ms = 3000};
	struct cn_tconn *t = calloc(1, sizeof(*t)), *tcp = NULL;
	struct cn_client *c = NULL;

	assert_non_null(t);
	assert_int_equal(cn_tcp_ops.connect(&cfg, &tcp), 0);
	t->tcp = tcp;
	t->f = f;
	if (cn_client_open(&fake_rdma_ops, t, &o, &c) != 0)
		fail_msg("open: %s", cn_client_errmsg(c));
	assert_string_equal(cn_client_transport(c), "fake-rdma");
	return c;
}

struct rdma_desc {
	uint8_t key[CN_KEY_LEN];
	uint32_t len; /* STORE: len; RETRIEVE: cap */
	uint32_t rkey;
	uint64_t addr;
};

/*
 * Read a CN_F_RDMA request of @n keys (make_key(0 .. n-1)) and decode its
 * descriptors by hand: u32 n, u32 0, n x {key[32], u32 len, u32 rkey, u64 addr},
 * and nothing after them.
 */
static int peer_expect_rdma(struct peer *p, uint8_t op, uint32_t n, uint64_t *id,
			    struct rdma_desc *d)
{
	uint8_t m[8 + 48 * 8];
	uint32_t plen;

	if (peer_expect_hdr_flags(p, op, CN_F_RDMA, id, &plen) < 0)
		return -1;
	PCHECK(p, n <= 8 && plen == 8 + 48 * n);
	PCHECK(p, peer_read(p, m, plen) == 0);
	PCHECK(p, m[0] == n && m[1] == 0 && m[2] == 0 && m[3] == 0);
	PCHECK(p, !memcmp(m + 4, "\0\0\0\0", 4));
	if (check_keys(p, m + 8, n, 48) < 0)
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *e = m + 8 + 48 * i;

		memcpy(d[i].key, e, CN_KEY_LEN);
		d[i].len = (uint32_t)e[32] | (uint32_t)e[33] << 8 | (uint32_t)e[34] << 16 |
			   (uint32_t)e[35] << 24;
		d[i].rkey = (uint32_t)e[36] | (uint32_t)e[37] << 8 | (uint32_t)e[38] << 16 |
			    (uint32_t)e[39] << 24;
		d[i].addr = 0;
		for (int b = 7; b >= 0; b--)
			d[i].addr = d[i].addr << 8 | e[40 + b];
	}
	return 0;
}

static uint8_t rdma_stored[3][3000]; /* what the peer "read" from the client */

static int script_rdma_store_retrieve(struct peer *p)
{
	struct rdma_desc d[8];
	uint8_t rep[64], want[3000];
	uint64_t id;
	uint32_t plen;

	/* STORE: k0, k1 inside the registered region, k2 in a loose buffer */
	if (peer_expect_rdma(p, CN_OP_STORE, 3, &id, d) < 0)
		return -1;
	PCHECK(p, d[0].len == 100 && d[1].len == 3000 && d[2].len == 500);
	PCHECK(p, d[0].rkey == d[1].rkey);   /* the region's */
	PCHECK(p, d[2].rkey != d[0].rkey);   /* registered for this request */
	PCHECK(p, d[1].addr == d[0].addr + 1000);
	for (int i = 0; i < 3; i++) {
		PCHECK(p, fake_covers(p->rdma, d[i].rkey, d[i].addr, d[i].len));
		memcpy(rdma_stored[i], (const void *)(uintptr_t)d[i].addr, d[i].len);
		fill_pattern(want, d[i].len, (unsigned)i + 1);
		PCHECK(p, !memcmp(rdma_stored[i], want, d[i].len));
	}
	memset(rep, 0, sizeof(rep));
	cn_put_le32(rep, 3);
	cn_put_le32(rep + 8, CN_OK);
	cn_put_le32(rep + 12, CN_OK);
	cn_put_le32(rep + 16, CN_E_EXIST);
	if (peer_reply(p, CN_OP_STORE, CN_F_RESPONSE, id, CN_OK, rep, 20) < 0)
		return -1;

	/*
	 * RETRIEVE of 5: k0 -> region (hit), k1 -> loose buffer (hit), k2 -> cap
	 * 100 for 500 bytes (too big, nothing written), k3 missing, k4 missing
	 * with cap 0 (no memory named).
	 */
	if (peer_expect_rdma(p, CN_OP_RETRIEVE, 5, &id, d) < 0)
		return -1;
	PCHECK(p, d[0].len == 4096 && d[1].len == 3000 && d[2].len == 100 && d[3].len == 50);
	PCHECK(p, d[4].len == 0 && d[4].rkey == 0 && d[4].addr == 0);
	PCHECK(p, d[0].rkey == d[2].rkey && d[0].rkey == d[3].rkey && d[1].rkey != d[0].rkey);
	for (int i = 0; i < 4; i++)
		PCHECK(p, fake_covers(p->rdma, d[i].rkey, d[i].addr, d[i].len));
	memcpy((void *)(uintptr_t)d[0].addr, rdma_stored[0], 100);
	memcpy((void *)(uintptr_t)d[1].addr, rdma_stored[1], 3000);
	memset(rep, 0, sizeof(rep));
	cn_put_le32(rep, 5);
	cn_put_le32(rep + 8, CN_OK);
	cn_put_le32(rep + 12, 100);
	cn_put_le32(rep + 16, CN_OK);
	cn_put_le32(rep + 20, 3000);
	cn_put_le32(rep + 24, CN_E_TOOBIG);
	cn_put_le32(rep + 28, 500);
	cn_put_le32(rep + 32, CN_E_NOENT);
	cn_put_le32(rep + 40, CN_E_NOENT);
	if (peer_reply(p, CN_OP_RETRIEVE, CN_F_RESPONSE, id, CN_OK, rep, 8 + 5 * 8) < 0)
		return -1;

	/* everything else is the plain protocol */
	if (peer_expect_hdr(p, CN_OP_LOOKUP, &id, &plen) < 0)
		return -1;
	PCHECK(p, plen == 8 + 32 && peer_read(p, rep, plen) == 0);
	memset(rep, 0, sizeof(rep));
	cn_put_le32(rep, 1);
	cn_put_le32(rep + 4, 1);
	rep[8] = CN_TIER_L1;
	if (peer_reply(p, CN_OP_LOOKUP, CN_F_RESPONSE, id, CN_OK, rep, 9) < 0)
		return -1;
	return script_ping_echo(p);
}

static void test_rdma_store_retrieve(void **state)
{
	static uint8_t region[16384], loose[500], loose2[3000];
	struct cn_key keys[5];
	struct cn_buf sb[3] = {{region, 100, 100}, {region + 1000, 3000, 3000}, {loose, 500, 500}};
	struct cn_buf rb[5] = {{region + 8192, 77, 4096}, {loose2, 77, 3000},
			       {region + 12288, 77, 100}, {region + 13000, 77, 50}, {NULL, 77, 0}};
	int32_t st[5] = {-1, -1, -1, -1, -1};
	struct cn_req r = {.op = CN_OP_STORE, .nkeys = 3, .keys = keys, .bufs = sb, .status = st};
	uint8_t want[3000], tiers[1];
	uint32_t prefix = 0;
	struct fake_rdma f;
	struct cn_client *c;
	struct peer p;

	for (int i = 0; i < 5; i++)
		make_key(&keys[i], (uint8_t)i);
	fill_pattern(region, 100, 1);
	fill_pattern(region + 1000, 3000, 2);
	fill_pattern(loose, sizeof(loose), 3);
	fake_init(&f);
	peer_start_rdma(&p, script_rdma_store_retrieve, false, 0, &f);
	c = connect_fake(&p, &f);
	assert_int_equal(cn_client_mem_register(c, region, sizeof(region)), 0);
	assert_int_equal(fake_live(&f), 1);

	assert_int_equal(cn_client_exec(c, &r), 0); /* CN_E_EXIST is a success, as inline */
	assert_int_equal(st[0], CN_OK);
	assert_int_equal(st[1], CN_OK);
	assert_int_equal(st[2], CN_E_EXIST);
	/* the loose buffer was registered for the request and released after it */
	assert_int_equal(f.regs, 2);
	assert_int_equal(fake_live(&f), 1);

	r = (struct cn_req){.op = CN_OP_RETRIEVE, .nkeys = 5, .keys = keys, .bufs = rb,
			    .status = st};
	assert_int_equal(cn_client_exec(c, &r), -ENOBUFS); /* key 2 first failed */
	assert_int_equal(st[0], CN_OK);
	assert_int_equal(st[1], CN_OK);
	assert_int_equal(st[2], CN_E_TOOBIG);
	assert_int_equal(st[3], CN_E_NOENT);
	assert_int_equal(st[4], CN_E_NOENT);
	assert_int_equal(rb[0].len, 100);
	assert_int_equal(rb[1].len, 3000);
	assert_int_equal(rb[2].len, 500); /* its size, as the inline path reports it */
	assert_int_equal(rb[3].len, 0);
	assert_int_equal(rb[4].len, 0);
	fill_pattern(want, 100, 1);
	assert_memory_equal(region + 8192, want, 100);
	fill_pattern(want, 3000, 2);
	assert_memory_equal(loose2, want, 3000);
	assert_string_equal(cn_client_errmsg(c), "retrieve: key 2 of 5: chunk of 500 bytes "
						 "does not fit the buffer (cap 100)");
	assert_int_equal(fake_live(&f), 1);

	assert_int_equal(cn_client_lookup(c, keys, 1, &prefix, tiers), 0);
	assert_int_equal(prefix, 1);
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
	peer_finish(&p);
	/* close deregistered the region, before the connection went */
	assert_int_equal(f.live, 0);
	assert_int_equal(f.live_at_close, 0);
	assert_int_equal(f.bad_deregs, 0);
	assert_int_equal(f.regs, f.deregs);
	pthread_mutex_destroy(&f.lock);
}

static int script_rdma_regions(struct peer *p)
{
	struct rdma_desc d[2];
	uint8_t rep[16] = {0};
	uint64_t id;

	/* the STORE that kept the region busy */
	if (peer_expect_rdma(p, CN_OP_STORE, 1, &id, d) < 0)
		return -1;
	PCHECK(p, d[0].len == 64 && fake_covers(p->rdma, d[0].rkey, d[0].addr, 64));
	cn_put_le32(rep, 1);
	if (peer_reply(p, CN_OP_STORE, CN_F_RESPONSE, id, CN_OK, rep, 12) < 0)
		return -1;
	/* the stores whose registration failed never arrive: the ping is next */
	return script_ping_echo(p);
}

static void test_rdma_regions(void **state)
{
	static uint8_t a[8192], many[64][64], loose[2][64];
	struct cn_buf b = {a, 64, 64}, lb[2] = {{loose[0], 64, 64}, {loose[1], 64, 64}};
	struct cn_req r = {.op = CN_OP_STORE, .nkeys = 1, .bufs = &b}, *done;
	struct cn_key keys[2];
	struct fake_rdma f;
	struct cn_client *c;
	struct peer p;

	make_key(&keys[0], 0);
	make_key(&keys[1], 1);
	r.keys = keys;
	fake_init(&f);
	peer_start_rdma(&p, script_rdma_regions, false, 0, &f);
	c = connect_fake(&p, &f);

	assert_int_equal(cn_client_mem_register(c, NULL, 10), -EINVAL);
	assert_int_equal(cn_client_mem_register(c, a, 0), -EINVAL);
	assert_int_equal(cn_client_mem_register(c, a, 4096), 0);
	assert_int_equal(cn_client_mem_register(c, a + 100, 10), -EEXIST);
	assert_int_equal(cn_client_mem_register(c, a, 4096), -EEXIST);
	assert_non_null(strstr(cn_client_errmsg(c), "overlaps"));
	assert_int_equal(cn_client_mem_register(c, a + 4096, 4096), 0); /* adjacent is fine */
	assert_int_equal(cn_client_mem_register(c, a + 4000, 200), -EEXIST); /* straddles both */
	assert_int_equal(cn_client_mem_unregister(c, a + 1), -ENOENT);
	assert_non_null(strstr(cn_client_errmsg(c), "no region"));
	assert_int_equal(cn_client_mem_unregister(c, a + 4096), 0);
	assert_int_equal(cn_client_mem_unregister(c, a + 4096), -ENOENT);

	/* the table holds CN_CLIENT_MAX_REGIONS */
	for (int i = 0; i < CN_CLIENT_MAX_REGIONS - 1; i++)
		assert_int_equal(cn_client_mem_register(c, many[i], 64), 0);
	assert_int_equal(cn_client_mem_register(c, many[63], 64), -ENOSPC);
	assert_non_null(strstr(cn_client_errmsg(c), "regions registered already"));
	for (int i = 0; i < CN_CLIENT_MAX_REGIONS - 1; i++)
		assert_int_equal(cn_client_mem_unregister(c, many[i]), 0);
	assert_int_equal(fake_live(&f), 1);

	/* a region an outstanding request names cannot go */
	assert_int_equal(cn_client_submit(c, &r), 0);
	assert_int_equal(cn_client_mem_unregister(c, a), -EBUSY);
	assert_non_null(strstr(cn_client_errmsg(c), "outstanding"));
	assert_int_equal(cn_client_wait(c, &done), 0);
	assert_int_equal(done->result, 0);
	assert_int_equal(cn_client_mem_unregister(c, a), 0);
	assert_int_equal(fake_live(&f), 0);

	/* registration failures: nothing is sent, nothing stays registered */
	f.fail_at = 1;
	assert_int_equal(cn_client_mem_register(c, a, 64), -ENOMEM);
	assert_non_null(strstr(cn_client_errmsg(c), "ulimit -l"));
	f.fail_at = 1;
	assert_int_equal(cn_client_store(c, &keys[0], loose[0], 64), -ENOMEM);
	assert_non_null(strstr(cn_client_errmsg(c), "ulimit -l"));
	f.fail_at = 2; /* the second key's registration fails: the first's is undone */
	r = (struct cn_req){.op = CN_OP_STORE, .nkeys = 2, .keys = keys, .bufs = lb};
	assert_int_equal(cn_client_submit(c, &r), -ENOMEM);
	assert_int_equal(r.result, -ENOMEM);
	assert_non_null(strstr(cn_client_errmsg(c), "key 1"));
	assert_int_equal(cn_client_outstanding(c), 0);
	assert_int_equal(fake_live(&f), 0);
	assert_int_equal(f.regs, f.deregs);
	assert_int_equal(cn_client_ping(c), 0);

	cn_client_close(&c);
	peer_finish(&p);
	assert_int_equal(f.bad_deregs, 0);
	pthread_mutex_destroy(&f.lock);
}

/* The node hangs up with a request in flight. */
static int script_rdma_hangup(struct peer *p)
{
	struct rdma_desc d[2];
	uint64_t id;

	if (peer_expect_rdma(p, CN_OP_RETRIEVE, 2, &id, d) < 0)
		return -1;
	close(p->fd);
	p->fd = -1;
	return 0;
}

static void test_rdma_connection_loss(void **state)
{
	static uint8_t reg[4096], loose[4096];
	struct cn_buf b[2] = {{reg, 0, sizeof(reg)}, {loose, 0, sizeof(loose)}};
	struct cn_req r, *done;
	struct cn_key keys[2];
	struct fake_rdma f;
	struct cn_client *c;
	struct peer p;

	make_key(&keys[0], 0);
	make_key(&keys[1], 1);
	fake_init(&f);
	peer_start_rdma(&p, script_rdma_hangup, false, 0, &f);
	c = connect_fake(&p, &f);
	assert_int_equal(cn_client_mem_register(c, reg, sizeof(reg)), 0);
	r = (struct cn_req){.op = CN_OP_RETRIEVE, .nkeys = 2, .keys = keys, .bufs = b};
	assert_int_equal(cn_client_submit(c, &r), 0);
	assert_int_equal(fake_live(&f), 2); /* the region and the loose buffer */
	assert_int_equal(cn_client_wait(c, &done), -ECONNRESET);
	assert_int_equal(r.result, -ECONNRESET);
	/* everything went with the connection, before it was closed */
	assert_int_equal(fake_live(&f), 0);
	assert_int_equal(f.live_at_close, 0);
	/* the region's entry is still there to unregister; new ones need a connection */
	assert_int_equal(cn_client_mem_unregister(c, reg), 0);
	assert_int_equal(cn_client_mem_unregister(c, reg), -ENOENT);
	assert_int_equal(cn_client_mem_register(c, reg, sizeof(reg)), -ENOTCONN);
	peer_finish(&p);
	cn_client_close(&c);
	assert_int_equal(f.bad_deregs, 0);
	assert_int_equal(f.regs, f.deregs);
	pthread_mutex_destroy(&f.lock);
}

#else /* !HAVE_TRANSPORT_H */

static void skip_no_transport_h(void)
{
	print_message("skipped: test_client is built without transport/cn_transport.h "
		      "(add transport_dep to its dependencies) so the fake RDMA transport "
		      "cannot be made\n");
	skip();
}

static void test_rdma_store_retrieve(void **state)
{
	skip_no_transport_h();
}

static void test_rdma_regions(void **state)
{
	skip_no_transport_h();
}

static void test_rdma_connection_loss(void **state)
{
	skip_no_transport_h();
}

#endif /* HAVE_TRANSPORT_H */

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_key_parse_format),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_hello_timeout),
		cmocka_unit_test(test_hello_node_info),
		cmocka_unit_test(test_hello_version_refused),
		cmocka_unit_test(test_submit_validation),
		cmocka_unit_test(test_store_delete_lookup_status),
		cmocka_unit_test(test_retrieve),
		cmocka_unit_test(test_pipeline),
		cmocka_unit_test(test_request_error),
		cmocka_unit_test(test_error_frame),
		cmocka_unit_test(test_close_flag),
		cmocka_unit_test(test_bad_reply),
		cmocka_unit_test(test_hangup),
		cmocka_unit_test(test_flow_control),
		cmocka_unit_test(test_transport_choice),
		cmocka_unit_test(test_tcp_mem_register_noop),
		cmocka_unit_test(test_rdma_store_retrieve),
		cmocka_unit_test(test_rdma_regions),
		cmocka_unit_test(test_rdma_connection_loss),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
