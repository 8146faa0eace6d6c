/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's context, shared by main() and the exporters that read it
 * (STATUS reply, HTTP /metrics and /api/status, DPDK telemetry commands).
 * main() owns it and every object it points to; exporters only read, from
 * their own threads, through per-core counters (relaxed loads), L1 info
 * snapshots and histogram snapshots.
 */
#ifndef CN_NODE_H
#define CN_NODE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

#include "cn_config.h"
#include "cn_engine.h"
#include "cn_registry.h"
#include "cn_l2.h"
#include "cn_session.h"
#include "cn_tel.h"
#include "cn_transport.h"

struct cn_http;

struct cn_node {
	struct cn_config cfg;
	struct cn_engine *engine;
	struct cn_tel *tel;
	const struct cn_transport_ops *tops;	 /* what cn_transport_pick() chose */
	const char *transport_chosen_by;	 /* "auto" or "option" (--transport tcp|verbs) */
	char transport_fallback[256];		 /* why auto chose tcp; "" otherwise */
	struct cn_server *server;
	struct cn_session_ctx sctx;
	struct cn_session_stats *sess_stats;	 /* cfg.workers structs */
	struct cn_transport_stats *tport_stats; /* cfg.workers structs */
	struct cn_verbs_stats *verbs_stats;	 /* cfg.workers structs; all zero under tcp */
	unsigned ncores;			 /* workers + 1 (control plane slot) */
	struct timespec started;		 /* CLOCK_MONOTONIC */
	time_t started_wall;
	atomic_int worker_failed;
	struct cn_http *http;
	struct cn_reg *reg; /* the cluster registry; NULL = standalone (no --redis) */
	struct cn_l2 *l2;		 /* NULL without --peer */
	struct cn_l2_static *l2_static;	 /* the --peer list, the L2 tier's source */
	uint64_t l2_reg_generation;	 /* registry snapshot the L2 tier last took (control plane) */
	struct cn_gpu *gpu;		 /* the GPU tier, present or absent (never NULL once set up) */
};

/* Seconds since the node started. */
double cn_node_uptime(const struct cn_node *nd);

/*
 * cn_node_status - the status tree (node/status.c): {"is_healthy", "reason",
 * "node": {...}, "components": {"engine": {"is_healthy", ..., "components":
 * {"l1": {...}}}, "transport": {..., "verbs": {...}}, "telemetry": {...}}}.
 * Every component reports is_healthy and its figures; an unhealthy child
 * makes its parent unhealthy and the top-level "reason" names the first
 * unhealthy leaf and why. One exception: "registry" (the Redis registry
 * client) reports its own health but never makes the node unhealthy, since
 * the node serves whether Redis is there or not. Returns a new reference
 * (json_decref()), or NULL on allocation failure.
 */
json_t *cn_node_status(struct cn_node *nd);

/*
 * cn_node_reg_fill - the registry's cn_reg_fill_fn: the node's record
 * (address, transport, L1 levels, hit rate, health and reason from the status
 * tree, version, started_at) for one heartbeat. @arg is the struct cn_node.
 * Returns 0, or -ENOMEM.
 */
int cn_node_reg_fill(void *arg, struct cn_reg_record *rec);

/*
 * cn_node_prometheus - the Prometheus text exposition (format 0.0.4) of
 * every metric table (node/prom.c). Returns a malloc'd buffer of *len bytes
 * (caller frees), or NULL.
 */
char *cn_node_prometheus(struct cn_node *nd, size_t *len);

/* Prometheus family prefixes of the metric tables (node/prom.c, docs/telemetry.md). */
#define CN_PROM_L1	  "cachenode_l1"
#define CN_PROM_REQUESTS  "cachenode_requests"
#define CN_PROM_TRANSPORT "cachenode_transport"
#define CN_PROM_VERBS	  "cachenode_verbs"
#define CN_PROM_TELEMETRY "cachenode_telemetry"
#define CN_PROM_REGISTRY  "cachenode_registry"
#define CN_PROM_L2	  "cachenode_l2"
#define CN_PROM_GPU	  "cachenode_gpu"

/*
 * cn_node_prom_name - the Prometheus family of table row @d: @prefix_<name>,
 * "_ns" rows become "_seconds" (*scale = 1e-9, else 1), counters end in
 * "_total".
 */
void cn_node_prom_name(char *out, size_t len, const char *prefix, const struct cn_metric_desc *d,
		       double *scale);

/*
 * HTTP server (node/http.c), on its own thread (libmicrohttpd's internal
 * polling thread): GET /metrics (Prometheus text), /api/status (the status
 * tree; ?compact for one line), /api/healthz (200 "ok" or 503 and the
 * reason); other paths 404, other methods 405.
 *
 * cn_http_start - listen on @addr ("HOST:PORT", "[V6]:PORT"; port 0 picks a
 * free port) and serve @nd, which must outlive the server. Returns 0 and
 * *out (owned by the caller: cn_http_stop()), -EINVAL for a bad address,
 * or -errno from the socket calls (-EADDRINUSE ...), logged with the address.
 */
int cn_http_start(struct cn_node *nd, const char *addr, struct cn_http **out);
/* cn_http_stop - stop serving (waits for the server thread); *h becomes NULL; accepts NULL. */
void cn_http_stop(struct cn_http **h);
/* The bound address "HOST:PORT" (useful after port 0). */
const char *cn_http_addr(const struct cn_http *h);

/* DPDK telemetry commands /cachenode/... (node/telcmd.c). Call after rte_eal_init. */
int cn_node_telemetry_register(struct cn_node *nd);
/*
 * cn_node_telemetry_list - the Markdown reference of those commands
 * (| command | params | what it returns |), from the same table that
 * registers them; docs/telemetry.md embeds it.
 */
void cn_node_telemetry_list(FILE *f);

#endif /* CN_NODE_H */
