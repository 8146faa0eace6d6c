/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode-status --redis URL --cluster NAME: every node of a cluster, read
 * straight from the registry (SMEMBERS, then HGETALL + PTTL per member,
 * pipelined; TIME for "now"), with the rules the nodes themselves use
 * (node/cn_reg_record.h): a member whose record is gone, or whose record is
 * CN_REG_TTL_BEATS of its heartbeats old, is dead; a member that is not a
 * node id, or whose record is garbage, is ignored and listed as such.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "cn_reg_record.h"
#include "status_registry.h"

#define C_DIM	"\033[2m"
#define C_RED	"\033[31m"
#define C_RESET "\033[0m"

#define EXIT_OK	     0
#define EXIT_SICK    1
#define EXIT_USAGE   2
#define EXIT_UNREACH 3
#define MAX_MEMBERS  4096

enum row_state { ROW_LIVE, ROW_DEAD, ROW_BAD };

struct row {
	char member[CN_REG_MAX_VALUE + 1];
	enum row_state state;
	bool has_record;
	struct cn_reg_record rec;
	uint64_t age_ms;
	long long ttl_ms;
	char why[192]; /* dead: why; bad: what is wrong */
};

static int row_cmp(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	if (x->state != y->state)
		return (int)x->state - (int)y->state;
	return strcmp(x->member, y->member);
}

/* An error of the connection, or an error reply, into @err. */
static void redis_err(redisContext *c, const redisReply *x, const char *what, char *err,
		      size_t len)
{
	if (x != NULL && x->type == REDIS_REPLY_ERROR)
		snprintf(err, len, "%s: %.*s", what, (int)x->len, x->str);
	else if (c != NULL && c->err)
		snprintf(err, len, "%s: %s", what, c->errstr);
	else
		snprintf(err, len, "%s: unexpected reply", what);
}

static redisContext *dial(const struct cn_reg_url *u, int tmo_ms, char *err, size_t len)
{
	struct timeval tv = {.tv_sec = tmo_ms / 1000, .tv_usec = (tmo_ms % 1000) * 1000};
	redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
	redisReply *x = NULL;
	const char *what = "AUTH";

	if (c == NULL || c->err) {
		snprintf(err, len, "cannot connect to %s: %s", u->redacted,
			 c ? c->errstr : "out of memory");
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	if (u->password[0] != '\0') {
		x = u->user[0] ? redisCommand(c, "AUTH %s %s", u->user, u->password)
			       : redisCommand(c, "AUTH %s", u->password);
		if (x == NULL || x->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(x);
	}
	if (u->db != 0) {
		what = "SELECT";
		x = redisCommand(c, "SELECT %u", u->db);
		if (x == NULL || x->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(x);
	}
	return c;
fail:
	redis_err(c, x, what, err, len);
	if (x != NULL)
		freeReplyObject(x);
	redisFree(c);
	return NULL;
}

/* One HGETALL reply into @rw (state set); @now_ms is Redis's TIME. */
static void decode(struct row *rw, const redisReply *h, const redisReply *ttl, const char *cluster,
		   uint64_t now_ms)
{
	const char *names[CN_REG_MAX_FIELDS], *vals[CN_REG_MAX_FIELDS];
	size_t lens[CN_REG_MAX_FIELDS], nf;

	rw->ttl_ms = ttl != NULL && ttl->type == REDIS_REPLY_INTEGER ? ttl->integer : -2;
	if (h->type == REDIS_REPLY_ERROR) {
		rw->state = ROW_BAD;
		snprintf(rw->why, sizeof(rw->why), "%.*s", (int)h->len, h->str);
		return;
	}
	if (h->type != REDIS_REPLY_ARRAY || h->elements % 2 != 0) {
		rw->state = ROW_BAD;
		snprintf(rw->why, sizeof(rw->why), "not a hash");
		return;
	}
	if (h->elements == 0) {
		rw->state = ROW_DEAD;
		snprintf(rw->why, sizeof(rw->why), "no record: expired or removed");
		return;
	}
	nf = h->elements / 2;
	if (nf > CN_REG_MAX_FIELDS) {
		rw->state = ROW_BAD;
		snprintf(rw->why, sizeof(rw->why), "too many fields");
		return;
	}
	for (size_t i = 0; i < nf; i++) {
		const redisReply *k = h->element[2 * i], *v = h->element[2 * i + 1];

		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
			rw->state = ROW_BAD;
			snprintf(rw->why, sizeof(rw->why), "a field that is not a string");
			return;
		}
		names[i] = k->str;
		vals[i] = v->str;
		lens[i] = v->len;
	}
	if (cn_reg_record_parse(names, vals, lens, nf, cluster, rw->member, &rw->rec, rw->why,
				sizeof(rw->why)) < 0) {
		rw->state = ROW_BAD;
		return;
	}
	rw->has_record = true;
	rw->age_ms = cn_reg_record_age_ms(&rw->rec, now_ms);
	if (cn_reg_record_live(&rw->rec, now_ms)) {
		rw->state = ROW_LIVE;
	} else {
		rw->state = ROW_DEAD;
		snprintf(rw->why, sizeof(rw->why), "last heartbeat %.1f s ago (%d heartbeats of %" PRIu64
			 " ms)", (double)rw->age_ms / 1e3, CN_REG_TTL_BEATS, rw->rec.heartbeat_ms);
	}
}

/*
 * Every member of the cluster's set as rows (*rows malloc'd, sorted: live,
 * dead, bad). Returns the count, or -errno with @err.
 */
static int read_cluster(redisContext *c, const char *cluster, struct row **rows, uint64_t *now_ms,
			char *err, size_t len)
{
	char key[160];
	redisReply *sm = NULL, *tm = NULL, **rep = NULL;
	struct row *rw = NULL;
	size_t n = 0;
	int rc;

	cn_reg_key_nodes(key, sizeof(key), cluster);
	redisAppendCommand(c, "SMEMBERS %s", key);
	redisAppendCommand(c, "TIME");
	if (redisGetReply(c, (void **)&sm) != REDIS_OK || redisGetReply(c, (void **)&tm) != REDIS_OK) {
		redis_err(c, NULL, "SMEMBERS", err, len);
		rc = -EIO;
		goto out;
	}
	if (sm->type != REDIS_REPLY_ARRAY) {
		redis_err(c, sm, key, err, len);
		rc = -EPROTO;
		goto out;
	}
	if (tm->type != REDIS_REPLY_ARRAY || tm->elements != 2) {
		redis_err(c, tm, "TIME", err, len);
		rc = -EPROTO;
		goto out;
	}
	*now_ms = strtoull(tm->element[0]->str, NULL, 10) * 1000 +
		  strtoull(tm->element[1]->str, NULL, 10) / 1000;
	n = sm->elements < MAX_MEMBERS ? sm->elements : MAX_MEMBERS;
	rw = calloc(n ? n : 1, sizeof(*rw));
	rep = calloc(2 * (n ? n : 1), sizeof(*rep));
	if (rw == NULL || rep == NULL) {
		snprintf(err, len, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const redisReply *m = sm->element[i];

		snprintf(rw[i].member, sizeof(rw[i].member), "%.*s",
			 m->type == REDIS_REPLY_STRING ? (int)m->len : 1,
			 m->type == REDIS_REPLY_STRING ? m->str : "?");
		for (char *p = rw[i].member; *p; p++) /* never print control bytes */
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				*p = '?';
		if (m->type != REDIS_REPLY_STRING || strlen(m->str) != m->len ||
		    !cn_reg_name_valid(m->str)) {
			rw[i].state = ROW_BAD;
			snprintf(rw[i].why, sizeof(rw[i].why), "set member is not a node id");
			continue;
		}
		cn_reg_key_node(key, sizeof(key), cluster, m->str);
		redisAppendCommand(c, "HGETALL %s", key);
		redisAppendCommand(c, "PTTL %s", key);
		rw[i].state = ROW_LIVE; /* decided below */
		rw[i].has_record = true; /* marks "asked" until decoded */
	}
	for (size_t i = 0; i < n; i++) {
		if (!rw[i].has_record)
			continue;
		rw[i].has_record = false;
		if (redisGetReply(c, (void **)&rep[2 * i]) != REDIS_OK ||
		    redisGetReply(c, (void **)&rep[2 * i + 1]) != REDIS_OK) {
			redis_err(c, NULL, "HGETALL", err, len);
			rc = -EIO;
			goto out;
		}
		decode(&rw[i], rep[2 * i], rep[2 * i + 1], cluster, *now_ms);
	}
	qsort(rw, n, sizeof(*rw), row_cmp);
	*rows = rw;
	rw = NULL;
	rc = (int)n;
out:
	for (size_t i = 0; rep != NULL && i < 2 * n; i++)
		if (rep[i] != NULL)
			freeReplyObject(rep[i]);
	free(rep);
	free(rw);
	if (sm != NULL)
		freeReplyObject(sm);
	if (tm != NULL)
		freeReplyObject(tm);
	return rc;
}

/* ---- output ---- */

static const char *bytes_h(uint64_t v, char *b, size_t n)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double d = (double)v;
	unsigned u = 0;

	while (d >= 1024 && u < 5) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(b, n, "%llu B", (unsigned long long)v);
	else
		snprintf(b, n, "%.1f %s", d, units[u]);
	return b;
}

static json_t *record_json(const struct cn_reg_record *r)
{
	json_t *o = json_object();

	for (unsigned i = 0; i < cn_reg_field_count; i++) {
		const struct cn_reg_field_desc *d = &cn_reg_field_desc[i];
		const char *p = (const char *)r + d->off;
		json_t *v;

		switch (d->type) {
		case CN_REG_T_STR:
			v = json_string(p);
			break;
		case CN_REG_T_U64:
			v = json_integer((json_int_t) * (const uint64_t *)p);
			break;
		case CN_REG_T_RATE:
			v = json_real(*(const double *)p);
			break;
		default:
			v = json_string(*(const bool *)p ? "healthy" : "unhealthy");
			break;
		}
		json_object_set_new(o, d->name, v);
	}
	return o;
}

static void print_json(const struct status_reg_opts *o, const struct cn_reg_url *u,
		       const struct row *rw, int n, uint64_t now_ms)
{
	json_t *root = json_object(), *nodes = json_array(), *ignored = json_array();
	unsigned live = 0, dead = 0;
	char *text;

	for (int i = 0; i < n; i++) {
		json_t *e = json_object();

		if (rw[i].state == ROW_BAD) {
			json_object_set_new(e, "member", json_string(rw[i].member));
			json_object_set_new(e, "reason", json_string(rw[i].why));
			json_array_append_new(ignored, e);
			continue;
		}
		live += rw[i].state == ROW_LIVE;
		dead += rw[i].state == ROW_DEAD;
		json_object_set_new(e, "node_id", json_string(rw[i].member));
		json_object_set_new(e, "state",
				    json_string(rw[i].state == ROW_LIVE ? "live" : "dead"));
		if (rw[i].state == ROW_DEAD)
			json_object_set_new(e, "dead_reason", json_string(rw[i].why));
		json_object_set_new(e, "record",
				    rw[i].has_record ? record_json(&rw[i].rec) : json_null());
		json_object_set_new(e, "age_ms", rw[i].has_record
							 ? json_integer((json_int_t)rw[i].age_ms)
							 : json_null());
		json_object_set_new(e, "ttl_ms", json_integer(rw[i].ttl_ms));
		json_array_append_new(nodes, e);
	}
	json_object_set_new(root, "cluster", json_string(o->cluster));
	json_object_set_new(root, "redis", json_string(u->redacted));
	json_object_set_new(root, "time_ms", json_integer((json_int_t)now_ms));
	json_object_set_new(root, "live", json_integer(live));
	json_object_set_new(root, "dead", json_integer(dead));
	json_object_set_new(root, "nodes", nodes);
	json_object_set_new(root, "ignored", ignored);
	text = json_dumps(root, JSON_INDENT(2));
	if (text != NULL)
		printf("%s\n", text);
	free(text);
	json_decref(root);
}

static void print_table(const struct status_reg_opts *o, const struct cn_reg_url *u,
			const struct row *rw, int n)
{
	unsigned live = 0, dead = 0, bad = 0;

	for (int i = 0; i < n; i++) {
		live += rw[i].state == ROW_LIVE;
		dead += rw[i].state == ROW_DEAD;
		bad += rw[i].state == ROW_BAD;
	}
	printf("cluster %s on %s: %u node%s, %u live, %u dead%s\n", o->cluster, u->redacted,
	       live + dead, live + dead == 1 ? "" : "s", live, dead,
	       bad ? ", some registry entries ignored (below)" : "");
	if (live + dead == 0)
		printf("(no node is registered)\n");
	else
		printf("%-24s %-22s %-5s %-9s %-23s %9s %8s %s\n", "NODE", "ADDRESS", "STATE",
		       "HEALTH", "L1 USED / CAPACITY", "CHUNKS", "HIT RATE", "LAST HEARTBEAT");
	for (int i = 0; i < n; i++) {
		const struct row *r = &rw[i];
		bool sick = r->state == ROW_DEAD || (r->has_record && !r->rec.health);
		char a[32], b[32], l1[64] = "-", chunks[24] = "-", hit[16] = "-", hb[48] = "-";

		if (r->state == ROW_BAD)
			continue;
		if (r->has_record) {
			snprintf(l1, sizeof(l1), "%s / %s", bytes_h(r->rec.l1_used, a, sizeof(a)),
				 bytes_h(r->rec.l1_capacity, b, sizeof(b)));
			snprintf(chunks, sizeof(chunks), "%" PRIu64, r->rec.chunks);
			snprintf(hit, sizeof(hit), "%.1f%%", r->rec.hit_rate * 100);
			snprintf(hb, sizeof(hb), "%.1fs ago", (double)r->age_ms / 1e3);
		}
		printf("%s%-24s %-22s %-5s %-9s %-23s %9s %8s %s", o->color && sick ? C_RED : "",
		       r->member, r->has_record ? r->rec.address : "-",
		       r->state == ROW_LIVE ? "live" : "DEAD",
		       !r->has_record ? "-" : r->rec.health ? "healthy" : "UNHEALTHY", l1, chunks,
		       hit, hb);
		if (r->state == ROW_DEAD)
			printf("  (%s)", r->why);
		else if (r->has_record && !r->rec.health)
			printf("  (%s)", r->rec.reason);
		printf("%s\n", o->color && sick ? C_RESET : "");
	}
	if (bad) {
		printf("%signored (not read as nodes):%s\n", o->color ? C_DIM : "",
		       o->color ? C_RESET : "");
		for (int i = 0; i < n; i++)
			if (rw[i].state == ROW_BAD)
				printf("  '%s': %s\n", rw[i].member, rw[i].why);
	}
}

int status_registry(const struct status_reg_opts *o)
{
	struct cn_reg_url u;
	struct row *rows = NULL;
	redisContext *c;
	uint64_t now_ms = 0;
	char err[512];
	int n, rc = EXIT_OK, nodes = 0;

	if (cn_reg_url_parse(o->url, &u, err, sizeof(err)) < 0) {
		fprintf(stderr, "cachenode-status: --redis: %s\n", err);
		return EXIT_USAGE;
	}
	if (!cn_reg_name_valid(o->cluster)) {
		fprintf(stderr, "cachenode-status: --cluster '%s': 1-64 characters of [A-Za-z0-9._-] "
				"expected\n", o->cluster);
		return EXIT_USAGE;
	}
	c = dial(&u, o->timeout_ms, err, sizeof(err));
	if (c == NULL) {
		fprintf(stderr, "cachenode-status: %s\n", err);
		return EXIT_UNREACH;
	}
	n = read_cluster(c, o->cluster, &rows, &now_ms, err, sizeof(err));
	redisFree(c);
	if (n < 0) {
		fprintf(stderr, "cachenode-status: %s: %s\n", u.redacted, err);
		return EXIT_UNREACH;
	}
	for (int i = 0; i < n; i++) {
		if (rows[i].state == ROW_BAD)
			continue;
		nodes++;
		if (rows[i].state == ROW_DEAD || !rows[i].rec.health)
			rc = EXIT_SICK;
	}
	if (nodes == 0)
		rc = EXIT_SICK;
	if (o->json)
		print_json(o, &u, rows, n, now_ms);
	else
		print_table(o, &u, rows, n);
	free(rows);
	return rc;
}
