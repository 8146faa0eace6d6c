/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The DPDK telemetry commands of the real daemon, read the way an operator
 * reads them: through the unmodified dpdk-telemetry.py (Debian's dpdk-dev)
 * and through cachenode-top. A known workload runs first; every counter it
 * touches must have moved by exactly its amount, every reply must be valid
 * JSON with DPDK-legal keys, paging must say where it stopped, and an
 * unknown op must come back as null.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include <cachenode/client.h>
#include "cn_gpu.h"
#include "cn_registry.h"
#include "cn_transport.h"
#include "daemon.h"

#define WORKERS 2
#define NCORES	(WORKERS + 1)
#define N	16 /* stores */
#define M	10 /* retrieves ... */
#define K	4  /* ... of which miss */
#define L	5  /* lookups of 3 keys: 2 present, then 1 absent */
#define CHUNK	4096

static struct cn_daemon d;
static char prefix[128];
static char top_bin[512];

/* ---- talking to the node through dpdk-telemetry.py ---- */

/* Every key of a reply is DPDK-legal: [A-Za-z0-9_/]+ (recursively). */
static void assert_keys_legal(json_t *v)
{
	static const char legal[] = "abcdefghijklmnopqrstuvwxyz"
				    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_/";
	const char *k;
	json_t *e;
	size_t i;

	if (json_is_object(v)) {
		json_object_foreach(v, k, e) {
			assert_true(k[0] != '\0');
			assert_int_equal(strspn(k, legal), strlen(k));
			assert_keys_legal(e);
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, e)
			assert_keys_legal(e);
	}
}

/*
 * Run `echo CMD | dpdk-telemetry.py -f PREFIX`, parse its one line of JSON
 * and return the reply's value (new reference; JSON null when the node
 * refused). Fails the test on anything that is not valid JSON.
 */
static json_t *tel(const char *cmd)
{
	char sh[512], out[65536], key[128];
	json_error_t err;
	json_t *root, *v;
	int rc;

	snprintf(sh, sizeof(sh), "echo '%s' | dpdk-telemetry.py -f %s 2>&1", cmd, prefix);
	rc = cn_run(sh, out, sizeof(out));
	if (rc != 0)
		fail_msg("%s: dpdk-telemetry.py exited %d: %s", cmd, rc, out);
	root = json_loads(out, 0, &err);
	if (root == NULL)
		fail_msg("%s: not JSON (%s): %.300s", cmd, err.text, out);
	snprintf(key, sizeof(key), "%.*s", (int)strcspn(cmd, ","), cmd);
	v = json_object_get(root, key);
	if (v == NULL)
		fail_msg("%s: no \"%s\" in the reply: %.300s", cmd, key, out);
	assert_keys_legal(v);
	json_incref(v);
	json_decref(root);
	return v;
}

static uint64_t u64(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v))
		fail_msg("no integer \"%s\"", key);
	return (uint64_t)json_integer_value(v);
}

static uint64_t tel_u64(const char *cmd, const char *key)
{
	json_t *v = tel(cmd);
	uint64_t x;

	assert_true(json_is_object(v));
	x = u64(v, key);
	json_decref(v);
	return x;
}

/* ---- fixture ---- */

static int group_setup(void **state)
{
	const char *args[] = {"--workers", "2", "--l1-size", "64M", "--max-chunk", "1M", NULL};
	const char *bin = getenv("CACHENODE_BIN"), *top = getenv("CACHENODE_TOP");

	if (system("command -v dpdk-telemetry.py >/dev/null 2>&1") != 0) {
		fprintf(stderr, "SKIP: dpdk-telemetry.py not in PATH (Debian package dpdk-dev)\n");
		exit(77);
	}
	if (top != NULL)
		snprintf(top_bin, sizeof(top_bin), "%s", top);
	else if (bin != NULL)
		snprintf(top_bin, sizeof(top_bin), "%.*s/../tools/cachenode-top",
			 (int)(strrchr(bin, '/') ? strrchr(bin, '/') - bin : 1), bin);
	if (cn_daemon_start(&d, args) < 0)
		return -1;
	snprintf(prefix, sizeof(prefix), "cachenode-%s", d.node_id);
	/* the commands are registered before the node serves; wait for telemetry anyway */
	for (int i = 0; i < 50; i++) {
		char sh[512], out[4096];

		snprintf(sh, sizeof(sh), "echo /cachenode/info | dpdk-telemetry.py -f %s 2>&1",
			 prefix);
		if (cn_run(sh, out, sizeof(out)) == 0 && strstr(out, "node_id") != NULL)
			return 0;
		usleep(100 * 1000);
	}
	fprintf(stderr, "no /cachenode/info on the telemetry socket of %s\n", prefix);
	return -1;
}

static int group_teardown(void **state)
{
	return cn_daemon_stop(&d, SIGTERM, 10000) == 0 ? 0 : -1;
}

/* ---- tests ---- */

static void every_command_answers(void **state)
{
	static const char *const cmds[] = {
		"/cachenode/info",	     "/cachenode/stats",	"/cachenode/stats,requests",
		"/cachenode/stats,l1",	     "/cachenode/stats,transport",
		"/cachenode/stats,telemetry", "/cachenode/cores",	"/cachenode/cores,0",
		"/cachenode/cores,1,2",	     "/cachenode/l1",		"/cachenode/transport",
		"/cachenode/latency",	     "/cachenode/latency,store", "/cachenode/status",
		"/cachenode/registry",	     "/cachenode/gpu",
	};
	static const char *const bad[] = {"/cachenode/stats,bogus", "/cachenode/cores,99",
					  "/cachenode/cores,x",	    "/cachenode/cores,0,0",
					  "/cachenode/info,1",	    "/cachenode/latency,nosuch",
					  "/cachenode/registry,1"};
	json_t *v, *list, *e;
	size_t i;

	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		v = tel(cmds[i]);
		if (!json_is_object(v))
			fail_msg("%s: null or not a dict", cmds[i]);
		json_decref(v);
	}
	/* DPDK's own listing and help know them */
	list = tel("/");
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char name[64];
		bool found = false;
		size_t j;

		snprintf(name, sizeof(name), "%.*s", (int)strcspn(cmds[i], ","), cmds[i]);
		json_array_foreach(list, j, e)
			found |= strcmp(json_string_value(e), name) == 0;
		if (!found)
			fail_msg("%s missing from /", name);
	}
	json_decref(list);
	v = tel("/help,/cachenode/cores");
	assert_true(json_is_string(json_object_get(v, "/cachenode/cores")));
	json_decref(v);

	/* info describes this node */
	v = tel("/cachenode/info");
	assert_string_equal(json_string_value(json_object_get(v, "node_id")), d.node_id);
	assert_string_equal(json_string_value(json_object_get(v, "listen")), d.addr);
	assert_string_equal(json_string_value(json_object_get(v, "file_prefix")), prefix);
	assert_int_equal(u64(v, "workers"), WORKERS);
	assert_int_equal(u64(v, "ncores"), NCORES);
	assert_int_equal(u64(v, "pid"), (uint64_t)d.pid);
	assert_int_equal(u64(json_object_get(v, "telemetry"), "enabled"), 1);
	assert_true(u64(json_object_get(v, "telemetry"), "ring_size") > 0);
	json_decref(v);

	/* stats: every section, and sections name the params */
	v = tel("/cachenode/stats");
	assert_true(json_is_array(json_object_get(v, "sections")));
	assert_int_equal(json_array_size(json_object_get(v, "sections")), 4);
	u64(v, "requests_store_ok");
	u64(v, "l1_hits");
	u64(v, "transport_bytes_rx");
	u64(v, "telemetry_drops");
	u64(v, "telemetry_drained");
	json_decref(v);
	v = tel("/cachenode/stats,l1");
	u64(v, "l1_misses");
	assert_null(json_object_get(v, "requests_store_ok"));
	json_decref(v);

	/* wrong params: null, never a guess */
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = tel(bad[i]);
		if (!json_is_null(v))
			fail_msg("%s: want null", bad[i]);
		json_decref(v);
	}
}

struct snap {
	json_t *stats;
	uint64_t lat[3]; /* store, retrieve, lookup */
};

static void snap_take(struct snap *s)
{
	s->stats = tel("/cachenode/stats");
	s->lat[0] = tel_u64("/cachenode/latency,store", "count");
	s->lat[1] = tel_u64("/cachenode/latency,retrieve", "count");
	s->lat[2] = tel_u64("/cachenode/latency,lookup", "count");
}

static uint64_t moved(const struct snap *a, const struct snap *b, const char *key)
{
	return u64(b->stats, key) - u64(a->stats, key);
}


/* What a known workload must have moved, exactly. */
struct want {
	const char *key;
	uint64_t v;
};

static const struct want wants[] = {
	{"requests_store_reqs", N},
	{"requests_store_keys", N},
	{"requests_store_ok", N},
	{"requests_store_bytes", (uint64_t)N * CHUNK},
	{"requests_store_failed", 0},
	{"requests_retrieve_reqs", M},
	{"requests_retrieve_keys", M},
	{"requests_retrieve_hits", M - K},
	{"requests_retrieve_bytes", (uint64_t)(M - K) * CHUNK},
	{"requests_lookup_reqs", L},
	{"requests_lookup_keys", 3 * L},
	{"requests_lookup_prefix_keys", 2 * L},
	{"requests_frames_rx", 1 + N + M + L}, /* + HELLO */
	{"requests_hello_reqs", 1},
	{"requests_frames_bad", 0},
	{"l1_stores", N},
	{"l1_store_bytes", (uint64_t)N * CHUNK},
	{"l1_retrieves", M - K},
	{"l1_hits", (M - K) + 2 * L},
	{"l1_misses", K + L},
	{"l1_evictions", 0},
	{"transport_conns_accepted", 1},
	{"telemetry_drops", 0},
};
#define NWANTS (sizeof(wants) / sizeof(wants[0]))

static bool all_reached(const struct snap *a, const struct snap *b)
{
	for (size_t i = 0; i < NWANTS; i++)
		if (moved(a, b, wants[i].key) < wants[i].v)
			return false;
	return b->lat[0] - a->lat[0] >= N && b->lat[1] - a->lat[1] >= M &&
	       b->lat[2] - a->lat[2] >= L;
}

static void workload_moves_counters_exactly(void **state)
{
	struct cn_client *c = NULL;
	struct snap before, after = {0};
	static uint8_t buf[CHUNK], out[CHUNK];
	uint32_t len, prefix_len;
	json_t *l1;

	snap_take(&before);
	l1 = tel("/cachenode/l1");
	assert_int_equal(u64(l1, "chunks"), 0);
	json_decref(l1);

	assert_int_equal(cn_client_connect(d.addr, NULL, &c), 0);
	for (unsigned i = 0; i < N; i++) {
		struct cn_key k = cn_test_key("teldpdk-s-%u", i);

		memset(buf, (int)i, sizeof(buf));
		assert_int_equal(cn_client_store(c, &k, buf, CHUNK), 0);
	}
	for (unsigned i = 0; i < M; i++) {
		struct cn_key k = i < M - K ? cn_test_key("teldpdk-s-%u", i) : cn_test_key("teldpdk-absent-%u", i);
		int r = cn_client_retrieve(c, &k, out, sizeof(out), &len);

		if (i < M - K) {
			assert_int_equal(r, 0);
			assert_int_equal(len, CHUNK);
			assert_int_equal(out[0], (uint8_t)i);
		} else {
			assert_int_equal(r, -ENOENT);
		}
	}
	for (unsigned i = 0; i < L; i++) {
		struct cn_key ks[3] = {cn_test_key("teldpdk-s-%u", 0), cn_test_key("teldpdk-s-%u", 1), cn_test_key("teldpdk-absent-%u", 100 + i)};

		assert_int_equal(cn_client_lookup(c, ks, 3, &prefix_len, NULL), 0);
		assert_int_equal(prefix_len, 2);
	}
	cn_client_close(&c);

	/* the drain is asynchronous: wait until everything arrived, then insist on exact */
	for (int i = 0; i < 30; i++) {
		json_decref(after.stats);
		snap_take(&after);
		if (all_reached(&before, &after))
			break;
		usleep(100 * 1000);
	}
	for (size_t i = 0; i < NWANTS; i++)
		if (moved(&before, &after, wants[i].key) != wants[i].v)
			fail_msg("%s moved by %llu, want %llu", wants[i].key,
				 (unsigned long long)moved(&before, &after, wants[i].key),
				 (unsigned long long)wants[i].v);
	assert_int_equal(after.lat[0] - before.lat[0], N);
	assert_int_equal(after.lat[1] - before.lat[1], M);
	assert_int_equal(after.lat[2] - before.lat[2], L);
	assert_true(moved(&before, &after, "transport_bytes_rx") >= (uint64_t)N * CHUNK);
	assert_true(moved(&before, &after, "transport_bytes_tx") >= (uint64_t)(M - K) * CHUNK);
	assert_true(moved(&before, &after, "telemetry_events") > 0);

	/* the L1 levels and the transport view agree */
	l1 = tel("/cachenode/l1");
	assert_int_equal(u64(l1, "chunks"), N);
	assert_int_equal(u64(l1, "reserved"), 0);
	assert_int_equal(u64(l1, "pinned"), 0);
	assert_int_equal(u64(l1, "payload"), (uint64_t)N * CHUNK);
	assert_int_equal(u64(l1, "hits"), u64(after.stats, "l1_hits"));
	assert_int_equal(u64(l1, "misses"), u64(after.stats, "l1_misses"));
	assert_true(u64(l1, "capacity") > 0);
	assert_string_equal(json_string_value(json_object_get(l1, "eviction")), "lru");
	json_decref(l1);
	l1 = tel("/cachenode/transport");
	assert_string_equal(json_string_value(json_object_get(l1, "name")), "tcp");
	assert_int_equal(u64(l1, "bytes_rx"), u64(after.stats, "transport_bytes_rx"));
	json_decref(l1);
	json_decref(before.stats);
	json_decref(after.stats);
}

static void latency_per_op(void **state)
{
	json_t *v = tel("/cachenode/latency,store"), *list;

	assert_string_equal(json_string_value(json_object_get(v, "op")), "store");
	assert_true(u64(v, "count") >= N);
	assert_true(u64(v, "min_ns") > 0);
	assert_true(u64(v, "min_ns") <= u64(v, "p50_ns"));
	assert_true(u64(v, "p50_ns") <= u64(v, "p90_ns"));
	assert_true(u64(v, "p90_ns") <= u64(v, "p99_ns"));
	assert_true(u64(v, "p99_ns") <= u64(v, "p999_ns"));
	assert_true(u64(v, "mean_ns") <= u64(v, "max_ns"));
	json_decref(v);

	/* no param: every op and its count, so users can find them */
	list = tel("/cachenode/latency");
	assert_true(u64(list, "store") >= N);
	assert_true(u64(list, "retrieve") >= M);
	u64(list, "lookup");
	u64(list, "delete");
	json_decref(list);

	v = tel("/cachenode/latency,nosuch");
	assert_true(json_is_null(v));
	json_decref(v);
}

static void cores_pages(void **state)
{
	json_t *v = tel("/cachenode/cores,0,1"), *cores, *stats;
	uint64_t sum = 0, seen = 0;
	json_int_t first = 0;

	assert_int_equal(u64(v, "ncores"), NCORES);
	assert_int_equal(u64(v, "count"), 1);
	assert_int_equal(json_integer_value(json_object_get(v, "next")), 1);
	cores = json_object_get(v, "cores");
	assert_int_equal(json_object_size(cores), 1);
	assert_non_null(json_object_get(cores, "0"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(cores, "0"), "role")),
			    "worker");
	json_decref(v);

	/* the last page says so */
	v = tel("/cachenode/cores,2,5");
	assert_int_equal(u64(v, "count"), 1);
	assert_int_equal(json_integer_value(json_object_get(v, "next")), -1);
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(json_object_get(v, "cores"), "2"), "role")),
			    "control");
	json_decref(v);

	/* walk every page one core at a time: the cores add up to the node */
	stats = tel("/cachenode/stats,requests");
	do {
		char cmd[64];
		const char *k;
		json_t *cd;

		snprintf(cmd, sizeof(cmd), "/cachenode/cores,%lld,1", (long long)first);
		v = tel(cmd);
		json_object_foreach(json_object_get(v, "cores"), k, cd) {
			sum += u64(cd, "requests");
			u64(cd, "ring_depth");
			u64(cd, "events");
			u64(cd, "drops");
			u64(cd, "l1_hits");
			seen++;
		}
		first = json_integer_value(json_object_get(v, "next"));
		json_decref(v);
	} while (first > 0);
	assert_int_equal(first, -1);
	assert_int_equal(seen, NCORES);
	assert_int_equal(sum, u64(stats, "requests_frames_rx"));
	json_decref(stats);

	/* no param: one page holds all three */
	v = tel("/cachenode/cores");
	assert_int_equal(json_object_size(json_object_get(v, "cores")), NCORES);
	assert_int_equal(json_integer_value(json_object_get(v, "next")), -1);
	json_decref(v);
}

/*
 * /cachenode/transport names the transport and how it was chosen, and has
 * every verbs counter (zero under tcp); with a worker index it shows that
 * worker alone, and the workers add up to the summed reply.
 */
static void transport_command(void **state)
{
	json_t *sum = tel("/cachenode/transport"), *w;
	uint64_t rx = 0, accepted = 0;
	char key[64];

	/* the harness starts nodes with --transport tcp (test_daemon covers auto) */
	assert_string_equal(json_string_value(json_object_get(sum, "name")), "tcp");
	assert_string_equal(json_string_value(json_object_get(sum, "chosen_by")), "option");
	assert_string_equal(json_string_value(json_object_get(sum, "fallback_reason")), "");
	assert_string_equal(json_string_value(json_object_get(sum, "listen")), d.addr);
	assert_int_equal(u64(sum, "workers"), WORKERS);
	assert_null(json_object_get(sum, "worker"));
	for (unsigned i = 0; i < cn_verbs_metric_count; i++) {
		snprintf(key, sizeof(key), "verbs_%s", cn_verbs_metric_desc[i].name);
		assert_int_equal(u64(sum, key), 0);
	}
	for (unsigned i = 0; i < WORKERS; i++) {
		snprintf(key, sizeof(key), "/cachenode/transport,%u", i);
		w = tel(key);
		assert_int_equal(u64(w, "worker"), i);
		assert_string_equal(json_string_value(json_object_get(w, "name")), "tcp");
		assert_int_equal(u64(w, "verbs_bytes_read"), 0);
		rx += u64(w, "bytes_rx");
		accepted += u64(w, "conns_accepted");
		json_decref(w);
	}
	/* the earlier cases moved them; nothing moves them now */
	assert_true(accepted > 0);
	assert_int_equal(rx, u64(sum, "bytes_rx"));
	assert_int_equal(accepted, u64(sum, "conns_accepted"));
	json_decref(sum);
	/* per core in /cachenode/cores too */
	w = tel("/cachenode/cores,0,1");
	assert_int_equal(u64(json_object_get(json_object_get(w, "cores"), "0"), "verbs_bytes_read"),
			 0);
	json_decref(w);
	/* no such worker, or not a number: null */
	snprintf(key, sizeof(key), "/cachenode/transport,%u", WORKERS);
	w = tel(key);
	assert_true(json_is_null(w));
	json_decref(w);
	w = tel("/cachenode/transport,x");
	assert_true(json_is_null(w));
	json_decref(w);
}

/* A standalone node (no --redis): the registry command says so, healthy, every counter 0. */
static void registry_command_standalone(void **state)
{
	static const struct cn_metric_desc reg_desc[] = {CN_REG_METRICS(CN_METRIC_DESC)};
	json_t *v = tel("/cachenode/registry");

	assert_int_equal(u64(v, "enabled"), 0);
	assert_int_equal(u64(v, "is_healthy"), 1);
	assert_int_equal(u64(v, "connected"), 0);
	assert_int_equal(u64(v, "live_nodes"), 0);
	assert_int_equal(u64(v, "peers_total"), 0);
	for (unsigned i = 0; i < sizeof(reg_desc) / sizeof(reg_desc[0]); i++)
		assert_int_equal(u64(v, reg_desc[i].name), 0);
	assert_true(json_is_array(json_object_get(v, "peers")));
	json_decref(v);
}

/* Without a usable GPU: present 0 with the reason, no devices, counters 0, no device 0. */
static void gpu_command_absent(void **state)
{
	static const struct cn_metric_desc gpu_desc[] = {CN_GPU_DEV_METRICS(CN_METRIC_DESC)};
	char why[CN_GPU_REASON_LEN];
	int ndev = 0;
	json_t *v;

	(void)state;
	if (cn_gpu_runtime_probe(&ndev, why, sizeof(why)) == 0) {
		printf("# CUDA sees %d device(s) here: the absent case is tested by gpu_nodev\n", ndev);
		return;
	}
	v = tel("/cachenode/gpu");
	assert_int_equal(u64(v, "present"), 0);
	assert_int_equal(u64(v, "devices"), 0);
	assert_true(strlen(json_string_value(json_object_get(v, "absent_reason"))) > 0);
	assert_string_equal(json_string_value(json_object_get(v, "mode")), "auto");
	for (unsigned i = 0; i < sizeof(gpu_desc) / sizeof(gpu_desc[0]); i++)
		assert_int_equal(u64(v, gpu_desc[i].name), 0);
	json_decref(v);
	v = tel("/cachenode/gpu,0");
	assert_true(json_is_null(v));
	json_decref(v);
}

static void status_tree(void **state)
{
	json_t *v = tel("/cachenode/status"), *h = json_object_get(v, "is_healthy");

	assert_true(json_is_integer(h));
	if (json_integer_value(h) != 1)
		fail_msg("node not healthy: %s", json_string_value(json_object_get(v, "reason")));
	assert_true(json_is_object(json_object_get(v, "components")));
	assert_null(json_object_get(v, "truncated"));
	json_decref(v);
}

static void top_once(void **state)
{
	char cmd[1024], out[65536], *line, *save;
	unsigned per_core = 0;
	json_t *j;
	int rc;

	snprintf(cmd, sizeof(cmd), "%s --once --interval 0.2 --file-prefix %s 2>&1", top_bin,
		 prefix);
	rc = cn_run(cmd, out, sizeof(out));
	if (rc != 0)
		fail_msg("cachenode-top exited %d: %s", rc, out);
	assert_non_null(strstr(out, d.node_id));
	assert_non_null(strstr(out, "store"));
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned core;
		char role[16];

		if (sscanf(line, " %u %15s", &core, role) == 2 &&
		    (strcmp(role, "worker") == 0 || strcmp(role, "control") == 0))
			per_core++;
	}
	assert_int_equal(per_core, NCORES);

	/* --json: one document */
	snprintf(cmd, sizeof(cmd), "%s --once --json --interval 0.1 --file-prefix %s", top_bin,
		 prefix);
	rc = cn_run(cmd, out, sizeof(out));
	assert_int_equal(rc, 0);
	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "cores")), NCORES);
	assert_non_null(json_object_get(json_object_get(j, "latency"), "store"));
	json_decref(j);

	/* a prefix nobody uses: a clear message and status 1; bad usage: 2 */
	snprintf(cmd, sizeof(cmd), "%s --once --file-prefix cachenode-nobody-%d 2>&1", top_bin,
		 (int)getpid());
	rc = cn_run(cmd, out, sizeof(out));
	assert_int_equal(rc, 1);
	assert_non_null(strstr(out, "is it running?"));
	snprintf(cmd, sizeof(cmd), "%s --interval banana 2>&1", top_bin);
	assert_int_equal(cn_run(cmd, out, sizeof(out)), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_command_answers),
		cmocka_unit_test(workload_moves_counters_exactly),
		cmocka_unit_test(latency_per_op),
		cmocka_unit_test(cores_pages),
		cmocka_unit_test(transport_command),
		cmocka_unit_test(registry_command_standalone),
		cmocka_unit_test(gpu_command_absent),
		cmocka_unit_test(status_tree),
		cmocka_unit_test(top_once),
	};
	return cmocka_run_group_tests_name("teldpdk", tests, group_setup, group_teardown);
}
