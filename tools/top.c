/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode-top: a live per-core view of a running node, like top(1), read
 * through the node's DPDK telemetry socket (the /cachenode/... commands).
 *
 *   cachenode-top [--file-prefix P] [--interval SEC] [--once] [--json]
 *
 * Every interval it asks /cachenode/info, every page of /cachenode/cores and
 * /cachenode/latency,<op> for each op that has run, and shows per core the
 * request rate, the L1 hit rate, the telemetry ring fill and the drops, then
 * one line per op with its latency quantiles. Rates need two samples, so
 * --once takes two, --interval apart, prints one screen and exits.
 *
 * It speaks the telemetry protocol itself (AF_UNIX SOCK_SEQPACKET at
 * <runtime>/dpdk/<prefix>/dpdk_telemetry.v2; a greeting with max_output_len,
 * then one JSON reply per command) and needs no DPDK.
 *
 * Exit status: 0, 1 (no node, node gone, bad reply), 2 (usage).
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define SOCK_NAME     "dpdk_telemetry.v2"
#define PREFIX_START  "cachenode-"
#define MAX_CORES     1024
#define IO_TIMEOUT_S  5

struct opts {
	const char *prefix; /* NULL: find the one running cachenode */
	double interval;
	bool once, json;
};

struct tel_conn {
	int fd;
	char *buf; /* one reply, NUL-terminated */
	size_t cap;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

struct core_row {
	bool seen;
	char role[16];
	uint64_t requests, l1_hits, l1_misses, retrieve_keys, retrieve_hits;
	uint64_t bytes_rx, bytes_tx, events, drops, ring_depth;
};

struct sample {
	struct timespec t;
	json_t *info;	 /* /cachenode/info */
	json_t *latency; /* op -> /cachenode/latency,<op> reply (ops that ran) */
	unsigned ncores;
	uint64_t ring_size;
	struct core_row *core; /* ncores rows */
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cachenode-top [--file-prefix P] [--interval SEC] [--once] [--json]\n"
		"\n"
		"Live per-core view of a running cachenode, read through its DPDK telemetry\n"
		"socket: requests per second, L1 hit rate, telemetry ring fill and drops per\n"
		"core, and latency quantiles per operation.\n"
		"\n"
		"  -f, --file-prefix P  the node's DPDK file prefix (cachenode-<node-id>);\n"
		"                       default: the only running cachenode-* prefix\n"
		"  -d, --interval SEC   refresh interval in seconds (default 1; fractions ok)\n"
		"      --once           take two samples SEC apart, print one screen, exit\n"
		"      --json           print each sample as one line of JSON instead\n"
		"  -h, --help           this text\n");
}

/* ---- the telemetry socket ---- */

/* <runtime>/dpdk, by EAL's rules: $RUNTIME_DIRECTORY, /var/run (root), $XDG_RUNTIME_DIR, /tmp. */
static void dpdk_dir(char *out, size_t len)
{
	const char *run = getenv("RUNTIME_DIRECTORY");

	if (run == NULL || run[0] == '\0') {
		if (getuid() == 0)
			run = "/var/run";
		else {
			run = getenv("XDG_RUNTIME_DIR");
			if (run == NULL || run[0] == '\0')
				run = "/tmp";
		}
	}
	snprintf(out, len, "%s/dpdk", run);
}

static int sock_path(const char *prefix, char *out, size_t len)
{
	char dir[512];
	int n;

	dpdk_dir(dir, sizeof(dir));
	n = snprintf(out, len, "%s/%s/%s", dir, prefix, SOCK_NAME);
	return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

static int sock_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/*
 * The prefix of the only cachenode whose socket accepts a connection (dead
 * nodes leave their directories and sockets behind). Returns 0, or -ENOENT /
 * -EEXIST (none / several: the message is printed).
 */
static int find_prefix(char *out, size_t len)
{
	char dir[512], path[1024], found[16][256];
	unsigned n = 0;
	struct dirent *e;
	DIR *d;

	dpdk_dir(dir, sizeof(dir));
	d = opendir(dir);
	while (d != NULL && (e = readdir(d)) != NULL) {
		int fd;

		if (strncmp(e->d_name, PREFIX_START, strlen(PREFIX_START)) != 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s/%s", dir, e->d_name, SOCK_NAME) >=
		    (int)sizeof(path))
			continue;
		fd = sock_connect(path);
		if (fd < 0)
			continue;
		close(fd);
		if (n < 16)
			snprintf(found[n], sizeof(found[n]), "%s", e->d_name);
		n++;
	}
	if (d != NULL)
		closedir(d);
	if (n == 1) {
		snprintf(out, len, "%s", found[0]);
		return 0;
	}
	if (n == 0) {
		fprintf(stderr, "cachenode-top: no running cachenode found in %s: is one running? "
				"(or give --file-prefix)\n", dir);
		return -ENOENT;
	}
	fprintf(stderr, "cachenode-top: %u cachenodes are running; pick one with --file-prefix:\n",
		n);
	for (unsigned i = 0; i < n && i < 16; i++)
		fprintf(stderr, "  %s\n", found[i]);
	return -EEXIST;
}

static void tel_close(struct tel_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
}

/* Receive one message into c->buf. Returns its length or -errno (-EMSGSIZE: cut). */
static ssize_t tel_recv(struct tel_conn *c)
{
	ssize_t n = recv(c->fd, c->buf, c->cap - 1, MSG_TRUNC);

	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	if ((size_t)n >= c->cap)
		return -EMSGSIZE;
	c->buf[n] = '\0';
	return n;
}

/* Connect and read the greeting. Returns 0 or -errno (message printed). */
static int tel_open(struct tel_conn *c, const char *prefix)
{
	json_t *g, *m;
	ssize_t n;
	int r;

	c->fd = -1;
	c->cap = 4096;
	c->buf = malloc(c->cap);
	if (c->buf == NULL)
		return -ENOMEM;
	r = sock_path(prefix, c->path, sizeof(c->path));
	if (r == 0)
		r = sock_connect(c->path);
	if (r < 0) {
		if (r == -ENOENT || r == -ECONNREFUSED)
			fprintf(stderr,
				"cachenode-top: no node with file prefix %s: is it running? "
				"(no socket at %s)\n",
				prefix, c->path);
		else
			fprintf(stderr, "cachenode-top: cannot connect to %s: %s\n", c->path,
				strerror(-r));
		return r;
	}
	c->fd = r;
	n = tel_recv(c);
	if (n < 0) {
		fprintf(stderr, "cachenode-top: no greeting from %s: %s\n", c->path,
			strerror((int)-n));
		return (int)n;
	}
	g = json_loads(c->buf, 0, NULL);
	m = json_object_get(g, "max_output_len");
	if (!json_is_integer(m) || json_integer_value(m) <= 0 ||
	    json_integer_value(m) > (64 << 20)) {
		fprintf(stderr, "cachenode-top: unexpected greeting from %s: %.200s\n", c->path,
			c->buf);
		json_decref(g);
		return -EPROTO;
	}
	c->cap = (size_t)json_integer_value(m) + 1;
	json_decref(g);
	free(c->buf);
	c->buf = malloc(c->cap);
	return c->buf != NULL ? 0 : -ENOMEM;
}

/*
 * Send @cmd ("/cachenode/cores,0") and return the reply's value (a new
 * reference; JSON null when the node refused the command), or NULL on a
 * connection or format error (message printed).
 */
static json_t *tel_query(struct tel_conn *c, const char *cmd)
{
	json_t *root, *v;
	char key[128];
	ssize_t n;

	if (send(c->fd, cmd, strlen(cmd), 0) < 0) {
		fprintf(stderr, "cachenode-top: %s: %s (node gone?)\n", cmd, strerror(errno));
		return NULL;
	}
	n = tel_recv(c);
	if (n < 0) {
		fprintf(stderr, "cachenode-top: %s: %s (node gone?)\n", cmd, strerror((int)-n));
		return NULL;
	}
	root = json_loads(c->buf, 0, NULL);
	snprintf(key, sizeof(key), "%.*s", (int)strcspn(cmd, ","), cmd);
	v = json_object_get(root, key);
	if (v == NULL) {
		fprintf(stderr, "cachenode-top: %s: unexpected reply: %.200s\n", cmd, c->buf);
		json_decref(root);
		return NULL;
	}
	json_incref(v);
	json_decref(root);
	return v;
}

/* ---- samples ---- */

static uint64_t u64_of(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
							       : 0;
}

static const char *str_of(json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : dflt;
}

static void sample_free(struct sample *s)
{
	json_decref(s->info);
	json_decref(s->latency);
	free(s->core);
	memset(s, 0, sizeof(*s));
}

static void core_fill(struct core_row *r, json_t *cd)
{
	r->seen = true;
	snprintf(r->role, sizeof(r->role), "%s", str_of(cd, "role", "?"));
	r->requests = u64_of(cd, "requests");
	r->l1_hits = u64_of(cd, "l1_hits");
	r->l1_misses = u64_of(cd, "l1_misses");
	r->retrieve_keys = u64_of(cd, "retrieve_keys");
	r->retrieve_hits = u64_of(cd, "retrieve_hits");
	r->bytes_rx = u64_of(cd, "bytes_rx");
	r->bytes_tx = u64_of(cd, "bytes_tx");
	r->events = u64_of(cd, "events");
	r->drops = u64_of(cd, "drops");
	r->ring_depth = u64_of(cd, "ring_depth");
}

/* Every page of /cachenode/cores into s->core. Returns 0 or -EPROTO (printed). */
static int sample_cores(struct tel_conn *c, struct sample *s)
{
	json_int_t first = 0;
	char cmd[64];

	do {
		json_t *page, *cores, *cd, *next;
		const char *k;

		snprintf(cmd, sizeof(cmd), "/cachenode/cores,%" JSON_INTEGER_FORMAT, first);
		page = tel_query(c, cmd);
		if (page == NULL)
			return -EPROTO;
		cores = json_object_get(page, "cores");
		next = json_object_get(page, "next");
		if (!json_is_object(cores) || !json_is_integer(next)) {
			fprintf(stderr, "cachenode-top: %s: unexpected reply (not a cachenode of "
					"this version?)\n", cmd);
			json_decref(page);
			return -EPROTO;
		}
		if (s->core == NULL) {
			s->ncores = (unsigned)u64_of(page, "ncores");
			if (s->ncores == 0 || s->ncores > MAX_CORES) {
				json_decref(page);
				return -EPROTO;
			}
			s->ring_size = u64_of(page, "ring_size");
			s->core = calloc(s->ncores, sizeof(*s->core));
			if (s->core == NULL) {
				json_decref(page);
				return -ENOMEM;
			}
		}
		json_object_foreach(cores, k, cd) {
			unsigned long i = strtoul(k, NULL, 10);

			if (i < s->ncores)
				core_fill(&s->core[i], cd);
		}
		/* a page that does not move forward would loop forever */
		if (json_integer_value(next) >= 0 && json_integer_value(next) <= first) {
			json_decref(page);
			return -EPROTO;
		}
		first = json_integer_value(next);
		json_decref(page);
	} while (first >= 0);
	return 0;
}

/* Latency of every op that has run: op -> its /cachenode/latency,<op> reply. */
static int sample_latency(struct tel_conn *c, struct sample *s)
{
	json_t *ops = tel_query(c, "/cachenode/latency"), *cnt;
	const char *op;
	char cmd[128];

	if (ops == NULL)
		return -EPROTO;
	s->latency = json_object();
	json_object_foreach(ops, op, cnt) {
		json_t *h;

		if (!json_is_integer(cnt) || json_integer_value(cnt) <= 0)
			continue;
		snprintf(cmd, sizeof(cmd), "/cachenode/latency,%s", op);
		h = tel_query(c, cmd);
		if (h == NULL) {
			json_decref(ops);
			return -EPROTO;
		}
		json_object_set_new(s->latency, op, h);
	}
	json_decref(ops);
	return 0;
}

static int sample_take(struct tel_conn *c, struct sample *s)
{
	int r;

	memset(s, 0, sizeof(*s));
	clock_gettime(CLOCK_MONOTONIC, &s->t);
	s->info = tel_query(c, "/cachenode/info");
	if (s->info == NULL)
		return -EPROTO;
	if (!json_is_object(s->info)) {
		fprintf(stderr, "cachenode-top: /cachenode/info: no answer (not a cachenode?)\n");
		return -EPROTO;
	}
	r = sample_cores(c, s);
	if (r == 0)
		r = sample_latency(c, s);
	return r;
}

/* ---- output ---- */

static double secs_between(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static uint64_t delta(uint64_t now, uint64_t before)
{
	return now >= before ? now - before : 0; /* a restart resets counters */
}

static void fmt_rate(double v, char *out, size_t len)
{
	static const char *const u[] = {"", "K", "M", "G", "T"};
	unsigned i = 0;

	while (v >= 1000 && i < 4) {
		v /= 1000;
		i++;
	}
	snprintf(out, len, i ? "%.1f%s" : "%.1f", v, u[i]);
}

static void fmt_ns(uint64_t ns, char *out, size_t len)
{
	if (ns < 1000)
		snprintf(out, len, "%" PRIu64 "ns", ns);
	else if (ns < 1000000)
		snprintf(out, len, "%.1fus", (double)ns / 1e3);
	else if (ns < 1000000000)
		snprintf(out, len, "%.2fms", (double)ns / 1e6);
	else
		snprintf(out, len, "%.2fs", (double)ns / 1e9);
}

static void fmt_pct(uint64_t part, uint64_t whole, char *out, size_t len)
{
	if (whole == 0)
		snprintf(out, len, "-");
	else
		snprintf(out, len, "%.1f", 100.0 * (double)part / (double)whole);
}

static void fmt_uptime(uint64_t s, char *out, size_t len)
{
	if (s >= 86400)
		snprintf(out, len, "%" PRIu64 "d%02" PRIu64 "h%02" PRIu64 "m", s / 86400,
			 s / 3600 % 24, s / 60 % 60);
	else
		snprintf(out, len, "%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64, s / 3600, s / 60 % 60,
			 s % 60);
}

static const struct core_row *before_of(const struct sample *a, unsigned i)
{
	static const struct core_row zero;

	return a != NULL && i < a->ncores && a->core[i].seen ? &a->core[i] : &zero;
}

static void print_screen(const struct sample *a, const struct sample *b, double dt, bool clear)
{
	struct core_row all = {0}, all0 = {0};
	char up[32], ops[24], hit[16], rx[24], tx[24], ring[16];
	const char *op;
	json_t *h;

	if (clear)
		fputs("\033[H\033[2J", stdout);
	fmt_uptime(u64_of(b->info, "uptime_s"), up, sizeof(up));
	printf("cachenode-top  node %s  %s  %s %s  up %s  %" PRIu64 " worker(s)  pid %" PRIu64
	       "  every %.1fs\n\n",
	       str_of(b->info, "node_id", "?"), str_of(b->info, "version", "?"),
	       str_of(b->info, "transport", "?"), str_of(b->info, "listen", "?"), up,
	       u64_of(b->info, "workers"), u64_of(b->info, "pid"), dt);
	printf("%5s %-8s %10s %6s %9s %9s %6s %10s %12s\n", "CORE", "ROLE", "OPS/S", "HIT%",
	       "RX B/S", "TX B/S", "RING%", "DROPS", "REQUESTS");
	for (unsigned i = 0; i < b->ncores; i++) {
		const struct core_row *n = &b->core[i], *o = before_of(a, i);
		uint64_t dh = delta(n->l1_hits, o->l1_hits), dm = delta(n->l1_misses, o->l1_misses);

		if (!n->seen)
			continue;
		fmt_rate((double)delta(n->requests, o->requests) / dt, ops, sizeof(ops));
		fmt_pct(dh, dh + dm, hit, sizeof(hit));
		fmt_rate((double)delta(n->bytes_rx, o->bytes_rx) / dt, rx, sizeof(rx));
		fmt_rate((double)delta(n->bytes_tx, o->bytes_tx) / dt, tx, sizeof(tx));
		fmt_pct(n->ring_depth, b->ring_size, ring, sizeof(ring));
		printf("%5u %-8s %10s %6s %9s %9s %6s %10" PRIu64 " %12" PRIu64 "\n", i, n->role,
		       ops, hit, rx, tx, ring, n->drops, n->requests);
		all.requests += n->requests;
		all.l1_hits += n->l1_hits;
		all.l1_misses += n->l1_misses;
		all.bytes_rx += n->bytes_rx;
		all.bytes_tx += n->bytes_tx;
		all.drops += n->drops;
		all0.requests += o->requests;
		all0.l1_hits += o->l1_hits;
		all0.l1_misses += o->l1_misses;
		all0.bytes_rx += o->bytes_rx;
		all0.bytes_tx += o->bytes_tx;
	}
	{
		uint64_t dh = delta(all.l1_hits, all0.l1_hits);
		uint64_t dm = delta(all.l1_misses, all0.l1_misses);

		fmt_rate((double)delta(all.requests, all0.requests) / dt, ops, sizeof(ops));
		fmt_pct(dh, dh + dm, hit, sizeof(hit));
		fmt_rate((double)delta(all.bytes_rx, all0.bytes_rx) / dt, rx, sizeof(rx));
		fmt_rate((double)delta(all.bytes_tx, all0.bytes_tx) / dt, tx, sizeof(tx));
		printf("%5s %-8s %10s %6s %9s %9s %6s %10" PRIu64 " %12" PRIu64 "\n", "all", "",
		       ops, hit, rx, tx, "", all.drops, all.requests);
	}
	printf("\n%-10s %12s %10s %10s %10s %10s %10s\n", "OP", "COUNT", "OPS/S", "P50", "P99",
	       "P999", "MAX");
	if (u64_of(json_object_get(b->info, "telemetry"), "enabled") == 0)
		printf("(telemetry is off on this node: no latency)\n");
	else if (json_object_size(b->latency) == 0)
		printf("(no operation has completed yet)\n");
	json_object_foreach(b->latency, op, h) {
		json_t *h0 = json_object_get(a != NULL ? a->latency : NULL, op);
		char p50[16], p99[16], p999[16], mx[16];

		fmt_rate((double)delta(u64_of(h, "count"), u64_of(h0, "count")) / dt, ops,
			 sizeof(ops));
		fmt_ns(u64_of(h, "p50_ns"), p50, sizeof(p50));
		fmt_ns(u64_of(h, "p99_ns"), p99, sizeof(p99));
		fmt_ns(u64_of(h, "p999_ns"), p999, sizeof(p999));
		fmt_ns(u64_of(h, "max_ns"), mx, sizeof(mx));
		printf("%-10s %12" PRIu64 " %10s %10s %10s %10s %10s\n", op, u64_of(h, "count"),
		       ops, p50, p99, p999, mx);
	}
	fflush(stdout);
}

static json_t *ratio_json(uint64_t part, uint64_t whole)
{
	return whole ? json_real((double)part / (double)whole) : json_null();
}

/* One sample as one line of JSON: node info, per-core rates, per-op latency. */
static void print_json(const struct sample *a, const struct sample *b, double dt)
{
	json_t *root = json_object(), *cores = json_array(), *lat = json_object(), *h;
	const char *op;
	char *text;

	for (unsigned i = 0; i < b->ncores; i++) {
		const struct core_row *n = &b->core[i], *o = before_of(a, i);
		uint64_t dh = delta(n->l1_hits, o->l1_hits), dm = delta(n->l1_misses, o->l1_misses);

		if (!n->seen)
			continue;
		json_array_append_new(
			cores,
			json_pack("{s:i, s:s, s:f, s:o, s:f, s:f, s:o, s:I, s:I, s:I}",
				  "core", (int)i, "role", n->role,
				  "ops_per_s", (double)delta(n->requests, o->requests) / dt,
				  "l1_hit_rate", ratio_json(dh, dh + dm),
				  "rx_bytes_per_s", (double)delta(n->bytes_rx, o->bytes_rx) / dt,
				  "tx_bytes_per_s", (double)delta(n->bytes_tx, o->bytes_tx) / dt,
				  "ring_fill", ratio_json(n->ring_depth, b->ring_size),
				  "drops", (json_int_t)n->drops,
				  "requests", (json_int_t)n->requests,
				  "events", (json_int_t)n->events));
	}
	json_object_foreach(b->latency, op, h) {
		json_object_set_new(
			lat, op,
			json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
				  "count", (json_int_t)u64_of(h, "count"),
				  "mean_ns", (json_int_t)u64_of(h, "mean_ns"),
				  "p50_ns", (json_int_t)u64_of(h, "p50_ns"),
				  "p99_ns", (json_int_t)u64_of(h, "p99_ns"),
				  "p999_ns", (json_int_t)u64_of(h, "p999_ns"),
				  "max_ns", (json_int_t)u64_of(h, "max_ns")));
	}
	json_object_set_new(root, "time", json_integer((json_int_t)time(NULL)));
	json_object_set_new(root, "interval_s", json_real(dt));
	json_object_set(root, "node", b->info);
	json_object_set_new(root, "cores", cores);
	json_object_set_new(root, "latency", lat);
	text = json_dumps(root, JSON_COMPACT);
	if (text != NULL)
		printf("%s\n", text);
	free(text);
	json_decref(root);
	fflush(stdout);
}

/* ---- main ---- */

/* Sleep @secs unless a signal comes first. */
static void nap(double secs)
{
	struct timespec ts = {.tv_sec = (time_t)secs,
			      .tv_nsec = (long)((secs - (double)(time_t)secs) * 1e9)};

	while (!stop && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{"file-prefix", required_argument, NULL, 'f'},
		{"interval", required_argument, NULL, 'd'},
		{"once", no_argument, NULL, 'o'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int ch;

	*o = (struct opts){.interval = 1.0};
	while ((ch = getopt_long(argc, argv, "f:d:jh", lo, NULL)) != -1) {
		char *end;

		switch (ch) {
		case 'f':
			if (optarg[0] == '\0' || strchr(optarg, '/') != NULL) {
				fprintf(stderr, "cachenode-top: --file-prefix '%s': not a prefix\n",
					optarg);
				return -EINVAL;
			}
			o->prefix = optarg;
			break;
		case 'd':
			errno = 0;
			o->interval = strtod(optarg, &end);
			if (errno || end == optarg || *end != '\0' || !(o->interval >= 0.05) ||
			    o->interval > 3600) {
				fprintf(stderr, "cachenode-top: --interval '%s': want seconds, "
						"0.05 to 3600\n", optarg);
				return -EINVAL;
			}
			break;
		case 'o':
			o->once = true;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "cachenode-top: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct tel_conn c = {.fd = -1};
	struct sample a = {0}, b = {0};
	struct sigaction sa = {.sa_handler = on_signal};
	char prefix[256];
	bool tty = isatty(STDOUT_FILENO);
	struct opts o;
	int r, rc = 1;

	r = parse_opts(argc, argv, &o);
	if (r == 1)
		return 0;
	if (r < 0) {
		usage(stderr);
		return 2;
	}
	if (o.prefix != NULL)
		snprintf(prefix, sizeof(prefix), "%s", o.prefix);
	else if (find_prefix(prefix, sizeof(prefix)) < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (tel_open(&c, prefix) < 0)
		goto out;
	if (sample_take(&c, &a) < 0)
		goto out;
	for (;;) {
		nap(o.interval);
		if (stop)
			break;
		if (sample_take(&c, &b) < 0)
			goto out;
		if (o.json)
			print_json(&a, &b, secs_between(&a.t, &b.t));
		else
			print_screen(&a, &b, secs_between(&a.t, &b.t), tty && !o.once);
		sample_free(&a);
		a = b;
		memset(&b, 0, sizeof(b));
		if (o.once || stop)
			break;
		if (!o.json && !tty)
			printf("\n");
	}
	rc = 0;
out:
	sample_free(&a);
	sample_free(&b);
	tel_close(&c);
	return rc;
}
