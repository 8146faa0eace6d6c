/* SPDX-License-Identifier: Apache-2.0 */
/* Node options: one table drives getopt, the config file, defaults and --help. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <rte_log.h>

#include <cachenode/proto.h>

#include "cn_config.h"
#include "cn_l2.h"
#include "cn_metrics.h"
#include "cn_trace.h"
#include "cn_reg_record.h"
#include "cn_transport.h"

enum opt_id {
#define X(n, a, d, h) OPT_##n,
	CN_OPTIONS(X)
#undef X
	OPT_HELP,
	OPT_VERSION,
	OPT_COUNT,
};

struct opt_row {
	const char *name; /* with '_' as in the table */
	const char *arg;
	const char *def;
	const char *help;
};

static const struct opt_row opt_rows[] = {
#define X(n, a, d, h) {#n, a, d, h},
	CN_OPTIONS(X)
#undef X
};

#define NOPTS (sizeof(opt_rows) / sizeof(opt_rows[0]))

/* Long option names use '-' ("l1-size"); file keys accept '-' and '_'. */
static void dash_name(const char *in, char *out, size_t len)
{
	size_t i = 0;

	for (; in[i] && i + 1 < len; i++)
		out[i] = in[i] == '_' ? '-' : in[i];
	out[i] = '\0';
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int cn_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -EINVAL;
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	case 'T':
		shift = 40;
		break;
	default:
		return -EINVAL;
	}
	if (*end != '\0') {
		end++;
		if (toupper((unsigned char)*end) == 'B' || toupper((unsigned char)*end) == 'I')
			end += (toupper((unsigned char)end[0]) == 'I' &&
				toupper((unsigned char)end[1]) == 'B') ? 2 : 1;
		if (*end != '\0')
			return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned *out)
{
	char *end;
	unsigned long v;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int copy_str(const char *v, char *dst, size_t len)
{
	if (strlen(v) >= len)
		return -EINVAL;
	strcpy(dst, v);
	return 0;
}

static bool valid_node_id(const char *id)
{
	if (*id == '\0' || strlen(id) > CN_PROTO_MAX_NAME)
		return false;
	for (; *id; id++)
		if (!isalnum((unsigned char)*id) && *id != '-' && *id != '_' && *id != '.')
			return false;
	return true;
}

/* An RDMA device name as libibverbs lists it ("mlx5_0", "rxe0"); "" = any. */
static bool valid_dev_name(const char *v)
{
	for (; *v; v++)
		if (!isalnum((unsigned char)*v) && *v != '-' && *v != '_' && *v != '.')
			return false;
	return true;
}

/* A HOST:PORT option value (the host is resolved when it is used). */
static int set_hostport(const char *v, char *dst, size_t len, const char *dn, char *err,
			size_t errlen)
{
	char host[256];
	uint16_t port;

	/* the transport's own parser: what passes here, the listener accepts */
	if (cn_parse_hostport(v, host, sizeof(host), &port) < 0 || copy_str(v, dst, len))
		return fail(err, errlen, "--%s '%s': expected HOST:PORT ([ADDR]:PORT for IPv6)",
			    dn, v);
	return 0;
}

/* "250ms", "1s", "2" (seconds) -> ms within [min, max]; 0 or -EINVAL. */
static int parse_duration_ms(const char *s, unsigned long min, unsigned long max, unsigned *out)
{
	char *end;
	unsigned long v, mul = 1000;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0)
		return -EINVAL;
	if (strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "s") != 0 && *end != '\0')
		return -EINVAL;
	if (v > max / mul || v * mul < min)
		return -EINVAL;
	*out = (unsigned)(v * mul);
	return 0;
}

/* Apply one option value; the error names the option as the user wrote it. */
static int apply(struct cn_config *cfg, enum opt_id id, const char *v, char *err, size_t errlen)
{
	char dn[32];
	uint64_t sz;
	unsigned u;

	dash_name(opt_rows[id].name, dn, sizeof(dn));
	switch (id) {
	case OPT_config:
		return 0; /* handled before */
	case OPT_listen:
		return set_hostport(v, cfg->listen, sizeof(cfg->listen), dn, err, errlen);
	case OPT_l1_size:
		if (cn_parse_size(v, &sz) < 0 || sz < (1u << 20))
			return fail(err, errlen, "--%s '%s': expected a size of at least 1M", dn, v);
		cfg->l1_size = sz;
		return 0;
	case OPT_max_chunk:
		if (cn_parse_size(v, &sz) < 0 || sz < 4096 || sz > CN_PROTO_MAX_CHUNK)
			return fail(err, errlen, "--%s '%s': expected a size from 4K to 1G", dn, v);
		cfg->max_chunk = sz;
		return 0;
	case OPT_node_id:
		if (!valid_node_id(v))
			return fail(err, errlen,
				    "--%s '%s': 1-64 characters of [A-Za-z0-9._-] expected", dn, v);
		strcpy(cfg->node_id, v);
		return 0;
	case OPT_workers:
		if (parse_uint(v, 1, CN_MAX_CORES - 1, &u) < 0)
			return fail(err, errlen, "--%s '%s': expected 1..%d", dn, v, CN_MAX_CORES - 1);
		cfg->workers = u;
		return 0;
	case OPT_eviction:
		if (strcmp(v, "lru") != 0)
			return fail(err, errlen, "--%s '%s': known policies: lru", dn, v);
		strcpy(cfg->eviction, v);
		return 0;
	case OPT_transport:
		/* whether verbs is usable is main()'s question (cn_transport_pick) */
		if (strcmp(v, "auto") != 0 && strcmp(v, "tcp") != 0 && strcmp(v, "verbs") != 0)
			return fail(err, errlen, "--%s '%s': expected auto, tcp or verbs", dn, v);
		strcpy(cfg->transport, v);
		return 0;
	case OPT_rdma_dev:
		if (!valid_dev_name(v) || copy_str(v, cfg->rdma_dev, sizeof(cfg->rdma_dev)))
			return fail(err, errlen,
				    "--%s '%s': expected a device name (1-63 characters of "
				    "[A-Za-z0-9._-], as `ibv_devices` lists them), or empty for "
				    "any",
				    dn, v);
		return 0;
	case OPT_request_timeout:
		if (parse_uint(v, 100, 3600000, &u) < 0)
			return fail(err, errlen, "--%s '%s': expected milliseconds, 100..3600000", dn,
				    v);
		cfg->request_timeout = u;
		return 0;
	case OPT_shutdown_grace:
		if (parse_uint(v, 0, 600000, &u) < 0)
			return fail(err, errlen, "--%s '%s': expected milliseconds, 0..600000", dn, v);
		cfg->shutdown_grace = u;
		return 0;
	case OPT_log_level: {
		static const struct {
			const char *name;
			int level;
		} levels[] = {{"error", RTE_LOG_ERR},	  {"warning", RTE_LOG_WARNING},
			      {"notice", RTE_LOG_NOTICE}, {"info", RTE_LOG_INFO},
			      {"debug", RTE_LOG_DEBUG}};
		for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
			if (strcasecmp(v, levels[i].name) == 0) {
				cfg->log_level = levels[i].level;
				return 0;
			}
		}
		return fail(err, errlen, "--%s '%s': expected error, warning, notice, info or debug",
			    dn, v);
	}
	case OPT_http:
		if (strcmp(v, "off") == 0 || *v == '\0') {
			cfg->http[0] = '\0';
			return 0;
		}
		return set_hostport(v, cfg->http, sizeof(cfg->http), dn, err, errlen);
	case OPT_no_telemetry:
		if (*v == '\0' || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
		    strcmp(v, "1") == 0) {
			cfg->telemetry = false;
			return 0;
		}
		if (strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0 || strcmp(v, "0") == 0) {
			cfg->telemetry = true;
			return 0;
		}
		return fail(err, errlen, "--%s: expected true or false, not '%s'", dn, v);
	case OPT_telemetry_ring_size:
		if (parse_uint(v, 64, 1u << 24, &u) < 0 || (u & (u - 1)) != 0)
			return fail(err, errlen, "--%s '%s': expected a power of two, 64..16777216",
				    dn, v);
		cfg->telemetry_ring_size = u;
		return 0;
	case OPT_trace_spans:
		if (copy_str(v, cfg->trace_spans, sizeof(cfg->trace_spans)))
			return fail(err, errlen, "--%s: path too long", dn);
		return 0;
	case OPT_trace_output:
		if (copy_str(v, cfg->trace_output, sizeof(cfg->trace_output)))
			return fail(err, errlen, "--%s: path too long", dn);
		return 0;
	case OPT_trace_max_size:
		if (cn_parse_size(v, &sz) < 0 || (sz != 0 && sz < CN_TRACE_MIN_ROTATE))
			return fail(err, errlen, "--%s '%s': expected 0 (no rotation) or a size of at "
				    "least 64K", dn, v);
		cfg->trace_max_size = sz;
		return 0;
	case OPT_trace_ring_size:
		if (parse_uint(v, 64, 1u << 24, &u) < 0 || (u & (u - 1)) != 0)
			return fail(err, errlen, "--%s '%s': expected a power of two, 64..16777216",
				    dn, v);
		cfg->trace_ring_size = u;
		return 0;
	case OPT_redis: {
		struct cn_reg_url url;
		char why[128];

		if (*v == '\0') {
			cfg->redis[0] = '\0';
			return 0;
		}
		/* the message never repeats the value: it may hold a password */
		if (cn_reg_url_parse(v, &url, why, sizeof(why)) < 0)
			return fail(err, errlen, "--%s: %s", dn, why);
		if (copy_str(v, cfg->redis, sizeof(cfg->redis)))
			return fail(err, errlen, "--%s: URL too long", dn);
		return 0;
	}
	case OPT_cluster:
		if (!cn_reg_name_valid(v))
			return fail(err, errlen,
				    "--%s '%s': 1-64 characters of [A-Za-z0-9._-] expected", dn, v);
		strcpy(cfg->cluster, v);
		return 0;
	case OPT_heartbeat:
		if (parse_duration_ms(v, 50, 3600000, &u) < 0)
			return fail(err, errlen,
				    "--%s '%s': expected a time from 50ms to 3600s (250ms, 1s, 2)", dn,
				    v);
		cfg->heartbeat_ms = u;
		return 0;
	case OPT_redis_timeout:
		if (parse_uint(v, 0, 60000, &u) < 0 || (u != 0 && u < 10))
			return fail(err, errlen, "--%s '%s': expected milliseconds, 10..60000 (0: auto)",
				    dn, v);
		cfg->redis_timeout_ms = u;
		return 0;
	case OPT_peer: {
		struct cn_l2_static *st = malloc(sizeof(*st));
		char why[256];
		size_t have = strlen(cfg->peers);
		int r = st ? cn_l2_static_parse(v, st, why, sizeof(why)) : -ENOMEM;

		free(st);
		if (r < 0)
			return fail(err, errlen, "--%s %s", dn, r == -ENOMEM ? "out of memory" : why);
		if (*v == '\0')
			return 0;
		if (have + 1 + strlen(v) >= sizeof(cfg->peers))
			return fail(err, errlen, "--%s: the peer list is over %zu characters", dn,
				    sizeof(cfg->peers) - 1);
		snprintf(cfg->peers + have, sizeof(cfg->peers) - have, "%s%s", have ? "," : "", v);
		return 0;
	}
	case OPT_gpu:
		if (strcmp(v, "auto") != 0 && strcmp(v, "off") != 0)
			return fail(err, errlen, "--%s '%s': expected auto or off", dn, v);
		snprintf(cfg->gpu, sizeof(cfg->gpu), "%s", v);
		return 0;
	case OPT_l2_write:
		if (strcmp(v, "through") != 0 && strcmp(v, "none") != 0)
			return fail(err, errlen, "--%s '%s': expected through or none", dn, v);
		cfg->l2_write_through = strcmp(v, "through") == 0;
		return 0;
	case OPT_l2_timeout:
		if (parse_uint(v, 10, 600000, &u) < 0)
			return fail(err, errlen, "--%s '%s': expected milliseconds, 10..600000", dn, v);
		cfg->l2_timeout = u;
		return 0;
	case OPT_l2_threads:
		if (parse_uint(v, 1, 64, &u) < 0)
			return fail(err, errlen, "--%s '%s': expected 1..64", dn, v);
		cfg->l2_threads = u;
		return 0;
	default:
		return fail(err, errlen, "internal: option %d", (int)id);
	}
}

static int find_opt(const char *key)
{
	char k[32];
	size_t i = 0;

	for (; key[i] && i + 1 < sizeof(k); i++)
		k[i] = key[i] == '-' ? '_' : key[i];
	k[i] = '\0';
	for (size_t o = 0; o < NOPTS; o++)
		if (strcmp(opt_rows[o].name, k) == 0)
			return (int)o;
	return -1;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* key = value | key value ; '#' starts a comment. */
static int load_file(struct cn_config *cfg, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[512];
	unsigned lineno = 0;
	int r = 0;

	if (f == NULL)
		return fail(err, errlen, "--config '%s': %s", path, strerror(errno));
	while (r == 0 && fgets(line, sizeof(line), f)) {
		char *s, *key, *val, *hash = strchr(line, '#');
		int id;
		char sub[256];

		lineno++;
		if (hash)
			*hash = '\0';
		s = trim(line);
		if (*s == '\0')
			continue;
		key = s;
		val = s + strcspn(s, " \t=");
		if (*val != '\0') {
			*val++ = '\0';
			val = trim(val);
			if (*val == '=')
				val = trim(val + 1);
		}
		id = find_opt(key);
		if (id < 0 || id == OPT_config) {
			r = fail(err, errlen, "%s:%u: unknown key '%s'", path, lineno, key);
			break;
		}
		r = apply(cfg, (enum opt_id)id, val, sub, sizeof(sub));
		if (r < 0)
			fail(err, errlen, "%s:%u: %s", path, lineno, sub);
	}
	fclose(f);
	return r;
}

void cn_config_usage(FILE *f, const char *prog)
{
	fprintf(f, "Usage: %s [OPTION]... [-- EAL-ARGS...]\n"
		   "Serve KV-cache chunks from a host-DRAM pool over the cachenode protocol.\n\n",
		prog);
	for (size_t o = 0; o < NOPTS; o++) {
		char dn[32], lhs[64];

		dash_name(opt_rows[o].name, dn, sizeof(dn));
		snprintf(lhs, sizeof(lhs), "--%s%s%s", dn, opt_rows[o].arg[0] ? " " : "",
			 opt_rows[o].arg);
		fprintf(f, "  %-26s %s", lhs, opt_rows[o].help);
		if (opt_rows[o].def[0])
			fprintf(f, " [%s]", opt_rows[o].def);
		fputc('\n', f);
	}
	fprintf(f, "  %-26s %s\n  %-26s %s\n  %-26s %s\n\n", "--help", "show this help and exit",
		"--version", "show the version and exit", "--list-metrics",
		"print every counter of the STATUS reply as Markdown and exit");
	fprintf(f, "EAL arguments after -- replace or extend the defaults\n"
		   "(--no-huge --no-shconf [dropped by hugepage options], -m <128 MiB + 1/16 of\n"
		   " --l1-size> [dropped by -m/--socket-mem], --no-pci, --file-prefix\n"
		   " cachenode-<node-id>"
		   " and one lcore per worker plus the main lcore).\n");
}

int cn_config_parse(int argc, char **argv, struct cn_config *cfg, FILE *out, char *err,
		    size_t errlen)
{
	struct option lopts[NOPTS + 3];
	char names[NOPTS][32];
	int dashdash = argc, r;

	memset(cfg, 0, sizeof(*cfg));
	cfg->telemetry = true;
	for (size_t o = 0; o < NOPTS; o++) {
		if (opt_rows[o].def[0] && apply(cfg, (enum opt_id)o, opt_rows[o].def, err, errlen))
			return -EINVAL; /* a bad built-in default is a bug */
		dash_name(opt_rows[o].name, names[o], sizeof(names[o]));
		lopts[o] = (struct option){names[o], opt_rows[o].arg[0] ? required_argument
									: no_argument,
					   NULL, (int)o + 1000};
	}
	lopts[NOPTS] = (struct option){"help", no_argument, NULL, OPT_HELP + 1000};
	lopts[NOPTS + 1] = (struct option){"version", no_argument, NULL, OPT_VERSION + 1000};
	lopts[NOPTS + 2] = (struct option){0};

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			dashdash = i;
			break;
		}
	}
	cfg->eal_argc = argc - dashdash - (dashdash < argc);
	cfg->eal_argv = argv + dashdash + (dashdash < argc);

	/* The file first, so that the command line overrides it. */
	for (int i = 1; i < dashdash; i++) {
		const char *path = NULL;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < dashdash)
			path = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			path = argv[i] + 9;
		if (path && (r = load_file(cfg, path, err, errlen)) < 0)
			return r;
	}

	optind = 1;
	opterr = 0;
	for (;;) {
		int c = getopt_long(dashdash, argv, ":", lopts, NULL);

		if (c == -1)
			break;
		if (c == '?')
			return fail(err, errlen, "unknown option '%s' (see --help)", argv[optind - 1]);
		if (c == ':')
			return fail(err, errlen, "option '%s' needs a value", argv[optind - 1]);
		c -= 1000;
		if (c == OPT_HELP) {
			cn_config_usage(out, argv[0]);
			return 1;
		}
		if (c == OPT_VERSION) {
			fprintf(out, "cachenode %s\n", CN_VERSION);
			return 1;
		}
		if ((r = apply(cfg, (enum opt_id)c, optarg ? optarg : "", err, errlen)) < 0)
			return r;
	}
	if (optind < dashdash)
		return fail(err, errlen, "unexpected argument '%s' (see --help)", argv[optind]);
	if (cfg->peers[0]) { /* each --peer was checked alone; now the whole list (duplicates) */
		struct cn_l2_static *st = malloc(sizeof(*st));
		char why[256];
		int pr = st ? cn_l2_static_parse(cfg->peers, st, why, sizeof(why)) : -ENOMEM;

		free(st);
		if (pr < 0)
			return fail(err, errlen, "--peer %s", pr == -ENOMEM ? "out of memory" : why);
	}
	if (cfg->max_chunk > cfg->l1_size)
		return fail(err, errlen, "--max-chunk (%" PRIu64 ") is larger than --l1-size (%" PRIu64
			    ")", cfg->max_chunk, cfg->l1_size);

	if (cfg->node_id[0] == '\0') {
		char host[64] = "localhost";
		const char *port = strrchr(cfg->listen, ':') + 1;
		char *p;

		gethostname(host, sizeof(host) - 1);
		host[sizeof(host) - 1] = '\0';
		for (p = host; *p; p++)
			if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
				*p = '_';
		snprintf(cfg->node_id, sizeof(cfg->node_id), "%.50s-%s", host, port);
	}
	snprintf(cfg->file_prefix, sizeof(cfg->file_prefix), "cachenode-%s", cfg->node_id);
	return 0;
}
