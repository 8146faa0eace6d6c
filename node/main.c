/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode: the daemon.
 *
 * main() reads as the architecture: options -> EAL (owns cores and memory)
 * -> engine (tiers) -> session context -> transport server -> one data-path
 * worker per worker lcore -> the main lcore waits on signals as the control
 * plane -> orderly teardown in reverse order.
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_log.h>

#include "cn_config.h"
#include "cn_engine.h"
#include "cn_session.h"
#include "cn_transport.h"

#define LOG(level, fmt, ...) RTE_LOG(level, USER1, "cachenode: " fmt "\n", ##__VA_ARGS__)

struct node {
	struct cn_config cfg;
	struct cn_engine *engine;
	const struct cn_transport_ops *tops;
	struct cn_server *server;
	struct cn_session_ctx sctx;
	struct cn_session_stats *sess_stats;	 /* one per worker */
	struct cn_transport_stats *tport_stats; /* one per worker */
	struct timespec started;
	time_t started_wall;
	atomic_int worker_failed;
};

struct worker_arg {
	struct node *node;
	unsigned id;
};

/* ---- EAL arguments ---- */

static bool has_arg(int argc, char **argv, const char *const *names)
{
	for (int i = 0; i < argc; i++)
		for (const char *const *n = names; *n; n++) {
			size_t l = strlen(*n);
			if (strncmp(argv[i], *n, l) == 0 && (argv[i][l] == '\0' || argv[i][l] == '='))
				return true;
		}
	return false;
}

/*
 * Defaults that run anywhere (no hugepages, no PCI devices, no shared
 * config files), each dropped when the user's EAL arguments (after "--")
 * say otherwise. Worker lcores may outnumber CPUs: every lcore may run on
 * any CPU this process may use, and idle workers block.
 */
static int eal_args(const struct cn_config *cfg, char *prog, char **argv, int max, char *buf,
		    size_t buflen)
{
	static const char *const mem[] = {"-m", "--socket-mem", "--huge-dir", "--in-memory",
					  "--no-huge", NULL};
	static const char *const lcores[] = {"-l", "-c", "--lcores", NULL};
	static const char *const prefix[] = {"--file-prefix", NULL};
	static const char *const pci[] = {"-a", "-b", "--allow", "--block", "--no-pci", NULL};
	static const char *const shconf[] = {"--no-shconf", NULL};
	int argc = 0, ucount = cfg->eal_argc;
	char **uargs = cfg->eal_argv;
	cpu_set_t cpus;
	int last = 0;
	size_t used = 0;

	argv[argc++] = prog;
	if (!has_arg(ucount, uargs, mem)) {
		/*
		 * The L1 index and descriptors live in EAL memory: about 256 bytes
		 * per smallest (4 KiB) slot, on top of 128 MiB for DPDK itself.
		 */
		uint64_t mb = 128 + (cfg->l1_size / 4096 * 256 >> 20);
		int n = snprintf(buf + used, buflen - used, "%" PRIu64, mb);

		argv[argc++] = "--no-huge";
		argv[argc++] = "-m";
		argv[argc++] = buf + used;
		used += (size_t)n + 1;
	}
	if (!has_arg(ucount, uargs, pci))
		argv[argc++] = "--no-pci";
	if (!has_arg(ucount, uargs, shconf) && !has_arg(ucount, uargs, mem))
		argv[argc++] = "--no-shconf";
	if (!has_arg(ucount, uargs, prefix)) {
		int n = snprintf(buf + used, buflen - used, "--file-prefix=%s", cfg->file_prefix);
		argv[argc++] = buf + used;
		used += (size_t)n + 1;
	}
	if (!has_arg(ucount, uargs, lcores)) {
		int n;

		CPU_ZERO(&cpus);
		sched_getaffinity(0, sizeof(cpus), &cpus);
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &cpus))
				last = c;
		n = snprintf(buf + used, buflen - used, "--lcores=(0-%u)@(0-%d)", cfg->workers, last);
		argv[argc++] = buf + used;
		used += (size_t)n + 1;
	}
	for (int i = 0; i < ucount && argc < max - 1; i++)
		argv[argc++] = uargs[i];
	argv[argc] = NULL;
	return argc;
}

/* ---- STATUS ---- */

static json_t *table_json(const struct cn_metric_desc *desc, unsigned n, const uint64_t *v)
{
	json_t *o = json_object();

	for (unsigned i = 0; i < n; i++)
		json_object_set_new(o, desc[i].name, json_integer((json_int_t)v[i]));
	return o;
}

static double uptime_s(const struct node *nd)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - nd->started.tv_sec) +
	       (double)(now.tv_nsec - nd->started.tv_nsec) / 1e9;
}

/*
 * The STATUS document: node identity, L1 levels and every counter table
 * summed over the workers. Runs on a worker (the one serving the request);
 * it only reads.
 */
static char *status_json(void *arg, size_t *len)
{
	struct node *nd = arg;
	struct cn_l1 *l1 = cn_engine_l1(nd->engine);
	struct cn_l1_info info;
	struct cn_l1_stats l1s;
	uint64_t sess[64], tport[32];
	json_t *root, *node, *jl1;
	char *text;

	cn_l1_get_info(l1, &info);
	cn_l1_stats_sum(l1, &l1s);
	cn_metrics_sum(nd->sess_stats, sizeof(*nd->sess_stats), nd->cfg.workers,
		       cn_session_metric_count, sess);
	cn_metrics_sum(nd->tport_stats, sizeof(*nd->tport_stats), nd->cfg.workers,
		       cn_transport_metric_count, tport);

	node = json_pack("{s:s, s:s, s:s, s:s, s:i, s:f, s:I}", "node_id", nd->cfg.node_id,
			 "version", CN_VERSION, "listen", nd->tops->server_addr(nd->server),
			 "transport", nd->tops->name, "workers", (int)nd->cfg.workers, "uptime_s",
			 uptime_s(nd), "started_at", (json_int_t)nd->started_wall);
	jl1 = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:b}",
			"capacity", (json_int_t)info.capacity, "used", (json_int_t)info.used,
			"payload", (json_int_t)info.payload, "chunks", (json_int_t)info.chunks,
			"reserved", (json_int_t)info.reserved, "pinned", (json_int_t)info.pinned,
			"high_wm", (json_int_t)info.high_wm, "low_wm", (json_int_t)info.low_wm,
			"page_size", (json_int_t)info.page_size, "pages_free",
			(json_int_t)info.pages_free, "max_chunk", (json_int_t)info.max_chunk,
			"eviction", info.eviction, "hugepages", info.hugepages);
	json_object_set_new(jl1, "counters",
			    table_json(cn_l1_metric_desc, cn_l1_metric_count, (uint64_t *)&l1s));
	root = json_pack("{s:o, s:o, s:o, s:o}", "node", node, "l1", jl1, "requests",
			 table_json(cn_session_metric_desc, cn_session_metric_count, sess),
			 "transport",
			 table_json(cn_transport_metric_desc, cn_transport_metric_count, tport));
	if (root == NULL)
		return NULL;
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (text)
		*len = strlen(text);
	return text;
}

/* ---- the metric reference (docs/telemetry.md embeds this output) ---- */

static void list_table(const char *section, const char *intro,
		       const struct cn_metric_desc *d, unsigned n)
{
	printf("### `%s`\n\n%s\n\n| name | type | meaning |\n|---|---|---|\n", section, intro);
	for (unsigned i = 0; i < n; i++)
		printf("| `%s` | %s | %s |\n", d[i].name,
		       d[i].type == CN_METRIC_COUNTER ? "counter" : "gauge", d[i].help);
	printf("\n");
}

static void list_metrics(void)
{
	list_table("l1.counters", "L1 tier, per core (tiers/l1/cn_l1.h `CN_L1_METRICS`).",
		   cn_l1_metric_desc, cn_l1_metric_count);
	list_table("requests", "Protocol sessions, per worker (node/cn_session.h "
		   "`CN_SESSION_METRICS`).", cn_session_metric_desc, cn_session_metric_count);
	list_table("transport", "Transport, per worker (transport/cn_transport.h "
		   "`CN_TRANSPORT_METRICS`).", cn_transport_metric_desc,
		   cn_transport_metric_count);
}

/* ---- workers and control plane ---- */

static int worker_main(void *p)
{
	struct worker_arg *wa = p;
	struct node *nd = wa->node;
	int r = nd->tops->server_run(nd->server, wa->id);

	if (r < 0) {
		LOG(ERR, "worker %u stopped: %s", wa->id, strerror(-r));
		atomic_store(&nd->worker_failed, 1);
		kill(getpid(), SIGTERM);
	}
	return r;
}

static void human_size(uint64_t v, char *out, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double d = (double)v;
	unsigned u = 0;

	while (d >= 1024 && u < 4) {
		d /= 1024;
		u++;
	}
	snprintf(out, len, "%.4g %s", d, units[u]);
}

int main(int argc, char **argv)
{
	struct node nd = {0};
	char err[512], eal_buf[512], l1h[32];
	char *eargv[128];
	int eargc, r, rc = 1;
	sigset_t sigs;
	struct worker_arg wargs[CN_MAX_CORES];
	unsigned lcore, wid = 0;

	if (argc == 2 && strcmp(argv[1], "--list-metrics") == 0) {
		list_metrics();
		return 0;
	}
	r = cn_config_parse(argc, argv, &nd.cfg, stdout, err, sizeof(err));
	if (r == 1)
		return 0;
	if (r < 0) {
		fprintf(stderr, "cachenode: %s\n", err);
		return 2;
	}

	/* Signals go to the control plane only: block them before EAL starts threads. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	eargc = eal_args(&nd.cfg, argv[0], eargv, 128, eal_buf, sizeof(eal_buf));
	rte_log_set_global_level((uint32_t)nd.cfg.log_level);
	if (rte_eal_init(eargc, eargv) < 0) {
		fprintf(stderr, "cachenode: EAL initialisation failed: %s\n",
			rte_strerror(rte_errno));
		return 1;
	}
	rte_log_set_global_level((uint32_t)nd.cfg.log_level);
	if (rte_lcore_count() < nd.cfg.workers + 1) {
		LOG(ERR, "%u workers need %u lcores, EAL has %u", nd.cfg.workers,
		    nd.cfg.workers + 1, rte_lcore_count());
		goto out_eal;
	}
	clock_gettime(CLOCK_MONOTONIC, &nd.started);
	nd.started_wall = time(NULL);

	struct cn_engine_cfg ecfg = {
		.l1_size = nd.cfg.l1_size,
		.max_chunk = nd.cfg.max_chunk,
		.eviction = nd.cfg.eviction,
		.ncores = nd.cfg.workers + 1,
		.socket_id = (int)rte_socket_id(),
		.name = "cn",
	};
	r = cn_engine_create(&ecfg, &nd.engine);
	if (r < 0) {
		LOG(ERR, "cannot create the L1 tier (--l1-size %" PRIu64 ", --max-chunk %" PRIu64
			 "): %s", nd.cfg.l1_size, nd.cfg.max_chunk, strerror(-r));
		goto out_eal;
	}

	nd.sess_stats = aligned_alloc(CN_CACHE_LINE, sizeof(*nd.sess_stats) * nd.cfg.workers);
	nd.tport_stats = aligned_alloc(CN_CACHE_LINE, sizeof(*nd.tport_stats) * nd.cfg.workers);
	if (nd.sess_stats == NULL || nd.tport_stats == NULL) {
		LOG(ERR, "out of memory");
		goto out_engine;
	}
	memset(nd.sess_stats, 0, sizeof(*nd.sess_stats) * nd.cfg.workers);
	memset(nd.tport_stats, 0, sizeof(*nd.tport_stats) * nd.cfg.workers);
	nd.sctx = (struct cn_session_ctx){
		.engine = nd.engine,
		.node_id = nd.cfg.node_id,
		.max_keys = CN_PROTO_MAX_KEYS,
		.max_frame = CN_PROTO_MAX_FRAME,
		.stats = nd.sess_stats,
		.status_json = status_json,
		.status_arg = &nd,
	};

	/* "auto" picks verbs when a device is usable; this build has tcp only. */
	nd.tops = cn_transport_find("tcp");
	struct cn_server_cfg scfg = {
		.listen = nd.cfg.listen,
		.nworkers = nd.cfg.workers,
		.sess = &cn_session_ops,
		.sess_arg = &nd.sctx,
		.stats = nd.tport_stats,
	};
	r = nd.tops->server_create(&scfg, &nd.server);
	if (r < 0) {
		LOG(ERR, "cannot listen on %s: %s", nd.cfg.listen, strerror(-r));
		goto out_engine;
	}

	RTE_LCORE_FOREACH_WORKER(lcore) {
		if (wid == nd.cfg.workers)
			break;
		wargs[wid] = (struct worker_arg){&nd, wid};
		r = rte_eal_remote_launch(worker_main, &wargs[wid], lcore);
		if (r < 0) {
			LOG(ERR, "cannot start worker %u on lcore %u: %s", wid, lcore, strerror(-r));
			nd.tops->server_stop(nd.server, 0);
			goto out_wait;
		}
		wid++;
	}

	human_size(nd.cfg.l1_size, l1h, sizeof(l1h));
	LOG(NOTICE, "node %s serving on %s (%s, %u worker%s, L1 %s, max chunk %" PRIu64 ")",
	    nd.cfg.node_id, nd.tops->server_addr(nd.server), nd.tops->name, nd.cfg.workers,
	    nd.cfg.workers == 1 ? "" : "s", l1h, nd.cfg.max_chunk);
	LOG(NOTICE, "query it: cachenode-cli --node %s stat | ping | put KEY FILE | get KEY FILE",
	    nd.tops->server_addr(nd.server));
	LOG(NOTICE, "DPDK telemetry: dpdk-telemetry.py -f %s", nd.cfg.file_prefix);
	fflush(stdout);

	/* Control plane: wait for a signal. */
	for (;;) {
		siginfo_t si;
		struct timespec tick = {.tv_sec = 1};
		int sig = sigtimedwait(&sigs, &si, &tick);

		if (sig == SIGINT || sig == SIGTERM) {
			LOG(NOTICE, "%s: stopping (in-flight requests get %u ms)",
			    sig == SIGINT ? "SIGINT" : "SIGTERM", nd.cfg.shutdown_grace);
			break;
		}
	}
	nd.tops->server_stop(nd.server, (int)nd.cfg.shutdown_grace);
	rc = 0;
out_wait:
	rte_eal_mp_wait_lcore();
	if (atomic_load(&nd.worker_failed))
		rc = 1;
	nd.tops->server_destroy(&nd.server);
out_engine:
	cn_engine_destroy(&nd.engine);
	free(nd.sess_stats);
	free(nd.tport_stats);
out_eal:
	rte_eal_cleanup();
	if (rc == 0)
		LOG(NOTICE, "stopped cleanly");
	return rc;
}
