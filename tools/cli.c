/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode-cli: one request to a node from the command line.
 *
 * Output is meant for scripts as much as for people; these formats are
 * stable (one record per line, fields separated by one space):
 *
 *   put KEY FILE      stored HEXKEY BYTES
 *   get KEY FILE      retrieved HEXKEY BYTES     (nothing but the chunk when FILE is -)
 *   lookup KEY...     prefix P of N
 *                     HEXKEY TIER                (one line per key; TIER none|l1|l2|gpu)
 *   del KEY           deleted HEXKEY
 *   prefetch KEY...   HEXKEY in-l1|absent       (one line per key; exit 1 if any is absent)
 *   ping              pong NODE_ID RTT_US        (round trip in microseconds, 1 decimal)
 *   stat              the STATUS document, indented JSON
 *
 * KEY is 64 hex digits (the key itself) or any other text (hashed with
 * SHA-256). Exit status: 0 success, 1 the node or the I/O failed (message on
 * stderr: "cachenode-cli: get KEY: no such key"), 2 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cachenode/client.h>

#define CLI_NAME	 "cachenode-cli"
#define CLI_DEFAULT_NODE "127.0.0.1:7700"
#define CLI_GET_INITIAL	 (4u << 20) /* first guess at a chunk's size; grown on -ENOBUFS */

enum { EXIT_NODE = 1, EXIT_USAGE = 2 };

struct cli {
	const char *node;
	int timeout_ms;
	const char *transport; /* "tcp", "verbs" or "auto" */
	const char *rdma_dev;  /* NULL = any */
	struct cn_client *c;
};

static const char *const tier_names[] = {"none", "l1", "l2", "gpu"};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " CLI_NAME " [--node HOST:PORT] [--timeout MS] [--transport T]\n"
		"                     COMMAND [ARGS]\n"
		"\n"
		"options:\n"
		"  -n, --node HOST:PORT   node to talk to (default " CLI_DEFAULT_NODE ")\n"
		"  -t, --timeout MS       limit on each blocking step, in ms (default 10000)\n"
		"      --transport T      tcp (default), verbs (RDMA; fails without a usable\n"
		"                         device) or auto (verbs if usable and the node accepts\n"
		"                         it, else tcp)\n"
		"      --rdma-dev NAME    RDMA device for verbs / auto (default: any)\n"
		"  -h, --help             this text\n"
		"  -V, --version          print the version\n"
		"\n"
		"commands:\n"
		"  put KEY FILE           store FILE (- for stdin) as one chunk under KEY\n"
		"  get KEY FILE           write the chunk stored under KEY to FILE (- for stdout)\n"
		"  lookup KEY...          how many leading KEYs are stored, and where each one is\n"
		"  prefetch KEY...        bring KEYs into the node's L1 from their owner peers\n"
		"  del KEY                delete KEY\n"
		"  ping                   round trip time to the node\n"
		"  stat                   the node's status document (JSON)\n"
		"\n"
		"KEY is 64 hex digits (the key's bytes) or any other text, hashed with SHA-256.\n"
		"Exit status: 0 ok, 1 the node or I/O failed, 2 bad usage.\n");
}

__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, CLI_NAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" CLI_NAME " --help'.\n");
	return EXIT_USAGE;
}

/*
 * Report a failed call: the client's message without its leading "op: ",
 * since "cachenode-cli: get KEY: " already says what was being done.
 */
static int node_err(struct cli *cli, const char *cmd, const char *arg)
{
	const char *msg = cn_client_errmsg(cli->c);
	static const char *const ops[] = {"store", "retrieve", "lookup", "delete", "ping",
					  "status", "prefetch"};

	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		size_t n = strlen(ops[i]);

		if (strncmp(msg, ops[i], n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') {
			msg += n + 2;
			break;
		}
	}
	if (arg != NULL)
		fprintf(stderr, CLI_NAME ": %s %s: %s\n", cmd, arg, msg);
	else
		fprintf(stderr, CLI_NAME ": %s: %s\n", cmd, msg);
	return EXIT_NODE;
}

static int parse_key(const char *text, struct cn_key *k)
{
	if (cn_key_parse(text, k) < 0)
		return bad_usage("empty KEY");
	return 0;
}

/* Read all of @fd into a malloc'd buffer, refusing more than @max bytes. */
static int read_all(int fd, uint32_t max, uint8_t **out, uint32_t *len)
{
	size_t cap = 1 << 16, n = 0;
	uint8_t *b = malloc(cap);
	struct stat st;

	if (b == NULL)
		return -ENOMEM;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		if ((uint64_t)st.st_size > max) {
			free(b);
			return -E2BIG;
		}
		if ((size_t)st.st_size + 1 > cap) {
			uint8_t *nb = realloc(b, (size_t)st.st_size + 1);

			if (nb == NULL) {
				free(b);
				return -ENOMEM;
			}
			b = nb;
			cap = (size_t)st.st_size + 1;
		}
	}
	for (;;) {
		ssize_t r;

		if (n == cap) {
			uint8_t *nb;

			if (cap > max) {
				free(b);
				return -E2BIG;
			}
			nb = realloc(b, cap * 2);
			if (nb == NULL) {
				free(b);
				return -ENOMEM;
			}
			b = nb;
			cap *= 2;
		}
		r = read(fd, b + n, cap - n);
		if (r == 0)
			break;
		if (r < 0) {
			int err = -errno;

			if (errno == EINTR)
				continue;
			free(b);
			return err;
		}
		n += (size_t)r;
	}
	if (n > max) {
		free(b);
		return -E2BIG;
	}
	*out = b;
	*len = (uint32_t)n;
	return 0;
}

static int write_all(int fd, const uint8_t *b, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, b, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int cmd_put(struct cli *cli, int argc, char **argv)
{
	uint32_t max = cn_client_node(cli->c)->max_chunk;
	const char *file = argv[1];
	char hex[2 * CN_KEY_LEN + 1];
	uint8_t *data = NULL;
	uint32_t len = 0;
	struct cn_key k;
	int fd = STDIN_FILENO, rc;

	if (parse_key(argv[0], &k))
		return EXIT_USAGE;
	if (strcmp(file, "-") != 0) {
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, CLI_NAME ": put %s: %s: %s\n", argv[0], file,
				strerror(errno));
			return EXIT_NODE;
		}
	}
	rc = read_all(fd, max, &data, &len);
	if (fd != STDIN_FILENO)
		close(fd);
	if (rc == -E2BIG) {
		fprintf(stderr, CLI_NAME ": put %s: %s is larger than the node's chunk limit (%u bytes)\n",
			argv[0], file, max);
		return EXIT_NODE;
	}
	if (rc < 0) {
		fprintf(stderr, CLI_NAME ": put %s: %s: %s\n", argv[0], file, strerror(-rc));
		return EXIT_NODE;
	}
	if (len == 0) {
		free(data);
		fprintf(stderr, CLI_NAME ": put %s: %s is empty (chunks are 1..%u bytes)\n",
			argv[0], file, max);
		return EXIT_NODE;
	}
	rc = cn_client_store(cli->c, &k, data, len);
	free(data);
	if (rc < 0)
		return node_err(cli, "put", argv[0]);
	cn_key_format(&k, hex);
	printf("stored %s %u\n", hex, len);
	return 0;
}

static int cmd_get(struct cli *cli, int argc, char **argv)
{
	uint32_t max = cn_client_node(cli->c)->max_chunk;
	uint32_t cap = max < CLI_GET_INITIAL ? max : CLI_GET_INITIAL, len = 0;
	char hex[2 * CN_KEY_LEN + 1];
	const char *file = argv[1];
	bool to_stdout;
	uint8_t *buf;
	struct cn_key k;
	int fd, rc;

	if (parse_key(argv[0], &k))
		return EXIT_USAGE;
	to_stdout = strcmp(file, "-") == 0;
	buf = malloc(cap);
	if (buf == NULL) {
		fprintf(stderr, CLI_NAME ": get %s: out of memory\n", argv[0]);
		return EXIT_NODE;
	}
	rc = cn_client_retrieve(cli->c, &k, buf, cap, &len);
	if (rc == -ENOBUFS) {
		/* Bigger than the first guess: now we know its size. */
		uint8_t *nb = realloc(buf, len);

		if (nb == NULL) {
			free(buf);
			fprintf(stderr, CLI_NAME ": get %s: out of memory for %u bytes\n",
				argv[0], len);
			return EXIT_NODE;
		}
		buf = nb;
		cap = len;
		rc = cn_client_retrieve(cli->c, &k, buf, cap, &len);
	}
	if (rc < 0) {
		free(buf);
		return node_err(cli, "get", argv[0]);
	}
	/* Only now touch FILE: a missing key leaves it alone. */
	fd = to_stdout ? STDOUT_FILENO : open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || (rc = write_all(fd, buf, len)) < 0) {
		fprintf(stderr, CLI_NAME ": get %s: %s: %s\n", argv[0], file,
			strerror(fd < 0 ? errno : -rc));
		free(buf);
		if (fd >= 0 && !to_stdout)
			close(fd);
		return EXIT_NODE;
	}
	free(buf);
	if (!to_stdout) {
		if (close(fd) < 0) {
			fprintf(stderr, CLI_NAME ": get %s: %s: %s\n", argv[0], file,
				strerror(errno));
			return EXIT_NODE;
		}
		cn_key_format(&k, hex);
		printf("retrieved %s %u\n", hex, len);
	}
	return 0;
}

static int cmd_lookup(struct cli *cli, int argc, char **argv)
{
	char hex[2 * CN_KEY_LEN + 1];
	struct cn_key *keys;
	uint8_t *tiers;
	uint32_t prefix = 0;
	int rc;

	keys = calloc((size_t)argc, sizeof(*keys));
	tiers = calloc((size_t)argc, 1);
	if (keys == NULL || tiers == NULL) {
		free(keys);
		free(tiers);
		fprintf(stderr, CLI_NAME ": lookup: out of memory\n");
		return EXIT_NODE;
	}
	for (int i = 0; i < argc; i++) {
		if (parse_key(argv[i], &keys[i])) {
			free(keys);
			free(tiers);
			return EXIT_USAGE;
		}
	}
	rc = cn_client_lookup(cli->c, keys, (uint32_t)argc, &prefix, tiers);
	if (rc < 0) {
		free(keys);
		free(tiers);
		return node_err(cli, "lookup", argc == 1 ? argv[0] : NULL);
	}
	printf("prefix %u of %d\n", prefix, argc);
	for (int i = 0; i < argc; i++) {
		cn_key_format(&keys[i], hex);
		printf("%s %s\n", hex, tiers[i] < 4 ? tier_names[tiers[i]] : "unknown");
	}
	free(keys);
	free(tiers);
	return 0;
}

static int cmd_prefetch(struct cli *cli, int argc, char **argv)
{
	char hex[2 * CN_KEY_LEN + 1];
	struct cn_key *keys = calloc((size_t)argc, sizeof(*keys));
	int32_t *st = calloc((size_t)argc, sizeof(*st));
	int rc = 0, absent = 0;

	if (keys == NULL || st == NULL) {
		fprintf(stderr, CLI_NAME ": prefetch: out of memory\n");
		rc = EXIT_NODE;
		goto out;
	}
	for (int i = 0; i < argc; i++)
		if (parse_key(argv[i], &keys[i])) {
			rc = EXIT_USAGE;
			goto out;
		}
	rc = cn_client_prefetch(cli->c, keys, (uint32_t)argc, st);
	if (rc < 0 && rc != -ENOENT) {
		rc = node_err(cli, "prefetch", argc == 1 ? argv[0] : NULL);
		goto out;
	}
	for (int i = 0; i < argc; i++) {
		cn_key_format(&keys[i], hex);
		printf("%s %s\n", hex, st[i] == CN_OK ? "in-l1" : "absent");
		absent += st[i] != CN_OK;
	}
	rc = absent ? EXIT_NODE : 0;
out:
	free(keys);
	free(st);
	return rc;
}

static int cmd_del(struct cli *cli, int argc, char **argv)
{
	char hex[2 * CN_KEY_LEN + 1];
	struct cn_key k;

	if (parse_key(argv[0], &k))
		return EXIT_USAGE;
	if (cn_client_delete(cli->c, &k) < 0)
		return node_err(cli, "del", argv[0]);
	cn_key_format(&k, hex);
	printf("deleted %s\n", hex);
	return 0;
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmd_ping(struct cli *cli, int argc, char **argv)
{
	double t0;

	t0 = now_us();
	if (cn_client_ping(cli->c) < 0)
		return node_err(cli, "ping", NULL);
	printf("pong %s %.1f\n", cn_client_node(cli->c)->node_id, now_us() - t0);
	return 0;
}

static void indent(int depth)
{
	for (int i = 0; i < depth; i++)
		fputs("  ", stdout);
}

/*
 * Re-indent a JSON document (two spaces a level, "key": value). It only moves
 * white space: strings and numbers are printed as the node sent them.
 */
static void print_json(const char *s)
{
	bool in_str = false, esc = false;
	int depth = 0;

	for (; *s; s++) {
		char ch = *s;

		if (in_str) {
			putchar(ch);
			if (esc)
				esc = false;
			else if (ch == '\\')
				esc = true;
			else if (ch == '"')
				in_str = false;
			continue;
		}
		switch (ch) {
		case ' ':
		case '\t':
		case '\n':
		case '\r':
			break;
		case '"':
			in_str = true;
			putchar(ch);
			break;
		case '{':
		case '[': {
			const char *t = s + 1;

			while (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r')
				t++;
			putchar(ch);
			if (*t == (ch == '{' ? '}' : ']')) {
				putchar(*t);
				s = t;
				break;
			}
			putchar('\n');
			indent(++depth);
			break;
		}
		case '}':
		case ']':
			putchar('\n');
			indent(--depth);
			putchar(ch);
			break;
		case ',':
			putchar(',');
			putchar('\n');
			indent(depth);
			break;
		case ':':
			fputs(": ", stdout);
			break;
		default:
			putchar(ch);
			break;
		}
	}
	putchar('\n');
}

static int cmd_stat(struct cli *cli, int argc, char **argv)
{
	char *json = NULL;

	if (cn_client_status(cli->c, &json) < 0)
		return node_err(cli, "stat", NULL);
	print_json(json);
	free(json);
	return 0;
}

/* A command runs with its argument count already checked against min..max. */
struct cli_cmd {
	const char *name;
	int min, max;
	int keys; /* how many leading arguments are keys; -1 all */
	const char *args;
	int (*run)(struct cli *cli, int argc, char **argv);
};

static const struct cli_cmd cmds[] = {
	{"put", 2, 2, 1, "KEY FILE", cmd_put},
	{"get", 2, 2, 1, "KEY FILE", cmd_get},
	{"lookup", 1, INT_MAX, -1, "KEY...", cmd_lookup},
	{"del", 1, 1, 1, "KEY", cmd_del},
	{"prefetch", 1, INT_MAX, -1, "KEY...", cmd_prefetch},
	{"ping", 0, 0, 0, "", cmd_ping},
	{"stat", 0, 0, 0, "", cmd_stat},
};

int main(int argc, char **argv)
{
	enum { OPT_TRANSPORT = 256, OPT_RDMA_DEV };
	static const struct option longopts[] = {
		{"node", required_argument, NULL, 'n'},
		{"timeout", required_argument, NULL, 't'},
		{"transport", required_argument, NULL, OPT_TRANSPORT},
		{"rdma-dev", required_argument, NULL, OPT_RDMA_DEV},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct cli cli = {.node = CLI_DEFAULT_NODE, .timeout_ms = 0, .transport = "tcp"};
	struct cn_client_opts opts = {.name = CLI_NAME};
	const struct cli_cmd *cmd = NULL;
	int opt, rc, nargs;

	while ((opt = getopt_long(argc, argv, "+n:t:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			cli.node = optarg;
			break;
		case 't': {
			char *end;
			long v;

			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || v <= 0 || v > INT_MAX)
				return bad_usage("bad --timeout '%s' (milliseconds > 0)", optarg);
			cli.timeout_ms = (int)v;
			break;
		}
		case OPT_TRANSPORT:
			if (strcmp(optarg, "tcp") != 0 && strcmp(optarg, "verbs") != 0 &&
			    strcmp(optarg, "auto") != 0)
				return bad_usage("bad --transport '%s' (tcp, verbs or auto)",
						 optarg);
			cli.transport = optarg;
			break;
		case OPT_RDMA_DEV:
			if (optarg[0] == '\0')
				return bad_usage("empty --rdma-dev%s", "");
			cli.rdma_dev = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf(CLI_NAME " %s\n", CN_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try '" CLI_NAME " --help'.\n");
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return bad_usage("no command given%s", "");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[optind], cmds[i].name) == 0)
			cmd = &cmds[i];
	if (cmd == NULL)
		return bad_usage("unknown command '%s'", argv[optind]);
	/* Usage errors need no node: check the arguments before connecting. */
	nargs = argc - optind - 1;
	if (nargs < cmd->min || nargs > cmd->max) {
		if (cmd->max == 0)
			return bad_usage("%s takes no arguments", cmd->name);
		return bad_usage("usage: %s %s", cmd->name, cmd->args);
	}
	for (int i = 0; i < nargs && (cmd->keys < 0 || i < cmd->keys); i++)
		if (argv[optind + 1 + i][0] == '\0')
			return bad_usage("empty KEY");

	opts.timeout_ms = cli.timeout_ms;
	opts.transport = cli.transport;
	opts.rdma_dev = cli.rdma_dev;
	rc = cn_client_connect(cli.node, &opts, &cli.c);
	if (rc < 0) {
		fprintf(stderr, CLI_NAME ": %s\n", cn_client_errmsg(cli.c));
		cn_client_close(&cli.c);
		return EXIT_NODE;
	}
	rc = cmd->run(&cli, nargs, argv + optind + 1);
	if (fflush(stdout) != 0 && rc == 0) {
		fprintf(stderr, CLI_NAME ": writing the output: %s\n", strerror(errno));
		rc = EXIT_NODE;
	}
	cn_client_close(&cli.c);
	return rc;
}
