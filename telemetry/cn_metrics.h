/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metric tables: every module declares its per-core counters once, as an
 * X-macro table of rows X(name, TYPE, "help"), and generates from it the
 * per-core struct, the names, the types and the help text, so that every
 * exporter (STATUS reply, DPDK telemetry, Prometheus, docs) reads the same
 * rows:
 *
 *   #define CN_FOO_METRICS(X) \
 *           X(hits, COUNTER, "lookups that found the key") \
 *           X(used_bytes, GAUGE, "bytes in use")
 *   struct cn_foo_stats { CN_FOO_METRICS(CN_METRIC_FIELD) } CN_CACHE_ALIGNED;
 *   static const struct cn_metric_desc foo_desc[] = { CN_FOO_METRICS(CN_METRIC_DESC) };
 *
 * Each core owns one struct and is its only writer; it updates fields with
 * CN_STAT_ADD (a relaxed store, no locked instruction). Readers on other
 * threads load fields with CN_STAT_GET and sum the cores. This module depends
 * on nothing else of the project.
 */
#ifndef CN_METRICS_H
#define CN_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define CN_CACHE_LINE	 64
#define CN_CACHE_ALIGNED __attribute__((aligned(CN_CACHE_LINE)))

/* Upper bound on cores that own per-core state (workers + control plane). */
#define CN_MAX_CORES 64

enum cn_metric_type {
	CN_METRIC_COUNTER, /* monotonic; summed over cores */
	CN_METRIC_GAUGE,   /* a level; summed over cores where per-core */
};

struct cn_metric_desc {
	const char *name;
	enum cn_metric_type type;
	const char *help;
};

#define CN_METRIC_FIELD(n, t, h) uint64_t n;
#define CN_METRIC_DESC(n, t, h)	 {#n, CN_METRIC_##t, h},
#define CN_METRIC_COUNT(n, t, h) +1

/* Single-writer updates: the owning core only. */
#define CN_STAT_ADD(s, f, v)                                                                       \
	__atomic_store_n(&(s)->f, __atomic_load_n(&(s)->f, __ATOMIC_RELAXED) + (uint64_t)(v),    \
			 __ATOMIC_RELAXED)
#define CN_STAT_INC(s, f) CN_STAT_ADD(s, f, 1)
#define CN_STAT_SET(s, f, v) __atomic_store_n(&(s)->f, (uint64_t)(v), __ATOMIC_RELAXED)
#define CN_STAT_GET(s, f)    __atomic_load_n(&(s)->f, __ATOMIC_RELAXED)

/**
 * cn_metrics_sum - add up per-core structs made only of uint64_t fields.
 * @percore: the first core's struct; @stride: bytes between cores' structs;
 * @ncores: how many; @nfields: uint64_t fields per struct; @out: nfields
 * values, overwritten. Loads are relaxed atomics, safe against the writers.
 */
static inline void cn_metrics_sum(const void *percore, size_t stride, unsigned ncores,
				  size_t nfields, uint64_t *out)
{
	for (size_t f = 0; f < nfields; f++)
		out[f] = 0;
	for (unsigned c = 0; c < ncores; c++) {
		const uint64_t *v = (const uint64_t *)((const char *)percore + (size_t)c * stride);
		for (size_t f = 0; f < nfields; f++)
			out[f] += __atomic_load_n(&v[f], __ATOMIC_RELAXED);
	}
}

#endif /* CN_METRICS_H */
