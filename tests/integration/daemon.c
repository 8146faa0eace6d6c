/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <dirent.h>

#include <jansson.h>

#include <cachenode/client.h>
#include "daemon.h"

static int send_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t k = send(fd, c, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EPIPE;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

int cn_raw_send_frame(int fd, uint8_t op, uint16_t flags, uint64_t id, const void *p,
		      uint32_t len)
{
	struct cn_proto_hdr h;
	uint8_t b[CN_PROTO_HDR_LEN];
	int rc;

	cn_proto_hdr_init(&h, op, flags, id, len, 0);
	cn_proto_hdr_encode(&h, b);
	rc = send_all(fd, b, sizeof(b));
	return rc == 0 && len > 0 ? send_all(fd, p, len) : rc;
}

int cn_raw_recv_reply(int fd, struct cn_proto_hdr *h, char *buf, size_t cap)
{
	uint8_t b[CN_PROTO_HDR_LEN];
	ssize_t n = recv(fd, b, sizeof(b), MSG_WAITALL);

	if (n != (ssize_t)sizeof(b))
		return n < 0 ? -errno : -ECONNRESET;
	if (cn_proto_hdr_decode(b, h) != CN_OK || !(h->flags & CN_F_RESPONSE))
		return -EPROTO;
	if (h->payload_len >= cap)
		return -E2BIG;
	if (h->payload_len > 0 &&
	    recv(fd, buf, h->payload_len, MSG_WAITALL) != (ssize_t)h->payload_len)
		return -ECONNRESET;
	buf[h->payload_len] = '\0';
	return 0;
}

int cn_raw_connect(const char *addr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {.tv_sec = 10};
	char host[32];
	unsigned port;
	int one = 1, fd;

	if (sscanf(addr, "%31[^:]:%u", host, &port) != 2 || port > 65535 ||
	    inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -EINVAL;
	sa.sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

struct cn_key cn_test_key(const char *fmt, ...)
{
	char text[128];
	struct cn_key k;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	cn_key_parse(text, &k);
	return k;
}

uint16_t cn_free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t port = 0;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void dump_log(const struct cn_daemon *d)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "sed 's/^/  daemon| /' %s >&2", d->log);
	if (system(cmd) != 0)
		fprintf(stderr, "(no daemon log)\n");
}

int cn_daemon_start(struct cn_daemon *d, const char *const *args)
{
	static unsigned seq;
	const char *bin = getenv("CACHENODE_BIN");
	const char *argv[64];
	int argc = 0;
	bool has_http = false, has_transport = false;

	if (bin == NULL) {
		fprintf(stderr, "CACHENODE_BIN is not set\n");
		return -EINVAL;
	}
	memset(d, 0, sizeof(*d));
	snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%u", cn_free_port());
	snprintf(d->node_id, sizeof(d->node_id), "itest-%d-%u", (int)getpid(), seq++);
	snprintf(d->log, sizeof(d->log), "/tmp/cachenode-%s.log", d->node_id);
	argv[argc++] = bin;
	argv[argc++] = "--listen";
	argv[argc++] = d->addr;
	argv[argc++] = "--node-id";
	argv[argc++] = d->node_id;
	for (const char *const *a = args; a && *a; a++) {
		/* the caller's own --listen / --node-id win (the node takes the last one) */
		if (strcmp(*a, "--listen") == 0 && a[1])
			snprintf(d->addr, sizeof(d->addr), "%s", a[1]);
		if (strcmp(*a, "--node-id") == 0 && a[1]) {
			snprintf(d->node_id, sizeof(d->node_id), "%s", a[1]);
			snprintf(d->log, sizeof(d->log), "/tmp/cachenode-%s.log", d->node_id);
		}
		has_http |= strcmp(*a, "--http") == 0;
		has_transport |= strcmp(*a, "--transport") == 0;
	}
	if (!has_http) { /* never the default 9190: tests must not collide with a running node */
		argv[argc++] = "--http";
		argv[argc++] = "127.0.0.1:0";
	}
	if (!has_transport) { /* the tests speak tcp, even on a host with an RDMA device */
		argv[argc++] = "--transport";
		argv[argc++] = "tcp";
	}
	for (; args && *args && argc < 60; args++)
		argv[argc++] = *args;
	argv[argc] = NULL;

	d->pid = fork();
	if (d->pid < 0)
		return -errno;
	if (d->pid == 0) {
		int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		/* a test that fails half-way never stops its node: die with the test */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 300; i++) {
		struct cn_client_opts o = {.timeout_ms = 2000};
		struct cn_client *c = NULL;
		int st;

		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			fprintf(stderr, "cachenode exited early (status %d)\n", st);
			dump_log(d);
			d->pid = 0;
			return -ECHILD;
		}
		if (cn_client_connect(d->addr, &o, &c) == 0 && cn_client_ping(c) == 0) {
			cn_client_close(&c);
			return 0;
		}
		cn_client_close(&c);
		usleep(100 * 1000);
	}
	fprintf(stderr, "cachenode did not answer on %s\n", d->addr);
	dump_log(d);
	cn_daemon_stop(d, SIGKILL, 5000);
	return -ETIMEDOUT;
}

/* The node's DPDK runtime directory (its lock file stays there by design). */
static void remove_runtime_dir(const struct cn_daemon *d)
{
	char path[256];

	snprintf(path, sizeof(path), "/var/run/dpdk/cachenode-%s/cachenode.lock", d->node_id);
	unlink(path);
	*strrchr(path, '/') = '\0';
	rmdir(path);
}

int cn_daemon_stop(struct cn_daemon *d, int sig, int timeout_ms)
{
	int st;

	if (d->pid <= 0)
		return -ESRCH;
	kill(d->pid, sig);
	for (int waited = 0; waited <= timeout_ms; waited += 10) {
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			remove_runtime_dir(d);
			if (WIFEXITED(st))
				return WEXITSTATUS(st);
			return 128 + WTERMSIG(st);
		}
		usleep(10 * 1000);
	}
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &st, 0);
	d->pid = 0;
	dump_log(d);
	return -ETIMEDOUT;
}

/* 1: every thread of @pid is stopped, 0: one still runs, -errno: unreadable. */
static int all_threads_stopped(pid_t pid)
{
	char path[320], stat[512];
	struct dirent *e;
	int rc = 1;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (dir == NULL)
		return -errno;
	while (rc == 1 && (e = readdir(dir)) != NULL) {
		const char *close_paren;
		ssize_t n;
		int fd;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)pid, e->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue; /* the thread exited */
		n = read(fd, stat, sizeof(stat) - 1);
		close(fd);
		if (n <= 0)
			continue;
		stat[n] = '\0';
		/* "TID (comm) S ...": comm may hold spaces and parentheses */
		close_paren = strrchr(stat, ')');
		if (close_paren == NULL || close_paren[1] != ' ' || close_paren[2] != 'T')
			rc = 0;
	}
	closedir(dir);
	return rc;
}

int cn_pid_stop(pid_t pid, int timeout_ms)
{
	if (kill(pid, SIGSTOP) != 0)
		return -errno;
	for (int waited = 0; waited <= timeout_ms; waited++) {
		int rc = all_threads_stopped(pid);

		if (rc != 0)
			return rc < 0 ? rc : 0;
		usleep(1000);
	}
	return -ETIMEDOUT;
}

bool cn_daemon_log_contains(const struct cn_daemon *d, const char *text)
{
	FILE *f = fopen(d->log, "r");
	char line[1024];
	bool found = false;

	while (f && !found && fgets(line, sizeof(line), f))
		found = strstr(line, text) != NULL;
	if (f)
		fclose(f);
	return found;
}

json_t *cn_json_at(json_t *node, const char *path)
{
	char buf[256], *tok, *save;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); tok && node; tok = strtok_r(NULL, ".", &save))
		node = json_is_array(node) ? json_array_get(node, strtoul(tok, NULL, 10))
					   : json_object_get(node, tok);
	return node;
}

int cn_status_u64(const char *addr, const char *path, uint64_t *v)
{
	struct cn_client *c = NULL;
	char *text = NULL;
	json_t *root, *node;
	int r = cn_client_connect(addr, NULL, &c);

	if (r == 0)
		r = cn_client_status(c, &text);
	cn_client_close(&c);
	if (r < 0)
		return r;
	root = json_loads(text, 0, NULL);
	free(text);
	if (root == NULL)
		return -EBADMSG;
	node = cn_json_at(root, path);
	r = json_is_integer(node) ? 0 : -ENOENT;
	if (r == 0)
		*v = (uint64_t)json_integer_value(node);
	json_decref(root);
	return r;
}

int cn_status_wait_u64(const char *addr, const char *path, uint64_t want, int timeout_ms,
		       uint64_t *last)
{
	for (int waited = 0;; waited += 10) {
		int r = cn_status_u64(addr, path, last);

		if (r == -ENOENT || r == -EBADMSG) /* no such number: waiting will not help */
			return r;
		if (r == 0 && *last == want)
			return 0;
		if (waited >= timeout_ms)
			return r < 0 ? r : -ETIMEDOUT; /* else a connection error, tried again */
		usleep(10 * 1000);
	}
}

int cn_run(const char *cmd, char *out, size_t cap)
{
	FILE *p = popen(cmd, "r");
	size_t n = 0;
	int st;

	if (p == NULL)
		return -errno;
	if (out && cap) {
		n = fread(out, 1, cap - 1, p);
		out[n] = '\0';
	} else {
		char sink[4096];
		while (fread(sink, 1, sizeof(sink), p) > 0)
			;
	}
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int cn_raw_send_retrieve(int fd, uint64_t id, const struct cn_key *keys, uint32_t n)
{
	uint8_t frame[CN_PROTO_HDR_LEN + 8 + 8 * CN_KEY_LEN];
	struct cn_proto_hdr h;
	uint32_t plen = 8 + n * CN_KEY_LEN;

	if (n == 0 || n > 8)
		return -EINVAL;
	cn_proto_hdr_init(&h, CN_OP_RETRIEVE, 0, id, plen, 0);
	cn_proto_hdr_encode(&h, frame);
	memset(frame + CN_PROTO_HDR_LEN, 0, 8);
	cn_put_le32(frame + CN_PROTO_HDR_LEN, n);
	memcpy(frame + CN_PROTO_HDR_LEN + 8, keys, n * CN_KEY_LEN);
	if (send(fd, frame, CN_PROTO_HDR_LEN + plen, MSG_NOSIGNAL) !=
	    (ssize_t)(CN_PROTO_HDR_LEN + plen))
		return -errno ? -errno : -EIO;
	return 0;
}

int cn_raw_read_retrieves(int fd, unsigned rounds, uint32_t n, uint32_t chunk, uint8_t *sink)
{
	for (unsigned r = 0; r < rounds; r++) {
		uint8_t hb[CN_PROTO_HDR_LEN];
		struct cn_proto_hdr h;
		uint64_t left;

		if (recv(fd, hb, sizeof(hb), MSG_WAITALL) != (ssize_t)sizeof(hb))
			return -EPROTO;
		if (cn_proto_hdr_decode(hb, &h) != CN_OK || h.status != CN_OK ||
		    h.payload_len != 8 + 8 * n + (uint64_t)n * chunk)
			return -EPROTO;
		for (left = h.payload_len; left > 0;) {
			ssize_t got = recv(fd, sink, left < chunk ? left : chunk, 0);

			if (got <= 0)
				return got < 0 ? -errno : -EPROTO;
			left -= (uint64_t)got;
		}
	}
	return 0;
}
