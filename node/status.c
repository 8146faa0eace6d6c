/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The status tree (GET /api/status, the STATUS reply, /api/healthz and
 * cachenode_healthy): node identity, then one object per component with
 * "is_healthy", "reason" and its figures. Counter tables are written from
 * their metric tables (names from the descs), summed over the cores.
 *
 *   {"is_healthy", "reason",
 *    "node": {node_id, version, listen, transport, workers, uptime_s, started_at, http},
 *    "components": {
 *      "engine": {is_healthy, reason, "requests": {CN_SESSION_METRICS},
 *                 "components": {"l1": {is_healthy, reason, <levels>,
 *                                       "counters": {CN_L1_METRICS}}}},
 *      "transport": {is_healthy, reason, name, chosen_by, fallback_reason, [rdma_dev,]
 *                    listen, "counters": {CN_TRANSPORT_METRICS},
 *                    "verbs": {CN_VERBS_METRICS}},
 *      "telemetry": {is_healthy, reason, enabled, ring_size,
 *                    "counters": {CN_TEL_DRAIN_METRICS, CN_TEL_CORE_METRICS},
 *                    "cores": [{core, CN_TEL_CORE_METRICS, ring_depth}],
 *                    "latency": {<op>: {count, p50_us, p90_us, p99_us, p999_us}}},
 *      "registry": {is_healthy, reason, enabled, redis, auth, cluster, key, heartbeat_ms,
 *                   timeout_ms, connected, last_ok_age_ms, last_error, live_nodes,
 *                   "peers": [{node_id, address, transport, health, ...}],
 *                   "counters": {CN_REG_METRICS}},
 *      "l2": {is_healthy, reason, enabled, source, owner, write, timeout_ms, members,
 *             peers_down, "counters": {CN_L2_METRICS},
 *             "peers": [{id, addr, transport, member, up, down_ms_left, fails,
 *                        last_error, "counters": {CN_L2_PEER_METRICS}}]},
 *      "gpu": {is_healthy, reason, built, present, absent_reason, mode, runtime_version,
 *              driver_version, host_registered, host_reason, rdma_mode, rdma_reason,
 *              "devices": [{ordinal, name, pci_bus_id, mem_total, compute_capability,
 *                           copy_engines, "throughput_gbps": {"d2h"|"h2d": {count, mean,
 *                           p50, p90, p99}}, "counters": {CN_GPU_DEV_METRICS}}]}}}
 *
 * Health rules. Each is stateless (it reads the levels of this moment, so
 * two readers never disagree and nothing has to remember the last call):
 *
 *   component   unhealthy when                  reason (words)
 *   ----------  ------------------------------  ------------------------------------------
 *   engine.l1   pinned_bytes > high_wm          "N% of the pool is pinned by readers;
 *                                               stores fail with ENOSPC": eviction cannot
 *                                               bring the pool under its high watermark
 *                                               while readers hold that much
 *   transport   a data-path worker failed       "a worker's event loop failed ...": the
 *               (nd->worker_failed)             node is stopping
 *   telemetry   enabled and drain_lag_ns > 1 s, "drain is N ms behind": events wait that
 *               or no drain pass for 1 s        (or "has not completed a pass": stuck);
 *                                               long in the rings, spans and latencies
 *                                               are late
 *   registry    --redis given, and not          "cannot reach redis://...: <error>; last
 *               connected, or no heartbeat      heartbeat written N ms ago", "no heartbeat
 *               written for 2 heartbeats        written for N ms (Redis slow?)"
 *   l2          every member peer is in its     "all N peers are down (last: ...)": no
 *               back-off (and there is one)     key owned by a peer can be served; one
 *                                               peer down is not a node problem: it is
 *                                               reported per peer (up: false), its keys
 *                                               are misses
 *   gpu         never: absent is a state, not a  "present": false and "absent_reason" (CUDA's
 *               failure (GPU requests get       words) say why; failed copies are counted
 *               CN_E_NODEV)                     per device (copy_errors)
 *   engine      any child unhealthy             the child's reason, prefixed "l1: "
 *   (root)      engine, transport or telemetry  the first one's path: "engine.l1: ..."
 *               unhealthy
 *
 * The registry is the one component whose health does not reach the root:
 * the node serves whether Redis is up or not (the data path never touches
 * the registry), so a Redis outage must not make load balancers, probes or
 * peers treat the node as failed. Its is_healthy and reason are reported,
 * in the tree, in cachenode_component_healthy{component="registry"} and in
 * /cachenode/registry, for whoever watches the cluster's plumbing.
 *
 * RDMA errors (transport.verbs.err_*, qp_errors) are counted, never a health
 * rule: a broken queue pair ends one connection, and the node keeps serving.
 *
 * Telemetry drops are reported (counters.drops, cores[].drops) but never
 * make the node unhealthy: a small ring under a burst is allowed to drop,
 * and the data path is unaffected by design.
 *
 * "reason" is "ok" when healthy; otherwise the path of the first unhealthy
 * descendant (children in the order above), a colon, and why.
 */
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cn_node.h"

#define TEL_LAG_MAX_NS 1000000000ull

#define N_SESS	(0 CN_SESSION_METRICS(CN_METRIC_COUNT))
#define N_TPORT (0 CN_TRANSPORT_METRICS(CN_METRIC_COUNT))
#define N_VERBS (0 CN_VERBS_METRICS(CN_METRIC_COUNT))
#define N_TCORE (0 CN_TEL_CORE_METRICS(CN_METRIC_COUNT))
#define N_REG	(0 CN_REG_METRICS(CN_METRIC_COUNT))

/* The health of one component while its tree is built. */
struct health {
	bool ok;
	char path[96];	/* first unhealthy descendant, "" for the component itself */
	char why[192];
};

/* Builder state: a failed allocation anywhere makes the whole tree NULL. */
struct tree {
	bool oom;
};

static void put(struct tree *t, json_t *obj, const char *key, json_t *v)
{
	/* json_object_set_new() consumes @v even when it fails (or obj is NULL) */
	if (json_object_set_new(obj, key, v) < 0)
		t->oom = true;
}

static void put_u64(struct tree *t, json_t *obj, const char *key, uint64_t v)
{
	put(t, obj, key, json_integer((json_int_t)v));
}

static void fail(struct health *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct health *h, const char *fmt, ...)
{
	va_list ap;

	if (!h->ok)
		return; /* the first reason wins */
	h->ok = false;
	h->path[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(h->why, sizeof(h->why), fmt, ap);
	va_end(ap);
}

/* "a.b" (or "a" when @b is empty) into @out, truncated to @cap. */
static void path_join(char *out, size_t cap, const char *a, const char *b)
{
	size_t n = 0;

	for (; *a && n + 1 < cap; a++)
		out[n++] = *a;
	if (*b && n + 1 < cap)
		out[n++] = '.';
	for (; *b && n + 1 < cap; b++)
		out[n++] = *b;
	out[n] = '\0';
}

/* A child's health into its parent's: the parent names the first unhealthy child. */
static void inherit(struct health *parent, const char *name, const struct health *child)
{
	if (!parent->ok || child->ok)
		return;
	parent->ok = false;
	path_join(parent->path, sizeof(parent->path), name, child->path);
	snprintf(parent->why, sizeof(parent->why), "%s", child->why);
}

/* A new component object that starts with is_healthy and reason (set later by seal()). */
static json_t *component(struct tree *t)
{
	json_t *o = json_object();

	put(t, o, "is_healthy", json_true());
	put(t, o, "reason", json_string("ok"));
	return o;
}

static void seal(struct tree *t, json_t *o, const struct health *h)
{
	char reason[sizeof(h->path) + sizeof(h->why) + 2];

	if (h->ok)
		return;
	if (h->path[0])
		snprintf(reason, sizeof(reason), "%s: %s", h->path, h->why);
	else
		snprintf(reason, sizeof(reason), "%s", h->why);
	put(t, o, "is_healthy", json_false());
	put(t, o, "reason", json_string(reason));
}

/* {name: value} for every row of a metric table. */
static json_t *table_json(struct tree *t, json_t *o, const struct cn_metric_desc *desc,
			  unsigned n, const uint64_t *v)
{
	if (o == NULL)
		o = json_object();
	for (unsigned i = 0; i < n; i++)
		put_u64(t, o, desc[i].name, v[i]);
	return o;
}

double cn_node_uptime(const struct cn_node *nd)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - nd->started.tv_sec) +
	       (double)(now.tv_nsec - nd->started.tv_nsec) / 1e9;
}

static json_t *node_json(struct tree *t, const struct cn_node *nd)
{
	/* published and cleared by cn_http_start/stop while other threads read */
	const struct cn_http *http = __atomic_load_n(&nd->http, __ATOMIC_ACQUIRE);
	json_t *o = json_object();

	put(t, o, "node_id", json_string(nd->cfg.node_id));
	put(t, o, "version", json_string(CN_VERSION));
	put(t, o, "listen", json_string(nd->tops->server_addr(nd->server)));
	put(t, o, "transport", json_string(nd->tops->name));
	put(t, o, "workers", json_integer(nd->cfg.workers));
	put(t, o, "uptime_s", json_real(cn_node_uptime(nd)));
	put(t, o, "started_at", json_integer((json_int_t)nd->started_wall));
	put(t, o, "http", json_string(http ? cn_http_addr(http) : ""));
	return o;
}

static json_t *l1_json(struct tree *t, const struct cn_node *nd, struct health *h)
{
	struct cn_l1 *l1 = cn_engine_l1(nd->engine);
	struct cn_l1_info in;
	struct cn_l1_stats st;
	json_t *o = component(t);

	cn_l1_get_info(l1, &in);
	cn_l1_stats_sum(l1, &st);
	if (in.pinned_bytes > in.high_wm)
		fail(h, "%" PRIu64 "%% of the pool is pinned by readers; stores fail with ENOSPC",
		     in.capacity ? in.pinned_bytes * 100 / in.capacity : 100);
	put_u64(t, o, "capacity", in.capacity);
	put_u64(t, o, "used", in.used);
	put_u64(t, o, "payload", in.payload);
	put_u64(t, o, "chunks", in.chunks);
	put_u64(t, o, "reserved", in.reserved);
	put_u64(t, o, "pinned", in.pinned);
	put_u64(t, o, "pinned_bytes", in.pinned_bytes);
	put_u64(t, o, "high_wm", in.high_wm);
	put_u64(t, o, "low_wm", in.low_wm);
	put_u64(t, o, "page_size", in.page_size);
	put_u64(t, o, "pages_free", in.pages_free);
	put_u64(t, o, "max_chunk", in.max_chunk);
	put(t, o, "eviction", json_string(in.eviction));
	put(t, o, "hugepages", json_boolean(in.hugepages));
	put(t, o, "counters",
	    table_json(t, NULL, cn_l1_metric_desc, cn_l1_metric_count, (const uint64_t *)&st));
	seal(t, o, h);
	return o;
}

static json_t *engine_json(struct tree *t, const struct cn_node *nd, struct health *h)
{
	struct health l1h = {.ok = true};
	uint64_t sess[N_SESS];
	json_t *o = component(t), *kids = json_object();

	cn_metrics_sum(nd->sess_stats, sizeof(*nd->sess_stats), nd->cfg.workers, N_SESS, sess);
	put(t, o, "requests", table_json(t, NULL, cn_session_metric_desc, N_SESS, sess));
	put(t, kids, "l1", l1_json(t, nd, &l1h));
	inherit(h, "l1", &l1h);
	put(t, o, "components", kids);
	seal(t, o, h);
	return o;
}

static json_t *transport_json(struct tree *t, const struct cn_node *nd, struct health *h)
{
	uint64_t tport[N_TPORT], verbs[N_VERBS];
	json_t *o = component(t);

	if (atomic_load(&nd->worker_failed))
		fail(h, "a worker's event loop failed (see the log); the node is stopping");
	cn_metrics_sum(nd->tport_stats, sizeof(*nd->tport_stats), nd->cfg.workers, N_TPORT,
		       tport);
	cn_metrics_sum(nd->verbs_stats, sizeof(*nd->verbs_stats), nd->cfg.workers, N_VERBS,
		       verbs);
	put(t, o, "name", json_string(nd->tops->name));
	put(t, o, "chosen_by",
	    json_string(nd->transport_chosen_by ? nd->transport_chosen_by : "option"));
	/* not "reason": every component's "reason" is its health */
	put(t, o, "fallback_reason", json_string(nd->transport_fallback));
	if (strcmp(nd->tops->name, "verbs") == 0) /* "" = the listen address's device */
		put(t, o, "rdma_dev", json_string(nd->cfg.rdma_dev));
	put(t, o, "listen", json_string(nd->tops->server_addr(nd->server)));
	put(t, o, "counters", table_json(t, NULL, cn_transport_metric_desc, N_TPORT, tport));
	put(t, o, "verbs", table_json(t, NULL, cn_verbs_metric_desc, N_VERBS, verbs));
	seal(t, o, h);
	return o;
}

static json_t *l2_json(struct tree *t, const struct cn_node *nd, struct health *h)
{
	json_t *o = component(t), *peers = json_array();
	struct cn_l2_stats st = {0};
	unsigned np = nd->l2 ? cn_l2_npeers(nd->l2) : 0, members = 0, down = 0;
	char last[192] = "";

	put(t, o, "enabled", json_boolean(nd->l2 != NULL));
	put(t, o, "source", json_string(nd->l2 ? cn_l2_source_name(nd->l2) : ""));
	/* false: the source does not list this node, it owns no keys */
	put(t, o, "owner", json_boolean(nd->l2 != NULL && cn_l2_self_member(nd->l2)));
	put(t, o, "write", json_string(nd->cfg.l2_write_through ? "through" : "none"));
	put_u64(t, o, "timeout_ms", nd->cfg.l2_timeout);
	for (unsigned i = 0; i < np; i++) {
		struct cn_l2_peer_view v;
		json_t *p = json_object();

		if (cn_l2_peer_get(nd->l2, i, &v) < 0)
			continue;
		members += v.member;
		if (v.member && v.down) {
			down++;
			snprintf(last, sizeof(last), "%.64s: %.96s", v.info.id, v.last_error);
		}
		put(t, p, "id", json_string(v.info.id));
		put(t, p, "addr", json_string(v.info.addr));
		put(t, p, "transport", json_string(v.info.transport));
		put(t, p, "member", json_boolean(v.member));
		put(t, p, "up", json_boolean(!v.down));
		put_u64(t, p, "down_ms_left", v.down_ms_left);
		put_u64(t, p, "fails", v.fails);
		put(t, p, "last_error", json_string(v.last_error));
		put(t, p, "counters",
		    table_json(t, NULL, cn_l2_peer_metric_desc, cn_l2_peer_metric_count,
			       (const uint64_t *)&v.st));
		if (json_array_append_new(peers, p) < 0)
			t->oom = true;
	}
	if (members > 0 && down == members)
		fail(h, "all %u peers are down (last: %s)", members, last);
	put_u64(t, o, "members", members);
	put_u64(t, o, "peers_down", down);
	if (nd->l2)
		cn_l2_get_stats(nd->l2, &st);
	put(t, o, "counters",
	    table_json(t, NULL, cn_l2_metric_desc, cn_l2_metric_count, (const uint64_t *)&st));
	put(t, o, "peers", peers);
	seal(t, o, h);
	return o;
}

/* A bucket bound in GB/s; null for the top bucket (over 256 GB/s: JSON has no infinity). */
static json_t *gbps_json(double v)
{
	return isinf(v) ? json_null() : json_real(v);
}

/* {d2h: {count, mean, p50, p90, p99}, h2d: {...}} in GB/s (bucket bounds) of device @dev. */
static json_t *gpu_tput_json(struct tree *t, const struct cn_gpu *g, unsigned dev)
{
	static const char *const dir_name[] = {"d2h", "h2d"};
	json_t *o = json_object();

	for (unsigned dir = 0; dir < 2; dir++) {
		struct cn_gpu_tput tp;
		json_t *d = json_object();

		if (cn_gpu_tput_get(g, dev, (enum cn_gpu_dir)dir, &tp) < 0)
			memset(&tp, 0, sizeof(tp));
		put_u64(t, d, "count", tp.count);
		put(t, d, "mean", json_real(tp.count ? (double)tp.sum_mbps / 1e3 / (double)tp.count
						      : 0.0));
		put(t, d, "p50", gbps_json(cn_gpu_tput_quantile(&tp, 0.50)));
		put(t, d, "p90", gbps_json(cn_gpu_tput_quantile(&tp, 0.90)));
		put(t, d, "p99", gbps_json(cn_gpu_tput_quantile(&tp, 0.99)));
		put(t, o, dir_name[dir], d);
	}
	return o;
}

static json_t *gpu_json(struct tree *t, const struct cn_node *nd, struct health *h)
{
	json_t *o = component(t), *devs = json_array();
	struct cn_gpu_info *in = calloc(1, sizeof(*in));
	char cc[16];

	if (in == NULL) {
		t->oom = true;
		json_decref(devs);
		return o;
	}
	cn_gpu_get_info(nd->gpu, in);
	put(t, o, "built", json_boolean(in->built));
	put(t, o, "present", json_boolean(in->present));
	put(t, o, "absent_reason", json_string(in->present ? "" : in->reason));
	put(t, o, "mode", json_string(nd->cfg.gpu));
	put_u64(t, o, "runtime_version", (uint64_t)in->runtime_version);
	put_u64(t, o, "driver_version", (uint64_t)in->driver_version);
	put(t, o, "host_registered", json_boolean(in->host_registered));
	put(t, o, "host_reason", json_string(in->host_reason));
	put(t, o, "rdma_mode", json_string(in->rdma_mode));
	put(t, o, "rdma_reason", json_string(in->rdma_reason));
	for (unsigned i = 0; i < in->ndev && i < CN_GPU_MAX_DEVICES; i++) {
		const struct cn_gpu_dev_info *d = &in->dev[i];
		json_t *p = json_object();

		snprintf(cc, sizeof(cc), "%d.%d", d->cc_major, d->cc_minor);
		put_u64(t, p, "ordinal", (uint64_t)d->ordinal);
		put(t, p, "name", json_string(d->name));
		put(t, p, "pci_bus_id", json_string(d->pci_bus_id));
		put_u64(t, p, "mem_total", d->mem_total);
		put(t, p, "compute_capability", json_string(cc));
		put_u64(t, p, "copy_engines", (uint64_t)d->copy_engines);
		put(t, p, "throughput_gbps", gpu_tput_json(t, nd->gpu, i));
		put(t, p, "counters",
		    table_json(t, NULL, cn_gpu_dev_metric_desc, cn_gpu_dev_metric_count,
			       (const uint64_t *)cn_gpu_dev_stats(nd->gpu, i)));
		if (json_array_append_new(devs, p) < 0)
			t->oom = true;
	}
	put(t, o, "devices", devs);
	free(in);
	seal(t, o, h);
	return o;
}

/* {count, p50_us, ...} per op that has spans; quantiles are bucket upper bounds. */
static json_t *latency_json(struct tree *t, const struct cn_tel *tel)
{
	static const struct {
		const char *name;
		double q;
	} qs[] = {{"p50_us", 0.5}, {"p90_us", 0.9}, {"p99_us", 0.99}, {"p999_us", 0.999}};
	struct cn_hist *hist = malloc(sizeof(*hist));
	json_t *o = json_object();

	if (hist == NULL) {
		t->oom = true;
		return o;
	}
	for (unsigned op = 0; tel && op < CN_TEL_OP_MAX; op++) {
		json_t *lo;

		cn_tel_op_hist(tel, (enum cn_tel_op)op, hist);
		if (hist->count == 0)
			continue;
		lo = json_object();
		put_u64(t, lo, "count", hist->count);
		for (unsigned i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
			put(t, lo, qs[i].name,
			    json_real((double)cn_hist_quantile(hist, qs[i].q) / 1e3));
		put(t, o, cn_tel_op_names[op], lo);
	}
	free(hist);
	return o;
}

static json_t *telemetry_json(struct tree *t, const struct cn_node *nd, struct health *h)
{
	const struct cn_tel *tel = nd->tel;
	struct cn_tel_drain_stats ds = {0};
	uint64_t sum[N_TCORE] = {0};
	json_t *o = component(t), *cores = json_array();
	bool enabled = tel && tel->enabled;

	if (tel) {
		cn_tel_drain_stats(tel, &ds);
		cn_metrics_sum(&tel->core[0].st, sizeof(tel->core[0]), tel->ncores, N_TCORE,
			       sum);
	}
	if (enabled && ds.drain_lag_ns > TEL_LAG_MAX_NS)
		fail(h, "drain is %" PRIu64 " ms behind (events wait in the rings; spans are late)",
		     ds.drain_lag_ns / 1000000);
	else if (enabled && cn_tel_drain_age_ns(tel) > TEL_LAG_MAX_NS)
		fail(h, "drain has not completed a pass for %" PRIu64
		     " ms (stuck on a subscriber?)", cn_tel_drain_age_ns(tel) / 1000000);
	put(t, o, "enabled", json_boolean(enabled));
	put_u64(t, o, "ring_size", tel ? cn_tel_ring_size(tel) : 0);
	put(t, o, "counters",
	    table_json(t, table_json(t, NULL, cn_tel_drain_metric_desc, cn_tel_drain_metric_count,
				     (const uint64_t *)&ds),
		       cn_tel_core_metric_desc, N_TCORE, sum));
	for (unsigned c = 0; tel && c < tel->ncores; c++) {
		uint64_t v[N_TCORE];
		json_t *co = json_object();

		cn_metrics_sum(&tel->core[c].st, 0, 1, N_TCORE, v);
		put_u64(t, co, "core", c);
		table_json(t, co, cn_tel_core_metric_desc, N_TCORE, v);
		put_u64(t, co, "ring_depth", cn_tel_ring_depth(tel, c));
		if (json_array_append_new(cores, co) < 0)
			t->oom = true;
	}
	put(t, o, "cores", cores);
	put(t, o, "latency", latency_json(t, tel));
	seal(t, o, h);
	return o;
}

/* Peers of the snapshot (this node left out): what placement and operators look at. */
static json_t *peers_json(struct tree *t, struct cn_reg *reg)
{
	const struct cn_reg_peers *p = cn_reg_peers(reg);
	json_t *a = json_array();

	for (unsigned i = 0; i < p->n; i++) {
		const struct cn_reg_peer *pe = &p->peer[i];
		json_t *o;

		if (pe->self)
			continue;
		o = json_object();
		put(t, o, "node_id", json_string(pe->rec.node_id));
		put(t, o, "address", json_string(pe->rec.address));
		put(t, o, "transport", json_string(pe->rec.transport));
		put(t, o, "health", json_string(pe->rec.health ? "healthy" : "unhealthy"));
		put_u64(t, o, "l1_used", pe->rec.l1_used);
		put_u64(t, o, "l1_capacity", pe->rec.l1_capacity);
		put_u64(t, o, "chunks", pe->rec.chunks);
		put(t, o, "hit_rate", json_real(pe->rec.hit_rate));
		put_u64(t, o, "age_ms", pe->age_ms);
		if (json_array_append_new(a, o) < 0)
			t->oom = true;
	}
	cn_reg_peers_put(&p);
	return a;
}

/*
 * The registry client: its own health (see the rules above: it does not
 * reach the root), connection, counters, and the live peers it read.
 */
static json_t *registry_json(struct tree *t, const struct cn_node *nd, struct health *h)
{
	struct cn_reg_info *in;
	uint64_t zero[N_REG] = {0};
	json_t *o = component(t);

	put(t, o, "enabled", json_boolean(nd->reg != NULL));
	if (nd->reg == NULL) {
		put(t, o, "counters", table_json(t, NULL, cn_reg_metric_desc, N_REG, zero));
		return o;
	}
	in = malloc(sizeof(*in));
	if (in == NULL) {
		t->oom = true;
		return o;
	}
	cn_reg_get_info(nd->reg, in);
	if (!in->healthy)
		fail(h, "%s", in->reason);
	put(t, o, "redis", json_string(in->redis));
	put(t, o, "auth", json_boolean(in->auth));
	put(t, o, "cluster", json_string(in->cluster));
	put(t, o, "key", json_string(in->node_key));
	put_u64(t, o, "heartbeat_ms", in->heartbeat_ms);
	put_u64(t, o, "timeout_ms", in->timeout_ms);
	put(t, o, "connected", json_boolean(in->connected));
	put(t, o, "last_ok_age_ms", json_integer(in->last_ok_age_ms));
	put(t, o, "last_error", json_string(in->last_error));
	put_u64(t, o, "live_nodes", in->live_nodes);
	{
		const struct cn_reg_peers *p = cn_reg_peers(nd->reg);

		put_u64(t, o, "snapshot_generation", p->generation);
		put_u64(t, o, "snapshot_read_at_ms", p->read_at_ms);
		put_u64(t, o, "membership_changed_at_ms", p->changed_at_ms);
		cn_reg_peers_put(&p);
	}
	put(t, o, "peers", peers_json(t, nd->reg));
	put(t, o, "counters", table_json(t, NULL, cn_reg_metric_desc, N_REG,
					 (const uint64_t *)&in->st));
	free(in);
	seal(t, o, h);
	return o;
}

/*
 * Reads only: per-core counters with relaxed loads, an L1 snapshot (under
 * the L1 lock, briefly), histogram snapshots. Safe from any thread once the
 * node is set up (engine, server and counter arrays; nd->tel may be NULL).
 */
json_t *cn_node_status(struct cn_node *nd)
{
	struct tree t = {.oom = false};
	struct health root = {.ok = true}, eh = {.ok = true}, th = {.ok = true},
		      mh = {.ok = true}, rh = {.ok = true}, lh = {.ok = true}, gh = {.ok = true};
	json_t *o = component(&t), *kids = json_object();

	put(&t, o, "node", node_json(&t, nd));
	put(&t, kids, "engine", engine_json(&t, nd, &eh));
	put(&t, kids, "transport", transport_json(&t, nd, &th));
	put(&t, kids, "telemetry", telemetry_json(&t, nd, &mh));
	put(&t, kids, "registry", registry_json(&t, nd, &rh));
	put(&t, kids, "l2", l2_json(&t, nd, &lh));
	put(&t, kids, "gpu", gpu_json(&t, nd, &gh));
	inherit(&root, "engine", &eh);
	inherit(&root, "transport", &th);
	inherit(&root, "telemetry", &mh);
	inherit(&root, "l2", &lh);
	inherit(&root, "gpu", &gh);
	/* not the registry: see the health rules above */
	put(&t, o, "components", kids);
	seal(&t, o, &root);
	if (t.oom) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* A number at @path ("a.b.c") of @root, 0 when absent. */
static uint64_t tree_u64(json_t *root, const char *const *path)
{
	json_t *v = root;

	for (; *path && v; path++)
		v = json_object_get(v, *path);
	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

int cn_node_reg_fill(void *arg, struct cn_reg_record *rec)
{
	static const char *const cap[] = {"components", "engine", "components", "l1", "capacity",
					  NULL};
	static const char *const used[] = {"components", "engine", "components", "l1", "used",
					   NULL};
	static const char *const chunks[] = {"components", "engine", "components", "l1", "chunks",
					     NULL};
	static const char *const hits[] = {"components", "engine", "components", "l1",
					   "counters",	 "hits",   NULL};
	static const char *const misses[] = {"components", "engine", "components", "l1",
					     "counters",   "misses", NULL};
	struct cn_node *nd = arg;
	const struct cn_http *http = __atomic_load_n(&nd->http, __ATOMIC_ACQUIRE);
	json_t *st = cn_node_status(nd);
	uint64_t h, m;

	if (st == NULL)
		return -ENOMEM;
	snprintf(rec->address, sizeof(rec->address), "%s", nd->tops->server_addr(nd->server));
	snprintf(rec->transport, sizeof(rec->transport), "%s", nd->tops->name);
	if (nd->tops->server_rdma_ident != NULL)
		nd->tops->server_rdma_ident(nd->server, rec->rdma_dev, sizeof(rec->rdma_dev),
					    rec->gid, sizeof(rec->gid));
	snprintf(rec->http, sizeof(rec->http), "%s", http ? cn_http_addr(http) : "");
	rec->l1_capacity = tree_u64(st, cap);
	rec->l1_used = tree_u64(st, used);
	rec->chunks = tree_u64(st, chunks);
	h = tree_u64(st, hits);
	m = tree_u64(st, misses);
	rec->hit_rate = h + m ? (double)h / (double)(h + m) : 0;
	rec->health = json_is_true(json_object_get(st, "is_healthy"));
	snprintf(rec->reason, sizeof(rec->reason), "%s",
		 json_is_string(json_object_get(st, "reason"))
			 ? json_string_value(json_object_get(st, "reason"))
			 : "?");
	snprintf(rec->version, sizeof(rec->version), "%s", CN_VERSION);
	rec->started_at = (uint64_t)nd->started_wall * 1000;
	json_decref(st);
	return 0;
}
