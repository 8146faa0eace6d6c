/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DPDK telemetry commands /cachenode/... (usable with the unmodified
 * dpdk-telemetry.py).
 *
 * Every command is one row of CN_TELCMDS: its name, its parameters, the help
 * text DPDK serves on /help and what it returns. The registration table, the
 * help texts and the Markdown reference (cn_node_telemetry_list(), embedded in
 * docs/telemetry.md) come from those rows, so they cannot disagree.
 *
 * Callbacks run on DPDK telemetry threads (one per client), never on the
 * workers: they read per-core counters with relaxed loads (CN_STAT_GET,
 * cn_metrics_sum), L1 levels with cn_l1_get_info() and histograms with
 * cn_tel_op_hist(), and write nothing.
 *
 * DPDK 22.11 limits shape the replies (docs/telemetry.md repeats them): keys
 * only [A-Za-z0-9_/]; 256 entries per dict, 512 per array; strings 127
 * bytes; `int` is 32 bits (every counter goes out as u64); arrays can hold
 * only numbers or strings, never dicts; and one reply is at most 16 KiB,
 * anything past that silently dropped. So each reply's worst case (every
 * number 20 digits) is bounded at compile time below, /cachenode/cores pages
 * and says which core comes next, and /cachenode/status counts what it had
 * to leave out instead of losing it silently.
 */
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <rte_lcore.h>
#include <rte_telemetry.h>

#include "cn_l1.h"
#include "cn_node.h"
#include "cn_tel_dpdk.h"

/*
 * X(area, params, help, returns): the command "/cachenode/<area>", served by
 * cmd_<area>(). @help goes to DPDK's /help (< 128 bytes); @params and
 * @returns go to the reference table only.
 */
#define CN_TELCMDS(X)                                                                              \
	X(info, "none",                                                                            \
	  "node identity: id, version, listen address, transport, uptime, cores, pid",             \
	  "dict: `node_id`, `version`, `listen`, `transport`, `file_prefix`, `uptime_s`, "         \
	  "`started_at` (unix s), `workers`, `ncores`, `lcores`, `http`, `telemetry` "             \
	  "{`enabled`, `ring_size`, `cores`}, `pid`")                                              \
	X(stats, "none, or one section: `requests`, `l1`, `transport`, `telemetry`",               \
	  "node-wide counters summed over cores, keys <section>_<name>; param: a section",         \
	  "dict of u64 `<section>_<name>` for every row of the metric tables (e.g. "               \
	  "`requests_store_ok`, `l1_hits`, `transport_bytes_rx`, `telemetry_drops`); without a "   \
	  "param every section plus `sections` (array of the section names)")                      \
	X(cores, "`<first>[,<count>]` (default 0 and a full page)",                                \
	  "per-core counters, paged: /cachenode/cores,<first>[,<count>]; next = first core not "   \
	  "shown",                                                                                 \
	  "dict: `ncores`, `first`, `count`, `next` (first core not shown, -1 after the last), "   \
	  "`ring_size`, `page_max`, `cores` (`{\"<core>\": {role, ring_depth, counters...}}`)")    \
	X(l1, "none",                                                                              \
	  "L1 tier levels: capacity, used, chunks, pinned, watermarks, pages, eviction",           \
	  "dict: `capacity`, `used`, `payload`, `chunks`, `reserved`, `pinned`, `pinned_bytes`, "  \
	  "`evictions`, `hits`, `misses`, `high_wm`, `low_wm`, `page_size`, `pages_total`, "       \
	  "`pages_free`, `nclasses`, `max_chunk` (bytes or counts, u64), `eviction` (string), "    \
	  "`hugepages` (0/1)")                                                                     \
	X(transport, "none, or a worker index (`/cachenode/transport,0`)",                         \
	  "transport name, how it was chosen, and its counters: summed, or of one worker: "        \
	  "/cachenode/transport,<worker>",                                                         \
	  "dict: `name` (`tcp`/`verbs`), `chosen_by` (`auto`/`option`), `fallback_reason` (why "   \
	  "auto chose tcp, else empty), `rdma_dev` (empty: any), `listen`, `workers`, every "      \
	  "transport counter (u64, e.g. `bytes_rx`) and every RDMA verbs counter as "              \
	  "`verbs_<name>` (zero under tcp); summed over workers, or with a param that worker's "   \
	  "plus `worker`")                                                                         \
	X(l2, "none, or a peer index (`/cachenode/l2,0`)",                                         \
	  "L2 tier: source, write mode, counters, peers up/down; /cachenode/l2,<i>: one peer",     \
	  "without a param: dict `enabled` (0/1), `source`, `owner` (0/1: this node owns keys), " \
	  "`write`, `timeout_ms`, `members`, "                                                     \
	  "`peers_down`, every node-wide L2 counter (u64), `peers` (`{\"<i>\": {id, up, "        \
	  "member}}`); with a peer index: `index`, `id`, `addr`, `transport`, `member`, `up`, "   \
	  "`down_ms_left`, `fails`, `last_error` and every per-peer counter")                     \
	X(gpu, "none, or a device index (`/cachenode/gpu,0`)",                                     \
	  "GPU tier: present or absent and why, devices, copy counters; /cachenode/gpu,<dev>",      \
	  "without a param: dict `built`, `present` (0/1), `absent_reason`, `mode`, "               \
	  "`runtime_version`, `driver_version`, `host_registered` (0/1), `host_reason`, "          \
	  "`rdma_mode`, `rdma_reason`, `devices`, every per-device counter summed (u64); with a "  \
	  "device index: `device`, `name`, `pci_bus_id`, `mem_total`, `cc_major`, `cc_minor`, "    \
	  "`copy_engines`, `d2h_p50_mbps`, `h2d_p50_mbps` (median batch throughput, bucket "      \
	  "bound; inf = 2^64-1), `d2h_batches`, `h2d_batches` and that device's counters; no such " \
	  "device: error")                      \
	X(latency, "none, or an op name (`/cachenode/latency,store`)",                             \
	  "per-op latency: /cachenode/latency,<op> (none: every op and its count)",                \
	  "with an op: dict `op`, `count`, `min_ns`, `max_ns`, `mean_ns`, `p50_ns`, `p90_ns`, "    \
	  "`p99_ns`, `p999_ns` (u64); without: dict op -> count; unknown op: null")                \
	X(registry, "none",                                                                        \
	  "cluster registry client: Redis, connection, health, counters, live peers",             \
	  "dict: `enabled` (0/1), `is_healthy` (0/1), `reason`, `redis` (URL without "            \
	  "credentials), `cluster`, `key`, `heartbeat_ms`, `timeout_ms`, `connected` (0/1), "      \
	  "`last_ok_age_ms` (int, -1 never), `last_error`, `live_nodes`, every registry counter "  \
	  "(u64), `peers` (array of the other live nodes' ids, as many as fit), `peers_total`; "   \
	  "standalone: `enabled` 0, healthy, counters 0")                                          \
	X(status, "none", "the health tree of /api/status (booleans as 0/1)",                      \
	  "the /api/status tree: objects as dicts, arrays of numbers or strings as arrays, other " \
	  "arrays as dicts keyed \"0\", \"1\", ...; booleans u64 0/1; negative numbers int or "    \
	  "string; reals strings; nulls left out; keys outside [A-Za-z0-9_/] become `_`; strings " \
	  "cut at 127 bytes; `truncated`: entries left out to stay within DPDK limits (only if "   \
	  "any)")

#define TELCMD_NAME(a) "/cachenode/" #a

/* DPDK refuses names over 55 characters and help texts of 128 bytes or more. */
#define X(a, p, h, r)                                                                              \
	_Static_assert(sizeof(TELCMD_NAME(a)) <= 56, "command name too long: " #a);                \
	_Static_assert(sizeof(h) <= 128, "help text too long: " #a);
CN_TELCMDS(X)
#undef X

/* A reply's worst case, in bytes, must stay below this (16 KiB less the "{"/cmd,params":" wrap). */
#define REPLY_BUDGET (16384 - 1100)

/* Worst-case bytes of one dict entry: "key":<20 digits>, */
#define ENTRY_COST(keylen) ((keylen) + 4 + 20)
#define ROW_COST(n, t, h)  +ENTRY_COST(sizeof(#n) - 1)
#define ROW_COUNT(n, t, h) +1

#define N_SESS	   (0 CN_SESSION_METRICS(ROW_COUNT))
#define N_TPORT	   (0 CN_TRANSPORT_METRICS(ROW_COUNT))
#define N_VERBS	   (0 CN_VERBS_METRICS(ROW_COUNT))
#define N_L1	   (0 CN_L1_METRICS(ROW_COUNT))
#define N_TELCORE  (0 CN_TEL_CORE_METRICS(ROW_COUNT))
#define N_TELDRAIN (0 CN_TEL_DRAIN_METRICS(ROW_COUNT))
#define N_REG	   (0 CN_REG_METRICS(ROW_COUNT))

/* ---- helpers ---- */

static bool no_params(const char *params)
{
	return params == NULL || params[0] == '\0';
}

/*
 * @s as DPDK 22.11 can carry it: at most 127 bytes of printable ASCII. Its
 * JSON escaping mangles bytes >= 0x80 into invalid escapes (the whole reply
 * then fails to parse), so each UTF-8 character becomes '?' and each control
 * character a space. Returns the length written to @out.
 */
static size_t tel_string(const char *s, char out[RTE_TEL_MAX_STRING_LEN])
{
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)s;
	     *p && n < RTE_TEL_MAX_STRING_LEN - 1; p++) {
		if (*p >= 0x80) {
			if ((*p & 0xC0) != 0x80) /* one '?' per character, not per byte */
				out[n++] = '?';
		} else {
			out[n++] = *p < 0x20 || *p == 0x7f ? ' ' : (char)*p;
		}
	}
	out[n] = '\0';
	return n;
}

static int add_str(struct rte_tel_data *d, const char *key, const char *s)
{
	char buf[RTE_TEL_MAX_STRING_LEN];

	tel_string(s, buf);
	return rte_tel_data_add_dict_string(d, key, buf) < 0 ? -ENOSPC : 0;
}

static int add_u64(struct rte_tel_data *d, const char *key, uint64_t v)
{
	return rte_tel_data_add_dict_u64(d, key, v);
}

/* Add @child under @key; the reply owns it from then on, else it is freed here. */
static int add_child(struct rte_tel_data *d, const char *key, struct rte_tel_data *child)
{
	int r = rte_tel_data_add_dict_container(d, key, child, 0);

	if (r < 0)
		rte_tel_data_free(child);
	return r < 0 ? r : 0;
}

static struct rte_tel_data *new_dict(void)
{
	struct rte_tel_data *c = rte_tel_data_alloc();

	if (c != NULL)
		rte_tel_data_start_dict(c);
	return c;
}

/* Add @n values of @desc as "<prefix><name>". */
static int add_table(struct rte_tel_data *d, const char *prefix, const struct cn_metric_desc *desc,
		     unsigned n, const uint64_t *v)
{
	char key[RTE_TEL_MAX_STRING_LEN];

	for (unsigned i = 0; i < n; i++) {
		int r;

		snprintf(key, sizeof(key), "%s%s", prefix, desc[i].name);
		r = add_u64(d, key, v[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static const char *listen_addr(const struct cn_node *nd)
{
	if (nd->tops != NULL && nd->server != NULL)
		return nd->tops->server_addr(nd->server);
	return nd->cfg.listen;
}

static const char *transport_name(const struct cn_node *nd)
{
	return nd->tops != NULL ? nd->tops->name : nd->cfg.transport;
}

static bool tel_on(const struct cn_node *nd)
{
	return nd->tel != NULL && nd->tel->enabled;
}

/* ---- /cachenode/info ---- */

static int cmd_info(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	struct rte_tel_data *tel;

	if (nd == NULL)
		return -ENODEV;
	if (!no_params(params))
		return -EINVAL;
	rte_tel_data_start_dict(d);
	add_str(d, "node_id", nd->cfg.node_id);
	add_str(d, "version", CN_VERSION);
	add_str(d, "listen", listen_addr(nd));
	add_str(d, "transport", transport_name(nd));
	add_str(d, "file_prefix", nd->cfg.file_prefix);
	add_u64(d, "uptime_s", (uint64_t)cn_node_uptime(nd));
	add_u64(d, "started_at", (uint64_t)nd->started_wall);
	add_u64(d, "workers", nd->cfg.workers);
	add_u64(d, "ncores", nd->ncores);
	add_u64(d, "lcores", rte_lcore_count());
	add_str(d, "http", nd->http != NULL ? cn_http_addr(nd->http) : "off");
	tel = new_dict();
	if (tel == NULL)
		return -ENOMEM;
	add_u64(tel, "enabled", tel_on(nd));
	add_u64(tel, "ring_size", tel_on(nd) ? cn_tel_ring_size(nd->tel) : 0);
	add_u64(tel, "cores", nd->tel != NULL ? nd->tel->ncores : 0);
	if (add_child(d, "telemetry", tel) < 0)
		return -ENOMEM;
	add_u64(d, "pid", (uint64_t)getpid());
	return 0;
}

/* ---- /cachenode/stats ---- */

/*
 * /cachenode/stats: one section per metric table (telemetry has two), keys
 * "<section>_<name>". The whole reply's worst case is checked here, so a
 * table that grows past what one reply holds breaks the build, not the reply
 * (then serve only the sections, and make the no-param reply list them).
 */
#define STATS_COST                                                                                 \
	((0 CN_SESSION_METRICS(ROW_COST)) + N_SESS * (sizeof("requests_") - 1) +                   \
	 (0 CN_L1_METRICS(ROW_COST)) + N_L1 * (sizeof("l1_") - 1) +                                \
	 (0 CN_TRANSPORT_METRICS(ROW_COST)) + N_TPORT * (sizeof("transport_") - 1) +               \
	 (0 CN_TEL_CORE_METRICS(ROW_COST)) + N_TELCORE * (sizeof("telemetry_") - 1) +              \
	 (0 CN_TEL_DRAIN_METRICS(ROW_COST)) + N_TELDRAIN * (sizeof("telemetry_") - 1) + 128)
#define STATS_ENTRIES (N_SESS + N_L1 + N_TPORT + N_TELCORE + N_TELDRAIN + 1)
_Static_assert(STATS_ENTRIES <= RTE_TEL_MAX_DICT_ENTRIES,
	       "/cachenode/stats: too many entries for one DPDK dict: page it by section only");
_Static_assert(STATS_COST <= REPLY_BUDGET,
	       "/cachenode/stats: worst case over 16 KiB: serve sections only without a param");

enum { SEC_REQUESTS, SEC_L1, SEC_TRANSPORT, SEC_TELEMETRY, SEC_MAX };
static const char *const stats_sections[SEC_MAX] = {"requests", "l1", "transport", "telemetry"};
_Static_assert(sizeof(struct cn_l1_stats) >= N_L1 * sizeof(uint64_t), "l1 stats layout");
_Static_assert(sizeof(struct cn_tel_drain_stats) >= N_TELDRAIN * sizeof(uint64_t), "drain layout");

static int stats_section(struct rte_tel_data *d, struct cn_node *nd, unsigned sec)
{
	uint64_t v[N_SESS > N_L1 ? (N_SESS > N_TPORT ? N_SESS : N_TPORT)
				 : (N_L1 > N_TPORT ? N_L1 : N_TPORT)];
	uint64_t tv[N_TELCORE > N_TELDRAIN ? N_TELCORE : N_TELDRAIN];
	_Static_assert(N_TELCORE <= sizeof(v) / sizeof(v[0]), "stats buffer");
	struct cn_l1_stats l1s;
	struct cn_tel_drain_stats ds;
	int r;

	switch (sec) {
	case SEC_REQUESTS:
		cn_metrics_sum(nd->sess_stats, sizeof(*nd->sess_stats), nd->cfg.workers, N_SESS, v);
		return add_table(d, "requests_", cn_session_metric_desc, N_SESS, v);
	case SEC_L1:
		cn_l1_stats_sum(cn_engine_l1(nd->engine), &l1s);
		memcpy(v, &l1s, N_L1 * sizeof(uint64_t));
		return add_table(d, "l1_", cn_l1_metric_desc, N_L1, v);
	case SEC_TRANSPORT:
		cn_metrics_sum(nd->tport_stats, sizeof(*nd->tport_stats), nd->cfg.workers, N_TPORT,
			       v);
		return add_table(d, "transport_", cn_transport_metric_desc, N_TPORT, v);
	default:
		memset(v, 0, sizeof(v));
		memset(&ds, 0, sizeof(ds));
		if (nd->tel != NULL) {
			cn_metrics_sum(&nd->tel->core[0].st, sizeof(nd->tel->core[0]),
				       nd->tel->ncores, N_TELCORE, v);
			cn_tel_drain_stats(nd->tel, &ds);
		}
		r = add_table(d, "telemetry_", cn_tel_core_metric_desc, N_TELCORE, v);
		memcpy(tv, &ds, N_TELDRAIN * sizeof(uint64_t));
		return r < 0 ? r
			     : add_table(d, "telemetry_", cn_tel_drain_metric_desc, N_TELDRAIN, tv);
	}
}

static int cmd_stats(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	const unsigned nsec = SEC_MAX;
	struct rte_tel_data *names;
	int r = 0;

	if (nd == NULL)
		return -ENODEV;
	if (!no_params(params)) {
		for (unsigned s = 0; s < nsec; s++)
			if (strcmp(params, stats_sections[s]) == 0) {
				rte_tel_data_start_dict(d);
				return stats_section(d, nd, s);
			}
		return -EINVAL;
	}
	rte_tel_data_start_dict(d);
	for (unsigned s = 0; s < nsec && r == 0; s++)
		r = stats_section(d, nd, s);
	if (r < 0)
		return r;
	names = rte_tel_data_alloc();
	if (names == NULL)
		return -ENOMEM;
	rte_tel_data_start_array(names, RTE_TEL_STRING_VAL);
	for (unsigned s = 0; s < nsec; s++)
		rte_tel_data_add_array_string(names, stats_sections[s]);
	return add_child(d, "sections", names);
}

/* ---- /cachenode/cores ---- */

/* Where one core's counters live; NULL where that core has no such table. */
struct core_src {
	const struct cn_session_stats *sess;
	const struct cn_transport_stats *tport;
	const struct cn_verbs_stats *verbs;
	const struct cn_l1_stats *l1;
	const struct cn_tel_core_stats *tel;
};

/* X(key, table, field): what a core reports, and from which of its tables. */
#define CORE_FIELDS(X)                                                                             \
	X(events, tel, events)                                                                     \
	X(drops, tel, drops)                                                                       \
	X(requests, sess, frames_rx)                                                               \
	X(frames_bad, sess, frames_bad)                                                            \
	X(req_errors, sess, req_errors)                                                            \
	X(lookup_reqs, sess, lookup_reqs)                                                          \
	X(lookup_keys, sess, lookup_keys)                                                          \
	X(lookup_prefix_keys, sess, lookup_prefix_keys)                                            \
	X(store_reqs, sess, store_reqs)                                                            \
	X(store_ok, sess, store_ok)                                                                \
	X(store_failed, sess, store_failed)                                                        \
	X(store_bytes, sess, store_bytes)                                                          \
	X(retrieve_reqs, sess, retrieve_reqs)                                                      \
	X(retrieve_keys, sess, retrieve_keys)                                                      \
	X(retrieve_hits, sess, retrieve_hits)                                                      \
	X(retrieve_bytes, sess, retrieve_bytes)                                                    \
	X(delete_keys, sess, delete_keys)                                                          \
	X(sessions_open, sess, sessions_open)                                                      \
	X(conns_open, tport, conns_open)                                                           \
	X(bytes_rx, tport, bytes_rx)                                                               \
	X(bytes_tx, tport, bytes_tx)                                                               \
	X(verbs_bytes_read, verbs, bytes_read)                                                     \
	X(verbs_bytes_written, verbs, bytes_written)                                               \
	X(wakeups, tport, wakeups)                                                                 \
	X(l1_hits, l1, hits)                                                                       \
	X(l1_misses, l1, misses)                                                                   \
	X(l1_stores, l1, stores)                                                                   \
	X(l1_evictions, l1, evictions)

#define CORE_FIELD_COST(k, t, f) +ENTRY_COST(sizeof(#k) - 1)
/* "<core>":{ ... }, with "role":"control" and "ring_depth" */
#define CORE_COST                                                                                  \
	(8 + (0 CORE_FIELDS(CORE_FIELD_COST)) + ENTRY_COST(sizeof("role") - 1 + 9) +               \
	 ENTRY_COST(sizeof("ring_depth") - 1))
#define CORES_HEAD_COST (6 * ENTRY_COST(sizeof("ring_size") - 1) + 16)
/* The most cores one reply holds, worst case. */
#define CORES_PAGE_MAX ((REPLY_BUDGET - CORES_HEAD_COST) / CORE_COST)
_Static_assert(CORES_PAGE_MAX >= 1, "/cachenode/cores: one core's entry exceeds a reply");
_Static_assert((0 CORE_FIELDS(ROW_COUNT)) + 2 <= RTE_TEL_MAX_DICT_ENTRIES, "core dict");
_Static_assert(CORES_PAGE_MAX + 6 <= RTE_TEL_MAX_DICT_ENTRIES, "cores dict");

static struct core_src core_src(const struct cn_node *nd, unsigned c)
{
	struct core_src s = {0};

	if (c < nd->cfg.workers) {
		s.sess = &nd->sess_stats[c];
		s.tport = &nd->tport_stats[c];
		s.verbs = nd->verbs_stats != NULL ? &nd->verbs_stats[c] : NULL;
	}
	if (nd->engine != NULL)
		s.l1 = cn_l1_core_stats(cn_engine_l1(nd->engine), c);
	if (nd->tel != NULL && c < nd->tel->ncores)
		s.tel = &nd->tel->core[c].st;
	return s;
}

static int core_dict(struct cn_node *nd, unsigned c, struct rte_tel_data **out)
{
	struct core_src s = core_src(nd, c);
	struct rte_tel_data *cd = new_dict();

	if (cd == NULL)
		return -ENOMEM;
	add_str(cd, "role", c < nd->cfg.workers ? "worker" : "control");
	add_u64(cd, "ring_depth",
		tel_on(nd) && c < nd->tel->ncores ? cn_tel_ring_depth(nd->tel, c) : 0);
#define X(k, t, f) add_u64(cd, #k, s.t != NULL ? CN_STAT_GET(s.t, f) : 0);
	CORE_FIELDS(X)
#undef X
	*out = cd;
	return 0;
}

/* "<first>[,<count>]": plain decimal numbers only. */
static int parse_page(const char *params, unsigned long *first, unsigned long *count)
{
	char *end;

	if (no_params(params))
		return 0;
	if (params[0] < '0' || params[0] > '9')
		return -EINVAL;
	*first = strtoul(params, &end, 10);
	if (*end == '\0')
		return 0;
	if (*end != ',' || end[1] < '0' || end[1] > '9')
		return -EINVAL;
	*count = strtoul(end + 1, &end, 10);
	return *end == '\0' && *count > 0 ? 0 : -EINVAL;
}

static int cmd_cores(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	unsigned long first = 0, count = CORES_PAGE_MAX, last;
	struct rte_tel_data *cores;
	char key[24];
	int r;

	if (nd == NULL)
		return -ENODEV;
	if (parse_page(params, &first, &count) < 0 || first >= nd->ncores)
		return -EINVAL;
	if (count > CORES_PAGE_MAX)
		count = CORES_PAGE_MAX;
	last = first + count < nd->ncores ? first + count : nd->ncores;
	cores = new_dict();
	if (cores == NULL)
		return -ENOMEM;
	for (unsigned long c = first; c < last; c++) {
		struct rte_tel_data *cd;

		r = core_dict(nd, (unsigned)c, &cd);
		if (r == 0) {
			snprintf(key, sizeof(key), "%lu", c);
			r = add_child(cores, key, cd);
		}
		if (r < 0) {
			rte_tel_data_free(cores);
			return r;
		}
	}
	rte_tel_data_start_dict(d);
	add_u64(d, "ncores", nd->ncores);
	add_u64(d, "first", first);
	add_u64(d, "count", last - first);
	rte_tel_data_add_dict_int(d, "next", last < nd->ncores ? (int)last : -1);
	add_u64(d, "ring_size", tel_on(nd) ? cn_tel_ring_size(nd->tel) : 0);
	add_u64(d, "page_max", CORES_PAGE_MAX);
	return add_child(d, "cores", cores);
}

/* ---- /cachenode/l1 ---- */

static int cmd_l1(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	struct cn_l1 *l1;
	struct cn_l1_info in;
	struct cn_l1_stats s;

	if (nd == NULL)
		return -ENODEV;
	if (!no_params(params))
		return -EINVAL;
	l1 = cn_engine_l1(nd->engine);
	cn_l1_get_info(l1, &in);
	cn_l1_stats_sum(l1, &s);
	rte_tel_data_start_dict(d);
	add_u64(d, "capacity", in.capacity);
	add_u64(d, "used", in.used);
	add_u64(d, "payload", in.payload);
	add_u64(d, "chunks", in.chunks);
	add_u64(d, "reserved", in.reserved);
	add_u64(d, "pinned", in.pinned);
	add_u64(d, "pinned_bytes", in.pinned_bytes);
	add_u64(d, "evictions", s.evictions);
	add_u64(d, "hits", s.hits);
	add_u64(d, "misses", s.misses);
	add_u64(d, "high_wm", in.high_wm);
	add_u64(d, "low_wm", in.low_wm);
	add_u64(d, "page_size", in.page_size);
	add_u64(d, "pages_total", in.pages_total);
	add_u64(d, "pages_free", in.pages_free);
	add_u64(d, "nclasses", in.nclasses);
	add_u64(d, "max_chunk", in.max_chunk);
	add_str(d, "eviction", in.eviction != NULL ? in.eviction : "");
	add_u64(d, "hugepages", in.hugepages);
	return 0;
}

/* ---- /cachenode/transport ---- */

/* identity strings (127 bytes at most each), "workers"/"worker", both tables */
#define TRANSPORT_COST                                                                             \
	(5 * ENTRY_COST(sizeof("fallback_reason") - 1 + RTE_TEL_MAX_STRING_LEN) +                  \
	 2 * ENTRY_COST(sizeof("workers") - 1) + (0 CN_TRANSPORT_METRICS(ROW_COST)) +             \
	 (0 CN_VERBS_METRICS(ROW_COST)) + N_VERBS * (sizeof("verbs_") - 1))
_Static_assert(TRANSPORT_COST <= REPLY_BUDGET, "/cachenode/transport: worst case over 16 KiB");
_Static_assert(N_TPORT + N_VERBS + 7 <= RTE_TEL_MAX_DICT_ENTRIES, "/cachenode/transport dict");

/*
 * Summed over the workers, or with a param ("<worker>", plain decimal) that
 * worker's counters only: the same keys, plus "worker".
 */
static int cmd_transport(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	uint64_t v[N_TPORT], vv[N_VERBS];
	unsigned long first = 0, count = 0;
	unsigned w0 = 0, nw;
	int r;

	if (nd == NULL)
		return -ENODEV;
	nw = nd->cfg.workers;
	if (!no_params(params)) {
		/* a page of one: "<worker>" only */
		if (parse_page(params, &first, &count) < 0 || count != 0 || first >= nw)
			return -EINVAL;
		w0 = (unsigned)first;
		nw = 1;
	}
	cn_metrics_sum(&nd->tport_stats[w0], sizeof(*nd->tport_stats), nw, N_TPORT, v);
	memset(vv, 0, sizeof(vv));
	if (nd->verbs_stats != NULL)
		cn_metrics_sum(&nd->verbs_stats[w0], sizeof(*nd->verbs_stats), nw, N_VERBS, vv);
	rte_tel_data_start_dict(d);
	add_str(d, "name", transport_name(nd));
	add_str(d, "chosen_by", nd->transport_chosen_by != NULL ? nd->transport_chosen_by : "");
	add_str(d, "fallback_reason", nd->transport_fallback);
	add_str(d, "rdma_dev", nd->cfg.rdma_dev);
	add_str(d, "listen", listen_addr(nd));
	add_u64(d, "workers", nd->cfg.workers);
	if (!no_params(params))
		add_u64(d, "worker", w0);
	r = add_table(d, "", cn_transport_metric_desc, N_TPORT, v);
	return r < 0 ? r : add_table(d, "verbs_", cn_verbs_metric_desc, N_VERBS, vv);
}

/* ---- /cachenode/l2 ---- */

#define N_L2	 (0 CN_L2_METRICS(ROW_COUNT))
#define N_L2PEER (0 CN_L2_PEER_METRICS(ROW_COUNT))
/* the summary: 6 fields, the table, and per peer a 3-entry dict (id up to 64 bytes) */
#define L2_COST                                                                                    \
	(7 * ENTRY_COST(sizeof("peers_down") - 1 + 16) + (0 CN_L2_METRICS(ROW_COST)) +             \
	 CN_L2_MAX_PEERS * (ENTRY_COST(4) + ENTRY_COST(2 + CN_PROTO_MAX_NAME) + 2 * ENTRY_COST(6)))
_Static_assert(L2_COST <= REPLY_BUDGET, "/cachenode/l2: worst case over 16 KiB");
_Static_assert(N_L2 + 8 <= RTE_TEL_MAX_DICT_ENTRIES, "/cachenode/l2 dict");
_Static_assert(N_L2PEER + 9 <= RTE_TEL_MAX_DICT_ENTRIES, "/cachenode/l2,<i> dict");

static int cmd_l2(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	struct cn_l2_stats st = {0};
	struct cn_l2_peer_view v;
	struct rte_tel_data *peers;
	unsigned long first = 0, count = 0;
	unsigned np, members = 0, down = 0;
	int r;

	if (nd == NULL)
		return -ENODEV;
	np = nd->l2 ? cn_l2_npeers(nd->l2) : 0;
	rte_tel_data_start_dict(d);
	if (!no_params(params)) {
		if (parse_page(params, &first, &count) < 0 || count != 0 || first >= np ||
		    cn_l2_peer_get(nd->l2, (unsigned)first, &v) < 0)
			return -EINVAL;
		add_u64(d, "index", first);
		add_str(d, "id", v.info.id);
		add_str(d, "addr", v.info.addr);
		add_str(d, "transport", v.info.transport);
		add_u64(d, "member", v.member);
		add_u64(d, "up", !v.down);
		add_u64(d, "down_ms_left", v.down_ms_left);
		add_u64(d, "fails", v.fails);
		add_str(d, "last_error", v.last_error);
		return add_table(d, "", cn_l2_peer_metric_desc, N_L2PEER, (const uint64_t *)&v.st);
	}
	peers = new_dict();
	if (peers == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < np; i++) {
		struct rte_tel_data *p;
		char key[16];

		if (cn_l2_peer_get(nd->l2, i, &v) < 0)
			continue;
		members += v.member;
		down += v.member && v.down;
		p = new_dict();
		if (p == NULL)
			break;
		add_str(p, "id", v.info.id);
		add_u64(p, "up", !v.down);
		add_u64(p, "member", v.member);
		snprintf(key, sizeof(key), "%u", i);
		if (add_child(peers, key, p) < 0)
			break;
	}
	if (nd->l2)
		cn_l2_get_stats(nd->l2, &st);
	add_u64(d, "enabled", nd->l2 != NULL);
	add_str(d, "source", nd->l2 ? cn_l2_source_name(nd->l2) : "");
	add_u64(d, "owner", nd->l2 != NULL && cn_l2_self_member(nd->l2));
	add_str(d, "write", nd->cfg.l2_write_through ? "through" : "none");
	add_u64(d, "timeout_ms", nd->cfg.l2_timeout);
	add_u64(d, "members", members);
	add_u64(d, "peers_down", down);
	r = add_table(d, "", cn_l2_metric_desc, N_L2, (const uint64_t *)&st);
	if (r < 0) {
		rte_tel_data_free(peers);
		return r;
	}
	return add_child(d, "peers", peers);
}

/* ---- /cachenode/gpu ---- */

#define N_GPU (0 CN_GPU_DEV_METRICS(ROW_COUNT))
_Static_assert(N_GPU + 12 <= RTE_TEL_MAX_DICT_ENTRIES, "/cachenode/gpu dict");

static int cmd_gpu(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	struct cn_gpu_info *in;
	struct cn_gpu_dev_stats sum;
	unsigned long first = 0, count = 0;
	int r;

	if (nd == NULL)
		return -ENODEV;
	in = calloc(1, sizeof(*in));
	if (in == NULL)
		return -ENOMEM;
	cn_gpu_get_info(nd->gpu, in);
	rte_tel_data_start_dict(d);
	if (!no_params(params)) {
		const struct cn_gpu_dev_info *dv;

		if (parse_page(params, &first, &count) < 0 || count != 0 || first >= in->ndev) {
			free(in);
			return -EINVAL;
		}
		dv = &in->dev[first];
		add_u64(d, "device", first);
		add_str(d, "name", dv->name);
		add_str(d, "pci_bus_id", dv->pci_bus_id);
		add_u64(d, "mem_total", dv->mem_total);
		add_u64(d, "cc_major", (uint64_t)dv->cc_major);
		add_u64(d, "cc_minor", (uint64_t)dv->cc_minor);
		add_u64(d, "copy_engines", (uint64_t)dv->copy_engines);
		for (unsigned dir = 0; dir < 2; dir++) {
			struct cn_gpu_tput tp;
			char key[32];
			double q;

			if (cn_gpu_tput_get(nd->gpu, (unsigned)first, (enum cn_gpu_dir)dir, &tp) < 0)
				memset(&tp, 0, sizeof(tp));
			snprintf(key, sizeof(key), "%s_p50_mbps", dir == CN_GPU_D2H ? "d2h" : "h2d");
			q = cn_gpu_tput_quantile(&tp, 0.5);
			add_u64(d, key, isinf(q) ? UINT64_MAX : (uint64_t)(q * 1e3));
			snprintf(key, sizeof(key), "%s_batches", dir == CN_GPU_D2H ? "d2h" : "h2d");
			add_u64(d, key, tp.count);
		}
		r = add_table(d, "", cn_gpu_dev_metric_desc, N_GPU,
			      (const uint64_t *)cn_gpu_dev_stats(nd->gpu, (unsigned)first));
		free(in);
		return r;
	}
	memset(&sum, 0, sizeof(sum));
	for (unsigned i = 0; i < in->ndev; i++) {
		const uint64_t *v = (const uint64_t *)cn_gpu_dev_stats(nd->gpu, i);

		for (unsigned k = 0; v != NULL && k < N_GPU; k++)
			((uint64_t *)&sum)[k] += v[k];
	}
	add_str(d, "built", in->built ? "cuda" : "no");
	add_u64(d, "present", in->present);
	add_str(d, "absent_reason", in->present ? "" : in->reason);
	add_str(d, "mode", nd->cfg.gpu);
	add_u64(d, "runtime_version", (uint64_t)in->runtime_version);
	add_u64(d, "driver_version", (uint64_t)in->driver_version);
	add_u64(d, "host_registered", in->host_registered);
	add_str(d, "host_reason", in->host_reason);
	add_str(d, "rdma_mode", in->rdma_mode);
	add_str(d, "rdma_reason", in->rdma_reason);
	add_u64(d, "devices", in->ndev);
	free(in);
	return add_table(d, "", cn_gpu_dev_metric_desc, N_GPU, (const uint64_t *)&sum);
}

/* ---- /cachenode/latency ---- */

static int cmd_latency(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	struct cn_hist *h;
	int op;

	if (nd == NULL)
		return -ENODEV;
	if (nd->tel == NULL)
		return -ENODEV;
	/* ~15 KiB: off the telemetry thread's stack */
	h = malloc(sizeof(*h));
	if (h == NULL)
		return -ENOMEM;
	rte_tel_data_start_dict(d);
	if (no_params(params)) {
		for (unsigned i = 0; i < CN_TEL_OP_MAX; i++) {
			cn_tel_op_hist(nd->tel, (enum cn_tel_op)i, h);
			add_u64(d, cn_tel_op_names[i], h->count);
		}
		free(h);
		return 0;
	}
	op = cn_tel_op_find(params);
	if (op < 0) {
		free(h);
		return -EINVAL;
	}
	cn_tel_op_hist(nd->tel, (enum cn_tel_op)op, h);
	add_str(d, "op", cn_tel_op_names[op]);
	add_u64(d, "count", h->count);
	add_u64(d, "min_ns", h->count ? h->min : 0);
	add_u64(d, "max_ns", h->count ? h->max : 0);
	add_u64(d, "mean_ns", h->count ? h->sum / h->count : 0);
	add_u64(d, "p50_ns", cn_hist_quantile(h, 0.50));
	add_u64(d, "p90_ns", cn_hist_quantile(h, 0.90));
	add_u64(d, "p99_ns", cn_hist_quantile(h, 0.99));
	add_u64(d, "p999_ns", cn_hist_quantile(h, 0.999));
	free(h);
	return 0;
}

/* ---- /cachenode/registry ---- */

/* Everything but the peer list: 6 strings, 8 numbers and the counter table, worst case. */
#define REGISTRY_FIXED_COST                                                                       \
	(6 * ENTRY_COST(sizeof("last_error") - 1 + RTE_TEL_MAX_STRING_LEN) +                       \
	 9 * ENTRY_COST(sizeof("last_ok_age_ms") - 1) + (0 CN_REG_METRICS(ROW_COST)) +             \
	 ENTRY_COST(sizeof("peers") - 1) + 16)
_Static_assert(REGISTRY_FIXED_COST + 2048 <= REPLY_BUDGET, "/cachenode/registry: no room for peers");
_Static_assert(N_REG + 17 <= RTE_TEL_MAX_DICT_ENTRIES, "/cachenode/registry dict");

static int cmd_registry(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	const struct cn_reg_peers *p;
	struct cn_reg_info *in;
	struct rte_tel_data *ids;
	long budget = REPLY_BUDGET - REGISTRY_FIXED_COST;
	unsigned shown = 0, total = 0;
	int r;

	if (nd == NULL)
		return -ENODEV;
	if (!no_params(params))
		return -EINVAL;
	in = calloc(1, sizeof(*in));
	ids = rte_tel_data_alloc();
	if (in == NULL || ids == NULL) {
		free(in);
		rte_tel_data_free(ids);
		return -ENOMEM;
	}
	if (nd->reg != NULL)
		cn_reg_get_info(nd->reg, in);
	else
		in->healthy = true;
	rte_tel_data_start_dict(d);
	add_u64(d, "enabled", nd->reg != NULL);
	add_u64(d, "is_healthy", in->healthy);
	add_str(d, "reason", nd->reg != NULL ? in->reason : "ok");
	add_str(d, "redis", in->redis);
	add_str(d, "cluster", in->cluster);
	add_str(d, "key", in->node_key);
	add_u64(d, "heartbeat_ms", in->heartbeat_ms);
	add_u64(d, "timeout_ms", in->timeout_ms);
	add_u64(d, "connected", in->connected);
	rte_tel_data_add_dict_int(d, "last_ok_age_ms",
				  in->last_ok_age_ms > INT32_MAX ? INT32_MAX : (int)in->last_ok_age_ms);
	add_str(d, "last_error", in->last_error);
	add_u64(d, "live_nodes", in->live_nodes);
	r = add_table(d, "", cn_reg_metric_desc, N_REG, (const uint64_t *)&in->st);
	free(in);
	if (r < 0) {
		rte_tel_data_free(ids);
		return r;
	}
	/* the other live nodes' ids, as many as the reply holds */
	rte_tel_data_start_array(ids, RTE_TEL_STRING_VAL);
	p = cn_reg_peers(nd->reg);
	for (unsigned i = 0; i < p->n; i++) {
		long cost = (long)strlen(p->peer[i].rec.node_id) + 3;

		if (p->peer[i].self)
			continue;
		total++;
		if (shown == RTE_TEL_MAX_ARRAY_ENTRIES || budget < cost)
			continue;
		budget -= cost;
		rte_tel_data_add_array_string(ids, p->peer[i].rec.node_id);
		shown++;
	}
	cn_reg_peers_put(&p);
	add_u64(d, "peers_total", total);
	return add_child(d, "peers", ids);
}

/* ---- /cachenode/status: the jansson tree as DPDK telemetry data ---- */

#define STATUS_MAX_DEPTH 8 /* DPDK renders each nested level into a 16 KiB stack buffer */

struct conv {
	long budget;	  /* worst-case reply bytes still free */
	uint64_t dropped; /* entries left out (limits), reported as "truncated" */
};

/* @key with every character outside [A-Za-z0-9_/] replaced by '_', at most 63 bytes. */
static void sanitize_key(const char *key, char *out, size_t len)
{
	size_t i;

	for (i = 0; key[i] != '\0' && i < len - 1; i++) {
		char ch = key[i];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			  (ch >= '0' && ch <= '9') || ch == '_' || ch == '/';
		out[i] = ok ? ch : '_';
	}
	if (i == 0)
		out[i++] = '_';
	out[i] = '\0';
}

/* Bytes of @s in the reply: quoted, cut and escaped as DPDK will write it. */
static long str_cost(const char *s)
{
	char buf[RTE_TEL_MAX_STRING_LEN];
	size_t n = tel_string(s, buf);
	long c = (long)n + 2;

	for (size_t i = 0; i < n; i++)
		c += buf[i] == '"' || buf[i] == '\\';
	return c;
}

static long int_cost(json_int_t x)
{
	char buf[24];

	return snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, x) + 2; /* '"' if a string */
}

/* Take @cost from the budget, or count an entry dropped. */
static bool spend(struct conv *cv, long cost)
{
	if (cv->budget < cost) {
		cv->dropped++;
		return false;
	}
	cv->budget -= cost;
	return true;
}

static void fmt_real(double x, char *buf, size_t len)
{
	snprintf(buf, len, "%.15g", x);
}

static int conv_object(struct rte_tel_data *d, json_t *obj, unsigned depth, struct conv *cv,
		       unsigned max_entries);
static int conv_entry(struct rte_tel_data *d, const char *key, json_t *v, unsigned depth,
		      struct conv *cv);

/* An array of non-negative integers or of strings: a DPDK array of u64 or strings. */
static void conv_scalar_array(struct rte_tel_data *c, json_t *a, bool strings, struct conv *cv)
{
	size_t i, n = json_array_size(a);
	json_t *e;

	rte_tel_data_start_array(c, strings ? RTE_TEL_STRING_VAL : RTE_TEL_U64_VAL);
	json_array_foreach(a, i, e) {
		char buf[RTE_TEL_MAX_STRING_LEN];
		long cost;

		if (i == RTE_TEL_MAX_ARRAY_ENTRIES) {
			cv->dropped += n - i;
			return;
		}
		cost = 1 + (strings ? str_cost(json_string_value(e))
				    : int_cost(json_integer_value(e)));
		if (!spend(cv, cost)) {
			cv->dropped += n - i - 1;
			return;
		}
		if (strings) {
			tel_string(json_string_value(e), buf);
			rte_tel_data_add_array_string(c, buf);
		} else {
			rte_tel_data_add_array_u64(c, (uint64_t)json_integer_value(e));
		}
	}
}

/* Any other array (DPDK arrays cannot hold dicts or mixed types): a dict keyed "0", "1", ... */
static int conv_indexed(struct rte_tel_data *c, json_t *a, unsigned depth, struct conv *cv)
{
	size_t i, n = json_array_size(a);
	json_t *e;

	rte_tel_data_start_dict(c);
	json_array_foreach(a, i, e) {
		char ik[24];
		int r;

		if (i == RTE_TEL_MAX_DICT_ENTRIES) {
			cv->dropped += n - i;
			break;
		}
		snprintf(ik, sizeof(ik), "%zu", i);
		r = conv_entry(c, ik, e, depth, cv);
		if (r == -ENOMEM)
			return r;
	}
	return 0;
}

/* An object or array under @key: a nested container, or JSON text past the depth limit. */
static int conv_container(struct rte_tel_data *d, const char *key, json_t *v, unsigned depth,
			  struct conv *cv)
{
	long kc = (long)strlen(key) + 4;
	bool all_u64 = true, all_str = true;
	struct rte_tel_data *c;
	size_t i;
	json_t *e;
	int r;

	if (depth >= STATUS_MAX_DEPTH) {
		char *text = json_dumps(v, JSON_COMPACT);

		if (text == NULL)
			return -ENOMEM;
		if (spend(cv, kc + str_cost(text)))
			add_str(d, key, text);
		free(text);
		return 0;
	}
	if (!spend(cv, kc + 3))
		return 0;
	c = rte_tel_data_alloc();
	if (c == NULL)
		return -ENOMEM;
	if (json_is_object(v)) {
		rte_tel_data_start_dict(c);
		r = conv_object(c, v, depth + 1, cv, RTE_TEL_MAX_DICT_ENTRIES);
	} else {
		json_array_foreach(v, i, e) {
			all_u64 &= json_is_integer(e) && json_integer_value(e) >= 0;
			all_str &= json_is_string(e);
		}
		r = 0;
		if (all_u64 || all_str) /* [] is an empty u64 array */
			conv_scalar_array(c, v, !all_u64, cv);
		else
			r = conv_indexed(c, v, depth + 1, cv);
	}
	if (r < 0) {
		rte_tel_data_free(c);
		return r;
	}
	return add_child(d, key, c) < 0 ? -ENOSPC : 0;
}

/* One value into dict @d under the (already sanitized) @key. */
static int conv_entry(struct rte_tel_data *d, const char *key, json_t *v, unsigned depth,
		      struct conv *cv)
{
	long kc = (long)strlen(key) + 4;
	char num[40];
	json_int_t x;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
	case JSON_ARRAY:
		return conv_container(d, key, v, depth, cv);
	case JSON_STRING:
		if (!spend(cv, kc + str_cost(json_string_value(v))))
			return 0;
		return add_str(d, key, json_string_value(v));
	case JSON_INTEGER:
		x = json_integer_value(v);
		if (!spend(cv, kc + int_cost(x)))
			return 0;
		if (x >= 0)
			return add_u64(d, key, (uint64_t)x);
		if (x >= INT32_MIN)
			return rte_tel_data_add_dict_int(d, key, (int)x);
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, x);
		return add_str(d, key, num);
	case JSON_REAL:
		fmt_real(json_real_value(v), num, sizeof(num));
		if (!spend(cv, kc + str_cost(num)))
			return 0;
		return add_str(d, key, num);
	case JSON_TRUE:
	case JSON_FALSE:
		if (!spend(cv, kc + 1))
			return 0;
		return add_u64(d, key, json_is_true(v));
	case JSON_NULL:
	default:
		return 0; /* nulls are left out */
	}
}

/* The members of @obj into dict @d, at most @max_entries of them. */
static int conv_object(struct rte_tel_data *d, json_t *obj, unsigned depth, struct conv *cv,
		       unsigned max_entries)
{
	const char *k;
	json_t *v;
	unsigned n = 0;

	json_object_foreach(obj, k, v) {
		char key[64];
		int r;

		if (n == max_entries) {
			cv->dropped++;
			continue;
		}
		sanitize_key(k, key, sizeof(key));
		r = conv_entry(d, key, v, depth, cv);
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			cv->dropped++;
		else
			n++;
	}
	return 0;
}

static int cmd_status(void *ctx, const char *params, struct rte_tel_data *d)
{
	struct cn_node *nd = ctx;
	struct conv cv = {.budget = REPLY_BUDGET};
	json_t *root;
	int r;

	if (nd == NULL)
		return -ENODEV;
	if (!no_params(params))
		return -EINVAL;
	root = cn_node_status(nd);
	if (root == NULL)
		return -ENOMEM;
	if (!json_is_object(root)) {
		json_decref(root);
		return -EIO;
	}
	rte_tel_data_start_dict(d);
	/* one entry of the top dict kept for "truncated" */
	r = conv_object(d, root, 0, &cv, RTE_TEL_MAX_DICT_ENTRIES - 1);
	json_decref(root);
	if (r < 0)
		return r;
	if (cv.dropped > 0)
		add_u64(d, "truncated", cv.dropped);
	return 0;
}

/* ---- registration and reference ---- */

static const struct cn_tel_cmd telcmds[] = {
#define X(a, p, h, r) {TELCMD_NAME(a), h, cmd_##a},
	CN_TELCMDS(X)
#undef X
};

int cn_node_telemetry_register(struct cn_node *nd)
{
	if (nd == NULL)
		return -EINVAL;
	return cn_tel_dpdk_register(telcmds, sizeof(telcmds) / sizeof(telcmds[0]), nd);
}

void cn_node_telemetry_list(FILE *f)
{
	fprintf(f, "| command | params | what it returns |\n|---|---|---|\n");
#define X(a, p, h, r) fprintf(f, "| `%s` | %s | %s |\n", TELCMD_NAME(a), p, r);
	CN_TELCMDS(X)
#undef X
}
