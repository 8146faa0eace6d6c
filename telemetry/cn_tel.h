/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Telemetry core: events, per-core rings, the drain thread, spans, latency
 * histograms and subscribers.
 *
 * Data path: a worker emits fixed-size events (START/END/POINT) into its own
 * single-producer ring. Emission never blocks and never allocates: a full
 * ring drops the event and counts the drop on that core. With telemetry off
 * an emit costs one predictable branch.
 *
 * Control plane: one drain thread empties every ring in bursts, pairs START
 * and END of the same session into spans, fills one latency histogram per
 * op, and hands events and spans to subscribers (Chrome trace-event file,
 * rate-limited log, and whatever the node adds). When every ring is empty it
 * sleeps (CN_TEL_DRAIN_IDLE_US, doubling while it stays empty up to
 * CN_TEL_DRAIN_IDLE_MAX_US), so an idle node uses no CPU.
 *
 * Readers (HTTP, DPDK telemetry callbacks, STATUS) run on other threads:
 * per-core counters are read with relaxed loads; histograms through
 * cn_tel_hist_snapshot().
 *
 * Trace recording (--trace-output, cn_trace.h): with cfg.trace_ring_size set,
 * each core also has a trace ring of 32-byte slots, and the engine puts one
 * record per operation into it (cn_tel_trace: two header slots, then one
 * slot per key, enqueued all or nothing, zero-copy). The drain thread turns
 * them into trace-file records through the attached writer; a full ring
 * drops the record and counts it, and the file gets a LOST record saying how
 * many. With no trace rings cn_tel_trace() is one branch.
 *
 * This module depends on DPDK (rte_ring, rte_rdtsc) and, for the trace
 * format's key type and byte order, on the self-contained proto.h.
 */
#ifndef CN_TEL_H
#define CN_TEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rte_cycles.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "cn_metrics.h"
#include "cn_trace.h"

/* Operations that emit spans. Names appear in metrics, commands and traces. */
#define CN_TEL_OPS(X)                                                                             \
	X(lookup, "LOOKUP of a key batch (prefix)")                                              \
	X(store, "one chunk: reserve, receive, commit")                                          \
	X(retrieve, "one chunk: pin, send, unpin")                                               \
	X(delete, "DELETE of one key")                                                           \
	X(evict, "eviction (POINT events)")                                                      \
	X(l2_fetch, "RETRIEVE of L1 misses from their owner peers, until the chunks are in L1") \
	X(gpu_copy, "copy between GPU and L1")                                                   \
	X(l2_lookup, "LOOKUP of the keys missing in L1 at their owner peers")                    \
	X(l2_put, "write-through copy of stored chunks to their owner peers")

enum cn_tel_op {
#define X(n, h) CN_TEL_OP_##n,
	CN_TEL_OPS(X)
#undef X
	CN_TEL_OP_MAX
};

enum cn_tel_type {
	CN_TEL_START = 1,
	CN_TEL_END = 2,
	CN_TEL_POINT = 3,
};

/* One event: 40 bytes, copied into the ring by value. */
struct cn_tel_event {
	uint64_t tsc;	  /* rte_rdtsc() at emission */
	uint64_t session; /* START and END of one operation share it */
	uint64_t bytes;
	uint32_t keys;
	int32_t status;	  /* END: 0 or -errno */
	uint16_t core;
	uint8_t type;	  /* enum cn_tel_type */
	uint8_t op;	  /* enum cn_tel_op */
	uint8_t tier;	  /* enum cn_tier (proto.h) */
	uint8_t pad[3];
};

/* A paired START/END, as handed to subscribers. */
struct cn_tel_span {
	uint64_t start_tsc, end_tsc;
	uint64_t session;
	uint64_t bytes;	 /* from END (or START if END says 0) */
	uint32_t keys;
	int32_t status;
	uint16_t core;
	uint8_t op, tier;
};

/* Per-core telemetry counters (the core's own; the drain writes the lag). */
#define CN_TEL_CORE_METRICS(X)                                                       \
	X(events, COUNTER, "telemetry events emitted into the core's ring")          \
	X(drops, COUNTER, "telemetry events dropped because the core's ring was full") \
	X(trace_emitted, COUNTER, "trace records put into the core's trace ring (--trace-output)") \
	X(trace_drops, COUNTER, "trace records dropped: the core's trace ring was full")

struct cn_tel_core_stats {
	CN_TEL_CORE_METRICS(CN_METRIC_FIELD)
} CN_CACHE_ALIGNED;

/* Drain-thread counters (one writer: the drain thread). */
#define CN_TEL_DRAIN_METRICS(X)                                                              \
	X(drain_passes, COUNTER, "drain passes over all rings")                            \
	X(drained, COUNTER, "events taken out of the rings")                               \
	X(spans, COUNTER, "START/END pairs matched into spans")                            \
	X(spans_unmatched, COUNTER, "STARTs never ended (expired) or ENDs never started")  \
	X(subscriber_errors, COUNTER, "subscriber calls that failed")                      \
	X(drain_lag_ns, GAUGE, "age of the oldest event in the last drain pass, ns")       \
	X(trace_written, COUNTER, "operation records written (write()) to the --trace-output file") \
	X(trace_bytes, COUNTER, "bytes written to --trace-output files")                   \
	X(trace_files, COUNTER, "--trace-output files opened (1 + rotations)")             \
	X(trace_errors, COUNTER, "trace records lost to a write error (recording stops at the first)")

struct cn_tel_drain_stats {
	CN_TEL_DRAIN_METRICS(CN_METRIC_FIELD)
} CN_CACHE_ALIGNED;

extern const struct cn_metric_desc cn_tel_core_metric_desc[];
extern const unsigned cn_tel_core_metric_count;
extern const struct cn_metric_desc cn_tel_drain_metric_desc[];
extern const unsigned cn_tel_drain_metric_count;
extern const char *const cn_tel_op_names[CN_TEL_OP_MAX];
extern const char *const cn_tel_op_help[CN_TEL_OP_MAX];

/* cn_tel_op_find - the op called @name ("retrieve"), or -1. */
int cn_tel_op_find(const char *name);

/* ---- histograms ----
 *
 * Log-linear buckets over nanoseconds: values below 2^CN_HIST_SUB_BITS are
 * exact; above, each power of two is split into 2^CN_HIST_SUB_BITS equal
 * buckets, so a bucket's width is at most 1/2^CN_HIST_SUB_BITS (~3%) of its
 * value. Quantiles report the upper bound of the bucket holding the rank.
 */
#define CN_HIST_SUB_BITS 5
#define CN_HIST_BUCKETS	 ((64 - CN_HIST_SUB_BITS + 1) << CN_HIST_SUB_BITS)

struct cn_hist {
	uint64_t count;
	uint64_t sum;
	uint64_t min, max;
	uint64_t b[CN_HIST_BUCKETS];
};

void cn_hist_reset(struct cn_hist *h);
/* One writer at a time; readers use cn_hist_snapshot(). */
void cn_hist_add(struct cn_hist *h, uint64_t v);
/* Copy with relaxed loads (consistent enough for reporting). */
void cn_hist_snapshot(const struct cn_hist *h, struct cn_hist *out);
/* Bucket of @v, and the bounds [lo, hi] of bucket @i. */
unsigned cn_hist_bucket(uint64_t v);
void cn_hist_bounds(unsigned i, uint64_t *lo, uint64_t *hi);
/* The value at quantile @q (0..1): the upper bound of the bucket holding rank ceil(q*count); 0 if empty. */
uint64_t cn_hist_quantile(const struct cn_hist *h, double q);
/* How many values are <= @v (bucket resolution: counts whole buckets whose upper bound <= v). */
uint64_t cn_hist_count_le(const struct cn_hist *h, uint64_t v);

/* ---- span pairing (used by the drain; exposed for tests) ---- */

struct cn_tel_pairer;

/* @capacity open STARTs at most; a START older than @expire_ns is dropped as unmatched. */
int cn_tel_pairer_create(unsigned capacity, uint64_t expire_tsc, struct cn_tel_pairer **out);
void cn_tel_pairer_destroy(struct cn_tel_pairer **p);
/*
 * Feed one START or END. Returns 1 and fills @span when it completes a pair,
 * else 0. An END that arrives before its START (events of one session can
 * come from two cores' rings) is held and paired when the START comes.
 */
int cn_tel_pairer_feed(struct cn_tel_pairer *p, const struct cn_tel_event *ev,
		       struct cn_tel_span *span);
/* Expire entries older than @now_tsc - expire; returns how many were dropped. */
unsigned cn_tel_pairer_expire(struct cn_tel_pairer *p, uint64_t now_tsc);
unsigned cn_tel_pairer_open(const struct cn_tel_pairer *p);

/* ---- subscribers ---- */

struct cn_tel_sub_ops {
	const char *name;
	/* every event, in ring order per core; < 0 counts a subscriber error */
	int (*event)(void *arg, const struct cn_tel_event *ev);
	/* every completed span */
	int (*span)(void *arg, const struct cn_tel_span *sp);
	/* end of a drain pass that moved anything */
	int (*flush)(void *arg);
	/* after the last pass; frees @arg */
	void (*close)(void *arg);
};

/* Chrome trace-event JSON (complete "X" events), written by the drain thread. */
int cn_tel_chrome_sink_create(const char *path, const char *process_name,
			      const struct cn_tel_sub_ops **ops, void **arg);

/* ---- the telemetry context ---- */

/*
 * The drain sleeps this long after a pass that found every ring empty.
 * Each wake-up has a fixed cost whatever the load (1 ms cost ~5% of a
 * node's CPU on a 2-core machine under a 1 MiB retrieve load); 5 ms keeps it
 * near 1% while a 16384-event ring still absorbs over 3M events/s per core.
 */
#define CN_TEL_DRAIN_IDLE_US 5000
/*
 * Consecutive empty passes double the sleep up to this: an idle node wakes
 * 10 times a second instead of 200 (each wake-up costs a few hundred
 * microseconds under emulation), and the first events after a quiet spell
 * wait at most this long, far below the 1 s drain-lag health limit.
 */
#define CN_TEL_DRAIN_IDLE_MAX_US 100000
#define CN_TEL_RING_DEFAULT  16384

struct cn_tel_cfg {
	unsigned ncores;	/* cores that emit (workers + control plane) */
	unsigned ring_size;	/* events per core ring, power of two; 0 = default */
	bool enabled;		/* false: --no-telemetry */
	/*
	 * Slots of each core's trace ring (power of two, 64..2^24); 0 = no
	 * trace recording. A record takes 2 + keys slots; the ring holds
	 * trace_ring_size - 1, so a record with more keys is always dropped.
	 */
	unsigned trace_ring_size;
	const char *name;	/* unique prefix for ring names */
	int socket_id;
};

struct cn_tel_core {
	struct rte_ring *ring;
	struct rte_ring *trace;	/* NULL without trace recording */
	uint64_t next_session;
	struct cn_tel_core_stats st;
} CN_CACHE_ALIGNED;

struct cn_tel {
	bool enabled;		/* events (START/END/POINT) */
	bool tracing;		/* trace rings exist: cn_tel_trace() records */
	unsigned ncores;
	struct cn_tel_core *core;
	struct cn_tel_priv *priv; /* the drain's state; not for the fast path */
};

int cn_tel_create(const struct cn_tel_cfg *cfg, struct cn_tel **out);
/* Before cn_tel_start(). Ownership of @arg passes to telemetry (ops->close). */
int cn_tel_subscribe(struct cn_tel *t, const struct cn_tel_sub_ops *ops, void *arg);
/*
 * cn_tel_trace_attach - the writer the drain hands trace records to. Before
 * cn_tel_start(), once, on a context created with trace rings. Returns 0
 * (the writer is then telemetry's: closed, with its END record, by
 * cn_tel_stop() after the last drain pass), or -EINVAL (no trace rings,
 * NULL) / -EBUSY (started, or a writer already attached): the caller keeps
 * @w.
 */
int cn_tel_trace_attach(struct cn_tel *t, struct cn_trace_writer *w);
/*
 * Start the drain thread (a DPDK control thread named "cn-tel-drain"); it
 * runs when events are enabled or trace rings exist. -EINVAL when trace
 * rings exist but no writer was attached.
 */
int cn_tel_start(struct cn_tel *t);
/* Drain what is left, stop the thread, close subscribers. */
void cn_tel_stop(struct cn_tel *t);
void cn_tel_destroy(struct cn_tel **t);
/* Run one drain pass on the caller's thread (tests, or with no drain thread). */
unsigned cn_tel_drain_once(struct cn_tel *t);

/* Readers. */
void cn_tel_op_hist(const struct cn_tel *t, enum cn_tel_op op, struct cn_hist *out);
void cn_tel_drain_stats(const struct cn_tel *t, struct cn_tel_drain_stats *out);
unsigned cn_tel_ring_depth(const struct cn_tel *t, unsigned core);
/*
 * Time since the drain's last pass ended (0 before the first pass, or when
 * telemetry is off): a drain stuck on a slow subscriber shows here at once,
 * while drain_lag_ns only changes when a pass completes.
 */
uint64_t cn_tel_drain_age_ns(const struct cn_tel *t);
unsigned cn_tel_ring_size(const struct cn_tel *t);
uint64_t cn_tel_tsc_hz(void);
/* Slots in use in @core's trace ring (0 without trace recording). */
unsigned cn_tel_trace_depth(const struct cn_tel *t, unsigned core);

/* ---- the fast path ---- */

/* A new session id for an operation on @core (unique per process). */
static inline uint64_t cn_tel_session(struct cn_tel *t, unsigned core)
{
	return ((uint64_t)core << 48) | ++t->core[core].next_session;
}

static inline void cn_tel_emit(struct cn_tel *t, unsigned core, enum cn_tel_type type,
			       enum cn_tel_op op, uint64_t session, uint32_t keys, uint64_t bytes,
			       uint8_t tier, int32_t status)
{
	struct cn_tel_core *c;
	struct cn_tel_event ev;

	if (!t->enabled)
		return;
	c = &t->core[core];
	ev = (struct cn_tel_event){
		.tsc = rte_rdtsc(),
		.session = session,
		.bytes = bytes,
		.keys = keys,
		.status = status,
		.core = (uint16_t)core,
		.type = (uint8_t)type,
		.op = (uint8_t)op,
		.tier = tier,
	};
	if (rte_ring_sp_enqueue_elem(c->ring, &ev, sizeof(ev)) == 0)
		CN_STAT_INC(&c->st, events);
	else
		CN_STAT_INC(&c->st, drops);
}

/*
 * cn_tel_trace_put - the slow half of cn_tel_trace(): put one record on
 * @core's trace ring, or count a drop. Only with t->tracing.
 */
void cn_tel_trace_put(struct cn_tel *t, unsigned core, enum cn_trace_kind kind, uint64_t session,
		      const struct cn_key *keys, uint32_t nkeys, uint32_t val, int32_t status,
		      uint64_t begin_tsc);

/*
 * cn_tel_trace - record one operation for --trace-output, when it ends:
 * @kind, its telemetry @session, @nkeys keys (copied), @val (lookup: keys
 * found; store/retrieve: chunk bytes), @status (0 or -errno) and
 * @begin_tsc, the rte_rdtsc() of its start (a store's reserve, a
 * retrieve's pin; 0 when it had no extent). The end time is taken here.
 * Never blocks: a full ring drops the record (trace_drops). One branch when
 * nothing is recorded.
 */
static inline void cn_tel_trace(struct cn_tel *t, unsigned core, enum cn_trace_kind kind,
				uint64_t session, const struct cn_key *keys, uint32_t nkeys,
				uint32_t val, int32_t status, uint64_t begin_tsc)
{
	if (!t->tracing)
		return;
	cn_tel_trace_put(t, core, kind, session, keys, nkeys, val, status, begin_tsc);
}

#endif /* CN_TEL_H */
