/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP exporters against the real daemon: /metrics counts exactly the
 * workload the test drives and passes `promtool check metrics`; a real
 * Prometheus server scrapes it and answers the same sum; /api/status and
 * /api/healthz turn unhealthy, with the reason in words, while readers pin
 * the whole L1, and healthy again when they let go; cachenode-status says
 * the same with its exit status.
 *
 * Needs promtool and prometheus on PATH (Debian package prometheus); the
 * Prometheus case is skipped, saying why, where prometheus is missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <cmocka.h>
#include <jansson.h>

#include <cachenode/client.h>
#include <cachenode/proto.h>
#include "cn_transport.h"
#include "daemon.h"

#define MiB	     (1u << 20)
#define N_SMALL	     20		/* chunks of the counted workload */
#define SMALL_LEN    4096
#define N_PIN	     7		/* 1 MiB chunks pinned first (of the 8 the pool holds) */
#define PIN_ROUNDS   3		/* RETRIEVEs of those 7, never read until released */
#define LAST_ROUNDS  16		/* RETRIEVEs of the 8th: more than socket buffers hold */

static struct cn_daemon d;
static char http_addr[64]; /* 127.0.0.1:PORT */

/* ---- HTTP over a plain socket ---- */

static int tcp_connect(const char *addr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {.tv_sec = 10};
	char host[32];
	unsigned port;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	assert_true(fd >= 0);
	assert_int_equal(sscanf(addr, "%31[^:]:%u", host, &port), 2);
	inet_pton(AF_INET, host, &sa.sin_addr);
	sa.sin_port = htons((uint16_t)port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -errno;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/*
 * @method @path on @addr; returns the HTTP status (or -errno when nothing
 * answered) and the body, NUL-terminated and malloc'd, in *body.
 */
static int http_req(const char *addr, const char *method, const char *path, char **body)
{
	char req[512], *buf = NULL, *end;
	size_t len = 0, cap = 0;
	int fd = tcp_connect(addr), status = -EPROTO;
	ssize_t n;

	*body = NULL;
	if (fd < 0)
		return fd;
	snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n",
		 method, path, addr, strcmp(method, "POST") == 0 ? "Content-Length: 0\r\n" : "");
	assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	do {
		if (cap - len < 4096) {
			cap = cap ? 2 * cap : 65536;
			buf = realloc(buf, cap + 1);
			assert_non_null(buf);
		}
		n = recv(fd, buf + len, cap - len, 0);
		if (n > 0)
			len += (size_t)n;
	} while (n > 0);
	close(fd);
	if (buf == NULL)
		return -ECONNRESET;
	buf[len] = '\0';
	end = strstr(buf, "\r\n\r\n");
	if (end && sscanf(buf, "HTTP/1.1 %d", &status) == 1) {
		memmove(buf, end + 4, len - (size_t)(end + 4 - buf) + 1);
		*body = buf;
		return status;
	}
	free(buf);
	return -EPROTO;
}

static char *http_get_ok(const char *path)
{
	char *body;

	assert_int_equal(http_req(http_addr, "GET", path, &body), 200);
	return body;
}

/* The sum of every series of family @name in Prometheus text (-1 if none). */
static double metric_sum(const char *text, const char *name)
{
	size_t nl = strlen(name);
	double sum = -1;

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		const char *v;

		if (strncmp(p, name, nl) != 0 || (p[nl] != '{' && p[nl] != ' '))
			continue;
		v = p[nl] == '{' ? strchr(p, '}') : p + nl;
		assert_non_null(v);
		sum = (sum < 0 ? 0 : sum) + strtod(v + 1, NULL);
	}
	return sum;
}

/* The value of the one series "@name{...@label...}" (-1 if none). */
static double metric_one(const char *text, const char *name, const char *label)
{
	size_t nl = strlen(name);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		const char *close = strchr(p, '}'), *l;

		if (strncmp(p, name, nl) != 0 || p[nl] != '{' || close == NULL)
			continue;
		l = strstr(p, label);
		if (l && l < close)
			return strtod(close + 1, NULL);
	}
	return -1;
}

static double scrape(const char *name)
{
	char *m = http_get_ok("/metrics");
	double v = metric_sum(m, name);

	free(m);
	return v;
}

static json_t *status_tree(void)
{
	char *body = http_get_ok("/api/status");
	json_error_t err;
	json_t *root = json_loads(body, 0, &err);

	if (root == NULL)
		fail_msg("/api/status is not JSON: %s", err.text);
	free(body);
	return root;
}

static json_t *at(json_t *node, const char *path)
{
	json_t *v = cn_json_at(node, path);

	if (v == NULL)
		fail_msg("status tree has no %s", path);
	return v;
}

static int64_t status_int(const char *path)
{
	json_t *root = status_tree();
	int64_t v = json_integer_value(at(root, path));

	json_decref(root);
	return v;
}

/* Wait up to @ms for the status integer at @path to equal @want. */
static void wait_status_int(const char *path, int64_t want, int ms)
{
	int64_t v = -1;

	for (int waited = 0; waited <= ms; waited += 50) {
		v = status_int(path);
		if (v == want)
			return;
		usleep(50 * 1000);
	}
	fail_msg("%s is %lld, want %lld", path, (long long)v, (long long)want);
}

static int status_tool(const char *args, char *out, size_t cap)
{
	char cmd[512];
	const char *bin = getenv("CACHENODE_STATUS");

	assert_non_null(bin);
	snprintf(cmd, sizeof(cmd), "%s --url http://%s/api/status %s 2>&1", bin, http_addr, args);
	return cn_run(cmd, out, cap);
}

static bool have(const char *prog)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
	return cn_run(cmd, NULL, 0) == 0;
}

static struct cn_client *client(void)
{
	struct cn_client *c = NULL;

	assert_int_equal(cn_client_connect(d.addr, NULL, &c), 0);
	return c;
}


/* ---- fixture: one node for every case, 8 MiB of 1 MiB pages ---- */

static int node_up(void **state)
{
	const char *args[] = {"--http", http_addr, "--l1-size", "8M", "--max-chunk", "1M", NULL};

	snprintf(http_addr, sizeof(http_addr), "127.0.0.1:%u", cn_free_port());
	return cn_daemon_start(&d, args) == 0 ? 0 : -1;
}

static int node_down(void **state)
{
	return cn_daemon_stop(&d, SIGTERM, 10000) == 0 ? 0 : -1;
}

/* ---- cases ---- */

/* A known workload moves the counters on /metrics by exactly its size. */
static void metrics_count_the_workload(void **state)
{
	struct cn_client *c = client();
	uint8_t buf[SMALL_LEN], out[SMALL_LEN];
	double stores0 = scrape("cachenode_requests_store_ok_total");
	double hits0 = scrape("cachenode_requests_retrieve_hits_total");
	double l1_0 = scrape("cachenode_l1_stores_total");
	double bytes0 = scrape("cachenode_requests_store_bytes_total");
	char *m, tmp[] = "/tmp/cn-metrics-XXXXXX", cmd[128], msg[4096];
	double lat = -1;
	int fd;

	assert_true(stores0 >= 0 && hits0 >= 0 && l1_0 >= 0);
	for (int i = 0; i < N_SMALL; i++) {
		struct cn_key k = cn_test_key("http-small-%d", i);
		uint32_t len = 0;

		memset(buf, i, sizeof(buf));
		assert_int_equal(cn_client_store(c, &k, buf, sizeof(buf)), 0);
		assert_int_equal(cn_client_retrieve(c, &k, out, sizeof(out), &len), 0);
		assert_int_equal(len, sizeof(buf));
	}
	m = http_get_ok("/metrics");
	assert_true(metric_sum(m, "cachenode_requests_store_ok_total") == stores0 + N_SMALL);
	assert_true(metric_sum(m, "cachenode_requests_store_bytes_total") ==
		    bytes0 + N_SMALL * SMALL_LEN);
	assert_true(metric_sum(m, "cachenode_requests_retrieve_hits_total") == hits0 + N_SMALL);
	assert_true(metric_sum(m, "cachenode_l1_stores_total") == l1_0 + N_SMALL);
	assert_true(metric_sum(m, "cachenode_l1_chunks") == N_SMALL);
	assert_true(metric_sum(m, "cachenode_l1_capacity_bytes") == 8.0 * MiB);
	assert_true(metric_sum(m, "cachenode_up") == 1);
	assert_true(metric_sum(m, "cachenode_healthy") == 1);
	assert_true(metric_one(m, "cachenode_l1_stores_total", "core=\"0\"") >= 0);
	assert_non_null(strstr(m, d.node_id));

	/* promtool accepts the page as it is: no lint problem either */
	fd = mkstemp(tmp);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, m, strlen(m)), (ssize_t)strlen(m));
	close(fd);
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", tmp);
	if (cn_run(cmd, msg, sizeof(msg)) != 0 || msg[0] != '\0')
		fail_msg("promtool check metrics: %s", msg);
	unlink(tmp);
	free(m);

	/* spans reach the latency histogram once the drain has run */
	for (int waited = 0; waited < 5000; waited += 50) {
		m = http_get_ok("/metrics");
		lat = metric_one(m, "cachenode_op_latency_seconds_count", "op=\"store\"");
		free(m);
		if (lat == N_SMALL)
			break;
		usleep(50 * 1000);
	}
	assert_true(lat == N_SMALL);

	/* give the pool back for the pinning case */
	for (int i = 0; i < N_SMALL; i++) {
		struct cn_key k = cn_test_key("http-small-%d", i);
		assert_int_equal(cn_client_delete(c, &k), 0);
	}
	assert_true(scrape("cachenode_l1_chunks") == 0);
	cn_client_close(&c);
}

/*
 * docs/telemetry.md must name every family the node exports: the tables'
 * rows are generated into it; this catches the families outside the tables.
 */
static void every_family_is_documented(void **state)
{
	const char *dir = getenv("CACHENODE_DOCS");
	char path[512], *doc, *m, *line, *save = NULL;
	FILE *f;
	long n;
	unsigned families = 0;

	assert_non_null(dir);
	snprintf(path, sizeof(path), "%s/telemetry.md", dir);
	f = fopen(path, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	doc = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(doc, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	m = http_get_ok("/metrics");
	for (line = strtok_r(m, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char fam[128], quoted[140];

		if (sscanf(line, "# TYPE %127s", fam) != 1)
			continue;
		families++;
		snprintf(quoted, sizeof(quoted), "`%s`", fam);
		if (strstr(doc, quoted) == NULL) {
			/* a family in a shared row: "`cachenode_l1_capacity_bytes`, `_used_bytes`" */
			char short_form[140];
			bool found = false;

			for (const char *p = strchr(fam + strlen("cachenode_"), '_'); p && !found;
			     p = strchr(p + 1, '_')) {
				snprintf(short_form, sizeof(short_form), "`%s`", p);
				found = strstr(doc, short_form) != NULL;
			}
			if (!found)
				fail_msg("%s is exported but not in docs/telemetry.md", fam);
		}
	}
	assert_true(families > 50);
	free(m);
	free(doc);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* A real Prometheus scrapes /metrics and its query API gives back the same sum. */
static void prometheus_scrapes_the_node(void **state)
{
	char dir[] = "/tmp/cn-prom-XXXXXX", cfg[4096], path[256], web[64], url[256], cmd[512];
	double want = scrape("cachenode_requests_store_ok_total"), got = -1;
	char *body = NULL;
	pid_t pid;
	int st;

	if (!have("prometheus")) {
		printf("skipped: prometheus is not installed (Debian package prometheus)\n");
		skip();
	}
	assert_true(want >= N_SMALL);
	assert_non_null(mkdtemp(dir));
	snprintf(cfg, sizeof(cfg),
		 "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
		 "scrape_configs:\n  - job_name: cachenode\n    static_configs:\n"
		 "      - targets: ['%s']\n",
		 http_addr);
	snprintf(path, sizeof(path), "%s/prometheus.yml", dir);
	write_file(path, cfg);
	snprintf(web, sizeof(web), "127.0.0.1:%u", cn_free_port());

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char a_cfg[300], a_data[300], a_web[100], logp[300];
		int fd;

		snprintf(a_cfg, sizeof(a_cfg), "--config.file=%s/prometheus.yml", dir);
		snprintf(a_data, sizeof(a_data), "--storage.tsdb.path=%s/data", dir);
		snprintf(a_web, sizeof(a_web), "--web.listen-address=%s", web);
		snprintf(logp, sizeof(logp), "%s/log", dir);
		fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 1);
		dup2(fd, 2);
		execlp("prometheus", "prometheus", a_cfg, a_data, a_web, "--log.level=warn",
		       (char *)NULL);
		_exit(127);
	}
	/* until the query API answers the sum the node exports (scrapes every 1 s) */
	snprintf(url, sizeof(url), "/api/v1/query?query=sum(cachenode_requests_store_ok_total)");
	for (int waited = 0; waited < 60000 && got != want; waited += 250) {
		json_t *root, *v;

		usleep(250 * 1000);
		if (waitpid(pid, &st, WNOHANG) == pid) {
			snprintf(cmd, sizeof(cmd), "cat %s/log >&2", dir);
			(void)cn_run(cmd, NULL, 0);
			fail_msg("prometheus exited (status %d)", st);
		}
		if (http_req(web, "GET", url, &body) != 200) {
			free(body);
			continue;
		}
		root = json_loads(body, 0, NULL);
		free(body);
		v = json_array_get(json_object_get(json_object_get(root, "data"), "result"), 0);
		v = json_array_get(json_object_get(v, "value"), 1);
		if (json_is_string(v))
			got = strtod(json_string_value(v), NULL);
		json_decref(root);
	}
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
	if (got != want) {
		snprintf(cmd, sizeof(cmd), "cat %s/log >&2", dir);
		(void)cn_run(cmd, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)cn_run(cmd, NULL, 0);
	if (got != want)
		fail_msg("prometheus says %g stores, /metrics %g", got, want);
}

static void status_tree_is_healthy(void **state)
{
	json_t *root = status_tree();
	char *body, out[8192];
	json_t *js;

	assert_true(json_is_true(at(root, "is_healthy")));
	assert_string_equal(json_string_value(at(root, "reason")), "ok");
	assert_string_equal(json_string_value(at(root, "node.node_id")), d.node_id);
	assert_string_equal(json_string_value(at(root, "node.http")), http_addr);
	assert_string_equal(json_string_value(at(root, "node.listen")), d.addr);
	assert_true(json_is_true(at(root, "components.engine.is_healthy")));
	assert_true(json_is_true(at(root, "components.engine.components.l1.is_healthy")));
	assert_int_equal(json_integer_value(at(root, "components.engine.components.l1.capacity")),
			 8 * MiB);
	assert_true(json_integer_value(at(root, "components.engine.requests.store_ok")) >=
		    N_SMALL);
	assert_true(json_is_integer(at(root, "components.engine.components.l1.counters.stores")));
	assert_string_equal(json_string_value(at(root, "components.transport.name")), "tcp");
	assert_true(json_is_true(at(root, "components.telemetry.enabled")));
	assert_true(json_array_size(at(root, "components.telemetry.cores")) >= 2);
	assert_true(json_integer_value(at(root, "components.telemetry.latency.store.count")) >=
		    N_SMALL);
	json_decref(root);

	assert_int_equal(http_req(http_addr, "GET", "/api/healthz", &body), 200);
	assert_string_equal(body, "ok\n");
	free(body);

	assert_int_equal(status_tool("--no-color", out, sizeof(out)), 0);
	assert_non_null(strstr(out, d.node_id));
	assert_non_null(strstr(out, "l1"));
	assert_null(strstr(out, "UNHEALTHY"));
	assert_null(strstr(out, "\033["));
	assert_int_equal(status_tool("--json", out, sizeof(out)), 0);
	js = json_loads(out, 0, NULL);
	assert_non_null(js);
	assert_true(json_is_true(json_object_get(js, "is_healthy")));
	json_decref(js);
}

/*
 * The transport choice and the RDMA counters, under tcp (the fixture runs
 * --transport auto on a host without RDMA): every verbs counter is exported
 * per worker as cachenode_verbs_<name>, all zero, and the status tree has the
 * same table; the info gauge and the tree say tcp, chosen by auto, and why.
 */
static void verbs_counters_are_zero_under_tcp(void **state)
{
	char *m = http_get_ok("/metrics");
	json_t *root = status_tree(), *verbs;
	char fam[128], series[160];

	/* the harness starts nodes with --transport tcp (test_daemon covers auto) */
	assert_string_equal(json_string_value(at(root, "components.transport.name")), "tcp");
	for (unsigned i = 0; i < cn_verbs_metric_count; i++) {
		const struct cn_metric_desc *row = &cn_verbs_metric_desc[i];

		snprintf(fam, sizeof(fam), "cachenode_verbs_%s%s", row->name,
			 row->type == CN_METRIC_COUNTER ? "_total" : "");
		snprintf(series, sizeof(series), "# TYPE %s %s\n", fam,
			 row->type == CN_METRIC_COUNTER ? "counter" : "gauge");
		if (strstr(m, series) == NULL)
			fail_msg("/metrics has no family %s", fam);
		/* one worker in the fixture: core 0, value 0 */
		assert_true(metric_one(m, fam, "core=\"0\"") == 0);
		assert_true(metric_sum(m, fam) == 0);
	}
	assert_true(metric_one(m, "cachenode_transport_info", "transport=\"tcp\"") == 1);
	assert_true(metric_one(m, "cachenode_transport_info", "chosen_by=\"option\"") == 1);

	verbs = at(root, "components.transport.verbs");
	assert_int_equal(json_object_size(verbs), cn_verbs_metric_count);
	for (unsigned i = 0; i < cn_verbs_metric_count; i++)
		assert_int_equal(json_integer_value(at(verbs, cn_verbs_metric_desc[i].name)), 0);
	assert_string_equal(json_string_value(at(root, "components.transport.chosen_by")), "option");
	assert_string_equal(json_string_value(at(root, "components.transport.fallback_reason")), "");
	json_decref(root);
	free(m);
}

/*
 * Readers that do not read their replies keep chunks pinned. Pin all eight
 * 1 MiB pages: the pool cannot evict below its high watermark, stores fail
 * with ENOSPC, and the status tree says so; when the replies are read, the
 * node is healthy again.
 */
static void pinned_pool_is_unhealthy(void **state)
{
	struct cn_client *c = client();
	struct cn_key keys[N_PIN + 2];
	uint8_t *buf = malloc(MiB);
	int slow = -1, slow2 = -1;
	char *body, out[8192];
	const char *reason;
	json_t *root;
	double m;

	assert_non_null(buf);
	for (int i = 0; i < N_PIN + 2; i++)
		keys[i] = cn_test_key("http-pin-%d", i);
	for (int i = 0; i < N_PIN; i++) {
		memset(buf, 'a' + i, MiB);
		assert_int_equal(cn_client_store(c, &keys[i], buf, MiB), 0);
	}
	/* a reader that never reads: the node keeps the chunks pinned until it does */
	slow = tcp_connect(d.addr);
	assert_true(slow >= 0);
	for (unsigned r = 0; r < PIN_ROUNDS; r++)
		assert_int_equal(cn_raw_send_retrieve(slow, 100 + r, keys, N_PIN), 0);
	wait_status_int("components.engine.components.l1.pinned", N_PIN, 5000);
	/* 7 of 8 MiB pinned is under the high watermark (95%): still healthy */
	assert_int_equal(http_req(http_addr, "GET", "/api/healthz", &body), 200);
	free(body);

	/* the last free page, then pin it too */
	assert_int_equal(cn_client_store(c, &keys[N_PIN], buf, MiB), 0);
	slow2 = tcp_connect(d.addr);
	assert_true(slow2 >= 0);
	for (unsigned r = 0; r < LAST_ROUNDS; r++)
		assert_int_equal(cn_raw_send_retrieve(slow2, 200 + r, &keys[N_PIN], 1), 0);
	wait_status_int("components.engine.components.l1.pinned", N_PIN + 1, 5000);

	/* what the reason claims is true */
	assert_int_equal(cn_client_store(c, &keys[N_PIN + 1], buf, MiB), -ENOSPC);

	root = status_tree();
	assert_false(json_is_true(at(root, "is_healthy")));
	reason = json_string_value(at(root, "reason"));
	if (strncmp(reason, "engine.l1: ", 11) != 0 || strstr(reason, "pinned") == NULL ||
	    strstr(reason, "ENOSPC") == NULL)
		fail_msg("reason: %s", reason);
	assert_false(json_is_true(at(root, "components.engine.is_healthy")));
	assert_int_equal(strncmp(json_string_value(at(root, "components.engine.reason")), "l1: ",
				 4), 0);
	assert_false(json_is_true(at(root, "components.engine.components.l1.is_healthy")));
	assert_true(json_is_true(at(root, "components.transport.is_healthy")));
	assert_true(json_is_true(at(root, "components.telemetry.is_healthy")));
	assert_int_equal(json_integer_value(at(root, "components.engine.components.l1."
						 "pinned_bytes")), 8 * MiB);
	json_decref(root);

	assert_int_equal(http_req(http_addr, "GET", "/api/healthz", &body), 503);
	assert_non_null(strstr(body, "pinned"));
	free(body);
	body = http_get_ok("/metrics");
	assert_true(metric_sum(body, "cachenode_healthy") == 0);
	assert_true(metric_one(body, "cachenode_component_healthy", "\"engine.l1\"") == 0);
	assert_true(metric_one(body, "cachenode_component_healthy", "\"transport\"") == 1);
	m = metric_sum(body, "cachenode_l1_pinned_bytes");
	assert_true(m == 8.0 * MiB);
	free(body);
	assert_int_equal(status_tool("--no-color", out, sizeof(out)), 1);
	assert_non_null(strstr(out, "UNHEALTHY: engine.l1: "));
	assert_int_equal(status_tool("--json", out, sizeof(out)), 1);
	root = json_loads(out, 0, NULL);
	assert_non_null(root);
	assert_false(json_is_true(json_object_get(root, "is_healthy")));
	json_decref(root);

	/* the readers read: every pin goes, and with it the fault */
	assert_int_equal(cn_raw_read_retrieves(slow, PIN_ROUNDS, N_PIN, MiB, buf), 0);
	assert_int_equal(cn_raw_read_retrieves(slow2, LAST_ROUNDS, 1, MiB, buf), 0);
	wait_status_int("components.engine.components.l1.pinned", 0, 5000);
	root = status_tree();
	assert_true(json_is_true(at(root, "is_healthy")));
	assert_string_equal(json_string_value(at(root, "reason")), "ok");
	json_decref(root);
	assert_int_equal(http_req(http_addr, "GET", "/api/healthz", &body), 200);
	free(body);
	assert_int_equal(status_tool("--no-color", out, sizeof(out)), 0);
	/* and the store that failed now evicts and succeeds */
	assert_int_equal(cn_client_store(c, &keys[N_PIN + 1], buf, MiB), 0);

	close(slow);
	close(slow2);
	cn_client_close(&c);
	free(buf);
}

static void unknown_paths_and_methods(void **state)
{
	char *body;

	assert_int_equal(http_req(http_addr, "GET", "/nope", &body), 404);
	free(body);
	assert_int_equal(http_req(http_addr, "GET", "/api", &body), 404);
	free(body);
	assert_int_equal(http_req(http_addr, "POST", "/metrics", &body), 405);
	free(body);
	assert_int_equal(http_req(http_addr, "GET", "/api/status?compact", &body), 200);
	assert_ptr_equal(strchr(body, '\n'), body + strlen(body) - 1); /* one line */
	free(body);
	assert_int_equal(http_req(http_addr, "GET", "/metrics?x=1", &body), 200);
	free(body);
}

static void status_tool_usage_and_unreachable(void **state)
{
	char cmd[512], out[1024];
	const char *bin = getenv("CACHENODE_STATUS");

	snprintf(cmd, sizeof(cmd), "%s --bogus 2>&1", bin);
	assert_int_equal(cn_run(cmd, out, sizeof(out)), 2);
	snprintf(cmd, sizeof(cmd), "%s --url http://127.0.0.1:%u/api/status 2>&1", bin,
		 cn_free_port());
	assert_int_equal(cn_run(cmd, out, sizeof(out)), 3);
	assert_non_null(strstr(out, "cannot connect"));
	/* a page that is not the status tree */
	snprintf(cmd, sizeof(cmd), "%s --url http://%s/metrics 2>&1", bin, http_addr);
	assert_int_equal(cn_run(cmd, out, sizeof(out)), 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(metrics_count_the_workload),
		cmocka_unit_test(every_family_is_documented),
		cmocka_unit_test(prometheus_scrapes_the_node),
		cmocka_unit_test(status_tree_is_healthy),
		cmocka_unit_test(verbs_counters_are_zero_under_tcp),
		cmocka_unit_test(pinned_pool_is_unhealthy),
		cmocka_unit_test(unknown_paths_and_methods),
		cmocka_unit_test(status_tool_usage_and_unreachable),
	};

	if (getenv("CACHENODE_STATUS") == NULL) {
		fprintf(stderr, "CACHENODE_STATUS is not set\n");
		return 1;
	}
	if (!have("promtool")) {
		printf("skipped: promtool is not installed (Debian package prometheus)\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("http", tests, node_up, node_down);
}
