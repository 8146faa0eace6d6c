/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode: the daemon.
 *
 * main() reads as the architecture: options and the transport choice -> EAL
 * (owns cores and memory) -> engine (tiers) -> session context -> transport
 * server (under verbs, with the L1 pool as its RDMA region) -> one data-path
 * worker per worker lcore -> the main lcore waits on signals as the control
 * plane -> orderly teardown in reverse order.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/file.h>
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
#include "cn_node.h"
#include "cn_registry.h"
#include "cn_session.h"
#include "cn_tel.h"
#include "cn_tel_dpdk.h"
#include "cn_transport.h"

#define LOG(level, fmt, ...) RTE_LOG(level, USER1, "cachenode: " fmt "\n", ##__VA_ARGS__)

/* On shutdown each step of leaving the registry (connect, DEL+SREM, PUBLISH) waits this long. */
#define REG_LEAVE_TIMEOUT_MS 500

struct worker_arg {
	struct cn_node *node;
	unsigned id;
};

/* ---- EAL arguments ---- */

/*
 * Does the user's EAL argument list set one of @names? Long options match
 * "--opt" and "--opt=value"; short ones ("-l") also match their attached
 * form ("-l0-3"), as getopt accepts both.
 */
static bool has_arg(int argc, char **argv, const char *const *names)
{
	for (int i = 0; i < argc; i++)
		for (const char *const *n = names; *n; n++) {
			size_t l = strlen(*n);
			bool is_short = l == 2 && (*n)[0] == '-' && (*n)[1] != '-';

			if (strncmp(argv[i], *n, l) != 0)
				continue;
			if (is_short || argv[i][l] == '\0' || argv[i][l] == '=')
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
	/* asking for hugepages drops --no-huge (and --no-shconf); sizing drops -m */
	static const char *const huge[] = {"--huge-dir", "--socket-mem", "--in-memory", "--no-huge",
					   "--huge-unlink", "--legacy-mem",
					   "--single-file-segments", NULL};
	static const char *const mem[] = {"-m", "--socket-mem", NULL};
	static const char *const lcores[] = {"-l", "-c", "--lcores", NULL};
	static const char *const prefix[] = {"--file-prefix", NULL};
	static const char *const pci[] = {"-a", "-b", "--allow", "--block", "--no-pci", NULL};
	static const char *const shconf[] = {"--no-shconf", NULL};
	int argc = 0, ucount = cfg->eal_argc;
	char **uargs = cfg->eal_argv;
	cpu_set_t cpus;
	size_t used = 0;

	argv[argc++] = prog;
	if (!has_arg(ucount, uargs, huge))
		argv[argc++] = "--no-huge";
	if (!has_arg(ucount, uargs, mem)) {
		/*
		 * The L1 index lives in EAL memory (and, with hugepages, the
		 * pool and descriptors too): budget about 256 bytes per smallest
		 * (4 KiB) slot on top of 128 MiB for DPDK itself.
		 */
		uint64_t mb = 128 + (cfg->l1_size / 4096 * 256 >> 20);
		int n = snprintf(buf + used, buflen - used, "%" PRIu64, mb);

		argv[argc++] = "-m";
		argv[argc++] = buf + used;
		used += (size_t)n + 1;
	}
	if (!has_arg(ucount, uargs, pci))
		argv[argc++] = "--no-pci";
	if (!has_arg(ucount, uargs, shconf) && !has_arg(ucount, uargs, huge))
		argv[argc++] = "--no-shconf";
	if (!has_arg(ucount, uargs, prefix)) {
		int n = snprintf(buf + used, buflen - used, "--file-prefix=%s", cfg->file_prefix);
		argv[argc++] = buf + used;
		used += (size_t)n + 1;
	}
	if (!has_arg(ucount, uargs, lcores)) {
		/* every lcore may run on any CPU of this process's affinity mask */
		int n = snprintf(buf + used, buflen - used, "--lcores=(0-%u)@(", cfg->workers);
		bool first = true;

		CPU_ZERO(&cpus);
		sched_getaffinity(0, sizeof(cpus), &cpus);
		for (int c = 0; c < CPU_SETSIZE && used + (size_t)n + 8 < buflen; c++) {
			if (!CPU_ISSET(c, &cpus))
				continue;
			n += snprintf(buf + used + n, buflen - used - (size_t)n, "%s%d",
				      first ? "" : ",", c);
			first = false;
		}
		n += snprintf(buf + used + n, buflen - used - (size_t)n, ")");
		argv[argc++] = buf + used;
		used += (size_t)n + 1;
	}
	for (int i = 0; i < ucount && argc < max - 1; i++)
		argv[argc++] = uargs[i];
	argv[argc] = NULL;
	return argc;
}

/*
 * Two nodes with one node id would share a DPDK file prefix (and so a
 * telemetry socket) and a registry record. Hold an exclusive lock on a file
 * in the prefix's runtime directory for the process's lifetime; the kernel
 * drops it when the process ends, however it ends.
 */
static int claim_node_id(const struct cn_config *cfg)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/cachenode.lock", rte_eal_get_runtime_dir());
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		LOG(ERR, "cannot open %s: %s", path, strerror(errno));
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;
		LOG(ERR, "node id '%s' is already in use by a running node (DPDK file prefix %s)",
		    cfg->node_id, cfg->file_prefix);
		close(fd);
		return -err;
	}
	return 0; /* fd stays open (and locked) until exit */
}

/* ---- STATUS ---- */

/* The STATUS reply: the node's status tree (the same one /api/status serves). */
static char *status_json(void *arg, size_t *len)
{
	json_t *root = cn_node_status(arg);
	char *text;

	if (root == NULL)
		return NULL;
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (text)
		*len = strlen(text);
	return text;
}

/* ---- the reference (docs/telemetry.md embeds this output) ---- */

static void list_table(const char *title, const char *status_path, const char *prefix,
		       const char *labels, const struct cn_metric_desc *d, unsigned n)
{
	printf("### %s\n\nStatus tree: `%s.<name>`; Prometheus labels: %s.\n\n"
	       "| name | Prometheus family | type | meaning |\n|---|---|---|---|\n",
	       title, status_path, labels);
	for (unsigned i = 0; i < n; i++) {
		char prom[128];
		double scale;

		cn_node_prom_name(prom, sizeof(prom), prefix, &d[i], &scale);
		printf("| `%s` | `%s` | %s | %s%s |\n", d[i].name, prom,
		       d[i].type == CN_METRIC_COUNTER ? "counter" : "gauge", d[i].help,
		       scale != 1.0 ? " (Prometheus: seconds)" : "");
	}
	printf("\n");
}

static void list_metrics(void)
{
	printf("### Operations\n\nEach emits START and END events (one span) per operation; "
	       "`/cachenode/latency,<op>` and `cachenode_op_latency_seconds{op}` report them."
	       "\n\n| op | a span covers |\n|---|---|\n");
	for (unsigned i = 0; i < CN_TEL_OP_MAX; i++)
		printf("| `%s` | %s |\n", cn_tel_op_names[i], cn_tel_op_help[i]);
	printf("\n");
	list_table("L1 tier (per core)", "components.engine.components.l1.counters", CN_PROM_L1,
		   "`node`, `core`", cn_l1_metric_desc, cn_l1_metric_count);
	list_table("Requests (per worker)", "components.engine.requests", CN_PROM_REQUESTS,
		   "`node`, `core`", cn_session_metric_desc, cn_session_metric_count);
	list_table("Transport (per worker)", "components.transport.counters", CN_PROM_TRANSPORT,
		   "`node`, `core`", cn_transport_metric_desc, cn_transport_metric_count);
	list_table("RDMA verbs (per worker; zero under tcp)", "components.transport.verbs",
		   CN_PROM_VERBS, "`node`, `core`", cn_verbs_metric_desc, cn_verbs_metric_count);
	list_table("Telemetry (per core)", "components.telemetry.cores[]", CN_PROM_TELEMETRY,
		   "`node`, `core`", cn_tel_core_metric_desc, cn_tel_core_metric_count);
	list_table("Telemetry drain", "components.telemetry.counters", CN_PROM_TELEMETRY,
		   "`node`", cn_tel_drain_metric_desc, cn_tel_drain_metric_count);
	list_table("Registry", "components.registry.counters", CN_PROM_REGISTRY, "`node`",
		   cn_reg_metric_desc, cn_reg_metric_count);
	printf("### Registry record\n\nThe hash `cachenode:<cluster>:node:<node-id>` each node "
	       "writes every heartbeat (`--redis`); readers ignore fields not listed here and "
	       "count a record whose required field is missing or invalid in `bad_records`."
	       "\n\n| field | required | meaning |\n|---|---|---|\n");
	for (unsigned i = 0; i < cn_reg_field_count; i++)
		printf("| `%s` | %s | %s |\n", cn_reg_field_desc[i].name,
		       cn_reg_field_desc[i].required ? "yes" : "no", cn_reg_field_desc[i].help);
	printf("\n");
	list_table("L2 tier (node)", "components.l2.counters", CN_PROM_L2, "`node`",
		   cn_l2_metric_desc, cn_l2_metric_count);
	list_table("L2 tier (per peer)", "components.l2.peers[].counters", CN_PROM_L2,
		   "`node`, `peer`", cn_l2_peer_metric_desc, cn_l2_peer_metric_count);
	list_table("GPU tier (per device)", "components.gpu.devices[].counters", CN_PROM_GPU,
		   "`node`, `device`", cn_gpu_dev_metric_desc, cn_gpu_dev_metric_count);
	printf("### DPDK telemetry commands\n\n");
	cn_node_telemetry_list(stdout);
}

/* ---- GPU ---- */

/*
 * Open the GPU tier: present when CUDA finds a device (--gpu auto), else
 * absent with CUDA's reason, logged, and the node serves as before. When
 * present the L1 pool is pinned for DMA (cudaHostRegister). Fails only on
 * a bad configuration or out of memory.
 */
static int gpu_start(struct cn_node *nd)
{
	struct cn_gpu_cfg gcfg = {.ncores = nd->ncores, .mode = nd->cfg.gpu};
	struct cn_gpu_info *in;
	void *base;
	size_t len;
	int r = cn_gpu_open(&gcfg, &nd->gpu);

	if (r < 0) {
		LOG(ERR, "cannot set up the GPU tier: %s", strerror(-r));
		return r;
	}
	cn_gpu_set_rdma_mode(nd->gpu, "none",
			     "the node registers no device memory: engines do, with "
			     "cn_client_mem_register_device (dma-buf, else peer memory, else staging)");
	if (!cn_gpu_present(nd->gpu)) {
		LOG(NOTICE, "GPU tier absent: %s; GPU requests get CN_E_NODEV",
		    cn_gpu_reason(nd->gpu));
		return 0;
	}
	cn_l1_region(cn_engine_l1(nd->engine), &base, &len);
	r = cn_gpu_host_register(nd->gpu, base, len);
	in = calloc(1, sizeof(*in));
	if (in == NULL)
		return -ENOMEM;
	cn_gpu_get_info(nd->gpu, in);
	LOG(NOTICE, "GPU tier: %u device%s (%s%s), L1 pool %s%s", in->ndev,
	    in->ndev == 1 ? "" : "s", in->dev[0].name, in->ndev > 1 ? ", ..." : "",
	    r == 0 ? "pinned for DMA" : "not pinned: ", r == 0 ? "" : in->host_reason);
	free(in);
	return 0;
}

/* ---- L2 ---- */

/*
 * The registry as the L2 tier's peer source: the live records of its last
 * read (this node's own among them once it has joined). Before the first read
 * the list is empty; main()'s control loop calls cn_l2_refresh() whenever
 * the registry's snapshot generation moves.
 */
static int reg_source_snapshot(void *arg, struct cn_l2_peer_info *out, unsigned max)
{
	struct cn_node *nd = arg;
	const struct cn_reg_peers *p = cn_reg_peers(nd->reg);
	unsigned n = 0;

	for (unsigned i = 0; i < p->n && n < max; i++) {
		const struct cn_reg_record *rec = &p->peer[i].rec;

		snprintf(out[n].id, sizeof(out[n].id), "%s", rec->node_id);
		snprintf(out[n].addr, sizeof(out[n].addr), "%s", rec->address);
		snprintf(out[n].transport, sizeof(out[n].transport), "%s", rec->transport);
		n++;
	}
	nd->l2_reg_generation = p->generation;
	cn_reg_peers_put(&p);
	return (int)n;
}

static const struct cn_l2_source_ops reg_source = {
	.name = "registry",
	.snapshot = reg_source_snapshot,
};

/* Control loop: a new registry read changed who is live: place keys on the new set. */
static void l2_follow_registry(struct cn_node *nd)
{
	const struct cn_reg_peers *p;
	uint64_t gen;

	if (nd->l2 == NULL || nd->reg == NULL || nd->cfg.peers[0])
		return;
	p = cn_reg_peers(nd->reg);
	gen = p->generation;
	cn_reg_peers_put(&p);
	if (gen != nd->l2_reg_generation && cn_l2_refresh(nd->l2) < 0)
		LOG(WARNING, "L2: cannot take the registry's new peer list; keeping the old one");
}

static int l2_start(struct cn_node *nd)
{
	char why[256];
	int r;

	if (nd->cfg.peers[0] == '\0') { /* --redis without --peer: the registry says who is live */
		struct cn_l2_cfg rcfg = {
			.self_id = nd->cfg.node_id,
			.source = &reg_source,
			.source_arg = nd,
			.timeout_ms = nd->cfg.l2_timeout,
			.threads = nd->cfg.l2_threads,
			.write = nd->cfg.l2_write_through ? CN_L2_WRITE_THROUGH : CN_L2_WRITE_NONE,
			.max_chunk = nd->cfg.max_chunk,
		};

		r = cn_l2_create(&rcfg, &nd->l2);
		if (r < 0)
			LOG(ERR, "cannot start the L2 tier: %s", strerror(-r));
		else
			LOG(NOTICE, "L2: peers from the registry (cluster %s), write %s, timeout %u ms",
			    nd->cfg.cluster, nd->cfg.l2_write_through ? "through" : "none",
			    nd->cfg.l2_timeout);
		return r;
	}
	nd->l2_static = malloc(sizeof(*nd->l2_static));
	if (nd->l2_static == NULL)
		return -ENOMEM;
	r = cn_l2_static_parse(nd->cfg.peers, nd->l2_static, why, sizeof(why));
	if (r < 0) { /* checked at parse time already */
		LOG(ERR, "--peer %s", why);
		return r;
	}
	for (unsigned i = 0; i < nd->l2_static->n; i++) {
		const struct cn_l2_peer_info *pi = &nd->l2_static->peers[i];

		if (strcmp(pi->transport, "verbs") == 0 && cn_transport_find("verbs") == NULL &&
		    strcmp(pi->id, nd->cfg.node_id) != 0)
			LOG(WARNING, "--peer %s@%s/verbs: this build has no verbs transport; the "
				     "peer will be marked down on every attempt",
			    pi->id, pi->addr);
	}
	struct cn_l2_cfg lcfg = {
		.self_id = nd->cfg.node_id,
		.source = &cn_l2_static_source,
		.source_arg = nd->l2_static,
		.timeout_ms = nd->cfg.l2_timeout,
		.threads = nd->cfg.l2_threads,
		.write = nd->cfg.l2_write_through ? CN_L2_WRITE_THROUGH : CN_L2_WRITE_NONE,
		.max_chunk = nd->cfg.max_chunk,
	};
	r = cn_l2_create(&lcfg, &nd->l2);
	if (r < 0) {
		LOG(ERR, "cannot start the L2 tier: %s", strerror(-r));
		return r;
	}
	LOG(NOTICE, "L2: %u peer%s besides this node (static --peer; this node %s), write %s, "
		    "timeout %u ms, %u thread%s",
	    cn_l2_npeers(nd->l2), cn_l2_npeers(nd->l2) == 1 ? "" : "s",
	    cn_l2_self_member(nd->l2) ? "owns keys too" : "owns no keys: not in the list",
	    nd->cfg.l2_write_through ? "through" : "none", nd->cfg.l2_timeout,
	    nd->cfg.l2_threads, nd->cfg.l2_threads == 1 ? "" : "s");
	return 0;
}

/* ---- transport ---- */

/* The --rdma-dev value, or NULL for "any device". */
static const char *rdma_dev(const struct cn_config *cfg)
{
	return cfg->rdma_dev[0] ? cfg->rdma_dev : NULL;
}

/*
 * Resolve --transport (auto|tcp|verbs) to an ops table: nd->tops, with
 * nd->transport_chosen_by and, when auto fell back to tcp, the reason in
 * nd->transport_fallback. Runs before EAL (it only asks libibverbs), so an
 * unusable "verbs" is an option error like any other: a one-line message
 * naming the device and the reason on stderr, and -ENODEV (exit 2).
 */
static int pick_transport(struct cn_node *nd)
{
	const struct cn_config *cfg = &nd->cfg;
	const char *dev = rdma_dev(cfg);
	bool is_auto = strcmp(cfg->transport, "auto") == 0;
	char why[sizeof(nd->transport_fallback)];

	nd->tops = cn_transport_pick(cfg->transport, dev, why, sizeof(why));
	if (nd->tops == NULL) {
		fprintf(stderr, "cachenode: --transport %s%s%s: %s\n", cfg->transport,
			dev ? " --rdma-dev " : "", dev ? dev : "", why);
		return -ENODEV;
	}
	nd->transport_chosen_by = is_auto ? "auto" : "option";
	nd->transport_fallback[0] = '\0';
	if (is_auto && strcmp(nd->tops->name, "tcp") == 0)
		snprintf(nd->transport_fallback, sizeof(nd->transport_fallback), "%s",
			 why[0] ? why : "no usable RDMA device");
	return 0;
}

/* "transport verbs on rxe0 (--transport verbs)", "transport tcp (auto: <why>)" ... */
static void log_transport(const struct cn_node *nd)
{
	const char *dev = rdma_dev(&nd->cfg);
	bool is_auto = strcmp(nd->transport_chosen_by, "auto") == 0;

	if (strcmp(nd->tops->name, "verbs") == 0)
		LOG(NOTICE, "transport verbs on %s (%s)",
		    dev ? dev : "the RDMA device of the listen address",
		    is_auto ? "auto: an RDMA device is usable" : "--transport verbs");
	else if (is_auto)
		LOG(NOTICE, "transport %s (auto: %s)", nd->tops->name, nd->transport_fallback);
	else
		LOG(NOTICE, "transport %s (--transport %s)", nd->tops->name, nd->cfg.transport);
	if (dev != NULL && strcmp(nd->tops->name, "verbs") != 0)
		LOG(WARNING, "--rdma-dev %s is ignored: the transport is %s", dev, nd->tops->name);
}

/* ---- trace recording ---- */

/*
 * --trace-output: open the file with the configuration that matters for
 * replay in its header (the pool's real capacity needs the engine), and hand
 * the writer to telemetry, whose drain thread writes the records and whose
 * stop closes the file. A failure stops startup.
 */
static int trace_open(struct cn_node *nd)
{
	struct cn_l1_info info;
	struct cn_trace_meta meta = {
		.l1_size = nd->cfg.l1_size,
		.max_chunk = nd->cfg.max_chunk,
		.workers = nd->cfg.workers,
	};
	struct cn_trace_writer_cfg wcfg = {
		.path = nd->cfg.trace_output,
		.max_size = nd->cfg.trace_max_size,
		.meta = &meta,
	};
	struct cn_trace_writer *w;
	int r;

	cn_l1_get_info(cn_engine_l1(nd->engine), &info);
	meta.l1_capacity = info.capacity;
	snprintf(meta.node_id, sizeof(meta.node_id), "%s", nd->cfg.node_id);
	snprintf(meta.eviction, sizeof(meta.eviction), "%s", info.eviction);
	snprintf(meta.version, sizeof(meta.version), "cachenode %s", CN_VERSION);
	r = cn_trace_writer_open(&wcfg, &w);
	if (r == 0 && (r = cn_tel_trace_attach(nd->tel, w)) < 0)
		cn_trace_writer_close(&w, NULL);
	if (r < 0) {
		LOG(ERR, "--trace-output %s: %s", nd->cfg.trace_output, strerror(-r));
		return r;
	}
	return 0;
}

/* ---- workers and control plane ---- */

static int worker_main(void *p)
{
	struct worker_arg *wa = p;
	struct cn_node *nd = wa->node;
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
	struct cn_node nd = {0};
	char err[512], eal_buf[2048], l1h[32];
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
	if (pick_transport(&nd) < 0)
		return 2;

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
	if (claim_node_id(&nd.cfg) < 0)
		goto out_eal;
	if (rte_lcore_count() < nd.cfg.workers + 1) {
		LOG(ERR, "%u workers need %u lcores, EAL has %u", nd.cfg.workers,
		    nd.cfg.workers + 1, rte_lcore_count());
		goto out_eal;
	}
	clock_gettime(CLOCK_MONOTONIC, &nd.started);
	nd.started_wall = time(NULL);

	nd.ncores = nd.cfg.workers + 1;
	struct cn_tel_cfg tcfg = {
		.ncores = nd.ncores,
		.ring_size = nd.cfg.telemetry_ring_size,
		.enabled = nd.cfg.telemetry,
		.trace_ring_size = nd.cfg.trace_output[0] ? nd.cfg.trace_ring_size : 0,
		.name = "cn",
		.socket_id = (int)rte_socket_id(),
	};
	r = cn_tel_create(&tcfg, &nd.tel);
	if (r < 0) {
		LOG(ERR, "cannot set up telemetry (ring size %u, trace ring size %u): %s",
		    tcfg.ring_size, tcfg.trace_ring_size, strerror(-r));
		goto out_eal;
	}
	if (nd.cfg.trace_spans[0]) {
		const struct cn_tel_sub_ops *sops;
		void *sarg;

		r = cn_tel_chrome_sink_create(nd.cfg.trace_spans, nd.cfg.node_id, &sops, &sarg);
		if (r == 0 && (r = cn_tel_subscribe(nd.tel, sops, sarg)) < 0)
			sops->close(sarg); /* not subscribed: still ours to close */
		if (r < 0) {
			LOG(ERR, "--trace-spans %s: %s", nd.cfg.trace_spans, strerror(-r));
			goto out_tel;
		}
	}

	struct cn_engine_cfg ecfg = {
		.l1_size = nd.cfg.l1_size,
		.max_chunk = nd.cfg.max_chunk,
		.eviction = nd.cfg.eviction,
		.ncores = nd.ncores,
		.socket_id = (int)rte_socket_id(),
		.name = "cn",
		.tel = nd.tel,
	};
	r = cn_engine_create(&ecfg, &nd.engine);
	if (r < 0) {
		LOG(ERR, "cannot create the L1 tier (--l1-size %" PRIu64 ", --max-chunk %" PRIu64
			 "): %s", nd.cfg.l1_size, nd.cfg.max_chunk, strerror(-r));
		goto out_tel;
	}
	if (nd.cfg.trace_output[0] && trace_open(&nd) < 0)
		goto out_engine;

	nd.sess_stats = aligned_alloc(CN_CACHE_LINE, sizeof(*nd.sess_stats) * nd.cfg.workers);
	nd.tport_stats = aligned_alloc(CN_CACHE_LINE, sizeof(*nd.tport_stats) * nd.cfg.workers);
	nd.verbs_stats = aligned_alloc(CN_CACHE_LINE, sizeof(*nd.verbs_stats) * nd.cfg.workers);
	if (nd.sess_stats == NULL || nd.tport_stats == NULL || nd.verbs_stats == NULL) {
		LOG(ERR, "out of memory");
		goto out_engine;
	}
	memset(nd.sess_stats, 0, sizeof(*nd.sess_stats) * nd.cfg.workers);
	memset(nd.tport_stats, 0, sizeof(*nd.tport_stats) * nd.cfg.workers);
	memset(nd.verbs_stats, 0, sizeof(*nd.verbs_stats) * nd.cfg.workers);
	if ((nd.cfg.peers[0] || nd.cfg.redis[0]) && l2_start(&nd) < 0)
		goto out_engine;
	if (gpu_start(&nd) < 0)
		goto out_engine;
	nd.sctx = (struct cn_session_ctx){
		.engine = nd.engine,
		.node_id = nd.cfg.node_id,
		.max_keys = CN_PROTO_MAX_KEYS,
		.max_frame = CN_PROTO_MAX_FRAME,
		.stats = nd.sess_stats,
		.status_json = status_json,
		.status_arg = &nd,
		.l2 = nd.l2,
		.gpu = nd.gpu,
	};

	/*
	 * The transport was picked before EAL (pick_transport). Under verbs the
	 * server registers the L1 pool, and only it, for RDMA; the listen
	 * address means the same (rdma_cm binds HOST:PORT).
	 */
	struct cn_server_cfg scfg = {
		.listen = nd.cfg.listen,
		.nworkers = nd.cfg.workers,
		.sess = &cn_session_ops,
		.sess_arg = &nd.sctx,
		.stats = nd.tport_stats,
		.request_timeout_ms = nd.cfg.request_timeout,
		.rdma_dev = rdma_dev(&nd.cfg),
		.verbs_stats = nd.verbs_stats,
	};
	cn_l1_region(cn_engine_l1(nd.engine), &scfg.rdma_region, &scfg.rdma_region_len);
	log_transport(&nd);
	r = nd.tops->server_create(&scfg, &nd.server);
	if (r < 0 && strcmp(nd.transport_chosen_by, "auto") == 0 &&
	    strcmp(nd.tops->name, "tcp") != 0) {
		/* auto found a device, but verbs cannot serve this address: tcp can */
		snprintf(nd.transport_fallback, sizeof(nd.transport_fallback),
			 "%s cannot listen on %s: %s", nd.tops->name, nd.cfg.listen, strerror(-r));
		nd.tops = cn_transport_find("tcp");
		log_transport(&nd);
		r = nd.tops->server_create(&scfg, &nd.server);
	}
	if (r < 0) {
		bool on_dev = scfg.rdma_dev != NULL && strcmp(nd.tops->name, "tcp") != 0;

		LOG(ERR, "cannot listen on %s (%s%s%s): %s", nd.cfg.listen, nd.tops->name,
		    on_dev ? " on " : "", on_dev ? scfg.rdma_dev : "", strerror(-r));
		goto out_engine;
	}

	r = cn_tel_start(nd.tel);
	if (r < 0) {
		LOG(ERR, "cannot start the telemetry drain thread: %s", strerror(-r));
		goto out_server;
	}
	r = cn_node_telemetry_register(&nd);
	if (r < 0)
		LOG(WARNING, "DPDK telemetry commands not registered: %s", strerror(-r));
	if (nd.cfg.http[0]) {
		r = cn_http_start(&nd, nd.cfg.http, &nd.http);
		if (r < 0) {
			LOG(ERR, "cannot serve HTTP on %s: %s", nd.cfg.http, strerror(-r));
			goto out_drain;
		}
	}

	if (nd.cfg.redis[0]) {
		struct cn_reg_cfg rcfg = {
			.url = nd.cfg.redis,
			.cluster = nd.cfg.cluster,
			.node_id = nd.cfg.node_id,
			.heartbeat_ms = nd.cfg.heartbeat_ms,
			.timeout_ms = nd.cfg.redis_timeout_ms,
			.fill = cn_node_reg_fill,
			.fill_arg = &nd,
		};

		r = cn_reg_create(&rcfg, &nd.reg);
		if (r < 0) {
			LOG(ERR, "cannot set up the registry client: %s", strerror(-r));
			goto out_http;
		}
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
	if (strcmp(nd.tops->name, "tcp") == 0)
		LOG(NOTICE,
		    "query it: cachenode-cli --node %s stat | ping | put KEY FILE | get KEY FILE",
		    nd.tops->server_addr(nd.server));
	else
		LOG(NOTICE, "clients reach it over RDMA only: rdma_cm to %s, libcachenode with "
			    "transport \"%s\"; status over HTTP or DPDK telemetry below",
		    nd.tops->server_addr(nd.server), nd.tops->name);
	LOG(NOTICE, "DPDK telemetry: dpdk-telemetry.py -f %s (try /cachenode/stats)",
	    nd.cfg.file_prefix);
	if (nd.http)
		LOG(NOTICE, "HTTP: http://%s/metrics /api/status /api/healthz", cn_http_addr(nd.http));
	LOG(NOTICE, "telemetry %s", nd.cfg.telemetry ? "on" : "off (--no-telemetry)");
	if (nd.cfg.trace_output[0])
		LOG(NOTICE, "recording every operation to %s (%s); replay it with cachenode-replay",
		    nd.cfg.trace_output, nd.cfg.trace_max_size ? "rotating" : "one file");
	/* serving first, then join: peers that read the record can use it at once */
	if (nd.reg != NULL) {
		struct cn_reg_info ri;

		cn_reg_get_info(nd.reg, &ri);
		r = cn_reg_start(nd.reg);
		if (r < 0)
			LOG(ERR, "cannot start the registry thread: %s; serving standalone",
			    strerror(-r));
		else
			LOG(NOTICE, "registry: %s, cluster %s, heartbeat %u ms (cachenode-status "
				    "--redis %s --cluster %s)",
			    ri.redis, ri.cluster, ri.heartbeat_ms, ri.redis, ri.cluster);
	} else {
		LOG(NOTICE, "standalone: no registry (--redis)");
	}
	fflush(stdout);

	/* Control plane: wait for a signal. */
	for (;;) {
		siginfo_t si;
		/* with registry-fed L2 peers, follow the registry's reads closely */
		bool follow = nd.l2 != NULL && nd.reg != NULL && nd.cfg.peers[0] == '\0';
		struct timespec tick = {.tv_sec = follow ? 0 : 1, .tv_nsec = follow ? 200000000L : 0};
		int sig = sigtimedwait(&sigs, &si, &tick);

		l2_follow_registry(&nd);
		if (sig == SIGINT || sig == SIGTERM) {
			LOG(NOTICE, "%s: stopping (in-flight requests get %u ms)",
			    sig == SIGINT ? "SIGINT" : "SIGTERM", nd.cfg.shutdown_grace);
			break;
		}
	}
	/* leave the cluster first, so peers stop sending here while we drain */
	cn_reg_stop(nd.reg, REG_LEAVE_TIMEOUT_MS);
	nd.tops->server_stop(nd.server, (int)nd.cfg.shutdown_grace);
	rc = 0;
out_wait:
	rte_eal_mp_wait_lcore();
	if (atomic_load(&nd.worker_failed))
		rc = 1;
	cn_reg_stop(nd.reg, REG_LEAVE_TIMEOUT_MS); /* a no-op after a signal */
out_http:
	/* DPDK commands read nd (nd.http, nd.reg among it) on their own threads: they go first */
	cn_tel_dpdk_unregister();
	cn_http_stop(&nd.http);
	cn_reg_destroy(&nd.reg); /* nothing reads it any more */
out_drain:
	cn_tel_dpdk_unregister(); /* again on the error path; a no-op when done */
	cn_tel_stop(nd.tel); /* a last drain pass: every event emitted reaches its subscribers */
out_server:
	/* the L2 threads hand every job back before the server's queues are freed */
	cn_l2_stop(nd.l2);
	/* so do the GPU copies: every completion is posted before the queues go */
	cn_gpu_sync(nd.gpu);
	nd.tops->server_destroy(&nd.server);
out_engine:
	cn_gpu_close(nd.gpu); /* after the server: orphaned requests closed their regions */
	cn_l2_destroy(&nd.l2);
	free(nd.l2_static);
	cn_engine_destroy(&nd.engine);
	free(nd.sess_stats);
	free(nd.tport_stats);
	free(nd.verbs_stats);
out_tel:
	cn_tel_destroy(&nd.tel);
out_eal:
	rte_eal_cleanup();
	if (rc == 0)
		LOG(NOTICE, "stopped cleanly");
	return rc;
}
