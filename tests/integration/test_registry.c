/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cluster registry against a real redis-server on a loopback port and
 * real nodes:
 *
 *   - a node's record has every field, the right TTL and set membership; a
 *     join event comes first; health changes are published (the node is made
 *     really unhealthy by pinning its whole pool); the registry's health
 *     stays out of the node's;
 *   - SIGTERM removes the record at once and publishes leave;
 *   - AUTH (password, ACL user) and db selection; a wrong password leaves the
 *     node serving and healthy with an unhealthy registry;
 *   - SIGKILL: the record, a peer's snapshot and cachenode-status show the
 *     node gone within 3 heartbeats; restarted, it rejoins;
 *   - Redis stopped (SIGSTOP) or killed and restarted for 10 s under load:
 *     throughput within 10% (medians of 1 s windows), registry unhealthy
 *     during, healthy after, record back within 2 heartbeats;
 *   - garbage in the registry is ignored and counted, never a crash; a set
 *     member whose record stays gone is pruned after 100 heartbeats;
 *   - Redis absent at start, then started; SIGTERM with Redis hung exits
 *     promptly.
 *
 * Exits 77 when redis-server is not installed (Debian package redis-server).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include <cachenode/client.h>
#include <cachenode/proto.h>
#include "cn_reg_record.h"
#include "daemon.h"
#include "redis.h"

#define HB_MS	    200 /* --heartbeat of the nodes here */
#define HB	    "200ms"
#define MiB	    (1u << 20)
#define LOAD_CHUNK  (16u << 10)
#define LOAD_KEYS   64
#define WINDOWS	    30 /* 1 s each: 10 before, 10 during, 10 after an outage */
#define OUTAGE_HB    "500ms"
#define OUTAGE_HB_MS 500

/* ---- time ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
	double left = t - mono_s();

	if (left > 0)
		usleep((useconds_t)(left * 1e6));
}

/* ---- the node ---- */

static void start_node(struct cn_daemon *d, const char *url, const char *cluster,
		       const char *const *extra)
{
	const char *args[32] = {"--l1-size", "16M", "--max-chunk", "1M", "--heartbeat", HB};
	int n = 6;

	if (url != NULL) {
		args[n++] = "--redis";
		args[n++] = url;
		args[n++] = "--cluster";
		args[n++] = cluster;
	}
	for (; extra && *extra && n < 30; extra++)
		args[n++] = *extra;
	args[n] = NULL;
	assert_int_equal(cn_daemon_start(d, args), 0);
}

/* The node's status tree over its own protocol (STATUS); new reference. */
static json_t *status(const struct cn_daemon *d)
{
	struct cn_client *c = NULL;
	char *text = NULL;
	json_t *root;

	assert_int_equal(cn_client_connect(d->addr, NULL, &c), 0);
	assert_int_equal(cn_client_status(c, &text), 0);
	cn_client_close(&c);
	root = json_loads(text, 0, NULL);
	assert_non_null(root);
	free(text);
	return root;
}

static json_t *at(json_t *node, const char *path)
{
	json_t *v = cn_json_at(node, path);

	if (v == NULL)
		fail_msg("status tree has no %s", path);
	return v;
}

static long long st_int(json_t *root, const char *path)
{
	return json_integer_value(at(root, path));
}

static bool st_true(json_t *root, const char *path)
{
	return json_is_true(at(root, path));
}

/*
 * Wait up to @ms until the counter at @path of @d's status is >= @min. A
 * counter moves once the node has Redis's reply, which can be after a
 * subscriber (this test) already saw what the command did.
 */
static void wait_st_min(const struct cn_daemon *d, const char *path, long long min, int ms)
{
	long long v = 0;

	for (int waited = 0; waited <= ms; waited += 10) {
		json_t *root = status(d);

		v = st_int(root, path);
		json_decref(root);
		if (v >= min)
			return;
		usleep(10 * 1000);
	}
	fail_msg("%s: %s is %lld after %d ms, want >= %lld", d->node_id, path, v, ms, min);
}

/*
 * The registry of @d is healthy in @root, or becomes so within 2 s: it is
 * healthy while its last heartbeat is at most 2 heartbeats old, and a loaded
 * machine can hold its thread back that long now and then (it then says so).
 */
static void reg_healthy(const struct cn_daemon *d, json_t *root)
{
	for (int waited = 0; !st_true(root, "components.registry.is_healthy"); waited += 20) {
		json_t *now;

		if (waited > 2000)
			fail_msg("%s: registry unhealthy for 2 s", d->node_id);
		usleep(20 * 1000);
		now = status(d);
		if (st_true(now, "components.registry.is_healthy")) {
			json_decref(now);
			return;
		}
		json_decref(now);
	}
}

/* Is @id among components.registry.peers of @d? */
static bool lists_peer(const struct cn_daemon *d, const char *id)
{
	json_t *root = status(d), *e;
	bool found = false;
	size_t i;

	json_array_foreach(at(root, "components.registry.peers"), i, e)
		found |= strcmp(json_string_value(json_object_get(e, "node_id")), id) == 0;
	json_decref(root);
	return found;
}

/* Wait up to @ms for lists_peer(@d, @id) == @want. */
static void wait_peer(const struct cn_daemon *d, const char *id, bool want, int ms)
{
	for (int waited = 0; waited <= ms; waited += 20) {
		if (lists_peer(d, id) == want)
			return;
		usleep(20 * 1000);
	}
	fail_msg("%s %s %s after %d ms", d->node_id, want ? "does not list" : "still lists", id, ms);
}

/* GET @path from the node's HTTP server; status code, body malloc'd in *body. */
static int http_get(const struct cn_daemon *d, const char *path, char **body)
{
	json_t *root = status(d);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {.tv_sec = 10};
	char host[32], req[256], *buf = NULL;
	unsigned port;
	size_t len = 0, cap = 0;
	ssize_t n;
	int fd, code = -1;

	assert_int_equal(sscanf(json_string_value(at(root, "node.http")), "%31[^:]:%u", host, &port),
			 2);
	json_decref(root);
	inet_pton(AF_INET, host, &sa.sin_addr);
	sa.sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
	assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	do {
		if (cap - len < 4096) {
			cap = cap ? 2 * cap : 65536;
			buf = realloc(buf, cap + 1);
			assert_non_null(buf);
		}
		n = recv(fd, buf + len, cap - len, 0);
		if (n > 0)
			len += (size_t)n;
	} while (n > 0);
	close(fd);
	assert_non_null(buf);
	buf[len] = '\0';
	sscanf(buf, "HTTP/1.1 %d", &code);
	*body = buf;
	return code;
}

/* The value of the first series of family @name ("name{" or "name "), -1 if none. */
static double metric(const char *text, const char *name)
{
	size_t nl = strlen(name);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		const char *v;

		if (strncmp(p, name, nl) != 0 || (p[nl] != '{' && p[nl] != ' '))
			continue;
		v = p[nl] == '{' ? strchr(p, '}') : p + nl;
		return strtod(v + 1, NULL);
	}
	return -1;
}

/* ---- Redis, as the test sees it ---- */

static redisContext *rconn(const struct cn_redis *r, unsigned db)
{
	redisContext *c = cn_redis_connect(r, db);

	assert_non_null(c);
	return c;
}

static void key_of(char *out, size_t len, const char *cluster, const char *id)
{
	cn_reg_key_node(out, len, cluster, id);
}

/* HGETALL @key decoded with the registry's own parser; -EINVAL when absent or invalid. */
static int read_record(redisContext *c, const char *cluster, const char *id,
		       struct cn_reg_record *rec, char *why, size_t whylen)
{
	const char *names[CN_REG_MAX_FIELDS], *vals[CN_REG_MAX_FIELDS];
	char key[160];
	redisReply *x;
	size_t nf;
	int rc;

	key_of(key, sizeof(key), cluster, id);
	x = redisCommand(c, "HGETALL %s", key);
	assert_non_null(x);
	assert_int_equal(x->type, REDIS_REPLY_ARRAY);
	nf = x->elements / 2;
	assert_true(nf <= CN_REG_MAX_FIELDS);
	for (size_t i = 0; i < nf; i++) {
		names[i] = x->element[2 * i]->str;
		vals[i] = x->element[2 * i + 1]->str;
	}
	rc = cn_reg_record_parse(names, vals, NULL, nf, cluster, id, rec, why, whylen);
	freeReplyObject(x);
	return rc;
}

static long long key_exists(redisContext *c, const char *cluster, const char *id)
{
	char key[160];

	key_of(key, sizeof(key), cluster, id);
	return cn_redis_cmd_int(c, "EXISTS %s", key);
}

/* Wait up to @ms for EXISTS(record of @id) == @want, polling every 5 ms; ms taken or -1. */
static long wait_key(const struct cn_redis *r, unsigned db, const char *cluster, const char *id,
		     long long want, int ms)
{
	double t0 = mono_s();

	while ((mono_s() - t0) * 1000 <= ms) {
		redisContext *c = cn_redis_connect(r, db);

		if (c != NULL) {
			long long v = key_exists(c, cluster, id);

			redisFree(c);
			if (v == want)
				return (long)((mono_s() - t0) * 1000);
		}
		usleep(5 * 1000);
	}
	return -1;
}

/*
 * Wait up to @ms for a valid record of @id written at or after @since (unix
 * ms), polling every 5 ms with a new connection; ms taken or -1.
 */
static long wait_fresh(const struct cn_redis *r, const char *cluster, const char *id,
		       uint64_t since, int ms)
{
	double t0 = mono_s();

	while ((mono_s() - t0) * 1000 <= ms) {
		redisContext *c = cn_redis_connect(r, 0);
		struct cn_reg_record rec;
		char why[192];

		if (c != NULL) {
			int rc = key_exists(c, cluster, id) == 1
					 ? read_record(c, cluster, id, &rec, why, sizeof(why))
					 : -ENOENT;

			redisFree(c);
			if (rc == 0 && rec.updated_at >= since)
				return (long)((mono_s() - t0) * 1000);
		}
		usleep(5 * 1000);
	}
	return -1;
}

/* A connection SUBSCRIBEd to the cluster's events channel. */
static redisContext *subscribe(const struct cn_redis *r, const char *cluster)
{
	redisContext *c = rconn(r, 0);
	char ch[96];
	redisReply *x;

	cn_reg_key_events(ch, sizeof(ch), cluster);
	x = redisCommand(c, "SUBSCRIBE %s", ch);
	assert_non_null(x);
	assert_int_equal(x->type, REDIS_REPLY_ARRAY);
	freeReplyObject(x);
	return c;
}

/* The next event's JSON within @ms (new reference), or NULL. */
static json_t *next_event(redisContext *c, int ms)
{
	double t0 = mono_s();
	void *x = NULL;
	json_t *ev = NULL;
	redisReply *m;

	if (redisGetReplyFromReader(c, &x) != REDIS_OK)
		return NULL;
	while (x == NULL) {
		int left = ms - (int)((mono_s() - t0) * 1000);
		struct pollfd p = {.fd = c->fd, .events = POLLIN};

		if (left <= 0 || poll(&p, 1, left) <= 0)
			return NULL;
		if (redisBufferRead(c) != REDIS_OK || redisGetReplyFromReader(c, &x) != REDIS_OK)
			return NULL;
	}
	m = x;
	if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 &&
	    m->element[2]->type == REDIS_REPLY_STRING)
		ev = json_loads(m->element[2]->str, 0, NULL);
	freeReplyObject(m);
	assert_non_null(ev); /* every message on the channel is an event in JSON */
	return ev;
}

/* Wait up to @ms for event @type of @id, skipping others; the event (new reference). */
static json_t *wait_event(redisContext *c, const char *type, const char *id, int ms)
{
	double t0 = mono_s();

	for (;;) {
		int left = ms - (int)((mono_s() - t0) * 1000);
		json_t *ev = left > 0 ? next_event(c, left) : NULL;

		if (ev == NULL)
			fail_msg("no %s event of %s within %d ms", type, id, ms);
		if (strcmp(json_string_value(json_object_get(ev, "event")), type) == 0 &&
		    strcmp(json_string_value(json_object_get(ev, "node_id")), id) == 0)
			return ev;
		json_decref(ev);
	}
}

/* ---- cachenode-status ---- */

static int status_tool(const char *args, char *out, size_t cap)
{
	char cmd[1024];
	const char *bin = getenv("CACHENODE_STATUS");

	assert_non_null(bin);
	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", bin, args);
	return cn_run(cmd, out, cap);
}

/* cachenode-status --redis --json: the "state" of @id ("live", "dead") or "absent". */
static const char *tool_state(const struct cn_redis *r, const char *cluster, const char *id,
			      char *buf, size_t len, int *rc)
{
	char args[512], out[65536];
	json_t *root, *e;
	size_t i;

	snprintf(args, sizeof(args), "--redis %s --cluster %s --json", r->url, cluster);
	*rc = status_tool(args, out, sizeof(out));
	root = json_loads(out, 0, NULL);
	if (root == NULL)
		fail_msg("cachenode-status --json: %s", out);
	snprintf(buf, len, "absent");
	json_array_foreach(json_object_get(root, "nodes"), i, e)
		if (strcmp(json_string_value(json_object_get(e, "node_id")), id) == 0)
			snprintf(buf, len, "%s", json_string_value(json_object_get(e, "state")));
	json_decref(root);
	return buf;
}

/* ---- cases ---- */

/* No --redis: the component is there, disabled and healthy; the families exist, zero. */
static void standalone_node(void **state)
{
	struct cn_daemon d;
	json_t *root;
	char *m;

	start_node(&d, NULL, NULL, NULL);
	root = status(&d);
	assert_false(st_true(root, "components.registry.enabled"));
	assert_true(st_true(root, "components.registry.is_healthy"));
	assert_int_equal(st_int(root, "components.registry.counters.heartbeats_ok"), 0);
	assert_true(st_true(root, "is_healthy"));
	json_decref(root);
	assert_int_equal(http_get(&d, "/metrics", &m), 200);
	assert_true(metric(m, "cachenode_registry_enabled") == 0);
	assert_true(metric(m, "cachenode_registry_heartbeats_ok_total") == 0);
	assert_true(metric(m, "cachenode_registry_info") == -1);
	free(m);
	assert_true(cn_daemon_log_contains(&d, "standalone: no registry"));
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 10000), 0);
}

/*
 * The record, its TTL and membership; join first; the figures follow the
 * node (chunks, hit rate); a node made unhealthy (every chunk pinned by a
 * reader that does not read) publishes a health event and its record says
 * unhealthy, while the registry stays healthy; healthy again likewise; the
 * exporters agree.
 */
static void record_events_and_health(void **state)
{
	struct cn_redis r = {0};
	struct cn_daemon d;
	redisContext *sub, *c;
	struct cn_reg_record rec;
	struct cn_client *cl = NULL;
	struct cn_key keys[8];
	uint8_t *buf = malloc(MiB);
	char why[256], key[160], *m, out[16384], args[512];
	const char *extra[] = {"--l1-size", "8M", NULL};
	json_t *ev, *root;
	long long ttl;
	int slow, slow2;

	assert_non_null(buf);
	assert_int_equal(cn_redis_start(&r, 0, NULL), 0);
	sub = subscribe(&r, "rec");
	start_node(&d, r.url, "rec", extra);
	ev = wait_event(sub, "join", d.node_id, 5000);
	assert_string_equal(json_string_value(json_object_get(ev, "address")), d.addr);
	assert_string_equal(json_string_value(json_object_get(ev, "cluster")), "rec");
	assert_string_equal(json_string_value(json_object_get(ev, "health")), "healthy");
	json_decref(ev);

	/* the record: every field, as the registry's own parser reads it */
	c = rconn(&r, 0);
	if (read_record(c, "rec", d.node_id, &rec, why, sizeof(why)) < 0)
		fail_msg("record: %s", why);
	assert_string_equal(rec.address, d.addr);
	assert_string_equal(rec.transport, "tcp");
	assert_string_equal(rec.version, CN_VERSION);
	assert_int_equal(rec.l1_capacity, 8 * MiB);
	assert_int_equal(rec.chunks, 0);
	assert_true(rec.health);
	assert_string_equal(rec.reason, "ok");
	assert_int_equal(rec.heartbeat_ms, HB_MS);
	assert_true(rec.started_at > 0 && rec.started_at <= rec.updated_at);
	assert_true(now_ms() - rec.updated_at <= 2 * HB_MS);
	assert_true(rec.http[0] != '\0');
	key_of(key, sizeof(key), "rec", d.node_id);
	ttl = cn_redis_cmd_int(c, "PTTL %s", key);
	assert_true(ttl > 0 && ttl <= 3 * HB_MS);
	assert_int_equal(cn_redis_cmd_int(c, "SISMEMBER cachenode:rec:nodes %s", d.node_id), 1);

	/* the node says the same of its registry; the node alone is live */
	wait_st_min(&d, "components.registry.counters.events_published", 1, 2000);
	root = status(&d);
	assert_true(st_true(root, "components.registry.enabled"));
	reg_healthy(&d, root);
	assert_true(st_true(root, "components.registry.connected"));
	assert_string_equal(json_string_value(at(root, "components.registry.cluster")), "rec");
	assert_string_equal(json_string_value(at(root, "components.registry.key")), key);
	assert_int_equal(st_int(root, "components.registry.heartbeat_ms"), HB_MS);
	assert_true(st_int(root, "components.registry.counters.heartbeats_ok") >= 1);
	assert_true(st_int(root, "components.registry.counters.events_published") >= 1);
	assert_int_equal(st_int(root, "components.registry.live_nodes"), 1);
	assert_int_equal(json_array_size(at(root, "components.registry.peers")), 0);
	json_decref(root);
	assert_int_equal(http_get(&d, "/metrics", &m), 200);
	assert_true(metric(m, "cachenode_registry_enabled") == 1);
	assert_true(metric(m, "cachenode_registry_connected") == 1);
	assert_true(metric(m, "cachenode_registry_heartbeats_ok_total") >= 1);
	assert_true(metric(m, "cachenode_registry_info") == 1);
	assert_non_null(strstr(m, "cluster=\"rec\""));
	free(m);
	snprintf(args, sizeof(args), "--redis %s --cluster rec --no-color", r.url);
	assert_int_equal(status_tool(args, out, sizeof(out)), 0);
	assert_non_null(strstr(out, d.node_id));
	assert_non_null(strstr(out, d.addr));
	assert_non_null(strstr(out, "1 live, 0 dead"));

	/* the figures follow the node within a heartbeat or two */
	assert_int_equal(cn_client_connect(d.addr, NULL, &cl), 0);
	for (int i = 0; i < 8; i++)
		keys[i] = cn_test_key("reg-pin-%d", i);
	for (int i = 0; i < 7; i++) {
		memset(buf, 'a' + i, MiB);
		assert_int_equal(cn_client_store(cl, &keys[i], buf, MiB), 0);
	}
	{
		uint32_t len;
		struct cn_key miss = cn_test_key("reg-miss");

		assert_int_equal(cn_client_retrieve(cl, &keys[0], buf, MiB, &len), 0);
		assert_int_equal(cn_client_retrieve(cl, &miss, buf, MiB, &len), -ENOENT);
	}
	for (int waited = 0;; waited += 50) {
		assert_int_equal(read_record(c, "rec", d.node_id, &rec, why, sizeof(why)), 0);
		if (rec.chunks == 7 && rec.hit_rate > 0.49 && rec.hit_rate < 0.51)
			break;
		if (waited > 5 * HB_MS)
			fail_msg("record: %llu chunks, hit rate %.3f; want 7, 0.5",
				 (unsigned long long)rec.chunks, rec.hit_rate);
		usleep(50 * 1000);
	}
	assert_int_equal(rec.l1_used, 7 * MiB);

	/*
	 * Every chunk pinned by readers that do not read (as in the http test):
	 * seven, then the last free page stored and pinned too. The node is
	 * unhealthy, and says so in the registry.
	 */
	slow = cn_raw_connect(d.addr);
	assert_true(slow >= 0);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(cn_raw_send_retrieve(slow, 100 + i, keys, 7), 0);
	for (int waited = 0;; waited += 20) {
		root = status(&d);
		long long pinned = st_int(root, "components.engine.components.l1.pinned");

		json_decref(root);
		if (pinned == 7)
			break;
		if (waited > 5000)
			fail_msg("pinned: %lld, want 7", pinned);
		usleep(20 * 1000);
	}
	memset(buf, 'h', MiB);
	assert_int_equal(cn_client_store(cl, &keys[7], buf, MiB), 0);
	slow2 = cn_raw_connect(d.addr);
	assert_true(slow2 >= 0);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(cn_raw_send_retrieve(slow2, 200 + i, &keys[7], 1), 0);
	ev = wait_event(sub, "health", d.node_id, 5000);
	assert_string_equal(json_string_value(json_object_get(ev, "health")), "unhealthy");
	assert_non_null(strstr(json_string_value(json_object_get(ev, "reason")), "pinned"));
	json_decref(ev);
	assert_int_equal(read_record(c, "rec", d.node_id, &rec, why, sizeof(why)), 0);
	assert_false(rec.health);
	assert_non_null(strstr(rec.reason, "engine.l1"));
	root = status(&d);
	assert_false(st_true(root, "is_healthy"));
	reg_healthy(&d, root);
	json_decref(root);
	assert_int_equal(status_tool(args, out, sizeof(out)), 1); /* a node is unhealthy */
	assert_non_null(strstr(out, "UNHEALTHY"));

	/* the readers read: healthy again, and said so */
	assert_int_equal(cn_raw_read_retrieves(slow, 3, 7, MiB, buf), 0);
	assert_int_equal(cn_raw_read_retrieves(slow2, 16, 1, MiB, buf), 0);
	ev = wait_event(sub, "health", d.node_id, 5000);
	assert_string_equal(json_string_value(json_object_get(ev, "health")), "healthy");
	json_decref(ev);
	close(slow);
	close(slow2);
	cn_client_close(&cl);

	redisFree(c);
	redisFree(sub);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 10000), 0);
	cn_redis_stop(&r, false);
	free(buf);
}

/*
 * SIGTERM removes the record at once (not by expiry: the heartbeat is 10 s,
 * so the record would live 30 s), takes the id out of the set and says leave.
 */
static void sigterm_leaves_at_once(void **state)
{
	struct cn_redis r = {0};
	struct cn_daemon d;
	const char *extra[] = {"--heartbeat", "10s", NULL};
	redisContext *sub, *c;
	json_t *ev;
	char key[160];

	assert_int_equal(cn_redis_start(&r, 0, NULL), 0);
	sub = subscribe(&r, "bye");
	start_node(&d, r.url, "bye", extra);
	json_decref(wait_event(sub, "join", d.node_id, 5000));
	c = rconn(&r, 0);
	key_of(key, sizeof(key), "bye", d.node_id);
	assert_true(cn_redis_cmd_int(c, "PTTL %s", key) > 20000);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 10000), 0);
	assert_int_equal(key_exists(c, "bye", d.node_id), 0);
	assert_int_equal(cn_redis_cmd_int(c, "SISMEMBER cachenode:bye:nodes %s", d.node_id), 0);
	ev = wait_event(sub, "leave", d.node_id, 1000);
	assert_string_equal(json_string_value(json_object_get(ev, "reason")), "shutdown");
	json_decref(ev);
	assert_true(cn_daemon_log_contains(&d, "left cluster bye"));
	redisFree(c);
	redisFree(sub);
	cn_redis_stop(&r, false);
}

/*
 * A password, an ACL user and a db other than 0: the records land in that db
 * only and the password shows nowhere. A wrong password: the node serves and
 * is healthy, its registry is not, and says why.
 */
static void auth_and_db(void **state)
{
	struct cn_redis r = {0};
	struct cn_daemon a, b, bad;
	char url_a[200], url_b[200], url_bad[200], *m, *body;
	redisContext *c0, *c3;
	redisReply *x;
	json_t *root;
	const char *reason;

	assert_int_equal(cn_redis_start(&r, 0, "s3cret-pw"), 0);
	c0 = rconn(&r, 0);
	x = redisCommand(c0, "ACL SETUSER cnuser on >user-pw ~cachenode:* &* +@all");
	assert_non_null(x);
	assert_int_equal(x->type, REDIS_REPLY_STATUS);
	freeReplyObject(x);
	c3 = rconn(&r, 3);
	snprintf(url_a, sizeof(url_a), "redis://:s3cret-pw@127.0.0.1:%u/3", r.port);
	snprintf(url_b, sizeof(url_b), "redis://cnuser:user-pw@127.0.0.1:%u/3", r.port);
	snprintf(url_bad, sizeof(url_bad), "redis://:wrong-pw@127.0.0.1:%u/3", r.port);
	start_node(&a, url_a, "auth", NULL);
	start_node(&b, url_b, "auth", NULL);
	start_node(&bad, url_bad, "auth", NULL);
	assert_true(wait_key(&r, 3, "auth", a.node_id, 1, 3000) >= 0);
	assert_true(wait_key(&r, 3, "auth", b.node_id, 1, 3000) >= 0);
	assert_int_equal(key_exists(c0, "auth", a.node_id), 0);
	assert_int_equal(key_exists(c0, "auth", b.node_id), 0);
	wait_peer(&a, b.node_id, true, 3000);

	root = status(&a);
	reg_healthy(&a, root);
	assert_true(st_true(root, "components.registry.auth"));
	assert_null(strstr(json_string_value(at(root, "components.registry.redis")), "s3cret"));
	assert_int_equal(st_int(root, "components.registry.live_nodes"), 2);
	json_decref(root);
	assert_int_equal(http_get(&a, "/metrics", &m), 200);
	assert_null(strstr(m, "s3cret"));
	free(m);
	assert_false(cn_daemon_log_contains(&a, "s3cret"));

	/* the wrong password: serving, healthy, registry unhealthy with the reason */
	usleep(3 * HB_MS * 1000);
	assert_int_equal(key_exists(c3, "auth", bad.node_id), 0);
	root = status(&bad);
	assert_true(st_true(root, "is_healthy"));
	assert_false(st_true(root, "components.registry.is_healthy"));
	assert_false(st_true(root, "components.registry.connected"));
	reason = json_string_value(at(root, "components.registry.reason"));
	if (strstr(reason, "AUTH") == NULL || strstr(reason, "cannot reach") == NULL)
		fail_msg("reason: %s", reason);
	assert_true(st_int(root, "components.registry.counters.connect_errors") >= 2);
	assert_int_equal(st_int(root, "components.registry.counters.heartbeats_ok"), 0);
	assert_int_equal(st_int(root, "components.registry.last_ok_age_ms"), -1);
	json_decref(root);
	assert_int_equal(http_get(&bad, "/api/healthz", &body), 200);
	free(body);
	assert_int_equal(http_get(&bad, "/metrics", &m), 200);
	assert_true(metric(m, "cachenode_healthy") == 1);
	assert_true(metric(m, "cachenode_registry_connected") == 0);
	assert_non_null(strstr(m, "cachenode_component_healthy{node=\""));
	assert_non_null(strstr(m, "component=\"registry\"} 0"));
	free(m);
	assert_true(cn_daemon_log_contains(&bad, "the node serves on"));

	assert_int_equal(cn_daemon_stop(&bad, SIGTERM, 10000), 0);
	assert_int_equal(cn_daemon_stop(&b, SIGTERM, 10000), 0);
	assert_int_equal(cn_daemon_stop(&a, SIGTERM, 10000), 0);
	assert_int_equal(key_exists(c3, "auth", a.node_id), 0);
	redisFree(c0);
	redisFree(c3);
	cn_redis_stop(&r, false);
}

/* Is @text in the reply of dpdk-telemetry.py for @cmd on @d's socket? (false: no tool) */
static bool telemetry_has(const struct cn_daemon *d, const char *cmd, const char *text,
			  bool *have_tool)
{
	char sh[512], out[65536];

	*have_tool = system("command -v dpdk-telemetry.py >/dev/null 2>&1") == 0;
	if (!*have_tool)
		return false;
	snprintf(sh, sizeof(sh), "echo '%s' | dpdk-telemetry.py -f cachenode-%s 2>&1", cmd,
		 d->node_id);
	assert_int_equal(cn_run(sh, out, sizeof(out)), 0);
	return strstr(out, text) != NULL;
}

/*
 * SIGKILL: within 3 heartbeats the record is gone, the peer's snapshot has
 * dropped it (the time the snapshot changed, from the peer's own clock) and
 * cachenode-status calls it dead. The kill lands mid-heartbeat (half a
 * heartbeat after the victim's last write); detection then takes about 2.5
 * heartbeats (3 heartbeats after the last write). Restarted under the same
 * id, it rejoins and the peer lists it again.
 */
static void sigkill_detected_and_rejoin(void **state)
{
	struct cn_redis r = {0};
	struct cn_daemon a, b;
	struct cn_reg_record rec;
	redisContext *c, *sub;
	char why[256], st[16], id[64], idarg[64];
	uint64_t t_kill, changed = 0;
	long gone;
	json_t *root, *ev;
	bool have_tool;
	int rc;

	assert_int_equal(cn_redis_start(&r, 0, NULL), 0);
	start_node(&a, r.url, "kill", NULL);
	start_node(&b, r.url, "kill", NULL);
	snprintf(id, sizeof(id), "%s", b.node_id);
	wait_peer(&a, id, true, 3000);
	if (telemetry_has(&a, "/cachenode/registry", id, &have_tool) == false && have_tool)
		fail_msg("/cachenode/registry of %s does not list %s", a.node_id, id);
	c = rconn(&r, 0);

	/*
	 * Kill half a heartbeat after b's last write. b is stopped first and its
	 * record read again, so that a write this test did not see (it was slow
	 * between the read and the kill) cannot shorten the margin unnoticed.
	 */
	for (;;) {
		uint64_t seen;

		assert_int_equal(read_record(c, "kill", id, &rec, why, sizeof(why)), 0);
		if (now_ms() - rec.updated_at < HB_MS / 2 - 10 ||
		    now_ms() - rec.updated_at > HB_MS / 2 + 10) {
			usleep(2000);
			continue;
		}
		seen = rec.updated_at;
		assert_int_equal(cn_pid_stop(b.pid, 5000), 0);
		assert_int_equal(read_record(c, "kill", id, &rec, why, sizeof(why)), 0);
		t_kill = now_ms();
		if (rec.updated_at == seen && t_kill - seen <= HB_MS / 2 + 30)
			break;
		kill(b.pid, SIGCONT); /* too late: try again at its next heartbeat */
	}
	kill(b.pid, SIGKILL);

	gone = wait_key(&r, 0, "kill", id, 0, 5 * HB_MS);
	assert_true(gone >= 0);
	printf("# record gone %llu ms after SIGKILL (%.2f heartbeats)\n",
	       (unsigned long long)(now_ms() - t_kill), (double)(now_ms() - t_kill) / HB_MS);
	assert_true(now_ms() - t_kill <= 3 * HB_MS + 10); /* + the 5 ms polling of this test */
	wait_peer(&a, id, false, 3 * HB_MS);
	root = status(&a);
	changed = (uint64_t)st_int(root, "components.registry.membership_changed_at_ms");
	assert_true(st_int(root, "components.registry.counters.peers_lost") >= 1);
	json_decref(root);
	printf("# peer snapshot changed %lld ms after SIGKILL (%.2f heartbeats)\n",
	       (long long)(changed - t_kill), (double)(changed - t_kill) / HB_MS);
	assert_true(changed > t_kill);
	assert_true(changed - t_kill <= 3 * HB_MS);
	/* cachenode-status: dead (still in the set, no record), and exit 1 */
	assert_string_equal(tool_state(&r, "kill", id, st, sizeof(st), &rc), "dead");
	assert_int_equal(rc, 1);
	assert_string_equal(tool_state(&r, "kill", a.node_id, st, sizeof(st), &rc), "live");
	assert_true(cn_daemon_log_contains(&a, "left the cluster"));
	cn_daemon_stop(&b, SIGKILL, 1000); /* reap */

	/* restart b as itself: it joins again and a lists it within a heartbeat or two */
	sub = subscribe(&r, "kill");
	{
		const char *extra[] = {"--node-id", idarg, NULL};

		snprintf(idarg, sizeof(idarg), "%s", id);
		start_node(&b, r.url, "kill", extra);
	}
	ev = wait_event(sub, "join", id, 5000);
	json_decref(ev);
	wait_peer(&a, id, true, 3 * HB_MS);
	assert_string_equal(tool_state(&r, "kill", id, st, sizeof(st), &rc), "live");
	assert_int_equal(rc, 0);
	root = status(&a);
	assert_true(st_int(root, "components.registry.counters.peers_joined") >= 2);
	json_decref(root);

	redisFree(sub);
	redisFree(c);
	assert_int_equal(cn_daemon_stop(&b, SIGTERM, 10000), 0);
	assert_int_equal(cn_daemon_stop(&a, SIGTERM, 10000), 0);
	cn_redis_stop(&r, false);
}

/* ---- load ---- */

/*
 * One client thread, two nodes: it alternates between them in 10 ms slices,
 * RETRIEVEing 16 KiB chunks round robin over one connection each, and counts
 * each node's replies. Interleaved this finely, both nodes see the same
 * machine (other jobs, frequency, cache), and never compete for the CPUs.
 */
#define SLICE_S 0.01
#define MAX_SLICES 8192 /* per node: 160 s of load */

/* One slice of load on one node: when it began, how long it ran, its replies. */
struct slice {
	double t, busy;
	unsigned ops;
};

struct load {
	const char *addr[2];
	atomic_ullong ops[2];
	atomic_bool stop;
	atomic_int err;
	pthread_t th;
	/* written by the load thread only; read after pthread_join */
	struct slice sl[2][MAX_SLICES];
	unsigned nsl[2];
};

static int load_prefill(struct cn_client *c, struct cn_key *keys, uint8_t *buf)
{
	int r = 0;

	for (unsigned i = 0; r == 0 && i < LOAD_KEYS; i++) {
		keys[i] = cn_test_key("load-%u", i);
		memset(buf, (int)i, LOAD_CHUNK);
		r = cn_client_store(c, &keys[i], buf, LOAD_CHUNK);
		if (r == -EEXIST)
			r = 0;
	}
	return r;
}

static void *load_main(void *arg)
{
	struct load *l = arg;
	struct cn_client *c[2] = {NULL, NULL};
	uint8_t *buf = malloc(LOAD_CHUNK);
	struct cn_key keys[LOAD_KEYS];
	unsigned i = 0;
	int r = buf ? 0 : -ENOMEM;

	for (int n = 0; r == 0 && n < 2; n++) {
		r = cn_client_connect(l->addr[n], NULL, &c[n]);
		if (r == 0)
			r = load_prefill(c[n], keys, buf);
	}
	for (int n = 0; r == 0 && !atomic_load(&l->stop); n ^= 1) {
		double start = mono_s(), end = start + SLICE_S;
		unsigned ops = 0;

		while (r == 0 && mono_s() < end) {
			uint32_t len;

			r = cn_client_retrieve(c[n], &keys[i++ % LOAD_KEYS], buf, LOAD_CHUNK, &len);
			if (r == 0 && len != LOAD_CHUNK)
				r = -EPROTO;
			atomic_fetch_add(&l->ops[n], 1);
			ops++;
		}
		if (l->nsl[n] < MAX_SLICES)
			l->sl[n][l->nsl[n]++] = (struct slice){start, mono_s() - start, ops};
	}
	atomic_store(&l->err, r);
	cn_client_close(&c[0]);
	cn_client_close(&c[1]);
	free(buf);
	return NULL;
}

static int dbl_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), dbl_cmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* CPU seconds (user + system) the thread named @comm of @pid has used; -1 if none. */
static double thread_cpu_s(pid_t pid, const char *comm)
{
	char buf[1024], cmd[512];
	double s = -1;

	snprintf(cmd, sizeof(cmd),
		 "for t in /proc/%d/task/*; do [ \"$(cat $t/comm)\" = %s ] && cat $t/stat; done",
		 (int)pid, comm);
	if (cn_run(cmd, buf, sizeof(buf)) == 0 && buf[0] != '\0') {
		const char *p = strrchr(buf, ')');
		unsigned long long ut = 0, st = 0;

		/* after "(comm)": state, then fields 4..13, then utime (14) and stime (15) */
		if (p != NULL && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
					&ut, &st) == 2)
			s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	}
	return s;
}

/*
 * Redis goes away for 10 s under load: SIGSTOP (hung: connections open, no
 * answers) or SIGKILL and a restart on the same port (it comes back empty).
 *
 * Throughput is counted in thirty 1 s windows, 10 before, 10 during and 10
 * after the outage. This machine is shared: other jobs come and go and move
 * a node's throughput by 2-3x within seconds, far more than the 10% to
 * resolve. So a control runs beside it, interleaved: a second, identical
 * node whose Redis stays up, and one client that alternates between the two
 * every 10 ms (the nodes never run load at the same time, and both see the
 * same machine). Each pair of slices (node, then control) gives the node's
 * retrieves per second relative to the control's; the result compares the
 * pairs during the outage with those around it (the first window and the
 * recovery window left out): the median ratio during over the median around
 * >= 0.9, and the share of pairs where the node ran at under half the
 * control's rate no more than 10 points higher during than around (a node
 * that stalls now and then, say waiting on Redis, adds such pairs while the
 * median might barely move). The control cannot hide
 * a registry thread that burns CPU in the background (it would slow both
 * nodes alike), so that thread's CPU time during the outage is checked too:
 * under 2% of a core.
 *
 * Also: the node under test is healthy at every window's end; its registry
 * healthy just before the outage, unhealthy at the end of every outage
 * window, healthy again one window after it and at the end (in between, a
 * machine this loaded can starve the registry thread past 2 heartbeats, which
 * the registry then rightly reports); its record is back (a fresh heartbeat)
 * within 2 heartbeats of Redis answering again, with a join event and its
 * set membership. Heartbeat 500 ms here, for the same reason.
 */
static void outage_under_load(bool restart)
{
	const char *hb_outage[] = {"--heartbeat", OUTAGE_HB, NULL};
	struct cn_redis r = {0}, rc = {0};
	struct cn_daemon d, ctl;
	double rate[WINDOWS], crate[WINDOWS], rel[WINDOWS], t0, ab[WINDOWS], ao[WINDOWS];
	double ratio, slow_more, abs_ratio, cpu0 = 0, cpu1 = 0, *base, *out, *inw;
	struct load *l = calloc(1, sizeof(*l));
	bool reg_ok[WINDOWS], node_ok[WINDOWS];
	unsigned long long last, clast;
	long back = -1;
	int nb = 0, no = 0, nab = 0, nao = 0;
	int slow_b = 0, slow_o = 0; /* pairs where the node ran at under half the control's rate */
	uint16_t port;
	json_t *root;
	redisContext *c;

	assert_non_null(l);
	assert_int_equal(cn_redis_start(&r, 0, NULL), 0);
	assert_int_equal(cn_redis_start(&rc, 0, NULL), 0);
	port = r.port;
	start_node(&d, r.url, "load", hb_outage);
	start_node(&ctl, rc.url, "load", hb_outage);
	assert_true(wait_key(&r, 0, "load", d.node_id, 1, 3000) >= 0);
	assert_true(wait_key(&rc, 0, "load", ctl.node_id, 1, 3000) >= 0);
	l->addr[0] = d.addr;
	l->addr[1] = ctl.addr;
	assert_int_equal(pthread_create(&l->th, NULL, load_main, l), 0);
	while ((atomic_load(&l->ops[0]) < 1000 || atomic_load(&l->ops[1]) < 1000) &&
	       atomic_load(&l->err) == 0)
		usleep(10 * 1000);
	t0 = mono_s();
	last = atomic_load(&l->ops[0]);
	clast = atomic_load(&l->ops[1]);
	for (int w = 0; w < WINDOWS; w++) {
		unsigned long long ops, cops;
		double el;

		if (w == 10) {
			if (restart)
				cn_redis_stop(&r, true);
			else
				assert_int_equal(cn_pid_stop(r.pid, 5000), 0);
			cpu0 = thread_cpu_s(d.pid, "cn-registry");
		}
		if (w == 20) {
			double t_up;

			cpu1 = thread_cpu_s(d.pid, "cn-registry");
			if (restart)
				assert_int_equal(cn_redis_start(&r, port, NULL), 0);
			else
				kill(r.pid, SIGCONT);
			t_up = mono_s();
			back = wait_fresh(&r, "load", d.node_id, now_ms(), 5000);
			if (back >= 0)
				back = (long)((mono_s() - t_up) * 1000);
		}
		sleep_until(t0 + w + 1);
		ops = atomic_load(&l->ops[0]);
		cops = atomic_load(&l->ops[1]);
		el = mono_s() - (t0 + w);
		rate[w] = (double)(ops - last) / el;
		crate[w] = (double)(cops - clast) / el;
		last = ops;
		clast = cops;
		root = status(&d);
		reg_ok[w] = st_true(root, "components.registry.is_healthy");
		node_ok[w] = st_true(root, "is_healthy");
		json_decref(root);
		json_decref(status(&ctl)); /* the same status traffic on both */
	}
	atomic_store(&l->stop, true);
	pthread_join(l->th, NULL);
	assert_int_equal(atomic_load(&l->err), 0);

	/*
	 * Slice k of the node and slice k of the control ran back to back: each
	 * pair gives one ratio of replies per second spent on each. ~500 pairs
	 * per 10 s, not ten 1 s windows, so that the machine's noise (single
	 * windows move by +-20%, and one slice in five of either node has a
	 * stall of its own) does not decide.
	 */
	base = calloc(MAX_SLICES, sizeof(*base));
	out = calloc(MAX_SLICES, sizeof(*out));
	inw = calloc(MAX_SLICES, sizeof(*inw));
	assert_true(base != NULL && out != NULL && inw != NULL);
	for (int w = 0; w < WINDOWS; w++) {
		int n = 0, ab_or_ao = (w >= 1 && w < 10) || w >= 21 ? 1 : w >= 10 && w < 20 ? 2 : 0;

		for (unsigned k = 0; k < l->nsl[0] && k < l->nsl[1]; k++) {
			const struct slice *a = &l->sl[0][k], *b = &l->sl[1][k];
			double q;

			if (a->t < t0 || (int)(a->t - t0) != w)
				continue;
			q = ((double)a->ops / a->busy) / ((double)b->ops / b->busy);
			inw[n++] = q;
			if (ab_or_ao == 1) {
				base[nb++] = q;
				slow_b += q < 0.5;
			} else if (ab_or_ao == 2) {
				out[no++] = q;
				slow_o += q < 0.5;
			}
		}
		rel[w] = n > 0 ? median(inw, n) : 0;
		printf("# window %2d: %7.0f retrieves/s, control %7.0f, ratio %.3f (%d slice pairs); "
		       "registry %s, node %s\n",
		       w, rate[w], crate[w], rel[w], n, reg_ok[w] ? "healthy" : "UNHEALTHY",
		       node_ok[w] ? "healthy" : "UNHEALTHY");
		if (ab_or_ao == 1)
			ab[nab++] = rate[w];
		else if (ab_or_ao == 2)
			ao[nao++] = rate[w];
	}
	assert_true(no >= 50 && nb >= 90);
	ratio = median(out, no) / median(base, nb);
	slow_more = (double)slow_o / no - (double)slow_b / nb;
	abs_ratio = median(ao, nao) / median(ab, nab);
	printf("# %s: throughput during the outage / around it = %.3f relative to the control "
	       "(medians of %d and %d slice pairs; %.3f absolute, medians of 1 s windows); "
	       "pairs with the node under half the control's rate: %.1f%% during, %.1f%% around; "
	       "registry thread CPU during the outage %.2f s; record back %ld ms after Redis "
	       "answered (%.2f heartbeats)\n",
	       restart ? "kill + restart" : "SIGSTOP", ratio, no, nb, abs_ratio,
	       100.0 * slow_o / no, 100.0 * slow_b / nb, cpu1 - cpu0, back,
	       (double)back / OUTAGE_HB_MS);
	free(base);
	free(out);
	free(inw);
	for (int w = 0; w < WINDOWS; w++) {
		if (!node_ok[w])
			fail_msg("the node was unhealthy in window %d", w);
		if (w >= 10 && w < 20 && reg_ok[w])
			fail_msg("registry healthy during the outage (window %d)", w);
	}
	if (!reg_ok[8] || !reg_ok[9])
		fail_msg("registry unhealthy just before the outage");
	if (!reg_ok[21] || !reg_ok[WINDOWS - 1])
		fail_msg("registry not healthy again after the outage (window 21, or at the end)");
	assert_true(back >= 0);
	assert_true(back <= 2 * OUTAGE_HB_MS);
	assert_true(cpu0 >= 0 && cpu1 >= cpu0);
	assert_true(cpu1 - cpu0 <= 0.2);
	assert_true(ratio >= 0.9);
	assert_true(slow_more <= 0.1);

	/* resynced: membership, a reconnect counted, and the record is whole again */
	c = rconn(&r, 0);
	assert_int_equal(cn_redis_cmd_int(c, "SISMEMBER cachenode:load:nodes %s", d.node_id), 1);
	redisFree(c);
	root = status(&d);
	assert_true(st_int(root, "components.registry.counters.reconnects") >= 1);
	assert_true(st_int(root, "components.registry.counters.heartbeat_errors") +
			    st_int(root, "components.registry.counters.read_errors") >=
		    1);
	assert_true(st_int(root, "components.registry.counters.connect_errors") >= 1);
	/*
	 * Readers stopped seeing the record as live: join published again. (Redis
	 * came back empty; or, hung, it ran the heartbeat that was in flight when
	 * it stopped once it resumed: that record is there again but 10 s old,
	 * and readers' age rule ignores it until the fresh one replaces it.)
	 */
	assert_true(st_int(root, "components.registry.counters.events_published") >= 2);
	assert_true(cn_daemon_log_contains(&d, "joined again"));
	json_decref(root);
	assert_int_equal(cn_daemon_stop(&ctl, SIGTERM, 10000), 0);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 10000), 0);
	cn_redis_stop(&rc, false);
	cn_redis_stop(&r, false);
	free(l);
}

static void outage_sigstop_under_load(void **state)
{
	outage_under_load(false);
}

static void outage_restart_under_load(void **state)
{
	outage_under_load(true);
}

/*
 * Garbage in the cluster's keys: a foreign key and a path as set members, a
 * record with unparsable fields, one naming another node, one of another
 * cluster, a key that is not a hash, one with too many fields. The node
 * counts and logs them, lists none as a peer, and serves on, healthy;
 * cachenode-status lists them as ignored.
 */
static void bad_registry_data(void **state)
{
	static const char *const members[] = {"cachenode:other:node:x", "../../etc/passwd",
					      "garbage", "mismatch", "othercl", "wrongtype", "wide"};
	struct cn_redis r = {0};
	struct cn_daemon d;
	redisContext *c;
	redisReply *x;
	char out[16384], args[512];
	long long bad0, bad1;
	json_t *root, *js;
	int rc;

	assert_int_equal(cn_redis_start(&r, 0, NULL), 0);
	start_node(&d, r.url, "junk", NULL);
	assert_true(wait_key(&r, 0, "junk", d.node_id, 1, 3000) >= 0);
	c = rconn(&r, 0);
	for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++)
		assert_int_equal(cn_redis_cmd_int(c, "SADD cachenode:junk:nodes %s", members[i]), 1);
	x = redisCommand(c, "HSET cachenode:junk:node:garbage node_id garbage cluster junk address "
			    "nowhere transport carrier-pigeon l1_capacity lots l1_used -1 chunks "
			    "\x01\x02 hit_rate 7 health maybe version x started_at 0 updated_at 0 "
			    "heartbeat_ms 0");
	freeReplyObject(x);
	x = redisCommand(c, "HSET cachenode:junk:node:mismatch node_id %s cluster junk address "
			    "127.0.0.1:1 transport tcp l1_capacity 1 l1_used 0 chunks 0 hit_rate 0 "
			    "health healthy version x started_at 1 updated_at %llu heartbeat_ms 1000",
			 d.node_id, (unsigned long long)now_ms());
	freeReplyObject(x);
	x = redisCommand(c, "HSET cachenode:junk:node:othercl node_id othercl cluster other address "
			    "127.0.0.1:1 transport tcp l1_capacity 1 l1_used 0 chunks 0 hit_rate 0 "
			    "health healthy version x started_at 1 updated_at %llu heartbeat_ms 1000",
			 (unsigned long long)now_ms());
	freeReplyObject(x);
	x = redisCommand(c, "SET cachenode:junk:node:wrongtype hello");
	freeReplyObject(x);
	for (int i = 0; i < 100; i++)
		assert_true(cn_redis_cmd_int(c, "HSET cachenode:junk:node:wide f%d v", i) == 1);

	root = status(&d);
	bad0 = st_int(root, "components.registry.counters.bad_records");
	json_decref(root);
	/* every read (one a heartbeat) counts the seven again */
	for (int waited = 0;; waited += HB_MS) {
		usleep(HB_MS * 1000);
		root = status(&d);
		bad1 = st_int(root, "components.registry.counters.bad_records");
		if (bad1 - bad0 >= 7)
			break;
		json_decref(root);
		if (waited > 15 * HB_MS)
			fail_msg("bad_records moved by %lld in 16 heartbeats, want >= 7",
				 bad1 - bad0);
	}
	assert_true(st_true(root, "is_healthy"));
	reg_healthy(&d, root);
	assert_int_equal(json_array_size(at(root, "components.registry.peers")), 0);
	assert_int_equal(st_int(root, "components.registry.live_nodes"), 1);
	json_decref(root);
	assert_true(cn_daemon_log_contains(&d, "ignored registry entry"));
	{
		struct cn_client *cl = NULL;

		assert_int_equal(cn_client_connect(d.addr, NULL, &cl), 0);
		assert_int_equal(cn_client_ping(cl), 0);
		cn_client_close(&cl);
	}

	/* the tool: the one node live (exit 0), the seven listed as ignored, never a crash */
	snprintf(args, sizeof(args), "--redis %s --cluster junk --no-color", r.url);
	rc = status_tool(args, out, sizeof(out));
	if (rc != 0)
		fail_msg("cachenode-status exited %d:\n%s", rc, out);
	assert_non_null(strstr(out, "1 live, 0 dead"));
	assert_non_null(strstr(out, "'cachenode:other:node:x': set member is not a node id"));
	assert_non_null(strstr(out, "'garbage': field"));
	assert_non_null(strstr(out, "'mismatch': node_id"));
	assert_non_null(strstr(out, "'othercl': cluster 'other'"));
	assert_non_null(strstr(out, "'wrongtype': WRONGTYPE"));
	assert_non_null(strstr(out, "'wide': too many fields"));
	snprintf(args, sizeof(args), "--redis %s --cluster junk --json", r.url);
	assert_int_equal(status_tool(args, out, sizeof(out)), 0);
	js = json_loads(out, 0, NULL);
	assert_non_null(js);
	assert_int_equal(json_array_size(json_object_get(js, "ignored")), 7);
	assert_int_equal(json_array_size(json_object_get(js, "nodes")), 1);
	json_decref(js);

	/*
	 * The cluster's set itself replaced by a string: the node cannot write its
	 * membership, says so in its registry's health, and serves on, healthy;
	 * when the key is given back, the registry recovers by itself.
	 */
	x = redisCommand(c, "DEL cachenode:junk:nodes");
	freeReplyObject(x);
	x = redisCommand(c, "SET cachenode:junk:nodes oops");
	freeReplyObject(x);
	for (int waited = 0;; waited += 20) {
		root = status(&d);
		if (!st_true(root, "components.registry.is_healthy"))
			break;
		json_decref(root);
		if (waited > 10 * HB_MS)
			fail_msg("registry still healthy with the set key overwritten");
		usleep(20 * 1000);
	}
	assert_non_null(strstr(json_string_value(at(root, "components.registry.reason")),
			       "WRONGTYPE"));
	assert_true(st_true(root, "is_healthy"));
	json_decref(root);
	x = redisCommand(c, "DEL cachenode:junk:nodes");
	freeReplyObject(x);
	for (int waited = 0;; waited += 20) {
		root = status(&d);
		rc = st_true(root, "components.registry.is_healthy");
		json_decref(root);
		if (rc)
			break;
		if (waited > 10 * HB_MS)
			fail_msg("registry did not recover after the set key was removed");
		usleep(20 * 1000);
	}
	assert_int_equal(cn_redis_cmd_int(c, "SISMEMBER cachenode:junk:nodes %s", d.node_id), 1);

	redisFree(c);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 10000), 0);
	cn_redis_stop(&r, false);
}

/*
 * Redis not there at start: the node serves, healthy, its registry not; when
 * Redis starts, the record is there within 2 heartbeats. SIGTERM while Redis
 * hangs (SIGSTOP): the node still exits promptly, and says what it could not
 * do.
 */
static void redis_late_and_hung_shutdown(void **state)
{
	struct cn_redis r = {0};
	struct cn_daemon d;
	char url[128], *body;
	uint16_t port = cn_free_port();
	double t;
	long back;
	json_t *root;
	int rc;

	snprintf(url, sizeof(url), "redis://127.0.0.1:%u", port);
	start_node(&d, url, "late", NULL);
	usleep(2 * HB_MS * 1000);
	root = status(&d);
	assert_true(st_true(root, "is_healthy"));
	assert_false(st_true(root, "components.registry.is_healthy"));
	assert_non_null(strstr(json_string_value(at(root, "components.registry.reason")),
			       "cannot reach"));
	json_decref(root);
	assert_int_equal(http_get(&d, "/api/healthz", &body), 200);
	free(body);

	assert_int_equal(cn_redis_start(&r, port, NULL), 0);
	t = mono_s();
	back = wait_key(&r, 0, "late", d.node_id, 1, 5000);
	assert_true(back >= 0);
	back = (long)((mono_s() - t) * 1000);
	printf("# record written %ld ms after Redis started answering\n", back);
	assert_true(back <= 2 * HB_MS);
	for (int i = 0; i < 50; i++) {
		root = status(&d);
		rc = st_true(root, "components.registry.is_healthy");
		json_decref(root);
		if (rc)
			break;
		usleep(20 * 1000);
	}
	assert_true(rc);

	assert_int_equal(cn_pid_stop(r.pid, 5000), 0);
	t = mono_s();
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 5000), 0);
	t = mono_s() - t;
	printf("# SIGTERM with Redis hung: exited after %.2f s\n", t);
	assert_true(t < 3.0);
	assert_true(cn_daemon_log_contains(&d, "could not remove"));
	cn_redis_stop(&r, true);
}

/*
 * A set member whose record stays gone (a node killed and never back) is
 * removed after 100 heartbeats, by a live node, and counted; live members
 * stay. Heartbeat 50 ms: 5 s.
 */
static void dead_members_pruned(void **state)
{
	const char *fast[] = {"--heartbeat", "50ms", NULL};
	struct cn_redis r = {0};
	struct cn_daemon d;
	redisContext *c;
	json_t *root;
	double t0;

	assert_int_equal(cn_redis_start(&r, 0, NULL), 0);
	start_node(&d, r.url, "prune", fast);
	assert_true(wait_key(&r, 0, "prune", d.node_id, 1, 3000) >= 0);
	c = rconn(&r, 0);
	assert_int_equal(cn_redis_cmd_int(c, "SADD cachenode:prune:nodes gone-node"), 1);
	t0 = mono_s();
	while (cn_redis_cmd_int(c, "SISMEMBER cachenode:prune:nodes gone-node") == 1) {
		if (mono_s() - t0 > 15)
			fail_msg("gone-node still in the set after 15 s (100 heartbeats: 5 s)");
		usleep(100 * 1000);
	}
	printf("# gone-node pruned after %.1f s (100 heartbeats of 50 ms: 5 s)\n", mono_s() - t0);
	assert_true(mono_s() - t0 >= 4.5); /* not before its 100 heartbeats */
	assert_int_equal(cn_redis_cmd_int(c, "SISMEMBER cachenode:prune:nodes %s", d.node_id), 1);
	/* counted, then logged, once the node has the reply to its EVAL */
	wait_st_min(&d, "components.registry.counters.pruned", 1, 2000);
	root = status(&d);
	assert_int_equal(st_int(root, "components.registry.counters.pruned"), 1);
	assert_int_equal(st_int(root, "components.registry.counters.bad_records"), 0);
	json_decref(root);
	for (int waited = 0; !cn_daemon_log_contains(&d, "removed gone-node"); waited += 20) {
		if (waited > 2000)
			fail_msg("no \"removed gone-node\" in the log 2 s after the count");
		usleep(20 * 1000);
	}
	redisFree(c);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 10000), 0);
	cn_redis_stop(&r, false);
}

/* The tool's usage errors and an unreachable Redis; --watch repeats. */
static void status_tool_registry_mode(void **state)
{
	struct cn_redis r = {0};
	struct cn_daemon d;
	char args[512], out[65536];
	const char *p;
	int rounds = 0;

	assert_int_equal(status_tool("--redis http://x:1 --cluster a", out, sizeof(out)), 2);
	assert_int_equal(status_tool("--redis redis://127.0.0.1:1 --cluster 'a:b'", out, sizeof(out)),
			 2);
	assert_int_equal(status_tool("--redis redis://127.0.0.1:1 --url http://127.0.0.1:1/",
				     out, sizeof(out)), 2);
	snprintf(args, sizeof(args), "--redis redis://127.0.0.1:%u --cluster a", cn_free_port());
	assert_int_equal(status_tool(args, out, sizeof(out)), 3);
	assert_non_null(strstr(out, "cannot connect"));

	assert_int_equal(cn_redis_start(&r, 0, NULL), 0);
	snprintf(args, sizeof(args), "--redis %s --cluster empty", r.url);
	assert_int_equal(status_tool(args, out, sizeof(out)), 1); /* nobody registered */
	assert_non_null(strstr(out, "no node is registered"));
	start_node(&d, r.url, "watch", NULL);
	assert_true(wait_key(&r, 0, "watch", d.node_id, 1, 3000) >= 0);
	snprintf(args, sizeof(args), "--redis %s --cluster watch --watch --interval 0.2 --count 3",
		 r.url);
	assert_int_equal(status_tool(args, out, sizeof(out)), 0);
	for (p = out; (p = strstr(p, "cluster watch on ")) != NULL; p++)
		rounds++;
	assert_int_equal(rounds, 3);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 10000), 0);
	cn_redis_stop(&r, false);
}

/* Wait up to @ms until @d's L2 tier places keys on itself and @members other live nodes. */
static void wait_l2_members(const struct cn_daemon *d, long long members, int ms)
{
	long long got = -1;

	for (int waited = 0; waited <= ms; waited += 50) {
		json_t *root = status(d);

		got = st_int(root, "components.l2.members");
		if (got == members && st_true(root, "components.l2.owner") &&
		    strcmp(json_string_value(at(root, "components.l2.source")), "registry") == 0) {
			json_decref(root);
			return;
		}
		json_decref(root);
		usleep(50 * 1000);
	}
	fail_msg("%s: L2 has %lld member peers from the registry after %d ms, want %lld",
		 d->node_id, got, ms, members);
}

/*
 * --redis without --peer: the L2 tier takes its peers from the registry's live records.
 * Three nodes find each other; chunks stored through A come back byte-exact through C
 * (served from whichever node owns each key, written through by A); after B is killed
 * and the registry drops it, C places keys on A and C only, and every request still
 * succeeds or misses, never fails.
 */
static void l2_peers_from_registry(void **state)
{
	enum { N = 24, SZ = 64 << 10 };
	struct cn_redis r = {0};
	struct cn_daemon n[3];
	struct cn_client *ca = NULL, *cc = NULL;
	struct cn_key keys[N];
	uint8_t *src = malloc(SZ), *dst = malloc(SZ);
	unsigned fetched = 0;
	json_t *root;

	(void)state;
	assert_non_null(src);
	assert_non_null(dst);
	assert_int_equal(cn_redis_start(&r, 0, NULL), 0);
	for (int i = 0; i < 3; i++)
		start_node(&n[i], r.url, "l2reg", NULL);
	for (int i = 0; i < 3; i++)
		wait_l2_members(&n[i], 2, 20 * HB_MS);

	assert_int_equal(cn_client_connect(n[0].addr, NULL, &ca), 0);
	assert_int_equal(cn_client_connect(n[2].addr, NULL, &cc), 0);
	for (unsigned i = 0; i < N; i++) {
		char text[32];

		snprintf(text, sizeof(text), "l2reg-%u", i);
		assert_int_equal(cn_key_parse(text, &keys[i]), 0);
		memset(src, (int)(i + 1), SZ);
		assert_int_equal(cn_client_store(ca, &keys[i], src, SZ), 0);
	}
	/* write-through is asynchronous: each key shows up on C within a few heartbeats */
	for (unsigned i = 0; i < N; i++) {
		uint32_t len = 0;
		int rc = -ENOENT;

		for (int waited = 0; rc == -ENOENT && waited <= 20 * HB_MS; waited += 20) {
			rc = cn_client_retrieve(cc, &keys[i], dst, SZ, &len);
			if (rc == -ENOENT)
				usleep(20 * 1000);
		}
		assert_int_equal(rc, 0);
		assert_int_equal(len, SZ);
		memset(src, (int)(i + 1), SZ);
		assert_memory_equal(dst, src, SZ);
	}
	root = status(&n[2]);
	fetched = (unsigned)st_int(root, "components.l2.counters.fills");
	json_decref(root);
	/* with 3 owners, C owns about a third: the rest came from A or B */
	printf("# C filled %u of %u chunks from its peers\n", fetched, N);
	assert_true(fetched >= 1);

	/* B dies: the registry drops it, C's placement follows; requests miss or hit, never fail */
	kill(n[1].pid, SIGKILL);
	wait_l2_members(&n[2], 1, 20 * HB_MS);
	for (unsigned i = 0; i < N; i++) {
		uint32_t len = 0;
		int rc = cn_client_retrieve(cc, &keys[i], dst, SZ, &len);

		assert_true(rc == 0 || rc == -ENOENT);
	}
	assert_int_equal(cn_client_ping(cc), 0);
	cn_client_close(&ca);
	cn_client_close(&cc);
	cn_daemon_stop(&n[1], SIGKILL, 1000);
	assert_int_equal(cn_daemon_stop(&n[0], SIGTERM, 10000), 0);
	assert_int_equal(cn_daemon_stop(&n[2], SIGTERM, 10000), 0);
	cn_redis_stop(&r, false);
	free(src);
	free(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(standalone_node),
		cmocka_unit_test(record_events_and_health),
		cmocka_unit_test(sigterm_leaves_at_once),
		cmocka_unit_test(auth_and_db),
		cmocka_unit_test(sigkill_detected_and_rejoin),
		cmocka_unit_test(bad_registry_data),
		cmocka_unit_test(redis_late_and_hung_shutdown),
		cmocka_unit_test(dead_members_pruned),
		cmocka_unit_test(status_tool_registry_mode),
		cmocka_unit_test(l2_peers_from_registry),
		cmocka_unit_test(outage_sigstop_under_load),
		cmocka_unit_test(outage_restart_under_load),
	};

	if (!cn_have_redis()) {
		printf("skipped: redis-server is not installed (Debian package redis-server)\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	if (getenv("CN_TEST_FILTER") != NULL) /* e.g. CN_TEST_FILTER='outage*' */
		cmocka_set_test_filter(getenv("CN_TEST_FILTER"));
	return cmocka_run_group_tests_name("registry", tests, NULL, NULL);
}
