/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode-tel-microbench: cost of cn_tel_emit() and cn_tel_trace() on the
 * data path.
 *
 * One core, a 65536-event ring, no drain thread. The timed loops only emit
 * (START/END pairs of fresh sessions); whenever the ring is more than half
 * full the loop stops the clock and empties it with cn_tel_drain_once(), so
 * the figure is the producer's cost alone and no event is dropped. Then the
 * same loop runs against a context with telemetry disabled.
 *
 * The same for --trace-output records: a retrieve (one key) and a lookup of
 * 32 keys into a 65536-slot trace ring (drained to /dev/null with the clock
 * stopped), and the call without trace rings (the one branch).
 *
 *   cachenode-tel-microbench [--count N] [--json]
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>

#include "cn_tel.h"

#define MB_RING 65536u
#define MB_CHUNK (MB_RING / 2)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Emits @count events into @t (core 0) and returns the ns spent emitting.
 * The empty asm keeps the compiler from hoisting t->enabled out of the loop
 * (which would time an empty loop for the disabled case, not the branch).
 */
static uint64_t run(struct cn_tel *t, uint64_t count, uint64_t *drops)
{
	uint64_t spent = 0, done = 0, session = 0;

	while (done < count) {
		uint64_t n = count - done < MB_CHUNK ? count - done : MB_CHUNK;
		uint64_t t0 = now_ns();

		for (uint64_t i = 0; i < n; i++) {
			enum cn_tel_type type = ((done + i) & 1) ? CN_TEL_END : CN_TEL_START;

			if (type == CN_TEL_START)
				session = cn_tel_session(t, 0);
			cn_tel_emit(t, 0, type, CN_TEL_OP_retrieve, session, 1, 4096, 1, 0);
			__asm__ volatile("" ::: "memory");
		}
		spent += now_ns() - t0;
		done += n;
		while (cn_tel_ring_depth(t, 0) != 0)
			cn_tel_drain_once(t);
	}
	*drops = CN_STAT_GET(&t->core[0].st, drops);
	return spent;
}

static int bench(const char *name, bool enabled, uint64_t count, double *ns_per_event)
{
	struct cn_tel_cfg cfg = {
		.ncores = 1, .ring_size = MB_RING, .enabled = enabled, .name = name,
	};
	struct cn_tel *t;
	uint64_t drops, spent;
	int ret;

	ret = cn_tel_create(&cfg, &t);
	if (ret < 0) {
		fprintf(stderr, "cn_tel_create: %s\n", strerror(-ret));
		return ret;
	}
	run(t, count < 1000000 ? count : 1000000, &drops); /* warm up: fault the ring in */
	spent = run(t, count, &drops);
	if (drops != 0)
		fprintf(stderr, "warning: %llu events dropped\n", (unsigned long long)drops);
	*ns_per_event = (double)spent / (double)count;
	cn_tel_destroy(&t);
	return 0;
}

#define MB_TRACE_RING 65536u

/* Records of @nkeys keys into a trace ring (or none: @on false); ns per record into *ns. */
static int bench_trace(const char *name, bool on, uint32_t nkeys, uint64_t count, double *ns)
{
	struct cn_tel_cfg cfg = {
		.ncores = 1, .enabled = false, .trace_ring_size = on ? MB_TRACE_RING : 0,
		.name = name,
	};
	static const struct cn_trace_meta meta = {.node_id = "microbench", .eviction = "lru"};
	struct cn_trace_writer_cfg wcfg = {.path = "/dev/null", .meta = &meta};
	struct cn_key keys[32];
	struct cn_trace_writer *w;
	struct cn_tel *t;
	uint64_t spent = 0, done = 0;
	int ret;

	for (unsigned i = 0; i < 32; i++)
		memset(&keys[i], (int)i + 1, sizeof(keys[i]));
	ret = cn_tel_create(&cfg, &t);
	if (ret == 0 && on) {
		ret = cn_trace_writer_open(&wcfg, &w);
		if (ret == 0 && (ret = cn_tel_trace_attach(t, w)) < 0)
			cn_trace_writer_close(&w, NULL);
	}
	if (ret < 0) {
		fprintf(stderr, "trace setup: %s\n", strerror(-ret));
		return ret;
	}
	while (done < count) {
		uint64_t chunk = MB_TRACE_RING / 2 / (nkeys + 2); /* never more than half the ring */
		uint64_t n = count - done < chunk ? count - done : chunk;
		uint64_t t0 = now_ns();

		for (uint64_t i = 0; i < n; i++) {
			cn_tel_trace(t, 0, nkeys == 1 ? CN_TRACE_retrieve : CN_TRACE_lookup, done + i,
				     keys, nkeys, 4096, 0, 0);
			__asm__ volatile("" ::: "memory");
		}
		spent += now_ns() - t0;
		done += n;
		while (cn_tel_trace_depth(t, 0) > MB_TRACE_RING / 2)
			cn_tel_drain_once(t);
	}
	if (CN_STAT_GET(&t->core[0].st, trace_drops) != 0)
		fprintf(stderr, "warning: %llu trace records dropped\n",
			(unsigned long long)CN_STAT_GET(&t->core[0].st, trace_drops));
	*ns = (double)spent / (double)count;
	cn_tel_destroy(&t);
	return 0;
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [--count N] [--json]\n", argv0);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"count", required_argument, NULL, 'c'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t count = 10000000;
	bool json = false;
	double on, off, tr1, tr32, troff;
	char prefix[64], rundir[PATH_MAX];
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "c:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			errno = 0;
			count = strtoull(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || count == 0) {
				usage(argv[0]);
				return 2;
			}
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			usage(argv[0]);
			return 0;
		default:
			usage(argv[0]);
			return 2;
		}
	}

	snprintf(prefix, sizeof(prefix), "--file-prefix=cn_telmb_%d", (int)getpid());
	char *eal_argv[] = {
		argv[0], "--no-huge", "--no-pci", "--no-shconf", "--no-telemetry",
		"-m", "64", "--log-level=lib.eal:error", prefix, NULL,
	};
	if (rte_eal_init((int)(sizeof(eal_argv) / sizeof(eal_argv[0])) - 1, eal_argv) < 0) {
		fprintf(stderr, "rte_eal_init: %s\n", rte_strerror(rte_errno));
		return 1;
	}
	/* --no-shconf still leaves an empty runtime directory: remove it at exit */
	snprintf(rundir, sizeof(rundir), "%s", rte_eal_get_runtime_dir());
	if (bench("telmb_on", true, count, &on) < 0 || bench("telmb_off", false, count, &off) < 0 ||
	    bench_trace("trcmb_1", true, 1, count / 4, &tr1) < 0 ||
	    bench_trace("trcmb_32", true, 32, count / 16, &tr32) < 0 ||
	    bench_trace("trcmb_off", false, 1, count, &troff) < 0) {
		rte_eal_cleanup();
		rmdir(rundir);
		return 1;
	}
	printf("emit: %.2f ns/event (enabled), %.2f ns/event (disabled)\n", on, off);
	printf("trace: %.2f ns/record (1 key), %.2f ns/record (32 keys), %.2f ns (no trace)\n", tr1,
	       tr32, troff);
	if (json)
		printf("{\"ns_per_event\":%.3f,\"ns_per_event_disabled\":%.3f,\"count\":%llu,"
		       "\"trace_ns_1key\":%.3f,\"trace_ns_32keys\":%.3f,\"trace_ns_disabled\":%.3f}\n",
		       on, off, (unsigned long long)count, tr1, tr32, troff);
	rte_eal_cleanup();
	rmdir(rundir);
	return 0;
}
