/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's HTTP endpoint: libmicrohttpd on its own internal polling
 * thread, so a slow scraper or a stuck connection never touches the data
 * path. Every page is computed from the node's counters and snapshots at
 * request time (cn_node_prometheus(), cn_node_status()); nothing is cached.
 *
 *   GET /metrics      Prometheus text 0.0.4
 *   GET /api/status   the status tree (JSON; pretty, or one line with ?compact)
 *   GET /api/healthz  200 "ok\n", or 503 and the status tree's reason
 *   other paths 404, other methods 405 (HEAD works wherever GET does)
 *
 * The listening socket is bound here rather than by libmicrohttpd, so that a
 * failure (address in use) comes back as its errno, and the real port is
 * known after port 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <jansson.h>
#include <microhttpd.h>
#include <rte_log.h>

#include "cn_node.h"

#define LOG(level, fmt, ...) RTE_LOG(level, USER1, "cachenode: http: " fmt "\n", ##__VA_ARGS__)

#define HTTP_BACKLOG	 64
#define HTTP_MAX_CONNS	 64
#define HTTP_TIMEOUT_S	 10
#define CT_METRICS	 "text/plain; version=0.0.4; charset=utf-8"
#define CT_JSON		 "application/json"
#define CT_TEXT		 "text/plain; charset=utf-8"

struct cn_http {
	struct cn_node *nd;
	struct MHD_Daemon *mhd;
	int fd; /* our copy of the listening socket (libmicrohttpd has a dup) */
	char addr[INET6_ADDRSTRLEN + 8];
};

/* libmicrohttpd's messages go to the DPDK log like ours. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	LOG(WARNING, "%s", msg);
}

/*
 * Queue @body (@len bytes) with @status. @own: @body is malloc'd and passes
 * to libmicrohttpd (freed with free()); else it is static.
 */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *ctype,
			     char *body, size_t len, bool own)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, body,
					    own ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (r == NULL) {
		if (own)
			free(body);
		return MHD_NO; /* closes the connection */
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *fmt,
				  ...) __attribute__((format(printf, 3, 4)));

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *fmt,
				  ...)
{
	va_list ap;
	char *text;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		return MHD_NO;
	return reply(conn, status, CT_TEXT, text, (size_t)n, true);
}

static enum MHD_Result get_metrics(struct cn_http *h, struct MHD_Connection *conn)
{
	size_t len;
	char *text = cn_node_prometheus(h->nd, &len);

	if (text == NULL)
		return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return reply(conn, MHD_HTTP_OK, CT_METRICS, text, len, true);
}

static enum MHD_Result get_status(struct cn_http *h, struct MHD_Connection *conn)
{
	const char *v;
	size_t vlen;
	/* "?compact" or "?compact=anything"; a key without a value has a NULL value */
	bool compact = MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "compact", 7, &v,
						     &vlen) == MHD_YES;
	json_t *st = cn_node_status(h->nd);
	size_t flags = JSON_REAL_PRECISION(10) | (compact ? JSON_COMPACT : JSON_INDENT(2));
	char *text = st ? json_dumps(st, flags) : NULL;
	size_t len;

	json_decref(st);
	if (text == NULL)
		return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	/* one more byte: json_dumps() leaves room for the NUL, a newline ends the page */
	len = strlen(text);
	text[len] = '\n';
	return reply(conn, MHD_HTTP_OK, CT_JSON, text, len + 1, true);
}

static enum MHD_Result get_healthz(struct cn_http *h, struct MHD_Connection *conn)
{
	json_t *st = cn_node_status(h->nd);
	enum MHD_Result r;

	if (st == NULL)
		return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	if (json_is_true(json_object_get(st, "is_healthy")))
		r = reply(conn, MHD_HTTP_OK, CT_TEXT, (char *)"ok\n", 3, false);
	else
		r = reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "%s\n",
			       json_string_value(json_object_get(st, "reason")));
	json_decref(st);
	return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_len, void **req_cls)
{
	struct cn_http *h = cls;

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "%s not allowed: GET only\n",
				  method);
	if (strcmp(url, "/metrics") == 0)
		return get_metrics(h, conn);
	if (strcmp(url, "/api/status") == 0)
		return get_status(h, conn);
	if (strcmp(url, "/api/healthz") == 0)
		return get_healthz(h, conn);
	return reply_text(conn, MHD_HTTP_NOT_FOUND,
			  "not found: %s (try /metrics, /api/status, /api/healthz)\n", url);
}

/*
 * Bind and listen on @addr: the socket and the bound address into @h, the
 * address family into *family. 0 or -errno.
 */
static int http_listen(struct cn_http *h, const char *addr, int *family)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct addrinfo *res;
	char host[256], port_s[8], ip[INET6_ADDRSTRLEN];
	uint16_t port;
	int fd, one = 1, r;

	if (cn_parse_hostport(addr, host, sizeof(host), &port) < 0)
		return -EINVAL;
	snprintf(port_s, sizeof(port_s), "%u", port);
	r = getaddrinfo(host[0] ? host : NULL, port_s, &hints, &res);
	if (r != 0)
		return r == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto free_ai;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, HTTP_BACKLOG) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
		r = -errno;
		goto close_fd;
	}
	*family = ss.ss_family;
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(h->addr, sizeof(h->addr), "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(h->addr, sizeof(h->addr), "%s:%u", ip, ntohs(s4->sin_port));
	}
	h->fd = fd;
	freeaddrinfo(res);
	return 0;

close_fd:
	close(fd);
free_ai:
	freeaddrinfo(res);
	return r;
}

int cn_http_start(struct cn_node *nd, const char *addr, struct cn_http **out)
{
	struct cn_http *h = calloc(1, sizeof(*h));
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
	int family = AF_INET, dupfd, r;

	if (h == NULL)
		return -ENOMEM;
	h->nd = nd;
	r = http_listen(h, addr, &family);
	if (r < 0) {
		LOG(ERR, "cannot listen on %s: %s", addr,
		    r == -EINVAL ? "not HOST:PORT" : strerror(-r));
		goto free_h;
	}
	/* libmicrohttpd closes the socket it is given; it gets a copy, we keep ours */
	dupfd = fcntl(h->fd, F_DUPFD_CLOEXEC, 0);
	if (dupfd < 0) {
		r = -errno;
		LOG(ERR, "cannot serve %s: %s", h->addr, strerror(-r));
		goto close_fd;
	}
	if (family == AF_INET6)
		flags |= MHD_USE_IPv6;
	errno = 0;
	h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, /* first, to catch all */
				  MHD_OPTION_LISTEN_SOCKET, dupfd,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
				  MHD_OPTION_END);
	if (h->mhd == NULL) {
		r = errno ? -errno : -EIO;
		LOG(ERR, "cannot start the server on %s: %s", h->addr, strerror(-r));
		goto close_fd;
	}
	/*
	 * *out is usually &nd->http, which the status tree reads (atomically)
	 * from this server's thread, the workers and the DPDK telemetry
	 * thread. A request served before this store reports "http": "".
	 */
	__atomic_store_n(out, h, __ATOMIC_RELEASE);
	return 0;

close_fd:
	close(h->fd);
free_h:
	free(h);
	return r;
}

void cn_http_stop(struct cn_http **hp)
{
	struct cn_http *h;

	if (hp == NULL || *hp == NULL)
		return;
	h = *hp;
	/*
	 * Unpublish first: a status reader on another thread (DPDK telemetry)
	 * that loaded the pointer just before copies the address long before
	 * the server's thread has been joined and @h is freed.
	 */
	__atomic_store_n(hp, NULL, __ATOMIC_RELEASE);
	MHD_stop_daemon(h->mhd); /* joins its thread, closes its copy of the socket */
	close(h->fd);
	free(h);
}

const char *cn_http_addr(const struct cn_http *h)
{
	return h->addr;
}
