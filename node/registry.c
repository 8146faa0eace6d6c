/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cluster registry client: one control-plane thread, one synchronous
 * hiredis connection (contract in cn_registry.h).
 *
 * The thread's loop, each pass:
 *   not connected and the backoff has passed -> connect (AUTH, SELECT,
 *     CLIENT SETNAME pipelined; one round trip); on failure wait
 *     min(base << failures, heartbeat) * [0.5, 1) (base: heartbeat/8, 10 ms
 *     at least), so a Redis that comes back is found within a heartbeat and
 *     a thousand nodes do not reconnect in lock step;
 *   connected and a heartbeat is due -> write the record (one round trip),
 *     publish events, read the peers (two round trips);
 *   connected and a peer's record is due to expire before the next
 *     heartbeat -> read the peers again at that moment, so a dead peer leaves
 *     the snapshot when its key expires, not up to a heartbeat later;
 *   then sleep on a condition variable until the next of those, or stop.
 * Any failed command drops the connection (hiredis cannot resynchronise a
 * pipeline after a timeout) and goes back to the first step.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <rte_log.h>

#include "cn_registry.h"

#define LOG(level, fmt, ...) RTE_LOG(level, USER1, "cachenode: registry: " fmt "\n", ##__VA_ARGS__)

/* How often a repeated failure or bad entry is logged again. */
#define LOG_EVERY_MS 10000

const struct cn_metric_desc cn_reg_metric_desc[] = {CN_REG_METRICS(CN_METRIC_DESC)};
const unsigned cn_reg_metric_count = 0 CN_REG_METRICS(CN_METRIC_COUNT);

#define FIELD_ONE(n, t, sz, req, h) +1
#define N_FIELDS		    (0 CN_REG_FIELDS(FIELD_ONE))

/* A set member whose record is gone, and since when (monotonic ms). */
struct missing {
	char id[CN_REG_NAME_MAX + 1];
	uint64_t since;
	bool seen; /* in this read */
};

struct cn_reg {
	char cluster[CN_REG_NAME_MAX + 1];
	char node_id[CN_REG_NAME_MAX + 1];
	struct cn_reg_url url;
	char key_node[160];
	char key_nodes[96];
	char channel[96];
	unsigned hb_ms, tmo_ms;
	cn_reg_fill_fn fill;
	void *fill_arg;

	pthread_t thread;
	bool started;

	/* the registry thread's own */
	redisContext *ctx;
	char err[192];		   /* the failure being handled */
	unsigned fails;		   /* consecutive failed connection attempts */
	bool was_connected;	   /* for reconnects */
	bool joined;		   /* a record of this process was written */
	int last_health;	   /* published: -1 none yet, 0, 1 */
	struct cn_reg_record last; /* the last record written (for leave) */
	uint64_t down_since;	   /* monotonic ms of the first failure of an outage; 0 = up */
	uint64_t fail_logged;	   /* monotonic ms a failure was last logged */
	uint64_t bad_logged;	   /* monotonic ms bad entries were last logged */
	uint64_t bad_unlogged;	   /* bad entries since then */
	struct missing *missing;
	size_t nmissing, capmissing;
	unsigned seed;

	/* shared: under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	bool attempted;		/* a connection was tried */
	bool connected;
	uint64_t last_ok;	/* monotonic ms of the last heartbeat written; 0 = never */
	char last_error[192];
	struct cn_reg_peers *peers;

	struct cn_reg_stats st; /* written by the registry thread only */
};

/* The snapshot of a registry that has none (never written, never freed). */
static const struct cn_reg_peers empty_peers = {0};

/* ---- time ---- */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timeval ms_tv(unsigned ms)
{
	return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

/* ---- snapshot references ---- */

static void peers_put(struct cn_reg_peers *p)
{
	if (p != NULL && p != &empty_peers && __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(p);
}

const struct cn_reg_peers *cn_reg_peers(struct cn_reg *r)
{
	struct cn_reg_peers *p;

	if (r == NULL)
		return &empty_peers;
	pthread_mutex_lock(&r->mu);
	p = r->peers;
	if (p != NULL)
		__atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&r->mu);
	return p != NULL ? p : &empty_peers;
}

void cn_reg_peers_put(const struct cn_reg_peers **p)
{
	if (p == NULL || *p == NULL)
		return;
	peers_put((struct cn_reg_peers *)*p);
	*p = NULL;
}

/* Publish @np as the current snapshot (the registry's reference moves to it). */
static void peers_swap(struct cn_reg *r, struct cn_reg_peers *np)
{
	struct cn_reg_peers *old;

	np->refs = 1;
	pthread_mutex_lock(&r->mu);
	old = r->peers;
	r->peers = np;
	pthread_mutex_unlock(&r->mu);
	peers_put(old);
}

/* ---- state shared with readers ---- */

static void set_state(struct cn_reg *r, bool connected, bool beat_ok, const char *err)
{
	pthread_mutex_lock(&r->mu);
	r->attempted = true;
	r->connected = connected;
	if (beat_ok)
		r->last_ok = mono_ms();
	if (err != NULL)
		snprintf(r->last_error, sizeof(r->last_error), "%s", err);
	pthread_mutex_unlock(&r->mu);
}

static bool stopping(struct cn_reg *r)
{
	bool s;

	pthread_mutex_lock(&r->mu);
	s = r->stop;
	pthread_mutex_unlock(&r->mu);
	return s;
}

void cn_reg_get_info(struct cn_reg *r, struct cn_reg_info *out)
{
	uint64_t now = mono_ms();
	const struct cn_reg_peers *p;
	bool attempted;

	memset(out, 0, sizeof(*out));
	snprintf(out->redis, sizeof(out->redis), "%s", r->url.redacted);
	snprintf(out->cluster, sizeof(out->cluster), "%s", r->cluster);
	snprintf(out->node_key, sizeof(out->node_key), "%s", r->key_node);
	out->heartbeat_ms = r->hb_ms;
	out->timeout_ms = r->tmo_ms;
	out->auth = r->url.password[0] != '\0';
	cn_metrics_sum(&r->st, 0, 1, cn_reg_metric_count, (uint64_t *)&out->st);

	pthread_mutex_lock(&r->mu);
	out->connected = r->connected;
	out->last_ok_age_ms = r->last_ok ? (int64_t)(now - r->last_ok) : -1;
	snprintf(out->last_error, sizeof(out->last_error), "%s", r->last_error);
	attempted = r->attempted;
	pthread_mutex_unlock(&r->mu);

	p = cn_reg_peers(r);
	out->live_nodes = p->n;
	cn_reg_peers_put(&p);

	out->healthy = out->connected && out->last_ok_age_ms >= 0 &&
		       out->last_ok_age_ms <= 2 * (int64_t)r->hb_ms;
	if (out->healthy)
		snprintf(out->reason, sizeof(out->reason), "ok");
	else if (!attempted)
		snprintf(out->reason, sizeof(out->reason), "connecting to %s", out->redis);
	else if (!out->connected && out->last_ok_age_ms < 0)
		snprintf(out->reason, sizeof(out->reason), "cannot reach %s: %s; no heartbeat written yet",
			 out->redis, out->last_error);
	else if (!out->connected)
		snprintf(out->reason, sizeof(out->reason),
			 "cannot reach %s: %s; last heartbeat written %" PRId64 " ms ago", out->redis,
			 out->last_error, out->last_ok_age_ms);
	else if (out->last_ok_age_ms < 0)
		snprintf(out->reason, sizeof(out->reason), "connected; first heartbeat not written yet");
	else
		snprintf(out->reason, sizeof(out->reason),
			 "no heartbeat written for %" PRId64 " ms (Redis slow?)", out->last_ok_age_ms);
}

/* ---- connection ---- */

/* Why the last hiredis call on @c failed, in words, into r->err. */
static void ctx_error(struct cn_reg *r, redisContext *c, const char *what)
{
	int e = errno;

	if (c != NULL && c->err == REDIS_ERR_IO && (e == EAGAIN || e == EWOULDBLOCK))
		snprintf(r->err, sizeof(r->err), "%s: timed out after %u ms", what, r->tmo_ms);
	else if (c != NULL && c->err == REDIS_ERR_EOF)
		snprintf(r->err, sizeof(r->err), "%s: connection closed by Redis", what);
	else
		snprintf(r->err, sizeof(r->err), "%s: %s", what, c ? c->errstr : "out of memory");
}

static void drop(struct cn_reg *r)
{
	if (r->ctx != NULL) {
		redisFree(r->ctx);
		r->ctx = NULL;
	}
}

/*
 * Read @n pipelined replies into @rep (each NULL or owned by the caller).
 * 0, or -EIO with r->err set (an error reply is not a failure here).
 */
static int replies(struct cn_reg *r, redisReply **rep, int n, const char *what)
{
	for (int i = 0; i < n; i++)
		rep[i] = NULL;
	for (int i = 0; i < n; i++) {
		void *x = NULL;

		if (redisGetReply(r->ctx, &x) != REDIS_OK) {
			ctx_error(r, r->ctx, what);
			for (int j = 0; j < i; j++)
				freeReplyObject(rep[j]);
			return -EIO;
		}
		rep[i] = x;
	}
	return 0;
}

static void free_replies(redisReply **rep, int n)
{
	for (int i = 0; i < n; i++)
		if (rep[i] != NULL)
			freeReplyObject(rep[i]);
}

/* An error reply (or an unexpected type) as the failure being handled. */
static int bad_reply(struct cn_reg *r, const redisReply *x, const char *what)
{
	if (x != NULL && x->type == REDIS_REPLY_ERROR)
		snprintf(r->err, sizeof(r->err), "%s: %.*s", what, (int)x->len, x->str);
	else
		snprintf(r->err, sizeof(r->err), "%s: unexpected reply", what);
	return -EPROTO;
}

/* Connect, authenticate, select the db and name the connection; 0 or -errno with r->err. */
static int reg_connect(struct cn_reg *r, unsigned tmo_ms)
{
	redisReply *rep[3];
	char name[160];
	int n = 0, rc = 0;

	r->ctx = redisConnectWithTimeout(r->url.host, r->url.port, ms_tv(tmo_ms));
	if (r->ctx == NULL || r->ctx->err) {
		ctx_error(r, r->ctx, "connect");
		drop(r);
		return -ECONNREFUSED;
	}
	redisSetTimeout(r->ctx, ms_tv(tmo_ms));
	redisEnableKeepAlive(r->ctx);
	if (r->url.password[0] != '\0') {
		if (r->url.user[0] != '\0')
			redisAppendCommand(r->ctx, "AUTH %s %s", r->url.user, r->url.password);
		else
			redisAppendCommand(r->ctx, "AUTH %s", r->url.password);
		n++;
	}
	if (r->url.db != 0) {
		redisAppendCommand(r->ctx, "SELECT %u", r->url.db);
		n++;
	}
	snprintf(name, sizeof(name), "cachenode:%s:%s", r->cluster, r->node_id);
	redisAppendCommand(r->ctx, "CLIENT SETNAME %s", name);
	n++;
	if (replies(r, rep, n, "connect") < 0) {
		drop(r);
		return -EIO;
	}
	for (int i = 0; i < n && rc == 0; i++) {
		const char *what = i == n - 1 ? "CLIENT SETNAME"
				   : i == 0 && r->url.password[0] ? "AUTH"
								   : "SELECT";
		if (rep[i]->type != REDIS_REPLY_STATUS)
			rc = bad_reply(r, rep[i], what);
	}
	free_replies(rep, n);
	if (rc < 0)
		drop(r);
	return rc;
}

/* Delay before the next connection attempt, after r->fails failures. */
static uint64_t backoff_ms(struct cn_reg *r)
{
	uint64_t base = r->hb_ms / 8 > 10 ? r->hb_ms / 8 : 10, d = base;
	unsigned f = r->fails > 1 ? r->fails - 1 : 0;

	while (f-- > 0 && d < r->hb_ms)
		d *= 2;
	if (d > r->hb_ms)
		d = r->hb_ms;
	/* jitter: [d/2, d) */
	return d / 2 + (uint64_t)rand_r(&r->seed) % (d / 2 + 1);
}

/* A failure of the connection or of a command: drop, remember, log (rate-limited). */
static void failed(struct cn_reg *r, bool counted_as_connect)
{
	uint64_t now = mono_ms();

	drop(r);
	if (counted_as_connect)
		CN_STAT_INC(&r->st, connect_errors);
	r->fails++;
	set_state(r, false, false, r->err);
	if (r->down_since == 0) {
		r->down_since = now;
		r->fail_logged = now;
		LOG(WARNING, "%s: %s; the node serves on, retrying every %u ms at most", r->url.redacted,
		    r->err, r->hb_ms);
	} else if (now - r->fail_logged >= LOG_EVERY_MS) {
		r->fail_logged = now;
		LOG(WARNING, "%s still unreachable after %" PRIu64 " s: %s", r->url.redacted,
		    (now - r->down_since) / 1000, r->err);
	}
}

static void connected(struct cn_reg *r)
{
	CN_STAT_INC(&r->st, connects);
	if (r->was_connected)
		CN_STAT_INC(&r->st, reconnects);
	if (r->down_since != 0)
		LOG(NOTICE, "%s reachable again after %" PRIu64 " ms; resyncing", r->url.redacted,
		    mono_ms() - r->down_since);
	else
		LOG(NOTICE, "connected to %s: cluster %s, record %s, heartbeat %u ms",
		    r->url.redacted, r->cluster, r->key_node, r->hb_ms);
	r->was_connected = true;
	r->fails = 0;
	r->down_since = 0;
	set_state(r, true, false, NULL);
}

/* ---- heartbeat and events ---- */

/* PUBLISH one event (JSON) on the cluster's channel; 0 or -errno with r->err. */
static int publish(struct cn_reg *r, const char *event, const struct cn_reg_record *rec)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "event", event, "cluster",
			      r->cluster, "node_id", r->node_id, "address", rec->address, "health",
			      rec->health ? "healthy" : "unhealthy", "reason", rec->reason, "at",
			      (json_int_t)wall_ms());
	redisReply *x;
	char *text;
	int rc = 0;

	if (o != NULL && strcmp(event, "join") == 0) {
		json_object_set_new(o, "transport", json_string(rec->transport));
		json_object_set_new(o, "version", json_string(rec->version));
		json_object_set_new(o, "started_at", json_integer((json_int_t)rec->started_at));
	}
	text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (text == NULL) {
		snprintf(r->err, sizeof(r->err), "PUBLISH: out of memory");
		return -ENOMEM;
	}
	x = redisCommand(r->ctx, "PUBLISH %s %s", r->channel, text);
	free(text);
	if (x == NULL) {
		ctx_error(r, r->ctx, "PUBLISH");
		return -EIO;
	}
	if (x->type != REDIS_REPLY_INTEGER)
		rc = bad_reply(r, x, "PUBLISH");
	freeReplyObject(x);
	if (rc == 0)
		CN_STAT_INC(&r->st, events_published);
	return rc;
}

/*
 * Write the record: MULTI, HGET updated_at (was it still there, and live?),
 * HSET every field, PEXPIRE 3 heartbeats, SADD the id to the set, EXEC: one
 * round trip. Then join (first record of this process, or readers had stopped
 * seeing the old one as live: it expired, Redis lost it, or it is an old
 * heartbeat a hung Redis ran late) and health-change events. 0, 1 (skipped: no figures), or -errno with r->err.
 */
static int heartbeat(struct cn_reg *r)
{
	const char *argv[2 + 2 * N_FIELDS], *names[N_FIELDS], *vals[N_FIELDS];
	size_t argl[2 + 2 * N_FIELDS];
	char buf[4096];
	struct cn_reg_record rec;
	redisReply *rep[6];
	int nf, rc = 0;
	bool was_live;

	memset(&rec, 0, sizeof(rec));
	if (r->fill(r->fill_arg, &rec) < 0)
		return 1;
	snprintf(rec.node_id, sizeof(rec.node_id), "%s", r->node_id);
	snprintf(rec.cluster, sizeof(rec.cluster), "%s", r->cluster);
	rec.heartbeat_ms = r->hb_ms;
	rec.updated_at = wall_ms();
	nf = cn_reg_record_format(&rec, names, vals, buf, sizeof(buf));
	if (nf < 0)
		return 1; /* cannot happen: the fields' sizes are bounded */
	argv[0] = "HSET";
	argv[1] = r->key_node;
	for (int i = 0; i < nf; i++) {
		argv[2 + 2 * i] = names[i];
		argv[3 + 2 * i] = vals[i];
	}
	for (int i = 0; i < 2 + 2 * nf; i++)
		argl[i] = strlen(argv[i]);
	redisAppendCommand(r->ctx, "MULTI");
	redisAppendCommand(r->ctx, "HGET %s updated_at", r->key_node);
	redisAppendCommandArgv(r->ctx, 2 + 2 * nf, argv, argl);
	redisAppendCommand(r->ctx, "PEXPIRE %s %u", r->key_node, CN_REG_TTL_BEATS * r->hb_ms);
	redisAppendCommand(r->ctx, "SADD %s %s", r->key_nodes, r->node_id);
	redisAppendCommand(r->ctx, "EXEC");
	if (replies(r, rep, 6, "heartbeat") < 0)
		return -EIO;
	for (int i = 0; i < 5 && rc == 0; i++)
		if (rep[i]->type != REDIS_REPLY_STATUS)
			rc = bad_reply(r, rep[i], i == 0 ? "MULTI" : "heartbeat");
	if (rc == 0 && (rep[5]->type != REDIS_REPLY_ARRAY || rep[5]->elements != 4))
		rc = bad_reply(r, rep[5], "EXEC");
	/* a command of the transaction refused (WRONGTYPE: someone else's key there) */
	for (size_t i = 0; rc == 0 && i < 4; i++)
		if (rep[5]->element[i]->type == REDIS_REPLY_ERROR)
			rc = bad_reply(r, rep[5]->element[i], "heartbeat");
	was_live = false;
	if (rc == 0 && rep[5]->element[0]->type == REDIS_REPLY_STRING) {
		uint64_t prev = strtoull(rep[5]->element[0]->str, NULL, 10);

		was_live = prev >= rec.updated_at ||
			   rec.updated_at - prev < (uint64_t)CN_REG_TTL_BEATS * r->hb_ms;
	}
	free_replies(rep, 6);
	if (rc < 0)
		return rc;
	CN_STAT_INC(&r->st, heartbeats_ok);
	set_state(r, true, true, NULL);
	r->last = rec;

	if (!r->joined || !was_live) {
		rc = publish(r, "join", &rec);
		if (rc < 0)
			return rc;
		if (!r->joined)
			LOG(NOTICE, "joined cluster %s as %s (%s)", r->cluster, r->node_id, rec.address);
		else
			LOG(NOTICE, "record %s had expired: joined again", r->key_node);
		r->joined = true;
	}
	if (r->last_health >= 0 && r->last_health != (int)rec.health) {
		rc = publish(r, "health", &rec);
		if (rc < 0)
			return rc;
	}
	r->last_health = rec.health;
	return 0;
}

/* ---- reading the cluster ---- */

/* A bad registry entry: counted every read, logged at most every LOG_EVERY_MS. */
static void bad_entry(struct cn_reg *r, const char *member, const char *why)
{
	uint64_t now = mono_ms();

	CN_STAT_INC(&r->st, bad_records);
	r->bad_unlogged++;
	if (r->bad_logged == 0 || now - r->bad_logged >= LOG_EVERY_MS) {
		LOG(WARNING, "ignored registry entry '%.80s' of cluster %s: %s (%" PRIu64
			     " ignored since the last such message)",
		    member, r->cluster, why, r->bad_unlogged);
		r->bad_logged = now;
		r->bad_unlogged = 0;
	}
}

static int peer_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cn_reg_peer *)a)->rec.node_id,
		      ((const struct cn_reg_peer *)b)->rec.node_id);
}

/* What placement cares about changed between two records of one node. */
static bool peer_changed(const struct cn_reg_record *a, const struct cn_reg_record *b)
{
	return strcmp(a->address, b->address) != 0 || strcmp(a->transport, b->transport) != 0 ||
	       strcmp(a->rdma_dev, b->rdma_dev) != 0 || strcmp(a->gid, b->gid) != 0 ||
	       a->health != b->health;
}

/*
 * Count and log who joined and left between @old and @np (both sorted);
 * true if membership or a peer's placement figures changed, *members if
 * membership did.
 */
static bool peers_diff(struct cn_reg *r, const struct cn_reg_peers *old,
		       const struct cn_reg_peers *np, bool *members)
{
	unsigned i = 0, j = 0;
	bool changed = false;

	*members = false;

	while (i < old->n || j < np->n) {
		int c = i == old->n ? 1
			: j == np->n ? -1
				     : strcmp(old->peer[i].rec.node_id, np->peer[j].rec.node_id);

		if (c < 0) {
			if (!old->peer[i].self) {
				CN_STAT_INC(&r->st, peers_lost);
				LOG(NOTICE, "peer %s (%s) left the cluster", old->peer[i].rec.node_id,
				    old->peer[i].rec.address);
			}
			changed = *members = true;
			i++;
		} else if (c > 0) {
			if (!np->peer[j].self) {
				CN_STAT_INC(&r->st, peers_joined);
				LOG(NOTICE, "peer %s (%s, %s) joined", np->peer[j].rec.node_id,
				    np->peer[j].rec.address, np->peer[j].rec.transport);
			}
			changed = *members = true;
			j++;
		} else {
			changed |= peer_changed(&old->peer[i].rec, &np->peer[j].rec);
			i++;
			j++;
		}
	}
	return changed;
}

static struct missing *missing_find(struct cn_reg *r, const char *id)
{
	for (size_t i = 0; i < r->nmissing; i++)
		if (strcmp(r->missing[i].id, id) == 0)
			return &r->missing[i];
	return NULL;
}

/*
 * @id is in the set but has no record. Remember since when; once that is
 * CN_REG_PRUNE_BEATS heartbeats, remove it from the set, atomically and only
 * if the record is still gone (a node that came back keeps its membership).
 */
static int missing_member(struct cn_reg *r, const char *id, uint64_t now)
{
	static const char script[] =
		"if redis.call('EXISTS', KEYS[1]) == 0 then "
		"return redis.call('SREM', KEYS[2], ARGV[1]) end return 0";
	struct missing *m = missing_find(r, id);
	char key[160];
	redisReply *x;

	if (m == NULL) {
		if (r->nmissing == r->capmissing) {
			size_t cap = r->capmissing ? 2 * r->capmissing : 16;
			struct missing *nm = realloc(r->missing, cap * sizeof(*nm));

			if (nm == NULL)
				return 0; /* pruning is housekeeping: try again next read */
			r->missing = nm;
			r->capmissing = cap;
		}
		m = &r->missing[r->nmissing++];
		snprintf(m->id, sizeof(m->id), "%s", id);
		m->since = now;
	}
	m->seen = true;
	if (now - m->since < (uint64_t)CN_REG_PRUNE_BEATS * r->hb_ms)
		return 0;
	cn_reg_key_node(key, sizeof(key), r->cluster, id);
	x = redisCommand(r->ctx, "EVAL %s 2 %s %s %s", script, key, r->key_nodes, id);
	if (x == NULL) {
		ctx_error(r, r->ctx, "EVAL (prune)");
		return -EIO;
	}
	if (x->type == REDIS_REPLY_INTEGER && x->integer == 1) {
		CN_STAT_INC(&r->st, pruned);
		LOG(NOTICE, "removed %s from %s: no record for %u heartbeats", id, r->key_nodes,
		    CN_REG_PRUNE_BEATS);
	}
	freeReplyObject(x);
	m->seen = false; /* forget it: pruned, or back */
	return 0;
}

/* Drop tracked members not missing in this read. */
static void missing_sweep(struct cn_reg *r)
{
	size_t o = 0;

	for (size_t i = 0; i < r->nmissing; i++) {
		if (r->missing[i].seen) {
			r->missing[i].seen = false;
			r->missing[o++] = r->missing[i];
		}
	}
	r->nmissing = o;
}

/* Redis TIME as unix ms; 0 if the reply is not TIME's. */
static uint64_t time_reply_ms(const redisReply *x)
{
	if (x->type != REDIS_REPLY_ARRAY || x->elements != 2 ||
	    x->element[0]->type != REDIS_REPLY_STRING || x->element[1]->type != REDIS_REPLY_STRING)
		return 0;
	return strtoull(x->element[0]->str, NULL, 10) * 1000 +
	       strtoull(x->element[1]->str, NULL, 10) / 1000;
}

/* One HGETALL reply into @p; 1 = no record, 0 = decoded (live or not), -1 = bad (counted). */
static int decode(struct cn_reg *r, const char *id, const redisReply *h, struct cn_reg_peer *p)
{
	const char *names[CN_REG_MAX_FIELDS], *vals[CN_REG_MAX_FIELDS];
	size_t lens[CN_REG_MAX_FIELDS], nf;
	char why[192];

	if (h->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "%.*s", (int)h->len, h->str);
		bad_entry(r, id, why);
		return -1;
	}
	if (h->type != REDIS_REPLY_ARRAY || h->elements % 2 != 0) {
		bad_entry(r, id, "not a hash");
		return -1;
	}
	if (h->elements == 0)
		return 1;
	nf = h->elements / 2;
	if (nf > CN_REG_MAX_FIELDS) {
		bad_entry(r, id, "too many fields");
		return -1;
	}
	for (size_t i = 0; i < nf; i++) {
		const redisReply *k = h->element[2 * i], *v = h->element[2 * i + 1];

		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
			bad_entry(r, id, "a field that is not a string");
			return -1;
		}
		names[i] = k->str;
		vals[i] = v->str;
		lens[i] = v->len;
	}
	if (cn_reg_record_parse(names, vals, lens, nf, r->cluster, id, &p->rec, why,
				sizeof(why)) < 0) {
		bad_entry(r, id, why);
		return -1;
	}
	return 0;
}

/*
 * Read every record of the cluster (SMEMBERS + TIME, then HGETALL + PTTL per
 * member, pipelined) into a new snapshot of the live ones. *next_check: the
 * monotonic ms when the first live peer's record expires (0 = none), so the
 * loop can read again at that moment. 0 or -errno with r->err.
 */
static int read_peers(struct cn_reg *r, uint64_t *next_check)
{
	redisReply *rep[2], **hr = NULL;
	struct cn_reg_peers *np = NULL;
	const struct cn_reg_peers *old;
	const char **ids = NULL;
	uint64_t now_ms, now = mono_ms();
	size_t nm = 0, nv = 0;
	bool changed, members;
	int rc = 0;

	*next_check = 0;
	redisAppendCommand(r->ctx, "SMEMBERS %s", r->key_nodes);
	redisAppendCommand(r->ctx, "TIME");
	if (replies(r, rep, 2, "SMEMBERS") < 0)
		return -EIO;
	now_ms = time_reply_ms(rep[1]);
	if (now_ms == 0) {
		rc = bad_reply(r, rep[1], "TIME");
		goto out;
	}
	if (rep[0]->type == REDIS_REPLY_ARRAY) {
		nm = rep[0]->elements;
	} else {
		/* the set's key holds something else: nobody is registered */
		bad_entry(r, r->key_nodes, "not a set");
	}
	ids = calloc(nm ? nm : 1, sizeof(*ids));
	np = calloc(1, sizeof(*np) + (nm ? nm : 1) * sizeof(np->peer[0]));
	if (ids == NULL || np == NULL) {
		snprintf(r->err, sizeof(r->err), "read: out of memory");
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nm; i++) {
		const redisReply *m = rep[0]->element[i];
		char key[160];

		if (m->type != REDIS_REPLY_STRING || strlen(m->str) != m->len ||
		    !cn_reg_name_valid(m->str)) {
			bad_entry(r, m->type == REDIS_REPLY_STRING ? m->str : "?",
				  "set member is not a node id (a foreign key?)");
			continue;
		}
		if (nv == CN_REG_MAX_NODES) {
			bad_entry(r, m->str, "over the limit of nodes read");
			continue;
		}
		ids[nv++] = m->str;
		cn_reg_key_node(key, sizeof(key), r->cluster, m->str);
		redisAppendCommand(r->ctx, "HGETALL %s", key);
		redisAppendCommand(r->ctx, "PTTL %s", key);
	}
	if (nv > 0) {
		hr = calloc(2 * nv, sizeof(*hr));
		if (hr == NULL) {
			/* the replies are queued: the connection cannot be reused */
			snprintf(r->err, sizeof(r->err), "read: out of memory");
			rc = -ENOMEM;
			goto out;
		}
		if (replies(r, hr, (int)(2 * nv), "HGETALL") < 0) {
			free(hr);
			hr = NULL;
			rc = -EIO;
			goto out;
		}
	}
	for (size_t i = 0; i < nv; i++) {
		struct cn_reg_peer *p = &np->peer[np->n];
		int d = decode(r, ids[i], hr[2 * i], p);

		if (d == 1) {
			rc = missing_member(r, ids[i], now);
			if (rc < 0)
				goto out;
			continue;
		}
		if (d < 0 || !cn_reg_record_live(&p->rec, now_ms))
			continue; /* bad (counted) or stale: not live */
		p->age_ms = cn_reg_record_age_ms(&p->rec, now_ms);
		p->ttl_ms = hr[2 * i + 1]->type == REDIS_REPLY_INTEGER ? hr[2 * i + 1]->integer : -1;
		p->self = strcmp(p->rec.node_id, r->node_id) == 0;
		if (!p->self) {
			/* when this peer stops being live, unless it writes again */
			uint64_t left = CN_REG_TTL_BEATS * p->rec.heartbeat_ms - p->age_ms;

			if (p->ttl_ms >= 0 && (uint64_t)p->ttl_ms < left)
				left = (uint64_t)p->ttl_ms;
			/* TIME and updated_at are whole ms: +1 so the age is then >= the limit */
			if (*next_check == 0 || now + left + 1 < *next_check)
				*next_check = now + left + 1;
		}
		np->n++;
	}
	missing_sweep(r);
	qsort(np->peer, np->n, sizeof(np->peer[0]), peer_cmp);
	np->read_at_ms = now_ms;
	old = cn_reg_peers(r);
	changed = peers_diff(r, old, np, &members) || old->read_at_ms == 0;
	np->generation = old->generation + changed;
	np->changed_at_ms = members ? wall_ms() : old->changed_at_ms;
	{
		unsigned others = 0;

		for (unsigned i = 0; i < np->n; i++)
			others += !np->peer[i].self;
		CN_STAT_SET(&r->st, peers_seen, others);
	}
	cn_reg_peers_put(&old);
	peers_swap(r, np);
	np = NULL;
	CN_STAT_INC(&r->st, reads_ok);
out:
	if (hr != NULL) {
		free_replies(hr, (int)(2 * nv));
		free(hr);
	}
	free(np);
	free(ids);
	free_replies(rep, 2);
	return rc;
}

/* ---- leave ---- */

/* DEL the record, SREM the id, PUBLISH leave; each step bounded by @tmo_ms. */
static void leave(struct cn_reg *r, unsigned tmo_ms)
{
	redisReply *rep[4];
	struct cn_reg_record rec = r->last;
	int rc = 0;

	if (!r->joined)
		return; /* nothing of this process is there */
	if (r->ctx != NULL)
		redisSetTimeout(r->ctx, ms_tv(tmo_ms));
	else if (reg_connect(r, tmo_ms) < 0)
		goto fail;
	redisAppendCommand(r->ctx, "MULTI");
	redisAppendCommand(r->ctx, "DEL %s", r->key_node);
	redisAppendCommand(r->ctx, "SREM %s %s", r->key_nodes, r->node_id);
	redisAppendCommand(r->ctx, "EXEC");
	if (replies(r, rep, 4, "leave") < 0)
		goto fail;
	if (rep[3]->type != REDIS_REPLY_ARRAY)
		rc = bad_reply(r, rep[3], "leave");
	free_replies(rep, 4);
	if (rc < 0)
		goto fail;
	snprintf(rec.reason, sizeof(rec.reason), "shutdown");
	if (publish(r, "leave", &rec) < 0)
		goto fail;
	LOG(NOTICE, "left cluster %s: %s removed", r->cluster, r->key_node);
	drop(r);
	return;
fail:
	LOG(WARNING, "could not remove %s on shutdown (%s): it expires in %u ms", r->key_node,
	    r->err, CN_REG_TTL_BEATS * r->hb_ms);
	drop(r);
}

/* ---- the thread ---- */

/* Sleep until monotonic ms @until, or until stop. */
static void wait_until(struct cn_reg *r, uint64_t until)
{
	struct timespec ts = {.tv_sec = (time_t)(until / 1000),
			      .tv_nsec = (long)(until % 1000) * 1000000};

	pthread_mutex_lock(&r->mu);
	while (!r->stop && mono_ms() < until)
		if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&r->mu);
}

static void *reg_main(void *arg)
{
	struct cn_reg *r = arg;
	uint64_t next_connect = 0, next_beat = 0, next_check = 0;

	pthread_setname_np(pthread_self(), "cn-registry");
	while (!stopping(r)) {
		uint64_t now = mono_ms(), wake;

		if (r->ctx == NULL && now >= next_connect) {
			if (reg_connect(r, r->tmo_ms) == 0) {
				connected(r);
				next_beat = now;
			} else {
				failed(r, true);
				next_connect = mono_ms() + backoff_ms(r);
			}
		}
		if (r->ctx != NULL && (now >= next_beat || (next_check && now >= next_check))) {
			bool beat = now >= next_beat;
			int rc = beat ? heartbeat(r) : 0;

			if (rc < 0) {
				CN_STAT_INC(&r->st, heartbeat_errors);
			} else if (!stopping(r)) {
				rc = read_peers(r, &next_check);
				if (rc < 0)
					CN_STAT_INC(&r->st, read_errors);
			}
			if (rc < 0) {
				failed(r, false);
				next_check = 0;
				next_connect = mono_ms() + backoff_ms(r);
			}
			if (beat) {
				next_beat += r->hb_ms;
				if (next_beat <= mono_ms())
					next_beat = mono_ms() + r->hb_ms;
			}
		}
		wake = r->ctx != NULL ? next_beat : next_connect;
		if (r->ctx != NULL && next_check != 0 && next_check < wake)
			wake = next_check;
		wait_until(r, wake);
	}
	return NULL;
}

/* ---- life cycle ---- */

int cn_reg_create(const struct cn_reg_cfg *cfg, struct cn_reg **out)
{
	struct cn_reg *r;
	pthread_condattr_t ca;
	char why[160];

	if (cfg == NULL || out == NULL || cfg->fill == NULL)
		return -EINVAL;
	if (!cn_reg_name_valid(cfg->cluster) || !cn_reg_name_valid(cfg->node_id)) {
		LOG(ERR, "cluster name and node id must be 1-64 of [A-Za-z0-9._-]");
		return -EINVAL;
	}
	if (cfg->heartbeat_ms < 10 || cfg->heartbeat_ms > 3600000) {
		LOG(ERR, "heartbeat %u ms: expected 10..3600000", cfg->heartbeat_ms);
		return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	if (cn_reg_url_parse(cfg->url, &r->url, why, sizeof(why)) < 0) {
		LOG(ERR, "--redis: %s", why);
		free(r);
		return -EINVAL;
	}
	snprintf(r->cluster, sizeof(r->cluster), "%s", cfg->cluster);
	snprintf(r->node_id, sizeof(r->node_id), "%s", cfg->node_id);
	cn_reg_key_node(r->key_node, sizeof(r->key_node), r->cluster, r->node_id);
	cn_reg_key_nodes(r->key_nodes, sizeof(r->key_nodes), r->cluster);
	cn_reg_key_events(r->channel, sizeof(r->channel), r->cluster);
	r->hb_ms = cfg->heartbeat_ms;
	r->tmo_ms = cfg->timeout_ms;
	if (r->tmo_ms == 0) {
		r->tmo_ms = r->hb_ms / 2;
		r->tmo_ms = r->tmo_ms < 100 ? 100 : r->tmo_ms > 1000 ? 1000 : r->tmo_ms;
	}
	r->fill = cfg->fill;
	r->fill_arg = cfg->fill_arg;
	r->last_health = -1;
	r->seed = (unsigned)(mono_ms() ^ (uintptr_t)r);
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cv, &ca);
	pthread_condattr_destroy(&ca);
	*out = r;
	return 0;
}

int cn_reg_start(struct cn_reg *r)
{
	int rc;

	if (r == NULL || r->started)
		return -EINVAL;
	rc = pthread_create(&r->thread, NULL, reg_main, r);
	if (rc != 0)
		return -rc;
	r->started = true;
	return 0;
}

static void stop_thread(struct cn_reg *r)
{
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	r->started = false;
}

void cn_reg_stop(struct cn_reg *r, unsigned leave_timeout_ms)
{
	if (r == NULL || !r->started)
		return;
	stop_thread(r);
	leave(r, leave_timeout_ms);
	set_state(r, false, false, NULL);
}

void cn_reg_destroy(struct cn_reg **rp)
{
	struct cn_reg *r;

	if (rp == NULL || *rp == NULL)
		return;
	r = *rp;
	if (r->started)
		stop_thread(r);
	drop(r);
	peers_put(r->peers);
	free(r->missing);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	free(r);
	*rp = NULL;
}
