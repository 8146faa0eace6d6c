/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode-rdma-bench: the RDMA verbs primitives (transport/cn_verbs.h)
 * measured alone, printed with perftest's columns so the two can be read
 * side by side. The same code runs as `cachenode-bench --raw ...`
 * (cn_rdma_bench_main(), rdma_bench.h); `--raw server` is --server there.
 *
 *   server: cachenode-rdma-bench --server [-d DEV] [--port P] [--region BYTES] [--clients N]
 *   client: cachenode-rdma-bench --raw write|read [--lat] [--size S] [--iters N] [-d DEV]
 *                                [--port P] [--json] ADDR | --node HOST[:PORT]
 *           cachenode-rdma-bench --verify [--size S] ADDR
 *           cachenode-rdma-bench --bad-rkey ADDR
 *           cachenode-rdma-bench --probe [-d DEV]
 *
 * The server registers one region once (REMOTE_READ | REMOTE_WRITE) and
 * serves clients one after another. Per client, over SEND/RECV control
 * messages: HELLO (mode, size, seed) -> INFO (addr, rkey, len), the client's
 * one-sided work, then DONE -> RESULT (the server's check of what was
 * written, for --verify). Messages are in native byte order: both ends are
 * this binary on one architecture.
 *
 * Bandwidth (like ib_write_bw / ib_read_bw): keep up to --tx-depth WRs
 * outstanding, every --cq-mod-th signaled, all to the same remote and local
 * buffer. BW average = bytes / (last completion - first post); BW peak = the
 * best rate over any stretch of at least 1/8 of the iterations between two
 * signaled completions. MB = 2^20 bytes, as perftest.
 * Latency (like ib_read_lat): one signaled WR at a time, timed from post to
 * its completion (the full round trip, which is what ib_read_lat reports;
 * ib_write_lat reports half of a ping-pong, so compare reads).
 * Completions are busy-polled unless --event (then the poll sleeps on the
 * completion channel after a short spin).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cn_verbs.h"
#include "rdma_bench.h"

/* The program the messages name: cachenode-bench defines RB_NAME when it builds this in. */
#ifndef RB_NAME
#define RB_NAME "cachenode-rdma-bench"
#endif
#define RB_MAGIC	0x42524e43u /* "CNRB" */
#define RB_PORT		7701
#define RB_REGION	(16u << 20)
#define RB_VERIFY_CHUNK (64u << 10)
#define RB_MSG_TIMEOUT	30000
#define RB_EXIT_SKIP	77

enum rb_mode { RB_WRITE_BW, RB_READ_BW, RB_WRITE_LAT, RB_READ_LAT, RB_VERIFY, RB_BAD_RKEY };
static const char *const rb_mode_names[] = {"write_bw", "read_bw", "write_lat", "read_lat",
					    "verify", "bad_rkey"};

enum rb_msg_type { RB_HELLO = 1, RB_INFO, RB_DONE, RB_RESULT };

struct rb_msg {
	uint32_t magic;
	uint32_t type;
	uint32_t mode;
	uint32_t seed;
	uint64_t size;
	uint64_t addr;
	uint64_t len;
	uint32_t rkey;
	int32_t result;
	uint64_t mismatches;
};

struct rb_cfg {
	bool server, lat, json, event, probe;
	int mode; /* -1 until chosen */
	const char *addr;
	const char *dev;
	unsigned port;
	uint64_t size;
	uint64_t iters;
	uint64_t region;
	unsigned tx_depth;
	unsigned cq_mod;
	unsigned clients; /* server: exit after this many; 0 = forever */
	unsigned hold_ms; /* client: idle this long after the handshake (tests) */
	int timeout_ms;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Per-operation timestamps. On x86 the TSC (what perftest uses): a vDSO
 * clock_gettime() is as cheap on hardware, but where the clock source is not
 * the TSC (the soft-RoCE VM runs on HPET) each call is a system call that
 * adds tens of microseconds to every sample under emulation. Ticks are turned
 * into time by calibrating against CLOCK_MONOTONIC over the same run.
 */
static uint64_t ticks(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return __builtin_ia32_rdtsc();
#else
	return now_ns();
#endif
}

struct rb_clock {
	uint64_t ns0, tk0;
	double ns_per_tick;
};

static void clock_start(struct rb_clock *k)
{
	k->ns0 = now_ns();
	k->tk0 = ticks();
	k->ns_per_tick = 1.0;
}

static void clock_stop(struct rb_clock *k)
{
	uint64_t ns = now_ns() - k->ns0, tk = ticks() - k->tk0;

	k->ns_per_tick = tk > 0 ? (double)ns / (double)tk : 1.0;
}

static double tk_us(const struct rb_clock *k, uint64_t dt)
{
	return (double)dt * k->ns_per_tick / 1e3;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " RB_NAME " --raw server [-d DEV] [--port P] [--region BYTES]\n"
		"                   [--clients N]\n"
		"       " RB_NAME " --raw write|read [--lat] [--size S] [--iters N] [-d DEV]\n"
		"                   [--port P] [--tx-depth D] [--cq-mod M] [--event] [--json]\n"
		"                   ADDR | --node HOST[:PORT]\n"
		"       " RB_NAME " --verify [--size S] ADDR | --bad-rkey ADDR | --probe [-d DEV]\n"
		"\n"
		"The RDMA primitives alone (no node, no protocol): run the server side on one\n"
		"host and the client side on another; the client prints perftest's columns.\n"
		"\n"
		"  --raw server       serve raw clients (also --server)\n"
		"  --raw write|read   one-sided RDMA WRITE or READ, bandwidth (default) or --lat\n"
		"  --lat              latency: one WR at a time (like ib_read_lat)\n"
		"  --verify           data integrity: READ the server's pattern, WRITE one back,\n"
		"                     the server checks it after a final SEND; exit 1 on mismatch\n"
		"  --bad-rkey         READ with a wrong rkey: exit 0 only if it fails with a\n"
		"                     remote access error (-EACCES)\n"
		"  --probe            exit 0 if an RDMA device is usable, else 77 with the reason\n"
		"  -s, --size S       bytes per operation (K/M/G suffixes); default 65536, lat 2\n"
		"  -n, --iters N      operations; default 5000, lat 1000\n"
		"  -d, --dev DEV      RDMA device (e.g. rxe0); also --rdma-dev\n"
		"  -p, --port P       RDMA CM port (default %d)\n"
		"  --node HOST[:PORT] the server (instead of ADDR; PORT instead of --port)\n"
		"  -t, --tx-depth D   bandwidth: WRs outstanding at most (default 128)\n"
		"  -Q, --cq-mod M     bandwidth: signal every M-th WR (default 16)\n"
		"  -e, --event        sleep on the completion channel instead of busy polling\n"
		"  -j, --json         also print one JSON object as the last line\n"
		"  --region BYTES     server: registered region size (default 16M)\n"
		"  --clients N        server: exit 0 after serving N clients (default: run forever)\n"
		"  --hold MS          client: stay connected and idle MS ms before the run (tests)\n"
		"\n"
		"Exit status: 0 ok, 1 failure, 2 usage, 77 no usable RDMA device.\n",
		RB_PORT);
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

/* Pattern word i of stream @seed (splitmix64). */
static uint64_t pat_word(uint64_t seed, uint64_t i)
{
	uint64_t z = seed * 0x9e3779b97f4a7c15ull + (i + 1) * 0xbf58476d1ce4e5b9ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void pat_fill(uint8_t *p, uint64_t len, uint64_t seed)
{
	uint64_t i;

	for (i = 0; i < len; i += 8) {
		uint64_t w = pat_word(seed, i / 8);
		memcpy(p + i, &w, len - i < 8 ? len - i : 8);
	}
}

/* Bytes of @p that differ from the pattern. */
static uint64_t pat_check(const uint8_t *p, uint64_t len, uint64_t seed)
{
	uint64_t i, bad = 0;

	for (i = 0; i < len; i += 8) {
		uint64_t w = pat_word(seed, i / 8), n = len - i < 8 ? len - i : 8, k;
		const uint8_t *e = (const uint8_t *)&w;

		for (k = 0; k < n; k++)
			bad += p[i + k] != e[k];
	}
	return bad;
}

static int send_msg(struct cn_verbs_conn *c, struct rb_msg *m)
{
	int rc;

	m->magic = RB_MAGIC;
	while ((rc = cn_verbs_post_send(c, m, sizeof(*m))) == -EAGAIN) {
		struct cn_verbs_wc wc[4];
		int n = cn_verbs_poll(c, wc, 4, 0);

		if (n < 0)
			return n;
		if (n > 0)
			return -EPROTO; /* nothing else is outstanding in this protocol */
	}
	return rc;
}

/* Wait for the next control message; the strict request/reply protocol keeps one in flight. */
static int recv_msg(struct cn_verbs_conn *c, struct rb_msg *m, int timeout_ms)
{
	for (;;) {
		struct cn_verbs_wc wc[4];
		int n = cn_verbs_poll(c, wc, 4, timeout_ms), i, rc = -EAGAIN;

		if (n < 0)
			return n;
		for (i = 0; i < n; i++) {
			if (wc[i].status != 0) {
				rc = wc[i].status;
				continue;
			}
			if (wc[i].op != CN_VERBS_WC_RECV)
				continue;
			if (rc == -EAGAIN) {
				if (wc[i].byte_len == sizeof(*m)) {
					memcpy(m, wc[i].data, sizeof(*m));
					rc = m->magic == RB_MAGIC ? 0 : -EPROTO;
				} else {
					rc = -EPROTO;
				}
			}
			cn_verbs_recv_release(c, wc[i].wr_id);
		}
		if (rc != -EAGAIN)
			return rc;
	}
}

/* ---- server ---- */

static void serve_one(const struct rb_cfg *cfg, struct cn_verbs_conn *c, struct cn_verbs_mr *mr)
{
	struct rb_msg m, r;
	uint32_t mode = 0, seed = 0;
	uint64_t size = 0;
	int rc;

	printf("client %s connected\n", cn_verbs_conn_peer(c));
	for (;;) {
		rc = recv_msg(c, &m, -1);
		if (rc != 0)
			break;
		memset(&r, 0, sizeof(r));
		if (m.type == RB_HELLO) {
			mode = m.mode;
			seed = m.seed;
			size = m.size < mr->len ? m.size : mr->len;
			if (mode == RB_VERIFY)
				pat_fill(mr->addr, size, seed);
			r.type = RB_INFO;
			r.addr = (uintptr_t)mr->addr;
			r.len = mr->len;
			r.rkey = mr->rkey;
		} else if (m.type == RB_DONE) {
			r.type = RB_RESULT;
			if (mode == RB_VERIFY) {
				r.mismatches = pat_check(mr->addr, size, seed + 1);
				printf("client %s: verify: %" PRIu64 " of %" PRIu64
				       " bytes written differ\n",
				       cn_verbs_conn_peer(c), r.mismatches, size);
			}
		} else {
			rc = -EPROTO;
			break;
		}
		rc = send_msg(c, &r);
		if (rc != 0)
			break;
	}
	/* a client that is done disconnects: that is the orderly end */
	if (rc == -ECONNRESET)
		printf("client %s disconnected\n", cn_verbs_conn_peer(c));
	else
		printf("client %s: connection ended: %s\n", cn_verbs_conn_peer(c), strerror(-rc));
	fflush(stdout);
}

static int run_server(const struct rb_cfg *cfg)
{
	struct cn_verbs_cfg vc = {.dev = cfg->dev};
	struct cn_verbs_listener *l = NULL;
	struct cn_verbs_mr *mr = NULL;
	char addr[32];
	void *region;
	unsigned served = 0;
	int rc;

	snprintf(addr, sizeof(addr), "0.0.0.0:%u", cfg->port);
	rc = cn_verbs_listen(addr, &vc, &l);
	if (rc != 0) {
		fprintf(stderr, RB_NAME ": listen %s: %s\n", addr, strerror(-rc));
		return 1;
	}
	region = aligned_alloc(4096, (cfg->region + 4095) & ~(uint64_t)4095);
	if (region == NULL) {
		fprintf(stderr, RB_NAME ": out of memory\n");
		cn_verbs_listener_destroy(&l);
		return 1;
	}
	memset(region, 0, cfg->region);
	rc = cn_verbs_reg(cn_verbs_listener_pd(l), region, cfg->region,
			  CN_VERBS_ACCESS_LOCAL_WRITE | CN_VERBS_ACCESS_REMOTE_READ |
				  CN_VERBS_ACCESS_REMOTE_WRITE,
			  &mr);
	if (rc != 0) {
		fprintf(stderr, RB_NAME ": register %" PRIu64 " bytes: %s\n", cfg->region,
			strerror(-rc));
		free(region);
		cn_verbs_listener_destroy(&l);
		return 1;
	}
	printf("listening on port %u, region %" PRIu64 " bytes\n", cn_verbs_listener_port(l),
	       cfg->region);
	fflush(stdout);
	while (cfg->clients == 0 || served < cfg->clients) {
		struct cn_verbs_conn *c = NULL;

		rc = cn_verbs_accept(l, -1, &c);
		if (rc != 0) {
			fprintf(stderr, RB_NAME ": accept: %s\n", strerror(-rc));
			if (rc == -ENODEV)
				break;
			continue;
		}
		serve_one(cfg, c, mr);
		cn_verbs_conn_destroy(&c);
		served++;
	}
	cn_verbs_dereg(&mr);
	free(region);
	cn_verbs_listener_destroy(&l);
	return rc == -ENODEV ? 1 : 0;
}

/* ---- client ---- */

struct rb_client {
	const struct rb_cfg *cfg;
	struct cn_verbs_conn *c;
	struct cn_verbs_mr *mr; /* local buffer */
	uint8_t *buf;
	struct rb_msg info;
	struct cn_verbs_caps caps;
};

static int poll_some(struct rb_client *cl, struct cn_verbs_wc *wc, int max)
{
	return cn_verbs_poll(cl->c, wc, max, cl->cfg->event ? cl->cfg->timeout_ms : 0);
}

static void print_rule(void)
{
	printf("-----------------------------------------------------------------------------"
	       "----------\n");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int run_bw(struct rb_client *cl)
{
	const struct rb_cfg *cfg = cl->cfg;
	bool rd = cfg->mode == RB_READ_BW;
	unsigned window = cfg->tx_depth < cl->caps.sq_depth ? cfg->tx_depth : cl->caps.sq_depth;
	unsigned cq_mod = cfg->cq_mod < window ? cfg->cq_mod : window;
	uint64_t posted = 0, completed = 0, t_start, t_end, npts = 0, i, j, span;
	uint64_t *pt_n, *pt_t;
	struct cn_verbs_rdma ops[32];
	struct rb_clock clk;
	double secs, avg, peak = 0;
	int rc;

	pt_n = calloc(cfg->iters + 1, sizeof(*pt_n));
	pt_t = calloc(cfg->iters + 1, sizeof(*pt_t));
	if (pt_n == NULL || pt_t == NULL) {
		free(pt_n);
		free(pt_t);
		return -ENOMEM;
	}
	clock_start(&clk);
	t_start = ticks();
	pt_n[npts] = 0;
	pt_t[npts++] = t_start;
	while (completed < cfg->iters) {
		struct cn_verbs_wc wc[16];
		uint64_t room = window - (posted - completed), nb = cfg->iters - posted;
		int n, k;

		if (nb > room)
			nb = room;
		if (nb > 32)
			nb = 32;
		for (i = 0; i < nb; i++) {
			uint64_t id = posted + i;

			ops[i] = (struct cn_verbs_rdma){
				.read = rd,
				.signaled = (id + 1) % cq_mod == 0 || id + 1 == cfg->iters,
				.local = cl->buf,
				.lkey = cl->mr->lkey,
				.len = (uint32_t)cfg->size,
				.remote_addr = cl->info.addr,
				.rkey = cl->info.rkey,
				.wr_id = id,
			};
		}
		if (nb > 0) {
			rc = cn_verbs_post_rdma(cl->c, ops, (unsigned)nb);
			if (rc == 0)
				posted += nb;
			else if (rc != -EAGAIN)
				goto fail;
		}
		n = poll_some(cl, wc, 16);
		if (n < 0) {
			rc = n;
			goto fail;
		}
		for (k = 0; k < n; k++) {
			if (wc[k].status != 0) {
				rc = wc[k].status;
				goto fail;
			}
			completed = wc[k].wr_id + 1;
			pt_n[npts] = completed;
			pt_t[npts++] = ticks();
		}
	}
	clock_stop(&clk);
	t_end = pt_t[npts - 1];
	secs = tk_us(&clk, t_end - t_start) / 1e6;
	avg = (double)cfg->size * (double)cfg->iters / secs / 1048576.0;
	span = cfg->iters / 8 ? cfg->iters / 8 : 1;
	for (i = 0; i < npts; i++)
		for (j = i + 1; j < npts; j++)
			if (pt_n[j] - pt_n[i] >= span && pt_t[j] > pt_t[i]) {
				double bw = (double)cfg->size * (double)(pt_n[j] - pt_n[i]) /
					    (tk_us(&clk, pt_t[j] - pt_t[i]) / 1e6) / 1048576.0;
				if (bw > peak)
					peak = bw;
			}
	if (peak < avg)
		peak = avg;
	free(pt_n);
	free(pt_t);
	print_rule();
	printf(" #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]\n");
	printf(" %-7" PRIu64 "    %-7" PRIu64 "          %-7.2f            %-7.2f\t\t   %-7.6f\n",
	       cfg->size, cfg->iters, peak, avg, (double)cfg->iters / secs / 1e6);
	print_rule();
	if (cfg->json)
		printf("{\"test\": \"%s\", \"dev\": \"%s\", \"size\": %" PRIu64
		       ", \"iters\": %" PRIu64 ", \"tx_depth\": %u, \"cq_mod\": %u, "
		       "\"bw_peak_mbs\": %.2f, \"bw_avg_mbs\": %.2f, \"msg_rate_mpps\": %.6f}\n",
		       rb_mode_names[cfg->mode], cl->caps.dev, cfg->size, cfg->iters, window,
		       cq_mod, peak, avg, (double)cfg->iters / secs / 1e6);
	return 0;

fail:
	fprintf(stderr, RB_NAME ": %s: %s\n", rb_mode_names[cfg->mode], strerror(-rc));
	free(pt_n);
	free(pt_t);
	return rc;
}

/* Wait for the completion of the signaled WR just posted: its status (0 or -errno). */
static int wait_completion(struct rb_client *cl)
{
	struct cn_verbs_wc wc[4];
	int n;

	do {
		n = poll_some(cl, wc, 4);
	} while (n == 0);
	return n < 0 ? n : wc[0].status;
}

/* Post one signaled WR and wait for its completion. */
static int one_op(struct rb_client *cl, bool rd, void *local, uint64_t remote, uint32_t rkey,
		  uint32_t len)
{
	int rc = rd ? cn_verbs_post_read(cl->c, local, cl->mr->lkey, remote, rkey, len, true, 1)
		    : cn_verbs_post_write(cl->c, local, cl->mr->lkey, remote, rkey, len, true, 1);

	return rc != 0 ? rc : wait_completion(cl);
}

static int run_lat(struct rb_client *cl)
{
	const struct rb_cfg *cfg = cl->cfg;
	bool rd = cfg->mode == RB_READ_LAT;
	uint64_t i, warm = 16;
	double *lat, sum = 0, sq = 0, avg, sd;
	uint64_t *tk;
	struct rb_clock clk;
	size_t p99, p999;
	int rc;

	lat = calloc(cfg->iters, sizeof(*lat));
	tk = calloc(cfg->iters, sizeof(*tk));
	if (lat == NULL || tk == NULL) {
		free(lat);
		free(tk);
		return -ENOMEM;
	}
	clock_start(&clk);
	for (i = 0; i < warm + cfg->iters; i++) {
		uint64_t t0 = ticks();

		rc = one_op(cl, rd, cl->buf, cl->info.addr, cl->info.rkey, (uint32_t)cfg->size);
		if (rc != 0) {
			fprintf(stderr, RB_NAME ": %s: %s\n", rb_mode_names[cfg->mode],
				strerror(-rc));
			free(lat);
			free(tk);
			return rc;
		}
		if (i >= warm)
			tk[i - warm] = ticks() - t0;
	}
	clock_stop(&clk);
	for (i = 0; i < cfg->iters; i++)
		lat[i] = tk_us(&clk, tk[i]);
	free(tk);
	qsort(lat, cfg->iters, sizeof(*lat), cmp_double);
	for (i = 0; i < cfg->iters; i++)
		sum += lat[i];
	avg = sum / (double)cfg->iters;
	for (i = 0; i < cfg->iters; i++)
		sq += (lat[i] - avg) * (lat[i] - avg);
	sd = sqrt(sq / (double)cfg->iters);
	p99 = (size_t)ceil(0.99 * (double)cfg->iters) - 1;
	p999 = (size_t)ceil(0.999 * (double)cfg->iters) - 1;
	print_rule();
	printf(" #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]"
	       "    t_stdev[usec]   99%% percentile[usec]   99.9%% percentile[usec] \n");
	printf(" %-7" PRIu64 " %-7" PRIu64 "      %-7.2f        %-7.2f      %-7.2f  \t       "
	       "%-7.2f     \t%-7.2f\t\t%-7.2f   \t\t%-7.2f\n",
	       cfg->size, cfg->iters, lat[0], lat[cfg->iters - 1], lat[cfg->iters / 2], avg, sd,
	       lat[p99], lat[p999]);
	print_rule();
	if (cfg->json)
		printf("{\"test\": \"%s\", \"dev\": \"%s\", \"size\": %" PRIu64
		       ", \"iters\": %" PRIu64 ", \"t_min_us\": %.2f, \"t_max_us\": %.2f, "
		       "\"t_typical_us\": %.2f, \"t_avg_us\": %.2f, \"t_stdev_us\": %.2f, "
		       "\"p99_us\": %.2f, \"p999_us\": %.2f}\n",
		       rb_mode_names[cfg->mode], cl->caps.dev, cfg->size, cfg->iters, lat[0],
		       lat[cfg->iters - 1], lat[cfg->iters / 2], avg, sd, lat[p99], lat[p999]);
	free(lat);
	return 0;
}

/*
 * Move cfg->size bytes between the local buffer and the remote region in
 * RB_VERIFY_CHUNK pieces, each batch one chain with only its last WR signaled.
 */
static int move_all(struct rb_client *cl, bool rd)
{
	uint64_t size = cl->cfg->size, off = 0;
	unsigned max_batch = cl->caps.sq_depth < 32 ? cl->caps.sq_depth : 32;
	struct cn_verbs_rdma ops[32];

	while (off < size) {
		unsigned nb = 0;
		int rc;

		while (nb < max_batch && off < size) {
			uint32_t len = size - off < RB_VERIFY_CHUNK ? (uint32_t)(size - off)
								     : RB_VERIFY_CHUNK;

			ops[nb++] = (struct cn_verbs_rdma){
				.read = rd, .signaled = false, .local = cl->buf + off,
				.lkey = cl->mr->lkey, .len = len,
				.remote_addr = cl->info.addr + off, .rkey = cl->info.rkey,
				.wr_id = off,
			};
			off += len;
		}
		ops[nb - 1].signaled = true;
		rc = cn_verbs_post_rdma(cl->c, ops, nb);
		if (rc == 0)
			rc = wait_completion(cl);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int run_verify(struct rb_client *cl, uint32_t seed, struct rb_msg *res)
{
	const struct rb_cfg *cfg = cl->cfg;
	uint64_t bad_read;
	struct rb_msg m = {.type = RB_DONE};
	int rc;

	memset(cl->buf, 0, cfg->size);
	rc = move_all(cl, true);
	if (rc != 0)
		return rc;
	bad_read = pat_check(cl->buf, cfg->size, seed);
	printf("verify read:  %" PRIu64 " bytes, %" PRIu64 " differ\n", cfg->size, bad_read);
	pat_fill(cl->buf, cfg->size, seed + 1);
	rc = move_all(cl, false);
	if (rc != 0)
		return rc;
	rc = send_msg(cl->c, &m);
	if (rc == 0)
		rc = recv_msg(cl->c, res, cfg->timeout_ms);
	if (rc != 0)
		return rc;
	printf("verify write: %" PRIu64 " bytes, %" PRIu64 " differ (checked by the server)\n",
	       cfg->size, res->mismatches);
	if (cfg->json)
		printf("{\"test\": \"verify\", \"dev\": \"%s\", \"size\": %" PRIu64
		       ", \"read_mismatches\": %" PRIu64 ", \"write_mismatches\": %" PRIu64
		       ", \"ok\": %s}\n",
		       cl->caps.dev, cfg->size, bad_read, res->mismatches,
		       bad_read == 0 && res->mismatches == 0 ? "true" : "false");
	return bad_read == 0 && res->mismatches == 0 ? 0 : -EILSEQ;
}

static int run_bad_rkey(struct rb_client *cl)
{
	uint32_t bad = cl->info.rkey ^ 0x5au;
	uint32_t len = cl->cfg->size < 4096 ? (uint32_t)cl->cfg->size : 4096;
	int rc = one_op(cl, true, cl->buf, cl->info.addr, bad, len);

	if (rc == -EACCES) {
		printf("remote access error detected (READ with rkey 0x%x instead of 0x%x: %s)\n",
		       bad, cl->info.rkey, strerror(-rc));
		if (cl->cfg->json)
			printf("{\"test\": \"bad_rkey\", \"status\": %d, \"ok\": true}\n", rc);
		return 0;
	}
	fprintf(stderr, RB_NAME ": READ with a wrong rkey gave %d (%s), expected -EACCES\n", rc,
		rc ? strerror(-rc) : "success");
	return rc != 0 ? rc : -EPROTO;
}

static int run_client(const struct rb_cfg *cfg)
{
	struct cn_verbs_cfg vc = {.dev = cfg->dev, .sq_depth = cfg->tx_depth + 8,
				  .timeout_ms = cfg->timeout_ms};
	struct rb_client cl = {.cfg = cfg};
	struct rb_msg m = {.type = RB_HELLO};
	char addr[300];
	uint32_t seed = (uint32_t)now_ns() ^ (uint32_t)getpid();
	int rc;

	if (strchr(cfg->addr, ':') != NULL && cfg->addr[0] != '[')
		snprintf(addr, sizeof(addr), "[%s]:%u", cfg->addr, cfg->port);
	else
		snprintf(addr, sizeof(addr), "%s:%u", cfg->addr, cfg->port);
	rc = cn_verbs_connect(addr, &vc, &cl.c);
	if (rc != 0) {
		fprintf(stderr, RB_NAME ": connect %s: %s\n", addr, strerror(-rc));
		return 1;
	}
	cn_verbs_conn_caps(cl.c, &cl.caps);
	cl.buf = aligned_alloc(4096, (cfg->size + 4095) & ~(uint64_t)4095);
	if (cl.buf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	memset(cl.buf, 0x5a, cfg->size);
	rc = cn_verbs_reg(cn_verbs_conn_pd(cl.c), cl.buf, cfg->size, CN_VERBS_ACCESS_LOCAL_WRITE,
			  &cl.mr);
	if (rc != 0)
		goto out;
	m.mode = (uint32_t)cfg->mode;
	m.size = cfg->size;
	m.seed = seed;
	rc = send_msg(cl.c, &m);
	if (rc == 0)
		rc = recv_msg(cl.c, &cl.info, cfg->timeout_ms);
	if (rc != 0)
		goto out;
	if (cl.info.type != RB_INFO || cl.info.len < cfg->size) {
		fprintf(stderr, RB_NAME ": the server's region (%" PRIu64 " bytes) is smaller "
			"than --size\n", cl.info.len);
		rc = -EMSGSIZE;
		goto out;
	}
	printf("connected to %s on %s: sq_depth %u, rd_atomic %u, region %" PRIu64 " bytes\n",
	       cn_verbs_conn_peer(cl.c), cl.caps.dev, cl.caps.sq_depth, cl.caps.rd_atomic,
	       cl.info.len);
	fflush(stdout);
	if (cfg->hold_ms > 0)
		usleep(cfg->hold_ms * 1000u);
	switch (cfg->mode) {
	case RB_WRITE_BW:
	case RB_READ_BW:
		rc = run_bw(&cl);
		break;
	case RB_WRITE_LAT:
	case RB_READ_LAT:
		rc = run_lat(&cl);
		break;
	case RB_VERIFY: {
		struct rb_msg res;

		rc = run_verify(&cl, seed, &res);
		goto out; /* the DONE / RESULT exchange is done */
	}
	case RB_BAD_RKEY:
		rc = run_bad_rkey(&cl);
		goto out; /* the connection is broken by design */
	}
	if (rc == 0) {
		struct rb_msg done = {.type = RB_DONE};

		rc = send_msg(cl.c, &done);
		if (rc == 0)
			rc = recv_msg(cl.c, &m, cfg->timeout_ms);
	}
out:
	if (rc != 0 && rc != -EILSEQ && cfg->mode != RB_BAD_RKEY)
		fprintf(stderr, RB_NAME ": %s\n", strerror(-rc));
	cn_verbs_dereg(&cl.mr);
	cn_verbs_conn_destroy(&cl.c);
	free(cl.buf);
	return rc == 0 ? 0 : 1;
}

/*
 * --node HOST[:PORT] / [V6]:PORT: the host into @host, the port (if given)
 * into *port. Returns 0 or -EINVAL.
 */
static int parse_node(const char *v, char *host, size_t hostlen, unsigned *port)
{
	const char *colon = strrchr(v, ':'), *h = v;
	size_t hl = strlen(v);
	uint64_t p;

	if (v[0] == '[') {
		const char *rb = strchr(v, ']');

		if (rb == NULL || (rb[1] != '\0' && rb[1] != ':'))
			return -EINVAL;
		h = v + 1;
		hl = (size_t)(rb - h);
		colon = rb[1] == ':' ? rb + 1 : NULL;
	} else if (colon != NULL && strchr(v, ':') != colon) {
		colon = NULL; /* a bare IPv6 address */
	} else if (colon != NULL) {
		hl = (size_t)(colon - v);
	}
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	if (colon != NULL) {
		if (parse_size(colon + 1, &p) != 0 || p == 0 || p > 65535)
			return -EINVAL;
		*port = (unsigned)p;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	return 0;
}

int cn_rdma_bench_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"server", no_argument, NULL, 'S'},
		{"raw", required_argument, NULL, 'r'},
		{"lat", no_argument, NULL, 'L'},
		{"verify", no_argument, NULL, 'V'},
		{"bad-rkey", no_argument, NULL, 'B'},
		{"probe", no_argument, NULL, 'P'},
		{"size", required_argument, NULL, 's'},
		{"iters", required_argument, NULL, 'n'},
		{"dev", required_argument, NULL, 'd'},
		{"rdma-dev", required_argument, NULL, 'd'},
		{"node", required_argument, NULL, 'N'},
		{"port", required_argument, NULL, 'p'},
		{"tx-depth", required_argument, NULL, 't'},
		{"cq-mod", required_argument, NULL, 'Q'},
		{"event", no_argument, NULL, 'e'},
		{"json", no_argument, NULL, 'j'},
		{"region", required_argument, NULL, 'R'},
		{"clients", required_argument, NULL, 'C'},
		{"hold", required_argument, NULL, 'H'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct rb_cfg cfg = {.mode = -1, .port = RB_PORT, .region = RB_REGION, .tx_depth = 128,
			     .cq_mod = 16, .timeout_ms = RB_MSG_TIMEOUT};
	bool rd = false, raw = false, port_set = false;
	char why[256], node[256] = "";
	unsigned node_port = 0;
	uint64_t v;
	int o;

	while ((o = getopt_long(argc, argv, "s:n:d:p:t:Q:ejh", opts, NULL)) != -1) {
		switch (o) {
		case 'S': cfg.server = true; break;
		case 'r':
			if (strcmp(optarg, "server") == 0) {
				cfg.server = true;
				break;
			}
			raw = true;
			if (strcmp(optarg, "read") == 0)
				rd = true;
			else if (strcmp(optarg, "write") != 0)
				goto bad;
			break;
		case 'N':
			if (parse_node(optarg, node, sizeof(node), &node_port) != 0)
				goto bad;
			break;
		case 'L': cfg.lat = true; break;
		case 'V': cfg.mode = RB_VERIFY; break;
		case 'B': cfg.mode = RB_BAD_RKEY; break;
		case 'P': cfg.probe = true; break;
		case 's':
			if (parse_size(optarg, &cfg.size) != 0 || cfg.size == 0 ||
			    cfg.size > (1ull << 30))
				goto bad;
			break;
		case 'n':
			if (parse_size(optarg, &cfg.iters) != 0 || cfg.iters == 0 ||
			    cfg.iters > 100000000)
				goto bad;
			break;
		case 'd': cfg.dev = optarg; break;
		case 'p':
			if (parse_size(optarg, &v) != 0 || v > 65535)
				goto bad;
			cfg.port = (unsigned)v;
			port_set = true;
			break;
		case 't':
			if (parse_size(optarg, &v) != 0 || v == 0 || v > 8192)
				goto bad;
			cfg.tx_depth = (unsigned)v;
			break;
		case 'Q':
			if (parse_size(optarg, &v) != 0 || v == 0 || v > 8192)
				goto bad;
			cfg.cq_mod = (unsigned)v;
			break;
		case 'e': cfg.event = true; break;
		case 'j': cfg.json = true; break;
		case 'R':
			if (parse_size(optarg, &cfg.region) != 0 || cfg.region == 0)
				goto bad;
			break;
		case 'C':
			if (parse_size(optarg, &v) != 0 || v > 1000000)
				goto bad;
			cfg.clients = (unsigned)v;
			break;
		case 'H':
			if (parse_size(optarg, &v) != 0 || v > 3600000)
				goto bad;
			cfg.hold_ms = (unsigned)v;
			break;
		case 'h': usage(stdout); return 0;
		default: goto bad;
		}
	}
	if (cfg.probe) {
		if (cn_verbs_available(cfg.dev, why, sizeof(why)) != 0) {
			printf("rdma: unavailable: %s\n", why);
			return RB_EXIT_SKIP;
		}
		printf("rdma: available\n");
		return 0;
	}
	if (raw) {
		if (cfg.mode != -1)
			goto bad;
		cfg.mode = rd ? (cfg.lat ? RB_READ_LAT : RB_READ_BW)
			      : (cfg.lat ? RB_WRITE_LAT : RB_WRITE_BW);
	}
	if (node[0] != '\0') {
		/* --node stands for ADDR (and for --port when it has one) */
		if (cfg.server || optind != argc || (node_port != 0 && port_set))
			goto bad;
		cfg.addr = node;
		if (node_port != 0)
			cfg.port = node_port;
	} else if (!cfg.server) {
		if (optind + 1 != argc)
			goto bad;
		cfg.addr = argv[optind];
	}
	if (cfg.server ? (optind != argc || cfg.mode != -1) : cfg.mode < 0)
		goto bad;
	if (cfg.size == 0)
		cfg.size = cfg.lat ? 2 : (cfg.mode == RB_VERIFY ? (1u << 20) : 65536);
	if (cfg.iters == 0)
		cfg.iters = cfg.lat ? 1000 : 5000;
	if (cn_verbs_available(cfg.dev, why, sizeof(why)) != 0) {
		fprintf(stderr, RB_NAME ": %s\n", why);
		return RB_EXIT_SKIP;
	}
	return cfg.server ? run_server(&cfg) : run_client(&cfg);
bad:
	usage(stderr);
	return 2;
}

#ifdef RB_STANDALONE
int main(int argc, char **argv)
{
	return cn_rdma_bench_main(argc, argv);
}
#endif
