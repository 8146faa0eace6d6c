/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode-status: fetch a node's status tree (GET /api/status) and show it
 * as one line per component, or print the JSON as it came; or, with --redis,
 * every node of a cluster as the registry has it (tools/status_registry.c).
 *
 *   cachenode-status [--url URL] [--json] [--no-color] [--watch [--interval S] [--count N]]
 *   cachenode-status --redis URL [--cluster NAME] [--json] [--watch ...]
 *
 * Exit status: 0 healthy, 1 unhealthy (a node; with --redis: any node dead or
 * unhealthy, or none registered), 2 usage, 3 the node (or Redis) could not be
 * reached or its answer not understood; with --watch, the last round's. The
 * HTTP client is a minimal HTTP/1.1 GET over one TCP connection (Connection:
 * close), enough for the node's own server; no libcurl.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "status_registry.h"

#define DEFAULT_URL  "http://127.0.0.1:9190/api/status"
#define TIMEOUT_MS   5000
#define MAX_REPLY    (16u << 20)
#define EXIT_HEALTHY 0
#define EXIT_SICK    1
#define EXIT_USAGE   2
#define EXIT_UNREACH 3

#define C_DIM	"\033[2m"
#define C_RED	"\033[31m"
#define C_RESET "\033[0m"

struct url {
	char host[256];
	char port[8];
	char path[1024];
	char hostport[300]; /* for the Host header */
};

struct out {
	bool color;
};

/* ---- URL and HTTP ---- */

/* "http://HOST[:PORT][/PATH]" (scheme optional; "[v6]" hosts); 0 or -EINVAL. */
static int parse_url(const char *s, struct url *u)
{
	const char *p = s, *hend, *slash;
	size_t hl;

	if (strncasecmp(p, "https://", 8) == 0)
		return -EINVAL; /* no TLS here */
	if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	slash = strchr(p, '/');
	snprintf(u->path, sizeof(u->path), "%s", slash ? slash : "/api/status");
	hl = slash ? (size_t)(slash - p) : strlen(p);
	if (hl == 0 || hl >= sizeof(u->hostport))
		return -EINVAL;
	memcpy(u->hostport, p, hl);
	u->hostport[hl] = '\0';
	if (u->hostport[0] == '[') {
		hend = strchr(u->hostport, ']');
		if (hend == NULL || (size_t)(hend - u->hostport - 1) >= sizeof(u->host))
			return -EINVAL;
		snprintf(u->host, sizeof(u->host), "%.*s", (int)(hend - u->hostport - 1),
			 u->hostport + 1);
		hend++;
	} else {
		hend = strrchr(u->hostport, ':');
		if (hend == NULL)
			hend = u->hostport + hl;
		if ((size_t)(hend - u->hostport) >= sizeof(u->host))
			return -EINVAL;
		snprintf(u->host, sizeof(u->host), "%.*s", (int)(hend - u->hostport), u->hostport);
	}
	if (*hend == ':')
		snprintf(u->port, sizeof(u->port), "%s", hend + 1);
	else if (*hend == '\0')
		snprintf(u->port, sizeof(u->port), "80");
	else
		return -EINVAL;
	if (u->host[0] == '\0' || u->port[0] == '\0' || strspn(u->port, "0123456789") !=
	    strlen(u->port))
		return -EINVAL;
	return 0;
}

/* A connected socket (timeouts set), or -errno. */
static int dial(const struct url *u)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct timeval tv = {.tv_sec = TIMEOUT_MS / 1000};
	struct addrinfo *res, *ai;
	int fd = -1, r = -EHOSTUNREACH;

	if (getaddrinfo(u->host, u->port, &hints, &res) != 0)
		return -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		struct pollfd pfd;
		socklen_t sl = sizeof(r);
		int err = 0;

		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			r = -errno;
			goto next;
		}
		pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
		if (poll(&pfd, 1, TIMEOUT_MS) != 1) {
			r = -ETIMEDOUT;
			goto next;
		}
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl);
		if (err != 0) {
			r = -err;
			goto next;
		}
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		freeaddrinfo(res);
		return fd;
next:
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return r;
}

/* Undo Transfer-Encoding: chunked in place; new length or -EPROTO. */
static long dechunk(char *b, size_t len)
{
	size_t in = 0, out = 0;

	for (;;) {
		char *end;
		unsigned long n = strtoul(b + in, &end, 16);
		char *crlf = memmem(b + in, len - in, "\r\n", 2);

		if (crlf == NULL || end == b + in)
			return -EPROTO;
		in = (size_t)(crlf - b) + 2;
		if (n == 0)
			return (long)out;
		if (n > len - in)
			return -EPROTO;
		memmove(b + out, b + in, n);
		out += n;
		in += n + 2;
		if (in > len)
			return -EPROTO;
	}
}

/*
 * GET @u: the body (malloc'd, NUL-terminated) into *body and the HTTP
 * status into *status. 0, or -errno with a message in @err.
 */
static int http_get(const struct url *u, int *status, char **body, char *err, size_t errlen)
{
	char req[1600], *buf = NULL, *hdr_end, *p;
	size_t len = 0, cap = 0;
	int fd = dial(u), r = 0;
	long blen;

	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to %s: %s", u->hostport, strerror(-fd));
		return fd;
	}
	snprintf(req, sizeof(req),
		 "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cachenode-status/" CN_VERSION
		 "\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
		 u->path, u->hostport);
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) {
		r = -errno;
		snprintf(err, errlen, "sending to %s: %s", u->hostport, strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n;

		if (cap - len < 4096) {
			char *nb;

			cap = cap ? cap * 2 : 65536;
			nb = cap <= MAX_REPLY ? realloc(buf, cap + 1) : NULL;
			if (nb == NULL) {
				r = -ENOMEM;
				snprintf(err, errlen, "reply from %s too large", u->hostport);
				goto out;
			}
			buf = nb;
		}
		n = recv(fd, buf + len, cap - len, 0);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = errno == EAGAIN ? -ETIMEDOUT : -errno;
			snprintf(err, errlen, "reading from %s: %s", u->hostport, strerror(-r));
			goto out;
		}
		len += (size_t)n;
	}
	buf[len] = '\0';
	hdr_end = strstr(buf, "\r\n\r\n");
	if (hdr_end == NULL || sscanf(buf, "HTTP/1.%*d %d", status) != 1) {
		r = -EPROTO;
		snprintf(err, errlen, "%s did not answer in HTTP", u->hostport);
		goto out;
	}
	*hdr_end = '\0';
	p = hdr_end + 4;
	blen = (long)(len - (size_t)(p - buf));
	if (strcasestr(buf, "\r\ntransfer-encoding: chunked") != NULL) {
		blen = dechunk(p, (size_t)blen);
		if (blen < 0) {
			r = -EPROTO;
			snprintf(err, errlen, "%s sent a broken chunked body", u->hostport);
			goto out;
		}
	}
	memmove(buf, p, (size_t)blen);
	buf[blen] = '\0';
	*body = buf;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return r;
}

/* ---- figures in words ---- */

static const char *bytes_h(uint64_t v, char *b, size_t n)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double d = (double)v;
	unsigned u = 0;

	while (d >= 1024 && u < 5) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(b, n, "%llu B", (unsigned long long)v);
	else
		snprintf(b, n, "%.1f %s", d, units[u]);
	return b;
}

static const char *count_h(uint64_t v, char *b, size_t n)
{
	char digits[32];
	size_t nd = (size_t)snprintf(digits, sizeof(digits), "%llu", (unsigned long long)v), o = 0;

	for (size_t i = 0; i < nd && o + 2 < n; i++) {
		if (i > 0 && (nd - i) % 3 == 0)
			b[o++] = ',';
		b[o++] = digits[i];
	}
	b[o] = '\0';
	return b;
}

static const char *uptime_h(double s, char *b, size_t n)
{
	unsigned long t = s > 0 ? (unsigned long)s : 0;

	if (t < 60)
		snprintf(b, n, "%lus", t);
	else if (t < 3600)
		snprintf(b, n, "%lum%02lus", t / 60, t % 60);
	else if (t < 86400)
		snprintf(b, n, "%luh%02lum", t / 3600, t / 60 % 60);
	else
		snprintf(b, n, "%lud%02luh", t / 86400, t / 3600 % 24);
	return b;
}

static const char *usec_h(double us, char *b, size_t n)
{
	if (us < 10)
		snprintf(b, n, "%.1fus", us);
	else if (us < 1000)
		snprintf(b, n, "%.0fus", us);
	else if (us < 1e6)
		snprintf(b, n, "%.1fms", us / 1e3);
	else
		snprintf(b, n, "%.2fs", us / 1e6);
	return b;
}

static uint64_t num(const json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (json_is_integer(v))
		return json_integer_value(v) < 0 ? 0 : (uint64_t)json_integer_value(v);
	return json_is_number(v) ? (uint64_t)json_number_value(v) : 0;
}

static const char *str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "?";
}

/* ---- the tree ---- */

static void figures_engine(const json_t *c, char *f, size_t n)
{
	const json_t *rq = json_object_get(c, "requests");
	char a[32], b[32], d[32], e[32], g[32], h[32];

	snprintf(f, n, "%s requests, %s stored (%s), %s retrieved (%s), %s errors, %llu sessions",
		 count_h(num(rq, "frames_rx"), a, sizeof(a)),
		 count_h(num(rq, "store_ok"), b, sizeof(b)),
		 bytes_h(num(rq, "store_bytes"), d, sizeof(d)),
		 count_h(num(rq, "retrieve_hits"), e, sizeof(e)),
		 bytes_h(num(rq, "retrieve_bytes"), g, sizeof(g)),
		 count_h(num(rq, "req_errors") + num(rq, "frames_bad"), h, sizeof(h)),
		 (unsigned long long)num(rq, "sessions_open"));
}

static void figures_l1(const json_t *c, char *f, size_t n)
{
	const json_t *ct = json_object_get(c, "counters");
	uint64_t cap = num(c, "capacity"), used = num(c, "used");
	char a[32], b[32], d[32], e[32], g[32], h[32];

	snprintf(f, n, "%s of %s used (%llu%%), %s chunks, %s pinned (%s), %s evicted",
		 bytes_h(used, a, sizeof(a)), bytes_h(cap, b, sizeof(b)),
		 (unsigned long long)(cap ? used * 100 / cap : 0),
		 count_h(num(c, "chunks"), d, sizeof(d)), count_h(num(c, "pinned"), e, sizeof(e)),
		 bytes_h(num(c, "pinned_bytes"), g, sizeof(g)),
		 count_h(num(ct, "evictions"), h, sizeof(h)));
}

static void figures_transport(const json_t *c, char *f, size_t n)
{
	const json_t *ct = json_object_get(c, "counters");
	char a[32], b[32], d[32];

	snprintf(f, n, "%s on %s, %s connections open, %s in, %s out", str(c, "name"),
		 str(c, "listen"), count_h(num(ct, "conns_open"), a, sizeof(a)),
		 bytes_h(num(ct, "bytes_rx"), b, sizeof(b)),
		 bytes_h(num(ct, "bytes_tx"), d, sizeof(d)));
}

static void figures_telemetry(const json_t *c, char *f, size_t n)
{
	const json_t *ct = json_object_get(c, "counters");
	char a[32], b[32], d[32], e[32];

	if (!json_is_true(json_object_get(c, "enabled"))) {
		snprintf(f, n, "off");
		return;
	}
	snprintf(f, n, "%s events, %s dropped, %s spans, drain lag %s",
		 count_h(num(ct, "events"), a, sizeof(a)), count_h(num(ct, "drops"), b, sizeof(b)),
		 count_h(num(ct, "spans"), d, sizeof(d)),
		 usec_h((double)num(ct, "drain_lag_ns") / 1e3, e, sizeof(e)));
}

static void line(const struct out *o, bool ok, int depth, const char *name, const char *figs)
{
	int w = 12 - 2 * depth;

	printf("%s%*s%-*s %-10s %s%s\n", o->color ? (ok ? C_DIM : C_RED) : "", 2 * depth, "",
	       w > 0 ? w : 0, name, ok ? "healthy" : "UNHEALTHY", figs, o->color ? C_RESET : "");
}

static void latency_lines(const struct out *o, const json_t *lat, int depth)
{
	const char *op;
	json_t *l;

	json_object_foreach((json_t *)lat, op, l) {
		char f[256], a[32], b[32], c[32], d[32], e[32];

		snprintf(f, sizeof(f), "%s spans, p50 %s, p90 %s, p99 %s, p99.9 %s",
			 count_h(num(l, "count"), a, sizeof(a)),
			 usec_h(json_number_value(json_object_get(l, "p50_us")), b, sizeof(b)),
			 usec_h(json_number_value(json_object_get(l, "p90_us")), c, sizeof(c)),
			 usec_h(json_number_value(json_object_get(l, "p99_us")), d, sizeof(d)),
			 usec_h(json_number_value(json_object_get(l, "p999_us")), e, sizeof(e)));
		printf("%s%*s%-*s %-10s %s%s\n", o->color ? C_DIM : "", 2 * depth, "",
		       12 - 2 * depth, op, "", f, o->color ? C_RESET : "");
	}
}

/* Every component, depth first; figures for the ones this tool knows. */
static void components(const struct out *o, const json_t *comps, int depth)
{
	const char *name;
	json_t *c;

	json_object_foreach((json_t *)comps, name, c) {
		bool ok = json_is_true(json_object_get(c, "is_healthy"));
		char f[512] = "";

		if (strcmp(name, "engine") == 0)
			figures_engine(c, f, sizeof(f));
		else if (strcmp(name, "l1") == 0)
			figures_l1(c, f, sizeof(f));
		else if (strcmp(name, "transport") == 0)
			figures_transport(c, f, sizeof(f));
		else if (strcmp(name, "telemetry") == 0)
			figures_telemetry(c, f, sizeof(f));
		if (!ok && strcmp(str(c, "reason"), "?") != 0) {
			size_t l = strlen(f);
			snprintf(f + l, sizeof(f) - l, "%s%s", l ? "; " : "", str(c, "reason"));
		}
		line(o, ok, depth, name, f);
		components(o, json_object_get(c, "components"), depth + 1);
		if (strcmp(name, "telemetry") == 0)
			latency_lines(o, json_object_get(c, "latency"), depth + 1);
	}
}

static void show(const struct out *o, const json_t *root)
{
	const json_t *nd = json_object_get(root, "node");
	bool ok = json_is_true(json_object_get(root, "is_healthy"));
	char up[32];
	uint64_t workers = num(nd, "workers");

	printf("cachenode %s %s on %s (%s, %llu worker%s), up %s%s%s\n", str(nd, "node_id"),
	       str(nd, "version"), str(nd, "listen"), str(nd, "transport"),
	       (unsigned long long)workers, workers == 1 ? "" : "s",
	       uptime_h(json_number_value(json_object_get(nd, "uptime_s")), up, sizeof(up)),
	       *str(nd, "http") ? ", http " : "", *str(nd, "http") ? str(nd, "http") : "");
	if (!ok)
		printf("%sUNHEALTHY: %s%s\n", o->color ? C_RED : "", str(root, "reason"),
		       o->color ? C_RESET : "");
	components(o, json_object_get(root, "components"), 0);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cachenode-status [--url URL] [--json] [--no-color] [--watch]\n"
		"       cachenode-status --redis URL [--cluster NAME] [--json] [--no-color] [--watch]\n"
		"  --url URL       the node's status page (default " DEFAULT_URL ")\n"
		"  --redis URL     read the cluster registry instead: "
		"redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]\n"
		"  --cluster NAME  the cluster to list (default: default)\n"
		"  --json          print JSON (the node's tree as it sent it; with --redis the "
		"cluster)\n"
		"  --no-color      no ANSI colours (default: colours when stdout is a terminal)\n"
		"  --watch         repeat every --interval seconds (default 1) until interrupted, or "
		"--count times\n"
		"exit status: 0 healthy, 1 unhealthy (--redis: a node dead or unhealthy, or none), "
		"2 usage, 3 node or Redis unreachable or answer not understood\n");
}

/* One look at one node over HTTP; the exit status. */
static int node_once(const struct out *o, const struct url *u, bool json)
{
	char err[512], *body = NULL;
	json_error_t jerr;
	json_t *root;
	int status = 0;
	bool ok;

	if (http_get(u, &status, &body, err, sizeof(err)) < 0) {
		fprintf(stderr, "cachenode-status: %s\n", err);
		return EXIT_UNREACH;
	}
	if (status != 200) {
		fprintf(stderr, "cachenode-status: %s%s answered HTTP %d\n", u->hostport, u->path,
			status);
		free(body);
		return EXIT_UNREACH;
	}
	root = json_loads(body, 0, &jerr);
	if (!json_is_object(root) || !json_is_boolean(json_object_get(root, "is_healthy"))) {
		fprintf(stderr, "cachenode-status: %s%s is not a status tree: %s\n", u->hostport,
			u->path, root ? "no is_healthy" : jerr.text);
		json_decref(root);
		free(body);
		return EXIT_UNREACH;
	}
	ok = json_is_true(json_object_get(root, "is_healthy"));
	if (json)
		fputs(body, stdout);
	else
		show(o, root);
	json_decref(root);
	free(body);
	return ok ? EXIT_HEALTHY : EXIT_SICK;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'},
		{"redis", required_argument, NULL, 'r'},
		{"cluster", required_argument, NULL, 'c'},
		{"json", no_argument, NULL, 'j'},
		{"no-color", no_argument, NULL, 'n'},
		{"watch", no_argument, NULL, 'w'},
		{"interval", required_argument, NULL, 'i'},
		{"count", required_argument, NULL, 'k'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *url_s = NULL;
	struct out o = {.color = isatty(STDOUT_FILENO) && getenv("NO_COLOR") == NULL};
	struct status_reg_opts ro = {.cluster = "default", .timeout_ms = TIMEOUT_MS};
	bool json = false, watch = false, tty = isatty(STDOUT_FILENO);
	double interval = 1.0;
	long count = 0;
	char *end;
	struct url u;
	int c, rc = EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			url_s = optarg;
			break;
		case 'r':
			ro.url = optarg;
			break;
		case 'c':
			ro.cluster = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'n':
			o.color = false;
			break;
		case 'w':
			watch = true;
			break;
		case 'i':
			interval = strtod(optarg, &end);
			if (*end != '\0' || !(interval >= 0.05 && interval <= 3600)) {
				fprintf(stderr, "cachenode-status: --interval: seconds, 0.05..3600\n");
				return EXIT_USAGE;
			}
			break;
		case 'k':
			count = strtol(optarg, &end, 10);
			if (*end != '\0' || count < 1) {
				fprintf(stderr, "cachenode-status: --count: a number of rounds, >= 1\n");
				return EXIT_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return EXIT_HEALTHY;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || (url_s != NULL && ro.url != NULL)) {
		if (url_s != NULL && ro.url != NULL)
			fprintf(stderr, "cachenode-status: --url and --redis exclude each other\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	if (ro.url == NULL && parse_url(url_s ? url_s : DEFAULT_URL, &u) < 0) {
		fprintf(stderr, "cachenode-status: bad URL '%s' (want http://HOST:PORT/PATH)\n",
			url_s);
		return EXIT_USAGE;
	}
	ro.json = json;
	ro.color = o.color;
	if (!watch)
		count = 1;
	for (long round = 0; count == 0 || round < count; round++) {
		if (round > 0) {
			struct timespec ts = {.tv_sec = (time_t)interval,
					      .tv_nsec = (long)((interval - (double)(time_t)interval) *
								1e9)};

			nanosleep(&ts, NULL);
		}
		if (watch && tty && !json)
			fputs("\033[H\033[2J", stdout); /* a fresh screen each round */
		else if (round > 0 && !json)
			putchar('\n');
		rc = ro.url != NULL ? status_registry(&ro) : node_once(&o, &u, json);
		if (rc == EXIT_USAGE)
			break;
		fflush(stdout);
	}
	return rc;
}
