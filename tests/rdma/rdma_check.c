/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode-rdma-check: drives a real node over the verbs transport, for the
 * rdma suite (runs inside the soft-RoCE VMs of tests/rdma/vm.sh).
 *
 *   rdma-check roundtrip ADDR [--chunks N] [--seed S] [--batch B] [--depth D]
 *       store N chunks of random sizes (registered buffers, RDMA READ by the
 *       node), LOOKUP the whole sequence (prefix == N), RETRIEVE them all into
 *       fresh buffers (RDMA WRITE by the node) and compare every byte, DELETE
 *       every third key and check LOOKUP/RETRIEVE see exactly that.
 *   rdma-check verify ADDR [--chunks N] [--seed S] [--min-present K]
 *       RETRIEVE keys 0..N-1 of seed S: each must be absent or byte-exact;
 *       prints how many were present.
 *   rdma-check store-loop ADDR [--seed S] [--size BYTES]
 *       store big chunks forever (the suite kills it mid-transfer).
 *   rdma-check bad-rkey ADDR | bad-addr ADDR | bad-rkey-retrieve ADDR
 *       a STORE (or RETRIEVE) whose descriptor names a wrong rkey / an
 *       address outside the registered buffer: the connection must break
 *       with an error, the chunk must not exist afterwards, and a new
 *       connection must be served.
 *   rdma-check hold ADDR [--wait-ms T]
 *       connect, PING, then wait for the node to go away (the suite restarts
 *       it): the next request must fail with a connection error; reconnect
 *       (retrying up to T ms) and run a small round trip.
 *   rdma-check l2 STORE_ADDR RETRIEVE_ADDR --ids ID,ID[,...] --store-id ID
 *           --retrieve-id ID [--l2-write none|through] [--chunks N] [--seed S]
 *           [--wait-ms T]
 *       the L2 tier over verbs. Both nodes run with the same --peer list,
 *       whose ids --ids gives, and the storing node with --l2-write none:
 *       store N chunks through the node at STORE_ADDR (node --store-id),
 *       then RETRIEVE every one with CN_F_RDMA through the node at
 *       RETRIEVE_ADDR (node --retrieve-id; connecting retries up to T ms).
 *       The chunks the storing node owns (rendezvous over --ids, as the
 *       nodes place them) must come back byte-exact: the retrieving node
 *       fetched them from their owner. The ones the retrieving node owns
 *       must be misses (it owns them and was never given them). A second
 *       RETRIEVE must give the same (now from the retrieving node's L1).
 *       "l2_expected" in the last line is how many chunks the retrieving
 *       node must have fetched (its retrieve_l2_hits and l2 fills).
 *       With --l2-write through the storing node runs so instead (the
 *       default): it copies the chunks the retrieving node owns to it, over
 *       the peer transport and in the background. Those must come back
 *       byte-exact too (retried until they have all arrived, up to T ms);
 *       "through_chunks" and "through_bytes" are what the storing node must
 *       have written through (its put counters).
 *
 * Chunk i of seed S: key = SHA-256("rdma-check-S-i"), size and bytes from a
 * splitmix64 stream of (S, i), so any process can recompute and check it.
 * Exit 0 on success, 1 on a failed check, 2 on bad usage. The last line of
 * output is a JSON object with the figures.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cachenode/client.h>

#include "cn_l2.h"
#include "cn_transport.h"

#define MAX_SMALL (16u << 10)
#define BIG_SIZE  (1u << 20)
#define BIG_EVERY 500u

struct opts {
	const char *mode, *addr, *addr2;
	const char *ids, *store_id, *retrieve_id;
	bool write_through; /* l2: the storing node runs --l2-write through */
	unsigned chunks, batch, depth, size;
	uint64_t seed;
	int wait_ms;
	unsigned min_present;
};

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void chunk_key(uint64_t seed, unsigned i, struct cn_key *k)
{
	char text[64];

	snprintf(text, sizeof(text), "rdma-check-%" PRIu64 "-%u", seed, i);
	cn_key_parse(text, k);
}

static uint32_t chunk_size(uint64_t seed, unsigned i)
{
	uint64_t x = seed * 1000003u + i;

	if (i % BIG_EVERY == BIG_EVERY - 1)
		return BIG_SIZE - (uint32_t)(splitmix(&x) % 4096);
	return 1 + (uint32_t)(splitmix(&x) % MAX_SMALL);
}

static void chunk_fill(uint64_t seed, unsigned i, uint8_t *p, uint32_t len)
{
	uint64_t x = seed ^ ((uint64_t)i << 32) ^ 0x5bd1e995u;

	for (uint32_t o = 0; o < len; o += 8) {
		uint64_t v = splitmix(&x);
		memcpy(p + o, &v, len - o < 8 ? len - o : 8);
	}
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int connect_verbs(const char *addr, struct cn_client **c)
{
	struct cn_client_opts o = {.transport = "verbs", .timeout_ms = 20000,
				   .name = "rdma-check"};
	int rc = cn_client_connect(addr, &o, c);

	if (rc != 0) {
		fprintf(stderr, "connect %s: %s\n", addr, cn_client_errmsg(*c));
		cn_client_close(c);
		return rc;
	}
	if (strcmp(cn_client_transport(*c), "verbs") != 0) {
		fprintf(stderr, "connected over %s, not verbs\n", cn_client_transport(*c));
		cn_client_close(c);
		return -EPROTO;
	}
	return 0;
}

/* connect_verbs(), retrying for up to @wait_ms while the node is not there yet. */
static int connect_verbs_wait(const char *addr, int wait_ms, struct cn_client **c)
{
	uint64_t t0 = now_us();

	for (;;) {
		struct cn_client_opts o = {.transport = "verbs", .timeout_ms = 20000,
					   .name = "rdma-check"};
		int rc = cn_client_connect(addr, &o, c);

		if (rc == 0)
			break;
		if (now_us() - t0 > (uint64_t)wait_ms * 1000u) {
			fprintf(stderr, "connect %s: %s\n", addr, cn_client_errmsg(*c));
			cn_client_close(c);
			return rc;
		}
		cn_client_close(c);
		usleep(200000);
	}
	if (strcmp(cn_client_transport(*c), "verbs") != 0) {
		fprintf(stderr, "connected over %s, not verbs\n", cn_client_transport(*c));
		cn_client_close(c);
		return -EPROTO;
	}
	return 0;
}

/* Run @nreq requests, at most @depth outstanding; every request must succeed. */
static int run_pipelined(struct cn_client *c, struct cn_req *reqs, unsigned nreq, unsigned depth)
{
	unsigned sent = 0, done = 0;

	while (done < nreq) {
		struct cn_req *r;
		int rc;

		while (sent < nreq && sent - done < depth) {
			rc = cn_client_submit(c, &reqs[sent]);
			if (rc != 0) {
				fprintf(stderr, "submit: %s\n", cn_client_errmsg(c));
				return rc;
			}
			sent++;
		}
		rc = cn_client_wait(c, &r);
		if (rc != 0) {
			fprintf(stderr, "wait: %s\n", cn_client_errmsg(c));
			return rc;
		}
		done++;
	}
	return 0;
}

static int roundtrip(const struct opts *o)
{
	unsigned n = o->chunks, b = o->batch, nreq = (n + b - 1) / b, bad = 0, present = 0;
	struct cn_key *keys = calloc(n, sizeof(*keys));
	uint32_t *sizes = calloc(n, sizeof(*sizes));
	uint64_t *off = calloc(n, sizeof(*off));
	struct cn_buf *bufs = calloc(n, sizeof(*bufs));
	int32_t *st = calloc(n, sizeof(*st));
	struct cn_req *reqs = calloc(nreq, sizeof(*reqs));
	uint8_t *src = NULL, *dst = NULL, *tiers = NULL;
	uint64_t total = 0, t0, t_store, t_retr;
	struct cn_client *c = NULL;
	uint32_t prefix = 0;
	int rc;

	if (!keys || !sizes || !off || !bufs || !st || !reqs)
		return 1;
	for (unsigned i = 0; i < n; i++) {
		chunk_key(o->seed, i, &keys[i]);
		sizes[i] = chunk_size(o->seed, i);
		off[i] = total;
		total += (sizes[i] + 63u) & ~63u;
	}
	src = malloc(total);
	dst = malloc(total);
	tiers = malloc(CN_PROTO_MAX_KEYS);
	if (!src || !dst || !tiers)
		return 1;
	for (unsigned i = 0; i < n; i++)
		chunk_fill(o->seed, i, src + off[i], sizes[i]);
	memset(dst, 0xa5, total);
	if (connect_verbs(o->addr, &c) != 0)
		return 1;
	if (cn_client_mem_register(c, src, total) != 0 || cn_client_mem_register(c, dst, total) != 0) {
		fprintf(stderr, "register: %s\n", cn_client_errmsg(c));
		return 1;
	}

	/* STORE */
	for (unsigned r = 0; r < nreq; r++) {
		unsigned first = r * b, k = n - first < b ? n - first : b;

		for (unsigned i = first; i < first + k; i++)
			bufs[i] = (struct cn_buf){src + off[i], sizes[i], sizes[i]};
		reqs[r] = (struct cn_req){.op = CN_OP_STORE, .nkeys = k, .keys = keys + first,
					  .bufs = bufs + first, .status = st + first};
	}
	t0 = now_us();
	rc = run_pipelined(c, reqs, nreq, o->depth);
	t_store = now_us() - t0;
	for (unsigned r = 0; rc == 0 && r < nreq; r++)
		if (reqs[r].result != 0) {
			fprintf(stderr, "store request %u: %d (%s)\n", r, reqs[r].result,
				strerror(-reqs[r].result));
			rc = 1;
		}
	if (rc != 0)
		return 1;
	printf("stored %u chunks, %" PRIu64 " bytes in %.2f s\n", n, total, t_store / 1e6);

	/* LOOKUP of the whole sequence, max_keys at a time */
	for (unsigned first = 0; first < n; first += CN_PROTO_MAX_KEYS) {
		unsigned k = n - first < CN_PROTO_MAX_KEYS ? n - first : CN_PROTO_MAX_KEYS;

		rc = cn_client_lookup(c, keys + first, k, &prefix, tiers);
		if (rc != 0 || prefix != k || tiers[k - 1] != CN_TIER_L1) {
			fprintf(stderr, "lookup [%u, %u): rc %d prefix %u\n", first, first + k, rc,
				prefix);
			return 1;
		}
	}
	printf("lookup: all %u present\n", n);

	/* RETRIEVE into other buffers and compare */
	for (unsigned r = 0; r < nreq; r++) {
		unsigned first = r * b, k = n - first < b ? n - first : b;

		for (unsigned i = first; i < first + k; i++)
			bufs[i] = (struct cn_buf){dst + off[i], 0, sizes[i]};
		reqs[r] = (struct cn_req){.op = CN_OP_RETRIEVE, .nkeys = k, .keys = keys + first,
					  .bufs = bufs + first, .status = st + first};
	}
	t0 = now_us();
	rc = run_pipelined(c, reqs, nreq, o->depth);
	t_retr = now_us() - t0;
	if (rc != 0)
		return 1;
	for (unsigned i = 0; i < n; i++) {
		if (st[i] != CN_OK || bufs[i].len != sizes[i] ||
		    memcmp(src + off[i], dst + off[i], sizes[i]) != 0) {
			if (bad++ < 5)
				fprintf(stderr, "chunk %u: status %d len %u/%u or bytes differ\n", i,
					st[i], bufs[i].len, sizes[i]);
		}
	}
	if (bad != 0) {
		fprintf(stderr, "%u of %u chunks differ\n", bad, n);
		return 1;
	}
	printf("retrieved %u chunks byte-exact in %.2f s\n", n, t_retr / 1e6);

	/* DELETE every third key; then exactly those are gone */
	for (unsigned i = 0; i < n; i += 3) {
		rc = cn_client_delete(c, &keys[i]);
		if (rc != 0) {
			fprintf(stderr, "delete %u: %s\n", i, cn_client_errmsg(c));
			return 1;
		}
	}
	rc = cn_client_lookup(c, keys, n < CN_PROTO_MAX_KEYS ? n : CN_PROTO_MAX_KEYS, &prefix, NULL);
	if (rc != 0 || prefix != 0) {
		fprintf(stderr, "lookup after delete: rc %d prefix %u (key 0 was deleted)\n", rc,
			prefix);
		return 1;
	}
	for (unsigned i = 0; i < n && i < 300; i++) {
		uint32_t len = 0;

		rc = cn_client_retrieve(c, &keys[i], dst + off[i], sizes[i], &len);
		if (i % 3 == 0 ? rc != -ENOENT : (rc != 0 || len != sizes[i])) {
			fprintf(stderr, "retrieve %u after deletes: rc %d len %u\n", i, rc, len);
			return 1;
		}
		present += rc == 0;
	}
	printf("deletes seen: %u of the first 300 keys remain\n", present);
	cn_client_close(&c);
	printf("{\"chunks\": %u, \"bytes\": %" PRIu64 ", \"store_s\": %.3f, \"retrieve_s\": %.3f, "
	       "\"store_mbs\": %.1f, \"retrieve_mbs\": %.1f, \"ok\": true}\n",
	       n, total, t_store / 1e6, t_retr / 1e6, total / (double)t_store,
	       total / (double)t_retr);
	free(src);
	free(dst);
	free(tiers);
	free(keys);
	free(sizes);
	free(off);
	free(bufs);
	free(st);
	free(reqs);
	return 0;
}

static int verify(const struct opts *o)
{
	struct cn_client *c = NULL;
	uint32_t cap = o->size > BIG_SIZE ? o->size : BIG_SIZE;
	uint8_t *buf = malloc(cap), *want = malloc(cap);
	unsigned present = 0, absent = 0;

	if (buf == NULL || want == NULL || connect_verbs(o->addr, &c) != 0)
		return 1;
	cn_client_mem_register(c, buf, cap);
	for (unsigned i = 0; i < o->chunks; i++) {
		struct cn_key k;
		uint32_t len = 0, size = o->size ? o->size : chunk_size(o->seed, i);
		int rc;

		chunk_key(o->seed, i, &k);
		rc = cn_client_retrieve(c, &k, buf, cap, &len);
		if (rc == -ENOENT) {
			absent++;
			continue;
		}
		chunk_fill(o->seed, i, want, size);
		if (rc != 0 || len != size || memcmp(buf, want, size) != 0) {
			fprintf(stderr, "chunk %u: rc %d len %u (want %u): %s\n", i, rc, len, size,
				rc == 0 ? "bytes differ" : cn_client_errmsg(c));
			return 1;
		}
		present++;
	}
	cn_client_close(&c);
	printf("{\"present\": %u, \"absent\": %u, \"ok\": %s}\n", present, absent,
	       present >= o->min_present ? "true" : "false");
	free(buf);
	free(want);
	return present >= o->min_present ? 0 : 1;
}

static int store_loop(const struct opts *o)
{
	struct cn_client *c = NULL;
	uint32_t size = o->size ? o->size : 4u << 20;
	uint8_t *buf = malloc(size);

	if (buf == NULL || connect_verbs(o->addr, &c) != 0)
		return 1;
	cn_client_mem_register(c, buf, size);
	printf("storing\n");
	fflush(stdout);
	for (unsigned i = 0;; i++) {
		struct cn_key k;
		int rc;

		chunk_key(o->seed, i, &k);
		chunk_fill(o->seed, i, buf, size);
		rc = cn_client_store(c, &k, buf, size);
		if (rc != 0 && rc != -ENOSPC) {
			fprintf(stderr, "store %u: %s\n", i, cn_client_errmsg(c));
			return 1;
		}
	}
}

/*
 * Send one hand-made CN_F_RDMA request over the verbs transport with a
 * descriptor that names memory the node may not touch. The node's RDMA fails,
 * so the connection must break (the node cannot even reply on a broken QP).
 */
static int bad_request(const struct opts *o, bool retrieve, bool bad_addr)
{
	const struct cn_transport_ops *ops = cn_transport_find("verbs");
	struct cn_connect_cfg cc = {.addr = o->addr, .timeout_ms = 20000};
	struct cn_tconn *t = NULL;
	const uint32_t len = 256u << 10;
	uint8_t *buf = malloc(len), frame[CN_PROTO_HDR_LEN + 8 + CN_PROTO_RDMA_DESC];
	uint8_t *d = frame + CN_PROTO_HDR_LEN + 8, rep[CN_PROTO_HDR_LEN];
	struct cn_proto_hdr h;
	struct iovec iov = {frame, sizeof(frame)};
	struct cn_client *c = NULL;
	struct cn_key key;
	void *handle = NULL;
	uint32_t rkey = 0, got = 0;
	uint64_t addr;
	int rc;

	if (ops == NULL || buf == NULL)
		return 1;
	chunk_key(o->seed, 424242, &key);
	rc = ops->connect(&cc, &t);
	if (rc != 0) {
		fprintf(stderr, "connect: %s\n", strerror(-rc));
		return 1;
	}
	memset(buf, 0x5a, len);
	rc = ops->mem_reg(t, buf, len, &handle, &rkey);
	if (rc != 0) {
		fprintf(stderr, "mem_reg: %s\n", strerror(-rc));
		return 1;
	}
	addr = (uintptr_t)buf;
	if (bad_addr)
		addr += len / 2; /* the second half of the range lies outside the region */
	else
		rkey ^= 0x5a5a00u;
	cn_proto_hdr_init(&h, retrieve ? CN_OP_RETRIEVE : CN_OP_STORE, CN_F_RDMA, 7,
			  8 + CN_PROTO_RDMA_DESC, 0);
	cn_proto_hdr_encode(&h, frame);
	cn_put_le32(frame + CN_PROTO_HDR_LEN, 1);
	cn_put_le32(frame + CN_PROTO_HDR_LEN + 4, 0);
	memcpy(d, key.b, CN_KEY_LEN);
	cn_put_le32(d + 32, len);
	cn_put_le32(d + 36, rkey);
	cn_put_le64(d + 40, addr);
	if (retrieve) {
		/* the key must exist for the node to write: store it properly first */
		struct cn_client *s = NULL;

		if (connect_verbs(o->addr, &s) != 0 || cn_client_store(s, &key, buf, len) != 0) {
			fprintf(stderr, "setup store failed\n");
			return 1;
		}
		cn_client_close(&s);
	}
	rc = ops->sendv(t, &iov, 1, 0);
	if (rc == 0)
		rc = ops->recv(t, rep, sizeof(rep));
	if (rc == 0) {
		fprintf(stderr, "the node answered a request naming memory it may not touch\n");
		return 1;
	}
	printf("connection broke as it must: %s\n", strerror(-rc));
	ops->mem_dereg(t, handle);
	ops->close(&t);

	/* a new connection is served; the chunk of a bad STORE does not exist */
	if (connect_verbs(o->addr, &c) != 0 || cn_client_ping(c) != 0) {
		fprintf(stderr, "the node does not serve after the bad request\n");
		return 1;
	}
	rc = cn_client_retrieve(c, &key, buf, len, &got);
	if (!retrieve && rc != -ENOENT) {
		fprintf(stderr, "the chunk of the failed STORE is visible (rc %d)\n", rc);
		return 1;
	}
	if (retrieve && (rc != 0 || got != len)) {
		fprintf(stderr, "the stored chunk is damaged after the failed RETRIEVE (rc %d)\n", rc);
		return 1;
	}
	if (retrieve)
		cn_client_delete(c, &key);
	cn_client_close(&c);
	free(buf);
	printf("{\"case\": \"%s\", \"ok\": true}\n",
	       retrieve ? "bad-rkey-retrieve" : bad_addr ? "bad-addr" : "bad-rkey");
	return 0;
}

static int hold(const struct opts *o)
{
	struct cn_client *c = NULL;
	struct opts small = *o;
	uint64_t t0;
	int rc;

	if (connect_verbs(o->addr, &c) != 0 || cn_client_ping(c) != 0)
		return 1;
	printf("connected\n");
	fflush(stdout);
	/* the suite restarts the node now; ping until the loss shows */
	t0 = now_us();
	while ((rc = cn_client_ping(c)) == 0 && now_us() - t0 < (uint64_t)o->wait_ms * 1000u)
		usleep(100000);
	if (rc == 0) {
		fprintf(stderr, "the node never went away\n");
		return 1;
	}
	printf("lost the node: %s\n", cn_client_errmsg(c));
	if (cn_client_ping(c) != -ENOTCONN) {
		fprintf(stderr, "a closed client must answer -ENOTCONN\n");
		return 1;
	}
	cn_client_close(&c);
	for (;;) {
		struct cn_client_opts opt = {.transport = "verbs", .timeout_ms = 5000};

		rc = cn_client_connect(o->addr, &opt, &c);
		if (rc == 0)
			break;
		cn_client_close(&c);
		if (now_us() - t0 > (uint64_t)o->wait_ms * 1000u) {
			fprintf(stderr, "could not reconnect: %s\n", strerror(-rc));
			return 1;
		}
		usleep(200000);
	}
	cn_client_close(&c);
	printf("reconnected\n");
	small.chunks = 50;
	return roundtrip(&small);
}


/*
 * Batches of @b keys of [0, n): STORE (@store) from or RETRIEVE into @buf at
 * @off, pipelined @depth deep. Statuses into @st, lengths into @bufs.
 */
static int batch_all(struct cn_client *c, bool store, const struct opts *o, unsigned n,
		     struct cn_key *keys, const uint32_t *sizes, const uint64_t *off, uint8_t *buf,
		     struct cn_buf *bufs, int32_t *st)
{
	unsigned b = o->batch, nreq = (n + b - 1) / b;
	struct cn_req *reqs = calloc(nreq, sizeof(*reqs));
	int rc;

	if (reqs == NULL)
		return -ENOMEM;
	for (unsigned r = 0; r < nreq; r++) {
		unsigned first = r * b, k = n - first < b ? n - first : b;

		for (unsigned i = first; i < first + k; i++)
			bufs[i] = (struct cn_buf){buf + off[i], store ? sizes[i] : 0, sizes[i]};
		reqs[r] = (struct cn_req){.op = store ? CN_OP_STORE : CN_OP_RETRIEVE, .nkeys = k,
					  .keys = keys + first, .bufs = bufs + first,
					  .status = st + first};
	}
	rc = run_pipelined(c, reqs, nreq, o->depth);
	for (unsigned r = 0; store && rc == 0 && r < nreq; r++)
		if (reqs[r].result != 0) {
			fprintf(stderr, "store request %u: %d (%s)\n", r, reqs[r].result,
				strerror(-reqs[r].result));
			rc = -EIO;
		}
	free(reqs);
	return rc;
}

static int l2_check(const struct opts *o)
{
	const char *ids[CN_L2_MAX_PEERS];
	char idbuf[CN_L2_MAX_PEERS * (CN_PROTO_MAX_NAME + 1)];
	unsigned n = o->chunks, nids = 0, sidx = CN_L2_MAX_PEERS, ridx = CN_L2_MAX_PEERS;
	unsigned expected = 0, misses = 0, others = 0, bad = 0, tries = 0;
	uint64_t through_bytes = 0;
	struct cn_key *keys = calloc(n, sizeof(*keys));
	uint32_t *sizes = calloc(n, sizeof(*sizes));
	uint64_t *off = calloc(n, sizeof(*off));
	unsigned *owner = calloc(n, sizeof(*owner));
	struct cn_buf *bufs = calloc(n, sizeof(*bufs));
	int32_t *st = calloc(n, sizeof(*st));
	uint8_t *src = NULL, *dst = NULL;
	uint64_t total = 0, t0, t_retr = 0;
	struct cn_client *c = NULL;

	if (o->ids == NULL || o->store_id == NULL || o->retrieve_id == NULL || o->addr2 == NULL ||
	    strlen(o->ids) >= sizeof(idbuf)) {
		fprintf(stderr, "l2: needs STORE_ADDR RETRIEVE_ADDR --ids --store-id --retrieve-id\n");
		return 2;
	}
	snprintf(idbuf, sizeof(idbuf), "%s", o->ids);
	for (char *save = NULL, *t = strtok_r(idbuf, ",", &save); t && nids < CN_L2_MAX_PEERS;
	     t = strtok_r(NULL, ",", &save)) {
		if (strcmp(t, o->store_id) == 0)
			sidx = nids;
		if (strcmp(t, o->retrieve_id) == 0)
			ridx = nids;
		ids[nids++] = t;
	}
	if (sidx == CN_L2_MAX_PEERS || ridx == CN_L2_MAX_PEERS || sidx == ridx) {
		fprintf(stderr, "l2: --store-id and --retrieve-id must be two of --ids\n");
		return 2;
	}
	if (!keys || !sizes || !off || !owner || !bufs || !st)
		return 1;
	for (unsigned i = 0; i < n; i++) {
		chunk_key(o->seed, i, &keys[i]);
		sizes[i] = chunk_size(o->seed, i);
		off[i] = total;
		total += (sizes[i] + 63u) & ~63u;
		owner[i] = cn_l2_rendezvous(&keys[i], ids, nids);
		expected += owner[i] == sidx;
		misses += owner[i] == ridx;
		others += owner[i] != sidx && owner[i] != ridx;
		if (owner[i] == ridx)
			through_bytes += sizes[i];
	}
	src = malloc(total);
	dst = malloc(total);
	if (!src || !dst)
		return 1;
	for (unsigned i = 0; i < n; i++)
		chunk_fill(o->seed, i, src + off[i], sizes[i]);

	/* STORE through the storing node (with --l2-write none there it keeps them) */
	if (connect_verbs_wait(o->addr, o->wait_ms, &c) != 0)
		return 1;
	if (cn_client_mem_register(c, src, total) != 0 ||
	    batch_all(c, true, o, n, keys, sizes, off, src, bufs, st) != 0) {
		fprintf(stderr, "store through %s: %s\n", o->addr, cn_client_errmsg(c));
		return 1;
	}
	cn_client_close(&c);
	printf("stored %u chunks (%" PRIu64 " bytes) through %s (%s); %u owned by it, %u by %s\n",
	       n, total, o->addr, o->store_id, expected, misses, o->retrieve_id);

	/* RETRIEVE with CN_F_RDMA through the other node, twice */
	if (connect_verbs_wait(o->addr2, o->wait_ms, &c) != 0)
		return 1;
	if (cn_client_mem_register(c, dst, total) != 0) {
		fprintf(stderr, "register: %s\n", cn_client_errmsg(c));
		return 1;
	}
	t0 = now_us();
	for (int pass = 0; pass < 2; pass++) {
		uint64_t t1 = now_us();
		unsigned late = 0; /* written-through chunks not there yet */

		memset(dst, 0xa5, total);
		tries++;
		if (batch_all(c, false, o, n, keys, sizes, off, dst, bufs, st) != 0) {
			fprintf(stderr, "retrieve through %s: %s\n", o->addr2, cn_client_errmsg(c));
			return 1;
		}
		if (pass == 0 && t_retr == 0)
			t_retr = now_us() - t1;
		for (unsigned i = 0; i < n; i++) {
			bool ok;

			if (owner[i] == sidx || (owner[i] == ridx && o->write_through))
				ok = st[i] == CN_OK && bufs[i].len == sizes[i] &&
				     memcmp(src + off[i], dst + off[i], sizes[i]) == 0;
			else if (owner[i] == ridx)
				ok = st[i] == CN_E_NOENT;
			else
				ok = true; /* a third member's: not this check's business */
			/* the copies are asynchronous: the first pass may run ahead of them */
			if (!ok && pass == 0 && o->write_through && owner[i] == ridx &&
			    st[i] == CN_E_NOENT && now_us() - t0 < (uint64_t)o->wait_ms * 1000) {
				late++;
				continue;
			}
			if (!ok && bad++ < 5)
				fprintf(stderr, "pass %d chunk %u (owner %s): status %d len %u/%u%s\n",
					pass, i, ids[owner[i]], st[i], bufs[i].len, sizes[i],
					st[i] == CN_OK ? " or bytes differ" : "");
		}
		if (bad != 0) {
			fprintf(stderr, "pass %d: %u of %u chunks wrong\n", pass, bad, n);
			return 1;
		}
		if (late != 0) {
			printf("retrieve through %s: %u written-through chunks not there yet\n",
			       o->addr2, late);
			usleep(200 * 1000);
			pass--; /* the first pass again */
			continue;
		}
		if (o->write_through)
			printf("retrieve pass %d through %s (%s): %u byte-exact from the owner, %u "
			       "written through to it\n",
			       pass + 1, o->addr2, o->retrieve_id, expected, misses);
		else
			printf("retrieve pass %d through %s (%s): %u byte-exact from the owner, %u "
			       "misses\n",
			       pass + 1, o->addr2, o->retrieve_id, expected, misses);
	}
	cn_client_close(&c);
	printf("{\"chunks\": %u, \"bytes\": %" PRIu64 ", \"l2_expected\": %u, \"misses\": %u, "
	       "\"through_chunks\": %u, \"through_bytes\": %" PRIu64 ", \"others\": %u, "
	       "\"retrieve_tries\": %u, \"retrieve_s\": %.3f, \"ok\": true}\n",
	       n, total, expected, o->write_through ? 0 : misses, o->write_through ? misses : 0,
	       o->write_through ? through_bytes : 0, others, tries, t_retr / 1e6);
	free(src);
	free(dst);
	free(keys);
	free(sizes);
	free(off);
	free(owner);
	free(bufs);
	free(st);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: cachenode-rdma-check roundtrip|verify|store-loop|bad-rkey|bad-addr|"
			"bad-rkey-retrieve|hold ADDR [--chunks N] [--seed S] [--batch B] [--depth D]"
			" [--size BYTES] [--wait-ms T] [--min-present K]\n"
			"       cachenode-rdma-check l2 STORE_ADDR RETRIEVE_ADDR --ids ID,ID[,...]"
			" --store-id ID --retrieve-id ID [--l2-write none|through] [--chunks N]"
			" [--seed S] [--wait-ms T]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct opts o = {.chunks = 10000, .batch = 32, .depth = 8, .seed = 1, .wait_ms = 60000};

	if (argc < 3)
		return usage();
	o.mode = argv[1];
	o.addr = argv[2];
	if (strcmp(o.mode, "l2") == 0) {
		if (argc < 4)
			return usage();
		o.addr2 = argv[3];
	}
	for (int i = o.addr2 ? 4 : 3; i < argc; i += 2) {
		unsigned long long v;

		if (i + 1 >= argc)
			return usage();
		v = strtoull(argv[i + 1], NULL, 0);
		if (strcmp(argv[i], "--ids") == 0)
			o.ids = argv[i + 1];
		else if (strcmp(argv[i], "--store-id") == 0)
			o.store_id = argv[i + 1];
		else if (strcmp(argv[i], "--retrieve-id") == 0)
			o.retrieve_id = argv[i + 1];
		else if (strcmp(argv[i], "--chunks") == 0)
			o.chunks = (unsigned)v;
		else if (strcmp(argv[i], "--seed") == 0)
			o.seed = v;
		else if (strcmp(argv[i], "--batch") == 0)
			o.batch = (unsigned)v;
		else if (strcmp(argv[i], "--depth") == 0)
			o.depth = (unsigned)v;
		else if (strcmp(argv[i], "--size") == 0)
			o.size = (unsigned)v;
		else if (strcmp(argv[i], "--wait-ms") == 0)
			o.wait_ms = (int)v;
		else if (strcmp(argv[i], "--min-present") == 0)
			o.min_present = (unsigned)v;
		else if (strcmp(argv[i], "--l2-write") == 0 &&
			 (strcmp(argv[i + 1], "through") == 0 || strcmp(argv[i + 1], "none") == 0))
			o.write_through = strcmp(argv[i + 1], "through") == 0;
		else
			return usage();
	}
	if (o.chunks == 0 || o.batch == 0 || o.batch > CN_PROTO_MAX_KEYS || o.depth == 0 ||
	    o.depth > CN_CLIENT_MAX_DEPTH)
		return usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(o.mode, "roundtrip") == 0)
		return roundtrip(&o);
	if (strcmp(o.mode, "verify") == 0)
		return verify(&o);
	if (strcmp(o.mode, "store-loop") == 0)
		return store_loop(&o);
	if (strcmp(o.mode, "bad-rkey") == 0)
		return bad_request(&o, false, false);
	if (strcmp(o.mode, "bad-addr") == 0)
		return bad_request(&o, false, true);
	if (strcmp(o.mode, "bad-rkey-retrieve") == 0)
		return bad_request(&o, true, false);
	if (strcmp(o.mode, "hold") == 0)
		return hold(&o);
	if (strcmp(o.mode, "l2") == 0)
		return l2_check(&o);
	return usage();
}
