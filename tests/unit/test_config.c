/* SPDX-License-Identifier: Apache-2.0 */
/* Node options: defaults, sizes, the config file, refusals with clear messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cn_config.h"

static int parse(struct cn_config *cfg, char *err, const char *first, ...)
{
	char *argv[32] = {"cachenode"};
	int argc = 1;
	va_list ap;
	FILE *out = fopen("/dev/null", "w");
	int r;

	va_start(ap, first);
	for (const char *a = first; a != NULL; a = va_arg(ap, const char *))
		argv[argc++] = (char *)a;
	va_end(ap);
	r = cn_config_parse(argc, argv, cfg, out, err, 256);
	fclose(out);
	return r;
}

static void defaults(void **state)
{
	struct cn_config cfg;
	char err[256] = "";

	assert_int_equal(parse(&cfg, err, NULL), 0);
	assert_string_equal(cfg.listen, "127.0.0.1:7700");
	assert_int_equal(cfg.l1_size, 1ull << 30);
	assert_int_equal(cfg.max_chunk, 16ull << 20);
	assert_int_equal(cfg.workers, 1);
	assert_string_equal(cfg.eviction, "lru");
	/* node id derived from host and port; file prefix from the node id */
	assert_non_null(strstr(cfg.node_id, "-7700"));
	assert_int_equal(strncmp(cfg.file_prefix, "cachenode-", 10), 0);
	assert_int_equal(cfg.eal_argc, 0);
}

static void sizes(void **state)
{
	uint64_t v;

	assert_int_equal(cn_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(cn_parse_size("64K", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(cn_parse_size("16M", &v), 0);
	assert_int_equal(v, 16u << 20);
	assert_int_equal(cn_parse_size("2g", &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(cn_parse_size("1GiB", &v), 0);
	assert_int_equal(v, 1ull << 30);
	assert_int_equal(cn_parse_size("", &v), -EINVAL);
	assert_int_equal(cn_parse_size("-1", &v), -EINVAL);
	assert_int_equal(cn_parse_size("12Q", &v), -EINVAL);
	assert_int_equal(cn_parse_size("99999999999999999999", &v), -EINVAL);
}

static void options_and_eal_args(void **state)
{
	struct cn_config cfg;
	char err[256] = "";

	assert_int_equal(parse(&cfg, err, "--listen", "0.0.0.0:9000", "--l1-size=256M",
			       "--max-chunk", "1M", "--workers", "3", "--node-id", "n1",
			       "--log-level", "debug", "--", "--no-telemetry", "-m", "64", NULL),
			 0);
	assert_string_equal(cfg.listen, "0.0.0.0:9000");
	assert_int_equal(cfg.l1_size, 256u << 20);
	assert_int_equal(cfg.max_chunk, 1u << 20);
	assert_int_equal(cfg.workers, 3);
	assert_string_equal(cfg.node_id, "n1");
	assert_string_equal(cfg.file_prefix, "cachenode-n1");
	assert_int_equal(cfg.eal_argc, 3);
	assert_string_equal(cfg.eal_argv[0], "--no-telemetry");
}

static void refusals_say_why(void **state)
{
	struct cn_config cfg;
	char err[256];

	assert_int_equal(parse(&cfg, err, "--l1-size", "lots", NULL), -EINVAL);
	assert_non_null(strstr(err, "--l1-size 'lots'"));
	assert_int_equal(parse(&cfg, err, "--workers", "0", NULL), -EINVAL);
	assert_non_null(strstr(err, "--workers"));
	assert_int_equal(parse(&cfg, err, "--eviction", "random", NULL), -EINVAL);
	assert_non_null(strstr(err, "lru"));
	assert_int_equal(parse(&cfg, err, "--listen", "nohost", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--listen", "h:99999", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--node-id", "bad id", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--bogus", NULL), -EINVAL);
	assert_non_null(strstr(err, "--bogus"));
	assert_int_equal(parse(&cfg, err, "--listen", NULL), -EINVAL);
	assert_non_null(strstr(err, "needs a value"));
	assert_int_equal(parse(&cfg, err, "stray", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--l1-size", "1M", "--max-chunk", "2M", NULL), -EINVAL);
	assert_non_null(strstr(err, "larger than --l1-size"));
	assert_int_equal(parse(&cfg, err, "--help", NULL), 1);
	assert_int_equal(parse(&cfg, err, "--version", NULL), 1);
}

static void trace_options(void **state)
{
	struct cn_config cfg;
	char err[256];

	assert_int_equal(parse(&cfg, err, NULL), 0);
	assert_string_equal(cfg.trace_output, ""); /* off unless asked for */
	assert_int_equal(cfg.trace_max_size, 0);
	assert_int_equal(cfg.trace_ring_size, 65536);
	assert_int_equal(parse(&cfg, err, "--trace-output", "/tmp/n1.trace", "--trace-max-size",
			       "64M", "--trace-ring-size", "4096", NULL),
			 0);
	assert_string_equal(cfg.trace_output, "/tmp/n1.trace");
	assert_int_equal(cfg.trace_max_size, 64u << 20);
	assert_int_equal(cfg.trace_ring_size, 4096);
	assert_int_equal(parse(&cfg, err, "--trace-max-size", "0", NULL), 0);
	assert_int_equal(cfg.trace_max_size, 0);
	assert_int_equal(parse(&cfg, err, "--trace-max-size", "1000", NULL), -EINVAL);
	assert_non_null(strstr(err, "--trace-max-size '1000'"));
	assert_non_null(strstr(err, "64K"));
	assert_int_equal(parse(&cfg, err, "--trace-ring-size", "1000", NULL), -EINVAL);
	assert_non_null(strstr(err, "power of two"));
	assert_int_equal(parse(&cfg, err, "--trace-ring-size", "32", NULL), -EINVAL);
}

static void config_file(void **state)
{
	struct cn_config cfg;
	char err[256], path[] = "/tmp/cn_cfg_XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	fprintf(f, "# a node\nlisten = 127.0.0.1:7800\nl1-size 64M\nmax_chunk=2M # trailing\n\n"
		   "workers = 2\n");
	fclose(f);
	/* The file sets values; the command line overrides them. */
	assert_int_equal(parse(&cfg, err, "--config", path, "--workers", "4", NULL), 0);
	assert_string_equal(cfg.listen, "127.0.0.1:7800");
	assert_int_equal(cfg.l1_size, 64u << 20);
	assert_int_equal(cfg.max_chunk, 2u << 20);
	assert_int_equal(cfg.workers, 4);

	f = fopen(path, "w");
	fprintf(f, "listen = 127.0.0.1:7800\nfrobnicate = yes\n");
	fclose(f);
	assert_int_equal(parse(&cfg, err, "--config", path, NULL), -EINVAL);
	assert_non_null(strstr(err, ":2: unknown key 'frobnicate'"));

	f = fopen(path, "w");
	fprintf(f, "workers = many\n");
	fclose(f);
	assert_int_equal(parse(&cfg, err, "--config", path, NULL), -EINVAL);
	assert_non_null(strstr(err, ":1: --workers 'many'"));
	unlink(path);

	assert_int_equal(parse(&cfg, err, "--config", "/nonexistent/cachenode.conf", NULL),
			 -EINVAL);
	assert_non_null(strstr(err, "No such file"));
}

/* --transport and --rdma-dev: checked at parse time, from the file too, listed by --help. */
static void transport_options(void **state)
{
	struct cn_config cfg;
	char err[256], path[] = "/tmp/cn_cfg_XXXXXX", *help = NULL;
	size_t helplen = 0;
	int fd;
	FILE *f;

	assert_int_equal(parse(&cfg, err, NULL), 0);
	assert_string_equal(cfg.transport, "auto");
	assert_string_equal(cfg.rdma_dev, "");
	assert_int_equal(parse(&cfg, err, "--transport", "tcp", NULL), 0);
	assert_string_equal(cfg.transport, "tcp");
	/* verbs parses in any build: whether it is usable is decided at startup */
	assert_int_equal(parse(&cfg, err, "--transport=verbs", "--rdma-dev", "mlx5_0", NULL), 0);
	assert_string_equal(cfg.transport, "verbs");
	assert_string_equal(cfg.rdma_dev, "mlx5_0");

	assert_int_equal(parse(&cfg, err, "--transport", "bogus", NULL), -EINVAL);
	assert_string_equal(err, "--transport 'bogus': expected auto, tcp or verbs");
	assert_int_equal(parse(&cfg, err, "--transport", "", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--transport", "TCP", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--rdma-dev", "../mlx5_0", NULL), -EINVAL);
	assert_non_null(strstr(err, "--rdma-dev '../mlx5_0': expected a device name"));
	assert_int_equal(parse(&cfg, err, "--rdma-dev",
			       "a123456789012345678901234567890123456789012345678901234567890123",
			       NULL),
			 -EINVAL);

	/* the file sets both (an empty value = any device), the command line wins */
	fd = mkstemp(path);
	f = fdopen(fd, "w");
	fprintf(f, "transport = verbs\nrdma_dev = rxe0\n");
	fclose(f);
	assert_int_equal(parse(&cfg, err, "--config", path, NULL), 0);
	assert_string_equal(cfg.transport, "verbs");
	assert_string_equal(cfg.rdma_dev, "rxe0");
	assert_int_equal(parse(&cfg, err, "--config", path, "--transport", "tcp", "--rdma-dev", "",
			       NULL),
			 0);
	assert_string_equal(cfg.transport, "tcp");
	assert_string_equal(cfg.rdma_dev, "");
	f = fopen(path, "w");
	fprintf(f, "workers = 2\ntransport = rdma\n");
	fclose(f);
	assert_int_equal(parse(&cfg, err, "--config", path, NULL), -EINVAL);
	assert_non_null(strstr(err, ":2: --transport 'rdma': expected auto, tcp or verbs"));
	unlink(path);

	f = open_memstream(&help, &helplen);
	cn_config_usage(f, "cachenode");
	fclose(f);
	assert_non_null(strstr(help, "--transport NAME"));
	assert_non_null(strstr(help, "[auto]"));
	assert_non_null(strstr(help, "--rdma-dev NAME"));
	free(help);
}

/* --redis, --cluster, --heartbeat, --redis-timeout: defaults, units, refusals (no password echoed). */
static void registry_options(void **state)
{
	struct cn_config cfg;
	char err[256], path[] = "/tmp/cn_cfg_XXXXXX", *help = NULL;
	size_t helplen = 0;
	FILE *f;
	int fd;

	assert_int_equal(parse(&cfg, err, NULL), 0);
	assert_string_equal(cfg.redis, ""); /* standalone */
	assert_string_equal(cfg.cluster, "default");
	assert_int_equal(cfg.heartbeat_ms, 1000);
	assert_int_equal(cfg.redis_timeout_ms, 0);

	assert_int_equal(parse(&cfg, err, "--redis", "redis://:pw@10.0.0.1:6380/2", "--cluster",
			       "prod-a", "--heartbeat", "250ms", "--redis-timeout", "50", NULL),
			 0);
	assert_string_equal(cfg.redis, "redis://:pw@10.0.0.1:6380/2");
	assert_string_equal(cfg.cluster, "prod-a");
	assert_int_equal(cfg.heartbeat_ms, 250);
	assert_int_equal(cfg.redis_timeout_ms, 50);
	assert_int_equal(parse(&cfg, err, "--heartbeat", "2s", NULL), 0);
	assert_int_equal(cfg.heartbeat_ms, 2000);
	assert_int_equal(parse(&cfg, err, "--heartbeat", "3", NULL), 0); /* seconds */
	assert_int_equal(cfg.heartbeat_ms, 3000);

	assert_int_equal(parse(&cfg, err, "--heartbeat", "10ms", NULL), -EINVAL);
	assert_non_null(strstr(err, "--heartbeat '10ms': expected a time from 50ms"));
	assert_int_equal(parse(&cfg, err, "--heartbeat", "1h", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--heartbeat", "3601s", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--cluster", "a:b", NULL), -EINVAL);
	assert_non_null(strstr(err, "--cluster 'a:b'"));
	assert_int_equal(parse(&cfg, err, "--redis-timeout", "5", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--redis", "http://h:1", NULL), -EINVAL);
	assert_non_null(strstr(err, "--redis: expected redis://"));
	/* a refused URL is never repeated: it may hold a password */
	assert_int_equal(parse(&cfg, err, "--redis", "redis://:topsecret@h:99999", NULL), -EINVAL);
	assert_null(strstr(err, "topsecret"));
	assert_non_null(strstr(err, "port"));

	/* from the file, where a password belongs (not in ps) */
	fd = mkstemp(path);
	f = fdopen(fd, "w");
	fprintf(f, "redis = redis://:pw@redis:6379\ncluster = c1\nheartbeat = 500ms\n");
	fclose(f);
	assert_int_equal(parse(&cfg, err, "--config", path, NULL), 0);
	assert_string_equal(cfg.redis, "redis://:pw@redis:6379");
	assert_string_equal(cfg.cluster, "c1");
	assert_int_equal(cfg.heartbeat_ms, 500);
	unlink(path);

	f = open_memstream(&help, &helplen);
	cn_config_usage(f, "cachenode");
	fclose(f);
	assert_non_null(strstr(help, "--redis URL"));
	assert_non_null(strstr(help, "--cluster NAME"));
	assert_non_null(strstr(help, "--heartbeat TIME"));
	assert_non_null(strstr(help, "[1s]"));
	free(help);
}

/* --peer is repeatable and joined; every entry is checked, and the whole list for duplicates. */
static void l2_options(void **state)
{
	struct cn_config cfg;
	char err[256] = "", *help = NULL;
	size_t helplen = 0;
	FILE *f;

	assert_int_equal(parse(&cfg, err, NULL), 0);
	assert_string_equal(cfg.peers, "");
	assert_true(cfg.l2_write_through);
	assert_int_equal(cfg.l2_timeout, 1000);
	assert_int_equal(cfg.l2_threads, 2);
	assert_int_equal(parse(&cfg, err, "--peer", "a@127.0.0.1:1,b@h:2", "--peer", "c@[::1]:3",
			       "--l2-write", "none", "--l2-timeout", "250", "--l2-threads", "4",
			       NULL),
			 0);
	assert_string_equal(cfg.peers, "a@127.0.0.1:1,b@h:2,c@[::1]:3");
	assert_false(cfg.l2_write_through);
	assert_int_equal(cfg.l2_timeout, 250);
	assert_int_equal(cfg.l2_threads, 4);

	assert_int_equal(parse(&cfg, err, "--peer", "127.0.0.1:7700", NULL), -EINVAL);
	assert_non_null(strstr(err, "ID@HOST:PORT"));
	/* a transport suffix per peer; an unknown one is named */
	assert_int_equal(parse(&cfg, err, "--peer", "a@10.0.0.1:1/verbs,b@h:2/auto", "--peer",
			       "c@h:3/tcp", NULL),
			 0);
	assert_string_equal(cfg.peers, "a@10.0.0.1:1/verbs,b@h:2/auto,c@h:3/tcp");
	assert_int_equal(parse(&cfg, err, "--peer", "a@h:1/rdma", NULL), -EINVAL);
	assert_non_null(strstr(err, "--peer 'a@h:1/rdma': unknown transport 'rdma'"));
	assert_non_null(strstr(err, "tcp, verbs or auto"));
	assert_int_equal(parse(&cfg, err, "--peer", "a@h:1/verbs", "--peer", "a@h:2/tcp", NULL),
			 -EINVAL);
	assert_non_null(strstr(err, "'a' given twice"));
	assert_int_equal(parse(&cfg, err, "--peer", "a@h:1", "--peer", "a@h:2", NULL), -EINVAL);
	assert_non_null(strstr(err, "'a' given twice"));
	assert_int_equal(parse(&cfg, err, "--l2-write", "back", NULL), -EINVAL);
	assert_non_null(strstr(err, "through or none"));
	assert_int_equal(parse(&cfg, err, "--l2-timeout", "5", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, err, "--l2-threads", "0", NULL), -EINVAL);

	f = open_memstream(&help, &helplen);
	cn_config_usage(f, "cachenode");
	fclose(f);
	assert_non_null(strstr(help, "--peer ID@HOST:PORT[/T]"));
	assert_non_null(strstr(help, "tcp (default), verbs or auto"));
	free(help);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults),
		cmocka_unit_test(sizes),
		cmocka_unit_test(options_and_eal_args),
		cmocka_unit_test(refusals_say_why),
		cmocka_unit_test(trace_options),
		cmocka_unit_test(config_file),
		cmocka_unit_test(transport_options),
		cmocka_unit_test(registry_options),
		cmocka_unit_test(l2_options),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
