/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L2 tier between three real nodes on loopback, with a static --peer
 * list (the same list on every node, naming all three):
 *   - a chunk stored through A is retrieved byte-exact through C, and each
 *     node's per-peer counters moved by exactly what placement predicts
 *     (write-through copies from A to the owner, fetches by C from it);
 *   - LOOKUP through C reports a prefix that spans L1 and L2, with the tier
 *     of each key, and asks each owner peer once;
 *   - B is killed (SIGKILL): retrieves of B's keys through A and C are
 *     misses (-ENOENT), answered well under --l2-timeout, not errors; B is
 *     marked down, its keys are then skipped without asking, and keys owned
 *     by A or C are still served.
 * Placement is predicted with cn_l2_rendezvous(), the function the nodes use.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include <cachenode/client.h>
#include "cn_l2.h"
#include "daemon.h"

#define LEN	   (256u << 10)
#define PER_OWNER  4
#define TIMEOUT_MS 1500

enum { A, B, C, N };

struct fx {
	struct cn_daemon d[N];
	char ids[N][64];
	const char *idp[N];
	char addr[N][64];
	char http[N][64];
	unsigned seq;
};

static struct fx F;

static int setup(void **state)
{
	char peers[512];
	char timeout[16];

	snprintf(timeout, sizeof(timeout), "%u", TIMEOUT_MS);
	for (int i = 0; i < N; i++) {
		snprintf(F.ids[i], sizeof(F.ids[i]), "l2t-%d-%c", (int)getpid(), 'a' + i);
		snprintf(F.addr[i], sizeof(F.addr[i]), "127.0.0.1:%u", cn_free_port());
		snprintf(F.http[i], sizeof(F.http[i]), "127.0.0.1:%u", cn_free_port());
		F.idp[i] = F.ids[i];
	}
	snprintf(peers, sizeof(peers), "%s@%s,%s@%s,%s@%s", F.ids[A], F.addr[A], F.ids[B],
		 F.addr[B], F.ids[C], F.addr[C]);
	for (int i = 0; i < N; i++) {
		const char *args[] = {"--listen", F.addr[i], "--node-id", F.ids[i], "--peer", peers,
				      "--l2-timeout", timeout, "--l1-size", "64M", "--max-chunk",
				      "1M", "--http", F.http[i], NULL};
		if (cn_daemon_start(&F.d[i], args) != 0)
			return -1;
	}
	*state = &F;
	return 0;
}

/* The live nodes must stop cleanly (exit 0; under ASan a leak or error makes that fail). */
static int teardown(void **state)
{
	int bad = 0;

	for (int i = 0; i < N; i++) {
		if (F.d[i].pid <= 0)
			continue;
		kill(F.d[i].pid, SIGCONT); /* in case a test stopped it and failed */
		if (cn_daemon_stop(&F.d[i], SIGTERM, 10000) != 0) {
			fprintf(stderr, "node %c did not stop cleanly\n", 'A' + i);
			bad = -1;
		}
	}
	return bad;
}

static struct cn_client *conn(int node)
{
	struct cn_client_opts o = {.timeout_ms = 10000};
	struct cn_client *c = NULL;

	assert_int_equal(cn_client_connect(F.d[node].addr, &o, &c), 0);
	return c;
}

static uint64_t st(int node, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static uint64_t st(int node, const char *fmt, ...)
{
	char path[256];
	uint64_t v = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	if (cn_status_u64(F.d[node].addr, path, &v) != 0)
		fail_msg("node %c: no %s in the status tree", 'A' + node, path);
	return v;
}

/* The number at the printf-style @fmt path of a status tree; fails the test if there is none. */
static uint64_t jnum(json_t *root, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static uint64_t jnum(json_t *root, const char *fmt, ...)
{
	char path[256];
	json_t *v;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	v = cn_json_at(root, path);
	if (!json_is_integer(v))
		fail_msg("no number at %s in the status tree", path);
	return (uint64_t)json_integer_value(v);
}

/* Index of node @other in @node's peer table: the --peer list without @node itself. */
static int pidx(int node, int other)
{
	return other - (other > node);
}

static uint64_t peer(int node, int other, const char *counter)
{
	return st(node, "components.l2.peers.%d.counters.%s", pidx(node, other), counter);
}

/* Wait until @node's L2 threads handed back every job (write-through copies done). */
static void settle(int node)
{
	for (int i = 0; i < 500; i++) {
		if (st(node, "components.l2.counters.jobs_done") ==
		    st(node, "components.l2.counters.jobs_submitted"))
			return;
		usleep(10000);
	}
	fail_msg("node %c: L2 jobs still out after 5 s", 'A' + node);
}

/* A fresh key owned by @owner (placement over the three ids). */
static struct cn_key key_of(int owner)
{
	for (;;) {
		struct cn_key k = cn_test_key("l2-%d-%u", (int)getpid(), F.seq++);

		if ((int)cn_l2_rendezvous(&k, F.idp, N) == owner)
			return k;
	}
}

static void fill(uint8_t *buf, const struct cn_key *k)
{
	for (unsigned i = 0; i < LEN; i++)
		buf[i] = (uint8_t)(k->b[i % CN_KEY_LEN] + i / 7);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Stored through A, retrieved byte-exact through C; counters moved as placement says. */
static void store_a_retrieve_c(void **state)
{
	struct cn_key keys[N][PER_OWNER];
	uint8_t *buf = malloc(LEN), *got = malloc(LEN);
	struct cn_client *ca = conn(A), *cc = conn(C);
	uint64_t put_b0 = peer(A, B, "put_reqs"), put_c0 = peer(A, C, "put_reqs");
	uint64_t putb_b0 = peer(A, B, "put_bytes");
	uint64_t fa0 = peer(C, A, "fetch_hits"), fb0 = peer(C, B, "fetch_hits");
	uint64_t fab0 = peer(C, A, "fetch_bytes"), fbr0 = peer(C, B, "fetch_reqs");
	uint64_t l2h0 = st(C, "components.engine.requests.retrieve_l2_hits");
	uint64_t fills0 = st(C, "components.l2.counters.fills");
	uint64_t hits0 = st(C, "components.engine.requests.retrieve_hits");

	for (int o = 0; o < N; o++)
		for (int i = 0; i < PER_OWNER; i++) {
			keys[o][i] = key_of(o);
			fill(buf, &keys[o][i]);
			assert_int_equal(cn_client_store(ca, &keys[o][i], buf, LEN), 0);
		}
	settle(A);
	/* A copied each chunk to its owner: B's to B, C's to C, none of its own */
	assert_int_equal(peer(A, B, "put_reqs") - put_b0, PER_OWNER);
	assert_int_equal(peer(A, B, "put_bytes") - putb_b0, PER_OWNER * LEN);
	assert_int_equal(peer(A, C, "put_reqs") - put_c0, PER_OWNER);

	for (int o = 0; o < N; o++)
		for (int i = 0; i < PER_OWNER; i++) {
			uint32_t len = 0;

			memset(got, 0, LEN);
			fill(buf, &keys[o][i]);
			assert_int_equal(cn_client_retrieve(cc, &keys[o][i], got, LEN, &len), 0);
			assert_int_equal(len, LEN);
			assert_memory_equal(got, buf, LEN);
		}
	/* C's own keys were L1 hits (written through); A's and B's came from them */
	assert_int_equal(peer(C, A, "fetch_hits") - fa0, PER_OWNER);
	assert_int_equal(peer(C, A, "fetch_bytes") - fab0, PER_OWNER * LEN);
	assert_int_equal(peer(C, B, "fetch_hits") - fb0, PER_OWNER);
	assert_int_equal(peer(C, B, "fetch_reqs") - fbr0, PER_OWNER);
	assert_int_equal(st(C, "components.engine.requests.retrieve_l2_hits") - l2h0, 2 * PER_OWNER);
	assert_int_equal(st(C, "components.l2.counters.fills") - fills0, 2 * PER_OWNER);
	assert_int_equal(st(C, "components.engine.requests.retrieve_hits") - hits0, N * PER_OWNER);

	/* fetched once, they are C's L1 hits now: no second fetch */
	fa0 = peer(C, A, "fetch_reqs");
	{
		uint32_t len = 0;
		assert_int_equal(cn_client_retrieve(cc, &keys[A][0], got, LEN, &len), 0);
	}
	assert_int_equal(peer(C, A, "fetch_reqs"), fa0);
	cn_client_close(&ca);
	cn_client_close(&cc);
	free(buf);
	free(got);
}

/* LOOKUP through C: [A's, B's, C's, A's, C's never stored] -> prefix 4, tiers L2 L2 L1 L2 -. */
static void lookup_across_tiers(void **state)
{
	struct cn_key k[5] = {key_of(A), key_of(B), key_of(C), key_of(A), key_of(C)};
	uint8_t tiers[5], *buf = malloc(LEN);
	uint32_t prefix = 99;
	struct cn_client *ca = conn(A), *cc = conn(C);
	uint64_t la0 = peer(C, A, "lookup_reqs"), lak0 = peer(C, A, "lookup_keys");
	uint64_t lah0 = peer(C, A, "lookup_hits"), lb0 = peer(C, B, "lookup_reqs");
	uint64_t lbh0 = peer(C, B, "lookup_hits");
	uint64_t l2k0 = st(C, "components.engine.requests.lookup_l2_keys");

	for (int i = 0; i < 4; i++) {
		fill(buf, &k[i]);
		assert_int_equal(cn_client_store(ca, &k[i], buf, LEN), 0);
	}
	settle(A);
	assert_int_equal(cn_client_lookup(cc, k, 5, &prefix, tiers), 0);
	assert_int_equal(prefix, 4);
	assert_int_equal(tiers[0], CN_TIER_L2);
	assert_int_equal(tiers[1], CN_TIER_L2);
	assert_int_equal(tiers[2], CN_TIER_L1);
	assert_int_equal(tiers[3], CN_TIER_L2);
	assert_int_equal(tiers[4], CN_TIER_NONE);
	/* one LOOKUP per owner peer: A with its two keys, B with its one; C's key not asked */
	assert_int_equal(peer(C, A, "lookup_reqs") - la0, 1);
	assert_int_equal(peer(C, A, "lookup_keys") - lak0, 2);
	assert_int_equal(peer(C, A, "lookup_hits") - lah0, 2);
	assert_int_equal(peer(C, B, "lookup_reqs") - lb0, 1);
	assert_int_equal(peer(C, B, "lookup_hits") - lbh0, 1);
	assert_int_equal(st(C, "components.engine.requests.lookup_l2_keys") - l2k0, 3);

	/*
	 * The prefix stops at the first key nobody has; C knows that of its own
	 * key without asking, so B (owner of the third key) is not asked at all.
	 */
	{
		struct cn_key k2[3] = {k[0], k[4], k[1]};

		lb0 = peer(C, B, "lookup_reqs");
		assert_int_equal(cn_client_lookup(cc, k2, 3, &prefix, tiers), 0);
		assert_int_equal(prefix, 1);
		assert_int_equal(tiers[0], CN_TIER_L2);
		assert_int_equal(tiers[1], CN_TIER_NONE);
		assert_int_equal(tiers[2], CN_TIER_NONE);
		assert_int_equal(peer(C, B, "lookup_reqs"), lb0);
	}
	cn_client_close(&ca);
	cn_client_close(&cc);
	free(buf);
}

/* PREFETCH through C brings A's chunk into C's L1; the RETRIEVE after it fetches nothing. */
static void prefetch_then_retrieve(void **state)
{
	struct cn_key k[2] = {key_of(A), key_of(C)}; /* the second is never stored */
	uint8_t *buf = malloc(LEN), *got = malloc(LEN);
	struct cn_client *ca = conn(A), *cc = conn(C);
	int32_t status[2] = {-1, -1};
	uint8_t tiers[1];
	uint32_t prefix = 0, len = 0;
	uint64_t fh0 = peer(C, A, "fetch_hits"), pk0 = st(C, "components.engine.requests.prefetch_l2_keys");
	uint64_t fr;

	fill(buf, &k[0]);
	assert_int_equal(cn_client_store(ca, &k[0], buf, LEN), 0);
	settle(A);
	assert_int_equal(cn_client_prefetch(cc, k, 2, status), -ENOENT);
	assert_int_equal(status[0], CN_OK);
	assert_int_equal(status[1], CN_E_NOENT);
	assert_int_equal(peer(C, A, "fetch_hits") - fh0, 1);
	assert_int_equal(st(C, "components.engine.requests.prefetch_l2_keys") - pk0, 1);
	assert_int_equal(cn_client_lookup(cc, k, 1, &prefix, tiers), 0);
	assert_int_equal(tiers[0], CN_TIER_L1);
	fr = peer(C, A, "fetch_reqs");
	assert_int_equal(cn_client_retrieve(cc, &k[0], got, LEN, &len), 0);
	assert_int_equal(len, LEN);
	assert_memory_equal(got, buf, LEN);
	assert_int_equal(peer(C, A, "fetch_reqs"), fr);
	cn_client_close(&ca);
	cn_client_close(&cc);
	free(buf);
	free(got);
}

/*
 * The same per-peer figure through every exporter of C: the status tree,
 * /metrics (cachenode_l2_<name>_total{peer}) and /cachenode/l2,<i> over
 * DPDK's telemetry socket (the unmodified dpdk-telemetry.py).
 */
static void exporters_agree(void **state)
{
	char cmd[512], out[65536], *line;
	uint64_t v = peer(C, A, "fetch_hits"), m = 0;
	json_t *root, *d;
	bool found = false;

	assert_true(v > 0);
	snprintf(cmd, sizeof(cmd), "curl -sf http://%s/metrics", F.http[C]);
	assert_int_equal(cn_run(cmd, out, sizeof(out)), 0);
	for (line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		char want[256];

		snprintf(want, sizeof(want), "cachenode_l2_fetch_hits_total{node=\"%s\",peer=\"%s\"} ",
			 F.ids[C], F.ids[A]);
		if (strncmp(line, want, strlen(want)) == 0) {
			m = strtoull(line + strlen(want), NULL, 10);
			found = true;
		}
	}
	assert_true(found);
	assert_int_equal(m, v);

	snprintf(cmd, sizeof(cmd), "echo '/cachenode/l2,%d' | dpdk-telemetry.py -f cachenode-%s 2>&1",
		 pidx(C, A), F.ids[C]);
	if (cn_run(cmd, out, sizeof(out)) != 0)
		fail_msg("dpdk-telemetry.py: %s", out);
	root = json_loads(out, 0, NULL);
	assert_non_null(root);
	d = json_object_get(root, "/cachenode/l2");
	assert_non_null(d);
	assert_string_equal(json_string_value(json_object_get(d, "id")), F.ids[A]);
	assert_int_equal(json_integer_value(json_object_get(d, "fetch_hits")), v);
	assert_int_equal(json_integer_value(json_object_get(d, "up")), 1);
	json_decref(root);
}

/*
 * A --peer entry whose address answers with another node id (a wrong list)
 * is refused at connect: the peer is marked down with that reason, its keys
 * are misses, and nothing is asked of the node that is there.
 */
static void wrong_peer_id_is_refused(void **state)
{
	struct cn_daemon d;
	char list[256], did[64], daddr[64], *json = NULL;
	const char *ids[2];
	struct cn_client *cd;
	struct cn_key k;
	uint8_t *got = malloc(LEN);
	uint32_t len = 0;
	uint64_t c_reqs0 = st(C, "components.engine.requests.retrieve_reqs"), v;
	json_t *root;

	snprintf(did, sizeof(did), "l2t-%d-d", (int)getpid());
	snprintf(daddr, sizeof(daddr), "127.0.0.1:%u", cn_free_port());
	snprintf(list, sizeof(list), "%s@%s,impostor@%s", did, daddr, F.addr[C]);
	{
		const char *args[] = {"--listen", daddr, "--node-id", did, "--peer", list,
				      "--l1-size", "16M", "--max-chunk", "1M", NULL};
		assert_int_equal(cn_daemon_start(&d, args), 0);
	}
	ids[0] = did;
	ids[1] = "impostor";
	do
		k = cn_test_key("l2-%d-%u", (int)getpid(), F.seq++);
	while (cn_l2_rendezvous(&k, ids, 2) != 1);
	{
		struct cn_client_opts o = {.timeout_ms = 10000};
		assert_int_equal(cn_client_connect(d.addr, &o, &cd), 0);
	}
	assert_int_equal(cn_client_retrieve(cd, &k, got, LEN, &len), -ENOENT);
	assert_int_equal(cn_status_u64(d.addr, "components.l2.peers.0.counters.connects", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(cn_status_u64(d.addr, "components.l2.peers.0.counters.marked_down", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(cn_status_u64(d.addr, "components.l2.peers_down", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(cn_client_status(cd, &json), 0);
	root = json_loads(json, 0, NULL);
	assert_non_null(root);
	{
		json_t *p0 = json_array_get(
			json_object_get(json_object_get(json_object_get(root, "components"), "l2"),
					"peers"),
			0);
		const char *why = json_string_value(json_object_get(p0, "last_error"));

		assert_non_null(why);
		assert_non_null(strstr(why, "answers as node"));
		assert_non_null(strstr(why, F.ids[C]));
	}
	json_decref(root);
	free(json);
	/* C was connected to (HELLO) but asked nothing */
	assert_int_equal(st(C, "components.engine.requests.retrieve_reqs"), c_reqs0);
	cn_client_close(&cd);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 10000), 0);
	free(got);
}

/* SIGKILL B: its keys become prompt misses through A and C; the others are still served. */
static void kill_b(void **state)
{
	struct cn_key kb[2] = {key_of(B), key_of(B)}, ka = key_of(A);
	uint8_t *buf = malloc(LEN), *got = malloc(LEN);
	struct cn_client *cb = conn(B), *ca, *cc;
	uint64_t err_a0, err_c0, skip0, conn0;
	uint32_t len = 0;
	double t0, dt;

	for (int i = 0; i < 2; i++) {
		fill(buf, &kb[i]);
		assert_int_equal(cn_client_store(cb, &kb[i], buf, LEN), 0);
	}
	fill(buf, &ka);
	assert_int_equal(cn_client_store(cb, &ka, buf, LEN), 0); /* written through to A */
	settle(B);
	cn_client_close(&cb);
	assert_int_equal(cn_daemon_stop(&F.d[B], SIGKILL, 5000), 128 + SIGKILL);

	ca = conn(A);
	cc = conn(C);
	err_a0 = st(A, "components.engine.requests.req_errors");
	err_c0 = st(C, "components.engine.requests.req_errors");

	t0 = now_ms();
	assert_int_equal(cn_client_retrieve(ca, &kb[0], got, LEN, &len), -ENOENT);
	dt = now_ms() - t0;
	printf("retrieve of a dead peer's key through A: miss in %.1f ms\n", dt);
	assert_true(dt < TIMEOUT_MS);

	/*
	 * While B is down its keys are skipped: no connection attempt, counted.
	 * Right away: the first back-off is 1 s, after which a key is a probe.
	 */
	skip0 = peer(A, B, "down_skips");
	conn0 = peer(A, B, "connects");
	assert_int_equal(cn_client_retrieve(ca, &kb[1], got, LEN, &len), -ENOENT);
	assert_int_equal(peer(A, B, "down_skips") - skip0, 1);
	assert_int_equal(peer(A, B, "connects"), conn0);

	t0 = now_ms();
	assert_int_equal(cn_client_retrieve(cc, &kb[1], got, LEN, &len), -ENOENT);
	dt = now_ms() - t0;
	printf("retrieve of a dead peer's key through C: miss in %.1f ms\n", dt);
	assert_true(dt < TIMEOUT_MS);

	/* both marked B down */
	assert_int_equal(st(A, "components.l2.peers_down"), 1);
	assert_int_equal(st(C, "components.l2.peers_down"), 1);
	assert_true(peer(A, B, "marked_down") >= 1);
	assert_true(peer(C, B, "marked_down") >= 1);
	assert_true(peer(A, B, "errors") + peer(A, B, "timeouts") >= 1);

	/* A's key, stored through B before it died, is served through C from A */
	memset(got, 0, LEN);
	assert_int_equal(cn_client_retrieve(cc, &ka, got, LEN, &len), 0);
	assert_int_equal(len, LEN);
	assert_memory_equal(got, buf, LEN);

	/* misses, not errors; the nodes keep answering */
	assert_int_equal(st(A, "components.engine.requests.req_errors"), err_a0);
	assert_int_equal(st(C, "components.engine.requests.req_errors"), err_c0);
	assert_int_equal(cn_client_ping(ca), 0);
	assert_int_equal(cn_client_ping(cc), 0);
	cn_client_close(&ca);
	cn_client_close(&cc);
	free(buf);
	free(got);
}

/*
 * A peer that stops answering (SIGSTOP: its kernel still accepts and
 * buffers) costs one --l2-timeout, then is down: a timeout, not an error.
 * With B dead too, every peer of C is down: l2 (and so the node) reports
 * unhealthy, and C still serves. After SIGCONT and the back-off, the next
 * request is the probe and succeeds.
 */
static void stopped_peer_times_out_then_recovers(void **state)
{
	struct cn_key k = key_of(A);
	uint8_t *buf = malloc(LEN), *got = malloc(LEN);
	struct cn_client *ca = conn(A), *cc = conn(C);
	uint64_t to0 = peer(C, A, "timeouts"), md0 = peer(C, B, "marked_down");
	struct cn_key kb = key_of(B);
	uint32_t len = 0;
	double t0, dt;
	char *json = NULL;
	json_t *root;

	fill(buf, &k);
	assert_int_equal(cn_client_store(ca, &k, buf, LEN), 0);
	cn_client_close(&ca);
	assert_int_equal(cn_pid_stop(F.d[A].pid, 5000), 0);

	t0 = now_ms();
	assert_int_equal(cn_client_retrieve(cc, &k, got, LEN, &len), -ENOENT);
	dt = now_ms() - t0;
	printf("retrieve of a stopped peer's key: miss in %.1f ms (--l2-timeout %u)\n", dt,
	       TIMEOUT_MS);
	assert_true(dt >= TIMEOUT_MS * 0.9);
	assert_true(dt < TIMEOUT_MS + 1000);
	/*
	 * B's first back-off (1 s) is over by now: the next B key is the probe,
	 * refused again. Then one status snapshot, while C's 1 s back-off for A
	 * still runs: every peer of C down, l2 and so the node unhealthy.
	 */
	assert_int_equal(cn_client_retrieve(cc, &kb, got, LEN, &len), -ENOENT);
	assert_int_equal(cn_client_status(cc, &json), 0);
	root = json_loads(json, 0, NULL);
	assert_non_null(root);
	assert_int_equal(jnum(root, "components.l2.peers.%d.counters.timeouts", pidx(C, A)) - to0, 1);
	assert_int_equal(jnum(root, "components.l2.peers.%d.counters.marked_down", pidx(C, B)) - md0,
			 1);
	assert_int_equal(jnum(root, "components.l2.peers_down"), 2);
	assert_false(json_is_true(cn_json_at(root, "components.l2.is_healthy")));
	assert_non_null(strstr(json_string_value(json_object_get(root, "reason")),
			       "l2: all 2 peers are down"));
	json_decref(root);
	free(json);
	assert_int_equal(cn_client_ping(cc), 0);

	assert_int_equal(kill(F.d[A].pid, SIGCONT), 0);
	usleep(1200 * 1000); /* the first back-off step is 1 s */
	memset(got, 0, LEN);
	assert_int_equal(cn_client_retrieve(cc, &k, got, LEN, &len), 0);
	assert_memory_equal(got, buf, LEN);
	/* C's view of A is whole again (B's, down for 2 s now, may be over by this time) */
	assert_int_equal(st(C, "components.l2.peers.%d.fails", pidx(C, A)), 0);
	assert_int_equal(st(C, "components.l2.peers.%d.down_ms_left", pidx(C, A)), 0);
	cn_client_close(&cc);
	free(buf);
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(store_a_retrieve_c),
		cmocka_unit_test(lookup_across_tiers),
		cmocka_unit_test(prefetch_then_retrieve),
		cmocka_unit_test(exporters_agree),
		cmocka_unit_test(wrong_peer_id_is_refused),
		cmocka_unit_test(kill_b), /* B stays dead from here on */
		cmocka_unit_test(stopped_peer_times_out_then_recovers),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
