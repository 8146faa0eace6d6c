/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus text exposition, format 0.0.4 (GET /metrics).
 *
 * Every metric table is written from its descs, never from a list kept
 * here, so a row added to a table shows up on /metrics, in STATUS and in
 * the docs at once:
 *
 *   table                 family                                   labels
 *   CN_L1_METRICS         cachenode_l1_<name>                      node, core
 *   CN_SESSION_METRICS    cachenode_requests_<name>                node, core
 *   CN_TRANSPORT_METRICS  cachenode_transport_<name>               node, core
 *   CN_VERBS_METRICS      cachenode_verbs_<name>                   node, core (0 under tcp)
 *   CN_TEL_CORE_METRICS   cachenode_telemetry_<name>               node, core
 *   CN_TEL_DRAIN_METRICS  cachenode_telemetry_<name>               node
 *   CN_REG_METRICS        cachenode_registry_<name>                node (zero when standalone)
 *   CN_L2_METRICS         cachenode_l2_<name>                      node (0 without --peer)
 *   CN_L2_PEER_METRICS    cachenode_l2_<name>                      node, peer
 *   CN_GPU_DEV_METRICS    cachenode_gpu_<name>                     node, device
 *
 * A COUNTER row becomes "<family>_total" of TYPE counter, a GAUGE row a
 * gauge; a row named "<x>_ns" becomes "<x>_seconds" (base units), its value
 * divided by 1e9. Per-core tables give one series per core (core="<i>", the
 * worker index or per-core slot), so sum() gives the node's total. HELP is
 * the row's help text.
 *
 * Besides the tables: the L1 levels (cachenode_l1_<level>_bytes, counts
 * plain), per-op latency histograms (cachenode_op_latency_seconds{op}),
 * telemetry ring depth per core, cachenode_up, cachenode_uptime_seconds,
 * cachenode_info, cachenode_transport_info (like cachenode_l1_info: the
 * configuration as labels), cachenode_healthy and cachenode_component_healthy
 * from the status tree, the registry's state (cachenode_registry_enabled,
 * _connected, _live_nodes, _last_heartbeat_age_seconds, _info{redis,cluster}).
 * Every series carries node="<node_id>".
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cn_node.h"

#define PROM_NAME_MAX 128
#define LAT	      "cachenode_op_latency_seconds"

/* A growing text buffer; a failed allocation sticks and the result is NULL. */
struct pbuf {
	char *p;
	size_t len, cap;
	bool oom;
	char node[2 * sizeof(((struct cn_config *)0)->node_id) + 16]; /* node="..." */
};

static void pb_printf(struct pbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void pb_printf(struct pbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		size_t room = b->cap - b->len;
		size_t ncap;
		char *np;

		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		ncap = b->cap * 2 + (size_t)n;
		np = realloc(b->p, ncap);
		if (np == NULL) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

/* @s escaped for a label value (\\, \", \n) or, with @help, for HELP text (\\, \n). */
static void pb_escaped(struct pbuf *b, const char *s, bool help)
{
	for (; *s; s++) {
		if (*s == '\\')
			pb_printf(b, "\\\\");
		else if (*s == '\n')
			pb_printf(b, "\\n");
		else if (*s == '"' && !help)
			pb_printf(b, "\\\"");
		else
			pb_printf(b, "%c", *s);
	}
}

/* @key="@s" into @out, @s escaped as a label value; truncated (never split an escape) to fit. */
static void label_value(char *out, size_t len, const char *key, const char *s)
{
	size_t n = (size_t)snprintf(out, len, "%s=\"", key);

	for (; *s && n + 4 < len; s++) {
		if (*s == '\\' || *s == '"' || *s == '\n')
			out[n++] = '\\';
		out[n++] = *s == '\n' ? 'n' : *s;
	}
	out[n++] = '"';
	out[n] = '\0';
}

static void family(struct pbuf *b, const char *name, const char *type, const char *help)
{
	pb_printf(b, "# HELP %s ", name);
	pb_escaped(b, help, true);
	pb_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* The family of a table row; a row converted from ns says so in its HELP. */
static void row_family(struct pbuf *b, const char *name, const struct cn_metric_desc *d,
		       double scale)
{
	pb_printf(b, "# HELP %s ", name);
	pb_escaped(b, d->help, true);
	pb_printf(b, "%s\n# TYPE %s %s\n", scale != 1.0 ? " (exported in seconds)" : "", name,
		  d->type == CN_METRIC_COUNTER ? "counter" : "gauge");
}

/*
 * The exported name of a table row: @prefix_<name>, "_ns" -> "_seconds"
 * (*scale 1e-9, else 1), counters end in "_total".
 */
void cn_node_prom_name(char *out, size_t len, const char *prefix, const struct cn_metric_desc *d,
		       double *scale)
{
	size_t n = strlen(d->name);
	bool ns = n > 3 && strcmp(d->name + n - 3, "_ns") == 0;

	*scale = ns ? 1e-9 : 1.0;
	snprintf(out, len, "%s_%.*s%s%s", prefix, (int)(ns ? n - 3 : n), d->name,
		 ns ? "_seconds" : "", d->type == CN_METRIC_COUNTER ? "_total" : "");
}

static void value(struct pbuf *b, uint64_t v, double scale)
{
	if (scale == 1.0)
		pb_printf(b, " %" PRIu64 "\n", v);
	else
		pb_printf(b, " %.9g\n", (double)v * scale);
}

/*
 * One family per row of a per-core table, one series per core. @percore is
 * core 0's struct of uint64_t fields in table order, @stride the bytes
 * between cores' structs.
 */
static void table_percore(struct pbuf *b, const char *prefix, const struct cn_metric_desc *desc,
			  unsigned n, const void *percore, size_t stride, unsigned ncores)
{
	char name[PROM_NAME_MAX];
	double scale;

	for (unsigned i = 0; i < n; i++) {
		cn_node_prom_name(name, sizeof(name), prefix, &desc[i], &scale);
		row_family(b, name, &desc[i], scale);
		for (unsigned c = 0; c < ncores; c++) {
			const uint64_t *v =
				(const uint64_t *)((const char *)percore + (size_t)c * stride);

			pb_printf(b, "%s{%s,core=\"%u\"}", name, b->node, c);
			value(b, __atomic_load_n(&v[i], __ATOMIC_RELAXED), scale);
		}
	}
}

/* A table that is not per core: one series per row. */
static void table_single(struct pbuf *b, const char *prefix, const struct cn_metric_desc *desc,
			 unsigned n, const uint64_t *v)
{
	char name[PROM_NAME_MAX];
	double scale;

	for (unsigned i = 0; i < n; i++) {
		cn_node_prom_name(name, sizeof(name), prefix, &desc[i], &scale);
		row_family(b, name, &desc[i], scale);
		pb_printf(b, "%s{%s}", name, b->node);
		value(b, v[i], scale);
	}
}

static void gauge(struct pbuf *b, const char *name, const char *help, double v)
{
	family(b, name, "gauge", help);
	pb_printf(b, "%s{%s} %.10g\n", name, b->node, v);
}

/* The L1 levels (struct cn_l1_info): not a per-core table, a snapshot. */
static const struct l1_level {
	const char *name;
	size_t off;
	const char *help;
} l1_levels[] = {
#define LV(name, field, help) {name, offsetof(struct cn_l1_info, field), help}
	LV("capacity_bytes", capacity, "pool bytes usable for chunks"),
	LV("used_bytes", used, "bytes of slots held (reserved, ready and pinned chunks)"),
	LV("payload_bytes", payload, "bytes of chunk data in those slots"),
	LV("pinned_bytes", pinned_bytes, "bytes of slots pinned by readers (not evictable)"),
	LV("high_wm_bytes", high_wm, "eviction starts when used bytes exceed this"),
	LV("low_wm_bytes", low_wm, "eviction stops at this many bytes"),
	LV("page_size_bytes", page_size, "slab page size"),
	LV("max_chunk_bytes", max_chunk, "largest chunk accepted"),
	LV("chunks", chunks, "ready chunks (in the index)"),
	LV("reserved", reserved, "chunks being written"),
	LV("pinned", pinned, "chunks pinned by readers"),
	LV("pages_free", pages_free, "slab pages not assigned to a class"),
	LV("pages", pages_total, "slab pages in the pool"), /* "_total" is for counters */
#undef LV
};

static void l1_levels_out(struct pbuf *b, struct cn_l1 *l1)
{
	struct cn_l1_info in;
	char name[PROM_NAME_MAX];

	cn_l1_get_info(l1, &in);
	for (size_t i = 0; i < sizeof(l1_levels) / sizeof(l1_levels[0]); i++) {
		const struct l1_level *lv = &l1_levels[i];

		snprintf(name, sizeof(name), "cachenode_l1_%s", lv->name);
		family(b, name, "gauge", lv->help);
		pb_printf(b, "%s{%s} %" PRIu64 "\n", name, b->node,
			  *(const uint64_t *)((const char *)&in + lv->off));
	}
	family(b, "cachenode_l1_info", "gauge", "L1 configuration (labels); always 1");
	pb_printf(b, "cachenode_l1_info{%s,eviction=\"", b->node);
	pb_escaped(b, in.eviction, false);
	pb_printf(b, "\",hugepages=\"%s\"} 1\n", in.hugepages ? "true" : "false");
}

/* The transport choice as labels, like cachenode_l1_info. */
static void transport_info_out(struct pbuf *b, const struct cn_node *nd)
{
	family(b, "cachenode_transport_info", "gauge",
	       "transport in use and how it was chosen (labels); always 1");
	pb_printf(b, "cachenode_transport_info{%s,transport=\"", b->node);
	pb_escaped(b, nd->tops->name, false);
	pb_printf(b, "\",chosen_by=\"");
	pb_escaped(b, nd->transport_chosen_by ? nd->transport_chosen_by : "option", false);
	pb_printf(b, "\",rdma_dev=\"");
	pb_escaped(b, strcmp(nd->tops->name, "verbs") == 0 ? nd->cfg.rdma_dev : "", false);
	pb_printf(b, "\"} 1\n");
}

/* Histogram bucket bounds (upper, inclusive), ns: 1-2-5 steps from 1 us to 10 s. */
static const uint64_t lat_bounds_ns[] = {
	1000, 2000, 5000,				/* us */
	10000, 20000, 50000,
	100000, 200000, 500000,
	1000000, 2000000, 5000000,			/* ms */
	10000000, 20000000, 50000000,
	100000000, 200000000, 500000000,
	1000000000, 2000000000, 5000000000, 10000000000, /* s */
};

/*
 * cachenode_op_latency_seconds{op}: the drain's per-op histograms, at fixed
 * bounds. Counts are cumulative at bucket resolution (cn_hist_count_le);
 * +Inf and _count are the histogram's count (never less than a bucket).
 */
static void latency_out(struct pbuf *b, const struct cn_tel *tel)
{
	struct cn_hist *h = malloc(sizeof(*h));

	if (h == NULL) {
		b->oom = true;
		return;
	}
	family(b, LAT, "histogram",
	       "latency of one operation, START to END event (telemetry spans)");
	for (unsigned op = 0; op < CN_TEL_OP_MAX; op++) {
		uint64_t le = 0, total;
		const char *opn = cn_tel_op_names[op];

		cn_tel_op_hist(tel, (enum cn_tel_op)op, h);
		for (size_t i = 0; i < sizeof(lat_bounds_ns) / sizeof(lat_bounds_ns[0]); i++) {
			uint64_t n = cn_hist_count_le(h, lat_bounds_ns[i]);

			le = n > le ? n : le;
			pb_printf(b, "%s_bucket{%s,op=\"%s\",le=\"%.9g\"} %" PRIu64 "\n", LAT,
				  b->node, opn, (double)lat_bounds_ns[i] / 1e9, le);
		}
		total = h->count > le ? h->count : le;
		pb_printf(b, "%s_bucket{%s,op=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", LAT, b->node,
			  opn, total);
		pb_printf(b, "%s_sum{%s,op=\"%s\"} %.9g\n", LAT, b->node, opn,
			  (double)h->sum / 1e9);
		pb_printf(b, "%s_count{%s,op=\"%s\"} %" PRIu64 "\n", LAT, b->node, opn, total);
	}
	free(h);
}

static void telemetry_out(struct pbuf *b, const struct cn_tel *tel)
{
	struct cn_tel_drain_stats ds;

	gauge(b, "cachenode_telemetry_enabled", "1 when telemetry events are recorded",
	      tel->enabled ? 1 : 0);
	gauge(b, "cachenode_telemetry_ring_size", "events each core's ring holds",
	      cn_tel_ring_size(tel));
	table_percore(b, CN_PROM_TELEMETRY, cn_tel_core_metric_desc, cn_tel_core_metric_count,
		      &tel->core[0].st, sizeof(tel->core[0]), tel->ncores);
	family(b, "cachenode_telemetry_ring_depth", "gauge",
	       "events waiting in the core's ring for the drain");
	for (unsigned c = 0; c < tel->ncores; c++)
		pb_printf(b, "cachenode_telemetry_ring_depth{%s,core=\"%u\"} %u\n", b->node, c,
			  cn_tel_ring_depth(tel, c));
	cn_tel_drain_stats(tel, &ds);
	table_single(b, CN_PROM_TELEMETRY, cn_tel_drain_metric_desc,
		     cn_tel_drain_metric_count, (const uint64_t *)&ds);
	latency_out(b, tel);
}

/*
 * The registry client: its counter table (zeros when standalone, so the
 * families do not come and go with --redis) and its state.
 */
static void registry_out(struct pbuf *b, struct cn_node *nd)
{
	struct cn_reg_info *in = calloc(1, sizeof(*in));

	if (in == NULL) {
		b->oom = true;
		return;
	}
	if (nd->reg != NULL)
		cn_reg_get_info(nd->reg, in);
	gauge(b, "cachenode_registry_enabled", "1 when the node publishes to a Redis registry (--redis)",
	      nd->reg != NULL);
	gauge(b, "cachenode_registry_connected", "1 while the registry's Redis connection works",
	      in->connected);
	gauge(b, "cachenode_registry_live_nodes",
	      "live nodes of the cluster in the last read, this one included", in->live_nodes);
	gauge(b, "cachenode_registry_last_heartbeat_age_seconds",
	      "seconds since the node's record was last written; -1 never (or standalone)",
	      in->last_ok_age_ms < 0 ? -1.0 : (double)in->last_ok_age_ms / 1e3);
	if (nd->reg != NULL) {
		family(b, "cachenode_registry_info", "gauge",
		       "the registry (labels: Redis URL without credentials, cluster); always 1");
		pb_printf(b, "cachenode_registry_info{%s,redis=\"", b->node);
		pb_escaped(b, in->redis, false);
		pb_printf(b, "\",cluster=\"");
		pb_escaped(b, in->cluster, false);
		pb_printf(b, "\"} 1\n");
	}
	table_single(b, CN_PROM_REGISTRY, cn_reg_metric_desc, cn_reg_metric_count,
		     (const uint64_t *)&in->st);
	free(in);
}

/*
 * The L2 tier: the node-wide table (zeros without --peer), then per peer
 * (label peer="<id>") its table and cachenode_l2_peer_up (1 up, 0 in
 * back-off) and cachenode_l2_peer_member (1 in the placement set).
 */
static void l2_out(struct pbuf *b, const struct cn_node *nd)
{
	struct cn_l2_stats st = {0};
	unsigned np = nd->l2 ? cn_l2_npeers(nd->l2) : 0;
	struct cn_l2_peer_view *v = calloc(np ? np : 1, sizeof(*v));
	char name[PROM_NAME_MAX], peer[2 * CN_PROTO_MAX_NAME + 16];
	double scale;

	if (v == NULL) {
		b->oom = true;
		return;
	}
	if (nd->l2)
		cn_l2_get_stats(nd->l2, &st);
	table_single(b, CN_PROM_L2, cn_l2_metric_desc, cn_l2_metric_count, (const uint64_t *)&st);
	for (unsigned i = 0; i < np; i++)
		cn_l2_peer_get(nd->l2, i, &v[i]);
	for (unsigned r = 0; r < cn_l2_peer_metric_count; r++) {
		cn_node_prom_name(name, sizeof(name), CN_PROM_L2, &cn_l2_peer_metric_desc[r],
				  &scale);
		row_family(b, name, &cn_l2_peer_metric_desc[r], scale);
		for (unsigned i = 0; i < np; i++) {
			label_value(peer, sizeof(peer), "peer", v[i].info.id);
			pb_printf(b, "%s{%s,%s}", name, b->node, peer);
			value(b, ((const uint64_t *)&v[i].st)[r], scale);
		}
	}
	family(b, "cachenode_l2_peer_up", "gauge", "1 while the peer is up, 0 in its back-off");
	for (unsigned i = 0; i < np; i++) {
		label_value(peer, sizeof(peer), "peer", v[i].info.id);
		pb_printf(b, "cachenode_l2_peer_up{%s,%s} %d\n", b->node, peer, !v[i].down);
	}
	family(b, "cachenode_l2_peer_member", "gauge",
	       "1 while the peer is in the placement set (its source lists it)");
	for (unsigned i = 0; i < np; i++) {
		label_value(peer, sizeof(peer), "peer", v[i].info.id);
		pb_printf(b, "cachenode_l2_peer_member{%s,%s} %d\n", b->node, peer, v[i].member);
	}
	free(v);
}

/*
 * The GPU tier: cachenode_gpu_present (1/0) always, and per device (label
 * device="<ordinal>") its counter table; no device, no rows.
 */
static void gpu_out(struct pbuf *b, const struct cn_node *nd)
{
	struct cn_gpu_info *in = calloc(1, sizeof(*in));
	char name[PROM_NAME_MAX];
	double scale;

	if (in == NULL) {
		b->oom = true;
		return;
	}
	cn_gpu_get_info(nd->gpu, in);
	gauge(b, "cachenode_gpu_present",
	      "1 when the GPU tier has a usable CUDA device (components.gpu.absent_reason says why not)",
	      in->present);
	for (unsigned r = 0; r < cn_gpu_dev_metric_count; r++) {
		cn_node_prom_name(name, sizeof(name), CN_PROM_GPU, &cn_gpu_dev_metric_desc[r],
				  &scale);
		row_family(b, name, &cn_gpu_dev_metric_desc[r], scale);
		for (unsigned i = 0; i < in->ndev; i++) {
			pb_printf(b, "%s{%s,device=\"%u\"}", name, b->node, i);
			value(b, ((const uint64_t *)cn_gpu_dev_stats(nd->gpu, i))[r], scale);
		}
	}
	family(b, "cachenode_gpu_copy_throughput_gbps", "histogram",
	       "GB/s of each copy batch (submit to completion), per device and direction");
	for (unsigned i = 0; i < in->ndev; i++) {
		for (unsigned dir = 0; dir < 2; dir++) {
			const char *dn = dir == CN_GPU_D2H ? "d2h" : "h2d";
			struct cn_gpu_tput tp;
			uint64_t cum = 0;

			if (cn_gpu_tput_get(nd->gpu, i, (enum cn_gpu_dir)dir, &tp) < 0)
				continue;
			for (unsigned k = 0; k < CN_GPU_TPUT_BUCKETS; k++) {
				cum += tp.bucket[k];
				if (k == CN_GPU_TPUT_BUCKETS - 1)
					pb_printf(b, "cachenode_gpu_copy_throughput_gbps_bucket{%s,device="
						     "\"%u\",dir=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
						  b->node, i, dn, cum);
				else
					pb_printf(b, "cachenode_gpu_copy_throughput_gbps_bucket{%s,device="
						     "\"%u\",dir=\"%s\",le=\"%g\"} %" PRIu64 "\n",
						  b->node, i, dn, cn_gpu_tput_le[k], cum);
			}
			pb_printf(b, "cachenode_gpu_copy_throughput_gbps_sum{%s,device=\"%u\",dir=\"%s\"} "
				     "%.10g\n", b->node, i, dn, (double)tp.sum_mbps / 1e3);
			pb_printf(b, "cachenode_gpu_copy_throughput_gbps_count{%s,device=\"%u\",dir=\"%s\"} "
				     "%" PRIu64 "\n", b->node, i, dn, tp.count);
		}
	}
	free(in);
}

/* cachenode_component_healthy{component="engine.l1"} for every component, depth first. */
static void components_out(struct pbuf *b, json_t *comps, const char *parent)
{
	const char *key;
	json_t *c;

	json_object_foreach(comps, key, c) {
		char path[PROM_NAME_MAX];

		snprintf(path, sizeof(path), "%s%s%s", parent, parent[0] ? "." : "", key);
		pb_printf(b, "cachenode_component_healthy{%s,component=\"", b->node);
		pb_escaped(b, path, false);
		pb_printf(b, "\"} %d\n", json_is_true(json_object_get(c, "is_healthy")) ? 1 : 0);
		components_out(b, json_object_get(c, "components"), path);
	}
}

static void health_out(struct pbuf *b, struct cn_node *nd)
{
	json_t *st = cn_node_status(nd);

	if (st == NULL) {
		b->oom = true;
		return;
	}
	gauge(b, "cachenode_healthy",
	      "1 when every component is healthy (GET /api/status says why not)",
	      json_is_true(json_object_get(st, "is_healthy")) ? 1 : 0);
	family(b, "cachenode_component_healthy", "gauge", "1 when the component is healthy");
	components_out(b, json_object_get(st, "components"), "");
	json_decref(st);
}

/*
 * Reads like cn_node_status() (relaxed loads, snapshots): safe from the HTTP
 * thread while the workers run.
 */
char *cn_node_prometheus(struct cn_node *nd, size_t *len)
{
	struct pbuf b = {.cap = 64 << 10};
	struct cn_l1 *l1 = cn_engine_l1(nd->engine);

	b.p = malloc(b.cap);
	if (b.p == NULL)
		return NULL;
	label_value(b.node, sizeof(b.node), "node", nd->cfg.node_id);

	gauge(&b, "cachenode_up", "1 while the node serves", 1);
	gauge(&b, "cachenode_uptime_seconds", "seconds since the node started",
	      cn_node_uptime(nd));
	family(&b, "cachenode_info", "gauge", "node identity (labels); always 1");
	pb_printf(&b, "cachenode_info{%s,version=\"%s\",transport=\"%s\",listen=\"", b.node,
		  CN_VERSION, nd->tops->name);
	pb_escaped(&b, nd->tops->server_addr(nd->server), false);
	pb_printf(&b, "\"} 1\n");
	health_out(&b, nd);

	table_percore(&b, CN_PROM_L1, cn_l1_metric_desc, cn_l1_metric_count,
		      cn_l1_core_stats(l1, 0), sizeof(struct cn_l1_stats), nd->ncores);
	l1_levels_out(&b, l1);
	table_percore(&b, CN_PROM_REQUESTS, cn_session_metric_desc, cn_session_metric_count,
		      nd->sess_stats, sizeof(*nd->sess_stats), nd->cfg.workers);
	table_percore(&b, CN_PROM_TRANSPORT, cn_transport_metric_desc,
		      cn_transport_metric_count, nd->tport_stats, sizeof(*nd->tport_stats),
		      nd->cfg.workers);
	transport_info_out(&b, nd);
	table_percore(&b, CN_PROM_VERBS, cn_verbs_metric_desc, cn_verbs_metric_count,
		      nd->verbs_stats, sizeof(*nd->verbs_stats), nd->cfg.workers);
	l2_out(&b, nd);
	gpu_out(&b, nd);
	if (nd->tel)
		telemetry_out(&b, nd->tel);
	registry_out(&b, nd);

	if (b.oom) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}
