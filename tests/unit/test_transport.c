/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP transport, driven by a small echo session defined here (u32 length +
 * bytes, echoed back): partial reads and writes, messages far larger than
 * the socket buffers, many connections on several workers, a stop that lets
 * an in-flight message finish, and an idle worker that uses no CPU.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cachenode/proto.h>
#include "cn_transport.h"

/* ---- the echo session ---- */

struct echo {
	uint8_t lenbuf[4];
	uint32_t got;  /* bytes of the current message received (incl. the 4 length bytes) */
	uint32_t len;
	uint8_t *msg;
	uint8_t *out; /* message being echoed: 4 + len bytes */
	size_t out_len, out_sent;
	atomic_int *open_count;
};

static void *echo_open(void *arg, unsigned worker, const char *peer, unsigned flags,
		       const struct cn_wake *wake)
{
	struct echo *e = calloc(1, sizeof(*e));
	(void)flags;
	e->open_count = arg;
	atomic_fetch_add(e->open_count, 1);
	return e;
}

static void echo_rx_buf(void *s, void **buf, size_t *len)
{
	struct echo *e = s;

	if (e->got < 4) {
		*buf = e->lenbuf + e->got;
		*len = 4 - e->got;
	} else {
		*buf = e->msg + (e->got - 4);
		*len = e->len - (e->got - 4);
	}
}

static int echo_rx_done(void *s, size_t n)
{
	struct echo *e = s;

	e->got += (uint32_t)n;
	if (e->got == 4) {
		e->len = cn_get_le32(e->lenbuf);
		if (e->len == 0 || e->len > (64u << 20))
			return -EPROTO;
		e->out = malloc(4 + e->len);
		memcpy(e->out, e->lenbuf, 4);
		e->msg = e->out + 4;
	}
	if (e->got > 4 && e->got == 4 + e->len) {
		e->out_len = 4 + e->len;
		e->out_sent = 0;
		e->got = 0;
	}
	return 0;
}

static bool echo_rx_paused(void *s)
{
	struct echo *e = s;
	return e->out_len != 0; /* one message at a time */
}

static int echo_tx_iov(void *s, struct iovec *iov, int max)
{
	struct echo *e = s;

	if (e->out_len == 0)
		return 0;
	iov[0].iov_base = e->out + e->out_sent;
	iov[0].iov_len = e->out_len - e->out_sent;
	return 1;
}

static int echo_tx_done(void *s, size_t n)
{
	struct echo *e = s;

	e->out_sent += n;
	if (e->out_sent == e->out_len) {
		free(e->out);
		e->out = e->msg = NULL;
		e->out_len = e->out_sent = 0;
	}
	return 0;
}

static void echo_close(void *s, int err)
{
	struct echo *e = s;
	atomic_fetch_sub(e->open_count, 1);
	free(e->out);
	free(e);
}

static bool echo_idle(void *s)
{
	struct echo *e = s;
	return e->got == 0 && e->out_len == 0;
}

static const struct cn_session_ops echo_ops = {
	.open = echo_open,
	.rx_buf = echo_rx_buf,
	.rx_done = echo_rx_done,
	.rx_paused = echo_rx_paused,
	.tx_iov = echo_tx_iov,
	.tx_done = echo_tx_done,
	.close = echo_close,
	.idle = echo_idle,
};

/* ---- fixture: a server with N workers on threads ---- */

#define NW 2

struct fix {
	struct cn_server *srv;
	struct cn_transport_stats stats[NW];
	pthread_t th[NW];
	int rc[NW];
	atomic_int open_count;
	const struct cn_transport_ops *ops;
};

struct run_arg {
	struct fix *f;
	unsigned id;
};
static struct run_arg run_args[NW];

static void *run_worker(void *p)
{
	struct run_arg *a = p;
	a->f->rc[a->id] = a->f->ops->server_run(a->f->srv, a->id);
	return NULL;
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	struct cn_server_cfg cfg = {
		.listen = "127.0.0.1:0",
		.nworkers = NW,
		.sess = &echo_ops,
		.sess_arg = &f->open_count,
		.stats = f->stats,
	};

	f->ops = cn_transport_find("tcp");
	assert_int_equal(f->ops->server_create(&cfg, &f->srv), 0);
	for (unsigned i = 0; i < NW; i++) {
		run_args[i] = (struct run_arg){f, i};
		pthread_create(&f->th[i], NULL, run_worker, &run_args[i]);
	}
	*state = f;
	return 0;
}

static void stop_and_join(struct fix *f, int grace_ms)
{
	f->ops->server_stop(f->srv, grace_ms);
	for (unsigned i = 0; i < NW; i++) {
		pthread_join(f->th[i], NULL);
		assert_int_equal(f->rc[i], 0);
	}
}

static int teardown(void **state)
{
	struct fix *f = *state;

	if (f->srv) {
		f->ops->server_stop(f->srv, 0);
		for (unsigned i = 0; i < NW; i++)
			pthread_join(f->th[i], NULL);
		f->ops->server_destroy(&f->srv);
	}
	free(f);
	return 0;
}

static struct cn_tconn *conn(struct fix *f)
{
	struct cn_connect_cfg cc = {.addr = f->ops->server_addr(f->srv), .timeout_ms = 10000};
	struct cn_tconn *c = NULL;

	assert_int_equal(f->ops->connect(&cc, &c), 0);
	return c;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 31 + seed);
}

static void echo_once(struct fix *f, struct cn_tconn *c, size_t n, unsigned seed)
{
	uint8_t len[4], rlen[4];
	uint8_t *msg = malloc(n), *back = malloc(n);
	struct iovec iov[2] = {{len, 4}, {msg, n}};

	cn_put_le32(len, (uint32_t)n);
	fill(msg, n, seed);
	assert_int_equal(f->ops->sendv(c, iov, 2, 0), 0);
	assert_int_equal(f->ops->recv(c, rlen, 4), 0);
	assert_int_equal(cn_get_le32(rlen), n);
	assert_int_equal(f->ops->recv(c, back, n), 0);
	assert_memory_equal(msg, back, n);
	free(msg);
	free(back);
}

/* ---- tests ---- */

static void small_and_large_messages(void **state)
{
	struct fix *f = *state;
	struct cn_tconn *c = conn(f);
	size_t sizes[] = {1, 7, 4096, 65537, 1u << 20, 24u << 20};

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		echo_once(f, c, sizes[i], (unsigned)i);
	f->ops->close(&c);
	assert_null(c);
}

static void byte_by_byte_partial_reads(void **state)
{
	struct fix *f = *state;
	struct cn_tconn *c = conn(f);
	uint8_t frame[4 + 100], back[4 + 100];

	cn_put_le32(frame, 100);
	fill(frame + 4, 100, 9);
	for (size_t i = 0; i < sizeof(frame); i++) {
		struct iovec iov = {frame + i, 1};
		assert_int_equal(f->ops->sendv(c, &iov, 1, 0), 0);
		usleep(200);
	}
	assert_int_equal(f->ops->recv(c, back, sizeof(back)), 0);
	assert_memory_equal(frame, back, sizeof(frame));
	f->ops->close(&c);
}

struct many_arg {
	struct fix *f;
	unsigned seed;
};

static void *many_client(void *p)
{
	struct many_arg *a = p;
	struct cn_tconn *c = conn(a->f);

	for (unsigned i = 0; i < 20; i++)
		echo_once(a->f, c, 1000 + (a->seed * 7919 + i * 104729) % 200000, a->seed + i);
	a->f->ops->close(&c);
	return NULL;
}

static void many_connections_on_all_workers(void **state)
{
	struct fix *f = *state;
	enum { N = 32 };
	pthread_t th[N];
	struct many_arg args[N];
	uint64_t accepted = 0, per_worker_nonzero = 0;

	for (unsigned i = 0; i < N; i++) {
		args[i] = (struct many_arg){f, i};
		pthread_create(&th[i], NULL, many_client, &args[i]);
	}
	for (unsigned i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	for (unsigned w = 0; w < NW; w++) {
		uint64_t a = CN_STAT_GET(&f->stats[w], conns_accepted);
		accepted += a;
		per_worker_nonzero += a > 0;
	}
	assert_int_equal(accepted, N);
	/* SO_REUSEPORT spreads 32 connections over both workers. */
	assert_int_equal(per_worker_nonzero, NW);
}

/* Sum over the workers of the counter at @off in struct cn_transport_stats. */
static uint64_t stat_sum(struct fix *f, size_t off)
{
	uint64_t sum = 0;

	for (unsigned w = 0; w < NW; w++)
		sum += __atomic_load_n((uint64_t *)((char *)&f->stats[w] + off), __ATOMIC_RELAXED);
	return sum;
}

/* Wait up to 5 s for that sum to be @want: workers count on their own time. */
static void wait_stat(struct fix *f, size_t off, const char *name, uint64_t want)
{
	for (int waited = 0; stat_sum(f, off) != want; waited += 5) {
		if (waited > 5000)
			fail_msg("%s is %llu after 5 s, want %llu", name,
				 (unsigned long long)stat_sum(f, off), (unsigned long long)want);
		usleep(5000);
	}
}

#define STAT_OFF(field) offsetof(struct cn_transport_stats, field)

/* Connections are spread evenly over the workers, not by a hash. */
static void connections_are_balanced(void **state)
{
	struct fix *f = *state;
	enum { N = 10 };
	struct cn_tconn *c[N];
	uint64_t open0, open1;

	for (unsigned i = 0; i < N; i++) {
		c[i] = conn(f);
		echo_once(f, c[i], 16, i); /* the connection is established on its worker */
	}
	open0 = CN_STAT_GET(&f->stats[0], conns_open);
	open1 = CN_STAT_GET(&f->stats[1], conns_open);
	assert_int_equal(open0 + open1, N);
	assert_int_equal(open0, N / NW);
	assert_int_equal(open1, N / NW);
	/* and every close is accounted for */
	for (unsigned i = 0; i < N; i++)
		f->ops->close(&c[i]);
	wait_stat(f, STAT_OFF(conns_open), "conns_open", 0);
}

static void protocol_error_closes_connection_only(void **state)
{
	struct fix *f = *state;
	struct cn_tconn *bad = conn(f), *good = conn(f);
	uint8_t zero[4] = {0}, b;
	struct iovec iov = {zero, 4};

	/* length 0 is a protocol error for the echo session: the server closes */
	assert_int_equal(f->ops->sendv(bad, &iov, 1, 0), 0);
	assert_int_equal(f->ops->recv(bad, &b, 1), -ECONNRESET);
	f->ops->close(&bad);
	echo_once(f, good, 5000, 3);
	f->ops->close(&good);
}

static void stop_finishes_in_flight_message(void **state)
{
	struct fix *f = *state;
	struct cn_tconn *c = conn(f);
	uint8_t frame[4 + 1000], back[4 + 1000];
	struct iovec first = {frame, 500}, rest = {frame + 500, sizeof(frame) - 500};

	uint64_t rx0;

	cn_put_le32(frame, 1000);
	fill(frame + 4, 1000, 5);
	echo_once(f, c, 16, 4); /* the connection is established on its worker */
	rx0 = stat_sum(f, STAT_OFF(bytes_rx));
	assert_int_equal(f->ops->sendv(c, &first, 1, 0), 0);
	wait_stat(f, STAT_OFF(bytes_rx), "bytes_rx", rx0 + 500); /* it holds half a message */
	f->ops->server_stop(f->srv, 5000);
	usleep(50 * 1000);
	/* The half-received message still completes and is answered... */
	assert_int_equal(f->ops->sendv(c, &rest, 1, 0), 0);
	assert_int_equal(f->ops->recv(c, back, sizeof(back)), 0);
	assert_memory_equal(frame, back, sizeof(frame));
	/* ...then the idle connection is closed and the workers return. */
	assert_int_equal(f->ops->recv(c, back, 1), -ECONNRESET);
	stop_and_join(f, 5000);
	assert_int_equal(atomic_load(&f->open_count), 0);
	f->ops->close(&c);
	f->ops->server_destroy(&f->srv);
}

static void stop_grace_expires(void **state)
{
	struct fix *f = *state;
	struct cn_tconn *c = conn(f);
	uint8_t frame[4 + 10];
	struct iovec half = {frame, 6};
	struct timespec t0, t1;

	cn_put_le32(frame, 10);
	assert_int_equal(f->ops->sendv(c, &half, 1, 0), 0);
	usleep(20 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	stop_and_join(f, 200); /* the client never finishes: cut after the grace period */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 3000);
	assert_int_equal(atomic_load(&f->open_count), 0);
	f->ops->close(&c);
	f->ops->server_destroy(&f->srv);
}

static void idle_workers_use_no_cpu(void **state)
{
	struct fix *f = *state;
	struct cn_tconn *c = conn(f);
	struct rusage r0, r1;
	double used;

	echo_once(f, c, 100, 1); /* a connection is open, and idle */
	getrusage(RUSAGE_SELF, &r0);
	usleep(500 * 1000);
	getrusage(RUSAGE_SELF, &r1);
	used = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec -
			r0.ru_stime.tv_sec) +
	       (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec -
			r0.ru_stime.tv_usec) / 1e6;
	/* two workers blocked in epoll: far below 5% of one core over 0.5 s */
	assert_true(used < 0.025);
	f->ops->close(&c);
}

/* CN_SEND_MORE: small frames queue up and leave, in order, once the client reads. */
static void send_more_batches_until_recv(void **state)
{
	struct fix *f = *state;
	struct cn_tconn *c = conn(f);
	enum { N = 200 };
	uint8_t frames[N][4 + 20], back[4 + 20];

	for (unsigned i = 0; i < N; i++) {
		struct iovec iov = {frames[i], sizeof(frames[i])};
		cn_put_le32(frames[i], 20);
		fill(frames[i] + 4, 20, i);
		assert_int_equal(f->ops->sendv(c, &iov, 1, CN_SEND_MORE), 0);
	}
	/* nothing has reached the server yet: it has accepted but received no byte */
	usleep(50 * 1000);
	assert_int_equal(CN_STAT_GET(&f->stats[0], bytes_rx) + CN_STAT_GET(&f->stats[1], bytes_rx),
			 0);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(f->ops->recv(c, back, sizeof(back)), 0);
		assert_memory_equal(back, frames[i], sizeof(back));
	}
	f->ops->close(&c);
}

static void connect_errors(void **state)
{
	const struct cn_transport_ops *ops = cn_transport_find("tcp");
	struct cn_connect_cfg cc = {.addr = "127.0.0.1:1", .timeout_ms = 1000};
	struct cn_tconn *c = NULL;

	assert_int_equal(ops->connect(&cc, &c), -ECONNREFUSED);
	cc.addr = "not an address";
	assert_int_equal(ops->connect(&cc, &c), -EINVAL);
	assert_null(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(small_and_large_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(byte_by_byte_partial_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(many_connections_on_all_workers, setup, teardown),
		cmocka_unit_test_setup_teardown(connections_are_balanced, setup, teardown),
		cmocka_unit_test_setup_teardown(protocol_error_closes_connection_only, setup,
						teardown),
		cmocka_unit_test_setup_teardown(stop_finishes_in_flight_message, setup, teardown),
		cmocka_unit_test_setup_teardown(stop_grace_expires, setup, teardown),
		cmocka_unit_test_setup_teardown(idle_workers_use_no_cpu, setup, teardown),
		cmocka_unit_test_setup_teardown(send_more_batches_until_recv, setup, teardown),
		cmocka_unit_test(connect_errors),
	};
	return cmocka_run_group_tests_name("transport", tests, NULL, NULL);
}
