/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Node configuration: command-line options and the optional config file,
 * both generated from one table (CN_OPTIONS), so --help, the file keys and
 * docs/operations.md list the same names and defaults.
 */
#ifndef CN_CONFIG_H
#define CN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* X(name, argument, default, help). name is the long option and the file key. */
#define CN_OPTIONS(X)                                                                          \
	X(config, "FILE", "", "read options from FILE (key = value lines); the command line wins") \
	X(listen, "HOST:PORT", "127.0.0.1:7700", "address to serve clients and peers on")       \
	X(l1_size, "SIZE", "1G", "L1 pool size (K/M/G suffixes)")                              \
	X(max_chunk, "SIZE", "16M", "largest chunk accepted (also the slab page size)")        \
	X(node_id, "ID", "", "node name (default: <hostname>-<port>)")                         \
	X(workers, "N", "1", "data-path worker lcores")                                        \
	X(eviction, "POLICY", "lru", "eviction policy (lru)")                                  \
	X(transport, "NAME", "auto",                                                           \
	  "client transport: auto (verbs if an RDMA device is usable, else tcp), tcp or verbs")  \
	X(rdma_dev, "NAME", "", "RDMA device for verbs, e.g. mlx5_0 or rxe0 (default: any)")  \
	X(shutdown_grace, "MS", "5000", "on SIGTERM, how long in-flight requests may finish")   \
	X(request_timeout, "MS", "30000", "cut a connection stuck mid-request this long")       \
	X(log_level, "LEVEL", "notice", "error, warning, notice, info or debug")                \
	X(http, "HOST:PORT", "127.0.0.1:9190", "HTTP for /metrics, /api/status, /api/healthz; off = none") \
	X(no_telemetry, "", "", "switch telemetry events off (counters stay)")                 \
	X(telemetry_ring_size, "N", "16384", "events per core ring (power of two, 64..16M)")    \
	X(trace_spans, "FILE", "", "write every span as Chrome trace-event JSON to FILE")       \
	X(trace_output, "FILE", "", "record every operation to FILE for cachenode-replay")     \
	X(trace_max_size, "SIZE", "0", "rotate --trace-output at SIZE (FILE.1, ...); 0 = never") \
	X(trace_ring_size, "N", "65536", "trace ring slots per core (32 B; a record: 2 + keys)") \
	X(redis, "URL", "",                                                                        \
	  "cluster registry: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (default: standalone)")   \
	X(cluster, "NAME", "default", "cluster name in the registry's keys")                       \
	X(heartbeat, "TIME", "1s", "registry heartbeat, e.g. 1s or 250ms; a record expires after 3") \
	X(redis_timeout, "MS", "0", "Redis connect and command timeout (0: half the heartbeat, 100..1000)") \
	X(peer, "ID@HOST:PORT[/T]", "", "an L2 peer node, reached over T = tcp (default), verbs or auto (repeatable, or a comma list); may name this node") \
	X(l2_write, "MODE", "through", "stores: through (also copied to the key's owner peer) or none") \
	X(l2_timeout, "MS", "1000", "L2: connect and I/O timeout per peer request; a peer that misses it backs off") \
	X(l2_threads, "N", "2", "L2: threads that talk to peers (one blocking request each)") \
	X(gpu, "MODE", "auto", "GPU tier: auto (CUDA devices when usable, else absent) or off")

/* An empty argument column marks a flag (no value; "true"/"false" in the config file). */

struct cn_config {
	char listen[128];
	uint64_t l1_size;
	uint64_t max_chunk;
	char node_id[65];
	unsigned workers;
	char eviction[16];
	char transport[16]; /* "auto", "tcp" or "verbs" (checked at parse time) */
	char rdma_dev[64];  /* "" = any device (the one the listen address is on) */
	unsigned shutdown_grace;
	unsigned request_timeout;
	int log_level; /* RTE_LOG_ERR .. RTE_LOG_DEBUG */
	char http[128]; /* "" = no HTTP server */
	bool telemetry;
	unsigned telemetry_ring_size;
	char trace_spans[256];
	char trace_output[256]; /* "" = no trace recording */
	uint64_t trace_max_size; /* 0 = one file */
	unsigned trace_ring_size;
	char redis[512];	 /* "" = standalone (no registry) */
	char cluster[65];
	unsigned heartbeat_ms;	 /* 50..3600000 */
	unsigned redis_timeout_ms; /* 0 = derived from the heartbeat */
	char peers[4096];     /* the --peer values joined by ',' ("" = no L2 peers) */
	bool l2_write_through; /* --l2-write through */
	unsigned l2_timeout;
	unsigned l2_threads;
	char gpu[8]; /* "auto" or "off" */
	char file_prefix[96];
	/* EAL arguments given after "--": point into the caller's argv */
	int eal_argc;
	char **eal_argv;
};

/*
 * cn_config_parse - defaults, then the config file (if --config), then argv.
 * Returns 0, 1 if --help or --version was handled (printed to @out; exit 0),
 * or -EINVAL with a one-line reason in @err (exit 2).
 */
int cn_config_parse(int argc, char **argv, struct cn_config *cfg, FILE *out, char *err,
		    size_t errlen);

/* cn_parse_size - "512", "64K", "16M", "1G" (powers of 1024) -> bytes. 0 or -EINVAL. */
int cn_parse_size(const char *s, uint64_t *out);

/* cn_config_usage - the --help text, generated from CN_OPTIONS. */
void cn_config_usage(FILE *f, const char *prog);

#endif /* CN_CONFIG_H */
